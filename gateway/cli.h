/*
 * cli.h - the entry points of the postern command's subcommands. Each takes
 * its own argv (argv[0] is the subcommand name) and returns the exit code,
 * or PST_CLI_USAGE when the arguments are wrong (main.c prints the usage
 * and exits 2; it also answers -h and --help before calling).
 */
#ifndef PST_GATEWAY_CLI_H
#define PST_GATEWAY_CLI_H

#define PST_CLI_USAGE (-2)

int pst_cli_run(const char *config_path);
int pst_cli_check_config(int argc, char **argv);
int pst_cli_queue(int argc, char **argv);
int pst_cli_print_config(const char *config_path);
int pst_cli_inspect(int argc, char **argv);

#endif
