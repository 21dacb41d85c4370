/*
 * dsn.c - RFC 3464 delivery status notifications (see dsn.h).
 *
 * The report is multipart/report; report-type=delivery-status with three
 * parts: a human-readable text, the message/delivery-status fields (one
 * per-recipient block per recipient, with Original-Recipient from ORCPT
 * and Original-Envelope-Id from ENVID), and the original message
 * (message/rfc822, or message/global for an SMTPUTF8 message) or its
 * header only (text/rfc822-headers) by RET and the size cap. It carries
 * Auto-Submitted: auto-replied (RFC 3834) and is sent from the null
 * reverse-path, so no report is ever made about a report; a report that
 * fails goes once to the postmaster, and one to the postmaster that fails
 * is logged and dropped.
 *
 * The MIME boundary is random (128 bits from getrandom, first, then
 * "=_postern", which quoted-printable text cannot hold) and checked
 * against everything it encloses - the two parts postern writes and the
 * returned original - before use: an original that holds a line "--b"
 * for a boundary b a sender could predict would otherwise end the report
 * early and smuggle parts into it. The check also refuses a boundary that
 * starts with the boundary of a delimiter line in the content, for
 * readers that match delimiters by prefix (an unclosed inner multipart
 * would take the report's own delimiters).
 */
#include "queue/dsn.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "queue/spool_int.h"

/* RFC 3461 4.1: absent NOTIFY means FAILURE (and DELAY at the MTA's
 * discretion: postern sends delay reports only when asked explicitly or
 * when delivery.delay_warning is set). */
bool
pst__dsn_wanted(const struct pst_envelope *env, const struct pst_rcpt *r,
                enum pst_dsn_action a, enum pst_dsn_hint hint)
{
    unsigned n = r->notify;

    if (n & PST_NOTIFY_NEVER)
        return false;
    switch (a) {
    case PST_DSN_FAILED:
        return n == 0 || (n & PST_NOTIFY_FAILURE);
    case PST_DSN_DELAYED:
        return n == 0 || (n & PST_NOTIFY_DELAY);
    default:
        /* the hop took NOTIFY and reports itself */
        return (n & PST_NOTIFY_SUCCESS) && hint != PST_HINT_PASSED &&
               env->sender[0] != '\0';
    }
}

/* pst__dsn_owed - see dsn.h: the one statement of who is owed a report. */
int
pst__dsn_owed(const struct pst_dsn_attempt *a, size_t i, bool expired)
{
    const struct pst_rcpt_result *x = &a->res[i];
    const struct pst_rcpt *r = &a->env->rcpts[a->idx[i]];

    switch (x->res) {
    case PST_DRES_PERM:
        return pst__dsn_wanted(a->env, r, PST_DSN_FAILED, x->hint)
                   ? PST_DSN_FAILED
                   : -1;
    case PST_DRES_OK:
        if (!pst__dsn_wanted(a->env, r, PST_DSN_DELIVERED, x->hint))
            return -1;
        return x->hint == PST_HINT_DELIVERED ? PST_DSN_DELIVERED
                                             : PST_DSN_RELAYED;
    default:
        if (expired)
            return pst__dsn_wanted(a->env, r, PST_DSN_FAILED, x->hint)
                       ? PST_DSN_FAILED
                       : -1;
        return a->warn_delay &&
                       pst__dsn_wanted(a->env, r, PST_DSN_DELAYED, x->hint)
                   ? PST_DSN_DELAYED
                   : -1;
    }
}

/* pst__dsn_any_owed - see dsn.h. */
bool
pst__dsn_any_owed(const struct pst_dsn_attempt *a, bool may_expire)
{
    for (size_t i = 0; i < a->n; i++)
        if (pst__dsn_owed(a, i, false) >= 0 ||
            (may_expire && pst__dsn_owed(a, i, true) >= 0))
            return true;
    return false;
}

