/*
 * tls.h - TLS for SMTP sessions (STARTTLS, RFC 3207; implicit TLS, RFC
 * 8314) over OpenSSL memory BIOs.
 *
 * The session keeps doing its own socket I/O: ciphertext read from the
 * stream is fed in (pst_tls_feed), plaintext comes out (pst_tls_read) into
 * the session's usual input buffer, plaintext replies go in
 * (pst_tls_write) and the ciphertext to send is taken out
 * (pst_tls_take). So the SMTP code sees plaintext in one buffer and
 * writes plaintext through one function, TLS or not.
 *
 * Policy (docs/CONFIG.md "tls"): TLS 1.2 minimum (tls.min_version may
 * raise it to 1.3), the TLS 1.2 cipher list (tls.ciphers) and the TLS 1.3
 * suites (tls.ciphersuites) set separately, renegotiation off, no
 * compression; one certificate pair per tls.certificates entry, the first
 * being the default and the others chosen by the SNI name the client
 * sends (matched against each certificate's names, wildcards included).
 *
 * Threads: everything here runs on the loop thread. Memory: a session's
 * BIOs hold at most what the session feeds (it stops reading above
 * PST_TLS_IN_MAX pending) and what it has not yet taken.
 */
#ifndef PST_GATEWAY_TLS_H
#define PST_GATEWAY_TLS_H

#include <stddef.h>
#include <sys/types.h>

#include "conf/conf.h"

#define PST_TLS_IN_MAX (64 * 1024)  /* ciphertext buffered before a pause */

struct pst_tls_ctx;
struct pst_tls;

/* pst_tls_ctx_new - load every certificate pair of c; errors into err. */
int pst_tls_ctx_new(struct pst_tls_ctx **out, const struct pst_tls_conf *c,
                    struct pst_err *err);
void pst_tls_ctx_free(struct pst_tls_ctx *x);

/* pst_tls_new - a server-side TLS state for one session. */
struct pst_tls *pst_tls_new(struct pst_tls_ctx *x);
void pst_tls_free(struct pst_tls *t);

/* pst_tls_feed - ciphertext from the client. */
void pst_tls_feed(struct pst_tls *t, const void *p, size_t n);
/* pst_tls_in_pending - ciphertext fed and not yet consumed. */
size_t pst_tls_in_pending(const struct pst_tls *t);
/* pst_tls_handshake - 1 done, 0 needs more input, -1 failed. */
int pst_tls_handshake(struct pst_tls *t);
/*
 * pst_tls_read - plaintext into buf: > 0 octets, 0 nothing available
 * yet, PST_TLS_EOF the client closed TLS (close_notify), -1 a TLS error.
 */
#define PST_TLS_EOF (-2)
ssize_t pst_tls_read(struct pst_tls *t, char *buf, size_t n);
/* pst_tls_close - queue our close_notify (take it with pst_tls_take). */
void pst_tls_close(struct pst_tls *t);
/* pst_tls_write - encrypt all of p; 0 or -1 (TLS error). */
int pst_tls_write(struct pst_tls *t, const void *p, size_t n);
/* pst_tls_out_pending - ciphertext waiting to be sent. */
size_t pst_tls_out_pending(const struct pst_tls *t);
/* pst_tls_take - move up to n octets of ciphertext to buf. */
size_t pst_tls_take(struct pst_tls *t, void *buf, size_t n);

/* After the handshake: "TLSv1.3", the cipher name, its bits, the SNI
 * name (or NULL). */
const char *pst_tls_version(const struct pst_tls *t);
const char *pst_tls_cipher(const struct pst_tls *t);
int pst_tls_bits(const struct pst_tls *t);
const char *pst_tls_sni(const struct pst_tls *t);
/* pst_tls_error - the last OpenSSL error as text (for logs), into buf. */
const char *pst_tls_error(char *buf, size_t n);

#endif
