/*
 * cli_inspect.c - `postern inspect [--json] FILE`: print how postern parses
 * a message file (the header fields and one entry per MIME part, in
 * depth-first order, numbered as IMAP sections). The JSON shape is
 * documented in docs/INSPECT.md.
 *
 * The file is read once, in 64 KiB blocks, through the same streaming
 * parser the gateway uses during DATA; decoded bodies are hashed as they
 * stream (on_body). The only parts read a second time are multiparts whose
 * first delimiter never came (their body is known to be a leaf only at its
 * end). Memory is bounded by the MIME limits, not by the file size.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "core/charset.h"
#include "core/mime.h"
#include "core/util.h"
#include "gateway/cli.h"

struct hashes {
    EVP_MD_CTX *ctx;                /* the leaf being hashed */
    const struct pst_mime_part *cur;
    char (*hex)[65];                /* by part id; "" if none */
    unsigned cap;
};

static void
hash_slot(struct hashes *h, unsigned id)
{
    if (id < h->cap)
        return;
    unsigned cap = h->cap ? h->cap : 64;
    while (cap <= id)
        cap *= 2;
    h->hex = pst_xrealloc(h->hex, cap * sizeof(*h->hex));
    memset(h->hex + h->cap, 0, (cap - h->cap) * sizeof(*h->hex));
    h->cap = cap;
}

static void
hash_hex(EVP_MD_CTX *ctx, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_DigestFinal_ex(ctx, md, &n);
    for (unsigned i = 0; i < n && i < 32; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

static void
on_headers(void *arg, struct pst_mime_part *part)
{
    struct hashes *h = arg;
    hash_slot(h, part->id);
    h->hex[part->id][0] = '\0';
}

static void
on_body(void *arg, struct pst_mime_part *part, const void *data, size_t len)
{
    struct hashes *h = arg;
    if (h->cur != part) {
        EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL);
        h->cur = part;
    }
    EVP_DigestUpdate(h->ctx, data, len);
}

static void
on_part_end(void *arg, struct pst_mime_part *part)
{
    struct hashes *h = arg;
    if (h->cur == part) {
        hash_slot(h, part->id);
        hash_hex(h->ctx, h->hex[part->id]);
        h->cur = NULL;
    }
}

/* Hash a leaf the stream did not deliver (empty, or a multipart that
 * turned out to be a leaf) by reading it back. */
static int
hash_reread(int fd, const struct pst_mime_part *part, EVP_MD_CTX *ctx,
            char out[65])
{
    struct pst_mime_reader *r = pst_mime_reader_open(fd, part);
    char buf[16384];
    ssize_t n;

    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    while ((n = pst_mime_reader_read(r, buf, sizeof(buf))) > 0)
        EVP_DigestUpdate(ctx, buf, (size_t)n);
    pst_mime_reader_close(r);
    if (n < 0)
        return (int)n;
    hash_hex(ctx, out);
    return 0;
}

/* ---- output ---- */

static void
json_str(FILE *o, const char *s)
{
    if (s == NULL) {
        fputs("null", o);
        return;
    }
    fputc('"', o);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(o, "\\%c", *c);
        else if (*c == '\n')
            fputs("\\n", o);
        else if (*c == '\r')
            fputs("\\r", o);
        else if (*c == '\t')
            fputs("\\t", o);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(o, "\\u%04x", *c);
        else
            fputc(*c, o);
    }
    fputc('"', o);
}

static void
json_flags(FILE *o, unsigned flags)
{
    bool first = true;
    fputc('[', o);
    for (unsigned b = 1; b && b <= PST_MIME_F_LAST; b <<= 1) {
        const char *name = pst_mime_flag_name(b);
        if ((flags & b) && name) {
            fprintf(o, "%s\"%s\"", first ? "" : ", ", name);
            first = false;
        }
    }
    fputc(']', o);
}

static void
text_flags(FILE *o, unsigned flags)
{
    bool first = true;
    for (unsigned b = 1; b && b <= PST_MIME_F_LAST; b <<= 1) {
        const char *name = pst_mime_flag_name(b);
        if ((flags & b) && name) {
            fprintf(o, "%s%s", first ? "" : ",", name);
            first = false;
        }
    }
    if (first)
        fputs("none", o);
}

/* Header values may hold control characters; the text form shows them
 * escaped so one field stays one line. */
static void
text_value(FILE *o, const char *s)
{
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c < 0x20 || *c == 0x7f)
            fprintf(o, "\\x%02x", *c);
        else
            fputc(*c, o);
    }
}

