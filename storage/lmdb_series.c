/* storage/lmdb_series.c - the packed series index. series_by_id holds one record per series
 * (id -> canonical key), ~150 bytes on disk each with LMDB's node and page overhead: at 360
 * samples per series that alone was 0.41 bytes per sample. Series ids come in groups of 64
 * that share a metric, so once a seal completes their keys move into one record per group,
 * keyed by the group's first id: a format byte and, zstd-compressed, entries
 * `u8 offset in the group, varint key length, key`, offsets ascending. */
#include "storage/lmdb_int.h"

#include <errno.h>
#include <string.h>

#define PACK_LEVEL   6 /* off the hot path: once per seal, for the series created since */
#define GROUP_OF(id) ((id) & ~(uint64_t)63)

typedef struct pack_entry {
    unsigned off;
    const uint8_t *key;
    size_t len;
} pack_entry;

/* Walks a group's raw entries: *p advances; false at the end or on a malformed entry
 * (*bad set). */
static bool entry_next(const uint8_t **p, const uint8_t *end, int *last_off, pack_entry *e,
                       bool *bad)
{
    uint64_t len;

    *bad = false;
    if (*p == end)
        return false;
    e->off = **p;
    (*p)++;
    if ((int)e->off <= *last_off || e->off > 63 || !store_varint_get(p, end, &len) || len == 0 ||
        len > (uint64_t)(end - *p)) {
        *bad = true;
        return false;
    }
    e->key = *p;
    e->len = (size_t)len;
    *p += len;
    *last_off = (int)e->off;
    return true;
}

static iocd_err entry_put(iocd_buf *raw, unsigned off, const uint8_t *key, size_t len)
{
    uint8_t head[11];
    size_t n;
    iocd_err err;

    head[0] = (uint8_t)off;
    n = 1 + store_varint_put(head + 1, len);
    err = iocd_buf_append(raw, head, n);
    return err == IOCD_OK ? iocd_buf_append(raw, key, len) : err;
}

/* The raw entries of group's record (pointing into scratch or the map); *len 0 and
 * MDB_NOTFOUND when the group has none. */
static int group_read(store_db *db, MDB_txn *txn, uint64_t group, iocd_buf *scratch,
                      const uint8_t **raw, size_t *len)
{
    uint8_t kb[8];
    MDB_val k = { 8, kb }, v;
    int rc;

    be64(kb, group);
    *raw = NULL;
    *len = 0;
    rc = mdb_get(txn, db->series_packed, &k, &v);
    if (rc != 0)
        return rc;
    return codec_wal_unpack(v.mv_data, v.mv_size, scratch, raw, len) == IOCD_OK ? 0 : MDB_CORRUPTED;
}

/* Whether key (8 bytes) comes after every key of the packed index: new groups are, and
 * appending them fills leaf pages (a put in order splits each full page in half, leaving the
 * index's ~700-byte records four to a page where five fit). */
static bool is_last(store_db *db, MDB_txn *txn, const uint8_t *key)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, db->series_packed, &cur);

    if (rc == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND || (rc == 0 && k.mv_size == 8 && memcmp(key, k.mv_data, 8) > 0);
}

/* Writes group's record from raw entries (deleting it when there are none). */
static int group_write(store_db *db, MDB_txn *txn, uint64_t group, const iocd_buf *raw)
{
    uint8_t kb[8];
    MDB_val k = { 8, kb }, v;
    iocd_buf packed;
    int rc;

    be64(kb, group);
    if (raw->len == 0) {
        rc = mdb_del(txn, db->series_packed, &k, NULL);
        return rc == MDB_NOTFOUND ? 0 : rc;
    }
    iocd_buf_init(&packed, 0);
    if (codec_pack(raw->data, raw->len, PACK_LEVEL, &packed) != IOCD_OK) {
        iocd_buf_fini(&packed);
        return ENOMEM;
    }
    v = (MDB_val){ packed.len, packed.data };
    rc = mdb_put(txn, db->series_packed, &k, &v, is_last(db, txn, kb) ? MDB_APPEND : 0);
    iocd_buf_fini(&packed);
    return rc;
}

/* Merges the group's packed entries with fresh ones (raw entries, offsets ascending; a
 * fresh entry replaces a packed one with the same offset) and writes the record. */
