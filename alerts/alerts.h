/* alerts/alerts.h - incidents and their dispatch over Kafka. This header shows no
 * librdkafka type. Threads: a producer handle may be used from any thread. */
#ifndef IOCD_ALERTS_H
#define IOCD_ALERTS_H

#include "query/query.h"

typedef struct alert_kafka alert_kafka;

/* One librdkafka property passed through from the config file ("security.protocol"=...). */
typedef struct alert_kafka_prop {
    const char *key;
    const char *value;
} alert_kafka_prop;

/* Opens the incidents producer. brokers is a bootstrap list, or "mock" to start librdkafka's
 * mock cluster in this process (its bootstrap address is then alert_kafka_bootstrap()).
 * Errors: IOCD_EINVAL (a bad property or list; errbuf says which), IOCD_ENOMEM. */
iocd_err alert_kafka_open(const char *brokers, const alert_kafka_prop *props, size_t n_props,
                          alert_kafka **out, char *errbuf, size_t errlen);
/* The bootstrap servers in use (the mock cluster's address in mock mode). Borrowed. */
const char *alert_kafka_bootstrap(const alert_kafka *k);
/* Waits up to timeout_ms for queued messages, then frees. NULL is a no-op. */
void alert_kafka_close(alert_kafka *k, int timeout_ms);

/* A delivery report: the message tagged seq was acknowledged by the brokers (ok) or failed. */
typedef void (*alert_kafka_dr_fn)(void *ud, uint64_t seq, bool ok, const char *why);
/* Sets the report callback (called from alert_kafka_poll's thread). Call before producing. */
void alert_kafka_on_delivery(alert_kafka *k, alert_kafka_dr_fn fn, void *ud);

typedef struct alert_kafka_header {
    const char *name;
    const char *value;
} alert_kafka_header;

/* Queues one message (copied). Errors: IOCD_EAGAIN (librdkafka's queue is full: poll, then
 * retry), IOCD_EINVAL (a bad topic), IOCD_EIO. */
iocd_err alert_kafka_produce(alert_kafka *k, const char *topic, const void *key, size_t klen,
                             const void *val, size_t vlen, const alert_kafka_header *h, size_t nh,
                             uint64_t seq);
/* Serves delivery reports for up to timeout_ms. */
void alert_kafka_poll(alert_kafka *k, int timeout_ms);
/* Drops every message not yet delivered (each gets a failed report), so a sender can start
 * again in order. */
void alert_kafka_purge(alert_kafka *k);

/* ---- Incidents (alerts/incidents.c) and their dispatch (alerts/outbox.c) ------------------ */

typedef struct alert_center alert_center;

/* A route: incidents whose labels (with their current severity, domain and ward) match
 * `match` send their events to `topic` and use its settings; the first match wins. */
typedef struct alert_route {
    const char *match;            /* a selector without a metric name: {domain="water"} */
    const char *topic;            /* NULL: the incident topic */
    const char *escalation_topic; /* NULL: the global one */
    int64_t repeat_interval_ms, escalate_after_ms; /* -1: the global setting; 0: never */
    const char *webhook; /* also POST its events here (http:// or https://); NULL: no */
    int64_t group_wait_ms, flap_window_ms; /* -1: the global setting; 0: off */
} alert_route;

typedef struct alert_config {
    store *st;
    alert_kafka *kafka;       /* NULL: events stay in the outbox until dispatch exists */
    const char *topic;        /* default "iocd.incidents" */
    int64_t reopen_window_ms; /* a resolved incident firing again within this reopens; 0 = 1h */
    size_t outbox_max;        /* events waiting for delivery; 0 = 1,000,000 */
    const char *source;       /* CloudEvents source; default "/iocd" */
    size_t devices_max;       /* devices the registry holds at most; 0 = 100,000 */
    /* Noise control. For each duration 0 takes the default and a negative value turns it off. */
    int64_t group_wait_ms;        /* a new incident's first event waits this long, so a blip
                                     that clears within it sends nothing; default off */
    int64_t group_interval_ms;    /* series joining a firing group: an "updated" event at most
                                     this often; default 30 s */
    int64_t repeat_interval_ms;   /* "repeated" event while firing and unacknowledged; 1 h */
    int64_t escalate_after_ms;    /* unacknowledged this long: severity up one step and an
                                     "escalated" event (again after as long); default 15 min */
    const char *escalation_topic; /* escalated events also go here; NULL or "": not */
    int64_t flap_window_ms;       /* flapping: flap_changes state changes within it; 30 min */
    int flap_changes;             /* default 6; flapping holds rule-driven events back until
                                     no change for a whole window */
    bool no_ticker;               /* tests: no timer thread; the caller drives alert_center_tick */
    int tz_offset_s;              /* local time (recurring silences, stats by day); UTC+7 is
                                     25200 */
    const alert_route *routes;    /* copied by alert_center_open; invalid ones are refused */
    size_t n_routes;
} alert_config;

