/*
 * deliver.c - routes, destinations, connections, MX resolution, dead-host
 * back-off and rate shaping on top of queue/smtp_client.c (see deliver.h).
 *
 * Objects, all owned by the manager on the loop thread:
 *   req   one attempt handed over by the queue manager; done when its
 *         parts are
 *   part  the recipients of one req that go to one destination
 *   dest  one next hop (route key, and the domain for mx); a FIFO of
 *         parts, its connections, its dead time and its pacing; never
 *         freed before the manager
 *   conn  one pst_smtpc: opening (over the candidate addresses), busy with
 *         a part, or idle (with a timer)
 *
 * Name checked under tls = verify (and sent as SNI): the route's tls_name
 * if set; else for smtp:HOST:PORT / lmtp:HOST:PORT the HOST; for
 * smtp:[IP]:PORT the IP address (an IP subjectAltName); for mx the MX host
 * name the address came from. Unix sockets are not encrypted.
 *
 * MX (RFC 5321 5.1): every MX host and its addresses (IPv6 first) in one
 * attempt, equal preferences shuffled; no MX record: the domain's own
 * addresses; NXDOMAIN fails 5.1.2; SERVFAIL/timeout defers 4.4.3; a null
 * MX (RFC 7505) fails 5.1.10; an MX address that is one of postern's own
 * listeners (same port) is a mail loop, 5.4.6.
 */
#include "queue/deliver.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/un.h>

#include "core/dns.h"
#include "core/log.h"
#include "core/util.h"
#include "queue/smtp_client.h"
#include "queue/spool_int.h"
#include "queue/tls_sessions.h"
#include "core/pool.h"

#define MAX_CANDIDATES 64

enum dkind { D_SMTP, D_LMTP, D_MX, D_MAILDIR };

struct req;
struct dest;
struct conn;

struct part {
    TAILQ_ENTRY(part) link;
    struct req *req;
    struct dest *dest;
    size_t n;
    size_t *ri;                     /* indexes into req->dl arrays */
    struct pst_smtpc_rcpt *rc;
    struct pst_smtpc_msg msg;
    struct pst_spool_reader *reader;
    /* body read on the pool, into the part's own buffer (the connection
     * may be gone when the read returns) */
    uv_work_t work;
    char *rown;
    void *rbuf;
    size_t rlen;
    ssize_t rres;
    bool sent;                      /* handed to a connection before */
    struct pst_smtpc *rc_conn;
    pst_smtpc_read_done rdone;
    bool reading;
    bool abandoned;                 /* finished while a read was out */
    /* maildir: a job on the queue's workers */
    LIST_ENTRY(part) mlink;
    struct pst_pool_job job;
    struct pst_delivery sub;
    size_t *sub_idx;
    struct pst_rcpt_result *sub_res;
};
TAILQ_HEAD(partl, part);

struct req {
    LIST_ENTRY(req) link;
    struct pst_deliver *d;
    struct pst_delivery *dl;
    pst_deliver_done done;
    void *arg;
    unsigned parts_left;
    uv_timer_t kick;                /* report from the loop */
    bool kicked;
};

struct cand {
    struct sockaddr_storage sa;
    char name[256];                 /* host for texts, TLS name for MX */
};

struct conn {
    LIST_ENTRY(conn) link;
    struct dest *dest;
    struct pst_smtpc *c;
    struct part *part;              /* busy with */
    bool idle;
    uv_timer_t idle_timer;
    unsigned msgs;
    struct cand *cands;
    size_t ncands, next;
    struct pst_dns_query *q;        /* resolving */
    struct mxstate *ms;             /* MX host address lookups */
    size_t mx_pending;              /* address lookups still out */
    struct pst_smtpc_opts o;        /* per connection: tls_name varies */
    char last_err[PST_SMTPC_TEXT];
    bool last_perm;
    size_t plain_idx;               /* candidate retried without TLS (may) */
    bool opened;
    bool closing;
};
LIST_HEAD(connl, conn);

struct dest {
    LIST_ENTRY(dest) link;
    struct pst_deliver *d;
    char *key;
    enum dkind kind;
    const struct pst_route_conf *rc; /* NULL: default route */
    char *host;                     /* smtp/lmtp host, or mx domain */
    unsigned port;
    bool literal;                   /* [ip] */
    char *path;                     /* unix socket or maildir */
    struct pst_smtpc_opts o;
    struct pst_mime_limits mime;    /* o.mime_limits points here */
    unsigned conc;
    unsigned nconns;
    struct partl parts;
    struct connl conns;
    uint64_t dead_until;
    bool proven;                    /* a connection succeeded since the
                                       last failure: open more than one */
    char dead_text[PST_SMTPC_TEXT];
    uint64_t spacing_ms;            /* rate shaping, 0 = none */
    uint64_t next_ok;
    uv_timer_t timer;
    bool timer_armed;
    void *maildir_route;
};

struct mxstate;

struct pst_deliver {
    uv_loop_t *loop;
    const struct pst_conf *conf;
    struct pst_dns *dns;
    SSL_CTX *ssl;
    struct pst_tls_sessions *sessions; /* to resume; NULL: cache off */
    LIST_HEAD(, dest) dests;
    LIST_HEAD(, req) reqs;
    pst_deliver_submit submit;
    void *submit_ctx;
    unsigned handles;
    bool closing;
    unsigned mjobs;                 /* maildir jobs on the workers */
    LIST_HEAD(, part) mparts;       /* ... their parts */
    bool zombie;                    /* freed, waiting for mjobs == 0 */
    uint64_t rng;
};

static void dest_kick(struct dest *ds);
static void conn_open_next(struct conn *cn);

/* ---- helpers ---- */

static void
res_set(struct pst_rcpt_result *r, enum pst_dres v, const char *text)
{
    r->res = v;
    snprintf(r->text, sizeof(r->text), "%s", text);
}

