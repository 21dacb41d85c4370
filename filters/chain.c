/*
 * chain.c - the chain runner: runs one phase of a session through the
 * configured modules, applies the verdict rules, deadlines and failure
 * modes, and resumes a pending phase when its answer arrives.
 *
 * Verdict rules (filter.h): REJECT and TEMPFAIL end the phase; DISCARD
 * and QUARANTINE are remembered as the message's disposition and the
 * chain goes on; ACCEPT skips the rest of the phase (before MAIL) or of
 * the message. The message phases run in one go at the end of the text
 * (headers, message, eom), and the message's result is the strictest:
 * reject > tempfail > discard > quarantine > accept.
 *
 * Bias to tempfail: a module that returns a verdict out of range, an
 * invalid reply, DISCARD/QUARANTINE before MAIL, reports failure, or does
 * not answer before its deadline gets its failure mode (451 4.3.0 by
 * default), logged with event=filter_fail and counted.
 *
 * Ownership: a pst_fsess belongs to its session and is freed by it; its
 * deadline timer is a separate allocation freed by the timer's close
 * callback, so pst_fsess_free never waits for the loop.
 */
#include "filters/chain_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/metrics.h"

static const char *const phase_names[PST_FP_COUNT] = {
    "connect", "helo", "mail", "rcpt", "headers", "message", "eom",
};

static const char *const fm_names[] = {"tempfail", "accept", "reject"};

/* ---- building ---- */

struct pst_chain *
pst_chain_new(void)
{
    return pst_xcalloc(1, sizeof(struct pst_chain));
}

/* pst_filter_abi_check - see chain.h. */
const char *
pst_filter_abi_check(const struct pst_filter *f)
{
    if (f->api != PST_FILTER_API)
        return "API version differs from the host's";
    if (f->desc_size != sizeof(struct pst_filter) ||
        f->hdr_size != sizeof(struct pst_hdr) ||
        f->env_size != sizeof(struct pst_envelope))
        return "built against different struct sizes than the host";
    if (f->name == NULL || f->name[0] == '\0')
        return "no name";
    return NULL;
}

int
pst_chain_append(struct pst_chain *ch, const struct pst_filter *f, void *conf,
                 unsigned deadline_ms, enum pst_failmode fm,
                 struct pst_err *err)
{
    const char *why = pst_filter_abi_check(f);
    if (why != NULL) {
        pst_err_add(err, "filters", 0, "module %s refused: %s",
                    f->name ? f->name : "?", why);
        return -EINVAL;
    }
    if (ch->n >= PST_FCHAIN_MAX) {
        pst_err_add(err, "filters", 0, "more than %d filters",
                    PST_FCHAIN_MAX);
        return -E2BIG;
    }
    struct pst__fentry *e = &ch->e[ch->n++];
    memset(e, 0, sizeof(*e));
    e->f = f;
    e->conf = conf;
    e->deadline_ms = deadline_ms ? deadline_ms : PST_FDEADLINE_DEFAULT;
    e->fm = fm;
    static const char *const verdicts[] = {
        [PST_CONTINUE] = "continue", [PST_ACCEPT] = "accept",
        [PST_TEMPFAIL] = "tempfail", [PST_REJECT] = "reject",
        [PST_DISCARD] = "discard",   [PST_QUARANTINE] = "quarantine"};
    static const char *const causes[] = {"timeout", "invalid", "error"};
    for (size_t i = 0; i < PST_ARRAY_LEN(e->m_verdict); i++)
        e->m_verdict[i] = pst_metric_counter(
            "postern_filter_verdicts_total",
            "Verdicts of filter hooks (failures as the failure mode turned "
            "them), by module and verdict.",
            "filter", f->name, "verdict", verdicts[i], NULL);
    for (size_t i = 0; i < PST_ARRAY_LEN(e->m_fail); i++)
        e->m_fail[i] = pst_metric_counter(
            "postern_filter_failures_total",
            "Filter hooks that failed (the module's failure mode applied), by "
            "module and cause.",
            "filter", f->name, "cause", causes[i], NULL);
    return 0;
}

size_t
pst_chain_len(const struct pst_chain *ch)
{
    return ch ? ch->n : 0;
}

void
pst_chain_stats(const struct pst_chain *ch, size_t i, struct pst_fstats *st)
{
    *st = ch->e[i].st;
}

