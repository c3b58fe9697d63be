/* tests/unit/test_query_promql.c - the PromQL engine on hand-built series: the parser (its
 * precedence and every kind of error), selectors with lookback and staleness, offset and
 * @, range functions, aggregations, binary operators and vector matching, subqueries,
 * limits. Expected values are worked out by hand from Prometheus 2.42's definitions. */
#include "tests/unit/harness.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query/query.h"

#define MIN 60000LL

static store *st;
static int64_t T0; /* the first sample's time: a whole hour, two hours ago */

/* With a read cache, as the daemon runs (every query after the first reads kept series;
 * test_storage_read holds reads with and without one to the same answers). */
static store *open_store(void)
{
    char path[512], errbuf[256];
    store_config cfg = { .query_cache_bytes = 16u << 20 };

    snprintf(path, sizeof(path), "%s/data", test_tmpdir());
    if (store_open(path, &cfg, &st, errbuf, sizeof(errbuf)) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "store_open: %s", errbuf);
    T0 = (iocd_now_ms() / 3600000 - 2) * 3600000;
    return st;
}

/* Loads one series: labels "name a=b c=d", values one per minute from T0 ("_" skips a
 * minute, "stale" writes a staleness marker). */
static void load(const char *labels, const char *values)
{
    char lbuf[512], vbuf[2048], *save = NULL, *tok;
    iocd_label l[16];
    size_t n = 0;
    store_batch *b = NULL;
    store_reject why;
    int64_t t = T0;

    snprintf(lbuf, sizeof(lbuf), "%s", labels);
    for (tok = strtok_r(lbuf, " ", &save); tok != NULL; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        if (n == 0 && eq == NULL) {
            l[n++] = (iocd_label){ "__name__", 8, tok, strlen(tok) };
            continue;
        }
        *eq = '\0';
        l[n++] = (iocd_label){ tok, strlen(tok), eq + 1, strlen(eq + 1) };
    }
    if (store_batch_new(st, &b) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "batch");
    snprintf(vbuf, sizeof(vbuf), "%s", values);
    for (tok = strtok_r(vbuf, " ", &save); tok != NULL;
         tok = strtok_r(NULL, " ", &save), t += MIN) {
        double v;
        if (strcmp(tok, "_") == 0)
            continue;
        if (strcmp(tok, "stale") == 0) {
            uint64_t bits = 0x7ff0000000000002ULL;
            memcpy(&v, &bits, sizeof(v));
        } else {
            v = strtod(tok, NULL);
        }
        if (store_batch_add(b, l, n, t, v, &why) != IOCD_OK)
            test_fail_at(__FILE__, __LINE__, "add %s: %s", labels, store_reject_name(why));
    }
    if (store_batch_commit(b, NULL) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "commit");
}

static void load_all(void)
{
    open_store();
    /* Counters with a reset at minute 6. */
    load("req_total job=api ward=a", "0 10 20 30 40 50 5 15 25 35 45");
    load("req_total job=api ward=b", "0 1 2 3 4 5 6 7 8 9 10");
    /* Gauges; ward c goes stale after minute 4. */
    load("pressure ward=a", "1 2 3 4 5 6 7 8 9 10 11");
    load("pressure ward=b", "4 4 4 4 4 4 4 4 4 4 4");
    load("pressure ward=c", "9 8 7 6 5 stale");
    load("pressure2 ward=a", "1 1 1 1 1 1 1 1 1 1 1");
    load("info ward=a name=Trung_Vuong", "1 1 1 1 1 1 1 1 1 1 1");
    load("info ward=b name=Quang_Trung", "1 1 1 1 1 1 1 1 1 1 1");
    /* A histogram. */
    load("lat_bucket le=0.1", "10 10 10 10 10 10 10 10 10 10 10");
    load("lat_bucket le=0.5", "50 50 50 50 50 50 50 50 50 50 50");
    load("lat_bucket le=1", "80 80 80 80 80 80 80 80 80 80 80");
    load("lat_bucket le=+Inf", "100 100 100 100 100 100 100 100 100 100 100");
}

static void fmt_labels(void *ud, const char *name, const char *value)
{
    iocd_buf *b = ud;

    iocd_buf_printf(b, "%s%s=\"%s\"", b->data[b->len - 1] == '{' ? "" : ",", name, value);
}

/* Renders a result canonically: "{a="b"} 1 | {..} 2", or "scalar 2", "string s". */
static char *render(const query_result *r)
{
    iocd_buf b;
    size_t i, j;

    iocd_buf_init(&b, 0);
    if (r->type == QUERY_SCALAR) {
        iocd_buf_puts(&b, "scalar ");
        iocd_buf_float(&b, r->scalar);
    } else if (r->type == QUERY_STRING) {
        iocd_buf_printf(&b, "string %s", r->str);
    }
    for (i = 0; i < r->n; i++) {
        if (i > 0)
            iocd_buf_puts(&b, " | ");
        iocd_buf_putc(&b, '{');
        query_labels_each(r->series[i].labels, r->series[i].labels_len, fmt_labels, &b);
        iocd_buf_putc(&b, '}');
        for (j = 0; j < r->series[i].n; j++) {
            iocd_buf_putc(&b, ' ');
            iocd_buf_float(&b, r->series[i].points[j].v);
            if (r->type == QUERY_MATRIX)
                iocd_buf_printf(&b, "@%lld",
                                (long long)((r->series[i].points[j].t_ms - T0) / 1000));
        }
    }
    if (b.data == NULL)
        iocd_buf_puts(&b, "");
    return iocd_buf_take(&b, NULL);
}

