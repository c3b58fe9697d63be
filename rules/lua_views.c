/* rules/lua_views.c - the rule engine's views for the API (/api/v1/rules and /api/v1/alerts,
 * as Prometheus shapes them): rendered on the engine thread when a reader asks, published and
 * read under e->mu. */
#include "rules/lua_engine_int.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

/* ---- The API's views ------------------------------------------------------------------------- */

static iocd_err put_labels_json(iocd_buf *b, const char *ls, size_t len)
{
    const char *p = ls, *end = ls + len;
    iocd_err err = iocd_buf_putc(b, '{');
    bool first = true;

    while (p < end && err == IOCD_OK) {
        const char *v = p + strlen(p) + 1;
        if (!first)
            err = iocd_buf_putc(b, ',');
        first = false;
        if (err == IOCD_OK)
            err = iocd_buf_json_str(b, p, strlen(p));
        if (err == IOCD_OK)
            err = iocd_buf_putc(b, ':');
        if (err == IOCD_OK)
            err = iocd_buf_json_str(b, v, strlen(v));
        p = v + strlen(v) + 1;
    }
    return err == IOCD_OK ? iocd_buf_putc(b, '}') : err;
}

static iocd_err put_time_json(iocd_buf *b, int64_t t_ms)
{
    char ts[40];

    if (t_ms <= 0)
        return iocd_buf_puts(b, "\"0001-01-01T00:00:00Z\"");
    iocd_time_format(t_ms, ts, sizeof(ts));
    return iocd_buf_printf(b, "\"%s\"", ts);
}

static iocd_err put_alert_json(rule_engine *e, iocd_buf *b, const instance *in)
{
    const rule_def *r = &e->rs->rules[in->rule];
    iocd_buf labels;
    iocd_err rc;

    iocd_buf_init(&labels, 0);
    rc = rule_alert_labels(r, in->glabels, in->glabels_len, &labels);
    if (rc == IOCD_OK)
        rc = iocd_buf_puts(b, "{\"labels\":");
    if (rc == IOCD_OK)
        rc = put_labels_json(b, labels.data != NULL ? labels.data : "", labels.len);
    if (rc == IOCD_OK)
        rc = iocd_buf_puts(b, ",\"annotations\":{\"summary\":");
    if (rc == IOCD_OK)
        rc = iocd_buf_json_str(b, in->summary != NULL ? in->summary : "",
                               in->summary != NULL ? strlen(in->summary) : 0);
    if (rc == IOCD_OK)
        rc = iocd_buf_puts(b, ",\"description\":");
    if (rc == IOCD_OK)
        rc = iocd_buf_json_str(b, in->description != NULL ? in->description : "",
                               in->description != NULL ? strlen(in->description) : 0);
    if (rc == IOCD_OK && r->runbook != NULL) {
        rc = iocd_buf_puts(b, ",\"runbook_url\":");
        if (rc == IOCD_OK)
            rc = iocd_buf_json_str(b, r->runbook, strlen(r->runbook));
    }
    if (rc == IOCD_OK)
        rc = iocd_buf_printf(
            b, "},\"state\":\"%s\",\"activeAt\":", in->state == RULE_FIRING ? "firing" : "pending");
    if (rc == IOCD_OK)
        rc = put_time_json(b, in->since_ms);
    if (rc == IOCD_OK)
        rc = iocd_buf_puts(b, ",\"value\":\"");
    if (rc == IOCD_OK)
        rc = iocd_buf_float(b, in->value);
    if (rc == IOCD_OK)
        rc = iocd_buf_printf(b, "\",\"shadow\":%s}", r->shadow ? "true" : "false");
    iocd_buf_fini(&labels);
    return rc;
}

/* A rule's static labels and its annotation templates, as Prometheus lists them in
 * /api/v1/rules (Grafana reads both of every rule). */
