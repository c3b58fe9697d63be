/* storage/batch.c - ingest batches: samples with their series keys in canonical form,
 * built by ingest threads without any lock before store_batch_submit hands them over.
 * The canonical key of a series is its labels sorted by name, each as
 * varint(len) name varint(len) value; two label sets name the same series iff their keys are
 * equal bytes. */
#include "storage/storage_int.h"

#include <string.h>

#define BATCH_SAMPLES_MAX (1u << 20)
#define BATCH_KEYS_MAX    (64u << 20)

static const char *const reject_names[] = {
    "none",           "no_name", "bad_label_name",    "duplicate_label",   "too_many_labels",
    "label_too_long", "too_old", "too_far_in_future", "cardinality_limit", "out_of_order",
};

const char *store_reject_name(store_reject r)
{
    if ((unsigned)r >= IOCD_ARRAY_LEN(reject_names))
        return "unknown";
    return reject_names[r];
}

iocd_err store_batch_new(store *st, store_batch **out)
{
    store_batch *b = iocd_calloc(1, sizeof(*b));

    if (b == NULL)
        return IOCD_ENOMEM;
    b->st = st;
    iocd_buf_init(&b->keys, BATCH_KEYS_MAX);
    iocd_buf_init(&b->rest, BATCH_KEYS_MAX);
    b->now_ms = iocd_now_ms();
    *out = b;
    return IOCD_OK;
}

void store_batch_free(store_batch *b)
{
    if (b == NULL)
        return;
    iocd_buf_fini(&b->keys);
    iocd_buf_fini(&b->rest);
    iocd_free(b->items);
    iocd_free(b);
}

void store_batch_reserve(store_batch *b, size_t samples, size_t key_bytes)
{
    if (samples > BATCH_SAMPLES_MAX)
        samples = BATCH_SAMPLES_MAX;
    if (samples > b->cap) {
        batch_item *grown = iocd_realloc(b->items, samples * sizeof(*grown));
        if (grown != NULL) {
            b->items = grown;
            b->cap = samples;
        }
    }
    (void)iocd_buf_reserve(&b->keys, key_bytes < BATCH_KEYS_MAX ? key_bytes : BATCH_KEYS_MAX);
}

size_t store_batch_len(const store_batch *b)
{
    return b->n;
}

