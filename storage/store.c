/* storage/store.c - the store object: the data dir's lock, the LMDB environment, the
 * in-memory series table and heads, and the writer thread that makes batches durable.
 *
 * Write path: store_batch_submit resolves each sample's series (creating new ones), appends
 * it to the series' head and encodes it into the batch's write-ahead-log record, all under
 * st->mu, then queues the batch. The writer thread takes every queued batch at once (group
 * commit) and, in one LMDB transaction, persists the series created since the last commit
 * and appends one WAL record; only after that commit (and its fsync, unless a sync window is
 * configured) are the batches' done() callbacks called. "WAL before 2xx": the reply promises
 * durability.
 * Invariants: a series is persisted in the same transaction as (or before) the first WAL
 * record that names it; series are never freed while the store is open; the lock is taken
 * before the data file is opened and released after it is closed. */
#include "storage/storage_int.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_RETENTION_MS  (90LL * 86400000)
#define DEFAULT_FUTURE_MS     (10LL * 60000)
#define DEFAULT_OOO_MS        (3600LL * 1000)
#define DEFAULT_CHUNK_MS      (15LL * 60000)
#define DEFAULT_GRACE_MS      (2LL * 60000)
#define DEFAULT_ROLLUP_RET_MS (2LL * 365 * 86400000)
#define ROLLUP_AGGS           6 /* min, max, sum, count, last, last_t: streams per series */
#define LATE_SEAL_NS          (30LL * 1000000000)
#define ZSTD_LEVEL            3
#define BLOCK_RAW_MAX         (64u << 20)

typedef struct series {
    uint64_t id;
    uint64_t hash;
    uint8_t *key;
    uint32_t key_len;
    bool persisted;
    bool deleted;   /* out of the table and the index; kept until close (see the invariant) */
    iocd_sample *s; /* sorted by time, one per timestamp */
    size_t n, cap;
} series;

typedef struct pending {
    store_done_fn done;
    void *ud;
    iocd_buf wal; /* this batch's WAL entries */
    store_result res;
    struct pending *next;
} pending;

struct store {
    char *dir;
    store_lock *lock;
    store_db *db;
    store_config cfg;
    store_limits lim;

    pthread_mutex_t commit_mu; /* one database change at a time: commits, deletions; before mu */
    pthread_mutex_t mu;        /* guards everything below */
    pthread_cond_t wake;       /* writer: work queued or closing */
    series **table;            /* open addressing by hash */
    size_t table_cap, n_series;
    series **by_id; /* index id - 1 */
    size_t by_id_cap;
    uint64_t next_id;
    uint64_t *unpersisted; /* ids created since the last successful commit, ascending */
    size_t n_unpersisted, cap_unpersisted;
    pending *queue, **queue_tail;
    bool closing;
    int64_t churn_window_start_ms;
    uint64_t churn_count;

    pthread_t writer;
    bool writer_started;
    uint64_t wal_seq; /* writer thread only */
    int64_t last_sync_ns;
    int64_t watermark;     /* newest sample time accepted (st->mu) */
    int64_t sealed_before; /* periods before this are sealed (st->mu) */
    uint64_t n_late;       /* head samples in sealed periods, awaiting a patch block (st->mu) */
    int64_t last_late_seal_ns;
    uint64_t wal_unknown; /* recovery: WAL entries of series no longer in the index */
    iocd_buf wal_scratch; /* recovery: one decompressed WAL record */

    iocd_metric *m_series, *m_samples_head, *m_commits, *m_commit_fail, *m_commit_seconds,
        *m_commit_batches, *m_wal_bytes, *m_rejected[STORE_REJECT_COUNT_], *m_sealed_blocks,
        *m_sealed_samples, *m_sealed_bytes, *m_series_created;
};

/* ---- Series table (callers hold st->mu) ------------------------------------------------ */

static series *table_find(const store *st, uint64_t hash, const uint8_t *key, size_t len)
{
    size_t mask = st->table_cap - 1, i = hash & mask;
    series *s;

    if (st->table_cap == 0)
        return NULL;
    while ((s = st->table[i]) != NULL) {
        if (s->hash == hash && s->key_len == len && memcmp(s->key, key, len) == 0)
            return s;
        i = (i + 1) & mask;
    }
    return NULL;
}

static void table_insert(series **table, size_t cap, series *s)
{
    size_t mask = cap - 1, i = s->hash & mask;

    while (table[i] != NULL)
        i = (i + 1) & mask;
    table[i] = s;
}

static iocd_err table_reserve(store *st)
{
    series **grown;
    size_t cap, i;

    if ((st->n_series + 1) * 10 < st->table_cap * 7)
        return IOCD_OK;
    cap = st->table_cap != 0 ? st->table_cap * 2 : 1024;
    grown = iocd_calloc(cap, sizeof(*grown));
    if (grown == NULL)
        return IOCD_ENOMEM;
    for (i = 0; i < st->table_cap; i++)
        if (st->table[i] != NULL)
            table_insert(grown, cap, st->table[i]);
    iocd_free(st->table);
    st->table = grown;
    st->table_cap = cap;
    return IOCD_OK;
}

/* Adds a series with a known id (recovery) or the next id (id == 0). */
static iocd_err series_add(store *st, uint64_t id, uint64_t hash, const uint8_t *key, size_t len,
                           bool persisted, series **out)
{
    series *s = NULL;
    iocd_err err = table_reserve(st);

    if (err != IOCD_OK)
        return err;
    if (id == 0)
        id = st->next_id;
    if (id > st->by_id_cap) {
        size_t cap = st->by_id_cap != 0 ? st->by_id_cap : 1024;
        series **grown;
        while (cap < id)
            cap *= 2;
        grown = iocd_realloc(st->by_id, cap * sizeof(*grown));
        if (grown == NULL)
            return IOCD_ENOMEM;
        memset(grown + st->by_id_cap, 0, (cap - st->by_id_cap) * sizeof(*grown));
        st->by_id = grown;
        st->by_id_cap = cap;
    }
    if (!persisted && st->n_unpersisted == st->cap_unpersisted) {
        size_t cap = st->cap_unpersisted != 0 ? st->cap_unpersisted * 2 : 256;
        uint64_t *grown = iocd_realloc(st->unpersisted, cap * sizeof(*grown));
        if (grown == NULL)
            return IOCD_ENOMEM;
        st->unpersisted = grown;
        st->cap_unpersisted = cap;
    }
    s = iocd_calloc(1, sizeof(*s));
    if (s == NULL)
        return IOCD_ENOMEM;
    s->key = iocd_malloc(len != 0 ? len : 1);
    if (s->key == NULL) {
        iocd_free(s);
        return IOCD_ENOMEM;
    }
    memcpy(s->key, key, len);
    s->key_len = (uint32_t)len;
    s->hash = hash;
    s->id = id;
    s->persisted = persisted;
    table_insert(st->table, st->table_cap, s);
    st->by_id[id - 1] = s;
    st->n_series++;
    if (id >= st->next_id)
        st->next_id = id + 1;
    if (!persisted)
        st->unpersisted[st->n_unpersisted++] = id;
    iocd_metric_set(st->m_series, (double)st->n_series);
    *out = s;
    return IOCD_OK;
}