static iocd_err run(const char *q, int64_t start, int64_t end, int64_t step, char **out,
                    char *errbuf, size_t errlen)
{
    query_limits lim = { 0 };
    query_expr *e = NULL;
    query_result r;
    iocd_err err = query_parse(q, &e, errbuf, errlen);

    if (err != IOCD_OK)
        return err;
    err = query_eval(st, &lim, e, start, end, step, &r, errbuf, errlen);
    query_expr_free(e);
    if (err != IOCD_OK)
        return err;
    *out = render(&r);
    query_result_fini(&r);
    return IOCD_OK;
}

/* Instant query at T0 + min minutes. */
#define EXPECT_AT(min, q, want)                                                                    \
    do {                                                                                           \
        char *got_ = NULL, eb_[512] = "";                                                          \
        if (run(q, T0 + (int64_t)((min)*MIN), 0, 0, &got_, eb_, sizeof(eb_)) != IOCD_OK)           \
            test_fail_at(__FILE__, __LINE__, "%s: %s", q, eb_);                                    \
        if (strcmp(got_, want) != 0) {                                                             \
            test_fail_at(__FILE__, __LINE__, "%s\n   got:  %s\n   want: %s", q, got_, want);       \
        }                                                                                          \
        iocd_free(got_);                                                                           \
    } while (0)

#define EXPECT_RANGE(from, to, step_s, q, want)                                                    \
    do {                                                                                           \
        char *got_ = NULL, eb_[512] = "";                                                          \
        if (run(q, T0 + (from)*MIN, T0 + (to)*MIN, (step_s)*1000LL, &got_, eb_, sizeof(eb_)) !=    \
            IOCD_OK)                                                                               \
            test_fail_at(__FILE__, __LINE__, "%s: %s", q, eb_);                                    \
        if (strcmp(got_, want) != 0)                                                               \
            test_fail_at(__FILE__, __LINE__, "%s\n   got:  %s\n   want: %s", q, got_, want);       \
        iocd_free(got_);                                                                           \
    } while (0)

#define EXPECT_ERR(min, q, code, msg)                                                              \
    do {                                                                                           \
        char *got_ = NULL, eb_[512] = "";                                                          \
        iocd_err e_ = run(q, T0 + (int64_t)((min)*MIN), 0, 0, &got_, eb_, sizeof(eb_));            \
        iocd_free(got_);                                                                           \
        if (e_ != (code))                                                                          \
            test_fail_at(__FILE__, __LINE__, "%s: got %s (%s), want %s", q, iocd_strerror(e_),     \
                         eb_, iocd_strerror(code));                                                \
        ASSERT_STR_CONTAINS(eb_, msg);                                                             \
    } while (0)

/* ---- Parser ---------------------------------------------------------------------------------- */

static void parse_err(const char *q, const char *msg)
{
    query_expr *e = NULL;
    char eb[512] = "";

    if (query_parse(q, &e, eb, sizeof(eb)) != IOCD_EPARSE) {
        query_expr_free(e);
        test_fail_at(__FILE__, __LINE__, "%s: parsed, want an error containing \"%s\"", q, msg);
    }
    if (strstr(eb, msg) == NULL)
        test_fail_at(__FILE__, __LINE__, "%s: error \"%s\" lacks \"%s\"", q, eb, msg);
}

TEST(parser_precedence_and_associativity)
{
    open_store();
    EXPECT_AT(0, "1 + 2 * 3 - 4 / 2", "scalar 5");
    EXPECT_AT(0, "2 ^ 3 ^ 2", "scalar 512");
    EXPECT_AT(0, "-2 ^ 2", "scalar -4");
    EXPECT_AT(0, "(-2) ^ 2", "scalar 4");
    EXPECT_AT(0, "2 * -3", "scalar -6");
    EXPECT_AT(0, "10 % 3 + 2 atan2 0", "scalar 2.5707963267948966");
    EXPECT_AT(0, "1 < bool 2 == bool 1", "scalar 1");
    EXPECT_AT(0, "0x1F + 1e2 + .5", "scalar 131.5");
    EXPECT_AT(0, "Inf", "scalar +Inf");
    EXPECT_AT(0, "-inf", "scalar -Inf");
    EXPECT_AT(0, "NaN", "scalar NaN");
    EXPECT_AT(0, "\"a\\tb\"", "string a\tb");
    EXPECT_AT(0, "# a comment\n 1 + 1 # another", "scalar 2");
    EXPECT_AT(0, "pi() - 3.141592653589793", "scalar 0");
}

