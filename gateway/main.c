/*
 * main.c - the postern command: run the gateway, or one of its tools.
 *
 *   postern -c FILE                 run in the foreground
 *   postern -n -c FILE              print the settings that differ from
 *                                   the defaults
 *   postern check-config FILE       validate FILE, report every error
 *   postern inspect [--json] FILE   print the parse of a message file
 *   postern queue CMD ...           manage the queue of a running gateway
 *
 * -h or --help, alone or after a subcommand, prints that usage on stdout
 * and exits 0; a usage error prints it on stderr and exits 2. The usage
 * texts live in the table below, the one place that lists the commands.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/util.h"
#include "filters/chain.h"
#include "gateway/cli.h"

#ifdef PST_UNDER_ASAN
/* A sanitizer build's malloc returns NULL when memory is refused, as the
 * C library's does: the child that walks an archive (filters/
 * attach_jail.c) is bounded by RLIMIT_DATA, and libarchive is to see a
 * failed allocation there, not a sanitizer report. ASAN_OPTIONS from the
 * environment still set everything else. */
const char *__asan_default_options(void);
const char *
__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}
#endif

static const char run_usage[] = "postern -c FILE\n"
                                "postern -n -c FILE\n";

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;              /* lines, each ending in \n */
} commands[] = {
    {"check-config", pst_cli_check_config, "postern check-config FILE\n"},
    {"inspect", pst_cli_inspect, "postern inspect [--json] FILE\n"},
    {"queue", pst_cli_queue,
     "postern queue [-c FILE | -s SOCKET] list [--json]\n"
     "postern queue [-c FILE | -s SOCKET] show ID [--json]\n"
     "postern queue [-c FILE | -s SOCKET] flush\n"
     "postern queue [-c FILE | -s SOCKET] delete ID|all\n"
     "postern queue [-c FILE | -s SOCKET] hold ID\n"
     "postern queue [-c FILE | -s SOCKET] release ID\n"},
};

/* Print lines, the first after "usage: ", the others aligned under it. */
static void
put_lines(FILE *o, const char *text, bool *first)
{
    while (*text) {
        const char *nl = strchr(text, '\n');
        fprintf(o, "%s%.*s\n", *first ? "usage: " : "       ",
                (int)(nl - text), text);
        *first = false;
        text = nl + 1;
    }
}

/* The usage of subcommand name (NULL: of the whole command): on stdout
 * with exit code 0 when asked for, else on stderr with 2. */
static int
usage(const char *name, bool asked)
{
    FILE *o = asked ? stdout : stderr;
    bool first = true;
    if (name == NULL)
        put_lines(o, run_usage, &first);
    for (size_t i = 0; i < PST_ARRAY_LEN(commands); i++)
        if (name == NULL || strcmp(name, commands[i].name) == 0)
            put_lines(o, commands[i].usage, &first);
    return asked ? (fflush(o) == 0 ? 0 : 1) : 2;
}

/* -h or --help among args */
static bool
wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return true;
    return false;
}

int
main(int argc, char **argv)
{
    pst_filters_setup();            /* the config's `filters` section */
    for (size_t i = 0; argc >= 2 && i < PST_ARRAY_LEN(commands); i++) {
        if (strcmp(argv[1], commands[i].name) != 0)
            continue;
        if (wants_help(argc - 2, argv + 2))
            return usage(commands[i].name, true);
        int rc = commands[i].run(argc - 1, argv + 1);
        return rc == PST_CLI_USAGE ? usage(commands[i].name, false) : rc;
    }
    if (wants_help(argc - 1, argv + 1))
        return usage(NULL, true);
    if (argc >= 3 && strcmp(argv[1], "-c") == 0)
        return pst_cli_run(argv[2]);
    if (argc == 4 && strcmp(argv[1], "-n") == 0 && strcmp(argv[2], "-c") == 0)
        return pst_cli_print_config(argv[3]);
    return usage(NULL, false);
}
