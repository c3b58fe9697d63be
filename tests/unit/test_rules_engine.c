/* tests/unit/test_rules_engine.c - rule internals: the native fast path of simple conditions
 * gives exactly what the same condition gives in Lua, on many windows; window fields; the
 * sunrise equation against published times for Thai Nguyen. */
#include "tests/unit/harness.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rules/rules_int.h"

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    if (f == NULL)
        test_fail_at(__FILE__, __LINE__, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

TEST(native_conditions_match_lua_exactly)
{
    static const char *const conds[] = { "value < 10", "avg <= 2.5",  "max > 7",    "min >= 0",
                                         "sum == 30",  "count ~= 3",  "rate > 0.1", "delta < -1",
                                         "stddev > 1", "first < last" };
    char path[512], src[4096], errbuf[512];
    rule_set *rs = NULL;
    iocd_sample s[40];
    size_t i, k, n, checked = 0;
    uint64_t seed = 42;

    snprintf(path, sizeof(path), "%s/r.lua", test_tmpdir());
    src[0] = '\0';
    /* Each condition twice: as a string (native when simple) and as a Lua function. */
    for (i = 0; i < IOCD_ARRAY_LEN(conds); i++) {
        char field[16], op[4], rest[32];
        char line[400];
        sscanf(conds[i], "%15s %3s %31s", field, op, rest);
        snprintf(line, sizeof(line),
                 "rule \"s%zu\" { select = \"x\", window = \"5m\", when = \"%s\" }\n"
                 "rule \"f%zu\" { select = \"x\", window = \"5m\", when = function(s) return s.%s "
                 "%s %s%s end }\n",
                 i, conds[i], i, field, op, strcmp(rest, "last") == 0 ? "s." : "", rest);
        strcat(src, line);
    }
    write_file(path, src);
    if (rule_set_load(path, NULL, &rs, errbuf, sizeof(errbuf)) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "load: %s", errbuf);
    ASSERT_EQ(rs->n, 2 * IOCD_ARRAY_LEN(conds));
    for (k = 0; k < 300; k++) {
        rule_window w;
        rule_ctx ctx;
        memset(&ctx, 0, sizeof(ctx));
        n = 1 + k % 30;
        for (i = 0; i < n; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            s[i].t_ms = (int64_t)i * 10000;
            s[i].v = (double)((seed >> 33) % 2000) / 100.0 - 5.0;
            if (k % 7 == 0 && i == 3)
                s[i].v = NAN;
        }
        w = (rule_window){ s, n, 300000 };
        for (i = 0; i < IOCD_ARRAY_LEN(conds); i++) {
            const rule_def *a = &rs->rules[2 * i], *b = &rs->rules[2 * i + 1];
            bool ra = false, rb = false;
            ASSERT_OK(
                rule_cond_eval(rs, a, &a->when, "", 0, &w, &ctx, &ra, errbuf, sizeof(errbuf)));
            ASSERT_OK(
                rule_cond_eval(rs, b, &b->when, "", 0, &w, &ctx, &rb, errbuf, sizeof(errbuf)));
            if (ra != rb)
                test_fail_at(__FILE__, __LINE__, "%s differs on window %zu: native %d, Lua %d",
                             conds[i], k, ra, rb);
            checked++;
        }
    }
    /* The simple ones really took the native path. */
    ASSERT_TRUE(rs->rules[0].when.native);
    ASSERT_TRUE(rs->rules[2].when.native);
    ASSERT_FALSE(rs->rules[2 * 9].when.native); /* "first < last" is Lua */
    ASSERT_EQ(checked, 300 * IOCD_ARRAY_LEN(conds));
    rule_set_free(rs);
}

TEST(window_fields)
{
    iocd_sample s[] = { { 0, 10 }, { 10000, 4 }, { 20000, 6 }, { 30000, 8 } };
    rule_window w = { s, 4, 60000 };

    ASSERT_DBL_EQ(rule_window_field(&w, RF_AVG), 7.0, 1e-12);
    ASSERT_DBL_EQ(rule_window_field(&w, RF_MIN), 4.0, 0);
    ASSERT_DBL_EQ(rule_window_field(&w, RF_MAX), 10.0, 0);
    ASSERT_DBL_EQ(rule_window_field(&w, RF_SUM), 28.0, 0);
    ASSERT_DBL_EQ(rule_window_field(&w, RF_COUNT), 4.0, 0);
    ASSERT_DBL_EQ(rule_window_field(&w, RF_FIRST), 10.0, 0);
    ASSERT_DBL_EQ(rule_window_field(&w, RF_LAST), 8.0, 0);
    ASSERT_DBL_EQ(rule_window_field(&w, RF_DELTA), -2.0, 0);
    /* rate counts the reset from 10 to 4: (8 - 10 + 10) / 30 s */
    ASSERT_DBL_EQ(rule_window_field(&w, RF_RATE), 8.0 / 30.0, 1e-12);
    ASSERT_DBL_EQ(rule_window_field(&w, RF_STDDEV), sqrt(5.0), 1e-12);
    w.n = 1;
    ASSERT_TRUE(isnan(rule_window_field(&w, RF_RATE)));
    w.n = 0;
    ASSERT_TRUE(isnan(rule_window_field(&w, RF_AVG)));
}

TEST(sun_times_for_thai_nguyen)
{
    int64_t rise, set, t;

    /* 2026-11-24 12:00 local (UTC+7): published sunrise 06:11, sunset 17:14. */
    t = 1795496400; /* 2026-11-24T05:00:00Z */
    ASSERT_TRUE(rule_sun_times(t, 21.59, 105.85, 7 * 3600, &rise, &set));
    ASSERT_LT(llabs(rise - (1795496400 - 5 * 3600 - 49 * 60)), 240); /* 06:11 local = 23:11Z prev */
    ASSERT_LT(llabs(set - (1795496400 + 5 * 3600 + 14 * 60)), 240);  /* 17:14 local = 10:14Z */
    /* June: longer days. */
    ASSERT_TRUE(rule_sun_times(1782100800, 21.59, 105.85, 7 * 3600, &rise, &set));
    ASSERT_GT(set - rise, 13 * 3600);
    /* Polar night: no sunrise. */
    ASSERT_FALSE(rule_sun_times(1797850000, 80.0, 15.0, 0, &rise, &set));
}
