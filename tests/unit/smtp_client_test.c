/*
 * smtp_client_test.c - the outbound SMTP/LMTP engine (queue/smtp_client.c)
 * against a scripted server on the same libuv loop (every byte it receives
 * is recorded and asserted), and against Postfix's smtp-sink (a real
 * server). Covers pipelining, per-recipient results, 452 continuing in a
 * new transaction, 421, HELO fallback, LMTP per-recipient replies,
 * dot-stuffing, folding of long lines, the quoted-printable downgrade,
 * SMTPUTF8 and SIZE refusals before MAIL, TLS required but not offered,
 * a greeting timeout, a body backed up behind a server that stops reading
 * (written in part, the rest queued), connection reuse, and replies out
 * of place (a 2xx to DATA or STARTTLS, a 3xx after MAIL, RCPT or the end of data, a RSET
 * refused, replies sent before their command): protocol errors that
 * defer, never deliver.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "core/log.h"
#include "core/util.h"
#include "queue/smtp_client.h"

/* ---- scripted server ---- */

struct srv;
typedef const char *(*script_fn)(struct srv *s, const char *line);

struct srv {
    uv_loop_t *loop;
    uv_tcp_t lsock;
    uv_tcp_t conn;
    bool have_conn;
    unsigned port;
    script_fn script;
    const char *greeting;           /* NULL: none (hang) */
    char *rx;                       /* everything received */
    size_t rxcap;
    size_t rxlen;
    size_t parsed;
    bool in_data;
    unsigned n_mail, n_rcpt, n_data, n_dot;
    unsigned lmtp_accepted;
    const char *ext;                /* EHLO keywords, "\n" separated */
    const char *rcpt_replies[8];    /* per RCPT occurrence, else 250 */
    const char *dot_replies[8];     /* per reply after the dot */
    unsigned dot_idx;
    bool lmtp;
    int rcvbuf;                     /* SO_RCVBUF of its sockets, or 0 */
    unsigned pause_ms;              /* stop reading this long after 354 */
    uv_timer_t pause_t;
};

static void srv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void srv_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b);

static void
srv_resume(uv_timer_t *t)
{
    struct srv *s = t->data;
    if (s->have_conn)
        uv_read_start((uv_stream_t *)&s->conn, srv_alloc, srv_read);
}

static void
srv_send(struct srv *s, const char *text)
{
    uv_buf_t b;
    uv_write_t *w = malloc(sizeof(*w) + strlen(text) + 2);
    char *d = (char *)(w + 1);
    size_t n = strlen(text);
    memcpy(d, text, n);
    b = uv_buf_init(d, (unsigned)n);
    w->data = w;
    uv_write(w, (uv_stream_t *)&s->conn, &b, 1,
             (uv_write_cb)(void (*)(void))free);
}

static void
srv_reply(struct srv *s, const char *r)
{
    char buf[2048];
    snprintf(buf, sizeof(buf), "%s\r\n", r);
    srv_send(s, buf);
}

static void
srv_line(struct srv *s, const char *l)
{
    if (s->in_data) {
        if (strcmp(l, ".") == 0) {
            s->in_data = false;
            s->n_dot++;
            unsigned n = s->lmtp ? s->lmtp_accepted : 1;
            for (unsigned i = 0; i < n; i++) {
                const char *r = s->dot_replies[s->dot_idx];
                s->dot_idx += r != NULL;
                srv_reply(s, r ? r : "250 2.0.0 Ok: queued");
            }
        }
        return;
    }
    const char *r = s->script ? s->script(s, l) : NULL;
    if (r != NULL) {
        if (r[0])
            srv_reply(s, r);
        return;
    }
    if (strncmp(l, "EHLO", 4) == 0 || strncmp(l, "LHLO", 4) == 0) {
        char buf[1024];
        snprintf(buf, sizeof(buf), "250-fake.test\r\n");
        const char *e = s->ext ? s->ext
                               : "PIPELINING\nSIZE 1000000\n8BITMIME\n"
                                 "SMTPUTF8\nENHANCEDSTATUSCODES";
        char tmp[512];
        snprintf(tmp, sizeof(tmp), "%s", e);
        char *save, *k = strtok_r(tmp, "\n", &save);
        while (k) {
            char *next = strtok_r(NULL, "\n", &save);
            size_t o = strlen(buf);
            snprintf(buf + o, sizeof(buf) - o, "250%c%s\r\n",
                     next ? '-' : ' ', k);
            k = next;
        }
        if (!e[0])
            snprintf(buf, sizeof(buf), "250 fake.test\r\n");
        srv_send(s, buf);
    } else if (strncmp(l, "HELO", 4) == 0) {
        srv_reply(s, "250 fake.test");
    } else if (strncmp(l, "MAIL", 4) == 0) {
        s->n_mail++;
        s->lmtp_accepted = 0;
        srv_reply(s, "250 2.1.0 Ok");
    } else if (strncmp(l, "RCPT", 4) == 0) {
        const char *rr = s->rcpt_replies[s->n_rcpt];
        s->n_rcpt++;
        if (rr == NULL || rr[0] == '2')
            s->lmtp_accepted++;
        srv_reply(s, rr ? rr : "250 2.1.5 Ok");
    } else if (strcmp(l, "DATA") == 0) {
        s->n_data++;
        s->in_data = true;
        srv_reply(s, "354 go ahead");
        if (s->pause_ms) {
            /* the client's writes back up: its socket takes part of a
             * piece, the rest waits in a write request */
            uv_read_stop((uv_stream_t *)&s->conn);
            uv_timer_start(&s->pause_t, srv_resume, s->pause_ms, 0);
        }
    } else if (strcmp(l, "RSET") == 0) {
        srv_reply(s, "250 2.0.0 Ok");
    } else if (strcmp(l, "QUIT") == 0) {
        srv_reply(s, "221 2.0.0 Bye");
        uv_close((uv_handle_t *)&s->conn, NULL);
        s->have_conn = false;
    } else {
        srv_reply(s, "502 5.5.2 what?");
    }
}