TEST(parser_errors_name_position_and_reason)
{
    parse_err("", "1:1: parse error: no expression found in input");
    parse_err("1 +", "unexpected end of input");
    parse_err("sum(", "unexpected end of input");
    parse_err("foo(1)", "unknown function with name \"foo\"");
    parse_err("rate(x)",
              "expected type range vector in call to function \"rate\", got instant vector");
    parse_err("abs(x[5m])",
              "expected type instant vector in call to function \"abs\", got range vector");
    parse_err("sum(x[5m])",
              "expected type instant vector in aggregation expression, got range vector");
    parse_err("topk(x, y)", "expected type scalar in aggregation parameter");
    parse_err("count_values(1, y)", "expected type string in aggregation parameter");
    parse_err("round()", "expected at least 1 argument(s) in call to \"round\", got 0");
    parse_err("round(x, 1, 2)", "expected at most 2 argument(s)");
    parse_err("abs(x, y)", "expected 1 argument(s) in call to \"abs\", got 2");
    parse_err("x[5m] + 1", "binary expression must contain only scalar and instant vector types");
    parse_err("1 == 1", "comparisons between scalars must use BOOL modifier");
    parse_err("x + bool y", "bool modifier can only be used on comparison operators");
    parse_err("1 and x", "set operator \"and\" not allowed in binary scalar expression");
    parse_err("x and on(a) group_left y", "no grouping allowed for \"and\" operation");
    parse_err("1 + on(a) x", "vector matching only allowed between instant vectors");
    parse_err("x * on(a) group_left(a) y",
              "label \"a\" must not occur in ON and GROUP clause at once");
    parse_err("(x)[5m]", "ranges only allowed for vector selectors");
    parse_err("x[5m][5m]", "ranges only allowed for vector selectors");
    parse_err("x[5m:1m][1m:]", "subquery is only allowed on instant vector");
    parse_err("x[5]", "bad duration");
    parse_err("x[0s]", "duration must be greater than 0");
    parse_err("x[5m:0s]", "zero step in subquery");
    parse_err("(x) offset 5m", "offset modifier must be preceded by");
    parse_err("x offset 5m offset 1m", "offset may not be set multiple times");
    parse_err("x @ 10 @ 20", "@ <timestamp> may not be set multiple times");
    parse_err("x @ foo", "in @ modifier");
    parse_err("x offset 5m [5m]", "no offset or @ modifiers allowed before range");
    parse_err("{}", "vector selector must contain at least one non-empty matcher");
    parse_err("x{a=~\".*\"} + {b=~\".*\"}",
              "vector selector must contain at least one non-empty matcher");
    parse_err("x{__name__=\"y\"}", "metric name must not be set twice");
    parse_err("x{a=~\"(\"}", "invalid regular expression");
    parse_err("x )", "unexpected \")\"");
    parse_err("sum by (a) (x) by (b)", "unexpected identifier \"by\"");
    parse_err("sum x", "aggregation needs parentheses");
    parse_err("-\"s\"",
              "unary expression only allowed on expressions of type scalar or instant vector");
    parse_err("x @ NaN", "timestamp out of bounds for @ modifier");
}

TEST(parser_survives_deep_nesting)
{
    char q[4000];
    size_t i;

    for (i = 0; i < 1500; i++)
        q[i] = '(';
    q[i++] = '1';
    q[i] = '\0';
    parse_err(q, "nested too deeply");
}

/* ---- Selectors, lookback, staleness, offset, @ ---------------------------------------------- */

TEST(selectors_lookback_and_staleness)
{
    load_all();
    EXPECT_AT(4, "pressure",
              "{__name__=\"pressure\",ward=\"a\"} 5 | {__name__=\"pressure\",ward=\"b\"} 4 | "
              "{__name__=\"pressure\",ward=\"c\"} 5");
    /* Minute 5 holds c's staleness marker: c is gone at once, not after 5 minutes. */
    EXPECT_AT(5, "pressure{ward=~\"b|c\"}", "{__name__=\"pressure\",ward=\"b\"} 4");
    /* Between samples the last one is used; five minutes after the last, nothing. */
    EXPECT_AT(10.5, "pressure{ward=\"a\"}", "{__name__=\"pressure\",ward=\"a\"} 11");
    EXPECT_AT(15, "pressure{ward=\"a\"}", "{__name__=\"pressure\",ward=\"a\"} 11"); /* [t-5m, t] */
    EXPECT_AT(15.1, "pressure{ward=\"a\"}", "");
    EXPECT_AT(3, "{__name__=~\"pres.*\",ward!~\"a|b\"}", "{__name__=\"pressure\",ward=\"c\"} 6");
    EXPECT_AT(3, "{__name__=\"info\",name=~\"(?i)trung_.*\"}",
              "{__name__=\"info\",name=\"Trung_Vuong\",ward=\"a\"} 1");
}

TEST(offset_and_at_modifiers)
{
    load_all();
    EXPECT_AT(10, "pressure{ward=\"a\"} offset 3m", "{__name__=\"pressure\",ward=\"a\"} 8");
    EXPECT_AT(7, "pressure{ward=\"a\"} offset -2m", "{__name__=\"pressure\",ward=\"a\"} 10");
    {
        char q[128];
        snprintf(q, sizeof(q), "pressure{ward=\"a\"} @ %lld", (long long)(T0 / 1000 + 120));
        EXPECT_AT(10, q, "{__name__=\"pressure\",ward=\"a\"} 3");
        EXPECT_RANGE(5, 7, 60, q, "{__name__=\"pressure\",ward=\"a\"} 3@300 3@360 3@420");
    }
    EXPECT_RANGE(2, 4, 60, "pressure{ward=\"a\"} @ start()",
                 "{__name__=\"pressure\",ward=\"a\"} 3@120 3@180 3@240");
    EXPECT_RANGE(2, 4, 60, "pressure{ward=\"a\"} @ end() offset 1m",
                 "{__name__=\"pressure\",ward=\"a\"} 4@120 4@180 4@240");
}

TEST(range_selector_instant_query_gives_matrix)
{
    load_all();
    EXPECT_AT(3, "pressure{ward=\"a\"}[2m]", "{__name__=\"pressure\",ward=\"a\"} 2@60 3@120 4@180");
    EXPECT_AT(6, "pressure{ward=\"c\"}[3m]", "{__name__=\"pressure\",ward=\"c\"} 6@180 5@240");
}

/* ---- Range functions ---------------------------------------------------------------------- */

