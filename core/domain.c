/*
 * domain.c - canonical domain names for comparison (see domain.h).
 *
 * ASCII names are only lowercased (A-labels included: "XN--..." and
 * "xn--..." are the same label); names with octets >= 0x80 go through
 * libidn2. Nothing here allocates beyond libidn2's own result.
 */
#include "core/domain.h"

#include <idn2.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

int
pst_domain_canon(const char *in, size_t len, char *out)
{
    bool ascii = true;
    char tmp[PST_DOMAIN_BUF];

    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len >= PST_DOMAIN_BUF)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '\0')
            return -1;
        if ((unsigned char)in[i] >= 0x80)
            ascii = false;
    }
    if (ascii) {
        for (size_t i = 0; i < len; i++)
            out[i] = (char)pst_tolower((unsigned char)in[i]);
        out[len] = '\0';
        return 0;
    }
    memcpy(tmp, in, len);
    tmp[len] = '\0';
    char *a = NULL;
    int rc = idn2_to_ascii_8z(tmp, &a, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
    if (rc != IDN2_OK || a == NULL) {
        idn2_free(a);
        return -1;
    }
    size_t n = strlen(a);
    if (n == 0 || n >= PST_DOMAIN_BUF) {
        idn2_free(a);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = (char)pst_tolower((unsigned char)a[i]);
    out[n] = '\0';
    idn2_free(a);
    return 0;
}
