/*
 * headers.c - the header-rewriting module ("headers"): ordered rules that
 * add, remove and rewrite header fields, tag the subject, masquerade
 * addresses, and rewrite the envelope; plus the Authentication-Results
 * trust boundary.
 *
 *   { module = "headers";
 *     match_limit = 1000000;           # PCRE2 limits for every match
 *     depth_limit = 10000;
 *     rules = (
 *       { add = "X-Scanned"; value = "postern"; top = true; },
 *       { remove = "^X-Spam-"; },                   # regex on the name
 *       { rewrite = "Subject"; match = "^\\[ext\\] *(.*)$";
 *         replace = "$1"; global = false; },
 *       { tag_subject = "[EXTERNAL]"; },
 *       { masquerade = [ "corp.example" ]; as = "example.com";
 *         headers = [ "From", "To", "Cc", "Reply-To" ]; },
 *       { sender = "^(.*)@corp\\.example$"; replace = "$1@example.com"; },
 *       { recipient = "^postmaster@(.*)$"; replace = "admin@$1"; },
 *     );
 *   }
 * Any header rule may carry a condition: if_header = "Name" (the field
 * exists) and optionally if_match = "regex" (some field of that name
 * matches). Conditions see the view as edited so far, by earlier rules and
 * by earlier filters in the chain.
 *
 * Regexes compile once at load (JIT where available); every match runs
 * with the match and depth limits and a JIT stack of at most
 * JIT_STACK_MAX. A match error (a limit reached) is a filter failure: the
 * module's failure mode applies. A substitution that yields CR, LF or NUL
 * is refused the same way: postern never writes a header a rule could
 * split. Header values are matched as they are written (unfolded, not
 * decoded); edited fields are re-folded and, for text fields, RFC 2047
 * encoded unless the message is SMTPUTF8 (edit.c).
 *
 * Masquerading parses each address field with the RFC 5322 parser
 * (addrlist.c) and replaces only the domain of matching mailboxes; a
 * field that does not parse is left alone (logged).
 *
 * Threads: hooks run on the loop thread only, so one match data block per
 * regex is enough.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/tbuf.h"
#include "filters/addrlist.h"
#include "filters/authres.h"
#include "filters/filter.h"

#define JIT_STACK_MIN (32 * 1024)
#define JIT_STACK_MAX (512 * 1024)
#define SUBST_MAX PST_HDR_EDIT_MAX
#define RULES_MAX 256

enum rkind {
    R_ADD,
    R_REMOVE,
    R_REWRITE,
    R_TAG,
    R_MASQ,
    R_SENDER,
    R_RCPT,
};

struct rx {
    pcre2_code *code;
    pcre2_match_data *md;
};

struct rule {
    enum rkind kind;
    int line;
    char *name;                     /* add, rewrite: field name */
    char *value;                    /* add value, tag text, replace text */
    bool top, global;
    struct rx re;                   /* remove, rewrite, sender, recipient */
    char **domains;                 /* masquerade */
    size_t ndomains;
    char *as;
    char **fields;                  /* masquerade: field names */
    size_t nfields;
    char *if_header;
    struct rx if_re;                /* optional */
};

struct hconf {
    char *authserv_id;
    struct rule *rules;
    size_t nrules;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
};

/* ---- config ---- */

static int
compile(struct hconf *h, struct rx *r, const char *pat, bool caseless,
        const config_setting_t *s, const char *file, struct pst_err *err)
{
    int ec;
    PCRE2_SIZE eo;
    r->code = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                            caseless ? PCRE2_CASELESS : 0, &ec, &eo, NULL);
    if (r->code == NULL) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        pst_fconf_error(err, file, s,
                        "filter headers: regex \"%s\" does not compile at "
                        "offset %zu: %s", pat, (size_t)eo, (char *)msg);
        return -1;
    }
    pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE); /* else interpreted */
    r->md = pcre2_match_data_create_from_pattern(r->code, NULL);
    (void)h;
    return 0;
}

static void
rx_free(struct rx *r)
{
    if (r->md)
        pcre2_match_data_free(r->md);
    if (r->code)
        pcre2_code_free(r->code);
}

