/*
 * spf.c - the SPF module ("spf"): RFC 7208 check_host() of the MAIL FROM
 * identity (postmaster@HELO for the null sender; optionally the HELO
 * identity too) against the client's address, a policy per result with
 * RFC 7372 replies, and Received-SPF (RFC 7208 9.1) and
 * Authentication-Results (RFC 8601) on every accepted message of a
 * checked client.
 *
 *   { module = "spf";
 *     helpers = 4;               # helper processes, 1..64
 *     timeout = 20;              # seconds for one check, 1..300, less
 *                                # than the chain's deadline (30)
 *     reject_at = "rcpt";        # where a refusal is given: mail, rcpt,
 *                                # data (the reply to the final dot)
 *     check_helo = false;        # also check the HELO identity
 *     skip_trusted = true;       # relay.trusted_networks are not checked
 *     skip_authenticated = true; # nor clients that gave AUTH
 *     pass = "accept"; none = "accept"; neutral = "accept";
 *     softfail = "accept"; fail = "reject"; temperror = "tempfail";
 *     permerror = "accept";      # each: accept, reject or tempfail
 *     cache_entries = 10000; cache_bytes = 4194304; # answers, results
 *     max_ttl = 3600;
 *     helper = "/usr/lib/postern/postern-spf"; # default: beside postern
 *   }
 *
 * The check runs at MAIL (on_mail, offloaded to the filter worker pool:
 * spf_run blocks on a helper process, pool.c), unless the pool's result
 * cache has it: then at once, on the loop thread. Its verdict is kept in the
 * message state and given where reject_at says; "accept" only records.
 * A helper that crashes, hangs or misbehaves makes the result temperror
 * (the module's failure mode), logged with why and counted.
 *
 * Replies: fail 550 5.7.23 (RFC 7372), temperror 451 4.7.24, permerror
 * 550 5.7.24; any other result refused by policy 550/451 x.7.23.
 *
 * The Authentication-Results trust boundary (authres.c) runs here too,
 * so a forged result under our authserv-id never passes, with or without
 * the headers module.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/net.h"
#include "filters/authres.h"
#include "filters/filter.h"
#include "filters/spf/spf_int.h"

enum action { A_ACCEPT, A_TEMPFAIL, A_REJECT };
enum where { W_MAIL, W_RCPT, W_DATA };

struct sconf {
    unsigned helpers;
    unsigned timeout_ms;
    enum where where;
    bool check_helo, skip_trusted, skip_auth;
    enum action policy[SPF_R_COUNT];
    size_t cache_entries, cache_bytes;
    unsigned max_ttl;
    char *helper_path;
    int exe_fd;
    char *authserv_id;
    char *receiver;
    struct spf_rconf rc;
    struct spf_pool *pool;          /* after start */
};

struct check {
    bool done;
    enum spf_result result;
    bool helper_failed;
    char why[SPF_DETAIL_MAX];
};

/* per message */
struct mstate {
    bool checked;                   /* a check ran (or was decided) */
    bool helo_checked;
    struct check mf, helo;
    enum action act;                /* the strictest of the two */
    int code;
    char enh[8];
    char text[PST_FREPLY_TEXT_MAX + 1];
    char ip[PST_IP_STRLEN];
    char sender[SPF_SENDER_MAX + 1];    /* as checked (a longer one is */
    char helo_name[SPF_NAME_MAX + 1];   /* not checked: result none) */
};

struct job {
    struct spf_pool *pool;
    struct pst_fref ref;
    int family;
    uint8_t addr[16];
    char *sender, *helo, *receiver;
    bool check_helo;
    struct spf_out mf, ho;
    bool ho_run;
};

/* ---- config ---- */

static const char *const result_keys[SPF_R_COUNT] = {
    "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"};

/* the generation is gone: the helpers stop (a check in flight keeps its
 * pool until it ends) */
