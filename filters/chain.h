/*
 * chain.h - the filter chain as the host (gateway/) drives it.
 *
 * What this offers:
 *   struct pst_chain    the configured modules in order, each with its
 *                       conf, deadline and failure mode (immutable but for
 *                       its counters; owned by a config generation)
 *   struct pst_frt      the runtime of one loop: the filter worker pool
 *                       and the live filter sessions by id
 *   struct pst_fsess    one SMTP session's filter state
 *
 * The host calls pst_fsess_run at each phase. It returns 0 with the result
 * filled, or 1: a filter is pending; the host stops reading and its
 * callback gets the result later (on the loop thread). For the message
 * phases the host feeds the text with pst_fsess_msg_data while it streams;
 * once pst_fsess_headers_ready says the header is complete it may run
 * PST_FP_HEADERS at once (a slow header check then overlaps the rest of
 * the upload; a refusal is kept for the end), and it runs PST_FP_EOM once
 * at the end: on_headers (if not run yet), on_message and on_eom run in
 * turn and the result is the message's verdict (the strictest of all its
 * filters). pst_fsess_edits then gives the edit blob the spool commits
 * beside the original text (queue/edits.h).
 *
 * Ids, not pointers: a pending filter's answer finds its session through
 * the runtime's table by (session id, generation). pst_fsess_free drops
 * the session from the table, so an answer that arrives later is freed
 * without effect.
 */
#ifndef PST_FILTERS_CHAIN_H
#define PST_FILTERS_CHAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/mime.h"
#include "filters/filter.h"
#include "queue/edits.h"

#define PST_FCHAIN_MAX 32           /* modules in one chain */
#define PST_FPOOL_QUEUE_MAX 4096    /* offloaded jobs waiting or running */
#define PST_FDEADLINE_DEFAULT 30000 /* ms */
#define PST_FILTER_WORKERS 4        /* pool threads of a gateway loop */

struct pst_chain;
struct pst_frt;
struct pst_fsess;

struct pst_fstats {
    uint64_t calls;                 /* hook invocations */
    uint64_t pending;               /* of which answered later */
    uint64_t failures;              /* failure mode applied (any cause) */
    uint64_t timeouts;              /* of which deadline expiries */
    uint64_t invalid;               /* of which invalid verdicts/replies */
};

/* The outcome of one phase. */
struct pst_fres {
    enum pst_verdict verdict;       /* CONTINUE, REJECT, TEMPFAIL, and for
                                       the message DISCARD or QUARANTINE */
    int code;                       /* REJECT/TEMPFAIL reply */
    char enh[16];
    char text[PST_FREPLY_TEXT_MAX + 1];
    const char *filter;             /* name of the deciding filter */
    const char *new_sender;         /* set by a filter in this run, or NULL
                                       (valid until the next run) */
    const char *new_rcpt;           /* RCPT: the address to route to */
};

/* ---- building ---- */
struct pst_chain *pst_chain_new(void);
/*
 * pst_chain_append - add module f with its conf (owned by the chain from
 * now: unconfigure runs at free). Refuses (-EINVAL, err filled) a module
 * whose API version or struct sizes differ from the host's.
 */
int pst_chain_append(struct pst_chain *ch, const struct pst_filter *f,
                     void *conf, unsigned deadline_ms, enum pst_failmode fm,
                     struct pst_err *err);
size_t pst_chain_len(const struct pst_chain *ch);
void pst_chain_free(struct pst_chain *ch);
void pst_chain_stats(const struct pst_chain *ch, size_t i,
                     struct pst_fstats *st);
/* pst_chain_log_stats - log each module's counters (at shutdown). */
void pst_chain_log_stats(const struct pst_chain *ch);
/* pst_filter_abi_check - NULL if f fits this host, else why not. */
const char *pst_filter_abi_check(const struct pst_filter *f);

/*
 * pst_chain_load - build a chain from the `filters` list setting: each
 * element a group with `module` (a built-in name, or any name with
 * `path` to a shared object), optional `deadline` (seconds, may be
 * fractional) and `failure` ("tempfail", "accept", "reject"), and the
 * module's own keys. Every error goes to err with file and line.
 */
int pst_chain_load(const config_setting_t *list, const char *file,
                   const struct pst_fhost *host, struct pst_chain **out,
                   struct pst_err *err);
/*
 * pst_chain_start - run each module's start hook (the gateway, after the
 * privilege drop, before serving; never check-config). 0, or -1 with err.
 */
int pst_chain_start(struct pst_chain *ch, struct pst_err *err);
/* pst_chain_stop - run each module's stop hook (the generation that
 * started the chain is released). */
