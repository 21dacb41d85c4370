/*
 * queue.c - the queue's front: opens the spool (storage), the queue
 * manager (delivery) and the control socket, in that order, and closes
 * them in reverse.
 *
 * The order is the dependency order: the manager works on what the spool
 * stores and recovers, the control socket on the manager's messages.
 * Nothing below points back up: the spool tells whoever the front names
 * (the manager) of each recovered and committed message through a sink,
 * the manager asks the spool for storage operations, control.c asks the
 * manager for views and operations. Closing in reverse means a commit that
 * finishes while the queue closes is durable and answered, but no longer
 * scheduled (the next start finds it), and a delivery that finishes while
 * the manager closes still has its results stored by the open spool.
 */
#include "queue/queue.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "queue/control.h"
#include "queue/qmgr.h"
#include "queue/spool_int.h"

struct pst_queue {
    struct pst_spool *sp;
    struct pst_qmgr *qm;
    struct pst_control *ctl;
};

/* pst_queue_open - see queue.h. */
int
pst_queue_open(struct pst_queue **qp, uv_loop_t *loop, struct pst_conf *conf,
               struct pst_err *err)
{
    struct pst_queue *q = pst_xcalloc(1, sizeof(*q));
    int rc;

    if ((rc = pst_spool_open(&q->sp, loop, conf, err)) != 0)
        goto fail;
    if ((rc = pst__qmgr_new(&q->qm, loop, q->sp, conf, err)) != 0)
        goto fail;
    if ((rc = pst__spool_recover(q->sp, pst__qmgr_take, q->qm, err)) != 0)
        goto fail;
    pst__spool_set_sink(q->sp, pst__qmgr_take, q->qm);
    char *path = conf->queue.control_socket && conf->queue.control_socket[0]
                     ? pst_xstrdup(conf->queue.control_socket)
                     : pst_xasprintf("%s/control.sock", q->sp->dir);
    rc = pst__control_start(&q->ctl, loop, q->qm, path, q->sp->control_group,
                            err);
    free(path);
    if (rc != 0)
        goto fail;
    pst__qmgr_start(q->qm);
    *qp = q;
    return 0;
fail:
    pst_queue_close(q);
    return rc;
}

/* pst_queue_close - see queue.h. */
void
pst_queue_close(struct pst_queue *q)
{
    if (q->ctl)
        pst__control_close(q->ctl);
    if (q->qm) {
        pst__spool_set_sink(q->sp, NULL, NULL);
        pst__qmgr_close(q->qm);
    }
    if (q->sp)
        pst_spool_close(q->sp);
    free(q);
}

/* pst_queue_spool - see queue.h. */
struct pst_spool *
pst_queue_spool(struct pst_queue *q)
{
    return q->sp;
}

/* pst__queue_qmgr - see qmgr.h. */
struct pst_qmgr *
pst__queue_qmgr(struct pst_queue *q)
{
    return q->qm;
}

/* pst_queue_pause - see queue.h. */
void
pst_queue_pause(struct pst_queue *q, bool paused)
{
    pst__qmgr_pause(q->qm, paused);
}

/* pst_queue_stats - see queue.h. */
void
pst_queue_stats(struct pst_queue *q, struct pst_queue_stats *st)
{
    struct pst_spool_stats ss;

    memset(st, 0, sizeof(*st));
    pst_spool_stats(q->sp, &ss);
    st->fsyncs = ss.fsyncs;
    st->batches = ss.batches;
    st->committed = ss.committed;
    st->log = ss.log;
    st->prepared = ss.prepared;
    st->segments = ss.segments;
    pst__qmgr_stats(q->qm, st);
}
