/* storage/lmdb_postings.c - the label postings: "name=value" -> the ids of the series that
 * carry the label, in two halves that every reader unions. A new series' postings go to
 * `postings` (dupsort, dupfixed: one 8-byte big-endian id per record), cheap to add in a group
 * commit but ~25 bytes on disk per id with LMDB's overhead. When a seal completes they move
 * into `postings_packed`: one record per label and id segment (id >> SEG_SHIFT), keyed
 * "name=value" and the segment (4 bytes, big-endian); its value is a format byte and the
 * segment's ids ascending as varints (the first as its offset in the segment, then deltas).
 * Segments keep a label that every series has from becoming one huge value to rewrite.
 * At open, the postings of the series not packed yet are written again where a crash left
 * them missing (store_db_repost). */
#include "storage/lmdb_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A key is at most POSTING_KEY_MAX bytes ("name=value"; with the segment under LMDB's 511):
 * a longer value keeps POSTING_VAL_KEEP of its bytes (fewer after a long name) and a hash.
 * A packed record larger than a leaf page takes overflow pages of its own, whole pages:
 * only those are compressed (with their key, over LEAF_MAX bytes on 4 KiB pages). */
#define POSTING_KEY_MAX  480
#define POSTING_VAL_KEEP 400
#define POSTING_NAME_MAX 200 /* names are capped well below this by the limits */
#define HASH_LEN         17  /* '#' and 16 hex digits */
#define SEG_SHIFT        16
#define SEG_LEN          4
#define SEG_MAX          0xffffffffULL
#define KEY_BUF          (POSTING_KEY_MAX + SEG_LEN)
#define FMT_DELTAS       0 /* a packed record's format byte: the varints as they are */
#define FMT_ZSTD         1 /* zstd-compressed (codec_pack's tags) */
#define LEAF_MAX         2000
#define ZSTD_LVL         3

/* ---- Keys --------------------------------------------------------------------------------- */

/* How many bytes of a long value a key keeps, so that the key is at most POSTING_KEY_MAX.
 * Files before iocd-store-4 kept 400 whatever the name's length (store_post_upgrade). */
static size_t value_keep(size_t name_len)
{
    return name_len + 1 + POSTING_VAL_KEEP + HASH_LEN <= POSTING_KEY_MAX
               ? POSTING_VAL_KEEP
               : POSTING_KEY_MAX - HASH_LEN - 1 - name_len;
}

/* "name=value" into out (KEY_BUF bytes), a long value shortened and made unique by a hash
 * of the whole. */
static size_t posting_key(const char *name, size_t name_len, const char *value, size_t value_len,
                          uint8_t *out)
{
    size_t n, keep;

    if (name_len > POSTING_NAME_MAX)
        name_len = POSTING_NAME_MAX;
    memcpy(out, name, name_len);
    n = name_len;
    out[n++] = '=';
    if (n + value_len <= POSTING_KEY_MAX) {
        memcpy(out + n, value, value_len);
        return n + value_len;
    }
    keep = value_keep(name_len);
    memcpy(out + n, value, keep);
    n += keep;
    n += (size_t)snprintf((char *)out + n, HASH_LEN + 1, "#%016llx",
                          (unsigned long long)store_hash(value, value_len));
    return n;
}

/* A packed record's key: the posting key, then the segment. */
static void seg_put(uint8_t *p, uint64_t seg)
{
    p[0] = (uint8_t)(seg >> 24);
    p[1] = (uint8_t)(seg >> 16);
    p[2] = (uint8_t)(seg >> 8);
    p[3] = (uint8_t)seg;
}

static uint64_t seg_get(const uint8_t *p)
{
    return (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | p[3];
}

/* LMDB's default order of keys: bytes, then the shorter first. */
static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);

    return c != 0 ? c : (alen > blen) - (alen < blen);
}

/* ---- Id lists ----------------------------------------------------------------------------- */

typedef struct id_vec {
    uint64_t *v;
    size_t n, cap;
    iocd_buf z; /* a compressed record's varints */
} id_vec;

static void vec_fini(id_vec *a)
{
    iocd_free(a->v);
    iocd_buf_fini(&a->z);
}

static int vec_reserve(id_vec *a, size_t more)
{
    uint64_t *grown;
    size_t cap;

    if (a->n + more <= a->cap)
        return 0;
    cap = a->cap != 0 ? a->cap : 64;
    while (cap < a->n + more)
        cap *= 2;
    grown = iocd_realloc(a->v, cap * sizeof(*grown));
    if (grown == NULL)
        return ENOMEM;
    a->v = grown;
    a->cap = cap;
    return 0;
}

/* out = the ascending union of a and b (each ascending; out is neither). */
static int vec_union(id_vec *out, const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    size_t i = 0, j = 0;

    out->n = 0;
    if (vec_reserve(out, na + nb) != 0)
        return ENOMEM;
    while (i < na || j < nb) {
        if (j == nb || (i < na && a[i] < b[j]))
            out->v[out->n++] = a[i++];
        else if (i == na || b[j] < a[i])
            out->v[out->n++] = b[j++];
        else {
            out->v[out->n++] = a[i++];
            j++;
        }
    }
    return 0;
}

/* Appends a packed record's ids (segment seg) to out; MDB_CORRUPTED if it is malformed: an
 * unknown format, a bad varint, ids not ascending or outside the segment, or none. */
static int seg_decode(const uint8_t *p, size_t len, uint64_t seg, id_vec *out)
{
    const uint8_t *end = p + len;
    uint64_t base = seg << SEG_SHIFT, id = base, limit = base + (1ULL << SEG_SHIFT), d;
    size_t start = out->n;

    if (len >= 2 && p[0] == FMT_ZSTD) {
        if (codec_wal_unpack(p, len, &out->z, &p, &len) != IOCD_OK)
            return MDB_CORRUPTED;
        end = p + len;
    } else if (len < 2 || *p++ != FMT_DELTAS) {
        return MDB_CORRUPTED;
    }
    /* Every id takes at least a byte: reserving len bytes' worth makes the loop check-free. */
    if (vec_reserve(out, len) != 0)
        return ENOMEM;
    while (p < end) {
        if (!store_varint_get(&p, end, &d) || d >= limit - id || (d == 0 && out->n > start))
            return MDB_CORRUPTED;
        id += d;
        out->v[out->n++] = id;
    }
    return 0;
}

