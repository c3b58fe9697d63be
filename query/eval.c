/* query/eval.c - evaluates a PromQL tree over the store. Every node is evaluated once for all
 * steps of the query (a range query is not n instant queries): an instant vector is a set
 * of series with one value slot per step, a range vector holds raw samples and is cut into
 * windows by the function that consumes it. Selectors read all their series' samples in one
 * batched pass (store_read_many). Semantics follow Prometheus 2.42: lookback [t-5m, t],
 * range windows [t-range, t], staleness markers end a series, subquery steps aligned to
 * multiples of the step. Limits (series, samples, deadline) are checked as work proceeds. */
#include "query/query_int.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STALE_BITS 0x7ff0000000000002ULL

static bool is_stale(double v)
{
    uint64_t bits;

    memcpy(&bits, &v, sizeof(bits));
    return bits == STALE_BITS;
}

iocd_err pq_error(pq_eval *ev, iocd_err err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(ev->errbuf, ev->errlen, fmt, ap);
    va_end(ap);
    return err;
}

iocd_err pq_check_deadline(pq_eval *ev)
{
    if (ev->deadline_ns != 0 && iocd_mono_ns() > ev->deadline_ns)
        return pq_error(ev, IOCD_ETIMEDOUT, "query timed out in expression evaluation");
    return IOCD_OK;
}

/* Counts n more samples held by the query against its limit. */
static iocd_err hold(pq_eval *ev, uint64_t n)
{
    ev->samples_held += n;
    if (ev->lim.max_samples != 0 && ev->samples_held > ev->lim.max_samples)
        return pq_error(ev, IOCD_ELIMIT,
                        "query processing would load too many samples into memory in query "
                        "execution (limit %zu; narrow the selection or the range)",
                        ev->lim.max_samples);
    return IOCD_OK;
}

/* ---- Values ------------------------------------------------------------------------------ */

void pq_value_fini(pq_value *v)
{
    size_t i;

    for (i = 0; i < v->n; i++) {
        lset_fini(&v->s[i].ls);
        iocd_free(v->s[i].v);
        iocd_free(v->s[i].ts);
        iocd_free(v->s[i].pts);
    }
    iocd_free(v->s);
    iocd_free(v->scalar);
    iocd_free(v->str);
    memset(v, 0, sizeof(*v));
}

iocd_err pq_scalar_alloc(pq_eval *ev, pq_value *out)
{
    memset(out, 0, sizeof(*out));
    out->type = QUERY_SCALAR;
    out->scalar = iocd_calloc(ev->n_steps, sizeof(double));
    return out->scalar != NULL ? IOCD_OK : IOCD_ENOMEM;
}

/* Gives series s its per-step arrays (values unset). */
static iocd_err series_alloc(pq_eval *ev, pq_series *s)
{
    s->v = iocd_malloc(ev->n_steps * (sizeof(double) + 1));
    if (s->v == NULL)
        return IOCD_ENOMEM;
    s->ok = (uint8_t *)(s->v + ev->n_steps);
    memset(s->ok, 0, ev->n_steps);
    return IOCD_OK;
}

iocd_err pq_vector_alloc(pq_eval *ev, pq_value *out, size_t n)
{
    size_t i;
    iocd_err err;

    memset(out, 0, sizeof(*out));
    out->type = QUERY_VECTOR;
    err = hold(ev, (uint64_t)n * ev->n_steps);
    if (err != IOCD_OK)
        return err;
    out->s = iocd_calloc(n + 1, sizeof(*out->s));
    if (out->s == NULL)
        return IOCD_ENOMEM;
    out->n = n;
    for (i = 0; i < n; i++)
        if (series_alloc(ev, &out->s[i]) != IOCD_OK)
            return IOCD_ENOMEM;
    return IOCD_OK;
}

/* ---- Label-set index --------------------------------------------------------------------- */

void pq_index_init(pq_index *ix)
{
    memset(ix, 0, sizeof(*ix));
}

void pq_index_fini(pq_index *ix)
{
    iocd_free(ix->slots);
    iocd_free(ix->keys);
    memset(ix, 0, sizeof(*ix));
}

static iocd_err index_grow(pq_index *ix)
{
    size_t cap = ix->cap != 0 ? ix->cap * 2 : 64, i;
    uint32_t *slots = iocd_calloc(cap, sizeof(*slots));

    if (slots == NULL)
        return IOCD_ENOMEM;
    for (i = 0; i < ix->n; i++) {
        size_t h = (size_t)lset_hash(ix->keys[i].s, ix->keys[i].len) & (cap - 1);
        while (slots[h] != 0)
            h = (h + 1) & (cap - 1);
        slots[h] = (uint32_t)i + 1;
    }
    iocd_free(ix->slots);
    ix->slots = slots;
    ix->cap = cap;
    return IOCD_OK;
}

iocd_err pq_index_find(pq_index *ix, const lset *ls, bool add, size_t *idx_out)
{
    size_t h;

    if (ix->cap == 0 || (ix->n + 1) * 2 > ix->cap) {
        iocd_err err = index_grow(ix);
        if (err != IOCD_OK)
            return err;
    }
    h = (size_t)lset_hash(ls->s, ls->len) & (ix->cap - 1);
    while (ix->slots[h] != 0) {
        size_t i = ix->slots[h] - 1;
        if (lset_equal(&ix->keys[i], ls)) {
            *idx_out = i;
            return IOCD_OK;
        }
        h = (h + 1) & (ix->cap - 1);
    }
    if (!add) {
        *idx_out = SIZE_MAX;
        return IOCD_OK;
    }
    if (ix->n == ix->keys_cap) {
        size_t cap = ix->keys_cap != 0 ? ix->keys_cap * 2 : 64;
        lset *grown = iocd_realloc(ix->keys, cap * sizeof(*grown));
        if (grown == NULL)
            return IOCD_ENOMEM;
        ix->keys = grown;
        ix->keys_cap = cap;
    }
    ix->keys[ix->n] = *ls;
    ix->slots[h] = (uint32_t)ix->n + 1;
    *idx_out = ix->n++;
    return IOCD_OK;
}

iocd_err pq_vector_finish(pq_eval *ev, pq_value *v)
{
    pq_index ix;
    size_t i, k = 0, j, at;
    iocd_err err = IOCD_OK;

    pq_index_init(&ix);
    for (i = 0; i < v->n; i++) {
        pq_series *s = &v->s[i];
        bool any = false;
        if (s->drop_name && lset_get(&s->ls, "__name__") != NULL) {
            lset tmp;
            err = lset_filter(&s->ls, NULL, 0, false, true, &tmp);
            if (err != IOCD_OK)
                break;
            lset_fini(&s->ls);
            s->ls = tmp;
        }
        s->drop_name = false;
        for (j = 0; j < ev->n_steps && !any; j++)
            any = s->ok[j] != 0;
        if (!any) {
            lset_fini(&s->ls);
            iocd_free(s->v);
            iocd_free(s->ts);
            continue;
        }
        err = pq_index_find(&ix, &s->ls, true, &at);
        if (err != IOCD_OK)
            break;
        if (at < k) { /* the same labels as an earlier series: merge unless they overlap */
            pq_series *o = &v->s[at];
            for (j = 0; j < ev->n_steps; j++) {
                if (!s->ok[j])
                    continue;
                if (o->ok[j]) {
                    char buf[256];
                    lset_format(&s->ls, buf, sizeof(buf));
                    err = pq_error(ev, IOCD_EINVAL,
                                   "vector cannot contain metrics with the same labelset %s", buf);
                    break;
                }
                o->ok[j] = 1;
                o->v[j] = s->v[j];
                if (o->ts != NULL && s->ts != NULL)
                    o->ts[j] = s->ts[j];
            }
            lset_fini(&s->ls);
            iocd_free(s->v);
            iocd_free(s->ts);
            if (err != IOCD_OK) {
                i++;
                break;
            }
            continue;
        }
        v->s[k] = *s;
        ix.keys[at] = v->s[k].ls; /* the index points at the moved series' labels */
        k++;
    }
    /* On error, free what was not kept or moved yet. */
    for (; i < v->n; i++) {
        lset_fini(&v->s[i].ls);
        iocd_free(v->s[i].v);
        iocd_free(v->s[i].ts);
    }
    v->n = k;
    pq_index_fini(&ix);
    return err;
}

