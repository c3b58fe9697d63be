/* alerts/devices.c - the device registry: what a device is (kind, domain) and where it stands
 * (ward, address, latitude, longitude), uploaded as CSV or JSON, so that an incident about a
 * device tells a dispatcher where to send the crew. Kept in the data file (table "devices") in
 * 256 buckets by a hash of the id: a change rewrites the buckets it touches in one transaction,
 * synced before the call returns.
 * Invariant: the array in memory is what the store holds. A change is built aside, written,
 * then swapped in under ds->mu; writers are serialised by ds->write_mu, so a reader (an
 * incident being created) never waits for a disk write. */
#include "alerts/alerts_int.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEVICES_DEFAULT_MAX 100000
#define BUCKETS             256
#define ID_MAX              128  /* bytes of a device id */
#define TEXT_MAX            128  /* bytes of a kind, domain or ward */
#define ADDRESS_MAX         1024 /* bytes of an address */
#define COORD_MAX           64   /* bytes of a latitude or longitude as written */
#define CSV_COLUMNS_MAX     64
#define BUCKET_TAG          "v1" /* the stored bucket's format, first in its value */

static const char *const field_names[DEV_NFIELDS] = { "device",  "kind",     "domain",   "ward",
                                                      "address", "latitude", "longitude" };
static const size_t field_caps[DEV_NFIELDS] = { ID_MAX,      TEXT_MAX,  TEXT_MAX, TEXT_MAX,
                                                ADDRESS_MAX, COORD_MAX, COORD_MAX };

/* Column names (CSV) and keys (JSON), compared without ASCII case. */
static const struct {
    const char *name;
    int field;
} aliases[] = {
    { "device", DEV_ID },       { "id", DEV_ID },
    { "device_id", DEV_ID },    { "kind", DEV_KIND },
    { "domain", DEV_DOMAIN },   { "ward", DEV_WARD },
    { "address", DEV_ADDRESS }, { "latitude", DEV_LATITUDE },
    { "lat", DEV_LATITUDE },    { "longitude", DEV_LONGITUDE },
    { "lon", DEV_LONGITUDE },   { "lng", DEV_LONGITUDE },
};

/* ---- Checking a row ------------------------------------------------------------------------ */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* The field a column or key names (surrounding blanks and ASCII case ignored), or -1. */
static int field_of(const char *name)
{
    size_t len, i, k;

    while (is_blank(*name))
        name++;
    len = strlen(name);
    while (len > 0 && is_blank(name[len - 1]))
        len--;
    for (i = 0; i < IOCD_ARRAY_LEN(aliases); i++) {
        if (strlen(aliases[i].name) != len)
            continue;
        for (k = 0; k < len && lower(name[k]) == aliases[i].name[k]; k++)
            ;
        if (k == len)
            return aliases[i].field;
    }
    return -1;
}

