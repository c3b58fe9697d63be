/* storage/head.c - a series' unsealed samples, kept compact: samples that arrive in time order
 * (the usual case) append to a byte stream — zigzag varint delta-of-delta times, and values
 * as varint deltas of their decimal-scaled integer (tag 0), a new scale and absolute integer
 * (tag 1), or 8 raw bytes (tag 2: NaN payloads, infinities, -0, non-decimals) — so a head costs
 * a few bytes per sample instead of sixteen. Samples that arrive out of order, or rewrite a
 * timestamp, go to a small sorted side list that wins over the stream for equal times. */
#include "storage/storage_int.h"

#include <math.h>
#include <string.h>

#define E_MAX CODEC_E_MAX

static iocd_err reserve(store_head *h, size_t extra)
{
    uint8_t *g;
    uint32_t cap;

    if (h->len + extra <= h->cap)
        return IOCD_OK;
    cap = h->cap != 0 ? h->cap + h->cap / 2 : 32;
    while (cap < h->len + extra)
        cap += cap / 2;
    g = iocd_realloc(h->buf, cap);
    if (g == NULL)
        return IOCD_ENOMEM;
    h->buf = g;
    h->cap = cap;
    return IOCD_OK;
}

#define SAMPLE_MAX 32 /* a sample's encoding: at most 10 + 10 + 1 + 10 bytes */

/* Encodes a sample after h's stream at w; returns its length, and the decimal state (exponent
 * and scaled value) the stream has after it. */
static size_t encode(const store_head *h, uint8_t *w, int64_t t, double v, int *e_out,
                     int64_t *m_out)
{
    uint8_t *start = w;
    int64_t m = h->last_m, dt = (int64_t)((uint64_t)t - (uint64_t)h->last_t);
    int e = h->e;

    if (h->n == 0)
        w += store_varint_put(w, codec_zigzag(t));
    else
        w += store_varint_put(
            w, codec_zigzag(h->n == 1 ? dt : (int64_t)((uint64_t)dt - (uint64_t)h->last_dt)));
    if (h->n > 0 && codec_decimal_at(v, h->e, &m)) {
        w += store_varint_put(w, codec_zigzag((int64_t)((uint64_t)m - (uint64_t)h->last_m)) << 2);
    } else {
        for (e = h->n > 0 ? h->e : 0; e <= E_MAX && !codec_decimal_at(v, e, &m); e++)
            ;
        if (e <= E_MAX) {
            w += store_varint_put(w, 1);
            *w++ = (uint8_t)e;
            w += store_varint_put(w, codec_zigzag(m));
        } else {
            w += store_varint_put(w, 2);
            memcpy(w, &v, 8);
            w += 8;
            e = h->e;
            m = h->last_m; /* a raw value leaves the decimal state as it was */
        }
    }
    *e_out = e;
    *m_out = m;
    return (size_t)(w - start);
}

/* In place while a worst case fits in the stream; near its end, through a scratch buffer, so
 * the stream grows by what the sample takes (32 bytes of headroom kept in every series were
 * 3 MB at 100k series). */
static iocd_err append(store_head *h, int64_t t, double v)
{
    uint8_t tmp[SAMPLE_MAX];
    int64_t m;
    size_t len;
    int e;

    if (h->cap - h->len >= SAMPLE_MAX) {
        len = encode(h, h->buf + h->len, t, v, &e, &m);
    } else {
        iocd_err err;
        len = encode(h, tmp, t, v, &e, &m);
        err = reserve(h, len);
        if (err != IOCD_OK)
            return err; /* the head is unchanged */
        memcpy(h->buf + h->len, tmp, len);
    }
    if (h->n > 0)
        h->last_dt = (int64_t)((uint64_t)t - (uint64_t)h->last_t);
    h->len += (uint32_t)len;
    h->last_t = t;
    h->e = (int16_t)e;
    h->last_m = m;
    h->n++;
    return IOCD_OK;
}

