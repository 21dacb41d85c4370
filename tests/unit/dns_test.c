/*
 * dns_test.c - core/dns.c against a real DNS server: dnsmasq (Debian's
 * dnsmasq-base) started on a free loopback port with local records only
 * (on another port if that one was taken before dnsmasq bound it), ready
 * when it answers. MX (sorted, null MX), NXDOMAIN, NODATA, A/AAAA, PTR,
 * literal addresses, a refused and a silent server (tempfail; the tries
 * counted at the silent one), cancel, and free with queries in flight.
 * Every case counts its callbacks and requires a clean loop close.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "core/dns.h"
#include "core/log.h"

static pid_t dnsmasq_pid;
static unsigned dns_port;

/* A loopback UDP socket on a port the kernel picks; *port set. */
static int
udp_socket(unsigned *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);

    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static unsigned
free_udp_port(void)
{
    unsigned port;
    close(udp_socket(&port));
    return port;
}

/* Datagrams waiting on fd, each read; waits up to ms for the first. */
static unsigned
drain_datagrams(int fd, int ms)
{
    unsigned n = 0;
    char buf[512];
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (poll(&p, 1, n ? 0 : ms) == 1 && recv(fd, buf, sizeof(buf), 0) > 0)
        n++;
    return n;
}

/* True once a DNS server on port answers a query (any answer: NXDOMAIN
 * too), waiting up to ms: the server is ours and serving, not merely a
 * port someone holds. */
static bool
dns_answers(unsigned port, int ms)
{
    static const unsigned char q[] = "\x12\x34\x01\x00\x00\x01\x00\x00"
                                     "\x00\x00\x00\x00\x04test\x00\x00\x01"
                                     "\x00\x01";
    struct sockaddr_in sa = {.sin_family = AF_INET};
    unsigned mine;
    int fd = udp_socket(&mine);
    bool ok;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    ok = sendto(fd, q, sizeof(q) - 1, 0, (struct sockaddr *)&sa,
                sizeof(sa)) == (ssize_t)(sizeof(q) - 1) &&
         drain_datagrams(fd, ms) > 0;
    close(fd);
    return ok;
}

/* dnsmasq on a free loopback port, waited for until it answers. The port
 * was free when picked, but any process (a resolver's source port, another
 * test's server) may take it before dnsmasq binds it: dnsmasq then exits,
 * and it is started again on another port. */
static int
start_dnsmasq(void **state)
{
    char port[32];

    (void)state;
    for (int attempt = 0; attempt < 5; attempt++) {
        dns_port = free_udp_port();
        snprintf(port, sizeof(port), "--port=%u", dns_port);
        dnsmasq_pid = fork();
        if (dnsmasq_pid == 0) {
            execlp("dnsmasq", "dnsmasq", "--keep-in-foreground",
                   "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                   "--bind-interfaces", "--listen-address=127.0.0.1",
                   "--pid-file=", "--user=", port, "--local=/test/",
                   "--mx-host=two.test,mx-b.two.test,20",
                   "--mx-host=two.test,mx-a.two.test,10",
                   "--host-record=mx-a.two.test,127.0.0.2,::2",
                   "--host-record=v4only.test,127.0.0.3",
                   /* RFC 7505 null MX: preference 0, exchange "." */
                   "--dns-rr=null.test,15,000000",
                   "--ptr-record=9.0.0.127.in-addr.arpa,client.example.test",
                   "--txt-record=txtonly.test,hello", (char *)NULL);
            _exit(127);
        }
        assert_true(dnsmasq_pid > 0);
        /* bounded by count and by time: 300 x 200 ms at most */
        for (int i = 0; i < 300; i++) {
            int status;
            if (waitpid(dnsmasq_pid, &status, WNOHANG) == dnsmasq_pid) {
                /* 127: no dnsmasq at all, which no retry mends */
                assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 127);
                dnsmasq_pid = 0;
                break;
            }
            if (dns_answers(dns_port, 200))
                return 0;
        }
        if (dnsmasq_pid > 0)
            fail_msg("dnsmasq on port %u started but never answered",
                     dns_port);
    }
    fail_msg("dnsmasq could not bind a free port in 5 attempts");
    return -1;
}

static int
stop_dnsmasq(void **state)
{
    (void)state;
    if (dnsmasq_pid > 0) {
        kill(dnsmasq_pid, SIGTERM);
        waitpid(dnsmasq_pid, NULL, 0);
        dnsmasq_pid = 0;
    }
    return 0;
}

struct res {
    int calls;
    enum pst_dns_status st;
    size_t n;
    unsigned pref[PST_DNS_MAX_MX];
    char hosts[PST_DNS_MAX_MX][64];
    char ips[PST_DNS_MAX_ADDRS][PST_IP_STRLEN];
    char name[256];
};

