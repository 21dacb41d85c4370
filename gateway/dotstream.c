/*
 * dotstream.c - DATA/BDAT text decoder; see dotstream.h for the rules.
 *
 * States: BOL (start of a line after a real CRLF, or of the text), DOT (BOL
 * then '.'), DOTCR (BOL '.' CR), MID (inside a line, or at the start of a
 * line that followed a bare line end), CR (CR seen inside a line). The MID
 * state copies runs of ordinary bytes at once; it is the hot path.
 */
#include "gateway/dotstream.h"

#include <string.h>

#include "core/util.h"

enum { ST_BOL, ST_DOT, ST_DOTCR, ST_MID, ST_CR };

void
pst_dot_init(struct pst_dot *d, bool bdat, size_t max_line)
{
    memset(d, 0, sizeof(*d));
    d->st = ST_BOL;
    d->bdat = bdat;
    d->max_line = max_line;
}

static inline void
count_line(struct pst_dot *d, size_t n)
{
    d->line_len += n;
    if (d->line_len > d->max_line)
        d->flags |= PST_DOT_LONG_LINE;
}

size_t
pst_dot_feed(struct pst_dot *d, const char *in, size_t len, char *out,
             size_t *out_len, bool *done)
{
    size_t i = 0, o = 0;

    *done = false;
    while (i < len) {
        char c = in[i];
        switch (d->st) {
        case ST_BOL:
            d->line_len = 0;
            if (c == '.' && !d->bdat) {
                d->st = ST_DOT;
                i++;
                continue;
            }
            d->st = ST_MID;
            continue;               /* same byte, as line content */
        case ST_DOT:
            if (c == '\r') {
                d->st = ST_DOTCR;
                i++;
                continue;
            }
            /* "." then more: unstuff (drop this dot), or a bare LF after a
             * lone dot, which keeps its dot as content. */
            if (c == '\n') {
                out[o++] = '.';
                count_line(d, 1);
            }
            d->st = ST_MID;
            continue;
        case ST_DOTCR:
            if (c == '\n') {        /* CRLF . CRLF: the end */
                i++;
                d->st = ST_BOL;
                *done = true;
                goto out;
            }
            /* ". CR x": a lone dot ended by a bare CR */
            out[o++] = '.';
            out[o++] = '\r';
            out[o++] = '\n';
            d->flags |= PST_DOT_BARE;
            d->line_len = 0;
            d->st = ST_MID;
            continue;               /* x starts the next line */
        case ST_CR:
            if (c == '\n') {
                out[o++] = '\r';
                out[o++] = '\n';
                i++;
                d->st = ST_BOL;
                continue;
            }
            out[o++] = '\r';        /* bare CR: a line end of its own */
            out[o++] = '\n';
            d->flags |= PST_DOT_BARE;
            d->line_len = 0;
            d->st = ST_MID;
            continue;
        case ST_MID: {
            size_t j = i + pst_line_span(in + i, len - i);
            if (j > i) {
                memcpy(out + o, in + i, j - i);
                o += j - i;
                count_line(d, j - i);
                i = j;
                continue;
            }
            i++;
            if (c == '\r') {
                d->st = ST_CR;
            } else {                /* bare LF */
                out[o++] = '\r';
                out[o++] = '\n';
                d->flags |= PST_DOT_BARE;
                d->line_len = 0;
            }
            continue;
        }
        }
    }
out:
    d->out_bytes += o;
    *out_len = o;
    return i;
}

size_t
pst_dot_finish(struct pst_dot *d, char *out)
{
    if (d->st == ST_CR)
        d->flags |= PST_DOT_BARE;   /* a final bare CR */
    else if (!(d->st == ST_MID && d->line_len > 0))
        return 0;
    /* the text must end with a line end: a last line without one gets it */
    out[0] = '\r';
    out[1] = '\n';
    d->st = ST_BOL;
    d->out_bytes += 2;
    return 2;
}
