/*
 * tls_sessions.c - a bounded, least-recently-used cache of client TLS
 * sessions (tls_sessions.h).
 *
 * The entries are in a hash map by key and in one list, most recently
 * used first; the last one goes when the cache is full. Expiry is checked
 * when an entry is looked up, against the wall clock (the one OpenSSL
 * stamps sessions with); an entry nobody asks for again waits in the list
 * until it is pushed out.
 */
#include "queue/tls_sessions.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "core/strmap.h"
#include "core/util.h"

struct entry {
    TAILQ_ENTRY(entry) link;
    char *key;
    SSL_SESSION *sess;
    int64_t expires;                /* wall clock, seconds */
};

struct pst_tls_sessions {
    struct pst_strmap *map;         /* key -> entry */
    TAILQ_HEAD(lru_list, entry) lru; /* most recently used first */
    size_t max;
    unsigned timeout;
};

struct pst_tls_sessions *
pst_tls_sessions_new(size_t max, unsigned timeout)
{
    struct pst_tls_sessions *ts = pst_xcalloc(1, sizeof(*ts));
    ts->map = pst_strmap_new();
    TAILQ_INIT(&ts->lru);
    ts->max = max ? max : 1;
    ts->timeout = timeout;
    return ts;
}

static void
entry_free(struct pst_tls_sessions *ts, struct entry *e)
{
    pst_strmap_del(ts->map, e->key, strlen(e->key));
    TAILQ_REMOVE(&ts->lru, e, link);
    SSL_SESSION_free(e->sess);
    free(e->key);
    free(e);
}

void
pst_tls_sessions_free(struct pst_tls_sessions *ts)
{
    struct entry *e;

    if (ts == NULL)
        return;
    while ((e = TAILQ_FIRST(&ts->lru)) != NULL)
        entry_free(ts, e);
    pst_strmap_free(ts->map, NULL);
    free(ts);
}

SSL_SESSION *
pst_tls_sessions_get(struct pst_tls_sessions *ts, const char *key)
{
    struct entry *e = pst_strmap_gets(ts->map, key);
    if (e == NULL)
        return NULL;
    if ((int64_t)time(NULL) >= e->expires) {
        entry_free(ts, e);
        return NULL;
    }
    TAILQ_REMOVE(&ts->lru, e, link);
    TAILQ_INSERT_HEAD(&ts->lru, e, link);
    SSL_SESSION_up_ref(e->sess);
    return e->sess;
}

void
pst_tls_sessions_put(struct pst_tls_sessions *ts, const char *key,
                     SSL_SESSION *s)
{
    if (!SSL_SESSION_is_resumable(s))
        return;
    int64_t now = (int64_t)time(NULL);
    int64_t until = (int64_t)SSL_SESSION_get_time(s) +
                    (int64_t)SSL_SESSION_get_timeout(s);
    until = PST_MIN(until, now + (int64_t)ts->timeout);
    if (until <= now)
        return;
    bool created;
    void **slot = pst_strmap_slot(ts->map, key, strlen(key), &created);
    struct entry *e = *slot;
    if (!created) {
        SSL_SESSION_free(e->sess);
        TAILQ_REMOVE(&ts->lru, e, link);
    } else {
        e = pst_xcalloc(1, sizeof(*e));
        e->key = pst_xstrdup(key);
        *slot = e;
    }
    SSL_SESSION_up_ref(s);
    e->sess = s;
    e->expires = until;
    TAILQ_INSERT_HEAD(&ts->lru, e, link);
    while (pst_strmap_count(ts->map) > ts->max)
        entry_free(ts, TAILQ_LAST(&ts->lru, lru_list));
}

void
pst_tls_sessions_drop(struct pst_tls_sessions *ts, const char *key)
{
    struct entry *e = pst_strmap_gets(ts->map, key);
    if (e != NULL)
        entry_free(ts, e);
}

size_t
pst_tls_sessions_count(const struct pst_tls_sessions *ts)
{
    return pst_strmap_count(ts->map);
}
