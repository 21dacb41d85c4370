/*
 * charset.h - text in a declared charset to UTF-8, for decoded header
 * values and RFC 2231 parameters.
 *
 * What this offers:
 *   pst_charset_canon      the iconv name of an allowed charset label
 *   pst_charset_to_utf8    convert bytes in a charset, appending UTF-8
 *   pst_utf8_sanitize      append bytes as valid UTF-8 (bad bytes -> U+FFFD)
 *   pst_utf8_valid         whether bytes are valid UTF-8
 *   pst_charset_thread_cleanup  release this thread's converters
 *
 * Only charsets on a fixed allow-list are converted (the ones mail really
 * uses: UTF-8, ISO-8859-x, Windows-125x, KOI8, the CJK legacy sets); any
 * other label is refused with -ENOENT so a message cannot make postern load
 * arbitrary gconv modules. Labels follow common practice where mail
 * disagrees with the registry: gb2312 and gbk decode as GB18030, ks_c_5601
 * and euc-kr as CP949, shift_jis as CP932, big5 as BIG5-HKSCS.
 *
 * Converters (iconv_t) are opened on first use and cached per thread, a
 * few per thread, least recently used out: an iconv_t must never be shared
 * between threads. Threads that exit release theirs; the loop thread may
 * call pst_charset_thread_cleanup at shutdown.
 *
 * Work is linear in the input; invalid or incomplete sequences become
 * U+FFFD and conversion carries on. Callers bound the input size.
 */
#ifndef PST_CORE_CHARSET_H
#define PST_CORE_CHARSET_H

#include <stdbool.h>
#include <stddef.h>

#include "core/tbuf.h"

/* NULL when the label is not on the allow-list. */
const char *pst_charset_canon(const char *label, size_t n);

/* 0, or -ENOENT for a charset not allowed (nothing appended). */
int pst_charset_to_utf8(const char *label, size_t labellen, const void *in,
                        size_t n, struct pst_tbuf *out);

/* Append in as UTF-8: invalid sequences and NUL become U+FFFD. */
void pst_utf8_sanitize(const void *in, size_t n, struct pst_tbuf *out);
bool pst_utf8_valid(const void *in, size_t n);

void pst_charset_thread_cleanup(void);

#endif
