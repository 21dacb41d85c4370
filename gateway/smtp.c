/*
 * smtp.c - the SMTP session state machine (RFC 5321 with PIPELINING, SIZE,
 * 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, DSN, CHUNKING).
 *
 * Flow: bytes arrive into a fixed input buffer; process() consumes as much
 * as the current state allows (command lines, DATA text through the
 * dotstream decoder, BDAT chunks by length), appending replies to one
 * output buffer that is written once per batch, so a pipelined transaction
 * gets its replies in one write. At the end of a message the spool commit
 * runs asynchronously; meanwhile the session stops reading and processing,
 * and resumes with whatever the client pipelined behind the message.
 *
 * Bounds: the input buffer is PST_IN_SMALL between messages (a command
 * line is at most PST_LINE_MAX_ANY) and PST_IN_CAP while text streams
 * (DATA never accumulates: it streams to the spool), back to small once
 * what it holds fits; the decoded-output scratch (2*PST_IN_CAP+2) exists
 * only while a message is open. Replies: no command is taken while the
 * replies in flight and those not yet written reach PST_OUT_HIGH, checked
 * before each command, so they never exceed it by more than one command's
 * replies; the reply buffer is let go once written if it grew past
 * PST_OUT_KEEP. Memory per session is therefore at most about 320 KiB
 * while a message streams (with the spool's write buffer), 40 KiB for a
 * client that pipelines without reading, a few KiB idle
 * (docs/ARCHITECTURE.md).
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
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/tbuf.h"
#include "core/dns.h"
#include "core/envelope.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/mime.h"
#include "core/util.h"
#include "filters/chain.h"
#include "core/strmap.h"
#include "gateway/auth.h"
#include "gateway/dotstream.h"
#include "gateway/parse.h"
#include "gateway/policy.h"
#include "gateway/received.h"
#include "gateway/smtp_filters.h"
#include "gateway/stats.h"
#include "gateway/reply.h"
#include "gateway/tls.h"
#include "queue/spool.h"

#define PST_IN_CAP (64 * 1024)      /* input while message text streams */
#define PST_IN_SMALL (4 * 1024)     /* otherwise: > PST_LINE_MAX_ANY */
#define PST_OUT_HIGH (32 * 1024)    /* replies pending before input pauses */
#define PST_OUT_KEEP (4 * 1024)     /* a reply buffer kept between writes */
#define PST_SOCK_SNDBUF (32 * 1024) /* SO_SNDBUF (Linux doubles it) */
#define PST_HELO_MAX 255
#define PST_SPACE_CHECK (1024 * 1024) /* text octets between disk checks */
#define PST_TLS_CIN (32 * 1024)     /* ciphertext read buffer */

enum sstate {
    ST_LOOKUP,                      /* client name lookup before greeting */
    ST_CMD,                         /* waiting for a command line */
    ST_DATA,                        /* DATA text until CRLF.CRLF */
    ST_BDAT,                        /* bdat_left octets of chunk text */
    ST_COMMIT,                      /* spool commit in flight */
    ST_FILTER,                      /* a filter verdict is pending */
    ST_TLS,                         /* TLS handshake in progress */
    ST_AUTH,                        /* waiting for a SASL response line */
    ST_AUTH_CHECK,                  /* password check in the auth pool */
};

enum sasl_step { SASL_NONE, SASL_PLAIN, SASL_LOGIN_USER, SASL_LOGIN_PASS };

/* Why a message is refused after its data (first problem wins). */
enum msg_fail {
    MF_NONE,
    MF_TOO_BIG,
    MF_LONG_LINE,
    MF_BARE_NEWLINE,
    MF_HOPS,
    MF_WRITE,
    MF_NOSPACE,
    MF_MIME_LIMIT,
};

/* A small scanner over the header section of the text as it is stored:
 * counts Received fields (hop limit) and finds the end of the header. */
struct hdrscan {
    bool done;                      /* blank line seen */
    bool bol;                       /* at the start of a line */
    size_t plen;                    /* prefix bytes collected */
    char prefix[11];                /* "received:", "date:", "message-id:" */
    unsigned received;
    bool date, msgid;               /* Date: / Message-ID: present */
};

struct wreq {
    uv_write_t req;
    struct pst_session *s;
    size_t len;
    char data[];
};

struct pst_session {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct pst_session *prev, *next;
    struct pst_server *srv;
    struct pst_gen *gen;            /* referenced for the session's life */
    const struct pst_conf *conf;    /* gen->conf */
    const struct pst_listener_conf *lc;
    uint64_t id;
    struct pst_ip ip;
    char ipstr[PST_IP_STRLEN];
    char *client_name;              /* confirmed reverse DNS or "unknown" */
    char *ptr_name;                 /* PTR answer awaiting confirmation */
    struct pst_dns_query *dnsq;     /* cancelled at close */
    char *helo;                     /* sanitised */
    bool esmtp;
    bool trusted;                   /* in relay.trusted_networks */
    bool ip_counted;                /* in srv->ipcount */
    struct pst_metric *m_open;      /* the listener's open sessions gauge,
                                       counted while set */

    enum sstate st;
    unsigned handles;               /* open uv handles */
    bool closing;
    bool quitting;                  /* QUIT answered: close after flush */
    bool draining;                  /* 421 4.3.2 once no transaction is open */
    bool reading;
    unsigned errors;
    uint64_t cmd_deadline;          /* loop ms: the next command is due */

    char *in;                       /* in_cap: PST_IN_SMALL or PST_IN_CAP */
    size_t in_pos, in_len, in_cap;
    bool skip_line;                 /* discarding an overlong command */
    struct pst_tbuf out;             /* replies not yet written */
    size_t out_inflight;

    /* transaction */
    bool in_mail;
    unsigned rcpt_tried;
    struct pst_envelope env;
    struct pst_spool_msg *msg;
    char qid[PST_QID_LEN + 1];
    struct pst_dot dot;
    char *scratch;                  /* dotstream output, 2*PST_IN_CAP+2,
                                       while a message is open */
    struct hdrscan hs;
    enum msg_fail fail;
    bool bdat_used, data_used;
    uint64_t bdat_left;
    uint64_t bdat_octets;           /* chunk octets received, for replies */
    bool bdat_last;
    bool held;                      /* committed into hold/ (quarantine) */
    bool bdat_discard;              /* chunk read only to keep framing */
    /* RFC 3030 2: once a chunk of a transaction has failed, the chunks
     * the client pipelined behind it are read and refused with the same
     * reply, until RSET, MAIL, HELO/EHLO or a LAST chunk */
    bool bdat_refusing;
    enum pst_reply bdat_refusal;
    uint64_t data_deadline;         /* loop ms */
    uint64_t eod_us;                /* monotonic: the end of data */

    /* with mime.policy = reject: the message model, for its limit flags */
    struct pst_mime_parser *mp;

    /* filters (filters/chain.h): NULL when the chain is empty */
    struct pst_fsess *fs;
    enum pst_fphase fstep;          /* the phase whose verdict is pending */
    enum sstate fst_saved;          /* state to go back to */
    const char *cur_line;           /* command being dispatched */
    size_t cur_len;
    char *fline;                    /* it, kept while its verdict pends */
    size_t fline_len;
    bool fready;                    /* fres holds the verdict of fstep */
    struct pst_fres fres;
    uint64_t space_checked;         /* text bytes at the last disk check */

    /* TLS (tls.c): once tls is set, reads land in cin as ciphertext and
     * come out as plaintext in in; flush() encrypts */
    struct pst_tls *tls;
    char *cin;                      /* cin_cap: PST_TLS_CIN while text
                                       streams, else PST_IN_SMALL */
    size_t cin_cap;
    bool tls_start;                 /* STARTTLS answered: begin after flush */
    bool tls_reject;                /* over a limit: 421 once TLS is up */
    uint64_t tls_deadline;          /* loop ms: handshake must be done */
    char *tls_desc;                 /* for Received and logs */

    /* AUTH (auth.c) */
    char *auth_login;               /* authenticated as, or NULL */
    enum sasl_step sasl;
    char sasl_user[PST_AUTH_FIELD_MAX + 1];
};

static void process(struct pst_session *s);
static void send_greeting(struct pst_session *s);
static void session_close(struct pst_session *s, const char *why);
static void session_free(struct pst_session *s);
static void arm_timer(struct pst_session *s);
static void update_reading(struct pst_session *s);
static void flush(struct pst_session *s);
static bool filter_gate(struct pst_session *s, enum pst_fphase ph,
                        const char *arg, const char **newaddr);
static void on_filter_verdict(void *arg, const struct pst_fres *r);
static void message_end(struct pst_session *s);

/* ---- logging helpers ---- */

#define SLOG(lvl, s, fmt, ...)                                                 \
    pst_log(lvl, "sess=%016" PRIx64 "%s%s " fmt, (s)->id,                     \
            (s)->qid[0] ? " msg=" : "", (s)->qid, __VA_ARGS__)

