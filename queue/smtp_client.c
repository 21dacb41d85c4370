/*
 * smtp_client.c - the outbound SMTP/LMTP protocol engine (see
 * smtp_client.h for the contract).
 *
 * One connection is one state machine driven by replies. Input bytes go
 * through OpenSSL memory BIOs once STARTTLS succeeded (the bytes that
 * arrived before the handshake are discarded: nothing a man in the middle
 * injected in plaintext is read as a reply). Output is gathered in one
 * buffer and written with one write per flush (uv_try_write, a uv_write for
 * what the kernel does not take at once): a pipelined MAIL, RCPT... DATA
 * group is one write, and the body goes out in pieces of at least
 * PST_SMTPC_CHUNK, the last with the final dot (TCP_NODELAY is set: no
 * Nagle stall on it).
 *
 * Body transform (on output): for a hop without 8BITMIME, the
 * quoted-printable downgrade of queue/mime8.c, then the text cut into
 * lines by queue/wire.c (every line end CRLF, lines over 998 octets
 * folded, a header line continuing with a space) and dot-stuffed. The
 * downgrade consumes core/mime.c's model of the text being sent: before
 * the first MAIL of such a message the text is read once through the
 * parser (S_MODEL, with the gateway's MIME limits), so the parts that
 * change are the parts the filters saw; the model serves every
 * transaction of the message and goes with it.
 *
 * Replies: each step takes one positive reply (220 greeting and
 * STARTTLS, 250 EHLO/HELO/LHLO, 235 or 334 AUTH, 2xx MAIL, RCPT, RSET and
 * the end of data, 354 DATA); 4xx defers (TEMP) and 5xx fails (PERM) the
 * recipients it concerns; any other code is a protocol error: every
 * recipient still open is deferred and the connection is not used again
 * (a 250 to DATA is no delivery: no text was sent). So is a reply that
 * arrived before the command it would answer was written (a hop that
 * answers twice is out of step). 452 to a RCPT moves that recipient to
 * the next transaction on the same connection (once; a 452 to the first
 * RCPT of a transaction defers); 421 or a lost connection defers
 * everything still open. Texts name the hop and the command:
 * "mx[1.2.3.4] said: 550 5.1.1 ... (in reply to RCPT TO)".
 *
 * TLS sessions: a connection offers the session o->sessions holds for
 * its server (key: "name[address]:port sni-name") and stores each one the
 * server gives (OpenSSL's new-session callback, which for TLS 1.3 runs
 * when a ticket arrives after the handshake); a session that fails to
 * resume, or whose certificate then fails the verify policy, is dropped.
 * After pst_smtpc_close nothing is stored: the cache may go first.
 *
 * Limits: a reply line is cut at PST_SMTPC_LINE octets (the rest ignored);
 * a reply longer than reply_lines_max lines is a protocol error.
 */
#include "queue/smtp_client.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "core/codec.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/net.h"
#include "core/tbuf.h"
#include "core/util.h"
#include "queue/mime8.h"
#include "queue/tls_sessions.h"
#include "queue/wire.h"

#define PST_SMTPC_LINE 2048
#define PST_SMTPC_CHUNK (64u * 1024u)
#define PST_SMTPC_INMAX (64u * 1024u)   /* unparsed input held */

enum cstate {
    S_CONNECT, S_GREETING, S_EHLO, S_HELO, S_STARTTLS, S_HANDSHAKE,
    S_AUTH_PLAIN, S_AUTH_LOGIN_USER, S_AUTH_LOGIN_PASS, S_AUTH_DONE,
    S_READY, S_MODEL, S_TXN, S_BODY, S_DOT, S_RSET, S_QUIT, S_DEAD,
};

/* A command whose reply is still to come. */
enum ckind { K_MAIL, K_RCPT, K_DATA };

struct pending {
    enum ckind kind;
    size_t ri;                      /* K_RCPT: index into m->rcpts */
};

struct wreq {
    uv_write_t req;
    struct pst_smtpc *c;
    char *data;
};

struct pst_smtpc {
    uv_loop_t *loop;
    const struct pst_smtpc_opts *o;  /* = &ov */
    struct pst_smtpc_opts ov;       /* a copy: the caller's may go first
                                       (a QUIT still in flight) */
    char tls_name[256];
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
        uv_stream_t stream;
        uv_handle_t handle;
    } h;
    bool is_tcp;
    uv_connect_t creq;
    uv_timer_t timer;
    unsigned open_handles;
    enum cstate st;
    int connect_err;                /* uv_*_connect failed at once */
    bool broken;                    /* no more commands on this conn */
    char peer[300];                 /* "name[ip]" */

    pst_smtpc_open_cb open_cb;
    void *open_arg;
    pst_smtpc_sent_cb sent_cb;
    void *sent_arg;
    pst_smtpc_gone_cb gone_cb;
    void *gone_arg;

    /* capabilities */
    bool ehlo, pipelining, eightbit, smtputf8, dsn, starttls, auth_plain,
        auth_login;
    uint64_t size_max;

    /* TLS */
    SSL *ssl;
    BIO *rbio, *wbio;
    bool tls_on;
    bool tls_resumed;
    bool tls_failed;                /* a TLS error: its session is dropped */
    unsigned port;                  /* TCP: the server's */
    char skey[600];                 /* peer, port, tls_name: its sessions */

    /* input */
    char in[PST_SMTPC_INMAX];
    size_t inlen;
    char line[PST_SMTPC_LINE];
    uint64_t rx;                    /* reply octets received in all */
    uint64_t rx_mark;               /* rx when the last command was written:
                                       its reply cannot start before */
    int rcode;                      /* code of the reply being read */
    unsigned rlines;
    char rtext[PST_SMTPC_TEXT];     /* first line of the reply */

    /* output */
    struct pst_tbuf out;
    unsigned writes;                /* uv_write requests in flight */

    /* the step's deadline (loop ms, 0: none) and the moment the timer is
     * armed for (0: not armed for on_timeout): set_timer */
    uint64_t due, timer_due;

    /* message */
    struct pst_smtpc_msg *m;
    size_t *batch;                  /* rcpt indexes of this transaction */
    size_t nbatch;
    bool *retry;                    /* 452: next transaction */
    struct pending *pend;
    size_t npend, pend_head;
    size_t accepted;                /* RCPTs accepted in this txn */
    size_t *acc;                    /* their indexes (LMTP replies) */
    size_t lmtp_next;
    bool mail_failed;
    bool convert8;
    char *rbuf;                     /* body read buffer */
    bool body_eof;
    bool body_reading;
    struct pst_wire wire;           /* stored text -> lines */
    struct pst_mime_limits mime_limits;
    struct pst_mime_parser *mp;     /* S_MODEL: the text being parsed */
    struct pst_msg *model;          /* the message's model (convert8) */
    struct pst_mime8 *mime8;
    unsigned txns;
};

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void c_fail(struct pst_smtpc *c, enum pst_smtpc_res res,
                   const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void next_txn(struct pst_smtpc *c);
static void body_more(struct pst_smtpc *c);
static void tls_forget(struct pst_smtpc *c);

/* ---- small helpers ---- */

static void
set_timer(struct pst_smtpc *c, unsigned secs);

static void
on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct pst_smtpc *c = w->c;
    free(w->data);
    free(w);
    c->writes--;
    if (c->st == S_DEAD)
        return;
    if (status < 0) {
        c_fail(c, PST_SMTPC_TEMP, "lost connection with %s while sending: %s",
               c->peer, uv_strerror(status));
        return;
    }
    if (c->st == S_BODY && c->writes == 0 && !c->body_reading)
        body_more(c);
}