static int group_merge(store_db *db, MDB_txn *txn, uint64_t group, const iocd_buf *fresh,
                       iocd_buf *scratch, iocd_buf *out)
{
    const uint8_t *old = NULL, *op, *oend, *fp, *fend;
    size_t old_len = 0;
    int olast = -1, flast = -1, rc;
    pack_entry oe, fe;
    bool ohave, fhave, bad = false;
    iocd_err err = IOCD_OK;

    rc = group_read(db, txn, group, scratch, &old, &old_len);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    iocd_buf_reset(out);
    op = old;
    oend = old != NULL ? old + old_len : NULL; /* NULL + 0 is undefined */
    fp = (const uint8_t *)fresh->data;
    fend = fp != NULL ? fp + fresh->len : NULL;
    ohave = old_len > 0 && entry_next(&op, oend, &olast, &oe, &bad);
    if (bad)
        return MDB_CORRUPTED;
    fhave = entry_next(&fp, fend, &flast, &fe, &bad);
    while (!bad && err == IOCD_OK && (ohave || fhave)) {
        if (fhave && (!ohave || fe.off <= oe.off)) {
            err = entry_put(out, fe.off, fe.key, fe.len);
            if (ohave && oe.off == fe.off)
                ohave = entry_next(&op, oend, &olast, &oe, &bad);
            if (!bad)
                fhave = entry_next(&fp, fend, &flast, &fe, &bad);
        } else {
            err = entry_put(out, oe.off, oe.key, oe.len);
            ohave = entry_next(&op, oend, &olast, &oe, &bad);
        }
    }
    if (bad)
        return MDB_CORRUPTED;
    if (err != IOCD_OK)
        return ENOMEM;
    return group_write(db, txn, group, out);
}

int store_spack_pack(store_db *db, MDB_txn *txn)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    iocd_buf fresh, scratch, out;
    uint64_t group = 0, id;
    size_t read = 0; /* bytes of the file read (store_db_read_some) */
    bool any = false;
    int rc;

    iocd_buf_init(&fresh, 0);
    iocd_buf_init(&scratch, 0);
    iocd_buf_init(&out, 0);
    rc = mdb_cursor_open(txn, db->series_by_id, &cur);
    for (rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_FIRST) : rc; rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8 || v.mv_size == 0) {
            rc = MDB_CORRUPTED;
            break;
        }
        id = get_be64(k.mv_data);
        if (any && GROUP_OF(id) != group) {
            rc = group_merge(db, txn, group, &fresh, &scratch, &out);
            iocd_buf_reset(&fresh);
            if (rc != 0)
                break;
        }
        group = GROUP_OF(id);
        any = true;
        store_db_read_some(db, &read, 8 + v.mv_size);
        if (entry_put(&fresh, (unsigned)(id - group), v.mv_data, v.mv_size) != IOCD_OK) {
            rc = ENOMEM;
            break;
        }
    }
    if (cur != NULL)
        mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND) {
        rc = any ? group_merge(db, txn, group, &fresh, &scratch, &out) : 0;
        if (rc == 0 && any)
            rc = mdb_drop(txn, db->series_by_id, 0); /* empties it, keeps the database */
        if (any)
            store_db_drop_mapped(db);
    }
    iocd_buf_fini(&fresh);
    iocd_buf_fini(&scratch);
    iocd_buf_fini(&out);
    return rc;
}

int store_spack_get(store_db *db, MDB_txn *txn, uint64_t id, iocd_buf *scratch, const uint8_t **key,
                    size_t *len)
{
    uint8_t kb[8];
    MDB_val k = { 8, kb }, v;
    const uint8_t *raw, *p, *end;
    size_t raw_len;
    int last = -1, rc;
    pack_entry e;
    bool bad = false;

    be64(kb, id);
    rc = mdb_get(txn, db->series_by_id, &k, &v);
    if (rc == 0) {
        *key = v.mv_data;
        *len = v.mv_size;
        return 0;
    }
    if (rc != MDB_NOTFOUND)
        return rc;
    rc = group_read(db, txn, GROUP_OF(id), scratch, &raw, &raw_len);
    if (rc != 0)
        return rc;
    p = raw;
    end = raw + raw_len;
    while (entry_next(&p, end, &last, &e, &bad))
        if (e.off == id - GROUP_OF(id)) {
            *key = e.key;
            *len = e.len;
            return 0;
        }
    return bad ? MDB_CORRUPTED : MDB_NOTFOUND;
}