static char *
sanitize_helo(const char *a, size_t n)
{
    if (n > PST_HELO_MAX)
        n = PST_HELO_MAX;
    char *h = pst_xstrndup(a, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c < 33 || c > 126 || c == '(' || c == ')' || c == '\\' ||
            c == ';')
            h[i] = '?';
    }
    return h;
}

/* ---- output ---- */

static void
reply(struct pst_session *s, enum pst_reply r, const char *arg)
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
    if (s->quitting && s->out_inflight == 0) {
        session_close(s, "quit");
        return;
    }
    /* output drained below the mark: take input again */
    if (out_pending(s) < PST_OUT_HIGH)
        process(s);
}

/* Send whatever ciphertext the TLS layer has produced. */
/* A write request owning its n bytes until on_write. */
static struct wreq *
wreq_new(struct pst_session *s, size_t n)
{
    struct wreq *w = pst_xmalloc(sizeof(*w) + n);
    w->s = s;
    w->len = n;
    return w;
}

/* wreq_send - hand w to libuv; a failure closes the session. */
static void
wreq_send(struct pst_session *s, struct wreq *w)
{
    uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
    if (uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_write) < 0) {
        free(w);
        session_close(s, "write error");
        return;
    }
    s->out_inflight += w->len;
}

static void
tls_send(struct pst_session *s)
{
    size_t n = pst_tls_out_pending(s->tls);
    if (n == 0 || s->closing)
        return;
    struct wreq *w = wreq_new(s, n);
    w->len = pst_tls_take(s->tls, w->data, n);
    wreq_send(s, w);
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
    struct wreq *w = wreq_new(s, s->out.len);
    memcpy(w->data, s->out.p, s->out.len);
    s->out.len = 0;
    out_trim(s);
    wreq_send(s, w);
}

/* ---- timers ---- */