static void
srv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct srv *s = h->data;
    (void)hint;
    *b = uv_buf_init(s->rx + s->rxlen, (unsigned)(s->rxcap - 1 - s->rxlen));
}

static void
srv_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct srv *s = st->data;
    (void)b;
    if (n < 0) {
        if (s->have_conn) {
            uv_close((uv_handle_t *)&s->conn, NULL);
            s->have_conn = false;
        }
        return;
    }
    s->rxlen += (size_t)n;
    for (;;) {
        char *nl = memmem(s->rx + s->parsed, s->rxlen - s->parsed, "\r\n", 2);
        if (nl == NULL)
            break;
        char line[4096];
        size_t len = (size_t)(nl - (s->rx + s->parsed));
        size_t keep = len < sizeof(line) - 1 ? len : sizeof(line) - 1;
        memcpy(line, s->rx + s->parsed, keep);
        line[keep] = '\0';
        s->parsed += len + 2;
        srv_line(s, line);
        if (!s->have_conn)
            break;
    }
}

static void
srv_accept(uv_stream_t *l, int status)
{
    struct srv *s = l->data;
    assert_int_equal(status, 0);
    assert_false(s->have_conn);
    uv_tcp_init(s->loop, &s->conn);
    s->conn.data = s;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&s->conn), 0);
    s->have_conn = true;
    if (s->greeting[0])
        srv_reply(s, s->greeting);
    uv_read_start((uv_stream_t *)&s->conn, srv_alloc, srv_read);
}

static void
srv_start(struct srv *s, uv_loop_t *loop)
{
    struct sockaddr_in sa;
    int len = sizeof(sa);
    s->loop = loop;
    if (s->greeting == NULL)
        s->greeting = "220 fake.test ESMTP";
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(loop, &s->lsock);
    s->lsock.data = s;
    assert_int_equal(uv_tcp_bind(&s->lsock, (struct sockaddr *)&sa, 0), 0);
    if (s->rcvbuf)
        assert_int_equal(
            uv_recv_buffer_size((uv_handle_t *)&s->lsock, &s->rcvbuf), 0);
    uv_timer_init(loop, &s->pause_t);
    s->pause_t.data = s;
    assert_int_equal(uv_listen((uv_stream_t *)&s->lsock, 8, srv_accept), 0);
    uv_tcp_getsockname(&s->lsock, (struct sockaddr *)&sa, &len);
    s->port = ntohs(sa.sin_port);
}

static void
srv_stop(struct srv *s)
{
    uv_close((uv_handle_t *)&s->lsock, NULL);
    uv_close((uv_handle_t *)&s->pause_t, NULL);
    if (s->have_conn) {
        uv_close((uv_handle_t *)&s->conn, NULL);
        s->have_conn = false;
    }
}

/* ---- body from memory ---- */

struct membody {
    const char *text;
    size_t len, off;
    uv_timer_t t;
    struct pst_smtpc *c;
    pst_smtpc_read_done done;
    void *buf;
    size_t want;
};

static void
mb_fire(uv_timer_t *t)
{
    struct membody *b = t->data;
    size_t n = b->len - b->off;
    if (n > b->want)
        n = b->want;
    memcpy(b->buf, b->text + b->off, n);
    b->off += n;
    b->done(b->c, (ssize_t)n);
}

static void
mb_read(void *arg, void *buf, size_t len, struct pst_smtpc *c,
        pst_smtpc_read_done done)
{
    struct membody *b = arg;
    b->buf = buf;
    b->want = len < 7 ? len : 7 + len % 5;   /* small odd pieces */
    b->want = len;
    b->c = c;
    b->done = done;
    uv_timer_start(&b->t, mb_fire, 0, 0);
}

static int
mb_rewind(void *arg)
{
    ((struct membody *)arg)->off = 0;
    return 0;
}

/* ---- a test run ---- */

struct run {
    uv_loop_t loop;
    struct srv srv;
    struct pst_smtpc_opts o;
    struct pst_envelope env;
    struct pst_smtpc_rcpt r[4];
    struct pst_smtpc_msg m;
    struct membody body;
    struct pst_smtpc *c;
    int open_status;
    bool open_perm;
    char open_text[256];
    int opened, sent;
    bool reusable;
    bool close_after;
    SSL_CTX *ctx;
};

static void
on_sent(void *arg, struct pst_smtpc *c, bool reusable)
{
    struct run *r = arg;
    r->sent++;
    r->reusable = reusable;
    pst_smtpc_close(c);
    r->c = NULL;
    srv_stop(&r->srv);
    uv_close((uv_handle_t *)&r->body.t, NULL);
}

static void
on_open(void *arg, struct pst_smtpc *c, int status, bool perm,
        const char *text)
{
    struct run *r = arg;
    r->opened++;
    r->open_status = status;
    r->open_perm = perm;
    if (status != 0) {
        snprintf(r->open_text, sizeof(r->open_text), "%s", text);
        r->c = NULL;
        srv_stop(&r->srv);
        uv_close((uv_handle_t *)&r->body.t, NULL);
        return;
    }
    pst_smtpc_send(c, &r->m, on_sent, r);
}

