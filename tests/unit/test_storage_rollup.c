/* tests/unit/test_storage_rollup.c - rollups stay what raw reads give: after late samples and
 * rewrites of sealed timestamps (patch blocks), across a restart, and, in the many-series
 * read, with unsealed samples in a bucket (left out, served raw); and through compactions of
 * spans, two of which may share one value. */
#include "tests/unit/storage_fixture.h"

#include <math.h>
#include <time.h>

#include <lmdb.h> /* to see how compacted spans are stored, and to mark a file as older */

#include "storage/storage.h"

#define HOUR 3600000

static double stale_marker(void)
{
    uint64_t bits = 0x7ff0000000000002ULL;
    double v;

    memcpy(&v, &bits, sizeof(v));
    return v;
}

static bool is_stale(double v)
{
    uint64_t bits;

    memcpy(&bits, &v, sizeof(bits));
    return bits == 0x7ff0000000000002ULL;
}

static bool same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof(a)) == 0;
}

/* The buckets a fold over the raw samples of series id gives, as min_over_time & co. would. */
static size_t raw_buckets(store *st, uint64_t id, int64_t res, int64_t start, int64_t end,
                          store_rollup *out, size_t cap)
{
    iocd_sample *s = NULL;
    size_t n = 0, i, k = 0;

    ASSERT_OK(store_read(st, id, start, end, &s, &n));
    for (i = 0; i < n; i++) {
        int64_t b = s[i].t_ms / res * res;
        double v = s[i].v;
        if (is_stale(v))
            continue;
        if (k == 0 || out[k - 1].t_ms != b) {
            ASSERT_LT(k, cap);
            out[k++] = (store_rollup){ b, v, v, 0, 0, v, s[i].t_ms };
        }
        if (v < out[k - 1].min || isnan(out[k - 1].min))
            out[k - 1].min = v;
        if (v > out[k - 1].max || isnan(out[k - 1].max))
            out[k - 1].max = v;
        out[k - 1].sum += v;
        out[k - 1].count++;
        out[k - 1].last = v;
        out[k - 1].last_t_ms = s[i].t_ms;
    }
    iocd_free(s);
    return k;
}

static void check_bucket(const store_rollup *got, const store_rollup *want)
{
    ASSERT_EQ(got->t_ms, want->t_ms);
    ASSERT_DBL_EQ(got->count, want->count, 0);
    if (!same_bits(got->min, want->min) || !same_bits(got->max, want->max))
        test_fail_at(__FILE__, __LINE__, "bucket %lld: min/max %.17g/%.17g, raw %.17g/%.17g",
                     (long long)got->t_ms, got->min, got->max, want->min, want->max);
    if (isnan(want->sum))
        ASSERT_TRUE(isnan(got->sum));
    else
        ASSERT_DBL_EQ(got->sum, want->sum, 1e-9 * (fabs(want->sum) + 1));
    ASSERT_TRUE(same_bits(got->last, want->last));
    ASSERT_EQ(got->last_t_ms, want->last_t_ms);
}

/* Every bucket of both resolutions over [start, end) equals the fold over raw reads. */
static void check_rollups(store *st, uint64_t id, int64_t start, int64_t end)
{
    static store_rollup want[512];
    int r;

    for (r = 0; r < 2; r++) {
        int64_t res = r == 0 ? STORE_ROLLUP_5M : STORE_ROLLUP_1H;
        store_rollup *got = NULL;
        size_t n_got = 0, n_want = raw_buckets(st, id, res, start, end - 1, want, 512), i;
        ASSERT_OK(store_read_rollup(st, id, res, start, end - 1, &got, &n_got));
        if (n_got != n_want)
            test_fail_at(__FILE__, __LINE__, "res %lld: %zu buckets, raw %zu (first %lld, %lld)",
                         (long long)res, n_got, n_want,
                         n_got ? (long long)(got[0].t_ms - start) : -1LL,
                         (long long)(want[0].t_ms - start));
        ASSERT_EQ(n_got, n_want);
        for (i = 0; i < n_got; i++)
            check_bucket(&got[i], &want[i]);
        iocd_free(got);
    }
}

static double value_at(int64_t k, size_t series)
{
    if (k % 97 == 13)
        return NAN;
    if (series == 1 && k % 53 == 0)
        return -0.0;
    return (double)((k * 7 + (int64_t)series * 3) % 41) / 4.0 - 3.0;
}

