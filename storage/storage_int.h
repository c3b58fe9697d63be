/* storage/storage_int.h - declarations shared by the files of storage/ only. */
#ifndef IOCD_STORAGE_INT_H
#define IOCD_STORAGE_INT_H

#include <pthread.h>
#include <stdatomic.h>

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
    /* The label part after __name__ of the last tagset's key (store_batch_add_tagged). */
    uint64_t tagset, rest_hash;
    size_t rest_labels;
    iocd_buf rest;
};

/* The store's limits (config with defaults applied); lives as long as st. */
const store_limits *store_limits_get(const store *st);
/* Appends the canonical key of labels to out. IOCD_EINVAL with *why for a refused label set. */
iocd_err store_key_build(const store_limits *lim, const iocd_label *labels, size_t n_labels,
                         iocd_buf *out, store_reject *why);
uint64_t store_hash(const void *data, size_t len);
/* The series table's hash of a canonical key: its first label and the rest hashed apart and
 * combined, so that keys sharing all but __name__ (the fields of one line) hash the rest
 * once. */
uint64_t store_key_hash(const void *key, size_t len);
static inline uint64_t store_key_hash_parts(uint64_t first, uint64_t rest)
{
    return first ^ (rest * 0x9e3779b97f4a7c15ULL);
}
/* Walks a canonical key: calls fn per label. IOCD_ECORRUPT if malformed. */
iocd_err store_key_walk(const uint8_t *key, size_t len, store_label_fn fn, void *ud);

/* Unsigned LEB128 varints and zigzag, shared by the key, WAL and block encodings. */
size_t store_varint_put(uint8_t *p, uint64_t v); /* writes at most 10 bytes */
/* Inline: block decoding spends most of its time here. */
static inline bool store_varint_get(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    const uint8_t *q = *p;
    uint64_t v = 0;
    int shift = 0;

    if (q < end && *q < 0x80) { /* one byte: the common case */
        *out = *q;
        *p = q + 1;
        return true;
    }
    while (q < end && shift < 64) {
        uint8_t b = *q++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            *p = q;
            return true;
        }
        shift += 7;
    }
    *p = q;
    *out = 0;
    return false;
}

/* Write-ahead-log entries: varint id, zigzag varint t, 8 raw bytes of v (bit-exact).
 * store_wal_next returns false at the end of rec; *corrupt is set if it stopped early. */
#define STORE_WAL_ENTRY_MAX     28 /* two varints and the 8 bytes of the value */
#define STORE_WAL_ENTRY_TYPICAL 18 /* an id under 2^21, a millisecond time of this century */
iocd_err store_wal_put(iocd_buf *b, uint64_t id, int64_t t, double v);
bool store_wal_next(const uint8_t **p, const uint8_t *end, uint64_t *id, int64_t *t, double *v,
                    bool *corrupt);

/* ---- The on-disk sample codec (storage/codec.c, the only file that sees zstd) ----------- */

/* The pieces of the value and time encodings the head shares with blocks. */
#define CODEC_E_MAX 15
extern const double codec_pow10[CODEC_E_MAX + 1];
uint64_t codec_zigzag(int64_t v);
int64_t codec_unzigzag(uint64_t v);
/* Whether v is exactly m / 10^e with |m| < 2^53 (bitwise round trip); writes m. */
bool codec_decimal_at(double v, int e, int64_t *m);

/* Appends the stream encoding of n samples (any order; stored as given). */
iocd_err codec_stream_encode(const iocd_sample *s, size_t n, iocd_buf *out);

/* Decodes a stream; *out is iocd_malloc'ed. Errors: IOCD_ECORRUPT, IOCD_ENOMEM. */
iocd_err codec_stream_decode(const uint8_t *p, size_t len, iocd_sample **out, size_t *n_out);

typedef struct codec_series {
    uint64_t id; /* ascending within a block */
    const iocd_sample *s;
    size_t n;
} codec_series;

/* What codec_stream_append learned about the samples it appended: ascending stays true
 * only while every kept sample is later than the one before it (the buffer's last included);
 * nan becomes true when a decoded value is a NaN (staleness markers are NaNs); drops becomes
 * true when a kept value is below the one before it (a counter reset, for rate). */
