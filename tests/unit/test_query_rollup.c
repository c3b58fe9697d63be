/* tests/unit/test_query_rollup.c - min, max, count, sum and avg _over_time give the same answer
 * with rollups on and off, over data written through the real store: several hours with gaps,
 * NaN, Inf, negative zero, staleness markers, rewrites of sealed timestamps (patch blocks) and
 * unsealed samples, for many windows, ranges, offsets, @ and step alignments. count, min and
 * max must be bit-identical; sum and avg may differ by float rounding only. */
#include "tests/unit/harness.h"

#include <math.h>

#include "query/query.h"

#define L(n, v)                                                                                    \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                         \
    }

#define MIN_MS  60000
#define HOUR_MS 3600000
#define SERIES  70 /* two id groups */

static double stale_marker(void)
{
    uint64_t bits = 0x7ff0000000000002ULL;
    double v;

    memcpy(&v, &bits, sizeof(v));
    return v;
}

/* Series i's value at sample k, or false for a gap. Series 5 has NaN and series 6 an Inf now
 * and then (their sums are computed raw); series 7 has negative and positive zeros. */
static bool value_at(size_t i, int64_t k, double *v)
{
    if (i % 4 == 1 && k % 720 >= 400 && k % 720 < 520) /* a gap of 20 minutes every 2 h */
        return false;
    if (i == 3 && k >= 600 && k < 1300) /* a gap of almost 2 h */
        return false;
    *v = 2.0 + (double)((k * 7 + (int64_t)i * 13) % 101) / 16.0 - (double)(i % 3);
    if (i == 5 && k % 89 == 0)
        *v = NAN;
    if (i == 6 && k % 250 == 7)
        *v = INFINITY;
    if (i == 7)
        *v = k % 3 == 0 ? -0.0 : k % 3 == 1 ? 0.0 : (double)(k % 5) - 2.0;
    return true;
}

static void add(store_batch *b, size_t i, int64_t t, double v)
{
    char dev[16];
    iocd_label l[] = { L("__name__", "water_pressure_bar"), { "device", 6, dev, 0 } };
    store_reject why;

    l[1].value_len = (size_t)snprintf(dev, sizeof(dev), "wp-%02zu", i);
    ASSERT_OK(store_batch_add(b, l, 2, t, v, &why));
}

static store *open_store(const store_config *cfg)
{
    char path[512], errbuf[256];
    store *st = NULL;

    snprintf(path, sizeof(path), "%s/data", test_tmpdir());
    if (store_open(path, cfg, &st, errbuf, sizeof(errbuf)) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "store_open: %s", errbuf);
    return st;
}

static bool same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof(a)) == 0;
}

static bool close_enough(double a, double b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    if (isinf(a) || isinf(b))
        return a == b;
    /* Relative, with a floor for results that cancel to about zero (the values are O(1)). */
    return fabs(a - b) <= 1e-9 * fmax(fmax(fabs(a), fabs(b)), 1.0);
}

typedef struct run_stats {
    size_t queries, points;
    uint64_t loaded_on, loaded_off;
} run_stats;

/* Evaluates q with rollups on and off and compares every point. */
static void compare(store *st, const char *q, int64_t start, int64_t end, int64_t step,
                    run_stats *rs)
{
    query_expr *e = NULL;
    query_result on, off;
    query_limits lim;
    char eb[512];
    bool exact = strncmp(q, "sum", 3) != 0 && strncmp(q, "avg", 3) != 0;
    size_t i, j;

    memset(&lim, 0, sizeof(lim));
    if (query_parse(q, &e, eb, sizeof(eb)) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "%s: %s", q, eb);
    lim.rollup_range_ms = -1;
    if (query_eval(st, &lim, e, start, end, step, &off, eb, sizeof(eb)) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "%s (raw): %s", q, eb);
    lim.rollup_range_ms = 0; /* the default: ranges of an hour or more */
    if (query_eval(st, &lim, e, start, end, step, &on, eb, sizeof(eb)) != IOCD_OK)
        test_fail_at(__FILE__, __LINE__, "%s (rollups): %s", q, eb);
    if (on.n != off.n)
        test_fail_at(__FILE__, __LINE__, "%s: %zu series with rollups, %zu raw", q, on.n, off.n);
    for (i = 0; i < on.n; i++) {
        const query_series *a = &on.series[i], *b = &off.series[i];
        if (a->labels_len != b->labels_len || memcmp(a->labels, b->labels, a->labels_len) != 0)
            test_fail_at(__FILE__, __LINE__, "%s: series %zu differ in labels", q, i);
        if (a->n != b->n)
            test_fail_at(__FILE__, __LINE__, "%s [%s]: %zu points with rollups, %zu raw", q,
                         a->labels + strlen(a->labels) + 1, a->n, b->n);
        for (j = 0; j < a->n; j++) {
            double x = a->points[j].v, y = b->points[j].v;
            if (a->points[j].t_ms != b->points[j].t_ms ||
                !(exact ? same_bits(x, y) : close_enough(x, y)))
                test_fail_at(__FILE__, __LINE__,
                             "%s [%s] at %lld: %.17g with rollups, %.17g raw (start %lld step "
                             "%lld)",
                             q, a->labels + strlen(a->labels) + 1, (long long)a->points[j].t_ms, x,
                             y, (long long)start, (long long)step);
        }
        rs->points += a->n;
    }
    rs->queries++;
    rs->loaded_on += on.samples_loaded;
    rs->loaded_off += off.samples_loaded;
    query_result_fini(&on);
    query_result_fini(&off);
    query_expr_free(e);
}