/* ---- the context API ---- */

void *
pst_fctx_conf(struct pst_fctx *fc)
{
    return fc->e->conf;
}

void *
pst_fctx_state(struct pst_fctx *fc)
{
    return fc->state;
}

const char *
pst_fctx_name(const struct pst_fctx *fc)
{
    return fc->e->f->name;
}

uint64_t
pst_fctx_session(const struct pst_fctx *fc)
{
    return fc->fs->id;
}

const struct pst_envelope *
pst_fctx_env(const struct pst_fctx *fc)
{
    return fc->fs->env;
}

enum pst_fphase
pst_fctx_phase(const struct pst_fctx *fc)
{
    return fc->fs->phase;
}

const char *
pst_fctx_qid(const struct pst_fctx *fc)
{
    return fc->fs->in_msg ? fc->fs->qid : "";
}

/* pst_fctx_text - see filter.h. */
struct pst_textsrc *
pst_fctx_text(struct pst_fctx *fc)
{
    struct pst_fsess *fs = fc->fs;
    if (!fs->in_msg || (fs->phase != PST_FP_MESSAGE && fs->phase != PST_FP_EOM))
        return NULL;
    if (!fs->text_tried && fs->text_open) {
        fs->text_tried = true;
        fs->text = fs->text_open(fs->text_arg);
    }
    return pst_textsrc_ref(fs->text);
}

void
pst_fsess_msg_stored(struct pst_fsess *fs, const char *qid,
                     pst_ftext_open_fn open, void *arg)
{
    snprintf(fs->qid, sizeof(fs->qid), "%s", qid ? qid : "");
    fs->text_open = open;
    fs->text_arg = arg;
}

bool
pst_message_smtputf8(struct pst_fctx *fc)
{
    return fc->fs->smtputf8;
}

static bool
enh_valid(const char *e, int cls)
{
    /* class.subject.detail: class 2/4/5, subject 0-999, detail 0-999 */
    if (e == NULL || e[0] != '0' + cls || e[1] != '.')
        return false;
    const char *p = e + 2;
    for (int part = 0; part < 2; part++) {
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            p++;
            digits++;
        }
        if (digits == 0 || digits > 3)
            return false;
        if (part == 0 && *p++ != '.')
            return false;
    }
    return *p == '\0';
}

/* pst_fctx_reply - see filter.h. */
int
pst_fctx_reply(struct pst_fctx *fc, int code, const char *enh,
               const char *text)
{
    size_t tl = text ? strlen(text) : 0;
    bool ok = code >= 400 && code <= 599 && enh_valid(enh, code / 100) &&
              tl <= PST_FREPLY_TEXT_MAX;
    for (size_t i = 0; ok && i < tl; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f)
            ok = false;
    }
    if (!ok) {
        fc->bad_reply = true;
        return -EINVAL;
    }
    fc->has_reply = true;
    fc->code = code;
    snprintf(fc->enh, sizeof(fc->enh), "%s", enh);
    snprintf(fc->text, sizeof(fc->text), "%s", text ? text : "");
    return 0;
}

void
pst_fctx_fail(struct pst_fctx *fc, const char *why)
{
    fc->failed = true;
    snprintf(fc->fail_why, sizeof(fc->fail_why), "%s", why ? why : "error");
}

void
pst_fctx_log(struct pst_fctx *fc, enum pst_log_level lvl, const char *fmt,
             ...)
{
    char line[1024];
    va_list ap;
    if (lvl == PST_LOG_INFO && fc->fs->level_fn != NULL &&
        fc->fs->phase >= PST_FP_HELO && fc->fs->phase <= PST_FP_RCPT)
        lvl = fc->fs->level_fn(fc->fs->cbarg);
    if (!pst_log_enabled(lvl))
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    pst_log(lvl, "sess=%016" PRIx64 "%s%s filter=%s phase=%s %s", fc->fs->id,
            fc->fs->in_msg && fc->fs->qid[0] ? " msg=" : "",
            fc->fs->in_msg ? fc->fs->qid : "", fc->e->f->name,
            phase_names[fc->fs->phase], line);
}

struct pst_fref
pst_fctx_ref(const struct pst_fctx *fc)
{
    return (struct pst_fref){fc->fs->id, fc->fs->gen};
}

