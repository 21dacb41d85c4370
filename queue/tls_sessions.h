/*
 * tls_sessions.h - the delivery client's TLS sessions, kept so that the
 * next connection to the same server resumes (RFC 5077 tickets in TLS
 * 1.2, RFC 8446 4.6.1 in TLS 1.3) instead of running a full handshake.
 *
 * A bounded map from a key (queue/smtp_client.c makes it from the server's
 * name, address and port and the name sent as SNI and checked, so a
 * session is only offered where it was made and under the same
 * certificate name) to the latest session the server gave for it. Every
 * connection to that server offers it; a newer one replaces it.
 *
 * Bounds: at most max entries, the least recently used going first; an
 * entry lives until its session's own lifetime (the server's ticket
 * lifetime hint) or timeout seconds after it was stored, whichever ends
 * first. Each entry holds one SSL_SESSION (its ticket and the server's
 * certificate chain: a few KiB).
 *
 * Threads: the loop thread only (one cache per delivery manager).
 */
#ifndef PST_QUEUE_TLS_SESSIONS_H
#define PST_QUEUE_TLS_SESSIONS_H

#include <openssl/ssl.h>
#include <stddef.h>

struct pst_tls_sessions;

/* pst_tls_sessions_new - an empty cache of at most max (> 0) entries. */
struct pst_tls_sessions *pst_tls_sessions_new(size_t max, unsigned timeout);
void pst_tls_sessions_free(struct pst_tls_sessions *ts);
/* pst_tls_sessions_get - the session to offer for key (a reference the
 * caller frees), or NULL; an expired entry is dropped. */
SSL_SESSION *pst_tls_sessions_get(struct pst_tls_sessions *ts,
                                  const char *key);
/* pst_tls_sessions_put - remember s for key (the cache takes a reference
 * of its own); a session that cannot be resumed is ignored. */
void pst_tls_sessions_put(struct pst_tls_sessions *ts, const char *key,
                          SSL_SESSION *s);
/* pst_tls_sessions_drop - forget key's session (it failed to resume). */
void pst_tls_sessions_drop(struct pst_tls_sessions *ts, const char *key);
size_t pst_tls_sessions_count(const struct pst_tls_sessions *ts);

#endif
