/*
 * chain_test.c - the filter chain driven directly on a libuv loop: every
 * verdict, the strictest-verdict rule, accept, pending answers from the
 * worker pool while another session flows, deadlines and each failure
 * mode, invalid replies, sessions that go while pending, the ABI check,
 * the edit engine and its blob applied to a message.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "filters/chain.h"
#include "queue/edits.h"

/* A test module: each phase's verdict comes from its conf. */
struct tconf {
    enum pst_verdict v[PST_FP_COUNT];
    int code;                       /* reply, if non-zero */
    const char *enh, *text;
    unsigned sleep_ms;              /* PENDING: the work sleeps this long */
    bool gated;                     /* and then waits for gate_open() */
    enum pst_verdict async_v;       /* and answers this */
    int calls;
    int aborts;
    int dones;                      /* done() calls, found or not */
    size_t seen_hdrs;               /* header count at on_headers */
    const char *add, *remove;       /* on_headers edits */
};

struct tjob {
    struct pst_fref ref;
    struct tconf *c;
};

/* The gate holds gated work on its worker until the test opens it: work
 * that must outlast a deadline does so however loaded the machine is. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_is_open;

static void
gate_close(void)
{
    pthread_mutex_lock(&gate_mu);
    gate_is_open = false;
    pthread_mutex_unlock(&gate_mu);
}

static void
gate_open(void)
{
    pthread_mutex_lock(&gate_mu);
    gate_is_open = true;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

static void
t_work(void *p)
{
    struct tjob *j = p;
    usleep(j->c->sleep_ms * 1000);
    if (j->c->gated) {
        pthread_mutex_lock(&gate_mu);
        while (!gate_is_open)
            pthread_cond_wait(&gate_cv, &gate_mu);
        pthread_mutex_unlock(&gate_mu);
    }
}

static void
t_done(void *p)
{
    struct tjob *j = p;
    struct pst_fctx *fc = pst_fctx_lookup(j->ref);
    j->c->dones++;
    if (fc != NULL) {
        if (j->c->code)
            pst_fctx_reply(fc, j->c->code, j->c->enh, j->c->text);
        pst_fctx_resume(fc, j->c->async_v);
    }
    free(j);
}

static enum pst_verdict
t_verdict(struct pst_fctx *fc, enum pst_fphase ph)
{
    struct tconf *c = pst_fctx_conf(fc);
    c->calls++;
    if (c->v[ph] == PST_PENDING) {
        struct tjob *j = calloc(1, sizeof(*j));
        j->ref = pst_fctx_ref(fc);
        j->c = c;
        if (pst_fctx_offload(fc, j, t_work, t_done) < 0) {
            free(j);
            return PST_TEMPFAIL;
        }
        return PST_PENDING;
    }
    if (c->code && (c->v[ph] == PST_REJECT || c->v[ph] == PST_TEMPFAIL))
        pst_fctx_reply(fc, c->code, c->enh, c->text);
    return c->v[ph];
}

static enum pst_verdict
t_connect(struct pst_fctx *fc)
{
    return t_verdict(fc, PST_FP_CONNECT);
}

static enum pst_verdict
t_mail(struct pst_fctx *fc, const char *s)
{
    return t_verdict(fc, PST_FP_MAIL);
}

static enum pst_verdict
t_rcpt(struct pst_fctx *fc, const char *r)
{
    return t_verdict(fc, PST_FP_RCPT);
}

static enum pst_verdict
t_headers(struct pst_fctx *fc)
{
    struct tconf *c = pst_fctx_conf(fc);
    c->seen_hdrs = pst_hdr_count(fc);
    /* header injection through the edit API is refused */
    assert_int_equal(pst_hdr_add(fc, "X-Bad", "a\r\nBcc: v@x.example", false),
                     -EINVAL);
    assert_int_equal(pst_hdr_add(fc, "X-Bad", "a\nb", false), -EINVAL);
    assert_int_equal(pst_hdr_add(fc, "Bad:Name", "v", false), -EINVAL);
    assert_int_equal(pst_hdr_add(fc, "Bad Name", "v", false), -EINVAL);
    if (pst_hdr_count(fc) > 0)
        assert_int_equal(pst_hdr_replace(fc, 0, "x\ry"), -EINVAL);
    /* text encoded as pst_hdr_add would write it, with no field added */
    char *e = pst_hdr_encode(fc, "caf\xc3\xa9 ok =?x");
    assert_string_equal(e, pst_message_smtputf8(fc)
                               ? "caf\xc3\xa9 ok =?x"
                               : "=?UTF-8?B?Y2Fmw6k=?= ok =?UTF-8?B?PT94?=");
    free(e);
    e = pst_hdr_encode(fc, "plain text");
    assert_string_equal(e, "plain text");
    free(e);
    assert_null(pst_hdr_encode(fc, "a\r\nBcc: v@x.example"));
    assert_int_equal(pst_hdr_count(fc), c->seen_hdrs);  /* nothing added */
    if (c->remove) {
        long i = pst_hdr_find(fc, c->remove, 0);
        if (i >= 0)
            assert_int_equal(pst_hdr_remove(fc, (size_t)i), 0);
    }
    if (c->add)
        assert_int_equal(pst_hdr_add(fc, c->add, "added value", false), 0);
    return t_verdict(fc, PST_FP_HEADERS);
}

static unsigned mime_parts;
static char mime_type[64];
static bool remove_pdf;

