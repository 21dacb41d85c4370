/*
 * spool_test.c - the spool and queue manager driven through their API with
 * a real libuv loop, real files in a temporary directory, real threads,
 * and (for disk-full cases) real small tmpfs mounts.
 *
 * Covers: commit then maildir delivery (bytes checked) of large messages
 * (files) and small ones (groups in the log's segments), group commit of
 * many concurrent messages (one segment sync per batch), a sync error
 * failing its batch (file, directory, segment), abort, the one-gateway
 * lock, queue IDs across restarts, recovery of torn/bad-checksum/
 * unknown-version/truncated files and torn update tails, recovery of the
 * log (torn tail, damaged group, a group moved to a file, done groups not
 * delivered again, segments reused), a small message leaving the log
 * for a file when its first attempt defers, recipient state surviving a
 * restart (partial delivery), retries after a clock jump, ENOSPC while
 * receiving and while delivering (partial delivery, then retry), expiry
 * to hold/, and the control socket commands.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/envelope.h"
#include "core/log.h"
#include "core/util.h"
#include "queue/edits.h"
#include "queue/qmgr.h"
#include "queue/queue.h"
#include "queue/reader.h"
#include "queue/record.h"
#include "queue/spool.h"
#include "queue/spool_int.h"

/*
 * Fault injection for fsync: the spool's calls resolve to this definition
 * (the test program's own), which forwards to the C library unless a
 * failure is armed for the next fsync of a path with the given suffix or
 * infix. Used to see an fsync error fail a whole batch.
 */
static atomic_int fsync_fail_left;
static char fsync_fail_match[64];

