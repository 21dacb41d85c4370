/*
 * pool_test.c - the bounded worker pool (core/pool.c) on a real loop:
 * every job's work and done counted (done exactly once, on the loop
 * thread), per-thread init/fini counted and the context handed to work on
 * the same thread, the bound (-EAGAIN, then room again), a drain that runs
 * what is queued and calls back once, a close with jobs queued (the
 * running one finishes, the others are cancelled), a failing thread_init,
 * and a clean loop close after each.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/pool.h"

/* ---- a gate the test opens, so jobs can be held running ---- */

static pthread_mutex_t gmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gcv = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static unsigned entered;            /* jobs that reached their work() */

static void
gate_set(bool open)
{
    pthread_mutex_lock(&gmu);
    gate_open = open;
    entered = 0;
    pthread_cond_broadcast(&gcv);
    pthread_mutex_unlock(&gmu);
}

static void
gate_pass(void)
{
    pthread_mutex_lock(&gmu);
    entered++;
    pthread_cond_broadcast(&gcv);
    while (!gate_open)
        pthread_cond_wait(&gcv, &gmu);
    pthread_mutex_unlock(&gmu);
}

static void
wait_entered(unsigned n)
{
    pthread_mutex_lock(&gmu);
    while (entered < n)
        pthread_cond_wait(&gcv, &gmu);
    pthread_mutex_unlock(&gmu);
}

/* ---- per-thread context and counted jobs ---- */

struct tctx {
    pthread_t self;
    unsigned jobs;
};

static int ninit, nfini, fail_init_at;
static int bad;                     /* violations seen on worker threads
                                       (cmocka asserts on the main one) */
static pthread_mutex_t cmu = PTHREAD_MUTEX_INITIALIZER;
static struct tctx *finished_ctx[8];

static int
t_init(void *arg, void **out)
{
    pthread_mutex_lock(&cmu);
    int n = ++ninit;
    if (arg != &ninit)
        bad++;
    pthread_mutex_unlock(&cmu);
    if (fail_init_at && n == fail_init_at)
        return -ENOMEM;
    struct tctx *t = calloc(1, sizeof(*t));
    t->self = pthread_self();
    *out = t;
    return 0;
}

static void
t_fini(void *arg, void *ctx)
{
    struct tctx *t = ctx;
    pthread_mutex_lock(&cmu);
    if (!pthread_equal(t->self, pthread_self()))
        bad++;
    finished_ctx[nfini++] = t;
    pthread_mutex_unlock(&cmu);
}

struct tjob {
    struct pst_pool_job j;
    unsigned works, dones;
    bool ran, hold;
};

static pthread_t loop_thread;
static unsigned ndone, nran, want_done;
static uv_loop_t *cur_loop;

static void
t_work(struct pst_pool_job *pj, void *ctx)
{
    struct tjob *t = (struct tjob *)pj;
    struct tctx *c = ctx;
    pthread_mutex_lock(&cmu);
    if ((c && !pthread_equal(c->self, pthread_self())) ||
        pthread_equal(pthread_self(), loop_thread))
        bad++;
    pthread_mutex_unlock(&cmu);
    if (c)
        c->jobs++;
    if (t->hold)
        gate_pass();
    t->works++;
}

static void
t_done(struct pst_pool_job *pj, bool ran)
{
    struct tjob *t = (struct tjob *)pj;
    assert_true(pthread_equal(pthread_self(), loop_thread));
    t->dones++;
    t->ran = ran;
    ndone++;
    nran += ran;
    if (want_done && ndone == want_done)
        uv_stop(cur_loop);
}

static void
reset(uv_loop_t *loop)
{
    loop_thread = pthread_self();
    cur_loop = loop;
    ndone = nran = want_done = 0;
    ninit = nfini = fail_init_at = bad = 0;
    gate_set(true);
}

static void
jobs_init(struct tjob *v, size_t n, bool hold)
{
    memset(v, 0, n * sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        v[i].j.work = t_work;
        v[i].j.done = t_done;
        v[i].hold = hold;
    }
}

