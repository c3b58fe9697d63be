/* query/binop.c - PromQL's binary operators, as of Prometheus 2.42: arithmetic and comparisons
 * (filters, or with bool) between scalars and vectors, the set operators and/or/unless, and
 * vector matching (on/ignoring, group_left/group_right) with Prometheus' errors for duplicate
 * series. Both operands are evaluated first, then combined for all steps; the operand values
 * are consumed (moved into the result where they can be). */
#include "query/query_int.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

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
    pq_index_free_keys(&sigs);
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
                    err = pq_hold(ev, ev->n_steps);
                    if (err == IOCD_OK)
                        err = pq_series_alloc(ev, &out->s[at]);
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
    pq_index_free_keys(&sigs);
    pq_index_fini(&outs); /* its keys are the output series' labels */
    if (err != IOCD_OK)
        return err;
    return pq_vector_finish(ev, out);
}

iocd_err pq_eval_binary(pq_eval *ev, const pq_node *n, pq_value *out)
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
