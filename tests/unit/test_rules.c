/* tests/unit/test_rules.c - the Lua sandbox and the config-file reader. */
#include "tests/unit/harness.h"

#include <time.h>

#include "rules/rules.h"

static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", test_tmpdir(), name);
    f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs(text, f);
    fclose(f);
    return path;
}

typedef struct seen {
    char text[4096];
} seen;

static iocd_err record(void *ud, const char *const *path, size_t depth, const rule_cfg_value *v,
                       char *errbuf, size_t errlen)
{
    seen *s = ud;
    size_t i, len = strlen(s->text);

    for (i = 0; i < depth; i++)
        len +=
            (size_t)snprintf(s->text + len, sizeof(s->text) - len, "%s%s", i ? "." : "", path[i]);
    if (v == NULL)
        len += (size_t)snprintf(s->text + len, sizeof(s->text) - len, "={}");
    else if (v->kind == RULE_CFG_STRING)
        len += (size_t)snprintf(s->text + len, sizeof(s->text) - len, "=\"%s\"", v->str);
    else if (v->kind == RULE_CFG_BOOL)
        len +=
            (size_t)snprintf(s->text + len, sizeof(s->text) - len, "=%s", v->b ? "true" : "false");
    else
        len += (size_t)snprintf(s->text + len, sizeof(s->text) - len, "=%g%s", v->num,
                                v->is_int ? "i" : "");
    snprintf(s->text + len, sizeof(s->text) - len, ";");
    if (depth == 1 && strcmp(path[0], "colour") == 0) {
        snprintf(errbuf, errlen, "unknown key 'colour'");
        return IOCD_EINVAL;
    }
    return IOCD_OK;
}

static iocd_err load(const char *text, seen *s, char *errbuf, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    return rule_config_load(write_file("c.lua", text), NULL, record, s, errbuf, errlen);
}

TEST(config_walk_is_deterministic_and_typed)
{
    seen s;
    char err[512] = "";

    ASSERT_OK(load("local w = 'Phan \xC4\x90\xC3\xACnh Ph\xC3\xB9ng'\n"
                   "return { zeta = 1.5, alpha = 2, on = true, ward = w,\n"
                   "  list = { { a = 'x' }, { a = 'y' } }, empty = {}, kafka = { ['a.b'] = 3 } }\n",
                   &s, err, sizeof(err)));
    ASSERT_STR_EQ(s.text, "alpha=2i;empty={};kafka.a.b=3i;list.1.a=\"x\";list.2.a=\"y\";on=true;"
                          "ward=\"Phan \xC4\x90\xC3\xACnh Ph\xC3\xB9ng\";zeta=1.5;");
}

TEST(config_errors_name_file_and_line)
{
    seen s;
    char err[512] = "";

    ASSERT_ERR(load("return {\n  a = 1,\n  colour = 'blue',\n}\n", &s, err, sizeof(err)),
               IOCD_EINVAL);
    ASSERT_STR_CONTAINS(err, "c.lua:3: unknown key 'colour'");
    ASSERT_ERR(load("return {\n  a = 1\n  b\n}\n", &s, err, sizeof(err)), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(err, "c.lua:3:");
    ASSERT_ERR(load("error('boom')\n", &s, err, sizeof(err)), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(err, "c.lua:1: boom");
    ASSERT_ERR(load("return 42\n", &s, err, sizeof(err)), IOCD_EPARSE);
    ASSERT_STR_CONTAINS(err, "must return a table, got number");
    ASSERT_ERR(load("return { f = function() end }\n", &s, err, sizeof(err)), IOCD_EINVAL);
    ASSERT_STR_CONTAINS(err, "unsupported value type function");
    ASSERT_ERR(rule_config_load("/nonexistent/x.lua", NULL, record, &s, err, sizeof(err)),
               IOCD_ENOTFOUND);
}

TEST(config_file_size_cap)
{
    static char big[(1 << 20) + 100];
    seen s;
    char err[256];

    memset(big, ' ', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ASSERT_ERR(load(big, &s, err, sizeof(err)), IOCD_ETOOBIG);
}

static void expect_refused(const char *src, const char *want)
{
    seen s;
    char err[512] = "";
    struct timespec t0, t1;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    ASSERT_NE(load(src, &s, err, sizeof(err)), IOCD_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ASSERT_STR_CONTAINS(err, want);
    ASSERT_LT(t1.tv_sec - t0.tv_sec, 5);
}

TEST(sandbox_stops_runaways)
{
    expect_refused("while true do end", "instruction budget exceeded");
    expect_refused("local t = {} for i = 1, 1e9 do t[i] = i end", "memory limit");
    expect_refused("local s = string.rep('x', 1e9) return {}", "memory");
    expect_refused("local function f(n) return f(n + 1) + 1 end f(1)", "exceeded");
    expect_refused("return { x = string.find(string.rep('a', 100000), '.-.-.-b') }",
                   "subjects up to");
}

TEST(sandbox_has_no_escape_hatches)
{
    expect_refused("os.execute('true')", "attempt to index a nil value (global 'os')");
    expect_refused("io.open('/etc/passwd')", "global 'io'");
    expect_refused("require('os')", "global 'require'");
    expect_refused("load('return 1')()", "global 'load'");
    expect_refused("dofile('/etc/passwd')", "global 'dofile'");
    expect_refused("debug.getinfo(1)", "global 'debug'");
    expect_refused("return getmetatable('')", "global 'getmetatable'");
    expect_refused("string.dump(print)", "field 'dump'");
    expect_refused("string.upper = nil", "read-only");
    expect_refused("math.pi = 3", "read-only");
    expect_refused("collectgarbage()", "global 'collectgarbage'");
}

TEST(sandbox_globals_are_private_and_string_methods_work)
{
    seen s;
    char err[256] = "";

    ASSERT_OK(load("x = 5\nlocal n = ('abc'):upper()\nreturn { v = x, n = n, m = math.max(1, 2) }",
                   &s, err, sizeof(err)));
    ASSERT_STR_EQ(s.text, "m=2i;n=\"ABC\";v=5i;");
    /* A global set by one chunk is not visible to the next. */
    ASSERT_OK(load("return { seen = x == nil }", &s, err, sizeof(err)));
    ASSERT_STR_EQ(s.text, "seen=true;");
}
