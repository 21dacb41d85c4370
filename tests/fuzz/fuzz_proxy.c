/*
 * fuzz_proxy.c - libFuzzer target for the PROXY protocol header parser
 * (gateway/proxy.c): the first octet picks a fragment size; the input is
 * fed whole and in fragments, and both must agree on the outcome, on the
 * octets taken and on the client; taken never exceeds what was given.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static enum pst_proxy_status
feed(struct pst_proxy *p, const uint8_t *d, size_t n, size_t step,
     size_t *taken)
{
    enum pst_proxy_status st = PST_PROXY_MORE;
    size_t off = 0, used;
    pst_proxy_init(p);
    while (off < n && st == PST_PROXY_MORE) {
        size_t k = n - off < step ? n - off : step;
        /* a copy of exactly k octets: a read past it is caught */
        uint8_t *frag = malloc(k);
        memcpy(frag, d + off, k);
        st = pst_proxy_feed(p, frag, k, &used);
        free(frag);
        if (used > k)
            abort();
        off += used;
        if (st == PST_PROXY_MORE && used != k)
            abort();                /* a valid prefix takes all it is given */
    }
    *taken = off;
    return st;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pst_proxy a, b;
    size_t ta, tb;
    if (size < 1)
        return 0;
    size_t step = (size_t)(data[0] % 17) + 1;
    data++;
    size--;
    enum pst_proxy_status sa = feed(&a, data, size, size ? size : 1, &ta);
    enum pst_proxy_status sb = feed(&b, data, size, step, &tb);
    if (sa != sb || ta != tb)
        abort();
    if (sa == PST_PROXY_DONE) {
        if (a.local != b.local || a.version != b.version)
            abort();
        if (!a.local && (memcmp(&a.src, &b.src, sizeof(a.src)) != 0 ||
                         a.sport != b.sport || a.sport > 65535 ||
                         (a.src.family != 2 && a.src.family != 10)))
            abort();
        if (a.version == 1 && ta > PST_PROXY_V1_MAX)
            abort();
    }
    return 0;
}
