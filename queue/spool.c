/*
 * spool.c - the durable spool: directory layout and lock, queue IDs, the
 * receive path (buffered writes on the loop thread), group commit on a
 * dedicated sync thread, and crash recovery at open. docs/SPOOL.md has
 * the file format and the durability argument.
 *
 * Threads. The loop thread creates, writes, commits and aborts messages.
 * write(2) of message text happens on the loop thread on purpose: it only
 * copies into the page cache (128 KiB CHUNK records, one syscall each), it
 * never waits for the disk, and doing it elsewhere would cost a copy and a
 * hand-off per chunk. Everything that waits for the disk - fsync of the
 * file, the rename into active/, fsync of active/ - runs on the sync
 * thread. Nothing here uses libuv's shared thread pool.
 *
 * Group commit. pst_spool_msg_commit appends the envelope and COMMIT
 * records (the message's last write) and only then puts the message on the
 * pending list. The sync thread takes the whole pending list as one batch,
 * so a batch holds only messages whose writes completed before its syncs
 * began. It fsyncs each file, renames each into active/, fsyncs active/
 * once, and hands the batch back through uv_async. While it syncs, new
 * commits gather for the next batch; no timer holds anyone back, so a lone
 * message is synced at once. An fsync error fails the whole batch: every
 * file in it is removed and every callback gets -EIO; nothing is retried
 * and then reported durable (after a failed fsync the kernel may have
 * dropped the dirty pages, so a second fsync proves nothing).
 *
 * The spool knows nothing of delivery. The front (queue/queue.c) gives it
 * a sink that is told of each recovered and each committed message (the
 * queue manager), and the manager asks for storage operations on them
 * (append records, note a route's recipients, finish, move, delete;
 * spool_int.h). Records are appended at the end of a file's last good
 * record and a failed append is cut off again (append_at), so a torn
 * record never has good ones after it. Noting recipients runs on the loop
 * thread, like the receive path's writes: a MARK pwrite or an append into
 * the page cache, no sync.
 *
 * Ownership: see spool.h. Limits: one 128 KiB buffer per message being
 * received (freed at commit); QIDs: 2^40 per run, 2^24 runs.
 */
#include "queue/spool_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/strmap.h"
#include "core/util.h"

static const char *const subdirs[] = {"incoming", "active", "hold",
                                      "corrupt"};

bool
pst__qid_valid(const char *name)
{
    size_t i;
    for (i = 0; name[i]; i++)
        if (!((name[i] >= '0' && name[i] <= '9') ||
              (name[i] >= 'A' && name[i] <= 'F')))
            return false;
    return i == PST_QID_LEN;
}

static void
qid_format(char *qid, uint64_t gen, uint64_t seq)
{
    snprintf(qid, PST_QID_LEN + 1, "%016" PRIX64,
             (gen << PST_QID_SEQ_BITS) | seq);
}

/* pst__sync_raw - see spool_int.h. */
int
pst__sync_raw(int fd, bool data)
{
#ifdef POSTERN_TEST_NO_SYNC
    /* Test-only build (postern-nosync): proves the durability test fails
     * when the syncs are missing. Never used in a real binary. */
    (void)fd;
    (void)data;
    return 0;
#else
    return (data ? fdatasync(fd) : fsync(fd)) == 0 ? 0 : -errno;
#endif
}

/* pst__sync_fd - see spool_int.h. */
int
pst__sync_fd(struct pst_spool *sp, int fd, bool data)
{
    atomic_fetch_add(&sp->n_fsync, 1);
    return pst__sync_raw(fd, data);
}

static int
fsync_fd(struct pst_spool *sp, int fd)
{
    return pst__sync_fd(sp, fd, false);
}

/* How long MARKs and removals may wait for a commit batch to share the
 * sync of their segment or directory: the bound of the duplicate window's
 * extra length. */
#define PST_REMOVAL_SYNC_WAIT_MS 50

/* A message's buffer starts this large and doubles up to PST_CHUNK_MAX. */
#define PST_SPOOL_BUF0 4096u

/* ---- the sync thread ---- */

struct segset {
    struct pst_seg **v;
    size_t n, cap;
};

static void
segset_add(struct segset *ss, struct pst_seg *s)
{
    for (size_t i = 0; i < ss->n; i++)
        if (ss->v[i] == s)
            return;
    if (ss->n == ss->cap) {
        ss->cap = ss->cap ? 2 * ss->cap : 8;
        ss->v = pst_xrealloc(ss->v, ss->cap * sizeof(*ss->v));
    }
    ss->v[ss->n++] = s;
}

