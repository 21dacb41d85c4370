/*
 * reader.h - reading a committed message's text back out of the spool
 * (queue/reader.c): what the transports use, and where a message's text
 * is (struct pst_spool_ref, made by the spool). Part of the storage;
 * transport.h includes it for the transports.
 */
#ifndef PST_QUEUE_READER_H
#define PST_QUEUE_READER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * A committed message read back from its spool file, chunk by chunk, each
 * chunk's CRC verified (-EBADMSG on a mismatch), the filters' edits
 * applied. One reader per delivery, used by one thread at a time.
 */
struct pst_spool_reader;

/* pst_spool_reader_read - up to len bytes; 0 at the end, or -errno.
 * len 0: the sticky error (0 if none), nothing read. */
ssize_t pst_spool_reader_read(struct pst_spool_reader *r, void *buf,
                              size_t len);
/*
 * pst_spool_reader_try_read - as pst_spool_reader_read, but only if the
 * bytes are in the page cache (preadv2 RWF_NOWAIT), so that it may run on
 * the loop: -EAGAIN, nothing consumed, when they would come from the disk,
 * and always for a message larger than one buffer (128 KiB; with edits:
 * whose stored records are): read those with pst_spool_reader_read off
 * the loop. A message with edits has its records loaded whole from the
 * page cache by the first call, and is then edited from memory.
 */
ssize_t pst_spool_reader_try_read(struct pst_spool_reader *r, void *buf,
                                  size_t len);
/* pst_spool_reader_rewind - back to the first message byte. */
int pst_spool_reader_rewind(struct pst_spool_reader *r);
uint64_t pst_spool_reader_size(const struct pst_spool_reader *r);

/* Where the message text is, so a transport can open one reader per
 * destination (queue/deliver.c) with pst__reader_open. Made by the spool
 * (pst__spool_ref); its fields are the spool's business. */
struct pst_spool_ref {
    int fd;                 /* a log segment (not closed by the reader),
                               or -1: open the file qid in dirfd */
    int dirfd;
    uint32_t seed;          /* CRC seed of the records */
    uint64_t data_off, data_end, size;
    uint64_t edits_off;     /* the EDITS record, 0 if none */
};

/* pst__reader_open - a reader over the text at ref (message qid); 0 or
 * -errno (-EBADMSG for damaged edits). */
int pst__reader_open(struct pst_spool_reader **rp,
                     const struct pst_spool_ref *ref, const char *qid);
void pst__reader_close(struct pst_spool_reader *r);

#endif
