/*
 * attach_scan.c - the facts the attachments module judges (attach.h):
 * file names as a client could hide them, the rules' matching, and the
 * scanner that reads a part's decoded content on a worker thread -
 * libmagic on the first octets, uuencoded blocks in text, archives with
 * libarchive, nested to a depth.
 *
 * Bounds. Names: ATT_NAME_MAX octets, ATT_NAMES_MAX per part. Content is
 * read through the filter API's reader (one 16 KiB block) and not held
 * whole, except an archive: a part detected as one is decoded whole into
 * a memory file (at most the message's size, one per worker at a time)
 * and walked from there by a confined helper process, postern-archive
 * (attach_jail.c), where what libarchive allocates is bounded by
 * archives.memory and a fault in a decoder costs that archive, not the
 * gateway; a nested archive is held in the helper's memory up to
 * archives.nested_max so libarchive can seek in it. Archive work is
 * bounded by members, uncompressed octets (counted as they are
 * decompressed, and refused at once when a header declares more), the
 * ratio of those to the part's decoded size, nesting depth and the
 * message's scan time, checked in every block; the job also stops when
 * the chain stops waiting (cancel). A limit hit, an archive that does
 * not parse and an encrypted member each give their configured action.
 *
 * libmagic's magic_t is not thread-safe: one per worker thread, loaded
 * as the filter pool's thread starts when a configured policy needs it
 * (att_thread_init, from the pool's thread_init), else on the thread's
 * first use, and closed as the thread ends (att_thread_fini, or a
 * pthread key destructor for threads outside the pool). It never runs
 * on the loop thread. libmagic is asked
 * for the MIME type only, with its decompression and ELF detail checks
 * off, on at most detect_bytes octets.
 */
#include "filters/attach.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fnmatch.h>
#include <magic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/charset.h"
#include "core/rfc2047.h"
#include "core/tbuf.h"

#define AR_BLOCK (64 * 1024)
#define COUNT(c, field) pst_metric_add((c)->n.field, 1)
#define UU_LINE 1100
#define RATIO_FLOOR (1u << 20)      /* ratios below this many octets are
                                       not judged (small files compress
                                       well) */

/* ---- names ---- */

static bool
format_char(uint32_t c)
{
    return c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0xad ||
           c == 0x61c || c == 0x180e || (c >= 0x200b && c <= 0x200f) ||
           (c >= 0x202a && c <= 0x202e) || (c >= 0x2060 && c <= 0x206f) ||
           c == 0xfeff || (c >= 0xfff9 && c <= 0xfffb);
}

/* Decode one UTF-8 sequence of valid text (pst_utf8_sanitize output). */
static size_t
utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (s[0] < 0x80 || n < 2) {
        *cp = s[0];
        return 1;
    }
    if ((s[0] & 0xe0) == 0xc0) {
        *cp = (uint32_t)(s[0] & 0x1f) << 6 | (s[1] & 0x3f);
        return 2;
    }
    if ((s[0] & 0xf0) == 0xe0 && n >= 3) {
        *cp = (uint32_t)(s[0] & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 |
              (s[2] & 0x3f);
        return 3;
    }
    if (n >= 4) {
        *cp = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3f) << 12 |
              (uint32_t)(s[2] & 0x3f) << 6 | (s[3] & 0x3f);
        return 4;
    }
    *cp = s[0];
    return 1;
}

/* att_name_normalise - see attach.h. */
size_t
att_name_normalise(const char *in, size_t n, char *out)
{
    struct pst_tbuf raw, u;
    size_t o = 0;

    pst_tbuf_init(&raw);
    pst_tbuf_init(&u);
    if (n > 4 * ATT_NAME_MAX)
        n = 4 * ATT_NAME_MAX;
    for (size_t i = 0; i < n; i++)     /* NUL and C0 go before decoding */
        if ((unsigned char)in[i] >= 0x20 && in[i] != 0x7f)
            pst_tbuf_add(&raw, in + i, 1);
    pst_utf8_sanitize(raw.p ? raw.p : "", raw.len, &u);
    const unsigned char *s = (const unsigned char *)(u.p ? u.p : "");
    for (size_t i = 0; i < u.len;) {
        uint32_t cp;
        size_t k = utf8_next(s + i, u.len - i, &cp);
        if (cp == '/' || cp == '\\') {
            o = 0;                  /* the last path component counts */
        } else if (!format_char(cp) && o + k <= ATT_NAME_MAX) {
            if (!(o == 0 && (cp == ' ' || cp == '\t')))
                for (size_t j = 0; j < k; j++)
                    out[o++] = (char)s[i + j];
        }
        i += k;
    }
    while (o > 0 && (out[o - 1] == '.' || out[o - 1] == ' ' ||
                     out[o - 1] == '\t'))
        o--;
    out[o] = '\0';
    pst_tbuf_free(&raw);
    pst_tbuf_free(&u);
    return o;
}

