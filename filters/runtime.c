/*
 * runtime.c - the filter runtime of one loop: the pool of worker threads
 * for offloaded filter work (a core/pool.h pool of its own, never libuv's
 * shared pool, whose threads also carry file I/O), and the table of live
 * filter sessions by id.
 *
 * Threads: the workers run only work(job); done(job) always runs on the
 * loop thread. The pool holds at most PST_FPOOL_QUEUE_MAX jobs (waiting,
 * running or finished and not yet reported): beyond that
 * pst_fctx_offload fails with -EAGAIN and the filter answers tempfail.
 *
 * Sessions are found by id (pst_fctx_lookup), never by a pointer kept in
 * a job, so an answer for a session that has gone is simply dropped.
 */
#include "filters/chain_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/pool.h"

#define FRT_BUCKETS 1024

/* One offloaded job: the module's job and its two functions. */
struct fjob {
    struct pst_pool_job pj;
    void *job;
    pst_fwork_fn work;
    pst_fdone_fn done;
};

struct pst_frt {
    uv_loop_t *loop;
    struct pst_pool *pool;
    struct pst_fsess *table[FRT_BUCKETS];
};

_Thread_local struct pst_frt *pst__frt_current;

uv_loop_t *
pst__frt_loop(struct pst_frt *rt)
{
    return rt->loop;
}

static void
fjob_work(struct pst_pool_job *pj, void *tctx)
{
    struct fjob *j = (struct fjob *)pj;
    j->work(j->job);
}

/* Run or cancelled, the module's done() runs: it finds no session when
 * the runtime is closing, and frees its job. */
static void
fjob_done(struct pst_pool_job *pj, bool ran)
{
    struct fjob *j = (struct fjob *)pj;
    j->done(j->job);
    free(j);
}

/* Each worker thread prepares what the built-in modules keep per thread
 * (registry.c), before it takes a job: libmagic's database is loaded
 * there, at start, never on the loop thread. */
static int
thread_init(void *arg, void **tctx)
{
    pst__filters_thread_init();
    *tctx = NULL;
    return 0;
}

static void
thread_fini(void *arg, void *tctx)
{
    pst__filters_thread_fini();
}

/* pst_frt_new - see chain.h. */
int
pst_frt_new(uv_loop_t *loop, unsigned workers, struct pst_frt **out)
{
    struct pst_frt *rt = pst_xcalloc(1, sizeof(*rt));
    struct pst_pool_opts o = {.name = "pst-filter", .threads = workers,
                              .max_jobs = PST_FPOOL_QUEUE_MAX,
                              .thread_init = thread_init,
                              .thread_fini = thread_fini};
    int rc = pst_pool_new(&rt->pool, loop, &o);

    if (rc < 0) {
        free(rt);
        return rc;
    }
    rt->loop = loop;
    pst__frt_current = rt;
    *out = rt;
    return 0;
}

/* pst_frt_close - see chain.h. */
void
pst_frt_close(struct pst_frt *rt)
{
    if (rt == NULL)
        return;
    /* Every job still held gets its done() (which finds no session and
     * frees the job): the finished ones and those never started. */
    struct pst_frt *saved = pst__frt_current;
    pst__frt_current = NULL;
    pst_pool_close(rt->pool);
    pst__frt_current = saved == rt ? NULL : saved;
    free(rt);
}

int
pst__frt_submit(struct pst_frt *rt, void *job, pst_fwork_fn work,
                pst_fdone_fn done)
{
    if (rt == NULL || work == NULL || done == NULL)
        return -EINVAL;
    struct fjob *j = pst_xcalloc(1, sizeof(*j));
    j->pj.work = fjob_work;
    j->pj.done = fjob_done;
    j->job = job;
    j->work = work;
    j->done = done;
    int rc = pst_pool_submit(rt->pool, &j->pj);
    if (rc < 0) {
        free(j);
        return -EAGAIN;
    }
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
