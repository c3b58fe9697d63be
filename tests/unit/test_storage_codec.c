/* tests/unit/test_storage_codec.c - the on-disk sample codec: bit-exact round trips, blocks,
 * corrupt input, and the size it reaches on IOC-like data. */
#include "tests/unit/harness.h"

#include <math.h>
#include <stdint.h>

#include "storage/storage_int.h"

static uint64_t rng = 88172645463325252ULL;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void roundtrip(const iocd_sample *s, size_t n)
{
    iocd_buf b;
    iocd_sample *got = NULL;
    size_t m = 0, i;

    iocd_buf_init(&b, 0);
    ASSERT_OK(codec_stream_encode(s, n, &b));
    ASSERT_OK(codec_stream_decode((const uint8_t *)b.data, b.len, &got, &m));
    ASSERT_EQ(m, n);
    for (i = 0; i < n; i++) {
        ASSERT_EQ(got[i].t_ms, s[i].t_ms);
        if (memcmp(&got[i].v, &s[i].v, 8) != 0)
            test_fail_at(__FILE__, __LINE__, "value %zu: %.17g vs %.17g", i, got[i].v, s[i].v);
    }
    iocd_free(got);
    iocd_buf_fini(&b);
}

TEST(stream_roundtrips_special_values_bit_exact)
{
    uint64_t stale = 0x7ff0000000000002ULL, payload = 0x7ff8000000000abcULL;
    iocd_sample s[12];
    size_t i;

    for (i = 0; i < 12; i++)
        s[i].t_ms = 1700000000000LL + (int64_t)i * 10000;
    s[0].v = 2.347;
    memcpy(&s[1].v, &stale, 8);
    s[2].v = INFINITY;
    s[3].v = -INFINITY;
    s[4].v = -0.0;
    s[5].v = 0.30000000000000004;
    memcpy(&s[6].v, &payload, 8);
    s[7].v = 1e300;
    s[8].v = 4.9e-324;
    s[9].v = 1.7976931348623157e308;
    s[10].v = -123456789.125;
    s[11].v = 2.351;
    roundtrip(s, 12);
    roundtrip(s, 0);
    roundtrip(s, 1);
}

TEST(stream_roundtrips_random_and_irregular)
{
    iocd_sample s[500];
    size_t i;
    int round;

    for (round = 0; round < 50; round++) {
        for (i = 0; i < 500; i++) {
            uint64_t bits = next_rand();
            s[i].t_ms = (int64_t)(next_rand() % 2000000) - 1000000; /* any order, negative */
            if (round % 2 == 0)
                memcpy(&s[i].v, &bits, 8);
            else
                s[i].v = (double)(int64_t)(next_rand() % 100000) / 1000.0;
        }
        roundtrip(s, 500);
    }
}

/* The stream's predictor (the high half of the byte after the count, one byte below 128). */
static unsigned predictor_of(const iocd_sample *s, size_t n)
{
    iocd_buf b;
    unsigned p;

    iocd_buf_init(&b, 0);
    ASSERT_OK(codec_stream_encode(s, n, &b));
    ASSERT_LT(n, 128);
    p = (uint8_t)b.data[1] >> 4;
    iocd_buf_fini(&b);
    return p;
}

/* A slow signal with sensor noise is stored against the mean of the values before it, a
 * random walk or a counter against the previous value; either reads back bit-exact, with
 * escaped values (not decimals at the stream's exponent) anywhere, first ones included. */
