/*
 * smtp.c - the SMTP session (RFC 5321 with PIPELINING, SIZE, 8BITMIME,
 * SMTPUTF8, ENHANCEDSTATUSCODES, DSN, CHUNKING): accept, greeting, reads
 * and writes, the input loop, timers, TLS, state changes and close. The
 * commands are smtp_cmd.c, the transaction and its text smtp_data.c, the
 * filter gate smtp_gate.c (smtp_int.h maps them).
 *
 * The client: the peer's address, or on a proxy listener the one the
 * PROXY header names (gateway/proxy.h); s->ip is set once, before
 * session_begin, and every decision reads it from there.
 *
 * Flow: bytes arrive into the input buffer; process() consumes as much as
 * the current state allows (command lines, DATA text through the
 * dotstream decoder, BDAT chunks by length), appending replies to one
 * output buffer that is written once per batch, so a pipelined transaction
 * gets its replies in one write. At the end of a message the spool commit
 * runs asynchronously; meanwhile the session processes nothing (what the
 * client pipelines behind the message is read into the input, up to its
 * bound, and an EOF is kept for when that input is done: input_done) and
 * resumes with it once the commit is answered.
 *
 * Bounds: the input buffer is none while nothing is buffered between
 * messages (an idle session holds no input buffer), PST_IN_SMALL while a
 * command line is incomplete (at most PST_LINE_MAX_ANY) and PST_IN_CAP
 * while text streams (DATA never accumulates: it streams to the spool),
 * back to small or none once what it holds fits; the decoded-output scratch (PST_SCRATCH) exists only
 * while a message is open. Replies: no command is taken while the replies
 * in flight and those not yet written reach PST_OUT_HIGH, checked before
 * each command, so they never exceed it by more than one command's
 * replies; the reply buffer is let go once written if it grew past
 * PST_OUT_KEEP, and the socket's send buffer is fixed (PST_SOCK_SNDBUF).
 * Memory per session is therefore at most about 320 KiB while a message
 * streams (with the spool's write buffer), 40 KiB for a client that
 * pipelines without reading, a few KiB idle (docs/ARCHITECTURE.md).
 *
 * States: pst__smtp_state is the one writer of s->st. ST_PROXY reads a
 * PROXY protocol header (a proxy listener's first state, timed by
 * limits.proxy_timeout; until it is done the client is not known, so
 * nothing that depends on it - limits, filters, the lookup, the greeting -
 * has started). ST_CMD and ST_AUTH read lines, ST_DATA and ST_BDAT read
 * text; ST_LOOKUP, ST_FILTER, ST_AUTH_CHECK and ST_COMMIT wait for the
 * resolver, a filter, the auth pool or the spool and take no input (their
 * own bounds time them); ST_TLS feeds a handshake.
 *
 * Ownership: the session is freed only from the close callback of its last
 * handle, and never while a spool commit is in flight (the commit callback
 * holds it). Every exit goes through session_close().
 */
#include "gateway/smtp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dns.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/strmap.h"
#include "core/util.h"
#include "gateway/policy.h"
#include "gateway/proxy.h"
#include "gateway/smtp_int.h"
#include "gateway/stats.h"
#include "gateway/tls.h"

struct wreq {
    uv_write_t req;
    struct pst_session *s;
    size_t len;
    char data[];
};

static void session_close(struct pst_session *s, const char *why);
static void proxy_fail(struct pst_session *s, const char *result,
                       const char *why);
static void tls_handshake_step(struct pst_session *s);
static void proxy_step(struct pst_session *s);
static void arm_timer(struct pst_session *s);
static void on_timeout(uv_timer_t *t);
static void update_reading(struct pst_session *s);
static void flush(struct pst_session *s);

/* ---- output ---- */

void
pst__smtp_reply(struct pst_session *s, enum pst_reply r, const char *arg)
{
    int code = pst_reply_code(r);
    pst_reply_add(&s->out, r, arg);
    if (code >= 400) {
        s->errors++;
        pst_debug("sess=%016" PRIx64 " event=reply code=%d", s->id, code);
    }
}

/* out_pending - reply octets not yet taken by the kernel. */
static size_t
out_pending(const struct pst_session *s)
{
    return s->out_inflight + s->out.len;
}

static void
on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct pst_session *s = w->s;
    s->out_inflight -= w->len;
    free(w);
    if (status < 0) {
        session_close(s, "write error");
        return;
    }
    if (s->closing)
        return;
    if (s->quitting && s->out_inflight == 0 && s->st != ST_COMMIT) {
        session_close(s, s->peer_eof ? "eof" : "quit");
        return;
    }
    /* output drained below the mark: take input again */
    if (out_pending(s) < PST_OUT_HIGH)
        pst__smtp_process(s);
}

/* A write request owning its n bytes until on_write. */
static struct wreq *
wreq_new(struct pst_session *s, size_t n)
{
    struct wreq *w = pst_xmalloc(sizeof(*w) + n);
    w->s = s;
    w->len = n;
    return w;
}

/* wreq_send - hand w's bytes from off on to libuv; a failure closes the
 * session. */
static void
wreq_send(struct pst_session *s, struct wreq *w, size_t off)
{
    uv_buf_t b = uv_buf_init(w->data + off, (unsigned)(w->len - off));
    w->len -= off;
    if (uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_write) < 0) {
        free(w);
        session_close(s, "write error");
        return;
    }
    s->out_inflight += w->len;
}

