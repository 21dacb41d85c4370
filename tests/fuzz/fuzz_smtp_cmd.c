/*
 * fuzz_smtp_cmd.c - libFuzzer target for the command-line parsers: every
 * line of the input goes through pst_cmd_parse and, for MAIL and RCPT, the
 * path and parameter parsers, for BDAT the chunk-size reader, checking
 * their output invariants.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
one_line(const char *line, size_t len)
{
    struct pst_cmd c;
    struct pst_path p;
    struct pst_mail_params mp;
    struct pst_rcpt_params rp;
    char bad[64];
    size_t end = 0;

    pst_cmd_parse(line, len, &c);
    if (c.arg < line || c.arg + c.arg_len > line + len)
        abort();
    if (c.verb == PST_CMD_BDAT) {
        uint64_t sz;
        bool last;
        enum pst_bdat_form f = pst_bdat_parse(c.arg, c.arg_len, &sz, &last);
        /* a well-formed line is "digits" or "digits LAST", no more */
        size_t d = 0;
        while (d < c.arg_len && c.arg[d] >= '0' && c.arg[d] <= '9')
            d++;
        if (f == PST_BDAT_OK &&
            (d == 0 || (d < c.arg_len && (c.arg_len - d != 5 || !last))))
            abort();
        if (f == PST_BDAT_NO_SIZE && (sz != 0 || last))
            abort();
        return;
    }
    if (c.verb != PST_CMD_MAIL && c.verb != PST_CMD_RCPT)
        return;
    const char *a = c.arg;
    size_t n = c.arg_len;
    size_t skip = c.verb == PST_CMD_MAIL ? 5 : 3;   /* FROM: / TO: */
    if (n < skip)
        return;
    a += skip;
    n -= skip;
    if (pst_path_parse(a, n, &p, c.verb == PST_CMD_MAIL,
                       c.verb == PST_CMD_RCPT, &end) != PST_PATH_OK)
        return;
    if (end > n || strlen(p.addr) > PST_PATH_MAX)
        abort();
    if (!p.is_null && !p.is_postmaster && strchr(p.addr, '@') == NULL)
        abort();
    if (p.utf8 && !pst_utf8_valid(p.addr, strlen(p.addr)))
        abort();
    if (c.verb == PST_CMD_MAIL) {
        if (pst_mail_params_parse(a + end, n - end, &mp, bad, sizeof(bad)) ==
                PST_PARAM_OK &&
            strlen(mp.envid) >= sizeof(mp.envid))
            abort();
    } else {
        pst_rcpt_params_parse(a + end, n - end, &rp, bad, sizeof(bad));
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* copy so that reads past the end are caught by ASan */
    char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i == size || buf[i] == '\n') {
            size_t len = i - start;
            if (len && buf[start + len - 1] == '\r')
                len--;
            char *line = malloc(len ? len : 1);
            memcpy(line, buf + start, len);
            one_line(line, len);
            free(line);
            start = i + 1;
        }
    }
    free(buf);
    return 0;
}
