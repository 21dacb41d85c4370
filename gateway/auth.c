/*
 * auth.c - password file, sender-login map, failure counters and the
 * crypt worker pool (auth.h).
 *
 * Pool: auth.workers threads take jobs from a bounded FIFO
 * (PST_AUTH_QUEUE_PER_WORKER per worker; beyond it pst_auth_check says
 * -EAGAIN and the client gets 454 4.7.0) and put results on a done list,
 * then uv_async_send. Jobs own copies of the login, password and hash;
 * the password is wiped when the job is freed. A worker owns its struct
 * crypt_data (32 KiB), allocated once.
 *
 * Failure counters live on the loop thread: maps from client IP (16+1
 * octets) and from login to {count, window start}; each map holds at most
 * PST_AUTH_TRACK_MAX entries (expired ones are swept when it is full, and
 * a new entry is not recorded if it is still full).
 */
#include "gateway/auth.h"

#include <crypt.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/crypto.h>

#include "core/log.h"
#include "core/strmap.h"
#include "core/util.h"

#define PST_AUTH_QUEUE_PER_WORKER 64
#define PST_AUTH_TRACK_MAX 65536
#define PST_AUTH_LINE_MAX 1024

struct job {
    struct job *next;
    uint64_t sid;
    bool known;                     /* login exists (else dummy hash) */
    bool ok;                        /* result */
    struct pst_ip ip;
    char login[PST_AUTH_FIELD_MAX + 1];
    char password[PST_AUTH_FIELD_MAX + 1];
    char hash[CRYPT_OUTPUT_SIZE];
};

struct fails {
    unsigned count;
    time_t start;
};

struct pst_auth {
    uv_loop_t *loop;
    uv_async_t async;
    pst_auth_done_fn done;
    void *done_arg;

    struct pst_strmap *users;       /* login -> hash (char *) */
    struct pst_strmap *senders;     /* address or @domain -> logins (char *) */
    char dummy[CRYPT_OUTPUT_SIZE];

    unsigned max_ip, max_login, window;
    struct pst_strmap *ip_fails;    /* struct fails * */
    struct pst_strmap *login_fails;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *q_head, *q_tail;    /* waiting */
    unsigned q_len, q_max;
    struct job *done_head, *done_tail;
    bool stop;
    pthread_t *threads;
    unsigned nthreads;
    uint64_t checks, refused;
};

/* ---- files ---- */

static char *
trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' ||
                     e[-1] == '\t'))
        *--e = '\0';
    return s;
}

static void
lower(char *s)
{
    for (; *s; s++)
        *s = (char)pst_tolower((unsigned char)*s);
}

static int
load_passwords(struct pst_auth *a, const char *file, struct pst_err *err)
{
    struct stat st;
    FILE *f = fopen(file, "r");
    char line[PST_AUTH_LINE_MAX + 2];
    int n = 0, rc = 0;

    if (f == NULL) {
        pst_err_add(err, file, 0, "cannot open password file: %s",
                    strerror(errno));
        return -errno;
    }
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & (S_IROTH | S_IWOTH))) {
        pst_err_add(err, file, 0,
                    "password file is readable or writable by others "
                    "(mode %04o); chmod o-rw it",
                    (unsigned)(st.st_mode & 07777));
        fclose(f);
        return -EPERM;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        n++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            pst_err_add(err, file, n, "line longer than %d octets",
                        PST_AUTH_LINE_MAX);
            rc = -EINVAL;
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
            continue;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *colon = strchr(s, ':');
        if (colon == NULL || colon == s) {
            pst_err_add(err, file, n, "expected login:hash");
            rc = -EINVAL;
            continue;
        }
        *colon = '\0';
        char *hash = colon + 1, *end = strchr(hash, ':');
        if (end)
            *end = '\0';            /* shadow-style trailing fields */
        if (strlen(s) > PST_AUTH_FIELD_MAX) {
            pst_err_add(err, file, n, "login longer than %d octets",
                        PST_AUTH_FIELD_MAX);
            rc = -EINVAL;
            continue;
        }
        if ((strncmp(hash, "$y$", 3) != 0 && strncmp(hash, "$6$", 3) != 0) ||
            strlen(hash) >= CRYPT_OUTPUT_SIZE) {
            pst_err_add(err, file, n,
                        "hash of \"%s\" is not yescrypt ($y$) or SHA-512 "
                        "($6$)", s);
            rc = -EINVAL;
            continue;
        }
        bool created;
        void **slot = pst_strmap_slot(a->users, s, strlen(s), &created);
        if (!created) {
            pst_err_add(err, file, n, "duplicate login \"%s\"", s);
            rc = -EINVAL;
            continue;
        }
        *slot = pst_xstrdup(hash);
        if (a->dummy[0] == '\0')
            snprintf(a->dummy, sizeof(a->dummy), "%s", hash);
    }
    fclose(f);
    return rc;
}

