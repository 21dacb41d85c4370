/*
 * resolve.c - the DNS answers spf helpers get: asked of the `resolver`
 * name servers (c-ares, blocking on a filter worker thread, bounded by the
 * check's deadline), parsed and checked here, cached by TTL, and counted
 * against RFC 7208 4.6.4's limits.
 *
 * What a helper is told is checked before it is sent: names are host
 * names (letters, digits, '-', '_', '.'; labels 1..63; at most 253), at
 * most SPF_ANS_ADDR_MAX addresses and SPF_ANS_NAME_MAX names, PTR answers
 * cut to 10 names (4.6.4: the rest are ignored), and of a TXT answer only
 * the SPF records (RFC 7208 4.5), each passed through spf_record_check
 * (record.c). A malformed record, or more than one, makes the answer
 * "bad": the check is a permerror and the helper is told to stop.
 *
 * Limits (4.6.4), counted per check from the questions themselves, so a
 * helper, whatever libspf2 does, cannot exceed them: at most 10 terms
 * that query DNS (every TXT question after the first - include, redirect
 * -, every MX and PTR question, and every A/AAAA question that is not the
 * address of a host the last MX or PTR answer named); at most 10 address
 * questions per MX answer; at most 2 void lookups (NXDOMAIN, or no
 * records) among the terms; SPF_MAX_QUERIES questions in all. Beyond a
 * limit the answer is STOP and the result permerror.
 *
 * The cache holds whole ANSWER frames keyed by (type, name), for their
 * TTL (capped by max_ttl; TTL 0 is not cached; negative answers live for
 * the SOA's negative TTL, RFC 2308), least recently used first out when
 * it holds max_entries or max_bytes. TEMPFAIL is never cached. A burst of
 * mail from one domain costs one look-up per name. The same code keeps
 * the pool's cache of check results (pool.c), under keys of its own.
 */
#include <ares.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/util.h"
#include "filters/spf/spf_int.h"

int64_t
spf_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* spf_name_ok - see spf_int.h. */
bool
spf_name_ok(const char *s)
{
    size_t n = strlen(s), lab = 0;
    if (n > 0 && s[n - 1] == '.')
        n--;
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            if (lab == 0)
                return false;
            lab = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
        if (++lab > 63)
            return false;
    }
    return true;
}

/* ---- answers ---- */

static void
finish_frame(struct spf_dns *d, const struct spf_answer *a)
{
    struct spf_frame *f = pst_xmalloc(sizeof(*f));
    if (spf_enc_answer(f, a) < 0) {
        /* cannot happen within the bounds; fail safe */
        struct spf_answer t = {.status = SPF_D_TEMPFAIL, .type = a->type};
        spf_enc_answer(f, &t);
        d->status = SPF_D_TEMPFAIL;
    }
    memcpy(d->frame, f->b, f->n);
    d->flen = f->n;
    free(f);
}

/* spf_dns_simple - an answer without records. */
void
spf_dns_simple(struct spf_dns *d, uint16_t qtype, enum spf_dstat st)
{
    struct spf_answer a = {.status = (uint8_t)st, .type = qtype};
    d->status = (uint8_t)st;
    d->is_void = st == SPF_D_NXDOMAIN || st == SPF_D_NODATA;
    d->bad = NULL;
    d->ttl = 0;
    finish_frame(d, &a);
}

static uint32_t
get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

/* the negative TTL of a response: min(SOA TTL, SOA minimum), or 0 */
static uint32_t
neg_ttl(ns_msg *m)
{
    ns_rr rr;
    for (int i = 0; i < ns_msg_count(*m, ns_s_ns); i++) {
        if (ns_parserr(m, ns_s_ns, i, &rr) < 0)
            return 0;
        if (ns_rr_type(rr) != ns_t_soa)
            continue;
        const unsigned char *p = ns_rr_rdata(rr), *e = p + ns_rr_rdlen(rr);
        for (int k = 0; k < 2; k++) {   /* mname, rname */
            int n = ns_name_skip(&p, e);
            if (n < 0)
                return 0;
        }
        if (e - p < 20)
            return 0;
        uint32_t min = get32(p + 16);
        return PST_MIN(min, ns_rr_ttl(rr));
    }
    return 0;
}

