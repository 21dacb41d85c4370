/*
 * smtp_cmd.c - the SMTP session's commands, as one table (OpenSMTPD's
 * smtp_session.c): {verb, states allowed, check, filter phase, proceed}.
 *
 * A command line goes: length (the verb's limit), then a command that takes
 * no argument refused one, then the states it is allowed in (otherwise the
 * reply that says what is missing), then check (syntax and policy; it
 * keeps what it parsed in s->args), then the filter phase, if any, through
 * the gate, then proceed. A pending verdict resumes proceed with the
 * arguments check kept: check never runs twice, so nothing it counts or
 * logs is counted or logged twice.
 *
 * MAIL's check ends by creating the transaction (smtp_data.c), so that the
 * MAIL phase's filters see the envelope; the gate frees it if they refuse.
 * HELO/EHLO's check resets the session (a refused HELO leaves none).
 * DATA and BDAT are smtp_data.c's; AUTH's SASL exchange is here.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/strmap.h"
#include "core/util.h"
#include "gateway/policy.h"
#include "gateway/smtp_filters.h"
#include "gateway/smtp_int.h"
#include "gateway/stats.h"

/* Where the session stands, for the table's states allowed. */
enum {
    SP_INIT = 1 << 0,               /* no HELO/EHLO yet */
    SP_READY = 1 << 1,              /* HELO given, no transaction */
    SP_MAIL = 1 << 2,               /* MAIL accepted, no recipient yet */
    SP_RCPT = 1 << 3,               /* one recipient or more */
    SP_ANY = SP_INIT | SP_READY | SP_MAIL | SP_RCPT,
};

#define CF_NOARG 1u                 /* takes no argument (501 if given) */
#define NO_PHASE PST_FP_COUNT       /* no filter phase */

struct pst__command {
    enum pst_verb verb;
    const char *name;
    unsigned flags;
    unsigned states;
    /* may the command go on; false: the reply is given */
    bool (*check)(struct pst_session *s, const struct pst_cmd *c,
                  struct pst__args *a);
    enum pst_fphase phase;
    void (*proceed)(struct pst_session *s, struct pst__args *a);
};

static unsigned
position(const struct pst_session *s)
{
    if (s->helo == NULL)
        return SP_INIT;
    if (s->tx == NULL)
        return SP_READY;
    return s->tx->env.nrcpts == 0 ? SP_MAIL : SP_RCPT;
}

/* out_of_sequence - the reply to verb where it is not allowed: what the
 * client has to do first. */
static enum pst_reply
out_of_sequence(const struct pst_session *s, enum pst_verb verb)
{
    if (s->helo == NULL)
        return RP_NEED_HELO;
    if (s->tx != NULL && verb == PST_CMD_MAIL)
        return RP_NESTED_MAIL;
    if (s->tx != NULL && verb == PST_CMD_AUTH)
        return RP_AUTH_IN_MAIL;
    if (s->tx == NULL)
        return RP_NEED_MAIL;
    /* DATA before a recipient was accepted */
    return s->tx->rcpt_tried ? RP_NO_VALID_RCPT : RP_NEED_RCPT;
}

/* ---- HELO, EHLO ---- */

static char *
sanitize_helo(char *h, const char *a, size_t n)
{
    if (n > PST_HELO_MAX)
        n = PST_HELO_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c < 33 || c > 126 || c == '(' || c == ')' || c == '\\' ||
            c == ';')
            c = '?';
        h[i] = (char)c;
    }
    h[n] = '\0';
    return h;
}

static bool
check_helo(struct pst_session *s, const struct pst_cmd *c,
           struct pst__args *a)
{
    size_t n = c->arg_len;
    while (n && c->arg[n - 1] == ' ')
        n--;
    if (n == 0) {
        pst__smtp_reply(s, RP_SYNTAX_HELO, NULL);
        return false;
    }
    /* HELO/EHLO starts over, whatever the filters say of it */
    pst__tx_free(s);
    pst__bdat_refuse_end(s);
    free(s->helo);
    s->helo = NULL;
    s->esmtp = false;
    a->u.helo.ehlo = c->verb == PST_CMD_EHLO;
    sanitize_helo(a->u.helo.name, c->arg, n);
    char q[300];
    SLOG(pst__smtp_cmd_level(s), s, "event=helo verb=%s name=%s",
         a->u.helo.ehlo ? "EHLO" : "HELO",
         pst_log_quote(q, sizeof(q), c->arg, n));
    return true;
}

