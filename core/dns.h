/*
 * dns.h - asynchronous DNS on the libuv loop (c-ares): MX, A/AAAA and PTR.
 *
 * One resolver per loop. Nothing blocks: c-ares' sockets are watched with
 * uv_poll and its retransmissions driven by a uv_timer. Every result is
 * delivered on the loop thread, never from inside the call that started
 * the query (callers may start a query while holding their own state).
 *
 * A query returns a handle; pst_dns_cancel(q) guarantees its callback will
 * not run (the handle is invalid afterwards). A handle is also invalid once
 * its callback has returned. pst_dns_free cancels everything outstanding
 * without calling back.
 *
 * Limits: at most PST_DNS_MAX_MX exchangers and PST_DNS_MAX_ADDRS addresses
 * per answer are reported (the rest are dropped); names are at most 255
 * octets.
 */
#ifndef PST_CORE_DNS_H
#define PST_CORE_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "core/net.h"
#include "core/util.h"

#define PST_DNS_MAX_MX 32
#define PST_DNS_MAX_ADDRS 32

struct pst_dns;
struct pst_dns_query;

/* Outcome of a query, as delivery and policy code need to tell them apart. */
enum pst_dns_status {
    PST_DNS_OK = 0,
    PST_DNS_NXDOMAIN,       /* the name does not exist: permanent */
    PST_DNS_NODATA,         /* the name exists, no record of this type */
    PST_DNS_TEMPFAIL,       /* SERVFAIL, timeout, refused, no server */
    PST_DNS_BADNAME,        /* not a valid name: permanent */
};

struct pst_dns_opts {
    const char *const *nameservers; /* "IP", "IP:PORT", "[IPv6]:PORT";
                                       n == 0: /etc/resolv.conf */
    size_t nnameservers;
    unsigned timeout_ms;            /* per try; 0: 5000 */
    unsigned tries;                 /* 0: 2 */
    bool cache;                     /* keep PTR and address answers for
                                       their TTL (dns.c) */
};

struct pst_dns_mx {
    unsigned pref;
    char *host;                     /* lowercase, no trailing dot; "" for
                                       the root (a null MX, RFC 7505) */
};

/* MX answers are sorted by preference; equal preferences keep the server's
 * order (the delivery code shuffles them). */
typedef void (*pst_dns_mx_cb)(void *arg, enum pst_dns_status st,
                              const struct pst_dns_mx *mx, size_t n);
typedef void (*pst_dns_addr_cb)(void *arg, enum pst_dns_status st,
                                const struct pst_ip *ips, size_t n);
/* name: the first PTR name, lowercase, no trailing dot (NULL unless OK) */
typedef void (*pst_dns_ptr_cb)(void *arg, enum pst_dns_status st,
                               const char *name);

/* pst_dns_new - a resolver on loop. 0, or -errno with err filled. */
int pst_dns_new(struct pst_dns **dp, uv_loop_t *loop,
                const struct pst_dns_opts *o, struct pst_err *err);
/*
 * pst_dns_free - cancel every query (no callbacks) and close the handles;
 * memory is released as the loop runs the close callbacks.
 */
void pst_dns_free(struct pst_dns *d);

/* Start a query; NULL only if the resolver is shutting down. */
struct pst_dns_query *pst_dns_mx(struct pst_dns *d, const char *domain,
                                 pst_dns_mx_cb cb, void *arg);
/* family: AF_INET, AF_INET6 or AF_UNSPEC (both; IPv6 first if any). A
 * literal address is answered without a query. */
struct pst_dns_query *pst_dns_addr(struct pst_dns *d, const char *host,
                                   int family, pst_dns_addr_cb cb, void *arg);
struct pst_dns_query *pst_dns_ptr(struct pst_dns *d, const struct pst_ip *ip,
                                  pst_dns_ptr_cb cb, void *arg);
/* pst_dns_cancel - the callback of q will not run. q may be NULL. */
void pst_dns_cancel(struct pst_dns_query *q);

const char *pst_dns_strstatus(enum pst_dns_status st);

#endif