/* pst_fctx_lookup - the pending context ref names, or NULL. */
struct pst_fctx *
pst_fctx_lookup(struct pst_fref ref)
{
    struct pst_fsess *fs;
    if (pst__frt_current == NULL)
        return NULL;
    fs = pst__frt_find(pst__frt_current, ref.sess);
    if (fs == NULL || !fs->pending || fs->gen != ref.gen)
        return NULL;
    return &fs->fcs[fs->idx];
}

int
pst_fctx_offload(struct pst_fctx *fc, void *job, pst_fwork_fn work,
                 pst_fdone_fn done)
{
    if (!fc->fs->in_hook)
        return -EINVAL;
    return pst__frt_submit(fc->fs->rt, job, work, done);
}

void
pst_fctx_resume(struct pst_fctx *fc, enum pst_verdict v)
{
    struct pst_fsess *fs = fc->fs;
    if (fs->in_hook) {              /* answered before returning PENDING */
        fs->early = true;
        fs->early_v = v;
        return;
    }
    if (!fs->pending || &fs->fcs[fs->idx] != fc)
        return;
    pst__fsess_resume(fs, v);
}

/* ---- running ---- */

static bool
message_phase(enum pst_fphase ph)
{
    return ph >= PST_FP_MAIL;
}

static int
rank(enum pst_verdict v)
{
    switch (v) {
    case PST_REJECT:
        return 4;
    case PST_TEMPFAIL:
        return 3;
    case PST_DISCARD:
        return 2;
    case PST_QUARANTINE:
        return 1;
    default:
        return 0;
    }
}

static void
set_reply(struct pst_fsess *fs, const struct pst_fctx *fc, enum pst_verdict v)
{
    struct pst_fres *r = &fs->res;
    r->verdict = v;
    r->filter = fc->e->f->name;
    if (fc->has_reply) {
        r->code = fc->code;
        snprintf(r->enh, sizeof(r->enh), "%s", fc->enh);
        snprintf(r->text, sizeof(r->text), "%s", fc->text);
    } else if (v == PST_REJECT) {
        r->code = 550;
        snprintf(r->enh, sizeof(r->enh), "5.7.1");
        snprintf(r->text, sizeof(r->text), "Refused by filter %s",
                 fc->e->f->name);
    } else {
        r->code = 451;
        snprintf(r->enh, sizeof(r->enh), "4.3.0");
        snprintf(r->text, sizeof(r->text),
                 "Filter %s: temporary failure, try again later",
                 fc->e->f->name);
    }
}

/*
 * Apply the failure mode of fc's module; returns the verdict to continue
 * with (CONTINUE for "accept", REJECT or TEMPFAIL with the reply set).
 */
static enum pst_verdict
fail_filter(struct pst_fsess *fs, struct pst_fctx *fc, const char *why,
            unsigned cause)
{
    struct pst__fentry *e = (struct pst__fentry *)fc->e;
    e->st.failures++;
    pst_metric_add(e->m_fail[cause], 1);
    pst_warn("sess=%016" PRIx64 " event=filter_fail filter=%s phase=%s "
             "why=\"%s\" mode=%s",
             fs->id, e->f->name, phase_names[fs->phase], why,
             fm_names[e->fm]);
    fc->has_reply = false;
    switch (e->fm) {
    case PST_FAIL_ACCEPT:
        return PST_CONTINUE;
    case PST_FAIL_REJECT:
        set_reply(fs, fc, PST_REJECT);
        return PST_REJECT;
    default:
        set_reply(fs, fc, PST_TEMPFAIL);
        return PST_TEMPFAIL;
    }
}

/*
 * Check a verdict and fold it into the run. Returns true when the phase
 * is over (reject, tempfail, accept).
 */
