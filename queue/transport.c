/*
 * transport.c - the table of delivery transports, looked up by the scheme
 * of a route string ("maildir:DIR"). Issue 5 adds smtp and lmtp here.
 */
#include <string.h>

#include "core/util.h"
#include "queue/transport.h"

static const struct pst_transport *const transports[] = {
    &pst_transport_maildir,
};

const struct pst_transport *
pst_transport_find(const char *route, const char **arg)
{
    for (size_t i = 0; i < PST_ARRAY_LEN(transports); i++) {
        size_t n = strlen(transports[i]->name);
        if (strncmp(route, transports[i]->name, n) == 0 && route[n] == ':') {
            *arg = route + n + 1;
            return transports[i];
        }
    }
    if (strncmp(route, "smtp:", 5) == 0 || strncmp(route, "lmtp:", 5) == 0 ||
        strcmp(route, "mx") == 0) {
        *arg = route;
        return &pst_transport_relay;
    }
    return NULL;
}
