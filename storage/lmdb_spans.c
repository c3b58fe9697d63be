/* storage/lmdb_spans.c - the values of the span database that several containers share
 * (written by the stop's compaction, see storage/writer.c and codec_span_share): finding the
 * value that holds a container (its key's own, or an alias's owner), the parts of a shared
 * value, and when it may expire. A shared value holds every container whose key holds an
 * alias to it: the writer never leaves a part stale or an alias without its value. */
#include "storage/lmdb_int.h"

#include <string.h>

bool store_span_reaches_next(const MDB_val *v)
{
    codec_part parts[CODEC_SPAN_PARTS];
    size_t n = 0, i;

    if (!codec_span_is_shared(v->mv_data, v->mv_size) ||
        codec_span_parts(v->mv_data, v->mv_size, parts, CODEC_SPAN_PARTS, &n) != IOCD_OK)
        return false;
    for (i = 0; i < n && parts[i].span == 0; i++)
        ;
    return i < n;
}

/* The latest value under (period, container) in the span database; MDB_NOTFOUND: none. */
static int span_get(const store_db *db, MDB_txn *txn, int64_t period, uint64_t container,
                    MDB_val *v)
{
    MDB_cursor *cur = NULL;
    uint8_t key[20];
    MDB_val k;
    int rc;

    /* A compaction deletes what its key held before it writes, so the value is sequence 0. */
    store_block_key(key, period, container, 0);
    k = (MDB_val){ 20, key };
    rc = mdb_get(txn, db->spans, &k, v);
    if (rc != MDB_NOTFOUND)
        return rc;
    store_block_key(key, period, container, UINT32_MAX);
    k = (MDB_val){ 20, key };
    rc = mdb_cursor_open(txn, db->spans, &cur);
    if (rc == 0)
        rc = mdb_cursor_get(cur, &k, v, MDB_SET_RANGE);
    rc = rc == 0              ? mdb_cursor_get(cur, &k, v, MDB_PREV)
         : rc == MDB_NOTFOUND ? mdb_cursor_get(cur, &k, v, MDB_LAST)
                              : rc;
    if (rc == 0 && (k.mv_size != 20 || memcmp(k.mv_data, key, 16) != 0))
        rc = MDB_NOTFOUND;
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

int store_span_value(const store_db *db, MDB_txn *txn, int64_t period, uint64_t container,
                     MDB_val *v, unsigned *span_out)
{
    unsigned back, slot;

    *span_out = 0;
    if (!codec_span_alias_get(v->mv_data, v->mv_size, &back, &slot))
        return 0;
    if (back > 0 && (db->span_ms <= 0 || period < INT64_MIN + db->span_ms))
        return MDB_NOTFOUND;
    *span_out = back;
    /* No owner (not expected): nothing of the container. */
    return span_get(db, txn, period - (int64_t)back * db->span_ms,
                    (container & ~(uint64_t)3) | slot, v);
}

iocd_err store_db_span_owner(store_db *db, int64_t span, uint64_t first, int64_t *owner_span,
                             uint64_t *owner_first, codec_part *parts, size_t *n_parts)
{
    MDB_txn *txn = NULL;
    store_group_iter it;
    MDB_val v;
    unsigned back = 0;
    size_t i;
    int rc;

    *n_parts = 0;
    if (db->span_ms <= 0)
        return IOCD_OK;
    rc = store_span_open(db, span, first / SPAN_GROUPS, &txn, &it);
    v = it.v;
    if (rc == 0)
        rc = store_span_value(db, txn, span, it.group, &v, &back);
    if (rc == 0 && codec_span_is_shared(v.mv_data, v.mv_size)) {
        unsigned slot = (unsigned)(it.group & 3);
        codec_span_alias_get(it.v.mv_data, it.v.mv_size, &back, &slot);
        *owner_span = span - (int64_t)back * db->span_ms;
        *owner_first = ((it.group & ~(uint64_t)3) | slot) * SPAN_GROUPS;
        if (codec_span_parts(v.mv_data, v.mv_size, parts, CODEC_SPAN_PARTS, n_parts) != IOCD_OK)
            rc = MDB_CORRUPTED;
        for (i = 0; i < *n_parts; i++)
            parts[i].data = NULL; /* the transaction ends here */
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (it.cur != NULL)
        mdb_cursor_close(it.cur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    return store_mdb_err(rc);
}

iocd_err store_db_span_value(store_db *db, int64_t span, uint64_t first, iocd_buf *out)
{
    MDB_txn *txn = NULL;
    MDB_val v;
    iocd_err err = IOCD_OK;
    int rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);

    if (rc == 0)
        rc = span_get(db, txn, span, first / SPAN_GROUPS, &v);
    if (rc == 0)
        err = iocd_buf_append(out, v.mv_data, v.mv_size);
    if (txn != NULL)
        mdb_txn_abort(txn);
    return err != IOCD_OK ? err : store_mdb_err(rc);
}

iocd_err store_db_span_chunked(store_db *db, int64_t span, uint64_t first, bool *yes)
{
    MDB_txn *txn = NULL;
    store_group_iter it;
    uint64_t g;
    int rc;

    *yes = false;
    if (db->span_ms <= 0 || span > INT64_MAX - db->span_ms)
        return IOCD_OK;
    memset(&it, 0, sizeof(it));
    rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_cursor_open(txn, db->chunks, &it.cur);
    for (g = 0; rc == 0 && !*yes && g < SPAN_GROUPS; g++) {
        it.group = first + g;
        it.p = span;
        it.to = span + db->span_ms - 1;
        rc = store_group_seek(&it);
        *yes = rc == 0;
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    if (it.cur != NULL)
        mdb_cursor_close(it.cur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    return store_mdb_err(rc);
}
