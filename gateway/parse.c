/*
 * parse.c - SMTP command, path and parameter parsing (RFC 5321 4.1,
 * RFC 6531 for UTF-8 addresses, RFC 1870, 3461, 4954, 6152 parameters).
 *
 * Everything here works on one bounded line and allocates nothing.
 */
#include "gateway/parse.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/charset.h"
#include "core/util.h"

static const struct {
    const char *name;
    enum pst_verb verb;
} verbs[] = {
    {"HELO", PST_CMD_HELO}, {"EHLO", PST_CMD_EHLO}, {"MAIL", PST_CMD_MAIL},
    {"RCPT", PST_CMD_RCPT}, {"DATA", PST_CMD_DATA}, {"BDAT", PST_CMD_BDAT},
    {"RSET", PST_CMD_RSET}, {"NOOP", PST_CMD_NOOP}, {"QUIT", PST_CMD_QUIT},
    {"VRFY", PST_CMD_VRFY}, {"EXPN", PST_CMD_EXPN}, {"HELP", PST_CMD_HELP},
    {"STARTTLS", PST_CMD_STARTTLS}, {"AUTH", PST_CMD_AUTH},
};

void
pst_cmd_parse(const char *line, size_t len, struct pst_cmd *cmd)
{
    size_t vl = 0;

    while (vl < len && line[vl] != ' ')
        vl++;
    cmd->verb = PST_CMD_UNKNOWN;
    cmd->arg = line + vl;
    cmd->arg_len = 0;
    for (size_t i = 0; i < PST_ARRAY_LEN(verbs); i++) {
        if (strlen(verbs[i].name) == vl &&
            pst_strncaseeq(line, verbs[i].name, vl)) {
            cmd->verb = verbs[i].verb;
            break;
        }
    }
    if (vl < len) {                 /* skip the separating space */
        cmd->arg = line + vl + 1;
        cmd->arg_len = len - vl - 1;
    }
}

size_t
pst_cmd_line_max(enum pst_verb verb)
{
    switch (verb) {
    case PST_CMD_MAIL:
        return PST_MAIL_LINE_MAX;
    case PST_CMD_RCPT:
        return PST_RCPT_LINE_MAX;
    case PST_CMD_AUTH:              /* RFC 4954 4: initial response */
        return 12288;
    default:
        return PST_CMD_LINE_MAX;
    }
}

static bool
is_blank(char c)
{
    return c == ' ' || c == '\t';
}

enum pst_bdat_form
pst_bdat_parse(const char *a, size_t n, uint64_t *size, bool *last)
{
    size_t i = 0, d;
    uint64_t v = 0;
    bool exact = true;

    *size = 0;
    *last = false;
    while (i < n && is_blank(a[i])) {
        i++;
        exact = false;              /* more than one blank before size */
    }
    for (d = i; d < n && a[d] >= '0' && a[d] <= '9'; d++) {
        unsigned dig = (unsigned)(a[d] - '0');
        if (v > (UINT64_MAX - dig) / 10)
            return PST_BDAT_NO_SIZE;
        v = v * 10 + dig;
    }
    if (d == i || (d < n && !is_blank(a[d])))
        return PST_BDAT_NO_SIZE;
    *size = v;
    if (d == n)
        return exact ? PST_BDAT_OK : PST_BDAT_MALFORMED;
    /* the rest: exactly " LAST" is well formed */
    size_t w = d;
    while (w < n && is_blank(a[w]))
        w++;
    size_t we = w;
    while (we < n && !is_blank(a[we]))
        we++;
    *last = we - w == 4 && pst_strncaseeq(a + w, "LAST", 4);
    if (!*last || w != d + 1 || a[d] != ' ' || we != n)
        exact = false;
    return exact ? PST_BDAT_OK : PST_BDAT_MALFORMED;
}

bool
pst_xtext_valid(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '+') {
            if (i + 2 >= len || !isxdigit((unsigned char)s[i + 1]) ||
                !isxdigit((unsigned char)s[i + 2]) ||
                islower((unsigned char)s[i + 1]) ||
                islower((unsigned char)s[i + 2]))
                return false;
            i += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            return false;
        }
    }
    return true;
}

/* RFC 5322 atext, plus UTF-8 octets (RFC 6531), checked later as UTF-8. */
static bool
is_atext(unsigned char c)
{
    if (c >= 0x80)
        return true;
    if (isalnum(c))
        return true;
    return strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL && c != '\0';
}

static bool
is_ldh(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_' || c >= 0x80;
}

