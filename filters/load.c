/*
 * load.c - building a chain from the `filters` list of the config file,
 * loading external modules with dlopen, and freeing chains.
 *
 *   filters = (
 *       { module = "headers"; deadline = 5; failure = "tempfail"; ... },
 *       { module = "example"; path = "/usr/lib/postern/example.so"; ... }
 *   );
 *
 * The chain runs the modules in list order; the same module may appear
 * more than once with different settings. A module named without `path`
 * must be built in (filters/registry.c); with `path` the shared object is
 * loaded (RTLD_NOW | RTLD_LOCAL), must export PST_FILTER_SYMBOL, and is
 * refused when its API version or struct sizes differ from the host's.
 * The host's own pst_* functions are exported from the postern binary
 * (ENABLE_EXPORTS), so a module links against nothing of postern.
 *
 * Every problem is reported with file and line; loading goes on to find
 * them all.
 */
#include "filters/chain_int.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *const chain_keys[] = {"module", "path", "deadline",
                                         "failure", NULL};

/* pst_fconf_error - see filter.h. */
void
pst_fconf_error(struct pst_err *err, const char *file,
                const config_setting_t *s, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    const char *sf = s ? config_setting_source_file(s) : NULL;
    pst_err_add(err, sf ? sf : file, s ? (int)config_setting_source_line(s)
                                       : 0, "%s", text);
}

static bool
in_list(const char *const *keys, const char *k)
{
    for (; keys && *keys; keys++)
        if (strcmp(*keys, k) == 0)
            return true;
    return false;
}

/* pst_fconf_check_keys - see filter.h. */
int
pst_fconf_check_keys(const config_setting_t *s, const char *file,
                     const char *const *keys, struct pst_err *err)
{
    int bad = 0;
    unsigned n = (unsigned)config_setting_length(s);
    const char *mod = NULL;
    config_setting_lookup_string(s, "module", &mod);
    for (unsigned i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(s, i);
        const char *k = config_setting_name(m);
        if (k == NULL || in_list(chain_keys, k) || in_list(keys, k))
            continue;
        pst_fconf_error(err, file, m, "filter %s: unknown key '%s'",
                        mod ? mod : "?", k);
        bad++;
    }
    return bad;
}

static void
entry_free(struct pst__fentry *e)
{
    if (e->f && e->f->unconfigure && e->conf)
        e->f->unconfigure(e->conf);
    if (e->dl)
        dlclose(e->dl);
    memset(e, 0, sizeof(*e));
}

void
pst_chain_free(struct pst_chain *ch)
{
    if (ch == NULL)
        return;
    for (size_t i = 0; i < ch->n; i++)
        entry_free(&ch->e[i]);
    free(ch);
}

static char *
abs_path(const char *p)
{
    if (p[0] == '/')
        return pst_xstrdup(p);
    char *cwd = getcwd(NULL, 0);
    if (cwd == NULL)
        return pst_xstrdup(p);
    char *r = pst_xasprintf("%s/%s", cwd, p);
    free(cwd);
    return r;
}

/* Load the shared object at path; its descriptor, or NULL after an error. */
static const struct pst_filter *
load_external(const config_setting_t *ps, const char *file, const char *mod,
              const char *path, void **dlp, struct pst_err *err)
{
    char *ap = abs_path(path);
    void *dl = dlopen(ap, RTLD_NOW | RTLD_LOCAL);
    const struct pst_filter *f;
    const char *why;

    free(ap);
    if (dl == NULL) {
        pst_fconf_error(err, file, ps, "filter %s: cannot load %s: %s", mod,
                        path, dlerror());
        return NULL;
    }
    f = dlsym(dl, PST_FILTER_SYMBOL);
    if (f == NULL) {
        pst_fconf_error(err, file, ps,
                        "filter %s: %s exports no " PST_FILTER_SYMBOL, mod,
                        path);
        goto fail;
    }
    why = pst_filter_abi_check(f);
    if (why != NULL) {
        pst_fconf_error(err, file, ps,
                        "filter %s: %s refused: %s (module API %u, host %u)",
                        mod, path, why, f->api, PST_FILTER_API);
        goto fail;
    }
    if (strcmp(f->name, mod) != 0) {
        pst_fconf_error(err, file, ps,
                        "filter %s: %s is the module '%s'", mod, path,
                        f->name);
        goto fail;
    }
    *dlp = dl;
    return f;

fail:
    dlclose(dl);
    return NULL;
}

