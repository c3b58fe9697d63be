/* tests/unit/test_query.c - durations and API times. */
#include "tests/unit/harness.h"

#include "query/query.h"

static int64_t dur(const char *s)
{
    int64_t ms = -1;

    ASSERT_OK(query_duration_parse(s, false, &ms));
    return ms;
}

TEST(duration_units_and_combinations)
{
    ASSERT_EQ(dur("0s"), 0);
    ASSERT_EQ(dur("100ms"), 100);
    ASSERT_EQ(dur("90s"), 90000);
    ASSERT_EQ(dur("5m"), 300000);
    ASSERT_EQ(dur("1h30m"), 5400000);
    ASSERT_EQ(dur("90d"), 90LL * 86400000);
    ASSERT_EQ(dur("2w"), 14LL * 86400000);
    ASSERT_EQ(dur("1y"), 365LL * 86400000);
    ASSERT_EQ(dur("1m30s500ms"), 90500);
}

TEST(duration_errors)
{
    int64_t ms = 7;

    ASSERT_ERR(query_duration_parse("", false, &ms), IOCD_EPARSE);
    ASSERT_ERR(query_duration_parse("5", false, &ms), IOCD_EPARSE);
    ASSERT_ERR(query_duration_parse("5x", false, &ms), IOCD_EPARSE);
    ASSERT_ERR(query_duration_parse("-5s", false, &ms), IOCD_EPARSE);
    ASSERT_ERR(query_duration_parse("1.5h", false, &ms), IOCD_EPARSE);
    ASSERT_ERR(query_duration_parse("99999999999999999999y", false, &ms), IOCD_ETOOBIG);
    ASSERT_ERR(query_duration_parse("300000000y", false, &ms), IOCD_ETOOBIG);
    ASSERT_EQ(ms, 7); /* untouched on error */
}

TEST(duration_bare_seconds_for_api)
{
    int64_t ms = 0;

    ASSERT_OK(query_duration_parse("15", true, &ms));
    ASSERT_EQ(ms, 15000);
    ASSERT_OK(query_duration_parse("1.5", true, &ms));
    ASSERT_EQ(ms, 1500);
    ASSERT_OK(query_duration_parse("30s", true, &ms));
    ASSERT_EQ(ms, 30000);
    ASSERT_ERR(query_duration_parse("-1", true, &ms), IOCD_EPARSE);
    ASSERT_ERR(query_duration_parse("nan", true, &ms), IOCD_EPARSE);
}

TEST(duration_format_round_trips)
{
    static const char *const cases[] = { "0s",    "100ms", "1m30s", "1h30m",
                                         "12w6d", "2w",    "1y",    "1y2w3d4h5m6s7ms" };
    char out[64];
    size_t i;

    for (i = 0; i < IOCD_ARRAY_LEN(cases); i++) {
        query_duration_format(dur(cases[i]), out, sizeof(out));
        ASSERT_STR_EQ(out, cases[i]);
    }
    query_duration_format(dur("90d"), out, sizeof(out)); /* as Prometheus prints it */
    ASSERT_STR_EQ(out, "12w6d");
}

TEST(time_unix_and_rfc3339)
{
    int64_t ms = 0;

    ASSERT_OK(query_time_parse("1700000000", &ms));
    ASSERT_EQ(ms, 1700000000000LL);
    ASSERT_OK(query_time_parse("1700000000.123", &ms));
    ASSERT_EQ(ms, 1700000000123LL);
    ASSERT_OK(query_time_parse("2023-11-14T22:13:20Z", &ms));
    ASSERT_EQ(ms, 1700000000000LL);
    ASSERT_OK(query_time_parse("2023-11-15T05:13:20.5+07:00", &ms));
    ASSERT_EQ(ms, 1700000000500LL);
    ASSERT_OK(query_time_parse("1970-01-01T00:00:00Z", &ms));
    ASSERT_EQ(ms, 0);
    ASSERT_OK(query_time_parse("1969-12-31T23:59:59Z", &ms));
    ASSERT_EQ(ms, -1000);
    ASSERT_OK(query_time_parse("2024-02-29T00:00:00Z", &ms));
    ASSERT_OK(query_time_parse("-1.5", &ms));
    ASSERT_EQ(ms, -1500);
}

