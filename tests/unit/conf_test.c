/*
 * conf_test.c - the config loader: every kind of error with its file:line,
 * all errors of a file reported in one pass, defaults, path resolution,
 * normalisation; and the CIDR matching of core/net.h that relay policy
 * relies on.
 *
 * Each case writes its config into a fresh mkdtemp directory (which is also
 * the working directory, so relative paths land there) and removes it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <libconfig.h>
#include <syslog.h>

#include "conf/conf.h"
#include "core/log.h"

struct tmp {
    char dir[64];
    char old[4096];
    char conf[128];
};

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void
tmp_enter(struct tmp *t)
{
    snprintf(t->dir, sizeof(t->dir), "/tmp/conf_test.XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    assert_non_null(getcwd(t->old, sizeof(t->old)));
    assert_int_equal(chdir(t->dir), 0);
    snprintf(t->conf, sizeof(t->conf), "%s/t.conf", t->dir);
    /* files that configs may name */
    write_file("cert.pem", "cert\n");
    write_file("key.pem", "key\n");
    write_file("passwd", "u:x\n");
    write_file("rcpts", "a\n");
}

static void
tmp_leave(struct tmp *t)
{
    static const char *const files[] = {"t.conf", "cert.pem", "key.pem",
                                        "passwd", "rcpts",    "inc.conf"};
    for (size_t i = 0; i < PST_ARRAY_LEN(files); i++)
        unlink(files[i]);
    assert_int_equal(chdir(t->old), 0);
    assert_int_equal(rmdir(t->dir), 0);
}

/* load - write text as t.conf and load it. */
static struct pst_conf *
load(struct tmp *t, const char *text, struct pst_err *err)
{
    write_file("t.conf", text);
    return pst_conf_load(t->conf, err);
}

static void
print_errors(const struct pst_err *err)
{
    for (unsigned i = 0; i < err->count && i < PST_ERR_MAX; i++)
        print_message("  got: %s\n", err->msgs[i]);
}

/* has_error - some message ends with "t.conf" + want's text. */
static int
has_error(const struct pst_err *err, const char *want)
{
    for (unsigned i = 0; i < err->count && i < PST_ERR_MAX; i++)
        if (strstr(err->msgs[i], want) != NULL)
            return 1;
    return 0;
}

struct bad_case {
    const char *name;
    const char *text;
    const char *want[4]; /* each must appear in some message */
};

