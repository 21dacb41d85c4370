/*
 * fuzz_wire.c - libFuzzer target for the delivery client's body writer
 * (queue/wire.c) with dot-stuffing, against a reference written the
 * plain way (split the whole input into lines, then cut each line).
 *
 * The input is fed in fragments whose sizes come from its first byte.
 * Invariants on what would go on the wire:
 *   - it is CRLF lines only: no CR or LF but in a CRLF pair, and it ends
 *     with CRLF (or is empty);
 *   - it is dot-stuffed: no line is a lone ".", a line that starts with a
 *     dot has its dot doubled;
 *   - no line is longer than 998 octets without its stuffing dot;
 *   - no octet is lost or added: it equals the reference exactly (every
 *     line end CRLF; a line longer than 998 octets cut, a header line
 *     continuing with a space).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/tbuf.h"
#include "queue/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
to_wire(void *arg, const char *line, size_t len)
{
    pst_wire_put_line(arg, line, len);
}

/* reference - the expected wire text of in. */
static void
reference(struct pst_tbuf *out, const uint8_t *in, size_t n)
{
    bool headers = true;
    size_t i = 0;

    while (i < n) {
        size_t s = i, e;
        while (i < n && in[i] != '\r' && in[i] != '\n')
            i++;
        e = i;
        if (i < n) {
            /* CRLF is one line end; a lone CR or LF is one too */
            if (in[i] == '\r' && i + 1 < n && in[i + 1] == '\n')
                i++;
            i++;
        }
        const char *l = (const char *)in + s;
        size_t len = e - s;
        if (len == 0) {
            headers = false;
            pst_wire_put_line(out, "", 0);
            continue;
        }
        size_t first = len < PST_WIRE_LINE ? len : PST_WIRE_LINE;
        pst_wire_put_line(out, l, first);
        for (size_t o = first; o < len;) {
            char piece[PST_WIRE_LINE];
            size_t k = 0;
            if (headers)
                piece[k++] = ' ';
            size_t take = PST_WIRE_LINE - k;
            if (take > len - o)
                take = len - o;
            memcpy(piece + k, l + o, take);
            pst_wire_put_line(out, piece, k + take);
            o += take;
        }
    }
}

static void
check_lines(const char *p, size_t n)
{
    if (n > 0 && (n < 2 || p[n - 2] != '\r' || p[n - 1] != '\n'))
        abort();
    size_t s = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
            abort();
        if (p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n'))
            abort();
        if (p[i] == '\n') {
            size_t len = i - 1 - s;
            const char *l = p + s;
            if (len == 1 && l[0] == '.')
                abort();            /* would end the data */
            if (len > 0 && l[0] == '.' && (len < 2 || l[1] != '.'))
                abort();            /* not stuffed */
            if (len - (len > 0 && l[0] == '.') > PST_WIRE_LINE)
                abort();
            s = i + 1;
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pst_tbuf got = {0}, want = {0};
    struct pst_wire w;

    if (size == 0)
        return 0;
    size_t frag = 1 + data[0] % 97;
    data++;
    size--;
    pst_wire_init(&w, to_wire, &got);
    for (size_t o = 0; o < size; o += frag)
        pst_wire_bytes(&w, data + o, size - o < frag ? size - o : frag);
    pst_wire_end(&w);
    reference(&want, data, size);
    check_lines(got.p, got.len);
    if (got.len != want.len ||
        (got.len > 0 && memcmp(got.p, want.p, got.len) != 0))
        abort();
    pst_tbuf_free(&got);
    pst_tbuf_free(&want);
    return 0;
}
