/*
 * log.c - line-at-a-time logging to stderr or syslog, as key=value text
 * or as JSON objects (log.h).
 *
 * Each line is formatted into one buffer and reaches stderr whole, so
 * lines from the loop and from worker threads never interleave. The loop
 * thread batches (pst_log_batch): its lines collect in one PIPE_BUF-sized
 * buffer, written with one write(2) when the next line would not fit, when
 * the loop is about to wait (pst_log_flush from a prepare handle), on an
 * error-level line, when another thread logs (the batch goes out first,
 * so the order of the lines is the order of the calls) and at exit. Each
 * write is at most PIPE_BUF octets of whole lines, so a pipe shared with
 * other writers never splits one. A JSON
 * line is made from the same key=value text the callers compose, so both
 * formats carry the same fields; it is bounded by PST_LOG_JSON_MAX (an
 * object that would be longer drops its last fields and says so).
 */
#include "core/log.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/util.h"

#define PST_LOG_LINE_MAX 4096
#define PST_LOG_JSON_MAX 16384

static int use_syslog;
static enum pst_log_format format = PST_LOG_TEXT;
static enum pst_log_level min_level = PST_LOG_INFO;
static const char *level_names[] = {"error", "warn", "info", "debug"};
/* the pid in each line, cached: getpid() is a system call, and a message
 * costs about ten lines; a forked child starts again from 0 */
static atomic_int log_pid;

/* the batch: whole lines of the batching thread not yet written; out_mu
 * orders every thread's stderr output behind it */
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static char batch[PIPE_BUF];
static size_t batch_len;
static __thread bool batching;

static void
fork_prepare(void)
{
    pthread_mutex_lock(&out_mu);
}

static void
fork_parent(void)
{
    pthread_mutex_unlock(&out_mu);
}

/* a forked child writes none of its parent's lines, and learns its pid */
static void
fork_child(void)
{
    batch_len = 0;
    batching = false;
    atomic_store(&log_pid, 0);
    pthread_mutex_unlock(&out_mu);
}

/* flush_locked - the batch out (out_mu held). */
static void
flush_locked(void)
{
    if (batch_len > 0) {
        (void)pst_write_all(STDERR_FILENO, batch, batch_len);
        batch_len = 0;              /* a failing stderr loses them */
    }
}

/* emit - one whole line (newline included) to stderr: into the batch if
 * this thread batches and the line is below error level, else out now,
 * behind whatever the batch holds. */
static void
emit(enum pst_log_level lvl, const char *line, size_t n)
{
    pthread_mutex_lock(&out_mu);
    if (batching && lvl != PST_LOG_ERR && n <= sizeof(batch)) {
        if (batch_len + n > sizeof(batch))
            flush_locked();
        memcpy(batch + batch_len, line, n);
        batch_len += n;
        pthread_mutex_unlock(&out_mu);
        return;
    }
    /* behind the batch, in one write while that stays within PIPE_BUF */
    if (batch_len + n > sizeof(batch))
        flush_locked();
    if (batch_len > 0) {
        memcpy(batch + batch_len, line, n);
        batch_len += n;
        flush_locked();
    } else {
        (void)pst_write_all(STDERR_FILENO, line, n);
    }
    pthread_mutex_unlock(&out_mu);
}

void
pst_log_flush(void)
{
    pthread_mutex_lock(&out_mu);
    flush_locked();
    pthread_mutex_unlock(&out_mu);
}

void
pst_log_batch(bool on)
{
    if (!on)
        pst_log_flush();
    batching = on;
}

static int
line_pid(void)
{
    int p = atomic_load(&log_pid);
    if (p == 0) {
        p = (int)getpid();
        atomic_store(&log_pid, p);
    }
    return p;
}

/*
 * log_stamp - "YYYY-MM-DDTHH:MM:SS.mmmZ", now, into out (at least 40
 * octets); returns its length. The calendar part is made once a second per
 * thread: gmtime and strftime cost more than the rest of a line.
 */
static size_t
log_stamp(char *out)
{
    static __thread time_t sec = -1;
    static __thread char cal[32];
    static __thread size_t cal_len;
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    if (t.tv_sec != sec) {
        struct tm tm;
        gmtime_r(&t.tv_sec, &tm);
        cal_len = strftime(cal, sizeof(cal), "%Y-%m-%dT%H:%M:%S", &tm);
        sec = t.tv_sec;
    }
    unsigned ms = (unsigned)(t.tv_nsec / 1000000);
    memcpy(out, cal, cal_len);
    char *p = out + cal_len;
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    *p++ = (char)('0' + ms / 10 % 10);
    *p++ = (char)('0' + ms % 10);
    *p++ = 'Z';
    *p = '\0';
    return (size_t)(p - out);
}

