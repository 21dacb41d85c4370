/*
 * domain.h - domain names in the one form policy compares: lowercase
 * A-labels (IDNA2008, RFC 5890), no trailing dot.
 *
 * "Relay.Test.", "relay.test", "bücher.test" and "xn--bcher-kva.test" are
 * therefore compared as "relay.test" and "xn--bcher-kva.test". U-labels are
 * converted with libidn2 (NFC input, non-transitional UTS #46 mapping, so
 * case is folded there too).
 */
#ifndef PST_CORE_DOMAIN_H
#define PST_CORE_DOMAIN_H

#include <stddef.h>

#define PST_DOMAIN_BUF 256

/*
 * pst_domain_canon - write the canonical form of the len octets at in to
 * out (PST_DOMAIN_BUF bytes). Returns 0, or -1 when the name is empty, too
 * long, or not a valid IDN (U-labels that do not convert).
 */
int pst_domain_canon(const char *in, size_t len, char *out);

#endif
