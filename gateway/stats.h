/*
 * stats.h - the gateway's series in the metrics registry (core/metrics.h):
 * what the SMTP sessions count. Each call is one lock-free update; the
 * series are looked up once (at first use, on the loop thread) and kept.
 * Names and meanings: docs/OPERATIONS.md "Metrics".
 */
#ifndef PST_GATEWAY_STATS_H
#define PST_GATEWAY_STATS_H

#include <stdbool.h>
#include <stdint.h>

struct pst_metric;

enum pst_msg_outcome {
    PST_MSG_ACCEPTED,               /* 250 (queued, held, or discarded) */
    PST_MSG_REFUSED,                /* 5xx after the data */
    PST_MSG_TEMPFAILED,             /* 4xx after the data */
};

/* pst_stats_listener - the sessions_open gauge and sessions_total counter
 * of the listener "address:port" (kept by the listener). */
void pst_stats_listener(const char *address, unsigned port,
                        struct pst_metric **open, struct pst_metric **total);
/* pst_stats_proxy - a connection to a PROXY listener: its header gave a
 * client ("proxied") or was the proxy's own ("local"), or the connection
 * was closed ("untrusted", "invalid", "timeout"). */
void pst_stats_proxy(const char *result);
/* pst_stats_tls - one TLS handshake ended (ok or failed); resumed: it
 * resumed an earlier session. */
void pst_stats_tls(bool ok, bool resumed);
/* pst_stats_auth - one AUTH exchange ended (success or failure). */
void pst_stats_auth(bool ok);
/* pst_stats_message - the outcome of one message after its data; reason
 * is a fixed word ("queued", "size", "filter", ...). bytes: its text. */
void pst_stats_message(enum pst_msg_outcome o, const char *reason,
                       uint64_t bytes);
/* pst_stats_accept_latency - final dot to 250, in microseconds. */
void pst_stats_accept_latency(uint64_t us);

/* pst_stats_config - a configuration was loaded at start, or a SIGHUP
 * reload was taken (ok) or refused. */
void pst_stats_config(bool ok, bool at_start);

struct pst_queue_stats;
/* pst_stats_queue - publish the queue's sizes and its oldest message's
 * age (the loop's once-a-second sample). */
void pst_stats_queue(const struct pst_queue_stats *st);

#endif
