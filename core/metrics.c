/*
 * metrics.c - the metrics registry (metrics.h): families and their series,
 * found by name and rendered label text, updated with relaxed atomics and
 * rendered in the Prometheus text format under the registry's mutex.
 *
 * Ownership: the registry owns every family and series; nothing is freed
 * before exit (pointers to series are kept by their users for the life of
 * the process). Limits: PST_METRIC_SERIES_MAX series, label text bounded
 * by PST_METRIC_LABELS_MAX.
 */
#include "core/metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/strmap.h"
#include "core/util.h"

#define PST_METRIC_LABELS_MAX 512

enum mtype { M_COUNTER, M_GAUGE, M_HISTOGRAM };

struct family {
    char *name;
    char *help;
    enum mtype type;
    char *label_names;              /* "a,b": every series has the same */
    struct pst_buckets b;           /* histograms */
    struct pst_metric *first, *last;
};

struct pst_metric {
    struct family *f;               /* NULL: the overflow sink */
    char *labels;                   /* rendered: a="x",b="y" or "" */
    _Atomic uint64_t count;         /* counter value; histogram: unused */
    _Atomic int64_t gauge;
    _Atomic uint64_t sum;           /* histogram, buckets' units */
    _Atomic uint64_t *buckets;      /* b.n + 1 (the last is +Inf), not
                                       cumulative */
    struct pst_metric *next;
};

const struct pst_buckets pst_buckets_latency = {
    .scale = 1000000,
    .n = 14,
    .le = {500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
           500000, 1000000, 2500000, 10000000, 60000000},
};

const struct pst_buckets pst_buckets_count = {
    .scale = 1,
    .n = 11,
    .le = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024},
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pst_strmap *families;    /* name -> family */
static struct pst_strmap *series;      /* name NUL labels -> metric */
static struct family **order;          /* families, registration order */
static size_t nfamilies;
static size_t nseries;
static struct pst_metric sink;

static bool
valid_name(const char *s, bool colon)
{
    if (s == NULL || *s == '\0' || (*s >= '0' && *s <= '9'))
        return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || (colon && c == ':')))
            return false;
    }
    return true;
}

/* Label values: \ " and newline escaped as the format says; bytes outside
 * printable ASCII become '?' so the output is always valid UTF-8. */
static void
add_value(struct pst_tbuf *b, const char *v)
{
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (c == '\\' || c == '"') {
            pst_tbuf_addc(b, '\\');
            pst_tbuf_addc(b, c);
        } else if (c == '\n') {
            pst_tbuf_puts(b, "\\n");
        } else if (c < 0x20 || c > 0x7e) {
            pst_tbuf_addc(b, '?');
        } else {
            pst_tbuf_addc(b, c);
        }
    }
}

static _Noreturn void
misuse(const char *what, const char *name)
{
    pst_err("event=panic op=metrics error=\"%s: %s\"", what, name);
    abort();
}

