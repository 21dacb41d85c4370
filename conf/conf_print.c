/*
 * conf_print.c - write a generation back out in libconfig syntax, all of it
 * or only what differs from the defaults (postern -n), walking the same
 * directive tables the loader uses.
 *
 * The output loads again to the same generation (secrets excepted: they
 * print as "(hidden)"): paths are already
 * absolute, words are written as words, sizes as plain integers (with the
 * L suffix beyond 32 bits). A list of groups (listeners, certificates,
 * domains) differs from its default as a whole and is printed whole,
 * but for the settings its groups rarely use (PST__F_QUIET), which are
 * left out where they hold their defaults.
 */
#include "conf/conf_table.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define FIELD(base, off, type) ((const type *)((const char *)(base) + (off)))

static void
put_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fputc('\\', f);
        if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void
put_u64(FILE *f, uint64_t v)
{
    fprintf(f, "%" PRIu64 "%s", v, v > INT32_MAX ? "L" : "");
}

static const char *
word_of(const struct pst__word *w, int v)
{
    for (; w->word != NULL; w++)
        if (w->value == v)
            return w->word;
    return "?";
}

static int
str_eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) ||
           (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int table_eq(const struct pst__directive *t, const void *a,
                    const void *b);

/* field_eq - is directive d's value the same in a and b? */
static int
field_eq(const struct pst__directive *d, const void *a, const void *b)
{
    switch (d->type) {
    case PST__C_STR:
    case PST__C_PATH:
    case PST__C_WORD:
        return str_eq(*FIELD(a, d->off, char *), *FIELD(b, d->off, char *));
    case PST__C_UINT:
        return *FIELD(a, d->off, unsigned) == *FIELD(b, d->off, unsigned);
    case PST__C_SIZE:
        return *FIELD(a, d->off, uint64_t) == *FIELD(b, d->off, uint64_t);
    case PST__C_BOOL:
        return *FIELD(a, d->off, bool) == *FIELD(b, d->off, bool);
    case PST__C_ENUM:
        return *FIELD(a, d->off, int) == *FIELD(b, d->off, int);
    case PST__C_CIDRLIST: {
        size_t n = *FIELD(a, d->count_off, size_t);
        const struct pst_cidr *ca = *FIELD(a, d->off, struct pst_cidr *);
        const struct pst_cidr *cb = *FIELD(b, d->off, struct pst_cidr *);
        if (n != *FIELD(b, d->count_off, size_t))
            return 0;
        for (size_t i = 0; i < n; i++)
            if (ca[i].prefix != cb[i].prefix ||
                !pst_ip_equal(&ca[i].ip, &cb[i].ip))
                return 0;
        return 1;
    }
    case PST__C_SECTION:
        return table_eq(d->sub, FIELD(a, d->off, char), FIELD(b, d->off, char));
    case PST__C_GROUPLIST: {
        size_t n = *FIELD(a, d->count_off, size_t);
        const char *ea = *FIELD(a, d->off, char *);
        const char *eb = *FIELD(b, d->off, char *);
        if (n != *FIELD(b, d->count_off, size_t))
            return 0;
        for (size_t i = 0; i < n; i++)
            if (!table_eq(d->sub, ea + i * d->elem_size, eb + i * d->elem_size))
                return 0;
        return 1;
    }
    case PST__C_FILTERS:
        return *FIELD(a, d->off, void *) == *FIELD(b, d->off, void *);
    }
    return 0;
}

static int
table_eq(const struct pst__directive *t, const void *a, const void *b)
{
    for (; t->name != NULL; t++)
        if (!field_eq(t, a, b))
            return 0;
    return 1;
}

static void print_table(FILE *f, const struct pst__directive *t,
                        const void *base, const void *def, int depth,
                        int inline_group);

static void
print_value(FILE *f, const struct pst__directive *d, const void *base,
            const void *def, int depth)
{
    switch (d->type) {
    case PST__C_STR:
    case PST__C_PATH:
    case PST__C_WORD:
        /* secrets stay in the file they came from, not in terminal logs */
        put_string(f, (d->flags & PST__F_SECRET) ? "(hidden)"
                                                 : *FIELD(base, d->off, char *));
        break;
    case PST__C_UINT:
        fprintf(f, "%u", *FIELD(base, d->off, unsigned));
        break;
    case PST__C_SIZE:
        put_u64(f, *FIELD(base, d->off, uint64_t));
        break;
    case PST__C_BOOL:
        fputs(*FIELD(base, d->off, bool) ? "true" : "false", f);
        break;
    case PST__C_ENUM:
        put_string(f, word_of(d->words, *FIELD(base, d->off, int)));
        break;
    case PST__C_CIDRLIST: {
        size_t n = *FIELD(base, d->count_off, size_t);
        const struct pst_cidr *c = *FIELD(base, d->off, struct pst_cidr *);
        fputs("[", f);
        for (size_t i = 0; i < n; i++) {
            char ip[PST_IP_STRLEN];
            fprintf(f, "%s\"%s/%u\"", i ? ", " : " ",
                    pst_ip_str(&c[i].ip, ip, sizeof(ip)), c[i].prefix);
        }
        fputs(n ? " ]" : "]", f);
        break;
    }
    case PST__C_SECTION:
        fputs("{\n", f);
        print_table(f, d->sub, FIELD(base, d->off, char),
                    def ? FIELD(def, d->off, char) : NULL, depth + 1, 0);
        fprintf(f, "%*s}", depth * 4, "");
        break;
    case PST__C_GROUPLIST: {
        size_t n = *FIELD(base, d->count_off, size_t);
        const char *e = *FIELD(base, d->off, char *);
        fputs("(", f);
        for (size_t i = 0; i < n; i++) {
            fprintf(f, "%s\n%*s{", i ? "," : "", (depth + 1) * 4, "");
            print_table(f, d->sub, e + i * d->elem_size, NULL, depth + 1, 1);
            fputs(" }", f);
        }
        fprintf(f, n ? "\n%*s)" : ")", depth * 4, "");
        break;
    }
    case PST__C_FILTERS:
        break;                      /* never printed: see is_unset */
    }
}

static int
is_unset(const struct pst__directive *d, const void *base)
{
    /* The filters list is owned by the modules' own parsers and has no
     * form here: it is not printed (the config file is its source). */
    if (d->type == PST__C_FILTERS)
        return 1;
    return (d->type == PST__C_STR || d->type == PST__C_PATH ||
            d->type == PST__C_WORD) &&
           *FIELD(base, d->off, char *) == NULL;
}

/* at_default - a PST__F_QUIET setting of base holds its table default. */
static int
at_default(const struct pst__directive *d, const void *base)
{
    switch (d->type) {
    case PST__C_BOOL:
        return *FIELD(base, d->off, bool) == (d->def_num != 0);
    case PST__C_UINT:
        return *FIELD(base, d->off, unsigned) == d->def_num;
    case PST__C_CIDRLIST:
        return d->def_list == NULL && *FIELD(base, d->count_off, size_t) == 0;
    default:
        return 0;
    }
}

/*
 * print_table - base's settings; with def, only those that differ from
 * def. inline_group: one line, for the groups inside a list.
 */
static void
print_table(FILE *f, const struct pst__directive *t, const void *base,
            const void *def, int depth, int inline_group)
{
    for (; t->name != NULL; t++) {
        if (is_unset(t, base))
            continue; /* unset strings have no libconfig form */
        if (def != NULL && field_eq(t, base, def))
            continue;
        if (inline_group && (t->flags & PST__F_QUIET) && at_default(t, base))
            continue;
        if (inline_group)
            fprintf(f, " %s = ", t->name);
        else
            fprintf(f, "%*s%s = ", depth * 4, "", t->name);
        print_value(f, t, base, def, depth);
        fputs(inline_group ? ";" : ";\n", f);
    }
}

/*
 * pst_conf_print - c in libconfig syntax; only_changed: just the settings
 * that differ from pst_conf_defaults() (postern -n).
 */
void
pst_conf_print(FILE *f, const struct pst_conf *c, bool only_changed)
{
    struct pst_conf *def = only_changed ? pst_conf_defaults() : NULL;
    print_table(f, pst__conf_root, c, def, 0, 0);
    pst_conf_unref(def);
}

/* pst_conf_setting_write - see conf.h. */
void
pst_conf_setting_write(FILE *f, const void *setting)
{
    const config_setting_t *s = setting;
    int n = config_setting_length(s);
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP:
        fputs("{ ", f);
        for (int i = 0; i < n; i++) {
            const config_setting_t *m = config_setting_get_elem(s, (unsigned)i);
            fprintf(f, "%s = ", config_setting_name(m));
            pst_conf_setting_write(f, m);
            fputs("; ", f);
        }
        fputc('}', f);
        break;
    case CONFIG_TYPE_ARRAY:
    case CONFIG_TYPE_LIST: {
        bool list = config_setting_type(s) == CONFIG_TYPE_LIST;
        fputc(list ? '(' : '[', f);
        for (int i = 0; i < n; i++) {
            if (i)
                fputs(", ", f);
            pst_conf_setting_write(f, config_setting_get_elem(s, (unsigned)i));
        }
        fputc(list ? ')' : ']', f);
        break;
    }
    case CONFIG_TYPE_INT:
        fprintf(f, "%d", config_setting_get_int(s));
        break;
    case CONFIG_TYPE_INT64:
        fprintf(f, "%lldL", config_setting_get_int64(s));
        break;
    case CONFIG_TYPE_FLOAT: {
        char b[40];
        snprintf(b, sizeof(b), "%.17g", config_setting_get_float(s));
        fputs(b, f);
        if (!strpbrk(b, ".eEn"))    /* "2" would read back an int */
            fputs(".0", f);
        break;
    }
    case CONFIG_TYPE_BOOL:
        fputs(config_setting_get_bool(s) ? "true" : "false", f);
        break;
    case CONFIG_TYPE_STRING:
        put_string(f, config_setting_get_string(s));
        break;
    default:
        fputs("()", f);
        break;
    }
}