typedef struct codec_append {
    bool ascending, nan, drops;
} codec_append;

/* A block decompressed once, with the stream of each of its series: readers that take one
 * series at a time across several blocks (storage/read.c) open each block once. */
typedef struct codec_stream {
    uint64_t id;      /* ascending within a block */
    const uint8_t *p; /* the stream, inside the block's raw bytes */
    size_t len;
} codec_stream;

typedef struct codec_block {
    int version;  /* its format */
    uint8_t *raw; /* the decompressed block */
    size_t raw_cap;
    codec_stream *streams;
    size_t n, cap;
} codec_block;

/* Decompresses and indexes a sample block (of any version still read) into b, reusing b's
 * memory (zeroed before first use). Errors: IOCD_ECORRUPT (b->n is then 0), IOCD_ENOMEM. */
iocd_err codec_block_open(codec_block *b, const void *data, size_t len, size_t max_raw);
void codec_block_fini(codec_block *b); /* frees b's memory; b may be opened again */
/* The number of samples stream i of b holds, or 0 when it is malformed. */
size_t codec_stream_count(const codec_block *b, size_t i);
/* Decodes stream i of b, appending its samples with lo <= t <= hi at (*buf)[*n_io] (*buf
 * grown as needed, *cap samples; *n_io advanced). info may be NULL. The stream decoder is
 * one, and every reader of sample blocks decodes with it. Errors: IOCD_ECORRUPT (*n_io then
 * unchanged), IOCD_ENOMEM. */
iocd_err codec_stream_append(const codec_block *b, size_t i, int64_t lo, int64_t hi,
                             iocd_sample **buf, size_t *cap, size_t *n_io, codec_append *info);

/* Appends one zstd-compressed block holding the series. Errors: IOCD_ENOMEM, IOCD_EIO. */
iocd_err codec_block_encode(const codec_series *list, size_t n, int level, iocd_buf *out);
/* A block in the format before version 3 (times and values interleaved), which is still read:
 * for tests of that reading. */
iocd_err codec_block_encode_v1(const codec_series *list, size_t n, int level, iocd_buf *out);
/* Finds series id in a block and decodes its samples. Errors: IOCD_ENOTFOUND,
 * IOCD_ECORRUPT (including a block claiming more than max_raw bytes), IOCD_ENOMEM. */
iocd_err codec_block_find(const void *data, size_t len, uint64_t id, size_t max_raw,
                          iocd_sample **out, size_t *n_out);

/* Calls fn for every series of a block with its decoded samples. */
typedef iocd_err (*codec_series_fn)(void *ud, uint64_t id, const iocd_sample *s, size_t n);
iocd_err codec_block_each(const void *data, size_t len, size_t max_raw, codec_series_fn fn,
                          void *ud);

/* Rollup blocks: per series, the buckets at res_ms of its samples (min, max, sum, count, last
 * and its time; staleness markers left out), compressed like a block. */
iocd_err codec_rollup_encode(const codec_series *list, size_t n, int64_t res_ms, int level,
                             iocd_buf *out);
/* Calls fn with the buckets (ascending) of each series of ids (ascending; NULL: all) found in
 * a rollup block; r is valid during the call only. */
typedef iocd_err (*codec_rollup_fn)(void *ud, uint64_t id, const store_rollup *r, size_t n);
iocd_err codec_rollup_select(const void *data, size_t len, size_t max_raw, int64_t res_ms,
                             const uint64_t *ids, size_t n, codec_rollup_fn fn, void *ud);
/* Span containers: the frames (blocks and rollup blocks) of several id groups' compacted span
 * in one value. group: the id group's low bits (id >> 6 & 3); kind: a store_db_kind. */
typedef struct codec_frame {
    unsigned group, kind;
    const void *data;
    size_t len;
} codec_frame;
iocd_err codec_span_pack(const codec_frame *f, size_t n, iocd_buf *out);
typedef iocd_err (*codec_frame_fn)(void *ud, const codec_frame *f);
iocd_err codec_span_each(const void *val, size_t len, codec_frame_fn fn, void *ud);
/* Containers that share one value (written by the stop's compaction): up to
 * CODEC_SPAN_PARTS parts, each the container of a key (span: 0 the owner key's span, 1 the
 * next; slot: the key's container & 3, all of one quad). The value goes under the owner's key
 * (its first part's), an alias under each other part's key. */
