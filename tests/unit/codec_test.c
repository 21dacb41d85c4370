/*
 * codec_test.c - table-driven tests of the streaming base64 and
 * quoted-printable decoders and encoders: each input decoded whole and one
 * byte at a time must give the same octets and the same `bad` verdict;
 * encoders must round-trip through the decoders and keep MIME line rules.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/codec.h"

struct dcase {
    const char *name;
    const char *in;
    const char *want;
    size_t wantlen;                 /* 0: strlen(want) */
    bool bad;
};

/* Decode in with chunks of `step` octets (0: all at once). */
static size_t
decode(enum pst_cte cte, const char *in, size_t n, size_t step, char *out,
       bool *bad)
{
    struct pst_decoder d;
    size_t o = 0;
    char tmp[PST_DEC_OUT(4096)];

    pst_dec_init(&d, cte);
    for (size_t i = 0; i < n;) {
        size_t k = step ? (n - i < step ? n - i : step) : n;
        size_t w = pst_dec_update(&d, in + i, k, tmp);
        memcpy(out + o, tmp, w);
        o += w;
        i += k;
    }
    size_t w = pst_dec_final(&d, tmp);
    memcpy(out + o, tmp, w);
    o += w;
    *bad = pst_dec_bad(&d);
    return o;
}

static void
run_dcases(enum pst_cte cte, const struct dcase *t, size_t nt)
{
    for (size_t i = 0; i < nt; i++) {
        size_t wl = t[i].wantlen ? t[i].wantlen : strlen(t[i].want);
        for (size_t step = 0; step <= 3; step++) {
            char out[4096];
            bool bad;
            size_t n = decode(cte, t[i].in, strlen(t[i].in), step, out, &bad);
            if (n != wl || memcmp(out, t[i].want, wl) != 0 ||
                bad != t[i].bad) {
                print_error("%s (step %zu): got \"%.*s\" (%zu) bad=%d, want "
                            "\"%.*s\" (%zu) bad=%d\n",
                            t[i].name, step, (int)n, out, n, bad, (int)wl,
                            t[i].want, wl, t[i].bad);
                fail();
            }
        }
    }
}

static void
test_base64_decode(void **state)
{
    static const struct dcase t[] = {
        {"empty", "", "", 0, false},
        {"one", "YQ==", "a", 0, false},
        {"two", "YWI=", "ab", 0, false},
        {"three", "YWJj", "abc", 0, false},
        {"lines", "YW\r\nJj\r\nZGVm\r\n", "abcdef", 0, false},
        {"lf lines", "YWJj\nZGVm\n", "abcdef", 0, false},
        {"blanks", " Y W J j ", "abc", 0, false},
        {"missing pad", "YQ", "a", 0, true},
        {"missing one pad", "YWI", "ab", 0, true},
        {"bad chars", "Y!Q*==", "a", 0, true},
        {"after pad", "YQ==YQ==", "a", 0, true},
        {"blank after pad", "YQ==\r\n \r\n", "a", 0, false},
        {"lone sextet", "YWJjZ", "abc", 0, true},
        {"stray pad", "YW=Jj", "abc", 0, false},
        {"binary", "AP8A/w==", "\x00\xff\x00\xff", 4, false},
        {"url alphabet", "-_-_", "", 0, true},
    };
    run_dcases(PST_CTE_BASE64, t, sizeof(t) / sizeof(t[0]));
}

static void
test_qp_decode(void **state)
{
    static const struct dcase t[] = {
        {"plain", "hello", "hello", 0, false},
        {"hex", "a=3Db", "a=b", 0, false},
        {"lower hex", "a=3db=c3=A9", "a=b\xc3\xa9", 0, false},
        {"soft crlf", "ab=\r\ncd", "abcd", 0, false},
        {"soft lf", "ab=\ncd", "abcd", 0, false},
        {"soft with blanks", "ab= \t\r\ncd", "abcd", 0, false},
        {"hard crlf kept", "a\r\nb\r\n", "a\r\nb\r\n", 0, false},
        {"lf kept", "a\nb", "a\nb", 0, false},
        {"trailing blanks", "a  \r\nb \t\nc", "a\r\nb\nc", 0, false},
        {"inner blanks", "a  b", "a  b", 0, false},
        {"trailing blanks at end", "a  ", "a", 0, false},
        {"eq at end", "abc=", "abc", 0, false},
        {"eq blanks at end", "abc= ", "abc", 0, false},
        {"bad hex", "=ZZ", "=ZZ", 0, true},
        {"half hex", "=4x", "=4x", 0, true},
        {"half hex at end", "a=4", "a=4", 0, true},
        {"double eq", "==41", "=41", 0, true},
        {"eq blank text", "a= b", "a= b", 0, true},
        {"bare cr", "a\rb", "a\rb", 0, false},
        {"eq cr text", "a=\rb", "a=\rb", 0, true},
        {"nul", "=00x", "\0x", 2, false},
        {"encoded blank kept", "a=20\r\n", "a \r\n", 0, false},
    };
    run_dcases(PST_CTE_QP, t, sizeof(t) / sizeof(t[0]));
}

