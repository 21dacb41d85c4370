/*
 * stats.c - the gateway's series (stats.h). The message outcomes are a
 * small table of (outcome, reason) pairs filled on first use; it is
 * touched on the loop thread only, the series themselves are atomic.
 */
#include "gateway/stats.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/metrics.h"
#include "core/util.h"
#include "queue/queue.h"

#define REASONS_MAX 48

static const char *const outcome_names[] = {"accepted", "refused",
                                            "tempfailed"};

static struct {
    enum pst_msg_outcome o;
    const char *reason;             /* a static string */
    struct pst_metric *m;
} reasons[REASONS_MAX];
static size_t nreasons;

void
pst_stats_listener(const char *address, unsigned port,
                   struct pst_metric **open, struct pst_metric **total)
{
    char l[80];
    if (strchr(address, ':'))
        snprintf(l, sizeof(l), "[%s]:%u", address, port);
    else
        snprintf(l, sizeof(l), "%s:%u", address, port);
    *open = pst_metric_gauge("postern_sessions_open",
                             "SMTP sessions open now, per listener.",
                             "listener", l, NULL);
    *total = pst_metric_counter("postern_sessions_total",
                                "SMTP sessions accepted, per listener.",
                                "listener", l, NULL);
}

void
pst_stats_proxy(const char *result)
{
    static const char *const results[] = {"proxied", "local", "untrusted",
                                          "invalid", "timeout"};
    static struct pst_metric *m[PST_ARRAY_LEN(results)];
    for (size_t i = 0; i < PST_ARRAY_LEN(results); i++) {
        if (strcmp(results[i], result) != 0)
            continue;
        if (m[i] == NULL)
            m[i] = pst_metric_counter("postern_proxy_connections_total",
                                      "Connections to PROXY protocol "
                                      "listeners, by what their header "
                                      "gave or why they were closed.",
                                      "result", results[i], NULL);
        pst_metric_add(m[i], 1);
    }
}

void
pst_stats_tls(bool ok, bool resumed)
{
    static struct pst_metric *m[2], *r;
    if (m[ok] == NULL)
        m[ok] = pst_metric_counter("postern_tls_handshakes_total",
                                   "TLS handshakes with SMTP clients, by "
                                   "result.",
                                   "result", ok ? "ok" : "failed", NULL);
    if (r == NULL)
        r = pst_metric_counter("postern_tls_resumed_total",
                               "TLS handshakes with SMTP clients that "
                               "resumed a session (of result ok).",
                               NULL);
    pst_metric_add(m[ok], 1);
    if (ok && resumed)
        pst_metric_add(r, 1);
}

void
pst_stats_auth(bool ok)
{
    static struct pst_metric *m[2];
    if (m[ok] == NULL)
        m[ok] = pst_metric_counter("postern_auth_total",
                                   "SMTP AUTH exchanges, by result.",
                                   "result", ok ? "success" : "failure",
                                   NULL);
    pst_metric_add(m[ok], 1);
}

void
pst_stats_message(enum pst_msg_outcome o, const char *reason, uint64_t bytes)
{
    static struct pst_metric *bytes_m;
    struct pst_metric *m = NULL;

    for (size_t i = 0; i < nreasons && m == NULL; i++)
        if (reasons[i].o == o && strcmp(reasons[i].reason, reason) == 0)
            m = reasons[i].m;
    if (m == NULL) {
        m = pst_metric_counter("postern_messages_total",
                               "Messages whose data ended, by outcome "
                               "(accepted, refused, tempfailed) and reason.",
                               "outcome", outcome_names[o], "reason", reason,
                               NULL);
        if (nreasons < REASONS_MAX)
            reasons[nreasons++] = (typeof(reasons[0])){o, reason, m};
    }
    pst_metric_add(m, 1);
    if (bytes_m == NULL)
        bytes_m = pst_metric_counter("postern_received_bytes_total",
                                     "Message text received (octets after "
                                     "dot-unstuffing), every outcome.",
                                     NULL);
    pst_metric_add(bytes_m, bytes);
}

void
pst_stats_accept_latency(uint64_t us)
{
    static struct pst_metric *m;
    if (m == NULL)
        m = pst_metric_histogram("postern_accept_duration_seconds",
                                 "From the end of a message's data to the "
                                 "250 reply (filters, commit, sync).",
                                 &pst_buckets_latency, NULL);
    pst_metric_observe(m, us);
}

void
pst_stats_queue(const struct pst_queue_stats *st)
{
    static struct pst_metric *active, *deferred, *hold, *oldest;
    if (active == NULL) {
        static const char help[] = "Messages in the queue, by state (active: "
                                   "due or being delivered; deferred: "
                                   "waiting for a retry; hold).";
        active = pst_metric_gauge("postern_queue_messages", help, "state",
                                  "active", NULL);
        deferred = pst_metric_gauge("postern_queue_messages", help, "state",
                                    "deferred", NULL);
        hold = pst_metric_gauge("postern_queue_messages", help, "state",
                                "hold", NULL);
        oldest = pst_metric_gauge("postern_queue_oldest_message_age_seconds",
                                  "Age of the oldest message in the queue "
                                  "(any state); 0 when it is empty.",
                                  NULL);
    }
    pst_metric_set(active, st->active);
    pst_metric_set(deferred, st->deferred);
    pst_metric_set(hold, st->held);
    time_t now = time(NULL);
    pst_metric_set(oldest, st->oldest_arrival && now > st->oldest_arrival
                               ? now - st->oldest_arrival
                               : 0);
}

void
pst_stats_config(bool ok, bool at_start)
{
    static struct pst_metric *m[2], *last, *when;
    if (last == NULL) {
        for (int i = 0; i < 2; i++)
            m[i] = pst_metric_counter("postern_config_reloads_total",
                                      "SIGHUP reloads, by result (ok: the "
                                      "new file serves; failed: the old "
                                      "one goes on).",
                                      "result", i ? "ok" : "failed", NULL);
        last = pst_metric_gauge("postern_config_last_reload_successful",
                                "1 if the last reload was taken, 0 if it "
                                "was refused.", NULL);
        when = pst_metric_gauge(
            "postern_config_last_reload_success_timestamp_seconds",
            "When the configuration in use was loaded (start or reload), "
            "Unix time.", NULL);
    }
    if (!at_start)
        pst_metric_add(m[ok], 1);
    pst_metric_set(last, ok);
    if (ok)
        pst_metric_set(when, (int64_t)time(NULL));
}
