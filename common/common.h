/* common/common.h - the leaf code every module shares: errors, allocation, buffers, logging,
 * the clock and the self-metrics registry. This is common's whole interface; it includes
 * nothing of ours and no third-party header.
 * Threads: everything here is safe to call from any thread unless a comment says otherwise. */
#ifndef IOCD_COMMON_H
#define IOCD_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef IOCD_VERSION
#define IOCD_VERSION "0.1.0"
#endif
#ifndef IOCD_REVISION
#define IOCD_REVISION "unknown"
#endif

#if defined(__GNUC__) || defined(__clang__)
#define IOCD_PRINTF(fmt, first) __attribute__((format(printf, fmt, first)))
#define IOCD_UNUSED             __attribute__((unused))
/* Asks for the cache line at p ahead of its use (a hint; never faults). */
#define IOCD_PREFETCH(p) __builtin_prefetch(p)
#else
#define IOCD_PRINTF(fmt, first)
#define IOCD_UNUSED
#define IOCD_PREFETCH(p) ((void)(p))
#endif

/* ---- Errors ---------------------------------------------------------------------------- */

/* Codes are only ever appended: their numbers appear in logs and tests. */
#define IOCD_ERRORS(X)                                                                             \
    X(IOCD_OK, "ok")                                                                               \
    X(IOCD_ENOMEM, "out of memory")                                                                \
    X(IOCD_EINVAL, "invalid argument")                                                             \
    X(IOCD_EIO, "input/output error")                                                              \
    X(IOCD_ENOSPC, "no space left on device")                                                      \
    X(IOCD_ECORRUPT, "data is corrupt")                                                            \
    X(IOCD_ENOTFOUND, "not found")                                                                 \
    X(IOCD_ETOOBIG, "too big")                                                                     \
    X(IOCD_EEXIST, "already exists")                                                               \
    X(IOCD_ELOCKED, "held by another process")                                                     \
    X(IOCD_EPARSE, "parse error")                                                                  \
    X(IOCD_ELIMIT, "limit reached")                                                                \
    X(IOCD_ETIMEDOUT, "timed out")                                                                 \
    X(IOCD_EAGAIN, "try again")                                                                    \
    X(IOCD_EPERM, "permission denied")                                                             \
    X(IOCD_ECLOSED, "closed")                                                                      \
    X(IOCD_EADDRINUSE, "address already in use")                                                   \
    X(IOCD_EUNSUPPORTED, "unsupported")

typedef enum iocd_err {
#define IOCD_ERR_ENUM(code, text) code,
    IOCD_ERRORS(IOCD_ERR_ENUM)
#undef IOCD_ERR_ENUM
} iocd_err;

/* Static text for err; never NULL. */
const char *iocd_strerror(iocd_err err);
/* Symbolic name ("IOCD_ENOSPC"); never NULL. */
const char *iocd_errname(iocd_err err);
/* Maps an errno value to the closest iocd_err. */
iocd_err iocd_err_from_errno(int errnum);

/* Guards our own invariants in debug and test builds; never used on input. */
#ifdef IOCD_DEBUG
#define IOCD_ASSERT(cond) ((cond) ? (void)0 : iocd_assert_fail(#cond, __FILE__, __LINE__))
#else
#define IOCD_ASSERT(cond) ((void)0)
#endif
void iocd_assert_fail(const char *expr, const char *file, int line);

#define IOCD_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- Samples --------------------------------------------------------------------------- */

/* One sample of one series: milliseconds since the Unix epoch and a float64 kept bit-exact
 * (NaN payloads, such as Prometheus' staleness marker, included). */
typedef struct iocd_sample {
    int64_t t_ms;
    double v;
} iocd_sample;

/* One label of a series, borrowed from whatever buffer the caller parsed (not
 * NUL-terminated). A series is a list of labels whose first is usually __name__. */
typedef struct iocd_label {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} iocd_label;

/* ---- Allocation ------------------------------------------------------------------------ */

/* Every allocation goes through these: one seam for the memory gauge and fault injection.
 * They return NULL on failure (never abort); iocd_free(NULL) is a no-op. */
