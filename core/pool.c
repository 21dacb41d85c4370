/*
 * pool.c - the bounded worker pool (pool.h).
 *
 * Threads: the workers wait on one condition variable for queued jobs;
 * a finished job goes on the done list and the loop is woken with
 * uv_async_send, which coalesces, so the async callback drains the whole
 * list. One mutex guards both lists, the stop flag and the start count;
 * the count of jobs in the pool, the bound and the drain state belong to
 * the loop thread (jobs enter and leave on it).
 *
 * Memory: no allocation per job; the pool itself is freed in the close
 * callback of its uv_async handle, so a done() that runs inside
 * pst_pool_close may still touch it.
 */
#include "core/pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"

struct pst_pool {
    uv_loop_t *loop;
    uv_async_t async;
    char name[16];                  /* a thread name's limit */
    unsigned max_jobs;
    int (*thread_init)(void *arg, void **tctx);
    void (*thread_fini)(void *arg, void *tctx);
    void *arg;

    pthread_mutex_t mu;
    pthread_cond_t work_cv;         /* workers: a job, or stop */
    pthread_cond_t start_cv;        /* pst_pool_new: a thread started */
    struct pst_pool_job *q_head, *q_tail;   /* queued */
    struct pst_pool_job *d_head, *d_tail;   /* finished, for the loop */
    unsigned started;               /* threads past thread_init */
    int init_err;                   /* the first thread_init failure */
    bool stop;
    pthread_t *threads;
    unsigned nthreads;

    /* loop thread only */
    unsigned pending;               /* submitted, done() not yet run */
    bool draining, closed;
    void (*drained)(void *arg);
    void *drained_arg;
};

static void
append(struct pst_pool_job **head, struct pst_pool_job **tail,
       struct pst_pool_job *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

static void *
worker(void *arg)
{
    struct pst_pool *p = arg;
    void *tctx = NULL;
    int rc = 0;

    pthread_setname_np(pthread_self(), p->name);
    pst_stop_signals_block(true);   /* the loop thread's to take */
    if (p->thread_init)
        rc = p->thread_init(p->arg, &tctx);
    pthread_mutex_lock(&p->mu);
    p->started++;
    if (rc != 0 && p->init_err == 0)
        p->init_err = rc < 0 ? rc : -EIO;
    pthread_cond_signal(&p->start_cv);
    while (rc == 0) {
        while (!p->stop && p->q_head == NULL)
            pthread_cond_wait(&p->work_cv, &p->mu);
        if (p->stop)
            break;
        struct pst_pool_job *j = p->q_head;
        p->q_head = j->next;
        if (p->q_head == NULL)
            p->q_tail = NULL;
        pthread_mutex_unlock(&p->mu);
        j->work(j, tctx);
        pthread_mutex_lock(&p->mu);
        append(&p->d_head, &p->d_tail, j);
        uv_async_send(&p->async);
    }
    pthread_mutex_unlock(&p->mu);
    if (rc == 0 && p->thread_fini)
        p->thread_fini(p->arg, tctx);
    return NULL;
}

/* Run done() for every finished job (ran) and, once stopped, for every
 * job never started (not ran). */
static void
report(struct pst_pool *p, bool cancel_queued)
{
    pthread_mutex_lock(&p->mu);
    struct pst_pool_job *fin = p->d_head, *unrun = NULL;
    p->d_head = p->d_tail = NULL;
    if (cancel_queued) {
        unrun = p->q_head;
        p->q_head = p->q_tail = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    for (int ran = 1; ran >= 0; ran--) {
        struct pst_pool_job *j = ran ? fin : unrun;
        while (j) {
            struct pst_pool_job *next = j->next;
            p->pending--;
            j->done(j, ran);
            j = next;
        }
    }
}

static void
on_async(uv_async_t *a)
{
    struct pst_pool *p = a->data;
    report(p, false);
    if (p->draining && p->pending == 0 && p->drained && !p->closed) {
        void (*cb)(void *) = p->drained;
        p->drained = NULL;
        cb(p->drained_arg);
    }
}

static void
on_closed(uv_handle_t *h)
{
    struct pst_pool *p = h->data;
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->start_cv);
    free(p->threads);
    free(p);
}

/* Stop and join the threads. */
static void
stop_threads(struct pst_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    p->nthreads = 0;
}

int
pst_pool_new(struct pst_pool **out, uv_loop_t *loop,
             const struct pst_pool_opts *o)
{
    int rc;

    *out = NULL;
    if (o->threads == 0 || o->threads > PST_POOL_THREADS_MAX)
        return -EINVAL;
    struct pst_pool *p = pst_xcalloc(1, sizeof(*p));
    p->loop = loop;
    snprintf(p->name, sizeof(p->name), "%s", o->name ? o->name : "pst-pool");
    p->max_jobs = o->max_jobs;
    p->thread_init = o->thread_init;
    p->thread_fini = o->thread_fini;
    p->arg = o->arg;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->start_cv, NULL);
    rc = uv_async_init(loop, &p->async, on_async);
    if (rc < 0) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->work_cv);
        pthread_cond_destroy(&p->start_cv);
        free(p);
        return rc;
    }
    p->async.data = p;
    p->threads = pst_xcalloc(o->threads, sizeof(*p->threads));
    for (unsigned i = 0; i < o->threads; i++) {
        rc = pthread_create(&p->threads[i], NULL, worker, p);
        if (rc != 0) {
            rc = -rc;
            break;
        }
        p->nthreads++;
    }
    pthread_mutex_lock(&p->mu);
    while (p->started < p->nthreads)
        pthread_cond_wait(&p->start_cv, &p->mu);
    if (rc == 0)
        rc = p->init_err;
    pthread_mutex_unlock(&p->mu);
    if (rc != 0) {
        pst_err("event=pool_error pool=%s error=\"%s\"", p->name,
                strerror(-rc));
        stop_threads(p);
        p->closed = true;
        uv_close((uv_handle_t *)&p->async, on_closed);
        return rc;
    }
    *out = p;
    return 0;
}

int
pst_pool_submit(struct pst_pool *p, struct pst_pool_job *j)
{
    if (p->closed || p->draining)
        return -ESHUTDOWN;
    if (p->max_jobs && p->pending >= p->max_jobs)
        return -EAGAIN;
    p->pending++;
    pthread_mutex_lock(&p->mu);
    append(&p->q_head, &p->q_tail, j);
    pthread_cond_signal(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

unsigned
pst_pool_pending(const struct pst_pool *p)
{
    return p->pending;
}

void
pst_pool_drain(struct pst_pool *p, void (*drained)(void *arg), void *arg)
{
    p->draining = true;
    p->drained = drained;
    p->drained_arg = arg;
    uv_async_send(&p->async);       /* calls back from the loop if empty */
}

void
pst_pool_close(struct pst_pool *p)
{
    if (p == NULL || p->closed)
        return;
    p->closed = true;
    stop_threads(p);
    report(p, true);
    uv_close((uv_handle_t *)&p->async, on_closed);
}