/* ---- Time ---------------------------------------------------------------------------------- */

int64_t pq_ref_time(const pq_eval *ev, pq_at at, int64_t at_ms, int64_t offset_ms, int64_t t)
{
    switch (at) {
    case PQ_AT_TIME:
        t = at_ms;
        break;
    case PQ_AT_START:
        t = ev->q_start;
        break;
    case PQ_AT_END:
        t = ev->q_end;
        break;
    case PQ_AT_NONE:
        break;
    }
    return t - offset_ms;
}

void pq_window(const pq_eval *ev, const pq_value *v, int64_t t, int64_t *lo, int64_t *hi)
{
    *hi = pq_ref_time(ev, v->at, v->at_ms, v->offset_ms, t);
    *lo = *hi - v->range_ms;
}

/* ---- Selectors --------------------------------------------------------------------------- */

typedef struct labels_ctx {
    iocd_buf b;
} labels_ctx;

static iocd_err collect_label(void *ud, const char *name, size_t name_len, const char *value,
                              size_t value_len)
{
    labels_ctx *c = ud;
    iocd_err err = iocd_buf_append(&c->b, name, name_len);

    if (err == IOCD_OK)
        err = iocd_buf_putc(&c->b, '\0');
    if (err == IOCD_OK)
        err = iocd_buf_append(&c->b, value, value_len);
    if (err == IOCD_OK)
        err = iocd_buf_putc(&c->b, '\0');
    return err;
}

/* Selects the series of a selector and fills out->s[i].ls; out->n is their number. */
static iocd_err select_series(pq_eval *ev, const pq_node *sel, pq_value *out, uint64_t **ids_out)
{
    uint64_t *ids = NULL;
    size_t n = 0, i;
    iocd_err err;

    err = query_select(ev->st, &sel->sel, &ids, &n);
    if (err != IOCD_OK)
        return err;
    if (ev->lim.max_series != 0 && n > ev->lim.max_series) {
        iocd_free(ids);
        return pq_error(ev, IOCD_ELIMIT,
                        "the selector matches %zu series, over the limit of %zu per selector "
                        "(narrow it with more labels)",
                        n, ev->lim.max_series);
    }
    out->s = iocd_calloc(n + 1, sizeof(*out->s));
    if (out->s == NULL) {
        iocd_free(ids);
        return IOCD_ENOMEM;
    }
    out->n = n;
    for (i = 0; i < n; i++) {
        labels_ctx c;
        iocd_buf_init(&c.b, 0);
        err = store_series_labels(ev->st, ids[i], collect_label, &c);
        if (err == IOCD_ENOTFOUND)
            err = IOCD_OK; /* deleted meanwhile: no labels, no samples; dropped later */
        if (err != IOCD_OK) {
            iocd_buf_fini(&c.b);
            iocd_free(ids);
            return err;
        }
        out->s[i].ls.len = (uint32_t)c.b.len;
        out->s[i].ls.s = iocd_buf_take(&c.b, NULL);
        if (out->s[i].ls.s == NULL) {
            out->s[i].ls.s = iocd_malloc(1);
            if (out->s[i].ls.s == NULL) {
                iocd_free(ids);
                return IOCD_ENOMEM;
            }
            out->s[i].ls.s[0] = '\0';
        }
    }
    *ids_out = ids;
    return IOCD_OK;
}

typedef struct vsel_ctx {
    pq_eval *ev;
    const pq_node *n;
    pq_value *out;
    bool want_ts;
    size_t base; /* index of the first series this context reads (parallel halves) */
} vsel_ctx;

/* For each step: the newest sample in [ref - lookback, ref], unless it is a staleness
 * marker. Steps ascend, so one pointer walks the samples once. */
static iocd_err vsel_series(void *ud, size_t i, const iocd_sample *s, size_t n)
{
    vsel_ctx *c = ud;
    pq_eval *ev = c->ev;
    pq_series *ps = &c->out->s[c->base + i];
    size_t j, k = 0;
    iocd_err err;

    ev->samples_loaded += n;
    err = hold(ev, n + ev->n_steps);
    if (err == IOCD_OK)
        err = series_alloc(ev, ps);
    if (err == IOCD_OK && c->want_ts) {
        ps->ts = iocd_calloc(ev->n_steps, sizeof(*ps->ts));
        if (ps->ts == NULL)
            err = IOCD_ENOMEM;
    }
    if (err == IOCD_OK && (i & 255) == 0)
        err = pq_check_deadline(ev);
    if (err != IOCD_OK)
        return err;
    for (j = 0; j < ev->n_steps; j++) {
        int64_t ref = pq_ref_time(ev, c->n->at, c->n->at_ms, c->n->offset_ms, pq_step_t(ev, j));
        while (k < n && s[k].t_ms <= ref)
            k++;
        if (c->n->at != PQ_AT_NONE && j > 0) { /* the same time at every step */
            ps->ok[j] = ps->ok[0];
            ps->v[j] = ps->v[0];
            if (ps->ts != NULL)
                ps->ts[j] = ps->ts[0];
            continue;
        }
        if (k == 0 || s[k - 1].t_ms < ref - ev->lim.lookback_ms || is_stale(s[k - 1].v))
            continue;
        ps->ok[j] = 1;
        ps->v[j] = s[k - 1].v;
        if (ps->ts != NULL)
            ps->ts[j] = s[k - 1].t_ms;
    }
    return IOCD_OK;
}

/* ---- Reading selections on two cores ----------------------------------------------------
 * A large selection is read in two halves, the second on a helper thread with its own copy of
 * the evaluation state (counters and error text are merged after), so one dashboard query
 * uses both cores of a small machine. Halves split at an id-group boundary, so no sealed
 * block is decompressed twice. */

#define PARALLEL_MIN 2048 /* series below which one thread reads */

typedef struct half_job {
    pq_eval ev;
    char errbuf[512];
    const uint64_t *ids;
    size_t n;
    int64_t from, to;
    store_series_fn fn;
    void *ctx;
    iocd_err err;
} half_job;

static void *half_thread(void *ud)
{
    half_job *j = ud;

    j->err = store_read_many(j->ev.st, j->ids, j->n, j->from, j->to, j->fn, j->ctx);
    return NULL;
}

/* Reads ids into the callbacks; ctx_b is the second half's context (its ev set to the
 * helper's copy, its base to the split) and is used only when the read is split. */
static iocd_err read_selection(pq_eval *ev, const uint64_t *ids, size_t n, int64_t from, int64_t to,
                               store_series_fn fn, void *ctx_a, void *ctx_b, pq_eval **ev_b,
                               size_t *base_b)
{
    half_job *j;
    pthread_t t;
    size_t mid = n / 2;
    uint64_t held0;
    iocd_err err;

    if (n < PARALLEL_MIN)
        return store_read_many(ev->st, ids, n, from, to, fn, ctx_a);
    while (mid < n && ids[mid] >> 6 == ids[mid - 1] >> 6)
        mid++;
    j = iocd_calloc(1, sizeof(*j));
    if (j == NULL)
        return store_read_many(ev->st, ids, n, from, to, fn, ctx_a);
    held0 = ev->samples_held;
    j->ev = *ev;
    j->ev.errbuf = j->errbuf;
    j->ev.errlen = sizeof(j->errbuf);
    j->ev.samples_loaded = 0;
    j->ids = ids + mid;
    j->n = n - mid;
    j->from = from;
    j->to = to;
    j->fn = fn;
    j->ctx = ctx_b;
    *ev_b = &j->ev;
    *base_b = mid;
    if (pthread_create(&t, NULL, half_thread, j) != 0) {
        iocd_free(j);
        return store_read_many(ev->st, ids, n, from, to, fn, ctx_a);
    }
    err = store_read_many(ev->st, ids, mid, from, to, fn, ctx_a);
    pthread_join(t, NULL);
    ev->samples_loaded += j->ev.samples_loaded;
    if (err == IOCD_OK && j->err != IOCD_OK) {
        err = j->err;
        snprintf(ev->errbuf, ev->errlen, "%s", j->errbuf);
    }
    if (err == IOCD_OK) /* the halves counted against the limit apart: check the sum */
        err = hold(ev, j->ev.samples_held - held0);
    iocd_free(j);
    return err;
}

