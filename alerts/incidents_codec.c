/* alerts/incidents_codec.c - an incident's forms: the JSON the API and the events show, the
 * body a route's webhook gets (Alertmanager's webhook format, version 4) and the record kept
 * in table "incidents" ("name\0value\0" pairs). Invariant: incident_decode reads every record
 * an earlier incident_encode wrote (fields an older record lacks get their defaults). */
#include "alerts/alerts_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- JSON --------------------------------------------------------------------------------- */

iocd_err incident_json_time(iocd_buf *b, int64_t t_ms)
{
    char ts[40];

    if (t_ms <= 0)
        return iocd_buf_puts(b, "null");
    iocd_time_format(t_ms, ts, sizeof(ts));
    return iocd_buf_printf(b, "\"%s\"", ts);
}

iocd_err incident_json_str(iocd_buf *b, const char *s)
{
    if (s == NULL)
        return iocd_buf_puts(b, "null");
    return iocd_buf_json_str(b, s, strlen(s));
}

iocd_err incident_json_field(iocd_buf *b, const char *name, const char *s)
{
    iocd_err err = iocd_buf_printf(b, ",\"%s\":", name);

    return err == IOCD_OK ? incident_json_str(b, s) : err;
}

static iocd_err put_tfield(iocd_buf *b, const char *name, int64_t t)
{
    iocd_err err = iocd_buf_printf(b, ",\"%s\":", name);

    return err == IOCD_OK ? incident_json_time(b, t) : err;
}

/* The incident as the API and the events show it. */
iocd_err incident_json(const incident *in, bool history, iocd_buf *b)
{
    const char *p = in->labels, *end = in->labels + in->labels_len;
    iocd_err err =
        iocd_buf_printf(b, "{\"id\":%llu,\"fingerprint\":\"%s\",\"state\":\"%s\"",
                        (unsigned long long)in->id, in->fp, incident_state_names[in->state]);
    bool first = true;
    size_t i;

    if (err == IOCD_OK)
        err = incident_json_field(b, "rule", in->rule);
    if (err == IOCD_OK)
        err = incident_json_field(b, "severity", in->severity);
    if (err == IOCD_OK)
        err = incident_json_field(b, "domain", in->domain);
    if (err == IOCD_OK)
        err = incident_json_field(b, "ward", in->ward);
    if (err == IOCD_OK)
        err = incident_json_field(b, "summary", in->summary);
    if (err == IOCD_OK)
        err = incident_json_field(b, "description", in->description);
    if (err == IOCD_OK)
        err = incident_json_field(b, "runbook", in->runbook);
    if (err == IOCD_OK)
        err = incident_json_field(b, "query", in->query);
    if (err == IOCD_OK)
        err = incident_json_field(b, "source", in->manual ? "report" : "rule");
    if (err == IOCD_OK)
        err = incident_json_field(b, "reporter", in->reporter);
    if (err == IOCD_OK)
        err = incident_json_field(b, "location", in->location);
    if (err == IOCD_OK)
        err = incident_json_field(b, "device", in->device);
    if (err == IOCD_OK)
        err = incident_json_field(b, "device_kind", in->device_kind);
    if (err == IOCD_OK)
        err = incident_json_field(b, "address", in->address);
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"latitude\":");
    if (err == IOCD_OK)
        err = in->has_position ? iocd_buf_float(b, in->latitude) : iocd_buf_puts(b, "null");
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"longitude\":");
    if (err == IOCD_OK)
        err = in->has_position ? iocd_buf_float(b, in->longitude) : iocd_buf_puts(b, "null");
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"labels\":{");
    while (err == IOCD_OK && p < end) {
        const char *v = p + strlen(p) + 1;
        if (!first)
            err = iocd_buf_putc(b, ',');
        first = false;
        if (err == IOCD_OK)
            err = incident_json_str(b, p);
        if (err == IOCD_OK)
            err = iocd_buf_putc(b, ':');
        if (err == IOCD_OK)
            err = incident_json_str(b, v);
        p = v + strlen(v) + 1;
    }
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "},\"value\":");
    if (err == IOCD_OK)
        err =
            isfinite(in->value) ? iocd_buf_printf(b, "%.17g", in->value) : iocd_buf_puts(b, "null");
    if (err == IOCD_OK)
        err = put_tfield(b, "created", in->created_ms);
    if (err == IOCD_OK)
        err = put_tfield(b, "updated", in->updated_ms);
    if (err == IOCD_OK)
        err = put_tfield(b, "acknowledged_at", in->acked_ms);
    if (err == IOCD_OK)
        err = incident_json_field(b, "acknowledged_by", in->acked_by);
    if (err == IOCD_OK)
        err = incident_json_field(b, "ack_note", in->ack_note);
    if (err == IOCD_OK)
        err = incident_json_field(b, "assigned_to", in->assigned_to);
    if (err == IOCD_OK)
        err = put_tfield(b, "resolved_at", in->resolved_ms);
    if (err == IOCD_OK)
        err = incident_json_field(b, "resolved_by", in->resolved_by);
    if (err == IOCD_OK)
        err = incident_json_field(b, "resolve_reason", in->resolve_reason);
    if (err == IOCD_OK)
        err = iocd_buf_printf(b, ",\"recurrences\":%u,\"flapping\":%s", in->recurrences,
                              in->flapping ? "true" : "false");
    if (err == IOCD_OK && history) {
        err = iocd_buf_puts(b, ",\"events\":[");
        for (i = 0; err == IOCD_OK && i < in->n_ev; i++) {
            err = iocd_buf_printf(b, "%s{\"type\":\"%s\",\"time\":", i > 0 ? "," : "",
                                  in->ev[i].type);
            if (err == IOCD_OK)
                err = incident_json_time(b, in->ev[i].t_ms);
            if (err == IOCD_OK)
                err = incident_json_field(b, "by", in->ev[i].by);
            if (err == IOCD_OK)
                err = incident_json_field(b, "note", in->ev[i].note);
            if (err == IOCD_OK && in->ev[i].held)
                err = iocd_buf_puts(b, ",\"held\":true");
            if (err == IOCD_OK)
                err = iocd_buf_putc(b, '}');
        }
        if (err == IOCD_OK)
            err = iocd_buf_putc(b, ']');
    }
    return err == IOCD_OK ? iocd_buf_putc(b, '}') : err;
}

