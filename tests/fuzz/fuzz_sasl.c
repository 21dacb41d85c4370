/*
 * fuzz_sasl.c - libFuzzer target for the AUTH input decoders: every line
 * goes through base64 decoding (output bounded by the buffer, never past
 * it) and, when it decodes, the PLAIN splitter (fields bounded, NUL-free),
 * and the domain canonicaliser used by relay policy.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/domain.h"
#include "gateway/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
one_line(const char *line, size_t len)
{
    char dec[PST_AUTH_FIELD_MAX * 3 + 3];
    char login[PST_AUTH_FIELD_MAX + 1], pw[PST_AUTH_FIELD_MAX + 1];
    char canon[PST_DOMAIN_BUF];

    ssize_t n = pst_b64_decode(line, len, dec, sizeof(dec));
    if (n > (ssize_t)sizeof(dec))
        abort();
    if (n >= 0 && pst_sasl_plain(dec, (size_t)n, login, pw) == 0) {
        size_t l = strlen(login), p = strlen(pw);
        if (l == 0 || l > PST_AUTH_FIELD_MAX || p > PST_AUTH_FIELD_MAX)
            abort();
    }
    if (pst_domain_canon(line, len, canon) == 0) {
        size_t c = strlen(canon);
        if (c == 0 || c >= PST_DOMAIN_BUF)
            abort();
        for (size_t i = 0; i < c; i++)
            if ((unsigned char)canon[i] >= 0x80 ||
                (canon[i] >= 'A' && canon[i] <= 'Z'))
                abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        one_line(p, len);
        p += len + 1;
    }
    return 0;
}