/* The span of reference times a node with (at, offset) covers over the query's steps. */
static void ref_span(const pq_eval *ev, pq_at at, int64_t at_ms, int64_t offset_ms, int64_t *lo,
                     int64_t *hi)
{
    *lo = pq_ref_time(ev, at, at_ms, offset_ms, ev->start);
    *hi = pq_ref_time(ev, at, at_ms, offset_ms, ev->end);
}

iocd_err pq_eval_selector(pq_eval *ev, const pq_node *n, bool want_ts, pq_value *out)
{
    uint64_t *ids = NULL;
    int64_t lo, hi;
    vsel_ctx c = { ev, n, out, want_ts, 0 }, c2 = c;
    iocd_err err;

    memset(out, 0, sizeof(*out));
    out->type = QUERY_VECTOR;
    err = select_series(ev, n, out, &ids);
    if (err != IOCD_OK)
        return err;
    ref_span(ev, n->at, n->at_ms, n->offset_ms, &lo, &hi);
    err = read_selection(ev, ids, out->n, lo - ev->lim.lookback_ms, hi, vsel_series, &c, &c2,
                         &c2.ev, &c2.base);
    iocd_free(ids);
    if (err == IOCD_OK) {
        size_t i;
        for (i = 0; i < out->n && err == IOCD_OK; i++)
            if (out->s[i].v == NULL)
                err = series_alloc(ev, &out->s[i]);
    }
    return err; /* in id order: a metric's series in creation order, as Prometheus reads them */
}

typedef struct msel_ctx {
    pq_eval *ev;
    pq_value *out;
    size_t base;
} msel_ctx;

static iocd_err msel_series(void *ud, size_t i, const iocd_sample *s, size_t n)
{
    msel_ctx *c = ud;
    pq_series *ps = &c->out->s[c->base + i];
    size_t j, k = 0;
    iocd_err err;

    c->ev->samples_loaded += n;
    err = hold(c->ev, n);
    if (err == IOCD_OK && (i & 255) == 0)
        err = pq_check_deadline(c->ev);
    if (err != IOCD_OK)
        return err;
    ps->pts = iocd_malloc((n + 1) * sizeof(*ps->pts));
    if (ps->pts == NULL)
        return IOCD_ENOMEM;
    for (j = 0; j < n; j++)
        if (!is_stale(s[j].v)) /* range windows skip staleness markers */
            ps->pts[k++] = s[j];
    ps->n_pts = k;
    return IOCD_OK;
}

static iocd_err eval_matrix_selector(pq_eval *ev, const pq_node *n, pq_value *out)
{
    const pq_node *vs = n->args[0];
    uint64_t *ids = NULL;
    int64_t lo, hi;
    msel_ctx c = { ev, out, 0 }, c2 = c;
    iocd_err err;

    memset(out, 0, sizeof(*out));
    out->type = QUERY_MATRIX;
    out->range_ms = n->range_ms;
    out->offset_ms = vs->offset_ms;
    out->at = vs->at;
    out->at_ms = vs->at_ms;
    out->sel = vs;
    err = select_series(ev, vs, out, &ids);
    if (err != IOCD_OK)
        return err;
    ref_span(ev, vs->at, vs->at_ms, vs->offset_ms, &lo, &hi);
    err = read_selection(ev, ids, out->n, lo - n->range_ms, hi, msel_series, &c, &c2, &c2.ev,
                         &c2.base);
    iocd_free(ids);
    return err;
}

/* ---- Subqueries -------------------------------------------------------------------------- */

static iocd_err eval_subquery(pq_eval *ev, const pq_node *n, pq_value *out)
{
    pq_eval sub = *ev;
    pq_value inner;
    int64_t lo, hi, step = n->step_ms != 0 ? n->step_ms : ev->lim.subquery_step_ms, first;
    size_t i, j, k;
    iocd_err err;

    memset(out, 0, sizeof(*out));
    ref_span(ev, n->at, n->at_ms, n->offset_ms, &lo, &hi);
    /* The first step at or after lo - range that is a multiple of the step. */
    first = step * ((lo - n->range_ms) / step);
    if (first < lo - n->range_ms)
        first += step;
    if (first > hi) {
        out->type = QUERY_MATRIX;
        out->range_ms = n->range_ms;
        out->offset_ms = n->offset_ms;
        out->at = n->at;
        out->at_ms = n->at_ms;
        return IOCD_OK;
    }
    sub.start = first;
    sub.end = hi;
    sub.step = step;
    sub.n_steps = (size_t)((hi - first) / step) + 1;
    if (ev->lim.max_points != 0 && sub.n_steps > ev->lim.max_points * 100)
        return pq_error(ev, IOCD_ELIMIT,
                        "subquery would evaluate %zu steps; use a longer subquery step",
                        sub.n_steps);
    err = pq_eval_node(&sub, n->args[0], &inner);
    ev->samples_loaded = sub.samples_loaded;
    ev->samples_held = sub.samples_held;
    if (err != IOCD_OK)
        return err;
    if (inner.type != QUERY_VECTOR) { /* the parser only lets instant vectors through */
        pq_value_fini(&inner);
        return pq_error(ev, IOCD_EINVAL, "subquery needs an instant vector");
    }
    *out = inner;
    out->type = QUERY_MATRIX;
    out->range_ms = n->range_ms;
    out->offset_ms = n->offset_ms;
    out->at = n->at;
    out->at_ms = n->at_ms;
    out->sel = NULL;
    for (i = 0; i < out->n; i++) {
        pq_series *s = &out->s[i];
        s->pts = iocd_malloc((sub.n_steps + 1) * sizeof(*s->pts));
        if (s->pts == NULL)
            return IOCD_ENOMEM;
        for (j = 0, k = 0; j < sub.n_steps; j++)
            if (s->ok[j])
                s->pts[k++] = (iocd_sample){ pq_step_t(&sub, j), s->v[j] };
        s->n_pts = k;
        iocd_free(s->v);
        s->v = NULL;
        s->ok = NULL;
        iocd_free(s->ts);
        s->ts = NULL;
    }
    return IOCD_OK;
}

/* ---- Unary minus --------------------------------------------------------------------------- */

static iocd_err eval_neg(pq_eval *ev, const pq_node *n, pq_value *out)
{
    iocd_err err = pq_eval_node(ev, n->args[0], out);
    size_t i, j;

    if (err != IOCD_OK)
        return err;
    if (out->type == QUERY_SCALAR) {
        for (j = 0; j < ev->n_steps; j++)
            out->scalar[j] = -out->scalar[j];
        return IOCD_OK;
    }
    for (i = 0; i < out->n; i++) {
        for (j = 0; j < ev->n_steps; j++)
            out->s[i].v[j] = -out->s[i].v[j];
        out->s[i].drop_name = true;
    }
    return pq_vector_finish(ev, out);
}

/* ---- Binary operators ---------------------------------------------------------------------- */

static bool is_cmp(pq_op op)
{
    return op >= PQ_OP_EQL && op <= PQ_OP_LTE;
}

/* Whether the operation drops __name__: arithmetic and bool comparisons do; filters and,
 * as Prometheus 2.42 has it, atan2 keep it. */
static bool drops_name(const pq_node *n)
{
    if (n->op == PQ_OP_ATAN2)
        return false;
    return !is_cmp(n->op) || n->ret_bool;
}