TEST(time_errors)
{
    static const char *const bad[] = { "",
                                       "yesterday",
                                       "2023-02-29T00:00:00Z",
                                       "2023-13-01T00:00:00Z",
                                       "2023-11-14T22:13:20",
                                       "2023-11-14T25:13:20Z",
                                       "2023-11-14T22:13:20+7",
                                       "2023-11-14T22:13:20Zjunk",
                                       "1e400",
                                       "inf" };
    int64_t ms = 42;
    size_t i;

    for (i = 0; i < IOCD_ARRAY_LEN(bad); i++)
        ASSERT_ERR(query_time_parse(bad[i], &ms), IOCD_EPARSE);
    ASSERT_EQ(ms, 42);
}

/* ---- Selectors ------------------------------------------------------------------------ */

static void parse_ok(const char *text, query_selector *sel)
{
    char errbuf[256] = "";

    if (query_selector_parse(text, sel, errbuf, sizeof(errbuf)) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "parse %s: %s", text, errbuf);
}

static void parse_err(const char *text, const char *want)
{
    query_selector sel;
    char errbuf[256] = "";

    ASSERT_ERR(query_selector_parse(text, &sel, errbuf, sizeof(errbuf)), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(errbuf, want);
}

TEST(selector_parses_all_operators_and_strings)
{
    query_selector sel;

    parse_ok(" water_level_m { ward = \"w\\u00e1\", device!='d\\x41', kind=~`pu.*`, x!~\"\" , } ",
             &sel);
    ASSERT_EQ(sel.n, 5);
    ASSERT_STR_EQ(sel.m[0].name, "__name__");
    ASSERT_STR_EQ(sel.m[0].value, "water_level_m");
    ASSERT_STR_EQ(sel.m[1].value, "w\xc3\xa1");
    ASSERT_EQ(sel.m[2].op, QUERY_MATCH_NEQ);
    ASSERT_STR_EQ(sel.m[2].value, "dA");
    ASSERT_EQ(sel.m[3].op, QUERY_MATCH_RE);
    ASSERT_TRUE(query_matcher_matches(&sel.m[3], "pump", 4));
    ASSERT_FALSE(query_matcher_matches(&sel.m[3], "apump", 5)); /* anchored */
    ASSERT_EQ(sel.m[4].op, QUERY_MATCH_NRE);
    query_selector_fini(&sel);
    parse_ok("{__name__=~\"(?i)CAMERA_.*\"}", &sel);
    ASSERT_TRUE(query_matcher_matches(&sel.m[0], "camera_fps", 10));
    query_selector_fini(&sel);
    parse_ok("{a=~\"x.*?y\"}", &sel); /* lazy quantifiers, as RE2 has them */
    ASSERT_TRUE(query_matcher_matches(&sel.m[0], "x\nzy", 4)); /* . matches newline */
    query_selector_fini(&sel);
}

TEST(selector_errors_name_the_position)
{
    parse_err("{}", "at least one non-empty matcher");
    parse_err("{a=\"\"}", "at least one non-empty matcher");
    parse_err("{a=~\".*\"}", "at least one non-empty matcher");
    parse_err("m{a=\"x\"", "1:8: parse error: unexpected end of input inside braces");
    parse_err("m{a}", "expected label matching operator");
    parse_err("m{a=b}", "expected string");
    parse_err("m{a=\"x}", "unterminated quoted string");
    parse_err("m{a=~\"(\"}", "invalid regular expression");
    parse_err("m{a=\"\\q\"}", "unknown escape sequence");
    parse_err("m x", "1:3: parse error: unexpected character: 'x'");
    parse_err("m{1a=\"x\"}", "unexpected character inside braces: '1'");
}

TEST(regex_backtracking_is_bounded)
{
    query_selector sel;
    char subject[4096];

    memset(subject, 'a', sizeof(subject) - 1);
    subject[sizeof(subject) - 1] = '\0';
    parse_ok("{a=~\"(a+)+b\"}", &sel);
    ASSERT_FALSE(query_matcher_matches(&sel.m[0], subject, strlen(subject)));
    query_selector_fini(&sel);
}

#define L(n, v)                                                                                    \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                         \
    }

