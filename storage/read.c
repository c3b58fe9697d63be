/* storage/read.c - reading series: ids, postings, labels, samples (blocks merged with the
 * head, the last write of a timestamp winning); rollups are read in rollup.c.
 * Readers never block the writer: blocks are read in LMDB read transactions, and the head
 * is copied under st->mu before them, so a seal in between can only show a sample twice
 * (removed), never lose it. */
#include "storage/storage_int.h"

#include <stdlib.h>
#include <string.h>

iocd_err store_series_all(store *st, uint64_t **ids_out, size_t *n_out)
{
    uint64_t *ids;
    size_t n = 0, i;

    pthread_mutex_lock(&st->mu);
    ids = iocd_malloc((st->n_series + 1) * sizeof(*ids));
    for (i = 0; ids != NULL && i < st->by_id_cap; i++)
        if (st->by_id[i] != NULL && st->by_id[i]->persisted && !st->by_id[i]->deleted)
            ids[n++] = st->by_id[i]->id;
    pthread_mutex_unlock(&st->mu);
    if (ids == NULL)
        return IOCD_ENOMEM;
    *ids_out = ids;
    *n_out = n;
    return IOCD_OK;
}

iocd_err store_postings(store *st, const char *name, const char *value, uint64_t **ids_out,
                        size_t *n_out)
{
    return store_db_postings(st->db, name, value, ids_out, n_out);
}

iocd_err store_label_values(store *st, const char *name, char ***values_out, size_t *n_out)
{
    return store_db_label_values(st->db, name, values_out, n_out);
}

iocd_err store_label_names(store *st, char ***names_out, size_t *n_out)
{
    return store_db_label_names(st->db, names_out, n_out);
}

iocd_err store_series_labels(store *st, uint64_t id, store_label_fn fn, void *ud)
{
    uint8_t *key = NULL;
    size_t len = 0;
    store_series *s;
    iocd_err err;

    pthread_mutex_lock(&st->mu);
    s = store_series_get(st, id);
    if (s != NULL) {
        key = iocd_malloc(s->key_len + 1);
        len = s->key_len;
        if (key != NULL)
            memcpy(key, s->key, len);
    }
    pthread_mutex_unlock(&st->mu);
    if (s == NULL)
        return IOCD_ENOTFOUND;
    if (key == NULL)
        return IOCD_ENOMEM;
    err = store_key_walk(key, len, fn, ud);
    iocd_free(key);
    return err;
}

typedef struct read_ctx {
    uint64_t id;
    int64_t start_ms, end_ms;
    iocd_sample *s;
    size_t n, cap;
    iocd_err err;
} read_ctx;

static iocd_err read_append(read_ctx *r, const iocd_sample *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (s[i].t_ms < r->start_ms || s[i].t_ms > r->end_ms)
            continue;
        if (r->n == r->cap) {
            size_t cap = r->cap != 0 ? r->cap * 2 : 256;
            iocd_sample *g = iocd_realloc(r->s, cap * sizeof(*g));
            if (g == NULL)
                return IOCD_ENOMEM;
            r->s = g;
            r->cap = cap;
        }
        r->s[r->n++] = s[i];
    }
    return IOCD_OK;
}

static iocd_err read_block(void *ud, int64_t period, int64_t last_ms, const void *data, size_t len)
{
    read_ctx *r = ud;
    iocd_sample *s = NULL;
    size_t n = 0;
    iocd_err err = codec_block_find(data, len, r->id, BLOCK_RAW_MAX, &s, &n);

    (void)period;
    (void)last_ms;
    if (err == IOCD_ENOTFOUND)
        return IOCD_OK;
    if (err == IOCD_OK)
        err = read_append(r, s, n);
    iocd_free(s);
    return err;
}

