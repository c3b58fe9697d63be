/* rules/lua_sandbox.c - the sandbox all operator-written Lua runs in.
 * Each state gets an allocator that refuses to grow past a cap and a count hook that stops
 * a call after an instruction budget. Chunks see only a whitelist of pure functions, through
 * read-only proxy tables: a chunk cannot replace string.upper for another chunk, and its own
 * globals land in a private environment.
 * The count hook cannot interrupt C functions, so the pattern functions (find, match,
 * gmatch, gsub), whose backtracking is exponential in the worst case, are wrapped to refuse
 * long subjects and patterns; string.rep is bounded by the memory cap. */
#include "rules/rules_int.h"

#include <stdio.h>
#include <string.h>

#include <lualib.h>

#define DEFAULT_MEM_MAX     (16u << 20)
#define DEFAULT_INSTR_MAX   10000000ULL
#define HOOK_EVERY          1000
#define PATTERN_SUBJECT_MAX (64 * 1024)
#define PATTERN_MAX         256

struct rule_sandbox {
    lua_State *L;
    size_t mem_used, mem_max;
    uint64_t instr_max, instr_left;
    int whitelist_ref; /* read-only proxy of the safe globals */
};

static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    rule_sandbox *sb = ud;

    if (ptr == NULL)
        osize = 0; /* osize is a type tag then */
    if (nsize == 0) {
        iocd_free(ptr);
        sb->mem_used -= osize;
        return NULL;
    }
    if (nsize > osize && sb->mem_used + (nsize - osize) > sb->mem_max)
        return NULL;
    ptr = iocd_realloc(ptr, nsize);
    if (ptr != NULL)
        sb->mem_used = sb->mem_used - osize + nsize;
    return ptr;
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
    rule_sandbox *sb;

    (void)ar;
    lua_getallocf(L, (void **)&sb);
    if (sb->instr_left <= HOOK_EVERY) {
        sb->instr_left = 0;
        luaL_error(L, "instruction budget exceeded (%I instructions)", (lua_Integer)sb->instr_max);
    }
    sb->instr_left -= HOOK_EVERY;
}

