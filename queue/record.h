/*
 * record.h - the spool's record format (docs/SPOOL.md): framing of typed,
 * length-prefixed, CRC-32C-checked records, the envelope codec, the scan
 * of a message file, the parse of a group in a log segment, and the copy
 * of a group into a message file.
 *
 * Internal to queue/. All integers are little-endian.
 *
 *   record  = u8:type u8[3]:0 u32:len payload[len] u32:crc32c
 *             (crc over the 8 header bytes and the payload, continued from
 *             the container's seed: 0 in a message file, the segment's
 *             salt in a segment)
 *   file    = "PSTQ" u32:version(1)  INFO CHUNK+ ENVELOPE [EDITS] COMMIT
 *             update*     (update = RCPT | RETRY | STATE, appended later)
 *   group   = MARK INFO CHUNK+ ENVELOPE [EDITS] COMMIT, 16-byte aligned,
 *             in a segment (queue/segment.c)
 *
 * EDITS holds the filters' edits; the reader applies them as the text
 * streams out.
 */
#ifndef PST_QUEUE_RECORD_H
#define PST_QUEUE_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "core/envelope.h"
#include "core/tbuf.h"

#define PST_SPOOL_MAGIC "PSTQ"
#define PST_SPOOL_VERSION 1u
#define PST_SPOOL_HDR_LEN 8u
#define PST_REC_HDR_LEN 8u
#define PST_REC_CRC_LEN 4u
#define PST_REC_OVERHEAD (PST_REC_HDR_LEN + PST_REC_CRC_LEN)
/* One buffered write of message text: a CHUNK record of this total size. */
#define PST_SPOOL_WBUF (128u * 1024u)
#define PST_CHUNK_MAX (PST_SPOOL_WBUF - PST_REC_OVERHEAD)
/* Bound on any record's payload (an envelope with thousands of recipients
 * fits); a larger length is damage, not data. */
#define PST_REC_MAX (8u * 1024u * 1024u)
/* Bound on a stored error text. */
#define PST_ERRTEXT_MAX 512u

enum pst_rec_type {
    PST_REC_INFO = 1,       /* qid[16] i64:created */
    PST_REC_CHUNK = 2,      /* message bytes */
    PST_REC_ENVELOPE = 3,   /* see pst__env_encode */
    PST_REC_COMMIT = 4,     /* u64:envelope offset u64:message size */
    PST_REC_RCPT = 5,       /* u32:index u8:state i64:when str:last error */
    PST_REC_RETRY = 6,      /* u32:attempts i64:next attempt str:error */
    PST_REC_STATE = 7,      /* u8:state i64:when str:reason */
    PST_REC_EDITS = 8,      /* filter edit blob (queue/edits.h), right
                               after ENVELOPE, before COMMIT */
    PST_REC_MARK = 9,       /* u8:state u24:recipients delivered - first
                               of a group */
};

/* A group's MARK: the one record of a segment that is rewritten. */
enum pst_mark {
    PST_MARK_LIVE = 0,      /* the message is queued */
    PST_MARK_DONE = 1,      /* it needs nothing more */
    PST_MARK_MOVED = 2,     /* copied to a message file, which wins */
};
#define PST_MARK_LEN 16u    /* 8 header + 4 payload + 4 crc */
/* A live MARK also names the recipients delivered while the message's
 * attempt goes on (bit i: recipient i), for the first PST_MARK_RCPTS
 * recipients: what a route part that finished records of a message in
 * the log (docs/SPOOL.md, "Duplicate window"). 0 in a done or moved one. */
#define PST_MARK_RCPTS 24u
/* Groups start and end on this boundary: a MARK never crosses a sector. */
#define PST_GROUP_ALIGN 16u
/* The largest group the log takes; a larger message is a file. */
#define PST_GROUP_MAX (512u * 1024u)
/* Room before a group's text: its MARK, INFO and CHUNK headers. */
#define PST_GROUP_PREFIX (PST_MARK_LEN + PST_REC_OVERHEAD + 24u + \
                          PST_REC_HDR_LEN)

/* Message states recorded by STATE records. */
enum pst_qstate {
    PST_QSTATE_QUEUED = 0,  /* in active/, scheduled */
    PST_QSTATE_HELD = 1,    /* in hold/, by the operator */
    PST_QSTATE_FAILED = 2,  /* in hold/, lifetime over (bounce: issue 5) */
};

/* Records are built in a core/tbuf.h buffer, then written: these append
 * the record encoding's fields (little-endian integers, strings as a u32
 * length and bytes, 0xffffffff for NULL). */
void pst__put_u8(struct pst_tbuf *b, uint8_t v);
void pst__put_u32(struct pst_tbuf *b, uint32_t v);
void pst__put_u64(struct pst_tbuf *b, uint64_t v);
void pst__put_str(struct pst_tbuf *b, const char *s);   /* NULL allowed */
/* pst__rec_begin/end - frame a record around what is appended between;
 * pst__rec_end_seed checksums it with a segment's seed. */
size_t pst__rec_begin(struct pst_tbuf *b, enum pst_rec_type type);
void pst__rec_end(struct pst_tbuf *b, size_t start);
void pst__rec_end_seed(struct pst_tbuf *b, size_t start, uint32_t seed);
/* pst__rec_frame - write a record header for len payload bytes at h and
 * return the crc of header and payload (payload at h + PST_REC_HDR_LEN). */
