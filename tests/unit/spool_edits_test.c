/*
 * spool_edits_test.c - filter edits and quarantine through the real spool:
 * a message committed with an edit blob is delivered (maildir) edited,
 * its spool file keeping the original text; the edits survive a restart;
 * a damaged blob stops delivery instead of sending the wrong text; a
 * quarantined message waits in hold/ undelivered until released, and is
 * then delivered as it was committed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/envelope.h"
#include "core/util.h"
#include "queue/edits.h"
#include "queue/spool.h"
#include "queue/qmgr.h"
#include "queue/queue.h"
#include "queue/spool_int.h"

struct fx {
    char root[128], spool[192], mail[192], route[256];
    uv_loop_t loop;
    uv_timer_t tick;
    struct pst_conf conf;
    struct pst_queue *q;
    struct pst_spool *sp;           /* the queue's */
};

static int
setup(void **state)
{
    struct fx *f = pst_xcalloc(1, sizeof(*f));
    snprintf(f->root, sizeof(f->root), "/tmp/pst-spool-edits-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->spool, sizeof(f->spool), "%s/spool", f->root);
    snprintf(f->mail, sizeof(f->mail), "%s/mail", f->root);
    f->conf.queue.directory = f->spool;
    snprintf(f->route, sizeof(f->route), "maildir:%s", f->mail);
    f->conf.delivery.default_route = f->route;
    f->conf.delivery.retry_min = 1;
    f->conf.delivery.retry_max = 1;
    f->conf.delivery.lifetime = 3600;
    f->conf.delivery.concurrency = 2;
    f->conf.queue.segment_size = 1024 * 1024;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->tick);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    if (f->q)
        pst_queue_close(f->q);
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    char *cmd = pst_xasprintf("rm -rf '%s'", f->root);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    free(f);
    return 0;
}

static void
on_tick(uv_timer_t *t)
{
}

static bool
run_until(struct fx *f, bool (*pred)(void *), void *arg, unsigned ms)
{
    uint64_t end = uv_now(&f->loop) + ms;
    uv_timer_start(&f->tick, on_tick, 5, 5);
    while (!pred(arg) && uv_now(&f->loop) < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->tick);
    return pred(arg);
}

static void
spool_open(struct fx *f)
{
    struct pst_err err = {0};
    if (pst_queue_open(&f->q, &f->loop, &f->conf, &err) != 0)
        fail_msg("pst_queue_open: %s", pst_err_first(&err));
    f->sp = pst_queue_spool(f->q);
    pst_err_free(&err);
}