static void
raw_write(struct pst_smtpc *c, char *data, size_t len)
{
    struct wreq *w = pst_xmalloc(sizeof(*w));
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    w->c = c;
    w->data = data;
    c->writes++;
    int rc = uv_write(&w->req, &c->h.stream, &b, 1, on_write);
    if (rc < 0) {
        c->writes--;
        free(data);
        free(w);
        c_fail(c, PST_SMTPC_TEMP, "write to %s failed: %s", c->peer,
               uv_strerror(rc));
    }
}

/* flush_wbio - what OpenSSL produced, onto the socket. */
static void
flush_wbio(struct pst_smtpc *c)
{
    size_t pend;
    while ((pend = BIO_ctrl_pending(c->wbio)) > 0) {
        char *d = pst_xmalloc(pend);
        int n = BIO_read(c->wbio, d, (int)pend);
        if (n <= 0) {
            free(d);
            return;
        }
        raw_write(c, d, (size_t)n);
    }
}

static void
flush(struct pst_smtpc *c)
{
    if (c->out.len == 0 || c->st == S_DEAD)
        return;
    /* whatever was received so far cannot answer what is written now */
    c->rx_mark = c->rx;
    if (c->tls_on) {
        size_t off = 0;
        while (off < c->out.len) {
            int n = SSL_write(c->ssl, c->out.p + off,
                              (int)PST_MIN(c->out.len - off, 1u << 30));
            if (n <= 0) {
                c->out.len = 0;
                tls_forget(c);
                c_fail(c, PST_SMTPC_TEMP, "TLS write to %s failed",
                       c->peer);
                return;
            }
            off += (size_t)n;
        }
        c->out.len = 0;
        flush_wbio(c);
        return;
    }
    /* what the kernel takes now is written without a request (nothing is
     * queued before it): no copy, no callback, and libuv leaves the
     * socket's epoll registration alone; the rest is queued (on an error,
     * all of it: on_write reports it, never under the caller) */
    size_t off = 0, n = c->out.len;
    c->out.len = 0;
    if (c->writes == 0) {
        uv_buf_t b = uv_buf_init(c->out.p, (unsigned)n);
        int k = uv_try_write(&c->h.stream, &b, 1);
        off = k > 0 ? (size_t)k : 0;
    }
    if (off < n) {
        char *d = pst_xmalloc(n - off);
        memcpy(d, c->out.p + off, n - off);
        raw_write(c, d, n - off);
    }
}

static void
on_timeout(uv_timer_t *t)
{
    struct pst_smtpc *c = t->data;
    c->timer_due = 0;
    if (c->connect_err) {
        c_fail(c, PST_SMTPC_TEMP, "connect to %s failed: %s", c->peer,
               uv_strerror(c->connect_err));
        return;
    }
    uint64_t now = uv_now(c->loop);
    if (c->due == 0)
        return;                     /* no step waits (idle) */
    if (c->due > now) {             /* the deadline moved on: not yet */
        c->timer_due = c->due;
        uv_timer_start(&c->timer, on_timeout, c->due - now, 0);
        return;
    }
    static const char *const what[] = {
        [S_CONNECT] = "connecting", [S_GREETING] = "waiting for the greeting",
        [S_EHLO] = "EHLO", [S_HELO] = "HELO", [S_STARTTLS] = "STARTTLS",
        [S_HANDSHAKE] = "the TLS handshake", [S_AUTH_PLAIN] = "AUTH",
        [S_AUTH_LOGIN_USER] = "AUTH", [S_AUTH_LOGIN_PASS] = "AUTH",
        [S_AUTH_DONE] = "AUTH", [S_READY] = "idle",
        [S_MODEL] = "reading the queue file", [S_TXN] = "MAIL/RCPT/DATA",
        [S_BODY] = "sending the message", [S_DOT] = "end of data",
        [S_RSET] = "RSET", [S_QUIT] = "QUIT", [S_DEAD] = "closing",
    };
    c_fail(c, PST_SMTPC_TEMP, "4.4.2 timeout with %s during %s", c->peer,
           what[c->st]);
}

/* set_timer - the current step has secs from now. The timer is lazy: one
 * armed for an earlier moment is left to fire then, and on_timeout arms it
 * again for the moved deadline, so a step answered in time costs no timer
 * operation. */
static void
set_timer(struct pst_smtpc *c, unsigned secs)
{
    c->due = uv_now(c->loop) + (uint64_t)secs * 1000;
    if (c->timer_due == 0 || c->timer_due > c->due) {
        c->timer_due = c->due;
        uv_timer_start(&c->timer, on_timeout, (uint64_t)secs * 1000, 0);
    }
}

/* no_timer - no step waits: an armed timer does nothing when it fires. */
static void
no_timer(struct pst_smtpc *c)
{
    c->due = 0;
}

static void
on_closed(uv_handle_t *h)
{
    struct pst_smtpc *c = h->data;
    if (--c->open_handles > 0)
        return;
    if (c->ssl) {
        /* SSL_free makes the session of a connection not shut down
         * unresumable; one that ended without a TLS error stays good
         * (SMTP ends with QUIT, rarely with close_notify) */
        if (!c->tls_failed)
            SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN);
        SSL_free(c->ssl);   /* frees the BIOs */
    }
    pst_tbuf_free(&c->out);
    free(c->batch);
    free(c->retry);
    free(c->pend);
    free(c->acc);
    free(c->rbuf);
    pst_mime8_free(c->mime8);
    pst_mime_parser_free(c->mp);
    pst_msg_free(c->model);
    free(c);
}

/* shut - close the socket and timer; the struct goes in on_closed. */
static void
shut(struct pst_smtpc *c)
{
    if (c->st == S_DEAD)
        return;
    c->st = S_DEAD;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_closed);
    uv_close(&c->h.handle, on_closed);
}

static void
rcpt_set(struct pst_smtpc *c, size_t i, enum pst_smtpc_res r,
         const char *text)
{
    struct pst_smtpc_rcpt *x = &c->m->rcpts[i];
    if (x->res != PST_SMTPC_PENDING)
        return;
    x->res = r;
    x->final = c->o->lmtp;
    x->notify_passed = c->dsn && x->rcpt->notify != 0;
    snprintf(x->text, sizeof(x->text), "%s", text);
}