/* att_names_add - add a raw (decoded, not normalised) name once. */
void
att_names_add(struct att_names *ns, const char *name, size_t n)
{
    char buf[ATT_NAME_MAX + 1];
    size_t k = att_name_normalise(name, n, buf);
    if (k == 0)
        return;
    for (unsigned i = 0; i < ns->n; i++)
        if (strcmp(ns->v[i], buf) == 0)
            return;
    if (ns->n == ATT_NAMES_MAX)
        ns->over = true;            /* not judged by name: a limit */
    else
        ns->v[ns->n++] = pst_xstrndup(buf, k);
}

void
att_names_free(struct att_names *ns)
{
    for (unsigned i = 0; i < ns->n; i++)
        free(ns->v[i]);
    ns->n = 0;
    ns->over = false;
}

static void
add_decoded(struct att_names *ns, const char *v, size_t n)
{
    struct pst_tbuf d;
    pst_tbuf_init(&d);
    pst_rfc2047_decode(v, n, 64, &d, NULL);
    att_names_add(ns, d.p ? d.p : "", d.len);
    pst_tbuf_free(&d);
}

/* att_part_names - see attach.h. */
void
att_part_names(const struct pst_mime_part *p, struct att_names *out)
{
    for (unsigned i = 0; i < p->nfields; i++) {
        const struct pst_hdr_field *f = &p->fields[i];
        const char *key;
        if (pst_strcaseeq(f->name, "Content-Disposition"))
            key = "filename";
        else if (pst_strcaseeq(f->name, "Content-Type"))
            key = "name";
        else
            continue;
        const char *s = f->value, *end = s + f->value_len;
        /* parameters start after the type or disposition token; every
         * value given for the name counts (readers differ on which of
         * two wins), the one used and the others */
        const char *semi = memchr(s, ';', f->value_len);
        struct pst_params ps = {0};
        if (semi) {
            pst_params_parse(semi, (size_t)(end - semi), 64, &ps);
            for (unsigned k = 0; k < ps.n + ps.nalt; k++) {
                const struct pst_param *pm =
                    k < ps.n ? &ps.v[k] : &ps.alt[k - ps.n];
                if (strcmp(pm->name, key) == 0)
                    add_decoded(out, pm->value, strlen(pm->value));
            }
            if (ps.limit)
                out->over = true;   /* values past the parser's bounds */
            pst_params_free(&ps);
        }
    }
}

/* ---- uuencode ---- */

/* att_uu_line - a "begin MODE NAME" (or "begin-base64") line. */
void
att_uu_line(const char *l, size_t n, struct att_names *out)
{
    size_t i;
    if (n >= 6 && memcmp(l, "begin ", 6) == 0)
        i = 6;
    else if (n >= 13 && memcmp(l, "begin-base64 ", 13) == 0)
        i = 13;
    else
        return;
    size_t m = i;
    while (i < n && l[i] >= '0' && l[i] <= '7')
        i++;
    if (i - m < 3 || i - m > 4 || i >= n || l[i] != ' ')
        return;
    i++;
    while (n > i && (l[n - 1] == '\r' || l[n - 1] == ' '))
        n--;
    if (n > i)
        att_names_add(out, l + i, n - i);
}

/* ---- rules ---- */

static bool
any_glob(const struct att_strv *v, const char *s)
{
    for (size_t i = 0; i < v->n; i++)
        if (fnmatch(v->v[i], s, 0) == 0)
            return true;
    return false;
}

static bool
name_matches(const struct att_conf *c, const struct att_rule *r,
             const char *name)
{
    char low[ATT_NAME_MAX + 1];
    size_t n = strlen(name);
    for (size_t i = 0; i <= n; i++)
        low[i] = (char)pst_tolower((unsigned char)name[i]);
    if (r->exts.n) {
        const char *dot = strrchr(low, '.');
        const char *ext = dot ? dot + 1 : "";
        bool hit = false;
        for (size_t i = 0; !hit && i < r->exts.n; i++)
            hit = strcmp(r->exts.v[i], ext) == 0;
        if (!hit)
            return false;
    }
    if (r->globs.n && !any_glob(&r->globs, low))
        return false;
    if (r->re) {
        pcre2_match_data *md = pcre2_match_data_create(1, NULL);
        int rc = pcre2_match(r->re, (PCRE2_SPTR)name, n, 0, 0, md, c->mctx);
        pcre2_match_data_free(md);
        /* a limit hit is no match: names are short, and a rule that
         * cannot decide must not decide */
        if (rc < 0)
            return false;
    }
    return true;
}