/* ---- Persistence: "name\0value\0" pairs --------------------------------------------------- */

static iocd_err kv(iocd_buf *b, const char *name, const char *value)
{
    iocd_err err;

    if (value == NULL)
        return IOCD_OK;
    err = iocd_buf_append(b, name, strlen(name) + 1);
    return err == IOCD_OK ? iocd_buf_append(b, value, strlen(value) + 1) : err;
}

static iocd_err kvi(iocd_buf *b, const char *name, long long v)
{
    char t[32];

    snprintf(t, sizeof(t), "%lld", v);
    return kv(b, name, t);
}

iocd_err incident_encode(const incident *in, iocd_buf *b)
{
    const char *p = in->labels, *end = in->labels + in->labels_len;
    char t[64];
    iocd_err err = kvi(b, "id", (long long)in->id);
    size_t i;

    if (err == IOCD_OK)
        err = kv(b, "fp", in->fp);
    if (err == IOCD_OK)
        err = kv(b, "rule", in->rule);
    if (err == IOCD_OK)
        err = kv(b, "severity", in->severity);
    if (err == IOCD_OK)
        err = kv(b, "domain", in->domain);
    if (err == IOCD_OK)
        err = kv(b, "ward", in->ward);
    if (err == IOCD_OK)
        err = kv(b, "summary", in->summary);
    if (err == IOCD_OK)
        err = kv(b, "description", in->description);
    if (err == IOCD_OK)
        err = kv(b, "runbook", in->runbook);
    if (err == IOCD_OK)
        err = kv(b, "reporter", in->reporter);
    if (err == IOCD_OK)
        err = kv(b, "location", in->location);
    if (err == IOCD_OK)
        err = kv(b, "query", in->query);
    if (err == IOCD_OK)
        err = kv(b, "device", in->device);
    if (err == IOCD_OK)
        err = kv(b, "device_kind", in->device_kind);
    if (err == IOCD_OK)
        err = kv(b, "address", in->address);
    if (err == IOCD_OK && in->has_position) {
        snprintf(t, sizeof(t), "%.17g", in->latitude);
        err = kv(b, "latitude", t);
        snprintf(t, sizeof(t), "%.17g", in->longitude);
        if (err == IOCD_OK)
            err = kv(b, "longitude", t);
    }
    if (err == IOCD_OK)
        err = kv(b, "acked_by", in->acked_by);
    if (err == IOCD_OK)
        err = kv(b, "ack_note", in->ack_note);
    if (err == IOCD_OK)
        err = kv(b, "assigned_to", in->assigned_to);
    if (err == IOCD_OK)
        err = kv(b, "resolved_by", in->resolved_by);
    if (err == IOCD_OK)
        err = kv(b, "resolve_reason", in->resolve_reason);
    if (err == IOCD_OK)
        err = kvi(b, "state", in->state);
    if (err == IOCD_OK)
        err = kvi(b, "created", in->created_ms);
    if (err == IOCD_OK)
        err = kvi(b, "updated", in->updated_ms);
    if (err == IOCD_OK)
        err = kvi(b, "acked", in->acked_ms);
    if (err == IOCD_OK)
        err = kvi(b, "resolved", in->resolved_ms);
    if (err == IOCD_OK)
        err = kvi(b, "recurrences", in->recurrences);
    if (err == IOCD_OK)
        err = kvi(b, "manual", in->manual);
    snprintf(t, sizeof(t), "%.17g", in->value);
    if (err == IOCD_OK)
        err = kv(b, "value", t);
    if (err == IOCD_OK)
        err = kv(b, "inhibit", in->inhibit);
    if (err == IOCD_OK)
        err = kv(b, "inhibit_equal", in->inhibit_equal);
    if (err == IOCD_OK)
        err = kvi(b, "fired", in->fired_ms);
    if (err == IOCD_OK)
        err = kvi(b, "notified", in->notified_ms);
    if (err == IOCD_OK)
        err = kvi(b, "escalated", in->escalated_ms);
    if (err == IOCD_OK)
        err = kvi(b, "first_held", in->first_held);
    if (err == IOCD_OK)
        err = kvi(b, "flapping", in->flapping);
    for (i = 0; err == IOCD_OK && i < (size_t)in->n_flap; i++) {
        char name[32];
        snprintf(name, sizeof(name), "f.%zu", i);
        err = kvi(b, name, in->flap_t[i]);
    }
    while (err == IOCD_OK && p < end) {
        const char *v = p + strlen(p) + 1;
        char name[300];
        snprintf(name, sizeof(name), "l.%s", p);
        err = kv(b, name, v);
        p = v + strlen(v) + 1;
    }
    for (i = 0; err == IOCD_OK && i < in->n_ev; i++) {
        char name[32];
        iocd_buf e;
        iocd_buf_init(&e, 0);
        snprintf(name, sizeof(name), "e.%zu", i);
        err = iocd_buf_printf(&e, "%s\x1f%lld\x1f%s\x1f%s%s", in->ev[i].type,
                              (long long)in->ev[i].t_ms, in->ev[i].by, in->ev[i].note,
                              in->ev[i].held ? "\x1fh" : "");
        if (err == IOCD_OK)
            err = kv(b, name, e.data);
        iocd_buf_fini(&e);
    }
    return err;
}