static bool
take_verdict(struct pst_fsess *fs, struct pst_fctx *fc, enum pst_verdict v)
{
    struct pst__fentry *e = (struct pst__fentry *)fc->e;
    const char *why = NULL;

    if ((unsigned)v > PST_QUARANTINE)
        why = "invalid verdict";
    else if (fc->bad_reply)
        why = "invalid reply";
    else if (fc->has_reply && v == PST_REJECT && fc->code / 100 != 5)
        why = "invalid reply: reject needs a 5xx code";
    else if (fc->has_reply && v == PST_TEMPFAIL && fc->code / 100 != 4)
        why = "invalid reply: tempfail needs a 4xx code";
    else if ((v == PST_DISCARD || v == PST_QUARANTINE) && !fs->in_msg)
        why = "invalid verdict: discard or quarantine outside a message";
    else if (fc->failed)
        why = fc->fail_why;
    if (why != NULL) {
        if (why != fc->fail_why)
            e->st.invalid++;
        v = fail_filter(fs, fc, why, why != fc->fail_why ? 1
                                     : fc->timed_out      ? 0
                                                          : 2);
        pst_metric_add(e->m_verdict[v], 1);
        return v != PST_CONTINUE;
    }
    pst_metric_add(e->m_verdict[v], 1);
    switch (v) {
    case PST_CONTINUE:
        return false;
    case PST_ACCEPT:
        if (fs->in_msg)
            fs->accepted = true;
        pst_debug("sess=%016" PRIx64 " event=filter_accept filter=%s "
                  "phase=%s", fs->id, e->f->name, phase_names[fs->phase]);
        return true;
    case PST_REJECT:
    case PST_TEMPFAIL:
        set_reply(fs, fc, v);
        return true;
    case PST_DISCARD:
    case PST_QUARANTINE:
        if (rank(v) > rank(fs->disp)) {
            fs->disp = v;
            fs->disp_filter = e->f->name;
            pst_info("sess=%016" PRIx64 " event=filter_verdict filter=%s "
                     "phase=%s verdict=%s", fs->id, e->f->name,
                     phase_names[fs->phase],
                     v == PST_DISCARD ? "discard" : "quarantine");
        }
        return false;
    default:
        return false;
    }
}

static enum pst_verdict
call_hook(struct pst_fsess *fs, struct pst_fctx *fc, bool *skip)
{
    const struct pst_filter *f = fc->e->f;
    *skip = false;
    switch (fs->phase) {
    case PST_FP_CONNECT:
        if (f->on_connect)
            return f->on_connect(fc);
        break;
    case PST_FP_HELO:
        if (f->on_helo)
            return f->on_helo(fc, fs->arg ? fs->arg : "");
        break;
    case PST_FP_MAIL:
        if (f->on_mail)
            return f->on_mail(fc, fs->arg ? fs->arg : "");
        break;
    case PST_FP_RCPT:
        if (f->on_rcpt)
            return f->on_rcpt(fc, fs->arg ? fs->arg : "");
        break;
    case PST_FP_HEADERS:
        if (f->on_headers)
            return f->on_headers(fc);
        break;
    case PST_FP_MESSAGE:
        if (f->on_message)
            return f->on_message(fc, fs->mime ? fs->mime->root : NULL);
        break;
    case PST_FP_EOM:
        if (f->on_eom)
            return f->on_eom(fc);
        break;
    default:
        break;
    }
    *skip = true;
    return PST_CONTINUE;
}

static void
on_deadline(uv_timer_t *t);

/* hdr_complete - the model's root header is complete: its blank line
 * (or a line that is no field) came, or the parse is finished. */
static bool
hdr_complete(const struct pst_fsess *fs)
{
    return fs->mime != NULL ||
           (fs->mp != NULL && pst_mime_headers_done(fs->mp));
}

/* finish_parse - all the text is in: the parse ends. */
static void
finish_parse(struct pst_fsess *fs)
{
    if (fs->mp != NULL) {
        fs->mime = pst_mime_finish(fs->mp);
        fs->mp = NULL;
    }
}

/* What a phase needs before its first hook: the header view (at the end
 * of the text, a header the text ended in is complete once the parse
 * ends), the model. */
static void
enter_phase(struct pst_fsess *fs)
{
    if (fs->phase == PST_FP_HEADERS && !fs->view_built) {
        if (!hdr_complete(fs))
            finish_parse(fs);       /* PST_FP_EOM: the text is all in */
        pst__view_build(fs, fs->mime ? fs->mime->root
                                     : pst_mime_root(fs->mp));
    }
    if (fs->phase == PST_FP_MESSAGE)
        finish_parse(fs);
}

/*
 * Run from (phase, idx) until the run ends (returns 0) or a filter is
 * pending (returns 1).
 */