static void
strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void
hconf_free(void *p)
{
    struct hconf *h = p;
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->nrules; i++) {
        struct rule *r = &h->rules[i];
        free(r->name);
        free(r->value);
        rx_free(&r->re);
        strv_free(r->domains, r->ndomains);
        free(r->as);
        strv_free(r->fields, r->nfields);
        free(r->if_header);
        rx_free(&r->if_re);
    }
    free(h->rules);
    free(h->authserv_id);
    if (h->mctx)
        pcre2_match_context_free(h->mctx);
    if (h->jstack)
        pcre2_jit_stack_free(h->jstack);
    free(h);
}

static const char *
get_str(const config_setting_t *r, const char *k, const char *file,
        struct pst_err *err, bool *bad)
{
    const config_setting_t *m = config_setting_get_member(r, k);
    if (m == NULL)
        return NULL;
    const char *v = config_setting_get_string(m);
    if (v == NULL) {
        pst_fconf_error(err, file, m, "filter headers: '%s' must be a string",
                        k);
        *bad = true;
        return NULL;
    }
    for (const char *c = v; *c; c++) {
        if (*c == '\r' || *c == '\n') {
            pst_fconf_error(err, file, m,
                            "filter headers: '%s' contains CR or LF", k);
            *bad = true;
            return NULL;
        }
    }
    return v;
}

/* a string or a list of strings */
static int
get_strv(const config_setting_t *m, const char *file, struct pst_err *err,
         char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (config_setting_type(m) == CONFIG_TYPE_STRING) {
        *out = pst_xcalloc(1, sizeof(char *));
        (*out)[0] = pst_xstrdup(config_setting_get_string(m));
        *n = 1;
        return 0;
    }
    if (!config_setting_is_array(m) && !config_setting_is_list(m))
        goto bad;
    int len = config_setting_length(m);
    if (len == 0)
        goto bad;
    *out = pst_xcalloc((size_t)len, sizeof(char *));
    for (int i = 0; i < len; i++) {
        const char *v =
            config_setting_get_string_elem(m, (unsigned)i);
        if (v == NULL || v[0] == '\0')
            goto bad;
        (*out)[(*n)++] = pst_xstrdup(v);
    }
    return 0;
bad:
    pst_fconf_error(err, file, m,
                    "filter headers: '%s' must be a string or a list of "
                    "non-empty strings", config_setting_name(m));
    return -1;
}

