/*
 * server.h - the gateway process: one libuv loop, its listeners, the spool,
 * the set of live sessions, and the configuration generation they run on.
 *
 * Generations: what a configuration builds in the gateway (the conf, the
 * relay policy with its recipient lists, the TLS certificates) is one
 * reference-counted struct pst_gen. A session holds the generation it was
 * accepted on until it closes; a SIGHUP reload (docs/OPERATIONS.md
 * "Reload") builds a new one whole and makes it current, so sessions in
 * flight finish on theirs. The password file and the sender-login map are
 * the auth module's and are swapped in place (gateway/auth.h).
 *
 * Threads (docs/ARCHITECTURE.md): every session runs on this loop; file
 * syncs run on the spool's sync thread and delivery file work on the
 * queue's workers, each reporting back through uv_async.
 */
#ifndef PST_GATEWAY_SERVER_H
#define PST_GATEWAY_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "conf/conf.h"

struct pst_session;
struct pst_queue;
struct pst_spool;
struct pst_frt;
struct pst_dns;
struct pst_policy;
struct pst_ipcount;
struct pst_tls_ctx;
struct pst_tls_tickets;
struct pst_auth;
struct pst_strmap;
struct pst_metric;
struct pst_mhttp;

struct pst_gen {
    unsigned refs;                  /* loop thread only */
    unsigned number;                /* 1 at start, one more per reload */
    struct pst_conf *conf;          /* one reference */
    struct pst_policy *policy;      /* relay decisions (policy.h) */
    struct pst_tls_ctx *tls;        /* NULL without tls.certificates */
};

struct pst_gen *pst_gen_ref(struct pst_gen *g);
void pst_gen_unref(struct pst_gen *g);

/* A listener lives until its handle's close callback (malloc'd alone: a
 * reload keeps the ones whose address and port stay). */
struct pst_listener {
    uv_tcp_t tcp;
    struct pst_server *srv;
    const struct pst_listener_conf *lc; /* in the current generation */
    bool open;                      /* tcp handle initialised */
    struct pst_metric *m_open, *m_total;    /* gateway/stats.h */
};

struct pst_server {
    uv_loop_t *loop;
    struct pst_gen *gen;            /* the current generation (one ref) */
    struct pst_tls_tickets *tickets; /* TLS ticket keys: every generation's */
    struct pst_queue *queue;        /* spool, queue manager, control */
    struct pst_spool *spool;        /* the queue's: receives messages */
    struct pst_frt *frt;            /* filter worker pool (filters/chain.h) */
    struct pst_dns *dns;            /* client name lookups */
    struct pst_ipcount *ipcount;    /* live sessions per client */
    struct pst_auth *auth;          /* NULL without auth.password_file */
    struct pst_strmap *by_id;       /* session id -> live session */
    struct pst_listener **listeners;
    size_t nlisteners;
    uv_signal_t sig_term, sig_int, sig_hup;
    struct pst_mhttp *mhttp;        /* the metrics endpoint, or NULL */
    uv_timer_t tick;                /* once a second: health, gauges */
    uv_timer_t drain_timer;         /* while draining: is it over? */
    uv_prepare_t log_flush;         /* the log's batch out before a wait */
    uint64_t drain_deadline;        /* loop ms */
    bool draining;                  /* SIGTERM: finishing what is open */
    struct pst_session *sessions;   /* live sessions, doubly linked */
    unsigned nsessions;
    uint64_t id_base;               /* random per start: ids unique in logs */
    uint64_t id_next;
    int64_t space_free;             /* the spool disk's free bytes, */
    uint64_t space_at;              /* looked up at this loop ms */
    bool stopping;
};

/*
 * pst_server_run - run the gateway until SIGTERM/SIGINT; exit status.
 * SIGHUP reloads the configuration file (docs/OPERATIONS.md "Reload").
 * The first signal drains (docs/OPERATIONS.md): listeners close, idle
 * sessions get 421 4.3.2, open transactions and deliveries in flight may
 * finish within limits.drain_timeout; the second signal, or the timeout,
 * stops at once (a commit in flight is still answered; nothing that got
 * 250 is lost).
 */
int pst_server_run(struct pst_conf *conf);
/* pst_server_session_gone - a session has closed (called by smtp.c). */
void pst_server_session_gone(struct pst_server *srv);

#endif
