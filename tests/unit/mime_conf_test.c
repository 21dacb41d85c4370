/*
 * mime_conf_test.c - the `mime` config section: its defaults are the
 * message model's own (pst_mime_limits_default), values and the policy
 * load, and out-of-range values are errors with file:line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf/conf.h"
#include "core/mime.h"

static struct pst_conf *
load(const char *text, struct pst_err *err)
{
    char path[] = "/tmp/mime_conf_test.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct pst_conf *c = pst_conf_load(path, err);
    unlink(path);
    return c;
}

static void
assert_limits_equal(const struct pst_mime_limits *a,
                    const struct pst_mime_limits *b)
{
    assert_int_equal(a->depth, b->depth);
    assert_int_equal(a->parts, b->parts);
    assert_int_equal(a->header_bytes, b->header_bytes);
    assert_int_equal(a->header_fields, b->header_fields);
    assert_int_equal(a->total_header_bytes, b->total_header_bytes);
    assert_int_equal(a->encoded_words, b->encoded_words);
    assert_int_equal(a->boundary_len, b->boundary_len);
    assert_int_equal(a->params, b->params);
}

static void
test_defaults(void **state)
{
    struct pst_mime_limits want;
    struct pst_err err = {0};
    pst_mime_limits_default(&want);

    struct pst_conf *c = pst_conf_defaults();
    assert_non_null(c);
    assert_int_equal(c->mime.policy, PST_MIME_POLICY_FLAG);
    assert_limits_equal(&c->mime.limits, &want);
    pst_conf_unref(c);

    c = load("mime = { };\n", &err);
    assert_non_null(c);
    assert_limits_equal(&c->mime.limits, &want);
    pst_conf_unref(c);
}

static void
test_values(void **state)
{
    struct pst_err err = {0};
    struct pst_conf *c = load("mime = {\n"
                              "  policy = \"reject\";\n"
                              "  depth = 8;\n"
                              "  parts = 100;\n"
                              "  header_bytes = \"64K\";\n"
                              "  header_fields = 50;\n"
                              "  total_header_bytes = \"1M\";\n"
                              "  encoded_words = 10;\n"
                              "  boundary_length = 70;\n"
                              "  parameters = 5;\n"
                              "};\n",
                              &err);
    if (c == NULL)
        print_error("%s\n", pst_err_first(&err));
    assert_non_null(c);
    assert_int_equal(c->mime.policy, PST_MIME_POLICY_REJECT);
    assert_int_equal(c->mime.limits.depth, 8);
    assert_int_equal(c->mime.limits.parts, 100);
    assert_int_equal(c->mime.limits.header_bytes, 65536);
    assert_int_equal(c->mime.limits.header_fields, 50);
    assert_int_equal(c->mime.limits.total_header_bytes, 1048576);
    assert_int_equal(c->mime.limits.encoded_words, 10);
    assert_int_equal(c->mime.limits.boundary_len, 70);
    assert_int_equal(c->mime.limits.params, 5);
    pst_conf_unref(c);
}

static void
test_errors(void **state)
{
    static const struct {
        const char *text;
        const char *want;           /* substring of the first error */
    } t[] = {
        {"mime = {\n  depth = 0;\n};\n", ":2: mime.depth"},
        {"mime = {\n  depth = 1000;\n};\n", ":2: mime.depth"},
        {"mime = {\n\n  boundary_length = 69;\n};\n", ":3: mime.boundary_length"},
        {"mime = { policy = \"drop\"; };\n", ":1: mime.policy"},
        {"mime = { deep = 3; };\n", "unknown key 'deep' in mime"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pst_err err = {0};
        struct pst_conf *c = load(t[i].text, &err);
        assert_null(c);
        if (strstr(pst_err_first(&err), t[i].want) == NULL) {
            print_error("case %zu: got \"%s\", want \"%s\"\n", i,
                        pst_err_first(&err), t[i].want);
            pst_err_free(&err);
            fail();
        }
        pst_err_free(&err);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