/* Domain = sub-domain *("." sub-domain); labels of 1..63 octets. */
static bool
domain_valid(const char *d, size_t len)
{
    size_t label = 0;
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c == '.') {
            if (label == 0 || d[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!is_ldh(c) || (label == 0 && c == '-'))
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0 && d[len - 1] != '-';
}

static bool
literal_valid(const char *s, size_t len)
{
    char buf[64];
    struct in6_addr a;
    if (len < 2 || s[0] != '[' || s[len - 1] != ']' || len - 2 >= sizeof(buf))
        return false;
    memcpy(buf, s + 1, len - 2);
    buf[len - 2] = '\0';
    if (pst_strncaseeq(buf, "IPv6:", 5))
        return inet_pton(AF_INET6, buf + 5, &a) == 1;
    if (inet_pton(AF_INET, buf, &a) == 1)
        return true;
    /* General-address-literal: Standardized-tag ":" 1*dcontent */
    char *colon = strchr(buf, ':');
    if (colon == NULL || colon == buf || colon[1] == '\0')
        return false;
    for (char *p = buf; p < colon; p++)
        if (!is_ldh((unsigned char)*p) || (unsigned char)*p >= 0x80)
            return false;
    for (char *p = colon + 1; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 33 || c > 126 || c == '[' || c == '\\' || c == ']')
            return false;
    }
    return true;
}

/* Find the '>' closing the path that starts at s[0] == '<'. */
static size_t
path_close(const char *s, size_t len)
{
    bool quoted = false;
    for (size_t i = 1; i < len; i++) {
        if (quoted) {
            if (s[i] == '\\')
                i++;
            else if (s[i] == '"')
                quoted = false;
        } else if (s[i] == '"') {
            quoted = true;
        } else if (s[i] == '>') {
            return i;
        } else if (s[i] == '<') {
            return 0;
        }
    }
    return 0;
}

enum pst_path_err
pst_path_parse(const char *s, size_t len, struct pst_path *p, bool allow_null,
               bool allow_postmaster, size_t *end)
{
    size_t i = 0, close, in_start, in_end, at;

    memset(p, 0, sizeof(*p));
    while (i < len && s[i] == ' ')
        i++;
    if (i >= len || s[i] != '<')
        return PST_PATH_SYNTAX;
    close = path_close(s + i, len - i);
    if (close == 0)
        return PST_PATH_SYNTAX;
    *end = i + close + 1;
    in_start = i + 1;
    in_end = i + close;

    if (in_start == in_end) {
        if (!allow_null)
            return PST_PATH_SYNTAX;
        p->is_null = true;
        return PST_PATH_OK;
    }
    if (close + 1 > PST_PATH_MAX) {
        /* Still say which part is too long when one is. */
        size_t at_pos = in_end;
        while (at_pos > in_start && s[at_pos - 1] != '@')
            at_pos--;
        if (at_pos > in_start && in_end - at_pos > PST_DOMAIN_MAX)
            return PST_PATH_DOMAIN_TOO_LONG;
        if (at_pos > in_start && at_pos - 1 - in_start > PST_LOCAL_MAX &&
            s[in_start] != '@')
            return PST_PATH_LOCAL_TOO_LONG;
        return PST_PATH_TOO_LONG;
    }

    /* A-d-l ":" - a source route, skipped (RFC 5321 4.1.1.3, C). */
    if (s[in_start] == '@') {
        size_t c = in_start;
        while (c < in_end && s[c] != ':')
            c++;
        if (c == in_end)
            return PST_PATH_SYNTAX;
        size_t d = in_start;
        while (d < c) {
            if (s[d] != '@')
                return PST_PATH_SYNTAX;
            size_t e = d + 1;
            while (e < c && s[e] != ',')
                e++;
            if (!domain_valid(s + d + 1, e - d - 1))
                return PST_PATH_SYNTAX;
            d = e + (e < c);
        }
        in_start = c + 1;
    }

    /* Local-part */
    size_t k = in_start;
    if (k < in_end && s[k] == '"') {
        p->quoted_local = true;
        k++;
        for (;;) {
            if (k >= in_end)
                return PST_PATH_SYNTAX;
            unsigned char c = (unsigned char)s[k];
            if (c == '"')
                break;
            if (c == '\\') {
                if (k + 1 >= in_end || (unsigned char)s[k + 1] < 32 ||
                    (unsigned char)s[k + 1] == 127)
                    return PST_PATH_SYNTAX;
                k += 2;
                continue;
            }
            if (c < 32 || c == 127)
                return PST_PATH_SYNTAX;
            k++;
        }
        k++;
    } else {
        size_t atom = 0;
        while (k < in_end && s[k] != '@') {
            unsigned char c = (unsigned char)s[k];
            if (c == '.') {
                if (atom == 0)
                    return PST_PATH_SYNTAX;
                atom = 0;
            } else if (is_atext(c)) {
                atom++;
            } else {
                return PST_PATH_SYNTAX;
            }
            k++;
        }
        if (atom == 0)              /* empty local part or trailing dot */
            return PST_PATH_SYNTAX;
    }
    at = k;
    if (at == in_end) {
        /* no domain: only <postmaster> (RFC 5321 4.1.1.3) */
        if (allow_postmaster && in_end - in_start == 10 &&
            pst_strncaseeq(s + in_start, "postmaster", 10)) {
            memcpy(p->addr, "postmaster", 11);
            p->local_len = 10;
            p->is_postmaster = true;
            return PST_PATH_OK;
        }
        return PST_PATH_SYNTAX;
    }
    if (s[at] != '@')
        return PST_PATH_SYNTAX;
    p->local_len = at - in_start;
    if (p->local_len > PST_LOCAL_MAX)
        return PST_PATH_LOCAL_TOO_LONG;

    /* Domain / address-literal; one trailing dot is tolerated and dropped */
    size_t ds = at + 1, de = in_end;
    if (de - ds > PST_DOMAIN_MAX)
        return PST_PATH_DOMAIN_TOO_LONG;
    if (ds < de && s[ds] == '[') {
        if (!literal_valid(s + ds, de - ds))
            return PST_PATH_SYNTAX;
        p->domain_literal = true;
    } else {
        if (de > ds + 1 && s[de - 1] == '.')
            de--;
        if (!domain_valid(s + ds, de - ds))
            return PST_PATH_SYNTAX;
    }

    size_t n = 0;
    memcpy(p->addr, s + in_start, at - in_start + 1);
    n = at - in_start + 1;
    memcpy(p->addr + n, s + ds, de - ds);
    n += de - ds;
    p->addr[n] = '\0';
    for (size_t j = 0; j < n; j++) {
        if ((unsigned char)p->addr[j] >= 0x80) {
            p->utf8 = true;
            break;
        }
    }
    if (p->utf8 && !pst_utf8_valid(p->addr, n))
        return PST_PATH_BAD_UTF8;
    return PST_PATH_OK;
}