static void
free_data(uv_handle_t *h)
{
    free(h->data);
}

/* req_report - the attempt is complete: tell the queue manager. */
static void
req_report(struct req *q)
{
    LIST_REMOVE(q, link);
    uv_timer_stop(&q->kick);
    uv_close((uv_handle_t *)&q->kick, free_data);
    q->done(q->arg, q->dl);
}

static void
on_req_kick(uv_timer_t *t)
{
    req_report(t->data);
}

/* req_complete - report from the loop; synchronously once stopping. */
static void
req_complete(struct req *q)
{
    if (q->d->closing) {
        req_report(q);
        return;
    }
    q->kicked = true;
    uv_timer_start(&q->kick, on_req_kick, 0, 0);
}

static void
part_free(struct part *p)
{
    if (p->reader)
        pst__reader_close(p->reader);
    free(p->rown);
    free(p->ri);
    free(p->rc);
    free(p->sub_idx);
    free(p->sub_res);
    free(p);
}

/* part_done - results are in p->rc (smtp) or set directly; the part goes,
 * and the req reports when it was the last - or, when others are still
 * open, the part's results go to the queue at once (dl->progress). */
static void
part_done(struct part *p)
{
    struct req *q = p->req;

    if (q != NULL && q->parts_left > 1 && !q->d->closing &&
        q->dl->progress != NULL)
        q->dl->progress(q->dl, p->ri, p->n);
    if (p->reading) {
        /* the pool still reads into this part: free it when it returns */
        p->abandoned = true;
    } else {
        part_free(p);
    }
    if (q != NULL && --q->parts_left == 0)
        req_complete(q);
}

static void
part_results(struct part *p)
{
    struct pst_delivery *dl = p->req->dl;
    for (size_t k = 0; k < p->n; k++) {
        const struct pst_smtpc_rcpt *x = &p->rc[k];
        enum pst_dres v = x->res == PST_SMTPC_OK     ? PST_DRES_OK
                          : x->res == PST_SMTPC_PERM ? PST_DRES_PERM
                                                     : PST_DRES_TEMP;
        res_set(&dl->res[p->ri[k]], v,
                x->res == PST_SMTPC_PENDING ? "4.4.0 not attempted"
                                            : x->text);
        dl->res[p->ri[k]].hint = x->notify_passed ? PST_HINT_PASSED
                                 : x->final       ? PST_HINT_DELIVERED
                                                  : PST_HINT_RELAYED;
    }
}

/* part_fail - every recipient of p gets v/text. */
static void
part_fail(struct part *p, enum pst_dres v, const char *text,
          unsigned retry_after)
{
    struct pst_delivery *dl = p->req->dl;
    for (size_t k = 0; k < p->n; k++)
        res_set(&dl->res[p->ri[k]], v, text);
    if (retry_after && (dl->retry_after == 0 || retry_after <
                                                    dl->retry_after))
        dl->retry_after = retry_after;
    part_done(p);
}

/* ---- body reads: from the page cache here, else on the pool ---- */

static void
read_work(uv_work_t *w)
{
    struct part *p = w->data;
    p->rres = pst_spool_reader_read(p->reader, p->rown, p->rlen);
}

/* note_corrupt - bad data in the queue file: the queue moves it aside. */
static void
note_corrupt(struct part *p)
{
    if (p->rres == -EBADMSG && p->req != NULL)
        p->req->dl->corrupt = true;
}

static void
read_after(uv_work_t *w, int status)
{
    struct part *p = w->data;
    p->reading = false;
    if (p->abandoned) {
        part_free(p);
        return;
    }
    if (status == 0 && p->rres > 0)
        memcpy(p->rbuf, p->rown, (size_t)p->rres);
    note_corrupt(p);
    p->rdone(p->rc_conn, status < 0 ? status : p->rres);
}

static void
body_read(void *arg, void *buf, size_t len, struct pst_smtpc *c,
          pst_smtpc_read_done done)
{
    struct part *p = arg;
    /* a small message whose text is in the page cache (one just committed
     * to the log, almost always) is read here, with its filters' edits
     * applied: no round trip through the pool for a copy of a few KiB */
    ssize_t n = pst_spool_reader_try_read(p->reader, buf, len);
    if (n != -EAGAIN) {
        p->rres = n;
        note_corrupt(p);
        done(c, n);
        return;
    }
    if (p->rown == NULL || len > p->rlen)
        p->rown = pst_xrealloc(p->rown, len);
    p->rbuf = buf;
    p->rlen = len;
    p->rc_conn = c;
    p->rdone = done;
    p->work.data = p;
    p->reading = true;
    int rc = uv_queue_work(p->dest->d->loop, &p->work, read_work, read_after);
    if (rc < 0) {
        p->rres = rc;
        p->reading = false;
        done(c, rc);            /* the client tolerates this */
    }
}

static int
body_rewind(void *arg)
{
    struct part *p = arg;
    return pst_spool_reader_rewind(p->reader);
}

/* ---- connections ---- */

static void mx_free(struct conn *cn);

static void
conn_closed(uv_handle_t *h)
{
    struct conn *cn = h->data;
    free(cn->cands);
    free(cn);
}

static void
conn_free(struct conn *cn)
{
    struct dest *ds = cn->dest;
    LIST_REMOVE(cn, link);
    ds->nconns--;
    if (cn->q)
        pst_dns_cancel(cn->q);
    mx_free(cn);
    if (cn->c)
        pst_smtpc_close(cn->c);
    uv_timer_stop(&cn->idle_timer);
    uv_close((uv_handle_t *)&cn->idle_timer, conn_closed);
}

static void
on_idle_timeout(uv_timer_t *t)
{
    struct conn *cn = t->data;
    struct dest *ds = cn->dest;
    conn_free(cn);
    dest_kick(ds);
}

static void on_sent(void *arg, struct pst_smtpc *c, bool reusable);

