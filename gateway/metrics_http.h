/*
 * metrics_http.h - the metrics endpoint: an HTTP listener on its own
 * thread (libmicrohttpd's internal polling thread), serving
 *   GET /metrics   the registry (core/metrics.h), Prometheus text format
 *   GET /healthz   200 while the event loop is alive (it ticked within
 *                  PST_HEALTH_STALL_MS), else 503
 *   GET /readyz    200 when the gateway should get traffic: not draining,
 *                  the loop alive, the spool directory writable and its
 *                  file system above limits.disk_free_min; else 503 with
 *                  the failed checks in the body
 * Anything else: 404 (405 for a method other than GET or HEAD).
 *
 * Threads: the loop publishes (pst_mhttp_tick once a second, draining,
 * the disk floor at a reload) into atomics and a mutex-guarded floor; the
 * HTTP thread only reads them and the registry, and runs access(2) and
 * statvfs(3) on the spool directory itself, so /readyz sees a full disk
 * even while the loop is busy.
 *
 * Bounds: at most PST_MHTTP_CONNS connections, each idle for at most
 * PST_MHTTP_TIMEOUT seconds; request bodies are not read.
 */
#ifndef PST_GATEWAY_METRICS_HTTP_H
#define PST_GATEWAY_METRICS_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"

#define PST_MHTTP_CONNS 32
#define PST_MHTTP_TIMEOUT 10
#define PST_HEALTH_STALL_MS 10000

struct pst_mhttp;

/*
 * pst_mhttp_start - bind mc->address:mc->port and start the thread.
 * spool_dir is the directory /readyz checks (copied).
 */
int pst_mhttp_start(struct pst_mhttp **out, const struct pst_metrics_conf *mc,
                    const char *spool_dir, uint64_t disk_free_min,
                    struct pst_err *err);
/* pst_mhttp_stop - close the listener and join the thread; NULL is fine. */
void pst_mhttp_stop(struct pst_mhttp *h);
/* pst_mhttp_tick - the loop is alive (call about once a second). */
void pst_mhttp_tick(struct pst_mhttp *h);
/* pst_mhttp_set_draining - /readyz answers 503 from now on. */
void pst_mhttp_set_draining(struct pst_mhttp *h, bool draining);
/* pst_mhttp_set_floor - a reloaded limits.disk_free_min. */
void pst_mhttp_set_floor(struct pst_mhttp *h, uint64_t disk_free_min);
/* pst_mhttp_same - h listens where mc says (a reload may keep it). */
bool pst_mhttp_same(const struct pst_mhttp *h,
                    const struct pst_metrics_conf *mc);

#endif
