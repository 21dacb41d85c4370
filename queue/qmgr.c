/*
 * qmgr.c - the queue manager: schedules committed messages, hands them to
 * their transport on the delivery workers, records per-recipient results
 * in the spool file, retries with backoff, expires, and carries out the
 * operator's queue commands.
 *
 * Threads. All lists and entries belong to the loop thread. A delivery or
 * an operator command is a job on the queue's own bounded worker pool
 * (workq.c): the job reads only what was copied into it or the entry's
 * envelope, which the loop leaves alone while the entry is busy. Results
 * come back through the pool's uv_async.
 *
 * Per attempt, the worker: delivers (the transport syncs its copies),
 * then either removes a finished file at once (no recipient pending, no
 * report owed; the sync thread syncs active/ soon, shared with commits) or
 * appends one RCPT record per recipient tried and a RETRY record, fsyncs
 * the spool file, and removes the file once no recipient is pending. A
 * crash between a transport's sync and the spool's (file or directory)
 * sync delivers the same copy again after restart: that is the duplicate
 * window (docs/SPOOL.md).
 *
 * Time. Timers are libuv's (monotonic); stored times are wall clock. At
 * load, the stored next-attempt and arrival are turned into monotonic
 * deltas, capped (a retry at most retry_max away, a lifetime at most
 * `lifetime` away), so a clock step neither stalls retries nor expires the
 * queue; a message expires only after an attempt fails, never unseen.
 *
 * Limits: delivery.concurrency jobs in flight; the delivery pool has at
 * most PST_QMGR_THREADS threads.
 */
#include "queue/spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/strmap.h"
#include "core/util.h"
#include "queue/deliver.h"
#include "queue/dsn.h"
#include "queue/transport.h"
#include "queue/workq.h"

#define PST_QMGR_THREADS 8u

enum qe_where { QE_READY, QE_WAIT, QE_HELD, QE_BUSY };

struct qent {
    TAILQ_ENTRY(qent) link;
    enum qe_where where;
    char qid[PST_QID_LEN + 1];
    struct pst_envelope env;
    char **rcpt_err;            /* per recipient, NULL or last error */
    char *last_error;
    uint64_t data_off, env_off, size, file_size;
    unsigned attempts;
    time_t next_wall;           /* stored next attempt (display) */
    uint64_t due;               /* uv_now() ms when to try */
    uint64_t expire_at;         /* uv_now() ms when lifetime ends */
    enum pst_qstate state;
    bool delivering;            /* busy with a delivery (not an op) */
    bool delay_warned;          /* a delay report went out (this run) */
};

TAILQ_HEAD(qentl, qent);

struct pst_qmgr {
    struct pst_spool *sp;
    uv_loop_t *loop;
    uv_timer_t timer;
    bool timer_open;
    uint64_t timer_due;         /* UINT64_MAX: not armed */
    struct pst_workq *wq;
    struct qentl ready, wait, held, busy;
    unsigned count;             /* entries on all lists */
    unsigned inflight;          /* deliveries */
    const struct pst_transport *tp;
    void *route;
    uint64_t rng;
    bool started;
    bool paused;
    unsigned nlist[4];          /* entries per qe_where */
    struct pst_strmap *m_deliveries;    /* "outcome NUL route" -> series */
    struct pst_metric *m_attempt;       /* attempt duration histogram */
};

/* ---- helpers ---- */

static struct qentl *
list_of(struct pst_qmgr *qm, enum qe_where w)
{
    switch (w) {
    case QE_READY:
        return &qm->ready;
    case QE_WAIT:
        return &qm->wait;
    case QE_HELD:
        return &qm->held;
    default:
        return &qm->busy;
    }
}

static void arm_at(struct pst_qmgr *qm, uint64_t due);

static void
qe_move(struct pst_qmgr *qm, struct qent *e, enum qe_where to)
{
    TAILQ_REMOVE(list_of(qm, e->where), e, link);
    qm->nlist[e->where]--;
    e->where = to;
    qm->nlist[to]++;
    TAILQ_INSERT_TAIL(list_of(qm, to), e, link);
    if (to == QE_WAIT)
        arm_at(qm, e->due);
}

static void
qe_free(struct qent *e)
{
    if (e->rcpt_err) {
        for (size_t i = 0; i < e->env.nrcpts; i++)
            free(e->rcpt_err[i]);
        free(e->rcpt_err);
    }
    free(e->last_error);
    pst_envelope_free(&e->env);
    free(e);
}

static void
qe_drop(struct pst_qmgr *qm, struct qent *e)
{
    TAILQ_REMOVE(list_of(qm, e->where), e, link);
    qm->nlist[e->where]--;
    qm->count--;
    qe_free(e);
}

static uint64_t
rng_next(struct pst_qmgr *qm)
{
    /* xorshift64*: jitter only, not security */
    uint64_t x = qm->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    qm->rng = x;
    return x * UINT64_C(2685821657736338717);
}

/*
 * backoff - seconds before attempt n+1 after n failed attempts:
 * retry_min * 2^(n-1), capped at retry_max, minus up to a quarter of
 * jitter (so retries of a burst spread out), never below retry_min.
 */
static unsigned
backoff(struct pst_qmgr *qm, unsigned n)
{
    const struct pst_spool_opts *o = &qm->sp->o;
    uint64_t d = o->retry_min;
    for (unsigned i = 1; i < n && d < o->retry_max; i++)
        d *= 2;
    d = PST_MIN(d, (uint64_t)o->retry_max);
    uint64_t j = d / 4 ? rng_next(qm) % (d / 4 + 1) : 0;
    d -= j;
    return (unsigned)PST_MAX(d, (uint64_t)o->retry_min);
}

static size_t
pending_count(const struct qent *e)
{
    size_t n = 0;
    for (size_t i = 0; i < e->env.nrcpts; i++)
        n += e->env.rcpts[i].state == PST_RCPT_PENDING;
    return n;
}

static const char *
rcpt_state_name(enum pst_rcpt_state s)
{
    return s == PST_RCPT_DELIVERED ? "delivered"
           : s == PST_RCPT_FAILED  ? "failed"
                                   : "pending";
}

