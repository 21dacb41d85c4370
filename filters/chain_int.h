/*
 * chain_int.h - internal to filters/: the structures the chain runner
 * (chain.c), the runtime (runtime.c), the header view and edits (edit.c)
 * and the config loader (load.c) share.
 */
#ifndef PST_FILTERS_CHAIN_INT_H
#define PST_FILTERS_CHAIN_INT_H

#include <pthread.h>

#include "core/mime.h"
#include "filters/chain.h"

struct pst_metric;

struct pst__fentry {
    const struct pst_filter *f;
    void *conf;
    unsigned deadline_ms;
    enum pst_failmode fm;
    void *dl;                       /* dlopen handle, or NULL */
    struct pst_fstats st;
    /* postern_filter_verdicts_total by verdict (PST_CONTINUE ..
     * PST_QUARANTINE) and postern_filter_failures_total by cause */
    struct pst_metric *m_verdict[PST_QUARANTINE + 1];
    struct pst_metric *m_fail[3];   /* timeout, invalid, error */
};

struct pst_chain {
    struct pst__fentry e[PST_FCHAIN_MAX];
    size_t n;
};

/* One header field of the view (see filter.h struct pst_hdr): a model
 * field's strings, or its own once edited. */
struct pst__vhdr {
    struct pst_hdr pub;
    uint64_t off, len;              /* original bytes, for orig >= 0 */
    char *own_name, *own_value, *own_raw; /* allocated for edited fields */
};

struct pst__brepl {                 /* a body range replacement */
    uint64_t off, len;
    unsigned char *data;
    size_t n;
};

struct pst_fctx {
    struct pst_fsess *fs;
    const struct pst__fentry *e;
    size_t idx;
    void *state;                    /* per message */
    bool has_reply, bad_reply, failed;
    bool timed_out;                 /* failed: the deadline passed */
    char fail_why[120];
    int code;
    char enh[16];
    char text[PST_FREPLY_TEXT_MAX + 1];
};

struct pst_fsess {
    struct pst_frt *rt;
    struct pst_chain *ch;
    uint64_t id;
    struct pst_fsess *hnext;        /* runtime table chain */
    const struct pst_envelope *env;
    pst_fsess_cb cb;
    void *cbarg;
    pst_fsess_level_fn level_fn;    /* the host's log budget, or NULL */
    struct pst_fctx *fcs;           /* one per chain entry */
    uv_timer_t *timer;              /* deadline; freed by its close cb */

    /* the phase being run */
    bool running, pending, in_hook, early;
    enum pst_verdict early_v;
    enum pst_fphase phase, last_phase;
    size_t idx;
    uint64_t gen;
    char *arg;
    struct pst_fres res;
    char *new_sender, *new_rcpt;    /* results of this run */

    /* the message */
    bool in_msg, smtputf8, accepted;
    enum pst_verdict disp;          /* CONTINUE, QUARANTINE or DISCARD */
    const char *disp_filter;        /* the module that set it */
    bool hdr_trunc, view_built, edited;
    const struct pst_mime_part *hroot; /* the model's root: the view's */
    uint64_t hdr_end;               /* its fields are [0, hdr_end) */
    uint64_t msg_bytes;
    struct pst__vhdr *v;
    size_t nv, cv;
    struct pst__brepl *br;
    size_t nbr;
    bool hdr_ran;                   /* headers phase run while streaming */
    struct pst_fres hdr_res;        /* its refusal, given at the end */
    struct pst_mime_parser *mp;     /* every message's, until finished */
    bool mime_full;                 /* fed the whole text: a module has
                                       on_message or on_body, or the host
                                       asked for the model; else only
                                       the header (for the view) */
    bool host_mime;                 /* pst_fsess_want_mime */
    const struct pst_mime_limits *mime_limits; /* NULL: defaults */
    struct pst_msg *mime;           /* the finished parse */
    char qid[32];                   /* of the message being received */
    pst_ftext_open_fn text_open;    /* pst_fsess_msg_stored */
    void *text_arg;
    struct pst_textsrc *text;       /* opened on the first pst_fctx_text */
    bool text_tried;
};

/* runtime.c */
uv_loop_t *pst__frt_loop(struct pst_frt *rt);
void pst__frt_attach(struct pst_frt *rt, struct pst_fsess *fs);
void pst__frt_detach(struct pst_frt *rt, struct pst_fsess *fs);
struct pst_fsess *pst__frt_find(struct pst_frt *rt, uint64_t id);
int pst__frt_submit(struct pst_frt *rt, void *job, pst_fwork_fn work,
                    pst_fdone_fn done);
/* the runtime that is resolving pst_fctx_lookup (one per loop thread) */
extern _Thread_local struct pst_frt *pst__frt_current;

/* registry.c: per-thread state of the built-in modules, set up and torn
 * down on each filter worker thread */
void pst__filters_thread_init(void);
void pst__filters_thread_fini(void);

/* edit.c */
void pst__view_build(struct pst_fsess *fs, const struct pst_mime_part *root);
void pst__view_free(struct pst_fsess *fs);

/* chain.c */
void pst__fsess_resume(struct pst_fsess *fs, enum pst_verdict v);

#endif
