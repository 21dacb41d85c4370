/*
 * conf.c - the configuration loader: reads a libconfig file, walks it
 * against the directive tables of conf_tables.c, and builds one immutable,
 * reference-counted generation (struct pst_conf).
 *
 * Every problem is reported as "file:line: text" into the caller's
 * struct pst_err and the walk goes on, so one run of check-config lists all
 * of them; only a libconfig syntax error stops the walk (there is no tree to
 * walk). A generation is returned only when no error was found.
 *
 * Ownership: every string and array in a generation is malloc'd and owned by
 * it; pst_conf_unref frees them all, through the same tables, when the last
 * reference goes.
 *
 * Limits: the file is parsed by libconfig (bounded by the file); every list
 * has a maximum length in its table; messages are bounded by pst_err.
 */
#include "conf/conf_table.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Config files are small; a larger one is refused rather than read. */
#define PST_CONF_FILE_MAX (16u << 20)

_Static_assert(sizeof(enum pst_tls_mode) == sizeof(int), "enum is int");
_Static_assert(sizeof(enum pst_bare_newline) == sizeof(int), "enum is int");

#define FIELD(base, off, type) ((type *)((char *)(base) + (off)))

/*
 * source_name - the file a setting came from, as a name the user can open:
 * libconfig records an @include by the name written in it, which is
 * relative to the including file's directory, not to ours.
 */
static const char *
source_name(struct pst__ctx *x, const char *file, char *buf, size_t n)
{
    if (file == NULL)
        return x->path;
    if (file[0] == '/' || x->incdir == NULL || strcmp(file, x->path) == 0)
        return file;
    snprintf(buf, n, "%s%s", x->incdir, file);
    return buf;
}

void
pst__conf_error(struct pst__ctx *x, const config_setting_t *s, const char *fmt,
                ...)
{
    char text[768];
    va_list ap;
    const char *file = x->path;
    int line = 0;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    char buf[4096];

    if (s != NULL) {
        file = source_name(x, config_setting_source_file(s), buf, sizeof(buf));
        line = (int)config_setting_source_line(s);
    }
    pst_err_add(x->err, file, line, "%s", text);
}

static const char *
type_name(int type)
{
    switch (type) {
    case CONFIG_TYPE_GROUP:
        return "a group { ... }";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return "an integer";
    case CONFIG_TYPE_FLOAT:
        return "a floating-point number";
    case CONFIG_TYPE_STRING:
        return "a string";
    case CONFIG_TYPE_BOOL:
        return "a boolean";
    case CONFIG_TYPE_ARRAY:
        return "an array [ ... ]";
    case CONFIG_TYPE_LIST:
        return "a list ( ... )";
    default:
        return "nothing";
    }
}

static void
wrong_type(struct pst__ctx *x, const config_setting_t *s, const char *where,
           const char *name, const char *want)
{
    pst__conf_error(x, s, "%s%s: expected %s, got %s", where, name, want,
                    type_name(config_setting_type(s)));
}

/*
 * pst__conf_abspath - p made absolute against the working directory at
 * load. No symlinks are resolved: the file need not exist yet.
 */
char *
pst__conf_abspath(struct pst__ctx *x, const char *p)
{
    if (p[0] == '/' || x->cwd == NULL)
        return pst_xstrdup(p);
    while (p[0] == '.' && p[1] == '/')
        p += 2;
    if (strcmp(p, ".") == 0)
        return pst_xstrdup(x->cwd);
    if (strcmp(x->cwd, "/") == 0)
        return pst_xasprintf("/%s", p);
    return pst_xasprintf("%s/%s", x->cwd, p);
}

/*
 * raw_line - the text of line n of file, from a one-file cache. Used to
 * re-read integer literals: libconfig 1.5 silently wraps an integer without
 * the L suffix to 32 bits (5000000000 becomes 705032704), which must be an
 * error or the right value, never a different limit.
 */