/* starttls_offered - a STARTTLS listener, TLS not yet active. */
static bool
starttls_offered(const struct pst_session *s)
{
    return s->lc->tls == PST_TLS_STARTTLS && s->gen->tls != NULL &&
           s->tls == NULL;
}

/* auth_offered - RFC 4954 4: only under TLS unless the listener allows
 * plaintext AUTH. */
static bool
auth_offered(const struct pst_session *s)
{
    return s->srv->auth != NULL && s->lc->auth &&
           (s->tls != NULL || s->lc->auth_plaintext);
}

static void
proceed_helo(struct pst_session *s, struct pst__args *a)
{
    s->helo = pst_xstrdup(a->u.helo.name);
    s->esmtp = a->u.helo.ehlo;
    if (!s->esmtp) {
        pst_tbuf_printf(&s->out, "250 %s\r\n", s->conf->hostname);
        return;
    }
    pst_tbuf_printf(&s->out,
                    "250-%s\r\n"
                    "250-PIPELINING\r\n"
                    "250-SIZE %" PRIu64 "\r\n"
                    "250-8BITMIME\r\n"
                    "250-SMTPUTF8\r\n"
                    "250-ENHANCEDSTATUSCODES\r\n"
                    "250-DSN\r\n",        /* reports: queue/dsn.c */
                    s->conf->hostname, s->conf->limits.message_size);
    if (starttls_offered(s))
        pst_tbuf_puts(&s->out, "250-STARTTLS\r\n");
    if (auth_offered(s))
        pst_tbuf_puts(&s->out, "250-AUTH PLAIN LOGIN\r\n");
    pst_tbuf_puts(&s->out, "250 CHUNKING\r\n");
}

/* ---- MAIL, RCPT ---- */

static const char *
path_err_text(enum pst_path_err e)
{
    switch (e) {
    case PST_PATH_LOCAL_TOO_LONG:
        return "local part longer than 64 octets";
    case PST_PATH_DOMAIN_TOO_LONG:
        return "domain longer than 255 octets";
    case PST_PATH_TOO_LONG:
        return "path longer than 256 octets";
    case PST_PATH_BAD_UTF8:
        return "malformed UTF-8";
    default:
        return "bad syntax";
    }
}

/* "FROM:" / "TO:" with optional spaces after the colon (common practice). */
static bool
strip_keyword(const char **a, size_t *n, const char *kw)
{
    size_t kl = strlen(kw);
    if (*n < kl || !pst_strncaseeq(*a, kw, kl))
        return false;
    *a += kl;
    *n -= kl;
    while (*n && **a == ' ') {
        (*a)++;
        (*n)--;
    }
    return true;
}

/*
 * path_arg - the "FROM:<path> params" (MAIL) or "TO:<path> params" (RCPT)
 * argument: the path in *p and the parameters' text in *params, *plen.
 * On an error the reply is given and false returned.
 */
static bool
path_arg(struct pst_session *s, const struct pst_cmd *c, bool mail,
         struct pst_path *p, const char **params, size_t *plen)
{
    const char *a = c->arg;
    size_t n = c->arg_len, end;
    enum pst_reply syntax = mail ? RP_SYNTAX_MAIL : RP_SYNTAX_RCPT;

    if (!strip_keyword(&a, &n, mail ? "FROM:" : "TO:")) {
        pst__smtp_reply(s, syntax, NULL);
        return false;
    }
    enum pst_path_err pe = pst_path_parse(a, n, p, mail, !mail, &end);
    if (pe == PST_PATH_SYNTAX) {
        pst__smtp_reply(s, n && a[0] == '<' ? (mail ? RP_BAD_SENDER
                                                    : RP_BAD_RCPT)
                                            : syntax, NULL);
        return false;
    }
    if (pe != PST_PATH_OK) {
        pst__smtp_reply(s, mail ? RP_SENDER_TOO_LONG : RP_RCPT_TOO_LONG,
                        path_err_text(pe));
        return false;
    }
    if (end < n && a[end] != ' ') {
        pst__smtp_reply(s, syntax, NULL);
        return false;
    }
    *params = a + end;
    *plen = n - end;
    return true;
}

