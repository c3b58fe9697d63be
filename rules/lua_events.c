/* rules/lua_events.c - what the rule engine says about an alert: the labels of series and of
 * alerts, the PromQL of an alert's series, and the events told to the listener when an alert
 * changes state or its group grows. Engine thread only. */
#include "rules/lua_engine_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- Labels --------------------------------------------------------------------------------- */

typedef struct lbuf {
    iocd_buf b;
} lbuf;

iocd_err rule_label_collect(void *ud, const char *name, size_t name_len, const char *value,
                            size_t value_len)
{
    iocd_buf *b = ud;
    iocd_err err = iocd_buf_append(b, name, name_len);

    if (err == IOCD_OK)
        err = iocd_buf_putc(b, '\0');
    if (err == IOCD_OK)
        err = iocd_buf_append(b, value, value_len);
    if (err == IOCD_OK)
        err = iocd_buf_putc(b, '\0');
    return err;
}

bool rule_name_listed(char *const *names, size_t n, const char *name)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

/* The grouping labels of a series' labels: group_by's names, or all but __name__. */
iocd_err rule_group_labels(const rule_def *r, const char *ls, size_t len, iocd_buf *out)
{
    const char *p = ls, *end = ls + len;
    iocd_err err = IOCD_OK;

    while (p < end && err == IOCD_OK) {
        const char *v = p + strlen(p) + 1, *next = v + strlen(v) + 1;
        bool keep = r->n_group_by > 0 ? rule_name_listed(r->group_by, r->n_group_by, p)
                                      : strcmp(p, "__name__") != 0;
        if (keep)
            err = iocd_buf_append(out, p, (size_t)(next - p));
        p = next;
    }
    return err;
}

/* A label set from (name, value) pairs, sorted, the later of a repeated name winning. */
typedef struct kv {
    const char *k, *v;
    size_t order;
} kv;

static int kv_cmp(const void *a, const void *b)
{
    const kv *x = a, *y = b;
    int c = strcmp(x->k, y->k);

    return c != 0 ? c : (x->order < y->order ? -1 : 1);
}

/* The labels an alert carries: its grouping labels, the rule's extra labels, then alertname,
 * severity and domain. */
iocd_err rule_alert_labels(const rule_def *r, const char *g, size_t glen, iocd_buf *out)
{
    kv items[128];
    size_t n = 0, i;
    const char *p = g, *end = g + glen;
    iocd_err err = IOCD_OK;

    while (p < end && n < 120) {
        const char *v = p + strlen(p) + 1;
        items[n] = (kv){ p, v, n };
        n++;
        p = v + strlen(v) + 1;
    }
    for (i = 0; i < r->n_labels && n < 124; i++, n++)
        items[n] = (kv){ r->label_names[i], r->label_values[i], n };
    items[n] = (kv){ "alertname", r->name, n };
    n++;
    items[n] = (kv){ "severity", r->severity, n };
    n++;
    items[n] = (kv){ "domain", r->domain, n };
    n++;
    iocd_qsort(items, n, sizeof(*items), kv_cmp);
    for (i = 0; i < n && err == IOCD_OK; i++) {
        if (i + 1 < n && strcmp(items[i].k, items[i + 1].k) == 0)
            continue;
        err =
            rule_label_collect(out, items[i].k, strlen(items[i].k), items[i].v, strlen(items[i].v));
    }
    return err;
}

/* ---- Events ---------------------------------------------------------------------------------- */

/* The PromQL of the series behind an alert: the rule's selector with a matcher for each of
 * the alert's grouping labels (camera_online{device="cam-001",ward="gia_sang"}), or its expr. */
iocd_err rule_series_query(const rule_def *r, const char *gl, size_t len, iocd_buf *out)
{
    const char *sel = r->select_text, *brace, *p = gl, *end = gl + len;
    iocd_err err = IOCD_OK;
    bool any = false;

    if (sel == NULL)
        return r->expr_text != NULL ? iocd_buf_puts(out, r->expr_text) : IOCD_OK;
    brace = strchr(sel, '{');
    err =
        brace != NULL ? iocd_buf_append(out, sel, (size_t)(brace - sel)) : iocd_buf_puts(out, sel);
    if (err == IOCD_OK)
        err = iocd_buf_putc(out, '{');
    while (err == IOCD_OK && p < end) {
        const char *v = p + strlen(p) + 1;
        size_t i;
        if (strcmp(p, "__name__") != 0) {
            err = iocd_buf_printf(out, "%s%s=\"", any ? "," : "", p);
            for (i = 0; err == IOCD_OK && v[i] != '\0'; i++)
                err = v[i] == '"' || v[i] == '\\' ? iocd_buf_printf(out, "\\%c", v[i])
                      : v[i] == '\n'              ? iocd_buf_puts(out, "\\n")
                                                  : iocd_buf_putc(out, v[i]);
            if (err == IOCD_OK)
                err = iocd_buf_putc(out, '"');
            any = true;
        }
        p = v + strlen(v) + 1;
    }
    if (err == IOCD_OK && brace != NULL) { /* the selector's own matchers follow */
        const char *rest = brace + 1;
        while (*rest == ' ')
            rest++;
        if (*rest != '}' && any)
            err = iocd_buf_putc(out, ',');
        if (err == IOCD_OK)
            err = iocd_buf_puts(out, rest);
    } else if (err == IOCD_OK) {
        err = iocd_buf_putc(out, '}');
    }
    return err;
}