/*
 * try_send - write what the kernel takes now, when nothing is queued
 * before it: no request, no callback, and libuv does not touch the
 * socket's epoll registration (a completed uv_write re-arms it: one
 * epoll_ctl per reply). Returns the octets written; on an error none, and
 * the write request the caller then makes reports it (on_write), as
 * before: nothing is closed under the caller.
 */
static size_t
try_send(struct pst_session *s, char *p, size_t n)
{
    if (s->out_inflight > 0)
        return 0;
    uv_buf_t b = uv_buf_init(p, (unsigned)n);
    int k = uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
    return k > 0 ? (size_t)k : 0;
}

/* Send whatever ciphertext the TLS layer has produced. */
static void
tls_send(struct pst_session *s)
{
    size_t n = pst_tls_out_pending(s->tls);
    if (n == 0 || s->closing)
        return;
    struct wreq *w = wreq_new(s, n);
    w->len = pst_tls_take(s->tls, w->data, n);
    size_t k = try_send(s, w->data, w->len);
    if (k == w->len) {
        free(w);
        return;
    }
    wreq_send(s, w, k);
}

/* out_trim - a reply buffer that grew (a burst of pipelined commands)
 * is let go once its content is handed on. */
static void
out_trim(struct pst_session *s)
{
    if (s->out.cap > PST_OUT_KEEP)
        pst_tbuf_free(&s->out);
}

static void
flush(struct pst_session *s)
{
    if (s->out.len == 0 || s->closing)
        return;
    if (s->tls) {
        /* the one path for replies under TLS: encrypt, then send */
        int rc = pst_tls_write(s->tls, s->out.p, s->out.len);
        s->out.len = 0;
        out_trim(s);
        if (rc < 0) {
            char e[256];
            SLOG(PST_LOG_INFO, s, "event=tls_error op=write error=\"%s\"",
                 pst_tls_error(e, sizeof(e)));
            session_close(s, "TLS error");
            return;
        }
        if (s->quitting)            /* the last reply: say goodbye */
            pst_tls_close(s->tls);
        tls_send(s);
        return;
    }
    size_t k = try_send(s, s->out.p, s->out.len);
    if (k < s->out.len) {
        struct wreq *w = wreq_new(s, s->out.len - k);
        memcpy(w->data, s->out.p + k, w->len);
        wreq_send(s, w, 0);
    }
    s->out.len = 0;
    out_trim(s);
}

/* ---- the log budget ---- */

enum pst_log_level
pst__smtp_cmd_level(struct pst_session *s)
{
    unsigned budget = s->conf->log.session_lines;
    if (s->log_used < budget) {
        s->log_used++;
        return PST_LOG_INFO;
    }
    if (s->log_used == budget) {
        /* said once each time the budget runs out */
        SLOG(PST_LOG_INFO, s, "event=log_budget lines=%u action=debug "
             "hint=\"more command lines of this session before its next "
             "accepted message are logged at debug level\"", budget);
        s->log_used++;
    }
    s->log_suppressed++;
    return PST_LOG_DEBUG;
}

/* The filters' lines of the command phases share the budget. */
static enum pst_log_level
filter_line_level(void *arg)
{
    return pst__smtp_cmd_level(arg);
}

void
pst__smtp_cmd_refill(struct pst_session *s)
{
    s->log_used = 0;
}

/* ---- state and timers ---- */

/* cmd_wait - from now the client has command_timeout for its next command. */
static void
cmd_wait(struct pst_session *s)
{
    s->cmd_deadline = uv_now(s->srv->loop) +
                      (uint64_t)s->conf->limits.command_timeout * 1000;
}

void
pst__smtp_state(struct pst_session *s, enum pst__sst st)
{
    if (st == ST_CMD && s->st != ST_CMD)
        cmd_wait(s);                /* the next command is due from now */
    s->st = st;
}

/* timer_at - the session's timer fires at due (loop ms) at the latest. */
static void
timer_at(struct pst_session *s, uint64_t due, uint64_t now)
{
    s->timer_due = due;
    uv_timer_start(&s->timer, on_timeout, due > now ? due - now : 1, 0);
}

static void
on_timeout(uv_timer_t *t)
{
    struct pst_session *s = t->data;
    uint64_t now = uv_now(s->srv->loop);
    s->timer_due = 0;
    if (s->due == 0)
        return;                     /* a wait that bounds itself */
    if (s->due > now) {             /* the deadline moved on: not yet */
        timer_at(s, s->due, now);
        return;
    }
    if (s->quitting) {
        session_close(s, "final reply not read");
        return;
    }
    if (s->st == ST_PROXY) {
        proxy_fail(s, "timeout", "no whole header within "
                   "limits.proxy_timeout");
        return;
    }
    if (s->st == ST_TLS) {
        /* nothing can be said in the middle of a handshake */
        SLOG(PST_LOG_INFO, s, "event=timeout state=%s", "tls_handshake");
        session_close(s, "TLS handshake timeout");
        return;
    }
    SLOG(PST_LOG_INFO, s, "event=timeout state=%s",
         s->st == ST_CMD ? "command" : s->st == ST_AUTH ? "auth" : "data");
    pst__smtp_reply(s, RP_TIMEOUT, s->conf->hostname);
    flush(s);
    s->quitting = true;
    if (s->out_inflight == 0)
        session_close(s, "timeout");
    else
        arm_timer(s);
    update_reading(s);
}