/* A packed record of the ids (ascending, all in segment seg; the key klen bytes) into out;
 * raw is scratch. Only a record too large for a leaf page is compressed: on smaller ones
 * zstd saves little and doubles the read time. */
static int seg_encode(const uint64_t *ids, size_t n, uint64_t seg, size_t klen, iocd_buf *raw,
                      iocd_buf *out)
{
    uint64_t prev = seg << SEG_SHIFT;
    uint8_t *w;
    size_t i;

    iocd_buf_reset(raw);
    iocd_buf_reset(out);
    if (iocd_buf_reserve(raw, 1 + n * 3) != IOCD_OK) /* offsets in a segment: <= 3 bytes */
        return ENOMEM;
    w = (uint8_t *)raw->data;
    *w++ = FMT_DELTAS;
    for (i = 0; i < n; i++) {
        w += store_varint_put(w, ids[i] - prev);
        prev = ids[i];
    }
    raw->len = (size_t)((char *)w - raw->data);
    if (klen + raw->len <= LEAF_MAX)
        return iocd_buf_append(out, raw->data, raw->len) == IOCD_OK ? 0 : ENOMEM;
    return codec_pack(raw->data + 1, raw->len - 1, ZSTD_LVL, out) == IOCD_OK ? 0 : ENOMEM;
}

/* ---- The two halves of one label ---------------------------------------------------------- */

/* Appends the ids of key's unpacked records (ascending) to out. */
static int unpacked_ids(MDB_cursor *cur, const uint8_t *key, size_t klen, id_vec *out)
{
    MDB_val k = { klen, (void *)key }, v;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);

    if (rc == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_GET_MULTIPLE); /* a page of ids at a time */
    while (rc == 0) {
        const uint8_t *p = v.mv_data;
        size_t i, n = v.mv_size / 8;
        if (v.mv_size % 8 != 0)
            return MDB_CORRUPTED;
        if (vec_reserve(out, n) != 0)
            return ENOMEM;
        for (i = 0; i < n; i++)
            out->v[out->n++] = get_be64(p + 8 * i);
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_MULTIPLE);
    }
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Calls fn for every packed record of key (klen bytes, room for the segment after them), in
 * segment order. Keys of other labels may sort among them: a value that continues this one
 * with a NUL byte ("a\0b" after "a") compares with the segment bytes; they are skipped. */
typedef int (*seg_fn)(void *ud, uint64_t seg, const MDB_val *rec);
static int packed_each(MDB_cursor *cur, uint8_t *key, size_t klen, seg_fn fn, void *ud)
{
    MDB_val k = { klen + SEG_LEN, key }, v;
    int rc;

    seg_put(key + klen, 0);
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size > klen && memcmp(k.mv_data, key, klen) == 0) {
        const uint8_t *rest = (const uint8_t *)k.mv_data + klen;
        size_t rlen = k.mv_size - klen;
        uint64_t next;
        if (rlen == SEG_LEN) {
            rc = fn(ud, seg_get(rest), &v);
            if (rc == 0)
                rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            continue;
        }
        /* Another label's key: ours go on at the smallest segment that sorts after it. */
        if (rlen < SEG_LEN) {
            memset(key + klen, 0, SEG_LEN);
            memcpy(key + klen, rest, rlen);
        } else {
            next = seg_get(rest) + 1;
            if (next > SEG_MAX)
                return 0;
            seg_put(key + klen, next);
        }
        k = (MDB_val){ klen + SEG_LEN, key };
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    }
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int collect_seg(void *ud, uint64_t seg, const MDB_val *rec)
{
    return seg_decode(rec->mv_data, rec->mv_size, seg, ud);
}

/* ---- Writing ------------------------------------------------------------------------------ */

typedef struct post_ctx {
    store_db *db;
    MDB_txn *txn;
    uint8_t id[8];
    int rc;
} post_ctx;

/* The postings of many new series at once. Their (key, id) pairs are grouped by key (a hash
 * table over the keys' bytes), the distinct keys sorted, and each key's ids put in one
 * MDB_MULTIPLE call, keys after the database's last one appended: a fresh start's 10,000
 * series put one pair at a time took 15-25 ms of one commit (sorting the 40,000 pairs alone
 * 9 ms), every acknowledgement behind it waiting. */
typedef struct post_key {
    size_t off, len;    /* in the arena */
    const uint8_t *key; /* set from off once every key is in (the arena moves as it grows) */
    size_t n, at;       /* its ids: how many, and where they start in the id array */
} post_key;

typedef struct post_collect {
    iocd_buf arena;
    post_key *keys;
    size_t n_keys, cap_keys;
    uint32_t *slots; /* open addressing: key index + 1, 0 empty */
    size_t n_slots;
    uint32_t *key_of; /* per pair, in walk order */
    uint64_t *pair_id;
    size_t n_pairs, cap_pairs;
    uint64_t id;
    bool oom;
} post_collect;

