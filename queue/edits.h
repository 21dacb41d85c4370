/*
 * edits.h - edit records: how a message's filter edits are stored beside
 * the original text in the spool, and how they are applied while the
 * message streams out to delivery.
 *
 * The spool commits the original message bytes untouched plus one edit
 * blob (written by filters/chain.c). The blob says how the header section
 * is rebuilt - a sequence of "keep original bytes [off, off+len)" and
 * "insert this text" - and which byte ranges of the body are replaced.
 * Everything no edit names is copied from the original byte for byte, so
 * an untouched header or MIME part reaches the downstream identical.
 *
 * Blob format (all integers big-endian):
 *   "PSTE" version(1 byte, 1)
 *   then records, each a type byte:
 *     'H' u64 hdr_end          the header fields are [0, hdr_end); the
 *                              K/T records that follow replace them
 *     'K' u64 off u64 len      keep original bytes (inside [0, hdr_end))
 *     'T' u32 len bytes        insert text (complete CRLF-ended fields)
 *     'B' u64 off u64 len u32 n bytes
 *                              replace original [off, off+len) (at or
 *                              after hdr_end) with n bytes; B records
 *                              are sorted and do not overlap
 * Limits: a blob is at most PST_EDITS_MAX bytes and the rebuilt header
 * section at most PST_EDITS_HDR_MAX bytes; a blob beyond them, or
 * malformed, is refused with -EBADMSG at open (the delivery then fails
 * temporarily and the message stays in the queue).
 */
#ifndef PST_QUEUE_EDITS_H
#define PST_QUEUE_EDITS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/tbuf.h"

#define PST_EDITS_MAX (16u * 1024 * 1024)
#define PST_EDITS_HDR_MAX (2u * 1024 * 1024)

/* ---- writing (filters/chain.c); each returns 0 or -E2BIG ---- */
int pst_edits_begin(struct pst_tbuf *b);
int pst_edits_put_hdr(struct pst_tbuf *b, uint64_t hdr_end);
int pst_edits_put_keep(struct pst_tbuf *b, uint64_t off, uint64_t len);
int pst_edits_put_text(struct pst_tbuf *b, const void *p, size_t n);
int pst_edits_put_body(struct pst_tbuf *b, uint64_t off, uint64_t len,
                       const void *p, size_t n);

/* ---- applying (the spool reader, for transports) ---- */
/* src - the original message bytes from the start: up to len bytes, 0 at
 * the end, or -errno. */
typedef ssize_t (*pst_edits_src_fn)(void *arg, void *buf, size_t len);

struct pst_edits_reader;

/*
 * pst_edits_reader_open - check blob (copied) and prepare to produce the
 * edited message from src. Returns 0, -EBADMSG (malformed blob).
 */
int pst_edits_reader_open(struct pst_edits_reader **rp, const void *blob,
                          size_t n, pst_edits_src_fn src, void *arg);
/* pst_edits_reader_read - up to len edited bytes; 0 at the end, -errno
 * (-EBADMSG when the original is shorter than the edits say). */
ssize_t pst_edits_reader_read(struct pst_edits_reader *r, void *buf,
                              size_t len);
void pst_edits_reader_close(struct pst_edits_reader *r);
/* pst_edits_reader_size - the edited size of an original of orig bytes. */
uint64_t pst_edits_reader_size(const struct pst_edits_reader *r,
                               uint64_t orig);

/*
 * pst_edits_apply_mem - the edited form of a message held in memory
 * (tests, `postern queue show`): appended to out. 0 or -errno.
 */
int pst_edits_apply_mem(const void *blob, size_t n, const void *msg,
                        size_t mlen, struct pst_tbuf *out);

#endif