/* finish_msg - every open recipient gets res/text; report the message. */
static void
finish_msg(struct pst_smtpc *c, bool reusable)
{
    pst_smtpc_sent_cb cb = c->sent_cb;
    struct pst_smtpc_msg *m = c->m;

    c->m = NULL;
    c->sent_cb = NULL;
    pst_mime8_free(c->mime8);
    c->mime8 = NULL;
    pst_mime_parser_free(c->mp);
    c->mp = NULL;
    pst_msg_free(c->model);
    c->model = NULL;
    if (m && cb)
        cb(c->sent_arg, c, reusable && !c->broken && c->st != S_DEAD);
}

/*
 * c_fail - the connection is over. Recipients still open get res and the
 * text; an open that had not finished reports failure.
 */
static void
c_fail(struct pst_smtpc *c, enum pst_smtpc_res res, const char *fmt, ...)
{
    char text[PST_SMTPC_TEXT];
    va_list ap;

    if (c->st == S_DEAD)
        return;
    if (res == PST_SMTPC_OK)
        res = PST_SMTPC_TEMP;       /* a failure never delivers */
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    bool opening = c->open_cb != NULL;
    pst_smtpc_open_cb ocb = c->open_cb;
    c->open_cb = NULL;
    c->broken = true;
    shut(c);
    if (opening) {
        ocb(c->open_arg, c, -EPROTO, res == PST_SMTPC_PERM, text);
        return;
    }
    if (c->m != NULL) {
        for (size_t i = 0; i < c->m->n; i++)
            if (c->m->rcpts[i].res == PST_SMTPC_PENDING)
                rcpt_set(c, i, res, text);
        finish_msg(c, false);
        return;
    }
    if (c->gone_cb) {
        pst_smtpc_gone_cb g = c->gone_cb;
        c->gone_cb = NULL;
        g(c->gone_arg, c);
    }
}

/* reply_text - "peer said: <reply> (in reply to X)", for results. */
static void
reply_text(struct pst_smtpc *c, char *dst, size_t n, const char *cmd)
{
    /* a long reply is cut: the text is for logs and reports only */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
    snprintf(dst, n, "%s said: %s (in reply to %s)", c->peer, c->rtext, cmd);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}

/*
 * reply_res - what the reply means at a step whose positive reply is want
 * (an exact code, or 200 for any 2xx): OK, TEMP for 4xx, PERM for 5xx, and
 * PENDING for anything else, a code out of place (a 2xx to DATA, a 3xx
 * where no text is asked for): the caller's protocol error.
 */
static enum pst_smtpc_res
reply_res(int code, int want)
{
    if (want == 200 ? code / 100 == 2 : code == want)
        return PST_SMTPC_OK;
    if (code / 100 == 4)
        return PST_SMTPC_TEMP;
    if (code / 100 == 5)
        return PST_SMTPC_PERM;
    return PST_SMTPC_PENDING;
}

/* proto_error - a reply out of place: the hop and postern disagree on
 * where the dialogue is, so nothing more is sent on this connection and
 * every open recipient is deferred. */
static void
proto_error(struct pst_smtpc *c, const char *cmd)
{
    char t[PST_SMTPC_TEXT];
    reply_text(c, t, sizeof(t), cmd);
    c_fail(c, PST_SMTPC_TEMP, "4.5.0 protocol error: %s", t);
}

/* ---- opening ---- */

static void
send_ehlo(struct pst_smtpc *c)
{
    c->ehlo = c->pipelining = c->eightbit = c->smtputf8 = c->dsn = false;
    c->starttls = c->auth_plain = c->auth_login = false;
    c->size_max = 0;
    pst_tbuf_printf(&c->out, "%s %s\r\n", c->o->lmtp ? "LHLO" : "EHLO", c->o->helo);
    c->st = S_EHLO;
    set_timer(c, c->o->t_helo);
    flush(c);
}

static void
ehlo_keyword(struct pst_smtpc *c, const char *kw)
{
    if (pst_strncaseeq(kw, "PIPELINING", 10) && (kw[10] == 0 || kw[10] == ' '))
        c->pipelining = true;
    else if (pst_strncaseeq(kw, "8BITMIME", 8))
        c->eightbit = true;
    else if (pst_strncaseeq(kw, "SMTPUTF8", 8))
        c->smtputf8 = true;
    else if (pst_strncaseeq(kw, "DSN", 3) && (kw[3] == 0 || kw[3] == ' '))
        c->dsn = true;
    else if (pst_strncaseeq(kw, "STARTTLS", 8))
        c->starttls = true;
    else if (pst_strncaseeq(kw, "SIZE", 4) && (kw[4] == 0 || kw[4] == ' ')) {
        c->size_max = strtoull(kw + 4, NULL, 10);
    } else if (pst_strncaseeq(kw, "AUTH", 4) &&
               (kw[4] == ' ' || kw[4] == '=')) {
        for (const char *p = kw + 5; *p;) {
            while (*p == ' ')
                p++;
            size_t l = strcspn(p, " ");
            if (l == 5 && pst_strncaseeq(p, "PLAIN", 5))
                c->auth_plain = true;
            if (l == 5 && pst_strncaseeq(p, "LOGIN", 5))
                c->auth_login = true;
            p += l;
        }
    }
}

static void
ready(struct pst_smtpc *c)
{
    pst_smtpc_open_cb cb = c->open_cb;
    c->open_cb = NULL;
    c->st = S_READY;
    no_timer(c);
    if (cb)
        cb(c->open_arg, c, 0, false, NULL);
}

static void
start_auth(struct pst_smtpc *c)
{
    const struct pst_smtpc_opts *o = c->o;
    char raw[600], enc[PST_B64_ENC_OUT(sizeof(raw)) + 1];

    if (!c->tls_on && !o->auth_plaintext) {
        c_fail(c, PST_SMTPC_TEMP, "4.7.0 not sending AUTH to %s: the "
               "connection is not encrypted", c->peer);
        return;
    }
    size_t ul = strlen(o->auth_user), pl = strlen(o->auth_password);
    if (ul + pl + 2 > sizeof(raw)) {
        c_fail(c, PST_SMTPC_TEMP, "4.7.0 AUTH credentials too long");
        return;
    }
    if (c->auth_plain) {
        raw[0] = '\0';
        memcpy(raw + 1, o->auth_user, ul);
        raw[1 + ul] = '\0';
        memcpy(raw + 2 + ul, o->auth_password, pl);
        pst_b64_encode(raw, ul + pl + 2, enc);
        pst_tbuf_printf(&c->out, "AUTH PLAIN %s\r\n", enc);
        c->st = S_AUTH_PLAIN;
    } else if (c->auth_login) {
        pst_tbuf_printf(&c->out, "AUTH LOGIN\r\n");
        c->st = S_AUTH_LOGIN_USER;
    } else {
        c_fail(c, PST_SMTPC_TEMP, "4.7.0 %s offers no AUTH PLAIN or LOGIN",
               c->peer);
        return;
    }
    set_timer(c, c->o->t_helo);
    flush(c);
}

