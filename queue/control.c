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
 * (about 300 bytes plus the recipients per message). The text and JSON
 * are written here, from the manager's read-only view of each message
 * (queue/qmgr.h); the manager formats nothing.
 *
 * Limits: PST_CTL_CLIENTS connections at once, PST_CTL_TIMEOUT ms each.
 */
#include "queue/control.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "queue/qmgr.h"

#define PST_CTL_LINE 256
#define PST_CTL_CLIENTS 16
#define PST_CTL_TIMEOUT 10000

struct ctl_client;

struct pst_control {
    uv_loop_t *loop;
    struct pst_qmgr *qm;
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

/* ---- output: JSON and text from the manager's views ---- */

static void
put_json_str(struct pst_tbuf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (s == NULL) {
        pst_tbuf_add(b, "null", 4);
        return;
    }
    pst_tbuf_add(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            char e[2] = {'\\', (char)*c};
            pst_tbuf_add(b, e, 2);
        } else if (*c < 0x20 || *c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[*c >> 4], hex[*c & 15]};
            pst_tbuf_add(b, e, 6);
        } else {
            pst_tbuf_add(b, (const char *)c, 1);   /* UTF-8 passes */
        }
    }
    pst_tbuf_add(b, "\"", 1);
}

static const char *
rcpt_state_name(enum pst_rcpt_state s)
{
    return s == PST_RCPT_DELIVERED ? "delivered"
           : s == PST_RCPT_FAILED  ? "failed"
                                   : "pending";
}

