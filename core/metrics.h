/*
 * metrics.h - the process's metrics registry: counters, gauges and
 * histograms, exposed in the Prometheus text format (version 0.0.4) by
 * the metrics endpoint (gateway/metrics_http.c). Every series is listed
 * in docs/OPERATIONS.md.
 *
 * A series is a family name plus a set of label pairs; the first call for
 * a (name, labels) creates it, later calls return the same object. Look a
 * series up once (at start, per listener, per module) and keep the
 * pointer: series live until the process exits, so a pointer to one may be
 * kept anywhere, across reloads too.
 *
 * Threads: updates are C11 atomics with relaxed ordering, lock-free, from
 * any thread (the loop, the spool's sync thread, workers); the HTTP thread
 * reads them while rendering. Creating or looking up a series, and
 * rendering, take the registry's mutex. A rendered histogram is
 * self-consistent in its buckets and count (the count is the sum of the
 * buckets read); its sum may lag by the observations made meanwhile.
 *
 * Labels: names follow Prometheus' rules; values are escaped on output.
 * Callers keep label sets bounded (listeners, routes, modules, fixed
 * reasons): never a per-sender or per-client label. Bounds: at most
 * PST_METRIC_SERIES_MAX series; past it a lookup returns a shared sink
 * series that is never rendered (and one warning is logged).
 */
#ifndef PST_CORE_METRICS_H
#define PST_CORE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/tbuf.h"

#define PST_METRIC_SERIES_MAX 4096
#define PST_METRIC_BUCKETS_MAX 24

struct pst_metric;

/*
 * Histogram bucket bounds as integers in units of 1/scale (a power of ten;
 * 1000000: observations in microseconds, rendered in seconds), ascending;
 * +Inf is implied.
 */
struct pst_buckets {
    uint64_t scale;
    size_t n;
    uint64_t le[PST_METRIC_BUCKETS_MAX];
};

/* Latencies: 0.5 ms .. 60 s, observed in microseconds. */
extern const struct pst_buckets pst_buckets_latency;
/* Counts: 1, 2, 4 .. 1024. */
extern const struct pst_buckets pst_buckets_count;

/*
 * pst_metric_counter, pst_metric_gauge, pst_metric_histogram - the series
 * name{labels}; the variadic part is label name/value string pairs ending
 * with NULL. A name registered with another type or label names is a
 * programming error (abort).
 */
struct pst_metric *pst_metric_counter(const char *name, const char *help, ...)
    __attribute__((sentinel));
struct pst_metric *pst_metric_gauge(const char *name, const char *help, ...)
    __attribute__((sentinel));
struct pst_metric *pst_metric_histogram(const char *name, const char *help,
                                        const struct pst_buckets *b, ...)
    __attribute__((sentinel));

/* pst_metric_add - a counter or gauge goes up by n. */
void pst_metric_add(struct pst_metric *m, uint64_t n);
/* pst_metric_sub - a gauge goes down by n. */
void pst_metric_sub(struct pst_metric *m, uint64_t n);
/* pst_metric_set - a gauge's value. */
void pst_metric_set(struct pst_metric *m, int64_t v);
/* pst_metric_observe - one observation (in the buckets' units). */
void pst_metric_observe(struct pst_metric *m, uint64_t v);
/* pst_metric_value - a counter's or gauge's value (tests, logs). */
int64_t pst_metric_value(const struct pst_metric *m);

/*
 * pst_metrics_render - append every family, in the Prometheus text format,
 * to out: "# HELP", "# TYPE", then its series.
 */
void pst_metrics_render(struct pst_tbuf *out);

/* pst_monotonic_us - a monotonic clock in microseconds (for durations). */
uint64_t pst_monotonic_us(void);

#endif
