/*
 * policy.c - relay decisions and per-client session counts (policy.h).
 *
 * Relay tricks and what happens to them (client neither trusted nor
 * authenticated, relay.test a relay domain):
 *   u%evil@relay.test, evil!u@relay.test, "u@evil"@relay.test
 *       refused (554 5.7.1): a downstream that still honours the
 *       percent hack, UUCP bang paths or a quoted '@' would relay them.
 *   @relay.test:u@evil  the source route is dropped by the parser (RFC 5321
 *       4.1.1.3), leaving u@evil: refused.
 *   @evil:u@relay.test  leaves u@relay.test: accepted, delivered inside.
 *   u@relay.test.evil, u@evil.relay.test
 *       not the relay domain (exact match only): refused.
 *   u@[127.0.0.1]       address literals are never a relay domain: refused.
 *
 * Recipient files: one address per line ("local@domain" or a bare local
 * part), '#' starts a comment. Local parts are compared ASCII
 * case-insensitively, after removing the quotes of a quoted local part.
 *
 * Ownership: the policy owns copies of everything it needs from the
 * configuration; lookups allocate nothing.
 */
#include "gateway/policy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/domain.h"
#include "core/strmap.h"
#include "core/util.h"

#define PST_RCPT_LINE_MAX 1024

struct rdomain {
    char *domain;                   /* canonical */
    struct pst_strmap *rcpts;       /* lowercase local parts, or NULL */
};

struct pst_policy {
    struct pst_cidr *trusted;
    size_t ntrusted;
    struct pst_strmap *domains;     /* canonical domain -> struct rdomain */
};

static void
rdomain_free(void *v)
{
    struct rdomain *d = v;
    pst_strmap_free(d->rcpts, NULL);
    free(d->domain);
    free(d);
}

/*
 * local_key - the comparison form of a local part: quotes removed, ASCII
 * lowercased. Returns the length, or -1 if it does not fit.
 */
static int
local_key(const char *l, size_t n, char *out, size_t outsz)
{
    size_t o = 0;
    if (n >= 2 && l[0] == '"' && l[n - 1] == '"') {
        l++;
        n -= 2;
        for (size_t i = 0; i < n; i++) {
            char c = l[i];
            if (c == '\\' && i + 1 < n)
                c = l[++i];
            if (o + 1 >= outsz)
                return -1;
            out[o++] = (char)pst_tolower((unsigned char)c);
        }
    } else {
        if (n + 1 > outsz)
            return -1;
        for (size_t i = 0; i < n; i++)
            out[o++] = (char)pst_tolower((unsigned char)l[i]);
    }
    out[o] = '\0';
    return (int)o;
}

struct rlist {
    struct rdomain *d;
    const char *file;
};

/* One address or local part of a recipient list. */
static int
recipient_line(void *arg, char *s, int lineno, struct pst_err *err)
{
    struct rlist *l = arg;
    struct rdomain *d = l->d;
    char key[PST_RCPT_LINE_MAX];
    char *e = s + strlen(s);
    const char *at = strrchr(s, '@');
    size_t llen = at ? (size_t)(at - s) : (size_t)(e - s);

    if (at) {
        char canon[PST_DOMAIN_BUF];
        if (pst_domain_canon(at + 1, (size_t)(e - at - 1), canon) < 0 ||
            strcmp(canon, d->domain) != 0) {
            pst_err_add(err, l->file, lineno, "\"%s\" is not an address in %s",
                        s, d->domain);
            return -EINVAL;
        }
    }
    int kl = local_key(s, llen, key, sizeof(key));
    if (kl <= 0 || kl > 64) {
        pst_err_add(err, l->file, lineno, "bad local part \"%.*s\"",
                    (int)llen, s);
        return -EINVAL;
    }
    *pst_strmap_slot(d->rcpts, key, (size_t)kl, NULL) = d;
    return 0;
}

static int
load_recipients(struct rdomain *d, const char *file, struct pst_err *err)
{
    FILE *f = fopen(file, "r");
    int rc;

    if (f == NULL) {
        rc = -errno;
        pst_err_add(err, file, 0, "cannot open recipient list: %s",
                    strerror(-rc));
        return rc;
    }
    struct rlist l = {d, file};
    d->rcpts = pst_strmap_new();
    rc = pst_map_lines(f, file, PST_RCPT_LINE_MAX, true, recipient_line, &l,
                       err);
    fclose(f);
    return rc;
}

int
pst_policy_new(struct pst_policy **pp, const struct pst_conf *c,
               struct pst_err *err)
{
    struct pst_policy *p = pst_xcalloc(1, sizeof(*p));
    int rc = 0;