static uint64_t bytes_hash(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;

    for (i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return iocd_mix64(h);
}

static bool collect_grow(post_collect *c)
{
    size_t i, n = c->n_slots > 0 ? c->n_slots * 2 : 1024;
    uint32_t *slots;

    if (c->n_pairs == c->cap_pairs) {
        size_t cap = c->cap_pairs > 0 ? c->cap_pairs * 2 : 256;
        uint32_t *k = iocd_realloc(c->key_of, cap * sizeof(*k));
        uint64_t *d;
        if (k == NULL)
            return false;
        c->key_of = k;
        d = iocd_realloc(c->pair_id, cap * sizeof(*d));
        if (d == NULL)
            return false;
        c->pair_id = d;
        c->cap_pairs = cap;
    }
    if (c->n_keys == c->cap_keys) {
        size_t cap = c->cap_keys > 0 ? c->cap_keys * 2 : 64;
        post_key *k = iocd_realloc(c->keys, cap * sizeof(*k));
        if (k == NULL)
            return false;
        c->keys = k;
        c->cap_keys = cap;
    }
    if ((c->n_keys + 1) * 2 <= c->n_slots)
        return true;
    slots = iocd_calloc(n, sizeof(*slots));
    if (slots == NULL)
        return false;
    for (i = 0; i < c->n_keys; i++) {
        const post_key *k = &c->keys[i];
        size_t j = bytes_hash((const uint8_t *)c->arena.data + k->off, k->len) & (n - 1);
        while (slots[j] != 0)
            j = (j + 1) & (n - 1);
        slots[j] = (uint32_t)i + 1;
    }
    iocd_free(c->slots);
    c->slots = slots;
    c->n_slots = n;
    return true;
}

static iocd_err collect_posting(void *ud, const char *name, size_t name_len, const char *value,
                                size_t value_len)
{
    post_collect *c = ud;
    uint8_t key[KEY_BUF];
    size_t len = posting_key(name, name_len, value, value_len, key), j;
    uint32_t ki;

    if (!collect_grow(c)) {
        c->oom = true;
        return IOCD_ENOMEM;
    }
    j = bytes_hash(key, len) & (c->n_slots - 1);
    for (;; j = (j + 1) & (c->n_slots - 1)) {
        const post_key *k;
        if (c->slots[j] == 0) {
            if (iocd_buf_append(&c->arena, key, len) != IOCD_OK) {
                c->oom = true;
                return IOCD_ENOMEM;
            }
            c->keys[c->n_keys] = (post_key){ c->arena.len - len, len, NULL, 0, 0 };
            c->slots[j] = (uint32_t)++c->n_keys;
            break;
        }
        k = &c->keys[c->slots[j] - 1];
        if (k->len == len && memcmp(c->arena.data + k->off, key, len) == 0)
            break;
    }
    ki = c->slots[j] - 1;
    c->keys[ki].n++;
    c->key_of[c->n_pairs] = ki;
    c->pair_id[c->n_pairs++] = c->id;
    return IOCD_OK;
}

static int post_key_cmp(const void *a, const void *b)
{
    const post_key *x = a, *y = b;

    return key_cmp(x->key, x->len, y->key, y->len);
}

static int be_id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, 8);
}

int store_post_add_many(store_db *db, MDB_txn *txn, const store_db_series *series, size_t n)
{
    post_collect c;
    MDB_cursor *cur = NULL;
    MDB_val k, v[2];
    uint8_t last[KEY_BUF], *ids = NULL;
    size_t last_len = 0, i, at = 0;
    bool appending = false;
    int rc = 0;

    memset(&c, 0, sizeof(c));
    iocd_buf_init(&c.arena, 0);
    for (i = 0; rc == 0 && i < n; i++) {
        c.id = series[i].id;
        if (store_key_walk(series[i].key, series[i].key_len, collect_posting, &c) != IOCD_OK)
            rc = c.oom ? ENOMEM : MDB_CORRUPTED;
    }
    /* Each key's ids, big-endian and in order, side by side. */
    if (rc == 0 && c.n_pairs > 0) {
        ids = iocd_malloc(c.n_pairs * 8);
        rc = ids == NULL ? ENOMEM : 0;
    }
    for (i = 0; rc == 0 && i < c.n_keys; i++) {
        c.keys[i].at = at;
        at += c.keys[i].n;
        c.keys[i].n = 0;
    }
    for (i = 0; rc == 0 && i < c.n_pairs; i++) {
        post_key *pk = &c.keys[c.key_of[i]];
        be64(ids + (pk->at + pk->n++) * 8, c.pair_id[i]);
    }
    for (i = 0; rc == 0 && i < c.n_keys; i++) {
        const post_key *pk = &c.keys[i];
        size_t j;
        for (j = 1; j < pk->n && memcmp(ids + (pk->at + j - 1) * 8, ids + (pk->at + j) * 8, 8) < 0;
             j++)
            ;
        if (j < pk->n) /* not ascending (ids of series created out of order): sorted */
            iocd_qsort(ids + pk->at * 8, pk->n, 8, be_id_cmp);
    }
    if (rc == 0 && c.n_keys > 0) {
        for (i = 0; i < c.n_keys; i++)
            c.keys[i].key = (const uint8_t *)c.arena.data + c.keys[i].off;
        iocd_qsort(c.keys, c.n_keys, sizeof(*c.keys), post_key_cmp);
        rc = mdb_cursor_open(txn, db->postings, &cur);
    }
    if (rc == 0 && cur != NULL) {
        rc = mdb_cursor_get(cur, &k, v, MDB_LAST);
        if (rc == 0 && k.mv_size <= KEY_BUF) {
            memcpy(last, k.mv_data, k.mv_size);
            last_len = k.mv_size;
        }
        rc = rc == MDB_NOTFOUND || rc == 0 ? 0 : rc;
        appending = last_len == 0;
    }
    for (i = 0; rc == 0 && i < c.n_keys; i++) {
        const post_key *pk = &c.keys[i];
        size_t j = 0;
        k = (MDB_val){ pk->len, (void *)pk->key };
        appending = appending || key_cmp(k.mv_data, k.mv_size, last, last_len) > 0;
        while (rc == 0 && j < pk->n) {
            /* A pair already there (a series put again) stops a multiple put: go on after it. */
            v[0] = (MDB_val){ 8, ids + (pk->at + j) * 8 };
            v[1] = (MDB_val){ pk->n - j, NULL };
            rc = mdb_cursor_put(
                cur, &k, v, MDB_MULTIPLE | MDB_NODUPDATA | (appending && j == 0 ? MDB_APPEND : 0));
            j += rc == 0 ? pk->n - j : v[1].mv_size + 1;
            if (rc == MDB_KEYEXIST) {
                rc = 0;
                appending = false;
            }
        }
    }
    if (cur != NULL)
        mdb_cursor_close(cur);
    iocd_free(ids);
    iocd_free(c.keys);
    iocd_free(c.slots);
    iocd_free(c.key_of);
    iocd_free(c.pair_id);
    iocd_buf_fini(&c.arena);
    return rc;
}

typedef struct pack_state {
    store_db *db;
    MDB_txn *txn;
    id_vec old, merged;
    iocd_buf raw, rec;
    uint8_t last[KEY_BUF]; /* the greatest packed key: later ones can be appended */
    size_t last_len;       /* 0: the database is empty */
} pack_state;

