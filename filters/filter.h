/*
 * filter.h - the filter module API: what a module is, what it sees, and
 * what it may ask the host to do. Built-in modules (filters/registry.c)
 * and external ones (loaded with dlopen, see filters/examples/) use exactly
 * this header.
 *
 * A MODULE is one const struct pst_filter: a name, the API version and the
 * sizes of the structs it was built against (PST_FILTER_ABI fills them; the
 * chain refuses a module whose version or sizes differ from the host's), a
 * config parser for its own block of the `filters` list, and one hook per
 * PHASE. A NULL hook skips the phase.
 *
 * PHASES, in the order a session meets them:
 *   on_connect   the client connected (pst_fctx_env: client_ip, name)
 *   on_helo      HELO/EHLO given (helo)
 *   on_mail      MAIL FROM accepted by the gateway (sender, "" for <>)
 *   on_rcpt      RCPT TO accepted by the gateway (this recipient)
 *   on_headers   the header is complete (while the body still streams,
 *                or at the final dot): the fields as edited so far. They
 *                are the message model's (core/mime.c parses the header
 *                once): a line that is no field ends the header for
 *                filters as for the model and for readers
 *   on_message   after on_headers: the MIME tree of the message as
 *                received (core/mime.h; offsets are into the original
 *                text, usable with pst_part_replace). The chain builds
 *                it while the text streams, only when a module in the
 *                chain has this hook.
 *   on_eom       last: everything is known
 *   on_body      (no verdict) decoded body octets while the text streams
 * on_message and on_eom run after the whole text has been received and
 * before the reply to the final dot, which answers for all three message
 * phases (a refusal at on_headers is given there too).
 *
 * VERDICTS a hook returns:
 *   PST_CONTINUE    run the next filter
 *   PST_ACCEPT      skip the remaining filters: for the rest of this phase
 *                   before MAIL, for the rest of the message after it
 *   PST_REJECT      refuse (5xx): the command, this recipient, or the
 *                   message; ends the chain for the phase
 *   PST_TEMPFAIL    refuse for now (4xx); ends the chain for the phase
 *   PST_DISCARD     (MAIL and later) answer 250, drop the message
 *   PST_QUARANTINE  (MAIL and later) answer 250, keep the message in the
 *                   spool's hold area; `postern queue release` delivers it
 *                   without running the filters again
 *   PST_PENDING     the answer comes later (see ASYNC)
 * DISCARD and QUARANTINE do not end the chain: a later filter may still
 * refuse. One reply after the data covers all recipients, and the
 * strictest verdict of the message wins: reject > tempfail > discard >
 * quarantine > accept. DISCARD or QUARANTINE before MAIL is invalid.
 *
 * REPLIES. A hook returning REJECT or TEMPFAIL may first set its reply with
 * pst_fctx_reply (code 5xx for REJECT, 4xx for TEMPFAIL; the enhanced code
 * of the same class; text without CR, LF or other control characters, at
 * most PST_FREPLY_TEXT_MAX bytes). Without one the host's default is used
 * (550 5.7.1, 451 4.3.0). An invalid reply, or an invalid verdict, makes
 * the filter FAILED.
 *
 * FAILURE. Each use of a module in the chain has a deadline (for a PENDING
 * verdict) and a failure mode, used when it fails (invalid reply, error
 * reported with pst_fctx_fail) or times out: "tempfail" (451 4.3.0, the
 * default), "accept" (the filter is skipped: the message goes on
 * unfiltered by it) or "reject" (550 5.7.1). Every use is logged and
 * counted (pst_chain_stats). On a timeout on_abort runs first.
 *
 * EDITS. Filters never write to message buffers, sockets or the spool.
 * They ask the host: pst_hdr_add/remove/replace, pst_part_replace,
 * pst_env_set_sender/rcpt. The host records each edit and applies them
 * while the message streams out to delivery, so every header and part no
 * edit touched reaches the downstream byte-identical. EACH FILTER SEES THE
 * EDITS OF THE FILTERS BEFORE IT: pst_hdr_count/pst_hdr_at show the header
 * fields as edited so far (added fields included, removed ones gone).
 *
 * ASYNC. A hook that must wait (DNS, a slow library) must not block the
 * loop: it copies its inputs into a malloc'd job, calls
 * pst_fctx_offload(fc, job, work, done) and returns PST_PENDING. work(job)
 * runs on the filter worker pool (bounded; never libuv's shared pool) and
 * must touch only job. done(job) runs later on the loop thread; it takes
 * the context back with pst_fctx_lookup(ref) (ref from pst_fctx_ref, saved
 * in the job before offloading) - NULL means the session, the message or
 * the deadline is gone: free the job and return - then may set a reply or
 * edits and calls pst_fctx_resume(fc, verdict). done always frees the job.
 * If pst_fctx_offload fails, neither work nor done runs: return
 * PST_TEMPFAIL. While a filter is pending the session reads nothing.
 *
 * CONTENT. on_message and on_eom may read a part's DECODED body (transfer
 * encoding undone), streamed from the stored text in bounded memory:
 * pst_fctx_text gives a reference on the message's text (core/textsrc.h),
 * pst_fbody_of the position and encoding of a part's body (a value to
 * copy into a job), and pst_fbody_open a reader over them (core/mime.h
 * pst_mime_reader_read/_seek/_tell/_bad/_close). Reading does file I/O:
 * do it in work(job), never on the loop thread. The text reference and
 * the readers belong to the job, not the session: they stay valid if the
 * session ends while work runs; drop them in work or done. The model
 * (struct pst_mime_part) belongs to the session: never touch it in work.
 *
 * COUNTERS. A module counts what it does in the process's metrics
 * registry (core/metrics.h: look its series up in configure and keep the
 * pointers; updates are lock-free from any thread).
 *
 * MEMORY. conf (from configure) is immutable and shared by every session
 * using the config generation. pst_fctx_state gives msg_state_size zeroed
 * bytes per message (NULL before MAIL), freed when the message ends.
 * Pointers the host hands to a hook are valid until the hook returns.
 *
 * THREADS. Every pst_* function here is for the loop thread only.
 */
