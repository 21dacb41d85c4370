/*
 * control.c - the queue control socket: a unix stream socket of the
 * running gateway that `postern queue` talks to.
 *
 * Access: the peer's credentials (SO_PEERCRED, and SO_PEERGROUPS for its
 * supplementary groups) must be root, the gateway's own user, or a member
 * of queue.control_group. The socket file is 0660 with that group, in the
 * spool directory (0710 with the group then, 0700 otherwise).
 *
 * Protocol: one request line per connection (at most 256 bytes, LF or
 * CRLF ended), then the server answers and closes:
 *     LIST [JSON] | SHOW <id> [JSON] | FLUSH | DELETE <id>|ALL |
 *     HOLD <id> | RELEASE <id>
 * The answer's first line is "OK" or "ERR <text>"; the body follows
 * (JSON documents end with a newline). The body is bounded by the queue
 * (about 300 bytes plus the recipients per message).
 *
 * Limits: PST_CTL_CLIENTS connections at once, PST_CTL_TIMEOUT ms each.
 */
#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "queue/spool_int.h"

#define PST_CTL_LINE 256
#define PST_CTL_CLIENTS 16
#define PST_CTL_TIMEOUT 10000

struct ctl_client;

struct pst_control {
    struct pst_spool *sp;
    uv_pipe_t srv;
    char *path;
    gid_t gid;
    bool have_gid;
    unsigned clients;
    TAILQ_HEAD(, ctl_client) list;
    bool closing;
    bool srv_closed;
};

struct ctl_client {
    TAILQ_ENTRY(ctl_client) link;
    struct pst_control *ctl;
    uv_pipe_t pipe;
    uv_timer_t timer;
    uv_write_t wr;
    char line[PST_CTL_LINE + 1];
    size_t len;
    struct pst_tbuf out;
    unsigned open_handles;
    bool op_pending;
    bool closing;
    bool answered;
    int refuse;                 /* answer this error to the request */
    const char *refuse_text;
};

/* ---- text helpers (also used by qmgr.c) ---- */

void
pst__put_json_str(struct pst_tbuf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (s == NULL) {
        pst_tbuf_add(b, "null", 4);
        return;
    }
    pst__put_u8(b, '"');
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            pst__put_u8(b, '\\');
            pst__put_u8(b, *c);
        } else if (*c < 0x20 || *c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[*c >> 4], hex[*c & 15]};
            pst_tbuf_add(b, e, 6);
        } else {
            pst__put_u8(b, *c);    /* UTF-8 passes through */
        }
    }
    pst__put_u8(b, '"');
}

/* ---- connection lifetime ---- */

static void
ctl_maybe_free(struct pst_control *ctl)
{
    if (ctl->closing && ctl->srv_closed && ctl->clients == 0) {
        free(ctl->path);
        free(ctl);
    }
}

static void
client_maybe_free(struct ctl_client *c)
{
    if (c->open_handles || c->op_pending)
        return;
    struct pst_control *ctl = c->ctl;
    TAILQ_REMOVE(&ctl->list, c, link);
    pst_tbuf_free(&c->out);
    free(c);
    ctl->clients--;
    ctl_maybe_free(ctl);
}

static void
on_client_handle_closed(uv_handle_t *h)
{
    struct ctl_client *c = h->data;
    c->open_handles--;
    client_maybe_free(c);
}

static void
client_close(struct ctl_client *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->pipe, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_client_handle_closed);
}

static void
on_written(uv_write_t *w, int status)
{
    client_close(w->data);
}

static void
answer(struct ctl_client *c, int status, const char *text, bool body)
{
    struct pst_tbuf head = {0};

    if (c->closing || c->answered)
        return;
    c->answered = true;
    if (status == 0)
        pst_tbuf_printf(&head, "OK%s%s\n", text ? " " : "",
                         text ? text : "");
    else
        pst_tbuf_printf(&head, "ERR %s\n", text ? text : strerror(-status));
    if (body && c->out.len)
        pst_tbuf_add(&head, c->out.p, c->out.len);
    pst_tbuf_free(&c->out);
    c->out = head;
    uv_buf_t b = uv_buf_init((char *)c->out.p, (unsigned)c->out.len);
    c->wr.data = c;
    uv_read_stop((uv_stream_t *)&c->pipe);
    if (uv_write(&c->wr, (uv_stream_t *)&c->pipe, &b, 1, on_written) != 0)
        client_close(c);
}

