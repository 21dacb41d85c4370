/*
 * attach_jail.c - archive inspection in a child process of its own
 * (att_jail_run, attach.h).
 *
 * Why: libarchive trusts the headers it reads with memory, and those
 * headers are written by whoever sends the mail. A 150 KB 7z whose
 * LZMA-encoded header declares a 1 GiB file-name table makes libarchive
 * allocate and fill 1 GiB while it reads the first header (600 KB does
 * 4 GiB), before any member's data, so max_bytes and max_ratio never see
 * it; and a fault in one of its decoders would end the gateway with every
 * session in it. So each archive a part holds is walked in a child forked
 * from the worker thread, and what the walk decided comes back as one
 * fixed-size record on a pipe.
 *
 * The child:
 *   - may use archives.memory octets more than the gateway had at the
 *     fork (RLIMIT_DATA: heap and private writable mappings); past it an
 *     allocation fails, libarchive reports the archive unreadable, and
 *     the part takes on_error ("archive-error");
 *   - dumps no core, is not dumpable, dies with the worker thread that
 *     forked it (PR_SET_PDEATHSIG);
 *   - runs under a seccomp filter: pread (the spool's shared fds, which
 *     the walk reads through), write on the result pipe alone, memory,
 *     clocks, exit. Opening a file or socket, signalling, tracing, forking
 *     and executing fail with EPERM: a decoder exploited in there holds
 *     no more than the message it was given.
 * The parent (the worker) waits for the record until the scan's deadline,
 * looking at the chain's cancel flag every 50 ms; then it kills the child
 * (SIGKILL) and the part takes on_limit ("archive-limit"), as a walk that
 * ran out of time in process would. A child that ends without a whole
 * record (a signal, the memory bound hit where libarchive cannot return
 * an error) gives on_error ("archive-error"), counted and logged.
 *
 * The record is checked, not trusted: an action only ever raises the
 * item's verdict; a rule is an index into the conf, the reason for a
 * setting one of the walk's three; the shown name is cut to its field.
 * The module's counters: the child's copies of the metrics are the
 * parent's at the fork plus its own counts, so it sends their growth.
 *
 * Forking a threaded process: the child only walks - malloc (glibc
 * resets its locks in a forked child), libarchive, libmagic (this
 * thread's handle, copied with the thread), PCRE2 (att_judge) and pread.
 * It logs nothing and takes no lock of the gateway's. A libc lock another
 * thread held at the fork (iconv's, which libarchive's name conversion
 * may take) could block it: the deadline ends that like any slow archive.
 * A fork costs some 0.1-0.3 ms with the gateway's pages shared
 * copy-on-write; only parts detected as archives pay it.
 */
#include "filters/attach.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

#define POLL_MS 50
#define EXIT_UNCONFINED 2           /* the child's confinement failed */

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#endif

/* The walk's reasons for a setting's action (attach_scan.c). */
static const char *const setting_whys[] = {"encrypted", "archive-limit",
                                           "archive-error"};

/* The module's counters a walk adds to, in the record's order. */
#define NCOUNT 6

struct record {
    uint32_t magic;                 /* RECORD_MAGIC: a whole record */
    int32_t action, rule;
    uint8_t size;
    char why[16];                   /* a setting's reason, rule < 0 */
    char file[sizeof(((struct att_verdict *)0)->file)];
    uint32_t members;
    uint64_t bytes;
    uint64_t counts[NCOUNT];
    char err[sizeof(((struct att_scan *)0)->err)];
};
#define RECORD_MAGIC 0x7a6a6131u
_Static_assert(sizeof(struct record) <= PIPE_BUF, "one atomic write");

static void
counters(const struct att_conf *c, struct pst_metric *out[NCOUNT])
{
    out[0] = c->n.files;
    out[1] = c->n.magic;
    out[2] = c->n.archives;
    out[3] = c->n.limits;
    out[4] = c->n.encrypted;
    out[5] = c->n.errors;
}

