/*
 * fuzz_spool_scan.c - libFuzzer target for what recovery reads from disk:
 * the input is a whole spool file. pst__spool_scan must classify it (ok,
 * corrupt, incomplete) without crashing or leaking, and a file it accepts
 * must stream back through the reader (each CHUNK's CRC checked again,
 * filter edits applied) without reading past its records.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "queue/record.h"
#include "queue/spool_int.h"
#include "queue/transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pst_scan s;
    char why[160], path[64];
    int fd = memfd_create("spool", MFD_CLOEXEC);

    if (fd < 0)
        abort();
    if (size && write(fd, data, size) != (ssize_t)size)
        abort();
    int rc = pst__spool_scan(fd, &s, why, sizeof(why));
    if (rc < 0 || rc > PST_SCAN_INCOMPLETE)
        abort();
    if (rc == PST_SCAN_OK) {
        if (s.env.nrcpts == 0 || s.good_end > size ||
            s.env_off > s.good_end || s.data_off > s.env_off)
            abort();
        struct pst_spool_reader *r;
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        struct pst_spool_ref ref = {.dirfd = AT_FDCWD,
                                    .data_off = s.data_off,
                                    .data_end = s.env_off,
                                    .size = s.msg_size};
        if (pst__reader_open(&r, &ref, path) == 0) {
            char buf[4096];
            ssize_t n;
            uint64_t total = 0;
            while ((n = pst_spool_reader_read(r, buf, sizeof(buf))) > 0)
                total += (uint64_t)n;
            if (n == 0 && total > 64u * 1024 * 1024)
                abort();
            pst__reader_close(r);
        }
        pst__scan_free(&s);
    }
    close(fd);
    return 0;
}