static void
mx_cb(void *arg, enum pst_dns_status st, const struct pst_dns_mx *mx,
      size_t n)
{
    struct res *r = arg;
    r->calls++;
    r->st = st;
    r->n = n;
    for (size_t i = 0; i < n; i++) {
        r->pref[i] = mx[i].pref;
        snprintf(r->hosts[i], sizeof(r->hosts[i]), "%s", mx[i].host);
    }
}

static void
addr_cb(void *arg, enum pst_dns_status st, const struct pst_ip *ips,
        size_t n)
{
    struct res *r = arg;
    r->calls++;
    r->st = st;
    r->n = n;
    for (size_t i = 0; i < n; i++)
        pst_ip_str(&ips[i], r->ips[i], sizeof(r->ips[i]));
}

static void
ptr_cb(void *arg, enum pst_dns_status st, const char *name)
{
    struct res *r = arg;
    r->calls++;
    r->st = st;
    snprintf(r->name, sizeof(r->name), "%s", name ? name : "(null)");
}

/* A resolver asking only 127.0.0.1:port, timeout_ms per try. */
static struct pst_dns *
open_dns_with(uv_loop_t *loop, unsigned port, unsigned timeout_ms,
              unsigned tries)
{
    char ns[64];
    const char *list[1] = {ns};
    struct pst_dns_opts o = {.nameservers = list, .nnameservers = 1,
                             .timeout_ms = timeout_ms, .tries = tries};
    struct pst_err err = {0};
    struct pst_dns *d = NULL;

    snprintf(ns, sizeof(ns), "127.0.0.1:%u", port);
    assert_int_equal(pst_dns_new(&d, loop, &o, &err), 0);
    pst_err_free(&err);
    return d;
}

/* A resolver asking the test's dnsmasq with postern's default timeout and
 * tries: an answer from a loaded machine may take a while, and these tests
 * are about the answers (test_tempfail is about the timeout). */
static struct pst_dns *
open_dns(uv_loop_t *loop, unsigned port)
{
    return open_dns_with(loop, port, 0, 0);
}

static void
close_loop(uv_loop_t *loop, struct pst_dns *d)
{
    pst_dns_free(d);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void
test_mx_sorted(void **state)
{
    uv_loop_t loop;
    struct res r = {0};
    (void)state;
    uv_loop_init(&loop);
    struct pst_dns *d = open_dns(&loop, dns_port);
    assert_non_null(pst_dns_mx(d, "two.test", mx_cb, &r));
    assert_int_equal(r.calls, 0);           /* never from inside the call */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.st, PST_DNS_OK);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.pref[0], 10);
    assert_string_equal(r.hosts[0], "mx-a.two.test");
    assert_int_equal(r.pref[1], 20);
    assert_string_equal(r.hosts[1], "mx-b.two.test");
    close_loop(&loop, d);
}

static void
test_null_mx(void **state)
{
    uv_loop_t loop;
    struct res r = {0};
    (void)state;
    uv_loop_init(&loop);
    struct pst_dns *d = open_dns(&loop, dns_port);
    pst_dns_mx(d, "null.test", mx_cb, &r);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.st, PST_DNS_OK);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.pref[0], 0);
    assert_string_equal(r.hosts[0], "");
    close_loop(&loop, d);
}

static void
test_nxdomain_nodata(void **state)
{
    uv_loop_t loop;
    struct res a = {0}, b = {0}, c = {0};
    (void)state;
    uv_loop_init(&loop);
    struct pst_dns *d = open_dns(&loop, dns_port);
    pst_dns_mx(d, "nosuch.test", mx_cb, &a);
    pst_dns_mx(d, "txtonly.test", mx_cb, &b);
    pst_dns_mx(d, "bad name.test", mx_cb, &c);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.st, PST_DNS_NXDOMAIN);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.st, PST_DNS_NODATA);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.st, PST_DNS_BADNAME);
    close_loop(&loop, d);
}

static void
test_addr(void **state)
{
    uv_loop_t loop;
    struct res a = {0}, b = {0}, c = {0}, e = {0};
    (void)state;
    uv_loop_init(&loop);
    struct pst_dns *d = open_dns(&loop, dns_port);
    pst_dns_addr(d, "mx-a.two.test", AF_UNSPEC, addr_cb, &a);
    pst_dns_addr(d, "v4only.test", AF_INET, addr_cb, &b);
    pst_dns_addr(d, "::1", AF_UNSPEC, addr_cb, &c);
    pst_dns_addr(d, "gone.test", AF_UNSPEC, addr_cb, &e);
    assert_int_equal(c.calls, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.st, PST_DNS_OK);
    assert_int_equal(a.n, 2);
    assert_string_equal(a.ips[0], "::2");   /* IPv6 first */
    assert_string_equal(a.ips[1], "127.0.0.2");
    assert_int_equal(b.st, PST_DNS_OK);
    assert_int_equal(b.n, 1);
    assert_string_equal(b.ips[0], "127.0.0.3");
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.st, PST_DNS_OK);
    assert_string_equal(c.ips[0], "::1");
    assert_int_equal(e.calls, 1);
    assert_int_equal(e.st, PST_DNS_NXDOMAIN);
    close_loop(&loop, d);
}

