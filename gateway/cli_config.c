/*
 * cli_config.c - "postern check-config FILE" and "postern -n -c FILE": load
 * FILE exactly as the gateway would and report the outcome.
 *
 * Every error goes to stderr, one "file:line: text" per line, and the exit
 * code is 1. On success check-config prints "FILE: ok", -n prints the
 * settings that differ from the defaults (libconfig syntax), and both exit
 * 0. Usage errors exit 2, like the postern command itself.
 */
#include <stdio.h>

#include "conf/conf.h"
#include "gateway/cli.h"

/* load - path's generation, or NULL after printing every error. */
static struct pst_conf *
load(const char *path)
{
    struct pst_err err = {0};
    struct pst_conf *c = pst_conf_load(path, &err);

    if (c != NULL)
        return c;
    for (unsigned i = 0; i < err.count && i < PST_ERR_MAX; i++)
        fprintf(stderr, "%s\n", err.msgs[i]);
    if (err.count > PST_ERR_MAX)
        fprintf(stderr, "%s: %u more errors not shown\n", path,
                err.count - PST_ERR_MAX);
    if (err.count == 0)
        fprintf(stderr, "%s: cannot be loaded\n", path);
    pst_err_free(&err);
    return NULL;
}

/* pst_cli_check_config - argv: "check-config" FILE. */
int
pst_cli_check_config(int argc, char **argv)
{
    struct pst_conf *c;

    if (argc != 2)
        return PST_CLI_USAGE;
    c = load(argv[1]);
    if (c == NULL)
        return 1;
    pst_conf_unref(c);
    printf("%s: ok\n", argv[1]);
    return 0;
}

/* pst_cli_print_config - postern -n -c FILE. */
int
pst_cli_print_config(const char *config_path)
{
    struct pst_conf *c = load(config_path);

    if (c == NULL)
        return 1;
    pst_conf_print(stdout, c, true);
    pst_conf_unref(c);
    return fflush(stdout) == 0 ? 0 : 1;
}