/* att_judge - see attach.h. */
int
att_judge(const struct att_conf *c, const struct att_file *f)
{
    for (size_t i = 0; i < c->nrules; i++) {
        const struct att_rule *r = &c->rules[i];
        if ((r->where == ATT_W_PART && f->member) ||
            (r->where == ATT_W_ARCHIVE && !f->member))
            continue;
        if (r->unnamed && f->name)
            continue;
        if (r->needs_name && (f->name == NULL || !name_matches(c, r, f->name)))
            continue;
        if (r->declared.n &&
            (f->declared == NULL || !any_glob(&r->declared, f->declared)))
            continue;
        if (r->detected.n &&
            (f->detected == NULL || !any_glob(&r->detected, f->detected)))
            continue;
        if (r->mismatch >= 0 &&
            (f->declared == NULL || f->detected == NULL ||
             att_mismatch(f->declared, f->detected) != (r->mismatch == 1)))
            continue;
        if (r->has_size && !(f->size_known && f->size > r->larger_than))
            continue;
        return (int)i;
    }
    return -1;
}

/* Families of types that mail clients and libmagic name differently. */
static const char *
family(const char *t)
{
    static const struct {
        const char *pat, *fam;
    } fams[] = {
        {"application/zip", "zip"},
        {"application/x-zip*", "zip"},
        {"application/vnd.openxmlformats-*", "zip"},
        {"application/vnd.oasis.opendocument.*", "zip"},
        {"application/vnd.ms-*.macroenabled*", "zip"},
        {"application/java-archive", "zip"},
        {"application/epub+zip", "zip"},
        {"application/msword", "ole"},
        {"application/vnd.ms-excel", "ole"},
        {"application/vnd.ms-powerpoint", "ole"},
        {"application/vnd.ms-outlook", "ole"},
        {"application/vnd.ms-office", "ole"},
        {"application/x-ole-storage", "ole"},
        {"application/cdfv2", "ole"},
        {"application/x-dosexec", "exe"},
        {"application/x-msdownload", "exe"},
        {"application/x-msdos-program", "exe"},
        {"application/x-ms-dos-executable", "exe"},
        {"application/vnd.microsoft.portable-executable", "exe"},
        {"application/x-executable", "elf"},
        {"application/x-elf", "elf"},
        {"application/x-sharedlib", "elf"},
        {"application/x-pie-executable", "elf"},
        {"application/gzip", "gzip"},
        {"application/x-gzip", "gzip"},
        {"application/vnd.rar", "rar"},
        {"application/x-rar*", "rar"},
        {"application/pdf", "pdf"},
        {"application/x-pdf", "pdf"},
        {"application/x-tar", "tar"},
        {"application/x-gtar", "tar"},
        {"application/x-ustar", "tar"},
    };
    for (size_t i = 0; i < PST_ARRAY_LEN(fams); i++)
        if (fnmatch(fams[i].pat, t, 0) == 0)
            return fams[i].fam;
    return t;
}

/* att_mismatch - see attach.h. Generic types never contradict anything:
 * application/octet-stream and its kin declared, text/plain or empty
 * detected. Two types of the same text, image, audio, video or font kind
 * agree (their subtypes are guesses on both sides), and so do members of
 * one family (a .docx is a zip to libmagic). */
bool
att_mismatch(const char *declared, const char *detected)
{
    static const char *const generic_decl[] = {
        "application/octet-stream", "application/unknown",
        "application/x-download", "application/force-download",
        "binary/octet-stream", "application/binary"};
    static const char *const generic_det[] = {
        "application/octet-stream", "text/plain", "inode/x-empty",
        "application/x-empty"};
    static const char *const kinds[] = {"text/", "image/", "audio/",
                                        "video/", "font/"};
    for (size_t i = 0; i < PST_ARRAY_LEN(generic_decl); i++)
        if (strcmp(declared, generic_decl[i]) == 0)
            return false;
    for (size_t i = 0; i < PST_ARRAY_LEN(generic_det); i++)
        if (strcmp(detected, generic_det[i]) == 0)
            return false;
    for (size_t i = 0; i < PST_ARRAY_LEN(kinds); i++) {
        size_t k = strlen(kinds[i]);
        if (strncmp(declared, kinds[i], k) == 0 &&
            strncmp(detected, kinds[i], k) == 0)
            return false;
    }
    return strcmp(family(declared), family(detected)) != 0;
}

/* ---- outcomes ---- */

/* Printable ASCII for notices, headers and replies. */
static void
shown_copy(char *dst, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 1 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x80) {
            while ((s[1] & 0xc0) == 0x80)
                s++;            /* one '?' per character */
            c = '?';
        } else if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
            c = '_';
        }
        dst[o++] = (char)c;
    }
    dst[o] = '\0';
}

