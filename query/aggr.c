/* query/aggr.c - PromQL's aggregations, as of Prometheus 2.42: sum, avg, min, max, count,
 * group, stddev, stdvar and quantile over groups (by/without), topk/bottomk with Prometheus'
 * heap order (so ties resolve as there), and count_values. The input is evaluated once and
 * aggregated for all steps; the value helpers here (quantile, orders by value) serve func.c. */
#include "query/query_int.h"

#include <math.h>
#include <string.h>

/* ---- Aggregations ------------------------------------------------------------------------- */

#define AGG_ACC_MAX 65536 /* accumulators (groups x steps) held at once: 2 MiB */

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
    pq_index_free_keys(&ix);
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
                err = pq_hold(ev, ev->n_steps);
                if (err == IOCD_OK)
                    err = pq_series_alloc(ev, &out->s[at]);
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

iocd_err pq_eval_aggregation(pq_eval *ev, const pq_node *n, pq_value *out)
{
    pq_value in, param;
    pq_index ix;
    size_t *group_of = NULL, i, j, g, j0, span;
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
    /* A run of steps at a time, series by series (each one's steps are together in memory),
     * into one accumulator per group and step of the run: every accumulator still takes its
     * series in the same order. Runs keep the accumulators to about AGG_ACC_MAX. */
    span = ix.n < AGG_ACC_MAX ? AGG_ACC_MAX / (ix.n + 1) : 1;
    if (span > ev->n_steps)
        span = ev->n_steps;
    acc = iocd_malloc((ix.n * span + 1) * sizeof(*acc));
    if (acc == NULL) {
        err = IOCD_ENOMEM;
        goto done;
    }
    for (j0 = 0; j0 < ev->n_steps; j0 += span) {
        size_t m = ev->n_steps - j0 < span ? ev->n_steps - j0 : span;
        memset(acc, 0, (ix.n * m + 1) * sizeof(*acc));
        for (i = 0; i < in.n; i++) {
            agg_acc *a = acc + group_of[i] * m;
            for (j = 0; j < m; j++)
                if (in.s[i].ok[j0 + j])
                    agg_add(n->agg, &a[j], in.s[i].v[j0 + j]);
        }
        for (g = 0; g < ix.n; g++)
            for (j = 0; j < m; j++) {
                if (!acc[g * m + j].seen)
                    continue;
                out->s[g].ok[j0 + j] = 1;
                out->s[g].v[j0 + j] = agg_result(n->agg, &acc[g * m + j]);
            }
    }
done:
    iocd_free(group_of);
    iocd_free(acc);
    iocd_free(buf);
    pq_index_free_keys(&ix);
    pq_value_fini(&in);
    pq_value_fini(&param);
    if (err != IOCD_OK)
        return err;
    if (n->agg == PQ_AGG_TOPK || n->agg == PQ_AGG_BOTTOMK || n->agg == PQ_AGG_COUNT_VALUES)
        return IOCD_OK;
    return pq_vector_finish(ev, out);
}