static bool valid_label_name(const char *s, size_t len)
{
    size_t i;

    if (len == 0)
        return false;
    for (i = 0; i < len; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static int label_cmp(const void *a, const void *b)
{
    const iocd_label *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c;

    /* Names mostly differ in their first byte (ward, device, domain): decided without a call
     * to memcmp, which was 7% of ingest through the sort and the duplicate check. */
    if (n > 0 && x->name[0] != y->name[0])
        return (unsigned char)x->name[0] < (unsigned char)y->name[0] ? -1 : 1;
    c = memcmp(x->name, y->name, n);
    if (c != 0)
        return c;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

size_t store_varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

uint64_t store_hash(const void *data, size_t len)
{
    /* FNV-1a over 8-byte words with a final avalanche: fast and good enough for a table
     * keyed by bytes we produced ourselves. */
    const uint8_t *p = data;
    uint64_t h = 0xcbf29ce484222325ULL ^ len;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    for (; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return iocd_mix64(h);
}

iocd_err store_key_build(const store_limits *lim, const iocd_label *labels, size_t n_labels,
                         iocd_buf *out, store_reject *why)
{
    iocd_label sorted[STORE_LABELS_HARD_MAX];
    bool has_name = false;
    size_t i, start = out->len, total;
    iocd_err err = IOCD_OK;

    if (n_labels > lim->labels_max || n_labels > STORE_LABELS_HARD_MAX) {
        *why = STORE_REJECT_TOO_MANY_LABELS;
        return IOCD_EINVAL;
    }
    for (i = 0; i < n_labels; i++) {
        if (labels[i].name_len > lim->label_len_max || labels[i].value_len > lim->label_len_max) {
            *why = STORE_REJECT_LABEL_TOO_LONG;
            return IOCD_EINVAL;
        }
        if (labels[i].name_len == 8 && memcmp(labels[i].name, "__name__", 8) == 0) {
            if (labels[i].value_len == 0) {
                *why = STORE_REJECT_NO_NAME;
                return IOCD_EINVAL;
            }
            has_name = true;
        } else if (!valid_label_name(labels[i].name, labels[i].name_len)) {
            *why = STORE_REJECT_BAD_LABEL;
            return IOCD_EINVAL;
        }
    }
    if (!has_name) {
        *why = STORE_REJECT_NO_NAME;
        return IOCD_EINVAL;
    }
    memcpy(sorted, labels, n_labels * sizeof(*labels));
    /* Insertion sort: label sets are small and usually nearly sorted. */
    for (i = 1; i < n_labels; i++) {
        iocd_label x = sorted[i];
        size_t j = i;
        while (j > 0 && label_cmp(&sorted[j - 1], &x) > 0) {
            sorted[j] = sorted[j - 1];
            j--;
        }
        sorted[j] = x;
    }
    /* One reservation for the whole key (lengths take at most 10 bytes each), then plain
     * copies: this runs once per sample. */
    for (i = 0, total = 0; i < n_labels; i++)
        total += sorted[i].name_len + sorted[i].value_len + 20;
    err = iocd_buf_reserve(out, total);
    for (i = 0; i < n_labels && err == IOCD_OK; i++) {
        uint8_t *w;
        if (i > 0 && label_cmp(&sorted[i - 1], &sorted[i]) == 0) {
            out->len = start;
            *why = STORE_REJECT_DUP_LABEL;
            return IOCD_EINVAL;
        }
        if (sorted[i].value_len == 0)
            continue; /* Prometheus: an empty label value is the same as no label */
        w = (uint8_t *)out->data + out->len;
        w += store_varint_put(w, sorted[i].name_len);
        memcpy(w, sorted[i].name, sorted[i].name_len);
        w += sorted[i].name_len;
        w += store_varint_put(w, sorted[i].value_len);
        memcpy(w, sorted[i].value, sorted[i].value_len);
        w += sorted[i].value_len;
        out->len = (size_t)((char *)w - out->data);
    }
    if (err == IOCD_OK)
        out->data[out->len] = '\0';
    if (err != IOCD_OK)
        out->len = start;
    return err;
}

uint64_t store_key_hash(const void *key, size_t len)
{
    const uint8_t *p = key, *end = p + len;
    uint64_t nl, vl;
    size_t first;

    if (!store_varint_get(&p, end, &nl) || nl > (uint64_t)(end - p))
        return store_hash(key, len);
    p += nl;
    if (!store_varint_get(&p, end, &vl) || vl > (uint64_t)(end - p))
        return store_hash(key, len);
    first = (size_t)(p + vl - (const uint8_t *)key);
    return store_key_hash_parts(store_hash(key, first),
                                store_hash((const uint8_t *)key + first, len - first));
}

/* The key of a sample whose labels after __name__ are the cached tagset's: __name__'s label
 * encoded, then the cached rest. *why set on a refused name. */
static iocd_err key_from_rest(store_batch *b, const store_limits *lim, const iocd_label *name,
                              uint64_t *hash, store_reject *why)
{
    size_t start = b->keys.len;
    uint8_t *w;
    iocd_err err;

    if (name->value_len == 0) {
        *why = STORE_REJECT_NO_NAME;
        return IOCD_EINVAL;
    }
    if (name->value_len > lim->label_len_max) {
        *why = STORE_REJECT_LABEL_TOO_LONG;
        return IOCD_EINVAL;
    }
    err = iocd_buf_reserve(&b->keys, name->value_len + 20 + b->rest.len);
    if (err != IOCD_OK)
        return err;
    w = (uint8_t *)b->keys.data + start;
    *w++ = 8;
    memcpy(w, "__name__", 8);
    w += 8;
    w += store_varint_put(w, name->value_len);
    memcpy(w, name->value, name->value_len);
    w += name->value_len;
    *hash = store_key_hash_parts(
        store_hash(b->keys.data + start, (size_t)((char *)w - b->keys.data) - start), b->rest_hash);
    if (b->rest.len > 0)
        memcpy(w, b->rest.data, b->rest.len);
    b->keys.len = (size_t)((char *)w - b->keys.data) + b->rest.len;
    b->keys.data[b->keys.len] = '\0';
    return IOCD_OK;
}

/* Remembers the label part after __name__ of a key just built for tagset, when __name__
 * sorted first (a label name sorting before it, e.g. "Zone", leaves nothing cached). */
static void cache_rest(store_batch *b, const iocd_label *labels, size_t n_labels, uint64_t tagset,
                       const uint8_t *key, size_t len)
{
    const uint8_t *p = key, *end = key + len;
    uint64_t nl, vl;

    b->tagset = 0;
    if (n_labels == 0 || labels[0].name_len != 8 || memcmp(labels[0].name, "__name__", 8) != 0 ||
        !store_varint_get(&p, end, &nl) || nl != 8 || (size_t)(end - p) < 8 ||
        memcmp(p, "__name__", 8) != 0)
        return;
    p += 8;
    if (!store_varint_get(&p, end, &vl) || vl > (uint64_t)(end - p))
        return;
    p += vl;
    iocd_buf_reset(&b->rest);
    if (iocd_buf_append(&b->rest, p, (size_t)(end - p)) != IOCD_OK)
        return;
    b->rest_hash = store_hash(p, (size_t)(end - p));
    b->rest_labels = n_labels;
    b->tagset = tagset;
}

iocd_err store_batch_add(store_batch *b, const iocd_label *labels, size_t n_labels, int64_t t_ms,
                         double v, store_reject *why)
{
    return store_batch_add_tagged(b, labels, n_labels, 0, t_ms, v, why);
}

iocd_err store_batch_add_tagged(store_batch *b, const iocd_label *labels, size_t n_labels,
                                uint64_t tagset, int64_t t_ms, double v, store_reject *why)
{
    const store_limits *lim = store_limits_get(b->st);
    size_t key_start = b->keys.len;
    batch_item *it;
    uint64_t hash;
    iocd_err err;

    *why = STORE_REJECT_NONE;
    if (t_ms < b->now_ms - lim->retention_ms) {
        *why = STORE_REJECT_TOO_OLD;
        return IOCD_EINVAL;
    }
    if (t_ms > b->now_ms + lim->future_ms) {
        *why = STORE_REJECT_TOO_NEW;
        return IOCD_EINVAL;
    }
    if (b->n == BATCH_SAMPLES_MAX)
        return IOCD_ETOOBIG;
    if (b->n == b->cap) {
        size_t cap = b->cap != 0 ? b->cap * 2 : 1024;
        batch_item *grown = iocd_realloc(b->items, cap * sizeof(*grown));
        if (grown == NULL)
            return IOCD_ENOMEM;
        b->items = grown;
        b->cap = cap;
    }
    if (tagset != 0 && tagset == b->tagset && n_labels == b->rest_labels &&
        labels[0].name_len == 8 && memcmp(labels[0].name, "__name__", 8) == 0) {
        err = key_from_rest(b, lim, &labels[0], &hash, why);
        if (err != IOCD_OK)
            return err;
    } else {
        err = store_key_build(lim, labels, n_labels, &b->keys, why);
        if (err != IOCD_OK)
            return err;
        hash = store_key_hash(b->keys.data + key_start, b->keys.len - key_start);
        if (tagset != 0)
            cache_rest(b, labels, n_labels, tagset, (const uint8_t *)b->keys.data + key_start,
                       b->keys.len - key_start);
    }
    it = &b->items[b->n];
    it->key_len = (uint32_t)(b->keys.len - key_start);
    it->key_off = (uint32_t)key_start;
    it->hash = hash;
    /* Consecutive samples of one series (a batch of one device's history) share a key. The
     * hash goes first: keys of one metric often have one length, and comparing them byte by
     * byte up to the device's name cost more than the hash. */
    if (b->n > 0 && b->items[b->n - 1].hash == it->hash &&
        b->items[b->n - 1].key_len == it->key_len &&
        memcmp(b->keys.data + b->items[b->n - 1].key_off, b->keys.data + key_start, it->key_len) ==
            0) {
        b->keys.len = key_start;
        it->key_off = b->items[b->n - 1].key_off;
    }
    it->s.t_ms = t_ms;
    it->s.v = v;
    b->n++;
    return IOCD_OK;
}

iocd_err store_key_walk(const uint8_t *key, size_t len, store_label_fn fn, void *ud)
{
    const uint8_t *p = key, *end = key + len;
    uint64_t nl, vl;
    iocd_err err;

    while (p < end) {
        const char *name, *value;
        if (!store_varint_get(&p, end, &nl) || nl > (uint64_t)(end - p))
            return IOCD_ECORRUPT;
        name = (const char *)p;
        p += nl;
        if (!store_varint_get(&p, end, &vl) || vl > (uint64_t)(end - p))
            return IOCD_ECORRUPT;
        value = (const char *)p;
        p += vl;
        err = fn(ud, name, (size_t)nl, value, (size_t)vl);
        if (err != IOCD_OK)
            return err;
    }
    return IOCD_OK;
}

iocd_err store_wal_put(iocd_buf *b, uint64_t id, int64_t t, double v)
{
    iocd_err err = iocd_buf_reserve(b, STORE_WAL_ENTRY_MAX);
    uint8_t *w;
    size_t n;

    if (err != IOCD_OK)
        return err;
    w = (uint8_t *)b->data + b->len; /* encoded in place: this runs once per sample */
    n = store_varint_put(w, id);
    n += store_varint_put(w + n, ((uint64_t)t << 1) ^ ((uint64_t)0 - ((uint64_t)t >> 63)));
    memcpy(w + n, &v, 8);
    b->len += n + 8;
    return IOCD_OK;
}

bool store_wal_next(const uint8_t **p, const uint8_t *end, uint64_t *id, int64_t *t, double *v,
                    bool *corrupt)
{
    uint64_t zt;

    *corrupt = false;
    if (*p >= end)
        return false;
    if (!store_varint_get(p, end, id) || !store_varint_get(p, end, &zt) || end - *p < 8) {
        *corrupt = true;
        return false;
    }
    *t = (int64_t)(zt >> 1) ^ -(int64_t)(zt & 1);
    memcpy(v, *p, 8);
    *p += 8;
    return true;
}
