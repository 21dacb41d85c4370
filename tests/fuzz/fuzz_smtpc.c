/*
 * fuzz_smtpc.c - libFuzzer target for the delivery client's reply parser
 * and state machine (queue/smtp_client.c), end to end over a unix socket
 * on one libuv loop.
 *
 * Input: a flags byte (LMTP, AUTH, 8-bit body for a hop that may lack
 * 8BITMIME, SMTPUTF8, DSN parameters, recipients 1-4, one recipient per
 * transaction), then the server's script: segments separated by NUL.
 * Segment 0 is sent on accept; then one segment per command line the
 * client sends (after a DATA whose segment began with '3', the text up to
 * the lone "." is read without replies, and the "." takes the next
 * segment). When the client waits - the loop has nothing to run but
 * would block, and no octet is in flight either way on the socket - the
 * next segment goes anyway; when the script is used up the server
 * closes. So no case waits for a timeout, and a run does not depend on
 * timing.
 *
 * Invariants:
 *   - exactly one callback: open failed, or the message finished, with a
 *     result for every recipient;
 *   - a recipient is delivered (OK) only if the server saw its RCPT, then
 *     DATA, then the whole text ended by "." (a reply out of place must
 *     never count as delivery: a 250 to DATA once did);
 *   - every line the client sends ends with CRLF and holds no other CR;
 *   - the loop closes cleanly; no leak (LeakSanitizer).
 */
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"
#include "queue/smtp_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXSEQ 4096
#define BODY_MARK "..dot line"      /* as the client must send it */

static const char body[] = "Subject: fuzz\r\n"
                           "Content-Type: text/plain; charset=utf-8\r\n"
                           "\r\n"
                           ".dot line\r\n"
                           "caf\xc3\xa9 =\r\n";

static char sock_path[108];

struct fx {
    uv_loop_t loop;
    /* server */
    uv_pipe_t lsock, conn;
    uv_prepare_t prep;
    uv_timer_t kick;                /* one more loop turn, to look again */
    unsigned writes;                /* server writes in flight */
    bool have_conn, conn_closed, done;
    const uint8_t *script, *end;    /* remaining segments */
    char in[1 << 16];
    size_t inlen;
    bool want_data, in_data;
    size_t seq;                     /* client lines so far */
    size_t data_seq;                /* the client's last DATA, 0: none */
    bool mark_seen;                 /* the text's marker line since */
    size_t rcpt_seq[4];             /* line of each RCPT, 0: none */
    size_t data_from[64], data_to[64];
    size_t ndata;
    /* client */
    struct pst_smtpc_opts o;
    struct pst_envelope env;
    struct pst_smtpc_rcpt r[4];
    struct pst_smtpc_msg m;
    size_t n;
    uv_timer_t bt;                  /* body reads answer from the loop */
    size_t boff;
    void *bbuf;
    size_t bwant;
    struct pst_smtpc *bc;
    pst_smtpc_read_done bdone;
    int callbacks;
    bool sent;
};

static void
on_wrote(uv_write_t *w, int status)
{
    struct fx *x = w->data;
    (void)status;
    x->writes--;
    free(w);
}

static void
srv_close(struct fx *x)
{
    if (x->have_conn && !x->conn_closed) {
        x->conn_closed = true;
        uv_close((uv_handle_t *)&x->conn, NULL);
    }
    if (!x->done) {
        x->done = true;
        uv_close((uv_handle_t *)&x->prep, NULL);
        uv_close((uv_handle_t *)&x->kick, NULL);
    }
}

/* next_segment - send the next segment; the script used up closes.
 * Whether octets went out. */
static bool
next_segment(struct fx *x)
{
    if (x->script >= x->end) {
        srv_close(x);
        return false;
    }
    const uint8_t *z = memchr(x->script, 0, (size_t)(x->end - x->script));
    size_t n = (size_t)((z ? z : x->end) - x->script);
    x->want_data = n > 0 && x->script[0] == '3';
    if (n > 0 && x->have_conn && !x->conn_closed) {
        uv_write_t *w = malloc(sizeof(*w) + n);
        memcpy(w + 1, x->script, n);
        uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)n);
        w->data = x;
        if (uv_write(w, (uv_stream_t *)&x->conn, &b, 1, on_wrote) != 0)
            free(w);
        else
            x->writes++;
    }
    x->script = z ? z + 1 : x->end;
    return n > 0;
}

/* is_command - l starts with a verb the client sends (the text it sends
 * never does). */
static bool
is_command(const char *l, size_t n)
{
    static const char *const verbs[] = {"MAIL ", "RCPT ", "RSET", "QUIT",
                                        "EHLO ", "HELO ", "LHLO ", "AUTH ",
                                        "STARTTLS"};
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        if (n >= strlen(verbs[i]) && memcmp(l, verbs[i], strlen(verbs[i])) == 0)
            return true;
    return false;
}

/* client_line - one line from the client: what it sent is recorded as
 * it sent it (whatever the server made of it), then the script goes on. */
