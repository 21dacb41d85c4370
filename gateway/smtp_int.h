/*
 * smtp_int.h - the SMTP session's insides, shared by the files that make
 * it (nothing else includes this; the session's API is gateway/smtp.h):
 *
 *   smtp.c       the session: accept, greeting, reads and writes, the input
 *                loop, timers, TLS, the one function that changes state,
 *                close
 *   smtp_cmd.c   the command table {verb, states allowed, check, filter
 *                phase, proceed} and the commands that are not about the
 *                message text (HELO/EHLO, MAIL, RCPT, AUTH, STARTTLS, ...)
 *   smtp_data.c  the transaction (created at MAIL, freed in one place) and
 *                its message: DATA and BDAT, the text's limits, the end of
 *                data and the spool commit
 *   smtp_gate.c  the filter gate: a phase is run, its verdict applied, and
 *                a pending verdict resumes the step that waited for it
 *
 * A command is checked, filtered, then carried out (OpenSMTPD's
 * smtp_session.c): check runs once and keeps what it parsed in the
 * session's struct pst__args; if a filter's verdict is pending, the verdict
 * resumes proceed with those arguments, so nothing runs twice.
 *
 * Ownership: the session owns its transaction (s->tx, at most one), which
 * owns the envelope, the spool message being written and the message
 * model; pst__tx_free is the one place they are freed. While a commit is
 * in flight the spool owns the message and the transaction stays until
 * the commit's callback.
 */
#ifndef PST_GATEWAY_SMTP_INT_H
#define PST_GATEWAY_SMTP_INT_H

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/envelope.h"
#include "core/log.h"
#include "core/tbuf.h"
#include "filters/chain.h"
#include "gateway/auth.h"
#include "gateway/dotstream.h"
#include "gateway/parse.h"
#include "gateway/reply.h"
#include "gateway/smtp.h"
#include "queue/spool.h"

#define PST_IN_CAP (64 * 1024)      /* input while message text streams */
#define PST_IN_SMALL (4 * 1024)     /* otherwise: > PST_LINE_MAX_ANY */
#define PST_OUT_HIGH (32 * 1024)    /* replies pending before input pauses */
#define PST_OUT_KEEP (4 * 1024)     /* a reply buffer kept between writes */
#define PST_SOCK_SNDBUF (32 * 1024) /* SO_SNDBUF (Linux doubles it) */
#define PST_HELO_MAX 255
#define PST_SPACE_CHECK (1024 * 1024) /* text octets between disk checks */
#define PST_TLS_CIN (32 * 1024)     /* ciphertext read buffer */
#define PST_SCRATCH (2 * PST_IN_CAP + 2)    /* decoded text of one read */

/* What the session is doing with its input (pst__smtp_state changes it). */
enum pst__sst {
    ST_PROXY,                       /* reading a PROXY protocol header */
    ST_LOOKUP,                      /* client name lookup before greeting */
    ST_CMD,                         /* waiting for a command line */
    ST_DATA,                        /* DATA text until CRLF.CRLF */
    ST_BDAT,                        /* bdat_left octets of chunk text */
    ST_COMMIT,                      /* spool commit in flight */
    ST_FILTER,                      /* a filter verdict is pending */
    ST_TLS,                         /* TLS handshake in progress */
    ST_AUTH,                        /* waiting for a SASL response line */
    ST_AUTH_CHECK,                  /* password check in the auth pool */
};

enum pst__sasl { SASL_NONE, SASL_PLAIN, SASL_LOGIN_USER, SASL_LOGIN_PASS };

/* Why a message is refused after its data (first problem wins). */
enum pst__fail {
    MF_NONE,
    MF_TOO_BIG,
    MF_LONG_LINE,
    MF_BARE_NEWLINE,
    MF_HOPS,
    MF_WRITE,
    MF_NOSPACE,
    MF_MIME_LIMIT,
};

/* A small scanner over the header section of the text as it is stored:
 * counts Received fields (hop limit) and finds the end of the header. */
