/* query/query.h - PromQL over the store, and the time and duration syntax PromQL and the
 * Prometheus HTTP API share. Threads: every function here is reentrant. */
#ifndef IOCD_QUERY_H
#define IOCD_QUERY_H

#include "storage/storage.h"

/* Parses a PromQL duration ("90s", "1h30m", "100ms", "2y"; units ms s m h d w y) into
 * milliseconds. A bare number is taken as seconds when allow_bare_seconds (the HTTP API's
 * step= and timeout= accept "15" and "1.5"). Errors: IOCD_EPARSE, IOCD_ETOOBIG (overflow). */
iocd_err query_duration_parse(const char *s, bool allow_bare_seconds, int64_t *ms_out);
/* Formats ms as the shortest PromQL duration ("1h30m", "100ms", "0s"). */
void query_duration_format(int64_t ms, char *out, size_t cap);
/* Parses an API time: Unix seconds with optional fraction ("1700000000.123") or RFC 3339
 * ("2026-11-23T10:00:00Z", "2026-11-23T17:00:00.5+07:00"), into ms since the epoch.
 * Errors: IOCD_EPARSE. */
iocd_err query_time_parse(const char *s, int64_t *ms_out);

/* ---- Series selectors ------------------------------------------------------------------ */

typedef struct query_regex query_regex;

typedef enum query_match_op {
    QUERY_MATCH_EQ,  /* =  */
    QUERY_MATCH_NEQ, /* != */
    QUERY_MATCH_RE,  /* =~ */
    QUERY_MATCH_NRE, /* !~ */
} query_match_op;

typedef struct query_matcher {
    char *name;
    char *value;
    query_match_op op;
    query_regex *re; /* compiled for =~ and !~ */
} query_matcher;

/* A series selector: metric{label op "value", ...}; the metric name, when given, is an
 * __name__ = matcher. Owned by whoever called query_selector_parse. */
typedef struct query_selector {
    query_matcher *m;
    size_t n;
} query_selector;

/* Parses a PromQL series selector. Errors: IOCD_EPARSE with a message naming the position
 * ("1:12: unexpected character ...") in errbuf, including Prometheus' rule that a selector
 * needs at least one matcher that does not match the empty string. */
iocd_err query_selector_parse(const char *text, query_selector *out, char *errbuf, size_t errlen);
void query_selector_fini(query_selector *sel);
/* Whether the value of one label (empty when the series lacks it) satisfies m. */
bool query_matcher_matches(const query_matcher *m, const char *value, size_t len);

/* Ids of the series the selector picks, ascending. Errors: IOCD_ENOMEM, storage errors. */
iocd_err query_select(store *st, const query_selector *sel, uint64_t **ids_out, size_t *n_out);

/* ---- PromQL ---------------------------------------------------------------------------- */

/* The engine is a library: parse once (rules keep the parsed form), evaluate many times.
 * Semantics are Prometheus 2.42's (docs/PROMQL.md lists the deliberate differences). */

typedef struct query_expr query_expr; /* a parsed PromQL expression; immutable */

typedef enum query_type {
    QUERY_SCALAR,
    QUERY_VECTOR, /* instant vector */
    QUERY_MATRIX, /* range vector, and every range query's result */
    QUERY_STRING,
} query_type;

/* Parses text. Errors: IOCD_EPARSE with Prometheus' message and position ("1:7: parse
 * error: unexpected ...") in errbuf, IOCD_ENOMEM. */
iocd_err query_parse(const char *text, query_expr **out, char *errbuf, size_t errlen);
void query_expr_free(query_expr *e); /* NULL is a no-op */
query_type query_expr_type(const query_expr *e);
/* Whether every selector of e has only equality matchers with a value, and e no subquery: its
 * selection then reads postings alone, and its cost follows the series it selects and the
 * samples it holds, which max_series and max_samples cap as the evaluation goes. */
bool query_expr_bounded(const query_expr *e);

typedef struct query_limits {
    int64_t timeout_ms;       /* 0: no deadline */
    size_t max_series;        /* series one selector may select; 0 = unlimited */
    size_t max_samples;       /* samples loaded or held at once by a query; 0 = unlimited */
    size_t max_points;        /* steps of a range query; 0 = 11000 */
    int64_t lookback_ms;      /* 0 = 5 minutes */
    int64_t subquery_step_ms; /* a subquery's step when it gives none; 0 = 1 minute */
    /* min, max, count, sum and avg _over_time of a selector with a range at least this long
     * read sealed rollups where the answer is the raw one (docs/PROMQL.md); 0 = 1 hour,
     * negative = never (always raw samples) */
    int64_t rollup_range_ms;
} query_limits;

/* One series of a result: its labels ("name\0value\0" pairs sorted by name) and points
 * ascending by time. */
typedef struct query_series {
    char *labels;
    size_t labels_len;
    iocd_sample *points;
    size_t n;
} query_series;

/* A result. For QUERY_SCALAR and QUERY_STRING, t_ms is the evaluation time; for a vector,
 * every series has one point (the sample's value at t_ms); a matrix holds ranges. */
typedef struct query_result {
    query_type type;
    int64_t t_ms;
    double scalar;
    char *str;
    query_series *series;
    size_t n;
    uint64_t samples_loaded; /* samples read from the store, for stats and /metrics */
} query_result;

/* Evaluates e at start_ms (an instant query when step_ms == 0; end_ms is then ignored) or
 * at each of start_ms, start_ms + step_ms, ... <= end_ms (a range query, whose result is
 * always a matrix). Errors, with a sentence in errbuf: IOCD_EINVAL (an execution error such
 * as a many-to-many match, or a range vector given to a range query), IOCD_ELIMIT (a limit
 * reached), IOCD_ETIMEDOUT, IOCD_ENOMEM, storage errors. */
iocd_err query_eval(store *st, const query_limits *lim, const query_expr *e, int64_t start_ms,
                    int64_t end_ms, int64_t step_ms, query_result *out, char *errbuf,
                    size_t errlen);
void query_result_fini(query_result *r);

/* Walks the labels of a result series: calls fn(ud, name, value) per label. */
typedef void (*query_label_fn)(void *ud, const char *name, const char *value);
void query_labels_each(const char *labels, size_t len, query_label_fn fn, void *ud);

#endif
