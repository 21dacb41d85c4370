/*
 * deliver.h - the delivery manager: routes recipients to next hops and
 * drives the SMTP/LMTP client (queue/smtp_client.c) on the loop.
 *
 * The queue manager hands over one attempt for one message (struct
 * pst_delivery of transport.h, every pending recipient); the manager splits
 * it by route (delivery.routes, else delivery.default_route), queues each
 * part on its destination (one next hop: a host:port, a unix socket, or
 * the MX set of one domain) and reports once every recipient has a result.
 *
 * Per destination: at most destination_concurrency connections (or the
 * route's concurrency), reused for the next queued message, closed after
 * idle_timeout; a destination whose every address failed is dead for
 * dead_host_backoff seconds (its queued and new parts defer at once,
 * without connecting); a route's rate paces messages, and parts wait in
 * the destination's queue (up to PST_DELIVER_WAIT_MAX seconds, beyond which
 * they are deferred with retry_after set) rather than fail.
 *
 * Threads: everything on the loop thread, except reading the queue file
 * (the libuv pool) and maildir delivery (the blocking maildir transport on
 * the libuv pool).
 */
#ifndef PST_QUEUE_DELIVER_H
#define PST_QUEUE_DELIVER_H

#include <uv.h>

#include "conf/conf.h"
#include "queue/transport.h"

#define PST_DELIVER_WAIT_MAX 60     /* seconds a part may wait in a queue */

struct pst_deliver;

struct pst_pool_job;
/* Blocking transports (maildir) run as jobs on the queue's delivery
 * workers (a core/pool.h pool): submit(ctx, w) queues one. */
typedef void (*pst_deliver_submit)(void *ctx, struct pst_pool_job *w);

int pst_deliver_new(struct pst_deliver **dp, uv_loop_t *loop,
                    const struct pst_conf *conf, pst_deliver_submit submit,
                    void *submit_ctx, struct pst_err *err);
/*
 * Shutdown, in this order: pst_deliver_stop (from now on every attempt
 * completes synchronously, and attempts already complete are reported
 * now), then close the delivery workers (their jobs report), then
 * pst_deliver_free (connections closed; attempts still open are reported
 * deferred before it returns).
 */
void pst_deliver_stop(struct pst_deliver *d);
void pst_deliver_free(struct pst_deliver *d);

typedef void (*pst_deliver_done)(void *arg, struct pst_delivery *dl);
/* pst_deliver_start - results for all of dl's recipients, then done (on
 * the loop, never from inside this call). */
void pst_deliver_start(struct pst_deliver *d, struct pst_delivery *dl,
                       pst_deliver_done done, void *arg);

#endif
