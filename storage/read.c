/* storage/read.c - reading series: ids, postings, labels, samples (blocks merged with the
 * head, the last write of a timestamp winning); rollups are read in rollup.c.
 * Readers never block the writer: blocks are read in LMDB read transactions, and the head
 * is copied under st->mu before them, so a seal in between can only show a sample twice
 * (removed), never lose it. */
#include "storage/storage_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

iocd_err store_series_all(store *st, uint64_t **ids_out, size_t *n_out)
{
    uint64_t *ids;
    size_t n = 0, i;

    pthread_mutex_lock(&st->mu);
    ids = iocd_malloc((st->n_series + 1) * sizeof(*ids));
    for (i = 0; ids != NULL && i < st->by_id_cap; i++)
        if (st->by_id[i] != NULL && st->by_id[i]->persisted && !st->by_id[i]->deleted)
            ids[n++] = st->by_id[i]->id;
    pthread_mutex_unlock(&st->mu);
    if (ids == NULL)
        return IOCD_ENOMEM;
    *ids_out = ids;
    *n_out = n;
    return IOCD_OK;
}

iocd_err store_postings(store *st, const char *name, const char *value, uint64_t **ids_out,
                        size_t *n_out)
{
    store_wait_posted(st);
    return store_db_postings(st->db, name, value, ids_out, n_out);
}

iocd_err store_label_values(store *st, const char *name, char ***values_out, size_t *n_out)
{
    store_wait_posted(st);
    return store_db_label_values(st->db, name, values_out, n_out);
}

iocd_err store_label_names(store *st, char ***names_out, size_t *n_out)
{
    store_wait_posted(st);
    return store_db_label_names(st->db, names_out, n_out);
}

iocd_err store_series_labels(store *st, uint64_t id, store_label_fn fn, void *ud)
{
    uint8_t *key = NULL;
    size_t len = 0;
    store_series *s;
    iocd_err err;

    pthread_mutex_lock(&st->mu);
    s = store_series_get(st, id);
    if (s != NULL) {
        key = iocd_malloc(s->key_len + 1);
        len = s->key_len;
        if (key != NULL)
            memcpy(key, s->key, len);
    }
    pthread_mutex_unlock(&st->mu);
    if (s == NULL)
        return IOCD_ENOTFOUND;
    if (key == NULL)
        return IOCD_ENOMEM;
    err = store_key_walk(key, len, fn, ud);
    iocd_free(key);
    return err;
}

#define PAIRS_CHUNK 256 /* series whose keys are copied under one hold of the lock */

/* Appends a canonical key (varint length, name, varint length, value; sorted) as pairs. */
static iocd_err key_to_pairs(const uint8_t *key, size_t len, iocd_buf *out)
{
    const uint8_t *p = key, *end = key + len;
    uint64_t nl, vl;
    iocd_err err = iocd_buf_reserve(out, len + 2);

    while (err == IOCD_OK && p < end) {
        if (!store_varint_get(&p, end, &nl) || nl > (uint64_t)(end - p))
            return IOCD_ECORRUPT;
        err = iocd_buf_append(out, p, (size_t)nl);
        p += nl;
        if (err == IOCD_OK)
            err = iocd_buf_putc(out, '\0');
        if (err != IOCD_OK || !store_varint_get(&p, end, &vl) || vl > (uint64_t)(end - p))
            return err != IOCD_OK ? err : IOCD_ECORRUPT;
        err = iocd_buf_append(out, p, (size_t)vl);
        p += vl;
        if (err == IOCD_OK)
            err = iocd_buf_putc(out, '\0');
    }
    return err;
}

iocd_err store_series_pairs(store *st, const uint64_t *ids, size_t n, store_pairs_fn fn, void *ud)
{
    size_t off[PAIRS_CHUNK + 1], i = 0, j, m;
    iocd_buf b;
    iocd_err err = IOCD_OK;

    iocd_buf_init(&b, 0);
    while (err == IOCD_OK && i < n) {
        m = n - i < PAIRS_CHUNK ? n - i : PAIRS_CHUNK;
        iocd_buf_reset(&b);
        pthread_mutex_lock(&st->mu);
        for (j = 0; j < m && err == IOCD_OK; j++) {
            store_series *s = store_series_get(st, ids[i + j]);
            off[j] = b.len;
            if (s != NULL)
                err = key_to_pairs(s->key, s->key_len, &b);
        }
        off[m] = b.len;
        pthread_mutex_unlock(&st->mu);
        for (j = 0; j < m && err == IOCD_OK; j++)
            err = fn(ud, i + j, b.data + off[j], off[j + 1] - off[j]);
        i += m;
    }
    iocd_buf_fini(&b);
    return err;
}