TEST(rollups_equal_raw_reads_after_sealed_timestamps_are_rewritten)
{
    store_config cfg = { .chunk_ms = 10 * MIN_MS, .seal_grace_ms = 1000 };
    store *st = open_at("data", &cfg);
    store_batch *b = NULL;
    int64_t t0 = (iocd_now_ms() - 3 * HOUR) / HOUR * HOUR, t;
    iocd_label l0[] = { L("__name__", "water_pressure_bar"), L("device", "wp-1") };
    iocd_label l1[] = { L("__name__", "water_pressure_bar"), L("device", "wp-2") };
    uint64_t *ids = NULL;
    size_t n;

    ASSERT_OK(store_batch_new(st, &b));
    for (t = t0; t < t0 + 70 * MIN_MS; t += 10000) {
        int64_t k = (t - t0) / 10000;
        add(b, l0, 2, t, value_at(k, 0));
        if (k % 60 != 59) /* gaps */
            add(b, l1, 2, t, value_at(k, 1));
    }
    add(b, l0, 2, t0 + 5000, stale_marker());
    ASSERT_OK(store_batch_commit(b, NULL));
    wait_sealed(st, t0 + HOUR);
    ASSERT_OK(store_series_all(st, &ids, &n));
    ASSERT_EQ(n, 2);
    check_rollups(st, ids[0], t0, t0 + HOUR);
    /* Late samples for sealed periods: rewrites (a smaller value, a NaN, a staleness marker,
     * a larger value twice) and a new timestamp. They go to patch blocks: by the late seal,
     * or at the latest by the final seal of the close below. */
    ASSERT_OK(store_batch_new(st, &b));
    add(b, l0, 2, t0 + 10000, -70.5);
    add(b, l0, 2, t0 + 20000, NAN);
    add(b, l0, 2, t0 + 30000, stale_marker());
    add(b, l0, 2, t0 + 25 * MIN_MS, 99.0);
    add(b, l0, 2, t0 + 25 * MIN_MS + 1, 1.25);
    add(b, l1, 2, t0 + 40 * MIN_MS, -0.0);
    ASSERT_OK(store_batch_commit(b, NULL));
    ASSERT_OK(store_batch_new(st, &b));
    add(b, l0, 2, t0 + 25 * MIN_MS, 98.0); /* a rewrite of a rewrite */
    ASSERT_OK(store_batch_commit(b, NULL));
    store_close(st);
    st = open_at("data", &cfg);
    check_rollups(st, ids[0], t0, t0 + 70 * MIN_MS);
    check_rollups(st, ids[1], t0, t0 + 70 * MIN_MS);
    /* Another patch after the restart, of a period patched already. */
    ASSERT_OK(store_batch_new(st, &b));
    add(b, l0, 2, t0 + 10000, 3.5);
    add(b, l1, 2, t0 + 40 * MIN_MS, 0.0);
    ASSERT_OK(store_batch_commit(b, NULL));
    store_close(st);
    st = open_at("data", &cfg);
    check_rollups(st, ids[0], t0, t0 + 70 * MIN_MS);
    check_rollups(st, ids[1], t0, t0 + 70 * MIN_MS);
    iocd_free(ids);
    store_close(st);
}

/* ---- Many series ------------------------------------------------------------------------ */

typedef struct many_seen {
    store *st;
    const uint64_t *ids;
    int64_t res, start, end;
    size_t calls, buckets, samples;
    bool head_every_3rd; /* series 0, 3, 6... have unsealed samples from t0 + 70m */
} many_seen;

static iocd_err many_check(void *ud, size_t i, const store_rollup *r, size_t n_r,
                           const iocd_sample *s, size_t n_s)
{
    many_seen *m = ud;
    static store_rollup want[512];
    size_t n_want = raw_buckets(m->st, m->ids[i], m->res, m->start, m->end, want, 512), a, k = 0;

    ASSERT_EQ(i, m->calls);
    m->calls++;
    for (a = 0; a < n_r; a++) {
        ASSERT_GE(r[a].t_ms, m->start);
        ASSERT_LE(r[a].t_ms + m->res - 1, m->end);
        while (k < n_want && want[k].t_ms < r[a].t_ms)
            k++;
        ASSERT_LT(k, n_want);
        check_bucket(&r[a], &want[k]);
    }
    for (a = 1; a < n_s; a++)
        ASSERT_LT(s[a - 1].t_ms, s[a].t_ms);
    m->buckets += n_r;
    m->samples += n_s;
    if (m->head_every_3rd && i % 3 == 0) {
        /* The second hour is left out; its samples are there, sealed ones and the head's. */
        bool sealed = false, unsealed = false;
        ASSERT_EQ(n_r, 1);
        for (a = 0; a < n_s; a++) {
            sealed |= s[a].t_ms == m->start + 65 * MIN_MS;
            unsealed |= s[a].t_ms == m->start + 70 * MIN_MS && s[a].v == 5.0;
        }
        ASSERT_TRUE(sealed && unsealed);
    } else if (m->head_every_3rd) {
        ASSERT_EQ(n_r, 2);
    }
    return IOCD_OK;
}

