/*
 * codec.c - streaming base64 and quoted-printable decoders and encoders.
 *
 * Each codec keeps its whole state in a small struct so the MIME parser can
 * feed it arbitrary fragments of a body. Output bounds per call are given
 * in codec.h; nothing here allocates. The decoders' leniency is chosen to
 * agree with common mail readers on damaged input (see codec.h), and is
 * always reported through `bad`.
 */
#include "core/codec.h"

#include <string.h>

#include "core/util.h"

static const char b64_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char hexdig[] = "0123456789ABCDEF";

#define B64_SPACE 0xfe
#define B64_BAD 0xff

/* Built once at compile time would need 256 initialisers; a constructor is
 * clearer and runs before any thread exists. */
static uint8_t b64_tab[256];

__attribute__((constructor)) static void
b64_tab_init(void)
{
    memset(b64_tab, B64_BAD, sizeof(b64_tab));
    for (unsigned i = 0; i < 64; i++)
        b64_tab[(unsigned char)b64_alpha[i]] = (uint8_t)i;
    b64_tab[' '] = b64_tab['\t'] = b64_tab['\r'] = b64_tab['\n'] = B64_SPACE;
}

int
pst_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* pst_cte_parse - the encoding a Content-Transfer-Encoding token names. */
enum pst_cte
pst_cte_parse(const char *s, size_t n)
{
    static const struct {
        const char *name;
        enum pst_cte cte;
    } tab[] = {
        {"7bit", PST_CTE_7BIT},   {"8bit", PST_CTE_8BIT},
        {"binary", PST_CTE_BINARY}, {"quoted-printable", PST_CTE_QP},
        {"base64", PST_CTE_BASE64},
    };
    for (size_t i = 0; i < PST_ARRAY_LEN(tab); i++)
        if (strlen(tab[i].name) == n && pst_strncaseeq(s, tab[i].name, n))
            return tab[i].cte;
    return PST_CTE_UNKNOWN;
}

/* pst_cte_name - canonical lowercase name of an encoding. */
const char *
pst_cte_name(enum pst_cte cte)
{
    switch (cte) {
    case PST_CTE_7BIT:
        return "7bit";
    case PST_CTE_8BIT:
        return "8bit";
    case PST_CTE_BINARY:
        return "binary";
    case PST_CTE_QP:
        return "quoted-printable";
    case PST_CTE_BASE64:
        return "base64";
    default:
        return "unknown";
    }
}

/* ---- base64 decoder ---- */

/* pst_b64_dec_init - start a base64 decode. */
void
pst_b64_dec_init(struct pst_b64_dec *d)
{
    memset(d, 0, sizeof(*d));
}

/* pst_b64_dec_update - decode n octets, write whole bytes as soon as known. */
size_t
pst_b64_dec_update(struct pst_b64_dec *d, const void *in, size_t n, void *out)
{
    const uint8_t *s = in, *end = s + n;
    uint8_t *o = out;
    unsigned left = d->left, pos = d->pos;

    if (d->done) {
        for (; s < end; s++)
            if (b64_tab[*s] != B64_SPACE)
                d->bad = true;
        return 0;
    }
    while (s < end) {
        /* Fast path: four alphabet characters at a quad boundary. */
        if (pos == 0 && end - s >= 4) {
            unsigned a = b64_tab[s[0]], b = b64_tab[s[1]], c = b64_tab[s[2]],
                     e = b64_tab[s[3]];
            if ((a | b | c | e) < 64) {
                o[0] = (uint8_t)(a << 2 | b >> 4);
                o[1] = (uint8_t)(b << 4 | c >> 2);
                o[2] = (uint8_t)(c << 6 | e);
                o += 3;
                s += 4;
                d->pads = 0;
                continue;
            }
        }
        unsigned ch = *s++;
        unsigned v = b64_tab[ch];
        if (ch == '=') {
            if (pos >= 2 && pos + ++d->pads >= 4) {
                d->done = true;
                for (; s < end; s++)
                    if (b64_tab[*s] != B64_SPACE)
                        d->bad = true;
                break;
            }
            continue;
        }
        if (v == B64_SPACE)
            continue;
        if (v == B64_BAD) {
            d->bad = true;
            continue;
        }
        d->pads = 0;
        switch (pos) {
        case 0:
            left = v;
            pos = 1;
            break;
        case 1:
            *o++ = (uint8_t)(left << 2 | v >> 4);
            left = v & 0x0f;
            pos = 2;
            break;
        case 2:
            *o++ = (uint8_t)(left << 4 | v >> 2);
            left = v & 0x03;
            pos = 3;
            break;
        default:
            *o++ = (uint8_t)(left << 6 | v);
            left = 0;
            pos = 0;
            break;
        }
    }
    d->left = (uint8_t)left;
    d->pos = (uint8_t)pos;
    return (size_t)(o - (uint8_t *)out);
}

