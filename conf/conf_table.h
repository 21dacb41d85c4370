/*
 * conf_table.h - internal to conf/: the directive table format shared by the
 * table engine (conf.c) and postern's own tables (conf_tables.c).
 *
 * A directive names one setting of a section: its type, where its value
 * lives (an offset from the section's struct), its default and its range
 * (Postfix CONFIG_*_TABLE, nginx ngx_command_t). The engine applies the
 * defaults, walks a libconfig group against a table (unknown keys, wrong
 * types and out-of-range values are reported, never fatal, so one pass finds
 * every error), and frees what a table owns. Sections and lists of groups
 * nest by pointing at another table.
 */
#ifndef PST_CONF_CONF_TABLE_H
#define PST_CONF_CONF_TABLE_H

#include <libconfig.h>

#include "conf/conf.h"

enum pst__ctype {
    PST__C_STR,       /* char *, no control characters */
    PST__C_PATH,      /* char *, stored absolute */
    PST__C_UINT,      /* unsigned, min..max */
    PST__C_SIZE,      /* uint64_t, integer or "50M"-style text, min..max */
    PST__C_BOOL,      /* bool */
    PST__C_ENUM,      /* int (or a C enum), one of words[] */
    PST__C_WORD,      /* char *, one of words[], stored as the word */
    PST__C_CIDRLIST,  /* struct pst_cidr * plus size_t count at count_off */
    PST__C_SECTION,   /* a group parsed with sub, struct at off */
    PST__C_GROUPLIST, /* array of elem_size structs, each parsed with sub */
    PST__C_FILTERS,   /* void * at off, built by the registered filters
                         hook (conf.h pst_conf_set_filters_hook) */
};

/* flags */
#define PST__F_REQUIRED 0x01 /* must be present (in a group of a list) */
#define PST__F_EMPTY_OK 0x02 /* "" accepted */
#define PST__F_EXISTS 0x04   /* path must name an existing file */
/* a list element may be a bare string that sets the first directive */
#define PST__F_SHORTHAND 0x08
#define PST__F_SECRET 0x10   /* never printed (postern -n shows a mask) */
/* in a group of a list, printed only when it differs from its default
 * (a setting most groups leave alone: a listener's proxy settings) */
#define PST__F_QUIET 0x20

struct pst__word {
    const char *word;
    int value;
};

/* One load: where messages go and what relative paths are relative to. */
struct pst__ctx {
    const char *path;   /* file name as given, for messages */
    const char *incdir; /* directory of path with '/', or NULL */
    struct pst_err *err;
    char *cwd;                    /* NULL: getcwd failed */
    const config_setting_t *root; /* NULL for pst_conf_defaults */
    char *raw_file;               /* cached source text, see pst__raw_int */
    char *raw;
    const config_setting_t *filters; /* loaded last, by pst_conf_load */
};

struct pst__directive;

/*
 * A fix hook checks a string value beyond its type and may replace it
 * (normalise a domain, resolve the directory of a route). s is NULL when
 * the value is a default; name is the setting's full name for messages
 * ("relay.domains[2].domain"). Returns 0, or -1 after reporting an error.
 */
typedef int (*pst__fix_fn)(struct pst__ctx *x, const config_setting_t *s,
                           const char *name, char **value);

struct pst__directive {
    const char *name;
    enum pst__ctype type;
    unsigned flags;
    size_t off;                       /* field, from the section's struct */
    size_t count_off;                 /* CIDRLIST, GROUPLIST: size_t count */
    const char *def_str;              /* STR, PATH, WORD: default or NULL */
    uint64_t def_num;                 /* UINT, SIZE, BOOL, ENUM */
    uint64_t min, max;                /* numbers; lists: max element count */
    const struct pst__word *words;    /* ENUM, WORD; ends with {NULL} */
    const char *const *def_list;      /* CIDRLIST default; ends with NULL */
    const struct pst__directive *sub; /* SECTION, GROUPLIST; ends {NULL} */
    size_t elem_size;                 /* GROUPLIST */
    long line_off;   /* GROUPLIST: int line in element, or -1 */
    pst__fix_fn fix; /* STR, PATH, WORD */
};

/* conf.c: the engine */
void pst__conf_error(struct pst__ctx *x, const config_setting_t *s,
                     const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pst__conf_apply_defaults(struct pst__ctx *x,
                              const struct pst__directive *t, void *base);
void pst__conf_parse_group(struct pst__ctx *x, const config_setting_t *g,
                           const struct pst__directive *t, void *base,
                           const char *where);
void pst__conf_free_table(const struct pst__directive *t, void *base);
char *pst__conf_abspath(struct pst__ctx *x, const char *p);

/* conf_tables.c: postern's tables and the checks that span settings */
extern const struct pst__directive pst__conf_root[];
void pst__conf_finish(struct pst__ctx *x, struct pst_conf *c);

#endif