TEST(read_rollup_many_leaves_unsealed_buckets_to_raw_samples)
{
    store_config cfg = { .chunk_ms = 10 * MIN_MS, .seal_grace_ms = 1000 };
    store *st = open_at("data", &cfg);
    store_batch *b = NULL;
    int64_t t0 = (iocd_now_ms() - 3 * HOUR) / HOUR * HOUR, t;
    char dev[16];
    uint64_t *ids = NULL;
    size_t n, i;
    store_span spans[2];
    many_seen m;

    ASSERT_OK(store_batch_new(st, &b));
    for (i = 0; i < 70; i++) { /* two id groups */
        iocd_label l[] = { L("__name__", "camera_fps"), { "device", 6, dev, 0 } };
        l[1].value_len = (size_t)snprintf(dev, sizeof(dev), "c-%02zu", i);
        for (t = t0; t < t0 + 70 * MIN_MS; t += 30000)
            add(b, l, 2, t, value_at((t - t0) / 30000, i % 2));
    }
    ASSERT_OK(store_batch_commit(b, NULL));
    store_close(st); /* seals everything */
    st = open_at("data", &cfg);
    /* Unsealed samples in [t0 + 70m, t0 + 75m): the 1 h bucket from t0 + 60m has a sealed
     * part and a head part, so it must be left out. */
    ASSERT_OK(store_batch_new(st, &b));
    for (i = 0; i < 70; i += 3) {
        iocd_label l[] = { L("__name__", "camera_fps"), { "device", 6, dev, 0 } };
        l[1].value_len = (size_t)snprintf(dev, sizeof(dev), "c-%02zu", i);
        for (t = t0 + 70 * MIN_MS; t < t0 + 75 * MIN_MS; t += 30000)
            add(b, l, 2, t, 5.0);
    }
    ASSERT_OK(store_batch_commit(b, NULL));
    ASSERT_OK(store_series_all(st, &ids, &n));
    ASSERT_EQ(n, 70);
    spans[0] = (store_span){ t0 + 2 * HOUR - 1, t0 + 2 * HOUR }; /* past the data */
    spans[1] = (store_span){ t0 + 7 * MIN_MS, t0 + 9 * MIN_MS };
    memset(&m, 0, sizeof(m));
    m.st = st;
    m.ids = ids;
    m.res = STORE_ROLLUP_1H;
    m.start = t0;
    m.end = t0 + 2 * HOUR - 1;
    m.head_every_3rd = true;
    ASSERT_OK(store_read_rollup_many(st, ids, n, m.res, m.start, m.end, spans, 2, many_check, &m));
    ASSERT_EQ(m.calls, 70);
    ASSERT_EQ(m.buckets, 24 + 46 * 2);
    /* 5 m buckets of the head-free range, with raw samples asked for at the edges only. */
    memset(&m, 0, sizeof(m));
    m.st = st;
    m.ids = ids;
    m.res = STORE_ROLLUP_5M;
    m.start = t0 + 3 * MIN_MS;
    m.end = t0 + 62 * MIN_MS;
    spans[0] = (store_span){ t0 + 3 * MIN_MS, t0 + 5 * MIN_MS - 1 };
    spans[1] = (store_span){ t0 + 60 * MIN_MS, t0 + 62 * MIN_MS };
    ASSERT_OK(store_read_rollup_many(st, ids, n, m.res, m.start, m.end, spans, 2, many_check, &m));
    ASSERT_EQ(m.buckets, 70 * 11);
    ASSERT_GE(m.samples, 70 * 9); /* at least the edges' samples */
    ASSERT_ERR(store_read_rollup_many(st, ids, n, 60000, m.start, m.end, NULL, 0, many_check, &m),
               IOCD_EINVAL);
    iocd_free(ids);
    store_close(st);
}

/* ---- Compacted spans ------------------------------------------------------------------- */

#define SPAN_SERIES 70 /* two id groups */
#define SPAN_STEP   30000

/* Late writes of the test below: they win over what the model generates. */
static const struct {
    size_t series;
    int64_t dt; /* from t0 */
    double v;
} span_late[] = {
    { 69, 45 * MIN_MS, -70.5 },           /* rewrites a compacted timestamp */
    { 69, 41 * MIN_MS, NAN },             /* likewise, with a NaN */
    { 69, 50 * MIN_MS + 10000, 4.25 },    /* new, past the series' newest */
    { SPAN_SERIES, 5 * MIN_MS, 1.5 },     /* a new series backfilled into a compacted span */
    { SPAN_SERIES, 5 * MIN_MS + 1, 2.5 }, /* (its own group: ids follow the metric's) */
};