/* params_ok - reply to a parameter error; true when there is none. */
static bool
params_ok(struct pst_session *s, enum pst_param_err e, const char *bad)
{
    if (e == PST_PARAM_OK)
        return true;
    if (e == PST_PARAM_UNKNOWN)
        pst__smtp_reply(s, RP_PARAM_UNKNOWN, bad);
    else
        pst__smtp_reply(s, RP_PARAM_BAD, NULL);
    return false;
}

static bool
check_mail(struct pst_session *s, const struct pst_cmd *c,
           struct pst__args *a)
{
    struct pst_path *p = &a->u.mail.path;
    struct pst_mail_params *mp = &a->u.mail.mp;
    const char *params;
    size_t n;
    char bad[64];

    pst__bdat_refuse_end(s);        /* any MAIL moves on from a failure */
    if (!path_arg(s, c, true, p, &params, &n) ||
        !params_ok(s, pst_mail_params_parse(params, n, mp, bad, sizeof(bad)),
                   bad))
        return false;
    if (!s->esmtp && (mp->size || mp->body || mp->smtputf8 || mp->ret ||
                      mp->envid[0] || mp->has_auth)) {
        pst__smtp_reply(s, RP_PARAM_UNKNOWN, "parameters need EHLO");
        return false;
    }
    if (mp->body == PST_BODY_BINARYMIME) {
        pst__smtp_reply(s, RP_PARAM_UNKNOWN, "BODY=BINARYMIME");
        return false;
    }
    if (mp->size > s->conf->limits.message_size) {
        pst__smtp_reply(s, RP_SIZE_EXCEEDED, NULL);
        return false;
    }
    if (p->utf8 && !mp->smtputf8) {
        pst__smtp_reply(s, RP_NEED_SMTPUTF8, NULL);
        return false;
    }
    if (s->lc->auth_required && s->auth_login == NULL && !s->trusted) {
        pst__smtp_reply(s, RP_AUTH_REQUIRED, NULL);
        return false;
    }
    if (s->auth_login && s->srv->auth &&
        !pst_auth_sender_ok(s->srv->auth, s->auth_login, p->addr)) {
        char q[300];
        SLOG(PST_LOG_INFO, s, "event=reject phase=mail from=%s code=553 "
             "reason=sender_login login=%s",
             pst_log_quote(q, sizeof(q), p->addr, strlen(p->addr)),
             s->auth_login);
        pst__smtp_reply(s, RP_SENDER_NOT_OWNED, s->auth_login);
        return false;
    }
    if (!pst__space_ok(s, mp->size)) {
        SLOG(PST_LOG_WARN, s, "event=reject phase=mail code=452 "
             "reason=disk_space size=%" PRIu64, mp->size);
        pst__smtp_reply(s, RP_NO_SPACE, NULL);
        return false;
    }
    pst__tx_new(s, p, mp);          /* the MAIL filters see its envelope */
    return true;
}

static void
proceed_mail(struct pst_session *s, struct pst__args *a)
{
    if (s->fres.new_sender) {
        free(s->tx->env.sender);
        s->tx->env.sender = pst_xstrdup(s->fres.new_sender);
    }
    pst__smtp_reply(s, RP_MAIL_OK, NULL);
}

/* may_relay - the client may send to any domain. */
static bool
may_relay(const struct pst_session *s)
{
    return s->trusted || s->auth_login != NULL;
}

static bool
check_rcpt(struct pst_session *s, const struct pst_cmd *c,
           struct pst__args *a)
{
    struct pst_path *p = &a->u.rcpt.path;
    struct pst_rcpt_params *rp = &a->u.rcpt.rp;
    const char *params;
    size_t n;
    char bad[64], q[300];