static int
step(struct pst_fsess *fs)
{
    for (;;) {
        if (fs->idx >= fs->ch->n || (fs->in_msg && fs->accepted)) {
            if (fs->phase < fs->last_phase) {
                fs->phase++;
                fs->idx = 0;
                enter_phase(fs);
                continue;
            }
            break;
        }
        struct pst_fctx *fc = &fs->fcs[fs->idx];
        struct pst__fentry *e = (struct pst__fentry *)fc->e;
        bool skip;
        fc->has_reply = fc->bad_reply = fc->failed = fc->timed_out = false;
        fs->in_hook = true;
        fs->early = false;
        enum pst_verdict v = call_hook(fs, fc, &skip);
        fs->in_hook = false;
        if (skip) {
            fs->idx++;
            continue;
        }
        e->st.calls++;
        if (v == PST_PENDING && fs->early)
            v = fs->early_v;
        if (v == PST_PENDING) {
            e->st.pending++;
            fs->pending = true;
            uv_timer_start(fs->timer, on_deadline, e->deadline_ms, 0);
            return 1;
        }
        bool end = take_verdict(fs, fc, v);
        if (end && fs->res.verdict != PST_CONTINUE)
            return 0;               /* reject or tempfail: all over */
        if (end) {                  /* accept */
            if (!fs->in_msg)
                return 0;           /* the rest of this phase is skipped */
            continue;               /* accepted: the loop top ends it */
        }
        fs->idx++;
    }
    return 0;
}

/* The run is over: fill in the message's disposition. */
static void
finish(struct pst_fsess *fs)
{
    struct pst_fres *r = &fs->res;
    fs->running = false;
    if (fs->last_phase == PST_FP_HEADERS) {
        fs->hdr_ran = true;         /* a refusal waits for the final dot */
        fs->hdr_res = *r;
    }
    r->new_sender = fs->new_sender;
    r->new_rcpt = fs->new_rcpt;
    if (r->verdict == PST_CONTINUE && fs->last_phase == PST_FP_EOM &&
        fs->disp != PST_CONTINUE) {
        r->verdict = fs->disp;
        r->filter = fs->disp_filter;
    }
    if (r->verdict == PST_REJECT || r->verdict == PST_TEMPFAIL)
        pst_info("sess=%016" PRIx64 " event=filter_verdict filter=%s "
                 "phase=%s verdict=%s code=%d", fs->id, r->filter,
                 phase_names[fs->phase],
                 r->verdict == PST_REJECT ? "reject" : "tempfail", r->code);
}

void
pst__fsess_resume(struct pst_fsess *fs, enum pst_verdict v)
{
    struct pst_fctx *fc = &fs->fcs[fs->idx];
    fs->pending = false;
    fs->gen++;                      /* a second answer finds nothing */
    uv_timer_stop(fs->timer);
    if (v == PST_PENDING)
        v = (enum pst_verdict)-1;   /* not an answer: invalid */
    bool end = take_verdict(fs, fc, v);
    if (end && fs->res.verdict != PST_CONTINUE)
        goto done;
    if (end && !fs->in_msg)
        goto done;
    if (!end)
        fs->idx++;
    if (step(fs) == 1)
        return;
done:
    finish(fs);
    fs->cb(fs->cbarg, &fs->res);
}

static void
on_deadline(uv_timer_t *t)
{
    struct pst_fsess *fs = t->data;
    struct pst_fctx *fc;
    if (fs == NULL || !fs->pending)
        return;
    fc = &fs->fcs[fs->idx];
    ((struct pst__fentry *)fc->e)->st.timeouts++;
    fs->pending = false;
    fs->gen++;                      /* the late answer is dropped */
    if (fc->e->f->on_abort)
        fc->e->f->on_abort(fc);
    fs->pending = true;             /* resume path expects it */
    fc->failed = true;
    fc->timed_out = true;
    snprintf(fc->fail_why, sizeof(fc->fail_why), "deadline of %u ms passed",
             fc->e->deadline_ms);
    pst__fsess_resume(fs, PST_CONTINUE);
}

/* ---- sessions ---- */

