/* alerts/external.c - alerts from other systems, in Alertmanager's API v2 shapes, so that
 * Prometheus and vmalert can send to iocd as to an Alertmanager. A posted alert becomes an
 * incident through alert_center_signal (its rule is the alertname label). The alerts still
 * active are kept by fingerprint in a table of the data file ("am_alerts") with their endsAt,
 * and a sweeper thread resolves each one whose endsAt passes without a re-send (no endsAt:
 * 5 minutes after the last one, Alertmanager's resolve_timeout). Silences are converted from
 * Alertmanager's matchers to iocd's selector text and back.
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
#define MATCHERS_MAX       64    /* of one silence */
#define POST_NODES_MAX     500000
#define SILENCE_NODES_MAX  4096
#define LIST_NODES_MAX     2000000
#define REASONS_SHOWN      3 /* refused alerts named in the answer */
#define ANY_LABEL          "__iocd_any__"

/* ---- A JSON reader -----------------------------------------------------------------------
 * Alertmanager's bodies nest (an array of alerts, each with label objects), which the flat
 * object reader of common/ refuses. This one builds a small tree: nodes in one array, linked
 * by index, strings decoded into one buffer. Bounded in depth and in nodes. */

#define JNONE      UINT32_MAX
#define JDEPTH_MAX 16

typedef enum jkind {
    J_NULL,
    J_BOOL,
    J_NUM,
    J_STR,
    J_ARR,
    J_OBJ,
} jkind;

typedef struct jnode {
    jkind kind;
    bool truth;     /* J_BOOL */
    uint32_t key;   /* a member's key: offset in text; JNONE for array items and the root */
    uint32_t str;   /* J_STR, J_NUM: offset in text */
    uint32_t n;     /* J_ARR, J_OBJ: how many children */
    uint32_t child; /* the first child, or JNONE */
    uint32_t next;  /* the next sibling, or JNONE */
} jnode;

typedef struct jdoc {
    jnode *node; /* node[0] is the root */
    size_t n, cap, max;
    iocd_buf text; /* keys, strings and numbers, each NUL-terminated */
} jdoc;

typedef struct jparser {
    const char *p, *start, *end;
    jdoc *d;
    char *errbuf;
    size_t errlen;
} jparser;

static iocd_err jfail(jparser *j, const char *what)
{
    snprintf(j->errbuf, j->errlen, "invalid JSON at byte %zu: %s", (size_t)(j->p - j->start) + 1,
             what);
    return IOCD_EPARSE;
}

