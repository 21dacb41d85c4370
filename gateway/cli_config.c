/*
 * cli_config.c - "postern check-config FILE": load FILE exactly as the
 * gateway would and report the outcome.
 *
 * Every error goes to stderr, one "file:line: text" per line, and the exit
 * code is 1; a valid file prints "FILE: ok" and exits 0. Usage errors exit
 * 2, like the postern command itself.
 */
#include <stdio.h>

#include "conf/conf.h"
#include "gateway/cli.h"

/* pst_cli_check_config - argv: "check-config" FILE. */
int
pst_cli_check_config(int argc, char **argv)
{
    struct pst_err err = {0};
    struct pst_conf *c;

    if (argc != 2) {
        fprintf(stderr, "usage: postern check-config FILE\n");
        return 2;
    }
    c = pst_conf_load(argv[1], &err);
    if (c == NULL) {
        for (unsigned i = 0; i < err.count && i < PST_ERR_MAX; i++)
            fprintf(stderr, "%s\n", err.msgs[i]);
        if (err.count > PST_ERR_MAX)
            fprintf(stderr, "%s: %u more errors not shown\n", argv[1],
                    err.count - PST_ERR_MAX);
        if (err.count == 0)
            fprintf(stderr, "%s: cannot be loaded\n", argv[1]);
        pst_err_free(&err);
        return 1;
    }
    pst_conf_unref(c);
    printf("%s: ok\n", argv[1]);
    return 0;
}