TEST(rate_increase_delta_follow_prometheus_extrapolation)
{
    load_all();
    /* b rises 1 per minute; a window [4m, 8m] holds 5 samples exactly at its edges. */
    EXPECT_AT(8, "increase(req_total{ward=\"b\"}[4m])", "{job=\"api\",ward=\"b\"} 4");
    EXPECT_AT(8, "rate(req_total{ward=\"b\"}[4m])",
              "{job=\"api\",ward=\"b\"} 0.016666666666666666");
    /* a resets at minute 6 (50 -> 5): 40 -> 50, reset, 5 -> 25 is 10 + 5 + 20 = 35. */
    EXPECT_AT(8, "increase(req_total{ward=\"a\"}[4m])", "{job=\"api\",ward=\"a\"} 35");
    EXPECT_AT(8, "resets(req_total[10m])",
              "{job=\"api\",ward=\"a\"} 1 | {job=\"api\",ward=\"b\"} 0");
    EXPECT_AT(8, "delta(pressure{ward=\"a\"}[4m])", "{ward=\"a\"} 4");
    /* A window 30 s off the samples: extrapolated to its edges. [3.5m, 7.5m]: samples 4..7,
     * 3 intervals of 60 s, 30 s to each edge: 3 * (180 + 60) / 180 = 4. */
    EXPECT_AT(7.5, "increase(req_total{ward=\"b\"}[4m])", "{job=\"api\",ward=\"b\"} 4");
    /* A counter near zero is not extrapolated below zero: [0, 2.5m] from 0 -> 20 is 20 * ... */
    EXPECT_AT(2.5, "increase(req_total{ward=\"a\"}[3m])", "{job=\"api\",ward=\"a\"} 25");
    EXPECT_AT(8, "irate(req_total{ward=\"a\"}[3m])",
              "{job=\"api\",ward=\"a\"} 0.16666666666666666");
    EXPECT_AT(6, "irate(req_total{ward=\"a\"}[3m])",
              "{job=\"api\",ward=\"a\"} 0.08333333333333333");
    EXPECT_AT(6, "idelta(req_total{ward=\"a\"}[3m])", "{job=\"api\",ward=\"a\"} -45");
    EXPECT_AT(1, "rate(req_total{ward=\"a\"}[30s])", ""); /* one sample: no rate */
    /* Dropping __name__ may make two series equal; keeping it, or one name, may not. */
    EXPECT_ERR(3, "rate({__name__=~\"pressure2?\",ward=\"a\"}[3m])", IOCD_EINVAL,
               "vector cannot contain metrics with the same labelset");
    EXPECT_AT(3, "last_over_time({__name__=~\"pressure2?\",ward=\"a\"}[3m])",
              "{__name__=\"pressure\",ward=\"a\"} 4 | {__name__=\"pressure2\",ward=\"a\"} 1");
    EXPECT_AT(3, "delta(pressure[3m])", "{ward=\"a\"} 3 | {ward=\"b\"} 0 | {ward=\"c\"} -3");
}

/* Series sampled at the same times share the part of the extrapolation that depends only on
 * the times (kept per step); each still gets its own cut at the counter's zero and its own
 * resets. [3.5m, 7.5m] holds minutes 4..7: 180 s sampled, 30 s to each edge. */
TEST(rate_of_series_sampled_at_the_same_times)
{
    open_store();
    load("ctr k=a", "100 110 120 130 140 150 160 170 180 190 200");
    load("ctr k=b", "0 1 2 3 4 5 6 7 8 9 10");
    load("ctr k=c", "0 0 0 0 1 11 21 31 41 51 61");     /* 1 -> 31: zero is 6 s before */
    load("ctr k=d", "30 35 40 45 50 60 5 15 25 35 45"); /* a reset */
    EXPECT_AT(7.5, "increase(ctr[4m])",
              "{k=\"a\"} 40 | {k=\"b\"} 4 | {k=\"c\"} 36 | {k=\"d\"} 33.33333333333333");
    EXPECT_AT(7.5, "rate(ctr[4m])",
              "{k=\"a\"} 0.16666666666666666 | {k=\"b\"} 0.016666666666666663 | "
              "{k=\"c\"} 0.15 | {k=\"d\"} 0.13888888888888887");
    EXPECT_RANGE(7, 8, 30, "increase(ctr{k=~\"b|c\"}[4m])",
                 "{k=\"b\"} 4@420 4@450 4@480 | {k=\"c\"} 31@420 36@450 40@480");
}

/* Each series' windows are those of the series before it when they hold for its samples
 * (checked, then reused); series sampled at other times, fewer times, none in a window, or a
 * window ending at the same sample but starting at another, answer as they do alone. */
TEST(range_windows_of_series_sampled_at_other_times)
{
    static const char *const fns[] = {
        "rate",    "increase",       "delta", "max_over_time", "count_over_time",
        "changes", "last_over_time", "irate"
    };
    static const char *const keys[] = { "a", "b", "c", "d", "e", "f", "g", "h" };
    size_t f, k;

    open_store();
    load("gap k=a", "0 1 2 3 4 5 6 7 8 9 10 11 12");
    load("gap k=b", "0 _ 2 _ 4 _ 6 _ 8 _ 10 _ 12");
    load("gap k=c", "0 1 2 3 4 5 6 7 8 9 10 11 12");
    load("gap k=d", "_ _ _ _ _ 5 6 _ _ _ _ 11 12");
    load("gap k=e", "0 1 2 3 4 5 6 7 8 9 10 11 12");
    load("gap k=f", "0 1 2 3 4 5 6 7 8 9");
    load("gap k=g", "0 1 2 3 4 _ 6 7 8 9 10 11 12");
    load("gap k=h", "0 1 _ 3 4 5 6 7 8 9 10 11 12"); /* at 6 m, g's window ends where h's does */
    for (f = 0; f < IOCD_ARRAY_LEN(fns); f++) {
        char q[128], *all = NULL, eb[512] = "";
        iocd_buf want;
        iocd_buf_init(&want, 0);
        snprintf(q, sizeof(q), "%s(gap[2m])", fns[f]);
        ASSERT_OK(run(q, T0, T0 + 12 * MIN, 30000, &all, eb, sizeof(eb)));
        for (k = 0; k < IOCD_ARRAY_LEN(keys); k++) {
            char *one = NULL;
            snprintf(q, sizeof(q), "%s(gap{k=\"%s\"}[2m])", fns[f], keys[k]);
            ASSERT_OK(run(q, T0, T0 + 12 * MIN, 30000, &one, eb, sizeof(eb)));
            if (one[0] != '\0')
                iocd_buf_printf(&want, "%s%s", want.len > 0 ? " | " : "", one);
            iocd_free(one);
        }
        iocd_buf_putc(&want, '\0');
        if (strcmp(all, want.data) != 0)
            test_fail_at(__FILE__, __LINE__, "%s\n   together: %s\n   alone:    %s", fns[f], all,
                         want.data);
        iocd_free(all);
        iocd_buf_fini(&want);
    }
}

