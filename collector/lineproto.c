/* collector/lineproto.c - InfluxDB line protocol, mapped the way VictoriaMetrics does:
 * measurement m + field f -> metric m_f (just m for a field named "value"), tags -> labels.
 * One pass per line, no allocation per line or sample: names that need unescaping or
 * joining are built in one scratch buffer per call. A line is validated whole before any of
 * its samples reaches the sink, so a rejected line stores nothing. */
#include "collector/collector_int.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIELDS_MAX 256
#define LABELS_MAX 256 /* hard ceiling; opts->lim.labels_max is usually lower */

typedef struct field {
    const char *key;
    size_t key_len;
    bool key_escaped;
    double v;
    bool is_string;
} field;

typedef struct tag {
    const char *key, *value;
    size_t key_len, value_len;
    bool escaped;
} tag;

typedef struct line_ctx {
    const col_lp_opts *opts;
    const col_sink *sink;
    col_parse_stats *stats;
    iocd_buf scratch;
    iocd_label *labels;
    tag *tags;
    field *fields;
    uint64_t tagset; /* this call's base; + line number for a line's samples */
    char why[192];
} line_ctx;

uint64_t col_tagset_base(void)
{
    static _Atomic uint64_t next = 1;

    return atomic_fetch_add(&next, 1) << 32;
}

iocd_err col_precision_parse(const char *s, col_precision *out)
{
    static const struct {
        const char *name;
        col_precision p;
    } names[] = {
        { "ns", COL_PREC_NS }, { "n", COL_PREC_NS },         { "us", COL_PREC_US },
        { "u", COL_PREC_US },  { "\xC2\xB5s", COL_PREC_US }, { "ms", COL_PREC_MS },
        { "s", COL_PREC_S },   { "auto", COL_PREC_AUTO },
    };
    size_t i;

    for (i = 0; i < IOCD_ARRAY_LEN(names); i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].p;
            return IOCD_OK;
        }
    }
    return IOCD_EINVAL;
}

/* ---- Tokens ---------------------------------------------------------------------------- */

/* Stop-character sets for scan(), as lookup tables (strchr per byte was a tenth of the
 * ingest profile). */
typedef struct stopset {
    bool stop[256];
} stopset;

static stopset stops_measurement, stops_tag_key, stops_tag_value;

static void stopset_init(stopset *s, const char *chars)
{
    memset(s, 0, sizeof(*s));
    for (; *chars != '\0'; chars++)
        s->stop[(unsigned char)*chars] = true;
}

static pthread_once_t stops_once = PTHREAD_ONCE_INIT;

static void stops_build(void)
{
    stopset_init(&stops_measurement, ", ");
    stopset_init(&stops_tag_key, ",= ");
    stopset_init(&stops_tag_value, ", ");
}

/* Scans an escaped token up to one of the stop characters (outside escapes). Returns its
 * end; *escaped tells whether a backslash escape occurred. */
static const char *scan(const char *p, const char *end, const stopset *stops, bool *escaped)
{
    *escaped = false;
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '\\' && p + 1 < end) {
            *escaped = true;
            p += 2;
            continue;
        }
        if (stops->stop[c])
            break;
        p++;
    }
    return p;
}

/* Appends token [p, end) to the scratch buffer with escapes removed. */
static iocd_err unescape(iocd_buf *b, const char *p, const char *end)
{
    iocd_err err = IOCD_OK;

    while (p < end && err == IOCD_OK) {
        if (*p == '\\' && p + 1 < end &&
            (p[1] == ',' || p[1] == '=' || p[1] == ' ' || p[1] == '\\' || p[1] == '"')) {
            err = iocd_buf_putc(b, p[1]);
            p += 2;
        } else {
            err = iocd_buf_putc(b, *p++);
        }
    }
    return err;
}

/* A decimal integer as strtoll and strtoull (base 10) take one here, without their cost (a
 * copy to terminate it, then locale-aware scanning; 3% of ingest for the timestamps alone):
 * an optional '-' when signed, then 1 to 31 digits and nothing else; false on overflow. */
static bool parse_dec(const char *p, const char *end, bool is_unsigned, int64_t *v_out,
                      uint64_t *u_out)
{
    bool neg = false;
    uint64_t m = 0, limit;

    if (end - p <= 0 || end - p >= 32)
        return false;
    if (*p == '-' && !is_unsigned) {
        neg = true;
        p++;
    }
    if (p == end)
        return false;
    limit = is_unsigned ? UINT64_MAX : neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; p < end; p++) {
        unsigned d = (unsigned)((unsigned char)*p - '0');
        if (d > 9 || m > (limit - d) / 10)
            return false;
        m = m * 10 + d;
    }
    if (is_unsigned)
        *u_out = m;
    else
        *v_out = !neg ? (int64_t)m : m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m;
    return true;
}

