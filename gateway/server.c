/*
 * server.c - the gateway process: bind the listeners, open the queue
 * (spool, queue manager, control socket), run the loop, stop cleanly on
 * SIGTERM or SIGINT.
 *
 * Shutdown order: a drain first (SIGTERM): stop accepting, pause the queue,
 * let sessions finish their transactions and deliveries in flight end,
 * up to limits.drain_timeout. Then the stop: ask every session to finish
 * (a commit in flight is answered first), close the queue (its threads
 * finish their batch), then close every remaining handle and let the loop
 * end. A clean
 * stop leaves no handle open and no memory behind (LeakSanitizer runs in
 * CI against this path).
 */
#include "gateway/server.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>

#include "core/dns.h"
#include "core/log.h"
#include "core/net.h"
#include "core/util.h"
#include "core/strmap.h"
#include "gateway/auth.h"
#include "gateway/metrics_http.h"
#include "gateway/notify.h"
#include "gateway/policy.h"
#include "gateway/privs.h"
#include "gateway/smtp.h"
#include "gateway/stats.h"
#include "filters/chain.h"
#include "gateway/tls.h"
#include "queue/queue.h"
#include "queue/spool.h"

/* ---- generations ---- */

struct pst_gen *
pst_gen_ref(struct pst_gen *g)
{
    g->refs++;
    return g;
}

void
pst_gen_unref(struct pst_gen *g)
{
    if (g == NULL || --g->refs > 0)
        return;
    /* the filters' helpers (spf) go with the generation; its conf may
     * live on (the queue holds the first one) */
    pst_chain_stop(g->conf->filters);
    pst_policy_free(g->policy);
    pst_tls_ctx_free(g->tls);
    pst_conf_unref(g->conf);
    free(g);
}

/* gen_new - what conf builds in the gateway: the relay policy (it reads
 * the recipient files) and the TLS certificates (tickets sealed with the
 * process's keys k, the same in every generation). NULL with err
 * filled. */
static struct pst_gen *
gen_new(struct pst_conf *conf, unsigned number, struct pst_tls_tickets *k,
        struct pst_err *err)
{
    struct pst_gen *g = pst_xcalloc(1, sizeof(*g));
    g->refs = 1;
    g->number = number;
    g->conf = pst_conf_ref(conf);
    if (pst_policy_new(&g->policy, conf, err) < 0 ||
        (conf->tls.ncerts > 0 &&
         pst_tls_ctx_new(&g->tls, &conf->tls, k, err) < 0)) {
        pst_gen_unref(g);
        return NULL;
    }
    return g;
}

/* ---- listeners ---- */

static void
on_connection(uv_stream_t *st, int status)
{
    struct pst_listener *l = st->data;
    if (status < 0) {
        pst_warn("event=accept_error err=%s", uv_strerror(status));
        return;
    }
    if (l->srv->stopping)
        return;
    pst_session_accept(l);
}

static int
listen_one(struct pst_server *srv, struct pst_listener *l)
{
    struct sockaddr_storage ss;
    const struct pst_listener_conf *lc = l->lc;
    unsigned flags = 0;
    int rc;

    if (strchr(lc->address, ':')) {
        struct pst_ip ip;
        rc = uv_ip6_addr(lc->address, (int)lc->port, (struct sockaddr_in6 *)&ss);
        /* An IPv6 address listens for IPv6 only, so "::" and "0.0.0.0" can
         * share a port; an IPv4-mapped one (::ffff:a.b.c.d) exists to take
         * IPv4 clients, whose addresses the session normalises. */
        if (pst_ip_parse(&ip, lc->address) < 0 || ip.family != AF_INET)
            flags = UV_TCP_IPV6ONLY;
    } else {
        rc = uv_ip4_addr(lc->address, (int)lc->port, (struct sockaddr_in *)&ss);
    }
    if (rc < 0)
        return rc;
    pst_stats_listener(lc->address, lc->port, &l->m_open, &l->m_total);
    uv_tcp_init(srv->loop, &l->tcp);
    l->tcp.data = l;
    l->srv = srv;
    l->open = true;
    rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, flags);
    if (rc == 0)
        rc = pst_session_sock_options(&l->tcp);
    /* a burst of connections as large as the session limit waits in the
     * accept queue rather than having its SYNs dropped (each a 1 s
     * retransmission for that client); the kernel caps the backlog at
     * net.core.somaxconn */
    int backlog = (int)PST_MAX(511u, PST_MIN(srv->gen->conf->limits.sessions,
                                              65535u));
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->tcp, backlog, on_connection);
    return rc;
}

