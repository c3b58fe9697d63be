/* storage/codec.c - how sealed samples are laid out on disk; the only file that sees zstd.
 * Following the measurements in the project's compression notes: sensor values are decimals
 * rounded to a resolution, so each series' chunk picks the smallest exponent e (0..15) that
 * makes its values integers m = v * 10^e, stores m as zigzag varint deltas, and timestamps as
 * zigzag varint delta-of-deltas. Values that are not such decimals (NaN payloads, infinities,
 * -0, 0.1+0.2) are escaped and stored as their 8 raw bytes, so every value round-trips
 * bit-exact. The streams of up to 64 series (one id group) for one period form a block,
 * compressed with zstd: similar series next to each other compress far better together.
 *
 * Stream: varint n, byte e | p << 4, then every sample's time, then every sample's value:
 *   t: first zigzag(t), then zigzag(dt), then zigzag(dt - previous dt)
 *   v: zigzag(m - prediction) << 1 for a decimal, or 1 followed by 8 raw bytes; the
 *      prediction is the mean of the 2^p decimals before (p = 0: the previous one, a delta)
 * Block (before zstd): byte version, varint count, per series varint id-delta, varint bytes;
 * then the streams. Version 3 writes the times and values of a stream apart, as above: the
 * times of regular samples are a run of zero bytes that zstd takes as one match, and the
 * values sit together; that took compacted blocks plus rollups from 0.725 to 0.645 bytes per
 * sample on the write benchmark's data. Version 1 (read only) interleaved them, t v t v. */
#include "storage/codec_int.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

/* ---- zstd contexts ----------------------------------------------------------------------
 * Each thread keeps its zstd contexts, made on first use and freed when the thread ends:
 * ZSTD_compress and ZSTD_decompress make and free one per call, which cost 40 % of
 * decompressing a 14 KB block (a query reading 246 series from as many blocks) and 25 % of
 * compressing one. A thread that cannot get one falls back to the one-shot calls. */

typedef struct zctx {
    ZSTD_CCtx *c;
    ZSTD_DCtx *d;
} zctx;

static pthread_key_t zkey;
static pthread_once_t zonce = PTHREAD_ONCE_INIT;
static bool zkey_ok;

static void zctx_free(void *p)
{
    zctx *z = p;

    ZSTD_freeCCtx(z->c);
    ZSTD_freeDCtx(z->d);
    free(z);
}

static void zkey_make(void)
{
    zkey_ok = pthread_key_create(&zkey, zctx_free) == 0;
}

static zctx *zctx_get(void)
{
    zctx *z;

    pthread_once(&zonce, zkey_make);
    if (!zkey_ok)
        return NULL;
    z = pthread_getspecific(zkey);
    if (z == NULL) {
        z = calloc(1, sizeof(*z));
        if (z != NULL && pthread_setspecific(zkey, z) != 0) {
            free(z);
            z = NULL;
        }
    }
    return z;
}

static size_t z_compress(void *dst, size_t cap, const void *src, size_t len, int level)
{
    zctx *z = zctx_get();

    if (z != NULL && z->c == NULL)
        z->c = ZSTD_createCCtx();
    if (z == NULL || z->c == NULL)
        return ZSTD_compress(dst, cap, src, len, level);
    return ZSTD_compressCCtx(z->c, dst, cap, src, len, level);
}

static size_t z_decompress(void *dst, size_t cap, const void *src, size_t len)
{
    zctx *z = zctx_get();

    if (z != NULL && z->d == NULL)
        z->d = ZSTD_createDCtx();
    if (z == NULL || z->d == NULL)
        return ZSTD_decompress(dst, cap, src, len);
    return ZSTD_decompressDCtx(z->d, dst, cap, src, len);
}

#define BLOCK_VERSION 3              /* split streams */
#define BLOCK_V1      CODEC_BLOCK_V1 /* interleaved streams: read only */
#define E_MAX         CODEC_E_MAX

const double codec_pow10[E_MAX + 1] = { 1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                        1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15 };

uint64_t codec_zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ ((uint64_t)0 - ((uint64_t)v >> 63));
}

