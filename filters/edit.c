/*
 * edit.c - the edit engine: the header view filters see, the edits they
 * ask for, and the edit blob the spool commits.
 *
 * The view is the model's header: the fields of the root part as
 * core/mime.c parsed them (the one parse of a message header; chain.c
 * runs the parser over at least the header of every message). Each field
 * points at the model's name, value and raw octets (its line end
 * included) and knows where they are in the text; what the parser does
 * not take for a field (an mbox "From " line, a continuation with no field
 * before it, a line starting with ':') is not in the view, and a line that
 * is no field ends the header, as it does for the model and for readers.
 * The view's bounds are the model's (mime.limits.header_bytes and
 * header_fields); a header past them, whose last fields the model
 * dropped, is seen only in part and cannot be edited (edits return
 * -E2BIG), nor can one whose fields end past PST_EDITS_HDR_MAX.
 *
 * An edit changes the view at once (so the next filter sees it) and marks
 * the field; nothing is written into the original. pst_fsess_edits walks
 * the final view beside the model's fields and writes "keep original
 * range" for every untouched field and for the octets between fields
 * (the lines the parser passed over stay where they were), and the new
 * text for the rest (queue/edits.h), so untouched fields stay
 * byte-identical. A field added at the end of the header goes after the
 * model's last field.
 *
 * New field text is folded at blanks to lines of at most 78 characters
 * where possible (no line beyond 998), and unless the message is SMTPUTF8
 * runs of words with non-ASCII bytes are RFC 2047 encoded (UTF-8, B).
 */
#include "filters/chain_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/log.h"

#define FOLD_AT 78
#define LINE_MAX_HARD 998

/* log_name - a field name for the log: quoted and escaped (a name taken
 * from the message may hold anything up to its colon, line ends too). */
static const char *
log_name(char *dst, size_t n, const char *name)
{
    return pst_log_quote(dst, n, name, strlen(name));
}

static struct pst__vhdr *
view_insert(struct pst_fsess *fs, size_t at)
{
    if (fs->nv == fs->cv) {
        fs->cv = fs->cv ? fs->cv * 2 : 32;
        fs->v = pst_xrealloc(fs->v, fs->cv * sizeof(*fs->v));
    }
    memmove(fs->v + at + 1, fs->v + at, (fs->nv - at) * sizeof(*fs->v));
    fs->nv++;
    memset(&fs->v[at], 0, sizeof(fs->v[at]));
    return &fs->v[at];
}

/* pst__view_build - the view of the header of root, the model's root part
 * with its fields complete (once). */
void
pst__view_build(struct pst_fsess *fs, const struct pst_mime_part *root)
{
    if (fs->view_built)
        return;
    fs->view_built = true;
    fs->hroot = root;
    fs->hdr_end = 0;
    for (unsigned i = 0; i < root->nfields; i++) {
        const struct pst_hdr_field *f = &root->fields[i];
        struct pst__vhdr *v = view_insert(fs, fs->nv);
        v->pub.name = f->name;
        v->pub.name_len = strlen(f->name);
        v->pub.value = f->value;
        v->pub.raw = f->raw;
        v->pub.raw_len = f->len;
        v->pub.orig = (int)i;
        v->off = f->offset;
        v->len = f->len;
        fs->hdr_end = f->offset + f->len;
    }
    fs->hdr_trunc = (root->flags & (PST_MIME_F_HEADER_BYTES |
                                    PST_MIME_F_HEADER_FIELDS)) != 0 ||
                    fs->hdr_end > PST_EDITS_HDR_MAX;
}

void
pst__view_free(struct pst_fsess *fs)
{
    for (size_t i = 0; i < fs->nv; i++) {
        free(fs->v[i].own_name);
        free(fs->v[i].own_value);
        free(fs->v[i].own_raw);
    }
    free(fs->v);
    fs->v = NULL;
    fs->nv = fs->cv = 0;
    for (size_t i = 0; i < fs->nbr; i++)
        free(fs->br[i].data);
    free(fs->br);
    fs->br = NULL;
    fs->nbr = 0;
    fs->hroot = NULL;
    fs->hdr_trunc = fs->view_built = fs->edited = false;
    fs->hdr_end = 0;
}

/* ---- reading the view ---- */

static bool
in_msg_phase(struct pst_fctx *fc)
{
    return fc->fs->in_msg && fc->fs->view_built;
}

