/*
 * attach.h - internal to the attachments module (filters/attachments.c,
 * filters/attach_scan.c, tests/fuzz/fuzz_attach.c): the policy as
 * configured, the facts about one file, and the scanner that gathers them
 * from a part's decoded content on a worker thread.
 *
 * A FILE is anything a recipient could save and open: a leaf part, a
 * uuencoded block inside a text part, a member of an archive (at any
 * nesting depth). Each file is judged on its own by the first rule that
 * matches it (att_judge); a part's outcome is the strictest over all its
 * files (reject > quarantine > strip > pass), so an `allow` rule exempts
 * the file it matches, never that file's siblings or members.
 *
 * Threads: the conf is immutable after configure and shared by the loop
 * thread and the workers (its metrics series are lock-free). att_judge
 * allocates its own PCRE2 match data, so it runs on any thread. The
 * scanner (att_scan_*) runs on a worker and owns its job; libmagic's
 * magic_t is one per worker thread (att_magic).
 */
#ifndef PST_FILTERS_ATTACH_H
#define PST_FILTERS_ATTACH_H

#define PCRE2_CODE_UNIT_WIDTH 8

#include <pcre2.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/metrics.h"
#include "filters/filter.h"

#define ATT_NAME_MAX 1024           /* octets of a normalised file name */
#define ATT_NAMES_MAX 8             /* names kept per part */
#define ATT_TYPE_MAX 128            /* octets of a MIME type */

/* Actions, in increasing strictness (the order is used). */
enum att_action { ATT_PASS, ATT_STRIP, ATT_QUARANTINE, ATT_REJECT };

enum att_where { ATT_W_ANY, ATT_W_PART, ATT_W_ARCHIVE };

/* Archive formats (bits), by the names the config uses. */
enum {
    ATT_AR_ZIP = 1 << 0,
    ATT_AR_7Z = 1 << 1,
    ATT_AR_RAR = 1 << 2,
    ATT_AR_TAR = 1 << 3,
    ATT_AR_GZIP = 1 << 4,
    ATT_AR_BZIP2 = 1 << 5,
    ATT_AR_XZ = 1 << 6,
};

struct att_strv {
    char **v;
    size_t n;
};

struct att_rule {
    char *label;                    /* `name`, or "line N" */
    int line;
    enum att_action action;         /* `allow` is ATT_PASS */
    enum att_where where;
    struct att_strv exts;           /* lowercase, no dot */
    struct att_strv globs;          /* lowercase fnmatch patterns */
    pcre2_code *re;                 /* on the normalised name, caseless */
    struct att_strv declared;       /* type patterns (fnmatch, lowercase) */
    struct att_strv detected;
    int mismatch;                   /* -1 not a condition, else 0/1 */
    bool has_size;
    uint64_t larger_than;           /* decoded octets */
    bool unnamed;                   /* matches only files without a name */
    int signed_action;              /* -1: the module's `signed` */
    bool needs_name;                /* exts, globs or regex given */
};

struct att_counters {                   /* core/metrics.h series */
    struct pst_metric *files;           /* files judged */
    struct pst_metric *magic, *archives; /* libmagic runs, archives opened */
    struct pst_metric *stripped;        /* parts removed */
    struct pst_metric *rejected;        /* messages refused */
    struct pst_metric *quarantined;     /* messages held */
    struct pst_metric *encrypted;       /* encrypted archives, members or
                                           messages */
    struct pst_metric *limits;          /* archive limits hit */
    struct pst_metric *errors;          /* archives that did not parse */
};

