/* storage/cache.c - the read cache: series decoded from sealed blocks, kept in memory for the
 * queries that come again (a dashboard refreshes the same panels every few seconds). An entry
 * holds what readers decoded from one block: per series of its id group, the samples of the
 * block's stream, with their times as a start and a step when they are evenly spaced.
 * Invariant: an entry is found by its block's group, period, length and a hash of all its
 * bytes, so it can only ever answer for those very bytes; a block that changes (a patch is a
 * new block, retention and compaction remove blocks) is looked up under other bytes and misses.
 * To stay within max_bytes, entries are dropped least recently used first, but never one used
 * in the last minute: a reader finding no room decodes without keeping, so a query bigger than
 * the cache (or a working set bigger than it) neither flushes what dashboards use nor churns. */
#include "storage/storage_int.h"

#include <math.h>
#include <string.h>

/* One series' samples from one block. */
struct cache_seg {
    uint32_t n;
    bool regular;   /* time k is t0 + k * dt, and no times are stored */
    bool ascending; /* strictly, as the stream held them */
    bool nan;       /* some value is a NaN */
    bool drops;     /* some value is below the one before it */
    int64_t t0, dt;
    double v[]; /* n values, then (when !regular) n times as int64_t */
};

struct cache_block {
    uint64_t group, hash;
    int64_t period;
    size_t len;                 /* of the compressed block */
    uint64_t present;           /* bit id & 63: the block holds the series; valid once known */
    bool known;                 /* present is set (the block was opened once) */
    unsigned refs;              /* readers holding it: not dropped meanwhile */
    int64_t used_ns;            /* last held (monotonic clock) */
    size_t bytes;               /* this entry's memory, counted in the cache's */
    cache_seg *_Atomic seg[64]; /* set once, freed with the entry */
    cache_block *hnext;         /* hash chain */
    cache_block *newer, *older; /* recency list */
};

struct store_cache {
    pthread_mutex_t mu;
    size_t max_bytes, bytes;
    cache_block **table; /* chains by key */
    size_t table_cap, n;
    cache_block *newest, *oldest;
    _Atomic uint64_t hits, misses; /* for tests; /metrics has its own (all stores) */
    iocd_metric *m_hits, *m_misses, *m_bytes;
};

#define KEEP_NS (60LL * 1000000000) /* an entry used this recently is not dropped for room */

/* ---- Hashing a block's bytes -------------------------------------------------------------
 * Four independent lanes of a multiply-rotate mix, so a block of a few KB hashes in well under
 * a microsecond (a query looks at hundreds), then a final avalanche with the length. */

static uint64_t rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t lane(uint64_t h, uint64_t w)
{
    return rotl(h ^ (w * 0x87c37b91114253d5ULL), 31) * 0x4cf5ad432745937fULL;
}

uint64_t store_cache_hash(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint64_t h[4] = { 0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL, 0x94d049bb133111ebULL,
                      0x2545f4914f6cdd1dULL },
             w, x;
    size_t i = 0, k;

    for (; i + 32 <= len; i += 32)
        for (k = 0; k < 4; k++) {
            memcpy(&w, p + i + 8 * k, 8);
            h[k] = lane(h[k], w);
        }
    for (; i + 8 <= len; i += 8) {
        memcpy(&w, p + i, 8);
        h[0] = lane(h[0], w);
    }
    for (x = 0, k = 0; i < len; i++, k += 8)
        x |= (uint64_t)p[i] << k;
    h[1] = lane(h[1], x ^ len);
    return iocd_mix64(rotl(h[0], 1) + rotl(h[1], 7) + rotl(h[2], 12) + rotl(h[3], 18));
}

/* ---- The table ----------------------------------------------------------------------------- */

static size_t slot_of(size_t cap, uint64_t group, int64_t period, uint64_t hash)
{
    uint64_t k =
        hash ^ (group * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)period * 0xbf58476d1ce4e5b9ULL);

    return (size_t)(k ^ (k >> 29)) & (cap - 1);
}

