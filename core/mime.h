/*
 * mime.h - the message model: a one-pass streaming parser for RFC 5322
 * header blocks and the RFC 2045-2049 MIME tree, and the model it builds.
 *
 * What this offers:
 *   struct pst_mime_limits, pst_mime_limits_default   bounds and defaults
 *   PST_MIME_F_*, pst_mime_flag_name                  limit hits and defects
 *   struct pst_hdr_field                              one header field
 *   struct pst_mime_part                              one node of the tree
 *   struct pst_msg                                    the parsed message
 *   struct pst_mime_callbacks                         events while parsing
 *   pst_mime_parser_new / _feed / _finish / _free     the streaming parser
 *   pst_mime_headers_done, pst_mime_root              state while parsing
 *   pst_mime_field                                    find a header field
 *   pst_mime_reader_open[_mem] / _read / _close       a part's decoded body
 *   pst_msg_free
 *
 * Input is the message as stored: CRLF line ends from the gateway, but LF
 * alone is accepted as well (files given to `postern inspect`); a CR not
 * before LF is data, except that a CR ending the input ends its last line
 * (a CRLF cut short). Feed it in fragments of any size; a line or boundary
 * may be split anywhere. The parser keeps bounded state: the current line
 * up to 1000 octets in bodies (a longer line is never a boundary
 * delimiter, RFC 5322 2.1.1), a header block up to the header limits, and
 * the tree. Bodies are never stored: parts hold byte offsets into the fed
 * stream, and the decoded body is produced on the fly (on_body) or later
 * from the stored file (pst_mime_reader_*).
 *
 * The tree. The root part is the message: its header fields are the
 * message header. A multipart has its body parts as children; a
 * message/rfc822 (or message/global) part has one child, the embedded
 * message, whose fields are that message's header. Parts are numbered as
 * IMAP section specifiers (RFC 3501 6.4.5): children of a multipart are
 * 1, 2, ... below their parent's number; a non-multipart message body is
 * "1"; the root multipart is "TEXT"; the embedded message of part N is
 * "N.1" if it is not multipart, else "N.TEXT" with children N.1, N.2, ...
 *
 * Offsets. header_start is the first octet of a part's header block,
 * body_start the first octet after the blank line (or of the first line
 * that could not be a header field), body_end one past the last octet of
 * the body. The line end before a boundary delimiter belongs to the
 * delimiter (RFC 2046 5.1.1), and so does the last line end of a body cut
 * off by the end of the message inside a multipart. The decoded body is
 * the octets [body_start, body_end) after transfer decoding: no charset
 * conversion, line ends kept.
 *
 * Defaults (RFC 2045/2046): no Content-Type is text/plain, except in a
 * multipart/digest where it is message/rfc822; a Content-Type that cannot
 * be parsed is text/plain (flagged); no Content-Transfer-Encoding is 7bit.
 * A multipart without a usable boundary, or whose first delimiter never
 * comes, is a leaf whose body is its whole body text (flagged), so filters
 * still see the content.
 *
 * Limits and their outcome (each hit sets its flag on the part and on the
 * message; PST_MIME_F_LIMITS collects them; a `reject` policy refuses such
 * a message with 554 5.6.0, the default `flag` leaves it to filters):
 *   depth          nesting of multipart and message parts below the root.
 *                  A container at the limit is kept as a leaf (its body is
 *                  not parsed further).
 *   parts          parts in the tree. Further parts are not recorded; their
 *                  octets belong to no part.
 *   header_bytes   octets of one header block; header_fields, fields in
 *                  one block; total_header_bytes, octets of all header
 *                  blocks of the message. Fields beyond are dropped (the
 *                  block still ends at its blank line).
 *   encoded_words  per field; further words are left encoded.
 *   boundary_len   a longer boundary parameter makes the multipart a leaf.
 *   params         per Content-Type/-Disposition; further ones ignored.
 *
 * Threads: a parser and a message belong to one thread at a time. The
 * decoders use the per-thread charset converters (charset.h).
 */
#ifndef PST_CORE_MIME_H
#define PST_CORE_MIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/codec.h"
#include "core/rfc2047.h"

struct pst_mime_limits {
    unsigned depth;                 /* 32; at most PST_MIME_DEPTH_MAX */
    unsigned parts;                 /* 5000 */
    uint64_t header_bytes;          /* 262144 per header block */
    unsigned header_fields;         /* 1000 per header block */
    uint64_t total_header_bytes;    /* 4 MiB per message */
    unsigned encoded_words;         /* 256 per field */
    unsigned boundary_len;          /* 200 (RFC 2046 allows 70) */
    unsigned params;                /* 64 per field */
};

