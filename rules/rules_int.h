/* rules/rules_int.h - the Lua sandbox, shared by the files of rules/ only (the only header
 * that shows Lua types; included by rules/lua_*.c). */
#ifndef IOCD_RULES_INT_H
#define IOCD_RULES_INT_H

#include <lauxlib.h>
#include <lua.h>

#include "rules/rules.h"

typedef struct rule_sandbox rule_sandbox;

/* A fresh Lua state with a capped allocator, an instruction budget per call and a read-only
 * whitelist of the safe standard functions. Errors: IOCD_ENOMEM. */
iocd_err rule_sandbox_new(const rule_limits *lim, rule_sandbox **out);
void rule_sandbox_free(rule_sandbox *sb); /* NULL is a no-op */
lua_State *rule_sandbox_state(rule_sandbox *sb);
/* The registry reference of the read-only whitelist (math, string, ...). */
int rule_sandbox_whitelist(const rule_sandbox *sb);

/* Compiles source text (never bytecode) as a chunk named chunkname ("@path" for files),
 * gives it a private environment reading through the whitelist, and leaves the function on
 * the stack. Errors: IOCD_EPARSE with Lua's "file:line: message" in errbuf. */
iocd_err rule_sandbox_load(rule_sandbox *sb, const char *src, size_t len, const char *chunkname,
                           char *errbuf, size_t errlen);
/* Calls the function below nargs arguments on the stack with a fresh instruction budget,
 * leaving nresults results. Errors: IOCD_EPARSE (a runtime error, budget or memory overrun;
 * errbuf has the message). */
iocd_err rule_sandbox_call(rule_sandbox *sb, int nargs, int nresults, char *errbuf, size_t errlen);

/* ---- Rule definitions (rules/lua_rules.c) ------------------------------------------------- */

typedef enum rule_kind {
    RULE_STREAM, /* per sample of the selected series */
    RULE_ABSENT, /* the selected series (or group) sent nothing for a while */
    RULE_EXPR,   /* a PromQL expression every `every` */
    RULE_RECORD, /* a recording rule: PromQL results written back as series */
} rule_kind;

/* The values a condition can name (s.value, s.avg, ...). */
typedef enum rule_field {
    RF_VALUE,
    RF_AVG,
    RF_MIN,
    RF_MAX,
    RF_SUM,
    RF_COUNT,
    RF_LAST,
    RF_FIRST,
    RF_RATE,
    RF_DELTA,
    RF_STDDEV,
    RF_NONE,
} rule_field;

/* A condition: a Lua function, or a string like "avg < 10" compiled to a Lua chunk and, when
 * it is that simple, also evaluated natively (same result, tested side by side). */
typedef struct rule_cond {
    int ref;        /* LUA_NOREF: no condition */
    bool is_string; /* a string condition: evaluated with the sample as its environment */
    bool native;    /* field op number: evaluated in C */
    rule_field field;
    int op; /* 0 <, 1 <=, 2 >, 3 >=, 4 ==, 5 ~= */
    double x;
    char *text; /* a string condition's source, for the rules API (NULL for a function) */
} rule_cond;

/* An annotation: a template string with {{label}} and {{value}} (optionally {{value|%.2f}}),
 * or a Lua function of the alert. */
typedef struct rule_text {
    char *tmpl;
    int ref; /* LUA_NOREF unless a function */
} rule_text;

typedef struct rule_def {
    char *name;
    char *file;
    int line;
    rule_kind kind;
    char *select_text;
    query_selector sel;
    char *expr_text;
    query_expr *expr;
    int64_t every_ms, window_ms, hold_ms, keep_ms, absent_ms;
    rule_cond when, clear;
    char *severity, *domain;
    char **group_by;
    size_t n_group_by;
    rule_text summary, description;
    char *runbook;
    char **label_names, **label_values;
    size_t n_labels;
    bool shadow;
    char *inhibit_match;  /* while firing, holds back alerts matching this (NULL: none) ... */
    char **inhibit_equal; /* ... that share these labels' values */
    size_t n_inhibit_equal;
    uint64_t digest; /* of the definition's text: unchanged rules keep their alerts */
} rule_def;

typedef struct rule_set {
    rule_sandbox *sb; /* holds every rule's functions */
    rule_def *rules;
    size_t n;
} rule_set;

/* Loads path (file or directory) into a new set. Errors as rule_engine_load. */
iocd_err rule_set_load(const char *path, const rule_limits *lim, rule_set **out, char *errbuf,
                       size_t errlen);
void rule_set_free(rule_set *rs);

/* A window's samples, oldest first, for conditions (a view; the engine owns the memory). */
typedef struct rule_window {
    const iocd_sample *s;
    size_t n;
    int64_t span_ms; /* the rule's window */
} rule_window;

/* What a condition or template sees besides the sample. */
typedef struct rule_ctx {
    store *st;
    const query_limits *qlim;
    int64_t now_ms;
    double latitude, longitude;
    int tz_offset_s;
} rule_ctx;

/* The value of field over w (NaN when it has no value, e.g. rate of one sample). */
double rule_window_field(const rule_window *w, rule_field f);
/* Evaluates c for a sample with labels (lset string) and its window. *out: the result.
 * Errors: IOCD_EPARSE (a runtime error or overrun; errbuf has it). */
iocd_err rule_cond_eval(rule_set *rs, const rule_def *r, const rule_cond *c, const char *labels,
                        size_t labels_len, const rule_window *w, const rule_ctx *ctx, bool *out,
                        char *errbuf, size_t errlen);
/* Renders an annotation into out. Errors: IOCD_EPARSE (a function that failed). */
iocd_err rule_text_render(rule_set *rs, const rule_text *t, const char *labels, size_t labels_len,
                          double value, iocd_buf *out, char *errbuf, size_t errlen);

#endif