static const char *
qe_state_name(const struct qent *e)
{
    if (e->delivering)
        return "delivering";
    if (e->where == QE_HELD || e->state != PST_QSTATE_QUEUED)
        return e->state == PST_QSTATE_FAILED ? "failed" : "held";
    return e->attempts ? "deferred" : "queued";
}

static void schedule(struct pst_qmgr *qm);

/* ---- the timer ----
 *
 * One timer for the deferred list, armed for the earliest due time as
 * entries are deferred. When it fires it moves every entry due within the
 * next PST_QMGR_TICK ms to the ready list, so a large deferred backlog
 * with jittered times costs one scan per tick, not one per message.
 */

#define PST_QMGR_TICK 1000u

static void
on_timer(uv_timer_t *t)
{
    struct pst_qmgr *qm = t->data;
    uint64_t now = uv_now(qm->loop), min = UINT64_MAX;
    struct qent *e, *next;

    qm->timer_due = UINT64_MAX;
    for (e = TAILQ_FIRST(&qm->wait); e != NULL; e = next) {
        next = TAILQ_NEXT(e, link);
        if (e->due <= now + PST_QMGR_TICK)
            qe_move(qm, e, QE_READY);
        else
            min = PST_MIN(min, e->due);
    }
    if (min != UINT64_MAX)
        arm_at(qm, min);
    schedule(qm);
}

static void
arm_at(struct pst_qmgr *qm, uint64_t due)
{
    uint64_t now = uv_now(qm->loop);

    if (!qm->timer_open || due >= qm->timer_due)
        return;
    qm->timer_due = due;
    uv_timer_start(&qm->timer, on_timer, due > now ? due - now : 0, 0);
}

/* ---- delivery ---- */

struct djob {
    struct pst_work w;
    struct pst_qmgr *qm;
    struct qent *e;
    struct pst_delivery d;
    struct pst_spool_reader *r;
    bool delivered;             /* an event-loop transport has finished */
    const struct pst_transport *tp;
    void *route;
    int actfd, holdfd, corfd;
    size_t n;
    size_t *idx;
    struct pst_rcpt_result *res;
    time_t now;
    uint64_t start_us;          /* monotonic, for the attempt histogram */
    unsigned attempts;          /* after this attempt */
    unsigned delay;             /* seconds, if it fails */
    bool expire_if_fail;
    /* results */
    bool all_done;
    bool expired;
    bool corrupt;
    int rec_err;
    /* reports (queue/dsn.c): the original, read before the file goes */
    struct pst_dsn_orig orig;
    bool warn_delay;            /* a delay report is due on deferral */
};

/* Results for every recipient when the message cannot even be read. */
static void
fail_all(struct djob *j, int rc)
{
    for (size_t i = 0; i < j->n; i++) {
        j->res[i].res = PST_DRES_TEMP;
        snprintf(j->res[i].text, sizeof(j->res[i].text),
                 "4.3.0 cannot open queue file: %s", strerror(-rc));
    }
}

static void
reader_finish(struct djob *j)
{
    ssize_t rc = pst_spool_reader_read(j->r, NULL, 0);  /* sticky error */
    pst__reader_close(j->r);
    j->r = NULL;
    if (rc == -EBADMSG)
        j->corrupt = true;
}

/* dsn_due - some recipient of this attempt is owed a report. */
static bool
dsn_due(const struct djob *j)
{
    const struct pst_envelope *env = &j->e->env;
    for (size_t i = 0; i < j->n; i++) {
        const struct pst_rcpt_result *x = &j->res[i];
        const struct pst_rcpt *r = &env->rcpts[j->idx[i]];
        if (x->res == PST_DRES_PERM &&
            pst__dsn_wanted(env, r, PST_DSN_FAILED, x->hint))
            return true;
        if (x->res == PST_DRES_OK &&
            pst__dsn_wanted(env, r, PST_DSN_DELIVERED, x->hint))
            return true;
        if (x->res == PST_DRES_TEMP && j->expire_if_fail &&
            pst__dsn_wanted(env, r, PST_DSN_FAILED, x->hint))
            return true;
        if (x->res == PST_DRES_TEMP && j->warn_delay &&
            pst__dsn_wanted(env, r, PST_DSN_DELAYED, x->hint))
            return true;
    }
    return false;
}

