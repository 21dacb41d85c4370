/*
 * rfc2047.h - decoding the non-ASCII forms of header text: RFC 2047
 * encoded words in header values, and MIME parameter lists with RFC 2231
 * continuations, charsets and languages.
 *
 * What this offers:
 *   pst_rfc2047_decode   header value -> UTF-8, encoded words decoded
 *   pst_params_parse     "; a=b; c*0*=..." -> a list of (name, UTF-8 value)
 *   pst_params_get       one parameter's value by name
 *   pst_params_free
 *
 * Encoded words ("=?charset[*lang]?B|Q?text?=") are decoded wherever a
 * complete one appears, as mail readers do (RFC 2047 asks for whitespace
 * around them; senders often omit it). Whitespace between two encoded
 * words is dropped, and adjacent words in the same charset are joined
 * before conversion so a character split across words survives. A word
 * that is malformed (bad base64, encoded text with blanks) or whose
 * charset is not allowed (see charset.h) is left as it is and counted in
 * `malformed`. Q: "_" is a space, "=XX" a byte, a stray "=" stays. Text
 * outside encoded words is passed as UTF-8 (bad bytes become U+FFFD).
 * At most max_words words are decoded; the rest stay as they are and
 * `limit` is set.
 */
#ifndef PST_CORE_RFC2047_H
#define PST_CORE_RFC2047_H

#include <stdbool.h>
#include <stddef.h>

#include "core/tbuf.h"

struct pst_rfc2047_stats {
    unsigned words;                 /* encoded words decoded */
    unsigned malformed;             /* left as they are */
    bool limit;                     /* more than max_words */
};

/* Appends the decoded UTF-8 text of in[0..n) to out (not NUL-terminated;
 * use pst_tbuf_cstr). st may be NULL. */
void pst_rfc2047_decode(const char *in, size_t n, unsigned max_words,
                        struct pst_tbuf *out, struct pst_rfc2047_stats *st);

/*
 * MIME parameters (RFC 2045 5.1, RFC 2231). The input is the text after
 * the type/subtype or disposition token. Names are lowercased; values are
 * unquoted (quoted-pair escapes removed) and UTF-8. RFC 2231 sections
 * name*0, name*1*, ... are joined in order (a gap ends the value used), the
 * extended ones percent-decoded and converted from the charset named in
 * the first section; the language is dropped. When a name has both a
 * plain and an RFC 2231 form, the RFC 2231 form is used (it is the one
 * written for readers that understand it). Comments are skipped. An
 * unquoted value with blanks in it is taken up to the next ';' (common
 * sender bug). The first of duplicate names wins. The values that lost
 * are kept in `alt`: a duplicate's, a plain form an RFC 2231 one
 * replaced, "name*" beside "name*0", the joining with a repeated
 * section's other occurrence, the joining of every section past a gap.
 * Readers differ on which wins, so a filter that judges a name
 * (attachments) looks at every one.
 *
 * At most max raw parameters are read, at most 8 joinings of one RFC
 * 2231 form made, and the values in alt take at most three times the
 * input's octets (`limit` set beyond: then not every value a reader might
 * take is here). `bad` is set for syntax errors, broken continuations,
 * duplicates, bad percent escapes and charsets that are not allowed.
 */
struct pst_param {
    char *name;
    char *value;
};

struct pst_params {
    struct pst_param *v;            /* one per name: the value used */
    unsigned n;
    struct pst_param *alt;          /* the other values given for a name */
    unsigned nalt;
    size_t alt_room;                /* octets alt may still take */
    bool limit;
    bool bad;
};

void pst_params_parse(const char *s, size_t n, unsigned max,
                      struct pst_params *out);
const char *pst_params_get(const struct pst_params *ps, const char *name);
void pst_params_free(struct pst_params *ps);

/* Whether c may appear in an RFC 2045 token (printable ASCII, no
 * tspecials). */
bool pst_mime_token_char(int c);

/* Skip RFC 5322 CFWS (blanks, CR/LF, nested comments) from s; returns the
 * first position after it. Shared with the MIME header field parsers. */
const char *pst_skip_cfws(const char *s, const char *end);

#endif
