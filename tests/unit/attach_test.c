/*
 * attach_test.c - the attachments module's pieces that need no gateway:
 * file name normalisation, names from MIME parameters in every form,
 * uuencode "begin" lines, the mismatch rule, rule matching (last
 * extension, globs, regex, types, size, where), and archive inspection
 * of archives built here (zip stored and deflated, nested, a bomb by
 * ratio, a member count limit, truncated input); the child an archive is
 * walked in (att_jail_run): what it decides comes back, it is kept for the
 * next archive, it cannot open a file, allocate past archives.memory or
 * reach the gateway's descriptors, a helper that faults or overruns the
 * deadline costs its archive only, and another conf gets another helper.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/charset.h"
#include "filters/attach.h"
#include "filters/chain.h"

static void
test_normalise(void **state)
{
    static const struct {
        const char *in;
        size_t n;
        const char *want;
    } t[] = {
        {"report.pdf", 0, "report.pdf"},
        {"invoice\xe2\x80\xae" "fdp.exe", 0, "invoicefdp.exe"},  /* U+202E */
        {"a\xe2\x80\x8b" "b\xef\xbb\xbf.exe", 0, "ab.exe"},     /* ZWSP BOM */
        {"x.exe. . .", 0, "x.exe"},
        {"  lead.exe", 0, "lead.exe"},
        {"C:\\Users\\me\\evil.scr", 0, "evil.scr"},
        {"../../etc/passwd", 0, "passwd"},
        {"nul\0.exe", 8, "nul.exe"},
        {"tab\t\r\n.exe", 0, "tab.exe"},
        {"soft\xc2\xad" "hyphen.exe", 0, "softhyphen.exe"},
        {"bad\xff" "utf8.exe", 0, "bad\xef\xbf\xbdutf8.exe"},
        {"...", 0, ""},
        {"dir/", 0, ""},
    };
    char out[ATT_NAME_MAX + 1];
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        size_t n = t[i].n ? t[i].n : strlen(t[i].in);
        size_t k = att_name_normalise(t[i].in, n, out);
        if (strcmp(out, t[i].want) != 0)
            fail_msg("%zu: \"%s\" -> \"%s\", want \"%s\"", i, t[i].in, out,
                     t[i].want);
        assert_int_equal(k, strlen(t[i].want));
    }
    /* bounded */
    char *big = malloc(10000);
    memset(big, 'a', 10000);
    assert_int_equal(att_name_normalise(big, 10000, out), ATT_NAME_MAX);
    free(big);
}

/* Names of the leaf of a one-part message with these header lines. */
static void
names_of(const char *hdr, struct att_names *ns)
{
    char msg[2048];
    int n = snprintf(msg, sizeof(msg), "%s\r\n\r\nbody\r\n", hdr);
    struct pst_mime_parser *p = pst_mime_parser_new(NULL, NULL, NULL);
    pst_mime_feed(p, msg, (size_t)n);
    struct pst_msg *m = pst_mime_finish(p);
    memset(ns, 0, sizeof(*ns));
    att_part_names(m->root, ns);
    pst_msg_free(m);
}