/* Worker thread: deliver (blocking transports), then record. */
static void
djob_work(struct pst_work *w)
{
    struct djob *j = (struct djob *)w;
    struct qent *e = j->e;
    struct pst_tbuf b = {0};
    const char *first_err = NULL;
    size_t left = 0;
    int rc;

    if (!j->delivered) {
        rc = pst__reader_open(&j->r, j->actfd, e->qid, e->data_off,
                              e->env_off, e->size);
        if (rc != 0) {
            fail_all(j, rc);
        } else {
            j->d.reader = j->r;
            j->tp->deliver(j->route, &j->d);
            reader_finish(j);
            /* a maildir copy is a final delivery (NOTIFY=SUCCESS) */
            for (size_t i = 0; i < j->n; i++)
                j->res[i].hint = PST_HINT_DELIVERED;
        }
    }
    if (j->corrupt) {
        if (renameat(j->actfd, e->qid, j->corfd, e->qid) == 0) {
            fsync(j->corfd);
            fsync(j->actfd);
        }
        return;
    }

    bool report = dsn_due(j);
    for (size_t i = 0; i < j->n; i++)
        if (j->res[i].res != PST_DRES_OK && j->res[i].res != PST_DRES_PERM)
            left++;
    left += pending_count(e) - j->n;    /* recipients not in this attempt */
    if (left == 0 && !report) {
        /* Every copy is durable at its destination and nobody is owed a
         * report: the file goes without a last record and its own fsync.
         * The unlink reaches the disk with the next sync of active/ (the
         * sync thread's, shared with commits); a crash before it delivers
         * these copies again - the duplicate window (docs/SPOOL.md). */
        j->all_done = true;
        if (unlinkat(j->actfd, e->qid, 0) == 0)
            pst__spool_removed(j->qm->sp);
        return;
    }
    left = 0;
    if (report) {
        const struct pst_conf *c = j->qm->sp->o.conf;
        uint64_t cap = c ? c->delivery.bounce_size_max : 1048576;
        int drc = pst__dsn_read_original(j->actfd, e->qid, e->data_off,
                                         e->env_off, e->size, &e->env, cap,
                                         &j->orig);
        if (drc != 0)
            memset(&j->orig, 0, sizeof(j->orig));  /* report without it */
    }

    for (size_t i = 0; i < j->n; i++) {
        const struct pst_rcpt_result *x = &j->res[i];
        enum pst_rcpt_state st = x->res == PST_DRES_OK     ? PST_RCPT_DELIVERED
                                 : x->res == PST_DRES_PERM ? PST_RCPT_FAILED
                                                           : PST_RCPT_PENDING;
        pst__rec_rcpt(&b, (uint32_t)j->idx[i], st, j->now,
                      x->res == PST_DRES_OK ? NULL : x->text);
        if (st == PST_RCPT_PENDING) {
            left++;
            if (first_err == NULL)
                first_err = x->text;
        }
    }
    left += pending_count(e) - j->n;    /* recipients not in this attempt */
    j->all_done = left == 0;
    if (!j->all_done) {
        pst__rec_retry(&b, j->attempts, j->now + (time_t)j->delay, first_err);
        if (j->expire_if_fail)
            pst__rec_state(&b, PST_QSTATE_FAILED, j->now,
                           "lifetime expired");
    }
    int fd = openat(j->actfd, e->qid, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) {
        j->rec_err = -errno;
    } else {
        j->rec_err = pst__write_all(fd, b.p, b.len);
        if (j->rec_err == 0 && fsync(fd) != 0)
            j->rec_err = -errno;
        close(fd);
    }
    pst_tbuf_free(&b);
    if (j->all_done) {
        /* every copy is durable at its destination and the records say
         * so: a resurrected file would deliver nothing */
        unlinkat(j->actfd, e->qid, 0);
    } else if (j->expire_if_fail && j->rec_err == 0) {
        if (renameat(j->actfd, e->qid, j->holdfd, e->qid) == 0) {
            fsync(j->holdfd);
            fsync(j->actfd);
            j->expired = true;
        } else {
            j->rec_err = -errno;
        }
    }
}

static void
set_text(char **dst, const char *s)
{
    free(*dst);
    *dst = s ? pst_xstrdup(s) : NULL;
}

/*
 * send_reports - the reports this attempt owes (loop thread): failures
 * (now, or every pending recipient when the lifetime ended), successes
 * asked for with NOTIFY=SUCCESS, and one delay warning.
 */
static void
send_reports(struct pst_qmgr *qm, struct djob *j)
{
    struct qent *e = j->e;
    const struct pst_envelope *env = &e->env;
    struct pst_dsn_rcpt *fail = pst_xcalloc(env->nrcpts + 1, sizeof(*fail));
    struct pst_dsn_rcpt *ok = pst_xcalloc(env->nrcpts + 1, sizeof(*ok));
    struct pst_dsn_rcpt *late = pst_xcalloc(env->nrcpts + 1, sizeof(*late));
    char **texts = pst_xcalloc(env->nrcpts + 1, sizeof(char *));
    size_t nf = 0, no = 0, nl = 0, nt = 0;

    for (size_t i = 0; i < j->n; i++) {
        const struct pst_rcpt_result *x = &j->res[i];
        const struct pst_rcpt *r = &env->rcpts[j->idx[i]];
        if (x->res == PST_DRES_PERM &&
            pst__dsn_wanted(env, r, PST_DSN_FAILED, x->hint))
            fail[nf++] = (struct pst_dsn_rcpt){r, PST_DSN_FAILED, x->text};
        else if (x->res == PST_DRES_OK &&
                 pst__dsn_wanted(env, r, PST_DSN_DELIVERED, x->hint))
            ok[no++] = (struct pst_dsn_rcpt){
                r, x->hint == PST_HINT_DELIVERED ? PST_DSN_DELIVERED
                                                 : PST_DSN_RELAYED,
                x->text};
        else if (x->res == PST_DRES_TEMP && j->expired &&
                 pst__dsn_wanted(env, r, PST_DSN_FAILED, x->hint)) {
            texts[nt] = pst_xasprintf("delivery time expired; last "
                                      "error: %s", x->text);
            fail[nf++] = (struct pst_dsn_rcpt){r, PST_DSN_FAILED,
                                               texts[nt++]};
        } else if (x->res == PST_DRES_TEMP && j->warn_delay && !j->expired &&
                   pst__dsn_wanted(env, r, PST_DSN_DELAYED, x->hint))
            late[nl++] = (struct pst_dsn_rcpt){r, PST_DSN_DELAYED, x->text};
    }
    const struct pst_dsn_orig *o = j->orig.p ? &j->orig : NULL;
    pst__dsn_send(qm->sp, e->qid, env, fail, nf, o);
    pst__dsn_send(qm->sp, e->qid, env, ok, no, o);
    if (nl > 0) {
        e->delay_warned = true;
        pst__dsn_send(qm->sp, e->qid, env, late, nl, o);
    }
    for (size_t i = 0; i < nt; i++)
        free(texts[i]);
    free(texts);
    free(fail);
    free(ok);
    free(late);
    pst__dsn_orig_free(&j->orig);
}

/* count_delivery - one recipient's result in postern_deliveries_total. */
static void
count_delivery(struct pst_qmgr *qm, const char *route, const char *outcome)
{
    struct pst_tbuf k;
    pst_tbuf_init(&k);
    pst_tbuf_puts(&k, outcome);
    pst_tbuf_addc(&k, '\0');
    pst_tbuf_puts(&k, route);
    if (qm->m_deliveries == NULL)
        qm->m_deliveries = pst_strmap_new();
    void **slot = pst_strmap_slot(qm->m_deliveries, k.p, k.len, NULL);
    if (*slot == NULL)
        *slot = pst_metric_counter(
            "postern_deliveries_total",
            "Recipients whose delivery attempt ended, by route and outcome "
            "(delivered, deferred, failed).",
            "route", route, "outcome", outcome, NULL);
    pst_metric_add(*slot, 1);
    pst_tbuf_free(&k);
}

