/*
 * spf_test.c - the spf module's parts that need no network: the record
 * check (the CVE-2023-42118 defence), the helper frames, DNS answers as
 * helpers get them, RFC 7208 4.6.4 accounting, the cache of answers and
 * results, and the helper pool
 * (processes started, killed, replaced).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>
#include <pwd.h>

#include <ares.h>
#include <cmocka.h>

#include "filters/spf/spf_int.h"

/* ---- record check ---- */

struct rcase {
    const char *rec;
    const char *why;                /* NULL: valid; else a prefix */
};

static char big_macros[1200], big_literal[400], ok_long[300];

static void
test_record_check(void **state)
{
    (void)state;
    /* the CVE shape: macro-expands filling libspf2's 511-byte budget of
     * one term, then a literal */
    strcpy(big_macros, "v=spf1 exists:");
    for (int i = 0; i < 127; i++)
        strcat(big_macros, "%{d}");
    strcat(big_macros, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx -all");
    /* 8 expands and 3-byte escapes: within the length, over the
     * compiled-size bound (404 of 400) */
    strcpy(big_literal, "v=spf1 foo=");
    for (int i = 0; i < 8; i++)
        strcat(big_literal, "%-%-%-%-%-%-%-%-%-%-%-%-y%{d}");
    strcat(big_literal, "%-%-%-%-%-");
    strcpy(ok_long, "v=spf1 include:");
    for (int i = 0; i < 20; i++)
        strcat(ok_long, "abcdefghi.");
    strcat(ok_long, "example.com -all");
    const struct rcase cases[] = {
        {"v=spf1 -all", NULL},
        {"V=SPF1 IP4:192.0.2.0/24 ip6:2001:db8::/32 ~ALL", NULL},
        {"v=spf1 a mx ptr a:x.example.com/24//64 mx//96 -all", NULL},
        {"v=spf1 include:_spf.example.com redirect=_r.example.com", NULL},
        {"v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} -all", NULL},
        {"v=spf1 exp=explain.%{d} -all", NULL},
        {"v=spf1 foo=%{c}%{r}%{t} -all", NULL},
        {"v=spf1   ip4:10.0.0.1   -all  ", NULL},
        {ok_long, NULL},
        {"v=spf1", NULL},
        {"v=spf10 -all", "not an SPF record"},
        {"v=spf1 ip4:300.1.1.1 -all", "bad ip4 address"},
        {"v=spf1 ip4:10.0.0.01", "bad ip4 address"},
        {"v=spf1 ip4:10.0.0.0/33", "bad ip4"},
        {"v=spf1 ip6:zz::1", "bad ip6 address"},
        {"v=spf1 a/0 a/33", "bad CIDR length"},
        {"v=spf1 include:", "empty domain"},
        {"v=spf1 include:localhost -all", "domain does not end"},
        {"v=spf1 exists:%{x} -all", "bad macro letter"},
        {"v=spf1 exists:%{c}.example.com", "bad macro letter"},
        {"v=spf1 exists:%{d0}.example.com", "macro transformer out"},
        {"v=spf1 exists:%{d129}.example.com", "macro transformer out"},
        {"v=spf1 exists:%{d1234}.example.com", "macro transformer too"},
        {"v=spf1 exists:%{d!}.example.com", "bad macro delimiter"},
        {"v=spf1 exists:%{d", "unterminated macro"},
        {"v=spf1 exists:%x.example.com", "'%' not followed"},
        {"v=spf1 redirect=a.example.com redirect=b.example.com",
         "redirect given twice"},
        {"v=spf1 frob:x.example.com", "unknown mechanism"},
        {"v=spf1 -all\tx", "bad character"},
        {"v=spf1 exists:%{d}%{d}%{d}%{d}%{d}%{d}%{d}%{d}%{d}.example.com",
         "too many macros"},
        {big_macros, "term too long"},
        {big_literal, "term too large"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *why = spf_record_check(cases[i].rec,
                                           strlen(cases[i].rec));
        if (cases[i].why == NULL) {
            if (why != NULL)
                fail_msg("case %zu \"%s\": refused: %s", i, cases[i].rec,
                         why);
        } else if (why == NULL ||
                   strncmp(why, cases[i].why, strlen(cases[i].why)) != 0) {
            fail_msg("case %zu \"%s\": want \"%s\", got \"%s\"", i,
                     cases[i].rec, cases[i].why, why ? why : "(valid)");
        }
    }
}

/* ---- frames ---- */

static void
test_frames(void **state)
{
    (void)state;
    struct spf_frame f;
    struct spf_check c = {.family = AF_INET, .addr = {192, 0, 2, 1}}, c2;
    uint8_t type;
    size_t len;
    strcpy(c.sender, "\"a b\"@example.com");
    strcpy(c.helo, "helo.example.com");
    strcpy(c.receiver, "mx.example.net");
    assert_int_equal(spf_enc_check(&f, &c), 0);
    assert_int_equal(spf_hdr_parse(f.b, &type, &len), 0);
    assert_int_equal(type, SPF_F_CHECK);
    assert_int_equal(len, f.n - SPF_FRAME_HDR);
    assert_int_equal(spf_dec_check(f.b + 4, len, &c2), 0);
    assert_string_equal(c2.sender, c.sender);
    assert_memory_equal(c2.addr, c.addr, 4);
    /* every truncation, and a byte too many, is refused */
    for (size_t n = 0; n < len; n++)
        assert_int_equal(spf_dec_check(f.b + 4, n, &c2), -1);
    f.b[f.n] = 0;
    assert_int_equal(spf_dec_check(f.b + 4, len + 1, &c2), -1);

    struct spf_answer a = {.status = SPF_D_OK, .type = SPF_Q_MX, .n = 2},
                      a2;
    strcpy(a.u.name[0], "mx1.example.com");
    strcpy(a.u.name[1], "mx2.example.com");
    assert_int_equal(spf_enc_answer(&f, &a), 0);
    assert_int_equal(spf_dec_answer(f.b + 4, f.n - 4, &a2), 0);
    assert_string_equal(a2.u.name[1], "mx2.example.com");
    /* a name with a blank, a count beyond the bound, records on NXDOMAIN */
    f.b[4 + 1 + 4 + 2 + 2 + 2 + 3] = ' ';
    assert_int_equal(spf_dec_answer(f.b + 4, f.n - 4, &a2), -1);
    uint8_t many[] = {SPF_D_OK, 0, 0, 0, 0, 0, SPF_Q_MX, 0, 17};
    assert_int_equal(spf_dec_answer(many, sizeof(many), &a2), -1);
    uint8_t nx[] = {SPF_D_NXDOMAIN, 0, 0, 0, 0, 0, SPF_Q_A, 0, 1, 1, 2, 3,
                    4};
    assert_int_equal(spf_dec_answer(nx, sizeof(nx), &a2), -1);
    /* headers: a length beyond the bound, an unknown type */
    uint8_t h1[4] = {SPF_F_QUERY, 0, 0x20, 0x01}, h2[4] = {9, 0, 0, 1};
    assert_int_equal(spf_hdr_parse(h1, &type, &len), -1);
    assert_int_equal(spf_hdr_parse(h2, &type, &len), -1);
    /* a query for an unknown type */
    uint8_t q[] = {0, 99, 0, 1, 'a'};
    struct spf_query qq;
    assert_int_equal(spf_dec_query(q, sizeof(q), &qq), -1);
}

/* ---- DNS answers ---- */

/* a response to name/type with the given answer RRs (rdata each) */
static size_t
response(uint8_t *b, int rcode, uint16_t type, const uint8_t *const *rd,
         const size_t *rl, size_t n, uint32_t ttl)
{
    static const uint8_t qname[] = "\x07" "example" "\x03" "com";
    size_t k = 0;
    uint8_t hdr[12] = {0x12, 0x34, 0x81, (uint8_t)(0x80 | rcode), 0, 1, 0,
                       (uint8_t)n, 0, 0, 0, 0};
    memcpy(b, hdr, 12);
    k = 12;
    memcpy(b + k, qname, sizeof(qname));
    k += sizeof(qname);
    b[k++] = 0;
    b[k++] = (uint8_t)type;
    b[k++] = 0;
    b[k++] = 1;
    for (size_t i = 0; i < n; i++) {
        b[k++] = 0xc0;
        b[k++] = 12;                /* the question's name */
        b[k++] = 0;
        b[k++] = (uint8_t)type;
        b[k++] = 0;
        b[k++] = 1;
        b[k++] = (uint8_t)(ttl >> 24);
        b[k++] = (uint8_t)(ttl >> 16);
        b[k++] = (uint8_t)(ttl >> 8);
        b[k++] = (uint8_t)ttl;
        b[k++] = (uint8_t)(rl[i] >> 8);
        b[k++] = (uint8_t)rl[i];
        memcpy(b + k, rd[i], rl[i]);
        k += rl[i];
    }
    return k;
}

static void
decode(const struct spf_dns *d, struct spf_answer *a)
{
    assert_int_equal(spf_dec_answer(d->frame + 4, d->flen - 4, a), 0);
}

static void
test_dns_answers(void **state)
{
    (void)state;
    static uint8_t b[4096];
    static struct spf_dns d;
    static struct spf_answer a;
    /* two strings of one TXT record are joined; other TXT records go */
    const uint8_t t1[] = "\x0bv=spf1 ip4:" "\x0b" "10.0.0.1 -a" "\x02ll";
    const uint8_t t2[] = "\x0fgoogle-site=abc";
    const uint8_t *rd[] = {t1, t2};
    size_t rl[] = {sizeof(t1) - 1, sizeof(t2) - 1};
    size_t n = response(b, 0, SPF_Q_TXT, rd, rl, 2, 300);
    spf_dns_build(&d, SPF_Q_TXT, ARES_SUCCESS, b, (int)n, 3600);
    decode(&d, &a);
    assert_int_equal(a.status, SPF_D_OK);
    assert_int_equal(a.n, 1);
    assert_string_equal(a.u.txt[0], "v=spf1 ip4:10.0.0.1 -all");
    assert_int_equal(d.ttl, 300);
    assert_null(d.bad);
    /* two SPF records: permerror (RFC 7208 4.5); a bad one: permerror */
    const uint8_t t3[] = "\x0bv=spf1 -all";
    const uint8_t *rd2[] = {t1, t3};
    size_t rl2[] = {sizeof(t1) - 1, sizeof(t3) - 1};
    n = response(b, 0, SPF_Q_TXT, rd2, rl2, 2, 300);
    spf_dns_build(&d, SPF_Q_TXT, ARES_SUCCESS, b, (int)n, 3600);
    assert_string_equal(d.bad, "more than one SPF record");
    const uint8_t t4[] = "\x14v=spf1 ip4:1.2.3.999";
    const uint8_t *rd3[] = {t4};
    size_t rl3[] = {sizeof(t4) - 1};
    n = response(b, 0, SPF_Q_TXT, rd3, rl3, 1, 300);
    spf_dns_build(&d, SPF_Q_TXT, ARES_SUCCESS, b, (int)n, 3600);
    assert_string_equal(d.bad, "bad ip4 address");
    decode(&d, &a);
    assert_int_equal(a.n, 0);       /* libspf2 never sees it */
    /* PTR: at most 10 names; a name with odd characters is dropped */
    const uint8_t p1[] = "\x03" "a_b" "\x07" "example" "\x00";
    const uint8_t p2[] = "\x03" "a b" "\x07" "example" "\x00";
    const uint8_t *rd4[12];
    size_t rl4[12];
    for (int i = 0; i < 12; i++) {
        rd4[i] = i == 0 ? p2 : p1;
        rl4[i] = i == 0 ? sizeof(p2) - 1 : sizeof(p1) - 1;
    }
    n = response(b, 0, SPF_Q_PTR, rd4, rl4, 12, 60);
    spf_dns_build(&d, SPF_Q_PTR, ARES_SUCCESS, b, (int)n, 30);
    decode(&d, &a);
    assert_int_equal(a.n, 10);
    assert_string_equal(a.u.name[0], "a_b.example");
    assert_int_equal(d.ttl, 30);    /* capped by max_ttl */
    /* negative answers are void; a malformed response is TEMPFAIL */
    spf_dns_build(&d, SPF_Q_A, ARES_ENOTFOUND, NULL, 0, 3600);
    assert_int_equal(d.status, SPF_D_NXDOMAIN);
    assert_true(d.is_void);
    spf_dns_build(&d, SPF_Q_A, ARES_SUCCESS, b, 20, 3600);
    assert_int_equal(d.status, SPF_D_TEMPFAIL);
}

/* ---- limits ---- */

static struct spf_query
qry(uint16_t t, const char *name)
{
    struct spf_query q = {.type = t};
    snprintf(q.name, sizeof(q.name), "%s", name);
    return q;
}

static void
test_limits(void **state)
{
    (void)state;
    struct spf_lim l;
    struct spf_dns ok, nx;
    spf_dns_simple(&ok, SPF_Q_TXT, SPF_D_OK);
    ok.is_void = false;
    spf_dns_simple(&nx, SPF_Q_A, SPF_D_NXDOMAIN);

    /* the first TXT is free; ten more terms pass, the eleventh stops */
    memset(&l, 0, sizeof(l));
    struct spf_query q = qry(SPF_Q_TXT, "example.com");
    assert_true(spf_lim_pre(&l, &q) && spf_lim_post(&l, &q, &ok));
    for (int i = 0; i < 10; i++) {
        q = qry(SPF_Q_TXT, "i.example.com");
        assert_true(spf_lim_pre(&l, &q) && spf_lim_post(&l, &q, &ok));
    }
    q = qry(SPF_Q_A, "a.example.com");
    assert_false(spf_lim_pre(&l, &q));
    assert_string_equal(l.stop, "more than 10 DNS-querying terms");

    /* two void lookups pass, the third stops */
    memset(&l, 0, sizeof(l));
    q = qry(SPF_Q_TXT, "example.com");
    spf_lim_pre(&l, &q);
    spf_lim_post(&l, &q, &ok);
    for (int i = 0; i < 2; i++) {
        q = qry(SPF_Q_A, "nx.example.com");
        assert_true(spf_lim_pre(&l, &q) && spf_lim_post(&l, &q, &nx));
    }
    assert_true(spf_lim_pre(&l, &q));
    assert_false(spf_lim_post(&l, &q, &nx));
    assert_string_equal(l.stop, "more than 2 void lookups");

    /* an MX answer's hosts are not terms, but at most 10 of them */
    struct spf_answer a = {.status = SPF_D_OK, .type = SPF_Q_MX, .n = 12};
    struct spf_dns mx;
    struct spf_frame f;
    for (int i = 0; i < 12; i++)
        snprintf(a.u.name[i], sizeof(a.u.name[i]), "mx%d.example.com", i);
    assert_int_equal(spf_enc_answer(&f, &a), 0);
    memset(&mx, 0, sizeof(mx));
    memcpy(mx.frame, f.b, f.n);
    mx.flen = f.n;
    memset(&l, 0, sizeof(l));
    q = qry(SPF_Q_TXT, "example.com");
    spf_lim_pre(&l, &q);
    spf_lim_post(&l, &q, &ok);
    q = qry(SPF_Q_MX, "example.com");
    assert_true(spf_lim_pre(&l, &q) && spf_lim_post(&l, &q, &mx));
    for (int i = 0; i < 10; i++) {
        q = qry(SPF_Q_A, a.u.name[i]);
        assert_true(spf_lim_pre(&l, &q));
    }
    assert_int_equal(l.terms, 1);
    q = qry(SPF_Q_A, a.u.name[10]);
    assert_false(spf_lim_pre(&l, &q));
    assert_string_equal(l.stop, "mx: more than 10 address lookups");
}

/* ---- the pool: real helper processes ---- */

static int
alive(int pid)
{
    return kill(pid, 0) == 0;
}

/* Wait (up to 30 s) until the helper pid, killed, is a zombie: its
 * sockets are closed then, as the pool's next look at them must see. The
 * pool reaps its helpers itself, so the test does not wait for them. */
static void
wait_dead(int pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    for (int i = 0; i < 3000; i++) {
        FILE *f = fopen(path, "r");
        if (f == NULL)
            return;                 /* reaped already */
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *rp = strrchr(buf, ')');
        if (rp && rp[1] == ' ' && rp[2] == 'Z')
            return;
        usleep(10000);
    }
    fail_msg("helper %d still alive 30 s after SIGKILL", pid);
}

static void
test_pool(void **state)
{
    (void)state;
    struct spf_pool *p = NULL;
    char why[160];
    int pids[4], pids2[4];
    struct spf_out out;
    uint8_t ip[4] = {192, 0, 2, 1};
    struct spf_popts o = {
        .exe_fd = open(POSTERN_SPF_HELPER, O_PATH | O_CLOEXEC),
        .helpers = 2,
        .timeout_ms = 5000,
        /* a closed port: every question is a quick TEMPFAIL */
        .rc = {.servers = "127.0.0.1:9", .timeout_ms = 200, .tries = 1},
        .cache_entries = 100,
        .cache_bytes = 1 << 20,
    };
    assert_true(o.exe_fd >= 0);
    if (geteuid() == 0) {
        /* helpers refuse root: be the account tools/setup creates */
        struct passwd *pw = getpwnam("postern");
        assert_non_null(pw);
        assert_int_equal(setgid(pw->pw_gid), 0);
        assert_int_equal(setuid(pw->pw_uid), 0);
    }
    if (spf_pool_new(&o, &p, why, sizeof(why)) != 0)
        fail_msg("pool: %s", why);
    assert_int_equal(spf_pool_pids(p, pids, 4), 2);
    /* no DNS: the helper answers temperror; a bad domain is none */
    spf_run(p, AF_INET, ip, "a@example.com", "h.example", "mx.test", &out);
    assert_int_equal(out.result, SPF_R_TEMPERROR);
    assert_false(out.helper_failed);
    spf_run(p, AF_INET, ip, "a@localhost", "h.example", "mx.test", &out);
    assert_int_equal(out.result, SPF_R_NONE);
    /* kill both: each is replaced before it is used again */
    kill(pids[0], SIGKILL);
    kill(pids[1], SIGKILL);
    wait_dead(pids[0]);
    wait_dead(pids[1]);
    spf_run(p, AF_INET, ip, "a@example.com", "h.example", "mx.test", &out);
    assert_int_equal(out.result, SPF_R_TEMPERROR);
    assert_false(out.helper_failed);
    assert_int_equal(spf_pool_pids(p, pids2, 4), 2);
    assert_true(pids2[0] != pids[0] && pids2[0] != pids[1]);
    struct spf_pstats st;
    spf_pool_stats(p, &st);
    assert_int_equal(st.helper_restarts, 2);
    assert_int_equal(st.helpers_alive, 2);
    /* the last reference stops them (and reaps them before it returns) */
    spf_pool_unref(p);
    assert_false(alive(pids2[0]));
    assert_false(alive(pids2[1]));
}

/* ---- the cache (answers and results) ---- */

static long
get(struct spf_cache *c, const char *key, int *val)
{
    return spf_cache_get_blob(c, 1, key, val, sizeof(*val));
}

/* bounded by entries (least recently used out first), by bytes, keyed by
 * kind as well, case-blind; TTL 0 is not kept, and an entry goes at the
 * end of its TTL; a DNS answer says how long it has left */
static void
test_cache(void **state)
{
    (void)state;
    struct spf_cache *c = spf_cache_new(3, 1 << 20);
    int v;
    char k[16];
    uint64_t hits, misses;
    size_t n;

    for (int i = 0; i < 3; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        spf_cache_put_blob(c, 1, k, &i, sizeof(i), 60);
    }
    assert_int_equal(get(c, "K0", &v), (long)sizeof(v));   /* k0 now newest */
    assert_int_equal(v, 0);
    v = 3;
    spf_cache_put_blob(c, 1, "k3", &v, sizeof(v), 60);      /* k1 out */
    assert_int_equal(get(c, "k1", &v), -1);
    assert_int_equal(get(c, "k0", &v), (long)sizeof(v));
    assert_int_equal(get(c, "k3", &v), (long)sizeof(v));
    assert_int_equal(v, 3);
    assert_int_equal(spf_cache_get_blob(c, 2, "k3", &v, sizeof(v)), -1);
    v = 9;
    spf_cache_put_blob(c, 1, "k3", &v, sizeof(v), 60);      /* replaced */
    assert_int_equal(get(c, "k3", &v), (long)sizeof(v));
    assert_int_equal(v, 9);
    spf_cache_put_blob(c, 1, "zero", &v, sizeof(v), 0);
    assert_int_equal(get(c, "zero", &v), -1);
    spf_cache_counts(c, &hits, &misses, &n);
    assert_int_equal(n, 3);
    /* a value larger than the caller's room is not given */
    char big[64] = {0};
    spf_cache_put_blob(c, 1, "big", big, sizeof(big), 60);
    assert_int_equal(get(c, "big", &v), -1);
    spf_cache_free(c);

    /* bytes: each entry costs its key, its value and its bookkeeping */
    c = spf_cache_new(1000, 2048);
    char val[400] = {0};
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof(k), "b%d", i);
        spf_cache_put_blob(c, 1, k, val, sizeof(val), 60);
    }
    spf_cache_counts(c, &hits, &misses, &n);
    assert_true(n >= 1 && n < 5);
    assert_int_equal(spf_cache_get_blob(c, 1, "b19", val, sizeof(val)),
                     (long)sizeof(val));
    assert_int_equal(spf_cache_get_blob(c, 1, "b0", val, sizeof(val)), -1);
    spf_cache_free(c);

    /* expiry, and the life a cached DNS answer has left */
    c = spf_cache_new(10, 1 << 20);
    struct spf_dns d, got;
    spf_dns_simple(&d, SPF_Q_TXT, SPF_D_NXDOMAIN);
    d.ttl = 1;
    spf_cache_put(c, SPF_Q_TXT, "gone.test", &d);
    d.ttl = 30;
    spf_cache_put(c, SPF_Q_TXT, "kept.test", &d);
    assert_int_equal(spf_cache_get(c, SPF_Q_TXT, "kept.test", &got), 1);
    assert_true(got.ttl >= 29 && got.ttl <= 30);
    assert_int_equal(spf_cache_get(c, SPF_Q_A, "kept.test", &got), 0);
    usleep(1100 * 1000);
    assert_int_equal(spf_cache_get(c, SPF_Q_TXT, "gone.test", &got), 0);
    assert_int_equal(spf_cache_get(c, SPF_Q_TXT, "kept.test", &got), 1);
    assert_true(got.ttl >= 28 && got.ttl <= 29);
    spf_cache_free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_check),
        cmocka_unit_test(test_frames),
        cmocka_unit_test(test_dns_answers),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_pool),
    };
    ares_library_init(ARES_LIB_INIT_ALL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
