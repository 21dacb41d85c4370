/*
 * edits.c - writing and applying edit records (format in edits.h).
 *
 * The reader rebuilds the header section in memory (bounded by
 * PST_EDITS_HDR_MAX: the original fields are read once, the kept ranges
 * copied out of them), then streams the rest of the original through,
 * swapping in the replacement of each body range as its offset comes by.
 * Memory per reader is therefore the header section plus the blob,
 * whatever the message size. A blob is checked whole at open: ranges in
 * bounds, body ranges sorted and disjoint; anything else is -EBADMSG.
 *
 * Used by one thread at a time (a delivery worker); no shared state.
 */
#include "queue/edits.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

#define EDITS_MAGIC "PSTE\x01"
#define EDITS_MAGIC_LEN 5

static void
put_u64(struct pst_tbuf *b, uint64_t v)
{
    unsigned char x[8];
    for (int i = 7; i >= 0; i--) {
        x[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
    pst_tbuf_add(b, x, 8);
}

static void
put_u32(struct pst_tbuf *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    pst_tbuf_add(b, x, 4);
}

static int
room(const struct pst_tbuf *b, size_t more)
{
    return b->len + more > PST_EDITS_MAX ? -E2BIG : 0;
}

/* pst_edits_begin - start a blob in an empty b. */
int
pst_edits_begin(struct pst_tbuf *b)
{
    pst_tbuf_add(b, EDITS_MAGIC, EDITS_MAGIC_LEN);
    return 0;
}

int
pst_edits_put_hdr(struct pst_tbuf *b, uint64_t hdr_end)
{
    if (room(b, 9) < 0)
        return -E2BIG;
    pst_tbuf_add(b, "H", 1);
    put_u64(b, hdr_end);
    return 0;
}

int
pst_edits_put_keep(struct pst_tbuf *b, uint64_t off, uint64_t len)
{
    if (room(b, 17) < 0)
        return -E2BIG;
    pst_tbuf_add(b, "K", 1);
    put_u64(b, off);
    put_u64(b, len);
    return 0;
}

int
pst_edits_put_text(struct pst_tbuf *b, const void *p, size_t n)
{
    if (n > PST_EDITS_MAX || room(b, 5 + n) < 0)
        return -E2BIG;
    pst_tbuf_add(b, "T", 1);
    put_u32(b, (uint32_t)n);
    pst_tbuf_add(b, p, n);
    return 0;
}

int
pst_edits_put_body(struct pst_tbuf *b, uint64_t off, uint64_t len,
                   const void *p, size_t n)
{
    if (n > PST_EDITS_MAX || room(b, 21 + n) < 0)
        return -E2BIG;
    pst_tbuf_add(b, "B", 1);
    put_u64(b, off);
    put_u64(b, len);
    put_u32(b, (uint32_t)n);
    pst_tbuf_add(b, p, n);
    return 0;
}

/* ---- reading ---- */

struct hop {                        /* one header op */
    bool keep;
    uint64_t off, len;              /* keep: original range; text: in blob */
};

struct bop {                        /* one body replacement */
    uint64_t off, len;
    size_t data, n;                 /* text in blob */
};

struct pst_edits_reader {
    unsigned char *blob;
    size_t blen;
    bool has_hdr;
    uint64_t hdr_end;
    struct hop *h;
    size_t nh;
    struct bop *b;
    size_t nb;
    pst_edits_src_fn src;
    void *arg;
    /* output state */
    struct pst_tbuf head;           /* rebuilt header section */
    size_t head_pos;
    bool head_built;
    uint64_t pos;                   /* original offset consumed */
    size_t bi;                      /* next body op */
    size_t bpos;                    /* bytes of b[bi] replacement sent */
    bool in_repl;                   /* sending b[bi]'s text */
};

static int
get_u64(const unsigned char *p, size_t n, size_t *i, uint64_t *v)
{
    if (n - *i < 8)
        return -EBADMSG;
    uint64_t x = 0;
    for (int k = 0; k < 8; k++)
        x = (x << 8) | p[*i + (size_t)k];
    *i += 8;
    *v = x;
    return 0;
}

static int
get_u32(const unsigned char *p, size_t n, size_t *i, uint32_t *v)
{
    if (n - *i < 4)
        return -EBADMSG;
    *v = (uint32_t)p[*i] << 24 | (uint32_t)p[*i + 1] << 16 |
         (uint32_t)p[*i + 2] << 8 | p[*i + 3];
    *i += 4;
    return 0;
}

static int
parse_blob(struct pst_edits_reader *r)
{
    const unsigned char *p = r->blob;
    size_t n = r->blen, i = EDITS_MAGIC_LEN, ch = 0, cb = 0;
    uint64_t head_size = 0, last_end = 0;

    if (n < EDITS_MAGIC_LEN || memcmp(p, EDITS_MAGIC, EDITS_MAGIC_LEN) != 0)
        return -EBADMSG;
    while (i < n) {
        unsigned char t = p[i++];
        uint64_t off, len;
        uint32_t tl;
        switch (t) {
        case 'H':
            if (r->has_hdr || r->nh || r->nb ||
                get_u64(p, n, &i, &r->hdr_end) < 0 ||
                r->hdr_end > PST_EDITS_HDR_MAX)
                return -EBADMSG;
            r->has_hdr = true;
            last_end = r->hdr_end;
            break;
        case 'K':
            if (!r->has_hdr || r->nb || get_u64(p, n, &i, &off) < 0 ||
                get_u64(p, n, &i, &len) < 0 || off > r->hdr_end ||
                len > r->hdr_end - off)
                return -EBADMSG;
            if (r->nh == ch) {
                ch = ch ? ch * 2 : 16;
                r->h = pst_xrealloc(r->h, ch * sizeof(*r->h));
            }
            r->h[r->nh++] = (struct hop){true, off, len};
            head_size += len;
            break;
        case 'T':
            if (!r->has_hdr || r->nb || get_u32(p, n, &i, &tl) < 0 ||
                n - i < tl)
                return -EBADMSG;
            if (r->nh == ch) {
                ch = ch ? ch * 2 : 16;
                r->h = pst_xrealloc(r->h, ch * sizeof(*r->h));
            }
            r->h[r->nh++] = (struct hop){false, i, tl};
            i += tl;
            head_size += tl;
            break;
        case 'B':
            if (get_u64(p, n, &i, &off) < 0 || get_u64(p, n, &i, &len) < 0 ||
                get_u32(p, n, &i, &tl) < 0 || n - i < tl ||
                off < last_end || off + len < off)
                return -EBADMSG;
            if (r->nb == cb) {
                cb = cb ? cb * 2 : 8;
                r->b = pst_xrealloc(r->b, cb * sizeof(*r->b));
            }
            r->b[r->nb++] = (struct bop){off, len, i, tl};
            i += tl;
            last_end = off + len;
            break;
        default:
            return -EBADMSG;
        }
        if (head_size > PST_EDITS_HDR_MAX)
            return -EBADMSG;
    }
    return 0;
}

/* pst_edits_reader_open - see edits.h. */
int
pst_edits_reader_open(struct pst_edits_reader **rp, const void *blob,
                      size_t n, pst_edits_src_fn src, void *arg)
{
    struct pst_edits_reader *r;
    int rc;

    *rp = NULL;
    if (n > PST_EDITS_MAX)
        return -EBADMSG;
    r = pst_xcalloc(1, sizeof(*r));
    r->blob = pst_xmalloc(n ? n : 1);
    memcpy(r->blob, blob, n);
    r->blen = n;
    r->src = src;
    r->arg = arg;
    rc = parse_blob(r);
    if (rc < 0)
        goto fail;
    *rp = r;
    return 0;

fail:
    pst_edits_reader_close(r);
    return rc;
}

void
pst_edits_reader_close(struct pst_edits_reader *r)
{
    if (r == NULL)
        return;
    free(r->blob);
    free(r->h);
    free(r->b);
    pst_tbuf_free(&r->head);
    free(r);
}

uint64_t
pst_edits_reader_size(const struct pst_edits_reader *r, uint64_t orig)
{
    uint64_t size = orig;
    if (r->has_hdr) {
        size -= PST_MIN(r->hdr_end, orig);
        for (size_t i = 0; i < r->nh; i++)
            size += r->h[i].len;
    }
    for (size_t i = 0; i < r->nb; i++)
        size = size - r->b[i].len + r->b[i].n;
    return size;
}

/* Read exactly n original bytes into p (n may be 0). */
static int
src_full(struct pst_edits_reader *r, unsigned char *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = r->src(r->arg, p + got, n - got);
        if (k < 0)
            return (int)k;
        if (k == 0)
            return -EBADMSG;
        got += (size_t)k;
    }
    r->pos += n;
    return 0;
}

static int
build_head(struct pst_edits_reader *r)
{
    unsigned char *orig = pst_xmalloc(r->hdr_end ? r->hdr_end : 1);
    int rc = src_full(r, orig, r->hdr_end);
    if (rc < 0)
        goto fail;
    for (size_t i = 0; i < r->nh; i++) {
        if (r->h[i].keep)
            pst_tbuf_add(&r->head, orig + r->h[i].off, r->h[i].len);
        else
            pst_tbuf_add(&r->head, r->blob + r->h[i].off, r->h[i].len);
    }
    r->head_built = true;
    free(orig);
    return 0;

fail:
    free(orig);
    return rc;
}

/* Discard n original bytes. */
static int
src_skip(struct pst_edits_reader *r, uint64_t n)
{
    unsigned char tmp[4096];
    while (n > 0) {
        size_t want = (size_t)PST_MIN(n, (uint64_t)sizeof(tmp));
        int rc = src_full(r, tmp, want);
        if (rc < 0)
            return rc;
        n -= want;
    }
    return 0;
}

/* pst_edits_reader_read - see edits.h. */
ssize_t
pst_edits_reader_read(struct pst_edits_reader *r, void *buf, size_t len)
{
    unsigned char *out = buf;
    size_t done = 0;
    int rc;

    if (r->has_hdr && !r->head_built && (rc = build_head(r)) < 0)
        return rc;
    while (done < len) {
        if (r->head_pos < r->head.len) {
            size_t k = PST_MIN(len - done, r->head.len - r->head_pos);
            memcpy(out + done, r->head.p + r->head_pos, k);
            r->head_pos += k;
            done += k;
            continue;
        }
        if (r->in_repl) {
            const struct bop *b = &r->b[r->bi];
            size_t k = PST_MIN(len - done, b->n - r->bpos);
            memcpy(out + done, r->blob + b->data + r->bpos, k);
            r->bpos += k;
            done += k;
            if (r->bpos == b->n) {
                r->in_repl = false;
                r->bi++;
            }
            continue;
        }
        if (r->bi < r->nb && r->pos == r->b[r->bi].off) {
            if ((rc = src_skip(r, r->b[r->bi].len)) < 0)
                return rc;
            r->in_repl = true;
            r->bpos = 0;
            if (r->b[r->bi].n == 0) {
                r->in_repl = false;
                r->bi++;
            }
            continue;
        }
        size_t want = len - done;
        if (r->bi < r->nb)
            want = (size_t)PST_MIN((uint64_t)want, r->b[r->bi].off - r->pos);
        ssize_t k = r->src(r->arg, out + done, want);
        if (k < 0)
            return k;
        if (k == 0) {
            if (r->bi < r->nb)
                return -EBADMSG;    /* original shorter than the edits */
            break;
        }
        r->pos += (uint64_t)k;
        done += (size_t)k;
    }
    return (ssize_t)done;
}

struct memsrc {
    const unsigned char *p;
    size_t n, pos;
};

static ssize_t
mem_read(void *arg, void *buf, size_t len)
{
    struct memsrc *m = arg;
    size_t k = PST_MIN(len, m->n - m->pos);
    memcpy(buf, m->p + m->pos, k);
    m->pos += k;
    return (ssize_t)k;
}

/* pst_edits_apply_mem - see edits.h. */
int
pst_edits_apply_mem(const void *blob, size_t n, const void *msg, size_t mlen,
                    struct pst_tbuf *out)
{
    struct memsrc m = {msg, mlen, 0};
    struct pst_edits_reader *r;
    unsigned char tmp[8192];
    ssize_t k;
    int rc = pst_edits_reader_open(&r, blob, n, mem_read, &m);

    if (rc < 0)
        return rc;
    while ((k = pst_edits_reader_read(r, tmp, sizeof(tmp))) > 0)
        pst_tbuf_add(out, tmp, (size_t)k);
    pst_edits_reader_close(r);
    return k < 0 ? (int)k : 0;
}
