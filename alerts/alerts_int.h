/* alerts/alerts_int.h - shared by the files of alerts/ only: the outbox, webhooks, silences,
 * the device registry, external alerts, and the incident center's structs. */
#ifndef IOCD_ALERTS_INT_H
#define IOCD_ALERTS_INT_H

#include "alerts/alerts.h"

/* The outbox: events written to the store in the same transaction as the state change they
 * announce, sent in sequence by a dispatch thread, deleted after their delivery report.
 * Invariant: sequence numbers are assigned and committed in order (the caller holds its own
 * lock across prepare, the store write and committed). */
typedef struct alert_outbox alert_outbox;

/* Loads undelivered events and starts the dispatch thread (when k is not NULL).
 * Errors: IOCD_ENOMEM, storage errors. */
iocd_err outbox_open(store *st, alert_kafka *k, size_t max, alert_outbox **out);
void outbox_close(alert_outbox *ob);
/* Encodes an event for the store: *op refers to memory in scratch (valid until the next
 * prepare with the same scratch); *seq_out is its sequence. Errors: IOCD_ELIMIT (the outbox
 * is full), IOCD_ENOMEM. */
iocd_err outbox_prepare(alert_outbox *ob, const char *topic, const char *key, const char *value,
                        size_t vlen, const alert_kafka_header *h, size_t nh, iocd_buf *scratch,
                        store_kv_op *op, uint64_t *seq_out);
/* The prepared event is durable: queue it for sending. */
void outbox_committed(alert_outbox *ob, uint64_t seq, const char *topic, const char *key,
                      const char *value, size_t vlen, const alert_kafka_header *h, size_t nh);
/* The store write failed: the sequence is given back. */
void outbox_abandon(alert_outbox *ob, uint64_t seq);

/* Webhooks (alerts/webhooks.c): events POSTed in Alertmanager's webhook format, stored in the
 * same transaction as their change (table "webhooks"), sent strictly in order, each retried
 * until its endpoint answers 2xx. Same calling pattern as the outbox. max 0 = 1,000,000. */
typedef struct alert_webhooks alert_webhooks;
iocd_err webhooks_open(store *st, size_t max, alert_webhooks **out);
void webhooks_close(alert_webhooks *wh); /* NULL is a no-op */
/* Errors: IOCD_ELIMIT (the queue is full; logged and counted), IOCD_ENOMEM. */
iocd_err webhooks_prepare(alert_webhooks *wh, const char *url, const char *body, size_t len,
                          iocd_buf *scratch, store_kv_op *op, uint64_t *seq_out);
void webhooks_committed(alert_webhooks *wh, uint64_t seq, const char *url, const char *body,
                        size_t len);
void webhooks_abandon(alert_webhooks *wh, uint64_t seq);

/* An incident's fingerprint (alerts/incidents.c): FNV-1a over the rule, a 0xff byte and the
 * label set ("name\0value\0" sorted), shown as 16 hex digits. */
uint64_t alert_fingerprint(const char *rule, const char *labels, size_t len);

/* ---- Silences (alerts/silences.c) ---------------------------------------------------------- */

#include <pthread.h>

typedef struct alert_silences alert_silences;

/* tz_offset_s: local time for recurring silences' windows. */
iocd_err silences_open(store *st, int tz_offset_s, alert_silences **out);
void silences_close(alert_silences *ss);
/* Whether an active silence matches labels at t_ms (counted when it does). */
bool silences_match(alert_silences *ss, const char *labels, size_t len, int64_t t_ms);
/* The same, not counted (for checking an alert again). */
bool silences_hold(alert_silences *ss, const char *labels, size_t len, int64_t t_ms);
/* Errors: IOCD_EINVAL (errbuf says why), IOCD_ELIMIT, storage errors. Writes the silence. */
iocd_err silences_add(alert_silences *ss, const char *matchers, int64_t starts_ms, int64_t ends_ms,
                      const char *created_by, const char *comment, iocd_buf *out, char *errbuf,
                      size_t errlen);
/* A recurring one when every/from/to are given (see alert_silence_add_recurring). */
iocd_err silences_add_recurring(alert_silences *ss, const char *matchers, int64_t starts_ms,
                                int64_t ends_ms, const char *every, const char *from,
                                const char *to, const char *created_by, const char *comment,
                                iocd_buf *out, char *errbuf, size_t errlen);
/* Ends it now. Errors: IOCD_ENOTFOUND, storage errors. Writes the silence. */
iocd_err silences_expire(alert_silences *ss, uint64_t id, iocd_buf *out);
/* All, newest first, as a JSON array. */
iocd_err silences_list(alert_silences *ss, iocd_buf *out);

/* ---- Devices (alerts/devices.c) ------------------------------------------------------------ */

typedef struct alert_devices alert_devices;

/* Loads the registry from the store (table "devices"); max 0 = 100,000.
 * Errors: IOCD_ENOMEM, storage errors. */