#define CODEC_SPAN_PARTS 8
typedef struct codec_part {
    unsigned span, slot;
    const void *data;
    size_t len;
} codec_part;
iocd_err codec_span_share(const codec_part *parts, size_t n, iocd_buf *out);
iocd_err codec_span_alias(unsigned span_back, unsigned owner_slot, iocd_buf *out);
/* Whether val is an alias, and where its owner is (spans back from its key, slot). */
bool codec_span_alias_get(const void *val, size_t len, unsigned *span_back, unsigned *owner_slot);
bool codec_span_is_shared(const void *val, size_t len);
/* The parts of a shared value (.data into val). Errors: IOCD_ECORRUPT (or more than max). */
iocd_err codec_span_parts(const void *val, size_t len, codec_part *parts, size_t max,
                          size_t *n_out);
/* The container of (span, slot) in a value: a plain container is its key's own (span 0, any
 * slot); IOCD_ENOTFOUND when the value holds no such part (an alias holds none). */
iocd_err codec_span_part(const void *val, size_t len, unsigned span, unsigned slot,
                         const void **part, size_t *part_len);
/* The frame of (group, kind) in a container; IOCD_ENOTFOUND when it has none. */
iocd_err codec_span_find(const void *val, size_t len, unsigned group, unsigned kind,
                         const void **data, size_t *flen);
/* Like codec_block_each, for the series of ids (ascending) only; the others stay encoded. */
iocd_err codec_block_select(const void *data, size_t len, size_t max_raw, const uint64_t *ids,
                            size_t n, codec_series_fn fn, void *ud);

/* WAL records on disk: a format byte (0 raw entries, 1 zstd-compressed entries) and the
 * payload. pack appends to out; unpack sets *entries to the raw entries, which point into
 * rec or into scratch. Errors: IOCD_ECORRUPT, IOCD_ENOMEM, IOCD_EIO. */
iocd_err codec_wal_pack(const void *entries, size_t len, iocd_buf *out);
/* The same format at a chosen zstd level (the packed series index); read with
 * codec_wal_unpack. */
iocd_err codec_pack(const void *entries, size_t len, int level, iocd_buf *out);
iocd_err codec_wal_unpack(const void *rec, size_t len, iocd_buf *scratch, const uint8_t **entries,
                          size_t *entries_len);

/* ---- The read cache (storage/cache.c) ------------------------------------------------------
 * Series decoded from sealed blocks, kept for queries that read them again. An entry
 * (cache_block) stands for one block's exact bytes: found by group, period, length and a hash
 * of the bytes, so it never answers for another block. Readers hold the entries they use
 * (store_cache_get .. store_cache_release); a held entry is not dropped, and its segments,
 * once kept, do not change until it is. Any thread. */
typedef struct store_cache store_cache;
typedef struct cache_block cache_block;
typedef struct cache_seg cache_seg; /* one series' samples from one block */

/* A cache of at most max_bytes (0: it keeps nothing). Errors: IOCD_ENOMEM. */
iocd_err store_cache_new(size_t max_bytes, store_cache **out);
void store_cache_free(store_cache *c); /* NULL is a no-op */
/* The hash that identifies a block's bytes. */
uint64_t store_cache_hash(const void *data, size_t len);
/* The entry of the block data (of id group group and period), made empty when missing, and
 * held; NULL when c is NULL, keeps nothing, or has no room. */
cache_block *store_cache_get(store_cache *c, uint64_t group, int64_t period, const void *data,
                             size_t len);
void store_cache_release(store_cache *c, cache_block *b); /* NULL is a no-op */
/* Whether serving ids (of b's group) needs the block opened: b does not know yet which series
 * it holds, or one of ids is there and not kept. */
bool store_cache_needs(store_cache *c, cache_block *b, const uint64_t *ids, size_t n);
/* Tells b which series its block holds, once the block is open. */
void store_cache_opened(store_cache *c, cache_block *b, const codec_block *blk);
/* Series id's kept samples in b, or NULL; *absent_out says the block does not hold it. The
 * reader counts what it was given (store_cache_hits). */
