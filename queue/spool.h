/*
 * spool.h - the durable on-disk queue, as the gateway sees it.
 *
 * A message is received into a spool file while it streams (writes happen
 * on the loop thread into the page cache, in large buffered chunks), then
 * committed: envelope records and a commit record are appended, and the
 * file and its directory entry are synced on the spool's own sync thread
 * (never libuv's shared pool), concurrent commits sharing one directory
 * sync (group commit). Only when the commit callback reports 0 may the
 * gateway answer 250: the message is then durable and will be delivered.
 * The spool stores; it does not deliver: queue/queue.h opens it together
 * with the queue manager, which it tells of each commit.
 *
 * Ownership: pst_spool_msg belongs to the caller from pst_spool_msg_new
 * until exactly one of pst_spool_msg_commit (the callback runs once on the
 * loop thread; the spool frees the msg after it returns) or
 * pst_spool_msg_abort (file removed, msg freed).
 */
#ifndef PST_QUEUE_SPOOL_H
#define PST_QUEUE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "conf/conf.h"
#include "core/envelope.h"
#include "core/textsrc.h"

#define PST_QID_LEN 16              /* hex characters, unique per spool */

struct pst_spool;
struct pst_spool_msg;

typedef void (*pst_spool_commit_cb)(void *arg, int status);

/*
 * pst_spool_open - lock the spool named by conf and set up its layout,
 * start its sync thread. Recovery (pst__spool_recover, queue/spool_int.h)
 * follows, from the queue's front (queue/queue.h), which is how the
 * gateway opens a spool. Returns 0 or -errno with err filled.
 */
int pst_spool_open(struct pst_spool **sp, uv_loop_t *loop,
                   const struct pst_conf *conf, struct pst_err *err);
/*
 * pst_spool_close - stop the sync thread: commits already handed to it
 * finish first and their callbacks run before this returns; messages
 * still open (never committed) should be aborted by their owners before.
 * Releases the spool lock at once; the remaining memory is freed when the
 * loop next runs (the uv handles close), so run the loop before
 * uv_loop_close.
 */
void pst_spool_close(struct pst_spool *sp);

/* pst_spool_msg_new - create a receiving file; qid gets PST_QID_LEN+1. */
int pst_spool_msg_new(struct pst_spool *sp, struct pst_spool_msg **mp,
                      char *qid);
/*
 * pst_spool_msg_write - append message bytes (canonical CRLF text, not
 * dot-stuffed). Returns 0 or -errno (-ENOSPC, -EIO); after an error the
 * message can only be aborted.
 */
int pst_spool_msg_write(struct pst_spool_msg *m, const void *data,
                        size_t len);
/* pst_spool_msg_size - message bytes written so far. */
uint64_t pst_spool_msg_size(const struct pst_spool_msg *m);
/*
 * pst_spool_msg_text - the text written so far, readable by offset from
 * any thread through its own descriptor (core/textsrc.h), whatever then
 * happens to m: filters read parts' content on worker threads. Buffered
 * text is written out first. Call once all the text is written (later
 * writes are not seen). NULL after a write error or if the file cannot be
 * opened.
 */
struct pst_textsrc *pst_spool_msg_text(struct pst_spool_msg *m);
/*
 * pst_spool_msg_commit - make the message durable with envelope env (copied
 * before return). cb(arg, 0) once file and directory entry are synced;
 * cb(arg, -errno) if anything failed, the file then being removed.
 */
void pst_spool_msg_commit(struct pst_spool_msg *m,
                          const struct pst_envelope *env,
                          pst_spool_commit_cb cb, void *arg);
/*
 * pst_spool_msg_set_edits - store the filters' edit blob (queue/edits.h,
 * copied) with the message: the text stays as received, and the edits
 * are applied as it streams out to delivery. Before commit. 0 or -E2BIG.
 */
int pst_spool_msg_set_edits(struct pst_spool_msg *m, const void *blob,
                            size_t len);
/*
 * pst_spool_msg_set_hold - commit into the hold area (quarantine): the
 * message is durable but not delivered until `postern queue release`,
 * which does not run the filters again. Before commit.
 */
void pst_spool_msg_set_hold(struct pst_spool_msg *m, const char *reason);
/* pst_spool_msg_abort - remove the file and free m. */
void pst_spool_msg_abort(struct pst_spool_msg *m);

/* pst_spool_free_bytes - bytes free on the spool's file system, or -1. */
int64_t pst_spool_free_bytes(struct pst_spool *sp);

/* Counters since open, for logs, tests and bench/. */
struct pst_spool_stats {
    uint64_t fsyncs;                /* fsyncs and fdatasyncs of commits
                                       and deliveries (not the ones that
                                       prepare a segment) */
    uint64_t batches;               /* group commits */
    uint64_t committed;             /* messages made durable */
    uint64_t log;                   /* ... of them into the log */
    uint64_t prepared;              /* segments put to use */
    unsigned segments;              /* segment files now */
};

void pst_spool_stats(struct pst_spool *sp, struct pst_spool_stats *st);

#endif