size_t
pst_hdr_count(struct pst_fctx *fc)
{
    return in_msg_phase(fc) ? fc->fs->nv : 0;
}

const struct pst_hdr *
pst_hdr_at(struct pst_fctx *fc, size_t i)
{
    if (!in_msg_phase(fc) || i >= fc->fs->nv)
        return NULL;
    return &fc->fs->v[i].pub;
}

long
pst_hdr_find(struct pst_fctx *fc, const char *name, size_t from)
{
    if (!in_msg_phase(fc))
        return -1;
    for (size_t i = from; i < fc->fs->nv; i++)
        if (pst_strcaseeq(fc->fs->v[i].pub.name, name))
            return (long)i;
    return -1;
}

/* ---- building field text ---- */

bool
pst_hdr_name_valid(const char *n)
{
    if (n == NULL || n[0] == '\0' || strlen(n) > 76)
        return false;
    for (const char *p = n; *p; p++)
        if (*p < 33 || *p > 126 || *p == ':')
            return false;
    return true;
}

static bool
value_valid(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p == '\r' || *p == '\n')
            return false;
    return strlen(v) <= PST_HDR_EDIT_MAX;
}

static bool
needs_encoding(const char *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)w[i] >= 0x80)
            return true;
    return n >= 2 && w[0] == '=' && w[1] == '?';
}

/* Encode s[0..n) as encoded words of at most 75 characters, split only
 * between UTF-8 characters, separated by a blank. */
static void
encode_words(struct pst_tbuf *o, const char *s, size_t n)
{
    /* "=?UTF-8?B?" + 60 base64 chars + "?=" = 72: 45 input bytes */
    size_t i = 0;
    bool first = true;
    while (i < n) {
        size_t take = PST_MIN((size_t)45, n - i);
        if (i + take < n)
            while (take > 1 &&
                   ((unsigned char)s[i + take] & 0xc0) == 0x80)
                take--;
        if (!first)
            pst_tbuf_add(o, " ", 1);
        char w[PST_B64_ENC_OUT(45) + 1];
        pst_tbuf_add(o, "=?UTF-8?B?", 10);
        pst_tbuf_add(o, w, pst_b64_encode(s + i, take, w));
        pst_tbuf_add(o, "?=", 2);
        first = false;
        i += take;
    }
}

/* The value with runs of words that need it encoded. */
static void
encode_value(struct pst_tbuf *o, const char *v)
{
    size_t n = strlen(v), i = 0;
    while (i < n) {
        /* copy blanks */
        size_t ws = i;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        pst_tbuf_add(o, v + ws, i - ws);
        if (i >= n)
            break;
        size_t ws_end = i, we = i;
        while (we < n && v[we] != ' ' && v[we] != '\t')
            we++;
        if (!needs_encoding(v + i, we - i)) {
            pst_tbuf_add(o, v + i, we - i);
            i = we;
            continue;
        }
        /* a run of words to encode, blanks between them included */
        size_t run_end = we;
        for (;;) {
            size_t j = run_end;
            while (j < n && (v[j] == ' ' || v[j] == '\t'))
                j++;
            size_t k = j;
            while (k < n && v[k] != ' ' && v[k] != '\t')
                k++;
            if (k == j || !needs_encoding(v + j, k - j))
                break;
            run_end = k;
        }
        encode_words(o, v + ws_end, run_end - ws_end);
        i = run_end;
    }
}

/*
 * Fold "name: value" into a CRLF-ended field: break at a blank when the
 * line would pass FOLD_AT. Returns NULL if a line would pass 998.
 */
static char *
fold_field(const char *name, const char *value, size_t vlen, size_t *outlen)
{
    struct pst_tbuf o = {0};
    size_t col, i = 0;
    pst_tbuf_add(&o, name, strlen(name));
    pst_tbuf_add(&o, ":", 1);
    col = strlen(name) + 1;
    while (i < vlen) {
        /* next token: blanks then a word */
        size_t j = i;
        while (j < vlen && (value[j] == ' ' || value[j] == '\t'))
            j++;
        size_t k = j;
        while (k < vlen && value[k] != ' ' && value[k] != '\t')
            k++;
        size_t blanks = j - i, word = k - j;
        if (i == 0 && blanks == 0) {
            pst_tbuf_add(&o, " ", 1);   /* "Name: value" */
            col++;
        }
        if (col + blanks + word > FOLD_AT && col > strlen(name) + 2 &&
            blanks > 0) {
            pst_tbuf_add(&o, "\r\n", 2);
            col = 0;
        }
        pst_tbuf_add(&o, value + i, k - i);
        col += k - i;
        if (col > LINE_MAX_HARD) {
            pst_tbuf_free(&o);
            return NULL;
        }
        i = k;
    }
    pst_tbuf_add(&o, "\r\n", 3);   /* with the NUL */
    *outlen = o.len - 1;
    return (char *)o.p;
}