const cache_seg *store_cache_seg(store_cache *c, cache_block *b, uint64_t id, bool *absent_out);
/* Counts n series served from the cache: once per read, not per series, since two threads
 * adding to one counter for every series made its cache line bounce between the cores. */
void store_cache_hits(store_cache *c, uint64_t n);
/* Room for a series of n samples: the most its segment takes. */
size_t store_cache_seg_bytes(size_t n);
/* Claims bytes of room for a series about to be decoded (a miss), dropping entries unused for
 * a minute as needed; false: no room, decode without keeping. */
bool store_cache_reserve(store_cache *c, size_t bytes);
void store_cache_unreserve(store_cache *c, size_t bytes); /* gives back an unused claim */
/* Keeps series id's samples s (its whole stream, as decoded: info as the decoder said) in b,
 * using the room reserved for it (store_cache_seg_bytes(n) claimed, handed over in every
 * case), and returns them as kept; NULL when out of memory. */
const cache_seg *store_cache_put(store_cache *c, cache_block *b, uint64_t id, const iocd_sample *s,
                                 size_t n, const codec_append *info, size_t reserved);
/* Series served from the cache, series decoded and offered to it, and the bytes it holds. */
void store_cache_stats(store_cache *c, uint64_t *hits, uint64_t *misses, size_t *bytes);
/* Appends g's samples within the spans (merged: ascending, apart) at (*buf)[*n_io] as
 * codec_stream_append does; samples between the first span's start and the last one's end
 * may come along (a segment out of time order gives all of those). */
iocd_err store_cache_expand(const cache_seg *g, const store_span *spans, size_t n_spans,
                            iocd_sample **buf, size_t *cap, size_t *n_io, codec_append *info);

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
/* Drops the data file's pages from this process' mapping (not from the page cache): reads
 * (the writer's B-tree descents, sealing, compaction, queries) fault them in, and they count
 * as the process' resident memory until dropped. Safe while other threads read. */
void store_db_drop_mapped(store_db *db);
void store_db_close(store_db *db); /* NULL is a no-op */

/* A series to persist: id, canonical key. */
typedef struct store_db_series {
    uint64_t id;
    const uint8_t *key;
    size_t key_len;
} store_db_series;

/* A write-ahead-log record: the entries of one period (WAL keys are period, sequence, so a
 * sealed period's records are deleted as one range). */
typedef struct store_db_wal {
    int64_t period;
    const void *data;
    size_t len;
} store_db_wal;

/* Where a block goes: raw samples, or one of the rollup resolutions. */
typedef enum store_db_kind {
    STORE_DB_CHUNKS,
    STORE_DB_SPANS, /* compacted spans: per span (1 h) and SPAN_GROUPS id groups, a container
                     * of their blocks and rollup blocks */
    STORE_DB_ROLLUP_5M,
    STORE_DB_ROLLUP_1H,
    STORE_DB_KINDS_,
} store_db_kind;

/* A sealed block: key (period, id group, sequence), value the compressed block. A block
 * that `replaces` (compaction) first deletes its group's blocks of the same kind in the whole
 * span [period, period + span). A STORE_DB_SPANS block is a container keyed by the first of
 * SPAN_GROUPS id groups (group is a multiple of it; the key holds group / SPAN_GROUPS); it
 * replaces the chunk blocks and rollup parts of all of them in its span: it holds them all.
 * The stop's compaction may put the containers of up to CODEC_SPAN_PARTS keys (a quad of
 * containers, in a span and the next) into one value under one of the keys, the others'
 * blocks then being aliases (codec_span_share, codec_span_alias). */
#define SPAN_GROUPS 4
typedef struct store_db_block {
    store_db_kind kind;
    int64_t period;
    uint64_t group;
    const void *data;
    size_t len;
    bool replaces;
    bool moves; /* STORE_DB_SPANS: a container moved out of a shared value to its own key;
                 * it replaces what that key held (the shared value, or an alias) and
                 * nothing else; len 0: only deletes */
} store_db_block;

