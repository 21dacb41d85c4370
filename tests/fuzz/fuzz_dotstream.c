/*
 * fuzz_dotstream.c - libFuzzer target for the DATA/BDAT decoder: the first
 * byte picks DATA or BDAT and a fragment size; the output must be the same
 * whatever the fragmentation, within 2n+2 per feed, and always canonical
 * CRLF (no bare CR or LF ever leaves the decoder).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/dotstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t
decode(const char *in, size_t len, size_t step, bool bdat, char *out,
       bool *done_out)
{
    struct pst_dot d;
    size_t pos = 0, o = 0;
    bool done = false;
    char *tmp = malloc(2 * (step ? step : len) + 2);
    pst_dot_init(&d, bdat, 998);
    while (pos < len && !done) {
        size_t n = step ? step : len;
        if (n > len - pos)
            n = len - pos;
        size_t olen;
        size_t used =
            pst_dot_feed(&d, in + pos, n, tmp, &olen, &done);
        if (olen > 2 * n + 2 || used > n || (!done && used != n))
            abort();
        memcpy(out + o, tmp, olen);
        o += olen;
        pos += used;
    }
    if (bdat)
        o += pst_dot_finish(&d, out + o);
    free(tmp);
    *done_out = done;
    return o;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool bdat = data[0] & 1;
    size_t step = (data[0] >> 1) + 1;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    char *a = malloc(2 * len + 4), *b = malloc(2 * len + 4);
    bool da, db;
    size_t la = decode(in, len, 0, bdat, a, &da);
    size_t lb = decode(in, len, step, bdat, b, &db);
    if (la != lb || da != db || memcmp(a, b, la) != 0)
        abort();
    for (size_t i = 0; i < la; i++) {
        if (a[i] == '\r' && (i + 1 >= la || a[i + 1] != '\n')) {
            /* DATA may stop mid-line when the input ends; BDAT flushes */
            if (!(i + 1 == la && !da && !bdat))
                abort();
        }
        if (a[i] == '\n' && (i == 0 || a[i - 1] != '\r'))
            abort();
    }
    free(a);
    free(b);
    return 0;
}
