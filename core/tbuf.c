/*
 * tbuf.c - growable byte buffer (see tbuf.h). Growth doubles the capacity;
 * allocation failure aborts through pst_xrealloc.
 */
#include "core/tbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* pst_tbuf_init - empty buffer, nothing allocated. */
void
pst_tbuf_init(struct pst_tbuf *b)
{
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
}

/* pst_tbuf_reserve - room for more octets plus a NUL. */
void
pst_tbuf_reserve(struct pst_tbuf *b, size_t more)
{
    size_t need = b->len + more + 1;
    size_t cap;

    if (need <= b->cap)
        return;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->p = pst_xrealloc(b->p, cap);
    b->cap = cap;
}

/* pst_tbuf_add - append n octets. */
void
pst_tbuf_add(struct pst_tbuf *b, const void *data, size_t n)
{
    if (n == 0)
        return;
    pst_tbuf_reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

/* pst_tbuf_addc - append one octet. */
void
pst_tbuf_addc(struct pst_tbuf *b, int c)
{
    pst_tbuf_reserve(b, 1);
    b->p[b->len++] = (char)c;
}

/* pst_tbuf_puts - append a C string. */
void
pst_tbuf_puts(struct pst_tbuf *b, const char *s)
{
    pst_tbuf_add(b, s, strlen(s));
}

/* pst_tbuf_printf - append formatted text: formatted once into the room
 * there is, a second time only when it did not fit. */
void
pst_tbuf_printf(struct pst_tbuf *b, const char *fmt, ...)
{
    va_list ap;
    size_t room = b->cap > b->len ? b->cap - b->len : 0;
    va_start(ap, fmt);
    int n = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    if ((size_t)n >= room) {
        pst_tbuf_reserve(b, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

/* pst_tbuf_cstr - NUL-terminate (not counted in len) and return the text. */
char *
pst_tbuf_cstr(struct pst_tbuf *b)
{
    pst_tbuf_reserve(b, 0);
    b->p[b->len] = '\0';
    return b->p;
}

/* pst_tbuf_free - release the storage; the buffer is empty again. */
void
pst_tbuf_free(struct pst_tbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