/* What every event of an alert carries: the rule's fields and the instance's. */
void rule_event_fill(rule_event *ev, const rule_def *r, const instance *in, const iocd_buf *labels,
                     int64_t t_ms)
{
    memset(ev, 0, sizeof(*ev));
    ev->rule = r->name;
    ev->labels = labels->data != NULL ? labels->data : "";
    ev->labels_len = labels->len;
    ev->runbook = r->runbook != NULL ? r->runbook : "";
    ev->severity = r->severity;
    ev->domain = r->domain;
    ev->value = in->value;
    ev->t_ms = t_ms;
    ev->active_since_ms = in->since_ms;
    ev->shadow = r->shadow;
    ev->inhibit_match = r->inhibit_match;
    ev->inhibit_equal = r->inhibit_equal;
    ev->n_inhibit_equal = r->n_inhibit_equal;
}

void rule_event_render(rule_engine *e, const rule_def *r, instance *in, int64_t t_ms,
                       rule_event_text *txt, rule_event *ev)
{
    char err[ERR_MAX] = "";

    iocd_buf_init(&txt->labels, 0);
    iocd_buf_init(&txt->summary, 64 * 1024);
    iocd_buf_init(&txt->description, 64 * 1024);
    iocd_buf_init(&txt->query, 64 * 1024);
    rule_alert_labels(r, in->glabels, in->glabels_len, &txt->labels);
    (void)rule_series_query(r, in->glabels, in->glabels_len, &txt->query);
    if ((r->summary.tmpl != NULL || r->summary.ref != LUA_NOREF) &&
        rule_text_render(e->rs, &r->summary, txt->labels.data, txt->labels.len, in->value,
                         &txt->summary, err, sizeof(err)) != IOCD_OK)
        log_warn("rules", "summary template failed", "rule=%s err=%s", r->name, err);
    if ((r->description.tmpl != NULL || r->description.ref != LUA_NOREF) &&
        rule_text_render(e->rs, &r->description, txt->labels.data, txt->labels.len, in->value,
                         &txt->description, err, sizeof(err)) != IOCD_OK)
        log_warn("rules", "description template failed", "rule=%s err=%s", r->name, err);
    iocd_free(in->summary);
    iocd_free(in->description);
    in->summary = iocd_strdup(txt->summary.data != NULL ? txt->summary.data : "");
    in->description = iocd_strdup(txt->description.data != NULL ? txt->description.data : "");
    rule_event_fill(ev, r, in, &txt->labels, t_ms);
    ev->summary = txt->summary.data != NULL ? txt->summary.data : "";
    ev->description = txt->description.data != NULL ? txt->description.data : "";
    ev->query = txt->query.data != NULL ? txt->query.data : "";
}

void rule_event_text_fini(rule_event_text *txt)
{
    iocd_buf_fini(&txt->labels);
    iocd_buf_fini(&txt->summary);
    iocd_buf_fini(&txt->description);
    iocd_buf_fini(&txt->query);
}

void rule_emit(rule_engine *e, const rule_def *r, instance *in, rule_state from, rule_state to,
               int64_t t_ms)
{
    rule_event_text txt;
    rule_event ev;

    if (from == to)
        return;
    rule_persist(e, r, in, to == RULE_INACTIVE);
    if (to == RULE_FIRING)
        iocd_metric_add(e->m_firing, 1);
    if (from == RULE_FIRING)
        iocd_metric_add(e->m_firing, -1);
    rule_event_render(e, r, in, t_ms, &txt, &ev);
    e->dirty = true;
    ev.from = from;
    ev.to = to;
    if (to == RULE_FIRING || (from == RULE_FIRING && to == RULE_INACTIVE))
        log_info("rules", to == RULE_FIRING ? "alert firing" : "alert resolved",
                 "rule=%s summary=%s shadow=%d", r->name, ev.summary, (int)r->shadow);
    if (e->cfg.on_event != NULL)
        e->cfg.on_event(e->cfg.ud, &ev);
    rule_event_text_fini(&txt);
}

/* A series joined a firing group: tells the listener how many the group has now (its
 * incident may announce it, at most every group interval). */
void rule_emit_members(rule_engine *e, const rule_def *r, const instance *in, int64_t t_ms)
{
    iocd_buf labels;
    rule_event ev;

    if (e->cfg.on_event == NULL || !e->cfg.member_events)
        return;
    iocd_buf_init(&labels, 0);
    rule_alert_labels(r, in->glabels, in->glabels_len, &labels);
    rule_event_fill(&ev, r, in, &labels, t_ms);
    ev.from = ev.to = RULE_FIRING;
    ev.summary = in->summary != NULL ? in->summary : "";
    ev.description = in->description != NULL ? in->description : "";
    ev.members = in->n_members;
    e->cfg.on_event(e->cfg.ud, &ev);
    iocd_buf_fini(&labels);
}