static void
djob_done(struct pst_work *w)
{
    struct djob *j = (struct djob *)w;
    struct pst_qmgr *qm = j->qm;
    struct qent *e = j->e;
    char q[300], t[300];

    qm->inflight--;
    e->delivering = false;
    if (j->w.cancelled) {
        qe_move(qm, e, QE_READY);
        goto out;
    }
    if (j->corrupt) {
        pst_err("msg=%s event=spool_corrupt reason=\"bad checksum in "
                "message data\" action=moved to=corrupt/%s", e->qid, e->qid);
        qe_drop(qm, e);
        goto out;
    }
    e->attempts = j->attempts;
    pst_metric_observe(qm->m_attempt, pst_monotonic_us() - j->start_us);
    const char *droute = qm->sp->o.default_route;
    for (size_t i = 0; i < j->n; i++) {
        struct pst_rcpt *r = &e->env.rcpts[j->idx[i]];
        const struct pst_rcpt_result *x = &j->res[i];
        count_delivery(qm, x->route ? x->route : droute,
                       x->res == PST_DRES_OK     ? "delivered"
                       : x->res == PST_DRES_PERM ? "failed"
                                                 : "deferred");
        pst_log_quote(q, sizeof(q), r->addr, strlen(r->addr));
        pst_log_quote(t, sizeof(t), x->text, strlen(x->text));
        if (x->res == PST_DRES_OK) {
            r->state = PST_RCPT_DELIVERED;
            set_text(&e->rcpt_err[j->idx[i]], NULL);
            pst_info("msg=%s event=delivered to=%s relay=%s status=%s", e->qid,
                     q, j->tp->name, t);
        } else if (x->res == PST_DRES_PERM) {
            r->state = PST_RCPT_FAILED;
            set_text(&e->rcpt_err[j->idx[i]], x->text);
            pst_warn("msg=%s event=failed to=%s relay=%s status=%s", e->qid,
                     q, j->tp->name, t);
        } else {
            set_text(&e->rcpt_err[j->idx[i]], x->text);
            set_text(&e->last_error, x->text);
            pst_info("msg=%s event=deferred to=%s relay=%s attempts=%u "
                     "delay=%u status=%s", e->qid, q, j->tp->name,
                     j->attempts, j->delay, t);
        }
    }
    if (j->rec_err)
        pst_err("msg=%s event=spool_update_error error=\"%s\"", e->qid,
                strerror(-j->rec_err));
    send_reports(qm, j);
    if (j->all_done) {
        pst_info("msg=%s event=removed", e->qid);
        qe_drop(qm, e);
    } else if (j->expired) {
        e->state = PST_QSTATE_FAILED;
        qe_move(qm, e, QE_HELD);
        pst_warn("msg=%s event=expired attempts=%u pending=%zu action=hold",
                 e->qid, e->attempts, pending_count(e));
    } else {
        e->next_wall = j->now + (time_t)j->delay;
        uint64_t now = uv_now(qm->loop);
        e->due = now + (uint64_t)j->delay * 1000;
        if (e->expire_at > now)
            e->due = PST_MIN(e->due, e->expire_at);
        qe_move(qm, e, QE_WAIT);
    }
out:
    pst__dsn_orig_free(&j->orig);
    free(j->idx);
    free(j->res);
    free(j);
    schedule(qm);
}

/* d->done of an event-loop transport: loop thread. */
static void
on_delivered(struct pst_delivery *d)
{
    struct djob *j = (struct djob *)((char *)d - offsetof(struct djob, d));
    reader_finish(j);
    if (d->corrupt)
        j->corrupt = true;
    j->delivered = true;
    /* a deferral the route asked for (rate, dead host) sets the time */
    if (d->retry_after)
        j->delay = PST_MIN(j->delay, d->retry_after);
    pst_workq_submit(j->qm->wq, &j->w);
}

static void
start_delivery(struct pst_qmgr *qm, struct qent *e)
{
    struct djob *j = pst_xcalloc(1, sizeof(*j));
    size_t n = pending_count(e);

    j->w.work = djob_work;
    j->w.done = djob_done;
    j->qm = qm;
    j->e = e;
    j->tp = qm->tp;
    j->route = qm->route;
    j->actfd = qm->sp->actfd;
    j->holdfd = qm->sp->holdfd;
    j->corfd = qm->sp->corfd;
    j->idx = pst_xcalloc(n, sizeof(size_t));
    j->res = pst_xcalloc(n, sizeof(*j->res));
    for (size_t i = 0; i < e->env.nrcpts; i++)
        if (e->env.rcpts[i].state == PST_RCPT_PENDING)
            j->idx[j->n++] = i;
    j->d = (struct pst_delivery){
        .loop = qm->loop, .qid = e->qid, .env = &e->env,
        .n = j->n, .idx = j->idx, .res = j->res, .done = on_delivered,
        .src = {.dirfd = j->actfd, .data_off = e->data_off,
                .data_end = e->env_off, .size = e->size},
    };
    j->now = time(NULL);
    j->start_us = pst_monotonic_us();
    j->attempts = e->attempts + 1;
    j->delay = backoff(qm, j->attempts);
    j->expire_if_fail = uv_now(qm->loop) >= e->expire_at;
    const struct pst_conf *c = qm->sp->o.conf;
    j->warn_delay = c && c->delivery.delay_warning && !e->delay_warned &&
                    e->env.arrival &&
                    j->now - e->env.arrival >= (time_t)c->delivery.delay_warning;
    e->delivering = true;
    qe_move(qm, e, QE_BUSY);
    qm->inflight++;
    if (j->tp->blocking) {
        pst_workq_submit(qm->wq, &j->w);
        return;
    }
    /* event-loop transport: deliver here, record on a worker after */
    int rc = pst__reader_open(&j->r, j->actfd, e->qid, e->data_off,
                              e->env_off, e->size);
    if (rc != 0) {
        fail_all(j, rc);
        j->delivered = true;
        pst_workq_submit(qm->wq, &j->w);
        return;
    }
    j->d.reader = j->r;
    j->tp->deliver(j->route, &j->d);
}

