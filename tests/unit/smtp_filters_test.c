/*
 * smtp_filters_test.c - filter results on the wire: the refusal reply
 * line, the internal-error reply, and the ORCPT (RFC 3461 xtext) kept for
 * a recipient a filter routed elsewhere.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/smtp_filters.h"

static void
test_orcpt(void **state)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"postmaster@d.example", "rfc822;postmaster@d.example"},
        {"a+b=c@d.example", "rfc822;a+2Bb+3Dc@d.example"},
        {"\xc3\xa9@d.example", "rfc822;+C3+A9@d.example"},
    };
    for (size_t i = 0; i < PST_ARRAY_LEN(cases); i++) {
        char *o = pst_sf_orcpt(cases[i].in);
        if (strcmp(o, cases[i].want) != 0)
            fail_msg("orcpt(%s) = %s, want %s", cases[i].in, o,
                     cases[i].want);
        free(o);
    }
}

static void
test_reply(void **state)
{
    struct pst_tbuf b;
    struct pst_fres r;
    pst_tbuf_init(&b);
    pst_sf_internal_error(&r);
    assert_int_equal(r.verdict, PST_TEMPFAIL);
    pst_sf_reply(&b, &r);
    assert_string_equal(pst_tbuf_cstr(&b), "451 4.3.0 Internal error, try again later"
                                "\r\n");
    assert_string_equal(pst_sf_phase_name(PST_FP_RCPT), "rcpt");
    assert_string_equal(pst_sf_phase_name((enum pst_fphase)99), "?");
    pst_tbuf_free(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_orcpt),
        cmocka_unit_test(test_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