static void
print_json(FILE *o, const char *file, const struct pst_msg *m,
           const struct hashes *h)
{
    const struct pst_mime_part *root = m->root;

    fputs("{\n  \"file\": ", o);
    json_str(o, file);
    fprintf(o, ",\n  \"size\": %" PRIu64 ",\n  \"flags\": ", m->size);
    json_flags(o, m->flags);
    fputs(",\n  \"headers\": [", o);
    for (unsigned i = 0; i < root->nfields; i++) {
        fputs(i ? ",\n    {\"name\": " : "\n    {\"name\": ", o);
        json_str(o, root->fields[i].name);
        fputs(", \"value\": ", o);
        json_str(o, root->fields[i].decoded);
        fputc('}', o);
    }
    fputs(root->nfields ? "\n  ],\n  \"parts\": [" : "],\n  \"parts\": [", o);
    for (unsigned i = 0; i < m->nparts; i++) {
        const struct pst_mime_part *p = m->parts[i];
        fputs(i ? ",\n    {" : "\n    {", o);
        fputs("\"section\": ", o);
        json_str(o, p->section);
        fprintf(o, ", \"id\": %u, \"parent\": ", p->id);
        if (p->parent)
            fprintf(o, "%u", p->parent->id);
        else
            fputs("null", o);
        fprintf(o, ", \"depth\": %u, \"container\": %s, \"content_type\": ",
                p->depth, p->container ? "true" : "false");
        json_str(o, p->content_type);
        fputs(", \"charset\": ", o);
        json_str(o, p->charset);
        fputs(", \"filename\": ", o);
        json_str(o, p->filename);
        fputs(", \"disposition\": ", o);
        json_str(o, p->disposition);
        fputs(", \"transfer_encoding\": ", o);
        json_str(o, p->cte_name);
        fputs(", \"content_id\": ", o);
        json_str(o, p->content_id);
        if (p->boundary && p->container) {
            fputs(", \"boundary\": ", o);
            json_str(o, p->boundary);
        }
        fprintf(o,
                ", \"header_offset\": %" PRIu64 ", \"body_offset\": %" PRIu64
                ", \"body_end\": %" PRIu64,
                p->header_start, p->body_start, p->body_end);
        if (!p->container)
            fprintf(o, ", \"size\": %" PRIu64 ", \"sha256\": \"%s\"",
                    p->decoded_size, h->hex[p->id]);
        fputs(", \"flags\": ", o);
        json_flags(o, p->flags);
        fputc('}', o);
    }
    fputs(m->nparts ? "\n  ]\n}\n" : "]\n}\n", o);
}

static void
print_text(FILE *o, const char *file, const struct pst_msg *m,
           const struct hashes *h)
{
    const struct pst_mime_part *root = m->root;

    fprintf(o, "file %s, %" PRIu64 " octets, flags: ", file, m->size);
    text_flags(o, m->flags);
    fputs("\n\nheader fields:\n", o);
    for (unsigned i = 0; i < root->nfields; i++) {
        fprintf(o, "  %s: ", root->fields[i].name);
        text_value(o, root->fields[i].decoded);
        fputc('\n', o);
    }
    fputs("\nparts:\n", o);
    for (unsigned i = 0; i < m->nparts; i++) {
        const struct pst_mime_part *p = m->parts[i];
        fprintf(o, "  %*s%-8s %s", (int)p->depth * 2, "", p->section,
                p->content_type);
        if (p->charset)
            fprintf(o, " charset=%s", p->charset);
        if (p->disposition)
            fprintf(o, " %s", p->disposition);
        if (p->filename) {
            fputs(" filename=\"", o);
            text_value(o, p->filename);
            fputc('"', o);
        }
        fprintf(o, " %s", p->cte_name);
        if (p->container)
            fputs(" (container)", o);
        else
            fprintf(o, " %" PRIu64 " octets sha256=%s", p->decoded_size,
                    h->hex[p->id]);
        if (p->flags) {
            fputs(" flags=", o);
            text_flags(o, p->flags);
        }
        fputc('\n', o);
    }
}

/* pst_cli_inspect - `postern inspect [--json] FILE`; exit 0, 1 (unreadable)
 * or PST_CLI_USAGE. */
int
pst_cli_inspect(int argc, char **argv)
{
    struct pst_mime_callbacks cb = {on_headers, on_body, on_part_end};
    struct hashes h = {0};
    struct pst_mime_parser *p;
    struct pst_msg *m = NULL;
    const char *file = NULL;
    bool json = false;
    int fd = -1, rc = 1;
    static char buf[65536];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0 && file == NULL)
            json = true;
        else if (file == NULL && argv[i][0] != '-')
            file = argv[i];
        else
            file = NULL, i = argc;
    }
    if (file == NULL)
        return PST_CLI_USAGE;
    fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "postern: inspect: %s: %s\n", file, strerror(errno));
        return 1;
    }
    h.ctx = EVP_MD_CTX_new();
    if (h.ctx == NULL)
        goto fail;
    p = pst_mime_parser_new(NULL, &cb, &h);
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "postern: inspect: %s: %s\n", file,
                    strerror(errno));
            pst_mime_parser_free(p);
            goto fail;
        }
        if (n == 0)
            break;
        pst_mime_feed(p, buf, (size_t)n);
    }
    m = pst_mime_finish(p);
    for (unsigned i = 0; i < m->nparts; i++) {
        const struct pst_mime_part *part = m->parts[i];
        hash_slot(&h, part->id);
        if (!part->container && h.hex[part->id][0] == '\0' &&
            hash_reread(fd, part, h.ctx, h.hex[part->id]) < 0) {
            fprintf(stderr, "postern: inspect: %s: read error\n", file);
            goto fail;
        }
    }
    if (json)
        print_json(stdout, file, m, &h);
    else
        print_text(stdout, file, m, &h);
    rc = fflush(stdout) == 0 ? 0 : 1;
fail:
    pst_msg_free(m);
    EVP_MD_CTX_free(h.ctx);
    free(h.hex);
    if (fd >= 0)
        close(fd);
    pst_charset_thread_cleanup();
    return rc;
}
