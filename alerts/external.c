/* alerts/external.c - alerts from other systems, in Alertmanager's API v2 shapes, so that
 * Prometheus and vmalert can send to iocd as to an Alertmanager. A posted alert becomes an
 * incident through alert_center_signal (its rule is the alertname label). The alerts still
 * active are kept by fingerprint in a table of the data file ("am_alerts") with their endsAt,
 * and a sweeper thread resolves each one whose endsAt passes without a re-send (no endsAt:
 * 5 minutes after the last one, Alertmanager's resolve_timeout). Silences in Alertmanager's
 * shape and the matchers are in alerts/external_silences.c.
 * Invariant: an alert is stored before its firing signal and deleted only after its resolving
 * one, so a crash in between is repaired by the next re-send or the next sweep. Lock order:
 * a table's mu, then the center's (alert_center_signal is called with mu held, so a POST and
 * the sweeper never interleave their signals). */
#include "alerts/alerts_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TABLE              "am_alerts"
#define RESOLVE_TIMEOUT_MS (5 * 60 * 1000) /* Alertmanager's default resolve_timeout */
#define SWEEP_INTERVAL_MS  1000
#define LABELS_MAX         64    /* labels (and annotations) of one alert */
#define LABEL_NAME_MAX     200   /* bytes of a name; the stored form prefixes two */
#define LABEL_VALUE_MAX    4096  /* bytes of a label value */
#define ANNOTATION_MAX     16384 /* bytes of an annotation value */
#define URL_MAX            4096  /* bytes of a generatorURL */
#define ALERT_BYTES_MAX    65536 /* one alert's labels, annotations and URL together */
#define POST_NODES_MAX     500000
#define REASONS_SHOWN      3 /* refused alerts named in the answer */

/* ---- Label sets --------------------------------------------------------------------------- */

typedef struct lpair {
    const char *name, *value;
} lpair;

static int lpair_cmp(const void *a, const void *b)
{
    return strcmp(((const lpair *)a)->name, ((const lpair *)b)->name);
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

bool external_name_valid(const char *s)
{
    size_t i;

    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
        return false;
    for (i = 1; s[i] != '\0'; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_' ||
              is_digit(s[i])))
            return false;
    return i <= LABEL_NAME_MAX;
}

/* A labelSet object ({"name": "value"}) as "name\0value\0" sorted by name, appended to out.
 * An empty value is no label (as in Prometheus). False, with why, when it is not valid. */
static bool labelset(const iocd_jdoc *d, uint32_t obj, const char *what, size_t value_max,
                     iocd_buf *out, size_t *n_out, char *why, size_t whylen)
{
    lpair pairs[LABELS_MAX];
    size_t n = 0, i;
    uint32_t c;

    if (d->node[obj].kind != IOCD_J_OBJ) {
        snprintf(why, whylen, "%s must be an object of strings", what);
        return false;
    }
    for (c = d->node[obj].child; c != IOCD_JNONE; c = d->node[c].next) {
        const char *name = iocd_jdoc_text(d, d->node[c].key), *value = iocd_jdoc_str(d, c);
        if (value == NULL) {
            snprintf(why, whylen, "%s: the value of \"%.100s\" must be a string", what, name);
            return false;
        }
        if (!external_name_valid(name)) {
            snprintf(why, whylen, "%s: invalid name \"%.100s\"", what, name);
            return false;
        }
        if (strlen(value) > value_max) {
            snprintf(why, whylen, "%s: the value of %s is longer than %zu bytes", what, name,
                     value_max);
            return false;
        }
        if (value[0] == '\0')
            continue;
        if (n == LABELS_MAX) {
            snprintf(why, whylen, "%s: more than %d", what, LABELS_MAX);
            return false;
        }
        pairs[n].name = name;
        pairs[n].value = value;
        n++;
    }
    iocd_qsort(pairs, n, sizeof(pairs[0]), lpair_cmp);
    for (i = 0; i < n; i++) {
        if (i > 0 && strcmp(pairs[i - 1].name, pairs[i].name) == 0) {
            snprintf(why, whylen, "%s: \"%s\" is given twice", what, pairs[i].name);
            return false;
        }
        if (iocd_buf_append(out, pairs[i].name, strlen(pairs[i].name) + 1) != IOCD_OK ||
            iocd_buf_append(out, pairs[i].value, strlen(pairs[i].value) + 1) != IOCD_OK) {
            snprintf(why, whylen, "out of memory");
            return false;
        }
    }
    *n_out = n;
    return true;
}

/* ---- Parsing a POST /api/v2/alerts body --------------------------------------------------- */

/* startsAt or endsAt: 0 when absent, null, "" or Go's zero time (year 1). */
static bool time_field(const iocd_jdoc *d, uint32_t obj, const char *key, int64_t *ms, char *why,
                       size_t whylen)
{
    uint32_t i = iocd_jdoc_get(d, obj, key);
    const char *s = iocd_jdoc_str(d, i);

    *ms = 0;
    if (iocd_jdoc_is_absent(d, i) || (s != NULL && s[0] == '\0'))
        return true;
    if (s == NULL || query_time_parse(s, ms) != IOCD_OK) {
        snprintf(why, whylen, "%s must be an RFC 3339 time", key);
        return false;
    }
    if (*ms <= 0)
        *ms = 0;
    return true;
}