/* One group commit, in one write transaction: the new series (series, into the index and the
 * reverse index), the label postings of the series in post (new ones or series persisted
 * earlier: storage/writer.c spreads a cold start's postings over several commits) and the
 * WAL records (sequence seq). A seal's end (wal_before given) packs the index and postings:
 * every series persisted until then must be in post or posted before. When blocks are given (a
 * seal), they are stored (each after any block already under its period and group); every WAL
 * record of a period before wal_before with a sequence up to wal_seq_max is deleted, or, with
 * wal_delete_max > 0, records until that many bytes are deleted, *wal_more then saying
 * whether some are left for later transactions (set false on entry when given); blocks of
 * periods before drop_before are deleted (retention), and rollups of periods before
 * drop_rollups_before. Errors: IOCD_ENOSPC, IOCD_EIO. */
iocd_err store_db_commit(store_db *db, const store_db_series *series, size_t n_series,
                         const store_db_series *post, size_t n_post, uint64_t seq,
                         const store_db_wal *wal, size_t n_wal, const store_db_block *blocks,
                         size_t n_blocks, int64_t wal_before, uint64_t wal_seq_max,
                         uint64_t wal_delete_max, bool *wal_more, int64_t drop_before,
                         int64_t drop_rollups_before);

/* Writes the label postings of every series not packed yet (created since the last seal's
 * end), in one transaction: a crash between a series' commit and its postings' leaves it
 * without them, and store_open calls this before anything reads. Postings already there
 * stay as they are. *n_out: the series looked at. */
iocd_err store_db_repost(store_db *db, size_t *n_out);

/* Closes db; first, when the file is at most max_bytes and at least a fifth of it is free
 * pages (left by the WAL and by retention), replaces it with a compacted copy (written,
 * synced, then renamed over it: a crash keeps the old file). max_bytes 0: never. Call only
 * once nothing else uses db. */
void store_db_close_compacting(store_db *db, const char *dir, uint64_t max_bytes);

/* Deletes series from the index, the reverse index and the postings, in one transaction.
 * Their samples in blocks become unreachable and leave the file with retention. */
iocd_err store_db_delete_series(store_db *db, const store_db_series *series, size_t n);

/* The block spans: every sealed block covers one chunk period; compaction merges a finished
 * span (a multiple of the chunk) into one STORE_DB_SPANS block per id group, and the span's
 * rollup parts into one part keyed by the span's start. A data file keeps the span length it
 * was first opened with (meta "span_ms"), since reads depend on it: span_ms applies to a new
 * file (an invalid one gives 1 h), `compact` says whether the writer compacts at all (off as
 * well when the file's span is not a multiple of chunk_ms). Call once after store_db_open. */
iocd_err store_db_set_spans(store_db *db, int64_t chunk_ms, int64_t span_ms, bool compact);
/* Whether the writer compacts (see store_db_set_spans). */
bool store_db_compacts(const store_db *db);
/* The start of the compaction span holding t (t itself when there is none). */
int64_t store_db_span_of(const store_db *db, int64_t t);
/* The span's length; 0: no compaction. */
int64_t store_db_span_ms(const store_db *db);

/* Calls fn for every block of id group `group` that covers time in [from, to] (from is a
 * period start), in write order for any timestamp: for STORE_DB_CHUNKS the compacted span
 * blocks of a span come before the chunk blocks of its periods (written after it), periods
 * ascend, then sequences. Rollup parts are read from the span holding `from` on. last_ms is
 * the last millisecond the block may hold. */
typedef iocd_err (*store_db_block_fn)(void *ud, int64_t period, int64_t last_ms, const void *data,
                                      size_t len);
iocd_err store_db_blocks(store_db *db, store_db_kind kind, uint64_t group, int64_t from, int64_t to,
                         store_db_block_fn fn, void *ud);
/* Whether id group `group` has a compacted block for the span starting at `span`. */
iocd_err store_db_span_compacted(store_db *db, int64_t span, uint64_t group, bool *yes);
/* The shared value (codec_span_share) holding the container of the SPAN_GROUPS id groups
 * from `first` in the span starting at `span`: its owner's key (span start, first group of
 * its container) and its parts (tags only: .data NULL); *n_parts 0 when the container is in
 * no shared value (or there is none). */
