/*
 * tls_test.c - the server's session tickets (gateway/tls.c) against an
 * OpenSSL client in the same process, the two joined by memory BIOs: a
 * ticket resumes; the keys' rotation on a fake clock (a key seals for one
 * lifetime, opens for two, then is gone); two contexts on one key ring (a
 * reload) resume each other's tickets, contexts on another ring do not;
 * tls.session_tickets = false gives no ticket; TLS 1.2 tickets too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "conf/conf.h"
#include "gateway/tls.h"

#define LIFETIME 60

static char dir[64], cert_path[128], key_path[128];
static uint64_t fake_now = 1000;

static uint64_t
clock_fake(void *arg)
{
    (void)arg;
    return fake_now;
}

/* a self-signed P-256 certificate for mail.test */
static void
make_cert(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(k);
    assert_non_null(x);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                               (const unsigned char *)"mail.test", -1, -1, 0);
    X509_set_issuer_name(x, n);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    FILE *f = fopen(cert_path, "w");
    assert_non_null(f);
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(key_path, "w");
    assert_non_null(f);
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
}

static int
setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/tls_test.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(cert_path, sizeof(cert_path), "%s/c.pem", dir);
    snprintf(key_path, sizeof(key_path), "%s/k.pem", dir);
    make_cert();
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    unlink(cert_path);
    unlink(key_path);
    rmdir(dir);
    return 0;
}

static struct pst_tls_ctx *
server_ctx(struct pst_tls_tickets *k, bool tickets)
{
    struct pst_tls_cert cert = {.cert_file = cert_path,
                                .key_file = key_path};
    struct pst_tls_conf c = {.certs = &cert,
                             .ncerts = 1,
                             .session_tickets = tickets,
                             .session_timeout = LIFETIME};
    struct pst_err err = {0};
    struct pst_tls_ctx *x = NULL;
    if (pst_tls_ctx_new(&x, &c, k, &err) < 0)
        fail_msg("TLS context: %s", pst_err_first(&err));
    pst_err_free(&err);
    return x;
}

/* move what the server wrote to the client's input */
static void
to_client(struct pst_tls *t, BIO *in)
{
    char buf[16384];
    size_t n;
    while ((n = pst_tls_take(t, buf, sizeof(buf))) > 0)
        assert_int_equal(BIO_write(in, buf, (int)n), (int)n);
}

static void
to_server(BIO *out, struct pst_tls *t)
{
    char buf[16384];
    int n;
    while ((n = BIO_read(out, buf, sizeof(buf))) > 0)
        pst_tls_feed(t, buf, (size_t)n);
}

/*
 * session - one handshake with x offering sess (may be NULL), then the
 * server writes one record so that the client reads a TLS 1.3 ticket.
 * Returns the client's session after it (a reference), and whether the
 * two sides agree the session was resumed in *resumed.
 */
static SSL_SESSION *
session(struct pst_tls_ctx *x, SSL_CTX *cctx, SSL_SESSION *sess,
        bool *resumed)
{
    struct pst_tls *t = pst_tls_new(x);
    SSL *c = SSL_new(cctx);
    BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(in, -1);
    SSL_set_bio(c, in, out);
    SSL_set_connect_state(c);
    if (sess)
        assert_int_equal(SSL_set_session(c, sess), 1);
    int cr = 0, sr = 0;
    for (int i = 0; i < 10 && (cr != 1 || sr != 1); i++) {
        if (cr != 1)
            cr = SSL_do_handshake(c);
        to_server(out, t);
        if (sr != 1)
            sr = pst_tls_handshake(t);
        assert_true(sr >= 0);
        to_client(t, in);
    }
    assert_int_equal(cr, 1);
    assert_int_equal(sr, 1);
    assert_int_equal(pst_tls_write(t, "220 x\r\n", 7), 0);
    to_client(t, in);
    char buf[64];
    assert_int_equal(SSL_read(c, buf, sizeof(buf)), 7);
    *resumed = SSL_session_reused(c) == 1;
    assert_int_equal(*resumed, pst_tls_resumed(t));
    SSL_SESSION *got = SSL_get1_session(c);
    SSL_shutdown(c);                /* a clean end keeps it resumable */
    SSL_free(c);
    pst_tls_free(t);
    return got;
}