static bool
fail_this(int fd)
{
    if (atomic_load(&fsync_fail_left) > 0) {
        char l[64], p[512];
        snprintf(l, sizeof(l), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(l, p, sizeof(p) - 1);
        if (n > 0) {
            p[n] = '\0';
            size_t ml = strlen(fsync_fail_match);
            if ((size_t)n >= ml && strstr(p, fsync_fail_match) != NULL &&
                atomic_fetch_sub(&fsync_fail_left, 1) > 0)
                return true;
        }
    }
    return false;
}

int
fsync(int fd)
{
    static int (*real)(int);
    if (real == NULL)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (fail_this(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}

int
fdatasync(int fd)
{
    static int (*real)(int);
    if (real == NULL)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (fail_this(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}

/*
 * Fault injection for writes, the same way: write(2), pwrite(2) and
 * ftruncate(2) of the spool and the maildir resolve to these definitions,
 * which forward to the C library unless a fault is armed for the path:
 *   wf_short   the next write to a path with this infix writes its first
 *              WF_SHORT bytes (a record header is 8), and the one after
 *              fails with ENOSPC: a disk that fills in the middle of a
 *              write (so many times)
 *   wf_nospc   every write to a path with this infix whose bytes hold the
 *              needle fails with ENOSPC (one recipient's maildir copy)
 *   wf_trunc   ftruncate of a path with this infix fails with EIO (so
 *              many times)
 *   wf_mark    a 16-byte pwrite (a MARK) into a log segment fails with EIO
 *              (so many times)
 */
#define WF_SHORT 5
static pthread_mutex_t wf_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool wf_armed;
static char wf_short[64], wf_nospc[64], wf_needle[64], wf_trunc[64];
static int wf_short_left, wf_short_stage, wf_trunc_left, wf_mark_left;
static int wf_short_done, wf_trunc_done, wf_mark_done;  /* injected */

static bool
fd_path_has(int fd, const char *infix)
{
    char l[64], p[512];
    if (infix[0] == '\0')
        return false;
    snprintf(l, sizeof(l), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(l, p, sizeof(p) - 1);
    if (n <= 0)
        return false;
    p[n] = '\0';
    return strstr(p, infix) != NULL;
}

static void
wf_clear(void)
{
    pthread_mutex_lock(&wf_mu);
    wf_short[0] = wf_nospc[0] = wf_needle[0] = wf_trunc[0] = '\0';
    wf_short_left = wf_short_stage = wf_trunc_left = wf_mark_left = 0;
    wf_short_done = wf_trunc_done = wf_mark_done = 0;
    atomic_store(&wf_armed, false);
    pthread_mutex_unlock(&wf_mu);
}

static int
wf_get(int *v)
{
    pthread_mutex_lock(&wf_mu);
    int x = *v;
    pthread_mutex_unlock(&wf_mu);
    return x;
}

/* How much of a write of n bytes to let through: n, less (short), or -1
 * (fail with *err). */
static ssize_t
wf_write(int fd, const void *buf, size_t n, bool positioned, int *err)
{
    ssize_t r = (ssize_t)n;

    if (!atomic_load(&wf_armed))
        return r;
    pthread_mutex_lock(&wf_mu);
    if (wf_short_left > 0 && fd_path_has(fd, wf_short)) {
        if (wf_short_stage == 0 && n > WF_SHORT) {
            r = WF_SHORT;
            wf_short_stage = 1;
        } else if (wf_short_stage == 1) {
            r = -1;
            *err = ENOSPC;
            wf_short_stage = 0;
            wf_short_left--;
            wf_short_done++;
        }
    } else if (wf_needle[0] && fd_path_has(fd, wf_nospc) &&
               memmem(buf, n, wf_needle, strlen(wf_needle)) != NULL) {
        r = -1;
        *err = ENOSPC;
    } else if (positioned && n == PST_MARK_LEN && wf_mark_left > 0 &&
               fd_path_has(fd, "/log/seg-")) {
        r = -1;
        *err = EIO;
        wf_mark_left--;
        wf_mark_done++;
    }
    pthread_mutex_unlock(&wf_mu);
    return r;
}

static void
wf_set(char *dst, const char *v)
{
    snprintf(dst, 64, "%s", v);
}

/* wf_arm - arm the faults (each NULL / 0: not armed). */
static void
wf_arm(const char *short_at, int nshort, const char *nospc_at,
       const char *needle, const char *trunc_at, int ntrunc, int nmark)
{
    pthread_mutex_lock(&wf_mu);
    wf_set(wf_short, short_at ? short_at : "");
    wf_short_left = nshort;
    wf_short_stage = 0;
    wf_set(wf_nospc, nospc_at ? nospc_at : "");
    wf_set(wf_needle, needle ? needle : "");
    wf_set(wf_trunc, trunc_at ? trunc_at : "");
    wf_trunc_left = ntrunc;
    wf_mark_left = nmark;
    atomic_store(&wf_armed, true);
    pthread_mutex_unlock(&wf_mu);
}

ssize_t
write(int fd, const void *buf, size_t n)
{
    static ssize_t (*real)(int, const void *, size_t);
    int err = 0;
    if (real == NULL)
        real = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT,
                                                            "write");
    ssize_t k = wf_write(fd, buf, n, false, &err);
    if (k < 0) {
        errno = err;
        return -1;
    }
    return real(fd, buf, (size_t)k);
}

ssize_t
pwrite(int fd, const void *buf, size_t n, off_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off_t);
    int err = 0;
    if (real == NULL)
        real = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(
            RTLD_NEXT, "pwrite");
    ssize_t k = wf_write(fd, buf, n, true, &err);
    if (k < 0) {
        errno = err;
        return -1;
    }
    return real(fd, buf, (size_t)k, off);
}

int
ftruncate(int fd, off_t len)
{
    static int (*real)(int, off_t);
    if (real == NULL)
        real = (int (*)(int, off_t))dlsym(RTLD_NEXT, "ftruncate");
    if (atomic_load(&wf_armed)) {
        pthread_mutex_lock(&wf_mu);
        bool fail = wf_trunc_left > 0 && fd_path_has(fd, wf_trunc);
        if (fail) {
            wf_trunc_left--;
            wf_trunc_done++;
        }
        pthread_mutex_unlock(&wf_mu);
        if (fail) {
            errno = EIO;
            return -1;
        }
    }
    return real(fd, len);
}

struct fx {
    char root[128];
    char spool[192];
    char mail[192];
    char route[256];
    uv_loop_t loop;
    uv_timer_t tick;
    struct pst_conf conf;
    struct pst_queue *q;
    struct pst_spool *sp;           /* the queue's */
    char mounts[4][192];
    int nmounts;
};

static void
fx_conf(struct fx *f, unsigned rmin, unsigned rmax, unsigned life)
{
    memset(&f->conf, 0, sizeof(f->conf));
    f->conf.queue.directory = f->spool;
    snprintf(f->route, sizeof(f->route), "maildir:%s", f->mail);
    f->conf.delivery.default_route = f->route;
    f->conf.delivery.retry_min = rmin;
    f->conf.delivery.retry_max = rmax;
    f->conf.delivery.lifetime = life;
    f->conf.delivery.concurrency = 4;
    f->conf.queue.segment_size = 1024 * 1024;     /* the smallest */
}

static int
setup(void **state)
{
    struct fx *f = pst_xcalloc(1, sizeof(*f));
    snprintf(f->root, sizeof(f->root), "/tmp/pst-spool-test-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->spool, sizeof(f->spool), "%s/spool", f->root);
    snprintf(f->mail, sizeof(f->mail), "%s/mail", f->root);
    fx_conf(f, 1, 1, 3600);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->tick);
    *state = f;
    return 0;
}

static void
rm_rf(const char *path)
{
    char *cmd = pst_xasprintf("rm -rf '%s'", path);
    assert_int_equal(system(cmd), 0);
    free(cmd);
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    if (f->q)                   /* a failed assertion left it open */
        pst_queue_close(f->q);
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    /* a test that leaves handles open fails here */
    assert_int_equal(uv_loop_close(&f->loop), 0);
    for (int i = f->nmounts - 1; i >= 0; i--)
        umount2(f->mounts[i], MNT_DETACH);
    rm_rf(f->root);
    free(f);
    return 0;
}

static void
mount_tmpfs(struct fx *f, const char *path, const char *size)
{
    char opts[64];
    assert_true(mkdir(path, 0700) == 0 || errno == EEXIST);
    snprintf(opts, sizeof(opts), "size=%s,mode=0700", size);
    if (mount("tmpfs", path, "tmpfs", 0, opts) != 0)
        fail_msg("mount tmpfs on %s: %s (the spool tests need root for "
                 "their disk-full cases)", path, strerror(errno));
    snprintf(f->mounts[f->nmounts++], sizeof(f->mounts[0]), "%s", path);
}

static void
on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until *flag is set or ms pass; returns the flag. */
static bool
run_until(struct fx *f, bool (*pred)(void *), void *arg, unsigned ms)
{
    uint64_t end = uv_now(&f->loop) + ms;
    uv_timer_start(&f->tick, on_tick, 5, 5);
    while (!pred(arg) && uv_now(&f->loop) < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->tick);
    return pred(arg);
}

static void
spool_open(struct fx *f)
{
    struct pst_err err = {0};
    int rc = pst_queue_open(&f->q, &f->loop, &f->conf, &err);
    if (rc != 0)
        fail_msg("pst_queue_open: %d %s", rc, pst_err_first(&err));
    f->sp = pst_queue_spool(f->q);
    pst_err_free(&err);
}

static void
spool_close(struct fx *f)
{
    pst_queue_close(f->q);
    f->q = NULL;
    f->sp = NULL;
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static int
count_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    int n = 0;
    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static int
count_sub(struct fx *f, const char *base, const char *sub)
{
    char p[300];
    snprintf(p, sizeof(p), "%s/%s", base, sub);
    return count_dir(p);
}

struct cnt {
    struct fx *f;
    const char *base, *sub;
    int want;
};

static bool
pred_count(void *arg)
{
    struct cnt *c = arg;
    return count_sub(c->f, c->base, c->sub) == c->want;
}

static bool
wait_count(struct fx *f, const char *base, const char *sub, int want,
           unsigned ms)
{
    struct cnt c = {f, base, sub, want};
    return run_until(f, pred_count, &c, ms);
}

static char *
slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    char *b = pst_xmalloc((size_t)st.st_size + 1);
    assert_int_equal(read(fd, b, (size_t)st.st_size), st.st_size);
    b[st.st_size] = '\0';
    close(fd);
    *len = (size_t)st.st_size;
    return b;
}

/* ---- submitting messages ---- */

struct sub {
    int status;
    bool done;
    char qid[PST_QID_LEN + 1];
};

static void
on_commit(void *arg, int status)
{
    struct sub *s = arg;
    assert_false(s->done);      /* exactly once */
    s->status = status;
    s->done = true;
}

static bool
pred_done(void *arg)
{
    return ((struct sub *)arg)->done;
}

static void
envelope(struct pst_envelope *e, const char *sender, const char **rcpts,
         size_t n)
{
    pst_envelope_init(e);
    e->sender = pst_xstrdup(sender);
    /* NOTIFY=NEVER: these cases count queue files; a bounce (queue/dsn.c,
     * tested in tests/e2e/test_delivery.py) would be one more */
    for (size_t i = 0; i < n; i++)
        pst_envelope_add_rcpt(e, rcpts[i])->notify = PST_NOTIFY_NEVER;
    e->arrival = time(NULL);
    e->helo = pst_xstrdup("client.example");
    e->proto = pst_xstrdup("ESMTP");
    pst_ip_parse(&e->client_ip, "127.0.0.1");
}

static bool
pred_queue_empty(void *arg)
{
    struct fx *f = arg;
    struct pst_queue_stats st;
    pst_queue_stats(f->q, &st);
    return st.queued == 0;
}

static bool
pred_only_held(void *arg)
{
    struct fx *f = arg;
    struct pst_queue_stats st;
    pst_queue_stats(f->q, &st);
    return st.queued == st.held;
}

/* Start a message: create, write body in uneven pieces, commit. */
static void
submit(struct fx *f, struct sub *s, const char *sender, const char **rcpts,
       size_t n, const char *body, size_t len)
{
    struct pst_spool_msg *m;
    struct pst_envelope e;

    memset(s, 0, sizeof(*s));
    assert_int_equal(pst_spool_msg_new(f->sp, &m, s->qid), 0);
    assert_int_equal(strlen(s->qid), PST_QID_LEN);
    size_t off = 0, step = 1;
    while (off < len) {
        size_t k = PST_MIN(step, len - off);
        assert_int_equal(pst_spool_msg_write(m, body + off, k), 0);
        off += k;
        step = step * 3 + 7;
    }
    assert_int_equal(pst_spool_msg_size(m), len);
    envelope(&e, sender, rcpts, n);
    pst_spool_msg_commit(m, &e, on_commit, s);
    pst_envelope_free(&e);
    assert_false(s->done);      /* never called back synchronously */
}

static char *
make_body(size_t len, unsigned seed)
{
    static const char hdr[] = "Received: from client.example\r\n\tby test "
                              "(postern); Sun, 22 Nov 2026 00:00:00 +0000"
                              "\r\nSubject: test\r\n\r\n";
    char *b = pst_xmalloc(len + 1);
    size_t h = PST_MIN(len, sizeof(hdr) - 1);
    memcpy(b, hdr, h);
    for (size_t i = h; i < len; i++) {
        size_t col = (i - h) % 78;
        b[i] = col == 76 ? '\r' : col == 77 ? '\n'
                                : (char)('a' + (i * 7 + seed) % 26);
    }
    b[len] = '\0';
    return b;
}

/* Check that dir p holds exactly one copy per recipient, each right. */
static void
check_dir(const char *p, const char *sender, const char **rcpts, size_t n,
          const char *body, size_t len, bool maildir_names)
{
    DIR *d = opendir(p);
    struct dirent *de;
    bool *seen = pst_xcalloc(n, sizeof(bool));
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char fp[700];
        size_t flen;
        snprintf(fp, sizeof(fp), "%s/%s", p, de->d_name);
        /* maildir unique name: sec.M<usec>P<pid>Q<n>.host */
        if (maildir_names) {
            assert_non_null(strstr(de->d_name, ".M"));
            assert_non_null(strchr(de->d_name, 'P'));
            assert_non_null(strchr(de->d_name, 'Q'));
        }
        char *c = slurp(fp, &flen);
        size_t i;
        for (i = 0; i < n; i++) {
            char *want = pst_xasprintf("Return-Path: <%s>\r\nDelivered-To: "
                                       "%s\r\n", sender, rcpts[i]);
            size_t wl = strlen(want);
            bool match = flen == wl + len && memcmp(c, want, wl) == 0 &&
                         memcmp(c + wl, body, len) == 0;
            free(want);
            if (match && !seen[i]) {
                seen[i] = true;
                break;
            }
        }
        if (i == n)
            fail_msg("unexpected maildir file %s (%zu bytes)", de->d_name,
                     flen);
        free(c);
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)
        if (!seen[i])
            fail_msg("no copy for %s", rcpts[i]);
    free(seen);
}

static void
check_maildir(struct fx *f, const char *sender, const char **rcpts, size_t n,
              const char *body, size_t len)
{
    char p[400];
    snprintf(p, sizeof(p), "%s/new", f->mail);
    check_dir(p, sender, rcpts, n, body, len, true);
}

/* ---- tests ---- */

static void
test_commit_and_deliver(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"a@example.org", "b@example.org"};
    size_t len = 300 * 1024 + 17;       /* spans several CHUNK records */
    char *body = make_body(len, 1);
    struct sub s;
    struct pst_queue_stats st;
    struct stat sb;

    spool_open(f);
    assert_int_equal(stat(f->spool, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    submit(f, &s, "sender@example.com", rc, 2, body, len);
    assert_true(run_until(f, pred_done, &s, 5000));
    assert_int_equal(s.status, 0);
    assert_true(wait_count(f, f->spool, "active", 0, 5000));
    assert_int_equal(count_sub(f, f->mail, "new"), 2);
    assert_int_equal(count_sub(f, f->mail, "tmp"), 0);
    assert_int_equal(count_sub(f, f->spool, "incoming"), 0);
    check_maildir(f, "sender@example.com", rc, 2, body, len);
    /* the file goes on the worker; the entry when its result reaches the
     * loop, a moment later */
    assert_true(run_until(f, pred_queue_empty, f, 5000));
    pst_queue_stats(f->q, &st);
    assert_int_equal(st.committed, 1);
    assert_int_equal(st.batches, 1);
    assert_int_equal(st.queued, 0);
    spool_close(f);
    free(body);
}

/* The text of a message being received, read by offset through its own
 * descriptor: across CHUNK records, including the part still buffered,
 * and still readable after the message was aborted. */
static void
test_msg_text(void **state)
{
    struct fx *f = *state;
    size_t len = 300 * 1024 + 17;       /* spans several CHUNK records */
    char *body = make_body(len, 3);
    struct pst_spool_msg *m;
    char qid[PST_QID_LEN + 1];

    spool_open(f);
    assert_int_equal(pst_spool_msg_new(f->sp, &m, qid), 0);
    for (size_t off = 0, step = 5; off < len; off += step, step *= 2)
        assert_int_equal(
            pst_spool_msg_write(m, body + off, PST_MIN(step, len - off)), 0);
    struct pst_textsrc *t = pst_spool_msg_text(m);
    assert_non_null(t);
    assert_int_equal(pst_textsrc_size(t), len);
    pst_spool_msg_abort(m);
    static const uint64_t at[] = {0, 1, 131059, 131060, 131061, 262119,
                                  262120, 307216};
    char buf[4096];
    for (size_t i = 0; i < PST_ARRAY_LEN(at); i++) {
        size_t got = 0;
        while (got < sizeof(buf) && at[i] + got < len) {
            ssize_t k = pst_textsrc_read(t, buf + got, sizeof(buf) - got,
                                         at[i] + got);
            assert_true(k > 0);
            got += (size_t)k;
        }
        assert_int_equal(got, PST_MIN(sizeof(buf), len - at[i]));
        assert_memory_equal(buf, body + at[i], got);
    }
    assert_int_equal(pst_textsrc_read(t, buf, 10, len), 0);
    pst_textsrc_unref(t);
    spool_close(f);
    free(body);
}

static void
test_group_commit(void **state)
{
    struct fx *f = *state;
    enum { N = 200 };
    struct sub *s = pst_xcalloc(N, sizeof(*s));
    struct pst_spool_msg **m = pst_xcalloc(N, sizeof(*m));
    char *body = make_body(1024, 2);
    struct pst_queue_stats st0, st;
    struct pst_envelope e;
    const char *rc[] = {"x@example.org"};

    spool_open(f);
    pst_queue_pause(f->q, true);
    pst_queue_stats(f->q, &st0);
    /* N sessions reach the end of DATA together: all commit at once */
    for (int i = 0; i < N; i++) {
        assert_int_equal(pst_spool_msg_new(f->sp, &m[i], s[i].qid), 0);
        assert_int_equal(pst_spool_msg_write(m[i], body, 1024), 0);
    }
    envelope(&e, "", rc, 1);
    for (int i = 0; i < N; i++)
        pst_spool_msg_commit(m[i], &e, on_commit, &s[i]);
    pst_envelope_free(&e);
    for (int i = 0; i < N; i++) {
        assert_true(run_until(f, pred_done, &s[i], 10000));
        assert_int_equal(s[i].status, 0);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(s[i].qid, s[j].qid);
    }
    pst_queue_stats(f->q, &st);
    printf("# group commit: %d messages, %llu batches, %.2f fsyncs/message\n",
           N, (unsigned long long)(st.batches - st0.batches),
           (double)(st.fsyncs - st0.fsyncs) / N);
    assert_int_equal(st.committed, N);
    /* every message into the log, one segment sync per batch (no file,
     * no directory), and batches shared by many messages */
    assert_int_equal(st.log - st0.log, N);
    assert_int_equal(st.fsyncs - st0.fsyncs, st.batches - st0.batches);
    assert_true(st.batches - st0.batches <= N / 2);
    assert_int_equal(count_sub(f, f->spool, "active"), 0);
    assert_int_equal(count_sub(f, f->spool, "incoming"), 0);
    assert_int_equal(st.queued, N);
    pst_queue_pause(f->q, false);
    assert_true(wait_count(f, f->mail, "new", N, 20000));
    assert_true(run_until(f, pred_queue_empty, f, 5000));
    assert_int_equal(count_sub(f, f->spool, "active"), 0);
    spool_close(f);
    free(body);
    free(m);
    free(s);
}

/* A sync error fails the whole batch: every message in it gets -EIO, its
 * file is removed or its group marked done; none is reported durable (nor
 * loaded after a restart); later batches commit. len picks the kind:
 * messages larger than the log takes are files. */
static char *spath(struct fx *f, const char *sub, const char *name);

/* Larger than a group may be: committed as a file. */
#define FILE_LEN ((size_t)PST_CHUNK_MAX + 4096)

static void
batch_fails(struct fx *f, const char *match, size_t len)
{
    enum { N = 30 };
    struct sub *s = pst_xcalloc(N, sizeof(*s));
    struct pst_spool_msg **m = pst_xcalloc(N, sizeof(*m));
    struct pst_envelope e;
    const char *rc[] = {"x@example.org"};
    char *body = make_body(len, 9);
    int failed = 0;

    spool_open(f);
    pst_queue_pause(f->q, true);
    for (int i = 0; i < N; i++) {
        assert_int_equal(pst_spool_msg_new(f->sp, &m[i], s[i].qid), 0);
        assert_int_equal(pst_spool_msg_write(m[i], body, len), 0);
    }
    snprintf(fsync_fail_match, sizeof(fsync_fail_match), "%s", match);
    atomic_store(&fsync_fail_left, 1);
    envelope(&e, "", rc, 1);
    for (int i = 0; i < N; i++)
        pst_spool_msg_commit(m[i], &e, on_commit, &s[i]);
    pst_envelope_free(&e);
    for (int i = 0; i < N; i++) {
        assert_true(run_until(f, pred_done, &s[i], 10000));
        char *pa = spath(f, "active", s[i].qid);
        char *pi = spath(f, "incoming", s[i].qid);
        if (s[i].status != 0) {
            assert_int_equal(s[i].status, -EIO);
            assert_int_not_equal(access(pa, F_OK), 0);
            failed++;
        } else if (len == FILE_LEN) {
            assert_int_equal(access(pa, F_OK), 0);
        }   /* small: a group, or a file while no segment is ready after
               the failed one was left */
        assert_int_not_equal(access(pi, F_OK), 0);
        free(pa);
        free(pi);
    }
    assert_int_equal(atomic_load(&fsync_fail_left), 0);
    struct pst_queue_stats st;
    pst_queue_stats(f->q, &st);
    printf("# fsync error on %s: %d of %d messages failed with their "
           "batch, %llu batches\n", match, failed, N,
           (unsigned long long)st.batches);
    assert_true(failed >= 1);
    assert_int_equal(st.committed, (uint64_t)(N - failed));
    assert_int_equal(st.queued, (unsigned)(N - failed));
    if (len == FILE_LEN)
        assert_int_equal(count_sub(f, f->spool, "active"), N - failed);
    spool_close(f);
    /* what failed does not come back; what committed does, once */
    spool_open(f);
    pst_queue_stats(f->q, &st);
    assert_int_equal(st.queued, (unsigned)(N - failed));
    spool_close(f);
    free(body);
    free(m);
    free(s);
}

static void
test_file_fsync_error_fails_batch(void **state)
{
    batch_fails(*state, "/incoming/", FILE_LEN);
}

static void
test_dir_fsync_error_fails_batch(void **state)
{
    batch_fails(*state, "/spool/active", FILE_LEN);
}

static void
test_segment_sync_error_fails_batch(void **state)
{
    /* the head, not the next segment being prepared meanwhile */
    batch_fails(*state, "/spool/log/seg-00000000", 1024);
}

static void
test_abort_and_lock(void **state)
{
    struct fx *f = *state;
    struct pst_spool_msg *m;
    struct pst_spool *sp2;
    struct pst_err err = {0};
    char qid[PST_QID_LEN + 1];

    spool_open(f);
    /* a small message is only in memory until its commit */
    assert_int_equal(pst_spool_msg_new(f->sp, &m, qid), 0);
    assert_int_equal(pst_spool_msg_write(m, "x\r\n", 3), 0);
    assert_int_equal(count_sub(f, f->spool, "incoming"), 0);
    pst_spool_msg_abort(m);
    /* a large one is a file in incoming/ from its second chunk on */
    char *big = make_body(FILE_LEN, 2);
    assert_int_equal(pst_spool_msg_new(f->sp, &m, qid), 0);
    assert_int_equal(pst_spool_msg_write(m, big, FILE_LEN), 0);
    assert_int_equal(count_sub(f, f->spool, "incoming"), 1);
    pst_spool_msg_abort(m);
    free(big);
    assert_int_equal(count_sub(f, f->spool, "incoming"), 0);
    /* a second gateway on the same spool is refused, with the reason */
    assert_int_equal(pst_spool_open(&sp2, &f->loop, &f->conf, &err), -EBUSY);
    assert_non_null(strstr(pst_err_first(&err), "in use by another"));
    pst_err_free(&err);
    assert_true(pst_spool_free_bytes(f->sp) > 0);
    spool_close(f);
}

static void
test_qid_unique_across_restarts(void **state)
{
    struct fx *f = *state;
    char seen[6][PST_QID_LEN + 1];
    int n = 0;

    for (int run = 0; run < 3; run++) {
        spool_open(f);
        for (int i = 0; i < 2; i++) {
            struct pst_spool_msg *m;
            assert_int_equal(pst_spool_msg_new(f->sp, &m, seen[n]), 0);
            pst_spool_msg_abort(m);
            for (int j = 0; j < n; j++)
                assert_string_not_equal(seen[j], seen[n]);
            n++;
        }
        spool_close(f);
    }
    /* the generation file lost: QIDs still move past those in the queue */
    char p[300];
    snprintf(p, sizeof(p), "%s/generation", f->spool);
    assert_int_equal(unlink(p), 0);
    spool_open(f);
    pst_queue_pause(f->q, true);
    const char *rc[] = {"r@example.org"};
    struct sub s;
    submit(f, &s, "s@example.org", rc, 1, "hi\r\n", 4);
    assert_true(run_until(f, pred_done, &s, 5000));
    spool_close(f);
    assert_int_equal(unlink(p), 0);
    spool_open(f);
    struct pst_spool_msg *m;
    char q[PST_QID_LEN + 1];
    assert_int_equal(pst_spool_msg_new(f->sp, &m, q), 0);
    assert_true(strcmp(q, s.qid) > 0);
    pst_spool_msg_abort(m);
    spool_close(f);
}

/* Commit n messages with delivery paused and close: files stay queued. */
static void
queue_paused(struct fx *f, struct sub *s, int n, const char **rcpts,
             size_t nr, const char *body, size_t len)
{
    spool_open(f);
    pst_queue_pause(f->q, true);
    for (int i = 0; i < n; i++)
        submit(f, &s[i], "from@example.com", rcpts, nr, body, len);
    for (int i = 0; i < n; i++) {
        assert_true(run_until(f, pred_done, &s[i], 5000));
        assert_int_equal(s[i].status, 0);
    }
    spool_close(f);
}

static char *
spath(struct fx *f, const char *sub, const char *name)
{
    return pst_xasprintf("%s/%s/%s", f->spool, sub, name);
}

static void
patch_byte(const char *path, off_t off, int delta)
{
    int fd = open(path, O_RDWR);
    unsigned char c;
    assert_true(fd >= 0);
    if (off < 0)
        off += lseek(fd, 0, SEEK_END);
    assert_int_equal(pread(fd, &c, 1, off), 1);
    c = (unsigned char)(c + delta);
    assert_int_equal(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

static void
append_bytes(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
}

static void
test_recovery(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"rcpt@example.net"};
    char *body = make_body(FILE_LEN, 3);
    struct sub s[5];
    char *p;

    queue_paused(f, s, 5, rc, 1, body, FILE_LEN);
    assert_int_equal(count_sub(f, f->spool, "active"), 5);
    /* 0: a flipped bit in the message text -> corrupt/ */
    p = spath(f, "active", s[0].qid);
    patch_byte(p, 200, 1);
    free(p);
    /* 1: an unknown format version -> corrupt/ */
    p = spath(f, "active", s[1].qid);
    patch_byte(p, 4, 1);
    free(p);
    /* 2: truncated before its commit record -> corrupt/ (was renamed
     * into active/ only after a sync, so this is damage, never deleted) */
    p = spath(f, "active", s[2].qid);
    assert_int_equal(truncate(p, 3000), 0);
    free(p);
    /* 3: a torn update record after the commit -> ignored, delivered */
    p = spath(f, "active", s[3].qid);
    struct pst_tbuf w = {0};
    pst__rec_rcpt(&w, 0, PST_RCPT_DELIVERED, time(NULL), NULL);
    append_bytes(p, w.p, w.len - 3);
    pst_tbuf_free(&w);
    free(p);
    /* 4: untouched -> delivered */
    /* incoming/: a half-written file from a crash -> removed */
    p = spath(f, "incoming", "00000000000000FF");
    int fd = open(p, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "PSTQ\1\0\0\0garbage", 15), 15);
    close(fd);
    free(p);
    /* and a stray non-queue file in active/ -> corrupt/ */
    p = spath(f, "active", "stray.tmp");
    fd = open(p, O_WRONLY | O_CREAT, 0600);
    close(fd);
    free(p);

    spool_open(f);
    assert_int_equal(count_sub(f, f->spool, "incoming"), 0);
    assert_int_equal(count_sub(f, f->spool, "corrupt"), 4);
    for (int i = 0; i < 3; i++) {
        p = spath(f, "corrupt", s[i].qid);
        assert_int_equal(access(p, F_OK), 0);
        free(p);
    }
    /* the torn tail was cut off: the file ends at its last good record */
    assert_true(wait_count(f, f->mail, "new", 2, 5000));
    assert_true(wait_count(f, f->spool, "active", 0, 5000));
    const char *both[] = {"rcpt@example.net", "rcpt@example.net"};
    check_maildir(f, "from@example.com", both, 2, body, FILE_LEN);
    spool_close(f);
    free(body);
}

/* After a partial delivery only the remaining recipients stay queued. */
static void
test_partial_state_survives_restart(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"one@example.net", "two@example.net",
                        "three@example.net"};
    struct sub s;
    char *p;
    char *body = make_body(FILE_LEN, 8);

    queue_paused(f, &s, 1, rc, 3, body, FILE_LEN);
    /* as if "two" had been delivered before a crash */
    p = spath(f, "active", s.qid);
    struct pst_tbuf w = {0};
    pst__rec_rcpt(&w, 1, PST_RCPT_DELIVERED, time(NULL), NULL);
    append_bytes(p, w.p, w.len);
    pst_tbuf_free(&w);
    free(p);
    spool_open(f);
    assert_true(wait_count(f, f->spool, "active", 0, 5000));
    const char *left[] = {"one@example.net", "three@example.net"};
    check_maildir(f, "from@example.com", left, 2, body, FILE_LEN);
    spool_close(f);
    free(body);
}

/* A next-attempt time far in the future (the clock was ahead) is capped
 * at retry_max, so the queue does not stall. */
static void
test_clock_jump_does_not_stall(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"later@example.net"};
    struct sub s;
    char *body = make_body(FILE_LEN, 4);

    queue_paused(f, &s, 1, rc, 1, body, FILE_LEN);
    free(body);
    char *p = spath(f, "active", s.qid);
    struct pst_tbuf w = {0};
    pst__rec_retry(&w, 3, time(NULL) + 365 * 86400, "4.3.0 earlier");
    append_bytes(p, w.p, w.len);
    pst_tbuf_free(&w);
    free(p);
    fx_conf(f, 1, 2, 3600);
    spool_open(f);
    assert_int_equal(count_sub(f, f->mail, "new"), 0);
    assert_true(wait_count(f, f->mail, "new", 1, 4000));
    spool_close(f);
}

static void
test_enospc_while_receiving(void **state)
{
    struct fx *f = *state;
    struct pst_spool_msg *m;
    char qid[PST_QID_LEN + 1];
    char *big = make_body(256 * 1024, 4);
    int rc = 0;

    mount_tmpfs(f, f->spool, "512k");
    spool_open(f);
    pst_queue_pause(f->q, true);
    assert_int_equal(pst_spool_msg_new(f->sp, &m, qid), 0);
    for (int i = 0; i < 8 && rc == 0; i++)
        rc = pst_spool_msg_write(m, big, 256 * 1024);
    assert_int_equal(rc, -ENOSPC);
    /* sticky: the message can only end; commit reports the error */
    assert_int_equal(pst_spool_msg_write(m, "x", 1), -ENOSPC);
    struct pst_envelope e;
    const char *rc1[] = {"r@example.org"};
    envelope(&e, "s@example.org", rc1, 1);
    struct sub s = {0};
    pst_spool_msg_commit(m, &e, on_commit, &s);
    assert_true(run_until(f, pred_done, &s, 5000));
    assert_int_equal(s.status, -ENOSPC);
    assert_int_equal(count_sub(f, f->spool, "incoming"), 0);
    assert_int_equal(count_sub(f, f->spool, "active"), 0);
    /* space is back: the next message commits */
    submit(f, &s, "s@example.org", rc1, 1, big, 100 * 1024);
    assert_true(run_until(f, pred_done, &s, 5000));
    assert_int_equal(s.status, 0);
    assert_int_equal(count_sub(f, f->spool, "active"), 1);
    pst_envelope_free(&e);
    spool_close(f);
    free(big);
}

/* A write error in the commit's own records (here EFBIG from a file size
 * limit that the message text just fits under; a full disk takes the same
 * path): the callback reports it, the file is gone, nothing is queued. */
static void
test_write_error_at_commit(void **state)
{
    struct fx *f = *state;
    struct pst_spool_msg *m;
    char qid[PST_QID_LEN + 1];
    size_t len = PST_CHUNK_MAX + 1;     /* a file: one CHUNK written, one
                                           byte left for the commit */
    char *body = make_body(len, 7);
    struct rlimit old, lim;
    struct sub s = {0};
    struct pst_envelope e;
    const char *rc1[] = {"r@example.org"};

    spool_open(f);
    pst_queue_pause(f->q, true);
    assert_int_equal(pst_spool_msg_new(f->sp, &m, qid), 0);
    assert_int_equal(pst_spool_msg_write(m, body, len), 0);
    char *p = spath(f, "incoming", qid);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 8 + 36 + PST_SPOOL_WBUF);
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)st.st_size + 16;     /* the records need more */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    envelope(&e, "s@example.org", rc1, 1);
    pst_spool_msg_commit(m, &e, on_commit, &s);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    assert_true(run_until(f, pred_done, &s, 5000));
    assert_int_equal(s.status, -EFBIG);
    assert_int_not_equal(access(p, F_OK), 0);
    assert_int_equal(count_sub(f, f->spool, "active"), 0);
    struct pst_queue_stats ss;
    pst_queue_stats(f->q, &ss);
    assert_int_equal(ss.committed, 0);
    assert_int_equal(ss.queued, 0);
    pst_envelope_free(&e);
    free(p);
    spool_close(f);
    free(body);
}

