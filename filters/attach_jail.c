/*
 * attach_jail.c - archive inspection in a helper process, postern-archive
 * (att_jail_run, attach.h; its main is filters/attach_helper.c).
 *
 * Why: libarchive trusts the headers it reads with memory, and those
 * headers are written by whoever sends the mail. A 150 KB 7z whose
 * LZMA-encoded header declares a 1 GiB file-name table makes libarchive
 * allocate and fill 1 GiB while it reads the first header (600 KB does
 * 4 GiB), before any member's data, so max_bytes and max_ratio never see
 * it; and a fault in one of its decoders would end the gateway with every
 * session in it. So archives are walked in a helper process, and what a
 * walk decided comes back as one fixed-size record.
 *
 * One helper per filter worker thread, started (fork and execveat of the
 * executable the module opened at configure, as the spf helpers are) when
 * the thread first meets an archive, and kept: starting one costs a few
 * milliseconds, too much to pay per archive. It is a new image: it holds
 * nothing of the gateway's memory (no TLS key, no other message), only
 * what it is sent - the module's settings as libconfig text, from which
 * it configures itself with the module's own code (so its rules are the
 * gateway's), then each archive's decoded content as a memfd (SCM_RIGHTS
 * on a SOCK_SEQPACKET socketpair), mapped read-only. A helper serves the
 * conf it was started for (a reload's new conf gets a new helper, by conf
 * id), at most RECYCLE archives, and is replaced after a walk that ended
 * in archive-error (the memory bound may have been hit: a fresh heap).
 *
 * The helper (att_jail_serve), once configured and libmagic loaded:
 *   - keeps descriptors 0-3 (0 and 1 /dev/null, 3 its socket);
 *   - may use archives.memory octets more than it then has (RLIMIT_DATA:
 *     heap and private writable mappings); past it an allocation fails,
 *     libarchive reports the archive unreadable, and the part takes
 *     on_error ("archive-error");
 *   - dumps no core, is not dumpable, dies with the worker thread that
 *     started it (PR_SET_PDEATHSIG, set before the exec);
 *   - runs under a seccomp filter: receive and send on its socket, memory,
 *     clocks, exit. Opening a file or socket, signalling, tracing, forking
 *     and executing fail with EPERM.
 * The worker waits for the record until the scan's deadline, looking at
 * the chain's cancel flag every 50 ms; then it kills the helper (SIGKILL)
 * and the part takes on_limit ("archive-limit"), as a walk that ran out
 * of time in process would. A helper that ends without a whole record (a
 * signal, the memory bound hit where libarchive cannot return an error)
 * gives on_error ("archive-error"), counted and logged; the next archive
 * gets a new helper.
 *
 * The record is checked, not trusted: an action only ever raises the
 * item's verdict; a rule is an index into the conf, the reason for a
 * setting one of the walk's three; the shown name is cut to its field.
 * The module's counters: the helper's own series change only by its own
 * counts, so it sends their growth per walk.
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
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

#define POLL_MS 50
#define RECYCLE 256                 /* archives one helper walks */
#define SEND_WAIT_S 5               /* to hand a helper its settings or a
                                       request */
#define EXIT_UNCONFINED 2           /* the helper's confinement failed */

/* The walk's reasons for a setting's action (attach_scan.c). */
static const char *const setting_whys[] = {"encrypted", "archive-limit",
                                           "archive-error"};

/* The module's counters a walk adds to, in the record's order. */
#define NCOUNT 6

/* The first message a helper reads; the settings' text follows in
 * messages of at most TEXT_PIECE octets. */
struct init {
    uint32_t magic;                 /* INIT_MAGIC */
    uint32_t text_len;
};
#define INIT_MAGIC 0x7a6a6931u
#define TEXT_PIECE 32768

struct request {
    uint32_t magic;                 /* REQUEST_MAGIC */
    uint32_t op;                    /* enum att_jail_op */
    uint32_t arg;
    uint64_t size;                  /* octets of the memfd sent with it */
    uint64_t deadline;              /* CLOCK_MONOTONIC ns */
    uint64_t bytes;
    uint32_t members;
    char outer[ATT_NAME_MAX + 1];
};
#define REQUEST_MAGIC 0x7a6a7131u

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

/* This worker thread's helper. */
struct helper {
    pid_t pid;                      /* 0: none */
    int fd;
    uint64_t conf_id;
    unsigned uses;
};
static _Thread_local struct helper helper;

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

