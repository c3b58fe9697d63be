/* query/func.c - PromQL's functions, as of Prometheus 2.42, with its edge cases: rate's
 * extrapolation, counter resets, NaN ordering, the regression of deriv and predict_linear,
 * holt_winters' smoothing, histogram_quantile's bucket handling and absent()'s labels.
 * Each function takes evaluated arguments and builds a new value; it never keeps them. */
#include "query/query_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PQ_PI 3.14159265358979323846

/* ---- Helpers ------------------------------------------------------------------------------- */

/* Moves the vector arg into out with every value mapped by fn; __name__ dropped. */
static iocd_err map_vector(pq_eval *ev, pq_value *arg, double (*fn)(double, const double *, size_t),
                           const double *const *params, size_t n_params, pq_value *out)
{
    size_t i, j, k;
    double p[4];

    for (i = 0; i < arg->n; i++) {
        pq_series *s = &arg->s[i];
        for (j = 0; j < ev->n_steps; j++) {
            if (!s->ok[j])
                continue;
            for (k = 0; k < n_params && k < 4; k++)
                p[k] = params[k][j];
            s->v[j] = fn(s->v[j], p, n_params);
        }
        s->drop_name = true;
        iocd_free(s->ts);
        s->ts = NULL;
    }
    *out = *arg;
    memset(arg, 0, sizeof(*arg));
    return pq_vector_finish(ev, out);
}

