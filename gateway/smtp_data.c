/*
 * smtp_data.c - the SMTP session's transaction and its message: the
 * transaction is created at MAIL and freed in one place (pst__tx_free); the
 * message opens at DATA or the first BDAT chunk (a spool file, postern's
 * Received field first), its text streams through the one decoder that
 * owns framing (dotstream.c) into the spool, limits checked as it goes,
 * and at the end of data it is refused, or filtered (PST_FP_EOM) and
 * committed: 250 only once the spool has synced it.
 *
 * BDAT (RFC 3030): a chunk is read by its length whatever the answer, so
 * no chunk octet is ever taken for a command. A chunk that fails fails
 * the transaction, and the chunks pipelined behind it are read and
 * refused with the same reply until the client moves on (RSET, MAIL,
 * HELO/EHLO, TLS, or the LAST chunk). A BDAT line whose size cannot be
 * read ends the session (docs/SMTP.md says why).
 *
 * Bounds: the decoded text of one read lands in the transaction's scratch
 * (PST_SCRATCH, allocated at the message's open); the text itself goes to
 * the spool file, never to memory. The message's size, its lines and its
 * Received fields are checked as the text streams; the disk's floor every
 * PST_SPACE_CHECK octets.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/metrics.h"
#include "core/mime.h"
#include "core/util.h"
#include "gateway/received.h"
#include "gateway/smtp_filters.h"
#include "gateway/smtp_int.h"
#include "gateway/stats.h"

/* a free-space look-up is reused this long, while what it found is more
 * than SPACE_SLACK above what is asked: more than the spool can write in
 * that time */
#define SPACE_FRESH_MS 100
#define SPACE_SLACK ((uint64_t)256 << 20)

/* ---- the transaction ---- */

void
pst__tx_new(struct pst_session *s, const struct pst_path *sender,
            const struct pst_mail_params *mp)
{
    struct pst__tx *tx = pst_xcalloc(1, sizeof(*tx));
    struct pst_envelope *e = &tx->env;
    char q[300];

    pst__tx_free(s);
    pst_envelope_init(e);
    e->sender = pst_xstrdup(sender->addr);
    e->size_param = mp->size;
    e->body = mp->body;
    e->smtputf8 = mp->smtputf8;
    e->ret = mp->ret;
    e->envid = mp->envid[0] ? pst_xstrdup(mp->envid) : NULL;
    e->client_ip = s->ip;           /* the client facts filters are shown */
    e->trusted = s->trusted;
    e->client_name = s->client_name ? pst_xstrdup(s->client_name) : NULL;
    e->helo = s->helo ? pst_xstrdup(s->helo) : NULL;
    e->auth_login = s->auth_login ? pst_xstrdup(s->auth_login) : NULL;
    s->tx = tx;
    SLOG(pst__smtp_cmd_level(s), s, "event=mail from=%s size=%" PRIu64,
         pst_log_quote(q, sizeof(q), sender->addr, strlen(sender->addr)),
         mp->size);
    if (s->fs) {
        pst_fsess_set_env(s->fs, e);
        pst_fsess_msg_begin(s->fs, e->smtputf8);
    }
}

void
pst__tx_free(struct pst_session *s)
{
    struct pst__tx *tx = s->tx;
    if (tx == NULL)
        return;
    if (tx->msg)
        pst_spool_msg_abort(tx->msg);
    if (s->fs) {
        pst_fsess_msg_end(s->fs);
        pst_fsess_set_env(s->fs, &s->facts);
    }
    pst_envelope_free(&tx->env);
    pst_mime_parser_free(tx->mp);
    free(tx->scratch);
    free(tx);
    s->tx = NULL;
}

