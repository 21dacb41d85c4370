/*
 * authres.c - the Authentication-Results trust boundary (RFC 8601 5),
 * shared by every module that writes or trusts such fields (headers,
 * spf): a received field that bears the gateway's authserv-id (the
 * top-level `authserv_id` setting), or that does not parse, or that bears
 * another version, is removed before anyone reads it. Fields a filter
 * added are never judged.
 */
#include <stdbool.h>
#include <string.h>

#include "filters/authres.h"

/*
 *   authres-payload = [CFWS] authserv-id [ CFWS authres-version ]
 *                     ( no-result / 1*resinfo ) [CFWS]
 *   authserv-id     = value            (RFC 2045: token / quoted-string)
 *   authres-version = 1*DIGIT [CFWS]
 * and both no-result and resinfo start with [CFWS] ";". Values are
 * unfolded, so FWS is blanks here. Only the part before the first ';' is
 * read: it alone says whose field this is. */

#define AR_ID_MAX 256               /* a longer id is nobody's hostname */

/* Skip blanks and comments (nested, with quoted pairs); -1 on a comment
 * left open. */
static int
ar_cfws(const char **pp)
{
    const char *p = *pp;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '(')
            break;
        unsigned depth = 0;
        do {
            if (*p == '\0')
                return -1;
            if (*p == '\\' && p[1] != '\0')
                p++;
            else if (*p == '(')
                depth++;
            else if (*p == ')')
                depth--;
            p++;
        } while (depth > 0);
    }
    *pp = p;
    return 0;
}

static bool
ar_tspecial(unsigned char c)
{
    return c <= ' ' || c == 127 || strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

/* The authserv-id of value v into id (unquoted; "" if longer than
 * AR_ID_MAX - 1) and its version (1 when not given). -1 if the part
 * before the first ';' does not parse. */
static int
ar_parse(const char *v, char id[AR_ID_MAX], unsigned long *version)
{
    const char *p = v;
    size_t n = 0;
    bool toolong = false;

    if (ar_cfws(&p) < 0)
        return -1;
    if (*p == '"') {
        for (p++; *p != '"'; p++) {
            unsigned char c = (unsigned char)*p;
            if (c == '\\')
                c = (unsigned char)*++p;
            if (c == '\0' || (c < ' ' && c != '\t') || c == 127)
                return -1;      /* open quote, or a control character */
            if (n < AR_ID_MAX - 1)
                id[n++] = (char)c;
            else
                toolong = true;
        }
        p++;
    } else {
        for (; !ar_tspecial((unsigned char)*p); p++) {
            if (n < AR_ID_MAX - 1)
                id[n++] = *p;
            else
                toolong = true;
        }
    }
    if (n == 0)
        return -1;              /* no id, or an empty quoted one */
    id[toolong ? 0 : n] = '\0';
    if (ar_cfws(&p) < 0)
        return -1;
    *version = 1;               /* a token takes the digits after it: a
                                   version here follows CFWS or a quote */
    if (*p >= '0' && *p <= '9') {
        *version = 0;
        for (; *p >= '0' && *p <= '9'; p++)
            *version = *version > 1000 ? *version
                                       : *version * 10 + (unsigned)(*p - '0');
        if (ar_cfws(&p) < 0)
            return -1;
    }
    return *p == ';' ? 0 : -1;
}

/* Equal host names, ASCII case-insensitive, one final dot ignored. */
static bool
ar_same_id(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na > 1 && a[na - 1] == '.')
        na--;
    if (nb > 1 && b[nb - 1] == '.')
        nb--;
    return na == nb && pst_strncaseeq(a, b, na);
}

/*
 * ar_ours - could the Authentication-Results value v be taken as ours
 * (authserv-id id)? Yes when its authserv-id is id; also when it does not
 * parse (a lenient reader might still find our id in it) and when it
 * bears a version other than 1 (RFC 8601 section 5: such a field is
 * removed when it comes from outside). *why says which.
 */
static bool
ar_ours(const char *v, const char *id, const char **why)
{
    char got[AR_ID_MAX];
    unsigned long version;

    if (ar_parse(v, got, &version) < 0) {
        *why = "unparsable";
        return true;
    }
    if (version != 1) {
        *why = "version";
        return true;
    }
    *why = "ours";
    return ar_same_id(got, id);
}

/* pst__authres_boundary - see authres.h. */
void
pst__authres_boundary(struct pst_fctx *fc, const char *id)
{
    if (id == NULL || id[0] == '\0')
        return;
    for (long i = pst_hdr_find(fc, "Authentication-Results", 0); i >= 0;
         i = pst_hdr_find(fc, "Authentication-Results", (size_t)i)) {
        const struct pst_hdr *hd = pst_hdr_at(fc, (size_t)i);
        const char *why;
        /* fields a filter added are ours; only received ones are judged */
        if (hd->orig >= 0 && ar_ours(hd->value, id, &why)) {
            pst_fctx_log(fc, PST_LOG_INFO,
                         "event=forged_auth_results_removed why=%s", why);
            pst_hdr_remove(fc, (size_t)i);
            continue;
        }
        i++;
    }
}