struct pst__hdrscan {
    bool done;                      /* blank line seen */
    bool bol;                       /* at the start of a line */
    size_t plen;                    /* prefix bytes collected */
    char prefix[11];                /* "received:", "date:", "message-id:" */
    unsigned received;
    bool date, msgid;               /* Date: / Message-ID: present */
};

/* The transaction: MAIL to the 250 (or refusal) of its message, or RSET. */
struct pst__tx {
    struct pst_envelope env;        /* what filters and the spool see */
    unsigned rcpt_tried;            /* RCPT commands checked */
    /* the message, from DATA or the first BDAT chunk */
    struct pst_spool_msg *msg;      /* being written; NULL once committed */
    char qid[PST_QID_LEN + 1];
    struct pst_dot dot;
    char *scratch;                  /* dotstream output, PST_SCRATCH */
    struct pst__hdrscan hs;
    enum pst__fail fail;
    bool data_used, bdat_used;      /* DATA, or BDAT, opened the message */
    uint64_t bdat_octets;           /* chunk octets received, for replies */
    uint64_t space_checked;         /* text octets at the last disk check */
    uint64_t eod_us;                /* monotonic: the end of data */
    bool held;                      /* quarantined: committed into hold/ */
    /* with mime.policy = reject and no filters: the message model */
    struct pst_mime_parser *mp;
};

struct pst__command;

/* A command between its check and its proceed: what check parsed, copied
 * (the input buffer may move while a filter's verdict is pending). */
struct pst__args {
    const struct pst__command *cmd;
    /* the line and the argument's text in the input buffer: valid only
     * until the line is done with, so only for commands without a filter
     * phase */
    const char *line, *text;
    size_t line_len, text_len;
    union {
        struct {
            char name[PST_HELO_MAX + 1];    /* sanitised */
            bool ehlo;
        } helo;
        struct {
            struct pst_path path;
            struct pst_mail_params mp;
        } mail;
        struct {
            struct pst_path path;
            struct pst_rcpt_params rp;
        } rcpt;
        struct {
            uint64_t size;
            bool last;
            bool malformed;
        } bdat;
    } u;
};

/* The step a filter phase leads to (now, or when its verdict arrives). */
typedef void (*pst__next_fn)(struct pst_session *s);

struct pst_session {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct pst_session *prev, *next;
    struct pst_server *srv;
    struct pst_gen *gen;            /* referenced for the session's life */
    const struct pst_conf *conf;    /* gen->conf */
    const struct pst_listener_conf *lc;
    uint64_t id;
    struct pst_ip ip;               /* the client: the peer, or the one a
                                       PROXY header names */
    char ipstr[PST_IP_STRLEN];
    unsigned port;                  /* the client's TCP port */
    struct pst_proxy *proxy;        /* while the PROXY header is read */
    uint64_t proxy_deadline;        /* loop ms: the header is due */
    char *client_name;              /* confirmed reverse DNS or "unknown" */
    char *ptr_name;                 /* PTR answer awaiting confirmation */
    struct pst_dns_query *dnsq;     /* cancelled at close */
    char *helo;                     /* sanitised */
    bool esmtp;
    bool trusted;                   /* in relay.trusted_networks */
    bool ip_counted;                /* in srv->ipcount */
    struct pst_metric *m_open;      /* the listener's open sessions gauge,
                                       counted while set */

    enum pst__sst st;               /* only pst__smtp_state writes it */
    unsigned handles;               /* open uv handles */
    bool closing;
    bool quitting;                  /* QUIT answered: close after flush */
    bool draining;                  /* 421 4.3.2 once no transaction is open */
    bool reading;
    bool peer_eof;                  /* the client's EOF came during a
                                     * commit: seen once its input is done */
    unsigned errors;
    uint64_t cmd_deadline;          /* loop ms: the next command is due */
    uint64_t due;                   /* loop ms: the state's timeout, 0 none */
    uint64_t timer_due;             /* loop ms the timer is armed for, or 0 */
    unsigned log_used;              /* command lines logged at info since
                                       the last accepted message */
    uint64_t log_suppressed;        /* and those past the budget */

