/*
 * spool_bench.c - commits per second of the spool alone (no SMTP), with
 * N messages in flight, and the fsyncs each commit cost.
 *
 *   spool_bench DIR [concurrency] [messages] [size] [--deliver]
 *
 * Each "client" creates a message, writes `size` bytes (default 1024) in
 * one call, commits, and starts the next when its callback arrives, until
 * `messages` (default 5000) have been committed. Deliveries are paused
 * unless --deliver is given (then they go to DIR/mail as maildir). DIR is
 * created and left behind (spool and maildir) for inspection; remove it.
 * Prints one line: concurrency, messages, seconds, msgs/s, batches,
 * fsyncs/message (commit path), p50 and p99 commit latency in ms.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "core/log.h"
#include "core/util.h"
#include "queue/queue.h"
#include "queue/spool.h"

struct client {
    struct bench *b;
    uint64_t t0;
};

struct bench {
    struct pst_queue *q;
    struct pst_spool *sp;
    unsigned conc, total, started, done;
    size_t size;
    char *body;
    double *lat;
    int failed;
};

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void start_one(struct client *c);

static void
on_commit(void *arg, int status)
{
    struct client *c = arg;
    struct bench *b = c->b;
    if (status != 0) {
        fprintf(stderr, "commit failed: %d\n", status);
        b->failed++;
    }
    b->lat[b->done++] = (double)(now_ns() - c->t0) / 1e6;
    if (b->started < b->total)
        start_one(c);
}

static void
start_one(struct client *c)
{
    struct bench *b = c->b;
    struct pst_spool_msg *m;
    struct pst_envelope e;
    char qid[PST_QID_LEN + 1];

    b->started++;
    c->t0 = now_ns();
    if (pst_spool_msg_new(b->sp, &m, qid) != 0 ||
        pst_spool_msg_write(m, b->body, b->size) != 0) {
        fprintf(stderr, "spool write failed\n");
        exit(1);
    }
    pst_envelope_init(&e);
    e.sender = pst_xstrdup("bench@example.org");
    pst_envelope_add_rcpt(&e, "rcpt@example.net");
    e.arrival = time(NULL);
    pst_spool_msg_commit(m, &e, on_commit, c);
    pst_envelope_free(&e);
}

static int
cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
    struct bench b = {0};
    struct pst_conf conf;
    struct pst_err err = {0};
    struct pst_queue_stats s0, s1;
    uv_loop_t loop;
    bool deliver = false;

    if (argc < 2) {
        fprintf(stderr, "usage: spool_bench DIR [concurrency] [messages] "
                "[size] [--deliver]\n");
        return 2;
    }
    if (strcmp(argv[argc - 1], "--deliver") == 0) {
        deliver = true;
        argc--;
    }
    b.conc = argc > 2 ? (unsigned)atoi(argv[2]) : 1;
    b.total = argc > 3 ? (unsigned)atoi(argv[3]) : 5000;
    b.size = argc > 4 ? (size_t)atoi(argv[4]) : 1024;
    if (b.conc == 0 || b.total == 0 || b.conc > 10000 || b.total > 1000000) {
        fprintf(stderr, "spool_bench: concurrency 1..10000, messages "
                "1..1000000\n");
        return 2;
    }
    b.body = pst_xmalloc(b.size);
    for (size_t i = 0; i < b.size; i++)
        b.body[i] = (i % 78 == 76) ? '\r' : (i % 78 == 77) ? '\n' : 'x';
    b.lat = pst_xcalloc(b.total, sizeof(double));

    pst_log_open("spool_bench", 0, LOG_MAIL, PST_LOG_WARN);
    memset(&conf, 0, sizeof(conf));
    conf.queue.directory = pst_xasprintf("%s/spool", argv[1]);
    conf.delivery.default_route = pst_xasprintf("maildir:%s/mail", argv[1]);
    conf.delivery.retry_min = 60;
    conf.delivery.retry_max = 600;
    conf.delivery.lifetime = 86400;
    conf.delivery.concurrency = 20;
    uv_loop_init(&loop);
    if (pst_queue_open(&b.q, &loop, &conf, &err) != 0) {
        fprintf(stderr, "spool_bench: %s\n", pst_err_first(&err));
        return 1;
    }
    b.sp = pst_queue_spool(b.q);
    pst_queue_pause(b.q, !deliver);
    pst_queue_stats(b.q, &s0);
    struct client *cl = pst_xcalloc(b.conc, sizeof(*cl));
    uint64_t t0 = now_ns();
    for (unsigned i = 0; i < b.conc && b.started < b.total; i++) {
        cl[i].b = &b;
        start_one(&cl[i]);
    }
    while (b.done < b.total)
        uv_run(&loop, UV_RUN_ONCE);
    double secs = (double)(now_ns() - t0) / 1e9;
    pst_queue_stats(b.q, &s1);
    qsort(b.lat, b.total, sizeof(double), cmp);
    printf("concurrency=%u messages=%u size=%zu seconds=%.3f msgs_per_s=%.0f "
           "batches=%llu fsyncs_per_msg=%.3f p50_ms=%.3f p99_ms=%.3f "
           "failed=%d\n",
           b.conc, b.total, b.size, secs, b.total / secs,
           (unsigned long long)(s1.batches - s0.batches),
           (double)(s1.fsyncs - s0.fsyncs) / b.total, b.lat[b.total / 2],
           b.lat[(size_t)(b.total * 0.99)], b.failed);
    pst_queue_close(b.q);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(cl);
    free(b.lat);
    free(b.body);
    free(conf.queue.directory);
    free(conf.delivery.default_route);
    return b.failed ? 1 : 0;
}
