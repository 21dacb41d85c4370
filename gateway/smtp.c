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
 * Bounds: input buffer PST_IN_CAP (a command line is at most
 * PST_LINE_MAX_ANY; DATA never accumulates: it streams to the spool), the
 * decoded-output scratch 2*PST_IN_CAP+2, replies in flight PST_OUT_HIGH
 * before reading pauses. Memory per session is therefore about 256 KiB
 * whatever the message size.
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

#include "core/buf.h"
#include "core/dns.h"
#include "core/envelope.h"
#include "core/log.h"
#include "core/mime.h"
#include "core/util.h"
#include "filters/chain.h"
#include "gateway/dotstream.h"
#include "gateway/parse.h"
#include "gateway/received.h"
#include "gateway/smtp_filters.h"
#include "gateway/reply.h"
#include "queue/spool.h"

#define PST_IN_CAP (64 * 1024)
#define PST_OUT_MAX (1024 * 1024)   /* replies buffered before a write */
#define PST_OUT_HIGH (128 * 1024)   /* in flight before reading pauses */
#define PST_HELO_MAX 255

enum sstate {
    ST_LOOKUP,                      /* client name lookup before greeting */
    ST_CMD,                         /* waiting for a command line */
    ST_DATA,                        /* DATA text until CRLF.CRLF */
    ST_BDAT,                        /* bdat_left octets of chunk text */
    ST_COMMIT,                      /* spool commit in flight */
    ST_FILTER,                      /* a filter verdict is pending */
};

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
    char prefix[9];                 /* "received:" */
    unsigned received;
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
    struct pst_conf *conf;          /* referenced for the session's life */
    const struct pst_listener_conf *lc;
    uint64_t id;
    struct pst_ip ip;
    char ipstr[PST_IP_STRLEN];
    char *client_name;              /* confirmed reverse DNS or "unknown" */
    char *ptr_name;                 /* PTR answer awaiting confirmation */
    struct pst_dns_query *dnsq;     /* cancelled at close */
    char *helo;                     /* sanitised */
    bool esmtp;

    enum sstate st;
    unsigned handles;               /* open uv handles */
    bool closing;
    bool quitting;                  /* QUIT answered: close after flush */
    bool reading;
    unsigned errors;

    char *in;                       /* PST_IN_CAP */
    size_t in_pos, in_len;
    bool skip_line;                 /* discarding an overlong command */
    struct pst_buf out;             /* replies not yet written */
    size_t out_inflight;

    /* transaction */
    bool in_mail;
    unsigned rcpt_tried;
    struct pst_envelope env;
    struct pst_spool_msg *msg;
    char qid[PST_QID_LEN + 1];
    struct pst_dot dot;
    char *scratch;                  /* dotstream output, 2*PST_IN_CAP+2 */
    struct hdrscan hs;
    enum msg_fail fail;
    bool bdat_used, data_used;
    uint64_t bdat_left;
    uint64_t bdat_octets;           /* chunk octets received, for replies */
    bool bdat_last;
    bool bdat_discard;              /* chunk read only to keep framing */
    uint64_t data_deadline;         /* loop ms */

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
};

static void process(struct pst_session *s);
static void session_close(struct pst_session *s, const char *why);
static void session_free(struct pst_session *s);
static void arm_timer(struct pst_session *s);
static void update_reading(struct pst_session *s);
static void flush(struct pst_session *s);
static bool filter_gate(struct pst_session *s, enum pst_fphase ph,
                        const char *arg, const char **newaddr);
static void on_filter_verdict(void *arg, const struct pst_fres *r);
static void send_greeting(struct pst_session *s);
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
    if (s->out_inflight < PST_OUT_HIGH)
        process(s);
}

