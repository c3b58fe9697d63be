/* query/query_int.h - declarations shared by the files of query/ only. */
#ifndef IOCD_QUERY_INT_H
#define IOCD_QUERY_INT_H

#include "query/query.h"

/* ---- Regular expressions (query/regex.c is the only file that includes <pcre2.h>) ------- */

/* Compiles pattern with Prometheus' semantics: fully anchored, "." matches newlines, UTF-8.
 * Errors: IOCD_EPARSE with PCRE2's message and offset in errbuf. */
iocd_err query_regex_new(const char *pattern, query_regex **out, char *errbuf, size_t errlen);
/* True when the whole of s matches. A match that runs into PCRE2's backtracking limits counts
 * as no match (and is counted in /metrics), never as a hang. */
bool query_regex_match(const query_regex *re, const char *s, size_t len);
void query_regex_free(query_regex *re);

/* ---- Lexing shared by selectors and PromQL (query/select.c) ------------------------------- */

typedef struct pq_lexer {
    const char *src, *p;
    char *errbuf;
    size_t errlen;
} pq_lexer;

/* Writes "1:COL: parse error: ..." (COL from lx->p) to errbuf; returns IOCD_EPARSE. */
iocd_err pq_lex_error(pq_lexer *lx, const char *fmt, ...) IOCD_PRINTF(2, 3);
/* A quoted string at lx->p ("..." '...' `...`, Go escapes); *out is iocd_malloc'ed. */
iocd_err pq_lex_string(pq_lexer *lx, char **out);
/* The {...} of a selector at lx->p: matchers appended to sel. */
iocd_err pq_parse_braces(pq_lexer *lx, query_selector *sel);

/* ---- Label sets (query/lset.c) ---------------------------------------------------------- */

/* A label set as one string of "name\0value\0" pairs sorted by name: cheap to compare,
 * hash and copy. Owned by whoever holds the struct. */
typedef struct lset {
    char *s;
    uint32_t len;
} lset;

/* The value of label name (NULL when absent); borrowed from ls. */
const char *lset_get(const lset *ls, const char *name);
/* Copies src (ENOMEM possible). */
iocd_err lset_dup(const lset *src, lset *out);
void lset_fini(lset *ls);
bool lset_equal(const lset *a, const lset *b);
uint64_t lset_hash(const char *s, size_t len);
/* A copy of ls keeping only (keep) or dropping (!keep) the names given; drop_name also
 * removes __name__. */
iocd_err lset_filter(const lset *ls, char *const *names, size_t n, bool keep, bool drop_name,
                     lset *out);
/* A copy of ls with label name set to value (removed when value is "" ). */
iocd_err lset_set(const lset *ls, const char *name, const char *value, lset *out);
/* Builds from (name, value) pairs in any order; the last of a repeated name wins. */
iocd_err lset_from_pairs(const char **names, const char **values, size_t n, lset *out);
/* Appends ls as {a="b", ...} (for error messages). */
void lset_format(const lset *ls, char *out, size_t cap);

/* ---- Regex captures (query/regex.c) ----------------------------------------------------- */

/* Matches the whole of s against re and expands template with Go regexp's rules ($1, ${1},
 * $name, ${name}, $$) into out. Returns false (out untouched) when s does not match. */
bool query_regex_expand(const query_regex *re, const char *s, size_t len, const char *tmpl,
                        iocd_buf *out, iocd_err *err_out);

/* ---- Syntax tree (query/parse.c) -------------------------------------------------------- */

typedef enum pq_kind {
    PQ_NUM,
    PQ_STR,
    PQ_VSEL,  /* instant vector selector */
    PQ_MSEL,  /* range selector: sel[range] */
    PQ_SUBQ,  /* expr[range:step] */
    PQ_CALL,  /* function call */
    PQ_AGG,   /* aggregation */
    PQ_BIN,   /* binary operation */
    PQ_NEG,   /* unary minus */
    PQ_PAREN, /* (expr) */
} pq_kind;

