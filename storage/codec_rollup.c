/* storage/codec_rollup.c - the 5-minute and 1-hour rollup blocks: per series and bucket,
 * min, max, sum, count, last and the time of last, as columns of integers at the series'
 * decimal exponent (the block layout and zstd are codec.c's). */
#include "storage/codec_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- Rollup blocks ---------------------------------------------------------------------
 * Version 2 (written now): per series, varint nb, byte e (the exponent of the series'
 * samples, as in a stream), then seven columns of nb entries each:
 *   bucket times: first zigzag(t / res), then varint(t / res - previous - 1)
 *   varint count << 2 | 1 if min, max, last are raw | 2 if the sum is raw
 *   time of the last sample from the bucket's start, zigzag delta from the previous bucket's
 *   min: zigzag(min_m - previous non-raw min_m), or 8 raw bytes
 *   max, last: zigzag(max_m - min_m), zigzag(last_m - min_m), or 8 raw bytes each
 *   sum: zigzag(sum_m - count * min_m) (min_m 0 when raw), sum_m being the exact sum of the
 *        samples' mantissas; or 8 raw bytes (a sample that is no decimal at e)
 * so a bucket of steady sensor data is a few bytes before zstd, its sum is the exact
 * decimal sum. Version 1 (read only): six sample streams per series, virtual ids id * 8 + 0..5
 * (min, max, sum, count, last, last time) of (bucket start, value). */

#define ROLLUP_VERSION 2
#define ROLLUP_V1_AGGS 6
#define M_LIMIT        9007199254740992.0 /* 2^53: mantissas and sums beyond are raw */

static bool is_stale_nan(double v)
{
    uint64_t bits;

    memcpy(&bits, &v, 8);
    return bits == 0x7ff0000000000002ULL;
}

static int64_t bucket_of(int64_t t, int64_t res)
{
    return (t >= 0 ? t / res : (t - res + 1) / res) * res;
}

static iocd_err put_raw(iocd_buf *out, double v)
{
    return iocd_buf_append(out, &v, 8);
}

static iocd_err put_varint(iocd_buf *out, uint64_t v)
{
    uint8_t tmp[10];

    return iocd_buf_append(out, tmp, store_varint_put(tmp, v));
}

/* A bucket being encoded: its values, and as integers at the series' exponent. */
typedef struct bucket_enc {
    int64_t b, off, min_m, max_m, last_m;
    uint64_t count, sum_m;
    double min, max, sum, last;
    bool vals_raw, exact;
} bucket_enc;

/* Folds the samples into buckets (staleness markers left out; min and max fold as
 * Prometheus' min_over_time and max_over_time do); *n_out buckets in *out (allocated). */
static iocd_err fold_buckets(const iocd_sample *s, size_t n, int64_t res, int e, bucket_enc **out,
                             size_t *n_out)
{
    bucket_enc *bk = iocd_malloc((n + 1) * sizeof(*bk));
    size_t i, nb = 0;
    int64_t m;

    if (bk == NULL)
        return IOCD_ENOMEM;
    for (i = 0; i < n; i++) {
        double v = s[i].v;
        int64_t b = bucket_of(s[i].t_ms, res);
        bucket_enc *k;
        if (is_stale_nan(v))
            continue;
        if (nb == 0 || bk[nb - 1].b != b) {
            bk[nb] = (bucket_enc){ .b = b, .min = v, .max = v, .exact = true };
            nb++;
        }
        k = &bk[nb - 1];
        if (v < k->min || isnan(k->min))
            k->min = v;
        if (v > k->max || isnan(k->max))
            k->max = v;
        k->sum += v;
        k->count++;
        k->last = v;
        k->off = s[i].t_ms - b;
        if (k->exact && codec_decimal_at(v, e, &m))
            k->sum_m += (uint64_t)m;
        else
            k->exact = false;
        if (k->exact && fabs((double)(int64_t)k->sum_m) >= M_LIMIT)
            k->exact = false;
    }
    for (i = 0; i < nb; i++) {
        bucket_enc *k = &bk[i];
        k->vals_raw = !codec_decimal_at(k->min, e, &k->min_m) ||
                      !codec_decimal_at(k->max, e, &k->max_m) ||
                      !codec_decimal_at(k->last, e, &k->last_m);
        if (k->vals_raw)
            k->min_m = 0; /* what the sum is taken relative to */
    }
    *out = bk;
    *n_out = nb;
    return IOCD_OK;
}

