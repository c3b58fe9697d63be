/* tests/unit/test_storage_read.c - the many-series read (store_read_spans) gives, within its
 * spans, exactly what store_read gives, with and without the read cache (big, and too small to
 * hold the data), on sealed blocks, patch blocks and heads; the cache never answers with what
 * a block held before a late write, nor for a deleted series' successor; entries stand for a
 * block's exact bytes. */
#include "tests/unit/storage_fixture.h"

#include <math.h>
#include <time.h>

#include "storage/storage_int.h"

/* Waits until the store holds more than `blocks` blocks (a patch block was written). */
static void wait_blocks(store *st, uint64_t blocks)
{
    store_stats s;
    int i;

    for (i = 0; i < 2000; i++) {
        ASSERT_OK(store_stats_get(st, &s));
        if (s.blocks > blocks)
            return;
        nanosleep(&(struct timespec){ 0, 5000000 }, NULL);
    }
    test_fail_at(__FILE__, __LINE__, "no patch block after %llu", (unsigned long long)blocks);
}

static uint64_t blocks_now(store *st)
{
    store_stats s;

    ASSERT_OK(store_stats_get(st, &s));
    return s.blocks;
}

static double stale_marker(void)
{
    uint64_t bits = 0x7ff0000000000002ULL;
    double v;

    memcpy(&v, &bits, sizeof(v));
    return v;
}

static bool same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof(a)) == 0;
}

/* Series i's value at sample k: decimals, integers, a NaN and a staleness marker now and then,
 * and numbers that are not short decimals (stored raw). */
static double value_at(size_t i, int64_t k)
{
    if (i % 7 == 0 && k % 23 == 5)
        return NAN;
    if (i % 11 == 0 && k % 31 == 7)
        return stale_marker();
    if (i % 13 == 0)
        return (double)(k * 3 + (int64_t)i) / 3.0;
    if (i % 2 == 0)
        return (double)(k + (int64_t)i * 100);
    return (double)((k * 7 + (int64_t)i) % 97) / 100.0 + 2.0;
}

/* 150 metric series (three id groups) over 20 periods of a minute at 10 s, some with uneven
 * times; sealed, then late samples for sealed periods (rewrites and new times) and unsealed
 * ones in the heads. */
static store *build(const store_config *cfg, int64_t *t0_out, uint64_t **ids_out,
                    uint64_t *blocks_out)
{
    store *st = open_at("data", cfg);
    store_batch *b = NULL;
    int64_t now = iocd_now_ms(), t0 = (now - 40 * MIN_MS) / MIN_MS * MIN_MS, k;
    char dev[32];
    size_t i, n;

    ASSERT_OK(store_batch_new(st, &b));
    for (i = 0; i < 150; i++) {
        iocd_label l[] = { L("__name__", "water_pressure_bar"), { "device", 6, dev, 0 } };
        l[1].value_len = (size_t)snprintf(dev, sizeof(dev), "wp-%03zu", i);
        for (k = 0; k < 120; k++) {
            int64_t t = t0 + k * 10000 + (i % 5 == 0 ? (k * 37) % 1000 : 0);
            add(b, l, 2, t, value_at(i, k));
        }
    }
    ASSERT_OK(store_batch_commit(b, NULL));
    wait_sealed(st, t0 + 19 * MIN_MS);
    *blocks_out = blocks_now(st);
    ASSERT_OK(store_batch_new(st, &b));
    for (i = 0; i < 150; i += 9) {
        iocd_label l[] = { L("__name__", "water_pressure_bar"), { "device", 6, dev, 0 } };
        l[1].value_len = (size_t)snprintf(dev, sizeof(dev), "wp-%03zu", i);
        add(b, l, 2, t0 + 30000, -1.5 - (double)i);      /* a rewrite of a sealed time */
        add(b, l, 2, t0 + 5 * MIN_MS + 5, 7.25);         /* a new time in a sealed period */
        add(b, l, 2, t0 + 21 * MIN_MS, (double)i + 0.5); /* unsealed */
        add(b, l, 2, t0 + 21 * MIN_MS + 10000, stale_marker());
    }
    ASSERT_OK(store_batch_commit(b, NULL));
    ASSERT_OK(store_series_all(st, ids_out, &n));
    ASSERT_EQ(n, 150);
    *t0_out = t0;
    return st;
}

