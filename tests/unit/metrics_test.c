/*
 * metrics_test.c - the metrics registry: the exact text it renders
 * (families sorted, labels escaped, histogram buckets cumulative with
 * +Inf and _count equal, scaled values), the same series returned for
 * the same name and labels, and counts exact under concurrent updates
 * from several threads while another renders.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <cmocka.h>

#include "core/metrics.h"
#include "core/tbuf.h"

static const struct pst_buckets ms3 = {.scale = 1000, .n = 3,
                                       .le = {1, 10, 1500}};

static void
test_render(void **state)
{
    (void)state;
    struct pst_metric *c = pst_metric_counter(
        "t_events_total", "Events \\ seen\nhere.", "kind", "a\"b\\c\nd\x01",
        NULL);
    struct pst_metric *c2 = pst_metric_counter(
        "t_events_total", "ignored", "kind", "a\"b\\c\nd\x01", NULL);
    assert_ptr_equal(c, c2);
    struct pst_metric *g = pst_metric_gauge("t_level", "A level.", NULL);
    struct pst_metric *h =
        pst_metric_histogram("t_wait_seconds", "Waits.", &ms3, "q", "x",
                             NULL);
    pst_metric_add(c, 3);
    pst_metric_set(g, 7);
    pst_metric_sub(g, 9);
    pst_metric_observe(h, 1);       /* 0.001 */
    pst_metric_observe(h, 2);       /* 0.002 */
    pst_metric_observe(h, 1500);    /* 1.5 */
    pst_metric_observe(h, 99999);   /* 99.999 */
    assert_int_equal(pst_metric_value(c), 3);
    assert_int_equal(pst_metric_value(g), -2);

    struct pst_tbuf b;
    pst_tbuf_init(&b);
    pst_metrics_render(&b);
    const char *want =
        "# HELP t_events_total Events \\\\ seen\\nhere.\n"
        "# TYPE t_events_total counter\n"
        "t_events_total{kind=\"a\\\"b\\\\c\\nd?\"} 3\n"
        "# HELP t_level A level.\n"
        "# TYPE t_level gauge\n"
        "t_level -2\n"
        "# HELP t_wait_seconds Waits.\n"
        "# TYPE t_wait_seconds histogram\n"
        "t_wait_seconds_bucket{q=\"x\",le=\"0.001\"} 1\n"
        "t_wait_seconds_bucket{q=\"x\",le=\"0.01\"} 2\n"
        "t_wait_seconds_bucket{q=\"x\",le=\"1.5\"} 3\n"
        "t_wait_seconds_bucket{q=\"x\",le=\"+Inf\"} 4\n"
        "t_wait_seconds_sum{q=\"x\"} 101.502\n"
        "t_wait_seconds_count{q=\"x\"} 4\n";
    /* other tests may have added families after these; compare the start */
    assert_true(b.len >= strlen(want));
    pst_tbuf_cstr(&b);
    if (strncmp(b.p, want, strlen(want)) != 0)
        fail_msg("rendered:\n%s\nwanted:\n%s", b.p, want);
    pst_tbuf_free(&b);
}

struct hammer {
    struct pst_metric *c, *h;
    int n;
};

static void *
hammer_run(void *arg)
{
    struct hammer *x = arg;
    for (int i = 0; i < x->n; i++) {
        pst_metric_add(x->c, 1);
        pst_metric_observe(x->h, (uint64_t)(i % 2000));
    }
    return NULL;
}

static void
test_threads(void **state)
{
    (void)state;
    struct hammer x = {
        .c = pst_metric_counter("u_hits_total", "Hits.", NULL),
        .h = pst_metric_histogram("u_size", "Sizes.", &pst_buckets_count,
                                  NULL),
        .n = 200000,
    };
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer_run, &x), 0);
    for (int i = 0; i < 20; i++) {      /* render while they count */
        struct pst_tbuf b;
        pst_tbuf_init(&b);
        pst_metrics_render(&b);
        pst_tbuf_free(&b);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(pst_metric_value(x.c), 4 * x.n);
    struct pst_tbuf b;
    pst_tbuf_init(&b);
    pst_metrics_render(&b);
    pst_tbuf_cstr(&b);
    assert_non_null(strstr(b.p, "u_size_count 800000\n"));
    assert_non_null(strstr(b.p, "u_size_bucket{le=\"+Inf\"} 800000\n"));
    pst_tbuf_free(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
