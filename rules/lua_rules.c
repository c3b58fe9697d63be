/* rules/lua_rules.c - rule files: the DSL (rule { ... }, record { ... }) read in the sandbox
 * and checked field by field, conditions (Lua functions, or strings such as "avg < 10" that
 * are also evaluated natively when that simple), the sample object conditions see, the ctx
 * helpers (query, local time, sun) and annotation templates. Every error names FILE:LINE.
 * A sample object is valid only during its call: one kept in a global and used later raises
 * an error instead of reading freed memory. */
#include "rules/rules_int.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FILES_MAX     1024
#define FILE_SIZE_MAX (1u << 20)
#define SAMPLE_MT     "iocd.sample"

static const char *const field_names[] = { "value", "avg",   "min",  "max",   "sum",   "count",
                                           "last",  "first", "rate", "delta", "stddev" };

/* ---- Loading -------------------------------------------------------------------------------- */

typedef struct loader {
    rule_set *rs;
    size_t cap;
    const char *file;
    const char *src;
    size_t src_len;
    char err[512];
} loader;

static int fail_at(lua_State *L, const char *fmt, ...) IOCD_PRINTF(2, 3);

/* Raises an error located at the Lua line that called rule()/record(). */
static int fail_at(lua_State *L, const char *fmt, ...)
{
    char msg[400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return luaL_error(L, "%s", msg); /* luaL_error prefixes the calling line's file:line */
}

static int caller_line(lua_State *L)
{
    lua_Debug ar;

    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "l", &ar))
        return ar.currentline;
    return 0;
}

static void free_strv(char **v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        iocd_free(v[i]);
    iocd_free(v);
}

static void rule_def_fini(lua_State *L, rule_def *r)
{
    iocd_free(r->name);
    iocd_free(r->file);
    iocd_free(r->select_text);
    query_selector_fini(&r->sel);
    iocd_free(r->expr_text);
    query_expr_free(r->expr);
    iocd_free(r->severity);
    iocd_free(r->domain);
    free_strv(r->group_by, r->n_group_by);
    iocd_free(r->summary.tmpl);
    iocd_free(r->description.tmpl);
    iocd_free(r->runbook);
    free_strv(r->label_names, r->n_labels);
    free_strv(r->label_values, r->n_labels);
    iocd_free(r->inhibit_match);
    free_strv(r->inhibit_equal, r->n_inhibit_equal);
    iocd_free(r->when.text);
    iocd_free(r->clear.text);
    if (L != NULL) {
        luaL_unref(L, LUA_REGISTRYINDEX, r->when.ref);
        luaL_unref(L, LUA_REGISTRYINDEX, r->clear.ref);
        luaL_unref(L, LUA_REGISTRYINDEX, r->summary.ref);
        luaL_unref(L, LUA_REGISTRYINDEX, r->description.ref);
    }
}

void rule_set_free(rule_set *rs)
{
    size_t i;

    if (rs == NULL)
        return;
    for (i = 0; i < rs->n; i++)
        rule_def_fini(rs->sb != NULL ? rule_sandbox_state(rs->sb) : NULL, &rs->rules[i]);
    iocd_free(rs->rules);
    rule_sandbox_free(rs->sb);
    iocd_free(rs);
}

static bool valid_label_name(const char *s)
{
    const char *p;

    if (*s == '\0')
        return false;
    for (p = s; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
              (p > s && *p >= '0' && *p <= '9')))
            return false;
    return true;
}

static bool valid_metric_name(const char *s)
{
    const char *p;

    if (*s == '\0')
        return false;
    for (p = s; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':' ||
              (p > s && *p >= '0' && *p <= '9')))
            return false;
    return true;
}

/* A duration field: "30s", "1h30m" or a number of seconds. */
static int64_t get_duration(lua_State *L, int t, const char *key, int64_t def, const char *rule)
{
    int64_t ms = 0;
    int type = lua_getfield(L, t, key);

    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return def;
    }
    if (type == LUA_TNUMBER) {
        double s = lua_tonumber(L, -1);
        lua_pop(L, 1);
        if (!(s >= 0) || s > 1e9)
            fail_at(L, "rule \"%s\": %s must be a duration like \"30s\" or seconds >= 0", rule,
                    key);
        return (int64_t)llround(s * 1000.0);
    }
    if (type != LUA_TSTRING || query_duration_parse(lua_tostring(L, -1), false, &ms) != IOCD_OK)
        fail_at(L, "rule \"%s\": %s = %s is not a duration (use e.g. \"30s\", \"5m\", \"1h\")",
                rule, key, type == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1));
    lua_pop(L, 1);
    return ms;
}

static char *get_string(lua_State *L, int t, const char *key, const char *def, const char *rule)
{
    int type = lua_getfield(L, t, key);
    char *out;

    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return def != NULL ? iocd_strdup(def) : NULL;
    }
    if (type != LUA_TSTRING)
        fail_at(L, "rule \"%s\": %s must be a string, not %s", rule, key, luaL_typename(L, -1));
    out = iocd_strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    if (out == NULL)
        luaL_error(L, "not enough memory");
    return out;
}

/* Checks a template's {{...}} pieces: a label name, value, $value, $labels.NAME, with an
 * optional |%.Nf, |%.Ng or |%d. */
