/*
 * mime8.c - downgrade of 8-bit MIME text to quoted-printable (RFC 6152
 * section 3 leaves the conversion to the relay; RFC 2045 6.7 defines the
 * encoding), for a next hop that does not offer 8BITMIME.
 *
 * Streaming, one line at a time, in the order lines are sent. Each entity's
 * header block is held (up to PST_MIME8_HDR octets) until its empty line,
 * then examined:
 *   - multipart/ * with a boundary: its boundary is pushed (nesting up to
 *     PST_MIME8_DEPTH); parts are examined in turn;
 *   - message/rfc822: the embedded message's headers are the next block;
 *   - any other entity whose Content-Transfer-Encoding is absent, 7bit,
 *     8bit or binary: the body is encoded quoted-printable and the header
 *     becomes "Content-Transfer-Encoding: quoted-printable" (7-bit text
 *     passes through QP unchanged except '=' and long lines, so labelling
 *     is not trusted). base64 and quoted-printable bodies pass unchanged.
 * A composite entity labelled 8bit is relabelled 7bit. The top-level header
 * gains "MIME-Version: 1.0" if a plain (non-MIME) message is converted.
 * Header fields themselves are never changed otherwise (8-bit in headers
 * has no lossless 7-bit form short of RFC 2047, which the sender chose not
 * to use).
 *
 * Limits: a header block over PST_MIME8_HDR octets, or nesting deeper than
 * PST_MIME8_DEPTH, makes the rest of that entity pass unconverted.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "queue/smtp_client.h"

#define PST_MIME8_HDR (64u * 1024u)
#define PST_MIME8_DEPTH 32
#define PST_MIME8_BND 72            /* RFC 2046: at most 70 */
#define QP_MAX 76

enum mstate { M_HDR, M_PASS, M_QP };

struct pst_mime8 {
    pst_mime8_out out;
    void *arg;
    enum mstate st;
    bool top;                       /* the header block is the message's */
    bool overflow;                  /* header block too big: passed */
    char *hdr;
    size_t hlen;
    char bnd[PST_MIME8_DEPTH][PST_MIME8_BND + 1];
    size_t nbnd;
    bool next_is_msg;               /* message/rfc822 body = header block */
    char qp[QP_MAX + 8];
};

struct pst_mime8 *
pst_mime8_new(pst_mime8_out out, void *arg)
{
    struct pst_mime8 *m = pst_xcalloc(1, sizeof(*m));
    m->out = out;
    m->arg = arg;
    m->st = M_HDR;
    m->top = true;
    m->hdr = pst_xmalloc(PST_MIME8_HDR);
    return m;
}

void
pst_mime8_free(struct pst_mime8 *m)
{
    if (m == NULL)
        return;
    free(m->hdr);
    free(m);
}

/* ---- header analysis ---- */

/* field_value - the unfolded value of field name in the held block (first
 * occurrence), lowercased into dst; false if absent. */
static bool
field_value(const struct pst_mime8 *m, const char *name, char *dst,
            size_t dstsz)
{
    size_t nl = strlen(name);
    const char *p = m->hdr, *end = m->hdr + m->hlen;

    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - p) > nl && pst_strncaseeq(p, name, nl) &&
            p[nl] == ':') {
            size_t o = 0;
            const char *q = p + nl + 1;
            for (;;) {
                for (; q < eol && o + 1 < dstsz; q++)
                    dst[o++] = (char)pst_tolower((unsigned char)*q);
                if (eol >= end || (eol[1] != ' ' && eol[1] != '\t'))
                    break;
                q = eol + 1;
                eol = memchr(q, '\n', (size_t)(end - q));
                if (eol == NULL)
                    eol = end;
            }
            dst[o] = '\0';
            return true;
        }
        p = eol + 1;
    }
    return false;
}