static int
scan_file(const char *path, struct pst_scan *sc)
{
    char why[160];
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    int rc = pst__spool_scan(fd, sc, why, sizeof(why));
    close(fd);
    return rc;
}

/* Disk full at the destination: the recipients that fit are delivered and
 * recorded, the rest retried later; each copy is made exactly once. */
static void
test_maildir_full_partial_then_retry(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"p1@example.net", "p2@example.net", "p3@example.net"};
    size_t len = 200 * 1024;
    char *body = make_body(len, 5);
    struct sub s;

    mount_tmpfs(f, f->mail, "512k");
    spool_open(f);
    submit(f, &s, "from@example.com", rc, 3, body, len);
    assert_true(run_until(f, pred_done, &s, 5000));
    assert_int_equal(s.status, 0);
    assert_true(wait_count(f, f->mail, "new", 2, 5000));
    /* the third did not fit: recorded as pending with its error */
    char *p = spath(f, "active", s.qid);
    struct pst_scan sc;
    for (int i = 0; i < 100; i++) {
        run_until(f, pred_done, &s, 20);
        assert_int_equal(scan_file(p, &sc), PST_SCAN_OK);
        if (sc.attempts == 1)
            break;
        pst__scan_free(&sc);
    }
    assert_int_equal(sc.attempts, 1);
    assert_int_equal(sc.env.rcpts[0].state, PST_RCPT_DELIVERED);
    assert_int_equal(sc.env.rcpts[1].state, PST_RCPT_DELIVERED);
    assert_int_equal(sc.env.rcpts[2].state, PST_RCPT_PENDING);
    assert_non_null(sc.rcpt_err[2]);
    assert_non_null(strstr(sc.rcpt_err[2], "4.3.1"));
    pst__scan_free(&sc);
    free(p);
    /* make room (a reader took a message); the retry delivers only p3 */
    char np[300];
    snprintf(np, sizeof(np), "%s/new", f->mail);
    DIR *d = opendir(np);
    struct dirent *de;
    char moved[2][600];
    int nm = 0;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.' && nm < 2) {
            snprintf(moved[nm], sizeof(moved[0]), "%s/%s", np, de->d_name);
            nm++;
        }
    closedir(d);
    char *keep = pst_xasprintf("%s/kept", f->root);
    mkdir(keep, 0700);
    for (int i = 0; i < nm; i++) {
        char *dst = pst_xasprintf("%s/%d", keep, i);
        char *cmd = pst_xasprintf("mv '%s' '%s'", moved[i], dst);
        assert_int_equal(system(cmd), 0);
        free(cmd);
        free(dst);
    }
    assert_true(wait_count(f, f->mail, "new", 1, 5000));
    assert_true(wait_count(f, f->spool, "active", 0, 5000));
    /* exactly one more copy, for p3; p1 and p2 were not made twice */
    check_maildir(f, "from@example.com", rc + 2, 1, body, len);
    check_dir(keep, "from@example.com", rc, 2, body, len, false);
    free(keep);
    spool_close(f);
    free(body);
}

