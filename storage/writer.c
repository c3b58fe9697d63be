/* storage/writer.c - the writer and sealer threads. The writer takes every queued batch at
 * once, splits their WAL entries by period, and commits new series and WAL records in one
 * LMDB transaction; only then are the batches acknowledged. The sealer, beside it, seals
 * periods as they end and compacts finished spans: it takes head samples slice by slice (so
 * its memory stays small), encodes them without holding commit_mu, so that acknowledgements
 * never wait on that work, and commits the blocks in transactions of its own; a failed seal
 * puts them back into their heads (the WAL still has them).
 * Invariants: st->commit_mu is held from the capture of new series to the commit, so a
 * deletion never races a commit that would persist the series it deletes; a deletion while
 * the sealer encodes (st->delete_epoch moved) makes it drop that work and put the samples
 * back; only the sealer writes blocks, so what it read to compact is still there at its
 * commit; a series' rollup part for a period is built from all its samples of that period
 * (older blocks included). */
#define _GNU_SOURCE /* malloc_trim */
#include "storage/storage_int.h"

#include <malloc.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t store_period_of(const store *st, int64_t t)
{
    int64_t p = st->cfg.chunk_ms;

    return (t >= 0 ? t / p : (t - p + 1) / p) * p;
}

/* Splits WAL entries by period (usually one). */
typedef struct wal_split {
    store_db_wal *recs;
    iocd_buf *bufs;
    size_t n, cap;
} wal_split;

static void wal_split_fini(wal_split *w)
{
    size_t i;

    for (i = 0; i < w->n; i++)
        iocd_buf_fini(&w->bufs[i]);
    iocd_free(w->bufs);
    iocd_free(w->recs);
    memset(w, 0, sizeof(*w));
}

/* The record of a period in w, created if need be; w->n when out of memory. */
static size_t wal_split_rec(wal_split *w, int64_t period)
{
    size_t i;

    for (i = 0; i < w->n && w->recs[i].period != period; i++)
        ;
    if (i == w->n) {
        if (w->n == w->cap) {
            size_t cap = w->cap != 0 ? w->cap * 2 : 4;
            store_db_wal *r = iocd_realloc(w->recs, cap * sizeof(*r));
            iocd_buf *b = r != NULL ? iocd_realloc(w->bufs, cap * sizeof(*b)) : NULL;
            if (r != NULL)
                w->recs = r;
            if (b == NULL)
                return w->n;
            w->bufs = b;
            w->cap = cap;
        }
        iocd_buf_init(&w->bufs[w->n], 0);
        w->recs[w->n].period = period;
        w->n++;
    }
    return i;
}

static iocd_err wal_split_add(const store *st, wal_split *w, const pending *pd)
{
    const iocd_buf *entries = &pd->wal;
    const uint8_t *p = (const uint8_t *)entries->data, *end = p + entries->len;
    uint64_t id;
    int64_t t, period;
    double v;
    bool corrupt = false;
    size_t i;
    iocd_err err = IOCD_OK;

    period = entries->len > 0 ? store_period_of(st, pd->t_min) : INT64_MIN;
    if (entries->len > 0 && period == store_period_of(st, pd->t_max)) {
        /* One period (the usual case): the entries go to its record as they are. */
        i = wal_split_rec(w, period);
        return i == w->n ? IOCD_ENOMEM : iocd_buf_append(&w->bufs[i], entries->data, entries->len);
    }
    while (err == IOCD_OK && store_wal_next(&p, end, &id, &t, &v, &corrupt)) {
        period = store_period_of(st, t);
        i = wal_split_rec(w, period);
        if (i == w->n)
            return IOCD_ENOMEM;
        err = store_wal_put(&w->bufs[i], id, t, v);
    }
    return corrupt ? IOCD_ECORRUPT : err;
}

/* Hands a committed batch's samples to the listener, a chunk at a time. */
static void notify_listener(store *st, const iocd_buf *entries)
{
    const uint8_t *p = (const uint8_t *)entries->data, *end = p + entries->len;
    uint64_t ids[512];
    iocd_sample s[512];
    size_t n = 0;
    bool corrupt;

    while (store_wal_next(&p, end, &ids[n], &s[n].t_ms, &s[n].v, &corrupt)) {
        if (++n == IOCD_ARRAY_LEN(ids)) {
            st->listen(st->listen_ud, ids, s, n);
            n = 0;
        }
    }
    if (n > 0)
        st->listen(st->listen_ud, ids, s, n);
}

void store_set_listener(store *st, store_listen_fn fn, void *ud)
{
    pthread_mutex_lock(&st->commit_mu); /* not while a commit may be notifying */
    st->listen = fn;
    st->listen_ud = ud;
    pthread_mutex_unlock(&st->commit_mu);
}

/* Samples taken out of the heads for sealing: per series, a run of its samples. */
typedef struct seal_run {
    uint64_t id;
    int64_t period, span; /* span: the compaction span holding the period */
    size_t off, n;        /* into seal_set.s */
} seal_run;

typedef struct seal_set {
    iocd_sample *s;
    size_t n, cap;
    seal_run *runs;
    size_t n_runs, cap_runs;
} seal_set;

static void seal_set_fini(seal_set *ss)
{
    iocd_free(ss->s);
    iocd_free(ss->runs);
    memset(ss, 0, sizeof(*ss));
}

/* Moves every head sample before `before` of the series with ids in [from, to) into ss, as
 * runs of one series and one period. Slices are id ranges (by_id[id - 1]) so that one made of
 * whole id groups seals each group's block in one piece: index ranges split a group across
 * two slices, and its second half became a patch block. Called with st->mu held. */
static iocd_err take_sealable(store *st, int64_t before, size_t from, size_t to, seal_set *ss,
                              uint64_t **sealing_ids, size_t *n_sealing_ids, size_t *cap_ids)
{
    size_t id, k, j;
    iocd_err err = IOCD_OK;

    for (id = from; id < to && id <= st->by_id_cap && err == IOCD_OK; id++) {
        store_series *s = id > 0 ? st->by_id[id - 1] : NULL;
        iocd_sample *taken = NULL;
        if (s == NULL || store_head_count(&s->head) == 0)
            continue;
        err = store_head_take_before(&s->head, before, &taken, &k);
        if (err != IOCD_OK || k == 0) {
            iocd_free(taken);
            continue;
        }
        if (ss->n + k > ss->cap) {
            size_t cap = ss->cap != 0 ? ss->cap : 4096;
            iocd_sample *g;
            while (cap < ss->n + k)
                cap *= 2;
            g = iocd_realloc(ss->s, cap * sizeof(*g));
            if (g == NULL) {
                /* Put them back: nothing is lost, the seal just fails. */
                for (j = 0; j < k; j++)
                    store_head_put(&s->head, taken[j].t_ms, taken[j].v);
                iocd_free(taken);
                return IOCD_ENOMEM;
            }
            ss->s = g;
            ss->cap = cap;
        }
        memcpy(ss->s + ss->n, taken, k * sizeof(*taken));
        for (j = 0; j < k;) {
            int64_t period = store_period_of(st, taken[j].t_ms);
            size_t start = j;
            seal_run *r;
            while (j < k && store_period_of(st, taken[j].t_ms) == period)
                j++;
            if (ss->n_runs == ss->cap_runs) {
                size_t cap = ss->cap_runs != 0 ? ss->cap_runs * 2 : 1024;
                seal_run *g = iocd_realloc(ss->runs, cap * sizeof(*g));
                if (g == NULL) {
                    err = IOCD_ENOMEM;
                    break;
                }
                ss->runs = g;
                ss->cap_runs = cap;
            }
            r = &ss->runs[ss->n_runs++];
            r->id = s->id;
            r->period = period;
            r->span = store_db_span_of(st->db, period);
            r->off = ss->n + start;
            r->n = j - start;
        }
        ss->n += k;
        if (before == INT64_MAX) { /* the final seal at a stop: no reader is left to serve */
            iocd_free(taken);
            continue;
        }
        /* Readers see them until the commit (the series' sealing samples). */
        if (*n_sealing_ids == *cap_ids) {
            size_t cap = *cap_ids != 0 ? *cap_ids * 2 : 1024;
            uint64_t *g = iocd_realloc(*sealing_ids, cap * sizeof(*g));
            if (g == NULL) {
                iocd_free(taken);
                return IOCD_ENOMEM; /* the taken samples are in ss: the seal fails whole */
            }
            *sealing_ids = g;
            *cap_ids = cap;
        }
        iocd_free(s->sealing);
        s->sealing = taken;
        s->n_sealing = k;
        (*sealing_ids)[(*n_sealing_ids)++] = s->id;
    }
    return err;
}