/* Trims blanks in place; returns the start. */
static char *trim(char *s)
{
    size_t n;

    while (is_blank(*s))
        s++;
    n = strlen(s);
    while (n > 0 && is_blank(s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* A coordinate: a plain decimal number (no hex, inf or nan) within [-lim, lim]. */
static bool parse_coord(const char *s, int field, double lim, double *out, char *why, size_t cap)
{
    const char *p;
    char *end;
    double v = 0;
    bool ok = false;

    for (p = s;
         (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == '+' || *p == 'e' || *p == 'E';
         p++)
        ;
    if (*p == '\0' && p != s) {
        v = strtod(s, &end);
        ok = *end == '\0' && isfinite(v);
    }
    if (!ok) {
        if (strchr(s, ',') != NULL)
            snprintf(why, cap, "%s \"%.40s\" is not a number (decimals take a point)",
                     field_names[field], s);
        else
            snprintf(why, cap, "%s \"%.40s\" is not a number", field_names[field], s);
        return false;
    }
    if (v < -lim || v > lim) {
        snprintf(why, cap, "%s %.40s is out of range (-%.0f to %.0f)", field_names[field], s, lim,
                 lim);
        return false;
    }
    *out = v;
    return true;
}

/* Line breaks and tabs inside an address (a quoted CSV field may hold them) become one space. */
static void flatten(char *s)
{
    char *w = s, *start = s;

    for (; *s != '\0'; s++) {
        if (*s != '\r' && *s != '\n' && *s != '\t')
            *w++ = *s;
        else if (w == start || w[-1] != ' ')
            *w++ = ' ';
    }
    *w = '\0';
}

/* Checks raw fields (NUL-terminated and ours to change; NULL: not given) and fills r. */
static bool row_check(char *raw[DEV_NFIELDS], device_row *r, char *why, size_t cap)
{
    bool has_lat, has_lon;
    int i;

    for (i = 0; i < DEV_NFIELDS; i++) {
        char *s;
        size_t len, k;
        r->f[i] = "";
        if (raw[i] == NULL)
            continue;
        if (i == DEV_ADDRESS)
            flatten(raw[i]);
        s = trim(raw[i]);
        len = strlen(s);
        if (len > field_caps[i]) {
            snprintf(why, cap, "%s is longer than %zu bytes", field_names[i], field_caps[i]);
            return false;
        }
        if (!iocd_utf8_valid(s, len)) {
            snprintf(why, cap, "%s is not valid UTF-8 (save the file as UTF-8)", field_names[i]);
            return false;
        }
        for (k = 0; k < len; k++)
            if ((unsigned char)s[k] < 0x20 || s[k] == 0x7f) {
                snprintf(why, cap, "%s contains a control character", field_names[i]);
                return false;
            }
        r->f[i] = s;
    }
    if (r->f[DEV_ID][0] == '\0') {
        snprintf(why, cap, "no device id");
        return false;
    }
    has_lat = r->f[DEV_LATITUDE][0] != '\0';
    has_lon = r->f[DEV_LONGITUDE][0] != '\0';
    if (has_lat != has_lon) {
        snprintf(why, cap, "latitude and longitude go together: give both or neither");
        return false;
    }
    r->has_position = has_lat;
    if (has_lat && (!parse_coord(r->f[DEV_LATITUDE], DEV_LATITUDE, 90, &r->latitude, why, cap) ||
                    !parse_coord(r->f[DEV_LONGITUDE], DEV_LONGITUDE, 180, &r->longitude, why, cap)))
        return false;
    return true;
}

/* ---- CSV (RFC 4180) ----------------------------------------------------------------------- */

/* Lenient where spreadsheets are: a byte order mark, CRLF or LF, blanks around a quoted field,
 * a quote inside an unquoted field, empty lines and empty trailing fields are accepted. */

typedef struct csv {
    const char *p, *end;
    uint64_t line; /* the line p is on, from 1 */
    iocd_buf text; /* the record's fields, each NUL-terminated */
    size_t off[CSV_COLUMNS_MAX];
    size_t n; /* fields in the record (those past CSV_COLUMNS_MAX are counted, not kept) */
    char why[160];
} csv;

static void csv_note(csv *c, const char *why)
{
    if (c->why[0] == '\0')
        snprintf(c->why, sizeof(c->why), "%s", why);
}

static bool csv_stop(char ch)
{
    return ch == ',' || ch == '\n' || ch == '\r';
}

/* Reads the next record; *got is false at the end of the text. A malformed record is still
 * consumed whole, and c->why says what is wrong with it. */
static iocd_err csv_record(csv *c, bool *got)
{
    iocd_err err = IOCD_OK;

    *got = c->p < c->end;
    if (!*got)
        return IOCD_OK;
    iocd_buf_reset(&c->text);
    c->n = 0;
    c->why[0] = '\0';
    for (;;) {
        const char *q = c->p;
        if (c->n < CSV_COLUMNS_MAX)
            c->off[c->n] = c->text.len;
        while (q < c->end && is_blank(*q))
            q++;
        if (q < c->end && *q == '"') {
            bool closed = false;
            c->p = q + 1;
            while (err == IOCD_OK && c->p < c->end) {
                char ch = *c->p++;
                if (ch == '"') {
                    if (c->p < c->end && *c->p == '"') {
                        c->p++;
                        err = iocd_buf_putc(&c->text, '"');
                        continue;
                    }
                    closed = true;
                    break;
                }
                if (ch == '\n' || (ch == '\r' && (c->p >= c->end || *c->p != '\n')))
                    c->line++;
                if (ch == '\0')
                    csv_note(c, "a field holds a NUL byte");
                err = iocd_buf_putc(&c->text, ch);
            }
            if (!closed)
                csv_note(c, "a quoted field is not closed (a \" is missing)");
            while (c->p < c->end && is_blank(*c->p))
                c->p++;
            if (c->p < c->end && !csv_stop(*c->p)) {
                csv_note(c, "text after the closing quote of a field");
                while (c->p < c->end && !csv_stop(*c->p))
                    c->p++;
            }
        } else {
            while (err == IOCD_OK && c->p < c->end && !csv_stop(*c->p)) {
                if (*c->p == '\0')
                    csv_note(c, "a field holds a NUL byte");
                err = iocd_buf_putc(&c->text, *c->p++);
            }
        }
        if (err == IOCD_OK)
            err = iocd_buf_putc(&c->text, '\0');
        if (err != IOCD_OK)
            return err;
        c->n++;
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        break;
    }
    if (c->p < c->end && *c->p == '\r') {
        c->p++;
        if (c->p < c->end && *c->p == '\n')
            c->p++;
        c->line++;
    } else if (c->p < c->end && *c->p == '\n') {
        c->p++;
        c->line++;
    }
    return IOCD_OK;
}

static char *csv_field(csv *c, size_t i)
{
    return c->text.data + c->off[i];
}

static bool csv_blank(csv *c)
{
    return c->n == 1 && c->why[0] == '\0' && *trim(csv_field(c, 0)) == '\0';
}

static iocd_err csv_header(csv *c, uint64_t line, int *col, size_t *n_cols, char *errbuf,
                           size_t errlen)
{
    bool seen[DEV_NFIELDS] = { false };
    size_t i;

    if (c->why[0] != '\0') {
        snprintf(errbuf, errlen, "line %llu (the header): %s", (unsigned long long)line, c->why);
        return IOCD_EPARSE;
    }
    if (c->n > CSV_COLUMNS_MAX) {
        snprintf(errbuf, errlen, "line %llu (the header): more than %d columns",
                 (unsigned long long)line, CSV_COLUMNS_MAX);
        return IOCD_EPARSE;
    }
    for (i = 0; i < c->n; i++) {
        col[i] = field_of(csv_field(c, i));
        if (col[i] < 0)
            continue; /* a column of the sheet's own: ignored */
        if (seen[col[i]]) {
            snprintf(errbuf, errlen, "line %llu (the header): two columns give the %s",
                     (unsigned long long)line, field_names[col[i]]);
            return IOCD_EPARSE;
        }
        seen[col[i]] = true;
    }
    if (!seen[DEV_ID]) {
        snprintf(errbuf, errlen,
                 "line %llu (the header) names no \"device\" column; the columns are device, "
                 "kind, domain, ward, address, latitude, longitude",
                 (unsigned long long)line);
        return IOCD_EPARSE;
    }
    *n_cols = c->n;
    return IOCD_OK;
}

static iocd_err csv_row(csv *c, uint64_t line, const int *col, size_t n_cols,
                        const device_sink *sink)
{
    char *raw[DEV_NFIELDS] = { NULL };
    char why[200];
    device_row r;
    size_t i;

    if (c->why[0] != '\0') {
        sink->reject(sink->ud, line, c->why);
        return IOCD_OK;
    }
    if (c->n > CSV_COLUMNS_MAX) {
        snprintf(why, sizeof(why), "more than %d fields", CSV_COLUMNS_MAX);
        sink->reject(sink->ud, line, why);
        return IOCD_OK;
    }
    for (i = n_cols; i < c->n && *trim(csv_field(c, i)) == '\0'; i++)
        ;
    if (c->n < n_cols || i < c->n) {
        snprintf(why, sizeof(why), "%zu fields where the header has %zu", c->n, n_cols);
        sink->reject(sink->ud, line, why);
        return IOCD_OK;
    }
    for (i = 0; i < n_cols; i++)
        if (col[i] >= 0)
            raw[col[i]] = csv_field(c, i);
    memset(&r, 0, sizeof(r));
    r.line = line;
    if (!row_check(raw, &r, why, sizeof(why))) {
        sink->reject(sink->ud, line, why);
        return IOCD_OK;
    }
    return sink->row(sink->ud, &r);
}

iocd_err devices_parse_csv(const char *text, size_t len, const device_sink *sink, char *errbuf,
                           size_t errlen)
{
    csv c;
    int col[CSV_COLUMNS_MAX];
    size_t n_cols = 0;
    bool header = false, got = true;
    iocd_err err = IOCD_OK;

    memset(&c, 0, sizeof(c));
    c.p = text;
    c.end = text + len;
    c.line = 1;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        c.p += 3; /* the byte order mark spreadsheets write before UTF-8 */
    iocd_buf_init(&c.text, 0);
    while (err == IOCD_OK) {
        uint64_t line = c.line;
        err = csv_record(&c, &got);
        if (err != IOCD_OK || !got)
            break;
        if (csv_blank(&c))
            continue;
        if (!header) {
            err = csv_header(&c, line, col, &n_cols, errbuf, errlen);
            header = true;
        } else {
            err = csv_row(&c, line, col, n_cols, sink);
        }
    }
    if (err == IOCD_OK && !header) {
        snprintf(errbuf, errlen,
                 "no header row: the first line names the columns (device, kind, domain, ward, "
                 "address, latitude, longitude)");
        err = IOCD_EPARSE;
    }
    iocd_buf_fini(&c.text);
    return err;
}

/* ---- JSON: an array of flat objects -------------------------------------------------------- */

typedef struct jscan {
    const char *p, *end;
    uint64_t line;
} jscan;

static void jws(jscan *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n')) {
        if (*j->p == '\n')
            j->line++;
        j->p++;
    }
}

/* Skips one value by its outline (strings and brackets), so that a bad item can be rejected
 * alone; whether it is valid is the object parser's business. False: it does not end. */
static bool jskip(jscan *j)
{
    size_t depth = 0;
    const char *s = j->p;

    if (j->p >= j->end || *j->p == ',' || *j->p == ']' || *j->p == '}')
        return false;
    do {
        char ch;
        if (j->p >= j->end)
            return false;
        ch = *j->p;
        if (ch == '"') {
            for (j->p++; j->p < j->end && *j->p != '"'; j->p++) {
                if (*j->p == '\\' && j->p + 1 < j->end)
                    j->p++;
                if (*j->p == '\n')
                    j->line++;
            }
            if (j->p >= j->end)
                return false;
            j->p++;
        } else if (ch == '{' || ch == '[') {
            depth++;
            j->p++;
        } else if (ch == '}' || ch == ']') {
            depth--;
            j->p++;
        } else if (depth == 0) { /* a scalar */
            while (j->p < j->end && *j->p != ',' && *j->p != ']' && *j->p != '}' && *j->p != ' ' &&
                   *j->p != '\t' && *j->p != '\r' && *j->p != '\n')
                j->p++;
            return j->p > s;
        } else {
            if (ch == '\n')
                j->line++;
            j->p++;
        }
    } while (depth > 0);
    return true;
}

static iocd_err json_item(const char *s, size_t len, uint64_t line, size_t item,
                          const device_sink *sink)
{
    iocd_json_obj o;
    char *raw[DEV_NFIELDS] = { NULL };
    char why[200], perr[160];
    device_row r;
    bool ok = true;
    size_t k;
    iocd_err err;

    if (*s != '{') {
        snprintf(why, sizeof(why), "item %zu is not an object", item);
        sink->reject(sink->ud, line, why);
        return IOCD_OK;
    }
    err = iocd_json_object_parse(s, len, &o, perr, sizeof(perr));
    if (err == IOCD_ENOMEM)
        return err;
    if (err != IOCD_OK) {
        snprintf(why, sizeof(why), "item %zu: %s", item, perr);
        sink->reject(sink->ud, line, why);
        return IOCD_OK;
    }
    for (k = 0; ok && k < o.n; k++) {
        int f = field_of(o.key[k]);
        if (f < 0 || o.kind[k] == IOCD_JSON_NULL)
            continue; /* another key of the sender's, or nothing given */
        if (raw[f] != NULL) {
            snprintf(why, sizeof(why), "item %zu: two keys give the %s", item, field_names[f]);
            ok = false;
        } else if (o.kind[k] == IOCD_JSON_BOOL) {
            snprintf(why, sizeof(why), "item %zu: \"%s\" must be a string", item, o.key[k]);
            ok = false;
        } else {
            /* o.val[k] points into o.text, a buffer of ours until the fini below */
            raw[f] = o.text.data + (o.val[k] - o.text.data);
        }
    }
    if (ok) {
        memset(&r, 0, sizeof(r));
        r.line = line;
        ok = row_check(raw, &r, perr, sizeof(perr));
        if (ok)
            err = sink->row(sink->ud, &r);
        else
            snprintf(why, sizeof(why), "item %zu: %s", item, perr);
    }
    if (!ok)
        sink->reject(sink->ud, line, why);
    iocd_json_obj_fini(&o);
    return err;
}

iocd_err devices_parse_json(const char *text, size_t len, const device_sink *sink, char *errbuf,
                            size_t errlen)
{
    jscan j = { text, text + len, 1 };
    size_t item = 0;
    iocd_err err = IOCD_OK;

    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        j.p += 3;
    jws(&j);
    if (j.p >= j.end || *j.p != '[') {
        snprintf(errbuf, errlen, "line %llu: expected a JSON array of devices [{\"device\": ...}]",
                 (unsigned long long)j.line);
        return IOCD_EPARSE;
    }
    j.p++;
    jws(&j);
    if (j.p < j.end && *j.p == ']') {
        j.p++;
    } else {
        while (err == IOCD_OK) {
            const char *s;
            uint64_t line;
            jws(&j);
            s = j.p;
            line = j.line;
            item++;
            if (!jskip(&j)) {
                snprintf(errbuf, errlen, "line %llu: item %zu is broken JSON (it does not end)",
                         (unsigned long long)line, item);
                return IOCD_EPARSE;
            }
            err = json_item(s, (size_t)(j.p - s), line, item, sink);
            jws(&j);
            if (j.p < j.end && *j.p == ',') {
                j.p++;
                continue;
            }
            if (j.p < j.end && *j.p == ']') {
                j.p++;
                break;
            }
            if (err == IOCD_OK) {
                snprintf(errbuf, errlen, "line %llu: expected ',' or ']' after item %zu",
                         (unsigned long long)j.line, item);
                err = IOCD_EPARSE;
            }
        }
    }
    jws(&j);
    if (err == IOCD_OK && j.p != j.end) {
        snprintf(errbuf, errlen, "line %llu: text after the array", (unsigned long long)j.line);
        err = IOCD_EPARSE;
    }
    return err;
}

/* ---- The registry ---------------------------------------------------------------------------- */

typedef struct device {
    char *rec;  /* the stored form: the DEV_NFIELDS fields in order, each NUL-terminated */
    size_t len; /* of rec */
    const char *f[DEV_NFIELDS];
    double lat, lon;
    bool has_pos;
    uint16_t bucket;
} device;

struct alert_devices {
    store *st;
    size_t max;
    pthread_mutex_t write_mu; /* one change at a time, held across its store write */
    pthread_mutex_t mu;       /* dev and n: held to read them, and by a writer to swap them */
    device **dev;             /* sorted by id (bytewise) */
    size_t n;
    iocd_metric *m_devices, *m_rejected, *m_found, *m_unknown;
};

static uint16_t bucket_of(const char *id)
{
    uint32_t h = 2166136261u;

    for (; *id != '\0'; id++) {
        h ^= (unsigned char)*id;
        h *= 16777619u;
    }
    return (uint16_t)(h % BUCKETS);
}

static void device_free(device *d)
{
    if (d == NULL)
        return;
    iocd_free(d->rec);
    iocd_free(d);
}

/* A device from its stored form: rec holds exactly DEV_NFIELDS NUL-terminated strings. */
static device *device_build(const char *rec, size_t len)
{
    device *d = iocd_calloc(1, sizeof(*d));
    const char *p;
    int i;

    if (d == NULL)
        return NULL;
    d->rec = iocd_malloc(len);
    if (d->rec == NULL) {
        iocd_free(d);
        return NULL;
    }
    memcpy(d->rec, rec, len);
    d->len = len;
    for (i = 0, p = d->rec; i < DEV_NFIELDS; i++) {
        d->f[i] = p;
        p += strlen(p) + 1;
    }
    d->has_pos = d->f[DEV_LATITUDE][0] != '\0' && d->f[DEV_LONGITUDE][0] != '\0';
    if (d->has_pos) {
        d->lat = strtod(d->f[DEV_LATITUDE], NULL);
        d->lon = strtod(d->f[DEV_LONGITUDE], NULL);
    }
    d->bucket = bucket_of(d->f[DEV_ID]);
    return d;
}

static device *device_from_row(const device_row *r)
{
    iocd_buf b;
    device *d = NULL;
    iocd_err err = IOCD_OK;
    int i;

    iocd_buf_init(&b, 0);
    for (i = 0; err == IOCD_OK && i < DEV_NFIELDS; i++) {
        if (i == DEV_LATITUDE && r->has_position) /* the shortest text that reads back exactly */
            err = iocd_buf_float(&b, r->latitude);
        else if (i == DEV_LONGITUDE && r->has_position)
            err = iocd_buf_float(&b, r->longitude);
        else
            err = iocd_buf_puts(&b, r->f[i]);
        if (err == IOCD_OK)
            err = iocd_buf_putc(&b, '\0');
    }
    if (err == IOCD_OK)
        d = device_build(b.data, b.len);
    iocd_buf_fini(&b);
    return d;
}

/* Where id is in ds->dev, or where it would go; *found says which. Caller holds a lock. */
static size_t find(const alert_devices *ds, const char *id, bool *found)
{
    size_t lo = 0, hi = ds->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(ds->dev[mid]->f[DEV_ID], id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < ds->n && strcmp(ds->dev[lo]->f[DEV_ID], id) == 0;
    return lo;
}

static int cmp_device(const void *a, const void *b)
{
    const device *x = *(device *const *)a, *y = *(device *const *)b;

    return strcmp(x->f[DEV_ID], y->f[DEV_ID]);
}

/* ---- Storage: buckets of records ----------------------------------------------------------- */

typedef struct bucket_write {
    iocd_buf buf[BUCKETS];
    store_kv_op ops[BUCKETS];
    uint8_t key[BUCKETS][2];
} bucket_write;

/* Rewrites every touched bucket from devs (the registry to be), in one transaction. */
static iocd_err write_buckets(alert_devices *ds, device *const *devs, size_t n, const bool *touched)
{
    bucket_write *w = iocd_calloc(1, sizeof(*w));
    size_t i, n_ops = 0;
    iocd_err err = IOCD_OK;

    if (w == NULL)
        return IOCD_ENOMEM;
    for (i = 0; i < BUCKETS; i++) {
        iocd_buf_init(&w->buf[i], 0);
        if (touched[i] && err == IOCD_OK)
            err = iocd_buf_append(&w->buf[i], BUCKET_TAG, sizeof(BUCKET_TAG));
    }
    for (i = 0; err == IOCD_OK && i < n; i++)
        if (touched[devs[i]->bucket])
            err = iocd_buf_append(&w->buf[devs[i]->bucket], devs[i]->rec, devs[i]->len);
    for (i = 0; err == IOCD_OK && i < BUCKETS; i++) {
        bool empty = w->buf[i].len == sizeof(BUCKET_TAG);
        if (!touched[i])
            continue;
        w->key[i][0] = (uint8_t)(i >> 8);
        w->key[i][1] = (uint8_t)(i & 0xff);
        w->ops[n_ops++] = (store_kv_op){ "devices", w->key[i], 2, empty ? NULL : w->buf[i].data,
                                         empty ? 0 : w->buf[i].len };
    }
    if (err == IOCD_OK && n_ops > 0)
        err = store_kv_write(ds->st, w->ops, n_ops);
    for (i = 0; i < BUCKETS; i++)
        iocd_buf_fini(&w->buf[i]);
    iocd_free(w);
    return err;
}

static iocd_err push(device ***arr, size_t *n, size_t *cap, device *d)
{
    if (*n == *cap) {
        size_t c = *cap != 0 ? *cap * 2 : 64;
        device **g = iocd_realloc(*arr, c * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        *arr = g;
        *cap = c;
    }
    (*arr)[(*n)++] = d;
    return IOCD_OK;
}

typedef struct loader {
    alert_devices *ds;
    size_t cap;
} loader;

static iocd_err load_bucket(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    loader *l = ud;
    const char *p = val, *end = p + vlen;

    (void)key;
    (void)klen;
    if (vlen < sizeof(BUCKET_TAG) || memcmp(p, BUCKET_TAG, sizeof(BUCKET_TAG)) != 0) {
        log_error("alerts", "a stored bucket of devices has an unknown format and is skipped",
                  NULL);
        return IOCD_OK;
    }
    p += sizeof(BUCKET_TAG);
    while (p < end) {
        const char *s = p;
        device *d;
        int i;
        for (i = 0; i < DEV_NFIELDS && p < end; i++)
            p += strnlen(p, (size_t)(end - p)) + 1;
        if (i < DEV_NFIELDS || p > end) {
            log_error("alerts", "a stored bucket of devices is corrupt; the rest is skipped", NULL);
            break;
        }
        d = device_build(s, (size_t)(p - s));
        if (d == NULL || push(&l->ds->dev, &l->ds->n, &l->cap, d) != IOCD_OK) {
            device_free(d);
            return IOCD_ENOMEM;
        }
    }
    return IOCD_OK;
}

iocd_err devices_open(store *st, size_t max, alert_devices **out)
{
    alert_devices *ds = iocd_calloc(1, sizeof(*ds));
    loader l;
    size_t i, k;
    iocd_err err;

    if (ds == NULL)
        return IOCD_ENOMEM;
    ds->st = st;
    ds->max = max != 0 ? max : DEVICES_DEFAULT_MAX;
    pthread_mutex_init(&ds->write_mu, NULL);
    pthread_mutex_init(&ds->mu, NULL);
    ds->m_devices = iocd_gauge("iocd_devices", "Devices in the registry.");
    ds->m_rejected =
        iocd_counter("iocd_device_rows_rejected_total",
                     "Rows of device uploads refused (each with its line and reason).");
    ds->m_found = iocd_metric_get("iocd_device_lookups_total",
                                  "Incidents created about a device, by whether it is registered.",
                                  IOCD_METRIC_COUNTER, "result=\"found\"", NULL, 0);
    ds->m_unknown =
        iocd_metric_get("iocd_device_lookups_total",
                        "Incidents created about a device, by whether it is registered.",
                        IOCD_METRIC_COUNTER, "result=\"unknown\"", NULL, 0);
    l.ds = ds;
    l.cap = 0;
    err = store_kv_each(st, "devices", load_bucket, &l);
    if (err != IOCD_OK) {
        devices_close(ds);
        return err;
    }
    iocd_qsort(ds->dev, ds->n, sizeof(*ds->dev), cmp_device);
    for (i = 0, k = 0; i < ds->n; i++) { /* one record per id, whatever the file holds */
        if (k > 0 && strcmp(ds->dev[k - 1]->f[DEV_ID], ds->dev[i]->f[DEV_ID]) == 0)
            device_free(ds->dev[i]);
        else
            ds->dev[k++] = ds->dev[i];
    }
    ds->n = k;
    if (ds->n > ds->max)
        log_warn("alerts",
                 "the device registry holds more devices than its cap; uploads can "
                 "only replace or update them",
                 "devices=%zu max=%zu", ds->n, ds->max);
    iocd_metric_set(ds->m_devices, (double)ds->n);
    log_info("alerts", "devices loaded", "count=%zu", ds->n);
    *out = ds;
    return IOCD_OK;
}

void devices_close(alert_devices *ds)
{
    size_t i;

    if (ds == NULL)
        return;
    for (i = 0; i < ds->n; i++)
        device_free(ds->dev[i]);
    iocd_free(ds->dev);
    pthread_mutex_destroy(&ds->write_mu);
    pthread_mutex_destroy(&ds->mu);
    iocd_free(ds);
}

/* ---- Reading ----------------------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s[0] != '\0' ? iocd_strdup(s) : NULL;
}

void device_info_fini(device_info *d)
{
    iocd_free(d->kind);
    iocd_free(d->domain);
    iocd_free(d->ward);
    iocd_free(d->address);
    memset(d, 0, sizeof(*d));
}

iocd_err devices_lookup(alert_devices *ds, const char *id, device_info *out)
{
    device_info info;
    const device *d;
    bool found;
    size_t at;
    iocd_err err = IOCD_OK;

    memset(&info, 0, sizeof(info));
    pthread_mutex_lock(&ds->mu);
    at = find(ds, id, &found);
    if (found) {
        d = ds->dev[at];
        info.kind = dup_or_null(d->f[DEV_KIND]);
        info.domain = dup_or_null(d->f[DEV_DOMAIN]);
        info.ward = dup_or_null(d->f[DEV_WARD]);
        info.address = dup_or_null(d->f[DEV_ADDRESS]);
        info.latitude = d->lat;
        info.longitude = d->lon;
        info.has_position = d->has_pos;
        if ((info.kind == NULL && d->f[DEV_KIND][0] != '\0') ||
            (info.domain == NULL && d->f[DEV_DOMAIN][0] != '\0') ||
            (info.ward == NULL && d->f[DEV_WARD][0] != '\0') ||
            (info.address == NULL && d->f[DEV_ADDRESS][0] != '\0'))
            err = IOCD_ENOMEM;
    }
    pthread_mutex_unlock(&ds->mu);
    iocd_metric_add(found ? ds->m_found : ds->m_unknown, 1);
    if (!found)
        return IOCD_ENOTFOUND;
    if (err != IOCD_OK) {
        device_info_fini(&info);
        return err;
    }
    *out = info;
    return IOCD_OK;
}

static iocd_err put_text(iocd_buf *b, const char *name, const char *s)
{
    iocd_err err = iocd_buf_printf(b, ",\"%s\":", name);

    if (err != IOCD_OK)
        return err;
    return s[0] != '\0' ? iocd_buf_json_str(b, s, strlen(s)) : iocd_buf_puts(b, "null");
}

/* A device as uploads give it (GET's answer can be PUT back). */
static iocd_err device_json(const device *d, iocd_buf *b)
{
    iocd_err err = iocd_buf_puts(b, "{\"device\":");
    int i;

    if (err == IOCD_OK)
        err = iocd_buf_json_str(b, d->f[DEV_ID], strlen(d->f[DEV_ID]));
    for (i = DEV_KIND; err == IOCD_OK && i <= DEV_ADDRESS; i++)
        err = put_text(b, field_names[i], d->f[i]);
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"latitude\":");
    if (err == IOCD_OK)
        err = d->has_pos ? iocd_buf_float(b, d->lat) : iocd_buf_puts(b, "null");
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"longitude\":");
    if (err == IOCD_OK)
        err = d->has_pos ? iocd_buf_float(b, d->lon) : iocd_buf_puts(b, "null");
    return err == IOCD_OK ? iocd_buf_putc(b, '}') : err;
}

static bool eq_or_any(const char *want, const char *have)
{
    return want == NULL || want[0] == '\0' || strcmp(want, have) == 0;
}

static iocd_err devices_list(alert_devices *ds, const alert_device_filter *f, iocd_buf *out)
{
    size_t i, total = 0, shown = 0;
    iocd_err err = iocd_buf_puts(out, "{\"devices\":[");

    pthread_mutex_lock(&ds->mu);
    for (i = 0; err == IOCD_OK && i < ds->n; i++) {
        const device *d = ds->dev[i];
        if (!eq_or_any(f->ward, d->f[DEV_WARD]) || !eq_or_any(f->domain, d->f[DEV_DOMAIN]) ||
            !eq_or_any(f->kind, d->f[DEV_KIND]))
            continue;
        total++;
        if (total <= f->offset || (f->limit != 0 && shown >= f->limit))
            continue;
        if (shown++ > 0)
            err = iocd_buf_putc(out, ',');
        if (err == IOCD_OK)
            err = device_json(d, out);
    }
    pthread_mutex_unlock(&ds->mu);
    return err == IOCD_OK ? iocd_buf_printf(out, "],\"total\":%zu}", total) : err;
}

static iocd_err devices_get(alert_devices *ds, const char *id, iocd_buf *out)
{
    bool found;
    size_t at;
    iocd_err err;

    pthread_mutex_lock(&ds->mu);
    at = find(ds, id, &found);
    err = found ? device_json(ds->dev[at], out) : IOCD_ENOTFOUND;
    pthread_mutex_unlock(&ds->mu);
    return err;
}

/* ---- Changing ---------------------------------------------------------------------------- */

typedef struct pending {
    device *d; /* owned until the change is in (then NULL) */
    uint64_t line;
    bool dropped;
} pending;

typedef struct upload {
    pending *rows; /* in line order */
    size_t n, cap;
    alert_devices_result *res;
} upload;

/* Keeps the rejections with the lowest lines (the first ones a person fixes), in line order. */
static void result_reject(alert_devices_result *res, uint64_t line, const char *reason)
{
    size_t i;

    res->rejected++;
    if (res->n_errors == ALERT_DEVICES_ERRORS_MAX) {
        if (line >= res->errors[ALERT_DEVICES_ERRORS_MAX - 1].line)
            return;
        res->n_errors--;
    }
    for (i = res->n_errors; i > 0 && res->errors[i - 1].line > line; i--)
        res->errors[i] = res->errors[i - 1];
    res->errors[i].line = line;
    snprintf(res->errors[i].reason, sizeof(res->errors[i].reason), "%s", reason);
    res->n_errors++;
}

static void up_reject(void *ud, uint64_t line, const char *reason)
{
    upload *u = ud;

    result_reject(u->res, line, reason);
}

static iocd_err up_row(void *ud, const device_row *r)
{
    upload *u = ud;
    device *d;

    if (u->n == u->cap) {
        size_t cap = u->cap != 0 ? u->cap * 2 : 64;
        pending *g = iocd_realloc(u->rows, cap * sizeof(*g));
        if (g == NULL)
            return IOCD_ENOMEM;
        u->rows = g;
        u->cap = cap;
    }
    d = device_from_row(r);
    if (d == NULL)
        return IOCD_ENOMEM;
    u->rows[u->n++] = (pending){ d, r->line, false };
    return IOCD_OK;
}

static int cmp_pending(const void *a, const void *b)
{
    const pending *x = *(pending *const *)a, *y = *(pending *const *)b;
    int c = strcmp(x->d->f[DEV_ID], y->d->f[DEV_ID]);

    return c != 0 ? c : x->line < y->line ? -1 : x->line > y->line;
}

/* The rows that stand, sorted by id: an id's first row (later ones are rejected), within the
 * cap (rows past it, in line order, are rejected). Caller holds ds->write_mu. */
static iocd_err accept_rows(alert_devices *ds, upload *u, bool replace, device ***acc_out,
                            size_t *n_out)
{
    pending **ord = iocd_malloc((u->n + 1) * sizeof(*ord));
    device **acc = iocd_malloc((u->n + 1) * sizeof(*acc));
    size_t i, k, count = replace ? 0 : ds->n;
    char why[200];

    if (ord == NULL || acc == NULL) {
        iocd_free(ord);
        iocd_free(acc);
        return IOCD_ENOMEM;
    }
    for (i = 0; i < u->n; i++)
        ord[i] = &u->rows[i];
    iocd_qsort(ord, u->n, sizeof(*ord), cmp_pending);
    for (i = 1, k = 0; i < u->n; i++) { /* k: the first row of the current id */
        if (strcmp(ord[i]->d->f[DEV_ID], ord[k]->d->f[DEV_ID]) != 0) {
            k = i;
            continue;
        }
        ord[i]->dropped = true;
        snprintf(why, sizeof(why), "device \"%.100s\" is already on line %llu",
                 ord[i]->d->f[DEV_ID], (unsigned long long)ord[k]->line);
        result_reject(u->res, ord[i]->line, why);
    }
    for (i = 0; i < u->n; i++) {
        pending *p = &u->rows[i];
        bool exists = false;
        if (p->dropped)
            continue;
        if (!replace)
            find(ds, p->d->f[DEV_ID], &exists);
        if (exists)
            continue;
        if (count >= ds->max) {
            p->dropped = true;
            snprintf(why, sizeof(why), "the registry holds at most %zu devices", ds->max);
            result_reject(u->res, p->line, why);
            continue;
        }
        count++;
    }
    for (i = 0, k = 0; i < u->n; i++)
        if (!ord[i]->dropped)
            acc[k++] = ord[i]->d;
    iocd_free(ord);
    *acc_out = acc;
    *n_out = k;
    return IOCD_OK;
}

static iocd_err devices_apply(alert_devices *ds, alert_devices_format fmt, const char *body,
                              size_t len, bool replace, alert_devices_result *res, char *errbuf,
                              size_t errlen)
{
    upload u = { NULL, 0, 0, res };
    device_sink sink = { up_row, up_reject, &u };
    device **acc = NULL, **next = NULL, **gone = NULL, **old;
    bool touched[BUCKETS] = { false };
    size_t n_acc = 0, n_next = 0, n_gone = 0, i, k;
    iocd_err err;

    memset(res, 0, sizeof(*res));
    err = fmt == ALERT_DEVICES_JSON ? devices_parse_json(body, len, &sink, errbuf, errlen)
                                    : devices_parse_csv(body, len, &sink, errbuf, errlen);
    if (err != IOCD_OK)
        goto out;
    pthread_mutex_lock(&ds->write_mu);
    err = accept_rows(ds, &u, replace, &acc, &n_acc);
    if (err != IOCD_OK || (replace && n_acc == 0 && res->rejected > 0)) {
        res->total = ds->n; /* a replacement with nothing valid would only empty the registry */
        goto unlock;
    }
    next = iocd_malloc((ds->n + n_acc + 1) * sizeof(*next));
    gone = iocd_malloc((ds->n + 1) * sizeof(*gone));
    if (next == NULL || gone == NULL) {
        err = IOCD_ENOMEM;
        goto unlock;
    }
    for (i = 0, k = 0; i < ds->n || k < n_acc;) { /* merge: both sorted by id */
        int c = i == ds->n ? 1 : k == n_acc ? -1 : strcmp(ds->dev[i]->f[DEV_ID], acc[k]->f[DEV_ID]);
        if (c < 0 && !replace) {
            next[n_next++] = ds->dev[i++];
            continue;
        }
        if (c <= 0) { /* replaced, or (PUT) dropped */
            touched[ds->dev[i]->bucket] = true;
            gone[n_gone++] = ds->dev[i++];
            res->removed += c < 0;
        }
        if (c >= 0) {
            touched[acc[k]->bucket] = true;
            next[n_next++] = acc[k++];
        }
    }
    err = write_buckets(ds, next, n_next, touched);
    if (err != IOCD_OK)
        goto unlock;
    pthread_mutex_lock(&ds->mu);
    old = ds->dev;
    ds->dev = next;
    ds->n = n_next;
    pthread_mutex_unlock(&ds->mu);
    next = NULL;
    iocd_free(old);
    for (i = 0; i < n_gone; i++)
        device_free(gone[i]);
    for (i = 0; i < u.n; i++)
        if (!u.rows[i].dropped)
            u.rows[i].d = NULL; /* the registry's now */
    res->stored = n_acc;
    res->total = ds->n;
    iocd_metric_set(ds->m_devices, (double)ds->n);
    log_info("alerts", "devices changed", "mode=%s stored=%zu rejected=%zu removed=%zu total=%zu",
             replace ? "replace" : "update", res->stored, res->rejected, res->removed, res->total);
unlock:
    pthread_mutex_unlock(&ds->write_mu);
out:
    iocd_metric_add(ds->m_rejected, (double)res->rejected);
    for (i = 0; i < u.n; i++)
        device_free(u.rows[i].d);
    iocd_free(u.rows);
    iocd_free(acc);
    iocd_free(next);
    iocd_free(gone);
    return err;
}

static iocd_err devices_delete(alert_devices *ds, const char *id, iocd_buf *out)
{
    device **next = NULL, **old, *d;
    bool touched[BUCKETS] = { false }, found;
    size_t at;
    iocd_err err;

    pthread_mutex_lock(&ds->write_mu);
    at = find(ds, id, &found);
    if (!found) {
        err = IOCD_ENOTFOUND;
        goto out;
    }
    d = ds->dev[at];
    next = iocd_malloc(ds->n * sizeof(*next));
    err = next != NULL ? IOCD_OK : IOCD_ENOMEM;
    if (err == IOCD_OK && out != NULL)
        err = device_json(d, out);
    if (err != IOCD_OK)
        goto out;
    memcpy(next, ds->dev, at * sizeof(*next));
    memcpy(next + at, ds->dev + at + 1, (ds->n - at - 1) * sizeof(*next));
    touched[d->bucket] = true;
    err = write_buckets(ds, next, ds->n - 1, touched);
    if (err != IOCD_OK)
        goto out;
    pthread_mutex_lock(&ds->mu);
    old = ds->dev;
    ds->dev = next;
    ds->n--;
    pthread_mutex_unlock(&ds->mu);
    next = NULL;
    iocd_free(old);
    device_free(d);
    iocd_metric_set(ds->m_devices, (double)ds->n);
    log_info("alerts", "device removed", "device=%s total=%zu", id, ds->n);
out:
    pthread_mutex_unlock(&ds->write_mu);
    iocd_free(next);
    return err;
}

/* ---- The center's entry points ----------------------------------------------------------- */

iocd_err alert_devices_load(alert_center *ac, alert_devices_format fmt, const char *body,
                            size_t len, bool replace, alert_devices_result *res, char *errbuf,
                            size_t errlen)
{
    return devices_apply(alert_center_devices(ac), fmt, body, len, replace, res, errbuf, errlen);
}

iocd_err alert_devices_list(alert_center *ac, const alert_device_filter *f, iocd_buf *out)
{
    return devices_list(alert_center_devices(ac), f, out);
}

iocd_err alert_device_get(alert_center *ac, const char *id, iocd_buf *out)
{
    return devices_get(alert_center_devices(ac), id, out);
}

iocd_err alert_device_delete(alert_center *ac, const char *id, iocd_buf *out)
{
    return devices_delete(alert_center_devices(ac), id, out);
}