/*
 * arm_timer - the state's timeout, due from now. The timer is lazy: one
 * armed for an earlier moment is left to fire then, and on_timeout arms it
 * again for s->due if that has moved on, so a session that answers each
 * command in time costs no timer operation per command. While the spool,
 * the resolver, a filter or the auth pool is waited for (they bound
 * themselves) there is no due, and a firing timer does nothing.
 */
static void
arm_timer(struct pst_session *s)
{
    if (s->closing)
        return;
    uint64_t now = uv_now(s->srv->loop);
    if (s->st == ST_COMMIT || s->st == ST_LOOKUP || s->st == ST_FILTER ||
        s->st == ST_AUTH_CHECK) {
        s->due = 0;
        return;
    }
    if (s->quitting) {              /* last reply must drain in time */
        s->due = now + 10000;
    } else if (s->st == ST_CMD || s->st == ST_TLS || s->st == ST_AUTH ||
               s->st == ST_PROXY) {
        /* the whole command (or handshake, or PROXY header) must arrive in
         * time: a line dripped a byte at a time does not restart the
         * clock */
        uint64_t dl = s->st == ST_TLS     ? s->tls_deadline
                      : s->st == ST_PROXY ? s->proxy_deadline
                                          : s->cmd_deadline;
        s->due = dl > now ? dl : now + 1;
    } else {
        uint64_t ms = (uint64_t)s->conf->limits.data_block_timeout * 1000;
        if (s->text_deadline <= now)
            ms = 1;
        else if (s->text_deadline - now < ms)
            ms = s->text_deadline - now;
        s->due = now + ms;
    }
    if (s->timer_due == 0 || s->timer_due > s->due)
        timer_at(s, s->due, now);
}

/* ---- input ---- */

enum line_res { LINE_MORE, LINE_OK, LINE_TOO_LONG };

/*
 * take_line - the next whole input line, without its line end. An overlong
 * line is consumed (when its end has not arrived, step_command drops the
 * rest through skip_line) and reported as LINE_TOO_LONG, with *line, *len
 * its start as far as it is buffered.
 */
static enum line_res
take_line(struct pst_session *s, char **line, size_t *len)
{
    char *p = s->in + s->in_pos;
    size_t avail = s->in_len - s->in_pos;
    char *lf = memchr(p, '\n', avail);

    *line = p;
    if (lf == NULL) {
        if (avail < PST_LINE_MAX_ANY)
            return LINE_MORE;
        s->skip_line = true;
        s->in_pos = s->in_len;
        *len = avail;
        return LINE_TOO_LONG;
    }
    size_t n = (size_t)(lf - p);
    s->in_pos += n + 1;
    cmd_wait(s);
    if (n && p[n - 1] == '\r')
        n--;
    *len = n;
    return n + 2 > PST_LINE_MAX_ANY ? LINE_TOO_LONG : LINE_OK;
}

/* Consume one command line if a whole one is buffered. */
static bool
step_command(struct pst_session *s)
{
    char *line;
    size_t len;

    if (s->skip_line) {
        char *p = s->in + s->in_pos;
        char *lf = memchr(p, '\n', s->in_len - s->in_pos);
        if (lf == NULL) {
            s->in_pos = s->in_len;
            return false;
        }
        s->in_pos += (size_t)(lf - p) + 1;
        s->skip_line = false;
        cmd_wait(s);
        return true;
    }
    switch (take_line(s, &line, &len)) {
    case LINE_MORE:
        return false;
    case LINE_TOO_LONG:
        pst__cmd_overlong(s, line, len);
        return true;
    default:
        pst__cmd_line(s, line, len);
        return true;
    }
}

