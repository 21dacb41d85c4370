/*
 * example.c - a small external filter module, the model for modules
 * written outside postern. It is built as a shared object, named in the
 * config with its path, and loaded with dlopen:
 *
 *   filters = (
 *       { module = "example"; path = "lib/pst_example.so";
 *         stamp = "X-Example-Filter";   # header added to every message
 *         reject_word = "forbidden"; }  # refuse a Subject containing it
 *   );
 *
 * It uses only filter.h: it reads its settings in configure, adds a
 * header field in on_headers, and refuses a message whose Subject holds
 * the word with its own 550 reply. The host's pst_* functions resolve
 * from the postern binary at load.
 *
 * Built with EXAMPLE_WRONG_API it claims a different API version, so the
 * host refuses it (the test of that refusal).
 */
#include <stdlib.h>
#include <string.h>

#include "filters/filter.h"

struct example_conf {
    char *stamp;
    char *reject_word;
};

static int
example_configure(const config_setting_t *s, const char *file, void **out,
                  struct pst_err *err)
{
    static const char *const keys[] = {"stamp", "reject_word", NULL};
    struct example_conf *c = calloc(1, sizeof(*c));
    const char *v;

    if (c == NULL)
        return -1;
    if (pst_fconf_check_keys(s, file, keys, err) > 0) {
        free(c);
        return -1;
    }
    c->stamp = strdup(config_setting_lookup_string(s, "stamp", &v) ? v
                                                   : "X-Example-Filter");
    if (config_setting_lookup_string(s, "reject_word", &v))
        c->reject_word = strdup(v);
    *out = c;
    return 0;
}

static void
example_unconfigure(void *p)
{
    struct example_conf *c = p;
    free(c->stamp);
    free(c->reject_word);
    free(c);
}

static enum pst_verdict
example_on_headers(struct pst_fctx *fc)
{
    struct example_conf *c = pst_fctx_conf(fc);
    long i = pst_hdr_find(fc, "Subject", 0);

    if (c->reject_word && i >= 0 &&
        strstr(pst_hdr_at(fc, (size_t)i)->value, c->reject_word)) {
        pst_fctx_reply(fc, 550, "5.7.1", "example: subject refused");
        return PST_REJECT;
    }
    if (pst_hdr_add(fc, c->stamp, "seen by the example module", false) < 0)
        pst_fctx_fail(fc, "cannot add the stamp");
    return PST_CONTINUE;
}

const struct pst_filter pst_filter_module = {
    .name = "example",
#ifdef EXAMPLE_WRONG_API
    .api = PST_FILTER_API + 1,
    .desc_size = sizeof(struct pst_filter),
    .hdr_size = sizeof(struct pst_hdr),
    .env_size = sizeof(struct pst_envelope),
#else
    PST_FILTER_ABI,
#endif
    .configure = example_configure,
    .unconfigure = example_unconfigure,
    .on_headers = example_on_headers,
};