static const char *
raw_line(struct pst__ctx *x, const char *file, unsigned n, size_t *len)
{
    if (x->raw_file == NULL || strcmp(x->raw_file, file) != 0) {
        FILE *f = fopen(file, "r");
        struct stat st;
        size_t got, cap;
        free(x->raw_file);
        free(x->raw);
        x->raw_file = NULL;
        x->raw = NULL;
        if (f == NULL)
            return NULL;
        if (fstat(fileno(f), &st) < 0 || st.st_size < 0 ||
            st.st_size > (off_t)PST_CONF_FILE_MAX) {
            fclose(f);
            return NULL;
        }
        cap = (size_t)st.st_size;
        x->raw = pst_xmalloc(cap + 1);
        got = fread(x->raw, 1, cap, f);
        fclose(f);
        x->raw[got] = '\0';
        x->raw_file = pst_xstrdup(file);
    }
    const char *p = x->raw;
    for (unsigned i = 1; i < n && p != NULL; i++) {
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    if (p == NULL)
        return NULL;
    const char *e = strchr(p, '\n');
    *len = e ? (size_t)(e - p) : strlen(p);
    return p;
}

/*
 * get_int - the integer value of s, re-read from the source text when that
 * is possible. Returns 0, or -1 when the literal does not fit 64 bits.
 */
static int
get_int(struct pst__ctx *x, const config_setting_t *s, long long *out)
{
    char buf[4096];
    const char *file;
    const char *name = config_setting_name(s);
    const char *line, *p;
    size_t len, nl;

    if (config_setting_source_file(s) == NULL)
        return 0;
    file = source_name(x, config_setting_source_file(s), buf, sizeof(buf));

    *out = config_setting_get_int64(s);
    /* an L-suffixed literal is already read in full */
    if (file == NULL || name == NULL ||
        config_setting_type(s) == CONFIG_TYPE_INT64)
        return 0;
    /* libconfig's value: the literal wrapped to 32 bits. Several settings
     * of this name may share the line (two listeners' ports): the literal
     * is the one whose 32-bit wrap gives that value. */
    const uint32_t wrapped = (uint32_t)config_setting_get_int(s);
    line = raw_line(x, file, config_setting_source_line(s), &len);
    if (line == NULL)
        return 0;
    nl = strlen(name);
    for (p = line; p + nl <= line + len; p++) {
        if (strncmp(p, name, nl) != 0)
            continue;
        if (p > line && (isalnum((unsigned char)p[-1]) || p[-1] == '_' ||
                         p[-1] == '-' || p[-1] == '*'))
            continue;
        const char *q = p + nl;
        while (q < line + len && (*q == ' ' || *q == '\t'))
            q++;
        if (q >= line + len || (*q != '=' && *q != ':'))
            continue;
        q++;
        while (q < line + len && (*q == ' ' || *q == '\t'))
            q++;
        if (q >= line + len ||
            !(isdigit((unsigned char)*q) || *q == '-' || *q == '+'))
            continue;
        char *end;
        long long v;
        errno = 0;
        if (*q == '-') {
            v = strtoll(q, &end, 0);
            if (errno == ERANGE)
                return -1;
        } else {
            unsigned long long u = strtoull(q, &end, 0);
            if (errno == ERANGE || u > (unsigned long long)LLONG_MAX)
                return -1;
            v = (long long)u;
        }
        if ((uint32_t)(unsigned long long)v != wrapped)
            continue;               /* another setting of the same name */
        *out = v;
        return 0;
    }
    return 0;
}

static int
has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

/* get_string - the text of a string setting, or NULL after an error. */
static const char *
get_string(struct pst__ctx *x, const config_setting_t *s, const char *where,
           const struct pst__directive *d)
{
    const char *v;
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        wrong_type(x, s, where, d->name, "a string");
        return NULL;
    }
    v = config_setting_get_string(s);
    if (v[0] == '\0' && !(d->flags & PST__F_EMPTY_OK)) {
        pst__conf_error(x, s, "%s%s: must not be empty", where, d->name);
        return NULL;
    }
    if (has_control(v)) {
        pst__conf_error(x, s, "%s%s: control characters are not allowed", where,
                        d->name);
        return NULL;
    }
    return v;
}