static const struct bad_case bad_cases[] = {
    {"unknown top-level key",
     "hostname = \"a.example\";\nbogus = 1;\n",
     {"t.conf:2: unknown top-level key 'bogus'"}},
    /* filters/ parses this section through a hook (chain.h
     * pst_filters_setup); this test program does not install it */
    {"filters without the filters hook",
     "filters = ();\n",
     {"t.conf:1: 'filters': this program has no filter support"}},
    {"unknown key in section",
     "limits = {\n  recipents = 5;\n};\n",
     {"t.conf:2: unknown key 'recipents' in limits (did you mean "
      "'recipients'?)"}},
    {"unknown key in listener",
     "listeners = (\n { port = 25; tls_mode = \"none\"; }\n);\n",
     {"t.conf:2: unknown key 'tls_mode' in listeners[0]"}},
    {"wrong type int",
     "limits = { recipients = \"ten\"; };\n",
     {"t.conf:1: limits.recipients: expected an integer, got a string"}},
    {"wrong type float",
     "limits = { hops = 1.5; };\n",
     {"t.conf:1: limits.hops: expected an integer, got a floating-point"}},
    {"wrong type section",
     "\nlimits = 5;\n",
     {"t.conf:2: limits: expected a group"}},
    {"wrong type bool",
     "logging = { syslog = \"yes\"; };\n",
     {"t.conf:1: logging.syslog: expected true or false, got a string"}},
    {"wrong type string",
     "hostname = 5;\n",
     {"t.conf:1: hostname: expected a string, got an integer"}},
    {"wrong type listeners",
     "listeners = { port = 25; };\n",
     {"t.conf:1: listeners: expected a list"}},
    {"out of range low",
     "limits = {\n\n text_line_max = 997; };\n",
     {"t.conf:3: limits.text_line_max: 997 is out of range 998..10000000"}},
    {"out of range port",
     "listeners = ( { port = 70000; } );\n",
     {"t.conf:1: listeners[0].port: 70000 is out of range 1..65535"}},
    {"port zero",
     "listeners = ( { port = 0; } );\n",
     {"t.conf:1: listeners[0].port: 0 is out of range 1..65535"}},
    {"negative",
     "limits = { recipients = -1; };\n",
     {"t.conf:1: limits.recipients: -1 is out of range 1..100000"}},
    /* libconfig wraps this to 32 bits; the loader must not */
    {"beyond 32 bits",
     "limits = { message_size = 50000000000; };\n",
     {"t.conf:1: limits.message_size: 50000000000 is out of range "
      "1024..17179869184"}},
    {"beyond 64 bits",
     "limits = { recipients = 99999999999999999999999; };\n",
     {"t.conf:1: limits.recipients: number too large"}},
    {"bad size text",
     "limits = { message_size = \"50X\"; };\n",
     {"t.conf:1: limits.message_size: \"50X\" is not a size"}},
    {"size text out of range",
     "limits = { message_size = \"1T\"; };\n",
     {"t.conf:1: limits.message_size: 1099511627776 is out of range"}},
    {"bad cidr v4 address",
     "relay = {\n trusted_networks = [\n \"10.0.0.256/8\" ];\n};\n",
     {"t.conf:3: relay.trusted_networks: bad CIDR \"10.0.0.256/8\": "
      "\"10.0.0.256\" is not an IPv4 or IPv6 address"}},
    {"bad cidr v4 prefix",
     "relay = { trusted_networks = [ \"10.0.0.0/33\" ]; };\n",
     {"t.conf:1: relay.trusted_networks: bad CIDR \"10.0.0.0/33\": bad "
      "prefix length (0..32)"}},
    {"bad cidr empty prefix",
     "relay = { trusted_networks = [ \"10.0.0.0/\" ]; };\n",
     {"bad CIDR \"10.0.0.0/\": bad prefix length (0..32)"}},
    {"bad cidr v6 prefix",
     "relay = { trusted_networks = [ \"2001:db8::/129\" ]; };\n",
     {"t.conf:1: relay.trusted_networks: bad CIDR \"2001:db8::/129\": bad "
      "prefix length (0..128)"}},
    {"bad cidr v6 address",
     "relay = { trusted_networks = [ \"2001:db8:::1/64\" ]; };\n",
     {"bad CIDR \"2001:db8:::1/64\": \"2001:db8:::1\" is not an IPv4 or "
      "IPv6 address"}},
    {"bad cidr mapped prefix",
     "relay = { trusted_networks = [ \"::ffff:10.0.0.0/64\" ]; };\n",
     {"bad prefix length (96..128 for an IPv4-mapped address)"}},
    {"cidr host bits",
     "relay = { trusted_networks = [ \"10.0.0.1/8\", \"2001:db8::1/32\" ]; "
     "};\n",
     {"bad CIDR \"10.0.0.1/8\": host bits set beyond /8; use 10.0.0.0/8",
      "bad CIDR \"2001:db8::1/32\": host bits set beyond /32; use "
      "2001:db8::/32"}},
    {"cidr not a string",
     "relay = { trusted_networks = [ 1 ]; };\n",
     {"t.conf:1: relay.trusted_networks[0]: expected a CIDR string"}},
    {"bad enum",
     "smtp = {\n bare_newline = \"strip\";\n};\n",
     {"t.conf:2: smtp.bare_newline: \"strip\" is not one of \"normalize\", "
      "\"reject\""}},
    {"bad log level",
     "logging = { level = \"verbose\"; };\n",
     {"logging.level: \"verbose\" is not one of \"error\", \"warn\", "
      "\"info\", \"debug\""}},
    {"bad facility",
     "logging = { facility = \"local8\"; };\n",
     {"logging.facility: \"local8\" is not one of \"mail\", \"local0\""}},
    {"bad tls version",
     "tls = { min_version = \"TLSv1.1\"; };\n",
     {"tls.min_version: \"TLSv1.1\" is not one of \"TLSv1.2\", "
      "\"TLSv1.3\""}},
    {"proxy without proxies",
     "listeners = (\n { port = 25;\n proxy = true; },\n"
     " { port = 26; proxy = true; proxy_trusted = [ ]; }\n);\n",
     {"t.conf:3: listeners[0]: proxy = true needs proxy_trusted",
      "t.conf:4: listeners[1]: proxy = true needs proxy_trusted"}},
    {"proxies without proxy",
     "listeners = (\n { port = 25;\n proxy_trusted = [ \"10.0.0.1\" ]; }\n"
     ");\n",
     {"t.conf:3: listeners[0]: proxy_trusted without proxy = true"}},
    {"bad proxy CIDR",
     "listeners = ( { port = 25; proxy = true;\n"
     " proxy_trusted = [ \"10.0.0.1/8\" ]; } );\n"
     "limits = { proxy_timeout = 0; };\n",
     {"t.conf:2: listeners[0].proxy_trusted: bad CIDR \"10.0.0.1/8\": "
      "host bits set beyond /8; use 10.0.0.0/8",
      "t.conf:3: limits.proxy_timeout: 0 is out of range 1..3600"}},
    {"duplicate listener",
     "listeners = (\n { address = \"127.0.0.1\"; port = 25; },\n"
     " { address = \"127.0.0.1\"; port = 25; }\n);\n",
     {"t.conf:3: listeners[1]: duplicate listener 127.0.0.1:25 (also "
      "listeners[0] at line 2)"}},
    {"duplicate listener v6 spelled differently",
     "listeners = (\n { address = \"::1\"; port = 25; },\n"
     " { address = \"0:0::1\"; port = 25; }\n);\n",
     {"t.conf:3: listeners[1]: duplicate listener [::1]:25"}},
    {"wildcard overlap",
     "listeners = (\n { address = \"0.0.0.0\"; port = 25; },\n"
     " { address = \"127.0.0.1\"; port = 25; }\n);\n",
     {"t.conf:3: listeners[1]: 127.0.0.1 port 25 overlaps the wildcard"}},
    {"bad listener address",
     "listeners = ( { address = \"localhost\"; "
     "port = 25; } );\n",
     {"t.conf:1: listeners[0].address: \"localhost\" is not an IPv4 or IPv6 "
      "address"}},
    {"listener without port",
     "listeners = (\n { address = \"::1\"; }\n);\n",
     {"t.conf:2: listeners[0]: missing 'port'"}},
    {"no listeners",
     "listeners = ();\n",
     {"t.conf:1: listeners: at least one listener is needed"}},
    {"tls without certificates",
     "listeners = (\n { port = 25; },\n { port = 465; tls = \"implicit\"; }\n"
     ");\n",
     {"t.conf:3: listeners[1]: tls = \"implicit\" needs tls.certificates"}},
    {"bad tls mode",
     "listeners = ( { port = 25; tls = \"yes\"; } );\n",
     {"listeners[0].tls: \"yes\" is not one of \"none\", \"starttls\", "
      "\"implicit\""}},
    {"auth without password file",
     "listeners = ( { port = 25; auth = true; } );\n",
     {"t.conf:1: listeners[0]: auth = true needs auth.password_file"}},
    {"missing cert file",
     "tls = {\n certificates = (\n  { cert = \"nope.pem\"; key = \"key.pem\"; "
     "}\n );\n};\n",
     {"t.conf:3: tls.certificates[0].cert: ", "/nope.pem: No such file"}},
    {"cert without key",
     "tls = { certificates = ( { cert = \"cert.pem\"; } ); };\n",
     {"t.conf:1: tls.certificates[0]: missing 'key'"}},
    {"missing password file",
     "auth = { password_file = \"nopass\"; };\n",
     {"t.conf:1: auth.password_file: ", "/nopass: No such file"}},
    {"bad route kind",
     "delivery = { default_route = \"ftp:x\"; };\n",
     {"t.conf:1: delivery.default_route: \"ftp:x\": unknown kind; the forms "
      "are maildir:DIR"}},
    {"route without port",
     "delivery = { default_route = \"smtp:mx.example\"; "
     "};\n",
     {"delivery.default_route: \"smtp:mx.example\": missing :PORT"}},
    {"route bad port",
     "delivery = { default_route = \"lmtp:[::1]:0\"; };\n",
     {"delivery.default_route: \"lmtp:[::1]:0\": port must be 1..65535"}},
    {"route bare v6",
     "delivery = { default_route = \"smtp:::1:25\"; };\n",
     {"write an IPv6 address as [ADDRESS]"}},
    {"route empty maildir",
     "delivery = { default_route = \"maildir:\"; };\n",
     {"maildir: needs a directory"}},
    {"retry_min above retry_max",
     "delivery = {\n retry_min = 7200;\n retry_max = 3600;\n};\n",
     {"t.conf:2: delivery.retry_min (7200) is greater than "
      "delivery.retry_max (3600)"}},
    {"bad relay domain",
     "relay = { domains = ( \"exa mple.org\" ); };\n",
     {"t.conf:1: relay.domains[0].domain: \"exa mple.org\" is not a domain"}},
    {"U-label relay domain is its A-label",
     "relay = { domains = (\n \"xn--bcher-kva.de\",\n \"B\xc3\xbc" "cher.DE.\"\n); };\n",
     {"relay.domains[1]: duplicate domain \"xn--bcher-kva.de\""}},
    {"invalid IDN relay domain", "relay = { domains = ( \"a\xe2\x80\x8e.de\" ); };\n",
     {"is not a domain: not a valid domain or IDN"}},
    {"duplicate relay domain",
     "relay = { domains = (\n \"Example.org\",\n { domain = \"example.ORG.\"; "
     "}\n); };\n",
     {"t.conf:3: relay.domains[1]: duplicate domain \"example.org\""}},
    {"relay domain group without domain",
     "relay = { domains = ( { recipients = \"rcpts\"; } ); };\n",
     {"t.conf:1: relay.domains[0]: missing 'domain'"}},
    {"relay domain bad element",
     "relay = { domains = ( 5 ); };\n",
     {"t.conf:1: relay.domains[0]: expected a string or a group"}},
    {"control characters",
     "smtp = { banner = \"a\\r\\nb\"; };\n",
     {"t.conf:1: smtp.banner: control characters are not allowed"}},
    {"empty string",
     "hostname = \"\";\n",
     {"t.conf:1: hostname: must not be empty"}},
    {"bad hostname",
     "hostname = \"-bad.example\";\n",
     {"t.conf:1: hostname: \"-bad.example\" is not a host name"}},
    {"unknown user",
     "user = \"no-such-user-postern\";\n",
     {"t.conf:1: user: no such user \"no-such-user-postern\""}},
    {"control socket too long",
     "queue = { control_socket = \"/"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"; };\n",
     {"t.conf:1: queue.control_socket: ", "is longer than a unix socket path"}},
    /* one error each, no follow-on error from the value left unset */
    {"two bad addresses are not a duplicate",
     "listeners = (\n { address = \"foo\"; port = 25; },\n"
     " { address = \"bar\"; port = 25; }\n);\n",
     {"t.conf:2: listeners[0].address: \"foo\" is not",
      "t.conf:3: listeners[1].address: \"bar\" is not"}},
    {"syntax error",
     "limits = {\n  recipients = 5;\n  hops = ;\n};\n",
     {"t.conf:3: syntax error"}},
    {"libconfig duplicate setting",
     "limits = {\n hops = 5;\n hops = 6;\n};\n",
     {"t.conf:3: duplicate setting name"}},
    {"several errors in one pass",
     "hostname = \"a.example\";\n"
     "bogus = 1;\n"
     "limits = { recipients = 0; };\n"
     "relay = { trusted_networks = [ \"300.0.0.0/8\" ]; };\n"
     "smtp = { bare_newline = \"cr\"; };\n"
     "listeners = ( { port = 25; }, { port = 25; } );\n"
     "delivery = { default_route = \"pigeon\"; };\n",
     {"t.conf:2: unknown top-level key 'bogus'",
      "t.conf:3: limits.recipients: 0 is out of range",
      "t.conf:4: relay.trusted_networks: bad CIDR \"300.0.0.0/8\"",
      "t.conf:5: smtp.bare_newline: \"cr\" is not one of"}},
};

