/*
 * parse_test.c - command, path and parameter parsing (gateway/parse.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/parse.h"

static void
test_verbs(void **state)
{
    static const struct {
        const char *line;
        enum pst_verb verb;
        const char *arg;
    } cases[] = {
        {"EHLO client.example", PST_CMD_EHLO, "client.example"},
        {"ehlo x", PST_CMD_EHLO, "x"},
        {"mAiL FROM:<a@b>", PST_CMD_MAIL, "FROM:<a@b>"},
        {"QUIT", PST_CMD_QUIT, ""},
        {"DATA", PST_CMD_DATA, ""},
        {"BDAT 10 LAST", PST_CMD_BDAT, "10 LAST"},
        {"EHLOX", PST_CMD_UNKNOWN, ""},
        {"", PST_CMD_UNKNOWN, ""},
        {"STARTTLS", PST_CMD_STARTTLS, ""},
        {"rset", PST_CMD_RSET, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pst_cmd c;
        pst_cmd_parse(cases[i].line, strlen(cases[i].line), &c);
        if (c.verb != cases[i].verb)
            fail_msg("%s: verb %d, want %d", cases[i].line, c.verb,
                     cases[i].verb);
        if (c.arg_len != strlen(cases[i].arg) ||
            memcmp(c.arg, cases[i].arg, c.arg_len) != 0)
            fail_msg("%s: arg '%.*s', want '%s'", cases[i].line,
                     (int)c.arg_len, c.arg, cases[i].arg);
    }
}

static void
test_line_limits(void **state)
{
    assert_int_equal(pst_cmd_line_max(PST_CMD_NOOP), 512);
    assert_int_equal(pst_cmd_line_max(PST_CMD_MAIL), 512 + 26 + 100 + 500);
    assert_int_equal(pst_cmd_line_max(PST_CMD_RCPT), 512 + 500);
}

static void
test_bdat_args(void **state)
{
    static const struct {
        const char *arg;
        enum pst_bdat_form want;
        uint64_t size;
        bool last;
    } cases[] = {
        {"10", PST_BDAT_OK, 10, false},
        {"0 LAST", PST_BDAT_OK, 0, true},
        {"10 last", PST_BDAT_OK, 10, true},
        {"007 LaSt", PST_BDAT_OK, 7, true},
        {"18446744073709551615", PST_BDAT_OK, UINT64_MAX, false},
        /* the size reads, the line does not: the chunk still follows */
        {" 10", PST_BDAT_MALFORMED, 10, false},             /* double space */
        {"10  LAST", PST_BDAT_MALFORMED, 10, true},
        {"10 LAST ", PST_BDAT_MALFORMED, 10, true},         /* blank after */
        {"10 ", PST_BDAT_MALFORMED, 10, false},
        {"10\tLAST", PST_BDAT_MALFORMED, 10, true},
        {"10 LAST x", PST_BDAT_MALFORMED, 10, true},
        {"10 FIRST", PST_BDAT_MALFORMED, 10, false},
        {"10 LASTX", PST_BDAT_MALFORMED, 10, false},
        /* no size: where the chunk ends cannot be known */
        {"", PST_BDAT_NO_SIZE, 0, false},
        {" ", PST_BDAT_NO_SIZE, 0, false},
        {"x", PST_BDAT_NO_SIZE, 0, false},
        {"LAST", PST_BDAT_NO_SIZE, 0, false},
        {"-1", PST_BDAT_NO_SIZE, 0, false},
        {"+1", PST_BDAT_NO_SIZE, 0, false},
        {"10x LAST", PST_BDAT_NO_SIZE, 0, false},
        {"1e3", PST_BDAT_NO_SIZE, 0, false},
        {"0x10", PST_BDAT_NO_SIZE, 0, false},
        {"18446744073709551616", PST_BDAT_NO_SIZE, 0, false},  /* 2^64 */
        {"99999999999999999999999", PST_BDAT_NO_SIZE, 0, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t size;
        bool last;
        enum pst_bdat_form f = pst_bdat_parse(
            cases[i].arg, strlen(cases[i].arg), &size, &last);
        if (f != cases[i].want || size != cases[i].size ||
            last != cases[i].last)
            fail_msg("'%s': form %d size %llu last %d, want %d %llu %d",
                     cases[i].arg, f, (unsigned long long)size, last,
                     cases[i].want, (unsigned long long)cases[i].size,
                     cases[i].last);
    }
}