static const char *const funcs[] = { "min_over_time", "max_over_time", "count_over_time",
                                     "sum_over_time", "avg_over_time" };

/* Every function over a set of ranges, modifiers and step alignments. */
static void compare_all(store *st, int64_t t0, run_stats *rs)
{
    static const char *const shapes[] = {
        "[1h]", "[65m]", "[2h]", "[3h17s]", "[1h] offset 17m", "[2h] @", "[90m] offset -7m"
    };
    static const struct {
        int64_t start, end, step;
    } grid[] = {
        { 2 * HOUR_MS, 6 * HOUR_MS, HOUR_MS },             /* aligned hours: 1 h buckets */
        { 2 * HOUR_MS, 6 * HOUR_MS, 5 * MIN_MS },          /* aligned 5 minutes */
        { 90 * MIN_MS + 13000, 6 * HOUR_MS, 7 * MIN_MS },  /* nothing aligned */
        { 2 * HOUR_MS + 1, 5 * HOUR_MS, 60 * MIN_MS - 1 }, /* a millisecond off */
        { 3 * HOUR_MS - 1, 3 * HOUR_MS - 1, 0 },           /* instant, just before an hour */
        { 4 * HOUR_MS, 4 * HOUR_MS, 0 },                   /* instant, on an hour */
        { 5 * HOUR_MS + 36 * MIN_MS, 5 * HOUR_MS + 36 * MIN_MS, 0 }, /* the head */
    };
    size_t f, s, g;
    char q[160], shape[64];

    for (f = 0; f < IOCD_ARRAY_LEN(funcs); f++) {
        for (s = 0; s < IOCD_ARRAY_LEN(shapes); s++) {
            if (strchr(shapes[s], '@') != NULL) /* @ at a time between two hours */
                snprintf(shape, sizeof(shape), "[2h] @ %lld",
                         (long long)(t0 / 1000 + 3 * 3600 + 300));
            else
                snprintf(shape, sizeof(shape), "%s", shapes[s]);
            snprintf(q, sizeof(q), "%s(water_pressure_bar%s)", funcs[f], shape);
            for (g = 0; g < IOCD_ARRAY_LEN(grid); g++)
                compare(st, q, t0 + grid[g].start, t0 + grid[g].end, grid[g].step, rs);
        }
    }
}

TEST(over_time_functions_equal_with_rollups_on_and_off)
{
    store_config cfg = { .ooo_window_ms = 8 * HOUR_MS };
    int64_t t0 = (iocd_now_ms() - 7 * HOUR_MS) / HOUR_MS * HOUR_MS, k;
    store *st = open_store(&cfg);
    store_batch *b = NULL;
    run_stats rs;
    size_t i;

    memset(&rs, 0, sizeof(rs));
    /* Five and a half hours at 10 s. */
    for (i = 0; i < SERIES; i++) {
        ASSERT_OK(store_batch_new(st, &b));
        for (k = 0; k < 5 * 360 + 180; k++) {
            double v;
            if (value_at(i, k, &v))
                add(b, i, t0 + k * 10000, v);
            if (i % 5 == 2 && k % 500 == 250) /* a staleness marker, then a gap */
                add(b, i, t0 + k * 10000 + 5000, stale_marker());
            if (i % 5 == 2 && k % 500 > 250 && k % 500 < 300)
                k += 1;
        }
        ASSERT_OK(store_batch_commit(b, NULL));
    }
    store_close(st); /* seals everything */
    st = open_store(&cfg);
    /* Rewrites of sealed timestamps (a new minimum, a new maximum, a NaN, a staleness
     * marker), a late new timestamp and unsealed samples at the end. */
    ASSERT_OK(store_batch_new(st, &b));
    add(b, 0, t0 + 2 * HOUR_MS + 30 * MIN_MS, -100.0);
    add(b, 1, t0 + 3 * HOUR_MS + 10000, 1000.0);
    add(b, 2, t0 + 3 * HOUR_MS, NAN);
    add(b, 4, t0 + 4 * HOUR_MS - 10000, stale_marker());
    add(b, 8, t0 + 2 * HOUR_MS + 5, 7.0);
    add(b, 9, t0 + 4 * HOUR_MS, -0.0);
    for (i = 0; i < SERIES; i += 2)
        for (k = 0; k < 30; k++)
            add(b, i, t0 + 5 * HOUR_MS + 30 * MIN_MS + k * 10000, (double)k);
    ASSERT_OK(store_batch_commit(b, NULL));
    compare_all(st, t0, &rs);
    store_close(st); /* the rewrites go to patch blocks */
    st = open_store(&cfg);
    compare_all(st, t0, &rs);
    printf("%zu queries, %zu points; loaded %llu with rollups, %llu raw\n", rs.queries, rs.points,
           (unsigned long long)rs.loaded_on, (unsigned long long)rs.loaded_off);
    /* Rollups were used: far fewer samples were loaded with them. */
    ASSERT_GT(rs.points, 10000);
    ASSERT_LT(rs.loaded_on * 2, rs.loaded_off);
    store_close(st);
}