/* The seal's commit is done (or failed and its samples are back in the heads): readers no
 * longer need the series' sealing samples. Called with st->mu held. */
static void drop_sealing(store *st, const uint64_t *ids, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        store_series *s = store_series_get(st, ids[i]);
        if (s != NULL) {
            iocd_free(s->sealing);
            s->sealing = NULL;
            s->n_sealing = 0;
        }
    }
}

/* By span, id group, period, id: a span's runs of one group are together (see build_blocks). */
static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static int run_cmp(const void *a, const void *b)
{
    const seal_run *x = a, *y = b;

    if (x->span != y->span)
        return x->span < y->span ? -1 : 1;
    if (x->id >> 6 != y->id >> 6)
        return x->id >> 6 < y->id >> 6 ? -1 : 1;
    if (x->period != y->period)
        return x->period < y->period ? -1 : 1;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return 0;
}

/* ---- Patches: rollups from the whole period --------------------------------------------- */

/* The samples older blocks of one period and id group hold for the series of a new block. */
typedef struct prior_ctx {
    const codec_series *cs; /* the new block's series, ascending by id */
    uint64_t ids[64];
    size_t k;
    iocd_sample *s[64]; /* per series: its older samples, blocks in sequence order */
    size_t n[64], cap[64];
} prior_ctx;