static void
test_bad_configs(void **state)
{
    struct tmp t;
    int failed = 0;

    tmp_enter(&t);
    for (size_t i = 0; i < PST_ARRAY_LEN(bad_cases); i++) {
        const struct bad_case *bc = &bad_cases[i];
        struct pst_err err = {0};
        struct pst_conf *c = load(&t, bc->text, &err);

        if (c != NULL) {
            print_message("case '%s': loaded, want an error\n", bc->name);
            pst_conf_unref(c);
            failed++;
        }
        for (size_t k = 0; k < PST_ARRAY_LEN(bc->want) && bc->want[k]; k++) {
            if (!has_error(&err, bc->want[k])) {
                print_message("case '%s': want error containing\n  want: %s\n",
                              bc->name, bc->want[k]);
                print_errors(&err);
                failed++;
            }
        }
        /* every message names the file and a line */
        for (unsigned k = 0; k < err.count && k < PST_ERR_MAX; k++) {
            if (strncmp(err.msgs[k], t.conf, strlen(t.conf)) != 0 ||
                err.msgs[k][strlen(t.conf)] != ':') {
                print_message("case '%s': message without file: %s\n", bc->name,
                              err.msgs[k]);
                failed++;
            }
        }
        pst_err_free(&err);
    }
    tmp_leave(&t);
    assert_int_equal(failed, 0);
}