#define PST_MIME_DEPTH_MAX 256

void pst_mime_limits_default(struct pst_mime_limits *lim);

/* Limits hit. */
#define PST_MIME_F_DEPTH (1u << 0)
#define PST_MIME_F_PARTS (1u << 1)
#define PST_MIME_F_HEADER_BYTES (1u << 2)
#define PST_MIME_F_HEADER_FIELDS (1u << 3)
#define PST_MIME_F_ENCODED_WORDS (1u << 4)
#define PST_MIME_F_BOUNDARY_LEN (1u << 5)
#define PST_MIME_F_PARAMS (1u << 6)
#define PST_MIME_F_LIMITS 0x7fu
/* Malformations. */
#define PST_MIME_F_NO_BOUNDARY (1u << 8)       /* multipart, no boundary= */
#define PST_MIME_F_NO_START (1u << 9)          /* first delimiter missing */
#define PST_MIME_F_NO_CLOSE (1u << 10)         /* close delimiter missing */
#define PST_MIME_F_NO_SEPARATOR (1u << 11)     /* body began without a
                                                  blank line */
#define PST_MIME_F_HEADER_8BIT (1u << 12)
#define PST_MIME_F_HEADER_NUL (1u << 13)
#define PST_MIME_F_BAD_BASE64 (1u << 14)
#define PST_MIME_F_BAD_QP (1u << 15)
#define PST_MIME_F_BAD_CONTENT_TYPE (1u << 16)
#define PST_MIME_F_BAD_CTE (1u << 17)          /* unknown, or an encoded
                                                  multipart/message */
#define PST_MIME_F_BAD_ENCODED_WORD (1u << 18) /* left as it is */
#define PST_MIME_F_BAD_PARAM (1u << 19)
#define PST_MIME_F_DUP_CONTENT_FIELD (1u << 20) /* first one used */
#define PST_MIME_F_ORPHAN_CONTINUATION (1u << 21)
#define PST_MIME_F_LAST (1u << 21)

/* "depth_limit", "missing_close_boundary", ...; NULL for other bits. */
const char *pst_mime_flag_name(unsigned bit);

struct pst_hdr_field {
    const char *name;               /* as written, NUL-terminated */
    const char *raw;                /* the field's octets from the name to
                                       the end of its last line (folds
                                       kept), then that line's end */
    size_t raw_len;                 /* octets of raw without the line end */
    const char *value;              /* unfolded: line ends removed, blanks
                                       around trimmed; may hold NUL */
    size_t value_len;
    const char *decoded;            /* UTF-8, encoded words decoded */
    uint64_t offset;                /* of raw in the stream */
    size_t len;                     /* octets of raw with its line end: the
                                       field is [offset, offset + len) of
                                       the stream (len == raw_len when the
                                       text ended in it) */
};

struct pst_mime_part {
    struct pst_mime_part *parent;
    struct pst_mime_part *child;    /* first child */
    struct pst_mime_part *next;     /* next sibling */
    unsigned nchildren;
    unsigned id;                    /* depth-first index, root 0 */
    unsigned depth;                 /* root 0 */
    const char *section;            /* IMAP section specifier */
    bool container;                 /* multipart with delimiters found, or
                                       message/rfc822 parsed as a message */

    const char *content_type;       /* "type/subtype", lowercase */
    const char *type, *subtype;
    struct pst_params params;       /* Content-Type parameters */
    const char *charset;            /* lowercase, NULL if none */
    const char *boundary;           /* multipart only */
    const char *disposition;        /* lowercase token, NULL if none */
    struct pst_params dparams;      /* Content-Disposition parameters */
    const char *filename;           /* UTF-8: disposition filename, else
                                       Content-Type name; NULL if none */
    enum pst_cte cte;
    const char *cte_name;           /* lowercase token, "7bit" if none */
    const char *content_id;         /* unfolded value, NULL if none */

    struct pst_hdr_field *fields;
    unsigned nfields;

    uint64_t header_start, body_start, body_end;
    uint64_t decoded_size;          /* leaves: octets after decoding */
    unsigned flags;                 /* PST_MIME_F_* of this part */
};