bool
pst__space_ok(struct pst_session *s, uint64_t need)
{
    struct pst_server *srv = s->srv;
    uint64_t min = s->conf->limits.disk_free_min;
    uint64_t now = uv_now(srv->loop);
    /* far above the floor, a look-up less than SPACE_FRESH_MS old will
     * do (a statvfs per MAIL was one system call in 46 per relayed
     * message); near it, every check looks again */
    bool fresh = srv->space_at != 0 && now - srv->space_at < SPACE_FRESH_MS &&
                 srv->space_free >= 0 &&
                 (uint64_t)srv->space_free >= min + need + SPACE_SLACK;
    if (!fresh) {
        srv->space_free = pst_spool_free_bytes(srv->spool);
        srv->space_at = now ? now : 1;
    }
    /* an unknown free space (statvfs failed) is not a refusal: the writes
     * themselves will say ENOSPC */
    int64_t fr = srv->space_free;
    if (fr < 0)
        return true;
    return (uint64_t)fr >= min && (uint64_t)fr - min >= need;
}

/*
 * bdat_refuse - a chunk of the transaction failed with reply r (and the
 * transaction is freed): the chunks the client pipelined behind it are
 * read and refused with r, so a temporary failure stays temporary and no
 * later chunk starts a message without the text before it (RFC 3030 2).
 */
static void
bdat_refuse(struct pst_session *s, enum pst_reply r)
{
    s->bdat_refusing = true;
    s->bdat_refusal = r;
}

void
pst__bdat_refuse_end(struct pst_session *s)
{
    s->bdat_refusing = false;
}

/* ---- the message ---- */

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
    return names[s->tx->env.smtputf8][s->tls != NULL][auth];
}

/* The stored text of the message, for filters that read parts' content
 * (filters/chain.h pst_fsess_msg_stored). */
static struct pst_textsrc *
stored_text(void *arg)
{
    struct pst_session *s = arg;
    return s->tx && s->tx->msg ? pst_spool_msg_text(s->tx->msg) : NULL;
}

/* Open the spool file and write our Received field: the first bytes of
 * every stored message. On a failure the reply is given and *why says
 * which. */
static bool
message_open(struct pst_session *s, enum pst_reply *why)
{
    struct pst__tx *tx = s->tx;
    struct pst_envelope *e = &tx->env;
    char hdr[2048];
    int rc = pst_spool_msg_new(s->srv->spool, &tx->msg, tx->qid);
    if (rc < 0) {
        tx->msg = NULL;
        pst_warn("sess=%016" PRIx64 " event=spool_error op=create err=%s",
                 s->id, strerror(-rc));
        *why = rc == -ENOSPC ? RP_NO_SPACE : RP_WRITE_ERROR;
        pst__smtp_reply(s, *why, NULL);
        return false;
    }
    if (s->fs)
        pst_fsess_msg_stored(s->fs, tx->qid, stored_text, s);
    free(e->helo);
    free(e->client_name);
    e->helo = pst_xstrdup(s->helo);
    e->client_ip = s->ip;
    e->trusted = s->trusted;
    e->client_name = pst_xstrdup(s->client_name);
    if (s->auth_login && e->auth_login == NULL)
        e->auth_login = pst_xstrdup(s->auth_login);
    e->proto = pst_xstrdup(proto_name(s));
    e->arrival = time(NULL);
    size_t n = pst_received_format(hdr, sizeof(hdr), e, s->conf->hostname,
                                   tx->qid, s->tls_desc);
    pst_dot_init(&tx->dot, false, s->conf->limits.text_line_max);
    tx->scratch = pst_xmalloc(PST_SCRATCH);
    memset(&tx->hs, 0, sizeof(tx->hs));
    tx->hs.bol = true;
    tx->fail = MF_NONE;
    tx->space_checked = 0;
    s->text_deadline = uv_now(s->srv->loop) +
                       (uint64_t)s->conf->limits.data_timeout * 1000;
    rc = pst_spool_msg_write(tx->msg, hdr, n);
    if (rc < 0)
        tx->fail = rc == -ENOSPC ? MF_NOSPACE : MF_WRITE;
    if (s->fs)
        pst_fsess_msg_data(s->fs, hdr, n);
    /* with filters, the chain's parser builds the one model */
    if (s->conf->mime.policy == PST_MIME_POLICY_REJECT && s->fs == NULL) {
        tx->mp = pst_mime_parser_new(&s->conf->mime.limits, NULL, NULL);
        pst_mime_feed(tx->mp, hdr, n);
    }
    SLOG(PST_LOG_INFO, s, "event=data proto=%s rcpts=%zu", e->proto,
         e->nrcpts);
    return true;
}