static void
spf_stop(void *p)
{
    struct sconf *c = p;
    if (c->pool != NULL) {
        spf_pool_unref(c->pool);
        c->pool = NULL;
        pst_info("event=spf_helpers_stopped");
    }
}

static void
sconf_free(void *p)
{
    struct sconf *c = p;
    if (c == NULL)
        return;
    if (c->pool)
        spf_pool_unref(c->pool);    /* owns exe_fd from start on */
    else if (c->exe_fd >= 0)
        close(c->exe_fd);
    free(c->helper_path);
    free(c->authserv_id);
    free(c->receiver);
    free(c->rc.servers);
    free(c);
}

static int
get_uint(const config_setting_t *s, const char *k, unsigned def,
         unsigned min, unsigned max, const char *file, struct pst_err *err,
         unsigned *out)
{
    const config_setting_t *m = config_setting_get_member(s, k);
    *out = def;
    if (m == NULL)
        return 0;
    if ((config_setting_type(m) != CONFIG_TYPE_INT &&
         config_setting_type(m) != CONFIG_TYPE_INT64) ||
        config_setting_get_int64(m) < min ||
        config_setting_get_int64(m) > max) {
        pst_fconf_error(err, file, m,
                        "filter spf: %s must be an integer %u..%u", k, min,
                        max);
        return -1;
    }
    *out = (unsigned)config_setting_get_int64(m);
    return 0;
}

static int
get_bool(const config_setting_t *s, const char *k, bool def,
         const char *file, struct pst_err *err, bool *out)
{
    const config_setting_t *m = config_setting_get_member(s, k);
    *out = def;
    if (m == NULL)
        return 0;
    if (config_setting_type(m) != CONFIG_TYPE_BOOL) {
        pst_fconf_error(err, file, m, "filter spf: %s must be true or false",
                        k);
        return -1;
    }
    *out = config_setting_get_bool(m) != 0;
    return 0;
}

/* a word from words[] (NULL ended) into *out */
static int
get_word(const config_setting_t *s, const char *k, const char *const *words,
         int def, const char *file, struct pst_err *err, int *out)
{
    const config_setting_t *m = config_setting_get_member(s, k);
    const char *v;
    *out = def;
    if (m == NULL)
        return 0;
    v = config_setting_get_string(m);
    for (int i = 0; v && words[i]; i++) {
        if (strcmp(words[i], v) == 0) {
            *out = i;
            return 0;
        }
    }
    pst_fconf_error(err, file, m, "filter spf: %s must be one of%s%s%s%s%s%s",
                    k, words[0] ? " " : "", words[0] ? words[0] : "",
                    words[1] ? ", " : "", words[1] ? words[1] : "",
                    words[2] ? ", " : "", words[2] ? words[2] : "");
    return -1;
}

/* the helper executable: the path given, or postern-spf beside the
 * running binary; opened O_PATH now, so the pool can start it later
 * whatever the privileges then */
static int
open_helper(struct sconf *c, const config_setting_t *s, const char *file,
            struct pst_err *err)
{
    return pst_fconf_helper(s, file, "spf", "postern-spf", &c->helper_path,
                            &c->exe_fd, err);
}