static void
test_several_errors_all_reported(void **state)
{
    struct tmp t;
    struct pst_err err = {0};

    tmp_enter(&t);
    /* the last case of bad_cases, counted exactly: 6 problems */
    assert_null(load(&t, bad_cases[PST_ARRAY_LEN(bad_cases) - 1].text, &err));
    print_errors(&err);
    assert_int_equal(err.count, 6);
    assert_true(has_error(&err, "t.conf:6: listeners[1]: duplicate listener "
                                "127.0.0.1:25"));
    assert_true(has_error(&err, "t.conf:7: delivery.default_route: "
                                "\"pigeon\": unknown kind"));
    pst_err_free(&err);
    tmp_leave(&t);
}

/* exactly these messages: a bad value causes no second, derived error */
static void
test_no_follow_on_errors(void **state)
{
    static const struct {
        const char *text;
        unsigned count;
    } cases[] = {
        {"listeners = (\n { address = \"foo\"; port = 25; },\n"
         " { address = \"bar\"; port = 25; }\n);\n",
         2},
        {"listeners = ( { port = 0; }, { port = 0; } );\n", 2},
        {"auth = { password_file = \"nope\"; };\n"
         "listeners = ( { port = 25; auth = true; } );\n",
         1},
        {"tls = { certificates = 5; };\n"
         "listeners = ( { port = 25; tls = \"starttls\"; } );\n",
         1},
        {"queue = { directory = \"\"; };\n", 1},
    };
    struct tmp t;

    tmp_enter(&t);
    for (size_t i = 0; i < PST_ARRAY_LEN(cases); i++) {
        struct pst_err err = {0};
        assert_null(load(&t, cases[i].text, &err));
        if (err.count != cases[i].count) {
            print_message("case %zu: want %u errors\n", i, cases[i].count);
            print_errors(&err);
        }
        assert_int_equal(err.count, cases[i].count);
        pst_err_free(&err);
    }
    tmp_leave(&t);
}

static void
test_cannot_open(void **state)
{
    struct pst_err err = {0};
    assert_null(pst_conf_load("/nonexistent/postern.conf", &err));
    assert_int_equal(err.count, 1);
    assert_string_equal(err.msgs[0], "/nonexistent/postern.conf: cannot "
                                     "open: No such file or directory");
    pst_err_free(&err);
    assert_null(pst_conf_load("/tmp", &err));
    assert_int_equal(err.count, 1);
    assert_string_equal(err.msgs[0], "/tmp: cannot read: is a directory");
    pst_err_free(&err);
}

static void
check_defaults(const struct pst_conf *c, const char *cwd)
{
    char want[4200];
    char host[256] = "";

    gethostname(host, sizeof(host));
    assert_string_equal(c->hostname, host);
    assert_null(c->user);
    assert_null(c->group);
    assert_int_equal(c->nlisteners, 1);
    assert_string_equal(c->listeners[0].address, "127.0.0.1");
    assert_int_equal(c->listeners[0].port, 2525);
    assert_int_equal(c->listeners[0].tls, PST_TLS_NONE);
    assert_false(c->listeners[0].auth);
    assert_false(c->listeners[0].auth_plaintext);
    assert_int_equal(c->limits.message_size, 52428800);
    assert_int_equal(c->limits.recipients, 1000);
    assert_int_equal(c->limits.text_line_max, 100000);
    assert_int_equal(c->limits.hops, 50);
    assert_int_equal(c->limits.sessions, 1000);
    assert_int_equal(c->limits.sessions_per_ip, 50);
    assert_int_equal(c->limits.ipv6_prefix, 64);
    assert_int_equal(c->limits.errors, 20);
    assert_int_equal(c->limits.command_timeout, 300);
    assert_int_equal(c->limits.data_block_timeout, 180);
    assert_int_equal(c->limits.data_timeout, 1800);
    assert_int_equal(c->limits.tls_handshake_timeout, 30);
    assert_int_equal(c->limits.disk_free_min, 104857600);
    assert_int_equal(c->smtp.bare_newline, PST_BARE_NORMALIZE);
    assert_string_equal(c->smtp.banner, "postern");
    assert_int_equal(c->relay.ntrusted, 2);
    assert_int_equal(c->relay.trusted[0].ip.family, AF_INET);
    assert_int_equal(c->relay.trusted[0].prefix, 8);
    assert_int_equal(c->relay.trusted[1].ip.family, AF_INET6);
    assert_int_equal(c->relay.trusted[1].prefix, 128);
    assert_int_equal(c->relay.ndomains, 0);
    assert_int_equal(c->tls.ncerts, 0);
    assert_string_equal(c->tls.min_version, "TLSv1.2");
    assert_null(c->tls.ciphers);
    assert_null(c->tls.ciphersuites);
    assert_null(c->auth.password_file);
    assert_null(c->auth.sender_login_map);
    assert_int_equal(c->auth.workers, 2);
    assert_int_equal(c->auth.max_failures_per_ip, 10);
    assert_int_equal(c->auth.max_failures_per_login, 5);
    assert_int_equal(c->auth.failure_window, 600);
    assert_int_equal(c->log.level, PST_LOG_INFO);
    assert_false(c->log.syslog);
    assert_int_equal(c->log.facility, LOG_MAIL);
    snprintf(want, sizeof(want), "%s/var/spool", cwd);
    assert_string_equal(c->queue.directory, want);
    snprintf(want, sizeof(want), "%s/var/spool/control.sock", cwd);
    assert_string_equal(c->queue.control_socket, want);
    assert_null(c->queue.control_group);
    snprintf(want, sizeof(want), "maildir:%s/var/mail", cwd);
    assert_string_equal(c->delivery.default_route, want);
    assert_int_equal(c->delivery.retry_min, 300);
    assert_int_equal(c->delivery.retry_max, 14400);
    assert_int_equal(c->delivery.lifetime, 432000);
    assert_int_equal(c->delivery.concurrency, 20);
}

