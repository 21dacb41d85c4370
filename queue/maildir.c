/*
 * maildir.c - the maildir transport: one file per recipient in DIR/new/,
 * written as Return-Path, Delivered-To, then the stored message text
 * (CRLF line ends kept, as received).
 *
 * Protocol (maildir spec, cr.yp.to/proto/maildir.html): create a unique
 * name in DIR/tmp/, write, fsync, move into DIR/new/ without replacing
 * anything (renameat2 RENAME_NOREPLACE), then fsync DIR/new/ once for all
 * recipients of the attempt. Only then is a recipient reported delivered.
 * Unique names: <sec>.M<usec>P<pid>Q<n>.<host>, n counting deliveries of
 * this process, '/' and ':' in the host name written as \057 and \072.
 *
 * Threads: deliver runs on a delivery worker; the route object (two
 * directory fds and the names) is read-only after route_new, and the
 * delivery counter is atomic. Errors (disk full, permissions) are
 * temporary: the queue retries them with backoff.
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/util.h"
#include "queue/transport.h"

#define MD_COPY_BUF (64u * 1024u)

struct md_route {
    char *dir;
    char host[256];         /* sanitised host name for unique names */
    int tmpfd, newfd;
};

static atomic_uint md_deliveries;

static int
mkdir_p(const char *path)
{
    char *p = pst_xstrdup(path);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            rc = -errno;
            break;
        }
        *s = c;
        if (c == '\0')
            break;
    }
    free(p);
    return rc;
}

static void
route_free(void *route)
{
    struct md_route *m = route;
    if (m == NULL)
        return;
    if (m->tmpfd >= 0)
        close(m->tmpfd);
    if (m->newfd >= 0)
        close(m->newfd);
    free(m->dir);
    free(m);
}

static int
route_new(uv_loop_t *loop, const char *arg, void **route, char *err,
          size_t errlen)
{
    struct md_route *m = pst_xcalloc(1, sizeof(*m));
    char hn[200] = "localhost", *path = NULL;
    int rc;

    (void)loop;
    m->tmpfd = m->newfd = -1;
    if (arg == NULL || arg[0] == '\0') {
        snprintf(err, errlen, "maildir: a directory is required "
                 "(maildir:DIR)");
        rc = -EINVAL;
        goto fail;
    }
    if (arg[0] == '/') {
        m->dir = pst_xstrdup(arg);
    } else {
        char cwd[4096];
        if (getcwd(cwd, sizeof(cwd)) == NULL) {
            rc = -errno;
            snprintf(err, errlen, "maildir: getcwd: %s", strerror(errno));
            goto fail;
        }
        m->dir = pst_xasprintf("%s/%s", cwd, arg);
    }
    static const char *const sub[] = {"tmp", "new", "cur"};
    for (size_t i = 0; i < 3; i++) {
        path = pst_xasprintf("%s/%s", m->dir, sub[i]);
        if ((rc = mkdir_p(path)) != 0) {
            snprintf(err, errlen, "maildir %s: %s", path, strerror(-rc));
            goto fail;
        }
        free(path);
        path = NULL;
    }
    path = pst_xasprintf("%s/tmp", m->dir);
    m->tmpfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(path);
    path = pst_xasprintf("%s/new", m->dir);
    m->newfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (m->tmpfd < 0 || m->newfd < 0) {
        rc = -errno;
        snprintf(err, errlen, "maildir %s: %s", m->dir, strerror(errno));
        goto fail;
    }
    free(path);
    path = NULL;
    gethostname(hn, sizeof(hn) - 1);
    hn[sizeof(hn) - 1] = '\0';
    size_t o = 0;
    for (const char *c = hn; *c && o + 5 < sizeof(m->host); c++) {
        if (*c == '/')
            o += (size_t)snprintf(m->host + o, 5, "\\057");
        else if (*c == ':')
            o += (size_t)snprintf(m->host + o, 5, "\\072");
        else
            m->host[o++] = *c;
    }
    m->host[o] = '\0';
    *route = m;
    return 0;
fail:
    free(path);
    route_free(m);
    return rc;
}

/* Header values come from the envelope: never let CR or LF through.
 * Return-Path takes angle brackets (RFC 5322 3.6.7), Delivered-To the bare
 * address, as local delivery agents write it. */