iocd_err store_db_span_owner(store_db *db, int64_t span, uint64_t first, int64_t *owner_span,
                             uint64_t *owner_first, codec_part *parts, size_t *n_parts);
/* Appends to out the latest value under the key of the container of the SPAN_GROUPS id groups
 * from `first` in the span starting at `span`. Errors: IOCD_ENOTFOUND. */
iocd_err store_db_span_value(store_db *db, int64_t span, uint64_t first, iocd_buf *out);
/* Whether any of the SPAN_GROUPS id groups from `first` has chunk blocks in the span. */
iocd_err store_db_span_chunked(store_db *db, int64_t span, uint64_t first, bool *yes);
/* Chunk blocks waiting for compaction: up to max distinct (span start, group) pairs whose
 * span ends at or before `before`, oldest span first. */
typedef struct store_span_group {
    int64_t span;
    uint64_t group;
} store_span_group;
iocd_err store_db_compactable(store_db *db, int64_t before, store_span_group *out, size_t max,
                              size_t *n_out);
/* Bytes the data file occupies (pages in use), the number of blocks (chunk and span blocks)
 * and of those the compacted span blocks. */
iocd_err store_db_stats(store_db *db, uint64_t *bytes_used, uint64_t *n_blocks,
                        uint64_t *n_span_blocks, uint64_t *wal_records);

/* Recovery: calls series_fn for every series (ascending id), then wal_fn for every WAL record
 * (ascending period, then sequence). */
typedef iocd_err (*store_db_series_fn)(void *ud, uint64_t id, const uint8_t *key, size_t len);
typedef iocd_err (*store_db_wal_fn)(void *ud, int64_t period, uint64_t seq, const uint8_t *rec,
                                    size_t len);
iocd_err store_db_load(store_db *db, store_db_series_fn series_fn, store_db_wal_fn wal_fn,
                       void *ud);

/* Reads (their own read transaction each). */
iocd_err store_db_postings(store_db *db, const char *name, const char *value, uint64_t **ids_out,
                           size_t *n_out);
iocd_err store_db_label_values(store_db *db, const char *name, char ***values_out, size_t *n_out);
iocd_err store_db_label_names(store_db *db, char ***names_out, size_t *n_out);
/* Records of the kv database, written (val NULL: deleted) and synced in one transaction; keys
 * are already "table \0 key". */
typedef struct store_db_kv {
    const void *key;
    size_t klen;
    const void *val;
    size_t vlen;
} store_db_kv;
iocd_err store_db_kv_write(store_db *db, const store_db_kv *ops, size_t n);
/* Every record whose key starts with prefix, in key order (fn gets the key after it). */
iocd_err store_db_kv_each(store_db *db, const void *prefix, size_t plen, store_kv_fn fn, void *ud);

/* ---- The store's internals (storage/store.c, writer.c, read.c) ------------------------- */

#define LATE_SEAL_NS  (30LL * 1000000000)
#define ZSTD_LEVEL    3
#define BLOCK_RAW_MAX (64u << 20)

/* A series' unsealed samples (storage/head.c): in-order samples as a compact stream
 * (delta-of-delta times, decimal-scaled value deltas: ~2-4 bytes a sample), and the few that
 * arrive out of order or rewrite a timestamp in a small sorted side list, which wins over
 * the stream for equal times. */
typedef struct store_head { /* ordered so that 100k of them waste no padding */
    uint8_t *buf;
    iocd_sample *ooo;                /* sorted, one per timestamp */
    int64_t last_t, last_dt, last_m; /* stream encoder state */
    int64_t newest;                  /* newest time ever put (kept across seals) */
    uint32_t len, cap;
    uint32_t n; /* samples in the stream */
    int16_t e;  /* current decimal exponent */
    bool has_newest;
    uint32_t n_ooo, cap_ooo;
} store_head;

iocd_err store_head_put(store_head *h, int64_t t, double v);
/* All samples, sorted, one per timestamp; *out is iocd_malloc'ed (never NULL on success). */
iocd_err store_head_decode(const store_head *h, iocd_sample **out, size_t *n_out);
/* Removes the samples before `before` and returns them (sorted) in *out (NULL when none). */
iocd_err store_head_take_before(store_head *h, int64_t before, iocd_sample **out, size_t *n_out);
size_t store_head_count(const store_head *h); /* samples held (stream + side list) */
size_t store_head_bytes(const store_head *h); /* memory held */
void store_head_free(store_head *h);