iocd_err devices_open(store *st, size_t max, alert_devices **out);
void devices_close(alert_devices *ds); /* NULL is a no-op */

/* What an incident copies from the registry: owned copies, NULL when the registry has none. */
typedef struct device_info {
    char *kind, *domain, *ward, *address;
    double latitude, longitude;
    bool has_position;
} device_info;
/* Copies the entry of device id into *out (release with device_info_fini); counted in
 * iocd_device_lookups_total. Errors: IOCD_ENOTFOUND, IOCD_ENOMEM. */
iocd_err devices_lookup(alert_devices *ds, const char *id, device_info *out);
void device_info_fini(device_info *d);

/* The registry of a center (alerts/incidents.c owns it). */
alert_devices *alert_center_devices(alert_center *ac);

/* Uploads, parsed. Fields of a row, in this order everywhere (the stored form too). */
enum {
    DEV_ID,
    DEV_KIND,
    DEV_DOMAIN,
    DEV_WARD,
    DEV_ADDRESS,
    DEV_LATITUDE,
    DEV_LONGITUDE,
    DEV_NFIELDS,
};

/* A row that passed every check: a non-empty id, each field valid UTF-8 without control
 * characters and within its cap, latitude and longitude both given (in range) or neither.
 * f[] is "" where the row gives nothing. Borrowed for the call. */
typedef struct device_row {
    uint64_t line;
    const char *f[DEV_NFIELDS];
    double latitude, longitude;
    bool has_position;
} device_row;

typedef struct device_sink {
    iocd_err (*row)(void *ud, const device_row *r); /* an error stops the parse (returned) */
    void (*reject)(void *ud, uint64_t line, const char *reason);
    void *ud;
} device_sink;

/* Parse text, calling the sink for each row in order; a bad row is rejected with its line
 * and parsing goes on. Errors: IOCD_EPARSE when the body as a whole is unusable (CSV: no
 * header row or no device column; JSON: not an array, or broken so that items cannot be
 * told apart), with errbuf saying where; IOCD_ENOMEM; a sink error. */
iocd_err devices_parse_csv(const char *text, size_t len, const device_sink *sink, char *errbuf,
                           size_t errlen);
iocd_err devices_parse_json(const char *text, size_t len, const device_sink *sink, char *errbuf,
                            size_t errlen);

/* ---- Alerts from other systems (alerts/external.c) ----------------------------------------- */

/* One alert of a POST /api/v2/alerts body that passed the checks: labels (at least one, with
 * an alertname) and annotations as "name\0value\0" sorted by name, names valid, values
 * within their caps, startsAt not after endsAt. Borrowed for the call. */
typedef struct external_alert {
    size_t index; /* in the body, from 1 */
    const char *rule;
    const char *labels, *annotations;
    size_t labels_len, annotations_len;
    const char *generator_url;  /* "" when none */
    int64_t starts_ms, ends_ms; /* 0: not given (absent, null or Go's zero time) */
} external_alert;

typedef struct external_sink {
    iocd_err (*alert)(void *ud, const external_alert *a); /* an error stops the parse */
    void (*reject)(void *ud, size_t index, const char *reason);
    void *ud;
} external_sink;

/* Parses a body, calling the sink for each alert in order. Errors: IOCD_EPARSE (not a JSON
 * array; errbuf says where), IOCD_ETOOBIG (over ALERT_AM_BATCH_MAX alerts or too many
 * values), IOCD_ENOMEM, a sink error. */
iocd_err external_parse(const char *text, size_t len, const external_sink *sink, char *errbuf,
                        size_t errlen);
/* Resolves every alert of ac's table whose endsAt is at or before now_ms (the sweeper calls
 * it each second with iocd_now_ms()); returns how many. */
size_t external_sweep(alert_center *ac, int64_t now_ms);
/* Whether s is a valid label name (Prometheus' syntax, at most 200 bytes). */
bool external_name_valid(const char *s);

/* ---- Alertmanager's matchers and silences (alerts/external_silences.c) --------------------- */

/* A selector's first matcher on this name lets a filter match the empty string (PromQL
 * refuses a selector of only such matchers); external_sel_matches is told to skip it. */
#define EXTERNAL_ANY_LABEL "__iocd_any__"

/* Appends s as a PromQL double-quoted string. Errors: those of iocd_buf. */
iocd_err external_put_quoted(iocd_buf *b, const char *s);
/* Whether every matcher of sel (but those named skip, which may be NULL) accepts labels. */
bool external_sel_matches(const query_selector *sel, const char *labels, size_t len,
                          const char *skip);
/* Alertmanager's filter= values (alertname="x", severity=~"crit.*", job=api, or a {...} list)
 * as one selector led by EXTERNAL_ANY_LABEL; *sel is the caller's (query_selector_fini).
 * Errors: IOCD_EINVAL (errbuf says why), IOCD_ENOMEM. */
