/*
 * attach_bench.c - cost of the attachments module per message, in process:
 * the chain with the module (the complete policy of docs/FILTERS.md: names,
 * detected types, archives) against the same chain without it (the MIME
 * model still built, as mime.policy does), for two messages:
 *
 *   text   a 1 KiB text/plain message, no attachment
 *   big    a 5 MB message with several attachments: a 1.5 MB PDF-like
 *          file, a 1.5 MB PNG-like file, a zip of 40 deflated text files
 *          (4 MB uncompressed), one stripped executable and a text part
 *
 * Each message: the text fed in 64 KiB pieces, the message phases run (the
 * module's scan goes to the filter worker pool: the loop waits for it), the
 * edit blob built. The stored text is a core/textsrc.h memory copy (the
 * gateway's is the spool file, read with pread from the page cache).
 *
 *   build/bin/attach_bench [TEXT_MESSAGES] [BIG_MESSAGES] [both|none|attachments]
 *
 * The third argument runs one chain only: with callgrind, the difference
 * of two runs' instruction counts divided by the difference of their
 * message counts is a per-message figure that does not move with load.
 *
 * Prints, per case and chain, wall and CPU microseconds per message (CPU:
 * getrusage of the whole process, every thread, and of the children that
 * walked archives) and the difference the
 * module makes. Warm-up messages (libmagic loads its database once per
 * worker thread) are not counted. Not run by ctest; figures in
 * docs/BENCHMARKS.md.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/tbuf.h"
#include "filters/chain.h"
#include "queue/edits.h"

#define WORKERS PST_FILTER_WORKERS

static const char policy[] =
    "filters = ({ module = \"attachments\";"
    " rules = ("
    "  { name = \"exe\"; extensions = [\"exe\", \"scr\", \"com\", \"pif\","
    "    \"bat\", \"cmd\", \"js\", \"vbs\", \"hta\", \"msi\", \"lnk\"];"
    "    action = \"strip\"; },"
    "  { name = \"executable\"; detected = [\"application/x-dosexec\","
    "    \"application/vnd.microsoft.portable-executable\","
    "    \"application/x-executable\", \"application/x-sharedlib\"];"
    "    action = \"strip\"; },"
    "  { name = \"double\"; regex = \"\\\\.(pdf|docx?|jpe?g)\\\\.[a-z0-9]{2,4}$\";"
    "    action = \"reject\"; },"
    "  { name = \"macro\"; glob = [\"*.docm\", \"*.xlsm\"];"
    "    action = \"quarantine\"; }"
    " ); });";

struct run {
    uv_loop_t *loop;
    int done;
    struct pst_fres res;
};

static void
on_result(void *arg, const struct pst_fres *r)
{
    struct run *x = arg;
    x->done = 1;
    x->res = *r;
}

static struct pst_textsrc *
text_of(void *arg)
{
    struct pst_tbuf *t = arg;
    return pst_textsrc_mem(t->p, t->len);
}

/* CPU of this process and of the children it has reaped (each archive is
 * walked in a child of its own: filters/attach_jail.c). */
static double
cpu_us(void)
{
    double us = 0;
    const int who[] = {RUSAGE_SELF, RUSAGE_CHILDREN};
    for (int i = 0; i < 2; i++) {
        struct rusage ru;
        getrusage(who[i], &ru);
        us += (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
              ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
    }
    return us;
}

/* One message through the chain; returns the verdict. */
static enum pst_verdict
one(struct pst_fsess *fs, struct run *x, struct pst_tbuf *msg,
    struct pst_tbuf *blob)
{
    struct pst_fres r;
    pst_fsess_msg_begin(fs, false);
    pst_fsess_msg_stored(fs, "0000000000000001", text_of, msg);
    pst_fsess_run(fs, PST_FP_MAIL, "a@example.com", &r);
    pst_fsess_run(fs, PST_FP_RCPT, "b@example.org", &r);
    for (size_t o = 0; o < msg->len; o += 65536)
        pst_fsess_msg_data(fs, msg->p + o,
                           msg->len - o < 65536 ? msg->len - o : 65536);
    x->done = 0;
    if (pst_fsess_run(fs, PST_FP_EOM, NULL, &r) == 1) {
        while (!x->done)
            uv_run(x->loop, UV_RUN_ONCE);
        r = x->res;
    }
    blob->len = 0;
    pst_fsess_edits(fs, blob);
    pst_fsess_msg_end(fs);
    return r.verdict;
}

static void
measure(const char *name, struct pst_chain *ch, struct pst_frt *rt,
        uv_loop_t *loop, struct pst_tbuf *msg, unsigned n, const char *label)
{
    struct pst_envelope env;
    struct run x = {loop, 0, {0}};
    struct pst_tbuf blob = {0};
    pst_envelope_init(&env);
    struct pst_fsess *fs = pst_fsess_new(rt, ch, 1, &env, on_result, &x);
    pst_fsess_want_mime(fs, true);
    enum pst_verdict v = PST_CONTINUE;
    for (unsigned i = 0; i < 4 * WORKERS; i++)   /* warm-up */
        v = one(fs, &x, msg, &blob);
    double c0 = cpu_us();
    uint64_t t0 = uv_hrtime();
    for (unsigned i = 0; i < n; i++)
        one(fs, &x, msg, &blob);
    double wall = (double)(uv_hrtime() - t0) / 1000.0 / n;
    double cpu = (cpu_us() - c0) / n;
    printf("%-5s %-14s messages=%u size=%zu verdict=%d blob=%zu "
           "wall=%.1f us/msg cpu=%.1f us/msg\n", name, label, n, msg->len,
           (int)v, blob.len, wall, cpu);
    pst_fsess_free(fs);
    pst_tbuf_free(&blob);
    pst_envelope_free(&env);
}

static void
b64(struct pst_tbuf *t, const unsigned char *p, size_t n)
{
    static const char a[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 57) {
        size_t k = n - i < 57 ? n - i : 57;
        for (size_t j = 0; j < k; j += 3) {
            unsigned v = (unsigned)p[i + j] << 16;
            if (j + 1 < k)
                v |= (unsigned)p[i + j + 1] << 8;
            if (j + 2 < k)
                v |= p[i + j + 2];
            char q[4] = {a[v >> 18 & 63], a[v >> 12 & 63],
                         j + 1 < k ? a[v >> 6 & 63] : '=',
                         j + 2 < k ? a[v & 63] : '='};
            pst_tbuf_add(t, q, 4);
        }
        pst_tbuf_add(t, "\r\n", 2);
    }
}

static void
attach(struct pst_tbuf *t, const char *type, const char *name,
       const unsigned char *p, size_t n)
{
    pst_tbuf_printf(t, "--b\r\nContent-Type: %s\r\nContent-Disposition: "
                       "attachment; filename=\"%s\"\r\n"
                       "Content-Transfer-Encoding: base64\r\n\r\n",
                    type, name);
    b64(t, p, n);
}

/* A zip (deflated members) of 40 text files, written with libarchive. */
#include <archive.h>
#include <archive_entry.h>

static la_ssize_t
zw(struct archive *a, void *d, const void *buf, size_t n)
{
    pst_tbuf_add(d, buf, n);
    return (la_ssize_t)n;
}

static void
make_zip(struct pst_tbuf *z)
{
    struct archive *a = archive_write_new();
    archive_write_set_format_zip(a);
    archive_write_open(a, z, NULL, zw, NULL);
    char *text = malloc(100000);
    unsigned s = 1;
    for (int f = 0; f < 40; f++) {
        for (int i = 0; i < 100000; i++) {
            s = s * 1103515245 + 12345;
            text[i] = "etaoin shrdlu\n"[(s >> 16) % 14];
        }
        char name[40];
        snprintf(name, sizeof(name), "docs/file%02d.txt", f);
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, name);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, 100000);
        archive_write_header(a, e);
        archive_write_data(a, text, 100000);
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
    free(text);
}

