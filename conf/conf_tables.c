/*
 * conf_tables.c - postern's directive tables (every setting, its type,
 * default and range) and the checks that span more than one setting.
 *
 * docs/CONFIG.md documents exactly these tables; change both together.
 * Defaults that depend on the machine or on other settings (hostname,
 * queue.control_socket, the default listener, a listener's tls and auth)
 * are filled in by pst__conf_finish after the whole file is read, because
 * libconfig gives sections in file order and "tls" may follow "listeners".
 */
#include "conf/conf_table.h"

#include <ctype.h>
#include <grp.h>
#include <pwd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include "core/domain.h"
#include "core/log.h"

#define OFF(type, field) offsetof(struct type, field)
#define DAY 86400u

/* ---- checks of single values (fix hooks) ---- */

static void
fix_error(struct pst__ctx *x, const config_setting_t *s, const char *name,
          const char *fmt, const char *v, const char *why)
{
    pst__conf_error(x, s, fmt, name, v, why);
}

/*
 * domain_check - a DNS name in A-label form: labels of 1..63 letters,
 * digits and hyphens (not at either end), 253 octets at most. Returns NULL
 * or what is wrong.
 */
static const char *
domain_check(const char *d)
{
    size_t len = strlen(d), label = 0;
    if (len == 0)
        return "empty";
    if (len > 253)
        return "longer than 253 characters";
    for (const char *p = d; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch >= 0x80)
            return "not ASCII; write the A-label (xn--...)";
        if (ch == '.') {
            if (label == 0)
                return "empty label";
            if (p[-1] == '-')
                return "label ends with '-'";
            label = 0;
            continue;
        }
        if (!isalnum(ch) && ch != '-')
            return "only letters, digits, '-' and '.' are allowed";
        if (ch == '-' && label == 0)
            return "label starts with '-'";
        if (++label > 63)
            return "label longer than 63 characters";
    }
    if (label == 0)
        return "empty label";
    if (d[len - 1] == '-')
        return "label ends with '-'";
    return NULL;
}

static int
fix_hostname(struct pst__ctx *x, const config_setting_t *s, const char *where,
             char **v)
{
    const char *why = domain_check(*v);
    if (why != NULL) {
        fix_error(x, s, where, "%s: \"%s\" is not a host name: %s", *v, why);
        return -1;
    }
    return 0;
}

/*
 * fix_domain - relay domains: lowercase, one trailing dot removed, a
 * U-label (IDN) converted to its A-label (core/domain.h), so the policy
 * compares one form.
 */
static int
fix_domain(struct pst__ctx *x, const config_setting_t *s, const char *where,
           char **v)
{
    char *d = *v;
    size_t len = strlen(d);
    const char *why;
    char canon[PST_DOMAIN_BUF];

    if (pst_domain_canon(d, len, canon) < 0) {
        fix_error(x, s, where, "%s: \"%s\" is not a domain: %s", d,
                  "not a valid domain or IDN");
        return -1;
    }
    free(*v);
    *v = d = pst_xstrdup(canon);
    why = domain_check(d);
    if (why != NULL) {
        fix_error(x, s, where, "%s: \"%s\" is not a domain: %s", d, why);
        return -1;
    }
    return 0;
}

/* fix_ip - a listener address: an IP literal, stored in canonical form. */
static int
fix_ip(struct pst__ctx *x, const config_setting_t *s, const char *where,
       char **v)
{
    struct pst_ip ip;
    char buf[PST_IP_STRLEN];

    if (pst_ip_parse(&ip, *v) < 0) {
        fix_error(x, s, where, "%s: \"%s\" is not an IPv4 or IPv6 address%s",
                  *v, "");
        return -1;
    }
    free(*v);
    *v = pst_xstrdup(pst_ip_str(&ip, buf, sizeof(buf)));
    return 0;
}

static int
fix_user(struct pst__ctx *x, const config_setting_t *s, const char *where,
         char **v)
{
    if (getpwnam(*v) == NULL) {
        fix_error(x, s, where, "%s: no such user \"%s\"%s", *v, "");
        return -1;
    }
    return 0;
}

static int
fix_group(struct pst__ctx *x, const config_setting_t *s, const char *where,
          char **v)
{
    if (getgrnam(*v) == NULL) {
        fix_error(x, s, where, "%s: no such group \"%s\"%s", *v, "");
        return -1;
    }
    return 0;
}