static void
keep(struct att_item *it, enum att_action a, int rule, const char *why,
     bool size, const char *shown)
{
    if (a <= it->v.action)
        return;
    it->v.action = a;
    it->v.rule = rule;
    it->v.why = why;
    it->v.size = size;
    shown_copy(it->v.file, sizeof(it->v.file), shown ? shown : "");
}

/* att_consider - see attach.h. */
void
att_consider(const struct att_conf *c, struct att_item *it,
             const struct att_file *f, const char *shown)
{
    COUNT(c, files);
    int r = att_judge(c, f);
    if (r < 0)
        return;
    keep(it, c->rules[r].action, r, c->rules[r].label,
         c->rules[r].has_size, shown);
}

/* att_consider_names - see attach.h. */
void
att_consider_names(const struct att_conf *c, struct att_item *it,
                   struct att_file *f)
{
    if (it->names.n == 0)
        att_consider(c, it, f, "");
    for (unsigned i = 0; i < it->names.n; i++) {
        f->name = it->names.v[i];
        att_consider(c, it, f, f->name);
    }
    if (it->names.over)
        att_special(it, c->ar.on_limit, "name-limit",
                    it->names.n ? it->names.v[0] : "");
}

/* att_special - see attach.h. */
void
att_special(struct att_item *it, enum att_action a, const char *why,
            const char *shown)
{
    keep(it, a, -1, why, false, shown);
}

/* ---- time ---- */

uint64_t
att_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool
out_of_time(struct att_scan *s)
{
    return (s->cancel && atomic_load(s->cancel)) || att_now() > s->deadline;
}

/* ---- libmagic, one per worker thread ---- */

static pthread_key_t magic_key;
static pthread_once_t magic_once = PTHREAD_ONCE_INIT;

static void
magic_drop(void *m)
{
    magic_close(m);
}

static void
magic_key_init(void)
{
    pthread_key_create(&magic_key, magic_drop);
}

atomic_bool att_magic_wanted;

/* This thread's magic_t, loaded at the thread's start (att_thread_init)
 * or on first use; NULL if it cannot load. */
static magic_t
thread_magic(void)
{
    pthread_once(&magic_once, magic_key_init);
    magic_t m = pthread_getspecific(magic_key);
    if (m)
        return m;
    m = magic_open(MAGIC_MIME_TYPE | MAGIC_NO_CHECK_COMPRESS |
                   MAGIC_NO_CHECK_ELF | MAGIC_ERROR);
    if (m == NULL)
        return NULL;
    if (magic_load(m, NULL) != 0) {
        magic_close(m);
        return NULL;
    }
    size_t b = 1u << 20;            /* callers pass detect_bytes at most */
    magic_setparam(m, MAGIC_PARAM_BYTES_MAX, &b);
    pthread_setspecific(magic_key, m);
    return m;
}

/* att_thread_init - see attach.h. */
void
att_thread_init(void)
{
    if (atomic_load(&att_magic_wanted))
        thread_magic();
}

/* att_thread_fini - see attach.h. */
void
att_thread_fini(void)
{
    att_jail_stop();
    pthread_once(&magic_once, magic_key_init);
    magic_t m = pthread_getspecific(magic_key);
    if (m) {
        pthread_setspecific(magic_key, NULL);
        magic_close(m);
    }
}

/* att_binary - see attach.h. No executable or archive format starts like
 * text (their magic numbers hold NUL or control octets). Eight octets at
 * a time: a word with no octet below 0x20 (the test is exact: (w - 0x20
 * in every octet) & ~w has an octet's high bit set iff one is below
 * 0x20) is skipped whole; in text that leaves the words with a line end
 * to be looked at one octet at a time. */
bool
att_binary(const uint8_t *p, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, highs = ones << 7;
    size_t i = 0;
    while (i < n) {
        if (n - i >= 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (((w - 0x20 * ones) & ~w & highs) == 0) {
                i += 8;
                continue;
            }
        }
        for (size_t end = PST_MIN(n, i + 8); i < end; i++)
            if (p[i] < 0x20 && p[i] != '\t' && p[i] != '\r' &&
                p[i] != '\n' && p[i] != '\f' && p[i] != 0x1b)
                return true;
    }
    return false;
}

/* The MIME type of buf, lowercase, into out; -1 with s->err on failure.
 * Text is text/plain without asking libmagic unless a rule looks for a
 * text type (libmagic's regex tests on text cost milliseconds). */
static int
detect(struct att_scan *s, const void *buf, size_t n, char *out)
{
    if (!s->c->magic_text && n > 0 && !att_binary(buf, n)) {
        snprintf(out, ATT_TYPE_MAX, "text/plain");
        return 0;
    }
    magic_t m = thread_magic();
    if (m == NULL) {
        snprintf(s->err, sizeof(s->err), "libmagic cannot load its database");
        return -1;
    }
    COUNT(s->c, magic);
    const char *t = magic_buffer(m, buf, n);
    if (t == NULL)
        t = "application/octet-stream";
    size_t k = 0;
    for (; t[k] && t[k] != ';' && k + 1 < ATT_TYPE_MAX; k++)
        out[k] = (char)pst_tolower((unsigned char)t[k]);
    out[k] = '\0';
    return 0;
}