static const char *
skip_ws(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* boundary - the boundary parameter of a Content-Type value (original
 * case matters: taken from the raw block, not the lowercased copy). */
static bool
boundary(const struct pst_mime8 *m, char *dst)
{
    char v[4096];
    if (!field_value(m, "content-type", v, sizeof(v)))
        return false;
    const char *b = strstr(v, "boundary=");
    if (b == NULL)
        return false;
    size_t off = (size_t)(b - v) + 9;
    /* find the same offset in the raw text: search the raw header for a
     * case-insensitive "boundary=" and take what follows */
    const char *raw = m->hdr, *end = m->hdr + m->hlen, *r = NULL;
    for (const char *p = raw; p + 9 <= end; p++)
        if (pst_strncaseeq(p, "boundary=", 9)) {
            r = p + 9;
            break;
        }
    (void)off;
    if (r == NULL)
        return false;
    size_t n = 0;
    if (*r == '"') {
        r++;
        while (r < end && *r != '"' && *r != '\r' && *r != '\n' &&
               n < PST_MIME8_BND)
            dst[n++] = *r++;
    } else {
        while (r < end && !strchr(" \t;\r\n\"", *r) && n < PST_MIME8_BND)
            dst[n++] = *r++;
    }
    dst[n] = '\0';
    return n > 0;
}

/* emit_header - the held block out, CTE replaced by cte (NULL: unchanged),
 * MIME-Version added when add_mv. */
static void
emit_header(struct pst_mime8 *m, const char *cte, bool add_mv)
{
    const char *p = m->hdr, *end = m->hdr + m->hlen;
    bool skipping = false;

    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL)
            eol = end;
        bool cont = p[0] == ' ' || p[0] == '\t';
        if (!cont)
            skipping = cte && (size_t)(eol - p) > 26 &&
                       pst_strncaseeq(p, "content-transfer-encoding:", 26);
        if (!skipping)
            m->out(m->arg, p, (size_t)(eol - p));
        p = eol + 1;
    }
    if (add_mv)
        m->out(m->arg, "MIME-Version: 1.0", 17);
    if (cte) {
        char l[64];
        size_t n = (size_t)snprintf(l, sizeof(l),
                                    "Content-Transfer-Encoding: %s", cte);
        m->out(m->arg, l, n);
    }
    m->out(m->arg, "", 0);
    m->hlen = 0;
}

static void
end_header(struct pst_mime8 *m)
{
    char ct[4096] = "", cte[256] = "";
    bool top = m->top;

    m->top = false;
    if (m->overflow) {
        m->overflow = false;
        m->st = M_PASS;
        return;
    }
    bool has_ct = field_value(m, "content-type", ct, sizeof(ct));
    field_value(m, "content-transfer-encoding", cte, sizeof(cte));
    const char *t = skip_ws(ct);
    const char *e = skip_ws(cte);
    bool enc_ok = *e == '\0' || strncmp(e, "7bit", 4) == 0 ||
                  strncmp(e, "8bit", 4) == 0 || strncmp(e, "binary", 6) == 0;
    bool labelled8 = strncmp(e, "8bit", 4) == 0 ||
                     strncmp(e, "binary", 6) == 0;

    if (strncmp(t, "multipart/", 10) == 0) {
        char b[PST_MIME8_BND + 1];
        if (m->nbnd < PST_MIME8_DEPTH && boundary(m, b)) {
            memcpy(m->bnd[m->nbnd++], b, sizeof(b));
            emit_header(m, labelled8 ? "7bit" : NULL, false);
            m->st = M_PASS;             /* preamble */
            return;
        }
        emit_header(m, NULL, false);
        m->st = M_PASS;
        return;
    }
    if (strncmp(t, "message/rfc822", 14) == 0 ||
        strncmp(t, "message/global", 14) == 0) {
        emit_header(m, labelled8 ? "7bit" : NULL, false);
        m->st = M_HDR;                  /* the embedded message */
        return;
    }
    if (!enc_ok) {
        emit_header(m, NULL, false);
        m->st = M_PASS;
        return;
    }
    char mv[64];
    bool add_mv = top && !field_value(m, "mime-version", mv, sizeof(mv));
    (void)has_ct;
    emit_header(m, "quoted-printable", add_mv);
    m->st = M_QP;
}

