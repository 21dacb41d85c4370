/*
 * envelope.c - construction and teardown of struct pst_envelope.
 */
#include "core/envelope.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"

void
pst_envelope_init(struct pst_envelope *e)
{
    memset(e, 0, sizeof(*e));
}

void
pst_envelope_free(struct pst_envelope *e)
{
    free(e->sender);
    for (size_t i = 0; i < e->nrcpts; i++) {
        free(e->rcpts[i].addr);
        free(e->rcpts[i].orcpt);
    }
    free(e->rcpts);
    free(e->envid);
    free(e->helo);
    free(e->client_name);
    free(e->auth_login);
    free(e->proto);
    memset(e, 0, sizeof(*e));
}

struct pst_rcpt *
pst_envelope_add_rcpt(struct pst_envelope *e, const char *addr)
{
    if (e->nrcpts == e->rcpt_cap) {
        e->rcpt_cap = e->rcpt_cap ? e->rcpt_cap * 2 : 4;
        e->rcpts = pst_xrealloc(e->rcpts, e->rcpt_cap * sizeof(*e->rcpts));
    }
    struct pst_rcpt *r = &e->rcpts[e->nrcpts++];
    memset(r, 0, sizeof(*r));
    r->addr = pst_xstrdup(addr);
    return r;
}
