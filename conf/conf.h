/*
 * conf.h - the configuration generation: one immutable object built from a
 * libconfig file, validated whole at load, and shared by reference.
 *
 * Lifetime: pst_conf_load returns a generation with one reference. Sessions
 * take a reference at accept (pst_conf_ref) and drop it at close, so a
 * reload can swap the server's current generation while old sessions finish
 * on the one they started with. Nothing in a generation changes after load.
 *
 * Relative paths in the file are resolved against the working directory at
 * load and stored absolute (the process may chdir or drop privileges later).
 *
 * Every setting, its default and its range is listed in docs/CONFIG.md.
 */
#ifndef PST_CONF_CONF_H
#define PST_CONF_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "core/mime.h"
#include "core/net.h"
#include "core/util.h"

enum pst_tls_mode { PST_TLS_NONE, PST_TLS_STARTTLS, PST_TLS_IMPLICIT };
enum pst_bare_newline { PST_BARE_NORMALIZE, PST_BARE_REJECT };

struct pst_listener_conf {
    char *address;                  /* "127.0.0.1", "::1", "0.0.0.0", "::" */
    unsigned port;
    enum pst_tls_mode tls;          /* default starttls when tls certs are
                                       configured, else none */
    bool auth;                      /* offer AUTH on this listener */
    bool auth_plaintext;            /* allow AUTH without TLS */
    bool auth_required;             /* MAIL needs AUTH (530 5.7.0) unless
                                       the client is trusted (RFC 6409) */
    bool proxy;                     /* a PROXY protocol header first */
    struct pst_cidr *proxy_trusted; /* the proxies that may send it */
    size_t nproxy_trusted;
    int line;                       /* source line, for messages */
};

struct pst_limits {
    uint64_t message_size;          /* SIZE; 552 5.3.4 beyond */
    unsigned recipients;            /* per message; 452 4.5.3 beyond */
    unsigned text_line_max;         /* octets per message line; 552 5.3.4 */
    unsigned hops;                  /* Received headers; 554 5.4.6 beyond */
    unsigned sessions;              /* concurrent; 421 4.7.0 at greeting */
    unsigned sessions_per_ip;
    unsigned ipv6_prefix;           /* IPv6 clients counted per prefix */
    unsigned errors;                /* per session before 421 4.7.0 */
    unsigned command_timeout;       /* seconds waiting for a command */
    unsigned data_block_timeout;    /* seconds waiting for a data block */
    unsigned data_timeout;          /* seconds for all of DATA/BDAT */
    unsigned tls_handshake_timeout; /* seconds */
    unsigned proxy_timeout;         /* seconds for a PROXY header */
    uint64_t disk_free_min;         /* bytes free in the spool, 452 4.3.1 */
    unsigned drain_timeout;         /* seconds a SIGTERM drain may take */
};

struct pst_smtp_conf {
    enum pst_bare_newline bare_newline;
    char *banner;                   /* text after "220 hostname ESMTP" */
    bool reverse_dns;               /* look up (and confirm) client names */
    bool add_missing_headers;       /* Date, Message-ID for trusted and
                                       authenticated clients (RFC 6409 8) */
};

struct pst_relay_domain {
    char *domain;                   /* lowercase A-label, no trailing dot */
    char *recipients_file;          /* NULL: any local part accepted */
};

struct pst_relay_conf {
    struct pst_cidr *trusted;       /* trusted_networks */
    size_t ntrusted;
    struct pst_relay_domain *domains;
    size_t ndomains;
};

struct pst_tls_cert {
    char *cert_file;                /* PEM chain */
    char *key_file;
};

struct pst_tls_conf {
    struct pst_tls_cert *certs;     /* first is the default; others by SNI */
    size_t ncerts;
    char *min_version;              /* "TLSv1.2" (default) or "TLSv1.3" */
    char *ciphers;                  /* TLS 1.2 cipher list */
    char *ciphersuites;             /* TLS 1.3 suites */
    bool session_tickets;           /* resumption by tickets (default on) */
    unsigned session_timeout;       /* seconds a session can be resumed;
                                       ticket keys rotate as often */
};

