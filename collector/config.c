/* collector/config.c - the daemon's settings: built-in defaults, then the Lua config file
 * (read through rules' sandbox), then command-line flags, which win.
 * One table (options[]) describes every setting once: its flag, its config-file key (the
 * flag with '-' turned into '_'), type, default and help, so flags, the file, `--help` and
 * docs/CONFIG.md cannot drift apart. */
#include "collector/collector.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query/query.h"

typedef enum opt_kind {
    OPT_STRING,   /* any text */
    OPT_ADDR,     /* ADDR:PORT or "" (disabled) */
    OPT_DURATION, /* "90s", "1h30m" */
    OPT_SYNC,     /* "always" or a duration */
    OPT_SIZE,     /* bytes: "64MiB", "1048576" */
    OPT_INT,      /* a positive integer */
    OPT_LEVEL,    /* log level */
    OPT_FORMAT,   /* log format */
    OPT_FLOAT,    /* a decimal number (degrees) */
    OPT_TZ,       /* a time zone: Asia/Ho_Chi_Minh, UTC, +07:00 */
    OPT_THREADS,  /* "auto" (stored as 0: one per CPU) or a positive integer */
} opt_kind;

typedef struct opt {
    const char *flag; /* without the leading "--" */
    opt_kind kind;
    size_t off; /* offset of the field in col_config */
    const char *arg;
    const char *def;
    const char *help;
} opt;

#define F(field) offsetof(col_config, field)

