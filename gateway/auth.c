/*
 * auth.c - password file, sender-login map, failure counters and the
 * crypt worker pool (auth.h).
 *
 * Pool: auth.workers threads of a core/pool.h pool of this module's own,
 * holding at most PST_AUTH_QUEUE_PER_WORKER checks per worker (beyond it
 * pst_auth_check says -EAGAIN and the client gets 454 4.7.0). Jobs own
 * copies of the login, password and hash; the password is wiped when the
 * job is freed. Each worker thread owns its struct crypt_data (32 KiB),
 * made by the pool's thread_init and freed by thread_fini.
 *
 * Failure counters live on the loop thread: tables from client (its
 * IPv4 address, or its IPv6 prefix of limits.ipv6_prefix bits) and from
 * login to {count, window start}, each a map plus a list in order of
 * window start, so expired counters are dropped from the head and a full
 * table forgets its oldest counter to make room (counting never stops).
 * The client table and the table of logins not in the password file hold
 * at most auth.failure_entries counters; logins in the file have a table
 * of their own, bounded by the file, which guesses at made-up logins
 * cannot flush.
 */
#include "gateway/auth.h"

#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <stdint.h>

#include <openssl/crypto.h>

#include "core/log.h"
#include "core/pool.h"
#include "core/strmap.h"
#include "core/util.h"

#define PST_AUTH_QUEUE_PER_WORKER 64
#define PST_AUTH_LINE_MAX 1024

struct job {
    struct pst_pool_job pj;         /* first: the pool's */
    struct pst_auth *a;
    uint64_t sid;
    bool known;                     /* login exists (else dummy hash) */
    bool ok;                        /* result */
    struct pst_ip ip;
    char login[PST_AUTH_FIELD_MAX + 1];
    char password[PST_AUTH_FIELD_MAX + 1];
    char hash[CRYPT_OUTPUT_SIZE];
};

struct fails;

/* A failure table: key -> counter, at most max entries. */
struct ftable {
    const char *name;               /* for the log */
    struct pst_strmap *m;           /* key -> struct fails * */
    struct fails *head, *tail;      /* oldest start first */
    size_t max;
    uint64_t evicted;               /* counters forgotten to make room */
};

struct pst_auth {
    uv_loop_t *loop;
    struct pst_pool *pool;
    bool closing;                   /* no callback any more */
    pst_auth_done_fn done;
    void *done_arg;

    struct pst_strmap *users;       /* login -> hash (char *) */
    struct pst_strmap *senders;     /* address or @domain -> logins (char *) */
    char dummy[CRYPT_OUTPUT_SIZE];

    unsigned max_ip, max_login, v6prefix;
    uint64_t window_ms;             /* auth.failure_window */
    struct ftable ip_fails;         /* per client (IPv6: per prefix) */
    struct ftable user_fails;       /* per login in the password file */
    struct ftable nouser_fails;     /* per login not in it */

    uint64_t checks, refused;
};

/* A map file being read into a: its name for errors. */
struct mapf {
    struct pst_auth *a;
    const char *file;
};

/* ---- files ---- */

static void
lower(char *s)
{
    for (; *s; s++)
        *s = (char)pst_tolower((unsigned char)*s);
}

/* One "login:hash" line of the password file. */
static int
password_line(void *arg, char *s, int n, struct pst_err *err)
{
    struct mapf *m = arg;
    struct pst_auth *a = m->a;
    const char *file = m->file;
    char *colon = strchr(s, ':');
    if (colon == NULL || colon == s) {
        pst_err_add(err, file, n, "expected login:hash");
        return -EINVAL;
    }
    *colon = '\0';
    char *hash = colon + 1, *end = strchr(hash, ':');
    if (end)
        *end = '\0';               /* shadow-style trailing fields */
    if (strlen(s) > PST_AUTH_FIELD_MAX) {
        pst_err_add(err, file, n, "login longer than %d octets",
                    PST_AUTH_FIELD_MAX);
        return -EINVAL;
    }
    if ((strncmp(hash, "$y$", 3) != 0 && strncmp(hash, "$6$", 3) != 0) ||
        strlen(hash) >= CRYPT_OUTPUT_SIZE) {
        pst_err_add(err, file, n,
                    "hash of \"%s\" is not yescrypt ($y$) or SHA-512 ($6$)",
                    s);
        return -EINVAL;
    }
    bool created;
    void **slot = pst_strmap_slot(a->users, s, strlen(s), &created);
    if (!created) {
        pst_err_add(err, file, n, "duplicate login \"%s\"", s);
        return -EINVAL;
    }
    *slot = pst_xstrdup(hash);
    if (a->dummy[0] == '\0')
        snprintf(a->dummy, sizeof(a->dummy), "%s", hash);
    return 0;
}