TEST(streams_pick_a_predictor_and_read_back_exact)
{
    iocd_sample s[120];
    double walk = 500;
    size_t i;

    for (i = 0; i < 120; i++) {
        s[i].t_ms = 1700000000000LL + (int64_t)i * 10000;
        s[i].v =
            round((2.6 - 0.001 * (double)i + 0.01 * ((double)(next_rand() % 2001) / 1000 - 1)) *
                  1000) /
            1000;
    }
    ASSERT_GE(predictor_of(s, 120), 2);
    roundtrip(s, 120);
    s[0].v = NAN;
    s[1].v = INFINITY;
    s[40].v = 0.1 + 0.2;
    s[119].v = -0.0;
    ASSERT_GE(predictor_of(s, 120), 2);
    roundtrip(s, 120);
    for (i = 0; i < 120; i++) {
        walk += (double)(int64_t)(next_rand() % 21) - 10;
        s[i].v = walk;
    }
    ASSERT_EQ(predictor_of(s, 120), 0);
    roundtrip(s, 120);
    for (i = 0; i < 120; i++)
        s[i].v = (double)(1000000 + i * 12 + next_rand() % 3);
    ASSERT_EQ(predictor_of(s, 120), 0);
    roundtrip(s, 120);
    for (i = 0; i < 120; i++) /* large values: the predictor's sum must not overflow */
        s[i].v = (double)((int64_t)1 << 51) - (double)(next_rand() % 5) * ((i % 2) ? 1 : -1);
    roundtrip(s, 120);
}

TEST(block_find_and_corruption)
{
    codec_series ser[64];
    iocd_sample data[64][30];
    iocd_buf b;
    iocd_sample *got = NULL;
    size_t n = 0, i, j;

    for (i = 0; i < 64; i++) {
        for (j = 0; j < 30; j++) {
            data[i][j].t_ms = 1700000000000LL + (int64_t)j * 10000;
            /* odd series: noise around a level, stored against a mean of values before */
            data[i][j].v = i % 2 == 0 ? (double)(i * 100 + j) / 10.0
                                      : (double)(i * 100 + (int)(next_rand() % 41)) / 10.0;
        }
        ser[i] = (codec_series){ 640 + i * 1, data[i], 30 };
    }
    ASSERT_GE(predictor_of(data[3], 30), 1);
    iocd_buf_init(&b, 0);
    ASSERT_OK(codec_block_encode(ser, 64, 3, &b));
    ASSERT_OK(codec_block_find(b.data, b.len, 640 + 17, 1 << 20, &got, &n));
    ASSERT_EQ(n, 30);
    ASSERT_DBL_EQ(got[29].v, data[17][29].v, 0);
    iocd_free(got);
    ASSERT_ERR(codec_block_find(b.data, b.len, 5, 1 << 20, &got, &n), IOCD_ENOTFOUND);
    for (i = 0; i < b.len; i++) {
        char saved = b.data[i];
        iocd_err e;
        b.data[i] ^= 0x5a;
        e = codec_block_find(b.data, b.len, 640 + 3, 1 << 20, &got, &n);
        if (e == IOCD_OK)
            iocd_free(got);
        b.data[i] = saved;
        e = codec_block_find(b.data, i, 640 + 3, 1 << 20, &got, &n); /* truncated */
        if (e == IOCD_OK)
            iocd_free(got);
    }
    iocd_buf_fini(&b);
}

/* 64 IOC-like series (camera, lighting, traffic, water fields) x 180 samples at 10 s,
 * values rounded to sensor resolution with daily shape and noise. */
TEST(block_size_on_ioc_like_data)
{
    static iocd_sample data[64][180];
    codec_series ser[64];
    iocd_buf b;
    size_t i, j;
    double bps;

    for (i = 0; i < 64; i++) {
        for (j = 0; j < 180; j++) {
            double noise = (double)(next_rand() % 1000) / 1000.0 - 0.5, v;
            data[i][j].t_ms = 1700000000000LL + (int64_t)j * 10000;
            switch (i % 4) {
            case 0: /* water pressure, bar, 3 decimals */
                v = round((2.3 + 0.2 * sin((double)j / 60.0) + noise * 0.02) * 1000) / 1000;
                break;
            case 1: /* lux, 1 decimal */
                v = round((1000 + 30 * sin((double)j / 30.0) + noise * 5) * 10) / 10;
                break;
            case 2: /* vehicles per interval, integer */
                v = round(40 + 10 * sin((double)j / 20.0) + noise * 6);
                break;
            default: /* camera fps */
                v = (next_rand() % 200) == 0 ? 0 : 25;
                break;
            }
            data[i][j].v = v;
        }
        ser[i] = (codec_series){ i + 1, data[i], 180 };
    }
    iocd_buf_init(&b, 0);
    ASSERT_OK(codec_block_encode(ser, 64, 3, &b));
    bps = (double)b.len / (64.0 * 180.0);
    printf("    block: %zu bytes for %d samples = %.3f bytes/sample\n", b.len, 64 * 180, bps);
    ASSERT_TRUE(bps < 1.0);
    iocd_buf_fini(&b);
}