/* Deleted series stay allocated (group commits may hold their keys) but are invisible. */
static series *series_by_id(const store *st, uint64_t id)
{
    if (id == 0 || id > st->by_id_cap || st->by_id[id - 1] == NULL || st->by_id[id - 1]->deleted)
        return NULL;
    return st->by_id[id - 1];
}

/* Inserts a sample in time order; an equal timestamp replaces (the last write wins). */
static iocd_err series_put(store *st, series *s, int64_t t, double v)
{
    size_t lo, hi;

    if (s->n > 0 && t <= s->s[s->n - 1].t_ms) {
        if (t == s->s[s->n - 1].t_ms) {
            s->s[s->n - 1].v = v;
            return IOCD_OK;
        }
        lo = 0;
        hi = s->n;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (s->s[mid].t_ms < t)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < s->n && s->s[lo].t_ms == t) {
            s->s[lo].v = v;
            return IOCD_OK;
        }
    } else {
        lo = s->n;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap != 0 ? s->cap * 2 : 16;
        iocd_sample *grown = iocd_realloc(s->s, cap * sizeof(*grown));
        if (grown == NULL)
            return IOCD_ENOMEM;
        s->s = grown;
        s->cap = cap;
    }
    memmove(s->s + lo + 1, s->s + lo, (s->n - lo) * sizeof(*s->s));
    s->s[lo].t_ms = t;
    s->s[lo].v = v;
    s->n++;
    (void)st;
    return IOCD_OK;
}

/* ---- Submitting ------------------------------------------------------------------------ */

static bool churn_allows(store *st, int64_t now_ms)
{
    if (now_ms - st->churn_window_start_ms >= 60000) {
        st->churn_window_start_ms = now_ms;
        st->churn_count = 0;
    }
    return st->n_series < st->lim.series_max && st->churn_count < st->lim.new_series_per_min;
}

static void reject(store *st, pending *p, store_reject why)
{
    p->res.rejected[why]++;
    iocd_metric_add(st->m_rejected[why], 1);
}

iocd_err store_batch_submit(store_batch *b, store_done_fn done, void *ud)
{
    store *st = b->st;
    pending *p = NULL;
    iocd_err err = IOCD_OK;
    size_t i;

    p = iocd_calloc(1, sizeof(*p));
    if (p == NULL) {
        store_batch_free(b);
        return IOCD_ENOMEM;
    }
    p->done = done;
    p->ud = ud;
    iocd_buf_init(&p->wal, 0);
    err = iocd_buf_reserve(&p->wal, b->n * 14);
    pthread_mutex_lock(&st->mu);
    if (st->closing) {
        err = IOCD_ECLOSED;
        goto unlock;
    }
    for (i = 0; err == IOCD_OK && i < b->n; i++) {
        const batch_item *it = &b->items[i];
        const uint8_t *key = (const uint8_t *)b->keys.data + it->key_off;
        series *s = table_find(st, it->hash, key, it->key_len);
        if (s == NULL) {
            if (!churn_allows(st, b->now_ms)) {
                reject(st, p, STORE_REJECT_CARDINALITY);
                continue;
            }
            err = series_add(st, 0, it->hash, key, it->key_len, false, &s);
            if (err != IOCD_OK)
                break;
            st->churn_count++;
            iocd_metric_add(st->m_series_created, 1);
        }
        if (s->n > 0 && it->s.t_ms < s->s[s->n - 1].t_ms - st->lim.ooo_window_ms) {
            reject(st, p, STORE_REJECT_OUT_OF_ORDER);
            continue;
        }
        err = series_put(st, s, it->s.t_ms, it->s.v);
        if (err == IOCD_OK)
            err = store_wal_put(&p->wal, s->id, it->s.t_ms, it->s.v);
        if (it->s.t_ms > st->watermark)
            st->watermark = it->s.t_ms;
        if (it->s.t_ms < st->sealed_before)
            st->n_late++;
        if (err == IOCD_OK)
            p->res.accepted++;
    }
    if (err == IOCD_OK) {
        iocd_metric_add(st->m_samples_head, (double)p->res.accepted);
        *st->queue_tail = p;
        st->queue_tail = &p->next;
        p = NULL;
        pthread_cond_signal(&st->wake);
    }
unlock:
    pthread_mutex_unlock(&st->mu);
    store_batch_free(b);
    if (p != NULL) {
        /* Out of memory mid-batch: what entered the heads is not acknowledged; the caller
         * gets the error through done() so it has one code path. */
        iocd_buf_fini(&p->wal);
        if (err != IOCD_ECLOSED) {
            p->res.err = err;
            done(ud, &p->res);
            err = IOCD_OK;
        }
        iocd_free(p);
    }
    return err;
}

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    store_result res;
} waiter;

static void waiter_done(void *ud, const store_result *res)
{
    waiter *w = ud;

    pthread_mutex_lock(&w->mu);
    w->res = *res;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

iocd_err store_batch_commit(store_batch *b, store_result *res)
{
    waiter w;
    iocd_err err;

    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    err = store_batch_submit(b, waiter_done, &w);
    if (err == IOCD_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        err = w.res.err;
        if (res != NULL)
            *res = w.res;
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return err;
}

/* ---- The writer thread ----------------------------------------------------------------- */

static int64_t period_of(const store *st, int64_t t)
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

static iocd_err wal_split_add(const store *st, wal_split *w, const iocd_buf *entries)
{
    const uint8_t *p = (const uint8_t *)entries->data, *end = p + entries->len;
    uint64_t id;
    int64_t t, period;
    double v;
    bool corrupt;
    size_t i;
    iocd_err err = IOCD_OK;

    while (err == IOCD_OK && store_wal_next(&p, end, &id, &t, &v, &corrupt)) {
        period = period_of(st, t);
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
                    return IOCD_ENOMEM;
                w->bufs = b;
                w->cap = cap;
            }
            iocd_buf_init(&w->bufs[w->n], 0);
            w->recs[w->n].period = period;
            w->n++;
        }
        err = store_wal_put(&w->bufs[i], id, t, v);
    }
    return corrupt ? IOCD_ECORRUPT : err;
}