static const opt options[] = {
    { "data-dir", OPT_STRING, F(data_dir), "DIR", "./data",
      "Directory holding the data file (iocd.mdb), its lock and write-ahead log." },
    { "http", OPT_ADDR, F(http_addr), "ADDR:PORT", "127.0.0.1:9470",
      "HTTP API, console and /metrics. Port 0 picks a free port; \"\" disables." },
    { "influx-tcp", OPT_ADDR, F(influx_tcp), "ADDR:PORT", "127.0.0.1:8094",
      "InfluxDB line protocol over TCP (newline-delimited). \"\" disables." },
    { "influx-udp", OPT_ADDR, F(influx_udp), "ADDR:PORT", "127.0.0.1:8089",
      "InfluxDB line protocol over UDP (one or more lines per datagram). \"\" disables." },
    { "influx-precision", OPT_STRING, F(influx_precision), "UNIT", "auto",
      "Timestamp unit of TCP/UDP line protocol: ns, us, ms, s, or auto (guessed from each "
      "timestamp's magnitude, since devices often send ms or s)." },
    { "rules", OPT_STRING, F(rules_path), "PATH", "",
      "Alert rule file, or a directory whose *.lua files (not *_test.lua) are loaded." },
    { "kafka-brokers", OPT_STRING, F(kafka_brokers), "LIST", "",
      "Kafka bootstrap servers for incident dispatch; \"mock\" starts an in-process mock "
      "cluster; \"\" disables dispatch." },
    { "incident-topic", OPT_STRING, F(incident_topic), "TOPIC", "iocd.incidents",
      "Kafka topic incident events are produced to (key: the incident's fingerprint)." },
    { "group-wait", OPT_DURATION, F(group_wait_ms), "DURATION", "0s",
      "A new incident's first event waits this long before it is sent, so a blip that clears "
      "within it sends nothing; 0s sends at once." },
    { "group-interval", OPT_DURATION, F(group_interval_ms), "DURATION", "30s",
      "When more series join a firing incident's group, an \"updated\" event saying how many, "
      "at most this often; 0s: never." },
    { "repeat-interval", OPT_DURATION, F(repeat_interval_ms), "DURATION", "1h",
      "While an incident fires unacknowledged, a \"repeated\" event this often; 0s: never." },
    { "escalate-after", OPT_DURATION, F(escalate_after_ms), "DURATION", "15m",
      "Unacknowledged this long: severity up one step (info, warning, critical) and an "
      "\"escalated\" event, again after as long; 0s: never." },
    { "escalation-topic", OPT_STRING, F(escalation_topic), "TOPIC", "",
      "Escalated events also go to this Kafka topic (e.g. a supervisor's); \"\": only the "
      "incident topic." },
    { "flap-window", OPT_DURATION, F(flap_window_ms), "DURATION", "30m",
      "An incident whose state changes --flap-changes times within this window is flapping: "
      "its rule-driven events are held until it keeps one state this long; 0s: no detection." },
    { "flap-changes", OPT_INT, F(flap_changes), "N", "6",
      "State changes (resolved, reopened) within --flap-window that mark flapping." },
    { "incident-commands-topic", OPT_STRING, F(incident_commands_topic), "TOPIC",
      "iocd.incident-commands",
      "Kafka topic of commands from dispatch (ack, assign, comment, resolve an incident by "
      "id), consumed as group \"iocd\"; \"\" disables. Needs --kafka-brokers." },
    { "log-level", OPT_LEVEL, F(log_level), "LEVEL", "info", "debug, info, warn or error." },
    { "log-format", OPT_FORMAT, F(log_format), "FORMAT", "logfmt", "logfmt or json." },
    { "sync", OPT_SYNC, F(sync_window_ms), "always|DURATION", "always",
      "always: fsync at every group commit before acknowledging writes. A duration (e.g. "
      "100ms): fsync at most that long after a commit; a power loss may lose that window." },
    { "retention", OPT_DURATION, F(retention_ms), "DURATION", "90d",
      "How long raw samples are kept." },
    { "rollup-retention", OPT_DURATION, F(rollup_retention_ms), "DURATION", "2y",
      "How long the 5-minute and 1-hour rollups (min, max, sum, count, last) are kept." },
    { "chunk", OPT_DURATION, F(chunk_ms), "DURATION", "15m",
      "Time span of a sealed block. Longer compresses better; shorter keeps less in memory "
      "(samples wait in memory until their span is sealed)." },
    { "block-span", OPT_DURATION, F(block_span_ms), "DURATION", "1h",
      "Once a span of this length (a multiple of --chunk) is over, its sealed blocks are "
      "merged into one block per group of 64 series, with their rollups: fewer, larger blocks "
      "compress better. At a graceful stop the current span is merged too. A data file keeps "
      "the span it was created with. 0s: never merge." },
    { "compact-at-stop", OPT_SIZE, F(compact_at_stop_max), "SIZE", "1GiB",
      "At a graceful stop, rewrite the data file without its free pages (those the write-ahead "
      "log and retention leave) when it is at most this big and a fifth or more is free; 0 "
      "never. Larger stores: iocd backup makes a compacted copy." },
    { "ooo-window", OPT_DURATION, F(ooo_window_ms), "DURATION", "1h",
      "Samples up to this far behind their series' newest sample are accepted and merged; "
      "older ones are refused as out of order." },
    { "max-labels", OPT_INT, F(labels_max), "N", "64",
      "Most labels per series, the metric name included." },
    { "max-label-length", OPT_SIZE, F(label_len_max), "SIZE", "4096",
      "Longest label name or value, in bytes." },
    { "max-series", OPT_INT, F(series_max), "N", "5000000",
      "Most series in the store; new series over it are refused (existing ones keep flowing)." },
    { "max-new-series-per-minute", OPT_INT, F(new_series_per_min), "N", "1000000",
      "Cardinality guard: most new series per minute; more are refused with a clear error." },
    { "http-timeout", OPT_DURATION, F(http_timeout_ms), "DURATION", "60s",
      "Idle HTTP connections are closed after this long." },
    { "http-body-max", OPT_SIZE, F(http_body_max), "SIZE", "64MiB",
      "Largest accepted HTTP request body (after decompression for gzip)." },
    { "http-threads", OPT_INT, F(http_threads), "N", "2", "HTTP worker threads." },
    { "ingest-threads", OPT_THREADS, F(ingest_threads), "N", "auto",
      "Threads that parse HTTP write bodies (a large line-protocol body is parsed in pieces "
      "on all of them at once); auto = one per CPU." },
    { "http-conn-max", OPT_INT, F(http_conn_max), "N", "1024",
      "Most concurrent HTTP connections." },
    { "line-max", OPT_SIZE, F(line_max), "SIZE", "256KiB", "Longest accepted line-protocol line." },
    { "query-timeout", OPT_DURATION, F(query_timeout_ms), "DURATION", "2m",
      "Longest a query may run; a request's timeout= can only shorten it." },
    { "query-max-series", OPT_INT, F(query_max_series), "N", "500000",
      "Most series one selector of a query may select." },
    { "query-max-samples", OPT_INT, F(query_max_samples), "N", "50000000",
      "Most samples one query may load and hold in memory at once." },
    { "query-max-points", OPT_INT, F(query_max_points), "N", "11000",
      "Most steps (points per series) of a range query." },
    { "query-max-concurrency", OPT_INT, F(query_max_concurrency), "N", "4",
      "Queries evaluated at once; more wait in a queue." },
    { "query-max-queue", OPT_INT, F(query_max_queue), "N", "64",
      "Queries that may wait for a turn; beyond that a query is refused with 503." },
    { "query-lookback-delta", OPT_DURATION, F(query_lookback_ms), "DURATION", "5m",
      "How far back an instant selector looks for a sample (Prometheus' lookback delta)." },
    { "query-rollup-range", OPT_DURATION, F(query_rollup_range_ms), "DURATION", "1h",
      "Ranges at least this long let min, max, count, sum and avg _over_time read sealed rollups "
      "where the answer is the raw one; "
      "0s reads raw samples only." },
    { "query-cache", OPT_SIZE, F(query_cache_bytes), "SIZE", "128MiB",
      "Series decoded from sealed blocks are kept in memory up to this size, so queries that "
      "come again (dashboards refreshing) skip decompressing and decoding them; when it is full, "
      "series unused for a minute make room, least recently used first; 0 keeps none." },
    { "latitude", OPT_FLOAT, F(latitude), "DEGREES", "21.59",
      "The city's latitude (north positive), for sunrise and sunset in lighting rules." },
    { "longitude", OPT_FLOAT, F(longitude), "DEGREES", "105.85",
      "The city's longitude (east positive)." },
    { "timezone", OPT_TZ, F(tz_offset_s), "ZONE", "Asia/Ho_Chi_Minh",
      "Local time of rules (ctx:local_time, sunrise): Asia/Ho_Chi_Minh, UTC, or an offset "
      "such as +07:00." },
    { "shutdown-timeout", OPT_DURATION, F(shutdown_timeout_ms), "DURATION", "10s",
      "Budget for a graceful stop (in-flight requests, final commit)." },
};