/* ---- appending records on a full disk ---- */

struct att {
    struct fx *f;
    const char *qid;
    unsigned want, got;
};

static void
att_view(void *arg, const struct pst_qview *v)
{
    ((struct att *)arg)->got = v->attempts;
}

/* Message qid has had `want` attempts (their results recorded, or not). */
static bool
pred_attempts(void *arg)
{
    struct att *a = arg;
    a->got = 0;
    pst__qmgr_view(pst__queue_qmgr(a->f->q), a->qid, att_view, a);
    return a->got >= a->want;
}

/* Two attempts at a message file whose third recipient meets a full disk
 * each time, after nshort torn appends (half written, then ENOSPC) and
 * ntrunc failed ftruncates; the queue is paused after the second. */
static void
two_attempts(struct fx *f, struct sub *s, const char **rc, const char *body,
             int nshort, int ntrunc)
{
    spool_open(f);
    wf_arm("/spool/active/", nshort, "/mail/tmp/", "Delivered-To: p3@",
           "/spool/active/", ntrunc, 0);
    submit(f, s, "from@example.com", rc, 3, body, FILE_LEN);
    assert_true(run_until(f, pred_done, s, 5000));
    assert_int_equal(s->status, 0);
    struct att a = {f, s->qid, 2, 0};
    assert_true(run_until(f, pred_attempts, &a, 15000));
    pst_queue_pause(f->q, true);
}

