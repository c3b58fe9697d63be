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
#define DEFAULT_SPAN_MS       (60LL * 60000)
#define DEFAULT_ROLLUP_RET_MS (2LL * 365 * 86400000)

/* ---- Series table (callers hold st->mu) ------------------------------------------------ */

static store_series *table_find(const store *st, uint64_t hash, const uint8_t *key, size_t len)
{
    size_t mask = st->table_cap - 1, i = hash & mask;
    store_series *s;

    if (st->table_cap == 0)
        return NULL;
    while ((s = st->table[i]) != NULL) {
        if (s->hash == hash && s->key_len == len && memcmp(s->key, key, len) == 0)
            return s;
        i = (i + 1) & mask;
    }
    return NULL;
}

static void table_insert(store_series **table, size_t cap, store_series *s)
{
    size_t mask = cap - 1, i = s->hash & mask;

    while (table[i] != NULL)
        i = (i + 1) & mask;
    table[i] = s;
}

static iocd_err table_reserve(store *st)
{
    store_series **grown;
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

/* The hash of a canonical key's metric name (0 when it has none). */
static uint64_t metric_hash(const uint8_t *key, size_t len)
{
    const uint8_t *p = key, *end = key + len;
    uint64_t nl, vl;

    while (p < end) {
        const uint8_t *name;
        if (!store_varint_get(&p, end, &nl) || nl > (uint64_t)(end - p))
            return 0;
        name = p;
        p += nl;
        if (!store_varint_get(&p, end, &vl) || vl > (uint64_t)(end - p))
            return 0;
        if (nl == 8 && memcmp(name, "__name__", 8) == 0)
            return store_hash(p, (size_t)vl) | 1;
        p += vl;
    }
    return 0;
}

/* A new id for a series of the metric whose key is given: the next in that metric's id
 * group, or the first of a fresh group. When the holes this leaves would grow past the
 * series themselves (a flood of one-series metrics), metrics share groups instead. */
static uint64_t new_id(store *st, const uint8_t *key, size_t len)
{
    uint64_t h = metric_hash(key, len), id;
    size_t i, cap;

    if (st->next_id - 1 > 2 * (uint64_t)st->n_series + 65536)
        h = 1; /* the shared slot */
    if ((st->n_metric_slots + 1) * 2 > st->metric_cap) {
        cap = st->metric_cap != 0 ? st->metric_cap * 2 : 256;
        struct metric_slot *g = iocd_calloc(cap, sizeof(*g));
        if (g == NULL)
            return 0;
        for (i = 0; i < st->metric_cap; i++) {
            size_t j;
            if (st->metric_slots[i].hash == 0)
                continue;
            for (j = st->metric_slots[i].hash & (cap - 1); g[j].hash != 0; j = (j + 1) & (cap - 1))
                ;
            g[j] = st->metric_slots[i];
        }
        iocd_free(st->metric_slots);
        st->metric_slots = g;
        st->metric_cap = cap;
    }
    cap = st->metric_cap;
    for (i = h & (cap - 1); st->metric_slots[i].hash != 0 && st->metric_slots[i].hash != h;
         i = (i + 1) & (cap - 1))
        ;
    if (st->metric_slots[i].hash == 0) {
        st->metric_slots[i].hash = h;
        st->n_metric_slots++;
    }
    id = st->metric_slots[i].next;
    if (id == 0 || (id & 63) == 0) { /* no group yet, or it is full: start one */
        id = (st->next_id + 63) & ~(uint64_t)63;
        if (id == 0)
            id = 1; /* id 0 does not exist: group 0 starts at 1 */
    }
    st->metric_slots[i].next = id + 1;
    return id;
}

/* Adds a series with a known id (recovery) or a new one (id == 0). */
static iocd_err series_add(store *st, uint64_t id, uint64_t hash, const uint8_t *key, size_t len,
                           bool persisted, store_series **out)
{
    store_series *s = NULL;
    iocd_err err = table_reserve(st);

    if (err != IOCD_OK)
        return err;
    if (id == 0)
        id = new_id(st, key, len);
    if (id == 0)
        return IOCD_ENOMEM;
    if (id > st->by_id_cap) {
        size_t cap = st->by_id_cap != 0 ? st->by_id_cap : 1024;
        store_series **grown;
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
    s = iocd_calloc(1, sizeof(*s) + len);
    if (s == NULL)
        return IOCD_ENOMEM;
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
store_series *store_series_get(const store *st, uint64_t id)
{
    if (id == 0 || id > st->by_id_cap || st->by_id[id - 1] == NULL || st->by_id[id - 1]->deleted)
        return NULL;
    return st->by_id[id - 1];
}

/* Inserts a sample in time order; an equal timestamp replaces (the last write wins). */
iocd_err store_series_put(store *st, store_series *s, int64_t t, double v)
{
    if (t < st->head_min)
        st->head_min = t;
    if (t < st->arrived_min)
        st->arrived_min = t;
    return store_head_put(&s->head, t, v);
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
    p->t_min = INT64_MAX;
    p->t_max = INT64_MIN;
    iocd_buf_init(&p->wal, 0);
    /* Room for the usual entries (an unusual one grows the buffer): a reservation for the
     * worst case would put a 5,000-sample batch's buffer past malloc's mmap threshold, and
     * every batch would fault its pages in afresh. */
    err = iocd_buf_reserve(&p->wal, b->n * STORE_WAL_ENTRY_TYPICAL + STORE_WAL_ENTRY_MAX);
    pthread_mutex_lock(&st->mu);
    if (st->closing) {
        err = IOCD_ECLOSED;
        goto unlock;
    }
    for (i = 0; err == IOCD_OK && i < b->n; i++) {
        const batch_item *it = &b->items[i];
        const uint8_t *key = (const uint8_t *)b->keys.data + it->key_off;
        store_series *s;
        /* The items touch series spread over the whole table: its slot, the series with its
         * key (one allocation: the key from byte 112 on, three or four cache lines in all)
         * and its head's tail are each a cache miss. Asked for in stages ahead of use (the
         * slot 16 items ahead, the series' first lines 8, the rest of its key and its head 4),
         * they arrive while earlier items are worked on. (Written here, not in a helper: GCC
         * drops a call to a function that only prefetches.) */
        if (i + 16 < b->n && st->table_cap > 0)
            IOCD_PREFETCH(&st->table[b->items[i + 16].hash & (st->table_cap - 1)]);
        if (i + 8 < b->n && st->table_cap > 0 &&
            (s = st->table[b->items[i + 8].hash & (st->table_cap - 1)]) != NULL) {
            IOCD_PREFETCH(s);
            IOCD_PREFETCH((const char *)s + 64);
            IOCD_PREFETCH((const char *)s + 128);
        }
        if (i + 4 < b->n && st->table_cap > 0 &&
            (s = st->table[b->items[i + 4].hash & (st->table_cap - 1)]) != NULL) {
            if (s->key_len > 192 - offsetof(store_series, key))
                IOCD_PREFETCH((const char *)s + 192);
            if (s->head.buf != NULL)
                IOCD_PREFETCH(s->head.buf + s->head.len);
        }
        s = table_find(st, it->hash, key, it->key_len);
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
        if (s->head.has_newest && it->s.t_ms < s->head.newest - st->lim.ooo_window_ms) {
            reject(st, p, STORE_REJECT_OUT_OF_ORDER);
            continue;
        }
        err = store_series_put(st, s, it->s.t_ms, it->s.v);
        if (err == IOCD_OK)
            err = store_wal_put(&p->wal, s->id, it->s.t_ms, it->s.v);
        if (it->s.t_ms < p->t_min)
            p->t_min = it->s.t_ms;
        if (it->s.t_ms > p->t_max)
            p->t_max = it->s.t_ms;
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

/* ---- Recovery -------------------------------------------------------------------------- */

static iocd_err load_series(void *ud, uint64_t id, const uint8_t *key, size_t len)
{
    store *st = ud;
    store_series *s;

    if (id == 0)
        return IOCD_ECORRUPT;
    return series_add(st, id, store_key_hash(key, len), key, len, true, &s);
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
    store_series *s;
    iocd_err err = codec_wal_unpack(rec, len, &st->wal_scratch, &p, &n);

    if (err != IOCD_OK)
        return err;
    end = p + n;

    while (store_wal_next(&p, end, &id, &t, &v, &corrupt)) {
        s = store_series_get(st, id);
        if (s == NULL) {
            st->wal_unknown++; /* a deleted series: its samples go with it */
            continue;
        }
        err = store_series_put(st, s, t, v);
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
    st->m_posts_waiting =
        iocd_gauge("iocd_series_postings_waiting",
                   "Series persisted whose label postings wait for a later commit (1,024 go in "
                   "each; a cold start creates thousands at once).");
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
    st->m_compacted = iocd_counter("iocd_compacted_spans_total",
                                   "Span containers written by compaction (a finished span of "
                                   "4 id groups: their blocks and rollups in one value).");
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
    size_t n_reposted = 0;
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
    if (st->cfg.block_span_ms == 0)
        st->cfg.block_span_ms = DEFAULT_SPAN_MS;
    if (st->cfg.rollup_retention_ms <= 0)
        st->cfg.rollup_retention_ms = DEFAULT_ROLLUP_RET_MS;
    st->watermark = INT64_MIN;
    st->sealed_before = INT64_MIN;
    st->head_min = INT64_MAX;
    st->arrived_min = INT64_MAX;
    st->seal_target = INT64_MIN;
    st->trim_before = INT64_MIN;
    pthread_mutex_init(&st->mu, NULL);
    pthread_mutex_init(&st->commit_mu, NULL);
    pthread_cond_init(&st->wake, NULL);
    pthread_cond_init(&st->seal_wake, NULL);
    pthread_cond_init(&st->posted, NULL);
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
    err = store_db_set_spans(st->db, st->cfg.chunk_ms, st->cfg.block_span_ms,
                             st->cfg.block_span_ms > 0);
    if (err != IOCD_OK) {
        snprintf(errbuf, errlen, "%s/iocd.mdb: reading its block span: %s", dir,
                 iocd_strerror(err));
        goto out;
    }
    st->compact_check = true; /* chunk blocks of finished spans may wait from the last run */
    err = store_db_load(st->db, load_series, load_wal, st);
    if (err != IOCD_OK) {
        snprintf(errbuf, errlen, "%s/iocd.mdb: recovery failed: %s", dir, iocd_strerror(err));
        goto out;
    }
    iocd_buf_fini(&st->wal_scratch);
    err = store_db_repost(st->db, &n_reposted);
    if (err != IOCD_OK) {
        snprintf(errbuf, errlen, "%s/iocd.mdb: adding the postings of recent series: %s", dir,
                 iocd_strerror(err));
        goto out;
    }
    if (n_reposted > 0)
        log_info("store", "series created since the last seal: their postings are in place",
                 "series=%zu", n_reposted);
    if (st->cfg.query_cache_bytes > 0) {
        err = store_cache_new((size_t)st->cfg.query_cache_bytes, &st->cache);
        if (err != IOCD_OK)
            goto out;
    }
    st->last_sync_ns = iocd_mono_ns();
    if (pthread_create(&st->writer, NULL, store_writer_main, st) != 0) {
        snprintf(errbuf, errlen, "cannot start the writer thread: %s", strerror(errno));
        err = IOCD_EIO;
        goto out;
    }
    st->writer_started = true;
    if (pthread_create(&st->sealer, NULL, store_sealer_main, st) != 0) {
        snprintf(errbuf, errlen, "cannot start the sealer thread: %s", strerror(errno));
        err = IOCD_EIO;
        goto out;
    }
    st->sealer_started = true;
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
        pthread_join(st->writer, NULL); /* drains the queue, then sets writer_done */
    }
    if (st->sealer_started)
        pthread_join(st->sealer, NULL); /* the final seal and compaction */
    if (st->db != NULL) {
        iocd_err err = store_db_sync(st->db);
        if (err != IOCD_OK)
            log_error("store", "final sync failed", "dir=%s err=%s", st->dir, iocd_strerror(err));
        store_db_close_compacting(st->db, st->dir,
                                  err == IOCD_OK ? st->cfg.compact_at_stop_max : 0);
    }
    store_lock_release(st->lock);
    for (i = 0; i < st->by_id_cap; i++) {
        store_series *s = st->by_id[i];
        if (s != NULL) {
            store_head_free(&s->head);
            iocd_free(s->sealing);
            iocd_free(s);
        }
    }
    iocd_free(st->by_id);
    iocd_free(st->metric_slots);
    iocd_free(st->table);
    iocd_free(st->unpersisted);
    store_cache_free(st->cache);
    pthread_mutex_destroy(&st->mu);
    pthread_mutex_destroy(&st->commit_mu);
    pthread_cond_destroy(&st->wake);
    pthread_cond_destroy(&st->seal_wake);
    pthread_cond_destroy(&st->posted);
    iocd_free(st->unposted);
    iocd_free(st->dir);
    iocd_free(st);
}

iocd_err store_delete_series(store *st, const uint64_t *ids, size_t n)
{
    store_db_series *ser = iocd_calloc(n + 1, sizeof(*ser));
    store_series **fresh = NULL;
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
        store_series *s = store_series_get(st, ids[i]);
        if (s == NULL)
            continue;
        s->deleted = true;
        st->delete_epoch++; /* under commit_mu: see storage/writer.c */
        store_head_free(&s->head);
        iocd_free(s->sealing);
        s->sealing = NULL;
        s->n_sealing = 0;
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

/* The kv key: table \0 key. */
static size_t kv_key(const char *table, const void *key, size_t klen, uint8_t *out, size_t cap)
{
    size_t tl = strlen(table);

    if (tl + 1 + klen > cap)
        return 0;
    memcpy(out, table, tl + 1);
    if (klen > 0)
        memcpy(out + tl + 1, key, klen);
    return tl + 1 + klen;
}

iocd_err store_kv_write(store *st, const store_kv_op *ops, size_t n)
{
    store_db_kv *dk = iocd_calloc(n + 1, sizeof(*dk));
    uint8_t *keys = iocd_malloc(n * 512 + 1);
    size_t i;
    iocd_err err = IOCD_OK;

    if (dk == NULL || keys == NULL) {
        iocd_free(dk);
        iocd_free(keys);
        return IOCD_ENOMEM;
    }
    for (i = 0; err == IOCD_OK && i < n; i++) {
        size_t len = kv_key(ops[i].table, ops[i].key, ops[i].klen, keys + i * 512, 500);
        if (len == 0 || ops[i].klen == 0)
            err = IOCD_EINVAL;
        dk[i] = (store_db_kv){ keys + i * 512, len, ops[i].val, ops[i].vlen };
    }
    if (err == IOCD_OK) {
        pthread_mutex_lock(&st->commit_mu); /* one database change at a time */
        err = store_db_kv_write(st->db, dk, n);
        pthread_mutex_unlock(&st->commit_mu);
    }
    iocd_free(dk);
    iocd_free(keys);
    return err;
}

iocd_err store_kv_put(store *st, const char *table, const void *key, size_t klen, const void *val,
                      size_t vlen)
{
    store_kv_op op = { table, key, klen, val != NULL ? val : "", vlen };

    return store_kv_write(st, &op, 1);
}

iocd_err store_kv_del(store *st, const char *table, const void *key, size_t klen)
{
    store_kv_op op = { table, key, klen, NULL, 0 };

    return store_kv_write(st, &op, 1);
}

iocd_err store_kv_each(store *st, const char *table, store_kv_fn fn, void *ud)
{
    uint8_t k[512];
    size_t len = kv_key(table, NULL, 0, k, 500);

    if (len == 0)
        return IOCD_EINVAL;
    return store_db_kv_each(st->db, k, len, fn, ud);
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
            s.head_samples += store_head_count(&st->by_id[i]->head);
    s.sealed_before = st->sealed_before;
    pthread_mutex_unlock(&st->mu);
    if (store_db_stats(st->db, &s.file_bytes, &s.blocks, &s.span_blocks, &s.wal_records) != IOCD_OK)
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
