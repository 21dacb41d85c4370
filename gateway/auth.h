/*
 * auth.h - SMTP AUTH (RFC 4954) credentials: the password file, the
 * sender-login map, failure limits, and the crypt worker pool.
 *
 * Password file (auth.password_file): "login:hash" lines, '#' comments;
 * hashes are crypt(3) yescrypt ("$y$") or SHA-512 ("$6$"). A file that
 * others may read or write is refused at start.
 *
 * Checks run crypt_rn in a small pool of threads of this module's own
 * (auth.workers, a core/pool.h pool; never libuv's shared pool, where a
 * burst of AUTHs would delay file work): a yescrypt check costs ~14 ms of
 * CPU. The job carries copies of its inputs and the session id; the
 * result comes back on the loop thread through the pool's uv_async and is
 * handed to the done callback, which looks the session up by id (a result
 * for a session that has gone is dropped). An unknown login is checked against a dummy hash of the same
 * cost, so the reply time does not tell which logins exist.
 *
 * Failure limits: failures are counted per client (IPv4 address, IPv6
 * prefix of limits.ipv6_prefix bits) and per login within
 * auth.failure_window seconds; a check is refused before any hashing once
 * either count has reached its limit. A full table of counters
 * (auth.failure_entries) forgets its oldest counter; it never stops
 * counting.
 *
 * Threads: everything but the workers' crypt_rn runs on the loop thread.
 */
#ifndef PST_GATEWAY_AUTH_H
#define PST_GATEWAY_AUTH_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "conf/conf.h"
#include "core/net.h"

#define PST_AUTH_FIELD_MAX 255      /* login and password octets */

struct pst_auth;

/* Called on the loop thread with the outcome of pst_auth_check. */
typedef void (*pst_auth_done_fn)(void *arg, uint64_t session_id,
                                 const char *login, bool ok);

int pst_auth_new(struct pst_auth **out, uv_loop_t *loop,
                 const struct pst_conf *c, pst_auth_done_fn done, void *arg,
                 struct pst_err *err);
/*
 * pst_auth_close - stop the workers (a check in progress finishes, queued
 * ones are dropped, no callback runs any more) and free everything; the
 * workers' uv_async handle closes on the loop's next run.
 */
void pst_auth_close(struct pst_auth *a);

/*
 * pst_auth_reload - re-read the password file and the sender-login map of
 * c and take its failure limits (a SIGHUP reload). All or nothing: on an
 * error (err filled) the tables in use stay. The failure counters and
 * the workers stay (auth.workers changes at a restart). Loop thread.
 */
int pst_auth_reload(struct pst_auth *a, const struct pst_conf *c,
                    struct pst_err *err);

/*
 * pst_auth_check - queue a check of login/password for session sid from
 * ip. Returns 0 (the done callback will run), -EPERM (a failure limit is
 * reached: no hashing was done) or -EAGAIN (the queue is full).
 */
int pst_auth_check(struct pst_auth *a, uint64_t sid, const struct pst_ip *ip,
                   const char *login, const char *password);

/*
 * pst_auth_sender_ok - login may use envelope sender (auth.sender_login_map;
 * always true without a map, and for the null sender).
 */
bool pst_auth_sender_ok(const struct pst_auth *a, const char *login,
                        const char *sender);

/* Counters for tests and logs. */
struct pst_auth_stats {
    uint64_t checks;                /* hashes computed */
    uint64_t refused;               /* refused by a failure limit */
    unsigned queued;                /* in the workers' pool now */
    uint64_t forgotten;             /* failure counters dropped from a full
                                       table to make room */
};
void pst_auth_stats(struct pst_auth *a, struct pst_auth_stats *st);

/*
 * pst_sasl_plain - split a decoded PLAIN response "authzid NUL authcid NUL
 * passwd" (RFC 4616). Returns 0, or -1 if malformed, a field is too long,
 * or authzid names someone other than authcid.
 */
int pst_sasl_plain(const char *p, size_t n, char *login, char *password);

#endif