/* __newindex of the read-only proxies. */
static int refuse_write(lua_State *L)
{
    return luaL_error(L, "attempt to modify a read-only table (field '%s')",
                      lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
}

/* Pushes a read-only proxy reading through the table at idx. */
static void push_proxy(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_newtable(L);
    lua_newtable(L);
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, refuse_write);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

/* Pattern functions run with bounded inputs (see the file comment). */
static int guarded_pattern(lua_State *L)
{
    size_t slen = 0, plen = 0;

    luaL_checklstring(L, 1, &slen);
    luaL_checklstring(L, 2, &plen);
    if (slen > PATTERN_SUBJECT_MAX)
        return luaL_error(L, "string pattern functions accept subjects up to %d bytes",
                          PATTERN_SUBJECT_MAX);
    if (plen > PATTERN_MAX)
        return luaL_error(L, "string patterns are limited to %d bytes", PATTERN_MAX);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static void wrap_pattern(lua_State *L, int string_tbl, const char *name)
{
    lua_getfield(L, string_tbl, name);
    lua_pushcclosure(L, guarded_pattern, 1);
    lua_setfield(L, string_tbl, name);
}

/* Builds the whitelist table and leaves its read-only proxy in the registry. */
static void build_whitelist(rule_sandbox *sb)
{
    static const char *const globals[] = { "assert",   "error",  "ipairs",   "next",     "pairs",
                                           "pcall",    "select", "tonumber", "tostring", "type",
                                           "rawequal", "rawlen", "rawget" };
    static const char *const libs[] = { "math", "table", "utf8" };
    lua_State *L = sb->L;
    size_t i;
    int wl, str;

    lua_newtable(L);
    wl = lua_gettop(L);
    lua_pushglobaltable(L);
    for (i = 0; i < IOCD_ARRAY_LEN(globals); i++) {
        lua_getfield(L, -1, globals[i]);
        lua_setfield(L, wl, globals[i]);
    }
    for (i = 0; i < IOCD_ARRAY_LEN(libs); i++) {
        lua_getfield(L, -1, libs[i]);
        push_proxy(L, -1);
        lua_setfield(L, wl, libs[i]);
        lua_pop(L, 1);
    }
    /* string: a copy without dump, with guarded pattern functions. */
    lua_newtable(L);
    str = lua_gettop(L);
    lua_getfield(L, -2, "string");
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        if (strcmp(lua_tostring(L, -2), "dump") != 0) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_settable(L, str);
        } else {
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    wrap_pattern(L, str, "find");
    wrap_pattern(L, str, "match");
    wrap_pattern(L, str, "gmatch");
    wrap_pattern(L, str, "gsub");
    push_proxy(L, str);
    lua_setfield(L, wl, "string");
    /* Strings' metatable: methods ("x"):upper() go through the guarded copy; hidden from
     * getmetatable-like probing. */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushvalue(L, str);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
    lua_pop(L, 2); /* str copy, global table */
    push_proxy(L, wl);
    sb->whitelist_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
}

iocd_err rule_sandbox_new(const rule_limits *lim, rule_sandbox **out)
{
    static const luaL_Reg libs[] = { { LUA_GNAME, luaopen_base },
                                     { LUA_MATHLIBNAME, luaopen_math },
                                     { LUA_STRLIBNAME, luaopen_string },
                                     { LUA_TABLIBNAME, luaopen_table },
                                     { LUA_UTF8LIBNAME, luaopen_utf8 } };
    rule_sandbox *sb = iocd_calloc(1, sizeof(*sb));
    size_t i;

    if (sb == NULL)
        return IOCD_ENOMEM;
    sb->mem_max = lim != NULL && lim->mem_max != 0 ? lim->mem_max : DEFAULT_MEM_MAX;
    sb->instr_max = lim != NULL && lim->instr_max != 0 ? lim->instr_max : DEFAULT_INSTR_MAX;
    sb->instr_left = sb->instr_max;
    sb->L = lua_newstate(capped_alloc, sb);
    if (sb->L == NULL) {
        iocd_free(sb);
        return IOCD_ENOMEM;
    }
    for (i = 0; i < IOCD_ARRAY_LEN(libs); i++) {
        luaL_requiref(sb->L, libs[i].name, libs[i].func, 1);
        lua_pop(sb->L, 1);
    }
    build_whitelist(sb);
    lua_sethook(sb->L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
    *out = sb;
    return IOCD_OK;
}

void rule_sandbox_free(rule_sandbox *sb)
{
    if (sb == NULL)
        return;
    lua_close(sb->L);
    iocd_free(sb);
}

lua_State *rule_sandbox_state(rule_sandbox *sb)
{
    return sb->L;
}

int rule_sandbox_whitelist(const rule_sandbox *sb)
{
    return sb->whitelist_ref;
}

iocd_err rule_sandbox_load(rule_sandbox *sb, const char *src, size_t len, const char *chunkname,
                           char *errbuf, size_t errlen)
{
    lua_State *L = sb->L;
    int rc;

    sb->instr_left = sb->instr_max;
    rc = luaL_loadbufferx(L, src, len, chunkname, "t");
    if (rc != LUA_OK) {
        snprintf(errbuf, errlen, "%s",
                 rc == LUA_ERRMEM ? "not enough memory" : lua_tostring(L, -1));
        lua_pop(L, 1);
        return IOCD_EPARSE;
    }
    /* A private _ENV whose reads fall through to the read-only whitelist. */
    lua_newtable(L);
    lua_newtable(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, sb->whitelist_ref);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    if (lua_setupvalue(L, -2, 1) == NULL)
        lua_pop(L, 1);
    return IOCD_OK;
}

iocd_err rule_sandbox_call(rule_sandbox *sb, int nargs, int nresults, char *errbuf, size_t errlen)
{
    lua_State *L = sb->L;
    int rc;

    sb->instr_left = sb->instr_max;
    rc = lua_pcall(L, nargs, nresults, 0);
    if (rc != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (rc == LUA_ERRMEM)
            snprintf(errbuf, errlen, "memory limit exceeded (%zu bytes)", sb->mem_max);
        else
            snprintf(errbuf, errlen, "%s", msg != NULL ? msg : "error object is not a string");
        lua_pop(L, 1);
        lua_gc(L, LUA_GCCOLLECT, 0);
        return IOCD_EPARSE;
    }
    return IOCD_OK;
}