int
main(int argc, char **argv)
{
    unsigned nt = argc > 1 ? (unsigned)atoi(argv[1]) : 20000;
    unsigned nb = argc > 2 ? (unsigned)atoi(argv[2]) : 40;
    const char *which = argc > 3 ? argv[3] : "both";
    bool run_none = strcmp(which, "attachments") != 0;
    bool run_with = strcmp(which, "none") != 0;
    static const char hdr[] =
        "Received: from a.example (a.example [192.0.2.1])\r\n"
        "\tby mx.bench; Sun, 22 Nov 2026 01:00:00 +0000\r\n"
        "From: \"Doe, John\" <john@example.com>\r\n"
        "To: dev@example.org\r\n"
        "Subject: quarterly report\r\n"
        "Message-ID: <1@a.example>\r\n"
        "Date: Sun, 22 Nov 2026 01:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n";
    struct pst_tbuf text, big;
    pst_tbuf_init(&text);
    pst_tbuf_init(&big);
    pst_tbuf_printf(&text, "%sContent-Type: text/plain\r\n\r\n", hdr);
    while (text.len < 1024)
        pst_tbuf_puts(&text, "0123456789abcdefghijklmnopqrstuvwxyz\r\n");

    pst_tbuf_printf(&big, "%sContent-Type: multipart/mixed; boundary=b\r\n"
                          "\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
                          "See the attached files.\r\n", hdr);
    size_t n = 1536 * 1024;
    unsigned char *blob = malloc(n);
    unsigned s = 7;
    for (size_t i = 0; i < n; i++) {
        s = s * 1103515245 + 12345;
        blob[i] = (unsigned char)(s >> 16);
    }
    memcpy(blob, "%PDF-1.7\n", 9);
    attach(&big, "application/pdf", "report.pdf", blob, n);
    memcpy(blob, "\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16);
    attach(&big, "image/png", "chart.png", blob, n);
    struct pst_tbuf z;
    pst_tbuf_init(&z);
    make_zip(&z);
    attach(&big, "application/zip", "docs.zip", (unsigned char *)z.p, z.len);
    memset(blob, 0, 4096);
    memcpy(blob, "MZ", 2);
    attach(&big, "application/octet-stream", "setup.exe", blob, 4096);
    pst_tbuf_puts(&big, "--b--\r\n");
    free(blob);
    pst_tbuf_free(&z);

    pst_log_set_level(PST_LOG_WARN);
    config_t cf;
    struct pst_err err = {0};
    struct pst_chain *with, *without = pst_chain_new();
    config_init(&cf);
    if (!config_read_string(&cf, policy) ||
        pst_chain_load(config_lookup(&cf, "filters"), "bench", NULL, &with, &err)) {
        fprintf(stderr, "config: %s\n", pst_err_first(&err));
        return 1;
    }
    config_destroy(&cf);
    uv_loop_t loop;
    struct pst_frt *rt;
    uv_loop_init(&loop);
    pst_frt_new(&loop, WORKERS, &rt);
    if (run_none && nt)
        measure("text", without, rt, &loop, &text, nt, "no-filters");
    if (run_with && nt)
        measure("text", with, rt, &loop, &text, nt, "attachments");
    if (run_none && nb)
        measure("big", without, rt, &loop, &big, nb, "no-filters");
    if (run_with && nb)
        measure("big", with, rt, &loop, &big, nb, "attachments");
    pst_chain_free(with);
    pst_chain_free(without);
    pst_frt_close(rt);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    pst_tbuf_free(&text);
    pst_tbuf_free(&big);
    return 0;
}