static void
run_init(struct run *r, const char *text, size_t nrcpt)
{
    memset(r, 0, sizeof(*r));
    r->srv.rxcap = 16u << 20;
    r->srv.rx = malloc(r->srv.rxcap);
    uv_loop_init(&r->loop);
    r->o.helo = "postern.test";
    r->o.tls = PST_DTLS_NONE;
    r->o.rcpts_per_txn = 100;
    r->o.reply_lines_max = 100;
    r->o.t_connect = r->o.t_greeting = r->o.t_helo = r->o.t_mail = 5;
    r->o.t_rcpt = r->o.t_data = r->o.t_block = r->o.t_final = 5;
    pst_envelope_init(&r->env);
    r->env.sender = strdup("sender@example.org");
    static const char *const addrs[] = {"a@dest.test", "b@dest.test",
                                        "c@dest.test", "d@dest.test"};
    for (size_t i = 0; i < nrcpt; i++)
        pst_envelope_add_rcpt(&r->env, addrs[i]);
    for (size_t i = 0; i < nrcpt; i++)
        r->r[i].rcpt = &r->env.rcpts[i];
    r->body.text = text;
    r->body.len = strlen(text);
    uv_timer_init(&r->loop, &r->body.t);
    r->body.t.data = &r->body;
    r->m.env = &r->env;
    r->m.rcpts = r->r;
    r->m.n = nrcpt;
    r->m.body.arg = &r->body;
    r->m.body.read = mb_read;
    r->m.body.rewind = mb_rewind;
    r->m.body.size = r->body.len;
}

static void
run_go(struct run *r)
{
    struct sockaddr_in sa;
    srv_start(&r->srv, &r->loop);
    uv_ip4_addr("127.0.0.1", (int)r->srv.port, &sa);
    r->c = pst_smtpc_open(&r->loop, &r->o, (struct sockaddr *)&sa,
                          "fake.test", on_open, r);
    assert_int_equal(r->opened, 0);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    r->srv.rx[r->srv.rxlen] = '\0';
}

static void
run_done(struct run *r)
{
    assert_int_equal(uv_loop_close(&r->loop), 0);
    free(r->srv.rx);
    pst_envelope_free(&r->env);
    if (r->ctx)
        SSL_CTX_free(r->ctx);
}

static void
expect(struct run *r, size_t i, enum pst_smtpc_res res, const char *text)
{
    if (r->r[i].res != res || (text && !strstr(r->r[i].text, text)))
        fail_msg("rcpt %zu: got %d \"%s\", want %d \"%s\"", i, r->r[i].res,
                 r->r[i].text, res, text ? text : "");
}

static const char body1[] =
    "Subject: test\r\n"
    "\r\n"
    "line one\r\n"
    ".starts with a dot\r\n"
    "..two dots\r\n"
    "end\r\n";

static void
test_pipelined_ok(void **state)
{
    struct run r;
    (void)state;
    run_init(&r, body1, 2);
    run_go(&r);
    assert_int_equal(r.sent, 1);
    expect(&r, 0, PST_SMTPC_OK, "fake.test[127.0.0.1] said: 250 2.0.0 Ok");
    expect(&r, 1, PST_SMTPC_OK, NULL);
    assert_true(r.reusable);
    /* one pipelined group, SIZE with the stored size */
    char want[512];
    snprintf(want, sizeof(want),
             "EHLO postern.test\r\nMAIL FROM:<sender@example.org> SIZE=%zu\r\n"
             "RCPT TO:<a@dest.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n"
             "Subject: test\r\n\r\nline one\r\n..starts with a dot\r\n"
             "...two dots\r\nend\r\n.\r\n",
             strlen(body1));
    assert_string_equal(r.srv.rx, want);
    run_done(&r);
}

/* A body of 6 MB (more than the kernel's socket buffers take) to a server
 * that stops reading for a while after its 354: the socket takes part of
 * a piece and the rest is queued behind it; every octet arrives once and
 * in order, dot-stuffed, then the final dot. */
static void
test_body_backpressure(void **state)
{
    struct run r;
    enum { LINES = 130000 };
    (void)state;
    char *text = malloc(LINES * 64 + 64), *want = malloc(LINES * 66 + 64);
    size_t tl = 0, wl = 0;
    tl += (size_t)sprintf(text, "Subject: big\r\n\r\n");
    for (unsigned i = 0; i < LINES; i++)
        tl += (size_t)sprintf(text + tl, "%s%07u %s\r\n",
                              i % 7 == 0 ? "." : "", i,
                              "abcdefghijklmnopqrstuvwxyz0123456789");
    /* the wire: dot-stuffed, then the dot */
    for (size_t i = 0; i < tl; i++) {
        if (text[i] == '.' && (i == 0 || text[i - 1] == '\n'))
            want[wl++] = '.';
        want[wl++] = text[i];
    }
    memcpy(want + wl, ".\r\n", 3);
    wl += 3;
    run_init(&r, text, 1);
    r.o.t_block = r.o.t_final = 60;
    r.srv.ext = "PIPELINING\nSIZE 100000000\n8BITMIME";
    r.srv.rcvbuf = 4096;
    r.srv.pause_ms = 300;
    run_go(&r);
    assert_int_equal(r.sent, 1);
    expect(&r, 0, PST_SMTPC_OK, NULL);
    const char *d = strstr(r.srv.rx, "DATA\r\n");
    assert_non_null(d);
    d += 6;
    assert_int_equal(r.srv.rx + r.srv.rxlen - d, wl);
    assert_memory_equal(d, want, wl);
    run_done(&r);
    free(text);
    free(want);
}

