/*
 * addrlist.c - RFC 5322 address-list parser (see addrlist.h).
 *
 * A small lexer turns the input into tokens - atoms, quoted strings,
 * domain literals and the specials < > @ , ; : . - skipping CFWS (blanks,
 * line ends and nested comments) between them; a recursive-descent parser
 * over the tokens records the byte ranges of each mailbox's parts. The
 * lexer never allocates; the only allocation is the result array.
 */
#include "filters/addrlist.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

enum tk { T_END, T_ATOM, T_QSTR, T_DLIT, T_SPECIAL, T_BAD };

struct tok {
    enum tk t;
    char c;                         /* T_SPECIAL */
    size_t off, end;
};

struct P {
    const char *s;
    size_t n, i;                    /* i: next unread byte */
    size_t err;
    bool e2big;
    struct pst_addrlist *out;
    size_t cap;
};

static bool
is_atext(unsigned char c)
{
    if (c >= 0x80)
        return true;                /* UTF-8 (RFC 6532) */
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* Skip blanks, line ends and comments; false on a broken comment. */
static bool
skip_cfws(struct P *p)
{
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            p->i++;
            continue;
        }
        if (c != '(')
            return true;
        int depth = 0;
        size_t st = p->i;
        while (p->i < p->n) {
            c = p->s[p->i++];
            if (c == '\\') {
                if (p->i < p->n)
                    p->i++;
            } else if (c == '(') {
                if (++depth > PST_ADDR_COMMENT_MAX) {
                    p->e2big = true;
                    p->err = p->i - 1;
                    return false;
                }
            } else if (c == ')') {
                if (--depth == 0)
                    break;
            }
        }
        if (depth != 0) {
            p->err = st;
            return false;
        }
    }
    return true;
}

/* Read the next token (after CFWS) without consuming it. */
static void
peek(struct P *p, struct tok *t)
{
    size_t save = p->i;
    memset(t, 0, sizeof(*t));
    if (!skip_cfws(p)) {
        t->t = T_BAD;
        t->off = p->err;
        p->i = save;
        return;
    }
    size_t i = p->i;
    t->off = i;
    p->i = save;
    if (i >= p->n) {
        t->t = T_END;
        t->end = i;
        return;
    }
    unsigned char c = (unsigned char)p->s[i];
    if (c == '"' || c == '[') {
        char close = c == '"' ? '"' : ']';
        size_t j = i + 1;
        while (j < p->n && p->s[j] != close) {
            if (p->s[j] == '\\' && j + 1 < p->n)
                j++;
            else if (c == '[' && (p->s[j] == '[' || p->s[j] == '\\'))
                break;
            j++;
        }
        if (j >= p->n || p->s[j] != close) {
            t->t = T_BAD;
            return;
        }
        t->t = c == '"' ? T_QSTR : T_DLIT;
        t->end = j + 1;
        return;
    }
    if (is_atext(c)) {
        size_t j = i;
        while (j < p->n && is_atext((unsigned char)p->s[j]))
            j++;
        t->t = T_ATOM;
        t->end = j;
        return;
    }
    if (strchr("<>@,;:.", c) != NULL) {
        t->t = T_SPECIAL;
        t->c = (char)c;
        t->end = i + 1;
        return;
    }
    t->t = T_BAD;
}

static void
take(struct P *p, const struct tok *t)
{
    p->i = t->end;
}

static bool
is_sp(const struct tok *t, char c)
{
    return t->t == T_SPECIAL && t->c == c;
}

static int
fail_at(struct P *p, size_t at)
{
    p->err = at;
    return -1;
}

/* domain = dot-atom / domain-literal (obs: CFWS between the parts) */
static int
parse_domain(struct P *p, size_t *off, size_t *len)
{
    struct tok t;
    peek(p, &t);
    if (t.t == T_DLIT) {
        take(p, &t);
        *off = t.off;
        *len = t.end - t.off;
        return 0;
    }
    if (t.t != T_ATOM)
        return fail_at(p, t.off);
    take(p, &t);
    *off = t.off;
    size_t end = t.end;
    for (;;) {
        peek(p, &t);
        if (!is_sp(&t, '.'))
            break;
        take(p, &t);
        peek(p, &t);
        if (t.t != T_ATOM)
            return fail_at(p, t.off);
        take(p, &t);
        end = t.end;
    }
    *len = end - *off;
    return 0;
}

/* local-part = dot-atom / quoted-string / obs-local-part (words and dots) */
static int
parse_local(struct P *p, size_t *off, size_t *len)
{
    struct tok t;
    bool want_word = true;
    size_t end = 0;
    peek(p, &t);
    *off = t.off;
    for (;;) {
        peek(p, &t);
        if (want_word && (t.t == T_ATOM || t.t == T_QSTR)) {
            take(p, &t);
            end = t.end;
            want_word = false;
        } else if (!want_word && is_sp(&t, '.')) {
            take(p, &t);
            want_word = true;
        } else {
            break;
        }
    }
    if (want_word)
        return fail_at(p, t.off);
    *len = end - *off;
    return 0;
}

