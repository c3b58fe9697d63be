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

#endif