    s->tx->rcpt_tried++;
    if (!path_arg(s, c, false, p, &params, &n) ||
        !params_ok(s, pst_rcpt_params_parse(params, n, rp, bad, sizeof(bad)),
                   bad))
        return false;
    if (!s->esmtp && (rp->notify || rp->orcpt[0])) {
        pst__smtp_reply(s, RP_PARAM_UNKNOWN, "parameters need EHLO");
        return false;
    }
    if (p->utf8 && !s->tx->env.smtputf8) {
        pst__smtp_reply(s, RP_NEED_SMTPUTF8, NULL);
        return false;
    }
    if (s->tx->env.nrcpts >= s->conf->limits.recipients) {
        pst__smtp_reply(s, RP_TOO_MANY_RCPTS, NULL);
        return false;
    }
    if (p->is_postmaster)
        return true;                /* always accepted (RFC 5321 4.5.1) */
    enum pst_rcpt_verdict v = pst_policy_rcpt(
        s->gen->policy, p->addr, p->domain_literal, may_relay(s));
    if (v != PST_RCPT_ACCEPT) {
        bool relay = v == PST_RCPT_RELAY_DENIED;
        char arg[PST_PATH_MAX + 3];
        SLOG(PST_LOG_INFO, s, "event=reject phase=rcpt to=%s code=%d "
             "reason=%s", pst_log_quote(q, sizeof(q), p->addr,
                                        strlen(p->addr)),
             relay ? 554 : 550, relay ? "relay" : "unknown_user");
        snprintf(arg, sizeof(arg), "<%s>", p->addr);
        pst__smtp_reply(s, relay ? RP_RELAY_DENIED : RP_UNKNOWN_USER, arg);
        return false;
    }
    return true;
}

static void
proceed_rcpt(struct pst_session *s, struct pst__args *a)
{
    const struct pst_path *p = &a->u.rcpt.path;
    const char *to = s->fres.new_rcpt;
    char q[300];
    struct pst_rcpt *r = pst_envelope_add_rcpt(&s->tx->env, to ? to : p->addr);
    r->notify = a->u.rcpt.rp.notify;
    r->orcpt = a->u.rcpt.rp.orcpt[0] ? pst_xstrdup(a->u.rcpt.rp.orcpt) : NULL;
    if (to && r->orcpt == NULL)     /* routed elsewhere: keep the original */
        r->orcpt = pst_sf_orcpt(p->addr);
    SLOG(pst__smtp_cmd_level(s), s, "event=rcpt to=%s",
         pst_log_quote(q, sizeof(q), p->addr, strlen(p->addr)));
    pst__smtp_reply(s, RP_RCPT_OK, NULL);
}

/* ---- RSET, NOOP, QUIT, VRFY, HELP, EXPN ---- */

static void
proceed_rset(struct pst_session *s, struct pst__args *a)
{
    pst__tx_free(s);
    pst__bdat_refuse_end(s);
    pst__smtp_reply(s, RP_OK, NULL);
}

static void
proceed_noop(struct pst_session *s, struct pst__args *a)
{
    pst__smtp_reply(s, RP_OK, NULL);
}

static void
proceed_quit(struct pst_session *s, struct pst__args *a)
{
    pst__smtp_reply(s, RP_BYE, NULL);
    s->quitting = true;
}

static bool
check_vrfy(struct pst_session *s, const struct pst_cmd *c,
           struct pst__args *a)
{
    if (c->arg_len == 0) {
        pst__smtp_reply(s, RP_SYNTAX_VRFY, NULL);
        return false;
    }
    return true;
}

static void
proceed_vrfy(struct pst_session *s, struct pst__args *a)
{
    pst__smtp_reply(s, RP_VRFY, NULL);
}

static void
proceed_help(struct pst_session *s, struct pst__args *a)
{
    pst__smtp_reply(s, RP_HELP, NULL);
}

static void
proceed_expn(struct pst_session *s, struct pst__args *a)
{
    pst__smtp_reply(s, RP_NOT_IMPLEMENTED, NULL);
}

/* ---- STARTTLS ---- */

static bool
check_starttls(struct pst_session *s, const struct pst_cmd *c,
               struct pst__args *a)
{
    if (s->tls != NULL) {
        pst__smtp_reply(s, RP_TLS_ACTIVE, NULL);
        return false;
    }
    if (!starttls_offered(s)) {
        pst__smtp_reply(s, RP_NOT_IMPLEMENTED, NULL);
        return false;
    }
    if (c->arg_len) {
        pst__smtp_reply(s, RP_SYNTAX_NOARG, "STARTTLS");
        return false;
    }
    return true;
}