static void
client_line(struct fx *x, const char *l, size_t n)
{
    /* CRLF and nothing else */
    if (n == 0 || l[n - 1] != '\r' || memchr(l, '\r', n - 1) != NULL)
        abort();
    n--;
    x->seq++;
    if (n == 4 && memcmp(l, "DATA", 4) == 0) {
        x->data_seq = x->seq;
        x->mark_seen = false;
    } else if (n == strlen(BODY_MARK) && memcmp(l, BODY_MARK, n) == 0) {
        x->mark_seen = true;
    } else if (n == 1 && l[0] == '.') {
        if (x->data_seq && x->mark_seen && x->ndata < 64) {
            x->data_from[x->ndata] = x->data_seq;
            x->data_to[x->ndata++] = x->seq;
        }
        x->data_seq = 0;
    } else if (is_command(l, n)) {
        x->data_seq = 0;            /* no text followed that DATA */
    }
    if (x->in_data) {
        if (n == 1 && l[0] == '.') {
            x->in_data = false;
            next_segment(x);
        }
        return;
    }
    for (size_t i = 0; i < x->n; i++) {
        char want[64];
        int k = snprintf(want, sizeof(want), "RCPT TO:<%s>",
                         x->env.rcpts[i].addr);
        if (n >= (size_t)k && memcmp(l, want, (size_t)k) == 0)
            x->rcpt_seq[i] = x->seq;
    }
    bool data = x->data_seq == x->seq;
    next_segment(x);
    if (data && x->want_data)
        x->in_data = true;          /* the text comes without replies */
}

static void
srv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct fx *x = h->data;
    (void)hint;
    *b = uv_buf_init(x->in + x->inlen, (unsigned)(sizeof(x->in) - x->inlen));
}

static void
srv_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct fx *x = s->data;
    (void)b;
    if (n < 0) {
        srv_close(x);
        return;
    }
    x->inlen += (size_t)n;
    size_t off = 0;
    char *nl;
    /* every line that arrived counts, also those behind the one that
     * used the script up: the client may have sent a message's text and
     * its "." in one write, and have its replies already */
    while ((nl = memchr(x->in + off, '\n', x->inlen - off)) != NULL) {
        client_line(x, x->in + off, (size_t)(nl - (x->in + off)));
        off = (size_t)(nl - x->in) + 1;
    }
    memmove(x->in, x->in + off, x->inlen - off);
    x->inlen -= off;
    if (x->inlen == sizeof(x->in))
        abort();                    /* a line of 64 KiB from the client */
}

static void
kick(uv_timer_t *t)
{
    (void)t;
}

/* srv_prepare - just before the loop would poll: if nothing is due and
 * no octet is on its way in either direction, the client waits for the
 * server. When something is due, look again on the next turn. */
static void
srv_prepare(uv_prepare_t *h)
{
    struct fx *x = h->data;
    uv_os_fd_t fd;
    int in = 0, out = 0;

    if (!x->have_conn || x->conn_closed)
        return;
    if (x->writes > 0 || uv_backend_timeout(&x->loop) == 0) {
        uv_timer_start(&x->kick, kick, 0, 0);
        return;
    }
    if (uv_fileno((uv_handle_t *)&x->conn, &fd) != 0 ||
        ioctl(fd, FIONREAD, &in) != 0 || ioctl(fd, SIOCOUTQ, &out) != 0 ||
        in > 0 || out > 0)
        return;                     /* the socket wakes the loop */
    if (!next_segment(x) && !x->conn_closed)
        uv_timer_start(&x->kick, kick, 0, 0);  /* nothing sent: again */
}

static void
srv_accept(uv_stream_t *l, int status)
{
    struct fx *x = l->data;
    if (status != 0 || x->have_conn)
        abort();
    uv_pipe_init(&x->loop, &x->conn, 0);
    x->conn.data = x;
    if (uv_accept(l, (uv_stream_t *)&x->conn) != 0)
        abort();
    x->have_conn = true;
    uv_close((uv_handle_t *)&x->lsock, NULL);
    uv_read_start((uv_stream_t *)&x->conn, srv_alloc, srv_read);
    next_segment(x);                /* the greeting */
}

/* ---- body from memory, answered from the loop ---- */

static void
body_fire(uv_timer_t *t)
{
    struct fx *x = t->data;
    size_t n = sizeof(body) - 1 - x->boff;
    if (n > x->bwant)
        n = x->bwant;
    memcpy(x->bbuf, body + x->boff, n);
    x->boff += n;
    x->bdone(x->bc, (ssize_t)n);
}

static void
body_read(void *arg, void *buf, size_t len, struct pst_smtpc *c,
          pst_smtpc_read_done done)
{
    struct fx *x = arg;
    x->bbuf = buf;
    x->bwant = len;
    x->bc = c;
    x->bdone = done;
    uv_timer_start(&x->bt, body_fire, 0, 0);
}

static int
body_rewind(void *arg)
{
    ((struct fx *)arg)->boff = 0;
    return 0;
}

/* ---- client ---- */

static void
finish(struct fx *x)
{
    uv_timer_stop(&x->bt);
    uv_close((uv_handle_t *)&x->bt, NULL);
}