TEST(regression_functions)
{
    load_all();
    EXPECT_AT(10, "deriv(pressure{ward=\"a\"}[5m])", "{ward=\"a\"} 0.016666666666666666");
    EXPECT_AT(10, "predict_linear(pressure{ward=\"a\"}[5m], 600)", "{ward=\"a\"} 21");
    EXPECT_AT(10, "deriv(pressure{ward=\"b\"}[5m])", "{ward=\"b\"} 0");
    EXPECT_AT(10, "holt_winters(pressure{ward=\"b\"}[5m], 0.5, 0.5)", "{ward=\"b\"} 4");
    EXPECT_ERR(10, "holt_winters(pressure[5m], 1, 0.5)", IOCD_EINVAL, "invalid smoothing factor");
}

TEST(over_time_functions)
{
    load_all();
    EXPECT_AT(10, "avg_over_time(pressure{ward=\"a\"}[4m])", "{ward=\"a\"} 9");
    EXPECT_AT(10, "sum_over_time(pressure{ward=\"a\"}[4m])", "{ward=\"a\"} 45");
    EXPECT_AT(10, "min_over_time(pressure{ward=\"a\"}[4m])", "{ward=\"a\"} 7");
    EXPECT_AT(10, "max_over_time(pressure{ward=\"a\"}[4m])", "{ward=\"a\"} 11");
    EXPECT_AT(10, "count_over_time(pressure{ward=\"a\"}[4m])", "{ward=\"a\"} 5");
    EXPECT_AT(10, "last_over_time(pressure{ward=\"a\"}[4m])",
              "{__name__=\"pressure\",ward=\"a\"} 11");
    EXPECT_AT(10, "quantile_over_time(0.5, pressure{ward=\"a\"}[4m])", "{ward=\"a\"} 9");
    EXPECT_AT(10, "quantile_over_time(0.25, pressure{ward=\"a\"}[4m])", "{ward=\"a\"} 8");
    EXPECT_AT(10, "stdvar_over_time(pressure{ward=\"a\"}[4m])", "{ward=\"a\"} 2");
    EXPECT_AT(10, "stddev_over_time(pressure{ward=\"b\"}[4m])", "{ward=\"b\"} 0");
    EXPECT_AT(10, "changes(pressure{ward=\"a\"}[4m])", "{ward=\"a\"} 4");
    EXPECT_AT(10, "present_over_time(pressure{ward=\"c\"}[10m])", "{ward=\"c\"} 1");
    EXPECT_AT(10, "absent_over_time(pressure{ward=\"c\"}[3m])", "{ward=\"c\"} 1");
    EXPECT_AT(10, "absent_over_time(pressure{ward=\"a\"}[3m])", "");
}

/* ---- Instant functions ---------------------------------------------------------------------- */

TEST(math_and_label_functions)
{
    load_all();
    EXPECT_AT(2, "abs(-pressure{ward=\"a\"})", "{ward=\"a\"} 3");
    EXPECT_AT(2, "sqrt(pressure{ward=\"b\"}) + ln(pressure{ward=\"b\"} / 4)", "{ward=\"b\"} 2");
    EXPECT_AT(2, "round(pressure{ward=\"a\"} / 7, 0.25)", "{ward=\"a\"} 0.5");
    EXPECT_AT(2, "clamp(pressure, 3.5, 4.5)",
              "{ward=\"a\"} 3.5 | {ward=\"b\"} 4 | {ward=\"c\"} 4.5");
    EXPECT_AT(2, "clamp(pressure, 5, 4)", "");
    EXPECT_AT(2, "clamp_max(pressure{ward=\"c\"}, 1)", "{ward=\"c\"} 1");
    EXPECT_AT(2, "sgn(pressure{ward=\"a\"} - 5)", "{ward=\"a\"} -1");
    EXPECT_AT(0, "scalar(pressure{ward=\"b\"})", "scalar 4");
    EXPECT_AT(0, "scalar(pressure)", "scalar NaN");
    EXPECT_AT(0, "vector(7)", "{} 7");
    EXPECT_AT(2.5, "timestamp(pressure{ward=\"a\"}) - time()", "{ward=\"a\"} -30");
    EXPECT_AT(0, "label_replace(info{ward=\"a\"}, \"street\", \"$1 st\", \"name\", \"(.*)_.*\")",
              "{__name__=\"info\",name=\"Trung_Vuong\",street=\"Trung st\",ward=\"a\"} 1");
    EXPECT_AT(0, "label_replace(info{ward=\"a\"}, \"name\", \"\", \"ward\", \"a\")",
              "{__name__=\"info\",ward=\"a\"} 1");
    EXPECT_AT(0, "label_replace(info{ward=\"a\"}, \"x\", \"y\", \"ward\", \"nomatch\")",
              "{__name__=\"info\",name=\"Trung_Vuong\",ward=\"a\"} 1");
    EXPECT_AT(0, "label_join(info{ward=\"b\"}, \"id\", \"/\", \"ward\", \"name\", \"missing\")",
              "{__name__=\"info\",id=\"b/Quang_Trung/\",name=\"Quang_Trung\",ward=\"b\"} 1");
    EXPECT_ERR(0, "label_replace(info, \"1bad\", \"\", \"ward\", \".*\")", IOCD_EINVAL,
               "invalid destination label name in label_replace(): 1bad");
    EXPECT_AT(3, "sort_desc(pressure)",
              "{__name__=\"pressure\",ward=\"c\"} 6 | {__name__=\"pressure\",ward=\"a\"} 4 | "
              "{__name__=\"pressure\",ward=\"b\"} 4");
    EXPECT_AT(0, "absent(nothing{ward=\"a\",x=~\"y\"})", "{ward=\"a\"} 1");
    EXPECT_AT(0, "absent(pressure)", "");
    EXPECT_AT(0, "absent(sum(nothing))", "{} 1");
}