/* One series' buckets at resolution res, column after column (see above). */
static iocd_err rollup_payload(const codec_series *cs, int64_t res, iocd_buf *out)
{
    bucket_enc *bk = NULL;
    size_t nb = 0, i;
    int e = codec_choose_e(cs->s, cs->n), col;
    int64_t prev;
    iocd_err err = fold_buckets(cs->s, cs->n, res, e, &bk, &nb);

    if (err == IOCD_OK)
        err = put_varint(out, nb);
    if (err == IOCD_OK)
        err = iocd_buf_append(out, &(uint8_t){ (uint8_t)e }, 1);
    for (col = 0; col < 7 && err == IOCD_OK; col++) {
        prev = 0;
        for (i = 0; i < nb && err == IOCD_OK; i++) {
            const bucket_enc *k = &bk[i];
            switch (col) {
            case 0: /* bucket times */
                err = put_varint(out, i == 0 ? codec_zigzag(k->b / res)
                                             : (uint64_t)(k->b / res - bk[i - 1].b / res - 1));
                break;
            case 1: /* count and which values are raw */
                err =
                    put_varint(out, k->count << 2 | (k->vals_raw ? 1u : 0u) | (k->exact ? 0u : 2u));
                break;
            case 2: /* time of the last sample, from the bucket's start */
                err = put_varint(out, codec_zigzag((int64_t)((uint64_t)k->off - (uint64_t)prev)));
                prev = k->off;
                break;
            case 3: /* min */
                if (k->vals_raw) {
                    err = put_raw(out, k->min);
                } else {
                    err = put_varint(out,
                                     codec_zigzag((int64_t)((uint64_t)k->min_m - (uint64_t)prev)));
                    prev = k->min_m;
                }
                break;
            case 4: /* max */
                err = k->vals_raw ? put_raw(out, k->max)
                                  : put_varint(out, codec_zigzag((int64_t)((uint64_t)k->max_m -
                                                                           (uint64_t)k->min_m)));
                break;
            case 5: /* last */
                err = k->vals_raw ? put_raw(out, k->last)
                                  : put_varint(out, codec_zigzag((int64_t)((uint64_t)k->last_m -
                                                                           (uint64_t)k->min_m)));
                break;
            default: /* sum */
                err = k->exact
                          ? put_varint(out, codec_zigzag((int64_t)(k->sum_m -
                                                                   k->count * (uint64_t)k->min_m)))
                          : put_raw(out, k->sum);
                break;
            }
        }
    }
    iocd_free(bk);
    return err;
}

iocd_err codec_rollup_encode(const codec_series *list, size_t n, int64_t res_ms, int level,
                             iocd_buf *out)
{
    if (res_ms <= 0)
        return IOCD_EINVAL;
    return codec_block_encode_v(list, n, level, ROLLUP_VERSION, rollup_payload, res_ms, out);
}

/* Reading: the wanted series' buckets (all when ids is NULL), decoded into one buffer. */
typedef struct rollup_ctx {
    const uint64_t *ids;
    size_t n;
    int64_t res;
    int version;
    codec_rollup_fn fn;
    void *ud;
    store_rollup *r;
    uint64_t *flags, *counts, *mins; /* per bucket, while decoding the current format */
    size_t cap;
    /* version 1: the streams of the series being collected */
    uint64_t cur;
    unsigned seen;
    iocd_sample *agg[ROLLUP_V1_AGGS];
    size_t agg_n[ROLLUP_V1_AGGS], agg_cap[ROLLUP_V1_AGGS];
} rollup_ctx;

static bool rollup_wanted(const rollup_ctx *c, uint64_t id)
{
    return c->ids == NULL || store_id_find(c->ids, c->n, id) < c->n;
}

static iocd_err rollup_grow(rollup_ctx *c, size_t n)
{
    store_rollup *g;
    uint64_t **arr[3] = { &c->flags, &c->counts, &c->mins };
    int a;

    if (n <= c->cap)
        return IOCD_OK;
    g = iocd_realloc(c->r, n * sizeof(*g));
    if (g == NULL)
        return IOCD_ENOMEM;
    c->r = g;
    for (a = 0; a < 3; a++) {
        uint64_t *x = iocd_realloc(*arr[a], n * sizeof(*x));
        if (x == NULL)
            return IOCD_ENOMEM;
        *arr[a] = x;
    }
    c->cap = n;
    return IOCD_OK;
}

static bool get_raw(const uint8_t **p, const uint8_t *end, double *v)
{
    if (end - *p < 8)
        return false;
    memcpy(v, *p, 8);
    *p += 8;
    return true;
}