static void
test_part_names(void **state)
{
    static const struct {
        const char *hdr;
        const char *want;               /* names joined by '|' */
    } t[] = {
        {"Content-Disposition: attachment; filename=\"a b.exe\"", "a b.exe"},
        {"Content-Disposition: attachment; filename=tok.exe", "tok.exe"},
        {"Content-Type: application/x-foo; name=\"only.exe\"", "only.exe"},
        {"Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC.exe",
         "\xe2\x82\xac.exe"},
        {"Content-Disposition: attachment; filename*0*=UTF-8''a%20;"
         " filename*1=b.e; filename*2=\"xe\"", "a b.exe"},
        {"Content-Disposition: attachment; filename*=iso-8859-1''r%E9.exe",
         "r\xc3\xa9.exe"},
        {"Content-Disposition: attachment; filename=\"=?UTF-8?Q?q=C3=A9.exe?=\"",
         "q\xc3\xa9.exe"},
        {"CONTENT-DISPOSITION: ATTACHMENT; FILENAME=UP.EXE", "UP.EXE"},
        {"Content-Disposition: attachment;\r\n filename=\r\n \"fold.exe\"",
         "fold.exe"},
        {"Content-Disposition: attachment; filename=\"one.pdf\"; "
         "filename=\"two.exe\"", "one.pdf|two.exe"},
        {"Content-Type: application/pdf; name=\"ct.bat\"\r\n"
         "Content-Disposition: attachment; filename=\"cd.pdf\"",
         "ct.bat|cd.pdf"},
        {"Content-Disposition: attachment; filename=\"semi;colon.exe\"",
         "semi;colon.exe"},
        {"Content-Disposition: attachment; filename=\"esc\\\"q.exe\"",
         "esc\"q.exe"},
        /* two RFC 2231 forms of one name: a reader may take either */
        {"Content-Disposition: attachment; filename*=UTF-8''a.pdf; "
         "filename*0=\"b.exe\"", "a.pdf|b.exe"},
        {"Content-Disposition: attachment; filename*=UTF-8''a.pdf; "
         "filename=\"p.exe\"; filename*0*=UTF-8''c.bat", "a.pdf|p.exe|c.bat"},
        /* folded duplicates; a plain form beside the RFC 2231 one */
        {"Content-Disposition: attachment; filename=\"a.txt\";\r\n"
         " filename=\"evil.exe\"", "a.txt|evil.exe"},
        {"Content-Disposition: attachment; filename*=UTF-8''a.txt;\r\n"
         "\tfilename=\"evil.exe\"", "a.txt|evil.exe"},
        {"Content-Disposition: attachment; filename*=UTF-8''a.txt; "
         "filename*=UTF-8''b.txt; filename*=UTF-8''c.exe",
         "a.txt|b.txt|c.exe"},
        /* a repeated section; a section past a gap */
        {"Content-Disposition: attachment; filename*0=\"a\"; "
         "filename*0=\"evil\"; filename*1=\".exe\"", "a.exe|evil.exe"},
        {"Content-Disposition: attachment; filename*0=\"a.txt\"; "
         "filename*2=\".exe\"", "a.txt|a.txt.exe"},
        /* a comment before the name */
        {"Content-Disposition: attachment; filename=\"a.txt\"; (c) "
         "filename=\"evil.exe\"", "a.txt|evil.exe"},
        {"Content-Type: text/plain", ""},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct att_names ns;
        char got[512] = "";
        names_of(t[i].hdr, &ns);
        for (unsigned k = 0; k < ns.n; k++) {
            strcat(got, k ? "|" : "");
            strcat(got, ns.v[k]);
        }
        att_names_free(&ns);
        /* order of the two sources may differ: compare as sets */
        char want[512], g2[512];
        snprintf(want, sizeof(want), "|%s|", t[i].want);
        snprintf(g2, sizeof(g2), "|%s|", got);
        bool same = strlen(want) == strlen(g2);
        for (char *tok = strtok(got, "|"); same && tok;
             tok = strtok(NULL, "|")) {
            char key[300];
            snprintf(key, sizeof(key), "|%s|", tok);
            same = strstr(want, key) != NULL;
        }
        if (!same)
            fail_msg("%zu: got \"%s\", want \"%s\"", i, g2, want);
        assert_false(ns.over);
    }
}