iocd_err external_filter_parse(const char *const *filters, size_t n, query_selector *sel,
                               char *errbuf, size_t errlen);

/* The active silences of a center, with their selectors parsed; owned by the caller. */
typedef struct external_silence {
    char id[24];
    query_selector sel;
} external_silence;

typedef struct external_silences {
    external_silence *s;
    size_t n;
} external_silences;

/* Errors: IOCD_ENOMEM, IOCD_ECORRUPT (logged), those of alert_silences_list; *out is empty. */
iocd_err external_silences_active(alert_center *ac, external_silences *out);
void external_silences_fini(external_silences *ss);

/* ---- Incidents (alerts/incidents*.c) ------------------------------------------------------- */

/* The center is split by concern: lifecycle, rule signals, inhibition and muted alerts,
 * operator actions, reports, opening and closing (incidents.c); an incident's JSON, webhook
 * and stored forms (incidents_codec.c); routes and noise control with its timer thread
 * (incidents_noise.c); the API's reads (incidents_read.c). Unless a comment says otherwise,
 * the caller of each function below holds ac->mu. */

#define INCIDENT_STR_MAX  4096 /* longest text field kept */
#define INCIDENT_FLAP_MAX 32   /* state changes remembered for flap detection */

typedef enum inc_state {
    INC_FIRING,
    INC_ACKNOWLEDGED,
    INC_RESOLVED,
} inc_state;

extern const char *const incident_state_names[]; /* by inc_state: "firing", ... */

typedef struct inc_event {
    char *type;
    int64_t t_ms;
    char *by, *note;
    bool held; /* recorded, not sent (group wait, flapping) */
} inc_event;

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
    int64_t flap_t[INCIDENT_FLAP_MAX]; /* times of its latest state changes, oldest first */
    int n_flap;
} incident;

/* The incident center (opaque outside alerts/). */
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

/* incidents.c. A copy of s cut at INCIDENT_STR_MAX bytes replaces *slot (NULL for NULL, and
 * when out of memory). */
void incident_set_str(char **slot, const char *s);
void incident_free(incident *in); /* NULL is a no-op */
/* The incident with this id, or NULL. */
incident *incident_find_id(alert_center *ac, uint64_t id);
/* Appends to the history, which keeps the first and the latest events (at most 200).
 * Errors: IOCD_ENOMEM. */
iocd_err incident_history_add(incident *in, const char *type, int64_t t_ms, const char *by,
                              const char *note);
/* Stores in and, unless held, queues event `type` to the incidents topic (its route's or the
 * center's), to topic2 (when not NULL) and to its route's webhook; by/note go to the history.
 * Errors: storage errors, IOCD_ENOMEM. */
iocd_err incident_commit_event(alert_center *ac, incident *in, const char *type, int64_t t_ms,
                               const char *by, const char *note, bool held, const char *topic2);
/* Muted alerts that nothing holds back any more open their incidents now. */
void incidents_unmute(alert_center *ac, int64_t now_ms);

/* incidents_codec.c. JSON values: s as a string (null for NULL); t_ms as RFC 3339 (null when
 * not after the epoch); ,"name": and s. Errors: those of iocd_buf. */
iocd_err incident_json_str(iocd_buf *b, const char *s);
iocd_err incident_json_time(iocd_buf *b, int64_t t_ms);
iocd_err incident_json_field(iocd_buf *b, const char *name, const char *s);
/* The incident as the API and the events show it; with its events when history. */
iocd_err incident_json(const incident *in, bool history, iocd_buf *b);
/* An event in Alertmanager's webhook format: one group, one alert (the incident's labels and
 * annotations), and event (the iocd event's JSON) under "iocd". */
iocd_err incident_webhook_body(const incident *in, const char *type, const iocd_buf *event,
                               iocd_buf *b);
/* The stored record, appended to b. */
iocd_err incident_encode(const incident *in, iocd_buf *b);
/* A stored record; on success *out is the caller's (incident_free).
 * Errors: IOCD_ECORRUPT (a broken pair, no id or no rule), IOCD_ENOMEM. */
iocd_err incident_decode(const char *p, size_t len, incident **out);

/* incidents_noise.c. The first route matching the incident (its labels, with its current
 * severity, domain and ward), or NULL; borrowed from ac. */
const alert_route *incident_route(const alert_center *ac, const incident *in);
/* The group wait for an incident: its route's, else the center's. */
int64_t incident_group_wait(const alert_center *ac, const incident *in);
/* Records a rule-driven state change at t_ms; true when it makes the incident flapping now. */
bool incident_flap_note(alert_center *ac, incident *in, int64_t t_ms);
/* Sends the event saying the incident is flapping. Errors: those of incident_commit_event. */
iocd_err incident_flapping_notice(alert_center *ac, incident *in, int64_t t_ms);
/* The timer thread (arg: the center): alert_center_tick each second until ac->stopping; it
 * takes ac->mu itself. */
void *incidents_ticker(void *arg);

#endif