uint32_t pst__rec_frame(uint8_t *h, enum pst_rec_type type, uint32_t len,
                        uint32_t seed);
/* pst__mark_encode - the 16 bytes of a MARK record; rcpts (live only)
 * the recipients delivered, bit i recipient i < PST_MARK_RCPTS. */
void pst__mark_encode(uint8_t *out, enum pst_mark m, uint32_t rcpts,
                      uint32_t seed);
/* pst__mark_decode - the state of the MARK at p, or -1 if it is not a
 * MARK or does not check out; *rcpts (may be NULL) its recipients. */
int pst__mark_decode(const uint8_t *p, uint32_t seed, uint32_t *rcpts);

/* A bounded input cursor; any overrun sets err and yields zeros. */
struct pst_rbuf {
    const uint8_t *p;
    size_t len;
    size_t off;
    int err;
};

uint8_t pst__rbuf_u8(struct pst_rbuf *b);
uint32_t pst__rbuf_u32(struct pst_rbuf *b);
uint64_t pst__rbuf_u64(struct pst_rbuf *b);
/* pst__rbuf_str - a malloc'd copy, NULL for a stored NULL. */
char *pst__rbuf_str(struct pst_rbuf *b);

void pst__env_encode(struct pst_tbuf *b, const struct pst_envelope *e);
int pst__env_decode(struct pst_rbuf *b, struct pst_envelope *e);
/* pst__env_copy - deep copy via the codec. */
void pst__env_copy(struct pst_envelope *dst, const struct pst_envelope *src);

/* What a scan learns from one committed file. */
struct pst_scan {
    char qid[17];
    time_t created;
    uint64_t data_off;      /* first CHUNK record */
    uint64_t env_off;       /* ENVELOPE record = end of the message data */
    uint64_t edits_off;     /* EDITS record, 0 if none */
    uint64_t msg_size;
    uint64_t good_end;      /* end of the last valid record */
    uint64_t file_size;
    bool torn;              /* a damaged tail after COMMIT was ignored */
    struct pst_envelope env;
    char **rcpt_err;        /* env.nrcpts entries, each NULL or text */
    unsigned attempts;
    time_t next_attempt;    /* wall clock, 0 = none recorded */
    char *last_error;
    enum pst_qstate state;
    time_t state_time;
    uint32_t marked;        /* group: the recipients its live MARK says
                               delivered (already so in env) */
};

enum pst_scan_result {
    PST_SCAN_OK = 0,
    PST_SCAN_CORRUPT = 1,   /* bad magic, version, checksum, structure */
    PST_SCAN_INCOMPLETE = 2,/* no COMMIT record */
};

/*
 * pst__spool_scan - read and verify the whole file open at fd. Returns a
 * pst_scan_result (why filled on failure) or -errno on a read error.
 * On PST_SCAN_OK, s is filled and must be released with pst__scan_free.
 */
int pst__spool_scan(int fd, struct pst_scan *s, char *why, size_t whylen);
void pst__scan_free(struct pst_scan *s);
/*
 * pst__group_parse - the group that starts at p (segment offset off, avail
 * bytes readable there), its records checked with seed. PST_GROUP_OK: s is
 * filled (release with pst__scan_free; good_end is the group's aligned
 * end; the recipients a live MARK names are delivered in s->env), *mark
 * its MARK's state or -1 if the MARK does not check out.
 * PST_GROUP_MORE: it runs past avail (read more; at the end of the segment
 * it is incomplete). PST_GROUP_NONE: no group starts here.
 */
enum { PST_GROUP_OK = 0, PST_GROUP_NONE = 1, PST_GROUP_MORE = 2 };
int pst__group_parse(const uint8_t *p, size_t avail, uint64_t off,
                     uint32_t seed, struct pst_scan *s, int *mark);
/*
 * pst__file_from_group - the message file (version 1, seed 0) holding the
 * message of the group g (glen bytes, checked with seed) into out; fo gets
 * the file's offsets (data_off, env_off, edits_off, msg_size, file_size).
 * 0 or -EBADMSG.
 */
int pst__file_from_group(const uint8_t *g, size_t glen, uint32_t seed,
                         struct pst_tbuf *out, struct pst_scan *fo);

/* pst__errs_free - a per-recipient array of error texts (n entries, each
 * NULL or malloc'd; the array may be NULL). */
void pst__errs_free(char **errs, size_t n);

/*
 * Appending update records to a committed file (worker threads only):
 * the caller fsyncs afterwards.
 */
void pst__rec_rcpt(struct pst_tbuf *b, uint32_t idx, enum pst_rcpt_state st,
                   time_t when, const char *err);
void pst__rec_retry(struct pst_tbuf *b, unsigned attempts, time_t next,
                    const char *err);
void pst__rec_state(struct pst_tbuf *b, enum pst_qstate st, time_t when,
                    const char *reason);

/* pst__pwrite_all - n bytes at off (short writes and EINTR retried); 0 or
 * -errno. */
int pst__pwrite_all(int fd, const void *p, size_t n, uint64_t off);
/* pst__pread_upto - up to n bytes at off, fewer only at the end of the
 * file; *got the count. 0 or -errno. */
int pst__pread_upto(int fd, void *p, size_t n, uint64_t off, size_t *got);
/* pst__le_put/get - an n-byte little-endian integer at p. */
void pst__le_put(uint8_t *p, uint64_t v, int n);
uint64_t pst__le_get(const uint8_t *p, int n);

#endif