typedef struct expect_ctx {
    store *st;
    const uint64_t *ids;
    const store_span *spans;
    size_t n_spans, calls;
} expect_ctx;

static bool in_spans(const expect_ctx *x, int64_t t)
{
    size_t i;

    for (i = 0; i < x->n_spans; i++)
        if (t >= x->spans[i].start_ms && t <= x->spans[i].end_ms)
            return true;
    return false;
}

/* Series i as store_read_spans gave it: every sample store_read gives within the spans is
 * there, anything else there is a sample store_read gives too, in order, and a NaN or a drop
 * in value is owned up to. */
static iocd_err expect_series(void *ud, size_t i, const store_samples *ss)
{
    expect_ctx *x = ud;
    iocd_sample *want = NULL;
    size_t n_want = 0, a, k = 0;
    bool nan = false, drops = false;

    ASSERT_EQ(i, x->calls);
    x->calls++;
    ASSERT_OK(store_read(x->st, x->ids[i], INT64_MIN, INT64_MAX, &want, &n_want));
    for (a = 0; a < ss->n; a++) {
        if (a > 0)
            ASSERT_LT(ss->s[a - 1].t_ms, ss->s[a].t_ms);
        while (k < n_want && want[k].t_ms < ss->s[a].t_ms) {
            if (in_spans(x, want[k].t_ms))
                test_fail_at(__FILE__, __LINE__, "series %zu: missing t=%lld", i,
                             (long long)want[k].t_ms);
            k++;
        }
        ASSERT_LT(k, n_want);
        ASSERT_EQ(want[k].t_ms, ss->s[a].t_ms);
        if (!same_bits(want[k].v, ss->s[a].v))
            test_fail_at(__FILE__, __LINE__, "series %zu t=%lld: %.17g vs %.17g", i,
                         (long long)want[k].t_ms, ss->s[a].v, want[k].v);
        nan |= isnan(ss->s[a].v);
        drops |= a > 0 && ss->s[a].v < ss->s[a - 1].v;
        k++;
    }
    for (; k < n_want; k++)
        if (in_spans(x, want[k].t_ms))
            test_fail_at(__FILE__, __LINE__, "series %zu: missing t=%lld at the end", i,
                         (long long)want[k].t_ms);
    if (nan)
        ASSERT_TRUE(ss->nan);
    if (drops) /* a value below the one before it (for rate, a counter reset) is owned up to */
        ASSERT_TRUE(ss->drops);
    iocd_free(want);
    return IOCD_OK;
}

static void check_reads(store *st, const uint64_t *ids, int64_t t0)
{
    const store_span all[] = { { INT64_MIN, INT64_MAX } };
    const store_span mid[] = { { t0 + 95000, t0 + 7 * MIN_MS } };
    const store_span steps[] = { { t0 + 18 * MIN_MS, INT64_MAX },
                                 { t0 + MIN_MS, t0 + MIN_MS + 30000 },
                                 { t0 + 9 * MIN_MS, t0 + 9 * MIN_MS + 5000 },
                                 { t0 + 29000, t0 + 31000 } };
    const store_span *sets[] = { all, mid, steps };
    const size_t n_sets[] = { 1, 1, 4 };
    size_t s, pass, from;

    for (pass = 0; pass < 2; pass++) /* the second pass finds what the first one kept */
        for (s = 0; s < 3; s++)
            for (from = 0; from < 150; from += 149) { /* all, and the last one alone */
                expect_ctx x = { st, ids + from, sets[s], n_sets[s], 0 };
                ASSERT_OK(store_read_spans(st, ids + from, 150 - from, sets[s], n_sets[s],
                                           expect_series, &x));
                ASSERT_EQ(x.calls, 150 - from);
            }
}

static void check_all_ways(uint64_t cache_bytes)
{
    store_config cfg = { .chunk_ms = MIN_MS,
                         .seal_grace_ms = 1000,
                         .query_cache_bytes = cache_bytes };
    uint64_t *ids = NULL, hits, misses, blocks;
    int64_t t0;
    store *st = build(&cfg, &t0, &ids, &blocks);
    size_t bytes;

    check_reads(st, ids, t0); /* the late samples in the heads, or in a patch already */
    wait_blocks(st, blocks);  /* the patch blocks of the late ones */
    check_reads(st, ids, t0);
    if (st->cache != NULL) {
        store_cache_stats(st->cache, &hits, &misses, &bytes);
        ASSERT_GT(misses, 0);
        ASSERT_LE(bytes, cache_bytes);
        if (cache_bytes >= (64u << 20))
            ASSERT_GT(hits, misses);
    }
    store_close(st);
    st = open_at("data", &cfg); /* everything sealed now, patches included */
    check_reads(st, ids, t0);
    iocd_free(ids);
    store_close(st);
}