static void
test_identity(void **state)
{
    static const struct dcase t[] = {
        {"7bit", "a=3D\r\nb", "a=3D\r\nb", 0, false},
    };
    run_dcases(PST_CTE_7BIT, t, 1);
    run_dcases(PST_CTE_8BIT, t, 1);
    run_dcases(PST_CTE_UNKNOWN, t, 1);
}

static void
test_cte_parse(void **state)
{
    assert_int_equal(pst_cte_parse("Base64", 6), PST_CTE_BASE64);
    assert_int_equal(pst_cte_parse("QUOTED-PRINTABLE", 16), PST_CTE_QP);
    assert_int_equal(pst_cte_parse("7bit", 4), PST_CTE_7BIT);
    assert_int_equal(pst_cte_parse("8BIT", 4), PST_CTE_8BIT);
    assert_int_equal(pst_cte_parse("binary", 6), PST_CTE_BINARY);
    assert_int_equal(pst_cte_parse("x-uuencode", 10), PST_CTE_UNKNOWN);
    assert_int_equal(pst_cte_parse("base6", 5), PST_CTE_UNKNOWN);
    assert_string_equal(pst_cte_name(PST_CTE_QP), "quoted-printable");
}

static size_t
b64_encode(const uint8_t *in, size_t n, size_t step, unsigned line,
           char *out)
{
    struct pst_b64_enc e;
    size_t o = 0;
    pst_b64_enc_init(&e, line);
    for (size_t i = 0; i < n;) {
        size_t k = step ? (n - i < step ? n - i : step) : n;
        o += pst_b64_enc_update(&e, in + i, k, out + o);
        i += k;
    }
    o += pst_b64_enc_final(&e, out + o);
    return o;
}

static size_t
qp_encode(const uint8_t *in, size_t n, size_t step, bool binary, char *out)
{
    struct pst_qp_enc e;
    size_t o = 0;
    pst_qp_enc_init(&e, binary);
    for (size_t i = 0; i < n;) {
        size_t k = step ? (n - i < step ? n - i : step) : n;
        o += pst_qp_enc_update(&e, in + i, k, out + o);
        i += k;
    }
    o += pst_qp_enc_final(&e, out + o);
    return o;
}

static void
test_base64_encode(void **state)
{
    char out[256];
    size_t n = b64_encode((const uint8_t *)"a", 1, 0, 76, out);
    assert_int_equal(n, 6);
    assert_memory_equal(out, "YQ==\r\n", 6);
    n = b64_encode((const uint8_t *)"abc", 3, 1, 0, out);
    assert_int_equal(n, 4);
    assert_memory_equal(out, "YWJj", 4);
    n = b64_encode((const uint8_t *)"", 0, 0, 76, out);
    assert_int_equal(n, 0);
    /* 57 octets make exactly one 76-character line */
    uint8_t in[58];
    memset(in, 'x', sizeof(in));
    n = b64_encode(in, 57, 0, 76, out);
    assert_int_equal(n, 78);
    assert_memory_equal(out + 76, "\r\n", 2);
    n = b64_encode(in, 58, 5, 76, out);
    assert_int_equal(n, 78 + 6);
}

static void
check_qp_lines(const char *s, size_t n)
{
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') {
            if (col && (s[i - 1] == ' ' || s[i - 1] == '\t')) {
                print_error("blank before line end at %zu\n", i);
                fail();
            }
            col = 0;
            i++;
            continue;
        }
        unsigned char c = (unsigned char)s[i];
        if ((c < 33 || c > 126) && c != ' ' && c != '\t') {
            print_error("raw octet %02x at %zu\n", c, i);
            fail();
        }
        if (++col > 76) {
            print_error("line longer than 76 at %zu\n", i);
            fail();
        }
    }
}