/* Files of the batch: writeback started for all, then each synced. */
static int
sync_files(struct pst_spool *sp, struct pst_msgl *batch)
{
    struct pst_spool_msg *m;
    int ferr = 0;

#ifndef POSTERN_TEST_NO_SYNC
    unsigned n = 0;
    TAILQ_FOREACH(m, batch, link)
        n += m->seg == NULL;
    /* so the fsyncs below find their data written or in flight instead of
     * issuing one write after another */
    if (n > 1)
        TAILQ_FOREACH(m, batch, link)
            if (m->seg == NULL)
                sync_file_range(m->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
#endif
    TAILQ_FOREACH(m, batch, link) {
        if (m->seg != NULL)
            continue;
        int rc = fsync_fd(sp, m->fd);
        if (rc != 0 && ferr == 0) {
            ferr = rc;
            pst_err("msg=%s event=spool_fsync_error error=\"%s\"", m->qid,
                    strerror(-rc));
        }
    }
    return ferr;
}

/* Segments: the batch's groups and waiting MARKs, one fdatasync each. A
 * failed sync breaks the segment; it fails the batch when the batch has a
 * group there. */
static int
sync_segments(struct pst_spool *sp, struct segset *ss, struct pst_msgl *batch)
{
    struct pst_spool_msg *m;
    int ferr = 0;

    for (size_t i = 0; i < ss->n; i++) {
        struct pst_seg *s = ss->v[i];
        int rc = pst__sync_fd(sp, s->fd, true);
        if (rc == 0)
            continue;
        atomic_store(&s->broken, true);
        bool mine = false;
        TAILQ_FOREACH(m, batch, link)
            mine |= m->seg == s;
        pst_err("event=spool_fsync_error segment=%08X error=\"%s\"%s", s->id,
                strerror(-rc), mine ? "" : " op=mark");
        if (mine && ferr == 0)
            ferr = rc;
    }
    return ferr;
}

/* Files of the batch into active/ (or hold/), then those directories
 * synced (active/ also for removals waiting). */
static int
place_files(struct pst_spool *sp, struct pst_msgl *batch, bool removals)
{
    struct pst_spool_msg *m;
    bool any = removals, any_hold = false;
    int ferr = 0;

    TAILQ_FOREACH(m, batch, link) {
        if (m->seg != NULL)
            continue;
        /* a quarantined message goes straight to hold/ */
        int dst = m->hold ? sp->holdfd : sp->actfd;
        if (renameat(sp->incfd, m->qid, dst, m->qid) != 0) {
            m->status = -errno;
            pst_err("msg=%s event=spool_rename_error error=\"%s\"", m->qid,
                    strerror(errno));
            unlinkat(sp->incfd, m->qid, 0);
        } else {
            m->renamed = true;
            if (m->hold)
                any_hold = true;
            else
                any = true;
        }
    }
    if (any && (ferr = fsync_fd(sp, sp->actfd)) != 0)
        pst_err("event=spool_fsync_error dir=active error=\"%s\"",
                strerror(-ferr));
    if (any_hold && ferr == 0 && (ferr = fsync_fd(sp, sp->holdfd)) != 0)
        pst_err("event=spool_fsync_error dir=hold error=\"%s\"",
                strerror(-ferr));
    return ferr;
}

static void *
sync_main(void *arg)
{
    struct pst_spool *sp = arg;
    struct pst_msgl batch = TAILQ_HEAD_INITIALIZER(batch);
    struct segset ss = {0};
    struct pst_spool_msg *m;
    struct pst_seg *s;

    pst_stop_signals_block(true);   /* the loop thread's to take */
    pthread_mutex_lock(&sp->mu);
    for (;;) {
        bool timed = false;
        struct timespec until;
        while (TAILQ_EMPTY(&sp->pending) && TAILQ_EMPTY(&sp->reclaim) &&
               !sp->stop) {
            if (!sp->removals && TAILQ_EMPTY(&sp->dirty)) {
                pthread_cond_wait(&sp->cv, &sp->mu);
                continue;
            }
            /* Removals and MARKs alone wait a moment (from the first one)
             * for a commit batch to share its sync; commits never wait. */
            if (!timed) {
                timed = true;
                clock_gettime(CLOCK_MONOTONIC, &until);
                until.tv_nsec += PST_REMOVAL_SYNC_WAIT_MS * 1000000L;
                if (until.tv_nsec >= 1000000000L) {
                    until.tv_sec++;
                    until.tv_nsec -= 1000000000L;
                }
            }
            if (pthread_cond_timedwait(&sp->cv, &sp->mu, &until) ==
                ETIMEDOUT)
                break;
        }
        if (!TAILQ_EMPTY(&sp->reclaim)) {
            pthread_mutex_unlock(&sp->mu);
            pst__log_reclaim(sp);
            pthread_mutex_lock(&sp->mu);
            if (TAILQ_EMPTY(&sp->pending) && !sp->stop)
                continue;
        }
        if (TAILQ_EMPTY(&sp->pending) && !sp->removals &&
            TAILQ_EMPTY(&sp->dirty))
            break;                          /* stop, nothing left */
        /* cleared before the syncs below, which then cover every removal
         * and MARK reported so far */
        bool removals = sp->removals;
        sp->removals = false;
        ss.n = 0;
        while ((s = TAILQ_FIRST(&sp->dirty)) != NULL) {
            TAILQ_REMOVE(&sp->dirty, s, qlink);
            s->queued = false;
            s->dirty = false;
            segset_add(&ss, s);
        }
        TAILQ_CONCAT(&batch, &sp->pending, link);
        pthread_mutex_unlock(&sp->mu);

        TAILQ_FOREACH(m, &batch, link)
            if (m->seg != NULL)
                segset_add(&ss, m->seg);
        int ferr = sync_files(sp, &batch);
        int serr = sync_segments(sp, &ss, &batch);
        if (ferr == 0)
            ferr = serr;
        if (ferr == 0 && (!TAILQ_EMPTY(&batch) || removals))
            ferr = place_files(sp, &batch, removals);
        else if (ferr != 0 && removals)
            fsync_fd(sp, sp->actfd);        /* the removals, on their own */
        unsigned nbatch = 0;
        TAILQ_FOREACH(m, &batch, link) {
            nbatch++;
            if (ferr != 0) {
                if (m->seg != NULL) {
                    /* kept from loading if the segment survives; a
                     * crash may still bring it back: a duplicate of the
                     * copy the client sends again after its 451 */
                    pst__log_mark(sp, m->seg, m->group_off, PST_MARK_DONE,
                                  0, false);
                    pst__log_release(sp, m->seg);
                    m->seg = NULL;
                } else if (m->renamed) {
                    unlinkat(m->hold ? sp->holdfd : sp->actfd, m->qid, 0);
                } else if (m->status == 0) {
                    unlinkat(sp->incfd, m->qid, 0);
                }
                m->renamed = false;
                m->status = -EIO;
            }
            if (m->fd >= 0)
                close(m->fd);
            m->fd = -1;
        }
        if (nbatch > 0) {
            atomic_fetch_add(&sp->n_batches, 1);
            pst_metric_observe(sp->m_batch, nbatch);
        }
        pthread_mutex_lock(&sp->mu);
        if (nbatch > 0) {
            TAILQ_CONCAT(&sp->done, &batch, link);
            uv_async_send(&sp->async);
        }
    }
    pthread_mutex_unlock(&sp->mu);
    free(ss.v);
    return NULL;
}

static void
msg_free(struct pst_spool_msg *m)
{
    if (m->fd >= 0)
        close(m->fd);
    free(m->buf);
    free(m->edits);
    free(m->hold_reason);
    pst_envelope_free(&m->env);
    free(m);
}

/* What a sink left in an entry. */
static void
entry_free(struct pst_spool_entry *e)
{
    pst__errs_free(e->rcpt_err, e->env.nrcpts);
    free(e->last_error);
    pst_envelope_free(&e->env);
}

/* Loop thread: run the callbacks of finished commits. */
static void
drain_done(struct pst_spool *sp)
{
    struct pst_msgl l = TAILQ_HEAD_INITIALIZER(l);
    struct pst_spool_msg *m;

    pthread_mutex_lock(&sp->mu);
    TAILQ_CONCAT(&l, &sp->done, link);
    pthread_mutex_unlock(&sp->mu);
    while ((m = TAILQ_FIRST(&l)) != NULL) {
        TAILQ_REMOVE(&l, m, link);
        if (m->status == 0) {
            atomic_fetch_add(&sp->n_committed, 1);
            /* the segment reference goes to the sink; with no sink (the
             * manager has closed) it stays taken: the group is live on
             * disk and the next start delivers it */
            if (sp->sink != NULL) {
                struct pst_spool_entry e = {
                    .loc = {.area = m->hold ? PST_AREA_HOLD : PST_AREA_ACTIVE,
                            .seg = m->seg, .group_off = m->group_off,
                            .seed = m->seg ? m->seg->salt : 0,
                            .data_off = m->data_off, .env_off = m->env_off,
                            .edits_off = m->edits_off, .size = m->size,
                            .file_size = m->seg ? m->group_end : m->off},
                    .env = m->env,
                    .state = m->hold ? PST_QSTATE_HELD : PST_QSTATE_QUEUED,
                };
                memcpy(e.qid, m->qid, sizeof(e.qid));
                memset(&m->env, 0, sizeof(m->env));
                sp->sink(sp->sink_arg, &e);
                entry_free(&e);
            }
            if (m->hold)
                pst_info("msg=%s event=quarantined reason=\"%s\"", m->qid,
                         m->hold_reason ? m->hold_reason : "filter");
        } else {
            pst_warn("msg=%s event=spool_commit_failed error=\"%s\"", m->qid,
                     strerror(-m->status));
        }
        m->cb(m->cb_arg, m->status);
        msg_free(m);
    }
}

static void
on_async(uv_async_t *a)
{
    drain_done(a->data);
}

/* ---- receive path ---- */

int
pst_spool_msg_new(struct pst_spool *sp, struct pst_spool_msg **mp, char *qid)
{
    struct pst_spool_msg *m;

    if (sp->closing || sp->gen == 0)      /* closing, or not recovered */
        return -ESHUTDOWN;
    if (sp->seq >= (UINT64_C(1) << PST_QID_SEQ_BITS))
        return -EOVERFLOW;
    /* nothing on disk yet: a message that fits in memory is written whole
     * at commit (docs/SPOOL.md, "Receiving and committing") */
    m = pst_xcalloc(1, sizeof(*m));
    m->sp = sp;
    m->fd = -1;
    m->created = time(NULL);
    qid_format(m->qid, sp->gen, sp->seq++);
    sp->open_msgs++;
    memcpy(qid, m->qid, PST_QID_LEN + 1);
    *mp = m;
    return 0;
}

/* The message becomes a file in incoming/: header and INFO record. */
static int
become_file(struct pst_spool_msg *m)
{
    struct pst_spool *sp = m->sp;
    struct pst_tbuf w = {0};
    int rc;

    m->fd = openat(sp->incfd, m->qid, O_WRONLY | O_CREAT | O_EXCL |
                   O_CLOEXEC, 0600);
    if (m->fd < 0)
        return -errno;
    pst_tbuf_add(&w, PST_SPOOL_MAGIC, 4);
    pst__put_u32(&w, PST_SPOOL_VERSION);
    size_t s = pst__rec_begin(&w, PST_REC_INFO);
    pst_tbuf_add(&w, m->qid, PST_QID_LEN);
    pst__put_u64(&w, (uint64_t)(int64_t)m->created);
    pst__rec_end(&w, s);
    rc = pst_write_all(m->fd, w.p, w.len);
    m->off = m->data_off = w.len;
    pst_tbuf_free(&w);
    return rc;
}

/* Frame the buffered text as one CHUNK record of the message file (made
 * now if need be) and write it. */
static int
flush_chunk(struct pst_spool_msg *m)
{
    int rc;

    if (m->fd < 0 && (rc = become_file(m)) != 0)
        return rc;
    if (m->fill == 0)
        return 0;
    uint8_t *h = m->buf + PST_GROUP_PREFIX - PST_REC_HDR_LEN;
    uint32_t crc = pst__rec_frame(h, PST_REC_CHUNK, (uint32_t)m->fill, 0);
    uint8_t *t = h + PST_REC_HDR_LEN + m->fill;
    t[0] = (uint8_t)crc;
    t[1] = (uint8_t)(crc >> 8);
    t[2] = (uint8_t)(crc >> 16);
    t[3] = (uint8_t)(crc >> 24);
    rc = pst_write_all(m->fd, h, m->fill + PST_REC_OVERHEAD);
    if (rc != 0)
        return rc;
    m->off += m->fill + PST_REC_OVERHEAD;
    m->fill = 0;
    return 0;
}

int
pst_spool_msg_write(struct pst_spool_msg *m, const void *data, size_t len)
{
    const uint8_t *p = data;

    if (m->err)
        return m->err;
    while (len > 0) {
        if (m->fill == m->cap) {
            if (m->cap < PST_CHUNK_MAX) {
                /* lazily, and only as large as the text so far */
                m->cap = m->cap ? PST_MIN(2 * m->cap, (size_t)PST_CHUNK_MAX)
                                : PST_SPOOL_BUF0;
                m->buf = pst_xrealloc(m->buf, PST_GROUP_PREFIX + m->cap +
                                                  PST_REC_CRC_LEN);
            } else {
                int rc = flush_chunk(m);   /* too large for memory */
                if (rc != 0) {
                    m->err = rc;
                    return rc;
                }
            }
        }
        size_t k = PST_MIN(len, m->cap - m->fill);
        memcpy(m->buf + PST_GROUP_PREFIX + m->fill, p, k);
        m->fill += k;
        m->size += k;
        p += k;
        len -= k;
    }
    return 0;
}

uint64_t
pst_spool_msg_size(const struct pst_spool_msg *m)
{
    return m->size;
}

/* The text of a message being received, for pst_spool_msg_text: its own
 * read-only descriptor and where the CHUNK records start. */
struct msg_text {
    int fd;
    uint64_t data_off;
};

/* Message offset -> file offset: every CHUNK record but the last holds
 * PST_CHUNK_MAX octets (spool_msg_write flushes only full ones), and the
 * source is made after the last flush, so the geometry is fixed. */
static ssize_t
text_read(void *arg, void *buf, size_t len, uint64_t off)
{
    struct msg_text *t = arg;
    uint64_t rec = off / PST_CHUNK_MAX, in = off % PST_CHUNK_MAX;
    size_t k = (size_t)PST_MIN((uint64_t)len, PST_CHUNK_MAX - in);
    uint64_t at = t->data_off + rec * PST_SPOOL_WBUF + PST_REC_HDR_LEN + in;
    ssize_t n;
    do
        n = pread(t->fd, buf, k, (off_t)at);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

static void
text_fini(void *arg)
{
    struct msg_text *t = arg;
    close(t->fd);
    free(t);
}

/* pst_spool_msg_text - see spool.h. */
struct pst_textsrc *
pst_spool_msg_text(struct pst_spool_msg *m)
{
    if (m->err || m->renamed)
        return NULL;
    int rc = flush_chunk(m);
    if (rc != 0) {
        m->err = rc;
        return NULL;
    }
    int fd = openat(m->sp->incfd, m->qid, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct msg_text *t = pst_xmalloc(sizeof(*t));
    t->fd = fd;
    t->data_off = m->data_off;
    return pst_textsrc_new(text_read, text_fini, t, m->size);
}

/* pst_spool_msg_set_edits - see spool.h. */
int
pst_spool_msg_set_edits(struct pst_spool_msg *m, const void *blob,
                        size_t len)
{
    if (len == 0 || len > PST_REC_MAX)
        return -E2BIG;
    free(m->edits);
    m->edits = pst_xmalloc(len);
    memcpy(m->edits, blob, len);
    m->edits_len = len;
    return 0;
}

/* pst_spool_msg_set_hold - see spool.h. */
void
pst_spool_msg_set_hold(struct pst_spool_msg *m, const char *reason)
{
    m->hold = true;
    free(m->hold_reason);
    m->hold_reason = reason ? pst_xstrdup(reason) : NULL;
}

/* Commit as a message file: the rest of the text, ENVELOPE, EDITS,
 * COMMIT (and STATE held for a quarantined message). */
static int
commit_file(struct pst_spool_msg *m)
{
    struct pst_tbuf w = {0};
    int rc;

    if (m->fill == 0 && m->fd < 0 && m->buf == NULL) {
        /* an empty text still has its CHUNK record */
        m->cap = PST_SPOOL_BUF0;
        m->buf = pst_xmalloc(PST_GROUP_PREFIX + m->cap + PST_REC_CRC_LEN);
    }
    if ((rc = flush_chunk(m)) != 0)
        return rc;
    m->env_off = m->off;
    size_t s = pst__rec_begin(&w, PST_REC_ENVELOPE);
    pst__env_encode(&w, &m->env);
    pst__rec_end(&w, s);
    if (w.len - s > PST_REC_MAX + PST_REC_OVERHEAD) {
        pst_tbuf_free(&w);
        return -E2BIG;
    }
    if (m->edits != NULL) {
        m->edits_off = m->off + w.len;
        s = pst__rec_begin(&w, PST_REC_EDITS);
        pst_tbuf_add(&w, m->edits, m->edits_len);
        pst__rec_end(&w, s);
    }
    s = pst__rec_begin(&w, PST_REC_COMMIT);
    pst__put_u64(&w, m->env_off);
    pst__put_u64(&w, m->size);
    pst__rec_end(&w, s);
    if (m->hold)
        pst__rec_state(&w, PST_QSTATE_HELD, time(NULL),
                       m->hold_reason ? m->hold_reason
                                      : "quarantined by a filter");
    rc = pst_write_all(m->fd, w.p, w.len);
    m->off += w.len;
    pst_tbuf_free(&w);
    return rc;
}

void
pst_spool_msg_commit(struct pst_spool_msg *m, const struct pst_envelope *env,
                     pst_spool_commit_cb cb, void *arg)
{
    struct pst_spool *sp = m->sp;
    int rc = m->err;

    m->cb = cb;
    m->cb_arg = arg;
    sp->open_msgs--;
    if (rc == 0 && env->nrcpts == 0)
        rc = -EINVAL;
    if (rc == 0) {
        pst__env_copy(&m->env, env);
        /* into the log when it fits and a segment is ready; else (and
         * quarantined messages, and any log error) as a file */
        if (m->fd >= 0 || m->hold || m->buf == NULL ||
            pst__log_append(sp, m) != 0)
            rc = commit_file(m);
        else
            atomic_fetch_add(&sp->n_log, 1);
    }
    free(m->buf);
    m->buf = NULL;
    m->status = rc;
    if (rc != 0 && m->fd >= 0)
        unlinkat(sp->incfd, m->qid, 0);
    pthread_mutex_lock(&sp->mu);
    if (rc == 0 && sp->sync_started) {
        TAILQ_INSERT_TAIL(&sp->pending, m, link);
        pthread_cond_signal(&sp->cv);
    } else {
        /* failed before the sync: report through the same async path so
         * the callback never runs inside pst_spool_msg_commit */
        if (m->status == 0)
            m->status = -ESHUTDOWN;
        TAILQ_INSERT_TAIL(&sp->done, m, link);
        uv_async_send(&sp->async);
    }
    pthread_mutex_unlock(&sp->mu);
}

void
pst_spool_msg_abort(struct pst_spool_msg *m)
{
    struct pst_spool *sp = m->sp;

    sp->open_msgs--;
    if (m->fd >= 0)
        unlinkat(sp->incfd, m->qid, 0);
    msg_free(m);
}

int64_t
pst_spool_free_bytes(struct pst_spool *sp)
{
    struct statvfs v;
    if (fstatvfs(sp->dirfd, &v) != 0)
        return -1;
    return (int64_t)((uint64_t)v.f_bavail * v.f_frsize);
}

void
pst_spool_stats(struct pst_spool *sp, struct pst_spool_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->fsyncs = atomic_load(&sp->n_fsync);
    st->batches = atomic_load(&sp->n_batches);
    st->committed = atomic_load(&sp->n_committed);
    st->log = atomic_load(&sp->n_log);
    st->prepared = atomic_load(&sp->n_prepared);
    struct pst_seg *s;
    pthread_mutex_lock(&sp->mu);
    TAILQ_FOREACH(s, &sp->segs, link)
        st->segments++;
    pthread_mutex_unlock(&sp->mu);
}

/* ---- open: directories, lock, generation, recovery ---- */

static int
mkdir_p(const char *path, mode_t last_mode)
{
    char *p = pst_xstrdup(path);
    int rc = 0;

    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            rc = -errno;
            goto out;
        }
        *s = '/';
    }
    if (mkdir(p, last_mode) != 0 && errno != EEXIST)
        rc = -errno;
out:
    free(p);
    return rc;
}

static int
take_lock(struct pst_spool *sp, struct pst_err *err)
{
    sp->lockfd = openat(sp->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC,
                        0600);
    if (sp->lockfd < 0) {
        int e = errno;
        pst_err_add(err, NULL, 0, "spool %s: lock file: %s", sp->dir,
                    strerror(e));
        return -e;
    }
    if (flock(sp->lockfd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(sp->lockfd, pid, sizeof(pid) - 1, 0);
        if (n > 0) {
            pid[n] = '\0';
            pid[strcspn(pid, "\n")] = '\0';
        }
        if (e == EWOULDBLOCK)
            pst_err_add(err, NULL, 0, "spool %s is in use by another "
                        "postern (pid %s)", sp->dir, pid[0] ? pid : "?");
        else
            pst_err_add(err, NULL, 0, "spool %s: lock: %s", sp->dir,
                        strerror(e));
        return e == EWOULDBLOCK ? -EBUSY : -e;
    }
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (ftruncate(sp->lockfd, 0) != 0 ||
        pwrite(sp->lockfd, buf, (size_t)n, 0) != n)
        pst_warn("event=spool_lock_pid error=\"%s\"", strerror(errno));
    return 0;
}

/*
 * The generation (QID high bits) grows by one per open and is stored
 * durably before any QID of the run is handed out, so QIDs never repeat
 * across restarts, whatever the clock does. It also starts above the
 * highest generation found in the queue, in case the counter file was
 * lost.
 */
static int
bump_generation(struct pst_spool *sp, uint64_t seen_max, struct pst_err *err)
{
    char buf[64];
    uint64_t g = 0;
    int fd, rc;

    fd = openat(sp->dirfd, "generation", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n > 0) {
            buf[n] = '\0';
            g = strtoull(buf, NULL, 10);
        }
    }
    g = PST_MAX(g, seen_max) + 1;
    if (g >= (UINT64_C(1) << (64 - PST_QID_SEQ_BITS))) {
        pst_err_add(err, NULL, 0, "spool %s: queue ID generations "
                    "exhausted", sp->dir);
        return -EOVERFLOW;
    }
    int n = snprintf(buf, sizeof(buf), "%" PRIu64 "\n", g);
    fd = openat(sp->dirfd, "generation.tmp", O_WRONLY | O_CREAT | O_TRUNC |
                O_CLOEXEC, 0600);
    if (fd < 0)
        goto fail;
    rc = pst_write_all(fd, buf, (size_t)n);
    if (rc == 0)
        rc = fsync_fd(sp, fd);
    close(fd);
    if (rc != 0) {
        errno = -rc;
        goto fail;
    }
    if (renameat(sp->dirfd, "generation.tmp", sp->dirfd, "generation") != 0 ||
        fsync_fd(sp, sp->dirfd) != 0)
        goto fail;
    sp->gen = g;
    sp->seq = 0;
    return 0;
fail:
    rc = -errno;
    pst_err_add(err, NULL, 0, "spool %s: generation file: %s", sp->dir,
                strerror(errno));
    return rc;
}

static uint64_t
qid_gen(const char *qid)
{
    return strtoull(qid, NULL, 16) >> PST_QID_SEQ_BITS;
}

/* Move a damaged file aside, never deleting it. */
static void
quarantine(struct pst_spool *sp, int fromfd, const char *from,
           const char *name, const char *why)
{
    char dst[300];
    snprintf(dst, sizeof(dst), "%s", name);
    for (int i = 1; i < 1000; i++) {
        if (faccessat(sp->corfd, dst, F_OK, 0) != 0)
            break;
        snprintf(dst, sizeof(dst), "%.200s.%d", name, i);
    }
    if (renameat(fromfd, name, sp->corfd, dst) != 0) {
        pst_err("msg=%.64s event=spool_corrupt dir=%s reason=\"%s\" "
                "action=left error=\"%s\"", name, from, why,
                strerror(errno));
        return;
    }
    pst_err("msg=%.64s event=spool_corrupt dir=%s reason=\"%s\" "
            "action=moved to=corrupt/%s", name, from, why, dst);
}

struct recov {
    unsigned removed, corrupt, loaded, torn;
    uint64_t gen_max;
    pst_spool_sink sink;
    void *arg;
    struct pst_strmap *files;   /* IDs loaded from files: they win */
};

static int
recover_dir(struct pst_spool *sp, int dfd, const char *dname, bool held,
            struct recov *rv)
{
    int fd2 = dup(dfd);
    DIR *d;
    struct dirent *de;

    if (fd2 < 0 || (d = fdopendir(fd2)) == NULL) {
        if (fd2 >= 0)
            close(fd2);
        return -errno;
    }
    rewinddir(d);
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        char why[160];
        struct pst_scan s;

        if (name[0] == '.')
            continue;
        if (!pst__qid_valid(name)) {
            quarantine(sp, dfd, dname, name, "not a queue file name");
            rv->corrupt++;
            continue;
        }
        rv->gen_max = PST_MAX(rv->gen_max, qid_gen(name));
        int fd = openat(dfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            pst_err("msg=%s event=spool_recover dir=%s error=\"%s\"", name,
                    dname, strerror(errno));
            continue;
        }
        int rc = pst__spool_scan(fd, &s, why, sizeof(why));
        if (rc == PST_SCAN_OK && strcmp(s.qid, name) != 0) {
            snprintf(why, sizeof(why), "queue ID %s inside does not match",
                     s.qid);
            pst__scan_free(&s);
            rc = PST_SCAN_CORRUPT;
        }
        if (rc < 0) {
            pst_err("msg=%s event=spool_recover dir=%s error=\"%s\"", name,
                    dname, strerror(-rc));
            close(fd);
            continue;
        }
        if (rc != PST_SCAN_OK) {
            /* a file in active/ or hold/ was renamed there only after its
             * COMMIT record was synced: anything less is damage */
            close(fd);
            quarantine(sp, dfd, dname, name, why);
            rv->corrupt++;
            continue;
        }
        bool cut = true;
        if (s.torn) {
            /* cut the damaged update so later appends follow good records
             * (if it cannot be, the first append cuts it or waits) */
            cut = ftruncate(fd, (off_t)s.good_end) == 0;
            if (!cut || fsync(fd) != 0)
                pst_warn("msg=%s event=spool_truncate error=\"%s\"", name,
                         strerror(errno));
            else
                pst_warn("msg=%s event=spool_torn_tail dir=%s "
                         "ignored_bytes=%" PRIu64, name, dname,
                         s.file_size - s.good_end);
            s.file_size = s.good_end;
            rv->torn++;
        }
        close(fd);
        *pst_strmap_slot(rv->files, s.qid, PST_QID_LEN, NULL) = rv;
        struct pst_spool_entry e = {
            .loc = {.area = held ? PST_AREA_HOLD : PST_AREA_ACTIVE,
                    .data_off = s.data_off, .env_off = s.env_off,
                    .edits_off = s.edits_off, .size = s.msg_size,
                    .file_size = s.file_size, .torn = !cut},
            .env = s.env, .rcpt_err = s.rcpt_err,
            .last_error = s.last_error, .attempts = s.attempts,
            .next_attempt = s.next_attempt, .state = s.state,
            .recovered = true,
        };
        memcpy(e.qid, s.qid, sizeof(e.qid));
        memset(&s, 0, sizeof(s));       /* moved into e */
        rv->sink(rv->arg, &e);
        entry_free(&e);
        rv->loaded++;
    }
    closedir(d);
    return 0;
}