/* Names beyond those read are noted (judged as an inspection limit). */
static void
test_part_names_over(void **state)
{
    char hdr[1900] = "Content-Disposition: attachment";
    struct att_names ns;
    for (int i = 0; i < ATT_NAMES_MAX; i++)
        snprintf(hdr + strlen(hdr), sizeof(hdr) - strlen(hdr),
                 "; filename=\"n%d.txt\"", i);
    names_of(hdr, &ns);
    assert_int_equal(ns.n, ATT_NAMES_MAX);
    assert_false(ns.over);
    att_names_free(&ns);
    strcat(hdr, "; filename=\"n0.txt\"");      /* a repeat is no new name */
    names_of(hdr, &ns);
    assert_false(ns.over);
    att_names_free(&ns);
    strcat(hdr, "; filename=\"evil.exe\"");
    names_of(hdr, &ns);
    assert_int_equal(ns.n, ATT_NAMES_MAX);
    assert_true(ns.over);
    att_names_free(&ns);
    assert_false(ns.over);
    /* parameters past the parser's bound */
    strcpy(hdr, "Content-Disposition: attachment; filename=\"a.txt\"");
    for (int i = 0; i < 64; i++)
        snprintf(hdr + strlen(hdr), sizeof(hdr) - strlen(hdr), "; x%d=1", i);
    strcat(hdr, "; filename=\"evil.exe\"");
    names_of(hdr, &ns);
    assert_true(ns.over);
    att_names_free(&ns);
}

static void
test_uuencode(void **state)
{
    static const struct {
        const char *line, *want;
    } t[] = {
        {"begin 644 file.exe", "file.exe"},
        {"begin 0755 run me.bat\r", "run me.bat"},
        {"begin-base64 644 b.scr", "b.scr"},
        {"begin 64 short.exe", ""},
        {"begin 6448 long.exe", ""},
        {"begin 644", ""},
        {"begin 648 x.exe", ""},
        {"Begin 644 x.exe", ""},
        {"begin here we go", ""},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct att_names ns = {0};
        att_uu_line(t[i].line, strlen(t[i].line), &ns);
        const char *got = ns.n ? ns.v[0] : "";
        if (strcmp(got, t[i].want) != 0)
            fail_msg("%zu: \"%s\" -> \"%s\", want \"%s\"", i, t[i].line,
                     got, t[i].want);
        att_names_free(&ns);
    }
}