/* on_gone - an idle connection died (peer closed, timeout). */
static void
on_gone(void *arg, struct pst_smtpc *c)
{
    struct conn *cn = arg;
    struct dest *ds = cn->dest;
    (void)c;
    cn->c = NULL;
    conn_free(cn);
    dest_kick(ds);
}

static void
conn_send(struct conn *cn, struct part *p)
{
    struct dest *ds = cn->dest;
    int rc;

    cn->idle = false;
    uv_timer_stop(&cn->idle_timer);
    cn->part = p;
    cn->msgs++;
    if (p->reader == NULL) {
        const struct pst_delivery *dl = p->req->dl;
        rc = pst__reader_open(&p->reader, &dl->src, dl->qid);
        if (rc != 0) {
            char t[200];
            snprintf(t, sizeof(t), "4.3.0 cannot open the queue file: %s",
                     strerror(-rc));
            cn->part = NULL;
            cn->idle = true;
            part_fail(p, PST_DRES_TEMP, t, 0);
            dest_kick(ds);
            return;
        }
    } else if (p->sent) {
        pst_spool_reader_rewind(p->reader);
    }
    p->sent = true;
    p->msg.qid = p->req->dl->qid;
    p->msg.env = p->req->dl->env;
    p->msg.rcpts = p->rc;
    p->msg.n = p->n;
    p->msg.body.arg = p;
    p->msg.body.read = body_read;
    p->msg.body.rewind = body_rewind;
    p->msg.body.size = pst_spool_reader_size(p->reader);
    if (ds->spacing_ms) {
        uint64_t now = uv_now(ds->d->loop);
        ds->next_ok = PST_MAX(now, ds->next_ok) + ds->spacing_ms;
    }
    pst_smtpc_send(cn->c, &p->msg, on_sent, cn);
}

static void
on_sent(void *arg, struct pst_smtpc *c, bool reusable)
{
    struct conn *cn = arg;
    struct dest *ds = cn->dest;
    struct part *p = cn->part;

    cn->part = NULL;
    part_results(p);
    part_done(p);
    if (!reusable ||
        cn->msgs >= ds->d->conf->delivery.messages_per_connection) {
        /* a dead client returns at once from close (it is still valid
         * inside its own callback) */
        pst_smtpc_close(cn->c);
        cn->c = NULL;
        conn_free(cn);
    } else {
        cn->idle = true;
        uv_timer_start(&cn->idle_timer, on_idle_timeout,
                       (uint64_t)ds->d->conf->delivery.idle_timeout * 1000 +
                           1, 0);
    }
    dest_kick(ds);
}

/* dest_dead - every address failed: defer what waits, skip for a while. */
static void
dest_dead(struct dest *ds, const char *text)
{
    unsigned b = ds->d->conf->delivery.dead_host_backoff;
    struct part *p;

    snprintf(ds->dead_text, sizeof(ds->dead_text), "%s", text);
    ds->proven = false;
    if (b > 0) {
        ds->dead_until = uv_now(ds->d->loop) + (uint64_t)b * 1000;
        pst_info("event=dest_dead dest=%s backoff=%u", ds->key, b);
    }
    /* the parts waiting now share this attempt's fate */
    while ((p = TAILQ_FIRST(&ds->parts)) != NULL) {
        TAILQ_REMOVE(&ds->parts, p, link);
        part_fail(p, PST_DRES_TEMP, text, b);
    }
}

static void
on_open(void *arg, struct pst_smtpc *c, int status, bool perm,
        const char *text)
{
    struct conn *cn = arg;
    struct dest *ds = cn->dest;
    struct part *p;

    if (status != 0) {
        cn->c = NULL;
        snprintf(cn->last_err, sizeof(cn->last_err), "%s", text);
        cn->last_perm = perm;
        pst_info("event=connect_failed dest=%s error=\"%s\"", ds->key, text);
        /* tls = may: a hop whose TLS is broken gets the message in
         * plaintext rather than never (RFC 3207 opportunistic) */
        if (cn->o.tls == PST_DTLS_MAY && strstr(text, "TLS handshake") &&
            cn->plain_idx != cn->next - 1) {
            cn->plain_idx = cn->next - 1;
            cn->next--;
            pst_info("event=tls_fallback dest=%s action=\"retry without "
                     "TLS\"", ds->key);
        }
        conn_open_next(cn);
        return;
    }
    cn->opened = true;
    ds->dead_until = 0;
    ds->proven = true;
    pst_smtpc_on_gone(c, on_gone, cn);
    if ((p = TAILQ_FIRST(&ds->parts)) != NULL) {
        TAILQ_REMOVE(&ds->parts, p, link);
        conn_send(cn, p);
        dest_kick(ds);              /* proven now: more may open */
        return;
    }
    cn->idle = true;
    uv_timer_start(&cn->idle_timer, on_idle_timeout,
                   (uint64_t)ds->d->conf->delivery.idle_timeout * 1000 + 1,
                   0);
}

/* conn_open_next - try the next candidate address, or give up. */
static void
conn_open_next(struct conn *cn)
{
    struct dest *ds = cn->dest;

    if (cn->next >= cn->ncands) {
        char t[PST_SMTPC_TEXT];
        snprintf(t, sizeof(t), "%s",
                 cn->last_err[0] ? cn->last_err : "4.4.1 no address");
        conn_free(cn);
        dest_dead(ds, t);
        dest_kick(ds);
        return;
    }
    size_t ki = cn->next++;
    struct cand *k = &cn->cands[ki];
    cn->o = ds->o;
    if (ki == cn->plain_idx)
        cn->o.tls = PST_DTLS_NONE;
    if (ds->rc && ds->rc->tls_name)
        cn->o.tls_name = ds->rc->tls_name;
    else if (ds->kind != D_MX && ds->literal)
        cn->o.tls_name = ds->host;
    else if (k->sa.ss_family == AF_UNIX)
        cn->o.tls_name = NULL;
    else
        cn->o.tls_name = k->name;
    cn->c = pst_smtpc_open(ds->d->loop, &cn->o, (struct sockaddr *)&k->sa,
                           k->name, on_open, cn);
}

