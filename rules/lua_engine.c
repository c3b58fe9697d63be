/* rules/lua_engine.c - the alert rule engine: one thread with one Lua state, fed committed
 * samples through a queue by the store's listener (ingest never waits on it), evaluating
 * streaming rules per sample, absence and PromQL rules on a 1 s tick, recording rules, and
 * the alert state machine (inactive -> pending -> firing -> resolved, with hold, keep and
 * hysteresis). Alert instances are keyed by rule and grouping labels; an instance is active
 * while any of its member series satisfies the rule (entered by `when`, left by `clear`).
 * Invariant: the rule set, series states and instances are touched by the engine thread only
 * (or by the caller of rule_engine_step when there is no thread); the queue and the pending
 * rule set are shared under e->mu. Alert labels and events are in lua_events.c, alert state in
 * the store in lua_persist.c, the API's views in lua_views.c. */
#include "rules/lua_engine_int.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_DEFAULT (4u << 20)
#define WINDOW_MAX_N  100000 /* samples one series' window may hold */
#define ROUND_MAX     4096   /* samples taken from the queue at once */

/* ---- Small maps ------------------------------------------------------------------------------ */

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 31);
}

static size_t id_slot(uint64_t id, size_t cap)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
}

static series_state *series_find(rule_engine *e, uint64_t id)
{
    size_t i;

    if (e->series_cap == 0)
        return NULL;
    for (i = id_slot(id, e->series_cap); e->series[i] != NULL; i = (i + 1) & (e->series_cap - 1))
        if (e->series[i]->id == id)
            return e->series[i];
    return NULL;
}

static iocd_err series_insert(rule_engine *e, series_state *s)
{
    size_t i;

    if ((e->n_series + 1) * 2 > e->series_cap) {
        size_t cap = e->series_cap != 0 ? e->series_cap * 2 : 1024;
        series_state **g = iocd_calloc(cap, sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        for (i = 0; i < e->series_cap; i++) {
            size_t j;
            if (e->series[i] == NULL)
                continue;
            for (j = id_slot(e->series[i]->id, cap); g[j] != NULL; j = (j + 1) & (cap - 1))
                ;
            g[j] = e->series[i];
        }
        iocd_free(e->series);
        e->series = g;
        e->series_cap = cap;
    }
    for (i = id_slot(s->id, e->series_cap); e->series[i] != NULL; i = (i + 1) & (e->series_cap - 1))
        ;
    e->series[i] = s;
    e->n_series++;
    return IOCD_OK;
}

static void series_free(series_state *s)
{
    if (s == NULL)
        return;
    iocd_free(s->labels);
    iocd_free(s->rules);
    iocd_free(s->inst);
    iocd_free(s->win);
    iocd_free(s);
}

static instance *inst_find(rule_engine *e, const char *key, size_t len, size_t *slot_out)
{
    size_t i;

    *slot_out = SIZE_MAX;
    if (e->inst_cap == 0)
        return NULL;
    for (i = (size_t)hash_bytes(key, len) & (e->inst_cap - 1); e->inst[i] != NULL;
         i = (i + 1) & (e->inst_cap - 1)) {
        if (e->inst[i]->key_len == len && memcmp(e->inst[i]->key, key, len) == 0) {
            *slot_out = i;
            return e->inst[i];
        }
    }
    *slot_out = i;
    return NULL;
}

static iocd_err inst_rehash(rule_engine *e, size_t cap)
{
    instance **g = iocd_calloc(cap, sizeof(*g));
    size_t i;

    if (g == NULL)
        return IOCD_ENOMEM;
    for (i = 0; i < e->inst_cap; i++) {
        size_t j;
        if (e->inst[i] == NULL)
            continue;
        for (j = (size_t)hash_bytes(e->inst[i]->key, e->inst[i]->key_len) & (cap - 1); g[j] != NULL;
             j = (j + 1) & (cap - 1))
            ;
        g[j] = e->inst[i];
    }
    iocd_free(e->inst);
    e->inst = g;
    e->inst_cap = cap;
    return IOCD_OK;
}

static void inst_free(instance *in)
{
    if (in == NULL)
        return;
    iocd_free(in->key);
    iocd_free(in->glabels);
    iocd_free(in->members);
    iocd_free(in->summary);
    iocd_free(in->description);
    iocd_free(in);
}

/* Removes instance at slot (backward-shift deletion keeps probing chains intact). */
static void inst_remove(rule_engine *e, size_t slot)
{
    size_t i = slot, j = slot;

    e->health[e->inst[slot]->rule].inst_epoch++;
    inst_free(e->inst[slot]);
    e->inst[slot] = NULL;
    e->n_inst--;
    for (;;) {
        size_t k;
        j = (j + 1) & (e->inst_cap - 1);
        if (e->inst[j] == NULL)
            return;
        k = (size_t)hash_bytes(e->inst[j]->key, e->inst[j]->key_len) & (e->inst_cap - 1);
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            e->inst[i] = e->inst[j];
            e->inst[j] = NULL;
            i = j;
        }
    }
}

