/* storage/codec.c - how sealed samples are laid out on disk; the only file that sees zstd.
 * Following the measurements in the project's compression notes: sensor values are decimals
 * rounded to a resolution, so each series' chunk picks the smallest exponent e (0..15) that
 * makes its values integers m = v * 10^e, stores m as zigzag varint deltas, and timestamps as
 * zigzag varint delta-of-deltas. Values that are not such decimals (NaN payloads, infinities,
 * -0, 0.1+0.2) are escaped and stored as their 8 raw bytes, so every value round-trips
 * bit-exact. The streams of up to 64 series (one id group) for one period form a block,
 * compressed with zstd: similar series next to each other compress far better together.
 *
 * Stream: varint n, byte e, then per sample:
 *   t: first zigzag(t), then zigzag(dt), then zigzag(dt - previous dt)
 *   v: zigzag(delta m) << 1 for a decimal, or 1 followed by 8 raw bytes
 * Block (before zstd): byte version, varint count, per series varint id-delta, varint bytes;
 * then the streams. */
#include "storage/storage_int.h"

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

#define BLOCK_VERSION 1
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

/* Whether v is exactly m / 10^e with |m| < 2^53; writes m. */
bool codec_decimal_at(double v, int e, int64_t *m)
{
    double scaled, back;
    int64_t r;

    if (!isfinite(v) || (v == 0 && signbit(v)))
        return false;
    scaled = v * codec_pow10[e];
    if (!(fabs(scaled) < 9007199254740992.0))
        return false;
    r = (int64_t)llround(scaled);
    back = (double)r / codec_pow10[e];
    if (memcmp(&back, &v, sizeof(v)) != 0)
        return false;
    *m = r;
    return true;
}

/* The exponent for a chunk: the largest of its values' smallest exponents, so every value
 * that is a decimal at all is an integer at e; the others are escaped. */
static int choose_e(const iocd_sample *s, size_t n)
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

iocd_err codec_stream_encode(const iocd_sample *s, size_t n, iocd_buf *out)
{
    uint8_t tmp[32];
    int64_t prev_t = 0, prev_dt = 0, prev_m = 0, m;
    size_t i, k;
    int e = choose_e(s, n);
    iocd_err err;

    k = store_varint_put(tmp, n);
    tmp[k++] = (uint8_t)e;
    err = iocd_buf_append(out, tmp, k);
    for (i = 0; i < n && err == IOCD_OK; i++) {
        int64_t t = s[i].t_ms;
        if (i == 0) {
            k = store_varint_put(tmp, codec_zigzag(t));
        } else {
            int64_t dt = (int64_t)((uint64_t)t - (uint64_t)prev_t);
            k = store_varint_put(
                tmp, i == 1 ? codec_zigzag(dt)
                            : codec_zigzag((int64_t)((uint64_t)dt - (uint64_t)prev_dt)));
            prev_dt = dt;
        }
        prev_t = t;
        if (codec_decimal_at(s[i].v, e, &m)) {
            k += store_varint_put(tmp + k, codec_zigzag((int64_t)((uint64_t)m - (uint64_t)prev_m))
                                               << 1);
            prev_m = m;
        } else {
            tmp[k++] = 1;
            memcpy(tmp + k, &s[i].v, 8);
            k += 8;
        }
        err = iocd_buf_append(out, tmp, k);
    }
    return err;
}

/* The one stream decoder. Integer values (e = 0) skip the division: m / 10^0 is m. */
iocd_err codec_stream_append(const uint8_t *p, size_t len, int64_t lo, int64_t hi,
                             iocd_sample **buf, size_t *cap, size_t *n_io, codec_append *info)
{
    const uint8_t *end = p + len;
    uint64_t n, u;
    int64_t prev_t = 0, prev_dt = 0, m = 0, last;
    double scale;
    iocd_sample *s;
    size_t i, k = *n_io;
    bool ascending = true, nan = false;
    int e;

    if (!store_varint_get(&p, end, &n) || p >= end || n > len)
        return IOCD_ECORRUPT; /* every sample takes at least one byte */
    e = *p++;
    if (e > E_MAX)
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
    s = *buf;
    scale = codec_pow10[e];
    last = k > 0 ? s[k - 1].t_ms : INT64_MIN;
    for (i = 0; i < n; i++) {
        double v;
        if (!store_varint_get(&p, end, &u))
            goto corrupt;
        if (i == 0) {
            prev_t = codec_unzigzag(u);
        } else {
            int64_t d = codec_unzigzag(u);
            prev_dt = i == 1 ? d : (int64_t)((uint64_t)prev_dt + (uint64_t)d);
            prev_t = (int64_t)((uint64_t)prev_t + (uint64_t)prev_dt);
        }
        if (!store_varint_get(&p, end, &u))
            goto corrupt;
        if (u & 1) {
            if (u != 1 || end - p < 8)
                goto corrupt;
            memcpy(&v, p, 8);
            p += 8;
            nan |= isnan(v);
        } else {
            m = (int64_t)((uint64_t)m + (uint64_t)codec_unzigzag(u >> 1));
            v = e == 0 ? (double)m : (double)m / scale;
        }
        if (prev_t < lo || prev_t > hi)
            continue;
        ascending &= prev_t > last;
        last = prev_t;
        s[k].t_ms = prev_t;
        s[k].v = v;
        k++;
    }
    if (info != NULL) {
        info->ascending &= ascending;
        info->nan |= nan;
    }
    *n_io = k;
    return IOCD_OK;
corrupt:
    return IOCD_ECORRUPT;
}

