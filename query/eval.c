/* query/eval.c - evaluates a PromQL tree over the store. Every node is evaluated once for all
 * steps of the query (a range query is not n instant queries): an instant vector is a set
 * of series with one value slot per step, a range vector holds raw samples and is cut into
 * windows by the function that consumes it. Selectors read all their series' samples in one
 * batched pass (store_read_many). Semantics follow Prometheus 2.42: lookback [t-5m, t],
 * range windows [t-range, t], staleness markers end a series, subquery steps aligned to
 * multiples of the step. Limits (series, samples, deadline) are checked as work proceeds.
 * Binary operators are evaluated in binop.c, aggregations in aggr.c. */
#include "query/query_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
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
iocd_err pq_hold(pq_eval *ev, uint64_t n)
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
iocd_err pq_series_alloc(pq_eval *ev, pq_series *s)
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
    err = pq_hold(ev, (uint64_t)n * ev->n_steps);
    if (err != IOCD_OK)
        return err;
    out->s = iocd_calloc(n + 1, sizeof(*out->s));
    if (out->s == NULL)
        return IOCD_ENOMEM;
    out->n = n;
    for (i = 0; i < n; i++)
        if (pq_series_alloc(ev, &out->s[i]) != IOCD_OK)
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

void pq_index_free_keys(pq_index *ix)
{
    size_t i;

    for (i = 0; i < ix->n; i++)
        lset_fini(&ix->keys[i]);
    pq_index_fini(ix);
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

iocd_err pq_vector_finish_selected(pq_eval *ev, pq_value *v)
{
    const char *name = NULL;
    size_t i, j, k = 0;
    bool drop = v->n > 0 && v->s[0].drop_name;
    iocd_err err = IOCD_OK;

    /* Distinct series stay distinct when the same label is dropped from all and it had the
     * same value in all; a series deleted meanwhile has no labels: the general path. */
    for (i = 0; i < v->n; i++) {
        const char *nm = lset_get(&v->s[i].ls, "__name__");
        if (v->s[i].drop_name != drop || v->s[i].ls.len == 0 ||
            (drop && (nm == NULL || (name != NULL && strcmp(nm, name) != 0))))
            return pq_vector_finish(ev, v);
        name = nm;
    }
    for (i = 0; i < v->n; i++) {
        pq_series *s = &v->s[i];
        bool any = false;
        for (j = 0; j < ev->n_steps && !any; j++)
            any = s->ok[j] != 0;
        if (any && drop && err == IOCD_OK) {
            lset tmp;
            err = lset_filter(&s->ls, NULL, 0, false, true, &tmp);
            if (err == IOCD_OK) {
                lset_fini(&s->ls);
                s->ls = tmp;
            }
        }
        s->drop_name = false;
        if (!any || err != IOCD_OK) {
            lset_fini(&s->ls);
            iocd_free(s->v);
            iocd_free(s->ts);
            continue;
        }
        v->s[k++] = *s;
    }
    v->n = k;
    return err;
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

/* Gives series i of the value ud its labels. */
static iocd_err take_pairs(void *ud, size_t i, const char *pairs, size_t len)
{
    pq_value *out = ud;
    char *ls = iocd_malloc(len + 1);

    if (ls == NULL)
        return IOCD_ENOMEM;
    if (len > 0) /* a series deleted meanwhile has none: no samples either, dropped later */
        memcpy(ls, pairs, len);
    ls[len] = '\0';
    out->s[i].ls.s = ls;
    out->s[i].ls.len = (uint32_t)len;
    return IOCD_OK;
}

/* Selects the series of a selector and fills out->s[i].ls; out->n is their number. */
static iocd_err select_series(pq_eval *ev, const pq_node *sel, pq_value *out, uint64_t **ids_out)
{
    uint64_t *ids = NULL;
    size_t n = 0;
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
    err = store_series_pairs(ev->st, ids, n, take_pairs, out);
    if (err != IOCD_OK) {
        iocd_free(ids);
        return err;
    }
    *ids_out = ids;
    return IOCD_OK;
}

typedef struct vsel_ctx {
    pq_eval *ev;
    const pq_node *n;
    pq_value *out;
    bool want_ts;
    size_t base;        /* index of the first series this context reads (parallel halves) */
    const int64_t *ref; /* per step: the time the selector is evaluated at */
} vsel_ctx;

/* For each step: the newest sample in [ref - lookback, ref], unless it is a staleness
 * marker. Steps ascend, so one pointer walks the samples once. */
static iocd_err vsel_series(void *ud, size_t i, const store_samples *ss)
{
    vsel_ctx *c = ud;
    pq_eval *ev = c->ev;
    pq_series *ps = &c->out->s[c->base + i];
    const iocd_sample *s = ss->s;
    size_t j, k = 0, n = ss->n;
    int64_t lookback = ev->lim.lookback_ms;
    iocd_err err;

    ev->samples_loaded += n;
    err = pq_hold(ev, n + ev->n_steps);
    if (err == IOCD_OK)
        err = pq_series_alloc(ev, ps);
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
        int64_t ref = c->ref[j];
        while (k < n && s[k].t_ms <= ref)
            k++;
        if (c->n->at != PQ_AT_NONE && j > 0) { /* the same time at every step */
            ps->ok[j] = ps->ok[0];
            ps->v[j] = ps->v[0];
            if (ps->ts != NULL)
                ps->ts[j] = ps->ts[0];
            continue;
        }
        if (k == 0 || s[k - 1].t_ms < ref - lookback || (ss->nan && is_stale(s[k - 1].v)))
            continue;
        ps->ok[j] = 1;
        ps->v[j] = s[k - 1].v;
        if (ps->ts != NULL)
            ps->ts[j] = s[k - 1].t_ms;
    }
    return IOCD_OK;
}

/* ---- Reading selections on two cores ----------------------------------------------------
 * A large selection is cut into chunks of whole id groups (so no sealed block is decompressed
 * twice), which the query's thread and a helper thread take in turn, each with its own copy of
 * the evaluation state (counters and error text are merged after): one dashboard query uses
 * both cores of a small machine. The helper is started once and waits for work. When it is
 * reading for another query, or slow to wake because the other core is busy, the query's
 * thread takes every chunk itself: it never waits for a helper that has not started (a thread
 * created per query and joined made a query wait up to milliseconds on a busy machine). */

#define PARALLEL_MIN 256 /* series below which one thread reads */
#define CHUNKS       16  /* a large selection is cut into at most this many chunks */

typedef struct share_part {
    void *ctx;    /* its callbacks' context */
    size_t *base; /* in ctx: set to the index of the chunk's first series */
    iocd_err err;
} share_part;

typedef struct share_job {
    store *st;
    const uint64_t *ids;
    size_t cuts[CHUNKS + 1]; /* chunk k is ids[cuts[k], cuts[k + 1]) */
    size_t n_chunks;
    atomic_size_t next; /* the next chunk to take */
    atomic_bool failed;
    const store_span *spans;
    size_t n_spans;
    store_samples_fn fn;
    share_part part[2]; /* the query's thread, the helper */
} share_job;

static struct {
    pthread_once_t once;
    pthread_mutex_t mu;
    pthread_cond_t offered, left;
    share_job *job;       /* offered and not taken yet, or NULL */
    const share_job *cur; /* the job the helper is reading, or NULL */
    bool running;
} helper = { PTHREAD_ONCE_INIT,
             PTHREAD_MUTEX_INITIALIZER,
             PTHREAD_COND_INITIALIZER,
             PTHREAD_COND_INITIALIZER,
             NULL,
             NULL,
             false };

static void read_chunks(share_job *j, share_part *p)
{
    size_t k;

    while (!atomic_load(&j->failed) && (k = atomic_fetch_add(&j->next, 1)) < j->n_chunks) {
        iocd_err err;
        *p->base = j->cuts[k];
        err = store_read_spans(j->st, j->ids + j->cuts[k], j->cuts[k + 1] - j->cuts[k], j->spans,
                               j->n_spans, j->fn, p->ctx);
        if (err != IOCD_OK) {
            p->err = err;
            atomic_store(&j->failed, true);
        }
    }
}

static void *helper_main(void *ud)
{
    iocd_thread_name("query-helper");
    (void)ud;
    pthread_mutex_lock(&helper.mu);
    for (;;) {
        share_job *j;
        while (helper.job == NULL)
            pthread_cond_wait(&helper.offered, &helper.mu);
        j = helper.job;
        helper.job = NULL;
        helper.cur = j;
        pthread_mutex_unlock(&helper.mu);
        read_chunks(j, &j->part[1]);
        pthread_mutex_lock(&helper.mu);
        helper.cur = NULL;
        pthread_cond_broadcast(&helper.left);
    }
    return NULL;
}

static void helper_start(void)
{
    pthread_attr_t attr;
    pthread_t t;

    if (pthread_attr_init(&attr) != 0)
        return;
    if (pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0)
        helper.running = pthread_create(&t, &attr, helper_main, NULL) == 0;
    pthread_attr_destroy(&attr);
}

/* Reads ids within spans into the callbacks: ctx_a on this thread (base_a in it), ctx_b on the
 * helper's (its ev set to the helper's copy of ev, base_b in it), each told where its chunk
 * starts. */
static iocd_err read_selection(pq_eval *ev, const uint64_t *ids, size_t n, const store_span *spans,
                               size_t n_spans, store_samples_fn fn, void *ctx_a, size_t *base_a,
                               void *ctx_b, pq_eval **ev_b, size_t *base_b)
{
    share_job j;
    struct {
        pq_eval ev;
        char errbuf[512];
    } * copy; /* the helper's evaluation state (heap: the caller's ctx_b points at it) */
    size_t at = 0, size = (n + CHUNKS - 1) / CHUNKS;
    uint64_t held0 = ev->samples_held;
    bool offered = false;
    iocd_err err;

    *base_a = 0;
    if (n < PARALLEL_MIN)
        return store_read_spans(ev->st, ids, n, spans, n_spans, fn, ctx_a);
    pthread_once(&helper.once, helper_start);
    memset(&j, 0, sizeof(j));
    j.st = ev->st;
    j.ids = ids;
    while (at < n) { /* chunks of at least size series, ending at a group's end */
        at = at + size < n ? at + size : n;
        while (at < n && ids[at] >> 6 == ids[at - 1] >> 6)
            at++;
        j.cuts[++j.n_chunks] = at;
    }
    atomic_init(&j.next, 0);
    atomic_init(&j.failed, false);
    j.spans = spans;
    j.n_spans = n_spans;
    j.fn = fn;
    j.part[0] = (share_part){ ctx_a, base_a, IOCD_OK };
    j.part[1] = (share_part){ ctx_b, base_b, IOCD_OK };
    copy = iocd_malloc(sizeof(*copy));
    if (copy == NULL)
        return store_read_spans(ev->st, ids, n, spans, n_spans, fn, ctx_a);
    copy->ev = *ev;
    copy->ev.errbuf = copy->errbuf;
    copy->ev.errlen = sizeof(copy->errbuf);
    copy->ev.samples_loaded = 0;
    copy->errbuf[0] = '\0';
    *ev_b = &copy->ev;
    pthread_mutex_lock(&helper.mu);
    if (helper.running && helper.job == NULL && helper.cur == NULL) {
        helper.job = &j;
        offered = true;
        pthread_cond_signal(&helper.offered);
    }
    pthread_mutex_unlock(&helper.mu);
    if (!offered) { /* the helper is busy: one read of the whole selection */
        iocd_free(copy);
        return store_read_spans(ev->st, ids, n, spans, n_spans, fn, ctx_a);
    }
    read_chunks(&j, &j.part[0]);
    pthread_mutex_lock(&helper.mu);
    if (helper.job == &j) /* not taken: the helper finds nothing when it wakes */
        helper.job = NULL;
    while (helper.cur == &j) /* it is reading a chunk: wait for that one only */
        pthread_cond_wait(&helper.left, &helper.mu);
    pthread_mutex_unlock(&helper.mu);
    ev->samples_loaded += copy->ev.samples_loaded;
    err = j.part[0].err;
    if (err == IOCD_OK && j.part[1].err != IOCD_OK) {
        err = j.part[1].err;
        snprintf(ev->errbuf, ev->errlen, "%s", copy->errbuf);
    }
    if (err == IOCD_OK) /* the two counted against the limit apart: check the sum */
        err = pq_hold(ev, copy->ev.samples_held - held0);
    iocd_free(copy);
    return err;
}

/* Per step, the time a node with (at, offset) is evaluated at (*ref_out, n_steps entries),
 * and the spans [ref - width, ref] whose samples it may look at (*spans_out, one per step,
 * or one for all when @ fixes the time). The caller frees both. */
static iocd_err step_spans(const pq_eval *ev, pq_at at, int64_t at_ms, int64_t offset_ms,
                           int64_t width, int64_t **ref_out, store_span **spans_out,
                           size_t *n_spans_out)
{
    int64_t *ref = iocd_malloc(ev->n_steps * sizeof(*ref));
    store_span *sp = iocd_malloc(ev->n_steps * sizeof(*sp));
    size_t j, n = at != PQ_AT_NONE ? 1 : ev->n_steps;

    if (ref == NULL || sp == NULL) {
        iocd_free(ref);
        iocd_free(sp);
        return IOCD_ENOMEM;
    }
    for (j = 0; j < ev->n_steps; j++) {
        ref[j] = pq_ref_time(ev, at, at_ms, offset_ms, pq_step_t(ev, j));
        if (j < n)
            sp[j] = (store_span){ ref[j] - width, ref[j] };
    }
    *ref_out = ref;
    *spans_out = sp;
    *n_spans_out = n;
    return IOCD_OK;
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
    int64_t *ref = NULL;
    store_span *spans = NULL;
    size_t n_spans = 0;
    vsel_ctx c = { ev, n, out, want_ts, 0, NULL }, c2;
    iocd_err err;

    memset(out, 0, sizeof(*out));
    out->type = QUERY_VECTOR;
    err = select_series(ev, n, out, &ids);
    if (err == IOCD_OK)
        err = step_spans(ev, n->at, n->at_ms, n->offset_ms, ev->lim.lookback_ms, &ref, &spans,
                         &n_spans);
    if (err == IOCD_OK) {
        c.ref = ref;
        c2 = c;
        err = read_selection(ev, ids, out->n, spans, n_spans, vsel_series, &c, &c.base, &c2, &c2.ev,
                             &c2.base);
    }
    iocd_free(ids);
    iocd_free(ref);
    iocd_free(spans);
    if (err == IOCD_OK) {
        size_t i;
        for (i = 0; i < out->n && err == IOCD_OK; i++)
            if (out->s[i].v == NULL)
                err = pq_series_alloc(ev, &out->s[i]);
    }
    return err; /* in id order: a metric's series in creation order, as Prometheus reads them */
}

typedef struct msel_ctx {
    pq_eval *ev;
    pq_value *out;
    size_t base;
} msel_ctx;

/* Counts series i's n samples as loaded and held, and checks the deadline every 256 series. */
static iocd_err count_loaded(pq_eval *ev, size_t i, size_t n)
{
    iocd_err err;

    ev->samples_loaded += n;
    err = pq_hold(ev, n);
    if (err == IOCD_OK && (i & 255) == 0)
        err = pq_check_deadline(ev);
    return err;
}

static iocd_err msel_series(void *ud, size_t i, const store_samples *ss)
{
    msel_ctx *c = ud;
    pq_series *ps = &c->out->s[c->base + i];
    size_t j, k = 0;
    iocd_err err = count_loaded(c->ev, i, ss->n);

    if (err != IOCD_OK)
        return err;
    ps->pts = iocd_malloc((ss->n + 1) * sizeof(*ps->pts));
    if (ps->pts == NULL)
        return IOCD_ENOMEM;
    for (j = 0; j < ss->n; j++)
        if (!ss->nan || !is_stale(ss->s[j].v)) /* range windows skip staleness markers */
            ps->pts[k++] = ss->s[j];
    ps->n_pts = k;
    return IOCD_OK;
}

/* ---- Matrix selectors streamed into a function ------------------------------------------ */

typedef struct stream_ctx {
    pq_eval *ev;
    size_t base;
    pq_matrix_fn fn;
    void *ud;
    iocd_sample *tmp; /* the samples without staleness markers, when there are some */
    size_t tmp_cap;
} stream_ctx;

static iocd_err stream_series(void *ud, size_t i, const store_samples *ss)
{
    stream_ctx *c = ud;
    const iocd_sample *s = ss->s;
    size_t j, k, n = ss->n;
    iocd_err err = count_loaded(c->ev, i, n);

    if (err != IOCD_OK)
        return err;
    if (!ss->nan) { /* no NaN, so no staleness marker to leave out */
        c->ev->win_may_drop = ss->drops;
        err = c->fn(c->ev, c->ud, c->base + i, s, n);
        c->ev->win_may_drop = true;
        return err;
    }
    for (j = 0; j < n && !is_stale(s[j].v); j++)
        ;
    if (j < n) { /* range windows skip staleness markers */
        if (n > c->tmp_cap) {
            iocd_sample *g = iocd_realloc(c->tmp, n * sizeof(*g));
            if (g == NULL)
                return IOCD_ENOMEM;
            c->tmp = g;
            c->tmp_cap = n;
        }
        for (j = 0, k = 0; j < n; j++)
            if (!is_stale(s[j].v))
                c->tmp[k++] = s[j];
        s = c->tmp;
        n = k;
    }
    return c->fn(c->ev, c->ud, c->base + i, s, n);
}

/* Gives m the window shape of matrix selector n and selects its series. */
static iocd_err matrix_select(pq_eval *ev, const pq_node *n, pq_value *m, uint64_t **ids_out)
{
    const pq_node *vs = n->args[0];

    m->type = QUERY_MATRIX;
    m->range_ms = n->range_ms;
    m->offset_ms = vs->offset_ms;
    m->at = vs->at;
    m->at_ms = vs->at_ms;
    m->sel = vs;
    return select_series(ev, vs, m, ids_out);
}

iocd_err pq_matrix_select(pq_eval *ev, pq_value *m, uint64_t **ids_out)
{
    return matrix_select(ev, m->lazy, m, ids_out);
}

iocd_err pq_matrix_read(pq_eval *ev, pq_value *m, const uint64_t *ids, pq_matrix_fn fn, void *ud_a,
                        void *ud_b)
{
    const pq_node *n = m->lazy, *vs = n->args[0];
    stream_ctx c = { ev, 0, fn, ud_a, NULL, 0 }, c2 = { ev, 0, fn, ud_b, NULL, 0 };
    int64_t *ref = NULL;
    store_span *spans = NULL;
    size_t n_spans = 0;
    iocd_err err;

    err = step_spans(ev, vs->at, vs->at_ms, vs->offset_ms, n->range_ms, &ref, &spans, &n_spans);
    if (err == IOCD_OK)
        err = read_selection(ev, ids, m->n, spans, n_spans, stream_series, &c, &c.base, &c2, &c2.ev,
                             &c2.base);
    iocd_free(ref);
    iocd_free(spans);
    iocd_free(c.tmp);
    iocd_free(c2.tmp);
    return err;
}

static iocd_err eval_matrix_selector(pq_eval *ev, const pq_node *n, pq_value *out)
{
    const pq_node *vs = n->args[0];
    uint64_t *ids = NULL;
    int64_t lo, hi;
    store_span span;
    msel_ctx c = { ev, out, 0 }, c2 = c;
    iocd_err err;

    memset(out, 0, sizeof(*out));
    err = matrix_select(ev, n, out, &ids);
    if (err != IOCD_OK)
        return err;
    ref_span(ev, vs->at, vs->at_ms, vs->offset_ms, &lo, &hi);
    span = (store_span){ lo - n->range_ms, hi };
    err =
        read_selection(ev, ids, out->n, &span, 1, msel_series, &c, &c.base, &c2, &c2.ev, &c2.base);
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
        else if (n->fn->streams_matrix && a->kind == PQ_MSEL)
            args[i].lazy = a; /* read by the function itself */
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
        return pq_eval_binary(ev, n, out);
    case PQ_AGG:
        return pq_eval_aggregation(ev, n, out);
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
    ev.win_may_drop = true;
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
