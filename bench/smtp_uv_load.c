/*
 * smtp_uv_load.c - a plaintext SMTP load generator on one libuv loop, for
 * when Postfix's smtp-source (a process per session is not the issue; it
 * is about 0.2 ms of CPU per message) is what limits a benchmark on a
 * 2-core machine: the no-gateway ceiling of bench/peer_bench.py had
 * smtp-source at 80-94% of a core.
 *
 *   smtp_uv_load [-s SESSIONS] [-m COUNT] [-d SECONDS] [-l SIZE]
 *                [-f FROM] [-t TO] HOST:PORT
 *
 * The job is smtp-source's: SESSIONS connections in flight, each one
 * message (connect, 220, EHLO, MAIL, RCPT, DATA, a SIZE-octet message,
 * the dot, QUIT), one command at a time, and a new connection in place of
 * each one that ends, until COUNT messages were started or SECONDS
 * passed (both bound every run; defaults 100 sessions, 1000 messages,
 * 600 s, 1024 octets). Prints one line of key=value: messages accepted
 * (250 after the dot), failed connections, wall seconds, rate, the tool's
 * own CPU per message (user+system), and the first error if any. Exit 1 if
 * any connection failed. bench/relay_bench.py runs it with --generator uv.
 *
 * Limits: a reply is at most 4 KiB (longer: an error); a message is built
 * once and shared by every connection.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#define REPLY_MAX 4096

enum step { S_GREETING, S_EHLO, S_MAIL, S_RCPT, S_DATA, S_DOT, S_QUIT };

struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    enum step step;
    bool closing;
    size_t n;                       /* bytes in in[] */
    char in[REPLY_MAX];
    char cmd[600];
};

static struct {
    uv_loop_t *loop;
    struct sockaddr_storage addr;
    unsigned sessions;
    unsigned long count, started, accepted, failed;
    double deadline;
    char *message;                  /* text, dot-stuffed, with the dot */
    size_t message_len;
    const char *from, *to;
    char first_error[200];
} g;

static void next_conn(void);

static double
now_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

static void
on_closed(uv_handle_t *h)
{
    free(h->data);
    next_conn();
}

static void
fail(struct conn *c, const char *what)
{
    if (c->closing)
        return;
    c->closing = true;
    g.failed++;
    if (g.first_error[0] == '\0')
        snprintf(g.first_error, sizeof(g.first_error), "%s", what);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void
on_written(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    if (status < 0 && status != UV_ECANCELED)
        fail(c, uv_strerror(status));
    free(w);
}

static void
send_text(struct conn *c, const char *p, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    /* most writes go at once; the rest are queued */
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == (int)n)
        return;
    if (r > 0) {
        b.base += r;
        b.len -= (size_t)r;
    } else if (r != UV_EAGAIN) {
        fail(c, uv_strerror(r));
        return;
    }
    /* queued: the text (a command in c->cmd, or the shared message) stays
     * put until written, since the next command waits for a reply */
    uv_write_t *w = malloc(sizeof(*w));
    if (w == NULL) {
        fail(c, "out of memory");
        return;
    }
    w->data = c;
    if ((r = uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written)) < 0) {
        free(w);
        fail(c, uv_strerror(r));
    }
}

static void
send_cmd(struct conn *c, enum step next, const char *fmt, const char *arg)
{
    int n = snprintf(c->cmd, sizeof(c->cmd), fmt, arg);
    c->step = next;
    send_text(c, c->cmd, (size_t)n);
}

/* the reply each step waits for, and what it is called in an error */
static const struct {
    int code;
    const char *what;
} want[] = {
    [S_GREETING] = {220, "greeting not 220"},
    [S_EHLO] = {250, "EHLO not 250"},
    [S_MAIL] = {250, "MAIL not 250"},
    [S_RCPT] = {250, "RCPT not 250"},
    [S_DATA] = {354, "DATA not 354"},
    [S_DOT] = {250, "message not accepted"},
    [S_QUIT] = {221, "QUIT not 221"},
};