/* A full disk tears the records an attempt appends to a message file (a
 * short write, then ENOSPC): they are cut off, and the next attempt's
 * records - with what the torn ones said - follow the last good record.
 * Before, the next records followed the torn one; at the next start the
 * torn record ended the file, and p1 and p2, delivered by the first
 * attempt, were delivered again. */
static void
test_torn_append_cut_off(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"p1@example.net", "p2@example.net",
                        "p3@example.net"};
    char *body = make_body(FILE_LEN, 9);
    struct sub s;
    struct pst_scan sc;

    two_attempts(f, &s, rc, body, 1, 0);
    assert_int_equal(wf_get(&wf_short_done), 1);
    char *p = spath(f, "active", s.qid);
    assert_int_equal(scan_file(p, &sc), PST_SCAN_OK);
    spool_close(f);
    wf_clear();
    /* a restart: p3 alone is delivered; p1 and p2 once, in all */
    spool_open(f);
    assert_true(run_until(f, pred_queue_empty, f, 10000));
    check_maildir(f, "from@example.com", rc, 3, body, FILE_LEN);
    spool_close(f);
    /* what the restart read: no torn record; both attempts recorded */
    assert_false(sc.torn);
    assert_int_equal(sc.good_end, sc.file_size);
    assert_int_equal(sc.attempts, 2);
    assert_int_equal(sc.env.rcpts[0].state, PST_RCPT_DELIVERED);
    assert_int_equal(sc.env.rcpts[1].state, PST_RCPT_DELIVERED);
    assert_int_equal(sc.env.rcpts[2].state, PST_RCPT_PENDING);
    pst__scan_free(&sc);
    free(p);
    free(body);
}

/* The torn records cannot even be cut off (ftruncate fails too): nothing
 * is appended after them until they are - the second attempt records
 * nothing, the third cuts them and records both attempts' results. */
static void
test_torn_append_cut_fails(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"p1@example.net", "p2@example.net",
                        "p3@example.net"};
    char *body = make_body(FILE_LEN, 10);
    struct sub s;
    struct pst_scan sc;
    struct stat st;

    two_attempts(f, &s, rc, body, 1, 2);
    assert_int_equal(wf_get(&wf_trunc_done), 2);
    char *p = spath(f, "active", s.qid);
    /* the torn bytes, and no record after them */
    assert_int_equal(scan_file(p, &sc), PST_SCAN_OK);
    assert_true(sc.torn);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(sc.attempts, 0);
    assert_true(sc.good_end < (uint64_t)st.st_size);
    pst__scan_free(&sc);
    /* the third attempt: the cut works now */
    struct att a = {f, s.qid, 3, 0};
    pst_queue_pause(f->q, false);
    assert_true(run_until(f, pred_attempts, &a, 15000));
    pst_queue_pause(f->q, true);
    assert_int_equal(scan_file(p, &sc), PST_SCAN_OK);
    assert_false(sc.torn);
    assert_int_equal(sc.attempts, 3);
    assert_int_equal(sc.env.rcpts[0].state, PST_RCPT_DELIVERED);
    assert_int_equal(sc.env.rcpts[1].state, PST_RCPT_DELIVERED);
    assert_int_equal(sc.env.rcpts[2].state, PST_RCPT_PENDING);
    pst__scan_free(&sc);
    spool_close(f);
    wf_clear();
    spool_open(f);
    assert_true(run_until(f, pred_queue_empty, f, 10000));
    check_maildir(f, "from@example.com", rc, 3, body, FILE_LEN);
    spool_close(f);
    free(p);
    free(body);
}

/* ---- the log ---- */

static char *
seg_path(struct fx *f, unsigned id)
{
    return pst_xasprintf("%s/log/seg-%08X", f->spool, id);
}

/* The offset of the group of message qid in segment file path (its INFO
 * record holds the ID right after the MARK), or -1. */
static long
group_of(const char *path, const char *qid)
{
    size_t len;
    char *b = slurp(path, &len);
    long at = -1;
    for (size_t o = 64; o + 64 <= len; o += PST_GROUP_ALIGN)
        if (memcmp(b + o + PST_MARK_LEN + PST_REC_HDR_LEN, qid,
                   PST_QID_LEN) == 0 && b[o] == PST_REC_MARK) {
            at = (long)o;
            break;
        }
    free(b);
    return at;
}

/* The salt of segment file path (its header). */
static uint32_t
seg_salt(const char *path)
{
    size_t len;
    char *b = slurp(path, &len);
    uint32_t s = (uint32_t)(uint8_t)b[16] | (uint32_t)(uint8_t)b[17] << 8 |
                 (uint32_t)(uint8_t)b[18] << 16 |
                 (uint32_t)(uint8_t)b[19] << 24;
    free(b);
    return s;
}

/* Small messages: groups in the log, no file; delivered byte for byte,
 * one recipient or several, from 1 byte to the largest a group takes. */
