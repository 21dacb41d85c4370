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
 * Resumption (RFC 5077 tickets in TLS 1.2, RFC 8446 4.6.1 in TLS 1.3):
 * stateless tickets only, no server-side session cache, so memory does
 * not grow with the clients. The ticket keys are the process's (struct
 * pst_tls_tickets: random, never written anywhere) and shared by every
 * generation's contexts, so a ticket issued before a SIGHUP reload
 * resumes after it. A key encrypts tickets for tls.session_timeout
 * seconds, then the next one takes over and it only decrypts, for as long
 * again: a ticket is good for its whole lifetime, and no key opens one
 * after twice that.
 *
 * Threads: everything here runs on the loop thread. Memory: a session's
 * BIOs hold at most what the session feeds (it stops reading above
 * PST_TLS_IN_MAX pending) and what it has not yet taken.
 */
#ifndef PST_GATEWAY_TLS_H
#define PST_GATEWAY_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "conf/conf.h"

#define PST_TLS_IN_MAX (64 * 1024)  /* ciphertext buffered before a pause */

struct pst_tls_ctx;
struct pst_tls;
struct pst_tls_tickets;

/* pst_tls_tickets_new - the process's ticket keys (the first is made on
 * first use); they must outlive every context made with them. */
struct pst_tls_tickets *pst_tls_tickets_new(void);
void pst_tls_tickets_free(struct pst_tls_tickets *k);
/* pst__tls_tickets_clock - tests: the clock (seconds) keys age by;
 * default CLOCK_MONOTONIC. */
void pst__tls_tickets_clock(struct pst_tls_tickets *k,
                            uint64_t (*now)(void *), void *arg);

/* pst_tls_ctx_new - load every certificate pair of c; tickets sealed with
 * k (which c->session_tickets may leave unused); errors into err. */
int pst_tls_ctx_new(struct pst_tls_ctx **out, const struct pst_tls_conf *c,
                    struct pst_tls_tickets *k, struct pst_err *err);
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
/* pst_tls_resumed - the handshake resumed an earlier session (a ticket). */
bool pst_tls_resumed(const struct pst_tls *t);
/* pst_tls_error - the last OpenSSL error as text (for logs), into buf. */
const char *pst_tls_error(char *buf, size_t n);

#endif