static void
test_defaults_empty_file(void **state)
{
    struct tmp t;
    struct pst_err err = {0};
    struct pst_conf *c;
    char cwd[4096];

    tmp_enter(&t);
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    c = load(&t, "# nothing\n", &err);
    print_errors(&err);
    assert_non_null(c);
    assert_int_equal(err.count, 0);
    check_defaults(c, cwd);
    assert_string_equal(c->path, t.conf);
    pst_conf_unref(c);

    c = pst_conf_defaults();
    check_defaults(c, cwd);
    assert_null(c->path);
    /* nothing differs from the defaults */
    {
        char *text = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&text, &n);
        assert_non_null(f);
        pst_conf_print(f, c, true);
        assert_int_equal(fclose(f), 0);
        assert_string_equal(text, "");
        free(text);
    }
    pst_conf_unref(c);
    tmp_leave(&t);
}

static void
test_full_config(void **state)
{
    struct tmp t;
    struct pst_err err = {0};
    struct pst_conf *c;
    char cwd[4096], want[4200];

    tmp_enter(&t);
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    c = load(&t,
             "hostname = \"mx.example.org\";\n"
             "listeners = (\n"
             "  { address = \"::1\"; port = 2525; },\n"
             "  { address = \"127.0.0.1\"; port = 465; tls = \"implicit\"; },\n"
             "  { port = 587; auth = false; auth_plaintext = true; },\n"
             "  { port = 2526; proxy = true; proxy_trusted = [ "
             "\"10.0.0.10/31\", \"::ffff:10.1.0.1\" ]; }\n"
             ");\n"
             "limits = { message_size = 5000000000; disk_free_min = \"1G\"; "
             "recipients = 0x10; };\n"
             "smtp = { bare_newline = \"reject\"; banner = \"\"; };\n"
             "relay = {\n"
             "  trusted_networks = [ \"10.0.0.0/8\", \"2001:DB8::/32\", "
             "\"::ffff:192.168.0.0/112\" ];\n"
             "  domains = ( \"Example.ORG.\", { domain = \"b.example\"; "
             "recipients = \"./rcpts\"; } );\n"
             "};\n"
             "tls = { certificates = ( { cert = \"cert.pem\"; key = "
             "\"key.pem\"; } ); min_version = \"TLSv1.3\"; ciphers = "
             "\"HIGH\"; };\n"
             "auth = { password_file = \"passwd\"; workers = 4; };\n"
             "logging = { level = \"debug\"; syslog = true; facility = "
             "\"local3\"; };\n"
             "queue = { directory = \"spool\"; control_group = \"root\"; };\n"
             "delivery = { default_route = \"maildir:./mail\"; concurrency = "
             "5; };\n",
             &err);
    print_errors(&err);
    assert_non_null(c);
    assert_string_equal(c->hostname, "mx.example.org");
    assert_int_equal(c->nlisteners, 4);
    assert_false(c->listeners[0].proxy);
    assert_int_equal(c->listeners[0].nproxy_trusted, 0);
    assert_true(c->listeners[3].proxy);
    assert_int_equal(c->listeners[3].nproxy_trusted, 2);
    assert_int_equal(c->listeners[3].proxy_trusted[1].ip.family, AF_INET);
    assert_int_equal(c->listeners[3].proxy_trusted[1].prefix, 32);
    assert_int_equal(c->limits.proxy_timeout, 5);
    assert_string_equal(c->listeners[0].address, "::1");
    assert_int_equal(c->listeners[0].line, 3);
    /* certificates and a password file change the listener defaults */
    assert_int_equal(c->listeners[0].tls, PST_TLS_STARTTLS);
    assert_true(c->listeners[0].auth);
    assert_int_equal(c->listeners[1].tls, PST_TLS_IMPLICIT);
    assert_string_equal(c->listeners[2].address, "127.0.0.1");
    assert_false(c->listeners[2].auth);
    assert_true(c->listeners[2].auth_plaintext);
    assert_int_equal(c->limits.message_size, 5000000000ull);
    assert_int_equal(c->limits.disk_free_min, 1ull << 30);
    assert_int_equal(c->limits.recipients, 16);
    assert_int_equal(c->smtp.bare_newline, PST_BARE_REJECT);
    assert_string_equal(c->smtp.banner, "");
    assert_int_equal(c->relay.ntrusted, 3);
    assert_int_equal(c->relay.trusted[1].ip.family, AF_INET6);
    assert_int_equal(c->relay.trusted[1].prefix, 32);
    assert_int_equal(c->relay.trusted[1].ip.addr[0], 0x20);
    assert_int_equal(c->relay.trusted[1].ip.addr[1], 0x01);
    assert_int_equal(c->relay.trusted[1].ip.addr[2], 0x0d);
    assert_int_equal(c->relay.trusted[1].ip.addr[3], 0xb8);
    assert_int_equal(c->relay.trusted[2].ip.family, AF_INET);
    assert_int_equal(c->relay.trusted[2].prefix, 16);
    assert_int_equal(c->relay.ndomains, 2);
    assert_string_equal(c->relay.domains[0].domain, "example.org");
    assert_null(c->relay.domains[0].recipients_file);
    assert_string_equal(c->relay.domains[1].domain, "b.example");
    snprintf(want, sizeof(want), "%s/rcpts", cwd);
    assert_string_equal(c->relay.domains[1].recipients_file, want);
    assert_int_equal(c->tls.ncerts, 1);
    snprintf(want, sizeof(want), "%s/cert.pem", cwd);
    assert_string_equal(c->tls.certs[0].cert_file, want);
    snprintf(want, sizeof(want), "%s/key.pem", cwd);
    assert_string_equal(c->tls.certs[0].key_file, want);
    assert_string_equal(c->tls.min_version, "TLSv1.3");
    assert_string_equal(c->tls.ciphers, "HIGH");
    snprintf(want, sizeof(want), "%s/passwd", cwd);
    assert_string_equal(c->auth.password_file, want);
    assert_int_equal(c->auth.workers, 4);
    assert_int_equal(c->log.level, PST_LOG_DEBUG);
    assert_true(c->log.syslog);
    assert_int_equal(c->log.facility, LOG_LOCAL3);
    snprintf(want, sizeof(want), "%s/spool", cwd);
    assert_string_equal(c->queue.directory, want);
    snprintf(want, sizeof(want), "%s/spool/control.sock", cwd);
    assert_string_equal(c->queue.control_socket, want);
    assert_string_equal(c->queue.control_group, "root");
    snprintf(want, sizeof(want), "maildir:%s/mail", cwd);
    assert_string_equal(c->delivery.default_route, want);
    assert_int_equal(c->delivery.concurrency, 5);

    /* printed whole, it loads back to the same generation */
    {
        char *text1 = NULL, *text2 = NULL;
        size_t n1 = 0, n2 = 0;
        FILE *f = open_memstream(&text1, &n1);
        struct pst_conf *c2;
        assert_non_null(f);
        pst_conf_print(f, c, false);
        assert_int_equal(fclose(f), 0);
        c2 = load(&t, text1, &err);
        print_errors(&err);
        assert_non_null(c2);
        f = open_memstream(&text2, &n2);
        assert_non_null(f);
        pst_conf_print(f, c2, false);
        assert_int_equal(fclose(f), 0);
        assert_string_equal(text1, text2);
        assert_non_null(strstr(text1, "message_size = 5000000000L;\n"));
        assert_non_null(strstr(text1, "trusted_networks = [ \"10.0.0.0/8\", "
                                      "\"2001:db8::/32\", "
                                      "\"192.168.0.0/16\" ];"));
        free(text2);
        /* only what differs from the defaults (postern -n) */
        f = open_memstream(&text2, &n2);
        assert_non_null(f);
        pst_conf_print(f, c2, true);
        assert_int_equal(fclose(f), 0);
        assert_non_null(strstr(text2, "limits = {\n    message_size = "
                                      "5000000000L;\n    recipients = 16;\n"
                                      "    disk_free_min = 1073741824;\n};"));
        assert_null(strstr(text2, "hops"));
        assert_null(strstr(text2, "retry_min"));
        free(text1);
        free(text2);
        pst_conf_unref(c2);
    }

    /* a generation lives until its last reference goes */
    assert_ptr_equal(pst_conf_ref(c), c);
    assert_int_equal(c->refs, 2);
    pst_conf_unref(c);
    assert_int_equal(c->refs, 1);
    pst_conf_unref(c);
    pst_conf_unref(NULL);
    tmp_leave(&t);
}