static int
load_passwords(struct pst_auth *a, const char *file, struct pst_err *err)
{
    struct stat st;
    FILE *f = fopen(file, "r");
    int rc;

    if (f == NULL) {
        rc = -errno;
        pst_err_add(err, file, 0, "cannot open password file: %s",
                    strerror(-rc));
        return rc;
    }
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & (S_IROTH | S_IWOTH))) {
        pst_err_add(err, file, 0,
                    "password file is readable or writable by others "
                    "(mode %04o); chmod o-rw it",
                    (unsigned)(st.st_mode & 07777));
        fclose(f);
        return -EPERM;
    }
    struct mapf m = {a, file};
    rc = pst_map_lines(f, file, PST_AUTH_LINE_MAX, false, password_line, &m,
                       err);
    fclose(f);
    return rc;
}

/* One "address-or-@domain login[,login...]" line of the sender map. */
static int
sender_line(void *arg, char *s, int n, struct pst_err *err)
{
    struct mapf *m = arg;
    struct pst_auth *a = m->a;
    char *sp = s + strcspn(s, " \t");
    if (*sp == '\0' || strchr(s, '@') == NULL || strchr(s, '@') > sp) {
        pst_err_add(err, m->file, n,
                    "expected \"address-or-@domain login[,login...]\"");
        return -EINVAL;
    }
    *sp++ = '\0';
    char *logins = sp + strspn(sp, " \t");     /* its end is trimmed */
    lower(s);
    /* logins: separated by commas and/or blanks; stored ",a,b," */
    char *norm = pst_xmalloc(strlen(logins) + 3), *o = norm;
    *o++ = ',';
    for (char *p = logins; *p; p++) {
        if (*p == ',' || *p == ' ' || *p == '\t') {
            if (o[-1] != ',')
                *o++ = ',';
        } else {
            *o++ = *p;
        }
    }
    if (o[-1] != ',')
        *o++ = ',';
    *o = '\0';
    bool created;
    void **slot = pst_strmap_slot(a->senders, s, strlen(s), &created);
    if (!created) {
        pst_err_add(err, m->file, n, "duplicate sender \"%s\"", s);
        free(norm);
        return -EINVAL;
    }
    *slot = norm;
    return 0;
}

static int
load_senders(struct pst_auth *a, const char *file, struct pst_err *err)
{
    FILE *f = fopen(file, "r");
    int rc;

    if (f == NULL) {
        rc = -errno;
        pst_err_add(err, file, 0, "cannot open sender-login map: %s",
                    strerror(-rc));
        return rc;
    }
    struct mapf m = {a, file};
    rc = pst_map_lines(f, file, PST_AUTH_LINE_MAX, true, sender_line, &m,
                       err);
    fclose(f);
    return rc;
}

bool
pst_auth_sender_ok(const struct pst_auth *a, const char *login,
                   const char *sender)
{
    char key[PST_AUTH_LINE_MAX], want[PST_AUTH_FIELD_MAX + 3];
    if (a->senders == NULL || sender[0] == '\0')
        return true;
    snprintf(key, sizeof(key), "%s", sender);
    lower(key);
    const char *logins = pst_strmap_gets(a->senders, key);
    if (logins == NULL) {
        const char *at = strrchr(key, '@');
        if (at)
            logins = pst_strmap_gets(a->senders, at);
    }
    if (logins == NULL)
        return false;
    snprintf(want, sizeof(want), ",%s,", login);
    return strstr(logins, want) != NULL;
}

