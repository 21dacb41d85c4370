/*
 * transport.h - how the queue manager hands a message to a delivery
 * method. maildir (queue/maildir.c) is the first; SMTP and LMTP (issue 5)
 * plug in beside it. A route string "name:argument" from the config names
 * a transport and its argument ("maildir:/var/mail/inbox").
 *
 * Contract for a blocking transport (blocking = true): deliver runs on a
 * delivery worker thread (the queue manager's core/pool.h pool, never
 * the libuv pool, never the loop), may block on files or sockets, touches only d and its own route
 * object, and returns after setting a result for every recipient in d.
 * It must make each delivery durable at the destination before reporting
 * it delivered: the queue then records the state and forgets the
 * recipient, so "delivered" is never said of bytes that a crash can lose.
 *
 * Contract for an event-loop transport (blocking = false; issue 5's SMTP
 * and LMTP clients): deliver is called on the loop thread, must not block,
 * and later (never from inside deliver) calls d->done(d) on the loop
 * thread once every recipient has a result. The queue then records the
 * results on a worker thread, as for a blocking transport; a transport
 * that delivers an attempt in parts reports each part that finishes
 * before the last through d->progress. d stays valid
 * until done is called; the reader does synchronous (page-cache) reads.
 * The transport may take d->reader (setting it to NULL) for its first
 * use of the text, and then closes it itself; it opens any other reader
 * it needs from d->src. At shutdown route_free is called first and must complete (call done
 * for) every delivery still in flight before it returns.
 */
#ifndef PST_QUEUE_TRANSPORT_H
#define PST_QUEUE_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "core/envelope.h"
#include "queue/reader.h"

enum pst_dres {
    PST_DRES_OK,            /* delivered, durable at the destination */
    PST_DRES_TEMP,          /* try again later */
    PST_DRES_PERM,          /* will never succeed (bounce: issue 5) */
};

/* What a success means to a NOTIFY=SUCCESS report (RFC 3464 Action). */
enum pst_dsn_hint {
    PST_HINT_RELAYED = 0,   /* handed to a hop that will not report */
    PST_HINT_DELIVERED,     /* final delivery (maildir, LMTP) */
    PST_HINT_PASSED,        /* the hop took NOTIFY (it offered DSN) */
};

struct pst_rcpt_result {
    enum pst_dres res;
    char text[256];         /* for logs and `postern queue list` */
    enum pst_dsn_hint hint; /* set with PST_DRES_OK */
    const char *route;      /* the route string that took it (owned by
                               the config), NULL: delivery.default_route;
                               the label of postern_deliveries_total */
};

struct pst_delivery {
    uv_loop_t *loop;
    const char *qid;
    const struct pst_envelope *env;
    struct pst_spool_reader *reader;
    size_t n;                       /* recipients in this attempt */
    const size_t *idx;              /* n indexes into env->rcpts */
    struct pst_rcpt_result *res;    /* n results, set by the transport */
    void (*done)(struct pst_delivery *d);   /* event-loop transports */
    struct pst_spool_ref src;       /* event-loop transports */
    unsigned retry_after;           /* set by the transport: seconds to
                                       the next attempt when the deferral
                                       is the route's (rate, dead host);
                                       0: the queue's back-off */
    bool corrupt;                   /* set by the transport: a reader of
                                       its own found bad data (-EBADMSG) */
    /* Optional (NULL: none), for event-loop transports: a part of the
     * attempt has finished while others go on (a route answered before
     * a slower one) - the n recipients which[] (indexes into res) have
     * their results. Loop thread; not for the part that ends the
     * attempt, which done reports (a part that fails at once while the
     * attempt's parts are still being started may come here too). The
     * queue records the delivered ones at once, so a crash meanwhile does
     * not deliver their copies again; done still has every result. */
    void (*progress)(struct pst_delivery *d, const size_t *which, size_t n);
};

struct pst_transport {
    const char *name;               /* route scheme */
    bool blocking;                  /* runs on a delivery worker thread */
    /* route_new - parse the argument after "name:"; 0 or -errno + text */
    int (*route_new)(uv_loop_t *loop, const char *arg, void **route,
                     char *err, size_t len);
    void (*route_free)(void *route);
    void (*deliver)(void *route, struct pst_delivery *d);
};

extern const struct pst_transport pst_transport_maildir;
/* smtp:, lmtp:, mx and delivery.routes (queue/deliver.c, event loop);
 * its route is made by pst_deliver_new, not route_new. */
extern const struct pst_transport pst_transport_relay;

/* pst_transport_find - the transport for a route string, or NULL. */
const struct pst_transport *pst_transport_find(const char *route,
                                               const char **arg);

#endif
