/*
 * reader.c - stream a committed message's text back out of the spool (a
 * message file, or its group in a log segment) for a transport, verifying
 * each CHUNK record's CRC before handing out any of its bytes.
 *
 * When the message has an EDITS record (the filters' edits, right after
 * the ENVELOPE record), the text is passed through queue/edits.c on its
 * way out: the transport sees the edited message, the spool keeps the
 * original. The blob is checked (CRC, then its own structure) at open.
 *
 * A segment's fd is shared (pread only, never closed here): the message's
 * reference on its segment keeps it open while any reader exists.
 *
 * Memory: one buffer as large as the stored text's records, at most
 * PST_SPOOL_WBUF (a whole CHUNK record). A pread fills it with as many
 * records as fit; the records it holds are taken from it, so a text whose
 * records fit is read with one pread however many records it has, and
 * read again (rewind) with none. Errors are sticky: after -EBADMSG
 * (checksum) or -EIO every read returns the same error, and
 * pst_spool_reader_read(r, NULL, 0) reports it (and reads nothing).
 *
 * pst_spool_reader_try_read takes a message with edits too when its
 * records fit in the buffer: they are loaded whole from the page cache
 * first (-EAGAIN, nothing consumed, if they are not all there), and the
 * applier then works from memory, without a blocking read on the loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/uio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/util.h"
#include "queue/edits.h"
#include "queue/reader.h"
#include "queue/record.h"

struct pst_spool_reader {
    int fd;
    bool own_fd;            /* a message file's: closed with the reader */
    uint32_t seed;
    uint64_t data_off, data_end, size;
    uint64_t off;           /* file offset of the next record */
    uint8_t *buf;
    size_t bufsize;
    uint64_t boff;          /* buf holds the file's [boff, boff + blen) */
    size_t blen;
    size_t have, pos;       /* the current record's payload: buf[pos, have) */
    int err;
    bool nowait;            /* reading for pst_spool_reader_try_read */
    uint8_t *edits;         /* EDITS payload, or NULL */
    size_t edits_len;
    struct pst_edits_reader *ed;
};

static int pread_all(int fd, void *p, size_t n, uint64_t off);
static ssize_t raw_read(void *arg, void *buf, size_t len);

static uint32_t
le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

#define EDITS_PEEK 1024       /* octets of an EDITS record read blind */

/* The EDITS record at off, of which first holds the got octets the file
 * has there (up to EDITS_PEEK past its header): the rest read if it is
 * longer, its CRC checked, the edit applier set up. */
static int
edits_from(struct pst_spool_reader *r, uint64_t off, const uint8_t *first,
           size_t got)
{
    int rc = 0;
    if (got < PST_REC_HDR_LEN)
        return -EBADMSG;
    uint32_t len = le32(first + 4);
    if (first[0] != PST_REC_EDITS || len == 0 || len > PST_REC_MAX)
        return -EBADMSG;
    size_t total = PST_REC_HDR_LEN + (size_t)len + PST_REC_CRC_LEN;
    uint8_t *p = pst_xmalloc(total);
    memcpy(p, first, PST_MIN(got, total));
    if (got < total)
        rc = pread_all(r->fd, p + got, total - got, off + got);
    if (rc == 0 && pst_crc32c(r->seed, p, PST_REC_HDR_LEN + len) !=
                       le32(p + PST_REC_HDR_LEN + len))
        rc = -EBADMSG;
    if (rc == 0) {
        r->edits_len = len;
        r->edits = pst_xmalloc(len);
        memcpy(r->edits, p + PST_REC_HDR_LEN, len);
        rc = pst_edits_reader_open(&r->ed, r->edits, len, raw_read, r);
    }
    free(p);
    return rc;
}

/* Read the EDITS record at off and set up the edit applier. When it
 * follows a text whose records fit in the buffer, a few records on (a
 * log group: CHUNK ENVELOPE EDITS), one pread from the text's start
 * takes both: the text's records stay in buf (checked as they are read),
 * so the message is then read without another system call. Else one
 * pread for a short record, a second for the rest of a longer one. */