struct att_conf {
    uint64_t id;                    /* unique per configure (a helper
                                       serves one conf: attach_jail.c) */
    char *text;                     /* the module's settings, libconfig
                                       text: what a helper configures
                                       itself from */
    char *helper_path;              /* postern-archive, if archives are */
    int exe_fd;                     /* opened O_PATH, or -1 */
    struct att_rule *rules;
    size_t nrules;
    pcre2_match_context *mctx;
    unsigned detect_bytes;          /* what libmagic sees of each file */
    bool uuencode;                  /* look for uuencoded files in text */
    bool need_magic;                /* a rule looks at detected types, or
                                       archives are inspected */
    bool magic_text;                /* a detected pattern may match a
                                       text type: libmagic sees text too */
    unsigned scan_time_ms;          /* one message's whole scan */
    enum att_action signed_action;  /* a strip below multipart/signed */
    enum att_action encrypted_msg;  /* multipart/encrypted, pkcs7-mime */
    struct {
        unsigned formats;           /* ATT_AR_*; 0: archives not opened */
        unsigned depth;             /* nesting below the part */
        unsigned max_members;
        uint64_t max_bytes;         /* uncompressed, all members */
        unsigned max_ratio;         /* uncompressed / compressed */
        uint64_t nested_max;        /* a nested archive held in memory */
        uint64_t memory;            /* octets an inspection may allocate
                                       (attach_jail.c) */
        enum att_action on_limit, on_error, on_encrypted;
    } ar;
    struct att_counters n;
};

/* The facts about one file, for att_judge. */
struct att_file {
    const char *name;               /* normalised, NULL if none */
    const char *declared;           /* lowercase type/subtype, or NULL */
    const char *detected;           /* libmagic's MIME type, or NULL */
    uint64_t size;
    bool size_known;
    bool member;                    /* inside an archive */
};

/* att_judge - index of the first rule matching f, or -1. */
int att_judge(const struct att_conf *c, const struct att_file *f);
/* att_mismatch - whether a detected type contradicts the declared one. */
bool att_mismatch(const char *declared, const char *detected);

/*
 * att_name_normalise - a file name as it is matched: UTF-8 (bad octets
 * become U+FFFD), the last path component, without C0/C1 controls, NUL,
 * bidi and other format characters (U+200B-U+200F, U+202A-U+202E,
 * U+2060-U+206F, U+FEFF, U+00AD, U+061C, U+180E), without leading blanks
 * and trailing dots and blanks. out gets at most ATT_NAME_MAX octets and
 * a NUL; returns its length (0: no name left).
 */
size_t att_name_normalise(const char *in, size_t n, char *out);

/* Names of one part: Content-Disposition filename and Content-Type name
 * of every such field (duplicates included), every value given for them
 * (pst_params_parse's used and alt values), RFC 2231 and RFC 2047
 * decoded, normalised, without repeats. `over`: the part has names
 * beyond these (more than ATT_NAMES_MAX, or parameters past the parser's
 * bounds), judged as an inspection limit (att_consider_names). */
struct att_names {
    char *v[ATT_NAMES_MAX];
    unsigned n;
    bool over;
};
void att_part_names(const struct pst_mime_part *p, struct att_names *out);
void att_names_add(struct att_names *ns, const char *name, size_t n);
void att_names_free(struct att_names *ns);

/* ---- scanning (worker threads) ---- */

/* What a file decided for its part. */
struct att_verdict {
    enum att_action action;         /* ATT_PASS: nothing */
    int rule;                       /* rule index, -1 for the settings */
    const char *why;                /* rule label or "encrypted",
                                       "archive-limit", "archive-error",
                                       "encrypted-message" */
    bool size;                      /* a size rule (552 on reject) */
    char file[256];                 /* the file, printable */
};

/* One leaf, as the job carries it (no pointer into the session). */
struct att_item {
    unsigned part;                  /* index in the message state */
    struct att_names names;
    char declared[ATT_TYPE_MAX];
    uint64_t size;
    struct pst_fbody body;
    bool text;                      /* a text type, no name */
    bool opaque;                    /* an encrypted payload */
    bool read;                      /* content must be read */
    struct att_names uu;            /* uuencoded names seen while the text
                                       streamed (when not read) */
    char detected[ATT_TYPE_MAX];    /* known without reading, or "" */
    struct att_verdict v;
};