typedef enum pq_op {
    PQ_OP_ADD,
    PQ_OP_SUB,
    PQ_OP_MUL,
    PQ_OP_DIV,
    PQ_OP_MOD,
    PQ_OP_POW,
    PQ_OP_ATAN2,
    PQ_OP_EQL, /* == */
    PQ_OP_NEQ,
    PQ_OP_GTR,
    PQ_OP_LSS,
    PQ_OP_GTE,
    PQ_OP_LTE,
    PQ_OP_AND,
    PQ_OP_OR,
    PQ_OP_UNLESS,
} pq_op;

typedef enum pq_agg {
    PQ_AGG_SUM,
    PQ_AGG_AVG,
    PQ_AGG_MIN,
    PQ_AGG_MAX,
    PQ_AGG_COUNT,
    PQ_AGG_GROUP,
    PQ_AGG_STDDEV,
    PQ_AGG_STDVAR,
    PQ_AGG_QUANTILE,
    PQ_AGG_TOPK,
    PQ_AGG_BOTTOMK,
    PQ_AGG_COUNT_VALUES,
} pq_agg;

typedef enum pq_at {
    PQ_AT_NONE,
    PQ_AT_TIME,
    PQ_AT_START,
    PQ_AT_END,
} pq_at;

typedef enum pq_card {
    PQ_CARD_ONE_TO_ONE,
    PQ_CARD_MANY_TO_ONE,  /* group_left */
    PQ_CARD_ONE_TO_MANY,  /* group_right */
    PQ_CARD_MANY_TO_MANY, /* set operators */
} pq_card;

typedef struct pq_func pq_func;
typedef struct pq_node pq_node;

struct pq_node {
    pq_kind kind;
    query_type type;
    int pos; /* byte offset in the query, for messages */
    double num;
    char *str;
    /* PQ_VSEL and PQ_SUBQ: offset and @ */
    query_selector sel;
    int64_t offset_ms;
    pq_at at;
    int64_t at_ms;
    /* PQ_MSEL, PQ_SUBQ */
    int64_t range_ms, step_ms; /* step 0: the default */
    /* PQ_CALL */
    const pq_func *fn;
    /* PQ_AGG */
    pq_agg agg;
    char **grouping;
    size_t n_grouping;
    bool without;
    /* PQ_BIN */
    pq_op op;
    bool ret_bool;
    pq_card card;
    bool on;
    char **match; /* on(...) or ignoring(...) labels */
    size_t n_match;
    char **include; /* group_left(...) labels */
    size_t n_include;
    /* children: PQ_CALL args; PQ_AGG [param,] expr; PQ_BIN lhs, rhs; PQ_NEG, PQ_PAREN,
     * PQ_MSEL (the PQ_VSEL), PQ_SUBQ expr */
    pq_node **args;
    size_t n_args;
};

struct query_expr {
    pq_node *root;
};

void pq_node_free(pq_node *n);

/* ---- Functions (query/func.c) ----------------------------------------------------------- */

typedef struct pq_eval pq_eval;
typedef struct pq_value pq_value;

typedef iocd_err (*pq_func_fn)(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *out);

struct pq_func {
    const char *name;
    query_type ret;
    query_type args[4];
    int n_args;     /* required */
    int n_optional; /* more that may follow (variadic: -1 for label_join's sources) */
    pq_func_fn fn;
    /* Its matrix argument, when a plain selector, is not read beforehand: the function reads
     * it series by series (pq_matrix_select, pq_matrix_read), never holding all of it. */
    bool streams_matrix;
};

const pq_func *pq_func_find(const char *name);

/* ---- Evaluation (query/eval.c) ---------------------------------------------------------- */

/* A series while evaluating: labels and, for instant vectors, one value per step (ok[i]
 * says whether step i has one); for range vectors, raw samples. */
typedef struct pq_series {
    lset ls;
    double *v;
    uint8_t *ok;
    int64_t *ts;      /* instant vectors from a selector: the sample's own time (timestamp()) */
    iocd_sample *pts; /* range vectors */
    size_t n_pts;
    bool drop_name; /* __name__ is to be dropped (applied lazily at the end) */
} pq_series;