/* Iterate over "KEY[=VALUE]" words separated by spaces. */
struct param {
    const char *key;
    size_t klen;
    const char *val;                /* NULL when no '=' */
    size_t vlen;
};

static int
next_param(const char **sp, const char *end, struct param *pm)
{
    const char *s = *sp;
    while (s < end && *s == ' ')
        s++;
    if (s == end)
        return 0;
    const char *w = s;
    while (s < end && *s != ' ')
        s++;
    *sp = s;
    const char *eq = memchr(w, '=', (size_t)(s - w));
    pm->key = w;
    pm->klen = (size_t)((eq ? eq : s) - w);
    pm->val = eq ? eq + 1 : NULL;
    pm->vlen = eq ? (size_t)(s - eq - 1) : 0;
    if (pm->klen == 0)
        return -1;
    for (size_t i = 0; i < pm->klen; i++)
        if (!isalnum((unsigned char)w[i]) && !(i > 0 && w[i] == '-'))
            return -1;
    /* esmtp-value: %d33-60 / %d62-126, UTF-8 allowed with SMTPUTF8 */
    for (size_t i = 0; i < pm->vlen; i++) {
        unsigned char c = (unsigned char)pm->val[i];
        if (c < 33 || c == '=' || c == 127)
            return -1;
    }
    if (pm->val && pm->vlen == 0)
        return -1;
    return 1;
}

static bool
key_is(const struct param *pm, const char *k)
{
    return strlen(k) == pm->klen && pst_strncaseeq(pm->key, k, pm->klen);
}

static bool
val_is(const struct param *pm, const char *v)
{
    return pm->val && strlen(v) == pm->vlen &&
           pst_strncaseeq(pm->val, v, pm->vlen);
}

static void
set_bad(char *bad, size_t badsz, const struct param *pm)
{
    size_t n = PST_MIN(pm->klen, badsz - 1);
    memcpy(bad, pm->key, n);
    bad[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)bad[i] < 33 || (unsigned char)bad[i] > 126)
            bad[i] = '?';
}