static void
after_ehlo(struct pst_smtpc *c)
{
    const struct pst_smtpc_opts *o = c->o;

    if (!c->tls_on && o->tls != PST_DTLS_NONE && o->ssl_ctx != NULL) {
        if (c->starttls) {
            pst_tbuf_printf(&c->out, "STARTTLS\r\n");
            c->st = S_STARTTLS;
            set_timer(c, o->t_helo);
            flush(c);
            return;
        }
        if (o->tls >= PST_DTLS_ENCRYPT) {
            c_fail(c, PST_SMTPC_TEMP, "4.7.4 TLS is required but %s does not "
                   "offer STARTTLS", c->peer);
            return;
        }
    }
    if (o->auth_user != NULL) {
        start_auth(c);
        return;
    }
    ready(c);
}

/* tls_count - one handshake done by the delivery client (metrics). */
static void
tls_count(bool resumed)
{
    static struct pst_metric *all, *res;
    if (all == NULL) {
        all = pst_metric_counter("postern_delivery_tls_handshakes_total",
                                 "TLS handshakes done by the delivery "
                                 "client.", NULL);
        res = pst_metric_counter("postern_delivery_tls_resumed_total",
                                 "TLS handshakes of the delivery client "
                                 "that resumed a session.", NULL);
    }
    pst_metric_add(all, 1);
    if (resumed)
        pst_metric_add(res, 1);
}

/* on_new_session - OpenSSL has a session from the server (after the
 * handshake in TLS 1.2, with each ticket in TLS 1.3): keep it for the
 * next connection. 0: OpenSSL keeps no reference for us. */
static int
on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct pst_smtpc *c = SSL_get_app_data(ssl);
    if (c != NULL && c->o->sessions != NULL && c->skey[0])
        pst_tls_sessions_put(c->o->sessions, c->skey, sess);
    return 0;
}

void
pst_smtpc_ssl_ctx_init(SSL_CTX *ctx)
{
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                            SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
}

/* tls_forget - a TLS error: the server's session is not offered again
 * (RFC 5246 7.2.2), the next connection starts a new one. */
static void
tls_forget(struct pst_smtpc *c)
{
    c->tls_failed = true;
    if (c->o->sessions != NULL && c->skey[0])
        pst_tls_sessions_drop(c->o->sessions, c->skey);
}

static bool
tls_verify_ok(struct pst_smtpc *c, char *why, size_t n)
{
    long v = SSL_get_verify_result(c->ssl);
    X509 *cert = SSL_get1_peer_certificate(c->ssl);
    if (cert == NULL) {
        snprintf(why, n, "no certificate");
        return false;
    }
    X509_free(cert);
    if (v != X509_V_OK) {
        snprintf(why, n, "%s", X509_verify_cert_error_string(v));
        return false;
    }
    return true;
}

static void
handshake(struct pst_smtpc *c)
{
    int rc = SSL_do_handshake(c->ssl);
    flush_wbio(c);
    if (rc == 1) {
        char why[200];
        c->tls_on = true;
        c->tls_resumed = SSL_session_reused(c->ssl) == 1;
        tls_count(c->tls_resumed);
        if (c->o->tls == PST_DTLS_VERIFY && !tls_verify_ok(c, why,
                                                            sizeof(why))) {
            tls_forget(c);          /* judged again by a full handshake */
            c_fail(c, PST_SMTPC_TEMP, "4.7.5 certificate of %s not "
                   "trusted: %s", c->peer, why);
            return;
        }
        pst_debug("event=tls_client peer=%s version=%s cipher=%s "
                  "resumed=%s", c->peer, SSL_get_version(c->ssl),
                  SSL_get_cipher_name(c->ssl),
                  c->tls_resumed ? "yes" : "no");
        send_ehlo(c);
        return;
    }
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return;
    char err[160];
    ERR_error_string_n(ERR_get_error(), err, sizeof(err));
    ERR_clear_error();
    tls_forget(c);
    c_fail(c, PST_SMTPC_TEMP, "4.7.5 TLS handshake with %s failed: %s",
           c->peer, err);
}

static void
start_tls(struct pst_smtpc *c)
{
    const struct pst_smtpc_opts *o = c->o;

    c->ssl = SSL_new(o->ssl_ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
    SSL_set_app_data(c->ssl, c);
    if (o->sessions != NULL && c->is_tcp) {
        snprintf(c->skey, sizeof(c->skey), "%s:%u %s", c->peer, c->port,
                 o->tls_name ? o->tls_name : "-");
        SSL_SESSION *sess = pst_tls_sessions_get(o->sessions, c->skey);
        if (sess != NULL) {
            SSL_set_session(c->ssl, sess);
            SSL_SESSION_free(sess);
        }
    }
    if (o->tls_name != NULL) {
        struct pst_ip ip;
        if (pst_ip_parse(&ip, o->tls_name) == 0) {
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl),
                                          o->tls_name);
        } else {
            SSL_set_tlsext_host_name(c->ssl, o->tls_name);
            SSL_set1_host(c->ssl, o->tls_name);
        }
    }
    /* a reply pipelined after the 220 was injected before encryption */
    c->inlen = 0;
    c->st = S_HANDSHAKE;
    set_timer(c, o->t_helo);
    handshake(c);
}

/* ---- transactions ---- */

/*
 * esmtp_value_ok - s can stand as an esmtp-value (RFC 5321 4.1.2: printable
 * ASCII but '='). ENVID and ORCPT are kept as the client gave them, already
 * xtext (RFC 3461 4), and go out as they are; a value that is not one (a
 * damaged queue file) is left out rather than let it break the command.
 */
static bool
esmtp_value_ok(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if ((unsigned char)*s < 33 || (unsigned char)*s > 126 || *s == '=')
            return false;
    return true;
}

static void
push_pending(struct pst_smtpc *c, enum ckind k, size_t ri)
{
    c->pend[c->npend].kind = k;
    c->pend[c->npend].ri = ri;
    c->npend++;
}

static void
write_rcpt(struct pst_smtpc *c, size_t ri)
{
    const struct pst_rcpt *r = c->m->rcpts[ri].rcpt;
    pst_tbuf_printf(&c->out, "RCPT TO:<%s>", r->addr);
    if (c->dsn && r->notify) {
        static const char *const names[] = {"NEVER", "SUCCESS", "FAILURE",
                                            "DELAY"};
        const char *sep = " NOTIFY=";
        for (unsigned b = 0; b < 4; b++)
            if (r->notify & (1u << b)) {
                pst_tbuf_printf(&c->out, "%s%s", sep, names[b]);
                sep = ",";
            }
    }
    if (c->dsn && r->orcpt && esmtp_value_ok(r->orcpt))
        pst_tbuf_printf(&c->out, " ORCPT=%s", r->orcpt);
    pst_tbuf_add(&c->out, "\r\n", 2);
}