static enum pst_verdict
t_message(struct pst_fctx *fc, const struct pst_mime_part *root)
{
    mime_parts = 0;
    for (const struct pst_mime_part *p = root ? root->child : NULL; p;
         p = p->next)
        mime_parts++;
    snprintf(mime_type, sizeof(mime_type), "%s",
             root ? root->content_type : "(none)");
    for (const struct pst_mime_part *p = root ? root->child : NULL;
         remove_pdf && p; p = p->next) {
        if (strcmp(p->content_type, "application/pdf") == 0) {
            assert_int_equal(pst_part_remove(fc, p, "--b here"),
                             -EINVAL);     /* would be a delimiter */
            assert_int_equal(pst_part_remove(fc, p, "--bx"), -EINVAL);
            /* the boundary inside the line is harmless */
            assert_int_equal(pst_part_remove(fc, p, "[pdf removed --b]"),
                             0);
        }
    }
    assert_int_equal(pst_part_remove(fc, root, "x"), -EINVAL);
    return PST_CONTINUE;
}

static enum pst_verdict
t_eom(struct pst_fctx *fc)
{
    return t_verdict(fc, PST_FP_EOM);
}

static void
t_abort(struct pst_fctx *fc)
{
    struct tconf *c = pst_fctx_conf(fc);
    c->aborts++;
}

static const struct pst_filter tmod = {
    .name = "t",
    PST_FILTER_ABI,
    .on_connect = t_connect,
    .on_mail = t_mail,
    .on_rcpt = t_rcpt,
    .on_headers = t_headers,
    .on_message = t_message,
    .on_eom = t_eom,
    .on_abort = t_abort,
};

/* ---- fixture ---- */

struct fx {
    uv_loop_t loop;
    struct pst_frt *rt;
    struct pst_chain *ch;
    struct pst_envelope env;
    struct tconf c[4];
    int cbs;
    struct pst_fres last;
};

static void
add(struct fx *f, int i, unsigned deadline_ms, enum pst_failmode fm)
{
    struct pst_err err = {0};
    assert_int_equal(pst_chain_append(f->ch, &tmod, &f->c[i], deadline_ms,
                                      fm, &err), 0);
}

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    uv_loop_init(&f->loop);
    assert_int_equal(pst_frt_new(&f->loop, 2, &f->rt), 0);
    f->ch = pst_chain_new();
    pst_envelope_init(&f->env);
    gate_close();
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    /* the test's confs are not heap objects: no unconfigure; gated work
     * left by a failed test ends */
    gate_open();
    pst_frt_close(f->rt);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);  /* no handle left */
    pst_chain_free(f->ch);
    pst_envelope_free(&f->env);
    free(f);
    return 0;
}

/* The result ends the loop's turn: a deadline already due when run()
 * enters the loop fires before the poll, and UV_RUN_ONCE would then block
 * in the poll for the gated work that cannot end. */
static void
on_result(void *arg, const struct pst_fres *r)
{
    struct fx *f = arg;
    f->cbs++;
    f->last = *r;
    uv_stop(&f->loop);
}

static struct pst_fsess *
sess(struct fx *f, uint64_t id)
{
    return pst_fsess_new(f->rt, f->ch, id, &f->env, on_result, f);
}

/* Run ph to completion, on the loop if it pends. */
static struct pst_fres
run(struct fx *f, struct pst_fsess *fs, enum pst_fphase ph)
{
    struct pst_fres r;
    int cbs = f->cbs;
    int rc = pst_fsess_run(fs, ph, "a@b.example", &r);
    assert_true(rc == 0 || rc == 1);
    if (rc == 0)
        return r;
    while (f->cbs == cbs)
        uv_run(&f->loop, UV_RUN_ONCE);
    return f->last;
}

static const char msg[] = "Received: from x\r\n"
                          "Subject: hello\r\n"
                          " folded\r\n"
                          "From: a@b.example\r\n"
                          "\r\n"
                          "body line 1\r\n"
                          "body line 2\r\n";

static struct pst_fres
run_message(struct fx *f, struct pst_fsess *fs)
{
    pst_fsess_msg_begin(fs, false);
    /* in odd fragments */
    for (size_t i = 0; i < sizeof(msg) - 1; i += 7)
        pst_fsess_msg_data(fs, msg + i, PST_MIN((size_t)7,
                                                sizeof(msg) - 1 - i));
    return run(f, fs, PST_FP_EOM);
}

/* ---- tests ---- */

static void
test_verdicts(void **state)
{
    struct fx *f = *state;
    add(f, 0, 0, PST_FAIL_TEMPFAIL);
    struct pst_fsess *fs = sess(f, 1);
    struct pst_fres r;

    r = run(f, fs, PST_FP_RCPT);
    assert_int_equal(r.verdict, PST_CONTINUE);

    f->c[0].v[PST_FP_RCPT] = PST_REJECT;
    f->c[0].code = 550;
    f->c[0].enh = "5.7.1";
    f->c[0].text = "no thanks";
    r = run(f, fs, PST_FP_RCPT);
    assert_int_equal(r.verdict, PST_REJECT);
    assert_int_equal(r.code, 550);
    assert_string_equal(r.enh, "5.7.1");
    assert_string_equal(r.text, "no thanks");
    assert_string_equal(r.filter, "t");

    f->c[0].v[PST_FP_RCPT] = PST_TEMPFAIL;
    f->c[0].code = 0;
    r = run(f, fs, PST_FP_RCPT);
    assert_int_equal(r.verdict, PST_TEMPFAIL);
    assert_int_equal(r.code, 451);
    assert_string_equal(r.enh, "4.3.0");

    f->c[0].v[PST_FP_EOM] = PST_DISCARD;
    r = run_message(f, fs);
    assert_int_equal(r.verdict, PST_DISCARD);
    pst_fsess_msg_end(fs);

    f->c[0].v[PST_FP_EOM] = PST_QUARANTINE;
    r = run_message(f, fs);
    assert_int_equal(r.verdict, PST_QUARANTINE);
    pst_fsess_msg_end(fs);

    /* discard before MAIL is invalid: failure mode tempfail */
    f->c[0].v[PST_FP_CONNECT] = PST_DISCARD;
    r = run(f, fs, PST_FP_CONNECT);
    assert_int_equal(r.verdict, PST_TEMPFAIL);
    struct pst_fstats st;
    pst_chain_stats(f->ch, 0, &st);
    assert_int_equal(st.invalid, 1);
    assert_int_equal(st.failures, 1);
    pst_fsess_free(fs);
}