static int
load_senders(struct pst_auth *a, const char *file, struct pst_err *err)
{
    FILE *f = fopen(file, "r");
    char line[PST_AUTH_LINE_MAX + 2];
    int n = 0, rc = 0;

    if (f == NULL) {
        pst_err_add(err, file, 0, "cannot open sender-login map: %s",
                    strerror(errno));
        return -errno;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        n++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            pst_err_add(err, file, n, "line longer than %d octets",
                        PST_AUTH_LINE_MAX);
            rc = -EINVAL;
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
            continue;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (*s == '\0')
            continue;
        char *sp = s + strcspn(s, " \t");
        if (*sp == '\0' || strchr(s, '@') == NULL || strchr(s, '@') > sp) {
            pst_err_add(err, file, n,
                        "expected \"address-or-@domain login[,login...]\"");
            rc = -EINVAL;
            continue;
        }
        *sp++ = '\0';
        char *logins = trim(sp);
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
            pst_err_add(err, file, n, "duplicate sender \"%s\"", s);
            free(norm);
            rc = -EINVAL;
            continue;
        }
        *slot = norm;
    }
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

struct sweep_ctx {
    time_t now;
    unsigned window;
};

static bool
sweep_expired(const void *key, size_t klen, void *val, void *arg)
{
    struct sweep_ctx *x = arg;
    struct fails *f = val;
    if (x->now - f->start >= (time_t)x->window) {
        free(f);
        return true;
    }
    return false;
}

/* fails_get - the live counter for key, or NULL (none or expired). */
static struct fails *
fails_get(struct pst_auth *a, struct pst_strmap *m, const void *key,
          size_t klen, time_t now)
{
    struct fails *f = pst_strmap_get(m, key, klen);
    if (f && now - f->start >= (time_t)a->window) {
        free(pst_strmap_del(m, key, klen));
        return NULL;
    }
    return f;
}

static void
fails_add(struct pst_auth *a, struct pst_strmap *m, const void *key,
          size_t klen, time_t now)
{
    struct fails *f = fails_get(a, m, key, klen, now);
    if (f == NULL) {
        if (pst_strmap_count(m) >= PST_AUTH_TRACK_MAX) {
            struct sweep_ctx x = {now, a->window};
            pst_strmap_sweep(m, sweep_expired, &x);
            if (pst_strmap_count(m) >= PST_AUTH_TRACK_MAX)
                return;
        }
        f = pst_xcalloc(1, sizeof(*f));
        f->start = now;
        *pst_strmap_slot(m, key, klen, NULL) = f;
    }
    f->count++;
}

static size_t
ip_key(const struct pst_ip *ip, unsigned char *b)
{
    size_t n = ip->family == AF_INET ? 4 : 16;
    b[0] = (unsigned char)(ip->family == AF_INET ? 4 : 6);
    memcpy(b + 1, ip->addr, n);
    return n + 1;
}

/* ---- the pool ---- */

static void
job_free(struct job *j)
{
    explicit_bzero(j->password, sizeof(j->password));
    free(j);
}

static void *
worker(void *arg)
{
    struct pst_auth *a = arg;
    struct crypt_data *cd = pst_xcalloc(1, sizeof(*cd));

    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stop && a->q_head == NULL)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->stop)
            break;
        struct job *j = a->q_head;
        a->q_head = j->next;
        if (a->q_head == NULL)
            a->q_tail = NULL;
        a->q_len--;
        pthread_mutex_unlock(&a->mu);

        char *out = crypt_rn(j->password, j->hash, cd, sizeof(*cd));
        size_t hl = strlen(j->hash);
        j->ok = j->known && out != NULL && out[0] != '*' &&
                strlen(out) == hl && CRYPTO_memcmp(out, j->hash, hl) == 0;
        explicit_bzero(j->password, sizeof(j->password));
        explicit_bzero(cd, sizeof(*cd));
        j->next = NULL;

        pthread_mutex_lock(&a->mu);
        a->checks++;
        if (a->done_tail)
            a->done_tail->next = j;
        else
            a->done_head = j;
        a->done_tail = j;
        uv_async_send(&a->async);
    }
    pthread_mutex_unlock(&a->mu);
    free(cd);
    return NULL;
}

static void
on_async(uv_async_t *h)
{
    struct pst_auth *a = h->data;
    pthread_mutex_lock(&a->mu);
    struct job *j = a->done_head;
    a->done_head = a->done_tail = NULL;
    pthread_mutex_unlock(&a->mu);
    time_t now = time(NULL);
    while (j) {
        struct job *next = j->next;
        if (!j->ok) {
            unsigned char b[17];
            fails_add(a, a->ip_fails, b, ip_key(&j->ip, b), now);
            fails_add(a, a->login_fails, j->login, strlen(j->login), now);
        } else {
            free(pst_strmap_del(a->login_fails, j->login, strlen(j->login)));
        }
        if (!a->stop)
            a->done(a->done_arg, j->sid, j->login, j->ok);
        job_free(j);
        j = next;
    }
}