/* spf_dns_build - see spf_int.h. */
void
spf_dns_build(struct spf_dns *d, uint16_t qtype, int st,
              const unsigned char *abuf, int alen, unsigned max_ttl)
{
    static _Thread_local struct spf_answer a;
    ns_msg m;
    uint32_t ttl = UINT32_MAX;
    unsigned spf_records = 0, names = 0;

    memset(d, 0, sizeof(*d));
    if (st == ARES_ENOTFOUND || st == ARES_ENODATA) {
        spf_dns_simple(d, qtype,
                       st == ARES_ENOTFOUND ? SPF_D_NXDOMAIN : SPF_D_NODATA);
        if (abuf != NULL && alen > 0 && ns_initparse(abuf, alen, &m) == 0)
            d->ttl = PST_MIN(neg_ttl(&m), max_ttl);
        return;
    }
    if (st != ARES_SUCCESS || abuf == NULL || alen <= 0 ||
        ns_initparse(abuf, alen, &m) < 0) {
        spf_dns_simple(d, qtype, SPF_D_TEMPFAIL);
        return;
    }
    memset(&a, 0, sizeof(a));
    a.status = SPF_D_OK;
    a.type = qtype;
    for (int i = 0; i < ns_msg_count(m, ns_s_an); i++) {
        ns_rr rr;
        if (ns_parserr(&m, ns_s_an, i, &rr) < 0) {
            spf_dns_simple(d, qtype, SPF_D_TEMPFAIL);
            return;
        }
        if (ns_rr_class(rr) != ns_c_in || ns_rr_type(rr) != qtype)
            continue;               /* CNAMEs on the way, others */
        const unsigned char *p = ns_rr_rdata(rr);
        unsigned rl = ns_rr_rdlen(rr);
        char name[NS_MAXDNAME];
        bool kept = false;
        switch (qtype) {
        case SPF_Q_A:
        case SPF_Q_AAAA: {
            unsigned want = qtype == SPF_Q_A ? 4 : 16;
            if (rl != want || a.n >= SPF_ANS_ADDR_MAX)
                break;
            memcpy(a.u.addr[a.n++], p, want);
            kept = true;
            break;
        }
        case SPF_Q_MX:
        case SPF_Q_PTR: {
            unsigned skip = qtype == SPF_Q_MX ? 2 : 0;
            unsigned max = qtype == SPF_Q_PTR ? SPF_MAX_PTR_NAMES
                                              : SPF_ANS_NAME_MAX;
            if (rl < skip + 1 || a.n >= max)
                break;
            if (ns_name_uncompress(ns_msg_base(m), ns_msg_end(m), p + skip,
                                   name, sizeof(name)) < 0 ||
                !spf_name_ok(name))
                break;              /* dropped, not an error */
            names++;
            size_t nl = strlen(name);
            if (nl > 1 && name[nl - 1] == '.')
                name[--nl] = '\0';
            memcpy(a.u.name[a.n++], name, nl + 1);
            kept = true;
            break;
        }
        case SPF_Q_TXT: {
            /* the strings of one record, joined (RFC 7208 3.3) */
            char txt[SPF_TXT_MAX + 1];
            size_t tl = 0;
            bool over = false;
            unsigned off = 0;
            while (off < rl) {
                unsigned sl = p[off++];
                if (sl > rl - off) {
                    over = true;    /* malformed RDATA: ignore the RR */
                    tl = 0;
                    break;
                }
                if (!over && tl + sl <= SPF_TXT_MAX) {
                    memcpy(txt + tl, p + off, sl);
                    tl += sl;
                } else {
                    over = true;
                }
                off += sl;
            }
            /* an SPF record longer than SPF_TXT_MAX is refused below */
            if (tl == 0 || !spf_is_record(txt, tl))
                break;
            spf_records++;
            const char *why = over ? "record too long"
                                   : spf_record_check(txt, tl);
            if (why != NULL && d->bad == NULL)
                d->bad = why;
            if (why == NULL && a.n < SPF_ANS_TXT_MAX) {
                memcpy(a.u.txt[a.n], txt, tl);
                a.u.txt[a.n][tl] = '\0';
                a.n++;
            }
            kept = true;
            break;
        }
        default:
            break;
        }
        if (kept)
            ttl = PST_MIN(ttl, ns_rr_ttl(rr));
    }
    (void)names;
    if (spf_records > 1)
        d->bad = "more than one SPF record";
    bool any = a.n > 0 || spf_records > 0;
    if (!any && qtype != SPF_Q_TXT) {
        spf_dns_simple(d, qtype, SPF_D_NODATA);
        d->ttl = PST_MIN(neg_ttl(&m), max_ttl);
        return;
    }
    /* a TXT answer without an SPF record has records: not void */
    d->status = SPF_D_OK;
    d->is_void = ns_msg_count(m, ns_s_an) == 0;
    d->ttl = ttl == UINT32_MAX ? PST_MIN(neg_ttl(&m), max_ttl)
                               : PST_MIN(ttl, max_ttl);
    a.ttl = d->ttl;
    if (d->bad != NULL)
        a.n = 0;
    finish_frame(d, &a);
}