struct pst_auth_conf {
    char *password_file;            /* user:crypt-hash lines; NULL: no AUTH */
    char *sender_login_map;         /* NULL: any sender for any login */
    unsigned workers;               /* crypt worker threads */
    unsigned max_failures_per_ip;
    unsigned max_failures_per_login;
    unsigned failure_window;        /* seconds */
    unsigned failure_entries;       /* counters per failure table */
};

struct pst_log_conf {
    int level;                      /* enum pst_log_level */
    int format;                     /* enum pst_log_format */
    bool syslog;
    int facility;                   /* LOG_MAIL by default */
    unsigned session_lines;         /* a session's command lines at info
                                       level between accepted messages */
};

/* The metrics endpoint (gateway/metrics_http.c, docs/OPERATIONS.md). */
struct pst_metrics_conf {
    bool enabled;                   /* off by default */
    char *address;                  /* loopback by default */
    unsigned port;
};

struct pst_queue_conf {
    char *directory;                /* spool root, created 0700 */
    char *control_socket;           /* default <directory>/control.sock */
    char *control_group;            /* group allowed to use the CLI */
    uint64_t segment_size;          /* bytes of a log segment file */
};

/* STARTTLS policy toward a next hop (queue/smtp_client.c). */
enum pst_dtls { PST_DTLS_INHERIT, PST_DTLS_NONE, PST_DTLS_MAY,
                PST_DTLS_ENCRYPT, PST_DTLS_VERIFY };
/* 8-bit text to a hop without 8BITMIME. */
enum pst_8bit { PST_8BIT_CONVERT, PST_8BIT_BOUNCE };

struct pst_route_conf {
    char *domain;                   /* "example.com" or ".example.com" */
    char *route;                    /* same forms as default_route */
    enum pst_dtls tls;              /* INHERIT: delivery.tls */
    char *tls_name;                 /* name to verify; NULL: see CONFIG.md */
    char *auth_user;                /* AUTH PLAIN/LOGIN to this hop */
    char *auth_password;
    bool auth_plaintext;            /* allow AUTH without TLS */
    unsigned concurrency;           /* 0: delivery.destination_concurrency */
    unsigned rate;                  /* messages per rate_period, 0: none */
    unsigned rate_period;           /* seconds */
    int line;
};

struct pst_delivery_conf {
    char *default_route;            /* "maildir:DIR", "smtp:host:port", ... */
    struct pst_route_conf *routes;  /* first match wins, exact before .dom */
    size_t nroutes;
    unsigned retry_min;             /* seconds */
    unsigned retry_max;             /* seconds */
    unsigned lifetime;              /* seconds before a bounce */
    unsigned concurrency;           /* deliveries in flight, all routes */
    unsigned destination_concurrency; /* connections per next hop */
    unsigned dead_host_backoff;     /* seconds a failed hop is skipped */
    unsigned mx_port;               /* port of MX hosts (25; tests) */
    unsigned recipients_per_transaction;
    unsigned messages_per_connection;
    unsigned idle_timeout;          /* seconds a reusable connection waits */
    char *helo_name;                /* NULL: hostname */
    enum pst_dtls tls;              /* default STARTTLS policy */
    char *tls_ca_file;              /* verify: CA bundle (PEM) */
    char *tls_cert_file;            /* client certificate, optional */
    char *tls_key_file;
    unsigned tls_session_cache;     /* sessions kept to resume; 0: none */
    unsigned tls_session_timeout;   /* seconds one is kept at most */
    enum pst_8bit eight_bit;
    unsigned connect_timeout;       /* RFC 5321 4.5.3.2 client timeouts */
    unsigned greeting_timeout;
    unsigned helo_timeout;
    unsigned mail_timeout;
    unsigned rcpt_timeout;
    unsigned data_timeout;          /* the 354 reply */
    unsigned data_block_timeout;
    unsigned final_timeout;         /* reply to the final dot */
    unsigned reply_lines_max;       /* multi-line reply cap */
    uint64_t bounce_size_max;       /* RET=FULL beyond: headers only */
    unsigned delay_warning;         /* seconds; 0 = no delay DSNs */
};