static void
cand_add(struct conn *cn, const struct pst_ip *ip, unsigned port,
         const char *name)
{
    if (cn->ncands >= MAX_CANDIDATES)
        return;
    struct cand *k = &cn->cands[cn->ncands++];
    memset(k, 0, sizeof(*k));
    snprintf(k->name, sizeof(k->name), "%s", name);
    if (ip->family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&k->sa;
        s->sin_family = AF_INET;
        memcpy(&s->sin_addr, ip->addr, 4);
        s->sin_port = htons((uint16_t)port);
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&k->sa;
        s->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, ip->addr, 16);
        s->sin6_port = htons((uint16_t)port);
    }
}

/* resolution failed for the whole destination: every part waiting */
static void
conn_resolve_failed(struct conn *cn, enum pst_dres v, const char *text)
{
    struct dest *ds = cn->dest;
    struct part *p;

    conn_free(cn);
    while ((p = TAILQ_FIRST(&ds->parts)) != NULL) {
        TAILQ_REMOVE(&ds->parts, p, link);
        part_fail(p, v, text, 0);
    }
}

static void
on_host_addrs(void *arg, enum pst_dns_status st, const struct pst_ip *ips,
              size_t n)
{
    struct conn *cn = arg;
    struct dest *ds = cn->dest;
    char t[PST_SMTPC_TEXT];

    cn->q = NULL;
    if (st != PST_DNS_OK) {
        snprintf(t, sizeof(t), "%s host %.200s: %s",
                 st == PST_DNS_TEMPFAIL ? "4.4.3 cannot resolve"
                                        : "5.1.2 no address for",
                 ds->host, pst_dns_strstatus(st));
        conn_resolve_failed(cn, st == PST_DNS_TEMPFAIL ? PST_DRES_TEMP
                                                       : PST_DRES_PERM, t);
        return;
    }
    cn->cands = pst_xcalloc(MAX_CANDIDATES, sizeof(struct cand));
    for (size_t i = 0; i < n; i++)
        cand_add(cn, &ips[i], ds->port, ds->host);
    conn_open_next(cn);
}

/* ---- MX ---- */

struct mxhost {
    struct conn *cn;
    struct pst_dns_query *q;
    unsigned pref;
    uint64_t order;                 /* shuffle key within a preference */
    char name[256];
    struct pst_ip ips[PST_DNS_MAX_ADDRS];
    size_t nips;
    bool done;
};

struct mxstate {
    struct mxhost h[PST_DNS_MAX_MX];
    size_t n;
    bool tempfail;
};

/* is_self - an address:port postern itself listens on. */
static bool
is_self(const struct pst_conf *c, const struct pst_ip *ip, unsigned port)
{
    for (size_t i = 0; i < c->nlisteners; i++) {
        const struct pst_listener_conf *l = &c->listeners[i];
        struct pst_ip a;
        if (l->port != port || pst_ip_parse(&a, l->address) != 0)
            continue;
        static const uint8_t zero[16];
        bool wild = memcmp(a.addr, zero, a.family == AF_INET ? 4 : 16) == 0;
        if (pst_ip_equal(&a, ip) || (wild && a.family == ip->family))
            return true;
    }
    return false;
}