static int
spf_configure(const config_setting_t *s, const char *file,
              const struct pst_fhost *host, void **out, struct pst_err *err)
{
    static const char *const keys[] = {
        "helpers", "timeout", "reject_at", "check_helo", "skip_trusted",
        "skip_authenticated", "none", "neutral", "pass", "fail",
        "softfail", "temperror", "permerror", "cache_entries",
        "cache_bytes", "max_ttl", "helper", NULL};
    static const char *const actions[] = {"accept", "tempfail", "reject",
                                          NULL};
    static const char *const wheres[] = {"mail", "rcpt", "data", NULL};
    static const enum action defaults[SPF_R_COUNT] = {
        A_ACCEPT, A_ACCEPT, A_ACCEPT, A_REJECT, A_ACCEPT, A_TEMPFAIL,
        A_ACCEPT};
    struct sconf *c = pst_xcalloc(1, sizeof(*c));
    bool bad = pst_fconf_check_keys(s, file, keys, err) > 0;
    unsigned timeout, ce, cb, v;
    int w;

    c->exe_fd = -1;
    bad |= get_uint(s, "helpers", 4, 1, 64, file, err, &c->helpers) < 0;
    bad |= get_uint(s, "timeout", 20, 1, 300, file, err, &timeout) < 0;
    bad |= get_word(s, "reject_at", wheres, W_RCPT, file, err, &w) < 0;
    c->where = (enum where)w;
    bad |= get_bool(s, "check_helo", false, file, err, &c->check_helo) < 0;
    bad |= get_bool(s, "skip_trusted", true, file, err, &c->skip_trusted) < 0;
    bad |= get_bool(s, "skip_authenticated", true, file, err,
                    &c->skip_auth) < 0;
    for (int r = 0; r < SPF_R_COUNT; r++) {
        bad |= get_word(s, result_keys[r], actions, (int)defaults[r], file,
                        err, &w) < 0;
        c->policy[r] = (enum action)w;
    }
    bad |= get_uint(s, "cache_entries", 10000, 0, 1000000, file, err, &ce) <
           0;
    bad |= get_uint(s, "cache_bytes", 4 << 20, 0, 1u << 30, file, err,
                    &cb) < 0;
    bad |= get_uint(s, "max_ttl", 3600, 0, 86400, file, err,
                    &c->max_ttl) < 0;
    c->cache_entries = ce;
    c->cache_bytes = cb;
    c->timeout_ms = timeout * 1000;
    /* the chain's deadline must leave the check its time */
    const config_setting_t *dl = config_setting_get_member(s, "deadline");
    double deadline = 30;
    if (dl && config_setting_type(dl) == CONFIG_TYPE_FLOAT)
        deadline = config_setting_get_float(dl);
    else if (dl)
        deadline = (double)config_setting_get_int64(dl);
    if (!bad && (double)timeout >= deadline) {
        pst_fconf_error(err, file, dl ? dl : s,
                        "filter spf: timeout (%u s) must be less than the "
                        "filter's deadline (%g s)", timeout, deadline);
        bad = true;
    }
    (void)v;
    if (!bad && open_helper(c, s, file, err) < 0)
        bad = true;
    if (bad) {
        sconf_free(c);
        return -1;
    }
    c->authserv_id = pst_xstrdup(host && host->authserv_id
                                     ? host->authserv_id
                                     : "localhost");
    c->receiver = pst_xstrdup(host && host->hostname ? host->hostname
                                                     : "localhost");
    c->rc.timeout_ms = host ? host->dns_timeout_ms : 0;
    c->rc.tries = host ? host->dns_tries : 0;
    c->rc.max_ttl = c->max_ttl;
    if (host && host->nnameservers > 0) {
        size_t len = 1;
        for (size_t i = 0; i < host->nnameservers; i++)
            len += strlen(host->nameservers[i]) + 1;
        c->rc.servers = pst_xmalloc(len);
        c->rc.servers[0] = '\0';
        for (size_t i = 0; i < host->nnameservers; i++) {
            if (i)
                strcat(c->rc.servers, ",");
            strcat(c->rc.servers, host->nameservers[i]);
        }
    }
    *out = c;
    return 0;
}

static int
spf_start(void *p, struct pst_err *err)
{
    struct sconf *c = p;
    char why[160];
    struct spf_popts o = {
        .exe_fd = c->exe_fd,
        .helpers = c->helpers,
        .timeout_ms = c->timeout_ms,
        .rc = c->rc,
        .cache_entries = c->cache_entries,
        .cache_bytes = c->cache_bytes,
    };
    if (c->pool != NULL)
        return 0;
    c->exe_fd = -1;                 /* the pool's now */
    if (spf_pool_new(&o, &c->pool, why, sizeof(why)) < 0) {
        pst_err_add(err, NULL, 0, "filter spf: %s (%s)", why,
                    c->helper_path);
        return -1;
    }
    pst_info("event=spf_helpers_started helpers=%u helper=%s", c->helpers,
             c->helper_path);
    return 0;
}