#ifndef PST_FILTERS_FILTER_H
#define PST_FILTERS_FILTER_H

#include <libconfig.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/envelope.h"
#include "core/log.h"
#include "core/mime.h"
#include "core/textsrc.h"
#include "core/util.h"

/* 5: struct pst_hdr_field (core/mime.h) gained len; 6: struct pst_params
 * (core/rfc2047.h), in each struct pst_mime_part, gained alt */
#define PST_FILTER_API 6
#define PST_FREPLY_TEXT_MAX 200

enum pst_verdict {
    PST_CONTINUE,
    PST_ACCEPT,
    PST_TEMPFAIL,
    PST_REJECT,
    PST_DISCARD,
    PST_QUARANTINE,
    PST_PENDING,
};

enum pst_fphase {
    PST_FP_CONNECT,
    PST_FP_HELO,
    PST_FP_MAIL,
    PST_FP_RCPT,
    PST_FP_HEADERS,
    PST_FP_MESSAGE,
    PST_FP_EOM,
    PST_FP_COUNT,
};

enum pst_failmode { PST_FAIL_TEMPFAIL, PST_FAIL_ACCEPT, PST_FAIL_REJECT };

struct pst_fctx;                    /* one filter's view of one session */


/* One header field in the current (edited) view of the message. */
struct pst_hdr {
    const char *name;               /* as written, NUL-terminated */
    size_t name_len;
    const char *value;              /* unfolded (CRLF removed), leading
                                       blanks removed, not decoded */
    const char *raw;                /* whole field as it will be sent:
                                       "Name: value" folded, ending with
                                       its line end (CRLF; none if the
                                       text ended in the field) */
    size_t raw_len;
    int orig;                       /* index in the received header, or -1
                                       for a field a filter added */
    bool changed;                   /* replaced by a filter */
};

/*
 * What a module may know of the host's configuration, for configure (valid
 * during that call only: copy what you keep).
 */