iocd_err incident_decode(const char *p, size_t len, incident **out)
{
    const char *end = p + len;
    incident *in = iocd_calloc(1, sizeof(*in));
    iocd_buf labels;
    iocd_err err = IOCD_OK;

    if (in == NULL)
        return IOCD_ENOMEM;
    iocd_buf_init(&labels, 0);
    while (err == IOCD_OK && p < end) {
        const char *v = p + strnlen(p, (size_t)(end - p)) + 1;
        if (v >= end) {
            err = IOCD_ECORRUPT;
            break;
        }
        if (strcmp(p, "id") == 0)
            in->id = strtoull(v, NULL, 10);
        else if (strcmp(p, "fp") == 0)
            snprintf(in->fp, sizeof(in->fp), "%s", v);
        else if (strcmp(p, "rule") == 0)
            incident_set_str(&in->rule, v);
        else if (strcmp(p, "severity") == 0)
            incident_set_str(&in->severity, v);
        else if (strcmp(p, "domain") == 0)
            incident_set_str(&in->domain, v);
        else if (strcmp(p, "ward") == 0)
            incident_set_str(&in->ward, v);
        else if (strcmp(p, "summary") == 0)
            incident_set_str(&in->summary, v);
        else if (strcmp(p, "description") == 0)
            incident_set_str(&in->description, v);
        else if (strcmp(p, "runbook") == 0)
            incident_set_str(&in->runbook, v);
        else if (strcmp(p, "reporter") == 0)
            incident_set_str(&in->reporter, v);
        else if (strcmp(p, "location") == 0)
            incident_set_str(&in->location, v);
        else if (strcmp(p, "device") == 0)
            incident_set_str(&in->device, v);
        else if (strcmp(p, "query") == 0)
            incident_set_str(&in->query, v);
        else if (strcmp(p, "device_kind") == 0)
            incident_set_str(&in->device_kind, v);
        else if (strcmp(p, "address") == 0)
            incident_set_str(&in->address, v);
        else if (strcmp(p, "latitude") == 0) {
            in->latitude = strtod(v, NULL);
            in->has_position = true;
        } else if (strcmp(p, "longitude") == 0)
            in->longitude = strtod(v, NULL);
        else if (strcmp(p, "acked_by") == 0)
            incident_set_str(&in->acked_by, v);
        else if (strcmp(p, "ack_note") == 0)
            incident_set_str(&in->ack_note, v);
        else if (strcmp(p, "assigned_to") == 0)
            incident_set_str(&in->assigned_to, v);
        else if (strcmp(p, "resolved_by") == 0)
            incident_set_str(&in->resolved_by, v);
        else if (strcmp(p, "resolve_reason") == 0)
            incident_set_str(&in->resolve_reason, v);
        else if (strcmp(p, "state") == 0)
            in->state = (inc_state)(atoi(v) % 3);
        else if (strcmp(p, "created") == 0)
            in->created_ms = strtoll(v, NULL, 10);
        else if (strcmp(p, "updated") == 0)
            in->updated_ms = strtoll(v, NULL, 10);
        else if (strcmp(p, "acked") == 0)
            in->acked_ms = strtoll(v, NULL, 10);
        else if (strcmp(p, "resolved") == 0)
            in->resolved_ms = strtoll(v, NULL, 10);
        else if (strcmp(p, "recurrences") == 0)
            in->recurrences = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(p, "manual") == 0)
            in->manual = atoi(v) != 0;
        else if (strcmp(p, "value") == 0)
            in->value = strtod(v, NULL);
        else if (strcmp(p, "inhibit") == 0)
            incident_set_str(&in->inhibit, v);
        else if (strcmp(p, "inhibit_equal") == 0)
            incident_set_str(&in->inhibit_equal, v);
        else if (strcmp(p, "fired") == 0)
            in->fired_ms = strtoll(v, NULL, 10);
        else if (strcmp(p, "notified") == 0)
            in->notified_ms = strtoll(v, NULL, 10);
        else if (strcmp(p, "escalated") == 0)
            in->escalated_ms = strtoll(v, NULL, 10);
        else if (strcmp(p, "first_held") == 0)
            in->first_held = atoi(v) != 0;
        else if (strcmp(p, "flapping") == 0)
            in->flapping = atoi(v) != 0;
        else if (strncmp(p, "f.", 2) == 0) {
            if (in->n_flap < INCIDENT_FLAP_MAX)
                in->flap_t[in->n_flap++] = strtoll(v, NULL, 10);
        } else if (strncmp(p, "l.", 2) == 0) {
            err = iocd_buf_append(&labels, p + 2, strlen(p + 2) + 1);
            if (err == IOCD_OK)
                err = iocd_buf_append(&labels, v, strlen(v) + 1);
        } else if (strncmp(p, "e.", 2) == 0) {
            char tmp[INCIDENT_STR_MAX * 2 + 64], *f[5] = { NULL }, *q;
            int k = 0;
            snprintf(tmp, sizeof(tmp), "%s", v);
            for (q = tmp, f[0] = tmp, k = 1; *q != '\0' && k < 5; q++)
                if (*q == '\x1f') {
                    *q = '\0';
                    f[k++] = q + 1;
                }
            if (k >= 4)
                err = incident_history_add(in, f[0], strtoll(f[1], NULL, 10), f[2], f[3]);
            if (err == IOCD_OK && k == 5 && in->n_ev > 0)
                in->ev[in->n_ev - 1].held = strcmp(f[4], "h") == 0;
        }
        p = v + strnlen(v, (size_t)(end - v)) + 1;
    }
    in->labels_len = labels.len;
    in->labels = iocd_buf_take(&labels, NULL);
    if (in->labels == NULL)
        in->labels = iocd_strdup("");
    if (in->fired_ms == 0) /* written before noise control */
        in->fired_ms = in->created_ms;
    if (err == IOCD_OK && (in->id == 0 || in->rule == NULL || in->labels == NULL))
        err = IOCD_ECORRUPT;
    if (err != IOCD_OK) {
        incident_free(in);
        return err;
    }
    *out = in;
    return IOCD_OK;
}

