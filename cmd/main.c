/* cmd/main.c - the iocd binary: dispatches to a subcommand and prints help and version. */
#include "cmd/cmd.h"

#include <stdio.h>
#include <string.h>

#include "common/common.h"

static void usage(FILE *out)
{
    fprintf(out, "iocd - telemetry collector and alerting engine for city operations centers\n"
                 "\n"
                 "Usage: iocd <command> [flags]\n"
                 "\n"
                 "Commands:\n"
                 "  serve      run the daemon: ingest, storage, rules, incidents, HTTP API\n"
                 "  backup     copy a store consistently, even while iocd runs\n"
                 "  check      verify a store's indexes and write-ahead log\n"
                 "  rules      check, test and backtest alert rule files\n"
                 "  simulate   run a live demo city that feeds an iocd\n"
                 "  version    print the version and exit\n"
                 "  help [CMD] show this help, or a command's flags ('help config': config keys)\n"
                 "\n"
                 "Run 'iocd help serve' (or 'iocd serve --help') for the daemon's flags.\n"
                 "Docs: README.md and docs/ in the source tree.\n");
}

static int version(void)
{
    printf("iocd version %s (revision %s, built with %s)\n", IOCD_VERSION, IOCD_REVISION,
#ifdef __VERSION__
           "cc " __VERSION__
#else
           "an unknown compiler"
#endif
    );
    return 0;
}

static int help(int argc, char **argv)
{
    if (argc == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[0], "serve") == 0) {
        cmd_serve_usage();
        return 0;
    }
    if (strcmp(argv[0], "backup") == 0) {
        cmd_backup_usage();
        return 0;
    }
    if (strcmp(argv[0], "check") == 0) {
        cmd_check_usage();
        return 0;
    }
    if (strcmp(argv[0], "rules") == 0) {
        cmd_rules_usage();
        return 0;
    }
    if (strcmp(argv[0], "simulate") == 0) {
        cmd_simulate_usage();
        return 0;
    }
    if (strcmp(argv[0], "config") == 0)
        return cmd_config_reference();
    if (strcmp(argv[0], "version") == 0) {
        printf("Usage: iocd version\n\nPrints the version, git revision and compiler.\n");
        return 0;
    }
    if (strcmp(argv[0], "help") == 0) {
        printf("Usage: iocd help [COMMAND]\n\nShows the commands, or one command's flags.\n");
        return 0;
    }
    fprintf(stderr, "iocd: unknown command \"%s\"\n\n", argv[0]);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv)
{
    const char *cmd;

    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 2, argv + 2);
    if (strcmp(cmd, "backup") == 0)
        return cmd_backup(argc - 2, argv + 2);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc - 2, argv + 2);
    if (strcmp(cmd, "rules") == 0)
        return cmd_rules(argc - 2, argv + 2);
    if (strcmp(cmd, "simulate") == 0)
        return cmd_simulate(argc - 2, argv + 2);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0 || strcmp(cmd, "-v") == 0)
        return argc == 2 || strcmp(argv[2], "--help") != 0 ? version() : help(1, argv + 1);
    if (strcmp(cmd, "help") == 0)
        return help(argc - 2, argv + 2);
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)
        return help(0, NULL);
    fprintf(stderr, "iocd: unknown command \"%s\"\n\n", cmd);
    usage(stderr);
    return 2;
}