static SSL_CTX *
client_ctx(int version)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(cctx, version);
    SSL_CTX_set_max_proto_version(cctx, version);
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);
    return cctx;
}

/* resumes - does sess resume on x? */
static bool
resumes(struct pst_tls_ctx *x, SSL_CTX *cctx, SSL_SESSION *sess)
{
    bool r;
    SSL_SESSION_free(session(x, cctx, sess, &r));
    return r;
}

static void
rotation(int version)
{
    struct pst_tls_tickets *k = pst_tls_tickets_new();
    pst__tls_tickets_clock(k, clock_fake, NULL);
    fake_now = 1000;
    struct pst_tls_ctx *x = server_ctx(k, true);
    SSL_CTX *cctx = client_ctx(version);
    bool r;

    /* key 1, born at 1000, seals until 1060, opens until 1120 */
    SSL_SESSION *s1 = session(x, cctx, NULL, &r);
    assert_false(r);
    assert_true(SSL_SESSION_has_ticket(s1));
    fake_now = 1030;
    assert_true(resumes(x, cctx, s1));
    /* 1061: key 2 takes over; key 1's tickets still open (renewed) */
    fake_now = 1061;
    assert_true(resumes(x, cctx, s1));
    SSL_SESSION *s2 = session(x, cctx, NULL, &r);  /* sealed by key 2 */
    fake_now = 1119;
    assert_true(resumes(x, cctx, s1));
    /* 1120: key 1 is two lifetimes old: kept but no longer opens */
    fake_now = 1120;
    assert_false(resumes(x, cctx, s1));
    assert_true(resumes(x, cctx, s2));
    /* 1122: key 3 takes over, key 2 opens, key 1 is gone */
    fake_now = 1122;
    assert_false(resumes(x, cctx, s1));
    assert_true(resumes(x, cctx, s2));
    /* an idle server: the next key comes with the next handshake and the
     * old ones are past their time */
    fake_now = 5000;
    assert_false(resumes(x, cctx, s2));

    SSL_SESSION_free(s1);
    SSL_SESSION_free(s2);
    SSL_CTX_free(cctx);
    pst_tls_ctx_free(x);
    pst_tls_tickets_free(k);
}

static void
test_rotation_tls13(void **state)
{
    (void)state;
    rotation(TLS1_3_VERSION);
}

static void
test_rotation_tls12(void **state)
{
    (void)state;
    rotation(TLS1_2_VERSION);
}

/* A reload: a new context on the process's ring opens the old one's
 * tickets; a context on another ring (another process) does not. */
static void
test_shared_ring(void **state)
{
    (void)state;
    struct pst_tls_tickets *k = pst_tls_tickets_new();
    struct pst_tls_tickets *other = pst_tls_tickets_new();
    struct pst_tls_ctx *g1 = server_ctx(k, true);
    SSL_CTX *cctx = client_ctx(TLS1_3_VERSION);
    bool r;

    SSL_SESSION *s = session(g1, cctx, NULL, &r);
    assert_false(r);
    pst_tls_ctx_free(g1);           /* the old generation is gone */
    struct pst_tls_ctx *g2 = server_ctx(k, true);
    assert_true(resumes(g2, cctx, s));
    struct pst_tls_ctx *elsewhere = server_ctx(other, true);
    assert_false(resumes(elsewhere, cctx, s));
    /* tickets off: none is given, and none is opened */
    struct pst_tls_ctx *off = server_ctx(k, false);
    SSL_SESSION *none = session(off, cctx, NULL, &r);
    assert_false(SSL_SESSION_has_ticket(none));
    assert_false(resumes(off, cctx, s));

    SSL_SESSION_free(none);
    SSL_SESSION_free(s);
    SSL_CTX_free(cctx);
    pst_tls_ctx_free(g2);
    pst_tls_ctx_free(elsewhere);
    pst_tls_ctx_free(off);
    pst_tls_tickets_free(k);
    pst_tls_tickets_free(other);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rotation_tls13),
        cmocka_unit_test(test_rotation_tls12),
        cmocka_unit_test(test_shared_ring),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
