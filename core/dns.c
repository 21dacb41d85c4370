/*
 * dns.c - c-ares driven by the libuv loop.
 *
 * c-ares tells us which sockets it wants watched (ARES_OPT_SOCK_STATE_CB);
 * each gets a uv_poll handle, closed when c-ares lets the socket go. A
 * uv_timer fires at ares_timeout() so retransmissions and timeouts happen
 * without any traffic. c-ares' own callbacks only parse the answer into the
 * query and put it on the done list; a zero-delay timer then calls the
 * user's callbacks from the loop. That keeps two promises: a callback never
 * runs inside the pst_dns_* call that started it, and a cancelled query
 * (cb == NULL) is freed without calling back wherever it is.
 *
 * Ownership: a query is owned by c-ares until its c-ares callback, then by
 * the done list until delivered. pst_dns_free destroys the channel (every
 * outstanding c-ares callback runs with ARES_EDESTRUCTION and frees its
 * query), empties the done list and closes the handles; the struct itself
 * goes with the last close callback.
 *
 * Names and addresses are looked up in /etc/hosts first (a files-only
 * channel: c-ares answers it at once, inside the call), then in the DNS (a
 * DNS-only channel): the order c-ares' default "fb" has, made explicit so
 * that the answer's source is known. With pst_dns_opts.cache, successful
 * PTR and address answers are kept per key for their TTL (the smallest in
 * the answer; from /etc/hosts PST_DNS_HOSTS_TTL), at most
 * PST_DNS_CACHE_TTL_MAX, PST_DNS_CACHE_MAX entries (the oldest goes
 * first); TTL 0 is not kept. A name that does not exist (NXDOMAIN) or has
 * no such record (NODATA) is kept PST_DNS_NEG_TTL seconds - a client
 * without a PTR record is the common case for unknown senders, and each
 * of its connections would otherwise ask again. c-ares' host lookups do
 * not show the negative answer's SOA (whose TTL RFC 2308 would use), so
 * the time is fixed and short, as nscd's negative-time-to-live is. A
 * temporary failure is never kept. A cached answer is delivered from the
 * loop like any other.
 *
 * Limits: PST_DNS_MAX_MX / PST_DNS_MAX_ADDRS per answer; socket watchers
 * are as many as c-ares opens (one or two per name server).
 */
#include "core/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "core/log.h"
#include "core/strmap.h"

enum qkind { Q_MX, Q_ADDR, Q_PTR };

#define PST_DNS_CACHE_MAX 1024
#define PST_DNS_CACHE_TTL_MAX 3600      /* seconds */
#define PST_DNS_HOSTS_TTL 60            /* seconds, for /etc/hosts answers */
#define PST_DNS_NEG_TTL 30              /* seconds, for NXDOMAIN and NODATA */

/* one cached answer: a PTR name or addresses */
struct cache_ent {
    TAILQ_ENTRY(cache_ent) link;        /* oldest first */
    uint64_t expires;                   /* uv_now() ms */
    enum pst_dns_status st;             /* OK, NXDOMAIN or NODATA */
    char *name;
    struct pst_ip *ips;
    size_t n;
    size_t klen;
    char key[];
};

struct pst_dns_query {
    TAILQ_ENTRY(pst_dns_query) link;    /* on the done list */
    struct pst_dns *d;
    enum qkind kind;
    void *cb;                           /* NULL once cancelled */
    void *arg;
    bool done;                          /* c-ares is finished with it */
    enum pst_dns_status st;
    struct pst_dns_mx mx[PST_DNS_MAX_MX];
    struct pst_ip ips[PST_DNS_MAX_ADDRS];
    size_t n;
    char *name;                         /* PTR */
    struct pst_ip ptr_ip;               /* PTR: the address asked about */
    char *host;                         /* ADDR: the name asked about */
    int family;                         /* ADDR: the family asked for */
    unsigned ttl;                       /* seconds the answer may be kept */
    char *key;                          /* cache key (NULL: not cached) */
    size_t klen;
};

struct sockw {
    LIST_ENTRY(sockw) link;
    uv_poll_t poll;
    struct pst_dns *d;
    ares_socket_t fd;
};

