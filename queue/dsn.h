/*
 * dsn.h - delivery status notifications (RFC 3464 reports, RFC 3461
 * semantics), internal to queue/.
 *
 * The queue manager decides who is owed a report (pst__dsn_wanted), reads
 * the returned part of the original on a worker before the queue file can
 * go (pst__dsn_read_original), then builds the report and commits it to
 * the spool like any message (pst__dsn_send, loop thread): null sender,
 * one recipient (the original sender; the postmaster for a report that
 * itself failed; nobody for a failed report to the postmaster).
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

/* pst__dsn_read_original - worker thread; 0 or -errno. */
int pst__dsn_read_original(int dirfd, const char *qid, uint64_t data_off,
                           uint64_t data_end, uint64_t size,
                           const struct pst_envelope *env, uint64_t cap,
                           struct pst_dsn_orig *o);
void pst__dsn_orig_free(struct pst_dsn_orig *o);

/*
 * pst__dsn_send - build the report for rs (all of one action class) about
 * message qid and commit it to sp (loop thread). orig may be NULL.
 */
void pst__dsn_send(struct pst_spool *sp, const char *qid,
                   const struct pst_envelope *env,
                   const struct pst_dsn_rcpt *rs, size_t n,
                   const struct pst_dsn_orig *orig);

/* pst__dsn_build - the report's bytes (exposed for unit tests). */
void pst__dsn_build(struct pst_tbuf *b, const char *hostname,
                    const char *qid, const struct pst_envelope *env,
                    const struct pst_dsn_rcpt *rs, size_t n,
                    const struct pst_dsn_orig *orig, time_t now);

#endif