/*
 * Scan the header section of the stored text: count Received fields (hop
 * limit) and note Date and Message-ID. Returns the offset in p of the
 * blank line that ends the header when it is in this piece, else n.
 */
static size_t
hdrscan_feed(struct pst__hdrscan *h, const char *p, size_t n)
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

/* stored - n octets of p are now part of the message: the spool, then
 * what sees the text as stored (the filters, the model). */
static int
stored(struct pst_session *s, const char *p, size_t n)
{
    struct pst__tx *tx = s->tx;
    int rc = pst_spool_msg_write(tx->msg, p, n);
    if (rc == 0 && s->fs)
        pst_fsess_msg_data(s->fs, p, n);
    if (rc == 0 && tx->mp)
        pst_mime_feed(tx->mp, p, n);
    if (rc < 0)
        tx->fail = rc == -ENOSPC ? MF_NOSPACE : MF_WRITE;
    return rc;
}

/*
 * add_missing_fields - RFC 6409 8.1, 8.3: for a submission (an
 * authenticated or trusted client) add Date and Message-ID when the
 * message has none. Written where the header ends.
 */
static void
add_missing_fields(struct pst_session *s)
{
    struct pst__tx *tx = s->tx;
    char f[PST_RECEIVED_MAX];
    size_t n = 0;
    if (tx->fail != MF_NONE || !submission(s))
        return;
    if (!tx->hs.date) {
        char date[64];
        pst_rfc5322_date(date, sizeof(date), tx->env.arrival);
        n += (size_t)snprintf(f + n, sizeof(f) - n, "Date: %s\r\n", date);
    }
    if (!tx->hs.msgid)
        n += (size_t)snprintf(f + n, sizeof(f) - n,
                              "Message-ID: <%lld.%s@%s>\r\n",
                              (long long)tx->env.arrival, tx->qid,
                              s->conf->hostname);
    tx->hs.date = tx->hs.msgid = true;
    if (n == 0 || stored(s, f, n) < 0)
        return;
    SLOG(PST_LOG_INFO, s, "event=header_added fields=%s%s",
         n && f[0] == 'D' ? "date" : "",
         strstr(f, "Message-ID") ? (f[0] == 'D' ? ",message-id"
                                                  : "message-id")
                                 : "");
}

/* Limits, then the spool, for text past the header scan. */
static void
message_text_raw(struct pst_session *s, const char *p, size_t n)
{
    struct pst__tx *tx = s->tx;
    if (tx->dot.out_bytes > s->conf->limits.message_size) {
        tx->fail = MF_TOO_BIG;
        return;
    }
    /* the floor applies while the text streams, not only at MAIL: look
     * again every PST_SPACE_CHECK octets (one statvfs each) */
    if (tx->dot.out_bytes - tx->space_checked >= PST_SPACE_CHECK) {
        tx->space_checked = tx->dot.out_bytes;
        if (!pst__space_ok(s, 0)) {
            SLOG(PST_LOG_WARN, s, "event=disk_space_low bytes=%" PRIu64,
                 tx->dot.out_bytes);
            tx->fail = MF_NOSPACE;
            return;
        }
    }
    int rc = stored(s, p, n);
    if (rc < 0)
        pst_warn("sess=%016" PRIx64 " msg=%s event=spool_error op=write "
                 "err=%s", s->id, tx->qid, strerror(-rc));
}

/* Text decoded from DATA or BDAT: limits, hop count, then the spool. */
static void
message_text(struct pst_session *s, const char *p, size_t n)
{
    struct pst__tx *tx = s->tx;
    if (n == 0 || tx->fail != MF_NONE)
        return;
    if (!tx->hs.done) {
        size_t end = hdrscan_feed(&tx->hs, p, n);
        if (tx->hs.received > s->conf->limits.hops) {
            tx->fail = MF_HOPS;
            return;
        }
        if (tx->hs.done && !(tx->hs.date && tx->hs.msgid) && submission(s)) {
            /* the header ends in this piece: fields go before the blank
             * line */
            if (end > 0) {
                message_text_raw(s, p, end);
                if (tx->fail != MF_NONE)
                    return;
            }
            add_missing_fields(s);
            p += end;
            n -= end;
            if (n == 0 || tx->fail != MF_NONE)
                return;
        }
    }
    message_text_raw(s, p, n);
}