/* ---- archives ---- */

/* The archive format of a detected type, or 0. */
static unsigned
ar_format(const char *t)
{
    static const struct {
        const char *type;
        unsigned fmt;
    } map[] = {
        {"application/zip", ATT_AR_ZIP},
        {"application/x-zip-compressed", ATT_AR_ZIP},
        {"application/x-7z-compressed", ATT_AR_7Z},
        {"application/x-rar", ATT_AR_RAR},
        {"application/vnd.rar", ATT_AR_RAR},
        {"application/x-rar-compressed", ATT_AR_RAR},
        {"application/x-tar", ATT_AR_TAR},
        {"application/x-gtar", ATT_AR_TAR},
        {"application/x-ustar", ATT_AR_TAR},
        {"application/gzip", ATT_AR_GZIP},
        {"application/x-gzip", ATT_AR_GZIP},
        {"application/x-bzip2", ATT_AR_BZIP2},
        {"application/x-xz", ATT_AR_XZ},
    };
    for (size_t i = 0; i < PST_ARRAY_LEN(map); i++)
        if (strcmp(map[i].type, t) == 0)
            return map[i].fmt;
    return 0;
}

static const char *const compress_ext[] = {".gz", ".tgz", ".bz2", ".xz",
                                           ".z"};

/* The name of the one file inside a compressed (not archived) stream: the
 * gzip header's FNAME when it has one, else the outer name without its
 * compression suffix. */
static void
raw_name(const uint8_t *head, size_t n, const char *outer, char *out)
{
    out[0] = '\0';
    if (n > 10 && head[0] == 0x1f && head[1] == 0x8b && (head[3] & 0x08)) {
        size_t i = 10;
        if (head[3] & 0x04) {       /* FEXTRA */
            if (n < 12)
                return;
            i = 12 + (size_t)(head[10] | head[11] << 8);
        }
        size_t st = i;
        while (i < n && head[i])
            i++;
        if (i < n) {
            att_name_normalise((const char *)head + st, i - st, out);
            return;
        }
    }
    if (outer == NULL)
        return;
    size_t l = strlen(outer);
    snprintf(out, ATT_NAME_MAX + 1, "%s", outer);
    for (size_t i = 0; i < PST_ARRAY_LEN(compress_ext); i++) {
        size_t e = strlen(compress_ext[i]);
        if (l > e && pst_strcaseeq(outer + l - e, compress_ext[i])) {
            out[l - e] = '\0';
            if (i == 1)
                strcat(out, ".tar");
            return;
        }
    }
}

static void
ar_support(struct archive *a, unsigned fmt, bool seekable)
{
    if (fmt == ATT_AR_ZIP) {
        if (seekable)
            archive_read_support_format_zip_seekable(a);
        else
            archive_read_support_format_zip_streamable(a);
    } else if (fmt == ATT_AR_7Z) {
        archive_read_support_format_7zip(a);
    } else if (fmt == ATT_AR_RAR) {
        archive_read_support_format_rar(a);
        archive_read_support_format_rar5(a);
    } else if (fmt == ATT_AR_TAR) {
        archive_read_support_format_tar(a);
    } else {
        if (fmt == ATT_AR_GZIP)
            archive_read_support_filter_gzip(a);
        else if (fmt == ATT_AR_BZIP2)
            archive_read_support_filter_bzip2(a);
        else
            archive_read_support_filter_xz(a);
        archive_read_support_format_tar(a);
        archive_read_support_format_raw(a);
    }
}

/* Whether a failure is about encryption. opened: a format was chosen
 * (libarchive 3.6 asks the format without checking there is one). */
static bool
ar_encrypted(struct archive *a, bool opened)
{
    const char *e = archive_error_string(a);
    return (opened && archive_read_has_encrypted_entries(a) > 0) ||
           (e && (strcasestr(e, "encrypt") || strcasestr(e, "passphrase") ||
                  strcasestr(e, "password")));
}

struct walk {
    struct att_scan *s;
    struct att_item *it;
    uint64_t compressed;            /* the part's decoded size */
    bool stop;                      /* a limit or error ended the scan */
};

static void walk_archive(struct walk *w, struct archive *a, unsigned depth,
                         const char *outer, const uint8_t *head, size_t hn);