typedef struct label_probe {
    const char *name, *value;
    bool found;
} label_probe;

static iocd_err probe_label(void *ud, const char *name, size_t name_len, const char *value,
                            size_t value_len)
{
    label_probe *p = ud;

    if (strlen(p->name) == name_len && memcmp(p->name, name, name_len) == 0 &&
        strlen(p->value) == value_len && memcmp(p->value, value, value_len) == 0)
        p->found = true;
    return IOCD_OK;
}

static bool has_label(store *st, uint64_t id, const char *name, const char *value)
{
    label_probe p = { name, value, false };

    return store_series_labels(st, id, probe_label, &p) == IOCD_OK && p.found;
}

TEST(select_uses_postings_and_filters)
{
    char errbuf[256], path[512];
    store *st = NULL;
    store_batch *b = NULL;
    store_reject why;
    query_selector sel;
    uint64_t *ids = NULL;
    size_t n;
    int64_t now = iocd_now_ms();
    iocd_label s1[] = { L("__name__", "fps"), L("ward", "w1"), L("device", "c1") };
    iocd_label s2[] = { L("__name__", "fps"), L("ward", "w2"), L("device", "c2") };
    iocd_label s3[] = { L("__name__", "fps"), L("device", "c3") };
    iocd_label s4[] = { L("__name__", "lux"), L("ward", "w1") };

    snprintf(path, sizeof(path), "%s/data", test_tmpdir());
    ASSERT_OK(store_open(path, NULL, &st, errbuf, sizeof(errbuf)));
    ASSERT_OK(store_batch_new(st, &b));
    ASSERT_OK(store_batch_add(b, s1, 3, now, 1, &why));
    ASSERT_OK(store_batch_add(b, s2, 3, now, 1, &why));
    ASSERT_OK(store_batch_add(b, s3, 2, now, 1, &why));
    ASSERT_OK(store_batch_add(b, s4, 2, now, 1, &why));
    ASSERT_OK(store_batch_commit(b, NULL));

    parse_ok("fps", &sel);
    ASSERT_OK(query_select(st, &sel, &ids, &n));
    ASSERT_EQ(n, 3);
    iocd_free(ids);
    query_selector_fini(&sel);

    parse_ok("fps{ward=\"\"}", &sel); /* series without the label */
    ASSERT_OK(query_select(st, &sel, &ids, &n));
    ASSERT_EQ(n, 1);
    ASSERT_TRUE(has_label(st, ids[0], "device", "c3"));
    iocd_free(ids);
    query_selector_fini(&sel);

    parse_ok("{ward=~\"w.\",__name__!=\"lux\"}", &sel);
    ASSERT_OK(query_select(st, &sel, &ids, &n));
    ASSERT_EQ(n, 2);
    ASSERT_LT(ids[0], ids[1]);
    ASSERT_TRUE(has_label(st, ids[0], "device", "c1"));
    ASSERT_TRUE(has_label(st, ids[1], "device", "c2"));
    ASSERT_EQ(ids[0] >> 6, ids[1] >> 6); /* one metric's series share an id group */
    iocd_free(ids);
    query_selector_fini(&sel);

    parse_ok("fps{ward!~\"w1|w2\"}", &sel);
    ASSERT_OK(query_select(st, &sel, &ids, &n));
    ASSERT_EQ(n, 1);
    iocd_free(ids);
    query_selector_fini(&sel);

    parse_ok("nothing{ward=\"w1\"}", &sel);
    ASSERT_OK(query_select(st, &sel, &ids, &n));
    ASSERT_EQ(n, 0);
    iocd_free(ids);
    query_selector_fini(&sel);
    store_close(st);
}
