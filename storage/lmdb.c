/* storage/lmdb.c - the LMDB environment behind the store; the only file that sees <lmdb.h>.
 * One environment, DIR/iocd.mdb (MDB_NOSUBDIR, so the data is one file plus LMDB's lock
 * file), opened MDB_NOTLS because HTTP worker threads share read transactions.
 * The "meta" database holds the format marker: a file without it is not ours, and we refuse
 * to write into it. */
#define _DEFAULT_SOURCE /* madvise */
#include "storage/lmdb_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define FORMAT_KEY     "format"
#define FORMAT_VERSION "iocd-store-6"
#define DEFAULT_MAP    (256ULL << 30) /* address space only: the file grows as data is written */
#define MAX_DBS        32

/* Older formats, upgraded on open: -1 (before the packed series index), -2 (before compacted
 * span blocks: its chunk blocks are simply compacted by the writer later), -3 (before the
 * packed postings: its postings are read as they are until a seal packs them), -4 (before
 * two spans could share a value: its containers are read as they are; the marker keeps an
 * older iocd from misreading a shared one), -5 (before value predictors in sample streams:
 * its streams are the predictor-0 ones; the marker keeps an older iocd from misreading a new
 * stream). */
static const char *const format_prev[] = { "iocd-store-1", "iocd-store-2", "iocd-store-3",
                                           "iocd-store-4", "iocd-store-5" };
/* The last of them, which `iocd check` reads as it is (nothing to upgrade in its data). */
#define FORMAT_READABLE "iocd-store-5"

static MDB_dbi kind_dbi(const store_db *db, store_db_kind kind)
{
    return kind == STORE_DB_ROLLUP_5M   ? db->rollup_5m
           : kind == STORE_DB_ROLLUP_1H ? db->rollup_1h
           : kind == STORE_DB_SPANS     ? db->spans
                                        : db->chunks;
}

iocd_err store_mdb_err(int rc)
{
    switch (rc) {
    case 0:
        return IOCD_OK;
    case MDB_NOTFOUND:
        return IOCD_ENOTFOUND;
    case MDB_MAP_FULL:
        return IOCD_ENOSPC;
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
        return IOCD_ECORRUPT;
    case ENOMEM:
        return IOCD_ENOMEM;
    default:
        return rc > 0 ? iocd_err_from_errno(rc) : IOCD_EIO;
    }
}

static bool is_marker(const MDB_val *v, const char *marker)
{
    return v->mv_size == strlen(marker) && memcmp(v->mv_data, marker, v->mv_size) == 0;
}

/* Checks the marker, writing it into a fresh file; *upgrade: an older format that open_dbs
 * upgrades. */
static iocd_err check_format(store_db *db, const char *path, bool *upgrade, char *errbuf,
                             size_t errlen)
{
    MDB_txn *txn = NULL;
    MDB_val k = { sizeof(FORMAT_KEY) - 1, (void *)FORMAT_KEY }, v;
    MDB_stat st;
    iocd_err err = IOCD_OK;
    int rc;

    rc = mdb_txn_begin(db->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_stat(txn, 0, &st); /* the main DB lists named DBs */
    if (rc != 0) {
        err = store_mdb_err(rc);
        snprintf(errbuf, errlen, "%s: %s", path, mdb_strerror(rc));
        goto out;
    }
    rc = mdb_dbi_open(txn, "meta", st.ms_entries == 0 ? MDB_CREATE : 0, &db->meta);
    if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE) {
        err = IOCD_ECORRUPT;
        snprintf(errbuf, errlen, "%s is not an iocd data file (no format marker)", path);
        goto out;
    }
    if (rc == 0) {
        rc = mdb_get(txn, db->meta, &k, &v);
        for (size_t i = 0; rc == 0 && !*upgrade && i < IOCD_ARRAY_LEN(format_prev); i++)
            if (is_marker(&v, format_prev[i])) {
                /* Its series_by_id and postings are read as they are: open_dbs drops the old
                 * hash index, creates the span database, moves the odd long posting key and
                 * writes the marker. */
                log_info("store", "upgrading the data file", "from=%s to=%s", format_prev[i],
                         FORMAT_VERSION);
                *upgrade = true;
            }
        if (*upgrade)
            goto out;
        if (rc == MDB_NOTFOUND && st.ms_entries == 0) {
            v.mv_size = sizeof(FORMAT_VERSION) - 1;
            v.mv_data = (void *)FORMAT_VERSION;
            rc = mdb_put(txn, db->meta, &k, &v, 0);
            if (rc == 0) {
                rc = mdb_txn_commit(txn);
                txn = NULL;
            }
        } else if (rc == 0 && !is_marker(&v, FORMAT_VERSION)) {
            err = IOCD_ECORRUPT;
            snprintf(errbuf, errlen, "%s has format \"%.*s\"; this iocd reads \"%s\"", path,
                     (int)(v.mv_size < 64 ? v.mv_size : 64), (const char *)v.mv_data,
                     FORMAT_VERSION);
            goto out;
        }
    }
    if (rc != 0) {
        err = rc == MDB_NOTFOUND ? IOCD_ECORRUPT : store_mdb_err(rc);
        snprintf(errbuf, errlen, "%s: %s", path,
                 rc == MDB_NOTFOUND ? "not an iocd data file (no format marker)"
                                    : mdb_strerror(rc));
    }
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    return err;
}

static iocd_err open_dbs(store_db *db, bool upgrade, char *errbuf, size_t errlen)
{
    static const struct {
        const char *name;
        unsigned flags;
        size_t off;
    } dbs[] = {
        { "meta", 0, offsetof(store_db, meta) },
        { "series_by_id", 0, offsetof(store_db, series_by_id) },
        { "series_packed", 0, offsetof(store_db, series_packed) },
        { "postings", MDB_DUPSORT | MDB_DUPFIXED, offsetof(store_db, postings) },
        { "postings_packed", 0, offsetof(store_db, postings_packed) },
        { "wal", 0, offsetof(store_db, wal) },
        { "chunks", 0, offsetof(store_db, chunks) },
        { "spans", 0, offsetof(store_db, spans) },
        { "rollup_5m", 0, offsetof(store_db, rollup_5m) },
        { "rollup_1h", 0, offsetof(store_db, rollup_1h) },
        { "kv", 0, offsetof(store_db, kv) },
    };
    MDB_txn *txn = NULL;
    size_t i;
    int rc;

    rc = mdb_txn_begin(db->env, NULL, 0, &txn);
    for (i = 0; rc == 0 && i < IOCD_ARRAY_LEN(dbs); i++)
        rc = mdb_dbi_open(txn, dbs[i].name, dbs[i].flags | MDB_CREATE,
                          (MDB_dbi *)(void *)((char *)db + dbs[i].off));
    if (rc == 0) {
        /* Stores written before the packed index had a hash -> id database that nothing
         * reads (the series table is rebuilt in memory at open): reclaim its pages. */
        MDB_dbi old;
        rc = mdb_dbi_open(txn, "series", 0, &old);
        rc = rc == 0 ? mdb_drop(txn, old, 1) : rc == MDB_NOTFOUND ? 0 : rc;
    }
    if (rc == 0 && upgrade) {
        MDB_val k = { sizeof(FORMAT_KEY) - 1, (void *)FORMAT_KEY },
                v = { sizeof(FORMAT_VERSION) - 1, (void *)FORMAT_VERSION };
        rc = store_post_upgrade(db, txn);
        if (rc == 0)
            rc = mdb_put(txn, db->meta, &k, &v, 0); /* in the same transaction: all or none */
    }
    if (rc == 0) {
        rc = mdb_txn_commit(txn);
        txn = NULL;
    }
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (rc != 0) {
        snprintf(errbuf, errlen, "opening databases: %s", mdb_strerror(rc));
        return store_mdb_err(rc);
    }
    return IOCD_OK;
}

