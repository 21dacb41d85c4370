/*
 * record.c - encoding, decoding and verification of spool records
 * (record.h, docs/SPOOL.md).
 *
 * Limits: a record payload is at most PST_REC_MAX bytes; a length beyond
 * that, or beyond the end of the file, is damage. The scan reads the file
 * sequentially through one 128 KiB buffer plus one buffer per non-CHUNK
 * record (bounded by PST_REC_MAX), so memory does not grow with message
 * size. Thread-safe: no globals besides the CRC table.
 */
#include "queue/record.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/util.h"

/* ---- output buffer ---- */

void
pst__put_u8(struct pst_tbuf *b, uint8_t v)
{
    pst_tbuf_reserve(b, 1);
    b->p[b->len++] = (char)v;
}

/* pst__le_put - see record.h. */
void
pst__le_put(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* pst__le_get - see record.h. */
uint64_t
pst__le_get(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

void
pst__put_u32(struct pst_tbuf *b, uint32_t v)
{
    pst_tbuf_reserve(b, 4);
    pst__le_put((uint8_t *)b->p + b->len, v, 4);
    b->len += 4;
}

void
pst__put_u64(struct pst_tbuf *b, uint64_t v)
{
    pst_tbuf_reserve(b, 8);
    pst__le_put((uint8_t *)b->p + b->len, v, 8);
    b->len += 8;
}

/* Strings: u32 length then bytes; 0xffffffff stands for NULL. */
void
pst__put_str(struct pst_tbuf *b, const char *s)
{
    if (s == NULL) {
        pst__put_u32(b, UINT32_MAX);
        return;
    }
    size_t n = strlen(s);
    pst__put_u32(b, (uint32_t)n);
    pst_tbuf_add(b, s, n);
}

size_t
pst__rec_begin(struct pst_tbuf *b, enum pst_rec_type type)
{
    size_t start = b->len;
    pst_tbuf_reserve(b, PST_REC_HDR_LEN);
    memset(b->p + b->len, 0, PST_REC_HDR_LEN);
    b->p[b->len] = (char)type;
    b->len += PST_REC_HDR_LEN;
    return start;
}

void
pst__rec_end_seed(struct pst_tbuf *b, size_t start, uint32_t seed)
{
    size_t plen = b->len - start - PST_REC_HDR_LEN;
    pst__le_put((uint8_t *)b->p + start + 4, plen, 4);
    uint32_t crc = pst_crc32c(seed, b->p + start, b->len - start);
    pst__put_u32(b, crc);
}

void
pst__rec_end(struct pst_tbuf *b, size_t start)
{
    pst__rec_end_seed(b, start, 0);
}

/* pst__rec_frame - see record.h. */
uint32_t
pst__rec_frame(uint8_t *h, enum pst_rec_type type, uint32_t len,
               uint32_t seed)
{
    memset(h, 0, PST_REC_HDR_LEN);
    h[0] = (uint8_t)type;
    pst__le_put(h + 4, len, 4);
    return pst_crc32c(seed, h, PST_REC_HDR_LEN + (size_t)len);
}

/* pst__mark_encode - see record.h. */
void
pst__mark_encode(uint8_t *out, enum pst_mark m, uint32_t rcpts,
                 uint32_t seed)
{
    uint8_t *p = out;
    memset(p, 0, PST_MARK_LEN);
    p[PST_REC_HDR_LEN] = (uint8_t)m;
    if (m == PST_MARK_LIVE)
        pst__le_put(p + PST_REC_HDR_LEN + 1,
                    rcpts & ((UINT32_C(1) << PST_MARK_RCPTS) - 1), 3);
    pst__le_put(p + PST_REC_HDR_LEN + 4,
                pst__rec_frame(p, PST_REC_MARK, 4, seed), 4);
}

/* Whether p starts with a MARK record's header (the checksum aside). */
static bool
mark_shape(const uint8_t *p)
{
    return p[0] == PST_REC_MARK && p[1] == 0 && p[2] == 0 && p[3] == 0 &&
           pst__le_get(p + 4, 4) == 4;
}

/* pst__mark_decode - see record.h. Recipients in a MARK that is not live
 * are damage. */
int
pst__mark_decode(const uint8_t *p, uint32_t seed, uint32_t *rcpts)
{
    uint32_t r = (uint32_t)pst__le_get(p + PST_REC_HDR_LEN + 1, 3);

    if (!mark_shape(p) ||
        pst_crc32c(seed, p, PST_REC_HDR_LEN + 4) !=
            (uint32_t)pst__le_get(p + PST_REC_HDR_LEN + 4, 4) ||
        p[PST_REC_HDR_LEN] > PST_MARK_MOVED ||
        (p[PST_REC_HDR_LEN] != PST_MARK_LIVE && r != 0))
        return -1;
    if (rcpts != NULL)
        *rcpts = r;
    return p[PST_REC_HDR_LEN];
}

/* ---- input cursor ---- */

static const uint8_t *
rbuf_take(struct pst_rbuf *b, size_t n)
{
    if (b->err || b->len - b->off < n) {
        b->err = 1;
        return NULL;
    }
    const uint8_t *p = b->p + b->off;
    b->off += n;
    return p;
}

uint8_t
pst__rbuf_u8(struct pst_rbuf *b)
{
    const uint8_t *p = rbuf_take(b, 1);
    return p ? p[0] : 0;
}

uint32_t
pst__rbuf_u32(struct pst_rbuf *b)
{
    const uint8_t *p = rbuf_take(b, 4);
    return p ? (uint32_t)pst__le_get(p, 4) : 0;
}

uint64_t
pst__rbuf_u64(struct pst_rbuf *b)
{
    const uint8_t *p = rbuf_take(b, 8);
    return p ? pst__le_get(p, 8) : 0;
}

char *
pst__rbuf_str(struct pst_rbuf *b)
{
    uint32_t n = pst__rbuf_u32(b);
    if (b->err || n == UINT32_MAX)
        return NULL;
    const uint8_t *p = rbuf_take(b, n);
    if (p == NULL)
        return NULL;
    if (memchr(p, '\0', n) != NULL) {   /* stored strings never hold NUL */
        b->err = 1;
        return NULL;
    }
    return pst_xstrndup((const char *)p, n);
}

/* ---- envelope codec ---- */

void
pst__env_encode(struct pst_tbuf *b, const struct pst_envelope *e)
{
    pst__put_str(b, e->sender ? e->sender : "");
    pst__put_u8(b, (uint8_t)e->body);
    pst__put_u8(b, e->smtputf8 ? 1 : 0);
    pst__put_u8(b, (uint8_t)e->ret);
    pst__put_u64(b, e->size_param);
    pst__put_str(b, e->envid);
    pst__put_u8(b, (uint8_t)(e->client_ip.family == AF_INET6 ? 6 :
                              e->client_ip.family == AF_INET ? 4 : 0));
    pst_tbuf_add(b, e->client_ip.addr, 16);
    pst__put_str(b, e->helo);
    pst__put_str(b, e->client_name);
    pst__put_str(b, e->auth_login);
    pst__put_str(b, e->proto);
    pst__put_u64(b, (uint64_t)(int64_t)e->arrival);
    pst__put_u32(b, (uint32_t)e->nrcpts);
    for (size_t i = 0; i < e->nrcpts; i++) {
        const struct pst_rcpt *r = &e->rcpts[i];
        pst__put_str(b, r->addr);
        pst__put_str(b, r->orcpt);
        pst__put_u32(b, r->notify);
        pst__put_u8(b, (uint8_t)r->state);
    }
}

int
pst__env_decode(struct pst_rbuf *b, struct pst_envelope *e)
{
    pst_envelope_init(e);
    e->sender = pst__rbuf_str(b);
    uint8_t body = pst__rbuf_u8(b);
    e->smtputf8 = pst__rbuf_u8(b) != 0;
    uint8_t ret = pst__rbuf_u8(b);
    e->size_param = pst__rbuf_u64(b);
    e->envid = pst__rbuf_str(b);
    uint8_t fam = pst__rbuf_u8(b);
    const uint8_t *ip = rbuf_take(b, 16);
    if (ip)
        memcpy(e->client_ip.addr, ip, 16);
    e->client_ip.family = fam == 6 ? AF_INET6 : fam == 4 ? AF_INET : 0;
    e->helo = pst__rbuf_str(b);
    e->client_name = pst__rbuf_str(b);
    e->auth_login = pst__rbuf_str(b);
    e->proto = pst__rbuf_str(b);
    e->arrival = (time_t)(int64_t)pst__rbuf_u64(b);
    uint32_t n = pst__rbuf_u32(b);
    /* each recipient takes at least 13 bytes: a bound before allocating */
    if (b->err || e->sender == NULL || body > PST_BODY_BINARYMIME ||
        ret > PST_RET_HDRS || (fam != 0 && fam != 4 && fam != 6) ||
        n == 0 || n > (b->len - b->off) / 13)
        goto fail;
    e->body = body;
    e->ret = ret;
    for (uint32_t i = 0; i < n; i++) {
        char *addr = pst__rbuf_str(b);
        if (addr == NULL)
            goto fail;
        struct pst_rcpt *r = pst_envelope_add_rcpt(e, addr);
        free(addr);
        r->orcpt = pst__rbuf_str(b);
        r->notify = pst__rbuf_u32(b);
        uint8_t st = pst__rbuf_u8(b);
        if (b->err || st > PST_RCPT_FAILED)
            goto fail;
        r->state = st;
    }
    if (b->err)
        goto fail;
    return 0;
fail:
    pst_envelope_free(e);
    return -EINVAL;
}

void
pst__env_copy(struct pst_envelope *dst, const struct pst_envelope *src)
{
    struct pst_tbuf w = {0};
    pst__env_encode(&w, src);
    struct pst_rbuf r = {.p = (const uint8_t *)w.p, .len = w.len};
    if (pst__env_decode(&r, dst) != 0) {
        /* only an envelope without recipients fails to round-trip */
        pst_envelope_init(dst);
        dst->sender = pst_xstrdup(src->sender ? src->sender : "");
        dst->arrival = src->arrival;
    }
    pst_tbuf_free(&w);
}

/* ---- update records ---- */

static const char *
clip(const char *s, char *buf)
{
    if (s == NULL)
        return NULL;
    size_t n = strnlen(s, PST_ERRTEXT_MAX);
    memcpy(buf, s, n);
    buf[n] = '\0';
    return buf;
}

void
pst__rec_rcpt(struct pst_tbuf *b, uint32_t idx, enum pst_rcpt_state st,
              time_t when, const char *err)
{
    char tmp[PST_ERRTEXT_MAX + 1];
    size_t s = pst__rec_begin(b, PST_REC_RCPT);
    pst__put_u32(b, idx);
    pst__put_u8(b, (uint8_t)st);
    pst__put_u64(b, (uint64_t)(int64_t)when);
    pst__put_str(b, clip(err, tmp));
    pst__rec_end(b, s);
}

void
pst__rec_retry(struct pst_tbuf *b, unsigned attempts, time_t next,
               const char *err)
{
    char tmp[PST_ERRTEXT_MAX + 1];
    size_t s = pst__rec_begin(b, PST_REC_RETRY);
    pst__put_u32(b, attempts);
    pst__put_u64(b, (uint64_t)(int64_t)next);
    pst__put_str(b, clip(err, tmp));
    pst__rec_end(b, s);
}

void
pst__rec_state(struct pst_tbuf *b, enum pst_qstate st, time_t when,
               const char *reason)
{
    char tmp[PST_ERRTEXT_MAX + 1];
    size_t s = pst__rec_begin(b, PST_REC_STATE);
    pst__put_u8(b, (uint8_t)st);
    pst__put_u64(b, (uint64_t)(int64_t)when);
    pst__put_str(b, clip(reason, tmp));
    pst__rec_end(b, s);
}

/* pst__pwrite_all - see record.h. */
int
pst__pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = pwrite(fd, b, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            return -EIO;
        b += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

/* pst__pread_upto - see record.h. */
int
pst__pread_upto(int fd, void *p, size_t n, uint64_t off, size_t *got)
{
    uint8_t *b = p;
    *got = 0;
    while (*got < n) {
        ssize_t k = pread(fd, b + *got, n - *got, (off_t)(off + *got));
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            break;
        *got += (size_t)k;
    }
    return 0;
}

/* ---- scan ---- */

/* Sequential reader over the file with a 128 KiB window. */
struct seq {
    int fd;
    uint8_t *buf;
    size_t have, pos;   /* bytes in buf, consumed */
    uint64_t off;       /* file offset of buf[pos] */
    int err;
};

/* seq_read - copy n bytes (or fewer at EOF); returns count or -errno. */
static ssize_t
seq_read(struct seq *q, void *dst, size_t n, uint32_t *crc)
{
    size_t got = 0;
    while (got < n) {
        if (q->pos == q->have) {
            ssize_t r = read(q->fd, q->buf, PST_SPOOL_WBUF);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            if (r == 0)
                break;
            q->have = (size_t)r;
            q->pos = 0;
        }
        size_t k = PST_MIN(n - got, q->have - q->pos);
        if (crc)
            *crc = pst_crc32c(*crc, q->buf + q->pos, k);
        if (dst)
            memcpy((uint8_t *)dst + got, q->buf + q->pos, k);
        q->pos += k;
        q->off += k;
        got += k;
    }
    return (ssize_t)got;
}

/* pst__errs_free - see record.h. */
void
pst__errs_free(char **errs, size_t n)
{
    if (errs == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(errs[i]);
    free(errs);
}

void
pst__scan_free(struct pst_scan *s)
{
    pst__errs_free(s->rcpt_err, s->env.nrcpts);
    free(s->last_error);
    pst_envelope_free(&s->env);
    memset(s, 0, sizeof(*s));
}

static int
apply_update(struct pst_scan *s, uint8_t type, struct pst_rbuf *r)
{
    if (type == PST_REC_RCPT) {
        uint32_t idx = pst__rbuf_u32(r);
        uint8_t st = pst__rbuf_u8(r);
        (void)pst__rbuf_u64(r);
        char *err = pst__rbuf_str(r);
        if (r->err || idx >= s->env.nrcpts || st > PST_RCPT_FAILED) {
            free(err);
            return -1;
        }
        s->env.rcpts[idx].state = st;
        free(s->rcpt_err[idx]);
        s->rcpt_err[idx] = err;
    } else if (type == PST_REC_RETRY) {
        s->attempts = pst__rbuf_u32(r);
        s->next_attempt = (time_t)(int64_t)pst__rbuf_u64(r);
        char *err = pst__rbuf_str(r);
        if (r->err) {
            free(err);
            return -1;
        }
        free(s->last_error);
        s->last_error = err;
    } else if (type == PST_REC_STATE) {
        uint8_t st = pst__rbuf_u8(r);
        time_t when = (time_t)(int64_t)pst__rbuf_u64(r);
        char *why = pst__rbuf_str(r);
        free(why);
        if (r->err || st > PST_QSTATE_FAILED)
            return -1;
        s->state = st;
        s->state_time = when;
    } else {
        return -1;
    }
    return 0;
}

int
pst__spool_scan(int fd, struct pst_scan *s, char *why, size_t whylen)
{
    struct seq q = {.fd = fd};
    uint8_t hdr[PST_REC_HDR_LEN];
    uint8_t *payload = NULL;
    int rc = PST_SCAN_CORRUPT;
    bool committed = false, have_info = false, have_env = false;
    bool have_edits = false;
    uint64_t chunk_bytes = 0, env_off = 0;
    ssize_t n;

    memset(s, 0, sizeof(*s));
    snprintf(why, whylen, "unknown");
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0 || lseek(fd, 0, SEEK_SET) < 0)
        return -errno;
    s->file_size = (uint64_t)end;
    q.buf = pst_xmalloc(PST_SPOOL_WBUF);

    n = seq_read(&q, hdr, PST_SPOOL_HDR_LEN, NULL);
    if (n < 0) {
        rc = (int)n;
        goto out;
    }
    if ((size_t)n < PST_SPOOL_HDR_LEN) {
        snprintf(why, whylen, "short file header");
        rc = PST_SCAN_INCOMPLETE;
        goto out;
    }
    if (memcmp(hdr, PST_SPOOL_MAGIC, 4) != 0) {
        snprintf(why, whylen, "bad magic");
        goto out;
    }
    uint32_t version = (uint32_t)pst__le_get(hdr + 4, 4);
    if (version != PST_SPOOL_VERSION) {
        snprintf(why, whylen, "unknown version %u", version);
        goto out;
    }

    for (;;) {
        uint64_t rec_off = q.off;
        uint32_t crc = 0;
        n = seq_read(&q, hdr, PST_REC_HDR_LEN, &crc);
        if (n < 0) {
            rc = (int)n;
            goto out;
        }
        if ((size_t)n < PST_REC_HDR_LEN) {
            if (committed) {
                s->torn = n > 0;            /* n == 0: clean end */
                break;
            }
            snprintf(why, whylen, "truncated before the commit record");
            rc = PST_SCAN_INCOMPLETE;
            goto out;
        }
        uint8_t type = hdr[0];
        uint32_t len = (uint32_t)pst__le_get(hdr + 4, 4);
        bool short_rec = rec_off + PST_REC_OVERHEAD + len > s->file_size;
        bool bad_hdr = hdr[1] || hdr[2] || hdr[3] || len > PST_REC_MAX;
        if (committed && (short_rec || bad_hdr)) {
            s->torn = true;                 /* damaged tail: ignore it */
            break;
        }
        if (short_rec && !bad_hdr) {
            snprintf(why, whylen, "truncated before the commit record");
            rc = PST_SCAN_INCOMPLETE;
            goto out;
        }
        if (bad_hdr || short_rec) {
            snprintf(why, whylen, "bad record header at offset %llu",
                     (unsigned long long)rec_off);
            goto out;
        }
        bool keep = type != PST_REC_CHUNK;
        if (keep) {
            free(payload);
            payload = pst_xmalloc(len ? len : 1);
        }
        n = seq_read(&q, keep ? payload : NULL, len, &crc);
        uint8_t cbuf[4];
        ssize_t n2 = n >= 0 ? seq_read(&q, cbuf, 4, NULL) : 0;
        if (n < 0 || n2 < 0) {
            rc = n < 0 ? (int)n : (int)n2;
            goto out;
        }
        if ((size_t)n < len || n2 < 4 || (uint32_t)pst__le_get(cbuf, 4) != crc) {
            if (committed) {
                s->torn = true;
                break;
            }
            snprintf(why, whylen, "bad checksum in record type %u at "
                     "offset %llu", type, (unsigned long long)rec_off);
            goto out;
        }
        struct pst_rbuf r = {.p = payload, .len = len};
        if (committed) {
            if (apply_update(s, type, &r) != 0) {
                snprintf(why, whylen, "bad update record type %u at "
                         "offset %llu", type, (unsigned long long)rec_off);
                goto out;
            }
            s->good_end = q.off;
            continue;
        }
        switch (type) {
        case PST_REC_INFO: {
            const uint8_t *id = rbuf_take(&r, 16);
            s->created = (time_t)(int64_t)pst__rbuf_u64(&r);
            if (have_info || rec_off != PST_SPOOL_HDR_LEN || id == NULL ||
                r.err) {
                snprintf(why, whylen, "bad info record");
                goto out;
            }
            memcpy(s->qid, id, 16);
            s->qid[16] = '\0';
            have_info = true;
            s->data_off = q.off;
            break;
        }
        case PST_REC_CHUNK:
            if (!have_info || have_env) {
                snprintf(why, whylen, "misplaced data record");
                goto out;
            }
            chunk_bytes += len;
            break;
        case PST_REC_ENVELOPE:
            if (!have_info || have_env || pst__env_decode(&r, &s->env) != 0) {
                snprintf(why, whylen, "bad envelope record");
                goto out;
            }
            have_env = true;
            env_off = rec_off;
            s->rcpt_err = pst_xcalloc(s->env.nrcpts, sizeof(char *));
            break;
        case PST_REC_EDITS:
            /* checked whole by the reader (queue/edits.c) when used */
            if (!have_env || have_edits) {
                snprintf(why, whylen, "misplaced edits record");
                goto out;
            }
            have_edits = true;
            s->edits_off = rec_off;
            break;
        case PST_REC_COMMIT: {
            uint64_t eo = pst__rbuf_u64(&r);
            uint64_t sz = pst__rbuf_u64(&r);
            if (!have_env || r.err || eo != env_off || sz != chunk_bytes) {
                snprintf(why, whylen, "commit record does not match");
                goto out;
            }
            s->env_off = env_off;
            s->msg_size = sz;
            committed = true;
            s->good_end = q.off;
            break;
        }
        default:
            snprintf(why, whylen, "unexpected record type %u before commit",
                     type);
            goto out;
        }
    }
    rc = PST_SCAN_OK;
out:
    free(payload);
    free(q.buf);
    if (rc != PST_SCAN_OK) {
        if (have_env)
            pst__scan_free(s);
        else
            memset(s, 0, sizeof(*s));
    }
    return rc;
}

/* ---- groups (log segments) ---- */

static size_t
align_group(size_t n)
{
    return (n + PST_GROUP_ALIGN - 1) & ~(size_t)(PST_GROUP_ALIGN - 1);
}

/* One record of a group at p[at]: its type, payload and total length.
 * PST_GROUP_OK, PST_GROUP_MORE (runs past avail) or PST_GROUP_NONE. */
static int
group_rec(const uint8_t *p, size_t avail, size_t at, uint32_t seed,
          uint8_t *type, const uint8_t **pl, uint32_t *len)
{
    if (avail - at < PST_REC_HDR_LEN)
        return PST_GROUP_MORE;
    const uint8_t *h = p + at;
    uint32_t n = (uint32_t)pst__le_get(h + 4, 4);
    if (h[1] || h[2] || h[3] || n > PST_GROUP_MAX ||
        at + PST_REC_OVERHEAD + n > PST_GROUP_MAX)
        return PST_GROUP_NONE;
    if (avail - at < PST_REC_OVERHEAD + (size_t)n)
        return PST_GROUP_MORE;
    if (pst_crc32c(seed, h, PST_REC_HDR_LEN + (size_t)n) !=
        (uint32_t)pst__le_get(h + PST_REC_HDR_LEN + n, 4))
        return PST_GROUP_NONE;
    *type = h[0];
    *pl = h + PST_REC_HDR_LEN;
    *len = n;
    return PST_GROUP_OK;
}

/* pst__group_parse - see record.h. */
int
pst__group_parse(const uint8_t *p, size_t avail, uint64_t off, uint32_t seed,
                 struct pst_scan *s, int *mark)
{
    uint64_t chunk_bytes = 0;
    size_t at = PST_MARK_LEN;
    bool have_env = false;
    uint8_t prev = 0;
    int rc;

    memset(s, 0, sizeof(*s));
    if (avail < PST_MARK_LEN)
        return PST_GROUP_MORE;
    if (!mark_shape(p))
        return PST_GROUP_NONE;
    uint32_t marked = 0;
    *mark = pst__mark_decode(p, seed, &marked);
    for (int k = 0;; k++) {
        uint8_t type;
        const uint8_t *pl;
        uint32_t len;
        uint64_t rec_off = off + at;
        if ((rc = group_rec(p, avail, at, seed, &type, &pl, &len)) != 0)
            goto fail;
        at += PST_REC_OVERHEAD + len;
        struct pst_rbuf r = {.p = pl, .len = len};
        uint8_t before = prev;
        prev = type;
        rc = PST_GROUP_NONE;
        if (k == 0) {                   /* INFO, always first */
            if (type != PST_REC_INFO || len < 24)
                goto fail;
            memcpy(s->qid, pl, 16);
            s->qid[16] = '\0';
            r.off = 16;
            s->created = (time_t)(int64_t)pst__rbuf_u64(&r);
            s->data_off = off + at;
            continue;
        }
        if (type == PST_REC_CHUNK && !have_env) {
            chunk_bytes += len;
        } else if (type == PST_REC_ENVELOPE && !have_env && k > 1) {
            if (pst__env_decode(&r, &s->env) != 0)
                goto fail;
            have_env = true;
            s->env_off = rec_off;
        } else if (type == PST_REC_EDITS && before == PST_REC_ENVELOPE) {
            s->edits_off = rec_off;
        } else if (type == PST_REC_COMMIT && have_env) {
            uint64_t eo = pst__rbuf_u64(&r);
            uint64_t sz = pst__rbuf_u64(&r);
            if (r.err || eo != s->env_off || sz != chunk_bytes)
                goto fail;
            s->msg_size = sz;
            s->good_end = off + align_group(at);
            s->file_size = s->good_end;
            s->rcpt_err = pst_xcalloc(s->env.nrcpts, sizeof(char *));
            if (*mark == PST_MARK_LIVE)
                for (size_t i = 0; i < s->env.nrcpts && i < PST_MARK_RCPTS;
                     i++)
                    if (marked & (UINT32_C(1) << i)) {
                        s->env.rcpts[i].state = PST_RCPT_DELIVERED;
                        s->marked |= UINT32_C(1) << i;
                    }
            return PST_GROUP_OK;
        } else {
            goto fail;
        }
    }
fail:
    if (have_env)
        pst_envelope_free(&s->env);
    memset(s, 0, sizeof(*s));
    return rc;
}

/* pst__file_from_group - see record.h. */
int
pst__file_from_group(const uint8_t *g, size_t glen, uint32_t seed,
                     struct pst_tbuf *out, struct pst_scan *fo)
{
    size_t at = PST_MARK_LEN;
    size_t base = out->len;

    memset(fo, 0, sizeof(*fo));
    pst_tbuf_add(out, PST_SPOOL_MAGIC, 4);
    pst__put_u32(out, PST_SPOOL_VERSION);
    for (;;) {
        uint8_t type;
        const uint8_t *pl;
        uint32_t len;
        if (group_rec(g, glen, at, seed, &type, &pl, &len) != 0)
            return -EBADMSG;
        at += PST_REC_OVERHEAD + len;
        size_t s = pst__rec_begin(out, type);
        uint64_t here = s - base;
        if (type == PST_REC_COMMIT) {
            pst__put_u64(out, fo->env_off);
            pst__put_u64(out, fo->msg_size);
            pst__rec_end(out, s);
            fo->file_size = out->len - base;
            fo->good_end = fo->file_size;
            return 0;
        }
        pst_tbuf_add(out, pl, len);
        pst__rec_end(out, s);
        if (type == PST_REC_INFO)
            fo->data_off = out->len - base;
        else if (type == PST_REC_CHUNK)
            fo->msg_size += len;
        else if (type == PST_REC_ENVELOPE)
            fo->env_off = here;
        else if (type == PST_REC_EDITS)
            fo->edits_off = here;
    }
}