/* Advances an instance's state machine at t_ms; true when it can be dropped. */
static bool advance(rule_engine *e, const rule_def *r, instance *in, int64_t t_ms)
{
    bool active = in->n_members > 0;

    if (t_ms > in->last_ms)
        in->last_ms = t_ms;
    switch (in->state) {
    case RULE_INACTIVE:
        if (!active)
            return true;
        in->since_ms = t_ms;
        in->keeping = false;
        if (r->hold_ms == 0) {
            in->state = RULE_FIRING;
            rule_emit(e, r, in, RULE_INACTIVE, RULE_FIRING, t_ms);
        } else {
            in->state = RULE_PENDING;
            rule_emit(e, r, in, RULE_INACTIVE, RULE_PENDING, t_ms);
        }
        return false;
    case RULE_PENDING:
        if (!active) {
            in->state = RULE_INACTIVE;
            rule_emit(e, r, in, RULE_PENDING, RULE_INACTIVE, t_ms);
            return true;
        }
        if (t_ms - in->since_ms >= r->hold_ms) {
            in->state = RULE_FIRING;
            rule_emit(e, r, in, RULE_PENDING, RULE_FIRING, t_ms);
        }
        return false;
    case RULE_FIRING:
        if (active) {
            in->keeping = false;
            return false;
        }
        if (!in->keeping) {
            in->keeping = true;
            in->clear_ms = t_ms;
        }
        if (t_ms - in->clear_ms >= r->keep_ms) {
            in->state = RULE_INACTIVE;
            rule_emit(e, r, in, RULE_FIRING, RULE_INACTIVE, t_ms);
            return true;
        }
        return false;
    }
    return false;
}

/* The instance of rule ri for grouping labels g, created when create. */
instance *rule_instance_get(rule_engine *e, uint32_t ri, const char *g, size_t glen, bool create)
{
    const rule_def *r = &e->rs->rules[ri];
    size_t nlen = strlen(r->name), klen = nlen + 1 + glen, slot;
    char stack[1024], *key = klen <= sizeof(stack) ? stack : iocd_malloc(klen);
    instance *in;

    if (key == NULL)
        return NULL;
    memcpy(key, r->name, nlen);
    key[nlen] = '\xff';
    if (glen > 0)
        memcpy(key + nlen + 1, g, glen);
    in = inst_find(e, key, klen, &slot);
    if (in == NULL && create) {
        if ((e->n_inst + 1) * 2 > e->inst_cap) {
            if (inst_rehash(e, e->inst_cap != 0 ? e->inst_cap * 2 : 256) != IOCD_OK)
                goto out;
            inst_find(e, key, klen, &slot);
        }
        in = iocd_calloc(1, sizeof(*in));
        if (in == NULL)
            goto out;
        in->key = iocd_malloc(klen);
        in->glabels = iocd_malloc(glen + 1);
        if (in->key == NULL || in->glabels == NULL) {
            inst_free(in);
            in = NULL;
            goto out;
        }
        memcpy(in->key, key, klen);
        in->key_len = klen;
        if (glen > 0)
            memcpy(in->glabels, g, glen);
        in->glabels_len = (uint32_t)glen;
        in->rule = ri;
        in->state = RULE_INACTIVE;
        e->inst[slot] = in;
        e->n_inst++;
        e->health[ri].inst_epoch++;
    }
out:
    if (key != stack)
        iocd_free(key);
    return in;
}

static void drop_if_done(rule_engine *e, instance *in, bool done)
{
    size_t slot;

    if (!done || in->n_members > 0)
        return;
    if (inst_find(e, in->key, in->key_len, &slot) == in)
        inst_remove(e, slot);
}

static bool member_has(const instance *in, uint64_t id, size_t *at)
{
    size_t i;

    for (i = 0; i < in->n_members; i++)
        if (in->members[i] == id) {
            *at = i;
            return true;
        }
    return false;
}