static void
schedule(struct pst_qmgr *qm)
{
    struct qent *e;

    if (!qm->started || qm->sp->closing)
        return;
    if (qm->paused)
        return;
    while (qm->inflight < qm->sp->o.concurrency &&
           (e = TAILQ_FIRST(&qm->ready)) != NULL) {
        if (pending_count(e) == 0) {
            /* all recipients finished before a crash; file left behind */
            unlinkat(qm->sp->actfd, e->qid, 0);
            pst_info("msg=%s event=removed", e->qid);
            qe_drop(qm, e);
            continue;
        }
        start_delivery(qm, e);
    }
}

/* ---- entries in ---- */

static struct qent *
qe_new(struct pst_qmgr *qm, const char *qid)
{
    struct qent *e = pst_xcalloc(1, sizeof(*e));
    memcpy(e->qid, qid, PST_QID_LEN + 1);
    e->state = PST_QSTATE_QUEUED;
    (void)qm;
    return e;
}

static void
qe_insert(struct pst_qmgr *qm, struct qent *e, enum qe_where w)
{
    e->where = w;
    qm->nlist[w]++;
    TAILQ_INSERT_TAIL(list_of(qm, w), e, link);
    qm->count++;
    if (w == QE_WAIT)
        arm_at(qm, e->due);
}

void
pst__qmgr_load(struct pst_qmgr *qm, struct pst_scan *s, bool held)
{
    struct qent *e = qe_new(qm, s->qid);
    uint64_t now = uv_now(qm->loop);
    time_t wall = time(NULL);
    const struct pst_spool_opts *o = &qm->sp->o;

    e->env = s->env;
    memset(&s->env, 0, sizeof(s->env));
    e->rcpt_err = s->rcpt_err;
    s->rcpt_err = NULL;
    e->last_error = s->last_error;
    s->last_error = NULL;
    e->data_off = s->data_off;
    e->env_off = s->env_off;
    e->size = s->msg_size;
    e->file_size = s->file_size;
    e->attempts = s->attempts;
    e->next_wall = s->next_attempt;
    /* wall-clock facts to capped monotonic deltas */
    int64_t left = (int64_t)e->env.arrival + o->lifetime - wall;
    left = PST_MAX(left, 0);
    left = PST_MIN(left, (int64_t)o->lifetime);
    e->expire_at = now + (uint64_t)left * 1000;
    int64_t wait = s->attempts ? (int64_t)s->next_attempt - wall : 0;
    wait = PST_MAX(wait, 0);
    wait = PST_MIN(wait, (int64_t)o->retry_max);
    e->due = now + (uint64_t)wait * 1000;
    enum pst_qstate st = s->state;
    pst__scan_free(s);
    if (held) {
        /* the directory decides: in hold/ means not scheduled */
        e->state = st == PST_QSTATE_FAILED ? PST_QSTATE_FAILED
                                           : PST_QSTATE_HELD;
        qe_insert(qm, e, QE_HELD);
    } else {
        e->state = PST_QSTATE_QUEUED;
        qe_insert(qm, e, wait ? QE_WAIT : QE_READY);
    }
}

void
pst__qmgr_add(struct pst_qmgr *qm, const char *qid, struct pst_envelope *env,
              uint64_t data_off, uint64_t env_off, uint64_t size,
              uint64_t file_size, bool held)
{
    struct qent *e = qe_new(qm, qid);
    uint64_t now = uv_now(qm->loop);

    e->env = *env;
    memset(env, 0, sizeof(*env));
    e->rcpt_err = pst_xcalloc(e->env.nrcpts, sizeof(char *));
    e->data_off = data_off;
    e->env_off = env_off;
    e->size = size;
    e->file_size = file_size;
    e->due = now;
    e->expire_at = now + (uint64_t)qm->sp->o.lifetime * 1000;
    if (held) {                     /* quarantined: in hold/ already */
        e->state = PST_QSTATE_HELD;
        qe_insert(qm, e, QE_HELD);
        return;
    }
    qe_insert(qm, e, QE_READY);
    schedule(qm);
}

/* qm_submit - the delivery manager's blocking jobs (maildir parts). */
static void
qm_submit(void *ctx, struct pst_work *w)
{
    struct pst_qmgr *qm = ctx;
    pst_workq_submit(qm->wq, w);
}

int
pst__qmgr_new(struct pst_qmgr **qmp, struct pst_spool *sp,
              struct pst_err *err)
{
    struct pst_qmgr *qm = pst_xcalloc(1, sizeof(*qm));
    const char *arg;
    char why[256] = "";
    int rc;

    qm->sp = sp;
    qm->loop = sp->loop;
    qm->timer_due = UINT64_MAX;
    TAILQ_INIT(&qm->ready);
    TAILQ_INIT(&qm->wait);
    TAILQ_INIT(&qm->held);
    TAILQ_INIT(&qm->busy);
    if (getrandom(&qm->rng, sizeof(qm->rng), 0) != sizeof(qm->rng))
        qm->rng = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
    qm->rng |= 1;
    qm->m_attempt = pst_metric_histogram(
        "postern_delivery_attempt_duration_seconds",
        "One delivery attempt of one message: from its start to its "
        "results recorded in the spool.",
        &pst_buckets_latency, NULL);
    qm->tp = pst_transport_find(sp->o.default_route, &arg);
    if (qm->tp == NULL) {
        pst_err_add(err, NULL, 0, "delivery.default_route: unknown "
                    "transport in \"%s\" (known: maildir:DIR, smtp:, "
                    "lmtp:, mx)", sp->o.default_route);
        rc = -EINVAL;
        goto fail;
    }
    /* routes by domain: the delivery manager takes every recipient */
    if (sp->o.conf != NULL && sp->o.conf->delivery.nroutes > 0)
        qm->tp = &pst_transport_relay;
    if (qm->tp == &pst_transport_relay) {
        struct pst_deliver *dm = NULL;
        if (sp->o.conf == NULL) {
            pst_err_add(err, NULL, 0, "queue: no configuration for the "
                        "delivery client");
            rc = -EINVAL;
            goto fail;
        }
        if ((rc = pst_deliver_new(&dm, qm->loop, sp->o.conf, qm_submit, qm,
                                  err)) != 0)
            goto fail;
        qm->route = dm;
    } else if ((rc = qm->tp->route_new(qm->loop, arg, &qm->route, why,
                                       sizeof(why))) != 0) {
        pst_err_add(err, NULL, 0, "delivery.default_route \"%s\": %s",
                    sp->o.default_route, why);
        goto fail;
    }
    if ((rc = uv_timer_init(qm->loop, &qm->timer)) != 0)
        goto fail_route;
    qm->timer.data = qm;
    qm->timer_open = true;
    unsigned threads = PST_MIN(sp->o.concurrency, PST_QMGR_THREADS);
    if ((rc = pst_workq_new(&qm->wq, qm->loop, PST_MAX(threads, 1u))) != 0) {
        pst_err_add(err, NULL, 0, "queue: delivery workers: %s",
                    strerror(-rc));
        pst__qmgr_close(qm);
        return rc;
    }
    *qmp = qm;
    return 0;
fail_route:
    qm->tp->route_free(qm->route);
fail:
    free(qm);
    return rc;
}

