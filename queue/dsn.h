/*
 * dsn.h - delivery status notifications (RFC 3464 reports, RFC 3461
 * semantics), internal to queue/.
 *
 * Who is owed a report after a delivery attempt is decided here, in one
 * place (pst__dsn_owed): the queue manager asks whether an attempt owes
 * any (pst__dsn_any_owed), reads the returned part of the original on a
 * worker before the queue file can go (pst__dsn_read_original), then has
 * every report owed built and committed to the spool like any message
 * (pst__dsn_report, loop thread): null sender, one recipient (the
 * original sender; the postmaster for a report that itself failed; nobody
 * for a failed report to the postmaster).
 *
 * Limits: the original is returned whole up to delivery.bounce_size_max
 * octets (RET=FULL, or RET absent), else its header only (at most
 * PST_DSN_HDR_MAX octets).
 */
#ifndef PST_QUEUE_DSN_H
#define PST_QUEUE_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/envelope.h"
#include "queue/record.h"
#include "queue/transport.h"

#define PST_DSN_HDR_MAX (256u * 1024u)
#define PST_DSN_BOUNDARY_LEN 41     /* 32 random hex, "=_postern" */

struct pst_spool;

enum pst_dsn_action { PST_DSN_FAILED, PST_DSN_DELAYED, PST_DSN_DELIVERED,
                      PST_DSN_RELAYED };

struct pst_dsn_rcpt {
    const struct pst_rcpt *rcpt;
    enum pst_dsn_action action;
    const char *text;               /* status text ("550 5.1.1 ...") */
};

/* The returned part of the original message. */
struct pst_dsn_orig {
    uint8_t *p;
    size_t len;
    bool full;                      /* whole message, else header only */
};

/* pst__dsn_wanted - whether r gets a report for action a (NOTIFY). */
bool pst__dsn_wanted(const struct pst_envelope *env, const struct pst_rcpt *r,
                     enum pst_dsn_action a, enum pst_dsn_hint hint);

/* One delivery attempt's results, as the reports rule sees them. */
struct pst_dsn_attempt {
    const struct pst_envelope *env;
    size_t n;                           /* recipients tried */
    const size_t *idx;                  /* n indexes into env->rcpts */
    const struct pst_rcpt_result *res;  /* n results */
    bool warn_delay;                    /* a delay report is due if the
                                           attempt defers */
};

/*
 * pst__dsn_owed - the report recipient i of attempt a is owed, the attempt
 * having ended with the message expired (lifetime over) or not: FAILED
 * for a permanent failure, or for a temporary one once expired;
 * DELIVERED or RELAYED for a success reported on request (NOTIFY=SUCCESS);
 * DELAYED for a deferral when a delay report is due. -1: none.
 */
int pst__dsn_owed(const struct pst_dsn_attempt *a, size_t i, bool expired);
/* pst__dsn_any_owed - whether attempt a owes any report, ending expired
 * or not (when may_expire) - asked before the outcome is known. */
bool pst__dsn_any_owed(const struct pst_dsn_attempt *a, bool may_expire);

/* pst__dsn_read_original - worker thread; 0 or -errno. */
int pst__dsn_read_original(const struct pst_spool_ref *ref, const char *qid,
                           const struct pst_envelope *env, uint64_t cap,
                           struct pst_dsn_orig *o);
void pst__dsn_orig_free(struct pst_dsn_orig *o);

/*
 * pst__dsn_report - build and commit to sp every report attempt a owes
 * about message qid, ended expired or not (loop thread): failures,
 * successes, delays, one report each. orig may be NULL. Returns whether
 * a delay report went out.
 */
bool pst__dsn_report(struct pst_spool *sp, const char *hostname,
                     const char *qid, const struct pst_dsn_attempt *a,
                     bool expired, const struct pst_dsn_orig *orig);

/*
 * pst__dsn_send - build the report for rs (all of one action class) about
 * message qid and commit it to sp (loop thread). orig may be NULL.
 */
void pst__dsn_send(struct pst_spool *sp, const char *hostname,
                   const char *qid, const struct pst_envelope *env,
                   const struct pst_dsn_rcpt *rs, size_t n,
                   const struct pst_dsn_orig *orig);

/* pst__dsn_boundary_ok - "--" bnd occurs nowhere in content, and no line
 * "--x" there has a boundary x that bnd starts with (a report's boundary
 * is drawn until this holds for every part it encloses). */
bool pst__dsn_boundary_ok(const char *bnd, const void *content, size_t len);

/* pst__dsn_build - the report's bytes (exposed for unit tests); its MIME
 * boundary is random and found in none of its parts. */
void pst__dsn_build(struct pst_tbuf *b, const char *hostname,
                    const char *qid, const struct pst_envelope *env,
                    const struct pst_dsn_rcpt *rs, size_t n,
                    const struct pst_dsn_orig *orig, time_t now);

#endif