static int
mx_cmp(const void *a, const void *b)
{
    const struct mxhost *x = a, *y = b;
    if (x->pref != y->pref)
        return x->pref < y->pref ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static void
mx_free(struct conn *cn)
{
    if (cn->ms == NULL)
        return;
    for (size_t i = 0; i < cn->ms->n; i++)
        pst_dns_cancel(cn->ms->h[i].q);
    free(cn->ms);
    cn->ms = NULL;
}

static void
mx_finish(struct conn *cn)
{
    struct dest *ds = cn->dest;
    struct mxstate *ms = cn->ms;
    char t[PST_SMTPC_TEXT];
    unsigned port = ds->port;

    cn->ms = NULL;

    qsort(ms->h, ms->n, sizeof(ms->h[0]), mx_cmp);
    cn->cands = pst_xcalloc(MAX_CANDIDATES, sizeof(struct cand));
    for (size_t i = 0; i < ms->n; i++)
        for (size_t j = 0; j < ms->h[i].nips; j++) {
            if (is_self(ds->d->conf, &ms->h[i].ips[j], port)) {
                snprintf(t, sizeof(t), "5.4.6 mail for %.100s loops back to "
                         "myself (MX %.100s)", ds->host, ms->h[i].name);
                free(ms);
                conn_resolve_failed(cn, PST_DRES_PERM, t);
                return;
            }
            cand_add(cn, &ms->h[i].ips[j], port, ms->h[i].name);
        }
    bool temp = ms->tempfail;
    free(ms);
    cn->q = NULL;
    if (cn->ncands == 0) {
        snprintf(t, sizeof(t), "%s for %.200s",
                 temp ? "4.4.3 cannot resolve the MX hosts"
                      : "5.1.2 no address for any MX host", ds->host);
        conn_resolve_failed(cn, temp ? PST_DRES_TEMP : PST_DRES_PERM, t);
        return;
    }
    conn_open_next(cn);
}

static void
on_mx_addrs(void *arg, enum pst_dns_status st, const struct pst_ip *ips,
            size_t n)
{
    struct mxhost *h = arg;
    struct conn *cn = h->cn;
    struct mxstate *ms = cn->ms;

    h->q = NULL;
    h->done = true;
    if (st == PST_DNS_OK) {
        memcpy(h->ips, ips, n * sizeof(*ips));
        h->nips = n;
    } else if (st == PST_DNS_TEMPFAIL) {
        ms->tempfail = true;
    }
    if (--cn->mx_pending == 0)
        mx_finish(cn);
}

static void
on_mx(void *arg, enum pst_dns_status st, const struct pst_dns_mx *mx,
      size_t n)
{
    struct conn *cn = arg;
    struct dest *ds = cn->dest;
    struct pst_deliver *d = ds->d;
    char t[PST_SMTPC_TEXT];

    cn->q = NULL;
    switch (st) {
    case PST_DNS_OK:
        break;
    case PST_DNS_NODATA:
        /* RFC 5321 5.1: no MX, the domain is its own exchanger */
        break;
    case PST_DNS_TEMPFAIL:
        snprintf(t, sizeof(t), "4.4.3 cannot look up MX for %.200s: "
                 "temporary DNS failure", ds->host);
        conn_resolve_failed(cn, PST_DRES_TEMP, t);
        return;
    default:
        snprintf(t, sizeof(t), "5.1.2 domain %.200s does not exist",
                 ds->host);
        conn_resolve_failed(cn, PST_DRES_PERM, t);
        return;
    }
    if (st == PST_DNS_OK && n == 1 && mx[0].host[0] == '\0') {
        snprintf(t, sizeof(t), "5.1.10 domain %.200s accepts no mail "
                 "(null MX)", ds->host);
        conn_resolve_failed(cn, PST_DRES_PERM, t);
        return;
    }
    struct mxstate *ms = pst_xcalloc(1, sizeof(*ms));
    if (st == PST_DNS_NODATA) {
        ms->h[0].pref = 0;
        snprintf(ms->h[0].name, sizeof(ms->h[0].name), "%s", ds->host);
        ms->n = 1;
    } else {
        for (size_t i = 0; i < n && ms->n < PST_DNS_MAX_MX; i++) {
            if (mx[i].host[0] == '\0')
                continue;   /* a null MX among others is ignored */
            ms->h[ms->n].pref = mx[i].pref;
            ms->h[ms->n].order = pst_rand64(&d->rng);
            snprintf(ms->h[ms->n].name, sizeof(ms->h[0].name), "%s",
                     mx[i].host);
            ms->n++;
        }
    }
    if (ms->n == 0) {
        free(ms);
        snprintf(t, sizeof(t), "5.1.10 domain %.200s accepts no mail "
                 "(null MX)", ds->host);
        conn_resolve_failed(cn, PST_DRES_PERM, t);
        return;
    }
    cn->ms = ms;
    cn->mx_pending = ms->n;
    for (size_t i = 0; i < ms->n; i++) {
        ms->h[i].cn = cn;
        ms->h[i].q = pst_dns_addr(d->dns, ms->h[i].name, AF_UNSPEC,
                                  on_mx_addrs, &ms->h[i]);
    }
}

/* conn_new - start a connection for ds: resolve, then connect. */
static void
conn_new(struct dest *ds)
{
    struct pst_deliver *d = ds->d;
    struct conn *cn = pst_xcalloc(1, sizeof(*cn));

    cn->dest = ds;
    cn->plain_idx = SIZE_MAX;
    uv_timer_init(d->loop, &cn->idle_timer);
    cn->idle_timer.data = cn;
    LIST_INSERT_HEAD(&ds->conns, cn, link);
    ds->nconns++;
    if (ds->path != NULL) {
        struct sockaddr_un *su;
        cn->cands = pst_xcalloc(1, sizeof(struct cand));
        su = (struct sockaddr_un *)&cn->cands[0].sa;
        su->sun_family = AF_UNIX;
        snprintf(su->sun_path, sizeof(su->sun_path), "%s", ds->path);
        snprintf(cn->cands[0].name, sizeof(cn->cands[0].name), "%s",
                 ds->path);
        cn->ncands = 1;
        conn_open_next(cn);
    } else if (ds->kind == D_MX) {
        cn->q = pst_dns_mx(d->dns, ds->host, on_mx, cn);
    } else {
        cn->q = pst_dns_addr(d->dns, ds->host, AF_UNSPEC, on_host_addrs, cn);
    }
}

static void
on_dest_timer(uv_timer_t *t)
{
    struct dest *ds = t->data;
    ds->timer_armed = false;
    dest_kick(ds);
}

/* dest_kick - start what can start: idle connections first, then new
 * ones up to the limit; pacing and dead time respected. */
static void
dest_kick(struct dest *ds)
{
    struct pst_deliver *d = ds->d;
    uint64_t now = uv_now(d->loop);
    struct part *p;
    struct conn *cn;

    if (d->closing)
        return;
    if (ds->dead_until > now) {
        unsigned left = (unsigned)((ds->dead_until - now + 999) / 1000);
        while ((p = TAILQ_FIRST(&ds->parts)) != NULL) {
            TAILQ_REMOVE(&ds->parts, p, link);
            part_fail(p, PST_DRES_TEMP, ds->dead_text, left);
        }
        return;
    }
    while ((p = TAILQ_FIRST(&ds->parts)) != NULL) {
        if (ds->spacing_ms && ds->next_ok > now) {
            uint64_t wait = ds->next_ok - now;
            if (wait > (uint64_t)PST_DELIVER_WAIT_MAX * 1000) {
                /* queue rather than fail: come back when it is time */
                char t[160];
                snprintf(t, sizeof(t), "4.4.5 rate limit toward %.100s, "
                         "delivery postponed", ds->key);
                TAILQ_REMOVE(&ds->parts, p, link);
                part_fail(p, PST_DRES_TEMP, t,
                          (unsigned)(wait / 1000) + 1);
                continue;
            }
            if (!ds->timer_armed) {
                ds->timer_armed = true;
                uv_timer_start(&ds->timer, on_dest_timer, wait, 0);
            }
            return;
        }
        LIST_FOREACH(cn, &ds->conns, link)
            if (cn->idle && cn->c != NULL)
                break;
        if (cn != NULL) {
            TAILQ_REMOVE(&ds->parts, p, link);
            conn_send(cn, p);
            continue;
        }
        /* connections being opened will take queued parts */
        unsigned opening = 0, queued = 0;
        LIST_FOREACH(cn, &ds->conns, link)
            opening += !cn->opened;
        TAILQ_FOREACH(p, &ds->parts, link)
            queued++;
        /* one probe at a time until the destination answers */
        unsigned limit = ds->proven ? ds->conc : 1;
        if (opening < queued && ds->nconns < limit)
            conn_new(ds);
        return;
    }
}

/* ---- destinations ---- */

static const struct pst_route_conf *
route_for(const struct pst_conf *c, const char *domain)
{
    const struct pst_route_conf *best = NULL, *any = NULL;
    size_t bestlen = 0;

    for (size_t i = 0; i < c->delivery.nroutes; i++) {
        const struct pst_route_conf *r = &c->delivery.routes[i];
        if (strcmp(r->domain, "*") == 0) {
            if (any == NULL)
                any = r;            /* every domain, below all the others */
            continue;
        }
        if (r->domain[0] != '.') {
            if (pst_strcaseeq(r->domain, domain))
                return r;
            continue;
        }
        size_t rl = strlen(r->domain), dl = strlen(domain);
        if (dl > rl && pst_strcaseeq(domain + dl - rl, r->domain) &&
            rl > bestlen) {
            best = r;
            bestlen = rl;
        }
    }
    return best ? best : any;
}

static struct dest *
dest_get(struct pst_deliver *d, const struct pst_route_conf *rc,
         const char *route, const char *domain)
{
    char *key;
    struct dest *ds;
    const struct pst_delivery_conf *dc = &d->conf->delivery;

    if (strcmp(route, "mx") == 0)
        key = pst_xasprintf("mx:%s", domain);
    else
        key = pst_xstrdup(route);
    for (char *p = key; *p; p++)
        *p = (char)pst_tolower((unsigned char)*p);
    LIST_FOREACH(ds, &d->dests, link)
        if (strcmp(ds->key, key) == 0 && ds->rc == rc) {
            free(key);
            return ds;
        }
    ds = pst_xcalloc(1, sizeof(*ds));
    ds->d = d;
    ds->key = key;
    ds->rc = rc;
    TAILQ_INIT(&ds->parts);
    LIST_INIT(&ds->conns);
    uv_timer_init(d->loop, &ds->timer);
    ds->timer.data = ds;
    LIST_INSERT_HEAD(&d->dests, ds, link);

    if (strcmp(route, "mx") == 0) {
        ds->kind = D_MX;
        ds->host = pst_xstrdup(domain);
        ds->port = dc->mx_port;
    } else if (strncmp(route, "maildir:", 8) == 0) {
        ds->kind = D_MAILDIR;
        ds->path = pst_xstrdup(route + 8);
    } else {
        ds->kind = strncmp(route, "lmtp:", 5) == 0 ? D_LMTP : D_SMTP;
        const char *hp = route + 5;
        if (strncmp(hp, "unix:", 5) == 0) {
            ds->path = pst_xstrdup(hp + 5);
            ds->host = pst_xstrdup("localhost");
        } else if (hp[0] == '[') {
            const char *close = strchr(hp, ']');
            ds->host = pst_xstrndup(hp + 1, (size_t)(close - hp - 1));
            ds->port = (unsigned)strtoul(close + 2, NULL, 10);
            ds->literal = true;
        } else {
            const char *colon = strrchr(hp, ':');
            ds->host = pst_xstrndup(hp, (size_t)(colon - hp));
            ds->port = (unsigned)strtoul(colon + 1, NULL, 10);
        }
    }
    ds->o.lmtp = ds->kind == D_LMTP;
    ds->o.helo = dc->helo_name ? dc->helo_name : d->conf->hostname;
    ds->o.tls = rc && rc->tls != PST_DTLS_INHERIT ? rc->tls : dc->tls;
    if (ds->path != NULL && ds->kind != D_MAILDIR)
        ds->o.tls = PST_DTLS_NONE;      /* a local socket */
    ds->o.ssl_ctx = d->ssl;
    ds->o.sessions = d->sessions;
    if (rc && rc->auth_user) {
        ds->o.auth_user = rc->auth_user;
        ds->o.auth_password = rc->auth_password;
        ds->o.auth_plaintext = rc->auth_plaintext;
    }
    ds->o.eight_bit = dc->eight_bit;
    ds->mime = d->conf->mime.limits;
    ds->o.mime_limits = &ds->mime;
    ds->o.rcpts_per_txn = dc->recipients_per_transaction;
    ds->o.reply_lines_max = dc->reply_lines_max;
    ds->o.t_connect = dc->connect_timeout;
    ds->o.t_greeting = dc->greeting_timeout;
    ds->o.t_helo = dc->helo_timeout;
    ds->o.t_mail = dc->mail_timeout;
    ds->o.t_rcpt = dc->rcpt_timeout;
    ds->o.t_data = dc->data_timeout;
    ds->o.t_block = dc->data_block_timeout;
    ds->o.t_final = dc->final_timeout;
    ds->conc = rc && rc->concurrency ? rc->concurrency
                                     : dc->destination_concurrency;
    if (rc && rc->rate)
        ds->spacing_ms = (uint64_t)rc->rate_period * 1000 / rc->rate;
    return ds;
}

/* ---- maildir on the queue's workers ---- */

static struct part *
part_of_job(struct pst_pool_job *w)
{
    return (struct part *)(void *)((char *)w - offsetof(struct part, job));
}

static void
maildir_work(struct pst_pool_job *w, void *tctx)
{
    struct part *p = part_of_job(w);
    struct pst_spool_reader *r = NULL;
    const struct pst_delivery *dl = &p->sub;
    int rc = pst__reader_open(&r, &dl->src, dl->qid);

    if (rc != 0) {
        for (size_t k = 0; k < p->n; k++) {
            p->sub_res[k].res = PST_DRES_TEMP;
            snprintf(p->sub_res[k].text, sizeof(p->sub_res[k].text),
                     "4.3.0 cannot open the queue file: %s", strerror(-rc));
        }
        return;
    }
    p->sub.reader = r;
    pst_transport_maildir.deliver(p->dest->maildir_route, &p->sub);
    p->reader = r;                  /* closed with the part */
    p->rres = pst_spool_reader_read(r, NULL, 0);   /* sticky error */
}

static void deliver_release(struct pst_deliver *d);

static void
maildir_done(struct pst_pool_job *w, bool ran)
{
    struct part *p = part_of_job(w);
    struct pst_deliver *d = p->dest->d;

    LIST_REMOVE(p, mlink);
    d->mjobs--;
    if (p->req == NULL) {
        /* the manager was freed meanwhile; this attempt was reported */
        part_free(p);
        if (d->zombie && d->mjobs == 0)
            deliver_release(d);
        return;
    }
    struct pst_delivery *dl = p->req->dl;
    note_corrupt(p);
    for (size_t k = 0; k < p->n; k++) {
        if (!ran)
            res_set(&dl->res[p->ri[k]], PST_DRES_TEMP,
                    "4.3.2 shutting down");
        else {
            dl->res[p->ri[k]] = p->sub_res[k];
            dl->res[p->ri[k]].hint = PST_HINT_DELIVERED;
        }
    }
    part_done(p);
}

static void
maildir_start(struct part *p)
{
    struct dest *ds = p->dest;
    char why[256] = "";

    if (ds->maildir_route == NULL &&
        pst_transport_maildir.route_new(ds->d->loop, ds->path,
                                        &ds->maildir_route, why,
                                        sizeof(why)) != 0) {
        char t[300];
        snprintf(t, sizeof(t), "4.3.5 maildir %.100s: %.150s", ds->path, why);
        part_fail(p, PST_DRES_TEMP, t, 0);
        return;
    }
    p->sub_idx = pst_xcalloc(p->n, sizeof(size_t));
    p->sub_res = pst_xcalloc(p->n, sizeof(struct pst_rcpt_result));
    for (size_t k = 0; k < p->n; k++)
        p->sub_idx[k] = p->req->dl->idx[p->ri[k]];
    /* the job touches only the part, the entry's envelope (left alone
     * while the entry is busy) and the route */
    p->sub = *p->req->dl;
    p->sub.reader = NULL;
    p->sub.n = p->n;
    p->sub.idx = p->sub_idx;
    p->sub.res = p->sub_res;
    p->job.work = maildir_work;
    p->job.done = maildir_done;
    ds->d->mjobs++;
    LIST_INSERT_HEAD(&ds->d->mparts, p, mlink);
    ds->d->submit(ds->d->submit_ctx, &p->job);
}

/* ---- the manager ---- */

void
pst_deliver_start(struct pst_deliver *d, struct pst_delivery *dl,
                  pst_deliver_done done, void *arg)
{
    struct req *q = pst_xcalloc(1, sizeof(*q));
    struct dest **of = pst_xcalloc(dl->n ? dl->n : 1, sizeof(*of));

    q->d = d;
    q->dl = dl;
    q->done = done;
    q->arg = arg;
    dl->retry_after = 0;
    dl->corrupt = false;
    uv_timer_init(d->loop, &q->kick);
    q->kick.data = q;
    q->parts_left = 1;              /* held until every part is queued */
    LIST_INSERT_HEAD(&d->reqs, q, link);
    for (size_t i = 0; i < dl->n; i++) {
        const char *addr = dl->env->rcpts[dl->idx[i]].addr;
        const char *at = strrchr(addr, '@');
        const char *domain = at ? at + 1 : "";
        const struct pst_route_conf *rc = route_for(d->conf, domain);
        const char *route = rc ? rc->route : d->conf->delivery.default_route;
        dl->res[i].route = route;
        if (at == NULL && strcmp(route, "mx") == 0) {
            res_set(&dl->res[i], PST_DRES_PERM,
                    "5.1.3 no domain in the address");
            continue;
        }
        of[i] = dest_get(d, rc, route, domain);
    }
    for (size_t i = 0; i < dl->n; i++) {
        if (of[i] == NULL)
            continue;
        struct dest *ds = of[i];
        struct part *p = pst_xcalloc(1, sizeof(*p));
        p->req = q;
        p->dest = ds;
        p->ri = pst_xcalloc(dl->n, sizeof(size_t));
        p->rc = pst_xcalloc(dl->n, sizeof(struct pst_smtpc_rcpt));
        for (size_t j = i; j < dl->n; j++) {
            if (of[j] != ds)
                continue;
            p->ri[p->n] = j;
            p->rc[p->n].rcpt = &dl->env->rcpts[dl->idx[j]];
            p->n++;
            of[j] = NULL;
        }
        q->parts_left++;
        if (ds->kind == D_MAILDIR) {
            maildir_start(p);
            continue;
        }
        if (dl->reader != NULL) {
            /* the queue's reader (the edits checked at its open): this
             * part's, instead of a second one over the same text */
            p->reader = dl->reader;
            dl->reader = NULL;
        }
        TAILQ_INSERT_TAIL(&ds->parts, p, link);
        dest_kick(ds);
    }
    free(of);
    if (--q->parts_left == 0)
        req_complete(q);
}

static SSL_CTX *
client_ctx(const struct pst_delivery_conf *dc, struct pst_err *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* verification is judged after the handshake, by policy */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    pst_smtpc_ssl_ctx_init(ctx);    /* sessions go to the dest's cache */
    SSL_CTX_set_timeout(ctx, (long)dc->tls_session_timeout);
    if (dc->tls_ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, dc->tls_ca_file, NULL) != 1) {
            pst_err_add(err, NULL, 0, "delivery.tls_ca_file %s: cannot load",
                        dc->tls_ca_file);
            goto fail;
        }
    } else {
        SSL_CTX_set_default_verify_paths(ctx);
    }
    if (dc->tls_cert_file) {
        if (SSL_CTX_use_certificate_chain_file(ctx, dc->tls_cert_file) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, dc->tls_key_file,
                                        SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            pst_err_add(err, NULL, 0, "delivery.tls_cert/tls_key: cannot "
                        "load %s", dc->tls_cert_file);
            goto fail;
        }
    }
    return ctx;
