/* storage/storage.h - the time-series store: one LMDB environment in the data directory,
 * held by one process at a time (a lock file). This is storage's whole interface; it shows
 * no LMDB type. Threads: open/close from the main thread; readers from any thread. */
#ifndef IOCD_STORAGE_H
#define IOCD_STORAGE_H

#include "common/common.h"

typedef struct store store; /* opaque; one per data directory */

typedef struct store_config {
    uint64_t map_size;      /* LMDB map size in bytes; grows on demand; 0 = default */
    int64_t sync_window_ms; /* 0: fsync at every group commit; else at most this long unsynced */
    int64_t retention_ms;   /* samples older than now - retention are refused; 0 = 90 d */
    int64_t future_ms;      /* samples newer than now + this are refused; 0 = 10 min */
    size_t labels_max;      /* per series, __name__ included; 0 = 64 */
    size_t label_len_max;   /* name or value bytes; 0 = 4096 */
    uint64_t series_max;    /* total series; 0 = 5,000,000 */
    uint64_t new_series_per_min;  /* churn guard; 0 = 1,000,000 */
    int64_t ooo_window_ms;        /* out-of-order acceptance behind a series' newest; 0 = 1 h */
    int64_t chunk_ms;             /* period of one sealed block; 0 = 15 min */
    int64_t rollup_retention_ms;  /* 5 m and 1 h rollups are kept this long; 0 = 2 years */
    int64_t seal_grace_ms;        /* a period is sealed once the newest sample is this far past
                                   * its end; 0 = 2 min */
    int64_t block_span_ms;        /* a finished span of this length (a multiple of chunk_ms) is
                                   * compacted into one block per id group; 0 = 1 h; < 0 or
                                   * not above chunk_ms: never */
    uint64_t compact_at_stop_max; /* at close, compact a file of at most this many bytes when
                                   * a fifth or more of it is free pages; 0 = never */
    uint64_t query_cache_bytes;   /* series decoded from sealed blocks are kept in memory, up to
                                   * this many bytes, for reads that come again; 0 = none */
    uint64_t wal_delete_bytes;    /* a finished seal deletes its WAL records in transactions of
                                   * about this many bytes each; 0 = 64 MiB */
} store_config;

/* ---- Writing --------------------------------------------------------------------------- */

/* Ingest callers build a batch (any thread, no lock), then submit it: the samples enter the
 * in-memory head at once and are acknowledged through done() after the group commit that
 * makes them durable. */
typedef struct store_batch store_batch;

/* Why a sample was refused by store_batch_add (counted per reason in /metrics). */
typedef enum store_reject {
    STORE_REJECT_NONE = 0,
    STORE_REJECT_NO_NAME,   /* no __name__ label, or an empty one */
    STORE_REJECT_BAD_LABEL, /* a label name that is not [a-zA-Z_][a-zA-Z0-9_]* */
    STORE_REJECT_DUP_LABEL, /* the same label name twice */
    STORE_REJECT_TOO_MANY_LABELS,
    STORE_REJECT_LABEL_TOO_LONG,
    STORE_REJECT_TOO_OLD,      /* older than retention */
    STORE_REJECT_TOO_NEW,      /* too far in the future */
    STORE_REJECT_CARDINALITY,  /* a new series over the series or churn limit */
    STORE_REJECT_OUT_OF_ORDER, /* older than the series' newest sample minus the window */
    STORE_REJECT_COUNT_,
} store_reject;

/* Short snake_case name of a reason ("too_old"); for metrics labels and error texts. */
const char *store_reject_name(store_reject r);

/* A new empty batch; its memory is capped (IOCD_ETOOBIG from add when full).
 * Errors: IOCD_ENOMEM. */
iocd_err store_batch_new(store *st, store_batch **out);
void store_batch_free(store_batch *b); /* NULL is a no-op */
/* Room for about this many samples and bytes of series keys, so a batch of known size does
 * not grow its buffers (and copy them) a dozen times. A hint: adds past it still work. */
void store_batch_reserve(store_batch *b, size_t samples, size_t key_bytes);
/* Adds one sample. labels are copied (and sorted) into the batch. A sample the store would
 * refuse returns IOCD_EINVAL with *why set and is not added; the batch stays usable.
 * IOCD_ETOOBIG: the batch is full (submit it and start another). */