static void
test_delivery_routes_resolver(void **state)
{
    struct tmp t;
    struct pst_err err = {0};
    struct pst_conf *c;

    (void)state;
    tmp_enter(&t);
    c = load(&t,
             "delivery = {\n"
             "  routes = ( { domain = \"Example.ORG.\"; route = \"smtp:[127.0.0.1]:2525\";\n"
             "               tls = \"verify\"; tls_name = \"mx.example.org\"; rate = 250; },\n"
             "             { domain = \".sub.example.org\"; route = \"lmtp:unix:l.sock\"; } );\n"
             "  tls = \"encrypt\"; eight_bit = \"bounce\"; rcpt_timeout = 10;\n"
             "};\n"
             "resolver = { nameservers = [ \"127.0.0.1:5353\", \"[::1]:53\", \"10.0.0.1\" ];\n"
             "             timeout = 500; tries = 1; };\n",
             &err);
    print_errors(&err);
    assert_non_null(c);
    assert_int_equal(c->delivery.nroutes, 2);
    assert_string_equal(c->delivery.routes[0].domain, "example.org");
    assert_int_equal(c->delivery.routes[0].tls, PST_DTLS_VERIFY);
    assert_int_equal(c->delivery.routes[0].rate, 250);
    assert_int_equal(c->delivery.routes[0].rate_period, 3600);
    assert_int_equal(c->delivery.routes[0].line, 2);
    assert_string_equal(c->delivery.routes[1].domain, ".sub.example.org");
    assert_int_equal(c->delivery.routes[1].tls, PST_DTLS_INHERIT);
    assert_int_equal(c->delivery.tls, PST_DTLS_ENCRYPT);
    assert_int_equal(c->delivery.eight_bit, PST_8BIT_BOUNCE);
    assert_int_equal(c->delivery.rcpt_timeout, 10);
    assert_int_equal(c->delivery.final_timeout, 600);
    assert_int_equal(c->resolver.nnameservers, 3);
    assert_string_equal(c->resolver.nameservers[1].address, "[::1]:53");
    assert_int_equal(c->resolver.timeout, 500);
    pst_conf_unref(c);

    c = load(&t,
             "delivery = { routes = ( { domain = \"a.test\"; route = \"ftp:x\"; },\n"
             "  { domain = \"a.test\"; route = \"mx\"; auth_user = \"u\"; } ); };\n"
             "resolver = { nameservers = [ \"nameserver.test\" ]; };\n",
             &err);
    assert_null(c);
    print_errors(&err);
    assert_true(has_error(&err, "t.conf:1: delivery.routes[0].route: \"ftp:x\": "
                                "unknown kind; the forms are maildir:DIR, "
                                "smtp:HOST:PORT, smtp:[IP]:PORT, "
                                "lmtp:HOST:PORT, lmtp:[IP]:PORT, "
                                "lmtp:unix:PATH and mx"));
    assert_true(has_error(&err, "t.conf:2: delivery.routes[1]: auth_user and "
                                "auth_password go together"));
    assert_true(has_error(&err, "t.conf:2: delivery.routes[1]: duplicate "
                                "domain \"a.test\""));
    assert_true(has_error(&err, "t.conf:3: resolver.nameservers[0].address: "
                                "\"nameserver.test\": not an IP address"));
    pst_err_free(&err);
    tmp_leave(&t);
}

