/*
 * buf.c - bounded growable buffers.
 */
#include "core/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

void
pst_buf_init(struct pst_buf *b, size_t max)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

void
pst_buf_free(struct pst_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *
pst_buf_reserve(struct pst_buf *b, size_t n)
{
    if (n > b->max || b->len > b->max - n)
        return NULL;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        if (cap > b->max)
            cap = b->max;
        b->data = pst_xrealloc(b->data, cap);
        b->cap = cap;
    }
    return b->data + b->len;
}

int
pst_buf_append(struct pst_buf *b, const void *p, size_t n)
{
    char *t = pst_buf_reserve(b, n);
    if (t == NULL)
        return -1;
    if (n)
        memcpy(t, p, n);
    b->len += n;
    return 0;
}

int
pst_buf_puts(struct pst_buf *b, const char *s)
{
    return pst_buf_append(b, s, strlen(s));
}

int
pst_buf_vprintf(struct pst_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -1;
    char *t = pst_buf_reserve(b, (size_t)n + 1);
    if (t == NULL)
        return -1;
    vsnprintf(t, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int
pst_buf_printf(struct pst_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = pst_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void
pst_buf_consume(struct pst_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}