static bool template_ok(const char *t, char *why, size_t cap)
{
    const char *p = t;

    while ((p = strstr(p, "{{")) != NULL) {
        const char *close = strstr(p + 2, "}}"), *q, *bar;
        char name[128];
        size_t len;
        if (close == NULL) {
            snprintf(why, cap, "unclosed {{ in \"%.60s\"", t);
            return false;
        }
        q = p + 2;
        while (*q == ' ')
            q++;
        bar = memchr(q, '|', (size_t)(close - q));
        len = (size_t)((bar != NULL ? bar : close) - q);
        while (len > 0 && q[len - 1] == ' ')
            len--;
        if (len == 0 || len >= sizeof(name)) {
            snprintf(why, cap, "empty or overlong {{ }} in \"%.60s\"", t);
            return false;
        }
        memcpy(name, q, len);
        name[len] = '\0';
        if (strncmp(name, "$labels.", 8) == 0)
            memmove(name, name + 8, strlen(name + 8) + 1);
        if (strcmp(name, "$value") != 0 && strcmp(name, "value") != 0 && !valid_label_name(name)) {
            snprintf(why, cap, "{{%s}} is neither a label name nor value", name);
            return false;
        }
        if (bar != NULL) {
            const char *f = bar + 1;
            while (*f == ' ')
                f++;
            if (!(f[0] == '%' &&
                  ((f[1] == '.' && f[2] >= '0' && f[2] <= '9' && (f[3] == 'f' || f[3] == 'g')) ||
                   f[1] == 'd' || f[1] == 'f' || f[1] == 'g'))) {
                snprintf(why, cap, "unknown format after | in \"%.60s\" (use %%.2f, %%g or %%d)",
                         t);
                return false;
            }
        }
        p = close + 2;
    }
    return true;
}

static void get_text(lua_State *L, int t, const char *key, rule_text *out, const char *rule)
{
    int type = lua_getfield(L, t, key);
    char why[200];

    out->ref = LUA_NOREF;
    out->tmpl = NULL;
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (type == LUA_TFUNCTION) {
        out->ref = luaL_ref(L, LUA_REGISTRYINDEX);
        return;
    }
    if (type != LUA_TSTRING)
        fail_at(L, "rule \"%s\": %s must be a template string or a function", rule, key);
    if (!template_ok(lua_tostring(L, -1), why, sizeof(why)))
        fail_at(L, "rule \"%s\": %s: %s", rule, key, why);
    out->tmpl = iocd_strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
}

/* Parses "field op number" for the native path; false when the string is anything else. */
static bool parse_native(const char *s, rule_cond *c)
{
    static const char *const ops[] = { "<=", ">=", "==", "~=", "<", ">" };
    static const int op_codes[] = { 1, 3, 4, 5, 0, 2 };
    char name[32], *end;
    size_t n = 0, i;

    while (*s == ' ')
        s++;
    while ((s[n] >= 'a' && s[n] <= 'z') && n < sizeof(name) - 1)
        n++;
    if (n == 0)
        return false;
    memcpy(name, s, n);
    name[n] = '\0';
    s += n;
    c->field = RF_NONE;
    for (i = 0; i < IOCD_ARRAY_LEN(field_names); i++)
        if (strcmp(field_names[i], name) == 0)
            c->field = (rule_field)i;
    if (c->field == RF_NONE)
        return false;
    while (*s == ' ')
        s++;
    for (i = 0; i < IOCD_ARRAY_LEN(ops); i++)
        if (strncmp(s, ops[i], strlen(ops[i])) == 0)
            break;
    if (i == IOCD_ARRAY_LEN(ops))
        return false;
    c->op = op_codes[i];
    s += strlen(ops[i]);
    c->x = strtod(s, &end);
    if (end == s)
        return false;
    while (*end == ' ')
        end++;
    return *end == '\0' && isfinite(c->x);
}