static struct pst_addr *
add_addr(struct P *p)
{
    struct pst_addrlist *l = p->out;
    if (l->n >= PST_ADDRLIST_MAX) {
        p->e2big = true;
        return NULL;
    }
    if (l->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 8;
        l->v = pst_xrealloc(l->v, p->cap * sizeof(*l->v));
    }
    struct pst_addr *a = &l->v[l->n++];
    memset(a, 0, sizeof(*a));
    a->group = -1;
    return a;
}

/* angle-addr after its '<': [obs-route] addr-spec '>' */
static int
parse_angle(struct P *p, struct pst_addr *a)
{
    struct tok t;
    peek(p, &t);
    if (is_sp(&t, '@')) {           /* obs-route: @a,@b: */
        for (;;) {
            peek(p, &t);
            if (is_sp(&t, ',')) {
                take(p, &t);
                continue;
            }
            if (!is_sp(&t, '@'))
                break;
            take(p, &t);
            size_t o, l;
            if (parse_domain(p, &o, &l) < 0)
                return -1;
        }
        if (!is_sp(&t, ':'))
            return fail_at(p, t.off);
        take(p, &t);
    }
    if (parse_local(p, &a->local_off, &a->local_len) < 0)
        return -1;
    peek(p, &t);
    if (!is_sp(&t, '@'))
        return fail_at(p, t.off);
    take(p, &t);
    if (parse_domain(p, &a->domain_off, &a->domain_len) < 0)
        return -1;
    peek(p, &t);
    if (!is_sp(&t, '>'))
        return fail_at(p, t.off);
    take(p, &t);
    a->end = t.end;
    return 0;
}

/*
 * One mailbox, or (when group < 0) possibly a group. The leading words
 * decide: followed by '<' they are a display name, by '@' a local part,
 * by ':' a group name.
 */
static int
parse_address(struct P *p, int group)
{
    struct tok t, first;
    size_t words_end = 0, nwords = 0;

    peek(p, &first);
    for (;;) {
        peek(p, &t);
        if (t.t == T_ATOM || t.t == T_QSTR || is_sp(&t, '.')) {
            take(p, &t);
            words_end = t.end;
            nwords++;
            continue;
        }
        break;
    }
    if (t.t == T_BAD)
        return fail_at(p, t.off);
    if (is_sp(&t, '<')) {
        struct pst_addr *a = add_addr(p);
        if (a == NULL)
            return fail_at(p, t.off);
        a->group = group;
        a->start = nwords ? first.off : t.off;
        if (nwords) {
            a->display_off = first.off;
            a->display_len = words_end - first.off;
        }
        take(p, &t);
        return parse_angle(p, a);
    }
    if (is_sp(&t, '@') && nwords) {
        struct pst_addr *a = add_addr(p);
        if (a == NULL)
            return fail_at(p, t.off);
        a->group = group;
        a->start = first.off;
        /* the words were the local part: check their shape */
        size_t save = p->i;
        p->i = first.off;
        if (parse_local(p, &a->local_off, &a->local_len) < 0 ||
            a->local_off + a->local_len != words_end)
            return fail_at(p, first.off);
        p->i = save;
        take(p, &t);
        if (parse_domain(p, &a->domain_off, &a->domain_len) < 0)
            return -1;
        a->end = a->domain_off + a->domain_len;
        return 0;
    }
    if (is_sp(&t, ':') && nwords && group < 0) {
        int g = (int)p->out->ngroups++;
        take(p, &t);
        for (;;) {
            peek(p, &t);
            if (is_sp(&t, ';')) {
                take(p, &t);
                return 0;
            }
            if (is_sp(&t, ',')) {
                take(p, &t);
                continue;
            }
            if (t.t == T_END)
                return fail_at(p, t.off); /* group without ';' */
            if (parse_address(p, g) < 0)
                return -1;
            peek(p, &t);
            if (!is_sp(&t, ',') && !is_sp(&t, ';'))
                return fail_at(p, t.off);
        }
    }
    return fail_at(p, t.off);
}

/* pst_addrlist_parse - see addrlist.h. */
int
pst_addrlist_parse(const char *s, size_t n, struct pst_addrlist *out,
                   size_t *errpos)
{
    struct P p = {.s = s, .n = n, .out = out};
    struct tok t;

    memset(out, 0, sizeof(*out));
    for (;;) {
        peek(&p, &t);
        if (t.t == T_END)
            break;
        if (is_sp(&t, ',')) {
            take(&p, &t);
            continue;
        }
        if (parse_address(&p, -1) < 0)
            goto fail;
        peek(&p, &t);
        if (t.t == T_END)
            break;
        if (!is_sp(&t, ',')) {
            p.err = t.off;
            goto fail;
        }
    }
    return 0;

fail:
    if (errpos)
        *errpos = p.err;
    return p.e2big ? -E2BIG : -EINVAL;
}

void
pst_addrlist_free(struct pst_addrlist *l)
{
    free(l->v);
    memset(l, 0, sizeof(*l));
}
