/*
 * util_test.c - core/util.c's shared helpers: the map-file line reader
 * (trimming, both comment styles, an overlong line reported with its
 * number and skipped, every bad line reported), pst_write_all through a
 * pipe smaller than the data, and the xorshift generator and its seed.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/net.h"
#include "core/util.h"

struct seen {
    char lines[16][64];
    int linenos[16];
    int n;
};

static int
collect(void *arg, char *line, int lineno, struct pst_err *err)
{
    struct seen *s = arg;
    assert_true(s->n < 16);
    snprintf(s->lines[s->n], sizeof(s->lines[0]), "%s", line);
    s->linenos[s->n++] = lineno;
    if (strcmp(line, "bad") == 0) {
        pst_err_add(err, "m", lineno, "bad line");
        return -EINVAL;
    }
    return 0;
}

static FILE *
text_file(const char *text)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    fputs(text, f);
    rewind(f);
    return f;
}

static void
test_map_lines(void **state)
{
    static const char text[] =
        "  alpha  \r\n"                 /* 1: trimmed */
        "# a comment\n"                 /* 2 */
        "\n"                            /* 3 */
        "\t \n"                         /* 4 */
        "beta # trailing\n"             /* 5 */
        "0123456789012345678901234\n"   /* 6: longer than 20 */
        "bad\n"                         /* 7: fn refuses it */
        "gamma";                        /* 8: no final line end */
    struct seen s = {0};
    struct pst_err err = {0};
    FILE *f = text_file(text);
    assert_int_equal(pst_map_lines(f, "m", 20, false, collect, &s, &err),
                     -EINVAL);
    fclose(f);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.lines[0], "alpha");
    assert_string_equal(s.lines[1], "beta # trailing");
    assert_string_equal(s.lines[2], "bad");
    assert_string_equal(s.lines[3], "gamma");
    assert_int_equal(s.linenos[0], 1);
    assert_int_equal(s.linenos[1], 5);
    assert_int_equal(s.linenos[2], 7);
    assert_int_equal(s.linenos[3], 8);
    assert_int_equal(err.count, 2);
    assert_string_equal(err.msgs[0], "m:6: line longer than 20 octets");
    assert_string_equal(err.msgs[1], "m:7: bad line");
    pst_err_free(&err);

    /* inline comments: '#' anywhere ends the line */
    memset(&s, 0, sizeof(s));
    f = text_file("beta # trailing\n#x\nx#\n");
    assert_int_equal(pst_map_lines(f, "m", 20, true, collect, &s, &err), 0);
    fclose(f);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.lines[0], "beta");
    assert_string_equal(s.lines[1], "x");
    assert_int_equal(err.count, 0);

    /* a line of exactly max octets is fine */
    memset(&s, 0, sizeof(s));
    f = text_file("01234567890123456789\n");
    assert_int_equal(pst_map_lines(f, "m", 20, true, collect, &s, &err), 0);
    fclose(f);
    assert_int_equal(s.n, 1);
}

static void *
drain_pipe(void *arg)
{
    int fd = *(int *)arg;
    size_t *total = malloc(sizeof(*total));
    char buf[4096];
    ssize_t n;
    *total = 0;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        *total += (size_t)n;
    return total;
}

static void
test_write_all(void **state)
{
    /* more than a pipe holds: write() returns short counts */
    size_t len = 1 << 20;
    char *data = malloc(len);
    int p[2];
    pthread_t th;
    void *res;
    memset(data, 'x', len);
    assert_int_equal(pipe(p), 0);
    assert_int_equal(pthread_create(&th, NULL, drain_pipe, &p[0]), 0);
    assert_int_equal(pst_write_all(p[1], data, len), 0);
    close(p[1]);
    pthread_join(th, &res);
    assert_int_equal(*(size_t *)res, len);
    free(res);
    close(p[0]);
    assert_int_equal(pst_write_all(p[1], data, 1), -EBADF);
    free(data);
}

static void
test_rand(void **state)
{
    uint64_t a = 12345, b = 12345;
    for (int i = 0; i < 100; i++)
        assert_true(pst_rand64(&a) == pst_rand64(&b));  /* deterministic */
    uint64_t s = pst_rand_seed();
    assert_true(s & 1);
    uint64_t first = pst_rand64(&s), again = pst_rand64(&s);
    assert_true(first != again);
}

/* pst_line_span against a byte loop: every position of CR/LF, across
 * the 256-octet windows, and texts with only one kind or neither */
static void
test_line_span(void **state)
{
    static char b[1100];
    uint64_t seed = 7;
    (void)state;
    for (int round = 0; round < 2000; round++) {
        size_t n = (size_t)(pst_rand64(&seed) % sizeof(b));
        int kinds = round % 4;      /* none, CR only, LF only, both */
        for (size_t i = 0; i < n; i++) {
            uint64_t r = pst_rand64(&seed) % (round % 8 < 4 ? 600 : 9);
            b[i] = (r == 0 && (kinds & 1))   ? '\r'
                   : (r == 1 && (kinds & 2)) ? '\n'
                                             : (char)('a' + r % 26);
        }
        for (size_t from = 0; from <= n; from += 1 + from / 3) {
            size_t want = 0;
            while (from + want < n && b[from + want] != '\r' &&
                   b[from + want] != '\n')
                want++;
            assert_int_equal(pst_line_span(b + from, n - from), want);
        }
    }
    assert_int_equal(pst_line_span("", 0), 0);
    assert_int_equal(pst_line_span("\r\n", 2), 0);
    assert_int_equal(pst_line_span("ab\ncd\r", 6), 2);
}

/* pst_ip_str's IPv4 text is inet_ntop's, for every octet value in
 * every place, and "?" where inet_ntop finds the buffer too small. */
static void
test_ip_str(void **state)
{
    char got[64], want[64];
    struct pst_ip ip = {.family = AF_INET};
    (void)state;
    for (unsigned v = 0; v < 256; v++)
        for (unsigned at = 0; at < 4; at++) {
            uint8_t a[4] = {(uint8_t)(v * 7), 10, (uint8_t)(255 - v), 1};
            a[at] = (uint8_t)v;
            memcpy(ip.addr, a, 4);
            assert_non_null(inet_ntop(AF_INET, a, want, sizeof(want)));
            assert_string_equal(pst_ip_str(&ip, got, sizeof(got)), want);
            for (size_t n = 1; n <= strlen(want) + 1; n++) {
                if (inet_ntop(AF_INET, a, want, (socklen_t)n) == NULL)
                    snprintf(want, n, "?");
                assert_string_equal(pst_ip_str(&ip, got, n), want);
            }
        }
    struct pst_ip six = {.family = AF_INET6};
    six.addr[15] = 1;
    assert_string_equal(pst_ip_str(&six, got, sizeof(got)), "::1");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_lines),
        cmocka_unit_test(test_write_all),
        cmocka_unit_test(test_rand),
        cmocka_unit_test(test_line_span),
        cmocka_unit_test(test_ip_str),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
