/*
 * proto.c - encoding and decoding of the spf helper frames (proto.h).
 *
 * Shared by the gateway and the helper executable, so it uses libc only.
 * Decoders trust nothing: every length is checked against what is left
 * and against the field's bound before a byte is copied, strings are
 * checked for the characters their field may hold, and a payload with
 * bytes left over is refused.
 */
#include "filters/spf/proto.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* character classes of string fields */
enum sclass {
    S_NAME,                         /* DNS name: printable, no blank */
    S_TEXT,                         /* SPF record: printable ASCII, blank */
    S_ADDR,                         /* address or HELO: printable or 8-bit,
                                       blank allowed (quoted local parts) */
};

/* ---- writing ---- */

static void
put(struct spf_frame *f, const void *p, size_t n)
{
    if (f->over || n > sizeof(f->b) - f->n) {
        f->over = true;
        return;
    }
    memcpy(f->b + f->n, p, n);
    f->n += n;
}

static void
put_u8(struct spf_frame *f, unsigned v)
{
    uint8_t b = (uint8_t)v;
    put(f, &b, 1);
}

static void
put_u16(struct spf_frame *f, unsigned v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(f, b, 2);
}

static void
put_u32(struct spf_frame *f, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8),
                    (uint8_t)v};
    put(f, b, 4);
}

static void
put_str(struct spf_frame *f, const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max) {
        f->over = true;
        return;
    }
    put_u16(f, (unsigned)n);
    put(f, s, n);
}

static void
begin(struct spf_frame *f, enum spf_ftype t)
{
    f->n = 0;
    f->over = false;
    put_u8(f, t);
    put_u8(f, 0);
    put_u16(f, 0);                  /* length, set by end() */
}

static int
end(struct spf_frame *f)
{
    size_t len = f->n - SPF_FRAME_HDR;
    if (f->over || len > SPF_FRAME_MAX)
        return -1;
    f->b[2] = (uint8_t)(len >> 8);
    f->b[3] = (uint8_t)len;
    return 0;
}

int
spf_enc_hello(struct spf_frame *f, const struct spf_hello *h)
{
    begin(f, SPF_F_HELLO);
    put_u16(f, h->version);
    put_u32(f, h->pid);
    return end(f);
}

int
spf_enc_check(struct spf_frame *f, const struct spf_check *c)
{
    begin(f, SPF_F_CHECK);
    put_u8(f, c->family == AF_INET6 ? 6 : 4);
    put(f, c->addr, c->family == AF_INET6 ? 16 : 4);
    put_str(f, c->sender, SPF_SENDER_MAX);
    put_str(f, c->helo, SPF_NAME_MAX);
    put_str(f, c->receiver, SPF_NAME_MAX);
    return end(f);
}

int
spf_enc_query(struct spf_frame *f, const struct spf_query *q)
{
    begin(f, SPF_F_QUERY);
    put_u16(f, q->type);
    put_str(f, q->name, SPF_NAME_MAX);
    return end(f);
}

int
spf_enc_answer(struct spf_frame *f, const struct spf_answer *a)
{
    begin(f, SPF_F_ANSWER);
    put_u8(f, a->status);
    put_u32(f, a->ttl);
    put_u16(f, a->type);
    put_u16(f, a->n);
    for (unsigned i = 0; i < a->n; i++) {
        switch (a->type) {
        case SPF_Q_A:
            put(f, a->u.addr[i], 4);
            break;
        case SPF_Q_AAAA:
            put(f, a->u.addr[i], 16);
            break;
        case SPF_Q_MX:
        case SPF_Q_PTR:
            put_str(f, a->u.name[i], SPF_NAME_MAX);
            break;
        case SPF_Q_TXT:
            put_str(f, a->u.txt[i], SPF_TXT_MAX);
            break;
        default:
            return -1;
        }
    }
    return end(f);
}

int
spf_enc_result(struct spf_frame *f, const struct spf_resmsg *r)
{
    begin(f, SPF_F_RESULT);
    put_u8(f, r->result);
    put_u16(f, r->err);
    return end(f);
}

/* ---- reading ---- */

struct rd {
    const uint8_t *p;
    size_t n;
    bool bad;
};

