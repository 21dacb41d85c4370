/*
 * parse.h - SMTP command-line parsing: verbs, paths (RFC 5321 4.1.2) and
 * ESMTP parameters. Pure functions over one line (CRLF already removed), so
 * they are unit-tested and fuzzed on their own.
 *
 * Limits (RFC 5321 4.5.3.1): local part 64 octets, domain 255, path 256
 * including the angle brackets. A path is stored without brackets and
 * without its source route (accepted and ignored, 4.1.1.3).
 */
#ifndef PST_GATEWAY_PARSE_H
#define PST_GATEWAY_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/charset.h"   /* pst_utf8_valid */
#include "core/envelope.h"

enum pst_verb {
    PST_CMD_UNKNOWN,
    PST_CMD_HELO, PST_CMD_EHLO, PST_CMD_MAIL, PST_CMD_RCPT, PST_CMD_DATA,
    PST_CMD_BDAT, PST_CMD_RSET, PST_CMD_NOOP, PST_CMD_QUIT, PST_CMD_VRFY,
    PST_CMD_EXPN, PST_CMD_HELP, PST_CMD_STARTTLS, PST_CMD_AUTH,
};

#define PST_LOCAL_MAX 64
#define PST_DOMAIN_MAX 255
#define PST_PATH_MAX 256
#define PST_CMD_LINE_MAX 512        /* including CRLF */
/* RFC 1870 SIZE +26, RFC 3461 ENVID +100 and ORCPT +500, RFC 4954 AUTH= +500 */
#define PST_MAIL_LINE_MAX (PST_CMD_LINE_MAX + 26 + 100 + 500)
#define PST_RCPT_LINE_MAX (PST_CMD_LINE_MAX + 500)
#define PST_LINE_MAX_ANY PST_MAIL_LINE_MAX

struct pst_cmd {
    enum pst_verb verb;
    const char *arg;                /* after the verb and one space */
    size_t arg_len;
};

/* pst_cmd_parse - split line into verb and argument (case-insensitive). */
void pst_cmd_parse(const char *line, size_t len, struct pst_cmd *cmd);
/* pst_cmd_line_max - longest line (with CRLF) allowed for verb. */
size_t pst_cmd_line_max(enum pst_verb verb);

/* How a BDAT argument reads (RFC 3030 2: "BDAT" SP size [SP "LAST"]). */
enum pst_bdat_form {
    PST_BDAT_OK,                    /* well formed */
    PST_BDAT_MALFORMED,             /* size readable, the rest is not */
    PST_BDAT_NO_SIZE,               /* no size: the chunk's end is unknown */
};

/*
 * pst_bdat_parse - read the argument of BDAT (after the verb and one
 * space). The size is readable when the argument starts, after any
 * blanks, with decimal digits that fit in 64 bits followed by a blank or
 * the end; then *size is set, and *last when the next word is LAST (in any
 * case), even in a malformed line.
 */
enum pst_bdat_form pst_bdat_parse(const char *a, size_t n, uint64_t *size,
                                  bool *last);

enum pst_path_err {
    PST_PATH_OK = 0,
    PST_PATH_SYNTAX,                /* 501 */
    PST_PATH_LOCAL_TOO_LONG,        /* 553 */
    PST_PATH_DOMAIN_TOO_LONG,       /* 553 */
    PST_PATH_TOO_LONG,              /* 553 */
    PST_PATH_BAD_UTF8,              /* 553 (malformed UTF-8) */
};

struct pst_path {
    char addr[PST_PATH_MAX + 1];    /* local@domain, or "" for <> */
    size_t local_len;               /* octets before the last '@' */
    bool is_null;                   /* <> */
    bool is_postmaster;             /* <postmaster> without a domain */
    bool utf8;                      /* contains octets >= 0x80 */
    bool domain_literal;            /* [1.2.3.4] or [IPv6:...] */
    bool quoted_local;              /* local part is a quoted-string */
};

/*
 * pst_path_parse - parse "<path>" at s (leading spaces allowed). allow_null
 * admits "<>" (MAIL); allow_postmaster admits "<postmaster>" (RCPT).
 * *end is set just past '>'. Returns PST_PATH_OK or the error.
 */
enum pst_path_err pst_path_parse(const char *s, size_t len,
                                 struct pst_path *p, bool allow_null,
                                 bool allow_postmaster, size_t *end);

/* Parameters of MAIL and RCPT. */
struct pst_mail_params {
    uint64_t size;                  /* 0: not given */
    enum pst_body_type body;
    bool smtputf8;
    enum pst_dsn_ret ret;
    char envid[101];                /* "" if absent; xtext as given */
    bool has_auth;                  /* AUTH= given (RFC 4954 5) */
    char auth[501];
};

struct pst_rcpt_params {
    unsigned notify;                /* PST_NOTIFY_*, 0 if absent */
    char orcpt[501];                /* "" if absent; addr-type;xtext */
};

enum pst_param_err {
    PST_PARAM_OK = 0,
    PST_PARAM_SYNTAX,               /* 501 5.5.4 */
    PST_PARAM_UNKNOWN,              /* 555 5.5.4 (name in *bad) */
    PST_PARAM_BAD_VALUE,            /* 501 5.5.4 */
};

/* bad (>= 32 bytes) receives the offending keyword, for the reply. */
enum pst_param_err pst_mail_params_parse(const char *s, size_t len,
                                         struct pst_mail_params *mp,
                                         char *bad, size_t badsz);
enum pst_param_err pst_rcpt_params_parse(const char *s, size_t len,
                                         struct pst_rcpt_params *rp,
                                         char *bad, size_t badsz);

/* pst_xtext_valid - RFC 3461 4 xtext. */
bool pst_xtext_valid(const char *s, size_t len);

#endif