static void
on_timeout(uv_timer_t *t)
{
    struct pst_session *s = t->data;
    if (s->quitting) {
        session_close(s, "final reply not read");
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
    reply(s, RP_TIMEOUT, s->conf->hostname);
    flush(s);
    s->quitting = true;
    if (s->out_inflight == 0)
        session_close(s, "timeout");
    else
        arm_timer(s);
    update_reading(s);
}

static void
arm_timer(struct pst_session *s)
{
    uint64_t ms;
    if (s->closing)
        return;
    if (s->st == ST_COMMIT || s->st == ST_LOOKUP || s->st == ST_FILTER ||
        s->st == ST_AUTH_CHECK) {
        /* the spool, the resolver, the filters and the auth pool bound
         * these */
        uv_timer_stop(&s->timer);
        return;
    }
    if (s->quitting) {              /* last reply must drain in time */
        uv_timer_start(&s->timer, on_timeout, 10000, 0);
        return;
    }
    if (s->st == ST_CMD || s->st == ST_TLS || s->st == ST_AUTH) {
        /* the whole command (or handshake) must arrive in time: a line
         * dripped a byte at a time does not restart the clock */
        uint64_t now = uv_now(s->srv->loop);
        uint64_t dl = s->st == ST_TLS ? s->tls_deadline : s->cmd_deadline;
        ms = dl > now ? dl - now : 1;
    } else {
        uint64_t now = uv_now(s->srv->loop);
        ms = (uint64_t)s->conf->limits.data_block_timeout * 1000;
        if (s->data_deadline <= now)
            ms = 1;
        else if (s->data_deadline - now < ms)
            ms = s->data_deadline - now;
    }
    uv_timer_start(&s->timer, on_timeout, ms, 0);
}

/* ---- transaction ---- */

static void
txn_reset(struct pst_session *s)
{
    if (s->msg) {
        pst_spool_msg_abort(s->msg);
        s->msg = NULL;
    }
    pst_envelope_free(&s->env);
    if (s->fs)
        pst_fsess_msg_end(s->fs);
    pst_mime_parser_free(s->mp);
    s->mp = NULL;
    free(s->scratch);               /* a session between messages is small */
    s->scratch = NULL;
    s->in_mail = false;
    s->rcpt_tried = 0;
    s->qid[0] = '\0';
    s->fail = MF_NONE;
    s->bdat_used = s->data_used = false;
    s->bdat_left = 0;
    s->bdat_octets = 0;
    s->bdat_last = false;
    s->held = false;
    s->eod_us = 0;
}

/* cmd_wait - from now the client has command_timeout for its next command. */
static void
cmd_wait(struct pst_session *s)
{
    s->cmd_deadline = uv_now(s->srv->loop) +
                      (uint64_t)s->conf->limits.command_timeout * 1000;
}

/*
 * bdat_refuse - a chunk of the transaction failed with reply r (and the
 * transaction is reset): the chunks the client pipelined behind it are
 * read and refused with r, so a temporary failure stays temporary and no
 * later chunk starts a message without the text before it (RFC 3030 2).
 */
static void
bdat_refuse(struct pst_session *s, enum pst_reply r)
{
    s->bdat_refusing = true;
    s->bdat_refusal = r;
}

/* bdat_refuse_end - the client has moved on (RSET, MAIL, HELO/EHLO, TLS,
 * or the LAST chunk of the failed transaction). */
static void
bdat_refuse_end(struct pst_session *s)
{
    s->bdat_refusing = false;
}

/*
 * space_ok - the spool's file system keeps limits.disk_free_min free after
 * need more bytes. An unknown free space (statvfs failed) is not a refusal:
 * the writes themselves will say ENOSPC.
 */
static bool
space_ok(struct pst_session *s, uint64_t need)
{
    int64_t fr = pst_spool_free_bytes(s->srv->spool);
    if (fr < 0)
        return true;
    uint64_t min = s->conf->limits.disk_free_min;
    return (uint64_t)fr >= min && (uint64_t)fr - min >= need;
}

static const char *
path_err_text(enum pst_path_err e)
{
    switch (e) {
    case PST_PATH_LOCAL_TOO_LONG:
        return "local part longer than 64 octets";
    case PST_PATH_DOMAIN_TOO_LONG:
        return "domain longer than 255 octets";
    case PST_PATH_TOO_LONG:
        return "path longer than 256 octets";
    case PST_PATH_BAD_UTF8:
        return "malformed UTF-8";
    default:
        return "bad syntax";
    }
}

/* "FROM:" / "TO:" with optional spaces after the colon (common practice). */
static bool
strip_keyword(const char **a, size_t *n, const char *kw)
{
    size_t kl = strlen(kw);
    if (*n < kl || !pst_strncaseeq(*a, kw, kl))
        return false;
    *a += kl;
    *n -= kl;
    while (*n && **a == ' ') {
        (*a)++;
        (*n)--;
    }
    return true;
}

/* starttls_offered - a STARTTLS listener, TLS not yet active. */
static bool
starttls_offered(const struct pst_session *s)
{
    return s->lc->tls == PST_TLS_STARTTLS && s->gen->tls != NULL &&
           s->tls == NULL;
}

/* auth_offered - RFC 4954 4: only under TLS unless the listener allows
 * plaintext AUTH. */
static bool
auth_offered(const struct pst_session *s)
{
    return s->srv->auth != NULL && s->lc->auth &&
           (s->tls != NULL || s->lc->auth_plaintext);
}

static void
sasl_end(struct pst_session *s)
{
    s->sasl = SASL_NONE;
    explicit_bzero(s->sasl_user, sizeof(s->sasl_user));
    if (s->st == ST_AUTH)
        s->st = ST_CMD;
}

static void
auth_start_check(struct pst_session *s, const char *login, char *password)
{
    char q[300];
    int rc = pst_auth_check(s->srv->auth, s->id, &s->ip, login, password);
    explicit_bzero(password, strlen(password));
    pst_log_quote(q, sizeof(q), login, strlen(login));
    if (rc == -EPERM) {
        SLOG(PST_LOG_WARN, s, "event=auth result=limited login=%s ip=%s", q,
             s->ipstr);
        pst_stats_auth(false);
        reply(s, RP_AUTH_LIMIT, NULL);
        sasl_end(s);
        return;
    }
    if (rc < 0) {
        SLOG(PST_LOG_WARN, s, "event=auth result=%s login=%s",
             rc == -EAGAIN ? "busy" : "invalid", q);
        reply(s, rc == -EAGAIN ? RP_AUTH_TEMP : RP_AUTH_FAILED, NULL);
        sasl_end(s);
        return;
    }
    /* reading stops until pst_session_auth_done */
    s->sasl = SASL_NONE;
    s->st = ST_AUTH_CHECK;
}

/* One SASL response (the initial response or a line after 334). */
static void
sasl_response(struct pst_session *s, const char *line, size_t len)
{
    char dec[PST_AUTH_FIELD_MAX * 3 + 3];
    char login[PST_AUTH_FIELD_MAX + 1], pw[PST_AUTH_FIELD_MAX + 1];
    ssize_t n;

    if (len == 1 && line[0] == '*') {
        SLOG(PST_LOG_INFO, s, "event=auth result=cancelled%s", "");
        reply(s, RP_AUTH_CANCELLED, NULL);
        sasl_end(s);
        return;
    }
    if (len == 1 && line[0] == '=')
        n = 0;                      /* RFC 4954 4: an empty response */
    else
        n = pst_b64_decode(line, len, dec, sizeof(dec));
    if (n < 0) {
        reply(s, RP_AUTH_BAD_B64, NULL);
        sasl_end(s);
        return;
    }
    switch (s->sasl) {
    case SASL_PLAIN:
        if (pst_sasl_plain(dec, (size_t)n, login, pw) < 0) {
            SLOG(PST_LOG_INFO, s, "event=auth result=malformed mech=%s",
                 "PLAIN");
            reply(s, RP_AUTH_FAILED, NULL);
            sasl_end(s);
            break;
        }
        auth_start_check(s, login, pw);
        break;
    case SASL_LOGIN_USER:
        if (n == 0 || n > PST_AUTH_FIELD_MAX ||
            memchr(dec, '\0', (size_t)n) != NULL) {
            reply(s, RP_AUTH_FAILED, NULL);
            sasl_end(s);
            break;
        }
        memcpy(s->sasl_user, dec, (size_t)n);
        s->sasl_user[n] = '\0';
        s->sasl = SASL_LOGIN_PASS;
        s->st = ST_AUTH;
        reply(s, RP_AUTH_CHALLENGE, "UGFzc3dvcmQ6");    /* "Password:" */
        break;
    case SASL_LOGIN_PASS:
        if (n > PST_AUTH_FIELD_MAX || memchr(dec, '\0', (size_t)n) != NULL) {
            reply(s, RP_AUTH_FAILED, NULL);
            sasl_end(s);
            break;
        }
        memcpy(pw, dec, (size_t)n);
        pw[n] = '\0';
        snprintf(login, sizeof(login), "%s", s->sasl_user);
        auth_start_check(s, login, pw);
        break;
    default:
        sasl_end(s);
        break;
    }
    explicit_bzero(dec, sizeof(dec));
    explicit_bzero(pw, sizeof(pw));
}

static void
cmd_auth(struct pst_session *s, const struct pst_cmd *c)
{
    if (s->srv->auth == NULL || !s->lc->auth) {
        reply(s, RP_AUTH_NOT_ENABLED, NULL);
        return;
    }
    if (s->tls == NULL && !s->lc->auth_plaintext) {
        reply(s, RP_AUTH_ENCRYPT, NULL);
        return;
    }
    if (!s->esmtp) {
        reply(s, RP_NEED_HELO, NULL);
        return;
    }
    if (s->auth_login) {
        reply(s, RP_AUTH_ALREADY, NULL);
        return;
    }
    if (s->in_mail) {
        reply(s, RP_AUTH_IN_MAIL, NULL);
        return;
    }
    const char *a = c->arg, *ir = NULL;
    size_t n = c->arg_len, mlen = 0, irlen = 0;
    while (mlen < n && a[mlen] != ' ')
        mlen++;
    if (mlen < n) {
        ir = a + mlen + 1;
        irlen = n - mlen - 1;
        while (irlen && ir[irlen - 1] == ' ')
            irlen--;
        if (irlen == 0)
            ir = NULL;
    }
    if (mlen == 5 && pst_strncaseeq(a, "PLAIN", 5)) {
        s->sasl = SASL_PLAIN;
    } else if (mlen == 5 && pst_strncaseeq(a, "LOGIN", 5)) {
        s->sasl = SASL_LOGIN_USER;
    } else {
        reply(s, RP_AUTH_MECH, NULL);
        return;
    }
    if (ir) {
        sasl_response(s, ir, irlen);
        return;
    }
    s->st = ST_AUTH;
    reply(s, RP_AUTH_CHALLENGE,
          s->sasl == SASL_PLAIN ? "" : "VXNlcm5hbWU6");  /* "Username:" */
}

void
pst_session_auth_done(void *arg, uint64_t sid, const char *login, bool ok)
{
    struct pst_server *srv = arg;
    struct pst_session *s = pst_strmap_get(srv->by_id, &sid, sizeof(sid));
    char q[300];
    if (s == NULL || s->closing || s->st != ST_AUTH_CHECK) {
        pst_debug("sess=%016" PRIx64 " event=auth_result_dropped", sid);
        return;
    }
    pst_log_quote(q, sizeof(q), login, strlen(login));
    pst_stats_auth(ok);
    if (ok) {
        s->auth_login = pst_xstrdup(login);
        SLOG(PST_LOG_INFO, s, "event=auth result=ok login=%s", q);
        reply(s, RP_AUTH_OK, NULL);
    } else {
        SLOG(PST_LOG_INFO, s, "event=auth result=failed login=%s ip=%s", q,
             s->ipstr);
        reply(s, RP_AUTH_FAILED, NULL);
    }
    s->st = ST_CMD;
    cmd_wait(s);
    process(s);
}

static void
cmd_starttls(struct pst_session *s, const struct pst_cmd *c)
{
    if (s->tls != NULL) {
        reply(s, RP_TLS_ACTIVE, NULL);
        return;
    }
    if (!starttls_offered(s)) {
        reply(s, RP_NOT_IMPLEMENTED, NULL);
        return;
    }
    if (c->arg_len) {
        reply(s, RP_SYNTAX_NOARG, "STARTTLS");
        return;
    }
    reply(s, RP_TLS_GO, NULL);
    s->tls_start = true;            /* process() stops and begins TLS */
}

static void
cmd_helo(struct pst_session *s, const struct pst_cmd *c, bool ehlo)
{
    size_t n = c->arg_len;
    while (n && c->arg[n - 1] == ' ')
        n--;
    if (n == 0) {
        reply(s, RP_SYNTAX_HELO, NULL);
        return;
    }
    txn_reset(s);
    bdat_refuse_end(s);
    free(s->helo);
    s->helo = sanitize_helo(c->arg, n);
    s->esmtp = ehlo;
    char q[300];
    SLOG(PST_LOG_INFO, s, "event=helo verb=%s name=%s",
         ehlo ? "EHLO" : "HELO",
         pst_log_quote(q, sizeof(q), c->arg, n));
    if (!filter_gate(s, PST_FP_HELO, s->helo, NULL)) {
        if (s->st != ST_FILTER) {   /* refused: no HELO given */
            free(s->helo);
            s->helo = NULL;
        }
        return;
    }
    if (!ehlo) {
        pst_tbuf_printf(&s->out, "250 %s\r\n", s->conf->hostname);
        return;
    }
    pst_tbuf_printf(&s->out,
                   "250-%s\r\n"
                   "250-PIPELINING\r\n"
                   "250-SIZE %" PRIu64 "\r\n"
                   "250-8BITMIME\r\n"
                   "250-SMTPUTF8\r\n"
                   "250-ENHANCEDSTATUSCODES\r\n"
                   "250-DSN\r\n",         /* reports: queue/dsn.c */
                   s->conf->hostname, s->conf->limits.message_size);
    if (starttls_offered(s))
        pst_tbuf_puts(&s->out, "250-STARTTLS\r\n");
    if (auth_offered(s))
        pst_tbuf_puts(&s->out, "250-AUTH PLAIN LOGIN\r\n");
    pst_tbuf_puts(&s->out, "250 CHUNKING\r\n");
}

/*
 * path_arg - the "FROM:<path> params" (MAIL) or "TO:<path> params" (RCPT)
 * argument: the path in *p and the parameters' text in *params, *plen.
 * On an error the reply is given and false returned.
 */
static bool
path_arg(struct pst_session *s, const struct pst_cmd *c, bool mail,
         struct pst_path *p, const char **params, size_t *plen)
{
    const char *a = c->arg;
    size_t n = c->arg_len, end;
    enum pst_reply syntax = mail ? RP_SYNTAX_MAIL : RP_SYNTAX_RCPT;

    if (!strip_keyword(&a, &n, mail ? "FROM:" : "TO:")) {
        reply(s, syntax, NULL);
        return false;
    }
    enum pst_path_err pe = pst_path_parse(a, n, p, mail, !mail, &end);
    if (pe == PST_PATH_SYNTAX) {
        reply(s, n && a[0] == '<' ? (mail ? RP_BAD_SENDER : RP_BAD_RCPT)
                                  : syntax, NULL);
        return false;
    }
    if (pe != PST_PATH_OK) {
        reply(s, mail ? RP_SENDER_TOO_LONG : RP_RCPT_TOO_LONG,
              path_err_text(pe));
        return false;
    }
    if (end < n && a[end] != ' ') {
        reply(s, syntax, NULL);
        return false;
    }
    *params = a + end;
    *plen = n - end;
    return true;
}

/* params_ok - reply to a parameter error; true when there is none. */
static bool
params_ok(struct pst_session *s, enum pst_param_err e, const char *bad)
{
    if (e == PST_PARAM_OK)
        return true;
    if (e == PST_PARAM_UNKNOWN)
        reply(s, RP_PARAM_UNKNOWN, bad);
    else
        reply(s, RP_PARAM_BAD, NULL);
    return false;
}

static void
cmd_mail(struct pst_session *s, const struct pst_cmd *c)
{
    const char *a;
    size_t n;
    struct pst_path p;
    struct pst_mail_params mp;
    char bad[64];

    bdat_refuse_end(s);
    if (!s->helo) {
        reply(s, RP_NEED_HELO, NULL);
        return;
    }
    if (s->in_mail) {
        reply(s, RP_NESTED_MAIL, NULL);
        return;
    }
    if (!path_arg(s, c, true, &p, &a, &n) ||
        !params_ok(s, pst_mail_params_parse(a, n, &mp, bad, sizeof(bad)), bad))
        return;
    if (!s->esmtp && (mp.size || mp.body || mp.smtputf8 || mp.ret ||
                      mp.envid[0] || mp.has_auth)) {
        reply(s, RP_PARAM_UNKNOWN, "parameters need EHLO");
        return;
    }
    if (mp.body == PST_BODY_BINARYMIME) {
        reply(s, RP_PARAM_UNKNOWN, "BODY=BINARYMIME");
        return;
    }
    if (mp.size > s->conf->limits.message_size) {
        reply(s, RP_SIZE_EXCEEDED, NULL);
        return;
    }
    if (p.utf8 && !mp.smtputf8) {
        reply(s, RP_NEED_SMTPUTF8, NULL);
        return;
    }
    if (s->lc->auth_required && s->auth_login == NULL && !s->trusted) {
        reply(s, RP_AUTH_REQUIRED, NULL);
        return;
    }
    if (s->auth_login && s->srv->auth &&
        !pst_auth_sender_ok(s->srv->auth, s->auth_login, p.addr)) {
        char q[300];
        SLOG(PST_LOG_INFO, s, "event=reject phase=mail from=%s code=553 "
             "reason=sender_login login=%s",
             pst_log_quote(q, sizeof(q), p.addr, strlen(p.addr)),
             s->auth_login);
        pst_log_quote(q, sizeof(q), s->auth_login, strlen(s->auth_login));
        reply(s, RP_SENDER_NOT_OWNED, s->auth_login);
        return;
    }
    if (!space_ok(s, mp.size)) {
        SLOG(PST_LOG_WARN, s, "event=reject phase=mail code=452 "
             "reason=disk_space size=%" PRIu64, mp.size);
        reply(s, RP_NO_SPACE, NULL);
        return;
    }
    pst_envelope_free(&s->env);     /* client facts filters were shown */
    s->env.sender = pst_xstrdup(p.addr);
    s->env.size_param = mp.size;
    s->env.body = mp.body;
    s->env.smtputf8 = mp.smtputf8;
    s->env.ret = mp.ret;
    s->env.envid = mp.envid[0] ? pst_xstrdup(mp.envid) : NULL;
    s->in_mail = true;
    char q[300];
    SLOG(PST_LOG_INFO, s, "event=mail from=%s size=%" PRIu64,
         pst_log_quote(q, sizeof(q), p.addr, strlen(p.addr)), mp.size);
    if (s->fs && s->st != ST_FILTER && !s->fready)
        pst_fsess_msg_begin(s->fs, s->env.smtputf8);
    const char *nsender;
    if (!filter_gate(s, PST_FP_MAIL, p.addr, &nsender)) {
        if (s->st == ST_FILTER) {   /* pending: MAIL runs again later */
            s->in_mail = false;     /* (the envelope stays for filters) */
        } else {
            txn_reset(s);           /* refused */
        }
        return;
    }
    if (nsender) {
        free(s->env.sender);
        s->env.sender = pst_xstrdup(nsender);
    }
    reply(s, RP_MAIL_OK, NULL);
}

/* may_relay - the client may send to any domain. */
static bool
may_relay(const struct pst_session *s)
{
    return s->trusted || s->auth_login != NULL;
}

static void
cmd_rcpt(struct pst_session *s, const struct pst_cmd *c)
{
    const char *a;
    size_t n;
    struct pst_path p;
    struct pst_rcpt_params rp;
    char bad[64], q[300];

    if (!s->in_mail) {
        reply(s, s->helo ? RP_NEED_MAIL : RP_NEED_HELO, NULL);
        return;
    }
    s->rcpt_tried++;
    if (!path_arg(s, c, false, &p, &a, &n) ||
        !params_ok(s, pst_rcpt_params_parse(a, n, &rp, bad, sizeof(bad)), bad))
        return;
    if (!s->esmtp && (rp.notify || rp.orcpt[0])) {
        reply(s, RP_PARAM_UNKNOWN, "parameters need EHLO");
        return;
    }
    if (p.utf8 && !s->env.smtputf8) {
        reply(s, RP_NEED_SMTPUTF8, NULL);
        return;
    }
    if (s->env.nrcpts >= s->conf->limits.recipients) {
        reply(s, RP_TOO_MANY_RCPTS, NULL);
        return;
    }
    if (!p.is_postmaster) {
        enum pst_rcpt_verdict v = pst_policy_rcpt(
            s->gen->policy, p.addr, p.domain_literal, may_relay(s));
        if (v != PST_RCPT_ACCEPT) {
            bool relay = v == PST_RCPT_RELAY_DENIED;
            char arg[PST_PATH_MAX + 3];
            SLOG(PST_LOG_INFO, s, "event=reject phase=rcpt to=%s code=%d "
                 "reason=%s", pst_log_quote(q, sizeof(q), p.addr,
                                            strlen(p.addr)),
                 relay ? 554 : 550, relay ? "relay" : "unknown_user");
            snprintf(arg, sizeof(arg), "<%s>", p.addr);
            reply(s, relay ? RP_RELAY_DENIED : RP_UNKNOWN_USER, arg);
            return;
        }
    }
    const char *nrcpt;
    if (!filter_gate(s, PST_FP_RCPT, p.addr, &nrcpt))
        return;
    struct pst_rcpt *r = pst_envelope_add_rcpt(&s->env,
                                               nrcpt ? nrcpt : p.addr);
    r->notify = rp.notify;
    r->orcpt = rp.orcpt[0] ? pst_xstrdup(rp.orcpt) : NULL;
    if (nrcpt && r->orcpt == NULL)  /* routed elsewhere: keep the original */
        r->orcpt = pst_sf_orcpt(p.addr);
    SLOG(PST_LOG_INFO, s, "event=rcpt to=%s",
         pst_log_quote(q, sizeof(q), p.addr, strlen(p.addr)));
    reply(s, RP_RCPT_OK, NULL);
}

/* Checks shared by DATA and BDAT before any text is taken. */
static bool
data_ready(struct pst_session *s)
{
    if (!s->in_mail) {
        reply(s, s->helo ? RP_NEED_MAIL : RP_NEED_HELO, NULL);
        return false;
    }
    if (s->env.nrcpts == 0) {
        reply(s, s->rcpt_tried ? RP_NO_VALID_RCPT : RP_NEED_RCPT, NULL);
        return false;
    }
    return true;
}

/* RFC 3848 and RFC 6531 protocol names for Received. */
static const char *
proto_name(const struct pst_session *s)
{
    static const char *const names[2][2][2] = {
        /* [utf8][tls][auth] */
        {{"ESMTP", "ESMTPA"}, {"ESMTPS", "ESMTPSA"}},
        {{"UTF8SMTP", "UTF8SMTPA"}, {"UTF8SMTPS", "UTF8SMTPSA"}},
    };
    bool auth = s->auth_login != NULL;
    if (!s->esmtp && !s->tls && !auth)
        return "SMTP";
    return names[s->env.smtputf8][s->tls != NULL][auth];
}

/* The stored text of the message, for filters that read parts' content
 * (filters/chain.h pst_fsess_msg_stored). */
static struct pst_textsrc *
stored_text(void *arg)
{
    struct pst_session *s = arg;
    return s->msg ? pst_spool_msg_text(s->msg) : NULL;
}

/* Open the spool file and write our Received field: the first bytes of
 * every stored message. On a failure the reply is given and *why says
 * which. */
static bool
message_open(struct pst_session *s, enum pst_reply *why)
{
    char hdr[2048];
    int rc = pst_spool_msg_new(s->srv->spool, &s->msg, s->qid);
    if (rc < 0) {
        s->msg = NULL;
        pst_warn("sess=%016" PRIx64 " event=spool_error op=create err=%s",
                 s->id, strerror(-rc));
        *why = rc == -ENOSPC ? RP_NO_SPACE : RP_WRITE_ERROR;
        reply(s, *why, NULL);
        return false;
    }
    if (s->fs)
        pst_fsess_msg_stored(s->fs, s->qid, stored_text, s);
    free(s->env.helo);              /* filter_env may have set them */
    free(s->env.client_name);
    s->env.helo = pst_xstrdup(s->helo);
    s->env.client_ip = s->ip;
    s->env.trusted = s->trusted;
    s->env.client_name = pst_xstrdup(s->client_name);
    if (s->auth_login && s->env.auth_login == NULL)
        s->env.auth_login = pst_xstrdup(s->auth_login);
    s->env.proto = pst_xstrdup(proto_name(s));
    s->env.arrival = time(NULL);
    size_t n = pst_received_format(hdr, sizeof(hdr), &s->env,
                                   s->conf->hostname, s->qid, s->tls_desc);
    pst_dot_init(&s->dot, false, s->conf->limits.text_line_max);
    if (s->scratch == NULL)
        s->scratch = pst_xmalloc(2 * PST_IN_CAP + 2);
    memset(&s->hs, 0, sizeof(s->hs));
    s->hs.bol = true;
    s->fail = MF_NONE;
    s->space_checked = 0;
    s->data_deadline = uv_now(s->srv->loop) +
                       (uint64_t)s->conf->limits.data_timeout * 1000;
    rc = pst_spool_msg_write(s->msg, hdr, n);
    if (rc < 0)
        s->fail = rc == -ENOSPC ? MF_NOSPACE : MF_WRITE;
    if (s->fs)
        pst_fsess_msg_data(s->fs, hdr, n);
    /* with filters, the chain's parser builds the one model */
    if (s->conf->mime.policy == PST_MIME_POLICY_REJECT && s->fs == NULL) {
        s->mp = pst_mime_parser_new(&s->conf->mime.limits, NULL, NULL);
        pst_mime_feed(s->mp, hdr, n);
    }
    SLOG(PST_LOG_INFO, s, "event=data proto=%s rcpts=%zu", s->env.proto,
         s->env.nrcpts);
    return true;
}

/*
 * Scan the header section of the stored text: count Received fields (hop
 * limit) and note Date and Message-ID. Returns the offset in p of the
 * blank line that ends the header when it is in this piece, else n.
 */
static size_t
hdrscan_feed(struct hdrscan *h, const char *p, size_t n)
{
    for (size_t i = 0; i < n && !h->done; i++) {
        char c = p[i];
        if (h->bol) {
            h->bol = false;
            h->plen = 0;
            if (c == '\r' || c == '\n') {   /* blank line: end of header */
                h->done = true;
                return i;
            }
        }
        if (c == '\n') {
            h->bol = true;
            continue;
        }
        if (h->plen < sizeof(h->prefix)) {
            h->prefix[h->plen++] = (char)pst_tolower((unsigned char)c);
            if (h->plen == 5 && memcmp(h->prefix, "date:", 5) == 0)
                h->date = true;
            else if (h->plen == 9 && memcmp(h->prefix, "received:", 9) == 0)
                h->received++;
            else if (h->plen == 11 &&
                     memcmp(h->prefix, "message-id:", 11) == 0)
                h->msgid = true;
        }
    }
    return n;
}

/* submission - a message from an application or a user agent: its
 * header may be completed (smtp.add_missing_headers). */
static bool
submission(const struct pst_session *s)
{
    return s->conf->smtp.add_missing_headers &&
           (s->auth_login != NULL || s->trusted);
}

/*
 * add_missing_fields - RFC 6409 8.1, 8.3: for a submission (an
 * authenticated or trusted client) add Date and Message-ID when the
 * message has none. Written where the header ends.
 */
static void
add_missing_fields(struct pst_session *s)
{
    char f[PST_RECEIVED_MAX];
    size_t n = 0;
    if (s->fail != MF_NONE || !submission(s))
        return;
    if (!s->hs.date) {
        char date[64];
        pst_rfc5322_date(date, sizeof(date), s->env.arrival);
        n += (size_t)snprintf(f + n, sizeof(f) - n, "Date: %s\r\n", date);
    }
    if (!s->hs.msgid)
        n += (size_t)snprintf(f + n, sizeof(f) - n,
                              "Message-ID: <%lld.%s@%s>\r\n",
                              (long long)s->env.arrival, s->qid,
                              s->conf->hostname);
    s->hs.date = s->hs.msgid = true;
    if (n == 0)
        return;
    int rc = pst_spool_msg_write(s->msg, f, n);
    if (rc == 0 && s->fs)           /* filters see what is stored */
        pst_fsess_msg_data(s->fs, f, n);
    if (rc == 0 && s->mp)           /* and so does the message model */
        pst_mime_feed(s->mp, f, n);
    if (rc < 0)
        s->fail = rc == -ENOSPC ? MF_NOSPACE : MF_WRITE;
    else
        SLOG(PST_LOG_INFO, s, "event=header_added fields=%s%s",
             n && f[0] == 'D' ? "date" : "",
             strstr(f, "Message-ID") ? (f[0] == 'D' ? ",message-id"
                                                      : "message-id")
                                     : "");
}

static void message_text_raw(struct pst_session *s, const char *p, size_t n);

/* Text decoded from DATA or BDAT: limits, hop count, then the spool. */
static void
message_text(struct pst_session *s, const char *p, size_t n)
{
    if (n == 0 || s->fail != MF_NONE)
        return;
    if (!s->hs.done) {
        size_t end = hdrscan_feed(&s->hs, p, n);
        if (s->hs.received > s->conf->limits.hops) {
            s->fail = MF_HOPS;
            return;
        }
        if (s->hs.done && !(s->hs.date && s->hs.msgid) && submission(s)) {
            /* the header ends in this piece: fields go before the blank
             * line */
            if (end > 0) {
                message_text_raw(s, p, end);
                if (s->fail != MF_NONE)
                    return;
            }
            add_missing_fields(s);
            p += end;
            n -= end;
            if (n == 0 || s->fail != MF_NONE)
                return;
        }
    }
    message_text_raw(s, p, n);
}

/* Limits, then the spool, for text past the header scan. */
static void
message_text_raw(struct pst_session *s, const char *p, size_t n)
{
    if (s->dot.out_bytes > s->conf->limits.message_size) {
        s->fail = MF_TOO_BIG;
        return;
    }
    /* the floor applies while the text streams, not only at MAIL: look
     * again every PST_SPACE_CHECK octets (one statvfs each) */
    if (s->dot.out_bytes - s->space_checked >= PST_SPACE_CHECK) {
        s->space_checked = s->dot.out_bytes;
        if (!space_ok(s, 0)) {
            SLOG(PST_LOG_WARN, s, "event=disk_space_low bytes=%" PRIu64,
                 s->dot.out_bytes);
            s->fail = MF_NOSPACE;
            return;
        }
    }
    int rc = pst_spool_msg_write(s->msg, p, n);
    if (rc == 0 && s->fs)
        pst_fsess_msg_data(s->fs, p, n);
    if (rc == 0 && s->mp)
        pst_mime_feed(s->mp, p, n);
    if (rc < 0) {
        pst_warn("sess=%016" PRIx64 " msg=%s event=spool_error op=write "
                 "err=%s", s->id, s->qid, strerror(-rc));
        s->fail = rc == -ENOSPC ? MF_NOSPACE : MF_WRITE;
    }
}

static void
on_commit(void *arg, int status)
{
    struct pst_session *s = arg;
    s->msg = NULL;                  /* the spool owns and frees it */
    if (status == 0) {
        SLOG(PST_LOG_INFO, s, "event=status result=queued code=250 "
             "size=%" PRIu64 " rcpts=%zu", s->dot.out_bytes, s->env.nrcpts);
        reply(s, RP_QUEUED, s->qid);
        pst_stats_message(PST_MSG_ACCEPTED, s->held ? "quarantined" : "queued",
                          s->dot.out_bytes);
        pst_stats_accept_latency(pst_monotonic_us() - s->eod_us);
    } else {
        pst_stats_message(PST_MSG_TEMPFAILED,
                          status == -ENOSPC ? "disk_full" : "commit",
                          s->dot.out_bytes);
        SLOG(PST_LOG_WARN, s, "event=status result=tempfail code=%d "
             "reason=commit err=\"%s\"", status == -ENOSPC ? 452 : 451,
             strerror(-status));
        reply(s, status == -ENOSPC ? RP_NO_SPACE : RP_WRITE_ERROR, NULL);
    }
    s->st = ST_CMD;
    cmd_wait(s);
    txn_reset(s);
    if (s->closing) {
        /* the client left while we synced; its handles may be closed */
        if (s->handles == 0)
            session_free(s);
        return;
    }
    process(s);
}

/* The end of the text: refuse it, or commit it and wait. */
static void
message_end(struct pst_session *s)
{
    static const enum pst_reply fail_reply[] = {
        [MF_TOO_BIG] = RP_SIZE_EXCEEDED, [MF_LONG_LINE] = RP_LINE_TOO_LONG_DATA,
        [MF_BARE_NEWLINE] = RP_BARE_NEWLINE, [MF_HOPS] = RP_TOO_MANY_HOPS,
        [MF_WRITE] = RP_WRITE_ERROR, [MF_NOSPACE] = RP_NO_SPACE,
        [MF_MIME_LIMIT] = RP_MIME_LIMIT,
    };
    static const char *const fail_name[] = {
        [MF_TOO_BIG] = "size", [MF_LONG_LINE] = "line_length",
        [MF_BARE_NEWLINE] = "bare_newline", [MF_HOPS] = "hops",
        [MF_WRITE] = "write_error", [MF_NOSPACE] = "disk_full",
        [MF_MIME_LIMIT] = "mime_limits",
    };
    if (s->eod_us == 0)
        s->eod_us = pst_monotonic_us();
    if (s->fail == MF_NONE && !s->hs.done && submission(s))
        add_missing_fields(s);      /* a message that is all header */
    if (s->fail == MF_NONE && (s->dot.flags & PST_DOT_LONG_LINE))
        s->fail = MF_LONG_LINE;
    if (s->fail == MF_NONE && (s->dot.flags & PST_DOT_BARE) &&
        s->conf->smtp.bare_newline == PST_BARE_REJECT)
        s->fail = MF_BARE_NEWLINE;
    if (s->conf->mime.policy == PST_MIME_POLICY_REJECT) {
        struct pst_msg *own = s->mp ? pst_mime_finish(s->mp) : NULL;
        const struct pst_msg *m = own ? own
                                  : s->fs ? pst_fsess_msg_model(s->fs) : NULL;
        s->mp = NULL;
        if (m && s->fail == MF_NONE && (m->flags & PST_MIME_F_LIMITS)) {
            char names[192] = "";
            for (unsigned b = 1; b <= PST_MIME_F_LIMITS; b <<= 1)
                if (m->flags & b) {
                    if (names[0])
                        strcat(names, ",");
                    strcat(names, pst_mime_flag_name(b));
                }
            s->fail = MF_MIME_LIMIT;
            SLOG(PST_LOG_INFO, s, "event=mime_limits flags=%s", names);
        }
        pst_msg_free(own);
    }
    if (s->fail != MF_NONE) {
        enum pst_reply r = fail_reply[s->fail];
        bool more = s->bdat_used && !s->bdat_last;
        SLOG(PST_LOG_INFO, s, "event=status result=rejected phase=data "
             "code=%d reason=%s", pst_reply_code(r), fail_name[s->fail]);
        pst_stats_message(pst_reply_code(r) / 100 == 4 ? PST_MSG_TEMPFAILED
                                                        : PST_MSG_REFUSED,
                          fail_name[s->fail], s->dot.out_bytes);
        reply(s, r, NULL);
        s->st = ST_CMD;
        cmd_wait(s);
        txn_reset(s);
        if (more)                   /* chunks may follow in the pipeline */
            bdat_refuse(s, r);
        return;
    }
    if (s->dot.flags & PST_DOT_BARE)
        SLOG(PST_LOG_INFO, s, "event=bare_newline action=normalized%s", "");
    if (!filter_gate(s, PST_FP_EOM, NULL, NULL))
        return;                     /* refused, discarded, or pending */
    s->st = ST_COMMIT;
    struct pst_spool_msg *m = s->msg;
    pst_spool_msg_commit(m, &s->env, on_commit, s);
}

static void
cmd_data(struct pst_session *s, const struct pst_cmd *c)
{
    if (c->arg_len) {
        reply(s, RP_SYNTAX_NOARG, "DATA");
        return;
    }
    if (!data_ready(s))
        return;
    if (s->bdat_used) {
        reply(s, RP_DATA_AFTER_BDAT, NULL);
        return;
    }
    enum pst_reply why;
    if (!message_open(s, &why))
        return;
    s->data_used = true;
    reply(s, RP_DATA_GO, NULL);
    s->st = ST_DATA;
}

/*
 * bdat_unreadable - a BDAT line whose size cannot be read: the client is
 * sending a chunk whose end cannot be found, so nothing after this line
 * can safely be read as a command. Say so (421, so the client keeps its
 * message) and close.
 */
static void
bdat_unreadable(struct pst_session *s, const char *line, size_t len)
{
    char q[80];
    SLOG(PST_LOG_INFO, s, "event=bdat_unreadable line=%s",
         pst_log_quote(q, sizeof(q), line, PST_MIN(len, 40)));
    reply(s, RP_BDAT_NO_SIZE, s->conf->hostname);
    s->quitting = true;
}

static void
cmd_bdat(struct pst_session *s, const struct pst_cmd *c, const char *line,
         size_t len)
{
    uint64_t size;
    bool last;
    enum pst_bdat_form f = pst_bdat_parse(c->arg, c->arg_len, &size, &last);

    if (f == PST_BDAT_NO_SIZE) {
        bdat_unreadable(s, line, len);
        return;
    }
    bool discard = true;
    if (f == PST_BDAT_MALFORMED || len + 2 > pst_cmd_line_max(c->verb)) {
        bool open = s->in_mail;
        reply(s, RP_SYNTAX_BDAT, NULL);
        txn_reset(s);               /* a transaction has failed */
        if (open && !last)
            bdat_refuse(s, RP_SYNTAX_BDAT);
    } else if (s->bdat_refusing) {
        reply(s, s->bdat_refusal, NULL);
    } else if (s->bdat_used) {
        discard = false;            /* the next chunk of the message */
    } else if (s->data_used) {
        reply(s, RP_BDAT_AFTER_DATA, NULL);
    } else if (data_ready(s)) {
        enum pst_reply why;
        if (message_open(s, &why)) {
            s->bdat_used = true;
            discard = false;
            pst_dot_init(&s->dot, true, s->conf->limits.text_line_max);
        } else {
            txn_reset(s);           /* the first chunk is lost */
            if (!last)
                bdat_refuse(s, why);
        }
    }
    /* Whatever the answer, the chunk's octets follow: read them by
     * length so none is ever taken as a command. */
    s->st = ST_BDAT;
    s->bdat_left = size;
    s->bdat_last = last;
    s->bdat_discard = discard;
    if (discard)                    /* timed on its own, not a message's */
        s->data_deadline = uv_now(s->srv->loop) +
                           (uint64_t)s->conf->limits.data_timeout * 1000;
}

/* The envelope's client facts, for filters that run before the message
 * opens (message_open sets them again). */
static void
filter_env(struct pst_session *s)
{
    s->env.client_ip = s->ip;
    s->env.trusted = s->trusted;
    if (s->env.auth_login == NULL && s->auth_login != NULL)
        s->env.auth_login = pst_xstrdup(s->auth_login);
    if (s->env.client_name == NULL && s->client_name != NULL)
        s->env.client_name = pst_xstrdup(s->client_name);
    if (s->env.helo == NULL && s->helo != NULL)
        s->env.helo = pst_xstrdup(s->helo);
}

/*
 * filter_gate - run the filter phase ph (arg: HELO name, sender or
 * recipient) at the point where the command would succeed. Returns true
 * to go on (*newaddr: a rewritten sender or recipient, or NULL), false
 * when the filters refused (the reply is written) or their verdict is
 * pending: then the session stops in ST_FILTER, and on_filter_verdict runs
 * the command again with the verdict in hand (fready), so each command
 * keeps one code path.
 */
static bool
filter_gate(struct pst_session *s, enum pst_fphase ph, const char *arg,
            const char **newaddr)
{
    struct pst_fres r;
    if (newaddr)
        *newaddr = NULL;
    if (s->fs == NULL)
        return true;
    if (s->fready) {
        s->fready = false;
        r = s->fres;
    } else {
        filter_env(s);
        int rc = pst_fsess_run(s->fs, ph, arg, &r);
        if (rc == 1) {
            s->fstep = ph;
            s->fst_saved = s->st;
            s->st = ST_FILTER;
            free(s->fline);
            s->fline = NULL;        /* the command, to run it again */
            if (ph == PST_FP_HELO || ph == PST_FP_MAIL || ph == PST_FP_RCPT)
                s->fline = pst_xstrndup(s->cur_line, s->cur_len);
            s->fline_len = s->cur_len;
            return false;
        }
        if (rc < 0)
            pst_sf_internal_error(&r);
    }
    switch (r.verdict) {
    case PST_REJECT:
    case PST_TEMPFAIL:
        SLOG(PST_LOG_INFO, s, "event=reject phase=%s filter=%s code=%d",
             pst_sf_phase_name(ph), r.filter ? r.filter : "-", r.code);
        pst_sf_reply(&s->out, &r);
        s->errors++;
        if (ph == PST_FP_CONNECT)
            s->quitting = true;
        if (ph == PST_FP_EOM) {
            pst_stats_message(r.verdict == PST_REJECT ? PST_MSG_REFUSED
                                                      : PST_MSG_TEMPFAILED,
                              "filter", s->dot.out_bytes);
            s->st = ST_CMD;
            txn_reset(s);
        }
        return false;
    case PST_DISCARD:
        SLOG(PST_LOG_INFO, s, "event=discarded filter=%s rcpts=%zu",
             r.filter ? r.filter : "-", s->env.nrcpts);
        pst_stats_message(PST_MSG_ACCEPTED, "discarded", s->dot.out_bytes);
        reply(s, RP_QUEUED, s->qid);
        s->st = ST_CMD;
        txn_reset(s);
        return false;
    case PST_QUARANTINE: {
        char why[120];
        snprintf(why, sizeof(why), "quarantined by filter %s",
                 r.filter ? r.filter : "-");
        pst_spool_msg_set_hold(s->msg, why);
        s->held = true;
        SLOG(PST_LOG_INFO, s, "event=quarantine filter=%s",
             r.filter ? r.filter : "-");
        break;
    }
    default:
        break;
    }
    if (ph == PST_FP_EOM) {
        struct pst_tbuf b = {0};
        int e = pst_fsess_edits(s->fs, &b);
        if (e == 1)
            e = pst_spool_msg_set_edits(s->msg, b.p, b.len);
        pst_tbuf_free(&b);
        if (e < 0) {
            pst_sf_internal_error(&r);
            pst_sf_reply(&s->out, &r);
            pst_stats_message(PST_MSG_TEMPFAILED, "filter_edits",
                              s->dot.out_bytes);
            s->st = ST_CMD;
            txn_reset(s);
            return false;
        }
        if (r.new_sender) {
            free(s->env.sender);
            s->env.sender = pst_xstrdup(r.new_sender);
        }
    }
    if (newaddr)
        *newaddr = ph == PST_FP_MAIL ? r.new_sender : r.new_rcpt;
    return true;
}

static void cmd_dispatch(struct pst_session *s, const char *line,
                         size_t len);

/* A pending verdict arrived: finish what waited for it, then go on with
 * whatever the client pipelined behind. */
static void
on_filter_verdict(void *arg, const struct pst_fres *r)
{
    struct pst_session *s = arg;
    if (s->closing || s->st != ST_FILTER)
        return;
    s->st = s->fst_saved;
    s->fres = *r;
    s->fready = true;
    switch (s->fstep) {
    case PST_FP_CONNECT:
        if (filter_gate(s, PST_FP_CONNECT, NULL, NULL))
            send_greeting(s);
        break;
    case PST_FP_EOM:
        message_end(s);
        break;
    case PST_FP_HEADERS:            /* the chain keeps it: go on reading */
        s->fready = false;
        break;
    default:                        /* HELO, MAIL, RCPT: the command again */
        if (s->fstep == PST_FP_RCPT && s->rcpt_tried > 0)
            s->rcpt_tried--;
        cmd_dispatch(s, s->fline ? s->fline : "", s->fline_len);
        break;
    }
    s->fready = false;
    process(s);
}

static void
cmd_dispatch(struct pst_session *s, const char *line, size_t len)
{
    struct pst_cmd c;
    s->cur_line = line;
    s->cur_len = len;
    pst_cmd_parse(line, len, &c);
    if (len + 2 > pst_cmd_line_max(c.verb) && c.verb != PST_CMD_BDAT) {
        reply(s, RP_LINE_TOO_LONG, NULL);   /* BDAT: its chunk follows */
        return;
    }
    switch (c.verb) {
    case PST_CMD_EHLO:
        cmd_helo(s, &c, true);
        break;
    case PST_CMD_HELO:
        cmd_helo(s, &c, false);
        break;
    case PST_CMD_MAIL:
        cmd_mail(s, &c);
        break;
    case PST_CMD_RCPT:
        cmd_rcpt(s, &c);
        break;
    case PST_CMD_DATA:
        cmd_data(s, &c);
        break;
    case PST_CMD_BDAT:
        cmd_bdat(s, &c, line, len);
        break;
    case PST_CMD_RSET:
        if (c.arg_len) {
            reply(s, RP_SYNTAX_NOARG, "RSET");
            break;
        }
        txn_reset(s);
        bdat_refuse_end(s);
        reply(s, RP_OK, NULL);
        break;
    case PST_CMD_NOOP:
        reply(s, RP_OK, NULL);
        break;
    case PST_CMD_QUIT:
        reply(s, RP_BYE, NULL);
        s->quitting = true;
        break;
    case PST_CMD_VRFY:
        if (c.arg_len == 0)
            reply(s, RP_SYNTAX_VRFY, NULL);
        else
            reply(s, RP_VRFY, NULL);
        break;
    case PST_CMD_HELP:
        reply(s, RP_HELP, NULL);
        break;
    case PST_CMD_STARTTLS:
        cmd_starttls(s, &c);
        break;
    case PST_CMD_AUTH:
        cmd_auth(s, &c);
        break;
    case PST_CMD_EXPN:
        reply(s, RP_NOT_IMPLEMENTED, NULL);
        break;
    default: {
        char q[80];
        SLOG(PST_LOG_INFO, s, "event=unknown_command line=%s",
             pst_log_quote(q, sizeof(q), line, PST_MIN(len, 32)));
        reply(s, RP_UNKNOWN_CMD, NULL);
        break;
    }
    }
}

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
    case LINE_TOO_LONG: {
        struct pst_cmd c;
        pst_cmd_parse(line, PST_MIN(len, 8), &c);
        if (c.verb == PST_CMD_BDAT) /* a chunk of unknown size follows */
            bdat_unreadable(s, line, len);
        else
            reply(s, RP_LINE_TOO_LONG, NULL);
        return true;
    }
    default:
        cmd_dispatch(s, line, len);
        return true;
    }
}