static struct pst_metric *
lookup(enum mtype type, const char *name, const char *help,
       const struct pst_buckets *bk, va_list ap)
{
    struct pst_tbuf labels, names, key;
    const char *k;

    if (!valid_name(name, true))
        misuse("bad metric name", name ? name : "(null)");
    pst_tbuf_init(&labels);
    pst_tbuf_init(&names);
    while ((k = va_arg(ap, const char *)) != NULL) {
        const char *v = va_arg(ap, const char *);
        if (!valid_name(k, false) || strncmp(k, "__", 2) == 0 || v == NULL)
            misuse("bad label", name);
        if (labels.len)
            pst_tbuf_addc(&labels, ',');
        if (names.len)
            pst_tbuf_addc(&names, ',');
        pst_tbuf_puts(&names, k);
        pst_tbuf_printf(&labels, "%s=\"", k);
        add_value(&labels, v);
        pst_tbuf_addc(&labels, '"');
    }
    pst_tbuf_cstr(&labels);
    pst_tbuf_cstr(&names);
    pst_tbuf_init(&key);
    pst_tbuf_puts(&key, name);
    pst_tbuf_addc(&key, '\0');
    pst_tbuf_add(&key, labels.p, labels.len);

    pthread_mutex_lock(&reg_lock);
    if (families == NULL) {
        families = pst_strmap_new();
        series = pst_strmap_new();
    }
    struct pst_metric *m = pst_strmap_get(series, key.p, key.len);
    if (m != NULL) {
        if (m->f->type != type)
            misuse("metric registered with another type", name);
        goto out;
    }
    if (nseries >= PST_METRIC_SERIES_MAX ||
        labels.len > PST_METRIC_LABELS_MAX) {
        if (sink.labels == NULL) {
            sink.labels = "";
            pst_warn("event=metrics_full series=%zu name=%s", nseries, name);
        }
        m = &sink;
        goto out;
    }
    struct family *f = pst_strmap_gets(families, name);
    if (f == NULL) {
        f = pst_xcalloc(1, sizeof(*f));
        f->name = pst_xstrdup(name);
        f->help = pst_xstrdup(help);
        f->type = type;
        f->label_names = pst_xstrdup(names.p);
        if (bk != NULL)
            f->b = *bk;
        *pst_strmap_slot(families, name, strlen(name), NULL) = f;
        order = pst_xrealloc(order, (nfamilies + 1) * sizeof(*order));
        order[nfamilies++] = f;
    } else if (f->type != type || strcmp(f->label_names, names.p) != 0) {
        misuse("metric registered with other labels or type", name);
    }
    m = pst_xcalloc(1, sizeof(*m));
    m->f = f;
    m->labels = pst_xstrdup(labels.p);
    if (type == M_HISTOGRAM)
        m->buckets = pst_xcalloc(f->b.n + 1, sizeof(*m->buckets));
    if (f->last)
        f->last->next = m;
    else
        f->first = m;
    f->last = m;
    *pst_strmap_slot(series, key.p, key.len, NULL) = m;
    nseries++;
out:
    pthread_mutex_unlock(&reg_lock);
    pst_tbuf_free(&labels);
    pst_tbuf_free(&names);
    pst_tbuf_free(&key);
    return m;
}

struct pst_metric *
pst_metric_counter(const char *name, const char *help, ...)
{
    va_list ap;
    va_start(ap, help);
    struct pst_metric *m = lookup(M_COUNTER, name, help, NULL, ap);
    va_end(ap);
    return m;
}

struct pst_metric *
pst_metric_gauge(const char *name, const char *help, ...)
{
    va_list ap;
    va_start(ap, help);
    struct pst_metric *m = lookup(M_GAUGE, name, help, NULL, ap);
    va_end(ap);
    return m;
}

struct pst_metric *
pst_metric_histogram(const char *name, const char *help,
                     const struct pst_buckets *b, ...)
{
    va_list ap;
    uint64_t sc = b ? b->scale : 0;
    while (sc >= 10 && sc % 10 == 0)
        sc /= 10;
    if (b == NULL || b->n == 0 || b->n > PST_METRIC_BUCKETS_MAX || sc != 1)
        misuse("bad buckets (scale must be a power of ten)", name);
    va_start(ap, b);
    struct pst_metric *m = lookup(M_HISTOGRAM, name, help, b, ap);
    va_end(ap);
    return m;
}

void
pst_metric_add(struct pst_metric *m, uint64_t n)
{
    if (m->f != NULL && m->f->type == M_GAUGE)
        atomic_fetch_add_explicit(&m->gauge, (int64_t)n, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&m->count, n, memory_order_relaxed);
}

void
pst_metric_sub(struct pst_metric *m, uint64_t n)
{
    atomic_fetch_sub_explicit(&m->gauge, (int64_t)n, memory_order_relaxed);
}

void
pst_metric_set(struct pst_metric *m, int64_t v)
{
    atomic_store_explicit(&m->gauge, v, memory_order_relaxed);
}

void
pst_metric_observe(struct pst_metric *m, uint64_t v)
{
    if (m->buckets == NULL)
        return;                     /* the sink */
    const struct pst_buckets *b = &m->f->b;
    size_t i = 0;
    while (i < b->n && v > b->le[i])
        i++;
    atomic_fetch_add_explicit(&m->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->sum, v, memory_order_relaxed);
}

int64_t
pst_metric_value(const struct pst_metric *m)
{
    if (m->f != NULL && m->f->type == M_COUNTER)
        return (int64_t)atomic_load_explicit(&m->count, memory_order_relaxed);
    return atomic_load_explicit(&m->gauge, memory_order_relaxed);
}

