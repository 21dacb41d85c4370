/*
 * mime8.h - 8-bit MIME text to quoted-printable for a next hop without
 * 8BITMIME (RFC 6152 3 leaves the conversion to the relay; RFC 2045 6.7
 * defines the encoding), driven by the message model.
 *
 * The model is core/mime.c's tree of the very text being sent (the same
 * parser, with the same limits, that built the tree the filters judged):
 * this file never parses MIME itself. What it does, part by part:
 *   - a leaf whose Content-Transfer-Encoding is absent, 7bit, 8bit or
 *     binary, and whose type is not multipart/ * or message/rfc822 (or
 *     message/global, which RFC 2046 5.2.1 and RFC 6532 keep unencoded):
 *     its body [body_start, body_end) is encoded quoted-printable, its
 *     Content-Transfer-Encoding fields are dropped and one
 *     "Content-Transfer-Encoding: quoted-printable" goes at the end of its
 *     header block (7-bit text passes through quoted-printable unchanged
 *     but for '=' and long lines, so labels are not trusted);
 *   - a container labelled 8bit or binary is relabelled 7bit, since what
 *     it holds is 7-bit once its leaves are;
 *   - the message's own header gains "MIME-Version: 1.0" when a plain
 *     (non-MIME) message body is converted;
 *   - everything else - base64 and quoted-printable bodies, preambles,
 *     epilogues, delimiters, header fields - passes byte for byte. Header
 *     fields with 8-bit octets stay as they are (RFC 2047 was the
 *     sender's to use).
 * A part whose header block hit a limit (PST_MIME_F_HEADER_BYTES or
 * _FIELDS: the model does not know all its fields) passes unconverted,
 * as do octets that belong to no part (past the parts limit).
 *
 * Input is the text in order from offset 0, in pieces of any size; output
 * goes to out() in pieces. Memory: the header block of the part being
 * rewritten (bounded by the model's header_bytes limit) and a fixed
 * encoding buffer.
 */
#ifndef PST_QUEUE_MIME8_H
#define PST_QUEUE_MIME8_H

#include <stddef.h>

#include "core/mime.h"

typedef void (*pst_mime8_out)(void *arg, const void *p, size_t n);

struct pst_mime8;

/* pst_mime8_new - a downgrade of the text model was built from; model
 * must outlive it. */
struct pst_mime8 *pst_mime8_new(const struct pst_msg *model,
                                pst_mime8_out out, void *arg);
/* pst_mime8_bytes - the next n octets of the text. */
void pst_mime8_bytes(struct pst_mime8 *m, const void *p, size_t n);
/* pst_mime8_end - the text is over. */
void pst_mime8_end(struct pst_mime8 *m);
void pst_mime8_free(struct pst_mime8 *m);

#endif