static void
uv_pool_noop(uv_work_t *w)
{
    (void)w;
}

static void
uv_pool_started(uv_work_t *w, int status)
{
    (void)status;
    free(w);
}

/* libuv's thread pool (the delivery's spool reads) starts its threads on
 * first use: start them now, while the stop signals are blocked, so that
 * none of them ever takes one */
static void
start_uv_pool(uv_loop_t *loop)
{
    uv_work_t *w = pst_xcalloc(1, sizeof(*w));
    if (uv_queue_work(loop, w, uv_pool_noop, uv_pool_started) < 0)
        free(w);
}

static void
on_walk_close(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void
on_listener_closed(uv_handle_t *h)
{
    free(h->data);
}

/* listener_close - close l (freed by the close callback, or now if its
 * handle never opened). */
static void
listener_close(struct pst_listener *l)
{
    if (l->open)
        uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
    else
        free(l);
}

static void
close_listeners(struct pst_server *srv)
{
    for (size_t i = 0; i < srv->nlisteners; i++)
        listener_close(srv->listeners[i]);
    free(srv->listeners);
    srv->listeners = NULL;
    srv->nlisteners = 0;
}

/* listener_new - bind and listen on lc; NULL with the reason in err. */
static struct pst_listener *
listener_new(struct pst_server *srv, const struct pst_listener_conf *lc,
             struct pst_err *err)
{
    struct pst_listener *l = pst_xcalloc(1, sizeof(*l));
    l->lc = lc;
    int rc = listen_one(srv, l);
    if (rc < 0) {
        pst_err_add(err, srv->gen ? srv->gen->conf->path : NULL, lc->line,
                    "listener %s port %u: %s%s", lc->address, lc->port,
                    uv_strerror(rc),
                    rc == UV_EACCES && lc->port < 1024
                        ? " (a port below 1024 needs root or "
                          "CAP_NET_BIND_SERVICE: after the privilege drop "
                          "it takes a restart; docs/OPERATIONS.md \"Reload\")"
                        : "");
        listener_close(l);
        return NULL;
    }
    pst_info("event=listening address=%s port=%u", lc->address, lc->port);
    return l;
}

/*
 * close_back - what sessions use closes once the last of them has gone
 * (stopping): the queue (control, manager, spool) and the filter
 * runtime, since no session is left to resume.
 */
static void
close_back(struct pst_server *srv)
{
    if (srv->queue)
        pst_queue_close(srv->queue);
    srv->queue = NULL;
    srv->spool = NULL;
    pst_frt_close(srv->frt);
    srv->frt = NULL;
}

static void
server_stop(struct pst_server *srv, const char *why)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    /* the way out may wait on threads: every line goes out as it comes */
    pst_log_batch(false);
    pst_info("event=stopping reason=%s sessions=%u", why, srv->nsessions);
    if (!srv->draining)
        pst_notify_stopping("stopping");
    pst_mhttp_set_draining(srv->mhttp, true);
    uv_close((uv_handle_t *)&srv->drain_timer, NULL);
    pst_chain_log_stats(srv->gen->conf->filters);
    close_listeners(srv);
    uv_close((uv_handle_t *)&srv->tick, NULL);
    /* the signal handles stay (unreferenced) until the loop's end: closed
     * now, a signal arriving while the queue closes would find its
     * default action again and end the process with that signal */
    uv_unref((uv_handle_t *)&srv->sig_term);
    uv_unref((uv_handle_t *)&srv->sig_int);
    uv_unref((uv_handle_t *)&srv->sig_hup);
    pst_session_shutdown_all(srv);
    pst_dns_free(srv->dns);
    srv->dns = NULL;
    if (srv->auth) {
        /* workers finish the check in hand; no result is delivered now */
        pst_auth_close(srv->auth);
        srv->auth = NULL;
    }
    if (srv->nsessions == 0)
        close_back(srv);
}