iocd_err store_cache_new(size_t max_bytes, store_cache **out)
{
    store_cache *c = iocd_calloc(1, sizeof(*c));

    if (c == NULL)
        return IOCD_ENOMEM;
    c->table_cap = 1024;
    c->table = iocd_calloc(c->table_cap, sizeof(*c->table));
    if (c->table == NULL) {
        iocd_free(c);
        return IOCD_ENOMEM;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->max_bytes = max_bytes;
    c->m_hits = iocd_counter("iocd_query_cache_hits_total",
                             "Series read from the query cache instead of a sealed block.");
    c->m_misses = iocd_counter("iocd_query_cache_misses_total",
                               "Series decoded from a sealed block (and kept when there is room).");
    c->m_bytes = iocd_gauge("iocd_query_cache_bytes", "Memory held by the query cache.");
    *out = c;
    return IOCD_OK;
}

static void block_free(cache_block *b)
{
    size_t i;

    for (i = 0; i < 64; i++)
        iocd_free(atomic_load_explicit(&b->seg[i], memory_order_relaxed));
    iocd_free(b);
}

void store_cache_free(store_cache *c)
{
    cache_block *b, *next;

    if (c == NULL)
        return;
    for (b = c->newest; b != NULL; b = next) {
        next = b->older;
        block_free(b);
    }
    iocd_metric_add(c->m_bytes, -(double)c->bytes);
    iocd_free(c->table);
    pthread_mutex_destroy(&c->mu);
    iocd_free(c);
}

static void list_unlink(store_cache *c, cache_block *b)
{
    if (b->newer != NULL)
        b->newer->older = b->older;
    else
        c->newest = b->older;
    if (b->older != NULL)
        b->older->newer = b->newer;
    else
        c->oldest = b->newer;
    b->newer = b->older = NULL;
}

static void list_push(store_cache *c, cache_block *b)
{
    b->older = c->newest;
    b->newer = NULL;
    if (c->newest != NULL)
        c->newest->newer = b;
    c->newest = b;
    if (c->oldest == NULL)
        c->oldest = b;
}

/* Drops b (nobody holds it). Caller holds c->mu. */
static void drop(store_cache *c, cache_block *b)
{
    cache_block **pp = &c->table[slot_of(c->table_cap, b->group, b->period, b->hash)];

    while (*pp != b)
        pp = &(*pp)->hnext;
    *pp = b->hnext;
    list_unlink(c, b);
    c->bytes -= b->bytes;
    iocd_metric_add(c->m_bytes, -(double)b->bytes);
    c->n--;
    block_free(b);
}

/* Drops least recently used entries, none used within KEEP_NS (so none held either), until
 * need more bytes fit; false when they do not. Caller holds c->mu. */
static bool make_room(store_cache *c, size_t need)
{
    int64_t now = 0;

    while (c->bytes + need > c->max_bytes && c->oldest != NULL) {
        if (now == 0)
            now = iocd_mono_ns();
        if (c->oldest->refs > 0 || now - c->oldest->used_ns < KEEP_NS)
            break;
        drop(c, c->oldest);
    }
    return c->bytes + need <= c->max_bytes;
}

static void grow_table(store_cache *c)
{
    size_t cap = c->table_cap * 2, i;
    cache_block **t = iocd_calloc(cap, sizeof(*t)), *b, *next;

    if (t == NULL)
        return; /* longer chains, still correct */
    for (i = 0; i < c->table_cap; i++)
        for (b = c->table[i]; b != NULL; b = next) {
            size_t s = slot_of(cap, b->group, b->period, b->hash);
            next = b->hnext;
            b->hnext = t[s];
            t[s] = b;
        }
    iocd_free(c->table);
    c->table = t;
    c->table_cap = cap;
}

cache_block *store_cache_get(store_cache *c, uint64_t group, int64_t period, const void *data,
                             size_t len)
{
    uint64_t hash;
    cache_block *b;

    if (c == NULL || c->max_bytes == 0)
        return NULL;
    hash = store_cache_hash(data, len);
    pthread_mutex_lock(&c->mu);
    for (b = c->table[slot_of(c->table_cap, group, period, hash)]; b != NULL; b = b->hnext)
        if (b->hash == hash && b->len == len && b->group == group && b->period == period)
            break;
    if (b == NULL && make_room(c, sizeof(*b))) {
        b = iocd_calloc(1, sizeof(*b));
        if (b != NULL) {
            size_t s;
            if (c->n >= c->table_cap)
                grow_table(c);
            s = slot_of(c->table_cap, group, period, hash);
            b->group = group;
            b->period = period;
            b->hash = hash;
            b->len = len;
            b->bytes = sizeof(*b);
            b->hnext = c->table[s];
            c->table[s] = b;
            list_push(c, b);
            c->n++;
            c->bytes += b->bytes;
            iocd_metric_add(c->m_bytes, (double)b->bytes);
        }
    } else if (b != NULL) {
        list_unlink(c, b);
        list_push(c, b);
    }
    if (b != NULL) {
        b->refs++;
        b->used_ns = iocd_mono_ns();
    }
    pthread_mutex_unlock(&c->mu);
    return b;
}

void store_cache_release(store_cache *c, cache_block *b)
{
    if (b == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    b->refs--;
    pthread_mutex_unlock(&c->mu);
}

bool store_cache_needs(store_cache *c, cache_block *b, const uint64_t *ids, size_t n)
{
    bool need = false;
    size_t i;

    pthread_mutex_lock(&c->mu);
    if (!b->known)
        need = true;
    for (i = 0; i < n && !need; i++) {
        unsigned k = (unsigned)(ids[i] & 63);
        need = (b->present >> k & 1) != 0 &&
               atomic_load_explicit(&b->seg[k], memory_order_acquire) == NULL;
    }
    pthread_mutex_unlock(&c->mu);
    return need;
}

void store_cache_opened(store_cache *c, cache_block *b, const codec_block *blk)
{
    uint64_t present = 0;
    size_t i;

    for (i = 0; i < blk->n; i++)
        present |= UINT64_C(1) << (blk->streams[i].id & 63);
    pthread_mutex_lock(&c->mu);
    b->present = present;
    b->known = true;
    pthread_mutex_unlock(&c->mu);
}

const cache_seg *store_cache_seg(store_cache *c, cache_block *b, uint64_t id, bool *absent_out)
{
    unsigned k = (unsigned)(id & 63);
    cache_seg *g = atomic_load_explicit(&b->seg[k], memory_order_acquire);

    *absent_out = false;
    if (g != NULL)
        return g; /* counted by the reader, once per read (store_cache_hits) */
    pthread_mutex_lock(&c->mu);
    *absent_out = b->known && (b->present >> k & 1) == 0;
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

void store_cache_hits(store_cache *c, uint64_t n)
{
    if (c == NULL || n == 0)
        return;
    atomic_fetch_add_explicit(&c->hits, n, memory_order_relaxed);
    iocd_metric_add(c->m_hits, (double)n);
}

size_t store_cache_seg_bytes(size_t n)
{
    return sizeof(cache_seg) + n * (sizeof(double) + sizeof(int64_t));
}

bool store_cache_reserve(store_cache *c, size_t bytes)
{
    bool ok;

    atomic_fetch_add_explicit(&c->misses, 1, memory_order_relaxed); /* a series to decode */
    iocd_metric_add(c->m_misses, 1);
    pthread_mutex_lock(&c->mu);
    ok = make_room(c, bytes);
    if (ok)
        c->bytes += bytes;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void store_cache_unreserve(store_cache *c, size_t bytes)
{
    pthread_mutex_lock(&c->mu);
    c->bytes -= bytes;
    pthread_mutex_unlock(&c->mu);
}

const cache_seg *store_cache_put(store_cache *c, cache_block *b, uint64_t id, const iocd_sample *s,
                                 size_t n, const codec_append *info, size_t reserved)
{
    unsigned k = (unsigned)(id & 63);
    bool regular = n < 2 || s[1].t_ms > s[0].t_ms;
    size_t i, size;
    cache_seg *g, *expected = NULL;

    for (i = 2; regular && i < n; i++)
        regular = s[i].t_ms - s[i - 1].t_ms == s[1].t_ms - s[0].t_ms;
    size = sizeof(*g) + n * sizeof(double) + (regular ? 0 : n * sizeof(int64_t));
    IOCD_ASSERT(size <= reserved);
    g = iocd_malloc(size);
    if (g != NULL) {
        g->n = (uint32_t)n;
        g->regular = regular;
        g->ascending = info->ascending;
        g->nan = info->nan;
        g->drops = info->drops;
        g->t0 = n > 0 ? s[0].t_ms : 0;
        g->dt = n > 1 ? s[1].t_ms - s[0].t_ms : 0;
        for (i = 0; i < n; i++)
            g->v[i] = s[i].v;
        if (!regular)
            for (i = 0; i < n; i++)
                memcpy((char *)(g->v + n) + i * sizeof(int64_t), &s[i].t_ms, sizeof(int64_t));
    }
    pthread_mutex_lock(&c->mu);
    if (g == NULL || !atomic_compare_exchange_strong_explicit(
                         &b->seg[k], &expected, g, memory_order_acq_rel, memory_order_acquire)) {
        c->bytes -= reserved; /* no memory, or another reader kept it first */
        pthread_mutex_unlock(&c->mu);
        iocd_free(g);
        return expected;
    }
    c->bytes -= reserved - size;
    b->bytes += size;
    iocd_metric_add(c->m_bytes, (double)size);
    pthread_mutex_unlock(&c->mu);
    return g;
}

void store_cache_stats(store_cache *c, uint64_t *hits, uint64_t *misses, size_t *bytes)
{
    pthread_mutex_lock(&c->mu);
    *hits = (uint64_t)c->hits;
    *misses = (uint64_t)c->misses;
    *bytes = c->bytes;
    pthread_mutex_unlock(&c->mu);
}

static int64_t seg_time(const cache_seg *g, size_t i)
{
    int64_t t;

    if (g->regular)
        return (int64_t)((uint64_t)g->t0 + (uint64_t)i * (uint64_t)g->dt);
    memcpy(&t, (const char *)(g->v + g->n) + i * sizeof(int64_t), sizeof(t));
    return t;
}

/* The first index at or after from whose time is at least t (g ascending). */
static size_t seg_at(const cache_seg *g, size_t from, int64_t t)
{
    size_t x = from, y = g->n, mid;

    while (x < y) {
        mid = (x + y) / 2;
        if (seg_time(g, mid) < t)
            x = mid + 1;
        else
            y = mid;
    }
    return x;
}

static iocd_err reserve(iocd_sample **buf, size_t *cap, size_t k, size_t more)
{
    iocd_sample *s;
    size_t want;

    if (more <= *cap - k && *buf != NULL)
        return IOCD_OK;
    want = k + more > 256 ? k + more : 256;
    if (want < *cap * 2)
        want = *cap * 2;
    s = iocd_realloc(*buf, want * sizeof(*s));
    if (s == NULL)
        return IOCD_ENOMEM;
    *buf = s;
    *cap = want;
    return IOCD_OK;
}

iocd_err store_cache_expand(const cache_seg *g, const store_span *spans, size_t n_spans,
                            iocd_sample **buf, size_t *cap, size_t *n_io, codec_append *info)
{
    size_t a, b, i, k = *n_io, sp, lo_sp = 0, hi_sp = n_spans, mid;
    int64_t last = k > 0 ? (*buf)[k - 1].t_ms : INT64_MIN, lo, hi;
    double last_v = k > 0 ? (*buf)[k - 1].v : -INFINITY;
    iocd_err err;

    if (g->n == 0 || n_spans == 0)
        return IOCD_OK;
    lo = spans[0].start_ms;
    hi = spans[n_spans - 1].end_ms;
    if (!g->ascending) { /* every sample in [lo, hi]: others are allowed through */
        err = reserve(buf, cap, k, g->n);
        for (i = 0; err == IOCD_OK && i < g->n; i++) {
            int64_t t = seg_time(g, i);
            if (t < lo || t > hi)
                continue;
            if (t <= last)
                info->ascending = false;
            info->drops |= g->v[i] < last_v;
            last = t;
            last_v = g->v[i];
            (*buf)[k++] = (iocd_sample){ t, g->v[i] };
            info->nan |= g->nan;
        }
        *n_io = k;
        return err;
    }
    /* Ascending: the run of each span that meets the segment, found by bisection, so a query
     * with steps far apart (a week at an hour) copies only what its windows hold. */
    while (lo_sp < hi_sp) { /* the first span ending at or after the segment's start */
        mid = (lo_sp + hi_sp) / 2;
        if (spans[mid].end_ms < seg_time(g, 0))
            lo_sp = mid + 1;
        else
            hi_sp = mid;
    }
    for (sp = lo_sp, b = 0; sp < n_spans && b < g->n; sp++) {
        a = seg_at(g, b, spans[sp].start_ms);
        if (a == g->n)
            break;
        b = spans[sp].end_ms == INT64_MAX ? g->n : seg_at(g, a, spans[sp].end_ms + 1);
        if (a == b)
            continue;
        err = reserve(buf, cap, k, b - a);
        if (err != IOCD_OK)
            return err;
        if (seg_time(g, a) <= last)
            info->ascending = false;
        /* A run of a segment without drops has none, and neither has its first value against
         * the value before it, when that is not higher. */
        info->drops |= g->drops || g->v[a] < last_v;
        info->nan |= g->nan;
        if (g->regular) {
            int64_t t = seg_time(g, a);
            for (i = a; i < b; i++, t = (int64_t)((uint64_t)t + (uint64_t)g->dt))
                (*buf)[k++] = (iocd_sample){ t, g->v[i] };
        } else {
            for (i = a; i < b; i++)
                (*buf)[k++] = (iocd_sample){ seg_time(g, i), g->v[i] };
        }
        last = (*buf)[k - 1].t_ms;
        last_v = (*buf)[k - 1].v;
    }
    *n_io = k;
    return IOCD_OK;
}
