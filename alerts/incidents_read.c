/* alerts/incidents_read.c - the incident API's reads: the filtered list (newest first), one
 * incident with its history, and counts and mean times by domain, ward and day. Each holds
 * ac->mu for its whole pass (the stats' tables are static: one pass at a time). */
#include "alerts/alerts_int.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* ---- Reading -------------------------------------------------------------------------------- */

static bool eq_or_any(const char *want, const char *have)
{
    return want == NULL || want[0] == '\0' || (have != NULL && strcmp(want, have) == 0);
}

iocd_err alert_incidents_list(alert_center *ac, const alert_filter *f, iocd_buf *out)
{
    size_t i, total = 0, shown = 0, limit = f->limit != 0 ? f->limit : 100;
    iocd_err err = iocd_buf_puts(out, "{\"incidents\":[");

    pthread_mutex_lock(&ac->mu);
    for (i = ac->n; err == IOCD_OK && i > 0; i--) { /* newest first */
        const incident *in = ac->inc[i - 1];
        if (!eq_or_any(f->state, incident_state_names[in->state]) ||
            !eq_or_any(f->domain, in->domain) || !eq_or_any(f->ward, in->ward) ||
            !eq_or_any(f->severity, in->severity) ||
            (f->since_ms != 0 && in->created_ms < f->since_ms) ||
            (f->until_ms != 0 && in->created_ms > f->until_ms))
            continue;
        total++;
        if (total <= f->offset || shown >= limit)
            continue;
        if (shown++ > 0)
            err = iocd_buf_putc(out, ',');
        if (err == IOCD_OK)
            err = incident_json(in, false, out);
    }
    pthread_mutex_unlock(&ac->mu);
    if (err == IOCD_OK)
        err = iocd_buf_printf(out, "],\"total\":%zu}", total);
    return err;
}

iocd_err alert_incident_get(alert_center *ac, uint64_t id, iocd_buf *out)
{
    incident *in;
    iocd_err err;

    pthread_mutex_lock(&ac->mu);
    in = incident_find_id(ac, id);
    err = in != NULL ? incident_json(in, true, out) : IOCD_ENOTFOUND;
    pthread_mutex_unlock(&ac->mu);
    return err;
}

typedef struct stat_row {
    char key[160];
    uint64_t received, acked, resolved, open;
    double ack_s, resolve_s; /* sums, for the means */
} stat_row;

static stat_row *row_for(stat_row *rows, size_t *n, size_t cap, const char *key)
{
    size_t i;

    for (i = 0; i < *n; i++)
        if (strcmp(rows[i].key, key) == 0)
            return &rows[i];
    if (*n == cap)
        return NULL;
    memset(&rows[*n], 0, sizeof(rows[*n]));
    snprintf(rows[*n].key, sizeof(rows[*n].key), "%s", key);
    return &rows[(*n)++];
}

static void count(stat_row *r, const incident *in)
{
    if (r == NULL)
        return;
    r->received++;
    if (in->acked_ms > 0) {
        r->acked++;
        r->ack_s += (double)(in->acked_ms - in->created_ms) / 1000.0;
    }
    if (in->state == INC_RESOLVED) {
        r->resolved++;
        r->resolve_s += (double)(in->resolved_ms - in->created_ms) / 1000.0;
    } else {
        r->open++;
    }
}

static iocd_err put_rows(iocd_buf *b, const char *name, const stat_row *rows, size_t n)
{
    iocd_err err = iocd_buf_printf(b, ",\"%s\":[", name);
    size_t i;

    for (i = 0; err == IOCD_OK && i < n; i++) {
        err = iocd_buf_printf(b, "%s{\"key\":", i > 0 ? "," : "");
        if (err == IOCD_OK)
            err = incident_json_str(b, rows[i].key);
        if (err == IOCD_OK)
            err = iocd_buf_printf(
                b,
                ",\"received\":%llu,\"acknowledged\":%llu,\"resolved\":%llu,\"open\":%llu,"
                "\"mean_time_to_acknowledge_s\":%.1f,\"mean_time_to_resolve_s\":%.1f}",
                (unsigned long long)rows[i].received, (unsigned long long)rows[i].acked,
                (unsigned long long)rows[i].resolved, (unsigned long long)rows[i].open,
                rows[i].acked > 0 ? rows[i].ack_s / (double)rows[i].acked : 0.0,
                rows[i].resolved > 0 ? rows[i].resolve_s / (double)rows[i].resolved : 0.0);
    }
    return err == IOCD_OK ? iocd_buf_putc(b, ']') : err;
}

iocd_err alert_incidents_stats(alert_center *ac, int64_t since_ms, int64_t until_ms, iocd_buf *out)
{
    static stat_row total[1], domains[64], wards[256], days[400];
    size_t n_total = 0, n_dom = 0, n_ward = 0, n_day = 0, i;
    iocd_err err;

    pthread_mutex_lock(&ac->mu);
    for (i = 0; i < ac->n; i++) {
        const incident *in = ac->inc[i];
        char day[16];
        if ((since_ms != 0 && in->created_ms < since_ms) ||
            (until_ms != 0 && in->created_ms > until_ms))
            continue;
        iocd_time_format(in->created_ms + (int64_t)ac->cfg.tz_offset_s * 1000, day,
                         sizeof(day)); /* local date */
        day[10] = '\0';
        count(row_for(total, &n_total, 1, "all"), in);
        count(row_for(domains, &n_dom, 64, in->domain != NULL ? in->domain : ""), in);
        count(row_for(wards, &n_ward, 256, in->ward != NULL ? in->ward : ""), in);
        count(row_for(days, &n_day, 400, day), in);
    }
    err = iocd_buf_puts(out, "{\"period\":{\"since\":");
    if (err == IOCD_OK)
        err = incident_json_time(out, since_ms);
    if (err == IOCD_OK)
        err = iocd_buf_puts(out, ",\"until\":");
    if (err == IOCD_OK)
        err = incident_json_time(out, until_ms);
    if (err == IOCD_OK)
        err = iocd_buf_putc(out, '}');
    if (err == IOCD_OK)
        err = put_rows(out, "total", total, n_total);
    if (err == IOCD_OK)
        err = put_rows(out, "by_domain", domains, n_dom);
    if (err == IOCD_OK)
        err = put_rows(out, "by_ward", wards, n_ward);
    if (err == IOCD_OK)
        err = put_rows(out, "by_day", days, n_day);
    pthread_mutex_unlock(&ac->mu);
    return err == IOCD_OK ? iocd_buf_putc(out, '}') : err;
}