    p->ntrusted = c->relay.ntrusted;
    p->trusted = pst_xcalloc(p->ntrusted, sizeof(*p->trusted));
    memcpy(p->trusted, c->relay.trusted, p->ntrusted * sizeof(*p->trusted));
    p->domains = pst_strmap_new();
    for (size_t i = 0; i < c->relay.ndomains; i++) {
        const struct pst_relay_domain *rd = &c->relay.domains[i];
        char canon[PST_DOMAIN_BUF];
        if (pst_domain_canon(rd->domain, strlen(rd->domain), canon) < 0) {
            pst_err_add(err, NULL, 0, "relay domain \"%s\" is not valid",
                        rd->domain);
            rc = -EINVAL;
            continue;
        }
        bool created;
        void **slot = pst_strmap_slot(p->domains, canon, strlen(canon),
                                      &created);
        if (!created)
            continue;
        struct rdomain *d = pst_xcalloc(1, sizeof(*d));
        d->domain = pst_xstrdup(canon);
        *slot = d;
        if (rd->recipients_file) {
            int r = load_recipients(d, rd->recipients_file, err);
            if (r < 0)
                rc = r;
        }
    }
    if (rc < 0) {
        pst_policy_free(p);
        *pp = NULL;
        return rc;
    }
    *pp = p;
    return 0;
}

void
pst_policy_free(struct pst_policy *p)
{
    if (p == NULL)
        return;
    pst_strmap_free(p->domains, rdomain_free);
    free(p->trusted);
    free(p);
}

bool
pst_policy_trusted(const struct pst_policy *p, const struct pst_ip *ip)
{
    return pst_cidr_list_match(p->trusted, p->ntrusted, ip);
}

static const struct rdomain *
find_domain(const struct pst_policy *p, const char *domain, size_t len)
{
    char canon[PST_DOMAIN_BUF];
    if (pst_domain_canon(domain, len, canon) < 0)
        return NULL;
    return pst_strmap_get(p->domains, canon, strlen(canon));
}

bool
pst_policy_relay_domain(const struct pst_policy *p, const char *domain)
{
    return find_domain(p, domain, strlen(domain)) != NULL;
}

enum pst_rcpt_verdict
pst_policy_rcpt(const struct pst_policy *p, const char *addr,
                bool domain_literal, bool may_relay)
{
    const char *at = strrchr(addr, '@');
    char key[PST_RCPT_LINE_MAX];

    if (at == NULL)                 /* <postmaster>: the caller's case */
        return PST_RCPT_ACCEPT;
    const struct rdomain *d =
        domain_literal ? NULL : find_domain(p, at + 1, strlen(at + 1));
    if (d == NULL)
        return may_relay ? PST_RCPT_ACCEPT : PST_RCPT_RELAY_DENIED;
    int kl = local_key(addr, (size_t)(at - addr), key, sizeof(key));
    if (kl <= 0)
        return PST_RCPT_RELAY_DENIED;
    if (!may_relay && strpbrk(key, "@%!") != NULL)
        return PST_RCPT_RELAY_DENIED;
    if (d->rcpts == NULL || strcmp(key, "postmaster") == 0)
        return PST_RCPT_ACCEPT;
    if (pst_strmap_get(d->rcpts, key, (size_t)kl) == NULL)
        return PST_RCPT_UNKNOWN_USER;
    return PST_RCPT_ACCEPT;
}

/* ---- session counts ---- */

struct pst_ipcount {
    unsigned v6prefix;
    struct pst_strmap *m;           /* masked address -> count (uintptr_t) */
};

struct pst_ipcount *
pst_ipcount_new(unsigned ipv6_prefix)
{
    struct pst_ipcount *c = pst_xcalloc(1, sizeof(*c));
    c->v6prefix = ipv6_prefix;
    c->m = pst_strmap_new();
    return c;
}

void
pst_ipcount_free(struct pst_ipcount *c)
{
    if (c == NULL)
        return;
    pst_strmap_free(c->m, NULL);
    free(c);
}

unsigned
pst_ipcount_add(struct pst_ipcount *c, const struct pst_ip *ip)
{
    unsigned char b[PST_IP_KEY_MAX];
    size_t n = pst_ip_key(ip, c->v6prefix, b);
    void **slot = pst_strmap_slot(c->m, b, n, NULL);
    uintptr_t v = (uintptr_t)*slot + 1;
    *slot = (void *)v;
    return (unsigned)v;
}

void
pst_ipcount_remove(struct pst_ipcount *c, const struct pst_ip *ip)
{
    unsigned char b[PST_IP_KEY_MAX];
    size_t n = pst_ip_key(ip, c->v6prefix, b);
    void **slot = pst_strmap_slot(c->m, b, n, NULL);
    uintptr_t v = (uintptr_t)*slot;
    if (v <= 1)
        pst_strmap_del(c->m, b, n);
    else
        *slot = (void *)(v - 1);
}