size_t codec_stream_count(const uint8_t *p, size_t len)
{
    uint64_t n;

    return store_varint_get(&p, p + len, &n) && n <= len ? (size_t)n : 0;
}

/* Decodes a whole stream into *buf (grown as needed, *cap samples; reused across calls by
 * readers that decode many series). */
static iocd_err stream_decode(const uint8_t *p, size_t len, iocd_sample **buf, size_t *cap,
                              size_t *n_out)
{
    *n_out = 0;
    return codec_stream_append(p, len, INT64_MIN, INT64_MAX, buf, cap, n_out, NULL);
}

iocd_err codec_stream_decode(const uint8_t *p, size_t len, iocd_sample **out, size_t *n_out)
{
    iocd_sample *s = NULL;
    size_t cap = 0, n = 0;
    iocd_err err = stream_decode(p, len, &s, &cap, &n);

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
typedef iocd_err (*payload_fn)(const codec_series *cs, int64_t arg, iocd_buf *out);

static iocd_err stream_payload(const codec_series *cs, int64_t arg, iocd_buf *out)
{
    (void)arg;
    return codec_stream_encode(cs->s, cs->n, out);
}

static iocd_err block_encode_v(const codec_series *list, size_t n, int level, uint8_t version,
                               payload_fn payload, int64_t arg, iocd_buf *out)
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
    return block_encode_v(list, n, level, BLOCK_VERSION, stream_payload, 0, out);
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
    return block_open_v(b, data, len, max_raw, 1u << BLOCK_VERSION);
}

/* Walks a block: for each series, fn gets its id and its stream, or the walk stops early
 * when fn returns non-OK (IOCD_EEXIST is used below to mean "found, stop"). */
typedef iocd_err (*stream_fn)(void *ud, uint64_t id, const uint8_t *p, size_t len);

static iocd_err block_walk_v(const void *data, size_t len, size_t max_raw, unsigned versions,
                             int *version, stream_fn fn, void *ud)
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

static iocd_err block_walk(const void *data, size_t len, size_t max_raw, stream_fn fn, void *ud)
{
    int version;

    return block_walk_v(data, len, max_raw, 1u << BLOCK_VERSION, &version, fn, ud);
}

typedef struct find_ctx {
    uint64_t id;
    iocd_sample **out;
    size_t *n_out;
} find_ctx;

static iocd_err find_one(void *ud, uint64_t id, const uint8_t *p, size_t len)
{
    find_ctx *f = ud;
    iocd_err err;

    if (id != f->id)
        return IOCD_OK;
    err = codec_stream_decode(p, len, f->out, f->n_out);
    return err == IOCD_OK ? IOCD_EEXIST : err;
}

iocd_err codec_block_find(const void *data, size_t len, uint64_t id, size_t max_raw,
                          iocd_sample **out, size_t *n_out)
{
    find_ctx f = { id, out, n_out };
    iocd_err err = block_walk(data, len, max_raw, find_one, &f);

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
} select_ctx;

static iocd_err select_one(void *ud, uint64_t id, const uint8_t *p, size_t len)
{
    select_ctx *c = ud;
    size_t lo = 0, hi = c->n;
    size_t n = 0;
    iocd_err err;

    if (c->ids == NULL) {
        err = stream_decode(p, len, &c->buf, &c->cap, &n);
        return err == IOCD_OK ? c->fn(c->ud, id, c->buf, n) : err;
    }

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c->ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == c->n || c->ids[lo] != id)
        return IOCD_OK; /* not wanted: left encoded */
    err = stream_decode(p, len, &c->buf, &c->cap, &n);
    return err == IOCD_OK ? c->fn(c->ud, id, c->buf, n) : err;
}

iocd_err codec_block_select(const void *data, size_t len, size_t max_raw, const uint64_t *ids,
                            size_t n, codec_series_fn fn, void *ud)
{
    select_ctx c = { ids, n, fn, ud, NULL, 0 };
    iocd_err err = block_walk(data, len, max_raw, select_one, &c);

    iocd_free(c.buf);
    return err;
}

