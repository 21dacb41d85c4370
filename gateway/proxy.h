/*
 * proxy.h - the PROXY protocol header (HAProxy's proxy-protocol.txt,
 * versions 1 and 2) that a load balancer sends before anything else on a
 * connection, naming the client it forwards.
 *
 * The parser is strict, bounded and resumable: bytes are fed as they
 * arrive, in any fragments; it consumes exactly the header (whatever
 * follows is the client's and is left alone) and decides as early as a
 * byte contradicts the format. It holds at most PST_PROXY_HOLD octets
 * (a version 1 line, or version 2's fixed part and address block); version
 * 2's TLVs are checked for bounds as they pass and never stored.
 *
 * Outcomes: a client address (PROXY over TCP/IPv4 or TCP/IPv6), or local
 * (version 2 LOCAL, version 1 UNKNOWN: the proxy's own connection, such as
 * a health check), or an error. A version 2 PROXY whose family is UNSPEC,
 * UNIX or a datagram is an error: the client is not an IP address postern
 * could apply its policy to, and taking the proxy's address for it would
 * give every such client the proxy's standing.
 */
#ifndef PST_GATEWAY_PROXY_H
#define PST_GATEWAY_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/net.h"

#define PST_PROXY_V1_MAX 107        /* a version 1 line with its CRLF */
#define PST_PROXY_V2_FIXED 16       /* signature, version/command, family,
                                       length */
#define PST_PROXY_V2_ADDR_MAX 216   /* the UNIX block, the largest */
#define PST_PROXY_HOLD (PST_PROXY_V2_FIXED + PST_PROXY_V2_ADDR_MAX)

enum pst_proxy_status {
    PST_PROXY_MORE,                 /* a valid prefix: feed more */
    PST_PROXY_DONE,                 /* the header is complete */
    PST_PROXY_ERROR,                /* not a valid header: p->why says */
};

struct pst_proxy {
    /* the result, once DONE */
    int version;                    /* 1 or 2 */
    bool local;                     /* the proxy's own connection */
    struct pst_ip src, dst;         /* unless local: the client, and the
                                       address it connected to */
    unsigned sport, dport;
    const char *why;                /* after ERROR: a fixed phrase */

    /* parsing state */
    int stage;
    size_t have;                    /* octets held in buf */
    size_t need;                    /* octets the stage needs in buf */
    uint32_t left;                  /* version 2: octets of the block left */
    uint8_t tlv[3];                 /* a TLV's type and length, as read */
    size_t tlv_have;
    uint32_t tlv_skip;              /* a TLV's value octets still to pass */
    uint8_t buf[PST_PROXY_HOLD];
};

/* pst_proxy_init - a parser waiting for the first octet. */
void pst_proxy_init(struct pst_proxy *p);

/*
 * pst_proxy_feed - take octets of data[0..n) as far as the header goes;
 * *used says how many were taken (after DONE, the rest is the client's).
 * Once DONE or ERROR, further calls take nothing and return the same.
 */
enum pst_proxy_status pst_proxy_feed(struct pst_proxy *p, const void *data,
                                     size_t n, size_t *used);

#endif