static bool alert_check(const iocd_jdoc *d, uint32_t it, iocd_buf *ls, iocd_buf *as,
                        external_alert *a, char *why, size_t whylen)
{
    uint32_t lab = iocd_jdoc_get(d, it, "labels"), ann = iocd_jdoc_get(d, it, "annotations");
    uint32_t url = iocd_jdoc_get(d, it, "generatorURL");
    const char *name;
    size_t n = 0;

    if (d->node[it].kind != IOCD_J_OBJ) {
        snprintf(why, whylen, "not an object");
        return false;
    }
    if (iocd_jdoc_is_absent(d, lab)) {
        snprintf(why, whylen, "labels are required");
        return false;
    }
    if (!labelset(d, lab, "labels", LABEL_VALUE_MAX, ls, &n, why, whylen))
        return false;
    if (n == 0) {
        snprintf(why, whylen, "at least one label pair required");
        return false;
    }
    name = iocd_label_value(ls->data, ls->len, "alertname");
    if (name == NULL) {
        snprintf(why, whylen, "no alertname label (iocd names the incident's rule after it)");
        return false;
    }
    if (!iocd_jdoc_is_absent(d, ann) &&
        !labelset(d, ann, "annotations", ANNOTATION_MAX, as, &n, why, whylen))
        return false;
    a->generator_url = "";
    if (!iocd_jdoc_is_absent(d, url)) {
        a->generator_url = iocd_jdoc_str(d, url);
        if (a->generator_url == NULL || strlen(a->generator_url) > URL_MAX) {
            snprintf(why, whylen, "generatorURL must be a string of at most %d bytes", URL_MAX);
            return false;
        }
    }
    if (!time_field(d, it, "startsAt", &a->starts_ms, why, whylen) ||
        !time_field(d, it, "endsAt", &a->ends_ms, why, whylen))
        return false;
    if (a->starts_ms != 0 && a->ends_ms != 0 && a->ends_ms < a->starts_ms) {
        snprintf(why, whylen, "start time must be before end time");
        return false;
    }
    if (ls->len + as->len + strlen(a->generator_url) > ALERT_BYTES_MAX) {
        snprintf(why, whylen, "labels, annotations and generatorURL exceed %d bytes",
                 ALERT_BYTES_MAX);
        return false;
    }
    a->rule = name;
    a->labels = ls->data;
    a->labels_len = ls->len;
    a->annotations = as->data != NULL ? as->data : "";
    a->annotations_len = as->len;
    return true;
}

iocd_err external_parse(const char *text, size_t len, const external_sink *sink, char *errbuf,
                        size_t errlen)
{
    iocd_jdoc d;
    iocd_buf ls, as;
    size_t index = 0;
    uint32_t it;
    iocd_err err;

    err = iocd_jdoc_parse(text, len, POST_NODES_MAX, &d, errbuf, errlen);
    if (err != IOCD_OK)
        return err;
    if (d.node[0].kind != IOCD_J_ARR) {
        snprintf(errbuf, errlen,
                 "expected a JSON array of alerts: [{\"labels\": {...}, \"annotations\": {...}, "
                 "\"startsAt\": ..., \"endsAt\": ...}]");
        iocd_jdoc_fini(&d);
        return IOCD_EPARSE;
    }
    if (d.node[0].n > ALERT_AM_BATCH_MAX) {
        snprintf(errbuf, errlen, "%u alerts in one request; at most %d", d.node[0].n,
                 ALERT_AM_BATCH_MAX);
        iocd_jdoc_fini(&d);
        return IOCD_ETOOBIG;
    }
    iocd_buf_init(&ls, 0);
    iocd_buf_init(&as, 0);
    for (it = d.node[0].child; err == IOCD_OK && it != IOCD_JNONE; it = d.node[it].next) {
        external_alert a;
        char why[256];
        memset(&a, 0, sizeof(a));
        a.index = ++index;
        iocd_buf_reset(&ls);
        iocd_buf_reset(&as);
        if (alert_check(&d, it, &ls, &as, &a, why, sizeof(why)))
            err = sink->alert(sink->ud, &a);
        else
            sink->reject(sink->ud, index, why);
    }
    iocd_buf_fini(&ls);
    iocd_buf_fini(&as);
    iocd_jdoc_fini(&d);
    return err;
}

/* ---- The table of active alerts ----------------------------------------------------------- */

typedef struct am_alert {
    uint64_t fp;
    char *labels, *annotations, *url; /* sets as "name\0value\0", sorted */
    size_t labels_len, annotations_len;
    int64_t starts_ms, ends_ms;
    int64_t received_ms; /* first seen (this time round) */
    int64_t updated_ms;  /* last sent */
    bool ends_given;     /* false: ends_ms is the last receipt plus the resolve timeout */
    bool starts_given;
    size_t pos; /* in its request */
} am_alert;

typedef struct am_table am_table;
struct am_table {
    alert_center *ac;
    store *st;
    pthread_mutex_t mu; /* the alerts; held across a change's store writes and signals */
    am_alert **a;       /* sorted by fingerprint */
    size_t n, cap;
    pthread_t th;
    bool started;
    pthread_mutex_t wake_mu;
    pthread_cond_t wake;
    bool stop; /* under wake_mu */
    iocd_metric *m_received, *m_rejected, *m_active, *m_expired;
    am_table *next;
};