static iocd_err put_rule_meta_json(iocd_buf *b, const rule_def *r)
{
    const char *ann[3][2] = { { "summary", r->summary.tmpl },
                              { "description", r->description.tmpl },
                              { "runbook_url", r->runbook } };
    iocd_err rc = iocd_buf_puts(b, ",\"labels\":{");
    size_t i, n = 0;

    if (rc == IOCD_OK && r->kind != RULE_RECORD && r->severity != NULL) {
        rc = iocd_buf_puts(b, "\"severity\":");
        if (rc == IOCD_OK)
            rc = iocd_buf_json_str(b, r->severity, strlen(r->severity));
        n++;
    }
    if (rc == IOCD_OK && r->kind != RULE_RECORD && r->domain != NULL) {
        rc = iocd_buf_puts(b, n++ > 0 ? ",\"domain\":" : "\"domain\":");
        if (rc == IOCD_OK)
            rc = iocd_buf_json_str(b, r->domain, strlen(r->domain));
    }
    for (i = 0; rc == IOCD_OK && i < r->n_labels; i++) {
        if (n++ > 0)
            rc = iocd_buf_putc(b, ',');
        if (rc == IOCD_OK)
            rc = iocd_buf_json_str(b, r->label_names[i], strlen(r->label_names[i]));
        if (rc == IOCD_OK)
            rc = iocd_buf_putc(b, ':');
        if (rc == IOCD_OK)
            rc = iocd_buf_json_str(b, r->label_values[i], strlen(r->label_values[i]));
    }
    if (rc == IOCD_OK)
        rc = iocd_buf_putc(b, '}');
    if (r->kind == RULE_RECORD)
        return rc;
    if (rc == IOCD_OK)
        rc = iocd_buf_puts(b, ",\"annotations\":{");
    for (i = 0, n = 0; rc == IOCD_OK && i < IOCD_ARRAY_LEN(ann); i++) {
        if (ann[i][1] == NULL)
            continue;
        rc = iocd_buf_printf(b, "%s\"%s\":", n++ > 0 ? "," : "", ann[i][0]);
        if (rc == IOCD_OK)
            rc = iocd_buf_json_str(b, ann[i][1], strlen(ann[i][1]));
    }
    return rc == IOCD_OK ? iocd_buf_putc(b, '}') : rc;
}