static void
list_words(const struct pst__word *w, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (; w->word != NULL && used < n; w++) {
        int k = snprintf(buf + used, n - used, "%s\"%s\"", used ? ", " : "",
                         w->word);
        if (k < 0)
            break;
        used += (size_t)k;
    }
}

static const struct pst__word *
find_word(const struct pst__word *w, const char *v)
{
    for (; w->word != NULL; w++)
        if (strcmp(w->word, v) == 0)
            return w;
    return NULL;
}

/*
 * parse_size - "52428800", "50M", "50MiB", "1g": K, M, G, T are powers of
 * 1024. Returns 0 or -1.
 */
static int
parse_size(const char *v, uint64_t *out)
{
    char *end;
    unsigned long long n;
    unsigned shift = 0;

    if (!isdigit((unsigned char)v[0]))
        return -1;
    errno = 0;
    n = strtoull(v, &end, 10);
    if (errno == ERANGE)
        return -1;
    switch (pst_tolower((unsigned char)*end)) {
    case '\0':
        break;
    case 'k':
        shift = 10;
        end++;
        break;
    case 'm':
        shift = 20;
        end++;
        break;
    case 'g':
        shift = 30;
        end++;
        break;
    case 't':
        shift = 40;
        end++;
        break;
    default:
        return -1;
    }
    if (shift && (pst_tolower((unsigned char)end[0]) == 'i') &&
        pst_tolower((unsigned char)end[1]) == 'b')
        end += 2;
    else if (shift && pst_tolower((unsigned char)end[0]) == 'b')
        end++;
    if (*end != '\0')
        return -1;
    if (shift && n > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)n << shift;
    return 0;
}

static void
set_number(struct pst__ctx *x, const config_setting_t *s, const char *where,
           const struct pst__directive *d, void *base)
{
    uint64_t v;
    int type = config_setting_type(s);

    if (d->type == PST__C_SIZE && type == CONFIG_TYPE_STRING) {
        const char *t = config_setting_get_string(s);
        if (parse_size(t, &v) < 0) {
            pst__conf_error(x, s,
                            "%s%s: \"%s\" is not a size (bytes, or a number "
                            "with K, M, G or T)",
                            where, d->name, t);
            return;
        }
    } else if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64) {
        long long ll;
        if (get_int(x, s, &ll) < 0) {
            pst__conf_error(x, s,
                            "%s%s: number too large; the range is "
                            "%" PRIu64 "..%" PRIu64,
                            where, d->name, d->min, d->max);
            return;
        }
        if (ll < 0) {
            pst__conf_error(x, s,
                            "%s%s: %lld is out of range %" PRIu64 "..%" PRIu64,
                            where, d->name, ll, d->min, d->max);
            return;
        }
        v = (uint64_t)ll;
    } else {
        wrong_type(x, s, where, d->name,
                   d->type == PST__C_SIZE ? "an integer or a size string"
                                          : "an integer");
        return;
    }
    if (v < d->min || v > d->max) {
        pst__conf_error(
            x, s, "%s%s: %" PRIu64 " is out of range %" PRIu64 "..%" PRIu64,
            where, d->name, v, d->min, d->max);
        return;
    }
    if (d->type == PST__C_SIZE)
        *FIELD(base, d->off, uint64_t) = v;
    else
        *FIELD(base, d->off, unsigned) = (unsigned)v;
}

