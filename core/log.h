/*
 * log.h - one event per line: "LEVEL sess=<hex> msg=<qid> event=<e> k=v ...",
 * or the same fields as one JSON object per line (logging.format = "json":
 * {"ts":..,"prog":..,"pid":..,"level":..,"sess":..,"event":..,...}, every
 * value a string, client text decoded from its quoting and re-escaped as
 * JSON; docs/OPERATIONS.md).
 *
 * Callers compose the key=value text; client-supplied strings go through
 * pst_log_quote first (escaped, truncated, never raw). Message bodies and
 * AUTH data are never logged. Output is stderr with a timestamp, or syslog
 * when configured. Logging is called only from the loop thread or with a
 * whole line at once, so lines never interleave.
 */
#ifndef PST_CORE_LOG_H
#define PST_CORE_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum pst_log_level { PST_LOG_ERR, PST_LOG_WARN, PST_LOG_INFO, PST_LOG_DEBUG };
enum pst_log_format { PST_LOG_TEXT, PST_LOG_JSON };

void pst_log_open(const char *ident, int use_syslog, int facility,
                  enum pst_log_level min);
void pst_log_set_level(enum pst_log_level min);
/* pst_log_set_format - key=value lines (the default) or JSON objects. */
void pst_log_set_format(enum pst_log_format f);
/*
 * pst_log_json - the JSON object for one line of key=value text (what
 * callers pass to pst_log) into out (outsz > 64), NUL-terminated, without
 * a newline; ts/prog/pid/level first when given (prog NULL: left out).
 * A token that is not key=value joins a "text" field; a repeated key gets
 * a "_2" suffix; an object that would not fit ends with "truncated":"yes".
 * Returns the length.
 */
size_t pst_log_json(char *out, size_t outsz, const char *ts, const char *prog,
                    int pid, const char *level, const char *text);
int pst_log_enabled(enum pst_log_level lvl);
/*
 * pst_log_batch - on: the calling thread's lines below error level wait in
 * a bounded buffer (PIPE_BUF octets of whole lines) for pst_log_flush, for
 * the next line that would not fit, for an error-level line or for
 * another thread's line, whichever comes first; the order of all lines
 * stays the order of the calls. Off: the buffer is flushed first. For the
 * loop thread, which flushes before every wait (core/log.c). Text and JSON
 * lines on stderr only: syslog is not batched. The buffer is also flushed
 * at exit(3).
 */
void pst_log_batch(bool on);
/* pst_log_flush - write what the batch holds, now. */
void pst_log_flush(void);
void pst_log(enum pst_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * pst_log_quote - write s (len bytes) into dst as a double-quoted string
 * with '"', '\\', and bytes outside 0x21..0x7e escaped (\xNN), truncated to
 * fit dstsz (marked with "..."). Returns dst.
 */
char *pst_log_quote(char *dst, size_t dstsz, const char *s, size_t len);

#define pst_err(...) pst_log(PST_LOG_ERR, __VA_ARGS__)
#define pst_warn(...) pst_log(PST_LOG_WARN, __VA_ARGS__)
#define pst_info(...) pst_log(PST_LOG_INFO, __VA_ARGS__)
#define pst_debug(...)                                                         \
    do {                                                                       \
        if (pst_log_enabled(PST_LOG_DEBUG))                                    \
            pst_log(PST_LOG_DEBUG, __VA_ARGS__);                               \
    } while (0)

#endif
