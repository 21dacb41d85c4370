/*
 * rfc2047_test.c - encoded words (RFC 2047) and parameter lists (RFC 2045,
 * RFC 2231): table-driven, each row an input and the exact UTF-8 wanted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/charset.h"
#include "core/rfc2047.h"

struct ewcase {
    const char *name;
    const char *in;
    const char *want;
    unsigned words, malformed;
    unsigned max;                   /* 0: 100 */
    bool limit;
};

static void
test_encoded_words(void **state)
{
    static const struct ewcase t[] = {
        {"b utf-8", "=?UTF-8?B?5Lit5paH?=", "中文", 1, 0, 0, false},
        {"q underscores", "=?utf-8?q?caf=C3=A9_au_lait?=", "café au lait", 1,
         0, 0, false},
        {"plain text kept", "hello  world", "hello  world", 0, 0, 0, false},
        {"adjacent joined", "a =?UTF-8?Q?x?= =?UTF-8?Q?y?= b", "a xy b", 2, 0,
         0, false},
        {"folded blanks between words", "=?UTF-8?Q?x?=\t \t=?UTF-8?Q?y?=",
         "xy", 2, 0, 0, false},
        {"split character joined", "=?UTF-8?B?5Lg=?= =?UTF-8?B?rQ==?=", "中",
         2, 0, 0, false},
        {"different charsets", "=?ISO-8859-1?Q?caf=E9?= =?UTF-8?Q?=C3=A9?=",
         "caféé", 2, 0, 0, false},
        {"text between words kept", "=?UTF-8?Q?a?= x =?UTF-8?Q?b?=", "a x b",
         2, 0, 0, false},
        {"bad base64 left", "x =?UTF-8?B?!!!?= y", "x =?UTF-8?B?!!!?= y", 0, 1,
         0, false},
        {"bad base64 length left", "=?UTF-8?B?YWJjZ?=", "=?UTF-8?B?YWJjZ?=", 0,
         1, 0, false},
        {"unknown charset left", "=?x-unknown?Q?abc?=", "=?x-unknown?Q?abc?=",
         0, 1, 0, false},
        {"blank inside is no word", "=?UTF-8?Q?a b?=", "=?UTF-8?Q?a b?=", 0, 0,
         0, false},
        {"unterminated", "=?UTF-8?Q?abc", "=?UTF-8?Q?abc", 0, 0, 0, false},
        {"bad encoding letter", "=?UTF-8?X?abc?=", "=?UTF-8?X?abc?=", 0, 0, 0,
         false},
        {"language dropped", "=?UTF-8*en?Q?hi?=", "hi", 1, 0, 0, false},
        {"gb2312 as gb18030", "=?GB2312?B?1tDOxA==?=", "中文", 1, 0, 0, false},
        {"iso-2022-jp", "=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?=", "日本語", 1, 0, 0,
         false},
        {"stray q equals", "=?UTF-8?Q?a=ZZ?=", "a=ZZ", 1, 0, 0, false},
        {"raw 8-bit text", "caf\xc3\xa9 \xff", "café \xef\xbf\xbd", 0, 0, 0,
         false},
        {"glued to text", "abc=?UTF-8?Q?d?=e", "abcde", 1, 0, 0, false},
        {"bad word between good", "=?UTF-8?Q?a?= =?UTF-8?B?@@?= =?UTF-8?Q?b?=",
         "a =?UTF-8?B?@@?= b", 2, 1, 0, false},
        {"limit", "=?UTF-8?Q?a?= =?UTF-8?Q?b?= =?UTF-8?Q?c?=",
         "ab =?UTF-8?Q?c?=", 2, 0, 2, true},
        {"nul in word", "=?UTF-8?Q?a=00b?=", "a\xef\xbf\xbd" "b", 1, 0, 0,
         false},
        {"invalid utf-8 in word", "=?UTF-8?Q?=FF?=", "\xef\xbf\xbd", 1, 0, 0,
         false},
        {"empty word", "=?UTF-8?Q?" "?=", "", 1, 0, 0, false},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pst_tbuf out;
        struct pst_rfc2047_stats st;
        pst_tbuf_init(&out);
        pst_rfc2047_decode(t[i].in, strlen(t[i].in), t[i].max ? t[i].max : 100,
                           &out, &st);
        const char *got = pst_tbuf_cstr(&out);
        if (strcmp(got, t[i].want) != 0 || st.words != t[i].words ||
            st.malformed != t[i].malformed || st.limit != t[i].limit) {
            print_error("%s: got \"%s\" words=%u malformed=%u limit=%d; want "
                        "\"%s\" %u %u %d\n",
                        t[i].name, got, st.words, st.malformed, st.limit,
                        t[i].want, t[i].words, t[i].malformed, t[i].limit);
            pst_tbuf_free(&out);
            fail();
        }
        pst_tbuf_free(&out);
    }
}