static void
run_until(uv_loop_t *loop, unsigned n)
{
    want_done = n;
    if (ndone < n)
        uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(ndone, n);
}

static void
close_clean(uv_loop_t *loop, struct pst_pool *p)
{
    pst_pool_close(p);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
    assert_int_equal(bad, 0);
}

static void
test_jobs_and_thread_callbacks(void **state)
{
    uv_loop_t loop;
    struct pst_pool *p;
    static struct tjob jobs[200];
    uv_loop_init(&loop);
    reset(&loop);
    struct pst_pool_opts o = {.name = "pst-test", .threads = 3,
                              .thread_init = t_init, .thread_fini = t_fini,
                              .arg = &ninit};
    assert_int_equal(pst_pool_new(&p, &loop, &o), 0);
    assert_int_equal(ninit, 3);         /* every thread, before any job */
    jobs_init(jobs, 200, false);
    for (size_t i = 0; i < 200; i++)
        assert_int_equal(pst_pool_submit(p, &jobs[i].j), 0);
    run_until(&loop, 200);
    assert_int_equal(pst_pool_pending(p), 0);
    for (size_t i = 0; i < 200; i++) {
        if (jobs[i].works != 1 || jobs[i].dones != 1 || !jobs[i].ran)
            fail_msg("job %zu: %u works, %u dones, ran %d", i, jobs[i].works,
                     jobs[i].dones, jobs[i].ran);
    }
    assert_int_equal(nfini, 0);
    close_clean(&loop, p);
    assert_int_equal(nfini, 3);
    unsigned total = 0;
    for (int i = 0; i < 3; i++) {
        total += finished_ctx[i]->jobs;
        free(finished_ctx[i]);
    }
    assert_int_equal(total, 200);       /* each counted on its own thread */
}

static void
test_bound(void **state)
{
    uv_loop_t loop;
    struct pst_pool *p;
    struct tjob jobs[6];
    uv_loop_init(&loop);
    reset(&loop);
    struct pst_pool_opts o = {.name = "pst-test", .threads = 2,
                              .max_jobs = 4};
    assert_int_equal(pst_pool_new(&p, &loop, &o), 0);
    jobs_init(jobs, 6, true);
    gate_set(false);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pst_pool_submit(p, &jobs[i].j), 0);
    /* full: waiting, running and finished-not-reported all count */
    assert_int_equal(pst_pool_submit(p, &jobs[4].j), -EAGAIN);
    assert_int_equal(pst_pool_pending(p), 4);
    wait_entered(2);
    assert_int_equal(pst_pool_submit(p, &jobs[4].j), -EAGAIN);
    gate_set(true);
    run_until(&loop, 4);
    assert_int_equal(pst_pool_pending(p), 0);
    assert_int_equal(jobs[4].works + jobs[4].dones, 0);
    assert_int_equal(pst_pool_submit(p, &jobs[4].j), 0);   /* room again */
    assert_int_equal(pst_pool_submit(p, &jobs[5].j), 0);
    run_until(&loop, 6);
    close_clean(&loop, p);
}

static unsigned ndrained;

static void
on_drained(void *arg)
{
    assert_ptr_equal(arg, &ndrained);
    ndrained++;
    uv_stop(cur_loop);
}

