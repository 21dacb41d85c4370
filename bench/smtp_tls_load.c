/*
 * smtp_tls_load.c - an SMTP load generator and sink that speak STARTTLS
 * (Postfix's smtp-source and smtp-sink do not), for bench/tls_bench.py.
 *
 *   smtp_tls_load send [-s SESSIONS] [-m COUNT] [-d SECONDS] [-l SIZE]
 *                      [-r] [-P] [-2] [-f FROM] [-t TO] HOST:PORT
 *   smtp_tls_load sink -c CERT -k KEY [-2] HOST:PORT
 *
 * send: SESSIONS threads, each running one connection after another until
 * COUNT connections were started or SECONDS passed (both bound every
 * run): connect, 220, EHLO, STARTTLS, the handshake, EHLO again, then
 * (SIZE > 0) MAIL, RCPT, DATA and a SIZE-octet message, and QUIT. One
 * command at a time, like smtp-source. -r: each thread offers the
 * session (ticket) its previous connection got, so every connection but
 * a thread's first can resume. -P: plaintext, no STARTTLS (to check the
 * tool against smtp-source and smtp-sink). -2: TLS 1.2 at most. Prints
 * one line of key=value: connections done and failed, resumed, messages
 * accepted (250 after the dot), wall seconds, rate, the tool's own CPU
 * (user+system, all threads) per connection, median and 99th percentile
 * connection time; and the first error, if any. Exit 1 if any failed.
 *
 * sink: accepts on HOST:PORT, a thread per connection; answers 220, EHLO
 * (PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, STARTTLS before TLS),
 * STARTTLS (then TLS with the certificate; session tickets on, one per
 * handshake), MAIL, RCPT, DATA (reads to the final dot), RSET, NOOP,
 * QUIT; anything else 502. Prints "mesg=N tls=T resumed=R" on stdout after
 * each message (N messages in all, over T TLS handshakes of which R
 * resumed). Runs until killed.
 *
 * Limits: reply and command lines are cut at 4 KiB; a message is read,
 * never kept. Blocking sockets and OpenSSL's own socket BIO: this is a
 * test tool, not a server design.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define LINE_MAX_ 4096

/* ---- one connection, plaintext or TLS ---- */

struct conn {
    int fd;
    SSL *ssl;
    char buf[16384];
    size_t len, pos;
};

static int
c_write(struct conn *c, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w;
        if (c->ssl) {
            int r = SSL_write(c->ssl, s, (int)n);
            w = r > 0 ? r : -1;
        } else {
            w = write(c->fd, s, n);
        }
        if (w <= 0) {
            if (w < 0 && !c->ssl && errno == EINTR)
                continue;
            return -1;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
c_fill(struct conn *c)
{
    if (c->pos > 0) {
        memmove(c->buf, c->buf + c->pos, c->len - c->pos);
        c->len -= c->pos;
        c->pos = 0;
    }
    if (c->len == sizeof(c->buf))
        return -1;
    ssize_t r;
    if (c->ssl) {
        int n = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof(c->buf) - c->len));
        r = n > 0 ? n : -1;
    } else {
        do
            r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        while (r < 0 && errno == EINTR);
    }
    if (r <= 0)
        return -1;
    c->len += (size_t)r;
    return 0;
}

/* c_line - the next line without CRLF into out (cut at n - 1); -1 at the
 * end of the connection. */
static int
c_line(struct conn *c, char *out, size_t n)
{
    for (;;) {
        char *nl = memchr(c->buf + c->pos, '\n', c->len - c->pos);
        if (nl != NULL) {
            size_t l = (size_t)(nl - (c->buf + c->pos));
            size_t k = l > 0 && nl[-1] == '\r' ? l - 1 : l;
            if (k >= n)
                k = n - 1;
            memcpy(out, c->buf + c->pos, k);
            out[k] = '\0';
            c->pos += l + 1;
            return 0;
        }
        if (c_fill(c) < 0)
            return -1;
    }
}

/* c_reply - read one (multi-line) reply; its code, or -1. caps: if not
 * NULL, the lines (for EHLO) are appended, cut at capn. */
static int
c_reply(struct conn *c, char *caps, size_t capn)
{
    char line[LINE_MAX_];
    if (caps)
        caps[0] = '\0';
    for (;;) {
        if (c_line(c, line, sizeof(line)) < 0)
            return -1;
        if (strlen(line) < 3)
            return -1;
        if (caps && strlen(caps) + strlen(line) + 2 < capn) {
            strcat(caps, line);
            strcat(caps, "\n");
        }
        if (line[3] != '-')
            return atoi(line);
    }
}

