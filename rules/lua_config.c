/* rules/lua_config.c - reads the daemon's config file: a Lua chunk run in the sandbox that
 * returns a table, walked depth-first in a deterministic order (array part 1..n, then string
 * keys sorted bytewise), each leaf handed to the caller's visitor. */
#include "rules/rules_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_FILE_MAX (1u << 20)
#define DEPTH_MAX       16
#define KEYS_MAX        4096

typedef struct walk {
    lua_State *L;
    const char *path_name;
    const char *src;
    size_t src_len;
    rule_cfg_visit_fn fn;
    void *ud;
    const char *segs[DEPTH_MAX + 1];
    char idx_text[DEPTH_MAX + 1][24];
    char *errbuf;
    size_t errlen;
} walk;

/* Line (1-based) of the first "name =" or ["name"] = assignment outside comments, or 0. */
static int find_key_line(const char *src, size_t len, const char *name)
{
    size_t nlen = strlen(name), i = 0;
    int line = 1;

    while (i < len) {
        if (src[i] == '\n') {
            line++;
            i++;
            continue;
        }
        if (src[i] == '-' && i + 1 < len && src[i + 1] == '-') {
            while (i < len && src[i] != '\n')
                i++;
            continue;
        }
        if (i + nlen <= len && memcmp(src + i, name, nlen) == 0) {
            size_t j = i + nlen;
            char before = i > 0 ? src[i - 1] : ' ';
            bool bracket = before == '"' && i >= 2 && src[i - 2] == '[' && j < len &&
                           src[j] == '"' && j + 1 < len && src[j + 1] == ']';
            bool ident_start =
                !(before == '_' || (before >= 'a' && before <= 'z') ||
                  (before >= 'A' && before <= 'Z') || (before >= '0' && before <= '9'));
            if (bracket)
                j += 2;
            if (bracket || ident_start) {
                while (j < len && (src[j] == ' ' || src[j] == '\t'))
                    j++;
                if (j < len && src[j] == '=' && (j + 1 >= len || src[j + 1] != '='))
                    return line;
            }
        }
        i++;
    }
    return 0;
}

static iocd_err visit_error(walk *w, size_t depth, iocd_err err)
{
    char msg[512];
    const char *key = NULL;
    size_t i;
    int line = 0;

    snprintf(msg, sizeof(msg), "%s", w->errbuf);
    for (i = depth; i > 0 && key == NULL; i--) {
        const char *s = w->segs[i - 1];
        if (strspn(s, "0123456789") != strlen(s))
            key = s;
    }
    if (key != NULL)
        line = find_key_line(w->src, w->src_len, key);
    if (line > 0)
        snprintf(w->errbuf, w->errlen, "%s:%d: %s", w->path_name, line, msg);
    else
        snprintf(w->errbuf, w->errlen, "%s: %s", w->path_name, msg);
    return err;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static iocd_err walk_value(walk *w, size_t depth);

/* Walks the table on top of the stack. */
static iocd_err walk_table(walk *w, size_t depth)
{
    lua_State *L = w->L;
    int t = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, t), i;
    const char **keys = NULL;
    size_t nkeys = 0, k;
    iocd_err err = IOCD_OK;
    bool any = false;

    if (depth >= DEPTH_MAX) {
        snprintf(w->errbuf, w->errlen, "tables nested deeper than %d levels", DEPTH_MAX);
        return visit_error(w, depth, IOCD_EINVAL);
    }
    for (i = 1; i <= n && err == IOCD_OK; i++) {
        snprintf(w->idx_text[depth], sizeof(w->idx_text[depth]), "%lld", (long long)i);
        w->segs[depth] = w->idx_text[depth];
        lua_rawgeti(L, t, i);
        err = walk_value(w, depth + 1);
        lua_pop(L, 1);
        any = true;
    }
    if (err != IOCD_OK)
        return err;
    keys = iocd_calloc(KEYS_MAX, sizeof(*keys));
    if (keys == NULL)
        return IOCD_ENOMEM;
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TNUMBER && lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1 &&
            lua_tointeger(L, -1) <= n)
            continue;
        if (lua_type(L, -1) != LUA_TSTRING) {
            snprintf(w->errbuf, w->errlen, "key of type %s in table '%s'", luaL_typename(L, -1),
                     depth > 0 ? w->segs[depth - 1] : "(top)");
            lua_pop(L, 1);
            err = visit_error(w, depth, IOCD_EINVAL);
            goto out;
        }
        if (nkeys == KEYS_MAX) {
            snprintf(w->errbuf, w->errlen, "more than %d keys in one table", KEYS_MAX);
            lua_pop(L, 1);
            err = visit_error(w, depth, IOCD_EINVAL);
            goto out;
        }
        keys[nkeys++] = lua_tostring(L, -1); /* the table keeps the string alive */
    }
    iocd_qsort(keys, nkeys, sizeof(*keys), cmp_str);
    for (k = 0; k < nkeys && err == IOCD_OK; k++) {
        w->segs[depth] = keys[k];
        lua_getfield(L, t, keys[k]);
        err = walk_value(w, depth + 1);
        lua_pop(L, 1);
        any = true;
    }
    if (err == IOCD_OK && !any && depth > 0) {
        err = w->fn(w->ud, w->segs, depth, NULL, w->errbuf, w->errlen);
        if (err != IOCD_OK)
            err = visit_error(w, depth, err);
    }