/* pst__spool_recover - see spool_int.h. */
int
pst__spool_recover(struct pst_spool *sp, pst_spool_sink sink, void *arg,
                   struct pst_err *err)
{
    struct recov rv = {.sink = sink, .arg = arg, .files = pst_strmap_new()};
    int fd2 = dup(sp->incfd);
    DIR *d;
    struct dirent *de;

    /* incoming/: never acknowledged (a 250 follows the rename), remove */
    if (fd2 < 0 || (d = fdopendir(fd2)) == NULL) {
        if (fd2 >= 0)
            close(fd2);
        goto fail;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (pst__qid_valid(de->d_name))
            rv.gen_max = PST_MAX(rv.gen_max, qid_gen(de->d_name));
        if (unlinkat(sp->incfd, de->d_name, 0) == 0) {
            rv.removed++;
            pst_info("msg=%.64s event=spool_recover dir=incoming "
                     "action=removed reason=incomplete", de->d_name);
        }
    }
    closedir(d);
    if (recover_dir(sp, sp->actfd, "active", false, &rv) != 0 ||
        recover_dir(sp, sp->holdfd, "hold", true, &rv) != 0)
        goto fail;
    /* the log after the files: a file wins over a live group */
    int rc = pst__log_recover(sp, rv.files, sink, arg, &rv.gen_max,
                              &rv.loaded, err);
    pst_strmap_free(rv.files, NULL);
    rv.files = NULL;
    if (rc != 0)
        return rc;
    if (rv.corrupt) {
        fsync_fd(sp, sp->corfd);
        fsync_fd(sp, sp->actfd);
        fsync_fd(sp, sp->holdfd);
    }
    if (bump_generation(sp, rv.gen_max, err) != 0)
        return -EIO;
    pst_info("event=spool_open dir=%s loaded=%u removed=%u corrupt=%u "
             "torn=%u", sp->dir, rv.loaded, rv.removed, rv.corrupt,
             rv.torn);
    return 0;
fail:
    rc = -errno;
    pst_strmap_free(rv.files, NULL);
    pst_err_add(err, NULL, 0, "spool %s: recovery: %s", sp->dir,
                strerror(-rc));
    return rc;
}

