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

iocd_err codec_block_encode(const codec_series *list, size_t n, int level, iocd_buf *out)
{
    iocd_buf raw, streams;
    uint8_t tmp[24];
    uint64_t prev_id = 0;
    size_t i, bound, zn;
    iocd_err err = IOCD_OK;

    iocd_buf_init(&raw, 0);
    iocd_buf_init(&streams, 0);
    tmp[0] = BLOCK_VERSION;
    err = iocd_buf_append(&raw, tmp, 1 + store_varint_put(tmp + 1, n));
    for (i = 0; i < n && err == IOCD_OK; i++) {
        size_t before = streams.len, k;
        err = codec_stream_encode(list[i].s, list[i].n, &streams);
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

void codec_block_fini(codec_block *b)
{
    iocd_free(b->raw);
    iocd_free(b->streams);
    memset(b, 0, sizeof(*b));
}

iocd_err codec_block_open(codec_block *b, const void *data, size_t len, size_t max_raw)
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
    if (ZSTD_isError(got) || got != raw_len || b->raw[0] != BLOCK_VERSION)
        return IOCD_ECORRUPT;
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

/* Walks a block: for each series, fn gets its id and its stream, or the walk stops early
 * when fn returns non-OK (IOCD_EEXIST is used below to mean "found, stop"). */
typedef iocd_err (*stream_fn)(void *ud, uint64_t id, const uint8_t *p, size_t len);

static iocd_err block_walk(const void *data, size_t len, size_t max_raw, stream_fn fn, void *ud)
{
    codec_block b;
    size_t i;
    iocd_err err;

    memset(&b, 0, sizeof(b));
    err = codec_block_open(&b, data, len, max_raw);
    for (i = 0; err == IOCD_OK && i < b.n; i++)
        err = fn(ud, b.streams[i].id, b.streams[i].p, b.streams[i].len);
    codec_block_fini(&b);
    return err;
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
