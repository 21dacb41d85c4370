/*
 * fuzz_mime8.c - libFuzzer target for the quoted-printable downgrade
 * (queue/mime8.c) as a consumer of the message model: the input is parsed
 * by core/mime.c, downgraded in fragments (sizes from its first byte),
 * and the output parsed again. Invariants:
 *   - the tree is the same: as many parts, each with the same section,
 *     type and container-ness (nothing added, lost or restructured);
 *   - a converted leaf (its encoding now quoted-printable, before an
 *     identity one) decodes to what it held before (line ends as CRLF),
 *     and its encoded lines are at most 76 octets, 7-bit, and none starts
 *     with "--" (no new boundary delimiter); every other leaf decodes
 *     exactly as before;
 *   - no leaf with a body that could be converted is left with an
 *     identity encoding (8-bit text would reach a 7-bit hop), but those
 *     whose header block hit a limit, which the model cannot rewrite;
 *   - header fields: each part keeps its fields but its
 *     Content-Transfer-Encoding ones, and gains one (and the message's
 *     own header MIME-Version: 1.0 when a plain message is converted).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/mime.h"
#include "core/tbuf.h"
#include "core/util.h"
#include "queue/mime8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
sink(void *arg, const void *p, size_t n)
{
    pst_tbuf_add(arg, p, n);
}

static struct pst_msg *
parse(const void *p, size_t n)
{
    struct pst_mime_parser *mp = pst_mime_parser_new(NULL, NULL, NULL);
    pst_mime_feed(mp, p, n);
    return pst_mime_finish(mp);
}

static void
decoded(const void *msg, size_t len, const struct pst_mime_part *part,
        struct pst_tbuf *out)
{
    char buf[4096];
    ssize_t n;
    struct pst_mime_reader *r = pst_mime_reader_open_mem(msg, len, part);
    pst_tbuf_reset(out);
    while ((n = pst_mime_reader_read(r, buf, sizeof(buf))) > 0)
        pst_tbuf_add(out, buf, (size_t)n);
    if (n < 0)
        abort();
    pst_mime_reader_close(r);
}

/* crlf - every bare LF as CRLF (what quoted-printable text keeps). */
static void
crlf(struct pst_tbuf *t)
{
    struct pst_tbuf o = {0};
    for (size_t i = 0; i < t->len; i++) {
        if (t->p[i] == '\n' && (i == 0 || t->p[i - 1] != '\r'))
            pst_tbuf_addc(&o, '\r');
        pst_tbuf_addc(&o, t->p[i]);
    }
    pst_tbuf_free(t);
    *t = o;
}

static bool
identity(enum pst_cte c)
{
    return c == PST_CTE_7BIT || c == PST_CTE_8BIT || c == PST_CTE_BINARY;
}

static bool
composite(const struct pst_mime_part *p)
{
    return strcmp(p->type, "multipart") == 0 ||
           strcmp(p->content_type, "message/rfc822") == 0 ||
           strcmp(p->content_type, "message/global") == 0;
}

static unsigned
count_cte(const struct pst_mime_part *p)
{
    unsigned n = 0;
    for (unsigned i = 0; i < p->nfields; i++)
        n += pst_strcaseeq(p->fields[i].name, "Content-Transfer-Encoding");
    return n;
}

static void
check_qp_body(const char *b, size_t n)
{
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c == '\r' && i + 1 < n && b[i + 1] == '\n') {
            col = 0;
            i++;
            continue;
        }
        if (col == 0 && c == '-' && i + 1 < n && b[i + 1] == '-')
            abort();
        if ((c < 33 || c > 126) && c != ' ' && c != '\t')
            abort();
        if (++col > 76)
            abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool once;
    if (!once) {
        pst_log_set_level(PST_LOG_ERR);
        once = true;
    }
    if (size == 0)
        return 0;
    size_t frag = 1 + data[0] % 61;
    data++;
    size--;

    struct pst_msg *in = parse(data, size);
    struct pst_tbuf out = {0}, a = {0}, b = {0};
    struct pst_mime8 *m = pst_mime8_new(in, sink, &out);
    for (size_t o = 0; o < size; o += frag)
        pst_mime8_bytes(m, data + o, size - o < frag ? size - o : frag);
    pst_mime8_end(m);
    pst_mime8_free(m);
    struct pst_msg *res = parse(out.p ? out.p : "", out.len);

    if (res->nparts != in->nparts)
        abort();
    for (unsigned i = 0; i < in->nparts; i++) {
        const struct pst_mime_part *p = in->parts[i], *q = res->parts[i];
        if (strcmp(p->section, q->section) != 0 ||
            strcmp(p->content_type, q->content_type) != 0 ||
            p->container != q->container)
            abort();
        bool limited = p->flags & (PST_MIME_F_HEADER_BYTES |
                                   PST_MIME_F_HEADER_FIELDS);
        bool converted = identity(p->cte) && q->cte == PST_CTE_QP;
        /* fields: the same but Content-Transfer-Encoding, one of those */
        if (!limited && !(p->body_start <= p->header_start &&
                          !(p->flags & PST_MIME_F_NO_SEPARATOR))) {
            bool mv = converted && p == in->root &&
                      pst_mime_field(p, "MIME-Version", 0) == NULL;
            bool changed = converted || (p->container &&
                                         (p->cte == PST_CTE_8BIT ||
                                          p->cte == PST_CTE_BINARY));
            unsigned want = p->nfields + mv +
                            (changed ? 1 - count_cte(p) : 0);
            if (q->nfields != want || (changed && count_cte(q) != 1))
                abort();
        }
        if (p->container)
            continue;
        if (!limited && !composite(p) && identity(q->cte) &&
            p->body_end > p->body_start)
            abort();                /* left unconverted */
        decoded(data, size, p, &a);
        decoded(out.p, out.len, q, &b);
        if (converted) {
            crlf(&a);
            check_qp_body(out.p + q->body_start, q->body_end - q->body_start);
        }
        if (a.len != b.len || (a.len && memcmp(a.p, b.p, a.len) != 0))
            abort();
    }
    pst_msg_free(in);
    pst_msg_free(res);
    pst_tbuf_free(&out);
    pst_tbuf_free(&a);
    pst_tbuf_free(&b);
    return 0;
}