char *
pst_hdr_encode(struct pst_fctx *fc, const char *text)
{
    struct pst_tbuf o = {0};
    if (!in_msg_phase(fc) || !value_valid(text))
        return NULL;
    if (fc->fs->smtputf8)
        return pst_xstrdup(text);
    encode_value(&o, text);
    return pst_tbuf_cstr(&o);
}

static int
edit_check(struct pst_fctx *fc)
{
    struct pst_fsess *fs = fc->fs;
    if (!in_msg_phase(fc))
        return -EINVAL;
    if (fs->hdr_trunc)
        return -E2BIG;
    return 0;
}

/* Set v's text to name: value (value encoded unless raw). */
static int
set_field(struct pst_fctx *fc, struct pst__vhdr *v, const char *name,
          const char *value, bool raw)
{
    struct pst_tbuf ev = {0};
    size_t rl;
    char *r;
    if (!raw && !fc->fs->smtputf8) {
        encode_value(&ev, value);
        pst_tbuf_add(&ev, "", 1);
        value = (const char *)ev.p;
    }
    r = fold_field(name, value, strlen(value), &rl);
    if (r == NULL) {
        pst_tbuf_free(&ev);
        return -E2BIG;
    }
    char *nv = pst_xstrdup(value);
    char *nn = pst_xstrdup(name);
    pst_tbuf_free(&ev);
    free(v->own_name);
    free(v->own_value);
    free(v->own_raw);
    v->own_name = nn;
    v->own_value = nv;
    v->own_raw = r;
    v->pub.name = nn;
    v->pub.name_len = strlen(nn);
    v->pub.value = nv;
    v->pub.raw = r;
    v->pub.raw_len = rl;
    v->pub.changed = true;
    fc->fs->edited = true;
    return 0;
}

/* fields_max - how many fields the view may hold: the model's bound on
 * a header block, so an edited header is one the model could read. */
static size_t
fields_max(const struct pst_fsess *fs)
{
    struct pst_mime_limits d;
    if (fs->mime_limits)
        return fs->mime_limits->header_fields;
    pst_mime_limits_default(&d);
    return d.header_fields;
}

static int
hdr_add(struct pst_fctx *fc, const char *name, const char *value, bool top,
        bool raw)
{
    int rc = edit_check(fc);
    if (rc < 0)
        return rc;
    if (!pst_hdr_name_valid(name) || value == NULL || !value_valid(value))
        return -EINVAL;
    if (fc->fs->nv >= fields_max(fc->fs))
        return -E2BIG;
    struct pst__vhdr tmp = {0};
    rc = set_field(fc, &tmp, name, value, raw);
    if (rc < 0)
        return rc;
    tmp.pub.orig = -1;
    tmp.pub.changed = false;
    struct pst__vhdr *v = view_insert(fc->fs, top ? 0 : fc->fs->nv);
    *v = tmp;
    char qn[128];
    pst_debug("sess=%016" PRIx64 " event=hdr_edit filter=%s op=add name=%s",
              fc->fs->id, fc->e->f->name, log_name(qn, sizeof(qn), name));
    return 0;
}

int
pst_hdr_add(struct pst_fctx *fc, const char *name, const char *value,
            bool top)
{
    return hdr_add(fc, name, value, top, false);
}

int
pst_hdr_add_raw(struct pst_fctx *fc, const char *name, const char *value,
                bool top)
{
    return hdr_add(fc, name, value, top, true);
}

int
pst_hdr_remove(struct pst_fctx *fc, size_t i)
{
    struct pst_fsess *fs = fc->fs;
    int rc = edit_check(fc);
    if (rc < 0)
        return rc;
    if (i >= fs->nv)
        return -EINVAL;
    char qn[128];
    pst_debug("sess=%016" PRIx64 " event=hdr_edit filter=%s op=remove "
              "name=%s", fs->id, fc->e->f->name,
              log_name(qn, sizeof(qn), fs->v[i].pub.name));
    free(fs->v[i].own_name);
    free(fs->v[i].own_value);
    free(fs->v[i].own_raw);
    memmove(fs->v + i, fs->v + i + 1, (fs->nv - i - 1) * sizeof(*fs->v));
    fs->nv--;
    fs->edited = true;
    return 0;
}