/* ---- replies and fields ---- */

/* the identity checked: the sender, or postmaster@helo */
static void
identity(const char *sender, const char *helo, char *out, size_t n)
{
    if (sender[0])
        snprintf(out, n, "%s", sender);
    else
        snprintf(out, n, "postmaster@%s", helo);
}

static const char *
domain_of(const char *id)
{
    const char *at = strrchr(id, '@');
    return at ? at + 1 : id;
}

/* the reply for a refusal of result r under identity id */
static void
set_reply(struct mstate *m, const struct check *ck, const char *id)
{
    bool temp = m->act == A_TEMPFAIL;
    bool err = ck->result == SPF_R_TEMPERROR || ck->result == SPF_R_PERMERROR;
    char dom[100];
    /* the domain passed identity checks (ASCII host name) or is
     * whatever the client said: keep the reply printable and short */
    size_t k = 0;
    for (const char *p = domain_of(id); *p && k < sizeof(dom) - 1; p++)
        dom[k++] = (*p > 0x20 && *p < 0x7f) ? *p : '?';
    dom[k] = '\0';
    m->code = temp ? 451 : 550;
    snprintf(m->enh, sizeof(m->enh), "%c.7.%s", temp ? '4' : '5',
             err ? "24" : "23");
    switch (ck->result) {
    case SPF_R_FAIL:
        snprintf(m->text, sizeof(m->text),
                 "SPF fail: %s does not designate %s as a permitted sender",
                 dom, m->ip);
        break;
    case SPF_R_TEMPERROR:
        snprintf(m->text, sizeof(m->text),
                 "SPF temperror: cannot check %s now, try again later", dom);
        break;
    case SPF_R_PERMERROR:
        snprintf(m->text, sizeof(m->text),
                 "SPF permerror: the SPF record of %s is in error", dom);
        break;
    default:
        snprintf(m->text, sizeof(m->text),
                 "SPF %s for %s from %s, refused by policy",
                 spf_result_name(ck->result), dom, m->ip);
        break;
    }
}