struct pcase {
    const char *name;
    const char *in;
    const char *want;               /* "n=v|n=v" in output order */
    bool bad, limit;
    unsigned max;                   /* 0: 64 */
};

static void
test_params(void **state)
{
    static const struct pcase t[] = {
        {"simple", "; charset=\"utf-8\"; format=flowed",
         "charset=utf-8|format=flowed", false, false, 0},
        {"case of names", "; Charset=UTF-8", "charset=UTF-8", false, false, 0},
        {"2231 single", "; name*=UTF-8''%E4%B8%AD.txt", "name=中.txt", false,
         false, 0},
        {"2231 split octets", "; filename*0*=UTF-8''%E4%B8; filename*1*=%AD.txt",
         "filename=中.txt", false, false, 0},
        {"2231 plain sections in any order",
         "; filename*1=\"b.txt\"; filename*0=\"a\"", "filename=ab.txt", false,
         false, 0},
        {"2231 mixed sections",
         "; title*0*=us-ascii'en'This%20is%20; title*1=\"fun\"",
         "title=This is fun", false, false, 0},
        {"2231 gap", "; filename*0=\"a\"; filename*2=\"c\"", "filename=a", true,
         false, 0},
        {"2231 language", "; filename*=iso-8859-1'fr'r%E9sum%E9.txt",
         "filename=résumé.txt", false, false, 0},
        {"2231 wins over plain",
         "; filename=\"plain\"; filename*=UTF-8''x", "filename=x", false, false,
         0},
        {"two 2231 forms", "; filename*=UTF-8''a.pdf; filename*0=\"b.exe\"",
         "filename=a.pdf", true, false, 0},
        {"2231 unknown charset", "; n*=x-bogus''%41", "n=A", true, false, 0},
        {"2231 bad escape", "; n*=UTF-8''%ZZ", "n=%ZZ", true, false, 0},
        {"2231 no quotes", "; n*=abc", "n=abc", true, false, 0},
        {"comment", "; charset=us-ascii (Plain text)", "charset=us-ascii", false,
         false, 0},
        {"comment between", " (c) ; (d) a (e) = (f) b (g)", "a=b", false,
         false, 0},
        {"blank in unquoted", "; name=foo bar.pdf", "name=foo bar.pdf", true,
         false, 0},
        {"quoted pair", "; a=\"x\\\"y;z\"", "a=x\"y;z", false, false, 0},
        {"duplicate", "; b=1; b=2", "b=1", true, false, 0},
        {"empty params", ";;; c=3", "c=3", false, false, 0},
        {"no value", "; flag; c=3", "c=3", true, false, 0},
        {"unterminated quote", "; a=\"xyz", "a=xyz", true, false, 0},
        {"limit", "; a=1; b=2; c=3", "a=1|b=2", false, true, 2},
        {"8-bit value", "; name=\"caf\xc3\xa9 \xff\"",
         "name=café \xef\xbf\xbd", false, false, 0},
        {"boundary kept verbatim", "; boundary=\"----=_Part_1=?x?=\"",
         "boundary=----=_Part_1=?x?=", false, false, 0},
        {"odd star name", "; a*b=1", "a*b=1", false, false, 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pst_params ps;
        char got[512] = "";
        pst_params_parse(t[i].in, strlen(t[i].in), t[i].max ? t[i].max : 64,
                         &ps);
        for (unsigned k = 0; k < ps.n; k++) {
            if (k)
                strcat(got, "|");
            strcat(got, ps.v[k].name);
            strcat(got, "=");
            strcat(got, ps.v[k].value);
        }
        if (strcmp(got, t[i].want) != 0 || ps.bad != t[i].bad ||
            ps.limit != t[i].limit) {
            print_error("%s: got \"%s\" bad=%d limit=%d; want \"%s\" %d %d\n",
                        t[i].name, got, ps.bad, ps.limit, t[i].want, t[i].bad,
                        t[i].limit);
            pst_params_free(&ps);
            fail();
        }
        pst_params_free(&ps);
    }
}

/* The values that lost, in the order given: a duplicate's, a plain form
 * an RFC 2231 one replaced, a name's second RFC 2231 form. */
static void
test_params_alt(void **state)
{
    static const struct {
        const char *in, *want, *alt;
    } t[] = {
        {"; b=1; b=2; B=3", "b=1", "b=2|b=3"},
        {"; filename=\"plain\"; filename*=UTF-8''x", "filename=x",
         "filename=plain"},
        {"; filename*=UTF-8''a.pdf; filename*0=\"b.exe\"", "filename=a.pdf",
         "filename=b.exe"},
        {"; filename*0=\"b.exe\"; filename*=UTF-8''a.pdf", "filename=b.exe",
         "filename=a.pdf"},
        /* every section present, past the gap */
        {"; filename*0=\"a\"; filename*2=\"c\"", "filename=a", "filename=ac"},
        {"; filename*0*=UTF-8''%C3%A9; filename*2=\".exe\"",
         "filename=\xc3\xa9", "filename=\xc3\xa9.exe"},
        {"; filename*1=\"evil.exe\"", "filename=", "filename=evil.exe"},
        /* a repeated section: one joining per occurrence */
        {"; filename*0=\"a\"; filename*0=\"b\"; filename*1=\".exe\"",
         "filename=a.exe", "filename=b.exe"},
        {"; n*0=a; n*1=x; n*1=y; n*1=z; n*0=b", "n=ax", "n=by|n=bz"},
        {"; filename*=UTF-8''a.txt; filename*=UTF-8''b.exe", "filename=a.txt",
         "filename=b.exe"},
        /* plain ones around an RFC 2231 one, folded */
        {"; filename=\"a.txt\";\r\n filename*=UTF-8''b.pdf;\r\n\t"
         "filename=\"c.exe\"", "filename=b.pdf",
         "filename=a.txt|filename=c.exe"},
        {"; a=1; b=2", "a=1|b=2", ""},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pst_params ps;
        char got[256] = "", alt[256] = "";
        pst_params_parse(t[i].in, strlen(t[i].in), 64, &ps);
        for (unsigned k = 0; k < ps.n + ps.nalt; k++) {
            const struct pst_param *p =
                k < ps.n ? &ps.v[k] : &ps.alt[k - ps.n];
            char *o = k < ps.n ? got : alt;
            snprintf(o + strlen(o), 256 - strlen(o), "%s%s=%s",
                     o[0] ? "|" : "", p->name, p->value);
        }
        pst_params_free(&ps);
        if (strcmp(got, t[i].want) != 0 || strcmp(alt, t[i].alt) != 0)
            fail_msg("%s: got \"%s\" alt \"%s\", want \"%s\" alt \"%s\"",
                     t[i].in, got, alt, t[i].want, t[i].alt);
    }
    /* at most 8 joinings of one form: past them, limit */
    char in[400] = "";
    for (int i = 0; i < 9; i++)
        snprintf(in + strlen(in), sizeof(in) - strlen(in), "; n*0=v%d", i);
    struct pst_params ps;
    pst_params_parse(in, strlen(in), 64, &ps);
    assert_int_equal(ps.n + ps.nalt, 8);
    assert_true(ps.limit && ps.bad);
    pst_params_free(&ps);
    in[strlen(in) - strlen("; n*0=v8")] = '\0';
    pst_params_parse(in, strlen(in), 64, &ps);
    assert_int_equal(ps.n + ps.nalt, 8);
    assert_false(ps.limit);
    pst_params_free(&ps);
    /* the copies in alt take at most three times the input */
    char big[600] = "; n*1=";
    memset(big + strlen(big), 'x', 300);
    strcat(big, "; n*0=a; n*0=b; n*0=c; n*0=d; n*0=e; n*0=f");
    pst_params_parse(big, strlen(big), 64, &ps);
    assert_int_equal(ps.n, 1);
    assert_int_equal(strlen(ps.v[0].value), 301);
    assert_int_equal(ps.nalt, 3);
    assert_true(ps.limit);
    pst_params_free(&ps);
}

static void
test_charsets(void **state)
{
    struct pst_tbuf out;
    pst_tbuf_init(&out);
    assert_non_null(pst_charset_canon("Windows-1252", 12));
    assert_null(pst_charset_canon("x-evil", 6));
    assert_null(pst_charset_canon("UTF-32", 6));
    assert_int_equal(pst_charset_to_utf8("x-evil", 6, "a", 1, &out),
                     -ENOENT);
    assert_int_equal(out.len, 0);
    assert_int_equal(pst_charset_to_utf8("windows-1252", 12, "\x80\x81", 2,
                                         &out), 0);
    /* 0x81 is unassigned in windows-1252: one U+FFFD */
    assert_string_equal(pst_tbuf_cstr(&out), "€\xef\xbf\xbd");
    pst_tbuf_reset(&out);
    /* many calls reuse the cached converters, across several charsets */
    for (int i = 0; i < 50; i++) {
        const char *cs[] = {"koi8-r", "iso-8859-2", "big5", "euc-jp",
                            "shift_jis", "euc-kr", "iso-8859-7", "gbk"};
        pst_charset_to_utf8(cs[i % 8], strlen(cs[i % 8]), "abc", 3, &out);
    }
    assert_int_equal(out.len, 150);
    pst_tbuf_reset(&out);
    pst_utf8_sanitize("a\0b\xed\xa0\x80", 6, &out);
    assert_string_equal(pst_tbuf_cstr(&out),
                        "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_true(pst_utf8_valid("中文", strlen("中文")));
    assert_false(pst_utf8_valid("\xc0\x80", 2));
    pst_tbuf_free(&out);
    pst_charset_thread_cleanup();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoded_words),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_params_alt),
        cmocka_unit_test(test_charsets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