/*
 * headers_gate - the header is complete while the text still streams: run
 * the filters' headers phase now, so a slow check overlaps the upload. A
 * pending verdict pauses the data (ST_FILTER); a refusal is kept by the
 * chain and given after the final dot. At the end of a chunk that also
 * ends the message the end-of-message run covers the header instead.
 */
static void
headers_gate(struct pst_session *s)
{
    struct pst_fres r;
    if (s->fs == NULL || s->fail != MF_NONE ||
        !pst_fsess_headers_ready(s->fs))
        return;
    filter_env(s);
    if (pst_fsess_run(s->fs, PST_FP_HEADERS, NULL, &r) == 1) {
        s->fstep = PST_FP_HEADERS;
        s->fst_saved = s->st;
        s->st = ST_FILTER;
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
        reply(s, RP_AUTH_LINE_TOO_LONG, NULL);
        sasl_end(s);
        return true;
    default:
        sasl_response(s, line, len);
        explicit_bzero(line, len);  /* credentials leave the buffer */
        return true;
    }
}

static bool
step_data(struct pst_session *s)
{
    size_t avail = s->in_len - s->in_pos, olen;
    bool done;
    if (avail == 0)
        return false;
    size_t used = pst_dot_feed(&s->dot, s->in + s->in_pos, avail, s->scratch,
                               &olen, &done);
    s->in_pos += used;
    message_text(s, s->scratch, olen);
    if (done)
        message_end(s);
    else
        headers_gate(s);
    return true;
}