static int
get_deadline(const config_setting_t *s, const char *file, const char *mod,
             unsigned *ms, struct pst_err *err)
{
    const config_setting_t *d = config_setting_get_member(s, "deadline");
    double v;
    *ms = PST_FDEADLINE_DEFAULT;
    if (d == NULL)
        return 0;
    switch (config_setting_type(d)) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        v = (double)config_setting_get_int64(d);
        break;
    case CONFIG_TYPE_FLOAT:
        v = config_setting_get_float(d);
        break;
    default:
        pst_fconf_error(err, file, d,
                        "filter %s: deadline must be a number of seconds",
                        mod);
        return -1;
    }
    if (!(v >= 0.01 && v <= 3600)) {
        pst_fconf_error(err, file, d,
                        "filter %s: deadline %g out of range 0.01..3600 s",
                        mod, v);
        return -1;
    }
    *ms = (unsigned)(v * 1000 + 0.5);
    return 0;
}

static int
get_failure(const config_setting_t *s, const char *file, const char *mod,
            enum pst_failmode *fm, struct pst_err *err)
{
    const config_setting_t *d = config_setting_get_member(s, "failure");
    *fm = PST_FAIL_TEMPFAIL;
    if (d == NULL)
        return 0;
    const char *v = config_setting_get_string(d);
    if (v && strcmp(v, "tempfail") == 0)
        *fm = PST_FAIL_TEMPFAIL;
    else if (v && strcmp(v, "accept") == 0)
        *fm = PST_FAIL_ACCEPT;
    else if (v && strcmp(v, "reject") == 0)
        *fm = PST_FAIL_REJECT;
    else {
        pst_fconf_error(err, file, d,
                        "filter %s: failure must be \"tempfail\", "
                        "\"accept\" or \"reject\"", mod);
        return -1;
    }
    return 0;
}

/* pst_chain_load - see chain.h. */
int
pst_chain_load(const config_setting_t *list, const char *file,
               const struct pst_fhost *host, struct pst_chain **out,
               struct pst_err *err)
{
    struct pst_chain *ch = pst_chain_new();
    unsigned errs = err->count;
    int n;

    *out = NULL;
    if (!config_setting_is_list(list) && !config_setting_is_array(list)) {
        pst_fconf_error(err, file, list,
                        "filters must be a list ( { module = ...; }, ... )");
        goto fail;
    }
    n = config_setting_length(list);
    if (n > PST_FCHAIN_MAX) {
        pst_fconf_error(err, file, list, "filters: more than %d modules",
                        PST_FCHAIN_MAX);
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(list, (unsigned)i);
        const char *mod = NULL, *path = NULL;
        const struct pst_filter *f;
        void *dl = NULL, *conf = NULL;
        unsigned ms;
        enum pst_failmode fm;

        if (!config_setting_is_group(s)) {
            pst_fconf_error(err, file, s,
                            "filters[%d] must be a group { module = ...; }",
                            i);
            continue;
        }
        if (!config_setting_lookup_string(s, "module", &mod)) {
            pst_fconf_error(err, file, s, "filters[%d]: missing 'module'", i);
            continue;
        }
        config_setting_lookup_string(s, "path", &path);
        if (get_deadline(s, file, mod, &ms, err) < 0 ||
            get_failure(s, file, mod, &fm, err) < 0)
            continue;
        if (path != NULL) {
            f = load_external(config_setting_get_member(s, "path"), file, mod,
                              path, &dl, err);
        } else {
            f = pst_filter_builtin(mod);
            if (f == NULL)
                pst_fconf_error(err, file,
                                config_setting_get_member(s, "module"),
                                "filter '%s' is not built in (give 'path' "
                                "for an external module)", mod);
        }
        if (f == NULL)
            continue;
        if (f->configure && f->configure(s, file, host, &conf, err) < 0) {
            if (dl)
                dlclose(dl);
            continue;
        }
        if (f->configure == NULL)
            pst_fconf_check_keys(s, file, NULL, err);
        if (pst_chain_append(ch, f, conf, ms, fm, err) < 0) {
            if (f->unconfigure && conf)
                f->unconfigure(conf);
            if (dl)
                dlclose(dl);
            continue;
        }
        ch->e[ch->n - 1].dl = dl;
    }
    if (err->count != errs)
        goto fail;
    *out = ch;
    return 0;

fail:
    pst_chain_free(ch);
    return -EINVAL;
}