/* Tables by center: the API reaches a table through the center it was given. */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static am_table *registry;

static am_table *table_of(alert_center *ac)
{
    am_table *t;

    pthread_mutex_lock(&registry_mu);
    for (t = registry; t != NULL && t->ac != ac; t = t->next)
        ;
    pthread_mutex_unlock(&registry_mu);
    return t;
}

static void am_free(am_alert *x)
{
    if (x == NULL)
        return;
    iocd_free(x->labels);
    iocd_free(x->annotations);
    iocd_free(x->url);
    iocd_free(x);
}

static size_t lower_bound(const am_table *t, uint64_t fp)
{
    size_t lo = 0, hi = t->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->a[mid]->fp < fp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static am_alert *find(const am_table *t, uint64_t fp)
{
    size_t i = lower_bound(t, fp);

    return i < t->n && t->a[i]->fp == fp ? t->a[i] : NULL;
}

/* Puts x in the table (taken), replacing the alert with its fingerprint. */
static iocd_err put(am_table *t, am_alert *x)
{
    size_t i = lower_bound(t, x->fp);

    if (i < t->n && t->a[i]->fp == x->fp) {
        am_free(t->a[i]);
        t->a[i] = x;
        return IOCD_OK;
    }
    if (t->n == t->cap) {
        size_t cap = t->cap != 0 ? t->cap * 2 : 64;
        am_alert **g = iocd_realloc(t->a, cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        t->a = g;
        t->cap = cap;
    }
    memmove(t->a + i + 1, t->a + i, (t->n - i) * sizeof(*t->a));
    t->a[i] = x;
    t->n++;
    return IOCD_OK;
}

static void drop(am_table *t, uint64_t fp)
{
    size_t i = lower_bound(t, fp);

    if (i < t->n && t->a[i]->fp == fp) {
        am_free(t->a[i]);
        memmove(t->a + i, t->a + i + 1, (t->n - i - 1) * sizeof(*t->a));
        t->n--;
    }
}

static void key_of(uint64_t fp, char key[17])
{
    snprintf(key, 17, "%016llx", (unsigned long long)fp);
}

/* ---- Stored form: "name\0value\0" pairs --------------------------------------------------- */

static iocd_err pair(iocd_buf *b, const char *prefix, const char *name, const char *value)
{
    iocd_err err = iocd_buf_puts(b, prefix);

    if (err == IOCD_OK)
        err = iocd_buf_append(b, name, strlen(name) + 1);
    return err == IOCD_OK ? iocd_buf_append(b, value, strlen(value) + 1) : err;
}

static iocd_err pair_int(iocd_buf *b, const char *name, long long v)
{
    char t[32];

    snprintf(t, sizeof(t), "%lld", v);
    return pair(b, "", name, t);
}

static iocd_err pairs_of(iocd_buf *b, const char *prefix, const char *set, size_t len)
{
    const char *p = set, *end = set + len;
    iocd_err err = IOCD_OK;

    while (err == IOCD_OK && p < end) {
        const char *v = p + strlen(p) + 1;
        err = pair(b, prefix, p, v);
        p = v + strlen(v) + 1;
    }
    return err;
}

static iocd_err am_encode(const am_alert *x, iocd_buf *b)
{
    iocd_err err = pair_int(b, "starts", x->starts_ms);

    if (err == IOCD_OK)
        err = pair_int(b, "ends", x->ends_ms);
    if (err == IOCD_OK)
        err = pair_int(b, "ends_given", x->ends_given);
    if (err == IOCD_OK)
        err = pair_int(b, "received", x->received_ms);
    if (err == IOCD_OK)
        err = pair_int(b, "updated", x->updated_ms);
    if (err == IOCD_OK)
        err = pair(b, "", "url", x->url);
    if (err == IOCD_OK)
        err = pairs_of(b, "l.", x->labels, x->labels_len);
    if (err == IOCD_OK)
        err = pairs_of(b, "a.", x->annotations, x->annotations_len);
    return err;
}

static iocd_err am_decode(const char *p, size_t len, am_alert **out)
{
    const char *end = p + len, *rule;
    am_alert *x = iocd_calloc(1, sizeof(*x));
    iocd_buf ls, as;
    iocd_err err = IOCD_OK;

    if (x == NULL)
        return IOCD_ENOMEM;
    iocd_buf_init(&ls, 0);
    iocd_buf_init(&as, 0);
    while (err == IOCD_OK && p < end) {
        const char *v = p + strnlen(p, (size_t)(end - p)) + 1, *next;
        if (v >= end) {
            err = IOCD_ECORRUPT;
            break;
        }
        next = v + strnlen(v, (size_t)(end - v)) + 1;
        if (next > end) {
            err = IOCD_ECORRUPT;
            break;
        }
        if (strcmp(p, "starts") == 0)
            x->starts_ms = strtoll(v, NULL, 10);
        else if (strcmp(p, "ends") == 0)
            x->ends_ms = strtoll(v, NULL, 10);
        else if (strcmp(p, "ends_given") == 0)
            x->ends_given = atoi(v) != 0;
        else if (strcmp(p, "received") == 0)
            x->received_ms = strtoll(v, NULL, 10);
        else if (strcmp(p, "updated") == 0)
            x->updated_ms = strtoll(v, NULL, 10);
        else if (strcmp(p, "url") == 0 && x->url == NULL)
            x->url = iocd_strdup(v);
        else if (strncmp(p, "l.", 2) == 0 || strncmp(p, "a.", 2) == 0)
            err = pair(p[0] == 'l' ? &ls : &as, "", p + 2, v);
        p = next;
    }
    x->starts_given = true;
    x->labels_len = ls.len;
    x->labels = iocd_buf_take(&ls, NULL);
    x->annotations_len = as.len;
    x->annotations = iocd_buf_take(&as, NULL);
    if (x->annotations == NULL)
        x->annotations = iocd_strdup("");
    if (x->url == NULL)
        x->url = iocd_strdup("");
    if (err == IOCD_OK && (x->labels == NULL || x->annotations == NULL || x->url == NULL))
        err = x->labels == NULL ? IOCD_ECORRUPT : IOCD_ENOMEM;
    rule = err == IOCD_OK ? iocd_label_value(x->labels, x->labels_len, "alertname") : NULL;
    if (err == IOCD_OK && rule == NULL)
        err = IOCD_ECORRUPT;
    if (err == IOCD_OK)
        x->fp = alert_fingerprint(rule, x->labels, x->labels_len);
    iocd_buf_fini(&ls);
    iocd_buf_fini(&as);
    if (err != IOCD_OK) {
        am_free(x);
        return err;
    }
    *out = x;
    return IOCD_OK;
}

static iocd_err load_one(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    am_table *t = ud;
    am_alert *x = NULL;
    char want[17];
    iocd_err err = am_decode(val, vlen, &x);

    if (err == IOCD_OK) {
        key_of(x->fp, want);
        if (klen != 16 || memcmp(key, want, 16) != 0)
            err = IOCD_ECORRUPT;
    }
    if (err == IOCD_ECORRUPT) {
        log_error("alerts", "a stored external alert is corrupt and skipped", NULL);
        am_free(x);
        return IOCD_OK;
    }
    if (err == IOCD_OK)
        err = put(t, x);
    if (err != IOCD_OK)
        am_free(x);
    return err;
}

/* ---- Signals ------------------------------------------------------------------------------ */

/* Prometheus users write many severities; iocd's incidents know three. */
static const char *severity_of(const char *s)
{
    static const char *const critical[] = { "critical", "page",      "error", "high",    "major",
                                            "fatal",    "emergency", "alert", "disaster" };
    static const char *const info[] = { "info", "low", "minor", "none", "notice", "debug" };
    char low[32];
    size_t i;

    if (s == NULL || strlen(s) >= sizeof(low))
        return "warning";
    for (i = 0; s[i] != '\0'; i++)
        low[i] = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] - 'A' + 'a') : s[i];
    low[i] = '\0';
    for (i = 0; i < IOCD_ARRAY_LEN(critical); i++)
        if (strcmp(low, critical[i]) == 0)
            return "critical";
    for (i = 0; i < IOCD_ARRAY_LEN(info); i++)
        if (strcmp(low, info[i]) == 0)
            return "info";
    return "warning";
}