static void
on_commit(void *arg, int status)
{
    struct pst_session *s = arg;
    struct pst__tx *tx = s->tx;
    if (status == 0) {
        SLOG(PST_LOG_INFO, s, "event=status result=queued code=250 "
             "size=%" PRIu64 " rcpts=%zu", tx->dot.out_bytes,
             tx->env.nrcpts);
        pst__smtp_cmd_refill(s);
        pst__smtp_reply(s, RP_QUEUED, tx->qid);
        pst_stats_message(PST_MSG_ACCEPTED,
                          tx->held ? "quarantined" : "queued",
                          tx->dot.out_bytes);
        pst_stats_accept_latency(pst_monotonic_us() - tx->eod_us);
    } else {
        pst_stats_message(PST_MSG_TEMPFAILED,
                          status == -ENOSPC ? "disk_full" : "commit",
                          tx->dot.out_bytes);
        SLOG(PST_LOG_WARN, s, "event=status result=tempfail code=%d "
             "reason=commit err=\"%s\"", status == -ENOSPC ? 452 : 451,
             strerror(-status));
        pst__smtp_reply(s, status == -ENOSPC ? RP_NO_SPACE : RP_WRITE_ERROR,
                        NULL);
    }
    pst__smtp_state(s, ST_CMD);
    pst__tx_free(s);
    if (s->closing) {
        /* the client left while we synced; its handles may be closed */
        if (s->handles == 0)
            pst__smtp_free(s);
        return;
    }
    pst__smtp_process(s);
}

/* message_commit - the end of data passed the filters: their edits and
 * rewritten sender go with the message, and the spool commits it. */
static void
message_commit(struct pst_session *s)
{
    struct pst__tx *tx = s->tx;
    if (s->fs) {
        struct pst_tbuf b = {0};
        int e = pst_fsess_edits(s->fs, &b);
        if (e == 1)
            e = pst_spool_msg_set_edits(tx->msg, b.p, b.len);
        pst_tbuf_free(&b);
        if (e < 0) {
            struct pst_fres r;
            pst_sf_internal_error(&r);
            pst_sf_reply(&s->out, &r);
            pst_stats_message(PST_MSG_TEMPFAILED, "filter_edits",
                              tx->dot.out_bytes);
            pst__smtp_state(s, ST_CMD);
            pst__tx_free(s);
            return;
        }
        if (s->fres.new_sender) {
            free(tx->env.sender);
            tx->env.sender = pst_xstrdup(s->fres.new_sender);
        }
    }
    struct pst_spool_msg *m = tx->msg;
    tx->msg = NULL;                 /* the spool's from here */
    pst__smtp_state(s, ST_COMMIT);
    pst_spool_msg_commit(m, &tx->env, on_commit, s);
}

