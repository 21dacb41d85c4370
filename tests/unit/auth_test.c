/*
 * auth_test.c - SASL helpers (base64, PLAIN), the password file checks,
 * the crypt worker pool on a real loop (known, wrong and unknown logins;
 * callbacks counted, loop closed clean), failure limits before hashing
 * (IPv6 clients by prefix, full tables that forget their oldest counter,
 * the window), and the sender-login map.
 */
#include <crypt.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "conf/conf.h"
#include "gateway/auth.h"

static char dir[64], conf_path[128], pw_path[128], map_path[128];

static void
write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

static char *
hash(const char *pw, const char *prefix)
{
    struct crypt_data cd;
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    memset(&cd, 0, sizeof(cd));
    assert_non_null(crypt_gensalt_rn(prefix, 0, NULL, 0, salt, sizeof(salt)));
    assert_non_null(crypt_rn(pw, salt, &cd, sizeof(cd)));
    return strdup(cd.output);
}

static int
setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/auth_test.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(conf_path, sizeof(conf_path), "%s/t.conf", dir);
    snprintf(pw_path, sizeof(pw_path), "%s/passwd", dir);
    snprintf(map_path, sizeof(map_path), "%s/senders", dir);
    char *a = hash("alice-pw", "$y$"), *b = hash("bob-pw", "$6$");
    char text[1024];
    snprintf(text, sizeof(text), "# users\nalice:%s\nbob:%s:extra:fields\n",
             a, b);
    write_file(pw_path, text, 0600);
    free(a);
    free(b);
    write_file(map_path, "alice@corp.test alice\n@bob.test bob\n"
                         "Shared@Corp.Test alice,bob\n", 0644);
    return 0;
}

static int
teardown(void **state)
{
    unlink(conf_path);
    unlink(pw_path);
    unlink(map_path);
    rmdir(dir);
    return 0;
}

