/*
 * mime.c - one-pass streaming parser for the header and MIME structure of
 * a message, and the model it builds (see mime.h for the contract).
 *
 * Shape (after Postfix mime_state.c): input is cut into lines as it
 * arrives; each line is classified by the state of the deepest open part
 * (a stack of frames from the root down): header line, body line, or a
 * boundary delimiter of one of the open multiparts. Delimiters are checked
 * innermost first, except that a multipart still in its preamble checks
 * its ancestors' delimiters before its own (so a nested multipart that
 * reuses its parent's boundary cannot take over the parent's parts).
 *
 * Bodies are not stored. A body line is held back only while it could
 * still be a delimiter (it begins with "--" and is at most LINE_MAX
 * octets); everything else streams through the part's transfer decoder
 * straight to on_body. The line end before each line is held until the
 * line is known not to be a delimiter, because that line end belongs to
 * the delimiter (RFC 2046 5.1.1).
 *
 * Ownership: the parser owns the model until pst_mime_finish hands it to
 * the caller. All model memory is in one arena freed by pst_msg_free.
 *
 * Limits: see mime.h. Every buffer here is bounded by them: the line
 * buffer by LINE_MAX in bodies and by the header limits in header blocks,
 * the frame stack by the depth limit, the tree by the part limit.
 */
#include "core/mime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/charset.h"
#include "core/tbuf.h"
#include "core/util.h"

#define LINE_MAX_BODY 1000          /* 998 + CRLF: longest delimiter line */
#define DEC_CHUNK 16384

/* ---- arena ---- */

struct pst__arena {
    struct chunk *head;
};

struct chunk {
    struct chunk *next;
    size_t used, size;
    max_align_t data[];
};

#define CHUNK_SIZE 16384