/* LMDB reports a short write as EIO; tell a full disk (or a file-size limit) from a failing
 * one, since only the first is expected to heal by itself. */
static bool out_of_space(store_db *db)
{
    const char *path = NULL;
    struct statvfs vfs;
    struct rlimit rl;
    struct stat st;

    if (mdb_env_get_path(db->env, &path) != 0 || path == NULL)
        return false;
    if (statvfs(path, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < (64u << 20))
        return true;
    return getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
           stat(path, &st) == 0 && (uint64_t)st.st_size + (16u << 20) >= (uint64_t)rl.rlim_cur;
}

void store_block_key(uint8_t *key, int64_t period, uint64_t group, uint32_t seq)
{
    be_time(key, period);
    be64(key + 8, group);
    key[16] = (uint8_t)(seq >> 24);
    key[17] = (uint8_t)(seq >> 16);
    key[18] = (uint8_t)(seq >> 8);
    key[19] = (uint8_t)seq;
}

/* Deletes every block of `group` with a period in [from, to]. */
static int del_group_range(MDB_txn *txn, MDB_dbi dbi, uint64_t group, int64_t from, int64_t to)
{
    MDB_cursor *cur = NULL;
    uint8_t key[20];
    MDB_val k, v;
    int64_t p = from;
    int rc = mdb_cursor_open(txn, dbi, &cur);

    while (rc == 0 && p <= to) {
        int64_t kp;
        store_block_key(key, p, group, 0);
        k = (MDB_val){ 20, key };
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc != 0 || k.mv_size != 20)
            break;
        kp = get_be_time(k.mv_data);
        if (kp > to)
            break;
        if (get_be64((const uint8_t *)k.mv_data + 8) == group) {
            rc = mdb_cursor_del(cur, 0);
            p = kp;
        } else if (kp > p) {
            p = kp; /* look for the group in this later period */
        } else {
            if (kp == INT64_MAX)
                break;
            p = kp + 1; /* past the group in this period */
        }
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

iocd_err store_db_commit(store_db *db, const store_db_series *series, size_t n_series,
                         const store_db_series *post, size_t n_post, uint64_t seq,
                         const store_db_wal *wal, size_t n_wal, const store_db_block *blocks,
                         size_t n_blocks, int64_t wal_before, uint64_t wal_seq_max,
                         uint64_t wal_delete_max, bool *wal_more, int64_t drop_before,
                         int64_t drop_rollups_before)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    uint8_t idb[8], key[20];
    uint64_t wal_deleted = 0;
    MDB_val k, v;
    size_t i, read = 0; /* bytes of the file this transaction read (store_db_read_some) */
    int rc;

    if (wal_more != NULL)
        *wal_more = false;
    rc = mdb_txn_begin(db->env, NULL, 0, &txn);
    if (rc == 0 && n_series > 0)
        rc = mdb_cursor_open(txn, db->series_by_id, &cur); /* appends without a search each */
    for (i = 0; rc == 0 && i < n_series; i++) {
        be64(idb, series[i].id);
        k = (MDB_val){ 8, idb };
        v = (MDB_val){ series[i].key_len, (void *)series[i].key };
        rc = mdb_cursor_put(cur, &k, &v, MDB_APPEND);
        if (rc == MDB_KEYEXIST)
            rc = mdb_cursor_put(cur, &k, &v, 0);
    }
    if (cur != NULL) {
        mdb_cursor_close(cur);
        cur = NULL;
    }
    if (rc == 0 && n_post > 0)
        rc = store_post_add_many(db, txn, post, n_post);
    for (i = 0; rc == 0 && i < n_wal; i++) {
        if (wal[i].len == 0)
            continue;
        be_time(key, wal[i].period);
        be64(key + 8, seq);
        k = (MDB_val){ 16, key };
        v = (MDB_val){ wal[i].len, (void *)wal[i].data };
        rc = mdb_put(txn, db->wal, &k, &v, 0);
    }
    for (i = 0; rc == 0 && i < n_blocks; i++) {
        uint32_t next = 0;
        MDB_val fk, fv;
        uint64_t kgroup =
            blocks[i].kind == STORE_DB_SPANS ? blocks[i].group / SPAN_GROUPS : blocks[i].group;
        if (blocks[i].moves && db->span_ms > 0) {
            /* A container moved out of a shared value: it takes its key's place, nothing
             * else (its span's chunk blocks are not in it). */
            if (cur != NULL) {
                mdb_cursor_close(cur);
                cur = NULL;
            }
            rc = del_group_range(txn, db->spans, kgroup, blocks[i].period, blocks[i].period);
            if (rc != 0)
                break;
            if (blocks[i].len == 0)
                continue;
        } else if (blocks[i].replaces && db->span_ms > 0) {
            /* Compaction: the block holds every sample (or part) of its groups' span. */
            int64_t last = blocks[i].period + db->span_ms - 1;
            uint64_t g;
            if (cur != NULL) {
                mdb_cursor_close(cur);
                cur = NULL;
            }
            rc = del_group_range(txn, kind_dbi(db, blocks[i].kind), kgroup, blocks[i].period, last);
            for (g = 0; rc == 0 && blocks[i].kind == STORE_DB_SPANS && g < SPAN_GROUPS; g++) {
                rc = del_group_range(txn, db->chunks, blocks[i].group + g, blocks[i].period, last);
                if (rc == 0)
                    rc = del_group_range(txn, db->rollup_5m, blocks[i].group + g, blocks[i].period,
                                         last);
                if (rc == 0)
                    rc = del_group_range(txn, db->rollup_1h, blocks[i].group + g, blocks[i].period,
                                         last);
            }
            if (rc != 0)
                break;
            if (blocks[i].len == 0)
                continue; /* nothing left to keep: the deletes were the whole change */
        }
        be_time(key, blocks[i].period);
        be64(key + 8, kgroup);
        memset(key + 16, 0xff, 4);
        /* The next sequence under (period, group): one past the last one stored. */
        if (cur != NULL && (i == 0 || blocks[i].kind != blocks[i - 1].kind)) {
            mdb_cursor_close(cur);
            cur = NULL;
        }
        if (cur == NULL)
            rc = mdb_cursor_open(txn, kind_dbi(db, blocks[i].kind), &cur);
        if (rc == 0) {
            fk = (MDB_val){ 20, key };
            int r2 = mdb_cursor_get(cur, &fk, &fv, MDB_SET_RANGE);
            if (r2 == 0)
                r2 = mdb_cursor_get(cur, &fk, &fv, MDB_PREV);
            else if (r2 == MDB_NOTFOUND)
                r2 = mdb_cursor_get(cur, &fk, &fv, MDB_LAST);
            if (r2 == 0 && fk.mv_size == 20 && memcmp(fk.mv_data, key, 16) == 0) {
                const uint8_t *q = fk.mv_data;
                next =
                    ((uint32_t)q[16] << 24 | (uint32_t)q[17] << 16 | (uint32_t)q[18] << 8 | q[19]) +
                    1;
            }
        }
        key[16] = (uint8_t)(next >> 24);
        key[17] = (uint8_t)(next >> 16);
        key[18] = (uint8_t)(next >> 8);
        key[19] = (uint8_t)next;
        k = (MDB_val){ 20, key };
        v = (MDB_val){ blocks[i].len, (void *)blocks[i].data };
        if (rc == 0)
            rc = mdb_put(txn, kind_dbi(db, blocks[i].kind), &k, &v, 0);
    }
    if (cur != NULL) {
        mdb_cursor_close(cur);
        cur = NULL;
    }
    /* A completed seal packs the postings created since the last one (lmdb_postings.c). */
    if (rc == 0 && wal_before != INT64_MIN)
        rc = store_post_pack(db, txn);
    /* A completed seal also packs the series created since the last one. */
    if (rc == 0 && wal_before != INT64_MIN)
        rc = store_spack_pack(db, txn);
    /* Sealed periods leave the WAL; expired periods leave the data file. A key of the span
     * database, or a rollup part, may cover a whole span from its key on: it goes once all
     * of that span has expired (a period's part, some minutes later than it could). */
    for (i = 0; rc == 0 && i < 5; i++) {
        MDB_dbi dbi = i == 0   ? db->wal
                      : i == 1 ? db->chunks
                      : i == 2 ? db->spans
                      : i == 3 ? db->rollup_5m
                               : db->rollup_1h;
        int64_t before = i == 0 ? wal_before : i <= 2 ? drop_before : drop_rollups_before;
        if (before == INT64_MIN)
            continue;
        if (i >= 2 && db->span_ms > 0) {
            if (before < INT64_MIN + db->span_ms)
                continue;
            before -= db->span_ms - 1;
        }
        rc = mdb_cursor_open(txn, dbi, &cur);
        if (rc == 0 && i == 0) {
            /* WAL records of sealed periods, up to wal_seq_max: later ones may hold samples
             * that reached their heads after the seal passed them, so they stay. */
            MDB_cursor_op op = MDB_FIRST;
            while (rc == 0 && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0 && k.mv_size >= 16 &&
                   get_be_time(k.mv_data) < before) {
                op = MDB_NEXT; /* after a delete, MDB_NEXT returns the record that followed */
                if (get_be64((const uint8_t *)k.mv_data + 8) > wal_seq_max)
                    continue;
                if (wal_more != NULL && wal_delete_max > 0 && wal_deleted >= wal_delete_max) {
                    *wal_more = true; /* the rest in the next transactions */
                    break;
                }
                wal_deleted += v.mv_size;
                rc = mdb_cursor_del(cur, 0); /* reads the record's first page */
                store_db_read_some(db, &read, v.mv_size < 65536 ? v.mv_size : 65536);
            }
        } else if (i == 2) {
            /* A value shared with the next span goes once that has expired too. */
            MDB_cursor_op op = MDB_FIRST;
            while (rc == 0 && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0 && k.mv_size >= 8 &&
                   get_be_time(k.mv_data) < before) {
                op = MDB_NEXT;
                if (!store_span_reaches_next(&v) || (before >= INT64_MIN + db->span_ms &&
                                                     get_be_time(k.mv_data) < before - db->span_ms))
                    rc = mdb_cursor_del(cur, 0);
            }
        } else {
            while (rc == 0 && (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0 &&
                   k.mv_size >= 8 && get_be_time(k.mv_data) < before)
                rc = mdb_cursor_del(cur, 0);
        }
        if (rc == MDB_NOTFOUND)
            rc = 0;
        mdb_cursor_close(cur);
        cur = NULL;
    }
    if (rc == 0) {
        rc = mdb_txn_commit(txn);
        txn = NULL;
    }
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (rc != 0)
        log_warn("store", "commit failed", "lmdb=%s", mdb_strerror(rc));
    if (rc == EIO && out_of_space(db))
        return IOCD_ENOSPC;
    return store_mdb_err(rc);
}

#define SPAN_KEY     "span_ms"
#define SPAN_DEFAULT (60LL * 60000)

iocd_err store_db_set_spans(store_db *db, int64_t chunk_ms, int64_t span_ms, bool compact)
{
    MDB_txn *txn = NULL;
    MDB_val k = { sizeof(SPAN_KEY) - 1, (void *)SPAN_KEY }, v;
    uint8_t buf[8];
    int64_t file_span = 0;
    int rc;

    db->chunk_ms = chunk_ms;
    if (span_ms <= chunk_ms || chunk_ms <= 0 || span_ms % chunk_ms != 0)
        span_ms = SPAN_DEFAULT;
    /* The meta handle is opened here again and kept by the commit (check_format's may have
     * gone with its transaction). */
    rc = mdb_txn_begin(db->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", 0, &db->meta);
    if (rc == 0)
        rc = mdb_get(txn, db->meta, &k, &v);
    if (rc == 0 && v.mv_size == 8) {
        file_span = (int64_t)get_be64(v.mv_data);
    } else if (rc == MDB_NOTFOUND) {
        file_span = span_ms;
        be64(buf, (uint64_t)file_span);
        v = (MDB_val){ 8, buf };
        rc = mdb_put(txn, db->meta, &k, &v, 0);
    } else if (rc == 0) {
        rc = MDB_CORRUPTED;
    }
    if (rc == 0) {
        rc = mdb_txn_commit(txn);
        txn = NULL;
    }
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (rc != 0)
        return store_mdb_err(rc);
    if (file_span <= 0) /* never written by this code; kept readable */
        return IOCD_ECORRUPT;
    db->span_ms = file_span;
    db->compacts = compact && file_span > chunk_ms && file_span % chunk_ms == 0;
    if (compact && file_span != span_ms)
        log_warn("store",
                 "the data file keeps its block span; the configured one applies to new files",
                 "file_span_ms=%lld configured_ms=%lld", (long long)file_span, (long long)span_ms);
    if (compact && !db->compacts)
        log_info("store",
                 "blocks not compacted: the chunk is as long as the file's block span or does not "
                 "divide it",
                 "file_span_ms=%lld chunk_ms=%lld", (long long)file_span, (long long)chunk_ms);
    return IOCD_OK;
}

bool store_db_compacts(const store_db *db)
{
    return db->compacts;
}

int64_t store_db_span_ms(const store_db *db)
{
    return db->span_ms;
}

static int64_t floor_to(int64_t t, int64_t len)
{
    int64_t r = t % len;

    if (r < 0)
        r += len;
    return t - r;
}

int64_t store_db_span_of(const store_db *db, int64_t t)
{
    if (db->span_ms <= 0 || t == INT64_MIN)
        return t;
    return floor_to(t, db->span_ms);
}

/* Positions it at the group's first block with a period in [it->p, it->to]. */
int store_group_seek(store_group_iter *it)
{
    uint8_t key[20];

    for (;;) {
        uint64_t kg;
        if (it->p > it->to)
            return MDB_NOTFOUND;
        store_block_key(key, it->p, it->group, 0);
        it->k = (MDB_val){ 20, key };
        int rc = mdb_cursor_get(it->cur, &it->k, &it->v, MDB_SET_RANGE);
        if (rc != 0)
            return rc;
        if (it->k.mv_size != 20)
            return MDB_CORRUPTED;
        it->kp = get_be_time(it->k.mv_data);
        kg = get_be64((const uint8_t *)it->k.mv_data + 8);
        if (it->kp > it->to)
            return MDB_NOTFOUND;
        if (kg == it->group)
            return 0;
        if (it->kp > it->p) {
            it->p = it->kp; /* look for the group in this later period */
        } else {
            if (it->kp == INT64_MAX)
                return MDB_NOTFOUND;
            it->p = it->kp + 1; /* past the group in this period */
        }
    }
}

/* The next block: a later sequence of the same period, or the next period's first. */
static int group_next(store_group_iter *it)
{
    int rc = mdb_cursor_get(it->cur, &it->k, &it->v, MDB_NEXT);

    if (rc == 0 && it->k.mv_size == 20 && get_be_time(it->k.mv_data) == it->kp &&
        get_be64((const uint8_t *)it->k.mv_data + 8) == it->group)
        return 0;
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    if (it->kp == INT64_MAX)
        return MDB_NOTFOUND;
    it->p = it->kp + 1;
    return store_group_seek(it);
}

static int64_t last_of(int64_t period, int64_t len)
{
    return period > INT64_MAX - len ? INT64_MAX : period + len - 1;
}

/* The container of the span the walk is at (see span_value). */
static iocd_err span_part(const store_db *db, MDB_txn *txn, const store_group_iter *a,
                          const void **part, size_t *plen)
{
    MDB_val v = a->v;
    unsigned span;
    int rc = store_span_value(db, txn, a->kp, a->group, &v, &span);

    if (rc != 0)
        return store_mdb_err(rc);
    return codec_span_part(v.mv_data, v.mv_size, span, (unsigned)(a->group & 3), part, plen);
}

iocd_err store_db_blocks(store_db *db, store_db_kind kind, uint64_t group, int64_t from, int64_t to,
                         store_db_block_fn fn, void *ud)
{
    MDB_txn *txn = NULL;
    store_group_iter a, b; /* span blocks (or rollup parts), then chunk blocks */
    int ra = MDB_NOTFOUND, rb = MDB_NOTFOUND, rc;
    bool spans = db->span_ms > 0;
    iocd_err err = IOCD_OK;

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);
    /* Compacted spans first: any chunk block or rollup part of their span came after them. */
    if (rc == 0 && spans) {
        rc = mdb_cursor_open(txn, db->spans, &a.cur);
        a.group = group / SPAN_GROUPS;
        a.p = store_db_span_of(db, from);
        a.to = to;
        ra = rc == 0 ? store_group_seek(&a) : rc;
    }
    if (rc == 0)
        rc = mdb_cursor_open(txn, kind_dbi(db, kind), &b.cur);
    /* A rollup part keyed by a span's start (late samples for a compacted span) holds the
     * whole span. */
    b.p = kind == STORE_DB_CHUNKS || !spans ? from : store_db_span_of(db, from);
    b.group = group;
    b.to = to;
    if (rc == 0)
        rb = store_group_seek(&b);
    if (ra != 0 && ra != MDB_NOTFOUND)
        rc = ra;
    if (rb != 0 && rb != MDB_NOTFOUND)
        rc = rb;
    while (rc == 0 && err == IOCD_OK && (ra == 0 || rb == 0)) {
        if (ra == 0 && (rb != 0 || a.kp <= b.kp)) {
            const void *frame = NULL, *part = NULL;
            size_t flen = 0, plen = 0;
            err = span_part(db, txn, &a, &part, &plen);
            if (err == IOCD_OK)
                err = codec_span_find(part, plen, (unsigned)(group % SPAN_GROUPS), (unsigned)kind,
                                      &frame, &flen);
            if (err == IOCD_OK)
                err = fn(ud, a.kp, last_of(a.kp, db->span_ms), frame, flen);
            else if (err == IOCD_ENOTFOUND)
                err = IOCD_OK; /* the group had nothing in the span */
            ra = group_next(&a);
        } else {
            int64_t len = kind == STORE_DB_CHUNKS || !spans || b.kp != store_db_span_of(db, b.kp)
                              ? db->chunk_ms
                              : db->span_ms;
            err = fn(ud, b.kp, last_of(b.kp, len > 0 ? len : 1), b.v.mv_data, b.v.mv_size);
            rb = group_next(&b);
        }
        if (ra != 0 && ra != MDB_NOTFOUND)
            rc = ra;
        if (rb != 0 && rb != MDB_NOTFOUND)
            rc = rb;
    }
    if (a.cur != NULL)
        mdb_cursor_close(a.cur);
    if (b.cur != NULL)
        mdb_cursor_close(b.cur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    return err != IOCD_OK ? err : store_mdb_err(rc);
}

int store_span_open(store_db *db, int64_t span, uint64_t container, MDB_txn **txn,
                    store_group_iter *it)
{
    int rc;

    *txn = NULL;
    memset(it, 0, sizeof(*it));
    rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, txn);
    if (rc == 0)
        rc = mdb_cursor_open(*txn, db->spans, &it->cur);
    if (rc == 0) {
        it->group = container;
        it->p = span;
        it->to = span;
        rc = store_group_seek(it);
    }
    return rc;
}

iocd_err store_db_span_compacted(store_db *db, int64_t span, uint64_t group, bool *yes)
{
    MDB_txn *txn = NULL;
    store_group_iter it;
    int rc;

    *yes = false;
    if (db->span_ms <= 0)
        return IOCD_OK;
    rc = store_span_open(db, span, group / SPAN_GROUPS, &txn, &it);
    *yes = rc == 0;
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (it.cur != NULL)
        mdb_cursor_close(it.cur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    return store_mdb_err(rc);
}

iocd_err store_db_compactable(store_db *db, int64_t before, store_span_group *out, size_t max,
                              size_t *n_out)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    size_t n = 0, i;
    int64_t span = INT64_MIN;
    int rc;

    *n_out = 0;
    if (!db->compacts || max == 0)
        return IOCD_OK;
    rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_cursor_open(txn, db->chunks, &cur);
    /* Chunk blocks are few (a span or two of them, and late patches): walk from the oldest,
     * taking the groups of the oldest span that has any. */
    for (rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_FIRST) : rc; rc == 0 && n < max;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        int64_t s;
        uint64_t g;
        if (k.mv_size != 20) {
            rc = MDB_CORRUPTED;
            break;
        }
        s = store_db_span_of(db, get_be_time(k.mv_data));
        if (s > before - db->span_ms || (span != INT64_MIN && s != span))
            break;
        span = s;
        g = get_be64((const uint8_t *)k.mv_data + 8);
        g -= g % SPAN_GROUPS; /* a container's first group */
        for (i = 0; i < n && out[i].group != g; i++)
            ;
        if (i == n)
            out[n++] = (store_span_group){ s, g };
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (cur != NULL)
        mdb_cursor_close(cur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    *n_out = n;
    return store_mdb_err(rc);
}

iocd_err store_db_stats(store_db *db, uint64_t *bytes_used, uint64_t *n_blocks,
                        uint64_t *n_span_blocks, uint64_t *wal_records)
{
    MDB_txn *txn = NULL;
    MDB_envinfo info;
    MDB_stat st, cs, ss, ws;
    int rc;

    rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_env_info(db->env, &info);
    if (rc == 0)
        rc = mdb_env_stat(db->env, &st);
    if (rc == 0)
        rc = mdb_stat(txn, db->chunks, &cs);
    if (rc == 0)
        rc = mdb_stat(txn, db->spans, &ss);
    if (rc == 0)
        rc = mdb_stat(txn, db->wal, &ws);
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (rc != 0)
        return store_mdb_err(rc);
    *bytes_used = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
    *n_blocks = cs.ms_entries + ss.ms_entries;
    *n_span_blocks = ss.ms_entries;
    *wal_records = ws.ms_entries;
    return IOCD_OK;
}

iocd_err store_db_load(store_db *db, store_db_series_fn series_fn, store_db_wal_fn wal_fn, void *ud)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    iocd_err err = IOCD_OK;
    int rc;

    rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = store_spack_each(db, txn, series_fn, ud, &err);
    if (rc == 0 && err == IOCD_OK)
        rc = mdb_cursor_open(txn, db->wal, &cur);
    if (cur != NULL) {
        for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && err == IOCD_OK;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (k.mv_size != 16u) {
                err = IOCD_ECORRUPT;
                break;
            }
            err = wal_fn(ud, get_be_time(k.mv_data), get_be64((const uint8_t *)k.mv_data + 8),
                         v.mv_data, v.mv_size);
        }
        mdb_cursor_close(cur);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    if (txn != NULL)
        mdb_txn_abort(txn);
    return err != IOCD_OK ? err : store_mdb_err(rc);
}

iocd_err store_db_kv_write(store_db *db, const store_db_kv *ops, size_t n)
{
    MDB_txn *txn = NULL;
    size_t i;
    int rc;

    for (i = 0; i < n; i++)
        if (ops[i].klen == 0 || ops[i].klen > 500)
            return IOCD_EINVAL;
    rc = mdb_txn_begin(db->env, NULL, 0, &txn);
    for (i = 0; rc == 0 && i < n; i++) {
        MDB_val k = { ops[i].klen, (void *)ops[i].key }, v = { ops[i].vlen, (void *)ops[i].val };
        if (ops[i].val == NULL) {
            rc = mdb_del(txn, db->kv, &k, NULL);
            if (rc == MDB_NOTFOUND)
                rc = 0;
        } else {
            rc = mdb_put(txn, db->kv, &k, &v, 0);
        }
    }
    if (rc == 0) {
        rc = mdb_txn_commit(txn);
        txn = NULL;
    }
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (rc == 0)
        rc = mdb_env_sync(db->env, 1); /* durable on return, whatever the sync window */
    return rc == 0 ? IOCD_OK : store_mdb_err(rc);
}

iocd_err store_db_kv_each(store_db *db, const void *prefix, size_t plen, store_kv_fn fn, void *ud)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k = { plen, (void *)prefix }, v;
    iocd_err err = IOCD_OK;
    int rc;

    rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_cursor_open(txn, db->kv, &cur);
    if (rc == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && err == IOCD_OK) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
            break;
        err = fn(ud, (const char *)k.mv_data + plen, k.mv_size - plen, v.mv_data, v.mv_size);
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (cur != NULL)
        mdb_cursor_close(cur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (err != IOCD_OK)
        return err;
    return rc == 0 || rc == MDB_NOTFOUND ? IOCD_OK : store_mdb_err(rc);
}

/* LMDB tells where it mapped the file only with MDB_FIXEDMAP: the mapping of the file's
 * inode with the map's size is found in /proc/self/maps (Linux). */
static void find_map(store_db *db, const char *path)
{
    MDB_envinfo info;
    struct stat sb;
    char line[512];
    FILE *f;

    if (stat(path, &sb) != 0 || mdb_env_info(db->env, &info) != 0)
        return;
    f = fopen("/proc/self/maps", "r");
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long long lo, hi, inode;
        char perms[8];
        if (sscanf(line, "%llx-%llx %7s %*s %*s %llu", &lo, &hi, perms, &inode) == 4 &&
            inode == (unsigned long long)sb.st_ino && hi - lo == info.me_mapsize) {
            db->map = (void *)(uintptr_t)lo;
            db->map_len = (size_t)(hi - lo);
            break;
        }
    }
    fclose(f);
}

iocd_err store_db_open(const char *dir, uint64_t map_size, bool nosync, store_db **out,
                       char *errbuf, size_t errlen)
{
    char path[4200];
    store_db *db = NULL;
    iocd_err err = IOCD_OK;
    bool upgrade = false;
    int rc;

    snprintf(path, sizeof(path), "%s/iocd.mdb", dir);
    db = iocd_calloc(1, sizeof(*db));
    if (db == NULL)
        return IOCD_ENOMEM;
    rc = mdb_env_create(&db->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(db->env, MAX_DBS);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(db->env, 256);
    if (rc == 0)
        rc = mdb_env_set_mapsize(db->env, map_size != 0 ? map_size : DEFAULT_MAP);
    if (rc == 0)
        rc = mdb_env_open(db->env, path,
                          MDB_NOSUBDIR | MDB_NOTLS | MDB_NORDAHEAD | (nosync ? MDB_NOSYNC : 0),
                          0640);
    if (rc != 0) {
        err = store_mdb_err(rc);
        snprintf(errbuf, errlen, "%s: %s", path, mdb_strerror(rc));
        goto out;
    }
    find_map(db, path);
    err = check_format(db, path, &upgrade, errbuf, errlen);
    if (err == IOCD_OK)
        err = open_dbs(db, upgrade, errbuf, errlen);
    if (err != IOCD_OK)
        goto out;
    *out = db;
    db = NULL;
out:
    store_db_close(db);
    return err;
}

void store_db_drop_mapped(store_db *db)
{
    MDB_envinfo info;
    MDB_stat stat;
    size_t len;

    if (db->map == NULL || mdb_env_info(db->env, &info) != 0 || mdb_env_stat(db->env, &stat) != 0)
        return;
    len = ((size_t)info.me_last_pgno + 1) * stat.ms_psize;
    if (len > db->map_len)
        len = db->map_len;
    /* A read-only shared mapping of the file (no MDB_WRITEMAP): its pages stay in the page
     * cache, and a later read faults them back in. The map is never moved after open. */
    (void)madvise(db->map, len, MADV_DONTNEED);
}

iocd_err store_db_sync(store_db *db)
{
    return store_mdb_err(mdb_env_sync(db->env, 1));
}

void store_db_close(store_db *db)
{
    if (db == NULL)
        return;
    if (db->env != NULL)
        mdb_env_close(db->env);
    iocd_free(db);
}

/* Pages in use and free pages of the file (free: left by deleted WAL records and blocks). */
static int page_counts(store_db *db, uint64_t *used, uint64_t *free_pages, size_t *psize)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_envinfo info;
    MDB_stat st;
    MDB_val k, v;
    int rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);

    *free_pages = 0;
    if (rc == 0)
        rc = mdb_env_info(db->env, &info);
    if (rc == 0)
        rc = mdb_env_stat(db->env, &st);
    if (rc == 0)
        rc = mdb_cursor_open(txn, 0, &cur); /* dbi 0: LMDB's list of free pages */
    while (rc == 0 && (rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0)
        if (v.mv_size >= sizeof(size_t))
            *free_pages += *(const size_t *)v.mv_data; /* each record: a count, then pages */
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (cur != NULL)
        mdb_cursor_close(cur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (rc == 0) {
        *used = (uint64_t)info.me_last_pgno + 1;
        *psize = st.ms_psize;
    }
    return rc;
}

void store_db_close_compacting(store_db *db, const char *dir, uint64_t max_bytes)
{
    uint64_t used = 0, free_pages = 0;
    size_t psize = 4096;
    char path[4200], tmp[4220];
    int64_t t0 = iocd_mono_ns();
    int rc, fd;

    if (db == NULL)
        return;
    if (max_bytes == 0 || page_counts(db, &used, &free_pages, &psize) != 0 ||
        used * psize > max_bytes || free_pages * 5 < used) { /* under a fifth free: keep it */
        store_db_close(db);
        return;
    }
    snprintf(path, sizeof(path), "%s/iocd.mdb", dir);
    snprintf(tmp, sizeof(tmp), "%s/iocd.mdb.compacting", dir);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    rc = fd < 0 ? errno : mdb_env_copyfd2(db->env, fd, MDB_CP_COMPACT);
    if (rc == 0 && fsync(fd) != 0)
        rc = errno;
    if (fd >= 0)
        close(fd);
    store_db_close(db); /* nothing writes it any more: the copy is the whole store */
    if (rc == 0 && rename(tmp, path) != 0)
        rc = errno;
    if (rc == 0) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd); /* the rename itself is durable */
            close(dfd);
        }
        log_info(
            "store", "data file compacted at stop", "dir=%s before_mb=%.1f after_mb=%.1f ms=%.0f",
            dir, (double)(used * psize) / 1048576.0,
            (double)((used - free_pages) * psize) / 1048576.0, (double)(iocd_mono_ns() - t0) / 1e6);
    } else {
        unlink(tmp);
        log_warn("store", "compaction at stop failed; the data file is unchanged", "dir=%s err=%s",
                 dir, mdb_strerror(rc));
    }
}