static void
test_mismatch(void **state)
{
    static const struct {
        const char *decl, *det;
        bool want;
    } t[] = {
        {"application/pdf", "application/vnd.microsoft.portable-executable",
         true},
        {"application/pdf", "application/pdf", false},
        {"application/octet-stream", "application/x-dosexec", false},
        {"image/jpeg", "image/png", false},
        {"image/jpeg", "application/x-dosexec", true},
        {"text/plain", "text/x-c", false},
        {"application/pdf", "text/plain", false},
        {"application/vnd.openxmlformats-officedocument.wordprocessingml."
         "document", "application/zip", false},
        {"application/msword", "application/cdfv2", false},
        {"application/x-msdownload", "application/x-dosexec", false},
        {"application/zip", "application/x-7z-compressed", true},
        {"application/x-zip-compressed", "application/zip", false},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (att_mismatch(t[i].decl, t[i].det) != t[i].want)
            fail_msg("%zu: %s vs %s: want %d", i, t[i].decl, t[i].det,
                     t[i].want);
}

/* A conf from the text of one attachments block. */
static struct att_conf *
conf_of(const char *text)
{
    extern const struct pst_filter pst_filter_attachments;
    config_t cf;
    struct pst_err err = {0};
    void *out = NULL;
    config_init(&cf);
    if (!config_read_string(&cf, text))
        fail_msg("config: %s at %d", config_error_text(&cf),
                 config_error_line(&cf));
    int rc = pst_filter_attachments.configure(config_lookup(&cf, "a"),
                                               "t.conf", NULL, &out, &err);
    if (rc != 0)
        fail_msg("configure: %s", pst_err_first(&err));
    config_destroy(&cf);
    return out;
}

static void
conf_free(struct att_conf *c)
{
    extern const struct pst_filter pst_filter_attachments;
    pst_filter_attachments.unconfigure(c);
}

static void
test_judge(void **state)
{
    struct att_conf *c = conf_of(
        "a = { rules = ("
        "  { name = \"ok\"; glob = \"safe-*\"; action = \"allow\"; },"
        "  { name = \"ext\"; extensions = [\".EXE\", \"scr\"];"
        "    action = \"strip\"; },"
        "  { name = \"re\"; regex = \"^inv.*\\\\.pdf\\\\.\"; action = \"reject\"; },"
        "  { name = \"det\"; detected = \"application/x-*exec*\";"
        "    action = \"strip\"; },"
        "  { name = \"decl\"; declared = [\"application/hta\"];"
        "    action = \"strip\"; },"
        "  { name = \"arc\"; where = \"archive\"; glob = \"*.js\";"
        "    action = \"strip\"; },"
        "  { name = \"mm\"; mismatch = true; action = \"quarantine\"; },"
        "  { name = \"big\"; larger_than = 1000; unnamed = true;"
        "    action = \"reject\"; }"
        "); };");
    static const struct {
        const char *name, *decl, *det;
        uint64_t size;
        bool member;
        const char *want;
    } t[] = {
        {"invoice.pdf.exe", NULL, NULL, 1, false, "ext"},
        {"notes.exe.txt", NULL, NULL, 1, false, NULL},
        {"X.EXE", NULL, NULL, 1, false, "ext"},
        {"safe-tool.exe", NULL, NULL, 1, false, "ok"},
        {"Invoice.PDF.zip", NULL, NULL, 1, false, "re"},
        {"a.bin", "application/pdf", "application/x-dosexec", 1, false,
         "det"},
        {NULL, "application/hta", NULL, 1, false, "decl"},
        {"a.js", NULL, NULL, 1, false, NULL},
        {"a.js", NULL, NULL, 1, true, "arc"},
        {"a.png", "application/pdf", "image/png", 1, false, "mm"},
        {NULL, "text/plain", NULL, 5000, false, "big"},
        {"named", "text/plain", NULL, 5000, false, NULL},
        {"exe", NULL, NULL, 1, false, NULL},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct att_file f = {t[i].name, t[i].decl, t[i].det, t[i].size, true,
                             t[i].member};
        int r = att_judge(c, &f);
        const char *got = r >= 0 ? c->rules[r].label : NULL;
        if ((got == NULL) != (t[i].want == NULL) ||
            (got && strcmp(got, t[i].want) != 0))
            fail_msg("%zu: %s -> %s, want %s", i,
                     t[i].name ? t[i].name : "(none)", got ? got : "(none)",
                     t[i].want ? t[i].want : "(none)");
    }
    conf_free(c);
}

/* ---- archives ---- */

struct ar {
    unsigned char *p;
    size_t n, cap;
};

static la_ssize_t
ar_write(struct archive *a, void *d, const void *buf, size_t n)
{
    struct ar *o = d;
    if (o->n + n > o->cap) {
        o->cap = (o->n + n) * 2;
        o->p = realloc(o->p, o->cap);
    }
    memcpy(o->p + o->n, buf, n);
    o->n += n;
    return (la_ssize_t)n;
}

/* A zip of (name, data, len) members; deflate or stored. */
static struct ar
make_zip(const char *const *names, const void *const *data,
         const size_t *len, size_t n, bool deflate)
{
    struct ar o = {0};
    struct archive *a = archive_write_new();
    archive_write_set_format_zip(a);
    archive_write_set_options(a, deflate ? "zip:compression=deflate"
                                         : "zip:compression=store");
    archive_write_open(a, &o, NULL, ar_write, NULL);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, names[i]);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t)len[i]);
        archive_write_header(a, e);
        archive_write_data(a, data[i], len[i]);
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
    return o;
}

static struct att_verdict
inspect(struct att_conf *c, const struct ar *z)
{
    struct att_scan s = {0};
    struct att_item it = {0};
    s.c = c;
    s.deadline = att_now() + 10000000000ull;
    it.v.rule = -1;
    att_scan_archive_mem(&s, &it, z->p, z->n, "t.zip");
    return it.v;
}

