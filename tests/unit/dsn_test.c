/*
 * dsn_test.c - the RFC 3464 report builder (queue/dsn.c): its MIME
 * boundary is random (two reports about the same message at the same
 * second differ) and found in none of the parts it encloses, so an
 * original that holds a boundary line a sender could have predicted
 * cannot end the report early or add parts to it. Reports are read back
 * with core/mime.c, the parser every other part of postern uses.
 */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/log.h"
#include "core/mime.h"
#include "core/tbuf.h"
#include "queue/dsn.h"

#define QID "0000010000000000"
#define NOW ((time_t)1700000000)
#define HOST "mx.postern.test"

struct report {
    struct pst_envelope env;
    struct pst_dsn_rcpt rs[1];
    struct pst_tbuf b;
};

static void
build(struct report *r, const char *orig)
{
    memset(r, 0, sizeof(*r));
    pst_envelope_init(&r->env);
    r->env.sender = strdup("sender@example.org");
    pst_envelope_add_rcpt(&r->env, "a@dest.test");
    r->rs[0].rcpt = &r->env.rcpts[0];
    r->rs[0].action = PST_DSN_FAILED;
    r->rs[0].text = "dest.test[192.0.2.1] said: 550 5.1.1 unknown";
    struct pst_dsn_orig o = {(uint8_t *)orig, orig ? strlen(orig) : 0, true};
    pst__dsn_build(&r->b, HOST, QID, &r->env, r->rs, 1, orig ? &o : NULL,
                   NOW);
}

static void
report_free(struct report *r)
{
    pst_tbuf_free(&r->b);
    pst_envelope_free(&r->env);
}

/* parse - the report read back by core/mime.c. */
static struct pst_msg *
parse(const struct report *r)
{
    struct pst_mime_parser *p = pst_mime_parser_new(NULL, NULL, NULL);
    pst_mime_feed(p, r->b.p, r->b.len);
    return pst_mime_finish(p);
}

static void
test_boundary_random(void **state)
{
    struct report a, b;
    (void)state;
    build(&a, NULL);
    build(&b, NULL);
    struct pst_msg *ma = parse(&a), *mb = parse(&b);
    assert_string_equal(ma->root->content_type, "multipart/report");
    assert_non_null(ma->root->boundary);
    assert_non_null(mb->root->boundary);
    /* the same message, the same second: different boundaries */
    assert_string_not_equal(ma->root->boundary, mb->root->boundary);
    assert_null(strstr(ma->root->boundary, QID));
    assert_int_equal(strlen(ma->root->boundary), PST_DSN_BOUNDARY_LEN);
    pst_msg_free(ma);
    pst_msg_free(mb);
    report_free(&a);
    report_free(&b);
}

/* An original holding the boundary an earlier postern would have used
 * (queue id, second and host name) and a part of its own after it. */
static const char smuggler[] =
    "From: x@example.org\r\n"
    "Subject: hello\r\n"
    "\r\n"
    "text\r\n"
    "--" QID ".1700000000/" HOST "\r\n"
    "Content-Type: text/html\r\n"
    "\r\n"
    "<p>not from the mail system</p>\r\n"
    "--" QID ".1700000000/" HOST "--\r\n"
    "more text\r\n";

static void
test_original_cannot_split_the_report(void **state)
{
    struct report r;
    (void)state;
    build(&r, smuggler);
    struct pst_msg *m = parse(&r);
    const struct pst_mime_part *root = m->root;
    assert_int_equal(root->nchildren, 3);
    const struct pst_mime_part *c = root->child;
    assert_string_equal(c->content_type, "text/plain");
    assert_string_equal(c->next->content_type, "message/delivery-status");
    const struct pst_mime_part *o = c->next->next;
    assert_string_equal(o->content_type, "message/rfc822");
    /* the whole original is the third part's body, nothing else */
    size_t len = strlen(smuggler);
    assert_true(o->body_end - o->body_start >= len);
    assert_memory_equal(r.b.p + o->body_start, smuggler, len);
    assert_int_equal(m->flags & (PST_MIME_F_NO_CLOSE | PST_MIME_F_NO_START),
                     0);
    pst_msg_free(m);
    report_free(&r);
}

static bool
ok(const char *bnd, const char *content)
{
    return pst__dsn_boundary_ok(bnd, content, strlen(content));
}

static void
test_boundary_check(void **state)
{
    (void)state;
    assert_false(ok("00ff=_postern", "a\r\n--00ff=_postern\r\nb"));
    assert_true(ok("00fe=_postern", "a\r\n--00ff=_postern\r\nb"));
    assert_true(ok("00ff=_postern", ""));
    /* not at a line start: still refused */
    assert_false(ok("0f=_postern", "x--0f=_postern"));
    /* the delimiter of an inner multipart whose boundary is a prefix of
     * ours (closing or not, blanks after), for prefix-matching readers */
    assert_false(ok("00ff=_postern", "--00f\r\n"));
    assert_false(ok("00ff=_postern", "x\n--0--  \n"));
    assert_true(ok("00ff=_postern", "--1\r\n-- \r\n----"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boundary_random),
        cmocka_unit_test(test_original_cannot_split_the_report),
        cmocka_unit_test(test_boundary_check),
    };
    pst_log_open("dsn_test", 0, 0, PST_LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