static void get_cond(lua_State *L, rule_sandbox *sb, int t, const char *key, rule_cond *c,
                     const char *rule, const char *file)
{
    int type = lua_getfield(L, t, key);

    memset(c, 0, sizeof(*c));
    c->ref = LUA_NOREF;
    c->field = RF_NONE;
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (type == LUA_TFUNCTION) {
        c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
        return;
    }
    if (type != LUA_TSTRING)
        fail_at(L,
                "rule \"%s\": %s must be a function(s, ctx) or a condition string like "
                "\"avg < 10\"",
                rule, key);
    {
        char src[1200], chunk[300], err[300];
        const char *text = lua_tostring(L, -1);
        if (strlen(text) > 1000)
            fail_at(L, "rule \"%s\": %s is longer than 1000 bytes", rule, key);
        snprintf(src, sizeof(src), "return (%s)", text);
        snprintf(chunk, sizeof(chunk), "=%s: rule \"%s\" %s", file, rule, key);
        if (rule_sandbox_load(sb, src, strlen(src), chunk, err, sizeof(err)) != IOCD_OK)
            fail_at(L, "rule \"%s\": %s = \"%s\" is not a valid condition: %s", rule, key, text,
                    err);
        c->is_string = true;
        c->native = parse_native(text, c);
        c->text = iocd_strdup(text);
        c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pop(L, 1);
}

static void get_names(lua_State *L, int t, const char *key, char ***out, size_t *n_out,
                      const char *rule)
{
    int type = lua_getfield(L, t, key);
    size_t n, i;

    *out = NULL;
    *n_out = 0;
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (type != LUA_TTABLE)
        fail_at(L, "rule \"%s\": %s must be a list of label names, e.g. {\"ward\"}", rule, key);
    n = lua_rawlen(L, -1);
    *out = iocd_calloc(n + 1, sizeof(char *));
    if (*out == NULL)
        luaL_error(L, "not enough memory");
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        if (lua_type(L, -1) != LUA_TSTRING || !valid_label_name(lua_tostring(L, -1)))
            fail_at(L, "rule \"%s\": %s[%zu] is not a label name", rule, key, i + 1);
        (*out)[i] = iocd_strdup(lua_tostring(L, -1));
        *n_out = i + 1;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void get_labels(lua_State *L, int t, rule_def *r)
{
    int type = lua_getfield(L, t, "labels");
    size_t n = 0;

    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (type != LUA_TTABLE)
        fail_at(L, "rule \"%s\": labels must be a table of name = \"value\"", r->name);
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING || !valid_label_name(lua_tostring(L, -2)) ||
            lua_type(L, -1) != LUA_TSTRING)
            fail_at(L, "rule \"%s\": labels: each entry must be name = \"value\"", r->name);
        r->label_names = iocd_realloc(r->label_names, (n + 1) * sizeof(char *));
        r->label_values = iocd_realloc(r->label_values, (n + 1) * sizeof(char *));
        if (r->label_names == NULL || r->label_values == NULL)
            luaL_error(L, "not enough memory");
        r->label_names[n] = iocd_strdup(lua_tostring(L, -2));
        r->label_values[n] = iocd_strdup(lua_tostring(L, -1));
        r->n_labels = ++n;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static const char *const rule_keys[] = { "name",     "select",  "when",        "clear",
                                         "hold",     "keep",    "window",      "absent",
                                         "expr",     "every",   "severity",    "domain",
                                         "group_by", "summary", "description", "runbook",
                                         "labels",   "mode",    "inhibits",    NULL };
static const char *const record_keys[] = { "name", "expr", "every", "labels", NULL };

/* Edit distance with adjacent transpositions (for "did you mean"), capped at 9. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), i, j, d[24][24];

    if (la > 22 || lb > 22)
        return 9;
    for (i = 0; i <= la; i++)
        d[i][0] = i;
    for (j = 0; j <= lb; j++)
        d[0][j] = j;
    for (i = 1; i <= la; i++)
        for (j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1], best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best)
                best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

/* Refuses unknown keys, suggesting the closest known one. */
static void check_keys(lua_State *L, int t, const char *const *known, const char *rule)
{
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        size_t i, best = 0, best_d = 9;
        bool ok = false;
        for (i = 0; k != NULL && known[i] != NULL; i++) {
            size_t dist = edit_distance(k, known[i]);
            if (dist == 0)
                ok = true;
            if (dist < best_d) {
                best_d = dist;
                best = i;
            }
        }
        if (!ok) {
            if (k == NULL)
                fail_at(L, "rule \"%s\": fields must be named (name = value)", rule);
            if (best_d <= 2)
                fail_at(L, "rule \"%s\": unknown field '%s' (did you mean '%s'?)", rule, k,
                        known[best]);
            fail_at(L, "rule \"%s\": unknown field '%s'", rule, k);
        }
        lua_pop(L, 1);
    }
}

static uint64_t digest_of(const char *s, size_t len, uint64_t h)
{
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* rule { ... } / record { ... } (also rule "name" { ... }). */
static int define(lua_State *L, bool record)
{
    loader *ld = lua_touserdata(L, lua_upvalueindex(1));
    rule_set *rs = ld->rs;
    rule_def *r;
    char why[300];
    const char *mode;
    int line = caller_line(L);

    luaL_checktype(L, 1, LUA_TTABLE);
    if (rs->n == ld->cap) {
        size_t cap = ld->cap != 0 ? ld->cap * 2 : 16;
        rule_def *g = iocd_realloc(rs->rules, cap * sizeof(*g));
        if (g == NULL)
            return luaL_error(L, "not enough memory");
        rs->rules = g;
        ld->cap = cap;
    }
    r = &rs->rules[rs->n];
    memset(r, 0, sizeof(*r));
    r->when.ref = r->clear.ref = r->summary.ref = r->description.ref = LUA_NOREF;
    rs->n++;
    r->file = iocd_strdup(ld->file);
    r->line = line;
    r->name = get_string(L, 1, "name", NULL, "?");
    if (r->name == NULL || (record ? !valid_metric_name(r->name) : !valid_label_name(r->name)))
        fail_at(L, "%s needs a name made of letters, digits and _%s (name = \"%s\")",
                record ? "record" : "rule", record ? " and :" : "",
                record ? "ward:water_pressure_bar:avg" : "water_pressure_low");
    check_keys(L, 1, record ? record_keys : rule_keys, r->name);
    r->digest = digest_of(ld->file, strlen(ld->file), 1469598103934665603ull);
    r->expr_text = get_string(L, 1, "expr", NULL, r->name);
    r->select_text = record ? NULL : get_string(L, 1, "select", NULL, r->name);
    if (r->expr_text != NULL) {
        if (query_parse(r->expr_text, &r->expr, why, sizeof(why)) != IOCD_OK)
            fail_at(L, "rule \"%s\": expr: %s", r->name, why);
        if (query_expr_type(r->expr) != QUERY_VECTOR && query_expr_type(r->expr) != QUERY_SCALAR)
            fail_at(L, "rule \"%s\": expr must give an instant vector or a scalar", r->name);
        r->digest = digest_of(r->expr_text, strlen(r->expr_text), r->digest);
    }
    if (r->select_text != NULL) {
        if (query_selector_parse(r->select_text, &r->sel, why, sizeof(why)) != IOCD_OK)
            fail_at(L, "rule \"%s\": select: %s", r->name, why);
        r->digest = digest_of(r->select_text, strlen(r->select_text), r->digest);
    }
    r->every_ms = get_duration(L, 1, "every", 10000, r->name);
    if (record) {
        r->kind = RULE_RECORD;
        if (r->expr == NULL)
            fail_at(L, "record \"%s\" needs expr (a PromQL expression)", r->name);
        get_labels(L, 1, r);
        if (r->every_ms < 1000)
            fail_at(L, "record \"%s\": every must be at least 1s", r->name);
        return 0;
    }
    if ((r->expr != NULL) == (r->select_text != NULL))
        fail_at(L,
                "rule \"%s\" needs exactly one of select (a series selector, checked per "
                "sample) or expr (PromQL, checked every `every`)",
                r->name);
    r->window_ms = get_duration(L, 1, "window", 0, r->name);
    r->hold_ms = get_duration(L, 1, "hold", 0, r->name);
    r->keep_ms = get_duration(L, 1, "keep", 0, r->name);
    r->absent_ms = get_duration(L, 1, "absent", 0, r->name);
    get_cond(L, rs->sb, 1, "when", &r->when, r->name, ld->file);
    get_cond(L, rs->sb, 1, "clear", &r->clear, r->name, ld->file);
    if (r->expr != NULL) {
        r->kind = RULE_EXPR;
        if (r->window_ms > 0 || r->absent_ms > 0)
            fail_at(L, "rule \"%s\": window and absent go with select, not expr", r->name);
        if (r->every_ms < 1000)
            fail_at(L, "rule \"%s\": every must be at least 1s", r->name);
    } else if (r->absent_ms > 0) {
        r->kind = RULE_ABSENT;
        if (r->when.ref != LUA_NOREF || r->window_ms > 0)
            fail_at(L, "rule \"%s\": an absent rule takes no when or window", r->name);
    } else {
        r->kind = RULE_STREAM;
        if (r->when.ref == LUA_NOREF)
            fail_at(L,
                    "rule \"%s\" needs when (a function(s, ctx) or a string such as "
                    "\"value > 3\"), or absent = DURATION",
                    r->name);
    }
    if (r->window_ms > 24 * 3600 * 1000LL)
        fail_at(L, "rule \"%s\": window is limited to 24h", r->name);
    r->severity = get_string(L, 1, "severity", "warning", r->name);
    if (strcmp(r->severity, "critical") != 0 && strcmp(r->severity, "warning") != 0 &&
        strcmp(r->severity, "info") != 0)
        fail_at(L, "rule \"%s\": severity must be critical, warning or info, not \"%s\"", r->name,
                r->severity);
    r->domain = get_string(L, 1, "domain", "other", r->name);
    get_names(L, 1, "group_by", &r->group_by, &r->n_group_by, r->name);
    get_text(L, 1, "summary", &r->summary, r->name);
    get_text(L, 1, "description", &r->description, r->name);
    r->runbook = get_string(L, 1, "runbook", NULL, r->name);
    get_labels(L, 1, r);
    if (lua_getfield(L, 1, "inhibits") != LUA_TNIL) { /* { match = '{...}', equal = {...} } */
        query_selector probe;
        int t = lua_gettop(L);
        if (lua_type(L, t) != LUA_TTABLE)
            fail_at(L,
                    "rule \"%s\": inhibits must be { match = '{domain=\"lighting\"}', equal = "
                    "{\"ward\"} }",
                    r->name);
        r->inhibit_match = get_string(L, t, "match", NULL, r->name);
        if (r->inhibit_match == NULL)
            fail_at(L,
                    "rule \"%s\": inhibits needs match (label matchers of the alerts it holds "
                    "back)",
                    r->name);
        if (query_selector_parse(r->inhibit_match, &probe, why, sizeof(why)) != IOCD_OK)
            fail_at(L, "rule \"%s\": inhibits.match: %s", r->name, why);
        query_selector_fini(&probe);
        get_names(L, t, "equal", &r->inhibit_equal, &r->n_inhibit_equal, r->name);
    }
    lua_pop(L, 1);
    mode = lua_getfield(L, 1, "mode") == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (mode != NULL && strcmp(mode, "shadow") != 0 && strcmp(mode, "live") != 0)
        fail_at(L, "rule \"%s\": mode must be \"live\" or \"shadow\"", r->name);
    r->shadow = mode != NULL && strcmp(mode, "shadow") == 0;
    lua_pop(L, 1);
    {
        char d[128];
        snprintf(d, sizeof(d), "%d|%lld|%lld|%lld|%lld|%d|%s|%s", r->kind, (long long)r->window_ms,
                 (long long)r->hold_ms, (long long)r->keep_ms, (long long)r->absent_ms, r->shadow,
                 r->severity, r->domain);
        r->digest = digest_of(d, strlen(d), r->digest);
        r->digest = digest_of(r->name, strlen(r->name), r->digest);
    }
    return 0;
}

/* rule "name" { ... }: the table call after the name (upvalues: loader, name, record). */
static int named_call(lua_State *L)
{
    bool record = lua_toboolean(L, lua_upvalueindex(3));

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (lua_getfield(L, 1, "name") != LUA_TNIL)
        fail_at(L, "rule \"%s\": the name is given twice", lua_tostring(L, lua_upvalueindex(2)));
    lua_pop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_setfield(L, 1, "name");
    return define(L, record);
}

static int l_rule(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TSTRING) {
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_pushvalue(L, 1);
        lua_pushboolean(L, 0);
        lua_pushcclosure(L, named_call, 3);
        return 1;
    }
    return define(L, false);
}

static int l_record(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TSTRING) {
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_pushvalue(L, 1);
        lua_pushboolean(L, 1);
        lua_pushcclosure(L, named_call, 3);
        return 1;
    }
    return define(L, true);
}