/* Before the loop waits: the lines of this turn go out, one write. */
static void
on_log_flush(uv_prepare_t *p)
{
    (void)p;
    pst_log_flush();
}

/* Once a second: tell the metrics endpoint the loop is alive. */
static void
on_tick(uv_timer_t *t)
{
    struct pst_server *srv = t->data;
    pst_mhttp_tick(srv->mhttp);
    if (srv->queue) {
        struct pst_queue_stats st;
        pst_queue_stats(srv->queue, &st);
        pst_stats_queue(&st);
    }
}

/* The drain is over when no session is left and no delivery is in
 * flight, or when its time is up. */
static void
drain_check(struct pst_server *srv)
{
    struct pst_queue_stats st = {0};
    if (!srv->draining || srv->stopping)
        return;
    if (srv->queue)
        pst_queue_stats(srv->queue, &st);
    if (srv->nsessions == 0 && st.delivering == 0)
        server_stop(srv, "drained");
    else if (uv_now(srv->loop) >= srv->drain_deadline)
        server_stop(srv, "drain_timeout");
}

static void
on_drain_timer(uv_timer_t *t)
{
    drain_check(t->data);
}

static void
server_drain(struct pst_server *srv, const char *why)
{
    srv->draining = true;
    pst_info("event=draining reason=%s sessions=%u timeout=%u", why,
             srv->nsessions, srv->gen->conf->limits.drain_timeout);
    pst_notify_stopping("draining");
    pst_mhttp_set_draining(srv->mhttp, true);
    close_listeners(srv);           /* new connections are refused */
    if (srv->queue)
        pst_queue_pause(srv->queue, true);  /* in flight ones go on */
    pst_session_drain_all(srv);
    srv->drain_deadline = uv_now(srv->loop) +
                          (uint64_t)srv->gen->conf->limits.drain_timeout * 1000;
    uv_timer_start(&srv->drain_timer, on_drain_timer, 100, 100);
    drain_check(srv);
}

static void server_reload(struct pst_server *srv);

static void
on_signal(uv_signal_t *h, int sig)
{
    struct pst_server *srv = h->data;
    if (sig == SIGHUP) {
        if (srv->draining || srv->stopping)
            pst_info("event=reload_ignored reason=stopping%s", "");
        else
            server_reload(srv);
        return;
    }
    const char *name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
    if (srv->stopping)
        pst_info("event=signal_ignored signal=%s reason=stopping", name);
    else if (!srv->draining)
        server_drain(srv, name);
    else
        server_stop(srv, name);     /* the second signal: at once */
}

/*
 * raise_fd_limit - let RLIMIT_NOFILE hold what the limits can use at once:
 * a socket and a queue file per session, a socket and a spool reader per
 * delivery, the control socket's connections, and a reserve (loop,
 * listeners, resolvers, the spool's directories, workers). The soft limit
 * goes up, and the hard one too where allowed (root, before the drop; a
 * reload, after it, can only take the soft one up to the hard).
 * Where neither is allowed, a warning gives the numbers: past the limit a
 * connection is closed unanswered and a queue file cannot be opened.
 */
static void
raise_fd_limit(const struct pst_conf *conf)
{
    rlim_t need = 2 * (rlim_t)conf->limits.sessions +
                  2 * (rlim_t)conf->delivery.concurrency + 16 + 128;
    struct rlimit rl, want;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
        return;
    want.rlim_cur = need;
    want.rlim_max = rl.rlim_max >= need ? rl.rlim_max : need;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0)
        return;
    want.rlim_cur = want.rlim_max = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) != 0)
        want.rlim_cur = rl.rlim_cur;
    pst_warn("event=fd_limit nofile=%llu needed=%llu sessions=%u "
             "hint=\"raise the hard RLIMIT_NOFILE or lower limits.sessions\"",
             (unsigned long long)want.rlim_cur, (unsigned long long)need,
             conf->limits.sessions);
}