static void
on_sent(void *arg, struct pst_smtpc *c, bool reusable)
{
    struct fx *x = arg;
    (void)reusable;
    x->callbacks++;
    x->sent = true;
    pst_smtpc_close(c);
    finish(x);
}

static void
on_open(void *arg, struct pst_smtpc *c, int status, bool perm,
        const char *text)
{
    struct fx *x = arg;
    (void)perm;
    (void)text;
    if (status != 0) {
        x->callbacks++;
        finish(x);
        return;
    }
    pst_smtpc_send(c, &x->m, on_sent, x);
}

static void
check(struct fx *x)
{
    if (x->callbacks != 1)
        abort();
    if (!x->sent)
        return;
    for (size_t i = 0; i < x->n; i++) {
        if (x->r[i].res == PST_SMTPC_PENDING)
            abort();
        if (x->r[i].res != PST_SMTPC_OK)
            continue;
        /* delivered: its RCPT, then a DATA and the whole text after it */
        bool seen = false;
        for (size_t k = 0; k < x->ndata && !seen; k++)
            seen = x->rcpt_seq[i] != 0 && x->rcpt_seq[i] < x->data_from[k];
        if (!seen)
            abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool once;
    static const char *const addrs[] = {"a@dest.test", "b@dest.test",
                                        "c@dest.test", "d@dest.test"};
    if (!once) {
        once = true;
        pst_log_open("fuzz_smtpc", 0, 0, PST_LOG_ERR);
        signal(SIGPIPE, SIG_IGN);   /* a write to a client that left */
        snprintf(sock_path, sizeof(sock_path), "/tmp/fuzz_smtpc.%d.sock",
                 (int)getpid());
    }
    if (size < 1)
        return 0;
    struct fx *x = calloc(1, sizeof(*x));
    unsigned fl = data[0];
    x->script = data + 1;
    x->end = data + size;
    uv_loop_init(&x->loop);

    x->o.lmtp = fl & 1;
    x->o.helo = "postern.test";
    x->o.tls = PST_DTLS_NONE;
    if (fl & 2) {
        x->o.auth_user = "user";
        x->o.auth_password = "secret";
        x->o.auth_plaintext = true;
    }
    x->o.eight_bit = PST_8BIT_CONVERT;
    x->o.rcpts_per_txn = fl & 0x80 ? 1 : 100;
    x->o.reply_lines_max = 20;
    x->o.t_connect = x->o.t_greeting = x->o.t_helo = x->o.t_mail = 60;
    x->o.t_rcpt = x->o.t_data = x->o.t_block = x->o.t_final = 60;

    pst_envelope_init(&x->env);
    x->env.sender = strdup("sender@example.org");
    x->env.body = fl & 4 ? PST_BODY_8BITMIME : PST_BODY_7BIT;
    x->env.smtputf8 = fl & 8;
    x->n = 1 + ((fl >> 5) & 3);
    for (size_t i = 0; i < x->n; i++) {
        struct pst_rcpt *r = pst_envelope_add_rcpt(&x->env, addrs[i]);
        if (fl & 0x10) {
            r->notify = PST_NOTIFY_SUCCESS | PST_NOTIFY_FAILURE;
            r->orcpt = strdup("rfc822;a+2Bb@dest.test");
        }
    }
    if (fl & 0x10) {
        x->env.envid = strdup("abc+2Bdef");
        x->env.ret = PST_RET_HDRS;
    }
    for (size_t i = 0; i < x->n; i++)
        x->r[i].rcpt = &x->env.rcpts[i];
    x->m.env = &x->env;
    x->m.rcpts = x->r;
    x->m.n = x->n;
    x->m.qid = "0000010000000000";
    x->m.body = (struct pst_smtpc_body){x, body_read, body_rewind,
                                         sizeof(body) - 1};
    uv_timer_init(&x->loop, &x->bt);
    x->bt.data = x;

    unlink(sock_path);
    uv_pipe_init(&x->loop, &x->lsock, 0);
    x->lsock.data = x;
    if (uv_pipe_bind(&x->lsock, sock_path) != 0 ||
        uv_listen((uv_stream_t *)&x->lsock, 1, srv_accept) != 0)
        abort();
    uv_timer_init(&x->loop, &x->kick);
    uv_prepare_init(&x->loop, &x->prep);
    x->prep.data = x;
    uv_prepare_start(&x->prep, srv_prepare);

    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
    pst_smtpc_open(&x->loop, &x->o, (struct sockaddr *)&sa, "fuzz.test",
                   on_open, x);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    check(x);
    if (!x->have_conn)
        uv_close((uv_handle_t *)&x->lsock, NULL);
    if (!x->done) {
        x->done = true;
        uv_close((uv_handle_t *)&x->prep, NULL);
        uv_close((uv_handle_t *)&x->kick, NULL);
    }
    uv_run(&x->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&x->loop) != 0)
        abort();
    pst_envelope_free(&x->env);
    free(x);
    unlink(sock_path);
    return 0;
}