static bool parse_int(const char *p, const char *end, bool is_unsigned, double *out)
{
    int64_t v = 0;
    uint64_t u = 0;

    if (!parse_dec(p, end, is_unsigned, &v, &u))
        return false;
    *out = is_unsigned ? (double)u : (double)v;
    return true;
}

/* Powers of ten exactly representable as doubles. */
static const double pow10_exact[] = { 1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                      1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                      1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22 };

/* An InfluxDB float: [-]digits[.digits][e[+-]digits] or [-].digits. Exact fast path when the
 * mantissa has at most 15 digits and the exponent is small (one correctly rounded multiply or
 * divide of exact operands); strtod otherwise. */
static bool parse_float(const char *p, const char *end, double *out)
{
    const char *s = p;
    uint64_t mant = 0;
    int digits = 0, frac = 0, exp10 = 0;
    bool neg = false, any = false;
    char tmp[64];
    char *e;

    if (s < end && (*s == '-' || *s == '+')) {
        neg = *s == '-';
        s++;
    }
    while (s < end && *s >= '0' && *s <= '9') {
        if (digits < 19)
            mant = mant * 10 + (uint64_t)(*s - '0');
        if (mant != 0 || digits > 0)
            digits++;
        any = true;
        s++;
    }
    if (s < end && *s == '.') {
        s++;
        while (s < end && *s >= '0' && *s <= '9') {
            if (digits < 19) {
                mant = mant * 10 + (uint64_t)(*s - '0');
                frac++;
            }
            if (mant != 0 || digits > 0)
                digits++;
            any = true;
            s++;
        }
    }
    if (!any)
        return false;
    if (s < end && (*s == 'e' || *s == 'E')) {
        int sign = 1, ev = 0;
        s++;
        if (s < end && (*s == '+' || *s == '-')) {
            sign = *s == '-' ? -1 : 1;
            s++;
        }
        if (s == end || *s < '0' || *s > '9')
            return false;
        while (s < end && *s >= '0' && *s <= '9') {
            if (ev < 10000)
                ev = ev * 10 + (*s - '0');
            s++;
        }
        exp10 = sign * ev;
    }
    if (s != end)
        return false;
    exp10 -= frac;
    if (digits <= 15 && exp10 >= -22 && exp10 <= 22) {
        double v = (double)mant;
        v = exp10 < 0 ? v / pow10_exact[-exp10] : v * pow10_exact[exp10];
        *out = neg ? -v : v;
        return true;
    }
    if ((size_t)(end - p) >= sizeof(tmp))
        return false;
    memcpy(tmp, p, (size_t)(end - p));
    tmp[end - p] = '\0';
    errno = 0;
    *out = strtod(tmp, &e);
    return *e == '\0' && isfinite(*out);
}

/* Parses one field value [p, end) (not a string). */
static bool parse_value(const char *p, const char *end, double *out, const char **why)
{
    size_t n = (size_t)(end - p);
    char last = n > 0 ? end[-1] : '\0';

    *why = "invalid field value";
    if (n == 0) {
        *why = "missing field value";
        return false;
    }
    if (last == 'i')
        return parse_int(p, end - 1, false, out);
    if (last == 'u')
        return parse_int(p, end - 1, true, out);
    switch (n) {
    case 1:
        if (*p == 't' || *p == 'T') {
            *out = 1;
            return true;
        }
        if (*p == 'f' || *p == 'F') {
            *out = 0;
            return true;
        }
        break;
    case 4:
        if (memcmp(p, "true", 4) == 0 || memcmp(p, "True", 4) == 0 || memcmp(p, "TRUE", 4) == 0) {
            *out = 1;
            return true;
        }
        break;
    case 5:
        if (memcmp(p, "false", 5) == 0 || memcmp(p, "False", 5) == 0 ||
            memcmp(p, "FALSE", 5) == 0) {
            *out = 0;
            return true;
        }
        break;
    default:
        break;
    }
    if (parse_float(p, end, out))
        return true;
    *why = "invalid field value";
    return false;
}