static void
test_accept_skips(void **state)
{
    struct fx *f = *state;
    add(f, 0, 0, PST_FAIL_TEMPFAIL);
    add(f, 1, 0, PST_FAIL_TEMPFAIL);
    struct pst_fsess *fs = sess(f, 2);
    f->c[0].v[PST_FP_MAIL] = PST_ACCEPT;
    f->c[1].v[PST_FP_EOM] = PST_REJECT;
    pst_fsess_msg_begin(fs, false);
    struct pst_fres r = run(f, fs, PST_FP_MAIL);
    assert_int_equal(r.verdict, PST_CONTINUE);
    r = run(f, fs, PST_FP_RCPT);
    r = run(f, fs, PST_FP_EOM);
    assert_int_equal(r.verdict, PST_CONTINUE);
    assert_int_equal(f->c[1].calls, 0);  /* never ran for this message */
    pst_fsess_msg_end(fs);
    /* the next message is filtered again */
    r = run_message(f, fs);
    assert_int_equal(r.verdict, PST_REJECT);
    pst_fsess_free(fs);
}

static void
test_strictest(void **state)
{
    struct fx *f = *state;
    add(f, 0, 0, PST_FAIL_TEMPFAIL);
    add(f, 1, 0, PST_FAIL_TEMPFAIL);
    add(f, 2, 0, PST_FAIL_TEMPFAIL);
    struct pst_fsess *fs = sess(f, 3);
    f->c[0].v[PST_FP_EOM] = PST_QUARANTINE;
    f->c[1].v[PST_FP_HEADERS] = PST_DISCARD;
    struct pst_fres r = run_message(f, fs);
    assert_int_equal(r.verdict, PST_DISCARD);
    assert_int_equal(f->c[2].calls, 2);  /* the chain went on */
    pst_fsess_msg_end(fs);

    f->c[2].v[PST_FP_EOM] = PST_REJECT;
    r = run_message(f, fs);
    assert_int_equal(r.verdict, PST_REJECT);
    pst_fsess_msg_end(fs);

    f->c[2].v[PST_FP_EOM] = PST_TEMPFAIL;
    r = run_message(f, fs);
    assert_int_equal(r.verdict, PST_TEMPFAIL);
    pst_fsess_free(fs);
}

static void
test_invalid_reply(void **state)
{
    struct fx *f = *state;
    add(f, 0, 0, PST_FAIL_TEMPFAIL);
    add(f, 1, 0, PST_FAIL_REJECT);
    add(f, 2, 0, PST_FAIL_ACCEPT);
    struct pst_fsess *fs = sess(f, 4);
    struct pst_fres r;

    /* wrong class: a 4xx code with REJECT */
    f->c[0].v[PST_FP_RCPT] = PST_REJECT;
    f->c[0].code = 450;
    f->c[0].enh = "4.7.1";
    f->c[0].text = "x";
    r = run(f, fs, PST_FP_RCPT);
    assert_int_equal(r.verdict, PST_TEMPFAIL);
    assert_int_equal(r.code, 451);
    assert_string_equal(r.enh, "4.3.0");

    /* CR/LF in the text, failure mode reject */
    f->c[0] = (struct tconf){0};
    f->c[1].v[PST_FP_RCPT] = PST_REJECT;
    f->c[1].code = 550;
    f->c[1].enh = "5.7.1";
    f->c[1].text = "bad\r\n250 ok";
    r = run(f, fs, PST_FP_RCPT);
    assert_int_equal(r.verdict, PST_REJECT);
    assert_int_equal(r.code, 550);
    assert_null(strchr(r.text, '\r'));
    assert_string_equal(r.text, "Refused by filter t");

    /* enhanced code of another class, failure mode accept */
    f->c[1] = (struct tconf){0};
    f->c[2].v[PST_FP_RCPT] = PST_TEMPFAIL;
    f->c[2].code = 451;
    f->c[2].enh = "5.1.1";
    f->c[2].text = "x";
    r = run(f, fs, PST_FP_RCPT);
    assert_int_equal(r.verdict, PST_CONTINUE);

    /* an out-of-range verdict */
    f->c[2] = (struct tconf){0};
    f->c[0].v[PST_FP_RCPT] = (enum pst_verdict)42;
    r = run(f, fs, PST_FP_RCPT);
    assert_int_equal(r.verdict, PST_TEMPFAIL);
    pst_fsess_free(fs);
}