static void
set_string(struct pst__ctx *x, const config_setting_t *s, const char *where,
           const struct pst__directive *d, void *base)
{
    const char *v = get_string(x, s, where, d);
    char *nv = NULL;
    char **field = FIELD(base, d->off, char *);
    struct stat st;

    if (v == NULL)
        goto fail;
    if (d->type == PST__C_WORD && find_word(d->words, v) == NULL) {
        char allowed[256];
        list_words(d->words, allowed, sizeof(allowed));
        pst__conf_error(x, s, "%s%s: \"%s\" is not one of %s", where, d->name,
                        v, allowed);
        goto fail;
    }
    nv = d->type == PST__C_PATH ? pst__conf_abspath(x, v) : pst_xstrdup(v);
    if (d->fix != NULL) {
        char full[192];
        snprintf(full, sizeof(full), "%s%s", where, d->name);
        if (d->fix(x, s, full, &nv) < 0)
            goto fail;
    }
    if (d->flags & PST__F_EXISTS) {
        if (stat(nv, &st) < 0) {
            pst__conf_error(x, s, "%s%s: %s: %s", where, d->name, nv,
                            strerror(errno));
            goto fail;
        }
        if (S_ISDIR(st.st_mode)) {
            pst__conf_error(x, s, "%s%s: %s: is a directory", where, d->name,
                            nv);
            goto fail;
        }
    }
    free(*field);
    *field = nv;
    return;

fail:
    /* A bad value leaves the field unset rather than at its default, so
       the checks across settings skip it instead of reporting a second,
       misleading error (two bad addresses are not a duplicate 127.0.0.1). */
    free(nv);
    free(*field);
    *field = NULL;
}

static void
set_enum(struct pst__ctx *x, const config_setting_t *s, const char *where,
         const struct pst__directive *d, void *base)
{
    const char *v = get_string(x, s, where, d);
    const struct pst__word *w;

    if (v == NULL)
        return;
    w = find_word(d->words, v);
    if (w == NULL) {
        char allowed[256];
        list_words(d->words, allowed, sizeof(allowed));
        pst__conf_error(x, s, "%s%s: \"%s\" is not one of %s", where, d->name,
                        v, allowed);
        return;
    }
    *FIELD(base, d->off, int) = w->value;
}

/*
 * cidr_check - parse one CIDR with a message saying what is wrong: the
 * address, the prefix length, or host bits set beyond the prefix (as in
 * Postfix, "10.0.0.1/8" is refused: it usually means a typo).
 */
static int
cidr_check(const char *v, struct pst_cidr *c, char *why, size_t n)
{
    char host[64];
    const char *slash = strchr(v, '/');
    size_t hl = slash ? (size_t)(slash - v) : strlen(v);
    struct pst_ip ip;
    unsigned bits;

    if (hl == 0 || hl >= sizeof(host)) {
        snprintf(why, n, "not an IPv4 or IPv6 address");
        return -1;
    }
    memcpy(host, v, hl);
    host[hl] = '\0';
    if (pst_ip_parse(&ip, host) < 0) {
        snprintf(why, n, "\"%s\" is not an IPv4 or IPv6 address", host);
        return -1;
    }
    bits = strchr(host, ':') != NULL ? 128 : 32;
    if (pst_cidr_parse(c, v) < 0) {
        if (ip.family == AF_INET && bits == 128)
            snprintf(why, n,
                     "bad prefix length (96..128 for an "
                     "IPv4-mapped address)");
        else
            snprintf(why, n, "bad prefix length (0..%u)", bits);
        return -1;
    }
    if (!pst_ip_equal(&ip, &c->ip)) {
        char buf[PST_IP_STRLEN];
        snprintf(why, n, "host bits set beyond /%u; use %s/%u", c->prefix,
                 pst_ip_str(&c->ip, buf, sizeof(buf)), c->prefix);
        return -1;
    }
    return 0;
}

static int
is_list(const config_setting_t *s)
{
    return config_setting_type(s) == CONFIG_TYPE_ARRAY ||
           config_setting_type(s) == CONFIG_TYPE_LIST;
}

