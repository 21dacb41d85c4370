/*
 * crc32c.h - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of every spool record. Incremental: pass the previous value
 * (0 to start) to continue over several buffers.
 */
#ifndef PST_CORE_CRC32C_H
#define PST_CORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* pst_crc32c - crc of len bytes at p, continuing from crc (0 to start). */
uint32_t pst_crc32c(uint32_t crc, const void *p, size_t len);

#endif
