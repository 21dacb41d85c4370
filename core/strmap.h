/*
 * strmap.h - a hash map from byte-string keys to pointers.
 *
 * Used for the small lookup tables of the policy code: recipient lists,
 * password entries, the sender-login map, per-IP session counts and
 * authentication failure counters. Keys are copied; values are the
 * caller's. Not thread-safe: a map is owned by one thread (the loop), or is
 * built before threads start and only read afterwards.
 *
 * Bounds: the map grows with its content; callers that insert on behalf
 * of clients cap the count themselves (pst_strmap_count).
 */
#ifndef PST_CORE_STRMAP_H
#define PST_CORE_STRMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct pst_strmap;

struct pst_strmap *pst_strmap_new(void);
/* pst_strmap_free - free the map; free_val (may be NULL) gets each value. */
void pst_strmap_free(struct pst_strmap *m, void (*free_val)(void *));
/* pst_strmap_get - the value stored for key, or NULL. */
void *pst_strmap_get(const struct pst_strmap *m, const void *key,
                     size_t klen);
/*
 * pst_strmap_slot - the value slot for key, created (holding NULL) when
 * absent; *created tells which.
 */
void **pst_strmap_slot(struct pst_strmap *m, const void *key, size_t klen,
                       bool *created);
/* pst_strmap_del - remove key; returns its value (NULL when absent). */
void *pst_strmap_del(struct pst_strmap *m, const void *key, size_t klen);
size_t pst_strmap_count(const struct pst_strmap *m);
/*
 * pst_strmap_sweep - call fn on every entry; an entry for which fn returns
 * true is removed (fn frees its value then).
 */
void pst_strmap_sweep(struct pst_strmap *m,
                      bool (*fn)(const void *key, size_t klen, void *val,
                                 void *arg),
                      void *arg);

/* Convenience for NUL-terminated keys. */
static inline void *
pst_strmap_gets(const struct pst_strmap *m, const char *key)
{
    return pst_strmap_get(m, key, strlen(key));
}

#endif
