/*
 * attachments.c - the attachment policy module ("attachments"): rules on
 * file names, declared and detected types, sizes and archive contents,
 * with the actions strip, reject and quarantine (docs/FILTERS.md has the
 * reference and a complete policy).
 *
 *   { module = "attachments";
 *     detect_bytes = 16384;  uuencode = true;  scan_time = 20;
 *     signed = "strip";      encrypted = "pass";
 *     helper = "/usr/lib/postern/postern-archive";  # default: beside postern
 *     archives = { formats = ["zip", "7z", "rar", "tar", "gzip", "bzip2",
 *                             "xz"];
 *                  depth = 3; max_members = 10000; max_bytes = 104857600;
 *                  max_ratio = 100; nested_max = 16777216;
 *                  memory = 268435456;
 *                  on_limit = "reject"; on_error = "reject";
 *                  on_encrypted = "reject"; };
 *     rules = (
 *       { name = "exe"; extensions = ["exe", "scr", "js"]; action = "strip"; },
 *       { name = "pe"; detected = ["application/x-dosexec"];
 *         action = "reject"; },
 *     );
 *   }
 *
 * Flow. While the text streams, on_body (loop thread) notes which parts
 * begin with binary octets and the uuencoded names in text parts, so
 * parts that are text (bodies, .txt, .csv, .html files) are judged
 * without a job. on_message walks the
 * MIME tree and copies what the
 * rules need about each leaf into a job: its names from every
 * Content-Type and Content-Disposition field, its declared type, decoded
 * size and where its body is. If some leaf's content must be read
 * (libmagic, uuencode, archives), the job goes to the filter worker pool
 * with a reference on the stored text (filter.h CONTENT) and the verdict
 * is pending; else it is judged at once. done (loop thread) applies the
 * outcome: one refusal (554 5.7.1, or 552 5.3.4 for a size rule), or the
 * message held (quarantine), or each condemned part replaced by a notice
 * (pst_part_remove: everything else byte-identical), and one
 * X-Postern-Attachments field on every message the module changed.
 * Each action is logged with the queue id (pst_fctx_log) and counted.
 *
 * The deadline and failure mode are the chain entry's (filter.h): a job
 * that takes too long is answered by the failure mode (451 by default),
 * and on_abort tells the job to stop; the module's own scan_time bounds
 * the job even without a chain deadline. A scan that fails (unreadable
 * text, libmagic without its database) fails the module, never passes
 * the message silently.
 *
 * Memory: the conf is shared and reference counted (a job may outlive
 * its session and its config generation); the job owns its copies.
 */
#include "filters/attach.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/tbuf.h"

#define RULES_MAX 256
#define HDR_NAME "X-Postern-Attachments"
#define HDR_MAX 4000                /* octets of the summary value */

struct aconf {
    struct att_conf c;              /* first: the scanner's view */
    atomic_uint refs;
};

/*
 * Per message, in host memory (zeroed at MAIL, freed by the host: so it
 * owns nothing). What on_body saw while the text streamed, so a message
 * of plain text needs no job: which parts were streamed, which began
 * with binary octets, and the uuencoded names of text parts.
 */
#define SEEN_MAX 8192               /* parts (by id) observed */
#define UU_KEEP 8                   /* uuencoded names kept */
#define UU_LINE 1100

struct amsg {
    struct ajob *job;               /* pending, for on_abort */
    bool have_cur, cur_text, over;
    unsigned cur;                   /* id of the part streaming */
    uint32_t cur_bytes;             /* its octets checked for binary */
    size_t ln;
    char line[UU_LINE];             /* its current line */
    uint8_t seen[SEEN_MAX / 8], binary[SEEN_MAX / 8], uu_over[SEEN_MAX / 8];
    unsigned nuu;
    struct {
        unsigned part;
        char name[256];
    } uu[UU_KEEP];
};

#define BIT_SET(a, i) ((a)[(i) / 8] |= (uint8_t)(1u << ((i) % 8)))
#define BIT_GET(a, i) (((a)[(i) / 8] >> ((i) % 8)) & 1u)

struct ajob {
    struct pst_fref ref;
    struct aconf *ac;               /* a reference */
    struct pst_textsrc *t;
    atomic_bool cancel;
    struct att_item *items;
    unsigned n;
    /* loop thread only, valid while the session's message lives */
    const struct pst_mime_part **parts;
    bool *signed_below;
    int rc;
    char err[160];
};

/* ---- config ---- */

static void
strv_free(struct att_strv *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->v[i]);
    free(v->v);
    v->v = NULL;
    v->n = 0;
}

static void
aconf_unref(struct aconf *ac)
{
    if (ac == NULL ||
        atomic_fetch_sub_explicit(&ac->refs, 1, memory_order_acq_rel) != 1)
        return;
    struct att_conf *c = &ac->c;
    for (size_t i = 0; i < c->nrules; i++) {
        struct att_rule *r = &c->rules[i];
        free(r->label);
        strv_free(&r->exts);
        strv_free(&r->globs);
        strv_free(&r->declared);
        strv_free(&r->detected);
        if (r->re)
            pcre2_code_free(r->re);
    }
    free(c->rules);
    if (c->mctx)
        pcre2_match_context_free(c->mctx);
    free(c->text);
    free(c->helper_path);
    if (c->exe_fd >= 0)
        close(c->exe_fd);
    free(ac);
}

static void
att_unconfigure(void *p)
{
    aconf_unref(p);
}