static bool
step_bdat(struct pst_session *s)
{
    size_t avail = s->in_len - s->in_pos, olen = 0;
    bool done;
    size_t take = (size_t)PST_MIN((uint64_t)avail, s->bdat_left);

    if (take > 0) {
        if (!s->bdat_discard && s->msg) {
            pst_dot_feed(&s->dot, s->in + s->in_pos, take, s->scratch, &olen,
                         &done);
            message_text(s, s->scratch, olen);
        }
        s->in_pos += take;
        s->bdat_left -= take;
        s->bdat_octets += take;
    }
    if (s->bdat_left > 0) {
        headers_gate(s);
        return take > 0;
    }
    /* chunk complete */
    s->st = ST_CMD;
    cmd_wait(s);
    if (s->bdat_discard) {
        s->bdat_discard = false;
        if (s->bdat_last)
            bdat_refuse_end(s);
        return true;
    }
    if (!s->bdat_last) {
        char num[24];
        if (s->fail != MF_NONE) {
            /* refuse the transaction now; later chunks are discarded */
            message_end(s);
            return true;
        }
        snprintf(num, sizeof(num), "%" PRIu64, s->bdat_octets);
        reply(s, RP_BDAT_CHUNK, num);
        return true;
    }
    olen = pst_dot_finish(&s->dot, s->scratch);
    message_text(s, s->scratch, olen);
    message_end(s);
    return true;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b);