static bool span_late_on;
static int64_t span_lo = 0, span_hi = 3 * HOUR; /* the model's samples: dt in [lo, hi) */
static bool span_extra_on; /* a late sample for the second hour (the last test) */

/* What series i holds at t0 + dt (false: nothing). */
static bool span_model(size_t i, int64_t dt, double *v)
{
    size_t j;

    for (j = 0; span_late_on && j < IOCD_ARRAY_LEN(span_late); j++) {
        if (span_late[j].series == i && span_late[j].dt == dt) {
            *v = span_late[j].v;
            return true;
        }
    }
    if (span_extra_on && i == 0 && dt == HOUR + 55 * MIN_MS + 5000) {
        *v = 99.5;
        return true;
    }
    if (i >= SPAN_SERIES || dt % SPAN_STEP != 0 || dt < span_lo || dt >= span_hi)
        return false;
    if (i == 69 && dt >= 50 * MIN_MS)
        return false;
    *v = value_at(dt / SPAN_STEP, i % 2);
    if (i == 3 && dt == 20 * MIN_MS)
        *v = stale_marker();
    return true;
}

static void span_labels(iocd_label *l, char *dev, size_t i)
{
    l[0] = (iocd_label){ "__name__", 8, "water_level_m", 13 };
    l[1] = (iocd_label){ "device", 6, dev, (size_t)snprintf(dev, 16, "w-%02zu", i) };
}

/* Every series reads back exactly what the model holds, and its rollups fold its samples. */
static void span_verify(store *st, size_t n_series, int64_t sealed_hours)
{
    uint64_t *ids = NULL;
    size_t n, i, j, k;
    int64_t t0 = (iocd_now_ms() - 5 * HOUR) / HOUR * HOUR;

    ASSERT_OK(store_series_all(st, &ids, &n));
    ASSERT_EQ(n, n_series);
    for (i = 0; i < n; i++) {
        iocd_sample *s = NULL;
        size_t ns = 0;
        ASSERT_OK(store_read(st, ids[i], t0 - HOUR, t0 + 4 * HOUR, &s, &ns));
        for (j = 0, k = 0; k < ns; k++) {
            int64_t dt = s[k].t_ms - t0;
            double want;
            while (!span_model(i, dt, &want)) /* no sample of the model is skipped */
                ASSERT_TRUE(false);
            if (!same_bits(s[k].v, want))
                test_fail_at(__FILE__, __LINE__, "series %zu at %lld: %.17g, want %.17g", i,
                             (long long)dt, s[k].v, want);
            j++;
        }
        for (k = 0; k < (size_t)(4 * HOUR / SPAN_STEP); k++) { /* and none is missing */
            double want;
            if (span_model(i, (int64_t)k * SPAN_STEP, &want))
                j--;
        }
        for (k = 0; k < IOCD_ARRAY_LEN(span_late); k++) {
            double want;
            if (span_late_on && span_late[k].series == i && span_late[k].dt % SPAN_STEP != 0 &&
                span_model(i, span_late[k].dt, &want))
                j--;
        }
        if (span_extra_on && i == 0)
            j--; /* the one sample off the grid */
        ASSERT_EQ(j, 0);
        iocd_free(s);
        if (i < 2 || i >= 68)
            check_rollups(st, ids[i], t0, t0 + sealed_hours * HOUR);
    }
    iocd_free(ids);
}

static void print_problem(void *ud, const char *problem)
{
    (void)ud;
    fprintf(stderr, "check: %s\n", problem);
}

static void span_check_file_at(const char *dir)
{
    char errbuf[256];
    uint64_t problems = 99;

    ASSERT_OK(store_check(sub(dir), print_problem, NULL, &problems, errbuf, sizeof(errbuf)));
    ASSERT_EQ(problems, 0);
}

static void span_check_file(void)
{
    span_check_file_at("spans");
}