/* ---- Heads ----------------------------------------------------------------------------- */

/* Random puts, mostly in order, some late and some rewriting a timestamp: the head must
 * decode to exactly the reference (sorted, last write wins), and take_before must split it. */
TEST(head_matches_a_reference_model)
{
    static iocd_sample ref[4000];
    size_t n_ref = 0, i, n, k, round;

    for (round = 0; round < 20; round++) {
        store_head h;
        iocd_sample *got = NULL;
        int64_t t = 1700000000000LL;
        memset(&h, 0, sizeof(h));
        n_ref = 0;
        for (i = 0; i < 3000; i++) {
            uint64_t r = next_rand();
            int64_t ts;
            double v;
            if (r % 10 < 8) {
                t += 10000;
                ts = t;
            } else {
                ts = t - (int64_t)(next_rand() % 600) * 1000; /* late or a rewrite */
            }
            if (r % 97 == 0) {
                uint64_t bits = next_rand();
                memcpy(&v, &bits, 8);
            } else {
                v = (double)(int64_t)(next_rand() % 100000) / (r % 3 == 0 ? 1000.0 : 10.0);
            }
            ASSERT_OK(store_head_put(&h, ts, v));
            for (k = 0; k < n_ref && ref[k].t_ms != ts; k++)
                ;
            if (k == n_ref)
                ref[n_ref++] = (iocd_sample){ ts, v };
            else
                ref[k].v = v;
        }
        /* sort the reference */
        for (i = 1; i < n_ref; i++) {
            iocd_sample x = ref[i];
            k = i;
            while (k > 0 && ref[k - 1].t_ms > x.t_ms) {
                ref[k] = ref[k - 1];
                k--;
            }
            ref[k] = x;
        }
        ASSERT_OK(store_head_decode(&h, &got, &n));
        ASSERT_EQ(n, n_ref);
        for (i = 0; i < n; i++) {
            ASSERT_EQ(got[i].t_ms, ref[i].t_ms);
            ASSERT_TRUE(memcmp(&got[i].v, &ref[i].v, 8) == 0);
        }
        iocd_free(got);
        ASSERT_OK(store_head_take_before(&h, ref[n_ref / 2].t_ms, &got, &n));
        ASSERT_EQ(n, n_ref / 2);
        ASSERT_EQ(got[n - 1].t_ms, ref[n_ref / 2 - 1].t_ms);
        iocd_free(got);
        ASSERT_OK(store_head_decode(&h, &got, &n));
        ASSERT_EQ(n, n_ref - n_ref / 2);
        ASSERT_EQ(got[0].t_ms, ref[n_ref / 2].t_ms);
        iocd_free(got);
        ASSERT_LT(store_head_bytes(&h), n_ref * 16); /* smaller than raw samples */
        store_head_free(&h);
    }
}

/* ---- Versions: what older builds wrote is still read ------------------------------------ */

typedef struct got_series {
    iocd_sample s[64][40];
    size_t n[64];
} got_series;