static int
parse_port(const char *p, unsigned *port)
{
    unsigned long v = 0;
    if (*p == '\0' || strlen(p) > 5)
        return -1;
    for (; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return -1;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *port = (unsigned)v;
    return 0;
}

/*
 * route_check - "HOST:PORT" or "[IP]:PORT" after "smtp:" or "lmtp:".
 * Returns NULL or what is wrong.
 */
static const char *
route_hostport(const char *hp)
{
    const char *colon;
    unsigned port;

    if (hp[0] == '[') {
        const char *close = strchr(hp, ']');
        char lit[PST_IP_STRLEN + 8];
        struct pst_ip ip;
        if (close == NULL)
            return "missing ']'";
        if ((size_t)(close - hp - 1) >= sizeof(lit))
            return "bad IP address in [ ]";
        memcpy(lit, hp + 1, (size_t)(close - hp - 1));
        lit[close - hp - 1] = '\0';
        if (pst_ip_parse(&ip, lit) < 0)
            return "bad IP address in [ ]";
        if (close[1] != ':')
            return "missing :PORT";
        return parse_port(close + 2, &port) < 0 ? "port must be 1..65535"
                                                : NULL;
    }
    colon = strrchr(hp, ':');
    if (colon == NULL)
        return "missing :PORT";
    if (parse_port(colon + 1, &port) < 0)
        return "port must be 1..65535";
    char host[256];
    if ((size_t)(colon - hp) >= sizeof(host))
        return "host name too long";
    memcpy(host, hp, (size_t)(colon - hp));
    host[colon - hp] = '\0';
    if (strchr(host, ':') != NULL)
        return "write an IPv6 address as [ADDRESS]";
    const char *why = domain_check(host);
    return why ? "bad host name" : NULL;
}

/*
 * fix_route - delivery.default_route. maildir:DIR is what delivery does
 * today; smtp:, lmtp: and mx are accepted so configs can be written ahead of
 * the delivery client. Relative directories and socket paths are made
 * absolute.
 */
static int
fix_route(struct pst__ctx *x, const config_setting_t *s, const char *where,
          char **v)
{
    const char *r = *v, *why = NULL;

    if (strncmp(r, "maildir:", 8) == 0) {
        if (r[8] == '\0') {
            why = "maildir: needs a directory";
        } else {
            char *dir = pst__conf_abspath(x, r + 8);
            char *nv = pst_xasprintf("maildir:%s", dir);
            free(dir);
            free(*v);
            *v = nv;
            return 0;
        }
    } else if (strncmp(r, "lmtp:unix:", 10) == 0) {
        if (r[10] == '\0') {
            why = "lmtp:unix: needs a socket path";
        } else {
            char *p = pst__conf_abspath(x, r + 10);
            char *nv = pst_xasprintf("lmtp:unix:%s", p);
            free(p);
            if (strlen(nv) - 10 >= sizeof(((struct sockaddr_un *)0)->sun_path))
                why = "socket path too long";
            free(*v);
            *v = nv;
            r = nv;
        }
    } else if (strncmp(r, "smtp:", 5) == 0 || strncmp(r, "lmtp:", 5) == 0) {
        why = route_hostport(r + 5);
    } else if (strcmp(r, "mx") == 0) {
        return 0;
    } else {
        why = "unknown kind";
    }
    if (why == NULL)
        return 0;
    pst__conf_error(x, s,
                    "%s: \"%s\": %s; the forms are maildir:DIR, "
                    "smtp:HOST:PORT, smtp:[IP]:PORT, lmtp:HOST:PORT, "
                    "lmtp:[IP]:PORT, lmtp:unix:PATH and mx",
                    where, r, why);
    return -1;
}

/* fix_route_domain - "example.com" or ".example.com" (subdomains). */
static int
fix_route_domain(struct pst__ctx *x, const config_setting_t *s,
                 const char *where, char **v)
{
    if (strcmp(*v, "*") == 0)
        return 0;                   /* every domain: a smarthost with AUTH */
    if ((*v)[0] != '.')
        return fix_domain(x, s, where, v);
    char *rest = pst_xstrdup(*v + 1);
    int rc = fix_domain(x, s, where, &rest);
    if (rc == 0) {
        free(*v);
        *v = pst_xasprintf(".%s", rest);
    }
    free(rest);
    return rc;
}

/* fix_nameserver - "IP", "IP:PORT" or "[IP]:PORT" (c-ares' forms). */
static int
fix_nameserver(struct pst__ctx *x, const config_setting_t *s,
               const char *where, char **v)
{
    struct pst_ip ip;
    const char *why = NULL;

    if (pst_ip_parse(&ip, *v) == 0)
        return 0;
    if ((*v)[0] == '[') {
        why = route_hostport(*v);
    } else {
        const char *colon = strrchr(*v, ':');
        char lit[PST_IP_STRLEN];
        unsigned port;
        if (colon == NULL || (size_t)(colon - *v) >= sizeof(lit)) {
            why = "not an IP address";
        } else {
            memcpy(lit, *v, (size_t)(colon - *v));
            lit[colon - *v] = '\0';
            if (pst_ip_parse(&ip, lit) != 0 || ip.family != AF_INET)
                why = "not an IP address (write IPv6 as [ADDRESS]:PORT)";
            else if (parse_port(colon + 1, &port) != 0)
                why = "port must be 1..65535";
        }
    }
    if (why == NULL)
        return 0;
    fix_error(x, s, where, "%s: \"%s\": %s", *v, why);
    return -1;
}

/* ---- word lists ---- */

static const struct pst__word dtls_words[] = {
    {"default", PST_DTLS_INHERIT},  /* a route: delivery.tls */
    {"none", PST_DTLS_NONE},
    {"may", PST_DTLS_MAY},
    {"encrypt", PST_DTLS_ENCRYPT},
    {"verify", PST_DTLS_VERIFY},
    {NULL, 0},
};

static const struct pst__word eight_bit_words[] = {
    {"convert", PST_8BIT_CONVERT},
    {"bounce", PST_8BIT_BOUNCE},
    {NULL, 0},
};

static const struct pst__word tls_modes[] = {
    {"none", PST_TLS_NONE},
    {"starttls", PST_TLS_STARTTLS},
    {"implicit", PST_TLS_IMPLICIT},
    {NULL, 0},
};

static const struct pst__word bare_newline_words[] = {
    {"normalize", PST_BARE_NORMALIZE},
    {"reject", PST_BARE_REJECT},
    {NULL, 0},
};

static const struct pst__word mime_policy_words[] = {
    {"flag", PST_MIME_POLICY_FLAG},
    {"reject", PST_MIME_POLICY_REJECT},
    {NULL, 0},
};

static const struct pst__word tls_versions[] = {
    {"TLSv1.2", 0},
    {"TLSv1.3", 0},
    {NULL, 0},
};

static const struct pst__word log_levels[] = {
    {"error", PST_LOG_ERR},
    {"warn", PST_LOG_WARN},
    {"info", PST_LOG_INFO},
    {"debug", PST_LOG_DEBUG},
    {NULL, 0},
};

static const struct pst__word log_formats[] = {
    {"text", PST_LOG_TEXT},
    {"json", PST_LOG_JSON},
    {NULL, 0},
};

static const struct pst__word facilities[] = {
    {"mail", LOG_MAIL},     {"local0", LOG_LOCAL0},
    {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2},
    {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4},
    {"local5", LOG_LOCAL5}, {"local6", LOG_LOCAL6},
    {"local7", LOG_LOCAL7}, {NULL, 0},
};

static const char *const trusted_default[] = {"127.0.0.0/8", "::1/128", NULL};

/* ---- tables ---- */

/* Initializer helpers keep each row on one or two lines. */
#define STR(n, st, f, def, fl, fx)                                             \
    {                                                                          \
        .name = n, .type = PST__C_STR, .flags = fl, .off = OFF(st, f),         \
        .def_str = def, .fix = fx                                              \
    }
#define PATH(n, st, f, def, fl)                                                \
    {                                                                          \
        .name = n, .type = PST__C_PATH, .flags = fl, .off = OFF(st, f),        \
        .def_str = def                                                         \
    }
#define UINT(n, st, f, def, lo, hi)                                            \
    {                                                                          \
        .name = n, .type = PST__C_UINT, .off = OFF(st, f), .def_num = def,     \
        .min = lo, .max = hi                                                   \
    }
#define SIZE(n, st, f, def, lo, hi)                                            \
    {                                                                          \
        .name = n, .type = PST__C_SIZE, .off = OFF(st, f), .def_num = def,     \
        .min = lo, .max = hi                                                   \
    }
#define BOOL(n, st, f, def)                                                    \
    {                                                                          \
        .name = n, .type = PST__C_BOOL, .off = OFF(st, f), .def_num = def      \
    }
#define ENUM(n, st, f, def, w)                                                 \
    {                                                                          \
        .name = n, .type = PST__C_ENUM, .off = OFF(st, f), .def_num = def,     \
        .words = w                                                             \
    }
#define WORD(n, st, f, def, w)                                                 \
    {                                                                          \
        .name = n, .type = PST__C_WORD, .off = OFF(st, f), .def_str = def,     \
        .words = w                                                             \
    }
#define SECTION(n, f, t)                                                       \
    {                                                                          \
        .name = n, .type = PST__C_SECTION, .off = OFF(pst_conf, f), .sub = t   \
    }
#define END                                                                    \
    {                                                                          \
        .name = NULL                                                           \
    }

static const struct pst__directive listener_table[] = {
    STR("address", pst_listener_conf, address, "127.0.0.1", 0, fix_ip),
    {.name = "port",
     .type = PST__C_UINT,
     .flags = PST__F_REQUIRED,
     .off = OFF(pst_listener_conf, port),
     .min = 1,
     .max = 65535},
    /* tls and auth defaults depend on other sections: pst__conf_finish */
    ENUM("tls", pst_listener_conf, tls, PST_TLS_NONE, tls_modes),
    BOOL("auth", pst_listener_conf, auth, false),
    BOOL("auth_plaintext", pst_listener_conf, auth_plaintext, false),
    BOOL("auth_required", pst_listener_conf, auth_required, false),
    {.name = "proxy",
     .type = PST__C_BOOL,
     .flags = PST__F_QUIET,
     .off = OFF(pst_listener_conf, proxy)},
    {.name = "proxy_trusted",
     .type = PST__C_CIDRLIST,
     .flags = PST__F_QUIET,
     .off = OFF(pst_listener_conf, proxy_trusted),
     .count_off = OFF(pst_listener_conf, nproxy_trusted),
     .max = 1000},
    END,
};

static const struct pst__directive limits_table[] = {
    SIZE("message_size", pst_limits, message_size, 52428800, 1024,
         UINT64_C(1) << 34),
    UINT("recipients", pst_limits, recipients, 1000, 1, 100000),
    /* RFC 5321 4.5.3.1.6: 1000 octets with CRLF is the least allowed */
    UINT("text_line_max", pst_limits, text_line_max, 100000, 998, 10000000),
    UINT("hops", pst_limits, hops, 50, 1, 1000),
    UINT("sessions", pst_limits, sessions, 1000, 1, 1000000),
    UINT("sessions_per_ip", pst_limits, sessions_per_ip, 50, 1, 1000000),
    UINT("ipv6_prefix", pst_limits, ipv6_prefix, 64, 16, 128),
    UINT("errors", pst_limits, errors, 20, 1, 10000),
    UINT("command_timeout", pst_limits, command_timeout, 300, 1, DAY),
    UINT("data_block_timeout", pst_limits, data_block_timeout, 180, 1, DAY),
    UINT("data_timeout", pst_limits, data_timeout, 1800, 1, DAY),
    UINT("tls_handshake_timeout", pst_limits, tls_handshake_timeout, 30, 1,
         DAY),
    UINT("proxy_timeout", pst_limits, proxy_timeout, 5, 1, 3600),
    SIZE("disk_free_min", pst_limits, disk_free_min, 104857600, 0,
         UINT64_C(1) << 50),
    UINT("drain_timeout", pst_limits, drain_timeout, 30, 0, 3600),
    END,
};

static const struct pst__directive smtp_table[] = {
    ENUM("bare_newline", pst_smtp_conf, bare_newline, PST_BARE_NORMALIZE,
         bare_newline_words),
    STR("banner", pst_smtp_conf, banner, "postern", PST__F_EMPTY_OK, NULL),
    BOOL("reverse_dns", pst_smtp_conf, reverse_dns, true),
    BOOL("add_missing_headers", pst_smtp_conf, add_missing_headers, true),
    END,
};

static const struct pst__directive domain_table[] = {
    /* first: a bare string in relay.domains sets this one */
    STR("domain", pst_relay_domain, domain, NULL, PST__F_REQUIRED, fix_domain),
    PATH("recipients", pst_relay_domain, recipients_file, NULL, PST__F_EXISTS),
    END,
};

static const struct pst__directive relay_table[] = {
    {.name = "trusted_networks",
     .type = PST__C_CIDRLIST,
     .off = OFF(pst_relay_conf, trusted),
     .count_off = OFF(pst_relay_conf, ntrusted),
     .max = 100000,
     .def_list = trusted_default},
    {.name = "domains",
     .type = PST__C_GROUPLIST,
     .flags = PST__F_SHORTHAND,
     .off = OFF(pst_relay_conf, domains),
     .count_off = OFF(pst_relay_conf, ndomains),
     .max = 100000,
     .sub = domain_table,
     .elem_size = sizeof(struct pst_relay_domain),
     .line_off = -1},
    END,
};

static const struct pst__directive cert_table[] = {
    PATH("cert", pst_tls_cert, cert_file, NULL,
         PST__F_REQUIRED | PST__F_EXISTS),
    PATH("key", pst_tls_cert, key_file, NULL, PST__F_REQUIRED | PST__F_EXISTS),
    END,
};

static const struct pst__directive tls_table[] = {
    {.name = "certificates",
     .type = PST__C_GROUPLIST,
     .off = OFF(pst_tls_conf, certs),
     .count_off = OFF(pst_tls_conf, ncerts),
     .max = 64,
     .sub = cert_table,
     .elem_size = sizeof(struct pst_tls_cert),
     .line_off = -1},
    WORD("min_version", pst_tls_conf, min_version, "TLSv1.2", tls_versions),
    STR("ciphers", pst_tls_conf, ciphers, NULL, 0, NULL),
    STR("ciphersuites", pst_tls_conf, ciphersuites, NULL, 0, NULL),
    BOOL("session_tickets", pst_tls_conf, session_tickets, true),
    /* RFC 8446 4.6.1: a ticket lives seven days at most */
    UINT("session_timeout", pst_tls_conf, session_timeout, 3600, 60,
         7 * DAY),
    END,
};

static const struct pst__directive auth_table[] = {
    PATH("password_file", pst_auth_conf, password_file, NULL, PST__F_EXISTS),
    PATH("sender_login_map", pst_auth_conf, sender_login_map, NULL,
         PST__F_EXISTS),
    UINT("workers", pst_auth_conf, workers, 2, 1, 64),
    UINT("max_failures_per_ip", pst_auth_conf, max_failures_per_ip, 10, 1,
         1000000),
    UINT("max_failures_per_login", pst_auth_conf, max_failures_per_login, 5, 1,
         1000000),
    UINT("failure_window", pst_auth_conf, failure_window, 600, 1, DAY),
    UINT("failure_entries", pst_auth_conf, failure_entries, 65536, 16,
         10000000),
    END,
};

static const struct pst__directive log_table[] = {
    ENUM("level", pst_log_conf, level, PST_LOG_INFO, log_levels),
    BOOL("syslog", pst_log_conf, syslog, false),
    ENUM("facility", pst_log_conf, facility, LOG_MAIL, facilities),
    ENUM("format", pst_log_conf, format, PST_LOG_TEXT, log_formats),
    UINT("session_lines", pst_log_conf, session_lines, 200, 10, 1000000),
    END,
};

static const struct pst__directive metrics_table[] = {
    BOOL("enabled", pst_metrics_conf, enabled, false),
    STR("address", pst_metrics_conf, address, "127.0.0.1", 0, fix_ip),
    UINT("port", pst_metrics_conf, port, 9725, 1, 65535),
    END,
};

static const struct pst__directive queue_table[] = {
    PATH("directory", pst_queue_conf, directory, "var/spool", 0),
    /* default <directory>/control.sock: pst__conf_finish */
    PATH("control_socket", pst_queue_conf, control_socket, NULL, 0),
    STR("control_group", pst_queue_conf, control_group, NULL, 0, fix_group),
    SIZE("segment_size", pst_queue_conf, segment_size, 8388608, 1048576,
         1073741824),
    END,
};

static const struct pst__directive route_table[] = {
    STR("domain", pst_route_conf, domain, NULL, PST__F_REQUIRED,
        fix_route_domain),
    STR("route", pst_route_conf, route, NULL, PST__F_REQUIRED, fix_route),
    ENUM("tls", pst_route_conf, tls, PST_DTLS_INHERIT, dtls_words),
    STR("tls_name", pst_route_conf, tls_name, NULL, 0, fix_hostname),
    STR("auth_user", pst_route_conf, auth_user, NULL, 0, NULL),
    STR("auth_password", pst_route_conf, auth_password, NULL,
        PST__F_EMPTY_OK | PST__F_SECRET, NULL),
    BOOL("auth_plaintext", pst_route_conf, auth_plaintext, false),
    UINT("concurrency", pst_route_conf, concurrency, 0, 0, 10000),
    UINT("rate", pst_route_conf, rate, 0, 0, 1000000),
    UINT("rate_period", pst_route_conf, rate_period, 3600, 1, DAY),
    END,
};

#define DTIME(n, f, def)                                                       \
    UINT(n, pst_delivery_conf, f, def, 1, DAY)

static const struct pst__directive delivery_table[] = {
    STR("default_route", pst_delivery_conf, default_route,
        "maildir:var/mail", 0, fix_route),
    {.name = "routes", .type = PST__C_GROUPLIST,
     .off = OFF(pst_delivery_conf, routes),
     .count_off = OFF(pst_delivery_conf, nroutes), .max = 10000,
     .sub = route_table, .elem_size = sizeof(struct pst_route_conf),
     .line_off = (long)OFF(pst_route_conf, line)},
    UINT("retry_min", pst_delivery_conf, retry_min, 300, 1, DAY),
    UINT("retry_max", pst_delivery_conf, retry_max, 14400, 1, 7 * DAY),
    UINT("lifetime", pst_delivery_conf, lifetime, 432000, 5, 30 * DAY),
    UINT("concurrency", pst_delivery_conf, concurrency, 20, 1, 10000),
    UINT("destination_concurrency", pst_delivery_conf,
         destination_concurrency, 10, 1, 10000),
    UINT("dead_host_backoff", pst_delivery_conf, dead_host_backoff, 60, 0,
         DAY),
    UINT("mx_port", pst_delivery_conf, mx_port, 25, 1, 65535),
    UINT("recipients_per_transaction", pst_delivery_conf,
         recipients_per_transaction, 100, 1, 100000),
    UINT("messages_per_connection", pst_delivery_conf,
         messages_per_connection, 100, 1, 1000000),
    UINT("idle_timeout", pst_delivery_conf, idle_timeout, 5, 0, 3600),
    STR("helo_name", pst_delivery_conf, helo_name, NULL, 0, fix_hostname),
    ENUM("tls", pst_delivery_conf, tls, PST_DTLS_MAY, dtls_words),
    PATH("tls_ca_file", pst_delivery_conf, tls_ca_file, NULL, PST__F_EXISTS),
    PATH("tls_cert", pst_delivery_conf, tls_cert_file, NULL, PST__F_EXISTS),
    PATH("tls_key", pst_delivery_conf, tls_key_file, NULL, PST__F_EXISTS),
    UINT("tls_session_cache", pst_delivery_conf, tls_session_cache, 1000, 0,
         1000000),
    UINT("tls_session_timeout", pst_delivery_conf, tls_session_timeout, 3600,
         60, 7 * DAY),
    ENUM("eight_bit", pst_delivery_conf, eight_bit, PST_8BIT_CONVERT,
         eight_bit_words),
    /* RFC 5321 4.5.3.2 minimums */
    DTIME("connect_timeout", connect_timeout, 30),
    DTIME("greeting_timeout", greeting_timeout, 300),
    DTIME("helo_timeout", helo_timeout, 300),
    DTIME("mail_timeout", mail_timeout, 300),
    DTIME("rcpt_timeout", rcpt_timeout, 300),
    DTIME("data_timeout", data_timeout, 120),
    DTIME("data_block_timeout", data_block_timeout, 180),
    DTIME("final_timeout", final_timeout, 600),
    UINT("reply_lines_max", pst_delivery_conf, reply_lines_max, 100, 1,
         10000),
    SIZE("bounce_size_max", pst_delivery_conf, bounce_size_max, 1048576, 0,
         UINT64_C(1) << 34),
    UINT("delay_warning", pst_delivery_conf, delay_warning, 0, 0, 30 * DAY),
    END,
};

static const struct pst__directive nameserver_table[] = {
    STR("address", pst_resolver_ns, address, NULL, PST__F_REQUIRED,
        fix_nameserver),
    END,
};

static const struct pst__directive resolver_table[] = {
    {.name = "nameservers", .type = PST__C_GROUPLIST,
     .flags = PST__F_SHORTHAND, .off = OFF(pst_resolver_conf, nameservers),
     .count_off = OFF(pst_resolver_conf, nnameservers), .max = 16,
     .sub = nameserver_table, .elem_size = sizeof(struct pst_resolver_ns),
     .line_off = -1},
    UINT("timeout", pst_resolver_conf, timeout, 5000, 10, 60000),
    UINT("tries", pst_resolver_conf, tries, 2, 1, 10),
    END,
};

/* Defaults are pst_mime_limits_default's (core/mime.c); a unit test keeps
 * the two equal. */
static const struct pst__directive mime_table[] = {
    ENUM("policy", pst_mime_conf, policy, PST_MIME_POLICY_FLAG,
         mime_policy_words),
    UINT("depth", pst_mime_conf, limits.depth, 32, 1, PST_MIME_DEPTH_MAX),
    UINT("parts", pst_mime_conf, limits.parts, 5000, 1, 1000000),
    SIZE("header_bytes", pst_mime_conf, limits.header_bytes, 262144, 1024,
         UINT64_C(1) << 26),
    UINT("header_fields", pst_mime_conf, limits.header_fields, 1000, 16,
         100000),
    SIZE("total_header_bytes", pst_mime_conf, limits.total_header_bytes,
         4194304, 1024, UINT64_C(1) << 30),
    UINT("encoded_words", pst_mime_conf, limits.encoded_words, 256, 1,
         100000),
    /* RFC 2046 5.1.1 boundaries are 1..70 characters: never refuse those */
    UINT("boundary_length", pst_mime_conf, limits.boundary_len, 200, 70, 996),
    /* RFC 2231 joining is quadratic in the parameters of one field */
    UINT("parameters", pst_mime_conf, limits.params, 64, 1, 1000),
    END,
};

const struct pst__directive pst__conf_root[] = {
    STR("hostname", pst_conf, hostname, NULL, 0, fix_hostname),
    STR("authserv_id", pst_conf, authserv_id, NULL, 0, fix_hostname),
    STR("user", pst_conf, user, NULL, 0, fix_user),
    STR("group", pst_conf, group, NULL, 0, fix_group),
    {.name = "listeners",
     .type = PST__C_GROUPLIST,
     .off = OFF(pst_conf, listeners),
     .count_off = OFF(pst_conf, nlisteners),
     .max = 64,
     .sub = listener_table,
     .elem_size = sizeof(struct pst_listener_conf),
     .line_off = (long)OFF(pst_listener_conf, line)},
    SECTION("limits", limits, limits_table),
    SECTION("smtp", smtp, smtp_table),
    SECTION("relay", relay, relay_table),
    SECTION("tls", tls, tls_table),
    SECTION("auth", auth, auth_table),
    SECTION("logging", log, log_table),
    SECTION("queue", queue, queue_table),
    SECTION("delivery", delivery, delivery_table),
    SECTION("resolver", resolver, resolver_table),
    SECTION("mime", mime, mime_table),
    SECTION("metrics", metrics, metrics_table),
    {.name = "filters", .type = PST__C_FILTERS, .off = OFF(pst_conf, filters)},
    END,
};

/* ---- checks across settings ---- */

static const config_setting_t *
lookup(struct pst__ctx *x, const char *path)
{
    if (x->root == NULL)
        return NULL;
    return config_setting_lookup((config_setting_t *)x->root, path);
}

static const config_setting_t *
listener_setting(struct pst__ctx *x, size_t i)
{
    const config_setting_t *l = lookup(x, "listeners");
    return l ? config_setting_get_elem(l, (unsigned)i) : NULL;
}

/* proxies_given - listener s has a proxy_trusted that is not an empty
 * list (one with bad entries, or not a list, was reported already). */
static bool
proxies_given(const config_setting_t *s)
{
    const config_setting_t *t = config_setting_get_member(s, "proxy_trusted");
    return t != NULL && !(config_setting_is_aggregate(t) &&
                          config_setting_length(t) == 0);
}

static void
finish_listeners(struct pst__ctx *x, struct pst_conf *c)
{
    static const char *const mode_names[] = {"none", "starttls", "implicit"};
    const config_setting_t *certs = lookup(x, "tls.certificates");
    /* certificates given but not a list: reported already, not again */
    bool certs_bad = certs != NULL && !config_setting_is_list(certs);

    if (lookup(x, "listeners") == NULL) {
        c->listeners = pst_xcalloc(1, sizeof(*c->listeners));
        c->nlisteners = 1;
        pst__conf_apply_defaults(x, listener_table, c->listeners);
        c->listeners[0].port = 2525;
    } else if (c->nlisteners == 0) {
        pst__conf_error(x, lookup(x, "listeners"),
                        "listeners: at least one listener is needed");
    }
    for (size_t i = 0; i < c->nlisteners; i++) {
        struct pst_listener_conf *l = &c->listeners[i];
        const config_setting_t *s = listener_setting(x, i);
        bool has_tls = s && config_setting_get_member(s, "tls") != NULL;
        bool has_auth = s && config_setting_get_member(s, "auth") != NULL;

        if (s != NULL && config_setting_type(s) != CONFIG_TYPE_GROUP)
            continue; /* already reported */
        if (!has_tls)
            l->tls = c->tls.ncerts ? PST_TLS_STARTTLS : PST_TLS_NONE;
        if (!has_auth)
            l->auth = c->auth.password_file != NULL;
        if (l->tls != PST_TLS_NONE && c->tls.ncerts == 0 && !certs_bad)
            pst__conf_error(x, s,
                            "listeners[%zu]: tls = \"%s\" needs "
                            "tls.certificates",
                            i, mode_names[l->tls]);
        if (l->auth_required && !l->auth)
            pst__conf_error(x, s,
                            "listeners[%zu]: auth_required = true needs "
                            "auth on this listener",
                            i);
        if (l->auth && has_auth && c->auth.password_file == NULL &&
            lookup(x, "auth.password_file") == NULL)
            pst__conf_error(x, s,
                            "listeners[%zu]: auth = true needs "
                            "auth.password_file",
                            i);
        if (l->proxy && l->nproxy_trusted == 0 && !proxies_given(s))
            pst__conf_error(x, config_setting_get_member(s, "proxy"),
                            "listeners[%zu]: proxy = true needs "
                            "proxy_trusted, the addresses of the proxies "
                            "that may send the header",
                            i);
        if (!l->proxy && l->nproxy_trusted > 0)
            pst__conf_error(x,
                            config_setting_get_member(s, "proxy_trusted"),
                            "listeners[%zu]: proxy_trusted without "
                            "proxy = true",
                            i);
        if (l->address == NULL || l->port == 0)
            continue; /* bad address or port, already reported */
        struct pst_ip a, b;
        if (pst_ip_parse(&a, l->address) < 0)
            continue;
        for (size_t j = 0; j < i; j++) {
            const struct pst_listener_conf *o = &c->listeners[j];
            if (o->address == NULL || o->port != l->port ||
                pst_ip_parse(&b, o->address) < 0 || a.family != b.family)
                continue;
            static const uint8_t zero[16];
            size_t alen = a.family == AF_INET ? 4 : 16;
            bool awild = memcmp(a.addr, zero, alen) == 0;
            bool bwild = memcmp(b.addr, zero, alen) == 0;
            if (pst_ip_equal(&a, &b))
                pst__conf_error(x, s,
                                "listeners[%zu]: duplicate listener %s%s%s:%u "
                                "(also listeners[%zu] at line %d)",
                                i, a.family == AF_INET6 ? "[" : "", l->address,
                                a.family == AF_INET6 ? "]" : "", l->port, j,
                                o->line);
            else if (awild || bwild)
                pst__conf_error(x, s,
                                "listeners[%zu]: %s port %u overlaps the "
                                "wildcard listener %s (listeners[%zu] at "
                                "line %d)",
                                i, l->address, l->port,
                                awild ? l->address : o->address, j, o->line);
        }
    }
}

static void
finish_domains(struct pst__ctx *x, struct pst_conf *c)
{
    const config_setting_t *l = lookup(x, "relay.domains");
    for (size_t i = 0; i < c->relay.ndomains; i++) {
        const char *d = c->relay.domains[i].domain;
        if (d == NULL)
            continue;
        for (size_t j = 0; j < i; j++) {
            const char *o = c->relay.domains[j].domain;
            if (o != NULL && strcmp(o, d) == 0) {
                pst__conf_error(
                    x, l ? config_setting_get_elem(l, (unsigned)i) : NULL,
                    "relay.domains[%zu]: duplicate domain \"%s\"", i, d);
                break;
            }
        }
    }
}

static void
finish_delivery(struct pst__ctx *x, struct pst_conf *c)
{
    struct pst_delivery_conf *d = &c->delivery;
    const config_setting_t *l = lookup(x, "delivery.routes");

    if (d->tls == PST_DTLS_INHERIT)
        pst__conf_error(x, lookup(x, "delivery.tls"),
                        "delivery.tls: \"default\" is for routes; use none, "
                        "may, encrypt or verify");
    if ((d->tls_cert_file == NULL) != (d->tls_key_file == NULL))
        pst__conf_error(x, lookup(x, d->tls_cert_file ? "delivery.tls_cert"
                                                      : "delivery.tls_key"),
                        "delivery.tls_cert and delivery.tls_key go together");
    for (size_t i = 0; i < d->nroutes; i++) {
        const struct pst_route_conf *r = &d->routes[i];
        const config_setting_t *s =
            l ? config_setting_get_elem(l, (unsigned)i) : NULL;
        if (r->domain == NULL || r->route == NULL)
            continue;
        if ((r->auth_user == NULL) != (r->auth_password == NULL))
            pst__conf_error(x, s, "delivery.routes[%zu]: auth_user and "
                            "auth_password go together", i);
        if (r->auth_user && strncmp(r->route, "smtp:", 5) != 0 &&
            strncmp(r->route, "lmtp:", 5) != 0)
            pst__conf_error(x, s, "delivery.routes[%zu]: AUTH needs an "
                            "smtp: or lmtp: route", i);
        for (size_t j = 0; j < i; j++)
            if (d->routes[j].domain &&
                strcmp(d->routes[j].domain, r->domain) == 0) {
                pst__conf_error(x, s, "delivery.routes[%zu]: duplicate "
                                "domain \"%s\"", i, r->domain);
                break;
            }
    }
}

/*
 * pst__conf_finish - the defaults that depend on the machine or on other
 * settings, and the checks that span settings. Runs on every load and on
 * pst_conf_defaults (x->root NULL).
 */
void
pst__conf_finish(struct pst__ctx *x, struct pst_conf *c)
{
    if (c->hostname == NULL && lookup(x, "hostname") == NULL) {
        char h[256];
        if (gethostname(h, sizeof(h)) < 0 || h[0] == '\0')
            snprintf(h, sizeof(h), "localhost");
        h[sizeof(h) - 1] = '\0';
        c->hostname = pst_xstrdup(h);
    }

    if (c->queue.control_socket == NULL && c->queue.directory != NULL &&
        lookup(x, "queue.control_socket") == NULL)
        c->queue.control_socket =
            pst_xasprintf("%s/control.sock", c->queue.directory);
    if (c->queue.control_socket != NULL &&
        strlen(c->queue.control_socket) >=
            sizeof(((struct sockaddr_un *)0)->sun_path)) {
        const config_setting_t *s = lookup(x, "queue.control_socket");
        if (s == NULL)
            s = lookup(x, "queue.directory");
        pst__conf_error(x, s,
                        "queue.control_socket: \"%s\" is longer than a unix "
                        "socket path may be (%zu bytes)",
                        c->queue.control_socket,
                        sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    }
    finish_listeners(x, c);
    finish_domains(x, c);
    finish_delivery(x, c);
    if (c->delivery.retry_min > c->delivery.retry_max) {
        const config_setting_t *s = lookup(x, "delivery.retry_min");
        pst__conf_error(x, s ? s : lookup(x, "delivery.retry_max"),
                        "delivery.retry_min (%u) is greater than "
                        "delivery.retry_max (%u)",
                        c->delivery.retry_min, c->delivery.retry_max);
    }
}
