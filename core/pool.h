/*
 * pool.h - one bounded pool of worker threads, instantiated per use: the
 * queue's delivery workers, the filter workers, the AUTH crypt workers.
 * None of them is libuv's shared pool, whose threads also carry file
 * operations: a burst of slow work of one kind never delays another.
 *
 * A job is a struct pst_pool_job embedded in the user's own object (no
 * allocation per job). It is submitted on the loop thread; work() runs on
 * one of the pool's threads and must touch only the job; done() runs
 * afterwards on the loop thread, through one uv_async per pool, exactly
 * once per accepted job - with ran = false when the pool stopped before
 * the job started. done() may free the job.
 *
 * Bound: at most max_jobs jobs are in the pool (submitted, done() not yet
 * run); pst_pool_submit refuses more with -EAGAIN, and the caller answers
 * for it (a 4xx reply, a retry later). max_jobs = 0 means the user bounds
 * its jobs by construction, and says how next to its pst_pool_new.
 *
 * Per-thread state: thread_init runs on each worker thread before it
 * takes a job and gives that thread's context (a crypt(3) work area, a
 * libmagic handle: objects one thread at a time may use), which work()
 * receives; thread_fini runs on the same thread as it ends. pst_pool_new
 * returns once every thread has run thread_init, and fails if one failed.
 *
 * Ending: pst_pool_drain refuses new jobs, lets the queued ones run and
 * calls back once the pool is empty; pst_pool_close stops at once (a job
 * already running finishes, queued ones get done(ran = false)), joins the
 * threads and frees the pool once its uv_async handle has closed.
 *
 * Threads: every pst_pool_* call is for the loop thread.
 */
#ifndef PST_CORE_POOL_H
#define PST_CORE_POOL_H

#include <stdbool.h>
#include <uv.h>

struct pst_pool;

struct pst_pool_job {
    struct pst_pool_job *next;      /* the pool's */
    /* worker thread; tctx: this thread's context from thread_init */
    void (*work)(struct pst_pool_job *j, void *tctx);
    /* loop thread; ran is false when the job was cancelled unstarted */
    void (*done)(struct pst_pool_job *j, bool ran);
};

struct pst_pool_opts {
    const char *name;               /* logs and thread names, short */
    unsigned threads;               /* 1..PST_POOL_THREADS_MAX */
    unsigned max_jobs;              /* jobs in the pool; 0: bounded by the
                                       user (see above) */
    /* optional: 0 and *tctx, or -errno; arg is the pool's arg */
    int (*thread_init)(void *arg, void **tctx);
    void (*thread_fini)(void *arg, void *tctx);
    void *arg;
};

#define PST_POOL_THREADS_MAX 64

/*
 * pst_pool_new - start the threads (each runs thread_init first). Returns
 * 0, -EINVAL (threads out of range), a libuv error from uv_async_init,
 * -errno from pthread_create, or the first thread_init failure; nothing
 * is left running on failure.
 */
int pst_pool_new(struct pst_pool **p, uv_loop_t *loop,
                 const struct pst_pool_opts *o);
/*
 * pst_pool_submit - queue j (work and done set). Returns 0 (done will
 * run), -EAGAIN (max_jobs reached) or -ESHUTDOWN (draining or closed):
 * then neither work nor done runs.
 */
int pst_pool_submit(struct pst_pool *p, struct pst_pool_job *j);
/* pst_pool_pending - jobs in the pool: submitted, done() not yet run. */
unsigned pst_pool_pending(const struct pst_pool *p);
/*
 * pst_pool_drain - refuse new jobs from now on; once every job in the pool
 * has had its done(), call drained(arg) on the loop thread (at once if it
 * is empty). The pool still has to be closed.
 */
void pst_pool_drain(struct pst_pool *p, void (*drained)(void *arg),
                    void *arg);
/*
 * pst_pool_close - stop: a running job finishes (the loop thread waits
 * for it), jobs not started get done(ran = false), finished ones
 * done(ran = true), the threads run thread_fini and are joined; the pool
 * is freed once its uv_async handle has closed (run the loop). NULL is a
 * no-op.
 */
void pst_pool_close(struct pst_pool *p);

#endif