static void
flush(struct pst_session *s)
{
    if (s->out.len == 0 || s->closing)
        return;
    struct wreq *w = pst_xmalloc(sizeof(*w) + s->out.len);
    w->s = s;
    w->len = s->out.len;
    memcpy(w->data, s->out.data, s->out.len);
    s->out.len = 0;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
    int rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_write);
    if (rc < 0) {
        free(w);
        session_close(s, "write error");
        return;
    }
    s->out_inflight += w->len;
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
    SLOG(PST_LOG_INFO, s, "event=timeout state=%s",
         s->st == ST_CMD ? "command" : "data");
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
    if (s->st == ST_COMMIT || s->st == ST_LOOKUP || s->st == ST_FILTER) {
        uv_timer_stop(&s->timer);   /* the spool and the resolver bound these */
        return;
    }
    if (s->quitting) {              /* last reply must drain in time */
        uv_timer_start(&s->timer, on_timeout, 10000, 0);
        return;
    }
    if (s->st == ST_CMD) {
        ms = (uint64_t)s->conf->limits.command_timeout * 1000;
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
    s->in_mail = false;
    s->rcpt_tried = 0;
    s->qid[0] = '\0';
    s->fail = MF_NONE;
    s->bdat_used = s->data_used = false;
    s->bdat_left = 0;
    s->bdat_octets = 0;
    s->bdat_last = false;
}

static bool
client_trusted(const struct pst_session *s)
{
    const struct pst_relay_conf *r = &s->conf->relay;
    for (size_t i = 0; i < r->ntrusted; i++)
        if (pst_cidr_match(&r->trusted[i], &s->ip))
            return true;
    return false;
}

static bool
domain_relayed(const struct pst_session *s, const char *domain)
{
    const struct pst_relay_conf *r = &s->conf->relay;
    for (size_t i = 0; i < r->ndomains; i++)
        if (pst_strcaseeq(r->domains[i].domain, domain))
            return true;
    return false;
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
        pst_buf_printf(&s->out, "250 %s\r\n", s->conf->hostname);
        return;
    }
    pst_buf_printf(&s->out,
                   "250-%s\r\n"
                   "250-PIPELINING\r\n"
                   "250-SIZE %" PRIu64 "\r\n"
                   "250-8BITMIME\r\n"
                   "250-SMTPUTF8\r\n"
                   "250-ENHANCEDSTATUSCODES\r\n"
                   "250-DSN\r\n"          /* reports: queue/dsn.c */
                   "250 CHUNKING\r\n",
                   s->conf->hostname, s->conf->limits.message_size);
}