TEST(date_functions_use_utc)
{
    char q[160];

    open_store();
    /* 2026-02-28T23:59:00Z is 1772323140. */
    snprintf(q, sizeof(q),
             "year(vector(1772323140)) * 10000 + month(vector(1772323140)) * 100 + "
             "day_of_month(vector(1772323140))");
    EXPECT_AT(0, q, "{} 20260228");
    EXPECT_AT(0, "hour(vector(1772323140)) * 100 + minute(vector(1772323140))", "{} 2359");
    EXPECT_AT(0, "days_in_month(vector(1772323140))", "{} 28");
    EXPECT_AT(0, "days_in_month(vector(951782400))", "{} 29"); /* Feb 2000 */
    EXPECT_AT(0, "day_of_week(vector(1772323140))", "{} 6");
    EXPECT_AT(0, "day_of_year(vector(1772323140))", "{} 59");
}

TEST(histogram_quantile_interpolates_within_buckets)
{
    load_all();
    EXPECT_AT(0, "histogram_quantile(0.5, lat_bucket)", "{} 0.5");
    EXPECT_AT(0, "histogram_quantile(0.3, lat_bucket)", "{} 0.30000000000000004");
    EXPECT_AT(0, "histogram_quantile(0.9, lat_bucket)", "{} 1");
    EXPECT_AT(0, "histogram_quantile(0.05, lat_bucket)", "{} 0.05");
    EXPECT_AT(0, "histogram_quantile(2, lat_bucket)", "{} +Inf");
    EXPECT_AT(0, "histogram_quantile(0.5, lat_bucket{le!=\"+Inf\"})", "{} NaN");
}

/* ---- Aggregations
 * -------------------------------------------------------------------------------- */

TEST(aggregations_by_and_without)
{
    load_all();
    EXPECT_AT(3, "sum(pressure)", "{} 14");
    EXPECT_AT(3, "sum by (ward) (pressure)", "{ward=\"a\"} 4 | {ward=\"b\"} 4 | {ward=\"c\"} 6");
    EXPECT_AT(3, "avg without (ward) (pressure)", "{} 4.666666666666667");
    EXPECT_AT(3, "max(pressure) - min(pressure)", "{} 2");
    EXPECT_AT(3, "count(pressure)", "{} 3");
    EXPECT_AT(3, "group by (job) (req_total)", "{job=\"api\"} 1");
    EXPECT_AT(3, "stddev(pressure{ward!=\"c\"})", "{} 0");
    EXPECT_AT(3, "stdvar(pressure)", "{} 0.8888888888888887");
    EXPECT_AT(3, "quantile(0.5, pressure)", "{} 4");
    /* a and b tie at 4: Prometheus' heap evicts the first one pushed, so b stays. */
    EXPECT_AT(3, "topk(2, pressure)",
              "{__name__=\"pressure\",ward=\"c\"} 6 | {__name__=\"pressure\",ward=\"b\"} 4");
    EXPECT_AT(3, "bottomk(1, pressure)", "{__name__=\"pressure\",ward=\"a\"} 4");
    EXPECT_AT(3, "topk(0, pressure)", "");
    EXPECT_AT(3, "count_values(\"v\", pressure)", "{v=\"4\"} 2 | {v=\"6\"} 1");
    EXPECT_AT(3, "sum by (__name__) ({__name__=~\"pressure|info\"})",
              "{__name__=\"info\"} 2 | {__name__=\"pressure\"} 14");
    EXPECT_ERR(3, "count_values(\"1x\", pressure)", IOCD_EINVAL, "invalid label name");
    EXPECT_RANGE(3, 6, 60, "topk(1, pressure)",
                 "{__name__=\"pressure\",ward=\"a\"} 5@240 6@300 7@360 | "
                 "{__name__=\"pressure\",ward=\"c\"} 6@180"); /* ties: the first series */
}

/* ---- Binary operators
 * ----------------------------------------------------------------------------- */

