/* rules/rules.h - the Lua side of iocd: the sandbox every piece of operator-written Lua runs
 * in (alert rules, later; the config file, now). This header shows no Lua type.
 * Threads: a sandbox belongs to one thread at a time. */
#ifndef IOCD_RULES_H
#define IOCD_RULES_H

#include "alerts/alerts.h"
#include "common/common.h"

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

#endif
