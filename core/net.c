/*
 * net.c - address normalisation and CIDR matching.
 */
#include "core/net.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

void
pst_ip_from_bytes(struct pst_ip *ip, int family, const void *addr)
{
    const uint8_t *a = addr;
    memset(ip, 0, sizeof(*ip));
    if (family == AF_INET6 && memcmp(a, v4mapped, 12) == 0) {
        ip->family = AF_INET;
        memcpy(ip->addr, a + 12, 4);
    } else {
        ip->family = family;
        memcpy(ip->addr, a, family == AF_INET ? 4 : 16);
    }
}

int
pst_ip_from_sockaddr(struct pst_ip *ip, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        pst_ip_from_bytes(ip, AF_INET,
                          &((const struct sockaddr_in *)sa)->sin_addr);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        pst_ip_from_bytes(ip, AF_INET6,
                          ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr);
        return 0;
    }
    memset(ip, 0, sizeof(*ip));
    return -1;
}

int
pst_ip_parse(struct pst_ip *ip, const char *s)
{
    memset(ip, 0, sizeof(*ip));
    if (inet_pton(AF_INET, s, ip->addr) == 1) {
        ip->family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, s, ip->addr) == 1) {
        ip->family = AF_INET6;
        if (memcmp(ip->addr, v4mapped, 12) == 0) {
            memmove(ip->addr, ip->addr + 12, 4);
            memset(ip->addr + 4, 0, 12);
            ip->family = AF_INET;
        }
        return 0;
    }
    return -1;
}

/* Dotted-quad text of an IPv4 address into t (16 octets); its length.
 * inet_ntop's own goes through sprintf: ten times the work. */
static size_t
ip4_text(const uint8_t *a, char *t)
{
    char *p = t;
    for (int i = 0; i < 4; i++) {
        unsigned v = a[i];
        if (v >= 100)
            *p++ = (char)('0' + v / 100);
        if (v >= 10)
            *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        *p++ = '.';
    }
    p[-1] = '\0';
    return (size_t)(p - 1 - t);
}

const char *
pst_ip_str(const struct pst_ip *ip, char *buf, size_t n)
{
    if (ip->family == AF_INET) {
        char t[16];
        size_t k = ip4_text(ip->addr, t);
        if (k < n)
            memcpy(buf, t, k + 1);
        else
            snprintf(buf, n, "?");  /* as inet_ntop's ENOSPC below */
        return buf;
    }
    if (inet_ntop(ip->family, ip->addr, buf, (socklen_t)n) == NULL)
        snprintf(buf, n, "?");
    return buf;
}

struct pst_ip
pst_ip_mask(const struct pst_ip *ip, unsigned prefix)
{
    struct pst_ip m = *ip;
    unsigned bits = ip->family == AF_INET ? 32 : 128;
    if (prefix > bits)
        prefix = bits;
    for (unsigned i = 0; i < bits / 8; i++) {
        unsigned keep = prefix > i * 8 ? prefix - i * 8 : 0;
        if (keep >= 8)
            continue;
        m.addr[i] &= (uint8_t)(0xff << (8 - keep));
    }
    return m;
}

size_t
pst_ip_key(const struct pst_ip *ip, unsigned prefix6,
           unsigned char key[PST_IP_KEY_MAX])
{
    struct pst_ip m = pst_ip_mask(ip, ip->family == AF_INET6 ? prefix6 : 32);
    size_t n = m.family == AF_INET ? 4 : 16;
    key[0] = (unsigned char)(m.family == AF_INET ? 4 : 6);
    memcpy(key + 1, m.addr, n);
    return n + 1;
}

int
pst_cidr_parse(struct pst_cidr *c, const char *s)
{
    char host[64];
    const char *slash = strchr(s, '/');
    size_t hl = slash ? (size_t)(slash - s) : strlen(s);
    unsigned bits;

    if (hl == 0 || hl >= sizeof(host))
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (pst_ip_parse(&c->ip, host) < 0)
        return -1;
    /* the prefix counts bits of the address as written: an IPv4-mapped
       "::ffff:a.b.c.d" takes 96..128 and is shifted below */
    bits = strchr(host, ':') != NULL ? 128 : 32;
    if (slash) {
        char *end;
        const char *p = slash + 1;
        if (*p < '0' || *p > '9')
            return -1;
        unsigned long v = strtoul(p, &end, 10);
        if (*end != '\0' || v > bits)
            return -1;
        /* "::ffff:10.0.0.0/104" was folded to IPv4 above: shift the prefix */
        if (c->ip.family == AF_INET && strchr(host, ':') != NULL) {
            if (v < 96)
                return -1;
            v -= 96;
        }
        c->prefix = (unsigned)v;
    } else {
        c->prefix = c->ip.family == AF_INET ? 32 : 128;
    }
    c->ip = pst_ip_mask(&c->ip, c->prefix);
    return 0;
}

int
pst_cidr_match(const struct pst_cidr *c, const struct pst_ip *ip)
{
    if (c->ip.family != ip->family)
        return 0;
    struct pst_ip m = pst_ip_mask(ip, c->prefix);
    return pst_ip_equal(&m, &c->ip);
}

bool
pst_cidr_list_match(const struct pst_cidr *c, size_t n, const struct pst_ip *ip)
{
    for (size_t i = 0; i < n; i++)
        if (pst_cidr_match(&c[i], ip))
            return true;
    return false;
}

int
pst_ip_equal(const struct pst_ip *a, const struct pst_ip *b)
{
    return a->family == b->family &&
           memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16) == 0;
}
