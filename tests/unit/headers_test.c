/*
 * headers_test.c - the RFC 5322 address-list parser, and the headers
 * module run through a real chain built from config text: every rule
 * kind, conditions that see an earlier filter's edit, masquerading of
 * tricky lists, the regex limits, the Authentication-Results boundary,
 * envelope rewriting, and config errors with file and line.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf/conf.h"
#include "filters/addrlist.h"
#include "filters/chain.h"
#include "queue/edits.h"

/* ---- address lists ---- */

struct acase {
    const char *in;
    int rc;
    size_t n;
    const char *domains;            /* "|"-joined domains as written */
    const char *locals;
};

static const struct pst_fhost test_host = {
    .hostname = "mx.postern.test",
    .authserv_id = "mx.postern.test",
};

static const struct acase acases[] = {
    {"a@b.example", 0, 1, "b.example", "a"},
    {"\"Doe, John\" <john@corp.example>, jane@x.example", 0, 2,
     "corp.example|x.example", "john|jane"},
    {"(comment, with comma) jane@x.example (and (nested) one)", 0, 1,
     "x.example", "jane"},
    {"Friends: a@one.example, \"q,@\" <b@two.example>;, c@three.example", 0,
     3, "one.example|two.example|three.example", "a|b|c"},
    {"undisclosed-recipients:;", 0, 0, "", ""},
    {"=?UTF-8?B?w6k=?= <c@CORP.example>", 0, 1, "CORP.example", "c"},
    {"\"x@corp.example\" <b@other.example>", 0, 1, "other.example", "b"},
    {"<@relay.example,@r2.example:user@host.example>", 0, 1, "host.example",
     "user"},
    {"\"quoted local\"@q.example", 0, 1, "q.example", "\"quoted local\""},
    {"a@[192.0.2.1]", 0, 1, "[192.0.2.1]", "a"},
    {"John Q. Public <jqp@pub.example>", 0, 1, "pub.example", "jqp"},
    {"a@b.example, , c@d.example", 0, 2, "b.example|d.example", "a|c"},
    {"J\xc3\xa9r\xc3\xb4me <j@utf8.example>", 0, 1, "utf8.example", "j"},
    /* refused */
    {"a@b.example c@d.example", -EINVAL, 0, NULL, NULL},
    {"<a@b.example", -EINVAL, 0, NULL, NULL},
    {"Group: a@b.example", -EINVAL, 0, NULL, NULL},
    {"(unclosed a@b.example", -EINVAL, 0, NULL, NULL},
    {"\"unclosed <a@b.example>", -EINVAL, 0, NULL, NULL},
    {"@b.example", -EINVAL, 0, NULL, NULL},
    {"a@", -EINVAL, 0, NULL, NULL},
};

static void
join(const char *s, const struct pst_addrlist *l, int dom, char *out,
     size_t n)
{
    out[0] = '\0';
    for (size_t i = 0; i < l->n; i++) {
        size_t off = dom ? l->v[i].domain_off : l->v[i].local_off;
        size_t len = dom ? l->v[i].domain_len : l->v[i].local_len;
        snprintf(out + strlen(out), n - strlen(out), "%s%.*s", i ? "|" : "",
                 (int)len, s + off);
    }
}

static void
test_addrlist(void **state)
{
    for (size_t i = 0; i < PST_ARRAY_LEN(acases); i++) {
        const struct acase *c = &acases[i];
        struct pst_addrlist l;
        size_t ep = 0;
        char got[512];
        int rc = pst_addrlist_parse(c->in, strlen(c->in), &l, &ep);
        if (rc != c->rc)
            fail_msg("case %zu \"%s\": rc %d, want %d (pos %zu)", i, c->in,
                     rc, c->rc, ep);
        if (rc == 0) {
            if (l.n != c->n)
                fail_msg("case %zu \"%s\": %zu mailboxes, want %zu", i,
                         c->in, l.n, c->n);
            join(c->in, &l, 1, got, sizeof(got));
            if (strcmp(got, c->domains) != 0)
                fail_msg("case %zu: domains \"%s\", want \"%s\"", i, got,
                         c->domains);
            join(c->in, &l, 0, got, sizeof(got));
            if (strcmp(got, c->locals) != 0)
                fail_msg("case %zu: locals \"%s\", want \"%s\"", i, got,
                         c->locals);
        }
        pst_addrlist_free(&l);
    }
}