/* pst__dsn_report - see dsn.h. */
bool
pst__dsn_report(struct pst_spool *sp, const char *hostname, const char *qid,
                const struct pst_dsn_attempt *a, bool expired,
                const struct pst_dsn_orig *orig)
{
    const struct pst_envelope *env = a->env;
    struct pst_dsn_rcpt *fail = pst_xcalloc(env->nrcpts + 1, sizeof(*fail));
    struct pst_dsn_rcpt *ok = pst_xcalloc(env->nrcpts + 1, sizeof(*ok));
    struct pst_dsn_rcpt *late = pst_xcalloc(env->nrcpts + 1, sizeof(*late));
    char **texts = pst_xcalloc(env->nrcpts + 1, sizeof(char *));
    size_t nf = 0, no = 0, nl = 0, nt = 0;

    for (size_t i = 0; i < a->n; i++) {
        const struct pst_rcpt_result *x = &a->res[i];
        const struct pst_rcpt *r = &env->rcpts[a->idx[i]];
        int act = pst__dsn_owed(a, i, expired);
        if (act == PST_DSN_FAILED && x->res != PST_DRES_PERM) {
            texts[nt] = pst_xasprintf("delivery time expired; last "
                                      "error: %s", x->text);
            fail[nf++] = (struct pst_dsn_rcpt){r, PST_DSN_FAILED,
                                               texts[nt++]};
        } else if (act == PST_DSN_FAILED) {
            fail[nf++] = (struct pst_dsn_rcpt){r, PST_DSN_FAILED, x->text};
        } else if (act == PST_DSN_DELAYED) {
            late[nl++] = (struct pst_dsn_rcpt){r, PST_DSN_DELAYED, x->text};
        } else if (act >= 0) {
            ok[no++] = (struct pst_dsn_rcpt){r, (enum pst_dsn_action)act,
                                             x->text};
        }
    }
    pst__dsn_send(sp, hostname, qid, env, fail, nf, orig);
    pst__dsn_send(sp, hostname, qid, env, ok, no, orig);
    pst__dsn_send(sp, hostname, qid, env, late, nl, orig);
    for (size_t i = 0; i < nt; i++)
        free(texts[i]);
    free(texts);
    free(fail);
    free(ok);
    free(late);
    return nl > 0;
}

/* pst__dsn_read_original - see dsn.h. */
int
pst__dsn_read_original(const struct pst_spool_ref *ref, const char *qid,
                       const struct pst_envelope *env, uint64_t cap,
                       struct pst_dsn_orig *o)
{
    struct pst_spool_reader *r = NULL;
    uint64_t size = ref->size;
    int rc;

    memset(o, 0, sizeof(*o));
    rc = pst__reader_open(&r, ref, qid);
    if (rc != 0)
        return rc;
    bool full = env->ret != PST_RET_HDRS && size <= cap;
    size_t want = full ? (size_t)size : PST_DSN_HDR_MAX;
    o->p = pst_xmalloc(want + 1);
    while (o->len < want) {
        ssize_t n = pst_spool_reader_read(r, o->p + o->len, want - o->len);
        if (n < 0) {
            rc = (int)n;
            goto fail;
        }
        if (n == 0)
            break;
        o->len += (size_t)n;
        if (!full) {
            /* the header ends at the first empty line */
            uint8_t *e = memmem(o->p, o->len, "\r\n\r\n", 4);
            if (e != NULL) {
                o->len = (size_t)(e - o->p) + 2;
                break;
            }
        }
    }
    o->full = full;
    pst__reader_close(r);
    return 0;
fail:
    pst__reader_close(r);
    pst__dsn_orig_free(o);
    return rc;
}

void
pst__dsn_orig_free(struct pst_dsn_orig *o)
{
    free(o->p);
    o->p = NULL;
    o->len = 0;
}

static void
put(struct pst_tbuf *b, const char *fmt, ...)
{
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        pst_tbuf_add(b, tmp, PST_MIN((size_t)n, sizeof(tmp) - 1));
}

/* status_code - the enhanced status code in text, or a default by class. */
static void
status_code(const char *text, enum pst_dsn_action a, char *out, size_t n)
{
    for (const char *p = text; *p; p++) {
        if ((p == text || p[-1] == ' ') && (p[0] == '2' || p[0] == '4' ||
                                             p[0] == '5') &&
            p[1] == '.' && isdigit((unsigned char)p[2])) {
            size_t l = strspn(p, "0123456789.");
            if (l < n && (p[l] == ' ' || p[l] == '\0')) {
                memcpy(out, p, l);
                out[l] = '\0';
                return;
            }
        }
    }
    snprintf(out, n, "%s", a == PST_DSN_FAILED    ? "5.0.0"
                           : a == PST_DSN_DELAYED ? "4.0.0"
                                                  : "2.0.0");
}