static bool
budget(struct walk *w, uint64_t more, const char *shown)
{
    const struct att_conf *c = w->s->c;
    w->s->bytes += more;
    if (w->s->bytes > c->ar.max_bytes ||
        (w->s->bytes > RATIO_FLOOR &&
         w->s->bytes / (w->compressed ? w->compressed : 1) >= c->ar.max_ratio)) {
        COUNT(c, limits);
        att_special(w->it, c->ar.on_limit, "archive-limit", shown);
        w->stop = true;
        return false;
    }
    return true;
}

static void
limit_hit(struct walk *w, const char *shown)
{
    const struct att_conf *c = w->s->c;
    COUNT(c, limits);
    att_special(w->it, c->ar.on_limit, "archive-limit", shown);
    w->stop = true;
}

static void
error_hit(struct walk *w, struct archive *a, bool opened, const char *shown)
{
    const struct att_conf *c = w->s->c;
    if (out_of_time(w->s)) {
        limit_hit(w, shown);
        return;
    }
    if (ar_encrypted(a, opened)) {
        COUNT(c, encrypted);
        att_special(w->it, c->ar.on_encrypted, "encrypted", shown);
    } else {
        COUNT(c, errors);
        att_special(w->it, c->ar.on_error, "archive-error", shown);
    }
    w->stop = true;
}

/* One member: read its data (counted against the limits), detect its
 * type, judge it, and open it if it is an archive itself. */
static void
walk_member(struct walk *w, struct archive *a, struct archive_entry *e,
            unsigned depth, const char *name, const char *shown)
{
    const struct att_conf *c = w->s->c;
    uint8_t *head = pst_xmalloc(c->detect_bytes);
    size_t hn = 0;
    uint8_t *nest = NULL;
    size_t nn = 0, ncap = 0;
    bool nested = false, decided = false;
    char detected[ATT_TYPE_MAX] = "";
    uint64_t size = 0;
    uint8_t buf[AR_BLOCK];

    for (;;) {
        if (out_of_time(w->s)) {
            limit_hit(w, shown);
            goto out;
        }
        la_ssize_t n = archive_read_data(a, buf, sizeof(buf));
        if (n < 0) {
            error_hit(w, a, true, shown);
            goto out;
        }
        if (n == 0)
            break;
        size += (uint64_t)n;
        if (!budget(w, (uint64_t)n, shown))
            goto out;
        size_t k = PST_MIN((size_t)n, c->detect_bytes - hn);
        memcpy(head + hn, buf, k);
        hn += k;
        if (!decided && hn == c->detect_bytes) {
            if (detect(w->s, head, hn, detected) < 0)
                goto out;
            decided = true;
            nested = ar_format(detected) & c->ar.formats;
            if (nested) {
                nest = pst_xmalloc(ncap = hn);
                memcpy(nest, head, nn = hn);
            }
        }
        /* once the head is full, k is 0: whole blocks go to nest */
        if (nested && (size_t)n > k) {
            if (nn + (size_t)n - k > c->ar.nested_max) {
                limit_hit(w, shown);
                goto out;
            }
            if (nn + (size_t)n - k > ncap) {
                ncap = PST_MAX(ncap * 2, nn + (size_t)n - k);
                nest = pst_xrealloc(nest, PST_MIN(ncap, c->ar.nested_max));
                ncap = PST_MIN(ncap, c->ar.nested_max);
            }
            memcpy(nest + nn, buf + k, (size_t)n - k);
            nn += (size_t)n - k;
        }
    }
    if (!decided) {
        if (detect(w->s, head, hn, detected) < 0)
            goto out;
        nested = ar_format(detected) & c->ar.formats;
        if (nested) {
            nest = pst_xmalloc(hn ? hn : 1);
            memcpy(nest, head, nn = hn);
        }
    }
    struct att_file f = {name[0] ? name : NULL, NULL, detected, size, true,
                         true};
    att_consider(c, w->it, &f, shown);
    if (nested && !w->stop) {
        if (depth >= c->ar.depth) {
            limit_hit(w, shown);
            goto out;
        }
        struct archive *na = archive_read_new();
        unsigned fmt = ar_format(detected);
        ar_support(na, fmt, true);
        if (archive_read_open_memory(na, nest, nn) != ARCHIVE_OK)
            error_hit(w, na, false, shown);
        else
            walk_archive(w, na, depth + 1, shown, nest, nn);
        archive_read_free(na);
    }
out:
    free(head);
    free(nest);
}

/* Walk every member of an open archive. outer: the archive's path as
 * shown ("mail.zip/inner.zip"); its last component names the member of a
 * compressed stream. */