static void
proceed_starttls(struct pst_session *s, struct pst__args *a)
{
    pst__smtp_reply(s, RP_TLS_GO, NULL);
    s->tls_start = true;            /* the input loop stops and begins TLS */
}

/* ---- AUTH (RFC 4954: PLAIN, LOGIN) ---- */

static void
sasl_end(struct pst_session *s)
{
    s->sasl = SASL_NONE;
    explicit_bzero(s->sasl_user, sizeof(s->sasl_user));
    if (s->st == ST_AUTH)
        pst__smtp_state(s, ST_CMD);
}

static void
auth_start_check(struct pst_session *s, const char *login, char *password)
{
    char q[300];
    int rc = pst_auth_check(s->srv->auth, s->id, &s->ip, login, password);
    explicit_bzero(password, strlen(password));
    pst_log_quote(q, sizeof(q), login, strlen(login));
    if (rc == -EPERM) {
        SLOG(PST_LOG_WARN, s, "event=auth result=limited login=%s ip=%s", q,
             s->ipstr);
        pst_stats_auth(false);
        pst__smtp_reply(s, RP_AUTH_LIMIT, NULL);
        sasl_end(s);
        return;
    }
    if (rc < 0) {
        SLOG(PST_LOG_WARN, s, "event=auth result=%s login=%s",
             rc == -EAGAIN ? "busy" : "invalid", q);
        pst__smtp_reply(s, rc == -EAGAIN ? RP_AUTH_TEMP : RP_AUTH_FAILED,
                        NULL);
        sasl_end(s);
        return;
    }
    /* reading stops until pst_session_auth_done */
    s->sasl = SASL_NONE;
    pst__smtp_state(s, ST_AUTH_CHECK);
}

/* One SASL response (the initial response or a line after 334). */
static void
sasl_response(struct pst_session *s, const char *line, size_t len)
{
    char dec[PST_AUTH_FIELD_MAX * 3 + 3];
    char login[PST_AUTH_FIELD_MAX + 1], pw[PST_AUTH_FIELD_MAX + 1];
    ssize_t n;

    if (len == 1 && line[0] == '*') {
        SLOG(PST_LOG_INFO, s, "event=auth result=cancelled%s", "");
        pst__smtp_reply(s, RP_AUTH_CANCELLED, NULL);
        sasl_end(s);
        return;
    }
    if (len == 1 && line[0] == '=')
        n = 0;                      /* RFC 4954 4: an empty response */
    else
        n = pst_b64_decode(line, len, dec, sizeof(dec));
    if (n < 0) {
        pst__smtp_reply(s, RP_AUTH_BAD_B64, NULL);
        sasl_end(s);
        return;
    }
    switch (s->sasl) {
    case SASL_PLAIN:
        if (pst_sasl_plain(dec, (size_t)n, login, pw) < 0) {
            SLOG(PST_LOG_INFO, s, "event=auth result=malformed mech=%s",
                 "PLAIN");
            pst__smtp_reply(s, RP_AUTH_FAILED, NULL);
            sasl_end(s);
            break;
        }
        auth_start_check(s, login, pw);
        break;
    case SASL_LOGIN_USER:
        if (n == 0 || n > PST_AUTH_FIELD_MAX ||
            memchr(dec, '\0', (size_t)n) != NULL) {
            pst__smtp_reply(s, RP_AUTH_FAILED, NULL);
            sasl_end(s);
            break;
        }
        memcpy(s->sasl_user, dec, (size_t)n);
        s->sasl_user[n] = '\0';
        s->sasl = SASL_LOGIN_PASS;
        pst__smtp_state(s, ST_AUTH);
        pst__smtp_reply(s, RP_AUTH_CHALLENGE, "UGFzc3dvcmQ6");  /* Password: */
        break;
    case SASL_LOGIN_PASS:
        if (n > PST_AUTH_FIELD_MAX || memchr(dec, '\0', (size_t)n) != NULL) {
            pst__smtp_reply(s, RP_AUTH_FAILED, NULL);
            sasl_end(s);
            break;
        }
        memcpy(pw, dec, (size_t)n);
        pw[n] = '\0';
        snprintf(login, sizeof(login), "%s", s->sasl_user);
        auth_start_check(s, login, pw);
        break;
    default:
        sasl_end(s);
        break;
    }
    explicit_bzero(dec, sizeof(dec));
    explicit_bzero(pw, sizeof(pw));
}

