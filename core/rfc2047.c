/*
 * rfc2047.c - RFC 2047 encoded words and RFC 2045/2231 parameter lists.
 *
 * Both parsers are single passes over bounded input (a header field the
 * MIME parser has already limited in size); they allocate only their
 * output. Encoded words decoded per value are capped by the caller's
 * max_words, parameters per list by max.
 */
#include "core/rfc2047.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/charset.h"
#include "core/codec.h"
#include "core/util.h"

#define CHARSET_MAX 64              /* "charset*lang" in a word or 2231 */

static bool
is_wsp(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* pst_skip_cfws - skip blanks, line ends and nested comments. */
const char *
pst_skip_cfws(const char *s, const char *end)
{
    while (s < end) {
        if (is_wsp((unsigned char)*s)) {
            s++;
        } else if (*s == '(') {
            unsigned depth = 0;
            for (; s < end; s++) {
                if (*s == '\\' && s + 1 < end) {
                    s++;
                } else if (*s == '(') {
                    depth++;
                } else if (*s == ')') {
                    if (--depth == 0) {
                        s++;
                        break;
                    }
                }
            }
        } else {
            break;
        }
    }
    return s;
}

/* ---- encoded words ---- */

struct ew {
    const char *charset;            /* without the RFC 2231 language */
    size_t charsetlen;
    char enc;                       /* 'B' or 'Q' */
    const char *text;
    size_t textlen;
    const char *end;                /* after "?=" */
};

/* Parse "=?cs?E?text?=" at s; false if the structure is not there. */
static bool
ew_scan(const char *s, const char *end, struct ew *w)
{
    const char *p = s + 2, *q;

    if (end - s < 8 || s[0] != '=' || s[1] != '?')
        return false;
    for (q = p; q < end && *q != '?'; q++)
        if (is_wsp((unsigned char)*q) || (unsigned char)*q < 0x21 ||
            (unsigned char)*q > 0x7e)
            return false;
    if (q == p || q >= end || q - p > CHARSET_MAX)
        return false;
    w->charset = p;
    w->charsetlen = (size_t)(q - p);
    const char *star = memchr(p, '*', w->charsetlen);
    if (star)
        w->charsetlen = (size_t)(star - p);
    if (end - q < 4 || q[2] != '?')
        return false;
    w->enc = (char)(q[1] & ~0x20);
    if (w->enc != 'B' && w->enc != 'Q')
        return false;
    w->text = q + 3;
    for (p = w->text; p + 1 < end; p++) {
        if (p[0] == '?' && p[1] == '=') {
            w->textlen = (size_t)(p - w->text);
            w->end = p + 2;
            return true;
        }
        if (is_wsp((unsigned char)*p) || *p == '?')
            return false;
    }
    return false;
}

/* Append the payload bytes of w to raw; false if the base64 is broken. */
static bool
ew_payload(const struct ew *w, struct pst_tbuf *raw)
{
    if (w->enc == 'Q') {
        pst_tbuf_reserve(raw, w->textlen);
        for (size_t i = 0; i < w->textlen; i++) {
            int c = (unsigned char)w->text[i];
            if (c == '_') {
                c = ' ';
            } else if (c == '=' && i + 2 < w->textlen &&
                       pst_hexval(w->text[i + 1]) >= 0 && pst_hexval(w->text[i + 2]) >= 0) {
                c = pst_hexval(w->text[i + 1]) << 4 | pst_hexval(w->text[i + 2]);
                i += 2;
            }
            pst_tbuf_addc(raw, c);
        }
        return true;
    }
    /* B: alphabet only, pads only at the end, not 1 mod 4 characters. */
    size_t data = 0, pads = 0;
    for (size_t i = 0; i < w->textlen; i++) {
        char c = w->text[i];
        if (c == '=') {
            pads++;
        } else if (pads || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                             (c >= '0' && c <= '9') || c == '+' || c == '/')) {
            return false;
        } else {
            data++;
        }
    }
    if (data % 4 == 1 || pads > 2)
        return false;
    struct pst_b64_dec d;
    pst_b64_dec_init(&d);
    pst_tbuf_reserve(raw, PST_B64_DEC_OUT(w->textlen));
    raw->len += pst_b64_dec_update(&d, w->text, w->textlen, raw->p + raw->len);
    return true;
}