/* next_unsent - the next pipelined command to write when not pipelining */
static void
write_cmd(struct pst_smtpc *c, size_t k)
{
    const struct pending *p = &c->pend[k];
    switch (p->kind) {
    case K_MAIL: {
        const struct pst_envelope *e = c->m->env;
        pst_tbuf_printf(&c->out, "MAIL FROM:<%s>", e->sender);
        /* a downgraded body's size is known only once written: no SIZE
         * then, rather than a figure that may be too small (RFC 1870) */
        if (c->size_max && !c->convert8)
            pst_tbuf_printf(&c->out, " SIZE=%" PRIu64, c->m->body.size);
        if (e->body == PST_BODY_8BITMIME && c->eightbit)
            pst_tbuf_printf(&c->out, " BODY=8BITMIME");
        if (e->smtputf8 && c->smtputf8)
            pst_tbuf_printf(&c->out, " SMTPUTF8");
        if (c->dsn && e->ret != PST_RET_UNSET)
            pst_tbuf_printf(&c->out, " RET=%s",
                      e->ret == PST_RET_FULL ? "FULL" : "HDRS");
        if (c->dsn && e->envid && esmtp_value_ok(e->envid))
            pst_tbuf_printf(&c->out, " ENVID=%s", e->envid);
        pst_tbuf_add(&c->out, "\r\n", 2);
        set_timer(c, c->o->t_mail);
        break;
    }
    case K_RCPT:
        write_rcpt(c, p->ri);
        set_timer(c, c->o->t_rcpt);
        break;
    case K_DATA:
        pst_tbuf_printf(&c->out, "DATA\r\n");
        set_timer(c, c->o->t_data);
        break;
    }
}

/* check_msg - refusals decided before MAIL (RFC 6152, 6531, 1870). */
static bool
check_msg(struct pst_smtpc *c)
{
    const struct pst_envelope *e = c->m->env;
    char t[PST_SMTPC_TEXT];

    if (e->smtputf8 && !c->smtputf8) {
        snprintf(t, sizeof(t), "5.6.7 %.120s does not support SMTPUTF8 and the "
                 "message needs it", c->peer);
        goto perm;
    }
    if (c->size_max && c->m->body.size > c->size_max) {
        snprintf(t, sizeof(t), "5.3.4 message size %" PRIu64 " exceeds the "
                 "limit of %.120s (%" PRIu64 ")", c->m->body.size, c->peer,
                 c->size_max);
        goto perm;
    }
    c->convert8 = false;
    if (e->body != PST_BODY_7BIT && !c->eightbit) {
        if (c->o->eight_bit == PST_8BIT_BOUNCE ||
            e->body == PST_BODY_BINARYMIME) {
            snprintf(t, sizeof(t), "5.6.3 %.120s does not support 8BITMIME and "
                     "the message has 8-bit content", c->peer);
            goto perm;
        }
        c->convert8 = true;
    }
    return true;
perm:
    for (size_t i = 0; i < c->m->n; i++)
        rcpt_set(c, i, PST_SMTPC_PERM, t);
    return false;
}

static void
next_txn(struct pst_smtpc *c)
{
    struct pst_smtpc_msg *m = c->m;
    size_t max = c->o->rcpts_per_txn ? c->o->rcpts_per_txn : 100;

    c->nbatch = 0;
    for (size_t i = 0; i < m->n && c->nbatch < max; i++) {
        if (m->rcpts[i].res != PST_SMTPC_PENDING)
            continue;
        c->batch[c->nbatch++] = i;
    }
    if (c->nbatch == 0) {
        c->st = S_READY;
        no_timer(c);
        finish_msg(c, true);
        return;
    }
    if (c->txns++ > 0 && m->body.rewind(m->body.arg) != 0) {
        c_fail(c, PST_SMTPC_TEMP, "4.3.0 cannot reread the queue file");
        return;
    }
    for (size_t k = 0; k < c->nbatch; k++)
        c->retry[c->batch[k]] = false;
    c->npend = c->pend_head = 0;
    c->accepted = 0;
    c->lmtp_next = 0;
    c->mail_failed = false;
    push_pending(c, K_MAIL, 0);
    for (size_t k = 0; k < c->nbatch; k++)
        push_pending(c, K_RCPT, c->batch[k]);
    push_pending(c, K_DATA, 0);
    c->st = S_TXN;
    if (c->pipelining) {
        for (size_t k = 0; k < c->npend; k++)
            write_cmd(c, k);
        set_timer(c, c->o->t_rcpt + c->o->t_data);
    } else {
        write_cmd(c, 0);
    }
    flush(c);
}

/* ---- body output ---- */

/* line_out - a line of the text from queue/wire.c, onto the wire. */
static void
line_out(void *arg, const char *p, size_t n)
{
    struct pst_smtpc *c = arg;
    pst_wire_put_line(&c->out, p, n);
}

/* text_out - text from the downgrade, on to the line writer. */
static void
text_out(void *arg, const void *p, size_t n)
{
    struct pst_smtpc *c = arg;
    pst_wire_bytes(&c->wire, p, n);
}

static void
body_end(struct pst_smtpc *c)
{
    if (c->mime8)
        pst_mime8_end(c->mime8);
    pst_wire_end(&c->wire);
    pst_tbuf_add(&c->out, ".\r\n", 3);
    c->st = S_DOT;
    set_timer(c, c->o->t_final);
    flush(c);
}

/* model_done - the whole text went through the parser: the model is
 * complete; read the text again, to send it. */
static void
model_done(struct pst_smtpc *c)
{
    c->model = pst_mime_finish(c->mp);
    c->mp = NULL;
    if (c->m->body.rewind(c->m->body.arg) != 0) {
        c_fail(c, PST_SMTPC_TEMP, "4.3.0 cannot reread the queue file");
        return;
    }
    c->st = S_READY;
    next_txn(c);
}

/* on_text - a piece of the stored text: to the parser (S_MODEL) or out
 * (S_BODY); 0 is its end. */