/* A rule's alert changing state (strings borrowed for the call). labels: "name\0value\0"
 * sorted, alertname/severity/domain included. */
typedef struct alert_signal {
    const char *rule;
    const char *labels;
    size_t labels_len;
    const char *summary, *description, *runbook, *severity, *domain;
    double value;
    int64_t t_ms;
    bool firing; /* false: resolved */
    /* Inhibition: while this alert's incident is open, alerts matching inhibit_match that
     * share the values of the inhibit_equal labels open no incident. NULL: none. */
    const char *inhibit_match;
    char *const *inhibit_equal;
    size_t n_inhibit_equal;
    const char *query; /* PromQL of the series behind it (shown with the incident); may be NULL */
    size_t members;    /* > 0: a series joined the firing group, which now has this many */
    bool restored;     /* firing across a restart, since t_ms: opens an incident only if this
                        * episode never had one (a silence or an inhibition held it back) */
} alert_signal;

/* Loads incidents and the outbox from the store and starts dispatch. Errors: IOCD_ENOMEM,
 * storage errors (errbuf). */
iocd_err alert_center_open(const alert_config *cfg, alert_center **out, char *errbuf,
                           size_t errlen);
/* Stops dispatch (undelivered events stay in the outbox) and frees. NULL is a no-op. */
void alert_center_close(alert_center *ac);
/* A rule alert fired or resolved: opens, updates, reopens or resolves its incident. */
void alert_center_signal(alert_center *ac, const alert_signal *sig);
/* The timed part of noise control at now_ms: group wait ends, repeats, escalations, flapping
 * settling. A thread calls it every second unless cfg.no_ticker. */
void alert_center_tick(alert_center *ac, int64_t now_ms);

/* Operator actions. by is who (required); text is the note, assignee or reason. */
typedef enum alert_action {
    ALERT_ACK,
    ALERT_ASSIGN,
    ALERT_RESOLVE,
    ALERT_COMMENT,
} alert_action;

/* Each writes the updated incident as JSON to out. Errors: IOCD_ENOTFOUND (no such id),
 * IOCD_EINVAL (the action does not apply, e.g. acknowledging a resolved incident; errbuf
 * says why), storage errors. */
iocd_err alert_incident_act(alert_center *ac, uint64_t id, alert_action act, const char *by,
                            const char *text, iocd_buf *out, char *errbuf, size_t errlen);
/* A manual incident (a citizen or field report). Fields: domain, ward, location,
 * description, reporter, severity, device (required: domain, description; a registered
 * device gives the domain and ward when the report has none). Writes it as JSON. */
typedef struct alert_report {
    const char *domain, *ward, *location, *description, *reporter, *severity, *device;
} alert_report;
iocd_err alert_incident_report(alert_center *ac, const alert_report *r, iocd_buf *out, char *errbuf,
                               size_t errlen);

typedef struct alert_filter {
    const char *state, *domain, *ward, *severity; /* NULL: any */
    int64_t since_ms, until_ms;                   /* created within; 0: unbounded */
    size_t limit, offset;                         /* paging; limit 0 = 100 */
} alert_filter;
/* {"incidents":[...],"total":N} newest first. */
iocd_err alert_incidents_list(alert_center *ac, const alert_filter *f, iocd_buf *out);
/* One incident with its event history. Errors: IOCD_ENOTFOUND. */
iocd_err alert_incident_get(alert_center *ac, uint64_t id, iocd_buf *out);
/* Counts by domain and ward, received/acknowledged/resolved, mean times to acknowledge and
 * to resolve, for incidents created in [since, until] (0: unbounded). */
iocd_err alert_incidents_stats(alert_center *ac, int64_t since_ms, int64_t until_ms, iocd_buf *out);

/* Silences: matchers is a selector without a metric name ({ward="phu_xa"}); 0 starts now.
 * A rule alert that fires under an active silence opens no incident. Errors: IOCD_EINVAL
 * (errbuf says why), IOCD_ELIMIT, storage errors. Each writes the silence as JSON. */