static void
test_pending_others_flow(void **state)
{
    struct fx *f = *state;
    add(f, 0, 60000, PST_FAIL_TEMPFAIL);      /* the answer, not this */
    struct pst_fsess *slow = sess(f, 10);
    struct pst_fsess *fast = sess(f, 11);
    struct pst_fres r;

    f->c[0].v[PST_FP_MAIL] = PST_PENDING;
    f->c[0].gated = true;           /* pending until the gate opens */
    f->c[0].async_v = PST_REJECT;
    f->c[0].code = 553;
    f->c[0].enh = "5.7.23";
    f->c[0].text = "SPF fail";
    pst_fsess_msg_begin(slow, false);
    assert_int_equal(pst_fsess_run(slow, PST_FP_MAIL, "x@y.example", &r), 1);
    assert_true(pst_fsess_pending(slow));
    /* while it waits, another session runs its phases at once: answered
     * without waiting for the loop (no timing: CI is loaded) */
    assert_int_equal(pst_fsess_run(fast, PST_FP_RCPT, "a@b.example", &r), 0);
    assert_int_equal(r.verdict, PST_CONTINUE);
    assert_int_equal(pst_fsess_run(fast, PST_FP_CONNECT, NULL, &r), 0);
    assert_int_equal(r.verdict, PST_CONTINUE);
    assert_true(pst_fsess_pending(slow));
    assert_int_equal(f->cbs, 0);
    gate_open();
    while (f->cbs == 0)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(f->cbs, 1);
    assert_int_equal(f->last.verdict, PST_REJECT);
    assert_int_equal(f->last.code, 553);
    assert_string_equal(f->last.text, "SPF fail");
    assert_false(pst_fsess_pending(slow));
    struct pst_fstats st;
    pst_chain_stats(f->ch, 0, &st);
    assert_int_equal(st.pending, 1);
    pst_fsess_free(slow);
    pst_fsess_free(fast);
}

static void
test_deadline_modes(void **state)
{
    struct fx *f = *state;
    static const enum pst_failmode fms[] = {PST_FAIL_TEMPFAIL,
                                            PST_FAIL_ACCEPT, PST_FAIL_REJECT};
    static const enum pst_verdict want[] = {PST_TEMPFAIL, PST_CONTINUE,
                                            PST_REJECT};
    for (int k = 0; k < 3; k++) {
        pst_chain_free(f->ch);
        f->ch = pst_chain_new();
        f->c[0] = (struct tconf){0};
        add(f, 0, 40, fms[k]);
        struct pst_fsess *fs = sess(f, 20 + (uint64_t)k);
        f->c[0].v[PST_FP_RCPT] = PST_PENDING;
        /* the work outlasts the 40 ms deadline whatever the machine's
         * load: it ends only when the gate opens */
        f->c[0].gated = true;
        gate_close();                       /* opened by the last round */
        f->c[0].async_v = PST_REJECT;
        int cbs = f->cbs;
        struct pst_fres r = run(f, fs, PST_FP_RCPT);
        assert_int_equal(f->cbs, cbs + 1);
        assert_int_equal(r.verdict, want[k]);
        assert_int_equal(f->c[0].dones, 0);     /* the work still runs */
        assert_int_equal(f->c[0].aborts, 1);
        struct pst_fstats st;
        pst_chain_stats(f->ch, 0, &st);
        assert_int_equal(st.timeouts, 1);
        /* the late answer arrives and is dropped */
        gate_open();
        while (f->c[0].dones == 0)
            uv_run(&f->loop, UV_RUN_ONCE);
        assert_int_equal(f->cbs, cbs + 1);
        pst_fsess_free(fs);
    }
}

static void
test_session_gone(void **state)
{
    struct fx *f = *state;
    add(f, 0, 2000, PST_FAIL_TEMPFAIL);
    struct pst_fsess *fs = sess(f, 30);
    struct pst_fres r;
    f->c[0].v[PST_FP_CONNECT] = PST_PENDING;
    f->c[0].sleep_ms = 50;
    f->c[0].async_v = PST_REJECT;
    assert_int_equal(pst_fsess_run(fs, PST_FP_CONNECT, NULL, &r), 1);
    pst_fsess_free(fs);             /* the client left */
    assert_int_equal(f->c[0].aborts, 1);
    while (f->c[0].dones == 0)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(f->cbs, 0);    /* dropped: no callback */
}

static void
test_abi(void **state)
{
    struct fx *f = *state;
    struct pst_err err = {0};
    struct pst_filter bad = tmod;
    bad.api = PST_FILTER_API + 1;
    assert_int_equal(pst_chain_append(f->ch, &bad, NULL, 0, 0, &err),
                     -EINVAL);
    assert_non_null(strstr(pst_err_first(&err), "API version"));
    pst_err_free(&err);
    bad = tmod;
    bad.env_size = 8;
    assert_int_equal(pst_chain_append(f->ch, &bad, NULL, 0, 0, &err),
                     -EINVAL);
    assert_non_null(strstr(pst_err_first(&err), "struct sizes"));
    pst_err_free(&err);
    assert_int_equal(pst_chain_len(f->ch), 0);
}

static void
test_edits(void **state)
{
    struct fx *f = *state;
    add(f, 0, 0, PST_FAIL_TEMPFAIL);
    add(f, 1, 0, PST_FAIL_TEMPFAIL);
    f->c[0].add = "X-First";
    f->c[1].remove = "From";
    struct pst_fsess *fs = sess(f, 40);
    struct pst_fres r = run_message(f, fs);
    assert_int_equal(r.verdict, PST_CONTINUE);
    assert_int_equal(f->c[0].seen_hdrs, 3);
    assert_int_equal(f->c[1].seen_hdrs, 4); /* sees the first one's edit */

    struct pst_tbuf blob = {0}, out = {0};
    assert_int_equal(pst_fsess_edits(fs, &blob), 1);
    assert_int_equal(pst_edits_apply_mem(blob.p, blob.len, msg,
                                         sizeof(msg) - 1, &out), 0);
    static const char want[] = "Received: from x\r\n"
                               "Subject: hello\r\n"
                               " folded\r\n"
                               "X-First: added value\r\n"
                               "\r\n"
                               "body line 1\r\n"
                               "body line 2\r\n";
    pst_tbuf_add(&out, "", 1);
    assert_string_equal((char *)out.p, want);
    pst_tbuf_free(&blob);
    pst_tbuf_free(&out);
    pst_fsess_msg_end(fs);

    /* no edits: no blob */
    f->c[0].add = f->c[1].remove = NULL;
    run_message(f, fs);
    assert_int_equal(pst_fsess_edits(fs, &blob), 0);
    assert_int_equal(blob.len, 0);
    pst_fsess_free(fs);
}