/* v / scale as a decimal number without trailing zeros. */
static void
add_scaled(struct pst_tbuf *b, uint64_t v, uint64_t scale)
{
    pst_tbuf_printf(b, "%" PRIu64, v / scale);
    uint64_t frac = v % scale;
    if (frac == 0)
        return;
    char digits[24];
    int w = 0;
    for (uint64_t s = scale; s > 1 && w < 19; s /= 10)
        w++;
    snprintf(digits, sizeof(digits), "%0*" PRIu64, w, frac);
    size_t n = strlen(digits);
    while (n > 0 && digits[n - 1] == '0')
        n--;
    pst_tbuf_addc(b, '.');
    pst_tbuf_add(b, digits, n);
}

/* name{labels[,extra]} */
static void
add_series(struct pst_tbuf *b, const char *name, const char *suffix,
           const char *labels, const char *extra)
{
    pst_tbuf_puts(b, name);
    pst_tbuf_puts(b, suffix);
    if (labels[0] || extra) {
        pst_tbuf_addc(b, '{');
        pst_tbuf_puts(b, labels);
        if (extra) {
            if (labels[0])
                pst_tbuf_addc(b, ',');
            pst_tbuf_puts(b, extra);
        }
        pst_tbuf_addc(b, '}');
    }
    pst_tbuf_addc(b, ' ');
}

static void
render_histogram(struct pst_tbuf *b, const struct family *f,
                 struct pst_metric *m)
{
    uint64_t cum = 0;
    char le[64];
    for (size_t i = 0; i <= f->b.n; i++) {
        cum += atomic_load_explicit(&m->buckets[i], memory_order_relaxed);
        if (i < f->b.n) {
            struct pst_tbuf t;
            pst_tbuf_init(&t);
            pst_tbuf_puts(&t, "le=\"");
            add_scaled(&t, f->b.le[i], f->b.scale);
            pst_tbuf_addc(&t, '"');
            snprintf(le, sizeof(le), "%s", pst_tbuf_cstr(&t));
            pst_tbuf_free(&t);
        } else {
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        }
        add_series(b, f->name, "_bucket", m->labels, le);
        pst_tbuf_printf(b, "%" PRIu64 "\n", cum);
    }
    add_series(b, f->name, "_sum", m->labels, NULL);
    add_scaled(b, atomic_load_explicit(&m->sum, memory_order_relaxed),
               f->b.scale);
    pst_tbuf_addc(b, '\n');
    add_series(b, f->name, "_count", m->labels, NULL);
    pst_tbuf_printf(b, "%" PRIu64 "\n", cum);
}

static int
by_name(const void *a, const void *b)
{
    return strcmp((*(struct family *const *)a)->name,
                  (*(struct family *const *)b)->name);
}

void
pst_metrics_render(struct pst_tbuf *b)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};

    pthread_mutex_lock(&reg_lock);
    struct family **sorted = pst_xcalloc(nfamilies ? nfamilies : 1,
                                         sizeof(*sorted));
    memcpy(sorted, order, nfamilies * sizeof(*sorted));
    qsort(sorted, nfamilies, sizeof(*sorted), by_name);
    for (size_t i = 0; i < nfamilies; i++) {
        const struct family *f = sorted[i];
        pst_tbuf_printf(b, "# HELP %s ", f->name);
        for (const char *h = f->help; *h; h++) {
            if (*h == '\\')
                pst_tbuf_puts(b, "\\\\");
            else if (*h == '\n')
                pst_tbuf_puts(b, "\\n");
            else
                pst_tbuf_addc(b, *h);
        }
        pst_tbuf_printf(b, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
        for (struct pst_metric *m = f->first; m; m = m->next) {
            if (f->type == M_HISTOGRAM) {
                render_histogram(b, f, m);
                continue;
            }
            add_series(b, f->name, "", m->labels, NULL);
            if (f->type == M_COUNTER)
                pst_tbuf_printf(b, "%" PRIu64 "\n",
                                atomic_load_explicit(&m->count,
                                                     memory_order_relaxed));
            else
                pst_tbuf_printf(b, "%" PRId64 "\n",
                                atomic_load_explicit(&m->gauge,
                                                     memory_order_relaxed));
        }
    }
    free(sorted);
    pthread_mutex_unlock(&reg_lock);
}

uint64_t
pst_monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