struct pst_fhost {
    const char *hostname;           /* the gateway's name */
    const char *authserv_id;        /* RFC 8601 authserv-id of every
                                       Authentication-Results field postern
                                       writes and trusts */
    const char *const *nameservers; /* the `resolver` section's servers,
                                       "IP", "IP:PORT", "[IPv6]:PORT" */
    size_t nnameservers;            /* 0: /etc/resolv.conf */
    unsigned dns_timeout_ms;        /* per try */
    unsigned dns_tries;
};

/* A reference to a pending context that survives the session: ids, never
 * pointers. */
struct pst_fref {
    uint64_t sess;
    uint64_t gen;
};

struct pst_filter {
    const char *name;               /* config keyword and log tag */
    unsigned api;                   /* PST_FILTER_API */
    size_t desc_size;               /* sizeof(struct pst_filter) */
    size_t hdr_size;                /* sizeof(struct pst_hdr) */
    size_t env_size;                /* sizeof(struct pst_envelope) */
    size_t msg_state_size;          /* zeroed per message */

    /*
     * configure - parse this module's group of the `filters` list (s; the
     * keys module, path, deadline and failure belong to the chain: skip
     * them, pst_fconf_check_keys helps). Errors go to err as
     * "file:line: text" (pst_fconf_error); return 0 or -1. file is the
     * config file name for messages; host the host's settings. *conf is
     * passed back to the hooks. configure also runs for check-config: it
     * starts nothing.
     */
    int (*configure)(const config_setting_t *s, const char *file,
                     const struct pst_fhost *host, void **conf,
                     struct pst_err *err);
    /* unconfigure - free conf, stopping whatever start started. */
    void (*unconfigure)(void *conf);
    /*
     * start - the chain is about to serve: start what the module runs
     * beside the loop (helper processes). The gateway calls it once per
     * loaded chain, after it has dropped its privileges and before it
     * accepts; 0, or -1 with err filled (the gateway does not start, a
     * reload keeps the old chain).
     */
    int (*start)(void *conf, struct pst_err *err);
    /* stop - the chain serves no more (its configuration generation is
     * gone: a reload replaced it, or the gateway stops): stop what start
     * started. conf stays until unconfigure. */
    void (*stop)(void *conf);

    enum pst_verdict (*on_connect)(struct pst_fctx *fc);
    enum pst_verdict (*on_helo)(struct pst_fctx *fc, const char *helo);
    enum pst_verdict (*on_mail)(struct pst_fctx *fc, const char *sender);
    enum pst_verdict (*on_rcpt)(struct pst_fctx *fc, const char *rcpt);
    enum pst_verdict (*on_headers)(struct pst_fctx *fc);
    enum pst_verdict (*on_message)(struct pst_fctx *fc,
                                   const struct pst_mime_part *root);
    enum pst_verdict (*on_eom)(struct pst_fctx *fc);
    /*
     * on_body - decoded octets of a leaf part's body (core/mime.h
     * on_body: in order, one part after another), on the loop thread
     * while the text streams. For cheap observations only (a line
     * scanner, a flag over the first octets): it must not block, and it
     * returns nothing; the verdict comes in on_message. part is valid
     * for the call (its id numbers the parts of the message). Not called
     * for a body the parser cannot stream (a malformed multipart's text,
     * flag PST_MIME_F_NO_START): read those in on_message.
     */
    void (*on_body)(struct pst_fctx *fc, const struct pst_mime_part *part,
                    const void *data, size_t len);
    /* on_abort - the filter was pending and its answer is no longer
     * wanted (deadline, session or message gone). */
    void (*on_abort)(struct pst_fctx *fc);
};

/* Fills the version and size fields of a descriptor. */
#define PST_FILTER_ABI                                                         \
    .api = PST_FILTER_API, .desc_size = sizeof(struct pst_filter),            \
    .hdr_size = sizeof(struct pst_hdr),                                        \
    .env_size = sizeof(struct pst_envelope)

/* An external module exports its descriptor under this name. */
#define PST_FILTER_SYMBOL "pst_filter_module"

/* ---- context ---- */
void *pst_fctx_conf(struct pst_fctx *fc);
void *pst_fctx_state(struct pst_fctx *fc);
const char *pst_fctx_name(const struct pst_fctx *fc);
uint64_t pst_fctx_session(const struct pst_fctx *fc);
/* the envelope so far: client facts, helo, sender and the recipients
 * accepted before this phase */