/* pst_chain_start - see chain.h. */
int
pst_chain_start(struct pst_chain *ch, struct pst_err *err)
{
    if (ch == NULL)
        return 0;
    for (size_t i = 0; i < ch->n; i++) {
        struct pst__fentry *e = &ch->e[i];
        if (e->f->start && e->f->start(e->conf, err) < 0)
            return -1;
    }
    return 0;
}

/* pst_chain_stop - see chain.h. */
void
pst_chain_stop(struct pst_chain *ch)
{
    for (size_t i = 0; ch != NULL && i < ch->n; i++)
        if (ch->e[i].f->stop)
            ch->e[i].f->stop(ch->e[i].conf);
}

/* pst_fconf_helper - see filter.h. */
int
pst_fconf_helper(const config_setting_t *s, const char *file,
                 const char *module, const char *name, char **path, int *fd,
                 struct pst_err *err)
{
    const char *p = NULL;
    char self[PATH_MAX];
    struct stat st;
    *path = NULL;
    *fd = -1;
    config_setting_lookup_string(s, "helper", &p);
    if (p != NULL) {
        *path = pst_xstrdup(p);
    } else {
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0) {
            pst_fconf_error(err, file, s, "filter %s: cannot find the "
                            "postern binary to locate %s; set 'helper'",
                            module, name);
            return -1;
        }
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = '\0';
        *path = pst_xasprintf("%s/%s", self, name);
    }
    *fd = open(*path, O_PATH | O_CLOEXEC);
    if (*fd >= 0 && *fd < 10) {
        /* not one of the low numbers a starting helper's child dup2()s
         * its socket onto (fd 3) before it execveat()s this one */
        int high = fcntl(*fd, F_DUPFD_CLOEXEC, 10);
        close(*fd);
        *fd = high;
    }
    if (*fd < 0 || fstat(*fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        (st.st_mode & 0111) == 0) {
        const config_setting_t *m = config_setting_get_member(s, "helper");
        pst_fconf_error(err, file, m ? m : s,
                        "filter %s: helper %s is not an executable file%s%s",
                        module, *path, *fd < 0 ? ": " : "",
                        *fd < 0 ? strerror(errno) : "");
        if (*fd >= 0)
            close(*fd);
        *fd = -1;
        return -1;
    }
    return 0;
}

/* pst_fhelper_exec - see filter.h. */
void
pst_fhelper_exec(int sock, int exe_fd, const char *name, pid_t parent)
{
    struct sigaction dfl;
    sigset_t none;
    char *argv[] = {(char *)name, NULL};
    char *envp[] = {NULL};
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setpgid(0, 0);
    if (parent != 0 &&
        (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent))
        _exit(127);
    if (dup2(sock, 3) == 3)
        syscall(SYS_execveat, exe_fd, "", argv, envp, AT_EMPTY_PATH);
    _exit(127);
}