/* lhs op rhs; for comparisons *keep says whether the comparison holds. */
static double binop(pq_op op, double l, double r, bool *keep)
{
    *keep = true;
    switch (op) {
    case PQ_OP_ADD:
        return l + r;
    case PQ_OP_SUB:
        return l - r;
    case PQ_OP_MUL:
        return l * r;
    case PQ_OP_DIV:
        return l / r;
    case PQ_OP_MOD:
        return fmod(l, r);
    case PQ_OP_POW:
        return pow(l, r);
    case PQ_OP_ATAN2:
        return atan2(l, r);
    case PQ_OP_EQL:
        *keep = l == r;
        return l;
    case PQ_OP_NEQ:
        *keep = l != r;
        return l;
    case PQ_OP_GTR:
        *keep = l > r;
        return l;
    case PQ_OP_LSS:
        *keep = l < r;
        return l;
    case PQ_OP_GTE:
        *keep = l >= r;
        return l;
    case PQ_OP_LTE:
        *keep = l <= r;
        return l;
    default:
        break;
    }
    return NAN;
}

static iocd_err binary_scalars(pq_eval *ev, const pq_node *n, pq_value *l, pq_value *r,
                               pq_value *out)
{
    size_t j;

    for (j = 0; j < ev->n_steps; j++) {
        bool keep;
        double v = binop(n->op, l->scalar[j], r->scalar[j], &keep);
        l->scalar[j] = is_cmp(n->op) ? (keep ? 1.0 : 0.0) : v;
    }
    *out = *l;
    memset(l, 0, sizeof(*l));
    return IOCD_OK;
}

/* vector op scalar (or scalar op vector when swap). */
static iocd_err binary_vector_scalar(pq_eval *ev, const pq_node *n, pq_value *vec, const double *sc,
                                     bool swap, pq_value *out)
{
    size_t i, j;

    for (i = 0; i < vec->n; i++) {
        pq_series *s = &vec->s[i];
        for (j = 0; j < ev->n_steps; j++) {
            bool keep;
            double v;
            if (!s->ok[j])
                continue;
            v = swap ? binop(n->op, sc[j], s->v[j], &keep) : binop(n->op, s->v[j], sc[j], &keep);
            if (is_cmp(n->op)) {
                if (n->ret_bool)
                    v = keep ? 1.0 : 0.0;
                else if (!keep)
                    s->ok[j] = 0;
                else
                    v = s->v[j]; /* a filter keeps the vector's own value */
            }
            s->v[j] = v;
        }
        if (drops_name(n))
            s->drop_name = true;
        iocd_free(s->ts);
        s->ts = NULL;
    }
    *out = *vec;
    memset(vec, 0, sizeof(*vec));
    return pq_vector_finish(ev, out);
}

/* The matching signature of each series of v (on/ignoring), as indexes into sigs. */
static iocd_err signatures(const pq_node *n, const pq_value *v, pq_index *sigs, size_t *sig_of)
{
    size_t i;

    for (i = 0; i < v->n; i++) {
        lset key;
        size_t at;
        iocd_err err = lset_filter(&v->s[i].ls, n->match, n->n_match, n->on, !n->on, &key);
        if (err != IOCD_OK)
            return err;
        err = pq_index_find(sigs, &key, true, &at);
        if (err != IOCD_OK) {
            lset_fini(&key);
            return err;
        }
        if (sigs->keys[at].s != key.s)
            lset_fini(&key);
        sig_of[i] = at;
    }
    return IOCD_OK;
}

static void free_index_keys(pq_index *ix)
{
    size_t i;

    for (i = 0; i < ix->n; i++)
        lset_fini(&ix->keys[i]);
    pq_index_fini(ix);
}

/* and, or, unless: per step, which signatures the right side has. */
static iocd_err binary_set(pq_eval *ev, const pq_node *n, pq_value *l, pq_value *r, pq_value *out)
{
    pq_index sigs;
    size_t *sl = NULL, *sr = NULL, i, j;
    uint32_t *mark = NULL;
    iocd_err err;

    pq_index_init(&sigs);
    sl = iocd_malloc((l->n + 1) * sizeof(*sl));
    sr = iocd_malloc((r->n + 1) * sizeof(*sr));
    err = sl != NULL && sr != NULL ? IOCD_OK : IOCD_ENOMEM;
    if (err == IOCD_OK)
        err = signatures(n, l, &sigs, sl);
    if (err == IOCD_OK)
        err = signatures(n, r, &sigs, sr);
    if (err == IOCD_OK) {
        mark = iocd_calloc(sigs.n + 1, sizeof(*mark));
        if (mark == NULL)
            err = IOCD_ENOMEM;
    }
    for (j = 0; err == IOCD_OK && j < ev->n_steps; j++) {
        uint32_t stamp = (uint32_t)j + 1;
        if (n->op == PQ_OP_OR) {
            for (i = 0; i < l->n; i++)
                if (l->s[i].ok[j])
                    mark[sl[i]] = stamp;
            for (i = 0; i < r->n; i++)
                if (r->s[i].ok[j] && mark[sr[i]] == stamp)
                    r->s[i].ok[j] = 0;
        } else {
            for (i = 0; i < r->n; i++)
                if (r->s[i].ok[j])
                    mark[sr[i]] = stamp;
            for (i = 0; i < l->n; i++)
                if (l->s[i].ok[j] && (mark[sl[i]] == stamp) != (n->op == PQ_OP_AND))
                    l->s[i].ok[j] = 0;
        }
    }
    iocd_free(sl);
    iocd_free(sr);
    iocd_free(mark);
    free_index_keys(&sigs);
    if (err != IOCD_OK)
        return err;
    if (n->op == PQ_OP_OR && r->n > 0) {
        pq_series *grown = iocd_realloc(l->s, (l->n + r->n + 1) * sizeof(*grown));
        if (grown == NULL)
            return IOCD_ENOMEM;
        memcpy(grown + l->n, r->s, r->n * sizeof(*grown));
        l->s = grown;
        l->n += r->n;
        iocd_free(r->s);
        r->s = NULL;
        r->n = 0;
    }
    *out = *l;
    memset(l, 0, sizeof(*l));
    return pq_vector_finish(ev, out);
}

/* The labels of a result of a matched pair (many = the "many" side, one = the other). */
static iocd_err result_labels(const pq_node *n, const lset *many, const lset *one, lset *out)
{
    lset a, b;
    iocd_err err;
    size_t i;
    bool drop = drops_name(n);

    if (n->card == PQ_CARD_ONE_TO_ONE) {
        if (n->on)
            err = lset_filter(many, n->match, n->n_match, true, drop, &a);
        else
            err = lset_filter(many, n->match, n->n_match, false, drop, &a);
    } else {
        err = lset_filter(many, NULL, 0, false, drop, &a);
    }
    for (i = 0; err == IOCD_OK && i < n->n_include; i++) {
        const char *v = lset_get(one, n->include[i]);
        err = lset_set(&a, n->include[i], v != NULL ? v : "", &b);
        if (err == IOCD_OK) {
            lset_fini(&a);
            a = b;
        }
    }
    if (err != IOCD_OK) {
        lset_fini(&a);
        return err;
    }
    *out = a;
    return IOCD_OK;
}

typedef struct pair_out {
    size_t one; /* the "one" side series it was computed for (SIZE_MAX: none yet) */
    size_t out; /* the output series */
} pair_out;