struct pst_dns {
    uv_loop_t *loop;
    ares_channel ch;                    /* the DNS only */
    ares_channel files;                 /* /etc/hosts only */
    bool ch_open;
    uv_timer_t timer;                   /* c-ares timeouts */
    uv_timer_t kick;                    /* deliver the done list */
    unsigned handles;                   /* open uv handles */
    bool closing;
    LIST_HEAD(, sockw) socks;
    TAILQ_HEAD(, pst_dns_query) donel;
    struct pst_strmap *cache;           /* key -> cache_ent; NULL: none */
    TAILQ_HEAD(, cache_ent) cache_order;
};

static void update_timer(struct pst_dns *d);

static void
maybe_free(struct pst_dns *d)
{
    if (d->closing && d->handles == 0)
        free(d);
}

static void
on_handle_closed(uv_handle_t *h)
{
    struct pst_dns *d = h->data;
    d->handles--;
    maybe_free(d);
}

static void
on_sock_closed(uv_handle_t *h)
{
    struct sockw *w = h->data;
    struct pst_dns *d = w->d;
    free(w);
    d->handles--;
    maybe_free(d);
}

static void
on_poll(uv_poll_t *p, int status, int events)
{
    struct sockw *w = p->data;
    struct pst_dns *d = w->d;
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

    /* an error on the socket: let c-ares read it and see the failure */
    if (status < 0 || (events & UV_READABLE))
        rfd = w->fd;
    if (status < 0 || (events & UV_WRITABLE))
        wfd = w->fd;
    ares_process_fd(d->ch, rfd, wfd);
    update_timer(d);
}

static void
sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    struct pst_dns *d = data;
    struct sockw *w;

    LIST_FOREACH(w, &d->socks, link)
        if (w->fd == fd)
            break;
    if (!readable && !writable) {
        if (w != NULL) {
            LIST_REMOVE(w, link);
            uv_poll_stop(&w->poll);
            uv_close((uv_handle_t *)&w->poll, on_sock_closed);
        }
        return;
    }
    if (w == NULL) {
        w = pst_xcalloc(1, sizeof(*w));
        w->d = d;
        w->fd = fd;
        if (uv_poll_init_socket(d->loop, &w->poll, fd) != 0) {
            /* c-ares will time the query out */
            pst_err("event=dns_error error=\"cannot watch socket\"");
            free(w);
            return;
        }
        w->poll.data = w;
        d->handles++;
        LIST_INSERT_HEAD(&d->socks, w, link);
    }
    uv_poll_start(&w->poll,
                  (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0),
                  on_poll);
}

static void
on_timer(uv_timer_t *t)
{
    struct pst_dns *d = t->data;
    ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    update_timer(d);
}

static void
update_timer(struct pst_dns *d)
{
    struct timeval tv, *tvp;

    if (d->closing)
        return;
    tvp = ares_timeout(d->ch, NULL, &tv);
    if (tvp == NULL) {
        uv_timer_stop(&d->timer);
        return;
    }
    uint64_t ms = (uint64_t)tvp->tv_sec * 1000 + (uint64_t)tvp->tv_usec / 1000;
    uv_timer_start(&d->timer, on_timer, ms ? ms : 1, 0);
}

/* ---- results ---- */

static void
query_free(struct pst_dns_query *q)
{
    if (q->kind == Q_MX)
        for (size_t i = 0; i < q->n; i++)
            free(q->mx[i].host);
    free(q->name);
    free(q->host);
    free(q->key);
    free(q);
}

/* ---- the cache ---- */

static void
cache_ent_free(void *v)
{
    struct cache_ent *e = v;
    free(e->name);
    free(e->ips);
    free(e);
}

static void
cache_drop(struct pst_dns *d, struct cache_ent *e)
{
    TAILQ_REMOVE(&d->cache_order, e, link);
    pst_strmap_del(d->cache, e->key, e->klen);
    cache_ent_free(e);
}

/* cache_get - the live entry for key, or NULL (an expired one is gone). */
static struct cache_ent *
cache_get(struct pst_dns *d, const char *key, size_t klen)
{
    struct cache_ent *e = pst_strmap_get(d->cache, key, klen);
    if (e != NULL && uv_now(d->loop) >= e->expires) {
        cache_drop(d, e);
        e = NULL;
    }
    return e;
}

