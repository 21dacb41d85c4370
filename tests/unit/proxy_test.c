/*
 * proxy_test.c - the PROXY protocol header parser (gateway/proxy.c):
 * versions 1 and 2, valid and invalid headers, each fed whole and one
 * octet at a time; the octets after a header are never taken.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/proxy.h"

#define TAIL "EHLO x\r\n"           /* the client's, after the header */

struct tcase {
    const char *name;
    const uint8_t *in;
    size_t len;                     /* header + TAIL */
    enum pst_proxy_status want;
    bool local;
    const char *src;                /* the client, when not local */
    unsigned sport;
};

/* run - feed c->in whole (step 0) or in steps of `step` octets; check the
 * outcome, and on DONE that exactly the header was taken. */
static void
run(const struct tcase *c, size_t step)
{
    struct pst_proxy p;
    size_t off = 0, used = 0;
    enum pst_proxy_status st = PST_PROXY_MORE;
    pst_proxy_init(&p);
    while (off < c->len && st == PST_PROXY_MORE) {
        size_t n = step ? (c->len - off < step ? c->len - off : step)
                        : c->len - off;
        st = pst_proxy_feed(&p, c->in + off, n, &used);
        if (used > n)
            fail_msg("%s: used %zu of %zu", c->name, used, n);
        off += used;
    }
    if (st != c->want)
        fail_msg("%s (step %zu): status %d, want %d (%s)", c->name, step, st,
                 c->want, p.why ? p.why : "-");
    if (st != PST_PROXY_DONE)
        return;
    if (c->len - off != strlen(TAIL) ||
        memcmp(c->in + off, TAIL, strlen(TAIL)) != 0)
        fail_msg("%s (step %zu): took %zu octets, header is %zu", c->name,
                 step, off, c->len - strlen(TAIL));
    if (p.local != c->local)
        fail_msg("%s: local %d, want %d", c->name, p.local, c->local);
    if (!c->local) {
        char s[64];
        pst_ip_str(&p.src, s, sizeof(s));
        if (strcmp(s, c->src) != 0 || p.sport != c->sport)
            fail_msg("%s: client %s:%u, want %s:%u", c->name, s, p.sport,
                     c->src, c->sport);
    }
}

static void
check_all(const struct tcase *cs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        run(&cs[i], 0);
        run(&cs[i], 1);
        run(&cs[i], 7);
    }
}

#define T1(name, line, want, local, src, sport)                                \
    {name, (const uint8_t *)line TAIL, sizeof(line TAIL) - 1, want, local,  \
     src, sport}

static void
test_v1(void **state)
{
    static const struct tcase cs[] = {
        T1("tcp4", "PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n",
           PST_PROXY_DONE, false, "192.0.2.7", 56324),
        T1("tcp6", "PROXY TCP6 2001:db8::7 2001:db8::1 65535 25\r\n",
           PST_PROXY_DONE, false, "2001:db8::7", 65535),
        T1("tcp6 mapped", "PROXY TCP6 ::ffff:192.0.2.9 ::1 0 25\r\n",
           PST_PROXY_DONE, false, "192.0.2.9", 0),
        T1("unknown", "PROXY UNKNOWN\r\n", PST_PROXY_DONE, true, NULL, 0),
        T1("unknown rest", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
           PST_PROXY_DONE, true, NULL, 0),
        T1("no proxy", "EHLO client\r\n", PST_PROXY_ERROR, false, NULL, 0),
        T1("lower case", "proxy TCP4 192.0.2.7 198.51.100.1 1 25\r\n",
           PST_PROXY_ERROR, false, NULL, 0),
        T1("double space", "PROXY TCP4  192.0.2.7 198.51.100.1 1 25\r\n",
           PST_PROXY_ERROR, false, NULL, 0),
        T1("trailing space", "PROXY TCP4 192.0.2.7 198.51.100.1 1 25 \r\n",
           PST_PROXY_ERROR, false, NULL, 0),
        T1("bare LF", "PROXY TCP4 192.0.2.7 198.51.100.1 1 25\n",
           PST_PROXY_ERROR, false, NULL, 0),
        T1("family mismatch", "PROXY TCP4 2001:db8::7 198.51.100.1 1 25\r\n",
           PST_PROXY_ERROR, false, NULL, 0),
        T1("bad address", "PROXY TCP4 192.0.2.256 198.51.100.1 1 25\r\n",
           PST_PROXY_ERROR, false, NULL, 0),
        T1("port too big", "PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",
           PST_PROXY_ERROR, false, NULL, 0),
        T1("port leading zero", "PROXY TCP4 192.0.2.7 198.51.100.1 025 25\r\n",
           PST_PROXY_ERROR, false, NULL, 0),
        T1("missing port", "PROXY TCP4 192.0.2.7 198.51.100.1 25\r\n",
           PST_PROXY_ERROR, false, NULL, 0),
        T1("extra field", "PROXY TCP4 192.0.2.7 198.51.100.1 1 2 3\r\n",
           PST_PROXY_ERROR, false, NULL, 0),
        T1("udp", "PROXY UDP4 192.0.2.7 198.51.100.1 1 25\r\n",
           PST_PROXY_ERROR, false, NULL, 0),
        T1("CR inside", "PROXY TCP4 192.0.2.7\r 198.51.100.1 1 25\r\n",
           PST_PROXY_ERROR, false, NULL, 0),
        T1("too long",
           "PROXY UNKNOWN 0123456789012345678901234567890123456789"
           "01234567890123456789012345678901234567890123456789012345\r\n",
           PST_PROXY_ERROR, false, NULL, 0),
    };
    check_all(cs, sizeof(cs) / sizeof(cs[0]));
}

