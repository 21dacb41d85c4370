/*
 * mime8.c - the quoted-printable downgrade as a consumer of the message
 * model (see mime8.h for what is converted and why).
 *
 * At creation the model is turned into a list of operations sorted by
 * offset, one per part that changes: RELABEL (a container's header block
 * rewritten) or CONVERT (a leaf's header block rewritten, then its body
 * encoded). Parts nest, but a part's header block and a leaf's body never
 * overlap another operation's range, so the text streams through one
 * state machine: PASS up to the next operation's header_start, HOLD the
 * header block up to body_start, then QP up to body_end (CONVERT) or PASS.
 */
#include "queue/mime8.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/tbuf.h"
#include "core/util.h"

#define QP_IN 4096                  /* octets encoded per step */

enum opkind { OP_RELABEL, OP_CONVERT };

struct op {
    enum opkind kind;
    const struct pst_mime_part *part;
    bool add_mv;                    /* the root gains MIME-Version */
};

enum mstate { M_PASS, M_HOLD, M_QP };

struct pst_mime8 {
    pst_mime8_out out;
    void *arg;
    struct op *ops;
    size_t nops, next;
    const struct op *cur;
    enum mstate st;
    uint64_t off;                   /* offset of the next input octet */
    struct pst_tbuf hdr;            /* the held header block */
    struct pst_qp_enc qp;
    uint8_t qbuf[PST_QP_ENC_OUT(QP_IN)];
};

static bool
is_type(const struct pst_mime_part *p, const char *type)
{
    return p->content_type != NULL && strcmp(p->content_type, type) == 0;
}

/* plan - the operation for part p, if it changes. */
static bool
plan(const struct pst_msg *model, const struct pst_mime_part *p,
     struct op *o)
{
    bool identity = p->cte == PST_CTE_7BIT || p->cte == PST_CTE_8BIT ||
                    p->cte == PST_CTE_BINARY;
    bool composite = (p->type != NULL && strcmp(p->type, "multipart") == 0) ||
                     is_type(p, "message/rfc822") ||
                     is_type(p, "message/global");

    if (p->flags & (PST_MIME_F_HEADER_BYTES | PST_MIME_F_HEADER_FIELDS))
        return false;               /* the model does not know all fields */
    if (p->body_start <= p->header_start &&
        !(p->flags & PST_MIME_F_NO_SEPARATOR))
        return false;               /* not a part: "--b" twice */
    o->part = p;
    o->add_mv = false;
    if (p->container) {
        o->kind = OP_RELABEL;
        return p->cte == PST_CTE_8BIT || p->cte == PST_CTE_BINARY;
    }
    if (composite || !identity)
        return false;
    o->kind = OP_CONVERT;
    o->add_mv = p == model->root &&
                pst_mime_field(p, "MIME-Version", 0) == NULL;
    return true;
}

struct pst_mime8 *
pst_mime8_new(const struct pst_msg *model, pst_mime8_out out, void *arg)
{
    struct pst_mime8 *m = pst_xcalloc(1, sizeof(*m));

    m->out = out;
    m->arg = arg;
    m->ops = pst_xcalloc(model->nparts + 1, sizeof(*m->ops));
    /* depth-first order is header_start order */
    for (unsigned i = 0; i < model->nparts; i++)
        if (plan(model, model->parts[i], &m->ops[m->nops]))
            m->nops++;
    m->st = M_PASS;
    pst_tbuf_init(&m->hdr);
    return m;
}

void
pst_mime8_free(struct pst_mime8 *m)
{
    if (m == NULL)
        return;
    pst_tbuf_free(&m->hdr);
    free(m->ops);
    free(m);
}

/* eol_at - length of the line end at b[i] (CRLF 2, LF 1, none 0). */
static size_t
eol_at(const char *b, size_t len, size_t i)
{
    if (i < len && b[i] == '\n')
        return 1;
    if (i + 1 < len && b[i] == '\r' && b[i + 1] == '\n')
        return 2;
    return 0;
}

/*
 * rewrite - the held header block out: its Content-Transfer-Encoding
 * fields (the model's) dropped, the new fields before its empty line (or,
 * when the body began without one or the text ended in the header, after
 * its last field, ended if it was not, and followed by an empty line).
 */