static void jws(jparser *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static iocd_err jnew(jparser *j, jkind kind, uint32_t *out)
{
    jdoc *d = j->d;
    jnode *nd;

    if (d->n >= d->max) {
        snprintf(j->errbuf, j->errlen, "the body holds more than %zu JSON values", d->max);
        return IOCD_ETOOBIG;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap != 0 ? d->cap * 2 : 64;
        jnode *g = iocd_realloc(d->node, cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        d->node = g;
        d->cap = cap;
    }
    nd = &d->node[d->n];
    memset(nd, 0, sizeof(*nd));
    nd->kind = kind;
    nd->key = nd->str = nd->child = nd->next = JNONE;
    *out = (uint32_t)d->n++;
    return IOCD_OK;
}

static iocd_err jmark(jparser *j, uint32_t *off)
{
    if (j->d->text.len >= UINT32_MAX / 2) {
        snprintf(j->errbuf, j->errlen, "the body is too large");
        return IOCD_ETOOBIG;
    }
    *off = (uint32_t)j->d->text.len;
    return IOCD_OK;
}

static bool hex4(const char *p, const char *end, uint32_t *out)
{
    uint32_t v = 0;
    int i, h;

    if (end - p < 4)
        return false;
    for (i = 0; i < 4; i++) {
        h = iocd_hexval(p[i]);
        if (h < 0)
            return false;
        v = v * 16 + (uint32_t)h;
    }
    *out = v;
    return true;
}

/* The string at j->p (its opening quote), decoded into the text buffer. */
static iocd_err jstring(jparser *j, uint32_t *off)
{
    iocd_buf *b = &j->d->text;
    iocd_err err = jmark(j, off);
    uint32_t cp, lo;

    j->p++;
    while (err == IOCD_OK) {
        unsigned char c;
        if (j->p >= j->end)
            return jfail(j, "unterminated string");
        c = (unsigned char)*j->p;
        if (c == '"') {
            j->p++;
            break;
        }
        if (c < 0x20)
            return jfail(j, "control character in string");
        j->p++;
        if (c != '\\') {
            err = iocd_buf_putc(b, (char)c);
            continue;
        }
        if (j->p >= j->end)
            return jfail(j, "unterminated string");
        c = (unsigned char)*j->p++;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            err = iocd_buf_putc(b, (char)c);
            break;
        case 'b':
            err = iocd_buf_putc(b, '\b');
            break;
        case 'f':
            err = iocd_buf_putc(b, '\f');
            break;
        case 'n':
            err = iocd_buf_putc(b, '\n');
            break;
        case 'r':
            err = iocd_buf_putc(b, '\r');
            break;
        case 't':
            err = iocd_buf_putc(b, '\t');
            break;
        case 'u':
            if (!hex4(j->p, j->end, &cp))
                return jfail(j, "bad \\u escape");
            j->p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* the first half of a surrogate pair */
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' ||
                    !hex4(j->p + 2, j->end, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return jfail(j, "lone surrogate");
                j->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return jfail(j, "lone surrogate");
            }
            if (cp == 0) /* label sets are NUL-separated */
                return jfail(j, "NUL in string");
            err = iocd_buf_utf8(b, cp);
            break;
        default:
            j->p--;
            return jfail(j, "unknown escape");
        }
    }
    if (err == IOCD_OK)
        err = iocd_buf_putc(b, '\0');
    if (err == IOCD_OK && !iocd_utf8_valid(b->data + *off, b->len - *off - 1))
        return jfail(j, "string is not valid UTF-8");
    return err;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static iocd_err jnumber(jparser *j, uint32_t *off)
{
    const char *s = j->p;
    iocd_err err;

    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p >= j->end || !is_digit(*j->p))
        return jfail(j, "expected a value");
    if (*j->p == '0')
        j->p++;
    else
        while (j->p < j->end && is_digit(*j->p))
            j->p++;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (j->p >= j->end || !is_digit(*j->p))
            return jfail(j, "expected a digit");
        while (j->p < j->end && is_digit(*j->p))
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (j->p >= j->end || !is_digit(*j->p))
            return jfail(j, "expected a digit");
        while (j->p < j->end && is_digit(*j->p))
            j->p++;
    }
    err = jmark(j, off);
    if (err == IOCD_OK)
        err = iocd_buf_append(&j->d->text, s, (size_t)(j->p - s));
    return err == IOCD_OK ? iocd_buf_putc(&j->d->text, '\0') : err;
}

static bool literal(jparser *j, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
        return false;
    j->p += n;
    return true;
}

static iocd_err jvalue(jparser *j, int depth, uint32_t *out)
{
    uint32_t me, last = JNONE, child, key, off;
    bool obj;
    char close;
    iocd_err err;

    jws(j);
    if (j->p >= j->end)
        return jfail(j, "expected a value");
    if (*j->p == '"') {
        err = jnew(j, J_STR, &me);
        if (err == IOCD_OK)
            err = jstring(j, &off);
        if (err == IOCD_OK)
            j->d->node[me].str = off;
        *out = me;
        return err;
    }
    if (*j->p != '{' && *j->p != '[') {
        const char *s = j->p;
        if (literal(j, "true") || literal(j, "false")) {
            err = jnew(j, J_BOOL, &me);
            if (err == IOCD_OK)
                j->d->node[me].truth = *s == 't';
        } else if (literal(j, "null")) {
            err = jnew(j, J_NULL, &me);
        } else {
            err = jnew(j, J_NUM, &me);
            if (err == IOCD_OK)
                err = jnumber(j, &off);
            if (err == IOCD_OK)
                j->d->node[me].str = off;
        }
        *out = me;
        return err;
    }
    obj = *j->p == '{';
    close = obj ? '}' : ']';
    if (depth >= JDEPTH_MAX)
        return jfail(j, "nested too deeply");
    err = jnew(j, obj ? J_OBJ : J_ARR, &me);
    if (err != IOCD_OK)
        return err;
    *out = me;
    j->p++;
    jws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return IOCD_OK;
    }
    for (;;) {
        key = JNONE;
        jws(j);
        if (obj) {
            if (j->p >= j->end || *j->p != '"')
                return jfail(j, "expected a key in quotes");
            err = jstring(j, &key);
            if (err != IOCD_OK)
                return err;
            jws(j);
            if (j->p >= j->end || *j->p != ':')
                return jfail(j, "expected ':'");
            j->p++;
        }
        err = jvalue(j, depth + 1, &child);
        if (err != IOCD_OK)
            return err;
        j->d->node[child].key = key; /* by index: the array may have moved */
        if (last == JNONE)
            j->d->node[me].child = child;
        else
            j->d->node[last].next = child;
        last = child;
        j->d->node[me].n++;
        jws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return IOCD_OK;
        }
        return jfail(j, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static void jdoc_fini(jdoc *d)
{
    iocd_free(d->node);
    iocd_buf_fini(&d->text);
    memset(d, 0, sizeof(*d));
}

/* Parses text (one JSON value) into d, at most max_nodes values. Errors: IOCD_EPARSE,
 * IOCD_ETOOBIG (errbuf says which), IOCD_ENOMEM; d is left empty on error. */
static iocd_err jdoc_parse(const char *text, size_t len, size_t max_nodes, jdoc *d, char *errbuf,
                           size_t errlen)
{
    jparser j;
    uint32_t root;
    iocd_err err;

    memset(d, 0, sizeof(*d));
    d->max = max_nodes;
    iocd_buf_init(&d->text, 0);
    j = (jparser){ text, text, text + len, d, errbuf, errlen };
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) /* a byte order mark */
        j.p += 3;
    err = jvalue(&j, 0, &root);
    if (err == IOCD_OK) {
        jws(&j);
        if (j.p != j.end)
            err = jfail(&j, "text after the value");
    }
    if (err != IOCD_OK)
        jdoc_fini(d);
    if (err == IOCD_ENOMEM)
        snprintf(errbuf, errlen, "out of memory");
    return err;
}