/* Rewrites the packed record (key + segment seg) with ids (ascending, in seg) added. */
static int pack_segment(pack_state *ps, uint8_t *key, size_t klen, uint64_t seg,
                        const uint64_t *ids, size_t n)
{
    MDB_val k = { klen + SEG_LEN, key }, v;
    unsigned flags = 0;
    int rc;

    seg_put(key + klen, seg);
    ps->old.n = 0;
    rc = mdb_get(ps->txn, ps->db->postings_packed, &k, &v);
    if (rc == 0) {
        rc = seg_decode(v.mv_data, v.mv_size, seg, &ps->old);
    } else if (rc == MDB_NOTFOUND) {
        rc = 0;
        if (key_cmp(key, k.mv_size, ps->last, ps->last_len) > 0)
            flags = MDB_APPEND; /* after every key: pages fill up instead of splitting in half */
    }
    if (rc == 0)
        rc = vec_union(&ps->merged, ps->old.v, ps->old.n, ids, n);
    if (rc == 0)
        rc = seg_encode(ps->merged.v, ps->merged.n, seg, k.mv_size, &ps->raw, &ps->rec);
    if (rc == 0) {
        v = (MDB_val){ ps->rec.len, ps->rec.data };
        rc = mdb_put(ps->txn, ps->db->postings_packed, &k, &v, flags);
    }
    if (rc == 0 && flags == MDB_APPEND) {
        memcpy(ps->last, key, k.mv_size);
        ps->last_len = k.mv_size;
    }
    return rc;
}

int store_post_pack(store_db *db, MDB_txn *txn)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    pack_state ps;
    id_vec fresh = { 0 };
    uint8_t key[KEY_BUF];
    size_t read = 0; /* bytes of the file read (store_db_read_some) */
    bool any = false;
    int rc;

    memset(&ps, 0, sizeof(ps));
    ps.db = db;
    ps.txn = txn;
    iocd_buf_init(&ps.raw, 0);
    iocd_buf_init(&ps.rec, 0);
    rc = mdb_cursor_open(txn, db->postings_packed, &cur);
    if (rc == 0) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
        if (rc == 0 && k.mv_size <= KEY_BUF) {
            memcpy(ps.last, k.mv_data, k.mv_size);
            ps.last_len = k.mv_size;
        } else if (rc == 0) {
            rc = MDB_CORRUPTED;
        }
        if (rc == MDB_NOTFOUND)
            rc = 0;
        mdb_cursor_close(cur);
        cur = NULL;
    }
    if (rc == 0)
        rc = mdb_cursor_open(txn, db->postings, &cur);
    for (rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_FIRST) : rc; rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_NODUP)) {
        size_t klen = k.mv_size, i, j;
        if (klen == 0 || klen > POSTING_KEY_MAX) {
            rc = MDB_CORRUPTED;
            break;
        }
        memcpy(key, k.mv_data, klen);
        any = true;
        fresh.n = 0;
        rc = unpacked_ids(cur, key, klen, &fresh);
        store_db_read_some(db, &read, klen + fresh.n * 8);
        for (i = 0; rc == 0 && i < fresh.n; i = j) {
            uint64_t seg = fresh.v[i] >> SEG_SHIFT;
            if (seg > SEG_MAX) {
                rc = MDB_CORRUPTED;
                break;
            }
            for (j = i + 1; j < fresh.n && fresh.v[j] >> SEG_SHIFT == seg; j++)
                ;
            rc = pack_segment(&ps, key, klen, seg, fresh.v + i, j - i);
        }
        if (rc != 0)
            break;
    }
    if (cur != NULL)
        mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
        rc = any ? mdb_drop(txn, db->postings, 0) : 0; /* empties it, keeps the database */
    if (any)
        store_db_drop_mapped(db); /* the drop read every page again */
    vec_fini(&fresh);
    vec_fini(&ps.old);
    vec_fini(&ps.merged);
    iocd_buf_fini(&ps.raw);
    iocd_buf_fini(&ps.rec);
    return rc;
}

#define REPOST_CHUNK 65536 /* series whose postings are added at a time */

typedef struct repost_ctx {
    store_db *db;
    MDB_txn *txn;
    store_db_series *ser; /* REPOST_CHUNK; the keys point into the map (read, never moved) */
    size_t n, total;
    int rc;
} repost_ctx;

static int repost_flush(repost_ctx *c)
{
    c->rc = c->n > 0 ? store_post_add_many(c->db, c->txn, c->ser, c->n) : 0;
    c->total += c->n;
    c->n = 0;
    return c->rc;
}

static iocd_err repost_one(void *ud, uint64_t id, const uint8_t *key, size_t len)
{
    repost_ctx *c = ud;

    c->ser[c->n++] = (store_db_series){ id, key, len };
    return c->n < REPOST_CHUNK || repost_flush(c) == 0 ? IOCD_OK : IOCD_EIO;
}

iocd_err store_db_repost(store_db *db, size_t *n_out)
{
    repost_ctx c = { db, NULL, iocd_calloc(REPOST_CHUNK, sizeof(*c.ser)), 0, 0, 0 };
    iocd_err err = IOCD_OK;
    int rc;

    *n_out = 0;
    if (c.ser == NULL)
        return IOCD_ENOMEM;
    rc = mdb_txn_begin(db->env, NULL, 0, &c.txn);
    if (rc == 0)
        rc = store_spack_unpacked_each(db, c.txn, repost_one, &c, &err);
    if (rc == 0 && err != IOCD_OK)
        rc = c.rc != 0 ? c.rc : MDB_CORRUPTED;
    if (rc == 0)
        rc = repost_flush(&c);
    if (rc == 0 && c.total > 0) {
        rc = mdb_txn_commit(c.txn);
        c.txn = NULL;
        if (rc == 0)
            rc = mdb_env_sync(db->env, 1);
    }
    if (c.txn != NULL)
        mdb_txn_abort(c.txn);
    iocd_free(c.ser);
    store_db_drop_mapped(db);
    if (rc == 0)
        *n_out = c.total;
    return store_mdb_err(rc);
}