/* One SASL response line (ST_AUTH). */
static bool
step_auth(struct pst_session *s)
{
    char *line;
    size_t len;

    switch (take_line(s, &line, &len)) {
    case LINE_MORE:
        return false;
    case LINE_TOO_LONG:
        pst__cmd_sasl_overlong(s);
        return true;
    default:
        pst__cmd_sasl_line(s, line, len);
        explicit_bzero(line, len);  /* credentials leave the buffer */
        return true;
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b);

bool
pst__smtp_streaming(const struct pst_session *s)
{
    enum pst__sst st = s->st == ST_FILTER ? s->gate_saved : s->st;
    return st == ST_DATA || st == ST_BDAT;
}

/* in_want - the input buffer's size for the session's state. */
static size_t
in_want(const struct pst_session *s)
{
    return pst__smtp_streaming(s) ? PST_IN_CAP : PST_IN_SMALL;
}

/* An idle session holds no input buffer: s->in points here (empty,
 * in_cap 0) until the next read allocates one (on_alloc). */
static char in_none[1];

/*
 * Input buffers a session gave back, for the next read to take: a malloc
 * and a free of a 4 KiB or 64 KiB block per read cost more than the read
 * (glibc consolidates its fast bins for every request that large), and a
 * session reads six or seven times per message. At most IN_SPARES of each
 * size; the loop thread's own (sessions live on it).
 */
#define IN_SPARES 16
static __thread char *spare_small[IN_SPARES], *spare_big[IN_SPARES];
static __thread size_t n_small, n_big;

/* in_take - a buffer of want octets (PST_IN_SMALL or PST_IN_CAP). */
static char *
in_take(size_t want)
{
    if (want == PST_IN_SMALL && n_small > 0)
        return spare_small[--n_small];
    if (want == PST_IN_CAP && n_big > 0)
        return spare_big[--n_big];
    return pst_xmalloc(want);
}

/* in_give - the session's input buffer back (kept, or freed). */
static void
in_give(struct pst_session *s)
{
    if (s->in == in_none)
        return;
    if (s->in_cap == PST_IN_SMALL && n_small < IN_SPARES)
        spare_small[n_small++] = s->in;
    else if (s->in_cap == PST_IN_CAP && n_big < IN_SPARES)
        spare_big[n_big++] = s->in;
    else
        free(s->in);
    s->in = in_none;
    s->in_cap = 0;
}

void
pst_session_spares_free(void)
{
    while (n_small > 0)
        free(spare_small[--n_small]);
    while (n_big > 0)
        free(spare_big[--n_big]);
}

/*
 * in_fit - size the input buffer for the state: grown while text streams,
 * small again once what it holds fits. A new buffer each time (not
 * realloc, which shrinks in place): the large one goes back whole, so the
 * next streaming session reuses it instead of leaving a hole per session.
 */
static void
in_fit(struct pst_session *s)
{
    size_t want = in_want(s);
    if (s->in_cap == want || (s->in_cap > want && s->in_len > want))
        return;
    char *in = in_take(want);
    size_t len = s->in_len;
    memcpy(in, s->in, len);
    in_give(s);
    s->in = in;
    s->in_cap = want;
    s->in_len = len;
}

/* in_settle - after a pass over the input: none left and no text
 * streaming, the buffer goes (a greeted session waiting for its client
 * costs its struct and handles, not 4 KiB more; the next read, or
 * tls_fill, takes one again); else in_fit. */
static void
in_settle(struct pst_session *s)
{
    if (s->in_len == 0 && !pst__smtp_streaming(s)) {
        in_give(s);
        return;
    }
    in_fit(s);
}

/* Read only when the input can be used: not while the input buffer is
 * full or replies pile up unread (PIPELINING abuse), nor before the
 * greeting or during an AUTH check. A commit in flight does not stop
 * reading: what the client pipelines behind its message waits in the
 * input (bounded by its size) until the commit's reply, and the socket's
 * epoll registration is not changed twice per message. */
static void
update_reading(struct pst_session *s)
{
    bool want = !s->closing && !s->quitting && !s->peer_eof &&
                s->st != ST_LOOKUP && s->st != ST_AUTH_CHECK &&
                out_pending(s) < PST_OUT_HIGH && s->in_len < in_want(s) &&
                (s->tls == NULL ||
                 pst_tls_in_pending(s->tls) < PST_TLS_IN_MAX);
    if (want && !s->reading) {
        s->reading =
            uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read) == 0;
    } else if (!want && s->reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = false;
    }
}

/* Move plaintext out of TLS into the input buffer, as much as fits. */
static void
tls_fill(struct pst_session *s)
{
    in_fit(s);
    while (s->in_len < s->in_cap) {
        ssize_t n = pst_tls_read(s->tls, s->in + s->in_len,
                                 s->in_cap - s->in_len);
        if (n == 0)
            break;
        if (n == PST_TLS_EOF) {
            session_close(s, "TLS close_notify");
            return;
        }
        if (n < 0) {
            char e[256];
            SLOG(PST_LOG_INFO, s, "event=tls_error op=read error=\"%s\"",
                 pst_tls_error(e, sizeof(e)));
            session_close(s, "TLS error");
            return;
        }
        s->in_len += (size_t)n;
    }
    tls_send(s);                    /* e.g. a TLS 1.3 KeyUpdate answer */
}

/* STARTTLS was answered (and flushed in plaintext), or an implicit-TLS
 * listener accepted: from here every byte in either direction is TLS. */
static void
tls_begin(struct pst_session *s)
{
    s->tls = pst_tls_new(s->gen->tls);
    pst__smtp_state(s, ST_TLS);
    s->tls_deadline = uv_now(s->srv->loop) +
                      (uint64_t)s->conf->limits.tls_handshake_timeout * 1000;
    if (s->in_len > s->in_pos) {
        /* on an implicit-TLS listener behind a proxy, what came after the
         * PROXY header is the client's ClientHello (after STARTTLS the
         * plaintext behind it was dropped before this point) */
        pst_tls_feed(s->tls, s->in + s->in_pos, s->in_len - s->in_pos);
        s->in_pos = s->in_len = 0;
        tls_handshake_step(s);
    }
}

/* The handshake is done: RFC 3207 4.2, forget everything the client said
 * in plaintext. */