void
pst__qmgr_start(struct pst_qmgr *qm)
{
    qm->started = true;
    schedule(qm);
}

static void
qm_free(struct pst_qmgr *qm)
{
    pst_strmap_free(qm->m_deliveries, NULL);
    free(qm);
}

static void
on_timer_closed(uv_handle_t *h)
{
    qm_free(h->data);
}

void
pst__qmgr_close(struct pst_qmgr *qm)
{
    struct qent *e;

    if (qm == NULL)
        return;
    qm->started = false;
    /* an event-loop transport finishes (d->done) what it has in flight
     * while the pool still takes the record jobs; a blocking one is freed
     * only after the workers using it have stopped */
    if (!qm->tp->blocking)
        qm->tp->route_free(qm->route);
    if (qm->wq)
        pst_workq_close(qm->wq);    /* runs outstanding done callbacks */
    qm->wq = NULL;
    struct qentl *ls[] = {&qm->ready, &qm->wait, &qm->held, &qm->busy};
    for (size_t i = 0; i < PST_ARRAY_LEN(ls); i++)
        while ((e = TAILQ_FIRST(ls[i])) != NULL)
            qe_drop(qm, e);
    if (qm->tp->blocking)
        qm->tp->route_free(qm->route);
    if (qm->timer_open) {
        uv_timer_stop(&qm->timer);
        uv_close((uv_handle_t *)&qm->timer, on_timer_closed);
    } else {
        qm_free(qm);
    }
}

void
pst__qmgr_pause(struct pst_qmgr *qm, bool paused)
{
    qm->paused = paused;
    pst_info("event=queue_%s", paused ? "paused" : "resumed");
    schedule(qm);
}

void
pst__qmgr_counts(struct pst_qmgr *qm, struct pst_spool_stats *st)
{
    if (qm == NULL)
        return;
    st->queued = qm->count;
    st->delivering = qm->inflight;
    st->active = qm->nlist[QE_READY] + qm->nlist[QE_BUSY];
    st->deferred = qm->nlist[QE_WAIT];
    st->held = qm->nlist[QE_HELD];
    /* one pass over the queue, about once a second (the metrics tick) */
    st->oldest_arrival = 0;
    static const enum qe_where all[] = {QE_READY, QE_WAIT, QE_HELD, QE_BUSY};
    for (size_t i = 0; i < PST_ARRAY_LEN(all); i++) {
        struct qent *e;
        TAILQ_FOREACH(e, list_of(qm, all[i]), link)
            if (e->env.arrival > 0 && (st->oldest_arrival == 0 ||
                                       e->env.arrival < st->oldest_arrival))
                st->oldest_arrival = e->env.arrival;
    }
}


/* ---- operator commands ---- */

struct opbatch {
    enum pst_qop op;
    pst_qop_cb cb;
    void *arg;
    unsigned left;
    unsigned done;
    unsigned skipped;           /* busy entries left alone */
    int err;
    char id[PST_QID_LEN + 1];   /* single-message ops */
};

struct ojob {
    struct pst_work w;
    struct pst_qmgr *qm;
    struct qent *e;
    struct opbatch *b;
    enum qe_where prev;
    int actfd, holdfd;
    time_t now;
    int status;
};

static int
append_state(int dfd, const char *qid, enum pst_qstate st, time_t now,
             const char *why)
{
    struct pst_tbuf b = {0};
    int rc, fd = openat(dfd, qid, O_WRONLY | O_APPEND | O_CLOEXEC);

    if (fd < 0)
        return -errno;
    pst__rec_state(&b, st, now, why);
    rc = pst__write_all(fd, b.p, b.len);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    close(fd);
    pst_tbuf_free(&b);
    return rc;
}

static int
move_synced(int from, int to, const char *qid)
{
    if (renameat(from, qid, to, qid) != 0)
        return -errno;
    if (fsync(to) != 0 || fsync(from) != 0)
        return -errno;
    return 0;
}

static void
ojob_work(struct pst_work *w)
{
    struct ojob *j = (struct ojob *)w;
    const char *qid = j->e->qid;
    int dfd = j->prev == QE_HELD ? j->holdfd : j->actfd;

    switch (j->b->op) {
    case PST_QOP_DELETE:
        if (unlinkat(dfd, qid, 0) != 0)
            j->status = -errno;
        else if (fsync(dfd) != 0)
            j->status = -errno;
        break;
    case PST_QOP_HOLD:
        j->status = move_synced(j->actfd, j->holdfd, qid);
        if (j->status == 0)
            j->status = append_state(j->holdfd, qid, PST_QSTATE_HELD, j->now,
                                     "held by the operator");
        break;
    case PST_QOP_RELEASE:
        j->status = move_synced(j->holdfd, j->actfd, qid);
        if (j->status == 0)
            j->status = append_state(j->actfd, qid, PST_QSTATE_QUEUED,
                                     j->now, "released by the operator");
        break;
    }
}

