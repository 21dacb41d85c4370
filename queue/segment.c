/*
 * segment.c - the log of the spool: preallocated segment files that hold
 * whole small messages as groups of records (docs/SPOOL.md, "Segments").
 *
 *   segment = header group*            header: 64 bytes, crc seed 0
 *   header  = "PSTL" u32:2 u64:incarnation u32:salt u32:0 u8[40]:0 u32:crc
 *   group   = MARK INFO CHUNK ENVELOPE [EDITS] COMMIT, 16-byte aligned,
 *             every record's crc continued from the salt
 *
 * Threads. The loop thread appends to the head (pst__log_append) and is
 * the only writer of groups. Anyone holding a message's reference may
 * rewrite its MARK (pst__log_mark): its state, and while it is live the
 * recipients delivered so far. The segment thread (seg_main) prepares
 * the next head: a spare put back to use (a new header and salt) or a new
 * file, zero-filled and synced, so that an fdatasync of a batch writes
 * data and no metadata. The sync thread (spool.c) syncs the segments of
 * each commit batch and those with MARKs waiting, and reclaims segments
 * whose last message is gone (pst__log_reclaim): they become spares, or
 * are unlinked beyond PST_SEG_SPARES.
 *
 * References: one per live message whose group is in the segment (taken
 * at append or recovery, released once the MARK that ends it is written -
 * or when the message goes although it could not be), one while it is the
 * head. The last one queues it for reclaim.
 *
 * Limits: a group is at most PST_GROUP_MAX bytes; a segment at least
 * PST_SEG_MIN; recovery reads through one buffer of 2 * PST_GROUP_MAX.
 */
#include "queue/spool_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/log.h"
#include "core/strmap.h"
#include "core/util.h"

#define PST_SEG_MAGIC "PSTL"
#define PST_SEG_VERSION 2u
#define PST_SEG_HDR 64u
#define PST_SEG_MIN (1024u * 1024u)
#define PST_SEG_SPARES 2u
/* zero-filling a new segment: one write of this size at a time */
#define PST_SEG_FILL (1024u * 1024u)
/* after a failed prepare (disk full), try again after this long */
#define PST_SEG_RETRY_MS 5000u

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
hdr_encode(uint8_t *h, uint64_t incarnation, uint32_t salt)
{
    memset(h, 0, PST_SEG_HDR);
    memcpy(h, PST_SEG_MAGIC, 4);
    pst__le_put(h + 4, PST_SEG_VERSION, 4);
    pst__le_put(h + 8, incarnation, 8);
    pst__le_put(h + 16, salt, 4);
    pst__le_put(h + PST_SEG_HDR - 4, pst_crc32c(0, h, PST_SEG_HDR - 4), 4);
}

static bool
hdr_decode(const uint8_t *h, uint64_t *incarnation, uint32_t *salt)
{
    if (memcmp(h, PST_SEG_MAGIC, 4) != 0 ||
        pst__le_get(h + 4, 4) != PST_SEG_VERSION ||
        pst_crc32c(0, h, PST_SEG_HDR - 4) != pst__le_get(h + PST_SEG_HDR - 4, 4))
        return false;
    *incarnation = pst__le_get(h + 8, 8);
    *salt = (uint32_t)pst__le_get(h + 16, 4);
    return true;
}

static uint32_t
new_salt(void)
{
    uint32_t s;
    if (getrandom(&s, sizeof(s), 0) != sizeof(s))
        s = (uint32_t)now_ms() ^ (uint32_t)getpid();
    return s;
}

static struct pst_seg *
seg_new(int fd, unsigned id, uint64_t cap)
{
    struct pst_seg *s = pst_xcalloc(1, sizeof(*s));
    s->fd = fd;
    s->id = id;
    s->cap = cap;
    atomic_init(&s->refs, 0);
    atomic_init(&s->broken, false);
    return s;
}

static void
seg_name(char *buf, size_t n, unsigned id, bool tmp)
{
    snprintf(buf, n, "seg-%08X%s", id, tmp ? ".tmp" : "");
}