static iocd_err keep_series(void *ud, uint64_t id, const iocd_sample *s, size_t n)
{
    got_series *g = ud;

    ASSERT_LT(id - 640, 64);
    ASSERT_LE(n, 40);
    memcpy(g->s[id - 640], s, n * sizeof(*s));
    g->n[id - 640] = n;
    return IOCD_OK;
}

TEST(blocks_of_both_versions_read_the_same)
{
    static iocd_sample data[8][40];
    static got_series got[2];
    codec_series ser[8];
    iocd_buf b[2];
    size_t i, j, v;
    double neg0 = -0.0;

    for (i = 0; i < 8; i++) {
        for (j = 0; j < 40; j++) {
            data[i][j].t_ms = 1700000000000LL + (int64_t)j * 10000 + (j % 7 == 3 ? 17 : 0);
            data[i][j].v = (double)((int64_t)(i * 37 + j * j) % 91) / 8.0 - 4.0;
        }
        ser[i] = (codec_series){ 640 + i * 5, data[i], 40 - i };
    }
    data[1][4].v = NAN;
    data[2][9].v = INFINITY;
    data[3][0].v = neg0;
    data[4][5].v = 0.1 + 0.2;
    for (v = 0; v < 2; v++) {
        iocd_buf_init(&b[v], 0);
        ASSERT_OK(v == 0 ? codec_block_encode(ser, 8, 3, &b[v])
                         : codec_block_encode_v1(ser, 8, 3, &b[v]));
        memset(&got[v], 0, sizeof(got[v]));
        ASSERT_OK(codec_block_each(b[v].data, b[v].len, 1 << 20, keep_series, &got[v]));
    }
    ASSERT_NE(b[0].len, b[1].len); /* two formats indeed */
    for (i = 0; i < 8; i++) {
        iocd_sample *one = NULL;
        size_t n = 0;
        for (v = 0; v < 2; v++) {
            ASSERT_EQ(got[v].n[i * 5], 40 - i);
            ASSERT_TRUE(memcmp(got[v].s[i * 5], data[i], (40 - i) * sizeof(iocd_sample)) == 0);
            ASSERT_OK(codec_block_find(b[v].data, b[v].len, 640 + i * 5, 1 << 20, &one, &n));
            ASSERT_EQ(n, 40 - i);
            ASSERT_TRUE(memcmp(one, data[i], n * sizeof(iocd_sample)) == 0);
            iocd_free(one);
        }
    }
    iocd_buf_fini(&b[0]);
    iocd_buf_fini(&b[1]);
}

/* Blocks opened once and their streams decoded in place (what the many-series read does): the
 * same samples as the definition, of either version; evenly spaced times (a run of zero
 * bytes, worked out instead of decoded) and times uneven anywhere in the run, at any length
 * around a word; a time filter; what the decoder says about order and NaN. */