static void
test_routes_accepted(void **state)
{
    static const char *const routes[] = {
        "smtp:mx.example.org:25",
        "smtp:[192.0.2.1]:2525",
        "smtp:[2001:db8::1]:25",
        "lmtp:localhost:24",
        "lmtp:[::1]:24",
        "lmtp:unix:/run/dovecot/lmtp",
        "mx",
        "maildir:/var/mail/x",
    };
    struct tmp t;

    tmp_enter(&t);
    for (size_t i = 0; i < PST_ARRAY_LEN(routes); i++) {
        char text[256];
        struct pst_err err = {0};
        struct pst_conf *c;
        snprintf(text, sizeof(text),
                 "delivery = { default_route = \"%s\"; };\n", routes[i]);
        c = load(&t, text, &err);
        print_errors(&err);
        assert_non_null(c);
        assert_string_equal(c->delivery.default_route, routes[i]);
        pst_conf_unref(c);
    }
    /* a relative socket path is stored absolute */
    {
        struct pst_err err = {0};
        char cwd[4096], want[4200];
        struct pst_conf *c;
        assert_non_null(getcwd(cwd, sizeof(cwd)));
        c = load(&t,
                 "delivery = { default_route = \"lmtp:unix:lmtp.sock\"; "
                 "};\n",
                 &err);
        assert_non_null(c);
        snprintf(want, sizeof(want), "lmtp:unix:%s/lmtp.sock", cwd);
        assert_string_equal(c->delivery.default_route, want);
        pst_conf_unref(c);
    }
    tmp_leave(&t);
}

/* Several settings of one name on one line: each keeps its own value (the
 * loader re-reads integer literals from the source line). */
static void
test_same_name_one_line(void **state)
{
    struct tmp t;
    struct pst_err err = {0};
    struct pst_conf *c;

    tmp_enter(&t);
    c = load(&t,
             "listeners = ( { port = 2601; }, { address = \"::1\"; "
             "port = 2602; }, { address = \"127.0.0.2\"; port = 2601; } );\n"
             "limits = { message_size = 5000000000; disk_free_min = 1048576; "
             "recipients = 5; errors = 5; };\n",
             &err);
    print_errors(&err);
    assert_non_null(c);
    assert_int_equal(c->nlisteners, 3);
    assert_int_equal(c->listeners[0].port, 2601);
    assert_int_equal(c->listeners[1].port, 2602);
    assert_int_equal(c->listeners[2].port, 2601);
    assert_int_equal(c->limits.message_size, 5000000000ull);
    assert_int_equal(c->limits.recipients, 5);
    assert_int_equal(c->limits.errors, 5);
    pst_conf_unref(c);
    tmp_leave(&t);
}

static void
test_include(void **state)
{
    struct tmp t;
    struct pst_err err = {0};
    struct pst_conf *c;
    char want[256];

    tmp_enter(&t);
    write_file("inc.conf", "\nlimits = { hops = 7; bogus = 1;\n"
                           " message_size = 50000000000; };\n");
    write_file("t.conf", "@include \"inc.conf\"\n");
    /* @include is relative to the including file, not to the cwd */
    assert_int_equal(chdir("/"), 0);
    c = pst_conf_load(t.conf, &err);
    assert_int_equal(chdir(t.dir), 0);
    assert_null(c);
    print_errors(&err);
    /* the messages name the included file and its line */
    assert_int_equal(err.count, 2);
    snprintf(want, sizeof(want),
             "%s/inc.conf:2: unknown key 'bogus' in "
             "limits",
             t.dir);
    assert_string_equal(err.msgs[0], want);
    /* the literal is re-read from the included file, not from the cwd */
    snprintf(want, sizeof(want),
             "%s/inc.conf:3: limits.message_size: "
             "50000000000 is out of range 1024..17179869184",
             t.dir);
    assert_string_equal(err.msgs[1], want);
    pst_err_free(&err);
    tmp_leave(&t);
}

static void
test_bundled_config(void **state)
{
    struct pst_err err = {0};
    char path[4096];
    const char *src = getenv("POSTERN_SRC");
    struct pst_conf *c;

    /* CMake compiles with absolute paths: __FILE__ locates the tree */
    if (src != NULL) {
        snprintf(path, sizeof(path), "%s/conf/postern.conf", src);
    } else {
        const char *tail = strstr(__FILE__, "tests/unit/conf_test.c");
        assert_non_null(tail);
        snprintf(path, sizeof(path), "%.*sconf/postern.conf",
                 (int)(tail - __FILE__), __FILE__);
    }
    c = pst_conf_load(path, &err);
    print_errors(&err);
    assert_non_null(c);
    assert_string_equal(c->hostname, "postern.localhost");
    assert_int_equal(c->listeners[0].port, 2525);
    pst_conf_unref(c);
}

/* ---- core/net.h CIDR matching, as relay policy uses it ---- */

struct match_case {
    const char *cidr;
    const char *ip;
    int want;
};

