/*
 * tls.c - OpenSSL server contexts and per-session memory-BIO TLS
 * (tls.h).
 *
 * Contexts: one SSL_CTX per configured certificate pair, all with the
 * same protocol settings. Sessions start on the first (the default); the
 * servername callback moves a session to the context whose certificate
 * names match the client's SNI (X509_check_host, wildcards allowed), so
 * the certificate is chosen before it is sent.
 *
 * Tickets: every context seals and opens tickets with the same key ring
 * (on_ticket_key; OpenSSL uses the first context's callback, the one a
 * session starts on, even after an SNI switch). A key is AES-256-CBC plus
 * HMAC-SHA256, named by 16 random octets that lead every ticket. The ring
 * holds the current key and the one before; it turns lazily, when a
 * ticket is sealed or opened and the current key is session_timeout old.
 * A ticket opened with the previous key is renewed (a fresh one is
 * sent). The session id context is the same for all contexts and
 * generations ("postern"), so an SNI switch or a reload keeps a session
 * resumable; OpenSSL still refuses one whose protocol or cipher the
 * context no longer allows, and expires it after its own timeout.
 *
 * Every SSL call is preceded by ERR_clear_error(): SSL_get_error reads
 * this thread's error queue, and a stale entry would turn WANT_READ into a
 * failure.
 */
#include "gateway/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/log.h"
#include "core/util.h"

struct pair {
    SSL_CTX *ctx;
    X509 *leaf;                     /* owned by ctx (SSL_CTX_get0_...) */
};

struct pst_tls_ctx {
    struct pair *pairs;
    size_t npairs;
    struct pst_tls_tickets *keys;
    uint64_t lifetime;              /* tls.session_timeout, seconds */
};

#define SID_CTX "postern"

struct tkey {
    unsigned char name[16];         /* TLSEXT_KEYNAME_LENGTH */
    unsigned char aes[32];
    unsigned char mac[32];
    uint64_t born;                  /* clock seconds */
    bool set;
};

struct pst_tls_tickets {
    struct tkey cur, prev;
    uint64_t (*now)(void *);
    void *now_arg;
};

struct pst_tls {
    SSL *ssl;
    BIO *rbio, *wbio;               /* owned by ssl */
};

const char *
pst_tls_error(char *buf, size_t n)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(buf, n, "unknown TLS error");
    else
        ERR_error_string_n(e, buf, n);
    ERR_clear_error();
    return buf;
}

static uint64_t
monotonic_s(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec;
}

struct pst_tls_tickets *
pst_tls_tickets_new(void)
{
    struct pst_tls_tickets *k = pst_xcalloc(1, sizeof(*k));
    k->now = monotonic_s;
    return k;
}

void
pst__tls_tickets_clock(struct pst_tls_tickets *k, uint64_t (*now)(void *),
                       void *arg)
{
    k->now = now;
    k->now_arg = arg;
}

void
pst_tls_tickets_free(struct pst_tls_tickets *k)
{
    if (k == NULL)
        return;
    OPENSSL_cleanse(k, sizeof(*k));
    free(k);
}

/* key_turn - make the first key, or a new current one once the current
 * has sealed tickets for lifetime seconds; 0 or -1 (no randomness). */
static int
key_turn(struct pst_tls_tickets *k, uint64_t now, uint64_t lifetime)
{
    if (k->cur.set && now - k->cur.born < lifetime)
        return 0;
    struct tkey n = {.born = now, .set = true};
    if (RAND_bytes(n.name, sizeof(n.name)) != 1 ||
        RAND_priv_bytes(n.aes, sizeof(n.aes)) != 1 ||
        RAND_priv_bytes(n.mac, sizeof(n.mac)) != 1) {
        OPENSSL_cleanse(&n, sizeof(n));
        return -1;
    }
    OPENSSL_cleanse(&k->prev, sizeof(k->prev));
    k->prev = k->cur;
    k->cur = n;
    return 0;
}

static int
key_use(const struct tkey *key, unsigned char *iv, EVP_CIPHER_CTX *cctx,
        EVP_MAC_CTX *hctx, int enc)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY,
                                          (void *)key->mac,
                                          sizeof(key->mac)),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_CTX_set_params(hctx, params) != 1)
        return -1;
    return EVP_CipherInit_ex(cctx, EVP_aes_256_cbc(), NULL, key->aes, iv,
                             enc) == 1
               ? 0
               : -1;
}