static int
parse_rule(struct hconf *h, struct rule *r, const config_setting_t *s,
           const char *file, struct pst_err *err)
{
    static const char *const keys[] = {
        "add", "value", "top", "remove", "rewrite", "match", "replace",
        "global", "tag_subject", "masquerade", "as", "headers", "sender",
        "recipient", "if_header", "if_match", NULL};
    static const char *const actions[] = {"add", "remove", "rewrite",
                                          "tag_subject", "masquerade",
                                          "sender", "recipient", NULL};
    bool bad = false;
    int nact = 0, act = -1;
    const char *v;

    r->line = (int)config_setting_source_line(s);
    if (!config_setting_is_group(s)) {
        pst_fconf_error(err, file, s, "filter headers: a rule is a group");
        return -1;
    }
    for (unsigned i = 0; i < (unsigned)config_setting_length(s); i++) {
        const config_setting_t *m = config_setting_get_elem(s, i);
        const char *k = config_setting_name(m);
        bool known = false;
        for (int j = 0; keys[j]; j++)
            known |= strcmp(keys[j], k) == 0;
        if (!known) {
            pst_fconf_error(err, file, m,
                            "filter headers: unknown rule key '%s'", k);
            bad = true;
        }
    }
    for (int j = 0; actions[j]; j++) {
        if (config_setting_get_member(s, actions[j])) {
            nact++;
            act = j;
        }
    }
    if (nact != 1) {
        pst_fconf_error(err, file, s,
                        "filter headers: a rule needs exactly one of add, "
                        "remove, rewrite, tag_subject, masquerade, sender, "
                        "recipient");
        return -1;
    }
    r->kind = (enum rkind)act;
    int b;
    if (config_setting_lookup_bool(s, "top", &b))
        r->top = b;
    if (config_setting_lookup_bool(s, "global", &b))
        r->global = b;
    switch (r->kind) {
    case R_ADD:
        v = get_str(s, "add", file, err, &bad);
        if (v && !pst_hdr_name_valid(v)) {
            pst_fconf_error(err, file, config_setting_get_member(s, "add"),
                            "filter headers: bad field name \"%s\"", v);
            bad = true;
        }
        r->name = v ? pst_xstrdup(v) : NULL;
        v = get_str(s, "value", file, err, &bad);
        if (v == NULL && !bad) {
            pst_fconf_error(err, file, s, "filter headers: add needs value");
            bad = true;
        }
        r->value = v ? pst_xstrdup(v) : NULL;
        break;
    case R_REMOVE:
        v = get_str(s, "remove", file, err, &bad);
        if (v && compile(h, &r->re, v, true,
                         config_setting_get_member(s, "remove"), file,
                         err) < 0)
            bad = true;
        break;
    case R_REWRITE:
    case R_SENDER:
    case R_RCPT: {
        const char *mk = r->kind == R_REWRITE ? "match"
                         : r->kind == R_SENDER ? "sender"
                                               : "recipient";
        if (r->kind == R_REWRITE) {
            v = get_str(s, "rewrite", file, err, &bad);
            if (v && !pst_hdr_name_valid(v)) {
                pst_fconf_error(err, file,
                                config_setting_get_member(s, "rewrite"),
                                "filter headers: bad field name \"%s\"", v);
                bad = true;
            }
            r->name = v ? pst_xstrdup(v) : NULL;
        }
        v = get_str(s, mk, file, err, &bad);
        if (v == NULL && !bad) {
            pst_fconf_error(err, file, s, "filter headers: %s needs '%s'",
                            actions[act], mk);
            bad = true;
        }
        if (v && compile(h, &r->re, v, false,
                         config_setting_get_member(s, mk), file, err) < 0)
            bad = true;
        v = get_str(s, "replace", file, err, &bad);
        if (v == NULL && !bad) {
            pst_fconf_error(err, file, s,
                            "filter headers: %s needs 'replace'",
                            actions[act]);
            bad = true;
        }
        r->value = v ? pst_xstrdup(v) : NULL;
        break;
    }
    case R_TAG:
        v = get_str(s, "tag_subject", file, err, &bad);
        if (v && v[0] == '\0') {
            pst_fconf_error(err, file, s, "filter headers: empty tag");
            bad = true;
        }
        r->value = v ? pst_xstrdup(v) : NULL;
        break;
    case R_MASQ: {
        const config_setting_t *m = config_setting_get_member(s, "headers");
        if (get_strv(config_setting_get_member(s, "masquerade"), file, err,
                     &r->domains, &r->ndomains) < 0)
            bad = true;
        v = get_str(s, "as", file, err, &bad);
        if (v == NULL && !bad) {
            pst_fconf_error(err, file, s,
                            "filter headers: masquerade needs 'as'");
            bad = true;
        }
        r->as = v ? pst_xstrdup(v) : NULL;
        if (m) {
            if (get_strv(m, file, err, &r->fields, &r->nfields) < 0)
                bad = true;
        } else {
            static const char *const def[] = {"From", "To", "Cc",
                                              "Reply-To"};
            r->nfields = 4;
            r->fields = pst_xcalloc(4, sizeof(char *));
            for (int i = 0; i < 4; i++)
                r->fields[i] = pst_xstrdup(def[i]);
        }
        break;
    }
    }
    v = get_str(s, "if_header", file, err, &bad);
    if (v)
        r->if_header = pst_xstrdup(v);
    v = get_str(s, "if_match", file, err, &bad);
    if (v) {
        if (r->if_header == NULL) {
            pst_fconf_error(err, file, s,
                            "filter headers: if_match needs if_header");
            bad = true;
        } else if (compile(h, &r->if_re, v, false,
                           config_setting_get_member(s, "if_match"), file,
                           err) < 0) {
            bad = true;
        }
    }
    if (r->if_header && (r->kind == R_SENDER || r->kind == R_RCPT)) {
        pst_fconf_error(err, file, s,
                        "filter headers: envelope rules run before the "
                        "header exists and take no if_header");
        bad = true;
    }
    return bad ? -1 : 0;
}

static int
get_limit(const config_setting_t *s, const char *k, unsigned def,
          unsigned max, const char *file, struct pst_err *err,
          unsigned *out)
{
    const config_setting_t *m = config_setting_get_member(s, k);
    *out = def;
    if (m == NULL)
        return 0;
    if (config_setting_type(m) != CONFIG_TYPE_INT ||
        config_setting_get_int(m) < 1 ||
        (unsigned)config_setting_get_int(m) > max) {
        pst_fconf_error(err, file, m,
                        "filter headers: %s must be an integer 1..%u", k,
                        max);
        return -1;
    }
    *out = (unsigned)config_setting_get_int(m);
    return 0;
}