struct pst_msg {
    struct pst_mime_part *root;
    struct pst_mime_part **parts;   /* depth-first order, nparts entries */
    unsigned nparts;
    uint64_t size;                  /* octets fed */
    unsigned flags;                 /* union of all parts' flags */
    struct pst__arena *arena;       /* owns everything above */
};

/*
 * Events, all called from inside pst_mime_feed or pst_mime_finish:
 *   on_headers   a part's header block is complete (the root's first: the
 *                filters' "headers complete" phase). Type, parameters,
 *                section and body_start are set.
 *   on_body      decoded octets of a leaf's body, in order. Not called for
 *                the text before a multipart's first delimiter, even when
 *                that text ends up as the body of a malformed multipart
 *                (flag PST_MIME_F_NO_START); read those with the reader.
 *   on_part_end  the part is complete: body_end, decoded_size, flags set.
 * The part pointers stay valid until pst_msg_free.
 */
struct pst_mime_callbacks {
    void (*on_headers)(void *arg, struct pst_mime_part *part);
    void (*on_body)(void *arg, struct pst_mime_part *part, const void *data,
                    size_t len);
    void (*on_part_end)(void *arg, struct pst_mime_part *part);
};

struct pst_mime_parser;

/* lim NULL: defaults. cb may be NULL. Never fails (allocation aborts). */
struct pst_mime_parser *
pst_mime_parser_new(const struct pst_mime_limits *lim,
                    const struct pst_mime_callbacks *cb, void *arg);
/* Returns 0: malformed input is never an error, it is flagged in the
 * model. Not to be called after pst_mime_finish (the parser is gone). */
int pst_mime_feed(struct pst_mime_parser *p, const void *data, size_t len);
/* End of input: returns the model and frees the parser. */
struct pst_msg *pst_mime_finish(struct pst_mime_parser *p);
/* Abandon a parse (session died): frees parser and partial model. */
void pst_mime_parser_free(struct pst_mime_parser *p);

bool pst_mime_headers_done(const struct pst_mime_parser *p);
/* The root part while parsing (its fields are complete once
 * pst_mime_headers_done). */
const struct pst_mime_part *pst_mime_root(const struct pst_mime_parser *p);

void pst_msg_free(struct pst_msg *m);

/* The nth (0-based) field named name (case-insensitive), or NULL. */
const struct pst_hdr_field *pst_mime_field(const struct pst_mime_part *part,
                                           const char *name, unsigned nth);

/*
 * Decoded body of a leaf, read back from the stored message, given by
 *   _open      a file holding exactly the octets that were fed (pread; the
 *              file offset of fd is not used)
 *   _open_mem  a buffer holding them
 *   _open_fn   a function that reads them by their offset in the fed
 *              stream, for stores that frame the text (the spool's records):
 *              it returns octets read (fewer is fine, 0 only past the end)
 *              or -errno
 * Memory: one 16 KiB block, plus a seek checkpoint (under 200 octets)
 * per 64 KiB decoded so far. read returns the number of octets (0 at the
 * end) or -errno; the text ending before body_end is -EIO.
 *
 * Seeking (archive readers need it): tell gives the decoded offset of
 * the next octet; seek moves to a decoded offset. Backwards, decoding
 * restarts from the last checkpoint at or before it (so a seek costs at
 * most 64 KiB of decoding plus one block, not the whole part); forwards
 * it decodes on. A seek past the end leaves the reader at the end.
 * Returns 0 or -errno (a read error).
 */
typedef ssize_t (*pst_mime_read_fn)(void *arg, void *buf, size_t len,
                                    uint64_t off);

struct pst_mime_reader;
struct pst_mime_reader *pst_mime_reader_open(int fd,
                                             const struct pst_mime_part *part);
struct pst_mime_reader *
pst_mime_reader_open_fn(pst_mime_read_fn fn, void *arg,
                        const struct pst_mime_part *part);
struct pst_mime_reader *
pst_mime_reader_open_mem(const void *msg, size_t len,
                         const struct pst_mime_part *part);
ssize_t pst_mime_reader_read(struct pst_mime_reader *r, void *buf, size_t len);
uint64_t pst_mime_reader_tell(const struct pst_mime_reader *r);
int pst_mime_reader_seek(struct pst_mime_reader *r, uint64_t off);
/* Whether the encoding was broken (after the last read). */
bool pst_mime_reader_bad(const struct pst_mime_reader *r);
void pst_mime_reader_close(struct pst_mime_reader *r);

#endif
