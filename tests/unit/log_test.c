/*
 * log_test.c - JSON log lines (pst_log_json): key=value text with quoted
 * values becomes one object with the same fields, decoded and re-escaped;
 * bare tokens go to "text"; a repeated key is suffixed; invalid UTF-8
 * becomes U+FFFD; an object too long for its buffer keeps whole fields
 * only and says it was truncated.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/log.h"

static void
check(const char *text, const char *want)
{
    char out[1024];
    size_t n = pst_log_json(out, sizeof(out), NULL, NULL, 0, "info", text);
    assert_int_equal(n, strlen(out));
    if (strcmp(out, want) != 0)
        fail_msg("for %s\n got %s\nwant %s", text, out, want);
}

static void
test_fields(void **state)
{
    (void)state;
    check("sess=00ab event=helo name=\"a\\\"b\\\\c\\x01\\xc3\\xa9\\xff\"",
          "{\"level\":\"info\",\"sess\":\"00ab\",\"event\":\"helo\","
          "\"name\":\"a\\\"b\\\\c\\u0001\xc3\xa9\\ufffd\"}");
    check("event=x a=1 a=2 free words k=", "{\"level\":\"info\",\"event\":"
          "\"x\",\"a\":\"1\",\"a_2\":\"2\",\"k\":\"\",\"text\":\"free "
          "words\"}");
    check("", "{\"level\":\"info\"}");
    /* overlong, surrogate and truncated sequences */
    check("v=\"\\xc0\\xaf|\\xed\\xa0\\x80|\\xe2\\x82|\\xf4\\x90\\x80\\x80\"",
          "{\"level\":\"info\",\"v\":\"\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd|"
          "\\ufffd|\\ufffd\\ufffd\\ufffd\\ufffd\"}");
}

static void
test_truncated(void **state)
{
    (void)state;
    char text[4096], out[600];
    size_t o = 0;
    o += (size_t)snprintf(text, sizeof(text), "event=big ");
    for (int f = 0; f < 20; f++) {
        o += (size_t)snprintf(text + o, sizeof(text) - o, "f%d=\"", f);
        for (int i = 0; i < 10; i++)
            o += (size_t)snprintf(text + o, sizeof(text) - o, "\\x01");
        o += (size_t)snprintf(text + o, sizeof(text) - o, "\" ");
    }
    size_t n = pst_log_json(out, sizeof(out), "2026-01-01T00:00:00.000Z",
                            "postern", 7, "info", text);
    assert_true(n < sizeof(out));
    const char *end = ",\"truncated\":\"yes\"}";
    assert_int_equal(strcmp(out + n - strlen(end), end), 0);
    /* whole fields only: the last field before the marker is closed */
    assert_int_equal(out[n - strlen(end) - 1], '"');
    assert_non_null(strstr(out, "\"f0\":\""));
    assert_null(strstr(out, "\"f19\""));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