struct pst_fsess *
pst_fsess_new(struct pst_frt *rt, struct pst_chain *ch, uint64_t sess_id,
              const struct pst_envelope *env, pst_fsess_cb cb, void *arg)
{
    struct pst_fsess *fs = pst_xcalloc(1, sizeof(*fs));
    fs->rt = rt;
    fs->ch = ch;
    fs->id = sess_id;
    fs->env = env;
    fs->cb = cb;
    fs->cbarg = arg;
    fs->fcs = pst_xcalloc(ch->n ? ch->n : 1, sizeof(*fs->fcs));
    for (size_t i = 0; i < ch->n; i++) {
        fs->fcs[i].fs = fs;
        fs->fcs[i].e = &ch->e[i];
        fs->fcs[i].idx = i;
    }
    fs->timer = pst_xmalloc(sizeof(*fs->timer));
    uv_timer_init(pst__frt_loop(rt), fs->timer);
    fs->timer->data = fs;
    pst__frt_attach(rt, fs);
    return fs;
}

void
pst_fsess_set_log_budget(struct pst_fsess *fs, pst_fsess_level_fn fn)
{
    fs->level_fn = fn;
}

static void
on_timer_closed(uv_handle_t *h)
{
    free(h);
}

static void
abort_pending(struct pst_fsess *fs)
{
    if (!fs->pending)
        return;
    struct pst_fctx *fc = &fs->fcs[fs->idx];
    fs->pending = false;
    fs->gen++;
    uv_timer_stop(fs->timer);
    if (fc->e->f->on_abort)
        fc->e->f->on_abort(fc);
    pst_info("sess=%016" PRIx64 " event=filter_abort filter=%s phase=%s",
             fs->id, fc->e->f->name, phase_names[fs->phase]);
}

void
pst_fsess_free(struct pst_fsess *fs)
{
    if (fs == NULL)
        return;
    abort_pending(fs);
    pst_fsess_msg_end(fs);
    pst__frt_detach(fs->rt, fs);
    fs->timer->data = NULL;
    uv_close((uv_handle_t *)fs->timer, on_timer_closed);
    free(fs->fcs);
    free(fs->arg);
    free(fs->new_sender);
    free(fs->new_rcpt);
    free(fs);
}

void
pst_fsess_set_env(struct pst_fsess *fs, const struct pst_envelope *env)
{
    fs->env = env;
}

void
pst_fsess_set_mime_limits(struct pst_fsess *fs,
                          const struct pst_mime_limits *lim)
{
    fs->mime_limits = lim;
}

/* pst_chain_log_stats - one line per module with its counters. */
void
pst_chain_log_stats(const struct pst_chain *ch)
{
    for (size_t i = 0; ch && i < ch->n; i++) {
        const struct pst_fstats *st = &ch->e[i].st;
        pst_info("event=filter_stats filter=%s position=%zu calls=%" PRIu64
                 " pending=%" PRIu64 " failures=%" PRIu64 " timeouts=%" PRIu64
                 " invalid=%" PRIu64, ch->e[i].f->name, i, st->calls,
                 st->pending, st->failures, st->timeouts, st->invalid);
    }
}

bool
pst_fsess_pending(const struct pst_fsess *fs)
{
    return fs->pending;
}

/* Decoded body octets while the text streams: to each module's on_body,
 * until the message is accepted or refused (a refusal at the headers
 * phase leaves nothing to observe). */
static void
on_body(void *arg, struct pst_mime_part *part, const void *data, size_t len)
{
    struct pst_fsess *fs = arg;
    if (fs->accepted || (fs->hdr_ran && (fs->hdr_res.verdict == PST_REJECT ||
                                         fs->hdr_res.verdict == PST_TEMPFAIL)))
        return;
    for (size_t i = 0; i < fs->ch->n; i++)
        if (fs->ch->e[i].f->on_body)
            fs->ch->e[i].f->on_body(&fs->fcs[i], part, data, len);
}

void
pst_fsess_msg_begin(struct pst_fsess *fs, bool smtputf8)
{
    pst_fsess_msg_end(fs);
    fs->in_msg = true;
    fs->smtputf8 = smtputf8;
    fs->accepted = false;
    fs->disp = PST_CONTINUE;
    bool want_mime = fs->host_mime;
    for (size_t i = 0; i < fs->ch->n; i++) {
        size_t sz = fs->ch->e[i].f->msg_state_size;
        fs->fcs[i].state = sz ? pst_xcalloc(1, sz) : NULL;
        want_mime |= fs->ch->e[i].f->on_message != NULL;
    }
    /* the header is parsed for every message (the view is its fields);
     * the rest only when someone looks at the tree or the bodies */
    bool want_body = false;
    for (size_t i = 0; i < fs->ch->n; i++)
        want_body |= fs->ch->e[i].f->on_body != NULL;
    static const struct pst_mime_callbacks body_cb = {NULL, on_body, NULL};
    fs->mime_full = want_mime || want_body;
    fs->mp = pst_mime_parser_new(fs->mime_limits,
                                 want_body ? &body_cb : NULL, fs);
}

