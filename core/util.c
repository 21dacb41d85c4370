/*
 * util.c - allocation wrappers, error collection, ASCII string helpers, the
 * map-file line reader, write_all and the jitter generator.
 */
#include "core/util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

static void
oom(size_t n)
{
    pst_log_flush();                /* the lines before it, in order */
    fprintf(stderr, "postern: panic: out of memory allocating %zu bytes\n", n);
    abort();
}

void *
pst_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *
pst_xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (p == NULL)
        oom(nmemb * size);
    return p;
}

void *
pst_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *
pst_xstrdup(const char *s)
{
    return pst_xstrndup(s, strlen(s));
}

char *
pst_xstrndup(const char *s, size_t n)
{
    char *d = pst_xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *
pst_xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        oom(0);
    va_end(ap);
    return s;
}

void
pst_err_add(struct pst_err *e, const char *file, int line, const char *fmt,
            ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (e->count < PST_ERR_MAX) {
        if (file && line > 0)
            e->msgs[e->count] = pst_xasprintf("%s:%d: %s", file, line, text);
        else if (file)
            e->msgs[e->count] = pst_xasprintf("%s: %s", file, text);
        else
            e->msgs[e->count] = pst_xstrdup(text);
    }
    e->count++;
}

void
pst_err_free(struct pst_err *e)
{
    for (unsigned i = 0; i < e->count && i < PST_ERR_MAX; i++)
        free(e->msgs[i]);
    e->count = 0;
}

const char *
pst_err_first(const struct pst_err *e)
{
    return e->count ? e->msgs[0] : "no error";
}

int
pst_strcaseeq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (pst_tolower((unsigned char)*a) != pst_tolower((unsigned char)*b))
            return 0;
    return *a == *b;
}

int
pst_strncaseeq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int ca = pst_tolower((unsigned char)a[i]);
        int cb = pst_tolower((unsigned char)b[i]);
        if (ca != cb)
            return 0;
        if (ca == 0)
            return 1;
    }
    return 1;
}

int
pst_map_lines(FILE *f, const char *file, size_t max, bool inline_comments,
              int (*fn)(void *arg, char *line, int lineno,
                        struct pst_err *err),
              void *arg, struct pst_err *err)
{
    char *line = pst_xmalloc(max + 2);  /* the line, its LF, a NUL */
    int n = 0, rc = 0;

    while (fgets(line, (int)max + 2, f) != NULL) {
        n++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            pst_err_add(err, file, n, "line longer than %zu octets", max);
            rc = -EINVAL;
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
            continue;
        }
        char *s = line, *e;
        if (inline_comments && (e = strchr(s, '#')) != NULL)
            *e = '\0';
        while (*s == ' ' || *s == '\t')
            s++;
        e = s + strlen(s);
        while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' ||
                         e[-1] == '\t'))
            *--e = '\0';
        if (*s == '\0' || *s == '#')
            continue;
        int r = fn(arg, s, n, err);
        if (r < 0)
            rc = r;
    }
    free(line);
    return rc;
}

int
pst_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

uint64_t
pst_rand64(uint64_t *state)
{
    uint64_t x = *state;            /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * UINT64_C(2685821657736338717);
}

uint64_t
pst_rand_seed(void)
{
    uint64_t s;
    if (getrandom(&s, sizeof(s), 0) != sizeof(s))
        s = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
    return s | 1;
}

/* pst_line_span - see util.h. */
size_t
pst_line_span(const char *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        size_t w = n - off < 256 ? n - off : 256;
        const char *cr = memchr(p + off, '\r', w);
        if (cr != NULL)
            w = (size_t)(cr - (p + off));
        const char *lf = memchr(p + off, '\n', w);
        if (lf != NULL)
            return (size_t)(lf - p);
        if (cr != NULL)
            return (size_t)(cr - p);
        off += w;
    }
    return n;
}

/* pst_stop_signals_block - see util.h. */
void
pst_stop_signals_block(bool block)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}