/* Converts a timestamp in unit prec to milliseconds, flooring. */
static bool to_ms(long long ts, col_precision prec, int64_t *out)
{
    long long div = 1, mul = 1, a = ts < 0 ? -ts : ts;

    if (prec == COL_PREC_AUTO) {
        if (ts == LLONG_MIN)
            return false;
        prec = a < 10000000000LL         ? COL_PREC_S
               : a < 10000000000000LL    ? COL_PREC_MS
               : a < 10000000000000000LL ? COL_PREC_US
                                         : COL_PREC_NS;
    }
    switch (prec) {
    case COL_PREC_NS:
        div = 1000000;
        break;
    case COL_PREC_US:
        div = 1000;
        break;
    case COL_PREC_MS:
        break;
    case COL_PREC_S:
        mul = 1000;
        break;
    case COL_PREC_AUTO:
        return false;
    }
    if (mul != 1) {
        if (ts > INT64_MAX / mul || ts < INT64_MIN / mul)
            return false;
        *out = ts * mul;
        return true;
    }
    *out = ts / div - ((ts % div != 0 && ts < 0) ? 1 : 0);
    return true;
}

/* ---- Lines ----------------------------------------------------------------------------- */

static void reject(line_ctx *c, uint64_t line_no, const char *fmt, ...) IOCD_PRINTF(3, 4);

static void reject(line_ctx *c, uint64_t line_no, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->why, sizeof(c->why), fmt, ap);
    va_end(ap);
    c->stats->rejected++;
    if (c->sink->reject != NULL)
        c->sink->reject(c->sink->ud, line_no, c->why);
}

