/* cmd/tools.c - offline subcommands on a data directory: backup and check. Both work while a
 * daemon is running on the same directory (they read through LMDB read transactions and
 * never take the daemon's lock). */
#include "cmd/cmd.h"

#include <stdio.h>
#include <string.h>

#include "common/common.h"
#include "storage/storage.h"

void cmd_backup_usage(void)
{
    printf("Usage: iocd backup [--data-dir DIR] DEST\n"
           "\n"
           "Writes a consistent, compacted copy of the store in DIR (default ./data) to\n"
           "DEST/iocd.mdb. Safe while iocd is running and ingesting: the copy is a snapshot of\n"
           "one moment. Start iocd with --data-dir DEST to use the copy.\n");
}

void cmd_check_usage(void)
{
    printf("Usage: iocd check DIR\n"
           "\n"
           "Verifies the store in DIR: the format marker, that the series index, reverse index\n"
           "and label postings agree, and that every write-ahead-log record decodes. Prints each\n"
           "problem; exits 0 when there are none, 1 otherwise.\n");
}

static void print_problem(void *ud, const char *problem)
{
    (void)ud;
    printf("problem: %s\n", problem);
}

int cmd_backup(int argc, char **argv)
{
    const char *dir = "./data", *dest = NULL;
    char errbuf[512];
    int64_t t0 = iocd_mono_ns();
    iocd_err err;
    int i;

    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cmd_backup_usage();
            return 0;
        }
        if (strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strncmp(argv[i], "--data-dir=", 11) == 0) {
            dir = argv[i] + 11;
        } else if (argv[i][0] == '-' || dest != NULL) {
            fprintf(stderr, "iocd backup: unexpected argument \"%s\"\n", argv[i]);
            return 2;
        } else {
            dest = argv[i];
        }
    }
    if (dest == NULL) {
        fprintf(stderr, "iocd backup: missing DEST (see iocd backup --help)\n");
        return 2;
    }
    err = store_backup(dir, dest, errbuf, sizeof(errbuf));
    if (err != IOCD_OK) {
        fprintf(stderr, "iocd backup: %s\n", errbuf);
        return 1;
    }
    printf("backup of %s written to %s/iocd.mdb in %.1f s\n", dir, dest,
           (double)(iocd_mono_ns() - t0) / 1e9);
    return 0;
}

int cmd_check(int argc, char **argv)
{
    uint64_t problems = 0;
    char errbuf[512];
    iocd_err err;

    if (argc == 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
        cmd_check_usage();
        return 0;
    }
    if (argc != 1 || argv[0][0] == '-') {
        fprintf(stderr, "iocd check: expected one data directory (see iocd check --help)\n");
        return 2;
    }
    iocd_log_setup(IOCD_LOG_INFO, IOCD_LOG_LOGFMT, 2); /* the summary line */
    err = store_check(argv[0], print_problem, NULL, &problems, errbuf, sizeof(errbuf));
    if (err != IOCD_OK) {
        fprintf(stderr, "iocd check: %s\n", errbuf);
        return 1;
    }
    printf("%s: %llu problem%s\n", argv[0], (unsigned long long)problems, problems == 1 ? "" : "s");
    return problems == 0 ? 0 : 1;
}
