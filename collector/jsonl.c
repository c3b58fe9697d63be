/* collector/jsonl.c - VictoriaMetrics JSON lines (/api/v1/import):
 *   {"metric":{"__name__":"m","k":"v"},"values":[1,null,"NaN"],"timestamps":[1700000000000,...]}
 * A small strict JSON reader specialised for this shape: keys in any order, unknown keys
 * skipped (nesting capped), strings unescaped into a per-call scratch buffer. A line is
 * validated whole before any of its samples reaches the sink. */
#include "collector/collector_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LABELS_MAX  256
#define SKIP_DEPTH  32
#define ABSENT_BITS 0x7ff8dead0000beefULL

typedef struct jp {
    const char *start, *p, *end;
    const char *err;
    char errbuf[128];
} jp;

static void ws(jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n'))
        j->p++;
}

static bool fail(jp *j, const char *what)
{
    if (j->err == NULL) {
        snprintf(j->errbuf, sizeof(j->errbuf), "col %d: %s", (int)(j->p - j->start) + 1, what);
        j->err = j->errbuf;
    }
    return false;
}

static bool expect(jp *j, char c)
{
    char msg[32];

    ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return true;
    }
    snprintf(msg, sizeof(msg), "expected '%c'", c);
    return fail(j, msg);
}

static bool hex4(jp *j, uint32_t *out)
{
    uint32_t v = 0;
    int i;

    if (j->end - j->p < 4)
        return fail(j, "truncated \\u escape");
    for (i = 0; i < 4; i++) {
        char c = j->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return fail(j, "invalid \\u escape");
    }
    j->p += 4;
    *out = v;
    return true;
}

/* Reads a string into b (if non-NULL) as offset/len; the opening quote is next. */
static bool str(jp *j, iocd_buf *b, size_t *off, size_t *len)
{
    ws(j);
    if (j->p >= j->end || *j->p != '"')
        return fail(j, "expected a string");
    j->p++;
    if (b != NULL)
        *off = b->len;
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20)
            return fail(j, "control character in string");
        if (c >= 0x80) {
            /* Raw UTF-8: copy a whole valid sequence, or refuse the line. */
            size_t n = 1;
            while (n < 4 && j->p + n < j->end && ((unsigned char)j->p[n] & 0xC0) == 0x80)
                n++;
            while (n > 0 && !iocd_utf8_valid(j->p, n))
                n--;
            if (n == 0)
                return fail(j, "invalid UTF-8 in string");
            if (b != NULL && iocd_buf_append(b, j->p, n) != IOCD_OK)
                return fail(j, "string too long");
            j->p += n;
            continue;
        }
        if (c != '\\') {
            if (b != NULL && iocd_buf_putc(b, (char)c) != IOCD_OK)
                return fail(j, "string too long");
            j->p++;
            continue;
        }
        j->p++;
        if (j->p >= j->end)
            break;
        c = (unsigned char)*j->p++;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            break;
        case 'b':
            c = '\b';
            break;
        case 'f':
            c = '\f';
            break;
        case 'n':
            c = '\n';
            break;
        case 'r':
            c = '\r';
            break;
        case 't':
            c = '\t';
            break;
        case 'u': {
            uint32_t cp, lo;
            if (!hex4(j, &cp))
                return false;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u')
                    return fail(j, "lone surrogate in \\u escape");
                j->p += 2;
                if (!hex4(j, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return fail(j, "invalid surrogate pair");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return fail(j, "lone surrogate in \\u escape");
            }
            if (b != NULL && iocd_buf_utf8(b, cp) != IOCD_OK)
                return fail(j, "string too long");
            continue;
        }
        default:
            return fail(j, "invalid escape in string");
        }
        if (b != NULL && iocd_buf_putc(b, (char)c) != IOCD_OK)
            return fail(j, "string too long");
    }
    if (j->p >= j->end)
        return fail(j, "unterminated string");
    j->p++;
    if (b != NULL)
        *len = b->len - *off;
    return true;
}

