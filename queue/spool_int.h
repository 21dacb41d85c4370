/*
 * spool_int.h - the storage side of the queue, as the other files of
 * queue/ see it: the spool's state, where a committed message is kept
 * (struct pst_spool_loc, opaque to its users), and the operations the
 * queue manager may ask of the storage. Not for use outside queue/.
 *
 * The spool knows nothing of delivery: it receives, commits, recovers and
 * carries out storage operations. Who is told of a committed or recovered
 * message is a callback given by queue/queue.c, the front that opens the
 * spool, the manager and the control socket.
 */
#ifndef PST_QUEUE_SPOOL_INT_H
#define PST_QUEUE_SPOOL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/queue.h>
#include <uv.h>

#include "queue/record.h"
#include "queue/reader.h"
#include "queue/spool.h"

/* Where a committed message is kept. Set by the spool; the manager keeps
 * it with the message and hands it back to the operations below. */
enum pst_spool_area { PST_AREA_ACTIVE, PST_AREA_HOLD };

struct pst_spool_loc {
    enum pst_spool_area area;
    uint64_t data_off;          /* first CHUNK record */
    uint64_t env_off;           /* ENVELOPE record = end of the text */
    uint64_t size;              /* message bytes */
    uint64_t file_size;
};

/* A committed or recovered message, handed to the spool's consumer. The
 * consumer takes what it keeps (pointers moved out are set to NULL). */
struct pst_spool_entry {
    char qid[PST_QID_LEN + 1];
    struct pst_spool_loc loc;
    struct pst_envelope env;
    char **rcpt_err;            /* env.nrcpts entries or NULL */
    char *last_error;
    unsigned attempts;
    time_t next_attempt;        /* wall clock, 0 = none recorded */
    enum pst_qstate state;      /* as recorded by STATE records */
    bool recovered;             /* found at open, not just committed */
};

/* pst_spool_sink - a message was committed (loop thread) or recovered. */
typedef void (*pst_spool_sink)(void *arg, struct pst_spool_entry *e);

struct pst_metric;

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

struct pst_spool {
    uv_loop_t *loop;
    char *dir;
    char *control_group;        /* the directory's group (0710), or NULL */
    int dirfd, incfd, actfd, holdfd, corfd, lockfd;
    uint64_t gen;               /* this run's generation (QID high bits) */
    uint64_t seq;               /* QID low bits */
    unsigned open_msgs;         /* new, not yet committed or aborted */
    pst_spool_sink sink;        /* told of each commit (loop thread) */
    void *sink_arg;

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

    bool closing;
};

/* QIDs: 16 hex digits, generation (24 bits) then sequence (40 bits). */
#define PST_QID_SEQ_BITS 40

bool pst__qid_valid(const char *name);

/*
 * pst__spool_recover - hand every committed message found at open to
 * sink (once each, before any new commit), then start the run's queue-ID
 * generation. Called once, by the front, after pst_spool_open. 0 or
 * -errno with err filled.
 */
int pst__spool_recover(struct pst_spool *sp, pst_spool_sink sink, void *arg,
                       struct pst_err *err);
/* pst__spool_set_sink - who is told of new commits (NULL: nobody). */
void pst__spool_set_sink(struct pst_spool *sp, pst_spool_sink sink,
                         void *arg);

/*
 * Storage operations on a committed message, for the queue manager. They
 * block on the disk: worker threads only (pst__spool_remove also on the
 * loop, it does not sync). 0 or -errno.
 */
/* pst__spool_append - append update records (RCPT, RETRY, STATE) and
 * sync them. */
int pst__spool_append(struct pst_spool *sp, const char *qid,
                      const struct pst_spool_loc *loc,
                      const struct pst_tbuf *recs);
/* pst__spool_finished - every recipient is done and nothing records it:
 * the message goes; the removal reaches the disk with the sync thread's
 * next sync, shared with the commits' (the duplicate window). */
void pst__spool_finished(struct pst_spool *sp, const char *qid,
                         const struct pst_spool_loc *loc);
/* pst__spool_remove - the message goes, its records having said it is
 * done (a copy that comes back after a crash delivers nothing). */
void pst__spool_remove(struct pst_spool *sp, const char *qid,
                       const struct pst_spool_loc *loc);
/* pst__spool_delete - the operator's delete: gone, durably. */
int pst__spool_delete(struct pst_spool *sp, const char *qid,
                      const struct pst_spool_loc *loc);
/* pst__spool_move - into the hold area or back (loc->area updated),
 * durably. */
int pst__spool_move(struct pst_spool *sp, const char *qid,
                    struct pst_spool_loc *loc, enum pst_spool_area to);
/* pst__spool_set_corrupt - its data failed a check: moved to corrupt/,
 * never deleted. */
void pst__spool_set_corrupt(struct pst_spool *sp, const char *qid,
                            const struct pst_spool_loc *loc);
/* pst__spool_ref - where a transport reads the message's text. */
void pst__spool_ref(struct pst_spool *sp, const struct pst_spool_loc *loc,
                    struct pst_spool_ref *ref);

#endif
