/*
 * qmgr.c - the queue manager: schedules committed messages, hands them to
 * their transport on the delivery workers, records per-recipient results
 * in the spool file, retries with backoff, expires, and carries out the
 * operator's queue commands.
 *
 * Threads. All lists and entries belong to the loop thread. A delivery or
 * an operator command is a job on the queue's own worker pool
 * (core/pool.h): the job reads only what was copied into it or the entry's
 * envelope, which the loop leaves alone while the entry is busy. Results
 * come back through the pool's uv_async.
 *
 * Per attempt, the worker: delivers (the transport syncs its copies),
 * then either has the spool drop a finished message at once (no recipient
 * pending, no report owed; its removal is synced soon, shared with
 * commits) or has one RCPT record per recipient tried and a RETRY record
 * appended and synced, and the message removed once no recipient is
 * pending. An event-loop attempt split over several routes has each
 * route's delivered recipients recorded on the loop as that part
 * finishes (on_progress: no sync of their own), not when the slowest
 * route is done. A crash between a transport's sync and the spool's
 * record delivers the same copy again after restart: that is the
 * duplicate window (docs/SPOOL.md). An attempt whose records could not be
 * written (a full disk) leaves the entry `unrecorded`: the next attempt's
 * records carry every recipient's state. Storage is the spool's: the
 * manager asks for operations on a message (queue/spool_int.h) and never
 * opens its files.
 *
 * Output for the control socket is control.c's: the manager hands out a
 * read-only view of each message (qmgr.h). Who is owed a delivery report
 * is dsn.c's rule.
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
#include "queue/qmgr.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/pool.h"
#include "core/strmap.h"
#include "core/util.h"
#include "queue/deliver.h"
#include "queue/dsn.h"
#include "queue/transport.h"

#define PST_QMGR_THREADS 8u

enum qe_where { QE_READY, QE_WAIT, QE_HELD, QE_BUSY };

struct qent {
    TAILQ_ENTRY(qent) link;
    enum qe_where where;
    char qid[PST_QID_LEN + 1];
    struct pst_envelope env;
    char **rcpt_err;            /* per recipient, NULL or last error */
    char *last_error;
    struct pst_spool_loc loc;   /* the spool's, handed back to it */
    unsigned attempts;
    time_t next_wall;           /* stored next attempt (display) */
    uint64_t due;               /* uv_now() ms when to try */
    uint64_t expire_at;         /* uv_now() ms when lifetime ends */
    enum pst_qstate state;
    bool delivering;            /* busy with a delivery (not an op) */
    bool delay_warned;          /* a delay report went out (this run) */
    bool unrecorded;            /* an attempt's records could not be
                                   written: the next records every
                                   recipient's state */
};

TAILQ_HEAD(qentl, qent);

/* The delivery settings the manager keeps: copied at open, so a config
 * reload that drops its generation never pulls strings from under it. */
struct qm_opts {
    unsigned retry_min;
    unsigned retry_max;
    unsigned lifetime;
    unsigned concurrency;
    uint64_t bounce_size_max;
    unsigned delay_warning;
    char *hostname;             /* of the reports */
    char *default_route;        /* delivery.default_route */
    struct pst_conf *conf;      /* a reference: routes and the client's
                                   settings (queue/deliver.c) */
    bool conf_ref;
};