/* ---- failure counters (loop thread) ---- */

/* One client's or login's failures since start; in its table's list,
 * oldest start first (entries are only ever added at the tail, with the
 * loop's monotonic time). Kept in milliseconds: in whole seconds a
 * counter's window would end anywhere from 0 to 1 s early (a window of
 * 1 s could end at once). */
struct fails {
    struct fails *prev, *next;
    unsigned count;
    uint64_t start;                 /* ms, loop time */
    size_t klen;
    unsigned char key[];
};

static void
ft_init(struct ftable *t, const char *name, size_t max)
{
    t->name = name;
    t->m = pst_strmap_new();
    t->max = max;
}

static void
ft_drop(struct ftable *t, struct fails *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        t->head = f->next;
    if (f->next)
        f->next->prev = f->prev;
    else
        t->tail = f->prev;
    pst_strmap_del(t->m, f->key, f->klen);
    free(f);
}

static void
ft_free(struct ftable *t)
{
    while (t->head)
        ft_drop(t, t->head);
    pst_strmap_free(t->m, NULL);
}

/* ft_get - the live counter for key, or NULL; expired counters (all at
 * the head of the list) are dropped first. */
static struct fails *
ft_get(struct pst_auth *a, struct ftable *t, const void *key, size_t klen,
       uint64_t now)
{
    while (t->head && now - t->head->start >= a->window_ms)
        ft_drop(t, t->head);
    return pst_strmap_get(t->m, key, klen);
}

/* ft_fail - count one failure for key. A full table forgets its oldest
 * counter to make room: counting never stops, and the counter forgotten
 * is the one nearest to expiring anyway. */
static void
ft_fail(struct pst_auth *a, struct ftable *t, const void *key, size_t klen,
        uint64_t now)
{
    struct fails *f = ft_get(a, t, key, klen, now);
    if (f == NULL) {
        if (pst_strmap_count(t->m) >= t->max) {
            ft_drop(t, t->head);
            t->evicted++;
            if ((t->evicted & (t->evicted - 1)) == 0)   /* 1, 2, 4, ... */
                pst_warn("event=auth_failures_full table=%s entries=%zu "
                         "forgotten=%llu", t->name, t->max,
                         (unsigned long long)t->evicted);
        }
        f = pst_xcalloc(1, sizeof(*f) + klen);
        f->start = now;
        f->klen = klen;
        memcpy(f->key, key, klen);
        f->prev = t->tail;
        if (t->tail)
            t->tail->next = f;
        else
            t->head = f;
        t->tail = f;
        *pst_strmap_slot(t->m, key, klen, NULL) = f;
    }
    f->count++;
}

/* Failures per login are kept apart for logins that exist: there are as
 * many of them as the password file has, so guesses at made-up logins can
 * never push a real login's counter out. */
static struct ftable *
login_table(struct pst_auth *a, const char *login)
{
    return pst_strmap_gets(a->users, login) ? &a->user_fails
                                            : &a->nouser_fails;
}

/* ---- the pool ---- */

static void
job_free(struct job *j)
{
    explicit_bzero(j->password, sizeof(j->password));
    free(j);
}

static int
crypt_area_new(void *arg, void **tctx)
{
    *tctx = pst_xcalloc(1, sizeof(struct crypt_data));
    return 0;
}

static void
crypt_area_free(void *arg, void *tctx)
{
    free(tctx);
}

/* Worker thread: one password check in this thread's crypt area. */
static void
job_work(struct pst_pool_job *pj, void *tctx)
{
    struct job *j = (struct job *)pj;
    struct crypt_data *cd = tctx;
    char *out = crypt_rn(j->password, j->hash, cd, sizeof(*cd));
    size_t hl = strlen(j->hash);
    j->ok = j->known && out != NULL && out[0] != '*' &&
            strlen(out) == hl && CRYPTO_memcmp(out, j->hash, hl) == 0;
    explicit_bzero(j->password, sizeof(j->password));
    explicit_bzero(cd, sizeof(*cd));
}

