/* storage/rollup.c - reading rollups: one series (store_read_rollup), or many at once with the
 * raw samples a query needs around them (store_read_rollup_many). A series' part of a bucket
 * in one period comes from the latest block of that period holding the series (the writer
 * rebuilds a patched period's parts from all of its samples); parts of different periods are
 * combined in time order, min and max with Prometheus' NaN rule, so a bucket is what a fold
 * over its samples gives. Invariant: a bucket handed to a query has no unsealed sample in
 * its span (those buckets are answered with raw samples instead). */
#include "storage/storage_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GROUP_SHIFT 6 /* a block holds the series of one id group: id >> 6 */

/* ---- Collecting parts ------------------------------------------------------------------ */

/* One series' buckets, collected period after period. */
typedef struct rollup_acc {
    store_rollup *r;
    size_t n, cap;
    int64_t part_period; /* the period of the part that ends r (INT64_MIN: none yet) */
    size_t part_start;   /* where that part begins in r */
} rollup_acc;

/* Walks the rollup blocks of one id group for the wanted series. */
typedef struct part_ctx {
    const uint64_t *ids; /* wanted series, ascending */
    size_t n;
    rollup_acc *acc;          /* one per wanted series */
    int64_t res;              /* the resolution read */
    int64_t period;           /* of the block being read */
    int64_t start_ms, end_ms; /* buckets starting in this span are kept */
} part_ctx;

static void part_init(part_ctx *c, const uint64_t *ids, size_t n, rollup_acc *acc, int64_t res,
                      int64_t start_ms, int64_t end_ms)
{
    size_t i;

    IOCD_ASSERT(n <= 64);
    memset(c, 0, sizeof(*c));
    c->ids = ids;
    c->n = n;
    c->acc = acc;
    c->res = res;
    c->start_ms = start_ms;
    c->end_ms = end_ms;
    for (i = 0; i < n; i++)
        acc[i].part_period = INT64_MIN;
}

/* A series' buckets in the current block: they replace any part of the same period (key)
 * taken from an earlier block (a patch's part covers the whole period, or span). */