/* pst__log_open - see spool_int.h: log/ exists and is open. */
int
pst__log_open(struct pst_spool *sp, struct pst_err *err)
{
    if (mkdirat(sp->dirfd, "log", 0700) != 0 && errno != EEXIST)
        goto fail;
    sp->logfd = openat(sp->dirfd, "log", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sp->logfd < 0)
        goto fail;
    return 0;
fail:
    pst_err_add(err, NULL, 0, "spool %s/log: %s", sp->dir, strerror(errno));
    return -errno;
}

/* ---- preparing the next head (segment thread) ---- */

/* A sync while preparing a segment: off the commit path, so not in the
 * spool's fsync count (tests and bench/ count the commits' syncs). */
static int
prep_sync(int fd, bool data)
{
    return pst__sync_raw(fd, data);
}

/* Put spare s back to use: a new incarnation and salt in its header. */
static int
seg_reuse(struct pst_spool *sp, struct pst_seg *s)
{
    uint8_t h[PST_SEG_HDR];
    uint32_t salt = new_salt();
    uint64_t inc;

    pthread_mutex_lock(&sp->mu);
    inc = ++sp->incarnation;
    pthread_mutex_unlock(&sp->mu);
    hdr_encode(h, inc, salt);
    int rc = pst__pwrite_all(s->fd, h, sizeof(h), 0);
    if (rc == 0)
        rc = prep_sync(s->fd, true);
    if (rc != 0)
        return rc;
    s->salt = salt;
    s->incarnation = inc;
    s->tail = PST_SEG_HDR;
    atomic_fetch_add(&sp->n_prepared, 1);
    return 0;
}