static void
spool_free(struct pst_spool *sp)
{
    pst__log_close(sp);
    for (int *fd = &sp->dirfd; fd <= &sp->lockfd; fd++)
        if (*fd >= 0)
            close(*fd);
    pthread_mutex_destroy(&sp->mu);
    pthread_cond_destroy(&sp->cv);
    pthread_cond_destroy(&sp->seg_cv);
    free(sp->dir);
    free(sp->control_group);
    free(sp);
}

static void
on_handle_closed(uv_handle_t *h)
{
    struct pst_spool *sp = h->data;
    if (--sp->handles == 0)
        spool_free(sp);
}

int
pst_spool_open(struct pst_spool **spp, uv_loop_t *loop,
               const struct pst_conf *conf, struct pst_err *err)
{
    struct pst_spool *sp = pst_xcalloc(1, sizeof(*sp));
    int rc;

    sp->m_batch = pst_metric_histogram(
        "postern_spool_commit_batch_messages",
        "Messages made durable by one group commit (one directory sync).",
        &pst_buckets_count, NULL);
    sp->loop = loop;
    sp->dir = pst_xstrdup(conf->queue.directory ? conf->queue.directory
                                                : "/var/spool/postern");
    if (conf->queue.control_group && conf->queue.control_group[0])
        sp->control_group = pst_xstrdup(conf->queue.control_group);
    sp->dirfd = sp->incfd = sp->actfd = sp->holdfd = sp->corfd = sp->lockfd =
        sp->logfd = -1;
    sp->seg_size = conf->queue.segment_size ? conf->queue.segment_size
                                            : 8u * 1024 * 1024;
    pthread_mutex_init(&sp->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);    /* timed waits */
    pthread_cond_init(&sp->cv, &ca);
    pthread_cond_init(&sp->seg_cv, &ca);
    pthread_condattr_destroy(&ca);
    TAILQ_INIT(&sp->pending);
    TAILQ_INIT(&sp->done);
    TAILQ_INIT(&sp->segs);
    TAILQ_INIT(&sp->spares);
    TAILQ_INIT(&sp->dirty);
    TAILQ_INIT(&sp->reclaim);

    if ((rc = mkdir_p(sp->dir, 0700)) != 0) {
        pst_err_add(err, NULL, 0, "spool %s: %s", sp->dir, strerror(-rc));
        goto fail;
    }
    sp->dirfd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sp->dirfd < 0) {
        rc = -errno;
        pst_err_add(err, NULL, 0, "spool %s: %s", sp->dir, strerror(-rc));
        goto fail;
    }
    /* 0700, or 0710 with the control group so its members can reach the
     * control socket (and nothing else: the subdirectories stay 0700) */
    mode_t mode = 0700;
    if (sp->control_group) {
        struct group gr, *g = NULL;
        char gbuf[4096];
        if (getgrnam_r(sp->control_group, &gr, gbuf, sizeof(gbuf), &g) !=
                0 || g == NULL) {
            pst_err_add(err, NULL, 0, "queue.control_group: unknown group "
                        "\"%s\"", sp->control_group);
            rc = -EINVAL;
            goto fail;
        }
        if (fchown(sp->dirfd, (uid_t)-1, g->gr_gid) == 0)
            mode = 0710;
    }
    if (fchmod(sp->dirfd, mode) != 0)
        pst_warn("event=spool_chmod dir=%s error=\"%s\"", sp->dir,
                 strerror(errno));
    if ((rc = take_lock(sp, err)) != 0)
        goto fail;
    int *fds[] = {&sp->incfd, &sp->actfd, &sp->holdfd, &sp->corfd};
    for (size_t i = 0; i < PST_ARRAY_LEN(subdirs); i++) {
        if (mkdirat(sp->dirfd, subdirs[i], 0700) != 0 && errno != EEXIST)
            goto fail_errno;
        *fds[i] = openat(sp->dirfd, subdirs[i],
                         O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (*fds[i] < 0)
            goto fail_errno;
    }
    if ((rc = pst__log_open(sp, err)) != 0)
        goto fail;
    if (fsync_fd(sp, sp->dirfd) != 0)
        goto fail_errno;
    if ((rc = uv_async_init(loop, &sp->async, on_async)) != 0) {
        pst_err_add(err, NULL, 0, "spool: uv_async_init: %s",
                    uv_strerror(rc));
        goto fail;
    }
    sp->async.data = sp;
    sp->handles++;
    if ((rc = pthread_create(&sp->sync_thr, NULL, sync_main, sp)) != 0) {
        pst_err_add(err, NULL, 0, "spool: sync thread: %s", strerror(rc));
        rc = -rc;
        sp->closing = true;
        close(sp->lockfd);
        sp->lockfd = -1;
        uv_close((uv_handle_t *)&sp->async, on_handle_closed);
        return rc;
    }
    sp->sync_started = true;
    *spp = sp;
    return 0;

fail_errno:
    rc = -errno;
    pst_err_add(err, NULL, 0, "spool %s: %s", sp->dir, strerror(-rc));
fail:
    spool_free(sp);
    return rc;
}