#undef F

#define CONFIG_ONLY_KEYS "tokens, kafka, routes"

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...) IOCD_PRINTF(3, 4);

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

/* ---- Value parsing --------------------------------------------------------------------- */

static iocd_err parse_size(const char *s, int64_t *out)
{
    static const struct {
        const char *suffix;
        double mult;
    } units[] = {
        { "KiB", 1024.0 },     { "MiB", 1048576.0 }, { "GiB", 1073741824.0 },
        { "KB", 1e3 },         { "MB", 1e6 },        { "GB", 1e9 },
        { "k", 1024.0 },       { "K", 1024.0 },      { "M", 1048576.0 },
        { "G", 1073741824.0 }, { "B", 1.0 },         { "", 1.0 },
    };
    char *end;
    double v;
    size_t i;

    errno = 0;
    v = strtod(s, &end);
    if (end == s || errno != 0 || !(v >= 0))
        return IOCD_EINVAL;
    for (i = 0; i < IOCD_ARRAY_LEN(units); i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            v *= units[i].mult;
            if (v > 9.0e18)
                return IOCD_EINVAL;
            *out = (int64_t)v;
            return IOCD_OK;
        }
    }
    return IOCD_EINVAL;
}

static iocd_err parse_int(const char *s, int64_t *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0 || v <= 0)
        return IOCD_EINVAL;
    *out = v;
    return IOCD_OK;
}

/* Fixed-offset zones: the IOC cities' zone has had no daylight saving since 1975. */
static iocd_err parse_tz(const char *s, int64_t *out)
{
    static const struct {
        const char *name;
        int offset_s;
    } zones[] = { { "Asia/Ho_Chi_Minh", 7 * 3600 },
                  { "Asia/Saigon", 7 * 3600 },
                  { "Asia/Bangkok", 7 * 3600 },
                  { "Asia/Jakarta", 7 * 3600 },
                  { "UTC", 0 },
                  { "Etc/UTC", 0 } };
    size_t i;
    int h = 0, m = 0;
    char sign = 0, extra;

    for (i = 0; i < IOCD_ARRAY_LEN(zones); i++)
        if (strcmp(s, zones[i].name) == 0) {
            *out = zones[i].offset_s;
            return IOCD_OK;
        }
    if (strncmp(s, "UTC", 3) == 0)
        s += 3;
    if (sscanf(s, "%c%d:%d%c", &sign, &h, &m, &extra) != 3 &&
        sscanf(s, "%c%d%c", &sign, &h, &extra) != 2)
        return IOCD_EINVAL;
    if ((sign != '+' && sign != '-') || h < 0 || h > 14 || m < 0 || m > 59)
        return IOCD_EINVAL;
    *out = (sign == '-' ? -1 : 1) * (h * 3600 + m * 60);
    return IOCD_OK;
}

static iocd_err check_addr(const char *s)
{
    char host[256];
    int port;

    if (*s == '\0')
        return IOCD_OK;
    return iocd_addr_split(s, host, sizeof(host), &port);
}

static const char *kind_expect(opt_kind kind)
{
    switch (kind) {
    case OPT_ADDR:
        return "ADDR:PORT (e.g. 127.0.0.1:9470) or \"\" to disable";
    case OPT_DURATION:
        return "a duration such as 90s, 5m, 1h30m or 90d";
    case OPT_SYNC:
        return "\"always\" or a duration such as 100ms";
    case OPT_SIZE:
        return "a size such as 1048576, 256KiB or 64MiB";
    case OPT_INT:
        return "a positive integer";
    case OPT_LEVEL:
        return "debug, info, warn or error";
    case OPT_FORMAT:
        return "logfmt or json";
    case OPT_FLOAT:
        return "a decimal number such as 21.59";
    case OPT_TZ:
        return "Asia/Ho_Chi_Minh, UTC or an offset such as +07:00";
    case OPT_THREADS:
        return "\"auto\" or a positive integer";
    case OPT_STRING:
        break;
    }
    return "text";
}