#define SIMPLE(name, expr)                                                                         \
    static double m_##name(double v, const double *p, size_t n)                                    \
    {                                                                                              \
        (void)p;                                                                                   \
        (void)n;                                                                                   \
        return (expr);                                                                             \
    }                                                                                              \
    static iocd_err f_##name(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)      \
    {                                                                                              \
        (void)call;                                                                                \
        return map_vector(ev, &args[0], m_##name, NULL, 0, out);                                   \
    }

SIMPLE(abs, fabs(v))
SIMPLE(ceil, ceil(v))
SIMPLE(floor, floor(v))
SIMPLE(exp, exp(v))
SIMPLE(sqrt, sqrt(v))
SIMPLE(ln, log(v))
SIMPLE(log2, log2(v))
SIMPLE(log10, log10(v))
SIMPLE(sgn, v<0 ? -1.0 : v> 0 ? 1.0 : v)
SIMPLE(sin, sin(v))
SIMPLE(cos, cos(v))
SIMPLE(tan, tan(v))
SIMPLE(asin, asin(v))
SIMPLE(acos, acos(v))
SIMPLE(atan, atan(v))
SIMPLE(sinh, sinh(v))
SIMPLE(cosh, cosh(v))
SIMPLE(tanh, tanh(v))
SIMPLE(asinh, asinh(v))
SIMPLE(acosh, acosh(v))
SIMPLE(atanh, atanh(v))
SIMPLE(deg, v * 180 / PQ_PI)
SIMPLE(rad, v *PQ_PI / 180)

static double m_round(double v, const double *p, size_t n)
{
    double inv = 1.0 / (n > 0 ? p[0] : 1.0);

    return floor(v * inv + 0.5) / inv;
}

static iocd_err f_round(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    const double *params[1];

    params[0] = call->n_args > 1 ? args[1].scalar : NULL;
    return map_vector(ev, &args[0], m_round, params, call->n_args > 1 ? 1 : 0, out);
}

static double m_clamp(double v, const double *p, size_t n)
{
    (void)n;
    return fmax(p[0], fmin(p[1], v));
}

static double m_clamp_min(double v, const double *p, size_t n)
{
    (void)n;
    return fmax(p[0], v);
}

static double m_clamp_max(double v, const double *p, size_t n)
{
    (void)n;
    return fmin(p[0], v);
}

static iocd_err f_clamp(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    const double *params[2] = { args[1].scalar, args[2].scalar };
    size_t i, j;

    (void)call;
    for (i = 0; i < args[0].n; i++) /* max < min: no result at that step */
        for (j = 0; j < ev->n_steps; j++)
            if (args[2].scalar[j] < args[1].scalar[j])
                args[0].s[i].ok[j] = 0;
    return map_vector(ev, &args[0], m_clamp, params, 2, out);
}

static iocd_err f_clamp_min(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    const double *params[1] = { args[1].scalar };

    (void)call;
    return map_vector(ev, &args[0], m_clamp_min, params, 1, out);
}

static iocd_err f_clamp_max(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    const double *params[1] = { args[1].scalar };

    (void)call;
    return map_vector(ev, &args[0], m_clamp_max, params, 1, out);
}

/* ---- Scalars and vectors ------------------------------------------------------------------- */

static iocd_err f_pi(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    size_t j;
    iocd_err err = pq_scalar_alloc(ev, out);

    (void)call;
    (void)args;
    for (j = 0; err == IOCD_OK && j < ev->n_steps; j++)
        out->scalar[j] = PQ_PI;
    return err;
}

static iocd_err f_time(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    size_t j;
    iocd_err err = pq_scalar_alloc(ev, out);

    (void)call;
    (void)args;
    for (j = 0; err == IOCD_OK && j < ev->n_steps; j++)
        out->scalar[j] = (double)pq_step_t(ev, j) / 1000.0;
    return err;
}

static iocd_err empty_lset(lset *ls)
{
    ls->s = iocd_malloc(1);
    if (ls->s == NULL)
        return IOCD_ENOMEM;
    ls->s[0] = '\0';
    ls->len = 0;
    return IOCD_OK;
}

static iocd_err f_vector(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    size_t j;
    iocd_err err = pq_vector_alloc(ev, out, 1);

    (void)call;
    if (err == IOCD_OK)
        err = empty_lset(&out->s[0].ls);
    for (j = 0; err == IOCD_OK && j < ev->n_steps; j++) {
        out->s[0].ok[j] = 1;
        out->s[0].v[j] = args[0].scalar[j];
    }
    return err;
}

static iocd_err f_scalar(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    size_t i, j;
    iocd_err err = pq_scalar_alloc(ev, out);

    (void)call;
    for (j = 0; err == IOCD_OK && j < ev->n_steps; j++) {
        size_t found = 0;
        double v = NAN;
        for (i = 0; i < args[0].n; i++)
            if (args[0].s[i].ok[j]) {
                found++;
                v = args[0].s[i].v[j];
            }
        out->scalar[j] = found == 1 ? v : NAN;
    }
    return err;
}

static iocd_err f_timestamp(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    size_t i, j;

    (void)call;
    for (i = 0; i < args[0].n; i++) {
        pq_series *s = &args[0].s[i];
        for (j = 0; j < ev->n_steps; j++)
            if (s->ok[j])
                s->v[j] = (double)(s->ts != NULL ? s->ts[j] : pq_step_t(ev, j)) / 1000.0;
        s->drop_name = true;
        iocd_free(s->ts);
        s->ts = NULL;
    }
    *out = args[0];
    memset(&args[0], 0, sizeof(args[0]));
    return pq_vector_finish(ev, out);
}

/* The labels absent() gives: each label with exactly one matcher, an equality. */
static iocd_err absent_labels(const pq_node *sel, lset *out)
{
    const char *names[64], *values[64];
    size_t n = 0, i, j;

    if (sel == NULL)
        return empty_lset(out);
    for (i = 0; i < sel->sel.n && n < 64; i++) {
        const query_matcher *m = &sel->sel.m[i];
        size_t count = 0;
        if (m->op != QUERY_MATCH_EQ || strcmp(m->name, "__name__") == 0)
            continue;
        for (j = 0; j < sel->sel.n; j++)
            if (strcmp(sel->sel.m[j].name, m->name) == 0)
                count++;
        if (count != 1)
            continue;
        names[n] = m->name;
        values[n] = m->value;
        n++;
    }
    return lset_from_pairs(names, values, n, out);
}

static iocd_err absent_common(pq_eval *ev, const pq_node *sel, const uint8_t *present,
                              pq_value *out)
{
    size_t j;
    iocd_err err = pq_vector_alloc(ev, out, 1);

    if (err == IOCD_OK)
        err = absent_labels(sel, &out->s[0].ls);
    for (j = 0; err == IOCD_OK && j < ev->n_steps; j++) {
        out->s[0].ok[j] = !present[j];
        out->s[0].v[j] = 1;
    }
    if (err == IOCD_OK)
        err = pq_vector_finish(ev, out);
    return err;
}

static iocd_err f_absent(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    uint8_t *present = iocd_calloc(ev->n_steps, 1);
    const pq_node *a = call->args[0];
    size_t i, j;
    iocd_err err;

    if (present == NULL)
        return IOCD_ENOMEM;
    for (i = 0; i < args[0].n; i++)
        for (j = 0; j < ev->n_steps; j++)
            present[j] |= args[0].s[i].ok[j];
    err = absent_common(ev, a->kind == PQ_VSEL ? a : NULL, present, out);
    iocd_free(present);
    return err;
}

/* ---- Range functions ------------------------------------------------------------------------ */

/* Computes one value from the samples of one window; returns false for "no value". */
typedef pq_window_fn range_fn;

static bool r_rate(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,
                   const iocd_sample *s, size_t n, int64_t lo, int64_t hi, double *v_out);
static bool r_increase(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,
                       const iocd_sample *s, size_t n, int64_t lo, int64_t hi, double *v_out);
static bool r_delta(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,
                    const iocd_sample *s, size_t n, int64_t lo, int64_t hi, double *v_out);

/* One range function over a range argument m, into out (one series per series of m). */
typedef struct range_job {
    const pq_node *call;
    pq_value *args, *m, *out;
    range_fn fn;
    bool counter, keep_name;
    int64_t *lo, *hi;  /* per step, the window: the same for every series, so worked out once */
    pq_win_memo *memo; /* rate, increase, delta: per step (this half's own) */
    /* Per step, the window [win[2j], win[2j + 1]) of the series before (this half's own):
     * series sampled at the same times have the same windows, and checking one takes four
     * comparisons where finding it walks every sample (with a mispredicted branch at each
     * window's two ends). */
    size_t *win;
} range_job;

static bool r_extrapolated(const pq_eval *ev, size_t step, const iocd_sample *s, size_t n,
                           int64_t lo, int64_t hi, bool counter, bool rate, double *v_out);

/* Whether [a, b) is the window [lo, hi] of the n ascending samples pts: a the first at or
 * after lo, b the first after hi from a on. */
static bool window_is(const iocd_sample *pts, size_t n, size_t a, size_t b, int64_t lo, int64_t hi)
{
    return a <= b && b <= n && (a == 0 || pts[a - 1].t_ms < lo) && (a == n || pts[a].t_ms >= lo) &&
           (b == n || pts[b].t_ms > hi) && (b == a || pts[b - 1].t_ms <= hi);
}

/* Applies the job's function to every window of series i, whose samples (ascending, without
 * staleness markers) are pts. Touches only series i of m and out, so the two halves of a
 * streamed read run it side by side, each with its own ev. */
static iocd_err range_series(pq_eval *ev, void *ud, size_t i, const iocd_sample *pts, size_t n_pts)
{
    const range_job *rj = ud;
    pq_series *o = &rj->out->s[i];
    uint32_t stack_rc[512], zero_rc[1] = { 0 }, *rc = NULL;
    size_t a = 0, b = 0, j, *win = rj->win;
    bool fixed = rj->m->at != PQ_AT_NONE, rate = rj->fn == r_rate,
         extrapolated = rate || rj->fn == r_increase || rj->fn == r_delta;

    o->ls = rj->m->s[i].ls;
    rj->m->s[i].ls.s = NULL;
    rj->m->s[i].ls.len = 0;
    o->drop_name = !rj->keep_name;
    if (rj->counter && n_pts > 0) { /* resets up to each sample: windows without one are O(1) */
        bool any = false;
        for (j = 1; ev->win_may_drop && j < n_pts; j++) /* the read may know there is none */
            any |= pts[j].v < pts[j - 1].v;             /* or one pass says so */
        rc = !any                                ? zero_rc
             : n_pts <= IOCD_ARRAY_LEN(stack_rc) ? stack_rc
                                                 : iocd_malloc(n_pts * sizeof(*rc));
        if (rc == NULL)
            return IOCD_ENOMEM;
        if (any) {
            rc[0] = 0;
            for (j = 1; j < n_pts; j++)
                rc[j] = rc[j - 1] + (pts[j].v < pts[j - 1].v);
        }
        ev->win_base = pts;
        ev->win_resets = rc;
        ev->win_reset_free = !any;
    }
    ev->win_memo = rj->memo;
    for (j = 0; j < ev->n_steps; j++) {
        int64_t lo = rj->lo[j], hi = rj->hi[j];
        if (win != NULL && window_is(pts, n_pts, win[2 * j], win[2 * j + 1], lo, hi)) {
            a = win[2 * j];
            b = win[2 * j + 1];
        } else {
            if (fixed || a > n_pts) { /* the same window at every step, or a's from before */
                a = 0;
                b = 0;
            }
            while (a < n_pts && pts[a].t_ms < lo)
                a++;
            if (b < a)
                b = a;
            while (b < n_pts && pts[b].t_ms <= hi)
                b++;
            if (win != NULL) {
                win[2 * j] = a;
                win[2 * j + 1] = b;
            }
        }
        if (b == a) /* an empty window has no value */
            continue;
        if (extrapolated) /* called directly: the call through fn took a tenth of a rate */
            o->ok[j] = r_extrapolated(ev, j, pts + a, b - a, lo, hi, rj->counter, rate, &o->v[j]);
        else
            o->ok[j] = rj->fn(ev, rj->call, rj->args, j, pts + a, b - a, lo, hi, &o->v[j]);
    }
    ev->win_base = NULL;
    ev->win_resets = NULL;
    ev->win_reset_free = false;
    ev->win_memo = NULL;
    if (rc != stack_rc && rc != zero_rc)
        iocd_free(rc);
    return o->ls.s == NULL ? empty_lset(&o->ls) : IOCD_OK;
}

/* Applies fn to every window of the range argument args[ai]: a selector is streamed series by
 * series as it is read (on two threads when large), anything else (a subquery) was
 * evaluated whole. */
static iocd_err range_apply(pq_eval *ev, const pq_node *call, pq_value *args, size_t ai,
                            range_fn fn, bool keep_name, pq_value *out)
{
    range_job rj = { call,      args, &args[ai], out,  fn,  fn == r_rate || fn == r_increase,
                     keep_name, NULL, NULL,      NULL, NULL },
              rj2;
    bool extrapolated = fn == r_rate || fn == r_increase || fn == r_delta;
    uint64_t *ids = NULL;
    size_t i;
    int64_t res;
    iocd_err err = IOCD_OK;

    memset(out, 0, sizeof(*out));
    out->type = QUERY_VECTOR;
    if (rj.m->lazy != NULL && (res = pq_rollup_res(ev, call, rj.m->lazy)) != 0)
        return pq_rollup_over_time(ev, call, args, rj.m, res, fn, out); /* long ranges */
    if (rj.m->lazy != NULL)
        err = pq_matrix_select(ev, rj.m, &ids); /* gives m its window shape too */
    if (err == IOCD_OK) {
        rj.lo = iocd_malloc(ev->n_steps * 2 * sizeof(*rj.lo));
        err = rj.lo != NULL ? IOCD_OK : IOCD_ENOMEM;
    }
    if (err == IOCD_OK && extrapolated) {
        rj.memo = iocd_calloc(ev->n_steps * 2, sizeof(*rj.memo));
        err = rj.memo != NULL ? IOCD_OK : IOCD_ENOMEM;
    }
    if (err == IOCD_OK) { /* any start will do: a window is checked before it is used */
        rj.win = iocd_calloc(ev->n_steps * 4, sizeof(*rj.win));
        err = rj.win != NULL ? IOCD_OK : IOCD_ENOMEM;
    }
    if (err == IOCD_OK) {
        rj.hi = rj.lo + ev->n_steps;
        for (i = 0; i < ev->n_steps; i++)
            pq_window(ev, rj.m, pq_step_t(ev, i), &rj.lo[i], &rj.hi[i]);
        err = pq_vector_alloc(ev, out, rj.m->n);
    }
    rj2 = rj; /* the second half of a streamed read: its own memo and windows */
    if (rj.memo != NULL)
        rj2.memo = rj.memo + ev->n_steps;
    if (rj.win != NULL)
        rj2.win = rj.win + ev->n_steps * 2;
    if (err == IOCD_OK && rj.m->lazy != NULL) {
        err = pq_matrix_read(ev, rj.m, ids, range_series, &rj, &rj2);
    } else {
        for (i = 0; err == IOCD_OK && i < rj.m->n; i++) {
            if ((i & 255) == 0)
                err = pq_check_deadline(ev);
            if (err == IOCD_OK)
                err = range_series(ev, &rj, i, rj.m->s[i].pts, rj.m->s[i].n_pts);
        }
    }
    iocd_free(ids);
    iocd_free(rj.lo);
    iocd_free(rj.memo);
    iocd_free(rj.win);
    if (err != IOCD_OK)
        return err;
    return rj.m->lazy != NULL ? pq_vector_finish_selected(ev, out) : pq_vector_finish(ev, out);
}

/* ms / 1000.0, without dividing when ms is whole seconds: the quotient is then an integer,
 * which the division gives exactly too (|ms| < 2^53, so (double)ms is exact). */
static double ms_to_s(int64_t ms)
{
    int64_t q = ms / 1000;

    if (q * 1000 == ms && ms > -(INT64_C(1) << 53) && ms < (INT64_C(1) << 53))
        return (double)q;
    return (double)ms / 1000.0;
}

/* The extrapolation factor of rate, increase and delta over a window of range_ms. */
static double extrap_factor(double to_start, double to_end, double sampled, double avg, bool rate,
                            int64_t range_ms)
{
    double threshold = avg * 1.1, extrap = sampled, factor;

    extrap += to_start < threshold ? to_start : avg / 2;
    extrap += to_end < threshold ? to_end : avg / 2;
    factor = extrap / sampled;
    if (rate)
        factor /= ms_to_s(range_ms);
    return factor;
}

static bool r_extrapolated(const pq_eval *ev, size_t step, const iocd_sample *s, size_t n,
                           int64_t lo, int64_t hi, bool counter, bool rate, double *v_out)
{
    double result, to_start, to_end, sampled, avg, factor;
    pq_win_memo *memo = ev->win_memo != NULL ? &ev->win_memo[step] : NULL;
    bool is_counter = counter;
    size_t i;

    if (n < 2)
        return false;
    result = s[n - 1].v - s[0].v;
    if (counter && ev->win_resets != NULL && s >= ev->win_base) {
        size_t a = (size_t)(s - ev->win_base);
        if (ev->win_reset_free || ev->win_resets[a + n - 1] == ev->win_resets[a])
            counter = false; /* no reset in this window: nothing to add */
    }
    if (counter) {
        /* Branch-free (adding 0.0 changes nothing): gauges fed to rate() "reset" often. */
        for (i = 1; i < n; i++)
            result += s[i].v < s[i - 1].v ? s[i - 1].v : 0.0;
    }
    if (memo != NULL && memo->n == n && memo->t0 == s[0].t_ms && memo->tn == s[n - 1].t_ms) {
        to_start = memo->to_start; /* the same sample times as the series before */
        to_end = memo->to_end;
        sampled = memo->sampled;
        avg = memo->avg;
        factor = memo->factor;
    } else {
        to_start = ms_to_s(s[0].t_ms - lo);
        to_end = ms_to_s(hi - s[n - 1].t_ms);
        sampled = ms_to_s(s[n - 1].t_ms - s[0].t_ms);
        avg = sampled / (double)(n - 1);
        factor = extrap_factor(to_start, to_end, sampled, avg, rate, hi - lo);
        if (memo != NULL)
            *memo = (pq_win_memo){ s[0].t_ms, s[n - 1].t_ms, n,   to_start,
                                   to_end,    sampled,       avg, factor };
    }
    /* Extrapolated to before the counter's zero: cut there. When s[0].v >= result, s[0].v /
     * result >= 1, so to_zero >= sampled, and sampled >= to_start says it cannot cut (the
     * usual case, without a division). */
    if (is_counter && result > 0 && s[0].v >= 0 && !(s[0].v >= result && sampled >= to_start)) {
        double to_zero = sampled * (s[0].v / result);
        if (to_zero < to_start)
            factor = extrap_factor(to_zero, to_end, sampled, avg, rate, hi - lo);
    }
    *v_out = result * factor;
    return true;
}

static bool r_rate(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,
                   const iocd_sample *s, size_t n, int64_t lo, int64_t hi, double *v_out)
{
    (void)args;
    (void)step;
    (void)call;
    return r_extrapolated(ev, step, s, n, lo, hi, true, true, v_out);
}

static bool r_increase(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,
                       const iocd_sample *s, size_t n, int64_t lo, int64_t hi, double *v_out)
{
    (void)args;
    (void)step;
    (void)call;
    return r_extrapolated(ev, step, s, n, lo, hi, true, false, v_out);
}

static bool r_delta(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,
                    const iocd_sample *s, size_t n, int64_t lo, int64_t hi, double *v_out)
{
    (void)args;
    (void)call;
    return r_extrapolated(ev, step, s, n, lo, hi, false, false, v_out);
}

static bool instant_value(const iocd_sample *s, size_t n, bool rate, double *v_out)
{
    double v;
    int64_t dt;

    if (n < 2)
        return false;
    if (rate && s[n - 1].v < s[n - 2].v)
        v = s[n - 1].v; /* a counter reset */
    else
        v = s[n - 1].v - s[n - 2].v;
    if (rate) {
        dt = s[n - 1].t_ms - s[n - 2].t_ms;
        if (dt == 0)
            return false;
        v /= (double)dt / 1000.0;
    }
    *v_out = v;
    return true;
}

static bool r_irate(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,
                    const iocd_sample *s, size_t n, int64_t lo, int64_t hi, double *v_out)
{
    (void)ev, (void)call, (void)args, (void)step, (void)lo, (void)hi;
    return instant_value(s, n, true, v_out);
}

static bool r_idelta(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,
                     const iocd_sample *s, size_t n, int64_t lo, int64_t hi, double *v_out)
{
    (void)ev, (void)call, (void)args, (void)step, (void)lo, (void)hi;
    return instant_value(s, n, false, v_out);
}

/* Neumaier's compensated summation, as Prometheus uses it. */
static void kahan_inc(double inc, double *sum, double *c)
{
    double t = *sum + inc;

    if (fabs(*sum) >= fabs(inc))
        *c += (*sum - t) + inc;
    else
        *c += (inc - t) + *sum;
    *sum = t;
}

static void linear_regression(const iocd_sample *s, size_t n, int64_t t0, double *slope,
                              double *intercept)
{
    double sx = 0, cx = 0, sy = 0, cy = 0, sxy = 0, cxy = 0, sx2 = 0, cx2 = 0, cnt = 0;
    double cov, var;
    bool const_y = true;
    size_t i;

    for (i = 0; i < n; i++) {
        double x = (double)(s[i].t_ms - t0) / 1000.0;
        if (const_y && i > 0 && s[i].v != s[0].v)
            const_y = false;
        cnt += 1;
        kahan_inc(x, &sx, &cx);
        kahan_inc(s[i].v, &sy, &cy);
        kahan_inc(x * s[i].v, &sxy, &cxy);
        kahan_inc(x * x, &sx2, &cx2);
    }
    if (const_y) {
        if (isinf(s[0].v)) {
            *slope = NAN;
            *intercept = NAN;
        } else {
            *slope = 0;
            *intercept = s[0].v;
        }
        return;
    }
    sx += cx;
    sy += cy;
    sxy += cxy;
    sx2 += cx2;
    cov = sxy - sx * sy / cnt;
    var = sx2 - sx * sx / cnt;
    *slope = cov / var;
    *intercept = sy / cnt - *slope * sx / cnt;
}

static bool r_deriv(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,
                    const iocd_sample *s, size_t n, int64_t lo, int64_t hi, double *v_out)
{
    double slope, icpt;

    (void)ev, (void)call, (void)args, (void)step, (void)lo, (void)hi;
    if (n < 2)
        return false;
    linear_regression(s, n, s[0].t_ms, &slope, &icpt);
    *v_out = slope;
    return true;
}

static bool r_predict_linear(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,
                             const iocd_sample *s, size_t n, int64_t lo, int64_t hi, double *v_out)
{
    double slope, icpt;

    (void)call, (void)lo, (void)hi;
    if (n < 2)
        return false;
    linear_regression(s, n, pq_step_t(ev, step), &slope, &icpt);
    *v_out = slope * args[1].scalar[step] + icpt;
    return true;
}

static bool r_holt_winters(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,
                           const iocd_sample *s, size_t n, int64_t lo, int64_t hi, double *v_out)
{
    double sf = args[1].scalar[step], tf = args[2].scalar[step], s0 = 0, s1, b;
    size_t i;

    (void)ev, (void)call, (void)lo, (void)hi;
    if (n < 2)
        return false;
    s1 = s[0].v;
    b = s[1].v - s[0].v;
    for (i = 1; i < n; i++) {
        double x = sf * s[i].v, y;
        if (i > 1)
            b = tf * (s1 - s0) + (1 - tf) * b;
        y = (1 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    *v_out = s1;
    return true;
}

static bool r_resets(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,
                     const iocd_sample *s, size_t n, int64_t lo, int64_t hi, double *v_out)
{
    size_t i, c = 0;

    (void)ev, (void)call, (void)args, (void)step, (void)lo, (void)hi;
    for (i = 1; i < n; i++)
        if (s[i].v < s[i - 1].v)
            c++;
    *v_out = (double)c;
    return true;
}

static bool r_changes(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,
                      const iocd_sample *s, size_t n, int64_t lo, int64_t hi, double *v_out)
{
    size_t i, c = 0;

    (void)ev, (void)call, (void)args, (void)step, (void)lo, (void)hi;
    for (i = 1; i < n; i++)
        if (s[i].v != s[i - 1].v && !(isnan(s[i].v) && isnan(s[i - 1].v)))
            c++;
    *v_out = (double)c;
    return true;
}

#define OVER_TIME(name, ...)                                                                       \
    static bool r_##name(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,            \
                         const iocd_sample *s, size_t n, int64_t lo, int64_t hi, double *v_out)    \
    {                                                                                              \
        size_t i;                                                                                  \
        (void)ev, (void)call, (void)args, (void)step, (void)lo, (void)hi, (void)i, (void)s,        \
            (void)n;                                                                               \
        __VA_ARGS__                                                                                \
    }

OVER_TIME(avg_over_time, {
    double mean = 0, c = 0, count = 0;
    for (i = 0; i < n; i++) {
        count++;
        if (isinf(mean)) {
            if (isinf(s[i].v) && (mean > 0) == (s[i].v > 0))
                continue;
            if (!isinf(s[i].v) && !isnan(s[i].v))
                continue;
        }
        kahan_inc(s[i].v / count - mean / count, &mean, &c);
    }
    *v_out = isinf(mean) ? mean : mean + c;
    return true;
})

OVER_TIME(sum_over_time, {
    double sum = 0, c = 0;
    for (i = 0; i < n; i++)
        kahan_inc(s[i].v, &sum, &c);
    *v_out = isinf(sum) ? sum : sum + c;
    return true;
})

OVER_TIME(count_over_time, {
    *v_out = (double)n;
    return true;
})

OVER_TIME(min_over_time, {
    double v = s[0].v;
    for (i = 1; i < n; i++)
        if (s[i].v < v || isnan(v))
            v = s[i].v;
    *v_out = v;
    return true;
})

OVER_TIME(max_over_time, {
    double v = s[0].v;
    for (i = 1; i < n; i++)
        if (s[i].v > v || isnan(v))
            v = s[i].v;
    *v_out = v;
    return true;
})

OVER_TIME(last_over_time, {
    *v_out = s[n - 1].v;
    return true;
})

OVER_TIME(present_over_time, {
    *v_out = 1;
    return true;
})

static void welford(const iocd_sample *s, size_t n, double *var_out)
{
    double count = 0, mean = 0, cmean = 0, aux = 0, caux = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        double delta;
        count++;
        delta = s[i].v - (mean + cmean);
        kahan_inc(delta / count, &mean, &cmean);
        kahan_inc(delta * (s[i].v - (mean + cmean)), &aux, &caux);
    }
    *var_out = (aux + caux) / count;
}

OVER_TIME(stdvar_over_time, {
    welford(s, n, v_out);
    return true;
})

OVER_TIME(stddev_over_time, {
    welford(s, n, v_out);
    *v_out = sqrt(*v_out);
    return true;
})

static bool r_quantile_over_time(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,
                                 const iocd_sample *s, size_t n, int64_t lo, int64_t hi,
                                 double *v_out)
{
    double stackbuf[256], *v = n <= 256 ? stackbuf : iocd_malloc(n * sizeof(*v));
    size_t i;

    (void)ev, (void)call, (void)lo, (void)hi;
    if (v == NULL)
        return false; /* out of memory: no value (counted nowhere; very rare) */
    for (i = 0; i < n; i++)
        v[i] = s[i].v;
    *v_out = pq_quantile(args[0].scalar[step], v, n);
    if (v != stackbuf)
        iocd_free(v);
    return true;
}

#define RANGE_FUNC(name, ai, keep)                                                                 \
    static iocd_err f_##name(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)      \
    {                                                                                              \
        return range_apply(ev, call, args, ai, r_##name, keep, out);                               \
    }

RANGE_FUNC(rate, 0, false)
RANGE_FUNC(increase, 0, false)
RANGE_FUNC(delta, 0, false)
RANGE_FUNC(irate, 0, false)
RANGE_FUNC(idelta, 0, false)
RANGE_FUNC(deriv, 0, false)
RANGE_FUNC(predict_linear, 0, false)
RANGE_FUNC(resets, 0, false)
RANGE_FUNC(changes, 0, false)
RANGE_FUNC(avg_over_time, 0, false)
RANGE_FUNC(sum_over_time, 0, false)
RANGE_FUNC(count_over_time, 0, false)
RANGE_FUNC(min_over_time, 0, false)
RANGE_FUNC(max_over_time, 0, false)
RANGE_FUNC(last_over_time, 0, true)
RANGE_FUNC(present_over_time, 0, false)
RANGE_FUNC(stdvar_over_time, 0, false)
RANGE_FUNC(stddev_over_time, 0, false)
RANGE_FUNC(quantile_over_time, 1, false)

static iocd_err f_holt_winters(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    size_t j;

    for (j = 0; j < ev->n_steps; j++) {
        double sf = args[1].scalar[j], tf = args[2].scalar[j];
        if (!(sf > 0 && sf < 1))
            return pq_error(ev, IOCD_EINVAL,
                            "invalid smoothing factor. Expected: 0 < sf < 1, got: %f", sf);
        if (!(tf > 0 && tf < 1))
            return pq_error(ev, IOCD_EINVAL, "invalid trend factor. Expected: 0 < tf < 1, got: %f",
                            tf);
    }
    return range_apply(ev, call, args, 0, r_holt_winters, false, out);
}

static iocd_err f_absent_over_time(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    uint8_t *present = iocd_calloc(ev->n_steps, 1);
    pq_value *m = &args[0];
    size_t i, j;
    iocd_err err;

    (void)call;
    if (present == NULL)
        return IOCD_ENOMEM;
    for (i = 0; i < m->n; i++) {
        const pq_series *s = &m->s[i];
        size_t a = 0;
        for (j = 0; j < ev->n_steps; j++) {
            int64_t lo, hi;
            pq_window(ev, m, pq_step_t(ev, j), &lo, &hi);
            if (m->at != PQ_AT_NONE)
                a = 0;
            while (a < s->n_pts && s->pts[a].t_ms < lo)
                a++;
            if (a < s->n_pts && s->pts[a].t_ms <= hi)
                present[j] = 1;
        }
    }
    err = absent_common(ev, m->sel, present, out);
    iocd_free(present);
    return err;
}

/* ---- Labels ---------------------------------------------------------------------------------- */

static bool valid_label_name(const char *s)
{
    const char *p;

    if (*s == '\0')
        return false;
    for (p = s; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
              (p > s && *p >= '0' && *p <= '9')))
            return false;
    return true;
}

static iocd_err f_label_replace(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    const char *dst = args[1].str, *repl = args[2].str, *src = args[3].str, *pat = args[4].str;
    query_regex *re = NULL;
    char why[256];
    size_t i;
    iocd_err err;

    (void)call;
    if (query_regex_new(pat, &re, why, sizeof(why)) != IOCD_OK)
        return pq_error(ev, IOCD_EINVAL, "invalid regular expression in label_replace(): %s", pat);
    if (!valid_label_name(dst)) {
        query_regex_free(re);
        return pq_error(ev, IOCD_EINVAL, "invalid destination label name in label_replace(): %s",
                        dst);
    }
    err = IOCD_OK;
    for (i = 0; err == IOCD_OK && i < args[0].n; i++) {
        pq_series *s = &args[0].s[i];
        const char *v = lset_get(&s->ls, src);
        iocd_buf b;
        iocd_err xerr;
        lset ls;
        iocd_buf_init(&b, 1 << 20);
        if (v == NULL)
            v = "";
        if (query_regex_expand(re, v, strlen(v), repl, &b, &xerr)) {
            err = lset_set(&s->ls, dst, b.data != NULL ? b.data : "", &ls);
            if (err == IOCD_OK) {
                lset_fini(&s->ls);
                s->ls = ls;
            }
        } else if (xerr != IOCD_OK) {
            err = xerr;
        }
        iocd_buf_fini(&b);
    }
    query_regex_free(re);
    if (err != IOCD_OK)
        return err;
    *out = args[0];
    memset(&args[0], 0, sizeof(args[0]));
    return pq_vector_finish(ev, out);
}

static iocd_err f_label_join(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    const char *dst = args[1].str, *sep = args[2].str;
    size_t i, k;
    iocd_err err = IOCD_OK;

    if (!valid_label_name(dst))
        return pq_error(ev, IOCD_EINVAL, "invalid destination label name in label_join(): %s", dst);
    for (i = 0; err == IOCD_OK && i < args[0].n; i++) {
        pq_series *s = &args[0].s[i];
        iocd_buf b;
        lset ls;
        iocd_buf_init(&b, 1 << 20);
        for (k = 3; err == IOCD_OK && k < call->n_args; k++) {
            const char *v = lset_get(&s->ls, args[k].str);
            if (k > 3)
                err = iocd_buf_puts(&b, sep);
            if (err == IOCD_OK && v != NULL)
                err = iocd_buf_puts(&b, v);
        }
        if (err == IOCD_OK)
            err = lset_set(&s->ls, dst, b.data != NULL ? b.data : "", &ls);
        if (err == IOCD_OK) {
            lset_fini(&s->ls);
            s->ls = ls;
        }
        iocd_buf_fini(&b);
    }
    if (err != IOCD_OK)
        return err;
    *out = args[0];
    memset(&args[0], 0, sizeof(args[0]));
    return pq_vector_finish(ev, out);
}

/* ---- Sorting ------------------------------------------------------------------------------- */

static iocd_err sort_common(pq_eval *ev, pq_value *args, bool desc, pq_value *out)
{
    iocd_err err;

    *out = args[0];
    memset(&args[0], 0, sizeof(args[0]));
    err = pq_vector_finish(ev, out);
    if (err == IOCD_OK && ev->n_steps == 1) /* the order only means something for one step */
        iocd_qsort(out->s, out->n, sizeof(*out->s), desc ? pq_by_value_desc : pq_by_value_asc);
    return err;
}

static iocd_err f_sort(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    (void)call;
    return sort_common(ev, args, false, out);
}

static iocd_err f_sort_desc(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)
{
    (void)call;
    return sort_common(ev, args, true, out);
}

/* ---- Histograms ----------------------------------------------------------------------------- */

typedef struct bucket {
    double le, count;
} bucket;

static int bucket_cmp(const void *a, const void *b)
{
    double x = ((const bucket *)a)->le, y = ((const bucket *)b)->le;

    return x < y ? -1 : x > y;
}

static double bucket_quantile(double q, bucket *b, size_t n)
{
    double observations, rank, start = 0, end, count, max = -INFINITY;
    size_t i, k, lo, hi;

    if (isnan(q))
        return NAN;
    if (q < 0)
        return -INFINITY;
    if (q > 1)
        return INFINITY;
    iocd_qsort(b, n, sizeof(*b), bucket_cmp);
    if (n == 0 || !(isinf(b[n - 1].le) && b[n - 1].le > 0))
        return NAN;
    for (i = 1, k = 0; i < n; i++) { /* merge buckets with the same bound */
        if (b[i].le == b[k].le)
            b[k].count += b[i].count;
        else
            b[++k] = b[i];
    }
    n = k + 1;
    for (i = 0; i < n; i++) { /* counts must not fall */
        if (b[i].count > max)
            max = b[i].count;
        else if (b[i].count < max)
            b[i].count = max;
    }
    if (n < 2)
        return NAN;
    observations = b[n - 1].count;
    if (observations == 0)
        return NAN;
    rank = q * observations;
    lo = 0;
    hi = n - 1;
    while (lo < hi) { /* the first bucket whose count reaches the rank */
        size_t mid = (lo + hi) / 2;
        if (b[mid].count >= rank)
            hi = mid;
        else
            lo = mid + 1;
    }
    k = lo;
    if (k == n - 1)
        return b[n - 2].le;
    if (k == 0 && b[0].le <= 0)
        return b[0].le;
    end = b[k].le;
    count = b[k].count;
    if (k > 0) {
        start = b[k - 1].le;
        count -= b[k - 1].count;
        rank -= b[k - 1].count;
    }
    return start + (end - start) * (rank / count);
}

static iocd_err f_histogram_quantile(pq_eval *ev, const pq_node *call, pq_value *args,
                                     pq_value *out)
{
    pq_value *in = &args[1];
    pq_index ix;
    size_t *group_of = NULL, *fill = NULL, *start = NULL, i, j, g;
    double *le = NULL;
    bucket *bk = NULL;
    char le_label[] = "le", *le_name = le_label;
    iocd_err err = IOCD_OK;

    (void)call;
    memset(out, 0, sizeof(*out));
    pq_index_init(&ix);
    group_of = iocd_malloc((in->n + 1) * sizeof(*group_of));
    le = iocd_malloc((in->n + 1) * sizeof(*le));
    if (group_of == NULL || le == NULL)
        err = IOCD_ENOMEM;
    for (i = 0; err == IOCD_OK && i < in->n; i++) {
        const char *v = lset_get(&in->s[i].ls, "le");
        char *end;
        lset key;
        size_t at;
        group_of[i] = SIZE_MAX;
        if (v == NULL)
            continue;
        le[i] = strtod(v, &end);
        if (end == v || *end != '\0')
            continue; /* an unparsable bound: the series is skipped */
        err = lset_filter(&in->s[i].ls, &le_name, 1, false, true, &key);
        if (err != IOCD_OK)
            break;
        err = pq_index_find(&ix, &key, true, &at);
        if (err != IOCD_OK) {
            lset_fini(&key);
            break;
        }
        if (ix.keys[at].s != key.s)
            lset_fini(&key);
        group_of[i] = at;
    }
    if (err == IOCD_OK)
        err = pq_vector_alloc(ev, out, ix.n);
    if (err == IOCD_OK) {
        fill = iocd_calloc(ix.n + 1, sizeof(*fill));
        start = iocd_calloc(ix.n + 1, sizeof(*start));
        bk = iocd_malloc((in->n + 1) * sizeof(*bk));
        if (fill == NULL || start == NULL || bk == NULL)
            err = IOCD_ENOMEM;
    }
    for (g = 0; err == IOCD_OK && g < ix.n; g++) {
        out->s[g].ls = ix.keys[g];
        ix.keys[g].s = NULL;
    }
    for (j = 0; err == IOCD_OK && j < ev->n_steps; j++) {
        size_t at = 0;
        memset(fill, 0, (ix.n + 1) * sizeof(*fill));
        for (i = 0; i < in->n; i++)
            if (group_of[i] != SIZE_MAX && in->s[i].ok[j])
                fill[group_of[i]]++;
        for (g = 0; g < ix.n; g++) {
            start[g] = at;
            at += fill[g];
            fill[g] = 0;
        }
        for (i = 0; i < in->n; i++)
            if (group_of[i] != SIZE_MAX && in->s[i].ok[j]) {
                g = group_of[i];
                bk[start[g] + fill[g]++] = (bucket){ le[i], in->s[i].v[j] };
            }
        for (g = 0; g < ix.n; g++) {
            if (fill[g] == 0)
                continue;
            out->s[g].ok[j] = 1;
            out->s[g].v[j] = bucket_quantile(args[0].scalar[j], bk + start[g], fill[g]);
        }
    }
    iocd_free(group_of);
    iocd_free(le);
    iocd_free(fill);
    iocd_free(start);
    iocd_free(bk);
    for (i = 0; i < ix.n; i++)
        lset_fini(&ix.keys[i]);
    pq_index_fini(&ix);
    if (err != IOCD_OK)
        return err;
    return pq_vector_finish(ev, out);
}

/* ---- Dates ------------------------------------------------------------------------------------
 */

typedef enum date_part {
    D_MINUTE,
    D_HOUR,
    D_DOW,
    D_DOM,
    D_DOY,
    D_DIM,
    D_MONTH,
    D_YEAR,
} date_part;

static double date_of(double v, date_part part)
{
    static const int dim[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    time_t t;
    struct tm tm;
    int y;

    if (!isfinite(v) || fabs(v) > 1e15)
        return NAN;
    t = (time_t)v;
    if (gmtime_r(&t, &tm) == NULL)
        return NAN;
    y = tm.tm_year + 1900;
    switch (part) {
    case D_MINUTE:
        return tm.tm_min;
    case D_HOUR:
        return tm.tm_hour;
    case D_DOW:
        return tm.tm_wday;
    case D_DOM:
        return tm.tm_mday;
    case D_DOY:
        return tm.tm_yday + 1;
    case D_DIM:
        if (tm.tm_mon == 1 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
            return 29;
        return dim[tm.tm_mon];
    case D_MONTH:
        return tm.tm_mon + 1;
    case D_YEAR:
        return y;
    }
    return NAN;
}

static iocd_err date_func(pq_eval *ev, const pq_node *call, pq_value *args, date_part part,
                          pq_value *out)
{
    size_t i, j;
    iocd_err err;

    if (call->n_args == 0) { /* the default: vector(time()) */
        err = pq_vector_alloc(ev, out, 1);
        if (err == IOCD_OK)
            err = empty_lset(&out->s[0].ls);
        for (j = 0; err == IOCD_OK && j < ev->n_steps; j++) {
            out->s[0].ok[j] = 1;
            out->s[0].v[j] = date_of((double)(pq_step_t(ev, j) / 1000), part);
        }
        return err;
    }
    for (i = 0; i < args[0].n; i++) {
        pq_series *s = &args[0].s[i];
        for (j = 0; j < ev->n_steps; j++)
            if (s->ok[j])
                s->v[j] = date_of(s->v[j], part);
        s->drop_name = true;
    }
    *out = args[0];
    memset(&args[0], 0, sizeof(args[0]));
    return pq_vector_finish(ev, out);
}

#define DATE_FUNC(name, part)                                                                      \
    static iocd_err f_##name(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out)      \
    {                                                                                              \
        return date_func(ev, call, args, part, out);                                               \
    }

DATE_FUNC(minute, D_MINUTE)
DATE_FUNC(hour, D_HOUR)
DATE_FUNC(day_of_week, D_DOW)
DATE_FUNC(day_of_month, D_DOM)
DATE_FUNC(day_of_year, D_DOY)
DATE_FUNC(days_in_month, D_DIM)
DATE_FUNC(month, D_MONTH)
DATE_FUNC(year, D_YEAR)

/* ---- The table --------------------------------------------------------------------------------
 */

#define V   QUERY_VECTOR
#define M   QUERY_MATRIX
#define S   QUERY_SCALAR
#define STR QUERY_STRING

static const pq_func funcs[] = {
    { "abs", V, { V }, 1, 0, f_abs, false },
    { "absent", V, { V }, 1, 0, f_absent, false },
    { "absent_over_time", V, { M }, 1, 0, f_absent_over_time, false },
    { "acos", V, { V }, 1, 0, f_acos, false },
    { "acosh", V, { V }, 1, 0, f_acosh, false },
    { "asin", V, { V }, 1, 0, f_asin, false },
    { "asinh", V, { V }, 1, 0, f_asinh, false },
    { "atan", V, { V }, 1, 0, f_atan, false },
    { "atanh", V, { V }, 1, 0, f_atanh, false },
    { "avg_over_time", V, { M }, 1, 0, f_avg_over_time, true },
    { "ceil", V, { V }, 1, 0, f_ceil, false },
    { "changes", V, { M }, 1, 0, f_changes, true },
    { "clamp", V, { V, S, S }, 3, 0, f_clamp, false },
    { "clamp_max", V, { V, S }, 2, 0, f_clamp_max, false },
    { "clamp_min", V, { V, S }, 2, 0, f_clamp_min, false },
    { "cos", V, { V }, 1, 0, f_cos, false },
    { "cosh", V, { V }, 1, 0, f_cosh, false },
    { "count_over_time", V, { M }, 1, 0, f_count_over_time, true },
    { "day_of_month", V, { V }, 0, 1, f_day_of_month, false },
    { "day_of_week", V, { V }, 0, 1, f_day_of_week, false },
    { "day_of_year", V, { V }, 0, 1, f_day_of_year, false },
    { "days_in_month", V, { V }, 0, 1, f_days_in_month, false },
    { "deg", V, { V }, 1, 0, f_deg, false },
    { "delta", V, { M }, 1, 0, f_delta, true },
    { "deriv", V, { M }, 1, 0, f_deriv, true },
    { "exp", V, { V }, 1, 0, f_exp, false },
    { "floor", V, { V }, 1, 0, f_floor, false },
    { "histogram_quantile", V, { S, V }, 2, 0, f_histogram_quantile, false },
    { "holt_winters", V, { M, S, S }, 3, 0, f_holt_winters, true },
    { "hour", V, { V }, 0, 1, f_hour, false },
    { "idelta", V, { M }, 1, 0, f_idelta, true },
    { "increase", V, { M }, 1, 0, f_increase, true },
    { "irate", V, { M }, 1, 0, f_irate, true },
    { "label_join", V, { V, STR, STR, STR }, 3, -1, f_label_join, false },
    { "label_replace", V, { V, STR, STR, STR }, 5, 0, f_label_replace, false },
    { "last_over_time", V, { M }, 1, 0, f_last_over_time, true },
    { "ln", V, { V }, 1, 0, f_ln, false },
    { "log10", V, { V }, 1, 0, f_log10, false },
    { "log2", V, { V }, 1, 0, f_log2, false },
    { "max_over_time", V, { M }, 1, 0, f_max_over_time, true },
    { "min_over_time", V, { M }, 1, 0, f_min_over_time, true },
    { "minute", V, { V }, 0, 1, f_minute, false },
    { "month", V, { V }, 0, 1, f_month, false },
    { "pi", S, { S }, 0, 0, f_pi, false },
    { "predict_linear", V, { M, S }, 2, 0, f_predict_linear, true },
    { "present_over_time", V, { M }, 1, 0, f_present_over_time, true },
    { "quantile_over_time", V, { S, M }, 2, 0, f_quantile_over_time, true },
    { "rad", V, { V }, 1, 0, f_rad, false },
    { "rate", V, { M }, 1, 0, f_rate, true },
    { "resets", V, { M }, 1, 0, f_resets, true },
    { "round", V, { V, S }, 1, 1, f_round, false },
    { "scalar", S, { V }, 1, 0, f_scalar, false },
    { "sgn", V, { V }, 1, 0, f_sgn, false },
    { "sin", V, { V }, 1, 0, f_sin, false },
    { "sinh", V, { V }, 1, 0, f_sinh, false },
    { "sort", V, { V }, 1, 0, f_sort, false },
    { "sort_desc", V, { V }, 1, 0, f_sort_desc, false },
    { "sqrt", V, { V }, 1, 0, f_sqrt, false },
    { "stddev_over_time", V, { M }, 1, 0, f_stddev_over_time, true },
    { "stdvar_over_time", V, { M }, 1, 0, f_stdvar_over_time, true },
    { "sum_over_time", V, { M }, 1, 0, f_sum_over_time, true },
    { "tan", V, { V }, 1, 0, f_tan, false },
    { "tanh", V, { V }, 1, 0, f_tanh, false },
    { "time", S, { S }, 0, 0, f_time, false },
    { "timestamp", V, { V }, 1, 0, f_timestamp, false },
    { "vector", V, { S }, 1, 0, f_vector, false },
    { "year", V, { V }, 0, 1, f_year, false },
};

const pq_func *pq_func_find(const char *name)
{
    size_t lo = 0, hi = IOCD_ARRAY_LEN(funcs);

    while (lo < hi) { /* the table is sorted by name */
        size_t mid = (lo + hi) / 2;
        int c = strcmp(funcs[mid].name, name);
        if (c == 0)
            return &funcs[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
