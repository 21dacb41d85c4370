/*
 * metrics_http.c - the metrics endpoint on libmicrohttpd (metrics_http.h).
 *
 * The listening socket is made here (so a bind error names the address
 * and the reason) and handed to libmicrohttpd, which runs one internal
 * polling thread: every request is answered on that thread from the
 * registry and the published health state, never touching loop-owned
 * objects.
 */
#include "gateway/metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/net.h"
#include "core/tbuf.h"
#include "core/util.h"

struct pst_mhttp {
    struct MHD_Daemon *d;
    char *address;
    unsigned port;
    char *spool_dir;
    _Atomic bool draining;
    _Atomic uint64_t heartbeat_us;  /* monotonic, the loop's last tick */
    _Atomic uint64_t disk_free_min;
};

static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char text[512];
    char q[600];
    vsnprintf(text, sizeof(text), fmt, ap);
    size_t n = strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        n--;
    pst_warn("event=metrics_http_error error=%s",
             pst_log_quote(q, sizeof(q), text, n));
}

static bool
loop_alive(struct pst_mhttp *h)
{
    uint64_t beat = atomic_load(&h->heartbeat_us);
    return pst_monotonic_us() - beat < (uint64_t)PST_HEALTH_STALL_MS * 1000;
}

/* The failed readiness checks, one per line; empty when ready. */
static void
readiness(struct pst_mhttp *h, struct pst_tbuf *out)
{
    struct statvfs vs;
    if (atomic_load(&h->draining))
        pst_tbuf_puts(out, "draining\n");
    if (!loop_alive(h))
        pst_tbuf_puts(out, "event loop stalled\n");
    if (access(h->spool_dir, W_OK) != 0)
        pst_tbuf_printf(out, "spool not writable: %s\n", strerror(errno));
    if (statvfs(h->spool_dir, &vs) != 0) {
        pst_tbuf_printf(out, "spool file system: %s\n", strerror(errno));
    } else {
        uint64_t avail = (uint64_t)vs.f_bavail * vs.f_frsize;
        uint64_t floor = atomic_load(&h->disk_free_min);
        if (avail < floor)
            pst_tbuf_printf(out,
                            "spool disk below the floor: %llu bytes free, "
                            "limits.disk_free_min %llu\n",
                            (unsigned long long)avail,
                            (unsigned long long)floor);
    }
}

static enum MHD_Result
answer(struct MHD_Connection *c, unsigned status, const char *ctype,
       struct pst_tbuf *body)
{
    /* MHD takes the buffer and frees it with free() */
    char *p = body->p ? body->p : pst_xstrdup("");
    size_t n = body->len;
    body->p = NULL;
    body->len = body->cap = 0;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(n, p, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(p);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url,
           const char *method, const char *version, const char *upload,
           size_t *upload_size, void **state)
{
    static const char text[] = "text/plain; charset=utf-8";
    struct pst_mhttp *h = cls;
    struct pst_tbuf b;

    pst_tbuf_init(&b);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        pst_tbuf_puts(&b, "method not allowed\n");
        return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, text, &b);
    }
    if (strcmp(url, "/metrics") == 0) {
        pst_metrics_render(&b);
        return answer(c, MHD_HTTP_OK, "text/plain; version=0.0.4; "
                      "charset=utf-8", &b);
    }
    if (strcmp(url, "/healthz") == 0) {
        bool ok = loop_alive(h);
        pst_tbuf_puts(&b, ok ? "ok\n" : "event loop stalled\n");
        return answer(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                      text, &b);
    }
    if (strcmp(url, "/readyz") == 0) {
        readiness(h, &b);
        bool ok = b.len == 0;
        if (ok)
            pst_tbuf_puts(&b, "ready\n");
        return answer(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                      text, &b);
    }
    pst_tbuf_puts(&b, "not found\n");
    return answer(c, MHD_HTTP_NOT_FOUND, text, &b);
}

static int
listen_socket(const struct pst_metrics_conf *mc, bool *v6,
              struct pst_err *err)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int one = 1;

    memset(&ss, 0, sizeof(ss));
    *v6 = strchr(mc->address, ':') != NULL;
    if (*v6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)mc->port);
        inet_pton(AF_INET6, mc->address, &s6->sin6_addr);
        sl = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)mc->port);
        inet_pton(AF_INET, mc->address, &s4->sin_addr);
        sl = sizeof(*s4);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (*v6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 64) < 0)
        goto fail;
    return fd;
fail:
    pst_err_add(err, NULL, 0, "metrics: listen on %s port %u: %s",
                mc->address, mc->port, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

int
pst_mhttp_start(struct pst_mhttp **out, const struct pst_metrics_conf *mc,
                const char *spool_dir, uint64_t disk_free_min,
                struct pst_err *err)
{
    bool v6;
    int fd = listen_socket(mc, &v6, err);
    if (fd < 0)
        return -1;
    struct pst_mhttp *h = pst_xcalloc(1, sizeof(*h));
    h->address = pst_xstrdup(mc->address);
    h->port = mc->port;
    h->spool_dir = pst_xstrdup(spool_dir);
    atomic_store(&h->heartbeat_us, pst_monotonic_us());
    atomic_store(&h->disk_free_min, disk_free_min);
    /* ITC: MHD_stop_daemon wakes the server's thread through its own
     * channel, not by shutting the listening socket down under it */
    h->d = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG |
            (v6 ? MHD_USE_IPv6 : 0),
        0, NULL, NULL, on_request, h,
        /* the logger first, or MHD says so on its own stderr */
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)PST_MHTTP_CONNS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)PST_MHTTP_TIMEOUT,
        MHD_OPTION_END);
    if (h->d == NULL) {
        pst_err_add(err, NULL, 0, "metrics: cannot start the HTTP server on "
                    "%s port %u", mc->address, mc->port);
        close(fd);
        free(h->address);
        free(h->spool_dir);
        free(h);
        return -1;
    }
    *out = h;
    return 0;
}

void
pst_mhttp_stop(struct pst_mhttp *h)
{
    if (h == NULL)
        return;
    MHD_stop_daemon(h->d);          /* joins the thread, closes the socket */
    free(h->address);
    free(h->spool_dir);
    free(h);
}

void
pst_mhttp_tick(struct pst_mhttp *h)
{
    if (h)
        atomic_store(&h->heartbeat_us, pst_monotonic_us());
}

void
pst_mhttp_set_draining(struct pst_mhttp *h, bool draining)
{
    if (h)
        atomic_store(&h->draining, draining);
}

void
pst_mhttp_set_floor(struct pst_mhttp *h, uint64_t disk_free_min)
{
    if (h)
        atomic_store(&h->disk_free_min, disk_free_min);
}

bool
pst_mhttp_same(const struct pst_mhttp *h, const struct pst_metrics_conf *mc)
{
    return h != NULL && mc->enabled && h->port == mc->port &&
           strcmp(h->address, mc->address) == 0;
}