/* Pass 0 walks the packed groups, pass 1 the series not packed yet. */
static int spack_walk(store_db *db, MDB_txn *txn, int from_pass, store_spack_fn fn, void *ud,
                      iocd_err *err)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    iocd_buf scratch;
    int rc, pass;

    *err = IOCD_OK;
    iocd_buf_init(&scratch, 0);
    for (pass = from_pass, rc = 0; rc == 0 && *err == IOCD_OK && pass < 2; pass++) {
        rc = mdb_cursor_open(txn, pass == 0 ? db->series_packed : db->series_by_id, &cur);
        for (rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_FIRST) : rc; rc == 0 && *err == IOCD_OK;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            uint64_t first;
            const uint8_t *raw, *p, *end;
            size_t raw_len;
            int last = -1;
            pack_entry e;
            bool bad = false;
            if (k.mv_size != 8) {
                rc = MDB_CORRUPTED;
                break;
            }
            first = get_be64(k.mv_data);
            if (pass == 1) {
                *err = fn(ud, first, v.mv_data, v.mv_size);
                continue;
            }
            if (first != GROUP_OF(first) ||
                codec_wal_unpack(v.mv_data, v.mv_size, &scratch, &raw, &raw_len) != IOCD_OK) {
                rc = MDB_CORRUPTED;
                break;
            }
            p = raw;
            end = raw + raw_len;
            while (*err == IOCD_OK && entry_next(&p, end, &last, &e, &bad))
                *err = fn(ud, first + e.off, e.key, e.len);
            if (bad) {
                rc = MDB_CORRUPTED;
                break;
            }
        }
        if (cur != NULL)
            mdb_cursor_close(cur);
        cur = NULL;
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    iocd_buf_fini(&scratch);
    return rc;
}

int store_spack_each(store_db *db, MDB_txn *txn, store_spack_fn fn, void *ud, iocd_err *err)
{
    return spack_walk(db, txn, 0, fn, ud, err);
}

int store_spack_unpacked_each(store_db *db, MDB_txn *txn, store_spack_fn fn, void *ud,
                              iocd_err *err)
{
    return spack_walk(db, txn, 1, fn, ud, err);
}

static int id_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

int store_spack_del(store_db *db, MDB_txn *txn, const uint64_t *ids_in, size_t n)
{
    uint8_t kb[8];
    MDB_val k = { 8, kb };
    iocd_buf scratch, out;
    uint64_t *ids;
    size_t i = 0;
    int rc = 0;

    if (n == 0)
        return 0;
    ids = iocd_malloc(n * sizeof(*ids));
    if (ids == NULL)
        return ENOMEM;
    memcpy(ids, ids_in, n * sizeof(*ids));
    iocd_qsort(ids, n, sizeof(*ids), id_cmp);
    iocd_buf_init(&scratch, 0);
    iocd_buf_init(&out, 0);
    while (rc == 0 && i < n) {
        uint64_t group = GROUP_OF(ids[i]), gone = 0; /* bit per offset deleted from the pack */
        const uint8_t *raw, *p, *end;
        size_t raw_len;
        int last = -1;
        pack_entry e;
        bool bad = false;
        for (; rc == 0 && i < n && GROUP_OF(ids[i]) == group; i++) {
            be64(kb, ids[i]);
            rc = mdb_del(txn, db->series_by_id, &k, NULL);
            if (rc == MDB_NOTFOUND) {
                gone |= 1ULL << (ids[i] - group);
                rc = 0;
            }
        }
        if (rc != 0 || gone == 0)
            continue;
        rc = group_read(db, txn, group, &scratch, &raw, &raw_len);
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            continue;
        }
        iocd_buf_reset(&out);
        p = raw;
        end = raw + raw_len;
        while (rc == 0 && entry_next(&p, end, &last, &e, &bad))
            if (!(gone >> e.off & 1) && entry_put(&out, e.off, e.key, e.len) != IOCD_OK)
                rc = ENOMEM;
        if (rc == 0 && bad)
            rc = MDB_CORRUPTED;
        if (rc == 0)
            rc = group_write(db, txn, group, &out);
    }
    iocd_free(ids);
    iocd_buf_fini(&scratch);
    iocd_buf_fini(&out);
    return rc;
}