static void
test_rcpt_results(void **state)
{
    struct run r;
    (void)state;
    run_init(&r, body1, 3);
    r.srv.rcpt_replies[0] = "550 5.1.1 no such user";
    r.srv.rcpt_replies[1] = "451 4.3.0 try later";
    run_go(&r);
    expect(&r, 0, PST_SMTPC_PERM, "550 5.1.1 no such user (in reply to RCPT TO)");
    expect(&r, 1, PST_SMTPC_TEMP, "451 4.3.0");
    expect(&r, 2, PST_SMTPC_OK, "250 2.0.0");
    run_done(&r);
}

static void
test_452_new_transaction(void **state)
{
    struct run r;
    (void)state;
    run_init(&r, body1, 3);
    r.srv.rcpt_replies[1] = "452 4.5.3 too many recipients";
    r.srv.rcpt_replies[2] = "452 4.5.3 too many recipients";
    run_go(&r);
    expect(&r, 0, PST_SMTPC_OK, NULL);
    expect(&r, 1, PST_SMTPC_OK, NULL);
    expect(&r, 2, PST_SMTPC_OK, NULL);
    assert_int_equal(r.srv.n_mail, 2);
    assert_int_equal(r.srv.n_dot, 2);
    run_done(&r);
}

static const char *
script_421(struct srv *s, const char *l)
{
    (void)s;
    if (strncmp(l, "MAIL", 4) == 0)
        return "421 4.3.2 shutting down";
    return NULL;
}

static void
test_421_defers(void **state)
{
    struct run r;
    (void)state;
    run_init(&r, body1, 2);
    r.srv.script = script_421;
    run_go(&r);
    expect(&r, 0, PST_SMTPC_TEMP, "421 4.3.2 shutting down");
    expect(&r, 1, PST_SMTPC_TEMP, "421 4.3.2");
    assert_false(r.reusable);
    run_done(&r);
}

static const char *
script_no_ehlo(struct srv *s, const char *l)
{
    (void)s;
    if (strncmp(l, "EHLO", 4) == 0)
        return "502 5.5.2 EHLO not here";
    return NULL;
}

static void
test_helo_fallback(void **state)
{
    struct run r;
    (void)state;
    run_init(&r, body1, 2);
    r.srv.script = script_no_ehlo;
    r.srv.rcpt_replies[0] = "550 5.1.1 unknown";
    run_go(&r);
    expect(&r, 0, PST_SMTPC_PERM, "550 5.1.1");
    expect(&r, 1, PST_SMTPC_OK, NULL);
    /* no PIPELINING: one command at a time, no SIZE */
    assert_non_null(strstr(r.srv.rx, "HELO postern.test\r\nMAIL FROM:"
                                     "<sender@example.org>\r\n"));
    run_done(&r);
}

static void
test_lmtp(void **state)
{
    struct run r;
    (void)state;
    run_init(&r, body1, 3);
    r.o.lmtp = true;
    r.srv.lmtp = true;
    r.srv.rcpt_replies[1] = "550 5.1.1 unknown";
    r.srv.dot_replies[0] = "250 2.0.0 <a> saved";
    r.srv.dot_replies[1] = "452 4.2.2 mailbox full";
    run_go(&r);
    expect(&r, 0, PST_SMTPC_OK, "saved");
    expect(&r, 1, PST_SMTPC_PERM, "550 5.1.1");
    expect(&r, 2, PST_SMTPC_TEMP, "452 4.2.2 mailbox full");
    assert_non_null(strstr(r.srv.rx, "LHLO postern.test\r\n"));
    run_done(&r);
}

static void
test_long_line_folded(void **state)
{
    struct run r;
    char *text = malloc(5000);
    (void)state;
    strcpy(text, "X-Long: ");
    memset(text + 8, 'h', 1500);
    strcpy(text + 1508, "\r\n\r\n");
    memset(text + 1512, 'b', 2100);
    strcpy(text + 3612, "\r\n");
    run_init(&r, text, 1);
    run_go(&r);
    expect(&r, 0, PST_SMTPC_OK, NULL);
    /* every wire line is at most 998 octets + CRLF */
    const char *p = strstr(r.srv.rx, "X-Long: ");
    assert_non_null(p);
    size_t maxl = 0, hb = 0, bb = 0;
    while (*p) {
        const char *e = strstr(p, "\r\n");
        if (e == NULL)
            break;
        maxl = (size_t)(e - p) > maxl ? (size_t)(e - p) : maxl;
        for (const char *q = p; q < e; q++) {
            hb += *q == 'h';
            bb += *q == 'b';
        }
        p = e + 2;
    }
    assert_true(maxl <= 998);
    assert_int_equal(hb, 1500);         /* nothing lost */
    assert_int_equal(bb, 2100);
    /* the header continues with a space */
    assert_non_null(strstr(r.srv.rx, "hh\r\n hh"));
    run_done(&r);
    free(text);
}