int64_t codec_unzigzag(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* Whether v is exactly m / 10^e with |m| < 2^52; writes m. It runs several times per sample
 * (head, block, rollups), so it avoids llround and, at e = 0, the division: below 2^52 adding
 * a half is exact and truncation rounds half away from zero. NaN and infinities fail the
 * range test, -0 the comparison (it reads back as +0). 1.8x faster than with llround. */
bool codec_decimal_at(double v, int e, int64_t *m)
{
    double scaled = v * codec_pow10[e], back;
    int64_t r;

    if (!(fabs(scaled) < 4503599627370496.0))
        return false;
    r = (int64_t)(scaled + (scaled < 0 ? -0.5 : 0.5));
    back = e == 0 ? (double)r : (double)r / codec_pow10[e];
    if (memcmp(&back, &v, sizeof(v)) != 0)
        return false;
    *m = r;
    return true;
}

/* The exponent for a chunk: the largest of its values' smallest exponents, so every value
 * that is a decimal at all is an integer at e; the others are escaped. */
int codec_choose_e(const iocd_sample *s, size_t n)
{
    int e = 0, k;
    size_t i;
    int64_t m;

    for (i = 0; i < n; i++) {
        if (codec_decimal_at(s[i].v, e, &m))
            continue;
        for (k = e + 1; k <= E_MAX; k++) {
            if (codec_decimal_at(s[i].v, k, &m)) {
                e = k;
                break;
            }
        }
    }
    return e;
}

static size_t put_time(uint8_t *tmp, size_t i, int64_t t, int64_t *prev_t, int64_t *prev_dt)
{
    size_t k;

    if (i == 0) {
        k = store_varint_put(tmp, codec_zigzag(t));
    } else {
        int64_t dt = (int64_t)((uint64_t)t - (uint64_t)*prev_t);
        k = store_varint_put(tmp, i == 1
                                      ? codec_zigzag(dt)
                                      : codec_zigzag((int64_t)((uint64_t)dt - (uint64_t)*prev_dt)));
        *prev_dt = dt;
    }
    *prev_t = t;
    return k;
}

static size_t put_value(uint8_t *tmp, double v, int e, int64_t *prev_m)
{
    int64_t m;
    size_t k = 0;

    if (codec_decimal_at(v, e, &m)) {
        k = store_varint_put(tmp, codec_zigzag((int64_t)((uint64_t)m - (uint64_t)*prev_m)) << 1);
        *prev_m = m;
        return k;
    }
    tmp[k++] = 1;
    memcpy(tmp + k, &v, 8);
    return k + 8;
}

/* ---- Value predictors -------------------------------------------------------------------
 * A split stream stores each decimal value's integer m as its difference from a prediction:
 * the mean, rounded down, of the 2^p decimal values before it (p = 0: the previous value, the
 * plain delta of version 3's first streams). Sensor readings are mostly a slow signal plus
 * noise: a delta carries the noise of two readings (twice the variance), a mean of k the
 * noise of 1 + 1/k readings, so the differences take fewer bits; a counter or a steep signal
 * is best with p = 0. The encoder tries each p and keeps the cheapest; p sits in the stream's
 * exponent byte (high half). The first value has no prediction (0) and fills the history. */
#define PRED_MAX  5
#define PRED_BIAS ((uint64_t)1 << 60) /* |sum| < 2^57: adding it makes the shift a floor */

typedef struct pred {
    uint64_t h[1u << PRED_MAX], sum;
    unsigned p, at;
    bool primed;
} pred;

static inline int64_t pred_guess(const pred *q)
{
    return q->primed ? (int64_t)(((q->sum + PRED_BIAS) >> q->p) - (PRED_BIAS >> q->p)) : 0;
}

static inline void pred_push(pred *q, int64_t m)
{
    unsigned k = 1u << q->p, j;

    if (!q->primed) {
        for (j = 0; j < k; j++)
            q->h[j] = (uint64_t)m;
        q->sum = (uint64_t)m << q->p;
        q->primed = true;
        return;
    }
    q->sum += (uint64_t)m - q->h[q->at];
    q->h[q->at] = (uint64_t)m;
    q->at = (q->at + 1) & (k - 1);
}

static unsigned bits_of(uint64_t u)
{
    return u == 0 ? 0 : 64u - (unsigned)__builtin_clzll(u);
}

/* The predictor whose differences take the fewest bits (ties to the smaller p). */
static unsigned choose_pred(const int64_t *m, const bool *dec, size_t n)
{
    uint64_t cost[PRED_MAX + 1] = { 0 };
    unsigned p, best = 0;
    size_t i;

    for (p = 0; p <= PRED_MAX; p++) {
        pred q = { .p = p };
        for (i = 0; i < n; i++) {
            if (!dec[i])
                continue;
            cost[p] += bits_of(codec_zigzag((int64_t)((uint64_t)m[i] - (uint64_t)pred_guess(&q))));
            pred_push(&q, m[i]);
        }
        if (cost[p] < cost[best])
            best = p;
    }
    return best;
}

/* Times apart from values (split, the current format, with a predictor) or interleaved
 * (version 1). */
static iocd_err stream_encode(const iocd_sample *s, size_t n, bool split, iocd_buf *out)
{
    uint8_t tmp[32];
    int64_t prev_t = 0, prev_dt = 0, prev_m = 0, *m = NULL;
    bool *dec = NULL;
    size_t i, k;
    int e = codec_choose_e(s, n);
    unsigned p = 0;
    pred q;
    iocd_err err;

    if (split && n > 2) {
        m = iocd_malloc(n * (sizeof(*m) + sizeof(*dec)));
        if (m == NULL)
            return IOCD_ENOMEM;
        dec = (bool *)(m + n);
        for (i = 0; i < n; i++)
            dec[i] = codec_decimal_at(s[i].v, e, &m[i]);
        p = choose_pred(m, dec, n);
    }
    k = store_varint_put(tmp, n);
    tmp[k++] = (uint8_t)(e | (int)(p << 4));
    err = iocd_buf_append(out, tmp, k);
    for (i = 0; i < n && err == IOCD_OK; i++) {
        k = put_time(tmp, i, s[i].t_ms, &prev_t, &prev_dt);
        if (!split)
            k += put_value(tmp + k, s[i].v, e, &prev_m);
        err = iocd_buf_append(out, tmp, k);
    }
    q = (pred){ .p = p };
    for (i = 0; split && i < n && err == IOCD_OK; i++) {
        if (m == NULL) {
            err = iocd_buf_append(out, tmp, put_value(tmp, s[i].v, e, &prev_m));
            continue;
        }
        if (!dec[i]) {
            tmp[0] = 1;
            memcpy(tmp + 1, &s[i].v, 8);
            err = iocd_buf_append(out, tmp, 9);
            continue;
        }
        k = store_varint_put(tmp, codec_zigzag((int64_t)((uint64_t)m[i] - (uint64_t)pred_guess(&q)))
                                      << 1);
        pred_push(&q, m[i]);
        err = iocd_buf_append(out, tmp, k);
    }
    iocd_free(m);
    return err;
}

iocd_err codec_stream_encode(const iocd_sample *s, size_t n, iocd_buf *out)
{
    return stream_encode(s, n, true, out);
}

/* The times of a split stream from *p on, one varint at a time (stream_append works out
 * evenly spaced ones itself). */
static bool get_times(const uint8_t **p, const uint8_t *end, size_t n, iocd_sample *s)
{
    const uint8_t *q = *p;
    int64_t t = 0, dt = 0;
    uint64_t u;
    size_t i;

    for (i = 0; i < n; i++) {
        if (!store_varint_get(&q, end, &u))
            return false;
        if (i == 0) {
            t = codec_unzigzag(u);
        } else if (i == 1) {
            dt = codec_unzigzag(u);
            t = (int64_t)((uint64_t)t + (uint64_t)dt);
        } else {
            dt = (int64_t)((uint64_t)dt + (uint64_t)codec_unzigzag(u));
            t = (int64_t)((uint64_t)t + (uint64_t)dt);
        }
        s[i].t_ms = t;
    }
    *p = q;
    return true;
}

/* One value; an escaped one (raw bytes) sets *nan when it is a NaN. Integer values (e = 0)
 * skip the division: m / 10^0 is m. */
static bool get_value(const uint8_t **p, const uint8_t *end, int e, int64_t *m, double *v,
                      bool *nan)
{
    uint64_t u;

    if (!store_varint_get(p, end, &u))
        return false;
    if (u & 1) {
        if (u != 1 || end - *p < 8)
            return false;
        memcpy(v, *p, 8);
        *p += 8;
        *nan |= isnan(*v);
    } else {
        *m = (int64_t)((uint64_t)*m + (uint64_t)codec_unzigzag(u >> 1));
        *v = e == 0 ? (double)*m : (double)*m / codec_pow10[e];
    }
    return true;
}

/* The first of s[a .. b) (ascending times) at or after t. */
static size_t time_at(const iocd_sample *s, size_t a, size_t b, int64_t t)
{
    while (a < b) {
        size_t mid = (a + b) / 2;
        if (s[mid].t_ms < t)
            a = mid + 1;
        else
            b = mid;
    }
    return a;
}

/* The values of a split stream from *p on, samples a.. b, written at out[0 ..]: values only
 * move the running integer *m on before a. Inline and with its state in registers, as this is
 * where reading spends most of its time (a call per value, with *p and *m in memory, was half
 * of a sum of rates at 100k series). *drops says whether a value is below the one before it
 * (prev_v, the buffer's last). */
static bool get_values(const uint8_t **pp, const uint8_t *end, int e, size_t a, size_t b,
                       iocd_sample *out, int64_t *m_io, double prev_v, bool *nan, bool *drops)
{
    const uint8_t *p = *pp;
    uint64_t u, mu = (uint64_t)*m_io;
    double v, div = codec_pow10[e];
    bool dropped = false, is_nan = false;
    size_t i;

    for (i = 0; i < b; i++) {
        if (p < end && *p < 0x80) {
            u = *p++;
        } else if (!store_varint_get(&p, end, &u)) {
            return false;
        }
        if (u & 1) { /* escaped: the raw bytes of a double */
            if (u != 1 || end - p < 8)
                return false;
            memcpy(&v, p, 8);
            p += 8;
            if (i < a)
                continue;
            is_nan |= isnan(v);
        } else {
            u >>= 1;
            mu += (u >> 1) ^ ((uint64_t)0 - (u & 1));
            if (i < a)
                continue;
            v = e == 0 ? (double)(int64_t)mu : (double)(int64_t)mu / div;
        }
        if (i < a)
            continue;
        dropped |= v < prev_v;
        prev_v = v;
        out[i - a].v = v;
    }
    *pp = p;
    *m_io = (int64_t)mu;
    *nan |= is_nan;
    *drops |= dropped;
    return true;
}

/* As get_values, for a stream with a predictor p > 0 (every value before a is decoded too:
 * the prediction needs them). The history's sum carries PRED_BIAS, so a prediction is one
 * shift and one subtraction; p is a constant in each of the copies get_values_pred
 * makes, so the history's ring index is a constant mask. */
static inline __attribute__((always_inline)) bool
values_pred(const uint8_t **pp, const uint8_t *end, int e, const unsigned p, size_t a, size_t b,
            iocd_sample *out, double prev_v, bool *nan, bool *drops)
{
    const uint8_t *q8 = *pp;
    const unsigned k = 1u << p;
    uint64_t u, mu, h[1u << PRED_MAX] = { 0 }, sb = 0, off = PRED_BIAS >> p;
    double v, div = codec_pow10[e];
    bool dropped = false, is_nan = false, primed = false;
    size_t i;
    unsigned at = 0, j;

    for (i = 0; i < b; i++) {
        if (q8 < end && *q8 < 0x80) {
            u = *q8++;
        } else if (!store_varint_get(&q8, end, &u)) {
            return false;
        }
        if (u & 1) {
            if (u != 1 || end - q8 < 8)
                return false;
            memcpy(&v, q8, 8);
            q8 += 8;
            if (i < a)
                continue;
            is_nan |= isnan(v);
        } else {
            u >>= 1;
            u = (u >> 1) ^ ((uint64_t)0 - (u & 1));
            if (primed) {
                mu = (sb >> p) - off + u;
                sb += mu - h[at];
                h[at] = mu;
                at = (at + 1) & (k - 1);
            } else {
                mu = u;
                for (j = 0; j < k; j++)
                    h[j] = mu;
                sb = (mu << p) + PRED_BIAS;
                primed = true;
            }
            if (i < a)
                continue;
            v = e == 0 ? (double)(int64_t)mu : (double)(int64_t)mu / div;
        }
        dropped |= v < prev_v;
        prev_v = v;
        out[i - a].v = v;
    }
    *pp = q8;
    *nan |= is_nan;
    *drops |= dropped;
    return true;
}

static bool get_values_pred(const uint8_t **pp, const uint8_t *end, int e, unsigned p, size_t a,
                            size_t b, iocd_sample *out, double prev_v, bool *nan, bool *drops)
{
    switch (p) {
    case 1:
        return values_pred(pp, end, e, 1, a, b, out, prev_v, nan, drops);
    case 2:
        return values_pred(pp, end, e, 2, a, b, out, prev_v, nan, drops);
    case 3:
        return values_pred(pp, end, e, 3, a, b, out, prev_v, nan, drops);
    case 4:
        return values_pred(pp, end, e, 4, a, b, out, prev_v, nan, drops);
    default:
        return values_pred(pp, end, e, PRED_MAX, a, b, out, prev_v, nan, drops);
    }
}

/* Evenly spaced times t0 + i * dt (dt > 0, the last one not past INT64_MAX): the first index
 * at or after lo, and the first after hi, at most n. */
static void even_run(int64_t t0, int64_t dt, size_t n, int64_t lo, int64_t hi, size_t *a_out,
                     size_t *b_out)
{
    uint64_t d, a = 0, b;

    if (lo > t0) {
        d = (uint64_t)lo - (uint64_t)t0;
        a = d / (uint64_t)dt + (d % (uint64_t)dt != 0);
    }
    if (hi < t0) {
        b = 0;
    } else {
        d = (uint64_t)hi - (uint64_t)t0;
        b = d / (uint64_t)dt + 1;
    }
    a = a < n ? a : n;
    b = b < n ? b : n;
    *a_out = (size_t)a;
    *b_out = (size_t)(b > a ? b : a);
}

/* The one stream decoder (split, or version 1's interleaved): appends the samples with
 * lo <= t <= hi at (*buf)[*n_io]. A split stream whose times ascend (evenly spaced, or checked)
 * keeps a run of them: only that run is written, in place, and its values decoded. */
static iocd_err stream_append(const uint8_t *p, size_t len, bool split, int64_t lo, int64_t hi,
                              iocd_sample **buf, size_t *cap, size_t *n_io, codec_append *info)
{
    const uint8_t *end = p + len;
    uint64_t n, u;
    int64_t prev_t = 0, prev_dt = 0, m = 0, last;
    double last_v;
    iocd_sample *s;
    size_t i, k = *n_io, j, a = 0, b;
    bool ascending = true, nan = false, drops = false, even, run = false;
    unsigned pk;
    int e;

    if (!store_varint_get(&p, end, &n) || p >= end || n > len)
        return IOCD_ECORRUPT; /* every sample takes at least one byte */
    e = *p & 15;
    pk = (unsigned)*p++ >> 4;
    if (pk > PRED_MAX || (pk > 0 && !split))
        return IOCD_ECORRUPT;
    if (n > *cap - k || *buf == NULL) {
        size_t want = k + (size_t)n > 256 ? k + (size_t)n : 256;
        if (want < *cap * 2)
            want = *cap * 2;
        s = iocd_realloc(*buf, want * sizeof(*s));
        if (s == NULL)
            return IOCD_ENOMEM;
        *buf = s;
        *cap = want;
    }
    s = *buf + k;
    last = k > 0 ? s[-1].t_ms : INT64_MIN;
    last_v = k > 0 ? s[-1].v : -INFINITY;
    b = (size_t)n;
    if (split && n >= 2) {
        /* Evenly spaced: the first two times, then n - 2 zero delta-of-deltas. Only the run
         * of wanted times is written; the last time must not pass INT64_MAX. */
        const uint8_t *q = p;
        int64_t t0, dt;
        if (!store_varint_get(&q, end, &u))
            return IOCD_ECORRUPT;
        t0 = codec_unzigzag(u);
        if (!store_varint_get(&q, end, &u))
            return IOCD_ECORRUPT;
        dt = codec_unzigzag(u);
        even = t0 >= 0 && dt > 0 && (size_t)(end - q) >= n - 2 &&
               n - 1 <= (uint64_t)(INT64_MAX - t0) / (uint64_t)dt;
        for (i = 0; even && i + 8 <= n - 2; i += 8) {
            uint64_t w;
            memcpy(&w, q + i, 8);
            even = w == 0;
        }
        for (; even && i < n - 2; i++)
            even = q[i] == 0;
        if (even) {
            even_run(t0, dt, (size_t)n, lo, hi, &a, &b);
            for (i = a; i < b; i++)
                s[i - a].t_ms = t0 + (int64_t)i * dt;
            p = q + (n - 2);
            run = true;
        }
    }
    if (split && !run) {
        if (!get_times(&p, end, (size_t)n, s))
            return IOCD_ECORRUPT;
        for (i = 1; i < n && s[i].t_ms > s[i - 1].t_ms; i++)
            ;
        if (i >= n) { /* ascending: the wanted times are a run [a, b), moved down to s[0] */
            a = time_at(s, 0, b, lo);
            b = hi == INT64_MAX ? b : time_at(s, a, b, hi + 1);
            for (i = a; a > 0 && i < b; i++)
                s[i - a].t_ms = s[i].t_ms;
            run = true;
        }
    }
    if (split) {
        /* A run's values go beside its times; otherwise all of them, then filtered below. */
        if (pk == 0 ? !get_values(&p, end, e, a, b, s, &m, last_v, &nan, &drops)
                    : !get_values_pred(&p, end, e, pk, a, b, s, last_v, &nan, &drops))
            return IOCD_ECORRUPT;
    } else {
        for (i = 0; i < n; i++) {
            if (!store_varint_get(&p, end, &u))
                return IOCD_ECORRUPT;
            if (i == 0) {
                prev_t = codec_unzigzag(u);
            } else {
                int64_t d = codec_unzigzag(u);
                prev_dt = i == 1 ? d : (int64_t)((uint64_t)prev_dt + (uint64_t)d);
                prev_t = (int64_t)((uint64_t)prev_t + (uint64_t)prev_dt);
            }
            s[i].t_ms = prev_t;
            if (!get_value(&p, end, e, &m, &s[i].v, &nan))
                return IOCD_ECORRUPT;
        }
    }
    if (run) { /* s[0, b - a): ascending, all in [lo, hi]; only the first meets the buffer */
        j = b - a;
        ascending = j == 0 || s[0].t_ms > last;
    } else { /* keep those in [lo, hi], and see whether they ascend after the buffer's last */
        drops = false;
        for (i = 0, j = 0; i < b; i++) {
            if (s[i].t_ms < lo || s[i].t_ms > hi)
                continue;
            ascending &= s[i].t_ms > last;
            drops |= s[i].v < last_v;
            last = s[i].t_ms;
            last_v = s[i].v;
            if (j != i)
                s[j] = s[i];
            j++;
        }
    }
    if (info != NULL) {
        info->ascending &= ascending;
        info->nan |= nan;
        info->drops |= drops;
    }
    *n_io = k + j;
    return IOCD_OK;
}

/* Decodes a whole stream into *buf (grown as needed, *cap samples; reused across calls by
 * readers that decode many series). */
iocd_err codec_stream_decode_v(const uint8_t *p, size_t len, bool split, iocd_sample **buf,
                               size_t *cap, size_t *n_out)
{
    *n_out = 0;
    return stream_append(p, len, split, INT64_MIN, INT64_MAX, buf, cap, n_out, NULL);
}

iocd_err codec_stream_decode(const uint8_t *p, size_t len, iocd_sample **out, size_t *n_out)
{
    iocd_sample *s = NULL;
    size_t cap = 0, n = 0;
    iocd_err err = codec_stream_decode_v(p, len, true, &s, &cap, &n);

    if (err != IOCD_OK) {
        iocd_free(s);
        return err;
    }
    *out = s;
    *n_out = n;
    return IOCD_OK;
}

/* ---- Blocks ---------------------------------------------------------------------------- */

/* Encodes one series' payload of a block (a sample stream, or rollup buckets). */
static iocd_err stream_payload(const codec_series *cs, int64_t arg, iocd_buf *out)
{
    (void)arg;
    return codec_stream_encode(cs->s, cs->n, out);
}

iocd_err codec_block_encode_v(const codec_series *list, size_t n, int level, uint8_t version,
                              codec_payload_fn payload, int64_t arg, iocd_buf *out)
{
    iocd_buf raw, streams;
    uint8_t tmp[24];
    uint64_t prev_id = 0;
    size_t i, bound, zn;
    iocd_err err = IOCD_OK;

    iocd_buf_init(&raw, 0);
    iocd_buf_init(&streams, 0);
    tmp[0] = version;
    err = iocd_buf_append(&raw, tmp, 1 + store_varint_put(tmp + 1, n));
    for (i = 0; i < n && err == IOCD_OK; i++) {
        size_t before = streams.len, k;
        err = payload(&list[i], arg, &streams);
        if (err != IOCD_OK)
            break;
        k = store_varint_put(tmp, list[i].id - prev_id);
        k += store_varint_put(tmp + k, streams.len - before);
        prev_id = list[i].id;
        err = iocd_buf_append(&raw, tmp, k);
    }
    if (err == IOCD_OK)
        err = iocd_buf_append(&raw, streams.data, streams.len);
    if (err == IOCD_OK) {
        bound = ZSTD_compressBound(raw.len);
        err = iocd_buf_reserve(out, bound);
    }
    if (err == IOCD_OK) {
        zn = z_compress(out->data + out->len, bound, raw.data, raw.len, level);
        if (ZSTD_isError(zn))
            err = IOCD_EIO;
        else
            out->len += zn;
    }
    iocd_buf_fini(&raw);
    iocd_buf_fini(&streams);
    return err;
}

iocd_err codec_block_encode(const codec_series *list, size_t n, int level, iocd_buf *out)
{
    return codec_block_encode_v(list, n, level, BLOCK_VERSION, stream_payload, 0, out);
}

static iocd_err stream_v1_payload(const codec_series *cs, int64_t arg, iocd_buf *out)
{
    (void)arg;
    return stream_encode(cs->s, cs->n, false, out);
}

iocd_err codec_block_encode_v1(const codec_series *list, size_t n, int level, iocd_buf *out)
{
    return codec_block_encode_v(list, n, level, BLOCK_V1, stream_v1_payload, 0, out);
}

void codec_block_fini(codec_block *b)
{
    iocd_free(b->raw);
    iocd_free(b->streams);
    memset(b, 0, sizeof(*b));
}

/* Decompresses a block of one of the versions (a bit mask) into b and indexes its streams. */
static iocd_err block_open_v(codec_block *b, const void *data, size_t len, size_t max_raw,
                             unsigned versions)
{
    unsigned long long raw_len = ZSTD_getFrameContentSize(data, len);
    const uint8_t *p, *end, *streams, *h;
    uint64_t count, prev_id = 0, off = 0, d, bytes;
    size_t got, i;

    b->n = 0;
    if (raw_len == ZSTD_CONTENTSIZE_ERROR || raw_len == ZSTD_CONTENTSIZE_UNKNOWN ||
        raw_len > max_raw || raw_len == 0)
        return IOCD_ECORRUPT;
    if (raw_len > b->raw_cap) {
        uint8_t *g = iocd_realloc(b->raw, (size_t)raw_len);
        if (g == NULL)
            return IOCD_ENOMEM;
        b->raw = g;
        b->raw_cap = (size_t)raw_len;
    }
    got = z_decompress(b->raw, (size_t)raw_len, data, len);
    if (ZSTD_isError(got) || got != raw_len || b->raw[0] > 7 || !(versions & (1u << b->raw[0])))
        return IOCD_ECORRUPT;
    b->version = b->raw[0];
    p = b->raw + 1;
    end = b->raw + got;
    if (!store_varint_get(&p, end, &count) || count > got)
        return IOCD_ECORRUPT;
    if (count > b->cap) {
        codec_stream *g = iocd_realloc(b->streams, (size_t)count * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        b->streams = g;
        b->cap = (size_t)count;
    }
    /* The header ends where the streams begin: walk it once to find that point. */
    for (h = p, i = 0; i < count; i++)
        if (!store_varint_get(&h, end, &d) || !store_varint_get(&h, end, &bytes))
            return IOCD_ECORRUPT;
    streams = h;
    for (i = 0; i < count; i++) {
        store_varint_get(&p, end, &d);
        store_varint_get(&p, end, &bytes);
        prev_id += d;
        if (bytes > (uint64_t)(end - streams) || off > (uint64_t)(end - streams) - bytes)
            return IOCD_ECORRUPT;
        b->streams[i] = (codec_stream){ prev_id, streams + off, (size_t)bytes };
        off += bytes;
    }
    b->n = (size_t)count;
    return IOCD_OK;
}

iocd_err codec_block_open(codec_block *b, const void *data, size_t len, size_t max_raw)
{
    return block_open_v(b, data, len, max_raw, 1u << BLOCK_VERSION | 1u << BLOCK_V1);
}

size_t codec_stream_count(const codec_block *b, size_t i)
{
    const uint8_t *p = b->streams[i].p;
    uint64_t n;

    return store_varint_get(&p, p + b->streams[i].len, &n) && n <= b->streams[i].len ? (size_t)n
                                                                                     : 0;
}

iocd_err codec_stream_append(const codec_block *b, size_t i, int64_t lo, int64_t hi,
                             iocd_sample **buf, size_t *cap, size_t *n_io, codec_append *info)
{
    return stream_append(b->streams[i].p, b->streams[i].len, b->version == BLOCK_VERSION, lo, hi,
                         buf, cap, n_io, info);
}

/* Walks a block: for each series, fn gets its id and its stream, or the walk stops early
 * when fn returns non-OK (IOCD_EEXIST is used below to mean "found, stop"). */

iocd_err codec_block_walk_v(const void *data, size_t len, size_t max_raw, unsigned versions,
                            int *version, codec_stream_fn fn, void *ud)
{
    codec_block b;
    size_t i;
    iocd_err err;

    memset(&b, 0, sizeof(b));
    err = block_open_v(&b, data, len, max_raw, versions);
    *version = b.version;
    for (i = 0; err == IOCD_OK && i < b.n; i++)
        err = fn(ud, b.streams[i].id, b.streams[i].p, b.streams[i].len);
    codec_block_fini(&b);
    return err;
}

/* A sample block of either version; *version is set before fn is first called. */
static iocd_err block_walk(const void *data, size_t len, size_t max_raw, int *version,
                           codec_stream_fn fn, void *ud)
{
    return codec_block_walk_v(data, len, max_raw, 1u << BLOCK_VERSION | 1u << BLOCK_V1, version, fn,
                              ud);
}

typedef struct find_ctx {
    uint64_t id;
    iocd_sample **out;
    size_t *n_out;
    int version;
} find_ctx;

static iocd_err find_one(void *ud, uint64_t id, const uint8_t *p, size_t len)
{
    find_ctx *f = ud;
    size_t cap;
    iocd_err err;

    if (id != f->id)
        return IOCD_OK;
    *f->out = NULL;
    cap = 0;
    err = codec_stream_decode_v(p, len, f->version == BLOCK_VERSION, f->out, &cap, f->n_out);
    if (err != IOCD_OK) {
        iocd_free(*f->out);
        *f->out = NULL;
    }
    return err == IOCD_OK ? IOCD_EEXIST : err;
}

iocd_err codec_block_find(const void *data, size_t len, uint64_t id, size_t max_raw,
                          iocd_sample **out, size_t *n_out)
{
    find_ctx f = { id, out, n_out, 0 };
    iocd_err err = block_walk(data, len, max_raw, &f.version, find_one, &f);

    if (err == IOCD_EEXIST)
        return IOCD_OK;
    return err == IOCD_OK ? IOCD_ENOTFOUND : err;
}

/* Walks a block's series through fn, decoding the wanted ones (all when ids is NULL) into one
 * buffer reused across them. */
typedef struct select_ctx {
    const uint64_t *ids;
    size_t n;
    codec_series_fn fn;
    void *ud;
    iocd_sample *buf;
    size_t cap;
    int version;
} select_ctx;

static iocd_err select_one(void *ud, uint64_t id, const uint8_t *p, size_t len)
{
    select_ctx *c = ud;
    size_t n = 0;
    iocd_err err;

    if (c->ids != NULL && store_id_find(c->ids, c->n, id) == c->n)
        return IOCD_OK; /* not wanted: left encoded */
    err = codec_stream_decode_v(p, len, c->version == BLOCK_VERSION, &c->buf, &c->cap, &n);
    return err == IOCD_OK ? c->fn(c->ud, id, c->buf, n) : err;
}

iocd_err codec_block_select(const void *data, size_t len, size_t max_raw, const uint64_t *ids,
                            size_t n, codec_series_fn fn, void *ud)
{
    select_ctx c = { ids, n, fn, ud, NULL, 0, 0 };
    iocd_err err = block_walk(data, len, max_raw, &c.version, select_one, &c);

    iocd_free(c.buf);
    return err;
}

iocd_err codec_block_each(const void *data, size_t len, size_t max_raw, codec_series_fn fn,
                          void *ud)
{
    return codec_block_select(data, len, max_raw, NULL, 0, fn, ud);
}

/* ---- Span containers -------------------------------------------------------------------
 * A compacted span of several id groups in one LMDB value (fewer values, less page rounding):
 *   byte version, varint n, per frame: varint group (low bits), byte kind, varint length;
 *   then the frames (each a block or rollup block as above), in that order.
 * At a stop (see writer.c) the containers of neighbouring keys, in a span and the next one,
 * share one value, so the stop's partial spans do not pay LMDB's page rounding once per
 * container and span. The keys' containers are of one quad (container >> 2 alike):
 *   byte 2, varint n, per part: byte span (0: the owner key's, 1: the next), byte slot (the
 *   part's key container & 3), varint length; then the parts (containers as above);
 * kept under one of its parts' keys (the owner: its first part's), with under each other
 * part's key an alias: byte 3, byte span back to the owner's key (0 or 1), byte the owner's
 * slot. Each part keeps its own frames: reads see what separate values held. */

#define SPAN_VERSION 1
#define SPAN_SHARED  2
#define SPAN_ALIAS   3

iocd_err codec_span_share(const codec_part *parts, size_t n, iocd_buf *out)
{
    uint8_t tmp[32];
    size_t i, k;
    iocd_err err;

    tmp[0] = SPAN_SHARED;
    k = 1 + store_varint_put(tmp + 1, n);
    err = iocd_buf_append(out, tmp, k);
    for (i = 0; i < n && err == IOCD_OK; i++) {
        tmp[0] = (uint8_t)parts[i].span;
        tmp[1] = (uint8_t)parts[i].slot;
        k = 2 + store_varint_put(tmp + 2, parts[i].len);
        err = iocd_buf_append(out, tmp, k);
    }
    for (i = 0; i < n && err == IOCD_OK; i++)
        err = iocd_buf_append(out, parts[i].data, parts[i].len);
    return err;
}

iocd_err codec_span_alias(unsigned span_back, unsigned owner_slot, iocd_buf *out)
{
    uint8_t b[3] = { SPAN_ALIAS, (uint8_t)span_back, (uint8_t)owner_slot };

    return iocd_buf_append(out, b, sizeof(b));
}

bool codec_span_alias_get(const void *val, size_t len, unsigned *span_back, unsigned *owner_slot)
{
    const uint8_t *p = val;

    if (len != 3 || p[0] != SPAN_ALIAS || p[1] > 1 || p[2] > 3)
        return false;
    *span_back = p[1];
    *owner_slot = p[2];
    return true;
}

iocd_err codec_span_parts(const void *val, size_t len, codec_part *parts, size_t max, size_t *n_out)
{
    const uint8_t *p = val, *end = p + len;
    uint64_t n, plen, off = 0, i;

    *n_out = 0;
    if (len < 2 || *p++ != SPAN_SHARED || !store_varint_get(&p, end, &n) || n > max)
        return IOCD_ECORRUPT;
    for (i = 0; i < n; i++) {
        if (end - p < 2 || p[0] > 1 || p[1] > 3)
            return IOCD_ECORRUPT;
        parts[i].span = p[0];
        parts[i].slot = p[1];
        p += 2;
        if (!store_varint_get(&p, end, &plen))
            return IOCD_ECORRUPT;
        parts[i].len = (size_t)plen;
        parts[i].data = NULL;
    }
    for (i = 0; i < n; i++) { /* the header ends where the parts begin */
        if (parts[i].len > (uint64_t)(end - p) || off > (uint64_t)(end - p) - parts[i].len)
            return IOCD_ECORRUPT;
        parts[i].data = p + off;
        off += parts[i].len;
    }
    *n_out = (size_t)n;
    return IOCD_OK;
}

bool codec_span_is_shared(const void *val, size_t len)
{
    return len >= 1 && *(const uint8_t *)val == SPAN_SHARED;
}

iocd_err codec_span_part(const void *val, size_t len, unsigned span, unsigned slot,
                         const void **part, size_t *part_len)
{
    codec_part parts[CODEC_SPAN_PARTS];
    size_t n, i;
    iocd_err err;

    if (len < 1)
        return IOCD_ECORRUPT;
    if (*(const uint8_t *)val == SPAN_ALIAS)
        return IOCD_ENOTFOUND;
    if (*(const uint8_t *)val != SPAN_SHARED) {
        if (span != 0)
            return IOCD_ENOTFOUND;
        *part = val;
        *part_len = len;
        return IOCD_OK;
    }
    err = codec_span_parts(val, len, parts, CODEC_SPAN_PARTS, &n);
    for (i = 0; err == IOCD_OK && i < n; i++)
        if (parts[i].span == span && parts[i].slot == slot) {
            *part = parts[i].data;
            *part_len = parts[i].len;
            return IOCD_OK;
        }
    return err == IOCD_OK ? IOCD_ENOTFOUND : err;
}

iocd_err codec_span_pack(const codec_frame *f, size_t n, iocd_buf *out)
{
    uint8_t tmp[32];
    size_t i, k;
    iocd_err err;

    tmp[0] = SPAN_VERSION;
    k = 1 + store_varint_put(tmp + 1, n);
    err = iocd_buf_append(out, tmp, k);
    for (i = 0; i < n && err == IOCD_OK; i++) {
        k = store_varint_put(tmp, f[i].group);
        tmp[k++] = (uint8_t)f[i].kind;
        k += store_varint_put(tmp + k, f[i].len);
        err = iocd_buf_append(out, tmp, k);
    }
    for (i = 0; i < n && err == IOCD_OK; i++)
        err = iocd_buf_append(out, f[i].data, f[i].len);
    return err;
}

iocd_err codec_span_each(const void *val, size_t len, codec_frame_fn fn, void *ud)
{
    const uint8_t *p = val, *end = p + len, *h;
    uint64_t n, g, flen, i, off = 0;
    iocd_err err = IOCD_OK;

    if (len < 2 || *p++ != SPAN_VERSION || !store_varint_get(&p, end, &n) || n > len)
        return IOCD_ECORRUPT;
    for (h = p, i = 0; i < n; i++) { /* the header ends where the frames begin */
        if (!store_varint_get(&h, end, &g) || h >= end)
            return IOCD_ECORRUPT;
        h++; /* the kind */
        if (!store_varint_get(&h, end, &flen))
            return IOCD_ECORRUPT;
    }
    for (i = 0; i < n && err == IOCD_OK; i++) {
        codec_frame f;
        store_varint_get(&p, end, &g);
        f.kind = *p++;
        store_varint_get(&p, end, &flen);
        if (flen > (uint64_t)(end - h) || off > (uint64_t)(end - h) - flen)
            return IOCD_ECORRUPT;
        f.group = (unsigned)g;
        f.data = h + off;
        f.len = (size_t)flen;
        off += flen;
        err = fn(ud, &f);
    }
    return err;
}

typedef struct span_find {
    unsigned group, kind;
    const void *data;
    size_t len;
} span_find;

static iocd_err span_find_one(void *ud, const codec_frame *f)
{
    span_find *s = ud;

    if (f->group != s->group || f->kind != s->kind)
        return IOCD_OK;
    s->data = f->data;
    s->len = f->len;
    return IOCD_EEXIST;
}

iocd_err codec_span_find(const void *val, size_t len, unsigned group, unsigned kind,
                         const void **data, size_t *flen)
{
    span_find s = { group, kind, NULL, 0 };
    iocd_err err = codec_span_each(val, len, span_find_one, &s);

    if (err == IOCD_EEXIST) {
        *data = s.data;
        *flen = s.len;
        return IOCD_OK;
    }
    return err == IOCD_OK ? IOCD_ENOTFOUND : err;
}

/* ---- WAL records ----------------------------------------------------------------------- */

#define WAL_RAW      0
#define WAL_ZSTD     1
#define WAL_ZSTD_LVL 1 /* the writer's hot path: the fastest level halves the WAL already */
#define WAL_RAW_MAX  (256u << 20)

iocd_err codec_wal_pack(const void *entries, size_t len, iocd_buf *out)
{
    return codec_pack(entries, len, WAL_ZSTD_LVL, out);
}

iocd_err codec_pack(const void *entries, size_t len, int level, iocd_buf *out)
{
    size_t bound = ZSTD_compressBound(len), zn;
    uint8_t tag = WAL_ZSTD;
    iocd_err err = iocd_buf_reserve(out, bound + 1);

    if (err != IOCD_OK)
        return err;
    zn = z_compress(out->data + out->len + 1, bound, entries, len, level);
    if (ZSTD_isError(zn) || zn >= len) {
        tag = WAL_RAW; /* incompressible: store as is */
        err = iocd_buf_append(out, &tag, 1);
        return err == IOCD_OK ? iocd_buf_append(out, entries, len) : err;
    }
    out->data[out->len] = (char)tag;
    out->len += zn + 1;
    return IOCD_OK;
}

iocd_err codec_wal_unpack(const void *rec, size_t len, iocd_buf *scratch, const uint8_t **entries,
                          size_t *entries_len)
{
    const uint8_t *p = rec;
    unsigned long long raw;
    size_t got;
    iocd_err err;

    if (len == 0)
        return IOCD_ECORRUPT;
    if (p[0] == WAL_RAW) {
        *entries = p + 1;
        *entries_len = len - 1;
        return IOCD_OK;
    }
    if (p[0] != WAL_ZSTD)
        return IOCD_ECORRUPT;
    raw = ZSTD_getFrameContentSize(p + 1, len - 1);
    if (raw == ZSTD_CONTENTSIZE_ERROR || raw == ZSTD_CONTENTSIZE_UNKNOWN || raw > WAL_RAW_MAX)
        return IOCD_ECORRUPT;
    iocd_buf_reset(scratch);
    err = iocd_buf_reserve(scratch, (size_t)raw);
    if (err != IOCD_OK)
        return err;
    got = z_decompress(scratch->data, (size_t)raw + 1, p + 1, len - 1);
    if (ZSTD_isError(got) || got != raw)
        return IOCD_ECORRUPT;
    scratch->len = got;
    *entries = (const uint8_t *)scratch->data;
    *entries_len = got;
    return IOCD_OK;
}