static void signal_alert(am_table *t, const am_alert *x, bool firing, int64_t t_ms)
{
    const char *ann = x->annotations;
    size_t alen = x->annotations_len;
    const char *rule = iocd_label_value(x->labels, x->labels_len, "alertname");
    const char *domain = iocd_label_value(x->labels, x->labels_len, "domain");
    const char *summary = iocd_label_value(ann, alen, "summary");
    const char *runbook = iocd_label_value(ann, alen, "runbook_url");
    alert_signal sig;

    memset(&sig, 0, sizeof(sig));
    if (summary == NULL)
        summary = iocd_label_value(ann, alen, "message");
    if (runbook == NULL)
        runbook = iocd_label_value(ann, alen, "runbook");
    sig.rule = rule != NULL ? rule : "";
    sig.labels = x->labels;
    sig.labels_len = x->labels_len;
    sig.summary = summary != NULL ? summary : sig.rule;
    sig.description = iocd_label_value(ann, alen, "description");
    sig.runbook = runbook;
    sig.severity = severity_of(iocd_label_value(x->labels, x->labels_len, "severity"));
    sig.domain = domain != NULL ? domain : "other";
    sig.value = NAN;
    sig.t_ms = t_ms;
    sig.firing = firing;
    alert_center_signal(t->ac, &sig);
}

/* ---- POST /api/v2/alerts ------------------------------------------------------------------ */

typedef struct post_batch {
    am_alert **x;
    size_t n, cap;
    size_t refused;
    iocd_buf reasons; /* the first few, "alert 3: why; ..." */
} post_batch;

