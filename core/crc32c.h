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

/* for the unit test: the table version, always (valid after a first
 * pst_crc32c or pst__crc32c_hw call), and whether pst_crc32c uses the
 * CPU's instruction instead */
uint32_t pst__crc32c_table(uint32_t crc, const void *p, size_t len);
int pst__crc32c_hw(void);

#endif