void *iocd_malloc(size_t len);
void *iocd_calloc(size_t n, size_t len);
void *iocd_realloc(void *p, size_t len);
void iocd_free(void *p);
char *iocd_strdup(const char *s);
char *iocd_strndup(const char *s, size_t len);
/* The value of label `name` in a label set written "name\0value\0name\0value\0...", or NULL. */
const char *iocd_label_value(const char *labels, size_t len, const char *name);
/* qsort that accepts an empty array given as NULL (qsort itself may not be passed NULL). */
void iocd_qsort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *));
/* Bytes currently allocated through iocd_malloc and friends. */
size_t iocd_mem_used(void);
/* In an IOCD_FAULT build, makes the nth allocation from now fail (0 disables); returns
 * whether a fault has fired since the last call. Without IOCD_FAULT it does nothing. */
void iocd_fault_set(long nth);
bool iocd_fault_fired(void);

/* ---- Buffers --------------------------------------------------------------------------- */

/* A growable byte buffer with a hard cap; data is always NUL-terminated for convenience.
 * Owner: whoever called iocd_buf_init; release with iocd_buf_fini. */
typedef struct iocd_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max; /* appends past this fail with IOCD_ETOOBIG; 0 = no cap */
} iocd_buf;

void iocd_buf_init(iocd_buf *b, size_t max);
void iocd_buf_fini(iocd_buf *b);
void iocd_buf_reset(iocd_buf *b);
iocd_err iocd_buf_grow_(iocd_buf *b, size_t extra);
/* Room for extra more bytes (and the terminating NUL). Inline: ingest calls it per sample. */
static inline iocd_err iocd_buf_reserve(iocd_buf *b, size_t extra)
{
    if (extra < b->cap - b->len && (b->max == 0 || extra <= b->max - b->len))
        return IOCD_OK;
    return iocd_buf_grow_(b, extra);
}
iocd_err iocd_buf_append(iocd_buf *b, const void *data, size_t len);
iocd_err iocd_buf_puts(iocd_buf *b, const char *s);
iocd_err iocd_buf_putc(iocd_buf *b, char c);
iocd_err iocd_buf_printf(iocd_buf *b, const char *fmt, ...) IOCD_PRINTF(2, 3);
iocd_err iocd_buf_vprintf(iocd_buf *b, const char *fmt, va_list ap) IOCD_PRINTF(2, 0);
/* Appends s as a JSON string literal (quotes included), escaping as RFC 8259 requires.
 * Invalid UTF-8 bytes become U+FFFD so the output is always valid JSON. */
iocd_err iocd_buf_json_str(iocd_buf *b, const char *s, size_t len);
/* Whether s is valid UTF-8 (no overlong forms, surrogates or code points over U+10FFFF). */
bool iocd_utf8_valid(const char *s, size_t len);
/* Appends code point cp (at most U+10FFFF) as UTF-8. */
iocd_err iocd_buf_utf8(iocd_buf *b, uint32_t cp);
/* Appends a float the way Prometheus' JSON does ("NaN", "+Inf", shortest round-trip). */
iocd_err iocd_buf_float(iocd_buf *b, double v);
/* Hands the bytes to the caller (who frees them with iocd_free) and empties b. */
char *iocd_buf_take(iocd_buf *b, size_t *len_out);

/* ---- Flat JSON objects (common/json.c) ----------------------------------------------------- */

#define IOCD_JSON_KEYS_MAX 64

typedef enum iocd_json_kind {
    IOCD_JSON_STRING,
    IOCD_JSON_NUMBER, /* the number's text, as written */
    IOCD_JSON_BOOL,   /* "true" or "false" */
    IOCD_JSON_NULL,
} iocd_json_kind;

/* A parsed flat object: keys and values (NUL-terminated, unescaped) point into text. */
typedef struct iocd_json_obj {
    iocd_buf text;
    const char *key[IOCD_JSON_KEYS_MAX], *val[IOCD_JSON_KEYS_MAX];
    iocd_json_kind kind[IOCD_JSON_KEYS_MAX];
    size_t n;
} iocd_json_obj;

/* Parses {"k": "v", "n": 1, ...}; nested values are refused. Errors: IOCD_EPARSE with the
 * byte offset and reason in errbuf, IOCD_ENOMEM. */
iocd_err iocd_json_object_parse(const char *text, size_t len, iocd_json_obj *out, char *errbuf,
                                size_t errlen);
void iocd_json_obj_fini(iocd_json_obj *o);
/* The value of key (NULL when absent); its kind in *kind_out (may be NULL). */
const char *iocd_json_get(const iocd_json_obj *o, const char *key, iocd_json_kind *kind_out);