static int
headers_configure(const config_setting_t *s, const char *file,
                  const struct pst_fhost *host, void **out,
                  struct pst_err *err)
{
    /* authserv_id is refused below with its own message */
    static const char *const keys[] = {"rules", "match_limit", "depth_limit",
                                       "authserv_id", NULL};
    struct hconf *h = pst_xcalloc(1, sizeof(*h));
    const config_setting_t *rules = config_setting_get_member(s, "rules");
    bool bad = pst_fconf_check_keys(s, file, keys, err) > 0;
    unsigned ml = 0, dl = 0;

    if (get_limit(s, "match_limit", 1000000, 100000000, file, err, &ml) < 0 ||
        get_limit(s, "depth_limit", 10000, 1000000, file, err, &dl) < 0)
        bad = true;
    h->mctx = pcre2_match_context_create(NULL);
    pcre2_set_match_limit(h->mctx, ml);
    pcre2_set_depth_limit(h->mctx, dl);
    h->jstack = pcre2_jit_stack_create(JIT_STACK_MIN, JIT_STACK_MAX, NULL);
    if (h->jstack)
        pcre2_jit_stack_assign(h->mctx, NULL, h->jstack);
    /* one authserv-id for every module: the top-level setting */
    if (config_setting_get_member(s, "authserv_id") != NULL) {
        pst_fconf_error(err, file, config_setting_get_member(s, "authserv_id"),
                        "filter headers: authserv_id is a top-level setting "
                        "(shared with spf): move it out of the filter");
        bad = true;
    }
    if (host != NULL && host->authserv_id != NULL)
        h->authserv_id = pst_xstrdup(host->authserv_id);
    if (rules != NULL) {
        int n = config_setting_length(rules);
        if (!config_setting_is_list(rules) || n > RULES_MAX) {
            pst_fconf_error(err, file, rules,
                            "filter headers: rules must be a list of at most "
                            "%d groups", RULES_MAX);
            bad = true;
            n = 0;
        }
        h->rules = pst_xcalloc((size_t)(n ? n : 1), sizeof(*h->rules));
        for (int i = 0; i < n; i++) {
            if (parse_rule(h, &h->rules[h->nrules++],
                           config_setting_get_elem(rules, (unsigned)i), file,
                           err) < 0)
                bad = true;
        }
    }
    if (bad) {
        hconf_free(h);
        return -1;
    }
    *out = h;
    return 0;
}

/* ---- matching ---- */

/* 1 match, 0 none, -1 error (limit) after failing fc */
static int
rx_match(struct pst_fctx *fc, struct hconf *h, struct rx *r, const char *s)
{
    int rc = pcre2_match(r->code, (PCRE2_SPTR)s, strlen(s), 0, 0, r->md,
                         h->mctx);
    if (rc >= 0)
        return 1;
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    PCRE2_UCHAR msg[120];
    char why[160];
    pcre2_get_error_message(rc, msg, sizeof(msg));
    snprintf(why, sizeof(why), "regex match error: %s", (char *)msg);
    pst_fctx_fail(fc, why);
    return -1;
}

/* The substitution of r on s into a new string; NULL with fc failed. */
static char *
rx_subst(struct pst_fctx *fc, struct hconf *h, struct rule *r, const char *s,
         bool *matched)
{
    PCRE2_SIZE olen = SUBST_MAX + 1;
    PCRE2_UCHAR *o = pst_xmalloc(olen);
    uint32_t opts = PCRE2_SUBSTITUTE_OVERFLOW_LENGTH |
                    (r->global ? PCRE2_SUBSTITUTE_GLOBAL : 0);
    int rc = pcre2_substitute(r->re.code, (PCRE2_SPTR)s, strlen(s), 0, opts,
                              r->re.md, h->mctx, (PCRE2_SPTR)r->value,
                              PCRE2_ZERO_TERMINATED, o, &olen);
    char why[160];
    *matched = rc > 0;
    if (rc == 0) {
        free(o);
        return NULL;
    }
    if (rc < 0) {
        PCRE2_UCHAR msg[120];
        pcre2_get_error_message(rc, msg, sizeof(msg));
        snprintf(why, sizeof(why), "regex substitution error: %s",
                 rc == PCRE2_ERROR_NOMEMORY ? "result too long"
                                            : (char *)msg);
        pst_fctx_fail(fc, why);
        free(o);
        return NULL;
    }
    for (PCRE2_SIZE i = 0; i < olen; i++) {
        if (o[i] == '\r' || o[i] == '\n' || o[i] == '\0') {
            pst_fctx_fail(fc, "substitution would produce CR, LF or NUL");
            free(o);
            *matched = false;
            return NULL;
        }
    }
    o[olen] = '\0';
    return (char *)o;
}