iocd_err store_batch_add(store_batch *b, const iocd_label *labels, size_t n_labels, int64_t t_ms,
                         double v, store_reject *why);
/* The same, for parsers that send several samples sharing their other labels (the fields of
 * one line-protocol line, the samples of one remote-write series): tagset != 0 promises
 * that labels[1..] have the same names and values as in the previous call with that tagset
 * (labels[0] may differ). The store then builds and hashes that part of the key once per
 * tagset. A tagset must not be reused for other labels while the batch lives. 0 promises
 * nothing. */
iocd_err store_batch_add_tagged(store_batch *b, const iocd_label *labels, size_t n_labels,
                                uint64_t tagset, int64_t t_ms, double v, store_reject *why);
size_t store_batch_len(const store_batch *b);

/* What happened to a submitted batch. */
typedef struct store_result {
    iocd_err err;    /* IOCD_OK: every accepted sample is durable (per the sync policy);
                      * IOCD_ENOSPC / IOCD_EIO: the commit failed, nothing is acknowledged */
    size_t accepted; /* samples that entered the store */
    size_t rejected[STORE_REJECT_COUNT_]; /* refused at submit (cardinality, out of order) */
} store_result;

/* Called once per submitted batch, from the writer thread (or from submit itself). */
typedef void (*store_done_fn)(void *ud, const store_result *res);

/* Takes b (also on failure). Resolves series (creating new ones), appends to the heads and
 * queues the group commit; done(ud, ...) is called exactly once, possibly before this
 * returns. Errors returned here mean done will not be called: IOCD_ECLOSED (store closing). */
iocd_err store_batch_submit(store_batch *b, store_done_fn done, void *ud);
/* Submits and waits for the commit; fills *res (may be NULL) and returns res->err. */
iocd_err store_batch_commit(store_batch *b, store_result *res);

/* Called from the writer thread after each successful group commit with the samples it made
 * durable, in chunks: ids[i] is the series of s[i]. It must be quick and must not call back
 * into the store's write path (the alert rules queue the samples and return). */
typedef void (*store_listen_fn)(void *ud, const uint64_t *ids, const iocd_sample *s, size_t n);
/* Sets (or, with fn NULL, removes) the listener. Call while no batch is being submitted,
 * e.g. before ingest starts. */
void store_set_listener(store *st, store_listen_fn fn, void *ud);

/* ---- Reading ---------------------------------------------------------------------------- */

/* Ids of all series, ascending. *ids_out is iocd_malloc'ed (caller frees). */
iocd_err store_series_all(store *st, uint64_t **ids_out, size_t *n_out);
/* Ids of the series carrying label name=value, ascending. */
iocd_err store_postings(store *st, const char *name, const char *value, uint64_t **ids_out,
                        size_t *n_out);
/* Distinct values of label name, sorted; each string and the array are iocd_malloc'ed. */
iocd_err store_label_values(store *st, const char *name, char ***values_out, size_t *n_out);

/* Distinct label names of all series (__name__ included), sorted; each string and the array
 * are iocd_malloc'ed. */
iocd_err store_label_names(store *st, char ***names_out, size_t *n_out);

/* Calls fn for each label of series id, in sorted order (strings borrowed for the call). */
typedef iocd_err (*store_label_fn)(void *ud, const char *name, size_t name_len, const char *value,
                                   size_t value_len);
iocd_err store_series_labels(store *st, uint64_t id, store_label_fn fn, void *ud);

/* The labels of many series at once: fn(ud, i, pairs, len) for each ids[i], in order, with its
 * labels as "name\0value\0" pairs sorted by name (borrowed for the call; len 0 for a series
 * unknown or deleted). Takes the store's lock once per 256 series, not once per series. fn
 * returning an error stops the walk and is returned. Errors: IOCD_ENOMEM, IOCD_ECORRUPT. */
typedef iocd_err (*store_pairs_fn)(void *ud, size_t i, const char *pairs, size_t len);
iocd_err store_series_pairs(store *st, const uint64_t *ids, size_t n, store_pairs_fn fn, void *ud);

/* The samples of series id with start_ms <= t <= end_ms, ascending by time, one per
 * timestamp (the last written wins). *out is iocd_malloc'ed. Errors: IOCD_ENOTFOUND. */
iocd_err store_read(store *st, uint64_t id, int64_t start_ms, int64_t end_ms, iocd_sample **out,
                    size_t *n_out);

