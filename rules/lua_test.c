/* rules/lua_test.c - `iocd rules test`: unit tests for rule files, in the spirit of promtool's.
 * A test file calls test "name" { rules = ..., interval = ..., series = {...}, alerts = {...} }.
 * Each test gets a private store in a temporary directory and a fresh engine; the series are
 * written step by step through the real store (so the engine sees committed samples as in the
 * daemon) and the engine is stepped at each time; the alerts firing at each `at` are compared
 * with the expected ones, and every difference is reported. */
#define _XOPEN_SOURCE 700 /* nftw */
#include "rules/rules_int.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SERIES_MAX 256
#define POINTS_MAX 100000
#define EXPECT_MAX 256

typedef struct tseries {
    iocd_label labels[64];
    size_t n_labels;
    char *text; /* holds the label strings */
    double *v;
    uint8_t *kind; /* 0 missing, 1 value, 2 stale */
    size_t n;
} tseries;

typedef struct texpect {
    int64_t at_ms;
    char **sets; /* each: "name=value\n..." of one expected alert, lines sorted */
    size_t n_sets;
    bool pending; /* the list is of pending alerts, not firing ones */
    int line;
} texpect;

typedef struct tcase {
    char *name;
    char *rules;
    int64_t interval_ms, start_ms;
    tseries series[SERIES_MAX];
    size_t n_series;
    texpect expect[EXPECT_MAX];
    size_t n_expect;
    int line;
} tcase;

typedef struct tfile {
    tcase *cases;
    size_t n, cap;
    const char *path;
} tfile;

/* ---- The series notation: "1 2 _ stale 3+2x4 5x3 _x2" ---------------------------------------- */

static bool expand_values(const char *s, tseries *ts, char *why, size_t cap)
{
    char buf[8192], *save = NULL, *tok;

    if (strlen(s) >= sizeof(buf)) {
        snprintf(why, cap, "series values longer than %zu bytes", sizeof(buf) - 1);
        return false;
    }
    snprintf(buf, sizeof(buf), "%s", s);
    for (tok = strtok_r(buf, " \t\n", &save); tok != NULL; tok = strtok_r(NULL, " \t\n", &save)) {
        double a = 0, b = 0;
        long reps = 0, i;
        uint8_t kind = 1;
        char *x = strchr(tok, 'x'), *end;
        if (x != NULL) {
            reps = strtol(x + 1, &end, 10);
            if (end == x + 1 || *end != '\0' || reps < 0 || reps > POINTS_MAX) {
                snprintf(why, cap, "bad repeat in \"%s\" (write a+bxN, e.g. 1+1x10)", tok);
                return false;
            }
            *x = '\0';
        }
        if (strcmp(tok, "_") == 0) {
            kind = 0;
        } else if (strcmp(tok, "stale") == 0) {
            kind = 2;
        } else {
            char *sign;
            a = strtod(tok, &end);
            if (end == tok) {
                snprintf(why, cap, "\"%s\" is not a number, _ or stale", tok);
                return false;
            }
            sign = end;
            if (*sign == '+' || *sign == '-') {
                b = strtod(sign, &end);
                if (end == sign + 1 || x == NULL) {
                    snprintf(why, cap, "bad step in \"%s\" (write a+bxN)", tok);
                    return false;
                }
            }
            if (*end != '\0') {
                snprintf(why, cap, "\"%s\" is not a number, _ or stale", tok);
                return false;
            }
        }
        for (i = 0; i <= reps; i++) {
            if (ts->n >= POINTS_MAX) {
                snprintf(why, cap, "more than %d points", POINTS_MAX);
                return false;
            }
            if (ts->n % 256 == 0) {
                double *gv = iocd_realloc(ts->v, (ts->n + 256) * sizeof(*gv));
                uint8_t *gk = gv != NULL ? iocd_realloc(ts->kind, ts->n + 256) : NULL;
                if (gv != NULL)
                    ts->v = gv;
                if (gk == NULL) {
                    snprintf(why, cap, "out of memory");
                    return false;
                }
                ts->kind = gk;
            }
            ts->v[ts->n] = a + b * (double)i;
            ts->kind[ts->n] = kind;
            ts->n++;
            if (x == NULL)
                break;
        }
    }
    return true;
}