/* Loop thread: count the outcome, tell the session (if still wanted). */
static void
job_done(struct pst_pool_job *pj, bool ran)
{
    struct job *j = (struct job *)pj;
    struct pst_auth *a = j->a;
    if (ran && !a->closing) {
        uint64_t now = uv_now(a->loop);
        struct ftable *lt = login_table(a, j->login);
        size_t ll = strlen(j->login);
        a->checks++;
        if (!j->ok) {
            unsigned char b[PST_IP_KEY_MAX];
            ft_fail(a, &a->ip_fails, b, pst_ip_key(&j->ip, a->v6prefix, b),
                    now);
            ft_fail(a, lt, j->login, ll, now);
        } else {
            struct fails *f = ft_get(a, lt, j->login, ll, now);
            if (f)
                ft_drop(lt, f);
        }
        a->done(a->done_arg, j->sid, j->login, j->ok);
    }
    job_free(j);
}

int
pst_auth_check(struct pst_auth *a, uint64_t sid, const struct pst_ip *ip,
               const char *login, const char *password)
{
    uint64_t now = uv_now(a->loop);
    unsigned char b[PST_IP_KEY_MAX];
    struct fails *fi = ft_get(a, &a->ip_fails, b,
                              pst_ip_key(ip, a->v6prefix, b), now);
    struct fails *fl =
        ft_get(a, login_table(a, login), login, strlen(login), now);
    if ((fi && fi->count >= a->max_ip) || (fl && fl->count >= a->max_login)) {
        a->refused++;
        return -EPERM;
    }
    if (strlen(login) > PST_AUTH_FIELD_MAX ||
        strlen(password) > PST_AUTH_FIELD_MAX)
        return -EINVAL;
    struct job *j = pst_xcalloc(1, sizeof(*j));
    const char *hash = pst_strmap_gets(a->users, login);
    j->pj.work = job_work;
    j->pj.done = job_done;
    j->a = a;
    j->sid = sid;
    j->ip = *ip;
    j->known = hash != NULL;
    snprintf(j->login, sizeof(j->login), "%s", login);
    snprintf(j->password, sizeof(j->password), "%s", password);
    snprintf(j->hash, sizeof(j->hash), "%s", hash ? hash : a->dummy);

    if (pst_pool_submit(a->pool, &j->pj) < 0) {
        job_free(j);
        return -EAGAIN;
    }
    return 0;
}

void
pst_auth_stats(struct pst_auth *a, struct pst_auth_stats *st)
{
    st->checks = a->checks;
    st->queued = pst_pool_pending(a->pool);
    st->refused = a->refused;
    st->forgotten = a->ip_fails.evicted + a->nouser_fails.evicted;
}

static void
free_maps(struct pst_auth *a)
{
    pst_strmap_free(a->users, free);
    pst_strmap_free(a->senders, free);
    ft_free(&a->ip_fails);
    ft_free(&a->user_fails);
    ft_free(&a->nouser_fails);
}

int
pst_auth_reload(struct pst_auth *a, const struct pst_conf *c,
                struct pst_err *err)
{
    /* the new tables are built aside (jobs in flight carry copies of the
     * hashes they need) and swapped in whole */
    struct pst_auth *t = pst_xcalloc(1, sizeof(*t));
    t->users = pst_strmap_new();
    int rc = load_passwords(t, c->auth.password_file, err);
    if (rc == 0 && c->auth.sender_login_map) {
        t->senders = pst_strmap_new();
        rc = load_senders(t, c->auth.sender_login_map, err);
    }
    if (rc == 0) {
        struct pst_strmap *u = a->users, *s = a->senders;
        a->users = t->users;
        a->senders = t->senders;
        t->users = u;
        t->senders = s;
        if (t->dummy[0] == '$')     /* else keep the one we have */
            memcpy(a->dummy, t->dummy, sizeof(a->dummy));
        a->max_ip = c->auth.max_failures_per_ip;
        a->max_login = c->auth.max_failures_per_login;
        a->window_ms = (uint64_t)c->auth.failure_window * 1000;
        pst_info("event=auth_reloaded users=%zu sender_map=%s",
                 pst_strmap_count(a->users), a->senders ? "yes" : "no");
    }
    pst_strmap_free(t->users, free);
    pst_strmap_free(t->senders, free);
    explicit_bzero(t->dummy, sizeof(t->dummy));
    free(t);
    return rc;
}