static void
walk_archive(struct walk *w, struct archive *a, unsigned depth,
             const char *outer, const uint8_t *head, size_t hn)
{
    const struct att_conf *c = w->s->c;
    struct archive_entry *e;
    char name[ATT_NAME_MAX + 1], shown[ATT_NAME_MAX + 64];

    COUNT(c, archives);
    while (!w->stop) {
        int rc = archive_read_next_header(a, &e);
        if (rc == ARCHIVE_EOF)
            break;
        snprintf(shown, sizeof(shown), "%s", outer ? outer : "");
        if (rc < ARCHIVE_WARN) {
            error_hit(w, a, true, shown);
            break;
        }
        if (++w->s->members > c->ar.max_members) {
            limit_hit(w, shown);
            break;
        }
        const char *path = name;
        if (archive_format(a) == ARCHIVE_FORMAT_RAW) {
            const char *base = outer ? strrchr(outer, '/') : NULL;
            raw_name(head, hn, base ? base + 1 : outer, name);
        } else {
            path = archive_entry_pathname_utf8(e);
            if (path == NULL)
                path = archive_entry_pathname(e);
            if (path == NULL)
                path = "";
            att_name_normalise(path, strlen(path), name);
        }
        /* matched by its last component, shown with its path */
        snprintf(shown, sizeof(shown), "%s%s%s", outer ? outer : "",
                 outer ? "/" : "", path);
        if (archive_entry_filetype(e) == AE_IFDIR)
            continue;
        if (archive_entry_size_is_set(e) && archive_entry_size(e) > 0 &&
            (uint64_t)archive_entry_size(e) > c->ar.max_bytes - PST_MIN(
                                                  c->ar.max_bytes,
                                                  w->s->bytes)) {
            limit_hit(w, shown);
            break;
        }
        if (archive_entry_is_encrypted(e)) {
            COUNT(c, encrypted);
            att_special(w->it, c->ar.on_encrypted, "encrypted", shown);
            struct att_file f = {name[0] ? name : NULL, NULL, NULL, 0, false,
                                 true};
            att_consider(c, w->it, &f, shown);
            continue;               /* its data cannot be read */
        }
        walk_member(w, a, e, depth, name, shown);
    }
}

/* att_walk_mem - see attach.h (in postern-archive, or in process by
 * att_scan_archive_mem). */
void
att_walk_mem(struct att_scan *s, struct att_item *it, unsigned fmt,
             const void *p, size_t n, const char *outer)
{
    struct walk w = {s, it, n, false};
    struct archive *a = archive_read_new();
    ar_support(a, fmt, true);
    if (archive_read_open_memory(a, p, n) != ARCHIVE_OK)
        error_hit(&w, a, false, outer ? outer : "");
    else
        walk_archive(&w, a, 0, outer && outer[0] ? outer : NULL, p,
                     PST_MIN(n, (size_t)s->c->detect_bytes));
    archive_read_free(a);
}

/* The part's decoded content into a memfd (read-only mappable by the
 * helper), its length in *size; -1 with s->err when it cannot be (a local
 * failure: the scan fails, and the message is retried later). */
static int
decoded_copy(struct att_scan *s, struct att_item *it, uint64_t *size)
{
    int fd = memfd_create("postern-archive", MFD_CLOEXEC);
    if (fd < 0) {
        snprintf(s->err, sizeof(s->err), "memfd_create: %s",
                 strerror(errno));
        return -1;
    }
    struct pst_mime_reader *r = pst_fbody_open(s->t, &it->body);
    uint8_t *buf = pst_xmalloc(AR_BLOCK);
    ssize_t n = r ? 0 : -EIO;
    *size = 0;
    while (r && (n = pst_mime_reader_read(r, buf, AR_BLOCK)) > 0) {
        if (pst_write_all(fd, buf, (size_t)n) < 0) {
            n = -errno;
            break;
        }
        *size += (uint64_t)n;
    }
    free(buf);
    pst_mime_reader_close(r);
    if (n < 0) {
        snprintf(s->err, sizeof(s->err), "copying an archive: %s",
                 strerror((int)-n));
        close(fd);
        return -1;
    }
    return fd;
}

/* Open the part as an archive of format fmt and walk it, confined. -1
 * when the part could not be handed over (s->err). */
static int
scan_archive(struct att_scan *s, struct att_item *it, unsigned fmt)
{
    uint64_t size;
    int fd = decoded_copy(s, it, &size);
    if (fd < 0)
        return -1;
    const char *outer = it->names.n ? it->names.v[0] : "";
    att_jail_run(s, it, outer, ATT_JAIL_WALK, fmt, size ? fd : -1, size,
                 outer);
    close(fd);
    return 0;
}

/* att_scan_archive_mem - see attach.h. */
void
att_scan_archive_mem(struct att_scan *s, struct att_item *it, const void *p,
                     size_t n, const char *name)
{
    char detected[ATT_TYPE_MAX];
    if (detect(s, p, PST_MIN(n, (size_t)s->c->detect_bytes), detected) < 0)
        return;
    unsigned fmt = ar_format(detected) & s->c->ar.formats;
    if (fmt)
        att_walk_mem(s, it, fmt, p, n, name);
}

