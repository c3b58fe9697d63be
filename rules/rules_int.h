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

/* Compiles source text (never bytecode) as a chunk named chunkname ("@path" for files),
 * gives it a private environment reading through the whitelist, and leaves the function on
 * the stack. Errors: IOCD_EPARSE with Lua's "file:line: message" in errbuf. */
iocd_err rule_sandbox_load(rule_sandbox *sb, const char *src, size_t len, const char *chunkname,
                           char *errbuf, size_t errlen);
/* Calls the function below nargs arguments on the stack with a fresh instruction budget,
 * leaving nresults results. Errors: IOCD_EPARSE (a runtime error, budget or memory overrun;
 * errbuf has the message). */
iocd_err rule_sandbox_call(rule_sandbox *sb, int nargs, int nresults, char *errbuf, size_t errlen);

#endif