iocd_err rule_member_add(instance *in, uint64_t id)
{
    if (in->n_members == in->cap_members) {
        size_t cap = in->cap_members != 0 ? in->cap_members * 2 : 4;
        uint64_t *g = iocd_realloc(in->members, cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        in->members = g;
        in->cap_members = cap;
    }
    in->members[in->n_members++] = id;
    return IOCD_OK;
}

/* ---- Rule failures ------------------------------------------------------------------------------
 */

static void rule_failed(rule_engine *e, uint32_t ri, const char *why)
{
    rule_health *h = &e->health[ri];

    if (h->failed)
        return;
    h->failed = true;
    snprintf(h->err, sizeof(h->err), "%s", why);
    iocd_metric_add(e->m_failures, 1);
    log_error("rules", "rule failed and is disabled until the next reload",
              "rule=%s file=%s:%d err=%s", e->rs->rules[ri].name, e->rs->rules[ri].file,
              e->rs->rules[ri].line, why);
    e->dirty = true;
    if (e->cfg.on_event != NULL) { /* a failed rule is an incident of its own */
        const rule_def *r = &e->rs->rules[ri];
        iocd_buf labels, summary;
        rule_event ev;
        iocd_buf_init(&labels, 0);
        iocd_buf_init(&summary, 0);
        rule_label_collect(&labels, "alertname", 9, "iocd_rule_failed", 16);
        rule_label_collect(&labels, "domain", 6, "platform", 8);
        rule_label_collect(&labels, "rule", 4, r->name, strlen(r->name));
        rule_label_collect(&labels, "severity", 8, "warning", 7);
        iocd_buf_printf(&summary, "Rule %s (%s:%d) failed and is disabled: %s", r->name, r->file,
                        r->line, why);
        memset(&ev, 0, sizeof(ev));
        ev.rule = "iocd_rule_failed";
        ev.from = RULE_INACTIVE;
        ev.to = RULE_FIRING;
        ev.labels = labels.data != NULL ? labels.data : "";
        ev.labels_len = labels.len;
        ev.summary = summary.data != NULL ? summary.data : "";
        ev.description = "";
        ev.runbook = "";
        ev.severity = "warning";
        ev.domain = "platform";
        ev.t_ms = e->now_ms;
        ev.active_since_ms = e->now_ms;
        e->cfg.on_event(e->cfg.ud, &ev);
        iocd_buf_fini(&labels);
        iocd_buf_fini(&summary);
    }
}

/* ---- Streaming rules ------------------------------------------------------------------------- */

static rule_ctx make_ctx(rule_engine *e, int64_t now_ms)
{
    rule_ctx c;

    c.st = e->cfg.st;
    c.qlim = &e->cfg.qlim;
    c.now_ms = now_ms;
    c.latitude = e->cfg.latitude;
    c.longitude = e->cfg.longitude;
    c.tz_offset_s = e->cfg.tz_offset_s;
    return c;
}

/* Matches a series against the set's stream and absent rules (on first sight, and after a
 * reload). */
/* ---- The rule index: which rules a series can match ---------------------------------------- */

/* Each stream or absent rule is filed under one of its equality matchers (the last one,
 * which in a selector like metric{ward="x"} is the most selective), or, without any, in the
 * list checked for every series. A series then checks only the rules filed under its own
 * label pairs: 1,000 rules over 100k series cost a few lookups per series, not 1,000. */
typedef struct rindex_entry {
    char *key; /* name \0 value */
    size_t key_len;
    uint32_t *rules;
    size_t n;
} rindex_entry;

struct rule_index {
    rindex_entry *e;
    size_t cap, n;
    uint32_t *other; /* rules with no equality matcher */
    size_t n_other;
};

static void rindex_free(rule_index *ix)
{
    size_t i;

    if (ix == NULL)
        return;
    for (i = 0; i < ix->cap; i++) {
        iocd_free(ix->e[i].key);
        iocd_free(ix->e[i].rules);
    }
    iocd_free(ix->e);
    iocd_free(ix->other);
    iocd_free(ix);
}

static rindex_entry *rindex_slot(rule_index *ix, const char *key, size_t len)
{
    size_t i;

    for (i = (size_t)hash_bytes(key, len) & (ix->cap - 1); ix->e[i].key != NULL;
         i = (i + 1) & (ix->cap - 1))
        if (ix->e[i].key_len == len && memcmp(ix->e[i].key, key, len) == 0)
            break;
    return &ix->e[i];
}

static iocd_err push_rule(uint32_t **v, size_t *n, uint32_t r)
{
    if (*n % 8 == 0) {
        uint32_t *g = iocd_realloc(*v, (*n + 8) * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        *v = g;
    }
    (*v)[(*n)++] = r;
    return IOCD_OK;
}

static iocd_err rindex_build(const rule_set *rs, rule_index **out)
{
    rule_index *ix = iocd_calloc(1, sizeof(*ix));
    size_t i, cap = 64;
    iocd_err err = IOCD_OK;

    if (ix == NULL)
        return IOCD_ENOMEM;
    while (cap < rs->n * 2 + 2)
        cap *= 2;
    ix->e = iocd_calloc(cap, sizeof(*ix->e));
    ix->cap = cap;
    if (ix->e == NULL)
        err = IOCD_ENOMEM;
    for (i = 0; err == IOCD_OK && i < rs->n; i++) {
        const rule_def *r = &rs->rules[i];
        const query_matcher *m = NULL;
        size_t k;
        if (r->kind != RULE_STREAM && r->kind != RULE_ABSENT)
            continue;
        for (k = 0; k < r->sel.n; k++)
            if (r->sel.m[k].op == QUERY_MATCH_EQ && r->sel.m[k].value[0] != '\0')
                m = &r->sel.m[k];
        if (m == NULL) {
            err = push_rule(&ix->other, &ix->n_other, (uint32_t)i);
        } else {
            size_t nl = strlen(m->name), vl = strlen(m->value), len = nl + 1 + vl;
            char *key = iocd_malloc(len + 1);
            rindex_entry *slot;
            if (key == NULL) {
                err = IOCD_ENOMEM;
                break;
            }
            memcpy(key, m->name, nl + 1);
            memcpy(key + nl + 1, m->value, vl + 1);
            slot = rindex_slot(ix, key, len);
            if (slot->key == NULL) {
                slot->key = key;
                slot->key_len = len;
                ix->n++;
            } else {
                iocd_free(key);
            }
            err = push_rule(&slot->rules, &slot->n, (uint32_t)i);
        }
    }
    if (err != IOCD_OK) {
        rindex_free(ix);
        return err;
    }
    *out = ix;
    return IOCD_OK;
}

static bool rule_matches(const rule_def *r, const series_state *s)
{
    size_t m;

    for (m = 0; m < r->sel.n; m++) {
        const char *v = iocd_label_value(s->labels, s->labels_len, r->sel.m[m].name);
        if (!query_matcher_matches(&r->sel.m[m], v != NULL ? v : "", v != NULL ? strlen(v) : 0))
            return false;
    }
    return true;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* Matches a series against the set's stream and absent rules (on first sight, and after a
 * reload), through the index. */
static iocd_err series_match(rule_engine *e, series_state *s)
{
    const rule_index *ix = e->index;
    const char *p = s->labels, *end = s->labels + s->labels_len;
    uint32_t *rules = NULL;
    inst_ref *refs = NULL;
    size_t n = 0, i;
    iocd_err err = IOCD_OK;

    s->window_ms = 0;
    for (i = 0; ix != NULL && err == IOCD_OK && i < ix->n_other; i++)
        if (rule_matches(&e->rs->rules[ix->other[i]], s))
            err = push_rule(&rules, &n, ix->other[i]);
    while (ix != NULL && err == IOCD_OK && p < end) {
        const char *v = p + strlen(p) + 1, *next = v + strlen(v) + 1;
        rindex_entry *slot = rindex_slot((rule_index *)ix, p, (size_t)(next - p - 1));
        for (i = 0; slot->key != NULL && err == IOCD_OK && i < slot->n; i++)
            if (rule_matches(&e->rs->rules[slot->rules[i]], s))
                err = push_rule(&rules, &n, slot->rules[i]);
        p = next;
    }
    if (err == IOCD_OK && n > 0) {
        refs = iocd_calloc(n, sizeof(*refs)); /* epoch 0: none known yet */
        if (refs == NULL)
            err = IOCD_ENOMEM;
    }
    if (err != IOCD_OK) {
        iocd_free(rules);
        return err;
    }
    if (n > 1)
        iocd_qsort(rules, n, sizeof(*rules), cmp_u32); /* rule order, as in the files */
    for (i = 0; i < n; i++)
        if (e->rs->rules[rules[i]].window_ms > s->window_ms)
            s->window_ms = e->rs->rules[rules[i]].window_ms;
    iocd_free(s->rules);
    iocd_free(s->inst);
    s->rules = rules;
    s->inst = refs;
    s->n_rules = (uint32_t)n;
    s->gen = e->gen;
    return IOCD_OK;
}

static series_state *series_for(rule_engine *e, uint64_t id)
{
    series_state *s = series_find(e, id);
    iocd_buf b;

    if (s != NULL) {
        if (s->gen != e->gen && series_match(e, s) != IOCD_OK)
            return NULL;
        return s;
    }
    if (e->cfg.st == NULL)
        return NULL;
    s = iocd_calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->id = id;
    iocd_buf_init(&b, 0);
    if (store_series_labels(e->cfg.st, id, rule_label_collect, &b) != IOCD_OK || b.len == 0 ||
        series_insert(e, s) != IOCD_OK) {
        iocd_buf_fini(&b);
        iocd_free(s);
        return NULL;
    }
    s->labels_len = (uint32_t)b.len;
    s->labels = iocd_buf_take(&b, NULL);
    if (series_match(e, s) != IOCD_OK)
        return NULL;
    return s;
}

/* Adds a sample to the series' window, dropping what fell out of it. */
static void window_push(series_state *s, iocd_sample x)
{
    size_t drop = 0;

    if (s->n_win > 0 && x.t_ms <= s->win[s->n_win - 1].t_ms) {
        if (x.t_ms == s->win[s->n_win - 1].t_ms)
            s->win[s->n_win - 1] = x; /* a rewrite of the newest: the last write wins */
        return;                       /* older samples do not move a window */
    }
    while (drop < s->n_win && s->win[drop].t_ms < x.t_ms - s->window_ms)
        drop++;
    if (drop > 0) {
        memmove(s->win, s->win + drop, (s->n_win - drop) * sizeof(*s->win));
        s->n_win -= (uint32_t)drop;
    }
    if (s->n_win == s->cap_win) {
        uint32_t cap = s->cap_win != 0 ? s->cap_win * 2 : 8;
        iocd_sample *g;
        if (cap > WINDOW_MAX_N) { /* too dense for the window: forget the oldest */
            memmove(s->win, s->win + 1, (s->n_win - 1) * sizeof(*s->win));
            s->n_win--;
        } else {
            g = iocd_realloc(s->win, cap * sizeof(*g));
            if (g == NULL)
                return;
            s->win = g;
            s->cap_win = cap;
        }
    }
    s->win[s->n_win++] = x;
}

/* The instance of rule s->rules[k] for the series' group (created when create), through the
 * series' cache: most samples change no instance, and then cost no key building or hashing. */
static instance *series_instance(rule_engine *e, series_state *s, uint32_t k, bool create)
{
    inst_ref *c = &s->inst[k];
    const rule_def *r = &e->rs->rules[s->rules[k]];
    const uint64_t *epoch = &e->health[s->rules[k]].inst_epoch;
    iocd_buf g;
    instance *in = NULL;

    if (c->epoch == *epoch && (c->in != NULL || !create))
        return c->in;
    iocd_buf_init(&g, 0);
    if (rule_group_labels(r, s->labels, s->labels_len, &g) == IOCD_OK) {
        in = rule_instance_get(e, s->rules[k], g.data != NULL ? g.data : "", g.len, create);
        c->in = in;
        c->epoch = *epoch;
    }
    iocd_buf_fini(&g);
    return in;
}

static void stream_sample(rule_engine *e, series_state *s, uint32_t k, iocd_sample x)
{
    uint32_t ri = s->rules[k];
    const rule_def *r = &e->rs->rules[ri];
    rule_window w;
    rule_ctx ctx = make_ctx(e, x.t_ms);
    instance *in;
    size_t at = 0;
    char err[ERR_MAX];
    bool member, result = false;
    iocd_err rc;

    /* The rule's window over the series' (possibly longer) window. */
    w.s = s->win;
    w.n = s->n_win;
    while (w.n > 0 && w.s[0].t_ms < x.t_ms - r->window_ms) {
        w.s++;
        w.n--;
    }
    w.span_ms = r->window_ms;
    in = series_instance(e, s, k, false);
    member = in != NULL && member_has(in, s->id, &at);
    if (!member) {
        rc = rule_cond_eval(e->rs, r, &r->when, s->labels, s->labels_len, &w, &ctx, &result, err,
                            sizeof(err));
    } else if (r->clear.ref != LUA_NOREF) {
        rc = rule_cond_eval(e->rs, r, &r->clear, s->labels, s->labels_len, &w, &ctx, &result, err,
                            sizeof(err));
    } else {
        rc = rule_cond_eval(e->rs, r, &r->when, s->labels, s->labels_len, &w, &ctx, &result, err,
                            sizeof(err));
        result = !result; /* no clear: it clears when `when` stops holding */
    }
    iocd_metric_add(e->m_evals, 1);
    e->health[ri].evaluations++;
    e->health[ri].last_eval_ms = e->now_ms;
    if (rc != IOCD_OK) {
        rule_failed(e, ri, err);
        return;
    }
    if (!member && result) {
        in = series_instance(e, s, k, true);
        if (in != NULL && rule_member_add(in, s->id) == IOCD_OK) {
            in->value =
                r->window_ms > 0 && r->when.native ? rule_window_field(&w, r->when.field) : x.v;
            if (in->state == RULE_FIRING && in->n_members > 1)
                rule_emit_members(e, r, in, x.t_ms);
        }
    } else if (member && result) {
        in->members[at] = in->members[--in->n_members];
    }
    if (in != NULL) {
        if (member && !result) /* still a member: its latest reading is the alert's value */
            in->value =
                r->window_ms > 0 && r->when.native ? rule_window_field(&w, r->when.field) : x.v;
        drop_if_done(e, in, advance(e, r, in, x.t_ms));
    }
}

static void absent_seen(rule_engine *e, series_state *s, uint32_t k, int64_t t_ms)
{
    const rule_def *r = &e->rs->rules[s->rules[k]];
    instance *in;

    /* Seen when it arrives: a gateway that backfills an hour after an outage, or a replay of
     * old samples, is a series speaking now, not one silent for an hour. */
    if (e->now_ms > t_ms)
        t_ms = e->now_ms;
    in = series_instance(e, s, k, true);
    if (in != NULL && t_ms > in->last_seen_ms) {
        in->last_seen_ms = t_ms;
        if (in->n_members > 0) { /* it speaks again; the instance stays to watch */
            in->n_members = 0;
            advance(e, r, in, t_ms);
        }
    }
}

static void process_sample(rule_engine *e, uint64_t id, iocd_sample x)
{
    series_state *s = series_for(e, id);
    uint32_t k;

    if (s == NULL || s->n_rules == 0)
        return;
    if (isnan(x.v)) { /* staleness markers end windows; NaN is no reading */
        uint64_t bits;
        memcpy(&bits, &x.v, sizeof(bits));
        if (bits == 0x7ff0000000000002ULL)
            return;
    }
    if (s->window_ms > 0 || s->n_win == 0 || x.t_ms >= s->win[s->n_win - 1].t_ms)
        window_push(s, x);
    for (k = 0; k < s->n_rules; k++) {
        uint32_t ri = s->rules[k];
        if (e->health[ri].failed)
            continue;
        if (e->rs->rules[ri].kind == RULE_STREAM)
            stream_sample(e, s, k, x);
        else
            absent_seen(e, s, k, x.t_ms);
    }
}

/* ---- Ticks: absence, PromQL rules, recording rules, hold and keep on the clock -------------- */

static void tick_instances(rule_engine *e, int64_t now_ms)
{
    size_t i = 0;

    while (i < e->inst_cap) {
        instance *in = e->inst[i];
        const rule_def *r;
        bool done;
        if (in == NULL) {
            i++;
            continue;
        }
        r = &e->rs->rules[in->rule];
        if (e->health[in->rule].failed) {
            i++;
            continue;
        }
        if (r->kind == RULE_ABSENT && in->last_seen_ms > 0 &&
            now_ms - in->last_seen_ms >= r->absent_ms && in->n_members == 0) {
            rule_member_add(in, 1);
            in->value = (double)(now_ms - in->last_seen_ms) / 1000.0;
        }
        if (in->state == RULE_INACTIVE && in->n_members == 0) {
            i++;
            continue;
        }
        done = advance(e, r, in, now_ms);
        if (done && in->n_members == 0 && r->kind != RULE_ABSENT) {
            inst_remove(e, i); /* the next entry may have moved into slot i */
            continue;
        }
        i++;
    }
}

static void expr_rule(rule_engine *e, uint32_t ri, int64_t now_ms)
{
    const rule_def *r = &e->rs->rules[ri];
    query_result res;
    char err[ERR_MAX] = "";
    rule_ctx ctx = make_ctx(e, now_ms);
    size_t i;
    iocd_err rc;

    if (e->cfg.st == NULL)
        return;
    rc = query_eval(e->cfg.st, &e->cfg.qlim, r->expr, now_ms, 0, 0, &res, err, sizeof(err));
    iocd_metric_add(e->m_evals, 1);
    if (rc != IOCD_OK) {
        snprintf(e->health[ri].err, sizeof(e->health[ri].err), "%s", err);
        log_warn("rules", "expr evaluation failed", "rule=%s err=%s", r->name, err);
        return;
    }
    e->health[ri].err[0] = '\0';
    for (i = 0; i < e->inst_cap; i++)
        if (e->inst[i] != NULL && e->inst[i]->rule == ri)
            e->inst[i]->seen = false;
    for (i = 0; i < (res.type == QUERY_SCALAR ? 1 : res.n); i++) {
        const char *ls = res.type == QUERY_SCALAR ? "" : res.series[i].labels;
        size_t ll = res.type == QUERY_SCALAR ? 0 : res.series[i].labels_len;
        double v = res.type == QUERY_SCALAR ? res.scalar : res.series[i].points[0].v;
        iocd_sample one = { now_ms, v };
        rule_window w = { &one, 1, 0 };
        bool ok = true;
        iocd_buf g;
        instance *in;
        if (r->when.ref != LUA_NOREF && rule_cond_eval(e->rs, r, &r->when, ls, ll, &w, &ctx, &ok,
                                                       err, sizeof(err)) != IOCD_OK) {
            rule_failed(e, ri, err);
            break;
        }
        if (!ok)
            continue;
        iocd_buf_init(&g, 0);
        if (rule_group_labels(r, ls, ll, &g) == IOCD_OK) {
            in = rule_instance_get(e, ri, g.data != NULL ? g.data : "", g.len, true);
            if (in != NULL) {
                in->seen = true;
                in->value = v;
                if (in->n_members == 0)
                    rule_member_add(in, 1);
            }
        }
        iocd_buf_fini(&g);
    }
    for (i = 0; i < e->inst_cap; i++) {
        instance *in = e->inst[i];
        if (in != NULL && in->rule == ri && !in->seen)
            in->n_members = 0; /* gone from the result: clears */
    }
    query_result_fini(&res);
}

static void record_done(void *ud, const store_result *res)
{
    const char *name = ud;

    if (res->err != IOCD_OK)
        log_warn("rules", "recording rule write failed", "rule=%s err=%s", name,
                 iocd_strerror(res->err));
}

static void record_rule(rule_engine *e, uint32_t ri, int64_t now_ms)
{
    const rule_def *r = &e->rs->rules[ri];
    query_result res;
    store_batch *b = NULL;
    char err[ERR_MAX] = "";
    size_t i, k;
    iocd_err rc;

    if (e->cfg.st == NULL || e->cfg.no_record)
        return;
    rc = query_eval(e->cfg.st, &e->cfg.qlim, r->expr, now_ms, 0, 0, &res, err, sizeof(err));
    iocd_metric_add(e->m_evals, 1);
    if (rc != IOCD_OK) {
        snprintf(e->health[ri].err, sizeof(e->health[ri].err), "%s", err);
        return;
    }
    e->health[ri].err[0] = '\0';
    if (store_batch_new(e->cfg.st, &b) != IOCD_OK) {
        query_result_fini(&res);
        return;
    }
    for (i = 0; i < (res.type == QUERY_SCALAR ? 1 : res.n); i++) {
        iocd_label l[72];
        size_t n = 0;
        const char *p = res.type == QUERY_SCALAR ? "" : res.series[i].labels;
        const char *end = p + (res.type == QUERY_SCALAR ? 0 : res.series[i].labels_len);
        double v = res.type == QUERY_SCALAR ? res.scalar : res.series[i].points[0].v;
        store_reject why;
        l[n++] = (iocd_label){ "__name__", 8, r->name, strlen(r->name) };
        while (p < end && n < 64) {
            const char *val = p + strlen(p) + 1;
            if (strcmp(p, "__name__") != 0 && !rule_name_listed(r->label_names, r->n_labels, p))
                l[n++] = (iocd_label){ p, strlen(p), val, strlen(val) };
            p = val + strlen(val) + 1;
        }
        for (k = 0; k < r->n_labels && n < 72; k++)
            l[n++] = (iocd_label){ r->label_names[k], strlen(r->label_names[k]), r->label_values[k],
                                   strlen(r->label_values[k]) };
        (void)store_batch_add(b, l, n, now_ms, v, &why); /* refusals are counted by the store */
    }
    query_result_fini(&res);
    if (store_batch_len(b) == 0) {
        store_batch_free(b);
        return;
    }
    /* Not waited for: the rules thread goes on (the name is a static-lifetime string only
     * while the set lives; record_done reads it right away on the writer thread). */
    if (store_batch_submit(b, record_done, (void *)"recording rule") != IOCD_OK)
        log_warn("rules", "recording rule could not write", "rule=%s", r->name);
}

static void tick(rule_engine *e, int64_t now_ms)
{
    size_t i;

    e->now_ms = now_ms;
    for (i = 0; i < e->rs->n; i++) {
        const rule_def *r = &e->rs->rules[i];
        rule_health *h = &e->health[i];
        int64_t t0;
        if (r->kind == RULE_ABSENT && !h->failed) { /* each tick checks its series' silence */
            h->last_eval_ms = now_ms;
            h->evaluations++;
        }
        if (h->failed || (r->kind != RULE_EXPR && r->kind != RULE_RECORD) ||
            now_ms < h->next_eval_ms)
            continue;
        t0 = iocd_mono_ns();
        if (r->kind == RULE_EXPR)
            expr_rule(e, (uint32_t)i, now_ms);
        else
            record_rule(e, (uint32_t)i, now_ms);
        h->eval_seconds = (double)(iocd_mono_ns() - t0) / 1e9;
        h->last_eval_ms = now_ms;
        h->evaluations++;
        h->next_eval_ms = (h->next_eval_ms == 0 ? now_ms : h->next_eval_ms) + r->every_ms;
        if (h->next_eval_ms <= now_ms)
            h->next_eval_ms = now_ms + r->every_ms;
    }
    tick_instances(e, now_ms);
}

/* ---- Rule sets ---------------------------------------------------------------------------------
 */

/* Seeds absence rules with what the store knows, so series that went quiet before a restart
 * are noticed too: each selected series counts as last seen at its newest sample within the
 * absence window, or at the window's start when it has none. */
typedef struct seed_ctx {
    rule_engine *e;
    uint32_t ri;
    const uint64_t *ids;
    int64_t from;
} seed_ctx;

static iocd_err seed_one(void *ud, size_t i, const iocd_sample *s, size_t n)
{
    seed_ctx *c = ud;
    series_state *st = series_for(c->e, c->ids[i]);

    if (st != NULL)
        absent_seen(c->e, st, c->ri, n > 0 ? s[n - 1].t_ms : c->from);
    return IOCD_OK;
}

static void seed_absence(rule_engine *e, int64_t now_ms)
{
    size_t i;

    if (e->cfg.st == NULL)
        return;
    for (i = 0; i < e->rs->n; i++) {
        const rule_def *r = &e->rs->rules[i];
        uint64_t *ids = NULL;
        size_t n = 0;
        seed_ctx c = { e, (uint32_t)i, NULL, now_ms - r->absent_ms };
        if (r->kind != RULE_ABSENT || query_select(e->cfg.st, &r->sel, &ids, &n) != IOCD_OK)
            continue;
        c.ids = ids;
        store_read_many(e->cfg.st, ids, n, now_ms - r->absent_ms, now_ms, seed_one, &c);
        iocd_free(ids);
    }
}

/* Swaps in a new set: instances of rules with the same name and definition carry over;
 * the others resolve. */
static void swap_set(rule_engine *e, rule_set *ns, int64_t now_ms)
{
    rule_health *nh = iocd_calloc(ns->n + 1, sizeof(*nh));
    size_t i;

    if (nh == NULL) {
        rule_set_free(ns);
        log_error("rules", "out of memory swapping the rule set", NULL);
        return;
    }
    for (i = 0; i < ns->n; i++)
        nh[i].inst_epoch = 1; /* a fresh inst_ref (epoch 0) is never current */
    for (i = 0; e->rs != NULL && i < e->inst_cap; i++) {
        instance *in = e->inst[i];
        const rule_def *old;
        size_t j;
        if (in == NULL)
            continue;
        old = &e->rs->rules[in->rule];
        for (j = 0; j < ns->n; j++)
            if (strcmp(ns->rules[j].name, old->name) == 0 && ns->rules[j].digest == old->digest)
                break;
        if (j < ns->n) {
            in->rule = (uint32_t)j;
            continue;
        }
        if (in->state != RULE_INACTIVE)
            rule_emit(e, old, in, in->state, RULE_INACTIVE, now_ms);
        inst_free(in); /* every series matches the new set afresh: no inst_ref survives */
        e->inst[i] = NULL;
        e->n_inst--;
    }
    if (e->inst_cap > 0)
        inst_rehash(e, e->inst_cap); /* slots were emptied: rebuild the probe chains */
    {
        rule_index *ni = NULL;
        if (rindex_build(ns, &ni) != IOCD_OK)
            log_error("rules", "out of memory indexing the rules: streaming rules idle", NULL);
        rindex_free(e->index);
        e->index = ni;
    }
    rule_set_free(e->rs);
    iocd_free(e->health);
    e->rs = ns;
    e->health = nh;
    e->gen++;
    e->dirty = true;
    if (!e->restored)
        rule_persist_restore(e);
    seed_absence(e, now_ms);
    log_info("rules", "rule set loaded", "rules=%zu", ns->n);
}

/* ---- The loop ---------------------------------------------------------------------------------
 */

/* Takes up to max queued samples. */
static size_t take(rule_engine *e, qitem *out, size_t max)
{
    size_t n = 0;

    while (n < max && e->q_len > 0) {
        out[n++] = e->q[e->q_head];
        e->q_head = (e->q_head + 1) % e->q_cap;
        e->q_len--;
    }
    return n;
}

/* One round: a pending set swapped in, queued samples evaluated, the tick when due. */
static void round_once(rule_engine *e, int64_t now_ms, bool force_tick)
{
    qitem *buf = e->batch;
    rule_set *ns = NULL;
    size_t n, i;
    bool wanted;

    pthread_mutex_lock(&e->mu);
    if (e->pending_set) {
        ns = e->pending;
        e->pending = NULL;
        e->pending_set = false;
    }
    pthread_mutex_unlock(&e->mu);
    if (ns != NULL)
        swap_set(e, ns, now_ms);
    if (e->rs == NULL)
        return;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        n = take(e, buf, ROUND_MAX);
        iocd_metric_set(e->m_queued, (double)e->q_len);
        pthread_mutex_unlock(&e->mu);
        if (n == 0)
            break;
        for (i = 0; i < n; i++) {
            /* 100k series: the table slot, the series and its window are each a cache
             * miss; asked for ahead (16, 8, 4 samples) they arrive in time. Inline, as GCC
             * drops a call to a function that only prefetches. */
            const series_state *s;
            if (i + 16 < n && e->series_cap > 0)
                IOCD_PREFETCH(&e->series[id_slot(buf[i + 16].id, e->series_cap)]);
            if (i + 8 < n && e->series_cap > 0 &&
                (s = e->series[id_slot(buf[i + 8].id, e->series_cap)]) != NULL)
                IOCD_PREFETCH(s);
            if (i + 4 < n && e->series_cap > 0 &&
                (s = e->series[id_slot(buf[i + 4].id, e->series_cap)]) != NULL) {
                IOCD_PREFETCH(s->inst);
                if (s->n_win > 0)
                    IOCD_PREFETCH(&s->win[s->n_win - 1]);
            }
            process_sample(e, buf[i].id, buf[i].s);
        }
        iocd_metric_add(e->m_samples, (double)n);
        if (n > 0)
            iocd_metric_set(e->m_lag, (double)(iocd_now_ms() - buf[n - 1].s.t_ms) / 1000.0);
    }
    if (force_tick || now_ms - e->now_ms >= TICK_MS) {
        tick(e, now_ms);
        e->dirty = true; /* evaluation times moved */
    }
    rule_persist_flush(e);
    /* The API's views are rendered only when a reader asks (1,000 rules take ~2 ms, which a
     * sample arriving meanwhile would wait for); tests stepping the engine render each step. */
    pthread_mutex_lock(&e->mu);
    wanted = e->view_wanted;
    pthread_mutex_unlock(&e->mu);
    if (e->dirty && (force_tick || wanted)) {
        rule_views_render(e);
        e->dirty = false;
    }
    if (wanted) {
        pthread_mutex_lock(&e->mu);
        e->view_wanted = false;
        e->views_gen++;
        pthread_cond_broadcast(&e->view_cv);
        pthread_mutex_unlock(&e->mu);
    }
}

static void *engine_thread(void *ud)
{
    rule_engine *e = ud;

    iocd_thread_name("rules");
    for (;;) {
        struct timespec ts;
        bool stop;
        pthread_mutex_lock(&e->mu);
        if (e->q_len == 0 && !e->pending_set && !e->stopping && !e->view_wanted) {
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000000L; /* at least ten rounds a second for the tick */
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&e->cv, &e->mu, &ts);
        }
        stop = e->stopping;
        pthread_mutex_unlock(&e->mu);
        if (stop)
            return NULL;
        round_once(e, iocd_now_ms(), false);
    }
}

