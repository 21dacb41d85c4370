/*
 * attach_helper.c - postern-archive, the process that walks archives for
 * the attachments module (filters/attach_jail.c has the why, the
 * protocol and the confinement). A filter worker thread starts one with
 * fd 3 one end of a SOCK_SEQPACKET socketpair and an empty environment.
 *
 * Before any archive is read: every descriptor but 0-3 is closed (0 and
 * 1 become /dev/null, 2 stays for a fatal message); the module's settings
 * arrive as libconfig text and are configured by the module's own code;
 * libmagic loads its database. Then att_jail_serve confines the process
 * (memory bound, no core, seccomp) and answers until end of input.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <libconfig.h>

#include "core/log.h"
#include "core/util.h"
#include "filters/attach.h"
#include "filters/chain.h"

#define FD 3

#ifdef PST_UNDER_ASAN
/* as in postern (gateway/main.c): a refused allocation is a NULL for
 * libarchive to handle, not a sanitizer report; and LeakSanitizer's
 * exit-time scan needs ptrace, which the sandbox denies */
const char *__asan_default_options(void);
const char *
__asan_default_options(void)
{
    return "allocator_may_return_null=1:detect_leaks=0";
}
#endif

extern const struct pst_filter pst_filter_attachments;

static void
die(int code, const char *what)
{
    fprintf(stderr, "postern-archive: %s\n", what);
    _exit(code);
}

int
main(void)
{
    struct stat st;
    if (fstat(FD, &st) < 0 || !S_ISSOCK(st.st_mode))
        die(64, "fd 3 is not the socket a worker gives it");
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (nul >= 0) {
        dup2(nul, 0);
        dup2(nul, 1);
        if (nul > FD)
            close(nul);
    }
    if (syscall(SYS_close_range, FD + 1, ~0U, 0) < 0)
        for (int fd = FD + 1; fd < 1024; fd++)
            close(fd);
    pst_log_set_level(PST_LOG_ERR);

    char *text = att_jail_settings(FD);
    if (text == NULL)
        die(ATT_HELPER_NO_SETTINGS, "no settings from the worker");
    size_t n = strlen(text) + 8;
    char *doc = malloc(n);
    if (doc == NULL)
        die(70, "out of memory");
    snprintf(doc, n, "a = %s;", text);
    free(text);
    config_t cf;
    config_init(&cf);
    struct pst_err err = {0};
    void *out = NULL;
    if (!config_read_string(&cf, doc) ||
        pst_filter_attachments.configure(config_lookup(&cf, "a"),
                                         "postern-archive", NULL, &out,
                                         &err) != 0)
        die(ATT_HELPER_NO_SETTINGS, "the settings do not configure");
    free(doc);
    att_thread_init();              /* libmagic, before the sandbox */
    att_jail_serve(out, FD);
}