/* A new segment file: written whole (zeros), synced, then named. */
static int
seg_create(struct pst_spool *sp, struct pst_seg **out)
{
    char tmp[32], name[32];
    uint8_t *zero = NULL;
    unsigned id;
    int fd, rc;

    pthread_mutex_lock(&sp->mu);
    id = sp->next_id++;
    pthread_mutex_unlock(&sp->mu);
    seg_name(tmp, sizeof(tmp), id, true);
    seg_name(name, sizeof(name), id, false);
    fd = openat(sp->logfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    zero = pst_xcalloc(1, PST_SEG_FILL);
    rc = 0;
    for (uint64_t off = 0; rc == 0 && off < sp->seg_size;
         off += PST_SEG_FILL) {
        rc = pst__pwrite_all(fd, zero, (size_t)PST_MIN((uint64_t)PST_SEG_FILL,
                                                  sp->seg_size - off), off);
#ifndef POSTERN_TEST_NO_SYNC
        /* start the writeback of each piece as it is written */
        if (rc == 0)
            sync_file_range(fd, (off_t)off, PST_SEG_FILL,
                            SYNC_FILE_RANGE_WRITE);
#endif
    }
    free(zero);
    struct pst_seg *s = seg_new(fd, id, sp->seg_size);
    if (rc == 0)
        rc = seg_reuse(sp, s);      /* header, then sync the whole file */
    if (rc == 0 && renameat(sp->logfd, tmp, sp->logfd, name) != 0)
        rc = -errno;
    if (rc == 0)
        rc = prep_sync(sp->logfd, false);
    if (rc != 0) {
        unlinkat(sp->logfd, tmp, 0);
        close(fd);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* Prepare the next head: a spare put back to use, or a new segment; on
 * failure (disk full) the next try waits PST_SEG_RETRY_MS. Called with mu
 * held; drops it while it works. */
static void
prepare(struct pst_spool *sp)
{
    struct pst_seg *s = TAILQ_FIRST(&sp->spares);
    if (s != NULL) {
        TAILQ_REMOVE(&sp->spares, s, qlink);
        sp->nspares--;
        s->queued = false;
        s->dirty = false;
    }
    pthread_mutex_unlock(&sp->mu);
    bool fresh = s == NULL;
    int rc = s != NULL ? seg_reuse(sp, s) : seg_create(sp, &s);
    pthread_mutex_lock(&sp->mu);
    if (rc != 0) {
        pst_warn("event=spool_segment_error op=%s error=\"%s\"",
                 fresh ? "create" : "reuse", strerror(-rc));
        sp->prep_retry = now_ms() + PST_SEG_RETRY_MS;
        if (s != NULL) {            /* a spare that fails is let go */
            atomic_store(&s->broken, true);
            s->state = PST_SEG_SEALED;
            s->queued = true;
            TAILQ_INSERT_TAIL(&sp->reclaim, s, qlink);
            pthread_cond_signal(&sp->cv);
        }
        return;
    }
    if (fresh)
        TAILQ_INSERT_TAIL(&sp->segs, s, link);
    s->state = PST_SEG_READY;
    sp->ready = s;
}

static void *
seg_main(void *arg)
{
    struct pst_spool *sp = arg;

    pst_stop_signals_block(true);   /* the loop thread's to take */
    pthread_mutex_lock(&sp->mu);
    for (;;) {
        while (!sp->stop &&
               (sp->ready != NULL || now_ms() < sp->prep_retry)) {
            if (sp->ready == NULL) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_sec += 1;
                pthread_cond_timedwait(&sp->seg_cv, &sp->mu, &ts);
            } else {
                pthread_cond_wait(&sp->seg_cv, &sp->mu);
            }
        }
        if (sp->stop)
            break;
        prepare(sp);
    }
    pthread_mutex_unlock(&sp->mu);
    return NULL;
}

/* ---- appending (loop thread) ---- */

static void
seg_unref(struct pst_spool *sp, struct pst_seg *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    pthread_mutex_lock(&sp->mu);
    if (!s->queued)
        s->queued = true;
    else
        TAILQ_REMOVE(&sp->dirty, s, qlink);     /* reclaim syncs it */
    TAILQ_INSERT_TAIL(&sp->reclaim, s, qlink);
    pthread_cond_signal(&sp->cv);
    pthread_mutex_unlock(&sp->mu);
}

/* The head with room for len bytes, rotating to the ready segment. */
static struct pst_seg *
head_for(struct pst_spool *sp, uint64_t len)
{
    struct pst_seg *h = sp->head;

    if (h != NULL && !atomic_load(&h->broken) && h->tail + len <= h->cap)
        return h;
    pthread_mutex_lock(&sp->mu);
    struct pst_seg *n = sp->ready;
    if (n != NULL && n->tail + len <= n->cap) {
        sp->ready = NULL;
        n->state = PST_SEG_HEAD;
        atomic_fetch_add(&n->refs, 1);      /* the head's reference */
        pthread_cond_signal(&sp->seg_cv);   /* prepare the next */
    } else {
        n = NULL;
    }
    if (h != NULL && (n != NULL || atomic_load(&h->broken)))
        h->state = PST_SEG_SEALED;
    pthread_mutex_unlock(&sp->mu);
    if (h != NULL && (n != NULL || atomic_load(&h->broken))) {
        sp->head = NULL;
        seg_unref(sp, h);
    }
    if (n != NULL)
        sp->head = n;
    return n;
}

/* The records after the text (ENVELOPE, EDITS, COMMIT) for a group whose
 * ENVELOPE will be at env_off, checksummed with salt. */
static void
group_tail(struct pst_tbuf *t, const struct pst_spool_msg *m,
           uint64_t env_off, uint32_t salt)
{
    t->len = 0;
    size_t s = pst__rec_begin(t, PST_REC_ENVELOPE);
    pst__env_encode(t, &m->env);
    pst__rec_end_seed(t, s, salt);
    if (m->edits != NULL) {
        s = pst__rec_begin(t, PST_REC_EDITS);
        pst_tbuf_add(t, m->edits, m->edits_len);
        pst__rec_end_seed(t, s, salt);
    }
    s = pst__rec_begin(t, PST_REC_COMMIT);
    pst__put_u64(t, env_off);
    pst__put_u64(t, m->size);
    pst__rec_end_seed(t, s, salt);
}

/* pst__log_append - see spool_int.h. m->buf holds room for MARK, INFO
 * and the CHUNK header, then the text and room for its crc. */
int
pst__log_append(struct pst_spool *sp, struct pst_spool_msg *m)
{
    uint64_t text = PST_GROUP_PREFIX + m->fill + PST_REC_CRC_LEN;
    struct pst_tbuf tail = {0};
    static const uint8_t zeros[PST_GROUP_ALIGN];

    /* the length does not depend on where the group goes */
    group_tail(&tail, m, 0, 0);
    uint64_t len = text + tail.len;
    uint64_t padded = (len + PST_GROUP_ALIGN - 1) & ~(uint64_t)15;
    struct pst_seg *s = padded <= PST_GROUP_MAX ? head_for(sp, padded)
                                                : NULL;
    if (s == NULL) {
        pst_tbuf_free(&tail);
        return -EAGAIN;
    }
    uint64_t off = s->tail;
    group_tail(&tail, m, off + text, s->salt);
    /* the EDITS record follows the ENVELOPE record */
    uint64_t edits_off = m->edits == NULL
                             ? 0
                             : off + text + PST_REC_OVERHEAD +
                                   pst__le_get((const uint8_t *)tail.p + 4, 4);
    uint8_t *b = m->buf;
    /* MARK, INFO, CHUNK: their offsets are known now */
    pst__mark_encode(b, PST_MARK_LIVE, 0, s->salt);
    uint8_t *info = b + PST_MARK_LEN;
    memcpy(info + PST_REC_HDR_LEN, m->qid, PST_QID_LEN);
    pst__le_put(info + PST_REC_HDR_LEN + 16, (uint64_t)(int64_t)m->created, 8);
    pst__le_put(info + PST_REC_HDR_LEN + 24,
           pst__rec_frame(info, PST_REC_INFO, 24, s->salt), 4);
    uint8_t *ch = b + PST_GROUP_PREFIX - PST_REC_HDR_LEN;
    pst__le_put(ch + PST_REC_HDR_LEN + m->fill,
           pst__rec_frame(ch, PST_REC_CHUNK, (uint32_t)m->fill, s->salt), 4);
    struct iovec iov[3] = {
        {b, (size_t)text},
        {tail.p, tail.len},
        {(void *)zeros, (size_t)(padded - len)},
    };
    ssize_t n;
    do
        n = pwritev(s->fd, iov, 3, (off_t)off);
    while (n < 0 && errno == EINTR);
    pst_tbuf_free(&tail);
    if (n != (ssize_t)padded) {
        int rc = n < 0 ? -errno : -EIO;
        /* whatever reached the file is not a whole group; never append
         * here again */
        atomic_store(&s->broken, true);
        return rc;
    }
    s->tail = off + padded;
    atomic_fetch_add(&s->refs, 1);          /* the message's */
    m->seg = s;
    m->group_off = off;
    m->group_end = off + padded;
    m->data_off = off + PST_GROUP_PREFIX - PST_REC_HDR_LEN;
    m->env_off = off + text;
    m->edits_off = edits_off;
    return 0;
}

/* ---- MARKs ---- */

/* pst__log_mark - see spool_int.h. The MARK is 16 bytes at a 16-byte
 * boundary of a block the segment's zero fill allocated: on a file system
 * that overwrites in place the write copies into the page cache and cannot
 * meet a full disk; should it fail, the MARK is as it was. */
int
pst__log_mark(struct pst_spool *sp, struct pst_seg *s, uint64_t off,
              enum pst_mark mk, uint32_t rcpts, bool sync)
{
    uint8_t b[PST_MARK_LEN];
    int rc;

    pst__mark_encode(b, mk, rcpts, s->salt);
    rc = pst__pwrite_all(s->fd, b, sizeof(b), off);
    if (rc != 0) {
        pst_err("event=spool_mark_error segment=%08X offset=%" PRIu64
                " error=\"%s\"", s->id, off, strerror(-rc));
        return rc;
    }
    if (sync) {
        if ((rc = pst__sync_fd(sp, s->fd, true)) != 0) {
            /* as a failed batch sync: never appended to again */
            atomic_store(&s->broken, true);
            pst_err("event=spool_fsync_error segment=%08X error=\"%s\" "
                    "op=mark", s->id, strerror(-rc));
        }
        return rc;
    }
    pthread_mutex_lock(&sp->mu);
    /* the sync thread is woken by the first MARK waiting only: it then
     * waits at most PST_REMOVAL_SYNC_WAIT_MS for a batch */
    bool first = TAILQ_EMPTY(&sp->dirty) && !sp->removals;
    s->dirty = true;
    if (!s->queued) {
        s->queued = true;
        TAILQ_INSERT_TAIL(&sp->dirty, s, qlink);
    }
    if (first)
        pthread_cond_signal(&sp->cv);
    pthread_mutex_unlock(&sp->mu);
    return 0;
}

/* pst__log_release - see spool_int.h. */
void
pst__log_release(struct pst_spool *sp, struct pst_seg *s)
{
    seg_unref(sp, s);
}

/* pst__log_reclaim - see spool_int.h. The sync thread's, and recovery's
 * before any message: each segment on the list is taken by one caller. */
void
pst__log_reclaim(struct pst_spool *sp)
{
    struct pst_seg *s;
    char name[32];

    pthread_mutex_lock(&sp->mu);
    while ((s = TAILQ_FIRST(&sp->reclaim)) != NULL) {
        TAILQ_REMOVE(&sp->reclaim, s, qlink);
        if (atomic_load(&s->refs) != 0 || s->state == PST_SEG_HEAD) {
            s->queued = false;      /* taken again meanwhile */
            continue;
        }
        bool dirty = s->dirty;
        s->dirty = false;
        pthread_mutex_unlock(&sp->mu);
        /* its MARKs durable before its file can be put to another use */
        int rc = dirty ? pst__sync_fd(sp, s->fd, true) : 0;
        pthread_mutex_lock(&sp->mu);
        s->queued = false;
        if (rc == 0 && !atomic_load(&s->broken) &&
            sp->nspares < PST_SEG_SPARES) {
            s->state = PST_SEG_SPARE;
            s->queued = true;
            TAILQ_INSERT_TAIL(&sp->spares, s, qlink);
            sp->nspares++;
            pthread_cond_signal(&sp->seg_cv);
            continue;
        }
        /* one spare too many, or one that failed: the file goes (its
         * groups are all done; a file that comes back is scanned again) */
        TAILQ_REMOVE(&sp->segs, s, link);
        seg_name(name, sizeof(name), s->id, false);
        unlinkat(sp->logfd, name, 0);
        close(s->fd);
        free(s);
    }
    pthread_mutex_unlock(&sp->mu);
}

/* ---- recovery ---- */

struct lscan {
    struct pst_spool *sp;
    const struct pst_strmap *files;
    struct pst_strmap *seen;        /* IDs loaded from the log */
    pst_spool_sink sink;
    void *arg;
    uint64_t gen_max;
    unsigned loaded, moved, gaps, torn;
    uint8_t *buf;                   /* 2 * PST_GROUP_MAX */
};

/* Copy the bytes [off, off+len) of segment s to corrupt/ for the
 * operator (bounded by the segment). */
static void
keep_damage(struct pst_spool *sp, struct pst_seg *s, uint64_t off,
            uint64_t len)
{
    char name[64];
    uint8_t *b = pst_xmalloc(PST_SEG_FILL);
    snprintf(name, sizeof(name), "seg-%08X.at-%" PRIu64, s->id, off);
    int fd = openat(sp->corfd, name, O_WRONLY | O_CREAT | O_TRUNC |
                    O_CLOEXEC, 0600);
    for (uint64_t o = 0; fd >= 0 && o < len; o += PST_SEG_FILL) {
        size_t got, want = (size_t)PST_MIN((uint64_t)PST_SEG_FILL, len - o);
        if (pst__pread_upto(s->fd, b, want, off + o, &got) != 0 || got == 0 ||
            pst_write_all(fd, b, got) != 0)
            break;
    }
    if (fd >= 0) {
        pst__sync_fd(sp, fd, false);
        close(fd);
    }
    free(b);
}

/* One live group found: load it, or mark it moved if a file has it. */
static void
found_group(struct lscan *ls, struct pst_seg *s, struct pst_scan *sc,
            uint64_t off, bool *wrote)
{
    bool dup = pst__qid_valid(sc->qid) &&
               pst_strmap_gets(ls->seen, sc->qid) != NULL;

    if (!pst__qid_valid(sc->qid) ||
        pst_strmap_gets(ls->files, sc->qid) != NULL || dup) {
        uint8_t b[PST_MARK_LEN];
        pst__mark_encode(b, dup ? PST_MARK_DONE : PST_MARK_MOVED, 0,
                         s->salt);
        if (pst__pwrite_all(s->fd, b, sizeof(b), off) == 0)
            *wrote = true;
        pst_info("msg=%.16s event=spool_recover segment=%08X offset=%" PRIu64
                 " action=%s", sc->qid, s->id, off,
                 dup ? "dropped reason=duplicate" : "moved reason=file");
        ls->moved++;
        pst__scan_free(sc);
        return;
    }
    ls->gen_max = PST_MAX(ls->gen_max,
                          strtoull(sc->qid, NULL, 16) >> PST_QID_SEQ_BITS);
    *pst_strmap_slot(ls->seen, sc->qid, PST_QID_LEN, NULL) = s;
    struct pst_spool_entry e = {
        .loc = {.area = PST_AREA_ACTIVE, .seg = s, .group_off = off,
                .seed = s->salt, .data_off = sc->data_off,
                .env_off = sc->env_off, .edits_off = sc->edits_off,
                .size = sc->msg_size, .file_size = sc->good_end,
                .marked = sc->marked},
        .env = sc->env, .rcpt_err = sc->rcpt_err, .recovered = true,
    };
    memcpy(e.qid, sc->qid, sizeof(e.qid));
    memset(sc, 0, sizeof(*sc));
    atomic_fetch_add(&s->refs, 1);
    ls->sink(ls->arg, &e);
    pst__errs_free(e.rcpt_err, e.env.nrcpts);
    free(e.last_error);
    pst_envelope_free(&e.env);
    ls->loaded++;
}

/* Read every group of segment s (docs/SPOOL.md, "Recovery at start"). */
static int
scan_segment(struct lscan *ls, struct pst_seg *s)
{
    const size_t win = 2 * (size_t)PST_GROUP_MAX;
    uint64_t base = 0, pos = PST_SEG_HDR, gap = 0;
    size_t have = 0;
    bool in_gap = false, torn = false, wrote = false;

    while (pos + PST_MARK_LEN <= s->cap) {
        /* keep at least a whole group's worth in the window */
        if (pos - base + PST_GROUP_MAX > have && base + have < s->cap) {
            base = pos;
            int rc = pst__pread_upto(s->fd, ls->buf, win, base, &have);
            if (rc != 0)
                return rc;
        }
        size_t at = (size_t)(pos - base), avail = have - at;
        if (avail < PST_MARK_LEN)
            break;
        struct pst_scan sc;
        int mark = -1;
        int r = pst__group_parse(ls->buf + at, avail, pos, s->salt, &sc,
                                 &mark);
        if (r == PST_GROUP_OK) {
            if (in_gap) {
                /* valid groups after bytes that are not: damage, or an
                 * unacknowledged write that reached the disk before an
                 * earlier one (power loss) - logged, kept for a look */
                pst_warn("event=spool_segment_gap segment=%08X offset=%"
                         PRIu64 " bytes=%" PRIu64, s->id, gap, pos - gap);
                keep_damage(ls->sp, s, gap, pos - gap);
                ls->gaps++;
                in_gap = torn = false;
            }
            uint64_t end = sc.good_end;
            if (mark == PST_MARK_DONE || mark == PST_MARK_MOVED)
                pst__scan_free(&sc);
            else
                found_group(ls, s, &sc, pos, &wrote);
            pos = end;
            continue;
        }
        if (!in_gap) {
            in_gap = true;
            gap = pos;
            /* a MARK that checks out on a group that does not: the
             * group's write was torn by the crash */
            torn = pst__mark_decode(ls->buf + at, s->salt, NULL) ==
                   PST_MARK_LIVE;
        }
        pos += PST_GROUP_ALIGN;
    }
    if (in_gap && torn) {
        pst_warn("event=spool_torn_tail segment=%08X offset=%" PRIu64
                 " ignored_bytes=%" PRIu64, s->id, gap, s->cap - gap);
        ls->torn++;
    }
    if (wrote)
        pst__sync_fd(ls->sp, s->fd, true);
    return 0;
}

/* A file in log/ that is not a segment we can read: set aside. */
static void
log_quarantine(struct pst_spool *sp, const char *name, const char *why)
{
    if (renameat(sp->logfd, name, sp->corfd, name) == 0)
        pst_err("event=spool_corrupt dir=log file=%s reason=\"%s\" "
                "action=moved to=corrupt/%s", name, why, name);
    else
        pst_err("event=spool_corrupt dir=log file=%s reason=\"%s\" "
                "action=left error=\"%s\"", name, why, strerror(errno));
}

static int
seg_cmp(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

/* pst__log_recover - see spool_int.h. */
int
pst__log_recover(struct pst_spool *sp, const void *files,
                 pst_spool_sink sink, void *arg, uint64_t *gen_max,
                 unsigned *loaded, struct pst_err *err)
{
    struct lscan ls = {.sp = sp, .files = files, .sink = sink, .arg = arg};
    unsigned *ids = NULL;
    size_t nids = 0, cap = 0;
    int fd2 = dup(sp->logfd), rc = 0;
    DIR *d;
    struct dirent *de;

    if (fd2 < 0 || (d = fdopendir(fd2)) == NULL) {
        if (fd2 >= 0)
            close(fd2);
        pst_err_add(err, NULL, 0, "spool %s/log: %s", sp->dir,
                    strerror(errno));
        return -errno;
    }
    while ((de = readdir(d)) != NULL) {
        unsigned id;
        char tail[8] = "";
        if (de->d_name[0] == '.')
            continue;
        if (sscanf(de->d_name, "seg-%8X%7s", &id, tail) >= 1 &&
            strcmp(tail, ".tmp") == 0) {
            unlinkat(sp->logfd, de->d_name, 0);     /* never completed */
            continue;
        }
        char want[32];
        if (sscanf(de->d_name, "seg-%8X", &id) != 1 ||
            (seg_name(want, sizeof(want), id, false),
             strcmp(want, de->d_name) != 0)) {
            log_quarantine(sp, de->d_name, "not a segment name");
            continue;
        }
        if (nids == cap) {
            cap = cap ? 2 * cap : 16;
            ids = pst_xrealloc(ids, cap * sizeof(*ids));
        }
        ids[nids++] = id;
        sp->next_id = PST_MAX(sp->next_id, id + 1);
    }
    closedir(d);
    if (nids > 0)
        qsort(ids, nids, sizeof(*ids), seg_cmp);

    ls.seen = pst_strmap_new();
    ls.buf = pst_xmalloc(2 * (size_t)PST_GROUP_MAX);
    for (size_t i = 0; i < nids && rc == 0; i++) {
        char name[32];
        uint8_t h[PST_SEG_HDR];
        struct stat st;
        size_t got;
        seg_name(name, sizeof(name), ids[i], false);
        int fd = openat(sp->logfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || fstat(fd, &st) != 0 ||
            pst__pread_upto(fd, h, sizeof(h), 0, &got) != 0) {
            rc = -errno;
            pst_err_add(err, NULL, 0, "spool %s/log/%s: %s", sp->dir, name,
                        strerror(errno));
            if (fd >= 0)
                close(fd);
            break;
        }
        struct pst_seg *s = seg_new(fd, ids[i], (uint64_t)st.st_size);
        if (got < sizeof(h) || (uint64_t)st.st_size < PST_SEG_MIN ||
            !hdr_decode(h, &s->incarnation, &s->salt)) {
            close(fd);
            free(s);
            log_quarantine(sp, name, "bad segment header");
            continue;
        }
        sp->incarnation = PST_MAX(sp->incarnation, s->incarnation);
        s->state = PST_SEG_SEALED;
        s->tail = s->cap;
        TAILQ_INSERT_TAIL(&sp->segs, s, link);
        int src = scan_segment(&ls, s);
        if (src != 0) {
            /* a read error (a bad sector): what was read is loaded; the
             * file is kept as it is for this run - never reused - and
             * read again at the next start, as a message file that
             * cannot be read is left in place */
            atomic_fetch_add(&s->refs, 1);
            pst_err("event=spool_recover segment=%08X action=left "
                    "error=\"%s\"", s->id, strerror(-src));
        }
    }
    free(ls.buf);
    free(ids);
    pst_strmap_free(ls.seen, NULL);
    /* segments nothing lives in are spares (or go) from the start */
    struct pst_seg *s, *next;
    for (s = TAILQ_FIRST(&sp->segs); s != NULL; s = next) {
        next = TAILQ_NEXT(s, link);
        if (atomic_load(&s->refs) == 0) {
            s->queued = true;
            TAILQ_INSERT_TAIL(&sp->reclaim, s, qlink);
        }
    }
    if (rc == 0) {
        pst__log_reclaim(sp);
        pst_info("event=spool_log segments=%u loaded=%u moved=%u gaps=%u "
                 "torn=%u", (unsigned)nids, ls.loaded, ls.moved, ls.gaps,
                 ls.torn);
        /* the first head is ready before the gateway listens, so what
         * goes where does not depend on a race with start-up */
        pthread_mutex_lock(&sp->mu);
        prepare(sp);
        pthread_mutex_unlock(&sp->mu);
        rc = pthread_create(&sp->seg_thr, NULL, seg_main, sp);
        if (rc != 0) {
            pst_err_add(err, NULL, 0, "spool: segment thread: %s",
                        strerror(rc));
            rc = -rc;
        } else {
            sp->seg_started = true;
        }
    }
    *gen_max = PST_MAX(*gen_max, ls.gen_max);
    *loaded += ls.loaded;
    return rc;
}

/* pst__log_close - stop the segment thread, close every segment (the
 * sync thread has stopped; no message holds a reader). */
void
pst__log_close(struct pst_spool *sp)
{
    struct pst_seg *s;

    if (sp->seg_started) {
        pthread_mutex_lock(&sp->mu);
        sp->stop = true;
        pthread_cond_signal(&sp->seg_cv);
        pthread_mutex_unlock(&sp->mu);
        pthread_join(sp->seg_thr, NULL);
        sp->seg_started = false;
    }
    while ((s = TAILQ_FIRST(&sp->segs)) != NULL) {
        TAILQ_REMOVE(&sp->segs, s, link);
        if (s->dirty)
            pst__sync_fd(sp, s->fd, true);
        close(s->fd);
        free(s);
    }
    sp->head = sp->ready = NULL;
    TAILQ_INIT(&sp->spares);
    TAILQ_INIT(&sp->dirty);
    TAILQ_INIT(&sp->reclaim);
    if (sp->logfd >= 0)
        close(sp->logfd);
    sp->logfd = -1;
}