/* ---- Tools: backup and check -------------------------------------------------------------- */

/* Opens an existing data file read-only, alongside a daemon that may be writing it. */
static iocd_err open_readonly(const char *dir, store_db *db, char *errbuf, size_t errlen)
{
    char path[4200];
    MDB_txn *txn = NULL;
    struct stat st;
    bool current;
    int rc;

    snprintf(path, sizeof(path), "%s/iocd.mdb", dir);
    if (stat(path, &st) != 0) {
        snprintf(errbuf, errlen, "%s: no iocd data file here", path);
        return IOCD_ENOTFOUND;
    }
    rc = mdb_env_create(&db->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(db->env, MAX_DBS);
    if (rc == 0)
        rc = mdb_env_set_mapsize(db->env, DEFAULT_MAP);
    if (rc == 0)
        rc = mdb_env_open(db->env, path, MDB_NOSUBDIR | MDB_NOTLS | MDB_RDONLY, 0640);
    if (rc == 0)
        rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", 0, &db->meta);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "series_by_id", 0, &db->series_by_id);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "series_packed", 0, &db->series_packed);
    /* The databases of the current format: an older file lacks them until serve upgrades it. */
    current = rc == 0;
    if (rc == 0)
        rc = mdb_dbi_open(txn, "postings_packed", 0, &db->postings_packed);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "spans", 0, &db->spans);
    if (current && rc == MDB_NOTFOUND) {
        snprintf(errbuf, errlen,
                 "%s: written by an older iocd; start `iocd serve` on it once to upgrade it", path);
        mdb_txn_abort(txn);
        mdb_env_close(db->env);
        db->env = NULL;
        return IOCD_EINVAL;
    }
    if (rc == 0)
        rc = mdb_dbi_open(txn, "postings", MDB_DUPSORT | MDB_DUPFIXED, &db->postings);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "wal", 0, &db->wal);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "chunks", 0, &db->chunks);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "rollup_5m", 0, &db->rollup_5m);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "rollup_1h", 0, &db->rollup_1h);
    if (txn != NULL)
        mdb_txn_commit(txn); /* keeps the dbi handles for later transactions */
    if (rc != 0) {
        snprintf(errbuf, errlen, "%s: %s", path,
                 rc == MDB_NOTFOUND ? "not an iocd data file" : mdb_strerror(rc));
        if (db->env != NULL)
            mdb_env_close(db->env);
        db->env = NULL;
        return rc == MDB_NOTFOUND ? IOCD_ECORRUPT : store_mdb_err(rc);
    }
    return IOCD_OK;
}