static iocd_err prior_series(void *ud, uint64_t id, const iocd_sample *s, size_t n)
{
    prior_ctx *c = ud;
    size_t i = store_id_find(c->ids, c->k, id);

    if (i == c->k || n == 0)
        return IOCD_OK;
    if (c->n[i] + n + c->cs[i].n > c->cap[i]) { /* room for the new run too (see below) */
        size_t cap = (c->n[i] + n + c->cs[i].n) * 2;
        iocd_sample *g = iocd_realloc(c->s[i], cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        c->s[i] = g;
        c->cap[i] = cap;
    }
    memcpy(c->s[i] + c->n[i], s, n * sizeof(*s));
    c->n[i] += n;
    return IOCD_OK;
}

static iocd_err prior_block(void *ud, int64_t period, int64_t last_ms, const void *data, size_t len)
{
    prior_ctx *c = ud;

    (void)period;
    (void)last_ms;
    return codec_block_select(data, len, BLOCK_RAW_MAX, c->ids, c->k, prior_series, c);
}

/* A block for (period, group) that is not the first (a patch of late samples, or the rest
 * of a period sealed at a stop) must not get rollups of its own samples alone: a rewritten
 * timestamp would count twice. So each of its series' rollups is rebuilt from every sample
 * of the period (older blocks merged with the new run, the new run winning a tie) and
 * readers take, per series and period, the part of the latest sequence (rollup.c). out[i]
 * is cs[i] or the merged samples (owned by c). */
static iocd_err merge_prior(store *st, int64_t from, int64_t to, uint64_t group,
                            const codec_series *cs, size_t k, prior_ctx *c, codec_series *out)
{
    size_t i;
    iocd_err err;

    memset(c, 0, sizeof(*c));
    c->cs = cs;
    c->k = k;
    for (i = 0; i < k; i++) {
        c->ids[i] = cs[i].id;
        out[i] = cs[i];
    }
    err = store_db_blocks(st->db, STORE_DB_CHUNKS, group, from, to, prior_block, c);
    for (i = 0; err == IOCD_OK && i < k; i++) {
        if (c->n[i] == 0)
            continue;
        memcpy(c->s[i] + c->n[i], cs[i].s, cs[i].n * sizeof(*cs[i].s));
        out[i].s = c->s[i];
        out[i].n = store_samples_dedupe(c->s[i], c->n[i] + cs[i].n);
    }
    return err;
}

static void prior_fini(prior_ctx *c)
{
    size_t i;

    for (i = 0; i < c->k; i++)
        iocd_free(c->s[i]);
}

/* Appends a block's entry (its bytes at space offset `before`; .data is set by the caller
 * once space stops growing, from the offset kept in .data meanwhile). */
static void block_add(store_db_block *blocks, size_t *n, store_db_kind kind, int64_t period,
                      uint64_t group, const iocd_buf *space, size_t before, bool replaces)
{
    blocks[*n] = (store_db_block){
        kind, period, group, (const void *)(uintptr_t)before, space->len - before, replaces, false
    };
    (*n)++;
}

/* Appends the 5-minute and 1-hour rollup parts of the series in cs, keyed by `period`. */
static iocd_err add_rollups(const codec_series *cs, size_t k, int64_t period, uint64_t group,
                            bool replaces, int level, store_db_block *blocks, size_t *n,
                            iocd_buf *space)
{
    iocd_err err = IOCD_OK;
    int r;

    for (r = 0; err == IOCD_OK && r < 2; r++) {
        size_t before = space->len;
        err = codec_rollup_encode(cs, k, r == 0 ? STORE_ROLLUP_5M : STORE_ROLLUP_1H, level, space);
        block_add(blocks, n, r == 0 ? STORE_DB_ROLLUP_5M : STORE_DB_ROLLUP_1H, period, group, space,
                  before, replaces);
    }
    return err;
}

/* The runs of one id group in one span, as one series list (runs of a series in ascending
 * periods joined; ids ascending). Joined samples go in *buf. */
static iocd_err join_runs(const seal_set *ss, const seal_run *runs, size_t n, codec_series *out,
                          size_t *k_out, iocd_sample **buf)
{
    size_t total = 0, i, j, k = 0, used = 0;
    uint64_t ids[64];

    for (i = 0; i < n; i++) {
        total += runs[i].n;
        for (j = 0; j < k && ids[j] != runs[i].id; j++)
            ;
        if (j == k)
            ids[k++] = runs[i].id;
    }
    iocd_qsort(ids, k, sizeof(*ids), u64_cmp);
    *buf = iocd_malloc((total + 1) * sizeof(**buf));
    if (*buf == NULL)
        return IOCD_ENOMEM;
    for (j = 0; j < k; j++) {
        out[j] = (codec_series){ ids[j], *buf + used, 0 };
        for (i = 0; i < n; i++) { /* periods ascend within the span's runs */
            if (runs[i].id != ids[j])
                continue;
            memcpy(*buf + used, ss->s + runs[i].off, runs[i].n * sizeof(**buf));
            used += runs[i].n;
            out[j].n += runs[i].n;
        }
    }
    *k_out = k;
    return IOCD_OK;
}

/* Encodes the runs as blocks of one period and one id group each, appended to *blocks (with
 * their bytes in space; see block_add), with their rollup parts: per period, or, when the
 * group's span is already compacted (late samples for it), one part for the whole span
 * rebuilt from every sample of the span, keyed by its start (readers take the latest part
 * per key: see rollup.c). */
static iocd_err build_blocks(store *st, const seal_set *ss, store_db_block **blocks_io,
                             size_t *n_io, size_t *cap_io, iocd_buf *space)
{
    store_db_block *blocks = *blocks_io;
    codec_series cs[64], whole[64];
    prior_ctx *prior = iocd_calloc(1, sizeof(*prior));
    size_t i = 0, n = *n_io;
    iocd_err err = IOCD_OK;

    if (prior == NULL)
        return IOCD_ENOMEM;
    iocd_qsort(ss->runs, ss->n_runs, sizeof(*ss->runs), run_cmp);
    if (n + 3 * ss->n_runs > *cap_io) {
        size_t cap = (n + 3 * ss->n_runs) * 2;
        store_db_block *g = iocd_realloc(blocks, cap * sizeof(*g));
        if (g == NULL) {
            iocd_free(prior);
            return IOCD_ENOMEM;
        }
        *blocks_io = blocks = g;
        *cap_io = cap;
    }
    while (err == IOCD_OK && i < ss->n_runs) {
        int64_t span = ss->runs[i].span;
        uint64_t group = ss->runs[i].id >> 6;
        size_t unit = i, k = 0;
        bool compacted = false;
        while (unit < ss->n_runs && ss->runs[unit].span == span && ss->runs[unit].id >> 6 == group)
            unit++;
        if (store_db_span_ms(st->db) > 0)
            err = store_db_span_compacted(st->db, span, group, &compacted);
        while (err == IOCD_OK && i < unit) {
            int64_t period = ss->runs[i].period;
            size_t before = space->len;
            k = 0;
            while (i < unit && ss->runs[i].period == period) {
                cs[k++] = (codec_series){ ss->runs[i].id, ss->s + ss->runs[i].off, ss->runs[i].n };
                i++;
            }
            err = codec_block_encode(cs, k, ZSTD_LEVEL, space);
            block_add(blocks, &n, STORE_DB_CHUNKS, period, group, space, before, false);
            if (err == IOCD_OK && !compacted)
                err = merge_prior(st, period, period, group, cs, k, prior, whole);
            if (err == IOCD_OK && !compacted)
                err = add_rollups(whole, k, period, group, false, ZSTD_LEVEL, blocks, &n, space);
            prior_fini(prior);
            memset(prior, 0, sizeof(*prior));
        }
        if (err == IOCD_OK && compacted) {
            iocd_sample *joined = NULL;
            size_t first = unit;
            while (first > 0 && ss->runs[first - 1].span == span &&
                   ss->runs[first - 1].id >> 6 == group)
                first--;
            err = join_runs(ss, ss->runs + first, unit - first, cs, &k, &joined);
            if (err == IOCD_OK)
                err = merge_prior(st, span, span + store_db_span_ms(st->db) - 1, group, cs, k,
                                  prior, whole);
            if (err == IOCD_OK)
                err = add_rollups(whole, k, span, group, false, ZSTD_LEVEL, blocks, &n, space);
            prior_fini(prior);
            memset(prior, 0, sizeof(*prior));
            iocd_free(joined);
        }
    }
    iocd_free(prior);
    *n_io = n;
    return err;
}

#define SEAL_SLICE 256 /* series ids per slice (a multiple of the id group, 64) */
/* Series ids per sealer transaction. The writer's acknowledgements wait on commit_mu behind
 * each one, so small transactions keep the write tail short (paced replay p99, A/B: 1,024
 * series 12.2-15.3 ms, 256 9.3-12.4, 64 8.1-8.4); but each costs two fsyncs, so at full speed
 * a seal made of small ones falls behind and the heads hold more (100k series, peak anon
 * 110-112 MiB at 1,024, 130-140 at 256, 167-178 at 64). So a seal takes SEAL_IDS_KEEPING_UP
 * while it keeps pace with the samples arriving, and SEAL_IDS_BEHIND when it does not. */
#define SEAL_IDS_KEEPING_UP 64
#define SEAL_IDS_BEHIND     1024

/* The series ids of the next step of the seal of the periods before `before`, at series id
 * `from`. Keeping pace means sealing ids at least SEAL_PACE times as fast as the next period
 * arrives (past the grace), so the seal ends before 1/SEAL_PACE of that period is in and the
 * heads hold little more than one period; SEAL_LAG_MAX allows for the first request of a
 * period. Keeping pace (*keeping_up), a step is SEAL_IDS_KEEPING_UP ids, or more when there
 * are many series, so a seal is at most SEAL_STEPS_MAX of the writer's commits (each waits
 * for one); behind, SEAL_IDS_BEHIND. */
#define SEAL_PACE      2
#define SEAL_LAG_MAX   0.03
#define SEAL_STEPS_MAX 256

static size_t seal_step_ids(store *st, int64_t before, size_t from, bool *keeping_up)
{
    double arrived, done;
    size_t n;

    pthread_mutex_lock(&st->mu);
    arrived =
        st->watermark == INT64_MIN
            ? 0
            : (double)(st->watermark - st->cfg.seal_grace_ms - before) / (double)st->cfg.chunk_ms;
    done = st->next_id > 0 ? (double)from / (double)st->next_id : 1;
    n = (size_t)(st->next_id / SEAL_STEPS_MAX + 63) / 64 * 64;
    pthread_mutex_unlock(&st->mu);
    *keeping_up = (arrived < 1.0 / SEAL_PACE ? SEAL_PACE * arrived : 1) - done <= SEAL_LAG_MAX;
    if (!*keeping_up)
        return SEAL_IDS_BEHIND;
    return n > SEAL_IDS_KEEPING_UP ? n : SEAL_IDS_KEEPING_UP;
}

/* Takes and encodes, slice by slice from series id *from, every head sample before `before`:
 * ids [*from, *from + max_ids) (0: all). *from is where the next call goes on; *done is set
 * when no series is left. */
static iocd_err seal_slices(store *st, int64_t before, size_t *from_io, size_t max_ids, bool *done,
                            store_db_block **blocks, size_t *n_blocks, iocd_buf *space,
                            size_t *n_samples, uint64_t **sealing_ids, size_t *n_sealing_ids)
{
    size_t from = *from_io, stop = max_ids > 0 ? from + max_ids : SIZE_MAX, cap_blocks = 0, end, i,
           cap_ids = 0;
    seal_set ss;
    iocd_err err = IOCD_OK;

    memset(&ss, 0, sizeof(ss));
    *done = false;
    for (;;) {
        size_t to = stop - from < SEAL_SLICE ? stop : from + SEAL_SLICE;
        if (from >= stop)
            break;
        pthread_mutex_lock(&st->mu);
        end = st->next_id; /* above every id in use */
        if (from < end)
            err = take_sealable(st, before, from, to, &ss, sealing_ids, n_sealing_ids, &cap_ids);
        pthread_mutex_unlock(&st->mu);
        if (from >= end)
            *done = true;
        if (from >= end || err != IOCD_OK)
            break;
        *n_samples += ss.n;
        if (ss.n_runs > 0)
            err = build_blocks(st, &ss, blocks, n_blocks, &cap_blocks, space);
        if (err != IOCD_OK)
            break;
        ss.n = 0;
        ss.n_runs = 0;
        from = to;
    }
    if (err == IOCD_OK && !*done) {
        pthread_mutex_lock(&st->mu);
        *done = from >= st->next_id;
        pthread_mutex_unlock(&st->mu);
    }
    *from_io = from;
    seal_set_fini(&ss);
    for (i = 0; i < *n_blocks; i++)
        (*blocks)[i].data = space->data + (uintptr_t)(*blocks)[i].data;
    return err;
}

/* ---- Compaction ---------------------------------------------------------------------------
 * A finished span's chunk blocks of one id group (and an older compaction of it, if late
 * samples came since) become one block, and its rollup parts one part per series keyed by
 * the span's start, in one transaction that deletes what they replace. Blocks are read in
 * write order, so the last write of a timestamp wins as in every read; series deleted since
 * are left out. */

#define COMPACT_PER_COMMIT 1  /* containers (SPAN_GROUPS id groups) while running */
#define COMPACT_AT_STOP    16 /* the final compaction, nobody waiting on it */
#ifndef COMPACT_ZSTD_LEVEL
#define COMPACT_ZSTD_LEVEL 9
#endif

typedef struct compact_ctx {
    uint64_t group;
    iocd_sample *s[64];
    size_t n[64], cap[64];
} compact_ctx;

static iocd_err compact_series(void *ud, uint64_t id, const iocd_sample *s, size_t n)
{
    compact_ctx *c = ud;
    size_t j = (size_t)(id & 63);

    if (id >> 6 != c->group || n == 0)
        return id >> 6 != c->group ? IOCD_ECORRUPT : IOCD_OK;
    if (c->n[j] + n > c->cap[j]) {
        size_t cap = (c->n[j] + n) * 2;
        iocd_sample *g = iocd_realloc(c->s[j], cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        c->s[j] = g;
        c->cap[j] = cap;
    }
    memcpy(c->s[j] + c->n[j], s, n * sizeof(*s));
    c->n[j] += n;
    return IOCD_OK;
}

static iocd_err compact_block(void *ud, int64_t period, int64_t last_ms, const void *data,
                              size_t len)
{
    (void)period;
    (void)last_ms;
    return codec_block_each(data, len, BLOCK_RAW_MAX, compact_series, ud);
}

/* Appends to out the container of one span of the SPAN_GROUPS id groups from `first`; nothing
 * when none of them has a sample left in it (every series deleted). */
static iocd_err compact_span(store *st, int64_t span, uint64_t first, compact_ctx *c,
                             iocd_buf *frames_buf, iocd_buf *out)
{
    codec_frame frames[SPAN_GROUPS * 3];
    size_t offs[SPAN_GROUPS * 3], n_frames = 0, j, k, f;
    codec_series cs[64];
    unsigned g;
    int r;
    iocd_err err = IOCD_OK;

    iocd_buf_reset(frames_buf);
    for (g = 0; err == IOCD_OK && g < SPAN_GROUPS; g++) {
        c->group = first + g;
        for (j = 0; j < 64; j++)
            c->n[j] = 0;
        err = store_db_blocks(st->db, STORE_DB_CHUNKS, c->group, span,
                              span + store_db_span_ms(st->db) - 1, compact_block, c);
        if (err != IOCD_OK)
            break;
        k = 0;
        pthread_mutex_lock(&st->mu);
        for (j = 0; j < 64; j++) {
            uint64_t id = c->group * 64 + j;
            if (c->n[j] == 0 || store_series_get(st, id) == NULL)
                continue; /* deleted: its samples go now */
            cs[k++] = (codec_series){ id, c->s[j], store_samples_dedupe(c->s[j], c->n[j]) };
        }
        pthread_mutex_unlock(&st->mu);
        for (r = 0; err == IOCD_OK && k > 0 && r < 3; r++) {
            offs[n_frames] = frames_buf->len;
            if (r == 0)
                err = codec_block_encode(cs, k, COMPACT_ZSTD_LEVEL, frames_buf);
            else
                err = codec_rollup_encode(cs, k, r == 1 ? STORE_ROLLUP_5M : STORE_ROLLUP_1H,
                                          COMPACT_ZSTD_LEVEL, frames_buf);
            frames[n_frames] = (codec_frame){ g,
                                              r == 0   ? STORE_DB_CHUNKS
                                              : r == 1 ? STORE_DB_ROLLUP_5M
                                                       : STORE_DB_ROLLUP_1H,
                                              NULL, frames_buf->len - offs[n_frames] };
            n_frames++;
        }
    }
    for (f = 0; f < n_frames; f++)
        frames[f].data = frames_buf->data + offs[f];
    if (err == IOCD_OK && n_frames > 0)
        err = codec_span_pack(frames, n_frames, out);
    return err;
}

/* A container of a compaction: the SPAN_GROUPS id groups from `first` in the span starting at
 * `span`. */
typedef struct compact_part {
    int64_t span;
    uint64_t first;
} compact_part;

static bool part_in(const compact_part *p, size_t n, int64_t span, uint64_t first)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (p[i].span == span && p[i].first == first)
            return true;
    return false;
}

/* The containers to compact together with (span, first), first the one whose key a shared
 * value goes under. A container in a shared value comes with all of its value's parts
 * (*shared; see compact_write and compact_apart for what is done with them), so the value
 * never holds a stale one. At the stop (`stop`), the containers of
 * the same quad (4 containers, 16 id groups) in the span and the next that have chunk blocks
 * and are in no shared value are compacted together, into one value: the stop leaves the
 * current span unfinished and often the one before begun mid-way (the daemon started then),
 * and one value for them all pays LMDB's page rounding (half a page, on average) once instead
 * of up to eight times. Containers in `done` (compacted in this commit) are left out. */
static iocd_err compact_unit(store *st, int64_t span, uint64_t first, bool stop,
                             const compact_part *done, size_t n_done, compact_part *unit,
                             size_t *n_unit, bool *shared)
{
    int64_t span_ms = store_db_span_ms(st->db), owner_span = 0;
    uint64_t owner_first = 0, quad = first / SPAN_GROUPS & ~(uint64_t)3, slot;
    codec_part tags[CODEC_SPAN_PARTS];
    size_t n_tags = 0, i, s;
    iocd_err err;

    *n_unit = 0;
    *shared = false;
    err = store_db_span_owner(st->db, span, first, &owner_span, &owner_first, tags, &n_tags);
    if (err != IOCD_OK)
        return err;
    *shared = n_tags > 0;
    if (n_tags > 0) {
        quad = owner_first / SPAN_GROUPS & ~(uint64_t)3;
        unit[(*n_unit)++] = (compact_part){ owner_span, owner_first };
        for (i = 0; i < n_tags; i++) {
            compact_part p = { owner_span + (int64_t)tags[i].span * span_ms,
                               (quad | tags[i].slot) * SPAN_GROUPS };
            if (!part_in(unit, *n_unit, p.span, p.first))
                unit[(*n_unit)++] = p;
        }
        if (!part_in(unit, *n_unit, span, first) && *n_unit < CODEC_SPAN_PARTS)
            unit[(*n_unit)++] = (compact_part){ span, first }; /* not expected */
        return IOCD_OK;
    }
    unit[(*n_unit)++] = (compact_part){ span, first };
    if (!stop || span > INT64_MAX - 2 * span_ms)
        return IOCD_OK;
    for (s = 0; err == IOCD_OK && s < 2; s++)
        for (slot = 0; err == IOCD_OK && slot < 4; slot++) {
            compact_part p = { span + (int64_t)s * span_ms, (quad | slot) * SPAN_GROUPS };
            bool chunked = false;
            if (part_in(unit, *n_unit, p.span, p.first) || part_in(done, n_done, p.span, p.first))
                continue;
            err = store_db_span_chunked(st->db, p.span, p.first, &chunked);
            if (err == IOCD_OK && chunked)
                err = store_db_span_owner(st->db, p.span, p.first, &owner_span, &owner_first, tags,
                                          &n_tags);
            if (err == IOCD_OK && chunked && n_tags == 0)
                unit[(*n_unit)++] = p;
        }
    /* The owner: the unit's first container (the span's, the lowest). */
    for (i = 1; i < *n_unit; i++)
        if (unit[i].span == span && unit[i].first < unit[0].first) {
            compact_part t = unit[0];
            unit[0] = unit[i];
            unit[i] = t;
        }
    return err;
}

/* While running, a container in a shared value is compacted alone, and the value's other
 * containers move, as they are, to values of their own under their keys: one container's
 * work per step, as for any other (the sealer's seals wait behind it), and the value never
 * holds a stale part. unit: the value's containers, its owner first. */
static iocd_err compact_apart(store *st, int64_t span, uint64_t first, const compact_part *unit,
                              size_t n_unit, compact_ctx *c, iocd_buf *frames_buf, iocd_buf *value,
                              store_db_block *blocks, size_t *n, iocd_buf *space)
{
    codec_part parts[CODEC_SPAN_PARTS];
    int64_t span_ms = store_db_span_ms(st->db);
    uint64_t quad = unit[0].first / SPAN_GROUPS & ~(uint64_t)3;
    size_t n_parts = 0, i, j, before;
    iocd_err err;

    iocd_buf_reset(value);
    err = store_db_span_value(st->db, unit[0].span, unit[0].first, value);
    if (err == IOCD_OK)
        err = codec_span_parts(value->data, value->len, parts, CODEC_SPAN_PARTS, &n_parts);
    for (i = 0; err == IOCD_OK && i < n_unit; i++) {
        if (unit[i].span == span && unit[i].first == first)
            continue;
        before = space->len;
        for (j = 0; err == IOCD_OK && j < n_parts; j++)
            if (unit[0].span + (int64_t)parts[j].span * span_ms == unit[i].span &&
                (quad | parts[j].slot) * SPAN_GROUPS == unit[i].first)
                err = iocd_buf_append(space, parts[j].data, parts[j].len);
        block_add(blocks, n, STORE_DB_SPANS, unit[i].span, unit[i].first, space, before, false);
        blocks[*n - 1].moves = true; /* len 0 (the owner had no part): the value only goes */
    }
    if (err == IOCD_OK) {
        before = space->len;
        err = compact_span(st, span, first, c, frames_buf, space);
        block_add(blocks, n, STORE_DB_SPANS, span, first, space, before, true);
    }
    return err;
}

/* Compacts the containers of a unit (see compact_unit), appending their blocks (see
 * block_add): a value of its own for each, or, when more than one has samples left, one
 * shared value under the first's key and aliases under the others'. */
static iocd_err compact_write(store *st, const compact_part *unit, size_t n_unit, compact_ctx *c,
                              iocd_buf *frames_buf, iocd_buf *parts_buf, store_db_block *blocks,
                              size_t *n, iocd_buf *space)
{
    codec_part parts[CODEC_SPAN_PARTS];
    size_t offs[CODEC_SPAN_PARTS], lens[CODEC_SPAN_PARTS], n_parts = 0, before, i;
    unsigned owner_slot = (unsigned)(unit[0].first / SPAN_GROUPS & 3);
    iocd_err err = IOCD_OK;

    iocd_buf_reset(parts_buf);
    for (i = 0; err == IOCD_OK && i < n_unit; i++) {
        offs[i] = parts_buf->len;
        err = compact_span(st, unit[i].span, unit[i].first, c, frames_buf, parts_buf);
        lens[i] = parts_buf->len - offs[i];
        n_parts += lens[i] > 0;
    }
    if (err != IOCD_OK)
        return err;
    if (n_parts <= 1) {
        /* One value each, as ever; nothing left (every series deleted): an empty container
         * still replaces the rest. */
        for (i = 0; err == IOCD_OK && i < n_unit; i++) {
            before = space->len;
            err = iocd_buf_append(space, parts_buf->data + offs[i], lens[i]);
            block_add(blocks, n, STORE_DB_SPANS, unit[i].span, unit[i].first, space, before, true);
        }
        return err;
    }
    for (i = 0, n_parts = 0; i < n_unit; i++)
        if (lens[i] > 0)
            parts[n_parts++] = (codec_part){ unit[i].span != unit[0].span,
                                             (unsigned)(unit[i].first / SPAN_GROUPS & 3),
                                             parts_buf->data + offs[i], lens[i] };
    before = space->len;
    err = codec_span_share(parts, n_parts, space);
    block_add(blocks, n, STORE_DB_SPANS, unit[0].span, unit[0].first, space, before, true);
    for (i = 1; err == IOCD_OK && i < n_unit; i++) {
        before = space->len;
        if (lens[i] > 0)
            err = codec_span_alias(unit[i].span != unit[0].span, owner_slot, space);
        block_add(blocks, n, STORE_DB_SPANS, unit[i].span, unit[i].first, space, before, true);
    }
    return err;
}

/* Compacts up to max containers with chunk blocks in spans that end by `before` (and those
 * compacted together with them, see compact_unit), appending their blocks (see block_add).
 * *n_done: how many containers were written. */
static iocd_err compact_slice(store *st, int64_t before, size_t max, store_db_block **blocks_io,
                              size_t *n_io, iocd_buf *space, size_t *n_done)
{
    store_span_group todo[COMPACT_AT_STOP];
    compact_part done[COMPACT_AT_STOP * CODEC_SPAN_PARTS];
    size_t n_parts_done = 0;
    compact_ctx *c = iocd_calloc(1, sizeof(*c));
    store_db_block *blocks;
    iocd_buf frames_buf, parts;
    bool stop = before == INT64_MAX;
    size_t n_todo = 0, t, j, n = *n_io;
    iocd_err err;

    *n_done = 0;
    if (c == NULL)
        return IOCD_ENOMEM;
    iocd_buf_init(&frames_buf, 0);
    iocd_buf_init(&parts, 0);
    if (max > COMPACT_AT_STOP)
        max = COMPACT_AT_STOP;
    err = store_db_compactable(st->db, before, todo, max, &n_todo);
    /* Up to CODEC_SPAN_PARTS blocks a unit: see compact_unit. */
    blocks = err == IOCD_OK && n_todo > 0
                 ? iocd_realloc(*blocks_io, (n + CODEC_SPAN_PARTS * n_todo) * sizeof(*blocks))
                 : *blocks_io;
    if (err == IOCD_OK && n_todo > 0 && blocks == NULL)
        err = IOCD_ENOMEM;
    if (blocks != NULL)
        *blocks_io = blocks;
    for (t = 0; err == IOCD_OK && t < n_todo; t++) {
        compact_part unit[CODEC_SPAN_PARTS];
        size_t n_unit = 0;
        bool shared = false;
        if (part_in(done, n_parts_done, todo[t].span, todo[t].group))
            continue; /* compacted with an earlier one */
        err = compact_unit(st, todo[t].span, todo[t].group, stop, done, n_parts_done, unit, &n_unit,
                           &shared);
        if (err == IOCD_OK && shared && !stop)
            err = compact_apart(st, todo[t].span, todo[t].group, unit, n_unit, c, &frames_buf,
                                &parts, blocks, &n, space);
        else if (err == IOCD_OK)
            err = compact_write(st, unit, n_unit, c, &frames_buf, &parts, blocks, &n, space);
        for (j = 0; j < n_unit && n_parts_done < IOCD_ARRAY_LEN(done); j++)
            done[n_parts_done++] = unit[j];
        *n_done += n_unit; /* containers written (moved ones too) */
    }
    for (j = 0; j < 64; j++)
        iocd_free(c->s[j]);
    iocd_free(c);
    iocd_buf_fini(&frames_buf);
    iocd_buf_fini(&parts);
    *n_io = n;
    return err;
}

/* Spans that may be compacted end by here: every period sealed, and the out-of-order window
 * past them (so late samples seldom patch a compacted span); INT64_MIN: none yet. */
static int64_t compact_boundary(const store *st)
{
    int64_t b = st->sealed_before;

    if (!store_db_compacts(st->db) || b == INT64_MIN || st->watermark == INT64_MIN)
        return INT64_MIN;
    if (st->watermark - st->lim.ooo_window_ms < b)
        b = st->watermark - st->lim.ooo_window_ms;
    return b;
}

/* Sealing or compaction work, encoded by the sealer outside commit_mu and then committed. */
typedef struct seal_work {
    int64_t seal_before;    /* INT64_MIN: no seal */
    int64_t compact_before; /* INT64_MIN: no compaction */
    store_db_block *blocks;
    size_t n_blocks;
    iocd_buf space;
    size_t n_sealed, n_compacted, seal_next;
    bool seal_done;
    uint64_t *sealing_ids;
    size_t n_sealing_ids;
    uint64_t epoch; /* st->delete_epoch before its samples were taken */
} seal_work;

/* A seal step riding in the writer's next group commit: one transaction and one sync for
 * both, so acknowledgements never wait behind a sealer transaction (and its two syncs). */
typedef struct seal_handoff {
    seal_work *w;
    iocd_err pre; /* its encoding's outcome */
    iocd_err err; /* the commit's, once done */
    bool done;
} seal_handoff;

/* One LMDB transaction, under commit_mu: the series created since the last one, WAL records
 * and/or a seal or compaction step w. With pre != IOCD_OK (w's encoding failed), or
 * IOCD_EAGAIN when a deletion raced w, nothing is committed and that error is returned; w's
 * samples go back to their heads, to be sealed again. */
#define WAL_DELETE_BYTES (64u << 20)

static uint64_t wal_delete_max(const store *st)
{
    return st->cfg.wal_delete_bytes > 0 ? st->cfg.wal_delete_bytes : WAL_DELETE_BYTES;
}

static iocd_err commit_txn(store *st, const store_db_wal *recs, size_t n_recs, seal_work *w,
                           iocd_err pre)
{
    store_db_series *ser = NULL, *post = NULL;
    uint64_t *ids = NULL;
    size_t n_ids = 0, n_ser = 0, n_post = 0, from_queue = 0, direct = 0, i;
    int64_t seal_before = w != NULL ? w->seal_before : INT64_MIN;
    int64_t compact_before = w != NULL ? w->compact_before : INT64_MIN;
    int64_t drop_before = INT64_MIN, drop_rollups_before = INT64_MIN;
    bool wal_more = false;
    iocd_err err = pre;

    if (err == IOCD_OK && w != NULL && st->delete_epoch != w->epoch)
        err = IOCD_EAGAIN;

    /* Take the series created since the last commit (their keys live as long as the store). */
    pthread_mutex_lock(&st->mu);
    ids = st->unpersisted;
    n_ids = st->n_unpersisted;
    st->unpersisted = NULL;
    st->n_unpersisted = st->cap_unpersisted = 0;
    ser = n_ids > 0 ? iocd_calloc(n_ids, sizeof(*ser)) : NULL;
    for (i = 0; ser != NULL && i < n_ids; i++) {
        store_series *s = store_series_get(st, ids[i]); /* NULL: deleted before it was persisted */
        if (s != NULL)
            ser[n_ser++] = (store_db_series){ s->id, s->key, s->key_len };
    }
    /* A seal's end packs the postings: every one due goes in with it. */
    if (err == IOCD_OK && (n_ids == 0 || ser != NULL))
        err = store_posts_take(
            st, w != NULL && w->seal_done && seal_before != INT64_MIN ? SIZE_MAX : STORE_POST_STEP,
            ids, n_ids, &post, &n_post, &from_queue, &direct);
    pthread_mutex_unlock(&st->mu);
    if (n_ids > 0 && ser == NULL && err == IOCD_OK)
        err = IOCD_ENOMEM;
    if (seal_before != INT64_MIN) {
        drop_before = store_period_of(st, iocd_now_ms() - st->lim.retention_ms);
        drop_rollups_before = store_period_of(st, iocd_now_ms() - st->cfg.rollup_retention_ms);
    }
    if (err == IOCD_OK)
        err = store_db_commit(st->db, ser, n_ser, post, n_post, st->wal_seq + 1, recs, n_recs,
                              w != NULL ? w->blocks : NULL, w != NULL ? w->n_blocks : 0,
                              w != NULL && w->seal_done ? seal_before : INT64_MIN, st->seal_seq,
                              wal_delete_max(st), &wal_more, drop_before, drop_rollups_before);
    if (err == IOCD_OK && w != NULL && w->seal_done) {
        /* What the seal's own transaction did not delete goes in trim steps (a later seal's
         * records include an earlier one's). */
        st->trim_before = wal_more ? seal_before : INT64_MIN;
        st->trim_seq = st->seal_seq;
    }
    if (err == IOCD_OK && st->cfg.sync_window_ms > 0 &&
        iocd_mono_ns() - st->last_sync_ns >= st->cfg.sync_window_ms * 1000000) {
        err = store_db_sync(st->db);
        st->last_sync_ns = iocd_mono_ns();
    }
    pthread_mutex_lock(&st->mu);
    if (err == IOCD_OK) {
        st->wal_seq++;
        for (i = 0; i < n_ids; i++) {
            store_series *s = store_series_get(st, ids[i]);
            if (s != NULL)
                s->persisted = true;
        }
        store_posts_done(st, from_queue, direct, ids, n_ids);
        iocd_free(ids);
        if (seal_before != INT64_MIN) {
            st->seal_from = w->seal_next;
            if (w->seal_done) {
                if (seal_before > st->sealed_before)
                    st->sealed_before = seal_before;
                /* Every head sample before the boundary was taken, but for those that came
                 * while the seal went on. */
                st->head_min = seal_before < st->arrived_min ? seal_before : st->arrived_min;
                st->n_late = 0;
                st->seal_target = INT64_MIN;
                st->compact_check = true; /* a span may have finished, or got a patch */
            }
        } else if (compact_before != INT64_MIN && w->n_compacted == 0) {
            st->compact_check = false; /* nothing waits: until the next seal */
            if (st->compact_groups > 0)
                log_info("store", "spans compacted", "containers=%llu cpu_ms=%.0f",
                         (unsigned long long)st->compact_groups, (double)st->compact_ns / 1e6);
            st->compact_groups = 0;
            st->compact_ns = 0;
        }
        if (w != NULL)
            st->compact_groups += w->n_compacted;
    } else {
        if (compact_before != INT64_MIN && err != IOCD_EAGAIN)
            st->compact_check = false; /* tried again after the next seal, not in a loop */
        /* The seal failed: its samples go back into their heads (the WAL holds them too). */
        for (i = 0; w != NULL && i < w->n_sealing_ids; i++) {
            store_series *s = store_series_get(st, w->sealing_ids[i]);
            size_t j;
            for (j = 0; s != NULL && j < s->n_sealing; j++)
                if (store_series_put(st, s, s->sealing[j].t_ms, s->sealing[j].v) != IOCD_OK)
                    log_error("store",
                              "cannot put back a failed seal's samples; they are in "
                              "the WAL and return on restart",
                              NULL);
        }
        if (ids != NULL) {
            /* Keep them for the next commit, ahead of any created meanwhile (ids ascend). */
            uint64_t *merged = iocd_realloc(ids, (n_ids + st->n_unpersisted) * sizeof(*ids));
            if (merged != NULL) {
                if (st->n_unpersisted > 0)
                    memcpy(merged + n_ids, st->unpersisted, st->n_unpersisted * sizeof(*ids));
                iocd_free(st->unpersisted);
                st->unpersisted = merged;
                st->n_unpersisted += n_ids;
                st->cap_unpersisted = st->n_unpersisted;
            } else {
                iocd_free(ids);
                log_error("store", "out of memory keeping unpersisted series", NULL);
            }
        }
    }
    if (w != NULL)
        drop_sealing(st, w->sealing_ids, w->n_sealing_ids);
    st->n_txns++;
    pthread_cond_signal(&st->seal_wake); /* the watermark may have passed a period */
    pthread_mutex_unlock(&st->mu);
    iocd_free(ser);
    iocd_free(post);
    return err;
}

static void commit_observe(store *st, int64_t t0, size_t n_batches, iocd_err err)
{
    iocd_metric_observe(st->m_commit_seconds, (double)(iocd_mono_ns() - t0) / 1e9);
    if (n_batches > 0)
        iocd_metric_observe(st->m_commit_batches, (double)n_batches);
    if (err == IOCD_OK)
        iocd_metric_add(st->m_commits, 1);
    else if (err != IOCD_EAGAIN) {
        iocd_metric_add(st->m_commit_fail, 1);
        log_error("store", "group commit failed", "err=%s batches=%zu", iocd_strerror(err),
                  n_batches);
    }
}

/* One group commit of queued batches (may be none): their WAL records (compressed before
 * commit_mu is taken) and the series they created, with the seal step ho if there is one,
 * then their done() callbacks. If the transaction with ho fails, the writes go again alone
 * (the seal's samples are back in their heads by then). */
static void group_commit(store *st, pending *batch, seal_handoff *ho)
{
    size_t i, n_batches = 0;
    size_t *offs = NULL;
    wal_split ws;
    iocd_buf wal_packed;
    pending *p, *next;
    int64_t t0 = iocd_mono_ns();
    bool carried = false;
    iocd_err err = IOCD_OK;

    memset(&ws, 0, sizeof(ws));
    iocd_buf_init(&wal_packed, 0);
    for (p = batch; p != NULL && err == IOCD_OK; p = p->next) {
        err = wal_split_add(st, &ws, p);
        n_batches++;
    }
    /* Compress each period's record; the packed records share one buffer, so pointers are
     * taken only once it has stopped growing. */
    offs = ws.n > 0 ? iocd_calloc(ws.n, sizeof(*offs)) : NULL;
    if (ws.n > 0 && offs == NULL && err == IOCD_OK)
        err = IOCD_ENOMEM;
    for (i = 0; err == IOCD_OK && i < ws.n; i++) {
        offs[i] = wal_packed.len;
        err = codec_wal_pack(ws.bufs[i].data, ws.bufs[i].len, &wal_packed);
        ws.recs[i].len = wal_packed.len - offs[i];
    }
    for (i = 0; err == IOCD_OK && i < ws.n; i++)
        ws.recs[i].data = wal_packed.data + offs[i];
    iocd_free(offs);
    pthread_mutex_lock(&st->commit_mu);
    if (ho != NULL) {
        if (ho->pre == IOCD_OK && err == IOCD_OK && batch != NULL) {
            ho->err = commit_txn(st, ws.recs, ws.n, ho->w, IOCD_OK);
            carried = ho->err == IOCD_OK;
        } else {
            ho->err = commit_txn(st, NULL, 0, ho->w, ho->pre);
        }
    }
    if (err == IOCD_OK && batch != NULL && !carried)
        err = commit_txn(st, ws.recs, ws.n, NULL, IOCD_OK);
    else if (batch == NULL && ho == NULL) /* the writer is idle: postings that wait */
        err = commit_txn(st, NULL, 0, NULL, IOCD_OK);
    if (err == IOCD_OK && st->listen != NULL) /* under commit_mu: see store_set_listener */
        for (p = batch; p != NULL; p = p->next)
            notify_listener(st, &p->wal);
    pthread_mutex_unlock(&st->commit_mu);
    if (batch != NULL)
        commit_observe(st, t0, n_batches, err);
    else if (ho != NULL)
        commit_observe(st, t0, 0, ho->err); /* a transaction of the seal step alone */
    else
        commit_observe(st, t0, 0, err); /* of postings alone */
    if (batch == NULL && ho == NULL && err != IOCD_OK) {
        pthread_mutex_lock(&st->mu);
        st->post_retry_ns = iocd_mono_ns() + 1000000000LL; /* disk full: a second later */
        pthread_mutex_unlock(&st->mu);
    }
    if (batch != NULL && ho != NULL && ho->err != IOCD_OK && ho->err != IOCD_EAGAIN)
        log_error("store", "seal step failed", "err=%s", iocd_strerror(ho->err));
    if (err == IOCD_OK)
        for (i = 0; i < ws.n; i++)
            iocd_metric_add(st->m_wal_bytes, (double)ws.recs[i].len);
    wal_split_fini(&ws);
    iocd_buf_fini(&wal_packed);
    for (p = batch; p != NULL; p = next) {
        next = p->next;
        p->res.err = err;
        p->done(p->ud, &p->res);
        iocd_buf_fini(&p->wal);
        iocd_free(p);
    }
}

/* One step of sealing (seal_before != INT64_MIN: the next slices of the seal in progress, or
 * every head sample for the final seal, INT64_MAX; when the seal has passed every series, the
 * WAL records it covered are deleted) or else of compaction (the next groups of finished
 * spans; all at the final one, INT64_MAX). The encoding runs without commit_mu, so group
 * commits of incoming writes go on meanwhile; only the transaction takes it. */
static iocd_err seal_step(store *st, int64_t seal_before, int64_t compact_before)
{
    seal_work w;
    size_t i, step = 0;
    int64_t t0 = iocd_mono_ns();
    seal_handoff *ho;
    bool keeping_up = false, carried;
    iocd_err err = IOCD_OK;

    memset(&w, 0, sizeof(w));
    w.seal_before = seal_before;
    w.compact_before = seal_before == INT64_MIN ? compact_before : INT64_MIN;
    iocd_buf_init(&w.space, 0);
    pthread_mutex_lock(&st->commit_mu);
    w.epoch = st->delete_epoch;
    if (seal_before != INT64_MIN && st->seal_target != seal_before) {
        /* A new seal: records up to now hold its samples; later ones may hold samples that
         * reach a head after its slice was taken, so they stay in the WAL. */
        st->seal_target = seal_before;
        st->seal_from = 0;
        st->seal_seq = st->wal_seq;
        pthread_mutex_lock(&st->mu);
        st->arrived_min = INT64_MAX;
        pthread_mutex_unlock(&st->mu);
    }
    pthread_mutex_unlock(&st->commit_mu);
    w.seal_next = st->seal_from;
    /* Keeping pace, a few series at a time ride in the writer's group commits; behind, more
     * at a time in transactions of their own, which do not wait for the writer's. The final
     * seal at a stop takes every series at once. */
    if (seal_before != INT64_MIN && seal_before != INT64_MAX)
        step = seal_step_ids(st, seal_before, w.seal_next, &keeping_up);
    if (seal_before != INT64_MIN)
        err = seal_slices(st, seal_before, &w.seal_next, step, &w.seal_done, &w.blocks, &w.n_blocks,
                          &w.space, &w.n_sealed, &w.sealing_ids, &w.n_sealing_ids);
    else {
        int64_t c0 = iocd_mono_ns();
        err = compact_slice(st, compact_before,
                            compact_before == INT64_MAX ? COMPACT_AT_STOP : COMPACT_PER_COMMIT,
                            &w.blocks, &w.n_blocks, &w.space, &w.n_compacted);
        for (i = 0; i < w.n_blocks; i++)
            w.blocks[i].data = w.space.data + (uintptr_t)w.blocks[i].data;
        st->compact_ns += iocd_mono_ns() - c0;
    }
    ho = keeping_up ? iocd_calloc(1, sizeof(*ho)) : NULL; /* NULL: it goes alone */
    pthread_mutex_lock(&st->mu);
    carried = ho != NULL && !st->writer_done;
    if (carried) { /* in the writer's next group commit */
        *ho = (seal_handoff){ &w, err, IOCD_OK, false };
        st->handoff = ho;
        pthread_cond_signal(&st->wake);
        while (!ho->done)
            pthread_cond_wait(&st->seal_wake, &st->mu);
        err = ho->err;
    }
    pthread_mutex_unlock(&st->mu);
    iocd_free(ho);
    if (!carried) { /* behind, a compaction, or the final seal at a stop */
        pthread_mutex_lock(&st->commit_mu);
        err = commit_txn(st, NULL, 0, &w, err);
        pthread_mutex_unlock(&st->commit_mu);
        commit_observe(st, t0, 0, err);
    }
    if (err == IOCD_OK && w.n_blocks > 0) {
        size_t chunk_bytes = 0;
        iocd_metric_add(st->m_sealed_blocks, (double)w.n_blocks);
        iocd_metric_add(st->m_sealed_samples, (double)w.n_sealed);
        for (i = 0; i < w.n_blocks; i++)
            if (w.blocks[i].kind == STORE_DB_CHUNKS)
                chunk_bytes += w.blocks[i].len;
        iocd_metric_add(st->m_sealed_bytes, (double)chunk_bytes);
        if (w.n_compacted > 0)
            iocd_metric_add(st->m_compacted, (double)w.n_compacted);
        log_debug("store", w.n_compacted > 0 ? "compacted" : "sealed",
                  "before=%lld blocks=%zu samples=%zu bytes=%zu",
                  (long long)(w.n_compacted > 0 ? compact_before : seal_before), w.n_blocks,
                  w.n_sealed, w.space.len);
    }
    iocd_free(w.blocks);
    iocd_free(w.sealing_ids);
    iocd_buf_fini(&w.space);
    return err;
}

#define DROP_MAPPED_NS 200000000LL

/* What to seal now, or INT64_MIN: every period that ended a grace before the newest sample,
 * and, every LATE_SEAL_NS, samples that arrived late for already sealed periods. */
static int64_t seal_boundary(store *st)
{
    int64_t b;

    if (st->watermark == INT64_MIN)
        return INT64_MIN;
    b = store_period_of(st, st->watermark - st->cfg.seal_grace_ms);
    if (b > st->sealed_before && st->head_min >= b) {
        /* Nothing in the heads before it: the periods are sealed as they are. */
        st->sealed_before = b;
        st->compact_check = true;
    }
    if (b > st->sealed_before)
        return b;
    if (st->n_late > 0 && iocd_mono_ns() - st->last_late_seal_ns >= LATE_SEAL_NS) {
        st->last_late_seal_ns = iocd_mono_ns();
        return st->sealed_before;
    }
    return INT64_MIN;
}

/* The writer: group commits of queued batches until the store closes and the queue is
 * empty. */
void *store_writer_main(void *arg)
{
    store *st = arg;
    pending *batch;
    seal_handoff *ho;

    iocd_thread_name("store-writer");
    pthread_mutex_lock(&st->mu);
    for (;;) {
        if (st->queue == NULL && st->handoff == NULL) {
            int64_t retry_in = st->post_retry_ns - iocd_mono_ns();
            if (st->closing)
                break; /* postings that wait go in with the final seal, or at the next open */
            if (st->unposted_end == st->unposted_at) {
                pthread_cond_wait(&st->wake, &st->mu);
                continue;
            }
            if (retry_in > 0) {
                struct timespec until;
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_nsec += (long)(retry_in % 1000000000LL);
                until.tv_sec += (time_t)(retry_in / 1000000000LL) + until.tv_nsec / 1000000000L;
                until.tv_nsec %= 1000000000L;
                pthread_cond_timedwait(&st->wake, &st->mu, &until);
                continue;
            }
        }
        batch = st->queue;
        ho = st->handoff;
        st->queue = NULL;
        st->queue_tail = &st->queue;
        st->handoff = NULL;
        pthread_mutex_unlock(&st->mu);
        group_commit(st, batch, ho);
        pthread_mutex_lock(&st->mu);
        if (ho != NULL) {
            ho->done = true;
            pthread_cond_signal(&st->seal_wake);
        }
    }
    st->writer_done = true; /* no handoff is taken from here on */
    pthread_cond_signal(&st->seal_wake);
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* Waits (st->mu held) for the next commit, or a second. */
static void sealer_wait(store *st)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&st->seal_wake, &st->mu, &ts);
}

