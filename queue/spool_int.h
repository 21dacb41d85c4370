/*
 * spool_int.h - what the files of queue/ share about the spool, the queue
 * manager and the control server. Not for use outside queue/.
 */
#ifndef PST_QUEUE_SPOOL_INT_H
#define PST_QUEUE_SPOOL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/queue.h>
#include <uv.h>

#include "queue/record.h"
#include "queue/spool.h"

/* The settings the spool keeps: copied at open, so a config reload that
 * drops its generation never pulls strings from under the queue. */
struct pst_spool_opts {
    char *dir;
    char *control_socket;
    char *control_group;
    char *default_route;
    unsigned retry_min;
    unsigned retry_max;
    unsigned lifetime;
    unsigned concurrency;
    struct pst_conf *conf;      /* a reference: routes and the client's
                                   settings (queue/deliver.c) */
    bool conf_ref;
};

TAILQ_HEAD(pst_msgl, pst_spool_msg);

struct pst_spool_msg {
    TAILQ_ENTRY(pst_spool_msg) link;
    struct pst_spool *sp;
    char qid[PST_QID_LEN + 1];
    int fd;
    int err;                    /* first write error, sticky */
    uint8_t *buf;               /* PST_SPOOL_WBUF: one CHUNK record */
    size_t fill;                /* payload bytes in buf */
    uint64_t off;               /* bytes in the file */
    uint64_t size;              /* message bytes */
    uint64_t data_off;
    uint64_t env_off;
    struct pst_envelope env;    /* copy taken at commit */
    pst_spool_commit_cb cb;
    void *cb_arg;
    int status;                 /* sync thread result */
    bool renamed;               /* now in active/ (or hold/) */
    bool hold;                  /* quarantine: commit into hold/ */
    char *hold_reason;
    uint8_t *edits;             /* filter edit blob (queue/edits.h) */
    size_t edits_len;
};

struct pst_qmgr;
struct pst_spool_reader;
struct pst_control;
struct pst_metric;

struct pst_spool {
    uv_loop_t *loop;
    struct pst_spool_opts o;
    int dirfd, incfd, actfd, holdfd, corfd, lockfd;
    uint64_t gen;               /* this run's generation (QID high bits) */
    uint64_t seq;               /* QID low bits */
    unsigned open_msgs;         /* new, not yet committed or aborted */

    /* sync thread: pending -> (fsync, rename, dir fsync) -> done */
    pthread_t sync_thr;
    bool sync_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pst_msgl pending;
    struct pst_msgl done;
    bool removals;              /* files unlinked from active/ since the
                                   last sync of active/ */
    bool stop;
    uv_async_t async;
    unsigned handles;           /* open uv handles owned directly */

    atomic_ullong n_fsync;      /* statistics (pst_spool_stats) */
    atomic_ullong n_batches;
    atomic_ullong n_committed;
    struct pst_metric *m_batch; /* messages per group commit */

    struct pst_qmgr *qm;
    struct pst_control *ctl;
    bool closing;
};

/*
 * pst__spool_removed - a finished file was unlinked from active/: the sync
 * thread syncs active/ soon, shared with the commits' directory syncs.
 * Any thread.
 */
void pst__spool_removed(struct pst_spool *sp);

/* QIDs: 16 hex digits, generation (24 bits) then sequence (40 bits). */
#define PST_QID_SEQ_BITS 40

bool pst__qid_valid(const char *name);

/* queue/qmgr.c */
int pst__qmgr_new(struct pst_qmgr **qm, struct pst_spool *sp,
                  struct pst_err *err);
/* pst__qmgr_load - take over a recovered file (scan contents moved). */
void pst__qmgr_load(struct pst_qmgr *qm, struct pst_scan *s, bool held);
void pst__qmgr_start(struct pst_qmgr *qm);
/* pst__qmgr_add - a message just committed to active/ (env moved). */
void pst__qmgr_add(struct pst_qmgr *qm, const char *qid,
                   struct pst_envelope *env, uint64_t data_off,
                   uint64_t env_off, uint64_t size, uint64_t file_size,
                   bool held);
void pst__qmgr_close(struct pst_qmgr *qm);
void pst__qmgr_pause(struct pst_qmgr *qm, bool paused);
/* pst__qmgr_counts - the queue's sizes into st (loop thread). */
void pst__qmgr_counts(struct pst_qmgr *qm, struct pst_spool_stats *st);

/* Queue control operations (queue/control.c calls these). */
enum pst_qop { PST_QOP_DELETE, PST_QOP_HOLD, PST_QOP_RELEASE };
typedef void (*pst_qop_cb)(void *arg, int status, const char *text);
void pst__qmgr_list(struct pst_qmgr *qm, struct pst_tbuf *out, bool json);
int pst__qmgr_show(struct pst_qmgr *qm, const char *qid,
                   struct pst_tbuf *out, bool json);
unsigned pst__qmgr_flush(struct pst_qmgr *qm);
/* pst__qmgr_op - qid NULL means all (delete only); cb runs once, later. */
void pst__qmgr_op(struct pst_qmgr *qm, enum pst_qop op, const char *qid,
                  pst_qop_cb cb, void *arg);

/* queue/control.c */
int pst__control_start(struct pst_control **ctl, struct pst_spool *sp,
                       struct pst_err *err);
void pst__control_close(struct pst_control *ctl);

/* queue/reader.c */
int pst__reader_open(struct pst_spool_reader **rp, int dirfd,
                     const char *name, uint64_t data_off, uint64_t data_end,
                     uint64_t size);
void pst__reader_close(struct pst_spool_reader *r);

/* pst__put_json_str - s as a JSON string, for the control output. */
void pst__put_json_str(struct pst_tbuf *b, const char *s);

#endif