/* Stores the text value of o into cfg; on failure errbuf says what was expected. */
static iocd_err opt_apply(col_config *cfg, const opt *o, const char *value, char *errbuf,
                          size_t errlen)
{
    char *base = (char *)cfg;
    iocd_err err = IOCD_OK;
    int64_t n = 0;

    switch (o->kind) {
    case OPT_STRING:
    case OPT_ADDR: {
        char **slot = (char **)(void *)(base + o->off);
        char *copy;
        if (o->kind == OPT_ADDR && check_addr(value) != IOCD_OK) {
            err = IOCD_EINVAL;
            break;
        }
        copy = iocd_strdup(value);
        if (copy == NULL)
            return IOCD_ENOMEM;
        iocd_free(*slot);
        *slot = copy;
        break;
    }
    case OPT_DURATION:
        err = query_duration_parse(value, false, &n);
        if (err == IOCD_OK)
            *(int64_t *)(void *)(base + o->off) = n;
        break;
    case OPT_SYNC:
        if (strcmp(value, "always") == 0)
            n = 0;
        else
            err = query_duration_parse(value, false, &n);
        if (err == IOCD_OK)
            *(int64_t *)(void *)(base + o->off) = n;
        break;
    case OPT_SIZE:
        err = parse_size(value, &n);
        if (err == IOCD_OK)
            *(int64_t *)(void *)(base + o->off) = n;
        break;
    case OPT_INT:
        err = parse_int(value, &n);
        if (err == IOCD_OK)
            *(int64_t *)(void *)(base + o->off) = n;
        break;
    case OPT_THREADS:
        err = strcmp(value, "auto") == 0 ? IOCD_OK : parse_int(value, &n);
        if (err == IOCD_OK && n > 256)
            err = IOCD_EINVAL;
        if (err == IOCD_OK)
            *(int64_t *)(void *)(base + o->off) = n;
        break;
    case OPT_LEVEL:
        err = iocd_log_level_parse(value, (iocd_log_level *)(void *)(base + o->off));
        break;
    case OPT_FORMAT:
        err = iocd_log_format_parse(value, (iocd_log_format *)(void *)(base + o->off));
        break;
    case OPT_FLOAT: {
        char *end;
        double d;
        errno = 0;
        d = strtod(value, &end);
        if (end == value || *end != '\0' || errno != 0 || !isfinite(d) || fabs(d) > 180)
            err = IOCD_EINVAL;
        else
            *(double *)(void *)(base + o->off) = d;
        break;
    }
    case OPT_TZ:
        err = parse_tz(value, &n);
        if (err == IOCD_OK)
            *(int64_t *)(void *)(base + o->off) = n;
        break;
    }
    if (err != IOCD_OK) {
        set_err(errbuf, errlen, "invalid value \"%s\": expected %s", value, kind_expect(o->kind));
        return IOCD_EINVAL;
    }
    return IOCD_OK;
}

/* ---- Defaults and lifetime ------------------------------------------------------------- */

iocd_err col_config_init(col_config *cfg)
{
    char errbuf[256];
    size_t i;
    iocd_err err;

    memset(cfg, 0, sizeof(*cfg));
    for (i = 0; i < IOCD_ARRAY_LEN(options); i++) {
        err = opt_apply(cfg, &options[i], options[i].def, errbuf, sizeof(errbuf));
        if (err != IOCD_OK) {
            col_config_fini(cfg);
            return err; /* only ENOMEM: the defaults are valid */
        }
    }
    return IOCD_OK;
}

void col_config_fini(col_config *cfg)
{
    size_t i;

    for (i = 0; i < IOCD_ARRAY_LEN(options); i++)
        if (options[i].kind == OPT_STRING || options[i].kind == OPT_ADDR)
            iocd_free(*(char **)(void *)((char *)cfg + options[i].off));
    for (i = 0; i < cfg->n_tokens; i++) {
        iocd_free(cfg->tokens[i].name);
        iocd_free(cfg->tokens[i].token);
    }
    iocd_free(cfg->tokens);
    for (i = 0; i < cfg->n_routes; i++) {
        iocd_free(cfg->routes[i].match);
        iocd_free(cfg->routes[i].topic);
        iocd_free(cfg->routes[i].escalation_topic);
        iocd_free(cfg->routes[i].webhook);
    }
    iocd_free(cfg->routes);
    for (i = 0; i < cfg->n_kafka_props; i++) {
        iocd_free(cfg->kafka_props[i].key);
        iocd_free(cfg->kafka_props[i].value);
    }
    iocd_free(cfg->kafka_props);
    iocd_free(cfg->config_path);
    memset(cfg, 0, sizeof(*cfg));
}