static int
load_edits(struct pst_spool_reader *r, uint64_t off)
{
    uint64_t span = r->data_end - r->data_off;
    uint64_t tail = off + PST_REC_HDR_LEN + EDITS_PEEK;
    size_t got;
    int rc;

    if (off >= r->data_end && span > 0 && span <= r->bufsize &&
        tail - r->data_off <= PST_SPOOL_WBUF) {
        size_t n = (size_t)(tail - r->data_off), at = (size_t)(off -
                                                               r->data_off);
        r->buf = pst_xrealloc(r->buf, n);
        rc = pst__pread_upto(r->fd, r->buf, n, r->data_off, &got);
        if (rc != 0)
            return rc;
        if (got < at)
            return -EBADMSG;        /* the file ends before its edits */
        r->boff = r->data_off;
        r->blen = (size_t)span;
        return edits_from(r, off, r->buf + at, got - at);
    }
    uint8_t first[PST_REC_HDR_LEN + EDITS_PEEK];
    rc = pst__pread_upto(r->fd, first, sizeof(first), off, &got);
    return rc != 0 ? rc : edits_from(r, off, first, got);
}

/* pst__reader_open - see reader.h. */
int
pst__reader_open(struct pst_spool_reader **rp,
                 const struct pst_spool_ref *ref, const char *qid)
{
    int fd = ref->fd;
    if (fd < 0 && (fd = openat(ref->dirfd, qid, O_RDONLY | O_CLOEXEC)) < 0)
        return -errno;
    struct pst_spool_reader *r = pst_xcalloc(1, sizeof(*r));
    r->fd = fd;
    r->own_fd = ref->fd < 0;
    r->seed = ref->seed;
    r->data_off = r->off = ref->data_off;
    r->data_end = ref->data_end;
    r->size = ref->size;
    /* the whole text's records when they fit: small messages cost one
     * small buffer and one pread */
    uint64_t span = r->data_end > r->data_off ? r->data_end - r->data_off
                                              : 0;
    r->bufsize = (size_t)PST_MIN(span, (uint64_t)PST_SPOOL_WBUF);
    r->buf = pst_xmalloc(r->bufsize ? r->bufsize : 1);
    int rc = ref->edits_off ? load_edits(r, ref->edits_off) : 0;
    if (rc != 0) {
        pst__reader_close(r);
        return rc;
    }
    *rp = r;
    return 0;
}

void
pst__reader_close(struct pst_spool_reader *r)
{
    if (r == NULL)
        return;
    if (r->own_fd)
        close(r->fd);
    pst_edits_reader_close(r->ed);
    free(r->edits);
    free(r->buf);
    free(r);
}

/* Exactly n bytes at off: a file shorter than its records say is damage. */
static int
pread_all(int fd, void *p, size_t n, uint64_t off)
{
    size_t got;
    int rc = pst__pread_upto(fd, p, n, off, &got);
    return rc != 0 ? rc : got < n ? -EBADMSG : 0;
}

/* n bytes at off if the page cache has them all, else -EAGAIN (also where
 * the file system cannot tell: the caller reads them off the loop). */
static int
pread_cached(int fd, void *p, size_t n, uint64_t off)
{
    struct iovec iov = {p, n};
    ssize_t k;
    do
        k = preadv2(fd, &iov, 1, (off_t)off, RWF_NOWAIT);
    while (k < 0 && errno == EINTR);
    if (k == (ssize_t)n)
        return 0;
    if (k < 0 && errno != EAGAIN && errno != EOPNOTSUPP && errno != EINVAL)
        return -errno;
    return -EAGAIN;
}

/* Fill buf from the file at off: what is left of the text's records, at
 * most a buffer. */
static int
load(struct pst_spool_reader *r, uint64_t off)
{
    size_t want = (size_t)PST_MIN(r->data_end - off, (uint64_t)r->bufsize);
    int rc = r->nowait ? pread_cached(r->fd, r->buf, want, off)
                       : pread_all(r->fd, r->buf, want, off);
    r->blen = 0;
    if (rc != 0)
        return rc;
    r->boff = off;
    r->blen = want;
    return 0;
}

/* The next CHUNK record, from buf when it holds the whole record, else
 * after loading buf from its start; its CRC checked. */