static iocd_err binary_vectors(pq_eval *ev, const pq_node *n, pq_value *l, pq_value *r,
                               pq_value *out)
{
    bool swap = n->card == PQ_CARD_ONE_TO_MANY;
    pq_value *many = swap ? r : l, *one = swap ? l : r;
    pq_index sigs, outs;
    size_t *sm = NULL, *so = NULL, i, j, cap = 0;
    size_t *one_at = NULL; /* per signature: the "one" series present at this step */
    uint32_t *one_stamp = NULL, *many_stamp = NULL;
    pair_out *po = NULL;
    uint32_t *out_stamp = NULL;
    iocd_err err;

    memset(out, 0, sizeof(*out));
    out->type = QUERY_VECTOR;
    pq_index_init(&sigs);
    pq_index_init(&outs);
    sm = iocd_malloc((many->n + 1) * sizeof(*sm));
    so = iocd_malloc((one->n + 1) * sizeof(*so));
    po = iocd_malloc((many->n + 1) * sizeof(*po));
    err = sm != NULL && so != NULL && po != NULL ? IOCD_OK : IOCD_ENOMEM;
    if (err == IOCD_OK)
        err = signatures(n, many, &sigs, sm);
    if (err == IOCD_OK)
        err = signatures(n, one, &sigs, so);
    if (err == IOCD_OK) {
        one_at = iocd_malloc((sigs.n + 1) * sizeof(*one_at));
        one_stamp = iocd_calloc(sigs.n + 1, sizeof(*one_stamp));
        many_stamp = iocd_calloc(sigs.n + 1, sizeof(*many_stamp));
        if (one_at == NULL || one_stamp == NULL || many_stamp == NULL)
            err = IOCD_ENOMEM;
    }
    for (i = 0; i < many->n && po != NULL; i++)
        po[i] = (pair_out){ SIZE_MAX, SIZE_MAX };
    for (j = 0; err == IOCD_OK && j < ev->n_steps; j++) {
        uint32_t stamp = (uint32_t)j + 1;
        if ((j & 63) == 0)
            err = pq_check_deadline(ev);
        for (i = 0; err == IOCD_OK && i < one->n; i++) {
            size_t g = so[i];
            if (!one->s[i].ok[j])
                continue;
            if (one_stamp[g] == stamp) {
                char a[200], b[200], sig[200];
                lset_format(&one->s[one_at[g]].ls, a, sizeof(a));
                lset_format(&one->s[i].ls, b, sizeof(b));
                lset_format(&sigs.keys[g], sig, sizeof(sig));
                err = pq_error(ev, IOCD_EINVAL,
                               "found duplicate series for the match group %s on the %s "
                               "hand-side of the operation: [%s, %s];many-to-many matching not "
                               "allowed: matching labels must be unique on one side",
                               sig, swap ? "left" : "right", a, b);
                break;
            }
            one_stamp[g] = stamp;
            one_at[g] = i;
        }
        for (i = 0; err == IOCD_OK && i < many->n; i++) {
            size_t g = sm[i], oi, at;
            double vl, vr, v;
            bool keep;
            pq_series *os;
            if (!many->s[i].ok[j] || one_stamp[g] != stamp)
                continue;
            if (n->card == PQ_CARD_ONE_TO_ONE) {
                if (many_stamp[g] == stamp) {
                    err = pq_error(ev, IOCD_EINVAL,
                                   "multiple matches for labels: many-to-one matching must be "
                                   "explicit (group_left/group_right)");
                    break;
                }
                many_stamp[g] = stamp;
            }
            oi = one_at[g];
            vl = many->s[i].v[j];
            vr = one->s[oi].v[j];
            if (swap) {
                double t = vl;
                vl = vr;
                vr = t;
            }
            v = binop(n->op, vl, vr, &keep);
            if (is_cmp(n->op)) {
                if (n->ret_bool)
                    v = keep ? 1.0 : 0.0;
                else if (!keep)
                    continue;
            }
            if (po[i].one != oi) {
                lset ls;
                err = result_labels(n, &many->s[i].ls, &one->s[oi].ls, &ls);
                if (err != IOCD_OK)
                    break;
                err = pq_index_find(&outs, &ls, true, &at);
                if (err != IOCD_OK) {
                    lset_fini(&ls);
                    break;
                }
                if (outs.keys[at].s != ls.s)
                    lset_fini(&ls);
                if (at == out->n) { /* a new output series */
                    if (out->n == cap) {
                        size_t ncap = cap != 0 ? cap * 2 : 16;
                        pq_series *grown = iocd_realloc(out->s, (ncap + 1) * sizeof(*grown));
                        uint32_t *gs = iocd_realloc(out_stamp, (ncap + 1) * sizeof(*gs));
                        if (grown != NULL)
                            out->s = grown;
                        if (gs != NULL)
                            out_stamp = gs;
                        if (grown == NULL || gs == NULL) {
                            err = IOCD_ENOMEM;
                            break;
                        }
                        cap = ncap;
                    }
                    memset(&out->s[at], 0, sizeof(out->s[at]));
                    out->s[at].ls = outs.keys[at];
                    out_stamp[at] = 0;
                    out->n++;
                    err = hold(ev, ev->n_steps);
                    if (err == IOCD_OK)
                        err = series_alloc(ev, &out->s[at]);
                    if (err != IOCD_OK)
                        break;
                }
                po[i] = (pair_out){ oi, at };
            }
            os = &out->s[po[i].out];
            if (out_stamp[po[i].out] == stamp) {
                err = pq_error(ev, IOCD_EINVAL,
                               "multiple matches for labels: grouping labels must ensure "
                               "unique matches");
                break;
            }
            out_stamp[po[i].out] = stamp;
            os->ok[j] = 1;
            os->v[j] = v;
        }
    }
    iocd_free(sm);
    iocd_free(so);
    iocd_free(po);
    iocd_free(one_at);
    iocd_free(one_stamp);
    iocd_free(many_stamp);
    iocd_free(out_stamp);
    free_index_keys(&sigs);
    pq_index_fini(&outs); /* its keys are the output series' labels */
    if (err != IOCD_OK)
        return err;
    return pq_vector_finish(ev, out);
}

static iocd_err eval_binary(pq_eval *ev, const pq_node *n, pq_value *out)
{
    pq_value l, r;
    iocd_err err;

    memset(&r, 0, sizeof(r));
    err = pq_eval_node(ev, n->args[0], &l);
    if (err != IOCD_OK)
        return err;
    err = pq_eval_node(ev, n->args[1], &r);
    if (err == IOCD_OK) {
        if (l.type == QUERY_SCALAR && r.type == QUERY_SCALAR)
            err = binary_scalars(ev, n, &l, &r, out);
        else if (l.type == QUERY_VECTOR && r.type == QUERY_SCALAR)
            err = binary_vector_scalar(ev, n, &l, r.scalar, false, out);
        else if (l.type == QUERY_SCALAR && r.type == QUERY_VECTOR)
            err = binary_vector_scalar(ev, n, &r, l.scalar, true, out);
        else if (n->card == PQ_CARD_MANY_TO_MANY)
            err = binary_set(ev, n, &l, &r, out);
        else
            err = binary_vectors(ev, n, &l, &r, out);
    }
    pq_value_fini(&l);
    pq_value_fini(&r);
    return err;
}

/* ---- Aggregations ------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Prometheus' quantile over sorted values: linear interpolation between closest ranks. */
double pq_quantile(double q, double *v, size_t n)
{
    double rank, w;
    size_t lo, hi;

    if (n == 0 || isnan(q))
        return NAN;
    if (q < 0)
        return -INFINITY;
    if (q > 1)
        return INFINITY;
    iocd_qsort(v, n, sizeof(*v), cmp_double);
    rank = q * (double)(n - 1);
    lo = (size_t)fmax(0, floor(rank));
    hi = lo + 1 < n ? lo + 1 : n - 1;
    w = rank - floor(rank);
    return v[lo] * (1 - w) + v[hi] * w;
}

typedef struct agg_acc {
    double value, mean, count;
    bool seen;
} agg_acc;