struct pst_qmgr {
    struct pst_spool *sp;
    struct qm_opts o;
    uv_loop_t *loop;
    uv_timer_t timer;
    bool timer_open;
    uint64_t timer_due;         /* UINT64_MAX: not armed */
    struct pst_pool *pool;          /* the delivery workers */
    struct qentl ready, wait, held, busy;
    unsigned count;             /* entries on all lists */
    unsigned inflight;          /* deliveries */
    const struct pst_transport *tp;
    void *route;
    uint64_t rng;
    bool started;
    bool paused;
    bool closing;
    unsigned nlist[4];          /* entries per qe_where */
    uv_idle_t quick_idle;       /* runs the attempts finished on the loop */
    struct djob *quick;         /* ... in this list */
    struct djob **quick_tail;
    unsigned handles;           /* open: the timer, quick_idle */
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
    pst__errs_free(e->rcpt_err, e->env.nrcpts);
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

/*
 * backoff - seconds before attempt n+1 after n failed attempts:
 * retry_min * 2^(n-1), capped at retry_max, minus up to a quarter of
 * jitter (so retries of a burst spread out), never below retry_min.
 */
static unsigned
backoff(struct pst_qmgr *qm, unsigned n)
{
    const struct qm_opts *o = &qm->o;
    uint64_t d = o->retry_min;
    for (unsigned i = 1; i < n && d < o->retry_max; i++)
        d *= 2;
    d = PST_MIN(d, (uint64_t)o->retry_max);
    uint64_t j = d / 4 ? pst_rand64(&qm->rng) % (d / 4 + 1) : 0;
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

/* qm_run - a job on the delivery workers; once they are gone (closing),
 * the job is cancelled at once. */
static void
qm_run(struct pst_qmgr *qm, struct pst_pool_job *w)
{
    if (qm->pool == NULL || pst_pool_submit(qm->pool, w) != 0)
        w->done(w, false);
}

/* ---- delivery ---- */

struct djob {
    struct pst_pool_job w;
    struct pst_qmgr *qm;
    struct qent *e;
    struct pst_spool *sp;
    struct pst_spool_loc loc;   /* the entry's, written back when done */
    struct pst_delivery d;
    struct pst_spool_reader *r;
    bool delivered;             /* an event-loop transport has finished */
    const struct pst_transport *tp;
    void *route;
    size_t n;
    size_t *idx;
    struct pst_rcpt_result *res;
    bool *early;                /* n: recorded and logged when its route
                                   part finished (on_progress) */
    time_t now;
    uint64_t start_us;          /* monotonic, for the attempt histogram */
    unsigned attempts;          /* after this attempt */
    unsigned delay;             /* seconds, if it fails */
    bool expire_if_fail;
    uint64_t bounce_size_max;
    /* results */
    bool all_done;
    bool expired;
    bool corrupt;
    int rec_err;
    /* reports (queue/dsn.c): the original, read before the file goes */
    struct pst_dsn_orig orig;
    bool warn_delay;            /* a delay report is due on deferral */
    struct djob *quick_next;    /* on qm->quick */
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
    if (j->r == NULL)
        return;                     /* the transport took it */
    ssize_t rc = pst_spool_reader_read(j->r, NULL, 0);  /* sticky error */
    pst__reader_close(j->r);
    j->r = NULL;
    if (rc == -EBADMSG)
        j->corrupt = true;
}

static struct pst_dsn_attempt
attempt_of(const struct djob *j)
{
    return (struct pst_dsn_attempt){.env = &j->e->env, .n = j->n,
                                    .idx = j->idx, .res = j->res,
                                    .warn_delay = j->warn_delay};
}

/*
 * finished_quietly - the attempt left no recipient pending and owes no
 * report: nothing is recorded but the message's end. Any thread (reads
 * the job and the entry's envelope, which the loop leaves alone while the
 * entry is busy).
 */
static bool
finished_quietly(const struct djob *j)
{
    struct pst_dsn_attempt at = attempt_of(j);
    size_t left = pending_count(j->e) - j->n;   /* not in this attempt */

    for (size_t i = 0; i < j->n; i++)
        if (j->res[i].res != PST_DRES_OK && j->res[i].res != PST_DRES_PERM)
            left++;
    return left == 0 && !pst__dsn_any_owed(&at, j->expire_if_fail);
}

/* Worker thread: record what an attempt that did not finish quietly
 * left: per-recipient records, retry, expiry, or the durable end. */
static void
record(struct djob *j)
{
    struct qent *e = j->e;
    struct pst_tbuf b = {0};
    const char *first_err = NULL;
    struct pst_dsn_attempt at = attempt_of(j);
    size_t left = 0;

    if (pst__dsn_any_owed(&at, j->expire_if_fail)) {
        int drc = pst__dsn_read_original(&j->d.src, e->qid, &e->env,
                                         j->bounce_size_max, &j->orig);
        if (drc != 0)
            memset(&j->orig, 0, sizeof(j->orig));  /* report without it */
    }
    /* an earlier attempt's records were cut off (disk full): what it
     * found is known here only, so it goes first */
    for (size_t i = 0; e->unrecorded && i < e->env.nrcpts; i++)
        if (e->env.rcpts[i].state != PST_RCPT_PENDING)
            pst__rec_rcpt(&b, (uint32_t)i, e->env.rcpts[i].state, j->now,
                          e->rcpt_err[i]);
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
    if (j->all_done) {
        /* every copy is durable at its destination and the spool says so
         * durably: a resurrected message would deliver nothing */
        j->rec_err = pst__spool_done(j->sp, e->qid, &j->loc, &b);
        pst_tbuf_free(&b);
        return;
    }
    pst__rec_retry(&b, j->attempts, j->now + (time_t)j->delay, first_err);
    if (j->expire_if_fail)
        pst__rec_state(&b, PST_QSTATE_FAILED, j->now, "lifetime expired");
    j->rec_err = pst__spool_append(j->sp, e->qid, &j->loc, &b);
    pst_tbuf_free(&b);
    if (j->expire_if_fail && j->rec_err == 0) {
        int rc = pst__spool_move(j->sp, e->qid, &j->loc, PST_AREA_HOLD);
        if (j->loc.area == PST_AREA_HOLD)
            j->expired = true;          /* moved (a sync error is logged
                                           by nobody, as before) */
        else
            j->rec_err = rc;
    }
}

/* Worker thread: deliver (blocking transports), then record. */
static void
djob_work(struct pst_pool_job *w, void *tctx)
{
    struct djob *j = (struct djob *)w;
    struct qent *e = j->e;

    (void)tctx;
    if (!j->delivered) {
        int rc = pst__reader_open(&j->r, &j->d.src, e->qid);
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
        pst__spool_set_corrupt(j->sp, e->qid, &j->loc);
        return;
    }
    if (finished_quietly(j)) {
        /* Every copy is durable at its destination and nobody is owed a
         * report: the message goes without a last record and its own
         * sync. The removal reaches the disk with the spool's next sync
         * (shared with commits); a crash before it delivers these copies
         * again - the duplicate window (docs/SPOOL.md). */
        j->all_done = true;
        pst__spool_finished(j->sp, e->qid, &j->loc);
        return;
    }
    record(j);
}

static void
set_text(char **dst, const char *s)
{
    free(*dst);
    *dst = s ? pst_xstrdup(s) : NULL;
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

/* log_result - one recipient's result of attempt j: its log line and
 * postern_deliveries_total (loop thread). */
static void
log_result(struct djob *j, size_t i)
{
    struct pst_qmgr *qm = j->qm;
    const char *qid = j->e->qid;
    const struct pst_rcpt *r = &j->e->env.rcpts[j->idx[i]];
    const struct pst_rcpt_result *x = &j->res[i];
    char q[300], t[300];

    count_delivery(qm, x->route ? x->route : qm->o.default_route,
                   x->res == PST_DRES_OK     ? "delivered"
                   : x->res == PST_DRES_PERM ? "failed"
                                             : "deferred");
    pst_log_quote(q, sizeof(q), r->addr, strlen(r->addr));
    pst_log_quote(t, sizeof(t), x->text, strlen(x->text));
    if (x->res == PST_DRES_OK)
        pst_info("msg=%s event=delivered to=%s relay=%s status=%s", qid, q,
                 j->tp->name, t);
    else if (x->res == PST_DRES_PERM)
        pst_warn("msg=%s event=failed to=%s relay=%s status=%s", qid, q,
                 j->tp->name, t);
    else
        pst_info("msg=%s event=deferred to=%s relay=%s attempts=%u "
                 "delay=%u status=%s", qid, q, j->tp->name, j->attempts,
                 j->delay, t);
}

static void
djob_done(struct pst_pool_job *w, bool ran)
{
    struct djob *j = (struct djob *)w;
    struct pst_qmgr *qm = j->qm;
    struct qent *e = j->e;

    qm->inflight--;
    e->delivering = false;
    e->loc = j->loc;
    if (!ran) {
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
    for (size_t i = 0; i < j->n; i++) {
        struct pst_rcpt *r = &e->env.rcpts[j->idx[i]];
        const struct pst_rcpt_result *x = &j->res[i];
        if (!j->early[i])
            log_result(j, i);
        if (x->res == PST_DRES_OK) {
            r->state = PST_RCPT_DELIVERED;
            set_text(&e->rcpt_err[j->idx[i]], NULL);
        } else if (x->res == PST_DRES_PERM) {
            r->state = PST_RCPT_FAILED;
            set_text(&e->rcpt_err[j->idx[i]], x->text);
        } else {
            set_text(&e->rcpt_err[j->idx[i]], x->text);
            set_text(&e->last_error, x->text);
        }
    }
    if (j->rec_err)
        pst_err("msg=%s event=spool_update_error error=\"%s\"", e->qid,
                strerror(-j->rec_err));
    /* an attempt that left the message queued: whether its records made
     * it (else the next attempt's carry every recipient's state) */
    e->unrecorded = j->rec_err != 0;
    if (!qm->closing) {
        struct pst_dsn_attempt at = attempt_of(j);
        if (pst__dsn_report(qm->sp, qm->o.hostname, e->qid, &at, j->expired,
                            j->orig.p ? &j->orig : NULL))
            e->delay_warned = true;
    }
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
    free(j->early);
    free(j);
    schedule(qm);
}

/* The attempts finished on the loop: their done, outside the transport's
 * own callback (so it never sees the manager start a delivery from it). */
static void
quick_drain(struct pst_qmgr *qm)
{
    struct djob *j;

    while ((j = qm->quick) != NULL) {
        qm->quick = j->quick_next;
        if (qm->quick == NULL)
            qm->quick_tail = &qm->quick;
        djob_done(&j->w, true);
    }
}

static void
on_quick(uv_idle_t *h)
{
    struct pst_qmgr *qm = h->data;
    uv_idle_stop(h);
    quick_drain(qm);
}

/*
 * d->progress of an event-loop transport (loop thread): a route part of
 * the attempt has finished while a slower one goes on. Its recipients
 * delivered are recorded now, without a sync of their own
 * (pst__spool_note: a MARK or records in the page cache, which a crash of
 * postern leaves, made durable by the next sync of their segment or the
 * attempt's last record), so a kill meanwhile does not deliver their
 * copies again; and they are logged now. Left to the attempt's end: a
 * recipient owed a success report (its report follows its record) and
 * failures and deferrals (trying them again duplicates nothing).
 */
static void
on_progress(struct pst_delivery *d, const size_t *which, size_t n)
{
    struct djob *j = (struct djob *)((char *)d - offsetof(struct djob, d));
    struct pst_dsn_attempt at = attempt_of(j);
    size_t *rc = pst_xcalloc(n ? n : 1, sizeof(size_t)), k = 0;

    for (size_t x = 0; x < n; x++) {
        size_t i = which[x];
        if (j->res[i].res != PST_DRES_OK || j->early[i] ||
            pst__dsn_owed(&at, i, false) >= 0)
            continue;
        j->early[i] = true;
        rc[k++] = j->idx[i];
    }
    if (k > 0) {
        int err = pst__spool_note(j->sp, j->e->qid, &j->loc, rc, k, j->now);
        if (err != 0)               /* the attempt's end records them */
            pst_warn("msg=%s event=spool_update_error op=note "
                     "error=\"%s\"", j->e->qid, strerror(-err));
    }
    /* logged once recorded: a kill after the line finds the record */
    for (size_t x = 0; x < n; x++)
        if (j->early[which[x]])
            log_result(j, which[x]);
    free(rc);
}

/* d->done of an event-loop transport: loop thread. */
static void
on_delivered(struct pst_delivery *d)
{
    struct djob *j = (struct djob *)((char *)d - offsetof(struct djob, d));
    if (d->reader == NULL)
        j->r = NULL;                /* taken: the transport closed it */
    reader_finish(j);
    if (d->corrupt)
        j->corrupt = true;
    j->delivered = true;
    /* a deferral the route asked for (rate, dead host) sets the time */
    if (d->retry_after)
        j->delay = PST_MIN(j->delay, d->retry_after);
    if (!j->corrupt && !pst__spool_blocks(&j->loc) && finished_quietly(j)) {
        /* the common end of a message in the log: its MARK rewritten in
         * the page cache, here (one pwrite, as the commit's own write),
         * instead of a round trip to a worker thread */
        struct pst_qmgr *qm = j->qm;
        j->all_done = true;
        pst__spool_finished(j->sp, j->e->qid, &j->loc);
        j->quick_next = NULL;
        *qm->quick_tail = j;
        qm->quick_tail = &j->quick_next;
        if (!uv_is_active((uv_handle_t *)&qm->quick_idle))
            uv_idle_start(&qm->quick_idle, on_quick);
        return;
    }
    qm_run(j->qm, &j->w);
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
    j->sp = qm->sp;
    j->loc = e->loc;
    j->tp = qm->tp;
    j->route = qm->route;
    j->idx = pst_xcalloc(n, sizeof(size_t));
    j->res = pst_xcalloc(n, sizeof(*j->res));
    j->early = pst_xcalloc(n ? n : 1, sizeof(bool));
    for (size_t i = 0; i < e->env.nrcpts; i++)
        if (e->env.rcpts[i].state == PST_RCPT_PENDING)
            j->idx[j->n++] = i;
    j->d = (struct pst_delivery){
        .loop = qm->loop, .qid = e->qid, .env = &e->env,
        .n = j->n, .idx = j->idx, .res = j->res, .done = on_delivered,
        .progress = on_progress,
    };
    pst__spool_ref(qm->sp, &e->loc, &j->d.src);
    j->now = time(NULL);
    j->start_us = pst_monotonic_us();
    j->attempts = e->attempts + 1;
    j->delay = backoff(qm, j->attempts);
    j->expire_if_fail = uv_now(qm->loop) >= e->expire_at;
    j->bounce_size_max = qm->o.bounce_size_max;
    j->warn_delay = qm->o.delay_warning && !e->delay_warned &&
                    e->env.arrival &&
                    j->now - e->env.arrival >= (time_t)qm->o.delay_warning;
    e->delivering = true;
    qe_move(qm, e, QE_BUSY);
    qm->inflight++;
    if (j->tp->blocking) {
        qm_run(qm, &j->w);
        return;
    }
    /* event-loop transport: deliver here, record on a worker after */
    int rc = pst__reader_open(&j->r, &j->d.src, e->qid);
    if (rc != 0) {
        fail_all(j, rc);
        j->delivered = true;
        qm_run(qm, &j->w);
        return;
    }
    j->d.reader = j->r;
    j->tp->deliver(j->route, &j->d);
}

static void
schedule(struct pst_qmgr *qm)
{
    struct qent *e;

    if (!qm->started || qm->closing)
        return;
    if (qm->paused)
        return;
    while (qm->inflight < qm->o.concurrency &&
           (e = TAILQ_FIRST(&qm->ready)) != NULL) {
        if (pending_count(e) == 0) {
            /* all recipients finished before a crash; file left behind */
            pst__spool_remove(qm->sp, e->qid, &e->loc);
            pst_info("msg=%s event=removed", e->qid);
            qe_drop(qm, e);
            continue;
        }
        start_delivery(qm, e);
    }
}

/* ---- entries in ---- */

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

/* pst__qmgr_take - see qmgr.h. */
void
pst__qmgr_take(void *arg, struct pst_spool_entry *se)
{
    struct pst_qmgr *qm = arg;
    struct qent *e = pst_xcalloc(1, sizeof(*e));
    uint64_t now = uv_now(qm->loop);
    const struct qm_opts *o = &qm->o;

    memcpy(e->qid, se->qid, PST_QID_LEN + 1);
    e->env = se->env;
    memset(&se->env, 0, sizeof(se->env));
    e->rcpt_err = se->rcpt_err ? se->rcpt_err
                               : pst_xcalloc(e->env.nrcpts, sizeof(char *));
    se->rcpt_err = NULL;
    e->last_error = se->last_error;
    se->last_error = NULL;
    e->loc = se->loc;
    e->attempts = se->attempts;
    e->next_wall = se->next_attempt;
    if (!se->recovered) {           /* just committed */
        e->due = now;
        e->expire_at = now + (uint64_t)o->lifetime * 1000;
        if (e->loc.area == PST_AREA_HOLD) {     /* quarantined */
            e->state = PST_QSTATE_HELD;
            qe_insert(qm, e, QE_HELD);
            return;
        }
        e->state = PST_QSTATE_QUEUED;
        qe_insert(qm, e, QE_READY);
        schedule(qm);
        return;
    }
    /* wall-clock facts to capped monotonic deltas */
    time_t wall = time(NULL);
    int64_t left = (int64_t)e->env.arrival + o->lifetime - wall;
    left = PST_MAX(left, 0);
    left = PST_MIN(left, (int64_t)o->lifetime);
    e->expire_at = now + (uint64_t)left * 1000;
    int64_t wait = se->attempts ? (int64_t)se->next_attempt - wall : 0;
    wait = PST_MAX(wait, 0);
    wait = PST_MIN(wait, (int64_t)o->retry_max);
    e->due = now + (uint64_t)wait * 1000;
    if (e->loc.area == PST_AREA_HOLD) {
        /* the area decides: in the hold area means not scheduled */
        e->state = se->state == PST_QSTATE_FAILED ? PST_QSTATE_FAILED
                                                  : PST_QSTATE_HELD;
        qe_insert(qm, e, QE_HELD);
    } else {
        e->state = PST_QSTATE_QUEUED;
        qe_insert(qm, e, wait ? QE_WAIT : QE_READY);
    }
}

/* qm_submit - the delivery manager's blocking jobs (maildir parts). */
static void
qm_submit(void *ctx, struct pst_pool_job *w)
{
    qm_run(ctx, w);
}

static void
opts_copy(struct qm_opts *o, struct pst_conf *c)
{
    /* a generation from pst_conf_load is reference-counted; a caller-built
     * struct (refs 0, unit tests) must simply outlive the queue */
    o->conf = c;
    o->conf_ref = c->refs > 0;
    if (o->conf_ref)
        pst_conf_ref(o->conf);
    o->retry_min = c->delivery.retry_min ? c->delivery.retry_min : 60;
    o->retry_max = PST_MAX(c->delivery.retry_max, o->retry_min);
    o->lifetime = c->delivery.lifetime ? c->delivery.lifetime : 5 * 86400;
    o->concurrency = c->delivery.concurrency ? c->delivery.concurrency : 20;
    o->bounce_size_max = c->delivery.bounce_size_max;
    o->delay_warning = c->delivery.delay_warning;
    o->hostname = pst_xstrdup(c->hostname ? c->hostname : "localhost");
    o->default_route = pst_xstrdup(c->delivery.default_route
                                       ? c->delivery.default_route
                                       : "maildir:/var/mail/postern");
}

static void
qm_free(struct pst_qmgr *qm)
{
    if (qm->o.conf_ref)
        pst_conf_unref(qm->o.conf);
    free(qm->o.hostname);
    free(qm->o.default_route);
    pst_strmap_free(qm->m_deliveries, NULL);
    free(qm);
}

/* pst__qmgr_new - see qmgr.h. */
int
pst__qmgr_new(struct pst_qmgr **qmp, uv_loop_t *loop, struct pst_spool *sp,
              struct pst_conf *conf, struct pst_err *err)
{
    struct pst_qmgr *qm = pst_xcalloc(1, sizeof(*qm));
    const char *arg, *route;
    char why[256] = "";
    int rc;

    qm->sp = sp;
    qm->loop = loop;
    opts_copy(&qm->o, conf);
    route = qm->o.default_route;
    qm->timer_due = UINT64_MAX;
    TAILQ_INIT(&qm->ready);
    TAILQ_INIT(&qm->wait);
    TAILQ_INIT(&qm->held);
    TAILQ_INIT(&qm->busy);
    qm->rng = pst_rand_seed();
    qm->m_attempt = pst_metric_histogram(
        "postern_delivery_attempt_duration_seconds",
        "One delivery attempt of one message: from its start to its "
        "results recorded in the spool.",
        &pst_buckets_latency, NULL);
    qm->tp = pst_transport_find(route, &arg);
    if (qm->tp == NULL) {
        pst_err_add(err, NULL, 0, "delivery.default_route: unknown "
                    "transport in \"%s\" (known: maildir:DIR, smtp:, "
                    "lmtp:, mx)", route);
        rc = -EINVAL;
        goto fail;
    }
    /* routes by domain: the delivery manager takes every recipient */
    if (conf->delivery.nroutes > 0)
        qm->tp = &pst_transport_relay;
    if (qm->tp == &pst_transport_relay) {
        struct pst_deliver *dm = NULL;
        if ((rc = pst_deliver_new(&dm, qm->loop, conf, qm_submit, qm,
                                  err)) != 0)
            goto fail;
        qm->route = dm;
    } else if ((rc = qm->tp->route_new(qm->loop, arg, &qm->route, why,
                                       sizeof(why))) != 0) {
        pst_err_add(err, NULL, 0, "delivery.default_route \"%s\": %s",
                    route, why);
        goto fail;
    }
    if ((rc = uv_timer_init(qm->loop, &qm->timer)) != 0)
        goto fail_route;
    qm->timer.data = qm;
    qm->timer_open = true;
    qm->handles = 1;
    qm->quick_tail = &qm->quick;
    if (uv_idle_init(qm->loop, &qm->quick_idle) == 0) {
        qm->quick_idle.data = qm;
        qm->handles++;
    }
    unsigned threads = PST_MIN(qm->o.concurrency, PST_QMGR_THREADS);
    /* no bound of the pool's own: every job is embedded in a queue entry
     * that is busy (one job at a time) or in a maildir part of a delivery
     * in flight, so the jobs are as many as those */
    struct pst_pool_opts po = {.name = "pst-deliver",
                               .threads = PST_MAX(threads, 1u)};
    if ((rc = pst_pool_new(&qm->pool, qm->loop, &po)) != 0) {
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
    qm_free(qm);
    return rc;
}

void
pst__qmgr_start(struct pst_qmgr *qm)
{
    qm->started = true;
    schedule(qm);
}

static void
on_handle_closed(uv_handle_t *h)
{
    struct pst_qmgr *qm = h->data;
    if (--qm->handles == 0)
        qm_free(qm);
}

void
pst__qmgr_close(struct pst_qmgr *qm)
{
    struct qent *e;

    if (qm == NULL)
        return;
    qm->started = false;
    qm->closing = true;
    /* an event-loop transport finishes (d->done) what it has in flight
     * while the pool still takes the record jobs; a blocking one is freed
     * only after the workers using it have stopped */
    if (!qm->tp->blocking)
        qm->tp->route_free(qm->route);
    pst_pool_close(qm->pool);       /* runs outstanding done callbacks */
    qm->pool = NULL;
    quick_drain(qm);
    struct qentl *ls[] = {&qm->ready, &qm->wait, &qm->held, &qm->busy};
    for (size_t i = 0; i < PST_ARRAY_LEN(ls); i++)
        while ((e = TAILQ_FIRST(ls[i])) != NULL)
            qe_drop(qm, e);
    if (qm->tp->blocking)
        qm->tp->route_free(qm->route);
    if (qm->timer_open) {
        uv_timer_stop(&qm->timer);
        uv_close((uv_handle_t *)&qm->timer, on_handle_closed);
        if (qm->handles > 1)
            uv_close((uv_handle_t *)&qm->quick_idle, on_handle_closed);
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

/* pst__qmgr_stats - see qmgr.h. */
void
pst__qmgr_stats(struct pst_qmgr *qm, struct pst_queue_stats *st)
{
    struct qentl *ls[] = {&qm->ready, &qm->wait, &qm->held, &qm->busy};
    struct qent *e;

    st->queued = qm->count;
    st->delivering = qm->inflight;
    st->active = qm->nlist[QE_READY] + qm->nlist[QE_BUSY];
    st->deferred = qm->nlist[QE_WAIT];
    st->held = qm->nlist[QE_HELD];
    /* one pass over the queue, about once a second (the metrics tick) */
    st->oldest_arrival = 0;
    for (size_t i = 0; i < PST_ARRAY_LEN(ls); i++)
        TAILQ_FOREACH(e, ls[i], link)
            if (e->env.arrival > 0 && (st->oldest_arrival == 0 ||
                                       e->env.arrival < st->oldest_arrival))
                st->oldest_arrival = e->env.arrival;
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
    struct pst_pool_job w;
    struct pst_qmgr *qm;
    struct qent *e;
    struct opbatch *b;
    enum qe_where prev;
    struct pst_spool *sp;
    struct pst_spool_loc loc;   /* the entry's, written back when done */
    time_t now;
    int status;
};

/* Move to area `to`, then record the new state there. */
static int
move_and_state(struct ojob *j, enum pst_spool_area to, enum pst_qstate st,
               const char *why)
{
    struct pst_tbuf b = {0};
    int rc = pst__spool_move(j->sp, j->e->qid, &j->loc, to);

    if (rc != 0)
        return rc;
    pst__rec_state(&b, st, j->now, why);
    rc = pst__spool_append(j->sp, j->e->qid, &j->loc, &b);
    pst_tbuf_free(&b);
    return rc;
}

static void
ojob_work(struct pst_pool_job *w, void *tctx)
{
    struct ojob *j = (struct ojob *)w;

    switch (j->b->op) {
    case PST_QOP_DELETE:
        j->status = pst__spool_delete(j->sp, j->e->qid, &j->loc);
        break;
    case PST_QOP_HOLD:
        j->status = move_and_state(j, PST_AREA_HOLD, PST_QSTATE_HELD,
                                   "held by the operator");
        break;
    case PST_QOP_RELEASE:
        j->status = move_and_state(j, PST_AREA_ACTIVE, PST_QSTATE_QUEUED,
                                   "released by the operator");
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
ojob_done(struct pst_pool_job *w, bool ran)
{
    struct ojob *j = (struct ojob *)w;
    struct pst_qmgr *qm = j->qm;
    struct qent *e = j->e;
    struct opbatch *b = j->b;
    static const char *const ev[] = {"deleted", "hold", "release"};

    e->loc = j->loc;
    if (ran && j->status == 0) {
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
        int err = !ran ? -ECANCELED : j->status;
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
    j->sp = qm->sp;
    j->loc = e->loc;
    j->now = time(NULL);
    b->left++;
    qe_move(qm, e, QE_BUSY);
    qm_run(qm, &j->w);
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
    if (qm->closing || qm->pool == NULL) {
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

/* ---- views for the control socket ---- */

static const char *
qe_state_name(const struct qent *e)
{
    if (e->delivering)
        return "delivering";
    if (e->where == QE_HELD || e->state != PST_QSTATE_QUEUED)
        return e->state == PST_QSTATE_FAILED ? "failed" : "held";
    return e->attempts ? "deferred" : "queued";
}

static void
qe_view(const struct qent *e, pst_qview_fn fn, void *arg)
{
    struct pst_qview v = {
        .qid = e->qid, .size = e->loc.size, .env = &e->env,
        .rcpt_err = (const char *const *)e->rcpt_err,
        .last_error = e->last_error, .state = qe_state_name(e),
        .attempts = e->attempts,
        .next_attempt = e->attempts && e->where != QE_HELD ? e->next_wall
                                                            : 0,
    };
    fn(arg, &v);
}

/* pst__qmgr_each - see qmgr.h. */
unsigned
pst__qmgr_each(struct pst_qmgr *qm, pst_qview_fn fn, void *arg)
{
    struct qentl *ls[] = {&qm->busy, &qm->ready, &qm->wait, &qm->held};
    struct qent *e;
    unsigned n = 0;

    for (size_t i = 0; i < PST_ARRAY_LEN(ls); i++)
        TAILQ_FOREACH(e, ls[i], link) {
            qe_view(e, fn, arg);
            n++;
        }
    return n;
}

/* pst__qmgr_view - see qmgr.h. */
int
pst__qmgr_view(struct pst_qmgr *qm, const char *qid, pst_qview_fn fn,
               void *arg)
{
    struct qent *e = qe_find(qm, qid);
    if (e == NULL)
        return -ENOENT;
    qe_view(e, fn, arg);
    return 0;
}
