/* rules/rules.h - the Lua side of iocd: the sandbox every piece of operator-written Lua runs
 * in (alert rules, later; the config file, now). This header shows no Lua type.
 * Threads: a sandbox belongs to one thread at a time. */
#ifndef IOCD_RULES_H
#define IOCD_RULES_H

#include <stdio.h>

#include "alerts/alerts.h"
#include "common/common.h"
#include "query/query.h"

/* ---- Sandbox limits -------------------------------------------------------------------- */

typedef struct rule_limits {
    size_t mem_max;     /* bytes a sandbox may hold; 0 = default (16 MiB) */
    uint64_t instr_max; /* VM instructions per call; 0 = default (10 M) */
} rule_limits;

/* ---- Reading the config file ----------------------------------------------------------- */

/* The config file is a Lua chunk that returns a table. It runs in the same sandbox as rules
 * (no io, os, require, load, debug; instruction and memory caps), then the returned table is
 * walked depth-first and every leaf is handed to the visitor. */
typedef enum rule_cfg_kind {
    RULE_CFG_STRING,
    RULE_CFG_NUMBER,
    RULE_CFG_BOOL,
} rule_cfg_kind;

typedef struct rule_cfg_value {
    rule_cfg_kind kind;
    const char *str; /* RULE_CFG_STRING: borrowed for the visitor call; may hold NULs */
    size_t len;
    double num;  /* RULE_CFG_NUMBER */
    bool is_int; /* RULE_CFG_NUMBER: the Lua value was an integer */
    bool b;      /* RULE_CFG_BOOL */
} rule_cfg_value;

/* path holds depth segments: string keys as they are, array indices as decimal text ("1").
 * An empty table is visited once with v == NULL so that "tokens = {}" can be validated.
 * The visitor returns IOCD_OK to go on; any other code stops the walk, and the visitor
 * should have written the reason into errbuf (the loader prefixes "FILE:LINE: " or
 * "FILE: "). */
typedef iocd_err (*rule_cfg_visit_fn)(void *ud, const char *const *path, size_t depth,
                                      const rule_cfg_value *v, char *errbuf, size_t errlen);

/* Runs the config file at path and walks its result. Errors:
 * IOCD_ENOTFOUND / IOCD_EIO (cannot read), IOCD_ETOOBIG (file over 1 MiB),
 * IOCD_EPARSE (syntax error, a runtime error, the budget or memory cap exceeded, or the
 * chunk did not return a table; errbuf names file and line), or the visitor's code.
 * The line reported for a visitor error is the line of the key's first definition in the
 * source when it can be found (a key = ... or ["key"] = ... assignment), else none. */
iocd_err rule_config_load(const char *path, const rule_limits *lim, rule_cfg_visit_fn fn, void *ud,
                          char *errbuf, size_t errlen);

/* ---- Alert rules ------------------------------------------------------------------------- */

/* Rule files are Lua (docs/RULES.md): rule { ... } and record { ... } calls. The engine runs
 * them on its own thread, fed with committed samples through a bounded queue, so ingest
 * never waits on rules. */
typedef struct rule_engine rule_engine;

typedef enum rule_state {
    RULE_INACTIVE, /* also: resolved */
    RULE_PENDING,  /* true, waiting out `hold` */
    RULE_FIRING,
} rule_state;

/* One change of an alert's state. Strings are borrowed for the call. */
typedef struct rule_event {
    const char *rule;
    rule_state from, to;
    const char *labels; /* "name\0value\0" pairs sorted by name: alertname, severity, domain,
                         * the grouping labels and the rule's extra labels */
    size_t labels_len;
    const char *summary, *description, *runbook, *severity, *domain;
    double value;
    int64_t t_ms;              /* when it changed (the sample's time for streaming rules) */
    int64_t active_since_ms;   /* when it became pending or firing */
    bool shadow;               /* mode = "shadow": recorded, never dispatched */
    const char *inhibit_match; /* the rule's inhibits.match, or NULL */
    char *const *inhibit_equal;
    size_t n_inhibit_equal;
    const char *query; /* PromQL for the series behind it: the rule's selector narrowed to the
                        * alert's grouping labels, or its expr */
    size_t members;    /* from == to == RULE_FIRING: a series joined the firing group, which now
                        * has this many; else 0 */
    bool restored;     /* from == to == RULE_FIRING: it was firing when the daemon stopped and
                        * fires still (told once after a restart, t_ms = when it began) */
} rule_event;

