/*
 * registry.c - the built-in filter modules, by name.
 *
 * One table: adding a built-in module is one line here plus its file.
 * The chain's order comes from the config file's `filters` list, not from
 * this table; the documented default order for a gateway in front of a
 * mail server is spf -> headers -> attachments (each is optional).
 * External modules (dlopen) are loaded by load.c and never listed here.
 */
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "filters/chain_int.h"

extern const struct pst_filter pst_filter_headers;
extern const struct pst_filter pst_filter_attachments;
extern const struct pst_filter pst_filter_spf;
/* filters/attach_scan.c: libmagic and the archive helper, one of each
 * per worker thread */
extern void att_thread_init(void);
extern void att_thread_fini(void);

static const struct pst_filter *const builtins[] = {
    &pst_filter_spf,
    &pst_filter_headers,
    &pst_filter_attachments,
};

/* pst_filter_builtin - the built-in module called name, or NULL. */
const struct pst_filter *
pst_filter_builtin(const char *name)
{
    for (size_t i = 0; i < PST_ARRAY_LEN(builtins); i++)
        if (strcmp(builtins[i]->name, name) == 0)
            return builtins[i];
    return NULL;
}

/* pst__filters_thread_init - on each filter worker thread as it starts:
 * the built-in modules' per-thread state. */
void
pst__filters_thread_init(void)
{
    att_thread_init();
}

/* pst__filters_thread_fini - on each filter worker thread as it ends. */
void
pst__filters_thread_fini(void)
{
    att_thread_fini();
}

static int
hook_load(const void *setting, const char *file, const struct pst_conf *c,
          void **out, struct pst_err *err)
{
    struct pst_chain *ch = NULL;
    const struct pst_resolver_conf *r = &c->resolver;
    const char **ns = pst_xcalloc(r->nnameservers + 1, sizeof(*ns));
    for (size_t i = 0; i < r->nnameservers; i++)
        ns[i] = r->nameservers[i].address;
    struct pst_fhost host = {
        .hostname = c->hostname,
        .authserv_id = c->authserv_id ? c->authserv_id : c->hostname,
        .nameservers = ns,
        .nnameservers = r->nnameservers,
        .dns_timeout_ms = r->timeout,
        .dns_tries = r->tries,
    };
    int rc = pst_chain_load(setting, file, &host, &ch, err);
    free(ns);
    *out = ch;
    return rc;
}

static void
hook_free(void *obj)
{
    pst_chain_free(obj);
}

static const struct pst_conf_hook filters_hook = {hook_load, hook_free};

/* pst_filters_setup - see chain.h. */
void
pst_filters_setup(void)
{
    pst_conf_set_filters_hook(&filters_hook);
}
