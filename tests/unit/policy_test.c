/*
 * policy_test.c - relay decisions (every relay trick, trusted and
 * untrusted), IDN A-/U-label and trailing-dot equality, recipient lists,
 * per-client session counting (IPv6 per /64), and core/domain.h.
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
#include "core/domain.h"
#include "gateway/parse.h"
#include "gateway/policy.h"

static char dir[64];
static char conf_path[128], rcpt_path[128];

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static struct pst_policy *
load(const char *text)
{
    struct pst_err err = {0};
    struct pst_policy *p = NULL;
    write_file(conf_path, text);
    struct pst_conf *c = pst_conf_load(conf_path, &err);
    if (c == NULL)
        fail_msg("config: %s", pst_err_first(&err));
    int rc = pst_policy_new(&p, c, &err);
    if (rc < 0)
        fail_msg("policy: %s", pst_err_first(&err));
    pst_conf_unref(c);
    pst_err_free(&err);
    return p;
}

static int
setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/policy_test.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(conf_path, sizeof(conf_path), "%s/t.conf", dir);
    snprintf(rcpt_path, sizeof(rcpt_path), "%s/rcpts", dir);
    write_file(rcpt_path, "# valid users\nalice\nBob@List.Test.\n"
                          "\"carol\"@list.test\n\n");
    return 0;
}

static int
teardown(void **state)
{
    unlink(conf_path);
    unlink(rcpt_path);
    rmdir(dir);
    return 0;
}

static void
test_domain_canon(void **state)
{
    static const struct {
        const char *in, *want;      /* want NULL: invalid */
    } cases[] = {
        {"relay.test", "relay.test"},
        {"Relay.TEST.", "relay.test"},
        {"XN--BCHER-KVA.test", "xn--bcher-kva.test"},
        {"b\xc3\xbc" "cher.test", "xn--bcher-kva.test"},
        {"B\xc3\x9c" "CHER.Test.", "xn--bcher-kva.test"},
        {"\xe4\xbe\x8b\xe3\x81\x88.test", "xn--r8jz45g.test"},
        {"", NULL},
        {".", NULL},
        {"a\xe2\x80\x8e.test", NULL},   /* LRM: not allowed in IDNA2008 */
        {"\xff\xfe.test", NULL},        /* not UTF-8 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[PST_DOMAIN_BUF];
        int rc = pst_domain_canon(cases[i].in, strlen(cases[i].in), out);
        if (cases[i].want == NULL) {
            if (rc == 0)
                fail_msg("'%s': want invalid, got '%s'", cases[i].in, out);
        } else {
            if (rc != 0)
                fail_msg("'%s': want '%s', got invalid", cases[i].in,
                         cases[i].want);
            if (strcmp(out, cases[i].want) != 0)
                fail_msg("'%s': want '%s', got '%s'", cases[i].in,
                         cases[i].want, out);
        }
    }
}

/* Parse "<...>" the way RCPT does, then ask the policy. */
static enum pst_rcpt_verdict
verdict(struct pst_policy *p, const char *path, bool may_relay)
{
    struct pst_path pa;
    size_t end;
    enum pst_path_err pe = pst_path_parse(path, strlen(path), &pa, false,
                                          true, &end);
    if (pe != PST_PATH_OK)
        fail_msg("%s: parse error %d", path, (int)pe);
    if (pa.is_postmaster)
        return PST_RCPT_ACCEPT;
    return pst_policy_rcpt(p, pa.addr, pa.domain_literal, may_relay);
}

static void
test_relay_tricks(void **state)
{
    char text[512];
    snprintf(text, sizeof(text),
             "relay = { trusted_networks = [ \"127.0.0.1/32\", "
             "\"2001:db8::/64\" ];\n"
             "  domains = ( \"Relay.Test.\", \"b\xc3\xbc" "cher.test\",\n"
             "    { domain = \"list.test\"; recipients = \"%s\"; } ); };\n",
             rcpt_path);
    struct pst_policy *p = load(text);
    static const struct {
        const char *path;
        enum pst_rcpt_verdict outsider, insider;
    } cases[] = {
        {"<u@relay.test>", PST_RCPT_ACCEPT, PST_RCPT_ACCEPT},
        {"<U@RELAY.TEST.>", PST_RCPT_ACCEPT, PST_RCPT_ACCEPT},
        {"<u@evil.test>", PST_RCPT_RELAY_DENIED, PST_RCPT_ACCEPT},
        {"<u%evil.test@relay.test>", PST_RCPT_RELAY_DENIED, PST_RCPT_ACCEPT},
        {"<evil.test!u@relay.test>", PST_RCPT_RELAY_DENIED, PST_RCPT_ACCEPT},
        {"<\"u@evil.test\"@relay.test>", PST_RCPT_RELAY_DENIED,
         PST_RCPT_ACCEPT},
        {"<\"u\"@relay.test>", PST_RCPT_ACCEPT, PST_RCPT_ACCEPT},
        {"<@relay.test:u@evil.test>", PST_RCPT_RELAY_DENIED, PST_RCPT_ACCEPT},
        {"<@evil.test:u@relay.test>", PST_RCPT_ACCEPT, PST_RCPT_ACCEPT},
        {"<@evil.test,@x.test:u@relay.test>", PST_RCPT_ACCEPT,
         PST_RCPT_ACCEPT},
        {"<u@relay.test.evil.test>", PST_RCPT_RELAY_DENIED, PST_RCPT_ACCEPT},
        {"<u@evil.relay.test>", PST_RCPT_RELAY_DENIED, PST_RCPT_ACCEPT},
        {"<u@relay.testx>", PST_RCPT_RELAY_DENIED, PST_RCPT_ACCEPT},
        {"<u@[127.0.0.1]>", PST_RCPT_RELAY_DENIED, PST_RCPT_ACCEPT},
        {"<u@[IPv6:::1]>", PST_RCPT_RELAY_DENIED, PST_RCPT_ACCEPT},
        {"<u@xn--bcher-kva.test>", PST_RCPT_ACCEPT, PST_RCPT_ACCEPT},
        {"<u@XN--BCHER-KVA.TEST.>", PST_RCPT_ACCEPT, PST_RCPT_ACCEPT},
        {"<u@b\xc3\xbc" "cher.test>", PST_RCPT_ACCEPT, PST_RCPT_ACCEPT},
        {"<u@B\xc3\x9c" "CHER.test>", PST_RCPT_ACCEPT, PST_RCPT_ACCEPT},
        {"<u@xn--bcher-kvb.test>", PST_RCPT_RELAY_DENIED, PST_RCPT_ACCEPT},
        {"<postmaster>", PST_RCPT_ACCEPT, PST_RCPT_ACCEPT},
        /* recipient list */
        {"<alice@list.test>", PST_RCPT_ACCEPT, PST_RCPT_ACCEPT},
        {"<ALICE@List.Test.>", PST_RCPT_ACCEPT, PST_RCPT_ACCEPT},
        {"<bob@list.test>", PST_RCPT_ACCEPT, PST_RCPT_ACCEPT},
        {"<\"carol\"@list.test>", PST_RCPT_ACCEPT, PST_RCPT_ACCEPT},
        {"<carol@list.test>", PST_RCPT_ACCEPT, PST_RCPT_ACCEPT},
        {"<mallory@list.test>", PST_RCPT_UNKNOWN_USER,
         PST_RCPT_UNKNOWN_USER},
        {"<postmaster@list.test>", PST_RCPT_ACCEPT, PST_RCPT_ACCEPT},
        {"<alice%evil@list.test>", PST_RCPT_RELAY_DENIED,
         PST_RCPT_UNKNOWN_USER},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum pst_rcpt_verdict o = verdict(p, cases[i].path, false);
        enum pst_rcpt_verdict t = verdict(p, cases[i].path, true);
        if (o != cases[i].outsider || t != cases[i].insider)
            fail_msg("%s: want outsider %d insider %d, got %d %d",
                     cases[i].path, cases[i].outsider, cases[i].insider, o,
                     t);
    }
    assert_true(pst_policy_relay_domain(p, "RELAY.test."));
    assert_true(pst_policy_relay_domain(p, "b\xc3\xbc" "cher.test"));
    assert_false(pst_policy_relay_domain(p, "other.test"));

    struct pst_ip ip;
    static const struct {
        const char *ip;
        bool trusted;
    } nets[] = {
        {"127.0.0.1", true},  {"127.0.0.2", false},     {"10.0.0.1", false},
        {"2001:db8::7", true}, {"2001:db8:0:1::7", false}, {"::1", false},
    };
    for (size_t i = 0; i < sizeof(nets) / sizeof(nets[0]); i++) {
        assert_int_equal(pst_ip_parse(&ip, nets[i].ip), 0);
        if (pst_policy_trusted(p, &ip) != nets[i].trusted)
            fail_msg("%s: want trusted=%d", nets[i].ip, nets[i].trusted);
    }
    pst_policy_free(p);
}

static void
test_bad_recipient_file(void **state)
{
    char text[512];
    struct pst_err err = {0};
    struct pst_policy *p = NULL;
    write_file(rcpt_path, "alice\nbob@other.test\n");
    snprintf(text, sizeof(text),
             "relay = { domains = ( { domain = \"list.test\"; "
             "recipients = \"%s\"; } ); };\n", rcpt_path);
    write_file(conf_path, text);
    struct pst_conf *c = pst_conf_load(conf_path, &err);
    assert_non_null(c);
    assert_true(pst_policy_new(&p, c, &err) < 0);
    assert_null(p);
    assert_non_null(strstr(pst_err_first(&err), ":2: \"bob@other.test\" is "
                                                "not an address in list.test"));
    pst_err_free(&err);
    pst_conf_unref(c);
    write_file(rcpt_path, "alice\n");
}

static void
test_ipcount(void **state)
{
    struct pst_ipcount *c = pst_ipcount_new(64);
    struct pst_ip a, b, d, e;
    assert_int_equal(pst_ip_parse(&a, "2001:db8:1:2::1"), 0);
    assert_int_equal(pst_ip_parse(&b, "2001:db8:1:2:ffff::9"), 0);
    assert_int_equal(pst_ip_parse(&d, "2001:db8:1:3::1"), 0);
    assert_int_equal(pst_ip_parse(&e, "127.0.0.2"), 0);
    assert_int_equal(pst_ipcount_add(c, &a), 1);
    assert_int_equal(pst_ipcount_add(c, &b), 2);   /* same /64 */
    assert_int_equal(pst_ipcount_add(c, &d), 1);   /* next /64 */
    assert_int_equal(pst_ipcount_add(c, &e), 1);
    assert_int_equal(pst_ipcount_add(c, &e), 2);
    pst_ipcount_remove(c, &a);
    assert_int_equal(pst_ipcount_add(c, &b), 2);
    pst_ipcount_remove(c, &b);
    pst_ipcount_remove(c, &b);
    assert_int_equal(pst_ipcount_add(c, &a), 1);
    pst_ipcount_free(c);

    c = pst_ipcount_new(128);
    assert_int_equal(pst_ipcount_add(c, &a), 1);
    assert_int_equal(pst_ipcount_add(c, &b), 1);
    pst_ipcount_free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_domain_canon),
        cmocka_unit_test(test_relay_tricks),
        cmocka_unit_test(test_bad_recipient_file),
        cmocka_unit_test(test_ipcount),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
