/*
 * helper.c - postern-spf, the process that runs libspf2 for the spf
 * module (filters/spf/spf.c). The gateway starts a small pool of them and
 * talks to each over one socketpair, fd 3 (filters/spf/proto.h).
 *
 * Why a process: Debian 12's libspf2 1.2.10 calls abort() from SPF_error
 * on conditions a DNS layer can provoke, and lacks the fix for
 * CVE-2023-42118 (a stack buffer overflow while compiling a hostile
 * record's macros). An SPF record is written by whoever owns the sender's
 * domain. Whatever happens in here costs one check, never the gateway.
 *
 * Confinement, in order, before any input is read:
 *   - never root (it exits); no core dumps (RLIMIT_CORE 0, not dumpable);
 *     every fd but 0-3 closed; stdin and stdout are /dev/null;
 *   - libspf2 is set up (it reads the host name once);
 *   - a seccomp filter allows only what a check needs: read and write on
 *     the fds it has, memory, time, exit. No open, socket, exec, kill or
 *     ptrace: the helper has no network of its own and cannot touch a file
 *     or another process; a denied call fails with EPERM.
 *
 * DNS: libspf2's lookups go through the DNS layer below (an
 * SPF_dns_server_t), which asks the gateway (QUERY) and turns its checked
 * ANSWER into an SPF_dns_rr_t. It never returns NULL: libspf2 aborts on a
 * NULL. Type SPF (99) is answered "no data" here without asking: RFC 7208
 * 3.1 ends its use. An explanation (exp=) is never looked up: get_exp
 * returns the fixed default, so no attacker text reaches libspf2's macro
 * compiler through it (libspf2 compiles an exp text in a 515-byte stack
 * buffer).
 *
 * Records reach libspf2 only after the gateway has checked them
 * (filters/spf/record.c): that check is the defence against
 * CVE-2023-42118.
 *
 * libspf2's loopback shortcut (127.0.0.0/8 and ::1 always "pass") is not
 * used: the check is RFC 7208's check_host() for every address.
 */
#include <errno.h>
#include <fcntl.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <netinet/in.h>
#include <arpa/nameser.h>
#include <netdb.h>
#define HAVE_NS_TYPE 1
#include <spf2/spf.h>
#include <spf2/spf_dns.h>

#include "core/util.h"
#include "filters/spf/proto.h"

#define FD 3
#define DEFAULT_EXP "see the receiving server's log"

#ifdef PST_UNDER_ASAN
/* LeakSanitizer's exit-time scan needs ptrace, which the sandbox denies */
int __lsan_is_turned_off(void);
int
__lsan_is_turned_off(void)
{
    return 1;
}
#endif

static SPF_server_t *server;
static uint8_t inbuf[SPF_FRAME_MAX];

static void __attribute__((noreturn))
die(int code)
{
    _exit(code);
}

/* libspf2's error handler must not return; it would abort(). */
static void __attribute__((noreturn))
on_spf_error(const char *file, int line, const char *msg)
{
    (void)file;
    (void)line;
    (void)msg;
    die(70);
}

static void
on_spf_note(const char *file, int line, const char *msg)
{
    (void)file;
    (void)line;
    (void)msg;
}

