/*
 * dotstream.h - the one owner of message text framing on input: DATA
 * dot-unstuffing and end detection, and line-end normalisation for DATA and
 * BDAT alike.
 *
 * Only CR LF "." CR LF ends DATA: the dot must follow a real CRLF and be
 * followed by one. A bare CR or LF anywhere else is a line end of its own,
 * written out as CRLF and flagged (PST_DOT_BARE), so the stored text is
 * always canonical CRLF and no variant of "\n.\n" can end a message early
 * or smuggle a second one (CVE-2023-51764 family). Dot-unstuffing applies
 * only at the start of a line that follows a real CRLF.
 *
 * The decoder is a resumable state machine: input may be split anywhere.
 * Output for n input bytes is at most 2n + 2 bytes.
 */
#ifndef PST_GATEWAY_DOTSTREAM_H
#define PST_GATEWAY_DOTSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PST_DOT_BARE 0x1            /* a bare CR or LF was normalised */
#define PST_DOT_LONG_LINE 0x2       /* a line exceeded max_line octets */

struct pst_dot {
    int st;
    bool bdat;                      /* no dots, no end marker */
    unsigned flags;                 /* PST_DOT_* seen so far */
    size_t line_len;                /* octets in the current line */
    size_t max_line;                /* PST_DOT_LONG_LINE beyond */
    uint64_t out_bytes;             /* canonical octets produced */
};

void pst_dot_init(struct pst_dot *d, bool bdat, size_t max_line);
/*
 * pst_dot_feed - decode up to len bytes of in into out (room for 2*len+2).
 * Returns the bytes of in consumed and sets *out_len. *done becomes true
 * when the end-of-data line was consumed (DATA only); bytes after it are
 * left unconsumed (they are the next pipelined command).
 */
size_t pst_dot_feed(struct pst_dot *d, const char *in, size_t len, char *out,
                    size_t *out_len, bool *done);
/*
 * pst_dot_finish - BDAT LAST: end the text with CRLF if its last line has
 * none (a pending CR becomes that CRLF). Writes at most 2 bytes to out and
 * returns their count.
 */
size_t pst_dot_finish(struct pst_dot *d, char *out);

#endif