/* cache_put - keep q's answer (OK, a TTL, a key) for its TTL. */
static void
cache_put(struct pst_dns *d, struct pst_dns_query *q)
{
    bool negative = q->st == PST_DNS_NXDOMAIN || q->st == PST_DNS_NODATA;
    if (d->cache == NULL || q->key == NULL ||
        (!negative && (q->st != PST_DNS_OK || q->ttl == 0)))
        return;
    struct cache_ent *old = pst_strmap_get(d->cache, q->key, q->klen);
    if (old != NULL)
        cache_drop(d, old);
    if (pst_strmap_count(d->cache) >= PST_DNS_CACHE_MAX)
        cache_drop(d, TAILQ_FIRST(&d->cache_order));
    struct cache_ent *e = pst_xcalloc(1, sizeof(*e) + q->klen);
    unsigned ttl = negative                         ? PST_DNS_NEG_TTL
                   : q->ttl < PST_DNS_CACHE_TTL_MAX ? q->ttl
                                                    : PST_DNS_CACHE_TTL_MAX;
    e->expires = uv_now(d->loop) + (uint64_t)ttl * 1000;
    e->st = q->st;
    e->klen = q->klen;
    memcpy(e->key, q->key, q->klen);
    if (negative) {
        /* nothing but the status */
    } else if (q->kind == Q_PTR) {
        e->name = pst_xstrdup(q->name);
    } else {
        e->ips = pst_xcalloc(q->n, sizeof(*e->ips));
        memcpy(e->ips, q->ips, q->n * sizeof(*e->ips));
        e->n = q->n;
    }
    void **slot = pst_strmap_slot(d->cache, e->key, e->klen, NULL);
    *slot = e;
    TAILQ_INSERT_TAIL(&d->cache_order, e, link);
}

static void
on_kick(uv_timer_t *t)
{
    struct pst_dns *d = t->data;
    struct pst_dns_query *q;

    while ((q = TAILQ_FIRST(&d->donel)) != NULL) {
        TAILQ_REMOVE(&d->donel, q, link);
        if (q->cb != NULL) {
            void *cb = q->cb;
            q->cb = NULL;
            switch (q->kind) {
            case Q_MX:
                ((pst_dns_mx_cb)cb)(q->arg, q->st, q->mx, q->n);
                break;
            case Q_ADDR:
                ((pst_dns_addr_cb)cb)(q->arg, q->st, q->ips, q->n);
                break;
            case Q_PTR:
                ((pst_dns_ptr_cb)cb)(q->arg, q->st, q->name);
                break;
            }
        }
        query_free(q);
    }
}

static enum pst_dns_status
map_status(int status)
{
    switch (status) {
    case ARES_SUCCESS:
        return PST_DNS_OK;
    case ARES_ENOTFOUND:
    case ARES_ENONAME:
        return PST_DNS_NXDOMAIN;
    case ARES_ENODATA:
        return PST_DNS_NODATA;
    case ARES_EBADNAME:
        return PST_DNS_BADNAME;
    default:
        return PST_DNS_TEMPFAIL;
    }
}

/* finish - called from c-ares: queue the query for delivery, or free it. */
static void
finish(struct pst_dns_query *q, int status)
{
    struct pst_dns *d = q->d;

    q->done = true;
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED ||
        d->closing) {
        query_free(q);
        return;
    }
    cache_put(d, q);                    /* also for a cancelled query */
    if (q->cb == NULL) {
        query_free(q);
        return;
    }
    TAILQ_INSERT_TAIL(&d->donel, q, link);
    uv_timer_start(&d->kick, on_kick, 0, 0);
}

static char *
norm_name(const char *s)
{
    size_t n = strlen(s);
    if (n > 0 && s[n - 1] == '.')
        n--;
    char *r = pst_xstrndup(s, n);
    for (char *p = r; *p; p++)
        *p = (char)pst_tolower((unsigned char)*p);
    return r;
}

static int
mx_cmp(const void *a, const void *b)
{
    const struct pst_dns_mx *x = a, *y = b;
    return x->pref < y->pref ? -1 : x->pref > y->pref;
}