int store_post_upgrade(store_db *db, MDB_txn *txn)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    iocd_buf longs; /* the keys to move: a length byte pair, then the key */
    id_vec ids = { 0 };
    size_t off;
    int rc;

    iocd_buf_init(&longs, 0);
    rc = mdb_cursor_open(txn, db->postings, &cur);
    for (rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_FIRST) : rc; rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_NODUP)) {
        uint8_t len2[2] = { (uint8_t)(k.mv_size >> 8), (uint8_t)k.mv_size };
        if (k.mv_size <= POSTING_KEY_MAX)
            continue;
        if (iocd_buf_append(&longs, len2, 2) != IOCD_OK ||
            iocd_buf_append(&longs, k.mv_data, k.mv_size) != IOCD_OK) {
            rc = ENOMEM;
            break;
        }
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    /* An old long key: name '=' 400 bytes '#' hash. Today's keeps fewer bytes, same hash. */
    for (off = 0; rc == 0 && off < longs.len;) {
        const uint8_t *old = (const uint8_t *)longs.data + off + 2, *eq;
        size_t len = (size_t)(uint8_t)longs.data[off] << 8 | (uint8_t)longs.data[off + 1], i;
        uint8_t key[KEY_BUF];
        MDB_val nk = { 0, key }, ok = { len, (void *)old };
        off += 2 + len;
        eq = memchr(old, '=', len);
        if (eq == NULL || len < (size_t)(eq - old) + 1 + HASH_LEN ||
            value_keep((size_t)(eq - old)) + (size_t)(eq - old) + 1 + HASH_LEN > len) {
            rc = MDB_CORRUPTED;
            break;
        }
        nk.mv_size = (size_t)(eq - old) + 1 + value_keep((size_t)(eq - old));
        memcpy(key, old, nk.mv_size);
        memcpy(key + nk.mv_size, old + len - HASH_LEN, HASH_LEN);
        nk.mv_size += HASH_LEN;
        ids.n = 0;
        rc = unpacked_ids(cur, old, len, &ids);
        if (rc == 0)
            rc = mdb_del(txn, db->postings, &ok, NULL);
        for (i = 0; rc == 0 && i < ids.n; i++) {
            uint8_t idb[8];
            MDB_val iv = { 8, idb };
            be64(idb, ids.v[i]);
            rc = mdb_put(txn, db->postings, &nk, &iv, MDB_NODUPDATA);
            if (rc == MDB_KEYEXIST)
                rc = 0;
        }
    }
    if (cur != NULL)
        mdb_cursor_close(cur);
    vec_fini(&ids);
    iocd_buf_fini(&longs);
    return rc;
}

/* ---- Deleting series ---------------------------------------------------------------------- */

typedef struct del_entry {
    size_t off, len;    /* a packed record's key (the segment included) in del_ctx.keys */
    const uint8_t *key; /* set from off once every key is in */
    uint64_t id;
} del_entry;

typedef struct del_ctx {
    post_ctx pc;
    uint64_t id;
    iocd_buf keys; /* the packed keys of the labels walked so far, back to back */
    del_entry *ents;
    size_t n, cap;
} del_ctx;

static iocd_err del_posting(void *ud, const char *name, size_t name_len, const char *value,
                            size_t value_len)
{
    del_ctx *c = ud;
    uint8_t key[KEY_BUF];
    MDB_val k, v = { 8, c->pc.id };

    k.mv_size = posting_key(name, name_len, value, value_len, key);
    k.mv_data = key;
    c->pc.rc = mdb_del(c->pc.txn, c->pc.db->postings, &k, &v);
    if (c->pc.rc == MDB_NOTFOUND)
        c->pc.rc = 0;
    if (c->pc.rc != 0)
        return IOCD_EIO;
    /* The packed half is rewritten once per record, after every series is walked. */
    seg_put(key + k.mv_size, c->id >> SEG_SHIFT);
    if (c->n == c->cap) {
        size_t cap = c->cap != 0 ? c->cap * 2 : 64;
        del_entry *grown = iocd_realloc(c->ents, cap * sizeof(*grown));
        if (grown == NULL) {
            c->pc.rc = ENOMEM;
            return IOCD_ENOMEM;
        }
        c->ents = grown;
        c->cap = cap;
    }
    c->ents[c->n++] = (del_entry){ c->keys.len, k.mv_size + SEG_LEN, NULL, c->id };
    if (iocd_buf_append(&c->keys, key, k.mv_size + SEG_LEN) != IOCD_OK) {
        c->pc.rc = ENOMEM;
        return IOCD_ENOMEM;
    }
    return IOCD_OK;
}

static int del_cmp(const void *a, const void *b)
{
    const del_entry *x = a, *y = b;
    int c = key_cmp(x->key, x->len, y->key, y->len);

    return c != 0 ? c : (x->id > y->id) - (x->id < y->id);
}

/* Removes ents' ids (sorted, all of one key) from that packed record. */
static int del_packed(store_db *db, MDB_txn *txn, const del_entry *ents, size_t n, id_vec *ids,
                      iocd_buf *raw, iocd_buf *rec)
{
    MDB_val k = { ents[0].len, (void *)ents[0].key }, v;
    uint64_t seg = seg_get(ents[0].key + ents[0].len - SEG_LEN);
    size_t i, j = 0, kept = 0;
    int rc;

    ids->n = 0;
    rc = mdb_get(txn, db->postings_packed, &k, &v);
    if (rc == 0)
        rc = seg_decode(v.mv_data, v.mv_size, seg, ids);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? 0 : rc;
    for (i = 0; i < ids->n; i++) {
        while (j < n && ents[j].id < ids->v[i])
            j++;
        if (j == n || ents[j].id != ids->v[i])
            ids->v[kept++] = ids->v[i];
    }
    if (kept == ids->n)
        return 0;
    if (kept == 0)
        return mdb_del(txn, db->postings_packed, &k, NULL);
    rc = seg_encode(ids->v, kept, seg, k.mv_size, raw, rec);
    v = (MDB_val){ rec->len, rec->data };
    return rc == 0 ? mdb_put(txn, db->postings_packed, &k, &v, 0) : rc;
}

iocd_err store_db_delete_series(store_db *db, const store_db_series *series, size_t n)
{
    MDB_txn *txn = NULL;
    del_ctx c;
    id_vec scratch = { 0 };
    iocd_buf raw, rec;
    uint64_t *ids = n > 0 ? iocd_malloc(n * sizeof(*ids)) : NULL;
    size_t i, j;
    int rc;

    if (n > 0 && ids == NULL)
        return IOCD_ENOMEM;
    memset(&c, 0, sizeof(c));
    iocd_buf_init(&c.keys, 0);
    iocd_buf_init(&raw, 0);
    iocd_buf_init(&rec, 0);
    rc = mdb_txn_begin(db->env, NULL, 0, &txn);
    c.pc.db = db;
    c.pc.txn = txn;
    for (i = 0; rc == 0 && i < n; i++) {
        ids[i] = series[i].id;
        c.id = series[i].id;
        be64(c.pc.id, series[i].id);
        if (c.id >> SEG_SHIFT > SEG_MAX)
            rc = MDB_CORRUPTED;
        else if (store_key_walk(series[i].key, series[i].key_len, del_posting, &c) != IOCD_OK)
            rc = c.pc.rc != 0 ? c.pc.rc : MDB_CORRUPTED;
    }
    for (i = 0; rc == 0 && i < c.n; i++)
        c.ents[i].key = (const uint8_t *)c.keys.data + c.ents[i].off;
    if (rc == 0)
        iocd_qsort(c.ents, c.n, sizeof(*c.ents), del_cmp);
    for (i = 0; rc == 0 && i < c.n; i = j) {
        for (j = i + 1;
             j < c.n && key_cmp(c.ents[j].key, c.ents[j].len, c.ents[i].key, c.ents[i].len) == 0;
             j++)
            ;
        rc = del_packed(db, txn, c.ents + i, j - i, &scratch, &raw, &rec);
    }
    if (rc == 0)
        rc = store_spack_del(db, txn, ids, n);
    if (rc == 0) {
        rc = mdb_txn_commit(txn);
        txn = NULL;
    }
    if (txn != NULL)
        mdb_txn_abort(txn);
    iocd_free(ids);
    iocd_free(c.ents);
    vec_fini(&scratch);
    iocd_buf_fini(&c.keys);
    iocd_buf_fini(&raw);
    iocd_buf_fini(&rec);
    return store_mdb_err(rc);
}