static void
test_addrlist_limits(void **state)
{
    /* comments nested beyond the limit, and too many mailboxes */
    char deep[200] = "";
    for (int i = 0; i < 40; i++)
        strcat(deep, "(");
    strcat(deep, "x");
    for (int i = 0; i < 40; i++)
        strcat(deep, ")");
    strcat(deep, " a@b.example");
    struct pst_addrlist l;
    assert_int_equal(pst_addrlist_parse(deep, strlen(deep), &l, NULL),
                     -E2BIG);
    pst_addrlist_free(&l);
    size_t n = (PST_ADDRLIST_MAX + 1) * 6;
    char *many = malloc(n + 1);
    for (size_t i = 0; i <= PST_ADDRLIST_MAX; i++)
        memcpy(many + i * 6, "a@b.c,", 6);
    many[n - 1] = '\0';
    assert_int_equal(pst_addrlist_parse(many, n - 1, &l, NULL), -E2BIG);
    pst_addrlist_free(&l);
    free(many);
}

/* ---- the module through a chain ---- */

struct hx {
    uv_loop_t loop;
    struct pst_frt *rt;
    struct pst_chain *ch;
    struct pst_envelope env;
    struct pst_fres res;
    struct pst_tbuf out;            /* the message as delivered */
};

static struct hx *
hx_new(const char *filters_text)
{
    struct hx *h = calloc(1, sizeof(*h));
    config_t cf;
    struct pst_err err = {0};
    config_init(&cf);
    if (!config_read_string(&cf, filters_text))
        fail_msg("config text: line %d: %s", config_error_line(&cf),
                 config_error_text(&cf));
    int rc = pst_chain_load(config_lookup(&cf, "filters"), "test.conf", &test_host, &h->ch, &err);
    if (rc != 0)
        fail_msg("chain load: %s", pst_err_first(&err));
    config_destroy(&cf);
    uv_loop_init(&h->loop);
    assert_int_equal(pst_frt_new(&h->loop, 1, &h->rt), 0);
    pst_envelope_init(&h->env);
    return h;
}

static void
hx_free(struct hx *h)
{
    pst_chain_free(h->ch);
    pst_frt_close(h->rt);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&h->loop), 0);
    pst_envelope_free(&h->env);
    pst_tbuf_free(&h->out);
    free(h);
}

static void
never(void *arg, const struct pst_fres *r)
{
    fail_msg("headers is synchronous");
}

/* Run a whole message through; h->res is the verdict, h->out the text as
 * it would be delivered (NUL-terminated). */
static void
hx_message(struct hx *h, const char *text, bool smtputf8)
{
    struct pst_fsess *fs = pst_fsess_new(h->rt, h->ch, 1, &h->env, never,
                                         NULL);
    struct pst_tbuf blob = {0};
    pst_fsess_msg_begin(fs, smtputf8);
    assert_int_equal(pst_fsess_run(fs, PST_FP_MAIL, "s@corp.example",
                                   &h->res), 0);
    pst_fsess_msg_data(fs, text, strlen(text));
    assert_int_equal(pst_fsess_run(fs, PST_FP_EOM, NULL, &h->res), 0);
    h->out.len = 0;
    int e = pst_fsess_edits(fs, &blob);
    assert_true(e >= 0);
    if (e == 1)
        assert_int_equal(pst_edits_apply_mem(blob.p, blob.len, text,
                                             strlen(text), &h->out), 0);
    else
        pst_tbuf_add(&h->out, text, strlen(text));
    pst_tbuf_add(&h->out, "", 1);
    pst_tbuf_free(&blob);
    pst_fsess_free(fs);
}