static const char *
str_of(const config_setting_t *m, const char *file, struct pst_err *err,
       bool *bad)
{
    const char *v = config_setting_get_string(m);
    if (v == NULL) {
        pst_fconf_error(err, file, m, "filter attachments: '%s' must be a "
                        "string", config_setting_name(m));
        *bad = true;
    }
    return v;
}

/* A string or a list of non-empty strings, lowercased; ext drops a
 * leading dot. */
static int
get_list(const config_setting_t *m, const char *file, struct pst_err *err,
         bool ext, struct att_strv *out)
{
    int n = 1;
    bool one = config_setting_type(m) == CONFIG_TYPE_STRING;
    if (!one) {
        if (!config_setting_is_array(m) && !config_setting_is_list(m))
            goto bad;
        n = config_setting_length(m);
        if (n == 0)
            goto bad;
    }
    out->v = pst_xcalloc((size_t)n, sizeof(char *));
    for (int i = 0; i < n; i++) {
        const char *v = one ? config_setting_get_string(m)
                            : config_setting_get_string_elem(m, (unsigned)i);
        if (v == NULL || v[0] == '\0')
            goto bad;
        if (ext && v[0] == '.')
            v++;
        char *d = pst_xstrdup(v);
        for (char *p = d; *p; p++)
            *p = (char)pst_tolower((unsigned char)*p);
        out->v[out->n++] = d;
    }
    return 0;
bad:
    pst_fconf_error(err, file, m,
                    "filter attachments: '%s' must be a string or a list of "
                    "non-empty strings", config_setting_name(m));
    return -1;
}

static int
get_action(const config_setting_t *m, const char *file, struct pst_err *err,
           const char *const *names, const enum att_action *vals,
           enum att_action *out)
{
    bool bad = false;
    const char *v = str_of(m, file, err, &bad);
    if (v == NULL)
        return -1;
    for (int i = 0; names[i]; i++) {
        if (strcmp(names[i], v) == 0) {
            *out = vals[i];
            return 0;
        }
    }
    struct pst_tbuf t;
    pst_tbuf_init(&t);
    for (int i = 0; names[i]; i++)
        pst_tbuf_printf(&t, "%s\"%s\"", i ? ", " : "", names[i]);
    pst_fconf_error(err, file, m,
                    "filter attachments: unknown %s \"%s\" (one of %s)",
                    config_setting_name(m), v, pst_tbuf_cstr(&t));
    pst_tbuf_free(&t);
    return -1;
}

static const char *const act_names[] = {"strip", "reject", "quarantine",
                                        "allow", NULL};
static const enum att_action act_vals[] = {ATT_STRIP, ATT_REJECT,
                                           ATT_QUARANTINE, ATT_PASS};
static const char *const setting_names[] = {"reject", "quarantine", "strip",
                                            "pass", NULL};
static const enum att_action setting_vals[] = {ATT_REJECT, ATT_QUARANTINE,
                                               ATT_STRIP, ATT_PASS};

static bool
check_keys(const config_setting_t *s, const char *file, struct pst_err *err,
           const char *const *keys, const char *what)
{
    bool bad = false;
    for (unsigned i = 0; i < (unsigned)config_setting_length(s); i++) {
        const config_setting_t *m = config_setting_get_elem(s, i);
        const char *k = config_setting_name(m);
        bool known = false;
        for (int j = 0; keys[j]; j++)
            known |= strcmp(keys[j], k) == 0;
        if (!known) {
            pst_fconf_error(err, file, m,
                            "filter attachments: unknown %s key '%s'", what,
                            k);
            bad = true;
        }
    }
    return bad;
}

static int
get_bool(const config_setting_t *s, const char *k, const char *file,
         struct pst_err *err, bool *out)
{
    const config_setting_t *m = config_setting_get_member(s, k);
    if (m == NULL)
        return 0;
    if (config_setting_type(m) != CONFIG_TYPE_BOOL) {
        pst_fconf_error(err, file, m, "filter attachments: '%s' must be "
                        "true or false", k);
        return -1;
    }
    *out = config_setting_get_bool(m);
    return 0;
}

