/* storage/storage_int.h - declarations shared by the files of storage/ only. */
#ifndef IOCD_STORAGE_INT_H
#define IOCD_STORAGE_INT_H

#include <pthread.h>

#include "storage/storage.h"

#define STORE_LABELS_HARD_MAX 256

/* ---- Limits (store_config with defaults applied) ---------------------------------------- */

typedef struct store_limits {
    int64_t retention_ms;
    int64_t future_ms;
    int64_t ooo_window_ms;
    size_t labels_max;
    size_t label_len_max;
    uint64_t series_max;
    uint64_t new_series_per_min;
} store_limits;

/* ---- Batches (storage/batch.c) ----------------------------------------------------------- */

typedef struct batch_item {
    uint32_t key_off, key_len; /* canonical series key in store_batch.keys */
    uint64_t hash;
    iocd_sample s;
} batch_item;

struct store_batch {
    store *st;
    iocd_buf keys;
    batch_item *items;
    size_t n, cap;
    int64_t now_ms;
};

/* The store's limits (config with defaults applied); lives as long as st. */
const store_limits *store_limits_get(const store *st);
/* Appends the canonical key of labels to out. IOCD_EINVAL with *why for a refused label set. */
iocd_err store_key_build(const store_limits *lim, const iocd_label *labels, size_t n_labels,
                         iocd_buf *out, store_reject *why);
uint64_t store_hash(const void *data, size_t len);
/* Walks a canonical key: calls fn per label. IOCD_ECORRUPT if malformed. */
iocd_err store_key_walk(const uint8_t *key, size_t len, store_label_fn fn, void *ud);

/* Write-ahead-log entries: varint id, zigzag varint t, 8 raw bytes of v (bit-exact).
 * store_wal_next returns false at the end of rec; *corrupt is set if it stopped early. */
iocd_err store_wal_put(iocd_buf *b, uint64_t id, int64_t t, double v);
bool store_wal_next(const uint8_t **p, const uint8_t *end, uint64_t *id, int64_t *t, double *v,
                    bool *corrupt);

/* ---- The lock file (storage/lock.c) ------------------------------------------------------ */

typedef struct store_lock store_lock;
/* Creates dir if needed and takes its lock. Errors: IOCD_ELOCKED (errbuf names the holder's
 * pid), IOCD_EPERM / IOCD_EIO / IOCD_ENOTFOUND (errbuf names the path and the reason). */
iocd_err store_lock_take(const char *dir, store_lock **out, char *errbuf, size_t errlen);
void store_lock_release(store_lock *lk); /* NULL is a no-op */

/* ---- LMDB (storage/lmdb.c is the only file that includes <lmdb.h>) ----------------------- */

typedef struct store_db store_db; /* the environment and its named databases */

/* Opens DIR/iocd.mdb (created if missing) with MDB_NOTLS and map_size bytes of address
 * space, and checks or writes the format marker. nosync: commits do not fsync (the caller
 * syncs on its own schedule). Errors: IOCD_ECORRUPT (not an iocd data file, or a newer
 * format), IOCD_EIO, IOCD_EPERM, IOCD_ENOMEM; errbuf names the file and LMDB's reason. */
iocd_err store_db_open(const char *dir, uint64_t map_size, bool nosync, store_db **out,
                       char *errbuf, size_t errlen);
/* Flushes to disk (mdb_env_sync with force). */
iocd_err store_db_sync(store_db *db);
void store_db_close(store_db *db); /* NULL is a no-op */

/* A series to persist: id, canonical key. */
typedef struct store_db_series {
    uint64_t id;
    const uint8_t *key;
    size_t key_len;
} store_db_series;

/* One group commit, in one write transaction: the new series (index, reverse index,
 * postings) and one write-ahead-log record. Errors: IOCD_ENOSPC, IOCD_EIO. */
iocd_err store_db_commit(store_db *db, const store_db_series *series, size_t n_series,
                         uint64_t wal_seq, const void *wal, size_t wal_len);

/* Recovery: calls series_fn for every series (ascending id), then wal_fn for every WAL record
 * (ascending sequence). */
typedef iocd_err (*store_db_series_fn)(void *ud, uint64_t id, const uint8_t *key, size_t len);
typedef iocd_err (*store_db_wal_fn)(void *ud, uint64_t seq, const uint8_t *rec, size_t len);
iocd_err store_db_load(store_db *db, store_db_series_fn series_fn, store_db_wal_fn wal_fn,
                       void *ud);

/* Reads (their own read transaction each). */
iocd_err store_db_postings(store_db *db, const char *name, const char *value, uint64_t **ids_out,
                           size_t *n_out);
iocd_err store_db_label_values(store_db *db, const char *name, char ***values_out, size_t *n_out);

#endif