    char *in;                       /* in_cap: PST_IN_SMALL or PST_IN_CAP,
                                       or 0 with nothing buffered */
    size_t in_pos, in_len, in_cap;
    bool skip_line;                 /* discarding an overlong command */
    struct pst_tbuf out;            /* replies not yet written */
    size_t out_inflight;

    struct pst__tx *tx;             /* the transaction, or NULL */
    struct pst_envelope facts;      /* client facts for the filters that
                                       run outside a transaction */
    struct pst__args args;          /* the command being carried out */

    /* the BDAT chunk being read (with or without a transaction) */
    uint64_t bdat_left;
    bool bdat_last;
    bool bdat_discard;              /* read only to keep the framing */
    /* RFC 3030 2: once a chunk of a transaction has failed, the chunks
     * the client pipelined behind it are read and refused with the same
     * reply, until RSET, MAIL, HELO/EHLO or a LAST chunk */
    bool bdat_refusing;
    enum pst_reply bdat_refusal;
    uint64_t text_deadline;         /* loop ms: the text being read is due */

    /* filters (filters/chain.h): fs is NULL when the chain is empty */
    struct pst_fsess *fs;
    struct pst_fres fres;           /* the last phase's verdict */
    enum pst_fphase gate_phase;     /* the phase whose verdict is pending */
    pst__next_fn gate_next;         /* and the step that waits for it */
    enum pst__sst gate_saved;       /* the state to go back to */

    /* TLS (tls.c): once tls is set, reads land in cin as ciphertext and
     * come out as plaintext in in; flush() encrypts */
    struct pst_tls *tls;
    char *cin;                      /* cin_cap: PST_TLS_CIN while text
                                       streams, else PST_IN_SMALL */
    size_t cin_cap;
    bool tls_start;                 /* STARTTLS answered: begin after flush */
    bool tls_reject;                /* over a limit: 421 once TLS is up */
    uint64_t tls_deadline;          /* loop ms: handshake must be done */
    char *tls_desc;                 /* for Received and logs */

    /* AUTH (auth.c) */
    char *auth_login;               /* authenticated as, or NULL */
    enum pst__sasl sasl;
    char sasl_user[PST_AUTH_FIELD_MAX + 1];
};

/* One log line of the session: sess=, then msg= once a message has a queue
 * id, then the event. */
#define SLOG(lvl, s, fmt, ...)                                                 \
    pst_log(lvl, "sess=%016" PRIx64 "%s%s " fmt, (s)->id,                     \
            (s)->tx && (s)->tx->qid[0] ? " msg=" : "",                        \
            (s)->tx ? (s)->tx->qid : "", __VA_ARGS__)

/* ---- smtp.c: the session ---- */
/* pst__smtp_reply - append reply r (arg for its %s); 4xx/5xx count as
 * errors. */
void pst__smtp_reply(struct pst_session *s, enum pst_reply r,
                     const char *arg);
/*
 * pst__smtp_cmd_level - the level of a command's success line (event=helo,
 * mail, rcpt, and the filters' info lines of those phases): info while the session has logged fewer than
 * logging.session_lines of them since its last accepted message, debug
 * past that (counted, and summed up by the disconnect line). The client
 * decides how many commands it sends; this bounds what it writes to the
 * log between two messages.
 */
enum pst_log_level pst__smtp_cmd_level(struct pst_session *s);
/* pst__smtp_cmd_refill - a message was accepted: the budget is whole
 * again. */
void pst__smtp_cmd_refill(struct pst_session *s);
/* pst__smtp_state - the one place the session's state changes; entering
 * ST_CMD from another state starts the command timeout. */