static const opt *opt_by_flag(const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < IOCD_ARRAY_LEN(options); i++)
        if (strlen(options[i].flag) == len && strncmp(options[i].flag, name, len) == 0)
            return &options[i];
    return NULL;
}

/* Config keys are flags with '_' for '-'. */
static const opt *opt_by_key(const char *key)
{
    char flag[64];
    size_t i, len = strlen(key);

    if (len >= sizeof(flag))
        return NULL;
    for (i = 0; i <= len; i++)
        flag[i] = key[i] == '_' ? '-' : key[i];
    if (strchr(key, '-') != NULL)
        return NULL;
    return opt_by_flag(flag, len);
}

/* ---- The config file ------------------------------------------------------------------- */

static const char *kind_name(const rule_cfg_value *v)
{
    if (v == NULL)
        return "table";
    switch (v->kind) {
    case RULE_CFG_STRING:
        return "string";
    case RULE_CFG_NUMBER:
        return "number";
    case RULE_CFG_BOOL:
        return "boolean";
    }
    return "value";
}

static iocd_err visit_token(col_config *cfg, const char *const *path, size_t depth,
                            const rule_cfg_value *v, char *errbuf, size_t errlen)
{
    char *end;
    long idx;
    col_token *t;

    if (depth == 1) {
        if (v == NULL)
            return IOCD_OK; /* tokens = {} */
        set_err(errbuf, errlen, "key 'tokens': expected a list of { token = ..., role = ... }");
        return IOCD_EINVAL;
    }
    idx = strtol(path[1], &end, 10);
    if (*end != '\0' || idx < 1 || idx > 1000) {
        set_err(errbuf, errlen, "key 'tokens.%s': expected a list of tables", path[1]);
        return IOCD_EINVAL;
    }
    if ((size_t)idx > cfg->n_tokens) {
        col_token *grown = iocd_realloc(cfg->tokens, (size_t)idx * sizeof(*grown));
        if (grown == NULL)
            return IOCD_ENOMEM;
        memset(grown + cfg->n_tokens, 0, ((size_t)idx - cfg->n_tokens) * sizeof(*grown));
        cfg->tokens = grown;
        cfg->n_tokens = (size_t)idx;
    }
    t = &cfg->tokens[idx - 1];
    if (depth != 3 || v == NULL || v->kind != RULE_CFG_STRING) {
        set_err(errbuf, errlen, "key 'tokens.%s%s%s': expected string fields token, role, name",
                path[1], depth > 2 ? "." : "", depth > 2 ? path[2] : "");
        return IOCD_EINVAL;
    }
    if (strcmp(path[2], "token") == 0 || strcmp(path[2], "name") == 0) {
        char **slot = path[2][0] == 't' ? &t->token : &t->name;
        char *copy = iocd_strndup(v->str, v->len);
        if (copy == NULL)
            return IOCD_ENOMEM;
        iocd_free(*slot);
        *slot = copy;
    } else if (strcmp(path[2], "role") == 0) {
        if (strcmp(v->str, "read") == 0)
            t->role = COL_ROLE_READ;
        else if (strcmp(v->str, "write") == 0)
            t->role = COL_ROLE_WRITE;
        else if (strcmp(v->str, "admin") == 0)
            t->role = COL_ROLE_ADMIN;
        else {
            set_err(errbuf, errlen,
                    "key 'tokens.%s.role': expected read, write or admin, got \"%s\"", path[1],
                    v->str);
            return IOCD_EINVAL;
        }
    } else {
        set_err(errbuf, errlen, "unknown key 'tokens.%s.%s' (expected token, role, name)", path[1],
                path[2]);
        return IOCD_EINVAL;
    }
    return IOCD_OK;
}