/* condition: 1 holds, 0 not, -1 error */
static int
cond(struct pst_fctx *fc, struct hconf *h, struct rule *r)
{
    if (r->if_header == NULL)
        return 1;
    for (long i = pst_hdr_find(fc, r->if_header, 0); i >= 0;
         i = pst_hdr_find(fc, r->if_header, (size_t)i + 1)) {
        if (r->if_re.code == NULL)
            return 1;
        int m = rx_match(fc, h, &r->if_re, pst_hdr_at(fc, (size_t)i)->value);
        if (m != 0)
            return m;
    }
    return 0;
}

/* ---- rules ---- */

static bool
domain_matches(const char *d, size_t n, const struct rule *r)
{
    for (size_t k = 0; k < r->ndomains; k++) {
        const char *m = r->domains[k];
        size_t ml = strlen(m);
        if (n == ml && pst_strncaseeq(d, m, n))
            return true;
        if (n > ml + 1 && d[n - ml - 1] == '.' &&
            pst_strncaseeq(d + n - ml, m, ml))
            return true;
    }
    return false;
}

static int
masquerade_one(struct pst_fctx *fc, struct rule *r, size_t idx)
{
    const struct pst_hdr *hd = pst_hdr_at(fc, idx);
    const char *v = hd->value;
    struct pst_addrlist al;
    size_t ep, n = strlen(v);
    int rc = pst_addrlist_parse(v, n, &al, &ep);
    if (rc < 0) {
        pst_fctx_log(fc, PST_LOG_INFO,
                     "event=masquerade_skip field=%s why=unparsable pos=%zu",
                     hd->name, ep);
        pst_addrlist_free(&al);
        return 0;
    }
    struct pst_tbuf o = {0};
    size_t pos = 0;
    bool changed = false;
    for (size_t i = 0; i < al.n; i++) {
        const struct pst_addr *a = &al.v[i];
        if (a->domain_len == 0 || !domain_matches(v + a->domain_off,
                                                  a->domain_len, r))
            continue;
        pst_tbuf_add(&o, v + pos, a->domain_off - pos);
        pst_tbuf_add(&o, r->as, strlen(r->as));
        pos = a->domain_off + a->domain_len;
        changed = true;
    }
    pst_addrlist_free(&al);
    if (!changed) {
        pst_tbuf_free(&o);
        return 0;
    }
    pst_tbuf_add(&o, v + pos, n - pos);
    rc = pst_hdr_replace_raw(fc, idx, pst_tbuf_cstr(&o));
    pst_tbuf_free(&o);
    if (rc < 0)
        pst_fctx_fail(fc, "masqueraded field too long");
    return rc;
}