/* log_tag - " postern[<pid>]: ", kept per thread for the pid it names. */
static const char *
log_tag(size_t *len)
{
    static __thread int pid;
    static __thread char tag[40];
    static __thread size_t tag_len;
    int p = line_pid();
    if (p != pid) {
        tag_len = (size_t)snprintf(tag, sizeof(tag), " postern[%d]: ", p);
        pid = p;
    }
    *len = tag_len;
    return tag;
}

void
pst_log_open(const char *ident, int syslog_on, int facility,
             enum pst_log_level min)
{
    static atomic_flag once = ATOMIC_FLAG_INIT;
    if (!atomic_flag_test_and_set(&once)) {
        pthread_atfork(fork_prepare, fork_parent, fork_child);
        atexit(pst_log_flush);
    }
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

void
pst_log_set_format(enum pst_log_format f)
{
    format = f;
}

static void
log_json(enum pst_log_level lvl, const char *fmt, va_list ap)
{
    static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    char body[PST_LOG_LINE_MAX];
    char line[PST_LOG_JSON_MAX];
    char ts[40] = "";

    vsnprintf(body, sizeof(body), fmt, ap);
    if (use_syslog) {
        pst_log_json(line, sizeof(line), NULL, NULL, 0, level_names[lvl],
                     body);
        syslog(prio[lvl], "%s", line);
        return;
    }
    log_stamp(ts);
    size_t n = pst_log_json(line, sizeof(line) - 1, ts, "postern", line_pid(),
                     level_names[lvl], body);
    line[n++] = '\n';
    emit(lvl, line, n);
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
    char line[PST_LOG_LINE_MAX];
    size_t n = 0;
    va_list ap;

    if (lvl > min_level)
        return;
    if (format == PST_LOG_JSON) {
        va_start(ap, fmt);
        log_json(lvl, fmt, ap);
        va_end(ap);
        return;
    }
    if (!use_syslog) {
        size_t tl;
        const char *tag = log_tag(&tl);
        n = log_stamp(line);
        memcpy(line + n, tag, tl);
        n += tl;
    }
    size_t ll = strlen(level_names[lvl]);
    memcpy(line + n, level_names[lvl], ll);
    n += ll;
    line[n++] = ' ';
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
    emit(lvl, line, n);
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

/* ---- JSON lines ---- */

/* A bounded writer: w->n never passes w->cap - w->reserve while fields are
 * added, so the closing text always fits. */
struct jw {
    char *p;
    size_t n, cap;
    bool full;
};

static void
jw_put(struct jw *w, const char *s, size_t len)
{
    if (w->full || w->n + len >= w->cap) {
        w->full = true;
        return;
    }
    memcpy(w->p + w->n, s, len);
    w->n += len;
}

static void
jw_puts(struct jw *w, const char *s)
{
    jw_put(w, s, strlen(s));
}

/*
 * utf8_len - the length of the valid UTF-8 sequence at s (n bytes left),
 * or, negated, the length of the invalid one to replace by one U+FFFD:
 * its maximal valid prefix, at least one byte (Unicode's "maximal subpart"
 * practice, as Python's decoder does it).
 */
static long
utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;  /* the second byte's range */
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4;
    else
        return -1;
    if (s[0] == 0xe0)
        lo = 0xa0;                  /* no overlong forms */
    else if (s[0] == 0xed)
        hi = 0x9f;                  /* no surrogates */
    else if (s[0] == 0xf0)
        lo = 0x90;
    else if (s[0] == 0xf4)
        hi = 0x8f;                  /* nothing above U+10FFFF */
    for (size_t i = 1; i < len; i++) {
        unsigned char a = i == 1 ? lo : 0x80, b = i == 1 ? hi : 0xbf;
        if (i >= n || s[i] < a || s[i] > b)
            return -(long)i;
    }
    return (long)len;
}

/* bytes as the inside of a JSON string: control characters as \u00XX,
 * invalid UTF-8 as U+FFFD */
static void
jw_str(struct jw *w, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            jw_put(w, e, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            jw_put(w, e, 6);
            i++;
        } else {
            long l = utf8_len(s + i, n - i);
            if (l < 0) {
                jw_puts(w, "\\ufffd");
                i += (size_t)-l;
            } else {
                jw_put(w, (const char *)s + i, (size_t)l);
                i += (size_t)l;
            }
        }
    }
}