static const char *jtext(const jdoc *d, uint32_t off)
{
    return d->text.data + off;
}

/* The member key of object obj, or JNONE. */
static uint32_t jget(const jdoc *d, uint32_t obj, const char *key)
{
    uint32_t c;

    if (obj == JNONE || d->node[obj].kind != J_OBJ)
        return JNONE;
    for (c = d->node[obj].child; c != JNONE; c = d->node[c].next)
        if (strcmp(jtext(d, d->node[c].key), key) == 0)
            return c;
    return JNONE;
}

static bool jabsent(const jdoc *d, uint32_t i)
{
    return i == JNONE || d->node[i].kind == J_NULL;
}

/* The text of a string node, or NULL when i is not one. */
static const char *jstr(const jdoc *d, uint32_t i)
{
    return i != JNONE && d->node[i].kind == J_STR ? jtext(d, d->node[i].str) : NULL;
}

/* ---- Label sets --------------------------------------------------------------------------- */

typedef struct lpair {
    const char *name, *value;
} lpair;

static int lpair_cmp(const void *a, const void *b)
{
    return strcmp(((const lpair *)a)->name, ((const lpair *)b)->name);
}

static bool name_valid(const char *s)
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
static bool labelset(const jdoc *d, uint32_t obj, const char *what, size_t value_max, iocd_buf *out,
                     size_t *n_out, char *why, size_t whylen)
{
    lpair pairs[LABELS_MAX];
    size_t n = 0, i;
    uint32_t c;

    if (d->node[obj].kind != J_OBJ) {
        snprintf(why, whylen, "%s must be an object of strings", what);
        return false;
    }
    for (c = d->node[obj].child; c != JNONE; c = d->node[c].next) {
        const char *name = jtext(d, d->node[c].key), *value = jstr(d, c);
        if (value == NULL) {
            snprintf(why, whylen, "%s: the value of \"%.100s\" must be a string", what, name);
            return false;
        }
        if (!name_valid(name)) {
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
static bool time_field(const jdoc *d, uint32_t obj, const char *key, int64_t *ms, char *why,
                       size_t whylen)
{
    uint32_t i = jget(d, obj, key);
    const char *s = jstr(d, i);

    *ms = 0;
    if (jabsent(d, i) || (s != NULL && s[0] == '\0'))
        return true;
    if (s == NULL || query_time_parse(s, ms) != IOCD_OK) {
        snprintf(why, whylen, "%s must be an RFC 3339 time", key);
        return false;
    }
    if (*ms <= 0)
        *ms = 0;
    return true;
}

static bool alert_check(const jdoc *d, uint32_t it, iocd_buf *ls, iocd_buf *as, external_alert *a,
                        char *why, size_t whylen)
{
    uint32_t lab = jget(d, it, "labels"), ann = jget(d, it, "annotations");
    uint32_t url = jget(d, it, "generatorURL");
    const char *name;
    size_t n = 0;

    if (d->node[it].kind != J_OBJ) {
        snprintf(why, whylen, "not an object");
        return false;
    }
    if (jabsent(d, lab)) {
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
    if (!jabsent(d, ann) && !labelset(d, ann, "annotations", ANNOTATION_MAX, as, &n, why, whylen))
        return false;
    a->generator_url = "";
    if (!jabsent(d, url)) {
        a->generator_url = jstr(d, url);
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
    jdoc d;
    iocd_buf ls, as;
    size_t index = 0;
    uint32_t it;
    iocd_err err;

    err = jdoc_parse(text, len, POST_NODES_MAX, &d, errbuf, errlen);
    if (err != IOCD_OK)
        return err;
    if (d.node[0].kind != J_ARR) {
        snprintf(errbuf, errlen,
                 "expected a JSON array of alerts: [{\"labels\": {...}, \"annotations\": {...}, "
                 "\"startsAt\": ..., \"endsAt\": ...}]");
        jdoc_fini(&d);
        return IOCD_EPARSE;
    }
    if (d.node[0].n > ALERT_AM_BATCH_MAX) {
        snprintf(errbuf, errlen, "%u alerts in one request; at most %d", d.node[0].n,
                 ALERT_AM_BATCH_MAX);
        jdoc_fini(&d);
        return IOCD_ETOOBIG;
    }
    iocd_buf_init(&ls, 0);
    iocd_buf_init(&as, 0);
    for (it = d.node[0].child; err == IOCD_OK && it != JNONE; it = d.node[it].next) {
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
    jdoc_fini(&d);
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

/* ---- Matchers ----------------------------------------------------------------------------- */

/* Appends s as a PromQL double-quoted string. */
static iocd_err put_quoted(iocd_buf *b, const char *s)
{
    iocd_err err = iocd_buf_putc(b, '"');

    for (; err == IOCD_OK && *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\\' || c == '"')
            err = iocd_buf_printf(b, "\\%c", c);
        else if (c == '\n')
            err = iocd_buf_puts(b, "\\n");
        else if (c == '\r')
            err = iocd_buf_puts(b, "\\r");
        else if (c == '\t')
            err = iocd_buf_puts(b, "\\t");
        else if (c < 0x20 || c == 0x7f)
            err = iocd_buf_printf(b, "\\x%02x", c);
        else
            err = iocd_buf_putc(b, (char)c);
    }
    return err == IOCD_OK ? iocd_buf_putc(b, '"') : err;
}

/* Whether every matcher of sel (but those named skip) accepts labels. */
static bool sel_matches(const query_selector *sel, const char *labels, size_t len, const char *skip)
{
    size_t m;

    for (m = 0; m < sel->n; m++) {
        const char *v;
        if (skip != NULL && strcmp(sel->m[m].name, skip) == 0)
            continue;
        v = iocd_label_value(labels, len, sel->m[m].name);
        if (v == NULL)
            v = "";
        if (!query_matcher_matches(&sel->m[m], v, strlen(v)))
            return false;
    }
    return true;
}

/* Alertmanager's filter= values (alertname="x", severity=~"crit.*", job=api, or a {...}
 * list) as one selector. A first matcher on ANY_LABEL lets a filter match the empty string
 * (PromQL refuses a selector of only such matchers); sel_matches skips it. */
static iocd_err filter_parse(const char *const *filters, size_t n, query_selector *sel,
                             char *errbuf, size_t errlen)
{
    iocd_buf b;
    size_t i;
    iocd_err err;

    iocd_buf_init(&b, 1 << 20);
    err = iocd_buf_puts(&b, "{" ANY_LABEL "=\"1\"");
    for (i = 0; err == IOCD_OK && i < n; i++) {
        const char *f = filters[i], *p, *end;
        size_t len;
        while (*f == ' ')
            f++;
        len = strlen(f);
        while (len > 0 && f[len - 1] == ' ')
            len--;
        end = f + len;
        if (len >= 2 && f[0] == '{' && f[len - 1] == '}') {
            if (len > 2)
                err = iocd_buf_printf(&b, ",%.*s", (int)(len - 2), f + 1);
            continue;
        }
        for (p = f; (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
                    (p > f && is_digit(*p));
             p++)
            ;
        err = iocd_buf_printf(&b, ",%.*s", (int)(p - f), f);
        while (err == IOCD_OK && p < end && *p == ' ')
            p++;
        if (err == IOCD_OK &&
            (strncmp(p, "=~", 2) == 0 || strncmp(p, "!~", 2) == 0 || strncmp(p, "!=", 2) == 0)) {
            err = iocd_buf_append(&b, p, 2);
            p += 2;
        } else if (err == IOCD_OK && *p == '=') {
            err = iocd_buf_putc(&b, '=');
            p++;
        } else if (err == IOCD_OK) {
            snprintf(errbuf, errlen, "bad filter \"%.100s\": want name=\"value\" (=, !=, =~, !~)",
                     filters[i]);
            iocd_buf_fini(&b);
            return IOCD_EINVAL;
        }
        while (err == IOCD_OK && p < end && *p == ' ')
            p++;
        if (err == IOCD_OK && (*p == '"' || *p == '\'' || *p == '`'))
            err = iocd_buf_append(&b, p, (size_t)(end - p));
        else if (err == IOCD_OK) { /* unquoted: the rest is the value */
            char *v = iocd_strndup(p, (size_t)(end - p));
            err = v != NULL ? put_quoted(&b, v) : IOCD_ENOMEM;
            iocd_free(v);
        }
    }
    if (err == IOCD_OK)
        err = iocd_buf_putc(&b, '}');
    if (err == IOCD_OK && query_selector_parse(b.data, sel, errbuf, errlen) != IOCD_OK) {
        char why[256];
        snprintf(why, sizeof(why), "%s", errbuf);
        snprintf(errbuf, errlen, "bad filter: %s", why);
        err = IOCD_EINVAL;
    } else if (err != IOCD_OK) {
        snprintf(errbuf, errlen, "bad filter: %s", iocd_strerror(err));
        err = err == IOCD_ENOMEM ? err : IOCD_EINVAL;
    }
    iocd_buf_fini(&b);
    return err;
}

/* ---- Silences in Alertmanager's shape ----------------------------------------------------- */

typedef struct am_silence {
    char id[24];
    query_selector sel;
} am_silence;

typedef struct am_silences {
    am_silence *s;
    size_t n;
} am_silences;

static void silences_fini(am_silences *ss)
{
    size_t i;

    for (i = 0; i < ss->n; i++)
        query_selector_fini(&ss->s[i].sel);
    iocd_free(ss->s);
    ss->s = NULL;
    ss->n = 0;
}

/* Every silence of the center, parsed (alert_silences_list's JSON is the one source). */
static iocd_err silences_doc(alert_center *ac, jdoc *d)
{
    iocd_buf list;
    char why[256];
    iocd_err err;

    iocd_buf_init(&list, 0);
    err = alert_silences_list(ac, &list);
    if (err == IOCD_OK)
        err = jdoc_parse(list.data != NULL ? list.data : "[]", list.data != NULL ? list.len : 2,
                         LIST_NODES_MAX, d, why, sizeof(why));
    if (err == IOCD_OK && d->node[0].kind != J_ARR) {
        jdoc_fini(d);
        err = IOCD_ECORRUPT;
    }
    if (err != IOCD_OK && err != IOCD_ENOMEM)
        log_error("alerts", "the silence list does not parse", "err=%s", iocd_strerror(err));
    iocd_buf_fini(&list);
    return err;
}

static const char *num_or_str(const jdoc *d, uint32_t i)
{
    if (i == JNONE)
        return NULL;
    if (d->node[i].kind == J_NUM || d->node[i].kind == J_STR)
        return jtext(d, d->node[i].str);
    return NULL;
}

/* The active silences, with their selectors parsed. */
static iocd_err active_silences(alert_center *ac, am_silences *out)
{
    jdoc d;
    uint32_t it;
    size_t n = 0;
    iocd_err err = silences_doc(ac, &d);

    memset(out, 0, sizeof(*out));
    if (err != IOCD_OK)
        return err;
    out->s = iocd_calloc(d.node[0].n + 1, sizeof(*out->s));
    if (out->s == NULL) {
        jdoc_fini(&d);
        return IOCD_ENOMEM;
    }
    for (it = d.node[0].child; it != JNONE; it = d.node[it].next) {
        const char *state = jstr(&d, jget(&d, it, "state"));
        const char *id = num_or_str(&d, jget(&d, it, "id"));
        const char *m = jstr(&d, jget(&d, it, "matchers"));
        char why[256];
        if (state == NULL || strcmp(state, "active") != 0 || id == NULL || m == NULL)
            continue;
        if (query_selector_parse(m, &out->s[n].sel, why, sizeof(why)) != IOCD_OK)
            continue;
        snprintf(out->s[n].id, sizeof(out->s[n].id), "%s", id);
        n++;
    }
    out->n = n;
    jdoc_fini(&d);
    return IOCD_OK;
}

static iocd_err put_jstr(iocd_buf *b, const char *s)
{
    return iocd_buf_json_str(b, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

/* One silence of alert_silences_list as a gettableSilence. */
static iocd_err silence_am_json(const jdoc *d, uint32_t it, iocd_buf *b)
{
    static const char *const ops[][2] = {
        { "false", "true" }, { "false", "false" }, { "true", "true" }, { "true", "false" }
    };
    const char *id = num_or_str(d, jget(d, it, "id"));
    const char *m = jstr(d, jget(d, it, "matchers"));
    const char *state = jstr(d, jget(d, it, "state"));
    query_selector sel = { NULL, 0 };
    char why[256];
    size_t i;
    iocd_err err;

    if (m != NULL && query_selector_parse(m, &sel, why, sizeof(why)) != IOCD_OK)
        sel.n = 0;
    err = iocd_buf_puts(b, "{\"id\":");
    if (err == IOCD_OK)
        err = put_jstr(b, id);
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"status\":{\"state\":");
    if (err == IOCD_OK)
        err = put_jstr(b, state != NULL ? state : "expired");
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "},\"updatedAt\":");
    if (err == IOCD_OK)
        err = put_jstr(b, jstr(d, jget(d, it, "created_at")));
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"matchers\":[");
    for (i = 0; err == IOCD_OK && i < sel.n; i++) {
        err = iocd_buf_printf(b, "%s{\"name\":", i > 0 ? "," : "");
        if (err == IOCD_OK)
            err = put_jstr(b, sel.m[i].name);
        if (err == IOCD_OK)
            err = iocd_buf_puts(b, ",\"value\":");
        if (err == IOCD_OK)
            err = put_jstr(b, sel.m[i].value);
        if (err == IOCD_OK)
            err = iocd_buf_printf(b, ",\"isRegex\":%s,\"isEqual\":%s}", ops[sel.m[i].op][0],
                                  ops[sel.m[i].op][1]);
    }
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "],\"startsAt\":");
    if (err == IOCD_OK)
        err = put_jstr(b, jstr(d, jget(d, it, "starts_at")));
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"endsAt\":");
    if (err == IOCD_OK)
        err = put_jstr(b, jstr(d, jget(d, it, "ends_at")));
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"createdBy\":");
    if (err == IOCD_OK)
        err = put_jstr(b, jstr(d, jget(d, it, "created_by")));
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"comment\":");
    if (err == IOCD_OK)
        err = put_jstr(b, jstr(d, jget(d, it, "comment")));
    query_selector_fini(&sel);
    return err == IOCD_OK ? iocd_buf_putc(b, '}') : err;
}

/* Alertmanager's filter of silences: the labels a silence's equality matchers name must
 * satisfy every filter matcher. */
static bool silence_passes(const jdoc *d, uint32_t it, const query_selector *filter)
{
    const char *m = jstr(d, jget(d, it, "matchers"));
    query_selector sel = { NULL, 0 };
    iocd_buf labels;
    char why[256];
    bool ok;
    size_t i;

    if (filter == NULL)
        return true;
    if (m == NULL || query_selector_parse(m, &sel, why, sizeof(why)) != IOCD_OK)
        return false;
    iocd_buf_init(&labels, 0);
    for (i = 0; i < sel.n; i++)
        if (sel.m[i].op == QUERY_MATCH_EQ && sel.m[i].value[0] != '\0') {
            iocd_buf_append(&labels, sel.m[i].name, strlen(sel.m[i].name) + 1);
            iocd_buf_append(&labels, sel.m[i].value, strlen(sel.m[i].value) + 1);
        }
    ok = sel_matches(filter, labels.data != NULL ? labels.data : "", labels.len, ANY_LABEL);
    iocd_buf_fini(&labels);
    query_selector_fini(&sel);
    return ok;
}

iocd_err alert_am_silences_list(alert_center *ac, const char *const *filters, size_t n_filters,
                                iocd_buf *out, char *errbuf, size_t errlen)
{
    query_selector filter = { NULL, 0 };
    jdoc d;
    uint32_t it;
    bool first = true;
    iocd_err err;

    if (n_filters > 0) {
        err = filter_parse(filters, n_filters, &filter, errbuf, errlen);
        if (err != IOCD_OK)
            return err;
    }
    err = silences_doc(ac, &d);
    if (err != IOCD_OK) {
        query_selector_fini(&filter);
        snprintf(errbuf, errlen, "the silences cannot be read: %s", iocd_strerror(err));
        return err;
    }
    err = iocd_buf_putc(out, '[');
    for (it = d.node[0].child; err == IOCD_OK && it != JNONE; it = d.node[it].next) {
        if (!silence_passes(&d, it, n_filters > 0 ? &filter : NULL))
            continue;
        if (!first)
            err = iocd_buf_putc(out, ',');
        first = false;
        if (err == IOCD_OK)
            err = silence_am_json(&d, it, out);
    }
    if (err == IOCD_OK)
        err = iocd_buf_putc(out, ']');
    jdoc_fini(&d);
    query_selector_fini(&filter);
    return err;
}

iocd_err alert_am_silence_get(alert_center *ac, uint64_t id, iocd_buf *out)
{
    jdoc d;
    uint32_t it;
    char want[24];
    iocd_err err = silences_doc(ac, &d);

    if (err != IOCD_OK)
        return err;
    snprintf(want, sizeof(want), "%llu", (unsigned long long)id);
    err = IOCD_ENOTFOUND;
    for (it = d.node[0].child; it != JNONE; it = d.node[it].next) {
        const char *have = num_or_str(&d, jget(&d, it, "id"));
        if (have != NULL && strcmp(have, want) == 0) {
            err = silence_am_json(&d, it, out);
            break;
        }
    }
    jdoc_fini(&d);
    return err;
}

static bool bool_field(const jdoc *d, uint32_t obj, const char *key, bool dflt, bool *out)
{
    uint32_t i = jget(d, obj, key);

    *out = dflt;
    if (jabsent(d, i))
        return true;
    if (d->node[i].kind != J_BOOL)
        return false;
    *out = d->node[i].truth;
    return true;
}

/* Alertmanager's matchers as iocd's selector text: {name="v", name!~"v", ...}. */
static iocd_err matchers_text(const jdoc *d, uint32_t arr, iocd_buf *sel, char *errbuf,
                              size_t errlen)
{
    uint32_t it;
    size_t k = 0;
    iocd_err err;

    if (jabsent(d, arr) || d->node[arr].kind != J_ARR || d->node[arr].n == 0) {
        snprintf(errbuf, errlen, "matchers: at least one matcher is required");
        return IOCD_EINVAL;
    }
    if (d->node[arr].n > MATCHERS_MAX) {
        snprintf(errbuf, errlen, "matchers: at most %d", MATCHERS_MAX);
        return IOCD_EINVAL;
    }
    err = iocd_buf_putc(sel, '{');
    for (it = d->node[arr].child; err == IOCD_OK && it != JNONE; it = d->node[it].next) {
        const char *name = jstr(d, jget(d, it, "name"));
        const char *value = jstr(d, jget(d, it, "value"));
        bool is_regex, is_equal;
        k++;
        if (d->node[it].kind != J_OBJ || name == NULL || value == NULL) {
            snprintf(errbuf, errlen, "matcher %zu: \"name\" and \"value\" (strings) are required",
                     k);
            return IOCD_EINVAL;
        }
        if (!name_valid(name)) {
            snprintf(errbuf, errlen, "matcher %zu: invalid label name \"%.100s\"", k, name);
            return IOCD_EINVAL;
        }
        if (!bool_field(d, it, "isRegex", false, &is_regex) ||
            !bool_field(d, it, "isEqual", true, &is_equal)) {
            snprintf(errbuf, errlen, "matcher %zu: isRegex and isEqual must be true or false", k);
            return IOCD_EINVAL;
        }
        err = iocd_buf_printf(sel, "%s%s%s", k > 1 ? ", " : "", name,
                              is_equal ? (is_regex ? "=~" : "=") : (is_regex ? "!~" : "!="));
        if (err == IOCD_OK)
            err = put_quoted(sel, value);
    }
    return err == IOCD_OK ? iocd_buf_putc(sel, '}') : err;
}

iocd_err alert_am_silence_add(alert_center *ac, const char *body, size_t len, uint64_t *id_out,
                              char *errbuf, size_t errlen)
{
    jdoc d;
    iocd_buf sel, out;
    iocd_json_obj made;
    query_selector check = { NULL, 0 };
    const char *by, *comment, *idtext, *s;
    int64_t now = iocd_now_ms(), starts = 0, ends = 0;
    uint64_t old_id = 0;
    char why[256];
    iocd_err err;

    err = jdoc_parse(body, len, SILENCE_NODES_MAX, &d, errbuf, errlen);
    if (err != IOCD_OK)
        return err == IOCD_ETOOBIG ? IOCD_EINVAL : err;
    iocd_buf_init(&sel, 1 << 20);
    iocd_buf_init(&out, 0);
    memset(&made, 0, sizeof(made));
    if (d.node[0].kind != J_OBJ) {
        snprintf(errbuf, errlen,
                 "expected a JSON object: a silence with matchers, startsAt, "
                 "endsAt, createdBy and comment");
        err = IOCD_EPARSE;
        goto out;
    }
    err = matchers_text(&d, jget(&d, 0, "matchers"), &sel, errbuf, errlen);
    if (err != IOCD_OK)
        goto out;
    if (query_selector_parse(sel.data, &check, why, sizeof(why)) != IOCD_OK) {
        snprintf(errbuf, errlen, "matchers: %s", why);
        err = IOCD_EINVAL;
        goto out;
    }
    query_selector_fini(&check);
    by = jstr(&d, jget(&d, 0, "createdBy"));
    comment = jstr(&d, jget(&d, 0, "comment"));
    if (by == NULL || by[0] == '\0' || comment == NULL || comment[0] == '\0') {
        snprintf(errbuf, errlen, "createdBy and comment are required (strings)");
        err = IOCD_EINVAL;
        goto out;
    }
    s = jstr(&d, jget(&d, 0, "startsAt"));
    if (s != NULL && s[0] != '\0' && query_time_parse(s, &starts) != IOCD_OK) {
        snprintf(errbuf, errlen, "startsAt must be an RFC 3339 time");
        err = IOCD_EINVAL;
        goto out;
    }
    s = jstr(&d, jget(&d, 0, "endsAt"));
    if (s == NULL || query_time_parse(s, &ends) != IOCD_OK) {
        snprintf(errbuf, errlen, "endsAt (an RFC 3339 time) is required");
        err = IOCD_EINVAL;
        goto out;
    }
    if (ends <= now) {
        snprintf(errbuf, errlen, "end time can't be in the past");
        err = IOCD_EINVAL;
        goto out;
    }
    if (starts != 0 && ends <= starts) {
        snprintf(errbuf, errlen, "start time must be before end time");
        err = IOCD_EINVAL;
        goto out;
    }
    if (starts <= now)
        starts = 0; /* starts now, as Alertmanager does with a past start */
    /* An id updates that silence: it ends now and the new one takes its place. */
    idtext = num_or_str(&d, jget(&d, 0, "id"));
    if (idtext != NULL && idtext[0] != '\0') {
        char *end;
        old_id = strtoull(idtext, &end, 10);
        if (old_id == 0 || *end != '\0' || alert_silence_expire(ac, old_id, &out) != IOCD_OK) {
            snprintf(errbuf, errlen, "silence %.60s not found", idtext);
            err = IOCD_ENOTFOUND;
            goto out;
        }
        iocd_buf_reset(&out);
    }
    err = alert_silence_add(ac, sel.data, starts, ends, by, comment, &out, errbuf, errlen);
    if (err != IOCD_OK)
        goto out;
    if (iocd_json_object_parse(out.data, out.len, &made, why, sizeof(why)) != IOCD_OK ||
        (s = iocd_json_get(&made, "id", NULL)) == NULL) {
        snprintf(errbuf, errlen, "the silence was made but its id cannot be read");
        err = IOCD_ECORRUPT;
        goto out;
    }
    *id_out = strtoull(s, NULL, 10);
out:
    iocd_json_obj_fini(&made);
    iocd_buf_fini(&sel);
    iocd_buf_fini(&out);
    jdoc_fini(&d);
    return err;
}

/* ---- GET /api/v2/alerts ------------------------------------------------------------------- */

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
    *err = iocd_buf_puts(&text, "{" ANY_LABEL "=\"1\",r=~");
    if (*err == IOCD_OK)
        *err = put_quoted(&text, re);
    if (*err == IOCD_OK)
        *err = iocd_buf_putc(&text, '}');
    if (*err == IOCD_OK && query_selector_parse(text.data, &sel, errbuf, errlen) != IOCD_OK) {
        char why[256];
        snprintf(why, sizeof(why), "%s", errbuf);
        snprintf(errbuf, errlen, "bad receiver: %s", why);
        *err = IOCD_EINVAL;
    } else if (*err == IOCD_OK) {
        ok = sel_matches(&sel, "r\0" ALERT_AM_RECEIVER, sizeof("r\0" ALERT_AM_RECEIVER), ANY_LABEL);
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
    am_silences sil = { NULL, 0 };
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
        err = filter_parse(f->matchers, f->n_matchers, &filter, errbuf, errlen);
        if (err != IOCD_OK)
            return err;
    }
    err = active_silences(ac, &sil);
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
        if (f->n_matchers > 0 && !sel_matches(&filter, x->labels, x->labels_len, ANY_LABEL))
            continue;
        iocd_buf_reset(&by);
        for (k = 0; err == IOCD_OK && k < sil.n; k++)
            if (sel_matches(&sil.s[k].sel, x->labels, x->labels_len, NULL))
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
    silences_fini(&sil);
    query_selector_fini(&filter);
    return err;
}