int
pst_auth_check(struct pst_auth *a, uint64_t sid, const struct pst_ip *ip,
               const char *login, const char *password)
{
    time_t now = time(NULL);
    unsigned char b[17];
    struct fails *fi = fails_get(a, a->ip_fails, b, ip_key(ip, b), now);
    struct fails *fl =
        fails_get(a, a->login_fails, login, strlen(login), now);
    if ((fi && fi->count >= a->max_ip) || (fl && fl->count >= a->max_login)) {
        a->refused++;
        return -EPERM;
    }
    if (strlen(login) > PST_AUTH_FIELD_MAX ||
        strlen(password) > PST_AUTH_FIELD_MAX)
        return -EINVAL;
    struct job *j = pst_xcalloc(1, sizeof(*j));
    const char *hash = pst_strmap_gets(a->users, login);
    j->sid = sid;
    j->ip = *ip;
    j->known = hash != NULL;
    snprintf(j->login, sizeof(j->login), "%s", login);
    snprintf(j->password, sizeof(j->password), "%s", password);
    snprintf(j->hash, sizeof(j->hash), "%s", hash ? hash : a->dummy);

    pthread_mutex_lock(&a->mu);
    if (a->q_len >= a->q_max) {
        pthread_mutex_unlock(&a->mu);
        job_free(j);
        return -EAGAIN;
    }
    if (a->q_tail)
        a->q_tail->next = j;
    else
        a->q_head = j;
    a->q_tail = j;
    a->q_len++;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return 0;
}

void
pst_auth_stats(struct pst_auth *a, struct pst_auth_stats *st)
{
    pthread_mutex_lock(&a->mu);
    st->checks = a->checks;
    st->queued = a->q_len;
    pthread_mutex_unlock(&a->mu);
    st->refused = a->refused;
}

static void
free_maps(struct pst_auth *a)
{
    pst_strmap_free(a->users, free);
    pst_strmap_free(a->senders, free);
    pst_strmap_free(a->ip_fails, free);
    pst_strmap_free(a->login_fails, free);
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
    a->ip_fails = pst_strmap_new();
    a->login_fails = pst_strmap_new();
    a->max_ip = c->auth.max_failures_per_ip;
    a->max_login = c->auth.max_failures_per_login;
    a->window = c->auth.failure_window;
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
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    uv_async_init(loop, &a->async, on_async);
    a->async.data = a;
    a->nthreads = c->auth.workers;
    a->q_max = a->nthreads * PST_AUTH_QUEUE_PER_WORKER;
    a->threads = pst_xcalloc(a->nthreads, sizeof(*a->threads));
    for (unsigned i = 0; i < a->nthreads; i++) {
        if (pthread_create(&a->threads[i], NULL, worker, a) != 0) {
            pst_err_add(err, NULL, 0, "cannot start auth worker threads");
            a->nthreads = i;
            pst_auth_close(a);
            *out = NULL;
            return -EAGAIN;
        }
    }
    pst_info("event=auth_ready users=%zu workers=%u sender_map=%s",
             pst_strmap_count(a->users), a->nthreads,
             a->senders ? "yes" : "no");
    *out = a;
    return 0;
}

static void
on_async_closed(uv_handle_t *h)
{
    struct pst_auth *a = h->data;
    struct job *j = a->done_head;
    while (j) {
        struct job *n = j->next;
        job_free(j);
        j = n;
    }
    free_maps(a);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
}

void
pst_auth_close(struct pst_auth *a)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    for (unsigned i = 0; i < a->nthreads; i++)
        pthread_join(a->threads[i], NULL);
    free(a->threads);
    a->threads = NULL;
    struct job *j = a->q_head;
    while (j) {
        struct job *n = j->next;
        job_free(j);
        j = n;
    }
    a->q_head = a->q_tail = NULL;
    uv_close((uv_handle_t *)&a->async, on_async_closed);
}

/* ---- SASL helpers ---- */

static int
b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

ssize_t
pst_b64_decode(const char *in, size_t n, char *out, size_t outsz)
{
    size_t o = 0;
    if (n % 4 != 0)
        return -1;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + k];
            if (c == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad)                /* data after '=' */
                return -1;
            v[k] = b64val(c);
            if (v[k] < 0)
                return -1;
        }
        unsigned long w = ((unsigned long)v[0] << 18) |
                          ((unsigned long)v[1] << 12) |
                          ((unsigned long)v[2] << 6) | (unsigned long)v[3];
        size_t take = 3 - (size_t)pad;
        if (o + take > outsz)
            return -1;
        out[o++] = (char)(w >> 16);
        if (take > 1)
            out[o++] = (char)(w >> 8 & 0xff);
        if (take > 2)
            out[o++] = (char)(w & 0xff);
    }
    return (ssize_t)o;
}

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