static void
test_qp_encode(void **state)
{
    char out[PST_QP_ENC_OUT(200)];
    size_t n = qp_encode((const uint8_t *)"a \r\nb=c\t", 8, 0, false, out);
    assert_int_equal(n, strlen("a=20\r\nb=3Dc=09"));
    assert_memory_equal(out, "a=20\r\nb=3Dc=09", n);
    n = qp_encode((const uint8_t *)"a\nb", 3, 1, false, out);
    assert_memory_equal(out, "a\r\nb", n);
    n = qp_encode((const uint8_t *)"a\r\n", 3, 0, true, out);
    assert_memory_equal(out, "a=0D=0A", n);
    uint8_t line[200];
    memset(line, 'y', sizeof(line));
    n = qp_encode(line, sizeof(line), 7, false, out);
    check_qp_lines(out, n);
    /* a '-' opening a line, hard or soft, is encoded: no encoded line can
     * start like a boundary delimiter ("--b") */
    n = qp_encode((const uint8_t *)"--b\r\na-b\r\n-", 11, 0, false, out);
    assert_int_equal(n, strlen("=2D-b\r\na-b\r\n=2D"));
    assert_memory_equal(out, "=2D-b\r\na-b\r\n=2D", n);
    memset(line, '-', sizeof(line));
    n = qp_encode(line, sizeof(line), 3, false, out);
    check_qp_lines(out, n);
    for (size_t i = 0; i + 1 < n; i++)
        if (out[i] == '\n')
            assert_int_equal(out[i + 1], '=');
}

/* Random inputs through encoder and decoder, split at random points. */
static void
test_roundtrip(void **state)
{
    static uint8_t in[5000];
    static char enc[PST_QP_ENC_OUT(5000)], dec[PST_QP_ENC_OUT(5000)];
    srand(1);
    for (int round = 0; round < 200; round++) {
        size_t n = (size_t)rand() % sizeof(in);
        bool text = round % 2;
        for (size_t i = 0; i < n; i++) {
            in[i] = (uint8_t)rand();
            if (text) {
                static const char alpha[] = "ab =\t.\r\n\xc3\xa9";
                in[i] = (uint8_t)alpha[(unsigned)in[i] % (sizeof(alpha) - 1)];
            }
        }
        if (text) {
            /* text mode writes CRLF for LF and bare CR as =0D: keep input
             * canonical so it round-trips */
            for (size_t i = 0; i < n; i++)
                if (in[i] == '\r' || in[i] == '\n')
                    in[i] = 'z';
            for (size_t i = 40; i + 1 < n; i += 53) {
                in[i] = '\r';
                in[i + 1] = '\n';
            }
        }
        size_t step = 1 + (size_t)rand() % 97;
        bool bad;

        size_t m = b64_encode(in, n, step, 76, enc);
        size_t k = decode(PST_CTE_BASE64, enc, m, step, dec, &bad);
        assert_false(bad);
        assert_int_equal(k, n);
        assert_memory_equal(dec, in, n);

        m = qp_encode(in, n, step, !text, enc);
        check_qp_lines(enc, m);
        k = decode(PST_CTE_QP, enc, m, step, dec, &bad);
        assert_false(bad);
        assert_int_equal(k, n);
        assert_memory_equal(dec, in, n);
    }
}

/* The strict one-shot decoder (SASL) and the one-line encoder. */
static void
test_base64_strict(void **state)
{
    static const struct {
        const char *in, *want;      /* want NULL: invalid */
    } cases[] = {
        {"", ""},         {"YQ==", "a"},     {"YWI=", "ab"},
        {"YWJj", "abc"},  {"YWJjZA==", "abcd"},
        {"YQ=", NULL},    {"YQ", NULL},      {"Y===", NULL},
        {"YQ==YQ==", NULL}, {"YW!j", NULL},  {"=YWJ", NULL},
        {"YW Jj", NULL},  {"YWJj\r\n", NULL}, {"YW=j", NULL},
        {"====", NULL},   {"YWJjZA=\n", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[64];
        ssize_t n = pst_b64_decode(cases[i].in, strlen(cases[i].in), out,
                                   sizeof(out));
        if (cases[i].want == NULL) {
            if (n >= 0)
                fail_msg("'%s': want invalid, got %zd", cases[i].in, n);
            continue;
        }
        if (n != (ssize_t)strlen(cases[i].want) ||
            memcmp(out, cases[i].want, (size_t)n) != 0)
            fail_msg("'%s': want '%s', got %zd", cases[i].in, cases[i].want,
                     n);
    }
    char small[2];
    assert_true(pst_b64_decode("YWJj", 4, small, sizeof(small)) < 0);
    assert_int_equal(pst_b64_decode("YWI=", 4, small, sizeof(small)), 2);
    /* the one-line encoder is its inverse */
    char enc[PST_B64_ENC_OUT(5) + 1];
    assert_int_equal(pst_b64_encode("\0ab\0c", 5, enc), 8);
    assert_string_equal(enc, "AGFiAGM=");
    assert_int_equal(pst_b64_encode("", 0, enc), 0);
    assert_string_equal(enc, "");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64_decode),
        cmocka_unit_test(test_qp_decode),
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_cte_parse),
        cmocka_unit_test(test_base64_encode),
        cmocka_unit_test(test_base64_strict),
        cmocka_unit_test(test_qp_encode),
        cmocka_unit_test(test_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