/* clean - a text for a header field: printable ASCII, one line. */
static void
clean(char *dst, size_t n, const char *s)
{
    size_t o = 0;
    for (; *s && o + 1 < n; s++)
        dst[o++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
    dst[o] = '\0';
}

static void
date_of(char *buf, size_t n, time_t t)
{
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, n, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

bool
pst__dsn_boundary_ok(const char *bnd, const void *content, size_t len)
{
    const char *p = content, *end = p + len;
    size_t bl = strlen(bnd);

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        if (e - p >= 2 && p[0] == '-' && p[1] == '-') {
            /* "--x": x's boundary, without blanks, CR or a closing "--" */
            const char *x = p + 2, *xe = e;
            while (xe > x && (xe[-1] == ' ' || xe[-1] == '\t' ||
                              xe[-1] == '\r'))
                xe--;
            if (xe - x >= 2 && xe[-1] == '-' && xe[-2] == '-')
                xe -= 2;
            size_t xl = (size_t)(xe - x);
            if (xl > 0 && memcmp(x, bnd, PST_MIN(xl, bl)) == 0)
                return false;       /* one starts with the other */
        }
        p = e + 1;
    }
    /* anywhere else too: a line end the reader sees where this does not */
    char delim[PST_DSN_BOUNDARY_LEN + 3];
    size_t n = (size_t)snprintf(delim, sizeof(delim), "--%s", bnd);
    return n < sizeof(delim) && memmem(content, len, delim, n) == NULL;
}

/* new_boundary - a random boundary that suits all n contents. */
static void
new_boundary(char bnd[PST_DSN_BOUNDARY_LEN + 1], const struct iovec *iov,
             size_t n)
{
    static const char hex[] = "0123456789abcdef";
    static uint64_t counter;

    for (;;) {
        uint8_t r[16];
        if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
            /* no entropy: still unique, and still checked below */
            uint64_t t = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
            uint64_t k = ++counter;
            memcpy(r, &t, 8);
            memcpy(r + 8, &k, 8);
        }
        char *o = bnd;
        for (size_t i = 0; i < sizeof(r); i++) {
            *o++ = hex[r[i] >> 4];
            *o++ = hex[r[i] & 15];
        }
        memcpy(o, "=_postern", 10);
        size_t i = 0;
        while (i < n && pst__dsn_boundary_ok(bnd, iov[i].iov_base,
                                             iov[i].iov_len))
            i++;
        if (i == n)
            return;
    }
}