/* pst__spool_set_sink - see spool_int.h. */
void
pst__spool_set_sink(struct pst_spool *sp, pst_spool_sink sink, void *arg)
{
    sp->sink = sink;
    sp->sink_arg = arg;
}

void
pst_spool_close(struct pst_spool *sp)
{
    sp->closing = true;
    if (sp->sync_started) {
        pthread_mutex_lock(&sp->mu);
        sp->stop = true;
        pthread_cond_signal(&sp->cv);
        pthread_mutex_unlock(&sp->mu);
        pthread_join(sp->sync_thr, NULL);
        sp->sync_started = false;
    }
    drain_done(sp);
    pst__log_close(sp);
    pst_info("event=spool_stats committed=%llu log=%llu batches=%llu "
             "fsyncs=%llu",
             (unsigned long long)atomic_load(&sp->n_committed),
             (unsigned long long)atomic_load(&sp->n_log),
             (unsigned long long)atomic_load(&sp->n_batches),
             (unsigned long long)atomic_load(&sp->n_fsync));
    /* removals by the last deliveries, after the sync thread stopped: one
     * sync here, at shutdown, keeps them from coming back */
    if (sp->removals) {
        sp->removals = false;
        fsync_fd(sp, sp->actfd);
    }
    if (sp->open_msgs)
        pst_warn("event=spool_close open_messages=%u", sp->open_msgs);
    /* release the lock now; memory goes when the handle has closed */
    close(sp->lockfd);
    sp->lockfd = -1;
    uv_close((uv_handle_t *)&sp->async, on_handle_closed);
}

