/*
 * mime_bench.c - throughput of the streaming MIME parser (core/mime.c),
 * with transfer decoding of every body, as the gateway runs it during DATA.
 *
 *   build/bin/mime_bench [seconds]      (default 3 seconds per case)
 *
 * Cases, built in memory (no disk in the loop):
 *   10mb-base64   a 10 MB message: a text part and five base64 attachments
 *   1000-parts    a multipart/mixed with 1,000 small text parts
 * fed in 64 KiB blocks (the size the gateway reads); each run's model is
 * checked (part count, no flags). Prints MB/s of message octets by wall
 * clock and by CPU time, messages/s and CPU time per message.
 * Results are recorded in docs/BENCHMARKS.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/charset.h"
#include "core/codec.h"
#include "core/mime.h"
#include "core/tbuf.h"

static double
now(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
add(struct pst_tbuf *b, const char *s)
{
    pst_tbuf_add(b, s, strlen(s));
}

static void
build_base64(struct pst_tbuf *b)
{
    static uint8_t raw[1536 * 1024];
    char *enc = malloc(PST_B64_ENC_OUT(sizeof(raw)));
    struct pst_b64_enc e;
    uint32_t x = 12345;

    for (size_t i = 0; i < sizeof(raw); i++) {
        x = x * 1103515245 + 12345;
        raw[i] = (uint8_t)(x >> 16);
    }
    pst_b64_enc_init(&e, 76);
    size_t n = pst_b64_enc_update(&e, raw, sizeof(raw), enc);
    n += pst_b64_enc_final(&e, enc + n);
    add(b, "From: a@example.org\r\nTo: b@example.net\r\n"
           "Subject: =?UTF-8?B?5Lit5paH?= attachments\r\n"
           "MIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=\"=_bench_b64\"\r\n\r\n"
           "--=_bench_b64\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           "Five attachments follow.\r\n");
    for (int i = 0; i < 5; i++) {
        char h[256];
        snprintf(h, sizeof(h),
                 "--=_bench_b64\r\nContent-Type: application/octet-stream\r\n"
                 "Content-Transfer-Encoding: base64\r\n"
                 "Content-Disposition: attachment; filename=\"f%d.bin\"\r\n\r\n",
                 i);
        add(b, h);
        pst_tbuf_add(b, enc, n);
    }
    add(b, "--=_bench_b64--\r\n");
    free(enc);
}

static void
build_parts(struct pst_tbuf *b)
{
    add(b, "From: a@example.org\r\nSubject: many parts\r\n"
           "MIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=\"=_bench_parts\"\r\n\r\n");
    for (int i = 0; i < 1000; i++) {
        char h[512];
        snprintf(h, sizeof(h),
                 "--=_bench_parts\r\n"
                 "Content-Type: text/plain; charset=\"utf-8\"; name=\"p%d.txt\"\r\n"
                 "Content-Transfer-Encoding: quoted-printable\r\n"
                 "Content-Disposition: attachment; filename=\"p%d.txt\"\r\n\r\n"
                 "Part %d of the benchmark: caf=C3=A9, a soft=\r\nbreak, and "
                 "some more text to make a realistic small part.\r\n",
                 i, i, i);
        add(b, h);
    }
    add(b, "--=_bench_parts--\r\n");
}

static uint64_t sink;

static void
on_body(void *arg, struct pst_mime_part *part, const void *d, size_t n)
{
    sink += n + ((const unsigned char *)d)[0];
}

static void
run(const char *name, const struct pst_tbuf *b, unsigned want_parts,
    double seconds)
{
    static const struct pst_mime_callbacks cb = {NULL, on_body, NULL};
    unsigned iters = 0;
    double t0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID), t1;

    do {
        struct pst_mime_parser *p = pst_mime_parser_new(NULL, &cb, NULL);
        for (size_t i = 0; i < b->len; i += 65536)
            pst_mime_feed(p, b->p + i,
                          b->len - i < 65536 ? b->len - i : 65536);
        struct pst_msg *m = pst_mime_finish(p);
        if (m->nparts != want_parts || m->flags != 0) {
            fprintf(stderr, "%s: unexpected parse (%u parts, flags %x)\n",
                    name, m->nparts, m->flags);
            exit(1);
        }
        pst_msg_free(m);
        iters++;
        t1 = now(CLOCK_MONOTONIC);
    } while (t1 - t0 < seconds && iters < 100000);
    double cpu = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
    double mb = (double)b->len * iters / 1e6;
    /* MB per CPU second does not depend on what else the machine runs */
    printf("%-12s %6.2f MB %5u runs %7.1f MB/s wall %7.1f MB/s CPU %7.1f "
           "msg/s %7.3f ms CPU/msg\n",
           name, (double)b->len / 1e6, iters, mb / (t1 - t0), mb / cpu,
           iters / (t1 - t0), cpu * 1e3 / iters);
}

int
main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    struct pst_tbuf a, b;

    if (seconds <= 0 || seconds > 60)
        seconds = 3.0;
    pst_tbuf_init(&a);
    pst_tbuf_init(&b);
    build_base64(&a);
    build_parts(&b);
    run("10mb-base64", &a, 7, seconds);
    run("1000-parts", &b, 1001, seconds);
    pst_tbuf_free(&a);
    pst_tbuf_free(&b);
    pst_charset_thread_cleanup();
    return sink == 42;              /* keep the work observable */
}
