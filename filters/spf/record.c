/*
 * record.c - the check every SPF record passes before libspf2 sees it:
 * RFC 7208's grammar (section 12), plus bounds that keep libspf2's record
 * compiler away from CVE-2023-42118.
 *
 * The bug (fixed upstream in 2023, not in Debian 12's 1.2.10): libspf2
 * compiles each term's macro-string into a 511-byte budget; when a
 * macro-expand leaves fewer than 4 bytes of it, the next literal's
 * "space left" is computed as (left - 4) in size_t and underflows, and
 * the literal is then copied with no bound: a heap/stack overflow driven
 * by the record's text. The defence: every term is at most
 * SPF_TERM_MAX bytes with at most SPF_TERM_MACROS macro-expands, and its
 * compiled size, estimated the way libspf2 lays it out (4 bytes per
 * macro-expand, 4 + the literal rounded up to 4 per literal run, 4 for a
 * CIDR), stays under SPF_TERM_COMPILED: far from the end of the budget,
 * so the underflow cannot happen. A record that breaks the grammar or a
 * bound is a syntax error: the check's result is permerror (RFC 7208
 * 4.6) and libspf2 never compiles it. Explanations (exp=) are never
 * fetched (helper.c), so their text is never compiled either.
 *
 * Pure functions on the gateway side; fuzzed by tests/fuzz/fuzz_spf.c.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "filters/spf/spf_int.h"

#define SPF_TERM_MAX 255
#define SPF_TERM_MACROS 8
#define SPF_TERM_COMPILED 400       /* of libspf2's 511 per term */