/* A JSON number token; sets [s, e). */
static bool number(jp *j, const char **s, const char **e)
{
    const char *p = j->p;

    *s = p;
    if (p < j->end && *p == '-')
        p++;
    if (p >= j->end || *p < '0' || *p > '9')
        return fail(j, "expected a number");
    if (*p == '0' && p + 1 < j->end && p[1] >= '0' && p[1] <= '9')
        return fail(j, "leading zero in number");
    while (p < j->end && *p >= '0' && *p <= '9')
        p++;
    if (p < j->end && *p == '.') {
        p++;
        if (p >= j->end || *p < '0' || *p > '9')
            return fail(j, "digit expected after '.'");
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < j->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < j->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= j->end || *p < '0' || *p > '9')
            return fail(j, "digit expected in exponent");
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
    }
    j->p = p;
    *e = p;
    return true;
}

static bool literal(jp *j, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(j->end - j->p) >= n && memcmp(j->p, word, n) == 0) {
        j->p += n;
        return true;
    }
    return fail(j, "unexpected token");
}

/* Skips any value (iteratively bounded by SKIP_DEPTH). */
static bool skip_value(jp *j, int depth)
{
    const char *s, *e;

    ws(j);
    if (depth > SKIP_DEPTH)
        return fail(j, "nesting too deep");
    if (j->p >= j->end)
        return fail(j, "unexpected end of line");
    switch (*j->p) {
    case '"':
        return str(j, NULL, NULL, NULL);
    case 't':
        return literal(j, "true");
    case 'f':
        return literal(j, "false");
    case 'n':
        return literal(j, "null");
    case '{':
    case '[': {
        char close = *j->p == '{' ? '}' : ']';
        bool obj = close == '}';
        j->p++;
        ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return true;
        }
        for (;;) {
            if (obj && (!str(j, NULL, NULL, NULL) || !expect(j, ':')))
                return false;
            if (!skip_value(j, depth + 1))
                return false;
            ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            return expect(j, close);
        }
    }
    default:
        return number(j, &s, &e);
    }
}

typedef struct record {
    iocd_buf *scratch;
    size_t name_off[LABELS_MAX], name_len[LABELS_MAX], val_off[LABELS_MAX], val_len[LABELS_MAX];
    size_t n_labels;
    bool has_name, has_metric, has_values, has_ts;
    double *values;
    int64_t *ts;
    size_t n_values, n_ts, cap_values, cap_ts;
} record;

static bool grow(void **p, size_t *cap, size_t need, size_t elem)
{
    void *np;
    size_t cap2;

    if (need <= *cap)
        return true;
    cap2 = *cap != 0 ? *cap * 2 : 256;
    while (cap2 < need)
        cap2 *= 2;
    np = iocd_realloc(*p, cap2 * elem);
    if (np == NULL)
        return false;
    *p = np;
    *cap = cap2;
    return true;
}

static bool parse_metric(jp *j, record *r, const col_parse_limits *lim)
{
    if (!expect(j, '{'))
        return false;
    ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return true;
    }
    for (;;) {
        size_t i = r->n_labels, k;
        if (i == LABELS_MAX || (lim->labels_max != 0 && i >= lim->labels_max))
            return fail(j, "too many labels");
        if (!str(j, r->scratch, &r->name_off[i], &r->name_len[i]) || !expect(j, ':') ||
            !str(j, r->scratch, &r->val_off[i], &r->val_len[i]))
            return false;
        if ((lim->label_name_max != 0 && r->name_len[i] > lim->label_name_max) ||
            (lim->label_value_max != 0 && r->val_len[i] > lim->label_value_max))
            return fail(j, "label too long");
        for (k = 0; k < i; k++)
            if (r->name_len[k] == r->name_len[i] &&
                memcmp(r->scratch->data + r->name_off[k], r->scratch->data + r->name_off[i],
                       r->name_len[i]) == 0)
                return fail(j, "duplicate label");
        if (r->name_len[i] == 8 && memcmp(r->scratch->data + r->name_off[i], "__name__", 8) == 0) {
            if (r->val_len[i] == 0)
                return fail(j, "empty __name__");
            r->has_name = true;
        }
        r->n_labels++;
        ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        return expect(j, '}');
    }
}

