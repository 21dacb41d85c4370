/*
 * charset.c - allow-listed charset conversion to UTF-8 with per-thread
 * iconv converters.
 *
 * Ownership: each thread owns a small cache of iconv_t (CACHE_SLOTS
 * entries, least recently used replaced). A pthread key's destructor closes
 * them when the thread exits. No converter is ever used by two threads.
 *
 * Limits: conversion output is at most 3 bytes per input byte (U+FFFD for
 * every bad byte, or a BMP character from a single byte); iconv runs on
 * bounded chunks so the work is linear in the input.
 */
#include "core/charset.h"

#include <errno.h>
#include <iconv.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* label (lowercase) -> iconv name. UTF-8 and US-ASCII never reach iconv. */
static const struct {
    const char *label;
    const char *iconv;
} allow[] = {
    {"utf-8", "UTF-8"},           {"utf8", "UTF-8"},
    {"us-ascii", "US-ASCII"},     {"ascii", "US-ASCII"},
    {"iso-8859-1", "ISO-8859-1"}, {"latin1", "ISO-8859-1"},
    {"iso-8859-2", "ISO-8859-2"}, {"iso-8859-3", "ISO-8859-3"},
    {"iso-8859-4", "ISO-8859-4"}, {"iso-8859-5", "ISO-8859-5"},
    {"iso-8859-6", "ISO-8859-6"}, {"iso-8859-7", "ISO-8859-7"},
    {"iso-8859-8", "ISO-8859-8"}, {"iso-8859-8-i", "ISO-8859-8"},
    {"iso-8859-9", "ISO-8859-9"}, {"iso-8859-10", "ISO-8859-10"},
    {"iso-8859-13", "ISO-8859-13"}, {"iso-8859-14", "ISO-8859-14"},
    {"iso-8859-15", "ISO-8859-15"}, {"iso-8859-16", "ISO-8859-16"},
    {"windows-1250", "CP1250"},   {"windows-1251", "CP1251"},
    {"windows-1252", "CP1252"},   {"windows-1253", "CP1253"},
    {"windows-1254", "CP1254"},   {"windows-1255", "CP1255"},
    {"windows-1256", "CP1256"},   {"windows-1257", "CP1257"},
    {"windows-1258", "CP1258"},   {"cp1250", "CP1250"},
    {"cp1251", "CP1251"},         {"cp1252", "CP1252"},
    {"koi8-r", "KOI8-R"},         {"koi8-u", "KOI8-U"},
    {"gb2312", "GB18030"},        {"gbk", "GB18030"},
    {"gb18030", "GB18030"},       {"cp936", "GB18030"},
    {"hz-gb-2312", "HZ"},         {"big5", "BIG5-HKSCS"},
    {"big5-hkscs", "BIG5-HKSCS"}, {"euc-jp", "EUC-JP"},
    {"shift_jis", "CP932"},       {"shift-jis", "CP932"},
    {"sjis", "CP932"},            {"cp932", "CP932"},
    {"windows-31j", "CP932"},     {"iso-2022-jp", "ISO-2022-JP"},
    {"euc-kr", "CP949"},          {"ks_c_5601-1987", "CP949"},
    {"cp949", "CP949"},           {"iso-2022-kr", "ISO-2022-KR"},
    {"tis-620", "TIS-620"},       {"windows-874", "CP874"},
    {"utf-16", "UTF-16"},         {"utf-16le", "UTF-16LE"},
    {"utf-16be", "UTF-16BE"},     {"utf-7", "UTF-7"},
    {"viscii", "VISCII"},
};

#define LABEL_MAX 40
#define CACHE_SLOTS 6

struct conv {
    const char *name;               /* iconv name (static), NULL when free */
    iconv_t cd;
    unsigned long used;             /* LRU clock */
};

struct cache {
    struct conv slot[CACHE_SLOTS];
    unsigned long clock;
};

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static _Thread_local struct cache *tcache;

static void
cache_free(void *arg)
{
    struct cache *c = arg;
    if (c == NULL)
        return;
    for (unsigned i = 0; i < CACHE_SLOTS; i++)
        if (c->slot[i].name)
            iconv_close(c->slot[i].cd);
    free(c);
}

static void
cache_key_init(void)
{
    if (pthread_key_create(&cache_key, cache_free) != 0)
        abort();
}

/* pst_charset_thread_cleanup - close this thread's converters now. */
void
pst_charset_thread_cleanup(void)
{
    if (tcache == NULL)
        return;
    pthread_setspecific(cache_key, NULL);
    cache_free(tcache);
    tcache = NULL;
}

