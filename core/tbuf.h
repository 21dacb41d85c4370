/*
 * tbuf.h - the growable byte buffer: text the message model builds
 * (unfolded and decoded header values, parameter values), SMTP replies and
 * commands on their way to a socket.
 *
 * The buffer itself has no bound: every caller bounds what it appends
 * (header sizes are checked against the MIME limits before text is copied
 * here). p is NUL-terminated after pst_tbuf_cstr; len never counts the NUL.
 */
#ifndef PST_CORE_TBUF_H
#define PST_CORE_TBUF_H

#include <stddef.h>

struct pst_tbuf {
    char *p;
    size_t len;
    size_t cap;
};

void pst_tbuf_init(struct pst_tbuf *b);
void pst_tbuf_add(struct pst_tbuf *b, const void *data, size_t n);
void pst_tbuf_addc(struct pst_tbuf *b, int c);
void pst_tbuf_puts(struct pst_tbuf *b, const char *s);
void pst_tbuf_printf(struct pst_tbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void pst_tbuf_reserve(struct pst_tbuf *b, size_t more);
char *pst_tbuf_cstr(struct pst_tbuf *b);
void pst_tbuf_free(struct pst_tbuf *b);

static inline void
pst_tbuf_reset(struct pst_tbuf *b)
{
    b->len = 0;
}

#endif