TEST(compacted_spans_keep_every_sample_and_rollup)
{
    store_config on = { .chunk_ms = 10 * MIN_MS,
                        .seal_grace_ms = 1000,
                        .ooo_window_ms = 10 * MIN_MS };
    store_config off = on;
    store *st;
    store_batch *b = NULL;
    store_stats stats;
    int64_t t0 = (iocd_now_ms() - 5 * HOUR) / HOUR * HOUR, dt;
    iocd_label l[2];
    char dev[16];
    size_t i, j;
    int tries;
    double v;

    off.block_span_ms = -1;
    span_late_on = false;
    span_extra_on = false;
    span_lo = 0;
    span_hi = 3 * HOUR;
    st = open_at("spans", &on);
    for (dt = 0; dt < 3 * HOUR; dt += SPAN_STEP) { /* in time order, as devices send */
        ASSERT_OK(store_batch_new(st, &b));
        for (i = 0; i < SPAN_SERIES; i++) {
            span_labels(l, dev, i);
            if (span_model(i, dt, &v))
                add(b, l, 2, t0 + dt, v);
        }
        ASSERT_OK(store_batch_commit(b, NULL));
    }
    /* The first two hours are finished (sealed, and the 10-minute out-of-order window past
     * them): the writer compacts them while running, one container (both id groups, their
     * blocks and rollups) per hour. */
    for (tries = 0; tries < 4000; tries++) {
        ASSERT_OK(store_stats_get(st, &stats));
        if (stats.span_blocks >= 2)
            break;
        nanosleep(&(struct timespec){ 0, 5000000 }, NULL);
    }
    ASSERT_EQ(stats.span_blocks, 2);
    span_verify(st, SPAN_SERIES, 2); /* the last period is not sealed yet */
    store_close(st);                 /* compacts the last hour too */
    st = open_at("spans", &off);
    ASSERT_OK(store_stats_get(st, &stats));
    ASSERT_EQ(stats.span_blocks, 3);
    ASSERT_EQ(stats.blocks, 3);
    span_verify(st, SPAN_SERIES, 3);
    /* Late samples for compacted spans land in chunk blocks on top of them (compaction is off
     * here, so they stay so), with the span's rollups rebuilt. */
    span_late_on = true;
    ASSERT_OK(store_batch_new(st, &b));
    for (j = 0; j < IOCD_ARRAY_LEN(span_late); j++) {
        span_labels(l, dev, span_late[j].series);
        add(b, l, 2, t0 + span_late[j].dt, span_late[j].v);
    }
    ASSERT_OK(store_batch_commit(b, NULL));
    span_verify(st, SPAN_SERIES + 1, 0); /* late samples in the head */
    store_close(st);
    st = open_at("spans", &off);
    ASSERT_OK(store_stats_get(st, &stats));
    ASSERT_GT(stats.blocks, stats.span_blocks);
    span_verify(st, SPAN_SERIES + 1, 3);
    store_close(st);
    span_check_file();
    /* Compaction on again: the patched span is compacted anew at the stop. */
    st = open_at("spans", &on);
    store_close(st);
    span_check_file();
    st = open_at("spans", &on);
    ASSERT_OK(store_stats_get(st, &stats));
    ASSERT_EQ(stats.blocks, stats.span_blocks);
    span_verify(st, SPAN_SERIES + 1, 3);
    store_close(st);
}

/* Opens the data file in dir (iocd closed) and begins a transaction on its database `name`. */
static MDB_txn *file_begin(const char *dir, bool write, const char *name, MDB_env **env,
                           MDB_dbi *dbi)
{
    char path[600];
    MDB_txn *txn = NULL;

    snprintf(path, sizeof(path), "%s/iocd.mdb", sub(dir));
    ASSERT_EQ(mdb_env_create(env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(*env, 32), 0);
    ASSERT_EQ(mdb_env_open(*env, path, MDB_NOSUBDIR | (write ? 0 : MDB_RDONLY), 0640), 0);
    ASSERT_EQ(mdb_txn_begin(*env, NULL, write ? 0 : MDB_RDONLY, &txn), 0);
    ASSERT_EQ(mdb_dbi_open(txn, name, 0, dbi), 0);
    return txn;
}

/* How the span database holds the file's compacted spans: values of one container, shared
 * values (under their owner's key), aliases (under the other keys of a shared value). With
 * drop, the shared values are deleted, leaving their aliases naming nothing. */
static void span_values_drop(const char *dir, int *single, int *shared, int *alias, bool drop)
{
    MDB_env *env = NULL;
    MDB_cursor *cur = NULL;
    MDB_dbi dbi;
    MDB_txn *txn = file_begin(dir, drop, "spans", &env, &dbi);
    MDB_val k, v;
    int rc;

    *single = *shared = *alias = 0;
    ASSERT_EQ(mdb_cursor_open(txn, dbi, &cur), 0);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint8_t version = *(const uint8_t *)v.mv_data;
        ASSERT_TRUE(version >= 1 && version <= 3);
        ASSERT_TRUE(version != 3 || v.mv_size == 3);
        *(version == 1 ? single : version == 2 ? shared : alias) += 1;
        if (drop && version == 2)
            ASSERT_EQ(mdb_cursor_del(cur, 0), 0);
    }
    ASSERT_EQ(rc, MDB_NOTFOUND);
    mdb_cursor_close(cur);
    if (drop)
        ASSERT_EQ(mdb_txn_commit(txn), 0);
    else
        mdb_txn_abort(txn);
    mdb_env_close(env);
}