static void
on_mx(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct pst_dns_query *q = arg;
    struct ares_mx_reply *mx = NULL;

    (void)timeouts;
    if (status == ARES_SUCCESS)
        status = ares_parse_mx_reply(abuf, alen, &mx);
    q->st = map_status(status);
    if (status == ARES_SUCCESS) {
        for (struct ares_mx_reply *m = mx; m && q->n < PST_DNS_MAX_MX;
             m = m->next) {
            q->mx[q->n].pref = m->priority;
            q->mx[q->n].host = norm_name(m->host ? m->host : "");
            q->n++;
        }
        ares_free_data(mx);
        if (q->n == 0)
            q->st = PST_DNS_NODATA;
        /* stable: equal preferences keep the answer's order */
        for (size_t i = 1; i < q->n; i++)
            for (size_t j = i; j > 0 && mx_cmp(&q->mx[j - 1], &q->mx[j]) > 0;
                 j--) {
                struct pst_dns_mx t = q->mx[j];
                q->mx[j] = q->mx[j - 1];
                q->mx[j - 1] = t;
            }
    }
    finish(q, status);
}

static void
add_ip(struct pst_dns_query *q, const struct sockaddr *sa)
{
    struct pst_ip ip;

    if (q->n >= PST_DNS_MAX_ADDRS || pst_ip_from_sockaddr(&ip, sa) != 0)
        return;
    for (size_t i = 0; i < q->n; i++)
        if (pst_ip_equal(&q->ips[i], &ip))
            return;
    q->ips[q->n++] = ip;
}

/* answer_ttl - the smallest TTL of the answer section of a DNS reply (0
 * if there is none or the reply does not parse). */
static unsigned
answer_ttl(const unsigned char *abuf, int alen)
{
    if (alen < 12)
        return 0;
    unsigned qd = (unsigned)abuf[4] << 8 | abuf[5];
    unsigned an = (unsigned)abuf[6] << 8 | abuf[7];
    const unsigned char *p = abuf + 12, *end = abuf + alen;
    unsigned min = 0;
    bool any = false;
    for (unsigned i = 0; i < qd + an; i++) {
        char *nm;
        long enclen;
        if (p >= end ||
            ares_expand_name(p, abuf, alen, &nm, &enclen) != ARES_SUCCESS)
            return 0;
        ares_free_string(nm);
        p += enclen;
        if (i < qd) {
            p += 4;                     /* type, class */
            continue;
        }
        if (end - p < 10)
            return 0;
        unsigned ttl = (unsigned)p[4] << 24 | (unsigned)p[5] << 16 |
                       (unsigned)p[6] << 8 | p[7];
        unsigned rdlen = (unsigned)p[8] << 8 | p[9];
        p += 10 + rdlen;
        if (p > end)
            return 0;
        if (ttl > 0x7fffffffu)          /* RFC 2181 8: read as 0 */
            ttl = 0;
        min = any && min < ttl ? min : ttl;
        any = true;
    }
    return min;
}

/* take_addrs - ai's addresses into q: IPv6 first, then IPv4, each in the
 * answer's order; the TTL the smallest of the addresses' and names'. */
static void
take_addrs(struct pst_dns_query *q, struct ares_addrinfo *ai)
{
    unsigned ttl = 0;
    bool any = false;
    for (int pass = 0; pass < 2; pass++)
        for (struct ares_addrinfo_node *n = ai->nodes; n; n = n->ai_next)
            if ((n->ai_family == AF_INET6) == (pass == 0)) {
                add_ip(q, n->ai_addr);
                unsigned t = n->ai_ttl > 0 ? (unsigned)n->ai_ttl : 0;
                ttl = any && ttl < t ? ttl : t;
                any = true;
            }
    for (struct ares_addrinfo_cname *c = ai->cnames; c; c = c->next) {
        unsigned t = c->ttl > 0 ? (unsigned)c->ttl : 0;
        ttl = ttl < t ? ttl : t;
    }
    q->ttl = ttl;
}

/* on_addr - the DNS's answer. */
static void
on_addr(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    struct pst_dns_query *q = arg;

    (void)timeouts;
    q->st = map_status(status);
    if (status == ARES_SUCCESS && ai != NULL) {
        take_addrs(q, ai);
        if (q->n == 0)
            q->st = PST_DNS_NODATA;
    }
    if (ai != NULL)
        ares_freeaddrinfo(ai);
    finish(q, status);
}