static size_t
put_field(char *dst, size_t cap, const char *name, const char *v,
          bool brackets)
{
    size_t o = (size_t)snprintf(dst, cap, "%s: %s", name, brackets ? "<" : "");
    for (const char *c = v; *c && o + 4 < cap; c++)
        dst[o++] = (*c == '\r' || *c == '\n') ? '?' : *c;
    if (brackets)
        dst[o++] = '>';
    dst[o++] = '\r';
    dst[o++] = '\n';
    return o;
}

/* Write one copy into tmp/name; 0 or -errno (-EBADMSG: spool damage). */
static int
write_copy(struct md_route *m, struct pst_delivery *d, const char *rcpt,
           const char *name, uint8_t *buf)
{
    int fd, rc;

    fd = openat(m->tmpfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                0600);
    if (fd < 0)
        return -errno;
    size_t n = put_field((char *)buf, 1200, "Return-Path",
                         d->env->sender ? d->env->sender : "", true);
    n += put_field((char *)buf + n, 1200, "Delivered-To", rcpt, false);
    rc = pst_spool_reader_rewind(d->reader);
    while (rc == 0) {
        ssize_t k = pst_spool_reader_read(d->reader, buf + n,
                                          MD_COPY_BUF - n);
        if (k < 0) {
            rc = (int)k;
            break;
        }
        n += (size_t)k;
        if (n > 0 && (k == 0 || n == MD_COPY_BUF)) {
            rc = pst_write_all(fd, buf, n);
            n = 0;
        }
        if (k == 0)
            break;
    }
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0)
        unlinkat(m->tmpfd, name, 0);
    return rc;
}

static void
deliver(void *route, struct pst_delivery *d)
{
    struct md_route *m = route;
    uint8_t *buf = pst_xmalloc(MD_COPY_BUF);
    char name[400];
    bool *moved = pst_xcalloc(d->n ? d->n : 1, sizeof(bool));
    bool any = false;

    for (size_t i = 0; i < d->n; i++) {
        struct pst_rcpt_result *x = &d->res[i];
        const char *rcpt = d->env->rcpts[d->idx[i]].addr;
        struct timeval tv;
        int rc;

        gettimeofday(&tv, NULL);
        snprintf(name, sizeof(name), "%lld.M%06ldP%dQ%u.%s",
                 (long long)tv.tv_sec, (long)tv.tv_usec, (int)getpid(),
                 atomic_fetch_add(&md_deliveries, 1) + 1, m->host);
        rc = write_copy(m, d, rcpt, name, buf);
        if (rc == 0 &&
            renameat2(m->tmpfd, name, m->newfd, name, RENAME_NOREPLACE) != 0) {
            rc = -errno;
            unlinkat(m->tmpfd, name, 0);
        }
        if (rc != 0) {
            x->res = PST_DRES_TEMP;
            snprintf(x->text, sizeof(x->text), "%s maildir %s: %s",
                     rc == -ENOSPC || rc == -EDQUOT ? "4.3.1" : "4.3.0",
                     m->dir, strerror(-rc));
            if (rc == -EBADMSG)
                break;              /* the spool file is damaged */
            continue;
        }
        moved[i] = true;
        any = true;
        x->res = PST_DRES_OK;
        snprintf(x->text, sizeof(x->text), "2.0.0 delivered to maildir "
                 "as new/%.200s", name);
    }
    /* one directory sync makes every copy of this attempt durable */
    if (any && fsync(m->newfd) != 0) {
        int e = errno;
        for (size_t i = 0; i < d->n; i++)
            if (moved[i]) {
                d->res[i].res = PST_DRES_TEMP;
                snprintf(d->res[i].text, sizeof(d->res[i].text),
                         "4.3.0 maildir %s: fsync new/: %s", m->dir,
                         strerror(e));
            }
    }
    for (size_t i = 0; i < d->n; i++)
        if (!moved[i] && d->res[i].text[0] == '\0') {
            d->res[i].res = PST_DRES_TEMP;
            snprintf(d->res[i].text, sizeof(d->res[i].text),
                     "4.3.0 maildir %s: not attempted (queue file damaged)",
                     m->dir);
        }
    free(moved);
    free(buf);
}

const struct pst_transport pst_transport_maildir = {
    .name = "maildir",
    .blocking = true,
    .route_new = route_new,
    .route_free = route_free,
    .deliver = deliver,
};