static int
apply_rule(struct pst_fctx *fc, struct hconf *h, struct rule *r)
{
    int c = cond(fc, h, r);
    if (c <= 0)
        return c;
    switch (r->kind) {
    case R_ADD:
        if (pst_hdr_add(fc, r->name, r->value, r->top) < 0) {
            pst_fctx_fail(fc, "cannot add field");
            return -1;
        }
        return 0;
    case R_REMOVE:
        for (size_t i = 0; i < pst_hdr_count(fc);) {
            int m = rx_match(fc, h, &r->re, pst_hdr_at(fc, i)->name);
            if (m < 0)
                return -1;
            if (m == 1) {
                pst_hdr_remove(fc, i);
                continue;
            }
            i++;
        }
        return 0;
    case R_REWRITE:
        for (long i = pst_hdr_find(fc, r->name, 0); i >= 0;
             i = pst_hdr_find(fc, r->name, (size_t)i + 1)) {
            bool matched;
            char *nv = rx_subst(fc, h, r, pst_hdr_at(fc, (size_t)i)->value,
                                &matched);
            if (nv == NULL && matched)
                return -1;
            if (nv == NULL) {
                continue;           /* no match, or failed */
            }
            int rc = pst_hdr_replace(fc, (size_t)i, nv);
            free(nv);
            if (rc < 0) {
                pst_fctx_fail(fc, "rewritten field refused");
                return -1;
            }
        }
        return 0;
    case R_TAG: {
        long i = pst_hdr_find(fc, "Subject", 0);
        size_t tl = strlen(r->value);
        if (i < 0)
            return pst_hdr_add(fc, "Subject", r->value, false) < 0 ? -1 : 0;
        const char *old = pst_hdr_at(fc, (size_t)i)->value;
        if (strncmp(old, r->value, tl) == 0)
            return 0;               /* tagged already */
        /* the old value stays as written (it may hold encoded words);
         * only the tag is encoded if it needs to be */
        char *tag = pst_hdr_encode(fc, r->value);
        if (tag == NULL) {
            pst_fctx_fail(fc, "cannot encode tag");
            return -1;
        }
        char *nv = pst_xasprintf("%s %s", tag, old);
        int rc = pst_hdr_replace_raw(fc, (size_t)i, nv);
        free(tag);
        free(nv);
        if (rc < 0) {
            pst_fctx_fail(fc, "tagged subject refused");
            return -1;
        }
        return 0;
    }
    case R_MASQ:
        for (size_t f = 0; f < r->nfields; f++)
            for (long i = pst_hdr_find(fc, r->fields[f], 0); i >= 0;
                 i = pst_hdr_find(fc, r->fields[f], (size_t)i + 1))
                if (masquerade_one(fc, r, (size_t)i) < 0)
                    return -1;
        return 0;
    default:
        return 0;
    }
}

static enum pst_verdict
headers_on_headers(struct pst_fctx *fc)
{
    struct hconf *h = pst_fctx_conf(fc);
    pst__authres_boundary(fc, h->authserv_id);
    for (size_t i = 0; i < h->nrules; i++) {
        struct rule *r = &h->rules[i];
        if (r->kind == R_SENDER || r->kind == R_RCPT)
            continue;
        if (apply_rule(fc, h, r) < 0)
            return PST_TEMPFAIL;    /* pst_fctx_fail: failure mode */
    }
    return PST_CONTINUE;
}

static enum pst_verdict
envelope_rules(struct pst_fctx *fc, enum rkind kind, const char *addr)
{
    struct hconf *h = pst_fctx_conf(fc);
    char *cur = pst_xstrdup(addr);
    for (size_t i = 0; i < h->nrules; i++) {
        struct rule *r = &h->rules[i];
        bool matched;
        if (r->kind != kind)
            continue;
        char *nv = rx_subst(fc, h, r, cur, &matched);
        if (nv == NULL) {
            if (matched) {
                free(cur);
                return PST_TEMPFAIL;
            }
            continue;
        }
        free(cur);
        cur = nv;
    }
    int rc = 0;
    if (strcmp(cur, addr) != 0) {
        rc = kind == R_SENDER ? pst_env_set_sender(fc, cur)
                              : pst_env_set_rcpt(fc, cur);
        if (rc < 0)
            pst_fctx_fail(fc, "rewritten address is not valid");
        else
            pst_fctx_log(fc, PST_LOG_INFO, "event=envelope_rewrite kind=%s",
                         kind == R_SENDER ? "sender" : "recipient");
    }
    free(cur);
    return rc < 0 ? PST_TEMPFAIL : PST_CONTINUE;
}

static enum pst_verdict
headers_on_mail(struct pst_fctx *fc, const char *sender)
{
    if (sender[0] == '\0')
        return PST_CONTINUE;        /* the null sender stays null */
    return envelope_rules(fc, R_SENDER, sender);
}

static enum pst_verdict
headers_on_rcpt(struct pst_fctx *fc, const char *rcpt)
{
    return envelope_rules(fc, R_RCPT, rcpt);
}

const struct pst_filter pst_filter_headers = {
    .name = "headers",
    PST_FILTER_ABI,
    .configure = headers_configure,
    .unconfigure = hconf_free,
    .on_mail = headers_on_mail,
    .on_rcpt = headers_on_rcpt,
    .on_headers = headers_on_headers,
};