/* ---- JSON trees (common/jsonread.c) -------------------------------------------------------- */

/* A parsed JSON value that may nest: every value is a node of one array (node[0] is the
 * root), children linked by index; keys, strings and numbers are NUL-terminated in text.
 * Strings are decoded, valid UTF-8 and contain no NUL. Owned by the caller (iocd_jdoc_fini). */
#define IOCD_JNONE UINT32_MAX /* no node */

typedef enum iocd_jkind {
    IOCD_J_NULL,
    IOCD_J_BOOL,
    IOCD_J_NUM,
    IOCD_J_STR,
    IOCD_J_ARR,
    IOCD_J_OBJ,
} iocd_jkind;

typedef struct iocd_jnode {
    iocd_jkind kind;
    bool truth;     /* IOCD_J_BOOL */
    uint32_t key;   /* a member's key: offset in text; IOCD_JNONE for array items and the root */
    uint32_t str;   /* IOCD_J_STR, IOCD_J_NUM: offset in text (a number's text as written) */
    uint32_t n;     /* IOCD_J_ARR, IOCD_J_OBJ: how many children */
    uint32_t child; /* the first child, or IOCD_JNONE */
    uint32_t next;  /* the next sibling, or IOCD_JNONE */
} iocd_jnode;

typedef struct iocd_jdoc {
    iocd_jnode *node;
    size_t n, cap, max;
    iocd_buf text;
} iocd_jdoc;

/* Parses text (one JSON value; a leading byte order mark is skipped) into d, at most
 * max_nodes values and 16 levels deep. Errors: IOCD_EPARSE, IOCD_ETOOBIG (errbuf says which,
 * with the byte offset of a syntax error), IOCD_ENOMEM; d is left empty on error. */
iocd_err iocd_jdoc_parse(const char *text, size_t len, size_t max_nodes, iocd_jdoc *d, char *errbuf,
                         size_t errlen);
void iocd_jdoc_fini(iocd_jdoc *d);
/* The NUL-terminated text at offset off of d's text (a node's key or str); borrowed from d. */
const char *iocd_jdoc_text(const iocd_jdoc *d, uint32_t off);
/* The member key of object obj, or IOCD_JNONE (also when obj is IOCD_JNONE or no object). */
uint32_t iocd_jdoc_get(const iocd_jdoc *d, uint32_t obj, const char *key);
/* Whether node i is missing (IOCD_JNONE) or null. */
bool iocd_jdoc_is_absent(const iocd_jdoc *d, uint32_t i);
/* The text of a string node (borrowed from d), or NULL when i is not one. */
const char *iocd_jdoc_str(const iocd_jdoc *d, uint32_t i);

/* ---- Logging --------------------------------------------------------------------------- */

typedef enum iocd_log_level {
    IOCD_LOG_DEBUG,
    IOCD_LOG_INFO,
    IOCD_LOG_WARN,
    IOCD_LOG_ERROR,
} iocd_log_level;

typedef enum iocd_log_format {
    IOCD_LOG_LOGFMT,
    IOCD_LOG_JSON,
} iocd_log_format;

/* Parses "debug|info|warn|error" / "logfmt|json"; IOCD_EINVAL otherwise. */
iocd_err iocd_log_level_parse(const char *s, iocd_log_level *out);
iocd_err iocd_log_format_parse(const char *s, iocd_log_format *out);
/* Sets the threshold, format and the file descriptor lines go to (default: stderr). */
void iocd_log_setup(iocd_log_level level, iocd_log_format format, int fd);

/* Writes one line: time, level, module, msg, then the key=value pairs of kvfmt.
 * kvfmt is "key=%conv key=%conv ..." with printf conversions; each value is quoted or
 * escaped as the format needs, so user text is safe to pass. kvfmt may be NULL.
 * Warnings and errors repeated (same module and msg) more than a few times in a window
 * are suppressed and counted; the count is logged when the window ends. */
void iocd_log(iocd_log_level level, const char *module, const char *msg, const char *kvfmt, ...)
    IOCD_PRINTF(4, 5);
void iocd_vlog(iocd_log_level level, const char *module, const char *msg, const char *kvfmt,
               va_list ap) IOCD_PRINTF(4, 0);
/* Log lines suppressed by rate limiting since start. */
uint64_t iocd_log_suppressed(void);

