/*
 * received.c - build postern's Received: field.
 *
 *   Received: from HELO (NAME [IP])
 *           (using TLSv1.3 with cipher NAME (256/256 bits))   under TLS
 *           by HOST (postern) with PROTO id QID
 *           for <RCPT>; DATE
 *
 * HELO is the sanitised client name (smtp.c replaces anything but visible
 * ASCII), NAME the reverse DNS name or "unknown", IPv6 shown as
 * [IPv6:...] (RFC 5321 4.1.3).
 */
#include "gateway/received.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "core/net.h"

size_t
pst_rfc5322_date(char *buf, size_t n, time_t t)
{
    struct tm tm;
    localtime_r(&t, &tm);
    /* %a and %b are locale-dependent; postern never calls setlocale, so
     * they are the C locale's English names RFC 5322 requires. */
    return strftime(buf, n, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

size_t
pst_received_format(char *buf, size_t n, const struct pst_envelope *e,
                    const char *hostname, const char *qid, const char *tls)
{
    char ip[PST_IP_STRLEN], date[64], forpart[PST_RECEIVED_MAX / 2];
    char tlspart[256];
    int w;

    pst_ip_str(&e->client_ip, ip, sizeof(ip));
    pst_rfc5322_date(date, sizeof(date), e->arrival);
    forpart[0] = '\0';
    if (e->nrcpts == 1)
        snprintf(forpart, sizeof(forpart), "\r\n\tfor <%s>", e->rcpts[0].addr);
    tlspart[0] = '\0';
    if (tls)
        snprintf(tlspart, sizeof(tlspart), "\t(%s)\r\n", tls);
    w = snprintf(buf, n,
                 "Received: from %s (%s [%s%s])\r\n"
                 "%s"
                 "\tby %s (postern) with %s id %s%s;\r\n"
                 "\t%s\r\n",
                 e->helo ? e->helo : "unknown",
                 e->client_name ? e->client_name : "unknown",
                 e->client_ip.family == AF_INET6 ? "IPv6:" : "", ip, tlspart,
                 hostname, e->proto ? e->proto : "SMTP", qid, forpart, date);
    if (w < 0)
        return 0;
    return (size_t)w < n ? (size_t)w : n - 1;
}
