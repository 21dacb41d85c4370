/*
 * fuzz_filters.c - libFuzzer target for the filters' parsers of untrusted
 * text: the RFC 5322 address-list parser and the edit engine's header
 * view, edits and applier.
 *
 * For each input:
 *   1. parse it as an address list: every reported range must lie inside
 *      the input and be ordered (start <= local < domain <= end);
 *   2. run it as a message through a chain with the headers module
 *      (remove, rewrite, tag, masquerade, add): the edit blob must apply
 *      to the input, and every original field the rules did not touch
 *      must appear in the output byte for byte;
 *   3. feed a blob made of the input to the applier: it must refuse it or
 *      apply it without reading outside the message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filters/addrlist.h"
#include "filters/chain.h"
#include "queue/edits.h"

static const struct pst_fhost test_host = {
    .hostname = "mx.postern.test",
    .authserv_id = "mx.test",
};

static uv_loop_t loop;
static struct pst_frt *rt;
static struct pst_chain *ch;

static void
never(void *arg, const struct pst_fres *r)
{
    abort();                        /* headers never pends */
}

static void
init(void)
{
    static const char text[] =
        "filters = ({ module = \"headers\";"
        " rules = ("
        "  { remove = \"^X-Drop\"; },"
        "  { rewrite = \"Subject\"; match = \"^(.*)x(.*)$\";"
        "    replace = \"$2-$1\"; },"
        "  { tag_subject = \"[T]\"; },"
        "  { masquerade = \"a.test\"; as = \"b.test\"; },"
        "  { add = \"X-Added\"; value = \"v\"; top = true; }"
        " ); });";
    config_t cf;
    struct pst_err err = {0};
    pst_log_set_level(PST_LOG_ERR);
    config_init(&cf);
    if (!config_read_string(&cf, text) ||
        pst_chain_load(config_lookup(&cf, "filters"), "fuzz", &test_host, &ch, &err) != 0)
        abort();
    config_destroy(&cf);
    uv_loop_init(&loop);
    if (pst_frt_new(&loop, 1, &rt) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ch == NULL)
        init();
    if (size > 64 * 1024)
        return 0;

    /* 1. address list */
    struct pst_addrlist al;
    if (pst_addrlist_parse((const char *)data, size, &al, NULL) == 0) {
        for (size_t i = 0; i < al.n; i++) {
            const struct pst_addr *a = &al.v[i];
            if (a->end > size || a->start > a->local_off ||
                a->local_off + a->local_len > a->domain_off ||
                a->domain_off + a->domain_len > a->end)
                abort();
        }
    }
    pst_addrlist_free(&al);

    /* 2. a message through the headers module */
    struct pst_envelope env;
    struct pst_fres r;
    struct pst_tbuf blob = {0}, out = {0};
    pst_envelope_init(&env);
    struct pst_fsess *fs = pst_fsess_new(rt, ch, 1, &env, never, NULL);
    pst_fsess_msg_begin(fs, size & 1);
    size_t half = size / 3;
    pst_fsess_msg_data(fs, data, half);
    pst_fsess_msg_data(fs, data + half, size - half);
    if (pst_fsess_run(fs, PST_FP_EOM, NULL, &r) != 0)
        abort();
    int e = pst_fsess_edits(fs, &blob);
    if (e == 1 && pst_edits_apply_mem(blob.p, blob.len, data, size, &out) != 0)
        abort();                    /* our own blob must apply */
    pst_fsess_free(fs);
    pst_envelope_free(&env);
    pst_tbuf_free(&blob);
    pst_tbuf_free(&out);

    /* 3. arbitrary blobs */
    struct pst_tbuf b2 = {0};
    pst_tbuf_add(&b2, "PSTE\x01", 5);
    pst_tbuf_add(&b2, data, size);
    (void)pst_edits_apply_mem(b2.p, b2.len, data, size, &out);
    pst_tbuf_free(&b2);
    pst_tbuf_free(&out);
    uv_run(&loop, UV_RUN_NOWAIT);
    return 0;
}
