/* collector/jsonl.c - VictoriaMetrics JSON lines (/api/v1/import), one series per line:
 *   {"metric":{"__name__":"m","k":"v"},"values":[1,null,"NaN"],"timestamps":[1700000000000,...]}
 * Each line is read twice with the JSON reader of json.c: a validating pass (syntax, labels,
 * limits, every value and timestamp) and, only if it passes, a feeding pass that walks the
 * values and timestamps arrays in lockstep. So a rejected line feeds nothing, and no memory
 * grows with the number of samples: the per-call scratch holds labels only. */
#include "collector/collector_int.h"
#include "collector/json_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DUP_SCAN_MAX 32 /* up to this many labels, duplicates are found pairwise, else sorted */

typedef struct jl_ctx {
    const col_parse_limits *lim;
    iocd_label *labels; /* labels[0] is __name__, then input order */
    iocd_label *sorted; /* duplicate check of many labels */
    size_t labels_cap;
    size_t n_labels;
    char *scratch; /* unescaped label text of the current line; never moves within a line */
    size_t scratch_cap, scratch_used;
    size_t values_off, ts_off; /* where the arrays start in the line (their '[') */
    size_t n_values, n_ts;
    bool oom;
    char why[192];
} jl_ctx;

static bool reason(jl_ctx *c, const char *fmt, ...) IOCD_PRINTF(2, 3);

/* Sets the line's reject reason; returns false for the callers' convenience. */
static bool reason(jl_ctx *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->why, sizeof(c->why), fmt, ap);
    va_end(ap);
    return false;
}

/* The reader's error, with its 1-based byte column in the line. */
static bool syntax(jl_ctx *c, const col_json *j)
{
    return reason(c, "col %zu: %s", j->err_off + 1, j->err != NULL ? j->err : "malformed JSON");
}

/* Reads the next token and requires tok; msg is the error when another token comes. */
static bool want(jl_ctx *c, col_json *j, col_json_tok tok, const char *msg)
{
    col_json_tok got = col_json_next(j);

    if (got == tok)
        return true;
    if (got != COL_JSON_ERROR)
        col_json_fail(j, msg);
    return syntax(c, j);
}

/* ---- Labels ---------------------------------------------------------------------------- */

static bool labels_reserve(jl_ctx *c, size_t n)
{
    iocd_label *l, *s;
    size_t cap;

    if (n <= c->labels_cap)
        return true;
    cap = c->labels_cap != 0 ? c->labels_cap * 2 : 16;
    while (cap < n)
        cap *= 2;
    l = iocd_realloc(c->labels, cap * sizeof(*l));
    if (l == NULL)
        goto oom;
    c->labels = l;
    s = iocd_realloc(c->sorted, cap * sizeof(*s));
    if (s == NULL)
        goto oom;
    c->sorted = s;
    c->labels_cap = cap;
    return true;
oom:
    c->oom = true;
    return reason(c, "out of memory");
}

/* The current string token, unescaped if needed into the line's scratch (whose capacity,
 * once set for a line, covers every string of it: unescaping never lengthens text). */
static bool take_str(jl_ctx *c, const col_json *j, size_t line_len, const char **s, size_t *len)
{
    char *p;
    size_t n;

    if (!j->escaped) {
        *s = j->ptr;
        *len = j->tok_len;
        return true;
    }
    if (c->scratch_used == 0 && c->scratch_cap < line_len) {
        p = iocd_realloc(c->scratch, line_len);
        if (p == NULL) {
            c->oom = true;
            return reason(c, "out of memory");
        }
        c->scratch = p;
        c->scratch_cap = line_len;
    }
    if (col_json_str(j, c->scratch + c->scratch_used, c->scratch_cap - c->scratch_used, &n) !=
        IOCD_OK)
        return reason(c, "internal error: label scratch too small"); /* not reached */
    *s = c->scratch + c->scratch_used;
    *len = n;
    c->scratch_used += n;
    return true;
}