/* pst_b64_dec_final - end of input: judge the tail (missing pad, lone
 * sextet). */
size_t
pst_b64_dec_final(struct pst_b64_dec *d, void *out)
{
    /* Bytes were written as soon as their bits were complete; only the
     * shape of the tail is left to judge. */
    if (!d->done && d->pos != 0)
        d->bad = true;              /* missing pad, or a lone sextet */
    d->pos = 0;
    return 0;
}

/* ---- quoted-printable decoder ---- */

enum { QP_TEXT, QP_EQ, QP_EQ_HEX, QP_EQ_WS, QP_EQ_CR };

/* pst_qp_dec_init - start a quoted-printable decode. */
void
pst_qp_dec_init(struct pst_qp_dec *d)
{
    memset(d, 0, sizeof(*d));
}

static uint8_t *
qp_flush_ws(struct pst_qp_dec *d, uint8_t *o)
{
    memcpy(o, d->ws, d->nws);
    o += d->nws;
    d->nws = 0;
    return o;
}

/* pst_qp_dec_update - decode n octets; blanks and '=' sequences that may
 * still change meaning are held. */
size_t
pst_qp_dec_update(struct pst_qp_dec *d, const void *in, size_t n, void *out)
{
    const uint8_t *s = in, *end = s + n;
    uint8_t *o = out;

    while (s < end) {
        unsigned c = *s;
        switch (d->st) {
        case QP_TEXT:
            if (d->cr) {
                d->cr = false;
                if (c == '\n') {
                    d->nws = 0;     /* blanks before a line end go */
                    *o++ = '\r';
                    *o++ = '\n';
                    s++;
                    continue;
                }
                o = qp_flush_ws(d, o);
                *o++ = '\r';
                continue;           /* c again, as text */
            }
            if (c == ' ' || c == '\t') {
                if (d->nws == PST_QP_WS_MAX)
                    o = qp_flush_ws(d, o);
                d->ws[d->nws++] = (uint8_t)c;
            } else if (c == '\r') {
                d->cr = true;
            } else if (c == '\n') {
                d->nws = 0;
                *o++ = '\n';
            } else if (c == '=') {
                o = qp_flush_ws(d, o);
                d->st = QP_EQ;
            } else {
                if (d->nws)
                    o = qp_flush_ws(d, o);
                /* Copy a run of plain characters at once. */
                const uint8_t *r = s;
                while (r < end && *r != '=' && *r != '\r' && *r != '\n' &&
                       *r != ' ' && *r != '\t')
                    r++;
                memcpy(o, s, (size_t)(r - s));
                o += r - s;
                s = r;
                continue;
            }
            s++;
            break;
        case QP_EQ:
            if (pst_hexval((int)c) >= 0) {
                d->hex = (uint8_t)c;
                d->st = QP_EQ_HEX;
            } else if (c == ' ' || c == '\t') {
                d->ws[0] = (uint8_t)c;
                d->nws = 1;
                d->st = QP_EQ_WS;
            } else if (c == '\r') {
                d->st = QP_EQ_CR;
            } else if (c == '\n') {
                d->st = QP_TEXT;    /* soft line break, LF only */
            } else if (c == '=') {
                /* "==": one '=' kept, as other readers do */
                d->bad = true;
                *o++ = '=';
                d->st = QP_TEXT;
            } else {
                d->bad = true;
                *o++ = '=';
                d->st = QP_TEXT;
                continue;
            }
            s++;
            break;
        case QP_EQ_HEX:
            if (pst_hexval((int)c) >= 0) {
                *o++ = (uint8_t)(pst_hexval(d->hex) << 4 | pst_hexval((int)c));
                s++;
            } else {
                d->bad = true;
                *o++ = '=';
                *o++ = d->hex;
            }
            d->st = QP_TEXT;
            break;
        case QP_EQ_WS:
            if (c == ' ' || c == '\t') {
                if (d->nws == PST_QP_WS_MAX) {
                    d->bad = true;
                    *o++ = '=';
                    o = qp_flush_ws(d, o);
                    d->st = QP_TEXT;
                    continue;
                }
                d->ws[d->nws++] = (uint8_t)c;
                s++;
            } else if (c == '\r') {
                d->nws = 0;
                d->st = QP_EQ_CR;
                s++;
            } else if (c == '\n') {
                d->nws = 0;
                d->st = QP_TEXT;
                s++;
            } else {
                d->bad = true;
                *o++ = '=';
                o = qp_flush_ws(d, o);
                d->st = QP_TEXT;
            }
            break;
        default: /* QP_EQ_CR */
            if (c == '\n') {
                d->st = QP_TEXT;
                s++;
            } else {
                d->bad = true;
                *o++ = '=';
                *o++ = '\r';
                d->st = QP_TEXT;
            }
            break;
        }
    }
    return (size_t)(o - (uint8_t *)out);
}