TEST(block_streams_decode_in_place)
{
    static iocd_sample data[12][70], *out = NULL;
    static const size_t len[12] = { 0, 1, 2, 3, 9, 10, 11, 17, 18, 64, 65, 70 };
    codec_series ser[12];
    codec_block blk;
    iocd_buf b;
    size_t i, j, v, cap = 0, n;

    memset(&blk, 0, sizeof(blk));
    for (i = 0; i < 12; i++) {
        for (j = 0; j < len[i]; j++) {
            data[i][j].t_ms = 1700000000000LL + (int64_t)j * 15000;
            data[i][j].v = (double)(int64_t)(j * 7 + i) / 4.0;
        }
        if (i % 3 == 1 && len[i] > 2) /* one uneven time, the last (after the run's words) */
            data[i][len[i] - 1].t_ms += 3;
        if (i % 4 == 2 && len[i] > 5) /* or the fourth */
            data[i][3].t_ms -= 1000;
        if (i == 9)
            data[i][8].v = NAN;
        ser[i] = (codec_series){ 128 + i, data[i], len[i] };
    }
    for (v = 0; v < 2; v++) {
        iocd_buf_init(&b, 0);
        ASSERT_OK(v == 0 ? codec_block_encode(ser, 12, 3, &b)
                         : codec_block_encode_v1(ser, 12, 3, &b));
        ASSERT_OK(codec_block_open(&blk, b.data, b.len, 1 << 20));
        ASSERT_EQ(blk.n, 12);
        for (i = 0; i < 12; i++) {
            codec_append info = { true, false, false };
            int64_t lo = data[i][len[i] > 4 ? 2 : 0].t_ms, hi = INT64_MAX;
            ASSERT_EQ(blk.streams[i].id, 128 + i);
            ASSERT_EQ(codec_stream_count(&blk, i), len[i]);
            n = 0;
            ASSERT_OK(codec_stream_append(&blk, i, INT64_MIN, INT64_MAX, &out, &cap, &n, &info));
            ASSERT_EQ(n, len[i]);
            if (n > 0)
                ASSERT_TRUE(memcmp(out, data[i], n * sizeof(*out)) == 0);
            ASSERT_TRUE(info.ascending);
            ASSERT_EQ(info.nan, i == 9);
            /* Appended after a later sample, from the third on: not ascending any more. */
            out[0].t_ms = INT64_MAX - 1;
            n = 1;
            if (len[i] == 0)
                continue;
            ASSERT_OK(codec_stream_append(&blk, i, lo, hi, &out, &cap, &n, &info));
            ASSERT_EQ(n, 1 + len[i] - (len[i] > 4 ? 2 : 0));
            ASSERT_TRUE(memcmp(out + 1, data[i] + (len[i] > 4 ? 2 : 0), (n - 1) * sizeof(*out)) ==
                        0);
            ASSERT_FALSE(info.ascending);
        }
        iocd_buf_fini(&b);
    }
    codec_block_fini(&blk);
    iocd_free(out);
}

/* Streams of every shape appended after a sample already in the buffer, for windows before,
 * inside, across and after their times: the samples kept, and what the decoder says about
 * order, drops and NaN, equal a plain filter's. Shapes: evenly spaced (the run worked out from
 * the first two times), uneven but ascending, descending (two samples too: a binary search
 * over them loses one), negative times, a counter reset, a NaN, escaped values; ramps (stored
 * as deltas) and noise (against a mean of values before). */