/* ---- storage operations for the queue manager (spool_int.h) ---- */

static int
area_fd(const struct pst_spool *sp, enum pst_spool_area a)
{
    return a == PST_AREA_HOLD ? sp->holdfd : sp->actfd;
}

/* A group's bytes, read back from its segment. */
static uint8_t *
read_group(const struct pst_spool_loc *loc, size_t *len, int *rc)
{
    size_t n = (size_t)(loc->file_size - loc->group_off), got;
    uint8_t *g = pst_xmalloc(n ? n : 1);

    *rc = pst__pread_upto(loc->seg->fd, g, n, loc->group_off, &got);
    if (*rc == 0 && got < n)
        *rc = -EBADMSG;
    if (*rc != 0) {
        free(g);
        return NULL;
    }
    *len = n;
    return g;
}

/* Write bytes as the file qid in directory `to`, durably: written in
 * incoming/, synced, renamed, the directory synced. */
static int
place_new_file(struct pst_spool *sp, const char *qid, int to,
               const void *p, size_t n)
{
    int fd = openat(sp->incfd, qid, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                    0600);
    if (fd < 0)
        return -errno;
    int rc = pst_write_all(fd, p, n);
    if (rc == 0)
        rc = fsync_fd(sp, fd);
    close(fd);
    if (rc == 0 && renameat(sp->incfd, qid, to, qid) != 0)
        rc = -errno;
    if (rc != 0) {
        unlinkat(sp->incfd, qid, 0);
        return rc;
    }
    return fsync_fd(sp, to);
}