void pst__smtp_state(struct pst_session *s, enum pst__sst st);
/* pst__smtp_process - take the input that is buffered as far as the state
 * allows, write the replies, and read again if the state wants input. */
void pst__smtp_process(struct pst_session *s);
/* pst__smtp_free - free a session whose handles are closed (the commit's
 * callback, for a client that left during the commit). */
void pst__smtp_free(struct pst_session *s);
/* pst__smtp_greeting - the 220. */
void pst__smtp_greeting(struct pst_session *s);
/* pst__smtp_streaming - message text is arriving (or will, once a pending
 * headers-phase verdict is in). */
bool pst__smtp_streaming(const struct pst_session *s);

/* ---- smtp_cmd.c: commands ---- */
/* pst__cmd_line - carry out one command line (CRLF removed). */
void pst__cmd_line(struct pst_session *s, const char *line, size_t len);
/* pst__cmd_overlong - a command line over the longest allowed; start is
 * what is buffered of it. */
void pst__cmd_overlong(struct pst_session *s, const char *start, size_t len);
/* pst__cmd_sasl_line - one SASL response line (ST_AUTH). */
void pst__cmd_sasl_line(struct pst_session *s, const char *line,
                        size_t len);
/* pst__cmd_sasl_overlong - a SASL response line too long. */
void pst__cmd_sasl_overlong(struct pst_session *s);

/* ---- smtp_data.c: the transaction and its message ---- */
/* pst__tx_new - MAIL's transaction: the envelope (sender and MAIL's
 * parameters, the client facts); from now the filters read it. */
void pst__tx_new(struct pst_session *s, const struct pst_path *sender,
                 const struct pst_mail_params *mp);
/* pst__tx_free - the one place a transaction ends: its message aborted if
 * not committed, its envelope, model and buffers freed. */
void pst__tx_free(struct pst_session *s);
/* pst__space_ok - the spool's disk keeps limits.disk_free_min after need
 * more octets. */
bool pst__space_ok(struct pst_session *s, uint64_t need);
/* DATA and BDAT in the command table (check, proceed). */
bool pst__data_check(struct pst_session *s, const struct pst_cmd *c,
                     struct pst__args *a);
void pst__data_proceed(struct pst_session *s, struct pst__args *a);
bool pst__bdat_check(struct pst_session *s, const struct pst_cmd *c,
                     struct pst__args *a);
void pst__bdat_proceed(struct pst_session *s, struct pst__args *a);
/* pst__bdat_unreadable - a BDAT line whose chunk size cannot be read:
 * 421 and close (docs/SMTP.md). */
void pst__bdat_unreadable(struct pst_session *s, const char *line,
                          size_t len);
/* pst__bdat_refuse_end - the client has moved on from a failed BDAT
 * transaction (RSET, MAIL, HELO/EHLO, TLS, or its LAST chunk). */
void pst__bdat_refuse_end(struct pst_session *s);
/* pst__data_step, pst__bdat_step - take DATA text, or BDAT chunk octets,
 * from the input; true if anything was taken or done. */
bool pst__data_step(struct pst_session *s);
bool pst__bdat_step(struct pst_session *s);

/* ---- smtp_gate.c: the filter gate ---- */
/*
 * pst__gate - run filter phase ph (arg: HELO name, sender, recipient or
 * NULL) and go on with next(s) when the chain lets the session go on: at
 * once, or when a pending verdict arrives (the session waits in ST_FILTER
 * meanwhile). A refusal is answered here, with its effect on the session
 * (no greeting after CONNECT, no transaction after MAIL or EOM). s->fres
 * holds the verdict (its rewrites) while next runs. PST_FP_HEADERS has no
 * next: its verdict is the chain's to keep until the end of data.
 */
void pst__gate(struct pst_session *s, enum pst_fphase ph, const char *arg,
               pst__next_fn next);
/* pst__gate_verdict - the chain's callback for a pending verdict. */
void pst__gate_verdict(void *arg, const struct pst_fres *r);

#endif
