/*
 * wire.c - the stored text as SMTP DATA lines (see wire.h for the rules).
 *
 * One append path: put() is the only writer of w->line and copies no
 * more than the room left, so the buffer bound holds by construction
 * whatever the input (runs of CRs, lines of any length).
 */
#include "queue/wire.h"

#include <string.h>

#include "core/util.h"

void
pst_wire_init(struct pst_wire *w, pst_wire_out out, void *arg)
{
    w->out = out;
    w->arg = arg;
    w->len = 0;
    w->cr = false;
    w->in_headers = true;
}

/* line_end - the line is complete. */
static void
line_end(struct pst_wire *w)
{
    if (w->in_headers && w->len == 0)
        w->in_headers = false;
    w->out(w->arg, w->line, w->len);
    w->len = 0;
}

/* put - n octets of line content (no CR or LF); a full line is cut
 * first, and no copy is larger than the room left. */
static void
put(struct pst_wire *w, const char *p, size_t n)
{
    while (n > 0) {
        if (w->len == sizeof(w->line)) {
            w->out(w->arg, w->line, w->len);
            w->len = 0;
            if (w->in_headers)
                w->line[w->len++] = ' ';    /* a folded header continues */
        }
        size_t k = sizeof(w->line) - w->len;
        if (k > n)
            k = n;
        memcpy(w->line + w->len, p, k);
        w->len += k;
        p += k;
        n -= k;
    }
}

void
pst_wire_bytes(struct pst_wire *w, const void *data, size_t n)
{
    const char *p = data, *end = p + n;

    while (p < end) {
        if (w->cr) {
            /* CRLF or a bare CR: a line end either way */
            w->cr = false;
            line_end(w);
            if (*p == '\n') {
                p++;
                continue;
            }
        }
        /* a run of line content at once */
        const char *q = p + pst_line_span(p, (size_t)(end - p));
        put(w, p, (size_t)(q - p));
        p = q;
        if (p == end)
            break;
        if (*p == '\r')
            w->cr = true;
        else
            line_end(w);            /* a bare LF */
        p++;
    }
}

void
pst_wire_end(struct pst_wire *w)
{
    if (w->cr) {
        w->cr = false;
        line_end(w);
    }
    if (w->len > 0)
        line_end(w);
}

void
pst_wire_put_line(struct pst_tbuf *b, const char *line, size_t len)
{
    if (len > 0 && line[0] == '.')
        pst_tbuf_addc(b, '.');
    pst_tbuf_add(b, line, len);
    pst_tbuf_add(b, "\r\n", 2);
}
