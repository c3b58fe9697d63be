/* cmd/rules.c - `iocd rules check|test`: the engineers' tools for rule files. check loads each
 * file exactly as the daemon does (the sandbox with its budget and memory cap) and reports
 * every error with file:line; test runs *_test.lua files (docs/RULES.md). */
#define _XOPEN_SOURCE 700 /* nftw */
#include "cmd/cmd.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/collector.h"
#include "common/common.h"
#include "rules/rules.h"
#include "storage/storage.h"

void cmd_rules_usage(void)
{
    printf("Usage: iocd rules check FILE|DIR...\n"
           "       iocd rules test FILE...\n"
           "       iocd rules backtest --rules FILE|DIR --from TIME --to TIME [--data-dir DIR]\n"
           "\n"
           "check  loads each rule file (or each *.lua of a directory but *_test.lua) exactly\n"
           "       as the daemon does and reports syntax and semantic errors as FILE:LINE:\n"
           "       unknown fields, bad durations, selectors, PromQL and templates, runtime\n"
           "       errors, overruns, forbidden calls, files that define no rule.\n"
           "test   runs rule unit tests: test \"name\" { rules = ..., interval = ..., series =\n"
           "       {...}, alerts = {...} } (docs/RULES.md); prints each failure with the\n"
           "       difference.\n"
           "backtest  replays the stored history of DIR (default ./data) between two times\n"
           "       (RFC 3339 or Unix seconds) through the rules and prints when each alert\n"
           "       would have fired and resolved. Safe while iocd runs: it then reads a\n"
           "       consistent copy. Nothing is written to the store.\n"
           "Both exit 0 when everything passes, 1 otherwise, 2 on a usage error.\n");
}

static void engine_defaults(rule_engine_config *rc)
{
    col_config cfg;

    memset(rc, 0, sizeof(*rc));
    rc->latitude = 21.59;
    rc->longitude = 105.85;
    rc->tz_offset_s = 7 * 3600;
    if (col_config_init(&cfg) == IOCD_OK) { /* the daemon's defaults, from the one table */
        rc->latitude = cfg.latitude;
        rc->longitude = cfg.longitude;
        rc->tz_offset_s = (int)cfg.tz_offset_s;
        rc->qlim.timeout_ms = cfg.query_timeout_ms;
        rc->qlim.lookback_ms = cfg.query_lookback_ms;
        rc->qlim.rollup_range_ms = cfg.query_rollup_range_ms > 0 ? cfg.query_rollup_range_ms : -1;
        col_config_fini(&cfg);
    }
}

static int check(int argc, char **argv)
{
    rule_engine_config rc;
    int i, bad = 0;

    engine_defaults(&rc);
    for (i = 0; i < argc; i++) {
        rule_engine *e = NULL;
        char errbuf[1024];
        if (rule_engine_new(&rc, &e) != IOCD_OK)
            return 1;
        if (rule_engine_load(e, argv[i], errbuf, sizeof(errbuf)) != IOCD_OK) {
            printf("%s\n", errbuf);
            bad++;
        } else {
            printf("%s: %zu rule%s ok\n", argv[i], rule_engine_count(e),
                   rule_engine_count(e) == 1 ? "" : "s");
        }
        rule_engine_free(e);
    }
    return bad > 0 ? 1 : 0;
}

static int test(int argc, char **argv)
{
    rule_engine_config rc;
    size_t passed = 0, failed = 0;
    int i;

    engine_defaults(&rc);
    iocd_log_setup(IOCD_LOG_WARN, IOCD_LOG_LOGFMT, 2);
    for (i = 0; i < argc; i++)
        if (rule_tests_run(argv[i], &rc, &passed, &failed) != IOCD_OK)
            return 1;
    printf("%zu passed, %zu failed\n", passed, failed);
    return failed > 0 ? 1 : 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static int backtest(int argc, char **argv)
{
    const char *rules = NULL, *from = NULL, *to = NULL, *dir = "./data";
    rule_engine_config rc;
    char errbuf[1024], tmp[] = "/tmp/iocd-backtest-XXXXXX", copy[64];
    int64_t from_ms, to_ms;
    store *st = NULL;
    iocd_err err;
    int i, code = 1;
    bool copied = false;

    for (i = 0; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--rules") == 0)
            rules = argv[i + 1];
        else if (strcmp(argv[i], "--from") == 0)
            from = argv[i + 1];
        else if (strcmp(argv[i], "--to") == 0)
            to = argv[i + 1];
        else if (strcmp(argv[i], "--data-dir") == 0)
            dir = argv[i + 1];
        else
            break;
    }
    if (i != argc || rules == NULL || from == NULL || to == NULL) {
        fprintf(stderr,
                "iocd rules backtest: need --rules, --from and --to (see iocd help rules)\n");
        return 2;
    }
    if (query_time_parse(from, &from_ms) != IOCD_OK || query_time_parse(to, &to_ms) != IOCD_OK ||
        to_ms <= from_ms) {
        fprintf(stderr, "iocd rules backtest: --from and --to must be times (RFC 3339 or Unix "
                        "seconds), --from first\n");
        return 2;
    }
    engine_defaults(&rc);
    iocd_log_setup(IOCD_LOG_WARN, IOCD_LOG_LOGFMT, 2);
    err = store_open(dir, NULL, &st, errbuf, sizeof(errbuf));
    if (err == IOCD_ELOCKED) { /* a daemon holds it: read a consistent copy */
        if (mkdtemp(tmp) == NULL)
            return 1;
        snprintf(copy, sizeof(copy), "%s/copy", tmp);
        fprintf(stderr, "backtest: %s is in use; reading a consistent copy\n", dir);
        err = store_backup(dir, copy, errbuf, sizeof(errbuf));
        if (err == IOCD_OK) {
            copied = true;
            err = store_open(copy, NULL, &st, errbuf, sizeof(errbuf));
        }
    }
    if (err != IOCD_OK) {
        fprintf(stderr, "iocd rules backtest: %s\n", errbuf);
        goto out;
    }
    err = rule_backtest(st, rules, &rc, from_ms, to_ms, stdout, errbuf, sizeof(errbuf));
    if (err != IOCD_OK)
        fprintf(stderr, "iocd rules backtest: %s\n",
                errbuf[0] != '\0' ? errbuf : iocd_strerror(err));
    else
        code = 0;
out:
    store_close(st);
    if (copied)
        nftw(tmp, rm_one, 8, FTW_DEPTH | FTW_PHYS);
    return code;
}

int cmd_rules(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        cmd_rules_usage();
        return argc < 1 ? 2 : 0;
    }
    if (argc < 2) {
        fprintf(stderr, "iocd rules %s: name at least one file\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[0], "check") == 0)
        return check(argc - 1, argv + 1);
    if (strcmp(argv[0], "test") == 0)
        return test(argc - 1, argv + 1);
    if (strcmp(argv[0], "backtest") == 0)
        return backtest(argc - 1, argv + 1);
    fprintf(stderr, "iocd rules: unknown subcommand \"%s\" (check, test or backtest)\n", argv[0]);
    return 2;
}