static void
tls_established(struct pst_session *s)
{
    char desc[200];
    const char *sni = pst_tls_sni(s->tls);
    int bits = pst_tls_bits(s->tls);
    snprintf(desc, sizeof(desc), "using %s with cipher %s (%d/%d bits)",
             pst_tls_version(s->tls), pst_tls_cipher(s->tls), bits, bits);
    s->tls_desc = pst_xstrdup(desc);
    bool resumed = pst_tls_resumed(s->tls);
    char q[300];
    SLOG(PST_LOG_INFO, s,
         "event=tls version=%s cipher=%s bits=%d sni=%s resumed=%s",
         pst_tls_version(s->tls), pst_tls_cipher(s->tls), bits,
         sni ? pst_log_quote(q, sizeof(q), sni, strlen(sni)) : "-",
         resumed ? "yes" : "no");
    pst_stats_tls(true, resumed);
    pst__smtp_state(s, ST_CMD);
    pst__tx_free(s);
    pst__bdat_refuse_end(s);
    free(s->helo);
    s->helo = NULL;
    s->esmtp = false;
    free(s->auth_login);            /* a plaintext AUTH is forgotten too */
    s->auth_login = NULL;
    cmd_wait(s);
    if (s->lc->tls == PST_TLS_IMPLICIT) {
        if (s->tls_reject) {
            pst__smtp_reply(s, RP_TOO_MANY_CONN, s->conf->hostname);
            s->quitting = true;
        } else {
            pst__gate(s, PST_FP_CONNECT, NULL, pst__smtp_greeting);
        }
    }
}

/* Advance a handshake with the ciphertext fed so far. */
static void
tls_handshake_step(struct pst_session *s)
{
    int r = pst_tls_handshake(s->tls);
    tls_send(s);                    /* handshake records, or an alert */
    if (r == 0)
        return;
    if (r < 0) {
        char e[256];
        SLOG(PST_LOG_INFO, s, "event=tls_error op=handshake error=\"%s\"",
             pst_tls_error(e, sizeof(e)));
        pst_stats_tls(false, false);
        s->quitting = true;         /* close once the alert is out */
        if (s->out_inflight == 0)
            session_close(s, "TLS handshake failed");
        return;
    }
    tls_established(s);
}

/* input_done - the client's EOF came during a commit: once the input read
 * before it is processed as far as it goes (a state that waits for input,
 * not for a verdict), the replies given are written and the session
 * closes; a message left open is lost, as on any EOF. */
static void
input_done(struct pst_session *s)
{
    if (s->st != ST_CMD && s->st != ST_DATA && s->st != ST_BDAT &&
        s->st != ST_AUTH && s->st != ST_TLS)
        return;                     /* a filter or the auth pool first */
    if (s->st == ST_DATA || s->st == ST_BDAT)
        SLOG(PST_LOG_INFO, s, "event=lost_connection state=%s",
             s->st == ST_DATA ? "data" : "bdat");
    s->quitting = true;
    if (s->out_inflight == 0)
        session_close(s, "eof");
}

void
pst__smtp_process(struct pst_session *s)
{
again:
    while (!s->closing && !s->quitting && !s->tls_start &&
           s->st != ST_COMMIT && s->st != ST_TLS && s->st != ST_LOOKUP &&
           s->st != ST_FILTER && s->st != ST_AUTH_CHECK &&
           out_pending(s) < PST_OUT_HIGH) {
        bool progress;
        if (s->tls) {
            tls_fill(s);
            if (s->closing)
                return;
        }
        if (s->errors > s->conf->limits.errors) {
            SLOG(PST_LOG_INFO, s, "event=too_many_errors errors=%u",
                 s->errors);
            pst__smtp_reply(s, RP_TOO_MANY_ERRORS, s->conf->hostname);
            s->quitting = true;
            break;
        }
        if (s->draining && s->tx == NULL && !s->skip_line &&
            (s->st == ST_CMD || s->st == ST_AUTH)) {
            /* draining, and no transaction open: goodbye */
            SLOG(PST_LOG_INFO, s, "event=drained code=421%s", "");
            pst__smtp_reply(s, RP_SHUTDOWN, s->conf->hostname);
            s->quitting = true;
            break;
        }
        switch (s->st) {
        case ST_CMD:
            progress = step_command(s);
            break;
        case ST_DATA:
            progress = pst__data_step(s);
            break;
        case ST_BDAT:
            progress = pst__bdat_step(s);
            break;
        case ST_AUTH:
            progress = step_auth(s);
            break;
        default:
            progress = false;
        }
        if (!progress)
            break;
    }
    if (s->tls_start && s->in_pos < s->in_len) {
        /* plaintext pipelined behind STARTTLS is dropped, never taken
         * as if it came over TLS (CVE-2011-0411) */
        SLOG(PST_LOG_INFO, s, "event=starttls_pipelining discarded=%zu",
             s->in_len - s->in_pos);
        s->in_pos = s->in_len;
    }
    /* keep the unconsumed tail at the front of the buffer */
    if (s->in_pos > 0) {
        memmove(s->in, s->in + s->in_pos, s->in_len - s->in_pos);
        s->in_len -= s->in_pos;
        s->in_pos = 0;
    }
    in_settle(s);
    bool held = out_pending(s) >= PST_OUT_HIGH;
    flush(s);
    if (s->closing)
        return;
    /* The commands stopped at the replies' mark and the kernel took them
     * all at once: no write completion (on_write) will come to go on
     * with the input (or the TLS layer's), so go on now. A pass that
     * takes no command produces no replies and ends it. */
    if (held && s->out_inflight == 0)
        goto again;
    if (s->tls_start) {
        s->tls_start = false;
        tls_begin(s);
    }
    if (s->peer_eof && !s->quitting && s->st != ST_COMMIT &&
        out_pending(s) < PST_OUT_HIGH)
        input_done(s);              /* nothing more will come */
    if (s->closing)
        return;
    if (s->quitting && s->out_inflight == 0 && s->st != ST_COMMIT) {
        session_close(s, s->peer_eof ? "eof" : "quit");
        return;
    }
    arm_timer(s);
    update_reading(s);
}

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct pst_session *s = h->data;
    if (s->tls) {
        /* cin is empty between reads (on_read feeds it all to TLS) */
        size_t want = pst__smtp_streaming(s) ? PST_TLS_CIN : PST_IN_SMALL;
        if (s->cin_cap != want) {
            free(s->cin);
            s->cin = pst_xmalloc(want);
            s->cin_cap = want;
        }
        *b = uv_buf_init(s->cin, (unsigned)want);
        return;
    }
    in_fit(s);
    *b = uv_buf_init(s->in + s->in_len, (unsigned)(s->in_cap - s->in_len));
}