/* Joined payload of adjacent words in one charset, waiting for conversion. */
struct pending {
    char cs[CHARSET_MAX + 1];
    size_t cslen;
    struct pst_tbuf raw;
};

static void
pending_flush(struct pending *pw, struct pst_tbuf *out)
{
    if (pw->cslen == 0)
        return;
    if (pst_charset_to_utf8(pw->cs, pw->cslen, pw->raw.p, pw->raw.len, out) <
        0)
        pst_utf8_sanitize(pw->raw.p, pw->raw.len, out); /* not reached:
                                                            checked before */
    pw->cslen = 0;
    pst_tbuf_reset(&pw->raw);
}

/* pst_rfc2047_decode - decode the encoded words of a header value to UTF-8. */
void
pst_rfc2047_decode(const char *in, size_t n, unsigned max_words,
                   struct pst_tbuf *out, struct pst_rfc2047_stats *st)
{
    const char *s = in, *end = in + n, *lit = in;
    struct pst_rfc2047_stats dummy;
    struct pending pw;
    bool prev_ew = false;

    if (st == NULL)
        st = &dummy;
    memset(st, 0, sizeof(*st));
    pw.cslen = 0;
    pst_tbuf_init(&pw.raw);
    while (s < end) {
        const char *q = memchr(s, '=', (size_t)(end - s));
        struct ew w;
        if (q == NULL)
            break;
        if (q + 1 >= end || q[1] != '?' || !ew_scan(q, end, &w)) {
            s = q + 1;
            continue;
        }
        if (st->words >= max_words) {
            st->limit = true;
            break;
        }
        size_t mark = pw.raw.len;
        if (pst_charset_canon(w.charset, w.charsetlen) == NULL) {
            st->malformed++;
            s = w.end;
            continue;
        }
        /* Text between the previous word and this one. */
        bool blank = prev_ew;
        for (const char *p = lit; blank && p < q; p++)
            if (!is_wsp((unsigned char)*p))
                blank = false;
        bool same = pw.cslen == w.charsetlen &&
                    pst_strncaseeq(pw.cs, w.charset, w.charsetlen);
        if (!(blank && same))
            mark = 0;
        if (!(blank && same))
            pending_flush(&pw, out);
        if (!blank)
            pst_utf8_sanitize(lit, (size_t)(q - lit), out);
        if (!ew_payload(&w, &pw.raw)) {
            /* Broken: keep the word itself as text. */
            pw.raw.len = mark;
            pending_flush(&pw, out);
            if (blank)
                pst_utf8_sanitize(lit, (size_t)(q - lit), out);
            pst_utf8_sanitize(q, (size_t)(w.end - q), out);
            st->malformed++;
            prev_ew = false;
        } else {
            memcpy(pw.cs, w.charset, w.charsetlen);
            pw.cslen = w.charsetlen;
            st->words++;
            prev_ew = true;
        }
        s = lit = w.end;
    }
    pending_flush(&pw, out);
    pst_utf8_sanitize(lit, (size_t)(end - lit), out);
    pst_tbuf_free(&pw.raw);
}

/* ---- parameters ---- */

struct rawp {
    const char *attr;
    size_t attrlen;
    char *val;                      /* unquoted bytes, malloc'd */
    size_t vallen;
    /* RFC 2231 view of attr */
    size_t namelen;
    int section;                    /* -1: none */
    bool ext;                       /* trailing '*' */
    bool used;
};

static bool
is_tspecial_or_ctl(int c)
{
    return !pst_mime_token_char(c);
}

/* token characters of RFC 2045 5.1, as a bit table */
static const uint32_t token_bits[8] = {
    0x00000000, /* 0x00-0x1f: controls */
    0x03ff6cfa, /* 0x20-0x3f: ! # $ % & ' * + - . 0-9 */
    0xc7fffffe, /* 0x40-0x5f: A-Z ^ _ */
    0x7fffffff, /* 0x60-0x7f: ` a-z { | } ~ */
    0, 0, 0, 0,
};

bool
pst_mime_token_char(int c)
{
    return c >= 0 && c < 256 && (token_bits[c >> 5] >> (c & 31) & 1);
}