static void
fmt_time(char *buf, size_t n, time_t t)
{
    struct tm tm;
    if (t <= 0 || gmtime_r(&t, &tm) == NULL)
        snprintf(buf, n, "-");
    else
        strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void
view_json(struct pst_tbuf *b, const struct pst_qview *v, bool full)
{
    const struct pst_envelope *env = v->env;
    char at[32], nx[32], ip[PST_IP_STRLEN];

    fmt_time(at, sizeof(at), env->arrival);
    fmt_time(nx, sizeof(nx), v->next_attempt);
    pst_tbuf_printf(b, "{\"id\":\"%s\",\"size\":%" PRIu64 ",\"arrival\":"
                     "\"%s\",\"arrival_time\":%lld,\"state\":\"%s\","
                     "\"attempts\":%u,\"next_attempt\":", v->qid, v->size,
                     at, (long long)env->arrival, v->state, v->attempts);
    if (v->next_attempt)
        pst_tbuf_printf(b, "\"%s\"", nx);
    else
        pst_tbuf_printf(b, "null");
    pst_tbuf_printf(b, ",\"sender\":");
    put_json_str(b, env->sender);
    pst_tbuf_printf(b, ",\"last_error\":");
    put_json_str(b, v->last_error);
    if (full) {
        pst_tbuf_printf(b, ",\"client_ip\":");
        put_json_str(b, env->client_ip.family
                            ? pst_ip_str(&env->client_ip, ip, sizeof(ip))
                            : NULL);
        pst_tbuf_printf(b, ",\"client_name\":");
        put_json_str(b, env->client_name);
        pst_tbuf_printf(b, ",\"helo\":");
        put_json_str(b, env->helo);
        pst_tbuf_printf(b, ",\"protocol\":");
        put_json_str(b, env->proto);
        pst_tbuf_printf(b, ",\"auth\":");
        put_json_str(b, env->auth_login);
        pst_tbuf_printf(b, ",\"envid\":");
        put_json_str(b, env->envid);
        pst_tbuf_printf(b, ",\"ret\":\"%s\",\"body\":\"%s\","
                         "\"smtputf8\":%s",
                         env->ret == PST_RET_FULL   ? "full"
                         : env->ret == PST_RET_HDRS ? "hdrs"
                                                    : "",
                         env->body == PST_BODY_8BITMIME     ? "8bitmime"
                         : env->body == PST_BODY_BINARYMIME ? "binarymime"
                                                            : "7bit",
                         env->smtputf8 ? "true" : "false");
    }
    pst_tbuf_printf(b, ",\"recipients\":[");
    for (size_t i = 0; i < env->nrcpts; i++) {
        const struct pst_rcpt *r = &env->rcpts[i];
        pst_tbuf_printf(b, "%s{\"address\":", i ? "," : "");
        put_json_str(b, r->addr);
        pst_tbuf_printf(b, ",\"state\":\"%s\",\"last_error\":",
                         rcpt_state_name(r->state));
        put_json_str(b, v->rcpt_err ? v->rcpt_err[i] : NULL);
        if (full) {
            pst_tbuf_printf(b, ",\"orcpt\":");
            put_json_str(b, r->orcpt);
            pst_tbuf_printf(b, ",\"notify\":%u", r->notify);
        }
        pst_tbuf_printf(b, "}");
    }
    pst_tbuf_printf(b, "]}");
}

/* Text output: client strings are shown escaped, never raw. */
static void
view_text(struct pst_tbuf *b, const struct pst_qview *v, bool full)
{
    const struct pst_envelope *env = v->env;
    char at[32], nx[32], q[600], ip[PST_IP_STRLEN];

    fmt_time(at, sizeof(at), env->arrival);
    fmt_time(nx, sizeof(nx), v->next_attempt);
    pst_log_quote(q, sizeof(q), env->sender, strlen(env->sender));
    pst_tbuf_printf(b, "%s %8" PRIu64 " %s %-10s %s\n", v->qid, v->size, at,
                     v->state, q);
    if (full) {
        pst_tbuf_printf(b, "  attempts: %u\n", v->attempts);
        if (v->next_attempt)
            pst_tbuf_printf(b, "  next attempt: %s\n", nx);
        if (env->client_ip.family)
            pst_tbuf_printf(b, "  client: %s\n",
                             pst_ip_str(&env->client_ip, ip, sizeof(ip)));
        if (env->helo) {
            pst_log_quote(q, sizeof(q), env->helo, strlen(env->helo));
            pst_tbuf_printf(b, "  helo: %s\n", q);
        }
        if (env->proto)
            pst_tbuf_printf(b, "  protocol: %.32s\n", env->proto);
    }
    if (v->last_error) {
        pst_log_quote(q, sizeof(q), v->last_error, strlen(v->last_error));
        pst_tbuf_printf(b, "  last error: %s\n", q);
    }
    for (size_t i = 0; i < env->nrcpts; i++) {
        const struct pst_rcpt *r = &env->rcpts[i];
        pst_log_quote(q, sizeof(q), r->addr, strlen(r->addr));
        pst_tbuf_printf(b, "  %-9s %s", rcpt_state_name(r->state), q);
        if (v->rcpt_err && v->rcpt_err[i]) {
            pst_log_quote(q, sizeof(q), v->rcpt_err[i],
                          strlen(v->rcpt_err[i]));
            pst_tbuf_printf(b, " (%s)", q);
        }
        pst_tbuf_printf(b, "\n");
    }
}

struct listing {
    struct pst_tbuf *out;
    bool json;
    bool full;
    unsigned n;
};

static void
on_view(void *arg, const struct pst_qview *v)
{
    struct listing *l = arg;
    if (l->json) {
        if (l->n > 0)
            pst_tbuf_printf(l->out, ",");
        view_json(l->out, v, l->full);
        if (l->full)
            pst_tbuf_printf(l->out, "\n");
    } else {
        view_text(l->out, v, l->full);
    }
    l->n++;
}

static void
put_list(struct pst_qmgr *qm, struct pst_tbuf *out, bool json)
{
    struct listing l = {.out = out, .json = json};

    if (json)
        pst_tbuf_printf(out, "{\"messages\":[");
    pst__qmgr_each(qm, on_view, &l);
    if (json)
        pst_tbuf_printf(out, "],\"count\":%u}\n", l.n);
    else if (l.n == 0)
        pst_tbuf_printf(out, "queue is empty\n");
}

static int
put_show(struct pst_qmgr *qm, const char *qid, struct pst_tbuf *out,
         bool json)
{
    struct listing l = {.out = out, .json = json, .full = true};
    return pst__qmgr_view(qm, qid, on_view, &l);
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
    struct pst_qmgr *qm = c->ctl->qm;
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
        put_list(qm, &c->out, json);
        answer(c, 0, NULL, true);
    } else if (pst_strcaseeq(cmd, "SHOW") && argc == 2 + json) {
        if (put_show(qm, argv[1], &c->out, json) != 0) {
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
                 pst__qmgr_flush(qm));
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
        pst__qmgr_op(qm, op, all ? NULL : argv[1], on_op_done, c);
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
    uv_pipe_init(ctl->loop, &c->pipe, 0);
    uv_timer_init(ctl->loop, &c->timer);
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

/* pst__control_start - see control.h. */
int
pst__control_start(struct pst_control **ctlp, uv_loop_t *loop,
                   struct pst_qmgr *qm, const char *path, const char *group,
                   struct pst_err *err)
{
    struct pst_control *ctl = pst_xcalloc(1, sizeof(*ctl));
    struct stat st;
    int rc;

    ctl->loop = loop;
    ctl->qm = qm;
    TAILQ_INIT(&ctl->list);
    ctl->path = pst_xstrdup(path);
    if (group) {
        struct group gr, *g = NULL;
        char buf[4096];
        if (getgrnam_r(group, &gr, buf, sizeof(buf), &g) == 0 &&
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
    uv_pipe_init(loop, &ctl->srv, 0);
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

/* pst__control_close - see control.h. */
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