struct pq_value {
    query_type type;
    double *scalar; /* QUERY_SCALAR: one per step */
    char *str;
    pq_series *s;
    size_t n;
    /* range vectors: how the windows are cut */
    int64_t range_ms, offset_ms;
    pq_at at;
    int64_t at_ms;
    const pq_node *sel;  /* the selector node (absent_over_time's labels), or NULL */
    const pq_node *lazy; /* a matrix selector left for the function to stream, or NULL */
};

/* The part of rate, increase and delta's extrapolation that depends only on a window's
 * sample times (func.c), kept per step so that series sampled at the same times skip it. */
typedef struct pq_win_memo {
    int64_t t0, tn; /* the window's first and last sample times */
    size_t n;       /* its samples; 0: nothing kept */
    double to_start, to_end, sampled, avg, factor;
} pq_win_memo;

struct pq_eval {
    store *st;
    query_limits lim;
    int64_t start, end, step; /* step > 0; an instant query has start == end */
    size_t n_steps;
    int64_t q_start, q_end; /* the whole query's, for @ start() and @ end() */
    int64_t deadline_ns;
    uint64_t samples_loaded;
    uint64_t samples_held;
    char *errbuf;
    size_t errlen;
    /* While a counter function runs over one series (func.c): the series' samples and, per
     * sample, how many counter resets happened up to it, so windows without one skip the
     * scan. NULL otherwise. */
    const iocd_sample *win_base;
    const uint32_t *win_resets; /* when !win_reset_free */
    bool win_reset_free;        /* the series has no reset at all */
    /* While a streamed series goes to its function: false when the read saw no value below
     * the one before it (so a counter has no reset); true (not known) otherwise. */
    bool win_may_drop;
    /* rate, increase and delta: per step, the window shape of the last series seen there
     * (series sampled at the same times share it), or NULL. */
    pq_win_memo *win_memo;
};

/* Time of step i. */
static inline int64_t pq_step_t(const pq_eval *ev, size_t i)
{
    return ev->start + (int64_t)i * ev->step;
}

iocd_err pq_error(pq_eval *ev, iocd_err err, const char *fmt, ...) IOCD_PRINTF(3, 4);
iocd_err pq_eval_node(pq_eval *ev, const pq_node *n, pq_value *out);
void pq_value_fini(pq_value *v);
/* A vector of cap series with per-step arrays allocated (not yet labelled). */
iocd_err pq_vector_alloc(pq_eval *ev, pq_value *out, size_t n);
iocd_err pq_scalar_alloc(pq_eval *ev, pq_value *out);
/* Gives series s its per-step arrays (values unset). Errors: IOCD_ENOMEM. */
iocd_err pq_series_alloc(pq_eval *ev, pq_series *s);
/* Counts n more samples held by the query against its limit.
 * Errors: IOCD_ELIMIT, with the message in ev->errbuf. */
iocd_err pq_hold(pq_eval *ev, uint64_t n);
/* Evaluates a vector selector; with want_ts each series also gets the times of the samples
 * chosen (timestamp() reports those, not the step times). */
iocd_err pq_eval_selector(pq_eval *ev, const pq_node *n, bool want_ts, pq_value *out);
/* A small hash index of label sets: finds or adds ls, giving its slot's index. */
typedef struct pq_index {
    uint32_t *slots; /* 0 empty, else entry + 1 */
    size_t cap;
    lset *keys; /* borrowed or owned, per the caller */
    size_t n, keys_cap;
} pq_index;
void pq_index_init(pq_index *ix);
void pq_index_fini(pq_index *ix); /* frees the table, not the keys' strings */
/* Index of ls, or, when absent and add, the new entry's index (ls's string is then owned by
 * the index's keys array, as given); SIZE_MAX when absent and !add. */