static void
spool_close(struct fx *f)
{
    pst_queue_close(f->q);
    f->q = NULL;
    f->sp = NULL;
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static int
count(struct fx *f, const char *base, const char *sub)
{
    char p[400];
    snprintf(p, sizeof(p), "%s/%s", base, sub);
    DIR *d = opendir(p);
    struct dirent *de;
    int n = 0;
    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

struct cnt {
    struct fx *f;
    const char *base, *sub;
    int want;
};

static bool
pred_count(void *arg)
{
    struct cnt *c = arg;
    return count(c->f, c->base, c->sub) == c->want;
}

static bool
wait_count(struct fx *f, const char *base, const char *sub, int want,
           unsigned ms)
{
    struct cnt c = {f, base, sub, want};
    return run_until(f, pred_count, &c, ms);
}

/* The one file in dir, read whole (NUL-terminated). */
static size_t last_size;           /* of the last only_file */

static char *
only_file(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char *out = NULL;
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char p[700];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        int fd = open(p, O_RDONLY);
        struct stat st;
        assert_true(fd >= 0);
        fstat(fd, &st);
        out = pst_xmalloc((size_t)st.st_size + 1);
        assert_int_equal(read(fd, out, (size_t)st.st_size), st.st_size);
        out[st.st_size] = '\0';
        last_size = (size_t)st.st_size;
        close(fd);
        break;
    }
    closedir(d);
    assert_non_null(out);
    return out;
}

struct sub {
    int status;
    bool done;
    char qid[PST_QID_LEN + 1];
};

static void
on_commit(void *arg, int status)
{
    struct sub *s = arg;
    s->status = status;
    s->done = true;
}

static bool
pred_done(void *arg)
{
    return ((struct sub *)arg)->done;
}

static const char text[] = "Received: from a.example\r\n"
                           "Subject: original\r\n"
                           "X-Drop: me\r\n"
                           "\r\n"
                           "part one\r\n"
                           "part two\r\n";

/* Commit text with blob (may be NULL), maybe held. */
static void
submit(struct fx *f, struct sub *s, const struct pst_tbuf *blob, bool hold)
{
    struct pst_spool_msg *m;
    struct pst_envelope e;
    memset(s, 0, sizeof(*s));
    assert_int_equal(pst_spool_msg_new(f->sp, &m, s->qid), 0);
    assert_int_equal(pst_spool_msg_write(m, text, sizeof(text) - 1), 0);
    if (blob)
        assert_int_equal(pst_spool_msg_set_edits(m, blob->p, blob->len), 0);
    if (hold)
        pst_spool_msg_set_hold(m, "test quarantine");
    pst_envelope_init(&e);
    e.sender = pst_xstrdup("s@example.com");
    pst_envelope_add_rcpt(&e, "r@example.org");
    e.arrival = time(NULL);
    pst_spool_msg_commit(m, &e, on_commit, s);
    pst_envelope_free(&e);
    assert_true(run_until(f, pred_done, s, 5000));
    assert_int_equal(s->status, 0);
}

static void
make_blob(struct pst_tbuf *b)
{
    /* Subject replaced, X-Drop removed, a field added, "one" -> "1" */
    pst_edits_begin(b);
    pst_edits_put_hdr(b, 57);       /* the three fields */
    pst_edits_put_text(b, "X-Added: yes\r\n", 14);
    pst_edits_put_keep(b, 0, 26);
    pst_edits_put_text(b, "Subject: edited\r\n", 17);
    pst_edits_put_body(b, 59 + 5, 3, "1", 1);
}

static const char edited[] = "X-Added: yes\r\n"
                             "Received: from a.example\r\n"
                             "Subject: edited\r\n"
                             "\r\n"
                             "part 1\r\n"
                             "part two\r\n";

static void
test_edits_delivered(void **state)
{
    struct fx *f = *state;
    struct pst_tbuf b = {0};
    struct sub s;
    char dir[400];
    assert_int_equal(strncmp(text + 57, "\r\npart one", 10), 0);
    make_blob(&b);
    spool_open(f);
    submit(f, &s, &b, false);
    assert_true(wait_count(f, f->mail, "new", 1, 5000));
    snprintf(dir, sizeof(dir), "%s/new", f->mail);
    char *got = only_file(dir);
    char *want = pst_xasprintf("Return-Path: <s@example.com>\r\n"
                               "Delivered-To: r@example.org\r\n%s", edited);
    assert_string_equal(got, want);
    free(got);
    free(want);
    spool_close(f);
    pst_tbuf_free(&b);
}

static void
test_edits_survive_restart(void **state)
{
    struct fx *f = *state;
    struct pst_tbuf b = {0};
    struct sub s;
    char dir[400];
    make_blob(&b);
    /* deliveries paused: the message waits in the log */
    spool_open(f);
    pst_queue_pause(f->q, true);
    submit(f, &s, &b, false);
    assert_int_equal(count(f, f->spool, "active"), 0);
    /* its segment keeps the original text, and the edits beside it */
    snprintf(dir, sizeof(dir), "%s/log", f->spool);
    char *raw = only_file(dir);
    assert_non_null(memmem(raw, last_size, "part one", 8));
    assert_non_null(memmem(raw, last_size, "X-Added: yes", 12));
    free(raw);
    spool_close(f);
    assert_int_equal(count(f, f->mail, "new"), 0);    /* not delivered */
    spool_open(f);                  /* recovery, then delivery */
    assert_true(wait_count(f, f->mail, "new", 1, 5000));
    snprintf(dir, sizeof(dir), "%s/new", f->mail);
    char *got = only_file(dir);
    assert_non_null(strstr(got, edited));
    free(got);
    spool_close(f);
    pst_tbuf_free(&b);
}

static void
test_bad_blob_not_delivered(void **state)
{
    struct fx *f = *state;
    struct pst_tbuf b = {0};
    struct sub s;
    pst_tbuf_add(&b, "PSTE\x01Z", 6);   /* an unknown op */
    spool_open(f);
    submit(f, &s, &b, false);
    assert_false(wait_count(f, f->mail, "new", 1, 600));
    assert_int_equal(count(f, f->spool, "active"), 1);  /* kept */
    spool_close(f);
    pst_tbuf_free(&b);
}

struct opdone {
    bool done;
    int status;
};

static void
on_op(void *arg, int status, const char *t)
{
    struct opdone *o = arg;
    o->done = true;
    o->status = status;
}

static bool
pred_op(void *arg)
{
    return ((struct opdone *)arg)->done;
}

static void
test_quarantine_release(void **state)
{
    struct fx *f = *state;
    struct pst_tbuf b = {0};
    struct sub s;
    char dir[400];
    make_blob(&b);
    spool_open(f);
    submit(f, &s, &b, true);
    assert_int_equal(count(f, f->spool, "hold"), 1);
    assert_int_equal(count(f, f->spool, "active"), 0);
    assert_false(wait_count(f, f->mail, "new", 1, 500)); /* not delivered */
    struct pst_queue_stats st;
    pst_queue_stats(f->q, &st);
    assert_int_equal(st.queued, 1);
    /* held across a restart too */
    spool_close(f);
    spool_open(f);
    assert_false(wait_count(f, f->mail, "new", 1, 300));
    struct opdone o = {0};
    pst__qmgr_op(pst__queue_qmgr(f->q), PST_QOP_RELEASE, s.qid, on_op, &o);
    assert_true(run_until(f, pred_op, &o, 5000));
    assert_int_equal(o.status, 0);
    assert_true(wait_count(f, f->mail, "new", 1, 5000));
    snprintf(dir, sizeof(dir), "%s/new", f->mail);
    char *got = only_file(dir);
    assert_non_null(strstr(got, edited));   /* as committed, not refiltered */
    free(got);
    spool_close(f);
    pst_tbuf_free(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_edits_delivered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_edits_survive_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_blob_not_delivered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_quarantine_release, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