static int
lc(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static bool
is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
is_digit(int c)
{
    return c >= '0' && c <= '9';
}

/* spf_is_record - s (n bytes) begins an SPF record: "v=spf1" then a
 * space or the end (RFC 7208 4.5). */
bool
spf_is_record(const char *s, size_t n)
{
    static const char v[] = "v=spf1";
    if (n < 6)
        return false;
    for (size_t i = 0; i < 6; i++)
        if (lc((unsigned char)s[i]) != v[i])
            return false;
    return n == 6 || s[6] == ' ';
}

/* A term being checked: [p, e). */
struct term {
    const char *p, *e;
    unsigned macros;
    unsigned compiled;
};

static unsigned
align4(unsigned n)
{
    return (n + 3) & ~3u;
}

/*
 * macro-string from t->p up to e (exclusive); in_mod: the letters c, r, t
 * are allowed (modifiers only, RFC 7208 7.3). Returns NULL or why not.
 * Updates the macro count and the compiled size estimate; *last_macro
 * tells whether the string ends with a macro-expand (for domain-end).
 */
static const char *
macro_string(struct term *t, const char *s, const char *e, bool in_mod,
             bool *last_macro)
{
    unsigned lit = 0;               /* bytes of the current literal run */
    *last_macro = false;
    while (s < e) {
        unsigned char c = (unsigned char)*s;
        if (c != '%') {
            if (c < 0x21 || c > 0x7e)
                return "bad character";
            lit++;
            s++;
            *last_macro = false;
            continue;
        }
        if (s + 1 >= e)
            return "'%' at the end";
        c = (unsigned char)s[1];
        if (c == '%' || c == '_') {
            lit += 1;
            s += 2;
            *last_macro = false;
            continue;
        }
        if (c == '-') {
            lit += 3;
            s += 2;
            *last_macro = false;
            continue;
        }
        if (c != '{')
            return "'%' not followed by '{', '%', '_' or '-'";
        s += 2;
        if (s >= e)
            return "unterminated macro";
        c = (unsigned char)lc(*s);
        if (!strchr("slodiphv", c) && !(in_mod && strchr("crt", c)))
            return "bad macro letter";
        s++;
        unsigned digits = 0, val = 0;
        while (s < e && is_digit(*s)) {
            val = val * 10 + (unsigned)(*s - '0');
            if (++digits > 3)
                return "macro transformer too long";
            s++;
        }
        if (digits > 0 && (val == 0 || val > 128))
            return "macro transformer out of range 1..128";
        if (s < e && lc(*s) == 'r')
            s++;
        while (s < e && *s != '}') {
            if (!strchr(".-+,/_=", *s))
                return "bad macro delimiter";
            s++;
        }
        if (s >= e)
            return "unterminated macro";
        s++;                        /* '}' */
        if (lit > 0)
            t->compiled += 4 + align4(lit);
        if (lit > 255)
            return "literal too long";
        lit = 0;
        t->compiled += 4;
        if (++t->macros > SPF_TERM_MACROS)
            return "too many macros in one term";
        *last_macro = true;
    }
    if (lit > 255)
        return "literal too long";
    if (lit > 0)
        t->compiled += 4 + align4(lit);
    return NULL;
}

/* toplabel = ( *alphanum ALPHA *alphanum ) /
 *            ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
static bool
toplabel_ok(const char *s, const char *e)
{
    bool alpha = false, dash = false;
    if (s >= e || e - s > 63)
        return false;
    for (const char *p = s; p < e; p++) {
        if (is_alpha(*p))
            alpha = true;
        else if (*p == '-')
            dash = true;
        else if (!is_digit(*p))
            return false;
    }
    if (!dash)
        return alpha;
    return *s != '-' && e[-1] != '-';
}

/* domain-spec = macro-string domain-end */
static const char *
domain_spec(struct term *t, const char *s, const char *e, bool in_mod)
{
    bool last_macro;
    const char *why;
    if (s >= e)
        return "empty domain";
    if ((why = macro_string(t, s, e, in_mod, &last_macro)) != NULL)
        return why;
    if (last_macro)
        return NULL;
    /* domain-end: "." toplabel [ "." ] */
    const char *end = e;
    if (end[-1] == '.')
        end--;
    const char *dot = end;
    while (dot > s && dot[-1] != '.')
        dot--;
    if (dot == s || !toplabel_ok(dot, end))
        return "domain does not end in a top label";
    return NULL;
}

/* "/" cidr with no leading zero, at most max */
static const char *
cidr(const char **sp, const char *e, unsigned max)
{
    const char *s = *sp + 1;        /* past '/' */
    unsigned v = 0, n = 0;
    while (s < e && is_digit(*s)) {
        v = v * 10 + (unsigned)(*s - '0');
        if (++n > 3)
            return "bad CIDR length";
        s++;
    }
    if (n == 0 || (n > 1 && (*sp)[1] == '0') || v > max)
        return "bad CIDR length";
    *sp = s;
    return NULL;
}

/* [ ip4-cidr ] [ "//" ip6-cidr ]: the tail of a or mx; *e_out is where
 * the domain-spec ends. */
static const char *
dual_cidr(struct term *t, const char *s, const char *e, const char **dom_end)
{
    /* find the first '/' that starts the CIDR part */
    const char *slash = NULL;
    for (const char *p = s; p < e; p++)
        if (*p == '/') {
            slash = p;
            break;
        }
    *dom_end = slash ? slash : e;
    if (slash == NULL)
        return NULL;
    const char *p = slash, *why;
    t->compiled += 4;
    if (p + 1 < e && p[1] != '/') {
        if ((why = cidr(&p, e, 32)) != NULL)
            return why;
    }
    if (p < e) {
        if (p + 1 >= e || p[0] != '/' || p[1] != '/')
            return "bad CIDR length";
        p++;
        if ((why = cidr(&p, e, 128)) != NULL)
            return why;
    }
    return p == e ? NULL : "bad CIDR length";
}

static bool
qnum_ok(const char *s, const char *e)
{
    unsigned v = 0;
    if (s >= e || e - s > 3 || (e - s > 1 && *s == '0'))
        return false;
    for (; s < e; s++) {
        if (!is_digit(*s))
            return false;
        v = v * 10 + (unsigned)(*s - '0');
    }
    return v <= 255;
}

static const char *
ip4_network(const char *s, const char *e)
{
    const char *slash = memchr(s, '/', (size_t)(e - s));
    const char *end = slash ? slash : e, *p = s;
    for (int i = 0; i < 4; i++) {
        const char *q = p;
        while (q < end && *q != '.')
            q++;
        if (!qnum_ok(p, q) || (i < 3 && q >= end) || (i == 3 && q != end))
            return "bad ip4 address";
        p = q + 1;
    }
    if (slash) {
        const char *c = slash;
        const char *why = cidr(&c, e, 32);
        if (why || c != e)
            return "bad ip4 CIDR length";
    }
    return NULL;
}

static const char *
ip6_network(const char *s, const char *e)
{
    char buf[64];
    struct in6_addr a;
    const char *slash = memchr(s, '/', (size_t)(e - s));
    const char *end = slash ? slash : e;
    if (end - s < 2 || (size_t)(end - s) >= sizeof(buf))
        return "bad ip6 address";
    memcpy(buf, s, (size_t)(end - s));
    buf[end - s] = '\0';
    for (const char *p = buf; *p; p++)
        if (!is_digit(*p) && !strchr("abcdefABCDEF:.", *p))
            return "bad ip6 address";
    if (inet_pton(AF_INET6, buf, &a) != 1)
        return "bad ip6 address";
    if (slash) {
        const char *c = slash;
        const char *why = cidr(&c, e, 128);
        if (why || c != e)
            return "bad ip6 CIDR length";
    }
    return NULL;
}

/* does [s, e) start with name (case-insensitive) followed by one of
 * follow (or the end)? */
static bool
word(const char *s, const char *e, const char *name, const char *follow)
{
    size_t n = strlen(name);
    if ((size_t)(e - s) < n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lc((unsigned char)s[i]) != name[i])
            return false;
    return s + n == e || strchr(follow, s[n]) != NULL;
}

static const char *
one_term(struct term *t, bool *redirect, bool *exp)
{
    const char *s = t->p, *e = t->e, *why, *dom_end;
    if (e - s > SPF_TERM_MAX)
        return "term too long";
    /* modifier: name "=" macro-string */
    const char *eq = s;
    if (is_alpha(*s)) {
        while (eq < e && (is_alpha(*eq) || is_digit(*eq) || *eq == '-' ||
                          *eq == '_' || *eq == '.'))
            eq++;
        if (eq < e && *eq == '=') {
            bool last;
            if (word(s, e, "redirect", "=")) {
                if (*redirect)
                    return "redirect given twice";
                *redirect = true;
                return domain_spec(t, eq + 1, e, true);
            }
            if (word(s, e, "exp", "=")) {
                if (*exp)
                    return "exp given twice";
                *exp = true;
                return domain_spec(t, eq + 1, e, true);
            }
            return macro_string(t, eq + 1, e, true, &last);
        }
    }
    if (strchr("+-~?", *s))
        s++;
    if (s >= e)
        return "empty term";
    if (word(s, e, "all", ""))
        return NULL;
    if (word(s, e, "include", ":"))
        return s + 7 < e ? domain_spec(t, s + 8, e, false)
                         : "include needs a domain";
    if (word(s, e, "exists", ":"))
        return s + 6 < e ? domain_spec(t, s + 7, e, false)
                         : "exists needs a domain";
    if (word(s, e, "ptr", ":"))
        return s + 3 == e ? NULL : domain_spec(t, s + 4, e, false);
    if (word(s, e, "ip4", ":"))
        return s + 3 < e ? ip4_network(s + 4, e) : "ip4 needs an address";
    if (word(s, e, "ip6", ":"))
        return s + 3 < e ? ip6_network(s + 4, e) : "ip6 needs an address";
    size_t nl = word(s, e, "a", ":/") ? 1 : word(s, e, "mx", ":/") ? 2 : 0;
    if (nl == 0)
        return "unknown mechanism";
    s += nl;
    if (s == e)
        return NULL;
    if (*s == '/')
        return dual_cidr(t, s, e, &dom_end);
    s++;                            /* ':' */
    /* the domain-spec ends where a CIDR begins: the last '/' run that
     * parses as one; macro delimiters may contain '/' only inside {} */
    const char *p = s;
    int depth = 0;
    const char *c0 = NULL;
    for (; p < e; p++) {
        if (*p == '{')
            depth++;
        else if (*p == '}')
            depth--;
        else if (*p == '/' && depth == 0) {
            c0 = p;
            break;
        }
    }
    if (c0 != NULL && (why = dual_cidr(t, c0, e, &dom_end)) != NULL)
        return why;
    return domain_spec(t, s, c0 ? c0 : e, false);
}

/* spf_record_check - NULL if the SPF record r (n bytes, beginning
 * "v=spf1") is well formed and within bounds, else why not. */
const char *
spf_record_check(const char *r, size_t n)
{
    bool redirect = false, exp = false;
    const char *e = r + n, *p;

    if (n > SPF_TXT_MAX)
        return "record too long";
    if (!spf_is_record(r, n))
        return "not an SPF record";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)r[i] < 0x20 || (unsigned char)r[i] > 0x7e)
            return "bad character";
    p = r + 6;
    while (p < e) {
        if (*p == ' ') {
            p++;
            continue;
        }
        struct term t = {p, p, 0, 0};
        while (t.e < e && *t.e != ' ')
            t.e++;
        const char *why = one_term(&t, &redirect, &exp);
        if (why != NULL)
            return why;
        if (t.compiled > SPF_TERM_COMPILED)
            return "term too large";
        p = t.e;
    }
    return NULL;
}