/*
 * on_ticket_key - OpenSSL's ticket key callback. Sealing (enc = 1): name
 * the current key and a random IV; 1. Opening: the key the ticket names,
 * if the ring still has it and it is under two lifetimes old: 1 with the
 * current key, 2 (renew) with the previous one; 0 for an unknown or
 * retired key (a full handshake); -1 on an error.
 */
static int
on_ticket_key(SSL *ssl, unsigned char *name, unsigned char *iv,
              EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    const struct pst_tls_ctx *x = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    struct pst_tls_tickets *k = x->keys;
    uint64_t now = k->now(k->now_arg);

    if (key_turn(k, now, x->lifetime) < 0)
        return -1;
    if (enc) {
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1)
            return -1;
        memcpy(name, k->cur.name, sizeof(k->cur.name));
        return key_use(&k->cur, iv, cctx, hctx, 1) < 0 ? -1 : 1;
    }
    const struct tkey *keys[] = {&k->cur, &k->prev};
    for (size_t i = 0; i < PST_ARRAY_LEN(keys); i++) {
        const struct tkey *key = keys[i];
        if (!key->set || memcmp(name, key->name, sizeof(key->name)) != 0)
            continue;
        if (now - key->born >= 2 * x->lifetime)
            return 0;
        if (key_use(key, iv, cctx, hctx, 0) < 0)
            return -1;
        return key == &k->cur ? 1 : 2;
    }
    return 0;
}

static int
on_servername(SSL *ssl, int *alert, void *arg)
{
    struct pst_tls_ctx *x = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL || x->npairs < 2)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < x->npairs; i++) {
        if (X509_check_host(x->pairs[i].leaf, name, 0, 0, NULL) == 1) {
            if (i > 0)
                SSL_set_SSL_CTX(ssl, x->pairs[i].ctx);
            break;
        }
    }
    /* no match: the default certificate; the client decides */
    return SSL_TLSEXT_ERR_OK;
}

static int
ctx_setup(struct pst_tls_ctx *x, struct pair *p, const struct pst_tls_conf *c,
          const struct pst_tls_cert *cert, struct pst_err *err)
{
    char e[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        pst_err_add(err, NULL, 0, "TLS: %s", pst_tls_error(e, sizeof(e)));
        return -1;
    }
    p->ctx = ctx;
    int minv = c->min_version && strcmp(c->min_version, "TLSv1.3") == 0
                   ? TLS1_3_VERSION
                   : TLS1_2_VERSION;
    SSL_CTX_set_min_proto_version(ctx, minv);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_clear_options(ctx, SSL_OP_ALLOW_CLIENT_RENEGOTIATION);
    /* an idle session keeps no 34 KiB read/write buffers */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (c->ciphers && SSL_CTX_set_cipher_list(ctx, c->ciphers) != 1) {
        pst_err_add(err, NULL, 0, "tls.ciphers \"%s\": %s", c->ciphers,
                    pst_tls_error(e, sizeof(e)));
        return -1;
    }
    if (c->ciphersuites &&
        SSL_CTX_set_ciphersuites(ctx, c->ciphersuites) != 1) {
        pst_err_add(err, NULL, 0, "tls.ciphersuites \"%s\": %s",
                    c->ciphersuites, pst_tls_error(e, sizeof(e)));
        return -1;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert->cert_file) != 1) {
        pst_err_add(err, cert->cert_file, 0, "TLS certificate: %s",
                    pst_tls_error(e, sizeof(e)));
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cert->key_file, SSL_FILETYPE_PEM) !=
        1) {
        pst_err_add(err, cert->key_file, 0, "TLS key: %s",
                    pst_tls_error(e, sizeof(e)));
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        pst_err_add(err, cert->key_file, 0,
                    "TLS key does not match certificate %s",
                    cert->cert_file);
        ERR_clear_error();
        return -1;
    }
    p->leaf = SSL_CTX_get0_certificate(ctx);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, x);
    SSL_CTX_set_app_data(ctx, x);
    /* resumption by tickets alone: no session cache to grow or to lose
     * at a reload (the ring outlives the generation) */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)SID_CTX,
                                   sizeof(SID_CTX) - 1);
    SSL_CTX_set_timeout(ctx, (long)c->session_timeout);
    if (c->session_tickets) {
        /* one ticket per handshake: a client resumes with its latest */
        SSL_CTX_set_num_tickets(ctx, 1);
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
    } else {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    return 0;
}

