/* cmd/rules.c - `iocd rules check|test`: the engineers' tools for rule files. check loads each
 * file exactly as the daemon does (the sandbox with its budget and memory cap) and reports
 * every error with file:line; test runs *_test.lua files (docs/RULES.md). */
#include "cmd/cmd.h"

#include <stdio.h>
#include <string.h>

#include "collector/collector.h"
#include "common/common.h"
#include "rules/rules.h"

void cmd_rules_usage(void)
{
    printf("Usage: iocd rules check FILE|DIR...\n"
           "       iocd rules test FILE...\n"
           "\n"
           "check  loads each rule file (or each *.lua of a directory but *_test.lua) exactly\n"
           "       as the daemon does and reports syntax and semantic errors as FILE:LINE:\n"
           "       unknown fields, bad durations, selectors, PromQL and templates, runtime\n"
           "       errors, overruns, forbidden calls, files that define no rule.\n"
           "test   runs rule unit tests: test \"name\" { rules = ..., interval = ..., series =\n"
           "       {...}, alerts = {...} } (docs/RULES.md); prints each failure with the\n"
           "       difference.\n"
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
    fprintf(stderr, "iocd rules: unknown subcommand \"%s\" (check or test)\n", argv[0]);
    return 2;
}