/* Renders both views (on the engine thread) and publishes them under mu. */
void rule_views_render(rule_engine *e)
{
    iocd_buf rj, aj;
    size_t i, j, k, n_active = 0, *first = NULL, *count = NULL;
    instance **active = NULL;
    iocd_err rc;

    /* The active instances grouped by rule in one pass: rendering stays O(rules + alerts). */
    if (e->rs != NULL) {
        first = iocd_calloc(e->rs->n + 1, sizeof(*first));
        count = iocd_calloc(e->rs->n + 1, sizeof(*count));
        active = iocd_calloc(e->n_inst + 1, sizeof(*active));
        if (first == NULL || count == NULL || active == NULL) {
            iocd_free(first);
            iocd_free(count);
            iocd_free(active);
            return;
        }
        for (i = 0; i < e->inst_cap; i++)
            if (e->inst[i] != NULL && e->inst[i]->state != RULE_INACTIVE)
                count[e->inst[i]->rule]++;
        for (i = 0, k = 0; i < e->rs->n; i++) {
            first[i] = k;
            k += count[i];
            count[i] = 0;
        }
        for (i = 0; i < e->inst_cap; i++)
            if (e->inst[i] != NULL && e->inst[i]->state != RULE_INACTIVE) {
                uint32_t r = e->inst[i]->rule;
                active[first[r] + count[r]++] = e->inst[i];
                n_active++;
            }
    }

    iocd_buf_init(&rj, 0);
    iocd_buf_init(&aj, 0);
    rc = iocd_buf_puts(&aj, "{\"alerts\":[");
    for (i = 0; rc == IOCD_OK && i < n_active; i++) {
        if (i > 0)
            rc = iocd_buf_putc(&aj, ',');
        if (rc == IOCD_OK)
            rc = put_alert_json(e, &aj, active[i]);
    }
    if (rc == IOCD_OK)
        rc = iocd_buf_puts(&aj, "]}");
    /* Rules, one group per file. */
    if (rc == IOCD_OK)
        rc = iocd_buf_puts(&rj, "{\"groups\":[");
    for (i = 0; rc == IOCD_OK && e->rs != NULL && i < e->rs->n; i++) {
        const rule_def *r = &e->rs->rules[i];
        const rule_health *h = &e->health[i];
        bool first_in_file = i == 0 || strcmp(e->rs->rules[i - 1].file, r->file) != 0;
        bool last_in_file = i + 1 == e->rs->n || strcmp(e->rs->rules[i + 1].file, r->file) != 0;
        if (first_in_file) {
            if (i > 0)
                rc = iocd_buf_putc(&rj, ',');
            if (rc == IOCD_OK)
                rc = iocd_buf_puts(&rj, "{\"name\":");
            if (rc == IOCD_OK)
                rc = iocd_buf_json_str(&rj, r->file, strlen(r->file));
            if (rc == IOCD_OK)
                rc = iocd_buf_puts(&rj, ",\"file\":");
            if (rc == IOCD_OK)
                rc = iocd_buf_json_str(&rj, r->file, strlen(r->file));
            if (rc == IOCD_OK) { /* the group's evaluation: its rules' summed, the newest */
                double secs = 0;
                int64_t last = 0;
                for (j = i; j < e->rs->n && strcmp(e->rs->rules[j].file, r->file) == 0; j++) {
                    secs += e->health[j].eval_seconds;
                    if (e->health[j].last_eval_ms > last)
                        last = e->health[j].last_eval_ms;
                }
                rc = iocd_buf_printf(&rj,
                                     ",\"interval\":%g,\"limit\":0,\"evaluationTime\":%.6f,"
                                     "\"lastEvaluation\":",
                                     (double)TICK_MS / 1000.0, secs);
                if (rc == IOCD_OK)
                    rc = put_time_json(&rj, last);
                if (rc == IOCD_OK)
                    rc = iocd_buf_puts(&rj, ",\"rules\":[");
            }
        } else if (rc == IOCD_OK) {
            rc = iocd_buf_putc(&rj, ',');
        }
        if (rc == IOCD_OK)
            rc = iocd_buf_puts(&rj, "{\"name\":");
        if (rc == IOCD_OK)
            rc = iocd_buf_json_str(&rj, r->name, strlen(r->name));
        if (rc == IOCD_OK)
            rc = put_rule_meta_json(&rj, r);
        if (rc == IOCD_OK) {
            const char *q = r->expr_text != NULL ? r->expr_text : r->select_text;
            rc = iocd_buf_puts(&rj, ",\"query\":");
            if (rc == IOCD_OK)
                rc = iocd_buf_json_str(&rj, q, strlen(q));
        }
        if (rc == IOCD_OK && r->kind == RULE_RECORD) {
            rc = iocd_buf_puts(&rj, ",\"type\":\"recording\"");
        } else if (rc == IOCD_OK) {
            rc = iocd_buf_printf(&rj,
                                 ",\"type\":\"alerting\",\"duration\":%g,\"keepFiringFor\":%g,"
                                 "\"mode\":\"%s\",\"kind\":\"%s\",\"alerts\":[",
                                 (double)r->hold_ms / 1000.0, (double)r->keep_ms / 1000.0,
                                 r->shadow ? "shadow" : "live",
                                 r->kind == RULE_STREAM   ? "stream"
                                 : r->kind == RULE_ABSENT ? "absent"
                                                          : "expr");
            for (j = 0, k = 0; rc == IOCD_OK && j < count[i]; j++) {
                if (k++ > 0)
                    rc = iocd_buf_putc(&rj, ',');
                if (rc == IOCD_OK)
                    rc = put_alert_json(e, &rj, active[first[i] + j]);
            }
            if (rc == IOCD_OK)
                rc = iocd_buf_printf(&rj, "],\"state\":\"%s\"", k > 0 ? "firing" : "inactive");
        }
        if (rc == IOCD_OK)
            rc = iocd_buf_printf(&rj, ",\"health\":\"%s\",\"lastError\":",
                                 h->failed || h->err[0] != '\0' ? "err" : "ok");
        if (rc == IOCD_OK)
            rc = iocd_buf_json_str(&rj, h->err, strlen(h->err));
        if (rc == IOCD_OK && r->when.text != NULL) {
            rc = iocd_buf_puts(&rj, ",\"when\":");
            if (rc == IOCD_OK)
                rc = iocd_buf_json_str(&rj, r->when.text, strlen(r->when.text));
        }
        if (rc == IOCD_OK && r->clear.text != NULL) {
            rc = iocd_buf_puts(&rj, ",\"clear\":");
            if (rc == IOCD_OK)
                rc = iocd_buf_json_str(&rj, r->clear.text, strlen(r->clear.text));
        }
        if (rc == IOCD_OK)
            rc = iocd_buf_printf(&rj, ",\"evaluations\":%llu", (unsigned long long)h->evaluations);
        if (rc == IOCD_OK)
            rc = iocd_buf_printf(&rj,
                                 ",\"evaluationTime\":%.6f,\"lastEvaluation\":", h->eval_seconds);
        if (rc == IOCD_OK)
            rc = put_time_json(&rj, h->last_eval_ms);
        if (rc == IOCD_OK)
            rc = iocd_buf_printf(&rj, ",\"line\":%d}", r->line);
        if (rc == IOCD_OK && last_in_file)
            rc = iocd_buf_puts(&rj, "]}");
    }
    if (rc == IOCD_OK)
        rc = iocd_buf_puts(&rj, "]}");
    iocd_free(first);
    iocd_free(count);
    iocd_free(active);
    if (rc == IOCD_OK) {
        pthread_mutex_lock(&e->mu);
        iocd_buf_fini(&e->rules_json);
        iocd_buf_fini(&e->alerts_json);
        e->rules_json = rj;
        e->alerts_json = aj;
        pthread_mutex_unlock(&e->mu);
    } else {
        iocd_buf_fini(&rj);
        iocd_buf_fini(&aj);
    }
}