static bool
is_atext(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c >= 0x80 ||
           strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* v as a dot-atom if it is one, else as a quoted-string */
static void
put_value(char *o, size_t n, const char *v)
{
    bool atom = v[0] != '\0' && v[0] != '.';
    for (const char *p = v; *p && atom; p++)
        atom = is_atext((unsigned char)*p) ||
               (*p == '.' && p[1] != '.' && p[1] != '\0');
    size_t k = strlen(o);
    if (atom) {
        snprintf(o + k, n - k, "%s", v);
        return;
    }
    if (k < n - 1)
        o[k++] = '"';
    for (const char *p = v; *p && k < n - 3; p++) {
        if (*p == '"' || *p == '\\')
            o[k++] = '\\';
        o[k++] = *p;
    }
    o[k++] = '"';
    o[k] = '\0';
}

/* text for a comment: parentheses and backslashes quoted */
static void
put_ctext(char *o, size_t n, const char *v)
{
    size_t k = strlen(o);
    for (const char *p = v; *p && k < n - 2; p++) {
        if (*p == '(' || *p == ')' || *p == '\\')
            o[k++] = '\\';
        o[k++] = *p;
    }
    o[k] = '\0';
}

static void
add_received_spf(struct pst_fctx *fc, struct sconf *c, struct mstate *m,
                 const struct check *ck, bool helo_identity)
{
    char id[SPF_SENDER_MAX + SPF_NAME_MAX + 16];
    char v[2048], comment[800];
    const char *res = spf_result_name(ck->result);
    identity(helo_identity ? "" : m->sender, m->helo_name, id, sizeof(id));
    const char *who = id;
    switch (ck->result) {
    case SPF_R_PASS:
        snprintf(comment, sizeof(comment),
                 "domain of %s designates %s as permitted sender", who,
                 m->ip);
        break;
    case SPF_R_FAIL:
        snprintf(comment, sizeof(comment),
                 "domain of %s does not designate %s as permitted sender",
                 who, m->ip);
        break;
    case SPF_R_SOFTFAIL:
        snprintf(comment, sizeof(comment),
                 "domain of transitioning %s does not designate %s as "
                 "permitted sender", who, m->ip);
        break;
    case SPF_R_NEUTRAL:
        snprintf(comment, sizeof(comment),
                 "%s is neither permitted nor denied by domain of %s", m->ip,
                 who);
        break;
    case SPF_R_NONE:
        snprintf(comment, sizeof(comment),
                 "domain of %s does not designate permitted sender hosts",
                 who);
        break;
    default:
        snprintf(comment, sizeof(comment), "error checking domain of %s: %s",
                 who, ck->why[0] ? ck->why : res);
        break;
    }
    snprintf(v, sizeof(v), "%s (%s: ", res, c->receiver);
    put_ctext(v, sizeof(v), comment);
    snprintf(v + strlen(v), sizeof(v) - strlen(v), ") client-ip=%s;"
             " envelope-from=", m->ip);
    put_value(v, sizeof(v), id);
    snprintf(v + strlen(v), sizeof(v) - strlen(v), "; helo=");
    put_value(v, sizeof(v), m->helo_name[0] ? m->helo_name : "unknown");
    snprintf(v + strlen(v), sizeof(v) - strlen(v), "; receiver=%s;"
             " identity=%s", c->receiver, helo_identity ? "helo" : "mailfrom");
    if ((ck->result == SPF_R_TEMPERROR || ck->result == SPF_R_PERMERROR) &&
        ck->why[0]) {
        snprintf(v + strlen(v), sizeof(v) - strlen(v), "; problem=");
        put_value(v, sizeof(v), ck->why);
    }
    if (pst_hdr_add_raw(fc, "Received-SPF", v, true) < 0)
        pst_fctx_log(fc, PST_LOG_WARN, "event=spf_header_refused "
                     "field=Received-SPF");
}

static void
add_auth_results(struct pst_fctx *fc, struct sconf *c, struct mstate *m)
{
    char v[2048];
    snprintf(v, sizeof(v), "%s;", c->authserv_id);
    if (m->helo_checked) {
        snprintf(v + strlen(v), sizeof(v) - strlen(v),
                 " spf=%s smtp.helo=", spf_result_name(m->helo.result));
        put_value(v, sizeof(v), m->helo_name);
        if (m->checked)
            snprintf(v + strlen(v), sizeof(v) - strlen(v), ";");
    }
    if (m->checked) {
        if (m->sender[0]) {
            snprintf(v + strlen(v), sizeof(v) - strlen(v),
                     " spf=%s smtp.mailfrom=", spf_result_name(m->mf.result));
            /* an address is a pvalue as it is (RFC 8601 2.2) */
            snprintf(v + strlen(v), sizeof(v) - strlen(v), "%s", m->sender);
        } else if (!m->helo_checked) {
            snprintf(v + strlen(v), sizeof(v) - strlen(v),
                     " spf=%s smtp.helo=", spf_result_name(m->mf.result));
            put_value(v, sizeof(v), m->helo_name);
        }
    }
    if (pst_hdr_add_raw(fc, "Authentication-Results", v, true) < 0)
        pst_fctx_log(fc, PST_LOG_WARN, "event=spf_header_refused "
                     "field=Authentication-Results");
}

/* ---- hooks ---- */

static void
work(void *arg)
{
    struct job *j = arg;
    if (j->check_helo && j->sender[0]) {
        spf_run(j->pool, j->family, j->addr, "", j->helo, j->receiver,
                &j->ho);
        j->ho_run = true;
    }
    spf_run(j->pool, j->family, j->addr, j->sender, j->helo, j->receiver,
            &j->mf);
}

static void
job_free(struct job *j)
{
    spf_pool_unref(j->pool);
    free(j->sender);
    free(j->helo);
    free(j->receiver);
    free(j);
}

static void
take(struct check *ck, const struct spf_out *o)
{
    ck->done = true;
    ck->result = o->result;
    ck->helper_failed = o->helper_failed;
    snprintf(ck->why, sizeof(ck->why), "%s", o->why);
}

static enum pst_verdict
verdict_of(const struct mstate *m)
{
    return m->act == A_REJECT     ? PST_REJECT
           : m->act == A_TEMPFAIL ? PST_TEMPFAIL
                                  : PST_CONTINUE;
}

static void
log_check(struct pst_fctx *fc, const struct mstate *m, const struct check *ck,
          const char *identity_kind, unsigned queries, bool cached,
          enum action a)
{
    char id[64];
    pst_log_quote(id, sizeof(id), m->sender, strlen(m->sender));
    pst_fctx_log(fc, ck->helper_failed ? PST_LOG_WARN : PST_LOG_INFO,
                 "event=spf identity=%s result=%s ip=%s sender=%s "
                 "queries=%u%s action=%s%s%s%s",
                 identity_kind, spf_result_name(ck->result), m->ip, id,
                 queries, cached ? " cached=yes" : "",
                 a == A_REJECT ? "reject" : a == A_TEMPFAIL ? "tempfail"
                                                            : "accept",
                 ck->why[0] ? " why=\"" : "", ck->why,
                 ck->why[0] ? "\"" : "");
}

/* the outcome of the checks (ho: the HELO identity's, or NULL), logged,
 * kept in the message state; the verdict to give at MAIL */
static enum pst_verdict
conclude(struct pst_fctx *fc, const struct spf_out *ho,
         const struct spf_out *mf, bool cached)
{
    struct sconf *c = pst_fctx_conf(fc);
    struct mstate *m = pst_fctx_state(fc);
    enum action ah = A_ACCEPT, am;

    if (ho != NULL) {
        take(&m->helo, ho);
        m->helo_checked = true;
        ah = c->policy[m->helo.result];
        log_check(fc, m, &m->helo, "helo", ho->queries, cached, ah);
    }
    take(&m->mf, mf);
    m->checked = true;
    am = c->policy[m->mf.result];
    log_check(fc, m, &m->mf, m->sender[0] ? "mailfrom" : "helo",
              mf->queries, cached, am);
    char id[SPF_SENDER_MAX + SPF_NAME_MAX + 16];
    if (ah > am) {
        m->act = ah;
        identity("", m->helo_name, id, sizeof(id));
        set_reply(m, &m->helo, id);
    } else {
        m->act = am;
        identity(m->sender, m->helo_name, id, sizeof(id));
        if (am != A_ACCEPT)
            set_reply(m, &m->mf, id);
    }
    if (m->act != A_ACCEPT && c->where == W_MAIL) {
        pst_fctx_reply(fc, m->code, m->enh, m->text);
        return verdict_of(m);
    }
    return PST_CONTINUE;
}

static void
done(void *arg)
{
    struct job *j = arg;
    struct pst_fctx *fc = pst_fctx_lookup(j->ref);
    if (fc != NULL)
        pst_fctx_resume(fc, conclude(fc, j->ho_run ? &j->ho : NULL, &j->mf,
                                     false));
    job_free(j);
}

static enum pst_verdict
spf_on_mail(struct pst_fctx *fc, const char *sender)
{
    struct sconf *c = pst_fctx_conf(fc);
    struct mstate *m = pst_fctx_state(fc);
    const struct pst_envelope *env = pst_fctx_env(fc);
    const char *helo = env->helo ? env->helo : "";

    if (c->pool == NULL || m == NULL)
        return PST_CONTINUE;        /* not started: check-config, tests */
    if ((c->skip_trusted && env->trusted) ||
        (c->skip_auth && env->auth_login != NULL)) {
        pst_fctx_log(fc, PST_LOG_DEBUG, "event=spf_skipped why=%s",
                     env->trusted ? "trusted" : "authenticated");
        return PST_CONTINUE;
    }
    pst_ip_str(&env->client_ip, m->ip, sizeof(m->ip));
    snprintf(m->sender, sizeof(m->sender), "%s", sender);
    snprintf(m->helo_name, sizeof(m->helo_name), "%s", helo);

    /* a result still good from an earlier check: no helper, no hand-off */
    struct spf_out ho, mf;
    bool with_helo = c->check_helo && sender[0];
    const uint8_t *addr = env->client_ip.addr;
    int family = env->client_ip.family;
    if ((!with_helo || spf_cached(c->pool, family, addr, "", helo, &ho)) &&
        spf_cached(c->pool, family, addr, sender, helo, &mf)) {
        if (with_helo)
            spf_count(c->pool, &ho);
        spf_count(c->pool, &mf);
        return conclude(fc, with_helo ? &ho : NULL, &mf, true);
    }

    struct job *j = pst_xcalloc(1, sizeof(*j));
    spf_pool_ref(c->pool);
    j->pool = c->pool;
    j->ref = pst_fctx_ref(fc);
    j->family = family;
    memcpy(j->addr, addr, 16);
    j->sender = pst_xstrdup(sender);
    j->helo = pst_xstrdup(helo);
    j->receiver = pst_xstrdup(c->receiver);
    j->check_helo = c->check_helo;
    if (pst_fctx_offload(fc, j, work, done) < 0) {
        job_free(j);
        pst_fctx_log(fc, PST_LOG_WARN, "event=spf result=temperror "
                     "why=\"no worker\"");
        m->act = c->policy[SPF_R_TEMPERROR];
        if (m->act == A_ACCEPT)
            return PST_CONTINUE;
        m->mf.result = SPF_R_TEMPERROR;
        set_reply(m, &m->mf, sender[0] ? sender : helo);
        pst_fctx_reply(fc, m->code, m->enh, m->text);
        return verdict_of(m);
    }
    return PST_PENDING;
}

static enum pst_verdict
refuse_here(struct pst_fctx *fc, struct sconf *c, struct mstate *m,
            enum where here)
{
    if (m == NULL || !m->checked || m->act == A_ACCEPT || c->where != here)
        return PST_CONTINUE;
    pst_fctx_reply(fc, m->code, m->enh, m->text);
    return verdict_of(m);
}

static enum pst_verdict
spf_on_rcpt(struct pst_fctx *fc, const char *rcpt)
{
    (void)rcpt;
    return refuse_here(fc, pst_fctx_conf(fc), pst_fctx_state(fc), W_RCPT);
}

static enum pst_verdict
spf_on_headers(struct pst_fctx *fc)
{
    struct sconf *c = pst_fctx_conf(fc);
    struct mstate *m = pst_fctx_state(fc);
    pst__authres_boundary(fc, c->authserv_id);
    enum pst_verdict v = refuse_here(fc, c, m, W_DATA);
    if (v != PST_CONTINUE || m == NULL || !m->checked)
        return v;
    if (m->helo_checked)
        add_received_spf(fc, c, m, &m->helo, true);
    add_received_spf(fc, c, m, &m->mf, m->sender[0] == '\0');
    add_auth_results(fc, c, m);
    return PST_CONTINUE;
}

const struct pst_filter pst_filter_spf = {
    .name = "spf",
    PST_FILTER_ABI,
    .msg_state_size = sizeof(struct mstate),
    .configure = spf_configure,
    .unconfigure = sconf_free,
    .start = spf_start,
    .stop = spf_stop,
    .on_mail = spf_on_mail,
    .on_rcpt = spf_on_rcpt,
    .on_headers = spf_on_headers,
};