static void span_values(const char *dir, int *single, int *shared, int *alias)
{
    span_values_drop(dir, single, shared, alias, false);
}

/* Sets the file's format marker (or, with marker NULL, checks it is `want`). */
static void span_marker(const char *dir, const char *marker, const char *want)
{
    MDB_env *env = NULL;
    MDB_dbi meta;
    MDB_txn *txn = file_begin(dir, marker != NULL, "meta", &env, &meta);
    MDB_val k = { 6, (void *)"format" }, v;

    if (marker != NULL) {
        v = (MDB_val){ strlen(marker), (void *)marker };
        ASSERT_EQ(mdb_put(txn, meta, &k, &v, 0), 0);
        ASSERT_EQ(mdb_txn_commit(txn), 0);
    } else {
        ASSERT_EQ(mdb_get(txn, meta, &k, &v), 0);
        ASSERT_EQ(v.mv_size, strlen(want));
        ASSERT_TRUE(memcmp(v.mv_data, want, v.mv_size) == 0);
        mdb_txn_abort(txn);
    }
    mdb_env_close(env);
}

static void span_write(store *st, int64_t t0, int64_t from, int64_t to)
{
    store_batch *b = NULL;
    iocd_label l[2];
    char dev[16];
    int64_t dt;
    size_t i;
    double v;

    for (dt = from; dt < to; dt += SPAN_STEP) {
        ASSERT_OK(store_batch_new(st, &b));
        for (i = 0; i < SPAN_SERIES; i++) {
            span_labels(l, dev, i);
            if (span_model(i, dt, &v))
                add(b, l, 2, t0 + dt, v);
        }
        ASSERT_OK(store_batch_commit(b, NULL));
    }
}

static void span_write_late(store *st, int64_t t0)
{
    store_batch *b = NULL;
    iocd_label l[2];
    char dev[16];
    size_t j;

    ASSERT_OK(store_batch_new(st, &b));
    for (j = 0; j < IOCD_ARRAY_LEN(span_late); j++) {
        span_labels(l, dev, span_late[j].series);
        add(b, l, 2, t0 + span_late[j].dt, span_late[j].v);
    }
    ASSERT_OK(store_batch_commit(b, NULL));
}

/* An hour of samples that straddles two clock hours, stopped right after: the stop compacts
 * both spans into one value (one LMDB value's page rounding, not two), and every sample and
 * rollup bucket reads back; samples added later to either span compact both again at a stop,
 * or, while running, that span alone, the other moving out as it is; a file of the format
 * before (iocd-store-5) opens and is upgraded. */
TEST(spans_split_by_a_stop_share_one_value)
{
    store_config on = { .chunk_ms = 10 * MIN_MS,
                        .seal_grace_ms = 1000,
                        .ooo_window_ms = 3 * HOUR }; /* nothing is compacted while running */
    store_config off = on, running = on;
    int64_t t0 = (iocd_now_ms() - 5 * HOUR) / HOUR * HOUR;
    int single, shared, alias, tries;
    store_stats stats;
    store *st;

    off.block_span_ms = -1;
    running.ooo_window_ms = 10 * MIN_MS;
    span_late_on = false;
    span_extra_on = false;
    span_lo = 30 * MIN_MS;
    span_hi = 90 * MIN_MS;
    st = open_at("split", &on);
    span_write(st, t0, span_lo, span_hi);
    store_close(st); /* compacts both hours */
    span_values("split", &single, &shared, &alias);
    ASSERT_EQ(single, 0);
    ASSERT_EQ(shared, 1);
    ASSERT_EQ(alias, 1);
    st = open_at("split", &off);
    ASSERT_OK(store_stats_get(st, &stats));
    ASSERT_EQ(stats.blocks, stats.span_blocks);
    span_verify(st, SPAN_SERIES, 2);
    store_close(st);
    span_check_file_at("split");
    /* A file of the format before reads as it is, and opens (upgraded). */
    span_marker("split", "iocd-store-5", NULL);
    span_check_file_at("split");
    st = open_at("split", &off);
    span_verify(st, SPAN_SERIES, 2);
    store_close(st);
    span_marker("split", NULL, "iocd-store-6");

    /* The rest of the second hour, and late samples and rewrites in the first: the stop
     * compacts the pair again, still in one value. */
    span_late_on = true;
    span_hi = 2 * HOUR;
    st = open_at("split", &on);
    span_write(st, t0, 90 * MIN_MS, span_hi);
    span_write_late(st, t0);
    store_close(st);
    span_values("split", &single, &shared, &alias);
    ASSERT_EQ(single, 0);
    ASSERT_EQ(shared, 1);
    ASSERT_EQ(alias, 1);
    st = open_at("split", &off);
    span_verify(st, SPAN_SERIES + 1, 2);
    store_close(st);
    span_check_file_at("split");

    /* While running: a late sample in the second hour of the pair, and the next hours; once
     * finished, the second hour is compacted alone and the first moves to a value of its
     * own (as it was: no second compaction of it while writes wait), the third alone. */
    span_extra_on = true;
    span_hi = 3 * HOUR + 20 * MIN_MS;
    st = open_at("split", &running);
    span_write(st, t0, HOUR + 55 * MIN_MS + 5000, HOUR + 55 * MIN_MS + 5001);
    span_write(st, t0, 2 * HOUR, span_hi);
    for (tries = 0; tries < 4000; tries++) {
        ASSERT_OK(store_stats_get(st, &stats));
        if (stats.span_blocks == 3 && stats.blocks == 5) /* and [3 h, 3 h 10 m) of 2 groups */
            break;
        nanosleep(&(struct timespec){ 0, 5000000 }, NULL);
    }
    ASSERT_EQ(stats.span_blocks, 3);
    ASSERT_EQ(stats.blocks, 5);
    span_verify(st, SPAN_SERIES + 1, 3);
    store_close(st);
    span_values("split", &single, &shared, &alias);
    ASSERT_EQ(single, 4); /* the pair apart, the third hour, and the fourth's start */
    ASSERT_EQ(shared, 0);
    ASSERT_EQ(alias, 0);
    st = open_at("split", &off);
    span_verify(st, SPAN_SERIES + 1, 3);
    store_close(st);
    span_check_file_at("split");
}

