/*
 * tls_sessions_test.c - the delivery client's session cache
 * (queue/tls_sessions.h): the latest session per key, the bound (least
 * recently used out first), expiry by the session's own lifetime and by
 * the cache's timeout, drop, and sessions that cannot be resumed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "queue/tls_sessions.h"

/* a resumable session stamped now with lifetime seconds */
static SSL_SESSION *
sess(unsigned char id, long lifetime)
{
    SSL_SESSION *s = SSL_SESSION_new();
    assert_non_null(s);
    unsigned char sid[32] = {id};
    assert_int_equal(SSL_SESSION_set1_id(s, sid, sizeof(sid)), 1);
    assert_int_equal(SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION), 1);
    SSL_SESSION_set_time(s, (long)time(NULL));
    SSL_SESSION_set_timeout(s, lifetime);
    return s;
}

/* got - the session for key is s (NULL: none) */
static void
got(struct pst_tls_sessions *ts, const char *key, SSL_SESSION *s)
{
    SSL_SESSION *g = pst_tls_sessions_get(ts, key);
    assert_ptr_equal(g, s);
    SSL_SESSION_free(g);
}

static void
test_latest_and_bound(void **state)
{
    (void)state;
    struct pst_tls_sessions *ts = pst_tls_sessions_new(2, 3600);
    SSL_SESSION *a = sess(1, 600), *a2 = sess(2, 600), *b = sess(3, 600),
                *c = sess(4, 600);

    got(ts, "a", NULL);
    pst_tls_sessions_put(ts, "a", a);
    pst_tls_sessions_put(ts, "a", a2);          /* the newer one */
    got(ts, "a", a2);
    pst_tls_sessions_put(ts, "b", b);
    assert_int_equal(pst_tls_sessions_count(ts), 2);
    got(ts, "a", a2);                           /* a used last: b goes */
    pst_tls_sessions_put(ts, "c", c);
    assert_int_equal(pst_tls_sessions_count(ts), 2);
    got(ts, "b", NULL);
    got(ts, "a", a2);
    got(ts, "c", c);
    pst_tls_sessions_drop(ts, "c");
    got(ts, "c", NULL);
    assert_int_equal(pst_tls_sessions_count(ts), 1);
    /* the cache holds its own references */
    SSL_SESSION_free(a);
    SSL_SESSION_free(a2);
    SSL_SESSION_free(b);
    SSL_SESSION_free(c);
    pst_tls_sessions_free(ts);
}

static void
test_expiry(void **state)
{
    (void)state;
    struct pst_tls_sessions *ts = pst_tls_sessions_new(10, 60);
    /* stamped two hours ago with a one-hour lifetime: already over */
    SSL_SESSION *old = sess(1, 3600);
    SSL_SESSION_set_time(old, (long)time(NULL) - 7200);
    pst_tls_sessions_put(ts, "old", old);
    got(ts, "old", NULL);
    /* stamped 100 s ago with a day's lifetime, but the cache keeps one
     * for 60 s from when it was stored: still good now */
    SSL_SESSION *s = sess(2, 86400);
    SSL_SESSION_set_time(s, (long)time(NULL) - 100);
    pst_tls_sessions_put(ts, "s", s);
    got(ts, "s", s);
    /* one that cannot be resumed is not kept */
    SSL_SESSION *none = SSL_SESSION_new();
    pst_tls_sessions_put(ts, "none", none);
    got(ts, "none", NULL);
    assert_int_equal(pst_tls_sessions_count(ts), 1);
    /* a cache whose timeout is over as soon as it stores keeps nothing,
     * whatever the session's own lifetime */
    struct pst_tls_sessions *zero = pst_tls_sessions_new(10, 0);
    pst_tls_sessions_put(zero, "s", s);
    got(zero, "s", NULL);
    assert_int_equal(pst_tls_sessions_count(zero), 0);
    pst_tls_sessions_free(zero);
    SSL_SESSION_free(old);
    SSL_SESSION_free(s);
    SSL_SESSION_free(none);
    pst_tls_sessions_free(ts);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_latest_and_bound),
        cmocka_unit_test(test_expiry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