iocd_err alert_silence_add(alert_center *ac, const char *matchers, int64_t starts_ms,
                           int64_t ends_ms, const char *created_by, const char *comment,
                           iocd_buf *out, char *errbuf, size_t errlen);
/* A recurring silence (a mute window such as a nightly maintenance slot): it mutes only from
 * `from` to `to` (local "HH:MM"; to before from ends the next day) on the days of `every`
 * ("daily", "weekdays", "weekends", "mon,wed", "mon-fri"), between starts_ms (0: now) and
 * ends_ms (0: ten years, until expired by hand). Errors as alert_silence_add. */
iocd_err alert_silence_add_recurring(alert_center *ac, const char *matchers, int64_t starts_ms,
                                     int64_t ends_ms, const char *every, const char *from,
                                     const char *to, const char *created_by, const char *comment,
                                     iocd_buf *out, char *errbuf, size_t errlen);
/* Ends a silence now. Errors: IOCD_ENOTFOUND, storage errors. */
iocd_err alert_silence_expire(alert_center *ac, uint64_t id, iocd_buf *out);
/* Every silence (pending, active, expired), newest first: a JSON array. */
iocd_err alert_silences_list(alert_center *ac, iocd_buf *out);

/* ---- The device registry (alerts/devices.c) ------------------------------------------------ */

/* Devices by id, with kind, domain, ward, address and position. An incident created about a
 * registered device (a rule alert's "device" label, a report's device) carries these fields.
 * Every change is durable when the call returns. Any thread. */

typedef enum alert_devices_format {
    ALERT_DEVICES_CSV,  /* RFC 4180, a header row naming the columns */
    ALERT_DEVICES_JSON, /* an array of flat objects */
} alert_devices_format;

#define ALERT_DEVICES_ERRORS_MAX 20

typedef struct alert_devices_error {
    uint64_t line; /* where the row (CSV record, JSON object) starts, from 1 */
    char reason[200];
} alert_devices_error;

typedef struct alert_devices_result {
    size_t stored;   /* rows stored: devices added or updated */
    size_t rejected; /* rows refused */
    size_t removed;  /* devices a replacement dropped */
    size_t total;    /* devices in the registry afterwards */
    size_t n_errors; /* the rejections with the lowest line numbers */
    alert_devices_error errors[ALERT_DEVICES_ERRORS_MAX];
} alert_devices_result;

/* Loads an upload. replace: the registry becomes the valid rows (PUT); otherwise they add to
 * it or update it (POST). Valid rows are stored even when others are rejected (*res says
 * which, on which line and why); a replacement where every row is rejected changes nothing.
 * Errors: IOCD_EPARSE (the body as a whole is unusable, e.g. no "device" column or JSON that
 * does not parse; errbuf says where; nothing changed), IOCD_ENOMEM, storage errors (nothing
 * changed). */
iocd_err alert_devices_load(alert_center *ac, alert_devices_format fmt, const char *body,
                            size_t len, bool replace, alert_devices_result *res, char *errbuf,
                            size_t errlen);

typedef struct alert_device_filter {
    const char *ward, *domain, *kind; /* NULL or "": any */
    size_t limit, offset;             /* paging; limit 0 = all */
} alert_device_filter;
/* {"devices":[...],"total":N}, sorted by id; each device as it is uploaded in JSON. */
iocd_err alert_devices_list(alert_center *ac, const alert_device_filter *f, iocd_buf *out);
/* One device as JSON. Errors: IOCD_ENOTFOUND. */
iocd_err alert_device_get(alert_center *ac, const char *id, iocd_buf *out);
/* Removes one device and writes it as JSON. Errors: IOCD_ENOTFOUND, storage errors. */
iocd_err alert_device_delete(alert_center *ac, const char *id, iocd_buf *out);

/* ---- Commands from dispatch (alerts/kafka_commands.c) -------------------------------------- */

typedef struct alert_commands alert_commands;

/* Starts a consumer (group "iocd") of topic on bootstrap that applies each command to an
 * incident as the API would: {"id", "action": ack|assign|comment|resolve, "by", "note" | "to" |
 * "text" | "reason", "command_id" (optional: applied once)}. props are the config file's
 * librdkafka settings (producer-only ones are skipped). Errors: IOCD_EINVAL (errbuf says why),
 * IOCD_ENOMEM, storage errors. */
iocd_err alert_commands_start(alert_center *ac, store *st, const char *bootstrap,
                              const alert_kafka_prop *props, size_t n_props, const char *topic,
                              alert_commands **out, char *errbuf, size_t errlen);