/* dsn_human - the report's first part, for people (header and body). */
static void
dsn_human(struct pst_tbuf *b, const char *hostname,
          const struct pst_dsn_rcpt *rs, size_t n, enum pst_dsn_action a)
{
    char t[600];

    put(b, "Content-Description: Notification\r\n");
    put(b, "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    put(b, "This is the mail system at host %s.\r\n\r\n", hostname);
    if (a == PST_DSN_FAILED)
        put(b, "Your message could not be delivered to one or more "
               "recipients.\r\nIt is attached below.\r\n\r\n");
    else if (a == PST_DSN_DELAYED)
        put(b, "Your message could not be delivered yet. Delivery will "
               "be retried;\r\nthis is only a warning, there is no need to "
               "send the message again.\r\n\r\n");
    else
        put(b, "Your message was successfully delivered to the "
               "destination(s)\r\nlisted below.\r\n\r\n");
    for (size_t i = 0; i < n; i++) {
        clean(t, sizeof(t), rs[i].text ? rs[i].text : "");
        put(b, "<%s>: %s\r\n", rs[i].rcpt->addr, t);
    }
    put(b, "\r\n");
}

/* dsn_status - the message/delivery-status part (RFC 3464 2.2, 2.3). */
static void
dsn_status(struct pst_tbuf *b, const char *hostname, const char *qid,
           const struct pst_envelope *env, const struct pst_dsn_rcpt *rs,
           size_t n, time_t now)
{
    char date[64], t[600];
    bool utf8 = env->smtputf8;

    put(b, "Content-Description: Delivery report\r\n");
    put(b, "Content-Type: message/%s\r\n\r\n",
        utf8 ? "global-delivery-status" : "delivery-status");
    put(b, "Reporting-MTA: dns; %s\r\n", hostname);
    put(b, "X-Postern-Queue-ID: %s\r\n", qid);
    if (env->envid) {
        clean(t, sizeof(t), env->envid);
        put(b, "Original-Envelope-Id: %s\r\n", t);
    }
    date_of(date, sizeof(date), env->arrival ? env->arrival : now);
    put(b, "Arrival-Date: %s\r\n", date);
    for (size_t i = 0; i < n; i++) {
        const struct pst_rcpt *r = rs[i].rcpt;
        char code[32];
        status_code(rs[i].text ? rs[i].text : "", rs[i].action, code,
                    sizeof(code));
        put(b, "\r\n");
        put(b, "Final-Recipient: %s; %s\r\n", utf8 ? "utf-8" : "rfc822",
            r->addr);
        if (r->orcpt) {
            clean(t, sizeof(t), r->orcpt);
            /* ORCPT is "addr-type;xtext"; RFC 3464 wants "type; addr" */
            char *semi = strchr(t, ';');
            if (semi)
                put(b, "Original-Recipient: %.*s; %s\r\n", (int)(semi - t),
                    t, semi + 1);
        }
        put(b, "Action: %s\r\n",
            rs[i].action == PST_DSN_FAILED    ? "failed"
            : rs[i].action == PST_DSN_DELAYED ? "delayed"
            : rs[i].action == PST_DSN_DELIVERED ? "delivered"
                                                : "relayed");
        put(b, "Status: %s\r\n", code);
        if (rs[i].text && rs[i].text[0]) {
            clean(t, sizeof(t), rs[i].text);
            put(b, "Diagnostic-Code: smtp; %s\r\n", t);
        }
    }
    put(b, "\r\n");
}

void
pst__dsn_build(struct pst_tbuf *b, const char *hostname, const char *qid,
               const struct pst_envelope *env, const struct pst_dsn_rcpt *rs,
               size_t n, const struct pst_dsn_orig *orig, time_t now)
{
    char date[64], bnd[PST_DSN_BOUNDARY_LEN + 1];
    enum pst_dsn_action a = n ? rs[0].action : PST_DSN_FAILED;
    bool utf8 = env->smtputf8;
    struct pst_tbuf human = {0}, status = {0};

    /* the parts first, so that the boundary can be checked against them */
    dsn_human(&human, hostname, rs, n, a);
    dsn_status(&status, hostname, qid, env, rs, n, now);
    struct iovec iov[] = {
        {human.p, human.len},
        {status.p, status.len},
        {orig && orig->len ? orig->p : (uint8_t *)"", orig ? orig->len : 0},
    };
    new_boundary(bnd, iov, PST_ARRAY_LEN(iov));

    date_of(date, sizeof(date), now);
    put(b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", hostname);
    put(b, "To: <%s>\r\n", env->sender);
    put(b, "Subject: %s\r\n",
        a == PST_DSN_FAILED    ? "Undelivered Mail Returned to Sender"
        : a == PST_DSN_DELAYED ? "Delayed Mail (still being retried)"
                               : "Successful Mail Delivery Report");
    put(b, "Date: %s\r\n", date);
    put(b, "Message-ID: <%s.%lld.dsn@%s>\r\n", qid, (long long)now, hostname);
    put(b, "Auto-Submitted: auto-replied\r\n");
    put(b, "MIME-Version: 1.0\r\n");
    put(b, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
           "\tboundary=\"%s\"\r\n", bnd);
    put(b, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    /* 1: for people */
    put(b, "--%s\r\n", bnd);
    pst_tbuf_add(b, human.p, human.len);

    /* 2: for programs (RFC 3464 2.2, 2.3) */
    put(b, "--%s\r\n", bnd);
    pst_tbuf_add(b, status.p, status.len);
    pst_tbuf_free(&human);
    pst_tbuf_free(&status);

    /* 3: the original, or its header */
    if (orig && orig->len > 0) {
        put(b, "--%s\r\n", bnd);
        if (orig->full) {
            put(b, "Content-Description: %s\r\n",
                a == PST_DSN_FAILED ? "Undelivered Message" : "Message");
            put(b, "Content-Type: message/%s\r\n",
                utf8 ? "global" : "rfc822");
            if (env->body != PST_BODY_7BIT)
                put(b, "Content-Transfer-Encoding: 8bit\r\n");
        } else {
            put(b, "Content-Description: %s\r\n",
                a == PST_DSN_FAILED ? "Undelivered Message Headers"
                                    : "Message Headers");
            put(b, "Content-Type: text/%s\r\n",
                utf8 ? "global-headers" : "rfc822-headers");
        }
        put(b, "\r\n");
        pst_tbuf_add(b, orig->p, orig->len);
        if (orig->len < 2 || memcmp(orig->p + orig->len - 2, "\r\n", 2) != 0)
            put(b, "\r\n");
        put(b, "\r\n");
    }
    put(b, "--%s--\r\n", bnd);
}

/* ---- injection ---- */

struct inject {
    char qid[PST_QID_LEN + 1];
    char of[PST_QID_LEN + 1];
};

static void
on_committed(void *arg, int status)
{
    struct inject *x = arg;
    if (status == 0)
        pst_info("msg=%s event=dsn_queued dsn=%s", x->of, x->qid);
    else
        pst_err("msg=%s event=dsn_failed error=\"%s\"", x->of,
                strerror(-status));
    free(x);
}

static bool
is_postmaster(const char *addr)
{
    size_t l = strcspn(addr, "@");
    return l == 10 && pst_strncaseeq(addr, "postmaster", 10);
}

/* pst__dsn_send - see dsn.h. */
void
pst__dsn_send(struct pst_spool *sp, const char *host, const char *qid,
              const struct pst_envelope *env, const struct pst_dsn_rcpt *rs,
              size_t n, const struct pst_dsn_orig *orig)
{
    struct pst_envelope e;
    struct pst_tbuf b = {0};
    struct pst_spool_msg *m = NULL;
    struct inject *x;
    const char *to;
    int rc;

    if (n == 0 || sp->closing)
        return;
    if (env->sender[0] == '\0') {
        /* a report that failed: once to the postmaster, then never */
        bool pm = false;
        for (size_t i = 0; i < env->nrcpts; i++)
            pm |= is_postmaster(env->rcpts[i].addr);
        if (pm || rs[0].action != PST_DSN_FAILED) {
            pst_warn("msg=%s event=dsn_dropped reason=\"report about a "
                     "report to the postmaster\"", qid);
            return;
        }
        to = "postmaster";
    } else {
        to = env->sender;
    }
    x = pst_xcalloc(1, sizeof(*x));
    memcpy(x->of, qid, PST_QID_LEN + 1);
    if ((rc = pst_spool_msg_new(sp, &m, x->qid)) != 0) {
        pst_err("msg=%s event=dsn_failed error=\"%s\"", qid, strerror(-rc));
        free(x);
        return;
    }
    /* a double bounce reads like a bounce, addressed to the postmaster */
    struct pst_envelope shown = *env;
    if (env->sender[0] == '\0')
        shown.sender = (char *)to;
    pst__dsn_build(&b, host, qid, &shown, rs, n, orig, time(NULL));
    rc = pst_spool_msg_write(m, b.p, b.len);
    pst_tbuf_free(&b);
    if (rc != 0) {
        pst_err("msg=%s event=dsn_failed error=\"%s\"", qid, strerror(-rc));
        pst_spool_msg_abort(m);
        free(x);
        return;
    }
    pst_envelope_init(&e);
    e.sender = pst_xstrdup("");
    struct pst_rcpt *r = pst_envelope_add_rcpt(&e, to);
    r->notify = PST_NOTIFY_NEVER;
    e.body = (env->body != PST_BODY_7BIT && orig && orig->full)
                 ? PST_BODY_8BITMIME
                 : PST_BODY_7BIT;
    e.smtputf8 = env->smtputf8;
    e.helo = pst_xstrdup(host);
    e.client_name = pst_xstrdup("localhost");
    e.proto = pst_xstrdup("local");
    pst_ip_parse(&e.client_ip, "127.0.0.1");
    e.arrival = time(NULL);
    pst_info("msg=%s event=dsn action=%s to=<%s> recipients=%zu dsn=%s", qid,
             rs[0].action == PST_DSN_FAILED    ? "failed"
             : rs[0].action == PST_DSN_DELAYED ? "delayed"
                                               : "success",
             to, n, x->qid);
    pst_spool_msg_commit(m, &e, on_committed, x);
    pst_envelope_free(&e);
}