struct pst_resolver_ns {
    char *address;                  /* "IP", "IP:PORT", "[IPv6]:PORT" */
};

struct pst_resolver_conf {
    struct pst_resolver_ns *nameservers; /* none: /etc/resolv.conf */
    size_t nnameservers;
    unsigned timeout;               /* milliseconds per try */
    unsigned tries;
};

/*
 * The message model's limits (core/mime.h) and what a hit means. With
 * `reject`, a message whose model carries any PST_MIME_F_LIMITS flag is
 * refused at the end of DATA with 554 5.6.0; with `flag` (the default) it
 * goes on to the filters, which see the flags.
 */
enum pst_mime_policy { PST_MIME_POLICY_FLAG, PST_MIME_POLICY_REJECT };

struct pst_mime_conf {
    enum pst_mime_policy policy;
    struct pst_mime_limits limits;  /* defaults = pst_mime_limits_default */
};

struct pst_conf {
    unsigned refs;                  /* touched on the loop thread only */
    char *path;                     /* the file this came from */
    char *hostname;                 /* default: the system's FQDN */
    char *authserv_id;              /* RFC 8601 authserv-id of the
                                       Authentication-Results postern
                                       writes and trusts; NULL: hostname */
    char *user;                     /* drop to this user when run as root */
    char *group;
    struct pst_listener_conf *listeners;
    size_t nlisteners;
    struct pst_limits limits;
    struct pst_smtp_conf smtp;
    struct pst_relay_conf relay;
    struct pst_tls_conf tls;
    struct pst_auth_conf auth;
    struct pst_log_conf log;
    struct pst_queue_conf queue;
    struct pst_delivery_conf delivery;
    struct pst_resolver_conf resolver;
    struct pst_mime_conf mime;
    struct pst_metrics_conf metrics;
    void *filters;                  /* struct pst_chain * (filters/chain.h),
                                       built by the filters hook, or NULL */
};

/*
 * pst_conf_load - parse and validate path. On any error returns NULL and
 * fills err with every problem found ("file:line: text"), so check-config
 * can report them all.
 */
struct pst_conf *pst_conf_load(const char *path, struct pst_err *err);
struct pst_conf *pst_conf_ref(struct pst_conf *c);
void pst_conf_unref(struct pst_conf *c);

/*
 * The `filters` section is parsed by filters/, which sits above conf/: it
 * registers its loader here once at startup (pst_filters_setup). Without
 * one, a `filters` section is an error. load gets the libconfig setting
 * (const config_setting_t *) and the file name for messages, and reports
 * its errors into err; free releases what load built.
 */
struct pst_conf_hook {
    /* load - build the filters from setting, once the rest of c is loaded
     * and valid (modules read its host name, authserv-id, resolver) */
    int (*load)(const void *setting, const char *file,
                const struct pst_conf *c, void **out, struct pst_err *err);
    void (*free)(void *obj);
};
void pst_conf_set_filters_hook(const struct pst_conf_hook *h);

struct pst_dns;
/* pst_conf_dns_new - a resolver (core/dns.h) with c's resolver settings,
 * keeping PTR and address answers for their TTL (the gateway's: a client
 * that comes back is not looked up again). */
int pst_conf_dns_new(struct pst_dns **dp, uv_loop_t *loop,
                     const struct pst_conf *c, struct pst_err *err);

/* pst_conf_defaults - a generation with every default, no file. */
struct pst_conf *pst_conf_defaults(void);

/*
 * pst_conf_print - c in libconfig syntax (it loads back to the same
 * generation); only_changed: only what differs from pst_conf_defaults(),
 * as `postern -n -c FILE` prints.
 */
void pst_conf_print(FILE *f, const struct pst_conf *c, bool only_changed);

/*
 * pst_conf_setting_write - one libconfig setting's value (a group, list,
 * array or scalar) in libconfig syntax, such that "x = TEXT;" reads back
 * to an equal setting: how a module's settings reach a helper process
 * that configures itself from them (filters/attach_jail.c).
 */
void pst_conf_setting_write(FILE *f, const void *setting);  /* a
                                           const config_setting_t * */

#endif
