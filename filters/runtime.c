/*
 * runtime.c - the filter runtime of one loop: a bounded pool of worker
 * threads for offloaded filter work, reporting back through one
 * uv_async, and the table of live filter sessions by id.
 *
 * Threads: the workers run only work(job); the queue of waiting jobs and
 * the list of finished ones are guarded by one mutex. done(job) always
 * runs on the loop thread, from the async callback. The pool is its own
 * (never libuv's shared pool, whose 4 threads also carry file I/O), and
 * holds at most PST_FPOOL_QUEUE_MAX jobs: beyond that pst_fctx_offload
 * fails with -EAGAIN and the filter answers tempfail.
 *
 * Sessions are found by id (pst_fctx_lookup), never by a pointer kept in
 * a job, so an answer for a session that has gone is simply dropped.
 */
#include "filters/chain_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define FRT_BUCKETS 1024
#define FRT_WORKERS_MAX 64

struct fjob {
    struct fjob *next;
    void *job;
    pst_fwork_fn work;
    pst_fdone_fn done;
};

struct pst_frt {
    uv_loop_t *loop;
    uv_async_t async;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *threads;
    unsigned nthreads;
    bool stop;
    struct fjob *q_head, *q_tail;   /* waiting */
    struct fjob *d_head, *d_tail;   /* done, for the loop */
    unsigned inflight;              /* waiting + running + done */
    struct pst_fsess *table[FRT_BUCKETS];
};

_Thread_local struct pst_frt *pst__frt_current;

uv_loop_t *
pst__frt_loop(struct pst_frt *rt)
{
    return rt->loop;
}

static void *
worker(void *arg)
{
    struct pst_frt *rt = arg;
    pthread_mutex_lock(&rt->mu);
    for (;;) {
        while (!rt->stop && rt->q_head == NULL)
            pthread_cond_wait(&rt->cv, &rt->mu);
        if (rt->stop)
            break;
        struct fjob *j = rt->q_head;
        rt->q_head = j->next;
        if (rt->q_head == NULL)
            rt->q_tail = NULL;
        pthread_mutex_unlock(&rt->mu);
        j->work(j->job);
        pthread_mutex_lock(&rt->mu);
        j->next = NULL;
        if (rt->d_tail)
            rt->d_tail->next = j;
        else
            rt->d_head = j;
        rt->d_tail = j;
        uv_async_send(&rt->async);
    }
    pthread_mutex_unlock(&rt->mu);
    return NULL;
}

static void
on_async(uv_async_t *a)
{
    struct pst_frt *rt = a->data;
    struct fjob *list;
    pthread_mutex_lock(&rt->mu);
    list = rt->d_head;
    rt->d_head = rt->d_tail = NULL;
    pthread_mutex_unlock(&rt->mu);
    while (list) {
        struct fjob *j = list;
        list = j->next;
        pthread_mutex_lock(&rt->mu);
        rt->inflight--;
        pthread_mutex_unlock(&rt->mu);
        j->done(j->job);
        free(j);
    }
}

/* pst_frt_new - see chain.h. */
int
pst_frt_new(uv_loop_t *loop, unsigned workers, struct pst_frt **out)
{
    struct pst_frt *rt = pst_xcalloc(1, sizeof(*rt));
    int rc;

    if (workers == 0 || workers > FRT_WORKERS_MAX) {
        free(rt);
        return -EINVAL;
    }
    rt->loop = loop;
    pthread_mutex_init(&rt->mu, NULL);
    pthread_cond_init(&rt->cv, NULL);
    rc = uv_async_init(loop, &rt->async, on_async);
    if (rc < 0) {
        pthread_mutex_destroy(&rt->mu);
        pthread_cond_destroy(&rt->cv);
        free(rt);
        return rc;
    }
    rt->async.data = rt;
    rt->threads = pst_xcalloc(workers, sizeof(*rt->threads));
    for (unsigned i = 0; i < workers; i++) {
        if (pthread_create(&rt->threads[i], NULL, worker, rt) != 0)
            break;
        rt->nthreads++;
    }
    if (rt->nthreads == 0) {
        pst_frt_close(rt);
        return -EAGAIN;
    }
    pst__frt_current = rt;
    *out = rt;
    return 0;
}

static void
on_async_closed(uv_handle_t *h)
{
    free(h->data);
}

/* pst_frt_close - see chain.h. */
void
pst_frt_close(struct pst_frt *rt)
{
    if (rt == NULL)
        return;
    pthread_mutex_lock(&rt->mu);
    rt->stop = true;
    pthread_cond_broadcast(&rt->cv);
    pthread_mutex_unlock(&rt->mu);
    for (unsigned i = 0; i < rt->nthreads; i++)
        pthread_join(rt->threads[i], NULL);
    free(rt->threads);
    /* Every job still held gets its done() (which finds no session and
     * frees the job): the finished ones and those never started. */
    struct pst_frt *saved = pst__frt_current;
    pst__frt_current = NULL;
    on_async(&rt->async);
    while (rt->q_head) {
        struct fjob *j = rt->q_head;
        rt->q_head = j->next;
        j->done(j->job);
        free(j);
    }
    pst__frt_current = saved == rt ? NULL : saved;
    pthread_mutex_destroy(&rt->mu);
    pthread_cond_destroy(&rt->cv);
    uv_close((uv_handle_t *)&rt->async, on_async_closed);
}

int
pst__frt_submit(struct pst_frt *rt, void *job, pst_fwork_fn work,
                pst_fdone_fn done)
{
    if (rt == NULL || work == NULL || done == NULL)
        return -EINVAL;
    pthread_mutex_lock(&rt->mu);
    if (rt->stop || rt->inflight >= PST_FPOOL_QUEUE_MAX) {
        pthread_mutex_unlock(&rt->mu);
        return -EAGAIN;
    }
    struct fjob *j = pst_xcalloc(1, sizeof(*j));
    j->job = job;
    j->work = work;
    j->done = done;
    if (rt->q_tail)
        rt->q_tail->next = j;
    else
        rt->q_head = j;
    rt->q_tail = j;
    rt->inflight++;
    pthread_cond_signal(&rt->cv);
    pthread_mutex_unlock(&rt->mu);
    return 0;
}

void
pst__frt_attach(struct pst_frt *rt, struct pst_fsess *fs)
{
    size_t b = fs->id % FRT_BUCKETS;
    fs->hnext = rt->table[b];
    rt->table[b] = fs;
}

void
pst__frt_detach(struct pst_frt *rt, struct pst_fsess *fs)
{
    struct pst_fsess **pp = &rt->table[fs->id % FRT_BUCKETS];
    for (; *pp; pp = &(*pp)->hnext) {
        if (*pp == fs) {
            *pp = fs->hnext;
            return;
        }
    }
}

struct pst_fsess *
pst__frt_find(struct pst_frt *rt, uint64_t id)
{
    for (struct pst_fsess *fs = rt->table[id % FRT_BUCKETS]; fs;
         fs = fs->hnext)
        if (fs->id == id)
            return fs;
    return NULL;
}
