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
            data[i][j].v = (double)(i * 100 + j) / 10.0;
        }
        ser[i] = (codec_series){ 640 + i * 1, data[i], 30 };
    }
    iocd_buf_init(&b, 0);
    ASSERT_OK(codec_block_encode(ser, 64, 3, &b));
    ASSERT_OK(codec_block_find(b.data, b.len, 640 + 17, 1 << 20, &got, &n));
    ASSERT_EQ(n, 30);
    ASSERT_DBL_EQ(got[29].v, (17 * 100 + 29) / 10.0, 0);
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
