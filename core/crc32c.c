/*
 * crc32c.c - CRC-32C: the SSE4.2 crc32 instruction where the CPU has it
 * (8 bytes an instruction), else a table, slicing by 8 bytes. Which one is
 * decided once, on first use; both give the same values (the unit test
 * compares them at every length and alignment). The check value of
 * "123456789" is 0xE3069283 (tests/unit/crc32c_test.c).
 *
 * The spool checksums every record it writes and every record it reads
 * back (a message's text included), so this is on the path of every
 * message: the table costs about 2.5 instructions a byte, the instruction
 * about 0.2.
 */
#include "core/crc32c.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define HAVE_X86_CRC 1
#endif

static uint32_t table[8][256];
static pthread_once_t once = PTHREAD_ONCE_INIT;
static uint32_t (*impl)(uint32_t, const unsigned char *, size_t);

/* pst__crc32c_table - see crc32c.h. */
uint32_t
pst__crc32c_table(uint32_t crc, const void *p, size_t len)
{
    const unsigned char *b = p;
    crc = ~crc;
    while (len >= 8) {
        uint32_t lo = crc ^ ((uint32_t)b[0] | (uint32_t)b[1] << 8 |
                             (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
        uint32_t hi = (uint32_t)b[4] | (uint32_t)b[5] << 8 |
                      (uint32_t)b[6] << 16 | (uint32_t)b[7] << 24;
        crc = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^
              table[5][(lo >> 16) & 0xff] ^ table[4][lo >> 24] ^
              table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^
              table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
        b += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ table[0][(crc ^ *b++) & 0xff];
    return ~crc;
}

static uint32_t
by_table(uint32_t crc, const unsigned char *b, size_t len)
{
    return pst__crc32c_table(crc, b, len);
}

#ifdef HAVE_X86_CRC
__attribute__((target("sse4.2"))) static uint32_t
by_instruction(uint32_t crc, const unsigned char *b, size_t len)
{
    uint64_t c = ~crc;
    for (; len > 0 && ((uintptr_t)b & 7) != 0; len--)
        c = _mm_crc32_u8((uint32_t)c, *b++);
    for (; len >= 8; len -= 8, b += 8) {
        uint64_t v;
        memcpy(&v, b, 8);
        c = _mm_crc32_u64(c, v);
    }
    for (; len > 0; len--)
        c = _mm_crc32_u8((uint32_t)c, *b++);
    return ~(uint32_t)c;
}
#endif

static void
init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] >> 8) ^
                          table[0][table[t - 1][i] & 0xff];
    impl = by_table;
#ifdef HAVE_X86_CRC
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2"))
        impl = by_instruction;
#endif
}

uint32_t
pst_crc32c(uint32_t crc, const void *p, size_t len)
{
    pthread_once(&once, init);
    return impl(crc, p, len);
}

/* pst__crc32c_hw - see crc32c.h. */
int
pst__crc32c_hw(void)
{
    pthread_once(&once, init);
    return impl != by_table;
}