/* Read only when the input can be used: not while a commit is in flight,
 * the input buffer is full, or replies pile up unread (PIPELINING abuse). */
/* streaming - message text is arriving (or will, once a pending
 * headers-phase verdict is in): the input buffer is at its largest. */
static bool
streaming(const struct pst_session *s)
{
    enum sstate st = s->st == ST_FILTER ? s->fst_saved : s->st;
    return st == ST_DATA || st == ST_BDAT;
}

/* in_want - the input buffer's size for the session's state. */
static size_t
in_want(const struct pst_session *s)
{
    return streaming(s) ? PST_IN_CAP : PST_IN_SMALL;
}

/*
 * in_fit - size the input buffer for the state: grown while text streams,
 * small again once what it holds fits. A new buffer each time (not
 * realloc, which shrinks in place): the large one is freed whole, so the
 * next streaming session reuses it instead of leaving a hole per session.
 */
static void
in_fit(struct pst_session *s)
{
    size_t want = in_want(s);
    if (s->in_cap == want || (s->in_cap > want && s->in_len > want))
        return;
    char *in = pst_xmalloc(want);
    memcpy(in, s->in, s->in_len);
    free(s->in);
    s->in = in;
    s->in_cap = want;
}

static void
update_reading(struct pst_session *s)
{
    bool want = !s->closing && !s->quitting && s->st != ST_COMMIT &&
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
    s->st = ST_TLS;
    s->tls_deadline = uv_now(s->srv->loop) +
                      (uint64_t)s->conf->limits.tls_handshake_timeout * 1000;
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
    pst_stats_tls(true);
    char q[300];
    SLOG(PST_LOG_INFO, s, "event=tls version=%s cipher=%s bits=%d sni=%s",
         pst_tls_version(s->tls), pst_tls_cipher(s->tls), bits,
         sni ? pst_log_quote(q, sizeof(q), sni, strlen(sni)) : "-");
    s->st = ST_CMD;
    txn_reset(s);
    bdat_refuse_end(s);
    free(s->helo);
    s->helo = NULL;
    s->esmtp = false;
    free(s->auth_login);            /* a plaintext AUTH is forgotten too */
    s->auth_login = NULL;
    cmd_wait(s);
    if (s->lc->tls == PST_TLS_IMPLICIT) {
        if (s->tls_reject) {
            reply(s, RP_TOO_MANY_CONN, s->conf->hostname);
            s->quitting = true;
        } else if (filter_gate(s, PST_FP_CONNECT, NULL, NULL)) {
            send_greeting(s);
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
        pst_stats_tls(false);
        s->quitting = true;         /* close once the alert is out */
        if (s->out_inflight == 0)
            session_close(s, "TLS handshake failed");
        return;
    }
    tls_established(s);
}

static void
process(struct pst_session *s)
{
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
            reply(s, RP_TOO_MANY_ERRORS, s->conf->hostname);
            s->quitting = true;
            break;
        }
        if (s->draining && !s->in_mail && !s->skip_line &&
            (s->st == ST_CMD || s->st == ST_AUTH)) {
            /* draining, and no transaction open: goodbye */
            SLOG(PST_LOG_INFO, s, "event=drained code=421%s", "");
            reply(s, RP_SHUTDOWN, s->conf->hostname);
            s->quitting = true;
            break;
        }
        switch (s->st) {
        case ST_CMD:
            progress = step_command(s);
            break;
        case ST_DATA:
            progress = step_data(s);
            break;
        case ST_BDAT:
            progress = step_bdat(s);
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
    in_fit(s);
    flush(s);
    if (s->closing)
        return;
    if (s->tls_start) {
        s->tls_start = false;
        tls_begin(s);
    }
    if (s->quitting && s->out_inflight == 0) {
        session_close(s, "quit");
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
        size_t want = streaming(s) ? PST_TLS_CIN : PST_IN_SMALL;
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
    }
    process(s);
}

/* ---- lifecycle ---- */

static void
session_free(struct pst_session *s)
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
    free(s->auth_login);
    pst_envelope_free(&s->env);
    free(s->fline);
    pst_mime_parser_free(s->mp);
    pst_tbuf_free(&s->out);
    free(s->in);
    free(s->scratch);
    free(s->helo);
    free(s->client_name);
    free(s->ptr_name);
    pst_tls_free(s->tls);
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
        session_free(s);
}