/* Asks the engine thread for fresh views and waits for its round (a second at most, then the
 * last views serve). Call with e->mu held. */
static void views_refresh(rule_engine *e)
{
    uint64_t gen = e->views_gen;
    struct timespec ts;

    if (!e->started || e->stopping)
        return;
    e->view_wanted = true;
    pthread_cond_signal(&e->cv);
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    while (e->views_gen == gen && !e->stopping)
        if (pthread_cond_timedwait(&e->view_cv, &e->mu, &ts) != 0)
            break;
}

iocd_err rule_engine_rules_json(rule_engine *e, iocd_buf *out)
{
    iocd_err err;

    pthread_mutex_lock(&e->mu);
    views_refresh(e);
    err = e->rules_json.len > 0 ? iocd_buf_append(out, e->rules_json.data, e->rules_json.len)
                                : iocd_buf_puts(out, "{\"groups\":[]}");
    pthread_mutex_unlock(&e->mu);
    return err;
}

iocd_err rule_engine_alerts_json(rule_engine *e, iocd_buf *out)
{
    iocd_err err;

    pthread_mutex_lock(&e->mu);
    views_refresh(e);
    err = e->alerts_json.len > 0 ? iocd_buf_append(out, e->alerts_json.data, e->alerts_json.len)
                                 : iocd_buf_puts(out, "{\"alerts\":[]}");
    pthread_mutex_unlock(&e->mu);
    return err;
}