static void agg_add(pq_agg agg, agg_acc *a, double v)
{
    if (!a->seen) {
        a->seen = true;
        a->count = 1;
        a->value = v;
        a->mean = v;
        if (agg == PQ_AGG_STDDEV || agg == PQ_AGG_STDVAR) {
            a->value = 0;
        }
        if (agg == PQ_AGG_GROUP)
            a->value = 1;
        return;
    }
    a->count++;
    switch (agg) {
    case PQ_AGG_SUM:
        a->value += v;
        break;
    case PQ_AGG_AVG:
        if (isinf(a->mean)) {
            if (isinf(v) && (a->mean > 0) == (v > 0))
                break;
            if (!isinf(v) && !isnan(v))
                break;
        }
        a->mean += v / a->count - a->mean / a->count;
        break;
    case PQ_AGG_MIN:
        if (a->value > v || isnan(a->value))
            a->value = v;
        break;
    case PQ_AGG_MAX:
        if (a->value < v || isnan(a->value))
            a->value = v;
        break;
    case PQ_AGG_STDDEV:
    case PQ_AGG_STDVAR: {
        double delta = v - a->mean;
        a->mean += delta / a->count;
        a->value += delta * (v - a->mean);
        break;
    }
    default:
        break;
    }
}

static double agg_result(pq_agg agg, const agg_acc *a)
{
    switch (agg) {
    case PQ_AGG_AVG:
        return a->mean;
    case PQ_AGG_COUNT:
        return a->count;
    case PQ_AGG_STDVAR:
        return a->value / a->count;
    case PQ_AGG_STDDEV:
        return sqrt(a->value / a->count);
    default:
        return a->value;
    }
}

/* The grouping key of series labels. */
static iocd_err group_key(const pq_node *n, const lset *ls, lset *out)
{
    if (n->without)
        return lset_filter(ls, n->grouping, n->n_grouping, false, true, out);
    return lset_filter(ls, n->grouping, n->n_grouping, true, false, out);
}

/* Groups the series of v: *group_of[i] and the distinct keys in ix (owned). */
static iocd_err group_series(const pq_node *n, const pq_value *v, pq_index *ix, size_t *group_of)
{
    size_t i;

    for (i = 0; i < v->n; i++) {
        lset key;
        size_t at;
        iocd_err err = group_key(n, &v->s[i].ls, &key);
        if (err != IOCD_OK)
            return err;
        err = pq_index_find(ix, &key, true, &at);
        if (err != IOCD_OK) {
            lset_fini(&key);
            return err;
        }
        if (ix->keys[at].s != key.s)
            lset_fini(&key);
        group_of[i] = at;
    }
    return IOCD_OK;
}

int pq_by_value_asc(const void *a, const void *b)
{
    double x = ((const pq_series *)a)->v[0], y = ((const pq_series *)b)->v[0];

    if (isnan(x) || isnan(y))
        return isnan(x) - isnan(y); /* NaN last */
    return x < y ? -1 : x > y;
}

int pq_by_value_desc(const void *a, const void *b)
{
    double x = ((const pq_series *)a)->v[0], y = ((const pq_series *)b)->v[0];

    if (isnan(x) || isnan(y))
        return isnan(x) - isnan(y);
    return x > y ? -1 : x < y;
}

/* topk and bottomk select as Prometheus does, with Go's container/heap over the series in
 * the order they come: a min-heap (topk; a max-heap for bottomk) whose root is replaced by a
 * strictly better value. Ties therefore resolve exactly as in Prometheus. */
static bool heap_less(const pq_value *in, size_t step, size_t a, size_t b, bool top)
{
    double x = in->s[a].v[step], y = in->s[b].v[step];

    if (isnan(x))
        return true;
    return top ? x < y : x > y;
}

static void heap_up(const pq_value *in, size_t step, size_t *h, size_t j, bool top)
{
    while (j > 0) {
        size_t i = (j - 1) / 2, t;
        if (!heap_less(in, step, h[j], h[i], top))
            break;
        t = h[i];
        h[i] = h[j];
        h[j] = t;
        j = i;
    }
}

static void heap_down(const pq_value *in, size_t step, size_t *h, size_t n, bool top)
{
    size_t i = 0;

    for (;;) {
        size_t j = 2 * i + 1, t;
        if (j >= n)
            break;
        if (j + 1 < n && heap_less(in, step, h[j + 1], h[j], top))
            j++;
        if (!heap_less(in, step, h[j], h[i], top))
            break;
        t = h[i];
        h[i] = h[j];
        h[j] = t;
        i = j;
    }
}

/* Whether a new value replaces the heap's root. */
static bool k_replaces(double root, double v, bool top)
{
    if (isnan(root) && !isnan(v))
        return true;
    return top ? root < v : root > v;
}

static iocd_err agg_topk(pq_eval *ev, const pq_node *n, const double *param, pq_value *in,
                         pq_value *out)
{
    pq_index ix;
    size_t *group_of = NULL, *sel = NULL, *fill = NULL, i, j, g;
    bool top = n->agg == PQ_AGG_TOPK;
    uint8_t *keep = NULL;
    iocd_err err;

    pq_index_init(&ix);
    group_of = iocd_malloc((in->n + 1) * sizeof(*group_of));
    keep = iocd_malloc((in->n + 1) * ev->n_steps);
    err = group_of != NULL && keep != NULL ? IOCD_OK : IOCD_ENOMEM;
    if (err == IOCD_OK)
        err = group_series(n, in, &ix, group_of);
    if (err == IOCD_OK) {
        memset(keep, 0, (in->n + 1) * ev->n_steps);
        fill = iocd_calloc(ix.n + 1, sizeof(*fill));
        sel = iocd_malloc((in->n + 1) * sizeof(*sel));
        if (fill == NULL || sel == NULL)
            err = IOCD_ENOMEM;
    }
    for (j = 0; err == IOCD_OK && j < ev->n_steps; j++) {
        double kf = param[j];
        size_t k, *start = NULL;
        if (isnan(kf) || kf >= 9.2e18 || kf <= -9.2e18) {
            err = pq_error(ev, IOCD_EINVAL, "Scalar value %g overflows int64", kf);
            break;
        }
        if (kf < 1)
            continue;
        k = (size_t)kf;
        /* Per group: a small sorted selection held in sel, group by group. */
        start = iocd_malloc((ix.n + 1) * sizeof(*start));
        if (start == NULL) {
            err = IOCD_ENOMEM;
            break;
        }
        memset(fill, 0, (ix.n + 1) * sizeof(*fill));
        for (i = 0; i < in->n; i++)
            if (in->s[i].ok[j])
                fill[group_of[i]]++;
        for (g = 0, i = 0; g < ix.n; g++) {
            start[g] = i;
            i += fill[g] < k ? fill[g] : k;
            fill[g] = 0;
        }
        for (i = 0; i < in->n; i++) {
            size_t *h;
            double v;
            if (!in->s[i].ok[j])
                continue;
            g = group_of[i];
            h = sel + start[g];
            v = in->s[i].v[j];
            if (fill[g] < k) {
                h[fill[g]++] = i;
                heap_up(in, j, h, fill[g] - 1, top);
            } else if (k_replaces(in->s[h[0]].v[j], v, top)) {
                h[0] = i;
                heap_down(in, j, h, fill[g], top);
            }
        }
        for (g = 0; g < ix.n; g++)
            for (i = 0; i < fill[g]; i++)
                keep[sel[start[g] + i] * ev->n_steps + j] = 1;
        iocd_free(start);
    }
    if (err == IOCD_OK) {
        for (i = 0; i < in->n; i++)
            for (j = 0; j < ev->n_steps; j++)
                if (!keep[i * ev->n_steps + j])
                    in->s[i].ok[j] = 0;
        *out = *in;
        memset(in, 0, sizeof(*in));
    }
    iocd_free(group_of);
    iocd_free(keep);
    iocd_free(fill);
    iocd_free(sel);
    free_index_keys(&ix);
    if (err == IOCD_OK)
        err = pq_vector_finish(ev, out);
    if (err == IOCD_OK && ev->n_steps == 1) /* an instant answer lists the winners in order */
        iocd_qsort(out->s, out->n, sizeof(*out->s), top ? pq_by_value_desc : pq_by_value_asc);
    return err;
}