TEST(binary_operators_and_matching)
{
    load_all();
    EXPECT_AT(3, "pressure > 4", "{__name__=\"pressure\",ward=\"c\"} 6");
    EXPECT_AT(3, "pressure > bool 4", "{ward=\"a\"} 0 | {ward=\"b\"} 0 | {ward=\"c\"} 1");
    EXPECT_AT(3, "5 < pressure", "{__name__=\"pressure\",ward=\"c\"} 6");
    EXPECT_AT(3, "pressure * 2 + 1", "{ward=\"a\"} 9 | {ward=\"b\"} 9 | {ward=\"c\"} 13");
    EXPECT_AT(3, "pressure - on(ward) req_total", "{ward=\"a\"} -26 | {ward=\"b\"} 1");
    EXPECT_AT(3, "pressure / ignoring(job) req_total",
              "{ward=\"a\"} 0.13333333333333333 | {ward=\"b\"} 1.3333333333333333");
    EXPECT_AT(3, "pressure == ignoring(job) req_total", "");
    EXPECT_AT(3, "pressure * on(ward) group_left(name) info",
              "{name=\"Quang_Trung\",ward=\"b\"} 4 | {name=\"Trung_Vuong\",ward=\"a\"} 4");
    EXPECT_AT(3, "info * on(ward) group_right(name) pressure",
              "{name=\"Quang_Trung\",ward=\"b\"} 4 | {name=\"Trung_Vuong\",ward=\"a\"} 4");
    EXPECT_AT(3, "pressure and on(ward) info",
              "{__name__=\"pressure\",ward=\"a\"} 4 | {__name__=\"pressure\",ward=\"b\"} 4");
    EXPECT_AT(3, "pressure unless on(ward) info", "{__name__=\"pressure\",ward=\"c\"} 6");
    EXPECT_AT(3, "pressure{ward=\"a\"} or pressure{ward=\"c\"} or pressure",
              "{__name__=\"pressure\",ward=\"a\"} 4 | "
              "{__name__=\"pressure\",ward=\"b\"} 4 | {__name__=\"pressure\",ward=\"c\"} 6");
    EXPECT_AT(3, "pressure atan2 on(ward) pressure",
              "{ward=\"a\"} 0.7853981633974483 | {ward=\"b\"} 0.7853981633974483 | "
              "{ward=\"c\"} 0.7853981633974483");
    EXPECT_AT(3, "pressure % 4 ^ 1", "{ward=\"a\"} 0 | {ward=\"b\"} 0 | {ward=\"c\"} 2");
    EXPECT_ERR(3, "pressure + on(job) req_total", IOCD_EINVAL,
               "found duplicate series for the match group {job=\"api\"} on the right hand-side");
    EXPECT_ERR(3, "req_total + on(job) group_left pressure", IOCD_EINVAL, "");
    EXPECT_ERR(3, "sum by (job) (req_total) / on(job) req_total", IOCD_EINVAL,
               "many-to-many matching not allowed");
    EXPECT_ERR(3, "pressure * on() group_left info", IOCD_EINVAL, "found duplicate series");
    EXPECT_ERR(3, "-{__name__=~\"pressure2?\",ward=\"a\"}", IOCD_EINVAL,
               "vector cannot contain metrics with the same labelset");
}

/* ---- Subqueries and range queries -------------------------------------------------------------
 */

TEST(subqueries_align_to_their_step)
{
    load_all();
    /* [4m:2m] at 10m: inner steps at 6m, 8m, 10m (multiples of 2m in [6m, 10m]). */
    EXPECT_AT(10, "max_over_time(pressure{ward=\"a\"}[4m:2m])", "{ward=\"a\"} 11");
    EXPECT_AT(10, "count_over_time(pressure{ward=\"a\"}[4m:2m])", "{ward=\"a\"} 3");
    EXPECT_AT(10, "sum_over_time(pressure{ward=\"a\"}[4m:2m])", "{ward=\"a\"} 27");
    EXPECT_AT(10, "max_over_time(rate(req_total{ward=\"b\"}[2m])[4m:1m])",
              "{job=\"api\",ward=\"b\"} 0.016666666666666666");
    EXPECT_AT(10, "sum_over_time(pressure{ward=\"a\"}[4m:2m] offset 2m)", "{ward=\"a\"} 21");
    EXPECT_AT(10, "pressure{ward=\"b\"}[3m:1m]",
              "{__name__=\"pressure\",ward=\"b\"} 4@420 4@480 4@540 4@600");
}

TEST(range_queries)
{
    load_all();
    EXPECT_RANGE(0, 3, 60, "pressure{ward=~\"a|c\"}",
                 "{__name__=\"pressure\",ward=\"a\"} 1@0 2@60 3@120 4@180 | "
                 "{__name__=\"pressure\",ward=\"c\"} 9@0 8@60 7@120 6@180");
    EXPECT_RANGE(4, 6, 60, "pressure{ward=\"c\"}", "{__name__=\"pressure\",ward=\"c\"} 5@240");
    EXPECT_RANGE(0, 2, 60, "1 + 1", "{} 2@0 2@60 2@120");
    EXPECT_RANGE(0, 2, 60, "time() - time()", "{} 0@0 0@60 0@120");
    EXPECT_RANGE(0, 1, 30, "sum(pressure)", "{} 14@0 14@30 14@60");
    {
        char *got = NULL, eb[256] = "";
        ASSERT_ERR(run("pressure[5m]", T0, T0 + MIN, 60000, &got, eb, sizeof(eb)), IOCD_EINVAL);
        ASSERT_STR_CONTAINS(eb, "invalid expression type \"range vector\" for range query");
    }
}

TEST(limits_refuse_clearly)
{
    query_limits lim = { 0 };
    query_expr *e = NULL;
    query_result r;
    char eb[512];

    load_all();
    lim.max_series = 2;
    ASSERT_OK(query_parse("sum(pressure)", &e, eb, sizeof(eb)));
    ASSERT_ERR(query_eval(st, &lim, e, T0 + 3 * MIN, 0, 0, &r, eb, sizeof(eb)), IOCD_ELIMIT);
    ASSERT_STR_CONTAINS(eb, "matches 3 series, over the limit of 2");
    lim.max_series = 0;
    lim.max_samples = 10;
    ASSERT_ERR(query_eval(st, &lim, e, T0, T0 + 10 * MIN, 1000, &r, eb, sizeof(eb)), IOCD_ELIMIT);
    ASSERT_STR_CONTAINS(eb, "too many samples");
    lim.max_samples = 0;
    lim.max_points = 5;
    ASSERT_ERR(query_eval(st, &lim, e, T0, T0 + 10 * MIN, 60000, &r, eb, sizeof(eb)), IOCD_ELIMIT);
    ASSERT_STR_CONTAINS(eb, "exceeded maximum resolution");
    query_expr_free(e);
}