static const struct match_case match_cases[] = {
    {"10.0.0.0/8", "10.1.2.3", 1},
    {"10.0.0.0/8", "11.0.0.1", 0},
    {"192.168.1.0/24", "192.168.1.255", 1},
    {"192.168.1.0/24", "192.168.2.0", 0},
    {"192.168.1.128/25", "192.168.1.127", 0},
    {"0.0.0.0/0", "203.0.113.9", 1},
    {"0.0.0.0/0", "::1", 0},
    {"127.0.0.1", "127.0.0.1", 1},
    {"127.0.0.1", "127.0.0.2", 0},
    {"2001:db8::/32", "2001:db8:ffff::1", 1},
    {"2001:db8::/32", "2001:db9::1", 0},
    {"2001:db8:0:8000::/49", "2001:db8:0:7fff::1", 0},
    {"2001:db8:0:8000::/49", "2001:db8:0:8001::1", 1},
    {"::1/128", "::1", 1},
    {"::1/128", "::2", 0},
    {"::/0", "fe80::1", 1},
    {"::/0", "10.0.0.1", 0},
    /* IPv4-mapped client addresses are IPv4 */
    {"10.0.0.0/8", "::ffff:10.9.8.7", 1},
    {"10.0.0.0/8", "::ffff:11.9.8.7", 0},
    {"::ffff:10.0.0.0/104", "10.200.0.1", 1},
    {"::ffff:10.0.0.0/104", "11.0.0.1", 0},
    {"::ffff:0:0/96", "198.51.100.1", 1},
};

static void
test_cidr_match(void **state)
{
    int failed = 0;
    for (size_t i = 0; i < PST_ARRAY_LEN(match_cases); i++) {
        const struct match_case *mc = &match_cases[i];
        struct pst_cidr c;
        struct pst_ip ip;
        assert_int_equal(pst_cidr_parse(&c, mc->cidr), 0);
        assert_int_equal(pst_ip_parse(&ip, mc->ip), 0);
        int got = pst_cidr_match(&c, &ip);
        if (got != mc->want) {
            print_message("%s in %s: got %d want %d\n", mc->ip, mc->cidr, got,
                          mc->want);
            failed++;
        }
    }
    assert_int_equal(failed, 0);
}

static void
test_cidr_sockaddr_mapped(void **state)
{
    struct sockaddr_in6 s6;
    struct pst_ip ip;
    struct pst_cidr c;
    char buf[PST_IP_STRLEN];

    memset(&s6, 0, sizeof(s6));
    s6.sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, "::ffff:127.0.0.1", &s6.sin6_addr), 1);
    assert_int_equal(pst_ip_from_sockaddr(&ip, (struct sockaddr *)&s6), 0);
    assert_int_equal(ip.family, AF_INET);
    assert_string_equal(pst_ip_str(&ip, buf, sizeof(buf)), "127.0.0.1");
    assert_int_equal(pst_cidr_parse(&c, "127.0.0.0/8"), 0);
    assert_true(pst_cidr_match(&c, &ip));
    /* what pst_cidr_parse refuses */
    assert_int_equal(pst_cidr_parse(&c, "10.0.0.0/33"), -1);
    assert_int_equal(pst_cidr_parse(&c, "::/129"), -1);
    assert_int_equal(pst_cidr_parse(&c, "10.0.0.0/"), -1);
    assert_int_equal(pst_cidr_parse(&c, "10.0.0.0/-1"), -1);
    assert_int_equal(pst_cidr_parse(&c, "/8"), -1);
    assert_int_equal(pst_cidr_parse(&c, "10.0.0/8"), -1);
}

/* A setting written out reads back to the same setting: every type, the
 * escapes a string needs, an int64 and floats that must stay floats. */
static char *
written(const config_setting_t *s)
{
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    assert_non_null(f);
    pst_conf_setting_write(f, s);
    fclose(f);
    return text;
}

static void
test_setting_written_reads_back(void **state)
{
    (void)state;
    static const char doc[] =
        "x = { s = \"q\\\"uote \\\\back \\t tab \\x01 end\"; i = -7;"
        "      big = 5000000000L; f = 2.0; g = 0.5; b = true;"
        "      arr = [1, 2, 3]; strs = [\"a\", \"b\"];"
        "      lst = ( { k = \"v\"; }, 4, \"w\" ); empty = ( ); g2 = { }; };";
    config_t a, b;
    config_init(&a);
    config_init(&b);
    assert_true(config_read_string(&a, doc));
    char *t1 = written(config_lookup(&a, "x"));
    size_t n = strlen(t1) + 8;
    char *again = malloc(n);
    snprintf(again, n, "x = %s;", t1);
    if (!config_read_string(&b, again))
        fail_msg("%s: %s at %d", t1, config_error_text(&b),
                 config_error_line(&b));
    char *t2 = written(config_lookup(&b, "x"));
    assert_string_equal(t1, t2);
    const char *str;
    long long big;
    double f;
    assert_true(config_lookup_string(&b, "x.s", &str));
    assert_string_equal(str, "q\"uote \\back \t tab \x01 end");
    assert_true(config_lookup_int64(&b, "x.big", &big));
    assert_int_equal(big, 5000000000LL);
    assert_int_equal(config_setting_type(config_lookup(&b, "x.f")),
                     CONFIG_TYPE_FLOAT);
    assert_true(config_lookup_float(&b, "x.g", &f));
    assert_true(f == 0.5);
    assert_int_equal(config_setting_type(config_lookup(&b, "x.lst")),
                     CONFIG_TYPE_LIST);
    assert_int_equal(config_setting_type(config_lookup(&b, "x.arr")),
                     CONFIG_TYPE_ARRAY);
    assert_int_equal(config_setting_length(config_lookup(&b, "x.lst")), 3);
    free(t1);
    free(t2);
    free(again);
    config_destroy(&a);
    config_destroy(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_several_errors_all_reported),
        cmocka_unit_test(test_no_follow_on_errors),
        cmocka_unit_test(test_cannot_open),
        cmocka_unit_test(test_defaults_empty_file),
        cmocka_unit_test(test_setting_written_reads_back),
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_routes_accepted),
        cmocka_unit_test(test_delivery_routes_resolver),
        cmocka_unit_test(test_include),
        cmocka_unit_test(test_same_name_one_line),
        cmocka_unit_test(test_bundled_config),
        cmocka_unit_test(test_cidr_match),
        cmocka_unit_test(test_cidr_sockaddr_mapped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