/* ---- Public
 * -------------------------------------------------------------------------------------- */

iocd_err rule_engine_new(const rule_engine_config *cfg, rule_engine **out)
{
    rule_engine *e = iocd_calloc(1, sizeof(*e));

    if (e == NULL)
        return IOCD_ENOMEM;
    e->cfg = *cfg;
    e->batch = iocd_malloc(ROUND_MAX * sizeof(*e->batch));
    if (e->batch == NULL) {
        iocd_free(e);
        return IOCD_ENOMEM;
    }
    if (e->cfg.queue_max == 0)
        e->cfg.queue_max = QUEUE_DEFAULT;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_cond_init(&e->view_cv, NULL);
    iocd_buf_init(&e->rules_json, 0);
    iocd_buf_init(&e->alerts_json, 0);
    iocd_buf_init(&e->persist, 0);
    e->m_queued = iocd_gauge("iocd_rules_queue_samples", "Samples waiting for the rule engine.");
    e->m_samples = iocd_counter("iocd_rules_samples_total", "Samples evaluated by the rules.");
    e->m_dropped = iocd_counter("iocd_rules_samples_dropped_total",
                                "Samples the rules never saw because their queue was full.");
    e->m_evals = iocd_counter("iocd_rule_evaluations_total", "Rule evaluations.");
    e->m_failures =
        iocd_counter("iocd_rule_failures_total", "Rules disabled after an error or an overrun.");
    e->m_firing = iocd_gauge("iocd_alerts_firing", "Alerts firing now.");
    e->m_lag =
        iocd_gauge("iocd_rules_lag_seconds", "Age of the newest sample the rules have evaluated.");
    *out = e;
    return IOCD_OK;
}

