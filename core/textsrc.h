/*
 * textsrc.h - the stored text of one message, shared by reference and read
 * by offset from any thread.
 *
 * What this offers:
 *   pst_textsrc_new      a source over a read function (the spool's file)
 *   pst_textsrc_mem      a source over a copy of bytes in memory
 *   pst_textsrc_ref / _unref   share it; the last unref releases it
 *   pst_textsrc_read     octets at an offset of the message text
 *   pst_textsrc_size     octets the source holds
 *
 * Why: filters read parts' decoded content on worker threads while the
 * session that received the message may end at any time. A source holds
 * its own handle on the text (the spool gives it its own descriptor), so
 * a job that keeps a reference reads safely whatever happens to the
 * session, and the storage behind it (a spool file today, shared segment
 * files later) stays hidden behind one read-by-offset function.
 *
 * Threads: ref, unref and read may be called from any thread; read must
 * be thread-safe for the function given (pread is). Reading may block on
 * I/O: never read on the loop thread.
 */
#ifndef PST_CORE_TEXTSRC_H
#define PST_CORE_TEXTSRC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct pst_textsrc;

/* read: up to len octets at off (off < size), the number read (0 only at
 * the end) or -errno. fini: releases arg, after the last unref. */
typedef ssize_t (*pst_textsrc_read_fn)(void *arg, void *buf, size_t len,
                                       uint64_t off);
typedef void (*pst_textsrc_fini_fn)(void *arg);

struct pst_textsrc *pst_textsrc_new(pst_textsrc_read_fn read,
                                    pst_textsrc_fini_fn fini, void *arg,
                                    uint64_t size);
/* pst_textsrc_mem - a source over a copy of p[0..n). */
struct pst_textsrc *pst_textsrc_mem(const void *p, size_t n);
struct pst_textsrc *pst_textsrc_ref(struct pst_textsrc *t);
void pst_textsrc_unref(struct pst_textsrc *t);
/* pst_textsrc_read - up to len octets at off: the number read, 0 at or
 * past the end, or -errno. */
ssize_t pst_textsrc_read(struct pst_textsrc *t, void *buf, size_t len,
                         uint64_t off);
uint64_t pst_textsrc_size(const struct pst_textsrc *t);

#endif
