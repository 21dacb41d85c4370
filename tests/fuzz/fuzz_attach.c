/*
 * fuzz_attach.c - libFuzzer target for the attachments module's readers
 * of untrusted input: file names from MIME parameters (RFC 2231, RFC 2047,
 * duplicates) and their normalisation, uuencode "begin" lines, and
 * archive inspection with libarchive and libmagic (every format, nested,
 * under small limits).
 *
 * For each input:
 *   1. parse it as a message and take the names of every part: each must
 *      be a non-empty NUL-free string of at most ATT_NAME_MAX octets;
 *   2. scan every line of it for uuencode names, with the same check;
 *   3. inspect it as an archive (if libmagic calls it one): the outcome
 *      is an action in range, and every bound holds (members, octets).
 *
 * The inspection runs in this process (att_scan_archive_mem), where the
 * gateway runs it in a child bounded by archives.memory (attach_jail.c).
 * libarchive trusts header-declared sizes with malloc (a 7z header asks
 * for terabytes); the allocator's options below give it what that bound
 * gives it in the gateway - a NULL for anything over 256 MiB - instead
 * of a sanitizer abort or an out-of-memory stop that are no bug here.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filters/attach.h"
#include "filters/chain.h"

const char *__asan_default_options(void);
const char *
__asan_default_options(void)
{
    return "allocator_may_return_null=1:max_allocation_size_mb=256";
}

extern const struct pst_filter pst_filter_attachments;
static struct att_conf *conf;

static void
init(void)
{
    static const char text[] =
        "a = { archives = { depth = 2; max_members = 100;"
        "                   max_bytes = 8388608; max_ratio = 50;"
        "                   nested_max = 1048576; };"
        "      detect_bytes = 4096; scan_time = 2;"
        "      rules = ( { extensions = [\"exe\"]; action = \"strip\"; },"
        "                { detected = \"application/x-*\";"
        "                  where = \"archive\"; action = \"quarantine\"; } );"
        "};";
    config_t cf;
    struct pst_err err = {0};
    void *out;
    pst_log_set_level(PST_LOG_ERR);
    config_init(&cf);
    if (!config_read_string(&cf, text) ||
        pst_filter_attachments.configure(config_lookup(&cf, "a"), "fuzz",
                                         NULL, &out, &err) != 0)
        abort();
    config_destroy(&cf);
    conf = out;
}

static void
check_names(const struct att_names *ns)
{
    for (unsigned i = 0; i < ns->n; i++) {
        size_t n = strlen(ns->v[i]);
        if (n == 0 || n > ATT_NAME_MAX)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (conf == NULL)
        init();
    struct pst_mime_parser *p = pst_mime_parser_new(NULL, NULL, NULL);
    pst_mime_feed(p, data, size);
    struct pst_msg *m = pst_mime_finish(p);
    for (unsigned i = 0; i < m->nparts; i++) {
        struct att_names ns = {0};
        att_part_names(m->parts[i], &ns);
        check_names(&ns);
        att_names_free(&ns);
    }
    pst_msg_free(m);

    struct att_names uu = {0};
    const char *s = (const char *)data, *end = s + size;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);
        att_uu_line(s, n, &uu);
        s += n + 1;
    }
    check_names(&uu);
    att_names_free(&uu);

    struct att_scan sc = {0};
    struct att_item it = {0};
    sc.c = conf;
    sc.deadline = att_now() + 2000000000ull;
    it.v.rule = -1;
    att_scan_archive_mem(&sc, &it, data, size, "fuzz.bin");
    if (it.v.action > ATT_REJECT || sc.members > conf->ar.max_members + 1 ||
        strlen(it.v.file) >= sizeof(it.v.file))
        abort();
    return 0;
}