void pst_chain_stop(struct pst_chain *ch);


/* registry.c: built-in modules by name, NULL if none */
const struct pst_filter *pst_filter_builtin(const char *name);

/* pst_filters_setup - let conf/ hand the `filters` section to
 * pst_chain_load (call once, before loading a config). */
void pst_filters_setup(void);

/* ---- runtime ---- */
/* workers: threads of the filter pool (1..64). */
int pst_frt_new(uv_loop_t *loop, unsigned workers, struct pst_frt **out);
/* pst_frt_close - stop the pool; jobs not delivered get their done() with
 * no session to find. Call after every fsess is freed, before the loop's
 * last run (the async handle closes). */
void pst_frt_close(struct pst_frt *rt);

/* ---- sessions ---- */
typedef void (*pst_fsess_cb)(void *arg, const struct pst_fres *res);

/* env: the host's envelope, read while the session lives. */
struct pst_fsess *pst_fsess_new(struct pst_frt *rt, struct pst_chain *ch,
                                uint64_t sess_id,
                                const struct pst_envelope *env,
                                pst_fsess_cb cb, void *arg);
void pst_fsess_free(struct pst_fsess *fs);
/*
 * pst_fsess_set_log_budget - the info lines modules log in the command
 * phases (HELO, MAIL, RCPT), which a client can repeat at will, take the
 * level fn(arg) gives (arg: pst_fsess_new's), so the host's per-session
 * budget of command lines counts them too; fn NULL: as logged.
 */
typedef enum pst_log_level (*pst_fsess_level_fn)(void *arg);
void pst_fsess_set_log_budget(struct pst_fsess *fs, pst_fsess_level_fn fn);
/* pst_fsess_set_env - from now the filters read env (the host's, valid
 * until the next call): a transaction's envelope, then the session's. */
void pst_fsess_set_env(struct pst_fsess *fs, const struct pst_envelope *env);
bool pst_fsess_pending(const struct pst_fsess *fs);
/* the limits of the message model the chain builds: its header, which
 * is the filters' header view, and the tree for on_message (the config
 * generation's; must outlive fs). Default: the parser's. */
void pst_fsess_set_mime_limits(struct pst_fsess *fs,
                               const struct pst_mime_limits *lim);
/*
 * pst_fsess_want_mime - build the message model for every message even if
 * no module looks at it (the host reads it: mime.policy). One parser per
 * message serves the host and the chain.
 */
void pst_fsess_want_mime(struct pst_fsess *fs, bool on);
/*
 * pst_fsess_msg_model - the model of the message whose text has all been
 * fed (parsing finishes on the first call), or NULL when none is built.
 * Owned by the chain until pst_fsess_msg_end.
 */
const struct pst_msg *pst_fsess_msg_model(struct pst_fsess *fs);
/* pst_fsess_run - arg: HELO name, sender, recipient, or NULL.
 * PST_FP_HEADERS: -EINVAL outside a message, once it ran, or before the
 * header is complete. */
int pst_fsess_run(struct pst_fsess *fs, enum pst_fphase ph, const char *arg,
                  struct pst_fres *res);
/* a message starts (before running PST_FP_MAIL) and ends (after commit,
 * refusal or RSET); smtputf8 as given at MAIL */
void pst_fsess_msg_begin(struct pst_fsess *fs, bool smtputf8);
void pst_fsess_msg_data(struct pst_fsess *fs, const void *p, size_t n);
void pst_fsess_msg_end(struct pst_fsess *fs);
/*
 * pst_fsess_msg_stored - the current message's text is being stored under
 * qid (named in filter logs). open(arg), called at most once per message
 * and only once all the text has been fed, returns a reference on that
 * text for filters that read parts' content (pst_fctx_text), or NULL.
 * open may be NULL: no content for filters.
 */
typedef struct pst_textsrc *(*pst_ftext_open_fn)(void *arg);
void pst_fsess_msg_stored(struct pst_fsess *fs, const char *qid,
                          pst_ftext_open_fn open, void *arg);
/* pst_fsess_headers_ready - the header section is complete and the
 * headers phase has not run (and some module has on_headers). */
bool pst_fsess_headers_ready(const struct pst_fsess *fs);
/* pst_fsess_edits - after PST_FP_EOM: append the edit blob to out if any
 * filter edited the message; returns 1 (blob), 0 (no edits) or -E2BIG. */
int pst_fsess_edits(struct pst_fsess *fs, struct pst_tbuf *out);

#endif
