/*
 * crc32c_test.c - CRC-32C against published check values (RFC 3720
 * appendix B.4 and the "123456789" check), and incremental use.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/crc32c.h"

static void
test_check_values(void **state)
{
    uint8_t b[32];
    (void)state;

    assert_int_equal(pst_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(pst_crc32c(0, "", 0), 0);
    memset(b, 0, sizeof(b));
    assert_int_equal(pst_crc32c(0, b, 32), 0x8A9136AAu);
    memset(b, 0xff, sizeof(b));
    assert_int_equal(pst_crc32c(0, b, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)i;
    assert_int_equal(pst_crc32c(0, b, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)(31 - i);
    assert_int_equal(pst_crc32c(0, b, 32), 0x113FDB5Cu);
}

static void
test_incremental(void **state)
{
    const char *s = "The quick brown fox jumps over the lazy dog, twice.";
    size_t n = strlen(s);
    uint32_t whole = pst_crc32c(0, s, n);
    (void)state;

    for (size_t cut = 0; cut <= n; cut++) {
        uint32_t c = pst_crc32c(0, s, cut);
        c = pst_crc32c(c, s + cut, n - cut);
        assert_int_equal(c, whole);
    }
}

/* the instruction and the table agree at every length and alignment,
 * from any starting value */
static void
test_both_ways_agree(void **state)
{
    uint8_t b[300];
    uint32_t seed = 0x12345678u;
    (void)state;

    for (size_t i = 0; i < sizeof(b); i++)
        b[i] = (uint8_t)(i * 131u + 7u);
    print_message("crc32c by %s\n",
                  pst__crc32c_hw() ? "instruction" : "table");
    for (size_t off = 0; off < 16; off++)
        for (size_t n = 0; n + off <= sizeof(b); n++) {
            assert_int_equal(pst_crc32c(seed, b + off, n),
                             pst__crc32c_table(seed, b + off, n));
            seed = seed * 1103515245u + 12345u;
        }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_values),
        cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_both_ways_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