TEST(read_spans_give_what_store_read_gives)
{
    check_all_ways(0);
}

TEST(read_spans_from_the_cache_give_what_store_read_gives)
{
    check_all_ways(64u << 20);
}

TEST(read_spans_with_a_cache_too_small_give_what_store_read_gives)
{
    check_all_ways(48 * 1024);
}

typedef struct one_series {
    iocd_sample s[256];
    size_t n;
} one_series;

static iocd_err keep_one(void *ud, size_t i, const store_samples *ss)
{
    one_series *o = ud;

    (void)i;
    ASSERT_LE(ss->n, 256);
    memcpy(o->s, ss->s, ss->n * sizeof(*ss->s));
    o->n = ss->n;
    return IOCD_OK;
}

static double value_of(const one_series *o, int64_t t)
{
    size_t i;

    for (i = 0; i < o->n; i++)
        if (o->s[i].t_ms == t)
            return o->s[i].v;
    return -999;
}

/* store_series_pairs gives "name\0value\0" pairs: they must read as want ("n=v;" each). */
static iocd_err expect_pairs(void *ud, size_t i, const char *pairs, size_t len)
{
    char got[256] = "";
    size_t k = 0, at = 0;

    (void)i;
    while (k < len) {
        const char *name = pairs + k, *value = name + strlen(name) + 1;
        at += (size_t)snprintf(got + at, sizeof(got) - at, "%s=%s;", name, value);
        k = (size_t)(value + strlen(value) + 1 - pairs);
    }
    ASSERT_STR_EQ(got, (const char *)ud);
    return IOCD_OK;
}

/* What a query sees after the cache has kept a series: a late rewrite of a sealed time (in the
 * head, then in a patch block of the same period), and a series deleted and written again
 * under the same labels (a new id, none of the old samples). */
