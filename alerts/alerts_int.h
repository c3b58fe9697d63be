/* alerts/alerts_int.h - shared by the files of alerts/ only: the outbox, silences and the
 * device registry. */
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

#endif