static void
test_mime_tree(void **state)
{
    struct fx *f = *state;
    static const char mm[] = "Content-Type: multipart/mixed; boundary=b\r\n"
                             "\r\n"
                             "--b\r\n"
                             "Content-Type: text/plain\r\n\r\nhi\r\n"
                             "--b\r\n"
                             "Content-Type: application/pdf\r\n\r\nx\r\n"
                             "--b--\r\n";
    add(f, 0, 0, PST_FAIL_TEMPFAIL);
    struct pst_fsess *fs = sess(f, 50);
    pst_fsess_msg_begin(fs, false);
    for (size_t i = 0; i < sizeof(mm) - 1; i += 5)
        pst_fsess_msg_data(fs, mm + i, PST_MIN((size_t)5, sizeof(mm) - 1 - i));
    struct pst_fres r = run(f, fs, PST_FP_EOM);
    assert_int_equal(r.verdict, PST_CONTINUE);
    assert_int_equal(mime_parts, 2);
    assert_string_equal(mime_type, "multipart/mixed");
    pst_fsess_msg_end(fs);

    /* remove the PDF: the delimiters stay, the rest is byte-identical */
    remove_pdf = true;
    pst_fsess_msg_begin(fs, false);
    pst_fsess_msg_data(fs, mm, sizeof(mm) - 1);
    r = run(f, fs, PST_FP_EOM);
    remove_pdf = false;
    assert_int_equal(r.verdict, PST_CONTINUE);
    struct pst_tbuf blob = {0}, out = {0};
    assert_int_equal(pst_fsess_edits(fs, &blob), 1);
    assert_int_equal(pst_edits_apply_mem(blob.p, blob.len, mm, sizeof(mm) - 1,
                                         &out), 0);
    pst_tbuf_add(&out, "", 1);
    assert_string_equal((char *)out.p,
                        "Content-Type: multipart/mixed; boundary=b\r\n"
                        "\r\n"
                        "--b\r\n"
                        "Content-Type: text/plain\r\n\r\nhi\r\n"
                        "--b\r\n"
                        "Content-Type: text/plain; charset=us-ascii\r\n"
                        "Content-Disposition: inline\r\n\r\n"
                        "[pdf removed --b]\r\n"
                        "--b--\r\n");
    pst_tbuf_free(&blob);
    pst_tbuf_free(&out);
    pst_fsess_free(fs);
}

/* A module that reads a part's decoded body on the worker pool through
 * the content API (filter.h CONTENT). */
struct cjob {
    struct pst_fref ref;
    struct pst_textsrc *t;
    struct pst_fbody b;
    unsigned sleep_ms;
    char got[64];
    ssize_t n;
};

static char content_got[64];
static int content_dones, content_null_text;
static unsigned content_sleep_ms;

static void
c_work(void *p)
{
    struct cjob *j = p;
    usleep(j->sleep_ms * 1000);
    struct pst_mime_reader *r = pst_fbody_open(j->t, &j->b);
    j->n = pst_mime_reader_read(r, j->got, sizeof(j->got) - 1);
    pst_mime_reader_close(r);
    pst_textsrc_unref(j->t);
}

static void
c_done(void *p)
{
    struct cjob *j = p;
    struct pst_fctx *fc = pst_fctx_lookup(j->ref);
    content_dones++;
    snprintf(content_got, sizeof(content_got), "%.*s",
             j->n > 0 ? (int)j->n : 0, j->got);
    if (fc)
        pst_fctx_resume(fc, PST_CONTINUE);
    free(j);
}

static enum pst_verdict
c_message(struct pst_fctx *fc, const struct pst_mime_part *root)
{
    struct pst_textsrc *t = pst_fctx_text(fc);
    if (t == NULL) {
        content_null_text++;
        return PST_CONTINUE;
    }
    struct cjob *j = calloc(1, sizeof(*j));
    j->ref = pst_fctx_ref(fc);
    j->t = t;
    j->b = pst_fbody_of(root->child->next);
    j->sleep_ms = content_sleep_ms;
    if (pst_fctx_offload(fc, j, c_work, c_done) < 0) {
        pst_textsrc_unref(t);
        free(j);
        return PST_TEMPFAIL;
    }
    return PST_PENDING;
}

static const struct pst_filter cmod = {
    .name = "c",
    PST_FILTER_ABI,
    .on_message = c_message,
};

static struct pst_textsrc *
mem_text(void *arg)
{
    return pst_textsrc_mem(arg, strlen(arg));
}