static void
on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct pst_session *s = st->data;
    if (n == UV_EOF && s->st == ST_COMMIT) {
        /* the client may have half-closed behind its message (and a
         * QUIT): its replies are still due (libuv stopped reading) */
        s->peer_eof = true;
        s->reading = false;
        return;
    }
    if (n < 0) {
        if (s->st == ST_DATA || s->st == ST_BDAT)
            SLOG(PST_LOG_INFO, s, "event=lost_connection state=%s",
                 s->st == ST_DATA ? "data" : "bdat");
        session_close(s, n == UV_EOF ? "eof" : uv_strerror((int)n));
        return;
    }
    if (n == 0)
        return;
    if (s->tls) {
        pst_tls_feed(s->tls, s->cin, (size_t)n);
        if (s->st == ST_TLS) {
            tls_handshake_step(s);
            if (s->closing)
                return;
        }
    } else {
        s->in_len += (size_t)n;
        if (s->st == ST_PROXY) {
            proxy_step(s);
            return;
        }
    }
    if (s->st == ST_COMMIT) {
        /* pipelined behind the message: it waits for the commit's reply
         * (on_commit processes it), up to the input's bound */
        update_reading(s);
        return;
    }
    pst__smtp_process(s);
}

/* ---- lifecycle ---- */

void
pst__smtp_free(struct pst_session *s)
{
    struct pst_server *srv = s->srv;
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (s->ip_counted)
        pst_ipcount_remove(srv->ipcount, &s->ip);
    if (s->m_open)
        pst_metric_sub(s->m_open, 1);
    pst_strmap_del(srv->by_id, &s->id, sizeof(s->id));
    pst__tx_free(s);
    pst_envelope_free(&s->facts);
    free(s->auth_login);
    pst_tbuf_free(&s->out);
    in_give(s);
    free(s->helo);
    free(s->client_name);
    free(s->ptr_name);
    pst_tls_free(s->tls);
    free(s->proxy);
    free(s->cin);
    free(s->tls_desc);
    pst_gen_unref(s->gen);
    free(s);
    pst_server_session_gone(srv);
}

static void
on_close(uv_handle_t *h)
{
    struct pst_session *s = h->data;
    if (--s->handles == 0 && s->st != ST_COMMIT)
        pst__smtp_free(s);
}

static void
session_close(struct pst_session *s, const char *why)
{
    if (s->closing)
        return;
    s->closing = true;
    if (s->log_suppressed > 0)
        SLOG(PST_LOG_INFO, s, "event=disconnect reason=\"%s\" errors=%u "
             "log_suppressed=%" PRIu64, why, s->errors, s->log_suppressed);
    else
        SLOG(PST_LOG_INFO, s, "event=disconnect reason=\"%s\" errors=%u",
             why, s->errors);
    if (s->st != ST_COMMIT)
        pst__tx_free(s);            /* no 250 given: the message goes */
    pst_dns_cancel(s->dnsq);
    s->dnsq = NULL;
    pst_fsess_free(s->fs);          /* a pending verdict is dropped */
    s->fs = NULL;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, on_close);
    uv_close((uv_handle_t *)&s->tcp, on_close);
    /* a commit in flight frees the session from its callback: on_close
     * leaves it */
}

void
pst__smtp_greeting(struct pst_session *s)
{
    char text[600];
    snprintf(text, sizeof(text), "%s ESMTP %s", s->conf->hostname,
             s->conf->smtp.banner ? s->conf->smtp.banner : "postern");
    pst__smtp_reply(s, RP_GREETING, text);
}

/* The client's name is known (or not): say hello (on an implicit-TLS
 * listener, once TLS is up) and start reading. */
static void
greet(struct pst_session *s, const char *name)
{
    s->client_name = pst_xstrdup(name);
    free(s->facts.client_name);
    s->facts.client_name = pst_xstrdup(name);
    pst__smtp_state(s, ST_CMD);
    if (s->lc->tls == PST_TLS_IMPLICIT && s->gen->tls)
        tls_begin(s);               /* connect filters once TLS is up */
    else
        pst__gate(s, PST_FP_CONNECT, NULL, pst__smtp_greeting);
    pst__smtp_process(s);
}

/* A name counts only if it maps back to the client's address (FCrDNS):
 * anyone can publish any PTR for their own addresses. */