static void
on_text(struct pst_smtpc *c, ssize_t n)
{
    c->body_reading = false;
    if (c->st != S_BODY && c->st != S_MODEL)
        return;                     /* connection failed meanwhile */
    if (n < 0) {
        c_fail(c, PST_SMTPC_TEMP, "4.3.0 error reading the queue file: %s",
               strerror((int)-n));
        return;
    }
    if (c->st == S_MODEL) {
        if (n == 0) {
            model_done(c);
            return;
        }
        pst_mime_feed(c->mp, c->rbuf, (size_t)n);
        body_more(c);
        return;
    }
    if (n == 0) {
        body_end(c);
        return;
    }
    if (c->mime8)
        pst_mime8_bytes(c->mime8, c->rbuf, (size_t)n);
    else
        pst_wire_bytes(&c->wire, c->rbuf, (size_t)n);
    set_timer(c, c->o->t_block);
    if (c->out.len >= PST_SMTPC_CHUNK)
        flush(c);                   /* else with the next piece, or the dot */
    if (c->writes == 0 && c->st == S_BODY)
        body_more(c);
}

/* body_more - the next piece of the stored text (on_text). */
static void
body_more(struct pst_smtpc *c)
{
    if (c->rbuf == NULL)
        c->rbuf = pst_xmalloc(PST_SMTPC_CHUNK);
    c->body_reading = true;
    c->m->body.read(c->m->body.arg, c->rbuf, PST_SMTPC_CHUNK, c, on_text);
}

static void
start_body(struct pst_smtpc *c)
{
    c->st = S_BODY;
    pst_wire_init(&c->wire, line_out, c);
    pst_mime8_free(c->mime8);
    c->mime8 = c->model ? pst_mime8_new(c->model, text_out, c) : NULL;
    set_timer(c, c->o->t_block);
    body_more(c);
}

/* start_model - read the text once through core/mime.c, with the
 * gateway's limits: the downgrade changes the parts of that tree and
 * nothing else. */
static void
start_model(struct pst_smtpc *c)
{
    c->st = S_MODEL;
    c->mp = pst_mime_parser_new(&c->mime_limits, NULL, NULL);
    set_timer(c, c->o->t_block);
    body_more(c);
}

/* txn_reply - a reply to MAIL, RCPT or DATA (in order). */
static void
txn_reply(struct pst_smtpc *c)
{
    struct pending *p = &c->pend[c->pend_head++];
    static const char *const cmd[] = {[K_MAIL] = "MAIL FROM",
                                      [K_RCPT] = "RCPT TO", [K_DATA] = "DATA"};
    char t[PST_SMTPC_TEXT];
    enum pst_smtpc_res r = reply_res(c->rcode, p->kind == K_DATA ? 354 : 200);

    if (r == PST_SMTPC_PENDING) {
        proto_error(c, cmd[p->kind]);
        return;
    }
    switch (p->kind) {
    case K_MAIL:
        if (r != PST_SMTPC_OK) {
            c->mail_failed = true;
            reply_text(c, t, sizeof(t), "MAIL FROM");
            for (size_t k = 0; k < c->nbatch; k++)
                rcpt_set(c, c->batch[k], r, t);
        }
        break;
    case K_RCPT:
        if (c->mail_failed)
            break;
        if (r == PST_SMTPC_OK) {
            c->acc[c->accepted++] = p->ri;
        } else if (c->rcode == 452 && c->pend_head > 2 &&
                   !c->retry[p->ri]) {
            /* too many recipients: the next transaction takes it */
            c->retry[p->ri] = true;
        } else {
            reply_text(c, t, sizeof(t), "RCPT TO");
            rcpt_set(c, p->ri, r, t);
        }
        break;
    case K_DATA:
        if (r == PST_SMTPC_OK) {
            if (c->accepted == 0) {
                /* RFC 2920: no recipient, send the end of data only */
                pst_tbuf_add(&c->out, ".\r\n", 3);
                c->st = S_DOT;
                c->lmtp_next = 0;
                set_timer(c, c->o->t_final);
                flush(c);
                return;
            }
            start_body(c);
            return;
        }
        if (!c->mail_failed && c->accepted > 0) {
            reply_text(c, t, sizeof(t), "DATA");
            for (size_t k = 0; k < c->accepted; k++)
                rcpt_set(c, c->acc[k], r, t);
        }
        /* nothing sent: reset the transaction before the next one */
        pst_tbuf_printf(&c->out, "RSET\r\n");
        c->st = S_RSET;
        set_timer(c, c->o->t_helo);
        flush(c);
        return;
    }
    if (!c->pipelining) {
        /* not pipelining: the next command, or stop early */
        if (c->mail_failed) {
            pst_tbuf_printf(&c->out, "RSET\r\n");
            c->st = S_RSET;
            set_timer(c, c->o->t_helo);
            flush(c);
            return;
        }
        if (c->pend[c->pend_head].kind == K_DATA && c->accepted == 0) {
            pst_tbuf_printf(&c->out, "RSET\r\n");
            c->st = S_RSET;
            set_timer(c, c->o->t_helo);
            flush(c);
            return;
        }
        write_cmd(c, c->pend_head);
        flush(c);
    }
}

static void
dot_reply(struct pst_smtpc *c)
{
    char t[PST_SMTPC_TEXT];
    enum pst_smtpc_res r = reply_res(c->rcode, 200);

    if (r == PST_SMTPC_PENDING) {
        proto_error(c, "end of data");
        return;
    }
    reply_text(c, t, sizeof(t), "end of data");
    if (c->o->lmtp) {
        if (c->accepted > 0) {
            rcpt_set(c, c->acc[c->lmtp_next], r, t);
            if (++c->lmtp_next < c->accepted) {
                set_timer(c, c->o->t_final);
                return;
            }
        }
    } else {
        for (size_t k = 0; k < c->accepted; k++)
            rcpt_set(c, c->acc[k], r, t);
    }
    /* a 452'd recipient with no other success: try once more */
    next_txn(c);
}

/* ---- replies ---- */