static void
batch_finish(struct opbatch *b)
{
    static const char *const verbs[] = {"deleted", "held", "released"};
    char text[256];

    if (b->err && b->done == 0)
        snprintf(text, sizeof(text), "%s: %s", b->id[0] ? b->id : "queue",
                 strerror(-b->err));
    else if (b->id[0])
        snprintf(text, sizeof(text), "%s %s", verbs[b->op], b->id);
    else
        snprintf(text, sizeof(text), "%s %u message%s%s", verbs[b->op],
                 b->done, b->done == 1 ? "" : "s",
                 b->skipped ? " (messages being delivered were left)" : "");
    b->cb(b->arg, b->done || !b->err ? 0 : b->err, text);
    free(b);
}

static void
ojob_done(struct pst_work *w)
{
    struct ojob *j = (struct ojob *)w;
    struct pst_qmgr *qm = j->qm;
    struct qent *e = j->e;
    struct opbatch *b = j->b;
    static const char *const ev[] = {"deleted", "hold", "release"};

    if (!w->cancelled && j->status == 0) {
        b->done++;
        pst_info("msg=%s event=%s by=operator", e->qid, ev[b->op]);
        if (b->op == PST_QOP_DELETE) {
            qe_drop(qm, e);
        } else if (b->op == PST_QOP_HOLD) {
            e->state = PST_QSTATE_HELD;
            qe_move(qm, e, QE_HELD);
        } else {
            e->state = PST_QSTATE_QUEUED;
            e->due = uv_now(qm->loop);
            qe_move(qm, e, QE_READY);
        }
    } else {
        int err = w->cancelled ? -ECANCELED : j->status;
        if (b->err == 0)
            b->err = err;
        pst_err("msg=%s event=%s_error error=\"%s\"", e->qid, ev[b->op],
                strerror(-err));
        qe_move(qm, e, j->prev);
    }
    free(j);
    if (--b->left == 0)
        batch_finish(b);
    schedule(qm);
}

static void
op_submit(struct pst_qmgr *qm, struct qent *e, struct opbatch *b)
{
    struct ojob *j = pst_xcalloc(1, sizeof(*j));
    j->w.work = ojob_work;
    j->w.done = ojob_done;
    j->qm = qm;
    j->e = e;
    j->b = b;
    j->prev = e->where;
    j->actfd = qm->sp->actfd;
    j->holdfd = qm->sp->holdfd;
    j->now = time(NULL);
    b->left++;
    qe_move(qm, e, QE_BUSY);
    pst_workq_submit(qm->wq, &j->w);
}

static struct qent *
qe_find(struct pst_qmgr *qm, const char *qid)
{
    struct qentl *ls[] = {&qm->ready, &qm->wait, &qm->held, &qm->busy};
    struct qent *e;
    for (size_t i = 0; i < PST_ARRAY_LEN(ls); i++)
        TAILQ_FOREACH(e, ls[i], link)
            if (pst_strcaseeq(e->qid, qid))
                return e;
    return NULL;
}

void
pst__qmgr_op(struct pst_qmgr *qm, enum pst_qop op, const char *qid,
             pst_qop_cb cb, void *arg)
{
    struct opbatch *b = pst_xcalloc(1, sizeof(*b));
    struct qent *e, *next;

    b->op = op;
    b->cb = cb;
    b->arg = arg;
    if (qm->sp->closing || qm->wq == NULL) {
        cb(arg, -ESHUTDOWN, "the queue is shutting down");
        free(b);
        return;
    }
    if (qid == NULL) {
        struct qentl *ls[] = {&qm->ready, &qm->wait, &qm->held};
        b->left = 1;            /* hold the batch open while submitting */
        for (size_t i = 0; i < PST_ARRAY_LEN(ls); i++)
            for (e = TAILQ_FIRST(ls[i]); e != NULL; e = next) {
                next = TAILQ_NEXT(e, link);
                if (op == PST_QOP_DELETE ||
                    (op == PST_QOP_HOLD && e->where != QE_HELD) ||
                    (op == PST_QOP_RELEASE && e->where == QE_HELD))
                    op_submit(qm, e, b);
            }
        TAILQ_FOREACH(e, &qm->busy, link)
            b->skipped++;
        if (--b->left == 0)
            batch_finish(b);
        return;
    }
    snprintf(b->id, sizeof(b->id), "%s", qid);
    e = qe_find(qm, qid);
    const char *why = NULL;
    if (e == NULL)
        why = "no such message in the queue";
    else if (e->where == QE_BUSY)
        why = "the message is being delivered; try again";
    else if (op == PST_QOP_HOLD && e->where == QE_HELD)
        why = "the message is already on hold";
    else if (op == PST_QOP_RELEASE && e->where != QE_HELD)
        why = "the message is not on hold";
    if (why) {
        char text[128];
        snprintf(text, sizeof(text), "%s: %s", b->id, why);
        cb(arg, e == NULL ? -ENOENT : -EBUSY, text);
        free(b);
        return;
    }
    op_submit(qm, e, b);
}

unsigned
pst__qmgr_flush(struct pst_qmgr *qm)
{
    struct qent *e;
    unsigned n = 0;
    uint64_t now = uv_now(qm->loop);

    while ((e = TAILQ_FIRST(&qm->wait)) != NULL) {
        e->due = now;
        qe_move(qm, e, QE_READY);
        n++;
    }
    pst_info("event=flush messages=%u", n);
    schedule(qm);
    return n;
}

/* ---- listing ---- */