/* ---- reload ---- */

/* The printed text of one top-level setting of c ("delivery = {...}"). */
static char *
section_text(const struct pst_conf *c, const char *name)
{
    char *all = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&all, &n);
    if (f == NULL)
        return pst_xstrdup("");
    pst_conf_print(f, c, false);
    fclose(f);
    size_t nl = strlen(name);
    char *out = NULL;
    for (char *p = all; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1
                                                    : NULL) {
        if (strncmp(p, name, nl) != 0 || strncmp(p + nl, " = ", 3) != 0)
            continue;
        char *e = p;                /* up to the next top-level line */
        do {
            e = strchr(e, '\n');
            e = e ? e + 1 : p + strlen(p);
        } while (*e && (*e == ' ' || *e == '\t' || *e == '}' || *e == ')'));
        out = pst_xstrndup(p, (size_t)(e - p));
        break;
    }
    free(all);
    return out ? out : pst_xstrdup("");
}

/*
 * restart_only - the settings that differ between a and b and that a
 * reload does not apply (the queue, delivery and resolver are opened once;
 * the account is the one dropped to), as "a,b" into buf; "" if none.
 */
static void
restart_only(const struct pst_conf *a, const struct pst_conf *b, char *buf,
             size_t n)
{
    static const char *const names[] = {"user", "group", "queue", "delivery",
                                        "resolver"};
    buf[0] = '\0';
    for (size_t i = 0; i < PST_ARRAY_LEN(names); i++) {
        char *x = section_text(a, names[i]), *y = section_text(b, names[i]);
        if (strcmp(x, y) != 0)
            snprintf(buf + strlen(buf), n - strlen(buf), "%s%s",
                     buf[0] ? "," : "", names[i]);
        free(x);
        free(y);
    }
    if (a->auth.workers != b->auth.workers)
        snprintf(buf + strlen(buf), n - strlen(buf), "%sauth.workers",
                 buf[0] ? "," : "");
    if (a->limits.ipv6_prefix != b->limits.ipv6_prefix)
        snprintf(buf + strlen(buf), n - strlen(buf), "%slimits.ipv6_prefix",
                 buf[0] ? "," : "");
}

/* Every error of err on one log line. */
static void
log_reload_failed(const struct pst_err *err)
{
    struct pst_tbuf t;
    char q[3600];
    pst_tbuf_init(&t);
    for (unsigned i = 0; i < err->count && i < PST_ERR_MAX; i++) {
        if (i)
            pst_tbuf_puts(&t, "; ");
        pst_tbuf_puts(&t, err->msgs[i]);
    }
    pst_err("event=reload_failed errors=%u error=%s action=kept_running",
            err->count, pst_log_quote(q, sizeof(q), t.p ? t.p : "", t.len));
    pst_tbuf_free(&t);
}

static struct pst_listener *
find_listener(struct pst_server *srv, const struct pst_listener_conf *lc)
{
    for (size_t i = 0; i < srv->nlisteners; i++) {
        struct pst_listener *l = srv->listeners[i];
        if (l != NULL && l->lc->port == lc->port &&
            strcmp(l->lc->address, lc->address) == 0)
            return l;
    }
    return NULL;
}

/*
 * server_reload - SIGHUP: read and check the file whole, build the new
 * generation, bind the listeners it adds, re-read the credentials; any
 * error and nothing changes. Then the new generation is current: new
 * sessions get it, sessions in flight keep theirs; listeners it lost
 * close (their sessions go on).
 */