/* The end of the text: refuse it, or filter it and commit it. */
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
    struct pst__tx *tx = s->tx;
    if (tx->eod_us == 0)
        tx->eod_us = pst_monotonic_us();
    if (tx->fail == MF_NONE && !tx->hs.done && submission(s))
        add_missing_fields(s);      /* a message that is all header */
    if (tx->fail == MF_NONE && (tx->dot.flags & PST_DOT_LONG_LINE))
        tx->fail = MF_LONG_LINE;
    if (tx->fail == MF_NONE && (tx->dot.flags & PST_DOT_BARE) &&
        s->conf->smtp.bare_newline == PST_BARE_REJECT)
        tx->fail = MF_BARE_NEWLINE;
    if (s->conf->mime.policy == PST_MIME_POLICY_REJECT) {
        struct pst_msg *own = tx->mp ? pst_mime_finish(tx->mp) : NULL;
        const struct pst_msg *m = own ? own
                                  : s->fs ? pst_fsess_msg_model(s->fs) : NULL;
        tx->mp = NULL;
        if (m && tx->fail == MF_NONE && (m->flags & PST_MIME_F_LIMITS)) {
            char names[192] = "";
            for (unsigned b = 1; b <= PST_MIME_F_LIMITS; b <<= 1)
                if (m->flags & b) {
                    if (names[0])
                        strcat(names, ",");
                    strcat(names, pst_mime_flag_name(b));
                }
            tx->fail = MF_MIME_LIMIT;
            SLOG(PST_LOG_INFO, s, "event=mime_limits flags=%s", names);
        }
        pst_msg_free(own);
    }
    if (tx->fail != MF_NONE) {
        enum pst_reply r = fail_reply[tx->fail];
        bool more = tx->bdat_used && !s->bdat_last;
        SLOG(PST_LOG_INFO, s, "event=status result=rejected phase=data "
             "code=%d reason=%s", pst_reply_code(r), fail_name[tx->fail]);
        pst_stats_message(pst_reply_code(r) / 100 == 4 ? PST_MSG_TEMPFAILED
                                                        : PST_MSG_REFUSED,
                          fail_name[tx->fail], tx->dot.out_bytes);
        pst__smtp_reply(s, r, NULL);
        pst__smtp_state(s, ST_CMD);
        pst__tx_free(s);
        if (more)                   /* chunks may follow in the pipeline */
            bdat_refuse(s, r);
        return;
    }
    if (tx->dot.flags & PST_DOT_BARE)
        SLOG(PST_LOG_INFO, s, "event=bare_newline action=normalized%s", "");
    pst__gate(s, PST_FP_EOM, NULL, message_commit);
}

/*
 * headers_gate - the header is complete while the text still streams: run
 * the filters' headers phase now, so a slow check overlaps the upload. A
 * pending verdict pauses the text (ST_FILTER); a refusal is kept by the
 * chain and given after the final dot. At the end of a chunk that also
 * ends the message the end-of-message run covers the header instead.
 */
static void
headers_gate(struct pst_session *s)
{
    if (s->fs == NULL || s->tx->fail != MF_NONE ||
        !pst_fsess_headers_ready(s->fs))
        return;
    pst__gate(s, PST_FP_HEADERS, NULL, NULL);
}

/* ---- DATA ---- */

bool
pst__data_check(struct pst_session *s, const struct pst_cmd *c,
                struct pst__args *a)
{
    if (s->tx->bdat_used) {
        pst__smtp_reply(s, RP_DATA_AFTER_BDAT, NULL);
        return false;
    }
    return true;
}

void
pst__data_proceed(struct pst_session *s, struct pst__args *a)
{
    enum pst_reply why;
    if (!message_open(s, &why))
        return;                     /* the client may try DATA again */
    s->tx->data_used = true;
    pst__smtp_reply(s, RP_DATA_GO, NULL);
    pst__smtp_state(s, ST_DATA);
}

bool
pst__data_step(struct pst_session *s)
{
    struct pst__tx *tx = s->tx;
    size_t avail = s->in_len - s->in_pos, olen;
    bool done;
    if (avail == 0)
        return false;
    size_t used = pst_dot_feed(&tx->dot, s->in + s->in_pos, avail,
                               tx->scratch, &olen, &done);
    s->in_pos += used;
    message_text(s, tx->scratch, olen);
    if (done)
        message_end(s);
    else
        headers_gate(s);
    return true;
}

/* ---- BDAT ---- */

void
pst__bdat_unreadable(struct pst_session *s, const char *line, size_t len)
{
    char q[80];
    SLOG(PST_LOG_INFO, s, "event=bdat_unreadable line=%s",
         pst_log_quote(q, sizeof(q), line, PST_MIN(len, 40)));
    pst__smtp_reply(s, RP_BDAT_NO_SIZE, s->conf->hostname);
    s->quitting = true;
}