static int
read_all(void *p, size_t n)
{
    uint8_t *b = p;
    while (n > 0) {
        ssize_t r = read(FD, b, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

/* The next frame; exits on end of input or a malformed header. */
static uint8_t
read_frame(size_t *len)
{
    uint8_t h[SPF_FRAME_HDR], type;
    if (read_all(h, sizeof(h)) < 0)
        die(0);                     /* the gateway closed: done */
    if (spf_hdr_parse(h, &type, len) < 0 || read_all(inbuf, *len) < 0)
        die(65);
    return type;
}

static void
send_frame(const struct spf_frame *f)
{
    if (spf_write_all(FD, f->b, f->n) < 0)
        die(0);
}

/* ---- the DNS layer ---- */

static SPF_dns_rr_t *
rr_empty(SPF_dns_server_t *d, const char *domain, ns_type t, int herrno)
{
    SPF_dns_rr_t *rr = SPF_dns_rr_new_init(d, domain, t, 0, herrno);
    if (rr == NULL)
        die(71);                    /* out of memory: never return NULL */
    return rr;
}

static SPF_dns_rr_t *
ask(SPF_dns_server_t *d, const char *domain, ns_type t)
{
    static struct spf_frame f;
    static struct spf_answer a;
    struct spf_query q;
    size_t len;

    if (t == ns_t_spf)
        return rr_empty(d, domain, t, NO_DATA);
    if (t != ns_t_a && t != ns_t_aaaa && t != ns_t_mx && t != ns_t_txt &&
        t != ns_t_ptr)
        return rr_empty(d, domain, t, NO_RECOVERY);
    if (domain == NULL || strlen(domain) > SPF_NAME_MAX || domain[0] == '\0')
        return rr_empty(d, domain, t, HOST_NOT_FOUND);
    q.type = (uint16_t)t;
    memcpy(q.name, domain, strlen(domain) + 1);
    if (spf_enc_query(&f, &q) < 0)
        return rr_empty(d, domain, t, HOST_NOT_FOUND);
    send_frame(&f);
    if (read_frame(&len) != SPF_F_ANSWER ||
        spf_dec_answer(inbuf, len, &a) < 0 || (a.n > 0 && a.type != t))
        die(65);
    switch (a.status) {
    case SPF_D_OK:
        break;
    case SPF_D_NXDOMAIN:
        return rr_empty(d, domain, t, HOST_NOT_FOUND);
    case SPF_D_NODATA:
        return rr_empty(d, domain, t, NO_DATA);
    case SPF_D_TEMPFAIL:
        return rr_empty(d, domain, t, TRY_AGAIN);
    default:                        /* STOP: the gateway decides */
        return rr_empty(d, domain, t, NO_RECOVERY);
    }
    if (a.n == 0)
        return rr_empty(d, domain, t, NO_DATA);
    SPF_dns_rr_t *rr = rr_empty(d, domain, t, NETDB_SUCCESS);
    rr->ttl = a.ttl;
    for (unsigned i = 0; i < a.n; i++) {
        size_t need = t == ns_t_a      ? sizeof(struct in_addr)
                      : t == ns_t_aaaa ? sizeof(struct in6_addr)
                      : t == ns_t_txt  ? strlen(a.u.txt[i]) + 1
                                       : strlen(a.u.name[i]) + 1;
        if (SPF_dns_rr_buf_realloc(rr, (int)i, need) != SPF_E_SUCCESS) {
            SPF_dns_rr_free(rr);
            return rr_empty(d, domain, t, TRY_AGAIN);
        }
        switch (t) {
        case ns_t_a:
            memcpy(&rr->rr[i]->a, a.u.addr[i], 4);
            break;
        case ns_t_aaaa:
            memcpy(&rr->rr[i]->aaaa, a.u.addr[i], 16);
            break;
        case ns_t_txt:
            memcpy(rr->rr[i]->txt, a.u.txt[i], need);
            break;
        default:
            memcpy(rr->rr[i]->ptr, a.u.name[i], need);
            break;
        }
        rr->num_rr = (int)i + 1;
    }
    return rr;
}

static SPF_dns_rr_t *
layer_lookup(SPF_dns_server_t *d, const char *domain, ns_type t, int cache)
{
    (void)cache;
    return ask(d, domain, t);
}

/* never look an explanation up: the default, as libspf2 would build it */
static SPF_errcode_t
layer_get_exp(SPF_server_t *s, const char *domain, char **bufp,
              size_t *buflenp)
{
    (void)s;
    (void)domain;
    size_t need = sizeof(DEFAULT_EXP);
    if (*bufp == NULL || *buflenp < need) {
        char *p = realloc(*bufp, need);
        if (p == NULL)
            return SPF_E_NO_MEMORY;
        *bufp = p;
        *buflenp = need;
    }
    memcpy(*bufp, DEFAULT_EXP, need);
    return SPF_E_SUCCESS;
}

static SPF_dns_server_t layer = {
    .destroy = NULL,                /* static: libspf2 must not free it */
    .lookup = layer_lookup,
    .get_spf = NULL,
    .get_exp = layer_get_exp,
    .add_cache = NULL,
    .layer_below = NULL,
    .name = "postern",
    .debug = 0,
    .hook = NULL,
};

/* ---- one check ---- */

static enum spf_result
map_result(SPF_result_t r)
{
    switch (r) {
    case SPF_RESULT_NEUTRAL:
        return SPF_R_NEUTRAL;
    case SPF_RESULT_PASS:
        return SPF_R_PASS;
    case SPF_RESULT_FAIL:
        return SPF_R_FAIL;
    case SPF_RESULT_SOFTFAIL:
        return SPF_R_SOFTFAIL;
    case SPF_RESULT_NONE:
        return SPF_R_NONE;
    case SPF_RESULT_PERMERROR:
        return SPF_R_PERMERROR;
    default:
        return SPF_R_TEMPERROR;
    }
}

/*
 * check_host() for the MAIL FROM identity (postmaster@helo when the
 * sender is empty): SPF_request_query_mailfrom without its loopback
 * shortcut.
 */
static struct spf_resmsg
run_check(const struct spf_check *c)
{
    struct spf_resmsg m = {SPF_R_TEMPERROR, 0};
    SPF_request_t *rq = SPF_request_new(server);
    SPF_response_t *rp;
    SPF_record_t *rec = NULL;
    SPF_errcode_t err;

    if (rq == NULL)
        return m;
    if (c->family == AF_INET6) {
        struct in6_addr a6;
        memcpy(&a6, c->addr, 16);
        SPF_request_set_ipv6(rq, a6);
    } else {
        struct in_addr a4;
        memcpy(&a4, c->addr, 4);
        SPF_request_set_ipv4(rq, a4);
    }
    if (SPF_server_set_rec_dom(server, c->receiver) != SPF_E_SUCCESS ||
        (c->helo[0] && SPF_request_set_helo_dom(rq, c->helo) != 0) ||
        SPF_request_set_env_from(rq, c->sender) != 0 ||
        rq->env_from_dp == NULL) {
        SPF_request_free(rq);
        m.result = SPF_R_NONE;
        return m;
    }
    rp = SPF_response_new(rq);
    if (rp == NULL) {
        SPF_request_free(rq);
        return m;
    }
    rq->cur_dom = rq->env_from_dp;
    err = SPF_server_get_record(server, rq, rp, &rec);
    if (err != SPF_E_SUCCESS) {
        if (rec)
            SPF_record_free(rec);
        SPF_i_done(rp, rp->result, rp->reason, rp->err);
    } else {
        rp->spf_record_exp = rec;
        err = SPF_record_interpret(rec, rq, rp, 0);
        SPF_record_free(rec);
    }
    m.result = (uint8_t)map_result(SPF_response_result(rp));
    m.err = (uint16_t)SPF_response_errcode(rp);
    SPF_response_free(rp);
    SPF_request_free(rq);
    return m;
}

/* ---- confinement ---- */

static int
sandbox(void)
{
    static const int allow[] = {
        SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(sendto),
        SCMP_SYS(recvfrom), SCMP_SYS(exit), SCMP_SYS(exit_group),
        SCMP_SYS(brk), SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap),
        SCMP_SYS(madvise), SCMP_SYS(mprotect), SCMP_SYS(clock_gettime),
        SCMP_SYS(gettimeofday), SCMP_SYS(time), SCMP_SYS(getpid),
        SCMP_SYS(gettid), SCMP_SYS(rt_sigreturn), SCMP_SYS(rt_sigprocmask),
        SCMP_SYS(fstat), SCMP_SYS(newfstatat), SCMP_SYS(getrandom),
        SCMP_SYS(futex), SCMP_SYS(sigaltstack), SCMP_SYS(rt_sigaction),
    };
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    int rc = ctx ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < sizeof(allow) / sizeof(allow[0]); i++)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, allow[i], 0);
    if (rc == 0)
        rc = seccomp_load(ctx);     /* sets no_new_privs too */
    if (ctx)
        seccomp_release(ctx);
    return rc;
}