/* 'metric{a="b", c="d"}' into labels (a PromQL selector with = only). */
static bool parse_series_labels(const char *text, tseries *ts, char *why, size_t cap)
{
    query_selector sel;
    size_t i, total = 0;
    char *p;

    if (query_selector_parse(text, &sel, why, cap) != IOCD_OK)
        return false;
    for (i = 0; i < sel.n; i++) {
        if (sel.m[i].op != QUERY_MATCH_EQ) {
            snprintf(why, cap, "input series use = only: %s", text);
            query_selector_fini(&sel);
            return false;
        }
        total += strlen(sel.m[i].name) + strlen(sel.m[i].value) + 2;
    }
    if (sel.n > 64) {
        snprintf(why, cap, "too many labels: %s", text);
        query_selector_fini(&sel);
        return false;
    }
    ts->text = iocd_malloc(total + 1);
    if (ts->text == NULL) {
        query_selector_fini(&sel);
        return false;
    }
    p = ts->text;
    for (i = 0; i < sel.n; i++) {
        size_t nl = strlen(sel.m[i].name), vl = strlen(sel.m[i].value);
        memcpy(p, sel.m[i].name, nl + 1);
        memcpy(p + nl + 1, sel.m[i].value, vl + 1);
        ts->labels[i] = (iocd_label){ p, nl, p + nl + 1, vl };
        p += nl + vl + 2;
    }
    ts->n_labels = sel.n;
    query_selector_fini(&sel);
    return true;
}

/* ---- Reading test files ---------------------------------------------------------------------- */

