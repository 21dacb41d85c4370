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

struct pst_seg;

struct pst_spool_loc {
    enum pst_spool_area area;   /* a file's directory (log: active) */
    struct pst_seg *seg;        /* the log segment holding its group (one
                                   reference), NULL for a message file */
    uint64_t group_off;         /* log: the group's MARK */
    uint32_t seed;              /* CRC seed: the segment's salt, 0 */
    uint64_t data_off;          /* first CHUNK record */
    uint64_t env_off;           /* ENVELOPE record = end of the text */
    uint64_t edits_off;         /* EDITS record, 0 if none */
    uint64_t size;              /* message bytes */
    uint64_t file_size;         /* file: the end of its last good record
                                   (where the next is appended); log: the
                                   group's end */
    uint32_t marked;            /* log: the recipients its MARK says
                                   delivered (bit i: recipient i) */
    bool torn;                  /* file: bytes past file_size may remain
                                   from a failed append that could not be
                                   cut off: cut them before appending */
};

/*
 * A log segment (queue/segment.c, docs/SPOOL.md "Segments"). Never freed
 * before the spool closes, except by the sync thread once it holds no
 * message (refs 0) and nobody else can reach it.
 */
enum pst_seg_state {
    PST_SEG_SPARE,              /* free, on sp->spares */
    PST_SEG_READY,              /* prepared: sp->ready */
    PST_SEG_HEAD,               /* appended to by the loop */
    PST_SEG_SEALED,             /* full, or from before this run */
};