TEST(read_cache_never_answers_with_older_samples)
{
    store_config cfg = { .chunk_ms = MIN_MS,
                         .seal_grace_ms = 1000,
                         .query_cache_bytes = 64u << 20 };
    store *st = open_at("data", &cfg);
    store_batch *b = NULL;
    int64_t t0 = (iocd_now_ms() - 30 * MIN_MS) / MIN_MS * MIN_MS, k;
    iocd_label l[] = { L("__name__", "pump_speed_rpm"), L("device", "p-1") };
    store_span span = { t0, t0 + 10 * MIN_MS };
    uint64_t *ids = NULL, *post = NULL, blocks, hits, misses, id;
    char none[] = "", mine[] = "__name__=pump_speed_rpm;device=p-1;";
    size_t n, bytes;
    one_series o;

    ASSERT_OK(store_batch_new(st, &b));
    for (k = 0; k < 60; k++)
        add(b, l, 2, t0 + k * 10000, 1000 + (double)k);
    ASSERT_OK(store_batch_commit(b, NULL));
    wait_sealed(st, t0 + 9 * MIN_MS);
    ASSERT_OK(store_series_all(st, &ids, &n));
    ASSERT_EQ(n, 1);
    id = ids[0];
    ASSERT_OK(store_read_spans(st, &id, 1, &span, 1, keep_one, &o));
    ASSERT_OK(store_read_spans(st, &id, 1, &span, 1, keep_one, &o));
    store_cache_stats(st->cache, &hits, &misses, &bytes);
    ASSERT_GT(hits, 0); /* the second read came from the cache */
    ASSERT_EQ(o.n, 60);
    ASSERT_DBL_EQ(value_of(&o, t0 + 20000), 1002, 0);
    /* A late rewrite: first in the head, then in a patch block beside the cached one. */
    blocks = blocks_now(st);
    ASSERT_OK(store_batch_new(st, &b));
    add(b, l, 2, t0 + 20000, -5);
    add(b, l, 2, t0 + 20001, -6);
    ASSERT_OK(store_batch_commit(b, NULL));
    ASSERT_OK(store_read_spans(st, &id, 1, &span, 1, keep_one, &o));
    ASSERT_EQ(o.n, 61);
    ASSERT_DBL_EQ(value_of(&o, t0 + 20000), -5, 0);
    wait_blocks(st, blocks);
    ASSERT_OK(store_read_spans(st, &id, 1, &span, 1, keep_one, &o));
    ASSERT_OK(store_read_spans(st, &id, 1, &span, 1, keep_one, &o));
    ASSERT_EQ(o.n, 61);
    ASSERT_DBL_EQ(value_of(&o, t0 + 20000), -5, 0);
    ASSERT_DBL_EQ(value_of(&o, t0 + 20001), -6, 0);
    ASSERT_DBL_EQ(value_of(&o, t0 + 30000), 1003, 0);
    /* Deleted, then written again: a new series that reads only its own samples. */
    ASSERT_OK(store_delete_series(st, &id, 1));
    ASSERT_OK(store_postings(st, "device", "p-1", &post, &n));
    ASSERT_EQ(n, 0);
    iocd_free(post);
    ASSERT_OK(store_batch_new(st, &b));
    add(b, l, 2, t0 + 20000, 42);
    ASSERT_OK(store_batch_commit(b, NULL));
    ASSERT_OK(store_postings(st, "device", "p-1", &post, &n));
    ASSERT_EQ(n, 1);
    ASSERT_NE(post[0], id);
    ASSERT_OK(store_read_spans(st, post, 1, &span, 1, keep_one, &o));
    ASSERT_EQ(o.n, 1);
    ASSERT_DBL_EQ(o.s[0].v, 42, 0);
    /* Labels: the deleted one has none, the new one its own. */
    ids[0] = id;
    ASSERT_OK(store_series_pairs(st, ids, 1, expect_pairs, none));
    ASSERT_OK(store_series_pairs(st, post, 1, expect_pairs, mine));
    iocd_free(post);
    iocd_free(ids);
    store_close(st);
}

/* An entry stands for a block's exact bytes: other bytes under the same group and period (a
 * block removed and another written in its place) find another entry, empty. */
TEST(read_cache_entries_are_found_by_the_block_bytes)
{
    store_cache *c = NULL;
    uint8_t a[300], b2[300];
    iocd_sample s[3] = { { 1000, 1.5 }, { 2000, 2.5 }, { 3000, 3.5 } }, *out = NULL;
    codec_append info = { true, false, false };
    size_t cap = 0, n = 0, room;
    store_span span = { 1500, 3000 };
    cache_block *e, *f;
    bool absent;
    int i;

    for (i = 0; i < 300; i++)
        a[i] = b2[i] = (uint8_t)(i * 7);
    b2[150] ^= 1;
    ASSERT_OK(store_cache_new(1 << 20, &c));
    e = store_cache_get(c, 5, 60000, a, sizeof(a));
    ASSERT_TRUE(e != NULL);
    room = store_cache_seg_bytes(3);
    ASSERT_TRUE(store_cache_reserve(c, room));
    ASSERT_TRUE(store_cache_put(c, e, 5 * 64 + 3, s, 3, &info, room) != NULL);
    store_cache_release(c, e);
    f = store_cache_get(c, 5, 60000, b2, sizeof(b2)); /* one bit differs */
    ASSERT_TRUE(f != NULL && f != e);
    ASSERT_TRUE(store_cache_seg(c, f, 5 * 64 + 3, &absent) == NULL);
    store_cache_release(c, f);
    f = store_cache_get(c, 5, 120000, a, sizeof(a)); /* another period */
    ASSERT_TRUE(f != NULL && f != e);
    store_cache_release(c, f);
    e = store_cache_get(c, 5, 60000, a, sizeof(a));
    ASSERT_OK(store_cache_expand(store_cache_seg(c, e, 5 * 64 + 3, &absent), &span, 1, &out, &cap,
                                 &n, &info));
    ASSERT_EQ(n, 2);
    ASSERT_EQ(out[0].t_ms, 2000);
    ASSERT_DBL_EQ(out[1].v, 3.5, 0);
    ASSERT_TRUE(info.ascending && !info.nan);
    store_cache_release(c, e);
    iocd_free(out);
    store_cache_free(c);
}