static iocd_err batch_alert(void *ud, const external_alert *a)
{
    post_batch *b = ud;
    am_alert *x;

    if (b->n == b->cap) {
        size_t cap = b->cap != 0 ? b->cap * 2 : 16;
        am_alert **g = iocd_realloc(b->x, cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        b->x = g;
        b->cap = cap;
    }
    x = iocd_calloc(1, sizeof(*x));
    if (x == NULL)
        return IOCD_ENOMEM;
    x->labels = iocd_malloc(a->labels_len);
    x->annotations = iocd_malloc(a->annotations_len + 1);
    x->url = iocd_strdup(a->generator_url);
    if (x->labels == NULL || x->annotations == NULL || x->url == NULL) {
        am_free(x);
        return IOCD_ENOMEM;
    }
    memcpy(x->labels, a->labels, a->labels_len);
    x->labels_len = a->labels_len;
    memcpy(x->annotations, a->annotations, a->annotations_len);
    x->annotations_len = a->annotations_len;
    x->fp = alert_fingerprint(a->rule, a->labels, a->labels_len);
    x->starts_ms = a->starts_ms;
    x->starts_given = a->starts_ms != 0;
    x->ends_ms = a->ends_ms;
    x->ends_given = a->ends_ms != 0;
    x->pos = b->n;
    b->x[b->n++] = x;
    return IOCD_OK;
}

static void batch_reason(post_batch *b, size_t index, const char *why)
{
    if (b->refused < REASONS_SHOWN)
        iocd_buf_printf(&b->reasons, "%salert %zu: %s", b->refused > 0 ? "; " : "", index, why);
    b->refused++;
}

static void batch_reject(void *ud, size_t index, const char *why)
{
    batch_reason(ud, index, why);
}

static int by_fp_then_pos(const void *a, const void *b)
{
    const am_alert *x = *(am_alert *const *)a, *y = *(am_alert *const *)b;

    if (x->fp != y->fp)
        return x->fp < y->fp ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static void batch_fini(post_batch *b)
{
    size_t i;

    for (i = 0; i < b->n; i++)
        am_free(b->x[i]);
    iocd_free(b->x);
    iocd_buf_fini(&b->reasons);
}

typedef enum post_fate {
    FATE_FIRING,   /* stored, then signalled */
    FATE_RESOLVED, /* signalled, then removed */
    FATE_REFUSED,  /* the table is full */
} post_fate;

/* Applies the batch (sorted by fingerprint, one alert each) to the table: the firing alerts
 * are stored (one transaction) before their signals, the resolved ones removed after theirs.
 * Caller holds t->mu. Errors: storage errors, IOCD_ENOMEM (nothing applied). */
static iocd_err apply(am_table *t, post_batch *b, int64_t now)
{
    store_kv_op *ops = iocd_calloc(b->n + 1, sizeof(*ops));
    iocd_buf *vals = iocd_calloc(b->n + 1, sizeof(*vals));
    char(*keys)[17] = iocd_calloc(b->n + 1, sizeof(*keys));
    post_fate *fate = iocd_calloc(b->n + 1, sizeof(*fate));
    size_t i, n_ops = 0, added = 0;
    iocd_err err =
        ops != NULL && vals != NULL && keys != NULL && fate != NULL ? IOCD_OK : IOCD_ENOMEM;

    for (i = 0; err == IOCD_OK && i < b->n; i++) {
        am_alert *x = b->x[i];
        const am_alert *old = find(t, x->fp);
        x->updated_ms = now;
        x->received_ms = old != NULL ? old->received_ms : now;
        if (!x->ends_given)
            x->ends_ms = now + RESOLVE_TIMEOUT_MS;
        if (!x->starts_given)
            x->starts_ms = old != NULL ? old->starts_ms : now;
        key_of(x->fp, keys[i]);
        if (x->ends_ms <= now) {
            fate[i] = FATE_RESOLVED;
            continue;
        }
        if (old == NULL && t->n + added >= ALERT_AM_ACTIVE_MAX) {
            char why[96];
            snprintf(why, sizeof(why), "iocd keeps at most %d active alerts", ALERT_AM_ACTIVE_MAX);
            batch_reason(b, x->pos + 1, why);
            fate[i] = FATE_REFUSED;
            continue;
        }
        fate[i] = FATE_FIRING;
        added += old == NULL;
        err = am_encode(x, &vals[i]);
        ops[n_ops++] = (store_kv_op){ TABLE, keys[i], 16, vals[i].data, vals[i].len };
    }
    if (err == IOCD_OK && n_ops > 0)
        err = store_kv_write(t->st, ops, n_ops);
    for (i = 0; err == IOCD_OK && i < b->n; i++) {
        am_alert *x = b->x[i];
        const am_alert *old = find(t, x->fp);
        if (fate[i] == FATE_FIRING) {
            if (put(t, x) == IOCD_OK)
                b->x[i] = NULL; /* the table has it now */
            signal_alert(t, x, true, now);
        } else if (fate[i] == FATE_RESOLVED) {
            /* When it ended, unless that is before iocd first heard of it. */
            signal_alert(t, x, false,
                         old != NULL && x->ends_ms > old->received_ms ? x->ends_ms : now);
        }
    }
    n_ops = 0;
    for (i = 0; err == IOCD_OK && i < b->n; i++)
        if (fate[i] == FATE_RESOLVED && find(t, b->x[i]->fp) != NULL)
            ops[n_ops++] = (store_kv_op){ TABLE, keys[i], 16, NULL, 0 };
    if (n_ops > 0 && store_kv_write(t->st, ops, n_ops) == IOCD_OK) {
        for (i = 0; i < b->n; i++)
            if (fate[i] == FATE_RESOLVED)
                drop(t, b->x[i]->fp);
    } else if (n_ops > 0) {
        log_warn("alerts", "resolved external alerts not removed; the sweeper retries", NULL);
    }
    iocd_metric_set(t->m_active, (double)t->n);
    for (i = 0; vals != NULL && i < b->n + 1; i++)
        iocd_buf_fini(&vals[i]);
    iocd_free(ops);
    iocd_free(vals);
    iocd_free(keys);
    iocd_free(fate);
    return err;
}

iocd_err alert_am_alerts_post(alert_center *ac, const char *body, size_t len, char *errbuf,
                              size_t errlen)
{
    am_table *t = table_of(ac);
    post_batch b;
    external_sink sink = { batch_alert, batch_reject, NULL };
    size_t i, keep, total;
    iocd_err err;

    if (t == NULL) {
        snprintf(errbuf, errlen, "external alerts are not ready");
        return IOCD_EAGAIN;
    }
    memset(&b, 0, sizeof(b));
    iocd_buf_init(&b.reasons, 0);
    sink.ud = &b;
    err = external_parse(body, len, &sink, errbuf, errlen);
    if (err != IOCD_OK) {
        if (err == IOCD_ENOMEM)
            snprintf(errbuf, errlen, "out of memory");
        iocd_metric_add(t->m_rejected, 1);
        batch_fini(&b);
        return err;
    }
    total = b.n + b.refused;
    /* One alert per fingerprint: a later one in the body supersedes an earlier one. */
    iocd_qsort(b.x, b.n, sizeof(*b.x), by_fp_then_pos);
    for (i = 0, keep = 0; i < b.n; i++) {
        if (i + 1 < b.n && b.x[i + 1]->fp == b.x[i]->fp) {
            am_free(b.x[i]);
            continue;
        }
        b.x[keep++] = b.x[i];
    }
    b.n = keep;
    pthread_mutex_lock(&t->mu);
    err = apply(t, &b, iocd_now_ms());
    pthread_mutex_unlock(&t->mu);
    if (err != IOCD_OK) {
        snprintf(errbuf, errlen, "the alerts were not saved: %s", iocd_strerror(err));
    } else if (b.refused > 0) {
        iocd_metric_add(t->m_rejected, (double)b.refused);
        snprintf(errbuf, errlen, "%zu of %zu alerts refused: %s%s", b.refused, total,
                 b.reasons.data != NULL ? b.reasons.data : "",
                 b.refused > REASONS_SHOWN ? "; ..." : "");
        err = IOCD_EINVAL;
    }
    if (err == IOCD_OK || err == IOCD_EINVAL)
        iocd_metric_add(t->m_received, (double)(total - b.refused));
    batch_fini(&b);
    return err;
}

/* ---- The sweeper -------------------------------------------------------------------------- */

size_t external_sweep(alert_center *ac, int64_t now_ms)
{
    am_table *t = table_of(ac);
    store_kv_op *ops = NULL;
    char(*keys)[17] = NULL;
    uint64_t *fps = NULL;
    size_t i, n = 0, expired = 0;

    if (t == NULL)
        return 0;
    pthread_mutex_lock(&t->mu);
    for (i = 0; i < t->n; i++)
        expired += t->a[i]->ends_ms <= now_ms;
    if (expired == 0)
        goto out;
    ops = iocd_calloc(expired, sizeof(*ops));
    keys = iocd_calloc(expired, sizeof(*keys));
    fps = iocd_calloc(expired, sizeof(*fps));
    if (ops == NULL || keys == NULL || fps == NULL) {
        expired = 0;
        goto out;
    }
    /* Resolved first, deleted after: a crash in between re-resolves (a no-op) on restart. */
    for (i = 0; i < t->n; i++) {
        const am_alert *x = t->a[i];
        if (x->ends_ms > now_ms)
            continue;
        signal_alert(t, x, false, x->ends_ms > x->received_ms ? x->ends_ms : x->received_ms);
        fps[n] = x->fp;
        key_of(x->fp, keys[n]);
        ops[n] = (store_kv_op){ TABLE, keys[n], 16, NULL, 0 };
        n++;
    }
    if (store_kv_write(t->st, ops, n) != IOCD_OK) {
        log_warn("alerts", "expired external alerts not removed; retrying", "count=%zu", n);
        expired = 0;
        goto out;
    }
    for (i = 0; i < n; i++)
        drop(t, fps[i]);
    iocd_metric_add(t->m_expired, (double)n);
    iocd_metric_set(t->m_active, (double)t->n);
    log_info("alerts", "external alerts expired", "count=%zu", n);
out:
    pthread_mutex_unlock(&t->mu);
    iocd_free(ops);
    iocd_free(keys);
    iocd_free(fps);
    return expired;
}

static void *sweeper(void *arg)
{
    am_table *t = arg;

    iocd_thread_name("am-sweeper");
    pthread_mutex_lock(&t->wake_mu);
    while (!t->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += SWEEP_INTERVAL_MS / 1000;
        ts.tv_nsec += (long)(SWEEP_INTERVAL_MS % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&t->wake, &t->wake_mu, &ts);
        if (t->stop)
            break;
        pthread_mutex_unlock(&t->wake_mu);
        external_sweep(t->ac, iocd_now_ms());
        pthread_mutex_lock(&t->wake_mu);
    }
    pthread_mutex_unlock(&t->wake_mu);
    return NULL;
}

static void table_free(am_table *t)
{
    size_t i;

    for (i = 0; i < t->n; i++)
        am_free(t->a[i]);
    iocd_free(t->a);
    pthread_cond_destroy(&t->wake);
    pthread_mutex_destroy(&t->wake_mu);
    pthread_mutex_destroy(&t->mu);
    iocd_free(t);
}

iocd_err alert_am_start(alert_center *ac, store *st, char *errbuf, size_t errlen)
{
    am_table *t;
    iocd_err err;

    if (table_of(ac) != NULL) {
        snprintf(errbuf, errlen, "external alerts: already started");
        return IOCD_EEXIST;
    }
    t = iocd_calloc(1, sizeof(*t));
    if (t == NULL)
        return IOCD_ENOMEM;
    t->ac = ac;
    t->st = st;
    pthread_mutex_init(&t->mu, NULL);
    pthread_mutex_init(&t->wake_mu, NULL);
    pthread_cond_init(&t->wake, NULL);
    t->m_received = iocd_counter("iocd_external_alerts_received_total",
                                 "Alerts accepted on POST /api/v2/alerts (re-sends included).");
    t->m_rejected = iocd_counter("iocd_external_alerts_rejected_total",
                                 "Alerts (or whole bodies) refused on POST /api/v2/alerts.");
    t->m_active = iocd_gauge("iocd_external_alerts_active",
                             "Alerts from other systems that are firing (kept until endsAt).");
    t->m_expired = iocd_counter("iocd_external_alerts_expired_total",
                                "Alerts from other systems resolved because endsAt passed.");
    err = store_kv_each(st, TABLE, load_one, t);
    if (err == IOCD_OK && pthread_create(&t->th, NULL, sweeper, t) != 0)
        err = IOCD_ENOMEM;
    if (err != IOCD_OK) {
        snprintf(errbuf, errlen, "external alerts: %s", iocd_strerror(err));
        table_free(t);
        return err;
    }
    t->started = true;
    iocd_metric_set(t->m_active, (double)t->n);
    pthread_mutex_lock(&registry_mu);
    t->next = registry;
    registry = t;
    pthread_mutex_unlock(&registry_mu);
    log_info("alerts", "external alerts loaded", "active=%zu", t->n);
    return IOCD_OK;
}

void alert_am_stop(alert_center *ac)
{
    am_table *t, **link;

    pthread_mutex_lock(&registry_mu);
    for (link = &registry; *link != NULL && (*link)->ac != ac; link = &(*link)->next)
        ;
    t = *link;
    if (t != NULL)
        *link = t->next;
    pthread_mutex_unlock(&registry_mu);
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->wake_mu);
    t->stop = true;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->wake_mu);
    if (t->started)
        pthread_join(t->th, NULL);
    table_free(t);
}