static void
on_op_done(void *arg, int status, const char *text)
{
    struct ctl_client *c = arg;
    c->op_pending = false;
    if (!c->closing)
        answer(c, status, text, false);
    client_maybe_free(c);
}

/* ---- commands ---- */

static void
run_command(struct ctl_client *c, char *line)
{
    struct pst_spool *sp = c->ctl->sp;
    char *argv[4];
    int argc = 0;

    for (char *t = strtok(line, " \t"); t && argc < 4; t = strtok(NULL, " \t"))
        argv[argc++] = t;
    if (argc == 0) {
        answer(c, -EINVAL, "empty command", false);
        return;
    }
    const char *cmd = argv[0];
    bool json = argc >= 2 && pst_strcaseeq(argv[argc - 1], "JSON");
    pst_info("event=control command=%.16s", cmd);
    if (pst_strcaseeq(cmd, "LIST") && argc == 1 + json) {
        pst__qmgr_list(sp->qm, &c->out, json);
        answer(c, 0, NULL, true);
    } else if (pst_strcaseeq(cmd, "SHOW") && argc == 2 + json) {
        if (pst__qmgr_show(sp->qm, argv[1], &c->out, json) != 0) {
            char t[80];
            snprintf(t, sizeof(t), "%.20s: no such message in the queue",
                     argv[1]);
            answer(c, -ENOENT, t, false);
        } else {
            answer(c, 0, NULL, true);
        }
    } else if (pst_strcaseeq(cmd, "FLUSH") && argc == 1) {
        char t[64];
        snprintf(t, sizeof(t), "flushed %u deferred message(s)",
                 pst__qmgr_flush(sp->qm));
        answer(c, 0, t, false);
    } else if ((pst_strcaseeq(cmd, "DELETE") || pst_strcaseeq(cmd, "HOLD") ||
                pst_strcaseeq(cmd, "RELEASE")) && argc == 2) {
        enum pst_qop op = pst_strcaseeq(cmd, "DELETE") ? PST_QOP_DELETE
                          : pst_strcaseeq(cmd, "HOLD") ? PST_QOP_HOLD
                                                       : PST_QOP_RELEASE;
        bool all = pst_strcaseeq(argv[1], "ALL");
        if (!all && !pst__qid_valid(argv[1])) {
            char up[PST_QID_LEN + 1];
            size_t n = strlen(argv[1]);
            bool ok = n == PST_QID_LEN;
            for (size_t i = 0; ok && i < n; i++)
                up[i] = (char)(argv[1][i] >= 'a' && argv[1][i] <= 'f'
                                   ? argv[1][i] - 32 : argv[1][i]);
            if (ok) {
                up[n] = '\0';
                ok = pst__qid_valid(up);
            }
            if (!ok) {
                answer(c, -EINVAL, "bad queue ID (16 hex digits)", false);
                return;
            }
        }
        c->op_pending = true;
        pst__qmgr_op(sp->qm, op, all ? NULL : argv[1], on_op_done, c);
    } else {
        answer(c, -EINVAL, "unknown command (LIST [JSON], SHOW ID [JSON], "
               "FLUSH, DELETE ID|ALL, HOLD ID, RELEASE ID)", false);
    }
}

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct ctl_client *c = h->data;
    size_t room = PST_CTL_LINE - c->len;
    *buf = uv_buf_init(c->line + c->len, (unsigned)(room ? room : 1));
}

static void
on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct ctl_client *c = s->data;

    if (n < 0) {
        client_close(c);
        return;
    }
    if (n == 0 || c->answered)
        return;
    c->len += (size_t)n;
    char *nl = memchr(c->line, '\n', c->len);
    if (nl == NULL) {
        if (c->len >= PST_CTL_LINE)
            answer(c, -E2BIG, "request line too long", false);
        return;
    }
    *nl = '\0';
    if (nl > c->line && nl[-1] == '\r')
        nl[-1] = '\0';
    uv_read_stop(s);
    /* a refused peer's request is read first: closing with it unread
     * would reset the connection and lose the answer */
    if (c->refuse)
        answer(c, c->refuse, c->refuse_text, false);
    else
        run_command(c, c->line);
}

static void
on_timeout(uv_timer_t *t)
{
    struct ctl_client *c = t->data;
    if (!c->op_pending)
        client_close(c);
}