iocd_err store_backup(const char *dir, const char *dest_dir, char *errbuf, size_t errlen)
{
    store_db db;
    char dest[4200];
    struct stat st;
    iocd_err err;
    int rc, fd;

    memset(&db, 0, sizeof(db));
    snprintf(dest, sizeof(dest), "%s/iocd.mdb", dest_dir);
    if (stat(dest, &st) == 0) {
        snprintf(errbuf, errlen, "%s already exists; refusing to overwrite it", dest);
        return IOCD_EEXIST;
    }
    if (mkdir(dest_dir, 0750) != 0 && errno != EEXIST) {
        snprintf(errbuf, errlen, "%s: %s", dest_dir, strerror(errno));
        return iocd_err_from_errno(errno);
    }
    err = open_readonly(dir, &db, errbuf, errlen);
    if (err != IOCD_OK)
        return err;
    fd = open(dest, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(errbuf, errlen, "%s: %s", dest, strerror(errno));
        mdb_env_close(db.env);
        return iocd_err_from_errno(errno);
    }
    rc = mdb_env_copyfd2(db.env, fd, MDB_CP_COMPACT);
    if (rc == 0 && fsync(fd) != 0)
        rc = errno;
    close(fd);
    mdb_env_close(db.env);
    if (rc != 0) {
        snprintf(errbuf, errlen, "copying to %s: %s", dest, mdb_strerror(rc));
        unlink(dest);
        return store_mdb_err(rc);
    }
    return IOCD_OK;
}

