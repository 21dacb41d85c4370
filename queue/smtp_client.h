/*
 * smtp_client.h - one outbound SMTP or LMTP connection on the libuv loop:
 * the protocol engine under the delivery manager (queue/deliver.c).
 *
 * A connection is opened to one address, reads the greeting, says EHLO
 * (HELO when EHLO is refused; LHLO for LMTP), negotiates STARTTLS by the
 * hop's policy, authenticates if configured, then reports ready. Each
 * pst_smtpc_send runs one message (one or more transactions) and sets a
 * result for every recipient given; the connection can then carry another
 * message (reuse) or be closed with pst_smtpc_close.
 *
 * Ownership: the caller owns the connection from open until close; after
 * pst_smtpc_close no callback runs and memory goes with the handle's close
 * callback. Callbacks are never called from inside the call that started
 * the operation.
 *
 * Limits: reply lines 2048 octets, reply_lines_max lines per reply; the
 * text kept per recipient is PST_SMTPC_TEXT octets.
 */
#ifndef PST_QUEUE_SMTP_CLIENT_H
#define PST_QUEUE_SMTP_CLIENT_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "conf/conf.h"
#include "core/envelope.h"
#include "core/mime.h"

#define PST_SMTPC_TEXT 256

struct pst_tls_sessions;

/* What one hop is: copied by the caller's destination, shared by all its
 * connections (the pointer must outlive them). */
struct pst_smtpc_opts {
    bool lmtp;
    const char *helo;
    enum pst_dtls tls;              /* resolved: never INHERIT */
    const char *tls_name;           /* certificate name to check (verify)
                                       and SNI; NULL: no SNI, IP check */
    SSL_CTX *ssl_ctx;               /* NULL: tls must be none; set up
                                       by pst_smtpc_ssl_ctx_init */
    struct pst_tls_sessions *sessions; /* sessions to resume (queue/
                                       tls_sessions.h); NULL: none */
    const char *auth_user;          /* NULL: no AUTH */
    const char *auth_password;
    bool auth_plaintext;
    enum pst_8bit eight_bit;
    const struct pst_mime_limits *mime_limits; /* the gateway's, so the
                                       downgrade's model is the filters';
                                       copied at open; NULL: defaults */
    unsigned rcpts_per_txn;
    unsigned reply_lines_max;
    /* seconds, RFC 5321 4.5.3.2 */
    unsigned t_connect, t_greeting, t_helo, t_mail, t_rcpt, t_data,
        t_block, t_final;
};

enum pst_smtpc_res {
    PST_SMTPC_PENDING = 0,
    PST_SMTPC_OK,
    PST_SMTPC_TEMP,
    PST_SMTPC_PERM,
};

struct pst_smtpc_rcpt {
    const struct pst_rcpt *rcpt;    /* address, ORCPT, NOTIFY */
    enum pst_smtpc_res res;         /* set by send */
    bool final;                     /* OK by an LMTP server: delivered */
    bool notify_passed;             /* the hop offered DSN: it reports */
    char text[PST_SMTPC_TEXT];      /* "host[ip] said: 550 5.1.1 ..." */
};

struct pst_smtpc;

/* Body source: read up to len bytes of the stored message (canonical CRLF,
 * not dot-stuffed) into buf and later call done(c, n) on the loop: n > 0
 * bytes, 0 at the end, < 0 an error (-errno). rewind is synchronous. */
typedef void (*pst_smtpc_read_done)(struct pst_smtpc *c, ssize_t n);
struct pst_smtpc_body {
    void *arg;
    void (*read)(void *arg, void *buf, size_t len, struct pst_smtpc *c,
                 pst_smtpc_read_done done);
    int (*rewind)(void *arg);
    uint64_t size;
};

struct pst_smtpc_msg {
    const char *qid;                /* for logs */
    const struct pst_envelope *env;
    struct pst_smtpc_rcpt *rcpts;
    size_t n;
    struct pst_smtpc_body body;
};

/* status 0: ready for messages. Otherwise -errno / -EPROTO with text for
 * every recipient ("connect to ... failed: ..."); perm: the hop refused us
 * permanently (5xx greeting or EHLO+HELO) - still tried on other hosts. */
typedef void (*pst_smtpc_open_cb)(void *arg, struct pst_smtpc *c, int status,
                                  bool perm, const char *text);
/* Every recipient of m has a result; reusable: another send may follow. */
typedef void (*pst_smtpc_sent_cb)(void *arg, struct pst_smtpc *c,
                                  bool reusable);

/*
 * pst_smtpc_open - connect to sa (AF_INET/AF_INET6/AF_UNIX). peer: the
 * name for texts and logs ("mx.example.org"). Always calls cb once, later,
 * unless the connection is closed before.
 */
struct pst_smtpc *pst_smtpc_open(uv_loop_t *loop,
                                 const struct pst_smtpc_opts *o,
                                 const struct sockaddr *sa, const char *peer,
                                 pst_smtpc_open_cb cb, void *arg);
/* pst_smtpc_send - deliver m on a ready connection; cb once, later. */
void pst_smtpc_send(struct pst_smtpc *c, struct pst_smtpc_msg *m,
                    pst_smtpc_sent_cb cb, void *arg);
/* The connection died while idle (the peer closed it, a timeout): cb
 * runs once; c is gone when it returns (do not close it). */
typedef void (*pst_smtpc_gone_cb)(void *arg, struct pst_smtpc *c);
void pst_smtpc_on_gone(struct pst_smtpc *c, pst_smtpc_gone_cb cb, void *arg);
/* pst_smtpc_close - QUIT if idle and usable, then close; no more callbacks. */
void pst_smtpc_close(struct pst_smtpc *c);
/* pst_smtpc_tls - the connection is encrypted (for logs and tests). */
bool pst_smtpc_tls(const struct pst_smtpc *c);
/* pst_smtpc_tls_resumed - its TLS session was resumed, not new. */
bool pst_smtpc_tls_resumed(const struct pst_smtpc *c);
/*
 * pst_smtpc_ssl_ctx_init - what the engine needs of a client SSL_CTX: the
 * sessions the servers give are handed to the connection's
 * o->sessions (OpenSSL keeps none itself). Call once per context.
 */
void pst_smtpc_ssl_ctx_init(SSL_CTX *ctx);

#endif
