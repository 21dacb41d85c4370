/*
 * log_test.c - JSON log lines (pst_log_json): key=value text with quoted
 * values becomes one object with the same fields, decoded and re-escaped;
 * bare tokens go to "text"; a repeated key is suffixed; invalid UTF-8
 * becomes U+FFFD; an object too long for its buffer keeps whole fields
 * only and says it was truncated. Text and JSON lines on stderr: the
 * time stamp (to the millisecond, UTC, the second of the call), the pid,
 * the level, the text. Batched lines (pst_log_batch): held until a flush,
 * an error-level line, another thread's line, a full buffer or exit, then
 * written whole and in the order of the calls; a forked child never
 * writes its parent's.
 */
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/log.h"

static void
check(const char *text, const char *want)
{
    char out[1024];
    size_t n = pst_log_json(out, sizeof(out), NULL, NULL, 0, "info", text);
    assert_int_equal(n, strlen(out));
    if (strcmp(out, want) != 0)
        fail_msg("for %s\n got %s\nwant %s", text, out, want);
}

static void
test_fields(void **state)
{
    (void)state;
    check("sess=00ab event=helo name=\"a\\\"b\\\\c\\x01\\xc3\\xa9\\xff\"",
          "{\"level\":\"info\",\"sess\":\"00ab\",\"event\":\"helo\","
          "\"name\":\"a\\\"b\\\\c\\u0001\xc3\xa9\\ufffd\"}");
    check("event=x a=1 a=2 free words k=", "{\"level\":\"info\",\"event\":"
          "\"x\",\"a\":\"1\",\"a_2\":\"2\",\"k\":\"\",\"text\":\"free "
          "words\"}");
    check("", "{\"level\":\"info\"}");
    /* overlong, surrogate and truncated sequences */
    check("v=\"\\xc0\\xaf|\\xed\\xa0\\x80|\\xe2\\x82|\\xf4\\x90\\x80\\x80\"",
          "{\"level\":\"info\",\"v\":\"\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd|"
          "\\ufffd|\\ufffd\\ufffd\\ufffd\\ufffd\"}");
}

static void
test_truncated(void **state)
{
    (void)state;
    char text[4096], out[600];
    size_t o = 0;
    o += (size_t)snprintf(text, sizeof(text), "event=big ");
    for (int f = 0; f < 20; f++) {
        o += (size_t)snprintf(text + o, sizeof(text) - o, "f%d=\"", f);
        for (int i = 0; i < 10; i++)
            o += (size_t)snprintf(text + o, sizeof(text) - o, "\\x01");
        o += (size_t)snprintf(text + o, sizeof(text) - o, "\" ");
    }
    size_t n = pst_log_json(out, sizeof(out), "2026-01-01T00:00:00.000Z",
                            "postern", 7, "info", text);
    assert_true(n < sizeof(out));
    const char *end = ",\"truncated\":\"yes\"}";
    assert_int_equal(strcmp(out + n - strlen(end), end), 0);
    /* whole fields only: the last field before the marker is closed */
    assert_int_equal(out[n - strlen(end) - 1], '"');
    assert_non_null(strstr(out, "\"f0\":\""));
    assert_null(strstr(out, "\"f19\""));
}

/* the second of "YYYY-MM-DDTHH:MM:SS.mmmZ" at p, checked in form */
static time_t
stamp_sec(const char *p)
{
    struct tm tm = {0};
    const char *e = strptime(p, "%Y-%m-%dT%H:%M:%S", &tm);
    assert_non_null(e);
    assert_int_equal(e - p, 19);
    assert_true(e[0] == '.' && e[1] >= '0' && e[1] <= '9' && e[2] >= '0' &&
                e[2] <= '9' && e[3] >= '0' && e[3] <= '9' && e[4] == 'Z');
    return timegm(&tm);
}

static void
test_lines_on_stderr(void **state)
{
    (void)state;
    char path[] = "/tmp/log_test.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    pst_log_open("postern", 0, 0, PST_LOG_INFO);
    time_t t0 = time(NULL);
    pst_log(PST_LOG_INFO, "event=one n=%d", 1);
    pst_log(PST_LOG_DEBUG, "event=hidden");
    pst_log(PST_LOG_WARN, "event=two");
    pst_log_set_format(PST_LOG_JSON);
    pst_log(PST_LOG_ERR, "event=three");
    pst_log_set_format(PST_LOG_TEXT);
    time_t t1 = time(NULL);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char buf[2048];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    assert_true(n > 0);
    buf[n] = '\0';
    char tail[128];
    char *line = buf, *nl;
    /* text: "<stamp> postern[<pid>]: <level> <text>" */
    static const char *const want[] = {"info event=one n=1", "warn event=two"};
    for (int i = 0; i < 2; i++) {
        nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        time_t t = stamp_sec(line);
        assert_true(t >= t0 && t <= t1);
        snprintf(tail, sizeof(tail), " postern[%d]: %s", (int)getpid(),
                 want[i]);
        assert_string_equal(line + 24, tail);
        line = nl + 1;
    }
    nl = strchr(line, '\n');
    assert_non_null(nl);
    *nl = '\0';
    assert_int_equal(strncmp(line, "{\"ts\":\"", 7), 0);
    time_t t = stamp_sec(line + 7);
    assert_true(t >= t0 && t <= t1);
    snprintf(tail, sizeof(tail),
             "Z\",\"prog\":\"postern\",\"pid\":\"%d\",\"level\":\"error\","
             "\"event\":\"three\"}", (int)getpid());
    assert_string_equal(line + 7 + 23, tail);
    assert_string_equal(nl + 1, "");
}

