/*
 * received.h - the Received: trace field postern prepends (RFC 5321 4.4,
 * RFC 5322 3.6.7), with protocol names from RFC 3848 and RFC 6531.
 */
#ifndef PST_GATEWAY_RECEIVED_H
#define PST_GATEWAY_RECEIVED_H

#include <stddef.h>
#include <time.h>

#include "core/envelope.h"

#define PST_RECEIVED_MAX 2048

/*
 * pst_received_format - write the folded field, CRLF-terminated, into buf
 * (PST_RECEIVED_MAX is always enough). "for <rcpt>" is given only when the
 * envelope has exactly one recipient. tls (or NULL) is the TLS comment,
 * "using TLSv1.3 with cipher ... (256/256 bits)", shown in parentheses
 * after the from clause. Returns the length.
 */
size_t pst_received_format(char *buf, size_t n, const struct pst_envelope *e,
                           const char *hostname, const char *qid,
                           const char *tls);
/* pst_rfc5322_date - "Sun, 22 Nov 2026 00:52:34 +0000" for t, local time */
size_t pst_rfc5322_date(char *buf, size_t n, time_t t);

#endif