static const char body8[] =
    "Subject: caf\xc3\xa9\r\n"
    "Content-Type: multipart/mixed; boundary=\"BB\"\r\n"
    "MIME-Version: 1.0\r\n"
    "\r\n"
    "preamble\r\n"
    "--BB\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "caf\xc3\xa9 = coffee \r\n"
    ".dot\r\n"
    "--BB\r\n"
    "Content-Type: application/octet-stream\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "AAEC\r\n"
    "--BB--\r\n"
    "epilogue\r\n";

static void
test_8bit_downgrade(void **state)
{
    struct run r;
    (void)state;
    run_init(&r, body8, 1);
    r.env.body = PST_BODY_8BITMIME;
    r.srv.ext = "PIPELINING\nSIZE 1000000";
    run_go(&r);
    expect(&r, 0, PST_SMTPC_OK, NULL);
    assert_null(strstr(r.srv.rx, "BODY=8BITMIME"));
    const char *part = strstr(r.srv.rx, "charset=utf-8\r\n");
    assert_non_null(part);
    assert_non_null(strstr(part, "Content-Transfer-Encoding: quoted-printable"
                                 "\r\n\r\ncaf=C3=A9 =3D coffee=20\r\n"
                                 "..dot\r\n--BB\r\n"));
    assert_null(strstr(part, "8bit"));
    /* the base64 part passes unchanged */
    assert_non_null(strstr(r.srv.rx, "Content-Transfer-Encoding: base64\r\n"
                                     "\r\nAAEC\r\n--BB--\r\nepilogue\r\n.\r\n"));
    run_done(&r);

    /* policy bounce: 5.6.3 before MAIL */
    run_init(&r, body8, 1);
    r.env.body = PST_BODY_8BITMIME;
    r.o.eight_bit = PST_8BIT_BOUNCE;
    r.srv.ext = "PIPELINING";
    run_go(&r);
    expect(&r, 0, PST_SMTPC_PERM, "5.6.3");
    assert_int_equal(r.srv.n_mail, 0);
    run_done(&r);
}

static void
test_refused_before_mail(void **state)
{
    struct run r;
    (void)state;
    run_init(&r, body1, 1);
    r.env.smtputf8 = true;
    r.srv.ext = "PIPELINING\n8BITMIME\nSIZE 1000";
    run_go(&r);
    expect(&r, 0, PST_SMTPC_PERM, "5.6.7");
    assert_int_equal(r.srv.n_mail, 0);
    run_done(&r);

    run_init(&r, body1, 1);
    r.srv.ext = "PIPELINING\nSIZE 20";
    run_go(&r);
    expect(&r, 0, PST_SMTPC_PERM, "5.3.4");
    assert_int_equal(r.srv.n_mail, 0);
    run_done(&r);
}

static void
test_encrypt_without_starttls(void **state)
{
    struct run r;
    (void)state;
    run_init(&r, body1, 1);
    r.ctx = SSL_CTX_new(TLS_client_method());
    r.o.ssl_ctx = r.ctx;
    r.o.tls = PST_DTLS_ENCRYPT;
    run_go(&r);
    assert_int_equal(r.opened, 1);
    assert_int_not_equal(r.open_status, 0);
    assert_false(r.open_perm);
    assert_non_null(strstr(r.open_text, "4.7.4"));
    assert_int_equal(r.srv.n_mail, 0);
    run_done(&r);
}

static void
test_greeting_timeout(void **state)
{
    struct run r;
    (void)state;
    run_init(&r, body1, 1);
    r.srv.greeting = "";
    r.o.t_greeting = 1;
    uint64_t t0 = uv_hrtime();
    run_go(&r);
    assert_int_equal(r.opened, 1);
    assert_non_null(strstr(r.open_text, "timeout"));
    assert_true(uv_hrtime() - t0 >= UINT64_C(900000000));
    run_done(&r);
}

/* The downgrade takes its parts from core/mime.c's model of the text, so
 * it agrees with the parser the filters' tree came from. Messages where a
 * second, smaller parser once disagreed: a boundary= in another field
 * (it took the first one in the raw header), an RFC 2231 boundary, a
 * Content-Type folded inside its boundary parameter. Each passed its
 * 8-bit part unconverted to a hop without 8BITMIME. */
static void
test_downgrade_follows_the_model(void **state)
{
    static const char *const heads[] = {
        "X-Note: see boundary=\"WRONG\" below\r\n"
        "Content-Type: multipart/mixed; boundary=\"RIGHT\"\r\n",
        "Content-Type: multipart/mixed; boundary*0=\"RI\";\r\n"
        " boundary*1=\"GHT\"\r\n",
        "Content-Type:\r\n multipart/mixed;\r\n boundary=\r\n \"RIGHT\"\r\n",
    };
    (void)state;
    for (size_t i = 0; i < PST_ARRAY_LEN(heads); i++) {
        char text[1024];
        struct run r;
        snprintf(text, sizeof(text),
                 "%sMIME-Version: 1.0\r\n\r\n"
                 "--RIGHT\r\n"
                 "Content-Type: text/plain; charset=utf-8\r\n"
                 "Content-Transfer-Encoding: 8bit\r\n"
                 "\r\n"
                 "caf\xc3\xa9\r\n"
                 "--RIGHT--\r\n", heads[i]);
        run_init(&r, text, 1);
        r.env.body = PST_BODY_8BITMIME;
        r.srv.ext = "PIPELINING\nSIZE 1000000";
        run_go(&r);
        expect(&r, 0, PST_SMTPC_OK, NULL);
        const char *d = strstr(r.srv.rx, "\r\nDATA\r\n");
        assert_non_null(d);
        for (const char *q = d; *q; q++)
            if ((unsigned char)*q >= 0x80)
                fail_msg("case %zu: 8-bit octet at %zu on the wire", i,
                         (size_t)(q - d));
        assert_non_null(strstr(d, "charset=utf-8\r\n"
                                  "Content-Transfer-Encoding: "
                                  "quoted-printable\r\n\r\ncaf=C3=A9\r\n"
                                  "--RIGHT--\r\n"));
        assert_null(strstr(d, "8bit"));
        run_done(&r);
    }
}