static void
set_cidrlist(struct pst__ctx *x, const config_setting_t *s, const char *where,
             const struct pst__directive *d, void *base)
{
    struct pst_cidr **field = FIELD(base, d->off, struct pst_cidr *);
    size_t *count = FIELD(base, d->count_off, size_t);
    unsigned n;
    struct pst_cidr *v;
    size_t nv = 0;
    int bad = 0;

    if (!is_list(s)) {
        wrong_type(x, s, where, d->name, "an array of CIDR strings");
        return;
    }
    n = (unsigned)config_setting_length(s);
    if (n > d->max) {
        pst__conf_error(x, s, "%s%s: %u entries, at most %" PRIu64 " allowed",
                        where, d->name, n, d->max);
        return;
    }
    v = pst_xcalloc(n ? n : 1, sizeof(*v));
    for (unsigned i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, i);
        char why[128];
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            pst__conf_error(x, e, "%s%s[%u]: expected a CIDR string, got %s",
                            where, d->name, i,
                            type_name(config_setting_type(e)));
            bad = 1;
            continue;
        }
        const char *t = config_setting_get_string(e);
        if (cidr_check(t, &v[nv], why, sizeof(why)) < 0) {
            pst__conf_error(x, e, "%s%s: bad CIDR \"%s\": %s", where, d->name,
                            t, why);
            bad = 1;
            continue;
        }
        nv++;
    }
    if (bad) {
        free(v);
        return;
    }
    free(*field);
    *field = v;
    *count = nv;
}

static void
set_grouplist(struct pst__ctx *x, const config_setting_t *s, const char *where,
              const struct pst__directive *d, void *base)
{
    char **field = FIELD(base, d->off, char *);
    size_t *count = FIELD(base, d->count_off, size_t);
    unsigned n;
    char *v;

    if (config_setting_type(s) != CONFIG_TYPE_LIST &&
        !(config_setting_type(s) == CONFIG_TYPE_ARRAY &&
          (d->flags & PST__F_SHORTHAND))) {
        wrong_type(x, s, where, d->name, "a list ( { ... }, ... )");
        return;
    }
    n = (unsigned)config_setting_length(s);
    if (n > d->max) {
        pst__conf_error(x, s, "%s%s: %u entries, at most %" PRIu64 " allowed",
                        where, d->name, n, d->max);
        return;
    }
    v = pst_xcalloc(n ? n : 1, d->elem_size);
    for (unsigned i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, i);
        void *eb = v + (size_t)i * d->elem_size;
        char ew[160];

        snprintf(ew, sizeof(ew), "%s%s[%u].", where, d->name, i);
        pst__conf_apply_defaults(x, d->sub, eb);
        if (d->line_off >= 0)
            *FIELD(eb, (size_t)d->line_off, int) =
                (int)config_setting_source_line(e);
        if (config_setting_type(e) == CONFIG_TYPE_STRING &&
            (d->flags & PST__F_SHORTHAND)) {
            /* "example.org" stands for { <first> = "example.org"; } */
            set_string(x, e, ew, d->sub, eb);
            continue;
        }
        if (config_setting_type(e) != CONFIG_TYPE_GROUP) {
            pst__conf_error(
                x, e, "%.*s: expected %s, got %s", (int)strlen(ew) - 1, ew,
                (d->flags & PST__F_SHORTHAND) ? "a string or a group { ... }"
                                              : "a group { ... }",
                type_name(config_setting_type(e)));
            continue;
        }
        pst__conf_parse_group(x, e, d->sub, eb, ew);
    }
    for (size_t i = 0; i < *count; i++)
        pst__conf_free_table(d->sub, *field + i * d->elem_size);
    free(*field);
    *field = v;
    *count = n;
}

