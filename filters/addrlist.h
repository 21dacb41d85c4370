/*
 * addrlist.h - an RFC 5322 address-list parser (section 3.4, with the
 * obsolete forms of section 4.4 that real mail still carries) for header
 * fields such as From, To, Cc and Reply-To.
 *
 * It parses; it does not rebuild. Each mailbox is reported with the byte
 * ranges of its parts in the input, so a caller can change one part (the
 * domain, for masquerading) and copy every other byte - display names,
 * comments, quoted strings, encoded words, group syntax - as it was.
 *
 * Understood: name-addr and addr-spec mailboxes, quoted local parts and
 * display names with quoted-pairs, comments (nested, with quoted-pairs)
 * anywhere CFWS may appear, groups ("undisclosed: a@b, c@d;"), domain
 * literals, obs-route ("<@relay:user@host>"), obs-phrase dots, empty list
 * elements (obs-addr-list ", ,"), and RFC 2047 encoded words as the atoms
 * they are. UTF-8 (RFC 6532) is taken as atom text.
 *
 * Limits: PST_ADDRLIST_MAX mailboxes, comment nesting PST_ADDR_COMMENT_MAX;
 * beyond either the input is refused like a syntax error.
 */
#ifndef PST_FILTERS_ADDRLIST_H
#define PST_FILTERS_ADDRLIST_H

#include <stddef.h>

#define PST_ADDRLIST_MAX 1000
#define PST_ADDR_COMMENT_MAX 32

struct pst_addr {
    size_t start, end;              /* the mailbox, CFWS around excluded */
    size_t display_off, display_len; /* the phrase, raw; len 0 if none */
    size_t local_off, local_len;    /* local part as written (quoted or
                                       dot-atom, CFWS inside kept) */
    size_t domain_off, domain_len;  /* domain as written */
    int group;                      /* index of its group, or -1 */
};

struct pst_addrlist {
    struct pst_addr *v;
    size_t n;
    unsigned ngroups;
};

/*
 * pst_addrlist_parse - parse s[0..n) (an unfolded field body). Returns 0,
 * or -EINVAL with *errpos (if not NULL) at the offending byte, or -E2BIG
 * beyond the limits. out is always safe to free.
 */
int pst_addrlist_parse(const char *s, size_t n, struct pst_addrlist *out,
                       size_t *errpos);
void pst_addrlist_free(struct pst_addrlist *l);

#endif