/* stderr to a fresh unlinked file; returns its fd, the old one in *saved */
static int
capture(int *saved)
{
    char path[] = "/tmp/log_test.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    *saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    return fd;
}

static void
release(int fd, int saved)
{
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fd);
}

/* what the file holds: each line's text after the level, joined by '|' */
static void
texts(int fd, char *out, size_t outsz)
{
    static char buf[65536];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    assert_true(n >= 0);
    buf[n] = '\0';
    size_t o = 0;
    out[0] = '\0';
    for (char *line = buf, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = '\0';
        char *t = strstr(line, "]: ");
        assert_non_null(t);
        o += (size_t)snprintf(out + o, outsz - o, "%s%s", o ? "|" : "", t + 3);
        assert_true(o < outsz);
    }
}

static off_t
fsize(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return st.st_size;
}

static void *
other_thread(void *arg)
{
    (void)arg;
    pst_log(PST_LOG_INFO, "event=other");
    return NULL;
}

static void
test_batch(void **state)
{
    (void)state;
    char got[2048];
    int saved, fd = capture(&saved);
    pst_log_open("postern", 0, 0, PST_LOG_INFO);
    pst_log_batch(true);
    pst_log(PST_LOG_INFO, "event=a");
    pst_log(PST_LOG_WARN, "event=b");
    assert_int_equal(fsize(fd), 0);         /* held */
    pst_log_flush();
    texts(fd, got, sizeof(got));
    assert_string_equal(got, "info event=a|warn event=b");
    /* an error-level line takes the batch out with it, in order */
    pst_log(PST_LOG_INFO, "event=c");
    pst_log(PST_LOG_ERR, "event=d");
    texts(fd, got, sizeof(got));
    assert_string_equal(got, "info event=a|warn event=b|info event=c|"
                             "error event=d");
    /* another thread's line goes out behind the batch */
    pst_log(PST_LOG_INFO, "event=e");
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_thread, NULL), 0);
    pthread_join(t, NULL);
    texts(fd, got, sizeof(got));
    assert_string_equal(got, "info event=a|warn event=b|info event=c|"
                             "error event=d|info event=e|info event=other");
    /* JSON lines batch the same way */
    pst_log_set_format(PST_LOG_JSON);
    off_t before = fsize(fd);
    pst_log(PST_LOG_INFO, "event=f");
    assert_int_equal(fsize(fd), before);
    pst_log_batch(false);                   /* flushes */
    assert_true(fsize(fd) > before);
    pst_log_set_format(PST_LOG_TEXT);
    release(fd, saved);
}

/* A full batch is written as whole lines, at most PIPE_BUF octets. */
static void
test_batch_bound(void **state)
{
    (void)state;
    int saved, fd = capture(&saved);
    pst_log_open("postern", 0, 0, PST_LOG_INFO);
    pst_log_batch(true);
    off_t last = 0;
    int writes = 0;
    for (int i = 0; i < 200; i++) {
        pst_log(PST_LOG_INFO, "event=fill n=%03d pad=%0100d", i, 0);
        off_t now = fsize(fd);
        if (now != last) {
            assert_true(now - last <= PIPE_BUF);
            char c;
            assert_int_equal(pread(fd, &c, 1, now - 1), 1);
            assert_int_equal(c, '\n');
            writes++;
            last = now;
        }
    }
    pst_log_batch(false);
    assert_true(writes >= 200 * 150 / PIPE_BUF - 1);
    assert_true(writes < 20);               /* not one per line */
    static char got[65536];
    texts(fd, got, sizeof(got));
    char *p = got;
    for (int i = 0; i < 200; i++) {
        char want[64];
        snprintf(want, sizeof(want), "info event=fill n=%03d ", i);
        assert_int_equal(strncmp(p, want, strlen(want)), 0);
        p = strchr(p, '|');
        if (i < 199)
            assert_non_null(p++);
    }
    release(fd, saved);
}

/* exit(3) writes the batch; a forked child does not repeat its parent's. */
static void
test_batch_exit_fork(void **state)
{
    (void)state;
    char got[1024];
    int saved, fd = capture(&saved);
    pst_log_open("postern", 0, 0, PST_LOG_INFO);
    pst_log_batch(true);
    pst_log(PST_LOG_INFO, "event=parent");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pst_log_batch(true);
        pst_log(PST_LOG_INFO, "event=child");
        exit(0);                            /* atexit: the child's batch */
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    texts(fd, got, sizeof(got));
    assert_string_equal(got, "info event=child");
    pst_log_batch(false);
    texts(fd, got, sizeof(got));
    assert_string_equal(got, "info event=child|info event=parent");
    release(fd, saved);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_lines_on_stderr),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_batch_bound),
        cmocka_unit_test(test_batch_exit_fork),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