static iocd_err load_file(loader *ld, const char *path, char *errbuf, size_t errlen)
{
    rule_sandbox *sb = ld->rs->sb;
    lua_State *L = rule_sandbox_state(sb);
    char *src = NULL, chunk[600];
    size_t len = 0, before = ld->rs->n, i;
    iocd_err err;

    err = iocd_file_read(path, FILE_SIZE_MAX, &src, &len);
    if (err != IOCD_OK) {
        snprintf(errbuf, errlen, "%s: %s", path,
                 err == IOCD_ETOOBIG ? "rule file over 1 MiB" : iocd_strerror(err));
        return err == IOCD_ETOOBIG ? IOCD_EPARSE : err;
    }
    ld->file = path;
    snprintf(chunk, sizeof(chunk), "@%s", path);
    err = rule_sandbox_load(sb, src, len, chunk, errbuf, errlen);
    iocd_free(src);
    if (err != IOCD_OK)
        return err;
    /* The chunk's private environment gets rule and record. */
    lua_getupvalue(L, -1, 1);
    lua_pushlightuserdata(L, ld);
    lua_pushcclosure(L, l_rule, 1);
    lua_setfield(L, -2, "rule");
    lua_pushlightuserdata(L, ld);
    lua_pushcclosure(L, l_record, 1);
    lua_setfield(L, -2, "record");
    lua_pop(L, 1);
    err = rule_sandbox_call(sb, 0, 0, errbuf, errlen);
    if (err != IOCD_OK) {
        if (strncmp(errbuf, path, strlen(path)) != 0) { /* e.g. an overrun: say which file */
            char msg[1024];
            snprintf(msg, sizeof(msg), "%s: %s", path, errbuf);
            snprintf(errbuf, errlen, "%s", msg);
        }
        return err;
    }
    if (ld->rs->n == before) {
        snprintf(errbuf, errlen, "%s: defines no rule (call rule { ... } or record { ... })", path);
        return IOCD_EPARSE;
    }
    for (i = before; i < ld->rs->n; i++) { /* names are unique across the set */
        size_t j;
        for (j = 0; j < i; j++)
            if (strcmp(ld->rs->rules[j].name, ld->rs->rules[i].name) == 0) {
                snprintf(errbuf, errlen, "%s:%d: rule \"%s\" is already defined at %s:%d",
                         ld->rs->rules[i].file, ld->rs->rules[i].line, ld->rs->rules[i].name,
                         ld->rs->rules[j].file, ld->rs->rules[j].line);
                return IOCD_EPARSE;
            }
    }
    return IOCD_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The files of a rules path: the file itself, or a directory's *.lua but *_test.lua. */
static iocd_err list_files(const char *path, char ***out, size_t *n_out, char *errbuf,
                           size_t errlen)
{
    struct stat sb;
    char **files = NULL;
    size_t n = 0;
    DIR *d;
    struct dirent *de;

    if (stat(path, &sb) != 0) {
        snprintf(errbuf, errlen, "%s: no such file or directory", path);
        return IOCD_ENOTFOUND;
    }
    if (!S_ISDIR(sb.st_mode)) {
        files = iocd_calloc(2, sizeof(*files));
        if (files == NULL || (files[0] = iocd_strdup(path)) == NULL) {
            iocd_free(files);
            return IOCD_ENOMEM;
        }
        *out = files;
        *n_out = 1;
        return IOCD_OK;
    }
    d = opendir(path);
    if (d == NULL) {
        snprintf(errbuf, errlen, "%s: cannot read the directory", path);
        return IOCD_EIO;
    }
    files = iocd_calloc(FILES_MAX + 1, sizeof(*files));
    while (files != NULL && (de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        char full[4200];
        if (len < 5 || strcmp(de->d_name + len - 4, ".lua") != 0 || de->d_name[0] == '.')
            continue;
        if (len >= 9 && strcmp(de->d_name + len - 9, "_test.lua") == 0)
            continue;
        if (n == FILES_MAX) {
            snprintf(errbuf, errlen, "%s: more than %d rule files", path, FILES_MAX);
            closedir(d);
            free_strv(files, n);
            return IOCD_EPARSE;
        }
        snprintf(full, sizeof(full), "%s/%s", path, de->d_name);
        files[n] = iocd_strdup(full);
        if (files[n] == NULL)
            break;
        n++;
    }
    closedir(d);
    if (files == NULL || (n > 0 && files[n - 1] == NULL)) {
        free_strv(files, n);
        return IOCD_ENOMEM;
    }
    iocd_qsort(files, n, sizeof(*files), cmp_str);
    *out = files;
    *n_out = n;
    return IOCD_OK;
}

iocd_err rule_set_load(const char *path, const rule_limits *lim, rule_set **out, char *errbuf,
                       size_t errlen)
{
    loader ld;
    char **files = NULL;
    size_t n_files = 0, i;
    iocd_err err;

    memset(&ld, 0, sizeof(ld));
    ld.rs = iocd_calloc(1, sizeof(*ld.rs));
    if (ld.rs == NULL)
        return IOCD_ENOMEM;
    err = rule_sandbox_new(lim, &ld.rs->sb);
    if (err == IOCD_OK)
        err = list_files(path, &files, &n_files, errbuf, errlen);
    for (i = 0; err == IOCD_OK && i < n_files; i++)
        err = load_file(&ld, files[i], errbuf, errlen);
    free_strv(files, n_files);
    if (err != IOCD_OK) {
        rule_set_free(ld.rs);
        return err;
    }
    *out = ld.rs;
    return IOCD_OK;
}

/* ---- Windows ----------------------------------------------------------------------------------
 */

double rule_window_field(const rule_window *w, rule_field f)
{
    double acc = 0, mean = 0, m2 = 0;
    size_t i;

    if (w->n == 0)
        return NAN;
    switch (f) {
    case RF_VALUE:
    case RF_LAST:
        return w->s[w->n - 1].v;
    case RF_FIRST:
        return w->s[0].v;
    case RF_COUNT:
        return (double)w->n;
    case RF_SUM:
    case RF_AVG:
        for (i = 0; i < w->n; i++)
            acc += w->s[i].v;
        return f == RF_SUM ? acc : acc / (double)w->n;
    case RF_MIN:
        acc = w->s[0].v;
        for (i = 1; i < w->n; i++)
            if (w->s[i].v < acc || isnan(acc))
                acc = w->s[i].v;
        return acc;
    case RF_MAX:
        acc = w->s[0].v;
        for (i = 1; i < w->n; i++)
            if (w->s[i].v > acc || isnan(acc))
                acc = w->s[i].v;
        return acc;
    case RF_DELTA:
        return w->s[w->n - 1].v - w->s[0].v;
    case RF_RATE: {
        /* A counter's increase per second over the samples seen (resets counted). */
        int64_t dt = w->s[w->n - 1].t_ms - w->s[0].t_ms;
        if (w->n < 2 || dt <= 0)
            return NAN;
        acc = w->s[w->n - 1].v - w->s[0].v;
        for (i = 1; i < w->n; i++)
            if (w->s[i].v < w->s[i - 1].v)
                acc += w->s[i - 1].v;
        return acc / ((double)dt / 1000.0);
    }
    case RF_STDDEV:
        for (i = 0; i < w->n; i++) {
            double d = w->s[i].v - mean;
            mean += d / (double)(i + 1);
            m2 += d * (w->s[i].v - mean);
        }
        return sqrt(m2 / (double)w->n);
    case RF_NONE:
        break;
    }
    return NAN;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* As PromQL's quantile_over_time: linear interpolation between closest ranks. */
static double quantile_of(double q, double *v, size_t n)
{
    double rank, w;
    size_t lo, hi;

    if (n == 0 || isnan(q))
        return NAN;
    if (q < 0)
        return -INFINITY;
    if (q > 1)
        return INFINITY;
    iocd_qsort(v, n, sizeof(*v), cmp_double);
    rank = q * (double)(n - 1);
    lo = (size_t)floor(rank);
    hi = lo + 1 < n ? lo + 1 : n - 1;
    w = rank - floor(rank);
    return v[lo] * (1 - w) + v[hi] * w;
}

static double window_quantile(const rule_window *w, double q)
{
    double buf[512], *v = w->n <= 512 ? buf : iocd_malloc(w->n * sizeof(*v)), r;
    size_t i;

    if (v == NULL)
        return NAN;
    for (i = 0; i < w->n; i++)
        v[i] = w->s[i].v;
    r = quantile_of(q, v, w->n);
    if (v != buf)
        iocd_free(v);
    return r;
}

/* ---- The sample object ------------------------------------------------------------------------
 */

typedef struct sample_ud {
    const rule_window *w;
    const char *labels;
    size_t labels_len;
    bool valid;
} sample_ud;

static sample_ud *check_sample(lua_State *L, int idx)
{
    sample_ud *s = luaL_checkudata(L, idx, SAMPLE_MT);

    if (!s->valid)
        luaL_error(L, "a sample object was used after its evaluation ended");
    return s;
}

static int sample_quantile(lua_State *L)
{
    sample_ud *s = check_sample(L, 1);
    double q = luaL_checknumber(L, 2);

    lua_pushnumber(L, window_quantile(s->w, q));
    return 1;
}

static void push_labels(lua_State *L, const char *labels, size_t len)
{
    const char *p = labels, *end = labels + len;

    lua_newtable(L);
    while (p < end) {
        const char *v = p + strlen(p) + 1;
        lua_pushstring(L, v);
        lua_setfield(L, -2, p);
        p = v + strlen(v) + 1;
    }
}

/* s.value, s.avg, ..., s.time, s.labels, s.samples, s:quantile(q); string conditions also
 * read labels by bare name (ward == "phu_xa") and the math library. */
static int sample_index(lua_State *L)
{
    sample_ud *s = check_sample(L, 1);
    const char *k = luaL_checkstring(L, 2);
    const char *lv;
    size_t i;

    for (i = 0; i < IOCD_ARRAY_LEN(field_names); i++)
        if (strcmp(k, field_names[i]) == 0) {
            lua_pushnumber(L, rule_window_field(s->w, (rule_field)i));
            return 1;
        }
    if (strcmp(k, "time") == 0) {
        lua_pushnumber(L, s->w->n > 0 ? (double)s->w->s[s->w->n - 1].t_ms / 1000.0 : NAN);
        return 1;
    }
    if (strcmp(k, "samples") == 0) {
        lua_pushinteger(L, (lua_Integer)s->w->n);
        return 1;
    }
    if (strcmp(k, "labels") == 0) {
        push_labels(L, s->labels, s->labels_len);
        return 1;
    }
    if (strcmp(k, "quantile") == 0) {
        lua_pushcfunction(L, sample_quantile);
        return 1;
    }
    lv = iocd_label_value(s->labels, s->labels_len, k);
    if (lv != NULL) {
        lua_pushstring(L, lv);
        return 1;
    }
    lua_pushvalue(L, lua_upvalueindex(1)); /* the whitelist: math, string, ... */
    lua_pushvalue(L, 2);
    lua_gettable(L, -2);
    return 1;
}

static int sample_newindex(lua_State *L)
{
    return luaL_error(L, "a sample is read-only");
}

/* ---- ctx ------------------------------------------------------------------------------------- */

static const rule_ctx *cur_ctx(lua_State *L)
{
    const rule_ctx *c;

    lua_getfield(L, LUA_REGISTRYINDEX, "iocd.ctx");
    c = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (c == NULL)
        luaL_error(L, "ctx is only available while a rule is evaluated");
    return c;
}

static void push_label_cb(void *ud, const char *name, const char *value)
{
    lua_State *L = ud;

    lua_pushstring(L, value);
    lua_setfield(L, -2, name);
}

/* ctx:query("promql") -> { {labels = {...}, value = x}, ... } (a scalar: one entry). */
static int ctx_query(lua_State *L)
{
    const rule_ctx *c = cur_ctx(L);
    const char *q = luaL_checkstring(L, 2);
    query_expr *e = NULL;
    query_result r;
    char err[300];
    size_t i;

    if (c->st == NULL)
        return luaL_error(L, "ctx:query: no store here");
    if (query_parse(q, &e, err, sizeof(err)) != IOCD_OK)
        return luaL_error(L, "ctx:query: %s", err);
    if (query_eval(c->st, c->qlim, e, c->now_ms, 0, 0, &r, err, sizeof(err)) != IOCD_OK) {
        query_expr_free(e);
        return luaL_error(L, "ctx:query: %s", err);
    }
    query_expr_free(e);
    lua_newtable(L);
    if (r.type == QUERY_SCALAR) {
        lua_newtable(L);
        lua_newtable(L);
        lua_setfield(L, -2, "labels");
        lua_pushnumber(L, r.scalar);
        lua_setfield(L, -2, "value");
        lua_rawseti(L, -2, 1);
    }
    for (i = 0; r.type == QUERY_VECTOR && i < r.n; i++) {
        lua_newtable(L);
        lua_newtable(L);
        query_labels_each(r.series[i].labels, r.series[i].labels_len, push_label_cb, L);
        lua_setfield(L, -2, "labels");
        lua_pushnumber(L, r.series[i].points[0].v);
        lua_setfield(L, -2, "value");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    query_result_fini(&r);
    return 1;
}

/* ctx:local_time() -> {year, month, day, hour, min, sec, wday (0 = Sunday), yday} */
static int ctx_local_time(lua_State *L)
{
    const rule_ctx *c = cur_ctx(L);
    int64_t s = c->now_ms / 1000 + c->tz_offset_s;
    int64_t days = s >= 0 ? s / 86400 : (s - 86399) / 86400, rem = s - days * 86400;
    int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097, yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153, d = doy - (153 * mp + 2) / 5 + 1,
            m = mp < 10 ? mp + 3 : mp - 9;

    if (m <= 2)
        y++;
    lua_newtable(L);
    lua_pushinteger(L, y);
    lua_setfield(L, -2, "year");
    lua_pushinteger(L, m);
    lua_setfield(L, -2, "month");
    lua_pushinteger(L, d);
    lua_setfield(L, -2, "day");
    lua_pushinteger(L, rem / 3600);
    lua_setfield(L, -2, "hour");
    lua_pushinteger(L, rem % 3600 / 60);
    lua_setfield(L, -2, "min");
    lua_pushinteger(L, rem % 60);
    lua_setfield(L, -2, "sec");
    lua_pushinteger(L, ((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday */
    lua_setfield(L, -2, "wday");
    return 1;
}

/* ctx:sun() -> {sunrise = unix s, sunset = unix s} for today (local). */
static int ctx_sun(lua_State *L)
{
    const rule_ctx *c = cur_ctx(L);
    int64_t rise, set;

    if (!rule_sun_times(c->now_ms / 1000, c->latitude, c->longitude, c->tz_offset_s, &rise, &set))
        return luaL_error(L, "ctx:sun: no sunrise or sunset at this latitude today");
    lua_newtable(L);
    lua_pushinteger(L, rise);
    lua_setfield(L, -2, "sunrise");
    lua_pushinteger(L, set);
    lua_setfield(L, -2, "sunset");
    return 1;
}

/* ctx:is_dark([minutes]) -> between sunset and sunrise (with a margin in minutes after
 * sunset and before sunrise, default 0). */
static int ctx_is_dark(lua_State *L)
{
    const rule_ctx *c = cur_ctx(L);
    double margin = luaL_optnumber(L, 2, 0) * 60.0;
    int64_t now = c->now_ms / 1000, rise, set;

    if (!rule_sun_times(now, c->latitude, c->longitude, c->tz_offset_s, &rise, &set))
        return luaL_error(L, "ctx:is_dark: no sunrise or sunset at this latitude today");
    lua_pushboolean(L, (double)now < (double)rise - margin || (double)now > (double)set + margin);
    return 1;
}

static int ctx_index(lua_State *L)
{
    const char *k = luaL_checkstring(L, 2);

    if (strcmp(k, "now") == 0) {
        lua_pushnumber(L, (double)cur_ctx(L)->now_ms / 1000.0);
        return 1;
    }
    if (strcmp(k, "query") == 0)
        lua_pushcfunction(L, ctx_query);
    else if (strcmp(k, "local_time") == 0)
        lua_pushcfunction(L, ctx_local_time);
    else if (strcmp(k, "sun") == 0)
        lua_pushcfunction(L, ctx_sun);
    else if (strcmp(k, "is_dark") == 0)
        lua_pushcfunction(L, ctx_is_dark);
    else
        lua_pushnil(L);
    return 1;
}

/* Pushes the sample userdata and ctx (created once per state and kept in the registry). */
static sample_ud *push_sample_and_ctx(lua_State *L, rule_set *rs)
{
    sample_ud *s;

    s = lua_newuserdatauv(L, sizeof(*s), 0);
    memset(s, 0, sizeof(*s));
    if (luaL_newmetatable(L, SAMPLE_MT)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, rule_sandbox_whitelist(rs->sb));
        lua_pushcclosure(L, sample_index, 1);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, sample_newindex);
        lua_setfield(L, -2, "__newindex");
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
    }
    lua_setmetatable(L, -2);
    if (lua_getfield(L, LUA_REGISTRYINDEX, "iocd.ctxobj") != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_newtable(L);
        lua_pushcfunction(L, ctx_index);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, sample_newindex);
        lua_setfield(L, -2, "__newindex");
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, "iocd.ctxobj");
    }
    return s;
}

static bool native_eval(const rule_cond *c, const rule_window *w)
{
    double v = rule_window_field(w, c->field);

    switch (c->op) {
    case 0:
        return v < c->x;
    case 1:
        return v <= c->x;
    case 2:
        return v > c->x;
    case 3:
        return v >= c->x;
    case 4:
        return v == c->x;
    default:
        return v != c->x;
    }
}

iocd_err rule_cond_eval(rule_set *rs, const rule_def *r, const rule_cond *c, const char *labels,
                        size_t labels_len, const rule_window *w, const rule_ctx *ctx, bool *out,
                        char *errbuf, size_t errlen)
{
    lua_State *L = rule_sandbox_state(rs->sb);
    sample_ud *s;
    iocd_err err;
    int top = lua_gettop(L);

    (void)r;
    if (c->native) {
        *out = native_eval(c, w);
        return IOCD_OK;
    }
    lua_pushlightuserdata(L, (void *)ctx);
    lua_setfield(L, LUA_REGISTRYINDEX, "iocd.ctx");
    /* The sample stays anchored below the call: the collector must not free it while
     * s->valid is written after the call (an error triggers a full collection). */
    s = push_sample_and_ctx(L, rs); /* sample, ctx */
    s->w = w;
    s->labels = labels;
    s->labels_len = labels_len;
    s->valid = true;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref); /* sample, ctx, fn */
    if (c->is_string) {                        /* the chunk reads the sample as its environment */
        lua_pushvalue(L, -3);
        lua_setupvalue(L, -2, 1);
        err = rule_sandbox_call(rs->sb, 0, 1, errbuf, errlen);
    } else {
        lua_pushvalue(L, -3);
        lua_pushvalue(L, -3);
        err = rule_sandbox_call(rs->sb, 2, 1, errbuf, errlen);
    }
    s->valid = false;
    if (err == IOCD_OK)
        *out = lua_toboolean(L, -1);
    lua_settop(L, top);
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "iocd.ctx");
    return err;
}

/* ---- Templates --------------------------------------------------------------------------------
 */

static iocd_err put_value(iocd_buf *out, double v, const char *fmt, size_t fmt_len)
{
    char f[16];

    if (fmt_len == 0 || fmt_len >= sizeof(f))
        return iocd_buf_float(out, v);
    memcpy(f, fmt, fmt_len);
    f[fmt_len] = '\0';
    if (f[fmt_len - 1] == 'd')
        return iocd_buf_printf(out, "%lld", isfinite(v) ? (long long)llround(v) : 0LL);
    if (strcmp(f, "%f") == 0)
        return iocd_buf_printf(out, "%f", v);
    if (strcmp(f, "%g") == 0)
        return iocd_buf_printf(out, "%g", v);
    if (fmt_len == 4 && f[0] == '%' && f[1] == '.' && f[2] >= '0' && f[2] <= '9') {
        int prec = f[2] - '0';
        return f[3] == 'f' ? iocd_buf_printf(out, "%.*f", prec, v)
                           : iocd_buf_printf(out, "%.*g", prec, v);
    }
    return iocd_buf_float(out, v);
}

iocd_err rule_text_render(rule_set *rs, const rule_text *t, const char *labels, size_t labels_len,
                          double value, iocd_buf *out, char *errbuf, size_t errlen)
{
    const char *p = t->tmpl;
    iocd_err err = IOCD_OK;

    if (t->ref != LUA_NOREF) {
        lua_State *L = rule_sandbox_state(rs->sb);
        int top = lua_gettop(L);
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
        lua_newtable(L);
        push_labels(L, labels, labels_len);
        lua_setfield(L, -2, "labels");
        lua_pushnumber(L, value);
        lua_setfield(L, -2, "value");
        err = rule_sandbox_call(rs->sb, 1, 1, errbuf, errlen);
        if (err == IOCD_OK) {
            size_t len = 0;
            const char *s = lua_tolstring(L, -1, &len);
            err = iocd_buf_append(out, s != NULL ? s : "", s != NULL ? len : 0);
        }
        lua_settop(L, top);
        return err;
    }
    while (p != NULL && *p != '\0' && err == IOCD_OK) {
        const char *open = strstr(p, "{{"), *close, *q, *bar, *fmt = NULL;
        char name[128];
        size_t len, fmt_len = 0;
        if (open == NULL || (close = strstr(open + 2, "}}")) == NULL) {
            err = iocd_buf_puts(out, p);
            break;
        }
        err = iocd_buf_append(out, p, (size_t)(open - p));
        q = open + 2;
        while (*q == ' ')
            q++;
        bar = memchr(q, '|', (size_t)(close - q));
        len = (size_t)((bar != NULL ? bar : close) - q);
        while (len > 0 && q[len - 1] == ' ')
            len--;
        if (bar != NULL) {
            fmt = bar + 1;
            while (*fmt == ' ')
                fmt++;
            fmt_len = (size_t)(close - fmt);
            while (fmt_len > 0 && fmt[fmt_len - 1] == ' ')
                fmt_len--;
        }
        snprintf(name, sizeof(name), "%.*s", (int)(len < 127 ? len : 127), q);
        if (strncmp(name, "$labels.", 8) == 0)
            memmove(name, name + 8, strlen(name + 8) + 1);
        if (err == IOCD_OK && (strcmp(name, "value") == 0 || strcmp(name, "$value") == 0)) {
            err = put_value(out, value, fmt, fmt_len);
        } else if (err == IOCD_OK) {
            const char *v = iocd_label_value(labels, labels_len, name);
            if (v != NULL)
                err = iocd_buf_puts(out, v);
        }
        p = close + 2;
    }
    return err;
}