/* ---- the helper's side (postern-archive, after its exec) ---- */

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
allow_on(scmp_filter_ctx ctx, int call, int fd)
{
    struct scmp_arg_cmp on = {0, SCMP_CMP_EQ, (scmp_datum_t)fd, 0};
    return seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, call, 1, &on);
}

static int
sandbox(int sock)
{
    static const int allow[] = {
        SCMP_SYS(exit), SCMP_SYS(exit_group), SCMP_SYS(brk),
        SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap),
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
    if (rc == 0)
        rc = allow_on(ctx, SCMP_SYS(recvmsg), sock);
    if (rc == 0)
        rc = allow_on(ctx, SCMP_SYS(sendto), sock);
#ifdef PST_UNDER_ASAN
    if (rc == 0)                    /* a sanitizer's report */
        rc = allow_on(ctx, SCMP_SYS(write), 2);
#endif
    if (rc == 0)
        rc = seccomp_load(ctx);     /* sets no_new_privs too */
    if (ctx)
        seccomp_release(ctx);
    return rc;
}

static int
confine(const struct att_conf *c, int sock)
{
    struct rlimit no_core = {0, 0};
    uint64_t cap = data_now() + c->ar.memory;
    struct rlimit data = {cap, cap};
    if (setrlimit(RLIMIT_CORE, &no_core) < 0 ||
        prctl(PR_SET_DUMPABLE, 0) < 0 || setrlimit(RLIMIT_DATA, &data) < 0)
        return -1;
    return sandbox(sock);
}

/* One message into buf (at most n octets), with the descriptor it
 * carries (-1: none); its length, 0 at end of input, -1 on error. */