void
pst__cmd_sasl_line(struct pst_session *s, const char *line, size_t len)
{
    sasl_response(s, line, len);
}

void
pst__cmd_sasl_overlong(struct pst_session *s)
{
    pst__smtp_reply(s, RP_AUTH_LINE_TOO_LONG, NULL);
    sasl_end(s);
}

static bool
check_auth(struct pst_session *s, const struct pst_cmd *c,
           struct pst__args *a)
{
    if (s->srv->auth == NULL || !s->lc->auth) {
        pst__smtp_reply(s, RP_AUTH_NOT_ENABLED, NULL);
        return false;
    }
    if (s->tls == NULL && !s->lc->auth_plaintext) {
        pst__smtp_reply(s, RP_AUTH_ENCRYPT, NULL);
        return false;
    }
    if (!s->esmtp) {
        pst__smtp_reply(s, RP_NEED_HELO, NULL);
        return false;
    }
    if (s->auth_login) {
        pst__smtp_reply(s, RP_AUTH_ALREADY, NULL);
        return false;
    }
    return true;
}

/* AUTH has no filter phase: a->text is still the line's argument. */
static void
proceed_auth(struct pst_session *s, struct pst__args *a)
{
    const char *t = a->text, *ir = NULL;
    size_t n = a->text_len, mlen = 0, irlen = 0;
    while (mlen < n && t[mlen] != ' ')
        mlen++;
    if (mlen < n) {
        ir = t + mlen + 1;
        irlen = n - mlen - 1;
        while (irlen && ir[irlen - 1] == ' ')
            irlen--;
        if (irlen == 0)
            ir = NULL;
    }
    if (mlen == 5 && pst_strncaseeq(t, "PLAIN", 5)) {
        s->sasl = SASL_PLAIN;
    } else if (mlen == 5 && pst_strncaseeq(t, "LOGIN", 5)) {
        s->sasl = SASL_LOGIN_USER;
    } else {
        pst__smtp_reply(s, RP_AUTH_MECH, NULL);
        return;
    }
    if (ir) {
        sasl_response(s, ir, irlen);
        return;
    }
    pst__smtp_state(s, ST_AUTH);
    pst__smtp_reply(s, RP_AUTH_CHALLENGE,   /* LOGIN asks "Username:" */
                    s->sasl == SASL_PLAIN ? "" : "VXNlcm5hbWU6");
}

void
pst_session_auth_done(void *arg, uint64_t sid, const char *login, bool ok)
{
    struct pst_server *srv = arg;
    struct pst_session *s = pst_strmap_get(srv->by_id, &sid, sizeof(sid));
    char q[300];
    if (s == NULL || s->closing || s->st != ST_AUTH_CHECK) {
        pst_debug("sess=%016" PRIx64 " event=auth_result_dropped", sid);
        return;
    }
    pst_log_quote(q, sizeof(q), login, strlen(login));
    pst_stats_auth(ok);
    if (ok) {
        s->auth_login = pst_xstrdup(login);
        SLOG(PST_LOG_INFO, s, "event=auth result=ok login=%s", q);
        pst__smtp_reply(s, RP_AUTH_OK, NULL);
    } else {
        SLOG(PST_LOG_INFO, s, "event=auth result=failed login=%s ip=%s", q,
             s->ipstr);
        pst__smtp_reply(s, RP_AUTH_FAILED, NULL);
    }
    pst__smtp_state(s, ST_CMD);
    pst__smtp_process(s);
}

/* ---- the table ---- */