/* edit_distance - Levenshtein distance of two short names, capped. */
static size_t
edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[64];

    if (la >= PST_ARRAY_LEN(row) || lb >= PST_ARRAY_LEN(row))
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            best = PST_MIN(best, up + 1);
            best = PST_MIN(best, row[j - 1] + 1);
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* suggest - the closest known name (at most 2 edits away), or NULL. */
static const char *
suggest(const struct pst__directive *t, const char *name)
{
    const char *best = NULL;
    size_t bd = 3;
    for (; t->name != NULL; t++) {
        size_t d = edit_distance(t->name, name);
        if (d < bd) {
            bd = d;
            best = t->name;
        }
    }
    return best;
}

static const struct pst_conf_hook *filters_hook;

/* pst_conf_set_filters_hook - see conf.h. */
void
pst_conf_set_filters_hook(const struct pst_conf_hook *h)
{
    filters_hook = h;
}

/* The filters list is loaded after the rest of the file (modules see the
 * finished settings: host name, authserv-id, resolver), by
 * load_filters. */
static void
set_filters(struct pst__ctx *x, const config_setting_t *s,
            const struct pst__directive *d, void *base)
{
    (void)base;
    if (filters_hook == NULL) {
        pst__conf_error(x, s, "'%s': this program has no filter support",
                        d->name);
        return;
    }
    x->filters = s;
}

static void
load_filters(struct pst__ctx *x, struct pst_conf *c)
{
    if (x->filters == NULL || filters_hook == NULL)
        return;
    if (c->filters != NULL)
        filters_hook->free(c->filters);
    c->filters = NULL;
    filters_hook->load(x->filters, x->path, c, &c->filters, x->err);
}

static const struct pst__directive *
find_directive(const struct pst__directive *t, const char *name)
{
    for (; t->name != NULL; t++)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

/*
 * pst__conf_parse_group - set base's fields from the members of group g
 * as table t describes them. where prefixes names in messages ("limits.",
 * "listeners[1].", or "" at the top level).
 */
void
pst__conf_parse_group(struct pst__ctx *x, const config_setting_t *g,
                      const struct pst__directive *t, void *base,
                      const char *where)
{
    unsigned n = (unsigned)config_setting_length(g);

    for (unsigned i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(g, i);
        const char *name = config_setting_name(s);
        const struct pst__directive *d = find_directive(t, name);

        if (d == NULL) {
            const char *near = suggest(t, name);
            char hint[96] = "";
            if (near != NULL)
                snprintf(hint, sizeof(hint), " (did you mean '%s'?)", near);
            if (where[0] == '\0')
                pst__conf_error(x, s, "unknown top-level key '%s'%s", name,
                                hint);
            else
                pst__conf_error(x, s, "unknown key '%s' in %.*s%s", name,
                                (int)strlen(where) - 1, where, hint);
            continue;
        }
        switch (d->type) {
        case PST__C_STR:
        case PST__C_PATH:
        case PST__C_WORD:
            set_string(x, s, where, d, base);
            break;
        case PST__C_UINT:
        case PST__C_SIZE:
            set_number(x, s, where, d, base);
            break;
        case PST__C_BOOL:
            if (config_setting_type(s) != CONFIG_TYPE_BOOL)
                wrong_type(x, s, where, d->name, "true or false");
            else
                *FIELD(base, d->off, bool) = config_setting_get_bool(s) != 0;
            break;
        case PST__C_ENUM:
            set_enum(x, s, where, d, base);
            break;
        case PST__C_CIDRLIST:
            set_cidrlist(x, s, where, d, base);
            break;
        case PST__C_SECTION: {
            char sw[160];
            if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
                wrong_type(x, s, where, d->name, "a group { ... }");
                break;
            }
            snprintf(sw, sizeof(sw), "%s%s.", where, d->name);
            pst__conf_parse_group(x, s, d->sub, FIELD(base, d->off, char), sw);
            break;
        }
        case PST__C_GROUPLIST:
            set_grouplist(x, s, where, d, base);
            break;
        case PST__C_FILTERS:
            set_filters(x, s, d, base);
            break;
        }
    }
    for (; t->name != NULL; t++)
        if ((t->flags & PST__F_REQUIRED) &&
            config_setting_get_member(g, t->name) == NULL)
            pst__conf_error(x, g, "%.*s: missing '%s'", (int)strlen(where) - 1,
                            where, t->name);
}