static int
get_num(const config_setting_t *s, const char *k, uint64_t min, uint64_t max,
        const char *file, struct pst_err *err, uint64_t *out)
{
    const config_setting_t *m = config_setting_get_member(s, k);
    if (m == NULL)
        return 0;
    int t = config_setting_type(m);
    long long v = t == CONFIG_TYPE_INT     ? config_setting_get_int(m)
                  : t == CONFIG_TYPE_INT64 ? config_setting_get_int64(m)
                                           : -1;
    if ((t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) || v < 0 ||
        (uint64_t)v < min || (uint64_t)v > max) {
        pst_fconf_error(err, file, m,
                        "filter attachments: '%s' must be an integer "
                        "%" PRIu64 "..%" PRIu64, k, min, max);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

static int
parse_rule(struct att_conf *c, struct att_rule *r, const config_setting_t *s,
           const char *file, struct pst_err *err)
{
    static const char *const keys[] = {
        "name", "action", "where", "extensions", "glob", "regex",
        "declared", "detected", "mismatch", "larger_than", "unnamed",
        "signed", NULL};
    bool bad = false;
    const config_setting_t *m;

    r->line = (int)config_setting_source_line(s);
    r->mismatch = -1;
    r->signed_action = -1;
    if (!config_setting_is_group(s)) {
        pst_fconf_error(err, file, s,
                        "filter attachments: a rule is a group");
        return -1;
    }
    bad |= check_keys(s, file, err, keys, "rule");
    if ((m = config_setting_get_member(s, "name")) != NULL) {
        const char *v = str_of(m, file, err, &bad);
        if (v && (v[0] == '\0' || strlen(v) > 64)) {
            pst_fconf_error(err, file, m, "filter attachments: a rule name "
                            "has 1..64 characters");
            bad = true;
        }
        for (const char *p = v; p && *p; p++) {
            if (*p < 0x21 || *p > 0x7e || *p == '"' || *p == '\\') {
                pst_fconf_error(err, file, m, "filter attachments: a rule "
                                "name is printable ASCII without blanks, "
                                "quotes or backslashes");
                bad = true;
                break;
            }
        }
        if (v && !bad)
            r->label = pst_xstrdup(v);
    }
    if (r->label == NULL)
        r->label = pst_xasprintf("line-%d", r->line);
    if ((m = config_setting_get_member(s, "action")) == NULL) {
        pst_fconf_error(err, file, s, "filter attachments: a rule needs an "
                        "action (strip, reject, quarantine or allow)");
        bad = true;
    } else if (get_action(m, file, err, act_names, act_vals, &r->action) <
               0) {
        bad = true;
    }
    if ((m = config_setting_get_member(s, "where")) != NULL) {
        static const char *const wn[] = {"any", "part", "archive", NULL};
        const char *v = str_of(m, file, err, &bad);
        int i = 0;
        while (v && wn[i] && strcmp(wn[i], v) != 0)
            i++;
        if (v && wn[i] == NULL) {
            pst_fconf_error(err, file, m, "filter attachments: unknown where "
                            "\"%s\" (any, part or archive)", v);
            bad = true;
        }
        r->where = (enum att_where)(v && wn[i] ? i : 0);
    }
    if ((m = config_setting_get_member(s, "extensions")) != NULL &&
        get_list(m, file, err, true, &r->exts) < 0)
        bad = true;
    if ((m = config_setting_get_member(s, "glob")) != NULL &&
        get_list(m, file, err, false, &r->globs) < 0)
        bad = true;
    if ((m = config_setting_get_member(s, "declared")) != NULL &&
        get_list(m, file, err, false, &r->declared) < 0)
        bad = true;
    if ((m = config_setting_get_member(s, "detected")) != NULL &&
        get_list(m, file, err, false, &r->detected) < 0)
        bad = true;
    if ((m = config_setting_get_member(s, "regex")) != NULL) {
        const char *v = str_of(m, file, err, &bad);
        int ec;
        PCRE2_SIZE eo;
        if (v) {
            r->re = pcre2_compile((PCRE2_SPTR)v, PCRE2_ZERO_TERMINATED,
                                  PCRE2_CASELESS | PCRE2_UTF, &ec, &eo, NULL);
            if (r->re == NULL) {
                PCRE2_UCHAR msg[160];
                pcre2_get_error_message(ec, msg, sizeof(msg));
                pst_fconf_error(err, file, m,
                                "filter attachments: regex \"%s\" does not "
                                "compile at offset %zu: %s", v, (size_t)eo,
                                (char *)msg);
                bad = true;
            } else {
                pcre2_jit_compile(r->re, PCRE2_JIT_COMPLETE);
            }
        }
    }
    bool b;
    if ((m = config_setting_get_member(s, "mismatch")) != NULL) {
        b = false;
        if (get_bool(s, "mismatch", file, err, &b) < 0)
            bad = true;
        r->mismatch = b;
    }
    if (get_bool(s, "unnamed", file, err, &r->unnamed) < 0)
        bad = true;
    if ((m = config_setting_get_member(s, "larger_than")) != NULL) {
        if (get_num(s, "larger_than", 0, UINT64_C(1) << 50, file, err,
                    &r->larger_than) < 0)
            bad = true;
        r->has_size = true;
    }
    if ((m = config_setting_get_member(s, "signed")) != NULL) {
        enum att_action a;
        if (get_action(m, file, err, setting_names, setting_vals, &a) < 0 ||
            a == ATT_QUARANTINE) {
            if (a == ATT_QUARANTINE)
                pst_fconf_error(err, file, m, "filter attachments: signed "
                                "is strip, reject or pass");
            bad = true;
        }
        r->signed_action = (int)a;
    }
    r->needs_name = r->exts.n || r->globs.n || r->re;
    if (!r->needs_name && !r->declared.n && !r->detected.n &&
        r->mismatch < 0 && !r->has_size && !r->unnamed) {
        pst_fconf_error(err, file, s, "filter attachments: a rule needs a "
                        "condition (extensions, glob, regex, declared, "
                        "detected, mismatch, larger_than or unnamed)");
        bad = true;
    }
    if (r->unnamed && r->needs_name) {
        pst_fconf_error(err, file, s, "filter attachments: unnamed cannot "
                        "go with a name condition");
        bad = true;
    }
    if (r->detected.n || r->mismatch >= 0)
        c->need_magic = true;
    for (size_t i = 0; i < r->detected.n; i++) {
        const char *d = r->detected.v[i];
        if (strncmp(d, "text", 4) == 0 || strchr("*?[", d[0]))
            c->magic_text = true;
    }
    return bad ? -1 : 0;
}

static int
parse_archives(struct att_conf *c, const config_setting_t *s,
               const char *file, struct pst_err *err)
{
    static const char *const keys[] = {
        "formats", "depth", "max_members", "max_bytes", "max_ratio",
        "nested_max", "memory", "on_limit", "on_error", "on_encrypted",
        NULL};
    static const char *const fmts[] = {"zip", "7z", "rar", "tar", "gzip",
                                       "bzip2", "xz", NULL};
    bool bad = false;
    const config_setting_t *m;
    uint64_t v;

    if (!config_setting_is_group(s)) {
        pst_fconf_error(err, file, s, "filter attachments: archives is a "
                        "group");
        return -1;
    }
    bad |= check_keys(s, file, err, keys, "archives");
    if ((m = config_setting_get_member(s, "formats")) != NULL) {
        c->ar.formats = 0;
        if (!config_setting_is_array(m) && !config_setting_is_list(m)) {
            pst_fconf_error(err, file, m, "filter attachments: formats is a "
                            "list of format names");
            bad = true;
        }
        for (int i = 0; !bad && i < config_setting_length(m); i++) {
            const char *f = config_setting_get_string_elem(m, (unsigned)i);
            int k = 0;
            while (f && fmts[k] && strcmp(fmts[k], f) != 0)
                k++;
            if (f == NULL || fmts[k] == NULL) {
                pst_fconf_error(err, file, m, "filter attachments: unknown "
                                "archive format \"%s\" (zip, 7z, rar, tar, "
                                "gzip, bzip2, xz)", f ? f : "?");
                bad = true;
                break;
            }
            c->ar.formats |= 1u << k;
        }
    }
    v = c->ar.depth;
    if (get_num(s, "depth", 0, 16, file, err, &v) < 0)
        bad = true;
    c->ar.depth = (unsigned)v;
    v = c->ar.max_members;
    if (get_num(s, "max_members", 1, 1000000, file, err,
                &v) < 0)
        bad = true;
    c->ar.max_members = (unsigned)v;
    if (get_num(s, "max_bytes", 1, UINT64_C(1) << 40, file, err,
                &c->ar.max_bytes) < 0)
        bad = true;
    v = c->ar.max_ratio;
    if (get_num(s, "max_ratio", 1, 1000000, file, err,
                &v) < 0)
        bad = true;
    c->ar.max_ratio = (unsigned)v;
    if (get_num(s, "nested_max", 1024, UINT64_C(1) << 30, file, err,
                &c->ar.nested_max) < 0)
        bad = true;
    if (get_num(s, "memory", UINT64_C(16) << 20, UINT64_C(1) << 40, file,
                err, &c->ar.memory) < 0)
        bad = true;
    else if (c->ar.memory < c->ar.nested_max + (UINT64_C(16) << 20)) {
        pst_fconf_error(err, file, s, "filter attachments: archives.memory "
                        "(%" PRIu64 ") must exceed nested_max (%" PRIu64
                        ") by 16 MiB: a nested archive is held in it",
                        c->ar.memory, c->ar.nested_max);
        bad = true;
    }
    if ((m = config_setting_get_member(s, "on_limit")) != NULL &&
        get_action(m, file, err, setting_names, setting_vals,
                   &c->ar.on_limit) < 0)
        bad = true;
    if ((m = config_setting_get_member(s, "on_error")) != NULL &&
        get_action(m, file, err, setting_names, setting_vals,
                   &c->ar.on_error) < 0)
        bad = true;
    if ((m = config_setting_get_member(s, "on_encrypted")) != NULL &&
        get_action(m, file, err, setting_names, setting_vals,
                   &c->ar.on_encrypted) < 0)
        bad = true;
    return bad ? -1 : 0;
}

/* The module's series (core/metrics.h; docs/OPERATIONS.md). */
static void
metrics(struct att_counters *n)
{
    static const char actions[] =
        "Attachment policy actions: strip counts parts, reject and "
        "quarantine count messages.";
    static const char scans[] =
        "Content scans of the attachments module, by kind.";
    static const char events[] =
        "Content the attachments module could not inspect: encrypted "
        "archives, members or messages, archive limits, unreadable "
        "archives.";
    n->files = pst_metric_counter(
        "postern_attachments_files_total",
        "Files (parts, uuencoded blocks, archive members) judged by the "
        "attachments module.", NULL);
    n->stripped = pst_metric_counter("postern_attachments_actions_total",
                                     actions, "action", "strip", NULL);
    n->rejected = pst_metric_counter("postern_attachments_actions_total",
                                     actions, "action", "reject", NULL);
    n->quarantined = pst_metric_counter("postern_attachments_actions_total",
                                        actions, "action", "quarantine",
                                        NULL);
    n->magic = pst_metric_counter("postern_attachments_scans_total", scans,
                                  "kind", "magic", NULL);
    n->archives = pst_metric_counter("postern_attachments_scans_total", scans,
                                     "kind", "archive", NULL);
    n->encrypted = pst_metric_counter(
        "postern_attachments_archive_events_total", events, "event",
        "encrypted", NULL);
    n->limits = pst_metric_counter("postern_attachments_archive_events_total",
                                   events, "event", "limit", NULL);
    n->errors = pst_metric_counter("postern_attachments_archive_events_total",
                                   events, "event", "error", NULL);
}

static int
att_configure(const config_setting_t *s, const char *file,
              const struct pst_fhost *host, void **out,
              struct pst_err *err)
{
    static const char *const keys[] = {"rules", "detect_bytes", "uuencode",
                                       "scan_time", "signed", "encrypted",
                                       "archives", "helper", NULL};
    static atomic_uint_fast64_t conf_ids;
    struct aconf *ac = pst_xcalloc(1, sizeof(*ac));
    struct att_conf *c = &ac->c;
    const config_setting_t *m;
    bool bad = pst_fconf_check_keys(s, file, keys, err) > 0;
    c->id = atomic_fetch_add(&conf_ids, 1) + 1;
    c->exe_fd = -1;
    uint64_t v;

    atomic_init(&ac->refs, 1);
    c->detect_bytes = 16384;
    c->uuencode = true;
    c->scan_time_ms = 20000;
    c->signed_action = ATT_STRIP;
    c->encrypted_msg = ATT_PASS;
    c->ar.formats = ATT_AR_ZIP | ATT_AR_7Z | ATT_AR_RAR | ATT_AR_TAR |
                    ATT_AR_GZIP | ATT_AR_BZIP2 | ATT_AR_XZ;
    c->ar.depth = 3;
    c->ar.max_members = 10000;
    c->ar.max_bytes = 100u << 20;
    c->ar.max_ratio = 100;
    c->ar.nested_max = 16u << 20;
    c->ar.memory = 256u << 20;
    c->ar.on_limit = c->ar.on_error = c->ar.on_encrypted = ATT_REJECT;
    metrics(&c->n);
    c->mctx = pcre2_match_context_create(NULL);
    pcre2_set_match_limit(c->mctx, 100000);
    pcre2_set_depth_limit(c->mctx, 1000);

    v = c->detect_bytes;
    if (get_num(s, "detect_bytes", 256, 1u << 20, file, err,
                &v) < 0)
        bad = true;
    c->detect_bytes = (unsigned)v;
    if (get_bool(s, "uuencode", file, err, &c->uuencode) < 0)
        bad = true;
    if ((m = config_setting_get_member(s, "scan_time")) != NULL) {
        double d = config_setting_type(m) == CONFIG_TYPE_FLOAT
                       ? config_setting_get_float(m)
                   : config_setting_type(m) == CONFIG_TYPE_INT
                       ? config_setting_get_int(m)
                       : -1;
        if (d < 0.01 || d > 3600) {
            pst_fconf_error(err, file, m, "filter attachments: scan_time is "
                            "seconds, 0.01..3600");
            bad = true;
        }
        c->scan_time_ms = (unsigned)(d * 1000);
    }
    if ((m = config_setting_get_member(s, "signed")) != NULL) {
        if (get_action(m, file, err, setting_names, setting_vals,
                       &c->signed_action) < 0)
            bad = true;
        else if (c->signed_action == ATT_QUARANTINE) {
            pst_fconf_error(err, file, m, "filter attachments: signed is "
                            "strip, reject or pass");
            bad = true;
        }
    }
    if ((m = config_setting_get_member(s, "encrypted")) != NULL) {
        if (get_action(m, file, err, setting_names, setting_vals,
                       &c->encrypted_msg) < 0)
            bad = true;
        else if (c->encrypted_msg == ATT_STRIP) {
            pst_fconf_error(err, file, m, "filter attachments: encrypted is "
                            "pass, reject or quarantine");
            bad = true;
        }
    }
    if ((m = config_setting_get_member(s, "archives")) != NULL &&
        parse_archives(c, m, file, err) < 0)
        bad = true;
    if (c->ar.formats)
        c->need_magic = true;
    if (c->need_magic)              /* the workers load libmagic at start */
        atomic_store(&att_magic_wanted, true);
    if ((m = config_setting_get_member(s, "rules")) == NULL) {
        pst_fconf_error(err, file, s, "filter attachments: rules is "
                        "required");
        bad = true;
    } else {
        int n = config_setting_length(m);
        if (!config_setting_is_list(m) || n < 1 || n > RULES_MAX) {
            pst_fconf_error(err, file, m, "filter attachments: rules is a "
                            "list of 1..%d groups", RULES_MAX);
            bad = true;
            n = 0;
        }
        c->rules = pst_xcalloc((size_t)(n ? n : 1), sizeof(*c->rules));
        for (int i = 0; i < n; i++)
            if (parse_rule(c, &c->rules[c->nrules++],
                           config_setting_get_elem(m, (unsigned)i), file,
                           err) < 0)
                bad = true;
    }
    /* archives are walked by postern-archive (attach_jail.c), which
     * configures itself from these same settings */
    if (!bad && c->ar.formats &&
        pst_fconf_helper(s, file, "attachments", "postern-archive",
                         &c->helper_path, &c->exe_fd, err) < 0)
        bad = true;
    if (!bad) {
        size_t n;
        FILE *f = open_memstream(&c->text, &n);
        if (f == NULL)
            abort();                /* out of memory, as pst_x* do */
        pst_conf_setting_write(f, s);
        fclose(f);
        if (n > ATT_SETTINGS_MAX) {
            pst_fconf_error(err, file, s, "filter attachments: the "
                            "module's settings take %zu octets written out, "
                            "more than the %u its archive helper takes",
                            n, ATT_SETTINGS_MAX);
            bad = true;
        }
    }
    if (bad) {
        aconf_unref(ac);
        return -1;
    }
    *out = ac;
    return 0;
}

/* ---- collecting the leaves (loop thread) ---- */

static bool
is_type(const struct pst_mime_part *p, const char *t)
{
    return p && p->content_type && strcmp(p->content_type, t) == 0;
}

struct collect {
    struct att_item *items;
    const struct pst_mime_part **parts;
    bool *signed_below;
    unsigned n, cap;
};

static void
collect(const struct att_conf *c, struct collect *k,
        const struct pst_mime_part *p, bool sig)
{
    for (; p; p = p->next) {
        bool s = sig || is_type(p, "multipart/signed");
        if (p->container) {
            collect(c, k, p->child, s);
            continue;
        }
        if (k->n == k->cap) {
            k->cap = k->cap ? k->cap * 2 : 8;
            k->items = pst_xrealloc(k->items, k->cap * sizeof(*k->items));
            k->parts = pst_xrealloc(k->parts, k->cap * sizeof(*k->parts));
            k->signed_below =
                pst_xrealloc(k->signed_below, k->cap * sizeof(bool));
        }
        struct att_item *it = &k->items[k->n];
        memset(it, 0, sizeof(*it));
        it->part = k->n;
        k->parts[k->n] = p;
        k->signed_below[k->n] = s;
        att_part_names(p, &it->names);
        snprintf(it->declared, sizeof(it->declared), "%s",
                 p->content_type ? p->content_type : "text/plain");
        it->size = p->decoded_size;
        it->body = pst_fbody_of(p);
        it->text = strcmp(p->type ? p->type : "text", "text") == 0 &&
                   it->names.n == 0;
        it->opaque = is_type(p, "application/pkcs7-mime") ||
                     is_type(p, "application/x-pkcs7-mime") ||
                     (is_type(p->parent, "multipart/encrypted") &&
                      !is_type(p, "application/pgp-encrypted"));
        it->read = !it->opaque &&
                   (c->need_magic ||
                    (c->uuencode && strcmp(p->type ? p->type : "text",
                                           "text") == 0));
        it->v.rule = -1;
        k->n++;
    }
}

/* What needs no content: names, declared type, size, opaque payloads. */
static void
judge_static(const struct att_conf *c, struct att_item *it)
{
    struct att_file f = {NULL, it->declared,
                         it->detected[0] ? it->detected : NULL, it->size,
                         true, false};
    att_consider_names(c, it, &f);
    for (unsigned i = 0; i < it->uu.n; i++) {
        struct att_file u = {it->uu.v[i], NULL, NULL, 0, false, false};
        att_consider(c, it, &u, it->uu.v[i]);
    }
    if (it->opaque) {
        pst_metric_add(c->n.encrypted, 1);
        att_special(it, c->encrypted_msg, "encrypted-message",
                    it->names.n ? it->names.v[0] : it->declared);
    }
}

static void
job_free(struct ajob *j)
{
    for (unsigned i = 0; i < j->n; i++) {
        att_names_free(&j->items[i].names);
        att_names_free(&j->items[i].uu);
    }
    free(j->items);
    free(j->parts);
    free(j->signed_below);
    pst_textsrc_unref(j->t);
    aconf_unref(j->ac);
    free(j);
}

/* ---- outcome (loop thread) ---- */

/* The action a part's verdict takes, below multipart/signed or not. */
static enum att_action
effective(const struct att_conf *c, const struct att_item *it, bool sig)
{
    enum att_action a = it->v.action;
    if (a != ATT_STRIP || !sig)
        return a;
    int s = it->v.rule >= 0 ? c->rules[it->v.rule].signed_action : -1;
    return s >= 0 ? (enum att_action)s : c->signed_action;
}

static const char *
what_of(const struct att_verdict *v)
{
    if (v->why && strcmp(v->why, "encrypted") == 0)
        return "encrypted archive";
    if (v->why && strcmp(v->why, "archive-limit") == 0)
        return "archive beyond the inspection limits";
    if (v->why && strcmp(v->why, "archive-error") == 0)
        return "unreadable archive";
    if (v->why && strcmp(v->why, "encrypted-message") == 0)
        return "encrypted content";
    return "attachment";
}

static void
summary_add(struct pst_tbuf *h, const char *verb, const struct att_verdict *v,
            unsigned *more)
{
    if (h->len > HDR_MAX) {
        (*more)++;
        return;
    }
    pst_tbuf_printf(h, "%s%s \"%s\" (%s %s)", h->len ? "; " : "", verb,
                    v->file[0] ? v->file : "unnamed",
                    v->rule >= 0 ? "rule" : "policy", v->why);
}

static int
strip_root(struct pst_fctx *fc, const struct pst_mime_part *p,
           const char *notice)
{
    static const char *const fields[] = {"Content-Type",
                                         "Content-Transfer-Encoding",
                                         "Content-Disposition"};
    for (size_t i = 0; i < PST_ARRAY_LEN(fields); i++) {
        long k;
        while ((k = pst_hdr_find(fc, fields[i], 0)) >= 0)
            if (pst_hdr_remove(fc, (size_t)k) < 0)
                return -1;
    }
    if (pst_hdr_add_raw(fc, "Content-Type", "text/plain; charset=us-ascii",
                        false) < 0)
        return -1;
    char *text = pst_xasprintf("%s\r\n", notice);
    int rc = pst_part_replace(fc, p->body_start, p->body_end - p->body_start,
                              text, strlen(text));
    free(text);
    return rc;
}

static enum pst_verdict
apply(struct pst_fctx *fc, struct ajob *j)
{
    struct att_conf *c = &j->ac->c;
    enum att_action worst = ATT_PASS;
    unsigned wi = 0;

    for (unsigned i = 0; i < j->n; i++) {
        enum att_action a = effective(c, &j->items[i], j->signed_below[i]);
        if (a > worst) {
            worst = a;
            wi = i;
        }
    }
    if (worst == ATT_PASS)
        return PST_CONTINUE;
    if (worst == ATT_REJECT) {
        const struct att_verdict *v = &j->items[wi].v;
        char text[PST_FREPLY_TEXT_MAX + 1], f[80];
        snprintf(f, sizeof(f), "%.79s", v->file[0] ? v->file : "unnamed");
        snprintf(text, sizeof(text), "Message refused: %s \"%s\" is not "
                 "allowed (%s %s)%s", what_of(v), f,
                 v->rule >= 0 ? "rule" : "policy", v->why,
                 j->items[wi].v.action == ATT_STRIP ? ", and it is signed"
                                                    : "");
        pst_fctx_log(fc, PST_LOG_INFO, "event=attachment action=reject "
                     "section=%s file=\"%s\" %s=%s",
                     j->parts[wi]->section, v->file,
                     v->rule >= 0 ? "rule" : "policy", v->why);
        pst_metric_add(c->n.rejected, 1);
        if (v->size)
            pst_fctx_reply(fc, 552, "5.3.4", text);
        else
            pst_fctx_reply(fc, 554, "5.7.1", text);
        return PST_REJECT;
    }
    struct pst_tbuf h;
    unsigned more = 0;
    pst_tbuf_init(&h);
    enum pst_verdict verdict = PST_CONTINUE;
    for (unsigned i = 0; i < j->n; i++) {
        const struct att_item *it = &j->items[i];
        const struct pst_mime_part *p = j->parts[i];
        enum att_action a = effective(c, it, j->signed_below[i]);
        const char *sec = p->section ? p->section : "?";
        if (worst == ATT_QUARANTINE && a == ATT_QUARANTINE) {
            pst_fctx_log(fc, PST_LOG_INFO, "event=attachment "
                         "action=quarantine section=%s file=\"%s\" %s=%s",
                         sec, it->v.file, it->v.rule >= 0 ? "rule" : "policy",
                         it->v.why);
            summary_add(&h, "quarantined", &it->v, &more);
            verdict = PST_QUARANTINE;
        } else if (worst == ATT_STRIP && a == ATT_STRIP) {
            char notice[400];
            snprintf(notice, sizeof(notice),
                     "[postern: %s \"%s\" removed by the attachment policy "
                     "(%s %s)]", what_of(&it->v),
                     it->v.file[0] ? it->v.file : "unnamed",
                     it->v.rule >= 0 ? "rule" : "policy", it->v.why);
            int rc = p->parent ? pst_part_remove(fc, p, notice)
                               : strip_root(fc, p, notice);
            if (rc < 0 && p->parent) /* the name held a boundary */
                rc = pst_part_remove(fc, p, "[postern: attachment removed "
                                            "by the attachment policy]");
            if (rc < 0) {
                pst_fctx_log(fc, PST_LOG_WARN, "event=attachment "
                             "action=strip section=%s error=%d", sec, rc);
                pst_fctx_fail(fc, "cannot remove a part");
                pst_tbuf_free(&h);
                return PST_TEMPFAIL;
            }
            pst_fctx_log(fc, PST_LOG_INFO, "event=attachment action=strip "
                         "section=%s file=\"%s\" %s=%s", sec, it->v.file,
                         it->v.rule >= 0 ? "rule" : "policy", it->v.why);
            pst_metric_add(c->n.stripped, 1);
            summary_add(&h, "stripped", &it->v, &more);
        } else if (it->v.action == ATT_STRIP && a == ATT_PASS) {
            pst_fctx_log(fc, PST_LOG_INFO, "event=attachment action=pass "
                         "section=%s file=\"%s\" %s=%s why=signed", sec,
                         it->v.file, it->v.rule >= 0 ? "rule" : "policy",
                         it->v.why);
        }
    }
    if (verdict == PST_QUARANTINE)
        pst_metric_add(c->n.quarantined, 1);
    if (more)
        pst_tbuf_printf(&h, "; and %u more", more);
    if (h.len && pst_hdr_add_raw(fc, HDR_NAME, pst_tbuf_cstr(&h), true) < 0)
        pst_fctx_log(fc, PST_LOG_WARN, "event=attachment summary=refused");
    pst_tbuf_free(&h);
    return verdict;
}

/* ---- streaming (loop thread) ---- */

static void
uu_flush(struct amsg *st)
{
    if (st->have_cur && st->cur_text && st->ln && !st->over) {
        struct att_names ns = {0};
        att_uu_line(st->line, st->ln, &ns);
        for (unsigned i = 0; i < ns.n; i++) {
            if (st->nuu == UU_KEEP) {
                BIT_SET(st->uu_over, st->cur);
                break;
            }
            st->uu[st->nuu].part = st->cur;
            snprintf(st->uu[st->nuu].name, sizeof(st->uu[0].name), "%s",
                     ns.v[i]);
            st->nuu++;
        }
        att_names_free(&ns);
    }
    st->ln = 0;
    st->over = false;
}

static void
att_on_body(struct pst_fctx *fc, const struct pst_mime_part *part,
            const void *data, size_t len)
{
    struct amsg *st = pst_fctx_state(fc);
    const struct att_conf *c = &((struct aconf *)pst_fctx_conf(fc))->c;
    const uint8_t *p = data;

    if (st == NULL || part->id >= SEEN_MAX)
        return;
    if (!st->have_cur || st->cur != part->id) {
        uu_flush(st);
        st->have_cur = true;
        st->cur = part->id;
        st->cur_text = c->uuencode && part->type &&
                       strcmp(part->type, "text") == 0;
        st->cur_bytes = 0;
        BIT_SET(st->seen, part->id);
    }
    if (st->cur_bytes < c->detect_bytes) {
        size_t k = PST_MIN(len, (size_t)(c->detect_bytes - st->cur_bytes));
        if (att_binary(p, k))
            BIT_SET(st->binary, part->id);
        st->cur_bytes += (uint32_t)k;
    }
    if (!st->cur_text)
        return;
    while (len > 0) {
        const uint8_t *nl = memchr(p, '\n', len);
        size_t k = nl ? (size_t)(nl - p) : len;
        if (!st->over) {
            if (st->ln + k > sizeof(st->line))
                st->over = true;
            else
                memcpy(st->line + st->ln, p, k);
            st->ln += k;
        }
        if (nl == NULL)
            break;
        uu_flush(st);
        p += k + 1;
        len -= k + 1;
    }
}

/* Whether streaming saw all that part p needs: it was streamed (or is
 * empty), begins with text (so it is no executable or archive, and is
 * text/plain to the rules, as the scanner would say without libmagic),
 * and its uuencoded names were all kept. Then it is judged without
 * reading. */
static bool
streamed(const struct att_conf *c, struct amsg *st,
         const struct pst_mime_part *p)
{
    if (c->magic_text || p->id >= SEEN_MAX || BIT_GET(st->uu_over, p->id) ||
        BIT_GET(st->binary, p->id) ||
        strcmp(p->type ? p->type : "", "message") == 0) /* parsed again */
        return false;
    return BIT_GET(st->seen, p->id) || p->decoded_size == 0;
}

/* ---- hooks ---- */

static void
work(void *p)
{
    struct ajob *j = p;
    struct att_scan s = {0};
    s.c = &j->ac->c;
    s.t = j->t;
    s.deadline = att_now() + (uint64_t)s.c->scan_time_ms * 1000000u;
    s.cancel = &j->cancel;
    for (unsigned i = 0; i < j->n && j->rc == 0; i++) {
        struct att_item *it = &j->items[i];
        if (!it->read) {
            judge_static(s.c, it);
            continue;
        }
        if (att_scan_item(&s, it) < 0) {
            j->rc = -1;
            snprintf(j->err, sizeof(j->err), "%s", s.err);
        }
    }
    pst_textsrc_unref(j->t);        /* the descriptor goes now */
    j->t = NULL;
}

static void
done(void *p)
{
    struct ajob *j = p;
    struct pst_fctx *fc = pst_fctx_lookup(j->ref);
    if (fc != NULL) {
        struct amsg *st = pst_fctx_state(fc);
        st->job = NULL;
        enum pst_verdict v;
        if (j->rc < 0) {
            pst_fctx_fail(fc, j->err);
            v = PST_TEMPFAIL;
        } else {
            v = apply(fc, j);
        }
        pst_fctx_resume(fc, v);
    }
    job_free(j);
}

static enum pst_verdict
att_on_message(struct pst_fctx *fc, const struct pst_mime_part *root)
{
    struct aconf *ac = pst_fctx_conf(fc);
    struct att_conf *c = &ac->c;
    struct collect k = {0};
    bool read = false;

    if (root == NULL)
        return PST_CONTINUE;
    /* the summary field is ours: one that came with the message is not */
    for (long i; (i = pst_hdr_find(fc, HDR_NAME, 0)) >= 0;) {
        if (pst_hdr_remove(fc, (size_t)i) < 0)
            break;
        pst_fctx_log(fc, PST_LOG_INFO, "event=inbound_summary_removed");
    }
    collect(c, &k, root, false);
    struct amsg *st = pst_fctx_state(fc);
    uu_flush(st);
    for (unsigned i = 0; i < k.n; i++) {
        struct att_item *it = &k.items[i];
        if (!it->read || !streamed(c, st, k.parts[i]))
            continue;
        it->read = false;
        if (c->need_magic && !it->text)     /* as att_scan_item says */
            snprintf(it->detected, sizeof(it->detected), "text/plain");
        for (unsigned u = 0; u < st->nuu; u++)
            if (st->uu[u].part == k.parts[i]->id)
                att_names_add(&it->uu, st->uu[u].name,
                              strlen(st->uu[u].name));
    }
    struct ajob *j = pst_xcalloc(1, sizeof(*j));
    j->ac = ac;
    atomic_fetch_add_explicit(&ac->refs, 1, memory_order_relaxed);
    j->items = k.items;
    j->parts = k.parts;
    j->signed_below = k.signed_below;
    j->n = k.n;
    for (unsigned i = 0; i < j->n; i++)
        read |= j->items[i].read;
    if (!read) {
        for (unsigned i = 0; i < j->n; i++)
            judge_static(c, &j->items[i]);
        enum pst_verdict v = apply(fc, j);
        job_free(j);
        return v;
    }
    j->t = pst_fctx_text(fc);
    if (j->t == NULL) {
        job_free(j);
        pst_fctx_fail(fc, "the message text cannot be read");
        return PST_TEMPFAIL;
    }
    j->ref = pst_fctx_ref(fc);
    atomic_init(&j->cancel, false);
    if (pst_fctx_offload(fc, j, work, done) < 0) {
        job_free(j);
        pst_fctx_fail(fc, "the worker pool is full");
        return PST_TEMPFAIL;
    }
    ((struct amsg *)pst_fctx_state(fc))->job = j;
    return PST_PENDING;
}

static void
att_on_abort(struct pst_fctx *fc)
{
    struct amsg *st = pst_fctx_state(fc);
    if (st && st->job) {
        atomic_store(&st->job->cancel, true);   /* done() frees it */
        st->job = NULL;
    }
}

const struct pst_filter pst_filter_attachments = {
    .name = "attachments",
    PST_FILTER_ABI,
    .msg_state_size = sizeof(struct amsg),
    .configure = att_configure,
    .unconfigure = att_unconfigure,
    .on_message = att_on_message,
    .on_body = att_on_body,
    .on_abort = att_on_abort,
};