static ssize_t
receive(int sock, void *buf, size_t n, int *fd)
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = {buf, n};
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.b;
    mh.msg_controllen = sizeof(ctl.b);
    *fd = -1;
    ssize_t got;
    while ((got = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    struct cmsghdr *h = got > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
    if (h && h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS &&
        h->cmsg_len == CMSG_LEN(sizeof(int)))
        memcpy(fd, CMSG_DATA(h), sizeof(int));
    if (got > 0 && (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
        return -1;
    return got;
}

/* att_jail_settings - see attach.h. */
char *
att_jail_settings(int sock)
{
    struct init in;
    int fd;
    if (receive(sock, &in, sizeof(in), &fd) != (ssize_t)sizeof(in) ||
        fd >= 0 || in.magic != INIT_MAGIC || in.text_len > ATT_SETTINGS_MAX)
        return NULL;
    char *text = pst_xmalloc((size_t)in.text_len + 1);
    size_t got = 0;
    while (got < in.text_len) {
        ssize_t n = receive(sock, text + got,
                            PST_MIN((size_t)TEXT_PIECE, in.text_len - got),
                            &fd);
        if (n <= 0 || fd >= 0) {
            free(text);
            return NULL;
        }
        got += (size_t)n;
    }
    text[got] = '\0';
    return text;
}

/* What the confinement leaves a walk (ATT_JAIL_PROBE): errno of an open,
 * of a mapping past the memory bound, whether one within it works, and
 * whether descriptor `fd` is there. */
static void
probe(const struct att_conf *c, unsigned fd, char *out, size_t n)
{
    int f = open("/etc/hostname", O_RDONLY);
    int open_errno = f < 0 ? errno : 0;
    void *big = mmap(NULL, (size_t)c->ar.memory + (8u << 20),
                     PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    int big_errno = big == MAP_FAILED ? errno : 0;
    void *small = mmap(NULL, 4u << 20, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct stat st;
    snprintf(out, n, "pid=%d open=%d big=%d small=%s fd%u=%s", (int)getpid(),
             open_errno, big_errno, small == MAP_FAILED ? "failed" : "ok",
             fd, fstat((int)fd, &st) == 0 ? "open" : "closed");
    if (f >= 0)
        close(f);
    if (big != MAP_FAILED)
        munmap(big, (size_t)c->ar.memory + (8u << 20));
    if (small != MAP_FAILED)
        munmap(small, 4u << 20);
}

/* att_jail_serve - see attach.h. */
void
att_jail_serve(const struct att_conf *c, int sock)
{
    struct pst_metric *m[NCOUNT];
    counters(c, m);
    /* what configuring opened (the module's own executable, O_PATH) */
    if (syscall(SYS_close_range, (unsigned)sock + 1, ~0U, 0) < 0 ||
        confine(c, sock) < 0)
        _exit(EXIT_UNCONFINED);
    for (;;) {
        struct request q;
        int fd;
        ssize_t n = receive(sock, &q, sizeof(q), &fd);
        if (n == 0)
            _exit(0);
        if (n != (ssize_t)sizeof(q) || q.magic != REQUEST_MAGIC ||
            (q.size > 0 && fd < 0))
            _exit(4);
        q.outer[sizeof(q.outer) - 1] = '\0';
        const void *p = NULL;
        if (q.size > 0) {
            p = mmap(NULL, q.size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED)
                _exit(5);
        }
        if (fd >= 0)
            close(fd);

        struct att_scan s = {0};
        struct att_item it = {0};
        s.c = c;
        s.deadline = q.deadline;
        s.members = q.members;
        s.bytes = q.bytes;
        it.v.rule = -1;
        it.size = q.size;
        uint64_t before[NCOUNT];
        for (int i = 0; i < NCOUNT; i++)
            before[i] = (uint64_t)pst_metric_value(m[i]);
        if (q.op == ATT_JAIL_WALK)
            att_walk_mem(&s, &it, q.arg, p, (size_t)q.size, q.outer);
        else if (q.op == ATT_JAIL_PROBE)
            probe(c, q.arg, s.err, sizeof(s.err));
        else
            _exit(4);
        if (p)
            munmap((void *)p, q.size);

        struct record r;
        memset(&r, 0, sizeof(r));
        r.magic = RECORD_MAGIC;
        r.action = (int32_t)it.v.action;
        r.rule = it.v.rule;
        r.size = it.v.size;
        if (it.v.rule < 0 && it.v.why)
            snprintf(r.why, sizeof(r.why), "%s", it.v.why);
        memcpy(r.file, it.v.file, sizeof(r.file));
        r.members = s.members;
        r.bytes = s.bytes;
        for (int i = 0; i < NCOUNT; i++)
            r.counts[i] = (uint64_t)pst_metric_value(m[i]) - before[i];
        memcpy(r.err, s.err, sizeof(r.err));
        if (send(sock, &r, sizeof(r), MSG_NOSIGNAL) != (ssize_t)sizeof(r))
            _exit(3);
    }
}

/* ---- the worker's side ---- */

static void
stop(struct helper *h)
{
    if (h->pid <= 0)
        return;
    kill(h->pid, SIGKILL);
    close(h->fd);
    while (waitpid(h->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    h->pid = 0;
}

/* Reap a helper that ended (or was just killed); its wait status. */
static int
reap(struct helper *h)
{
    int st = 0;
    close(h->fd);
    while (waitpid(h->pid, &st, 0) < 0 && errno == EINTR)
        ;
    h->pid = 0;
    return st;
}

static int
send_msg(int sock, const void *p, size_t n, int fd)
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = {(void *)p, n};
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (fd >= 0) {
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.b;
        mh.msg_controllen = sizeof(ctl.b);
        struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
        h->cmsg_level = SOL_SOCKET;
        h->cmsg_type = SCM_RIGHTS;
        h->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(h), &fd, sizeof(int));
    }
    ssize_t sent;
    while ((sent = sendmsg(sock, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    return sent == (ssize_t)n ? 0 : -1;
}

/* Start a helper for conf c and send it the settings. */
static int
spawn(struct helper *h, const struct att_conf *c)
{
    int sv[2];
    if (c->exe_fd < 0) {
        errno = ENOENT;
        return -1;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    if (sv[1] == 3) {               /* dup2(3, 3) would keep CLOEXEC */
        int t = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
        close(sv[1]);
        sv[1] = t;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        pst_fhelper_exec(sv[1], c->exe_fd, "postern-archive", parent);
    int e = errno;
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        errno = e;
        return -1;
    }
    h->pid = pid;
    h->fd = sv[0];
    h->conf_id = c->id;
    h->uses = 0;
    /* a helper that never reads does not hold the worker */
    struct timeval tv = {SEND_WAIT_S, 0};
    setsockopt(h->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    size_t len = strlen(c->text);
    struct init in = {INIT_MAGIC, (uint32_t)len};
    int rc = send_msg(h->fd, &in, sizeof(in), -1);  /* len: configure
                                                       checked it */
    for (size_t off = 0; rc == 0 && off < len; off += TEXT_PIECE)
        rc = send_msg(h->fd, c->text + off, PST_MIN(len - off,
                                                    (size_t)TEXT_PIECE), -1);
    return rc;                      /* on failure h->pid is kept: the
                                       caller reaps it and says why */
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

/* Read the record, up to the deadline; 1 read, 0 none (the helper
 * ended first, or said something else), -1 out of time or cancelled. */
static int
await(struct att_scan *s, int fd, struct record *r)
{
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
        ssize_t n = recv(fd, r, sizeof(*r), 0);
        if (n < 0 && errno == EINTR)
            continue;
        return n == (ssize_t)sizeof(*r) && r->magic == RECORD_MAGIC;
    }
}

static void
failed(struct att_scan *s, struct att_item *it, const char *shown,
       const char *what)
{
    pst_log(PST_LOG_WARN, "attachments: the inspection of archive %s %s",
            shown, what);
    pst_metric_add(s->c->n.errors, 1);
    att_special(it, s->c->ar.on_error, "archive-error", shown);
}

/* A helper that ended, or said something other than a record: kill
 * (if it lives), reap, and say why in why. */
static void
ended(struct helper *h, const struct att_conf *c, char *why, size_t n)
{
    kill(h->pid, SIGKILL);
    int st = reap(h);
    const char *exe = c->helper_path ? c->helper_path : "postern-archive";
    if (WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL)
        snprintf(why, n, "ended by signal %d (archives.memory is %" PRIu64
                 " octets)", WTERMSIG(st), c->ar.memory);
    else if (WIFEXITED(st) && WEXITSTATUS(st) == EXIT_UNCONFINED)
        snprintf(why, n, "could not confine itself (setrlimit or seccomp "
                 "refused)");
    else if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        snprintf(why, n, "could not start %s", exe);
    else if (WIFEXITED(st) && WEXITSTATUS(st) == ATT_HELPER_NO_SETTINGS)
        snprintf(why, n, "%s did not take the module's settings", exe);
    else
        snprintf(why, n, "ended without a result (status %d)",
                 WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

/* att_jail_run - see attach.h. */
void
att_jail_run(struct att_scan *s, struct att_item *it, const char *shown,
             enum att_jail_op op, unsigned arg, int fd, uint64_t size,
             const char *outer)
{
    const struct att_conf *c = s->c;
    struct helper *h = &helper;
    struct request q;
    memset(&q, 0, sizeof(q));
    q.magic = REQUEST_MAGIC;
    q.op = op;
    q.arg = arg;
    q.size = size;
    q.deadline = s->deadline;
    q.bytes = s->bytes;
    q.members = s->members;
    snprintf(q.outer, sizeof(q.outer), "%s", outer ? outer : "");

    if (h->pid > 0 && h->conf_id != c->id)
        stop(h);                    /* a reload's conf: a new helper */
    for (int tries = 0;; tries++) {
        if (h->pid <= 0 && spawn(h, c) < 0) {
            char why[200];
            if (h->pid > 0)         /* started, but did not take them */
                ended(h, c, why, sizeof(why));
            else
                snprintf(why, sizeof(why), "cannot start: %s",
                         strerror(errno));
            failed(s, it, shown, why);
            return;
        }
        if (send_msg(h->fd, &q, sizeof(q), fd) == 0)
            break;
        stop(h);                    /* gone while idle: once more */
        if (tries > 0) {
            failed(s, it, shown, "cannot reach its helper");
            return;
        }
    }
    struct record r;
    int got = await(s, h->fd, &r);
    if (got > 0) {
        apply(s, it, &r);
        r.why[sizeof(r.why) - 1] = '\0';
        if (++h->uses >= RECYCLE || strcmp(r.why, "archive-error") == 0)
            stop(h);                /* a fresh heap for the next */
    } else if (got < 0) {
        stop(h);
        pst_metric_add(c->n.limits, 1);
        att_special(it, c->ar.on_limit, "archive-limit", shown);
    } else {
        char why[200];
        ended(h, c, why, sizeof(why));
        failed(s, it, shown, why);
    }
}

/* att_jail_stop - see attach.h. */
void
att_jail_stop(void)
{
    stop(&helper);
}

/* att_jail_helper_pid - see attach.h. */
pid_t
att_jail_helper_pid(void)
{
    return helper.pid;
}