#define log_debug(mod, ...) iocd_log(IOCD_LOG_DEBUG, mod, __VA_ARGS__)
#define log_info(mod, ...)  iocd_log(IOCD_LOG_INFO, mod, __VA_ARGS__)
#define log_warn(mod, ...)  iocd_log(IOCD_LOG_WARN, mod, __VA_ARGS__)
#define log_error(mod, ...) iocd_log(IOCD_LOG_ERROR, mod, __VA_ARGS__)

/* ---- Clock ----------------------------------------------------------------------------- */

/* The clock seam: tests install their own to drive time-dependent logic. */
typedef struct iocd_clock {
    int64_t (*now_ms)(void *ud);  /* wall clock, ms since the Unix epoch */
    int64_t (*mono_ns)(void *ud); /* monotonic, ns */
    void *ud;
} iocd_clock;

/* Installs clk (copied); NULL restores the system clock. Call before threads start. */
void iocd_clock_set(const iocd_clock *clk);
int64_t iocd_now_ms(void);
int64_t iocd_mono_ns(void);
/* Formats t_ms as RFC 3339 UTC with milliseconds ("2026-11-23T01:02:03.456Z"). */
void iocd_time_format(int64_t t_ms, char *out, size_t cap);

/* ---- Self-metrics ---------------------------------------------------------------------- */

/* A registry of metric families exposed at /metrics. Families are registered once (usually
 * at startup) and live until iocd_metrics_reset; children (label sets) are created on first
 * use. Updating a child is lock-free. */
typedef struct iocd_metric iocd_metric; /* one child: a family plus one label set */

typedef enum iocd_metric_type {
    IOCD_METRIC_COUNTER,
    IOCD_METRIC_GAUGE,
    IOCD_METRIC_HISTOGRAM,
} iocd_metric_type;

/* Returns the child of family name with the given labels ("" or NULL for none, else the
 * exposition form without braces: handler="/write",code="204"). The family is created on
 * first use with help and type (later calls must agree). buckets/n_buckets are the upper
 * bounds of a histogram (ascending, +Inf implied), ignored otherwise.
 * Returns NULL only when out of memory; updates on NULL are no-ops. */
iocd_metric *iocd_metric_get(const char *name, const char *help, iocd_metric_type type,
                             const char *labels, const double *buckets, size_t n_buckets);
void iocd_metric_add(iocd_metric *m, double delta);     /* counter or gauge */
void iocd_metric_set(iocd_metric *m, double value);     /* gauge */
void iocd_metric_observe(iocd_metric *m, double value); /* histogram */
double iocd_metric_value(const iocd_metric *m); /* counter or gauge value; count for histograms */

/* Convenience: a counter or gauge without labels. */
iocd_metric *iocd_counter(const char *name, const char *help);
iocd_metric *iocd_gauge(const char *name, const char *help);

/* A gauge computed at scrape time: fn returns the value. */
typedef double (*iocd_metric_fn)(void *ud);
iocd_err iocd_metric_gauge_fn(const char *name, const char *help, iocd_metric_type type,
                              iocd_metric_fn fn, void *ud);

/* Renders every family in the text exposition format 0.0.4. */
iocd_err iocd_metrics_render(iocd_buf *out);
/* Frees every family (tests and shutdown). No metric pointer may be used afterwards. */
void iocd_metrics_reset(void);
/* Registers process_* and iocd_build_info; start_ms is the start time. */
iocd_err iocd_metrics_process_register(int64_t start_ms);

/* Escapes a label value for the exposition format into out (backslash, quote, newline). */
void iocd_metric_label_escape(const char *in, char *out, size_t cap);

/* ---- Small helpers --------------------------------------------------------------------- */

/* Splits "host:port" / "[v6]:port" into host and port; IOCD_EINVAL if malformed. */
iocd_err iocd_addr_split(const char *addr, char *host, size_t host_cap, int *port_out);
/* The value of a hexadecimal digit, or -1. */
int iocd_hexval(char c);
/* Names the calling thread (at most 15 bytes show), so `top -H`, `ps -L` and perf tell
 * iocd's threads apart. */
void iocd_thread_name(const char *name);
/* Reads up to max bytes of a file into a fresh NUL-terminated buffer (iocd_free it). */
iocd_err iocd_file_read(const char *path, size_t max, char **data_out, size_t *len_out);
/* Mixes x so that every input bit moves about half the output bits (MurmurHash3's 64-bit
 * finalizer): the last step of a hash, or a hash of one integer. */
static inline uint64_t iocd_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

#endif