static iocd_err side_put(store_head *h, int64_t t, double v)
{
    uint32_t lo = 0, hi = h->n_ooo;

    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (h->ooo[mid].t_ms < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < h->n_ooo && h->ooo[lo].t_ms == t) {
        h->ooo[lo].v = v;
        return IOCD_OK;
    }
    if (h->n_ooo == h->cap_ooo) {
        uint32_t cap = h->cap_ooo != 0 ? h->cap_ooo * 2 : 4;
        iocd_sample *g = iocd_realloc(h->ooo, cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        h->ooo = g;
        h->cap_ooo = cap;
    }
    memmove(h->ooo + lo + 1, h->ooo + lo, (h->n_ooo - lo) * sizeof(*h->ooo));
    h->ooo[lo].t_ms = t;
    h->ooo[lo].v = v;
    h->n_ooo++;
    return IOCD_OK;
}

iocd_err store_head_put(store_head *h, int64_t t, double v)
{
    iocd_err err;

    if (h->n == 0 || t > h->last_t)
        err = append(h, t, v);
    else
        err = side_put(h, t, v);
    if (err == IOCD_OK && (!h->has_newest || t > h->newest)) {
        h->newest = t;
        h->has_newest = true;
    }
    return err;
}

size_t store_head_count(const store_head *h)
{
    return (size_t)h->n + h->n_ooo;
}

size_t store_head_bytes(const store_head *h)
{
    return (size_t)h->cap + (size_t)h->cap_ooo * sizeof(iocd_sample);
}

/* Decodes the stream into out (room for h->n). */
static void decode_stream(const store_head *h, iocd_sample *out)
{
    const uint8_t *p = h->buf, *end = h->buf + h->len;
    int64_t t = 0, dt = 0, m = 0;
    uint64_t u;
    uint32_t i;
    int e = 0;

    for (i = 0; i < h->n; i++) {
        store_varint_get(&p, end, &u);
        if (i == 0) {
            t = codec_unzigzag(u);
        } else {
            int64_t d = codec_unzigzag(u);
            dt = i == 1 ? d : (int64_t)((uint64_t)dt + (uint64_t)d);
            t = (int64_t)((uint64_t)t + (uint64_t)dt);
        }
        out[i].t_ms = t;
        store_varint_get(&p, end, &u);
        if ((u & 3) == 0) {
            m = (int64_t)((uint64_t)m + (uint64_t)codec_unzigzag(u >> 2));
            out[i].v = (double)m / codec_pow10[e];
        } else if ((u & 3) == 1) {
            e = *p++;
            store_varint_get(&p, end, &u);
            m = codec_unzigzag(u);
            out[i].v = (double)m / codec_pow10[e];
        } else {
            memcpy(&out[i].v, p, 8);
            p += 8;
        }
    }
}

iocd_err store_head_decode(const store_head *h, iocd_sample **out, size_t *n_out)
{
    size_t n = store_head_count(h), i = 0, j = 0, k = 0;
    iocd_sample *stream, *res;

    res = iocd_malloc((n != 0 ? n : 1) * sizeof(*res));
    stream = iocd_malloc(((size_t)h->n + 1) * sizeof(*stream));
    if (res == NULL || stream == NULL) {
        iocd_free(res);
        iocd_free(stream);
        return IOCD_ENOMEM;
    }
    decode_stream(h, stream);
    /* Merge: both sorted; the side list wins for equal times. */
    while (i < h->n || j < h->n_ooo) {
        if (j == h->n_ooo || (i < h->n && stream[i].t_ms < h->ooo[j].t_ms)) {
            res[k++] = stream[i++];
        } else {
            if (i < h->n && stream[i].t_ms == h->ooo[j].t_ms)
                i++;
            res[k++] = h->ooo[j++];
        }
    }
    iocd_free(stream);
    *out = res;
    *n_out = k;
    return IOCD_OK;
}

iocd_err store_head_take_before(store_head *h, int64_t before, iocd_sample **out, size_t *n_out)
{
    iocd_sample *all = NULL;
    size_t n = 0, k, i;
    store_head rest;
    iocd_err err = IOCD_OK;

    *out = NULL;
    *n_out = 0;
    if (store_head_count(h) == 0)
        return IOCD_OK;
    if ((h->n_ooo == 0 || h->ooo[0].t_ms >= before) && h->n > 0) {
        /* Fast path: nothing to take when the stream's first sample is not before. */
        const uint8_t *p = h->buf;
        uint64_t u;
        store_varint_get(&p, h->buf + h->len, &u);
        if (codec_unzigzag(u) >= before)
            return IOCD_OK;
    }
    err = store_head_decode(h, &all, &n);
    if (err != IOCD_OK)
        return err;
    for (k = 0; k < n && all[k].t_ms < before; k++)
        ;
    if (k == 0) {
        iocd_free(all);
        return IOCD_OK;
    }
    /* Re-encode what stays (a few samples: the part of the current period). */
    memset(&rest, 0, sizeof(rest));
    for (i = k; i < n && err == IOCD_OK; i++)
        err = store_head_put(&rest, all[i].t_ms, all[i].v);
    if (err != IOCD_OK) {
        store_head_free(&rest);
        iocd_free(all);
        return err;
    }
    rest.newest = h->newest;
    rest.has_newest = h->has_newest;
    store_head_free(h);
    *h = rest;
    *out = all; /* the first k are the taken ones */
    *n_out = k;
    return IOCD_OK;
}

void store_head_free(store_head *h)
{
    iocd_free(h->buf);
    iocd_free(h->ooo);
    memset(h, 0, sizeof(*h));
}