static iocd_err rollup_v2(rollup_ctx *c, uint64_t id, const uint8_t *p, size_t len)
{
    const uint8_t *end = p + len;
    uint64_t nb, u, i;
    int64_t prev, min_m;
    int e, col;
    iocd_err err;

    if (!store_varint_get(&p, end, &nb) || p >= end || nb > len)
        return IOCD_ECORRUPT; /* every bucket takes at least a few bytes */
    e = *p++;
    if (e > CODEC_E_MAX)
        return IOCD_ECORRUPT;
    err = rollup_grow(c, (size_t)nb);
    if (err != IOCD_OK)
        return err;
    for (col = 0; col < 7; col++) {
        prev = 0;
        for (i = 0; i < nb; i++) {
            store_rollup *r = &c->r[i];
            uint64_t *flags = &c->flags[i];
            bool raw = col == 6 ? (*flags & 2) != 0 : col >= 3 && (*flags & 1) != 0;
            double x = 0;
            u = 0;
            if (raw) {
                if (!get_raw(&p, end, &x))
                    return IOCD_ECORRUPT;
            } else if (!store_varint_get(&p, end, &u)) {
                return IOCD_ECORRUPT;
            }
            min_m = col >= 4 ? (int64_t)c->mins[i] : 0;
            switch (col) {
            case 0:
                r->t_ms = i == 0
                              ? (int64_t)((uint64_t)codec_unzigzag(u) * (uint64_t)c->res)
                              : (int64_t)((uint64_t)c->r[i - 1].t_ms + (u + 1) * (uint64_t)c->res);
                break;
            case 1:
                *flags = u & 3;
                r->count = (double)(u >> 2);
                c->counts[i] = u >> 2;
                break;
            case 2:
                prev = (int64_t)((uint64_t)prev + (uint64_t)codec_unzigzag(u));
                r->last_t_ms = (int64_t)((uint64_t)r->t_ms + (uint64_t)prev);
                break;
            case 3:
                if (raw) {
                    r->min = x;
                    c->mins[i] = 0;
                } else {
                    prev = (int64_t)((uint64_t)prev + (uint64_t)codec_unzigzag(u));
                    c->mins[i] = (uint64_t)prev;
                    r->min = (double)prev / codec_pow10[e];
                }
                break;
            case 4:
                r->max = raw ? x
                             : (double)(int64_t)((uint64_t)min_m + (uint64_t)codec_unzigzag(u)) /
                                   codec_pow10[e];
                break;
            case 5:
                r->last = raw ? x
                              : (double)(int64_t)((uint64_t)min_m + (uint64_t)codec_unzigzag(u)) /
                                    codec_pow10[e];
                break;
            default:
                r->sum = raw ? x
                             : (double)(int64_t)((uint64_t)codec_unzigzag(u) +
                                                 c->counts[i] * (uint64_t)min_m) /
                                   codec_pow10[e];
                break;
            }
        }
    }
    if (p != end)
        return IOCD_ECORRUPT;
    return c->fn(c->ud, id, c->r, (size_t)nb);
}

/* Version 1: a series' six streams are collected, then turned into buckets. */
static iocd_err rollup_v1_series(rollup_ctx *c)
{
    size_t nb = c->agg_n[0], a, k;
    iocd_err err;

    for (a = 1; a < ROLLUP_V1_AGGS; a++)
        if (c->agg_n[a] != nb)
            return IOCD_ECORRUPT;
    err = rollup_grow(c, nb);
    if (err != IOCD_OK)
        return err;
    for (k = 0; k < nb; k++) {
        c->r[k] = (store_rollup){ c->agg[0][k].t_ms,      c->agg[0][k].v, c->agg[1][k].v,
                                  c->agg[2][k].v,         c->agg[3][k].v, c->agg[4][k].v,
                                  (int64_t)c->agg[5][k].v };
    }
    return c->fn(c->ud, c->cur, c->r, nb);
}

static iocd_err rollup_v1(rollup_ctx *c, uint64_t vid, const uint8_t *p, size_t len)
{
    size_t a = (size_t)(vid & 7), n = 0;
    iocd_err err;

    if (a >= ROLLUP_V1_AGGS)
        return IOCD_OK;
    if (vid >> 3 != c->cur) {
        if (c->seen != 0)
            return IOCD_ECORRUPT; /* a series without all of its streams */
        c->cur = vid >> 3;
    }
    if (!rollup_wanted(c, vid >> 3))
        return IOCD_OK;
    err = codec_stream_decode_v(p, len, false, &c->agg[a], &c->agg_cap[a], &n);
    if (err != IOCD_OK)
        return err;
    c->agg_n[a] = n;
    c->seen |= 1u << a;
    if (c->seen != (1u << ROLLUP_V1_AGGS) - 1)
        return IOCD_OK;
    c->seen = 0;
    return rollup_v1_series(c);
}

static iocd_err rollup_one(void *ud, uint64_t id, const uint8_t *p, size_t len)
{
    rollup_ctx *c = ud;

    if (c->version == CODEC_BLOCK_V1)
        return rollup_v1(c, id, p, len);
    return rollup_wanted(c, id) ? rollup_v2(c, id, p, len) : IOCD_OK;
}

iocd_err codec_rollup_select(const void *data, size_t len, size_t max_raw, int64_t res_ms,
                             const uint64_t *ids, size_t n, codec_rollup_fn fn, void *ud)
{
    rollup_ctx *c = iocd_calloc(1, sizeof(*c));
    iocd_err err;
    size_t a;

    if (c == NULL)
        return IOCD_ENOMEM;
    *c = (rollup_ctx){ .ids = ids, .n = n, .res = res_ms, .fn = fn, .ud = ud, .cur = UINT64_MAX };
    /* The version is known once the block is open, before the first series. */
    c->version = 0;
    err = codec_block_walk_v(data, len, max_raw, 1u << CODEC_BLOCK_V1 | 1u << ROLLUP_VERSION,
                             &c->version, rollup_one, c);
    if (err == IOCD_OK && c->seen != 0)
        err = IOCD_ECORRUPT;
    iocd_free(c->r);
    iocd_free(c->flags);
    iocd_free(c->counts);
    iocd_free(c->mins);
    for (a = 0; a < ROLLUP_V1_AGGS; a++)
        iocd_free(c->agg[a]);
    iocd_free(c);
    return err;
}