static int
c_cmd(struct conn *c, const char *cmd, int want)
{
    if (c_write(c, cmd, strlen(cmd)) < 0)
        return -1;
    return c_reply(c, NULL, 0) == want ? 0 : -1;
}

static void
c_close(struct conn *c)
{
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static int
parse_addr(const char *s, struct sockaddr_in *sa)
{
    char host[256];
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- send ---- */

static struct {
    struct sockaddr_in sa;
    SSL_CTX *ctx;
    unsigned sessions;
    long count;
    double seconds;
    size_t size;
    bool resume, plain;
    const char *from, *to;
    char *msg;                      /* the message, dot-stuffed, with the dot */
    size_t msglen;
    double t_end;
    atomic_long started, done, failed, resumed, accepted;
    pthread_mutex_t lock;
    char first_error[256];
    double *lat;                    /* per connection, seconds */
    atomic_long nlat;
} S;

static void
fail_note(const char *what)
{
    pthread_mutex_lock(&S.lock);
    if (S.first_error[0] == '\0') {
        unsigned long e = ERR_peek_last_error();
        char es[160] = "";
        if (e)
            ERR_error_string_n(e, es, sizeof(es));
        snprintf(S.first_error, sizeof(S.first_error), "%s%s%s%s", what,
                 es[0] ? " (" : "", es, es[0] ? ")" : "");
    }
    pthread_mutex_unlock(&S.lock);
    ERR_clear_error();
}

/* one_conn - one connection as described at the top; 0 or -1 */
static int
one_conn(SSL_SESSION **sess)
{
    struct conn c = {.fd = -1};
    char caps[LINE_MAX_], cmd[600];
    int rc = -1;

    c.fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c.fd < 0 ||
        connect(c.fd, (struct sockaddr *)&S.sa, sizeof(S.sa)) < 0) {
        fail_note("connect failed");
        goto out;
    }
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (c_reply(&c, NULL, 0) != 220) {
        fail_note("no 220 greeting");
        goto out;
    }
    if (c_write(&c, "EHLO load.test\r\n", 16) < 0 ||
        c_reply(&c, caps, sizeof(caps)) != 250) {
        fail_note("EHLO refused");
        goto out;
    }
    if (!S.plain) {
        if (strstr(caps, "STARTTLS") == NULL) {
            fail_note("STARTTLS not offered");
            goto out;
        }
        if (c_cmd(&c, "STARTTLS\r\n", 220) < 0 || c.len != c.pos) {
            fail_note("STARTTLS refused");
            goto out;
        }
        c.len = c.pos = 0;
        c.ssl = SSL_new(S.ctx);
        SSL_set_fd(c.ssl, c.fd);
        if (*sess)
            SSL_set_session(c.ssl, *sess);
        if (SSL_connect(c.ssl) != 1) {
            fail_note("TLS handshake failed");
            goto out;
        }
        if (SSL_session_reused(c.ssl))
            S.resumed++;
        if (c_write(&c, "EHLO load.test\r\n", 16) < 0 ||
            c_reply(&c, caps, sizeof(caps)) != 250) {
            fail_note("EHLO over TLS refused");
            goto out;
        }
    }
    if (S.size > 0) {
        snprintf(cmd, sizeof(cmd), "MAIL FROM:<%s>\r\n", S.from);
        if (c_cmd(&c, cmd, 250) < 0) {
            fail_note("MAIL refused");
            goto out;
        }
        snprintf(cmd, sizeof(cmd), "RCPT TO:<%s>\r\n", S.to);
        if (c_cmd(&c, cmd, 250) < 0) {
            fail_note("RCPT refused");
            goto out;
        }
        if (c_cmd(&c, "DATA\r\n", 354) < 0) {
            fail_note("DATA refused");
            goto out;
        }
        if (c_write(&c, S.msg, S.msglen) < 0 || c_reply(&c, NULL, 0) != 250) {
            fail_note("message refused");
            goto out;
        }
        S.accepted++;
    }
    if (c_cmd(&c, "QUIT\r\n", 221) < 0) {
        fail_note("QUIT refused");
        goto out;
    }
    if (S.resume && c.ssl) {
        /* after the replies over TLS: a TLS 1.3 ticket has arrived */
        SSL_SESSION *s = SSL_get1_session(c.ssl);
        if (s != NULL) {
            SSL_SESSION_free(*sess);
            *sess = s;
        }
    }
    rc = 0;
out:
    c_close(&c);
    return rc;
}

static void *
sender(void *arg)
{
    SSL_SESSION *sess = NULL;
    (void)arg;
    for (;;) {
        if (now_s() >= S.t_end || atomic_fetch_add(&S.started, 1) >= S.count)
            break;
        double t0 = now_s();
        if (one_conn(&sess) == 0) {
            S.done++;
            long i = atomic_fetch_add(&S.nlat, 1);
            if (i < S.count)
                S.lat[i] = now_s() - t0;
        } else {
            S.failed++;
        }
    }
    SSL_SESSION_free(sess);
    return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void
make_message(void)
{
    /* a header, then 72-octet lines of text up to size octets */
    size_t cap = S.size + 512;
    S.msg = malloc(cap);
    int h = snprintf(S.msg, cap,
                     "From: <%s>\r\nTo: <%s>\r\nSubject: load\r\n\r\n",
                     S.from, S.to);
    size_t n = (size_t)h;
    while (n + 74 <= S.size) {
        memset(S.msg + n, 'x', 72);
        memcpy(S.msg + n + 72, "\r\n", 2);
        n += 74;
    }
    memcpy(S.msg + n, ".\r\n", 3);
    S.msglen = n + 3;
}

static int
run_send(int argc, char **argv)
{
    int o;
    bool tls12 = false;
    S.sessions = 1;
    S.count = 1000;
    S.seconds = 60;
    S.from = "from@load.test";
    S.to = "to@sink.test";
    while ((o = getopt(argc, argv, "s:m:d:l:rP2f:t:")) != -1) {
        switch (o) {
        case 's': S.sessions = (unsigned)atoi(optarg); break;
        case 'm': S.count = atol(optarg); break;
        case 'd': S.seconds = atof(optarg); break;
        case 'l': S.size = (size_t)atol(optarg); break;
        case 'r': S.resume = true; break;
        case 'P': S.plain = true; break;
        case '2': tls12 = true; break;
        case 'f': S.from = optarg; break;
        case 't': S.to = optarg; break;
        default: return 2;
        }
    }
    if (optind != argc - 1 || parse_addr(argv[optind], &S.sa) < 0 ||
        S.sessions < 1 || S.count < 1) {
        fprintf(stderr, "smtp_tls_load send: bad arguments\n");
        return 2;
    }
    S.ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(S.ctx, TLS1_2_VERSION);
    if (tls12)
        SSL_CTX_set_max_proto_version(S.ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(S.ctx, SSL_VERIFY_NONE, NULL);
    /* sessions are kept by the threads (-r), not by OpenSSL */
    SSL_CTX_set_session_cache_mode(S.ctx, SSL_SESS_CACHE_OFF);
    if (S.size > 0)
        make_message();
    S.lat = calloc((size_t)S.count, sizeof(double));
    pthread_mutex_init(&S.lock, NULL);
    pthread_t *th = calloc(S.sessions, sizeof(*th));
    double cpu0 = cpu_s(), t0 = now_s();
    S.t_end = t0 + S.seconds;
    for (unsigned i = 0; i < S.sessions; i++)
        pthread_create(&th[i], NULL, sender, NULL);
    for (unsigned i = 0; i < S.sessions; i++)
        pthread_join(th[i], NULL);
    double wall = now_s() - t0, cpu = cpu_s() - cpu0;
    long n = S.nlat < S.count ? S.nlat : S.count;
    qsort(S.lat, (size_t)n, sizeof(double), cmp_double);
    printf("done=%ld failed=%ld resumed=%ld accepted=%ld wall=%.3f "
           "rate=%.1f cpu=%.3f cpu_ms_per_conn=%.3f p50_ms=%.2f "
           "p99_ms=%.2f%s%s%s\n",
           (long)S.done, (long)S.failed, (long)S.resumed, (long)S.accepted,
           wall, (double)S.done / wall, cpu,
           S.done ? cpu * 1000 / (double)S.done : 0.0,
           n ? S.lat[n / 2] * 1000 : 0.0,
           n ? S.lat[(n * 99) / 100] * 1000 : 0.0,
           S.first_error[0] ? " error=\"" : "", S.first_error,
           S.first_error[0] ? "\"" : "");
    free(th);
    free(S.lat);
    free(S.msg);
    SSL_CTX_free(S.ctx);
    return S.failed > 0 ? 1 : 0;
}

/* ---- sink ---- */

static SSL_CTX *sink_ctx;
static atomic_long sink_msgs, sink_tls, sink_resumed;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static int
sink_reply(struct conn *c, const char *r)
{
    return c_write(c, r, strlen(r));
}

/* sink_data - read message text up to the final dot; 0 or -1 */
static int
sink_data(struct conn *c)
{
    char line[LINE_MAX_];
    for (;;) {
        if (c_line(c, line, sizeof(line)) < 0)
            return -1;
        if (strcmp(line, ".") == 0)
            return 0;
    }
}

static void *
sink_conn(void *arg)
{
    struct conn *c = arg;
    char line[LINE_MAX_];

    if (sink_reply(c, "220 sink.test ESMTP\r\n") < 0)
        goto out;
    while (c_line(c, line, sizeof(line)) == 0) {
        char verb[16] = "";
        sscanf(line, "%15s", verb);
        for (char *p = verb; *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        int w = 0;
        if (strcmp(verb, "EHLO") == 0) {
            w = sink_reply(c, c->ssl ? "250-sink.test\r\n250-PIPELINING\r\n"
                                       "250-SIZE 104857600\r\n250-8BITMIME\r\n"
                                       "250 ENHANCEDSTATUSCODES\r\n"
                                     : "250-sink.test\r\n250-PIPELINING\r\n"
                                       "250-SIZE 104857600\r\n250-8BITMIME\r\n"
                                       "250-ENHANCEDSTATUSCODES\r\n"
                                       "250 STARTTLS\r\n");
        } else if (strcmp(verb, "HELO") == 0) {
            w = sink_reply(c, "250 sink.test\r\n");
        } else if (strcmp(verb, "STARTTLS") == 0 && c->ssl == NULL) {
            if (sink_reply(c, "220 2.0.0 Ready to start TLS\r\n") < 0 ||
                c->len != c->pos)
                goto out;
            c->len = c->pos = 0;
            c->ssl = SSL_new(sink_ctx);
            SSL_set_fd(c->ssl, c->fd);
            if (SSL_accept(c->ssl) != 1)
                goto out;
            sink_tls++;
            if (SSL_session_reused(c->ssl))
                sink_resumed++;
        } else if (strcmp(verb, "MAIL") == 0) {
            w = sink_reply(c, "250 2.1.0 Ok\r\n");
        } else if (strcmp(verb, "RCPT") == 0) {
            w = sink_reply(c, "250 2.1.5 Ok\r\n");
        } else if (strcmp(verb, "DATA") == 0) {
            if (sink_reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n") < 0 ||
                sink_data(c) < 0)
                goto out;
            w = sink_reply(c, "250 2.0.0 Ok: queued\r\n");
            long n = ++sink_msgs;
            pthread_mutex_lock(&out_lock);
            printf("mesg=%ld tls=%ld resumed=%ld\n", n, (long)sink_tls,
                   (long)sink_resumed);
            fflush(stdout);
            pthread_mutex_unlock(&out_lock);
        } else if (strcmp(verb, "RSET") == 0 || strcmp(verb, "NOOP") == 0) {
            w = sink_reply(c, "250 2.0.0 Ok\r\n");
        } else if (strcmp(verb, "QUIT") == 0) {
            sink_reply(c, "221 2.0.0 Bye\r\n");
            break;
        } else {
            w = sink_reply(c, "502 5.5.2 Error: command not recognized\r\n");
        }
        if (w < 0)
            break;
    }
out:
    c_close(c);
    free(c);
    return NULL;
}

static int
run_sink(int argc, char **argv)
{
    const char *cert = NULL, *key = NULL;
    bool tls12 = false;
    struct sockaddr_in sa;
    int o;
    while ((o = getopt(argc, argv, "c:k:2")) != -1) {
        switch (o) {
        case 'c': cert = optarg; break;
        case 'k': key = optarg; break;
        case '2': tls12 = true; break;
        default: return 2;
        }
    }
    if (optind != argc - 1 || parse_addr(argv[optind], &sa) < 0 || !cert ||
        !key) {
        fprintf(stderr, "smtp_tls_load sink: bad arguments\n");
        return 2;
    }
    sink_ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(sink_ctx, TLS1_2_VERSION);
    if (tls12)
        SSL_CTX_set_max_proto_version(sink_ctx, TLS1_2_VERSION);
    SSL_CTX_set_num_tickets(sink_ctx, 1);
    if (SSL_CTX_use_certificate_chain_file(sink_ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(sink_ctx, key, SSL_FILETYPE_PEM) != 1) {
        fprintf(stderr, "smtp_tls_load sink: cannot load %s / %s\n", cert,
                key);
        return 1;
    }
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(ls, 511) < 0) {
        perror("smtp_tls_load sink: listen");
        return 1;
    }
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("smtp_tls_load sink: accept");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct conn *c = calloc(1, sizeof(*c));
        c->fd = fd;
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 256 * 1024);
        if (pthread_create(&t, &at, sink_conn, c) != 0) {
            close(fd);
            free(c);
        }
        pthread_attr_destroy(&at);
    }
}

int
main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 2 && strcmp(argv[1], "send") == 0)
        return run_send(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "sink") == 0)
        return run_sink(argc - 1, argv + 1);
    fprintf(stderr, "usage: smtp_tls_load send|sink ... (see the source's "
                    "header)\n");
    return 2;
}