static void
addr_hints(struct ares_addrinfo_hints *hints, int family)
{
    memset(hints, 0, sizeof(*hints));
    hints->ai_family = family;
    hints->ai_flags = ARES_AI_NOSORT;
}

/* on_addr_files - /etc/hosts' answer (given inside the call that asked):
 * the name found there, or the question goes to the DNS. */
static void
on_addr_files(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    struct pst_dns_query *q = arg;
    struct ares_addrinfo_hints hints;

    (void)timeouts;
    if (status == ARES_SUCCESS && ai != NULL) {
        take_addrs(q, ai);
        q->ttl = PST_DNS_HOSTS_TTL;
    }
    if (ai != NULL)
        ares_freeaddrinfo(ai);
    if (q->n > 0 || status == ARES_EDESTRUCTION || q->d->closing) {
        q->st = PST_DNS_OK;
        finish(q, q->n > 0 ? ARES_SUCCESS : ARES_EDESTRUCTION);
        return;
    }
    addr_hints(&hints, q->family);
    ares_getaddrinfo(q->d->ch, q->host, NULL, &hints, on_addr, q);
}

/* on_ptr - the DNS's answer. */
static void
on_ptr(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct pst_dns_query *q = arg;
    struct hostent *h = NULL;

    (void)timeouts;
    if (status == ARES_SUCCESS)
        status = ares_parse_ptr_reply(
            abuf, alen, q->ptr_ip.addr, q->ptr_ip.family == AF_INET ? 4 : 16,
            q->ptr_ip.family, &h);
    q->st = map_status(status);
    if (status == ARES_SUCCESS) {
        if (h != NULL && h->h_name != NULL && h->h_name[0] != '\0' &&
            strlen(h->h_name) <= 255) {
            q->name = norm_name(h->h_name);
            q->ttl = answer_ttl(abuf, alen);
        } else {
            q->st = PST_DNS_NODATA;
        }
    }
    if (h != NULL)
        ares_free_hostent(h);
    finish(q, status);
}

/* arpa_name - the in-addr.arpa / ip6.arpa name of ip (out: 80 octets). */
static void
arpa_name(char *out, const struct pst_ip *ip)
{
    static const char hex[] = "0123456789abcdef";
    if (ip->family == AF_INET) {
        sprintf(out, "%u.%u.%u.%u.in-addr.arpa", ip->addr[3], ip->addr[2],
                ip->addr[1], ip->addr[0]);
        return;
    }
    char *p = out;
    for (int i = 15; i >= 0; i--) {
        *p++ = hex[ip->addr[i] & 15];
        *p++ = '.';
        *p++ = hex[ip->addr[i] >> 4];
        *p++ = '.';
    }
    strcpy(p, "ip6.arpa");
}

/* on_ptr_files - /etc/hosts' answer (given inside the call that asked):
 * the name found there, or the question goes to the DNS. */
static void
on_ptr_files(void *arg, int status, int timeouts, struct hostent *h)
{
    struct pst_dns_query *q = arg;
    char arpa[80];

    (void)timeouts;
    if (status == ARES_SUCCESS && h != NULL && h->h_name != NULL &&
        h->h_name[0] != '\0' && strlen(h->h_name) <= 255) {
        q->name = norm_name(h->h_name);
        q->st = PST_DNS_OK;
        q->ttl = PST_DNS_HOSTS_TTL;
        finish(q, ARES_SUCCESS);
        return;
    }
    if (status == ARES_EDESTRUCTION || q->d->closing) {
        finish(q, ARES_EDESTRUCTION);
        return;
    }
    arpa_name(arpa, &q->ptr_ip);
    ares_query(q->d->ch, arpa, 1 /* C_IN */, 12 /* T_PTR */, on_ptr, q);
}

/* ---- queries ---- */

static struct pst_dns_query *
query_new(struct pst_dns *d, enum qkind k, void *cb, void *arg)
{
    struct pst_dns_query *q;

    if (d->closing)
        return NULL;
    q = pst_xcalloc(1, sizeof(*q));
    q->d = d;
    q->kind = k;
    q->cb = cb;
    q->arg = arg;
    return q;
}

