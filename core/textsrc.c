/*
 * textsrc.c - a message's stored text shared by reference (textsrc.h).
 *
 * The reference count is atomic: the loop thread takes a source from the
 * spool and hands references to filter jobs, which drop them on worker
 * threads. Reads are clamped to the size given at creation, so a source
 * never shows octets written after it was made.
 */
#include "core/textsrc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

struct pst_textsrc {
    atomic_uint refs;
    pst_textsrc_read_fn read;
    pst_textsrc_fini_fn fini;
    void *arg;
    uint64_t size;
};

/* pst_textsrc_new - a source with one reference. */
struct pst_textsrc *
pst_textsrc_new(pst_textsrc_read_fn read, pst_textsrc_fini_fn fini,
                void *arg, uint64_t size)
{
    struct pst_textsrc *t = pst_xcalloc(1, sizeof(*t));
    atomic_init(&t->refs, 1);
    t->read = read;
    t->fini = fini;
    t->arg = arg;
    t->size = size;
    return t;
}

struct mem {
    size_t n;
    unsigned char p[];
};

static ssize_t
mem_read(void *arg, void *buf, size_t len, uint64_t off)
{
    struct mem *m = arg;
    size_t k = (size_t)PST_MIN((uint64_t)len, m->n - off);
    memcpy(buf, m->p + off, k);
    return (ssize_t)k;
}

/* pst_textsrc_mem - a source over a private copy of p[0..n). */
struct pst_textsrc *
pst_textsrc_mem(const void *p, size_t n)
{
    struct mem *m = pst_xmalloc(sizeof(*m) + (n ? n : 1));
    m->n = n;
    if (n)
        memcpy(m->p, p, n);
    return pst_textsrc_new(mem_read, free, m, n);
}

/* pst_textsrc_ref - one more reference. */
struct pst_textsrc *
pst_textsrc_ref(struct pst_textsrc *t)
{
    if (t)
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

/* pst_textsrc_unref - drop a reference; the last releases the source. */
void
pst_textsrc_unref(struct pst_textsrc *t)
{
    if (t == NULL ||
        atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (t->fini)
        t->fini(t->arg);
    free(t);
}

/* pst_textsrc_read - see textsrc.h. */
ssize_t
pst_textsrc_read(struct pst_textsrc *t, void *buf, size_t len, uint64_t off)
{
    if (off >= t->size || len == 0)
        return 0;
    len = (size_t)PST_MIN((uint64_t)len, t->size - off);
    return t->read(t->arg, buf, len, off);
}

/* pst_textsrc_size - octets the source holds. */
uint64_t
pst_textsrc_size(const struct pst_textsrc *t)
{
    return t->size;
}
