/*
 * fuzz_spf.c - libFuzzer target for what the spf module reads from
 * outside: the first byte picks
 *   0  the helper frames (every decoder on the payload; what decodes must
 *      encode again to the same bytes),
 *   1  the record check (record.c: the CVE-2023-42118 defence) - a record
 *      it accepts must stay within its bounds,
 *   2+ a DNS response (DNS type from the byte) through spf_dns_build: the
 *      ANSWER frame it builds must decode, with only checked names and
 *      only accepted SPF records in it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>

#include "filters/spf/spf_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
frames(const uint8_t *p, size_t n)
{
    static struct spf_frame f;
    static struct spf_check c;
    static struct spf_answer a;
    struct spf_query q;
    struct spf_resmsg r;
    struct spf_hello h;
    if (spf_dec_check(p, n, &c) == 0 &&
        (spf_enc_check(&f, &c) < 0 || f.n - 4 != n ||
         memcmp(f.b + 4, p, n) != 0))
        abort();
    if (spf_dec_query(p, n, &q) == 0 &&
        (spf_enc_query(&f, &q) < 0 || memcmp(f.b + 4, p, n) != 0))
        abort();
    if (spf_dec_answer(p, n, &a) == 0 &&
        (spf_enc_answer(&f, &a) < 0 || f.n - 4 != n ||
         memcmp(f.b + 4, p, n) != 0))
        abort();
    if (spf_dec_result(p, n, &r) == 0 &&
        (spf_enc_result(&f, &r) < 0 || f.n - 4 != n))
        abort();
    if (spf_dec_hello(p, n, &h) == 0 && spf_enc_hello(&f, &h) < 0)
        abort();
    if (n >= SPF_FRAME_HDR) {
        uint8_t t;
        size_t len;
        if (spf_hdr_parse(p, &t, &len) == 0 && len > SPF_FRAME_MAX)
            abort();
    }
}

static void
record(const uint8_t *p, size_t n)
{
    const char *s = (const char *)p;
    if (spf_record_check(s, n) != NULL)
        return;
    if (n > SPF_TXT_MAX || !spf_is_record(s, n))
        abort();
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            abort();
    /* no accepted term is longer than 255 bytes */
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        run = p[i] == ' ' ? 0 : run + 1;
        if (run > 255)
            abort();
    }
}

static void
dns(uint8_t sel, const uint8_t *p, size_t n)
{
    static const uint16_t types[] = {SPF_Q_A, SPF_Q_AAAA, SPF_Q_MX,
                                     SPF_Q_TXT, SPF_Q_PTR};
    static struct spf_dns d;
    static struct spf_answer a;
    uint16_t t = types[sel % 5];
    spf_dns_build(&d, t, ARES_SUCCESS, p, (int)n, 3600);
    if (d.flen < SPF_FRAME_HDR ||
        spf_dec_answer(d.frame + 4, d.flen - 4, &a) != 0)
        abort();
    if (a.n > 0 && (a.type != t || a.status != SPF_D_OK || d.bad != NULL))
        abort();
    for (unsigned i = 0; i < a.n; i++) {
        if ((t == SPF_Q_MX || t == SPF_Q_PTR) && !spf_name_ok(a.u.name[i]))
            abort();
        if (t == SPF_Q_TXT &&
            spf_record_check(a.u.txt[i], strlen(a.u.txt[i])) != NULL)
            abort();
    }
    if (t == SPF_Q_PTR && a.n > SPF_MAX_PTR_NAMES)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] == 0)
        frames(data + 1, size - 1);
    else if (data[0] == 1)
        record(data + 1, size - 1);
    else
        dns(data[0], data + 1, size - 1);
    return 0;
}
