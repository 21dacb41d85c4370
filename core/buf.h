/*
 * buf.h - a growable byte buffer with a hard cap.
 *
 * Appends beyond max fail (-1) and leave the buffer unchanged: every buffer
 * fed by a client has a bound, checked while accumulating.
 */
#ifndef PST_CORE_BUF_H
#define PST_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct pst_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max;                     /* hard cap on len */
};

void pst_buf_init(struct pst_buf *b, size_t max);
void pst_buf_free(struct pst_buf *b);
int pst_buf_append(struct pst_buf *b, const void *p, size_t n);
int pst_buf_puts(struct pst_buf *b, const char *s);
int pst_buf_printf(struct pst_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int pst_buf_vprintf(struct pst_buf *b, const char *fmt, va_list ap);
/* pst_buf_reserve - ensure room for n more bytes; returns the tail. */
char *pst_buf_reserve(struct pst_buf *b, size_t n);
/* pst_buf_consume - drop the first n bytes. */
void pst_buf_consume(struct pst_buf *b, size_t n);
static inline void
pst_buf_reset(struct pst_buf *b)
{
    b->len = 0;
}

#endif