/* Retention drops a value two spans share only once its second span has expired too: until
 * then every sample of the second span reads back. */
TEST(a_shared_span_value_expires_with_its_second_span)
{
    store_config on = { .chunk_ms = 10 * MIN_MS, .seal_grace_ms = 1000, .ooo_window_ms = 3 * HOUR };
    store_config keep = on;
    int64_t t0 = (iocd_now_ms() - 5 * HOUR) / HOUR * HOUR;
    int single, shared, alias;
    uint64_t *ids = NULL;
    size_t n, i, k, total = 0;
    store *st;

    span_late_on = false;
    span_extra_on = false;
    span_lo = 30 * MIN_MS;
    span_hi = 90 * MIN_MS;
    st = open_at("expire", &on);
    span_write(st, t0, span_lo, span_hi);
    store_close(st);
    span_values("expire", &single, &shared, &alias);
    ASSERT_EQ(shared, 1);
    ASSERT_EQ(alias, 1);
    /* The first span expires (a stop's seal applies retention), the second does not. */
    keep.retention_ms = iocd_now_ms() - (t0 + 90 * MIN_MS);
    store_close(open_at("expire", &keep));
    span_values("expire", &single, &shared, &alias);
    ASSERT_EQ(shared, 1);
    ASSERT_EQ(alias, 1);
    st = open_at("expire", &on);
    ASSERT_OK(store_series_all(st, &ids, &n));
    ASSERT_EQ(n, SPAN_SERIES);
    for (i = 0; i < n; i++) {
        iocd_sample *s = NULL;
        size_t ns = 0, want = 0;
        double v;
        ASSERT_OK(store_read(st, ids[i], t0 + HOUR, t0 + 2 * HOUR - 1, &s, &ns));
        for (k = 0; k < (size_t)(HOUR / SPAN_STEP); k++)
            want += span_model(i, HOUR + (int64_t)k * SPAN_STEP, &v);
        ASSERT_EQ(ns, want);
        total += ns;
        iocd_free(s);
    }
    ASSERT_EQ(total, (SPAN_SERIES - 1) * 30 * MIN_MS / SPAN_STEP); /* series 69 ends earlier */
    iocd_free(ids);
    store_close(st);
    /* Both expired: the value and its alias go. */
    keep.retention_ms = iocd_now_ms() - (t0 + 2 * HOUR + 10 * MIN_MS);
    store_close(open_at("expire", &keep));
    span_values("expire", &single, &shared, &alias);
    ASSERT_EQ(single + shared + alias, 0);
}

#define QUAD_SERIES 300 /* five id groups: two containers of one quad */

static void quad_write(store *st, int64_t t0, int64_t from, int64_t to, size_t only)
{
    store_batch *b = NULL;
    char dev[16];
    iocd_label l[2] = { { "__name__", 8, "street_light_lux", 16 }, { "device", 6, dev, 0 } };
    int64_t dt;
    size_t i;

    for (dt = from; dt < to; dt += MIN_MS) {
        ASSERT_OK(store_batch_new(st, &b));
        for (i = 0; i < QUAD_SERIES; i++) {
            if (only < QUAD_SERIES && i != only)
                continue;
            l[1].value_len = (size_t)snprintf(dev, sizeof(dev), "sl-%03zu", i);
            add(b, l, 2, t0 + dt, (double)i * 1000 + (double)(dt / 1000));
        }
        ASSERT_OK(store_batch_commit(b, NULL));
    }
}

