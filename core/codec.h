/*
 * codec.h - streaming Content-Transfer-Encoding codecs (RFC 2045 section 6).
 *
 * What this offers:
 *   enum pst_cte, pst_cte_parse, pst_cte_name   the encoding named by a
 *                                               Content-Transfer-Encoding
 *   struct pst_b64_dec  + init/update/final     base64 decoder
 *   struct pst_qp_dec   + init/update/final     quoted-printable decoder
 *   struct pst_decoder  + init/update/final     either, or identity, by cte
 *   struct pst_b64_enc  + init/update/final     base64 encoder (76 columns)
 *   struct pst_qp_enc   + init/update/final     quoted-printable encoder
 *
 * Every codec is a small fixed-size state machine: input may be split at
 * any byte and the output is the same as for the whole input. Nothing is
 * allocated. Each update writes at most the documented bound into out.
 *
 * Decoders never fail: they decode what can be decoded and set `bad` when
 * the input broke the encoding's rules (the message model turns that into a
 * flag for filters). The exact lenient behaviour:
 *   base64  characters outside the alphabet are skipped; a complete pad
 *           ("xx==" or "xxx=") ends the data and anything after it is
 *           ignored; a missing pad is supplied; a lone final sextet is
 *           dropped. Skipped non-space characters, data after the pad, a
 *           missing pad and a lone sextet set `bad`.
 *   qp      "=XX" (either case) is a byte; "=" followed by optional blanks
 *           and a line end is a soft line break; "=" at the very end is a
 *           soft break too (the CRLF before a boundary is not the body's);
 *           blanks at the end of a line are deleted (RFC 2045 6.7 (3));
 *           any other "=" is kept as it is and sets `bad`. Line ends (CRLF
 *           or LF) are kept.
 */
#ifndef PST_CORE_CODEC_H
#define PST_CORE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum pst_cte {
    PST_CTE_7BIT,                   /* also the default when absent */
    PST_CTE_8BIT,
    PST_CTE_BINARY,
    PST_CTE_QP,                     /* quoted-printable */
    PST_CTE_BASE64,
    PST_CTE_UNKNOWN,                /* anything else: the body is identity */
};

/* pst_cte_parse - the encoding of a token (case-insensitive, no blanks). */
enum pst_cte pst_cte_parse(const char *s, size_t n);
const char *pst_cte_name(enum pst_cte cte);

/* ---- base64 ---- */
struct pst_b64_dec {
    uint8_t left;                   /* bits carried to the next byte */
    uint8_t pos;                    /* sextets of the current quad, 0..3 */
    uint8_t pads;                   /* '=' seen in the current quad */
    bool done;                      /* a complete pad ended the data */
    bool bad;
};

/* Bytes an update of n input bytes can write. */
#define PST_B64_DEC_OUT(n) ((n) / 4 * 3 + 3)

void pst_b64_dec_init(struct pst_b64_dec *d);
size_t pst_b64_dec_update(struct pst_b64_dec *d, const void *in, size_t n,
                          void *out);
/* pst_b64_dec_final - end of input; writes nothing, checks the tail. */
size_t pst_b64_dec_final(struct pst_b64_dec *d, void *out);

/* ---- quoted-printable ---- */
#define PST_QP_WS_MAX 128           /* blanks held while deciding whether
                                       they end a line; a longer run is
                                       passed on as it is */
struct pst_qp_dec {
    uint8_t st;
    uint8_t hex;                    /* first digit of "=X?" */
    bool cr;                        /* a CR is held, maybe the start of CRLF */
    bool bad;
    uint16_t nws;
    uint8_t ws[PST_QP_WS_MAX];
};

#define PST_QP_DEC_OUT(n) ((n) + PST_QP_WS_MAX + 4)

void pst_qp_dec_init(struct pst_qp_dec *d);
size_t pst_qp_dec_update(struct pst_qp_dec *d, const void *in, size_t n,
                         void *out);
/* pst_qp_dec_final - writes at most PST_QP_DEC_OUT(0) bytes. */
size_t pst_qp_dec_final(struct pst_qp_dec *d, void *out);

/* ---- any transfer encoding ---- */
struct pst_decoder {
    enum pst_cte cte;
    union {
        struct pst_b64_dec b64;
        struct pst_qp_dec qp;
    } u;
};

/* Bytes one update of n bytes (or final, n = 0) can write, for any cte. */
#define PST_DEC_OUT(n) ((n) + PST_QP_WS_MAX + 4)

void pst_dec_init(struct pst_decoder *d, enum pst_cte cte);
size_t pst_dec_update(struct pst_decoder *d, const void *in, size_t n,
                      void *out);
size_t pst_dec_final(struct pst_decoder *d, void *out);
bool pst_dec_bad(const struct pst_decoder *d);

/* ---- encoders, for parts that filters build ---- */
struct pst_b64_enc {
    uint8_t in[3];
    uint8_t nin;
    unsigned col;
    unsigned line;                  /* characters per line, 0: one line */
};

/* Bytes one update of n bytes (or final, n = 0) can write. */
#define PST_B64_ENC_OUT(n) (((n) / 3 + 2) * 6 + 8)

/* line: output line length (76 in MIME bodies; rounded down to a multiple
 * of 4), 0 for no line breaks. Lines end with CRLF; final ends the last
 * line with CRLF too. */
void pst_b64_enc_init(struct pst_b64_enc *e, unsigned line);
size_t pst_b64_enc_update(struct pst_b64_enc *e, const void *in, size_t n,
                          void *out);
size_t pst_b64_enc_final(struct pst_b64_enc *e, void *out);

struct pst_qp_enc {
    unsigned col;
    bool binary;                    /* CR and LF are data, not line ends */
    bool cr;                        /* a CR is held */
    int ws;                         /* a held blank, or -1 */
};

#define PST_QP_ENC_OUT(n) (((n) + 2) * 6 + 8)

/* binary false: CRLF or LF in the input are line ends, written as CRLF.
 * Output lines are at most 76 characters; blanks before a line end are
 * encoded; '=' and bytes outside 33..126 are encoded, and so is a '-' that
 * starts a line (no output line can start like a boundary delimiter).
 * final does not add a line end that the input did not have. */
void pst_qp_enc_init(struct pst_qp_enc *e, bool binary);
size_t pst_qp_enc_update(struct pst_qp_enc *e, const void *in, size_t n,
                         void *out);
size_t pst_qp_enc_final(struct pst_qp_enc *e, void *out);

/* ---- one-shot base64, for protocol strings (not bodies) ---- */
/*
 * pst_b64_encode - n octets as one line of base64, no line end, into out
 * (room for PST_B64_ENC_OUT(n) + 1), NUL-terminated; returns its length.
 */
size_t pst_b64_encode(const void *in, size_t n, char *out);
/*
 * pst_b64_decode - strict base64 (RFC 4648 4, as SASL wants it, RFC 4954
 * 4): the alphabet only, no blanks, a length in whole quads, padding only
 * at the end. Decodes into out (outsz octets) and returns the length, or
 * -1 when the input is not strict base64 or its octets do not fit.
 */
ssize_t pst_b64_decode(const char *in, size_t n, void *out, size_t outsz);

/* pst_hexval - the value of hex digit c (either case), or -1. */
int pst_hexval(int c);

#endif