/* pst_qp_dec_final - end of input: release or drop what is held. */
size_t
pst_qp_dec_final(struct pst_qp_dec *d, void *out)
{
    uint8_t *o = out;

    switch (d->st) {
    case QP_TEXT:
        if (d->cr) {
            o = qp_flush_ws(d, o);
            *o++ = '\r';
        }
        d->nws = 0;                 /* blanks ending the last line go */
        break;
    case QP_EQ_HEX:
        d->bad = true;
        *o++ = '=';
        *o++ = d->hex;
        break;
    default:
        break;                      /* "=" [blanks] [CR] at the end: soft */
    }
    d->st = QP_TEXT;
    d->cr = false;
    d->nws = 0;
    return (size_t)(o - (uint8_t *)out);
}

/* ---- any encoding ---- */

/* pst_dec_init - start decoding a body in encoding cte (identity for 7bit,
 * 8bit, binary, unknown). */
void
pst_dec_init(struct pst_decoder *d, enum pst_cte cte)
{
    d->cte = cte;
    if (cte == PST_CTE_BASE64)
        pst_b64_dec_init(&d->u.b64);
    else if (cte == PST_CTE_QP)
        pst_qp_dec_init(&d->u.qp);
}

/* pst_dec_update - decode n octets with the encoding chosen at init. */
size_t
pst_dec_update(struct pst_decoder *d, const void *in, size_t n, void *out)
{
    if (d->cte == PST_CTE_BASE64)
        return pst_b64_dec_update(&d->u.b64, in, n, out);
    if (d->cte == PST_CTE_QP)
        return pst_qp_dec_update(&d->u.qp, in, n, out);
    memcpy(out, in, n);
    return n;
}

/* pst_dec_final - end of input for the chosen encoding. */
size_t
pst_dec_final(struct pst_decoder *d, void *out)
{
    if (d->cte == PST_CTE_BASE64)
        return pst_b64_dec_final(&d->u.b64, out);
    if (d->cte == PST_CTE_QP)
        return pst_qp_dec_final(&d->u.qp, out);
    return 0;
}

/* pst_dec_bad - whether the input broke the encoding's rules. */
bool
pst_dec_bad(const struct pst_decoder *d)
{
    if (d->cte == PST_CTE_BASE64)
        return d->u.b64.bad;
    if (d->cte == PST_CTE_QP)
        return d->u.qp.bad;
    return false;
}

/* ---- base64 encoder ---- */

/* pst_b64_enc_init - start a base64 encode with lines of `line` characters. */
void
pst_b64_enc_init(struct pst_b64_enc *e, unsigned line)
{
    memset(e, 0, sizeof(*e));
    e->line = line / 4 * 4;
}

static uint8_t *
b64_quad(struct pst_b64_enc *e, uint8_t *o, const uint8_t *t, unsigned n)
{
    if (e->line && e->col >= e->line) {
        *o++ = '\r';
        *o++ = '\n';
        e->col = 0;
    }
    o[0] = (uint8_t)b64_alpha[t[0] >> 2];
    o[1] = (uint8_t)b64_alpha[(t[0] & 3) << 4 | (n > 1 ? t[1] >> 4 : 0)];
    o[2] = n > 1 ? (uint8_t)b64_alpha[(t[1] & 15) << 2 |
                                      (n > 2 ? t[2] >> 6 : 0)]
                 : '=';
    o[3] = n > 2 ? (uint8_t)b64_alpha[t[2] & 63] : '=';
    e->col += 4;
    return o + 4;
}

/* pst_b64_enc_update - encode n octets. */
size_t
pst_b64_enc_update(struct pst_b64_enc *e, const void *in, size_t n, void *out)
{
    const uint8_t *s = in, *end = s + n;
    uint8_t *o = out;

    while (s < end) {
        if (e->nin == 0 && end - s >= 3) {
            o = b64_quad(e, o, s, 3);
            s += 3;
            continue;
        }
        e->in[e->nin++] = *s++;
        if (e->nin == 3) {
            o = b64_quad(e, o, e->in, 3);
            e->nin = 0;
        }
    }
    return (size_t)(o - (uint8_t *)out);
}

/* pst_b64_enc_final - pad the last quad and end the last line. */
size_t
pst_b64_enc_final(struct pst_b64_enc *e, void *out)
{
    uint8_t *o = out;

    if (e->nin)
        o = b64_quad(e, o, e->in, e->nin);
    if (e->line && e->col) {
        *o++ = '\r';
        *o++ = '\n';
    }
    e->nin = 0;
    e->col = 0;
    return (size_t)(o - (uint8_t *)out);
}