static void
test_log_commit_and_deliver(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"a@example.org", "b@example.org"};
    size_t lens[] = {1, 1024, 70000, PST_CHUNK_MAX};
    struct pst_queue_stats st;

    spool_open(f);
    for (size_t k = 0; k < PST_ARRAY_LEN(lens); k++) {
        char *body = make_body(lens[k], (unsigned)k);
        struct sub s;
        submit(f, &s, "small@example.com", rc, 2, body, lens[k]);
        assert_true(run_until(f, pred_done, &s, 5000));
        assert_int_equal(s.status, 0);
        assert_int_equal(count_sub(f, f->spool, "active"), 0);
        assert_int_equal(count_sub(f, f->spool, "incoming"), 0);
        assert_true(run_until(f, pred_queue_empty, f, 5000));
        check_maildir(f, "small@example.com", rc, 2, body, lens[k]);
        char *cmd = pst_xasprintf("rm -f '%s'/new/*", f->mail);
        assert_int_equal(system(cmd), 0);
        free(cmd);
        free(body);
    }
    pst_queue_stats(f->q, &st);
    assert_int_equal(st.committed, PST_ARRAY_LEN(lens));
    assert_int_equal(st.log, PST_ARRAY_LEN(lens));
    spool_close(f);
    /* every group is done: nothing is delivered again after a restart */
    spool_open(f);
    pst_queue_stats(f->q, &st);
    assert_int_equal(st.queued, 0);
    spool_close(f);
}

/* Segments are reused once their messages are done: the log does not grow
 * with the number of messages that went through it. */
static void
test_log_segments_reused(void **state)
{
    struct fx *f = *state;
    enum { N = 2400, CONC = 40 };      /* about 3.5 MiB of groups */
    const char *rc[] = {"r@example.org"};
    char *body = make_body(1400, 3);
    struct sub *s = pst_xcalloc(CONC, sizeof(*s));
    struct pst_queue_stats st;
    int sent = 0, max_segs = 0;

    spool_open(f);
    while (sent < N) {
        for (int i = 0; i < CONC; i++)
            submit(f, &s[i], "loop@example.com", rc, 1, body, 1400);
        for (int i = 0; i < CONC; i++) {
            assert_true(run_until(f, pred_done, &s[i], 5000));
            assert_int_equal(s[i].status, 0);
        }
        sent += CONC;
        pst_queue_stats(f->q, &st);
        max_segs = PST_MAX(max_segs, (int)st.segments);
    }
    assert_true(wait_count(f, f->mail, "new", N, 30000));
    assert_true(run_until(f, pred_queue_empty, f, 5000));
    pst_queue_stats(f->q, &st);
    printf("# %d messages through the log: %llu segments put to use, at "
           "most %d files, %llu in the log\n", N,
           (unsigned long long)st.prepared, max_segs,
           (unsigned long long)st.log);
    assert_true(st.log >= N - 100);     /* a few may meet a full head */
    assert_true(st.prepared >= 4);
    /* head, ready, two spares, and one or two waiting to be reclaimed */
    assert_true(max_segs <= 6);
    spool_close(f);
    free(s);
    free(body);
}

/* A small message whose first attempt defers leaves the log: it becomes a
 * file in active/ holding its attempt, loaded from there after a restart,
 * and delivered once when the destination has room. */
static void
test_log_defer_copies_out(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"d1@example.net", "d2@example.net"};
    char *body = make_body(2000, 5);
    struct sub s;

    mount_tmpfs(f, f->mail, "64k");
    char *filler = pst_xasprintf("%s/filler", f->mail);
    char *cmd = pst_xasprintf("dd if=/dev/zero of='%s' bs=4k count=64 "
                              "2>/dev/null; true", filler);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    fx_conf(f, 1, 1, 3600);
    spool_open(f);
    submit(f, &s, "defer@example.com", rc, 2, body, 2000);
    assert_true(run_until(f, pred_done, &s, 5000));
    assert_int_equal(s.status, 0);
    assert_true(wait_count(f, f->spool, "active", 1, 5000));
    char *p = spath(f, "active", s.qid);
    struct pst_scan sc;
    assert_int_equal(scan_file(p, &sc), PST_SCAN_OK);
    assert_int_equal(sc.attempts, 1);
    assert_int_equal(sc.env.rcpts[0].state, PST_RCPT_PENDING);
    assert_non_null(sc.rcpt_err[0]);
    assert_non_null(strstr(sc.rcpt_err[0], "4.3.1"));
    pst__scan_free(&sc);
    spool_close(f);
    /* its group is marked moved: one copy queued after a restart */
    fx_conf(f, 3600, 3600, 3600);
    spool_open(f);
    struct pst_queue_stats st;
    pst_queue_stats(f->q, &st);
    assert_int_equal(st.queued, 1);
    spool_close(f);
    /* room again: delivered once to each recipient */
    assert_int_equal(unlink(filler), 0);
    fx_conf(f, 1, 1, 3600);
    spool_open(f);
    assert_true(wait_count(f, f->mail, "new", 2, 8000));
    assert_true(run_until(f, pred_queue_empty, f, 5000));
    assert_int_not_equal(access(p, F_OK), 0);
    check_maildir(f, "defer@example.com", rc, 2, body, 2000);
    spool_close(f);
    free(p);
    free(filler);
    free(body);
}

/* Recovery of the log: a damaged group is skipped (and its bytes kept in
 * corrupt/) while the groups after it load; a torn group at the tail is
 * ignored; a live group whose message is also a file (copied out just
 * before a crash) yields to the file. */
static void
test_log_recovery(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"rec@example.net"};
    struct sub s[4];
    char *body = make_body(3000, 6);

    queue_paused(f, s, 4, rc, 1, body, 3000);
    char *seg = seg_path(f, 0);
    long g[4];
    for (int i = 0; i < 4; i++) {
        g[i] = group_of(seg, s[i].qid);
        assert_true(g[i] > 0);
    }
    uint32_t salt = seg_salt(seg);
    /* 0: a flipped byte in its text */
    patch_byte(seg, g[0] + 200, 1);
    /* 1: as if copied out to hold/ just before the crash: the file there
     * (made from its own group), the group still live */
    {
        size_t len;
        char *b = slurp(seg, &len);
        struct pst_scan sc;
        int mark;
        assert_int_equal(pst__group_parse((uint8_t *)b + g[1],
                                          len - (size_t)g[1],
                                          (uint64_t)g[1], salt, &sc, &mark),
                         PST_GROUP_OK);
        assert_int_equal(mark, PST_MARK_LIVE);
        struct pst_tbuf out = {0};
        struct pst_scan fo;
        assert_int_equal(pst__file_from_group((uint8_t *)b + g[1],
                                              sc.good_end - (uint64_t)g[1],
                                              salt, &out, &fo), 0);
        pst__rec_state(&out, PST_QSTATE_HELD, time(NULL), "test");
        char *hp = spath(f, "hold", s[1].qid);
        int fd = open(hp, O_WRONLY | O_CREAT | O_EXCL, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, out.p, out.len), (ssize_t)out.len);
        close(fd);
        free(hp);
        pst_tbuf_free(&out);
        /* a torn group after the last one: a live MARK, half an INFO */
        uint64_t end = 0;
        struct pst_scan s3;
        assert_int_equal(pst__group_parse((uint8_t *)b + g[3],
                                          len - (size_t)g[3], (uint64_t)g[3],
                                          salt, &s3, &mark), PST_GROUP_OK);
        end = s3.good_end;
        pst__scan_free(&s3);
        pst__scan_free(&sc);
        uint8_t torn[PST_MARK_LEN + 10] = {0};
        pst__mark_encode(torn, PST_MARK_LIVE, 0, salt);
        torn[PST_MARK_LEN] = PST_REC_INFO;
        fd = open(seg, O_WRONLY);
        assert_int_equal(pwrite(fd, torn, sizeof(torn), (off_t)end),
                         (ssize_t)sizeof(torn));
        close(fd);
        free(b);
    }
    spool_open(f);
    struct pst_queue_stats st;
    pst_queue_stats(f->q, &st);
    assert_int_equal(st.queued, 3);         /* 1 (held), 2, 3 */
    assert_int_equal(st.held, 1);
    assert_true(wait_count(f, f->mail, "new", 2, 5000));
    assert_true(run_until(f, pred_only_held, f, 5000));
    /* the damaged bytes kept for a look */
    assert_int_equal(count_sub(f, f->spool, "corrupt"), 1);
    spool_close(f);
    /* nothing more after another restart: 2 and 3 done, 1 held */
    spool_open(f);
    pst_queue_stats(f->q, &st);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.held, 1);
    assert_int_equal(count_sub(f, f->mail, "new"), 2);
    spool_close(f);
    free(seg);
    free(body);
}

struct opdone {
    bool done;
    int status;
};

static void
on_op(void *arg, int status, const char *text)
{
    struct opdone *o = arg;
    (void)text;
    o->status = status;
    o->done = true;
}

static bool
pred_op(void *arg)
{
    return ((struct opdone *)arg)->done;
}

/* op - an operator command on message qid, run to its end: its status. */
static int
op(struct fx *f, enum pst_qop which, const char *qid)
{
    struct opdone o = {0};
    pst__qmgr_op(pst__queue_qmgr(f->q), which, qid, on_op, &o);
    assert_true(run_until(f, pred_op, &o, 5000));
    return o.status;
}

/* The messages' holds on the log's segments (and the head's). */
static unsigned
seg_refs(struct fx *f)
{
    struct pst_seg *sg;
    unsigned n = 0;
    pthread_mutex_lock(&f->sp->mu);
    TAILQ_FOREACH(sg, &f->sp->segs, link)
        n += atomic_load(&sg->refs);
    pthread_mutex_unlock(&f->sp->mu);
    return n;
}

/* A MARK that cannot be written (an I/O error) when the operator deletes
 * a message in the log: the delete fails, and the message stays with its
 * hold on the segment - before, the hold went all the same, and the
 * segment could be put to another use under a message still queued. A
 * sync that fails after the MARK was written: the message is gone (the
 * error logged), its hold too. */