/* a whole reply with this code has come: the next command */
static void
on_reply(struct conn *c, int code)
{
    if (code != want[c->step].code) {
        fail(c, want[c->step].what);
        return;
    }
    switch (c->step) {
    case S_GREETING:
        send_cmd(c, S_EHLO, "EHLO %s\r\n", "uvload.bench.test");
        break;
    case S_EHLO:
        send_cmd(c, S_MAIL, "MAIL FROM:<%s>\r\n", g.from);
        break;
    case S_MAIL:
        send_cmd(c, S_RCPT, "RCPT TO:<%s>\r\n", g.to);
        break;
    case S_RCPT:
        send_cmd(c, S_DATA, "%s", "DATA\r\n");
        break;
    case S_DATA:
        c->step = S_DOT;
        send_text(c, g.message, g.message_len);
        break;
    case S_DOT:
        g.accepted++;
        send_cmd(c, S_QUIT, "%s", "QUIT\r\n");
        break;
    case S_QUIT:
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        break;
    }
}

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct conn *c = h->data;
    (void)hint;
    *b = uv_buf_init(c->in + c->n, (unsigned)(sizeof(c->in) - c->n));
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = s->data;
    (void)b;
    if (nread == UV_EOF && c->step == S_QUIT) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return;
    }
    if (nread < 0) {
        fail(c, nread == UV_EOF ? "closed by the server"
                                : uv_strerror((int)nread));
        return;
    }
    c->n += (size_t)nread;
    /* complete lines; a reply ends with "DDD " (or "DDD\r\n") */
    for (;;) {
        char *eol = memchr(c->in, '\n', c->n);
        if (eol == NULL)
            break;
        size_t len = (size_t)(eol - c->in) + 1;
        bool last = len >= 5 && (c->in[3] == ' ' || c->in[3] == '\r');
        int code = atoi(c->in);
        memmove(c->in, c->in + len, c->n - len);
        c->n -= len;
        if (last) {
            if (c->n != 0) {
                fail(c, "reply before its command");
                return;
            }
            on_reply(c, code);
            return;
        }
    }
    if (c->n == sizeof(c->in))
        fail(c, "reply line too long");
}

static void
on_connected(uv_connect_t *r, int status)
{
    struct conn *c = r->data;
    if (status < 0) {
        fail(c, uv_strerror(status));
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void
next_conn(void)
{
    if (g.started >= g.count || now_s() > g.deadline)
        return;
    g.started++;
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    uv_tcp_init(g.loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    int r = uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&g.addr,
                           on_connected);
    if (r < 0)
        fail(c, uv_strerror(r));
}

/* the message: a header, then lines of 76 octets up to size, then the
 * dot (no line starts with '.', so nothing needs stuffing) */
static void
build_message(size_t size)
{
    char head[600];
    int h = snprintf(head, sizeof(head),
                     "From: <%s>\r\nTo: <%s>\r\nSubject: bench\r\n"
                     "Message-ID: <uvload@bench.test>\r\n\r\n", g.from, g.to);
    size_t n = (size_t)h, cap = size + (size_t)h + 128;
    g.message = malloc(cap);
    if (g.message == NULL)
        exit(1);
    memcpy(g.message, head, n);
    while (n + 78 < size) {
        memset(g.message + n, 'x', 76);
        memcpy(g.message + n + 76, "\r\n", 2);
        n += 78;
    }
    memcpy(g.message + n, ".\r\n", 3);
    g.message_len = n + 3;
}

static int
parse_addr(const char *hp)
{
    char host[256];
    const char *colon = strrchr(hp, ':');
    if (colon == NULL || (size_t)(colon - hp) >= sizeof(host))
        return -1;
    memcpy(host, hp, (size_t)(colon - hp));
    host[colon - hp] = '\0';
    int port = atoi(colon + 1);
    if (port <= 0 || port > 65535)
        return -1;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&g.addr) == 0)
        return 0;
    return uv_ip6_addr(host, port, (struct sockaddr_in6 *)&g.addr) == 0 ? 0
                                                                        : -1;
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: smtp_uv_load [-s SESSIONS] [-m COUNT] [-d SECONDS] "
               "[-l SIZE] [-f FROM] [-t TO] HOST:PORT\n");
}

int
main(int argc, char **argv)
{
    size_t size = 1024;
    double seconds = 600;
    int o;
    g.sessions = 100;
    g.count = 1000;
    g.from = "from@bench.test";
    g.to = "to@sink.test";
    while ((o = getopt(argc, argv, "s:m:d:l:f:t:h")) != -1) {
        switch (o) {
        case 's': g.sessions = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'm': g.count = strtoul(optarg, NULL, 10); break;
        case 'd': seconds = strtod(optarg, NULL); break;
        case 'l': size = strtoul(optarg, NULL, 10); break;
        case 'f': g.from = optarg; break;
        case 't': g.to = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1 || g.sessions == 0 || g.sessions > 100000 ||
        strlen(g.from) > 256 || strlen(g.to) > 256 ||
        parse_addr(argv[optind]) < 0) {
        usage(stderr);
        return 2;
    }
    build_message(size);
    g.loop = uv_default_loop();
    double t0 = now_s();
    g.deadline = t0 + seconds;
    for (unsigned i = 0; i < g.sessions; i++)
        next_conn();
    uv_run(g.loop, UV_RUN_DEFAULT);
    double wall = now_s() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("messages=%lu failed=%lu wall=%.3f rate=%.0f cpu_ms_per_msg=%.4f"
           "%s%s%s\n",
           g.accepted, g.failed, wall, wall > 0 ? g.accepted / wall : 0.0,
           g.accepted ? cpu * 1000 / (double)g.accepted : 0.0,
           g.first_error[0] ? " error=\"" : "", g.first_error,
           g.first_error[0] ? "\"" : "");
    uv_loop_close(g.loop);
    free(g.message);
    return g.failed ? 1 : 0;
}