static void
test_ptr(void **state)
{
    uv_loop_t loop;
    struct res a = {0}, b = {0}, c = {0};
    struct pst_ip ip;
    (void)state;
    uv_loop_init(&loop);
    struct pst_dns *d = open_dns(&loop, dns_port);
    pst_ip_parse(&ip, "127.0.0.9");
    pst_dns_ptr(d, &ip, ptr_cb, &a);
    pst_ip_parse(&ip, "127.0.0.2");         /* from --host-record */
    pst_dns_ptr(d, &ip, ptr_cb, &b);
    pst_ip_parse(&ip, "::2");               /* ip6.arpa, same record */
    pst_dns_ptr(d, &ip, ptr_cb, &c);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.st, PST_DNS_OK);
    assert_string_equal(c.name, "mx-a.two.test");
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.st, PST_DNS_OK);
    assert_string_equal(a.name, "client.example.test");
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.st, PST_DNS_OK);
    assert_string_equal(b.name, "mx-a.two.test");
    close_loop(&loop, d);
}

/* No answer is a tempfail, however it comes: a port nothing listens on
 * (refused at once) or a server that never answers (each of the tries
 * times out: exactly `tries` queries reach it, the first retry no sooner
 * than timeout_ms after the first). The upper bound only tells the options
 * from c-ares' and postern's defaults (5 s a try, at least 15 s in all). */
static void
test_tempfail(void **state)
{
    uv_loop_t loop;
    struct res a = {0}, b = {0};
    unsigned silent_port;
    (void)state;
    uv_loop_init(&loop);
    struct pst_dns *d = open_dns_with(&loop, free_udp_port(), 200, 1);
    pst_dns_mx(d, "two.test", mx_cb, &a);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.st, PST_DNS_TEMPFAIL);
    close_loop(&loop, d);

    int silent = udp_socket(&silent_port);
    uv_loop_init(&loop);
    d = open_dns_with(&loop, silent_port, 200, 3);
    uint64_t t0 = uv_hrtime();
    pst_dns_mx(d, "two.test", mx_cb, &b);
    uv_run(&loop, UV_RUN_DEFAULT);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.st, PST_DNS_TEMPFAIL);
    assert_int_equal(drain_datagrams(silent, 0), 3);
    if (ms < 200 || ms > 12000)
        fail_msg("3 tries of 200 ms took %llu ms", (unsigned long long)ms);
    close(silent);
    close_loop(&loop, d);
}

static void
test_cancel_and_free(void **state)
{
    uv_loop_t loop;
    struct res a = {0}, b = {0}, c = {0};
    (void)state;
    uv_loop_init(&loop);
    struct pst_dns *d = open_dns(&loop, dns_port);
    struct pst_dns_query *q = pst_dns_mx(d, "two.test", mx_cb, &a);
    pst_dns_cancel(q);
    q = pst_dns_addr(d, "127.0.0.1", AF_UNSPEC, addr_cb, &b);
    pst_dns_cancel(q);                      /* answered locally, still not
                                               called */
    pst_dns_mx(d, "two.test", mx_cb, &c);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(a.calls, 0);
    assert_int_equal(b.calls, 0);
    assert_int_equal(c.calls, 1);
    /* free with a query in flight: no callback, clean close */
    struct res x = {0};
    pst_dns_mx(d, "two.test", mx_cb, &x);
    close_loop(&loop, d);
    assert_int_equal(x.calls, 0);
}

static void
test_bad_nameserver(void **state)
{
    uv_loop_t loop;
    const char *list[1] = {"not-an-address"};
    struct pst_dns_opts o = {.nameservers = list, .nnameservers = 1};
    struct pst_err err = {0};
    struct pst_dns *d = NULL;
    (void)state;
    uv_loop_init(&loop);
    assert_int_equal(pst_dns_new(&d, &loop, &o, &err), -EINVAL);
    assert_non_null(strstr(pst_err_first(&err), "resolver.nameservers"));
    pst_err_free(&err);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mx_sorted),
        cmocka_unit_test(test_null_mx),
        cmocka_unit_test(test_nxdomain_nodata),
        cmocka_unit_test(test_addr),
        cmocka_unit_test(test_ptr),
        cmocka_unit_test(test_tempfail),
        cmocka_unit_test(test_cancel_and_free),
        cmocka_unit_test(test_bad_nameserver),
    };
    signal(SIGPIPE, SIG_IGN);
    pst_log_open("dns_test", 0, 0, PST_LOG_WARN);
    return cmocka_run_group_tests(tests, start_dnsmasq, stop_dnsmasq);
}