/* Reads many series at once: fn(ud, i, samples, n) is called once for each ids[i] (ids
 * ascending, no duplicates), in order, with its samples in [start_ms, end_ms] as store_read
 * gives them (the array is borrowed for the call). Each sealed block is decompressed once for
 * all the wanted series it holds, so this is what queries over many series use. A series
 * deleted meanwhile is reported with no samples. fn returning an error stops the walk and is
 * returned. Errors: IOCD_ENOMEM, IOCD_ECORRUPT, IOCD_EIO. */
typedef iocd_err (*store_series_fn)(void *ud, size_t i, const iocd_sample *s, size_t n);
iocd_err store_read_many(store *st, const uint64_t *ids, size_t n, int64_t start_ms, int64_t end_ms,
                         store_series_fn fn, void *ud);

/* A closed span of time [start_ms, end_ms]. */
typedef struct store_span {
    int64_t start_ms, end_ms;
} store_span;

/* One series as store_read_spans hands it over. */
typedef struct store_samples {
    const iocd_sample *s; /* ascending by time, one per timestamp (the last written wins) */
    size_t n;
    bool nan;   /* some value is a NaN (staleness markers are NaNs); false: none is */
    bool drops; /* some value may be below the one before it; false: none is */
} store_samples;
typedef iocd_err (*store_samples_fn)(void *ud, size_t i, const store_samples *ss);

/* store_read_many for a reader that looks at samples only within spans (closed, in any order,
 * may overlap): for each ids[i] (ascending, no duplicates), in order, fn gets every sample
 * store_read gives within the spans, and may get others between the first span's start and
 * the last one's end, which the caller ignores. Only the blocks of periods that meet a span
 * are decompressed, each once for the whole selection, and each series is decoded straight
 * into one buffer (ss and its samples are borrowed for the call). Errors as store_read_many. */
iocd_err store_read_spans(store *st, const uint64_t *ids, size_t n, const store_span *spans,
                          size_t n_spans, store_samples_fn fn, void *ud);

/* Rollups, built as samples are sealed: per bucket of 5 minutes or 1 hour, the min, max,
 * sum, count and last value of a series (staleness markers left out; min and max as
 * Prometheus' min_over_time and max_over_time fold them, a NaN giving way to any later
 * value). They cover sealed samples only: for a range that reaches the head, read raw
 * samples for the rest (store_read_rollup_many does both). */
typedef struct store_rollup {
    int64_t t_ms; /* bucket start */
    double min, max, sum, count, last;
    int64_t last_t_ms; /* time of `last` */
} store_rollup;

#define STORE_ROLLUP_5M 300000
#define STORE_ROLLUP_1H 3600000

/* The buckets of series id at resolution res_ms (STORE_ROLLUP_5M or _1H) starting within
 * [start_ms, end_ms], ascending. *out is iocd_malloc'ed. Errors: IOCD_EINVAL (resolution),
 * IOCD_ENOTFOUND, IOCD_ENOMEM, IOCD_ECORRUPT. */
iocd_err store_read_rollup(store *st, uint64_t id, int64_t res_ms, int64_t start_ms, int64_t end_ms,
                           store_rollup **out, size_t *n_out);

/* What store_read_rollup_many gives for ids[i]: its exact buckets r (ascending) and raw
 * samples s (ascending, one per timestamp, staleness markers included), both borrowed for
 * the call. fn may read the store. */
typedef iocd_err (*store_rollup_fn)(void *ud, size_t i, const store_rollup *r, size_t n_r,
                                    const iocd_sample *s, size_t n_s);

/* Reads many series (ids ascending, no duplicates) at once for a query over long windows,
 * one pass per id group as store_read_many. For each ids[i], in order, fn gets:
 *  - r: the buckets at res_ms whose whole span [t, t + res_ms - 1] lies in [start_ms,
 *    end_ms] and that are exact: each is the aggregate of the samples store_read gives for
 *    its span (a series' unsealed samples make their bucket left out, never stale);
 *  - s: the samples store_read would give at every time within spans (any order, may
 *    overlap) and within every bucket span inside [start_ms, end_ms] not in r; s may hold
 *    others too, which the caller ignores.
 * Only the blocks of periods that meet those spans are decompressed. A series deleted
 * meanwhile is reported empty. fn returning an error stops the walk and is returned.
 * Errors: IOCD_EINVAL (resolution), IOCD_ENOMEM, IOCD_ECORRUPT, IOCD_EIO. */