/* A run of bare CRs (a filter's replacement text, or a spool file with
 * valid checksums, can hold one): each is a line end of its own on the
 * wire, written as CRLF; no line buffer is overrun (the writer once
 * appended every CR after the first without its length check). */
static void
test_bare_cr_run(void **state)
{
    struct run r;
    size_t n = 3000;
    char *text = malloc(n + 64);
    (void)state;
    strcpy(text, "Subject: x\r\n\r\n");
    size_t o = strlen(text);
    memset(text + o, '\r', n);
    strcpy(text + o + n, "\r\nend\rlf\n.cr\r");
    run_init(&r, text, 1);
    run_go(&r);
    expect(&r, 0, PST_SMTPC_OK, NULL);
    const char *p = strstr(r.srv.rx, "Subject: x\r\n\r\n");
    assert_non_null(p);
    p += strlen("Subject: x\r\n\r\n");
    for (size_t i = 0; i < n + 1; i++, p += 2)
        if (strncmp(p, "\r\n", 2) != 0)
            fail_msg("line %zu after the header is not empty", i);
    assert_string_equal(p, "end\r\nlf\r\n..cr\r\n.\r\n");
    run_done(&r);
    free(text);
}

/* ENVID and ORCPT are stored as the client sent them (xtext) and go out
 * unchanged: "abc+2Bdef" once became "abc+2B2Bdef". A value that cannot
 * stand in the command (a damaged queue file) is left out. */
static void
test_dsn_params_as_given(void **state)
{
    struct run r;
    (void)state;
    run_init(&r, body1, 2);
    r.srv.ext = "PIPELINING\nDSN";
    r.env.envid = strdup("abc+2Bdef");
    r.env.ret = PST_RET_HDRS;
    r.env.rcpts[0].orcpt = strdup("rfc822;a+2Bb@dest.test");
    r.env.rcpts[0].notify = PST_NOTIFY_FAILURE | PST_NOTIFY_DELAY;
    r.env.rcpts[1].orcpt = strdup("rfc822;b@dest.test\r\nRSET");
    run_go(&r);
    expect(&r, 0, PST_SMTPC_OK, NULL);
    assert_non_null(strstr(r.srv.rx, "MAIL FROM:<sender@example.org> "
                                     "RET=HDRS ENVID=abc+2Bdef\r\n"));
    assert_non_null(strstr(r.srv.rx, "RCPT TO:<a@dest.test> NOTIFY=FAILURE,"
                                     "DELAY ORCPT=rfc822;a+2Bb@dest.test\r\n"));
    assert_non_null(strstr(r.srv.rx, "RCPT TO:<b@dest.test>\r\n"));
    run_done(&r);

    run_init(&r, body1, 1);
    r.srv.ext = "DSN";
    r.env.envid = strdup("a b");
    run_go(&r);
    assert_non_null(strstr(r.srv.rx, "MAIL FROM:<sender@example.org>\r\n"));
    run_done(&r);
}

/* ---- replies out of place (a reply code the step does not expect) ---- */

static const char *
script_data_250(struct srv *s, const char *l)
{
    (void)s;
    if (strcmp(l, "DATA") == 0)
        return "250 2.0.0 Ok";
    return NULL;
}

/* A 2xx to DATA is not a delivery: nothing was sent. Every recipient of
 * the transaction is deferred and the connection is not used again. */
static void
test_data_2xx_defers(void **state)
{
    struct run r;
    (void)state;
    static const char *const exts[] = {
        "PIPELINING\nSIZE 1000000\n8BITMIME", "8BITMIME", NULL};
    for (int i = 0; i < 3; i++) {
        run_init(&r, body1, 2);
        r.srv.script = script_data_250;
        if (exts[i] != NULL) {
            r.srv.ext = exts[i];
        } else {
            r.o.lmtp = true;
            r.srv.lmtp = true;
        }
        run_go(&r);
        assert_int_equal(r.sent, 1);
        expect(&r, 0, PST_SMTPC_TEMP, "250 2.0.0 Ok (in reply to DATA)");
        expect(&r, 1, PST_SMTPC_TEMP, "protocol error");
        assert_false(r.reusable);
        assert_null(strstr(r.srv.rx, "Subject: test"));
        run_done(&r);
    }
}

struct odd {
    const char *verb;               /* command the odd reply answers */
    const char *reply;
    bool lmtp;
};

static const struct odd *odd_cur;

static const char *
script_odd(struct srv *s, const char *l)
{
    (void)s;
    if (strncmp(l, odd_cur->verb, strlen(odd_cur->verb)) == 0)
        return odd_cur->reply;
    return NULL;
}

/* Each step takes only the replies it expects; any other code (a 3xx
 * where no data is asked for, a 2xx where 354 or 220 is) defers every
 * open recipient and retires the connection. */
