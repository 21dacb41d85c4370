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
 * header field in on_headers, and acts on words in the Subject:
 *   reject_word       refuse with its own 550 reply
 *   quarantine_word   quarantine (held in the spool until released)
 *   discard_word      discard (250, not delivered)
 *   slow_word         answer later: a job sleeps slow_ms milliseconds on
 *                     the filter worker pool, then the message goes on
 *                     with an X-Example-Slow field (the async pattern)
 * and slow_phases = ["connect", "helo", "mail", "rcpt"] answers those
 * phases later the same way; a recipient containing reject_word is then
 * refused (550 5.1.1), after the wait.
 * The host's pst_* functions resolve from the postern binary at load.
 *
 * Built with EXAMPLE_WRONG_API it claims a different API version, so the
 * host refuses it (the test of that refusal).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <stdbool.h>

#include "filters/filter.h"

struct example_conf {
    char *stamp;
    char *reject_word;
    char *quarantine_word;
    char *discard_word;
    char *slow_word;
    int slow_ms;
    unsigned slow_phases;           /* bit per enum pst_fphase */
};

struct slow_job {
    struct pst_fref ref;            /* never a pointer to the session */
    int ms;
    bool refuse;                    /* the verdict decided up front */
};

static int
example_configure(const config_setting_t *s, const char *file,
                  const struct pst_fhost *host, void **out,
                  struct pst_err *err)
{
    static const char *const keys[] = {"stamp", "reject_word",
                                       "quarantine_word", "discard_word",
                                       "slow_word", "slow_ms", "slow_phases",
                                       NULL};
    static const char *const phases[] = {"connect", "helo", "mail", "rcpt"};
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
    if (config_setting_lookup_string(s, "quarantine_word", &v))
        c->quarantine_word = strdup(v);
    if (config_setting_lookup_string(s, "discard_word", &v))
        c->discard_word = strdup(v);
    if (config_setting_lookup_string(s, "slow_word", &v))
        c->slow_word = strdup(v);
    c->slow_ms = 500;
    config_setting_lookup_int(s, "slow_ms", &c->slow_ms);
    const config_setting_t *sp = config_setting_get_member(s, "slow_phases");
    for (int i = 0; sp && i < config_setting_length(sp); i++) {
        const char *ph = config_setting_get_string_elem(sp, (unsigned)i);
        for (unsigned k = 0; ph && k < 4; k++)
            if (strcmp(ph, phases[k]) == 0)
                c->slow_phases |= 1u << k;
    }
    if (c->slow_ms < 0 || c->slow_ms > 60000) {
        pst_fconf_error(err, file, config_setting_get_member(s, "slow_ms"),
                        "filter example: slow_ms must be 0..60000");
        free(c->stamp);
        free(c->reject_word);
        free(c->quarantine_word);
        free(c->discard_word);
        free(c->slow_word);
        free(c);
        return -1;
    }
    *out = c;
    return 0;
}

static void
example_unconfigure(void *p)
{
    struct example_conf *c = p;
    free(c->stamp);
    free(c->reject_word);
    free(c->quarantine_word);
    free(c->discard_word);
    free(c->slow_word);
    free(c);
}

/* Worker thread: touches only its job. */
static void
slow_work(void *p)
{
    struct slow_job *j = p;
    struct timespec ts = {j->ms / 1000, (long)(j->ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Loop thread: the session may be gone (lookup NULL); free the job. */
static void
slow_done(void *p)
{
    struct slow_job *j = p;
    struct pst_fctx *fc = pst_fctx_lookup(j->ref);
    if (fc != NULL && j->refuse) {
        pst_fctx_reply(fc, 550, "5.1.1", "example: recipient refused");
        pst_fctx_resume(fc, PST_REJECT);
    } else if (fc != NULL) {
        if (pst_fctx_phase(fc) == PST_FP_HEADERS)
            pst_hdr_add(fc, "X-Example-Slow", "done", false);
        pst_fctx_resume(fc, PST_CONTINUE);
    }
    free(j);
}

/* Answer this phase later (from the worker pool). */
static enum pst_verdict
go_slow(struct pst_fctx *fc, bool refuse)
{
    struct example_conf *c = pst_fctx_conf(fc);
    struct slow_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return PST_TEMPFAIL;
    j->ref = pst_fctx_ref(fc);
    j->ms = c->slow_ms;
    j->refuse = refuse;
    if (pst_fctx_offload(fc, j, slow_work, slow_done) < 0) {
        free(j);
        return PST_TEMPFAIL;
    }
    return PST_PENDING;
}

static bool
slow_in(struct pst_fctx *fc, enum pst_fphase ph)
{
    struct example_conf *c = pst_fctx_conf(fc);
    return (c->slow_phases & (1u << ph)) != 0;
}

static enum pst_verdict
example_on_connect(struct pst_fctx *fc)
{
    return slow_in(fc, PST_FP_CONNECT) ? go_slow(fc, false) : PST_CONTINUE;
}

static enum pst_verdict
example_on_helo(struct pst_fctx *fc, const char *helo)
{
    return slow_in(fc, PST_FP_HELO) ? go_slow(fc, false) : PST_CONTINUE;
}

static enum pst_verdict
example_on_mail(struct pst_fctx *fc, const char *sender)
{
    return slow_in(fc, PST_FP_MAIL) ? go_slow(fc, false) : PST_CONTINUE;
}

static enum pst_verdict
example_on_rcpt(struct pst_fctx *fc, const char *rcpt)
{
    struct example_conf *c = pst_fctx_conf(fc);
    bool refuse = c->reject_word && strstr(rcpt, c->reject_word);
    if (slow_in(fc, PST_FP_RCPT))
        return go_slow(fc, refuse);
    if (refuse) {
        pst_fctx_reply(fc, 550, "5.1.1", "example: recipient refused");
        return PST_REJECT;
    }
    return PST_CONTINUE;
}

static bool
subject_has(struct pst_fctx *fc, const char *word)
{
    long i = pst_hdr_find(fc, "Subject", 0);
    return word && i >= 0 && strstr(pst_hdr_at(fc, (size_t)i)->value, word);
}

static enum pst_verdict
example_on_headers(struct pst_fctx *fc)
{
    struct example_conf *c = pst_fctx_conf(fc);

    if (subject_has(fc, c->reject_word)) {
        pst_fctx_reply(fc, 550, "5.7.1", "example: subject refused");
        return PST_REJECT;
    }
    if (pst_hdr_add(fc, c->stamp, "seen by the example module", false) < 0)
        pst_fctx_fail(fc, "cannot add the stamp");
    if (subject_has(fc, c->quarantine_word))
        return PST_QUARANTINE;
    if (subject_has(fc, c->discard_word))
        return PST_DISCARD;
    if (subject_has(fc, c->slow_word))
        return go_slow(fc, false);
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
    .on_connect = example_on_connect,
    .on_helo = example_on_helo,
    .on_mail = example_on_mail,
    .on_rcpt = example_on_rcpt,
    .on_headers = example_on_headers,
};