iocd_err store_read_rollup_many(store *st, const uint64_t *ids, size_t n, int64_t res_ms,
                                int64_t start_ms, int64_t end_ms, const store_span *spans,
                                size_t n_spans, store_rollup_fn fn, void *ud);

/* Deletes the series (ids from store_series_all or a selection): they vanish from the index,
 * postings and reads at once; their sealed samples are reclaimed by retention. A later
 * sample with the same labels starts a new series. Errors: IOCD_EIO, IOCD_ENOSPC. */
iocd_err store_delete_series(store *st, const uint64_t *ids, size_t n);

/* Counters of the store, for /metrics and tests. */
typedef struct store_stats {
    uint64_t series;
    uint64_t head_samples; /* samples in memory, not yet sealed */
    int64_t sealed_before; /* every period before this is sealed (INT64_MIN: none) */
    uint64_t blocks;       /* sealed blocks on disk */
    uint64_t span_blocks;  /* of those, blocks that compacted a finished span */
    uint64_t wal_records;
    uint64_t file_bytes; /* pages of the data file in use */
} store_stats;
iocd_err store_stats_get(store *st, store_stats *out);

/* ---- Small durable records -------------------------------------------------------------- */

/* Tables of small records kept in the data file beside the samples: alert state, incidents,
 * silences, notification logs. A put or delete is durable when it returns (its own
 * transaction, synced). Keys: table and key together at most 500 bytes. Any thread.
 * Errors: IOCD_EINVAL (key too long or empty), IOCD_EIO, IOCD_ENOSPC. */
iocd_err store_kv_put(store *st, const char *table, const void *key, size_t klen, const void *val,
                      size_t vlen);
iocd_err store_kv_del(store *st, const char *table, const void *key, size_t klen);
/* Several puts and deletes in one transaction (all or none), synced once. */
typedef struct store_kv_op {
    const char *table;
    const void *key;
    size_t klen;
    const void *val; /* NULL: delete */
    size_t vlen;
} store_kv_op;
iocd_err store_kv_write(store *st, const store_kv_op *ops, size_t n);
/* Calls fn for each record of table in key order; fn's pointers are valid for the call. */
typedef iocd_err (*store_kv_fn)(void *ud, const void *key, size_t klen, const void *val,
                                size_t vlen);
iocd_err store_kv_each(store *st, const char *table, store_kv_fn fn, void *ud);

/* ---- Tools (work on a data dir another process may be writing) --------------------------- */

/* Writes a consistent, compacted copy of dir's data file to dest_dir/iocd.mdb (dest_dir is
 * created; it must not hold a data file already). Safe while a daemon writes to dir: the
 * copy is one read transaction's snapshot. Errors: IOCD_EEXIST, IOCD_ENOTFOUND, IOCD_EIO,
 * IOCD_ENOSPC; errbuf says which file. */
iocd_err store_backup(const char *dir, const char *dest_dir, char *errbuf, size_t errlen);

/* Verifies dir's data file: the format marker, that the series index, the reverse index and
 * the postings agree, and that every WAL record decodes and names known series. Each problem
 * is reported through fn (one sentence); *problems_out counts them. Errors (the check could
 * not run): IOCD_ENOTFOUND, IOCD_ECORRUPT (not an iocd file), IOCD_EIO. */
typedef void (*store_report_fn)(void *ud, const char *problem);
iocd_err store_check(const char *dir, store_report_fn fn, void *ud, uint64_t *problems_out,
                     char *errbuf, size_t errlen);

/* ---- Opening ---------------------------------------------------------------------------- */

/* Opens or creates the store in dir (created if missing). On success *out owns it.
 * Errors: IOCD_ELOCKED (another process holds dir; errbuf names its pid), IOCD_EPERM (dir
 * not writable), IOCD_ECORRUPT (the data file is not an iocd store; nothing written),
 * IOCD_EIO, IOCD_ENOMEM. errbuf gets a sentence naming the path. */
iocd_err store_open(const char *dir, const store_config *cfg, store **out, char *errbuf,
                    size_t errlen);
/* Commits and syncs what is pending, releases the lock and frees. NULL is a no-op. */
void store_close(store *st);
/* The data directory (borrowed, lives as long as st). */
const char *store_dir(const store *st);

#endif
