/*
 * smtp_filters.c - filter results on the wire: refusals as SMTP replies,
 * the ORCPT of a rewritten recipient.
 *
 * Filter reply texts are dynamic by nature, so they do not come from the
 * reply table (gateway/reply.c); the chain has already checked them (code
 * class matches the verdict, enhanced code of the same class, printable
 * text without CR or LF, at most PST_FREPLY_TEXT_MAX bytes), and anything
 * else became 451 4.3.0 there.
 */
#include "gateway/smtp_filters.h"

#include <stdio.h>
#include <string.h>

#include "core/util.h"

void
pst_sf_reply(struct pst_tbuf *out, const struct pst_fres *r)
{
    pst_tbuf_printf(out, "%d %s %s\r\n", r->code, r->enh, r->text);
}

void
pst_sf_internal_error(struct pst_fres *r)
{
    memset(r, 0, sizeof(*r));
    r->verdict = PST_TEMPFAIL;
    r->code = 451;
    snprintf(r->enh, sizeof(r->enh), "4.3.0");
    snprintf(r->text, sizeof(r->text), "Internal error, try again later");
}

const char *
pst_sf_phase_name(enum pst_fphase ph)
{
    static const char *const names[PST_FP_COUNT] = {
        "connect", "helo", "mail", "rcpt", "headers", "message", "eom",
    };
    return (unsigned)ph < PST_FP_COUNT ? names[ph] : "?";
}

/* pst_sf_orcpt - see smtp_filters.h. */
char *
pst_sf_orcpt(const char *addr)
{
    size_t n = strlen(addr);
    char *o = pst_xmalloc(7 + n * 3 + 1), *p = o;
    memcpy(p, "rfc822;", 7);
    p += 7;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)addr[i];
        if (c < 33 || c > 126 || c == '+' || c == '=')
            p += sprintf(p, "+%02X", c);
        else
            *p++ = (char)c;
    }
    *p = '\0';
    return o;
}