static int label_cmp(const void *a, const void *b)
{
    const iocd_label *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int d = memcmp(x->name, y->name, n);

    if (d != 0)
        return d;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

static bool no_duplicates(jl_ctx *c)
{
    const iocd_label *l = c->labels, *dup = NULL;
    size_t n = c->n_labels, i, k;

    if (n <= DUP_SCAN_MAX) {
        for (i = 1; i < n && dup == NULL; i++)
            for (k = 0; k < i; k++)
                if (l[k].name_len == l[i].name_len &&
                    memcmp(l[k].name, l[i].name, l[i].name_len) == 0) {
                    dup = &l[i];
                    break;
                }
    } else {
        memcpy(c->sorted, l, n * sizeof(*l));
        qsort(c->sorted, n, sizeof(*l), label_cmp);
        for (i = 1; i < n && dup == NULL; i++)
            if (label_cmp(&c->sorted[i - 1], &c->sorted[i]) == 0)
                dup = &c->sorted[i];
    }
    if (dup != NULL)
        return reason(c, "duplicate label \"%.*s\"", (int)(dup->name_len < 64 ? dup->name_len : 64),
                      dup->name);
    return true;
}

/* "metric": {"name": "value", ...}; the OBJ_BEGIN is next. */
static bool read_metric(jl_ctx *c, col_json *j, size_t line_len)
{
    const col_parse_limits *lim = c->lim;
    bool have_name = false;
    iocd_label l;
    col_json_tok tok;

    if (!want(c, j, COL_JSON_OBJ_BEGIN, "\"metric\" must be an object"))
        return false;
    c->n_labels = 1; /* [0] is kept for __name__ */
    for (;;) {
        tok = col_json_next(j);
        if (tok == COL_JSON_OBJ_END)
            break;
        if (tok == COL_JSON_ERROR)
            return syntax(c, j);
        if (!take_str(c, j, line_len, &l.name, &l.name_len))
            return false;
        if (l.name_len == 0) {
            col_json_fail(j, "empty label name");
            return syntax(c, j);
        }
        if (!want(c, j, COL_JSON_STRING, "label values must be strings") ||
            !take_str(c, j, line_len, &l.value, &l.value_len))
            return false;
        if (lim->label_name_max != 0 && l.name_len > lim->label_name_max)
            return reason(c, "label too long: name of %zu bytes, max %zu", l.name_len,
                          lim->label_name_max);
        if (lim->label_value_max != 0 && l.value_len > lim->label_value_max)
            return reason(c, "label too long: value of %.*s is %zu bytes, max %zu",
                          (int)(l.name_len < 64 ? l.name_len : 64), l.name, l.value_len,
                          lim->label_value_max);
        if (!have_name && l.name_len == 8 && memcmp(l.name, "__name__", 8) == 0) {
            if (l.value_len == 0)
                return reason(c, "metric has an empty __name__");
            have_name = true;
            if (!labels_reserve(c, 1))
                return false;
            c->labels[0] = l;
            continue;
        }
        if (lim->labels_max != 0 && c->n_labels >= lim->labels_max)
            return reason(c, "too many labels (max %zu)", lim->labels_max);
        if (!labels_reserve(c, c->n_labels + 1))
            return false;
        c->labels[c->n_labels++] = l;
    }
    if (!have_name)
        return reason(c, "metric has no __name__");
    return no_duplicates(c);
}

/* ---- Values and timestamps ------------------------------------------------------------- */

/* The current token as a sample value. *present is false for null. Returns false with
 * j in the error state when the token is no valid value. */
static bool value_of(col_json *j, double *v, bool *present)
{
    *present = true;
    switch (j->tok) {
    case COL_JSON_NULL:
        *present = false;
        return true;
    case COL_JSON_NUMBER:
        if (col_json_double(j, v) == IOCD_OK)
            return true;
        col_json_fail(j, "number out of range");
        return false;
    case COL_JSON_STRING:
        if (col_json_str_eq(j, "NaN", 3))
            *v = NAN;
        else if (col_json_str_eq(j, "Inf", 3) || col_json_str_eq(j, "+Inf", 4))
            *v = INFINITY;
        else if (col_json_str_eq(j, "-Inf", 4))
            *v = -INFINITY;
        else
            break;
        return true;
    default:
        break;
    }
    col_json_fail(j, "values must be numbers, null, \"NaN\", \"Inf\", \"+Inf\" or \"-Inf\"");
    return false;
}

static bool ts_of(col_json *j, int64_t *t)
{
    iocd_err err = j->tok == COL_JSON_NUMBER ? col_json_int64(j, t) : IOCD_EPARSE;

    if (err == IOCD_OK)
        return true;
    col_json_fail(j, err == IOCD_ELIMIT ? "timestamp out of range"
                                        : "timestamps must be integer milliseconds");
    return false;
}

/* An array of values (is_ts false) or timestamps, validated and counted. */
static bool read_array(jl_ctx *c, col_json *j, bool is_ts, size_t *n_out)
{
    size_t n = 0;
    col_json_tok tok;
    bool present;
    double v;
    int64_t t;

    if (!want(c, j, COL_JSON_ARR_BEGIN,
              is_ts ? "\"timestamps\" must be an array" : "\"values\" must be an array"))
        return false;
    for (;;) {
        tok = col_json_next(j);
        if (tok == COL_JSON_ARR_END)
            break;
        if (tok == COL_JSON_ERROR)
            return syntax(c, j);
        if (is_ts ? !ts_of(j, &t) : !value_of(j, &v, &present))
            return syntax(c, j);
        n++;
    }
    *n_out = n;
    return true;
}

/* ---- Lines ----------------------------------------------------------------------------- */

/* The validating pass over one line: on success the labels are gathered and the arrays
 * located; otherwise c->why says why. */
static bool line_check(jl_ctx *c, const char *line, size_t len)
{
    bool seen_metric = false, seen_values = false, seen_ts = false, *seen;
    col_json j;
    col_json_tok tok;
    const char *key;

    col_json_init(&j, line, len);
    if (!want(c, &j, COL_JSON_OBJ_BEGIN, "expected '{'"))
        return false;
    for (;;) {
        tok = col_json_next(&j);
        if (tok == COL_JSON_OBJ_END)
            break;
        if (tok == COL_JSON_ERROR)
            return syntax(c, &j);
        if (col_json_str_eq(&j, "metric", 6)) {
            seen = &seen_metric;
            key = "metric";
        } else if (col_json_str_eq(&j, "values", 6)) {
            seen = &seen_values;
            key = "values";
        } else if (col_json_str_eq(&j, "timestamps", 10)) {
            seen = &seen_ts;
            key = "timestamps";
        } else {
            col_json_next(&j); /* unknown key: its value is skipped */
            if (col_json_skip(&j) != IOCD_OK)
                return syntax(c, &j);
            continue;
        }
        if (*seen)
            return reason(c, "col %zu: duplicate key \"%s\"", j.off + 1, key);
        *seen = true;
        if (seen == &seen_metric) {
            if (!read_metric(c, &j, len))
                return false;
        } else if (seen == &seen_values) {
            c->values_off = j.pos; /* the value follows after optional space and ':' */
            if (!read_array(c, &j, false, &c->n_values))
                return false;
        } else {
            c->ts_off = j.pos;
            if (!read_array(c, &j, true, &c->n_ts))
                return false;
        }
    }
    if (col_json_next(&j) != COL_JSON_END)
        return syntax(c, &j);
    if (!seen_metric || !seen_values || !seen_ts)
        return reason(c, "missing \"%s\"",
                      !seen_metric   ? "metric"
                      : !seen_values ? "values"
                                     : "timestamps");
    if (c->n_values != c->n_ts)
        return reason(c, "values and timestamps differ in length");
    return true;
}

/* Positions a reader inside a validated line just past the '[' of an array that starts
 * after the key ending at off (": [" follows, with optional whitespace). */
static void array_open(col_json *j, const char *line, size_t len, size_t off)
{
    size_t p = off;

    while (p < len && line[p] != '[')
        p++;
    col_json_init(j, line + p, len - p);
    col_json_next(j); /* ARR_BEGIN */
}

/* The feeding pass: values and timestamps in lockstep. */
static iocd_err line_feed(jl_ctx *c, const char *line, size_t len, const col_sink *sink,
                          col_parse_stats *stats)
{
    col_json jv, jt;
    bool present;
    double v = 0;
    int64_t t = 0;
    iocd_err err;

    array_open(&jv, line, len, c->values_off);
    array_open(&jt, line, len, c->ts_off);
    for (;;) {
        if (col_json_next(&jv) != COL_JSON_ARR_END)
            value_of(&jv, &v, &present);
        else
            break;
        col_json_next(&jt);
        ts_of(&jt, &t);
        IOCD_ASSERT(jv.tok != COL_JSON_ERROR && jt.tok != COL_JSON_ERROR); /* validated */
        if (!present)
            continue;
        stats->samples++;
        err = sink->sample(sink->ud, c->labels, c->n_labels, t, v);
        if (err != IOCD_OK)
            return err;
    }
    return IOCD_OK;
}

static bool is_blank(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return false;
    return true;
}

/* first_line 0 counts like 1: line numbers reported are never 0. */
iocd_err col_jsonl_parse(const char *buf, size_t len, uint64_t first_line,
                         const col_parse_limits *lim, const col_sink *sink, col_parse_stats *stats)
{
    static const col_parse_limits no_limits = { 0, 0, 0, 0 };
    const char *p = buf, *end = buf + len, *nl;
    uint64_t line_no = first_line != 0 ? first_line : 1;
    col_parse_stats local;
    size_t line_len;
    jl_ctx c;
    iocd_err err = IOCD_OK;

    memset(&c, 0, sizeof(c));
    c.lim = lim != NULL ? lim : &no_limits;
    if (stats == NULL) {
        memset(&local, 0, sizeof(local));
        stats = &local;
    }
    for (; p < end && err == IOCD_OK; p = nl != NULL ? nl + 1 : end, line_no++) {
        nl = memchr(p, '\n', (size_t)(end - p));
        line_len = (size_t)((nl != NULL ? nl : end) - p);
        if (line_len > 0 && p[line_len - 1] == '\r')
            line_len--;
        if (is_blank(p, line_len))
            continue;
        stats->lines++;
        c.scratch_used = 0;
        c.n_labels = 0;
        if (c.lim->line_max != 0 && line_len > c.lim->line_max) {
            reason(&c, "line too long (%zu bytes, max %zu)", line_len, c.lim->line_max);
        } else if (line_check(&c, p, line_len)) {
            err = line_feed(&c, p, line_len, sink, stats);
            continue;
        } else if (c.oom) {
            err = IOCD_ENOMEM;
            continue;
        }
        stats->rejected++;
        if (sink->reject != NULL)
            sink->reject(sink->ud, line_no, c.why);
    }
    iocd_free(c.labels);
    iocd_free(c.sorted);
    iocd_free(c.scratch);
    return err;
}