/* VmData of this process, octets (0 if unknown). */
static uint64_t
data_now(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[128];
    uint64_t kb = 0;
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmData: %" SCNu64, &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

static int
sandbox(int out)
{
    static const int allow[] = {
        SCMP_SYS(pread64), SCMP_SYS(exit), SCMP_SYS(exit_group),
        SCMP_SYS(brk), SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap),
        SCMP_SYS(madvise), SCMP_SYS(mprotect), SCMP_SYS(clock_gettime),
        SCMP_SYS(gettimeofday), SCMP_SYS(time), SCMP_SYS(getpid),
        SCMP_SYS(gettid), SCMP_SYS(rt_sigreturn), SCMP_SYS(rt_sigprocmask),
        SCMP_SYS(futex), SCMP_SYS(sched_yield), SCMP_SYS(getrandom),
        SCMP_SYS(fstat), SCMP_SYS(newfstatat), SCMP_SYS(lseek),
        SCMP_SYS(close),
    };
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    int rc = ctx ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < PST_ARRAY_LEN(allow); i++)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, allow[i], 0);
    struct scmp_arg_cmp on_out = {0, SCMP_CMP_EQ, (scmp_datum_t)out, 0};
    if (rc == 0)
        rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, SCMP_SYS(write), 1,
                                    &on_out);
#ifdef UNDER_ASAN
    /* a sanitizer's report goes to stderr */
    struct scmp_arg_cmp on_err = {0, SCMP_CMP_EQ, 2, 0};
    if (rc == 0)
        rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, SCMP_SYS(write), 1,
                                    &on_err);
#endif
    if (rc == 0)
        rc = seccomp_load(ctx);     /* sets no_new_privs too */
    if (ctx)
        seccomp_release(ctx);
    return rc;
}

/* In the child: confine, walk, report, exit. Never returns. */
static void
child(struct att_scan *s, struct att_item *it, att_jail_fn *fn, void *arg,
      int out, pid_t parent)
{
    struct pst_metric *m[NCOUNT];
    uint64_t before[NCOUNT];
    counters(s->c, m);
    for (int i = 0; i < NCOUNT; i++)
        before[i] = (uint64_t)pst_metric_value(m[i]);

    struct rlimit no_core = {0, 0};
    uint64_t cap = data_now() + s->c->ar.memory;
    struct rlimit data = {cap, cap};
#ifndef UNDER_ASAN
    /* a fault ends the child, whatever handler the gateway has */
    static const int faults[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    for (size_t i = 0; i < PST_ARRAY_LEN(faults); i++)
        signal(faults[i], SIG_DFL);
#endif
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent ||
        setrlimit(RLIMIT_CORE, &no_core) < 0 ||
        prctl(PR_SET_DUMPABLE, 0) < 0 ||
        setrlimit(RLIMIT_DATA, &data) < 0 || sandbox(out) < 0)
        _exit(EXIT_UNCONFINED);

    fn(s, it, arg);

    struct record r;
    memset(&r, 0, sizeof(r));
    r.magic = RECORD_MAGIC;
    r.action = (int32_t)it->v.action;
    r.rule = it->v.rule;
    r.size = it->v.size;
    if (it->v.rule < 0 && it->v.why)
        snprintf(r.why, sizeof(r.why), "%s", it->v.why);
    memcpy(r.file, it->v.file, sizeof(r.file));
    r.members = s->members;
    r.bytes = s->bytes;
    for (int i = 0; i < NCOUNT; i++)
        r.counts[i] = (uint64_t)pst_metric_value(m[i]) - before[i];
    memcpy(r.err, s->err, sizeof(r.err));
    ssize_t n = write(out, &r, sizeof(r));
    _exit(n == (ssize_t)sizeof(r) ? 0 : 3);
}

