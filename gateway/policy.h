/*
 * policy.h - relay control and the per-client session limits.
 *
 * Relay (docs/CONFIG.md "relay"): a recipient is accepted when
 *   - it is in a relay domain (compared as lowercase A-labels without a
 *     trailing dot: core/domain.h) and its local part holds no routing
 *     characters ('@', '%', '!') unless the client may relay anyway, and
 *     the domain's recipient list (when it has one) names it; or
 *   - the client may relay (a trusted network, or authenticated) and the
 *     domain is not a relay domain.
 * Address literals are never a relay domain. A recipient in a relay domain
 * with a recipient list that does not name it is refused as unknown, for
 * every client: refusing at RCPT means never bouncing later to a forged
 * sender.
 *
 * The policy object is built from one configuration generation at start
 * (recipient files are read then) and is read-only afterwards.
 *
 * Session counting per client (pst_ipcount) is the server's mutable state:
 * IPv4 clients are counted per address, IPv6 per limits.ipv6_prefix.
 */
#ifndef PST_GATEWAY_POLICY_H
#define PST_GATEWAY_POLICY_H

#include <stdbool.h>

#include "conf/conf.h"
#include "core/net.h"

struct pst_policy;

enum pst_rcpt_verdict {
    PST_RCPT_ACCEPT,
    PST_RCPT_RELAY_DENIED,          /* 554 5.7.1 */
    PST_RCPT_UNKNOWN_USER,          /* 550 5.1.1 */
};

/* pst_policy_new - build the policy of c; reads the recipient files. */
int pst_policy_new(struct pst_policy **pp, const struct pst_conf *c,
                   struct pst_err *err);
void pst_policy_free(struct pst_policy *p);

/* pst_policy_trusted - ip is in relay.trusted_networks. */
bool pst_policy_trusted(const struct pst_policy *p, const struct pst_ip *ip);
/* pst_policy_relay_domain - domain (any form) is a relay domain. */
bool pst_policy_relay_domain(const struct pst_policy *p, const char *domain);
/*
 * pst_policy_rcpt - the verdict for recipient addr ("local@domain" as the
 * path parser stores it; a quoted local part keeps its quotes).
 * domain_literal: the domain is [address]. may_relay: the client is
 * trusted or authenticated.
 */
enum pst_rcpt_verdict pst_policy_rcpt(const struct pst_policy *p,
                                      const char *addr, bool domain_literal,
                                      bool may_relay);

/* ---- concurrent sessions per client ---- */

struct pst_ipcount;

struct pst_ipcount *pst_ipcount_new(unsigned ipv6_prefix);
void pst_ipcount_free(struct pst_ipcount *c);
/* pst_ipcount_add - count one more session of ip; returns the new count. */
unsigned pst_ipcount_add(struct pst_ipcount *c, const struct pst_ip *ip);
/* pst_ipcount_remove - one session of ip has gone. */
void pst_ipcount_remove(struct pst_ipcount *c, const struct pst_ip *ip);

#endif