#define OUT(h) ((const char *)(h)->out.p)

static const char base_msg[] =
    "Received: from a.example (a.example [192.0.2.1])\r\n"
    "\tby b.example; Sun, 22 Nov 2026 01:00:00 +0000\r\n"
    "Authentication-Results: mx.postern.test; spf=pass smtp.mailfrom=x\r\n"
    "Authentication-Results: other.example; dkim=pass\r\n"
    "From: \"Doe, John\" <john@corp.example>\r\n"
    "To: (team, all) dev@sub.corp.example, Friends: a@corp.example,\r\n"
    " \"x@corp.example\" <b@other.example>;\r\n"
    "Subject: [ext] quarterly report\r\n"
    "X-Spam-Score: 9\r\n"
    "X-Spam-Flag: YES\r\n"
    "Message-ID: <1@a.example>\r\n"
    "\r\n"
    "body\r\n";

static void
test_rules(void **state)
{
    struct hx *h = hx_new(
        "filters = ({ module = \"headers\";"
        " rules = ("
        "  { remove = \"^X-Spam-\"; },"
        "  { rewrite = \"Subject\"; match = \"^\\\\[ext\\\\] *(.*)$\";"
        "    replace = \"$1 (was external)\"; },"
        "  { tag_subject = \"[CHECKED]\"; },"
        "  { add = \"X-Gateway\"; value = \"postern\"; top = true; },"
        "  { masquerade = \"corp.example\"; as = \"example.com\"; }"
        " ); });");
    hx_message(h, base_msg, false);
    assert_int_equal(h->res.verdict, PST_CONTINUE);
    const char *o = OUT(h);
    if (getenv("PST_TEST_SHOW"))
        fprintf(stderr, "%s", o);
    /* untouched fields: byte-identical, folding and all */
    assert_non_null(strstr(o,
        "Received: from a.example (a.example [192.0.2.1])\r\n"
        "\tby b.example; Sun, 22 Nov 2026 01:00:00 +0000\r\n"));
    assert_non_null(strstr(o, "Message-ID: <1@a.example>\r\n\r\nbody\r\n"));
    assert_non_null(strstr(o,
        "Authentication-Results: other.example; dkim=pass\r\n"));
    /* trust boundary: our own authserv-id is gone */
    assert_null(strstr(o, "mx.postern.test"));
    assert_null(strstr(o, "X-Spam-"));
    assert_non_null(strstr(o,
        "Subject: [CHECKED] quarterly report (was external)\r\n"));
    assert_true(strncmp(o, "X-Gateway: postern\r\n", 20) == 0);
    assert_non_null(strstr(o, "From: \"Doe, John\" <john@example.com>\r\n"));
    assert_non_null(strstr(o, "(team, all) dev@example.com"));
    assert_non_null(strstr(o, "Friends: a@example.com"));
    assert_non_null(strstr(o, "\"x@corp.example\"\r\n <b@other.example>;"));
    hx_free(h);
}

/* The Authentication-Results boundary, one received field per case:
 * removed when its authserv-id (RFC 8601: after comments, quoted or not,
 * with an optional version) is ours, when it does not parse, or when its
 * version is not 1. */
struct arcase {
    const char *value;
    bool removed;
};

