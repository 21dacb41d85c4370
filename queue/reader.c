/*
 * reader.c - stream a committed message's text back out of its spool file
 * for a transport, verifying each CHUNK record's CRC before handing out
 * any of its bytes.
 *
 * When the file holds an EDITS record (the filters' edits, right after the
 * ENVELOPE record), the text is passed through queue/edits.c on its way
 * out: the transport sees the edited message, the file keeps the
 * original. The blob is checked (CRC, then its own structure) at open.
 *
 * Memory: one buffer of PST_SPOOL_WBUF (a whole CHUNK record). Errors are
 * sticky: after -EBADMSG (checksum) or -EIO every read returns the same
 * error, and pst_spool_reader_read(r, NULL, 0) reports it.
 */
#include <errno.h>
#include <fcntl.h>
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
    uint64_t data_off, data_end, size;
    uint64_t off;           /* file offset of the next record */
    uint8_t *buf;
    size_t have, pos;       /* payload bytes in buf + PST_REC_HDR_LEN */
    int err;
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

/* Find an EDITS record after the ENVELOPE record at data_end and set up
 * the edit applier. 0 also when there is none. */
static int
load_edits(struct pst_spool_reader *r)
{
    uint8_t h[PST_REC_HDR_LEN];
    int rc = pread_all(r->fd, h, sizeof(h), r->data_end);
    if (rc != 0)
        return rc;
    uint64_t next = r->data_end + PST_REC_OVERHEAD + le32(h + 4);
    rc = pread_all(r->fd, h, sizeof(h), next);
    if (rc != 0 || h[0] != PST_REC_EDITS)
        return 0;                   /* none (the COMMIT record follows) */
    uint32_t len = le32(h + 4);
    if (len == 0 || len > PST_REC_MAX)
        return -EBADMSG;
    uint8_t *p = pst_xmalloc(PST_REC_HDR_LEN + len + PST_REC_CRC_LEN);
    memcpy(p, h, PST_REC_HDR_LEN);
    rc = pread_all(r->fd, p + PST_REC_HDR_LEN, len + PST_REC_CRC_LEN,
                   next + PST_REC_HDR_LEN);
    if (rc == 0 && pst_crc32c(0, p, PST_REC_HDR_LEN + len) !=
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

/* pst__reader_open - see reader.h. */
int
pst__reader_open(struct pst_spool_reader **rp,
                 const struct pst_spool_ref *ref, const char *qid)
{
    int fd = openat(ref->dirfd, qid, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct pst_spool_reader *r = pst_xcalloc(1, sizeof(*r));
    r->fd = fd;
    r->data_off = r->off = ref->data_off;
    r->data_end = ref->data_end;
    r->size = ref->size;
    r->buf = pst_xmalloc(PST_SPOOL_WBUF);
    int rc = load_edits(r);
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
    close(r->fd);
    pst_edits_reader_close(r->ed);
    free(r->edits);
    free(r->buf);
    free(r);
}

static int
pread_all(int fd, void *p, size_t n, uint64_t off)
{
    uint8_t *b = p;
    while (n > 0) {
        ssize_t k = pread(fd, b, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            return -EBADMSG;        /* shorter than its records say */
        b += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

/* Load the next CHUNK record into buf. */
static int
next_chunk(struct pst_spool_reader *r)
{
    uint8_t *h = r->buf;
    int rc = pread_all(r->fd, h, PST_REC_HDR_LEN, r->off);
    if (rc != 0)
        return rc;
    uint32_t len = (uint32_t)h[4] | (uint32_t)h[5] << 8 |
                   (uint32_t)h[6] << 16 | (uint32_t)h[7] << 24;
    if (h[0] != PST_REC_CHUNK || len > PST_CHUNK_MAX ||
        r->off + PST_REC_OVERHEAD + len > r->data_end)
        return -EBADMSG;
    rc = pread_all(r->fd, h + PST_REC_HDR_LEN, len + PST_REC_CRC_LEN,
                   r->off + PST_REC_HDR_LEN);
    if (rc != 0)
        return rc;
    const uint8_t *c = h + PST_REC_HDR_LEN + len;
    uint32_t want = (uint32_t)c[0] | (uint32_t)c[1] << 8 |
                    (uint32_t)c[2] << 16 | (uint32_t)c[3] << 24;
    if (pst_crc32c(0, h, PST_REC_HDR_LEN + len) != want)
        return -EBADMSG;
    r->off += PST_REC_OVERHEAD + len;
    r->pos = PST_REC_HDR_LEN;
    r->have = PST_REC_HDR_LEN + len;
    return 0;
}

ssize_t
pst_spool_reader_read(struct pst_spool_reader *r, void *buf, size_t len)
{
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

int
pst_spool_reader_rewind(struct pst_spool_reader *r)
{
    if (r->err)
        return r->err;
    r->off = r->data_off;
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
