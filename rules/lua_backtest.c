/* rules/lua_backtest.c - `iocd rules backtest`: replays stored history through a rule set and
 * prints when each alert would have fired and resolved, so a new threshold is tried on last
 * month's data before it goes live. The samples of every series the streaming and absence
 * rules select are read an hour at a time, merged in time order and fed to a private engine
 * (no state saved, recording rules not written), stepped once per second of history, so
 * PromQL rules are evaluated at their historical times too. */
#include "rules/rules_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_MS 3600000LL

typedef struct bt_sample {
    uint64_t id;
    iocd_sample s;
} bt_sample;

typedef struct bt_ctx {
    const uint64_t *ids;
    bt_sample *v;
    size_t n, cap;
    iocd_err err;
} bt_ctx;

typedef struct bt_stats {
    size_t fired, resolved;
    FILE *out;
} bt_stats;

static iocd_err bt_collect(void *ud, size_t i, const iocd_sample *s, size_t n)
{
    bt_ctx *c = ud;
    size_t k;

    if (c->n + n > c->cap) {
        size_t cap = (c->n + n) * 2;
        bt_sample *g = iocd_realloc(c->v, cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        c->v = g;
        c->cap = cap;
    }
    for (k = 0; k < n; k++)
        c->v[c->n++] = (bt_sample){ c->ids[i], s[k] };
    return IOCD_OK;
}

static int bt_cmp(const void *a, const void *b)
{
    const bt_sample *x = a, *y = b;

    if (x->s.t_ms != y->s.t_ms)
        return x->s.t_ms < y->s.t_ms ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void bt_event(void *ud, const rule_event *ev)
{
    bt_stats *st = ud;
    const char *p = ev->labels, *end = ev->labels + ev->labels_len;
    char when[40];

    if (ev->to == RULE_PENDING || (ev->from == RULE_PENDING && ev->to == RULE_INACTIVE))
        return; /* pending is not an alert yet */
    iocd_time_format(ev->t_ms, when, sizeof(when));
    fprintf(st->out, "%s  %-8s %s {", when, ev->to == RULE_FIRING ? "firing" : "resolved",
            ev->rule);
    bool first = true;

    while (p < end) {
        const char *v = p + strlen(p) + 1;
        if (strcmp(p, "alertname") != 0) {
            fprintf(st->out, "%s%s=\"%s\"", first ? "" : ", ", p, v);
            first = false;
        }
        p = v + strlen(v) + 1;
    }
    fprintf(st->out, "}");
    if (ev->to == RULE_FIRING && ev->summary[0] != '\0')
        fprintf(st->out, "  %s", ev->summary);
    if (ev->to == RULE_INACTIVE)
        fprintf(st->out, "  (after %.0f s)", (double)(ev->t_ms - ev->active_since_ms) / 1000.0);
    fputc('\n', st->out);
    if (ev->to == RULE_FIRING)
        st->fired++;
    else
        st->resolved++;
}

/* The union of the streaming and absence rules' selections, ascending. */
static iocd_err selected_ids(store *st, const rule_set *rs, uint64_t **out, size_t *n_out)
{
    uint64_t *all = NULL;
    size_t n = 0, i, k;
    iocd_err err = IOCD_OK;

    for (i = 0; err == IOCD_OK && i < rs->n; i++) {
        uint64_t *ids = NULL, *g;
        size_t m = 0;
        if (rs->rules[i].kind != RULE_STREAM && rs->rules[i].kind != RULE_ABSENT)
            continue;
        err = query_select(st, &rs->rules[i].sel, &ids, &m);
        if (err != IOCD_OK)
            break;
        g = iocd_realloc(all, (n + m + 1) * sizeof(*g));
        if (g == NULL) {
            iocd_free(ids);
            err = IOCD_ENOMEM;
            break;
        }
        all = g;
        if (m > 0)
            memcpy(all + n, ids, m * sizeof(*ids));
        n += m;
        iocd_free(ids);
    }
    if (err != IOCD_OK) {
        iocd_free(all);
        return err;
    }
    if (all == NULL && (all = iocd_malloc(sizeof(*all))) == NULL)
        return IOCD_ENOMEM;
    for (i = 1; i < n; i++) { /* insertion sort is fine: the runs are sorted already */
        uint64_t x = all[i];
        size_t j = i;
        while (j > 0 && all[j - 1] > x) {
            all[j] = all[j - 1];
            j--;
        }
        all[j] = x;
    }
    for (i = 0, k = 0; i < n; i++)
        if (k == 0 || all[k - 1] != all[i])
            all[k++] = all[i];
    *out = all;
    *n_out = k;
    return IOCD_OK;
}

iocd_err rule_backtest(store *st, const char *rules_path, const rule_engine_config *base,
                       int64_t from_ms, int64_t to_ms, FILE *out, char *errbuf, size_t errlen)
{
    rule_engine_config cfg = *base;
    rule_engine *e = NULL;
    rule_set *probe = NULL;
    bt_stats stats = { 0, 0, out };
    uint64_t *ids = NULL;
    size_t n_ids = 0, fed = 0;
    int64_t t, next_step, last_progress = iocd_mono_ns();
    iocd_err err;

    cfg.st = st;
    cfg.no_persist = true;
    cfg.no_record = true;
    cfg.on_event = bt_event;
    cfg.ud = &stats;
    err = rule_set_load(rules_path, &cfg.lim, &probe, errbuf, errlen);
    if (err == IOCD_OK)
        err = selected_ids(st, probe, &ids, &n_ids);
    rule_set_free(probe);
    if (err == IOCD_OK)
        err = rule_engine_new(&cfg, &e);
    if (err == IOCD_OK)
        err = rule_engine_load(e, rules_path, errbuf, errlen);
    if (err != IOCD_OK)
        goto out;
    fprintf(stderr, "backtest: %zu rules, %zu series, from %lld to %lld\n", rule_engine_count(e),
            n_ids, (long long)from_ms, (long long)to_ms);
    rule_engine_step(e, from_ms);
    next_step = from_ms + 1000;
    for (t = from_ms; t < to_ms && err == IOCD_OK; t += CHUNK_MS) {
        int64_t hi = t + CHUNK_MS - 1 < to_ms ? t + CHUNK_MS - 1 : to_ms;
        bt_ctx c = { ids, NULL, 0, 0, IOCD_OK };
        size_t i;
        err = store_read_many(st, ids, n_ids, t, hi, bt_collect, &c);
        if (err == IOCD_OK && c.n > 0)
            iocd_qsort(c.v, c.n, sizeof(*c.v), bt_cmp);
        for (i = 0; err == IOCD_OK && i < c.n; i++) {
            while (c.v[i].s.t_ms >= next_step) { /* a second of history has passed */
                rule_engine_step(e, next_step);
                next_step += 1000;
            }
            rule_engine_feed(e, &c.v[i].id, &c.v[i].s, 1);
            fed++;
        }
        while (next_step <= hi) {
            rule_engine_step(e, next_step);
            next_step += 1000;
        }
        iocd_free(c.v);
        if (iocd_mono_ns() - last_progress > 2000000000LL) {
            fprintf(stderr, "backtest: %.0f%% (%zu samples)\n",
                    100.0 * (double)(hi - from_ms) / (double)(to_ms - from_ms), fed);
            last_progress = iocd_mono_ns();
        }
    }
    fprintf(out, "# %zu samples replayed; %zu alerts fired, %zu resolved\n", fed, stats.fired,
            stats.resolved);
out:
    rule_engine_free(e);
    iocd_free(ids);
    return err;
}