static const struct arcase arcases[] = {
    {"mx.postern.test; spf=pass smtp.mailfrom=x", true},
    {"MX.Postern.TEST; spf=pass", true},
    {"(x) mx.postern.test; dkim=pass", true},
    {"(a (nested) comment) mx.postern.test; dkim=pass", true},
    {"(a \\) quoted paren) mx.postern.test; dkim=pass", true},
    {"\t (x)(y)  mx.postern.test; dkim=pass", true},
    {"\"mx.postern.test\"; dmarc=pass", true},
    {"\"mx.post\\ern.test\"; dmarc=pass", true},
    {"(c) \"MX.postern.test\" (d); dmarc=pass", true},
    {"mx.postern.test 1; dkim=pass", true},
    {"mx.postern.test (c) 1 (d); dkim=pass", true},
    {"mx.postern.test(c); dkim=pass", true},
    {"mx.postern.test.; dkim=pass", true},
    {"mx.postern.test; none", true},
    {"mx.postern.test ; none", true},
    /* does not parse: removed, whoever it names */
    {"(unclosed mx.postern.test; dkim=pass", true},
    {"\"mx.postern.test; dkim=pass", true},
    {"mx.postern.test dkim=pass", true},
    {"=?utf-8?q?mx.postern.test?=; dkim=pass", true},
    {"other.example mx.postern.test; dkim=pass", true},
    {"; dkim=pass", true},
    {"\"\"; dkim=pass", true},
    {"", true},
    {"other.example", true},
    {"other.example 1 2; dkim=pass", true},
    /* a version postern does not know (RFC 8601 section 5) */
    {"other.example 2; dkim=pass", true},
    {"other.example 01; dkim=pass", false},
    /* someone else's */
    {"other.example; dkim=pass", false},
    {"other.example 1; dkim=pass", false},
    {"(mx.postern.test) other.example; dkim=pass", false},
    {"\"other.example\"; dkim=pass", false},
    {"mx.postern.test.evil.example; dkim=pass", false},
    {"evil-mx.postern.test; dkim=pass", false},
    {"mx.postern.tes; dkim=pass", false},
    {"other.example; dkim=pass (mx.postern.test", false},
    {"other.example; none", false},
};

static void
test_auth_results_boundary(void **state)
{
    struct hx *h = hx_new(
        "filters = ({ module = \"headers\";"
        " });");
    char msg[512];
    for (size_t i = 0; i < PST_ARRAY_LEN(arcases); i++) {
        const struct arcase *c = &arcases[i];
        snprintf(msg, sizeof(msg),
                 "Authentication-Results: %s\r\nSubject: t\r\n\r\nb\r\n",
                 c->value);
        hx_message(h, msg, false);
        assert_int_equal(h->res.verdict, PST_CONTINUE);
        bool gone = strstr(OUT(h), "Authentication-Results:") == NULL;
        if (gone != c->removed)
            fail_msg("case %zu \"%s\": %s, want %s", i, c->value,
                     gone ? "removed" : "kept",
                     c->removed ? "removed" : "kept");
        if (!gone)
            assert_string_equal(OUT(h), msg);   /* untouched */
        else
            assert_string_equal(OUT(h), "Subject: t\r\n\r\nb\r\n");
    }
    hx_free(h);
}

/* A field with our id that an earlier filter added is ours: a later
 * boundary keeps it. */
static void
test_auth_results_added_kept(void **state)
{
    struct hx *h = hx_new(
        "filters = ("
        " { module = \"headers\"; rules = ("
        "   { add = \"Authentication-Results\";"
        "     value = \"mx.postern.test; spf=pass smtp.mailfrom=a\"; } ); },"
        " { module = \"headers\"; });");
    hx_message(h,
               "Authentication-Results: mx.postern.test; spf=pass\r\n"
               "Subject: t\r\n\r\nb\r\n", false);
    assert_string_equal(OUT(h),
                        "Subject: t\r\n"
                        "Authentication-Results: mx.postern.test; spf=pass "
                        "smtp.mailfrom=a\r\n\r\nb\r\n");
    hx_free(h);
}

static void
test_condition_sees_earlier_filter(void **state)
{
    struct hx *h = hx_new(
        "filters = ("
        " { module = \"headers\"; rules = ("
        "   { add = \"X-Class\"; value = \"bulk\"; } ); },"
        " { module = \"headers\"; rules = ("
        "   { add = \"X-Bulk-Seen\"; value = \"yes\";"
        "     if_header = \"X-Class\"; if_match = \"^bulk$\"; },"
        "   { add = \"X-Never\"; value = \"no\";"
        "     if_header = \"X-Class\"; if_match = \"^other$\"; },"
        "   { add = \"X-Never2\"; value = \"no\"; if_header = \"X-Absent\"; }"
        " ); });");
    hx_message(h, base_msg, false);
    assert_non_null(strstr(OUT(h), "X-Class: bulk\r\nX-Bulk-Seen: yes\r\n"));
    assert_null(strstr(OUT(h), "X-Never"));
    hx_free(h);
}