bool
pst__bdat_check(struct pst_session *s, const struct pst_cmd *c,
                struct pst__args *a)
{
    enum pst_bdat_form f = pst_bdat_parse(c->arg, c->arg_len, &a->u.bdat.size,
                                          &a->u.bdat.last);
    if (f == PST_BDAT_NO_SIZE) {
        /* the client is sending a chunk whose end cannot be found:
         * nothing after this line can safely be read as a command */
        pst__bdat_unreadable(s, a->line, a->line_len);
        return false;
    }
    a->u.bdat.malformed = f == PST_BDAT_MALFORMED ||
                          a->line_len + 2 > pst_cmd_line_max(c->verb);
    return true;
}

void
pst__bdat_proceed(struct pst_session *s, struct pst__args *a)
{
    bool last = a->u.bdat.last, discard = true;

    if (a->u.bdat.malformed) {
        bool open = s->tx != NULL;
        pst__smtp_reply(s, RP_SYNTAX_BDAT, NULL);
        pst__tx_free(s);            /* a transaction has failed */
        if (open && !last)
            bdat_refuse(s, RP_SYNTAX_BDAT);
    } else if (s->bdat_refusing) {
        pst__smtp_reply(s, s->bdat_refusal, NULL);
    } else if (s->tx && s->tx->bdat_used) {
        discard = false;            /* the next chunk of the message */
    } else if (s->tx == NULL || s->tx->env.nrcpts == 0) {
        pst__smtp_reply(s, s->helo == NULL ? RP_NEED_HELO
                           : s->tx == NULL ? RP_NEED_MAIL
                           : s->tx->rcpt_tried ? RP_NO_VALID_RCPT
                                               : RP_NEED_RCPT, NULL);
    } else if (s->tx->data_used) {
        pst__smtp_reply(s, RP_BDAT_AFTER_DATA, NULL);
    } else {
        enum pst_reply why;
        if (message_open(s, &why)) {
            s->tx->bdat_used = true;
            discard = false;
            pst_dot_init(&s->tx->dot, true, s->conf->limits.text_line_max);
        } else {
            pst__tx_free(s);        /* the first chunk is lost */
            if (!last)
                bdat_refuse(s, why);
        }
    }
    /* Whatever the answer, the chunk's octets follow: read them by
     * length so none is ever taken as a command. */
    pst__smtp_state(s, ST_BDAT);
    s->bdat_left = a->u.bdat.size;
    s->bdat_last = last;
    s->bdat_discard = discard;
    if (discard)                    /* timed on its own, not a message's */
        s->text_deadline = uv_now(s->srv->loop) +
                           (uint64_t)s->conf->limits.data_timeout * 1000;
}

bool
pst__bdat_step(struct pst_session *s)
{
    struct pst__tx *tx = s->tx;
    size_t avail = s->in_len - s->in_pos, olen = 0;
    bool done;
    size_t take = (size_t)PST_MIN((uint64_t)avail, s->bdat_left);

    if (take > 0) {
        if (!s->bdat_discard) {
            pst_dot_feed(&tx->dot, s->in + s->in_pos, take, tx->scratch,
                         &olen, &done);
            message_text(s, tx->scratch, olen);
            tx->bdat_octets += take;
        }
        s->in_pos += take;
        s->bdat_left -= take;
    }
    if (s->bdat_left > 0) {
        if (!s->bdat_discard)
            headers_gate(s);
        return take > 0;
    }
    /* chunk complete */
    pst__smtp_state(s, ST_CMD);
    if (s->bdat_discard) {
        s->bdat_discard = false;
        if (s->bdat_last)
            pst__bdat_refuse_end(s);
        return true;
    }
    if (!s->bdat_last) {
        char num[24];
        if (tx->fail != MF_NONE) {
            /* refuse the transaction now; later chunks are refused too */
            message_end(s);
            return true;
        }
        snprintf(num, sizeof(num), "%" PRIu64, tx->bdat_octets);
        pst__smtp_reply(s, RP_BDAT_CHUNK, num);
        return true;
    }
    olen = pst_dot_finish(&tx->dot, tx->scratch);
    message_text(s, tx->scratch, olen);
    message_end(s);
    return true;
}
