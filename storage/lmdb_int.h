/* storage/lmdb_int.h - what the files that see <lmdb.h> share: the environment and its
 * databases, big-endian key helpers, the packed series index (storage/lmdb_series.c) and the
 * label postings (storage/lmdb_postings.c). */
#ifndef IOCD_STORAGE_LMDB_INT_H
#define IOCD_STORAGE_LMDB_INT_H

#include "storage/storage_int.h"

#include <lmdb.h>

struct store_db {
    MDB_env *env;
    MDB_dbi meta;
    MDB_dbi series_by_id;      /* id -> canonical key, for series not yet packed */
    MDB_dbi series_packed;     /* first id of a group of 64 -> its series keys, compressed */
    MDB_dbi postings;          /* "name=value" -> ids (dupsort, dupfixed, big-endian), unpacked */
    MDB_dbi postings_packed;   /* "name=value", id segment -> its ids (storage/lmdb_postings.c) */
    MDB_dbi wal;               /* period, sequence -> record */
    MDB_dbi chunks;            /* period, id group, sequence -> compressed block */
    MDB_dbi spans;             /* span start, id group, sequence -> compacted block */
    MDB_dbi rollup_5m;         /* the same keys -> 5-minute min, max, sum, count, last */
    MDB_dbi rollup_1h;         /* the same keys -> 1-hour aggregates */
    MDB_dbi kv;                /* table \0 key -> value: alert state, incidents, silences */
    int64_t chunk_ms, span_ms; /* see store_db_set_spans; span_ms is the file's */
    bool compacts;             /* the writer compacts finished spans */
    void *map;                 /* where the file is mapped (found in /proc/self/maps), or NULL */
    size_t map_len;
};

/* LMDB's return codes as ours. */
iocd_err store_mdb_err(int rc);

/* A transaction that reads much of the file (a seal's end: packing the new series' index
 * and postings, deleting the WAL records of a period) maps it all: each read fault maps the
 * 64 KiB around it from the page cache (the kernel's fault-around; MADV_RANDOM does not stop
 * it), and those pages count in the process' resident memory until dropped. Such loops call
 * this with the bytes each step read: every DROP_READ_BYTES the mapping is dropped
 * (store_db_drop_mapped), so resident memory stays what iocd holds. */
#define DROP_READ_BYTES (4u << 20)

static inline void store_db_read_some(store_db *db, size_t *since_drop, size_t bytes)
{
    *since_drop += bytes;
    if (*since_drop >= DROP_READ_BYTES) {
        store_db_drop_mapped(db);
        *since_drop = 0;
    }
}

static inline void be64(uint8_t *p, uint64_t v)
{
    int i;

    for (i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Signed times as big-endian keys that sort in numeric order. */
static inline void be_time(uint8_t *p, int64_t t)
{
    be64(p, (uint64_t)t ^ (1ULL << 63));
}

static inline int64_t get_be_time(const uint8_t *p)
{
    return (int64_t)(get_be64(p) ^ (1ULL << 63));
}

/* ---- Blocks and compacted spans (storage/lmdb.c, storage/lmdb_spans.c) ------------------ */

/* A block's key: period, id group (or container), sequence (20 bytes). */
void store_block_key(uint8_t *key, int64_t period, uint64_t group, uint32_t seq);

/* A walk over one group's blocks of one database, period by period. */
typedef struct store_group_iter {
    MDB_cursor *cur;
    uint64_t group;
    int64_t p, to; /* the next period to look at; the last one */
    int64_t kp;    /* the period of the current block */
    MDB_val k, v;
} store_group_iter;

/* Positions it at the group's first block with a period in [it->p, it->to]. */
int store_group_seek(store_group_iter *it);
/* Begins a read transaction (*txn) and positions *it, a cursor on the span database, at the
 * container's value for span. The caller closes it->cur and aborts *txn if they are set,
 * whatever the result. */
int store_span_open(store_db *db, int64_t span, uint64_t container, MDB_txn **txn,
                    store_group_iter *it);

/* For the value *v found under (period, container) in the span database: the value that
 * holds its container (*v itself, or for an alias its owner's, then in *v) and which span of
 * it that is (*span_out: 0, or 1 for the span after the owner key's). MDB_NOTFOUND: an alias
 * whose owner is gone. */
int store_span_value(const store_db *db, MDB_txn *txn, int64_t period, uint64_t container,
                     MDB_val *v, unsigned *span_out);

/* Whether a span value holds a part of the next span: it expires with that span. */
bool store_span_reaches_next(const MDB_val *v);

/* ---- The series index (storage/lmdb_series.c) -------------------------------------------
 * A new series is written to series_by_id (id -> key). When a seal completes, every series
 * there moves into series_packed: one record per id group of 64, its keys compressed
 * together (series of a group share one metric, so they compress ~8x). Return LMDB codes. */

/* Moves every series of series_by_id into its group's packed record. */
int store_spack_pack(store_db *db, MDB_txn *txn);

/* The key of series id, from series_by_id or its group (*key may point into scratch). */
int store_spack_get(store_db *db, MDB_txn *txn, uint64_t id, iocd_buf *scratch, const uint8_t **key,
                    size_t *len);

/* Calls fn for every series, packed groups first (ids ascending within each). fn's error
 * stops the walk: *err gets it and the call returns 0. */
typedef iocd_err (*store_spack_fn)(void *ud, uint64_t id, const uint8_t *key, size_t len);
int store_spack_each(store_db *db, MDB_txn *txn, store_spack_fn fn, void *ud, iocd_err *err);
/* The same over the series not packed yet alone (created since the last seal's end). */
int store_spack_unpacked_each(store_db *db, MDB_txn *txn, store_spack_fn fn, void *ud,
                              iocd_err *err);

/* Removes the series ids (any order), wherever they are; ids found nowhere are skipped. */
int store_spack_del(store_db *db, MDB_txn *txn, const uint64_t *ids, size_t n);

/* ---- The label postings (storage/lmdb_postings.c) ------------------------------------------
 * A new series' labels go to postings (one record per label and series). When a seal
 * completes they move into postings_packed: one record per label and segment of 65536 ids,
 * the ids as delta varints. Readers (store_db_postings, _label_values, _label_names, also
 * defined there, as is store_db_delete_series) union both halves. Return LMDB codes. */

/* Adds the postings of n series (id, canonical key) to the unpacked half, grouped by key. */
int store_post_add_many(store_db *db, MDB_txn *txn, const store_db_series *series, size_t n);

/* Moves every unpacked posting into the packed half. */
int store_post_pack(store_db *db, MDB_txn *txn);

/* For a file written before iocd-store-4: moves the unpacked postings of long values after a
 * name over 62 bytes to today's key (which keeps fewer of the value's bytes). */
int store_post_upgrade(store_db *db, MDB_txn *txn);

/* iocd check: every posting of both halves decodes and names one of ids (every series,
 * ascending), and every label of every series has its posting. Problems go to fn;
 * *n_postings counts the (label, series) pairs. A series not packed yet (created since the
 * last seal's end) may lack postings after a crash, which the next open adds
 * (store_db_repost): *n_unposted counts those series, not problems. */
int store_post_check(store_db *db, MDB_txn *txn, const uint64_t *ids, size_t n_ids,
                     store_report_fn fn, void *ud, uint64_t *n_postings, uint64_t *n_unposted);

#endif