/* Every series holds a sample a minute in [from, to) and [2 h, third_to), and `late` (series
 * QUAD_SERIES - 1; 0: none). */
static void quad_verify(store *st, int64_t t0, int64_t from, int64_t to, int64_t third_to,
                        int64_t late)
{
    uint64_t *ids = NULL;
    size_t n, i, k;

    ASSERT_OK(store_series_all(st, &ids, &n));
    ASSERT_EQ(n, QUAD_SERIES);
    for (i = 0; i < n; i++) {
        iocd_sample *s = NULL;
        size_t ns = 0, want = (size_t)((to - from) / MIN_MS);
        if (third_to > 0)
            want += (size_t)((third_to - 2 * HOUR) / MIN_MS);
        ASSERT_OK(store_read(st, ids[i], t0 - HOUR, t0 + 4 * HOUR, &s, &ns));
        if (i == QUAD_SERIES - 1 && late != 0)
            want++;
        ASSERT_EQ(ns, want);
        for (k = 0; k < ns; k++) {
            int64_t dt = s[k].t_ms - t0;
            ASSERT_TRUE((dt >= from && dt < to && dt % MIN_MS == 0) ||
                        (dt >= 2 * HOUR && dt < third_to && dt % MIN_MS == 0) || dt == late);
            ASSERT_TRUE(s[k].v == (double)i * 1000 + (double)(dt / 1000));
        }
        iocd_free(s);
    }
    iocd_free(ids);
}

/* The stop shares one value among the containers of a quad in the span and the next; while
 * running, compacting one of them moves the others, as they are, to values of their own. */
TEST(stop_shares_a_value_among_a_quad_of_containers)
{
    store_config on = { .chunk_ms = 10 * MIN_MS, .seal_grace_ms = 1000, .ooo_window_ms = 3 * HOUR };
    store_config running = on;
    int64_t t0 = (iocd_now_ms() - 5 * HOUR) / HOUR * HOUR, late = HOUR + 50 * MIN_MS + 1000;
    int single, shared, alias, tries;
    store_stats stats;
    store *st;

    running.ooo_window_ms = 10 * MIN_MS;
    st = open_at("quad", &on);
    quad_write(st, t0, 30 * MIN_MS, 90 * MIN_MS, QUAD_SERIES);
    store_close(st);
    span_values("quad", &single, &shared, &alias);
    ASSERT_EQ(single, 0);
    ASSERT_EQ(shared, 1); /* two containers in two spans */
    ASSERT_EQ(alias, 3);
    st = open_at("quad", &on);
    quad_verify(st, t0, 30 * MIN_MS, 90 * MIN_MS, 0, 0);
    store_close(st);
    span_check_file_at("quad");

    st = open_at("quad", &running);
    quad_write(st, t0, late, late + 1, QUAD_SERIES - 1); /* in the second container */
    quad_write(st, t0, 2 * HOUR, 2 * HOUR + 20 * MIN_MS, QUAD_SERIES);
    for (tries = 0; tries < 4000; tries++) {
        ASSERT_OK(store_stats_get(st, &stats));
        if (stats.blocks == 4 + 5) /* the late block compacted; [2 h, 2 h 10 m) of 5 groups */
            break;
        nanosleep(&(struct timespec){ 0, 5000000 }, NULL);
    }
    ASSERT_EQ(stats.span_blocks, 4);
    ASSERT_EQ(stats.blocks, 9);
    quad_verify(st, t0, 30 * MIN_MS, 90 * MIN_MS, 2 * HOUR + 20 * MIN_MS, late);
    store_close(st);
    span_values("quad", &single, &shared, &alias);
    ASSERT_EQ(single, 4); /* apart */
    ASSERT_EQ(shared, 1); /* the third hour's two containers, at the stop */
    ASSERT_EQ(alias, 1);
    span_check_file_at("quad");
    st = open_at("quad", &on);
    quad_verify(st, t0, 30 * MIN_MS, 90 * MIN_MS, 2 * HOUR + 20 * MIN_MS, late);
    store_close(st);
    /* iocd check sees an alias whose value is gone. */
    span_values_drop("quad", &single, &shared, &alias, true);
    {
        char errbuf[256];
        uint64_t problems = 0;
        ASSERT_OK(store_check(sub("quad"), print_problem, NULL, &problems, errbuf, sizeof(errbuf)));
        ASSERT_EQ(problems, 1);
    }
}