iocd_err codec_block_each(const void *data, size_t len, size_t max_raw, codec_series_fn fn,
                          void *ud)
{
    return codec_block_select(data, len, max_raw, NULL, 0, fn, ud);
}

/* ---- Rollup blocks ---------------------------------------------------------------------
 * Version 2 (written now): per series, its buckets as
 *   varint nb, byte e (the exponent of the series' samples, as in a stream), then per bucket:
 *   t: first zigzag(t / res), then varint(t / res - previous - 1)
 *   varint count << 2 | 1 if min, max, last are raw | 2 if the sum is raw
 *   zigzag((last_t - t) - the previous bucket's), regular samples making it 0
 *   min, max, last: zigzag(min_m - previous bucket's min_m), zigzag(max_m - min_m),
 *                   zigzag(last_m - min_m); or their 24 raw bytes
 *   sum: zigzag(sum_m - count * min_m) (0 for min_m when those are raw), sum_m being the exact
 *        sum of the samples' mantissas; or 8 raw bytes (a sample that is no decimal at e)
 * so a bucket of steady sensor data is a few bytes before zstd, and its sum is the exact
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

/* One series' buckets at resolution arg, from its time-ordered samples (staleness markers are
 * left out; min and max fold as Prometheus' min_over_time and max_over_time do). */
static iocd_err rollup_payload(const codec_series *cs, int64_t res, iocd_buf *out)
{
    const iocd_sample *s = cs->s;
    size_t i = 0, nb = 0, j;
    int e = choose_e(s, cs->n);
    int64_t prev_b = 0, prev_min = 0, prev_off = 0;
    bool first = true;
    iocd_err err;

    for (j = 0; j < cs->n; j++) /* count the buckets first */
        if (!is_stale_nan(s[j].v) && (nb == 0 || bucket_of(s[j].t_ms, res) != prev_b)) {
            prev_b = bucket_of(s[j].t_ms, res);
            nb++;
        }
    err = put_varint(out, nb);
    if (err == IOCD_OK)
        err = iocd_buf_append(out, &(uint8_t){ (uint8_t)e }, 1);
    prev_b = 0;
    while (err == IOCD_OK && i < cs->n) {
        int64_t b, m, min_m = 0, max_m = 0, last_m = 0, last_t = 0;
        uint64_t sum_m = 0, count = 0;
        double min = 0, max = 0, sum = 0, last = 0;
        bool exact = true, vals_raw;
        if (is_stale_nan(s[i].v)) {
            i++;
            continue;
        }
        b = bucket_of(s[i].t_ms, res);
        for (; i < cs->n && bucket_of(s[i].t_ms, res) == b; i++) {
            double v = s[i].v;
            if (is_stale_nan(v))
                continue;
            if (count == 0) {
                min = max = v;
            } else {
                if (v < min || isnan(min))
                    min = v;
                if (v > max || isnan(max))
                    max = v;
            }
            sum += v;
            count++;
            last = v;
            last_t = s[i].t_ms;
            if (exact && codec_decimal_at(v, e, &m))
                sum_m += (uint64_t)m;
            else
                exact = false;
            if (exact && fabs((double)(int64_t)sum_m) >= M_LIMIT)
                exact = false;
        }
        vals_raw = !codec_decimal_at(min, e, &min_m) || !codec_decimal_at(max, e, &max_m) ||
                   !codec_decimal_at(last, e, &last_m);
        err =
            put_varint(out, first ? codec_zigzag(b / res) : (uint64_t)(b / res - prev_b / res - 1));
        first = false;
        prev_b = b;
        if (err == IOCD_OK)
            err = put_varint(out, count << 2 | (vals_raw ? 1u : 0u) | (exact ? 0u : 2u));
        if (err == IOCD_OK)
            err = put_varint(out,
                             codec_zigzag((int64_t)((uint64_t)(last_t - b) - (uint64_t)prev_off)));
        prev_off = last_t - b;
        if (err == IOCD_OK && !vals_raw) {
            err = put_varint(out, codec_zigzag((int64_t)((uint64_t)min_m - (uint64_t)prev_min)));
            if (err == IOCD_OK)
                err = put_varint(out, codec_zigzag((int64_t)((uint64_t)max_m - (uint64_t)min_m)));
            if (err == IOCD_OK)
                err = put_varint(out, codec_zigzag((int64_t)((uint64_t)last_m - (uint64_t)min_m)));
            prev_min = min_m;
        } else if (err == IOCD_OK) {
            err = put_raw(out, min);
            if (err == IOCD_OK)
                err = put_raw(out, max);
            if (err == IOCD_OK)
                err = put_raw(out, last);
            min_m = 0;
        }
        if (err == IOCD_OK && exact)
            err = put_varint(out, codec_zigzag((int64_t)(sum_m - count * (uint64_t)min_m)));
        else if (err == IOCD_OK)
            err = put_raw(out, sum);
    }
    return err;
}