static void
on_reply(struct pst_smtpc *c)
{
    char t[PST_SMTPC_TEXT];
    enum pst_smtpc_res r;

    if (c->rcode == 421 && c->st != S_QUIT) {
        reply_text(c, t, sizeof(t), "a command");
        c_fail(c, PST_SMTPC_TEMP, "%s", t);
        return;
    }
    switch (c->st) {
    case S_GREETING:
        r = reply_res(c->rcode, 220);
        if (r == PST_SMTPC_PENDING) {
            proto_error(c, "the greeting");
            return;
        }
        if (r != PST_SMTPC_OK) {
            reply_text(c, t, sizeof(t), "the greeting");
            c_fail(c, r, "%s", t);
            return;
        }
        send_ehlo(c);
        break;
    case S_EHLO:
        r = reply_res(c->rcode, 250);
        if (r == PST_SMTPC_OK) {
            c->ehlo = true;
            after_ehlo(c);
        } else if (r == PST_SMTPC_PENDING) {
            proto_error(c, c->o->lmtp ? "LHLO" : "EHLO");
        } else if (r == PST_SMTPC_PERM && !c->o->lmtp && !c->tls_on) {
            pst_tbuf_printf(&c->out, "HELO %s\r\n", c->o->helo);
            c->st = S_HELO;
            set_timer(c, c->o->t_helo);
            flush(c);
        } else {
            reply_text(c, t, sizeof(t), c->o->lmtp ? "LHLO" : "EHLO");
            c_fail(c, r, "%s", t);
        }
        break;
    case S_HELO:
        r = reply_res(c->rcode, 250);
        if (r == PST_SMTPC_PENDING) {
            proto_error(c, "HELO");
            return;
        }
        if (r != PST_SMTPC_OK) {
            reply_text(c, t, sizeof(t), "HELO");
            c_fail(c, r, "%s", t);
            return;
        }
        after_ehlo(c);
        break;
    case S_STARTTLS:
        r = reply_res(c->rcode, 220);
        if (r == PST_SMTPC_PENDING) {
            /* not 220 and not a refusal: was TLS started or not? */
            proto_error(c, "STARTTLS");
            return;
        }
        if (r != PST_SMTPC_OK) {
            if (c->o->tls >= PST_DTLS_ENCRYPT) {
                reply_text(c, t, sizeof(t), "STARTTLS");
                c_fail(c, PST_SMTPC_TEMP, "4.7.4 TLS is required: %s", t);
                return;
            }
            if (c->o->auth_user) {
                start_auth(c);
                return;
            }
            ready(c);
            return;
        }
        start_tls(c);
        break;
    case S_AUTH_PLAIN:
    case S_AUTH_LOGIN_PASS:
        /* a failed AUTH defers: the route's credentials need fixing */
        if (c->rcode != 235) {
            reply_text(c, t, sizeof(t), "AUTH");
            c_fail(c, PST_SMTPC_TEMP, "%s", t);
            return;
        }
        ready(c);
        break;
    case S_AUTH_LOGIN_USER:
    case S_AUTH_DONE: {
        const char *v = c->st == S_AUTH_LOGIN_USER ? c->o->auth_user
                                                   : c->o->auth_password;
        char enc[PST_B64_ENC_OUT(600) + 1]; /* start_auth bounded them */
        if (c->rcode != 334) {
            reply_text(c, t, sizeof(t), "AUTH");
            c_fail(c, PST_SMTPC_TEMP, "%s", t);
            return;
        }
        pst_b64_encode(v, strlen(v), enc);
        pst_tbuf_printf(&c->out, "%s\r\n", enc);
        c->st = c->st == S_AUTH_LOGIN_USER ? S_AUTH_DONE : S_AUTH_LOGIN_PASS;
        flush(c);
        break;
    }
    case S_TXN:
        txn_reply(c);
        break;
    case S_DOT:
        dot_reply(c);
        break;
    case S_RSET:
        /* a RSET not taken leaves the hop's transaction state unknown */
        if (reply_res(c->rcode, 200) != PST_SMTPC_OK) {
            proto_error(c, "RSET");
            return;
        }
        c->st = S_READY;
        next_txn(c);
        break;
    case S_QUIT:
        shut(c);
        break;
    case S_READY:
    case S_MODEL:
    case S_BODY:
        /* unexpected reply: the hop is confused, stop using it */
        proto_error(c, "nothing");
        break;
    default:
        break;
    }
}

/* reply_line - one line of a reply, received at octet at (of c->rx);
 * complete replies go to on_reply. */
static void
reply_line(struct pst_smtpc *c, const char *l, size_t n, uint64_t at)
{
    if (n < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' ||
        l[2] < '0' || l[2] > '9' || (n > 3 && l[3] != ' ' && l[3] != '-')) {
        c_fail(c, PST_SMTPC_TEMP, "4.5.0 %s sent a malformed reply",
               c->peer);
        return;
    }
    int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
    bool more = n > 3 && l[3] == '-';
    if (c->rlines == 0) {
        if (at < c->rx_mark) {
            /* sent before the command it would answer was written */
            c_fail(c, PST_SMTPC_TEMP, "4.5.0 protocol error: %s replied "
                   "before the command was sent", c->peer);
            return;
        }
        c->rcode = code;
        size_t tl = PST_MIN(n, sizeof(c->rtext) - 1);
        memcpy(c->rtext, l, tl);
        c->rtext[tl] = '\0';
        for (char *p = c->rtext; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                *p = '?';
    } else if (code != c->rcode) {
        c_fail(c, PST_SMTPC_TEMP, "4.5.0 %s sent an inconsistent reply",
               c->peer);
        return;
    }
    if (++c->rlines > c->o->reply_lines_max) {
        c_fail(c, PST_SMTPC_TEMP, "4.5.0 %s sent a reply of more than %u "
               "lines", c->peer, c->o->reply_lines_max);
        return;
    }
    if (c->st == S_EHLO && c->rlines > 1 && code == 250 && n > 4) {
        char kw[PST_SMTPC_LINE];
        memcpy(kw, l + 4, n - 4);
        kw[n - 4] = '\0';
        ehlo_keyword(c, kw);
    }
    if (!more) {
        c->rlines = 0;
        on_reply(c);
    }
}

/* parse_input - whole lines out of c->in. A line longer than the line
 * buffer is cut (its tail is ignored). */
static void
parse_input(struct pst_smtpc *c)
{
    size_t off = 0;
    while (c->st != S_DEAD && c->st != S_HANDSHAKE) {
        char *nl = memchr(c->in + off, '\n', c->inlen - off);
        if (nl == NULL)
            break;
        size_t n = (size_t)(nl - (c->in + off));
        size_t ln = n;
        if (ln > 0 && c->in[off + ln - 1] == '\r')
            ln--;
        size_t keep = PST_MIN(ln, sizeof(c->line) - 1);
        memcpy(c->line, c->in + off, keep);
        c->line[keep] = '\0';
        uint64_t at = c->rx - c->inlen + off;
        off += n + 1;
        enum cstate before = c->st;
        reply_line(c, c->line, keep, at);
        if (before != S_HANDSHAKE && c->st == S_HANDSHAKE)
            return;     /* start_tls discarded c->in */
    }
    if (c->st == S_DEAD)
        return;
    if (off > 0) {
        memmove(c->in, c->in + off, c->inlen - off);
        c->inlen -= off;
    }
    if (c->inlen == sizeof(c->in))
        c_fail(c, PST_SMTPC_TEMP, "4.5.0 %s sent a line that is too long",
               c->peer);
}

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char scratch[PST_SMTPC_INMAX];
    struct pst_smtpc *c = h->data;
    (void)hint;
    if (c->tls_on || c->st == S_HANDSHAKE) {
        *buf = uv_buf_init(scratch, sizeof(scratch));
        return;
    }
    *buf = uv_buf_init(c->in + c->inlen, (unsigned)(sizeof(c->in) - c->inlen));
}