static iocd_err visit_route(col_config *cfg, const char *const *path, size_t depth,
                            const rule_cfg_value *v, char *errbuf, size_t errlen)
{
    col_route *r;
    char *end;
    long idx;

    if (depth == 1 && v == NULL)
        return IOCD_OK;
    idx = depth >= 2 ? strtol(path[1], &end, 10) : 0;
    if (depth < 2 || *end != '\0' || idx < 1 || idx > 1000) {
        set_err(errbuf, errlen, "key 'routes': expected a list of tables");
        return IOCD_EINVAL;
    }
    if ((size_t)idx > cfg->n_routes) {
        col_route *grown = iocd_realloc(cfg->routes, (size_t)idx * sizeof(*grown));
        size_t i;
        if (grown == NULL)
            return IOCD_ENOMEM;
        for (i = cfg->n_routes; i < (size_t)idx; i++) {
            memset(&grown[i], 0, sizeof(grown[i]));
            grown[i].repeat_interval_ms = grown[i].escalate_after_ms = -1;
            grown[i].group_wait_ms = grown[i].flap_window_ms = -1;
        }
        cfg->routes = grown;
        cfg->n_routes = (size_t)idx;
    }
    r = &cfg->routes[idx - 1];
    if (depth == 2 && v == NULL)
        return IOCD_OK;
    if (depth != 3 || v == NULL || v->kind != RULE_CFG_STRING) {
        set_err(
            errbuf, errlen,
            "key 'routes.%s%s%s': expected string fields match, topic, webhook, escalation_topic, "
            "repeat_interval, escalate_after, group_wait, flap_window",
            path[1], depth > 2 ? "." : "", depth > 2 ? path[2] : "");
        return IOCD_EINVAL;
    }
    if (strcmp(path[2], "match") == 0 || strcmp(path[2], "topic") == 0 ||
        strcmp(path[2], "escalation_topic") == 0 || strcmp(path[2], "webhook") == 0) {
        char **slot = path[2][0] == 'm'   ? &r->match
                      : path[2][0] == 't' ? &r->topic
                      : path[2][0] == 'w' ? &r->webhook
                                          : &r->escalation_topic;
        char *copy = iocd_strndup(v->str, v->len);
        if (copy == NULL)
            return IOCD_ENOMEM;
        iocd_free(*slot);
        *slot = copy;
    } else if (strcmp(path[2], "repeat_interval") == 0 || strcmp(path[2], "escalate_after") == 0 ||
               strcmp(path[2], "group_wait") == 0 || strcmp(path[2], "flap_window") == 0) {
        int64_t ms;
        if (query_duration_parse(v->str, false, &ms) != IOCD_OK) {
            set_err(errbuf, errlen,
                    "key 'routes.%s.%s': expected a duration such as 30m, got "
                    "\"%s\"",
                    path[1], path[2], v->str);
            return IOCD_EINVAL;
        }
        if (path[2][0] == 'r')
            r->repeat_interval_ms = ms;
        else if (path[2][0] == 'e')
            r->escalate_after_ms = ms;
        else if (path[2][0] == 'g')
            r->group_wait_ms = ms;
        else
            r->flap_window_ms = ms;
    } else {
        set_err(errbuf, errlen,
                "unknown key 'routes.%s.%s' (expected match, topic, webhook, escalation_topic, "
                "repeat_interval, escalate_after, group_wait, flap_window)",
                path[1], path[2]);
        return IOCD_EINVAL;
    }
    return IOCD_OK;
}

static iocd_err visit_kafka(col_config *cfg, const char *const *path, size_t depth,
                            const rule_cfg_value *v, char *errbuf, size_t errlen)
{
    char text[64];
    const char *value;
    col_kv *grown;

    if (depth == 1 && v == NULL)
        return IOCD_OK;
    if (depth != 2 || v == NULL) {
        set_err(errbuf, errlen,
                "key 'kafka': expected a table of librdkafka properties, e.g. "
                "[\"security.protocol\"] = \"SASL_SSL\"");
        return IOCD_EINVAL;
    }
    if (v->kind == RULE_CFG_STRING)
        value = v->str;
    else if (v->kind == RULE_CFG_BOOL)
        value = v->b ? "true" : "false";
    else {
        snprintf(text, sizeof(text), v->is_int ? "%.0f" : "%.17g", v->num);
        value = text;
    }
    grown = iocd_realloc(cfg->kafka_props, (cfg->n_kafka_props + 1) * sizeof(*grown));
    if (grown == NULL)
        return IOCD_ENOMEM;
    cfg->kafka_props = grown;
    grown[cfg->n_kafka_props].key = iocd_strdup(path[1]);
    grown[cfg->n_kafka_props].value = iocd_strdup(value);
    cfg->n_kafka_props++;
    if (grown[cfg->n_kafka_props - 1].key == NULL || grown[cfg->n_kafka_props - 1].value == NULL)
        return IOCD_ENOMEM;
    return IOCD_OK;
}