/* pst__conf_apply_defaults - every default of table t into base. */
void
pst__conf_apply_defaults(struct pst__ctx *x, const struct pst__directive *t,
                         void *base)
{
    for (; t->name != NULL; t++) {
        switch (t->type) {
        case PST__C_STR:
        case PST__C_PATH:
        case PST__C_WORD: {
            char **f = FIELD(base, t->off, char *);
            free(*f);
            *f = NULL;
            if (t->def_str == NULL)
                break;
            *f = t->type == PST__C_PATH ? pst__conf_abspath(x, t->def_str)
                                        : pst_xstrdup(t->def_str);
            if (t->fix != NULL && t->fix(x, NULL, t->name, f) < 0) {
                free(*f);
                *f = NULL;
            }
            break;
        }
        case PST__C_UINT:
            *FIELD(base, t->off, unsigned) = (unsigned)t->def_num;
            break;
        case PST__C_SIZE:
            *FIELD(base, t->off, uint64_t) = t->def_num;
            break;
        case PST__C_BOOL:
            *FIELD(base, t->off, bool) = t->def_num != 0;
            break;
        case PST__C_ENUM:
            *FIELD(base, t->off, int) = (int)t->def_num;
            break;
        case PST__C_CIDRLIST: {
            struct pst_cidr **f = FIELD(base, t->off, struct pst_cidr *);
            size_t n = 0;
            while (t->def_list != NULL && t->def_list[n] != NULL)
                n++;
            free(*f);
            *f = pst_xcalloc(n ? n : 1, sizeof(**f));
            for (size_t i = 0; i < n; i++)
                if (pst_cidr_parse(&(*f)[i], t->def_list[i]) < 0)
                    abort(); /* a bad default is a bug in the table */
            *FIELD(base, t->count_off, size_t) = n;
            break;
        }
        case PST__C_SECTION:
            pst__conf_apply_defaults(x, t->sub, FIELD(base, t->off, char));
            break;
        case PST__C_GROUPLIST:
            /* Lists of groups start empty; pst__conf_finish supplies a
               default list where a section has one (listeners). */
            break;
        case PST__C_FILTERS:
            break;                  /* no filters unless configured */
        }
    }
}

/* pst__conf_free_table - free everything table t owns in base. */
void
pst__conf_free_table(const struct pst__directive *t, void *base)
{
    for (; t->name != NULL; t++) {
        switch (t->type) {
        case PST__C_STR:
        case PST__C_PATH:
        case PST__C_WORD:
        case PST__C_CIDRLIST:
            free(*FIELD(base, t->off, void *));
            *FIELD(base, t->off, void *) = NULL;
            break;
        case PST__C_SECTION:
            pst__conf_free_table(t->sub, FIELD(base, t->off, char));
            break;
        case PST__C_GROUPLIST: {
            char *v = *FIELD(base, t->off, char *);
            size_t n = *FIELD(base, t->count_off, size_t);
            for (size_t i = 0; i < n; i++)
                pst__conf_free_table(t->sub, v + i * t->elem_size);
            free(v);
            *FIELD(base, t->off, char *) = NULL;
            *FIELD(base, t->count_off, size_t) = 0;
            break;
        }
        case PST__C_FILTERS: {
            void **f = FIELD(base, t->off, void *);
            if (*f != NULL && filters_hook != NULL)
                filters_hook->free(*f);
            *f = NULL;
            break;
        }
        default:
            break;
        }
    }
}