static bool parse_values(jp *j, record *r)
{
    if (!expect(j, '['))
        return false;
    ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return true;
    }
    for (;;) {
        const char *s, *e;
        double v = 0;
        bool present = true;
        char tmp[400];
        ws(j);
        if (!grow((void **)&r->values, &r->cap_values, r->n_values + 1, sizeof(double)))
            return fail(j, "out of memory");
        if (j->p < j->end && *j->p == 'n') {
            if (!literal(j, "null"))
                return false;
            present = false;
        } else if (j->p < j->end && *j->p == '"') {
            size_t off = 0, len = 0;
            char small[16];
            iocd_buf b = { small, 0, sizeof(small), 8 }; /* on the stack: capped, never grown */
            small[0] = '\0';
            if (!str(j, &b, &off, &len))
                return fail(j, "special values must be \"NaN\", \"+Inf\", \"-Inf\" or \"Inf\"");
            if (len == 3 && memcmp(b.data, "NaN", 3) == 0)
                v = NAN;
            else if ((len == 4 && memcmp(b.data, "+Inf", 4) == 0) ||
                     (len == 3 && memcmp(b.data, "Inf", 3) == 0))
                v = INFINITY;
            else if (len == 4 && memcmp(b.data, "-Inf", 4) == 0)
                v = -INFINITY;
            else
                return fail(j, "special values must be \"NaN\", \"+Inf\", \"-Inf\" or \"Inf\"");
        } else {
            if (!number(j, &s, &e))
                return false;
            if ((size_t)(e - s) >= sizeof(tmp))
                return fail(j, "number too long");
            memcpy(tmp, s, (size_t)(e - s));
            tmp[e - s] = '\0';
            v = strtod(tmp, NULL);
            if (!isfinite(v))
                return fail(j, "number out of range");
        }
        if (!present) {
            /* null: marked with a NaN payload no JSON input can produce (numbers are finite
             * and "NaN" parses to the canonical NaN), dropped before the sink. */
            uint64_t bits = ABSENT_BITS;
            memcpy(&v, &bits, 8);
        }
        r->values[r->n_values] = v;
        r->n_values++;
        ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        return expect(j, ']');
    }
}

static bool parse_timestamps(jp *j, record *r)
{
    if (!expect(j, '['))
        return false;
    ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return true;
    }
    for (;;) {
        const char *s, *e;
        char tmp[32], *end;
        long long v;
        ws(j);
        if (!grow((void **)&r->ts, &r->cap_ts, r->n_ts + 1, sizeof(int64_t)))
            return fail(j, "out of memory");
        if (!number(j, &s, &e))
            return false;
        if ((size_t)(e - s) >= sizeof(tmp))
            return fail(j, "timestamp out of range");
        memcpy(tmp, s, (size_t)(e - s));
        tmp[e - s] = '\0';
        errno = 0;
        v = strtoll(tmp, &end, 10);
        if (*end != '\0')
            return fail(j, "timestamps must be integer milliseconds");
        if (errno != 0)
            return fail(j, "timestamp out of range");
        r->ts[r->n_ts++] = v;
        ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        return expect(j, ']');
    }
}

static bool is_absent(double v)
{
    uint64_t bits;

    memcpy(&bits, &v, 8);
    return bits == ABSENT_BITS;
}