typedef void (*rule_event_fn)(void *ud, const rule_event *ev);

typedef struct rule_engine_config {
    store *st;                  /* the store rules read (ctx:query, expr) and write (record) */
    rule_limits lim;            /* per evaluation */
    query_limits qlim;          /* for expr rules and ctx:query */
    double latitude, longitude; /* the city, for sun(); default Thai Nguyen */
    int tz_offset_s;            /* local time's offset from UTC; Asia/Ho_Chi_Minh: 7 h */
    size_t queue_max;           /* samples waiting for the rules; 0 = 4M */
    bool no_persist;            /* do not save or restore alert state (tests, backtests) */
    bool member_events;         /* also report series joining a firing group (members > 0) */
    bool no_record;             /* recording rules compute but do not write (backtests) */
    rule_event_fn on_event;     /* may be NULL */
    void *ud;
} rule_engine_config;

/* Errors: IOCD_ENOMEM. */
iocd_err rule_engine_new(const rule_engine_config *cfg, rule_engine **out);
/* Stops the thread (if started) and frees. NULL is a no-op. */
void rule_engine_free(rule_engine *e);
/* Loads a rule file, or every *.lua of a directory except *_test.lua, as the whole rule set.
 * All files are checked first; only if every one loads is the running set replaced (at once,
 * between two evaluations), and alerts of rules whose definition is unchanged keep their
 * state. Errors: IOCD_EPARSE / IOCD_ENOTFOUND / IOCD_EIO with "FILE:LINE: reason" in errbuf;
 * the running set is untouched then. */
iocd_err rule_engine_load(rule_engine *e, const char *path, char *errbuf, size_t errlen);
/* Rules loaded, and their names (for tools). */
size_t rule_engine_count(const rule_engine *e);
/* Starts the evaluation thread. Errors: IOCD_EIO. */
iocd_err rule_engine_start(rule_engine *e);
/* Queues committed samples (a store_listen_fn; ud is the engine). Never blocks for long. */
void rule_engine_feed(void *e, const uint64_t *ids, const iocd_sample *s, size_t n);
/* Without the thread (tests, backtests): evaluates what is queued, then periodic and absence
 * rules due at now_ms. */
iocd_err rule_engine_step(rule_engine *e, int64_t now_ms);
/* GET /api/v1/rules and /api/v1/alerts, in Prometheus' shapes (data object only). */
iocd_err rule_engine_rules_json(rule_engine *e, iocd_buf *out);
iocd_err rule_engine_alerts_json(rule_engine *e, iocd_buf *out);

/* `iocd rules test`: runs the tests of one test file (test "name" { ... }, docs/RULES.md),
 * each with a private store and engine configured from base (its st, on_event and ud are
 * ignored), printing "ok   NAME" or "FAIL NAME" with every difference to stdout and
 * counting them. Errors: only IOCD_ENOMEM; broken test files count as failures. */
iocd_err rule_tests_run(const char *path, const rule_engine_config *base, size_t *passed,
                        size_t *failed);

/* `iocd rules backtest`: replays st's samples in [from_ms, to_ms] through the rules at
 * rules_path and prints to out when each alert would have fired and resolved, then a
 * summary line. Progress goes to stderr. Nothing is written to st. Errors: those of loading
 * the rules (errbuf), storage errors, IOCD_ENOMEM. */
iocd_err rule_backtest(store *st, const char *rules_path, const rule_engine_config *base,
                       int64_t from_ms, int64_t to_ms, FILE *out, char *errbuf, size_t errlen);

/* Sunrise and sunset (Unix seconds) on the local day holding t, at lat/lon (degrees, north
 * and east positive), tz_offset_s from UTC. False in polar day or night. */
bool rule_sun_times(int64_t t_s, double lat, double lon, int tz_offset_s, int64_t *rise_out,
                    int64_t *set_out);

#endif