/* v2 - a version 2 header: command, family, address block, extra octets
 * (TLVs) appended to the block; len_adj changes the announced length. */
static size_t
v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *blk,
   size_t blen, int len_adj)
{
    static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                    0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
    size_t alen = (size_t)((int)blen + len_adj);
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(alen >> 8);
    out[15] = (uint8_t)alen;
    memcpy(out + 16, blk, blen);
    memcpy(out + 16 + blen, TAIL, strlen(TAIL));
    return 16 + blen + strlen(TAIL);
}

static void
test_v2(void **state)
{
    /* 192.0.2.7:56324 -> 198.51.100.1:25, then TLVs */
    static const uint8_t in4[] = {192, 0, 2, 7, 198, 51, 100, 1,
                                  0xdc, 0x04, 0, 25};
    static const uint8_t in4_tlv[] = {192, 0, 2, 7, 198, 51, 100, 1,
                                      0xdc, 0x04, 0, 25,
                                      0x04, 0, 3, 0, 0, 0,          /* NOOP */
                                      0x02, 0, 4, 'm', 'x', '.', 'x'};
    static const uint8_t in4_tlv_over[] = {192, 0, 2, 7, 198, 51, 100, 1,
                                           0xdc, 0x04, 0, 25,
                                           0x04, 0, 9, 0, 0};
    static const uint8_t in4_short_tlv[] = {192, 0, 2, 7, 198, 51, 100, 1,
                                            0xdc, 0x04, 0, 25, 0x04, 0};
    static const uint8_t in6[] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
                                  0, 0, 0, 0, 0, 0, 0, 7,
                                  0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
                                  0, 0, 0, 0, 0, 0, 0, 1, 0x01, 0xbb, 0, 25};
    /* ::ffff:192.0.2.9 -> ::1: the client is the IPv4 address, as at
     * accept */
    static const uint8_t in6_mapped[] = {0, 0, 0, 0, 0, 0, 0, 0,
                                         0, 0, 0xff, 0xff, 192, 0, 2, 9,
                                         0, 0, 0, 0, 0, 0, 0, 0,
                                         0, 0, 0, 0, 0, 0, 0, 1, 0, 7, 0, 25};
    static const uint8_t junk[5] = {1, 2, 3, 4, 5};
    static uint8_t b[16][400];
    struct tcase cs[] = {
        {"inet", b[0], v2(b[0], 0x21, 0x11, in4, sizeof(in4), 0),
         PST_PROXY_DONE, false, "192.0.2.7", 56324},
        {"inet tlvs", b[1], v2(b[1], 0x21, 0x11, in4_tlv, sizeof(in4_tlv), 0),
         PST_PROXY_DONE, false, "192.0.2.7", 56324},
        {"inet6", b[2], v2(b[2], 0x21, 0x21, in6, sizeof(in6), 0),
         PST_PROXY_DONE, false, "2001:db8::7", 443},
        {"local, empty", b[3], v2(b[3], 0x20, 0x00, junk, 0, 0),
         PST_PROXY_DONE, true, NULL, 0},
        {"local, block ignored", b[4], v2(b[4], 0x20, 0x11, junk, 5, 0),
         PST_PROXY_DONE, true, NULL, 0},
        {"version 1 nibble", b[5], v2(b[5], 0x11, 0x11, in4, sizeof(in4), 0),
         PST_PROXY_ERROR, false, NULL, 0},
        {"command 2", b[6], v2(b[6], 0x22, 0x11, in4, sizeof(in4), 0),
         PST_PROXY_ERROR, false, NULL, 0},
        {"unspec", b[7], v2(b[7], 0x21, 0x00, junk, 0, 0), PST_PROXY_ERROR,
         false, NULL, 0},
        {"unix", b[8], v2(b[8], 0x21, 0x31, junk, 5, 0), PST_PROXY_ERROR,
         false, NULL, 0},
        {"udp", b[9], v2(b[9], 0x21, 0x12, in4, sizeof(in4), 0),
         PST_PROXY_ERROR, false, NULL, 0},
        {"block short of addresses", b[10],
         v2(b[10], 0x21, 0x11, in4, sizeof(in4), -1), PST_PROXY_ERROR, false,
         NULL, 0},
        {"tlv past the block", b[11],
         v2(b[11], 0x21, 0x11, in4_tlv_over, sizeof(in4_tlv_over), 0),
         PST_PROXY_ERROR, false, NULL, 0},
        {"octets short of a tlv", b[12],
         v2(b[12], 0x21, 0x11, in4_short_tlv, sizeof(in4_short_tlv), 0),
         PST_PROXY_ERROR, false, NULL, 0},
        {"inet6 mapped", b[14],
         v2(b[14], 0x21, 0x21, in6_mapped, sizeof(in6_mapped), 0),
         PST_PROXY_DONE, false, "192.0.2.9", 7},
    };
    /* a bad signature octet */
    size_t n = v2(b[13], 0x21, 0x11, in4, sizeof(in4), 0);
    b[13][7] = 'q';
    struct tcase bad_sig = {"bad signature", b[13], n, PST_PROXY_ERROR,
                            false, NULL, 0};
    check_all(cs, sizeof(cs) / sizeof(cs[0]));
    check_all(&bad_sig, 1);
}