struct pst_seg {
    TAILQ_ENTRY(pst_seg) link;  /* sp->segs: every segment (mu) */
    TAILQ_ENTRY(pst_seg) qlink; /* sp->spares, sp->dirty or sp->reclaim */
    int fd;
    unsigned id;                /* the file log/seg-<id> */
    uint32_t salt;              /* this use's CRC seed */
    uint64_t incarnation;
    uint64_t cap;               /* the file's size */
    uint64_t tail;              /* next group's offset (head: loop only) */
    atomic_uint refs;           /* live messages, +1 while the head */
    enum pst_seg_state state;   /* (mu) */
    bool queued;                /* on sp->dirty or sp->reclaim (mu) */
    bool dirty;                 /* MARKs written since its last sync (mu) */
    atomic_bool broken;         /* a sync failed: never appended to again */
};
TAILQ_HEAD(pst_segl, pst_seg);

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
    time_t created;
    int fd;                     /* the message file, -1 while in memory */
    int err;                    /* first write error, sticky */
    uint8_t *buf;               /* PST_GROUP_PREFIX + text + 4 (a CHUNK
                                   record's crc), allocated lazily */
    size_t cap;                 /* text room in buf (grows to
                                   PST_CHUNK_MAX) */
    size_t fill;                /* text bytes in buf */
    uint64_t off;               /* bytes in the file */
    uint64_t size;              /* message bytes */
    uint64_t data_off;
    uint64_t env_off;
    uint64_t edits_off;
    struct pst_seg *seg;        /* committed into the log: its segment
                                   (one reference) */
    uint64_t group_off, group_end;
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
    int dirfd, incfd, actfd, holdfd, corfd, lockfd;     /* closed in this
                                                           order */
    uint64_t gen;               /* this run's generation (QID high bits) */
    uint64_t seq;               /* QID low bits */
    unsigned open_msgs;         /* new, not yet committed or aborted */
    pst_spool_sink sink;        /* told of each commit (loop thread) */
    void *sink_arg;

    /* the log (queue/segment.c): the head belongs to the loop thread;
     * the lists, `ready` and the segments' states to mu */
    int logfd;
    uint64_t seg_size;          /* of new segments (queue.segment_size) */
    struct pst_seg *head;
    struct pst_segl segs;       /* every segment */
    struct pst_segl spares;     /* free, to be put to use */
    struct pst_segl dirty;      /* MARKs waiting for a sync */
    struct pst_segl reclaim;    /* no message left: for the sync thread */
    struct pst_seg *ready;      /* prepared for the loop */
    unsigned nspares;
    unsigned next_id;
    uint64_t incarnation;
    pthread_t seg_thr;          /* prepares segments */
    bool seg_started;
    pthread_cond_t seg_cv;
    uint64_t prep_retry;        /* monotonic ms: after a failed prepare */

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
    atomic_ullong n_log;        /* messages committed into the log */
    atomic_ullong n_prepared;   /* segments put to use */
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
 * sync them; a message in the log is first copied to a file in active/
 * (loc updated). Records go right after the file's last good record, and
 * a failed or short write is cut off again (docs/SPOOL.md, "Appending
 * records"): a record is never written after one that is not whole. */
int pst__spool_append(struct pst_spool *sp, const char *qid,
                      struct pst_spool_loc *loc,
                      const struct pst_tbuf *recs);
/* pst__spool_note - n recipients (indexes into the envelope) were
 * delivered while the rest of the attempt goes on: recorded at once,
 * without a sync of their own - in the MARK of a message in the log (the
 * first PST_MARK_RCPTS recipients; synced with the segment's next sync),
 * as RCPT records appended to a file (synced by the attempt's last
 * record). Loop thread: page-cache writes only. */
int pst__spool_note(struct pst_spool *sp, const char *qid,
                    struct pst_spool_loc *loc, const size_t *rcpts, size_t n,
                    time_t when);
/* pst__spool_finished - every recipient is done and nothing records it:
 * the message goes; the removal reaches the disk with the sync thread's
 * next sync, shared with the commits' (the duplicate window). For a
 * message in the log this is one pwrite: see pst__spool_blocks. */
void pst__spool_finished(struct pst_spool *sp, const char *qid,
                         const struct pst_spool_loc *loc);
/* pst__spool_blocks - whether pst__spool_finished on loc may block (a
 * message file: unlink), or only writes into the page cache (the log). */
bool pst__spool_blocks(const struct pst_spool_loc *loc);
/* pst__spool_done - every recipient is done and recs (RCPT records) say
 * so: the message goes, durably (a copy that comes back after a crash
 * delivers nothing). */
int pst__spool_done(struct pst_spool *sp, const char *qid,
                    const struct pst_spool_loc *loc,
                    const struct pst_tbuf *recs);
/* pst__spool_remove - the message goes, its records having said before
 * that it is done (found so at recovery). */
void pst__spool_remove(struct pst_spool *sp, const char *qid,
                       const struct pst_spool_loc *loc);
/* pst__spool_delete - the operator's delete: gone, durably. An error
 * leaves the message as it was; a failed sync after it was gone is only
 * logged (a crash may bring it back). */
int pst__spool_delete(struct pst_spool *sp, const char *qid,
                      const struct pst_spool_loc *loc);
/* pst__spool_move - into the hold area or back (loc->area updated),
 * durably; a message in the log is copied to a file there. */
int pst__spool_move(struct pst_spool *sp, const char *qid,
                    struct pst_spool_loc *loc, enum pst_spool_area to);
/* pst__spool_set_corrupt - its data failed a check: moved (a group:
 * copied) to corrupt/, never deleted. */
void pst__spool_set_corrupt(struct pst_spool *sp, const char *qid,
                            const struct pst_spool_loc *loc);
/* queue/segment.c, for spool.c */
int pst__log_open(struct pst_spool *sp, struct pst_err *err);
/* pst__log_recover - scan log/ (after the message files: files names the
 * IDs found there, which win over a live group); hands live groups to
 * sink; then starts the segment thread. */
int pst__log_recover(struct pst_spool *sp, const void *files,
                     pst_spool_sink sink, void *arg, uint64_t *gen_max,
                     unsigned *loaded, struct pst_err *err);
/* pst__log_append - write the group of m (text in m->buf, envelope and
 * edits) into the head segment (loop thread): 0 (m->seg and the offsets
 * set, with a reference on the segment), -EAGAIN (too large, or no
 * segment ready: commit it as a file) or -errno. */
int pst__log_append(struct pst_spool *sp, struct pst_spool_msg *m);
/* pst__log_mark - rewrite a group's MARK (any thread holding the
 * message's reference): state m, and for a live one the recipients
 * delivered (rcpts, bit i: recipient i). The segment is synced soon by
 * the sync thread, or now when sync (a failed sync breaks it). An error
 * writing it leaves the MARK as it was. The reference stays the caller's:
 * see pst__log_release. */
int pst__log_mark(struct pst_spool *sp, struct pst_seg *seg, uint64_t off,
                  enum pst_mark m, uint32_t rcpts, bool sync);
/* pst__log_release - the message leaves the segment (its MARK says so, or
 * it goes although the MARK could not be written: a crash brings it back,
 * a duplicate at worst): its reference goes; the last queues the segment
 * for reclaim. */
void pst__log_release(struct pst_spool *sp, struct pst_seg *seg);
/* pst__log_reclaim - segments with no message left (sp->reclaim): their
 * MARKs synced, then kept as spares or unlinked (the sync thread). */
void pst__log_reclaim(struct pst_spool *sp);
void pst__log_close(struct pst_spool *sp);
/* pst__sync_fd - fsync (or fdatasync when data) counted in the stats;
 * pst__sync_raw the same, not counted. Compiled out in postern-nosync. */
int pst__sync_fd(struct pst_spool *sp, int fd, bool data);
int pst__sync_raw(int fd, bool data);

/* pst__spool_ref - where a transport reads the message's text. */
void pst__spool_ref(struct pst_spool *sp, const struct pst_spool_loc *loc,
                    struct pst_spool_ref *ref);

#endif