int
pst_auth_new(struct pst_auth **out, uv_loop_t *loop, const struct pst_conf *c,
             pst_auth_done_fn done, void *arg, struct pst_err *err)
{
    struct pst_auth *a = pst_xcalloc(1, sizeof(*a));
    int rc;

    a->loop = loop;
    a->done = done;
    a->done_arg = arg;
    a->users = pst_strmap_new();
    ft_init(&a->ip_fails, "ip", c->auth.failure_entries);
    ft_init(&a->user_fails, "login", SIZE_MAX);
    ft_init(&a->nouser_fails, "unknown_login", c->auth.failure_entries);
    a->v6prefix = c->limits.ipv6_prefix;
    a->max_ip = c->auth.max_failures_per_ip;
    a->max_login = c->auth.max_failures_per_login;
    a->window_ms = (uint64_t)c->auth.failure_window * 1000;
    rc = load_passwords(a, c->auth.password_file, err);
    if (rc == 0 && c->auth.sender_login_map) {
        a->senders = pst_strmap_new();
        rc = load_senders(a, c->auth.sender_login_map, err);
    }
    if (rc == 0 && a->dummy[0] == '\0') {
        /* no users at all: still spend the time of a real check */
        char salt[CRYPT_GENSALT_OUTPUT_SIZE];
        struct crypt_data *cd = pst_xcalloc(1, sizeof(*cd));
        if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof(salt)) &&
            crypt_rn("postern-dummy", salt, cd, sizeof(*cd)))
            snprintf(a->dummy, sizeof(a->dummy), "%s", cd->output);
        free(cd);
        if (a->dummy[0] != '$') {
            pst_err_add(err, NULL, 0, "cannot compute a yescrypt hash");
            rc = -EINVAL;
        }
    }
    if (rc < 0) {
        free_maps(a);
        free(a);
        *out = NULL;
        return rc;
    }
    struct pst_pool_opts po = {
        .name = "pst-auth", .threads = c->auth.workers,
        .max_jobs = c->auth.workers * PST_AUTH_QUEUE_PER_WORKER,
        .thread_init = crypt_area_new, .thread_fini = crypt_area_free};
    rc = pst_pool_new(&a->pool, loop, &po);
    if (rc < 0) {
        pst_err_add(err, NULL, 0, "cannot start the auth workers: %s",
                    strerror(-rc));
        free_maps(a);
        free(a);
        *out = NULL;
        return rc;
    }
    pst_info("event=auth_ready users=%zu workers=%u sender_map=%s",
             pst_strmap_count(a->users), c->auth.workers,
             a->senders ? "yes" : "no");
    *out = a;
    return 0;
}

void
pst_auth_close(struct pst_auth *a)
{
    if (a == NULL)
        return;
    a->closing = true;
    pst_pool_close(a->pool);        /* every job's done: freed, unreported */
    free_maps(a);
    free(a);
}

/* ---- SASL helpers ---- */

int
pst_sasl_plain(const char *p, size_t n, char *login, char *password)
{
    const char *z1 = memchr(p, '\0', n);
    if (z1 == NULL)
        return -1;
    const char *a = z1 + 1;
    size_t rest = n - (size_t)(a - p);
    const char *z2 = memchr(a, '\0', rest);
    if (z2 == NULL)
        return -1;
    size_t alen = (size_t)(z2 - a);
    const char *pw = z2 + 1;
    size_t plen = n - (size_t)(pw - p);
    size_t zlen = (size_t)(z1 - p);
    if (alen == 0 || alen > PST_AUTH_FIELD_MAX || plen > PST_AUTH_FIELD_MAX ||
        memchr(pw, '\0', plen) != NULL)
        return -1;
    /* acting for someone else (authzid) is not supported */
    if (zlen > 0 && (zlen != alen || memcmp(p, a, alen) != 0))
        return -1;
    memcpy(login, a, alen);
    login[alen] = '\0';
    memcpy(password, pw, plen);
    password[plen] = '\0';
    return 0;
}