static iocd_err part_emit(void *ud, uint64_t id, const store_rollup *r, size_t nb)
{
    part_ctx *c = ud;
    size_t lo = store_id_find(c->ids, c->n, id), k;
    rollup_acc *acc;

    if (lo == c->n)
        return IOCD_OK;
    acc = &c->acc[lo];
    if (acc->part_period == c->period) {
        acc->n = acc->part_start; /* a later sequence of the same period wins */
    } else {
        acc->part_period = c->period;
        acc->part_start = acc->n;
    }
    if (acc->n + nb > acc->cap) {
        size_t cap = acc->cap != 0 ? acc->cap * 2 : 64;
        store_rollup *g;
        while (cap < acc->n + nb)
            cap *= 2;
        g = iocd_realloc(acc->r, cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        acc->r = g;
        acc->cap = cap;
    }
    for (k = 0; k < nb; k++)
        if (r[k].t_ms >= c->start_ms && r[k].t_ms <= c->end_ms)
            acc->r[acc->n++] = r[k];
    return IOCD_OK;
}

static iocd_err part_block(void *ud, int64_t period, int64_t last_ms, const void *data, size_t len)
{
    part_ctx *c = ud;

    (void)last_ms;
    c->period = period;
    return codec_rollup_select(data, len, BLOCK_RAW_MAX, c->res, c->ids, c->n, part_emit, c);
}

/* Prometheus' min_over_time keeps a value that is smaller, or any value after a NaN; the
 * same rule over the parts in time order gives what it gives over the samples. */
static double fold_min(double cur, double v)
{
    return v < cur || isnan(cur) ? v : cur;
}

static double fold_max(double cur, double v)
{
    return v > cur || isnan(cur) ? v : cur;
}

/* Combines the parts of one bucket (adjacent, in period order) into one. Periods come in
 * ascending order and each part's buckets ascend, so the buckets never go back in time. */
static iocd_err combine_parts(rollup_acc *acc)
{
    size_t i, k = 0;

    for (i = 0; i < acc->n; i++) {
        store_rollup *m = k > 0 ? &acc->r[k - 1] : NULL, *b = &acc->r[i];
        if (m != NULL && b->t_ms < m->t_ms)
            return IOCD_ECORRUPT;
        if (m == NULL || m->t_ms != b->t_ms) {
            acc->r[k++] = *b;
            continue;
        }
        m->min = fold_min(m->min, b->min);
        m->max = fold_max(m->max, b->max);
        m->sum += b->sum;
        m->count += b->count;
        if (b->last_t_ms >= m->last_t_ms) {
            m->last = b->last;
            m->last_t_ms = b->last_t_ms;
        }
    }
    acc->n = k;
    return IOCD_OK;
}

static store_db_kind res_kind(int64_t res_ms)
{
    return res_ms == STORE_ROLLUP_5M ? STORE_DB_ROLLUP_5M : STORE_DB_ROLLUP_1H;
}

iocd_err store_read_rollup(store *st, uint64_t id, int64_t res_ms, int64_t start_ms, int64_t end_ms,
                           store_rollup **out, size_t *n_out)
{
    rollup_acc acc;
    part_ctx *c = NULL;
    bool exists;
    iocd_err err;

    if (res_ms != STORE_ROLLUP_5M && res_ms != STORE_ROLLUP_1H)
        return IOCD_EINVAL;
    pthread_mutex_lock(&st->mu);
    exists = store_series_get(st, id) != NULL;
    pthread_mutex_unlock(&st->mu);
    if (!exists)
        return IOCD_ENOTFOUND;
    memset(&acc, 0, sizeof(acc));
    c = iocd_malloc(sizeof(*c));
    if (c == NULL)
        return IOCD_ENOMEM;
    part_init(c, &id, 1, &acc, res_ms, start_ms, end_ms);
    /* A bucket starting in range has parts in every period it overlaps, up to end + res. */
    err = store_db_blocks(st->db, res_kind(res_ms), id >> GROUP_SHIFT,
                          start_ms == INT64_MIN ? INT64_MIN : store_period_of(st, start_ms),
                          end_ms > INT64_MAX - res_ms ? INT64_MAX : end_ms + res_ms, part_block, c);
    iocd_free(c);
    if (err == IOCD_OK)
        err = combine_parts(&acc);
    if (err == IOCD_OK && acc.r == NULL) {
        acc.r = iocd_malloc(sizeof(*acc.r));
        if (acc.r == NULL)
            err = IOCD_ENOMEM;
    }
    if (err != IOCD_OK) {
        iocd_free(acc.r);
        return err;
    }
    *out = acc.r;
    *n_out = acc.n;
    return IOCD_OK;
}

/* ---- Many series, with raw samples around the buckets ----------------------------------- */

/* One id group's read: the wanted series' heads, buckets and raw samples. */
typedef struct many_rollup {
    store *st;
    const uint64_t *ids;
    size_t n;
    store_span *need; /* where raw samples are wanted, merged */
    size_t n_need, cap_need;
    int64_t lo, hi; /* raw samples outside are not kept */
    iocd_sample *raw[64];
    size_t n_raw[64], cap_raw[64];
} many_rollup;

/* Appends series j's samples within [m->lo, m->hi], only those in the wanted spans when
 * `wanted` (a block's others are not needed: the caller has their buckets). */
static iocd_err raw_append(many_rollup *m, size_t j, const iocd_sample *s, size_t n, bool wanted)
{
    size_t i, k = 0;
    int64_t prev = INT64_MAX;

    for (i = 0; i < n; i++) {
        int64_t t = s[i].t_ms;
        if (t < m->lo || t > m->hi)
            continue;
        if (wanted) { /* a cursor over the spans: samples ascend (else it starts over) */
            if (t < prev)
                k = store_span_at(m->need, m->n_need, t);
            prev = t;
            while (k < m->n_need && m->need[k].end_ms < t)
                k++;
            if (k == m->n_need || m->need[k].start_ms > t)
                continue;
        }
        if (m->n_raw[j] == m->cap_raw[j]) {
            size_t cap = m->cap_raw[j] != 0 ? m->cap_raw[j] * 2 : 256;
            iocd_sample *g = iocd_realloc(m->raw[j], cap * sizeof(*g));
            if (g == NULL)
                return IOCD_ENOMEM;
            m->raw[j] = g;
            m->cap_raw[j] = cap;
        }
        m->raw[j][m->n_raw[j]++] = s[i];
    }
    return IOCD_OK;
}

static iocd_err raw_series(void *ud, uint64_t id, const iocd_sample *s, size_t n)
{
    many_rollup *m = ud;
    size_t k = store_id_find(m->ids, m->n, id);

    if (k == m->n)
        return IOCD_OK;
    return raw_append(m, k, s, n, true);
}

/* Decompresses only the blocks of periods where raw samples are wanted. */
static iocd_err raw_block(void *ud, int64_t period, int64_t last_ms, const void *data, size_t len)
{
    many_rollup *m = ud;

    if (!store_spans_meet(m->need, m->n_need, period, last_ms))
        return IOCD_OK;
    return codec_block_select(data, len, BLOCK_RAW_MAX, m->ids, m->n, raw_series, m);
}

static iocd_err need_add(many_rollup *m, int64_t start_ms, int64_t end_ms)
{
    if (m->n_need == m->cap_need) {
        size_t cap = m->cap_need != 0 ? m->cap_need * 2 : 64;
        store_span *g = iocd_realloc(m->need, cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        m->need = g;
        m->cap_need = cap;
    }
    m->need[m->n_need++] = (store_span){ start_ms, end_ms };
    return IOCD_OK;
}

/* Keeps the buckets wholly inside [start, end] with no head sample in them; the spans of
 * the others that have one are added to m->need, so their samples are read raw. A bucket
 * with no rollup part has no sealed sample (parts are written with their blocks): its head
 * samples, all handed over, are all it has. */
static iocd_err keep_clean(many_rollup *m, rollup_acc *acc, int64_t res_ms, int64_t start_ms,
                           int64_t end_ms, const iocd_sample *head, size_t n_head)
{
    size_t i, k = 0, h = 0;
    iocd_err err = IOCD_OK;

    for (i = 0; i < acc->n && err == IOCD_OK; i++) {
        int64_t t = acc->r[i].t_ms, last = t + res_ms - 1;
        if (t < start_ms || last > end_ms)
            continue;
        while (h < n_head && head[h].t_ms < t)
            h++;
        if (h < n_head && head[h].t_ms <= last) {
            err = need_add(m, t, last); /* unsealed samples in it: answered raw */
            continue;
        }
        acc->r[k++] = acc->r[i];
    }
    acc->n = k;
    return err;
}

iocd_err store_read_rollup_many(store *st, const uint64_t *ids, size_t n, int64_t res_ms,
                                int64_t start_ms, int64_t end_ms, const store_span *spans,
                                size_t n_spans, store_rollup_fn fn, void *ud)
{
    many_rollup *m = NULL;
    part_ctx *pc = NULL;
    rollup_acc acc[1 << GROUP_SHIFT];
    iocd_sample *head[1 << GROUP_SHIFT];
    size_t n_head[1 << GROUP_SHIFT];
    bool gone[1 << GROUP_SHIFT];
    store_span *base = NULL;
    size_t n_base = 0, i = 0, j, g;
    int64_t lo, hi;
    iocd_err err = IOCD_OK;

    if (res_ms != STORE_ROLLUP_5M && res_ms != STORE_ROLLUP_1H)
        return IOCD_EINVAL;
    if (end_ms < start_ms || (uint64_t)end_ms - (uint64_t)start_ms < (uint64_t)res_ms - 1) {
        /* no whole bucket: only raw samples are read */
        start_ms = INT64_MAX - res_ms;
        end_ms = INT64_MIN;
    }
    m = iocd_calloc(1, sizeof(*m));
    pc = iocd_malloc(sizeof(*pc));
    base = iocd_malloc((n_spans + 1) * sizeof(*base));
    if (m == NULL || pc == NULL || base == NULL) {
        err = IOCD_ENOMEM;
        goto out;
    }
    if (n_spans > 0)
        memcpy(base, spans, n_spans * sizeof(*spans));
    n_base = store_spans_merge(base, n_spans);
    lo = start_ms;
    hi = end_ms;
    if (n_base > 0 && base[0].start_ms < lo)
        lo = base[0].start_ms;
    if (n_base > 0 && base[n_base - 1].end_ms > hi)
        hi = base[n_base - 1].end_ms;
    m->st = st;
    m->lo = lo;
    m->hi = hi;
    while (err == IOCD_OK && i < n) {
        uint64_t group = ids[i] >> GROUP_SHIFT;
        for (g = i; g < n && ids[g] >> GROUP_SHIFT == group; g++)
            ;
        g -= i; /* ids[i .. i+g) share a block */
        memset(acc, 0, g * sizeof(*acc));
        memset(m->raw, 0, sizeof(m->raw));
        memset(m->n_raw, 0, sizeof(m->n_raw));
        memset(m->cap_raw, 0, sizeof(m->cap_raw));
        m->ids = ids + i;
        m->n = g;
        m->n_need = 0;
        /* The heads first, then the blocks (see store_read): a seal in between shows its
         * samples twice (deduplicated) and marks their buckets unsealed, never loses them. */
        pthread_mutex_lock(&st->mu);
        for (j = 0; j < g; j++) {
            store_series *s = store_series_get(st, ids[i + j]);
            head[j] = NULL;
            n_head[j] = 0;
            gone[j] = s == NULL;
            if (s == NULL || (s->head.n == 0 && s->head.n_ooo == 0 && s->n_sealing == 0))
                continue;
            if (store_series_samples_in(s, lo, hi, &head[j], &n_head[j]) != IOCD_OK)
                err = IOCD_ENOMEM;
        }
        pthread_mutex_unlock(&st->mu);
        if (err == IOCD_OK && start_ms <= end_ms) {
            part_init(pc, ids + i, g, acc, res_ms, start_ms, end_ms);
            err = store_db_blocks(st->db, res_kind(res_ms), group, store_period_of(st, start_ms),
                                  end_ms, part_block, pc);
        }
        for (j = 0; err == IOCD_OK && j < g; j++) {
            err = combine_parts(&acc[j]);
            if (err == IOCD_OK)
                err = keep_clean(m, &acc[j], res_ms, start_ms, end_ms, head[j], n_head[j]);
        }
        for (j = 0; err == IOCD_OK && j < n_base; j++)
            err = need_add(m, base[j].start_ms, base[j].end_ms);
        if (err == IOCD_OK)
            m->n_need = store_spans_merge(m->need, m->n_need);
        if (err == IOCD_OK && m->n_need > 0)
            err = store_db_blocks(st->db, STORE_DB_CHUNKS, group,
                                  store_period_of(st, m->need[0].start_ms),
                                  m->need[m->n_need - 1].end_ms, raw_block, m);
        for (j = 0; err == IOCD_OK && j < g; j++) {
            if (gone[j]) { /* deleted meanwhile: no samples, as store_read_many */
                acc[j].n = 0;
                m->n_raw[j] = 0;
            } else {
                err = raw_append(m, j, head[j], n_head[j], false); /* all: see keep_clean */
            }
            if (err == IOCD_OK)
                err = fn(ud, i + j, acc[j].r, acc[j].n, m->raw[j],
                         store_samples_dedupe(m->raw[j], m->n_raw[j]));
        }
        for (j = 0; j < g; j++) {
            iocd_free(head[j]);
            iocd_free(acc[j].r);
            iocd_free(m->raw[j]);
        }
        i += g;
    }
out:
    if (m != NULL)
        iocd_free(m->need);
    iocd_free(m);
    iocd_free(pc);
    iocd_free(base);
    return err;
}