/* ---- GET /api/v2/alerts ------------------------------------------------------------------- */

static iocd_err put_jstr(iocd_buf *b, const char *s)
{
    return iocd_buf_json_str(b, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

static iocd_err put_set(iocd_buf *b, const char *set, size_t len)
{
    const char *p = set, *end = set + len;
    iocd_err err = iocd_buf_putc(b, '{');

    while (err == IOCD_OK && p < end) {
        const char *v = p + strlen(p) + 1;
        if (p != set)
            err = iocd_buf_putc(b, ',');
        if (err == IOCD_OK)
            err = put_jstr(b, p);
        if (err == IOCD_OK)
            err = iocd_buf_putc(b, ':');
        if (err == IOCD_OK)
            err = put_jstr(b, v);
        p = v + strlen(v) + 1;
    }
    return err == IOCD_OK ? iocd_buf_putc(b, '}') : err;
}

static iocd_err put_time(iocd_buf *b, const char *name, int64_t t_ms)
{
    char ts[40];

    iocd_time_format(t_ms, ts, sizeof(ts));
    return iocd_buf_printf(b, ",\"%s\":\"%s\"", name, ts);
}

/* One alert as a gettableAlert; silenced_by is a JSON array's inside ("\"3\",\"7\""). */
static iocd_err alert_am_json(const am_alert *x, const char *silenced_by, iocd_buf *b)
{
    iocd_err err = iocd_buf_puts(b, "{\"annotations\":");

    if (err == IOCD_OK)
        err = put_set(b, x->annotations, x->annotations_len);
    if (err == IOCD_OK)
        err = put_time(b, "endsAt", x->ends_ms);
    if (err == IOCD_OK)
        err = iocd_buf_printf(b, ",\"fingerprint\":\"%016llx\",\"receivers\":[{\"name\":\"%s\"}]",
                              (unsigned long long)x->fp, ALERT_AM_RECEIVER);
    if (err == IOCD_OK)
        err = put_time(b, "startsAt", x->starts_ms);
    if (err == IOCD_OK)
        err = iocd_buf_printf(b,
                              ",\"status\":{\"inhibitedBy\":[],\"silencedBy\":[%s],"
                              "\"state\":\"%s\"}",
                              silenced_by, silenced_by[0] != '\0' ? "suppressed" : "active");
    if (err == IOCD_OK)
        err = put_time(b, "updatedAt", x->updated_ms);
    if (err == IOCD_OK && x->url[0] != '\0') {
        err = iocd_buf_puts(b, ",\"generatorURL\":");
        if (err == IOCD_OK)
            err = put_jstr(b, x->url);
    }
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"labels\":");
    if (err == IOCD_OK)
        err = put_set(b, x->labels, x->labels_len);
    return err == IOCD_OK ? iocd_buf_putc(b, '}') : err;
}

static bool receiver_passes(const char *re, char *errbuf, size_t errlen, iocd_err *err)
{
    query_selector sel = { NULL, 0 };
    iocd_buf text;
    bool ok = false;

    *err = IOCD_OK;
    if (re == NULL || re[0] == '\0')
        return true;
    iocd_buf_init(&text, 0);
    *err = iocd_buf_puts(&text, "{" EXTERNAL_ANY_LABEL "=\"1\",r=~");
    if (*err == IOCD_OK)
        *err = external_put_quoted(&text, re);
    if (*err == IOCD_OK)
        *err = iocd_buf_putc(&text, '}');
    if (*err == IOCD_OK && query_selector_parse(text.data, &sel, errbuf, errlen) != IOCD_OK) {
        char why[256];
        snprintf(why, sizeof(why), "%s", errbuf);
        snprintf(errbuf, errlen, "bad receiver: %s", why);
        *err = IOCD_EINVAL;
    } else if (*err == IOCD_OK) {
        ok = external_sel_matches(&sel, "r\0" ALERT_AM_RECEIVER, sizeof("r\0" ALERT_AM_RECEIVER),
                                  EXTERNAL_ANY_LABEL);
    }
    query_selector_fini(&sel);
    iocd_buf_fini(&text);
    return ok;
}

iocd_err alert_am_alerts_list(alert_center *ac, const alert_am_filter *f, bool groups,
                              iocd_buf *out, char *errbuf, size_t errlen)
{
    am_table *t = table_of(ac);
    query_selector filter = { NULL, 0 };
    external_silences sil = { NULL, 0 };
    iocd_buf by;
    int64_t now;
    size_t i, k, shown = 0;
    bool wanted;
    iocd_err err;

    if (t == NULL) {
        snprintf(errbuf, errlen, "external alerts are not ready");
        return IOCD_EAGAIN;
    }
    wanted = receiver_passes(f->receiver, errbuf, errlen, &err);
    if (err != IOCD_OK)
        return err;
    if (f->n_matchers > 0) {
        err = external_filter_parse(f->matchers, f->n_matchers, &filter, errbuf, errlen);
        if (err != IOCD_OK)
            return err;
    }
    err = external_silences_active(ac, &sil);
    if (err != IOCD_OK) {
        query_selector_fini(&filter);
        snprintf(errbuf, errlen, "the silences cannot be read: %s", iocd_strerror(err));
        return err;
    }
    iocd_buf_init(&by, 0);
    err = iocd_buf_putc(out, '[');
    if (err == IOCD_OK && groups)
        err = iocd_buf_puts(out, "{\"labels\":{},\"receiver\":{\"name\":\"" ALERT_AM_RECEIVER
                                 "\"},\"alerts\":[");
    pthread_mutex_lock(&t->mu);
    now = iocd_now_ms();
    for (i = 0; wanted && err == IOCD_OK && i < t->n; i++) {
        const am_alert *x = t->a[i];
        if (x->ends_ms <= now) /* expired, the sweeper not there yet */
            continue;
        if (f->n_matchers > 0 &&
            !external_sel_matches(&filter, x->labels, x->labels_len, EXTERNAL_ANY_LABEL))
            continue;
        iocd_buf_reset(&by);
        for (k = 0; err == IOCD_OK && k < sil.n; k++)
            if (external_sel_matches(&sil.s[k].sel, x->labels, x->labels_len, NULL))
                err = iocd_buf_printf(&by, "%s\"%s\"", by.len > 0 ? "," : "", sil.s[k].id);
        if (err != IOCD_OK)
            break;
        if (by.len > 0 ? !f->silenced : !f->active)
            continue;
        if (shown++ > 0)
            err = iocd_buf_putc(out, ',');
        if (err == IOCD_OK)
            err = alert_am_json(x, by.data != NULL ? by.data : "", out);
    }
    pthread_mutex_unlock(&t->mu);
    if (err == IOCD_OK && groups) {
        if (shown == 0) { /* Alertmanager shows no empty group */
            iocd_buf_reset(out);
            err = iocd_buf_putc(out, '[');
        } else {
            err = iocd_buf_puts(out, "]}");
        }
    }
    if (err == IOCD_OK)
        err = iocd_buf_putc(out, ']');
    iocd_buf_fini(&by);
    external_silences_fini(&sil);
    query_selector_fini(&filter);
    return err;
}
