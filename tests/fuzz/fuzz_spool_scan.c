/*
 * fuzz_spool_scan.c - libFuzzer target for what recovery reads from disk.
 * The input is taken twice:
 *   - as a whole message file: pst__spool_scan must classify it (ok,
 *     corrupt, incomplete) without crashing or leaking, and a file it
 *     accepts must stream back through the reader (each CHUNK's CRC
 *     checked again, filter edits applied) without reading past its
 *     records;
 *   - as the body of a log segment (salt: its first four bytes): at every
 *     16-byte boundary pst__group_parse must accept a group or not, never
 *     read past what it was given; an accepted group streams back through
 *     the reader, and its copy as a message file (pst__file_from_group,
 *     what a message leaving the log becomes) must scan OK with the same
 *     ID, size and recipients.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "queue/record.h"
#include "queue/spool_int.h"
#include "queue/transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Read the whole text through a reader; abort on an impossible size. */
static void
drain(const struct pst_spool_ref *ref, const char *name)
{
    struct pst_spool_reader *r;
    if (pst__reader_open(&r, ref, name) != 0)
        return;
    char buf[4096];
    ssize_t n;
    uint64_t total = 0;
    while ((n = pst_spool_reader_read(r, buf, sizeof(buf))) > 0)
        total += (uint64_t)n;
    if (n == 0 && total > 64u * 1024 * 1024)
        abort();
    pst__reader_close(r);
}

static void
as_file(int fd, size_t size)
{
    struct pst_scan s;
    char why[160], path[64];
    int rc = pst__spool_scan(fd, &s, why, sizeof(why));
    if (rc < 0 || rc > PST_SCAN_INCOMPLETE)
        abort();
    if (rc != PST_SCAN_OK)
        return;
    if (s.env.nrcpts == 0 || s.good_end > size || s.env_off > s.good_end ||
        s.data_off > s.env_off)
        abort();
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    struct pst_spool_ref ref = {.fd = -1, .dirfd = AT_FDCWD,
                                .data_off = s.data_off,
                                .data_end = s.env_off, .size = s.msg_size,
                                .edits_off = s.edits_off};
    drain(&ref, path);
    pst__scan_free(&s);
}

static void
as_segment(int fd, const uint8_t *data, size_t size)
{
    if (size < 4)
        return;
    uint32_t salt = (uint32_t)data[0] | (uint32_t)data[1] << 8 |
                    (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24;
    for (size_t off = 0; off + PST_MARK_LEN <= size; off += PST_GROUP_ALIGN) {
        struct pst_scan s;
        int mark;
        int rc = pst__group_parse(data + off, size - off, off, salt, &s,
                                  &mark);
        if (rc != PST_GROUP_OK)
            continue;
        if (s.good_end > size + PST_GROUP_ALIGN || s.env_off >= s.good_end ||
            s.data_off > s.env_off || mark < -1 || mark > PST_MARK_MOVED)
            abort();
        struct pst_spool_ref ref = {.fd = fd, .seed = salt,
                                    .data_off = s.data_off,
                                    .data_end = s.env_off,
                                    .size = s.msg_size,
                                    .edits_off = s.edits_off};
        drain(&ref, "");
        /* the group as the message file it becomes when it leaves the
         * log: always a valid file, the same message */
        struct pst_tbuf out = {0};
        struct pst_scan fo, back;
        char why[160];
        size_t glen = (size_t)PST_MIN(s.good_end, (uint64_t)size) - off;
        if (pst__file_from_group(data + off, glen, salt, &out, &fo) != 0)
            abort();
        int f2 = memfd_create("file", MFD_CLOEXEC);
        if (f2 < 0 || write(f2, out.p, out.len) != (ssize_t)out.len)
            abort();
        if (pst__spool_scan(f2, &back, why, sizeof(why)) != PST_SCAN_OK ||
            strcmp(back.qid, s.qid) != 0 || back.msg_size != s.msg_size ||
            back.env.nrcpts != s.env.nrcpts ||
            back.env_off != fo.env_off || back.edits_off != fo.edits_off ||
            (s.edits_off == 0) != (fo.edits_off == 0))
            abort();
        pst__scan_free(&back);
        close(f2);
        pst_tbuf_free(&out);
        pst__scan_free(&s);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("spool", MFD_CLOEXEC);

    if (fd < 0)
        abort();
    if (size && write(fd, data, size) != (ssize_t)size)
        abort();
    as_file(fd, size);
    as_segment(fd, data, size);
    close(fd);
    return 0;
}
