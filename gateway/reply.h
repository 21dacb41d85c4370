/*
 * reply.h - every SMTP reply the front sends, from one table.
 *
 * Each entry is a code, an RFC 3463 enhanced status code (empty for the
 * greeting, HELO/EHLO, 354 and 334, which RFC 2034 exempts) and a text that
 * may hold one "%s" (always given sanitised: no CR, LF or NUL).
 * docs/SMTP.md lists the table for users.
 */
#ifndef PST_GATEWAY_REPLY_H
#define PST_GATEWAY_REPLY_H

#include "core/tbuf.h"

enum pst_reply {
    RP_GREETING,                     /* %s: hostname */
    RP_OK,
    RP_MAIL_OK,
    RP_RCPT_OK,
    RP_DATA_GO,
    RP_QUEUED,                       /* %s: queue id */
    RP_BDAT_CHUNK,                   /* %s: octets */
    RP_BYE,
    RP_VRFY,
    RP_HELP,
    RP_UNKNOWN_CMD,
    RP_LINE_TOO_LONG,
    RP_NEED_HELO,
    RP_NEED_MAIL,
    RP_NEED_RCPT,
    RP_NO_VALID_RCPT,
    RP_NESTED_MAIL,
    RP_SYNTAX_HELO,
    RP_SYNTAX_MAIL,
    RP_SYNTAX_RCPT,
    RP_SYNTAX_BDAT,
    RP_SYNTAX_VRFY,
    RP_SYNTAX_NOARG,                 /* %s: verb */
    RP_BAD_SENDER,
    RP_BAD_RCPT,
    RP_SENDER_TOO_LONG,              /* %s: which part */
    RP_RCPT_TOO_LONG,                /* %s: which part */
    RP_PARAM_UNKNOWN,                /* %s: keyword */
    RP_PARAM_BAD,
    RP_SIZE_EXCEEDED,
    RP_NEED_SMTPUTF8,
    RP_TOO_MANY_RCPTS,
    RP_LINE_TOO_LONG_DATA,
    RP_BARE_NEWLINE,
    RP_TOO_MANY_HOPS,
    RP_MIME_LIMIT,                   /* mime.policy = reject */
    RP_WRITE_ERROR,
    RP_NO_SPACE,
    RP_DATA_AFTER_BDAT,
    RP_BDAT_AFTER_DATA,
    RP_BDAT_NO_SIZE,                 /* %s: hostname */
    RP_TIMEOUT,                      /* %s: hostname */
    RP_TOO_MANY_ERRORS,              /* %s: hostname */
    RP_SHUTDOWN,                     /* %s: hostname */
    RP_NOT_IMPLEMENTED,
    RP_TOO_MANY_CONN,                /* %s: hostname */
    RP_RELAY_DENIED,                 /* %s: <recipient> */
    RP_UNKNOWN_USER,                 /* %s: <recipient> */
    RP_TLS_GO,
    RP_TLS_ACTIVE,
    RP_AUTH_CHALLENGE,               /* %s: base64 challenge */
    RP_AUTH_OK,
    RP_AUTH_FAILED,
    RP_AUTH_ENCRYPT,
    RP_AUTH_REQUIRED,
    RP_AUTH_TEMP,
    RP_AUTH_LIMIT,
    RP_AUTH_CANCELLED,
    RP_AUTH_BAD_B64,
    RP_AUTH_LINE_TOO_LONG,
    RP_AUTH_NOT_ENABLED,
    RP_AUTH_ALREADY,
    RP_AUTH_IN_MAIL,
    RP_AUTH_MECH,
    RP_SENDER_NOT_OWNED,             /* %s: login */
    RP_COUNT
};

/* pst_reply_add - append reply r, with arg for its %s (or NULL). */
void pst_reply_add(struct pst_tbuf *out, enum pst_reply r, const char *arg);
/* pst_reply_code - the numeric code of r. */
int pst_reply_code(enum pst_reply r);

#endif