/* Root, the gateway's own user, or a member of the control group. */
static bool
peer_allowed(struct pst_control *ctl, int fd, struct ucred *cr)
{
    socklen_t len = sizeof(*cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cr, &len) != 0)
        return false;
    if (cr->uid == 0 || cr->uid == geteuid())
        return true;
    if (!ctl->have_gid)
        return false;
    if (cr->gid == ctl->gid)
        return true;
    gid_t groups[256];
    len = sizeof(groups);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0)
        for (size_t i = 0; i < len / sizeof(gid_t); i++)
            if (groups[i] == ctl->gid)
                return true;
    return false;
}

static void
on_connection(uv_stream_t *srv, int status)
{
    struct pst_control *ctl = srv->data;
    struct ctl_client *c;
    uv_os_fd_t fd;
    struct ucred cr = {0};

    if (status != 0 || ctl->closing)
        return;
    c = pst_xcalloc(1, sizeof(*c));
    c->ctl = ctl;
    ctl->clients++;
    TAILQ_INSERT_TAIL(&ctl->list, c, link);
    uv_pipe_init(ctl->sp->loop, &c->pipe, 0);
    uv_timer_init(ctl->sp->loop, &c->timer);
    c->pipe.data = c->timer.data = c;
    c->open_handles = 2;
    if (uv_accept(srv, (uv_stream_t *)&c->pipe) != 0) {
        client_close(c);
        return;
    }
    if (ctl->clients > PST_CTL_CLIENTS) {
        c->refuse = -EBUSY;
        c->refuse_text = "too many control connections";
    } else if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0 ||
               !peer_allowed(ctl, fd, &cr)) {
        pst_warn("event=control_denied uid=%u gid=%u pid=%d",
                 (unsigned)cr.uid, (unsigned)cr.gid, (int)cr.pid);
        c->refuse = -EACCES;
        c->refuse_text = "permission denied";
    }
    uv_timer_start(&c->timer, on_timeout, PST_CTL_TIMEOUT, 0);
    uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

static void on_srv_closed(uv_handle_t *h);

int
pst__control_start(struct pst_control **ctlp, struct pst_spool *sp,
                   struct pst_err *err)
{
    struct pst_control *ctl = pst_xcalloc(1, sizeof(*ctl));
    struct stat st;
    int rc;

    ctl->sp = sp;
    TAILQ_INIT(&ctl->list);
    ctl->path = pst_xstrdup(sp->o.control_socket);
    if (sp->o.control_group) {
        struct group gr, *g = NULL;
        char buf[4096];
        if (getgrnam_r(sp->o.control_group, &gr, buf, sizeof(buf), &g) == 0 &&
            g != NULL) {
            ctl->gid = g->gr_gid;
            ctl->have_gid = true;
        }
    }
    /* a stale socket from a previous run (the spool lock says we are the
     * only gateway here); never remove anything that is not a socket */
    if (lstat(ctl->path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            pst_err_add(err, NULL, 0, "queue.control_socket %s exists and "
                        "is not a socket", ctl->path);
            rc = -EEXIST;
            goto fail;
        }
        unlink(ctl->path);
    }
    uv_pipe_init(sp->loop, &ctl->srv, 0);
    ctl->srv.data = ctl;
    mode_t old = umask(0117);
    rc = uv_pipe_bind(&ctl->srv, ctl->path);
    umask(old);
    if (rc == 0 && ctl->have_gid)
        if (chown(ctl->path, (uid_t)-1, ctl->gid) != 0 ||
            chmod(ctl->path, 0660) != 0)
            pst_warn("event=control_chown path=%s error=\"%s\"", ctl->path,
                     strerror(errno));
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&ctl->srv, 16, on_connection);
    if (rc != 0) {
        pst_err_add(err, NULL, 0, "queue.control_socket %s: %s", ctl->path,
                    uv_strerror(rc));
        ctl->closing = true;
        uv_close((uv_handle_t *)&ctl->srv, on_srv_closed);
        return rc;
    }
    pst_info("event=control_listening path=%s", ctl->path);
    *ctlp = ctl;
    return 0;
fail:
    free(ctl->path);
    free(ctl);
    return rc;
}

static void
on_srv_closed(uv_handle_t *h)
{
    struct pst_control *ctl = h->data;
    ctl->srv_closed = true;
    ctl_maybe_free(ctl);
}

void
pst__control_close(struct pst_control *ctl)
{
    struct ctl_client *c;

    ctl->closing = true;
    unlink(ctl->path);
    uv_close((uv_handle_t *)&ctl->srv, on_srv_closed);
    TAILQ_FOREACH(c, &ctl->list, link)
        client_close(c);
}