static iocd_err visit(void *ud, const char *const *path, size_t depth, const rule_cfg_value *v,
                      char *errbuf, size_t errlen)
{
    col_config *cfg = ud;
    const opt *o;
    char text[64];

    if (strcmp(path[0], "tokens") == 0)
        return visit_token(cfg, path, depth, v, errbuf, errlen);
    if (strcmp(path[0], "kafka") == 0)
        return visit_kafka(cfg, path, depth, v, errbuf, errlen);
    if (strcmp(path[0], "routes") == 0)
        return visit_route(cfg, path, depth, v, errbuf, errlen);
    o = opt_by_key(path[0]);
    if (o == NULL) {
        set_err(errbuf, errlen, "unknown key '%s' (see docs/CONFIG.md)", path[0]);
        return IOCD_EINVAL;
    }
    if (depth != 1 || v == NULL) {
        set_err(errbuf, errlen, "key '%s': expected %s, got a table", path[0],
                o->kind == OPT_STRING ? "a string" : kind_expect(o->kind));
        return IOCD_EINVAL;
    }
    if (v->kind == RULE_CFG_STRING) {
        iocd_err err = opt_apply(cfg, o, v->str, text, sizeof(text));
        if (err != IOCD_OK)
            set_err(errbuf, errlen, "key '%s': %s", path[0], text);
        return err;
    }
    if (v->kind == RULE_CFG_NUMBER && o->kind == OPT_FLOAT) {
        snprintf(text, sizeof(text), "%.17g", v->num);
        if (opt_apply(cfg, o, text, text, sizeof(text)) == IOCD_OK)
            return IOCD_OK;
        set_err(errbuf, errlen, "key '%s': expected %s", path[0], kind_expect(o->kind));
        return IOCD_EINVAL;
    }
    if (v->kind == RULE_CFG_NUMBER &&
        (o->kind == OPT_INT || o->kind == OPT_SIZE || o->kind == OPT_THREADS) && v->is_int) {
        snprintf(text, sizeof(text), "%.0f", v->num);
        if (opt_apply(cfg, o, text, text, sizeof(text)) == IOCD_OK)
            return IOCD_OK;
        set_err(errbuf, errlen, "key '%s': expected %s, got %s", path[0], kind_expect(o->kind),
                text);
        return IOCD_EINVAL;
    }
    set_err(errbuf, errlen, "key '%s': expected %s, got %s", path[0],
            o->kind == OPT_STRING ? "a string" : kind_expect(o->kind), kind_name(v));
    return IOCD_EINVAL;
}

static iocd_err check_routes(const col_config *cfg, char *errbuf, size_t errlen)
{
    size_t i;

    for (i = 0; i < cfg->n_routes; i++) {
        query_selector sel;
        char why[200];
        if (cfg->routes[i].match == NULL) {
            set_err(errbuf, errlen, "%s: routes[%zu] needs match (e.g. '{domain=\"water\"}')",
                    cfg->config_path, i + 1);
            return IOCD_EINVAL;
        }
        if (query_selector_parse(cfg->routes[i].match, &sel, why, sizeof(why)) != IOCD_OK) {
            set_err(errbuf, errlen, "%s: routes[%zu].match: %s", cfg->config_path, i + 1, why);
            return IOCD_EINVAL;
        }
        query_selector_fini(&sel);
        if (cfg->routes[i].webhook != NULL && strncmp(cfg->routes[i].webhook, "http://", 7) != 0 &&
            strncmp(cfg->routes[i].webhook, "https://", 8) != 0) {
            set_err(errbuf, errlen, "%s: routes[%zu].webhook: expected an http:// or https:// URL",
                    cfg->config_path, i + 1);
            return IOCD_EINVAL;
        }
    }
    return IOCD_OK;
}

static iocd_err check_tokens(const col_config *cfg, char *errbuf, size_t errlen)
{
    size_t i, j;

    for (i = 0; i < cfg->n_tokens; i++) {
        const col_token *t = &cfg->tokens[i];
        if (t->token == NULL || t->token[0] == '\0' || t->role == COL_ROLE_NONE) {
            set_err(errbuf, errlen, "%s: tokens[%zu] needs both token and role", cfg->config_path,
                    i + 1);
            return IOCD_EINVAL;
        }
        for (j = 0; j < i; j++) {
            if (strcmp(cfg->tokens[j].token, t->token) == 0) {
                set_err(errbuf, errlen, "%s: tokens[%zu] repeats the secret of tokens[%zu]",
                        cfg->config_path, i + 1, j + 1);
                return IOCD_EINVAL;
            }
        }
    }
    return IOCD_OK;
}

/* ---- Flags ----------------------------------------------------------------------------- */

