/*
 * record.h - the spool file format (docs/SPOOL.md): framing of typed,
 * length-prefixed, CRC-32C-checked records, the envelope codec, the scan
 * that recovery and the queue manager use to load a file, and the reader
 * that streams message bytes back out to a transport.
 *
 * Internal to queue/. All integers are little-endian.
 *
 *   file    = header record*
 *   header  = "PSTQ" u32:version                          (8 bytes)
 *   record  = u8:type u8[3]:0 u32:len payload[len] u32:crc32c
 *             (crc over the 8 header bytes and the payload)
 *
 * Order: INFO, CHUNK*, ENVELOPE, [EDITS], COMMIT, then any number of
 * update records (RCPT, RETRY, STATE) appended later. EDITS holds the
 * filters' edits; the reader applies them as the text streams out.
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
};

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
/* pst__rec_begin/end - frame a record around what is appended between. */
size_t pst__rec_begin(struct pst_tbuf *b, enum pst_rec_type type);
void pst__rec_end(struct pst_tbuf *b, size_t start);

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

#endif