/* A message leaves the log for a file in area `to`, with recs appended
 * after its COMMIT - and before them the recipients its MARK says
 * delivered, as RCPT records: the file durable first, then the group
 * marked moved (docs/SPOOL.md, "Segments hold messages until their first
 * attempt"). */
static int
copy_out(struct pst_spool *sp, const char *qid, struct pst_spool_loc *loc,
         enum pst_spool_area to, const struct pst_tbuf *recs)
{
    struct pst_tbuf out = {0};
    struct pst_scan fo;
    size_t glen;
    int rc;
    uint8_t *g = read_group(loc, &glen, &rc);

    if (g == NULL)
        return rc;
    rc = pst__file_from_group(g, glen, loc->seed, &out, &fo);
    free(g);
    for (uint32_t i = 0; rc == 0 && i < PST_MARK_RCPTS; i++)
        if (loc->marked & (UINT32_C(1) << i))
            pst__rec_rcpt(&out, i, PST_RCPT_DELIVERED, time(NULL), NULL);
    if (rc == 0 && recs != NULL)
        pst_tbuf_add(&out, recs->p, recs->len);
    if (rc == 0)
        rc = place_new_file(sp, qid, area_fd(sp, to), out.p, out.len);
    if (rc == 0) {
        /* the file wins over a group still live after a crash */
        pst__log_mark(sp, loc->seg, loc->group_off, PST_MARK_MOVED, 0,
                      false);
        pst__log_release(sp, loc->seg);
        *loc = (struct pst_spool_loc){
            .area = to, .data_off = fo.data_off, .env_off = fo.env_off,
            .edits_off = fo.edits_off, .size = fo.msg_size,
            .file_size = out.len};
    }
    pst_tbuf_free(&out);
    return rc;
}

/*
 * append_at - write recs into the message file at fd right after its
 * last good record (loc->file_size), then fsync when sync. A write that
 * fails or comes up short (a full disk), or a failed fsync, is cut off
 * again: a torn record left in the middle would end the file at the next
 * start, and every record appended after it - a recipient recorded
 * delivered there would be delivered again. Should that cut fail too,
 * loc->torn remembers it and the next append first cuts, or writes
 * nothing: a record is only ever written right after a whole one, with
 * nothing after it.
 */
static int
append_at(struct pst_spool *sp, int fd, const char *qid,
          struct pst_spool_loc *loc, const struct pst_tbuf *recs, bool sync)
{
    int rc;

    if (loc->torn) {
        if (ftruncate(fd, (off_t)loc->file_size) != 0) {
            rc = -errno;
            pst_err("msg=%s event=spool_truncate_error offset=%" PRIu64
                    " error=\"%s\" action=not_appended", qid,
                    loc->file_size, strerror(-rc));
            return rc;
        }
        loc->torn = false;
    }
    rc = pst__pwrite_all(fd, recs->p, recs->len, loc->file_size);
    if (rc == 0 && sync)
        rc = fsync_fd(sp, fd);
    if (rc == 0) {
        loc->file_size += recs->len;
        return 0;
    }
    if (ftruncate(fd, (off_t)loc->file_size) != 0) {
        loc->torn = true;
        pst_err("msg=%s event=spool_truncate_error offset=%" PRIu64
                " error=\"%s\"", qid, loc->file_size, strerror(errno));
    }
    return rc;
}