static void
test_archives(void **state)
{
    struct att_conf *c = conf_of(
        "a = { archives = { max_members = 5; max_ratio = 50;"
        "                   depth = 1; };"
        "  rules = ( { name = \"exe\"; extensions = \"exe\";"
        "              action = \"strip\"; } ); };");
    const char *n1[] = {"a.txt", "dir/b.exe"};
    const void *d1[] = {"hello", "MZ"};
    size_t l1[] = {5, 2};
    for (int deflate = 0; deflate < 2; deflate++) {
        struct ar z = make_zip(n1, d1, l1, 2, deflate);
        struct att_verdict v = inspect(c, &z);
        assert_int_equal(v.action, ATT_STRIP);
        assert_string_equal(v.why, "exe");
        assert_string_equal(v.file, "t.zip/dir/b.exe");
        /* damaged inside the first member's data (CRC or inflate
         * error): it does not read, and that is refused */
        z.p[36] ^= 0x55;
        z.p[37] ^= 0x55;
        v = inspect(c, &z);
        assert_int_equal(v.action, ATT_REJECT);
        assert_string_equal(v.why, "archive-error");
        free(z.p);
    }
    /* nested one level: found; two levels: beyond depth, refused */
    struct ar in = make_zip(n1 + 1, d1 + 1, l1 + 1, 1, true);
    const char *n2[] = {"in.zip"};
    const void *d2[] = {in.p};
    size_t l2[] = {in.n};
    struct ar mid = make_zip(n2, d2, l2, 1, true);
    struct att_verdict v = inspect(c, &mid);
    assert_int_equal(v.action, ATT_STRIP);
    assert_string_equal(v.file, "t.zip/in.zip/dir/b.exe");
    const void *d3[] = {mid.p};
    size_t l3[] = {mid.n};
    struct ar outer = make_zip(n2, d3, l3, 1, true);
    v = inspect(c, &outer);
    assert_int_equal(v.action, ATT_REJECT);
    assert_string_equal(v.why, "archive-limit");
    free(in.p);
    free(mid.p);
    free(outer.p);
    /* too many members */
    const char *n6[] = {"1", "2", "3", "4", "5", "6"};
    const void *d6[] = {"", "", "", "", "", ""};
    size_t l6[] = {0, 0, 0, 0, 0, 0};
    struct ar many = make_zip(n6, d6, l6, 6, false);
    v = inspect(c, &many);
    assert_int_equal(v.action, ATT_REJECT);
    assert_string_equal(v.why, "archive-limit");
    free(many.p);
    /* a bomb by ratio: 8 MiB of zeros */
    size_t bl = 8u << 20;
    char *zeros = calloc(1, bl);
    const char *nb[] = {"zeros"};
    const void *db[] = {zeros};
    struct ar bomb = make_zip(nb, db, &bl, 1, true);
    v = inspect(c, &bomb);
    assert_int_equal(v.action, ATT_REJECT);
    assert_string_equal(v.why, "archive-limit");
    free(bomb.p);
    free(zeros);
    conf_free(c);
}

/* ---- the helper an archive is walked in ---- */

static void
reset(struct att_item *it)
{
    memset(it, 0, sizeof(*it));
    it->v.rule = -1;
}

static int
memfd_of(const struct ar *z)
{
    int fd = memfd_create("t", 0);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, z->p, z->n), (ssize_t)z->n);
    return fd;
}

/* After a while, a fault for a helper that was stopped (so the request
 * waits for it): it dies of SIGSEGV while the worker waits. */
static void *
fault_later(void *arg)
{
    pid_t pid = *(pid_t *)arg;
    usleep(100000);
    kill(pid, SIGSEGV);
    kill(pid, SIGCONT);
    return NULL;
}

/* Until pid (a child of this process, not reaped) has ended: its socket
 * is closed then. At most 10 s. */
static void
wait_gone(pid_t pid)
{
    char path[64], st[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(st, 1, sizeof(st) - 1, f) : 0;
        if (f)
            fclose(f);
        st[n] = '\0';
        const char *paren = strrchr(st, ')');
        if (paren == NULL || paren[1] == '\0' || paren[2] == 'Z')
            return;
        usleep(10000);
    }
    fail_msg("helper %d did not end", (int)pid);
}

