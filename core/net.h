/*
 * net.h - IP addresses and CIDR blocks as the policy code sees them.
 *
 * Client addresses are normalised where they are taken (at accept, and
 * from a PROXY protocol header): an IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) becomes plain IPv4, so one CIDR list covers both kinds of
 * listener.
 */
#ifndef PST_CORE_NET_H
#define PST_CORE_NET_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct pst_ip {
    int family;                     /* AF_INET or AF_INET6 */
    uint8_t addr[16];               /* 4 or 16 bytes used */
};

struct pst_cidr {
    struct pst_ip ip;               /* host bits cleared */
    unsigned prefix;                /* 0..32 or 0..128 */
};

/* Longest text form: IPv6 with zone-free notation, plus NUL. */
#define PST_IP_STRLEN 46

/* pst_ip_from_bytes - family's address octets (4 or 16) as a client
 * address: an IPv4-mapped IPv6 one becomes IPv4. Every address postern
 * takes for a client (accept, a PROXY header) goes through it. */
void pst_ip_from_bytes(struct pst_ip *ip, int family, const void *addr);
int pst_ip_from_sockaddr(struct pst_ip *ip, const struct sockaddr *sa);
int pst_ip_parse(struct pst_ip *ip, const char *s);
const char *pst_ip_str(const struct pst_ip *ip, char *buf, size_t n);

/* pst_cidr_parse - "a.b.c.d/n", "x::y/n" or a bare address; 0 or -1. */
int pst_cidr_parse(struct pst_cidr *c, const char *s);
int pst_cidr_match(const struct pst_cidr *c, const struct pst_ip *ip);
/* pst_cidr_list_match - ip is in one of the n blocks of c. */
bool pst_cidr_list_match(const struct pst_cidr *c, size_t n,
                         const struct pst_ip *ip);
/* pst_ip_mask - ip with all but the first prefix bits cleared. */
struct pst_ip pst_ip_mask(const struct pst_ip *ip, unsigned prefix);
int pst_ip_equal(const struct pst_ip *a, const struct pst_ip *b);

/*
 * pst_ip_key - the bytes that stand for ip's client in a per-client map
 * (session counts, AUTH failures): a family byte and the address, IPv6
 * masked to its first prefix6 bits, since one host holds a whole prefix.
 * Returns the key's length (at most PST_IP_KEY_MAX).
 */
#define PST_IP_KEY_MAX 17
size_t pst_ip_key(const struct pst_ip *ip, unsigned prefix6,
                  unsigned char key[PST_IP_KEY_MAX]);

#endif