static char *
repeat(char c, size_t n)
{
    static char buf[1024];
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

static void
test_paths(void **state)
{
    static const struct {
        const char *in;
        bool allow_null, allow_pm;
        enum pst_path_err want;
        const char *addr;
    } cases[] = {
        {"<user@example.com>", 0, 0, PST_PATH_OK, "user@example.com"},
        {"  <user@example.com>", 0, 0, PST_PATH_OK, "user@example.com"},
        {"<>", 1, 0, PST_PATH_OK, ""},
        {"<>", 0, 0, PST_PATH_SYNTAX, NULL},
        {"user@example.com", 0, 0, PST_PATH_SYNTAX, NULL},
        {"<user@example.com", 0, 0, PST_PATH_SYNTAX, NULL},
        {"<@relay.example,@r2.example:u@evil.example>", 0, 0, PST_PATH_OK,
         "u@evil.example"},
        {"<@relay.example:u@x.example>", 0, 0, PST_PATH_OK, "u@x.example"},
        {"<@:u@x.example>", 0, 0, PST_PATH_SYNTAX, NULL},
        {"<\"u@evil\"@relay.example>", 0, 0, PST_PATH_OK,
         "\"u@evil\"@relay.example"},
        {"<\"a\\\"b\"@x.example>", 0, 0, PST_PATH_OK, "\"a\\\"b\"@x.example"},
        {"<u%evil@relay.example>", 0, 0, PST_PATH_OK, "u%evil@relay.example"},
        {"<evil!u@relay.example>", 0, 0, PST_PATH_OK, "evil!u@relay.example"},
        {"<u@[192.0.2.1]>", 0, 0, PST_PATH_OK, "u@[192.0.2.1]"},
        {"<u@[IPv6:2001:db8::1]>", 0, 0, PST_PATH_OK, "u@[IPv6:2001:db8::1]"},
        {"<u@[300.1.1.1]>", 0, 0, PST_PATH_SYNTAX, NULL},
        {"<u@example.com.>", 0, 0, PST_PATH_OK, "u@example.com"},
        {"<u@-bad.example>", 0, 0, PST_PATH_SYNTAX, NULL},
        {"<u@bad-.example>", 0, 0, PST_PATH_SYNTAX, NULL},
        {"<u@a..b>", 0, 0, PST_PATH_SYNTAX, NULL},
        {"<.u@x.example>", 0, 0, PST_PATH_SYNTAX, NULL},
        {"<u.@x.example>", 0, 0, PST_PATH_SYNTAX, NULL},
        {"<u v@x.example>", 0, 0, PST_PATH_SYNTAX, NULL},
        {"<@x.example>", 0, 0, PST_PATH_SYNTAX, NULL},
        {"<u@>", 0, 0, PST_PATH_SYNTAX, NULL},
        {"<postmaster>", 0, 1, PST_PATH_OK, "postmaster"},
        {"<PostMaster>", 0, 1, PST_PATH_OK, "postmaster"},
        {"<postmaster>", 0, 0, PST_PATH_SYNTAX, NULL},
        {"<用户@例子.测试>", 0, 0, PST_PATH_OK, "用户@例子.测试"},
        {"<u\xff@x.example>", 0, 0, PST_PATH_BAD_UTF8, NULL},
        {"<u\xc0\xaf@x.example>", 0, 0, PST_PATH_BAD_UTF8, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pst_path p;
        size_t end = 0;
        enum pst_path_err e =
            pst_path_parse(cases[i].in, strlen(cases[i].in), &p,
                           cases[i].allow_null, cases[i].allow_pm, &end);
        if (e != cases[i].want)
            fail_msg("%s: error %d, want %d", cases[i].in, e, cases[i].want);
        if (e == PST_PATH_OK && strcmp(p.addr, cases[i].addr) != 0)
            fail_msg("%s: addr '%s', want '%s'", cases[i].in, p.addr,
                     cases[i].addr);
        if (e == PST_PATH_OK && end != strlen(cases[i].in))
            fail_msg("%s: end %zu", cases[i].in, end);
    }
}

static void
test_path_limits(void **state)
{
    char in[4500];
    struct pst_path p;
    size_t end;

    snprintf(in, sizeof(in), "<%s@x.example>", repeat('a', 64));
    assert_int_equal(pst_path_parse(in, strlen(in), &p, 0, 0, &end),
                     PST_PATH_OK);
    snprintf(in, sizeof(in), "<%s@x.example>", repeat('a', 65));
    assert_int_equal(pst_path_parse(in, strlen(in), &p, 0, 0, &end),
                     PST_PATH_LOCAL_TOO_LONG);
    /* domain of 255 octets in labels of 63: path 1+1+1+255+1 = 259 > 256 */
    char dom[1100];
    snprintf(dom, sizeof(dom), "%s.", repeat('d', 63));
    char d4[4400];
    snprintf(d4, sizeof(d4), "%s%s%s%s", dom, dom, dom, repeat('e', 59));
    assert_int_equal(strlen(d4), 251);
    snprintf(in, sizeof(in), "<u@%s>", d4);     /* path 255: ok */
    assert_int_equal(pst_path_parse(in, strlen(in), &p, 0, 0, &end),
                     PST_PATH_OK);
    snprintf(in, sizeof(in), "<uu@%s>", d4);    /* path 256: ok */
    assert_int_equal(pst_path_parse(in, strlen(in), &p, 0, 0, &end),
                     PST_PATH_OK);
    snprintf(in, sizeof(in), "<uuu@%s>", d4);   /* path 257 */
    assert_int_equal(pst_path_parse(in, strlen(in), &p, 0, 0, &end),
                     PST_PATH_TOO_LONG);
    snprintf(d4, sizeof(d4), "%s%s%s%s", dom, dom, dom, repeat('e', 64));
    snprintf(in, sizeof(in), "<u@%s>", d4);     /* domain 256 */
    assert_int_equal(pst_path_parse(in, strlen(in), &p, 0, 0, &end),
                     PST_PATH_DOMAIN_TOO_LONG);
}

static void
test_mail_params(void **state)
{
    struct pst_mail_params mp;
    char bad[64];
    const char *s = " SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc+2B";
    assert_int_equal(pst_mail_params_parse(s, strlen(s), &mp, bad, sizeof(bad)),
                     PST_PARAM_OK);
    assert_int_equal(mp.size, 1000);
    assert_int_equal(mp.body, PST_BODY_8BITMIME);
    assert_true(mp.smtputf8);
    assert_int_equal(mp.ret, PST_RET_HDRS);
    assert_string_equal(mp.envid, "abc+2B");

    s = " FOO=bar";
    assert_int_equal(pst_mail_params_parse(s, strlen(s), &mp, bad, sizeof(bad)),
                     PST_PARAM_UNKNOWN);
    assert_string_equal(bad, "FOO");
    s = " SIZE=abc";
    assert_int_equal(pst_mail_params_parse(s, strlen(s), &mp, bad, sizeof(bad)),
                     PST_PARAM_BAD_VALUE);
    s = " SIZE=99999999999999999999999";
    assert_int_equal(pst_mail_params_parse(s, strlen(s), &mp, bad, sizeof(bad)),
                     PST_PARAM_BAD_VALUE);
    s = " BODY=9BIT";
    assert_int_equal(pst_mail_params_parse(s, strlen(s), &mp, bad, sizeof(bad)),
                     PST_PARAM_BAD_VALUE);
    s = " ENVID=a+zz";
    assert_int_equal(pst_mail_params_parse(s, strlen(s), &mp, bad, sizeof(bad)),
                     PST_PARAM_BAD_VALUE);
    s = " =x";
    assert_int_equal(pst_mail_params_parse(s, strlen(s), &mp, bad, sizeof(bad)),
                     PST_PARAM_SYNTAX);
}

static void
test_rcpt_params(void **state)
{
    struct pst_rcpt_params rp;
    char bad[64];
    const char *s = " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b";
    assert_int_equal(pst_rcpt_params_parse(s, strlen(s), &rp, bad, sizeof(bad)),
                     PST_PARAM_OK);
    assert_int_equal(rp.notify, PST_NOTIFY_SUCCESS | PST_NOTIFY_FAILURE);
    assert_string_equal(rp.orcpt, "rfc822;a+40b");
    s = " NOTIFY=NEVER,SUCCESS";
    assert_int_equal(pst_rcpt_params_parse(s, strlen(s), &rp, bad, sizeof(bad)),
                     PST_PARAM_BAD_VALUE);
    s = " ORCPT=utf-8;用户@例子";
    assert_int_equal(pst_rcpt_params_parse(s, strlen(s), &rp, bad, sizeof(bad)),
                     PST_PARAM_OK);
    s = " ORCPT=noseparator";
    assert_int_equal(pst_rcpt_params_parse(s, strlen(s), &rp, bad, sizeof(bad)),
                     PST_PARAM_BAD_VALUE);
}

static void
test_utf8(void **state)
{
    assert_true(pst_utf8_valid("abc", 3));
    assert_true(pst_utf8_valid("\xe2\x82\xac", 3));
    assert_true(pst_utf8_valid("\xf0\x9f\x98\x80", 4));
    assert_false(pst_utf8_valid("\xe2\x82", 2));
    assert_false(pst_utf8_valid("\xed\xa0\x80", 3));    /* surrogate */
    assert_false(pst_utf8_valid("\xc1\xbf", 2));        /* overlong */
    assert_false(pst_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verbs),       cmocka_unit_test(test_line_limits),
        cmocka_unit_test(test_bdat_args),
        cmocka_unit_test(test_paths),       cmocka_unit_test(test_path_limits),
        cmocka_unit_test(test_mail_params), cmocka_unit_test(test_rcpt_params),
        cmocka_unit_test(test_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