/* Samples taken out of the heads for sealing: per series, a run of its samples. */
typedef struct seal_run {
    uint64_t id;
    int64_t period;
    size_t off, n; /* into seal_set.s */
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

/* Moves every head sample before `before` of the series in by_id[from, to) into ss, as runs
 * of one series and one period. Called with st->mu held. */
static iocd_err take_sealable(store *st, int64_t before, size_t from, size_t to, seal_set *ss)
{
    size_t i, k, j;

    for (i = from; i < to && i < st->by_id_cap; i++) {
        series *s = st->by_id[i];
        if (s == NULL || s->n == 0 || s->s[0].t_ms >= before)
            continue;
        for (k = 0; k < s->n && s->s[k].t_ms < before; k++)
            ;
        if (ss->n + k > ss->cap) {
            size_t cap = ss->cap != 0 ? ss->cap : 4096;
            iocd_sample *g;
            while (cap < ss->n + k)
                cap *= 2;
            g = iocd_realloc(ss->s, cap * sizeof(*g));
            if (g == NULL)
                return IOCD_ENOMEM;
            ss->s = g;
            ss->cap = cap;
        }
        memcpy(ss->s + ss->n, s->s, k * sizeof(*s->s));
        for (j = 0; j < k;) {
            int64_t period = period_of(st, s->s[j].t_ms);
            size_t start = j;
            seal_run *r;
            while (j < k && period_of(st, s->s[j].t_ms) == period)
                j++;
            if (ss->n_runs == ss->cap_runs) {
                size_t cap = ss->cap_runs != 0 ? ss->cap_runs * 2 : 1024;
                seal_run *g = iocd_realloc(ss->runs, cap * sizeof(*g));
                if (g == NULL)
                    return IOCD_ENOMEM;
                ss->runs = g;
                ss->cap_runs = cap;
            }
            r = &ss->runs[ss->n_runs++];
            r->id = s->id;
            r->period = period;
            r->off = ss->n + start;
            r->n = j - start;
        }
        ss->n += k;
        memmove(s->s, s->s + k, (s->n - k) * sizeof(*s->s));
        s->n -= k;
    }
    return IOCD_OK;
}

/* Puts a failed seal's samples back into the heads, from the blocks built for it (the
 * sealed samples themselves are not kept: slicing bounds the seal's memory). The WAL still
 * holds them, so this only matters until the next restart. Called with st->mu held. */
static iocd_err restore_one(void *ud, uint64_t id, const iocd_sample *smp, size_t n)
{
    store *st = ud;
    series *s = series_by_id(st, id);
    size_t j;

    for (j = 0; s != NULL && j < n; j++)
        if (series_put(st, s, smp[j].t_ms, smp[j].v) != IOCD_OK)
            return IOCD_ENOMEM;
    return IOCD_OK;
}

static void restore_sealable(store *st, const store_db_block *blocks, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (codec_block_each(blocks[i].data, blocks[i].len, BLOCK_RAW_MAX, restore_one, st) !=
            IOCD_OK)
            log_error("store",
                      "cannot restore samples after a failed seal; they are in the "
                      "WAL and return on restart",
                      NULL);
}

static int run_cmp(const void *a, const void *b)
{
    const seal_run *x = a, *y = b;

    if (x->period != y->period)
        return x->period < y->period ? -1 : 1;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return 0;
}

static bool is_stale(double v)
{
    uint64_t bits;

    memcpy(&bits, &v, 8);
    return bits == 0x7ff0000000000002ULL;
}

/* Appends a block of rollup streams for the series in cs: per series, streams with the
 * virtual ids id * 8 + 0..5 (min, max, sum, count, last, last time) of (bucket start, value). */
static iocd_err encode_rollups(const codec_series *cs, size_t k, int64_t res, iocd_buf *space)
{
    codec_series rs[64 * ROLLUP_AGGS];
    iocd_sample *buf = NULL;
    size_t total = 0, i, j, used = 0;
    iocd_err err;

    for (i = 0; i < k; i++)
        total += cs[i].n;
    buf = iocd_malloc((total + k + 1) * ROLLUP_AGGS * sizeof(*buf)); /* n + 1 per series */
    if (buf == NULL)
        return IOCD_ENOMEM;
    for (i = 0; i < k; i++) {
        iocd_sample *agg[ROLLUP_AGGS];
        size_t nb = 0, a;
        for (a = 0; a < ROLLUP_AGGS; a++)
            agg[a] = buf + used + a * (cs[i].n + 1);
        for (j = 0; j < cs[i].n; j++) {
            int64_t t = cs[i].s[j].t_ms, b = (t >= 0 ? t / res : (t - res + 1) / res) * res;
            double v = cs[i].s[j].v;
            if (is_stale(v))
                continue;
            if (nb == 0 || agg[0][nb - 1].t_ms != b) {
                for (a = 0; a < ROLLUP_AGGS; a++)
                    agg[a][nb].t_ms = b;
                agg[0][nb].v = v;
                agg[1][nb].v = v;
                agg[2][nb].v = 0;
                agg[3][nb].v = 0;
                nb++;
            }
            if (v < agg[0][nb - 1].v || isnan(agg[0][nb - 1].v))
                agg[0][nb - 1].v = v;
            if (v > agg[1][nb - 1].v || isnan(agg[1][nb - 1].v))
                agg[1][nb - 1].v = v;
            agg[2][nb - 1].v += v;
            agg[3][nb - 1].v += 1;
            agg[4][nb - 1].v = v; /* the run is time-ordered: the latest so far */
            agg[5][nb - 1].v = (double)t;
        }
        for (a = 0; a < ROLLUP_AGGS; a++)
            rs[i * ROLLUP_AGGS + a] = (codec_series){ cs[i].id * 8 + a, agg[a], nb };
        used += ROLLUP_AGGS * (cs[i].n + 1);
    }
    err = codec_block_encode(rs, k * ROLLUP_AGGS, ZSTD_LEVEL, space);
    iocd_free(buf);
    return err;
}

/* Encodes the runs as blocks of one period and one id group each, appended to *blocks (with
 * their bytes in space; .data is set by the caller once space stops growing, from the
 * offset kept in .data meanwhile). */
static iocd_err build_blocks(const seal_set *ss, store_db_block **blocks_io, size_t *n_io,
                             size_t *cap_io, iocd_buf *space)
{
    store_db_block *blocks = *blocks_io;
    codec_series cs[64];
    size_t i = 0, n = *n_io;
    int r;
    iocd_err err = IOCD_OK;

    qsort(ss->runs, ss->n_runs, sizeof(*ss->runs), run_cmp);
    if (n + 3 * ss->n_runs > *cap_io) {
        size_t cap = (n + 3 * ss->n_runs) * 2;
        store_db_block *g = iocd_realloc(blocks, cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        *blocks_io = blocks = g;
        *cap_io = cap;
    }
    while (err == IOCD_OK && i < ss->n_runs) {
        int64_t period = ss->runs[i].period;
        uint64_t group = ss->runs[i].id >> 6;
        size_t k = 0, before = space->len;
        while (i < ss->n_runs && ss->runs[i].period == period && ss->runs[i].id >> 6 == group) {
            cs[k++] = (codec_series){ ss->runs[i].id, ss->s + ss->runs[i].off, ss->runs[i].n };
            i++;
        }
        err = codec_block_encode(cs, k, ZSTD_LEVEL, space);
        blocks[n].kind = STORE_DB_CHUNKS;
        blocks[n].period = period;
        blocks[n].group = group;
        blocks[n].len = space->len - before;
        blocks[n].data = (const void *)(uintptr_t)before; /* an offset until the end */
        n++;
        for (r = 0; err == IOCD_OK && r < 2; r++) {
            before = space->len;
            err = encode_rollups(cs, k, r == 0 ? STORE_ROLLUP_5M : STORE_ROLLUP_1H, space);
            blocks[n].kind = r == 0 ? STORE_DB_ROLLUP_5M : STORE_DB_ROLLUP_1H;
            blocks[n].period = period;
            blocks[n].group = group;
            blocks[n].len = space->len - before;
            blocks[n].data = (const void *)(uintptr_t)before;
            n++;
        }
    }
    *n_io = n;
    return err;
}

#define SEAL_SLICE 4096 /* series per slice: bounds the seal's memory */

/* Takes and encodes, slice by slice, every head sample before `before`. */
static iocd_err seal_slices(store *st, int64_t before, store_db_block **blocks, size_t *n_blocks,
                            iocd_buf *space, size_t *n_samples)
{
    size_t from = 0, cap_blocks = 0, end, i;
    seal_set ss;
    iocd_err err = IOCD_OK;

    memset(&ss, 0, sizeof(ss));
    for (;;) {
        pthread_mutex_lock(&st->mu);
        end = st->by_id_cap;
        if (from < end)
            err = take_sealable(st, before, from, from + SEAL_SLICE, &ss);
        pthread_mutex_unlock(&st->mu);
        if (from >= end || err != IOCD_OK)
            break;
        *n_samples += ss.n;
        if (ss.n_runs > 0)
            err = build_blocks(&ss, blocks, n_blocks, &cap_blocks, space);
        if (err != IOCD_OK)
            break;
        ss.n = 0;
        ss.n_runs = 0;
        from += SEAL_SLICE;
    }
    seal_set_fini(&ss);
    for (i = 0; i < *n_blocks; i++)
        (*blocks)[i].data = space->data + (uintptr_t)(*blocks)[i].data;
    return err;
}

/* One group commit. seal_before != INT64_MIN also seals every head sample before it. */
static void group_commit(store *st, pending *batch, int64_t seal_before)
{
    store_db_series *ser = NULL;
    store_db_block *blocks = NULL;
    uint64_t *ids = NULL;
    size_t n_ids = 0, n_ser = 0, i, n_batches = 0, n_blocks = 0, n_sealed = 0;
    wal_split ws;
    iocd_buf space, wal_packed;
    pending *p, *next;
    int64_t t0 = iocd_mono_ns(), drop_before = INT64_MIN, drop_rollups_before = INT64_MIN;
    iocd_err err = IOCD_OK;

    memset(&ws, 0, sizeof(ws));
    iocd_buf_init(&space, 0);
    iocd_buf_init(&wal_packed, 0);
    pthread_mutex_lock(&st->commit_mu);
    for (p = batch; p != NULL && err == IOCD_OK; p = p->next) {
        err = wal_split_add(st, &ws, &p->wal);
        n_batches++;
    }
    /* Compress each period's record; the packed records share one buffer, so pointers are
     * taken only once it has stopped growing. */
    {
        size_t *offs = ws.n > 0 ? iocd_calloc(ws.n, sizeof(*offs)) : NULL;
        for (i = 0; err == IOCD_OK && i < ws.n; i++) {
            if (offs == NULL) {
                err = IOCD_ENOMEM;
                break;
            }
            offs[i] = wal_packed.len;
            err = codec_wal_pack(ws.bufs[i].data, ws.bufs[i].len, &wal_packed);
            ws.recs[i].len = wal_packed.len - offs[i];
        }
        for (i = 0; err == IOCD_OK && i < ws.n; i++)
            ws.recs[i].data = wal_packed.data + offs[i];
        iocd_free(offs);
    }
    /* Take the series created since the last commit (their keys live as long as the store)
     * and, for a seal, the samples to seal. */
    pthread_mutex_lock(&st->mu);
    ids = st->unpersisted;
    n_ids = st->n_unpersisted;
    st->unpersisted = NULL;
    st->n_unpersisted = st->cap_unpersisted = 0;
    ser = n_ids > 0 ? iocd_calloc(n_ids, sizeof(*ser)) : NULL;
    n_ser = 0;
    for (i = 0; ser != NULL && i < n_ids; i++) {
        series *s = series_by_id(st, ids[i]); /* NULL: deleted before it was persisted */
        if (s != NULL)
            ser[n_ser++] = (store_db_series){ s->id, s->key, s->key_len };
    }
    pthread_mutex_unlock(&st->mu);
    if (n_ids > 0 && ser == NULL)
        err = IOCD_ENOMEM;
    if (err == IOCD_OK && seal_before != INT64_MIN)
        err = seal_slices(st, seal_before, &blocks, &n_blocks, &space, &n_sealed);
    if (seal_before != INT64_MIN) {
        drop_before = period_of(st, iocd_now_ms() - st->lim.retention_ms);
        drop_rollups_before = period_of(st, iocd_now_ms() - st->cfg.rollup_retention_ms);
    }
    if (err == IOCD_OK)
        err = store_db_commit(st->db, ser, n_ser, st->wal_seq + 1, ws.recs, ws.n, blocks, n_blocks,
                              seal_before, drop_before, drop_rollups_before);
    if (err == IOCD_OK && st->cfg.sync_window_ms > 0 &&
        iocd_mono_ns() - st->last_sync_ns >= st->cfg.sync_window_ms * 1000000) {
        err = store_db_sync(st->db);
        st->last_sync_ns = iocd_mono_ns();
    }
    pthread_mutex_lock(&st->mu);
    if (err == IOCD_OK) {
        st->wal_seq++;
        for (i = 0; i < n_ids; i++) {
            series *s = series_by_id(st, ids[i]);
            if (s != NULL)
                s->persisted = true;
        }
        iocd_free(ids);
        if (seal_before != INT64_MIN) {
            if (seal_before > st->sealed_before)
                st->sealed_before = seal_before;
            st->n_late = 0;
        }
    } else {
        restore_sealable(st, blocks, n_blocks);
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
    pthread_mutex_unlock(&st->mu);
    pthread_mutex_unlock(&st->commit_mu);
    iocd_free(ser);
    iocd_metric_observe(st->m_commit_seconds, (double)(iocd_mono_ns() - t0) / 1e9);
    if (n_batches > 0)
        iocd_metric_observe(st->m_commit_batches, (double)n_batches);
    if (err == IOCD_OK) {
        iocd_metric_add(st->m_commits, 1);
        for (i = 0; i < ws.n; i++)
            iocd_metric_add(st->m_wal_bytes, (double)ws.recs[i].len);
        if (n_blocks > 0) {
            size_t chunk_bytes = 0;
            iocd_metric_add(st->m_sealed_blocks, (double)n_blocks);
            iocd_metric_add(st->m_sealed_samples, (double)n_sealed);
            for (i = 0; i < n_blocks; i++)
                if (blocks[i].kind == STORE_DB_CHUNKS)
                    chunk_bytes += blocks[i].len;
            iocd_metric_add(st->m_sealed_bytes, (double)chunk_bytes);
            log_debug("store", "sealed", "before=%lld blocks=%zu samples=%zu bytes=%zu",
                      (long long)seal_before, n_blocks, n_sealed, space.len);
        }
    } else {
        iocd_metric_add(st->m_commit_fail, 1);
        log_error("store", "group commit failed", "err=%s batches=%zu", iocd_strerror(err),
                  n_batches);
    }
    iocd_free(blocks);
    wal_split_fini(&ws);
    iocd_buf_fini(&space);
    iocd_buf_fini(&wal_packed);
    for (p = batch; p != NULL; p = next) {
        next = p->next;
        p->res.err = err;
        p->done(p->ud, &p->res);
        iocd_buf_fini(&p->wal);
        iocd_free(p);
    }
}

/* What to seal now, or INT64_MIN: every period that ended a grace before the newest sample,
 * and, every LATE_SEAL_NS, samples that arrived late for already sealed periods. */
static int64_t seal_boundary(store *st)
{
    int64_t b;

    if (st->watermark == INT64_MIN)
        return INT64_MIN;
    b = period_of(st, st->watermark - st->cfg.seal_grace_ms);
    if (b > st->sealed_before)
        return b;
    if (st->n_late > 0 && iocd_mono_ns() - st->last_late_seal_ns >= LATE_SEAL_NS) {
        st->last_late_seal_ns = iocd_mono_ns();
        return st->sealed_before;
    }
    return INT64_MIN;
}

static void *writer_main(void *arg)
{
    store *st = arg;
    pending *batch;
    int64_t seal;
    bool final_seal_done = false;

    pthread_mutex_lock(&st->mu);
    for (;;) {
        seal = seal_boundary(st);
        if (st->closing && st->queue == NULL && !final_seal_done) {
            /* A graceful stop seals every head sample, so the data dir is compact at rest;
             * a later sample for the same period lands in a patch block. */
            final_seal_done = true;
            seal = INT64_MAX;
        }
        if (st->queue == NULL && seal == INT64_MIN) {
            struct timespec ts;
            if (st->closing)
                break;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1; /* late data is sealed even when nothing new arrives */
            pthread_cond_timedwait(&st->wake, &st->mu, &ts);
            continue;
        }
        batch = st->queue;
        st->queue = NULL;
        st->queue_tail = &st->queue;
        pthread_mutex_unlock(&st->mu);
        group_commit(st, batch, seal);
        pthread_mutex_lock(&st->mu);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* ---- Recovery -------------------------------------------------------------------------- */

static iocd_err load_series(void *ud, uint64_t id, const uint8_t *key, size_t len)
{
    store *st = ud;
    series *s;

    if (id == 0)
        return IOCD_ECORRUPT;
    return series_add(st, id, store_hash(key, len), key, len, true, &s);
}

static iocd_err load_wal(void *ud, int64_t period, uint64_t seq, const uint8_t *rec, size_t len)
{
    store *st = ud;
    const uint8_t *p = NULL, *end;
    size_t n = 0;
    uint64_t id;
    int64_t t;
    double v;
    bool corrupt;
    series *s;
    iocd_err err = codec_wal_unpack(rec, len, &st->wal_scratch, &p, &n);

    if (err != IOCD_OK)
        return err;
    end = p + n;

    while (store_wal_next(&p, end, &id, &t, &v, &corrupt)) {
        s = series_by_id(st, id);
        if (s == NULL) {
            st->wal_unknown++; /* a deleted series: its samples go with it */
            continue;
        }
        err = series_put(st, s, t, v);
        if (err != IOCD_OK)
            return err;
        if (t > st->watermark)
            st->watermark = t;
    }
    if (corrupt)
        return IOCD_ECORRUPT;
    (void)period;
    if (seq > st->wal_seq)
        st->wal_seq = seq;
    return IOCD_OK;
}

/* ---- Reading --------------------------------------------------------------------------- */

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
    return store_db_postings(st->db, name, value, ids_out, n_out);
}

iocd_err store_label_values(store *st, const char *name, char ***values_out, size_t *n_out)
{
    return store_db_label_values(st->db, name, values_out, n_out);
}

iocd_err store_series_labels(store *st, uint64_t id, store_label_fn fn, void *ud)
{
    uint8_t *key = NULL;
    size_t len = 0;
    series *s;
    iocd_err err;

    pthread_mutex_lock(&st->mu);
    s = series_by_id(st, id);
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

static iocd_err read_block(void *ud, int64_t period, const void *data, size_t len)
{
    read_ctx *r = ud;
    iocd_sample *s = NULL;
    size_t n = 0;
    iocd_err err = codec_block_find(data, len, r->id, BLOCK_RAW_MAX, &s, &n);

    (void)period;
    if (err == IOCD_ENOTFOUND)
        return IOCD_OK;
    if (err == IOCD_OK)
        err = read_append(r, s, n);
    iocd_free(s);
    return err;
}

/* Sorts by time keeping, for equal times, the sample written last (later in the list):
 * blocks come in the order they were sealed, then the head. */
static size_t sort_dedupe(iocd_sample *s, size_t n)
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

iocd_err store_read(store *st, uint64_t id, int64_t start_ms, int64_t end_ms, iocd_sample **out,
                    size_t *n_out)
{
    read_ctx r;
    iocd_sample *head = NULL;
    size_t n_head = 0, lo = 0, hi;
    series *s;
    iocd_err err = IOCD_OK;

    memset(&r, 0, sizeof(r));
    r.id = id;
    r.start_ms = start_ms;
    r.end_ms = end_ms;
    /* The head first, then the blocks: a seal in between can only show a sample twice
     * (removed below), never lose it. */
    pthread_mutex_lock(&st->mu);
    s = series_by_id(st, id);
    if (s != NULL) {
        while (lo < s->n && s->s[lo].t_ms < start_ms)
            lo++;
        hi = lo;
        while (hi < s->n && s->s[hi].t_ms <= end_ms)
            hi++;
        n_head = hi - lo;
        head = iocd_malloc((n_head != 0 ? n_head : 1) * sizeof(*head));
        if (head != NULL && n_head > 0)
            memcpy(head, s->s + lo, n_head * sizeof(*head));
    }
    pthread_mutex_unlock(&st->mu);
    if (s == NULL)
        return IOCD_ENOTFOUND;
    if (head == NULL)
        return IOCD_ENOMEM;
    err = store_db_blocks(st->db, STORE_DB_CHUNKS, id >> 6,
                          start_ms == INT64_MIN ? INT64_MIN : period_of(st, start_ms), end_ms,
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
    *n_out = sort_dedupe(r.s, r.n);
    return IOCD_OK;
}

typedef struct rollup_ctx {
    uint64_t id;
    int64_t start_ms, end_ms;
    store_rollup *r;
    size_t n, cap;
    iocd_sample *agg[ROLLUP_AGGS];
    size_t agg_n[ROLLUP_AGGS];
} rollup_ctx;

static iocd_err collect_agg(void *ud, uint64_t vid, const iocd_sample *s, size_t n)
{
    rollup_ctx *c = ud;
    size_t a = (size_t)(vid & 7);

    if (vid >> 3 != c->id || a >= ROLLUP_AGGS)
        return IOCD_OK;
    c->agg[a] = iocd_malloc((n + 1) * sizeof(*s));
    if (c->agg[a] == NULL)
        return IOCD_ENOMEM;
    memcpy(c->agg[a], s, n * sizeof(*s));
    c->agg_n[a] = n;
    return IOCD_OK;
}

/* Collects one block's buckets for the series; partial buckets (a 1 h bucket spans several
 * periods; late data adds patch blocks) are combined after sorting. */
static iocd_err merge_rollup_block(void *ud, int64_t period, const void *data, size_t len)
{
    rollup_ctx *c = ud;
    size_t a, i;
    iocd_err err;

    (void)period;
    memset(c->agg, 0, sizeof(c->agg));
    memset(c->agg_n, 0, sizeof(c->agg_n));
    err = codec_block_each(data, len, BLOCK_RAW_MAX, collect_agg, c);
    for (i = 0; err == IOCD_OK && c->agg[0] != NULL && i < c->agg_n[0]; i++) {
        store_rollup b;
        if (c->agg_n[1] != c->agg_n[0] || c->agg_n[2] != c->agg_n[0] ||
            c->agg_n[3] != c->agg_n[0] || c->agg_n[4] != c->agg_n[0] ||
            c->agg_n[5] != c->agg_n[0]) {
            err = IOCD_ECORRUPT;
            break;
        }
        b.t_ms = c->agg[0][i].t_ms;
        if (b.t_ms < c->start_ms || b.t_ms > c->end_ms)
            continue;
        b.min = c->agg[0][i].v;
        b.max = c->agg[1][i].v;
        b.sum = c->agg[2][i].v;
        b.count = c->agg[3][i].v;
        b.last = c->agg[4][i].v;
        b.last_t_ms = (int64_t)c->agg[5][i].v;
        if (c->n == c->cap) {
            size_t cap = c->cap != 0 ? c->cap * 2 : 64;
            store_rollup *g = iocd_realloc(c->r, cap * sizeof(*g));
            if (g == NULL) {
                err = IOCD_ENOMEM;
                break;
            }
            c->r = g;
            c->cap = cap;
        }
        c->r[c->n++] = b;
    }
    for (a = 0; a < ROLLUP_AGGS; a++)
        iocd_free(c->agg[a]);
    return err;
}

static int rollup_cmp(const void *a, const void *b)
{
    const store_rollup *x = a, *y = b;

    return x->t_ms < y->t_ms ? -1 : x->t_ms > y->t_ms;
}

iocd_err store_read_rollup(store *st, uint64_t id, int64_t res_ms, int64_t start_ms, int64_t end_ms,
                           store_rollup **out, size_t *n_out)
{
    rollup_ctx c;
    bool exists;
    iocd_err err;

    if (res_ms != STORE_ROLLUP_5M && res_ms != STORE_ROLLUP_1H)
        return IOCD_EINVAL;
    pthread_mutex_lock(&st->mu);
    exists = series_by_id(st, id) != NULL;
    pthread_mutex_unlock(&st->mu);
    if (!exists)
        return IOCD_ENOTFOUND;
    memset(&c, 0, sizeof(c));
    c.id = id;
    c.start_ms = start_ms;
    c.end_ms = end_ms;
    /* A bucket starting in range has parts in every period it overlaps, up to end + res. */
    err = store_db_blocks(
        st->db, res_ms == STORE_ROLLUP_5M ? STORE_DB_ROLLUP_5M : STORE_DB_ROLLUP_1H, id >> 6,
        start_ms == INT64_MIN ? INT64_MIN : period_of(st, start_ms),
        end_ms > INT64_MAX - res_ms ? INT64_MAX : end_ms + res_ms, merge_rollup_block, &c);
    if (err == IOCD_OK && c.r == NULL) {
        c.r = iocd_malloc(sizeof(*c.r));
        if (c.r == NULL)
            err = IOCD_ENOMEM;
    }
    if (err != IOCD_OK) {
        iocd_free(c.r);
        return err;
    }
    qsort(c.r, c.n, sizeof(*c.r), rollup_cmp);
    {
        size_t i, k = 0;
        for (i = 0; i < c.n; i++) {
            store_rollup *m = k > 0 ? &c.r[k - 1] : NULL, *b = &c.r[i];
            if (m == NULL || m->t_ms != b->t_ms) {
                c.r[k++] = *b;
                continue;
            }
            m->min = b->min < m->min ? b->min : m->min;
            m->max = b->max > m->max ? b->max : m->max;
            m->sum += b->sum;
            m->count += b->count;
            if (b->last_t_ms >= m->last_t_ms) {
                m->last = b->last;
                m->last_t_ms = b->last_t_ms;
            }
        }
        c.n = k;
    }
    *out = c.r;
    *n_out = c.n;
    return IOCD_OK;
}

/* ---- Lifetime -------------------------------------------------------------------------- */

static void limits_from(const store_config *cfg, store_limits *lim)
{
    lim->retention_ms = cfg->retention_ms > 0 ? cfg->retention_ms : DEFAULT_RETENTION_MS;
    lim->future_ms = cfg->future_ms > 0 ? cfg->future_ms : DEFAULT_FUTURE_MS;
    lim->ooo_window_ms = cfg->ooo_window_ms > 0 ? cfg->ooo_window_ms : DEFAULT_OOO_MS;
    lim->labels_max = cfg->labels_max > 0 ? cfg->labels_max : 64;
    lim->label_len_max = cfg->label_len_max > 0 ? cfg->label_len_max : 4096;
    lim->series_max = cfg->series_max > 0 ? cfg->series_max : 5000000;
    lim->new_series_per_min = cfg->new_series_per_min > 0 ? cfg->new_series_per_min : 1000000;
}

/* Scrape-time gauges read the store through this pointer; store_close clears it. */
static store *_Atomic metrics_store;

static double stat_value(void *ud)
{
    store *st = atomic_load(&metrics_store);
    store_stats s;

    if (st == NULL || store_stats_get(st, &s) != IOCD_OK)
        return NAN;
    switch ((int)(intptr_t)ud) {
    case 0:
        return (double)s.head_samples;
    case 1:
        return (double)s.blocks;
    case 2:
        return (double)s.wal_records;
    case 3:
        return (double)s.file_bytes;
    default: /* compressed bytes per sealed sample, since start */
        return iocd_metric_value(st->m_sealed_samples) > 0
                   ? iocd_metric_value(st->m_sealed_bytes) / iocd_metric_value(st->m_sealed_samples)
                   : NAN;
    }
}

static void register_metrics(store *st)
{
    static const char *const gauges[][2] = {
        { "iocd_head_samples", "Samples in memory, not yet sealed into blocks." },
        { "iocd_blocks", "Sealed blocks in the data file." },
        { "iocd_wal_records", "Write-ahead-log records not yet sealed." },
        { "iocd_data_file_bytes", "Bytes of the data file in use (LMDB pages)." },
        { "iocd_sealed_bytes_per_sample",
          "Compressed bytes per sample of the blocks sealed since start (rollups excluded)." },
    };
    size_t g;

    static const double commit_buckets[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                             0.01,   0.025,   0.05,   0.1,   0.25,   1 };
    static const double batch_buckets[] = { 1, 2, 4, 8, 16, 32, 64, 128 };
    char labels[64];
    int r;

    for (g = 0; g < IOCD_ARRAY_LEN(gauges); g++)
        iocd_metric_gauge_fn(gauges[g][0], gauges[g][1], IOCD_METRIC_GAUGE, stat_value,
                             (void *)(intptr_t)g);
    st->m_series = iocd_gauge("iocd_series_active", "Series known to the store.");
    st->m_series_created = iocd_counter("iocd_series_created_total", "Series created since start.");
    st->m_samples_head =
        iocd_counter("iocd_samples_appended_total", "Samples accepted into the store.");
    st->m_commits = iocd_counter("iocd_group_commits_total", "Group commits that succeeded.");
    st->m_commit_fail = iocd_counter("iocd_group_commit_failures_total",
                                     "Group commits that failed (disk full, I/O error).");
    st->m_commit_seconds = iocd_metric_get(
        "iocd_group_commit_duration_seconds", "Time to commit (and sync) one group.",
        IOCD_METRIC_HISTOGRAM, NULL, commit_buckets, IOCD_ARRAY_LEN(commit_buckets));
    st->m_commit_batches = iocd_metric_get(
        "iocd_group_commit_batches", "Ingest batches made durable by one group commit.",
        IOCD_METRIC_HISTOGRAM, NULL, batch_buckets, IOCD_ARRAY_LEN(batch_buckets));
    st->m_wal_bytes = iocd_counter("iocd_wal_bytes_total", "Bytes appended to the WAL.");
    st->m_sealed_blocks = iocd_counter("iocd_sealed_blocks_total",
                                       "Compressed blocks written (64 series, one period).");
    st->m_sealed_samples = iocd_counter("iocd_sealed_samples_total",
                                        "Samples moved from the heads into sealed blocks.");
    st->m_sealed_bytes =
        iocd_counter("iocd_sealed_bytes_total", "Compressed bytes of sealed blocks.");
    for (r = 1; r < STORE_REJECT_COUNT_; r++) {
        snprintf(labels, sizeof(labels), "reason=\"%s\"", store_reject_name((store_reject)r));
        st->m_rejected[r] = iocd_metric_get("iocd_store_rejected_samples_total",
                                            "Samples refused by the store, by reason.",
                                            IOCD_METRIC_COUNTER, labels, NULL, 0);
    }
}

iocd_err store_open(const char *dir, const store_config *cfg, store **out, char *errbuf,
                    size_t errlen)
{
    store *st = NULL;
    int64_t t0 = iocd_mono_ns();
    iocd_err err;

    st = iocd_calloc(1, sizeof(*st));
    if (st == NULL)
        return IOCD_ENOMEM;
    if (cfg != NULL)
        st->cfg = *cfg;
    limits_from(&st->cfg, &st->lim);
    if (st->cfg.chunk_ms <= 0)
        st->cfg.chunk_ms = DEFAULT_CHUNK_MS;
    if (st->cfg.seal_grace_ms <= 0)
        st->cfg.seal_grace_ms = DEFAULT_GRACE_MS;
    if (st->cfg.rollup_retention_ms <= 0)
        st->cfg.rollup_retention_ms = DEFAULT_ROLLUP_RET_MS;
    st->watermark = INT64_MIN;
    st->sealed_before = INT64_MIN;
    pthread_mutex_init(&st->mu, NULL);
    pthread_mutex_init(&st->commit_mu, NULL);
    pthread_cond_init(&st->wake, NULL);
    st->queue_tail = &st->queue;
    st->next_id = 1;
    register_metrics(st);
    st->dir = iocd_strdup(dir);
    if (st->dir == NULL) {
        err = IOCD_ENOMEM;
        goto out;
    }
    err = store_lock_take(dir, &st->lock, errbuf, errlen);
    if (err != IOCD_OK)
        goto out;
    err = store_db_open(dir, st->cfg.map_size, st->cfg.sync_window_ms > 0, &st->db, errbuf, errlen);
    if (err != IOCD_OK)
        goto out;
    err = store_db_load(st->db, load_series, load_wal, st);
    if (err != IOCD_OK) {
        snprintf(errbuf, errlen, "%s/iocd.mdb: recovery failed: %s", dir, iocd_strerror(err));
        goto out;
    }
    iocd_buf_fini(&st->wal_scratch);
    st->last_sync_ns = iocd_mono_ns();
    if (pthread_create(&st->writer, NULL, writer_main, st) != 0) {
        snprintf(errbuf, errlen, "cannot start the writer thread: %s", strerror(errno));
        err = IOCD_EIO;
        goto out;
    }
    st->writer_started = true;
    atomic_store(&metrics_store, st);
    log_info("store", "store open", "dir=%s series=%zu wal_records=%llu ms=%.1f", dir, st->n_series,
             (unsigned long long)st->wal_seq, (double)(iocd_mono_ns() - t0) / 1e6);
    *out = st;
    st = NULL;
out:
    store_close(st);
    return err;
}

void store_close(store *st)
{
    size_t i;

    if (st == NULL)
        return;
    if (atomic_load(&metrics_store) == st)
        atomic_store(&metrics_store, NULL);
    if (st->writer_started) {
        pthread_mutex_lock(&st->mu);
        st->closing = true;
        pthread_cond_signal(&st->wake);
        pthread_mutex_unlock(&st->mu);
        pthread_join(st->writer, NULL); /* drains the queue first */
    }
    if (st->db != NULL) {
        iocd_err err = store_db_sync(st->db);
        if (err != IOCD_OK)
            log_error("store", "final sync failed", "dir=%s err=%s", st->dir, iocd_strerror(err));
        store_db_close(st->db);
    }
    store_lock_release(st->lock);
    for (i = 0; i < st->by_id_cap; i++) {
        series *s = st->by_id[i];
        if (s != NULL) {
            iocd_free(s->key);
            iocd_free(s->s);
            iocd_free(s);
        }
    }
    iocd_free(st->by_id);
    iocd_free(st->table);
    iocd_free(st->unpersisted);
    pthread_mutex_destroy(&st->mu);
    pthread_mutex_destroy(&st->commit_mu);
    pthread_cond_destroy(&st->wake);
    iocd_free(st->dir);
    iocd_free(st);
}

iocd_err store_delete_series(store *st, const uint64_t *ids, size_t n)
{
    store_db_series *ser = iocd_calloc(n + 1, sizeof(*ser));
    series **fresh = NULL;
    size_t i, k = 0;
    iocd_err err;

    if (ser == NULL)
        return IOCD_ENOMEM;
    pthread_mutex_lock(&st->commit_mu);
    pthread_mutex_lock(&st->mu);
    fresh = iocd_calloc(st->table_cap != 0 ? st->table_cap : 1, sizeof(*fresh));
    if (fresh == NULL) {
        pthread_mutex_unlock(&st->mu);
        pthread_mutex_unlock(&st->commit_mu);
        iocd_free(ser);
        return IOCD_ENOMEM;
    }
    for (i = 0; i < n; i++) {
        series *s = series_by_id(st, ids[i]);
        if (s == NULL)
            continue;
        s->deleted = true;
        s->n = 0;
        st->n_series--;
        ser[k++] = (store_db_series){ s->id, s->key, s->key_len };
    }
    /* Rebuild the open-addressing table without the deleted series. */
    for (i = 0; i < st->table_cap; i++)
        if (st->table[i] != NULL && !st->table[i]->deleted)
            table_insert(fresh, st->table_cap, st->table[i]);
    iocd_free(st->table);
    st->table = fresh;
    iocd_metric_set(st->m_series, (double)st->n_series);
    pthread_mutex_unlock(&st->mu);
    err = k > 0 ? store_db_delete_series(st->db, ser, k) : IOCD_OK;
    pthread_mutex_unlock(&st->commit_mu);
    if (err == IOCD_OK && k > 0)
        log_info("store", "series deleted", "count=%zu", k);
    iocd_free(ser);
    return err;
}

iocd_err store_stats_get(store *st, store_stats *out)
{
    store_stats s;
    size_t i;

    memset(&s, 0, sizeof(s));
    pthread_mutex_lock(&st->mu);
    s.series = st->n_series;
    for (i = 0; i < st->by_id_cap; i++)
        if (st->by_id[i] != NULL)
            s.head_samples += st->by_id[i]->n;
    s.sealed_before = st->sealed_before;
    pthread_mutex_unlock(&st->mu);
    if (store_db_stats(st->db, &s.file_bytes, &s.blocks, &s.wal_records) != IOCD_OK)
        return IOCD_EIO;
    *out = s;
    return IOCD_OK;
}

const char *store_dir(const store *st)
{
    return st->dir;
}

const store_limits *store_limits_get(const store *st)
{
    return &st->lim;
}