out:
    iocd_free(keys);
    return err;
}

static iocd_err walk_value(walk *w, size_t depth)
{
    lua_State *L = w->L;
    rule_cfg_value v;
    iocd_err err;

    memset(&v, 0, sizeof(v));
    switch (lua_type(L, -1)) {
    case LUA_TTABLE:
        return walk_table(w, depth);
    case LUA_TSTRING:
        v.kind = RULE_CFG_STRING;
        v.str = lua_tolstring(L, -1, &v.len);
        break;
    case LUA_TNUMBER:
        v.kind = RULE_CFG_NUMBER;
        v.is_int = lua_isinteger(L, -1);
        v.num = lua_tonumber(L, -1);
        break;
    case LUA_TBOOLEAN:
        v.kind = RULE_CFG_BOOL;
        v.b = lua_toboolean(L, -1);
        break;
    default:
        snprintf(w->errbuf, w->errlen, "key '%s': unsupported value type %s", w->segs[depth - 1],
                 luaL_typename(L, -1));
        return visit_error(w, depth, IOCD_EINVAL);
    }
    err = w->fn(w->ud, w->segs, depth, &v, w->errbuf, w->errlen);
    return err == IOCD_OK ? IOCD_OK : visit_error(w, depth, err);
}

iocd_err rule_config_load(const char *path, const rule_limits *lim, rule_cfg_visit_fn fn, void *ud,
                          char *errbuf, size_t errlen)
{
    rule_sandbox *sb = NULL;
    char *src = NULL, chunkname[1024];
    size_t len = 0;
    walk w;
    iocd_err err;

    err = iocd_file_read(path, CONFIG_FILE_MAX, &src, &len);
    if (err != IOCD_OK) {
        if (err == IOCD_ETOOBIG)
            snprintf(errbuf, errlen, "%s: config file larger than %u bytes", path, CONFIG_FILE_MAX);
        else
            snprintf(errbuf, errlen, "%s: %s", path, iocd_strerror(err));
        return err;
    }
    err = rule_sandbox_new(lim, &sb);
    if (err != IOCD_OK)
        goto out;
    snprintf(chunkname, sizeof(chunkname), "@%s", path);
    err = rule_sandbox_load(sb, src, len, chunkname, errbuf, errlen);
    if (err == IOCD_OK)
        err = rule_sandbox_call(sb, 0, 1, errbuf, errlen);
    if (err != IOCD_OK) {
        if (strncmp(errbuf, path, strlen(path)) != 0) {
            char msg[512];
            snprintf(msg, sizeof(msg), "%s", errbuf);
            snprintf(errbuf, errlen, "%s: %s", path, msg);
        }
        goto out;
    }
    if (lua_type(rule_sandbox_state(sb), -1) != LUA_TTABLE) {
        snprintf(errbuf, errlen, "%s: config must return a table, got %s", path,
                 luaL_typename(rule_sandbox_state(sb), -1));
        err = IOCD_EPARSE;
        goto out;
    }
    memset(&w, 0, sizeof(w));
    w.L = rule_sandbox_state(sb);
    w.path_name = path;
    w.src = src;
    w.src_len = len;
    w.fn = fn;
    w.ud = ud;
    w.errbuf = errbuf;
    w.errlen = errlen;
    err = walk_table(&w, 0);
out:
    rule_sandbox_free(sb);
    iocd_free(src);
    return err;
}
