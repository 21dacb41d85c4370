/*
 * fuzz_mime.c - libFuzzer target for the message model.
 *
 * For each input:
 *   1. parse it whole, and again fed in random fragments (sizes drawn from
 *      a generator seeded by the input): the two models must be identical
 *      (the streaming contract);
 *   2. read every leaf back through the decoded-body reader: the length
 *      must equal decoded_size, and equal what on_body delivered;
 *   3. decode the input as a header value (RFC 2047) and as a parameter
 *      list (RFC 2231): the output must be valid UTF-8;
 *   4. round-trip the input through the base64 and quoted-printable
 *      encoders and decoders.
 * The first input byte also picks tight limits half of the time, so the
 * limit paths run too. Any disagreement aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/charset.h"
#include "core/codec.h"
#include "core/mime.h"
#include "core/rfc2047.h"
#include "core/tbuf.h"

static uint64_t
rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

struct streamed {
    uint64_t bytes[64];
};

static void
on_body(void *arg, struct pst_mime_part *part, const void *d, size_t n)
{
    struct streamed *s = arg;
    if (part->id < 64)
        s->bytes[part->id] += n;
}

static void
describe(const struct pst_msg *m, struct pst_tbuf *out)
{
    char line[512];
    pst_tbuf_reset(out);
    snprintf(line, sizeof(line), "%llu %x\n", (unsigned long long)m->size,
             m->flags);
    pst_tbuf_add(out, line, strlen(line));
    for (unsigned i = 0; i < m->nparts; i++) {
        const struct pst_mime_part *p = m->parts[i];
        snprintf(line, sizeof(line), "%s %.100s %d %llu %llu %llu %llu %x %u\n",
                 p->section, p->content_type, p->container,
                 (unsigned long long)p->header_start,
                 (unsigned long long)p->body_start,
                 (unsigned long long)p->body_end,
                 (unsigned long long)p->decoded_size, p->flags, p->nfields);
        pst_tbuf_add(out, line, strlen(line));
        for (unsigned k = 0; k < p->nfields; k++) {
            pst_tbuf_add(out, p->fields[k].raw, p->fields[k].raw_len);
            pst_tbuf_add(out, p->fields[k].decoded,
                         strlen(p->fields[k].decoded));
            if (!pst_utf8_valid(p->fields[k].decoded,
                                strlen(p->fields[k].decoded)))
                abort();
        }
        if (p->filename && !pst_utf8_valid(p->filename, strlen(p->filename)))
            abort();
    }
}

static struct pst_msg *
parse(const uint8_t *d, size_t n, const struct pst_mime_limits *lim,
      uint64_t seed, struct streamed *st)
{
    static const struct pst_mime_callbacks cb = {NULL, on_body, NULL};
    struct pst_mime_parser *p = pst_mime_parser_new(lim, &cb, st);
    for (size_t i = 0; i < n;) {
        size_t k = n - i;
        if (seed) {
            size_t r = (size_t)(rng(&seed) % 17);
            k = r < k ? r : k;
        }
        pst_mime_feed(p, d + i, k);
        i += k;
    }
    return pst_mime_finish(p);
}

static void
codecs(const uint8_t *d, size_t n)
{
    size_t cap = PST_QP_ENC_OUT(n) + PST_B64_ENC_OUT(n);
    uint8_t *enc = malloc(cap), *dec = malloc(cap + PST_DEC_OUT(0));
    struct pst_b64_enc be;
    struct pst_qp_enc qe;
    struct pst_decoder dd;
    size_t m, k;

    pst_b64_enc_init(&be, 76);
    m = pst_b64_enc_update(&be, d, n, enc);
    m += pst_b64_enc_final(&be, enc + m);
    pst_dec_init(&dd, PST_CTE_BASE64);
    k = pst_dec_update(&dd, enc, m, dec);
    k += pst_dec_final(&dd, dec + k);
    if (k != n || memcmp(dec, d, n) != 0 || pst_dec_bad(&dd))
        abort();

    pst_qp_enc_init(&qe, true);
    m = pst_qp_enc_update(&qe, d, n, enc);
    m += pst_qp_enc_final(&qe, enc + m);
    pst_dec_init(&dd, PST_CTE_QP);
    k = pst_dec_update(&dd, enc, m, dec);
    k += pst_dec_final(&dd, dec + k);
    if (k != n || memcmp(dec, d, n) != 0 || pst_dec_bad(&dd))
        abort();

    /* decoders on arbitrary input: bounded output */
    pst_dec_init(&dd, PST_CTE_QP);
    k = pst_dec_update(&dd, d, n, dec);
    k += pst_dec_final(&dd, dec + k);
    if (k > n)
        abort();
    free(enc);
    free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