fail:
    ERR_clear_error();
    if (ctx)
        SSL_CTX_free(ctx);
    return NULL;
}

int
pst_deliver_new(struct pst_deliver **dp, uv_loop_t *loop,
                const struct pst_conf *conf, pst_deliver_submit submit,
                void *submit_ctx, struct pst_err *err)
{
    struct pst_deliver *d = pst_xcalloc(1, sizeof(*d));
    const char **ns = NULL;
    int rc;

    d->loop = loop;
    d->conf = conf;
    d->submit = submit;
    d->submit_ctx = submit_ctx;
    LIST_INIT(&d->dests);
    LIST_INIT(&d->reqs);
    LIST_INIT(&d->mparts);
    d->rng = pst_rand_seed();
    if ((d->ssl = client_ctx(&conf->delivery, err)) == NULL) {
        rc = -EINVAL;
        goto fail;
    }
    if (conf->delivery.tls_session_cache > 0)
        d->sessions = pst_tls_sessions_new(conf->delivery.tls_session_cache,
                                           conf->delivery.tls_session_timeout);
    ns = pst_xcalloc(conf->resolver.nnameservers + 1, sizeof(*ns));
    for (size_t i = 0; i < conf->resolver.nnameservers; i++)
        ns[i] = conf->resolver.nameservers[i].address;
    struct pst_dns_opts o = {.nameservers = ns,
                             .nnameservers = conf->resolver.nnameservers,
                             .timeout_ms = conf->resolver.timeout,
                             .tries = conf->resolver.tries};
    if ((rc = pst_dns_new(&d->dns, loop, &o, err)) != 0)
        goto fail;
    free(ns);
    *dp = d;
    return 0;
fail:
    free(ns);
    if (d->ssl)
        SSL_CTX_free(d->ssl);
    pst_tls_sessions_free(d->sessions);
    free(d);
    return rc;
}

