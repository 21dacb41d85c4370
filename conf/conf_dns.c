/*
 * conf_dns.c - a resolver built from the `resolver` section.
 */
#include <stdlib.h>

#include "conf/conf.h"
#include "core/dns.h"
#include "core/util.h"

int
pst_conf_dns_new(struct pst_dns **dp, uv_loop_t *loop,
                 const struct pst_conf *c, struct pst_err *err)
{
    const struct pst_resolver_conf *r = &c->resolver;
    const char **ns = pst_xcalloc(r->nnameservers + 1, sizeof(*ns));
    for (size_t i = 0; i < r->nnameservers; i++)
        ns[i] = r->nameservers[i].address;
    struct pst_dns_opts o = {.nameservers = ns,
                             .nnameservers = r->nnameservers,
                             .timeout_ms = r->timeout,
                             .tries = r->tries,
                             .cache = true};
    int rc = pst_dns_new(dp, loop, &o, err);
    free(ns);
    return rc;
}
