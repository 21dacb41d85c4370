/*
 * filters_bench.c - CPU cost of the filter chain per message, in process:
 * a 1 KiB message with 12 header fields through the headers module (the
 * Authentication-Results boundary plus remove, capture rewrite, subject
 * tag, masquerade of From/To/Cc and an added field), the edit blob built,
 * and the edited message produced by the applier as delivery would.
 *
 *   build/bin/filters_bench [MESSAGES]
 *
 * Prints microseconds per message for the chain (all phases) and for the
 * applier. Not run by ctest; figures in docs/BENCHMARKS.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filters/chain.h"
#include "queue/edits.h"

static const struct pst_fhost test_host = {
    .hostname = "mx.postern.test",
    .authserv_id = "mx.bench",
};

static void
never(void *arg, const struct pst_fres *r)
{
    abort();
}

int
main(int argc, char **argv)
{
    static const char conf_text[] =
        "filters = ({ module = \"headers\";"
        " rules = ("
        "  { remove = \"^X-Spam-\"; },"
        "  { rewrite = \"Subject\"; match = \"^\\\\[ext\\\\] *(.*)$\";"
        "    replace = \"$1\"; },"
        "  { tag_subject = \"[EXTERNAL]\"; },"
        "  { masquerade = \"corp.example\"; as = \"example.com\"; },"
        "  { add = \"X-Gateway\"; value = \"postern\"; top = true; }"
        " ); });";
    unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 20000;
    char msg[4096];
    int hl = snprintf(msg, sizeof(msg),
        "Received: from a.example (a.example [192.0.2.1])\r\n"
        "\tby mx.bench; Sun, 22 Nov 2026 01:00:00 +0000\r\n"
        "Authentication-Results: mx.bench; spf=pass\r\n"
        "From: \"Doe, John\" <john@corp.example>\r\n"
        "To: dev@sub.corp.example, Friends: a@corp.example, b@o.example;\r\n"
        "Cc: =?UTF-8?B?SsOpcsO0bWU=?= <j@corp.example>\r\n"
        "Subject: [ext] quarterly report\r\n"
        "X-Spam-Score: 9\r\n"
        "Message-ID: <1@a.example>\r\n"
        "Date: Sun, 22 Nov 2026 01:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n");
    size_t len = (size_t)hl;
    while (len < 1024) {
        memcpy(msg + len, "0123456789abcdefghijklmnopqrstuvwxyz\r\n", 38);
        len += 38;
    }
    config_t cf;
    struct pst_err err = {0};
    struct pst_chain *ch;
    config_init(&cf);
    if (!config_read_string(&cf, conf_text) ||
        pst_chain_load(config_lookup(&cf, "filters"), "bench", &test_host, &ch, &err))
        return 1;
    config_destroy(&cf);
    pst_log_set_level(PST_LOG_WARN);
    uv_loop_t loop;
    struct pst_frt *rt;
    uv_loop_init(&loop);
    pst_frt_new(&loop, 1, &rt);
    struct pst_envelope env;
    pst_envelope_init(&env);
    struct pst_fsess *fs = pst_fsess_new(rt, ch, 1, &env, never, NULL);
    struct pst_tbuf blob = {0}, out = {0};
    uint64_t t_chain = 0, t_apply = 0;
    size_t out_len = 0;
    for (unsigned i = 0; i < n; i++) {
        struct pst_fres r;
        uint64_t t0 = uv_hrtime();
        pst_fsess_msg_begin(fs, false);
        pst_fsess_run(fs, PST_FP_MAIL, "a@corp.example", &r);
        pst_fsess_run(fs, PST_FP_RCPT, "b@example.org", &r);
        pst_fsess_msg_data(fs, msg, len);
        pst_fsess_run(fs, PST_FP_EOM, NULL, &r);
        blob.len = 0;
        pst_fsess_edits(fs, &blob);
        pst_fsess_msg_end(fs);
        uint64_t t1 = uv_hrtime();
        out.len = 0;
        pst_edits_apply_mem(blob.p, blob.len, msg, len, &out);
        t_apply += uv_hrtime() - t1;
        t_chain += t1 - t0;
        out_len = out.len;
    }
    printf("messages=%u size=%zu edited_size=%zu blob=%zu chain=%.2f us/msg "
           "apply=%.2f us/msg\n", n, len, out_len, blob.len,
           (double)t_chain / n / 1000.0, (double)t_apply / n / 1000.0);
    pst_fsess_free(fs);
    pst_tbuf_free(&blob);
    pst_tbuf_free(&out);
    pst_chain_free(ch);
    pst_frt_close(rt);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    pst_envelope_free(&env);
    return 0;
}
