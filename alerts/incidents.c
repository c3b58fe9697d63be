/* alerts/incidents.c - incidents: one per real-world problem (a rule plus its grouping labels,
 * hashed into a fingerprint), with a lifecycle dispatchers follow: firing -> acknowledged ->
 * resolved (by the rule clearing or by an operator), reopened when it fires again within the
 * reopen window. Manual incidents come from citizen or field reports. Every change is stored
 * (table "incidents") in the same transaction as the event that announces it (the outbox),
 * so a state change and its Kafka event are never one without the other. An incident about a
 * registered device carries what the device registry knows of it (kind, address, position).
 * Invariant: ac->mu is held across a change's sequence assignment, store write and queueing,
 * so events leave in the order their changes happened. */
#include "alerts/alerts_int.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HISTORY_MAX 200
#define STR_MAX     4096 /* longest text field kept */

typedef enum inc_state {
    INC_FIRING,
    INC_ACKNOWLEDGED,
    INC_RESOLVED,
} inc_state;

static const char *const state_names[] = { "firing", "acknowledged", "resolved" };

typedef struct inc_event {
    char *type;
    int64_t t_ms;
    char *by, *note;
    bool held; /* recorded, not sent (group wait, flapping) */
} inc_event;

#define FLAP_MAX 32 /* state changes remembered for flap detection */

typedef struct incident {
    uint64_t id;
    char fp[17];
    char *rule, *labels; /* labels: "name\0value\0" sorted */
    size_t labels_len;
    char *severity, *domain, *ward, *summary, *description, *runbook, *reporter, *location;
    char *acked_by, *ack_note, *assigned_to, *resolved_by, *resolve_reason;
    char *device, *device_kind, *address; /* from the registry when it knows the device */
    char *query; /* PromQL of the series behind a rule's incident, or NULL */
    double latitude, longitude;
    bool has_position;
    inc_state state;
    int64_t created_ms, updated_ms, acked_ms, resolved_ms;
    uint32_t recurrences;
    double value;
    bool manual;
    inc_event *ev;
    size_t n_ev;
    char *inhibit;       /* matchers of the alerts this one holds back while open, or NULL */
    char *inhibit_equal; /* label names joined by '\x1f' */
    query_selector inhibit_sel;
    bool inhibit_parsed;
    /* Noise control. */
    int64_t fired_ms;             /* when it last began firing (opened or reopened) */
    int64_t notified_ms;          /* the last event sent about it (0: none yet) */
    int64_t escalated_ms;         /* the last escalation (0: none) */
    bool first_held;              /* its first event waits for the group wait */
    size_t members, members_told; /* series in its firing group now / last announced */
    bool flapping;
    int64_t flap_t[FLAP_MAX]; /* times of its latest state changes, oldest first */
    int n_flap;
} incident;

struct alert_center {
    alert_config cfg;
    pthread_mutex_t mu;
    incident **inc; /* by id order (ids ascend) */
    size_t n, cap;
    uint64_t next_id;
    alert_outbox *ob;
    alert_silences *silences;
    alert_devices *devices;
    iocd_buf scratch, scratch2, scratch3;
    alert_webhooks *webhooks;
    iocd_metric *m_opened, *m_resolved, *m_acked, *m_open, *m_inhibited;
    iocd_metric *m_held, *m_repeated, *m_escalated, *m_flapping;
    struct muted *muted; /* firing alerts held back by a silence or an inhibition */
    size_t n_muted, cap_muted;
    alert_route *routes; /* copies, with their selectors parsed */
    query_selector *route_sel;
    size_t n_routes;
    pthread_t ticker;
    bool ticker_started, stopping;
    pthread_cond_t wake;
};

/* ---- Small helpers ------------------------------------------------------------------------- */