static void
test_content(void **state)
{
    struct fx *f = *state;
    static const char mm[] = "Content-Type: multipart/mixed; boundary=b\r\n"
                             "\r\n"
                             "--b\r\n"
                             "Content-Type: text/plain\r\n\r\nhi\r\n"
                             "--b\r\n"
                             "Content-Transfer-Encoding: base64\r\n\r\n"
                             "ZGVjb2RlZCBi\r\nb2R5\r\n"
                             "--b--\r\n";
    struct pst_err err = {0};
    assert_int_equal(pst_chain_append(f->ch, &cmod, NULL, 0,
                                      PST_FAIL_TEMPFAIL, &err), 0);
    struct pst_fsess *fs = sess(f, 60);
    /* no stored text: the module is told so */
    pst_fsess_msg_begin(fs, false);
    pst_fsess_msg_data(fs, mm, sizeof(mm) - 1);
    struct pst_fres r = run(f, fs, PST_FP_EOM);
    assert_int_equal(r.verdict, PST_CONTINUE);
    assert_int_equal(content_null_text, 1);
    pst_fsess_msg_end(fs);

    /* the decoded body, read on a worker */
    pst_fsess_msg_begin(fs, false);
    pst_fsess_msg_stored(fs, "0123456789ABCDEF", mem_text, (void *)mm);
    pst_fsess_msg_data(fs, mm, sizeof(mm) - 1);
    r = run(f, fs, PST_FP_EOM);
    assert_int_equal(r.verdict, PST_CONTINUE);
    assert_int_equal(content_dones, 1);
    assert_string_equal(content_got, "decoded body");
    pst_fsess_msg_end(fs);

    /* the session goes while the job runs: the job still reads its own
     * reference on the text, and its answer is dropped */
    content_sleep_ms = 100;
    content_got[0] = '\0';
    pst_fsess_msg_begin(fs, false);
    pst_fsess_msg_stored(fs, "0123456789ABCDEF", mem_text, (void *)mm);
    pst_fsess_msg_data(fs, mm, sizeof(mm) - 1);
    assert_int_equal(pst_fsess_run(fs, PST_FP_EOM, NULL, &r), 1);
    pst_fsess_free(fs);
    while (content_dones < 2)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_string_equal(content_got, "decoded body");
    content_sleep_ms = 0;
}

/* on_body: each leaf's decoded octets while the text streams, in order,
 * to the module's hook with its per-message state. */
static char body_seen[256];
static size_t body_len;
static unsigned body_parts;

static void
b_body(struct pst_fctx *fc, const struct pst_mime_part *part,
       const void *data, size_t len)
{
    unsigned *last = pst_fctx_state(fc);
    assert_non_null(last);
    if (*last != part->id + 1) {
        *last = part->id + 1;
        body_parts++;
    }
    assert_true(body_len + len < sizeof(body_seen));
    memcpy(body_seen + body_len, data, len);
    body_len += len;
}

static const struct pst_filter bmod = {
    .name = "b",
    PST_FILTER_ABI,
    .msg_state_size = sizeof(unsigned),
    .on_body = b_body,
};

static void
test_on_body(void **state)
{
    struct fx *f = *state;
    static const char mm[] = "Content-Type: multipart/mixed; boundary=b\r\n"
                             "\r\n"
                             "--b\r\n"
                             "Content-Type: text/plain\r\n\r\nhi\r\n"
                             "--b\r\n"
                             "Content-Transfer-Encoding: base64\r\n\r\n"
                             "ZGVjb2RlZCBi\r\nb2R5\r\n"
                             "--b--\r\n";
    struct pst_err err = {0};
    assert_int_equal(pst_chain_append(f->ch, &bmod, NULL, 0,
                                      PST_FAIL_TEMPFAIL, &err), 0);
    struct pst_fsess *fs = sess(f, 70);
    pst_fsess_msg_begin(fs, false);
    for (size_t i = 0; i < sizeof(mm) - 1; i += 3)
        pst_fsess_msg_data(fs, mm + i, PST_MIN((size_t)3, sizeof(mm) - 1 - i));
    struct pst_fres r = run(f, fs, PST_FP_EOM);
    assert_int_equal(r.verdict, PST_CONTINUE);
    assert_int_equal(body_parts, 2);
    body_seen[body_len] = '\0';
    assert_string_equal(body_seen, "hidecoded body");
    pst_fsess_free(fs);
}

/* The headers phase run while the body streams; its refusal waits for
 * the end, and it does not run twice. */
static void
test_headers_early(void **state)
{
    struct fx *f = *state;
    add(f, 0, 0, PST_FAIL_TEMPFAIL);
    struct pst_fsess *fs = sess(f, 60);
    struct pst_fres r;
    pst_fsess_msg_begin(fs, false);
    pst_fsess_msg_data(fs, "Subject: x\r\n", 12);
    assert_false(pst_fsess_headers_ready(fs));  /* not complete yet */
    pst_fsess_msg_data(fs, "\r\nbody", 6);
    assert_true(pst_fsess_headers_ready(fs));
    f->c[0].v[PST_FP_HEADERS] = PST_REJECT;
    assert_int_equal(pst_fsess_run(fs, PST_FP_HEADERS, NULL, &r), 0);
    assert_int_equal(r.verdict, PST_REJECT);
    assert_false(pst_fsess_headers_ready(fs));
    assert_int_equal(pst_fsess_run(fs, PST_FP_HEADERS, NULL, &r), -EINVAL);
    pst_fsess_msg_data(fs, " more\r\n", 7);
    int calls = f->c[0].calls;
    r = run(f, fs, PST_FP_EOM);
    assert_int_equal(r.verdict, PST_REJECT);
    assert_int_equal(f->c[0].calls, calls);    /* nothing ran again */
    pst_fsess_msg_end(fs);

    /* continue at the header: message and eom run at the end */
    f->c[0].v[PST_FP_HEADERS] = PST_CONTINUE;
    f->c[0].v[PST_FP_EOM] = PST_QUARANTINE;
    pst_fsess_msg_begin(fs, false);
    pst_fsess_msg_data(fs, "Subject: x\r\n\r\nbody\r\n", 20);
    assert_int_equal(pst_fsess_run(fs, PST_FP_HEADERS, NULL, &r), 0);
    calls = f->c[0].calls;
    r = run(f, fs, PST_FP_EOM);
    assert_int_equal(r.verdict, PST_QUARANTINE);
    assert_int_equal(f->c[0].calls, calls + 1);  /* on_eom only */
    pst_fsess_free(fs);
}