static void
test_encoding(void **state)
{
    struct hx *h = hx_new(
        "filters = ({ module = \"headers\"; rules = ("
        "  { tag_subject = \"[\xc3\x84]\"; },"
        "  { add = \"X-Note\"; value = \"caf\xc3\xa9 ok\"; } ); });");
    hx_message(h, "Subject: hi\r\n\r\nb\r\n", false);
    assert_non_null(strstr(OUT(h), "Subject: =?UTF-8?B?W8OEXQ==?= hi\r\n"));
    assert_non_null(strstr(OUT(h), "X-Note: =?UTF-8?B?Y2Fmw6k=?= ok\r\n"));
    hx_message(h, "Subject: hi\r\n\r\nb\r\n", true);  /* SMTPUTF8 */
    assert_non_null(strstr(OUT(h), "Subject: [\xc3\x84] hi\r\n"));
    hx_free(h);
}

static void
test_fold(void **state)
{
    struct hx *h = hx_new(
        "filters = ({ module = \"headers\"; rules = ("
        "  { add = \"X-Long\"; value = \"aaaa bbbb cccc dddd eeee ffff gggg "
        "hhhh iiii jjjj kkkk llll mmmm nnnn oooo pppp qqqq rrrr\"; } ); });");
    hx_message(h, "Subject: hi\r\n\r\nb\r\n", false);
    const char *x = strstr(OUT(h), "X-Long: ");
    assert_non_null(x);
    const char *eol = strstr(x, "\r\n");
    assert_true(eol - x <= 78);
    assert_true(eol[2] == ' ');     /* continued on a folded line */
    hx_free(h);
}

static void
test_backtracking_limit(void **state)
{
    static const char m[] =
        "Subject: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab\r\n\r\nb\r\n";
    struct hx *h = hx_new(
        "filters = ({ module = \"headers\"; match_limit = 10000;"
        " rules = ({ rewrite = \"Subject\"; match = \"^(a+)+$\";"
        " replace = \"x\"; }); });");
    uint64_t t0 = uv_hrtime();
    hx_message(h, m, false);
    /* without the match limit the backtracking would take hours; 30 s
     * is for a loaded machine */
    assert_true(uv_hrtime() - t0 < 30000000000ull);
    assert_int_equal(h->res.verdict, PST_TEMPFAIL);
    assert_int_equal(h->res.code, 451);
    hx_free(h);
    h = hx_new(
        "filters = ({ module = \"headers\"; match_limit = 10000;"
        " failure = \"accept\";"
        " rules = ({ rewrite = \"Subject\"; match = \"^(a+)+$\";"
        " replace = \"x\"; }); });");
    hx_message(h, m, false);
    assert_int_equal(h->res.verdict, PST_CONTINUE);
    assert_string_equal(OUT(h), m);  /* unfiltered, untouched */
    hx_free(h);
}