static void
server_reload(struct pst_server *srv)
{
    struct pst_err err = {0};
    struct pst_gen *g = NULL;
    struct pst_listener **ls = NULL;
    struct pst_mhttp *mh = NULL;
    const char *path = srv->gen->conf->path;
    size_t n = 0;

    pst_notify_reloading();
    pst_info("event=reload_start file=%s generation=%u", path,
             srv->gen->number);
    struct pst_conf *c = pst_conf_load(path, &err);
    if (c != NULL) {
        g = gen_new(c, srv->gen->number + 1, srv->tickets, &err);
        pst_conf_unref(c);
    }
    if (g != NULL) {
        /* listeners: keep the same address and port, bind the new ones */
        c = g->conf;
        ls = pst_xcalloc(c->nlisteners ? c->nlisteners : 1, sizeof(*ls));
        for (n = 0; n < c->nlisteners && err.count == 0; n++) {
            ls[n] = find_listener(srv, &c->listeners[n]);
            if (ls[n] == NULL)
                ls[n] = listener_new(srv, &c->listeners[n], &err);
        }
    }
    if (err.count == 0 && c->metrics.enabled &&
        !pst_mhttp_same(srv->mhttp, &c->metrics))
        pst_mhttp_start(&mh, &c->metrics, c->queue.directory,
                        c->limits.disk_free_min, &err);
    /* the new chain's helpers (spf); the old chain's stop with it */
    if (err.count == 0)
        pst_chain_start(c->filters, &err);
    if (err.count == 0 && c->auth.password_file) {
        if (srv->auth)
            pst_auth_reload(srv->auth, c, &err);    /* last: all or nothing */
        else
            pst_auth_new(&srv->auth, srv->loop, c, pst_session_auth_done,
                         srv, &err);
    }
    if (err.count > 0) {
        log_reload_failed(&err);
        pst_stats_config(false, false);
        for (size_t i = 0; ls && i < n; i++)
            if (ls[i] && find_listener(srv, ls[i]->lc) != ls[i])
                listener_close(ls[i]);      /* bound for nothing */
        free(ls);
        pst_mhttp_stop(mh);
        pst_gen_unref(g);
        pst_err_free(&err);
        pst_notify_ready("serving; the last reload failed");
        return;
    }
    /* commit */
    char later[200];
    restart_only(srv->gen->conf, c, later, sizeof(later));
    for (size_t i = 0; i < srv->nlisteners; i++) {
        bool kept = false;
        for (size_t j = 0; j < n; j++)
            kept = kept || ls[j] == srv->listeners[i];
        if (!kept) {
            pst_info("event=listener_closed address=%s port=%u",
                     srv->listeners[i]->lc->address,
                     srv->listeners[i]->lc->port);
            listener_close(srv->listeners[i]);
        }
    }
    for (size_t j = 0; j < n; j++)
        ls[j]->lc = &c->listeners[j];       /* the new generation's */
    free(srv->listeners);
    srv->listeners = ls;
    srv->nlisteners = n;
    if (mh != NULL || !c->metrics.enabled) {
        pst_mhttp_stop(srv->mhttp);
        srv->mhttp = mh;
        if (mh)
            pst_info("event=listening service=metrics address=%s port=%u",
                     c->metrics.address, c->metrics.port);
    }
    pst_mhttp_set_floor(srv->mhttp, c->limits.disk_free_min);
    raise_fd_limit(c);
    pst_log_set_level((enum pst_log_level)c->log.level);
    pst_log_set_format((enum pst_log_format)c->log.format);
    pst_gen_unref(srv->gen);
    srv->gen = g;
    pst_stats_config(true, false);
    if (later[0])
        pst_warn("event=reload_restart_needed settings=%s", later);
    pst_info("event=reloaded generation=%u listeners=%zu sessions=%u",
             g->number, n, srv->nsessions);
    pst_notify_ready("serving");
}

void
pst_server_session_gone(struct pst_server *srv)
{
    srv->nsessions--;
    if (srv->draining && !srv->stopping) {
        drain_check(srv);           /* the last one may end the drain */
        return;
    }
    /* when stopping, the spool closes once the last session has gone */
    if (srv->stopping && srv->nsessions == 0)
        close_back(srv);
}