/*
 * The header view filters see and edit is the model's header (core/mime.c
 * parses it once): the same fields, from the same octets, in every case
 * where a second reading could disagree. A module records the view at
 * on_headers, adds a field at the end of the header (and may remove one),
 * and, when it also has on_message, checks each field of the view against
 * the model's root fields.
 */
struct vcase {
    const char *name;
    const char *text;
    const char *fields;             /* the view's names, "," between */
    const char *remove;             /* a field the module removes */
    const char *out;                /* the text with the edits applied */
};

static const struct vcase *vc;
static char v_names[256];
static struct {
    char raw[128];
    size_t n;
} v_raw[16];
static size_t v_n;
static int v_checked;
static char v_why[128];                /* the view is not the model */

static enum pst_verdict
v_headers(struct pst_fctx *fc)
{
    v_names[0] = '\0';
    v_n = pst_hdr_count(fc);
    assert_true(v_n < PST_ARRAY_LEN(v_raw));
    for (size_t i = 0; i < v_n; i++) {
        const struct pst_hdr *h = pst_hdr_at(fc, i);
        assert_int_equal(h->orig, (int)i);
        assert_int_equal(h->name_len, strlen(h->name));
        snprintf(v_names + strlen(v_names), sizeof(v_names) - strlen(v_names),
                 "%s%s", i ? "," : "", h->name);
        assert_true(h->raw_len < sizeof(v_raw[i].raw));
        memcpy(v_raw[i].raw, h->raw, h->raw_len);
        v_raw[i].n = h->raw_len;
    }
    if (vc->remove) {
        long i = pst_hdr_find(fc, vc->remove, 0);
        assert_true(i >= 0);
        assert_int_equal(pst_hdr_remove(fc, (size_t)i), 0);
    }
    assert_int_equal(pst_hdr_add(fc, "X-Added", "v", false), 0);
    return PST_CONTINUE;
}

/* Each field of the view is the model's field: same name, and its raw
 * octets (ending with the field's line end) are the model's, where the
 * model says they are in the text. */
static enum pst_verdict
v_message(struct pst_fctx *fc, const struct pst_mime_part *root)
{
    const char *t = vc->text;
    v_checked++;
    if (root->nfields != v_n) {
        snprintf(v_why, sizeof(v_why), "the model has %u fields, the view %zu",
                 root->nfields, v_n);
        return PST_CONTINUE;
    }
    for (unsigned i = 0; i < root->nfields; i++) {
        const struct pst_hdr_field *f = &root->fields[i];
        size_t end = (size_t)f->offset + f->raw_len;
        size_t eol = t[end] == '\n' ? 1 : t[end] == '\r' && t[end + 1] == '\n'
                                              ? 2 : 0;
        if (v_raw[i].n != f->raw_len + eol ||
            memcmp(v_raw[i].raw, t + f->offset, v_raw[i].n) != 0 ||
            memcmp(v_raw[i].raw, f->raw, f->raw_len) != 0)
            snprintf(v_why, sizeof(v_why), "field %u: the view's octets are "
                     "not the model's", i);
    }
    return PST_CONTINUE;
}

static const struct pst_filter vmod = {
    .name = "v",
    PST_FILTER_ABI,
    .on_headers = v_headers,
    .on_message = v_message,
};

/* the same module without on_message: no model is asked for */
static const struct pst_filter vmod_hdr = {
    .name = "vh",
    PST_FILTER_ABI,
    .on_headers = v_headers,
};

static const struct vcase vcases[] = {
    {"plain", "Subject: s\r\nTo: t\r\n\r\nbody\r\n", "Subject,To", NULL,
     "Subject: s\r\nTo: t\r\nX-Added: v\r\n\r\nbody\r\n"},
    {"a folded line that looks like a field name",
     "Subject: s\r\nX-Fo\r\n o: bar\r\nTo: t\r\n\r\nbody\r\n", "Subject",
     NULL,
     "Subject: s\r\nX-Added: v\r\nX-Fo\r\n o: bar\r\nTo: t\r\n\r\nbody\r\n"},
    {"a line with no colon ends the header",
     "Subject: s\r\nno field here\r\nTo: t\r\n\r\nbody\r\n", "Subject",
     NULL,
     "Subject: s\r\nX-Added: v\r\nno field here\r\nTo: t\r\n\r\nbody\r\n"},
    {"no blank line: the text ends in the header",
     "Subject: s\r\nTo: t\r\n", "Subject,To", NULL,
     "Subject: s\r\nTo: t\r\nX-Added: v\r\n"},
    {"obs-fold: a continuation of blanks only",
     "Subject: a\r\n \r\n b\r\nTo: t\r\n\r\nx\r\n", "Subject,To", NULL,
     "Subject: a\r\n \r\n b\r\nTo: t\r\nX-Added: v\r\n\r\nx\r\n"},
    {"blanks before the colon (obs-syntax)",
     "Subject \t: s\r\n\r\nx\r\n", "Subject", "Subject",
     "X-Added: v\r\n\r\nx\r\n"},
    {"a name with a blank inside is no field",
     "To: t\r\nBad Name: v\r\n\r\nx\r\n", "To", NULL,
     "To: t\r\nX-Added: v\r\nBad Name: v\r\n\r\nx\r\n"},
    {"a name with 8-bit octets is no field",
     "S\xc3\xbc" "bject: s\r\nTo: t\r\n\r\nx\r\n", "", NULL,
     "X-Added: v\r\nS\xc3\xbc" "bject: s\r\nTo: t\r\n\r\nx\r\n"},
    {"a bare CR is data", "Subject: a\rTo: t\r\n\r\nx\r\n", "Subject", NULL,
     "Subject: a\rTo: t\r\nX-Added: v\r\n\r\nx\r\n"},
    {"a bare LF ends a line",
     "Subject: a\nTo: t\r\n\r\nx\r\n", "Subject,To", "Subject",
     "To: t\r\nX-Added: v\r\n\r\nx\r\n"},
    {"an mbox From line is no field, and stays",
     "From a@b.example Mon Jan  1 00:00:00 2024\r\nSubject: s\r\nTo: t\r\n"
     "\r\nx\r\n", "Subject,To", "Subject",
     "From a@b.example Mon Jan  1 00:00:00 2024\r\nTo: t\r\nX-Added: v\r\n"
     "\r\nx\r\n"},
    {"a line that starts with a colon is no field, and stays",
     "A: 1\r\n:x\r\nB: 2\r\n\r\nx\r\n", "A,B", "A",
     ":x\r\nB: 2\r\nX-Added: v\r\n\r\nx\r\n"},
    {"a continuation before any field, and stays",
     " orphan\r\nSubject: s\r\n\r\nx\r\n", "Subject", NULL,
     " orphan\r\nSubject: s\r\nX-Added: v\r\n\r\nx\r\n"},
    {"an empty header", "\r\nbody\r\n", "", NULL,
     "X-Added: v\r\n\r\nbody\r\n"},
};