void
pst_deliver_stop(struct pst_deliver *d)
{
    struct req *q, *next;

    if (d == NULL)
        return;
    d->closing = true;
    for (q = LIST_FIRST(&d->reqs); q != NULL; q = next) {
        next = LIST_NEXT(q, link);
        if (q->kicked)
            req_report(q);
    }
}

/* deliver_release - the memory, once no maildir job can touch it. */
static void
deliver_release(struct pst_deliver *d)
{
    struct dest *ds;

    while ((ds = LIST_FIRST(&d->dests)) != NULL) {
        LIST_REMOVE(ds, link);
        uv_close((uv_handle_t *)&ds->timer, free_data);
        if (ds->maildir_route)
            pst_transport_maildir.route_free(ds->maildir_route);
        free(ds->key);
        free(ds->host);
        free(ds->path);
    }
    free(d);
}

void
pst_deliver_free(struct pst_deliver *d)
{
    struct dest *ds;
    struct part *p;

    if (d == NULL)
        return;
    pst_deliver_stop(d);
    LIST_FOREACH(ds, &d->dests, link) {
        while ((p = TAILQ_FIRST(&ds->parts)) != NULL) {
            TAILQ_REMOVE(&ds->parts, p, link);
            part_fail(p, PST_DRES_TEMP, "4.3.2 shutting down", 0);
        }
        while (!LIST_EMPTY(&ds->conns)) {
            struct conn *cn = LIST_FIRST(&ds->conns);
            if (cn->part) {
                /* in flight: results so far, the rest deferred */
                struct part *bp = cn->part;
                cn->part = NULL;
                part_results(bp);
                part_done(bp);
            }
            conn_free(cn);
        }
    }
    /* maildir parts still on the workers: report them deferred now (a
     * copy they make meanwhile is delivered again later: the duplicate
     * window) and let them finish against the kept routes */
    LIST_FOREACH(p, &d->mparts, mlink) {
        struct req *q = p->req;
        if (q == NULL)
            continue;
        for (size_t k = 0; k < p->n; k++)
            res_set(&q->dl->res[p->ri[k]], PST_DRES_TEMP,
                    "4.3.2 shutting down");
        p->req = NULL;
        if (--q->parts_left == 0)
            req_complete(q);
    }
    pst_dns_free(d->dns);
    d->dns = NULL;
    SSL_CTX_free(d->ssl);
    d->ssl = NULL;
    pst_tls_sessions_free(d->sessions);  /* connections closed: unused */
    d->sessions = NULL;
    if (d->mjobs > 0) {
        d->zombie = true;
        return;
    }
    deliver_release(d);
}

/* ---- the transport descriptor the queue manager sees ---- */

static int
relay_route_new(uv_loop_t *loop, const char *arg, void **route, char *err,
                size_t len)
{
    (void)loop;
    (void)arg;
    (void)route;
    snprintf(err, len, "the relay's route is made by pst_deliver_new");
    return -EINVAL;
}

static void
relay_route_free(void *route)
{
    pst_deliver_free(route);
}

static void
relay_done(void *arg, struct pst_delivery *dl)
{
    (void)arg;
    dl->done(dl);
}

static void
relay_deliver(void *route, struct pst_delivery *dl)
{
    pst_deliver_start(route, dl, relay_done, NULL);
}

/* smtp:, lmtp:, mx and routes by domain, on the loop (blocking = false):
 * dl->done is called once every recipient has a result. */
const struct pst_transport pst_transport_relay = {
    .name = "relay",
    .blocking = false,
    .route_new = relay_route_new,
    .route_free = relay_route_free,
    .deliver = relay_deliver,
};