/* The sealer: seals periods as they end (and late samples), compacts finished spans; at a
 * stop, once the writer is done, seals every head sample and compacts every span. */
/* One transaction deleting the next WAL records of a finished seal (at a live 1 M samples/s,
 * a 15-minute period's records are gigabytes: deleted at once, they held every
 * acknowledgement for the transaction's length). A crash before the last one leaves records
 * of sealed periods, which recovery puts back into heads and a seal writes again as a patch
 * with the same values. */
static iocd_err trim_step(store *st)
{
    int64_t t0 = iocd_mono_ns();
    store_db_series *post = NULL;
    size_t n_post = 0, from_queue = 0, direct = 0;
    bool more = false;
    iocd_err err;

    pthread_mutex_lock(&st->commit_mu);
    pthread_mutex_lock(&st->mu); /* it packs the postings: every one due goes in with it */
    err = store_posts_take(st, SIZE_MAX, NULL, 0, &post, &n_post, &from_queue, &direct);
    pthread_mutex_unlock(&st->mu);
    if (err == IOCD_OK)
        err = store_db_commit(st->db, NULL, 0, post, n_post, st->wal_seq + 1, NULL, 0, NULL, 0,
                              st->trim_before, st->trim_seq, wal_delete_max(st), &more, INT64_MIN,
                              INT64_MIN);
    if (err == IOCD_OK) {
        pthread_mutex_lock(&st->mu);
        store_posts_done(st, from_queue, direct, NULL, 0);
        pthread_mutex_unlock(&st->mu);
    }
    pthread_mutex_unlock(&st->commit_mu);
    iocd_free(post);
    commit_observe(st, t0, 0, err);
    if (err == IOCD_OK && !more)
        st->trim_before = INT64_MIN;
    return err;
}

