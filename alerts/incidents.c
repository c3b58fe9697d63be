/* alerts/incidents.c - incidents: one per real-world problem (a rule plus its grouping labels,
 * hashed into a fingerprint), with a lifecycle dispatchers follow: firing -> acknowledged ->
 * resolved (by the rule clearing or by an operator), reopened when it fires again within the
 * reopen window. Manual incidents come from citizen or field reports. Every change is stored
 * (table "incidents") in the same transaction as the event that announces it (the outbox),
 * so a state change and its Kafka event are never one without the other. An incident about a
 * registered device carries what the device registry knows of it (kind, address, position).
 * Invariant: ac->mu is held across a change's sequence assignment, store write and queueing,
 * so events leave in the order their changes happened. Beside it: incidents_codec.c,
 * incidents_noise.c, incidents_read.c (alerts_int.h says what each holds). */
#include "alerts/alerts_int.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define HISTORY_MAX 200

const char *const incident_state_names[] = { "firing", "acknowledged", "resolved" };

/* ---- Small helpers ------------------------------------------------------------------------- */

static char *dup_capped(const char *s)
{
    size_t n;
    char *d;

    if (s == NULL)
        return NULL;
    n = strlen(s);
    if (n > INCIDENT_STR_MAX)
        n = INCIDENT_STR_MAX;
    d = iocd_malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

void incident_set_str(char **slot, const char *s)
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

void incident_free(incident *in)
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

incident *incident_find_id(alert_center *ac, uint64_t id)
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

iocd_err incident_history_add(incident *in, const char *type, int64_t t_ms, const char *by,
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

/* ---- Changes: the incident and its event, in one transaction ------------------------------ */

/* Stores in and, unless held, queues event `type` to the incidents topic and to topic2 (when
 * not NULL); by/note go to the history. Caller holds ac->mu. */
iocd_err incident_commit_event(alert_center *ac, incident *in, const char *type, int64_t t_ms,
                               const char *by, const char *note, bool held, const char *topic2)
{
    iocd_buf rec, val, evid;
    char idkey[8], ce_type[64], ce_time[40], ce_subject[32], ce_id[64];
    store_kv_op ops[4];
    alert_kafka_header h[7];
    uint64_t seq = 0, seq2 = 0, seqw = 0;
    size_t n_ops = 1;
    const alert_route *route = incident_route(ac, in);
    const char *topic = route != NULL && route->topic != NULL ? route->topic : ac->cfg.topic;
    const char *hook = held || route == NULL ? NULL : route->webhook;
    iocd_buf hookbody;
    bool sent = false, sent2 = false, sentw = false;
    int i;
    iocd_err err;

    in->updated_ms = t_ms;
    err = incident_history_add(in, type, t_ms, by, note);
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
        err = incident_json_field(&val, "by", by);
    if (err == IOCD_OK)
        err = incident_json_field(&val, "note", note);
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
        err = incident_webhook_body(in, type, &val, &hookbody);
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
                 (unsigned long long)in->id, type, incident_state_names[in->state], in->rule,
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
    return incident_commit_event(ac, in, type, t_ms, by, note, false, NULL);
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

/* ---- Muted alerts ---------------------------------------------------------------------------- */

/* A firing alert that a silence or an inhibition kept from opening an incident. The timer
 * checks it again each second: when nothing holds it back any more and it still fires, it
 * opens its incident then (so an alert silenced during maintenance is not forgotten when the
 * silence ends). Its resolution removes it. Kept in memory: after a restart the rule engine
 * tells its still-firing alerts again (alert_signal.restored), which holds them back anew. */
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
    if (sig->restored && in != NULL && (in->state != INC_RESOLVED || in->resolved_ms >= sig->t_ms))
        goto out; /* this episode has its incident (open, or resolved by an operator) */
    if (!sig->firing) {
        if (in != NULL && in->state != INC_RESOLVED) {
            /* Cleared within the group wait: a blip, and nothing was ever sent about it. */
            bool blip = in->first_held, flap = incident_flap_note(ac, in, sig->t_ms);
            in->first_held = false;
            in->state = INC_RESOLVED;
            in->resolved_ms = sig->t_ms;
            incident_set_str(&in->resolved_by, "rule");
            incident_set_str(&in->resolve_reason, "the condition cleared");
            err = incident_commit_event(ac, in, "resolved", sig->t_ms, "rule",
                                        "the condition cleared", blip || in->flapping, NULL);
            if (err == IOCD_OK && flap)
                err = incident_flapping_notice(ac, in, sig->t_ms);
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
        bool flap = incident_flap_note(ac, in, sig->t_ms);
        in->state = INC_FIRING;
        in->fired_ms = sig->t_ms;
        in->escalated_ms = 0;
        in->recurrences++;
        in->resolved_ms = 0;
        in->acked_ms = 0;
        incident_set_str(&in->acked_by, NULL);
        incident_set_str(&in->resolved_by, NULL);
        incident_set_str(&in->resolve_reason, NULL);
        in->value = sig->value;
        incident_set_str(&in->summary, sig->summary);
        err = incident_commit_event(ac, in, "reopened", sig->t_ms, "rule", sig->summary,
                                    in->flapping, NULL);
        if (err == IOCD_OK && flap)
            err = incident_flapping_notice(ac, in, sig->t_ms);
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
    in->first_held = in->labels != NULL && incident_group_wait(ac, in) > 0; /* its route is known */
    if (in->rule == NULL || in->labels == NULL || add_incident(ac, in) != IOCD_OK) {
        incident_free(in);
        err = IOCD_ENOMEM;
        goto out;
    }
    err = incident_commit_event(ac, in, "firing", sig->t_ms, "rule", sig->summary, in->first_held,
                                NULL);
    iocd_metric_add(ac->m_opened, 1);
    iocd_metric_add(ac->m_open, 1);
out:
    if (err != IOCD_OK)
        log_error("alerts", "incident change not saved", "rule=%s err=%s", sig->rule,
                  iocd_strerror(err));
}

/* Muted alerts that nothing holds back any more open their incidents now. Caller holds mu. */
void incidents_unmute(alert_center *ac, int64_t now_ms)
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

/* ---- Operator actions ----------------------------------------------------------------------- */

iocd_err alert_incident_act(alert_center *ac, uint64_t id, alert_action act, const char *by,
                            const char *text, iocd_buf *out, char *errbuf, size_t errlen)
{
    incident *in;
    int64_t now = iocd_now_ms();
    const char *type = "updated";
    iocd_err err = IOCD_OK;

    pthread_mutex_lock(&ac->mu);
    in = incident_find_id(ac, id);
    if (in == NULL) {
        pthread_mutex_unlock(&ac->mu);
        snprintf(errbuf, errlen, "no incident %llu", (unsigned long long)id);
        return IOCD_ENOTFOUND;
    }
    switch (act) {
    case ALERT_ACK:
        if (in->state != INC_FIRING) {
            snprintf(errbuf, errlen, "incident %llu is %s, not firing", (unsigned long long)id,
                     incident_state_names[in->state]);
            err = IOCD_EINVAL;
            break;
        }
        in->state = INC_ACKNOWLEDGED;
        in->acked_ms = now;
        incident_set_str(&in->acked_by, by);
        incident_set_str(&in->ack_note, text);
        type = "acknowledged";
        iocd_metric_add(ac->m_acked, 1);
        break;
    case ALERT_ASSIGN:
        if (text == NULL || text[0] == '\0') {
            snprintf(errbuf, errlen, "\"to\" names who is assigned");
            err = IOCD_EINVAL;
            break;
        }
        incident_set_str(&in->assigned_to, text);
        break;
    case ALERT_RESOLVE:
        if (in->state == INC_RESOLVED) {
            snprintf(errbuf, errlen, "incident %llu is already resolved", (unsigned long long)id);
            err = IOCD_EINVAL;
            break;
        }
        in->state = INC_RESOLVED;
        in->resolved_ms = now;
        incident_set_str(&in->resolved_by, by);
        incident_set_str(&in->resolve_reason, text);
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
        if (pthread_create(&ac->ticker, NULL, incidents_ticker, ac) != 0) {
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