static void
ctx_init(struct pst__ctx *x, const char *path, struct pst_err *err)
{
    memset(x, 0, sizeof(*x));
    x->path = path;
    x->err = err;
    x->cwd = getcwd(NULL, 0);
}

static void
ctx_free(struct pst__ctx *x)
{
    free(x->cwd);
    free(x->raw_file);
    free(x->raw);
}

static void
conf_free(struct pst_conf *c)
{
    pst__conf_free_table(pst__conf_root, c);
    free(c->path);
    free(c);
}

/*
 * pst_conf_load - parse and validate path; see conf.h. The file is read
 * with libconfig; @include is resolved against the file's own directory.
 */
struct pst_conf *
pst_conf_load(const char *path, struct pst_err *err)
{
    struct pst__ctx x;
    struct pst_conf *c = NULL;
    config_t cf;
    unsigned errs = err->count;
    char *dir = NULL;
    struct stat st;
    FILE *f;

    ctx_init(&x, path, err);
    config_init(&cf);
    f = fopen(path, "r");
    if (f == NULL) {
        pst_err_add(err, path, 0, "cannot open: %s", strerror(errno));
        goto fail;
    }
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        pst_err_add(err, path, 0, "cannot read: is a directory");
        fclose(f);
        goto fail;
    }
    if (fstat(fileno(f), &st) == 0 && st.st_size > (off_t)PST_CONF_FILE_MAX) {
        pst_err_add(err, path, 0, "larger than %u bytes", PST_CONF_FILE_MAX);
        fclose(f);
        goto fail;
    }
    fclose(f);
    if (x.cwd == NULL)
        pst_err_add(err, path, 0,
                    "cannot resolve relative paths: working directory: %s",
                    strerror(errno));
    /* @include names are relative to this file's directory */
    if (strrchr(path, '/') != NULL) {
        dir = pst_xstrndup(path, (size_t)(strrchr(path, '/') - path + 1));
        config_set_include_dir(&cf, dir);
        x.incdir = dir;
    }
    if (!config_read_file(&cf, path)) {
        char buf[4096];
        pst_err_add(err,
                    source_name(&x, config_error_file(&cf), buf, sizeof(buf)),
                    config_error_line(&cf), "%s", config_error_text(&cf));
        goto fail;
    }
    x.root = config_root_setting(&cf);
    c = pst_xcalloc(1, sizeof(*c));
    c->refs = 1;
    c->path = pst__conf_abspath(&x, path);
    pst__conf_apply_defaults(&x, pst__conf_root, c);
    pst__conf_parse_group(&x, x.root, pst__conf_root, c, "");
    pst__conf_finish(&x, c);
    if (err->count == errs)
        load_filters(&x, c);
    if (err->count != errs)
        goto fail;
    config_destroy(&cf);
    free(dir);
    ctx_free(&x);
    return c;

fail:
    if (c != NULL)
        conf_free(c);
    config_destroy(&cf);
    free(dir);
    ctx_free(&x);
    return NULL;
}

/* pst_conf_defaults - a generation with every default and no file. */
struct pst_conf *
pst_conf_defaults(void)
{
    struct pst__ctx x;
    struct pst_err err = {0};
    struct pst_conf *c = pst_xcalloc(1, sizeof(*c));

    ctx_init(&x, "(defaults)", &err);
    c->refs = 1;
    pst__conf_apply_defaults(&x, pst__conf_root, c);
    pst__conf_finish(&x, c);
    /* Defaults are checked by the unit tests; nothing here can fail. */
    pst_err_free(&err);
    ctx_free(&x);
    return c;
}

struct pst_conf *
pst_conf_ref(struct pst_conf *c)
{
    c->refs++;
    return c;
}

void
pst_conf_unref(struct pst_conf *c)
{
    if (c == NULL)
        return;
    if (--c->refs == 0)
        conf_free(c);
}