iocd_err pq_index_find(pq_index *ix, const lset *ls, bool add, size_t *idx_out);
/* Frees the keys' label sets (an index that owns them), then the table. */
void pq_index_free_keys(pq_index *ix);
/* Checks the deadline; IOCD_ETIMEDOUT with the message once it has passed. */
iocd_err pq_check_deadline(pq_eval *ev);
/* Drops __name__ from series marked drop_name, then removes series with no point and
 * refuses two series with the same labels at one step. */
iocd_err pq_vector_finish(pq_eval *ev, pq_value *v);
/* The same for a vector whose series are a selector's, one for one (so their label sets are
 * distinct): when all drop the same __name__ no two can become equal, and no index is built. */
iocd_err pq_vector_finish_selected(pq_eval *ev, pq_value *v);
/* A lazy matrix argument, streamed: pq_matrix_select gives m its window shape and the
 * selected series' labels (m->s[i].ls, no samples) and *ids_out (the caller frees it);
 * pq_matrix_read then hands each series' samples in the windows' span, staleness markers
 * left out, to fn with its index in m. A large selection is read on two threads: fn gets
 * each half's own copy of the evaluation state, and must touch only series i's output. */
typedef iocd_err (*pq_matrix_fn)(pq_eval *ev, void *ud, size_t i, const iocd_sample *s, size_t n);
iocd_err pq_matrix_select(pq_eval *ev, pq_value *m, uint64_t **ids_out);
/* ud_b is what fn gets on the second half's thread (ud_a on the first; the same is fine for a
 * fn that keeps no state of its own). */
iocd_err pq_matrix_read(pq_eval *ev, pq_value *m, const uint64_t *ids, pq_matrix_fn fn, void *ud_a,
                        void *ud_b);
/* The window [lo, hi] of range value v at step time t. */
void pq_window(const pq_eval *ev, const pq_value *v, int64_t t, int64_t *lo, int64_t *hi);
/* The time a selector or subquery is evaluated at for step time t (offset and @). */
int64_t pq_ref_time(const pq_eval *ev, pq_at at, int64_t at_ms, int64_t offset_ms, int64_t t);

/* ---- Rollups (query/rollup.c) ------------------------------------------------------------ */

/* A range function's value over one window's samples (func.c's r_* functions); false: none. */
typedef bool (*pq_window_fn)(pq_eval *ev, const pq_node *call, pq_value *args, size_t step,
                             const iocd_sample *s, size_t n, int64_t lo, int64_t hi, double *v_out);
/* The rollup resolution (STORE_ROLLUP_5M or _1H) with which call, one of min, max, count,
 * sum and avg _over_time, reads its matrix selector msel, or 0: read it raw (another
 * function, a range shorter than ev->lim.rollup_range_ms, or rollups turned off). */
int64_t pq_rollup_res(const pq_eval *ev, const pq_node *call, const pq_node *msel);
/* Evaluates call over the lazy matrix argument m from rollups at res and raw samples at the
 * windows' edges, into the vector out; raw is the function's raw path, used for a series
 * whose sum could differ beyond rounding. */
iocd_err pq_rollup_over_time(pq_eval *ev, const pq_node *call, pq_value *args, pq_value *m,
                             int64_t res, pq_window_fn raw, pq_value *out);

/* ---- Binary operators (query/binop.c) --------------------------------------------------- */

/* Evaluates a PQ_BIN node (both operands, then the operation for all steps). */
iocd_err pq_eval_binary(pq_eval *ev, const pq_node *n, pq_value *out);

/* ---- Aggregations (query/aggr.c) -------------------------------------------------------- */

/* Evaluates a PQ_AGG node (its parameter, its input, then the groups for all steps). */
iocd_err pq_eval_aggregation(pq_eval *ev, const pq_node *n, pq_value *out);
/* qsort orders of series by their first step's value, NaN last. */
int pq_by_value_asc(const void *a, const void *b);
int pq_by_value_desc(const void *a, const void *b);
/* Prometheus' quantile of v (sorted in place): linear interpolation between ranks. */
double pq_quantile(double q, double *v, size_t n);

#endif