void rule_engine_free(rule_engine *e)
{
    size_t i;

    if (e == NULL)
        return;
    if (e->started) {
        pthread_mutex_lock(&e->mu);
        e->stopping = true;
        pthread_cond_signal(&e->cv);
        pthread_cond_broadcast(&e->view_cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    for (i = 0; i < e->series_cap; i++)
        series_free(e->series[i]);
    iocd_free(e->series);
    for (i = 0; i < e->inst_cap; i++)
        inst_free(e->inst[i]);
    iocd_free(e->inst);
    rindex_free(e->index);
    rule_set_free(e->rs);
    rule_set_free(e->pending);
    iocd_free(e->health);
    iocd_free(e->q);
    iocd_free(e->batch);
    iocd_buf_fini(&e->rules_json);
    iocd_buf_fini(&e->alerts_json);
    iocd_buf_fini(&e->persist);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    pthread_cond_destroy(&e->view_cv);
    iocd_free(e);
}

iocd_err rule_engine_load(rule_engine *e, const char *path, char *errbuf, size_t errlen)
{
    rule_set *ns = NULL;
    iocd_err err = rule_set_load(path, &e->cfg.lim, &ns, errbuf, errlen);

    if (err != IOCD_OK)
        return err;
    pthread_mutex_lock(&e->mu);
    rule_set_free(e->pending);
    e->pending = ns;
    e->pending_set = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return IOCD_OK;
}

size_t rule_engine_count(const rule_engine *e)
{
    const rule_set *rs = e->pending != NULL ? e->pending : e->rs;

    return rs != NULL ? rs->n : 0;
}

iocd_err rule_engine_start(rule_engine *e)
{
    if (pthread_create(&e->thread, NULL, engine_thread, e) != 0)
        return IOCD_EIO;
    e->started = true;
    return IOCD_OK;
}

void rule_engine_feed(void *ud, const uint64_t *ids, const iocd_sample *s, size_t n)
{
    rule_engine *e = ud;
    size_t i, dropped = 0;

    pthread_mutex_lock(&e->mu);
    for (i = 0; i < n; i++) {
        if (e->q_len == e->q_cap) {
            size_t cap = e->q_cap != 0 ? e->q_cap * 2 : 65536, k;
            qitem *g;
            if (cap > e->cfg.queue_max || (g = iocd_malloc(cap * sizeof(*g))) == NULL) {
                dropped = n - i;
                break;
            }
            for (k = 0; k < e->q_len; k++)
                g[k] = e->q[(e->q_head + k) % e->q_cap];
            iocd_free(e->q);
            e->q = g;
            e->q_head = 0;
            e->q_cap = cap;
        }
        e->q[(e->q_head + e->q_len) % e->q_cap] = (qitem){ ids[i], s[i] };
        e->q_len++;
    }
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (dropped > 0) {
        iocd_metric_add(e->m_dropped, (double)dropped);
        log_error("rules", "rule queue full: samples not evaluated", "dropped=%zu queue_max=%zu",
                  dropped, e->cfg.queue_max);
    }
}

iocd_err rule_engine_step(rule_engine *e, int64_t now_ms)
{
    round_once(e, now_ms, true);
    return IOCD_OK;
}