static iocd_err agg_count_values(pq_eval *ev, const pq_node *n, const char *label, pq_value *in,
                                 pq_value *out)
{
    pq_index outs;
    size_t i, j, cap = 0;
    iocd_err err = IOCD_OK;
    const char *p;

    memset(out, 0, sizeof(*out));
    out->type = QUERY_VECTOR;
    for (p = label; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
              (p > label && *p >= '0' && *p <= '9')))
            break;
    if (*label == '\0' || *p != '\0')
        return pq_error(ev, IOCD_EINVAL, "invalid label name \"%s\"", label);
    pq_index_init(&outs);
    for (i = 0; err == IOCD_OK && i < in->n; i++) {
        lset key;
        err = group_key(n, &in->s[i].ls, &key);
        for (j = 0; err == IOCD_OK && j < ev->n_steps; j++) {
            iocd_buf vb;
            lset ls;
            size_t at;
            if (!in->s[i].ok[j])
                continue;
            iocd_buf_init(&vb, 64);
            err = iocd_buf_float(&vb, in->s[i].v[j]);
            if (err == IOCD_OK)
                err = lset_set(&key, label, vb.data, &ls);
            iocd_buf_fini(&vb);
            if (err != IOCD_OK)
                break;
            err = pq_index_find(&outs, &ls, true, &at);
            if (err != IOCD_OK) {
                lset_fini(&ls);
                break;
            }
            if (outs.keys[at].s != ls.s)
                lset_fini(&ls);
            if (at == out->n) {
                if (out->n == cap) {
                    size_t ncap = cap != 0 ? cap * 2 : 16;
                    pq_series *grown = iocd_realloc(out->s, (ncap + 1) * sizeof(*grown));
                    if (grown == NULL) {
                        err = IOCD_ENOMEM;
                        break;
                    }
                    out->s = grown;
                    cap = ncap;
                }
                memset(&out->s[at], 0, sizeof(out->s[at]));
                out->s[at].ls = outs.keys[at];
                out->n++;
                err = hold(ev, ev->n_steps);
                if (err == IOCD_OK)
                    err = series_alloc(ev, &out->s[at]);
                if (err != IOCD_OK)
                    break;
            }
            if (!out->s[at].ok[j]) {
                out->s[at].ok[j] = 1;
                out->s[at].v[j] = 0;
            }
            out->s[at].v[j]++;
        }
        lset_fini(&key);
    }
    pq_index_fini(&outs);
    if (err != IOCD_OK)
        return err;
    return pq_vector_finish(ev, out);
}

static iocd_err eval_aggregation(pq_eval *ev, const pq_node *n, pq_value *out)
{
    pq_value in, param;
    pq_index ix;
    size_t *group_of = NULL, i, j, g;
    agg_acc *acc = NULL;
    double *buf = NULL;
    iocd_err err;

    memset(&param, 0, sizeof(param));
    memset(out, 0, sizeof(*out));
    pq_index_init(&ix);
    if (n->n_args == 2) {
        err = pq_eval_node(ev, n->args[0], &param);
        if (err != IOCD_OK)
            return err;
    }
    err = pq_eval_node(ev, n->args[n->n_args - 1], &in);
    if (err != IOCD_OK) {
        pq_value_fini(&param);
        return err;
    }
    if (n->agg == PQ_AGG_TOPK || n->agg == PQ_AGG_BOTTOMK) {
        err = agg_topk(ev, n, param.scalar, &in, out);
        goto done;
    }
    if (n->agg == PQ_AGG_COUNT_VALUES) {
        err = agg_count_values(ev, n, param.str, &in, out);
        goto done;
    }
    group_of = iocd_malloc((in.n + 1) * sizeof(*group_of));
    err = group_of != NULL ? IOCD_OK : IOCD_ENOMEM;
    if (err == IOCD_OK)
        err = group_series(n, &in, &ix, group_of);
    if (err == IOCD_OK)
        err = pq_vector_alloc(ev, out, ix.n);
    if (err != IOCD_OK)
        goto done;
    for (g = 0; g < ix.n; g++) {
        out->s[g].ls = ix.keys[g];
        ix.keys[g].s = NULL;
    }
    if (n->agg == PQ_AGG_QUANTILE) {
        size_t *fill = iocd_calloc(ix.n + 1, sizeof(*fill)),
               *start = iocd_malloc((ix.n + 1) * sizeof(*start));
        buf = iocd_malloc((in.n + 1) * sizeof(*buf));
        if (fill == NULL || start == NULL || buf == NULL)
            err = IOCD_ENOMEM;
        for (j = 0; err == IOCD_OK && j < ev->n_steps; j++) {
            size_t at = 0;
            memset(fill, 0, (ix.n + 1) * sizeof(*fill));
            for (i = 0; i < in.n; i++)
                if (in.s[i].ok[j])
                    fill[group_of[i]]++;
            for (g = 0; g < ix.n; g++) {
                start[g] = at;
                at += fill[g];
                fill[g] = 0;
            }
            for (i = 0; i < in.n; i++)
                if (in.s[i].ok[j]) {
                    g = group_of[i];
                    buf[start[g] + fill[g]++] = in.s[i].v[j];
                }
            for (g = 0; g < ix.n; g++) {
                if (fill[g] == 0)
                    continue;
                out->s[g].ok[j] = 1;
                out->s[g].v[j] = pq_quantile(param.scalar[j], buf + start[g], fill[g]);
            }
        }
        iocd_free(fill);
        iocd_free(start);
        goto done;
    }
    acc = iocd_calloc(ix.n + 1, sizeof(*acc));
    if (acc == NULL) {
        err = IOCD_ENOMEM;
        goto done;
    }
    for (j = 0; j < ev->n_steps; j++) {
        memset(acc, 0, (ix.n + 1) * sizeof(*acc));
        for (i = 0; i < in.n; i++)
            if (in.s[i].ok[j])
                agg_add(n->agg, &acc[group_of[i]], in.s[i].v[j]);
        for (g = 0; g < ix.n; g++) {
            if (!acc[g].seen)
                continue;
            out->s[g].ok[j] = 1;
            out->s[g].v[j] = agg_result(n->agg, &acc[g]);
        }
    }
done:
    iocd_free(group_of);
    iocd_free(acc);
    iocd_free(buf);
    free_index_keys(&ix);
    pq_value_fini(&in);
    pq_value_fini(&param);
    if (err != IOCD_OK)
        return err;
    if (n->agg == PQ_AGG_TOPK || n->agg == PQ_AGG_BOTTOMK || n->agg == PQ_AGG_COUNT_VALUES)
        return IOCD_OK;
    return pq_vector_finish(ev, out);
}

/* ---- Dispatch ------------------------------------------------------------------------------ */

static iocd_err eval_call(pq_eval *ev, const pq_node *n, pq_value *out)
{
    pq_value *args = iocd_calloc(n->n_args + 1, sizeof(*args));
    size_t i;
    iocd_err err = IOCD_OK;

    memset(out, 0, sizeof(*out));
    if (args == NULL)
        return IOCD_ENOMEM;
    for (i = 0; i < n->n_args && err == IOCD_OK; i++) {
        const pq_node *a = n->args[i];
        while (a->kind == PQ_PAREN)
            a = a->args[0];
        if (strcmp(n->fn->name, "timestamp") == 0 && a->kind == PQ_VSEL)
            err = pq_eval_selector(ev, a, true, &args[i]);
        else
            err = pq_eval_node(ev, n->args[i], &args[i]);
    }
    if (err == IOCD_OK)
        err = n->fn->fn(ev, n, args, out);
    for (i = 0; i < n->n_args; i++)
        pq_value_fini(&args[i]);
    iocd_free(args);
    return err;
}

