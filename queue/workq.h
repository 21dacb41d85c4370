/*
 * workq.h - a small bounded pool of worker threads owned by its user (the
 * queue manager's delivery workers), separate from libuv's shared pool so
 * slow deliveries can never stall file syncs or DNS.
 *
 * A job is submitted on the loop thread; work() runs on a worker thread;
 * done() runs afterwards on the loop thread (through one uv_async). The
 * job struct is embedded in the caller's object and owned by the caller.
 */
#ifndef PST_QUEUE_WORKQ_H
#define PST_QUEUE_WORKQ_H

#include <stdbool.h>
#include <sys/queue.h>
#include <uv.h>

struct pst_work {
    TAILQ_ENTRY(pst_work) link;
    void (*work)(struct pst_work *w);   /* worker thread */
    void (*done)(struct pst_work *w);   /* loop thread */
    bool cancelled;                     /* set when the pool closed first */
};

struct pst_workq;

int pst_workq_new(struct pst_workq **wq, uv_loop_t *loop, unsigned threads);
void pst_workq_submit(struct pst_workq *wq, struct pst_work *w);
/* pst_workq_pending - jobs submitted whose done() has not run yet. */
unsigned pst_workq_pending(const struct pst_workq *wq);
/*
 * pst_workq_close - let running jobs finish, join the threads, run every
 * remaining done() (unstarted jobs with cancelled set), then release the
 * pool once its uv_async handle has closed.
 */
void pst_workq_close(struct pst_workq *wq);

#endif