/* Stops consuming (the offsets of applied commands are committed) and frees. NULL: no-op. */
void alert_commands_stop(alert_commands *c);
/* In mock mode, creates topic in the mock cluster (so a consumer can join before anyone
 * produces); otherwise does nothing. */
void alert_kafka_mock_topic(alert_kafka *k, const char *topic, int partitions);

/* ---- Alertmanager API v2: alerts from other systems (alerts/external.c) ------------------- */

/* Prometheus and vmalert post alerts as to an Alertmanager; each becomes an incident through
 * alert_center_signal: its rule is the alertname label, its labels as given, severity from the
 * severity label (critical, warning, info; other words mapped, default warning), domain from
 * the domain label (default "other"), summary, description and runbook from the annotations
 * summary, description and runbook_url. The fingerprint of an alert is its incident's. An
 * alert whose endsAt has passed resolves its incident; one not re-sent resolves when its
 * endsAt passes (no endsAt: 5 minutes after its last receipt). The active alerts are kept in
 * the data file and survive restarts. Any thread. */

#define ALERT_AM_BATCH_MAX  5000   /* alerts in one POST */
#define ALERT_AM_ACTIVE_MAX 100000 /* active alerts kept at once */
#define ALERT_AM_RECEIVER   "iocd" /* the one receiver iocd shows */

/* Loads ac's table of active alerts from st and starts the thread that resolves the expired
 * ones (every second). Call after alert_center_open; stop after the API has stopped and
 * before alert_center_close. Errors: IOCD_EEXIST (started already), IOCD_ENOMEM, storage
 * errors (errbuf says which). */
iocd_err alert_am_start(alert_center *ac, store *st, char *errbuf, size_t errlen);
void alert_am_stop(alert_center *ac); /* not started: no-op */

/* Applies a body of POST /api/v2/alerts: a JSON array of {labels, annotations, startsAt,
 * endsAt, generatorURL}. Errors (errbuf says why): IOCD_EPARSE (not a JSON array: nothing
 * applied), IOCD_ETOOBIG (over ALERT_AM_BATCH_MAX alerts: nothing applied), IOCD_EINVAL (some
 * alerts refused, e.g. without labels or an alertname; the others are applied), IOCD_EAGAIN
 * (not started), IOCD_ENOMEM and storage errors (nothing applied). */
iocd_err alert_am_alerts_post(alert_center *ac, const char *body, size_t len, char *errbuf,
                              size_t errlen);

typedef struct alert_am_filter {
    const char *const *matchers; /* Alertmanager's filter=: name="value", name=~"re", ... */
    size_t n_matchers;
    bool active, silenced; /* show active ones; show silenced ones */
    const char *receiver;  /* a regex the receiver must match; NULL: any */
} alert_am_filter;
/* The active alerts as Alertmanager's gettableAlerts (groups: its alertGroups, one group), a
 * silenced one "suppressed" with the ids of its silences. Errors: IOCD_EINVAL (a bad filter;
 * errbuf), IOCD_EAGAIN (not started), IOCD_ENOMEM. */
iocd_err alert_am_alerts_list(alert_center *ac, const alert_am_filter *f, bool groups,
                              iocd_buf *out, char *errbuf, size_t errlen);

/* A body of POST /api/v2/silences (Alertmanager's postableSilence: matchers [{name, value,
 * isRegex, isEqual}], startsAt, endsAt, createdBy, comment, and id to replace that silence)
 * through alert_silence_add; *id_out is the new silence. Errors (errbuf): IOCD_EPARSE,
 * IOCD_EINVAL, IOCD_ENOTFOUND (id names no silence), IOCD_ELIMIT, storage errors. */
iocd_err alert_am_silence_add(alert_center *ac, const char *body, size_t len, uint64_t *id_out,
                              char *errbuf, size_t errlen);
/* Every silence as Alertmanager's gettableSilences; filters as in alert_am_filter match the
 * labels a silence's equality matchers name. Errors: IOCD_EINVAL (a bad filter), IOCD_ENOMEM. */
iocd_err alert_am_silences_list(alert_center *ac, const char *const *filters, size_t n_filters,
                                iocd_buf *out, char *errbuf, size_t errlen);
/* One silence as a gettableSilence. Errors: IOCD_ENOTFOUND, IOCD_ENOMEM. */
iocd_err alert_am_silence_get(alert_center *ac, uint64_t id, iocd_buf *out);

#endif