/* An event in Alertmanager's webhook format (version 4): one group, one alert (the
 * incident's labels and annotations), and the iocd event itself under "iocd". */
iocd_err incident_webhook_body(const incident *in, const char *type, const iocd_buf *event,
                               iocd_buf *b)
{
    const char *p = in->labels, *end = in->labels + in->labels_len;
    const char *status = in->state == INC_RESOLVED ? "resolved" : "firing";
    iocd_buf labels;
    iocd_err err;
    bool first = true;

    (void)type;
    iocd_buf_init(&labels, 0);
    err = iocd_buf_putc(&labels, '{');
    while (err == IOCD_OK && p < end) {
        const char *v = p + strlen(p) + 1;
        if (!first)
            err = iocd_buf_putc(&labels, ',');
        first = false;
        if (err == IOCD_OK)
            err = incident_json_str(&labels, p);
        if (err == IOCD_OK)
            err = iocd_buf_putc(&labels, ':');
        if (err == IOCD_OK)
            err = incident_json_str(&labels, v);
        p = v + strlen(v) + 1;
    }
    if (err == IOCD_OK)
        err = iocd_buf_putc(&labels, '}');
    if (err == IOCD_OK)
        err = iocd_buf_printf(b,
                              "{\"version\":\"4\",\"groupKey\":\"%s\",\"truncatedAlerts\":0,"
                              "\"status\":\"%s\",\"receiver\":\"iocd\",\"groupLabels\":",
                              in->fp, status);
    if (err == IOCD_OK)
        err = iocd_buf_append(b, labels.data, labels.len);
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"commonLabels\":");
    if (err == IOCD_OK)
        err = iocd_buf_append(b, labels.data, labels.len);
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"commonAnnotations\":{}");
    if (err == IOCD_OK)
        err = iocd_buf_printf(
            b, ",\"externalURL\":\"\",\"alerts\":[{\"status\":\"%s\",\"labels\":", status);
    if (err == IOCD_OK)
        err = iocd_buf_append(b, labels.data, labels.len);
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"annotations\":{\"summary\":");
    if (err == IOCD_OK)
        err = incident_json_str(b, in->summary != NULL ? in->summary : "");
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"description\":");
    if (err == IOCD_OK)
        err = incident_json_str(b, in->description != NULL ? in->description : "");
    if (err == IOCD_OK && in->runbook != NULL) {
        err = iocd_buf_puts(b, ",\"runbook_url\":");
        if (err == IOCD_OK)
            err = incident_json_str(b, in->runbook);
    }
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "},\"startsAt\":");
    if (err == IOCD_OK)
        err = incident_json_time(b, in->fired_ms);
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"endsAt\":");
    if (err == IOCD_OK)
        err = in->state == INC_RESOLVED ? incident_json_time(b, in->resolved_ms)
                                        : iocd_buf_puts(b, "\"0001-01-01T00:00:00Z\"");
    if (err == IOCD_OK)
        err =
            iocd_buf_printf(b, ",\"generatorURL\":\"\",\"fingerprint\":\"%s\"}],\"iocd\":", in->fp);
    if (err == IOCD_OK)
        err = iocd_buf_append(b, event->data, event->len);
    if (err == IOCD_OK)
        err = iocd_buf_putc(b, '}');
    iocd_buf_fini(&labels);
    return err;
}
