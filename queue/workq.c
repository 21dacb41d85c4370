/*
 * workq.c - bounded worker pool reporting back through one uv_async.
 *
 * Threads: nthreads pthreads wait on one condition variable for jobs.
 * Finished jobs go to a done list that the loop drains in the async
 * callback. uv_async_send coalesces, so the callback drains everything.
 * Memory: no allocation per job (jobs are embedded in their owners).
 */
#include "queue/workq.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/util.h"

TAILQ_HEAD(pst_workl, pst_work);

struct pst_workq {
    uv_loop_t *loop;
    uv_async_t async;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pst_workl ready;  /* queued, not yet taken */
    struct pst_workl done;
    pthread_t *threads;
    unsigned nthreads;
    unsigned pending;               /* loop thread only */
    bool stop;
};

static void *
worker_main(void *arg)
{
    struct pst_workq *wq = arg;

    pthread_mutex_lock(&wq->mu);
    for (;;) {
        while (TAILQ_EMPTY(&wq->ready) && !wq->stop)
            pthread_cond_wait(&wq->cv, &wq->mu);
        if (wq->stop)
            break;
        struct pst_work *w = TAILQ_FIRST(&wq->ready);
        TAILQ_REMOVE(&wq->ready, w, link);
        pthread_mutex_unlock(&wq->mu);
        w->work(w);
        pthread_mutex_lock(&wq->mu);
        TAILQ_INSERT_TAIL(&wq->done, w, link);
        uv_async_send(&wq->async);
    }
    pthread_mutex_unlock(&wq->mu);
    return NULL;
}

static void
drain(struct pst_workq *wq)
{
    struct pst_workl l = TAILQ_HEAD_INITIALIZER(l);

    pthread_mutex_lock(&wq->mu);
    TAILQ_CONCAT(&l, &wq->done, link);
    pthread_mutex_unlock(&wq->mu);
    while (!TAILQ_EMPTY(&l)) {
        struct pst_work *w = TAILQ_FIRST(&l);
        TAILQ_REMOVE(&l, w, link);
        wq->pending--;
        w->done(w);
    }
}

static void
on_async(uv_async_t *a)
{
    drain(a->data);
}

int
pst_workq_new(struct pst_workq **wqp, uv_loop_t *loop, unsigned threads)
{
    struct pst_workq *wq = pst_xcalloc(1, sizeof(*wq));
    int rc;

    wq->loop = loop;
    TAILQ_INIT(&wq->ready);
    TAILQ_INIT(&wq->done);
    pthread_mutex_init(&wq->mu, NULL);
    pthread_cond_init(&wq->cv, NULL);
    rc = uv_async_init(loop, &wq->async, on_async);
    if (rc != 0) {
        pthread_mutex_destroy(&wq->mu);
        pthread_cond_destroy(&wq->cv);
        free(wq);
        return rc;
    }
    wq->async.data = wq;
    wq->threads = pst_xcalloc(threads, sizeof(pthread_t));
    for (unsigned i = 0; i < threads; i++) {
        rc = pthread_create(&wq->threads[i], NULL, worker_main, wq);
        if (rc != 0) {
            pst_err("event=workq_error error=\"pthread_create: %d\"", rc);
            break;
        }
        wq->nthreads++;
    }
    if (wq->nthreads == 0) {
        pst_workq_close(wq);
        return -EAGAIN;
    }
    *wqp = wq;
    return 0;
}

void
pst_workq_submit(struct pst_workq *wq, struct pst_work *w)
{
    w->cancelled = false;
    wq->pending++;
    pthread_mutex_lock(&wq->mu);
    TAILQ_INSERT_TAIL(&wq->ready, w, link);
    pthread_cond_signal(&wq->cv);
    pthread_mutex_unlock(&wq->mu);
}

unsigned
pst_workq_pending(const struct pst_workq *wq)
{
    return wq->pending;
}

static void
on_closed(uv_handle_t *h)
{
    struct pst_workq *wq = h->data;
    pthread_mutex_destroy(&wq->mu);
    pthread_cond_destroy(&wq->cv);
    free(wq->threads);
    free(wq);
}

void
pst_workq_close(struct pst_workq *wq)
{
    pthread_mutex_lock(&wq->mu);
    wq->stop = true;
    pthread_cond_broadcast(&wq->cv);
    pthread_mutex_unlock(&wq->mu);
    for (unsigned i = 0; i < wq->nthreads; i++)
        pthread_join(wq->threads[i], NULL);
    /* jobs never started: report them cancelled */
    pthread_mutex_lock(&wq->mu);
    struct pst_work *w;
    while ((w = TAILQ_FIRST(&wq->ready)) != NULL) {
        TAILQ_REMOVE(&wq->ready, w, link);
        w->cancelled = true;
        TAILQ_INSERT_TAIL(&wq->done, w, link);
    }
    pthread_mutex_unlock(&wq->mu);
    drain(wq);
    uv_close((uv_handle_t *)&wq->async, on_closed);
}
