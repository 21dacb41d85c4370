/*
 * smtp_filters.h - the small pieces the SMTP session needs to speak the
 * filter chain's results (filters/chain.h) on the wire.
 */
#ifndef PST_GATEWAY_SMTP_FILTERS_H
#define PST_GATEWAY_SMTP_FILTERS_H

#include "core/tbuf.h"
#include "filters/chain.h"

/* pst_sf_reply - "code enh text" CRLF of a refusal (checked by the chain:
 * class, no CR/LF). */
void pst_sf_reply(struct pst_tbuf *out, const struct pst_fres *r);
/* pst_sf_internal_error - r becomes the 451 4.3.0 of a host error. */
void pst_sf_internal_error(struct pst_fres *r);
const char *pst_sf_phase_name(enum pst_fphase ph);
/* pst_sf_orcpt - "rfc822;" + addr as RFC 3461 xtext (malloc'd). */
char *pst_sf_orcpt(const char *addr);

#endif