static void
test_envelope(void **state)
{
    struct hx *h = hx_new(
        "filters = ({ module = \"headers\"; rules = ("
        "  { sender = \"^(.*)@corp\\\\.example$\"; replace = \"$1@example.com\"; },"
        "  { recipient = \"^postmaster@(.*)$\"; replace = \"admin@$1\"; },"
        "  { recipient = \"^evil@(.*)$\"; replace = \"x y@$1\"; }"
        " ); });");
    struct pst_fsess *fs = pst_fsess_new(h->rt, h->ch, 9, &h->env, never,
                                         NULL);
    struct pst_fres r;
    pst_fsess_msg_begin(fs, false);
    assert_int_equal(pst_fsess_run(fs, PST_FP_MAIL, "alice@corp.example", &r),
                     0);
    assert_string_equal(r.new_sender, "alice@example.com");
    assert_int_equal(pst_fsess_run(fs, PST_FP_RCPT, "postmaster@d.example",
                                   &r), 0);
    assert_string_equal(r.new_rcpt, "admin@d.example");
    assert_int_equal(pst_fsess_run(fs, PST_FP_RCPT, "bob@d.example", &r), 0);
    assert_null(r.new_rcpt);
    /* a rewrite that would make an invalid address: failure mode */
    assert_int_equal(pst_fsess_run(fs, PST_FP_RCPT, "evil@d.example", &r), 0);
    assert_int_equal(r.verdict, PST_TEMPFAIL);
    pst_fsess_free(fs);
    hx_free(h);
}

/* ---- config errors, as check-config reports them ---- */

static char *
write_conf(const char *text)
{
    char *path = strdup("/tmp/pst_headers_test_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void
expect_error(const char *text, const char *want_line, const char *want_text)
{
    struct pst_err err = {0};
    char *path = write_conf(text);
    struct pst_conf *c = pst_conf_load(path, &err);
    bool found = false;
    char loc[64];
    snprintf(loc, sizeof(loc), "%s:%s:", path, want_line);
    for (unsigned i = 0; i < err.count && i < PST_ERR_MAX; i++)
        if (strstr(err.msgs[i], loc) && strstr(err.msgs[i], want_text))
            found = true;
    if (!found)
        fail_msg("want \"%s ... %s\", got \"%s\"", loc, want_text,
                 err.count ? err.msgs[0] : "(no error)");
    assert_null(c);
    pst_err_free(&err);
    unlink(path);
    free(path);
}

static void
test_check_config(void **state)
{
    pst_filters_setup();
    expect_error("filters = (\n"
                 "  { module = \"headers\";\n"
                 "    rules = (\n"
                 "      { remove = \"^X-(\"; }\n"
                 "    ); }\n"
                 ");\n",
                 "4", "does not compile");
    expect_error("filters = (\n  { module = \"nosuch\"; }\n);\n", "2",
                 "not built in");
    expect_error("filters = (\n  { module = \"headers\";\n"
                 "    rules = ( { add = \"X\"; value = \"v\"; colour = 1; } );"
                 " }\n);\n",
                 "3", "unknown rule key 'colour'");
    expect_error("filters = (\n  { module = \"headers\"; bogus = 1; }\n);\n",
                 "2", "unknown key 'bogus'");
    expect_error("filters = (\n  { module = \"headers\"; failure = \"maybe\"; "
                 "}\n);\n", "2", "failure must be");
    expect_error("filters = (\n  { module = \"headers\";\n"
                 "    rules = ( { rewrite = \"Subject\"; match = \"x\";\n"
                 "                replace = \"a\\r\\nBcc: victim@x\"; } ); }\n"
                 ");\n", "4", "CR or LF");
    expect_error("filters = (\n  { module = \"example\";\n"
                 "    path = \"/nonexistent/pst_example.so\"; }\n);\n", "3",
                 "cannot load");
    /* a good one loads */
    struct pst_err err = {0};
    char *path = write_conf("filters = ( { module = \"headers\"; rules = ("
                            "{ add = \"X-A\"; value = \"b\"; } ); } );\n");
    struct pst_conf *c = pst_conf_load(path, &err);
    assert_non_null(c);
    assert_int_equal(pst_chain_len(c->filters), 1);
    pst_conf_unref(c);
    unlink(path);
    free(path);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addrlist),
        cmocka_unit_test(test_addrlist_limits),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_auth_results_boundary),
        cmocka_unit_test(test_auth_results_added_kept),
        cmocka_unit_test(test_condition_sees_earlier_filter),
        cmocka_unit_test(test_encoding),
        cmocka_unit_test(test_fold),
        cmocka_unit_test(test_backtracking_limit),
        cmocka_unit_test(test_envelope),
        cmocka_unit_test(test_check_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
