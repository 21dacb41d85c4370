/*
 * util.h - allocation that cannot fail, error reports with a location, and
 * small string helpers shared by every folder.
 *
 * Allocation failure is a broken environment, not a recoverable condition:
 * pst_x* abort. Sizes that come from clients are checked against their
 * limits before any allocation.
 */
#ifndef PST_CORE_UTIL_H
#define PST_CORE_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define PST_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* PST_UNDER_ASAN - defined in an AddressSanitizer build (clang or gcc) */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PST_UNDER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(PST_UNDER_ASAN)
#define PST_UNDER_ASAN 1
#endif
#define PST_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PST_MAX(a, b) ((a) > (b) ? (a) : (b))

void *pst_xmalloc(size_t n);
void *pst_xcalloc(size_t nmemb, size_t size);
void *pst_xrealloc(void *p, size_t n);
char *pst_xstrdup(const char *s);
char *pst_xstrndup(const char *s, size_t n);
char *pst_xasprintf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/*
 * An error report: a message plus, for config errors, the file and line
 * it concerns. Functions that can fail for reasons a user must read take a
 * struct pst_err * and fill it; several errors can be collected (check-config
 * reports them all).
 */
#define PST_ERR_MAX 64
struct pst_err {
    unsigned count;                 /* errors recorded (may exceed max) */
    char *msgs[PST_ERR_MAX];        /* "file:line: text" */
};

void pst_err_add(struct pst_err *e, const char *file, int line,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void pst_err_free(struct pst_err *e);
const char *pst_err_first(const struct pst_err *e);

/*
 * pst_map_lines - read the map file f (named file in errors: a password
 * file, a sender-login map, a recipient list) and call fn for each line
 * that says something: blanks and the line end trimmed, empty lines and
 * comments skipped ('#' first on the line, or anywhere when
 * inline_comments). A line longer than max octets is reported
 * ("file:N: line longer than MAX octets") and skipped. fn gets the line
 * (writable) and its number, and returns 0 or a negative error after
 * filling err; reading goes on, so every bad line is reported. Returns 0
 * or the last error. The caller opens and closes f.
 */
int pst_map_lines(FILE *f, const char *file, size_t max, bool inline_comments,
                  int (*fn)(void *arg, char *line, int lineno,
                            struct pst_err *err),
                  void *arg, struct pst_err *err);

/* pst_write_all - write n bytes to fd, going on after short writes and
 * EINTR; 0 or -errno (-EIO if write makes no progress). */
int pst_write_all(int fd, const void *p, size_t n);

/* pst_rand64 - the next value of a xorshift64* generator whose state was
 * seeded by pst_rand_seed: for jitter and spreading only, never for
 * anything an attacker must not guess. */
uint64_t pst_rand64(uint64_t *state);
/* pst_rand_seed - a nonzero seed (getrandom, else the clock and pid). */
uint64_t pst_rand_seed(void);

/* pst_stop_signals_block - block (true) or unblock SIGTERM, SIGINT and
 * SIGHUP in the calling thread. Only the loop thread takes them, and only
 * while it serves: libuv's handler for them is gone once their handles
 * close at exit, and one landing then would take the default action. */
void pst_stop_signals_block(bool block);

/* pst_line_span - how many octets of p[0..n) come before the first CR or
 * LF (n if there is none). memchr's vector scan in 256-octet windows: a
 * text without one of the two (all bare LFs, say) costs no rescans. */
size_t pst_line_span(const char *p, size_t n);

/* ASCII-only case helpers: SMTP verbs and domains are ASCII. */
int pst_strcaseeq(const char *a, const char *b);
int pst_strncaseeq(const char *a, const char *b, size_t n);
static inline int
pst_tolower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

#endif