static const uint8_t *
take(struct rd *r, size_t n)
{
    if (r->bad || n > r->n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->n -= n;
    return p;
}

static unsigned
get_u8(struct rd *r)
{
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

static unsigned
get_u16(struct rd *r)
{
    const uint8_t *p = take(r, 2);
    return p ? (unsigned)p[0] << 8 | p[1] : 0;
}

static uint32_t
get_u32(struct rd *r)
{
    const uint8_t *p = take(r, 4);
    return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                   (uint32_t)p[2] << 8 | p[3]
             : 0;
}

static bool
char_ok(unsigned char c, enum sclass k)
{
    switch (k) {
    case S_NAME:
        return c > 0x20 && c < 0x7f;
    case S_TEXT:
        return c >= 0x20 && c < 0x7f;
    default:
        return c >= 0x20 && c != 0x7f;
    }
}

/* a string of at most max bytes into out (max + 1 bytes) */
static void
get_str(struct rd *r, char *out, size_t max, enum sclass k)
{
    size_t n = get_u16(r);
    const uint8_t *p;
    out[0] = '\0';
    if (n > max) {
        r->bad = true;
        return;
    }
    if ((p = take(r, n)) == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        if (!char_ok(p[i], k)) {
            r->bad = true;
            return;
        }
    }
    memcpy(out, p, n);
    out[n] = '\0';
}

static int
done(struct rd *r)
{
    return r->bad || r->n != 0 ? -1 : 0;
}

int
spf_dec_hello(const uint8_t *p, size_t n, struct spf_hello *h)
{
    struct rd r = {p, n, false};
    h->version = (uint16_t)get_u16(&r);
    h->pid = get_u32(&r);
    return done(&r);
}

int
spf_dec_check(const uint8_t *p, size_t n, struct spf_check *c)
{
    struct rd r = {p, n, false};
    unsigned fam = get_u8(&r);
    const uint8_t *a;
    memset(c->addr, 0, sizeof(c->addr));
    if (fam != 4 && fam != 6)
        return -1;
    c->family = fam == 6 ? AF_INET6 : AF_INET;
    if ((a = take(&r, fam == 6 ? 16 : 4)) != NULL)
        memcpy(c->addr, a, fam == 6 ? 16 : 4);
    get_str(&r, c->sender, SPF_SENDER_MAX, S_ADDR);
    get_str(&r, c->helo, SPF_NAME_MAX, S_ADDR);
    get_str(&r, c->receiver, SPF_NAME_MAX, S_NAME);
    return done(&r);
}

int
spf_dec_query(const uint8_t *p, size_t n, struct spf_query *q)
{
    struct rd r = {p, n, false};
    q->type = (uint16_t)get_u16(&r);
    get_str(&r, q->name, SPF_NAME_MAX, S_NAME);
    if (q->type != SPF_Q_A && q->type != SPF_Q_AAAA && q->type != SPF_Q_MX &&
        q->type != SPF_Q_TXT && q->type != SPF_Q_PTR)
        return -1;
    if (q->name[0] == '\0')
        return -1;
    return done(&r);
}

int
spf_dec_answer(const uint8_t *p, size_t n, struct spf_answer *a)
{
    struct rd r = {p, n, false};
    unsigned max;
    a->status = (uint8_t)get_u8(&r);
    a->ttl = get_u32(&r);
    a->type = (uint16_t)get_u16(&r);
    a->n = (uint16_t)get_u16(&r);
    if (r.bad || a->status >= SPF_D_COUNT)
        return -1;
    switch (a->type) {
    case SPF_Q_A:
    case SPF_Q_AAAA:
        max = SPF_ANS_ADDR_MAX;
        break;
    case SPF_Q_MX:
    case SPF_Q_PTR:
        max = SPF_ANS_NAME_MAX;
        break;
    case SPF_Q_TXT:
        max = SPF_ANS_TXT_MAX;
        break;
    default:
        return -1;
    }
    if (a->n > max || (a->n > 0 && a->status != SPF_D_OK))
        return -1;
    for (unsigned i = 0; i < a->n && !r.bad; i++) {
        const uint8_t *b;
        switch (a->type) {
        case SPF_Q_A:
            memset(a->u.addr[i], 0, 16);
            if ((b = take(&r, 4)) != NULL)
                memcpy(a->u.addr[i], b, 4);
            break;
        case SPF_Q_AAAA:
            if ((b = take(&r, 16)) != NULL)
                memcpy(a->u.addr[i], b, 16);
            break;
        case SPF_Q_MX:
        case SPF_Q_PTR:
            get_str(&r, a->u.name[i], SPF_NAME_MAX, S_NAME);
            if (a->u.name[i][0] == '\0')
                r.bad = true;
            break;
        default:
            get_str(&r, a->u.txt[i], SPF_TXT_MAX, S_TEXT);
            break;
        }
    }
    return done(&r);
}

int
spf_dec_result(const uint8_t *p, size_t n, struct spf_resmsg *m)
{
    struct rd r = {p, n, false};
    m->result = (uint8_t)get_u8(&r);
    m->err = (uint16_t)get_u16(&r);
    if (m->result >= SPF_R_COUNT)
        return -1;
    return done(&r);
}

int
spf_hdr_parse(const uint8_t h[SPF_FRAME_HDR], uint8_t *type, size_t *len)
{
    *type = h[0];
    *len = (size_t)h[2] << 8 | h[3];
    if (h[1] != 0 || *len > SPF_FRAME_MAX || *type < SPF_F_HELLO ||
        *type > SPF_F_RESULT)
        return -1;
    return 0;
}

int
spf_write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

const char *
spf_result_name(enum spf_result r)
{
    static const char *const names[SPF_R_COUNT] = {
        "none", "neutral", "pass", "fail", "softfail", "temperror",
        "permerror"};
    return (unsigned)r < SPF_R_COUNT ? names[r] : "temperror";
}