static int
next_chunk(struct pst_spool_reader *r)
{
    uint64_t bend = r->boff + r->blen;
    size_t at;
    uint32_t len;

    if (r->data_end - r->off < PST_REC_OVERHEAD)
        return -EBADMSG;
    if (r->blen == 0 || r->off < r->boff ||
        r->off + PST_REC_OVERHEAD > bend ||
        (uint64_t)le32(r->buf + (r->off - r->boff) + 4) + PST_REC_OVERHEAD >
            bend - r->off) {
        /* not (all) in buf; when buf already reaches the end of the
         * text, the record claims more than there is */
        if (r->blen && r->off >= r->boff && bend == r->data_end)
            return -EBADMSG;
        int rc = load(r, r->off);
        if (rc != 0)
            return rc;
    }
    at = (size_t)(r->off - r->boff);
    const uint8_t *h = r->buf + at;
    len = le32(h + 4);
    if (h[0] != PST_REC_CHUNK || h[1] || h[2] || h[3] ||
        len > PST_CHUNK_MAX ||
        (uint64_t)len + PST_REC_OVERHEAD > r->blen - at)
        return -EBADMSG;
    if (pst_crc32c(r->seed, h, PST_REC_HDR_LEN + len) !=
        le32(h + PST_REC_HDR_LEN + len))
        return -EBADMSG;
    r->off += PST_REC_OVERHEAD + len;
    r->pos = at + PST_REC_HDR_LEN;
    r->have = at + PST_REC_HDR_LEN + len;
    return 0;
}

ssize_t
pst_spool_reader_read(struct pst_spool_reader *r, void *buf, size_t len)
{
    if (len == 0)
        return r->err;              /* the sticky error; nothing read */
    if (r->ed != NULL && !r->err) {
        ssize_t k = pst_edits_reader_read(r->ed, buf, len);
        if (k < 0)
            r->err = (int)k;
        return k;
    }
    return raw_read(r, buf, len);
}

/* The text as stored (what the edits are applied to). */
static ssize_t
raw_read(void *arg, void *buf, size_t len)
{
    struct pst_spool_reader *r = arg;
    size_t got = 0;

    if (r->err)
        return r->err;
    while (got < len) {
        if (r->pos == r->have) {
            if (r->off >= r->data_end)
                break;
            int rc = next_chunk(r);
            if (rc == -EAGAIN && r->nowait)     /* nothing consumed */
                return got ? (ssize_t)got : rc;
            if (rc != 0) {
                r->err = rc;
                return rc;
            }
            continue;
        }
        size_t k = PST_MIN(len - got, r->have - r->pos);
        memcpy((uint8_t *)buf + got, r->buf + r->pos, k);
        r->pos += k;
        got += k;
    }
    return (ssize_t)got;
}

/* pst_spool_reader_try_read - see reader.h. */
ssize_t
pst_spool_reader_try_read(struct pst_spool_reader *r, void *buf, size_t len)
{
    if (r->ed == NULL) {
        if (r->size > PST_SPOOL_WBUF)
            return -EAGAIN;
        r->nowait = true;
        ssize_t n = raw_read(r, buf, len);
        r->nowait = false;
        return n;
    }
    /* edits: the applier reads the text from buf only, never the disk */
    if (r->err)
        return r->err;
    if (r->data_end - r->data_off > r->bufsize)
        return -EAGAIN;
    if (r->blen == 0 || r->boff != r->data_off) {
        r->nowait = true;
        int rc = load(r, r->data_off);
        r->nowait = false;
        if (rc != 0)
            return rc == -EAGAIN ? rc : (r->err = rc);
    }
    return pst_spool_reader_read(r, buf, len);
}

int
pst_spool_reader_rewind(struct pst_spool_reader *r)
{
    if (r->err)
        return r->err;
    r->off = r->data_off;           /* buf keeps what it holds */
    r->pos = r->have = 0;
    if (r->ed != NULL) {
        pst_edits_reader_close(r->ed);
        r->ed = NULL;
        int rc = pst_edits_reader_open(&r->ed, r->edits, r->edits_len,
                                       raw_read, r);
        if (rc != 0)
            return r->err = rc;
    }
    return 0;
}

uint64_t
pst_spool_reader_size(const struct pst_spool_reader *r)
{
    return r->ed ? pst_edits_reader_size(r->ed, r->size) : r->size;
}
