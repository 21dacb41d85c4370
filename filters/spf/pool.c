/*
 * pool.c - the spf helper processes and the conversation of one check.
 *
 * A pool is N helpers (helper.c), each a process of its own with one end
 * of a socketpair as fd 3. They are started with fork and execveat from
 * the helper executable the module opened at configure (an O_PATH fd, so
 * a package upgrade that replaces the file mid-run cannot mix versions,
 * and its directory need not be searchable by the unprivileged user; a
 * gateway that changed user is not dumpable, so /proc/self/fd is closed
 * to it and posix_spawn of that path would fail). The child calls only
 * async-signal-safe functions before execveat (the gateway has threads):
 * default signal dispositions, an empty signal mask, a process group of
 * its own (a ^C to the gateway's terminal does not kill them mid-drain),
 * fd 3, an empty environment. The gateway starts them after it has dropped
 * its privileges, so they run as its user; what keeps them from the
 * gateway's files and processes is their seccomp filter (helper.c). A
 * helper is up once it has said HELLO.
 *
 * One check (spf_run, on a filter worker thread): take an idle helper
 * (waiting, up to the deadline, for one), send CHECK, answer each QUERY
 * (resolve.c: cache, name servers, limits), until RESULT. A helper that
 * dies, says something malformed or out of turn, or is not done by the
 * deadline is killed (SIGKILL) and reaped, and a new one is spawned in its
 * place at once: the check's result is temperror (the module's failure
 * mode), counted in helper_failures and helper_restarts. A helper found
 * dead while idle is replaced before use, so it costs no check.
 *
 * Results are cached too (spf_cached): a check that ended with a result
 * its DNS answers decide (not temperror, not a helper failure) is kept for
 * the shortest life left of the answers it used (at most max_ttl), keyed
 * by (client address, domain checked) - or, when an SPF record met on the
 * way has a macro ('%' in a TXT answer: %{l}, %{h}, ... may make the
 * result depend on more), by (client address, sender, HELO). A burst from
 * one sender then costs no hand-off to a helper at all. Each pool (one per
 * config generation) has its own, bounded like the answer cache.
 *
 * The pool is reference-counted: the module holds one reference, every
 * check in flight another, so a reload that frees the module's config
 * leaves running checks their helpers. The last reference closes every
 * socket (a helper exits at end of input), waits up to STOP_WAIT_MS for
 * them, then kills what is left.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/metrics.h"
#include "core/net.h"
#include "core/util.h"
#include "filters/filter.h"
#include "filters/spf/spf_int.h"

#define HELLO_WAIT_MS 5000
#define STOP_WAIT_MS 2000

/* the result cache's key spaces */
enum { RK_DOMAIN = 1, RK_FULL = 2 };

struct helper {
    pid_t pid;                      /* 0: none */
    int fd;
    bool up;                        /* said HELLO */
    bool busy;                      /* a check holds it (or a spawn) */
};

/* the metrics registry's series (docs/OPERATIONS.md); process-wide, so
 * a reload's new pool adds to the same counters */
struct pmetrics {
    struct pst_metric *results[SPF_R_COUNT];
    struct pst_metric *failures, *restarts, *helpers, *queries, *limits;
    struct pst_metric *hits, *misses;
    struct pst_metric *rhits, *rmisses;
};

struct spf_pool {
    atomic_int refs;
    struct pmetrics m;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct spf_popts o;
    struct helper *h;
    struct spf_cache *cache;        /* DNS answers */
    struct spf_cache *results;      /* check results (RK_*) */
    struct spf_pstats st;           /* under mu */
};

/* ---- frames on a socket, with a deadline ---- */