static void
on_forward(void *arg, enum pst_dns_status st, const struct pst_ip *ips,
           size_t n)
{
    struct pst_session *s = arg;
    bool ok = false;
    s->dnsq = NULL;
    for (size_t i = 0; st == PST_DNS_OK && i < n; i++)
        ok = ok || pst_ip_equal(&ips[i], &s->ip);
    SLOG(PST_LOG_DEBUG, s, "event=rdns name=%s confirmed=%s", s->ptr_name,
         ok ? "yes" : "no");
    greet(s, ok ? s->ptr_name : "unknown");
}

static void
on_ptr(void *arg, enum pst_dns_status st, const char *name)
{
    struct pst_session *s = arg;
    s->dnsq = NULL;
    if (st == PST_DNS_OK && name && name[0]) {
        s->ptr_name = pst_xstrdup(name);
        s->dnsq = pst_dns_addr(s->srv->dns, name, s->ip.family, on_forward, s);
        if (s->dnsq)
            return;
    }
    SLOG(PST_LOG_DEBUG, s, "event=rdns status=%s", pst_dns_strstatus(st));
    greet(s, "unknown");
}

/*
 * session_begin - the client is known (the peer, or the client a PROXY
 * header names): everything that depends on who it is starts here - the
 * relay trust, the session limits, the filters, the name lookup, the
 * greeting. Bytes it has already sent (behind a PROXY header) stay in the
 * input for the state that wants them.
 */
static void
session_begin(struct pst_session *s)
{
    struct pst_server *srv = s->srv;

    s->facts.client_ip = s->ip;
    s->trusted = pst_policy_trusted(s->gen->policy, &s->ip);
    s->ip_counted = true;
    unsigned per_ip = pst_ipcount_add(srv->ipcount, &s->ip);
    if (srv->nsessions > s->conf->limits.sessions ||
        per_ip > s->conf->limits.sessions_per_ip) {
        /* a 421 greeting, not a reset: the client knows to come back */
        bool total = srv->nsessions > s->conf->limits.sessions;
        SLOG(PST_LOG_WARN, s, "event=reject phase=connect code=421 "
             "reason=%s sessions=%u", total ? "sessions" : "sessions_per_ip",
             total ? srv->nsessions : per_ip);
        pst__smtp_state(s, ST_CMD);
        if (s->lc->tls == PST_TLS_IMPLICIT && s->gen->tls) {
            /* the 421 can only be read over TLS */
            s->tls_reject = true;
            tls_begin(s);
        } else {
            pst__smtp_reply(s, RP_TOO_MANY_CONN, s->conf->hostname);
            s->quitting = true;
        }
        pst__smtp_process(s);
        return;
    }
    if (pst_chain_len(s->conf->filters) > 0) {
        s->fs = pst_fsess_new(srv->frt, s->conf->filters, s->id, &s->facts,
                              pst__gate_verdict, s);
        pst_fsess_set_mime_limits(s->fs, &s->conf->mime.limits);
        pst_fsess_want_mime(s->fs,
                            s->conf->mime.policy == PST_MIME_POLICY_REJECT);
        pst_fsess_set_log_budget(s->fs, filter_line_level);
    }
    if (s->conf->smtp.reverse_dns && srv->dns) {
        pst__smtp_state(s, ST_LOOKUP);
        update_reading(s);          /* nothing more is read meanwhile */
        arm_timer(s);               /* the resolver's timeouts bound it */
        s->dnsq = pst_dns_ptr(srv->dns, &s->ip, on_ptr, s);
        if (s->dnsq)
            return;
    }
    greet(s, "unknown");
}

/* proxy_fail - the PROXY header did not come as it should: log, count,
 * close (nothing is said: the peer is a proxy, or is not allowed to be). */
static void
proxy_fail(struct pst_session *s, const char *result, const char *why)
{
    SLOG(PST_LOG_WARN, s, "event=proxy_refused ip=%s port=%u listener=%s:%u "
         "result=%s reason=\"%s\"", s->ipstr, s->port, s->lc->address,
         s->lc->port, result, why);
    pst_stats_proxy(result);
    session_close(s, result);
}

/*
 * proxy_step - feed the PROXY header what has arrived. The parser takes
 * exactly the header: what follows it (the client's commands, pipelined,
 * or its TLS ClientHello on an implicit-TLS listener) stays in the input.
 * Once the header is complete its client becomes the session's client.
 */
static void
proxy_step(struct pst_session *s)
{
    size_t used;
    enum pst_proxy_status st = pst_proxy_feed(
        s->proxy, s->in + s->in_pos, s->in_len - s->in_pos, &used);
    s->in_pos += used;
    memmove(s->in, s->in + s->in_pos, s->in_len - s->in_pos);
    s->in_len -= s->in_pos;
    s->in_pos = 0;
    if (st == PST_PROXY_MORE) {
        update_reading(s);
        return;
    }
    if (st == PST_PROXY_ERROR) {
        proxy_fail(s, "invalid", s->proxy->why);
        return;
    }
    char peer[PST_IP_STRLEN + 8];
    snprintf(peer, sizeof(peer), "%s:%u", s->ipstr, s->port);
    if (!s->proxy->local) {
        s->ip = s->proxy->src;
        s->port = s->proxy->sport;
        pst_ip_str(&s->ip, s->ipstr, sizeof(s->ipstr));
    }
    SLOG(PST_LOG_INFO, s, "event=connect ip=%s port=%u listener=%s:%u "
         "proxy=%s proxy_version=%d%s", s->ipstr, s->port, s->lc->address,
         s->lc->port, peer, s->proxy->version,
         s->proxy->local ? " proxy_command=local" : "");
    pst_stats_proxy(s->proxy->local ? "local" : "proxied");
    free(s->proxy);
    s->proxy = NULL;
    session_begin(s);
}