/* A clock whose monotonic time jumps a second at every reading. */
static int64_t fake_mono;

static int64_t jump_mono(void *ud)
{
    (void)ud;
    fake_mono += 1000000000LL;
    return fake_mono;
}

static int64_t real_now(void *ud)
{
    (void)ud;
    return T0 + 10 * MIN;
}

TEST(timeout_stops_evaluation)
{
    iocd_clock clk = { real_now, jump_mono, NULL };
    query_limits lim = { 0 };
    query_expr *e = NULL;
    query_result r;
    char eb[512];

    load_all();
    ASSERT_OK(
        query_parse("sum(rate(req_total[5m])) + sum(pressure) * count(info)", &e, eb, sizeof(eb)));
    iocd_clock_set(&clk);
    lim.timeout_ms = 3000; /* three readings of the clock */
    ASSERT_ERR(query_eval(st, &lim, e, T0 + 5 * MIN, 0, 0, &r, eb, sizeof(eb)), IOCD_ETIMEDOUT);
    ASSERT_STR_CONTAINS(eb, "query timed out");
    lim.timeout_ms = 0; /* no deadline: the same query answers */
    ASSERT_OK(query_eval(st, &lim, e, T0 + 5 * MIN, 0, 0, &r, eb, sizeof(eb)));
    query_result_fini(&r);
    iocd_clock_set(NULL);
    query_expr_free(e);
}

/* Evaluates sum(big) and sum(rate(big[5m])) 20 times; *ud becomes 1 when every answer was
 * right. */
static void *concurrent_sums(void *ud)
{
    int *ok = ud, k;

    *ok = 1;
    for (k = 0; k < 20 && *ok; k++) {
        char *got = NULL, eb[512];
        if (run("sum(big)", T0 + 9 * MIN, 0, 0, &got, eb, sizeof(eb)) != IOCD_OK ||
            strcmp(got, "{} 4498500") != 0)
            *ok = 0;
        iocd_free(got);
        got = NULL;
        if (run("sum(rate(big[5m]))", T0 + 9 * MIN, 0, 0, &got, eb, sizeof(eb)) != IOCD_OK ||
            strcmp(got, "{} 0") != 0)
            *ok = 0;
        iocd_free(got);
    }
    return NULL;
}

TEST(large_selections_read_on_two_threads_give_the_same_answers)
{
    store_batch *b = NULL;
    store_reject why;
    char dev[16];
    size_t i;
    int k;

    open_store();
    /* 3000 series (over the parallel threshold), 10 minutes at 1 minute, value = device. */
    for (k = 0; k < 10; k++) {
        ASSERT_OK(store_batch_new(st, &b));
        for (i = 0; i < 3000; i++) {
            iocd_label l[2] = { { "__name__", 8, "big", 3 }, { "device", 6, dev, 0 } };
            snprintf(dev, sizeof(dev), "d%04zu", i);
            l[1].value_len = strlen(dev);
            ASSERT_OK(store_batch_add(b, l, 2, T0 + k * MIN, (double)i, &why));
        }
        ASSERT_OK(store_batch_commit(b, NULL));
    }
    EXPECT_AT(9, "count(big)", "{} 3000");
    EXPECT_AT(9, "sum(big)", "{} 4498500"); /* 0 + 1 + ... + 2999 */
    EXPECT_AT(9, "sum(count_over_time(big[5m]))", "{} 18000");
    EXPECT_AT(9, "big{device=\"d2999\"} + 0", "{device=\"d2999\"} 2999");
    EXPECT_RANGE(8, 9, 60, "max(big) - min(big)", "{} 2999@480 2999@540");
    {
        query_limits lim = { 0 };
        query_expr *e = NULL;
        query_result r;
        char eb[512];
        lim.max_samples = 40000; /* each half alone stays under it; together they do not */
        ASSERT_OK(query_parse("sum(big)", &e, eb, sizeof(eb)));
        ASSERT_ERR(query_eval(st, &lim, e, T0, T0 + 9 * MIN, 60000, &r, eb, sizeof(eb)),
                   IOCD_ELIMIT);
        query_expr_free(e);
    }
    {
        /* Four queries at once: one gets the helper, the others read alone or take it after;
         * a query whose offer was not taken withdraws it. */
        pthread_t t[4];
        int ok[4], i4;
        for (i4 = 0; i4 < 4; i4++)
            ASSERT_EQ(pthread_create(&t[i4], NULL, concurrent_sums, &ok[i4]), 0);
        for (i4 = 0; i4 < 4; i4++) {
            pthread_join(t[i4], NULL);
            ASSERT_EQ(ok[i4], 1);
        }
    }
    {
        /* 3000 groups over 55 steps: the accumulators are taken a run of steps at a time. */
        query_limits lim = { 0 };
        query_expr *e = NULL;
        query_result r;
        char eb[512];
        size_t j;
        ASSERT_OK(query_parse("sum(avg by (device) (big + timestamp(big)))", &e, eb, sizeof(eb)));
        ASSERT_OK(query_eval(st, &lim, e, T0, T0 + 9 * MIN, 10000, &r, eb, sizeof(eb)));
        ASSERT_EQ(r.n, 1);
        ASSERT_EQ(r.series[0].n, 55);
        for (j = 0; j < 55; j++) /* the sample of minute j / 6 at step j */
            ASSERT_DBL_EQ(r.series[0].points[j].v,
                          4498500.0 + 3000.0 * (double)(T0 / 1000 + 60 * (int64_t)(j / 6)), 0);
        query_result_fini(&r);
        query_expr_free(e);
    }
}