static void
test_jail(void **state)
{
    struct att_conf *c = conf_of(
        "a = { archives = { memory = 67108864; on_error = \"quarantine\";"
        "                   on_limit = \"strip\"; };"
        "  rules = ( { name = \"exe\"; extensions = \"exe\";"
        "              action = \"reject\"; } ); };");
    struct att_scan s = {0};
    struct att_item it;
    s.c = c;
    s.deadline = att_now() + 10000000000ull;
    reset(&it);
    uint64_t files0 = (uint64_t)pst_metric_value(c->n.files);
    uint64_t archives0 = (uint64_t)pst_metric_value(c->n.archives);

    /* a zip walked in postern-archive: the verdict, the counts and the
     * counters come back */
    const char *n1[] = {"a.txt", "dir/b.exe"};
    const void *d1[] = {"hello", "MZ"};
    size_t l1[] = {5, 2};
    struct ar z = make_zip(n1, d1, l1, 2, true);
    int fd = memfd_of(&z);
    att_jail_run(&s, &it, "t.zip", ATT_JAIL_WALK, ATT_AR_ZIP, fd, z.n,
                 "t.zip");
    close(fd);
    assert_int_equal(it.v.action, ATT_REJECT);
    assert_int_equal(it.v.rule, 0);
    assert_string_equal(it.v.why, "exe");
    assert_string_equal(it.v.file, "t.zip/dir/b.exe");
    assert_int_equal(s.members, 2);
    assert_int_equal(s.bytes, 7);
    assert_int_equal((uint64_t)pst_metric_value(c->n.files), files0 + 2);
    assert_int_equal((uint64_t)pst_metric_value(c->n.archives),
                     archives0 + 1);
    pid_t helper = att_jail_helper_pid();
    assert_true(helper > 0);

    /* the same helper walks the next one; the helper is confined: no
     * files, no memory past the bound, none of our descriptors */
    reset(&it);
    int low = open("/dev/null", O_RDONLY);
    int mine = fcntl(low, F_DUPFD, 20);     /* not 0-3, which it has */
    close(low);
    att_jail_run(&s, &it, "", ATT_JAIL_PROBE, (unsigned)mine, -1, 0, "");
    char want[128];
    snprintf(want, sizeof(want), "pid=%d open=%d big=%d small=ok fd%d=closed",
             (int)helper, EPERM, ENOMEM, mine);
    assert_string_equal(s.err, want);
    assert_int_equal(it.v.action, ATT_PASS);
    assert_int_equal(att_jail_helper_pid(), helper);
    close(mine);
    s.err[0] = '\0';

    /* gone while idle: a new one takes the next archive, no verdict lost */
    kill(helper, SIGKILL);
    wait_gone(helper);
    reset(&it);
    fd = memfd_of(&z);
    att_jail_run(&s, &it, "t.zip", ATT_JAIL_WALK, ATT_AR_ZIP, fd, z.n,
                 "t.zip");
    assert_int_equal(it.v.action, ATT_REJECT);
    assert_true(att_jail_helper_pid() != helper);
    helper = att_jail_helper_pid();

    /* a fault while walking costs that archive on_error, counted */
    uint64_t errors0 = (uint64_t)pst_metric_value(c->n.errors);
    reset(&it);
    kill(helper, SIGSTOP);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fault_later, &helper), 0);
    att_jail_run(&s, &it, "t.zip", ATT_JAIL_WALK, ATT_AR_ZIP, fd, z.n,
                 "t.zip");
    pthread_join(t, NULL);
    assert_int_equal(it.v.action, ATT_QUARANTINE);
    assert_string_equal(it.v.why, "archive-error");
    assert_int_equal((uint64_t)pst_metric_value(c->n.errors), errors0 + 1);
    assert_int_equal(att_jail_helper_pid(), 0);

    /* out of time (a helper that does not answer): on_limit, in time */
    reset(&it);
    att_jail_run(&s, &it, "", ATT_JAIL_PROBE, 0, -1, 0, "");
    helper = att_jail_helper_pid();
    kill(helper, SIGSTOP);
    s.deadline = att_now() + 200000000ull;
    uint64_t t0 = att_now();
    att_jail_run(&s, &it, "slow.zip", ATT_JAIL_WALK, ATT_AR_ZIP, fd, z.n,
                 "slow.zip");
    assert_true(att_now() - t0 < 5000000000ull);
    assert_int_equal(it.v.action, ATT_STRIP);
    assert_string_equal(it.v.why, "archive-limit");
    assert_string_equal(it.v.file, "slow.zip");
    assert_int_equal(att_jail_helper_pid(), 0);

    /* another conf (a reload's) gets a helper of its own, with its rules */
    struct att_conf *c2 = conf_of(
        "a = { rules = ( { extensions = \"exe\"; action = \"strip\"; } ); };");
    att_jail_run(&s, &it, "", ATT_JAIL_PROBE, 0, -1, 0, "");
    helper = att_jail_helper_pid();
    s.c = c2;
    s.deadline = att_now() + 10000000000ull;
    reset(&it);
    att_jail_run(&s, &it, "t.zip", ATT_JAIL_WALK, ATT_AR_ZIP, fd, z.n,
                 "t.zip");
    assert_int_equal(it.v.action, ATT_STRIP);
    assert_true(att_jail_helper_pid() != helper);
    att_jail_stop();

    /* a helper executable that does not serve: the archive takes
     * on_error, counted, and the worker goes on */
    struct att_conf *c3 = conf_of(
        "a = { helper = \"/bin/false\";"
        "  rules = ( { extensions = \"exe\"; action = \"strip\"; } ); };");
    s.c = c3;
    reset(&it);
    errors0 = (uint64_t)pst_metric_value(c3->n.errors);
    att_jail_run(&s, &it, "t.zip", ATT_JAIL_WALK, ATT_AR_ZIP, fd, z.n,
                 "t.zip");
    assert_int_equal(it.v.action, ATT_REJECT);
    assert_string_equal(it.v.why, "archive-error");
    assert_int_equal((uint64_t)pst_metric_value(c3->n.errors), errors0 + 1);
    assert_int_equal(att_jail_helper_pid(), 0);
    close(fd);
    free(z.p);
    conf_free(c3);
    conf_free(c2);
    conf_free(c);
}