/* ---- asking ---- */

struct pending {
    bool done;
    int status;
    unsigned char *abuf;
    int alen;
};

static void
on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct pending *q = arg;
    (void)timeouts;
    q->done = true;
    q->status = status;
    if (abuf != NULL && alen > 0) {
        q->abuf = pst_xmalloc((size_t)alen);
        memcpy(q->abuf, abuf, (size_t)alen);
        q->alen = alen;
    }
}

/* spf_dns_fetch - see spf_int.h. */
void
spf_dns_fetch(const struct spf_rconf *rc, uint16_t type, const char *name,
              int64_t deadline_ms, struct spf_dns *d)
{
    struct ares_options o;
    ares_channel ch;
    struct pending q = {0};
    int mask;

    memset(&o, 0, sizeof(o));
    o.timeout = (int)(rc->timeout_ms ? rc->timeout_ms : 5000);
    o.tries = (int)(rc->tries ? rc->tries : 2);
    o.flags = ARES_FLAG_EDNS | ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
    o.ednspsz = 1232;
    o.ndomains = 0;
    mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS |
           ARES_OPT_EDNSPSZ | ARES_OPT_DOMAINS;
    if (ares_init_options(&ch, &o, mask) != ARES_SUCCESS) {
        spf_dns_simple(d, type, SPF_D_TEMPFAIL);
        return;
    }
    if (rc->servers != NULL &&
        ares_set_servers_ports_csv(ch, rc->servers) != ARES_SUCCESS) {
        ares_destroy(ch);
        spf_dns_simple(d, type, SPF_D_TEMPFAIL);
        return;
    }
    ares_query(ch, name, ns_c_in, type, on_answer, &q);
    while (!q.done) {
        int64_t left = deadline_ms - spf_now_ms();
        if (left <= 0) {
            ares_cancel(ch);        /* calls back with ARES_ECANCELLED */
            break;
        }
        ares_socket_t socks[ARES_GETSOCK_MAXNUM];
        struct pollfd pfd[ARES_GETSOCK_MAXNUM];
        int bm = ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM), np = 0;
        for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
            /* c-ares' own macros shift a signed 1 into the sign bit */
            unsigned ubm = (unsigned)bm;
            short ev = (short)((ubm & (1u << i) ? POLLIN : 0) |
                               (ubm & (1u << (i + ARES_GETSOCK_MAXNUM))
                                    ? POLLOUT
                                    : 0));
            if (ev == 0)
                continue;
            pfd[np].fd = socks[i];
            pfd[np].events = ev;
            pfd[np].revents = 0;
            np++;
        }
        struct timeval maxtv = {(time_t)(left / 1000),
                                (suseconds_t)(left % 1000) * 1000};
        struct timeval tv, *tvp = ares_timeout(ch, &maxtv, &tv);
        int ms = (int)(tvp->tv_sec * 1000 + tvp->tv_usec / 1000);
        int rc2 = poll(pfd, (nfds_t)np, ms > 0 ? ms : 1);
        if (rc2 < 0 && errno != EINTR)
            break;
        bool any = false;
        for (int i = 0; i < np && rc2 > 0; i++) {
            if (pfd[i].revents == 0)
                continue;
            any = true;
            ares_process_fd(ch,
                            pfd[i].revents & (POLLIN | POLLERR | POLLHUP)
                                ? pfd[i].fd
                                : ARES_SOCKET_BAD,
                            pfd[i].revents & POLLOUT ? pfd[i].fd
                                                     : ARES_SOCKET_BAD);
        }
        if (!any)
            ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    }
    if (!q.done)
        ares_cancel(ch);
    ares_destroy(ch);
    spf_dns_build(d, type, q.done ? q.status : ARES_ETIMEOUT, q.abuf, q.alen,
                  rc->max_ttl);
    free(q.abuf);
}