static int cmp_line(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* An expected alert {name = "value", ...} as sorted "name=value" lines. */
static char *label_set_text(lua_State *L, int idx)
{
    char *lines[64] = { NULL }, *out;
    size_t n = 0, i, total = 1;

    lua_pushnil(L);
    while (lua_next(L, idx) != 0 && n < 64) {
        char line[600];
        if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
            snprintf(line, sizeof(line), "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
            lines[n] = iocd_strdup(line);
            if (lines[n] != NULL)
                total += strlen(lines[n++]) + 1;
        }
        lua_pop(L, 1);
    }
    iocd_qsort(lines, n, sizeof(*lines), cmp_line);
    out = iocd_malloc(total);
    if (out != NULL) {
        out[0] = '\0';
        for (i = 0; i < n; i++) {
            strcat(out, lines[i]);
            strcat(out, "\n");
        }
    }
    for (i = 0; i < n; i++)
        iocd_free(lines[i]);
    return out;
}

static int64_t dur_field(lua_State *L, int t, const char *key, int64_t def)
{
    int64_t ms = def;
    int type = lua_getfield(L, t, key);

    if (type == LUA_TNUMBER)
        ms = (int64_t)llround(lua_tonumber(L, -1) * 1000.0);
    else if (type == LUA_TSTRING &&
             query_duration_parse(lua_tostring(L, -1), false, &ms) != IOCD_OK)
        luaL_error(L, "%s = \"%s\" is not a duration", key, lua_tostring(L, -1));
    lua_pop(L, 1);
    return ms;
}

static int l_test_table(lua_State *L)
{
    tfile *tf = lua_touserdata(L, lua_upvalueindex(1));
    const char *name = lua_tostring(L, lua_upvalueindex(2));
    lua_Debug ar;
    char why[300];
    tcase *tc;
    size_t i;

    luaL_checktype(L, 1, LUA_TTABLE);
    if (tf->n == tf->cap) {
        size_t cap = tf->cap != 0 ? tf->cap * 2 : 8;
        tcase *g = iocd_realloc(tf->cases, cap * sizeof(*g));
        if (g == NULL)
            return luaL_error(L, "not enough memory");
        tf->cases = g;
        tf->cap = cap;
    }
    tc = &tf->cases[tf->n++];
    memset(tc, 0, sizeof(*tc));
    tc->name = iocd_strdup(name);
    tc->line = lua_getstack(L, 1, &ar) && lua_getinfo(L, "l", &ar) ? ar.currentline : 0;
    if (lua_getfield(L, 1, "rules") == LUA_TSTRING)
        tc->rules = iocd_strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    tc->interval_ms = dur_field(L, 1, "interval", 60000);
    if (tc->interval_ms <= 0)
        return luaL_error(L, "test \"%s\": interval must be positive", name);
    tc->start_ms = 1767225600000LL; /* 2026-01-01T00:00:00Z unless start says otherwise */
    if (lua_getfield(L, 1, "start") == LUA_TSTRING &&
        query_time_parse(lua_tostring(L, -1), &tc->start_ms) != IOCD_OK)
        return luaL_error(L, "test \"%s\": start must be an RFC 3339 time", name);
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "series") != LUA_TTABLE)
        return luaL_error(
            L, "test \"%s\" needs series = { { 'metric{label=\"v\"}', \"1 2 3\" }, ... }", name);
    for (i = 1; i <= lua_rawlen(L, -1) && tc->n_series < SERIES_MAX; i++) {
        tseries *ts = &tc->series[tc->n_series];
        lua_rawgeti(L, -1, (lua_Integer)i);
        if (lua_type(L, -1) != LUA_TTABLE)
            return luaL_error(L, "test \"%s\": series[%d] must be { selector, values }", name,
                              (int)i);
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "test \"%s\": series[%d] must be { selector, values }", name,
                              (int)i);
        if (!parse_series_labels(lua_tostring(L, -2), ts, why, sizeof(why)) ||
            !expand_values(lua_tostring(L, -1), ts, why, sizeof(why)))
            return luaL_error(L, "test \"%s\": series[%d]: %s", name, (int)i, why);
        tc->n_series++;
        lua_pop(L, 3);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "alerts") != LUA_TTABLE)
        return luaL_error(
            L, "test \"%s\" needs alerts = { { at = \"1m\", firing = { ... } }, ... }", name);
    for (i = 1; i <= lua_rawlen(L, -1) && tc->n_expect < EXPECT_MAX; i++) {
        texpect *ex = &tc->expect[tc->n_expect];
        size_t k;
        int list;
        lua_rawgeti(L, -1, (lua_Integer)i);
        if (lua_type(L, -1) != LUA_TTABLE)
            return luaL_error(L, "test \"%s\": alerts[%d] must be a table", name, (int)i);
        ex->at_ms = dur_field(L, lua_gettop(L), "at", -1);
        if (ex->at_ms < 0)
            return luaL_error(L, "test \"%s\": alerts[%d] needs at = DURATION", name, (int)i);
        ex->line = tc->line;
        list = lua_getfield(L, -1, "firing");
        if (list == LUA_TNIL) {
            lua_pop(L, 1);
            list = lua_getfield(L, -1, "pending");
            ex->pending = true;
        }
        if (list != LUA_TTABLE)
            return luaL_error(L, "test \"%s\": alerts[%d] needs firing = {...} or pending = {...}",
                              name, (int)i);
        ex->n_sets = lua_rawlen(L, -1);
        ex->sets = iocd_calloc(ex->n_sets + 1, sizeof(char *));
        for (k = 0; ex->sets != NULL && k < ex->n_sets; k++) {
            lua_rawgeti(L, -1, (lua_Integer)k + 1);
            if (lua_type(L, -1) != LUA_TTABLE)
                return luaL_error(L, "test \"%s\": alerts[%d]: each alert is a table of labels",
                                  name, (int)i);
            ex->sets[k] = label_set_text(L, lua_gettop(L));
            lua_pop(L, 1);
        }
        tc->n_expect++;
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    return 0;
}