size_t store_samples_dedupe(iocd_sample *s, size_t n)
{
    size_t i, k = 0, w, lo, hi, mid;
    iocd_sample *tmp;

    for (i = 1; i < n && s[i - 1].t_ms < s[i].t_ms; i++)
        ;
    if (i >= n)
        return n; /* already strictly ascending: the common case */
    /* Insertion into the sorted prefix with binary search: stable, last write wins. */
    tmp = s;
    for (w = 1; w < n; w++) {
        iocd_sample x = tmp[w];
        lo = 0;
        hi = w;
        while (lo < hi) {
            mid = (lo + hi) / 2;
            if (tmp[mid].t_ms <= x.t_ms)
                lo = mid + 1;
            else
                hi = mid;
        }
        memmove(tmp + lo + 1, tmp + lo, (w - lo) * sizeof(*tmp));
        tmp[lo] = x;
    }
    for (i = 0; i < n; i++) {
        if (k > 0 && s[k - 1].t_ms == s[i].t_ms)
            s[k - 1] = s[i];
        else
            s[k++] = s[i];
    }
    return k;
}

iocd_err store_series_samples(const store_series *s, iocd_sample **out, size_t *n_out)
{
    iocd_sample *head = NULL, *all;
    size_t n = 0, i = 0, j = 0, k = 0;
    iocd_err err = store_head_decode(&s->head, &head, &n);

    if (err != IOCD_OK || s->n_sealing == 0) {
        *out = head;
        *n_out = n;
        return err;
    }
    all = iocd_malloc((n + s->n_sealing) * sizeof(*all));
    if (all == NULL) {
        iocd_free(head);
        return IOCD_ENOMEM;
    }
    while (i < n || j < s->n_sealing) {
        if (j == s->n_sealing || (i < n && head[i].t_ms <= s->sealing[j].t_ms)) {
            if (j < s->n_sealing && head[i].t_ms == s->sealing[j].t_ms)
                j++; /* a later write of the same timestamp */
            all[k++] = head[i++];
        } else {
            all[k++] = s->sealing[j++];
        }
    }
    iocd_free(head);
    *out = all;
    *n_out = k;
    return IOCD_OK;
}

iocd_err store_series_samples_in(const store_series *s, int64_t lo, int64_t hi, iocd_sample **out,
                                 size_t *n_out)
{
    iocd_sample *all = NULL;
    size_t n_all = 0, a = 0, b;
    iocd_err err = store_series_samples(s, &all, &n_all);

    if (err != IOCD_OK)
        return err;
    while (a < n_all && all[a].t_ms < lo)
        a++;
    for (b = a; b < n_all && all[b].t_ms <= hi; b++)
        ;
    memmove(all, all + a, (b - a) * sizeof(*all));
    *out = all;
    *n_out = b - a;
    return IOCD_OK;
}