static void *
ar_alloc(struct pst__arena *a, size_t n)
{
    struct chunk *c = a->head;
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) *
        sizeof(max_align_t);
    if (c == NULL || c->size - c->used < n) {
        size_t size = PST_MAX(n, (size_t)CHUNK_SIZE);
        c = pst_xmalloc(sizeof(*c) + size);
        c->size = size;
        c->used = 0;
        if (a->head && n >= CHUNK_SIZE) {
            /* A big block goes behind the current chunk, which keeps
             * serving small allocations. */
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

static char *
ar_strndup(struct pst__arena *a, const char *s, size_t n)
{
    char *d = ar_alloc(a, n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static void
ar_free(struct pst__arena *a)
{
    struct chunk *c, *n;
    for (c = a->head; c; c = n) {
        n = c->next;
        free(c);
    }
    free(a);
}

/* ---- limits and flags ---- */

/* pst_mime_limits_default - the documented default limits. */
void
pst_mime_limits_default(struct pst_mime_limits *lim)
{
    lim->depth = 32;
    lim->parts = 5000;
    lim->header_bytes = 262144;
    lim->header_fields = 1000;
    lim->total_header_bytes = 4u << 20;
    lim->encoded_words = 256;
    lim->boundary_len = 200;
    lim->params = 64;
}

static const char *const flag_names[] = {
    "depth_limit",
    "part_limit",
    "header_size_limit",
    "header_count_limit",
    "encoded_word_limit",
    "boundary_length_limit",
    "parameter_limit",
    NULL,
    "multipart_without_boundary",
    "missing_start_boundary",
    "missing_close_boundary",
    "missing_header_separator",
    "header_8bit",
    "header_nul",
    "bad_base64",
    "bad_quoted_printable",
    "bad_content_type",
    "bad_transfer_encoding",
    "bad_encoded_word",
    "bad_parameter",
    "duplicate_content_field",
    "orphan_continuation_line",
};

/* pst_mime_flag_name - the name of one PST_MIME_F_* bit, as docs/INSPECT.md
 * lists it. */
const char *
pst_mime_flag_name(unsigned bit)
{
    for (unsigned i = 0; i < PST_ARRAY_LEN(flag_names); i++)
        if (bit == (1u << i))
            return flag_names[i];
    return NULL;
}

/* ---- parser state ---- */

enum fstate {
    FS_HEADERS,                     /* reading the part's header block */
    FS_BODY,                        /* leaf body */
    FS_PREAMBLE,                    /* multipart before its first delimiter */
    FS_PARTS,                       /* multipart between delimiters */
    FS_EPILOGUE,                    /* multipart after its close delimiter */
    FS_MESSAGE,                     /* message/rfc822: the child is open */
};

struct frame {
    struct pst_mime_part *part;
    enum fstate st;
    size_t blen;                    /* boundary length (multiparts) */
    const char *prefix;             /* section prefix for children */
    struct pst_mime_part *last;     /* last child, for appending */
    unsigned lines;                 /* header lines seen (FS_HEADERS) */
};

enum lmode {
    LM_FULL,                        /* header line: kept whole */
    LM_PREFIX,                      /* body line that may be a delimiter */
    LM_EMIT,                        /* body line that is not a delimiter */
    LM_SKIP,                        /* oversized header line: dropped */
    LM_PASS,                        /* nothing can end this body: no lines */
};

struct pst_mime_parser {
    struct pst_mime_limits lim;
    struct pst_mime_callbacks cb;
    void *arg;
    struct pst_msg *msg;
    bool headers_done;

    uint64_t off;                   /* octets consumed */
    uint64_t line_start;
    enum lmode lmode;
    struct pst_tbuf line;           /* current line as kept */
    unsigned prev_eol;              /* length of the previous line's end */
    bool held_cr;                   /* the line so far ends with a CR (in
                                       LM_EMIT it is kept back) */

    struct frame *fr;               /* fr[0] root .. fr[nfr-1] deepest */
    unsigned nfr;
    unsigned nbounds;               /* multiparts in PREAMBLE or PARTS */
    unsigned part_cap;

    /* the deepest part's header block */
    struct pst_tbuf field;          /* the field being read, line ends
                                       included */
    bool field_open;
    uint64_t field_off;
    unsigned field_eol;             /* EOL_* of its last line */
    struct pst_hdr_field *fv;       /* finished fields of the block */
    unsigned nfv, fvcap;
    uint64_t block_bytes;
    bool block_over;                /* a header limit hit: drop the rest */
    uint64_t total_header_bytes;

    /* the deepest part's body */
    bool decoding;
    struct pst_decoder dec;
    unsigned pend_eol;              /* line end held back: EOL_* */
    uint8_t *decbuf;
};

/* Line ends: LF, CRLF, or a CR that ends the input (a CRLF cut short). */
enum { EOL_NONE, EOL_LF, EOL_CRLF, EOL_CR };

static inline unsigned
eol_len(unsigned k)
{
    return k == EOL_CRLF ? 2 : k != EOL_NONE;
}

static inline const char *
eol_bytes(unsigned k)
{
    return k == EOL_LF ? "\n" : k == EOL_CRLF ? "\r\n" : "\r";
}

static inline struct frame *
top(struct pst_mime_parser *p)
{
    return &p->fr[p->nfr - 1];
}

static void
flag(struct pst_mime_parser *p, struct pst_mime_part *part, unsigned f)
{
    if (part)
        part->flags |= f;
    p->msg->flags |= f;
}

/* The frame of an open part (parents of new parts are always open). */
static unsigned
parent_frame(struct pst_mime_parser *p, const struct pst_mime_part *part)
{
    return part->depth;
}

static struct pst_mime_part *
part_new(struct pst_mime_parser *p, struct pst_mime_part *parent,
         uint64_t start)
{
    struct pst_msg *m = p->msg;
    struct pst_mime_part *part = ar_alloc(m->arena, sizeof(*part));

    memset(part, 0, sizeof(*part));
    part->parent = parent;
    part->depth = parent ? parent->depth + 1 : 0;
    part->id = m->nparts;
    part->header_start = part->body_start = part->body_end = start;
    part->cte_name = "7bit";
    part->content_type = "text/plain";
    part->type = "text";
    part->subtype = "plain";
    part->section = "";
    if (parent) {
        if (parent->child == NULL)
            parent->child = part;
        else
            p->fr[parent_frame(p, parent)].last->next = part;
        p->fr[parent_frame(p, parent)].last = part;
        parent->nchildren++;
    }
    if (m->nparts == p->part_cap) {
        p->part_cap = p->part_cap ? p->part_cap * 2 : 16;
        m->parts = pst_xrealloc(m->parts, p->part_cap * sizeof(*m->parts));
    }
    m->parts[m->nparts++] = part;
    return part;
}

/* Undo part_new for the most recent part (an empty part before a close
 * delimiter, which is not a part: see on_delimiter). At most once per
 * multipart, so the walk stays linear in the number of parts. */
static void
part_drop_last(struct pst_mime_parser *p, struct pst_mime_part *part)
{
    struct pst_mime_part **pp = &part->parent->child, *prev = NULL;
    while (*pp != part) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    *pp = NULL;
    p->fr[parent_frame(p, part->parent)].last = prev;
    part->parent->nchildren--;
    p->msg->nparts--;
}

static void
push(struct pst_mime_parser *p, struct pst_mime_part *part)
{
    struct frame *f = &p->fr[p->nfr++];
    memset(f, 0, sizeof(*f));
    f->part = part;
    f->st = FS_HEADERS;
    p->block_bytes = 0;
    p->block_over = false;
    p->nfv = 0;
    p->field_open = false;
    pst_tbuf_reset(&p->field);
}

/* ---- bodies ---- */

static void
emit(struct pst_mime_parser *p, const void *data, size_t n)
{
    const uint8_t *s = data;
    struct frame *f = top(p);

    while (n > 0) {
        size_t k = PST_MIN(n, (size_t)DEC_CHUNK);
        size_t o = pst_dec_update(&p->dec, s, k, p->decbuf);
        f->part->decoded_size += o;
        if (o && p->cb.on_body && f->st == FS_BODY)
            p->cb.on_body(p->arg, f->part, p->decbuf, o);
        s += k;
        n -= k;
    }
}

static void
emit_pend_eol(struct pst_mime_parser *p)
{
    if (p->pend_eol) {
        emit(p, eol_bytes(p->pend_eol), eol_len(p->pend_eol));
        p->pend_eol = EOL_NONE;
    }
}

/* Body octets of an LM_EMIT line: a final CR is held, it may be half of
 * the line end. */
static void
emit_line(struct pst_mime_parser *p, const uint8_t *s, size_t n)
{
    if (n == 0)
        return;
    if (p->held_cr) {
        emit(p, "\r", 1);
        p->held_cr = false;
    }
    if (s[n - 1] == '\r') {
        p->held_cr = true;
        n--;
    }
    emit(p, s, n);
}

static void
dec_finish(struct pst_mime_parser *p, struct pst_mime_part *part)
{
    size_t o = pst_dec_final(&p->dec, p->decbuf);
    part->decoded_size += o;
    if (o && p->cb.on_body && top(p)->st == FS_BODY)
        p->cb.on_body(p->arg, part, p->decbuf, o);
    if (pst_dec_bad(&p->dec))
        flag(p, part,
             p->dec.cte == PST_CTE_BASE64 ? PST_MIME_F_BAD_BASE64
                                          : PST_MIME_F_BAD_QP);
    p->decoding = false;
    p->pend_eol = 0;
}

/* ---- header fields ---- */

static bool
is_name_char(int c)
{
    return c >= 0x21 && c <= 0x7e && c != ':';
}

static void
field_finish(struct pst_mime_parser *p)
{
    struct pst_mime_part *part = top(p)->part;
    struct pst__arena *a = p->msg->arena;
    const char *raw = p->field.p;
    size_t len = p->field.len, n = len - eol_len(p->field_eol), i = 0, j;

    if (!p->field_open)
        return;
    p->field_open = false;
    while (i < n && raw[i] != ':' && raw[i] != ' ' && raw[i] != '\t')
        i++;
    for (j = i; j < n && raw[j] != ':'; j++)
        ;
    if (p->nfv == p->fvcap) {
        p->fvcap = p->fvcap ? p->fvcap * 2 : 16;
        p->fv = pst_xrealloc(p->fv, p->fvcap * sizeof(*p->fv));
    }
    struct pst_hdr_field *f = &p->fv[p->nfv++];
    f->offset = p->field_off;
    f->raw = ar_strndup(a, raw, len);
    f->raw_len = n;
    f->len = len;
    f->name = ar_strndup(a, raw, i);
    /* One pass over the octets: 8-bit and NUL noted (the value's apart),
     * the value unfolded (line ends dropped), then trimmed of blanks. */
    bool hi = false, nul = false, odd_value = false;
    for (size_t k = 0; k <= j && k < n; k++) {
        hi |= (unsigned char)raw[k] >= 0x80;
        nul |= raw[k] == '\0';
    }
    char *v = ar_alloc(a, n - j + 1);
    size_t vl = 0;
    for (size_t k = j + 1; k < n; k++) {
        unsigned char c = (unsigned char)raw[k];
        if (c == '\r' || c == '\n')
            continue;
        if (c >= 0x80 || c == '\0') {
            odd_value = true;
            hi |= c >= 0x80;
            nul |= c == '\0';
        }
        v[vl++] = (char)c;
    }
    if (hi)
        flag(p, part, PST_MIME_F_HEADER_8BIT);
    if (nul)
        flag(p, part, PST_MIME_F_HEADER_NUL);
    size_t b = 0;
    while (b < vl && (v[b] == ' ' || v[b] == '\t'))
        b++;
    while (vl > b && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        vl--;
    memmove(v, v + b, vl - b);
    vl -= b;
    v[vl] = '\0';
    f->value = v;
    f->value_len = vl;
    /* Most values are plain ASCII without encoded words: then the decoded
     * text is the value itself (the blanks trimmed were neither). */
    if (!odd_value && memmem(v, vl, "=?", 2) == NULL) {
        f->decoded = v;
        return;
    }
    struct pst_tbuf d;
    struct pst_rfc2047_stats st;
    pst_tbuf_init(&d);
    pst_rfc2047_decode(v, vl, p->lim.encoded_words, &d, &st);
    f->decoded = ar_strndup(a, d.p ? d.p : "", d.len);
    pst_tbuf_free(&d);
    if (st.limit)
        flag(p, part, PST_MIME_F_ENCODED_WORDS);
    if (st.malformed)
        flag(p, part, PST_MIME_F_BAD_ENCODED_WORD);
}

/* Count a header line against the block and message limits; false when
 * a limit is hit (the block's remaining fields are dropped). */
static bool
header_budget(struct pst_mime_parser *p, size_t n)
{
    struct pst_mime_part *part = top(p)->part;
    if (p->block_over)
        return false;
    if (p->block_bytes + n > p->lim.header_bytes ||
        p->total_header_bytes + n > p->lim.total_header_bytes) {
        flag(p, part, PST_MIME_F_HEADER_BYTES);
        p->block_over = true;
        p->field_open = false;
        return false;
    }
    p->block_bytes += n;
    p->total_header_bytes += n;
    return true;
}

/* ---- content fields ---- */

static const struct pst_hdr_field *
content_field(struct pst_mime_parser *p, struct pst_mime_part *part,
              const char *name)
{
    const struct pst_hdr_field *f = pst_mime_field(part, name, 0);
    if (f && pst_mime_field(part, name, 1))
        flag(p, part, PST_MIME_F_DUP_CONTENT_FIELD);
    return f;
}

static const char *
ar_lower(struct pst__arena *a, const char *s, size_t n)
{
    char *d = ar_strndup(a, s, n);
    for (char *c = d; *c; c++)
        *c = (char)pst_tolower((unsigned char)*c);
    return d;
}

/* RFC 2045 token: printable ASCII but tspecials. */
static const char *
token_end(const char *s, const char *end)
{
    while (s < end && pst_mime_token_char((unsigned char)*s))
        s++;
    return s;
}

static void
params(struct pst_mime_parser *p, struct pst_mime_part *part, const char *s,
       const char *end, struct pst_params *ps)
{
    pst_params_parse(s, (size_t)(end - s), p->lim.params, ps);
    if (ps->limit)
        flag(p, part, PST_MIME_F_PARAMS);
    if (ps->bad)
        flag(p, part, PST_MIME_F_BAD_PARAM);
}

/* A parameter value as decoded text: RFC 2047 words inside quoted
 * filenames are common enough to be decoded too. */
static const char *
param_text(struct pst_mime_parser *p, struct pst_mime_part *part,
           const char *v)
{
    struct pst_tbuf d;
    struct pst_rfc2047_stats st;
    const char *r;
    if (v == NULL)
        return NULL;
    pst_tbuf_init(&d);
    pst_rfc2047_decode(v, strlen(v), p->lim.encoded_words, &d, &st);
    r = ar_strndup(p->msg->arena, d.p ? d.p : "", d.len);
    pst_tbuf_free(&d);
    if (st.malformed)
        flag(p, part, PST_MIME_F_BAD_ENCODED_WORD);
    return r;
}

static void
content_fields(struct pst_mime_parser *p, struct pst_mime_part *part)
{
    struct pst__arena *a = p->msg->arena;
    const struct pst_hdr_field *f;
    bool digest = part->parent &&
                  strcmp(part->parent->content_type, "multipart/digest") == 0;

    if (digest) {
        part->content_type = "message/rfc822";
        part->type = "message";
        part->subtype = "rfc822";
    }
    if ((f = content_field(p, part, "Content-Type")) != NULL) {
        const char *s = f->value, *end = s + f->value_len;
        const char *t0, *t1, *s0, *s1;
        s = t0 = pst_skip_cfws(s, end);
        s = t1 = token_end(s, end);
        s = pst_skip_cfws(s, end);
        if (t1 > t0 && s < end && *s == '/') {
            s = s0 = pst_skip_cfws(s + 1, end);
            s = s1 = token_end(s, end);
            s = pst_skip_cfws(s, end);
            if (s1 > s0) {
                if (s < end && *s != ';') {
                    /* Junk after the subtype: readers still take the
                     * type (a multipart stays one), so do the same and
                     * say so; parameters start at the next ';'. */
                    flag(p, part, PST_MIME_F_BAD_CONTENT_TYPE);
                    while (s < end && *s != ';')
                        s++;
                }
                part->type = ar_lower(a, t0, (size_t)(t1 - t0));
                part->subtype = ar_lower(a, s0, (size_t)(s1 - s0));
                char *ct =
                    ar_alloc(a, (size_t)(t1 - t0) + (size_t)(s1 - s0) + 2);
                strcpy(ct, part->type);
                strcat(ct, "/");
                strcat(ct, part->subtype);
                part->content_type = ct;
                params(p, part, s, end, &part->params);
                goto have_type;
            }
        }
        /* RFC 2045 5.2: an unparsable Content-Type is text/plain. */
        flag(p, part, PST_MIME_F_BAD_CONTENT_TYPE);
        part->content_type = "text/plain";
        part->type = "text";
        part->subtype = "plain";
    }
have_type:
    if (part->params.n) {
        const char *cs = pst_params_get(&part->params, "charset");
        if (cs && *cs)
            part->charset = ar_lower(a, cs, strlen(cs));
        part->boundary = pst_params_get(&part->params, "boundary");
    }
    if ((f = content_field(p, part, "Content-Transfer-Encoding")) != NULL) {
        const char *s = f->value, *end = s + f->value_len;
        const char *t0 = pst_skip_cfws(s, end), *t1 = token_end(t0, end);
        part->cte_name = ar_lower(a, t0, (size_t)(t1 - t0));
        part->cte = pst_cte_parse(t0, (size_t)(t1 - t0));
        if (part->cte == PST_CTE_UNKNOWN ||
            pst_skip_cfws(t1, end) != end)
            flag(p, part, PST_MIME_F_BAD_CTE);
    }
    if ((f = content_field(p, part, "Content-Disposition")) != NULL) {
        const char *s = f->value, *end = s + f->value_len;
        const char *t0 = pst_skip_cfws(s, end), *t1 = token_end(t0, end);
        if (t1 > t0)
            part->disposition = ar_lower(a, t0, (size_t)(t1 - t0));
        params(p, part, t1, end, &part->dparams);
    }
    part->filename = param_text(p, part,
                                pst_params_get(&part->dparams, "filename"));
    if (part->filename == NULL)
        part->filename =
            param_text(p, part, pst_params_get(&part->params, "name"));
    if ((f = content_field(p, part, "Content-ID")) != NULL)
        part->content_id = f->value;
}

/* ---- structure ---- */

static const char *
sec_join(struct pst__arena *a, const char *prefix, const char *tail)
{
    size_t pl = strlen(prefix), tl = strlen(tail);
    char *s = ar_alloc(a, pl + tl + 2);
    if (pl) {
        memcpy(s, prefix, pl);
        s[pl++] = '.';
    }
    memcpy(s + pl, tail, tl + 1);
    return s;
}

/*
 * Section numbers (RFC 3501 6.4.5). The parent frame gave the part its
 * number (if it is a multipart child); here the part's own kind decides the
 * rest: an embedded message's body is "S.1", or "S.TEXT" when multipart
 * (its children then S.1, S.2); the root is "1", or "TEXT" if multipart.
 */
static void
set_section(struct pst_mime_parser *p, struct frame *f, bool multipart)
{
    struct pst__arena *a = p->msg->arena;
    struct pst_mime_part *part = f->part;
    struct pst_mime_part *up = part->parent;

    if (up == NULL) {
        part->section = multipart ? "TEXT" : "1";
        f->prefix = multipart ? "" : "1";
    } else if (up->container && strcmp(up->type, "message") == 0) {
        part->section = sec_join(a, up->section, multipart ? "TEXT" : "1");
        f->prefix = multipart ? up->section : part->section;
    } else {
        /* child of a multipart: numbered by its parent at creation */
        f->prefix = part->section;
    }
}

static void
end_headers(struct pst_mime_parser *p, uint64_t body_start);

/* Begin a multipart's next body part at the current offset. */
static void
child_new(struct pst_mime_parser *p, struct frame *mf, uint64_t start)
{
    char num[16];
    if (p->msg->nparts >= p->lim.parts) {
        flag(p, mf->part, PST_MIME_F_PARTS);
        return;
    }
    struct pst_mime_part *c = part_new(p, mf->part, start);
    snprintf(num, sizeof(num), "%u", mf->part->nchildren);
    c->section = sec_join(p->msg->arena, mf->prefix, num);
    push(p, c);
}

static void
end_headers(struct pst_mime_parser *p, uint64_t body_start)
{
    struct frame *f = top(p);
    struct pst_mime_part *part = f->part;
    struct pst__arena *a = p->msg->arena;

    field_finish(p);
    part->body_start = part->body_end = body_start;
    part->nfields = p->nfv;
    part->fields = ar_alloc(a, (p->nfv ? p->nfv : 1) * sizeof(*part->fields));
    if (p->nfv)
        memcpy(part->fields, p->fv, p->nfv * sizeof(*part->fields));
    p->nfv = 0;
    content_fields(p, part);

    bool multipart = false, message = false;
    if (strcmp(part->type, "multipart") == 0) {
        if (part->boundary == NULL || part->boundary[0] == '\0') {
            flag(p, part, PST_MIME_F_NO_BOUNDARY);
        } else if (strlen(part->boundary) > p->lim.boundary_len) {
            flag(p, part, PST_MIME_F_BOUNDARY_LEN);
        } else if (part->depth + 1 > p->lim.depth) {
            flag(p, part, PST_MIME_F_DEPTH);
        } else {
            multipart = true;
        }
        if (part->cte > PST_CTE_BINARY)
            flag(p, part, PST_MIME_F_BAD_CTE);
    } else if (strcmp(part->type, "message") == 0 &&
               (strcmp(part->subtype, "rfc822") == 0 ||
                strcmp(part->subtype, "global") == 0)) {
        if (part->cte > PST_CTE_BINARY) {
            /* An encoded message cannot be parsed in line: keep it as a
             * leaf so its decoded octets are still there for filters. */
            flag(p, part, PST_MIME_F_BAD_CTE);
        } else if (part->depth + 1 > p->lim.depth) {
            flag(p, part, PST_MIME_F_DEPTH);
        } else if (p->msg->nparts >= p->lim.parts) {
            flag(p, part, PST_MIME_F_PARTS);
        } else {
            message = true;
        }
    }
    if (multipart) {
        /* The boundary's trailing blanks cannot be matched (RFC 2046
         * forbids them; readers strip them). */
        f->blen = strlen(part->boundary);
        while (f->blen && (part->boundary[f->blen - 1] == ' ' ||
                           part->boundary[f->blen - 1] == '\t'))
            f->blen--;
    }
    part->container = multipart || message;
    set_section(p, f, multipart);
    if (p->nfr == 1)
        p->headers_done = true;
    if (message) {
        f->st = FS_MESSAGE;
        if (p->cb.on_headers)
            p->cb.on_headers(p->arg, part);
        push(p, part_new(p, part, body_start));
        return;
    }
    f->st = multipart ? FS_PREAMBLE : FS_BODY;
    if (multipart)
        p->nbounds++;
    pst_dec_init(&p->dec, part->cte);
    p->decoding = true;
    p->pend_eol = 0;
    if (p->cb.on_headers)
        p->cb.on_headers(p->arg, part);
}

/* Close the deepest frame; its body (or extent) ends at end. */
static void
close_top(struct pst_mime_parser *p, uint64_t end)
{
    struct frame *f = top(p);
    struct pst_mime_part *part = f->part;

    if (end < part->body_start)
        end = part->body_start;
    if (f->st != FS_EPILOGUE || part->container)
        part->body_end = end;
    switch (f->st) {
    case FS_HEADERS:
        /* handled by the caller (end_headers first) */
        break;
    case FS_PREAMBLE:
        /* No delimiter ever came: the multipart is a leaf holding its
         * whole body text, as readers show it. */
        flag(p, part, PST_MIME_F_NO_START);
        part->container = false;
        set_section(p, f, false);
        p->nbounds--;
        dec_finish(p, part);
        break;
    case FS_BODY:
        dec_finish(p, part);
        break;
    case FS_PARTS:
        flag(p, part, PST_MIME_F_NO_CLOSE);
        p->nbounds--;
        break;
    case FS_EPILOGUE:
        if (!part->container) {
            /* a leaf already (see on_delimiter): ended before */
            p->nfr--;
            return;
        }
        break;
    case FS_MESSAGE:
        break;
    }
    if (p->cb.on_part_end)
        p->cb.on_part_end(p->arg, part);
    p->nfr--;
}

/* Close frames until depth keep (number of frames left). */
static void
close_to(struct pst_mime_parser *p, unsigned keep, uint64_t at, uint64_t end)
{
    while (p->nfr > keep) {
        struct frame *f = top(p);
        if (f->st == FS_HEADERS) {
            end_headers(p, at);
            continue;               /* may have opened an embedded message */
        }
        close_top(p, end);
    }
}

/* Which open multipart, if any, has line as a delimiter; *close set for
 * "--boundary--". Innermost first; a multipart in its preamble last. */
static bool
delim_of(const struct frame *f, const uint8_t *s, size_t n, bool *close)
{
    size_t bl = f->blen;
    const uint8_t *r, *e = s + n;

    if (n < 2 + bl || memcmp(s + 2, f->part->boundary, bl) != 0)
        return false;
    r = s + 2 + bl;
    *close = e - r >= 2 && r[0] == '-' && r[1] == '-';
    if (*close)
        r += 2;
    while (r < e && (*r == ' ' || *r == '\t'))
        r++;
    return r == e;
}

static int
match_delim(struct pst_mime_parser *p, const uint8_t *s, size_t n,
            bool *close)
{
    int pre = -1;

    if (n < 3 || s[0] != '-' || s[1] != '-')
        return -1;
    for (int i = (int)p->nfr - 1; i >= 0; i--) {
        const struct frame *f = &p->fr[i];
        if (f->st == FS_PREAMBLE)
            pre = i;
        else if (f->st == FS_PARTS && delim_of(f, s, n, close))
            return i;
    }
    if (pre >= 0 && delim_of(&p->fr[pre], s, n, close))
        return pre;
    return -1;
}

static void
on_delimiter(struct pst_mime_parser *p, int k, bool close)
{
    uint64_t end = p->line_start - p->prev_eol;
    uint64_t next = p->off;         /* after this line */

    /* An empty part between two delimiters ("--b" twice) is not a part:
     * nothing was written for it, not even a blank line. The open child
     * simply starts again after this line. */
    if (p->nfr == (unsigned)k + 2 && top(p)->st == FS_HEADERS &&
        top(p)->lines == 0) {
        struct pst_mime_part *c = top(p)->part;
        if (!close) {
            c->header_start = c->body_start = c->body_end = next;
            return;
        }
        p->nfr--;
        part_drop_last(p, c);
    }
    close_to(p, (unsigned)k + 1, p->line_start, end);
    struct frame *f = &p->fr[k];
    if (close) {
        if (f->st == FS_PREAMBLE) {
            /* A close delimiter before any other: no parts at all. */
            close_top(p, end);
            p->nfr++;               /* keep the frame, as an epilogue */
        } else {
            p->nbounds--;
        }
        f->st = FS_EPILOGUE;
        p->decoding = false;
        p->pend_eol = 0;
        return;
    }
    if (f->st == FS_PREAMBLE) {
        f->st = FS_PARTS;
        f->part->decoded_size = 0;
        p->decoding = false;
        p->pend_eol = 0;
    }
    child_new(p, f, next);
}

/* ---- lines ---- */

enum hl { HL_DONE, HL_AGAIN };

static enum hl
header_line(struct pst_mime_parser *p, const uint8_t *s, size_t n,
            unsigned eol)
{
    struct frame *f = top(p);
    size_t i = 0, j;

    f->lines++;
    if (n == 0) {
        end_headers(p, p->off);
        return HL_DONE;
    }
    if (s[0] == ' ' || s[0] == '\t') {
        if (!p->field_open) {
            if (!p->block_over)
                flag(p, f->part, PST_MIME_F_ORPHAN_CONTINUATION);
            return HL_DONE;
        }
        if (header_budget(p, n + eol_len(eol))) {
            pst_tbuf_add(&p->field, s, n);
            pst_tbuf_add(&p->field, eol_bytes(eol), eol_len(eol));
            p->field_eol = eol;
        }
        return HL_DONE;
    }
    if (n >= 5 && memcmp(s, "From ", 5) == 0) {
        field_finish(p);            /* mbox envelope line: not a field */
        return HL_DONE;
    }
    while (i < n && is_name_char(s[i]))
        i++;
    for (j = i; j < n && (s[j] == ' ' || s[j] == '\t'); j++)
        ;
    if (j < n && s[j] == ':') {
        field_finish(p);
        if (i == 0)
            return HL_DONE;         /* ":value" has no name: skipped */
        if (!p->block_over && p->nfv + 1 > p->lim.header_fields) {
            flag(p, f->part, PST_MIME_F_HEADER_FIELDS);
            p->block_over = true;
        }
        if (header_budget(p, n + eol_len(eol))) {
            pst_tbuf_reset(&p->field);
            pst_tbuf_add(&p->field, s, n);
            pst_tbuf_add(&p->field, eol_bytes(eol), eol_len(eol));
            p->field_eol = eol;
            p->field_open = true;
            p->field_off = p->line_start;
        }
        return HL_DONE;
    }
    /* Not a header field: the body begins with this line. */
    flag(p, f->part, PST_MIME_F_NO_SEPARATOR);
    end_headers(p, p->line_start);
    return HL_AGAIN;
}

/* A complete line kept in p->line (LM_FULL or LM_PREFIX). */
static void
line_complete(struct pst_mime_parser *p, const uint8_t *s, size_t n,
              unsigned eol)
{
    for (;;) {
        bool close;
        int k;
        if (p->nbounds && n <= LINE_MAX_BODY &&
            (k = match_delim(p, s, n, &close)) >= 0) {
            on_delimiter(p, k, close);
            return;
        }
        struct frame *f = top(p);
        if (f->st == FS_HEADERS) {
            if (header_line(p, s, n, eol) == HL_AGAIN)
                continue;
            return;
        }
        if (p->decoding) {
            emit_pend_eol(p);
            emit(p, s, n);
            p->pend_eol = eol;
        }
        return;
    }
}

static void
line_begin(struct pst_mime_parser *p)
{
    struct frame *f = top(p);

    p->line_start = p->off;
    pst_tbuf_reset(&p->line);
    p->held_cr = false;
    if (f->st == FS_HEADERS)
        p->lmode = LM_FULL;
    else if (p->nbounds == 0)
        p->lmode = LM_PASS;
    else
        p->lmode = LM_PREFIX;
}

/* An LM_FULL line outgrew what a header line may be. */
static void
full_overflow(struct pst_mime_parser *p)
{
    const uint8_t *s = (const uint8_t *)p->line.p;
    size_t n = p->line.len, i = 0;

    while (i < n && is_name_char(s[i]))
        i++;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    if (s[0] == ' ' || s[0] == '\t' || (i < n && s[i] == ':')) {
        /* A field too big for the limits. */
        field_finish(p);
        flag(p, top(p)->part, PST_MIME_F_HEADER_BYTES);
        p->block_over = true;
        p->lmode = LM_SKIP;
        top(p)->lines++;
        return;
    }
    /* A long line that is no field: the body starts here. It is too long
     * to be a delimiter, so it streams out. */
    flag(p, top(p)->part, PST_MIME_F_NO_SEPARATOR);
    while (p->nfr && top(p)->st == FS_HEADERS)
        end_headers(p, p->line_start);
    p->lmode = LM_EMIT;
    if (p->decoding) {
        emit_pend_eol(p);
        emit_line(p, s, n);
    }
}

static size_t
full_cap(struct pst_mime_parser *p)
{
    uint64_t room = 0;
    if (!p->block_over) {
        uint64_t b = p->lim.header_bytes - p->block_bytes;
        uint64_t t = p->lim.total_header_bytes - p->total_header_bytes;
        room = PST_MIN(b, t);
    }
    return (size_t)PST_MAX(room, (uint64_t)LINE_MAX_BODY);
}

/* A piece of the current line, without '\n'. */
static void
line_piece(struct pst_mime_parser *p, const uint8_t *s, size_t n)
{
    if (n == 0)
        return;
    switch (p->lmode) {
    case LM_FULL: {
        size_t cap = full_cap(p);
        if (p->line.len + n <= cap) {
            pst_tbuf_add(&p->line, s, n);
            return;
        }
        size_t k = cap - p->line.len;
        pst_tbuf_add(&p->line, s, k);
        full_overflow(p);
        if (p->lmode == LM_EMIT && p->decoding)
            emit_line(p, s + k, n - k);
        else if (p->lmode != LM_FULL)
            p->held_cr = s[n - 1] == '\r';
        return;
    }
    case LM_PREFIX: {
        size_t k = PST_MIN(n, (size_t)LINE_MAX_BODY + 1 - p->line.len);
        pst_tbuf_add(&p->line, s, k);
        const char *l = p->line.p;
        if (k == n && l[0] == '-' && (p->line.len < 2 || l[1] == '-'))
            return;                 /* may still be a delimiter */
        p->lmode = LM_EMIT;
        if (p->decoding) {
            emit_pend_eol(p);
            emit_line(p, (const uint8_t *)l, p->line.len);
            emit_line(p, s + k, n - k);
        } else {
            p->held_cr = (k < n ? s[n - 1] : l[p->line.len - 1]) == '\r';
        }
        return;
    }
    case LM_EMIT:
        if (p->decoding)
            emit_line(p, s, n);
        else
            p->held_cr = s[n - 1] == '\r';
        return;
    case LM_SKIP:
    case LM_PASS:
        /* not kept, but whether a CR ends it: the line end's length
         * decides where a part before a delimiter ends */
        p->held_cr = s[n - 1] == '\r';
        return;
    }
}

static void
line_end(struct pst_mime_parser *p, bool eof)
{
    unsigned eol = eof ? EOL_NONE : EOL_LF;
    const uint8_t *s = (const uint8_t *)p->line.p;
    size_t n = p->line.len;

    switch (p->lmode) {
    case LM_FULL:
    case LM_PREFIX:
        if (n && s[n - 1] == '\r') {
            n--;
            eol = eof ? EOL_CR : EOL_CRLF;
        }
        line_complete(p, s, n, eol);
        break;
    case LM_EMIT:
        if (p->held_cr) {
            eol = eof ? EOL_CR : EOL_CRLF;
            p->held_cr = false;
        }
        if (p->decoding)
            p->pend_eol = eol;
        break;
    case LM_SKIP:
    case LM_PASS:
        if (p->held_cr)
            eol = eof ? EOL_CR : EOL_CRLF;
        p->held_cr = false;
        break;
    }
    p->prev_eol = eol_len(eol);
}

/* ---- public ---- */

/* pst_mime_parser_new - a parser with its empty model, expecting the root
 * header. */
struct pst_mime_parser *
pst_mime_parser_new(const struct pst_mime_limits *lim,
                    const struct pst_mime_callbacks *cb, void *arg)
{
    struct pst_mime_parser *p = pst_xcalloc(1, sizeof(*p));

    if (lim)
        p->lim = *lim;
    else
        pst_mime_limits_default(&p->lim);
    if (p->lim.depth > PST_MIME_DEPTH_MAX)
        p->lim.depth = PST_MIME_DEPTH_MAX;
    if (p->lim.parts == 0)
        p->lim.parts = 1;
    if (cb)
        p->cb = *cb;
    p->arg = arg;
    p->msg = pst_xcalloc(1, sizeof(*p->msg));
    p->msg->arena = pst_xcalloc(1, sizeof(*p->msg->arena));
    p->fr = pst_xcalloc(p->lim.depth + 2, sizeof(*p->fr));
    p->decbuf = pst_xmalloc(PST_DEC_OUT(DEC_CHUNK));
    pst_tbuf_init(&p->line);
    pst_tbuf_init(&p->field);
    p->msg->root = part_new(p, NULL, 0);
    push(p, p->msg->root);
    line_begin(p);
    return p;
}

/* pst_mime_feed - parse the next fragment of the message. */
int
pst_mime_feed(struct pst_mime_parser *p, const void *data, size_t len)
{
    const uint8_t *d = data, *end = d + len;

    while (d < end) {
        if (p->lmode == LM_PASS) {
            /* Nothing can end this body: stream the rest through. */
            if (p->decoding) {
                emit_pend_eol(p);
                emit(p, d, (size_t)(end - d));
            }
            p->off += (uint64_t)(end - d);
            break;
        }
        const uint8_t *nl = memchr(d, '\n', (size_t)(end - d));
        const uint8_t *stop = nl ? nl : end;
        line_piece(p, d, (size_t)(stop - d));
        p->off += (uint64_t)(stop - d);
        d = stop;
        if (nl) {
            p->off++;
            d++;
            line_end(p, false);
            line_begin(p);
        }
    }
    p->msg->size = p->off;
    return 0;
}

/* pst_mime_finish - end of input: close every open part, return the model,
 * free the parser. */
struct pst_msg *
pst_mime_finish(struct pst_mime_parser *p)
{
    struct pst_msg *m;

    if (p->off > p->line_start && p->lmode != LM_PASS)
        line_end(p, true);          /* a last line without its line end */
    /* A body cut off inside a multipart loses its last line end, as if a
     * delimiter followed (readers agree). */
    bool in_parts = false;
    for (unsigned i = 0; i + 1 < p->nfr; i++)
        if (p->fr[i].st == FS_PARTS)
            in_parts = true;
    uint64_t end = p->off;
    if (p->decoding && p->pend_eol) {
        if (in_parts)
            end -= eol_len(p->pend_eol);
        else
            emit_pend_eol(p);
    }
    p->prev_eol = (unsigned)(p->off - end);
    p->line_start = p->off;
    close_to(p, 0, p->off, end);
    m = p->msg;
    m->size = p->off;
    p->msg = NULL;
    pst_mime_parser_free(p);
    return m;
}

/* pst_mime_parser_free - abandon a parse and everything it built. */
void
pst_mime_parser_free(struct pst_mime_parser *p)
{
    if (p == NULL)
        return;
    if (p->msg)
        pst_msg_free(p->msg);
    pst_tbuf_free(&p->line);
    pst_tbuf_free(&p->field);
    free(p->fv);
    free(p->fr);
    free(p->decbuf);
    free(p);
}

/* pst_mime_headers_done - whether the root header block is complete. */
bool
pst_mime_headers_done(const struct pst_mime_parser *p)
{
    return p->headers_done;
}

/* pst_mime_root - the root part of the model being built. */
const struct pst_mime_part *
pst_mime_root(const struct pst_mime_parser *p)
{
    return p->msg->root;
}

/* pst_msg_free - release a model. */
void
pst_msg_free(struct pst_msg *m)
{
    if (m == NULL)
        return;
    for (unsigned i = 0; i < m->nparts; i++) {
        pst_params_free(&m->parts[i]->params);
        pst_params_free(&m->parts[i]->dparams);
    }
    free(m->parts);
    ar_free(m->arena);
    free(m);
}

/* pst_mime_field - the nth field of a part's header with that name. */
const struct pst_hdr_field *
pst_mime_field(const struct pst_mime_part *part, const char *name,
               unsigned nth)
{
    for (unsigned i = 0; i < part->nfields; i++)
        if (pst_strcaseeq(part->fields[i].name, name) && nth-- == 0)
            return &part->fields[i];
    return NULL;
}

/* ---- decoded body reader ---- */

#define RD_BLOCK 16384
/* Decoded octets between two seek checkpoints: a seek decodes at most
 * this plus one block again. */
#define RD_CK_SPACING (64u * 1024)

struct rd_ckpt {                    /* where decoding can restart */
    uint64_t pos;                   /* encoded offset of a block start */
    uint64_t dout;                  /* decoded offset there */
    struct pst_decoder dec;         /* decoder state there */
};

struct pst_mime_reader {
    pst_mime_read_fn fn;
    void *arg;
    const uint8_t *mem;
    uint64_t pos, end;
    struct pst_decoder dec;
    bool eof;
    uint64_t blk_dout;              /* decoded offset of out[0] */
    struct rd_ckpt *ck;             /* ascending dout; ck[0] the start */
    size_t nck, cck;
    uint8_t in[RD_BLOCK];
    uint8_t out[PST_DEC_OUT(RD_BLOCK)];
    size_t olen, opos;
};

static void
ckpt_add(struct pst_mime_reader *r)
{
    if (r->nck && r->blk_dout < r->ck[r->nck - 1].dout + RD_CK_SPACING)
        return;
    if (r->nck == r->cck) {
        r->cck = r->cck ? r->cck * 2 : 8;
        r->ck = pst_xrealloc(r->ck, r->cck * sizeof(*r->ck));
    }
    r->ck[r->nck++] = (struct rd_ckpt){r->pos, r->blk_dout, r->dec};
}

static struct pst_mime_reader *
reader_new(const struct pst_mime_part *part)
{
    struct pst_mime_reader *r = pst_xcalloc(1, sizeof(*r));
    r->pos = part->body_start;
    r->end = part->body_end;
    pst_dec_init(&r->dec, part->container ? PST_CTE_7BIT : part->cte);
    return r;
}

/* pst_mime_reader_open - read a part's decoded body back from a stored file. */
/* pread on the fd in arg, again after EINTR. */
static ssize_t
fd_read(void *arg, void *buf, size_t len, uint64_t off)
{
    ssize_t n;
    do
        n = pread((int)(intptr_t)arg, buf, len, (off_t)off);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

struct pst_mime_reader *
pst_mime_reader_open(int fd, const struct pst_mime_part *part)
{
    return pst_mime_reader_open_fn(fd_read, (void *)(intptr_t)fd, part);
}

/* pst_mime_reader_open_fn - read a part's decoded body through fn. */
struct pst_mime_reader *
pst_mime_reader_open_fn(pst_mime_read_fn fn, void *arg,
                        const struct pst_mime_part *part)
{
    struct pst_mime_reader *r = reader_new(part);
    r->fn = fn;
    r->arg = arg;
    return r;
}

/* pst_mime_reader_open_mem - read a part's decoded body back from memory. */
struct pst_mime_reader *
pst_mime_reader_open_mem(const void *msg, size_t len,
                         const struct pst_mime_part *part)
{
    struct pst_mime_reader *r = reader_new(part);
    r->mem = msg;
    if (r->end > len)
        r->end = len;
    if (r->pos > r->end)
        r->pos = r->end;
    return r;
}

/* pst_mime_reader_read - next decoded octets; 0 at the end, -errno on a read
 * error. */
ssize_t
pst_mime_reader_read(struct pst_mime_reader *r, void *buf, size_t len)
{
    while (r->opos == r->olen) {
        if (r->eof)
            return 0;
        r->blk_dout += r->olen;
        r->opos = r->olen = 0;
        if (r->pos >= r->end) {
            r->olen = pst_dec_final(&r->dec, r->out);
            r->eof = true;
            continue;
        }
        ckpt_add(r);
        size_t want = (size_t)PST_MIN(r->end - r->pos, (uint64_t)RD_BLOCK);
        const uint8_t *src;
        if (r->mem) {
            src = r->mem + r->pos;
        } else {
            ssize_t got = r->fn(r->arg, r->in, want, r->pos);
            if (got < 0)
                return (ssize_t)got;
            if (got == 0 || (size_t)got > want)
                return -EIO;        /* the text is shorter than the model */
            want = (size_t)got;
            src = r->in;
        }
        r->pos += want;
        r->olen = pst_dec_update(&r->dec, src, want, r->out);
    }
    size_t k = PST_MIN(len, r->olen - r->opos);
    memcpy(buf, r->out + r->opos, k);
    r->opos += k;
    return (ssize_t)k;
}

/* pst_mime_reader_tell - the decoded offset of the next octet read. */
uint64_t
pst_mime_reader_tell(const struct pst_mime_reader *r)
{
    return r->blk_dout + r->opos;
}

/* pst_mime_reader_seek - see mime.h. */
int
pst_mime_reader_seek(struct pst_mime_reader *r, uint64_t off)
{
    if (off < r->blk_dout || (off > r->blk_dout + r->olen && !r->eof)) {
        /* Outside the block in hand: restart from the last checkpoint at
         * or before off, unless reading on from here is shorter. */
        size_t lo = 0, hi = r->nck;
        while (hi - lo > 1) {
            size_t mid = (lo + hi) / 2;
            if (r->ck[mid].dout <= off)
                lo = mid;
            else
                hi = mid;
        }
        if (r->nck &&
            (off < r->blk_dout || r->ck[lo].dout > r->blk_dout + r->olen)) {
            r->pos = r->ck[lo].pos;
            r->dec = r->ck[lo].dec;
            r->blk_dout = r->ck[lo].dout;
            r->olen = r->opos = 0;
            r->eof = false;
        }
    }
    while (off > r->blk_dout + r->olen) {
        if (r->eof) {
            r->opos = r->olen;      /* past the end: reads give 0 */
            return 0;
        }
        r->opos = r->olen;
        uint8_t c;
        ssize_t k = pst_mime_reader_read(r, &c, 1);
        if (k < 0)
            return (int)k;
    }
    r->opos = (size_t)(off - r->blk_dout);
    return 0;
}

/* pst_mime_reader_bad - whether the encoding was broken in what was read. */
bool
pst_mime_reader_bad(const struct pst_mime_reader *r)
{
    return pst_dec_bad(&r->dec);
}

/* pst_mime_reader_close - release a reader (not the fd). */
void
pst_mime_reader_close(struct pst_mime_reader *r)
{
    if (r == NULL)
        return;
    free(r->ck);
    free(r);
}
