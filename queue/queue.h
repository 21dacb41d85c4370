/*
 * queue.h - the queue as the gateway sees it: one front that opens the
 * spool (storage and recovery), the queue manager (delivery) and the
 * control socket, in that order, and closes them in reverse.
 *
 * The gateway receives messages through the spool (queue/spool.h, got
 * from pst_queue_spool); everything after the commit is the manager's.
 */
#ifndef PST_QUEUE_QUEUE_H
#define PST_QUEUE_QUEUE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "conf/conf.h"

struct pst_queue;
struct pst_spool;

/*
 * pst_queue_open - open the spool named by conf (lock, recovery), start
 * its queue manager over what was recovered, then the control socket.
 * 0 or -errno with err filled; on failure nothing stays open (run the
 * loop to let closing handles finish).
 */
int pst_queue_open(struct pst_queue **qp, uv_loop_t *loop,
                   struct pst_conf *conf, struct pst_err *err);
/*
 * pst_queue_close - close the control socket, then the manager (its
 * deliveries in flight finish), then the spool (commits handed to its
 * sync thread finish and their callbacks run first). The spool lock is
 * released at once; memory goes when the loop next runs.
 */
void pst_queue_close(struct pst_queue *q);

/* pst_queue_spool - the spool that receives messages. */
struct pst_spool *pst_queue_spool(struct pst_queue *q);

/*
 * pst_queue_pause - stop (true) or resume (false) starting deliveries;
 * deliveries in flight finish. Messages keep being accepted and queued.
 */
void pst_queue_pause(struct pst_queue *q, bool paused);

/* Counters, cheap enough for a metrics scrape (loop thread). */
struct pst_queue_stats {
    /* the spool, since open */
    uint64_t fsyncs;                /* every fsync the spool issued */
    uint64_t batches;               /* group commits */
    uint64_t committed;             /* messages made durable */
    uint64_t log;                   /* ... of them into the log */
    uint64_t prepared;              /* log segments put to use */
    unsigned segments;              /* log segment files now */
    /* the manager, now */
    unsigned queued;                /* messages in the queue (all states) */
    unsigned delivering;            /* deliveries in flight */
    unsigned active;                /* due now or being delivered */
    unsigned deferred;              /* waiting for a retry */
    unsigned held;                  /* on hold (quarantine, expired) */
    int64_t oldest_arrival;         /* wall clock of the oldest message's
                                       arrival, 0 with an empty queue (one
                                       pass over the queue) */
};

void pst_queue_stats(struct pst_queue *q, struct pst_queue_stats *st);

#endif