/* ---- cache ---- */

struct centry {
    struct centry *hnext;
    struct centry *prev, *next;     /* LRU: head is the most recent */
    uint16_t type;
    int64_t expires;
    size_t bytes;
    char *name;
    void *val;                      /* a struct spf_dns, or a caller's */
    size_t vlen;
};

struct spf_cache {
    pthread_mutex_t mu;
    struct centry **tab;
    size_t nb;
    struct centry *head, *tail;
    size_t n, bytes, max_n, max_bytes;
    uint64_t hits, misses;
};

static size_t
hash(uint16_t type, const char *name, size_t nb)
{
    uint64_t h = 1469598103934665603ULL ^ type;
    for (const char *p = name; *p; p++) {
        h ^= (unsigned char)pst_tolower((unsigned char)*p);
        h *= 1099511628211ULL;
    }
    return (size_t)(h % nb);
}

struct spf_cache *
spf_cache_new(size_t max_entries, size_t max_bytes)
{
    struct spf_cache *c = pst_xcalloc(1, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    c->nb = max_entries < 64 ? 64 : max_entries;
    c->tab = pst_xcalloc(c->nb, sizeof(*c->tab));
    c->max_n = max_entries;
    c->max_bytes = max_bytes;
    return c;
}

static void
lru_unlink(struct spf_cache *c, struct centry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void
lru_front(struct spf_cache *c, struct centry *e)
{
    e->next = c->head;
    e->prev = NULL;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (c->tail == NULL)
        c->tail = e;
}

static void
drop(struct spf_cache *c, struct centry *e)
{
    struct centry **pp = &c->tab[hash(e->type, e->name, c->nb)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(c, e);
    c->n--;
    c->bytes -= e->bytes;
    free(e->name);
    free(e->val);
    free(e);
}

static struct centry *
find(struct spf_cache *c, uint16_t type, const char *name)
{
    for (struct centry *e = c->tab[hash(type, name, c->nb)]; e; e = e->hnext)
        if (e->type == type && pst_strcaseeq(e->name, name))
            return e;
    return NULL;
}

/* the value under (type, name) into val (at most cap bytes) and its
 * expiry; its length, or -1 if there is none (or it has expired) */
static long
cache_get(struct spf_cache *c, uint16_t type, const char *name, void *val,
          size_t cap, int64_t *expires)
{
    int64_t now = spf_now_ms();
    long n = -1;
    pthread_mutex_lock(&c->mu);
    struct centry *e = find(c, type, name);
    if (e != NULL && e->expires <= now) {
        drop(c, e);
        e = NULL;
    }
    if (e != NULL && e->vlen <= cap) {
        memcpy(val, e->val, e->vlen);
        *expires = e->expires;
        n = (long)e->vlen;
        lru_unlink(c, e);
        lru_front(c, e);
        c->hits++;
    } else {
        c->misses++;
    }
    pthread_mutex_unlock(&c->mu);
    return n;
}

static void
cache_put(struct spf_cache *c, uint16_t type, const char *name,
          const void *val, size_t vlen, int64_t expires)
{
    if (c->max_n == 0)
        return;
    struct centry *e = pst_xcalloc(1, sizeof(*e));
    e->type = type;
    e->name = pst_xstrdup(name);
    e->val = pst_xmalloc(vlen);
    memcpy(e->val, val, vlen);
    e->vlen = vlen;
    e->bytes = sizeof(*e) + strlen(name) + 1 + vlen;
    e->expires = expires;
    pthread_mutex_lock(&c->mu);
    struct centry *old = find(c, type, name);
    if (old)
        drop(c, old);
    size_t b = hash(type, name, c->nb);
    e->hnext = c->tab[b];
    c->tab[b] = e;
    lru_front(c, e);
    c->n++;
    c->bytes += e->bytes;
    while (c->tail && (c->n > c->max_n || c->bytes > c->max_bytes))
        drop(c, c->tail);
    pthread_mutex_unlock(&c->mu);
}

/* spf_cache_get - see spf_int.h; d->ttl is what is left of its life */
int
spf_cache_get(struct spf_cache *c, uint16_t type, const char *name,
              struct spf_dns *d)
{
    int64_t expires;
    if (cache_get(c, type, name, d, sizeof(*d), &expires) < 0)
        return 0;
    int64_t left = expires - spf_now_ms();
    d->ttl = left <= 0 ? 0 : (uint32_t)((left + 999) / 1000);
    return 1;
}

void
spf_cache_put(struct spf_cache *c, uint16_t type, const char *name,
              const struct spf_dns *d)
{
    if (d->ttl == 0 || d->status == SPF_D_TEMPFAIL)
        return;
    cache_put(c, type, name, d, offsetof(struct spf_dns, frame) + d->flen,
              spf_now_ms() + (int64_t)d->ttl * 1000);
}

/* spf_cache_get_blob, spf_cache_put_blob - see spf_int.h. */
long
spf_cache_get_blob(struct spf_cache *c, uint16_t kind, const char *key,
                   void *val, size_t cap)
{
    int64_t expires;
    return cache_get(c, kind, key, val, cap, &expires);
}

void
spf_cache_put_blob(struct spf_cache *c, uint16_t kind, const char *key,
                   const void *val, size_t vlen, uint32_t ttl)
{
    if (ttl > 0)
        cache_put(c, kind, key, val, vlen, spf_now_ms() + (int64_t)ttl * 1000);
}

void
spf_cache_counts(struct spf_cache *c, uint64_t *hits, uint64_t *misses,
                 size_t *entries)
{
    pthread_mutex_lock(&c->mu);
    *hits = c->hits;
    *misses = c->misses;
    *entries = c->n;
    pthread_mutex_unlock(&c->mu);
}

void
spf_cache_free(struct spf_cache *c)
{
    if (c == NULL)
        return;
    while (c->head)
        drop(c, c->head);
    free(c->tab);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ---- limits ---- */

static bool
stop(struct spf_lim *l, const char *why)
{
    if (l->stop == NULL)
        l->stop = why;
    return false;
}

/* spf_lim_pre - see spf_int.h. */
bool
spf_lim_pre(struct spf_lim *l, const struct spf_query *q)
{
    bool term = true;
    if (l->stop != NULL)
        return false;
    if (++l->queries > SPF_MAX_QUERIES)
        return stop(l, "too many DNS queries");
    if (q->type == SPF_Q_TXT && !l->initial_done) {
        l->initial_done = true;     /* the identity's own record */
        term = false;
    } else if (q->type == SPF_Q_A || q->type == SPF_Q_AAAA) {
        for (unsigned i = 0; i < l->nfollow; i++) {
            if (pst_strcaseeq(l->follow[i], q->name)) {
                term = false;
                if (l->follow_mx && ++l->follow_used > SPF_MAX_MX_ADDRS)
                    return stop(l, "mx: more than 10 address lookups");
                break;
            }
        }
    }
    l->last_term = term;
    if (term && ++l->terms > SPF_MAX_TERMS)
        return stop(l, "more than 10 DNS-querying terms");
    return true;
}

/* spf_lim_post - see spf_int.h. */
bool
spf_lim_post(struct spf_lim *l, const struct spf_query *q,
             const struct spf_dns *d)
{
    if (d->bad != NULL)
        return stop(l, d->bad);
    if (l->last_term && d->is_void && ++l->voids > SPF_MAX_VOID)
        return stop(l, "more than 2 void lookups");
    if ((q->type == SPF_Q_MX || q->type == SPF_Q_PTR) &&
        d->status == SPF_D_OK) {
        static _Thread_local struct spf_answer a;
        l->nfollow = 0;
        l->follow_used = 0;
        l->follow_mx = q->type == SPF_Q_MX;
        if (spf_dec_answer(d->frame + SPF_FRAME_HDR,
                           d->flen - SPF_FRAME_HDR, &a) == 0)
            for (unsigned i = 0; i < a.n && i < SPF_ANS_NAME_MAX; i++)
                memcpy(l->follow[l->nfollow++], a.u.name[i],
                       strlen(a.u.name[i]) + 1);
    }
    return true;
}