/* ---- one item ---- */

/*
 * A message/rfc822 part that is a leaf (it was transfer-encoded, which
 * RFC 2046 forbids but readers decode anyway, or cut by the depth
 * limit): its decoded text is parsed again, with the same limits, and
 * the names of its parts judged (as files of this part: stripping
 * removes the whole message). -1 on a read error or when time is up.
 */
static int
scan_message(struct att_scan *s, struct att_item *it)
{
    struct pst_mime_reader *r = pst_fbody_open(s->t, &it->body);
    struct pst_mime_parser *p = pst_mime_parser_new(NULL, NULL, NULL);
    uint8_t buf[16384];
    ssize_t n;
    while ((n = pst_mime_reader_read(r, buf, sizeof(buf))) > 0) {
        if (out_of_time(s)) {
            n = -ETIMEDOUT;
            break;
        }
        pst_mime_feed(p, buf, (size_t)n);
    }
    pst_mime_reader_close(r);
    if (n < 0) {
        pst_mime_parser_free(p);
        snprintf(s->err, sizeof(s->err), "reading an attached message: %s",
                 strerror((int)-n));
        return -1;
    }
    struct pst_msg *m = pst_mime_finish(p);
    for (unsigned i = 0; i < m->nparts; i++) {
        const struct pst_mime_part *q = m->parts[i];
        if (q->container)
            continue;
        struct att_names ns = {0};
        att_part_names(q, &ns);
        for (unsigned k = 0; k < ns.n; k++) {
            struct att_file f = {ns.v[k], q->content_type, NULL,
                                 q->decoded_size, true, false};
            att_consider(s->c, it, &f, ns.v[k]);
        }
        att_names_free(&ns);
    }
    pst_msg_free(m);
    return 0;
}

/* att_scan_item - see attach.h. */
int
att_scan_item(struct att_scan *s, struct att_item *it)
{
    const struct att_conf *c = s->c;
    struct pst_mime_reader *r = pst_fbody_open(s->t, &it->body);
    uint8_t *head = pst_xmalloc(c->detect_bytes);
    size_t hn = 0;
    char line[UU_LINE];
    size_t ln = 0;
    bool uu = c->uuencode && strncmp(it->declared, "text/", 5) == 0;
    bool over = false;
    uint8_t buf[16384];
    struct att_names found = {0};
    int rc = 0;

    if (r == NULL) {
        snprintf(s->err, sizeof(s->err), "cannot read the part");
        free(head);
        return -1;
    }
    for (;;) {
        if (out_of_time(s)) {
            snprintf(s->err, sizeof(s->err), "scan time limit reached");
            rc = -1;
            goto out;
        }
        ssize_t n = pst_mime_reader_read(r, buf, sizeof(buf));
        if (n < 0) {
            snprintf(s->err, sizeof(s->err), "reading the part: %s",
                     strerror((int)-n));
            rc = -1;
            goto out;
        }
        if (n == 0)
            break;
        size_t k = PST_MIN((size_t)n, c->detect_bytes - hn);
        memcpy(head + hn, buf, k);
        hn += k;
        if (!uu) {
            if (hn == c->detect_bytes)
                break;
            continue;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n') {
                if (!over)
                    att_uu_line(line, ln, &found);
                ln = 0;
                over = false;
            } else if (ln < sizeof(line)) {
                line[ln++] = (char)buf[i];
            } else {
                over = true;
            }
        }
    }
    if (uu && ln && !over)
        att_uu_line(line, ln, &found);
    char detected[ATT_TYPE_MAX] = "";
    bool run_magic = c->need_magic && (!it->text || att_binary(head, hn));
    if (run_magic && detect(s, head, hn, detected) < 0) {
        rc = -1;
        goto out;
    }
    struct att_file f = {NULL, it->declared, run_magic ? detected : NULL,
                         it->size, true, false};
    att_consider_names(c, it, &f);
    for (unsigned i = 0; i < found.n; i++) {
        struct att_file u = {found.v[i], NULL, NULL, 0, false, false};
        att_consider(c, it, &u, found.v[i]);
    }
    if (found.over)                 /* uuencoded names beyond those kept */
        att_special(it, c->ar.on_limit, "name-limit", found.v[0]);
    unsigned fmt = run_magic ? ar_format(detected) & c->ar.formats : 0;
    if (fmt && scan_archive(s, it, fmt) < 0) {
        rc = -1;
        goto out;
    }
    if (strncmp(it->declared, "message/", 8) == 0 &&
        scan_message(s, it) < 0)
        rc = -1;
out:
    att_names_free(&found);
    pst_mime_reader_close(r);
    free(head);
    return rc;
}