const struct pst_envelope *pst_fctx_env(const struct pst_fctx *fc);
enum pst_fphase pst_fctx_phase(const struct pst_fctx *fc);
/* pst_fctx_qid - the queue id of the message being received ("" before
 * DATA or outside a message); pst_fctx_log names it as msg=. */
const char *pst_fctx_qid(const struct pst_fctx *fc);
/* pst_fctx_reply - the reply for a REJECT or TEMPFAIL; -EINVAL (and the
 * filter counts as failed) if code, enhanced code or text is invalid. */
int pst_fctx_reply(struct pst_fctx *fc, int code, const char *enh,
                   const char *text);
/* pst_fctx_fail - the filter could not do its job (why is logged): its
 * failure mode applies whatever verdict it returns. */
void pst_fctx_fail(struct pst_fctx *fc, const char *why);
/* pst_fctx_log - one log line, with the session (and queue) id, the filter
 * and the phase. An info line of the HELO, MAIL or RCPT phase counts
 * toward the session's budget of command lines (logging.session_lines):
 * past it, it is written at debug level. */
void pst_fctx_log(struct pst_fctx *fc, enum pst_log_level lvl,
                  const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- async ---- */
typedef void (*pst_fwork_fn)(void *job);
typedef void (*pst_fdone_fn)(void *job);
int pst_fctx_offload(struct pst_fctx *fc, void *job, pst_fwork_fn work,
                     pst_fdone_fn done);
struct pst_fref pst_fctx_ref(const struct pst_fctx *fc);
struct pst_fctx *pst_fctx_lookup(struct pst_fref ref);
void pst_fctx_resume(struct pst_fctx *fc, enum pst_verdict v);

/* ---- headers (message phases) ---- */
size_t pst_hdr_count(struct pst_fctx *fc);
const struct pst_hdr *pst_hdr_at(struct pst_fctx *fc, size_t i);
/* pst_hdr_find - index of the first field named name (ASCII case
 * insensitive) at or after from, or -1. */
long pst_hdr_find(struct pst_fctx *fc, const char *name, size_t from);
/*
 * Edits. value is the field body as UTF-8 text without CR, LF or NUL
 * (-EINVAL otherwise; -E2BIG beyond PST_HDR_EDIT_MAX). The host folds it,
 * and RFC 2047-encodes non-ASCII text unless the message is SMTPUTF8. The
 * _raw forms take a value already in wire form (structured fields such as
 * address lists, whose addresses must not be encoded): folded only.
 * pst_hdr_add puts the field at the top (top) or at the end of the header.
 * Indexes are those of the current view and shift after add and remove.
 */
#define PST_HDR_EDIT_MAX 8192
int pst_hdr_add(struct pst_fctx *fc, const char *name, const char *value,
                bool top);
int pst_hdr_add_raw(struct pst_fctx *fc, const char *name, const char *value,
                    bool top);
int pst_hdr_remove(struct pst_fctx *fc, size_t i);
int pst_hdr_replace(struct pst_fctx *fc, size_t i, const char *value);
int pst_hdr_replace_raw(struct pst_fctx *fc, size_t i, const char *value);
/* pst_hdr_name_valid - name is one pst_hdr_add takes: 1..76 printable
 * ASCII octets without ':' (for checking names in configure). */
bool pst_hdr_name_valid(const char *name);
/*
 * pst_hdr_encode - text (UTF-8, no CR, LF or NUL, at most
 * PST_HDR_EDIT_MAX bytes) in the form pst_hdr_add writes it: runs of words
 * with non-ASCII octets RFC 2047-encoded, unless the message is SMTPUTF8.
 * For building a value that mixes new text with text already in wire form
 * (then given to a _raw edit). A new string the caller frees, or NULL
 * (invalid text, or not in a message phase).
 */
char *pst_hdr_encode(struct pst_fctx *fc, const char *text);
/* pst_message_smtputf8 - the message may carry raw UTF-8 headers. */
bool pst_message_smtputf8(struct pst_fctx *fc);

/*
 * pst_part_replace - replace len bytes of the original message at off
 * (a MIME part's body, as the message model gives its offsets) with the
 * n bytes at data (canonical CRLF text, copied). Ranges may not overlap
 * each other or the header. Returns 0, -EINVAL or -E2BIG.
 */
int pst_part_replace(struct pst_fctx *fc, uint64_t off, uint64_t len,
                     const void *data, size_t n);

/*
 * pst_part_remove - replace MIME part `part` (its header and body, from
 * on_message's tree) with a text/plain part holding `notice` (one line of
 * printable ASCII). The delimiters around it stay, so the container keeps
 * its boundary and structure; a notice that would be a delimiter of an
 * enclosing multipart ("--" and its boundary) is refused (-EINVAL), as
 * are the root and container parts. The removal
 * is logged with the part's section.
 */
int pst_part_remove(struct pst_fctx *fc, const struct pst_mime_part *part,
                    const char *notice);

/* ---- content (on_message, on_eom; see CONTENT) ---- */
/* Where a leaf's body is in the message text and how it is encoded. */
struct pst_fbody {
    uint64_t start, end;            /* offsets of the encoded body */
    enum pst_cte cte;               /* identity for containers */
};

struct pst_fbody pst_fbody_of(const struct pst_mime_part *part);
/*
 * pst_fctx_text - a new reference on the stored text of the message (drop
 * it with pst_textsrc_unref, from any thread), or NULL outside on_message
 * and on_eom or when the host keeps no text (then the module cannot read
 * content: its failure mode is the honest answer).
 */
struct pst_textsrc *pst_fctx_text(struct pst_fctx *fc);
/*
 * pst_fbody_open - a reader of the decoded body b in text t (any thread;
 * t must outlive the reader). Reads block on I/O: worker threads only.
 * Memory: about 32 KiB plus the seek checkpoints (core/mime.h).
 */
struct pst_mime_reader *pst_fbody_open(struct pst_textsrc *t,
                                       const struct pst_fbody *b);

/*
 * Envelope. pst_env_set_sender (MAIL and later) sets the reverse-path the
 * message is delivered with; pst_env_set_rcpt (in on_rcpt only) the
 * address this recipient is routed to, its ORCPT keeping the address the
 * client gave. The address has no angle brackets, no blanks or control
 * characters, and one '@' (sender: or ""). Returns 0 or -EINVAL.
 */
int pst_env_set_sender(struct pst_fctx *fc, const char *addr);
int pst_env_set_rcpt(struct pst_fctx *fc, const char *addr);

/* ---- helpers for configure ---- */
/* pst_fconf_error - "file:line: filters[i] (name): text" into err. */
void pst_fconf_error(struct pst_err *err, const char *file,
                     const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* pst_fconf_check_keys - report members of group s not in keys (NULL
 * ended) nor the chain's own keys; returns the number reported. */
int pst_fconf_check_keys(const config_setting_t *s, const char *file,
                         const char *const *keys, struct pst_err *err);
/* pst_fconf_helper - the helper executable of a module: the path its
 * `helper` setting gives, or `name` beside the running postern binary;
 * opened O_PATH (so it can be started later whatever the privileges
 * then: fork and execveat(fd, "", ..., AT_EMPTY_PATH)). *path is malloc'd;
 * 0, or -1 with err (not a regular executable file, with the line). */
int pst_fconf_helper(const config_setting_t *s, const char *file,
                     const char *module, const char *name, char **path,
                     int *fd, struct pst_err *err);
/* pst_fhelper_exec - in the child of fork() (the gateway has threads:
 * async-signal-safe calls only): default signal dispositions, an empty
 * mask, a process group of its own (a ^C to the gateway's terminal does
 * not reach it), `sock` as fd 3, an empty environment, then exe_fd run
 * with argv[0] `name`. parent: if not 0, the child dies (SIGKILL) with
 * the thread that forked it, and gives up if that is already gone.
 * Never returns: _exit(127) if the exec fails. */
void pst_fhelper_exec(int sock, int exe_fd, const char *name, pid_t parent)
    __attribute__((noreturn));

#endif