/* ---- Reading ------------------------------------------------------------------------------ */

iocd_err store_db_postings(store_db *db, const char *name, const char *value, uint64_t **ids_out,
                           size_t *n_out)
{
    uint8_t key[KEY_BUF];
    MDB_txn *txn = NULL;
    MDB_cursor *pcur = NULL, *ucur = NULL;
    id_vec ids = { 0 }, merged = { 0 };
    size_t klen = posting_key(name, strlen(name), value, strlen(value), key), np;
    int rc;

    rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_cursor_open(txn, db->postings_packed, &pcur);
    if (rc == 0)
        rc = mdb_cursor_open(txn, db->postings, &ucur);
    if (rc == 0)
        rc = packed_each(pcur, key, klen, collect_seg, &ids);
    np = ids.n;
    if (rc == 0)
        rc = unpacked_ids(ucur, key, klen, &ids);
    /* Both halves ascend; the unpacked one usually holds only newer series. */
    if (rc == 0 && np > 0 && ids.n > np && ids.v[np - 1] >= ids.v[np]) {
        rc = vec_union(&merged, ids.v, np, ids.v + np, ids.n - np);
        vec_fini(&ids);
        ids = merged;
    }
    if (pcur != NULL)
        mdb_cursor_close(pcur);
    if (ucur != NULL)
        mdb_cursor_close(ucur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    iocd_buf_fini(&ids.z);
    if (rc != 0) {
        iocd_free(ids.v);
        return store_mdb_err(rc);
    }
    *ids_out = ids.v;
    *n_out = ids.n;
    return IOCD_OK;
}

/* One half's labels in key order, for the merged walks of label names and values: the
 * current record's key and, for the packed half, without its segment. */
typedef struct half {
    MDB_cursor *cur;
    bool packed;
    MDB_val k, v;
    int rc; /* of the last move: 0 while the half has a record */
} half;

static size_t half_len(const half *h)
{
    return h->k.mv_size - (h->packed ? SEG_LEN : 0);
}

/* Moves to the first key at or after key (len 0: the first of all). */
static void half_seek(half *h, const void *key, size_t len)
{
    h->k = (MDB_val){ len, (void *)key };
    h->rc = mdb_cursor_get(h->cur, &h->k, &h->v, len > 0 ? MDB_SET_RANGE : MDB_FIRST);
    if (h->rc == 0 && h->packed && h->k.mv_size <= SEG_LEN)
        h->rc = MDB_CORRUPTED;
}

static void half_next(half *h)
{
    h->rc = mdb_cursor_get(h->cur, &h->k, &h->v, h->packed ? MDB_NEXT : MDB_NEXT_NODUP);
    if (h->rc == 0 && h->packed && h->k.mv_size <= SEG_LEN)
        h->rc = MDB_CORRUPTED;
}

/* Which half's current key (past skip bytes, without a segment) comes first: -1 the packed
 * half (h[0]), 1 the other, 0 both. A half at its end comes last. */
static int half_order(const half *h, size_t skip)
{
    int c;

    if (h[0].rc != 0 || h[1].rc != 0)
        return h[0].rc != 0 ? 1 : -1;
    c = key_cmp((const uint8_t *)h[0].k.mv_data + skip, half_len(&h[0]) - skip,
                (const uint8_t *)h[1].k.mv_data + skip, half_len(&h[1]) - skip);
    return (c > 0) - (c < 0);
}

static int str_push(char ***v, size_t *n, size_t *cap, char *s)
{
    if (s == NULL)
        return ENOMEM;
    if (*n == *cap) {
        size_t c = *cap != 0 ? *cap * 2 : 64;
        char **grown = iocd_realloc(*v, c * sizeof(*grown));
        if (grown == NULL) {
            iocd_free(s);
            return ENOMEM;
        }
        *v = grown;
        *cap = c;
    }
    (*v)[(*n)++] = s;
    return 0;
}

static void strs_free(char **v, size_t n)
{
    while (n > 0)
        iocd_free(v[--n]);
    iocd_free(v);
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts and removes repeats: the halves' walks only interleave out of order when a value
 * holds a NUL byte (see packed_each). */
static void strs_sort_unique(char **v, size_t *n)
{
    size_t i, k = 0;

    iocd_qsort(v, *n, sizeof(*v), str_cmp);
    for (i = 0; i < *n; i++) {
        if (k > 0 && strcmp(v[k - 1], v[i]) == 0)
            iocd_free(v[i]);
        else
            v[k++] = v[i];
    }
    *n = k;
}

iocd_err store_db_label_names(store_db *db, char ***names_out, size_t *n_out)
{
    size_t n = 0, cap = 0;
    char **names = NULL, seek[POSTING_NAME_MAX + 2];
    MDB_txn *txn = NULL;
    half h[2] = { { .packed = true }, { .packed = false } };
    int rc, i;

    rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);
    for (i = 0; rc == 0 && i < 2; i++) {
        rc = mdb_cursor_open(txn, i == 0 ? db->postings_packed : db->postings, &h[i].cur);
        if (rc == 0)
            half_seek(&h[i], "", 0);
    }
    /* Keys are "name=value": after each name, both halves seek past its values ("name>"). */
    while (rc == 0 && (h[0].rc == 0 || h[1].rc == 0)) {
        half *first = half_order(h, 0) <= 0 ? &h[0] : &h[1];
        const char *kd = first->k.mv_data, *eq = memchr(kd, '=', half_len(first));
        size_t len = eq != NULL ? (size_t)(eq - kd) : half_len(first);
        if (len + 2 > sizeof(seek)) {
            rc = MDB_CORRUPTED;
            break;
        }
        memcpy(seek, kd, len);
        seek[len] = '=' + 1;
        rc = str_push(&names, &n, &cap, iocd_strndup(kd, len));
        for (i = 0; rc == 0 && i < 2; i++)
            if (h[i].rc == 0)
                half_seek(&h[i], seek, len + 1);
        for (i = 0; rc == 0 && i < 2; i++)
            if (h[i].rc != 0 && h[i].rc != MDB_NOTFOUND)
                rc = h[i].rc;
    }
    for (i = 0; rc == 0 && i < 2; i++)
        if (h[i].rc != 0 && h[i].rc != MDB_NOTFOUND)
            rc = h[i].rc;
    for (i = 0; i < 2; i++)
        if (h[i].cur != NULL)
            mdb_cursor_close(h[i].cur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (rc != 0) {
        strs_free(names, n);
        return store_mdb_err(rc);
    }
    *names_out = names;
    *n_out = n;
    return IOCD_OK;
}

typedef struct value_ctx {
    const char *name;
    size_t name_len;
    char *found;
} value_ctx;

static iocd_err find_value(void *ud, const char *name, size_t name_len, const char *value,
                           size_t value_len)
{
    value_ctx *c = ud;

    if (name_len == c->name_len && memcmp(name, c->name, name_len) == 0 && c->found == NULL) {
        c->found = iocd_strndup(value, value_len);
        return c->found != NULL ? IOCD_OK : IOCD_ENOMEM;
    }
    return IOCD_OK;
}

/* The whole value of a shortened key, from the key of one of its series (id). */
static int long_value(store_db *db, MDB_txn *txn, const char *name, size_t name_len, uint64_t id,
                      iocd_buf *scratch, char **out)
{
    value_ctx vc = { name, name_len, NULL };
    const uint8_t *skey;
    size_t skey_len;
    int rc = store_spack_get(db, txn, id, scratch, &skey, &skey_len);

    if (rc == 0 && store_key_walk(skey, skey_len, find_value, &vc) != IOCD_OK)
        rc = vc.found == NULL ? MDB_CORRUPTED : ENOMEM;
    if (rc == 0 && vc.found == NULL)
        rc = MDB_CORRUPTED;
    if (rc != 0) {
        iocd_free(vc.found);
        return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc;
    }
    *out = vc.found;
    return 0;
}

iocd_err store_db_label_values(store_db *db, const char *name, char ***values_out, size_t *n_out)
{
    size_t name_len = strlen(name), n = 0, cap = 0, keep, last_len = 0;
    char prefix[POSTING_NAME_MAX + 1], **vals = NULL;
    const uint8_t *last = NULL;
    MDB_txn *txn = NULL;
    half h[2] = { { .packed = true }, { .packed = false } };
    iocd_buf scratch;
    id_vec one = { 0 }; /* a shortened key's packed record */
    bool unordered = false;
    int rc, i;

    if (name_len > POSTING_NAME_MAX)
        return IOCD_EINVAL;
    keep = value_keep(name_len);
    iocd_buf_init(&scratch, 0);
    memcpy(prefix, name, name_len);
    prefix[name_len] = '=';
    rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);
    for (i = 0; rc == 0 && i < 2; i++) {
        rc = mdb_cursor_open(txn, i == 0 ? db->postings_packed : db->postings, &h[i].cur);
        if (rc == 0)
            half_seek(&h[i], prefix, name_len + 1);
        if (h[i].rc == 0 &&
            (half_len(&h[i]) <= name_len || memcmp(h[i].k.mv_data, prefix, name_len + 1) != 0))
            h[i].rc = MDB_NOTFOUND;
    }
    while (rc == 0 && (h[0].rc == 0 || h[1].rc == 0)) {
        int order = half_order(h, name_len + 1);
        half *first = order <= 0 ? &h[0] : &h[1];
        const uint8_t *val = (const uint8_t *)first->k.mv_data + name_len + 1;
        size_t vlen = half_len(first) - name_len - 1;
        int c = last != NULL ? key_cmp(val, vlen, last, last_len) : 1;
        if (c < 0)
            unordered = true; /* see strs_sort_unique */
        if (c != 0) {
            char *copy = NULL;
            if (vlen == keep + HASH_LEN && val[keep] == '#') {
                /* A shortened key: read the whole value from one of its series. */
                uint64_t id = 0;
                if (first->packed) {
                    one.n = 0;
                    rc = seg_decode(first->v.mv_data, first->v.mv_size, seg_get(val + vlen), &one);
                    id = rc == 0 ? one.v[0] : 0;
                } else if (first->v.mv_size == 8) {
                    id = get_be64(first->v.mv_data);
                }
                if (rc == 0)
                    rc = long_value(db, txn, name, name_len, id, &scratch, &copy);
            } else {
                copy = iocd_strndup((const char *)val, vlen);
            }
            if (rc == 0)
                rc = str_push(&vals, &n, &cap, copy);
            last = val;
            last_len = vlen;
        }
        for (i = 0; rc == 0 && i < 2; i++) {
            if (h[i].rc != 0 || (i == 0 ? order > 0 : order < 0))
                continue; /* only the half (or both halves) whose key was taken moves */
            half_next(&h[i]);
            if (h[i].rc == 0 &&
                (half_len(&h[i]) <= name_len || memcmp(h[i].k.mv_data, prefix, name_len + 1) != 0))
                h[i].rc = MDB_NOTFOUND;
            if (h[i].rc != 0 && h[i].rc != MDB_NOTFOUND)
                rc = h[i].rc;
        }
    }
    for (i = 0; rc == 0 && i < 2; i++)
        if (h[i].rc != 0 && h[i].rc != MDB_NOTFOUND)
            rc = h[i].rc;
    if (rc == 0 && unordered)
        strs_sort_unique(vals, &n);
    for (i = 0; i < 2; i++)
        if (h[i].cur != NULL)
            mdb_cursor_close(h[i].cur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    iocd_buf_fini(&scratch);
    vec_fini(&one);
    if (rc != 0) {
        strs_free(vals, n);
        return store_mdb_err(rc);
    }
    *values_out = vals;
    *n_out = n;
    return IOCD_OK;
}

/* ---- Check -------------------------------------------------------------------------------- */

/* A (label, series) pair: the hash of the posting key and the id. */
typedef struct pair {
    uint64_t kh, id;
} pair;

typedef struct check_ctx {
    store_report_fn fn;
    void *ud;
    const uint64_t *ids; /* every series id, ascending */
    size_t n_ids;
    pair *pairs;
    size_t n, cap;
    uint64_t id; /* the series being checked */
    int rc;
    id_vec unpacked; /* ids in the unpacked series index, ascending */
    bool id_missing; /* the series being checked lacks a posting */
    uint64_t n_unposted;
} check_ctx;

static void report(check_ctx *c, const char *fmt, ...) IOCD_PRINTF(2, 3);

static void report(check_ctx *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->fn(c->ud, msg);
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static int pair_cmp(const void *a, const void *b)
{
    const pair *x = a, *y = b;

    return x->kh != y->kh ? (x->kh < y->kh ? -1 : 1) : (x->id > y->id) - (x->id < y->id);
}

/* One posting's series: it must exist; the pair is kept for the series' side. */
static int check_pair(check_ctx *c, const MDB_val *k, size_t klen, uint64_t kh, uint64_t id)
{
    if (id == 0 || bsearch(&id, c->ids, c->n_ids, sizeof(*c->ids), u64_cmp) == NULL)
        report(c, "posting %.*s names a missing series", (int)(klen < 100 ? klen : 100),
               (const char *)k->mv_data);
    if (c->n == c->cap) {
        size_t cap = c->cap != 0 ? c->cap * 2 : 4096;
        pair *grown = iocd_realloc(c->pairs, cap * sizeof(*grown));
        if (grown == NULL)
            return ENOMEM;
        c->pairs = grown;
        c->cap = cap;
    }
    c->pairs[c->n++] = (pair){ kh, id };
    return 0;
}

static iocd_err check_label(void *ud, const char *name, size_t name_len, const char *value,
                            size_t value_len)
{
    check_ctx *c = ud;
    uint8_t key[KEY_BUF];
    pair p = { store_hash(key, posting_key(name, name_len, value, value_len, key)), c->id };

    if (bsearch(&p, c->pairs, c->n, sizeof(p), pair_cmp) != NULL)
        return IOCD_OK;
    if (store_id_find(c->unpacked.v, c->unpacked.n, c->id) < c->unpacked.n) {
        c->id_missing = true; /* created since the last seal: the next open adds it */
        return IOCD_OK;
    }
    report(c, "series %llu: no posting for %.*s=%.*s", (unsigned long long)c->id, (int)name_len,
           name, (int)(value_len < 100 ? value_len : 100), value);
    return IOCD_OK;
}

static iocd_err check_series(void *ud, uint64_t id, const uint8_t *key, size_t len)
{
    check_ctx *c = ud;

    c->id = id;
    c->id_missing = false;
    (void)store_key_walk(key, len, check_label, c); /* a malformed key is the caller's report */
    if (c->id_missing)
        c->n_unposted++;
    return IOCD_OK;
}

static iocd_err note_unpacked(void *ud, uint64_t id, const uint8_t *key, size_t len)
{
    id_vec *ids = ud;

    (void)key, (void)len;
    if (vec_reserve(ids, 1) != 0)
        return IOCD_ENOMEM;
    ids->v[ids->n++] = id;
    return IOCD_OK;
}

int store_post_check(store_db *db, MDB_txn *txn, const uint64_t *ids, size_t n_ids,
                     store_report_fn fn, void *ud, uint64_t *n_postings, uint64_t *n_unposted)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    check_ctx c;
    id_vec seg_ids = { 0 };
    iocd_err err = IOCD_OK;
    size_t i;
    int rc = 0, pass;

    memset(&c, 0, sizeof(c));
    c.fn = fn;
    c.ud = ud;
    c.ids = ids;
    c.n_ids = n_ids;
    /* Every posting of both halves names an existing series. */
    for (pass = 0; rc == 0 && pass < 2; pass++) {
        rc = mdb_cursor_open(txn, pass == 0 ? db->postings_packed : db->postings, &cur);
        for (rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_FIRST) : rc; rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            size_t klen = k.mv_size - (pass == 0 ? SEG_LEN : 0);
            uint64_t kh;
            if (pass == 1) {
                rc = check_pair(&c, &k, klen, store_hash(k.mv_data, klen),
                                v.mv_size == 8 ? get_be64(v.mv_data) : 0);
                if (rc != 0)
                    break;
                continue;
            }
            seg_ids.n = 0;
            if (k.mv_size <= SEG_LEN ||
                seg_decode(v.mv_data, v.mv_size, seg_get((const uint8_t *)k.mv_data + klen),
                           &seg_ids) != 0) {
                report(&c, "posting %.*s: a packed record does not decode",
                       (int)(k.mv_size < 100 ? k.mv_size : 100), (const char *)k.mv_data);
                continue;
            }
            kh = store_hash(k.mv_data, klen);
            for (i = 0; rc == 0 && i < seg_ids.n; i++)
                rc = check_pair(&c, &k, klen, kh, seg_ids.v[i]);
            if (rc != 0)
                break;
        }
        mdb_cursor_close(cur);
        cur = NULL;
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    if (rc == 0) {
        iocd_qsort(c.pairs, c.n, sizeof(*c.pairs), pair_cmp);
        for (i = 1; i < c.n; i++)
            if (pair_cmp(&c.pairs[i - 1], &c.pairs[i]) == 0)
                report(&c, "series %llu is in a posting twice (in both halves)",
                       (unsigned long long)c.pairs[i].id);
        /* Every label of every series has its posting (the unpacked ones: see above). */
        rc = store_spack_unpacked_each(db, txn, note_unpacked, &c.unpacked, &err);
        if (rc == 0 && err != IOCD_OK)
            rc = ENOMEM;
    }
    if (rc == 0) {
        rc = store_spack_each(db, txn, check_series, &c, &err);
        if (rc == 0 && err != IOCD_OK)
            rc = ENOMEM;
    }
    if (rc == 0) {
        *n_postings = c.n;
        *n_unposted = c.n_unposted;
    }
    vec_fini(&seg_ids);
    vec_fini(&c.unpacked);
    iocd_free(c.pairs);
    return rc;
}