/* Splits argv[*i] into flag name and value ("--x=v" or "--x v"); advances *i past both. */
static iocd_err next_flag(int argc, char **argv, int *i, const opt **o_out, const char **val_out,
                          bool *is_config, char *errbuf, size_t errlen)
{
    const char *arg = argv[*i], *name, *eq;
    size_t len;
    const opt *o = NULL;

    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
        set_err(errbuf, errlen, "unexpected argument \"%s\" (flags start with --)", arg);
        return IOCD_EINVAL;
    }
    name = arg + 2;
    eq = strchr(name, '=');
    len = eq != NULL ? (size_t)(eq - name) : strlen(name);
    *is_config = len == 6 && strncmp(name, "config", 6) == 0;
    if (!*is_config) {
        o = opt_by_flag(name, len);
        if (o == NULL) {
            set_err(errbuf, errlen, "unknown flag --%.*s (see iocd serve --help)", (int)len, name);
            return IOCD_EINVAL;
        }
    }
    if (eq != NULL) {
        *val_out = eq + 1;
    } else if (*i + 1 < argc) {
        *val_out = argv[++*i];
    } else {
        set_err(errbuf, errlen, "flag --%.*s needs a value", (int)len, name);
        return IOCD_EINVAL;
    }
    ++*i;
    *o_out = o;
    return IOCD_OK;
}

iocd_err col_config_parse(col_config *cfg, int argc, char **argv, char *errbuf, size_t errlen)
{
    const char *val = NULL, *config = NULL;
    const opt *o = NULL;
    bool is_config = false;
    char why[256];
    iocd_err err;
    int i = 0;

    /* Pass 1: find --config and check the syntax of every flag. */
    while (i < argc) {
        err = next_flag(argc, argv, &i, &o, &val, &is_config, errbuf, errlen);
        if (err != IOCD_OK)
            return err;
        if (is_config)
            config = val;
    }
    if (config != NULL && config[0] != '\0') {
        cfg->config_path = iocd_strdup(config);
        if (cfg->config_path == NULL)
            return IOCD_ENOMEM;
        err = rule_config_load(config, NULL, visit, cfg, errbuf, errlen);
        if (err == IOCD_ENOTFOUND)
            set_err(errbuf, errlen, "config file %s: no such file", config);
        if (err != IOCD_OK)
            return err == IOCD_ENOMEM || err == IOCD_ENOTFOUND ? err : IOCD_EPARSE;
        err = check_tokens(cfg, errbuf, errlen);
        if (err == IOCD_OK)
            err = check_routes(cfg, errbuf, errlen);
        if (err != IOCD_OK)
            return err;
    }
    /* Pass 2: flags win over the file. */
    i = 0;
    while (i < argc) {
        err = next_flag(argc, argv, &i, &o, &val, &is_config, errbuf, errlen);
        if (err != IOCD_OK)
            return err;
        if (is_config)
            continue;
        err = opt_apply(cfg, o, val, why, sizeof(why));
        if (err != IOCD_OK) {
            if (err != IOCD_ENOMEM)
                set_err(errbuf, errlen, "flag --%s: %s", o->flag, why);
            return err;
        }
    }
    if (cfg->data_dir[0] == '\0') {
        set_err(errbuf, errlen, "flag --data-dir: must not be empty");
        return IOCD_EINVAL;
    }
    return IOCD_OK;
}

/* ---- Help and docs --------------------------------------------------------------------- */

iocd_err col_config_help(iocd_buf *out)
{
    iocd_err err = IOCD_OK;
    char left[64];
    size_t i;

    err =
        iocd_buf_puts(out, "  --config FILE              Lua config file (a table of the settings "
                           "below, keys with _ for -).\n                             Flags win "
                           "over the file.\n");
    for (i = 0; err == IOCD_OK && i < IOCD_ARRAY_LEN(options); i++) {
        const opt *o = &options[i];
        snprintf(left, sizeof(left), "--%s %s", o->flag, o->arg);
        err = iocd_buf_printf(out, "  %-26s %s\n  %-26s (default: %s)\n", left, o->help, "",
                              o->def[0] != '\0' ? o->def : "\"\"");
    }
    if (err == IOCD_OK)
        err =
            iocd_buf_puts(out, "  Config file only: " CONFIG_ONLY_KEYS " (see docs/CONFIG.md).\n");
    return err;
}

iocd_err col_config_doc(iocd_buf *out)
{
    static const char *const type_names[] = { "string", "address", "duration", "sync",
                                              "size",   "integer", "level",    "format",
                                              "number", "zone",    "threads" };
    iocd_err err = iocd_buf_puts(out, "| key | flag | type | default | meaning |\n"
                                      "|---|---|---|---|---|\n");
    char key[64];
    size_t i, j;

    for (i = 0; err == IOCD_OK && i < IOCD_ARRAY_LEN(options); i++) {
        const opt *o = &options[i];
        for (j = 0; j < sizeof(key) - 1 && o->flag[j] != '\0'; j++)
            key[j] = o->flag[j] == '-' ? '_' : o->flag[j];
        key[j] = '\0';
        err = iocd_buf_printf(out, "| `%s` | `--%s` | %s | `%s` | %s |\n", key, o->flag,
                              type_names[o->kind], o->def[0] != '\0' ? o->def : "\"\"", o->help);
    }
    return err;
}
