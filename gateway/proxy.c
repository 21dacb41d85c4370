/*
 * proxy.c - the PROXY protocol header parser (proxy.h): versions 1 (a text
 * line) and 2 (binary), strict, bounded, fed in fragments.
 *
 * Version 1: "PROXY TCP4|TCP6 src dst sport dport" CRLF, single spaces,
 * addresses of the named family, ports 0-65535 without leading zeros, at
 * most 107 octets; "PROXY UNKNOWN" (and anything up to the CRLF) is the
 * proxy's own connection. Version 2: the 12-octet signature, version 2,
 * command LOCAL or PROXY, then a block of the announced length: for PROXY
 * over TCP the addresses and ports of the family, then TLVs, each of which
 * must fit in what is left of the block (and is otherwise skipped); for
 * LOCAL the block is discarded whole, as the specification says.
 *
 * Memory: the parser holds at most PST_PROXY_HOLD octets; a version 2
 * block of up to 65535 octets passes through without being stored. Time
 * is the caller's to bound (the session's proxy_timeout).
 */
#include "gateway/proxy.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

enum stage { S_START, S_V1, S_V2_FIXED, S_V2_ADDR, S_V2_TLV, S_V2_SKIP,
             S_DONE, S_ERROR };

static const uint8_t sig2[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char v1_prefix[] = "PROXY ";

void
pst_proxy_init(struct pst_proxy *p)
{
    memset(p, 0, sizeof(*p));
    p->stage = S_START;
}

static enum pst_proxy_status
fail(struct pst_proxy *p, const char *why)
{
    p->stage = S_ERROR;
    p->why = why;
    return PST_PROXY_ERROR;
}

/* port - a version 1 port: 1-5 digits, no leading zero, at most 65535. */
static bool
port(const char *t, size_t n, unsigned *out)
{
    unsigned v = 0;
    if (n == 0 || n > 5 || (n > 1 && t[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (t[i] < '0' || t[i] > '9')
            return false;
        v = v * 10 + (unsigned)(t[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = v;
    return true;
}

/* addr - a version 1 address token of family. */
static bool
addr(const char *t, size_t n, int family, struct pst_ip *ip)
{
    char z[64];
    uint8_t a[16];
    if (n == 0 || n >= sizeof(z))
        return false;
    memcpy(z, t, n);
    z[n] = '\0';
    if (inet_pton(family, z, a) != 1)
        return false;
    pst_ip_from_bytes(ip, family, a);
    return true;
}

/* The version 1 line in p->buf, without its CRLF (len octets). */
static enum pst_proxy_status
v1_line(struct pst_proxy *p, size_t len)
{
    const char *l = (const char *)p->buf + 6, *tok[5];
    size_t n = len - 6, tlen[5], nt = 0, i = 0;

    p->version = 1;
    if (n >= 7 && memcmp(l, "UNKNOWN", 7) == 0 && (n == 7 || l[7] == ' ')) {
        p->local = true;            /* the rest of the line is ignored */
        p->stage = S_DONE;
        return PST_PROXY_DONE;
    }
    if (n < 5 || (memcmp(l, "TCP4 ", 5) != 0 && memcmp(l, "TCP6 ", 5) != 0))
        return fail(p, "v1: protocol not TCP4, TCP6 or UNKNOWN");
    int family = l[3] == '4' ? AF_INET : AF_INET6;
    for (i = 5; i <= n && nt < 5;) {
        size_t e = i;
        while (e < n && l[e] != ' ')
            e++;
        tok[nt] = l + i;
        tlen[nt++] = e - i;
        i = e + 1;
    }
    if (nt != 4 || i != n + 1)
        return fail(p, "v1: not four fields after the protocol");
    if (!addr(tok[0], tlen[0], family, &p->src) ||
        !addr(tok[1], tlen[1], family, &p->dst))
        return fail(p, "v1: bad address");
    if (!port(tok[2], tlen[2], &p->sport) || !port(tok[3], tlen[3], &p->dport))
        return fail(p, "v1: bad port");
    p->stage = S_DONE;
    return PST_PROXY_DONE;
}

/* The version 2 fixed part is in p->buf: version, command, family. */
static enum pst_proxy_status
v2_fixed(struct pst_proxy *p)
{
    uint8_t vc = p->buf[12], fam = p->buf[13];
    uint32_t len = (uint32_t)p->buf[14] << 8 | p->buf[15];

    p->version = 2;
    if (vc >> 4 != 2)
        return fail(p, "v2: version not 2");
    if ((vc & 0xf) == 0) {          /* LOCAL: the block is discarded */
        p->local = true;
        p->left = len;
        p->stage = S_V2_SKIP;
        return PST_PROXY_MORE;
    }
    if ((vc & 0xf) != 1)
        return fail(p, "v2: command neither LOCAL nor PROXY");
    size_t alen;
    if (fam == 0x11)                /* TCP over IPv4 */
        alen = 12;
    else if (fam == 0x21)           /* TCP over IPv6 */
        alen = 36;
    else
        return fail(p, "v2: PROXY for other than TCP over IPv4 or IPv6");
    if (len < alen)
        return fail(p, "v2: block shorter than its addresses");
    p->left = len - (uint32_t)alen;
    p->need = PST_PROXY_V2_FIXED + alen;
    p->stage = S_V2_ADDR;
    return PST_PROXY_MORE;
}

/* The version 2 address block is in p->buf after the fixed part. */
static void
v2_addr(struct pst_proxy *p)
{
    const uint8_t *a = p->buf + PST_PROXY_V2_FIXED;
    bool v4 = p->buf[13] == 0x11;
    size_t al = v4 ? 4 : 16;
    /* normalised as at accept: an IPv4-mapped client is IPv4 */
    pst_ip_from_bytes(&p->src, v4 ? AF_INET : AF_INET6, a);
    pst_ip_from_bytes(&p->dst, v4 ? AF_INET : AF_INET6, a + al);
    p->sport = (unsigned)a[2 * al] << 8 | a[2 * al + 1];
    p->dport = (unsigned)a[2 * al + 2] << 8 | a[2 * al + 3];
    p->stage = S_V2_TLV;
}

enum pst_proxy_status
pst_proxy_feed(struct pst_proxy *p, const void *data, size_t n, size_t *used)
{
    const uint8_t *d = data;
    size_t i = 0;
    enum pst_proxy_status st = PST_PROXY_MORE;

    while (st == PST_PROXY_MORE) {
        if (p->stage == S_DONE || p->stage == S_ERROR) {
            st = p->stage == S_DONE ? PST_PROXY_DONE : PST_PROXY_ERROR;
            break;
        }
        if (p->stage == S_V2_SKIP || p->stage == S_V2_TLV) {
            if (p->left == 0 && p->tlv_have == 0 && p->tlv_skip == 0) {
                p->stage = S_DONE;
                continue;
            }
            if (i == n)
                break;
            if (p->stage == S_V2_SKIP || p->tlv_skip > 0) {
                uint32_t *k = p->stage == S_V2_SKIP ? &p->left : &p->tlv_skip;
                size_t take = n - i < *k ? n - i : *k;
                *k -= (uint32_t)take;
                if (k == &p->tlv_skip)
                    p->left -= (uint32_t)take;
                i += take;
                continue;
            }
            /* a TLV's type and length: all three must fit in the block */
            if (p->tlv_have == 0 && p->left < 3) {
                st = fail(p, "v2: trailing octets shorter than a TLV");
                break;
            }
            p->tlv[p->tlv_have++] = d[i++];
            p->left--;
            if (p->tlv_have == 3) {
                uint32_t vl = (uint32_t)p->tlv[1] << 8 | p->tlv[2];
                if (vl > p->left) {
                    st = fail(p, "v2: TLV longer than the block");
                    break;
                }
                p->tlv_skip = vl;
                p->tlv_have = 0;
            }
            continue;
        }
        if (i == n)
            break;
        uint8_t c = d[i];
        switch (p->stage) {
        case S_START:
            if (c == 'P') {
                p->stage = S_V1;
            } else if (c == sig2[0]) {
                p->stage = S_V2_FIXED;
                p->need = PST_PROXY_V2_FIXED;
            } else {
                st = fail(p, "no PROXY header");
                continue;
            }
            break;
        case S_V1:
            if (p->have < 6 && c != (uint8_t)v1_prefix[p->have]) {
                st = fail(p, "v1: no \"PROXY \"");
                continue;
            }
            if (c == '\n') {
                if (p->have == 0 || p->buf[p->have - 1] != '\r') {
                    st = fail(p, "v1: line not ended by CRLF");
                    continue;
                }
                i++;
                st = v1_line(p, p->have - 1);
                continue;
            }
            if (p->have + 1 >= PST_PROXY_V1_MAX) {
                st = fail(p, "v1: line longer than 107 octets");
                continue;
            }
            if (c < 0x20 && c != '\r') {
                st = fail(p, "v1: control character in the line");
                continue;
            }
            if (p->have > 0 && p->buf[p->have - 1] == '\r') {
                st = fail(p, "v1: CR inside the line");
                continue;
            }
            p->buf[p->have++] = c;
            i++;
            continue;
        case S_V2_FIXED:
            if (p->have < 12 && c != sig2[p->have]) {
                st = fail(p, "v2: bad signature");
                continue;
            }
            p->buf[p->have++] = c;
            i++;
            if (p->have == p->need)
                st = v2_fixed(p);
            continue;
        case S_V2_ADDR:
            p->buf[p->have++] = c;
            i++;
            if (p->have == p->need)
                v2_addr(p);
            continue;
        default:
            st = fail(p, "internal: unknown stage");
            continue;
        }
    }
    *used = i;
    return st;
}