static int
hdr_replace(struct pst_fctx *fc, size_t i, const char *value, bool raw)
{
    struct pst_fsess *fs = fc->fs;
    int rc = edit_check(fc);
    if (rc < 0)
        return rc;
    if (i >= fs->nv || value == NULL || !value_valid(value))
        return -EINVAL;
    char *name = pst_xstrdup(fs->v[i].pub.name);
    rc = set_field(fc, &fs->v[i], name, value, raw);
    free(name);
    char qn[128];
    if (rc == 0)
        pst_debug("sess=%016" PRIx64 " event=hdr_edit filter=%s op=replace "
                  "name=%s", fs->id, fc->e->f->name,
                  log_name(qn, sizeof(qn), fs->v[i].pub.name));
    return rc;
}

int
pst_hdr_replace(struct pst_fctx *fc, size_t i, const char *value)
{
    return hdr_replace(fc, i, value, false);
}

int
pst_hdr_replace_raw(struct pst_fctx *fc, size_t i, const char *value)
{
    return hdr_replace(fc, i, value, true);
}

/* pst_part_replace - see filter.h. */
int
pst_part_replace(struct pst_fctx *fc, uint64_t off, uint64_t len,
                 const void *data, size_t n)
{
    struct pst_fsess *fs = fc->fs;
    if (!in_msg_phase(fc) || off < fs->hroot->body_start ||
        off + len < off || off + len > fs->msg_bytes)
        return -EINVAL;
    if (n > PST_EDITS_MAX / 2)
        return -E2BIG;
    size_t at = 0;
    while (at < fs->nbr && fs->br[at].off < off)
        at++;
    if ((at > 0 && fs->br[at - 1].off + fs->br[at - 1].len > off) ||
        (at < fs->nbr && off + len > fs->br[at].off))
        return -EINVAL;             /* overlaps another replacement */
    fs->br = pst_xrealloc(fs->br, (fs->nbr + 1) * sizeof(*fs->br));
    memmove(fs->br + at + 1, fs->br + at, (fs->nbr - at) * sizeof(*fs->br));
    fs->br[at].off = off;
    fs->br[at].len = len;
    fs->br[at].data = pst_xmalloc(n ? n : 1);
    memcpy(fs->br[at].data, data, n);
    fs->br[at].n = n;
    fs->nbr++;
    fs->edited = true;
    pst_info("sess=%016" PRIx64 " event=part_edit filter=%s off=%" PRIu64
             " len=%" PRIu64 " new_len=%zu", fs->id, fc->e->f->name, off,
             len, n);
    return 0;
}

/* pst_part_remove - see filter.h. */
int
pst_part_remove(struct pst_fctx *fc, const struct pst_mime_part *part,
                const char *notice)
{
    if (part == NULL || part->parent == NULL || part->container ||
        notice == NULL || strlen(notice) > 900)
        return -EINVAL;
    for (const char *c = notice; *c; c++)
        if (*c < 0x20 || *c > 0x7e)
            return -EINVAL;
    /* one line: only a line that starts with "--" can be a delimiter */
    for (const struct pst_mime_part *a = part->parent; a; a = a->parent)
        if (a->boundary && notice[0] == '-' && notice[1] == '-' &&
            strncmp(notice + 2, a->boundary, strlen(a->boundary)) == 0)
            return -EINVAL;
    char *text = pst_xasprintf("Content-Type: text/plain; charset=us-ascii\r\n"
                               "Content-Disposition: inline\r\n"
                               "\r\n%s\r\n", notice);
    /* the part's body ends before the CRLF of the next delimiter, which
     * stays; so the text's last CRLF is dropped to keep one line end */
    size_t n = strlen(text) - 2;
    int rc = pst_part_replace(fc, part->header_start,
                              part->body_end - part->header_start, text, n);
    free(text);
    if (rc == 0)
        pst_info("sess=%016" PRIx64 " event=part_removed filter=%s "
                 "section=%s type=%s", fc->fs->id, fc->e->f->name,
                 part->section ? part->section : "?",
                 part->content_type ? part->content_type : "?");
    return rc;
}

/* ---- envelope ---- */