static const char *
skip_to_semi(const char *s, const char *end)
{
    bool inq = false;
    for (; s < end; s++) {
        if (inq && *s == '\\' && s + 1 < end)
            s++;
        else if (*s == '"')
            inq = !inq;
        else if (*s == ';' && !inq)
            break;
    }
    return s;
}

static void
rawp_split(struct rawp *r)
{
    /* name, name*, name*N, name*N* */
    const char *a = r->attr;
    const char *star = memchr(a, '*', r->attrlen);
    r->section = -1;
    r->ext = false;
    r->namelen = r->attrlen;
    if (star == NULL)
        return;
    size_t rest = r->attrlen - (size_t)(star - a) - 1;
    const char *d = star + 1;
    if (rest == 0) {
        r->namelen = (size_t)(star - a);
        r->ext = true;
        return;
    }
    size_t nd = 0;
    while (nd < rest && d[nd] >= '0' && d[nd] <= '9')
        nd++;
    if (nd == 0 || nd > 4 || (nd > 1 && d[0] == '0'))
        return;                     /* not RFC 2231: a plain odd name */
    if (nd == rest - 1 && d[nd] == '*')
        r->ext = true;
    else if (nd != rest)
        return;
    r->namelen = (size_t)(star - a);
    r->section = atoi(d);
}

/* Percent-decode s into out; false if an escape was broken. */
static bool
pct_decode(const char *s, size_t n, struct pst_tbuf *out)
{
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && pst_hexval(s[i + 1]) >= 0 &&
            pst_hexval(s[i + 2]) >= 0) {
            pst_tbuf_addc(out, pst_hexval(s[i + 1]) << 4 | pst_hexval(s[i + 2]));
            i += 2;
        } else {
            if (s[i] == '%')
                ok = false;
            pst_tbuf_addc(out, s[i]);
        }
    }
    return ok;
}

static void
push_param(struct pst_param **v, unsigned *n, const char *name,
           size_t namelen, const char *val, size_t vallen)
{
    *v = pst_xrealloc(*v, (*n + 1) * sizeof(**v));
    char *nm = pst_xstrndup(name, namelen);
    for (char *c = nm; *c; c++)
        *c = (char)pst_tolower((unsigned char)*c);
    (*v)[*n].name = nm;
    (*v)[*n].value = pst_xstrndup(val, vallen);
    (*n)++;
}

/* The value of a name: the first one is used, a later one is an
 * alternative (and a duplicate is bad) unless alt says it is one already. */
static void
add_param(struct pst_params *ps, const char *name, size_t namelen,
          const char *val, size_t vallen, bool alt)
{
    for (unsigned i = 0; !alt && i < ps->n; i++)
        if (strlen(ps->v[i].name) == namelen &&
            pst_strncaseeq(ps->v[i].name, name, namelen)) {
            ps->bad = true;         /* duplicate: the first wins */
            alt = true;
        }
    if (alt && vallen > ps->alt_room) {
        ps->limit = true;           /* the copies' bound (rfc2047.h) */
    } else if (alt) {
        ps->alt_room -= vallen;
        push_param(&ps->alt, &ps->nalt, name, namelen, val, vallen);
    } else
        push_param(&ps->v, &ps->n, name, namelen, val, vallen);
}

/* Whether ri is a section of the RFC 2231 form of rk's name (the lone
 * name* is section -1). */
static bool
same_form(const struct rawp *ri, const struct rawp *rk)
{
    return ri->namelen == rk->namelen && (ri->section >= 0 || ri->ext) &&
           pst_strncaseeq(ri->attr, rk->attr, rk->namelen);
}

/*
 * One joining of the RFC 2231 form named like r[k] into utf: each section
 * from its pick-th occurrence (its last when it has fewer), sections 0,
 * 1, ... up to a gap, or with past_gaps every section present in order
 * of number. *more: a section has an occurrence past pick. Returns false
 * when the form is broken (a section twice, a bad escape or charset).
 */