/* fail_now - answer without asking (bad input), still from the loop. */
static struct pst_dns_query *
fail_now(struct pst_dns_query *q, enum pst_dns_status st)
{
    q->st = st;
    q->done = true;
    TAILQ_INSERT_TAIL(&q->d->donel, q, link);
    uv_timer_start(&q->d->kick, on_kick, 0, 0);
    return q;
}

/* cached - answer q from the cache if it holds key (kept in q for the
 * answer otherwise). */
static bool
cached(struct pst_dns_query *q, const char *key, size_t klen)
{
    struct pst_dns *d = q->d;
    if (d->cache == NULL)
        return false;
    struct cache_ent *e = cache_get(d, key, klen);
    if (e == NULL) {
        q->key = pst_xmalloc(klen);
        memcpy(q->key, key, klen);
        q->klen = klen;
        return false;
    }
    if (e->name != NULL)
        q->name = pst_xstrdup(e->name);
    if (e->n > 0)
        memcpy(q->ips, e->ips, e->n * sizeof(*e->ips));
    q->n = e->n;
    fail_now(q, e->st);
    return true;
}

static bool
name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 255)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

struct pst_dns_query *
pst_dns_mx(struct pst_dns *d, const char *domain, pst_dns_mx_cb cb, void *arg)
{
    struct pst_dns_query *q = query_new(d, Q_MX, (void *)cb, arg);

    if (q == NULL)
        return NULL;
    if (!name_ok(domain))
        return fail_now(q, PST_DNS_BADNAME);
    /* ares_query: no search list, the domain is absolute */
    ares_query(d->ch, domain, 1 /* C_IN */, 15 /* T_MX */, on_mx, q);
    update_timer(d);
    return q;
}

struct pst_dns_query *
pst_dns_addr(struct pst_dns *d, const char *host, int family,
             pst_dns_addr_cb cb, void *arg)
{
    struct pst_dns_query *q = query_new(d, Q_ADDR, (void *)cb, arg);
    struct ares_addrinfo_hints hints;
    struct pst_ip ip;

    if (q == NULL)
        return NULL;
    if (pst_ip_parse(&ip, host) == 0) {
        q->ips[0] = ip;
        q->n = 1;
        return fail_now(q, PST_DNS_OK);
    }
    if (!name_ok(host))
        return fail_now(q, PST_DNS_BADNAME);
    char key[262];
    size_t klen = (size_t)snprintf(key, sizeof(key), "a%d:%s", family, host);
    if (cached(q, key, klen))
        return q;
    q->host = pst_xstrdup(host);
    q->family = family;
    addr_hints(&hints, family);
    /* /etc/hosts, answered inside the call; then the DNS */
    ares_getaddrinfo(d->files, host, NULL, &hints, on_addr_files, q);
    update_timer(d);
    return q;
}

struct pst_dns_query *
pst_dns_ptr(struct pst_dns *d, const struct pst_ip *ip, pst_dns_ptr_cb cb,
            void *arg)
{
    struct pst_dns_query *q = query_new(d, Q_PTR, (void *)cb, arg);

    if (q == NULL)
        return NULL;
    if (ip->family != AF_INET && ip->family != AF_INET6)
        return fail_now(q, PST_DNS_BADNAME);
    char key[18] = {'p', (char)(ip->family == AF_INET ? 4 : 6)};
    size_t alen = ip->family == AF_INET ? 4 : 16;
    memcpy(key + 2, ip->addr, alen);
    if (cached(q, key, 2 + alen))
        return q;
    q->ptr_ip = *ip;
    /* /etc/hosts, answered inside the call; then the DNS */
    ares_gethostbyaddr(d->files, ip->addr, (int)alen, ip->family,
                       on_ptr_files, q);
    update_timer(d);
    return q;
}

void
pst_dns_cancel(struct pst_dns_query *q)
{
    /* c-ares (or the done list) still owns it: it is freed there, its
     * result unread */
    if (q != NULL)
        q->cb = NULL;
}

const char *
pst_dns_strstatus(enum pst_dns_status st)
{
    switch (st) {
    case PST_DNS_OK:
        return "ok";
    case PST_DNS_NXDOMAIN:
        return "nxdomain";
    case PST_DNS_NODATA:
        return "nodata";
    case PST_DNS_TEMPFAIL:
        return "tempfail";
    default:
        return "badname";
    }
}

/* ---- life cycle ---- */

