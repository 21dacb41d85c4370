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

enum qkind { Q_MX, Q_ADDR, Q_PTR };

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
};

struct sockw {
    LIST_ENTRY(sockw) link;
    uv_poll_t poll;
    struct pst_dns *d;
    ares_socket_t fd;
};

struct pst_dns {
    uv_loop_t *loop;
    ares_channel ch;
    bool ch_open;
    uv_timer_t timer;                   /* c-ares timeouts */
    uv_timer_t kick;                    /* deliver the done list */
    unsigned handles;                   /* open uv handles */
    bool closing;
    LIST_HEAD(, sockw) socks;
    TAILQ_HEAD(, pst_dns_query) donel;
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
    free(q);
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
        q->cb == NULL || d->closing) {
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

static void
on_addr(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    struct pst_dns_query *q = arg;

    (void)timeouts;
    q->st = map_status(status);
    if (status == ARES_SUCCESS && ai != NULL) {
        /* IPv6 first, then IPv4, each in the answer's order */
        for (int pass = 0; pass < 2; pass++)
            for (struct ares_addrinfo_node *n = ai->nodes; n; n = n->ai_next)
                if ((n->ai_family == AF_INET6) == (pass == 0))
                    add_ip(q, n->ai_addr);
        if (q->n == 0)
            q->st = PST_DNS_NODATA;
    }
    if (ai != NULL)
        ares_freeaddrinfo(ai);
    finish(q, status);
}

static void
on_ptr(void *arg, int status, int timeouts, struct hostent *h)
{
    struct pst_dns_query *q = arg;

    (void)timeouts;
    q->st = map_status(status);
    if (status == ARES_SUCCESS) {
        if (h != NULL && h->h_name != NULL && h->h_name[0] != '\0' &&
            strlen(h->h_name) <= 255)
            q->name = norm_name(h->h_name);
        else
            q->st = PST_DNS_NODATA;
    }
    finish(q, status);
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
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = family;
    hints.ai_flags = ARES_AI_NOSORT;
    ares_getaddrinfo(d->ch, host, NULL, &hints, on_addr, q);
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
    ares_gethostbyaddr(d->ch, ip->addr, ip->family == AF_INET ? 4 : 16,
                       ip->family, on_ptr, q);
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
    mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
           ARES_OPT_DOMAINS;
    if ((rc = ares_init_options(&d->ch, &ao, mask)) != ARES_SUCCESS) {
        pst_err_add(err, NULL, 0, "c-ares init: %s", ares_strerror(rc));
        free(d);
        return -EIO;
    }
    d->ch_open = true;
    if (o && o->nnameservers && set_servers(d, o, err) != 0) {
        ares_destroy(d->ch);
        free(d);
        return -EINVAL;
    }
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
    d->ch_open = false;
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