enum pst_param_err
pst_mail_params_parse(const char *s, size_t len, struct pst_mail_params *mp,
                      char *bad, size_t badsz)
{
    const char *end = s + len;
    struct param pm;
    int rc;

    memset(mp, 0, sizeof(*mp));
    bad[0] = '\0';
    while ((rc = next_param(&s, end, &pm)) > 0) {
        if (key_is(&pm, "SIZE")) {
            char num[24];
            char *e;
            if (!pm.val || pm.vlen > 20)
                return PST_PARAM_BAD_VALUE;
            memcpy(num, pm.val, pm.vlen);
            num[pm.vlen] = '\0';
            if (!isdigit((unsigned char)num[0]))
                return PST_PARAM_BAD_VALUE;
            errno = 0;
            unsigned long long v = strtoull(num, &e, 10);
            if (*e != '\0' || errno == ERANGE)
                return PST_PARAM_BAD_VALUE;
            mp->size = v;
        } else if (key_is(&pm, "BODY")) {
            if (val_is(&pm, "7BIT"))
                mp->body = PST_BODY_7BIT;
            else if (val_is(&pm, "8BITMIME"))
                mp->body = PST_BODY_8BITMIME;
            else if (val_is(&pm, "BINARYMIME"))
                mp->body = PST_BODY_BINARYMIME;
            else
                return PST_PARAM_BAD_VALUE;
        } else if (key_is(&pm, "SMTPUTF8")) {
            if (pm.val)
                return PST_PARAM_BAD_VALUE;
            mp->smtputf8 = true;
        } else if (key_is(&pm, "RET")) {
            if (val_is(&pm, "FULL"))
                mp->ret = PST_RET_FULL;
            else if (val_is(&pm, "HDRS"))
                mp->ret = PST_RET_HDRS;
            else
                return PST_PARAM_BAD_VALUE;
        } else if (key_is(&pm, "ENVID")) {
            if (!pm.val || pm.vlen >= sizeof(mp->envid) ||
                !pst_xtext_valid(pm.val, pm.vlen))
                return PST_PARAM_BAD_VALUE;
            memcpy(mp->envid, pm.val, pm.vlen);
            mp->envid[pm.vlen] = '\0';
        } else if (key_is(&pm, "AUTH")) {
            if (!pm.val || pm.vlen >= sizeof(mp->auth))
                return PST_PARAM_BAD_VALUE;
            memcpy(mp->auth, pm.val, pm.vlen);
            mp->auth[pm.vlen] = '\0';
            mp->has_auth = true;
        } else {
            set_bad(bad, badsz, &pm);
            return PST_PARAM_UNKNOWN;
        }
    }
    return rc < 0 ? PST_PARAM_SYNTAX : PST_PARAM_OK;
}

enum pst_param_err
pst_rcpt_params_parse(const char *s, size_t len, struct pst_rcpt_params *rp,
                      char *bad, size_t badsz)
{
    const char *end = s + len;
    struct param pm;
    int rc;

    memset(rp, 0, sizeof(*rp));
    bad[0] = '\0';
    while ((rc = next_param(&s, end, &pm)) > 0) {
        if (key_is(&pm, "NOTIFY")) {
            if (!pm.val)
                return PST_PARAM_BAD_VALUE;
            const char *v = pm.val, *ve = pm.val + pm.vlen;
            while (v < ve) {
                const char *c = memchr(v, ',', (size_t)(ve - v));
                size_t n = (size_t)((c ? c : ve) - v);
                if (n == 5 && pst_strncaseeq(v, "NEVER", 5))
                    rp->notify |= PST_NOTIFY_NEVER;
                else if (n == 7 && pst_strncaseeq(v, "SUCCESS", 7))
                    rp->notify |= PST_NOTIFY_SUCCESS;
                else if (n == 7 && pst_strncaseeq(v, "FAILURE", 7))
                    rp->notify |= PST_NOTIFY_FAILURE;
                else if (n == 5 && pst_strncaseeq(v, "DELAY", 5))
                    rp->notify |= PST_NOTIFY_DELAY;
                else
                    return PST_PARAM_BAD_VALUE;
                v += n + (c != NULL);
            }
            /* NEVER excludes the others (RFC 3461 4.1) */
            if ((rp->notify & PST_NOTIFY_NEVER) &&
                (rp->notify & ~PST_NOTIFY_NEVER))
                return PST_PARAM_BAD_VALUE;
        } else if (key_is(&pm, "ORCPT")) {
            const char *semi =
                pm.val ? memchr(pm.val, ';', pm.vlen) : NULL;
            if (!semi || semi == pm.val || pm.vlen >= sizeof(rp->orcpt))
                return PST_PARAM_BAD_VALUE;
            size_t tl = (size_t)(pm.val + pm.vlen - semi - 1);
            /* utf-8 addr-type (RFC 6533) carries utf-8-addr-xtext */
            bool utf8 = (size_t)(semi - pm.val) == 5 &&
                        pst_strncaseeq(pm.val, "utf-8", 5);
            if (!utf8 && !pst_xtext_valid(semi + 1, tl))
                return PST_PARAM_BAD_VALUE;
            if (utf8 && !pst_utf8_valid(semi + 1, tl))
                return PST_PARAM_BAD_VALUE;
            memcpy(rp->orcpt, pm.val, pm.vlen);
            rp->orcpt[pm.vlen] = '\0';
        } else {
            set_bad(bad, badsz, &pm);
            return PST_PARAM_UNKNOWN;
        }
    }
    return rc < 0 ? PST_PARAM_SYNTAX : PST_PARAM_OK;
}