static bool parse_record(jp *j, record *r, const col_parse_limits *lim)
{
    if (!expect(j, '{'))
        return false;
    for (;;) {
        size_t off = 0, len = 0;
        const char *key;
        if (!str(j, r->scratch, &off, &len) || !expect(j, ':'))
            return false;
        key = len != 0 ? r->scratch->data + off : ""; /* an empty key may leave no buffer */
        if (len == 6 && memcmp(key, "metric", 6) == 0) {
            if (r->has_metric)
                return fail(j, "duplicate key \"metric\"");
            r->has_metric = true;
            if (!parse_metric(j, r, lim))
                return false;
        } else if (len == 6 && memcmp(key, "values", 6) == 0) {
            if (r->has_values)
                return fail(j, "duplicate key \"values\"");
            r->has_values = true;
            if (!parse_values(j, r))
                return false;
        } else if (len == 10 && memcmp(key, "timestamps", 10) == 0) {
            if (r->has_ts)
                return fail(j, "duplicate key \"timestamps\"");
            r->has_ts = true;
            if (!parse_timestamps(j, r))
                return false;
        } else if (!skip_value(j, 0)) {
            return false;
        }
        ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (!expect(j, '}'))
            return false;
        ws(j);
        if (j->p != j->end)
            return fail(j, "unexpected text after the object");
        return true;
    }
}

iocd_err col_jsonl_parse(const char *buf, size_t len, uint64_t first_line,
                         const col_parse_limits *lim, const col_sink *sink, col_parse_stats *stats)
{
    const char *p = buf, *end = buf + len;
    uint64_t line_no = first_line != 0 ? first_line : 1, tagset = col_tagset_base();
    iocd_label labels[LABELS_MAX];
    iocd_buf scratch;
    record r;
    iocd_err err = IOCD_OK;

    memset(&r, 0, sizeof(r));
    iocd_buf_init(&scratch, lim->line_max != 0 ? lim->line_max : 0);
    while (p < end && err == IOCD_OK) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl != NULL ? nl : end;
        jp j;
        size_t i;
        if (le > p && le[-1] == '\r')
            le--;
        memset(&j, 0, sizeof(j));
        j.start = j.p = p;
        j.end = le;
        ws(&j);
        if (j.p == j.end)
            goto next;
        stats->lines++;
        iocd_buf_reset(&scratch);
        r.scratch = &scratch;
        r.n_labels = r.n_values = r.n_ts = 0;
        r.has_name = r.has_metric = r.has_values = r.has_ts = false;
        if (lim->line_max != 0 && (size_t)(le - p) > lim->line_max)
            fail(&j, "line too long");
        else if (parse_record(&j, &r, lim)) {
            if (!r.has_metric || !r.has_values || !r.has_ts)
                j.err = "missing one of \"metric\", \"values\", \"timestamps\"";
            else if (!r.has_name)
                j.err = "metric has no __name__";
            else if (r.n_values != r.n_ts)
                j.err = "values and timestamps differ in length";
        }
        if (j.err != NULL) {
            stats->rejected++;
            if (sink->reject != NULL)
                sink->reject(sink->ud, line_no, j.err);
            goto next;
        }
        /* __name__ first, the rest in order. */
        {
            size_t n = 1;
            for (i = 0; i < r.n_labels; i++) {
                iocd_label l = { scratch.data + r.name_off[i], r.name_len[i],
                                 scratch.data + r.val_off[i], r.val_len[i] };
                if (l.name_len == 8 && memcmp(l.name, "__name__", 8) == 0)
                    labels[0] = l;
                else
                    labels[n++] = l;
            }
            for (i = 0; i < r.n_values && err == IOCD_OK; i++) {
                if (is_absent(r.values[i]))
                    continue;
                stats->samples++;
                err = sink->sample(sink->ud, labels, n, tagset + (line_no & 0xffffffffu), r.ts[i],
                                   r.values[i]);
            }
        }
    next:
        line_no++;
        p = nl != NULL ? nl + 1 : end;
    }
    iocd_free(r.values);
    iocd_free(r.ts);
    iocd_buf_fini(&scratch);
    return err;
}