typedef struct store_series { /* one allocation with its key */
    uint64_t id;
    uint64_t hash;
    store_head head;
    /* Samples a seal has taken from the head and whose commit is not done yet: readers still
     * see them (st->mu), so a query never misses data during a seal. */
    iocd_sample *sealing;
    uint32_t n_sealing;
    uint32_t key_len;
    bool persisted;
    bool deleted;  /* out of the table and the index; kept until close (see the invariant) */
    uint8_t key[]; /* the canonical key */
} store_series;

/* Label postings a commit writes at most (a seal's end writes every one due, as it packs
 * them): at 1 microsecond a series, 10k new series cost an acknowledgement 10 ms. */
#define STORE_POST_STEP 1024

/* A commit's postings (st->mu held): the oldest queued series, then of the n_fresh series
 * this commit persists the first ones, up to limit in all (storage/posts.c). *out is NULL
 * when empty. Errors: IOCD_ENOMEM (nothing changed). */
iocd_err store_posts_take(store *st, size_t limit, const uint64_t *fresh, size_t n_fresh,
                          store_db_series **out, size_t *n_out, size_t *from_queue, size_t *direct);
/* After the commit of those postings (st->mu held): the fresh series not posted join the
 * queue, the counters move and readers waiting are woken. */
void store_posts_done(store *st, size_t from_queue, size_t direct, const uint64_t *fresh,
                      size_t n_fresh);

/* Waits until every series persisted before the call has its label postings written (a
 * cold start's are spread over a few commits), two seconds at most. Readers of postings
 * call it first, so a series is found as soon as its write was acknowledged. */
void store_wait_posted(store *st);

/* Sorts s by time keeping, for equal times, the sample latest in the list (blocks in the order
 * they were sealed, then the head: the last write wins); returns the new length. */
size_t store_samples_dedupe(iocd_sample *s, size_t n);

/* The head's samples merged with those being sealed, ascending, a head sample winning a tie.
 * Call with st->mu held; the caller frees *out. Errors: IOCD_ENOMEM. */
iocd_err store_series_samples(const store_series *s, iocd_sample **out, size_t *n_out);
/* The same, only those with lo <= t <= hi. */
iocd_err store_series_samples_in(const store_series *s, int64_t lo, int64_t hi, iocd_sample **out,
                                 size_t *n_out);

/* Sorts and merges closed spans in place (touching ones too, empty ones dropped); returns
 * the new count. */
size_t store_spans_merge(store_span *s, size_t n);
/* The first of the merged spans s that ends at or after t (n if none). */
size_t store_span_at(const store_span *s, size_t n, int64_t t);
/* Whether [lo, hi] meets one of the merged spans s. */
bool store_spans_meet(const store_span *s, size_t n, int64_t lo, int64_t hi);

/* The index of id in ids (ascending), or n when it is not there. */
size_t store_id_find(const uint64_t *ids, size_t n, uint64_t id);

