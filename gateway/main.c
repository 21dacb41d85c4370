/*
 * main.c - the postern command: run the gateway, or one of its tools.
 *
 *   postern -c FILE                 run in the foreground
 *   postern -n -c FILE              print the settings that differ from
 *                                   the defaults
 *   postern check-config FILE       validate FILE, report every error
 *   postern inspect [--json] FILE   print the parse of a message file
 *   postern queue CMD ...           manage the queue of a running gateway
 */
#include <stdio.h>
#include <string.h>

#include "filters/chain.h"
#include "gateway/cli.h"

static int
usage(void)
{
    fprintf(stderr,
            "usage: postern -c FILE\n"
            "       postern -n -c FILE\n"
            "       postern check-config FILE\n"
            "       postern inspect [--json] FILE\n"
            "       postern queue [-c FILE] list [--json] | show ID | flush |\n"
            "                     delete ID|all | hold ID | release ID\n");
    return 2;
}

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} commands[] = {
    {"check-config", pst_cli_check_config},
    {"inspect", pst_cli_inspect},
    {"queue", pst_cli_queue},
};

int
main(int argc, char **argv)
{
    pst_filters_setup();            /* the config's `filters` section */
    if (argc >= 3 && strcmp(argv[1], "-c") == 0)
        return pst_cli_run(argv[2]);
    if (argc == 4 && strcmp(argv[1], "-n") == 0 && strcmp(argv[2], "-c") == 0)
        return pst_cli_print_config(argv[3]);
    if (argc < 2)
        return usage();
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    return usage();
}