static bool
addr_valid(const char *a, bool empty_ok)
{
    size_t n = strlen(a), at = 0;
    if (n == 0)
        return empty_ok;
    if (n > 256)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c <= ' ' || c == 0x7f || c == '<' || c == '>')
            return false;
        if (c == '@')
            at++;
    }
    return at >= 1 && a[0] != '@' && a[n - 1] != '@';
}

int
pst_env_set_sender(struct pst_fctx *fc, const char *addr)
{
    struct pst_fsess *fs = fc->fs;
    if (!fs->in_msg || addr == NULL || !addr_valid(addr, true))
        return -EINVAL;
    free(fs->new_sender);
    fs->new_sender = pst_xstrdup(addr);
    return 0;
}

int
pst_env_set_rcpt(struct pst_fctx *fc, const char *addr)
{
    struct pst_fsess *fs = fc->fs;
    if (fs->phase != PST_FP_RCPT || addr == NULL || !addr_valid(addr, false))
        return -EINVAL;
    free(fs->new_rcpt);
    fs->new_rcpt = pst_xstrdup(addr);
    return 0;
}

/* ---- the blob ---- */

/* keep - original octets [off, off + len) go out as they are: joined to
 * the pending range *k when they follow it, else that one is written. */
static int
keep(struct pst_tbuf *b, uint64_t k[2], uint64_t off, uint64_t len)
{
    int rc = 0;
    if (len == 0)
        return 0;
    if (k[1] && k[0] + k[1] == off) {
        k[1] += len;
        return 0;
    }
    if (k[1])
        rc = pst_edits_put_keep(b, k[0], k[1]);
    k[0] = off;
    k[1] = len;
    return rc;
}

/*
 * header_edits - the header section as the view has it: the view's
 * fields in order, each kept or written anew, and the octets between the
 * model's fields (no field: kept where they were) before the field they
 * preceded, even when that field was removed.
 */
static int
header_edits(struct pst_fsess *fs, struct pst_tbuf *b)
{
    const struct pst_mime_part *root = fs->hroot;
    uint64_t k[2] = {0, 0};         /* pending keep range: off, len */
    uint64_t end = 0;               /* of the last model field passed */
    unsigned j = 0;                 /* the next model field */
    int rc = pst_edits_put_hdr(b, fs->hdr_end);
    for (size_t i = 0; rc == 0 && i <= fs->nv; i++) {
        const struct pst__vhdr *v = i < fs->nv ? &fs->v[i] : NULL;
        unsigned upto = v == NULL        ? root->nfields
                        : v->pub.orig >= 0 ? (unsigned)v->pub.orig + 1
                                           : j;
        for (; rc == 0 && j < upto; j++) {
            const struct pst_hdr_field *f = &root->fields[j];
            rc = keep(b, k, end, f->offset - end);
            end = f->offset + f->len;
        }
        if (v == NULL || rc < 0)
            break;
        if (v->pub.orig >= 0 && !v->pub.changed) {
            rc = keep(b, k, v->off, v->len);
            continue;
        }
        if (k[1])
            rc = pst_edits_put_keep(b, k[0], k[1]);
        k[1] = 0;
        if (rc == 0)
            rc = pst_edits_put_text(b, v->pub.raw, v->pub.raw_len);
    }
    if (rc == 0 && k[1])
        rc = pst_edits_put_keep(b, k[0], k[1]);
    return rc;
}

/* pst_fsess_edits - see chain.h. */
int
pst_fsess_edits(struct pst_fsess *fs, struct pst_tbuf *out)
{
    if (!fs->in_msg || !fs->edited || !fs->view_built)
        return 0;
    /* the header is as received when every model field is still there,
     * in place and unchanged, and nothing was added */
    bool same = fs->nv == fs->hroot->nfields;
    for (size_t i = 0; same && i < fs->nv; i++)
        same = fs->v[i].pub.orig == (int)i && !fs->v[i].pub.changed;
    if (same && fs->nbr == 0)
        return 0;
    struct pst_tbuf b = {0};
    int rc = pst_edits_begin(&b);
    if (rc == 0 && !same)
        rc = header_edits(fs, &b);
    for (size_t i = 0; rc == 0 && i < fs->nbr; i++)
        rc = pst_edits_put_body(&b, fs->br[i].off, fs->br[i].len,
                                fs->br[i].data, fs->br[i].n);
    if (rc == 0)
        pst_tbuf_add(out, b.p, b.len);
    pst_tbuf_free(&b);
    return rc < 0 ? rc : 1;
}