static iocd_err eval_dispatch(pq_eval *ev, const pq_node *n, pq_value *out)
{
    iocd_err err = pq_check_deadline(ev);
    size_t j;

    memset(out, 0, sizeof(*out));
    if (err != IOCD_OK)
        return err;
    switch (n->kind) {
    case PQ_NUM:
        err = pq_scalar_alloc(ev, out);
        for (j = 0; err == IOCD_OK && j < ev->n_steps; j++)
            out->scalar[j] = n->num;
        return err;
    case PQ_STR:
        out->type = QUERY_STRING;
        out->str = iocd_strdup(n->str);
        return out->str != NULL ? IOCD_OK : IOCD_ENOMEM;
    case PQ_PAREN:
        return pq_eval_node(ev, n->args[0], out);
    case PQ_VSEL:
        return pq_eval_selector(ev, n, false, out);
    case PQ_MSEL:
        return eval_matrix_selector(ev, n, out);
    case PQ_SUBQ:
        return eval_subquery(ev, n, out);
    case PQ_NEG:
        return eval_neg(ev, n, out);
    case PQ_BIN:
        return eval_binary(ev, n, out);
    case PQ_AGG:
        return eval_aggregation(ev, n, out);
    case PQ_CALL:
        return eval_call(ev, n, out);
    }
    return IOCD_EINVAL;
}

iocd_err pq_eval_node(pq_eval *ev, const pq_node *n, pq_value *out)
{
    iocd_err err = eval_dispatch(ev, n, out);

    if (err != IOCD_OK) /* on failure nothing is handed back: callers need not clean up */
        pq_value_fini(out);
    return err;
}

/* ---- Entry point --------------------------------------------------------------------------- */

void query_result_fini(query_result *r)
{
    size_t i;

    for (i = 0; i < r->n; i++) {
        iocd_free(r->series[i].labels);
        iocd_free(r->series[i].points);
    }
    iocd_free(r->series);
    iocd_free(r->str);
    memset(r, 0, sizeof(*r));
}

static int series_cmp(const void *a, const void *b)
{
    const query_series *x = a, *y = b;
    size_t n = x->labels_len < y->labels_len ? x->labels_len : y->labels_len;
    int c = n > 0 ? memcmp(x->labels, y->labels, n) : 0;

    if (c != 0)
        return c;
    return x->labels_len < y->labels_len ? -1 : x->labels_len > y->labels_len;
}

/* Moves the evaluated value into the caller's result. */
static iocd_err to_result(pq_eval *ev, pq_value *v, bool range, bool keep_order, query_result *r)
{
    size_t i, j, k;

    r->t_ms = ev->start;
    if (v->type == QUERY_STRING) {
        r->type = QUERY_STRING;
        r->str = v->str;
        v->str = NULL;
        return IOCD_OK;
    }
    if (v->type == QUERY_SCALAR && !range) {
        r->type = QUERY_SCALAR;
        r->scalar = v->scalar[0];
        return IOCD_OK;
    }
    r->type = range || v->type == QUERY_MATRIX ? QUERY_MATRIX : QUERY_VECTOR;
    if (v->type == QUERY_SCALAR) { /* a range query over a scalar: one series, no labels */
        r->series = iocd_calloc(1, sizeof(*r->series));
        if (r->series == NULL)
            return IOCD_ENOMEM;
        r->n = 1;
        r->series[0].labels = iocd_malloc(1);
        r->series[0].points = iocd_malloc(ev->n_steps * sizeof(iocd_sample));
        if (r->series[0].labels == NULL || r->series[0].points == NULL)
            return IOCD_ENOMEM;
        r->series[0].labels[0] = '\0';
        for (j = 0; j < ev->n_steps; j++)
            r->series[0].points[j] = (iocd_sample){ pq_step_t(ev, j), v->scalar[j] };
        r->series[0].n = ev->n_steps;
        return IOCD_OK;
    }
    r->series = iocd_calloc(v->n + 1, sizeof(*r->series));
    if (r->series == NULL)
        return IOCD_ENOMEM;
    for (i = 0; i < v->n; i++) {
        pq_series *s = &v->s[i];
        query_series *q = &r->series[r->n];
        if (v->type == QUERY_MATRIX) {
            int64_t lo, hi;
            pq_window(ev, v, ev->start, &lo, &hi);
            q->points = iocd_malloc((s->n_pts + 1) * sizeof(*q->points));
            if (q->points == NULL)
                return IOCD_ENOMEM;
            for (j = 0, k = 0; j < s->n_pts; j++)
                if (s->pts[j].t_ms >= lo && s->pts[j].t_ms <= hi)
                    q->points[k++] = s->pts[j];
        } else {
            q->points = iocd_malloc((ev->n_steps + 1) * sizeof(*q->points));
            if (q->points == NULL)
                return IOCD_ENOMEM;
            for (j = 0, k = 0; j < ev->n_steps; j++)
                if (s->ok[j])
                    q->points[k++] = (iocd_sample){ pq_step_t(ev, j), s->v[j] };
        }
        if (k == 0) {
            iocd_free(q->points);
            q->points = NULL;
            continue;
        }
        q->n = k;
        q->labels = s->ls.s;
        q->labels_len = s->ls.len;
        s->ls.s = NULL;
        s->ls.len = 0;
        r->n++;
    }
    if (!keep_order)
        iocd_qsort(r->series, r->n, sizeof(*r->series), series_cmp);
    return IOCD_OK;
}

/* Whether the result's order is the expression's (sort, sort_desc, topk...) or free. */
static bool ordered(const pq_node *n)
{
    while (n->kind == PQ_PAREN)
        n = n->args[0];
    if (n->kind == PQ_CALL &&
        (strcmp(n->fn->name, "sort") == 0 || strcmp(n->fn->name, "sort_desc") == 0))
        return true;
    return n->kind == PQ_AGG && (n->agg == PQ_AGG_TOPK || n->agg == PQ_AGG_BOTTOMK);
}

iocd_err query_eval(store *st, const query_limits *lim, const query_expr *e, int64_t start_ms,
                    int64_t end_ms, int64_t step_ms, query_result *out, char *errbuf, size_t errlen)
{
    pq_eval ev;
    pq_value v;
    query_result r;
    bool range = step_ms > 0;
    iocd_err err;

    memset(&ev, 0, sizeof(ev));
    memset(&r, 0, sizeof(r));
    ev.st = st;
    ev.lim = *lim;
    if (ev.lim.lookback_ms <= 0)
        ev.lim.lookback_ms = 5 * 60 * 1000;
    if (ev.lim.subquery_step_ms <= 0)
        ev.lim.subquery_step_ms = 60 * 1000;
    if (ev.lim.max_points == 0)
        ev.lim.max_points = 11000;
    ev.errbuf = errbuf;
    ev.errlen = errlen;
    ev.start = ev.q_start = start_ms;
    ev.end = ev.q_end = range ? end_ms : start_ms;
    ev.step = range ? step_ms : 1;
    if (errlen > 0)
        errbuf[0] = '\0';
    if (ev.end < ev.start)
        return pq_error(&ev, IOCD_EINVAL, "end timestamp must not be before start time");
    ev.n_steps = (size_t)((ev.end - ev.start) / ev.step) + 1;
    if (range && ev.n_steps - 1 > ev.lim.max_points) /* steps, as Prometheus counts */
        return pq_error(&ev, IOCD_ELIMIT,
                        "exceeded maximum resolution of %zu points per timeseries. Try "
                        "decreasing the query resolution (?step=XX)",
                        ev.lim.max_points);
    if (lim->timeout_ms > 0)
        ev.deadline_ns = iocd_mono_ns() + lim->timeout_ms * 1000000;
    if (range && e->root->type != QUERY_SCALAR && e->root->type != QUERY_VECTOR)
        return pq_error(&ev, IOCD_EINVAL,
                        "invalid expression type \"%s\" for range query, must be Scalar or "
                        "instant Vector",
                        e->root->type == QUERY_MATRIX ? "range vector" : "string");
    err = pq_eval_node(&ev, e->root, &v);
    if (err == IOCD_OK) {
        err = to_result(&ev, &v, range, !range && ordered(e->root), &r);
        pq_value_fini(&v);
    }
    r.samples_loaded = ev.samples_loaded;
    if (err != IOCD_OK) {
        if (err == IOCD_ENOMEM && errlen > 0 && errbuf[0] == '\0')
            snprintf(errbuf, errlen, "out of memory while evaluating the query");
        query_result_fini(&r);
        return err;
    }
    *out = r;
    return IOCD_OK;
}