typedef struct pending {
    store_done_fn done;
    void *ud;
    iocd_buf wal;         /* this batch's WAL entries */
    int64_t t_min, t_max; /* of those entries: all in one period, they go to its record whole */
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
    store_series **table;      /* open addressing by hash */
    size_t table_cap, n_series;
    store_series **by_id; /* index id - 1 */
    size_t by_id_cap;
    store_listen_fn listen; /* committed samples go here (rules); NULL: none */
    void *listen_ud;
    uint64_t next_id; /* above every id in use: a new id group starts here */
    /* Id allocation clusters series by metric name, so that a sealed block (one id group of
     * 64) holds one metric and a query reads only blocks of the metrics it wants. Per metric
     * (by hash): the next free id of its current group, 0 when it has none. */
    struct metric_slot {
        uint64_t hash, next;
    } * metric_slots;
    size_t metric_cap, n_metric_slots;
    uint64_t *unpersisted; /* ids created since the last successful commit, ascending */
    size_t n_unpersisted, cap_unpersisted;
    /* Series persisted (in the series index, so a restart finds them) whose label postings
     * are not written yet, oldest first in unposted[unposted_at, unposted_end): a commit
     * writes STORE_POST_STEP postings at most (a seal's end all), so a cold start's thousands of
     * new series do not hold one acknowledgement for all of theirs (storage/writer.c).
     * n_persisted and n_posted count series ever persisted and posted; a reader of postings
     * waits until n_posted reaches the n_persisted it saw (store_wait_posted), `posted` is
     * broadcast as it grows. post_retry_ns: after a failed commit of postings alone, the
     * writer tries again from then on. */
    uint64_t *unposted;
    size_t unposted_at, unposted_end, unposted_cap;
    uint64_t n_persisted, n_posted;
    pthread_cond_t posted;
    int64_t post_retry_ns;
    pending *queue, **queue_tail;
    bool closing;
    int64_t churn_window_start_ms;
    uint64_t churn_count;

    pthread_t writer, sealer;
    bool writer_started, sealer_started;
    bool writer_done;         /* the writer has stopped: the sealer's final seal may run (st->mu) */
    pthread_cond_t seal_wake; /* the sealer's (with st->mu) */
    /* A seal step waiting to ride in the writer's next group commit (st->mu; writer.c). */
    struct seal_handoff *handoff;
    uint64_t delete_epoch; /* series deletions so far (commit_mu) */
    uint64_t n_txns;       /* transactions committed (st->mu): the sealer drops mapped pages */
    uint64_t wal_seq;      /* writer thread only */
    int64_t last_sync_ns;
    int64_t watermark;     /* newest sample time accepted (st->mu) */
    int64_t sealed_before; /* periods before this are sealed (st->mu) */
    uint64_t n_late;       /* head samples in sealed periods, awaiting a patch block (st->mu) */
    /* No head sample is older than head_min (st->mu): a seal with nothing before its boundary
     * is skipped. arrived_min: the oldest sample put into a head since the seal began. */
    int64_t head_min, arrived_min;
    int64_t last_late_seal_ns;
    /* A seal in progress (sealer thread only): a few series per transaction (writer.c,
     * SEAL_IDS_*), so its memory stays small and the writer seldom waits long behind it. */
    int64_t seal_target; /* its boundary, or INT64_MIN: none */
    size_t seal_from;    /* the next series id to take */
    uint64_t seal_seq;   /* the WAL sequence when it began: later records stay */
    /* A finished seal's WAL records still to delete (sealer thread only): records of periods
     * before trim_before up to trim_seq, some megabytes per transaction. INT64_MIN: none. */
    int64_t trim_before;
    uint64_t trim_seq;
    /* Compaction of finished spans (sealer thread only): when set, chunk blocks may be
     * waiting; cleared when a look finds none. */
    bool compact_check;
    uint64_t compact_groups; /* compacted since the last log line, and how long it took */
    int64_t compact_ns;
    uint64_t wal_unknown; /* recovery: WAL entries of series no longer in the index */
    iocd_buf wal_scratch; /* recovery: one decompressed WAL record */
    store_cache *cache;   /* decoded sealed samples for queries (cfg.query_cache_bytes) */

    iocd_metric *m_series, *m_samples_head, *m_commits, *m_commit_fail, *m_commit_seconds,
        *m_commit_batches, *m_wal_bytes, *m_rejected[STORE_REJECT_COUNT_], *m_sealed_blocks,
        *m_sealed_samples, *m_sealed_bytes, *m_series_created, *m_compacted, *m_posts_waiting;
};

/* The series with this id, or NULL (unknown or deleted). Caller holds st->mu. */
store_series *store_series_get(const store *st, uint64_t id);
/* Inserts a sample in time order; an equal timestamp replaces. Caller holds st->mu. */
iocd_err store_series_put(store *st, store_series *s, int64_t t, double v);
/* The start of the period (block span) holding t. */
int64_t store_period_of(const store *st, int64_t t);
/* The writer and sealer threads (storage/writer.c); arg is the store. */
void *store_writer_main(void *arg);
void *store_sealer_main(void *arg);

#endif
