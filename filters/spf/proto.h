/*
 * proto.h - the frames the spf module and its helper processes exchange
 * over a socketpair (the only channel a helper has).
 *
 * A frame is a 4-byte header - type (1 byte), 0, payload length (2 bytes,
 * big-endian, at most SPF_FRAME_MAX) - then the payload. Integers are
 * big-endian; a string is a 2-byte length and its bytes (no NUL, each
 * with its own bound below). Every decoder checks every length against
 * what is left and against the field's bound, and refuses a payload with
 * bytes left over: a frame decodes whole or not at all.
 *
 *   HELLO   helper -> gateway  version, pid; once, when the sandbox is up
 *   CHECK   gateway -> helper  client address, sender ("" = the HELO
 *                              identity, postmaster@helo), helo, receiver
 *   QUERY   helper -> gateway  one DNS question libspf2 asks: type, name
 *   ANSWER  gateway -> helper  status, TTL and the records, already
 *                              checked (names, sizes, counts)
 *   RESULT  helper -> gateway  the SPF result and libspf2's error code
 *
 * One check is CHECK, then any number of QUERY/ANSWER pairs, then RESULT;
 * a helper runs one check at a time. Either side treats anything else as
 * a broken peer: the gateway kills that helper, a helper exits.
 */
#ifndef PST_FILTERS_SPF_PROTO_H
#define PST_FILTERS_SPF_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPF_PROTO_VERSION 1
#define SPF_FRAME_HDR 4
#define SPF_FRAME_MAX 8192          /* payload bytes */
#define SPF_NAME_MAX 255            /* a DNS name in text form */
#define SPF_SENDER_MAX 320          /* local-part (64+) @ domain (255) */
#define SPF_TXT_MAX 2048            /* one SPF record, strings joined */
#define SPF_ANS_TXT_MAX 2           /* two is enough to say "multiple" */
#define SPF_ANS_ADDR_MAX 32
#define SPF_ANS_NAME_MAX 16         /* MX hosts, PTR names */
#define SPF_DETAIL_MAX 120

enum spf_ftype {
    SPF_F_HELLO = 1,
    SPF_F_CHECK,
    SPF_F_QUERY,
    SPF_F_ANSWER,
    SPF_F_RESULT,
};

/* DNS types, as on the wire */
enum spf_qtype {
    SPF_Q_A = 1,
    SPF_Q_PTR = 12,
    SPF_Q_MX = 15,
    SPF_Q_TXT = 16,
    SPF_Q_AAAA = 28,
};

enum spf_dstat {
    SPF_D_OK,
    SPF_D_NXDOMAIN,
    SPF_D_NODATA,
    SPF_D_TEMPFAIL,
    SPF_D_STOP,                     /* a limit was reached: stop asking */
    SPF_D_COUNT,
};

/* RFC 7208 2.6 results */
enum spf_result {
    SPF_R_NONE,
    SPF_R_NEUTRAL,
    SPF_R_PASS,
    SPF_R_FAIL,
    SPF_R_SOFTFAIL,
    SPF_R_TEMPERROR,
    SPF_R_PERMERROR,
    SPF_R_COUNT,
};

struct spf_hello {
    uint16_t version;
    uint32_t pid;
};

struct spf_check {
    int family;                     /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    char sender[SPF_SENDER_MAX + 1];
    char helo[SPF_NAME_MAX + 1];
    char receiver[SPF_NAME_MAX + 1];
};

struct spf_query {
    uint16_t type;
    char name[SPF_NAME_MAX + 1];
};

struct spf_answer {
    uint8_t status;                 /* enum spf_dstat */
    uint32_t ttl;
    uint16_t type;                  /* of the records */
    uint16_t n;
    union {
        uint8_t addr[SPF_ANS_ADDR_MAX][16];   /* A: 4 bytes used */
        char name[SPF_ANS_NAME_MAX][SPF_NAME_MAX + 1];
        char txt[SPF_ANS_TXT_MAX][SPF_TXT_MAX + 1];
    } u;
};

struct spf_resmsg {
    uint8_t result;                 /* enum spf_result */
    uint16_t err;                   /* libspf2's error code */
};

/* A frame being built: header and payload, with an overflow flag. */
struct spf_frame {
    uint8_t b[SPF_FRAME_HDR + SPF_FRAME_MAX];
    size_t n;
    bool over;
};

/* encoders: fill f with one whole frame; 0, or -1 if it would not fit */
int spf_enc_hello(struct spf_frame *f, const struct spf_hello *h);
int spf_enc_check(struct spf_frame *f, const struct spf_check *c);
int spf_enc_query(struct spf_frame *f, const struct spf_query *q);
int spf_enc_answer(struct spf_frame *f, const struct spf_answer *a);
int spf_enc_result(struct spf_frame *f, const struct spf_resmsg *r);

/* decoders: a payload of its type; 0, or -1 if it is not well formed */
int spf_dec_hello(const uint8_t *p, size_t n, struct spf_hello *h);
int spf_dec_check(const uint8_t *p, size_t n, struct spf_check *c);
int spf_dec_query(const uint8_t *p, size_t n, struct spf_query *q);
int spf_dec_answer(const uint8_t *p, size_t n, struct spf_answer *a);
int spf_dec_result(const uint8_t *p, size_t n, struct spf_resmsg *r);

/* spf_hdr_parse - the type and payload length of a frame header; -1 for a
 * length beyond SPF_FRAME_MAX or a nonzero reserved byte. */
int spf_hdr_parse(const uint8_t h[SPF_FRAME_HDR], uint8_t *type,
                  size_t *len);

/* spf_write_all - write n bytes to a blocking fd; 0 or -1 (errno). */
int spf_write_all(int fd, const void *p, size_t n);

const char *spf_result_name(enum spf_result r);

#endif