iocd_err codec_rollup_encode(const codec_series *list, size_t n, int64_t res_ms, int level,
                             iocd_buf *out)
{
    if (res_ms <= 0)
        return IOCD_EINVAL;
    return block_encode_v(list, n, level, ROLLUP_VERSION, rollup_payload, res_ms, out);
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
    size_t cap;
    /* version 1: the streams of the series being collected */
    uint64_t cur;
    unsigned seen;
    iocd_sample *agg[ROLLUP_V1_AGGS];
    size_t agg_n[ROLLUP_V1_AGGS], agg_cap[ROLLUP_V1_AGGS];
} rollup_ctx;

static bool rollup_wanted(const rollup_ctx *c, uint64_t id)
{
    size_t lo = 0, hi = c->n;

    if (c->ids == NULL)
        return true;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c->ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->n && c->ids[lo] == id;
}

static iocd_err rollup_grow(rollup_ctx *c, size_t n)
{
    store_rollup *g;

    if (n <= c->cap)
        return IOCD_OK;
    g = iocd_realloc(c->r, n * sizeof(*g));
    if (g == NULL)
        return IOCD_ENOMEM;
    c->r = g;
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
    uint64_t nb, u, head, count, i;
    int64_t b = 0, prev_min = 0, off = 0, min_m, max_m, last_m;
    int e;
    iocd_err err;

    if (!store_varint_get(&p, end, &nb) || p >= end || nb > len)
        return IOCD_ECORRUPT; /* every bucket takes at least a few bytes */
    e = *p++;
    if (e > E_MAX)
        return IOCD_ECORRUPT;
    err = rollup_grow(c, (size_t)nb);
    if (err != IOCD_OK)
        return err;
    for (i = 0; i < nb; i++) {
        store_rollup *r = &c->r[i];
        if (!store_varint_get(&p, end, &u))
            return IOCD_ECORRUPT;
        b = i == 0 ? (int64_t)((uint64_t)codec_unzigzag(u) * (uint64_t)c->res)
                   : (int64_t)((uint64_t)b + (u + 1) * (uint64_t)c->res);
        if (!store_varint_get(&p, end, &head) || !store_varint_get(&p, end, &u))
            return IOCD_ECORRUPT;
        count = head >> 2;
        r->t_ms = b;
        r->count = (double)count;
        off = (int64_t)((uint64_t)off + (uint64_t)codec_unzigzag(u));
        r->last_t_ms = (int64_t)((uint64_t)b + (uint64_t)off);
        if (!(head & 1)) {
            uint64_t d1, d2, d3;
            if (!store_varint_get(&p, end, &d1) || !store_varint_get(&p, end, &d2) ||
                !store_varint_get(&p, end, &d3))
                return IOCD_ECORRUPT;
            min_m = (int64_t)((uint64_t)prev_min + (uint64_t)codec_unzigzag(d1));
            max_m = (int64_t)((uint64_t)min_m + (uint64_t)codec_unzigzag(d2));
            last_m = (int64_t)((uint64_t)min_m + (uint64_t)codec_unzigzag(d3));
            prev_min = min_m;
            r->min = (double)min_m / codec_pow10[e];
            r->max = (double)max_m / codec_pow10[e];
            r->last = (double)last_m / codec_pow10[e];
        } else {
            if (!get_raw(&p, end, &r->min) || !get_raw(&p, end, &r->max) ||
                !get_raw(&p, end, &r->last))
                return IOCD_ECORRUPT;
            min_m = 0;
        }
        if (!(head & 2)) {
            if (!store_varint_get(&p, end, &u))
                return IOCD_ECORRUPT;
            r->sum = (double)(int64_t)((uint64_t)codec_unzigzag(u) + count * (uint64_t)min_m) /
                     codec_pow10[e];
        } else if (!get_raw(&p, end, &r->sum)) {
            return IOCD_ECORRUPT;
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
    err = stream_decode(p, len, &c->agg[a], &c->agg_cap[a], &n);
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

    if (c->version == 1)
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
    err = block_walk_v(data, len, max_raw, 1u << BLOCK_VERSION | 1u << ROLLUP_VERSION, &c->version,
                       rollup_one, c);
    if (err == IOCD_OK && c->seen != 0)
        err = IOCD_ECORRUPT;
    iocd_free(c->r);
    for (a = 0; a < ROLLUP_V1_AGGS; a++)
        iocd_free(c->agg[a]);
    iocd_free(c);
    return err;
}

/* ---- Span containers -------------------------------------------------------------------
 * A compacted span of several id groups in one LMDB value (fewer values, less page rounding):
 *   byte version, varint n, per frame: varint group (low bits), byte kind, varint length;
 *   then the frames (each a block or rollup block as above), in that order. */

#define SPAN_VERSION 1

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
