/*
 * log.c - line-at-a-time logging to stderr or syslog.
 *
 * Each line is formatted into one buffer and written with one write(2), so
 * lines from the loop and from worker threads never interleave.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static int use_syslog;
static enum pst_log_level min_level = PST_LOG_INFO;
static const char *level_names[] = {"error", "warn", "info", "debug"};

void
pst_log_open(const char *ident, int syslog_on, int facility,
             enum pst_log_level min)
{
    use_syslog = syslog_on;
    min_level = min;
    if (use_syslog)
        openlog(ident, LOG_PID | LOG_NDELAY, facility);
}

void
pst_log_set_level(enum pst_log_level min)
{
    min_level = min;
}

int
pst_log_enabled(enum pst_log_level lvl)
{
    return lvl <= min_level;
}

void
pst_log(enum pst_log_level lvl, const char *fmt, ...)
{
    static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    char line[4096];
    size_t n = 0;
    va_list ap;

    if (lvl > min_level)
        return;
    if (!use_syslog) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        n += snprintf(line + n, sizeof(line) - n, ".%03ldZ postern[%d]: ",
                      ts.tv_nsec / 1000000, (int)getpid());
    }
    n += snprintf(line + n, sizeof(line) - n, "%s ", level_names[lvl]);
    va_start(ap, fmt);
    int w = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (w < 0)
        w = 0;
    n = (n + (size_t)w < sizeof(line) - 1) ? n + (size_t)w : sizeof(line) - 2;
    if (use_syslog) {
        line[n] = '\0';
        syslog(prio[lvl], "%s", line);
        return;
    }
    line[n++] = '\n';
    ssize_t rc = write(STDERR_FILENO, line, n);
    (void)rc;
}

char *
pst_log_quote(char *dst, size_t dstsz, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (dstsz < 8) {
        if (dstsz)
            dst[0] = '\0';
        return dst;
    }
    dst[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[4];
        size_t el;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            el = 2;
        } else if (c < 0x20 || c > 0x7e) {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[c >> 4];
            esc[3] = hex[c & 15];
            el = 4;
        } else {
            esc[0] = (char)c;
            el = 1;
        }
        if (o + el + 5 > dstsz) {       /* room for ..."\0 */
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(dst + o, esc, el);
        o += el;
    }
    dst[o++] = '"';
    dst[o] = '\0';
    return dst;
}