static const struct pst__command commands[] = {
    {PST_CMD_HELO, "HELO", 0, SP_ANY, check_helo, PST_FP_HELO,
     proceed_helo},
    {PST_CMD_EHLO, "EHLO", 0, SP_ANY, check_helo, PST_FP_HELO,
     proceed_helo},
    {PST_CMD_MAIL, "MAIL", 0, SP_READY, check_mail, PST_FP_MAIL,
     proceed_mail},
    {PST_CMD_RCPT, "RCPT", 0, SP_MAIL | SP_RCPT, check_rcpt, PST_FP_RCPT,
     proceed_rcpt},
    {PST_CMD_DATA, "DATA", CF_NOARG, SP_RCPT, pst__data_check, NO_PHASE,
     pst__data_proceed},
    /* BDAT: its chunk follows whatever the state; check decides where
     * the chunk ends, proceed whether it is kept */
    {PST_CMD_BDAT, "BDAT", 0, SP_ANY, pst__bdat_check, NO_PHASE,
     pst__bdat_proceed},
    {PST_CMD_RSET, "RSET", CF_NOARG, SP_ANY, NULL, NO_PHASE, proceed_rset},
    {PST_CMD_NOOP, "NOOP", 0, SP_ANY, NULL, NO_PHASE, proceed_noop},
    {PST_CMD_QUIT, "QUIT", 0, SP_ANY, NULL, NO_PHASE, proceed_quit},
    {PST_CMD_VRFY, "VRFY", 0, SP_ANY, check_vrfy, NO_PHASE, proceed_vrfy},
    {PST_CMD_HELP, "HELP", 0, SP_ANY, NULL, NO_PHASE, proceed_help},
    {PST_CMD_EXPN, "EXPN", 0, SP_ANY, NULL, NO_PHASE, proceed_expn},
    {PST_CMD_STARTTLS, "STARTTLS", 0, SP_ANY, check_starttls, NO_PHASE,
     proceed_starttls},
    {PST_CMD_AUTH, "AUTH", 0, SP_READY, check_auth, NO_PHASE, proceed_auth},
};

/* The step after a command's filter phase: its proceed, with what its
 * check kept. */
static void
proceed_after_gate(struct pst_session *s)
{
    s->args.cmd->proceed(s, &s->args);
}

/* The filter phase's argument: the HELO name, the sender, the recipient. */
static const char *
phase_arg(const struct pst__args *a, enum pst_fphase ph)
{
    switch (ph) {
    case PST_FP_HELO:
        return a->u.helo.name;
    case PST_FP_MAIL:
        return a->u.mail.path.addr;
    case PST_FP_RCPT:
        return a->u.rcpt.path.addr;
    default:
        return NULL;
    }
}

void
pst__cmd_line(struct pst_session *s, const char *line, size_t len)
{
    struct pst_cmd c;
    const struct pst__command *cmd = NULL;

    pst_cmd_parse(line, len, &c);
    if (len + 2 > pst_cmd_line_max(c.verb) && c.verb != PST_CMD_BDAT) {
        pst__smtp_reply(s, RP_LINE_TOO_LONG, NULL); /* BDAT: chunk follows */
        return;
    }
    for (size_t i = 0; i < PST_ARRAY_LEN(commands) && !cmd; i++)
        if (commands[i].verb == c.verb)
            cmd = &commands[i];
    if (cmd == NULL) {
        char q[80];
        SLOG(PST_LOG_INFO, s, "event=unknown_command line=%s",
             pst_log_quote(q, sizeof(q), line, PST_MIN(len, 32)));
        pst__smtp_reply(s, RP_UNKNOWN_CMD, NULL);
        return;
    }
    if ((cmd->flags & CF_NOARG) && c.arg_len) {
        pst__smtp_reply(s, RP_SYNTAX_NOARG, cmd->name);
        return;
    }
    if (!(cmd->states & position(s))) {
        pst__smtp_reply(s, out_of_sequence(s, c.verb), NULL);
        return;
    }
    struct pst__args *a = &s->args;
    a->cmd = cmd;
    a->line = line;
    a->line_len = len;
    a->text = c.arg;
    a->text_len = c.arg_len;
    if (cmd->check && !cmd->check(s, &c, a))
        return;
    if (cmd->phase == NO_PHASE)
        cmd->proceed(s, a);
    else
        pst__gate(s, cmd->phase, phase_arg(a, cmd->phase),
                  proceed_after_gate);
}

void
pst__cmd_overlong(struct pst_session *s, const char *start, size_t len)
{
    struct pst_cmd c;
    pst_cmd_parse(start, PST_MIN(len, 8), &c);
    if (c.verb == PST_CMD_BDAT)     /* a chunk of unknown size follows */
        pst__bdat_unreadable(s, start, len);
    else
        pst__smtp_reply(s, RP_LINE_TOO_LONG, NULL);
}