static char *dup_capped(const char *s)
{
    size_t n;
    char *d;

    if (s == NULL)
        return NULL;
    n = strlen(s);
    if (n > STR_MAX)
        n = STR_MAX;
    d = iocd_malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static void set_str(char **slot, const char *s)
{
    char *d = dup_capped(s);

    iocd_free(*slot);
    *slot = d;
}

static uint64_t fnv(const char *s, size_t len, uint64_t h)
{
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

uint64_t alert_fingerprint(const char *rule, const char *labels, size_t len)
{
    uint64_t h = fnv(rule, strlen(rule), 1469598103934665603ull);

    h = fnv("\xff", 1, h);
    return fnv(labels, len, h);
}

static void incident_free(incident *in)
{
    size_t i;

    if (in == NULL)
        return;
    iocd_free(in->rule);
    iocd_free(in->labels);
    iocd_free(in->severity);
    iocd_free(in->domain);
    iocd_free(in->ward);
    iocd_free(in->summary);
    iocd_free(in->description);
    iocd_free(in->runbook);
    iocd_free(in->reporter);
    iocd_free(in->location);
    iocd_free(in->acked_by);
    iocd_free(in->ack_note);
    iocd_free(in->assigned_to);
    iocd_free(in->resolved_by);
    iocd_free(in->resolve_reason);
    iocd_free(in->device);
    iocd_free(in->device_kind);
    iocd_free(in->query);
    iocd_free(in->address);
    for (i = 0; i < in->n_ev; i++) {
        iocd_free(in->ev[i].type);
        iocd_free(in->ev[i].by);
        iocd_free(in->ev[i].note);
    }
    iocd_free(in->ev);
    iocd_free(in->inhibit);
    iocd_free(in->inhibit_equal);
    if (in->inhibit_parsed)
        query_selector_fini(&in->inhibit_sel);
    iocd_free(in);
}

static incident *find_id(alert_center *ac, uint64_t id)
{
    size_t lo = 0, hi = ac->n;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ac->inc[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ac->n && ac->inc[lo]->id == id ? ac->inc[lo] : NULL;
}

/* The newest incident with this fingerprint. */
static incident *find_fp(alert_center *ac, const char *fp)
{
    size_t i = ac->n;

    while (i > 0) {
        i--;
        if (strcmp(ac->inc[i]->fp, fp) == 0)
            return ac->inc[i];
    }
    return NULL;
}

static iocd_err add_incident(alert_center *ac, incident *in)
{
    if (ac->n == ac->cap) {
        size_t cap = ac->cap != 0 ? ac->cap * 2 : 256;
        incident **g = iocd_realloc(ac->inc, cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        ac->inc = g;
        ac->cap = cap;
    }
    ac->inc[ac->n++] = in;
    if (in->id >= ac->next_id)
        ac->next_id = in->id + 1;
    return IOCD_OK;
}

static iocd_err history_add(incident *in, const char *type, int64_t t_ms, const char *by,
                            const char *note)
{
    inc_event *e;

    if (in->n_ev == HISTORY_MAX) { /* keep the first (how it began) and the latest */
        iocd_free(in->ev[1].type);
        iocd_free(in->ev[1].by);
        iocd_free(in->ev[1].note);
        memmove(in->ev + 1, in->ev + 2, (in->n_ev - 2) * sizeof(*in->ev));
        in->n_ev--;
    }
    if (in->n_ev % 16 == 0) {
        inc_event *g = iocd_realloc(in->ev, (in->n_ev + 16) * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        in->ev = g;
    }
    e = &in->ev[in->n_ev];
    e->type = iocd_strdup(type);
    e->t_ms = t_ms;
    e->by = dup_capped(by != NULL ? by : "");
    e->note = dup_capped(note != NULL ? note : "");
    e->held = false;
    if (e->type == NULL || e->by == NULL || e->note == NULL) {
        iocd_free(e->type);
        iocd_free(e->by);
        iocd_free(e->note);
        return IOCD_ENOMEM;
    }
    in->n_ev++;
    return IOCD_OK;
}

/* ---- JSON --------------------------------------------------------------------------------- */

static iocd_err put_time(iocd_buf *b, int64_t t_ms)
{
    char ts[40];

    if (t_ms <= 0)
        return iocd_buf_puts(b, "null");
    iocd_time_format(t_ms, ts, sizeof(ts));
    return iocd_buf_printf(b, "\"%s\"", ts);
}

static iocd_err put_str(iocd_buf *b, const char *s)
{
    if (s == NULL)
        return iocd_buf_puts(b, "null");
    return iocd_buf_json_str(b, s, strlen(s));
}

static iocd_err put_field(iocd_buf *b, const char *name, const char *s)
{
    iocd_err err = iocd_buf_printf(b, ",\"%s\":", name);

    return err == IOCD_OK ? put_str(b, s) : err;
}

static iocd_err put_tfield(iocd_buf *b, const char *name, int64_t t)
{
    iocd_err err = iocd_buf_printf(b, ",\"%s\":", name);

    return err == IOCD_OK ? put_time(b, t) : err;
}

/* The incident as the API and the events show it. */
static iocd_err incident_json(const incident *in, bool history, iocd_buf *b)
{
    const char *p = in->labels, *end = in->labels + in->labels_len;
    iocd_err err = iocd_buf_printf(b, "{\"id\":%llu,\"fingerprint\":\"%s\",\"state\":\"%s\"",
                                   (unsigned long long)in->id, in->fp, state_names[in->state]);
    bool first = true;
    size_t i;

    if (err == IOCD_OK)
        err = put_field(b, "rule", in->rule);
    if (err == IOCD_OK)
        err = put_field(b, "severity", in->severity);
    if (err == IOCD_OK)
        err = put_field(b, "domain", in->domain);
    if (err == IOCD_OK)
        err = put_field(b, "ward", in->ward);
    if (err == IOCD_OK)
        err = put_field(b, "summary", in->summary);
    if (err == IOCD_OK)
        err = put_field(b, "description", in->description);
    if (err == IOCD_OK)
        err = put_field(b, "runbook", in->runbook);
    if (err == IOCD_OK)
        err = put_field(b, "query", in->query);
    if (err == IOCD_OK)
        err = put_field(b, "source", in->manual ? "report" : "rule");
    if (err == IOCD_OK)
        err = put_field(b, "reporter", in->reporter);
    if (err == IOCD_OK)
        err = put_field(b, "location", in->location);
    if (err == IOCD_OK)
        err = put_field(b, "device", in->device);
    if (err == IOCD_OK)
        err = put_field(b, "device_kind", in->device_kind);
    if (err == IOCD_OK)
        err = put_field(b, "address", in->address);
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
            err = put_str(b, p);
        if (err == IOCD_OK)
            err = iocd_buf_putc(b, ':');
        if (err == IOCD_OK)
            err = put_str(b, v);
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
        err = put_field(b, "acknowledged_by", in->acked_by);
    if (err == IOCD_OK)
        err = put_field(b, "ack_note", in->ack_note);
    if (err == IOCD_OK)
        err = put_field(b, "assigned_to", in->assigned_to);
    if (err == IOCD_OK)
        err = put_tfield(b, "resolved_at", in->resolved_ms);
    if (err == IOCD_OK)
        err = put_field(b, "resolved_by", in->resolved_by);
    if (err == IOCD_OK)
        err = put_field(b, "resolve_reason", in->resolve_reason);
    if (err == IOCD_OK)
        err = iocd_buf_printf(b, ",\"recurrences\":%u,\"flapping\":%s", in->recurrences,
                              in->flapping ? "true" : "false");
    if (err == IOCD_OK && history) {
        err = iocd_buf_puts(b, ",\"events\":[");
        for (i = 0; err == IOCD_OK && i < in->n_ev; i++) {
            err = iocd_buf_printf(b, "%s{\"type\":\"%s\",\"time\":", i > 0 ? "," : "",
                                  in->ev[i].type);
            if (err == IOCD_OK)
                err = put_time(b, in->ev[i].t_ms);
            if (err == IOCD_OK)
                err = put_field(b, "by", in->ev[i].by);
            if (err == IOCD_OK)
                err = put_field(b, "note", in->ev[i].note);
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

static iocd_err incident_encode(const incident *in, iocd_buf *b)
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

static iocd_err incident_decode(const char *p, size_t len, incident **out)
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
            set_str(&in->rule, v);
        else if (strcmp(p, "severity") == 0)
            set_str(&in->severity, v);
        else if (strcmp(p, "domain") == 0)
            set_str(&in->domain, v);
        else if (strcmp(p, "ward") == 0)
            set_str(&in->ward, v);
        else if (strcmp(p, "summary") == 0)
            set_str(&in->summary, v);
        else if (strcmp(p, "description") == 0)
            set_str(&in->description, v);
        else if (strcmp(p, "runbook") == 0)
            set_str(&in->runbook, v);
        else if (strcmp(p, "reporter") == 0)
            set_str(&in->reporter, v);
        else if (strcmp(p, "location") == 0)
            set_str(&in->location, v);
        else if (strcmp(p, "device") == 0)
            set_str(&in->device, v);
        else if (strcmp(p, "query") == 0)
            set_str(&in->query, v);
        else if (strcmp(p, "device_kind") == 0)
            set_str(&in->device_kind, v);
        else if (strcmp(p, "address") == 0)
            set_str(&in->address, v);
        else if (strcmp(p, "latitude") == 0) {
            in->latitude = strtod(v, NULL);
            in->has_position = true;
        } else if (strcmp(p, "longitude") == 0)
            in->longitude = strtod(v, NULL);
        else if (strcmp(p, "acked_by") == 0)
            set_str(&in->acked_by, v);
        else if (strcmp(p, "ack_note") == 0)
            set_str(&in->ack_note, v);
        else if (strcmp(p, "assigned_to") == 0)
            set_str(&in->assigned_to, v);
        else if (strcmp(p, "resolved_by") == 0)
            set_str(&in->resolved_by, v);
        else if (strcmp(p, "resolve_reason") == 0)
            set_str(&in->resolve_reason, v);
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
            set_str(&in->inhibit, v);
        else if (strcmp(p, "inhibit_equal") == 0)
            set_str(&in->inhibit_equal, v);
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
            if (in->n_flap < FLAP_MAX)
                in->flap_t[in->n_flap++] = strtoll(v, NULL, 10);
        } else if (strncmp(p, "l.", 2) == 0) {
            err = iocd_buf_append(&labels, p + 2, strlen(p + 2) + 1);
            if (err == IOCD_OK)
                err = iocd_buf_append(&labels, v, strlen(v) + 1);
        } else if (strncmp(p, "e.", 2) == 0) {
            char tmp[STR_MAX * 2 + 64], *f[5] = { NULL }, *q;
            int k = 0;
            snprintf(tmp, sizeof(tmp), "%s", v);
            for (q = tmp, f[0] = tmp, k = 1; *q != '\0' && k < 5; q++)
                if (*q == '\x1f') {
                    *q = '\0';
                    f[k++] = q + 1;
                }
            if (k >= 4)
                err = history_add(in, f[0], strtoll(f[1], NULL, 10), f[2], f[3]);
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

/* ---- Routes ------------------------------------------------------------------------------- */

/* The first route matching the incident (its labels, with its current severity, domain and
 * ward), or NULL. */
static const alert_route *route_for(const alert_center *ac, const incident *in)
{
    size_t r, m;

    for (r = 0; r < ac->n_routes; r++) {
        const query_selector *sel = &ac->route_sel[r];
        for (m = 0; m < sel->n; m++) {
            const char *name = sel->m[m].name, *v;
            if (strcmp(name, "severity") == 0)
                v = in->severity;
            else if (strcmp(name, "domain") == 0)
                v = in->domain;
            else if (strcmp(name, "ward") == 0)
                v = in->ward;
            else
                v = iocd_label_value(in->labels, in->labels_len, name);
            if (v == NULL)
                v = "";
            if (!query_matcher_matches(&sel->m[m], v, strlen(v)))
                break;
        }
        if (m == sel->n)
            return &ac->routes[r];
    }
    return NULL;
}

/* An event in Alertmanager's webhook format (version 4): one group, one alert (the
 * incident's labels and annotations), and the iocd event itself under "iocd". */
static iocd_err webhook_body(const incident *in, const char *type, const iocd_buf *event,
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
            err = put_str(&labels, p);
        if (err == IOCD_OK)
            err = iocd_buf_putc(&labels, ':');
        if (err == IOCD_OK)
            err = put_str(&labels, v);
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
        err = put_str(b, in->summary != NULL ? in->summary : "");
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"description\":");
    if (err == IOCD_OK)
        err = put_str(b, in->description != NULL ? in->description : "");
    if (err == IOCD_OK && in->runbook != NULL) {
        err = iocd_buf_puts(b, ",\"runbook_url\":");
        if (err == IOCD_OK)
            err = put_str(b, in->runbook);
    }
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "},\"startsAt\":");
    if (err == IOCD_OK)
        err = put_time(b, in->fired_ms);
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"endsAt\":");
    if (err == IOCD_OK)
        err = in->state == INC_RESOLVED ? put_time(b, in->resolved_ms)
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

/* ---- Changes: the incident and its event, in one transaction ------------------------------ */

/* Stores in and, unless held, queues event `type` to the incidents topic and to topic2 (when
 * not NULL); by/note go to the history. Caller holds ac->mu. */
static iocd_err commit_event(alert_center *ac, incident *in, const char *type, int64_t t_ms,
                             const char *by, const char *note, bool held, const char *topic2)
{
    iocd_buf rec, val, evid;
    char idkey[8], ce_type[64], ce_time[40], ce_subject[32], ce_id[64];
    store_kv_op ops[4];
    alert_kafka_header h[7];
    uint64_t seq = 0, seq2 = 0, seqw = 0;
    size_t n_ops = 1;
    const alert_route *route = route_for(ac, in);
    const char *topic = route != NULL && route->topic != NULL ? route->topic : ac->cfg.topic;
    const char *hook = held || route == NULL ? NULL : route->webhook;
    iocd_buf hookbody;
    bool sent = false, sent2 = false, sentw = false;
    int i;
    iocd_err err;

    in->updated_ms = t_ms;
    err = history_add(in, type, t_ms, by, note);
    if (err != IOCD_OK)
        return err;
    in->ev[in->n_ev - 1].held = held;
    if (held)
        iocd_metric_add(ac->m_held, 1);
    else
        in->notified_ms = t_ms;
    iocd_buf_init(&rec, 0);
    iocd_buf_init(&val, 0);
    iocd_buf_init(&evid, 0);
    for (i = 0; i < 8; i++)
        idkey[i] = (char)(in->id >> (56 - 8 * i));
    err = incident_encode(in, &rec);
    ops[0] = (store_kv_op){ "incidents", idkey, 8, rec.data, rec.len };
    /* The event: {"event": ..., "id": ce_id, "time": ..., "by": ..., "note": ..., "incident"}. */
    snprintf(ce_id, sizeof(ce_id), "iocd-%llu-%zu", (unsigned long long)in->id, in->n_ev);
    iocd_time_format(t_ms, ce_time, sizeof(ce_time));
    snprintf(ce_type, sizeof(ce_type), "iocd.incident.%s", type);
    snprintf(ce_subject, sizeof(ce_subject), "%llu", (unsigned long long)in->id);
    if (err == IOCD_OK)
        err = iocd_buf_printf(&val, "{\"event\":\"%s\",\"event_id\":\"%s\",\"time\":\"%s\"", type,
                              ce_id, ce_time);
    if (err == IOCD_OK)
        err = put_field(&val, "by", by);
    if (err == IOCD_OK)
        err = put_field(&val, "note", note);
    if (err == IOCD_OK)
        err = iocd_buf_puts(&val, ",\"incident\":");
    if (err == IOCD_OK)
        err = incident_json(in, false, &val);
    if (err == IOCD_OK)
        err = iocd_buf_putc(&val, '}');
    h[0] = (alert_kafka_header){ "ce_specversion", "1.0" };
    h[1] = (alert_kafka_header){ "ce_id", ce_id };
    h[2] = (alert_kafka_header){ "ce_source", ac->cfg.source };
    h[3] = (alert_kafka_header){ "ce_type", ce_type };
    h[4] = (alert_kafka_header){ "ce_time", ce_time };
    h[5] = (alert_kafka_header){ "ce_subject", ce_subject };
    h[6] = (alert_kafka_header){ "content-type", "application/json" };
    if (err == IOCD_OK && ac->ob != NULL && !held) {
        err = outbox_prepare(ac->ob, topic, in->fp, val.data, val.len, h, 7, &ac->scratch,
                             &ops[n_ops], &seq);
        if (err == IOCD_ELIMIT) {
            err = IOCD_OK; /* the change is kept; its event is not (logged, counted) */
        } else if (err == IOCD_OK) {
            n_ops++;
            sent = true;
        }
        if (err == IOCD_OK && topic2 != NULL) {
            err = outbox_prepare(ac->ob, topic2, in->fp, val.data, val.len, h, 7, &ac->scratch2,
                                 &ops[n_ops], &seq2);
            if (err == IOCD_ELIMIT) {
                err = IOCD_OK;
            } else if (err == IOCD_OK) {
                n_ops++;
                sent2 = true;
            }
        }
    }
    iocd_buf_init(&hookbody, 0);
    if (err == IOCD_OK && hook != NULL && ac->webhooks != NULL) {
        err = webhook_body(in, type, &val, &hookbody);
        if (err == IOCD_OK)
            err = webhooks_prepare(ac->webhooks, hook, hookbody.data, hookbody.len, &ac->scratch3,
                                   &ops[n_ops], &seqw);
        if (err == IOCD_ELIMIT) {
            err = IOCD_OK;
        } else if (err == IOCD_OK) {
            n_ops++;
            sentw = true;
        }
    }
    if (err == IOCD_OK)
        err = store_kv_write(ac->cfg.st, ops, n_ops);
    if (sentw) {
        if (err == IOCD_OK)
            webhooks_committed(ac->webhooks, seqw, hook, hookbody.data, hookbody.len);
        else
            webhooks_abandon(ac->webhooks, seqw);
    }
    iocd_buf_fini(&hookbody);
    if (sent) {
        if (err == IOCD_OK)
            outbox_committed(ac->ob, seq, topic, in->fp, val.data, val.len, h, 7);
        else
            outbox_abandon(ac->ob, seq);
    }
    if (sent2) {
        if (err == IOCD_OK)
            outbox_committed(ac->ob, seq2, topic2, in->fp, val.data, val.len, h, 7);
        else
            outbox_abandon(ac->ob, seq2);
    }
    if (err == IOCD_OK)
        log_info("alerts", "incident event", "id=%llu event=%s state=%s rule=%s%s",
                 (unsigned long long)in->id, type, state_names[in->state], in->rule,
                 held ? " held=1" : "");
    iocd_buf_fini(&rec);
    iocd_buf_fini(&val);
    iocd_buf_fini(&evid);
    return err;
}

/* An event that is always sent: operator actions, reports. */
static iocd_err commit_change(alert_center *ac, incident *in, const char *type, int64_t t_ms,
                              const char *by, const char *note)
{
    return commit_event(ac, in, type, t_ms, by, note, false, NULL);
}

/* The group wait and flap window for an incident: its route's, else the global ones (a
 * negative window: no flap detection). */
static int64_t group_wait_of(const alert_center *ac, const incident *in)
{
    const alert_route *r = route_for(ac, in);

    return r != NULL && r->group_wait_ms >= 0 ? r->group_wait_ms : ac->cfg.group_wait_ms;
}

static int64_t flap_window_of(const alert_center *ac, const incident *in)
{
    const alert_route *r = route_for(ac, in);

    if (r != NULL && r->flap_window_ms >= 0)
        return r->flap_window_ms > 0 ? r->flap_window_ms : -1;
    return ac->cfg.flap_window_ms;
}

/* ---- Flapping -------------------------------------------------------------------------------- */

/* Records a rule-driven state change at t_ms; true when it makes the incident flapping now. */
static bool flap_note(alert_center *ac, incident *in, int64_t t_ms)
{
    int k, n = 0;
    int64_t window = flap_window_of(ac, in);

    if (window < 0)
        return false;
    if (in->n_flap == FLAP_MAX) {
        memmove(in->flap_t, in->flap_t + 1, (FLAP_MAX - 1) * sizeof(*in->flap_t));
        in->n_flap--;
    }
    in->flap_t[in->n_flap++] = t_ms;
    for (k = 0; k < in->n_flap; k++)
        if (t_ms - in->flap_t[k] <= window)
            n++;
    if (in->flapping || n < ac->cfg.flap_changes)
        return false;
    in->flapping = true;
    iocd_metric_add(ac->m_flapping, 1);
    return true;
}

/* Rule-driven events of this incident are held back now. */
static bool held_now(const incident *in)
{
    return in->flapping || in->first_held;
}

/* ---- Inhibition ------------------------------------------------------------------------------ */

static bool selector_matches(const query_selector *sel, const char *labels, size_t len)
{
    size_t m;

    for (m = 0; m < sel->n; m++) {
        const char *v = iocd_label_value(labels, len, sel->m[m].name);
        if (v == NULL)
            v = "";
        if (!query_matcher_matches(&sel->m[m], v, strlen(v)))
            return false;
    }
    return true;
}

/* Whether an open incident that inhibits holds back an alert with these labels: its matchers
 * accept them and every "equal" label has the same value in both. Caller holds ac->mu. */
static const incident *inhibited_by(alert_center *ac, const char *labels, size_t len)
{
    size_t i;

    for (i = 0; i < ac->n; i++) {
        incident *src = ac->inc[i];
        const char *p;
        bool same = true;
        char why[256];
        if (src->inhibit == NULL || src->state == INC_RESOLVED)
            continue;
        if (!src->inhibit_parsed) {
            if (query_selector_parse(src->inhibit, &src->inhibit_sel, why, sizeof(why)) != IOCD_OK)
                continue;
            src->inhibit_parsed = true;
        }
        if (!selector_matches(&src->inhibit_sel, labels, len))
            continue;
        for (p = src->inhibit_equal; same && p != NULL && *p != '\0';) {
            const char *sep = strchr(p, '\x1f');
            char name[256];
            const char *a, *b;
            size_t n = sep != NULL ? (size_t)(sep - p) : strlen(p);
            snprintf(name, sizeof(name), "%.*s", (int)(n < 255 ? n : 255), p);
            a = iocd_label_value(labels, len, name);
            b = iocd_label_value(src->labels, src->labels_len, name);
            same = (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
            p = sep != NULL ? sep + 1 : p + n;
        }
        if (same)
            return src;
    }
    return NULL;
}

static char *join_names(char *const *names, size_t n)
{
    iocd_buf b;
    size_t i;

    iocd_buf_init(&b, 0);
    for (i = 0; i < n; i++) {
        if (i > 0)
            iocd_buf_putc(&b, '\x1f');
        iocd_buf_puts(&b, names[i]);
    }
    if (b.data == NULL)
        iocd_buf_puts(&b, "");
    return iocd_buf_take(&b, NULL);
}

/* ---- Devices --------------------------------------------------------------------------------- */

static bool missing(const char *s)
{
    return s == NULL || s[0] == '\0';
}

static void take_str(char **slot, char **from)
{
    if (*from == NULL)
        return;
    iocd_free(*slot);
    *slot = *from;
    *from = NULL;
}

/* What the registry knows of the incident's device (its kind, address and position, and the
 * ward and domain when the incident has none: "other" is a rule's domain when it names none).
 * info is taken (left empty). */
static void enrich(incident *in, device_info *info)
{
    take_str(&in->device_kind, &info->kind);
    take_str(&in->address, &info->address);
    if (missing(in->ward))
        take_str(&in->ward, &info->ward);
    if (missing(in->domain) || strcmp(in->domain, "other") == 0)
        take_str(&in->domain, &info->domain);
    in->has_position = info->has_position;
    in->latitude = info->latitude;
    in->longitude = info->longitude;
    device_info_fini(info);
}

alert_devices *alert_center_devices(alert_center *ac)
{
    return ac->devices;
}

/* Announces that an incident started flapping (this event is sent; the next rule-driven
 * ones are held until it settles). */
static iocd_err flapping_notice(alert_center *ac, incident *in, int64_t t_ms)
{
    char note[160];

    snprintf(note, sizeof(note),
             "flapping: %d state changes within %llds; its next changes are held until it "
             "stays %s for %llds",
             ac->cfg.flap_changes, (long long)(flap_window_of(ac, in) / 1000),
             state_names[in->state], (long long)(flap_window_of(ac, in) / 1000));
    return commit_event(ac, in, "updated", t_ms, "iocd", note, false, NULL);
}

/* ---- Muted alerts ---------------------------------------------------------------------------- */

/* A firing alert that a silence or an inhibition kept from opening an incident. The timer
 * checks it again each second: when nothing holds it back any more and it still fires, it
 * opens its incident then (so an alert silenced during maintenance is not forgotten when the
 * silence ends). Its resolution removes it. Kept in memory only: one held back across a
 * restart opens its incident when its rule next fires. */
#define MUTED_MAX 100000

typedef struct muted {
    char fp[17];
    alert_signal sig; /* owned copies of the strings */
    char *labels;
} muted;

static void muted_fini(muted *m)
{
    size_t i;

    iocd_free((char *)m->sig.rule);
    iocd_free(m->labels);
    iocd_free((char *)m->sig.summary);
    iocd_free((char *)m->sig.description);
    iocd_free((char *)m->sig.runbook);
    iocd_free((char *)m->sig.severity);
    iocd_free((char *)m->sig.domain);
    iocd_free((char *)m->sig.inhibit_match);
    iocd_free((char *)m->sig.query);
    for (i = 0; i < m->sig.n_inhibit_equal; i++)
        iocd_free(m->sig.inhibit_equal[i]);
    iocd_free((void *)m->sig.inhibit_equal);
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? iocd_strdup(s) : NULL;
}

static void muted_remove(alert_center *ac, const char *fp)
{
    size_t i;

    for (i = 0; i < ac->n_muted; i++)
        if (strcmp(ac->muted[i].fp, fp) == 0) {
            muted_fini(&ac->muted[i]);
            ac->muted[i] = ac->muted[--ac->n_muted];
            return;
        }
}

static void muted_add(alert_center *ac, const char *fp, const alert_signal *sig)
{
    muted m;
    char **eq = NULL;
    size_t i;

    muted_remove(ac, fp);
    if (ac->n_muted >= MUTED_MAX)
        return;
    if (ac->n_muted == ac->cap_muted) {
        size_t cap = ac->cap_muted != 0 ? ac->cap_muted * 2 : 64;
        muted *g = iocd_realloc(ac->muted, cap * sizeof(*g));
        if (g == NULL)
            return;
        ac->muted = g;
        ac->cap_muted = cap;
    }
    memset(&m, 0, sizeof(m));
    memcpy(m.fp, fp, sizeof(m.fp));
    m.sig = *sig;
    m.labels = iocd_malloc(sig->labels_len + 1);
    if (m.labels != NULL && sig->labels_len > 0)
        memcpy(m.labels, sig->labels, sig->labels_len);
    m.sig.labels = m.labels;
    m.sig.rule = dup_or_null(sig->rule);
    m.sig.summary = dup_or_null(sig->summary);
    m.sig.description = dup_or_null(sig->description);
    m.sig.runbook = dup_or_null(sig->runbook);
    m.sig.severity = dup_or_null(sig->severity);
    m.sig.domain = dup_or_null(sig->domain);
    m.sig.inhibit_match = dup_or_null(sig->inhibit_match);
    m.sig.query = dup_or_null(sig->query);
    if (sig->n_inhibit_equal > 0) {
        eq = iocd_calloc(sig->n_inhibit_equal, sizeof(*eq));
        for (i = 0; eq != NULL && i < sig->n_inhibit_equal; i++)
            eq[i] = iocd_strdup(sig->inhibit_equal[i]);
    }
    m.sig.inhibit_equal = eq;
    m.sig.n_inhibit_equal = eq != NULL ? sig->n_inhibit_equal : 0;
    if (m.labels == NULL || m.sig.rule == NULL) {
        muted_fini(&m);
        return;
    }
    ac->muted[ac->n_muted++] = m;
}

/* ---- Rule signals ------------------------------------------------------------------------- */

static void signal_locked(alert_center *ac, const alert_signal *sig, int64_t now_ms);

void alert_center_signal(alert_center *ac, const alert_signal *sig)
{
    pthread_mutex_lock(&ac->mu);
    signal_locked(ac, sig, iocd_now_ms());
    pthread_mutex_unlock(&ac->mu);
}

/* Caller holds ac->mu. */
static void signal_locked(alert_center *ac, const alert_signal *sig, int64_t now_ms)
{
    char fp[17];
    uint64_t h;
    incident *in;
    const char *ward = iocd_label_value(sig->labels, sig->labels_len, "ward");
    const char *device = iocd_label_value(sig->labels, sig->labels_len, "device");
    device_info info;
    iocd_err err = IOCD_OK;

    h = alert_fingerprint(sig->rule, sig->labels, sig->labels_len);
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)h);
    in = find_fp(ac, fp);
    if (ac->n_muted > 0)
        muted_remove(ac, fp); /* resolved, or firing again: decided afresh below */
    if (!sig->firing) {
        if (in != NULL && in->state != INC_RESOLVED) {
            /* Cleared within the group wait: a blip, and nothing was ever sent about it. */
            bool blip = in->first_held, flap = flap_note(ac, in, sig->t_ms);
            in->first_held = false;
            in->state = INC_RESOLVED;
            in->resolved_ms = sig->t_ms;
            set_str(&in->resolved_by, "rule");
            set_str(&in->resolve_reason, "the condition cleared");
            err = commit_event(ac, in, "resolved", sig->t_ms, "rule", "the condition cleared",
                               blip || in->flapping, NULL);
            if (err == IOCD_OK && flap)
                err = flapping_notice(ac, in, sig->t_ms);
            iocd_metric_add(ac->m_resolved, 1);
            iocd_metric_add(ac->m_open, -1);
        }
        goto out;
    }
    if ((in == NULL || in->state == INC_RESOLVED) &&
        silences_match(ac->silences, sig->labels, sig->labels_len, now_ms)) {
        muted_add(ac, fp, sig); /* checked again when the silence ends */
        goto out;               /* silenced: no incident, nothing sent */
    }
    if (in == NULL || in->state == INC_RESOLVED) {
        const incident *src = inhibited_by(ac, sig->labels, sig->labels_len);
        if (src != NULL) {
            muted_add(ac, fp, sig);
            iocd_metric_add(ac->m_inhibited, 1);
            log_debug("alerts", "alert inhibited", "rule=%s by=%llu", sig->rule,
                      (unsigned long long)src->id);
            goto out;
        }
    }
    if (in != NULL && in->state != INC_RESOLVED) { /* already open: nothing new to say */
        in->value = sig->value;
        if (sig->members > in->members) /* more of its group: announced by the timer */
            in->members = sig->members;
        goto out;
    }
    if (in != NULL && sig->t_ms - in->resolved_ms <= ac->cfg.reopen_window_ms) {
        bool flap = flap_note(ac, in, sig->t_ms);
        in->state = INC_FIRING;
        in->fired_ms = sig->t_ms;
        in->escalated_ms = 0;
        in->recurrences++;
        in->resolved_ms = 0;
        in->acked_ms = 0;
        set_str(&in->acked_by, NULL);
        set_str(&in->resolved_by, NULL);
        set_str(&in->resolve_reason, NULL);
        in->value = sig->value;
        set_str(&in->summary, sig->summary);
        err = commit_event(ac, in, "reopened", sig->t_ms, "rule", sig->summary, in->flapping, NULL);
        if (err == IOCD_OK && flap)
            err = flapping_notice(ac, in, sig->t_ms);
        iocd_metric_add(ac->m_opened, 1);
        iocd_metric_add(ac->m_open, 1);
        goto out;
    }
    in = iocd_calloc(1, sizeof(*in));
    if (in == NULL) {
        err = IOCD_ENOMEM;
        goto out;
    }
    in->id = ac->next_id;
    memcpy(in->fp, fp, sizeof(fp));
    in->rule = dup_capped(sig->rule);
    in->labels = iocd_malloc(sig->labels_len + 1);
    if (in->labels != NULL && sig->labels_len > 0)
        memcpy(in->labels, sig->labels, sig->labels_len);
    in->labels_len = sig->labels_len;
    in->severity = dup_capped(sig->severity);
    in->domain = dup_capped(sig->domain);
    in->ward = dup_capped(ward);
    in->summary = dup_capped(sig->summary);
    in->description = dup_capped(sig->description);
    in->runbook = sig->runbook != NULL && sig->runbook[0] != '\0' ? dup_capped(sig->runbook) : NULL;
    in->query = sig->query != NULL && sig->query[0] != '\0' ? dup_capped(sig->query) : NULL;
    in->value = sig->value;
    in->state = INC_FIRING;
    in->created_ms = in->fired_ms = sig->t_ms;
    if (!missing(device)) {
        in->device = dup_capped(device);
        if (devices_lookup(ac->devices, device, &info) == IOCD_OK)
            enrich(in, &info);
    }
    if (sig->inhibit_match != NULL) {
        in->inhibit = dup_capped(sig->inhibit_match);
        in->inhibit_equal = join_names(sig->inhibit_equal, sig->n_inhibit_equal);
    }
    in->first_held = in->labels != NULL && group_wait_of(ac, in) > 0; /* its route is known */
    if (in->rule == NULL || in->labels == NULL || add_incident(ac, in) != IOCD_OK) {
        incident_free(in);
        err = IOCD_ENOMEM;
        goto out;
    }
    err = commit_event(ac, in, "firing", sig->t_ms, "rule", sig->summary, in->first_held, NULL);
    iocd_metric_add(ac->m_opened, 1);
    iocd_metric_add(ac->m_open, 1);
out:
    if (err != IOCD_OK)
        log_error("alerts", "incident change not saved", "rule=%s err=%s", sig->rule,
                  iocd_strerror(err));
}

/* Muted alerts that nothing holds back any more open their incidents now. Caller holds mu. */
static void unmute(alert_center *ac, int64_t now_ms)
{
    size_t i = 0;

    while (i < ac->n_muted) {
        muted m = ac->muted[i];
        if (silences_hold(ac->silences, m.sig.labels, m.sig.labels_len, now_ms) ||
            inhibited_by(ac, m.sig.labels, m.sig.labels_len) != NULL) {
            i++;
            continue;
        }
        ac->muted[i] = ac->muted[--ac->n_muted]; /* slot i now holds another: check it next */
        m.sig.t_ms = now_ms;                     /* it becomes news now */
        log_info("alerts", "alert no longer silenced or inhibited", "rule=%s", m.sig.rule);
        signal_locked(ac, &m.sig, now_ms);
        muted_fini(&m);
    }
}

/* ---- Timed noise control ------------------------------------------------------------------ */

static const char *severity_up(const char *sev)
{
    return sev != NULL && strcmp(sev, "info") == 0 ? "warning" : "critical";
}

void alert_center_tick(alert_center *ac, int64_t now_ms)
{
    size_t i;
    iocd_err err = IOCD_OK;

    pthread_mutex_lock(&ac->mu);
    if (ac->n_muted > 0)
        unmute(ac, now_ms);
    for (i = 0; i < ac->n && err == IOCD_OK; i++) {
        incident *in = ac->inc[i];
        const alert_route *route;
        int64_t escalate_after, repeat;
        char note[200];
        if (in->state == INC_RESOLVED && !in->flapping)
            continue;
        if (in->first_held && now_ms - in->fired_ms >= group_wait_of(ac, in)) {
            in->first_held = false; /* the group wait is over: now it is news */
            err = commit_event(ac, in, "firing", now_ms, "iocd", in->summary, in->flapping, NULL);
            continue;
        }
        if (in->flapping && in->n_flap > 0 &&
            now_ms - in->flap_t[in->n_flap - 1] >=
                (flap_window_of(ac, in) > 0 ? flap_window_of(ac, in) : 0)) {
            in->flapping = false;
            snprintf(note, sizeof(note), "settled: %s for %llds", state_names[in->state],
                     (long long)((now_ms - in->flap_t[in->n_flap - 1]) / 1000));
            err = commit_event(ac, in, "updated", now_ms, "iocd", note, false, NULL);
            continue;
        }
        if (in->state != INC_RESOLVED && !held_now(in) && in->members > in->members_told &&
            in->members > 1 && ac->cfg.group_interval_ms > 0 &&
            now_ms - in->notified_ms >= ac->cfg.group_interval_ms) {
            snprintf(note, sizeof(note), "%zu alerts in this group now (was %zu)", in->members,
                     in->members_told > 0 ? in->members_told : 1);
            in->members_told = in->members;
            err = commit_event(ac, in, "updated", now_ms, "iocd", note, false, NULL);
            continue;
        }
        if (in->state != INC_FIRING || held_now(in))
            continue;
        route = route_for(ac, in);
        escalate_after = route != NULL && route->escalate_after_ms >= 0 ? route->escalate_after_ms
                                                                        : ac->cfg.escalate_after_ms;
        repeat = route != NULL && route->repeat_interval_ms >= 0 ? route->repeat_interval_ms
                                                                 : ac->cfg.repeat_interval_ms;
        if (escalate_after > 0 && in->severity != NULL && strcmp(in->severity, "critical") != 0 &&
            now_ms - (in->escalated_ms > 0 ? in->escalated_ms : in->fired_ms) >= escalate_after) {
            const char *to = severity_up(in->severity);
            snprintf(note, sizeof(note), "unacknowledged for %llds: severity %s -> %s",
                     (long long)((now_ms - in->fired_ms) / 1000), in->severity, to);
            set_str(&in->severity, to);
            in->escalated_ms = now_ms;
            iocd_metric_add(ac->m_escalated, 1);
            err = commit_event(ac, in, "escalated", now_ms, "iocd", note, false,
                               route != NULL && route->escalation_topic != NULL
                                   ? route->escalation_topic
                                   : ac->cfg.escalation_topic);
            continue;
        }
        if (repeat > 0 && now_ms - in->notified_ms >= repeat) {
            snprintf(note, sizeof(note), "still firing, unacknowledged for %llds",
                     (long long)((now_ms - in->fired_ms) / 1000));
            iocd_metric_add(ac->m_repeated, 1);
            err = commit_event(ac, in, "repeated", now_ms, "iocd", note, false, NULL);
        }
    }
    pthread_mutex_unlock(&ac->mu);
    if (err != IOCD_OK)
        log_error("alerts", "timed incident change not saved", "err=%s", iocd_strerror(err));
}

static void *ticker(void *arg)
{
    alert_center *ac = arg;

    pthread_mutex_lock(&ac->mu);
    while (!ac->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&ac->wake, &ac->mu, &ts);
        if (ac->stopping)
            break;
        pthread_mutex_unlock(&ac->mu);
        alert_center_tick(ac, iocd_now_ms());
        pthread_mutex_lock(&ac->mu);
    }
    pthread_mutex_unlock(&ac->mu);
    return NULL;
}

/* ---- Operator actions ----------------------------------------------------------------------- */

iocd_err alert_incident_act(alert_center *ac, uint64_t id, alert_action act, const char *by,
                            const char *text, iocd_buf *out, char *errbuf, size_t errlen)
{
    incident *in;
    int64_t now = iocd_now_ms();
    const char *type = "updated";
    iocd_err err = IOCD_OK;

    pthread_mutex_lock(&ac->mu);
    in = find_id(ac, id);
    if (in == NULL) {
        pthread_mutex_unlock(&ac->mu);
        snprintf(errbuf, errlen, "no incident %llu", (unsigned long long)id);
        return IOCD_ENOTFOUND;
    }
    switch (act) {
    case ALERT_ACK:
        if (in->state != INC_FIRING) {
            snprintf(errbuf, errlen, "incident %llu is %s, not firing", (unsigned long long)id,
                     state_names[in->state]);
            err = IOCD_EINVAL;
            break;
        }
        in->state = INC_ACKNOWLEDGED;
        in->acked_ms = now;
        set_str(&in->acked_by, by);
        set_str(&in->ack_note, text);
        type = "acknowledged";
        iocd_metric_add(ac->m_acked, 1);
        break;
    case ALERT_ASSIGN:
        if (text == NULL || text[0] == '\0') {
            snprintf(errbuf, errlen, "\"to\" names who is assigned");
            err = IOCD_EINVAL;
            break;
        }
        set_str(&in->assigned_to, text);
        break;
    case ALERT_RESOLVE:
        if (in->state == INC_RESOLVED) {
            snprintf(errbuf, errlen, "incident %llu is already resolved", (unsigned long long)id);
            err = IOCD_EINVAL;
            break;
        }
        in->state = INC_RESOLVED;
        in->resolved_ms = now;
        set_str(&in->resolved_by, by);
        set_str(&in->resolve_reason, text);
        type = "resolved";
        iocd_metric_add(ac->m_resolved, 1);
        iocd_metric_add(ac->m_open, -1);
        break;
    case ALERT_COMMENT:
        if (text == NULL || text[0] == '\0') {
            snprintf(errbuf, errlen, "\"text\" is the comment");
            err = IOCD_EINVAL;
        }
        break;
    }
    if (err == IOCD_OK) {
        in->first_held = false; /* an operator has seen it: its events go out from now on */
        err = commit_change(ac, in, type, now, by, text);
    }
    if (err == IOCD_OK && out != NULL)
        err = incident_json(in, true, out);
    pthread_mutex_unlock(&ac->mu);
    return err;
}

iocd_err alert_incident_report(alert_center *ac, const alert_report *r, iocd_buf *out, char *errbuf,
                               size_t errlen)
{
    incident *in = NULL;
    iocd_buf labels;
    int64_t now = iocd_now_ms();
    const char *sev = r->severity != NULL ? r->severity : "warning";
    const char *domain = r->domain, *ward = r->ward;
    device_info info;
    iocd_err err = IOCD_OK;

    memset(&info, 0, sizeof(info));
    if (!missing(r->device) && devices_lookup(ac->devices, r->device, &info) == IOCD_OK) {
        if (missing(domain)) /* a registered device says what and where */
            domain = info.domain;
        if (missing(ward))
            ward = info.ward;
    }
    if (missing(domain) || missing(r->description)) {
        snprintf(errbuf, errlen,
                 "a report needs \"domain\" (or a registered \"device\") and \"description\"");
        err = IOCD_EINVAL;
    } else if (strcmp(sev, "critical") != 0 && strcmp(sev, "warning") != 0 &&
               strcmp(sev, "info") != 0) {
        snprintf(errbuf, errlen, "\"severity\" must be critical, warning or info");
        err = IOCD_EINVAL;
    } else if ((in = iocd_calloc(1, sizeof(*in))) == NULL) {
        err = IOCD_ENOMEM;
    }
    if (err != IOCD_OK) {
        device_info_fini(&info);
        return err;
    }
    iocd_buf_init(&labels, 0); /* sorted by name */
    iocd_buf_append(&labels, "alertname\0field_report", 23);
    if (!missing(r->device)) {
        iocd_buf_append(&labels, "device", 7);
        iocd_buf_append(&labels, r->device, strlen(r->device) + 1);
    }
    iocd_buf_append(&labels, "domain", 7);
    iocd_buf_append(&labels, domain, strlen(domain) + 1);
    iocd_buf_append(&labels, "severity", 9);
    iocd_buf_append(&labels, sev, strlen(sev) + 1);
    if (!missing(ward)) {
        iocd_buf_append(&labels, "ward", 5);
        iocd_buf_append(&labels, ward, strlen(ward) + 1);
    }
    in->severity = dup_capped(sev);
    in->domain = dup_capped(domain);
    in->ward = dup_capped(ward);
    in->device = missing(r->device) ? NULL : dup_capped(r->device);
    enrich(in, &info); /* after the copies above: domain and ward may point into info */
    pthread_mutex_lock(&ac->mu);
    in->id = ac->next_id;
    snprintf(in->fp, sizeof(in->fp), "m%015llx", (unsigned long long)in->id);
    in->rule = iocd_strdup("field_report");
    in->labels_len = labels.len;
    in->labels = iocd_buf_take(&labels, NULL);
    in->location = dup_capped(r->location);
    in->description = dup_capped(r->description);
    in->summary = dup_capped(r->description);
    in->reporter = dup_capped(r->reporter);
    in->manual = true;
    in->value = NAN;
    in->state = INC_FIRING;
    in->created_ms = in->fired_ms = now;
    err = in->rule != NULL && in->labels != NULL ? add_incident(ac, in) : IOCD_ENOMEM;
    if (err != IOCD_OK) {
        pthread_mutex_unlock(&ac->mu);
        incident_free(in);
        return err;
    }
    err = commit_change(ac, in, "firing", now, r->reporter, r->description);
    iocd_metric_add(ac->m_opened, 1);
    iocd_metric_add(ac->m_open, 1);
    if (err == IOCD_OK && out != NULL)
        err = incident_json(in, true, out);
    pthread_mutex_unlock(&ac->mu);
    return err;
}

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
        if (!eq_or_any(f->state, state_names[in->state]) || !eq_or_any(f->domain, in->domain) ||
            !eq_or_any(f->ward, in->ward) || !eq_or_any(f->severity, in->severity) ||
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
    in = find_id(ac, id);
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
            err = put_str(b, rows[i].key);
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
        err = put_time(out, since_ms);
    if (err == IOCD_OK)
        err = iocd_buf_puts(out, ",\"until\":");
    if (err == IOCD_OK)
        err = put_time(out, until_ms);
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

/* ---- Opening -------------------------------------------------------------------------------- */

static iocd_err load_incident(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    alert_center *ac = ud;
    incident *in = NULL;
    iocd_err err;

    (void)key;
    (void)klen;
    err = incident_decode(val, vlen, &in);
    if (err == IOCD_ECORRUPT) {
        log_error("alerts", "a stored incident is corrupt and skipped", NULL);
        return IOCD_OK;
    }
    if (err == IOCD_OK)
        err = add_incident(ac, in);
    if (err != IOCD_OK)
        incident_free(in);
    else if (in->state != INC_RESOLVED)
        iocd_metric_add(ac->m_open, 1);
    return err;
}

iocd_err alert_center_open(const alert_config *cfg, alert_center **out, char *errbuf, size_t errlen)
{
    alert_center *ac = iocd_calloc(1, sizeof(*ac));
    iocd_err err;

    if (ac == NULL)
        return IOCD_ENOMEM;
    ac->cfg = *cfg;
    if (ac->cfg.topic == NULL || ac->cfg.topic[0] == '\0')
        ac->cfg.topic = "iocd.incidents";
    if (ac->cfg.source == NULL)
        ac->cfg.source = "/iocd";
    if (ac->cfg.reopen_window_ms <= 0)
        ac->cfg.reopen_window_ms = 3600000;
    if (ac->cfg.repeat_interval_ms == 0)
        ac->cfg.repeat_interval_ms = 3600000;
    if (ac->cfg.escalate_after_ms == 0)
        ac->cfg.escalate_after_ms = 15 * 60000;
    if (ac->cfg.flap_window_ms == 0)
        ac->cfg.flap_window_ms = 30 * 60000;
    if (ac->cfg.group_interval_ms == 0)
        ac->cfg.group_interval_ms = 30000;
    if (ac->cfg.flap_changes <= 0)
        ac->cfg.flap_changes = 6;
    if (ac->cfg.escalation_topic != NULL && ac->cfg.escalation_topic[0] == '\0')
        ac->cfg.escalation_topic = NULL;
    ac->next_id = 1;
    pthread_mutex_init(&ac->mu, NULL);
    pthread_cond_init(&ac->wake, NULL);
    iocd_buf_init(&ac->scratch, 0);
    iocd_buf_init(&ac->scratch2, 0);
    iocd_buf_init(&ac->scratch3, 0);
    if (cfg->n_routes > 0) {
        size_t r;
        ac->routes = iocd_calloc(cfg->n_routes, sizeof(*ac->routes));
        ac->route_sel = iocd_calloc(cfg->n_routes, sizeof(*ac->route_sel));
        if (ac->routes == NULL || ac->route_sel == NULL) {
            alert_center_close(ac);
            return IOCD_ENOMEM;
        }
        for (r = 0; r < cfg->n_routes; r++) {
            const alert_route *c = &cfg->routes[r];
            char why[200];
            ac->routes[r] = *c;
            ac->routes[r].match = dup_capped(c->match != NULL ? c->match : "");
            ac->routes[r].topic =
                c->topic != NULL && c->topic[0] != '\0' ? dup_capped(c->topic) : NULL;
            ac->routes[r].webhook =
                c->webhook != NULL && c->webhook[0] != '\0' ? dup_capped(c->webhook) : NULL;
            ac->routes[r].escalation_topic =
                c->escalation_topic != NULL && c->escalation_topic[0] != '\0'
                    ? dup_capped(c->escalation_topic)
                    : NULL;
            ac->n_routes = r + 1;
            if (query_selector_parse(ac->routes[r].match != NULL ? ac->routes[r].match : "",
                                     &ac->route_sel[r], why, sizeof(why)) != IOCD_OK) {
                snprintf(errbuf, errlen, "incidents: route %zu: %s", r + 1, why);
                alert_center_close(ac);
                return IOCD_EINVAL;
            }
        }
    }
    ac->m_opened = iocd_counter("iocd_incidents_opened_total", "Incidents opened or reopened.");
    ac->m_resolved = iocd_counter("iocd_incidents_resolved_total", "Incidents resolved.");
    ac->m_acked = iocd_counter("iocd_incidents_acknowledged_total", "Incidents acknowledged.");
    ac->m_open = iocd_gauge("iocd_incidents_open", "Incidents firing or acknowledged.");
    ac->m_inhibited = iocd_counter("iocd_alerts_inhibited_total",
                                   "Rule alerts held back by an open incident that inhibits them.");
    ac->m_held = iocd_counter("iocd_incident_events_held_total",
                              "Incident events recorded but not sent (group wait, flapping).");
    ac->m_repeated = iocd_counter("iocd_incident_repeats_total",
                                  "Repeated events of incidents firing and unacknowledged.");
    ac->m_escalated = iocd_counter("iocd_incident_escalations_total",
                                   "Incidents escalated for being unacknowledged too long.");
    ac->m_flapping =
        iocd_counter("iocd_incident_flapping_total", "Times an incident was found flapping.");
    err = store_kv_each(cfg->st, "incidents", load_incident, ac); /* keys ascend: ids in order */
    if (err == IOCD_OK)
        err = silences_open(cfg->st, cfg->tz_offset_s, &ac->silences);
    if (err == IOCD_OK)
        err = devices_open(cfg->st, cfg->devices_max, &ac->devices);
    if (err == IOCD_OK)
        err = outbox_open(cfg->st, cfg->kafka, cfg->outbox_max, &ac->ob);
    if (err == IOCD_OK)
        err = webhooks_open(cfg->st, cfg->outbox_max, &ac->webhooks);
    if (err != IOCD_OK) {
        snprintf(errbuf, errlen, "incidents: %s", iocd_strerror(err));
        alert_center_close(ac);
        return err;
    }
    if (!ac->cfg.no_ticker) {
        if (pthread_create(&ac->ticker, NULL, ticker, ac) != 0) {
            snprintf(errbuf, errlen, "incidents: cannot start the timer thread");
            alert_center_close(ac);
            return IOCD_ENOMEM;
        }
        ac->ticker_started = true;
    }
    log_info("alerts", "incidents loaded", "count=%zu next_id=%llu", ac->n,
             (unsigned long long)ac->next_id);
    *out = ac;
    return IOCD_OK;
}

void alert_center_close(alert_center *ac)
{
    size_t i;

    if (ac == NULL)
        return;
    if (ac->ticker_started) {
        pthread_mutex_lock(&ac->mu);
        ac->stopping = true;
        pthread_cond_signal(&ac->wake);
        pthread_mutex_unlock(&ac->mu);
        pthread_join(ac->ticker, NULL);
    }
    outbox_close(ac->ob);
    webhooks_close(ac->webhooks);
    silences_close(ac->silences);
    devices_close(ac->devices);
    for (i = 0; i < ac->n; i++)
        incident_free(ac->inc[i]);
    iocd_free(ac->inc);
    for (i = 0; i < ac->n_routes; i++) {
        iocd_free((char *)ac->routes[i].match);
        iocd_free((char *)ac->routes[i].topic);
        iocd_free((char *)ac->routes[i].escalation_topic);
        iocd_free((char *)ac->routes[i].webhook);
        query_selector_fini(&ac->route_sel[i]);
    }
    iocd_free(ac->routes);
    iocd_free(ac->route_sel);
    for (i = 0; i < ac->n_muted; i++)
        muted_fini(&ac->muted[i]);
    iocd_free(ac->muted);
    iocd_buf_fini(&ac->scratch);
    iocd_buf_fini(&ac->scratch2);
    iocd_buf_fini(&ac->scratch3);
    pthread_cond_destroy(&ac->wake);
    pthread_mutex_destroy(&ac->mu);
    iocd_free(ac);
}

/* ---- Silences through the center (the API's entry points) ---------------------------------- */

iocd_err alert_silence_add(alert_center *ac, const char *matchers, int64_t starts_ms,
                           int64_t ends_ms, const char *created_by, const char *comment,
                           iocd_buf *out, char *errbuf, size_t errlen)
{
    return silences_add(ac->silences, matchers, starts_ms, ends_ms, created_by, comment, out,
                        errbuf, errlen);
}

iocd_err alert_silence_add_recurring(alert_center *ac, const char *matchers, int64_t starts_ms,
                                     int64_t ends_ms, const char *every, const char *from,
                                     const char *to, const char *created_by, const char *comment,
                                     iocd_buf *out, char *errbuf, size_t errlen)
{
    return silences_add_recurring(ac->silences, matchers, starts_ms, ends_ms, every, from, to,
                                  created_by, comment, out, errbuf, errlen);
}

iocd_err alert_silence_expire(alert_center *ac, uint64_t id, iocd_buf *out)
{
    return silences_expire(ac->silences, id, out);
}

iocd_err alert_silences_list(alert_center *ac, iocd_buf *out)
{
    return silences_list(ac->silences, out);
}