static void
test_sasl_plain(void **state)
{
    static const struct {
        const char *in;
        size_t len;
        const char *login, *pw;     /* login NULL: invalid */
    } cases[] = {
        {"\0u\0p", 4, "u", "p"},
        {"u\0u\0p", 5, "u", "p"},
        {"\0u\0", 3, "u", ""},
        {"x\0u\0p", 5, NULL, NULL},  /* acting for another identity */
        {"\0\0p", 3, NULL, NULL},    /* empty login */
        {"\0u", 2, NULL, NULL},
        {"u", 1, NULL, NULL},
        {"\0u\0p\0q", 6, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char login[PST_AUTH_FIELD_MAX + 1], pw[PST_AUTH_FIELD_MAX + 1];
        int rc = pst_sasl_plain(cases[i].in, cases[i].len, login, pw);
        if (cases[i].login == NULL) {
            if (rc == 0)
                fail_msg("case %zu: want invalid", i);
            continue;
        }
        if (rc != 0 || strcmp(login, cases[i].login) != 0 ||
            strcmp(pw, cases[i].pw) != 0)
            fail_msg("case %zu: want %s/%s", i, cases[i].login, cases[i].pw);
    }
    char big[600];
    memset(big, 'a', sizeof(big));
    big[0] = '\0';
    big[300] = '\0';
    char login[PST_AUTH_FIELD_MAX + 1], pw[PST_AUTH_FIELD_MAX + 1];
    assert_true(pst_sasl_plain(big, sizeof(big), login, pw) < 0);
}

struct result {
    uint64_t sid;
    bool ok;
    char login[64];
};
static struct result results[64];
static unsigned nresults;

static void
on_done(void *arg, uint64_t sid, const char *login, bool ok)
{
    assert_true(nresults < 64);
    results[nresults].sid = sid;
    results[nresults].ok = ok;
    snprintf(results[nresults].login, sizeof(results[0].login), "%s", login);
    nresults++;
    if (nresults == *(unsigned *)arg)
        uv_stop(uv_default_loop());
}

static struct pst_conf *
conf_with(const char *extra)
{
    char text[1024];
    struct pst_err err = {0};
    snprintf(text, sizeof(text),
             "auth = { password_file = \"%s\"; sender_login_map = \"%s\"; "
             "workers = 2; max_failures_per_login = 2; "
             "max_failures_per_ip = 3; %s };\n", pw_path, map_path, extra);
    write_file(conf_path, text, 0644);
    struct pst_conf *c = pst_conf_load(conf_path, &err);
    if (c == NULL)
        fail_msg("%s", pst_err_first(&err));
    return c;
}

static void
wait_results(struct pst_auth *a, unsigned want)
{
    (void)a;
    uv_run(uv_default_loop(), UV_RUN_DEFAULT);
    assert_int_equal(nresults, want);
}

static void
test_pool(void **state)
{
    uv_loop_t *loop = uv_default_loop();
    struct pst_conf *c = conf_with("");
    struct pst_auth *a = NULL;
    struct pst_err err = {0};
    struct pst_ip ip1, ip2;
    unsigned want = 2;
    assert_int_equal(pst_ip_parse(&ip1, "192.0.2.1"), 0);
    assert_int_equal(pst_ip_parse(&ip2, "192.0.2.2"), 0);
    assert_int_equal(pst_auth_new(&a, loop, c, on_done, &want, &err), 0);

    /* successes first: a success clears its login's failure count, and
     * checks on two workers may finish in either order */
    nresults = 0;
    want = 2;
    assert_int_equal(pst_auth_check(a, 1, &ip1, "alice", "alice-pw"), 0);
    assert_int_equal(pst_auth_check(a, 2, &ip1, "bob", "bob-pw"), 0);
    wait_results(a, 2);
    assert_true(results[0].ok && results[1].ok);
    nresults = 0;
    assert_int_equal(pst_auth_check(a, 3, &ip1, "alice", "wrong"), 0);
    /* unknown login: the dummy hash is alice's, her password must fail */
    assert_int_equal(pst_auth_check(a, 4, &ip2, "nobody", "alice-pw"), 0);
    wait_results(a, 2);
    for (unsigned i = 0; i < 2; i++) {
        bool want_ok = results[i].sid == 1 || results[i].sid == 2;
        if (results[i].ok != want_ok)
            fail_msg("sid %llu: want ok=%d", (unsigned long long)results[i].sid,
                     want_ok);
    }

    /* alice has 1 failure; one more reaches the per-login limit (2) */
    nresults = 0;
    want = 1;
    assert_int_equal(pst_auth_check(a, 5, &ip2, "alice", "wrong"), 0);
    wait_results(a, 1);
    assert_int_equal(pst_auth_check(a, 6, &ip2, "alice", "alice-pw"),
                     -EPERM);
    /* ip2 has 2 failures (nobody, alice); a third reaches its limit (3) */
    nresults = 0;
    assert_int_equal(pst_auth_check(a, 7, &ip2, "bob", "wrong"), 0);
    wait_results(a, 1);
    assert_int_equal(pst_auth_check(a, 8, &ip2, "bob", "bob-pw"), -EPERM);
    /* ip1 is still fine for bob */
    nresults = 0;
    assert_int_equal(pst_auth_check(a, 9, &ip1, "bob", "bob-pw"), 0);
    wait_results(a, 1);
    assert_true(results[0].ok);

    struct pst_auth_stats st;
    pst_auth_stats(a, &st);
    assert_int_equal(st.checks, 7);
    assert_int_equal(st.refused, 2);

    /* sender-login map */
    assert_true(pst_auth_sender_ok(a, "alice", "alice@corp.test"));
    assert_true(pst_auth_sender_ok(a, "alice", "ALICE@corp.TEST"));
    assert_true(pst_auth_sender_ok(a, "alice", "shared@corp.test"));
    assert_true(pst_auth_sender_ok(a, "bob", "shared@corp.test"));
    assert_true(pst_auth_sender_ok(a, "bob", "x@bob.test"));
    assert_true(pst_auth_sender_ok(a, "bob", ""));
    assert_false(pst_auth_sender_ok(a, "alice", "x@bob.test"));
    assert_false(pst_auth_sender_ok(a, "bob", "alice@corp.test"));
    assert_false(pst_auth_sender_ok(a, "al", "alice@corp.test"));
    assert_false(pst_auth_sender_ok(a, "alice", "other@corp.test"));

    /* close with work queued: no callback, nothing leaked */
    nresults = 0;
    for (uint64_t i = 0; i < 6; i++)
        assert_int_equal(pst_auth_check(a, 100 + i, &ip1, "bob", "bob-pw"),
                         0);
    pst_auth_close(a);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(nresults, 0);
    assert_int_equal(uv_loop_close(loop), 0);
    pst_conf_unref(c);
}

/* Failed checks of login from each address in ips (NULL ended), waited
 * for; each must be queued and fail. */
static void
fail_from(struct pst_auth *a, const char *const *ips, const char *login,
          unsigned *want)
{
    unsigned n = 0;
    nresults = 0;
    for (; ips[n]; n++) {
        struct pst_ip ip;
        assert_int_equal(pst_ip_parse(&ip, ips[n]), 0);
        int rc = pst_auth_check(a, 1000 + n, &ip, login, "wrong");
        if (rc != 0)
            fail_msg("%s from %s: %d, want queued", login, ips[n], rc);
    }
    *want = n;
    wait_results(a, n);
    for (unsigned i = 0; i < n; i++)
        assert_false(results[i].ok);
}

static int
check_from(struct pst_auth *a, const char *ipstr, const char *login,
           const char *pw)
{
    struct pst_ip ip;
    assert_int_equal(pst_ip_parse(&ip, ipstr), 0);
    return pst_auth_check(a, 1, &ip, login, pw);
}

static void
close_auth(struct pst_auth *a, struct pst_conf *c)
{
    pst_auth_close(a);
    uv_run(uv_default_loop(), UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(uv_default_loop()), 0);
    pst_conf_unref(c);
}

/* IPv6 clients are counted per limits.ipv6_prefix: a /64 does not get a
 * fresh allowance per address. */
static void
test_ipv6_prefix(void **state)
{
    struct pst_conf *c = conf_with("");
    struct pst_auth *a = NULL;
    struct pst_err err = {0};
    unsigned want = 0;
    assert_int_equal(pst_auth_new(&a, uv_default_loop(), c, on_done, &want,
                                  &err), 0);
    static const char *const one64[] = {"2001:db8::1", "2001:db8::2:3",
                                        "2001:db8::ffff:ffff", NULL};
    for (unsigned i = 0; one64[i]; i++) {
        const char *list[] = {one64[i], NULL};
        char login[16];
        snprintf(login, sizeof(login), "guess%u", i);
        fail_from(a, list, login, &want);
    }
    /* three failures from the /64 reach max_failures_per_ip (3) */
    assert_int_equal(check_from(a, "2001:db8::9", "guess9", "x"), -EPERM);
    assert_int_equal(check_from(a, "2001:db8::1", "alice", "alice-pw"),
                     -EPERM);
    /* another /64 is another client */
    nresults = 0;
    want = 1;
    assert_int_equal(check_from(a, "2001:db8:0:1::1", "alice", "alice-pw"),
                     0);
    wait_results(a, 1);
    assert_true(results[0].ok);
    close_auth(a, c);
}

/* Full failure tables forget their oldest counter and go on counting; a
 * flood of made-up logins does not flush a real login's counter. */
static void
test_full_tables(void **state)
{
    struct pst_conf *c = conf_with("failure_entries = 16;");
    struct pst_auth *a = NULL;
    struct pst_err err = {0};
    struct pst_auth_stats st;
    unsigned want = 0;
    assert_int_equal(pst_auth_new(&a, uv_default_loop(), c, on_done, &want,
                                  &err), 0);

    /* 16 clients, 16 made-up logins: both tables full */
    nresults = 0;
    for (unsigned i = 0; i < 16; i++) {
        char ip[32], login[16];
        snprintf(ip, sizeof(ip), "10.0.0.%u", i + 1);
        snprintf(login, sizeof(login), "nobody%u", i);
        assert_int_equal(check_from(a, ip, login, "x"), 0);
    }
    want = 16;
    wait_results(a, 16);
    pst_auth_stats(a, &st);
    assert_int_equal(st.forgotten, 0);

    /* a new client is still counted: its third failure reaches the limit */
    static const char *const newip[] = {"10.0.1.1", NULL};
    fail_from(a, newip, "ghost1", &want);
    fail_from(a, newip, "ghost2", &want);
    fail_from(a, newip, "ghost3", &want);
    assert_int_equal(check_from(a, "10.0.1.1", "ghost4", "x"), -EPERM);
    pst_auth_stats(a, &st);
    assert_int_equal(st.forgotten, 1 + 3);  /* 10.0.0.1; nobody0..2 */
    /* the oldest client's counter was the one forgotten */
    nresults = 0;
    want = 1;
    assert_int_equal(check_from(a, "10.0.0.1", "bob", "bob-pw"), 0);
    wait_results(a, 1);

    /* a real login is counted however full the made-up ones are */
    static const char *const two[] = {"10.0.2.1", "10.0.2.2", NULL};
    fail_from(a, two, "alice", &want);
    assert_int_equal(check_from(a, "10.0.2.3", "alice", "alice-pw"), -EPERM);
    close_auth(a, c);
}

/* Counters live failure_window seconds from their first failure (loop
 * time, milliseconds), then end. Whether a counter is still live depends on
 * how long the machine took to get there, so each round measures it: the
 * counters start at or after t0, so a check whose loop time is less than
 * the window past t0 must be refused. A round the machine stalled through
 * proves nothing and is run again with a fresh login and clients (bounded);
 * the end of the window is certain: every counter started by tc. */
static void
test_window(void **state)
{
    uv_loop_t *loop = uv_default_loop();
    struct pst_conf *c = conf_with("failure_window = 1;");
    struct pst_auth *a = NULL;
    struct pst_err err = {0};
    unsigned want = 0, round;
    const uint64_t window_ms = 1000;
    assert_int_equal(pst_auth_new(&a, loop, c, on_done, &want, &err), 0);
    for (round = 0; round < 10; round++) {
        char ip1[32], ip2[32], ip3[32];
        snprintf(ip1, sizeof(ip1), "10.0.%u.1", round);
        snprintf(ip2, sizeof(ip2), "10.0.%u.2", round);
        snprintf(ip3, sizeof(ip3), "10.0.%u.3", round);
        const char *const two[] = {ip1, ip2, NULL};
        uv_update_time(loop);
        uint64_t t0 = uv_now(loop);
        fail_from(a, two, "alice", &want);
        int rc = check_from(a, ip3, "alice", "alice-pw");
        uint64_t tc = uv_now(loop);         /* the check's loop time */
        if (tc - t0 >= window_ms) {
            print_message("round %u: %llu ms to fail twice, over the "
                          "window; again\n", round,
                          (unsigned long long)(tc - t0));
            /* whatever rc was, let the counters end before the next */
            while (uv_now(loop) - tc < window_ms) {
                usleep(50 * 1000);
                uv_update_time(loop);
            }
            if (rc == 0) {
                nresults = 0;
                want = 1;
                wait_results(a, 1);
            }
            continue;
        }
        assert_int_equal(rc, -EPERM);
        /* the window ends window_ms after the last counter started */
        while (uv_now(loop) - tc < window_ms) {
            usleep(50 * 1000);
            uv_update_time(loop);
        }
        nresults = 0;
        want = 1;
        assert_int_equal(check_from(a, ip3, "alice", "alice-pw"), 0);
        wait_results(a, 1);
        assert_true(results[0].ok);
        break;
    }
    if (round == 10)
        fail_msg("every round took longer than the window");
    close_auth(a, c);
}

static void
test_password_file_checks(void **state)
{
    struct pst_conf *c = conf_with("");
    struct pst_auth *a = NULL;
    struct pst_err err = {0};

    assert_int_equal(chmod(pw_path, 0604), 0);
    assert_true(pst_auth_new(&a, uv_default_loop(), c, on_done, NULL, &err) <
                0);
    assert_non_null(strstr(pst_err_first(&err), "readable or writable by "
                                                "others (mode 0604)"));
    pst_err_free(&err);
    assert_int_equal(chmod(pw_path, 0600), 0);

    /* every bad line reported with its number */
    char *good = hash("pw", "$y$"), text[4096], want[256];
    memset(text, 0, sizeof(text));
    snprintf(text, sizeof(text), "# users\nok:%s\nnocolon\nok:%s\n", good,
             good);
    memset(text + strlen(text), 'a', 1100);
    strcat(text, "\nweak:$1$md5$x\n");
    free(good);
    char saved[256];
    snprintf(saved, sizeof(saved), "%s.saved", pw_path);
    assert_int_equal(rename(pw_path, saved), 0);
    write_file(pw_path, text, 0600);
    assert_true(pst_auth_new(&a, uv_default_loop(), c, on_done, NULL, &err) <
                0);
    static const char *const msgs[] = {
        ":3: expected login:hash", ":4: duplicate login \"ok\"",
        ":5: line longer than 1024 octets",
        ":6: hash of \"weak\" is not yescrypt"};
    assert_int_equal(err.count, 4);
    for (unsigned i = 0; i < 4; i++) {
        snprintf(want, sizeof(want), "%s%s", pw_path, msgs[i]);
        if (strncmp(err.msgs[i], want, strlen(want)) != 0)
            fail_msg("error %u: \"%s\", want \"%s...\"", i, err.msgs[i],
                     want);
    }
    pst_err_free(&err);
    assert_int_equal(rename(saved, pw_path), 0);
    pst_conf_unref(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sasl_plain),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_ipv6_prefix),
        cmocka_unit_test(test_full_tables),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_password_file_checks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