/* pst_session_sock_options - see smtp.h. */
int
pst_session_sock_options(uv_tcp_t *t)
{
    /* The kernel's send buffer is part of what a client that does not
     * read its replies can make us fill: left to autotuning it grows to
     * megabytes, each a run of commands we parse and answer for nothing.
     * Replies are small, so a fixed one bounds that work and memory. */
    int sndbuf = PST_SOCK_SNDBUF;
    int rc = uv_tcp_nodelay(t, 1);
    if (rc == 0)
        rc = uv_send_buffer_size((uv_handle_t *)t, &sndbuf);
    return rc;
}

void
pst_session_accept(struct pst_listener *l)
{
    struct pst_server *srv = l->srv;
    struct pst_session *s = pst_xcalloc(1, sizeof(*s));
    struct sockaddr_storage ss;
    int sl = sizeof(ss);

    s->srv = srv;
    s->gen = pst_gen_ref(srv->gen);     /* kept until the session ends */
    s->conf = s->gen->conf;
    s->lc = l->lc;
    s->id = srv->id_base + srv->id_next++;
    s->in = in_none;                /* allocated by the first read */
    s->in_cap = 0;
    pst_tbuf_init(&s->out);
    pst_envelope_init(&s->facts);
    s->st = ST_CMD;
    cmd_wait(s);
    uv_tcp_init(srv->loop, &s->tcp);
    uv_timer_init(srv->loop, &s->timer);
    s->tcp.data = s->timer.data = s;
    s->handles = 2;
    *pst_strmap_slot(srv->by_id, &s->id, sizeof(s->id), NULL) = s;
    s->next = srv->sessions;
    if (srv->sessions)
        srv->sessions->prev = s;
    srv->sessions = s;
    srv->nsessions++;

    if (uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&s->tcp) < 0 ||
        uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &sl) < 0 ||
        pst_ip_from_sockaddr(&s->ip, (struct sockaddr *)&ss) < 0) {
        session_close(s, "accept failed");
        return;
    }
#ifndef __linux__
    pst_session_sock_options(&s->tcp);     /* Linux: inherited from the listener */
#endif
    pst_metric_add(l->m_total, 1);
    s->m_open = l->m_open;
    pst_metric_add(s->m_open, 1);
    pst_ip_str(&s->ip, s->ipstr, sizeof(s->ipstr));
    s->port = ntohs(ss.ss_family == AF_INET
                        ? ((struct sockaddr_in *)&ss)->sin_port
                        : ((struct sockaddr_in6 *)&ss)->sin6_port);
    if (!s->lc->proxy) {
        SLOG(PST_LOG_INFO, s, "event=connect ip=%s port=%u listener=%s:%u",
             s->ipstr, s->port, l->lc->address, l->lc->port);
        session_begin(s);
        return;
    }
    /* A PROXY listener: only the proxies may connect, and each must send
     * its header within limits.proxy_timeout, before anything else
     * happens - no greeting, no lookup, no limit counted for the proxy. */
    if (!pst_cidr_list_match(s->lc->proxy_trusted, s->lc->nproxy_trusted,
                             &s->ip)) {
        proxy_fail(s, "untrusted", "not in the listener's proxy_trusted");
        return;
    }
    s->proxy = pst_xmalloc(sizeof(*s->proxy));
    pst_proxy_init(s->proxy);
    pst__smtp_state(s, ST_PROXY);
    s->proxy_deadline = uv_now(srv->loop) +
                        (uint64_t)s->conf->limits.proxy_timeout * 1000;
    arm_timer(s);
    update_reading(s);
}

void
pst_session_shutdown(struct pst_session *s)
{
    if (s->closing)
        return;
    if (s->st == ST_COMMIT) {
        s->quitting = true;         /* answer the commit, then close */
        return;
    }
    if (s->st == ST_CMD || s->st == ST_AUTH) {
        pst__smtp_reply(s, RP_SHUTDOWN, s->conf->hostname);
        flush(s);
    }
    session_close(s, "shutdown");
}

void
pst_session_drain(struct pst_session *s)
{
    if (s->closing || s->draining)
        return;
    s->draining = true;
    if (s->st == ST_PROXY) {
        session_close(s, "drain");  /* not a client yet */
        return;
    }
    if (s->st == ST_LOOKUP) {
        /* not greeted yet: the 421 is the greeting (over TLS on an
         * implicit-TLS listener, where it is simpler to close) */
        pst_dns_cancel(s->dnsq);
        s->dnsq = NULL;
        pst__smtp_state(s, ST_CMD);
        if (s->lc->tls == PST_TLS_IMPLICIT) {
            session_close(s, "drain");
            return;
        }
    }
    pst__smtp_process(s);
}

void
pst_session_drain_all(struct pst_server *srv)
{
    /* closing is asynchronous: no session is freed during this walk */
    for (struct pst_session *s = srv->sessions; s; s = s->next)
        pst_session_drain(s);
}

void
pst_session_shutdown_all(struct pst_server *srv)
{
    /* closing is asynchronous: no session is freed during this walk */
    for (struct pst_session *s = srv->sessions; s; s = s->next)
        pst_session_shutdown(s);
}