static int
teardown(void **state)
{
    pst_charset_thread_cleanup();
    return 0;
}

/* att_binary word by word agrees with the octet-by-octet definition at
 * every length and alignment, a control octet anywhere or none. */
static bool
binary_ref(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 && p[i] != '\t' && p[i] != '\r' && p[i] != '\n' &&
            p[i] != '\f' && p[i] != 0x1b)
            return true;
    return false;
}

static void
test_binary(void **state)
{
    uint8_t buf[80];
    unsigned seed = 7;
    (void)state;
    for (int round = 0; round < 4000; round++) {
        size_t n = (size_t)round % 41, off = (size_t)(round / 41) % 8;
        for (size_t i = 0; i < sizeof(buf); i++) {
            seed = seed * 1103515245u + 12345u;
            /* text, line ends and tabs; now and then any octet */
            unsigned r = (seed >> 16) % 100;
            buf[i] = r < 3   ? (uint8_t)(seed >> 8)
                     : r < 8 ? (uint8_t)"\r\n\t\f\x1b"[r - 3]
                             : (uint8_t)(0x20 + (seed >> 9) % 0xe0);
        }
        assert_int_equal(att_binary(buf + off, n), binary_ref(buf + off, n));
    }
    /* each control octet alone, at each place of a word */
    for (unsigned c = 0; c < 256; c++)
        for (size_t at = 0; at < 24; at++) {
            memset(buf, 'a', sizeof(buf));
            buf[at] = (uint8_t)c;
            assert_int_equal(att_binary(buf, 24), binary_ref(buf, 24));
            assert_int_equal(att_binary(buf, at), false);
        }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_binary),
        cmocka_unit_test(test_normalise),
        cmocka_unit_test(test_part_names),
        cmocka_unit_test(test_part_names_over),
        cmocka_unit_test(test_uuencode),
        cmocka_unit_test(test_mismatch),
        cmocka_unit_test(test_judge),
        cmocka_unit_test(test_archives),
        cmocka_unit_test(test_jail),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