static void
test_view_is_the_model(void **state)
{
    struct fx *f = *state;
    struct pst_err err = {0};
    struct pst_chain *hdr_only = pst_chain_new();
    int bad = 0;
    assert_int_equal(pst_chain_append(f->ch, &vmod, NULL, 0,
                                      PST_FAIL_TEMPFAIL, &err), 0);
    assert_int_equal(pst_chain_append(hdr_only, &vmod_hdr, NULL, 0,
                                      PST_FAIL_TEMPFAIL, &err), 0);
    for (size_t k = 0; k < PST_ARRAY_LEN(vcases); k++) {
        vc = &vcases[k];
        size_t n = strlen(vc->text);
        for (int mode = 0; mode < 2; mode++) {
            /* 0: with the model, fed octet by octet; 1: header only,
             * fed whole, the headers phase run as soon as it is ready */
            struct pst_fsess *fs =
                mode == 0 ? sess(f, 90)
                          : pst_fsess_new(f->rt, hdr_only, 91, &f->env,
                                          on_result, f);
            struct pst_fres r;
            v_names[0] = '\0';
            v_checked = 0;
            v_why[0] = '\0';
            pst_fsess_msg_begin(fs, false);
            if (mode == 0) {
                for (size_t i = 0; i < n; i++)
                    pst_fsess_msg_data(fs, vc->text + i, 1);
            } else {
                pst_fsess_msg_data(fs, vc->text, n);
                if (pst_fsess_headers_ready(fs))
                    assert_int_equal(
                        pst_fsess_run(fs, PST_FP_HEADERS, NULL, &r), 0);
            }
            r = run(f, fs, PST_FP_EOM);
            assert_int_equal(r.verdict, PST_CONTINUE);
            assert_int_equal(v_checked, mode == 0);
            struct pst_tbuf blob = {0}, out = {0};
            assert_int_equal(pst_fsess_edits(fs, &blob), 1);
            assert_int_equal(pst_edits_apply_mem(blob.p, blob.len, vc->text,
                                                 n, &out), 0);
            pst_tbuf_add(&out, "", 1);
            /* every disagreement is printed, then the test fails */
            if (strcmp(v_names, vc->fields) != 0 || v_why[0] ||
                strcmp((char *)out.p, vc->out) != 0) {
                print_error("%s (mode %d): fields \"%s\" (want \"%s\") %s\n"
                            "out:\n%s\nwant:\n%s\n", vc->name, mode, v_names,
                            vc->fields, v_why, (char *)out.p, vc->out);
                bad++;
            }
            pst_tbuf_free(&blob);
            pst_tbuf_free(&out);
            pst_fsess_free(fs);
        }
    }
    assert_int_equal(bad, 0);
    pst_chain_free(hdr_only);
}

/* The applier on its own: header ops and body ranges, streamed. */
static void
test_edits_apply(void **state)
{
    struct pst_tbuf b = {0}, out = {0};
    const char m[] = "A: 1\r\nB: 2\r\n\r\nhello world\r\nbye\r\n";
    pst_edits_begin(&b);
    pst_edits_put_hdr(&b, 12);
    pst_edits_put_text(&b, "N: 0\r\n", 6);
    pst_edits_put_keep(&b, 6, 6);
    pst_edits_put_body(&b, 14, 5, "HELLO!", 6);
    assert_int_equal(pst_edits_apply_mem(b.p, b.len, m, sizeof(m) - 1, &out),
                     0);
    pst_tbuf_add(&out, "", 1);
    assert_string_equal((char *)out.p,
                        "N: 0\r\nB: 2\r\n\r\nHELLO! world\r\nbye\r\n");
    pst_tbuf_free(&out);
    /* a range beyond the message: refused at read */
    pst_edits_put_body(&b, 100, 5, "x", 1);
    assert_true(pst_edits_apply_mem(b.p, b.len, m, sizeof(m) - 1, &out) < 0);
    pst_tbuf_free(&out);
    /* a corrupted blob: refused at open */
    b.p[0] = 'X';
    assert_int_equal(pst_edits_apply_mem(b.p, b.len, m, sizeof(m) - 1, &out),
                     -EBADMSG);
    pst_tbuf_free(&out);
    pst_tbuf_free(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_verdicts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_accept_skips, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strictest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_others_flow, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_deadline_modes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_session_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abi, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_content, setup, teardown),
        cmocka_unit_test_setup_teardown(test_on_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mime_tree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_headers_early, setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_is_the_model, setup,
                                        teardown),
        cmocka_unit_test(test_edits_apply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