size_t store_id_find(const uint64_t *ids, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n, mid;

    while (lo < hi) {
        mid = (lo + hi) / 2;
        if (ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && ids[lo] == id ? lo : n;
}

iocd_err store_read(store *st, uint64_t id, int64_t start_ms, int64_t end_ms, iocd_sample **out,
                    size_t *n_out)
{
    read_ctx r;
    iocd_sample *head = NULL;
    size_t n_head = 0;
    store_series *s;
    iocd_err err = IOCD_OK;

    memset(&r, 0, sizeof(r));
    r.id = id;
    r.start_ms = start_ms;
    r.end_ms = end_ms;
    /* The head first, then the blocks: a seal in between can only show a sample twice
     * (removed below), never lose it. */
    pthread_mutex_lock(&st->mu);
    s = store_series_get(st, id);
    if (s != NULL && store_series_samples_in(s, start_ms, end_ms, &head, &n_head) != IOCD_OK)
        head = NULL;
    pthread_mutex_unlock(&st->mu);
    if (s == NULL)
        return IOCD_ENOTFOUND;
    if (head == NULL)
        return IOCD_ENOMEM;
    err = store_db_blocks(st->db, STORE_DB_CHUNKS, id >> 6,
                          start_ms == INT64_MIN ? INT64_MIN : store_period_of(st, start_ms), end_ms,
                          read_block, &r);
    if (err == IOCD_OK)
        err = read_append(&r, head, n_head);
    iocd_free(head);
    if (err != IOCD_OK) {
        iocd_free(r.s);
        return err;
    }
    if (r.s == NULL) {
        r.s = iocd_malloc(sizeof(*r.s));
        if (r.s == NULL)
            return IOCD_ENOMEM;
    }
    *out = r.s;
    *n_out = store_samples_dedupe(r.s, r.n);
    return IOCD_OK;
}

/* ---- Many series ----------------------------------------------------------------------- */

#define GROUP_SHIFT 6 /* a block holds the series of one id group: id >> 6 */

typedef struct many_ctx {
    const uint64_t *ids; /* the wanted ids of the current group */
    size_t n;
    read_ctx *r; /* one per wanted id */
} many_ctx;

static iocd_err many_series(void *ud, uint64_t id, const iocd_sample *s, size_t n)
{
    many_ctx *m = ud;
    size_t k = store_id_find(m->ids, m->n, id); /* the wanted ids are ascending */

    return k == m->n ? IOCD_OK : read_append(&m->r[k], s, n);
}

static iocd_err many_block(void *ud, int64_t period, int64_t last_ms, const void *data, size_t len)
{
    many_ctx *m = ud;

    (void)period;
    (void)last_ms;
    return codec_block_select(data, len, BLOCK_RAW_MAX, m->ids, m->n, many_series, ud);
}

iocd_err store_read_many(store *st, const uint64_t *ids, size_t n, int64_t start_ms, int64_t end_ms,
                         store_series_fn fn, void *ud)
{
    read_ctx r[1 << GROUP_SHIFT];
    iocd_sample *head[1 << GROUP_SHIFT];
    size_t n_head[1 << GROUP_SHIFT];
    size_t i = 0, j, k, g;
    iocd_err err = IOCD_OK;
    int64_t from = start_ms == INT64_MIN ? INT64_MIN : store_period_of(st, start_ms);

    while (err == IOCD_OK && i < n) {
        uint64_t group = ids[i] >> GROUP_SHIFT;
        many_ctx m;
        for (g = i; g < n && ids[g] >> GROUP_SHIFT == group; g++)
            ;
        g -= i; /* ids[i .. i+g) share a block */
        memset(r, 0, g * sizeof(*r));
        /* The heads first, then the blocks (see store_read). */
        pthread_mutex_lock(&st->mu);
        for (j = 0; j < g; j++) {
            store_series *s = store_series_get(st, ids[i + j]);
            r[j].id = ids[i + j];
            r[j].start_ms = start_ms;
            r[j].end_ms = end_ms;
            head[j] = NULL;
            n_head[j] = 0;
            if (s == NULL || (s->head.n == 0 && s->head.n_ooo == 0 && s->n_sealing == 0))
                continue;
            if (store_series_samples_in(s, start_ms, end_ms, &head[j], &n_head[j]) != IOCD_OK)
                err = IOCD_ENOMEM;
        }
        pthread_mutex_unlock(&st->mu);
        m.ids = ids + i;
        m.n = g;
        m.r = r;
        if (err == IOCD_OK)
            err = store_db_blocks(st->db, STORE_DB_CHUNKS, group, from, end_ms, many_block, &m);
        for (j = 0; err == IOCD_OK && j < g; j++) {
            err = read_append(&r[j], head[j], n_head[j]);
            if (err == IOCD_OK)
                err = fn(ud, i + j, r[j].s, store_samples_dedupe(r[j].s, r[j].n));
        }
        for (k = 0; k < g; k++) {
            iocd_free(head[k]);
            iocd_free(r[k].s);
        }
        i += g;
    }
    return err;
}