static void
fmt_time(char *buf, size_t n, time_t t)
{
    struct tm tm;
    if (t <= 0 || gmtime_r(&t, &tm) == NULL)
        snprintf(buf, n, "-");
    else
        strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void
qe_json(struct pst_tbuf *b, const struct qent *e, bool full)
{
    char at[32], nx[32], ip[PST_IP_STRLEN];

    fmt_time(at, sizeof(at), e->env.arrival);
    fmt_time(nx, sizeof(nx), e->next_wall);
    pst_tbuf_printf(b, "{\"id\":\"%s\",\"size\":%" PRIu64 ",\"arrival\":"
                     "\"%s\",\"arrival_time\":%lld,\"state\":\"%s\","
                     "\"attempts\":%u,\"next_attempt\":", e->qid, e->size,
                     at, (long long)e->env.arrival, qe_state_name(e),
                     e->attempts);
    if (e->attempts && e->where != QE_HELD)
        pst_tbuf_printf(b, "\"%s\"", nx);
    else
        pst_tbuf_printf(b, "null");
    pst_tbuf_printf(b, ",\"sender\":");
    pst__put_json_str(b, e->env.sender);
    pst_tbuf_printf(b, ",\"last_error\":");
    pst__put_json_str(b, e->last_error);
    if (full) {
        pst_tbuf_printf(b, ",\"client_ip\":");
        pst__put_json_str(b, e->env.client_ip.family
                                  ? pst_ip_str(&e->env.client_ip, ip,
                                               sizeof(ip))
                                  : NULL);
        pst_tbuf_printf(b, ",\"client_name\":");
        pst__put_json_str(b, e->env.client_name);
        pst_tbuf_printf(b, ",\"helo\":");
        pst__put_json_str(b, e->env.helo);
        pst_tbuf_printf(b, ",\"protocol\":");
        pst__put_json_str(b, e->env.proto);
        pst_tbuf_printf(b, ",\"auth\":");
        pst__put_json_str(b, e->env.auth_login);
        pst_tbuf_printf(b, ",\"envid\":");
        pst__put_json_str(b, e->env.envid);
        pst_tbuf_printf(b, ",\"ret\":\"%s\",\"body\":\"%s\","
                         "\"smtputf8\":%s",
                         e->env.ret == PST_RET_FULL   ? "full"
                         : e->env.ret == PST_RET_HDRS ? "hdrs"
                                                      : "",
                         e->env.body == PST_BODY_8BITMIME     ? "8bitmime"
                         : e->env.body == PST_BODY_BINARYMIME ? "binarymime"
                                                              : "7bit",
                         e->env.smtputf8 ? "true" : "false");
    }
    pst_tbuf_printf(b, ",\"recipients\":[");
    for (size_t i = 0; i < e->env.nrcpts; i++) {
        const struct pst_rcpt *r = &e->env.rcpts[i];
        pst_tbuf_printf(b, "%s{\"address\":", i ? "," : "");
        pst__put_json_str(b, r->addr);
        pst_tbuf_printf(b, ",\"state\":\"%s\",\"last_error\":",
                         rcpt_state_name(r->state));
        pst__put_json_str(b, e->rcpt_err ? e->rcpt_err[i] : NULL);
        if (full) {
            pst_tbuf_printf(b, ",\"orcpt\":");
            pst__put_json_str(b, r->orcpt);
            pst_tbuf_printf(b, ",\"notify\":%u", r->notify);
        }
        pst_tbuf_printf(b, "}");
    }
    pst_tbuf_printf(b, "]}");
}

/* Text output: client strings are shown escaped, never raw. */
static void
qe_text(struct pst_tbuf *b, const struct qent *e, bool full)
{
    char at[32], nx[32], q[600], ip[PST_IP_STRLEN];

    fmt_time(at, sizeof(at), e->env.arrival);
    fmt_time(nx, sizeof(nx), e->next_wall);
    pst_log_quote(q, sizeof(q), e->env.sender, strlen(e->env.sender));
    pst_tbuf_printf(b, "%s %8" PRIu64 " %s %-10s %s\n", e->qid, e->size, at,
                     qe_state_name(e), q);
    if (full) {
        pst_tbuf_printf(b, "  attempts: %u\n", e->attempts);
        if (e->attempts && e->where != QE_HELD)
            pst_tbuf_printf(b, "  next attempt: %s\n", nx);
        if (e->env.client_ip.family)
            pst_tbuf_printf(b, "  client: %s\n",
                             pst_ip_str(&e->env.client_ip, ip, sizeof(ip)));
        if (e->env.helo) {
            pst_log_quote(q, sizeof(q), e->env.helo, strlen(e->env.helo));
            pst_tbuf_printf(b, "  helo: %s\n", q);
        }
        if (e->env.proto)
            pst_tbuf_printf(b, "  protocol: %.32s\n", e->env.proto);
    }
    if (e->last_error) {
        pst_log_quote(q, sizeof(q), e->last_error, strlen(e->last_error));
        pst_tbuf_printf(b, "  last error: %s\n", q);
    }
    for (size_t i = 0; i < e->env.nrcpts; i++) {
        const struct pst_rcpt *r = &e->env.rcpts[i];
        pst_log_quote(q, sizeof(q), r->addr, strlen(r->addr));
        pst_tbuf_printf(b, "  %-9s %s", rcpt_state_name(r->state), q);
        if (e->rcpt_err && e->rcpt_err[i]) {
            pst_log_quote(q, sizeof(q), e->rcpt_err[i],
                          strlen(e->rcpt_err[i]));
            pst_tbuf_printf(b, " (%s)", q);
        }
        pst_tbuf_printf(b, "\n");
    }
}

void
pst__qmgr_list(struct pst_qmgr *qm, struct pst_tbuf *out, bool json)
{
    struct qentl *ls[] = {&qm->busy, &qm->ready, &qm->wait, &qm->held};
    struct qent *e;
    bool first = true;

    if (json)
        pst_tbuf_printf(out, "{\"messages\":[");
    for (size_t i = 0; i < PST_ARRAY_LEN(ls); i++)
        TAILQ_FOREACH(e, ls[i], link) {
            if (json) {
                if (!first)
                    pst_tbuf_printf(out, ",");
                qe_json(out, e, false);
            } else {
                qe_text(out, e, false);
            }
            first = false;
        }
    if (json)
        pst_tbuf_printf(out, "],\"count\":%u}\n", qm->count);
    else if (first)
        pst_tbuf_printf(out, "queue is empty\n");
}

int
pst__qmgr_show(struct pst_qmgr *qm, const char *qid, struct pst_tbuf *out,
               bool json)
{
    struct qent *e = qe_find(qm, qid);
    if (e == NULL)
        return -ENOENT;
    if (json) {
        qe_json(out, e, true);
        pst_tbuf_printf(out, "\n");
    } else {
        qe_text(out, e, true);
    }
    return 0;
}