TEST(stream_windows_match_a_filter)
{
    static iocd_sample data[9][40], *out = NULL;
    static const size_t len[9] = { 40, 40, 2, 40, 40, 40, 1, 2, 37 };
    static const int64_t step[9] = { 10000, 10000, -5000, 10000, 10000, 10000, 0, 7000, 15000 };
    codec_series ser[9];
    codec_block blk;
    iocd_buf b;
    size_t i, j, cap = 0, n;
    int lo_k, hi_k;

    memset(&blk, 0, sizeof(blk));
    for (i = 0; i < 9; i++) {
        int64_t t0 = i == 4 ? -200000 : 1700000000000LL;
        for (j = 0; j < len[i]; j++) {
            data[i][j].t_ms = t0 + (int64_t)j * step[i];
            data[i][j].v = i % 4 == 1 || i == 8 ? (double)(int64_t)(1000 + next_rand() % 9)
                                                : (double)(int64_t)(j * 3 + i);
        }
        ser[i] = (codec_series){ 64 + i, data[i], len[i] };
    }
    data[1][17].t_ms += 1;    /* uneven, still ascending */
    data[3][20].v = 1;        /* a counter reset */
    data[5][11].v = NAN;      /* a NaN (decoded from raw bytes) */
    data[5][30].v = 1e300;    /* an escaped value */
    data[8][36].t_ms -= 9000; /* the last time out of order */
    iocd_buf_init(&b, 0);
    ASSERT_OK(codec_block_encode(ser, 9, 3, &b));
    ASSERT_OK(codec_block_open(&blk, b.data, b.len, 1 << 20));
    for (i = 0; i < 9; i++) {
        for (lo_k = -2; lo_k <= 42; lo_k++) {
            for (hi_k = lo_k - 1; hi_k <= 44; hi_k += 3) {
                codec_append info = { true, false, false };
                int64_t base = data[i][0].t_ms, lo = base + (int64_t)lo_k * 10000 - 1,
                        hi = hi_k > 41 ? INT64_MAX : base + (int64_t)hi_k * 10000 + 1;
                int64_t last = lo_k == 7 ? INT64_MAX - 1 : INT64_MIN + 1;
                double last_v = hi_k % 2 != 0 ? 1e9 : -1e9;
                bool asc = true, drops = false, kept_nan = false, any_nan = false;
                size_t k = 1;
                out = iocd_realloc(out, 64 * sizeof(*out));
                cap = 64;
                out[0] = (iocd_sample){ last, last_v };
                n = 1;
                ASSERT_OK(codec_stream_append(&blk, i, lo, hi, &out, &cap, &n, &info));
                for (j = 0; j < len[i]; j++) {
                    const iocd_sample *d = &data[i][j];
                    any_nan |= isnan(d->v);
                    if (d->t_ms < lo || d->t_ms > hi)
                        continue;
                    ASSERT_LT(k, n);
                    ASSERT_EQ(out[k].t_ms, d->t_ms);
                    ASSERT_TRUE(memcmp(&out[k].v, &d->v, 8) == 0);
                    asc &= d->t_ms > last;
                    drops |= d->v < last_v;
                    kept_nan |= isnan(d->v);
                    last = d->t_ms;
                    last_v = d->v;
                    k++;
                }
                ASSERT_EQ(n, k);
                ASSERT_EQ(info.ascending, asc);
                ASSERT_EQ(info.drops, drops);
                ASSERT_TRUE(info.nan || !kept_nan); /* may also say so for one left out */
                ASSERT_TRUE(!info.nan || any_nan);
            }
        }
    }
    iocd_buf_fini(&b);
    codec_block_fini(&blk);
    iocd_free(out);
}

typedef struct got_rollups {
    store_rollup r[8][16];
    size_t n[8];
    size_t calls;
} got_rollups;

static iocd_err keep_rollups(void *ud, uint64_t id, const store_rollup *r, size_t n)
{
    got_rollups *g = ud;

    ASSERT_LT(id - 640, 8);
    ASSERT_LE(n, 16);
    memcpy(g->r[id - 640], r, n * sizeof(*r));
    g->n[id - 640] = n;
    g->calls++;
    return IOCD_OK;
}

static iocd_err any_rollups(void *ud, uint64_t id, const store_rollup *r, size_t n)
{
    (void)ud;
    (void)id;
    (void)r;
    (void)n;
    return IOCD_OK;
}

/* Rollup blocks: the current format's buckets equal a fold over the samples (the sum as the
 * exact decimal sum), and the first format (six streams per series) reads the same. */