/* A header split anywhere still parses; a whole 64 KiB block of TLVs
 * passes without the parser holding it. */
static void
test_v2_big_block(void **state)
{
    static uint8_t in[16 + 65535 + 16];
    static const uint8_t a4[] = {192, 0, 2, 7, 198, 51, 100, 1, 0, 1, 0, 25};
    uint8_t blk[65535];
    memcpy(blk, a4, sizeof(a4));
    size_t off = sizeof(a4);
    while (65535 - off >= 3) {      /* NOOP TLVs filling the block */
        size_t vl = 65535 - off - 3 < 1000 ? 65535 - off - 3 : 1000;
        blk[off] = 0x04;
        blk[off + 1] = (uint8_t)(vl >> 8);
        blk[off + 2] = (uint8_t)vl;
        memset(blk + off + 3, 0, vl);
        off += 3 + vl;
    }
    size_t n = v2(in, 0x21, 0x11, blk, off, 0);
    struct tcase c = {"64 KiB block", in, n, PST_PROXY_DONE, false,
                      "192.0.2.7", 1};
    run(&c, 0);
    run(&c, 1);
    run(&c, 4096);
    assert_true(sizeof(struct pst_proxy) < 512);
}

/* After DONE or ERROR nothing more is taken. */
static void
test_terminal(void **state)
{
    struct pst_proxy p;
    size_t used;
    const char *h = "PROXY UNKNOWN\r\nMAIL";
    pst_proxy_init(&p);
    assert_int_equal(pst_proxy_feed(&p, h, strlen(h), &used), PST_PROXY_DONE);
    assert_int_equal(used, 15);
    assert_int_equal(pst_proxy_feed(&p, "x", 1, &used), PST_PROXY_DONE);
    assert_int_equal(used, 0);
    pst_proxy_init(&p);
    assert_int_equal(pst_proxy_feed(&p, "X", 1, &used), PST_PROXY_ERROR);
    assert_int_equal(pst_proxy_feed(&p, "PROXY", 5, &used), PST_PROXY_ERROR);
    assert_int_equal(used, 0);
    /* a valid prefix waits for more */
    pst_proxy_init(&p);
    assert_int_equal(pst_proxy_feed(&p, "PROXY TCP", 9, &used),
                     PST_PROXY_MORE);
    assert_int_equal(used, 9);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1),
        cmocka_unit_test(test_v2),
        cmocka_unit_test(test_v2_big_block),
        cmocka_unit_test(test_terminal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