static bool
join_one(struct rawp *r, unsigned nr, unsigned k, unsigned pick,
         bool past_gaps, bool *more, struct pst_tbuf *utf)
{
    struct pst_tbuf bytes;
    char cs[CHARSET_MAX + 1];
    size_t cslen = 0;
    bool ok = true;

    pst_tbuf_init(&bytes);
    int want = r[k].section < 0 ? -1 : 0;
    for (;;) {
        if (past_gaps) {            /* the next section present */
            int next = -1;
            for (unsigned i = 0; i < nr; i++)
                if (same_form(&r[i], &r[k]) && r[i].section >= want &&
                    (next < 0 || r[i].section < next))
                    next = r[i].section;
            if (next < 0)
                break;
            want = next;
        }
        struct rawp *sec = NULL;
        unsigned seen = 0;
        for (unsigned i = 0; i < nr; i++) {
            if (!same_form(&r[i], &r[k]) || r[i].section != want)
                continue;
            r[i].used = true;
            if (seen++ <= pick)
                sec = &r[i];
        }
        if (sec == NULL)
            break;
        if (seen > 1)
            ok = false;             /* the same section twice */
        if (seen > pick + 1)
            *more = true;
        const char *v = sec->val;
        size_t vl = sec->vallen;
        if (sec->ext && want <= 0) {
            /* charset'language'text */
            const char *t1 = memchr(v, '\'', vl);
            const char *t2 = t1 ? memchr(t1 + 1, '\'', vl - (size_t)(t1 + 1 - v))
                                : NULL;
            if (t2) {
                cslen = PST_MIN((size_t)(t1 - v), sizeof(cs) - 1);
                memcpy(cs, v, cslen);
                vl -= (size_t)(t2 + 1 - v);
                v = t2 + 1;
            } else {
                ok = false;
            }
        }
        if (sec->ext)
            ok &= pct_decode(v, vl, &bytes);
        else
            pst_tbuf_add(&bytes, v, vl);
        if (want < 0)
            break;
        want++;
    }
    if (cslen == 0 ||
        pst_charset_to_utf8(cs, cslen, bytes.p, bytes.len, utf) < 0) {
        if (cslen)
            ok = false;
        pst_utf8_sanitize(bytes.p, bytes.len, utf);
    }
    pst_tbuf_free(&bytes);
    return ok;
}

/* Every joining of the RFC 2231 form past pick 0 is an alternative; past
 * JOINS_MAX of them the rest are not kept (limit). */
#define JOINS_MAX 8

/* Add the joinings of the RFC 2231 form named like r[k]: the first is
 * used unless alt; *more as join_one's after the last one added. */
static void
add_joins(struct pst_params *ps, struct rawp *r, unsigned nr, unsigned k,
          bool past_gaps, bool alt)
{
    bool more = true;
    for (unsigned pick = 0; more; pick++) {
        if (pick == JOINS_MAX) {
            ps->limit = true;
            break;
        }
        struct pst_tbuf utf;
        pst_tbuf_init(&utf);
        more = false;
        if (!join_one(r, nr, k, pick, past_gaps, &more, &utf))
            ps->bad = true;
        add_param(ps, r[k].attr, r[k].namelen, utf.p ? utf.p : "", utf.len,
                  alt || pick > 0);
        pst_tbuf_free(&utf);
    }
}

/*
 * Join the RFC 2231 form of the parameter named like r[k]. A section
 * given twice makes one joining per occurrence (the first used, the
 * others alternatives); a section beyond a gap ends the value used, and
 * the joining of every section present, past the gaps, is an
 * alternative. (A name's other form, "name*" beside "name*0", is joined
 * on its own: a duplicate, kept in alt by add_param.)
 */
static void
join_2231(struct pst_params *ps, struct rawp *r, unsigned nr, unsigned k)
{
    add_joins(ps, r, nr, k, false, false);
    if (r[k].section < 0)
        return;
    for (unsigned i = 0; i < nr; i++)
        if (!r[i].used && r[i].section >= 0 && same_form(&r[i], &r[k])) {
            ps->bad = true;         /* a section beyond a gap */
            add_joins(ps, r, nr, k, true, true);
            return;
        }
}