static void
test_log_mark_error_keeps_message(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"k@example.net"};
    char *body = make_body(3000, 11);
    struct sub a, b;
    struct pst_queue_stats st;

    spool_open(f);
    pst_queue_pause(f->q, true);
    submit(f, &a, "from@example.com", rc, 1, body, 3000);
    submit(f, &b, "from@example.com", rc, 1, body, 3000);
    assert_true(run_until(f, pred_done, &a, 5000));
    assert_true(run_until(f, pred_done, &b, 5000));
    assert_int_equal(a.status + b.status, 0);
    assert_int_equal(seg_refs(f), 3);           /* two messages, the head */
    wf_arm(NULL, 0, NULL, NULL, NULL, 0, 1);
    assert_int_equal(op(f, PST_QOP_DELETE, a.qid), -EIO);
    assert_int_equal(wf_get(&wf_mark_done), 1);
    assert_int_equal(seg_refs(f), 3);
    pst_queue_stats(f->q, &st);
    assert_int_equal(st.queued, 2);
    wf_clear();
    /* the MARK written, its segment's sync fails: deleted all the same */
    snprintf(fsync_fail_match, sizeof(fsync_fail_match), "/log/seg-");
    atomic_store(&fsync_fail_left, 1);
    assert_int_equal(op(f, PST_QOP_DELETE, a.qid), 0);
    assert_int_equal(atomic_load(&fsync_fail_left), 0);
    assert_int_equal(seg_refs(f), 2);
    pst_queue_stats(f->q, &st);
    assert_int_equal(st.queued, 1);
    /* b alone is delivered, once */
    pst_queue_pause(f->q, false);
    assert_true(run_until(f, pred_queue_empty, f, 5000));
    check_maildir(f, "from@example.com", rc, 1, body, 3000);
    assert_int_equal(seg_refs(f), 1);
    spool_close(f);
    free(body);
}

/* A live MARK that names recipients (a route part answered before a
 * crash, docs/SPOOL.md "Duplicate window"): they are delivered, not tried
 * again; when the message then leaves the log for a file, the file's
 * records say so too. */
static void
test_log_mark_recipients(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"m1@example.net", "m2@example.net",
                        "m3@example.net"};
    char *body = make_body(3000, 12);
    struct sub s;
    struct pst_scan sc;

    queue_paused(f, &s, 1, rc, 3, body, 3000);
    char *seg = seg_path(f, 0);
    long g = group_of(seg, s.qid);
    assert_true(g > 0);
    uint8_t mk[PST_MARK_LEN];
    pst__mark_encode(mk, PST_MARK_LIVE, 1u << 1, seg_salt(seg));
    int fd = open(seg, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, mk, sizeof(mk), g), (ssize_t)sizeof(mk));
    close(fd);
    /* m3 meets a full disk: the message leaves the log */
    wf_arm(NULL, 0, "/mail/tmp/", "Delivered-To: m3@", NULL, 0, 0);
    spool_open(f);
    assert_true(wait_count(f, f->spool, "active", 1, 5000));
    pst_queue_pause(f->q, true);
    char *p = spath(f, "active", s.qid);
    assert_int_equal(scan_file(p, &sc), PST_SCAN_OK);
    assert_int_equal(sc.env.rcpts[0].state, PST_RCPT_DELIVERED);
    assert_int_equal(sc.env.rcpts[1].state, PST_RCPT_DELIVERED);
    assert_int_equal(sc.env.rcpts[2].state, PST_RCPT_PENDING);
    pst__scan_free(&sc);
    spool_close(f);
    wf_clear();
    spool_open(f);
    assert_true(run_until(f, pred_queue_empty, f, 10000));
    const char *got[] = {"m1@example.net", "m3@example.net"};
    check_maildir(f, "from@example.com", got, 2, body, 3000);
    spool_close(f);
    free(p);
    free(seg);
    free(body);
}

/* A group whose text no longer checks out when it is read for delivery:
 * nothing is delivered, its bytes are kept in corrupt/QID, and it is not
 * loaded again after a restart. */
static void
test_log_corrupt_at_delivery(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"bad@example.net"};
    char *body = make_body(4000, 7);
    struct sub s;

    spool_open(f);
    pst_queue_pause(f->q, true);
    submit(f, &s, "from@example.com", rc, 1, body, 4000);
    assert_true(run_until(f, pred_done, &s, 5000));
    assert_int_equal(s.status, 0);
    char *seg = seg_path(f, 0);
    long g = group_of(seg, s.qid);
    assert_true(g > 0);
    patch_byte(seg, g + 300, 1);        /* inside the text */
    pst_queue_pause(f->q, false);
    assert_true(run_until(f, pred_queue_empty, f, 5000));
    char *p = spath(f, "corrupt", s.qid);
    assert_int_equal(access(p, F_OK), 0);
    assert_int_equal(count_sub(f, f->mail, "new"), 0);
    spool_close(f);
    spool_open(f);
    struct pst_queue_stats st;
    pst_queue_stats(f->q, &st);
    assert_int_equal(st.queued, 0);
    spool_close(f);
    free(p);
    free(seg);
    free(body);
}


/* A committed message's group parsed from its segment and the segment
 * open, as a reader's reference (what the queue manager builds). */
struct group_ref {
    char *seg, *b;
    struct pst_scan sc;
    struct pst_spool_ref ref;
};

static void
group_ref_of(struct fx *f, const char *qid, struct group_ref *gr)
{
    size_t len;
    int mark;
    gr->seg = seg_path(f, 0);
    long g = group_of(gr->seg, qid);
    gr->b = slurp(gr->seg, &len);
    uint32_t salt = seg_salt(gr->seg);
    assert_int_equal(pst__group_parse((uint8_t *)gr->b + g,
                                      len - (size_t)g, (uint64_t)g, salt,
                                      &gr->sc, &mark),
                     PST_GROUP_OK);
    int fd = open(gr->seg, O_RDONLY);
    assert_true(fd >= 0);
    gr->ref = (struct pst_spool_ref){.fd = fd, .seed = salt,
                                     .data_off = gr->sc.data_off,
                                     .data_end = gr->sc.env_off,
                                     .size = gr->sc.msg_size,
                                     .edits_off = gr->sc.edits_off};
}

static void
group_ref_free(struct group_ref *gr)
{
    close(gr->ref.fd);
    pst__scan_free(&gr->sc);
    free(gr->b);
    free(gr->seg);
}

/* The reader's page-cache-only read (what the delivery client does on the
 * loop): a small message in the log is read whole; a message larger than
 * one buffer is left to the blocking read, with nothing consumed. */
static void
test_reader_try_read(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"r@example.net"};
    char *small = make_body(3000, 1);
    struct sub s;

    spool_open(f);
    pst_queue_pause(f->q, true);
    submit(f, &s, "from@example.com", rc, 1, small, 3000);
    assert_true(run_until(f, pred_done, &s, 5000));
    struct group_ref gr;
    group_ref_of(f, s.qid, &gr);
    struct pst_spool_ref ref = gr.ref;
    struct pst_spool_reader *r;
    assert_int_equal(pst__reader_open(&r, &ref, s.qid), 0);
    char out[4096];
    ssize_t n = pst_spool_reader_try_read(r, out, sizeof(out));
    assert_int_equal(n, 3000);      /* just written: in the page cache */
    assert_memory_equal(out, small, 3000);
    assert_int_equal(pst_spool_reader_try_read(r, out, sizeof(out)), 0);
    pst__reader_close(r);
    /* larger than a buffer: -EAGAIN, and the blocking read still has it */
    ref.size = PST_SPOOL_WBUF + 1;
    assert_int_equal(pst__reader_open(&r, &ref, s.qid), 0);
    assert_int_equal(pst_spool_reader_try_read(r, out, sizeof(out)), -EAGAIN);
    assert_int_equal(pst_spool_reader_read(r, out, sizeof(out)), 3000);
    pst__reader_close(r);
    group_ref_free(&gr);
    spool_close(f);
    free(small);
}

/* The page-cache-only read of a message with filter edits (the relay's
 * case): the edited text, exactly what the applier makes of the stored
 * one, in one call, and again after a rewind; the blocking read gives the
 * same; asking for the sticky error (len 0) consumes nothing. */