static void
session_close(struct pst_session *s, const char *why)
{
    if (s->closing)
        return;
    s->closing = true;
    SLOG(PST_LOG_INFO, s, "event=disconnect reason=\"%s\" errors=%u", why,
         s->errors);
    if (s->st != ST_COMMIT)
        txn_reset(s);               /* no 250 given: the message goes */
    pst_dns_cancel(s->dnsq);
    s->dnsq = NULL;
    pst_fsess_free(s->fs);          /* a pending verdict is dropped */
    s->fs = NULL;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, on_close);
    uv_close((uv_handle_t *)&s->tcp, on_close);
    /* a commit in flight frees the session from on_commit; mark it so
     * on_close leaves it */
}

/* The client's name is known (or not): say hello (on an implicit-TLS
 * listener, once TLS is up) and start reading. */
static void
greet(struct pst_session *s, const char *name)
{
    s->client_name = pst_xstrdup(name);
    s->st = ST_CMD;
    cmd_wait(s);
    if (s->lc->tls == PST_TLS_IMPLICIT && s->gen->tls)
        tls_begin(s);               /* connect filters once TLS is up */
    else if (filter_gate(s, PST_FP_CONNECT, NULL, NULL))
        send_greeting(s);
    process(s);
}

static void
send_greeting(struct pst_session *s)
{
    char text[600];
    snprintf(text, sizeof(text), "%s ESMTP %s", s->conf->hostname,
             s->conf->smtp.banner ? s->conf->smtp.banner : "postern");
    reply(s, RP_GREETING, text);
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
    s->in = pst_xmalloc(PST_IN_SMALL);
    s->in_cap = PST_IN_SMALL;
    pst_tbuf_init(&s->out);
    pst_envelope_init(&s->env);
    s->st = ST_CMD;
    s->cmd_deadline = uv_now(srv->loop) +
                      (uint64_t)s->conf->limits.command_timeout * 1000;
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
    uv_tcp_nodelay(&s->tcp, 1);
    /* The kernel's send buffer is part of what a client that does not
     * read its replies can make us fill: left to autotuning it grows to
     * megabytes, each a run of commands we parse and answer for nothing.
     * Replies are small, so a fixed one bounds that work and memory. */
    int sndbuf = PST_SOCK_SNDBUF;
    uv_send_buffer_size((uv_handle_t *)&s->tcp, &sndbuf);
    pst_metric_add(l->m_total, 1);
    s->m_open = l->m_open;
    pst_metric_add(s->m_open, 1);
    pst_ip_str(&s->ip, s->ipstr, sizeof(s->ipstr));
    SLOG(PST_LOG_INFO, s, "event=connect ip=%s port=%u listener=%s:%u",
         s->ipstr,
         ntohs(ss.ss_family == AF_INET
                   ? ((struct sockaddr_in *)&ss)->sin_port
                   : ((struct sockaddr_in6 *)&ss)->sin6_port),
         l->lc->address, l->lc->port);
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
        if (l->lc->tls == PST_TLS_IMPLICIT && s->gen->tls) {
            /* the 421 can only be read over TLS */
            s->tls_reject = true;
            tls_begin(s);
        } else {
            reply(s, RP_TOO_MANY_CONN, s->conf->hostname);
            s->quitting = true;
        }
        process(s);
        return;
    }
    if (pst_chain_len(s->conf->filters) > 0) {
        s->fs = pst_fsess_new(srv->frt, s->conf->filters, s->id, &s->env,
                              on_filter_verdict, s);
        pst_fsess_set_mime_limits(s->fs, &s->conf->mime.limits);
        pst_fsess_want_mime(s->fs,
                            s->conf->mime.policy == PST_MIME_POLICY_REJECT);
    }
    if (s->conf->smtp.reverse_dns && srv->dns) {
        s->st = ST_LOOKUP;
        s->dnsq = pst_dns_ptr(srv->dns, &s->ip, on_ptr, s);
        if (s->dnsq)
            return;
        s->st = ST_CMD;
    }
    greet(s, "unknown");
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
        reply(s, RP_SHUTDOWN, s->conf->hostname);
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
    if (s->st == ST_LOOKUP) {
        /* not greeted yet: the 421 is the greeting (over TLS on an
         * implicit-TLS listener, where it is simpler to close) */
        pst_dns_cancel(s->dnsq);
        s->dnsq = NULL;
        s->st = ST_CMD;
        if (s->lc->tls == PST_TLS_IMPLICIT) {
            session_close(s, "drain");
            return;
        }
    }
    process(s);
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