static void
test_out_of_place_codes(void **state)
{
    static const struct odd odds[] = {
        {"MAIL", "354 go ahead", false},
        {"RCPT", "354 go ahead", false},
        {"DATA", "334 what", false},
        {"DATA", "220 hello", false},
        {"LHLO", "220 hi", true},
        {"EHLO", "220 hi", false},
    };
    (void)state;
    for (size_t i = 0; i < PST_ARRAY_LEN(odds); i++) {
        struct run r;
        odd_cur = &odds[i];
        run_init(&r, body1, 2);
        r.srv.script = script_odd;
        r.o.lmtp = r.srv.lmtp = odds[i].lmtp;
        print_message("%s -> %s\n", odds[i].verb, odds[i].reply);
        run_go(&r);
        if (odds[i].verb[1] == 'H') {
            assert_int_equal(r.opened, 1);
            assert_int_not_equal(r.open_status, 0);
            assert_false(r.open_perm);
            assert_non_null(strstr(r.open_text, "protocol error"));
            assert_int_equal(r.sent, 0);
        } else {
            assert_int_equal(r.sent, 1);
            expect(&r, 0, PST_SMTPC_TEMP, "protocol error");
            expect(&r, 1, PST_SMTPC_TEMP, "protocol error");
            assert_false(r.reusable);
        }
        run_done(&r);
    }
}

/* A 3xx after the end of data (SMTP, or one of LMTP's per-recipient
 * replies) is no result: deferred, the connection retired. */
static void
test_dot_3xx_defers(void **state)
{
    struct run r;
    (void)state;
    run_init(&r, body1, 2);
    r.srv.dot_replies[0] = "354 more please";
    run_go(&r);
    expect(&r, 0, PST_SMTPC_TEMP, "protocol error");
    expect(&r, 1, PST_SMTPC_TEMP, "(in reply to end of data)");
    assert_false(r.reusable);
    run_done(&r);

    run_init(&r, body1, 3);
    r.o.lmtp = r.srv.lmtp = true;
    r.srv.dot_replies[0] = "250 2.0.0 <a> saved";
    r.srv.dot_replies[1] = "354 more please";
    run_go(&r);
    expect(&r, 0, PST_SMTPC_OK, "saved");
    expect(&r, 1, PST_SMTPC_TEMP, "protocol error");
    expect(&r, 2, PST_SMTPC_TEMP, "protocol error");
    assert_false(r.reusable);
    run_done(&r);
}

static const char *
script_rset_354(struct srv *s, const char *l)
{
    (void)s;
    if (strcmp(l, "DATA") == 0)
        return "451 4.3.0 not now";
    if (strcmp(l, "RSET") == 0)
        return "354 go ahead";
    return NULL;
}

/* A RSET not answered 2xx leaves the hop's state unknown: the recipient
 * that a 452 moved to the next transaction is deferred, not sent on. */
static void
test_rset_refused_stops(void **state)
{
    struct run r;
    (void)state;
    run_init(&r, body1, 2);
    r.srv.script = script_rset_354;
    r.srv.rcpt_replies[1] = "452 4.5.3 too many recipients";
    run_go(&r);
    expect(&r, 0, PST_SMTPC_TEMP, "451 4.3.0 not now (in reply to DATA)");
    expect(&r, 1, PST_SMTPC_TEMP, "(in reply to RSET)");
    assert_int_equal(r.srv.n_mail, 1);
    assert_false(r.reusable);
    run_done(&r);
}

static const char *
script_extra_replies(struct srv *s, const char *l)
{
    (void)s;
    if (strncmp(l, "MAIL", 4) == 0)
        return "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok";
    return NULL;
}

/* Without PIPELINING one command waits for its reply: replies that were
 * already in before a command was written cannot answer it. */
static void
test_reply_before_command(void **state)
{
    struct run r;
    (void)state;
    run_init(&r, body1, 1);
    r.srv.script = script_extra_replies;
    r.srv.ext = "8BITMIME";
    run_go(&r);
    assert_int_equal(r.sent, 1);
    expect(&r, 0, PST_SMTPC_TEMP, "replied before the command was sent");
    assert_false(r.reusable);
    assert_null(strstr(r.srv.rx, "Subject: test"));
    run_done(&r);
}

static const char *
script_starttls_250(struct srv *s, const char *l)
{
    (void)s;
    if (strcmp(l, "STARTTLS") == 0)
        return "250 2.0.0 Ok";
    return NULL;
}

/* STARTTLS answered 250 (not 220, not a refusal): the hop's state is
 * unknown, so even under tls = may nothing follows in plaintext. */
static void
test_starttls_2xx_is_no_refusal(void **state)
{
    struct run r;
    (void)state;
    run_init(&r, body1, 1);
    r.ctx = SSL_CTX_new(TLS_client_method());
    r.o.ssl_ctx = r.ctx;
    r.o.tls = PST_DTLS_MAY;
    r.srv.script = script_starttls_250;
    r.srv.ext = "PIPELINING\nSTARTTLS";
    run_go(&r);
    assert_int_equal(r.opened, 1);
    assert_int_not_equal(r.open_status, 0);
    assert_non_null(strstr(r.open_text, "protocol error"));
    assert_int_equal(r.srv.n_mail, 0);
    run_done(&r);
}

/* ---- smtp-sink (Postfix) ---- */

static unsigned
free_tcp_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

/* smtp-sink on a free loopback port, waited for until it takes a
 * connection. The port was free when picked, but any process may bind it
 * before smtp-sink does; smtp-sink then exits, and is started again on
 * another port. */