/* An open converter from name to UTF-8, reset to its initial state. */
static iconv_t
conv_get(const char *name)
{
    struct conv *victim;

    if (tcache == NULL) {
        pthread_once(&cache_once, cache_key_init);
        tcache = pst_xcalloc(1, sizeof(*tcache));
        pthread_setspecific(cache_key, tcache);
    }
    victim = &tcache->slot[0];
    for (unsigned i = 0; i < CACHE_SLOTS; i++) {
        struct conv *s = &tcache->slot[i];
        if (s->name == name) {
            s->used = ++tcache->clock;
            iconv(s->cd, NULL, NULL, NULL, NULL);
            return s->cd;
        }
        if (s->name == NULL || s->used < victim->used)
            victim = s;
    }
    iconv_t cd = iconv_open("UTF-8", name);
    if (cd == (iconv_t)-1)
        return cd;
    if (victim->name)
        iconv_close(victim->cd);
    victim->name = name;
    victim->cd = cd;
    victim->used = ++tcache->clock;
    return cd;
}

/* pst_charset_canon - iconv name of an allowed charset label, NULL if not
 * allowed. */
const char *
pst_charset_canon(const char *label, size_t n)
{
    char low[LABEL_MAX + 1];

    if (n == 0 || n > LABEL_MAX)
        return NULL;
    for (size_t i = 0; i < n; i++)
        low[i] = (char)pst_tolower((unsigned char)label[i]);
    low[n] = '\0';
    for (size_t i = 0; i < PST_ARRAY_LEN(allow); i++)
        if (strcmp(low, allow[i].label) == 0)
            return allow[i].iconv;
    return NULL;
}

static size_t
utf8_seq(const uint8_t *s, size_t n)
{
    /* Length of the valid UTF-8 sequence at s, 0 if invalid (RFC 3629:
     * no overlongs, no surrogates, nothing above U+10FFFF). */
    uint8_t c = s[0];
    if (c < 0x80)
        return c ? 1 : 0;
    if (c >= 0xc2 && c <= 0xdf)
        return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0))
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 ||
            (s[3] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))
            return 0;
        return 4;
    }
    return 0;
}

static const char repl[] = "\xef\xbf\xbd";

/* pst_utf8_sanitize - append as UTF-8, bad sequences and NUL as U+FFFD. */
void
pst_utf8_sanitize(const void *in, size_t n, struct pst_tbuf *out)
{
    const uint8_t *s = in, *end;

    if (n == 0)
        return;
    end = s + n;
    pst_tbuf_reserve(out, n);
    while (s < end) {
        const uint8_t *r = s;
        while (r < end && *r >= 0x01 && *r < 0x80)
            r++;
        pst_tbuf_add(out, s, (size_t)(r - s));
        s = r;
        if (s == end)
            break;
        size_t k = utf8_seq(s, (size_t)(end - s));
        if (k) {
            pst_tbuf_add(out, s, k);
            s += k;
        } else {
            pst_tbuf_add(out, repl, 3);
            s++;
        }
    }
}

/* pst_utf8_valid - whether n octets are valid UTF-8 (RFC 3629). */
bool
pst_utf8_valid(const void *in, size_t n)
{
    const uint8_t *s = in, *end;

    if (n == 0)
        return true;
    end = s + n;
    while (s < end) {
        size_t k = utf8_seq(s, (size_t)(end - s));
        if (k == 0)
            return false;
        s += k;
    }
    return true;
}

/* pst_charset_to_utf8 - convert from an allowed charset, appending UTF-8. */
int
pst_charset_to_utf8(const char *label, size_t labellen, const void *in,
                    size_t n, struct pst_tbuf *out)
{
    const char *name = pst_charset_canon(label, labellen);
    iconv_t cd;
    char *ip = (char *)(uintptr_t)in;
    size_t il = n;
    size_t start = out->len;

    if (name == NULL)
        return -ENOENT;
    if (strcmp(name, "UTF-8") == 0 || strcmp(name, "US-ASCII") == 0) {
        pst_utf8_sanitize(in, n, out);
        return 0;
    }
    cd = conv_get(name);
    if (cd == (iconv_t)-1)
        return -ENOENT;
    while (il > 0) {
        pst_tbuf_reserve(out, il * 3 + 16);
        char *op = out->p + out->len;
        size_t ol = out->cap - out->len - 1;
        size_t r = iconv(cd, &ip, &il, &op, &ol);
        out->len = (size_t)(op - out->p);
        if (r != (size_t)-1)
            break;
        if (errno == E2BIG)
            continue;
        /* EILSEQ or EINVAL (truncated at the end): one replacement, skip
         * one byte, carry on from the initial shift state. */
        pst_tbuf_add(out, repl, 3);
        ip++;
        il--;
        iconv(cd, NULL, NULL, NULL, NULL);
    }
    /* Flush a stateful encoding's final shift sequence. */
    pst_tbuf_reserve(out, 16);
    char *op = out->p + out->len;
    size_t ol = out->cap - out->len - 1;
    iconv(cd, NULL, NULL, &op, &ol);
    out->len = (size_t)(op - out->p);
    /* U+0000 converts to NUL; the model's strings never hold one. */
    if (memchr(out->p + start, '\0', out->len - start)) {
        struct pst_tbuf t;
        pst_tbuf_init(&t);
        pst_utf8_sanitize(out->p + start, out->len - start, &t);
        out->len = start;
        pst_tbuf_add(out, t.p, t.len);
        pst_tbuf_free(&t);
    }
    return 0;
}