static int
set_servers(struct pst_dns *d, const struct pst_dns_opts *o,
            struct pst_err *err)
{
    size_t len = 1;
    char *csv, *p;
    int rc;

    for (size_t i = 0; i < o->nnameservers; i++)
        len += strlen(o->nameservers[i]) + 1;
    p = csv = pst_xmalloc(len);
    for (size_t i = 0; i < o->nnameservers; i++)
        p += sprintf(p, "%s%s", i ? "," : "", o->nameservers[i]);
    *p = '\0';
    rc = ares_set_servers_ports_csv(d->ch, csv);
    if (rc != ARES_SUCCESS)
        pst_err_add(err, NULL, 0, "resolver.nameservers \"%s\": %s", csv,
                    ares_strerror(rc));
    free(csv);
    return rc == ARES_SUCCESS ? 0 : -EINVAL;
}

int
pst_dns_new(struct pst_dns **dp, uv_loop_t *loop,
            const struct pst_dns_opts *o, struct pst_err *err)
{
    static bool lib_init;
    struct pst_dns *d;
    struct ares_options ao;
    int rc, mask;

    if (!lib_init) {
        if ((rc = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS) {
            pst_err_add(err, NULL, 0, "c-ares: %s", ares_strerror(rc));
            return -EIO;
        }
        lib_init = true;
    }
    d = pst_xcalloc(1, sizeof(*d));
    d->loop = loop;
    LIST_INIT(&d->socks);
    TAILQ_INIT(&d->donel);
    memset(&ao, 0, sizeof(ao));
    ao.sock_state_cb = sock_state_cb;
    ao.sock_state_cb_data = d;
    ao.timeout = o && o->timeout_ms ? (int)o->timeout_ms : 5000;
    ao.tries = o && o->tries ? (int)o->tries : 2;
    ao.ndomains = 0;                    /* no search list: names are FQDNs */
    ao.domains = NULL;
    ao.lookups = (char *)"b";           /* the DNS; d->files: /etc/hosts */
    mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
           ARES_OPT_DOMAINS | ARES_OPT_LOOKUPS;
    if ((rc = ares_init_options(&d->ch, &ao, mask)) != ARES_SUCCESS) {
        pst_err_add(err, NULL, 0, "c-ares init: %s", ares_strerror(rc));
        free(d);
        return -EIO;
    }
    ao.lookups = (char *)"f";
    if ((rc = ares_init_options(&d->files, &ao, mask)) != ARES_SUCCESS) {
        pst_err_add(err, NULL, 0, "c-ares init: %s", ares_strerror(rc));
        ares_destroy(d->ch);
        free(d);
        return -EIO;
    }
    d->ch_open = true;
    if (o && o->nnameservers && set_servers(d, o, err) != 0) {
        ares_destroy(d->ch);
        ares_destroy(d->files);
        free(d);
        return -EINVAL;
    }
    TAILQ_INIT(&d->cache_order);
    if (o && o->cache)
        d->cache = pst_strmap_new();
    uv_timer_init(loop, &d->timer);
    uv_timer_init(loop, &d->kick);
    d->timer.data = d;
    d->kick.data = d;
    d->handles = 2;
    *dp = d;
    return 0;
}

void
pst_dns_free(struct pst_dns *d)
{
    struct pst_dns_query *q;
    struct sockw *w;

    if (d == NULL)
        return;
    d->closing = true;
    /* every pending c-ares callback runs now (ARES_EDESTRUCTION) */
    ares_destroy(d->ch);
    ares_destroy(d->files);
    d->ch_open = false;
    if (d->cache != NULL)
        pst_strmap_free(d->cache, cache_ent_free);
    d->cache = NULL;
    while ((q = TAILQ_FIRST(&d->donel)) != NULL) {
        TAILQ_REMOVE(&d->donel, q, link);
        query_free(q);
    }
    while ((w = LIST_FIRST(&d->socks)) != NULL) {
        LIST_REMOVE(w, link);
        uv_poll_stop(&w->poll);
        uv_close((uv_handle_t *)&w->poll, on_sock_closed);
    }
    uv_close((uv_handle_t *)&d->timer, on_handle_closed);
    uv_close((uv_handle_t *)&d->kick, on_handle_closed);
}