int
pst_server_run(struct pst_conf *conf)
{
    struct pst_server srv;
    struct pst_err err = {0};
    int rc, status = 0;

    memset(&srv, 0, sizeof(srv));
    srv.loop = uv_default_loop();
    if (getrandom(&srv.id_base, sizeof(srv.id_base), 0) !=
        sizeof(srv.id_base))
        srv.id_base = (uint64_t)time(NULL) << 32;
    srv.id_base &= ~(uint64_t)0xffffffff;   /* low half counts sessions */
    signal(SIGPIPE, SIG_IGN);
    /* SIGTERM, SIGINT and SIGHUP blocked from here on, so every thread
     * started (by us, libmicrohttpd, libuv) has them blocked; the loop
     * thread takes them while it serves (below) */
    pst_stop_signals_block(true);
    raise_fd_limit(conf);

    struct pst_privs pv;
    if (pst_privs_plan(&pv, conf, &err) < 0) {
        pst_err("event=fatal op=privileges error=\"%s\"",
                pst_err_first(&err));
        pst_err_free(&err);
        return 1;
    }
    srv.tickets = pst_tls_tickets_new();
    srv.gen = gen_new(conf, 1, srv.tickets, &err);
    if (srv.gen == NULL) {
        pst_err("event=fatal op=config error=\"%s\"", pst_err_first(&err));
        pst_err_free(&err);
        pst_tls_tickets_free(srv.tickets);
        return 1;
    }
    srv.ipcount = pst_ipcount_new(conf->limits.ipv6_prefix);
    srv.by_id = pst_strmap_new();
    if (conf->auth.password_file &&
        pst_auth_new(&srv.auth, srv.loop, conf, pst_session_auth_done, &srv,
                     &err) < 0) {
        pst_err("event=fatal op=auth error=\"%s\"", pst_err_first(&err));
        pst_err_free(&err);
        pst_gen_unref(srv.gen);
        pst_tls_tickets_free(srv.tickets);
        pst_ipcount_free(srv.ipcount);
        pst_strmap_free(srv.by_id, NULL);
        return 1;
    }
    /* The gateway's own resolver: delivery keeps another, so a burst of
     * client lookups never queues behind MX look-ups or the reverse. */
    rc = pst_conf_dns_new(&srv.dns, srv.loop, conf, &err);
    if (rc < 0) {
        pst_err("event=fatal op=resolver error=\"%s\"", pst_err_first(&err));
        pst_err_free(&err);
        goto early_fail;
    }
    rc = pst_frt_new(srv.loop, PST_FILTER_WORKERS, &srv.frt);
    if (rc < 0) {
        pst_err("event=fatal op=filter_workers error=\"%s\"",
                strerror(-rc));
        pst_dns_free(srv.dns);
        srv.dns = NULL;
        goto early_fail;
    }
    /* bind (ports below 1024 need root) and open the spool (it reads the
     * delivery client's key) as root; then the spool is handed to the
     * user and privileges are dropped */
    srv.listeners = pst_xcalloc(conf->nlisteners, sizeof(*srv.listeners));
    for (size_t i = 0; i < conf->nlisteners; i++) {
        struct pst_listener *l =
            listener_new(&srv, &srv.gen->conf->listeners[i], &err);
        if (l == NULL) {
            pst_err("event=fatal op=listen address=%s port=%u error=\"%s\"",
                    conf->listeners[i].address, conf->listeners[i].port,
                    pst_err_first(&err));
            pst_err_free(&err);
            status = 1;
            break;
        }
        srv.listeners[srv.nlisteners++] = l;
    }
    if (status == 0 && conf->metrics.enabled &&
        pst_mhttp_start(&srv.mhttp, &conf->metrics, conf->queue.directory,
                        conf->limits.disk_free_min, &err) < 0) {
        pst_err("event=fatal op=metrics error=\"%s\"", pst_err_first(&err));
        pst_err_free(&err);
        status = 1;
    } else if (srv.mhttp) {
        pst_info("event=listening service=metrics address=%s port=%u",
                 conf->metrics.address, conf->metrics.port);
    }
    if (status == 0 &&
        (rc = pst_queue_open(&srv.queue, srv.loop, conf, &err)) < 0) {
        pst_err("event=fatal op=spool_open error=\"%s\"", pst_err_first(&err));
        pst_err_free(&err);
        status = 1;
    }
    if (status == 0)
        srv.spool = pst_queue_spool(srv.queue);
    if (status == 0 && pst_privs_drop(&pv, conf, &err) < 0) {
        pst_err("event=fatal op=privileges error=\"%s\"",
                pst_err_first(&err));
        pst_err_free(&err);
        status = 1;
    }
    uv_timer_init(srv.loop, &srv.tick);
    srv.tick.data = &srv;
    uv_timer_init(srv.loop, &srv.drain_timer);
    srv.drain_timer.data = &srv;
    uv_unref((uv_handle_t *)&srv.tick);
    /* modules' helpers (spf) start unprivileged, before the first client */
    if (status == 0 && pst_chain_start(conf->filters, &err) < 0) {
        pst_err("event=fatal op=filters_start error=\"%s\"",
                pst_err_first(&err));
        pst_err_free(&err);
        status = 1;
    }
    uv_signal_init(srv.loop, &srv.sig_term);
    uv_signal_init(srv.loop, &srv.sig_int);
    uv_signal_init(srv.loop, &srv.sig_hup);
    srv.sig_term.data = srv.sig_int.data = srv.sig_hup.data = &srv;
    if (status == 0) {
        uv_signal_start(&srv.sig_term, on_signal, SIGTERM);
        uv_signal_start(&srv.sig_int, on_signal, SIGINT);
        uv_signal_start(&srv.sig_hup, on_signal, SIGHUP);
        uv_timer_start(&srv.tick, on_tick, 0, 1000);
        pst_stats_config(true, true);
        pst_info("event=ready hostname=%s", conf->hostname);
        pst_notify_ready("serving");
        /* the loop's lines are written once per turn (core/log.c) */
        uv_prepare_init(srv.loop, &srv.log_flush);
        uv_prepare_start(&srv.log_flush, on_log_flush);
        uv_unref((uv_handle_t *)&srv.log_flush);
        pst_log_batch(true);
        start_uv_pool(srv.loop);
        pst_stop_signals_block(false);
        uv_run(srv.loop, UV_RUN_DEFAULT);
        /* closing the signal handles below gives SIGTERM its default
         * action back: from now on no thread takes these signals, and
         * one sent during the rest of the exit stays pending, harmless */
        pst_stop_signals_block(true);
    } else {
        server_stop(&srv, "startup failed");
        uv_run(srv.loop, UV_RUN_DEFAULT);
    }
    pst_log_batch(false);           /* if the stop path did not */
    pst_frt_close(srv.frt);         /* if the stop path did not */
    srv.frt = NULL;
    uv_walk(srv.loop, on_walk_close, NULL);
    uv_run(srv.loop, UV_RUN_DEFAULT);
    /* closing libuv's signal handles gave the signals their default
     * action back; they are blocked, and ignored from now on */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    if (uv_loop_close(srv.loop) != 0)
        pst_warn("event=loop_close_busy");
    pst_session_spares_free();
    pst_mhttp_stop(srv.mhttp);
    free(srv.listeners);
    pst_gen_unref(srv.gen);
    pst_tls_tickets_free(srv.tickets);  /* after the last generation */
    pst_ipcount_free(srv.ipcount);
    pst_strmap_free(srv.by_id, NULL);
    pst_info("event=stopped status=%d", status);
    return status;

early_fail:
    /* no listener yet: stop the auth pool, let closing handles finish,
     * free the rest */
    if (srv.auth)
        pst_auth_close(srv.auth);
    uv_run(srv.loop, UV_RUN_DEFAULT);
    uv_loop_close(srv.loop);
    pst_gen_unref(srv.gen);
    pst_tls_tickets_free(srv.tickets);
    pst_ipcount_free(srv.ipcount);
    pst_strmap_free(srv.by_id, NULL);
    return 1;
}