void
pst_fsess_want_mime(struct pst_fsess *fs, bool on)
{
    fs->host_mime = on;
}

const struct pst_msg *
pst_fsess_msg_model(struct pst_fsess *fs)
{
    if (!fs->mime_full)
        return NULL;                /* the header only was parsed */
    finish_parse(fs);
    return fs->mime;
}

void
pst_fsess_msg_data(struct pst_fsess *fs, const void *p, size_t n)
{
    if (!fs->in_msg)
        return;
    if (fs->mp != NULL && (fs->mime_full || !pst_mime_headers_done(fs->mp)))
        pst_mime_feed(fs->mp, p, n);
    fs->msg_bytes += n;
}

void
pst_fsess_msg_end(struct pst_fsess *fs)
{
    if (!fs->in_msg)
        return;
    abort_pending(fs);
    for (size_t i = 0; i < fs->ch->n; i++) {
        free(fs->fcs[i].state);
        fs->fcs[i].state = NULL;
    }
    pst__view_free(fs);
    if (fs->mp != NULL)
        pst_mime_parser_free(fs->mp);
    fs->mp = NULL;
    pst_msg_free(fs->mime);
    fs->mime = NULL;
    pst_textsrc_unref(fs->text);
    fs->text = NULL;
    fs->text_tried = false;
    fs->text_open = NULL;
    fs->qid[0] = '\0';
    fs->in_msg = false;
    fs->accepted = false;
    fs->smtputf8 = false;
    fs->disp = PST_CONTINUE;
    fs->msg_bytes = 0;
    fs->hdr_ran = false;
}

/* pst_fsess_headers_ready - see chain.h. */
bool
pst_fsess_headers_ready(const struct pst_fsess *fs)
{
    if (!fs->in_msg || fs->hdr_ran || fs->pending || !hdr_complete(fs) ||
        fs->accepted)
        return false;
    for (size_t i = 0; i < fs->ch->n; i++)
        if (fs->ch->e[i].f->on_headers != NULL)
            return true;
    return false;
}

/* pst_fsess_run - see chain.h. */
int
pst_fsess_run(struct pst_fsess *fs, enum pst_fphase ph, const char *arg,
              struct pst_fres *res)
{
    if (fs->pending || (unsigned)ph >= PST_FP_COUNT)
        return -EBUSY;
    if (ph == PST_FP_MESSAGE)
        ph = PST_FP_EOM;            /* message and eom run together */
    if (ph == PST_FP_HEADERS && (!fs->in_msg || fs->hdr_ran ||
                                 !hdr_complete(fs)))
        return -EINVAL;
    free(fs->arg);
    fs->arg = arg ? pst_xstrdup(arg) : NULL;
    free(fs->new_sender);
    free(fs->new_rcpt);
    fs->new_sender = fs->new_rcpt = NULL;
    memset(&fs->res, 0, sizeof(fs->res));
    fs->res.verdict = PST_CONTINUE;
    fs->running = true;
    fs->phase = ph;
    if (ph == PST_FP_EOM)
        fs->phase = fs->hdr_ran ? PST_FP_MESSAGE : PST_FP_HEADERS;
    fs->last_phase = ph;
    fs->idx = 0;
    if (message_phase(ph) && !fs->in_msg)
        pst_fsess_msg_begin(fs, false);
    if (ph == PST_FP_EOM && fs->hdr_ran &&
        (fs->hdr_res.verdict == PST_REJECT ||
         fs->hdr_res.verdict == PST_TEMPFAIL)) {
        fs->res = fs->hdr_res;      /* refused when the header was seen */
        fs->running = false;
        *res = fs->res;
        return 0;
    }
    enter_phase(fs);
    if (step(fs) == 1)
        return 1;
    finish(fs);
    *res = fs->res;
    return 0;
}