static void
test_reader_try_read_edits(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"r@example.net"};
    char *small = make_body(3000, 2);
    size_t hdr_end = (size_t)(strstr(small, "\r\n\r\n") - small) + 2;
    struct pst_tbuf blob = {0}, want = {0};
    struct pst_spool_msg *m;
    struct pst_envelope e;
    struct sub s;

    /* a field added on top, Subject replaced, five body octets replaced */
    pst_edits_begin(&blob);
    pst_edits_put_hdr(&blob, hdr_end);
    pst_edits_put_text(&blob, "X-Added: yes\r\n", 14);
    size_t subj = (size_t)(strstr(small, "Subject:") - small);
    pst_edits_put_keep(&blob, 0, subj);
    pst_edits_put_text(&blob, "Subject: edited\r\n", 17);
    pst_edits_put_body(&blob, hdr_end + 2 + 100, 5, "EDIT", 4);
    assert_int_equal(pst_edits_apply_mem(blob.p, blob.len, small, 3000,
                                         &want), 0);
    assert_int_equal(want.len, 3000 + 14 + 17 - 15 - 1);

    spool_open(f);
    pst_queue_pause(f->q, true);
    memset(&s, 0, sizeof(s));
    assert_int_equal(pst_spool_msg_new(f->sp, &m, s.qid), 0);
    assert_int_equal(pst_spool_msg_write(m, small, 3000), 0);
    assert_int_equal(pst_spool_msg_set_edits(m, blob.p, blob.len), 0);
    envelope(&e, "from@example.com", rc, 1);
    pst_spool_msg_commit(m, &e, on_commit, &s);
    pst_envelope_free(&e);
    assert_true(run_until(f, pred_done, &s, 5000));
    assert_int_equal(s.status, 0);

    struct group_ref gr;
    group_ref_of(f, s.qid, &gr);
    assert_true(gr.sc.edits_off > 0);
    struct pst_spool_ref ref = gr.ref;
    struct pst_spool_reader *r;
    char out[8192];
    assert_int_equal(pst__reader_open(&r, &ref, s.qid), 0);
    assert_int_equal(pst_spool_reader_size(r), want.len);
    assert_int_equal(pst_spool_reader_read(r, NULL, 0), 0);
    for (int round = 0; round < 2; round++) {
        ssize_t n = pst_spool_reader_try_read(r, out, sizeof(out));
        assert_int_equal(n, (ssize_t)want.len);
        assert_memory_equal(out, want.p, want.len);
        assert_int_equal(pst_spool_reader_try_read(r, out, sizeof(out)), 0);
        assert_int_equal(pst_spool_reader_rewind(r), 0);
    }
    /* in small pieces, and by the blocking read */
    size_t got = 0;
    ssize_t n;
    while ((n = pst_spool_reader_try_read(r, out + got, 7)) > 0)
        got += (size_t)n;
    assert_int_equal(n, 0);
    assert_int_equal(got, want.len);
    assert_memory_equal(out, want.p, want.len);
    pst__reader_close(r);
    assert_int_equal(pst__reader_open(&r, &ref, s.qid), 0);
    assert_int_equal(pst_spool_reader_read(r, out, sizeof(out)),
                     (ssize_t)want.len);
    assert_memory_equal(out, want.p, want.len);
    pst__reader_close(r);
    group_ref_free(&gr);
    spool_close(f);
    pst_tbuf_free(&blob);
    pst_tbuf_free(&want);
    free(small);
}

/* Lifetime over after a failed attempt: recorded failed, kept in hold/. */
static void
test_expire_to_hold(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"gone@example.net"};
    size_t len = 600 * 1024;
    char *body = make_body(len, 6);
    struct sub s;

    mount_tmpfs(f, f->mail, "256k");
    fx_conf(f, 1, 1, 2);
    spool_open(f);
    submit(f, &s, "from@example.com", rc, 1, body, len);
    assert_true(run_until(f, pred_done, &s, 5000));
    assert_int_equal(s.status, 0);
    assert_true(wait_count(f, f->spool, "hold", 1, 8000));
    assert_int_equal(count_sub(f, f->spool, "active"), 0);
    assert_int_equal(count_sub(f, f->mail, "new"), 0);
    char *p = spath(f, "hold", s.qid);
    struct pst_scan sc;
    assert_int_equal(scan_file(p, &sc), PST_SCAN_OK);
    assert_int_equal(sc.state, PST_QSTATE_FAILED);
    assert_true(sc.attempts >= 2);
    pst__scan_free(&sc);
    free(p);
    spool_close(f);
    /* still held (as failed) after a restart, not retried */
    spool_open(f);
    struct pst_queue_stats st;
    pst_queue_stats(f->q, &st);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.delivering, 0);
    spool_close(f);
    free(body);
}

/* ---- control socket, driven from a client thread ---- */

struct ctl_req {
    char path[300];
    char line[128];
    char resp[16384];
    atomic_bool done;
};

static void *
ctl_thread(void *arg)
{
    struct ctl_req *r = arg;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    size_t n = 0;

    size_t pl = PST_MIN(strlen(r->path), sizeof(sa.sun_path) - 1);
    memcpy(sa.sun_path, r->path, pl);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        write(fd, r->line, strlen(r->line)) == (ssize_t)strlen(r->line)) {
        ssize_t k;
        while (n < sizeof(r->resp) - 1 &&
               (k = read(fd, r->resp + n, sizeof(r->resp) - 1 - n)) > 0)
            n += (size_t)k;
    }
    r->resp[n] = '\0';
    close(fd);
    atomic_store(&r->done, true);
    return NULL;
}

static bool
pred_ctl(void *arg)
{
    return atomic_load(&((struct ctl_req *)arg)->done);
}

static void
ctl(struct fx *f, struct ctl_req *r, const char *line)
{
    pthread_t t;
    memset(r, 0, sizeof(*r));
    snprintf(r->path, sizeof(r->path), "%s/control.sock", f->spool);
    snprintf(r->line, sizeof(r->line), "%s\n", line);
    assert_int_equal(pthread_create(&t, NULL, ctl_thread, r), 0);
    assert_true(run_until(f, pred_ctl, r, 5000));
    pthread_join(t, NULL);
}

static void
test_control(void **state)
{
    struct fx *f = *state;
    const char *rc[] = {"c1@example.net", "c2@example.net"};
    struct sub s[3];
    struct ctl_req *r = pst_xcalloc(1, sizeof(*r));
    char line[64];

    spool_open(f);
    pst_queue_pause(f->q, true);
    for (int i = 0; i < 3; i++)
        submit(f, &s[i], "ctl@example.com", rc, 2, "x\r\n", 3);
    for (int i = 0; i < 3; i++)
        assert_true(run_until(f, pred_done, &s[i], 5000));

    ctl(f, r, "LIST JSON");
    assert_memory_equal(r->resp, "OK\n{\"messages\":[", 16);
    assert_non_null(strstr(r->resp, s[2].qid));
    assert_non_null(strstr(r->resp, "\"count\":3"));
    assert_non_null(strstr(r->resp, "\"address\":\"c2@example.net\","
                                    "\"state\":\"pending\""));
    ctl(f, r, "LIST");
    assert_memory_equal(r->resp, "OK\n", 3);
    assert_non_null(strstr(r->resp, "ctl@example.com"));

    snprintf(line, sizeof(line), "SHOW %s", s[0].qid);
    ctl(f, r, line);
    assert_memory_equal(r->resp, "OK\n", 3);
    assert_non_null(strstr(r->resp, "helo: \"client.example\""));
    ctl(f, r, "SHOW 0123456789ABCDEF");
    assert_memory_equal(r->resp, "ERR ", 4);

    /* the three are groups in the log; a held one becomes a file in
     * hold/ (its group marked moved) */
    assert_int_equal(count_sub(f, f->spool, "active"), 0);
    snprintf(line, sizeof(line), "HOLD %s", s[0].qid);
    ctl(f, r, line);
    assert_memory_equal(r->resp, "OK held", 7);
    assert_int_equal(count_sub(f, f->spool, "hold"), 1);
    ctl(f, r, line);
    assert_memory_equal(r->resp, "ERR ", 4);   /* already held */

    snprintf(line, sizeof(line), "DELETE %s", s[1].qid);
    ctl(f, r, line);
    assert_memory_equal(r->resp, "OK deleted", 10);
    struct pst_queue_stats st;
    pst_queue_stats(f->q, &st);
    assert_int_equal(st.queued, 2);
    assert_int_equal(st.held, 1);

    /* resume: only the one left is delivered, the held one stays */
    pst_queue_pause(f->q, false);
    assert_true(wait_count(f, f->mail, "new", 2, 5000));
    assert_true(run_until(f, pred_only_held, f, 5000));
    assert_int_equal(count_sub(f, f->spool, "hold"), 1);
    /* and the deleted one is not back after a restart */
    spool_close(f);
    spool_open(f);
    pst_queue_stats(f->q, &st);
    assert_int_equal(st.queued, 1);

    snprintf(line, sizeof(line), "RELEASE %s", s[0].qid);
    ctl(f, r, line);
    assert_memory_equal(r->resp, "OK released", 11);
    assert_true(wait_count(f, f->mail, "new", 4, 5000));
    assert_true(wait_count(f, f->spool, "hold", 0, 5000));
    assert_true(run_until(f, pred_queue_empty, f, 5000));
    assert_int_equal(count_sub(f, f->spool, "active"), 0);

    ctl(f, r, "FLUSH");
    assert_memory_equal(r->resp, "OK flushed", 10);
    ctl(f, r, "DELETE ALL");
    assert_memory_equal(r->resp, "OK deleted 0 messages", 21);
    ctl(f, r, "BOGUS");
    assert_memory_equal(r->resp, "ERR unknown command", 19);
    spool_close(f);
    free(r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit_and_deliver, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_msg_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_fsync_error_fails_batch,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_dir_fsync_error_fails_batch,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_segment_sync_error_fails_batch,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_and_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qid_unique_across_restarts,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_state_survives_restart,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_clock_jump_does_not_stall, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_enospc_while_receiving, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_write_error_at_commit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_maildir_full_partial_then_retry,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_expire_to_hold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_append_cut_off, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_torn_append_cut_fails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_log_commit_and_deliver, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_log_segments_reused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_log_defer_copies_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_log_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_mark_error_keeps_message,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_mark_recipients, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_log_corrupt_at_delivery, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reader_try_read, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reader_try_read_edits, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_control, setup, teardown),
    };
    pst_log_open("postern", 0, LOG_MAIL, PST_LOG_INFO);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