/* pst_b64_encode - see codec.h. */
size_t
pst_b64_encode(const void *in, size_t n, char *out)
{
    struct pst_b64_enc e;
    pst_b64_enc_init(&e, 0);
    size_t o = pst_b64_enc_update(&e, in, n, out);
    o += pst_b64_enc_final(&e, out + o);
    out[o] = '\0';
    return o;
}

/* pst_b64_decode - see codec.h: the streaming decoder, once the input is
 * known to be strict (then it writes exactly the octets counted here). */
ssize_t
pst_b64_decode(const char *in, size_t n, void *out, size_t outsz)
{
    size_t pads = n > 0 && in[n - 1] == '=' ? 1 + (n > 1 && in[n - 2] == '=')
                                            : 0;
    if (n % 4 != 0 || n / 4 * 3 - pads > outsz)
        return -1;
    for (size_t i = 0; i < n - pads; i++)
        if (b64_tab[(unsigned char)in[i]] >= 64)
            return -1;              /* a blank, a '=' inside, not base64 */
    struct pst_b64_dec d;
    pst_b64_dec_init(&d);
    size_t o = pst_b64_dec_update(&d, in, n, out);
    pst_b64_dec_final(&d, out);
    return d.bad ? -1 : (ssize_t)o;
}

/* ---- quoted-printable encoder ---- */

#define QP_LINE 76

/* pst_qp_enc_init - start a quoted-printable encode (text or binary). */
void
pst_qp_enc_init(struct pst_qp_enc *e, bool binary)
{
    e->col = 0;
    e->binary = binary;
    e->cr = false;
    e->ws = -1;
}

/* Write one character or its "=XX" form, breaking the line first when it
 * would not fit with room left for a soft break. */
static uint8_t *
qp_put(struct pst_qp_enc *e, uint8_t *o, unsigned c, bool encode)
{
    if (e->col + (encode ? 3u : 1u) > QP_LINE - 1) {
        *o++ = '=';
        *o++ = '\r';
        *o++ = '\n';
        e->col = 0;
    }
    /* no encoded line starts with "--": it cannot pass for a boundary
     * delimiter of an enclosing multipart, however a line was broken */
    if (c == '-' && e->col == 0)
        encode = true;
    unsigned w = encode ? 3 : 1;
    if (encode) {
        *o++ = '=';
        *o++ = (uint8_t)hexdig[c >> 4];
        *o++ = (uint8_t)hexdig[c & 15];
    } else {
        *o++ = (uint8_t)c;
    }
    e->col += w;
    return o;
}

static uint8_t *
qp_eol(struct pst_qp_enc *e, uint8_t *o)
{
    if (e->ws >= 0)
        o = qp_put(e, o, (unsigned)e->ws, true);
    e->ws = -1;
    *o++ = '\r';
    *o++ = '\n';
    e->col = 0;
    return o;
}

/* pst_qp_enc_update - encode n octets; a blank or CR is held until the next
 * octet shows whether it ends a line. */
size_t
pst_qp_enc_update(struct pst_qp_enc *e, const void *in, size_t n, void *out)
{
    const uint8_t *s = in, *end = s + n;
    uint8_t *o = out;

    for (; s < end; s++) {
        unsigned c = *s;
        if (!e->binary) {
            if (e->cr) {
                e->cr = false;
                if (c == '\n') {
                    o = qp_eol(e, o);
                    continue;
                }
                if (e->ws >= 0)
                    o = qp_put(e, o, (unsigned)e->ws, false);
                e->ws = -1;
                o = qp_put(e, o, '\r', true);
            }
            if (c == '\r') {
                e->cr = true;
                continue;
            }
            if (c == '\n') {
                o = qp_eol(e, o);
                continue;
            }
        }
        if (e->ws >= 0) {
            o = qp_put(e, o, (unsigned)e->ws, false);
            e->ws = -1;
        }
        if ((c == ' ' || c == '\t') && !e->binary) {
            e->ws = (int)c;
            continue;
        }
        o = qp_put(e, o, c, c < 33 || c > 126 || c == '=');
    }
    return (size_t)(o - (uint8_t *)out);
}

/* pst_qp_enc_final - encode what is held. */
size_t
pst_qp_enc_final(struct pst_qp_enc *e, void *out)
{
    uint8_t *o = out;

    if (e->ws >= 0)
        o = qp_put(e, o, (unsigned)e->ws, true);
    if (e->cr)
        o = qp_put(e, o, '\r', true);
    e->ws = -1;
    e->cr = false;
    e->col = 0;
    return (size_t)(o - (uint8_t *)out);
}