static int l_test(lua_State *L)
{
    luaL_checkstring(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushcclosure(L, l_test_table, 2);
    return 1;
}

static void tcase_fini(tcase *tc)
{
    size_t i, k;

    iocd_free(tc->name);
    iocd_free(tc->rules);
    for (i = 0; i < tc->n_series; i++) {
        iocd_free(tc->series[i].text);
        iocd_free(tc->series[i].v);
        iocd_free(tc->series[i].kind);
    }
    for (i = 0; i < tc->n_expect; i++) {
        for (k = 0; k < tc->expect[i].n_sets; k++)
            iocd_free(tc->expect[i].sets[k]);
        iocd_free(tc->expect[i].sets);
    }
}

/* ---- Running ------------------------------------------------------------------------------- */

typedef struct alert_view {
    char *key; /* sorted "name=value\n" lines of its labels */
    bool firing;
} alert_view;

typedef struct runner {
    alert_view *a;
    size_t n, cap;
} runner;

static char *labels_text(const char *ls, size_t len)
{
    char *lines[96], *out;
    size_t n = 0, i, total = 1;
    const char *p = ls, *end = ls + len;

    while (p < end && n < 96) {
        const char *v = p + strlen(p) + 1;
        char line[600];
        snprintf(line, sizeof(line), "%s=%s", p, v);
        lines[n] = iocd_strdup(line);
        if (lines[n] != NULL)
            total += strlen(lines[n++]) + 1;
        p = v + strlen(v) + 1;
    }
    out = iocd_malloc(total);
    if (out != NULL) {
        out[0] = '\0';
        for (i = 0; i < n; i++) {
            strcat(out, lines[i]);
            strcat(out, "\n");
        }
    }
    for (i = 0; i < n; i++)
        iocd_free(lines[i]);
    return out;
}

static void on_event(void *ud, const rule_event *ev)
{
    runner *r = ud;
    char *key = labels_text(ev->labels, ev->labels_len);
    size_t i;

    if (key == NULL)
        return;
    for (i = 0; i < r->n && strcmp(r->a[i].key, key) != 0; i++)
        ;
    if (ev->to == RULE_INACTIVE) {
        if (i < r->n) {
            iocd_free(r->a[i].key);
            r->a[i] = r->a[--r->n];
        }
        iocd_free(key);
        return;
    }
    if (i == r->n) {
        if (r->n == r->cap) {
            size_t cap = r->cap != 0 ? r->cap * 2 : 16;
            alert_view *g = iocd_realloc(r->a, cap * sizeof(*g));
            if (g == NULL) {
                iocd_free(key);
                return;
            }
            r->a = g;
            r->cap = cap;
        }
        r->a[r->n++] = (alert_view){ key, false };
    } else {
        iocd_free(key);
    }
    r->a[i].firing = ev->to == RULE_FIRING;
}

/* Whether alert labels (lines) contain every line of want (lines). */
static bool subset(const char *want, const char *have)
{
    const char *p = want;

    while (*p != '\0') {
        const char *nl = strchr(p, '\n'), *h = have;
        size_t len = (size_t)(nl - p + 1);
        bool found = false;
        while (h != NULL && *h != '\0') {
            if (strncmp(h, p, len) == 0) {
                found = true;
                break;
            }
            h = strchr(h, '\n');
            if (h != NULL)
                h++;
        }
        if (!found)
            return false;
        p = nl + 1;
    }
    return true;
}

static void one_line(const char *lines, char *out, size_t cap)
{
    size_t n = 0;
    const char *p;

    n += (size_t)snprintf(out, cap, "{");
    for (p = lines; *p != '\0' && n < cap; p++)
        n += (size_t)snprintf(out + n, cap - n, "%c", *p == '\n' ? (p[1] != '\0' ? ',' : '}') : *p);
    if (lines[0] == '\0')
        snprintf(out + n, cap > n ? cap - n : 0, "}");
}

/* Compares the alerts at one expectation; appends failures to report. */
static size_t check_expect(const tcase *tc, const texpect *ex, const runner *r, iocd_buf *report)
{
    bool used[256] = { false };
    size_t i, k, failures = 0;
    char line[1200];

    for (k = 0; k < ex->n_sets; k++) {
        bool found = false;
        for (i = 0; i < r->n && i < 256; i++) {
            if (used[i] || r->a[i].firing == ex->pending || !subset(ex->sets[k], r->a[i].key))
                continue;
            used[i] = true;
            found = true;
            break;
        }
        if (!found) {
            one_line(ex->sets[k], line, sizeof(line));
            iocd_buf_printf(report, "    at %llds: expected %s alert %s, not there\n",
                            (long long)(ex->at_ms / 1000), ex->pending ? "pending" : "firing",
                            line);
            failures++;
        }
    }
    for (i = 0; i < r->n && i < 256; i++) {
        if (used[i] || r->a[i].firing == ex->pending)
            continue;
        one_line(r->a[i].key, line, sizeof(line));
        iocd_buf_printf(report, "    at %llds: unexpected %s alert %s\n",
                        (long long)(ex->at_ms / 1000), ex->pending ? "pending" : "firing", line);
        failures++;
    }
    (void)tc;
    return failures;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

static iocd_err run_case(const char *test_path, tcase *tc, const rule_engine_config *base,
                         iocd_buf *report, bool *ok_out)
{
    char dir[] = "/tmp/iocd-rules-test-XXXXXX", rules_path[4200], errbuf[1024];
    store_config scfg;
    store *st = NULL;
    rule_engine *e = NULL;
    rule_engine_config cfg = *base;
    runner r = { NULL, 0, 0 };
    int64_t *times = NULL, last = 0;
    size_t n_times = 0, i, j, k, failures = 0, steps = 0;
    iocd_err err;

    *ok_out = false;
    for (i = 0; i < tc->n_series; i++)
        if (tc->series[i].n > steps)
            steps = tc->series[i].n;
    if (tc->rules != NULL && tc->rules[0] == '/') {
        snprintf(rules_path, sizeof(rules_path), "%s", tc->rules);
    } else {
        const char *slash = strrchr(test_path, '/');
        int dlen = slash != NULL ? (int)(slash - test_path + 1) : 0;
        if (tc->rules != NULL) {
            snprintf(rules_path, sizeof(rules_path), "%.*s%s", dlen, test_path, tc->rules);
        } else { /* water_test.lua tests water.lua */
            size_t len = strlen(test_path);
            snprintf(rules_path, sizeof(rules_path), "%.*s.lua",
                     len > 9 ? (int)(len - 9) : (int)len, test_path);
        }
    }
    if (mkdtemp(dir) == NULL)
        return IOCD_EIO;
    memset(&scfg, 0, sizeof(scfg));
    scfg.retention_ms = 100LL * 365 * 86400000; /* tests live at any date */
    scfg.future_ms = 100LL * 365 * 86400000;
    scfg.rollup_retention_ms = 100LL * 365 * 86400000;
    err = store_open(dir, &scfg, &st, errbuf, sizeof(errbuf));
    cfg.st = st;
    cfg.no_persist = true;
    cfg.on_event = on_event;
    cfg.ud = &r;
    if (err == IOCD_OK)
        err = rule_engine_new(&cfg, &e);
    if (err == IOCD_OK) {
        err = rule_engine_load(e, rules_path, errbuf, sizeof(errbuf));
        if (err != IOCD_OK) {
            iocd_buf_printf(report, "FAIL %s (%s:%d): rules: %s\n", tc->name, test_path, tc->line,
                            errbuf);
            err = IOCD_OK;
            failures++;
            goto out;
        }
    }
    if (err != IOCD_OK)
        goto out;
    store_set_listener(st, rule_engine_feed, e);
    /* The times the engine is stepped at: every point, and every expectation. */
    times = iocd_malloc((steps + tc->n_expect + 1) * sizeof(*times));
    if (times == NULL) {
        err = IOCD_ENOMEM;
        goto out;
    }
    for (i = 0; i < steps; i++)
        times[n_times++] = (int64_t)i * tc->interval_ms;
    for (i = 0; i < tc->n_expect; i++)
        times[n_times++] = tc->expect[i].at_ms;
    iocd_qsort(times, n_times, sizeof(*times), cmp_i64);
    rule_engine_step(e, tc->start_ms);
    for (i = 0; i < n_times && err == IOCD_OK; i++) {
        int64_t t = times[i];
        if (i > 0 && t == last)
            continue;
        last = t;
        if (t % tc->interval_ms == 0 && (size_t)(t / tc->interval_ms) < steps) {
            size_t step = (size_t)(t / tc->interval_ms);
            store_batch *b = NULL;
            err = store_batch_new(st, &b);
            for (j = 0; err == IOCD_OK && j < tc->n_series; j++) {
                tseries *ts = &tc->series[j];
                store_reject why;
                double v;
                if (step >= ts->n || ts->kind[step] == 0)
                    continue;
                v = ts->v[step];
                if (ts->kind[step] == 2) {
                    uint64_t bits = 0x7ff0000000000002ULL;
                    memcpy(&v, &bits, sizeof(v));
                }
                if (store_batch_add(b, ts->labels, ts->n_labels, tc->start_ms + t, v, &why) !=
                    IOCD_OK) {
                    iocd_buf_printf(report, "FAIL %s: series %zu refused: %s\n", tc->name, j + 1,
                                    store_reject_name(why));
                    failures++;
                }
            }
            if (err == IOCD_OK)
                err = store_batch_commit(b, NULL);
            else
                store_batch_free(b);
        }
        rule_engine_step(e, tc->start_ms + t);
        for (k = 0; k < tc->n_expect; k++)
            if (tc->expect[k].at_ms == t)
                failures += check_expect(tc, &tc->expect[k], &r, report);
    }
out:
    if (failures > 0 || err != IOCD_OK) {
        char head[600];
        snprintf(head, sizeof(head), "FAIL %s (%s:%d)%s%s\n", tc->name, test_path, tc->line,
                 err != IOCD_OK ? ": " : "", err != IOCD_OK ? iocd_strerror(err) : "");
        fputs(head, stdout); /* then the details gathered meanwhile */
    } else {
        printf("ok   %s\n", tc->name);
        *ok_out = true;
    }
    fputs(report->data != NULL ? report->data : "", stdout);
    iocd_buf_reset(report);
    if (st != NULL)
        store_set_listener(st, NULL, NULL);
    rule_engine_free(e);
    store_close(st);
    nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
    for (i = 0; i < r.n; i++)
        iocd_free(r.a[i].key);
    iocd_free(r.a);
    iocd_free(times);
    return err;
}

iocd_err rule_tests_run(const char *path, const rule_engine_config *base, size_t *passed,
                        size_t *failed)
{
    rule_sandbox *sb = NULL;
    tfile tf;
    char *src = NULL, chunk[4200], errbuf[1024];
    size_t len = 0, i;
    iocd_buf report;
    iocd_err err;
    lua_State *L;

    memset(&tf, 0, sizeof(tf));
    tf.path = path;
    err = iocd_file_read(path, 1u << 20, &src, &len);
    if (err != IOCD_OK) {
        printf("FAIL %s: %s\n", path, iocd_strerror(err));
        (*failed)++;
        return IOCD_OK;
    }
    err = rule_sandbox_new(&base->lim, &sb);
    if (err == IOCD_OK) {
        snprintf(chunk, sizeof(chunk), "@%s", path);
        err = rule_sandbox_load(sb, src, len, chunk, errbuf, sizeof(errbuf));
    }
    iocd_free(src);
    if (err == IOCD_OK) {
        L = rule_sandbox_state(sb);
        lua_getupvalue(L, -1, 1);
        lua_pushlightuserdata(L, &tf);
        lua_pushcclosure(L, l_test, 1);
        lua_setfield(L, -2, "test");
        lua_pop(L, 1);
        err = rule_sandbox_call(sb, 0, 0, errbuf, sizeof(errbuf));
    }
    if (err == IOCD_OK && tf.n == 0) {
        snprintf(errbuf, sizeof(errbuf), "%s: no test \"name\" { ... } in this file", path);
        err = IOCD_EPARSE;
    }
    if (err != IOCD_OK) {
        printf("FAIL %s\n", err == IOCD_ENOMEM ? iocd_strerror(err) : errbuf);
        (*failed)++;
    }
    iocd_buf_init(&report, 0);
    for (i = 0; err == IOCD_OK && i < tf.n; i++) {
        bool ok = false;
        iocd_err rc = run_case(path, &tf.cases[i], base, &report, &ok);
        if (rc != IOCD_OK)
            printf("     (%s)\n", iocd_strerror(rc));
        if (ok)
            (*passed)++;
        else
            (*failed)++;
    }
    iocd_buf_fini(&report);
    for (i = 0; i < tf.n; i++)
        tcase_fini(&tf.cases[i]);
    iocd_free(tf.cases);
    rule_sandbox_free(sb);
    return IOCD_OK;
}