/* ---- quoted-printable ---- */

static void
qp_line(struct pst_mime8 *m, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char enc[3];
        size_t el;
        bool last = i + 1 == n;
        if ((ch >= 33 && ch <= 126 && ch != '=') ||
            ((ch == ' ' || ch == '\t') && !last)) {
            enc[0] = (char)ch;
            el = 1;
        } else {
            enc[0] = '=';
            enc[1] = hex[ch >> 4];
            enc[2] = hex[ch & 15];
            el = 3;
        }
        /* keep room for a soft break "=" within 76 columns */
        if (o + el > QP_MAX - 1 && !(last && o + el <= QP_MAX)) {
            m->qp[o++] = '=';
            m->out(m->arg, m->qp, o);
            o = 0;
        }
        memcpy(m->qp + o, enc, el);
        o += el;
    }
    m->out(m->arg, m->qp, o);
}

/* boundary_line - index+1 of the boundary (innermost first) this line
 * opens or closes, 0 if none; *close set for "--b--". */
static size_t
boundary_line(const struct pst_mime8 *m, const char *l, size_t n,
              bool *close)
{
    if (n < 3 || l[0] != '-' || l[1] != '-')
        return 0;
    for (size_t k = m->nbnd; k > 0; k--) {
        const char *b = m->bnd[k - 1];
        size_t bl = strlen(b);
        if (n < 2 + bl || memcmp(l + 2, b, bl) != 0)
            continue;
        const char *rest = l + 2 + bl;
        size_t rl = n - 2 - bl;
        *close = rl >= 2 && rest[0] == '-' && rest[1] == '-';
        size_t i = *close ? 2 : 0;
        for (; i < rl; i++)
            if (rest[i] != ' ' && rest[i] != '\t')
                break;
        if (i == rl)
            return k;
    }
    return 0;
}

void
pst_mime8_line(struct pst_mime8 *m, const char *l, size_t n)
{
    bool close;

    if (m->st == M_HDR) {
        if (n == 0) {
            end_header(m);
            return;
        }
        if (m->overflow) {
            m->out(m->arg, l, n);
            return;
        }
        if (m->hlen + n + 1 > PST_MIME8_HDR) {
            /* too big to hold: pass it and the entity as they are */
            const char *p = m->hdr, *end = m->hdr + m->hlen;
            while (p < end) {
                const char *eol = memchr(p, '\n', (size_t)(end - p));
                m->out(m->arg, p, (size_t)(eol - p));
                p = eol + 1;
            }
            m->hlen = 0;
            m->overflow = true;
            m->out(m->arg, l, n);
            return;
        }
        memcpy(m->hdr + m->hlen, l, n);
        m->hlen += n;
        m->hdr[m->hlen++] = '\n';
        return;
    }
    size_t k = boundary_line(m, l, n, &close);
    if (k > 0) {
        m->nbnd = close ? k - 1 : k;
        m->out(m->arg, l, n);
        m->st = close ? M_PASS : M_HDR;
        return;
    }
    if (m->st == M_QP)
        qp_line(m, l, n);
    else
        m->out(m->arg, l, n);
}

void
pst_mime8_end(struct pst_mime8 *m)
{
    /* a message that ended inside its header block: pass it on */
    if (m->st == M_HDR && m->hlen > 0) {
        const char *p = m->hdr, *end = m->hdr + m->hlen;
        while (p < end) {
            const char *eol = memchr(p, '\n', (size_t)(end - p));
            m->out(m->arg, p, (size_t)(eol - p));
            p = eol + 1;
        }
        m->hlen = 0;
    }
}