/* pst_params_parse - parse a parameter list, joining RFC 2231 sections. */
void
pst_params_parse(const char *s, size_t n, unsigned max, struct pst_params *ps)
{
    const char *end = s + n;
    struct rawp *r = NULL;
    unsigned nr = 0;

    memset(ps, 0, sizeof(*ps));
    ps->alt_room = 3 * n;           /* UTF-8 may triple bad octets */
    while (s < end) {
        s = pst_skip_cfws(s, end);
        if (s < end && *s == ';') {
            s++;
            continue;
        }
        if (s >= end)
            break;
        const char *a = s;
        while (s < end && !is_tspecial_or_ctl((unsigned char)*s))
            s++;
        const char *ae = s;
        s = pst_skip_cfws(s, end);
        if (a == ae || s >= end || *s != '=') {
            ps->bad = true;
            s = skip_to_semi(s == a ? s + 1 : s, end);
            continue;
        }
        s = pst_skip_cfws(s + 1, end);
        struct pst_tbuf v;
        pst_tbuf_init(&v);
        if (s < end && *s == '"') {
            for (s++; s < end && *s != '"'; s++) {
                if (*s == '\\' && s + 1 < end)
                    s++;
                if (*s == '\r' || *s == '\n')
                    continue;       /* folding inside the quotes */
                pst_tbuf_addc(&v, *s);
            }
            if (s < end)
                s++;
            else
                ps->bad = true;     /* unterminated */
            s = pst_skip_cfws(s, end);
            if (s < end && *s != ';') {
                ps->bad = true;
                s = skip_to_semi(s, end);
            }
        } else {
            const char *vs = s;
            while (s < end && !is_tspecial_or_ctl((unsigned char)*s))
                s++;
            const char *ve = s;
            s = pst_skip_cfws(s, end);
            if (s < end && *s != ';') {
                /* Blanks or specials inside an unquoted value: take it all
                 * up to the ';' as senders meant it. */
                ps->bad = true;
                s = skip_to_semi(s, end);
                ve = s;
                while (ve > vs && is_wsp((unsigned char)ve[-1]))
                    ve--;
            }
            pst_tbuf_add(&v, vs, (size_t)(ve - vs));
        }
        if (nr == max) {
            ps->limit = true;
            pst_tbuf_free(&v);
            break;
        }
        r = pst_xrealloc(r, (nr + 1) * sizeof(*r));
        r[nr] = (struct rawp){.attr = a, .attrlen = (size_t)(ae - a),
                              .val = v.p ? v.p : pst_xstrdup(""),
                              .vallen = v.len};
        rawp_split(&r[nr]);
        nr++;
    }
    /* RFC 2231 forms first so they take precedence over plain ones. */
    for (unsigned i = 0; i < nr; i++)
        if (!r[i].used && (r[i].section >= 0 || r[i].ext))
            join_2231(ps, r, nr, i);
    unsigned n2231 = ps->n;
    for (unsigned i = 0; i < nr; i++) {
        if (r[i].used)
            continue;
        bool dup = false, shadow = false;
        for (unsigned j = 0; j < i; j++)
            if (!r[j].used && r[j].attrlen == r[i].attrlen &&
                pst_strncaseeq(r[j].attr, r[i].attr, r[i].attrlen))
                dup = ps->bad = true;   /* duplicate: the first wins */
        for (unsigned j = 0; j < n2231; j++)
            if (strlen(ps->v[j].name) == r[i].namelen &&
                pst_strncaseeq(ps->v[j].name, r[i].attr, r[i].namelen))
                shadow = true;          /* its RFC 2231 form is used */
        struct pst_tbuf u;
        pst_tbuf_init(&u);
        pst_utf8_sanitize(r[i].val, r[i].vallen, &u);
        add_param(ps, r[i].attr, r[i].attrlen, u.p ? u.p : "", u.len,
                  dup || shadow);
        pst_tbuf_free(&u);
    }
    for (unsigned i = 0; i < nr; i++)
        free(r[i].val);
    free(r);
}

/* pst_params_get - value of a parameter by lowercase name, or NULL. */
const char *
pst_params_get(const struct pst_params *ps, const char *name)
{
    for (unsigned i = 0; i < ps->n; i++)
        if (strcmp(ps->v[i].name, name) == 0)
            return ps->v[i].value;
    return NULL;
}

/* pst_params_free - release a parsed parameter list. */
void
pst_params_free(struct pst_params *ps)
{
    for (unsigned i = 0; i < ps->n; i++) {
        free(ps->v[i].name);
        free(ps->v[i].value);
    }
    for (unsigned i = 0; i < ps->nalt; i++) {
        free(ps->alt[i].name);
        free(ps->alt[i].value);
    }
    free(ps->v);
    free(ps->alt);
    memset(ps, 0, sizeof(*ps));
}
