/*
 * qmgr.h - the queue manager, as the front (queue/queue.c) and the control
 * socket (queue/control.c) see it. Internal to queue/.
 *
 * The manager schedules committed messages, delivers them through their
 * transport, records results through the spool's storage operations,
 * retries, expires and carries out the operator's commands. It reads the
 * storage through queue/spool_int.h and never the other way round; it
 * formats nothing for the control socket: control.c reads a view of each
 * message (struct pst_qview) and writes its own text or JSON.
 *
 * Everything here runs on the loop thread.
 */
#ifndef PST_QUEUE_QMGR_H
#define PST_QUEUE_QMGR_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "conf/conf.h"
#include "queue/queue.h"
#include "queue/spool_int.h"

struct pst_qmgr;

/*
 * pst__qmgr_new - an empty manager over sp, with the delivery settings
 * and routes of conf (a reference is kept). Nothing is scheduled before
 * pst__qmgr_start. 0 or -errno with err filled.
 */
int pst__qmgr_new(struct pst_qmgr **qm, uv_loop_t *loop, struct pst_spool *sp,
                  struct pst_conf *conf, struct pst_err *err);
/* pst__qmgr_take - the spool's sink: a committed or recovered message. */
void pst__qmgr_take(void *qm, struct pst_spool_entry *e);
void pst__qmgr_start(struct pst_qmgr *qm);
/*
 * pst__qmgr_close - stop scheduling; deliveries in flight finish (their
 * results are recorded, no report is sent any more) and the manager's
 * memory goes when the loop next runs. The spool must stay open until
 * this returns.
 */
void pst__qmgr_close(struct pst_qmgr *qm);
void pst__qmgr_pause(struct pst_qmgr *qm, bool paused);
/* pst__qmgr_stats - fill the manager's part of st (counts by state). */
void pst__qmgr_stats(struct pst_qmgr *qm, struct pst_queue_stats *st);

/* A read-only view of one queued message, valid during the callback. */
struct pst_qview {
    const char *qid;
    uint64_t size;
    const struct pst_envelope *env;
    const char *const *rcpt_err;    /* per recipient, NULL or text */
    const char *last_error;
    const char *state;              /* queued deferred delivering held
                                       failed */
    unsigned attempts;
    time_t next_attempt;            /* wall clock; 0 if none or held */
};

typedef void (*pst_qview_fn)(void *arg, const struct pst_qview *v);

/* pst__qmgr_each - every message: delivering, ready, deferred, held. */
unsigned pst__qmgr_each(struct pst_qmgr *qm, pst_qview_fn fn, void *arg);
/* pst__qmgr_view - one message by ID; -ENOENT if it is not queued. */
int pst__qmgr_view(struct pst_qmgr *qm, const char *qid, pst_qview_fn fn,
                   void *arg);
/* pst__qmgr_flush - every deferred message due now; how many. */
unsigned pst__qmgr_flush(struct pst_qmgr *qm);

/* pst__queue_qmgr - the manager of a queue (queue.c; for unit tests). */
struct pst_qmgr *pst__queue_qmgr(struct pst_queue *q);

enum pst_qop { PST_QOP_DELETE, PST_QOP_HOLD, PST_QOP_RELEASE };
typedef void (*pst_qop_cb)(void *arg, int status, const char *text);
/* pst__qmgr_op - qid NULL means all (delete only); cb runs once, later
 * or (for a refusal) at once. */
void pst__qmgr_op(struct pst_qmgr *qm, enum pst_qop op, const char *qid,
                  pst_qop_cb cb, void *arg);

#endif