struct att_scan {
    const struct att_conf *c;
    struct pst_textsrc *t;
    uint64_t deadline;              /* CLOCK_MONOTONIC ns */
    atomic_bool *cancel;            /* the chain gave up waiting */
    unsigned members;               /* archive members so far */
    uint64_t bytes;                 /* uncompressed octets so far */
    char err[160];                  /* a failure of the scanner itself */
};

/* att_consider - judge f for item it, keeping the strictest outcome. */
void att_consider(const struct att_conf *c, struct att_item *it,
                  const struct att_file *f, const char *shown);
/* att_consider_names - judge f under each of the item's names (as an
 * unnamed file when it has none); names beyond those read give
 * archives.on_limit ("name-limit"). f->name is left set. */
void att_consider_names(const struct att_conf *c, struct att_item *it,
                        struct att_file *f);
/* att_special - an outcome from a setting (encrypted, limits, errors). */
void att_special(struct att_item *it, enum att_action a, const char *why,
                 const char *shown);
/* att_scan_item - read it's content (magic, uuencode, archives) and
 * judge every file found. -1 when the scanner itself failed (s->err). */
int att_scan_item(struct att_scan *s, struct att_item *it);
/* What a helper does with a request (attach_jail.c). */
enum att_jail_op {
    ATT_JAIL_WALK = 1,              /* att_walk_mem(arg: the format) */
    ATT_JAIL_PROBE = 2,             /* report its confinement (tests) */
};
/*
 * att_jail_run - op on the fd's size octets (fd -1 and size 0: none) in
 * this worker thread's helper process, postern-archive (attach_jail.c):
 * at most ar.memory octets more than the helper had, seccomp,
 * s->deadline and s->cancel. What the walk decided about it (its
 * verdict, s->members, s->bytes, s->err, the module's counters) comes
 * back; a helper that does not report gives ar.on_error
 * ("archive-error"), one out of time ar.on_limit ("archive-limit"), both
 * for `shown`.
 */
void att_jail_run(struct att_scan *s, struct att_item *it, const char *shown,
                  enum att_jail_op op, unsigned arg, int fd, uint64_t size,
                  const char *outer);
/* att_jail_stop - end this thread's helper (att_thread_fini). */
void att_jail_stop(void);
/* att_jail_helper_pid - this thread's helper, 0 if none (tests). */
pid_t att_jail_helper_pid(void);
/* In postern-archive: att_jail_settings reads the settings' text the
 * worker sends first (NULL if malformed); att_jail_serve confines the
 * process and answers requests on sock until end of input (it exits). */
char *att_jail_settings(int sock);
#define ATT_SETTINGS_MAX (1u << 20) /* octets of the settings' text */
#define ATT_HELPER_NO_SETTINGS 65   /* its exit status when the settings
                                       do not come or do not configure */
void att_jail_serve(const struct att_conf *c, int sock)
    __attribute__((noreturn));
/* att_walk_mem - walk an archive of format fmt held in memory. */
void att_walk_mem(struct att_scan *s, struct att_item *it, unsigned fmt,
                  const void *p, size_t n, const char *outer);
/* att_scan_archive_mem - inspect an archive held in memory, in this
 * process (fuzzing, tests). */
void att_scan_archive_mem(struct att_scan *s, struct att_item *it,
                          const void *p, size_t n, const char *name);
/* att_uu_line - one line of text (without its LF): the name of a
 * uuencode "begin" line is added to out. */
void att_uu_line(const char *line, size_t n, struct att_names *out);
uint64_t att_now(void);
/* att_binary - octets with control characters other than tab, line ends,
 * form feed and escape: not text. */
bool att_binary(const uint8_t *p, size_t n);
/*
 * att_thread_init, att_thread_fini - on each filter worker thread as it
 * starts and ends (filters/registry.c): load this thread's libmagic
 * handle when a configured policy needs one (att_magic_wanted, set by
 * configure before the workers start), close it at the end. A thread that
 * did not load one loads it on its first use (a policy added by a
 * reload; tests and the fuzzer).
 */
void att_thread_init(void);
void att_thread_fini(void);
extern atomic_bool att_magic_wanted;

#endif