static void
rewrite(struct pst_mime8 *m)
{
    const struct pst_mime_part *p = m->cur->part;
    const char *b = m->hdr.p ? m->hdr.p : "";
    size_t len = m->hdr.len, at = 0;
    size_t blank = len;             /* where the new fields go */
    char last = '\n';               /* last octet written: at a line start */

    if (!(p->flags & PST_MIME_F_NO_SEPARATOR)) {
        /* the empty line: CRLF, LF, or a CR that ended the text */
        if (len >= 2 && b[len - 2] == '\r' && b[len - 1] == '\n')
            blank = len - 2;
        else if (len >= 1 && (b[len - 1] == '\n' || b[len - 1] == '\r'))
            blank = len - 1;
    }
    /* an embedded message right after its container's fields (no empty
     * line between): end those first, or the new fields would join them
     * (unless the container was rewritten just before: that ended them) */
    const struct pst_mime_part *up = p->parent;
    if (up && up->container && strcmp(up->type, "multipart") != 0 &&
        (up->flags & PST_MIME_F_NO_SEPARATOR) &&
        up->body_start == p->header_start &&
        !(m->cur > m->ops && m->cur[-1].part == up))
        m->out(m->arg, "\r\n", 2);
    for (unsigned i = 0; i < p->nfields; i++) {
        const struct pst_hdr_field *f = &p->fields[i];
        if (!pst_strcaseeq(f->name, "Content-Transfer-Encoding"))
            continue;
        size_t s = (size_t)(f->offset - p->header_start);
        if (s < at || s + f->raw_len > blank)
            continue;               /* not where the model says: keep */
        size_t e = s + f->raw_len;
        e += eol_at(b, blank, e);
        if (s > at) {
            m->out(m->arg, b + at, s - at);
            last = b[s - 1];
        }
        at = e;
    }
    if (blank > at) {
        m->out(m->arg, b + at, blank - at);
        last = b[blank - 1];
    }
    if (last != '\n')
        m->out(m->arg, "\r\n", 2);    /* the block ended inside a field */
    if (m->cur->add_mv)
        m->out(m->arg, "MIME-Version: 1.0\r\n", 19);
    if (m->cur->kind == OP_CONVERT)
        m->out(m->arg, "Content-Transfer-Encoding: quoted-printable\r\n",
               45);
    else
        m->out(m->arg, "Content-Transfer-Encoding: 7bit\r\n", 33);
    if (blank < len)
        m->out(m->arg, b + blank, len - blank);
    else
        m->out(m->arg, "\r\n", 2);
    pst_tbuf_reset(&m->hdr);
}

static void
qp(struct pst_mime8 *m, const char *p, size_t n)
{
    while (n > 0) {
        size_t k = n < QP_IN ? n : QP_IN;
        size_t o = pst_qp_enc_update(&m->qp, p, k, m->qbuf);
        m->out(m->arg, m->qbuf, o);
        p += k;
        n -= k;
    }
}

/* settle - the state changes due at the current offset (several may be:
 * an empty body, or the next part right after). */
static void
settle(struct pst_mime8 *m)
{
    for (;;) {
        if (m->st == M_PASS && m->next < m->nops &&
            m->ops[m->next].part->header_start < m->off) {
            m->next++;              /* inside a range already passed */
            continue;
        }
        if (m->st == M_PASS && m->next < m->nops &&
            m->ops[m->next].part->header_start == m->off) {
            m->cur = &m->ops[m->next++];
            m->st = M_HOLD;
            continue;
        }
        if (m->st == M_HOLD && m->cur->part->body_start <= m->off) {
            rewrite(m);
            if (m->cur->kind == OP_CONVERT) {
                pst_qp_enc_init(&m->qp, false);
                m->st = M_QP;
            } else {
                m->st = M_PASS;
            }
            continue;
        }
        if (m->st == M_QP && m->cur->part->body_end <= m->off) {
            size_t o = pst_qp_enc_final(&m->qp, m->qbuf);
            m->out(m->arg, m->qbuf, o);
            m->st = M_PASS;
            continue;
        }
        return;
    }
}

void
pst_mime8_bytes(struct pst_mime8 *m, const void *data, size_t n)
{
    const char *p = data;

    while (n > 0) {
        settle(m);
        /* octets up to the next change of state */
        uint64_t until = UINT64_MAX;
        if (m->st == M_PASS && m->next < m->nops)
            until = m->ops[m->next].part->header_start;
        else if (m->st == M_HOLD)
            until = m->cur->part->body_start;
        else if (m->st == M_QP)
            until = m->cur->part->body_end;
        size_t k = until - m->off < n ? (size_t)(until - m->off) : n;
        if (m->st == M_HOLD)
            pst_tbuf_add(&m->hdr, p, k);
        else if (m->st == M_QP)
            qp(m, p, k);
        else
            m->out(m->arg, p, k);
        m->off += k;
        p += k;
        n -= k;
    }
    settle(m);
}

void
pst_mime8_end(struct pst_mime8 *m)
{
    settle(m);
    if (m->st == M_HOLD) {
        /* the text ended before the model's body_start: not the text
         * the model was built from; pass what is held */
        m->out(m->arg, m->hdr.p, m->hdr.len);
        pst_tbuf_reset(&m->hdr);
    } else if (m->st == M_QP) {
        size_t o = pst_qp_enc_final(&m->qp, m->qbuf);
        m->out(m->arg, m->qbuf, o);
    }
    m->st = M_PASS;
}