static void
cmd_mail(struct pst_session *s, const struct pst_cmd *c)
{
    const char *a = c->arg;
    size_t n = c->arg_len, end;
    struct pst_path p;
    struct pst_mail_params mp;
    char bad[64];

    if (!s->helo) {
        reply(s, RP_NEED_HELO, NULL);
        return;
    }
    if (s->in_mail) {
        reply(s, RP_NESTED_MAIL, NULL);
        return;
    }
    if (!strip_keyword(&a, &n, "FROM:")) {
        reply(s, RP_SYNTAX_MAIL, NULL);
        return;
    }
    enum pst_path_err pe = pst_path_parse(a, n, &p, true, false, &end);
    if (pe == PST_PATH_SYNTAX) {
        reply(s, n && a[0] == '<' ? RP_BAD_SENDER : RP_SYNTAX_MAIL, NULL);
        return;
    }
    if (pe != PST_PATH_OK) {
        reply(s, RP_SENDER_TOO_LONG, path_err_text(pe));
        return;
    }
    if (end < n && a[end] != ' ') {
        reply(s, RP_SYNTAX_MAIL, NULL);
        return;
    }
    switch (pst_mail_params_parse(a + end, n - end, &mp, bad, sizeof(bad))) {
    case PST_PARAM_OK:
        break;
    case PST_PARAM_UNKNOWN:
        reply(s, RP_PARAM_UNKNOWN, bad);
        return;
    default:
        reply(s, RP_PARAM_BAD, NULL);
        return;
    }
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

static void
cmd_rcpt(struct pst_session *s, const struct pst_cmd *c)
{
    const char *a = c->arg;
    size_t n = c->arg_len, end;
    struct pst_path p;
    struct pst_rcpt_params rp;
    char bad[64], q[300];

    if (!s->in_mail) {
        reply(s, s->helo ? RP_NEED_MAIL : RP_NEED_HELO, NULL);
        return;
    }
    s->rcpt_tried++;
    if (!strip_keyword(&a, &n, "TO:")) {
        reply(s, RP_SYNTAX_RCPT, NULL);
        return;
    }
    enum pst_path_err pe = pst_path_parse(a, n, &p, false, true, &end);
    if (pe == PST_PATH_SYNTAX) {
        reply(s, n && a[0] == '<' ? RP_BAD_RCPT : RP_SYNTAX_RCPT, NULL);
        return;
    }
    if (pe != PST_PATH_OK) {
        reply(s, RP_RCPT_TOO_LONG, path_err_text(pe));
        return;
    }
    if (end < n && a[end] != ' ') {
        reply(s, RP_SYNTAX_RCPT, NULL);
        return;
    }
    switch (pst_rcpt_params_parse(a + end, n - end, &rp, bad, sizeof(bad))) {
    case PST_PARAM_OK:
        break;
    case PST_PARAM_UNKNOWN:
        reply(s, RP_PARAM_UNKNOWN, bad);
        return;
    default:
        reply(s, RP_PARAM_BAD, NULL);
        return;
    }
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
    if (!p.is_postmaster && !client_trusted(s)) {
        const char *dom = strrchr(p.addr, '@') + 1;
        if (p.domain_literal || !domain_relayed(s, dom)) {
            SLOG(PST_LOG_INFO, s, "event=reject phase=rcpt to=%s code=554 "
                 "reason=relay", pst_log_quote(q, sizeof(q), p.addr,
                                               strlen(p.addr)));
            pst_buf_printf(&s->out, "554 5.7.1 <%s>: Relay access denied\r\n",
                           p.addr);
            s->errors++;
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

static const char *
proto_name(const struct pst_session *s)
{
    if (s->env.smtputf8)
        return "UTF8SMTP";
    return s->esmtp ? "ESMTP" : "SMTP";
}

/* Open the spool file and write our Received field: the first bytes of
 * every stored message. */
static bool
message_open(struct pst_session *s)
{
    char hdr[2048];
    int rc = pst_spool_msg_new(s->srv->spool, &s->msg, s->qid);
    if (rc < 0) {
        s->msg = NULL;
        pst_warn("sess=%016" PRIx64 " event=spool_error op=create err=%s",
                 s->id, strerror(-rc));
        reply(s, rc == -ENOSPC ? RP_NO_SPACE : RP_WRITE_ERROR, NULL);
        return false;
    }
    free(s->env.helo);              /* filter_env may have set them */
    free(s->env.client_name);
    s->env.helo = pst_xstrdup(s->helo);
    s->env.client_ip = s->ip;
    s->env.client_name = pst_xstrdup(s->client_name);
    s->env.proto = pst_xstrdup(proto_name(s));
    s->env.arrival = time(NULL);
    size_t n = pst_received_format(hdr, sizeof(hdr), &s->env,
                                   s->conf->hostname, s->qid);
    pst_dot_init(&s->dot, false, s->conf->limits.text_line_max);
    memset(&s->hs, 0, sizeof(s->hs));
    s->hs.bol = true;
    s->fail = MF_NONE;
    s->data_deadline = uv_now(s->srv->loop) +
                       (uint64_t)s->conf->limits.data_timeout * 1000;
    rc = pst_spool_msg_write(s->msg, hdr, n);
    if (rc < 0)
        s->fail = rc == -ENOSPC ? MF_NOSPACE : MF_WRITE;
    if (s->fs)
        pst_fsess_msg_data(s->fs, hdr, n);
    if (s->conf->mime.policy == PST_MIME_POLICY_REJECT) {
        s->mp = pst_mime_parser_new(&s->conf->mime.limits, NULL, NULL);
        pst_mime_feed(s->mp, hdr, n);
    }
    SLOG(PST_LOG_INFO, s, "event=data proto=%s rcpts=%zu", s->env.proto,
         s->env.nrcpts);
    return true;
}

/* Count Received fields in the header section of the stored text. */
static void
hdrscan_feed(struct hdrscan *h, const char *p, size_t n)
{
    for (size_t i = 0; i < n && !h->done; i++) {
        char c = p[i];
        if (h->bol) {
            h->bol = false;
            h->plen = 0;
            if (c == '\r' || c == '\n') {   /* blank line: end of header */
                h->done = true;
                return;
            }
        }
        if (c == '\n') {
            h->bol = true;
            continue;
        }
        if (h->plen < sizeof(h->prefix)) {
            h->prefix[h->plen++] = (char)pst_tolower((unsigned char)c);
            if (h->plen == sizeof(h->prefix) &&
                memcmp(h->prefix, "received:", 9) == 0)
                h->received++;
        }
    }
}

/* Text decoded from DATA or BDAT: limits, hop count, then the spool. */
static void
message_text(struct pst_session *s, const char *p, size_t n)
{
    if (n == 0 || s->fail != MF_NONE)
        return;
    if (!s->hs.done) {
        hdrscan_feed(&s->hs, p, n);
        if (s->hs.received > s->conf->limits.hops) {
            s->fail = MF_HOPS;
            return;
        }
    }
    if (s->dot.out_bytes > s->conf->limits.message_size) {
        s->fail = MF_TOO_BIG;
        return;
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
    } else {
        SLOG(PST_LOG_WARN, s, "event=status result=tempfail code=%d "
             "reason=commit err=\"%s\"", status == -ENOSPC ? 452 : 451,
             strerror(-status));
        reply(s, status == -ENOSPC ? RP_NO_SPACE : RP_WRITE_ERROR, NULL);
    }
    s->st = ST_CMD;
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
    if (s->fail == MF_NONE && (s->dot.flags & PST_DOT_LONG_LINE))
        s->fail = MF_LONG_LINE;
    if (s->fail == MF_NONE && (s->dot.flags & PST_DOT_BARE) &&
        s->conf->smtp.bare_newline == PST_BARE_REJECT)
        s->fail = MF_BARE_NEWLINE;
    if (s->mp) {
        struct pst_msg *m = pst_mime_finish(s->mp);
        s->mp = NULL;
        if (s->fail == MF_NONE && (m->flags & PST_MIME_F_LIMITS)) {
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
        pst_msg_free(m);
    }
    if (s->fail != MF_NONE) {
        enum pst_reply r = fail_reply[s->fail];
        SLOG(PST_LOG_INFO, s, "event=status result=rejected phase=data "
             "code=%d reason=%s", pst_reply_code(r), fail_name[s->fail]);
        reply(s, r, NULL);
        s->st = ST_CMD;
        txn_reset(s);
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
    if (!message_open(s))
        return;
    s->data_used = true;
    reply(s, RP_DATA_GO, NULL);
    s->st = ST_DATA;
}

static void
cmd_bdat(struct pst_session *s, const struct pst_cmd *c)
{
    char num[24];
    size_t i = 0;
    const char *a = c->arg;
    size_t n = c->arg_len;

    while (i < n && a[i] >= '0' && a[i] <= '9')
        i++;
    if (i == 0 || i > 20) {
        reply(s, RP_SYNTAX_BDAT, NULL);
        return;
    }
    memcpy(num, a, i);
    num[i] = '\0';
    errno = 0;
    unsigned long long size = strtoull(num, NULL, 10);
    bool last = false;
    if (i < n) {
        size_t j = i;
        while (j < n && a[j] == ' ')
            j++;
        if (j == i || n - j != 4 || !pst_strncaseeq(a + j, "LAST", 4)) {
            reply(s, RP_SYNTAX_BDAT, NULL);
            return;
        }
        last = true;
    }
    if (errno == ERANGE) {
        reply(s, RP_SYNTAX_BDAT, NULL);
        return;
    }
    /* From here the chunk's octets follow whatever we answer: read them
     * by length so none is ever taken as a command. */
    s->st = ST_BDAT;
    s->bdat_left = size;
    s->bdat_last = last;
    s->bdat_discard = false;
    if (!s->bdat_used) {
        if (s->data_used) {
            reply(s, RP_BDAT_AFTER_DATA, NULL);
            s->bdat_discard = true;
            return;
        }
        if (!data_ready(s) || !message_open(s)) {
            s->bdat_discard = true;
            return;
        }
        s->bdat_used = true;
        pst_dot_init(&s->dot, true, s->conf->limits.text_line_max);
    } else if (s->msg == NULL) {
        s->bdat_discard = true;
    }
}

/* The envelope's client facts, for filters that run before the message
 * opens (message_open sets them again). */
static void
filter_env(struct pst_session *s)
{
    s->env.client_ip = s->ip;
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
            s->st = ST_CMD;
            txn_reset(s);
        }
        return false;
    case PST_DISCARD:
        SLOG(PST_LOG_INFO, s, "event=discarded filter=%s rcpts=%zu",
             r.filter ? r.filter : "-", s->env.nrcpts);
        reply(s, RP_QUEUED, s->qid);
        s->st = ST_CMD;
        txn_reset(s);
        return false;
    case PST_QUARANTINE: {
        char why[120];
        snprintf(why, sizeof(why), "quarantined by filter %s",
                 r.filter ? r.filter : "-");
        pst_spool_msg_set_hold(s->msg, why);
        SLOG(PST_LOG_INFO, s, "event=quarantine filter=%s",
             r.filter ? r.filter : "-");
        break;
    }
    default:
        break;
    }
    if (ph == PST_FP_EOM) {
        struct pst_ebuf b = {0};
        int e = pst_fsess_edits(s->fs, &b);
        if (e == 1)
            e = pst_spool_msg_set_edits(s->msg, b.p, b.len);
        pst_ebuf_free(&b);
        if (e < 0) {
            pst_sf_internal_error(&r);
            pst_sf_reply(&s->out, &r);
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
    if (len + 2 > pst_cmd_line_max(c.verb)) {
        reply(s, RP_LINE_TOO_LONG, NULL);
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
        cmd_bdat(s, &c);
        break;
    case PST_CMD_RSET:
        if (c.arg_len) {
            reply(s, RP_SYNTAX_NOARG, "RSET");
            break;
        }
        txn_reset(s);
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
    case PST_CMD_EXPN:
    case PST_CMD_STARTTLS:
    case PST_CMD_AUTH:
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

/* Consume one command line if a whole one is buffered. */
static bool
step_command(struct pst_session *s)
{
    char *p = s->in + s->in_pos;
    size_t avail = s->in_len - s->in_pos;
    char *lf = memchr(p, '\n', avail);

    if (s->skip_line) {
        if (lf == NULL) {
            s->in_pos = s->in_len;
            return false;
        }
        s->in_pos += (size_t)(lf - p) + 1;
        s->skip_line = false;
        return true;
    }
    if (lf == NULL) {
        if (avail >= PST_LINE_MAX_ANY) {
            /* overlong: answer now, drop the rest of the line */
            reply(s, RP_LINE_TOO_LONG, NULL);
            s->skip_line = true;
            s->in_pos = s->in_len;
            return true;
        }
        return false;
    }
    size_t len = (size_t)(lf - p);
    s->in_pos += len + 1;
    if (len && p[len - 1] == '\r')
        len--;
    if (len + 2 > PST_LINE_MAX_ANY) {
        reply(s, RP_LINE_TOO_LONG, NULL);
        return true;
    }
    cmd_dispatch(s, p, len);
    return true;
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
    if (s->bdat_discard) {
        s->bdat_discard = false;
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
static void
update_reading(struct pst_session *s)
{
    bool want = !s->closing && !s->quitting && s->st != ST_COMMIT &&
                s->st != ST_LOOKUP &&
                s->out_inflight < PST_OUT_HIGH && s->in_len < PST_IN_CAP;
    if (want && !s->reading) {
        s->reading =
            uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read) == 0;
    } else if (!want && s->reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = false;
    }
}

static void
process(struct pst_session *s)
{
    while (!s->closing && !s->quitting && s->st != ST_COMMIT &&
           s->st != ST_LOOKUP && s->st != ST_FILTER &&
           s->out_inflight < PST_OUT_HIGH) {
        bool progress;
        if (s->errors > s->conf->limits.errors) {
            SLOG(PST_LOG_INFO, s, "event=too_many_errors errors=%u",
                 s->errors);
            reply(s, RP_TOO_MANY_ERRORS, s->conf->hostname);
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
        default:
            progress = false;
        }
        if (!progress)
            break;
    }
    /* keep the unconsumed tail at the front of the buffer */
    if (s->in_pos > 0) {
        memmove(s->in, s->in + s->in_pos, s->in_len - s->in_pos);
        s->in_len -= s->in_pos;
        s->in_pos = 0;
    }
    flush(s);
    if (s->closing)
        return;
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
    *b = uv_buf_init(s->in + s->in_len, (unsigned)(PST_IN_CAP - s->in_len));
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
    s->in_len += (size_t)n;
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
    pst_envelope_free(&s->env);
    free(s->fline);
    pst_mime_parser_free(s->mp);
    pst_buf_free(&s->out);
    free(s->in);
    free(s->scratch);
    free(s->helo);
    free(s->client_name);
    free(s->ptr_name);
    pst_conf_unref(s->conf);
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

/* The client's name is known (or not): say hello and start reading. */
static void
greet(struct pst_session *s, const char *name)
{
    s->client_name = pst_xstrdup(name);
    s->st = ST_CMD;
    if (filter_gate(s, PST_FP_CONNECT, NULL, NULL))
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
    s->conf = pst_conf_ref(srv->conf);
    s->lc = l->lc;
    s->id = srv->id_base + srv->id_next++;
    s->in = pst_xmalloc(PST_IN_CAP);
    s->scratch = pst_xmalloc(2 * PST_IN_CAP + 2);
    pst_buf_init(&s->out, PST_OUT_MAX);
    pst_envelope_init(&s->env);
    s->st = ST_CMD;
    uv_tcp_init(srv->loop, &s->tcp);
    uv_timer_init(srv->loop, &s->timer);
    s->tcp.data = s->timer.data = s;
    s->handles = 2;
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
    pst_ip_str(&s->ip, s->ipstr, sizeof(s->ipstr));
    SLOG(PST_LOG_INFO, s, "event=connect ip=%s port=%u listener=%s:%u",
         s->ipstr,
         ntohs(ss.ss_family == AF_INET
                   ? ((struct sockaddr_in *)&ss)->sin_port
                   : ((struct sockaddr_in6 *)&ss)->sin6_port),
         l->lc->address, l->lc->port);
    if (pst_chain_len(s->conf->filters) > 0) {
        s->fs = pst_fsess_new(srv->frt, s->conf->filters, s->id, &s->env,
                              on_filter_verdict, s);
        pst_fsess_set_mime_limits(s->fs, &s->conf->mime.limits);
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
    if (s->st == ST_CMD) {
        reply(s, RP_SHUTDOWN, s->conf->hostname);
        flush(s);
    }
    session_close(s, "shutdown");
}

void
pst_session_shutdown_all(struct pst_server *srv)
{
    /* closing is asynchronous: no session is freed during this walk */
    for (struct pst_session *s = srv->sessions; s; s = s->next)
        pst_session_shutdown(s);
}
