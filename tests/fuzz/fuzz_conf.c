/*
 * fuzz_conf.c - libFuzzer target for the config loader (conf/conf.c with
 * libconfig, every section's validation, and the filters section through
 * the chain loader, as postern itself runs it).
 *
 * The input is written as a config file in a private directory and
 * loaded. Invariants: the load returns a configuration generation with no
 * error, or NULL with at least one error, and every error names the file
 * (or an @include'd one) and a line ("path:N: text"); a generation can be
 * printed (postern -n) and released; nothing leaks (the fuzz run has
 * LeakSanitizer on).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/log.h"
#include "core/util.h"
#include "filters/chain.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64], path[96];
static FILE *devnull;

static void
init(void)
{
    snprintf(dir, sizeof(dir), "/tmp/fuzz_conf.XXXXXX");
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(path, sizeof(path), "%s/postern.conf", dir);
    devnull = fopen("/dev/null", "w");
    pst_log_open("fuzz_conf", 0, 0, PST_LOG_ERR);
    pst_log_set_level(PST_LOG_ERR);
    pst_filters_setup();
}

/* located - "file:line: text" with a line number (0 for file-level
 * errors such as "cannot open"). */
static bool
located(const char *m)
{
    const char *c = strchr(m, ':');
    if (c == NULL || c == m)
        return false;
    const char *d = c + 1;
    while (*d >= '0' && *d <= '9')
        d++;
    return d > c + 1 && d[0] == ':' && d[1] == ' ';
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool once;
    if (!once) {
        init();
        once = true;
    }
    FILE *f = fopen(path, "w");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();

    struct pst_err err = {0};
    struct pst_conf *c = pst_conf_load(path, &err);
    if ((c == NULL) != (err.count > 0))
        abort();
    for (unsigned i = 0; i < err.count && i < PST_ERR_MAX; i++)
        if (!located(err.msgs[i]))
            abort();
    if (c != NULL) {
        pst_conf_print(devnull, c, true);
        pst_conf_print(devnull, c, false);
        pst_conf_unref(c);
    }
    pst_err_free(&err);
    return 0;
}