int
pst_tls_ctx_new(struct pst_tls_ctx **out, const struct pst_tls_conf *c,
                struct pst_tls_tickets *k, struct pst_err *err)
{
    struct pst_tls_ctx *x = pst_xcalloc(1, sizeof(*x));
    x->pairs = pst_xcalloc(c->ncerts, sizeof(*x->pairs));
    x->npairs = c->ncerts;
    x->keys = k;
    x->lifetime = c->session_timeout;
    for (size_t i = 0; i < c->ncerts; i++) {
        if (ctx_setup(x, &x->pairs[i], c, &c->certs[i], err) < 0) {
            pst_tls_ctx_free(x);
            *out = NULL;
            return -EINVAL;
        }
    }
    *out = x;
    return 0;
}

void
pst_tls_ctx_free(struct pst_tls_ctx *x)
{
    if (x == NULL)
        return;
    for (size_t i = 0; i < x->npairs; i++)
        SSL_CTX_free(x->pairs[i].ctx);
    free(x->pairs);
    free(x);
}

struct pst_tls *
pst_tls_new(struct pst_tls_ctx *x)
{
    struct pst_tls *t = pst_xcalloc(1, sizeof(*t));
    t->ssl = SSL_new(x->pairs[0].ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
        pst_log_flush();
        fprintf(stderr, "postern: panic: out of memory creating TLS state\n");
        abort();
    }
    BIO_set_mem_eof_return(t->rbio, -1);   /* empty means "wait" */
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    return t;
}

void
pst_tls_free(struct pst_tls *t)
{
    if (t == NULL)
        return;
    SSL_free(t->ssl);               /* frees the BIOs */
    free(t);
}

void
pst_tls_feed(struct pst_tls *t, const void *p, size_t n)
{
    if (n > 0 && BIO_write(t->rbio, p, (int)n) != (int)n) {
        pst_log_flush();
        fprintf(stderr, "postern: panic: TLS input BIO write failed\n");
        abort();
    }
}

size_t
pst_tls_in_pending(const struct pst_tls *t)
{
    return BIO_ctrl_pending(t->rbio);
}

int
pst_tls_handshake(struct pst_tls *t)
{
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1)
        return 1;
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    return -1;
}

ssize_t
pst_tls_read(struct pst_tls *t, char *buf, size_t n)
{
    if (n == 0)
        return 0;
    ERR_clear_error();
    int r = SSL_read(t->ssl, buf, (int)PST_MIN(n, (size_t)1 << 30));
    if (r > 0)
        return r;
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    if (e == SSL_ERROR_ZERO_RETURN)
        return PST_TLS_EOF;
    return -1;
}

void
pst_tls_close(struct pst_tls *t)
{
    ERR_clear_error();
    SSL_shutdown(t->ssl);           /* writes close_notify into wbio */
    ERR_clear_error();
}

int
pst_tls_write(struct pst_tls *t, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ERR_clear_error();
        int r = SSL_write(t->ssl, c, (int)PST_MIN(n, (size_t)1 << 30));
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

size_t
pst_tls_out_pending(const struct pst_tls *t)
{
    return BIO_ctrl_pending(t->wbio);
}

size_t
pst_tls_take(struct pst_tls *t, void *buf, size_t n)
{
    int r = BIO_read(t->wbio, buf, (int)PST_MIN(n, (size_t)1 << 30));
    return r > 0 ? (size_t)r : 0;
}

const char *
pst_tls_version(const struct pst_tls *t)
{
    return SSL_get_version(t->ssl);
}

const char *
pst_tls_cipher(const struct pst_tls *t)
{
    const char *c = SSL_get_cipher_name(t->ssl);
    return c ? c : "unknown";
}

int
pst_tls_bits(const struct pst_tls *t)
{
    return SSL_get_cipher_bits(t->ssl, NULL);
}

const char *
pst_tls_sni(const struct pst_tls *t)
{
    return SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
}

bool
pst_tls_resumed(const struct pst_tls *t)
{
    return SSL_session_reused(t->ssl) == 1;
}