typedef struct read_ctx {
    uint64_t id;
    int64_t start_ms, end_ms;
    iocd_sample *s;
    size_t n, cap;
    iocd_err err;
} read_ctx;

static iocd_err read_append(read_ctx *r, const iocd_sample *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (s[i].t_ms < r->start_ms || s[i].t_ms > r->end_ms)
            continue;
        if (r->n == r->cap) {
            size_t cap = r->cap != 0 ? r->cap * 2 : 256;
            iocd_sample *g = iocd_realloc(r->s, cap * sizeof(*g));
            if (g == NULL)
                return IOCD_ENOMEM;
            r->s = g;
            r->cap = cap;
        }
        r->s[r->n++] = s[i];
    }
    return IOCD_OK;
}

static iocd_err read_block(void *ud, int64_t period, int64_t last_ms, const void *data, size_t len)
{
    read_ctx *r = ud;
    iocd_sample *s = NULL;
    size_t n = 0;
    iocd_err err = codec_block_find(data, len, r->id, BLOCK_RAW_MAX, &s, &n);

    (void)period;
    (void)last_ms;
    if (err == IOCD_ENOTFOUND)
        return IOCD_OK;
    if (err == IOCD_OK)
        err = read_append(r, s, n);
    iocd_free(s);
    return err;
}

size_t store_samples_dedupe(iocd_sample *s, size_t n)
{
    size_t i, k = 0, w, lo, hi, mid;
    iocd_sample *tmp;

    for (i = 1; i < n && s[i - 1].t_ms < s[i].t_ms; i++)
        ;
    if (i >= n)
        return n; /* already strictly ascending: the common case */
    /* Insertion into the sorted prefix with binary search: stable, last write wins. */
    tmp = s;
    for (w = 1; w < n; w++) {
        iocd_sample x = tmp[w];
        lo = 0;
        hi = w;
        while (lo < hi) {
            mid = (lo + hi) / 2;
            if (tmp[mid].t_ms <= x.t_ms)
                lo = mid + 1;
            else
                hi = mid;
        }
        memmove(tmp + lo + 1, tmp + lo, (w - lo) * sizeof(*tmp));
        tmp[lo] = x;
    }
    for (i = 0; i < n; i++) {
        if (k > 0 && s[k - 1].t_ms == s[i].t_ms)
            s[k - 1] = s[i];
        else
            s[k++] = s[i];
    }
    return k;
}

iocd_err store_series_samples(const store_series *s, iocd_sample **out, size_t *n_out)
{
    iocd_sample *head = NULL, *all;
    size_t n = 0, i = 0, j = 0, k = 0;
    iocd_err err = store_head_decode(&s->head, &head, &n);

    if (err != IOCD_OK || s->n_sealing == 0) {
        *out = head;
        *n_out = n;
        return err;
    }
    all = iocd_malloc((n + s->n_sealing) * sizeof(*all));
    if (all == NULL) {
        iocd_free(head);
        return IOCD_ENOMEM;
    }
    while (i < n || j < s->n_sealing) {
        if (j == s->n_sealing || (i < n && head[i].t_ms <= s->sealing[j].t_ms)) {
            if (j < s->n_sealing && head[i].t_ms == s->sealing[j].t_ms)
                j++; /* a later write of the same timestamp */
            all[k++] = head[i++];
        } else {
            all[k++] = s->sealing[j++];
        }
    }
    iocd_free(head);
    *out = all;
    *n_out = k;
    return IOCD_OK;
}

iocd_err store_series_samples_in(const store_series *s, int64_t lo, int64_t hi, iocd_sample **out,
                                 size_t *n_out)
{
    iocd_sample *all = NULL;
    size_t n_all = 0, a = 0, b;
    iocd_err err = store_series_samples(s, &all, &n_all);

    if (err != IOCD_OK)
        return err;
    while (a < n_all && all[a].t_ms < lo)
        a++;
    for (b = a; b < n_all && all[b].t_ms <= hi; b++)
        ;
    memmove(all, all + a, (b - a) * sizeof(*all));
    *out = all;
    *n_out = b - a;
    return IOCD_OK;
}