void *store_sealer_main(void *arg)
{
    store *st = arg;
    int64_t seal, compact, dropped_ns = iocd_mono_ns();
    uint64_t dropped_txns = 0;
    bool final_seal_done = false, failed = false;
    iocd_err err;

    iocd_thread_name("store-sealer");
    pthread_mutex_lock(&st->mu);
    for (;;) {
        if (st->n_txns != dropped_txns && iocd_mono_ns() - dropped_ns >= DROP_MAPPED_NS) {
            /* Pages of the data file that commits read are dropped from the mapping every
             * 200 ms while the store changes (and when a seal ends), so the process'
             * resident memory is what it holds, not the file (they stay in the page cache). */
            dropped_txns = st->n_txns;
            dropped_ns = iocd_mono_ns();
            pthread_mutex_unlock(&st->mu);
            store_db_drop_mapped(st->db);
            pthread_mutex_lock(&st->mu);
        }
        if (failed && st->writer_done) {
            log_warn("store", "sealing at stop failed; the write-ahead log keeps the samples",
                     NULL);
            break;
        }
        if (failed) {
            /* A failed step (disk full, I/O error) is tried again a second later. */
            sealer_wait(st);
        }
        if (st->trim_before != INT64_MIN) { /* after a failure, a second later */
            pthread_mutex_unlock(&st->mu);
            err = trim_step(st);
            failed = err != IOCD_OK;
            pthread_mutex_lock(&st->mu);
            continue;
        }
        seal = st->seal_target != INT64_MIN ? st->seal_target : seal_boundary(st);
        compact = INT64_MIN;
        if (st->writer_done && !final_seal_done) {
            /* A graceful stop seals every head sample, so the data dir is compact at rest;
             * a later sample for the same period lands in a patch block. */
            final_seal_done = true;
            seal = INT64_MAX;
        } else if (seal == INT64_MIN && st->compact_check && store_db_compacts(st->db)) {
            /* At a stop, every span is compacted, the last one even if unfinished: samples
             * for it after a restart patch it, and it is compacted again once finished. */
            compact = final_seal_done ? INT64_MAX : compact_boundary(st);
        }
        if (seal == INT64_MIN && compact == INT64_MIN) {
            if (final_seal_done)
                break;
            sealer_wait(st); /* late data is sealed even when nothing new arrives */
            continue;
        }
        pthread_mutex_unlock(&st->mu);
        err = seal_step(st, seal, compact);
        failed = err != IOCD_OK && err != IOCD_EAGAIN;
        if (seal != INT64_MIN && st->seal_target == INT64_MIN)
            store_db_drop_mapped(st->db); /* a seal's end reads many pages (WAL, postings) */
#ifdef __GLIBC__
        if (seal != INT64_MIN && st->seal_target == INT64_MIN)
            malloc_trim(0); /* a finished seal freed its slices' buffers: give the pages back */
#endif
        pthread_mutex_lock(&st->mu);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}