TEST(rollup_blocks_fold_the_samples_in_both_formats)
{
    static iocd_sample data[4][90], aggs[4][6][16];
    codec_series ser[4], v1[4 * 6];
    store_rollup want[4][16];
    size_t nb[4] = { 0 }, i, j, a, f;
    got_rollups *got = iocd_calloc(1, sizeof(*got));
    iocd_buf b;
    uint64_t stale = 0x7ff0000000000002ULL;
    int64_t t0 = 1700000100000LL; /* not on a 5-minute boundary */

    for (i = 0; i < 4; i++) {
        for (j = 0; j < 90; j++) {
            data[i][j].t_ms = t0 + (int64_t)j * 20000;
            data[i][j].v = i == 3 ? (double)j * 1e14 : (double)((int64_t)(j * 13 + i) % 29) / 100.0;
        }
        ser[i] = (codec_series){ 640 + i, data[i], 90 };
    }
    data[1][7].v = NAN;
    data[1][8].v = -0.0;
    memcpy(&data[2][3].v, &stale, 8);
    for (i = 0; i < 4; i++) { /* the reference fold */
        for (j = 0; j < 90; j++) {
            int64_t bk = data[i][j].t_ms / 300000 * 300000;
            double x = data[i][j].v;
            store_rollup *r;
            if (memcmp(&x, &stale, 8) == 0)
                continue;
            if (nb[i] == 0 || want[i][nb[i] - 1].t_ms != bk)
                want[i][nb[i]++] = (store_rollup){ bk, x, x, 0, 0, x, 0 };
            r = &want[i][nb[i] - 1];
            if (x < r->min || isnan(r->min))
                r->min = x;
            if (x > r->max || isnan(r->max))
                r->max = x;
            r->sum += x;
            r->count++;
            r->last = x;
            r->last_t_ms = data[i][j].t_ms;
        }
    }
    for (f = 0; f < 2; f++) {
        iocd_buf_init(&b, 0);
        if (f == 0) {
            ASSERT_OK(codec_rollup_encode(ser, 4, 300000, 3, &b));
        } else { /* the first format, as an older build wrote it */
            for (i = 0; i < 4; i++) {
                for (a = 0; a < 6; a++) {
                    for (j = 0; j < nb[i]; j++) {
                        const store_rollup *r = &want[i][j];
                        double x[6] = { r->min,   r->max,  r->sum,
                                        r->count, r->last, (double)r->last_t_ms };
                        aggs[i][a][j] = (iocd_sample){ r->t_ms, x[a] };
                    }
                    v1[i * 6 + a] = (codec_series){ (640 + i) * 8 + a, aggs[i][a], nb[i] };
                }
            }
            ASSERT_OK(codec_block_encode_v1(v1, 4 * 6, 3, &b));
        }
        memset(got, 0, sizeof(*got));
        ASSERT_OK(codec_rollup_select(b.data, b.len, 1 << 20, 300000, NULL, 0, keep_rollups, got));
        ASSERT_EQ(got->calls, 4);
        for (i = 0; i < 4; i++) {
            ASSERT_EQ(got->n[i], nb[i]);
            for (j = 0; j < nb[i]; j++) {
                const store_rollup *g = &got->r[i][j], *w = &want[i][j];
                ASSERT_EQ(g->t_ms, w->t_ms);
                ASSERT_TRUE(memcmp(&g->min, &w->min, 8) == 0 || (isnan(g->min) && isnan(w->min)));
                ASSERT_TRUE(memcmp(&g->max, &w->max, 8) == 0 || (isnan(g->max) && isnan(w->max)));
                ASSERT_TRUE(memcmp(&g->last, &w->last, 8) == 0);
                ASSERT_DBL_EQ(g->count, w->count, 0);
                ASSERT_EQ(g->last_t_ms, w->last_t_ms);
                if (isnan(w->sum))
                    ASSERT_TRUE(isnan(g->sum));
                else
                    ASSERT_DBL_EQ(g->sum, w->sum, 1e-12 * (fabs(w->sum) + 1));
            }
        }
        /* One series asked for: only it. */
        memset(got, 0, sizeof(*got));
        ASSERT_OK(codec_rollup_select(b.data, b.len, 1 << 20, 300000, (uint64_t[]){ 642 }, 1,
                                      keep_rollups, got));
        ASSERT_EQ(got->calls, 1);
        ASSERT_EQ(got->n[2], nb[2]);
        /* Damaged or cut: an error, never a crash. */
        for (j = 0; j < b.len; j += 3) {
            char saved = b.data[j];
            b.data[j] ^= 0x21;
            (void)codec_rollup_select(b.data, b.len, 1 << 20, 300000, NULL, 0, any_rollups, NULL);
            b.data[j] = saved;
            (void)codec_rollup_select(b.data, j, 1 << 20, 300000, NULL, 0, any_rollups, NULL);
        }
        iocd_buf_fini(&b);
    }
    iocd_free(got);
}