int
LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    struct pst_mime_limits lim;
    struct pst_tbuf a, b;
    struct streamed st1, st2;
    uint64_t seed = 0x9e3779b97f4a7c15ull;

    pst_mime_limits_default(&lim);
    if (n && (d[0] & 1)) {
        lim.depth = 4;
        lim.parts = 8;
        lim.header_bytes = 300;
        lim.header_fields = 6;
        lim.total_header_bytes = 900;
        lim.encoded_words = 3;
        lim.boundary_len = 12;
        lim.params = 3;
    }
    for (size_t i = 0; i < n; i++)
        seed = (seed ^ d[i]) * 0x100000001b3ull;
    seed |= 1;

    pst_tbuf_init(&a);
    pst_tbuf_init(&b);
    memset(&st1, 0, sizeof(st1));
    memset(&st2, 0, sizeof(st2));
    struct pst_msg *m1 = parse(d, n, &lim, 0, &st1);
    struct pst_msg *m2 = parse(d, n, &lim, seed, &st2);
    describe(m1, &a);
    describe(m2, &b);
    if (a.len != b.len || memcmp(a.p, b.p, a.len) != 0)
        abort();
    for (unsigned i = 0; i < m1->nparts; i++) {
        const struct pst_mime_part *p = m1->parts[i];
        if (p->container)
            continue;
        struct pst_mime_reader *r = pst_mime_reader_open_mem(d, n, p);
        char buf[4096];
        ssize_t k;
        uint64_t total = 0;
        while ((k = pst_mime_reader_read(r, buf, sizeof(buf))) > 0)
            total += (uint64_t)k;
        pst_mime_reader_close(r);
        if (k < 0 || total != p->decoded_size)
            abort();
        if (i < 64 && !(p->flags & PST_MIME_F_NO_START) &&
            (st1.bytes[i] != total || st2.bytes[i] != total))
            abort();
    }
    pst_msg_free(m1);
    pst_msg_free(m2);

    struct pst_tbuf t;
    pst_tbuf_init(&t);
    pst_rfc2047_decode((const char *)d, n, 16, &t, NULL);
    if (!pst_utf8_valid(t.p ? t.p : "", t.len) || (t.len && memchr(t.p, 0, t.len)))
        abort();
    pst_tbuf_free(&t);
    struct pst_params ps;
    pst_params_parse((const char *)d, n, 16, &ps);
    for (unsigned i = 0; i < ps.n; i++)
        if (!pst_utf8_valid(ps.v[i].value, strlen(ps.v[i].value)))
            abort();
    size_t alt = 0;                 /* alt: UTF-8 too, and bounded */
    for (unsigned i = 0; i < ps.nalt; i++) {
        alt += strlen(ps.alt[i].value);
        if (!pst_utf8_valid(ps.alt[i].value, strlen(ps.alt[i].value)))
            abort();
    }
    if (alt > 3 * n)
        abort();
    pst_params_free(&ps);

    codecs(d, n);
    pst_tbuf_free(&a);
    pst_tbuf_free(&b);
    return 0;
}