static void
confine_fds(void)
{
    struct stat st;
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fstat(FD, &st) < 0 || !S_ISSOCK(st.st_mode))
        die(64);
    if (nul >= 0) {
        dup2(nul, 0);
        dup2(nul, 1);
        if (nul > FD)
            close(nul);
    }
#ifdef SYS_close_range
    if (syscall(SYS_close_range, FD + 1, ~0U, 0) == 0)
        return;
#endif
    for (int fd = FD + 1; fd < 1024; fd++)
        close(fd);
}

int
main(int argc, char **argv)
{
    struct rlimit nocore = {0, 0};
    struct spf_frame f;
    SPF_response_t *rp = NULL;

    (void)argc;
    (void)argv;
    if (getuid() == 0 || geteuid() == 0) {
        fprintf(stderr, "postern-spf: refusing to run as root\n");
        return 64;
    }
    setrlimit(RLIMIT_CORE, &nocore);
    prctl(PR_SET_DUMPABLE, 0);
    confine_fds();
    signal(SIGPIPE, SIG_IGN);

    SPF_error_handler = on_spf_error;
    SPF_warning_handler = on_spf_note;
    SPF_info_handler = on_spf_note;
    SPF_debug_handler = NULL;
    server = SPF_server_new_dns(&layer, 0);
    if (server == NULL ||
        SPF_server_set_explanation(server, DEFAULT_EXP, &rp) !=
            SPF_E_SUCCESS)
        die(71);
    if (rp)
        SPF_response_free(rp);
    if (sandbox() < 0) {
        fprintf(stderr, "postern-spf: cannot install the seccomp filter\n");
        return 71;
    }

    struct spf_hello h = {SPF_PROTO_VERSION, (uint32_t)getpid()};
    if (spf_enc_hello(&f, &h) < 0)
        die(70);
    send_frame(&f);
    for (;;) {
        static struct spf_check c;
        size_t len;
        if (read_frame(&len) != SPF_F_CHECK || spf_dec_check(inbuf, len, &c))
            die(65);
        struct spf_resmsg m = run_check(&c);
        if (spf_enc_result(&f, &m) < 0)
            die(70);
        send_frame(&f);
    }
}
