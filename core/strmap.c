/*
 * strmap.c - chained hash map with byte-string keys (FNV-1a, power-of-two
 * bucket array doubled when the load passes 1).
 *
 * Ownership: each entry owns a copy of its key; values belong to the
 * caller (pst_strmap_free can hand them to a free function).
 */
#include "core/strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

struct ent {
    struct ent *next;
    uint64_t hash;
    void *val;
    size_t klen;
    unsigned char key[];
};

struct pst_strmap {
    struct ent **b;
    size_t nb;                      /* power of two */
    size_t count;
};

static uint64_t
fnv(const void *key, size_t n)
{
    const unsigned char *p = key;
    uint64_t h = UINT64_C(1469598103934665603);
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

struct pst_strmap *
pst_strmap_new(void)
{
    struct pst_strmap *m = pst_xcalloc(1, sizeof(*m));
    m->nb = 16;
    m->b = pst_xcalloc(m->nb, sizeof(*m->b));
    return m;
}

void
pst_strmap_free(struct pst_strmap *m, void (*free_val)(void *))
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nb; i++) {
        struct ent *e = m->b[i];
        while (e) {
            struct ent *n = e->next;
            if (free_val)
                free_val(e->val);
            free(e);
            e = n;
        }
    }
    free(m->b);
    free(m);
}

static struct ent **
find(const struct pst_strmap *m, const void *key, size_t klen, uint64_t h)
{
    struct ent **pp = &m->b[h & (m->nb - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->klen == klen &&
            memcmp((*pp)->key, key, klen) == 0)
            return pp;
    return pp;
}

void *
pst_strmap_get(const struct pst_strmap *m, const void *key, size_t klen)
{
    struct ent **pp = find(m, key, klen, fnv(key, klen));
    return *pp ? (*pp)->val : NULL;
}

static void
grow(struct pst_strmap *m)
{
    size_t nb = m->nb * 2;
    struct ent **b = pst_xcalloc(nb, sizeof(*b));
    for (size_t i = 0; i < m->nb; i++) {
        struct ent *e = m->b[i];
        while (e) {
            struct ent *n = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
            e = n;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
}

void **
pst_strmap_slot(struct pst_strmap *m, const void *key, size_t klen,
                bool *created)
{
    uint64_t h = fnv(key, klen);
    struct ent **pp = find(m, key, klen, h);
    if (*pp) {
        if (created)
            *created = false;
        return &(*pp)->val;
    }
    if (m->count + 1 > m->nb) {
        grow(m);
        pp = find(m, key, klen, h);
    }
    struct ent *e = pst_xmalloc(sizeof(*e) + klen + 1);
    e->next = NULL;
    e->hash = h;
    e->val = NULL;
    e->klen = klen;
    memcpy(e->key, key, klen);
    e->key[klen] = '\0';
    *pp = e;
    m->count++;
    if (created)
        *created = true;
    return &e->val;
}

void *
pst_strmap_del(struct pst_strmap *m, const void *key, size_t klen)
{
    struct ent **pp = find(m, key, klen, fnv(key, klen));
    struct ent *e = *pp;
    if (e == NULL)
        return NULL;
    void *v = e->val;
    *pp = e->next;
    free(e);
    m->count--;
    return v;
}

size_t
pst_strmap_count(const struct pst_strmap *m)
{
    return m->count;
}

void
pst_strmap_sweep(struct pst_strmap *m,
                 bool (*fn)(const void *key, size_t klen, void *val,
                            void *arg),
                 void *arg)
{
    for (size_t i = 0; i < m->nb; i++) {
        struct ent **pp = &m->b[i];
        while (*pp) {
            struct ent *e = *pp;
            if (fn(e->key, e->klen, e->val, arg)) {
                *pp = e->next;
                free(e);
                m->count--;
            } else {
                pp = &e->next;
            }
        }
    }
}