/* Take a checked record into the scan and the item. */
static void
apply(struct att_scan *s, struct att_item *it, struct record *r)
{
    const struct att_conf *c = s->c;
    struct pst_metric *m[NCOUNT];
    counters(c, m);
    for (int i = 0; i < NCOUNT; i++)
        pst_metric_add(m[i], r->counts[i]);
    s->members = r->members;
    s->bytes = r->bytes;
    r->err[sizeof(r->err) - 1] = '\0';
    if (r->err[0])
        snprintf(s->err, sizeof(s->err), "%s", r->err);
    if (r->action <= (int32_t)it->v.action || r->action > ATT_REJECT)
        return;
    r->file[sizeof(r->file) - 1] = '\0';
    r->why[sizeof(r->why) - 1] = '\0';
    const char *why = "archive-error";
    int rule = -1;
    if (r->rule >= 0 && (size_t)r->rule < c->nrules) {
        rule = r->rule;
        why = c->rules[rule].label;
    } else {
        for (size_t i = 0; i < PST_ARRAY_LEN(setting_whys); i++)
            if (strcmp(r->why, setting_whys[i]) == 0)
                why = setting_whys[i];
    }
    it->v.action = (enum att_action)r->action;
    it->v.rule = rule;
    it->v.why = why;
    it->v.size = rule >= 0 && c->rules[rule].has_size && r->size;
    memcpy(it->v.file, r->file, sizeof(it->v.file));
}

/* Read the record, up to the deadline; 1 read, 0 none (the child
 * ended first), -1 out of time or cancelled. */
static int
await(struct att_scan *s, int fd, struct record *r)
{
    size_t got = 0;
    for (;;) {
        if ((s->cancel && atomic_load(s->cancel)) || att_now() > s->deadline)
            return -1;
        uint64_t left_ms = (s->deadline - att_now()) / 1000000u + 1;
        struct pollfd pf = {fd, POLLIN, 0};
        int rc = poll(&pf, 1, (int)PST_MIN(left_ms, (uint64_t)POLL_MS));
        if (rc < 0 && errno != EINTR)
            return 0;
        if (rc <= 0)
            continue;
        ssize_t n = read(fd, (char *)r + got, sizeof(*r) - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        got += (size_t)n;
        if (got == sizeof(*r))
            return r->magic == RECORD_MAGIC;
    }
}

/* att_jail_run - see attach.h. */
void
att_jail_run(struct att_scan *s, struct att_item *it, const char *shown,
             att_jail_fn *fn, void *arg)
{
    const struct att_conf *c = s->c;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        snprintf(s->err, sizeof(s->err), "pipe: %s", strerror(errno));
        att_special(it, c->ar.on_error, "archive-error", shown);
        return;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        child(s, it, fn, arg, p[1], parent);
    }
    close(p[1]);
    if (pid < 0) {
        pst_log(PST_LOG_WARN, "attachments: cannot start the archive "
                "inspection of %s: %s", shown, strerror(errno));
        close(p[0]);
        pst_metric_add(c->n.errors, 1);
        att_special(it, c->ar.on_error, "archive-error", shown);
        return;
    }
    struct record r;
    int got = await(s, p[0], &r);
    close(p[0]);
    if (got < 0)
        kill(pid, SIGKILL);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (got > 0) {
        apply(s, it, &r);
    } else if (got < 0) {
        pst_metric_add(c->n.limits, 1);
        att_special(it, c->ar.on_limit, "archive-limit", shown);
    } else {
        if (WIFSIGNALED(st))
            pst_log(PST_LOG_WARN, "attachments: the inspection of "
                    "archive %s ended by signal %d (archives.memory is "
                    "%" PRIu64 " octets)", shown, WTERMSIG(st),
                    c->ar.memory);
        else if (WIFEXITED(st) && WEXITSTATUS(st) == EXIT_UNCONFINED)
            pst_log(PST_LOG_WARN, "attachments: the inspection of "
                    "archive %s could not confine itself (prctl, setrlimit "
                    "or seccomp refused); archives are judged by on_error",
                    shown);
        else
            pst_log(PST_LOG_WARN, "attachments: the inspection of "
                    "archive %s ended with status %d", shown,
                    WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        pst_metric_add(c->n.errors, 1);
        att_special(it, c->ar.on_error, "archive-error", shown);
    }
}