static void
tls_input(struct pst_smtpc *c, const char *p, size_t n)
{
    BIO_write(c->rbio, p, (int)n);
    if (c->st == S_HANDSHAKE) {
        handshake(c);
        if (c->st == S_DEAD || !c->tls_on)
            return;
    }
    for (;;) {
        if (c->inlen == sizeof(c->in)) {
            parse_input(c);
            if (c->st == S_DEAD)
                return;
        }
        int r = SSL_read(c->ssl, c->in + c->inlen,
                         (int)(sizeof(c->in) - c->inlen));
        if (r > 0) {
            c->inlen += (size_t)r;
            c->rx += (uint64_t)r;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        flush_wbio(c);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e != SSL_ERROR_ZERO_RETURN)     /* not a close_notify */
            tls_forget(c);
        c_fail(c, PST_SMTPC_TEMP, "TLS error with %s", c->peer);
        return;
    }
    parse_input(c);
}

static void
on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct pst_smtpc *c = s->data;

    if (c->st == S_DEAD)
        return;
    if (n < 0) {
        if (c->st == S_QUIT) {
            shut(c);
            return;
        }
        if (c->st == S_HANDSHAKE) {
            /* the hop gave up on the handshake (an alert, then EOF) */
            c_fail(c, PST_SMTPC_TEMP, "4.7.5 TLS handshake with %s failed: "
                   "connection closed", c->peer);
            return;
        }
        c_fail(c, PST_SMTPC_TEMP, "lost connection with %s%s%s", c->peer,
               n == UV_EOF ? "" : ": ", n == UV_EOF ? "" : uv_strerror((int)n));
        return;
    }
    if (n == 0)
        return;
    if (c->tls_on || c->st == S_HANDSHAKE) {
        tls_input(c, buf->base, (size_t)n);
        return;
    }
    c->inlen += (size_t)n;
    c->rx += (uint64_t)n;
    parse_input(c);
}

static void
on_connect(uv_connect_t *req, int status)
{
    struct pst_smtpc *c = req->data;

    if (c->st == S_DEAD)
        return;
    if (status < 0) {
        c_fail(c, PST_SMTPC_TEMP, "connect to %s failed: %s", c->peer,
               uv_strerror(status));
        return;
    }
    if (c->is_tcp)
        uv_tcp_nodelay(&c->h.tcp, 1);
    c->st = S_GREETING;
    set_timer(c, c->o->t_greeting);
    uv_read_start(&c->h.stream, on_alloc, on_read);
}

/* on_refused - the zero timer of a message refused before MAIL. */
static void
on_refused(uv_timer_t *t)
{
    next_txn(t->data);
}

/* ---- public ---- */

struct pst_smtpc *
pst_smtpc_open(uv_loop_t *loop, const struct pst_smtpc_opts *o,
               const struct sockaddr *sa, const char *peer,
               pst_smtpc_open_cb cb, void *arg)
{
    struct pst_smtpc *c = pst_xcalloc(1, sizeof(*c));
    int rc;

    c->loop = loop;
    c->ov = *o;
    if (o->tls_name) {
        snprintf(c->tls_name, sizeof(c->tls_name), "%s", o->tls_name);
        c->ov.tls_name = c->tls_name;
    }
    if (o->mime_limits)
        c->mime_limits = *o->mime_limits;
    else
        pst_mime_limits_default(&c->mime_limits);
    c->ov.mime_limits = &c->mime_limits;
    c->o = &c->ov;
    o = c->o;
    c->open_cb = cb;
    c->open_arg = arg;
    c->st = S_CONNECT;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 2;
    c->h.handle.data = c;
    c->creq.data = c;
    if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *su = (const struct sockaddr_un *)sa;
        snprintf(c->peer, sizeof(c->peer), "%s", su->sun_path);
        uv_pipe_init(loop, &c->h.pipe, 0);
        c->h.handle.data = c;
        uv_pipe_connect(&c->creq, &c->h.pipe, su->sun_path, on_connect);
        rc = 0;
    } else {
        struct pst_ip ip;
        char ips[PST_IP_STRLEN];
        pst_ip_from_sockaddr(&ip, sa);
        snprintf(c->peer, sizeof(c->peer), "%s[%s]", peer,
                 pst_ip_str(&ip, ips, sizeof(ips)));
        c->port = sa->sa_family == AF_INET
                      ? ntohs(((const struct sockaddr_in *)sa)->sin_port)
                      : ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
        uv_tcp_init(loop, &c->h.tcp);
        c->h.handle.data = c;
        c->is_tcp = true;
        rc = uv_tcp_connect(&c->creq, &c->h.tcp, sa, on_connect);
    }
    set_timer(c, o->t_connect);
    if (rc < 0) {
        /* report from the loop, not from inside this call */
        c->connect_err = rc;
        c->timer_due = 0;
        uv_timer_start(&c->timer, on_timeout, 0, 0);
    }
    return c;
}

void
pst_smtpc_send(struct pst_smtpc *c, struct pst_smtpc_msg *m,
               pst_smtpc_sent_cb cb, void *arg)
{
    c->m = m;
    c->sent_cb = cb;
    c->sent_arg = arg;
    c->txns = 0;
    c->batch = pst_xrealloc(c->batch, (m->n + 1) * sizeof(size_t));
    c->acc = pst_xrealloc(c->acc, (m->n + 1) * sizeof(size_t));
    c->retry = pst_xrealloc(c->retry, (m->n + 1) * sizeof(bool));
    c->pend = pst_xrealloc(c->pend, (m->n + 2) * sizeof(struct pending));
    memset(c->retry, 0, (m->n + 1) * sizeof(bool));
    if (!check_msg(c)) {
        /* refused before MAIL: report from the loop, not from here */
        c->st = S_READY;
        c->timer_due = 0;           /* armed for on_refused */
        uv_timer_start(&c->timer, on_refused, 0, 0);
        return;
    }
    if (c->convert8) {
        start_model(c);
        return;
    }
    next_txn(c);
}

void
pst_smtpc_on_gone(struct pst_smtpc *c, pst_smtpc_gone_cb cb, void *arg)
{
    c->gone_cb = cb;
    c->gone_arg = arg;
}

void
pst_smtpc_close(struct pst_smtpc *c)
{
    if (c == NULL)
        return;
    c->open_cb = NULL;
    c->sent_cb = NULL;
    c->gone_cb = NULL;
    c->m = NULL;
    c->ov.sessions = NULL;          /* may be freed before the QUIT ends */
    if (c->st == S_DEAD)
        return;
    if (c->st == S_READY && !c->broken) {
        pst_tbuf_printf(&c->out, "QUIT\r\n");
        flush(c);
        c->st = S_QUIT;
        set_timer(c, 10);
        return;
    }
    shut(c);
}

bool
pst_smtpc_tls(const struct pst_smtpc *c)
{
    return c->tls_on;
}

bool
pst_smtpc_tls_resumed(const struct pst_smtpc *c)
{
    return c->tls_resumed;
}
