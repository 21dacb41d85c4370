/*
 * spf_int.h - internal to filters/spf/ on the gateway side: the helper
 * pool and the check driver (pool.c), the DNS answers helpers get, with
 * their cache and RFC 7208 4.6.4 limits (resolve.c), and the record check
 * (record.c). The module (spf.c) uses these; the helper executable
 * (helper.c) shares only proto.h.
 *
 * Threads: spf_run runs on a filter worker thread (pst_fctx_offload) and
 * blocks, with every wait bounded by the check's deadline. The pool and
 * the cache are shared by those threads (a mutex each); a pool is
 * reference-counted, so a check in flight keeps it alive across a reload.
 */
#ifndef PST_FILTERS_SPF_INT_H
#define PST_FILTERS_SPF_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filters/spf/proto.h"

#define SPF_MAX_TERMS 10            /* RFC 7208 4.6.4 */
#define SPF_MAX_VOID 2
#define SPF_MAX_MX_ADDRS 10
#define SPF_MAX_PTR_NAMES 10
#define SPF_MAX_QUERIES 120         /* any check, whatever the counting */

/* ---- record.c ---- */
bool spf_is_record(const char *s, size_t n);
const char *spf_record_check(const char *r, size_t n);

/* ---- resolve.c ---- */

struct spf_rconf {
    char *servers;                  /* "ip:port,..." or NULL: resolv.conf */
    unsigned timeout_ms;            /* per try */
    unsigned tries;
    unsigned max_ttl;               /* seconds a cached answer may live */
};

/* One DNS answer as a helper gets it (and as the cache keeps it). */
struct spf_dns {
    uint8_t status;                 /* enum spf_dstat */
    bool is_void;                   /* NXDOMAIN or no records (4.6.4) */
    const char *bad;                /* an SPF record is malformed or there
                                       are several: permerror, why */
    uint32_t ttl;
    size_t flen;                    /* the ANSWER frame, ready to send */
    uint8_t frame[SPF_FRAME_HDR + SPF_FRAME_MAX];
};

struct spf_cache;
struct spf_cache *spf_cache_new(size_t max_entries, size_t max_bytes);
void spf_cache_free(struct spf_cache *c);
/* 1 and *d filled from the cache (d->ttl: the seconds it has left), or 0 */
int spf_cache_get(struct spf_cache *c, uint16_t type, const char *name,
                  struct spf_dns *d);
void spf_cache_put(struct spf_cache *c, uint16_t type, const char *name,
                   const struct spf_dns *d);
/* spf_cache_get_blob, spf_cache_put_blob - the same cache for other
 * values (kind: the caller's key space): get copies at most cap bytes
 * and returns the length, or -1 if there is none; put keeps vlen bytes
 * for ttl seconds (0: not kept). */
long spf_cache_get_blob(struct spf_cache *c, uint16_t kind, const char *key,
                        void *val, size_t cap);
void spf_cache_put_blob(struct spf_cache *c, uint16_t kind, const char *key,
                        const void *val, size_t vlen, uint32_t ttl);
void spf_cache_counts(struct spf_cache *c, uint64_t *hits, uint64_t *misses,
                      size_t *entries);

/* spf_dns_build - d from a DNS response (abuf, alen) with c-ares' status
 * for a question of type qtype; public for the fuzz target. */
void spf_dns_build(struct spf_dns *d, uint16_t qtype, int ares_status,
                   const unsigned char *abuf, int alen, unsigned max_ttl);
/* spf_dns_fetch - ask the name servers (blocking, until deadline_ms on
 * the monotonic clock); d is always filled (TEMPFAIL on any failure). */
void spf_dns_fetch(const struct spf_rconf *rc, uint16_t type,
                   const char *name, int64_t deadline_ms, struct spf_dns *d);
void spf_dns_simple(struct spf_dns *d, uint16_t qtype, enum spf_dstat st);

/* RFC 7208 4.6.4 accounting for one check, fed every question. */
struct spf_lim {
    unsigned terms, voids, queries, follow_used;
    bool initial_done, follow_mx, last_term;
    unsigned nfollow;
    char follow[SPF_ANS_NAME_MAX][SPF_NAME_MAX + 1];
    const char *stop;               /* a limit was exceeded: why */
};
/* before asking: false if the question exceeds a limit (l->stop set) */
bool spf_lim_pre(struct spf_lim *l, const struct spf_query *q);
/* with the answer: false if it exceeds a limit or is a bad record */
bool spf_lim_post(struct spf_lim *l, const struct spf_query *q,
                  const struct spf_dns *d);

/* spf_name_ok - a host name a helper may ask about. */
bool spf_name_ok(const char *s);

int64_t spf_now_ms(void);

/* ---- pool.c ---- */

struct spf_pool;

struct spf_popts {
    int exe_fd;                     /* the helper executable (O_PATH) */
    unsigned helpers;
    unsigned timeout_ms;            /* one check, start to result */
    struct spf_rconf rc;
    size_t cache_entries, cache_bytes;
};

/* The outcome of one check. */
struct spf_out {
    enum spf_result result;
    bool helper_failed;             /* crashed, timed out, misbehaved */
    char why[SPF_DETAIL_MAX];       /* for the log and the header */
    unsigned queries;
};

/* counters, for the log and the metrics */
struct spf_pstats {
    uint64_t results[SPF_R_COUNT];
    uint64_t helper_failures;
    uint64_t helper_restarts;
    uint64_t cache_hits, cache_misses;
    uint64_t dns_queries;
    uint64_t limit_permerrors;
    unsigned helpers_alive;
};

/* spf_pool_new - spawn the helpers and wait for each one's HELLO. 0, or
 * -1 with why filled. opts->exe_fd is the pool's from now on. */
int spf_pool_new(const struct spf_popts *opts, struct spf_pool **out,
                 char *why, size_t whylen);
void spf_pool_ref(struct spf_pool *p);
/* the last unref stops the helpers (closes their sockets, reaps them) */
void spf_pool_unref(struct spf_pool *p);
/*
 * spf_run - check_host() for sender ("" for postmaster@helo) from the
 * address (family, addr) on a helper; blocks until the result or the
 * deadline. Always fills out.
 */
void spf_run(struct spf_pool *p, int family, const uint8_t *addr,
             const char *sender, const char *helo, const char *receiver,
             struct spf_out *out);
/*
 * spf_cached - the result of an earlier check of the same identity from
 * the same address while it is still good (pool.c says when that is):
 * true with out filled, or false. Quick (a lookup under a mutex): fit for
 * the loop thread. Not counted as a check: spf_count does that.
 */
bool spf_cached(struct spf_pool *p, int family, const uint8_t *addr,
                const char *sender, const char *helo, struct spf_out *out);
/* spf_count - count a check's outcome (spf_run does it itself) */
void spf_count(struct spf_pool *p, const struct spf_out *out);
void spf_pool_stats(struct spf_pool *p, struct spf_pstats *st);
/* pids of the live helpers (tests); returns how many */
size_t spf_pool_pids(struct spf_pool *p, int *pids, size_t max);

#endif