size_t store_id_find(const uint64_t *ids, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n, mid;

    while (lo < hi) {
        mid = (lo + hi) / 2;
        if (ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && ids[lo] == id ? lo : n;
}

iocd_err store_read(store *st, uint64_t id, int64_t start_ms, int64_t end_ms, iocd_sample **out,
                    size_t *n_out)
{
    read_ctx r;
    iocd_sample *head = NULL;
    size_t n_head = 0;
    store_series *s;
    iocd_err err = IOCD_OK;

    memset(&r, 0, sizeof(r));
    r.id = id;
    r.start_ms = start_ms;
    r.end_ms = end_ms;
    /* The head first, then the blocks: a seal in between can only show a sample twice
     * (removed below), never lose it. */
    pthread_mutex_lock(&st->mu);
    s = store_series_get(st, id);
    if (s != NULL && store_series_samples_in(s, start_ms, end_ms, &head, &n_head) != IOCD_OK)
        head = NULL;
    pthread_mutex_unlock(&st->mu);
    if (s == NULL)
        return IOCD_ENOTFOUND;
    if (head == NULL)
        return IOCD_ENOMEM;
    err = store_db_blocks(st->db, STORE_DB_CHUNKS, id >> 6,
                          start_ms == INT64_MIN ? INT64_MIN : store_period_of(st, start_ms), end_ms,
                          read_block, &r);
    if (err == IOCD_OK)
        err = read_append(&r, head, n_head);
    iocd_free(head);
    if (err != IOCD_OK) {
        iocd_free(r.s);
        return err;
    }
    if (r.s == NULL) {
        r.s = iocd_malloc(sizeof(*r.s));
        if (r.s == NULL)
            return IOCD_ENOMEM;
    }
    *out = r.s;
    *n_out = store_samples_dedupe(r.s, r.n);
    return IOCD_OK;
}

/* ---- Spans ------------------------------------------------------------------------------ */

static int span_cmp(const void *a, const void *b)
{
    const store_span *x = a, *y = b;

    if (x->start_ms != y->start_ms)
        return x->start_ms < y->start_ms ? -1 : 1;
    return x->end_ms < y->end_ms ? -1 : x->end_ms > y->end_ms;
}

size_t store_spans_merge(store_span *s, size_t n)
{
    size_t i, k = 0;

    iocd_qsort(s, n, sizeof(*s), span_cmp);
    for (i = 0; i < n; i++) {
        if (s[i].start_ms > s[i].end_ms)
            continue;
        if (k > 0 && (s[k - 1].end_ms == INT64_MAX || s[i].start_ms <= s[k - 1].end_ms + 1)) {
            if (s[i].end_ms > s[k - 1].end_ms)
                s[k - 1].end_ms = s[i].end_ms;
            continue;
        }
        s[k++] = s[i];
    }
    return k;
}

/* The merged spans s that meet [lo, hi] lie within [*from, *to]; false: none meets it. */
static bool spans_hull(const store_span *s, size_t n, int64_t lo, int64_t hi, int64_t *from,
                       int64_t *to)
{
    size_t a = store_span_at(s, n, lo), b, first = a, mid;

    if (a == n || s[a].start_ms > hi)
        return false;
    for (b = n; a + 1 < b;) { /* the last one starting at or before hi */
        mid = (a + b) / 2;
        if (s[mid].start_ms <= hi)
            a = mid;
        else
            b = mid;
    }
    *from = s[first].start_ms;
    *to = s[a].end_ms;
    return true;
}

size_t store_span_at(const store_span *s, size_t n, int64_t t)
{
    size_t a = 0, b = n, mid;

    while (a < b) {
        mid = (a + b) / 2;
        if (s[mid].end_ms < t)
            a = mid + 1;
        else
            b = mid;
    }
    return a;
}

bool store_spans_meet(const store_span *s, size_t n, int64_t lo, int64_t hi)
{
    size_t a = store_span_at(s, n, lo);

    return a < n && s[a].start_ms <= hi;
}

/* ---- Many series ----------------------------------------------------------------------------
 * One pass per id group (the series of one block): the wanted series' heads are copied under
 * the mutex, then each block of the group in a period the spans meet is decompressed once and
 * indexed, then the series are decoded one at a time, each from every block in turn into one
 * buffer that stays in the cache, and handed over. Blocks come in (period, sequence) order and
 * the head last, so when a series' samples are not already ascending, sorting them stably
 * keeps the last write of a timestamp. */

#define GROUP_SHIFT 6 /* a block holds the series of one id group: id >> 6 */

/* One store_read_spans call's state, reused from group to group. */
typedef struct spans_read {
    store *st;
    store_span *spans; /* merged */
    size_t n_spans;
    int64_t lo, hi;        /* the first span's start, the last one's end */
    const uint64_t *gids;  /* the current group's wanted ids */
    size_t g;              /* how many */
    codec_block *blocks;   /* the current group's, in (period, sequence) order */
    bool *opened;          /* per block: decompressed (else all it is asked for is cached) */
    cache_block **entries; /* per block: its read-cache entry, held, or NULL */
    store_span *wanted;    /* per block: where the spans that meet it lie (to decode) */
    size_t *cursor;        /* per block: the next stream to look at */
    size_t n_blocks, cap_blocks;
    iocd_sample *buf; /* one series' samples */
    size_t cap;
    iocd_sample *whole; /* one stream decoded whole, to be kept in the cache */
    size_t cap_whole;
    uint64_t hits; /* series served from the cache */
} spans_read;

static iocd_err grow_blocks(spans_read *r)
{
    size_t cap = r->cap_blocks != 0 ? r->cap_blocks * 2 : 8;
    codec_block *b = iocd_realloc(r->blocks, cap * sizeof(*b));
    bool *o;
    cache_block **e;
    store_span *w;
    size_t *c;

    if (b == NULL)
        return IOCD_ENOMEM;
    r->blocks = b;
    memset(r->blocks + r->cap_blocks, 0, (cap - r->cap_blocks) * sizeof(*b));
    r->cap_blocks = cap; /* the blocks above are zeroed: codec_block_fini may see them */
    o = iocd_realloc(r->opened, cap * sizeof(*o));
    if (o == NULL)
        return IOCD_ENOMEM;
    r->opened = o;
    e = iocd_realloc(r->entries, cap * sizeof(*e));
    if (e == NULL)
        return IOCD_ENOMEM;
    r->entries = e;
    w = iocd_realloc(r->wanted, cap * sizeof(*w));
    if (w == NULL)
        return IOCD_ENOMEM;
    r->wanted = w;
    c = iocd_realloc(r->cursor, cap * sizeof(*c));
    if (c == NULL)
        return IOCD_ENOMEM;
    r->cursor = c;
    return IOCD_OK;
}

static iocd_err open_block(void *ud, int64_t period, int64_t last_ms, const void *data, size_t len)
{
    spans_read *r = ud;
    size_t k = r->n_blocks;
    int64_t from, to;
    cache_block *e;
    iocd_err err;

    if (!spans_hull(r->spans, r->n_spans, period, last_ms, &from, &to))
        return IOCD_OK; /* no span needs this period: left compressed */
    if (k == r->cap_blocks && (err = grow_blocks(r)) != IOCD_OK)
        return err;
    r->wanted[k] = (store_span){ from, to };
    e = store_cache_get(r->st->cache, r->gids[0] >> GROUP_SHIFT, period, data, len);
    r->entries[k] = e;
    r->cursor[k] = 0;
    r->opened[k] = false;
    r->n_blocks++;
    if (e != NULL && !store_cache_needs(r->st->cache, e, r->gids, r->g))
        return IOCD_OK; /* everything wanted from it is kept: not even decompressed */
    err = codec_block_open(&r->blocks[k], data, len, BLOCK_RAW_MAX);
    if (err != IOCD_OK)
        return err;
    r->opened[k] = true;
    if (e != NULL)
        store_cache_opened(r->st->cache, e, &r->blocks[k]);
    return IOCD_OK;
}

/* Appends the samples of s within [lo, hi] to r->buf, as codec_stream_append would. */
static iocd_err append_in(spans_read *r, const iocd_sample *s, size_t n, size_t *n_io,
                          codec_append *info)
{
    size_t i, k = *n_io;
    int64_t last;

    if (n > r->cap - k) {
        size_t cap = k + n > 2 * r->cap ? k + n : 2 * r->cap;
        iocd_sample *g = iocd_realloc(r->buf, cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        r->buf = g;
        r->cap = cap;
    }
    last = k > 0 ? r->buf[k - 1].t_ms : INT64_MIN;
    for (i = 0; i < n; i++) {
        if (s[i].t_ms < r->lo || s[i].t_ms > r->hi)
            continue;
        if (s[i].t_ms <= last)
            info->ascending = false;
        info->drops |= k > 0 && s[i].v < r->buf[k - 1].v;
        last = s[i].t_ms;
        info->nan |= isnan(s[i].v);
        r->buf[k++] = s[i];
    }
    *n_io = k;
    return IOCD_OK;
}

/* Series id's samples from block b into r->buf: kept ones from the cache, else decoded (and
 * kept when the block has an entry). */
static iocd_err from_block(spans_read *r, size_t b, uint64_t id, size_t *n, codec_append *info)
{
    const codec_block *blk = &r->blocks[b];
    cache_block *e = r->entries[b];
    const cache_seg *seg = NULL;
    codec_append whole = { true, false, false };
    size_t c = r->cursor[b], n_whole = 0, room;
    bool absent = false;
    iocd_err err;

    if (e != NULL) {
        seg = store_cache_seg(r->st->cache, e, id, &absent);
        r->hits += seg != NULL;
        if (seg != NULL)
            return store_cache_expand(seg, r->spans, r->n_spans, &r->buf, &r->cap, n, info);
        if (absent)
            return IOCD_OK;
    }
    if (!r->opened[b]) /* store_cache_needs said all we ask for is kept, and kept stays */
        return IOCD_ECORRUPT;
    while (c < blk->n && blk->streams[c].id < id) /* ids ascend in both */
        c++;
    r->cursor[b] = c;
    if (c == blk->n || blk->streams[c].id != id)
        return IOCD_OK;
    room = e != NULL ? store_cache_seg_bytes(codec_stream_count(blk, c)) : 0;
    if (e == NULL || !store_cache_reserve(r->st->cache, room)) /* not kept: straight in */
        return codec_stream_append(blk, c, r->wanted[b].start_ms, r->wanted[b].end_ms, &r->buf,
                                   &r->cap, n, info);
    err = codec_stream_append(blk, c, INT64_MIN, INT64_MAX, &r->whole, &r->cap_whole, &n_whole,
                              &whole);
    if (err != IOCD_OK) {
        store_cache_unreserve(r->st->cache, room);
        return err;
    }
    seg = store_cache_put(r->st->cache, e, id, r->whole, n_whole, &whole, room);
    if (seg != NULL)
        return store_cache_expand(seg, r->spans, r->n_spans, &r->buf, &r->cap, n, info);
    return append_in(r, r->whole, n_whole, n, info); /* out of memory: not kept */
}

/* Series id's samples from the group's blocks and its head copy h, into r->buf. */
static iocd_err gather(spans_read *r, uint64_t id, const iocd_sample *h, size_t n_h,
                       store_samples *out)
{
    codec_append info = { true, false, false };
    size_t n = 0, b, i;
    iocd_err err = IOCD_OK;

    for (b = 0; b < r->n_blocks && err == IOCD_OK; b++)
        err = from_block(r, b, id, &n, &info);
    if (err == IOCD_OK && n_h > 0) {
        if (n_h > r->cap - n) {
            size_t cap = n + n_h > 2 * r->cap ? n + n_h : 2 * r->cap;
            iocd_sample *g = iocd_realloc(r->buf, cap * sizeof(*g));
            if (g == NULL)
                return IOCD_ENOMEM;
            r->buf = g;
            r->cap = cap;
        }
        if (n > 0 && h[0].t_ms <= r->buf[n - 1].t_ms)
            info.ascending = false; /* the head is ascending (store_series_samples) */
        for (i = 0; i < n_h; i++) {
            info.nan |= isnan(h[i].v);
            info.drops |= (i > 0 ? h[i - 1].v : n > 0 ? r->buf[n - 1].v : -INFINITY) > h[i].v;
        }
        memcpy(r->buf + n, h, n_h * sizeof(*h));
        n += n_h;
    }
    if (err != IOCD_OK)
        return err;
    if (!info.ascending) {
        n = store_samples_dedupe(r->buf, n);
        info.drops = true; /* not worked out for this order */
    }
    out->s = r->buf;
    out->n = n;
    out->nan = info.nan;
    out->drops = info.drops;
    return IOCD_OK;
}

static void release_blocks(spans_read *r)
{
    size_t b;

    for (b = 0; b < r->n_blocks; b++)
        store_cache_release(r->st->cache, r->entries[b]);
    r->n_blocks = 0;
}

iocd_err store_read_spans(store *st, const uint64_t *ids, size_t n, const store_span *spans,
                          size_t n_spans, store_samples_fn fn, void *ud)
{
    iocd_sample *head[1 << GROUP_SHIFT];
    size_t n_head[1 << GROUP_SHIFT];
    spans_read r;
    size_t i = 0, j, g;
    int64_t from;
    iocd_err err = IOCD_OK;

    memset(&r, 0, sizeof(r));
    r.st = st;
    r.spans = iocd_malloc((n_spans + 1) * sizeof(*r.spans));
    if (r.spans == NULL)
        return IOCD_ENOMEM;
    if (n_spans > 0)
        memcpy(r.spans, spans, n_spans * sizeof(*spans));
    r.n_spans = store_spans_merge(r.spans, n_spans);
    r.lo = r.n_spans > 0 ? r.spans[0].start_ms : 0;
    r.hi = r.n_spans > 0 ? r.spans[r.n_spans - 1].end_ms : -1;
    from = r.lo == INT64_MIN ? INT64_MIN : store_period_of(st, r.lo);
    while (err == IOCD_OK && i < n) {
        uint64_t group = ids[i] >> GROUP_SHIFT;
        for (g = i; g < n && ids[g] >> GROUP_SHIFT == group; g++)
            ;
        g -= i; /* ids[i .. i+g) share a block */
        /* The heads first, then the blocks (see store_read). */
        pthread_mutex_lock(&st->mu);
        for (j = 0; j < g; j++) {
            store_series *s = store_series_get(st, ids[i + j]);
            head[j] = NULL;
            n_head[j] = 0;
            if (s == NULL || r.n_spans == 0 ||
                (s->head.n == 0 && s->head.n_ooo == 0 && s->n_sealing == 0))
                continue;
            if (store_series_samples_in(s, r.lo, r.hi, &head[j], &n_head[j]) != IOCD_OK)
                err = IOCD_ENOMEM;
        }
        pthread_mutex_unlock(&st->mu);
        r.gids = ids + i;
        r.g = g;
        if (err == IOCD_OK && r.n_spans > 0)
            err = store_db_blocks(st->db, STORE_DB_CHUNKS, group, from, r.hi, open_block, &r);
        for (j = 0; err == IOCD_OK && j < g; j++) {
            store_samples ss;
            err = gather(&r, ids[i + j], head[j], n_head[j], &ss);
            if (err == IOCD_OK)
                err = fn(ud, i + j, &ss);
        }
        release_blocks(&r);
        for (j = 0; j < g; j++)
            iocd_free(head[j]);
        i += g;
    }
    store_cache_hits(st->cache, r.hits);
    for (j = 0; j < r.cap_blocks; j++)
        codec_block_fini(&r.blocks[j]);
    iocd_free(r.blocks);
    iocd_free(r.opened);
    iocd_free(r.entries);
    iocd_free(r.wanted);
    iocd_free(r.cursor);
    iocd_free(r.buf);
    iocd_free(r.whole);
    iocd_free(r.spans);
    return err;
}

/* store_read_many is store_read_spans over one span. */
typedef struct many_ctx {
    store_series_fn fn;
    void *ud;
} many_ctx;

static iocd_err many_series(void *ud, size_t i, const store_samples *ss)
{
    many_ctx *m = ud;

    return m->fn(m->ud, i, ss->s, ss->n);
}

iocd_err store_read_many(store *st, const uint64_t *ids, size_t n, int64_t start_ms, int64_t end_ms,
                         store_series_fn fn, void *ud)
{
    store_span span = { start_ms, end_ms };
    many_ctx m = { fn, ud };

    return store_read_spans(st, ids, n, &span, 1, many_series, &m);
}