/* pst__spool_append - see spool_int.h. */
int
pst__spool_append(struct pst_spool *sp, const char *qid,
                  struct pst_spool_loc *loc, const struct pst_tbuf *recs)
{
    if (loc->seg != NULL)
        return copy_out(sp, qid, loc, PST_AREA_ACTIVE, recs);
    int rc, fd = openat(area_fd(sp, loc->area), qid, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    rc = append_at(sp, fd, qid, loc, recs, true);
    close(fd);
    return rc;
}

/* pst__spool_note - see spool_int.h. */
int
pst__spool_note(struct pst_spool *sp, const char *qid,
                struct pst_spool_loc *loc, const size_t *rcpts, size_t n,
                time_t when)
{
    if (loc->seg != NULL) {
        uint32_t m = loc->marked;
        for (size_t i = 0; i < n; i++)
            if (rcpts[i] < PST_MARK_RCPTS)
                m |= UINT32_C(1) << rcpts[i];
        if (m == loc->marked)
            return 0;           /* beyond the MARK's recipients: the
                                   attempt's end records them */
        int rc = pst__log_mark(sp, loc->seg, loc->group_off, PST_MARK_LIVE,
                               m, false);
        if (rc == 0)
            loc->marked = m;
        return rc;
    }
    struct pst_tbuf b = {0};
    for (size_t i = 0; i < n; i++)
        pst__rec_rcpt(&b, (uint32_t)rcpts[i], PST_RCPT_DELIVERED, when,
                      NULL);
    int rc, fd = openat(area_fd(sp, loc->area), qid, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
    } else {
        rc = append_at(sp, fd, qid, loc, &b, false);
        close(fd);
    }
    pst_tbuf_free(&b);
    return rc;
}

/* pst__spool_blocks - see spool_int.h. */
bool
pst__spool_blocks(const struct pst_spool_loc *loc)
{
    return loc->seg == NULL;
}

/* pst__spool_finished - see spool_int.h. */
void
pst__spool_finished(struct pst_spool *sp, const char *qid,
                    const struct pst_spool_loc *loc)
{
    if (loc->seg != NULL) {
        pst__log_mark(sp, loc->seg, loc->group_off, PST_MARK_DONE, 0, false);
        pst__log_release(sp, loc->seg);
        return;
    }
    if (unlinkat(area_fd(sp, loc->area), qid, 0) != 0)
        return;
    pthread_mutex_lock(&sp->mu);
    if (!sp->removals && TAILQ_EMPTY(&sp->dirty))
        pthread_cond_signal(&sp->cv);       /* the first to wait only */
    sp->removals = true;
    pthread_mutex_unlock(&sp->mu);
}

/* pst__spool_done - see spool_int.h. */
int
pst__spool_done(struct pst_spool *sp, const char *qid,
                const struct pst_spool_loc *loc, const struct pst_tbuf *recs)
{
    if (loc->seg != NULL) {
        int rc = pst__log_mark(sp, loc->seg, loc->group_off, PST_MARK_DONE,
                               0, true);
        pst__log_release(sp, loc->seg);
        return rc;
    }
    struct pst_spool_loc l = *loc;
    int rc = pst__spool_append(sp, qid, &l, recs);
    if (rc != 0) {
        /* nothing on disk says so: it goes all the same, its removal
         * synced soon, as a message that finished quietly */
        pst__spool_finished(sp, qid, loc);
        return rc;
    }
    /* the records say every recipient is done: a resurrected file would
     * deliver nothing */
    unlinkat(area_fd(sp, loc->area), qid, 0);
    return 0;
}

/* pst__spool_remove - see spool_int.h. */
void
pst__spool_remove(struct pst_spool *sp, const char *qid,
                  const struct pst_spool_loc *loc)
{
    if (loc->seg != NULL) {
        pst__log_mark(sp, loc->seg, loc->group_off, PST_MARK_DONE, 0, false);
        pst__log_release(sp, loc->seg);
    } else {
        unlinkat(area_fd(sp, loc->area), qid, 0);
    }
}

/* pst__spool_delete - see spool_int.h. */
int
pst__spool_delete(struct pst_spool *sp, const char *qid,
                  const struct pst_spool_loc *loc)
{
    int rc;

    if (loc->seg != NULL) {
        struct pst_seg *s = loc->seg;
        if ((rc = pst__log_mark(sp, s, loc->group_off, PST_MARK_DONE, 0,
                                false)) != 0)
            return rc;          /* still live: the message stays */
        if ((rc = pst__sync_fd(sp, s->fd, true)) != 0) {
            atomic_store(&s->broken, true);
            pst_err("msg=%s event=spool_fsync_error segment=%08X "
                    "error=\"%s\" op=delete", qid, s->id, strerror(-rc));
        }
        pst__log_release(sp, s);
        return 0;
    }
    int dfd = area_fd(sp, loc->area);
    if (unlinkat(dfd, qid, 0) != 0)
        return -errno;
    if ((rc = fsync_fd(sp, dfd)) != 0)
        pst_err("msg=%s event=spool_fsync_error dir=%s error=\"%s\" "
                "op=delete", qid, loc->area == PST_AREA_HOLD ? "hold"
                                                            : "active",
                strerror(-rc));
    return 0;
}

/* pst__spool_move - see spool_int.h. */
int
pst__spool_move(struct pst_spool *sp, const char *qid,
                struct pst_spool_loc *loc, enum pst_spool_area to)
{
    if (loc->seg != NULL)
        return copy_out(sp, qid, loc, to, NULL);
    int from = area_fd(sp, loc->area), dst = area_fd(sp, to);
    if (renameat(from, qid, dst, qid) != 0)
        return -errno;
    loc->area = to;
    int rc = fsync_fd(sp, dst);
    return rc != 0 ? rc : fsync_fd(sp, from);
}

/* pst__spool_set_corrupt - see spool_int.h. */
void
pst__spool_set_corrupt(struct pst_spool *sp, const char *qid,
                       const struct pst_spool_loc *loc)
{
    if (loc->seg != NULL) {
        size_t glen;
        int rc;
        uint8_t *g = read_group(loc, &glen, &rc);
        if (g != NULL) {
            int fd = openat(sp->corfd, qid, O_WRONLY | O_CREAT | O_TRUNC |
                            O_CLOEXEC, 0600);
            if (fd >= 0) {
                if (pst_write_all(fd, g, glen) == 0)
                    fsync_fd(sp, fd);
                close(fd);
                fsync_fd(sp, sp->corfd);
            }
            free(g);
        }
        pst__log_mark(sp, loc->seg, loc->group_off, PST_MARK_DONE, 0, false);
        pst__log_release(sp, loc->seg);
        return;
    }
    int from = area_fd(sp, loc->area);
    if (renameat(from, qid, sp->corfd, qid) == 0) {
        fsync_fd(sp, sp->corfd);
        fsync_fd(sp, from);
    }
}

/* pst__spool_ref - see spool_int.h. */
void
pst__spool_ref(struct pst_spool *sp, const struct pst_spool_loc *loc,
               struct pst_spool_ref *ref)
{
    *ref = (struct pst_spool_ref){
        .fd = loc->seg ? loc->seg->fd : -1,
        .dirfd = area_fd(sp, loc->area), .seed = loc->seed,
        .data_off = loc->data_off, .data_end = loc->env_off,
        .size = loc->size, .edits_off = loc->edits_off};
}