typedef struct check_ctx {
    store_report_fn fn;
    void *ud;
    uint64_t problems;
    uint64_t *ids; /* every series id seen, for the postings' check */
    size_t n_ids, cap_ids;
    uint64_t max_id;
} check_ctx;

static void problem(check_ctx *c, const char *fmt, ...) IOCD_PRINTF(2, 3);

static void problem(check_ctx *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->problems++;
    c->fn(c->ud, msg);
}

/* A problem found by the postings' check (storage/lmdb_postings.c). */
static void post_problem(void *ud, const char *msg)
{
    problem(ud, "%s", msg);
}

static iocd_err count_label(void *ud, const char *name, size_t name_len, const char *value,
                            size_t value_len)
{
    (void)name;
    (void)name_len;
    (void)value;
    (void)value_len;
    ++*(size_t *)ud;
    return IOCD_OK;
}

/* One series of the index: a valid key (its postings are checked later). */
static iocd_err check_series(void *ud, uint64_t id, const uint8_t *key, size_t len)
{
    check_ctx *c = ud;
    size_t n_labels = 0;

    if (c->n_ids == c->cap_ids) {
        size_t cap = c->cap_ids != 0 ? c->cap_ids * 2 : 1024;
        uint64_t *g = iocd_realloc(c->ids, cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        c->ids = g;
        c->cap_ids = cap;
    }
    c->ids[c->n_ids++] = id;
    if (id > c->max_id)
        c->max_id = id;
    if (id == 0 || store_key_walk(key, len, count_label, &n_labels) != IOCD_OK || n_labels == 0)
        problem(c, "series %llu: malformed series key", (unsigned long long)id);
    return IOCD_OK;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

typedef struct check_block {
    check_ctx *c;
    uint64_t max_id, group, samples;
    uint64_t first; /* a span container's first group */
} check_block;

static void check_id(check_block *cb, uint64_t id)
{
    if (id >> 6 != cb->group || id == 0 || id > cb->max_id)
        problem(cb->c, "block of group %llu holds series %llu", (unsigned long long)cb->group,
                (unsigned long long)id);
}

static iocd_err check_series_in_block(void *ud, uint64_t id, const iocd_sample *s, size_t n)
{
    check_block *cb = ud;

    (void)s;
    cb->samples += n;
    check_id(cb, id);
    return IOCD_OK;
}

static iocd_err check_rollup_series(void *ud, uint64_t id, const store_rollup *r, size_t n)
{
    (void)r;
    (void)n;
    check_id(ud, id);
    return IOCD_OK;
}

/* One frame of a span container: a block or a rollup block of group first + f->group. */
static iocd_err check_frame(void *ud, const codec_frame *f)
{
    check_block *cb = ud;

    cb->group = cb->first + f->group;
    if (f->group >= SPAN_GROUPS)
        return IOCD_ECORRUPT;
    if (f->kind == STORE_DB_CHUNKS)
        return codec_block_each(f->data, f->len, BLOCK_RAW_MAX, check_series_in_block, cb);
    if (f->kind == STORE_DB_ROLLUP_5M || f->kind == STORE_DB_ROLLUP_1H)
        return codec_rollup_select(f->data, f->len, BLOCK_RAW_MAX,
                                   f->kind == STORE_DB_ROLLUP_5M ? STORE_ROLLUP_5M
                                                                 : STORE_ROLLUP_1H,
                                   NULL, 0, check_rollup_series, cb);
    return IOCD_ECORRUPT;
}

iocd_err store_check(const char *dir, store_report_fn fn, void *ud, uint64_t *problems_out,
                     char *errbuf, size_t errlen)
{
    store_db db;
    check_ctx c;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint64_t max_id = 0, n_series = 0, n_postings = 0, n_unposted = 0, n_wal = 0, n_samples = 0,
             n_blocks = 0, n_block_samples = 0;
    iocd_buf scratch;
    iocd_err err;
    int rc;

    memset(&db, 0, sizeof(db));
    err = open_readonly(dir, &db, errbuf, errlen);
    if (err != IOCD_OK)
        return err;
    memset(&c, 0, sizeof(c));
    iocd_buf_init(&scratch, 0);
    c.fn = fn;
    c.ud = ud;
    rc = mdb_txn_begin(db.env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        goto out;
    k = (MDB_val){ sizeof(FORMAT_KEY) - 1, (void *)FORMAT_KEY };
    if (mdb_get(txn, db.meta, &k, &v) != 0 ||
        (!is_marker(&v, FORMAT_VERSION) && !is_marker(&v, FORMAT_READABLE)))
        problem(&c, "format marker missing or unknown");
    k = (MDB_val){ sizeof(SPAN_KEY) - 1, (void *)SPAN_KEY };
    if (mdb_get(txn, db.meta, &k, &v) == 0 && v.mv_size == 8)
        db.span_ms = (int64_t)get_be64(v.mv_data); /* to find the value an alias names */
    /* Every series: a valid key, under one id. */
    rc = store_spack_each(&db, txn, check_series, &c, &err);
    if (rc == MDB_CORRUPTED) {
        problem(&c, "series index: a packed group does not decode");
        rc = 0;
    }
    if (rc != 0 || err != IOCD_OK)
        goto out;
    n_series = c.n_ids;
    max_id = c.max_id;
    iocd_qsort(c.ids, c.n_ids, sizeof(*c.ids), u64_cmp);
    for (size_t i = 1; i < c.n_ids; i++)
        if (c.ids[i] == c.ids[i - 1])
            problem(&c, "series %llu: indexed twice", (unsigned long long)c.ids[i]);
    /* Every posting names an existing series, every label of a series has its posting. */
    rc = store_post_check(&db, txn, c.ids, c.n_ids, post_problem, &c, &n_postings, &n_unposted);
    if (rc != 0)
        goto out;
    /* Every WAL record decodes and names known series. */
    rc = mdb_cursor_open(txn, db.wal, &cur);
    for (rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_FIRST) : rc; rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const uint8_t *p = NULL, *end;
        size_t elen = 0;
        uint64_t id;
        int64_t t;
        double val;
        bool corrupt = false;
        n_wal++;
        if (codec_wal_unpack(v.mv_data, v.mv_size, &scratch, &p, &elen) != IOCD_OK) {
            problem(&c, "wal record %llu does not decode",
                    (unsigned long long)get_be64((const uint8_t *)k.mv_data + 8));
            continue;
        }
        end = p + elen;
        while (store_wal_next(&p, end, &id, &t, &val, &corrupt)) {
            n_samples++;
            if (id == 0 || id > max_id) {
                problem(&c, "wal record %llu: unknown series %llu",
                        (unsigned long long)get_be64((const uint8_t *)k.mv_data + 8),
                        (unsigned long long)id);
                break;
            }
        }
        if (corrupt)
            problem(&c, "wal record %llu does not decode",
                    (unsigned long long)get_be64((const uint8_t *)k.mv_data + 8));
    }
    if (rc != MDB_NOTFOUND)
        goto out;
    mdb_cursor_close(cur);
    cur = NULL;
    /* Every block decodes, and every series in it is known: chunk blocks, and the blocks and
     * rollup blocks in span containers. */
    for (int pass = 0; pass < 2 && (pass == 0 || rc == MDB_NOTFOUND); pass++) {
        if (cur != NULL)
            mdb_cursor_close(cur);
        cur = NULL;
        rc = mdb_cursor_open(txn, pass == 0 ? db.chunks : db.spans, &cur);
        for (rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_FIRST) : rc; rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            check_block cb = { &c, max_id, 0, 0, 0 };
            iocd_err be;
            n_blocks++;
            if (k.mv_size != 20) {
                problem(&c, "block key of %zu bytes", k.mv_size);
                continue;
            }
            cb.group = get_be64((const uint8_t *)k.mv_data + 8);
            if (pass == 0) {
                be = codec_block_each(v.mv_data, v.mv_size, BLOCK_RAW_MAX, check_series_in_block,
                                      &cb);
            } else {
                codec_part parts[CODEC_SPAN_PARTS];
                uint64_t container = cb.group;
                unsigned back, slot;
                size_t n_parts = 0;
                cb.first = container * SPAN_GROUPS;
                if (codec_span_alias_get(v.mv_data, v.mv_size, &back, &slot)) {
                    /* Its container is checked in its owner's value, which must hold it. */
                    MDB_val ov = v;
                    const void *part;
                    size_t plen;
                    unsigned span;
                    be = IOCD_OK;
                    if (store_span_value(&db, txn, get_be_time(k.mv_data), container, &ov, &span) !=
                            0 ||
                        codec_span_part(ov.mv_data, ov.mv_size, span, (unsigned)(container & 3),
                                        &part, &plen) != IOCD_OK)
                        problem(&c, "span alias (period %lld, container %llu) names no value",
                                (long long)get_be_time(k.mv_data), (unsigned long long)container);
                } else if (!codec_span_is_shared(v.mv_data, v.mv_size)) {
                    be = codec_span_each(v.mv_data, v.mv_size, check_frame, &cb);
                } else {
                    be = codec_span_parts(v.mv_data, v.mv_size, parts, CODEC_SPAN_PARTS, &n_parts);
                    for (size_t p = 0; be == IOCD_OK && p < n_parts; p++) {
                        cb.first = ((container & ~(uint64_t)3) | parts[p].slot) * SPAN_GROUPS;
                        be = codec_span_each(parts[p].data, parts[p].len, check_frame, &cb);
                    }
                }
            }
            if (be != IOCD_OK)
                problem(&c, "%s (period %lld, group %llu) does not decode: %s",
                        pass == 0 ? "block" : "span container", (long long)get_be_time(k.mv_data),
                        (unsigned long long)cb.group, iocd_strerror(be));
            n_block_samples += cb.samples;
        }
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
out:
    if (cur != NULL)
        mdb_cursor_close(cur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    mdb_env_close(db.env);
    iocd_buf_fini(&scratch);
    iocd_free(c.ids);
    if (err != IOCD_OK) {
        snprintf(errbuf, errlen, "%s/iocd.mdb: %s", dir, iocd_strerror(err));
        return err;
    }
    if (rc != 0) {
        snprintf(errbuf, errlen, "%s/iocd.mdb: %s", dir, mdb_strerror(rc));
        return store_mdb_err(rc);
    }
    if (n_unposted > 0)
        log_info("store",
                 "series without their postings yet (a crash after their commit); "
                 "iocd adds them when it opens the store",
                 "series=%llu", (unsigned long long)n_unposted);
    log_info("store", "check finished",
             "series=%llu postings=%llu wal_records=%llu wal_samples=%llu blocks=%llu "
             "block_samples=%llu problems=%llu",
             (unsigned long long)n_series, (unsigned long long)n_postings,
             (unsigned long long)n_wal, (unsigned long long)n_samples, (unsigned long long)n_blocks,
             (unsigned long long)n_block_samples, (unsigned long long)c.problems);
    *problems_out = c.problems;
    return IOCD_OK;
}