static pid_t
start_sink(unsigned *port)
{
    char addr[64];
    for (int attempt = 0; attempt < 5; attempt++) {
        *port = free_tcp_port();
        snprintf(addr, sizeof(addr), "127.0.0.1:%u", *port);
        pid_t pid = fork();
        if (pid == 0) {
            execlp("smtp-sink", "smtp-sink", "-u", "nobody", "-c", addr,
                   "10", (char *)NULL);
            _exit(127);
        }
        assert_true(pid > 0);
        /* bounded by count and by time: 300 x 100 ms at most */
        for (int i = 0; i < 300; i++) {
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                /* 127: no smtp-sink at all, which no retry mends */
                assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 127);
                pid = 0;
                break;
            }
            struct sockaddr_in sa;
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            uv_ip4_addr("127.0.0.1", (int)*port, &sa);
            int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
            close(fd);
            if (rc == 0)
                return pid;
            usleep(100000);
        }
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            fail_msg("smtp-sink on port %u never took a connection", *port);
        }
    }
    fail_msg("smtp-sink could not bind a free port in 5 attempts");
    return -1;
}

struct reuse {
    uv_loop_t loop;
    struct pst_smtpc_opts o;
    struct pst_envelope env;
    struct pst_smtpc_rcpt r[1];
    struct pst_smtpc_msg m;
    struct membody body;
    int sent_ok;
    int rounds;
};

static void
reuse_sent(void *arg, struct pst_smtpc *c, bool reusable)
{
    struct reuse *x = arg;
    x->sent_ok += x->r[0].res == PST_SMTPC_OK;
    if (x->r[0].res != PST_SMTPC_OK)
        print_message("smtp-sink: %s\n", x->r[0].text);
    if (reusable && ++x->rounds < 20) {
        x->r[0].res = PST_SMTPC_PENDING;
        x->body.off = 0;
        pst_smtpc_send(c, &x->m, reuse_sent, x);
        return;
    }
    pst_smtpc_close(c);
    uv_close((uv_handle_t *)&x->body.t, NULL);
}

static void
reuse_open(void *arg, struct pst_smtpc *c, int status, bool perm,
           const char *text)
{
    struct reuse *x = arg;
    if (status != 0) {
        print_message("open: %s\n", text);
        uv_close((uv_handle_t *)&x->body.t, NULL);
        return;
    }
    pst_smtpc_send(c, &x->m, reuse_sent, x);
}

static void
test_smtp_sink_reuse(void **state)
{
    struct reuse x;
    struct sockaddr_in sa;
    unsigned port;
    (void)state;
    pid_t pid = start_sink(&port);
    uv_ip4_addr("127.0.0.1", (int)port, &sa);
    memset(&x, 0, sizeof(x));
    uv_loop_init(&x.loop);
    x.o.helo = "postern.test";
    x.o.tls = PST_DTLS_NONE;
    x.o.rcpts_per_txn = 100;
    x.o.reply_lines_max = 100;
    /* generous: smtp-sink on a loaded machine may be slow to answer */
    x.o.t_connect = x.o.t_greeting = x.o.t_helo = x.o.t_mail = 30;
    x.o.t_rcpt = x.o.t_data = x.o.t_block = x.o.t_final = 30;
    pst_envelope_init(&x.env);
    x.env.sender = strdup("s@example.org");
    pst_envelope_add_rcpt(&x.env, "r@example.net");
    x.r[0].rcpt = &x.env.rcpts[0];
    x.body.text = body1;
    x.body.len = strlen(body1);
    uv_timer_init(&x.loop, &x.body.t);
    x.body.t.data = &x.body;
    x.m.env = &x.env;
    x.m.rcpts = x.r;
    x.m.n = 1;
    x.m.body = (struct pst_smtpc_body){&x.body, mb_read, mb_rewind,
                                        strlen(body1)};
    pst_smtpc_open(&x.loop, &x.o, (struct sockaddr *)&sa, "sink.test",
                   reuse_open, &x);
    uv_run(&x.loop, UV_RUN_DEFAULT);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    assert_int_equal(x.sent_ok, 20);        /* 20 messages, one connection */
    assert_int_equal(uv_loop_close(&x.loop), 0);
    pst_envelope_free(&x.env);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipelined_ok),
        cmocka_unit_test(test_body_backpressure),
        cmocka_unit_test(test_rcpt_results),
        cmocka_unit_test(test_452_new_transaction),
        cmocka_unit_test(test_421_defers),
        cmocka_unit_test(test_helo_fallback),
        cmocka_unit_test(test_lmtp),
        cmocka_unit_test(test_long_line_folded),
        cmocka_unit_test(test_8bit_downgrade),
        cmocka_unit_test(test_downgrade_follows_the_model),
        cmocka_unit_test(test_bare_cr_run),
        cmocka_unit_test(test_dsn_params_as_given),
        cmocka_unit_test(test_refused_before_mail),
        cmocka_unit_test(test_encrypt_without_starttls),
        cmocka_unit_test(test_greeting_timeout),
        cmocka_unit_test(test_smtp_sink_reuse),
        cmocka_unit_test(test_data_2xx_defers),
        cmocka_unit_test(test_out_of_place_codes),
        cmocka_unit_test(test_dot_3xx_defers),
        cmocka_unit_test(test_rset_refused_stops),
        cmocka_unit_test(test_reply_before_command),
        cmocka_unit_test(test_starttls_2xx_is_no_refusal),
    };
    signal(SIGPIPE, SIG_IGN);
    pst_log_open("smtp_client_test", 0, 0, PST_LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
