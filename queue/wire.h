/*
 * wire.h - the stored message text as SMTP DATA lines: the delivery
 * client's body writer (RFC 5321 4.5.2 transparency, 4.5.3.1.6 line
 * length).
 *
 * Bytes go in as read from the spool (canonical CRLF text, but a filter's
 * replacement data or a damaged spool file may hold anything); lines come
 * out through out(), at most PST_WIRE_LINE octets each, without their line
 * end:
 *   - CRLF, a bare LF and a bare CR each end a line (as the front treats
 *     them: nothing but CRLF ever reaches the wire, so no text can be read
 *     downstream as a different end of data);
 *   - a line longer than PST_WIRE_LINE octets is cut; in the header
 *     section (up to the first empty line) the rest continues on a line
 *     that starts with a space (RFC 5322 folding), in the body on a line
 *     of its own;
 *   - text after the last line end is a line of its own at the end.
 * Every other octet comes out once, in order. pst_wire_put_line writes a
 * line to the wire: dot-stuffed, CRLF added.
 *
 * Memory: the line buffer inside struct pst_wire; every append checks it
 * first, so no input can write past it.
 */
#ifndef PST_QUEUE_WIRE_H
#define PST_QUEUE_WIRE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/tbuf.h"

#define PST_WIRE_LINE 998           /* RFC 5321 4.5.3.1.6, CRLF excluded */

typedef void (*pst_wire_out)(void *arg, const char *line, size_t len);

struct pst_wire {
    pst_wire_out out;
    void *arg;
    char line[PST_WIRE_LINE];
    size_t len;
    bool cr;                        /* a CR is held (CRLF or bare CR?) */
    bool in_headers;
};

/* pst_wire_init - start a message: out gets each line. */
void pst_wire_init(struct pst_wire *w, pst_wire_out out, void *arg);
/* pst_wire_bytes - n more octets of the text. */
void pst_wire_bytes(struct pst_wire *w, const void *p, size_t n);
/* pst_wire_end - the text is over: its last line out (not the final dot). */
void pst_wire_end(struct pst_wire *w);
/* pst_wire_put_line - a line (no CR or LF inside) onto b as sent: a leading
 * dot doubled (RFC 5321 4.5.2), CRLF after. */
void pst_wire_put_line(struct pst_tbuf *b, const char *line, size_t len);

#endif
