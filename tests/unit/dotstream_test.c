/*
 * dotstream_test.c - DATA/BDAT text framing (gateway/dotstream.c): end
 * detection, unstuffing, bare CR/LF normalisation, every smuggling shape,
 * and the same result whatever the fragmentation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/dotstream.h"

struct result {
    char out[4096];
    size_t out_len;
    size_t consumed;                /* input bytes up to and incl. the end */
    bool done;
    unsigned flags;
};

/* Feed in pieces of at most step bytes (0: all at once). */
static void
run(const char *in, size_t len, size_t step, bool bdat, size_t max_line,
    struct result *r)
{
    struct pst_dot d;
    char tmp[8192];
    memset(r, 0, sizeof(*r));
    pst_dot_init(&d, bdat, max_line);
    size_t pos = 0;
    while (pos < len && !r->done) {
        size_t n = step ? step : len;
        if (n > len - pos)
            n = len - pos;
        size_t olen;
        size_t used = pst_dot_feed(&d, in + pos, n, tmp, &olen, &r->done);
        assert_true(olen <= 2 * n + 2);
        memcpy(r->out + r->out_len, tmp, olen);
        r->out_len += olen;
        pos += used;
        if (!r->done)
            assert_int_equal(used, n);
    }
    if (bdat)
        r->out_len += pst_dot_finish(&d, r->out + r->out_len);
    r->consumed = pos;
    r->flags = d.flags;
    assert_int_equal(d.out_bytes, r->out_len);
}

static const struct {
    const char *name;
    const char *in;
    size_t in_len;                  /* 0: strlen */
    bool done;
    const char *out;
    size_t out_len;                 /* 0: strlen */
    size_t rest;                    /* input left after the end */
    unsigned flags;
} cases[] = {
    {"empty message", ".\r\n", 0, true, "", 0, 0, 0},
    {"one line", "a\r\n.\r\n", 0, true, "a\r\n", 0, 0, 0},
    {"unstuff", "..a\r\n..\r\n.\r\n", 0, true, ".a\r\n.\r\n", 0, 0, 0},
    {"dot mid-line", "a.b\r\n.\r\n", 0, true, "a.b\r\n", 0, 0, 0},
    {"pipelined rest", "a\r\n.\r\nQUIT\r\n", 0, true, "a\r\n", 0, 6, 0},
    {"no end yet", "a\r\nb", 0, false, "a\r\nb", 0, 0, 0},
    {"LF.LF smuggle", "a\n.\nMAIL FROM:<x>\r\n.\r\n", 0, true,
     "a\r\n.\r\nMAIL FROM:<x>\r\n", 0, 0, PST_DOT_BARE},
    {"CRLF.LF smuggle", "a\r\n.\nMAIL FROM:<x>\r\n.\r\n", 0, true,
     "a\r\n.\r\nMAIL FROM:<x>\r\n", 0, 0, PST_DOT_BARE},
    {"LF.CRLF smuggle", "a\n.\r\nMAIL FROM:<x>\r\n.\r\n", 0, true,
     "a\r\n.\r\nMAIL FROM:<x>\r\n", 0, 0, PST_DOT_BARE},
    {"CR.CRLF smuggle", "a\r.\r\nMAIL FROM:<x>\r\n.\r\n", 0, true,
     "a\r\n.\r\nMAIL FROM:<x>\r\n", 0, 0, PST_DOT_BARE},
    {"CRLF.NUL smuggle", "a\r\n.\0\r\nMAIL FROM:<x>\r\n.\r\n", 25, true,
     "a\r\n\0\r\nMAIL FROM:<x>\r\n", 21, 0, 0},
    {"CRLF.CR smuggle", "a\r\n.\rMAIL\r\n.\r\n", 0, true,
     "a\r\n.\r\nMAIL\r\n", 0, 0, PST_DOT_BARE},
    {"bare CR mid", "a\rb\r\n.\r\n", 0, true, "a\r\nb\r\n", 0, 0,
     PST_DOT_BARE},
    {"bare LF mid", "a\nb\r\n.\r\n", 0, true, "a\r\nb\r\n", 0, 0,
     PST_DOT_BARE},
    {"CR CR LF", "a\r\r\n.\r\n", 0, true, "a\r\n\r\n", 0, 0, PST_DOT_BARE},
    {"8bit", "\xe4\xbd\xa0\xff\r\n.\r\n", 0, true, "\xe4\xbd\xa0\xff\r\n", 0,
     0, 0},
};

static void
test_cases(void **state)
{
    static const size_t steps[] = {0, 1, 2, 3, 7};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t in_len = cases[i].in_len ? cases[i].in_len : strlen(cases[i].in);
        size_t out_len =
            cases[i].out_len ? cases[i].out_len : strlen(cases[i].out);
        for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
            struct result r;
            run(cases[i].in, in_len, steps[k], false, 1000, &r);
            if (r.done != cases[i].done)
                fail_msg("%s step %zu: done %d", cases[i].name, steps[k],
                         r.done);
            if (r.out_len != out_len ||
                memcmp(r.out, cases[i].out, out_len) != 0)
                fail_msg("%s step %zu: out '%.*s' (%zu), want '%s'",
                         cases[i].name, steps[k], (int)r.out_len, r.out,
                         r.out_len, cases[i].out);
            if (r.done && in_len - r.consumed != cases[i].rest)
                fail_msg("%s step %zu: rest %zu", cases[i].name, steps[k],
                         in_len - r.consumed);
            if (r.flags != cases[i].flags)
                fail_msg("%s step %zu: flags %u, want %u", cases[i].name,
                         steps[k], r.flags, cases[i].flags);
        }
    }
}

static void
test_bdat(void **state)
{
    struct result r;
    const char *in = "line\n.\r\nmore\r";
    run(in, strlen(in), 1, true, 1000, &r);
    assert_false(r.done);
    assert_int_equal(r.out_len, strlen("line\r\n.\r\nmore\r\n"));
    assert_memory_equal(r.out, "line\r\n.\r\nmore\r\n", r.out_len);
    assert_int_equal(r.flags, PST_DOT_BARE);

    in = "no newline at the end";
    run(in, strlen(in), 4, true, 1000, &r);
    assert_int_equal(r.out_len, strlen(in) + 2);
    assert_memory_equal(r.out, "no newline at the end\r\n", r.out_len);
    assert_int_equal(r.flags, 0);
    in = "ends well\r\n";
    run(in, strlen(in), 3, true, 1000, &r);
    assert_int_equal(r.out_len, strlen(in));
}

static void
test_long_line(void **state)
{
    struct result r;
    char in[2100];
    memset(in, 'x', 1000);
    memcpy(in + 1000, "\r\n.\r\n", 5);
    run(in, 1005, 0, false, 1000, &r);
    assert_int_equal(r.flags, 0);
    run(in, 1005, 0, false, 999, &r);
    assert_int_equal(r.flags, PST_DOT_LONG_LINE);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_bdat),
        cmocka_unit_test(test_long_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