/*
 * One value at *pp: a quoted string as pst_log_quote writes it (\" \\
 * \xNN), decoded into buf, or a bare word up to the next space. Returns
 * the decoded length; *pp moves past it. 
 */
static size_t
take_value(const char **pp, char *buf, size_t bufsz)
{
    const char *p = *pp;
    size_t n = 0;
    if (*p != '"') {
        while (*p && *p != ' ' && n < bufsz)
            buf[n++] = *p++;
        while (*p && *p != ' ')
            p++;
        *pp = p;
        return n;
    }
    p++;
    while (*p && *p != '"') {
        char c = *p++;
        if (c == '\\' && *p == 'x' && pst_hexval(p[1]) >= 0 &&
            pst_hexval(p[2]) >= 0) {
            c = (char)(pst_hexval(p[1]) << 4 | pst_hexval(p[2]));
            p += 3;
        } else if (c == '\\' && (*p == '"' || *p == '\\')) {
            c = *p++;
        }
        if (n < bufsz)
            buf[n++] = c;
    }
    if (*p == '"')
        p++;
    *pp = p;
    return n;
}

static bool
key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}

size_t
pst_log_json(char *out, size_t outsz, const char *ts, const char *prog,
             int pid, const char *level, const char *text)
{
    static const char trunc[] = ",\"truncated\":\"yes\"}";
    struct jw w = {out, 0, outsz - sizeof(trunc), false};
    char keys[32][48];
    unsigned nkeys = 0;
    char val[4096];
    struct jw rest = {0};           /* tokens that are not key=value */
    char restbuf[1024];
    rest.p = restbuf;
    rest.cap = sizeof(restbuf);

    jw_puts(&w, "{");
    bool first = true;
    if (ts) {
        jw_puts(&w, "\"ts\":\"");
        jw_puts(&w, ts);
        jw_puts(&w, "\"");
        first = false;
    }
    if (prog) {
        jw_puts(&w, first ? "\"prog\":\"" : ",\"prog\":\"");
        jw_str(&w, (const unsigned char *)prog, strlen(prog));
        char pidtxt[32];
        snprintf(pidtxt, sizeof(pidtxt), "\",\"pid\":\"%d\"", pid);
        jw_puts(&w, pidtxt);
        first = false;
    }
    if (level) {
        jw_puts(&w, first ? "\"level\":\"" : ",\"level\":\"");
        jw_puts(&w, level);
        jw_puts(&w, "\"");
        first = false;
    }
    const char *p = text;
    while (*p && !w.full) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        const char *k = p;
        while (key_char(*p))
            p++;
        size_t klen = (size_t)(p - k);
        if (klen == 0 || klen >= sizeof(keys[0]) || *p != '=') {
            /* not key=value: the token goes to "text" as written */
            p = k;
            size_t n = take_value(&p, val, sizeof(val));
            if (rest.n)
                jw_put(&rest, " ", 1);
            jw_put(&rest, val, n);
            continue;
        }
        p++;
        size_t vlen = take_value(&p, val, sizeof(val));
        char key[48];
        snprintf(key, sizeof(key), "%.*s", (int)klen, k);
        for (unsigned i = 0; i < nkeys; i++)
            if (strcmp(keys[i], key) == 0) {
                snprintf(key, sizeof(key), "%.*s_2", (int)klen, k);
                break;
            }
        if (nkeys < sizeof(keys) / sizeof(keys[0]))
            snprintf(keys[nkeys++], sizeof(keys[0]), "%s", key);
        size_t mark = w.n;
        jw_puts(&w, first ? "\"" : ",\"");
        jw_puts(&w, key);
        jw_puts(&w, "\":\"");
        jw_str(&w, (const unsigned char *)val, vlen);
        jw_puts(&w, "\"");
        if (w.full)
            w.n = mark;             /* the whole field, or none of it */
        else
            first = false;
    }
    if (rest.n && !w.full) {
        size_t mark = w.n;
        jw_puts(&w, first ? "\"text\":\"" : ",\"text\":\"");
        jw_str(&w, (const unsigned char *)rest.p, rest.n);
        jw_puts(&w, "\"");
        if (w.full)
            w.n = mark;
    }
    if (w.full || rest.full) {
        /* room was kept for this */
        const char *t = first ? trunc + 1 : trunc;
        memcpy(out + w.n, t, strlen(t));
        w.n += strlen(t);
    } else {
        out[w.n++] = '}';
    }
    out[w.n] = '\0';
    return w.n;
}