/* Parses line [p, end) (no newline, CR stripped). */
static iocd_err parse_line(line_ctx *c, const char *p, const char *end, uint64_t line_no)
{
    const col_parse_limits *lim = &c->opts->lim;
    const char *m_start = p, *m_end, *q, *why = NULL;
    bool m_escaped = false, esc;
    size_t n_tags = 0, n_fields = 0, i;
    int64_t t_ms = c->opts->now_ms;
    iocd_err err = IOCD_OK;

    if (lim->line_max != 0 && (size_t)(end - p) > lim->line_max) {
        reject(c, line_no, "line too long (%zu bytes, max %zu)", (size_t)(end - p), lim->line_max);
        return IOCD_OK;
    }
    if (memchr(p, '\0', (size_t)(end - p)) != NULL) {
        reject(c, line_no, "NUL byte in line");
        return IOCD_OK;
    }
    m_end = scan(p, end, &stops_measurement, &m_escaped);
    if (m_end == m_start) {
        reject(c, line_no, "missing measurement");
        return IOCD_OK;
    }
    q = m_end;
    /* Tags. */
    while (q < end && *q == ',') {
        tag *t;
        const char *k = q + 1, *ke, *v, *ve;
        bool ek, ev;
        ke = scan(k, end, &stops_tag_key, &ek);
        if (ke == end || *ke != '=' || ke == k) {
            reject(c, line_no, ke == k ? "missing tag key" : "missing tag value");
            return IOCD_OK;
        }
        v = ke + 1;
        ve = scan(v, end, &stops_tag_value, &ev);
        if (ve == v) {
            reject(c, line_no, "missing tag value for '%.*s'", (int)(ke - k), k);
            return IOCD_OK;
        }
        if (memchr(v, '=', (size_t)(ve - v)) != NULL && !ev) {
            reject(c, line_no, "invalid tag value for '%.*s'", (int)(ke - k), k);
            return IOCD_OK;
        }
        if (n_tags + 1 >= (lim->labels_max != 0 ? lim->labels_max : LABELS_MAX)) {
            reject(c, line_no, "too many tags (max %zu labels)",
                   lim->labels_max != 0 ? lim->labels_max : (size_t)LABELS_MAX);
            return IOCD_OK;
        }
        if ((lim->label_name_max != 0 && (size_t)(ke - k) > lim->label_name_max) ||
            (lim->label_value_max != 0 && (size_t)(ve - v) > lim->label_value_max)) {
            reject(c, line_no, "tag '%.*s' too long", (int)((ke - k) < 64 ? (ke - k) : 64), k);
            return IOCD_OK;
        }
        t = &c->tags[n_tags++];
        t->key = k;
        t->key_len = (size_t)(ke - k);
        t->value = v;
        t->value_len = (size_t)(ve - v);
        t->escaped = ek || ev;
        q = ve;
    }
    if (q == end || *q != ' ') {
        reject(c, line_no, "missing fields");
        return IOCD_OK;
    }
    while (q < end && *q == ' ')
        q++;
    if (q == end) {
        reject(c, line_no, "missing fields");
        return IOCD_OK;
    }
    /* Fields. */
    for (;;) {
        field *f;
        const char *k = q, *ke, *v, *ve;
        ke = scan(k, end, &stops_tag_key, &esc);
        if (ke == end || *ke != '=' || ke == k) {
            reject(c, line_no, ke == k ? "missing field key" : "missing field value");
            return IOCD_OK;
        }
        if (n_fields == FIELDS_MAX) {
            reject(c, line_no, "too many fields (max %d)", FIELDS_MAX);
            return IOCD_OK;
        }
        f = &c->fields[n_fields++];
        f->key = k;
        f->key_len = (size_t)(ke - k);
        f->key_escaped = esc;
        f->is_string = false;
        v = ke + 1;
        if (v < end && *v == '"') {
            const char *s = v + 1;
            while (s < end && *s != '"') {
                if (*s == '\\' && s + 1 < end)
                    s++;
                s++;
            }
            if (s >= end) {
                reject(c, line_no, "unterminated string for field '%.*s'",
                       (int)(f->key_len < 64 ? f->key_len : 64), k);
                return IOCD_OK;
            }
            ve = s + 1;
            f->is_string = true;
        } else {
            ve = v;
            while (ve < end && *ve != ',' && *ve != ' ')
                ve++;
            if (!parse_value(v, ve, &f->v, &why)) {
                reject(c, line_no, "%s for '%.*s': '%.*s'", why,
                       (int)(f->key_len < 64 ? f->key_len : 64), k,
                       (int)((ve - v) < 40 ? (ve - v) : 40), v);
                return IOCD_OK;
            }
        }
        q = ve;
        if (q < end && *q == ',') {
            q++;
            continue;
        }
        break;
    }
    /* Timestamp. */
    while (q < end && *q == ' ')
        q++;
    if (q < end) {
        const char *ts = q;
        int64_t v;
        uint64_t unused;
        while (q < end && *q != ' ')
            q++;
        if (q - ts >= 32) {
            reject(c, line_no, "invalid timestamp '%.*s'", 31, ts);
            return IOCD_OK;
        }
        if (!parse_dec(ts, q, false, &v, &unused) || !to_ms(v, c->opts->precision, &t_ms)) {
            reject(c, line_no, "invalid timestamp '%.*s'", (int)(q - ts), ts);
            return IOCD_OK;
        }
        while (q < end && *q == ' ')
            q++;
        if (q < end) {
            reject(c, line_no, "unexpected text after the timestamp");
            return IOCD_OK;
        }
    }
    /* Emit: labels[0] = __name__, then the tags. Names are built in scratch. */
    iocd_buf_reset(&c->scratch);
    if (m_escaped)
        err = unescape(&c->scratch, m_start, m_end);
    else
        err = iocd_buf_append(&c->scratch, m_start, (size_t)(m_end - m_start));
    if (err != IOCD_OK)
        return err;
    {
        size_t m_len = c->scratch.len, tags_at;
        /* Unescaped tags go after the measurement; record offsets (key, value, end) and
         * take pointers only once the buffer has stopped growing for this sample. */
        size_t offs[3 * LABELS_MAX];
        for (i = 0; i < n_tags && err == IOCD_OK; i++) {
            if (!c->tags[i].escaped)
                continue;
            offs[3 * i] = c->scratch.len;
            err = unescape(&c->scratch, c->tags[i].key, c->tags[i].key + c->tags[i].key_len);
            offs[3 * i + 1] = c->scratch.len;
            if (err == IOCD_OK)
                err = unescape(&c->scratch, c->tags[i].value,
                               c->tags[i].value + c->tags[i].value_len);
            offs[3 * i + 2] = c->scratch.len;
        }
        tags_at = c->scratch.len;
        for (i = 0; i < n_fields && err == IOCD_OK; i++) {
            size_t j;
            if (c->fields[i].is_string) {
                c->stats->skipped_strings++;
                continue;
            }
            c->scratch.len = tags_at;
            /* Reserve first: appending from the buffer itself must not see it move. */
            err = iocd_buf_reserve(&c->scratch, m_len);
            if (err == IOCD_OK)
                err = iocd_buf_append(&c->scratch, c->scratch.data, m_len);
            if (err == IOCD_OK && !(c->fields[i].key_len == 5 && !c->fields[i].key_escaped &&
                                    memcmp(c->fields[i].key, "value", 5) == 0)) {
                err = iocd_buf_putc(&c->scratch, '_');
                if (err == IOCD_OK)
                    err =
                        c->fields[i].key_escaped
                            ? unescape(&c->scratch, c->fields[i].key,
                                       c->fields[i].key + c->fields[i].key_len)
                            : iocd_buf_append(&c->scratch, c->fields[i].key, c->fields[i].key_len);
            }
            if (err != IOCD_OK)
                break;
            c->labels[0].name = "__name__";
            c->labels[0].name_len = 8;
            c->labels[0].value = c->scratch.data + tags_at;
            c->labels[0].value_len = c->scratch.len - tags_at;
            for (j = 0; j < n_tags; j++) {
                const tag *t = &c->tags[j];
                if (t->escaped) {
                    c->labels[j + 1].name = c->scratch.data + offs[3 * j];
                    c->labels[j + 1].name_len = offs[3 * j + 1] - offs[3 * j];
                    c->labels[j + 1].value = c->scratch.data + offs[3 * j + 1];
                    c->labels[j + 1].value_len = offs[3 * j + 2] - offs[3 * j + 1];
                } else {
                    c->labels[j + 1].name = t->key;
                    c->labels[j + 1].name_len = t->key_len;
                    c->labels[j + 1].value = t->value;
                    c->labels[j + 1].value_len = t->value_len;
                }
            }
            c->stats->samples++;
            err = c->sink->sample(c->sink->ud, c->labels, n_tags + 1,
                                  c->tagset + (line_no & 0xffffffffu), t_ms, c->fields[i].v);
        }
    }
    return err;
}

