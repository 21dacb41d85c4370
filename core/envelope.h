/*
 * envelope.h - the SMTP envelope of one message, as the gateway received it
 * and as the spool stores it. Shared by gateway/ (fills it), queue/ (stores,
 * schedules, delivers) and filters/ (reads it).
 *
 * Addresses are stored without angle brackets, source routes dropped; the
 * null reverse-path is "". Strings are owned by the envelope
 * (pst_envelope_free releases them).
 */
#ifndef PST_CORE_ENVELOPE_H
#define PST_CORE_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/net.h"

enum pst_body_type { PST_BODY_7BIT, PST_BODY_8BITMIME, PST_BODY_BINARYMIME };
enum pst_dsn_ret { PST_RET_UNSET, PST_RET_FULL, PST_RET_HDRS };

/* RFC 3461 NOTIFY bits; 0 means the parameter was absent. */
#define PST_NOTIFY_NEVER 0x1
#define PST_NOTIFY_SUCCESS 0x2
#define PST_NOTIFY_FAILURE 0x4
#define PST_NOTIFY_DELAY 0x8

enum pst_rcpt_state {
    PST_RCPT_PENDING,               /* still to be delivered */
    PST_RCPT_DELIVERED,
    PST_RCPT_FAILED,                /* permanent failure, bounce owed/sent */
};

struct pst_rcpt {
    char *addr;
    char *orcpt;                    /* RFC 3461 ORCPT as given, or NULL */
    unsigned notify;                /* PST_NOTIFY_* */
    enum pst_rcpt_state state;
};

struct pst_envelope {
    char *sender;                   /* "" for <> */
    struct pst_rcpt *rcpts;
    size_t nrcpts;
    size_t rcpt_cap;
    uint64_t size_param;            /* SIZE= given at MAIL, 0 if absent */
    enum pst_body_type body;
    bool smtputf8;
    enum pst_dsn_ret ret;
    char *envid;                    /* RFC 3461 ENVID, or NULL */
    /* client facts, for Received, logs, filters and bounces */
    struct pst_ip client_ip;
    char *helo;                     /* as given (sanitised) */
    char *client_name;              /* reverse DNS or "unknown" */
    char *auth_login;               /* NULL unless authenticated */
    bool trusted;                   /* in relay.trusted_networks */
    char *proto;                    /* ESMTP, ESMTPS, ESMTPSA, UTF8SMTPS... */
    time_t arrival;                 /* wall clock, stored */
};

void pst_envelope_init(struct pst_envelope *e);
void pst_envelope_free(struct pst_envelope *e);
struct pst_rcpt *pst_envelope_add_rcpt(struct pst_envelope *e,
                                       const char *addr);

#endif
