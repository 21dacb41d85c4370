/*
 * fuzz_dsn.c - libFuzzer target for the RFC 3464 report builder
 * (queue/dsn.c). The input gives the envelope (flags byte, then sender,
 * ENVID and per recipient address, ORCPT and status text, separated by
 * NUL; addresses keep to what the gateway accepts: no blanks or controls)
 * and the rest is the returned original.
 *
 * The report is read back with core/mime.c and must be: one
 * multipart/report whose boundary is random-sized as documented and found
 * closed; exactly the text part, the status part (one Final-Recipient per
 * recipient) and, when there is an original, a third part of the right
 * type whose body is the original byte for byte (plus the CRLF added when
 * it did not end with one). Nothing the original holds can end the report
 * early or add parts to it.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/mime.h"
#include "core/tbuf.h"
#include "queue/dsn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* field - the next NUL-terminated field (malloc'd), cut at max octets;
 * address fields lose blanks and controls as the gateway would refuse
 * them. */
static char *
field(const uint8_t **p, const uint8_t *end, size_t max, bool addr)
{
    const uint8_t *s = *p, *e = memchr(s, 0, (size_t)(end - s));
    if (e == NULL)
        e = end;
    size_t n = (size_t)(e - s) < max ? (size_t)(e - s) : max;
    char *f = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        f[i] = (char)(addr && (s[i] <= 0x20 || s[i] == 0x7f) ? 'x' : s[i]);
    f[n] = '\0';
    *p = e < end ? e + 1 : end;
    return f;
}

static size_t
count(const char *p, size_t n, const char *what)
{
    size_t c = 0, wl = strlen(what);
    for (const char *q = p; (q = memmem(q, n - (size_t)(q - p), what, wl));
         q += wl)
        c++;
    return c;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool once;
    if (!once) {
        pst_log_set_level(PST_LOG_ERR);
        once = true;
    }
    if (size < 1)
        return 0;
    const uint8_t *p = data + 1, *end = data + size;
    unsigned fl = data[0];
    struct pst_envelope env;
    struct pst_dsn_rcpt rs[3];
    char *texts[3];
    size_t n = 1 + fl % 3;

    pst_envelope_init(&env);
    env.sender = field(&p, end, 256, true);
    char *envid = field(&p, end, 100, false);
    if (envid[0])
        env.envid = envid;
    else
        free(envid);
    env.smtputf8 = fl & 0x04;
    env.body = fl & 0x08 ? PST_BODY_8BITMIME : PST_BODY_7BIT;
    env.arrival = 1700000000;
    for (size_t i = 0; i < n; i++) {
        char *a = field(&p, end, 256, true);
        struct pst_rcpt *r = pst_envelope_add_rcpt(&env, a);
        free(a);
        char *o = field(&p, end, 500, false);
        if (o[0])
            r->orcpt = o;
        else
            free(o);
        texts[i] = field(&p, end, 600, false);
    }
    for (size_t i = 0; i < n; i++) {
        rs[i].rcpt = &env.rcpts[i];
        rs[i].action = (enum pst_dsn_action)((fl >> 4) & 3);
        rs[i].text = texts[i];
    }
    struct pst_dsn_orig orig = {(uint8_t *)p, (size_t)(end - p),
                                (fl & 0x40) == 0};
    bool with_orig = !(fl & 0x80) && orig.len > 0;

    struct pst_tbuf b = {0};
    pst__dsn_build(&b, "mx.postern.test", "0000010000000000", &env, rs, n,
                   with_orig ? &orig : NULL, 1700000000);

    struct pst_mime_parser *mp = pst_mime_parser_new(NULL, NULL, NULL);
    pst_mime_feed(mp, b.p, b.len);
    struct pst_msg *m = pst_mime_finish(mp);
    const struct pst_mime_part *root = m->root;
    if (strcmp(root->content_type, "multipart/report") != 0 ||
        root->boundary == NULL ||
        strlen(root->boundary) != PST_DSN_BOUNDARY_LEN ||
        (root->flags & (PST_MIME_F_NO_BOUNDARY | PST_MIME_F_NO_START |
                        PST_MIME_F_NO_CLOSE)) != 0 ||
        root->nchildren != (with_orig ? 3u : 2u))
        abort();
    const struct pst_mime_part *c1 = root->child, *c2 = c1->next;
    if (strcmp(c1->content_type, "text/plain") != 0 ||
        strcmp(c2->content_type, env.smtputf8
                                     ? "message/global-delivery-status"
                                     : "message/delivery-status") != 0)
        abort();
    if (count(b.p + c2->body_start, c2->body_end - c2->body_start,
              "\r\nFinal-Recipient: ") != n)
        abort();
    if (with_orig) {
        const struct pst_mime_part *c3 = c2->next;
        const char *want = orig.full ? (env.smtputf8 ? "message/global"
                                                     : "message/rfc822")
                                     : (env.smtputf8 ? "text/global-headers"
                                                     : "text/rfc822-headers");
        bool crlf = orig.len >= 2 && memcmp(orig.p + orig.len - 2, "\r\n",
                                            2) == 0;
        if (strcmp(c3->content_type, want) != 0 ||
            c3->body_end - c3->body_start != orig.len + (crlf ? 0 : 2) ||
            memcmp(b.p + c3->body_start, orig.p, orig.len) != 0)
            abort();
    }
    pst_msg_free(m);
    pst_tbuf_free(&b);
    for (size_t i = 0; i < n; i++)
        free(texts[i]);
    pst_envelope_free(&env);
    return 0;
}