static void
test_drain(void **state)
{
    uv_loop_t loop;
    struct pst_pool *p;
    struct tjob jobs[21];
    uv_loop_init(&loop);
    reset(&loop);
    ndrained = 0;
    struct pst_pool_opts o = {.name = "pst-test", .threads = 2,
                              .max_jobs = 100};
    assert_int_equal(pst_pool_new(&p, &loop, &o), 0);
    jobs_init(jobs, 21, true);
    gate_set(false);
    for (int i = 0; i < 20; i++)
        assert_int_equal(pst_pool_submit(p, &jobs[i].j), 0);
    pst_pool_drain(p, on_drained, &ndrained);
    assert_int_equal(pst_pool_submit(p, &jobs[20].j), -ESHUTDOWN);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(ndrained, 0);      /* jobs still held */
    gate_set(true);
    uv_run(&loop, UV_RUN_DEFAULT);      /* until drained */
    assert_int_equal(ndrained, 1);
    assert_int_equal(nran, 20);
    assert_int_equal(ndone, 20);
    assert_int_equal(jobs[20].works + jobs[20].dones, 0);
    close_clean(&loop, p);
    assert_int_equal(ndrained, 1);

    /* an empty pool calls back from the loop, not inside the call */
    uv_loop_init(&loop);
    reset(&loop);
    assert_int_equal(pst_pool_new(&p, &loop, &o), 0);
    pst_pool_drain(p, on_drained, &ndrained);
    assert_int_equal(ndrained, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(ndrained, 2);
    close_clean(&loop, p);
}

/* The main thread is asleep (in pst_pool_close's join): a thread's state
 * in /proc is 'S'. */
static pid_t main_tid;

static bool
main_sleeping(void)
{
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)main_tid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' && rp[2] == 'S';
}

static atomic_bool closing;

static void *
opener(void *arg)
{
    /* open the gate only once the loop thread is blocked in close, so the
     * stop is set before the running job ends */
    while (!closing)
        usleep(1000);
    while (!main_sleeping())
        usleep(1000);
    gate_set(true);
    return NULL;
}

static void
test_close_with_jobs_queued(void **state)
{
    uv_loop_t loop;
    struct pst_pool *p;
    struct tjob jobs[10];
    pthread_t th;
    uv_loop_init(&loop);
    reset(&loop);
    main_tid = gettid();
    closing = false;
    struct pst_pool_opts o = {.name = "pst-test", .threads = 1,
                              .thread_init = t_init, .thread_fini = t_fini,
                              .arg = &ninit};
    assert_int_equal(pst_pool_new(&p, &loop, &o), 0);
    jobs_init(jobs, 10, true);
    gate_set(false);
    for (int i = 0; i < 10; i++)
        assert_int_equal(pst_pool_submit(p, &jobs[i].j), 0);
    wait_entered(1);                    /* job 0 runs, 1..9 wait */
    assert_int_equal(pthread_create(&th, NULL, opener, NULL), 0);
    closing = true;
    pst_pool_close(p);
    pthread_join(th, NULL);
    /* every job's done ran once, inside close: the running one finished,
     * the queued ones cancelled unstarted */
    assert_int_equal(ndone, 10);
    assert_int_equal(nran, 1);
    assert_true(jobs[0].ran && jobs[0].works == 1);
    for (int i = 1; i < 10; i++) {
        assert_int_equal(jobs[i].dones, 1);
        assert_false(jobs[i].ran);
        assert_int_equal(jobs[i].works, 0);
    }
    assert_int_equal(nfini, 1);
    free(finished_ctx[0]);
    assert_int_equal(pst_pool_submit(p, &jobs[1].j), -ESHUTDOWN);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(bad, 0);
}

static void
test_init_failure(void **state)
{
    uv_loop_t loop;
    struct pst_pool *p = (struct pst_pool *)&loop;
    uv_loop_init(&loop);
    reset(&loop);
    fail_init_at = 2;
    struct pst_pool_opts o = {.name = "pst-test", .threads = 3,
                              .thread_init = t_init, .thread_fini = t_fini,
                              .arg = &ninit};
    assert_int_equal(pst_pool_new(&p, &loop, &o), -ENOMEM);
    assert_null(p);
    assert_int_equal(ninit, 3);
    assert_int_equal(nfini, 2);         /* the threads that did start */
    free(finished_ctx[0]);
    free(finished_ctx[1]);
    o.threads = 0;
    assert_int_equal(pst_pool_new(&p, &loop, &o), -EINVAL);
    o.threads = PST_POOL_THREADS_MAX + 1;
    assert_int_equal(pst_pool_new(&p, &loop, &o), -EINVAL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobs_and_thread_callbacks),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_close_with_jobs_queued),
        cmocka_unit_test(test_init_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