iocd_err col_lp_parse(const char *buf, size_t len, const col_lp_opts *opts, const col_sink *sink,
                      col_parse_stats *stats)
{
    const char *p = buf, *end = buf + len;
    uint64_t line_no = opts->first_line != 0 ? opts->first_line : 1;
    line_ctx c;
    iocd_err err = IOCD_OK;

    pthread_once(&stops_once, stops_build);
    memset(&c, 0, sizeof(c));
    c.opts = opts;
    c.sink = sink;
    c.stats = stats;
    c.tagset = col_tagset_base();
    iocd_buf_init(&c.scratch, 0);
    c.labels = iocd_malloc(LABELS_MAX * sizeof(*c.labels));
    c.tags = iocd_malloc(LABELS_MAX * sizeof(*c.tags));
    c.fields = iocd_malloc(FIELDS_MAX * sizeof(*c.fields));
    if (c.labels == NULL || c.tags == NULL || c.fields == NULL ||
        iocd_buf_reserve(&c.scratch, 4096) != IOCD_OK) {
        err = IOCD_ENOMEM;
        goto out;
    }
    while (p < end && err == IOCD_OK) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *le, *s;
        bool extended;
        le = nl != NULL ? nl : end;
        if (le > p && le[-1] == '\r')
            le--;
        s = p;
        while (s < le && (*s == ' ' || *s == '\t'))
            s++;
        /* A quoted string field may hold a newline: the line continues past it. Most lines
         * have no quote at all, and skip this byte-by-byte walk (and the newline count below):
         * the two were a tenth of ingest's CPU. */
        extended = false;
        if (s < le && *s != '#' && memchr(s, '"', (size_t)(le - s)) == NULL) {
            stats->lines++;
            err = parse_line(&c, s, le, line_no);
        } else if (s < le && *s != '#') {
            const char *scanp = s;
            bool in_str = false;
            const char *line_end = le;
            for (;;) {
                for (; scanp < line_end; scanp++) {
                    if (*scanp == '\\' && scanp + 1 < line_end) {
                        scanp++;
                        continue;
                    }
                    if (*scanp == '"')
                        in_str = !in_str;
                }
                if (!in_str || nl == NULL)
                    break;
                extended = true;
                nl = memchr(nl + 1, '\n', (size_t)(end - nl - 1));
                line_end = nl != NULL ? nl : end;
                scanp = le;
                le = line_end;
                if (le > s && le[-1] == '\r')
                    le--;
                line_end = le;
            }
            stats->lines++;
            err = parse_line(&c, s, le, line_no);
        }
        for (const char *x = p; extended && x < (nl != NULL ? nl : end); x++)
            if (*x == '\n')
                line_no++;
        line_no++;
        p = nl != NULL ? nl + 1 : end;
    }
out:
    iocd_free(c.labels);
    iocd_free(c.tags);
    iocd_free(c.fields);
    iocd_buf_fini(&c.scratch);
    return err;
}