static int
read_full(int fd, uint8_t *b, size_t n, int64_t deadline)
{
    while (n > 0) {
        int64_t left = deadline - spf_now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd pf = {fd, POLLIN, 0};
        int rc = poll(&pf, 1, (int)PST_MIN(left, 60000));
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return -errno;
        if (rc == 0)
            continue;
        ssize_t r = recv(fd, b, n, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0)
            return -EPIPE;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

/* the next frame into buf (SPF_FRAME_MAX); 0, -ETIMEDOUT, -EPIPE (end of
 * input or an error) or -EPROTO (a malformed header) */
static int
read_frame(int fd, int64_t deadline, uint8_t *buf, uint8_t *type,
           size_t *len)
{
    uint8_t h[SPF_FRAME_HDR];
    int rc = read_full(fd, h, sizeof(h), deadline);
    if (rc < 0)
        return rc;
    if (spf_hdr_parse(h, type, len) < 0)
        return -EPROTO;
    return read_full(fd, buf, *len, deadline);
}

/* ---- helper processes ---- */

static void
reap(pid_t pid, int *status)
{
    while (waitpid(pid, status, 0) < 0 && errno == EINTR)
        ;
}

static void
kill_one(struct spf_pool *p, struct helper *h, char *why, size_t wl)
{
    int status = 0;
    if (h->up)
        pst_metric_sub(p->m.helpers, 1);
    if (h->pid > 0) {
        kill(h->pid, SIGKILL);
        reap(h->pid, &status);
        if (why != NULL && WIFSIGNALED(status) &&
            WTERMSIG(status) != SIGKILL)
            snprintf(why, wl, "helper died of signal %d",
                     WTERMSIG(status));
        else if (why != NULL && WIFEXITED(status))
            snprintf(why, wl, "helper exited with status %d",
                     WEXITSTATUS(status));
    }
    if (h->fd >= 0)
        close(h->fd);
    h->pid = 0;
    h->fd = -1;
    h->up = false;
}

/* start helper h and wait for its HELLO; 0 or -1 with why */
static int
spawn_one(struct spf_pool *p, struct helper *h, char *why, size_t wl)
{
    int sv[2];
    pid_t pid;
    int rc;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        snprintf(why, wl, "socketpair: %s", strerror(errno));
        return -1;
    }
    if (sv[1] == 3) {               /* dup2(3, 3) would keep CLOEXEC */
        int t = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
        close(sv[1]);
        sv[1] = t;
    }
    pid = fork();
    if (pid == 0)
        pst_fhelper_exec(sv[1], p->o.exe_fd, "postern-spf", 0);
    rc = pid < 0 ? errno : 0;
    close(sv[1]);
    if (rc != 0) {
        close(sv[0]);
        snprintf(why, wl, "cannot start the helper: %s", strerror(rc));
        return -1;
    }
    h->pid = pid;
    h->fd = sv[0];
    h->up = false;

    uint8_t buf[SPF_FRAME_MAX], type;
    size_t len;
    struct spf_hello hello;
    rc = read_frame(h->fd, spf_now_ms() + HELLO_WAIT_MS, buf, &type, &len);
    if (rc == 0 && type == SPF_F_HELLO && spf_dec_hello(buf, len, &hello) == 0 &&
        hello.version == SPF_PROTO_VERSION && (pid_t)hello.pid == pid) {
        h->up = true;
        pst_metric_add(p->m.helpers, 1);
        return 0;
    }
    snprintf(why, wl, "the helper did not start (%s)",
             rc == -ETIMEDOUT ? "no hello in time" : "no hello");
    kill_one(p, h, why, wl);
    return -1;
}

/* spf_pool_new - see spf_int.h. */
int
spf_pool_new(const struct spf_popts *opts, struct spf_pool **out, char *why,
             size_t wl)
{
    struct spf_pool *p = pst_xcalloc(1, sizeof(*p));
    atomic_init(&p->refs, 1);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->o = *opts;
    for (int r = 0; r < SPF_R_COUNT; r++)
        p->m.results[r] = pst_metric_counter(
            "postern_spf_checks_total", "SPF checks by result.", "result",
            spf_result_name((enum spf_result)r), NULL);
    p->m.failures = pst_metric_counter(
        "postern_spf_helper_failures_total",
        "SPF checks whose helper died, misbehaved or timed out "
        "(result temperror).", NULL);
    p->m.restarts = pst_metric_counter(
        "postern_spf_helper_restarts_total",
        "SPF helper processes started in place of one that died.", NULL);
    p->m.helpers = pst_metric_gauge("postern_spf_helpers",
                                    "SPF helper processes up.", NULL);
    p->m.queries = pst_metric_counter(
        "postern_spf_dns_queries_total",
        "DNS questions SPF checks sent to the name servers (cache misses).",
        NULL);
    p->m.hits = pst_metric_counter(
        "postern_spf_cache_total", "SPF DNS questions by cache outcome.",
        "outcome", "hit", NULL);
    p->m.misses = pst_metric_counter(
        "postern_spf_cache_total", "SPF DNS questions by cache outcome.",
        "outcome", "miss", NULL);
    p->m.rhits = pst_metric_counter(
        "postern_spf_result_cache_total", "SPF checks by result cache "
        "outcome.", "outcome", "hit", NULL);
    p->m.rmisses = pst_metric_counter(
        "postern_spf_result_cache_total", "SPF checks by result cache "
        "outcome.", "outcome", "miss", NULL);
    p->m.limits = pst_metric_counter(
        "postern_spf_limit_permerrors_total",
        "SPF checks ended as permerror by an RFC 7208 4.6.4 limit or a "
        "malformed record.", NULL);
    if (p->o.exe_fd >= 0 && p->o.exe_fd <= 3) {
        /* fd 3 is the helper's socket in the child: keep the executable
         * out of its way */
        int t = fcntl(p->o.exe_fd, F_DUPFD_CLOEXEC, 10);
        close(p->o.exe_fd);
        p->o.exe_fd = t;
    }
    p->o.rc.servers = opts->rc.servers ? pst_xstrdup(opts->rc.servers) : NULL;
    p->h = pst_xcalloc(opts->helpers, sizeof(*p->h));
    p->cache = spf_cache_new(opts->cache_entries, opts->cache_bytes);
    p->results = spf_cache_new(opts->cache_entries, opts->cache_bytes);
    for (unsigned i = 0; i < opts->helpers; i++)
        p->h[i].fd = -1;
    *out = p;
    for (unsigned i = 0; i < opts->helpers; i++) {
        if (spawn_one(p, &p->h[i], why, wl) < 0) {
            spf_pool_unref(p);
            *out = NULL;
            return -1;
        }
    }
    return 0;
}

void
spf_pool_ref(struct spf_pool *p)
{
    atomic_fetch_add(&p->refs, 1);
}

void
spf_pool_unref(struct spf_pool *p)
{
    if (p == NULL || atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    /* end of input tells each helper to exit */
    for (unsigned i = 0; i < p->o.helpers; i++) {
        if (p->h[i].fd >= 0)
            close(p->h[i].fd);
        p->h[i].fd = -1;
    }
    int64_t until = spf_now_ms() + STOP_WAIT_MS;
    for (unsigned i = 0; i < p->o.helpers; i++) {
        struct helper *h = &p->h[i];
        while (h->pid > 0 && spf_now_ms() < until) {
            pid_t r = waitpid(h->pid, NULL, WNOHANG);
            if (r == h->pid || (r < 0 && errno != EINTR))
                h->pid = 0;
            else
                nanosleep(&(struct timespec){0, 5000000}, NULL);
        }
        kill_one(p, h, NULL, 0);
    }
    if (p->o.exe_fd >= 0)
        close(p->o.exe_fd);
    spf_cache_free(p->cache);
    spf_cache_free(p->results);
    free(p->o.rc.servers);
    free(p->h);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

/*
 * sweep - replace every idle helper that died (or says something out of
 * turn) while it waited: one poll over the idle sockets, before each
 * check, so the pool is back to full size at the next check at the
 * latest, and a death while idle never costs a check.
 */
static void
sweep(struct spf_pool *p)
{
    struct pollfd pf[64];
    unsigned idx[64], n = 0;
    pthread_mutex_lock(&p->mu);
    for (unsigned i = 0; i < p->o.helpers && n < 64; i++) {
        if (p->h[i].busy || !p->h[i].up)
            continue;
        p->h[i].busy = true;
        pf[n].fd = p->h[i].fd;
        pf[n].events = POLLIN;
        pf[n].revents = 0;
        idx[n++] = i;
    }
    pthread_mutex_unlock(&p->mu);
    if (n == 0)
        return;
    int rc = poll(pf, n, 0);
    unsigned restarted = 0;
    for (unsigned k = 0; k < n && rc > 0; k++) {
        if (pf[k].revents == 0)
            continue;
        char w[SPF_DETAIL_MAX];
        kill_one(p, &p->h[idx[k]], NULL, 0);
        spawn_one(p, &p->h[idx[k]], w, sizeof(w));
        restarted++;
    }
    pthread_mutex_lock(&p->mu);
    p->st.helper_restarts += restarted;
    pst_metric_add(p->m.restarts, restarted);
    for (unsigned k = 0; k < n; k++)
        p->h[idx[k]].busy = false;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* take an idle helper, up and alive; its index or -1 (why filled) */
static int
acquire(struct spf_pool *p, int64_t deadline, char *why, size_t wl)
{
    int idx = -1;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        for (unsigned i = 0; i < p->o.helpers && idx < 0; i++)
            if (!p->h[i].busy && p->h[i].up)
                idx = (int)i;
        for (unsigned i = 0; i < p->o.helpers && idx < 0; i++)
            if (!p->h[i].busy)
                idx = (int)i;       /* down: respawn it */
        if (idx >= 0)
            break;
        int64_t left = deadline - spf_now_ms();
        if (left <= 0) {
            pthread_mutex_unlock(&p->mu);
            snprintf(why, wl, "no helper free in time");
            return -1;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (left % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    struct helper *h = &p->h[idx];
    h->busy = true;
    pthread_mutex_unlock(&p->mu);

    if (h->up) {
        /* an idle helper has nothing to say: input or hang-up means it
         * died (or misbehaves) while waiting */
        struct pollfd pf = {h->fd, POLLIN, 0};
        if (poll(&pf, 1, 0) != 0) {
            char w[SPF_DETAIL_MAX];
            kill_one(p, h, w, sizeof(w));
        }
    }
    if (!h->up) {
        kill_one(p, h, NULL, 0);
        int rc = spawn_one(p, h, why, wl);
        pthread_mutex_lock(&p->mu);
        p->st.helper_restarts++;
        pst_metric_add(p->m.restarts, 1);
        if (rc < 0) {
            h->busy = false;
            pthread_cond_signal(&p->cv);
            pthread_mutex_unlock(&p->mu);
            return -1;
        }
        pthread_mutex_unlock(&p->mu);
    }
    return idx;
}

static void
release(struct spf_pool *p, int idx)
{
    pthread_mutex_lock(&p->mu);
    p->h[idx].busy = false;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* ---- one check ---- */

static bool
identity_ok(const char *d)
{
    /* RFC 7208 4.3: a malformed or single-label domain is "none" */
    return d[0] != '\0' && spf_name_ok(d) && strchr(d, '.') != NULL &&
           d[strlen(d) - 1] != '.';
}

/* the answer to q, from the cache or the name servers; returns how long
 * a result built on it may be kept, in seconds (UINT32_MAX: for ever) */
static uint32_t
answer(struct spf_pool *p, const struct spf_query *q, int64_t deadline,
       struct spf_dns *d)
{
    if (!spf_name_ok(q->name)) {
        spf_dns_simple(d, q->type, SPF_D_NXDOMAIN);
        return UINT32_MAX;
    }
    if (spf_cache_get(p->cache, q->type, q->name, d)) {
        pst_metric_add(p->m.hits, 1);
        return d->ttl;
    }
    pst_metric_add(p->m.misses, 1);
    spf_dns_fetch(&p->o.rc, q->type, q->name, deadline, d);
    pthread_mutex_lock(&p->mu);
    p->st.dns_queries++;
    pthread_mutex_unlock(&p->mu);
    pst_metric_add(p->m.queries, 1);
    spf_cache_put(p->cache, q->type, q->name, d);
    return d->status == SPF_D_TEMPFAIL ? 0 : d->ttl;
}

/* the domain whose record is checked: the sender's, or the HELO name for
 * the null sender; NULL if there is none to check (RFC 7208 4.3: result
 * none) */
static const char *
checked_domain(const char *sender, const char *helo, const char *receiver)
{
    const char *at = strrchr(sender, '@');
    const char *dom = sender[0] ? (at ? at + 1 : "") : helo;
    if (!identity_ok(dom) || strlen(sender) > SPF_SENDER_MAX ||
        strlen(helo) > SPF_NAME_MAX || strlen(receiver) > SPF_NAME_MAX)
        return NULL;
    return dom;
}

static void
result_key(char *key, size_t n, int kind, int family, const uint8_t *addr,
           const char *sender, const char *helo)
{
    char ip[PST_IP_STRLEN] = "";
    struct pst_ip a = {.family = family};
    memcpy(a.addr, addr, family == AF_INET6 ? 16 : 4);
    if (family == AF_INET || family == AF_INET6)
        pst_ip_str(&a, ip, sizeof(ip));
    if (kind == RK_DOMAIN)
        snprintf(key, n, "%s|%s", ip, checked_domain(sender, helo, ""));
    else
        snprintf(key, n, "%s|%s|%s", ip, sender, helo);
}

#define RKEY_MAX (PST_IP_STRLEN + SPF_SENDER_MAX + SPF_NAME_MAX + 4)

/* spf_cached - see spf_int.h. */
bool
spf_cached(struct spf_pool *p, int family, const uint8_t *addr,
           const char *sender, const char *helo, struct spf_out *out)
{
    char key[RKEY_MAX];
    if (checked_domain(sender, helo, "") == NULL)
        return false;
    for (int kind = RK_DOMAIN; kind <= RK_FULL; kind++) {
        result_key(key, sizeof(key), kind, family, addr, sender, helo);
        if (spf_cache_get_blob(p->results, (uint16_t)kind, key, out,
                               sizeof(*out)) == (long)sizeof(*out)) {
            pst_metric_add(p->m.rhits, 1);
            out->queries = 0;       /* none asked for this one */
            return true;
        }
    }
    pst_metric_add(p->m.rmisses, 1);
    return false;
}

/* spf_count - see spf_int.h. */
void
spf_count(struct spf_pool *p, const struct spf_out *out)
{
    pthread_mutex_lock(&p->mu);
    p->st.results[out->result]++;
    if (out->helper_failed)
        p->st.helper_failures++;
    pthread_mutex_unlock(&p->mu);
    pst_metric_add(p->m.results[out->result], 1);
    if (out->helper_failed)
        pst_metric_add(p->m.failures, 1);
}

/* spf_run - see spf_int.h. */
void
spf_run(struct spf_pool *p, int family, const uint8_t *addr,
        const char *sender, const char *helo, const char *receiver,
        struct spf_out *out)
{
    static _Thread_local struct spf_frame f;
    static _Thread_local struct spf_dns d;
    static _Thread_local uint8_t buf[SPF_FRAME_MAX];
    static _Thread_local struct spf_lim lim;
    struct spf_check c;
    int64_t deadline = spf_now_ms() + p->o.timeout_ms;
    uint32_t life = UINT32_MAX;     /* of the answers used, seconds */
    bool macros = false;            /* an SPF record may have one */
    int idx, rc = 0;

    memset(out, 0, sizeof(*out));
    out->result = SPF_R_TEMPERROR;
    memset(&lim, 0, sizeof(lim));
    if (checked_domain(sender, helo, receiver) == NULL) {
        out->result = SPF_R_NONE;
        snprintf(out->why, sizeof(out->why), "no valid domain to check");
        goto count;
    }
    memset(&c, 0, sizeof(c));
    c.family = family;
    memcpy(c.addr, addr, family == AF_INET6 ? 16 : 4);
    memcpy(c.sender, sender, strlen(sender) + 1);
    memcpy(c.helo, helo, strlen(helo) + 1);
    memcpy(c.receiver, receiver, strlen(receiver) + 1);

    sweep(p);
    if ((idx = acquire(p, deadline, out->why, sizeof(out->why))) < 0) {
        out->helper_failed = true;
        goto count;
    }
    struct helper *h = &p->h[idx];
    if (spf_enc_check(&f, &c) < 0 || spf_write_all(h->fd, f.b, f.n) < 0) {
        rc = -EPIPE;
        goto broken;
    }
    for (;;) {
        uint8_t type;
        size_t len;
        struct spf_query q;
        struct spf_resmsg m;
        if ((rc = read_frame(h->fd, deadline, buf, &type, &len)) < 0)
            goto broken;
        if (type == SPF_F_RESULT) {
            if (spf_dec_result(buf, len, &m) < 0) {
                rc = -EPROTO;
                goto broken;
            }
            out->result = (enum spf_result)m.result;
            break;
        }
        if (type != SPF_F_QUERY || spf_dec_query(buf, len, &q) < 0) {
            rc = -EPROTO;
            goto broken;
        }
        if (!spf_lim_pre(&lim, &q)) {
            spf_dns_simple(&d, q.type, SPF_D_STOP);
        } else {
            life = PST_MIN(life, answer(p, &q, deadline, &d));
            if (q.type == SPF_Q_TXT && memchr(d.frame, '%', d.flen))
                macros = true;
            if (!spf_lim_post(&lim, &q, &d))
                spf_dns_simple(&d, q.type, SPF_D_STOP);
        }
        if (spf_write_all(h->fd, d.frame, d.flen) < 0) {
            rc = -EPIPE;
            goto broken;
        }
    }
    release(p, idx);
    out->queries = lim.queries;
    if (lim.stop != NULL) {
        out->result = SPF_R_PERMERROR;
        snprintf(out->why, sizeof(out->why), "%s", lim.stop);
        pthread_mutex_lock(&p->mu);
        p->st.limit_permerrors++;
        pthread_mutex_unlock(&p->mu);
        pst_metric_add(p->m.limits, 1);
    }
    if (out->result != SPF_R_TEMPERROR && life > 0) {
        char key[RKEY_MAX];
        int kind = macros ? RK_FULL : RK_DOMAIN;
        result_key(key, sizeof(key), kind, family, addr, sender, helo);
        spf_cache_put_blob(p->results, (uint16_t)kind, key, out,
                           sizeof(*out), PST_MIN(life, p->o.rc.max_ttl));
    }
    goto count;

broken:
    /* the helper is unusable: kill it, start another in its place */
    snprintf(out->why, sizeof(out->why), "%s",
             rc == -ETIMEDOUT ? "helper timed out"
             : rc == -EPROTO  ? "helper broke the protocol"
                              : "helper died");
    kill_one(p, h, rc == -EPIPE ? out->why : NULL, sizeof(out->why));
    out->helper_failed = true;
    out->result = SPF_R_TEMPERROR;
    out->queries = lim.queries;
    {
        char w[SPF_DETAIL_MAX];
        spawn_one(p, h, w, sizeof(w));
    }
    pthread_mutex_lock(&p->mu);
    p->st.helper_restarts++;
    pthread_mutex_unlock(&p->mu);
    pst_metric_add(p->m.restarts, 1);
    release(p, idx);

count:
    spf_count(p, out);
}

void
spf_pool_stats(struct spf_pool *p, struct spf_pstats *st)
{
    size_t entries;
    pthread_mutex_lock(&p->mu);
    *st = p->st;
    st->helpers_alive = 0;
    for (unsigned i = 0; i < p->o.helpers; i++)
        st->helpers_alive += p->h[i].up;
    pthread_mutex_unlock(&p->mu);
    spf_cache_counts(p->cache, &st->cache_hits, &st->cache_misses, &entries);
}

size_t
spf_pool_pids(struct spf_pool *p, int *pids, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&p->mu);
    for (unsigned i = 0; i < p->o.helpers && n < max; i++)
        if (p->h[i].up && p->h[i].pid > 0)
            pids[n++] = p->h[i].pid;
    pthread_mutex_unlock(&p->mu);
    return n;
}
