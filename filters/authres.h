/*
 * authres.h - the Authentication-Results trust boundary (authres.c),
 * internal to filters/.
 */
#ifndef PST_FILTERS_AUTHRES_H
#define PST_FILTERS_AUTHRES_H

#include "filters/filter.h"

/* pst__authres_boundary - remove every received Authentication-Results
 * field that claims authserv-id id (or does not parse, or bears another
 * version), logging each; in on_headers. */
void pst__authres_boundary(struct pst_fctx *fc, const char *id);

#endif
