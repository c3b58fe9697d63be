/* query/rollup.c - min, max, count, sum and avg _over_time of a plain matrix selector with a
 * long range, answered from the store's rollups where that gives the raw answer. Each window
 * [t - range, t] (closed) is folded in time order: raw samples before its first whole bucket,
 * the whole buckets (a rollup each, or the raw samples of one the store could not vouch for),
 * raw samples after the last. A bucket [b, b + res) is used only when it lies wholly inside
 * the window, so the sample at t itself always comes from raw data. count, min and max are
 * then bit-identical to the raw path; sum and avg differ only by the order of float additions,
 * and a series whose sums could overflow, or holding NaN or Inf, is computed raw. */
#include "query/query_int.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define HOUR_MS     3600000
#define STALE_BITS  0x7ff0000000000002ULL
#define SUM_BOUND   1e300 /* partial sums below this cannot overflow, in any order */
#define PARALLEL_AT 2048  /* series from which the read is split over two threads */

typedef enum ru_kind { RU_MIN, RU_MAX, RU_COUNT, RU_SUM, RU_AVG } ru_kind;

static bool kind_of(const pq_node *call, ru_kind *k)
{
    static const char *const names[] = { "min_over_time", "max_over_time", "count_over_time",
                                         "sum_over_time", "avg_over_time" };
    size_t i;

    for (i = 0; i < IOCD_ARRAY_LEN(names); i++) {
        if (strcmp(call->fn->name, names[i]) == 0) {
            *k = (ru_kind)i;
            return true;
        }
    }
    return false;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

int64_t pq_rollup_res(const pq_eval *ev, const pq_node *call, const pq_node *msel)
{
    const pq_node *vs = msel->args[0];
    int64_t min = ev->lim.rollup_range_ms, range = msel->range_ms, hi0, step;
    ru_kind k;

    if (min < 0 || !kind_of(call, &k))
        return 0;
    if (min == 0)
        min = HOUR_MS;
    if (range < min || range < 2 * STORE_ROLLUP_5M)
        return 0;
    /* Hour buckets when every window is made of whole hours, else 5-minute ones. */
    hi0 = pq_ref_time(ev, vs->at, vs->at_ms, vs->offset_ms, ev->start);
    step = vs->at != PQ_AT_NONE || ev->n_steps == 1 ? 0 : ev->step;
    if (range % HOUR_MS == 0 && hi0 - floor_div(hi0, HOUR_MS) * HOUR_MS == 0 && step % HOUR_MS == 0)
        return STORE_ROLLUP_1H;
    return STORE_ROLLUP_5M;
}

/* The whole buckets of window [lo, hi]: [*k0, *k1) (empty when *k0 == *k1 == hi + 1). */
static void whole_buckets(int64_t lo, int64_t hi, int64_t res, int64_t *k0, int64_t *k1)
{
    int64_t a = floor_div(lo + res - 1, res) * res, b = floor_div(hi + 1, res) * res;

    if (a >= b) {
        *k0 = *k1 = hi + 1;
        return;
    }
    *k0 = a;
    *k1 = b;
}

/* ---- Folding ------------------------------------------------------------------------------ */

typedef struct ru_acc {
    double n;      /* samples folded */
    double v;      /* min or max so far */
    double sum, c; /* Neumaier's compensated sum, as the raw path's */
    double mag;    /* a bound on the magnitude of every partial sum */
    bool finite;   /* every value finite */
} ru_acc;

static void kahan_inc(double inc, double *sum, double *c)
{
    double t = *sum + inc;

    if (fabs(*sum) >= fabs(inc))
        *c += (*sum - t) + inc;
    else
        *c += (inc - t) + *sum;
    *sum = t;
}

/* Folds `count` samples whose min and max are lo and hi and whose sum is sum (one sample:
 * all three its value). Prometheus' min keeps a smaller value or any value after a NaN; the
 * same rule over the parts in time order gives what it gives over the samples. */
static void fold(ru_acc *a, ru_kind k, double count, double lo, double hi, double sum)
{
    double m = fabs(lo) > fabs(hi) ? fabs(lo) : fabs(hi);

    if (k == RU_MIN)
        a->v = a->n == 0 || lo < a->v || isnan(a->v) ? lo : a->v;
    else if (k == RU_MAX)
        a->v = a->n == 0 || hi > a->v || isnan(a->v) ? hi : a->v;
    a->n += count;
    if (k == RU_SUM || k == RU_AVG) {
        kahan_inc(sum, &a->sum, &a->c);
        a->finite = a->finite && isfinite(lo) && isfinite(hi) && isfinite(sum);
        a->mag += count * m;
    }
}

/* Folds window [lo, hi] of one series: raw samples s (no staleness markers), buckets r.
 * Returns false when the window is empty; *exact false when a sum may differ beyond rounding. */
static bool fold_window(ru_kind k, int64_t res, const store_rollup *r, size_t n_r,
                        const iocd_sample *s, size_t n_s, int64_t lo, int64_t hi, double *v_out,
                        bool *exact)
{
    ru_acc a = { 0, 0, 0, 0, 0, true };
    size_t i = 0, j = 0, x, y;
    int64_t k0, k1;

    whole_buckets(lo, hi, res, &k0, &k1);
    for (x = 0, y = n_s; x < y;) { /* the first sample at or after lo */
        size_t mid = (x + y) / 2;
        if (s[mid].t_ms < lo)
            x = mid + 1;
        else
            y = mid;
    }
    i = x;
    for (; i < n_s && s[i].t_ms < k0; i++)
        fold(&a, k, 1, s[i].v, s[i].v, s[i].v);
    for (x = 0, y = n_r; x < y;) { /* the first bucket at or after k0 */
        size_t mid = (x + y) / 2;
        if (r[mid].t_ms < k0)
            x = mid + 1;
        else
            y = mid;
    }
    j = x;
    for (;;) { /* inside: a bucket's rollup, or the raw samples of a bucket without one */
        bool has_r = j < n_r && r[j].t_ms < k1, has_s = i < n_s && s[i].t_ms < k1;
        if (!has_r && !has_s)
            break;
        if (has_r && (!has_s || r[j].t_ms <= s[i].t_ms)) {
            fold(&a, k, r[j].count, r[j].min, r[j].max, r[j].sum);
            while (i < n_s && s[i].t_ms < r[j].t_ms + res)
                i++; /* samples of a bucket used whole */
            j++;
        } else {
            fold(&a, k, 1, s[i].v, s[i].v, s[i].v);
            i++;
        }
    }
    for (; i < n_s && s[i].t_ms <= hi; i++)
        fold(&a, k, 1, s[i].v, s[i].v, s[i].v);
    if (a.n == 0)
        return false;
    switch (k) {
    case RU_MIN:
    case RU_MAX:
        *v_out = a.v;
        break;
    case RU_COUNT:
        *v_out = a.n;
        break;
    case RU_SUM:
    case RU_AVG:
        *exact = *exact && a.finite && a.mag <= SUM_BOUND;
        *v_out = a.sum + a.c;
        if (k == RU_AVG)
            *v_out /= a.n;
        break;
    }
    return true;
}

/* ---- Series ---------------------------------------------------------------------------- */

typedef struct ru_job {
    pq_eval *ev; /* this half's */
    const pq_node *call;
    pq_value *args, *m, *out;
    pq_window_fn raw; /* the raw path's function, for series computed raw */
    ru_kind kind;
    int64_t res;
    int64_t lo, hi; /* the span of every window */
    const uint64_t *ids;
    size_t base;
    iocd_sample *tmp; /* samples without staleness markers */
    size_t tmp_cap;
} ru_job;

static bool is_stale(double v)
{
    uint64_t bits;

    memcpy(&bits, &v, sizeof(bits));
    return bits == STALE_BITS;
}

/* Copies s without staleness markers into the job's scratch. */
static iocd_err drop_stale(ru_job *j, const iocd_sample *s, size_t n, const iocd_sample **out,
                           size_t *n_out)
{
    size_t a, k = 0;

    if (n > j->tmp_cap) {
        iocd_sample *g = iocd_realloc(j->tmp, n * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        j->tmp = g;
        j->tmp_cap = n;
    }
    for (a = 0; a < n; a++)
        if (!is_stale(s[a].v))
            j->tmp[k++] = s[a];
    *out = j->tmp;
    *n_out = k;
    return IOCD_OK;
}

/* Series i again, from raw samples alone, through the raw path's own function. */
static iocd_err series_raw(ru_job *j, size_t i, pq_series *o)
{
    iocd_sample *all = NULL;
    const iocd_sample *s;
    size_t n_all = 0, n = 0, a = 0, b = 0, st;
    iocd_err err = store_read(j->ev->st, j->ids[i], j->lo, j->hi, &all, &n_all);

    if (err == IOCD_ENOTFOUND) { /* deleted meanwhile */
        err = IOCD_OK;
        n_all = 0;
    }
    if (err == IOCD_OK)
        err = drop_stale(j, all, n_all, &s, &n);
    iocd_free(all);
    if (err != IOCD_OK)
        return err;
    j->ev->samples_loaded += n_all;
    for (st = 0; st < j->ev->n_steps; st++) {
        int64_t lo, hi;
        pq_window(j->ev, j->m, pq_step_t(j->ev, st), &lo, &hi);
        if (j->m->at != PQ_AT_NONE)
            a = b = 0;
        while (a < n && s[a].t_ms < lo)
            a++;
        if (b < a)
            b = a;
        while (b < n && s[b].t_ms <= hi)
            b++;
        o->ok[st] = b > a && j->raw(j->ev, j->call, j->args, st, s + a, b - a, lo, hi, &o->v[st]);
    }
    return IOCD_OK;
}

static iocd_err ru_series(void *ud, size_t i, const store_rollup *r, size_t n_r,
                          const iocd_sample *s_in, size_t n_in)
{
    ru_job *j = ud;
    pq_eval *ev = j->ev;
    pq_series *o = &j->out->s[j->base + i];
    const iocd_sample *s;
    size_t n, st;
    bool exact = true;
    iocd_err err;

    ev->samples_loaded += n_r + n_in;
    err = pq_hold(ev, n_r + n_in);
    if (err == IOCD_OK && (i & 255) == 0)
        err = pq_check_deadline(ev);
    if (err == IOCD_OK)
        err = drop_stale(j, s_in, n_in, &s, &n);
    if (err != IOCD_OK)
        return err;
    o->ls = j->m->s[j->base + i].ls;
    j->m->s[j->base + i].ls.s = NULL;
    j->m->s[j->base + i].ls.len = 0;
    o->drop_name = true;
    for (st = 0; st < ev->n_steps; st++) {
        int64_t lo, hi;
        pq_window(ev, j->m, pq_step_t(ev, st), &lo, &hi);
        o->ok[st] = fold_window(j->kind, j->res, r, n_r, s, n, lo, hi, &o->v[st], &exact);
    }
    if (!exact)
        err = series_raw(j, i, o);
    if (err == IOCD_OK && o->ls.s == NULL) {
        o->ls.s = iocd_malloc(1);
        if (o->ls.s == NULL)
            return IOCD_ENOMEM;
        o->ls.s[0] = '\0';
        o->ls.len = 0;
    }
    return err;
}

/* ---- Reading, on two threads for a large selection ---------------------------------------- */

typedef struct ru_read {
    ru_job job;
    pq_eval ev; /* the helper's copy */
    char errbuf[512];
    const store_span *spans;
    size_t n_spans, n;
    int64_t start, end;
    iocd_err err;
} ru_read;

static iocd_err read_half(ru_job *j, const uint64_t *ids, size_t n, int64_t start, int64_t end,
                          const store_span *spans, size_t n_spans)
{
    return store_read_rollup_many(j->ev->st, ids, n, j->res, start, end, spans, n_spans, ru_series,
                                  j);
}

static void *half_thread(void *ud)
{
    ru_read *h = ud;

    iocd_thread_name("query-rollup");
    h->err = read_half(&h->job, h->job.ids, h->n, h->start, h->end, h->spans, h->n_spans);
    return NULL;
}

static iocd_err read_all(ru_job *j, size_t n, int64_t start, int64_t end, const store_span *spans,
                         size_t n_spans)
{
    ru_read *h = NULL;
    pthread_t t;
    size_t mid = n / 2;
    uint64_t held0 = j->ev->samples_held;
    iocd_err err;

    if (n >= PARALLEL_AT) {
        while (mid < n && j->ids[mid] >> 6 == j->ids[mid - 1] >> 6)
            mid++; /* split at an id group: no block is read twice */
        h = iocd_calloc(1, sizeof(*h));
    }
    if (h == NULL)
        return read_half(j, j->ids, n, start, end, spans, n_spans);
    h->job = *j;
    h->ev = *j->ev;
    h->ev.errbuf = h->errbuf;
    h->ev.errlen = sizeof(h->errbuf);
    h->ev.samples_loaded = 0;
    h->job.ev = &h->ev;
    h->job.ids = j->ids + mid;
    h->job.base = mid;
    h->job.tmp = NULL;
    h->job.tmp_cap = 0;
    h->n = n - mid;
    h->start = start;
    h->end = end;
    h->spans = spans;
    h->n_spans = n_spans;
    if (pthread_create(&t, NULL, half_thread, h) != 0) {
        iocd_free(h);
        return read_half(j, j->ids, n, start, end, spans, n_spans);
    }
    err = read_half(j, j->ids, mid, start, end, spans, n_spans);
    pthread_join(t, NULL);
    j->ev->samples_loaded += h->ev.samples_loaded;
    if (err == IOCD_OK && h->err != IOCD_OK) {
        err = h->err;
        snprintf(j->ev->errbuf, j->ev->errlen, "%s", h->errbuf);
    }
    if (err == IOCD_OK) /* the halves counted against the limit apart: check the sum */
        err = pq_hold(j->ev, h->ev.samples_held - held0);
    iocd_free(h->job.tmp);
    iocd_free(h);
    return err;
}

iocd_err pq_rollup_over_time(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *m,
                             int64_t res, pq_window_fn raw, pq_value *out)
{
    ru_job j;
    uint64_t *ids = NULL;
    store_span *spans = NULL;
    size_t n_spans = 0, st;
    int64_t start = INT64_MAX, end = INT64_MIN;
    iocd_err err;

    memset(&j, 0, sizeof(j));
    memset(out, 0, sizeof(*out));
    out->type = QUERY_VECTOR;
    err = pq_matrix_select(ev, m, &ids);
    if (err == IOCD_OK)
        err = pq_vector_alloc(ev, out, m->n);
    if (err == IOCD_OK) {
        spans = iocd_malloc((2 * ev->n_steps + 1) * sizeof(*spans));
        if (spans == NULL)
            err = IOCD_ENOMEM;
    }
    j.lo = INT64_MAX;
    j.hi = INT64_MIN;
    /* Raw samples are wanted at each window's edges; buckets between its first whole bucket
     * and the end of its last. */
    for (st = 0; err == IOCD_OK && st < ev->n_steps; st++) {
        int64_t lo, hi, k0, k1;
        pq_window(ev, m, pq_step_t(ev, st), &lo, &hi);
        whole_buckets(lo, hi, res, &k0, &k1);
        if (lo < k0)
            spans[n_spans++] = (store_span){ lo, k0 - 1 };
        if (k1 <= hi && k1 > k0)
            spans[n_spans++] = (store_span){ k1, hi };
        if (k0 < k1) {
            start = k0 < start ? k0 : start;
            end = k1 - 1 > end ? k1 - 1 : end;
        }
        j.lo = lo < j.lo ? lo : j.lo;
        j.hi = hi > j.hi ? hi : j.hi;
    }
    if (err == IOCD_OK && m->n > 0) {
        j.ev = ev;
        j.call = call;
        j.args = args;
        j.m = m;
        j.out = out;
        j.raw = raw;
        j.res = res;
        j.ids = ids;
        kind_of(call, &j.kind);
        err = read_all(&j, m->n, start, end, spans, n_spans);
    }
    iocd_free(j.tmp);
    iocd_free(spans);
    iocd_free(ids);
    if (err != IOCD_OK)
        return err;
    return pq_vector_finish(ev, out);
}
