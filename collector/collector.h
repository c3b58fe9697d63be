/* collector/collector.h - the daemon's configuration (flags and config file) and the ingest
 * event loop (libevent: listeners, signals). This header shows no libevent type.
 * Threads: the config is built on the main thread before any other starts and is read-only
 * afterwards; the loop runs on the thread that calls col_loop_run. */
#ifndef IOCD_COLLECTOR_H
#define IOCD_COLLECTOR_H

#include "common/common.h"
#include "rules/rules.h"
#include "storage/storage.h"

/* ---- Configuration --------------------------------------------------------------------- */

/* Roles of API tokens. Each role grants its own endpoints; admin grants every endpoint. */
typedef enum col_role {
    COL_ROLE_NONE = 0,
    COL_ROLE_READ = 1,
    COL_ROLE_WRITE = 2,
    COL_ROLE_ADMIN = 3,
} col_role;

typedef struct col_token {
    char *name;  /* for logs; never the secret */
    char *token; /* the bearer secret */
    col_role role;
} col_token;

/* A route of the config file's routes list: incidents whose labels (and severity, domain,
 * ward) match `match` send their events to `topic` and take its noise settings. */
typedef struct col_route {
    char *match;            /* a selector without a metric name: {domain="water"} */
    char *topic;            /* NULL: the incident topic */
    char *escalation_topic; /* NULL: --escalation-topic */
    int64_t repeat_interval_ms, escalate_after_ms; /* -1: the global setting; 0: never */
    char *webhook;                                 /* NULL: none */
    int64_t group_wait_ms, flap_window_ms;         /* -1: the global setting; 0: off */
} col_route;

typedef struct col_kv {
    char *key;
    char *value;
} col_kv;

/* Every setting of the daemon. Strings are owned by the config (col_config_fini frees). */
typedef struct col_config {
    char *config_path;             /* --config; NULL when none */
    char *data_dir;                /* --data-dir */
    char *http_addr;               /* --http ADDR:PORT; "" disables */
    char *influx_tcp;              /* --influx-tcp ADDR:PORT; "" disables */
    char *influx_udp;              /* --influx-udp ADDR:PORT; "" disables */
    char *influx_precision;        /* --influx-precision for TCP/UDP: auto, ns, us, ms, s */
    char *rules_path;              /* --rules; "" none */
    char *kafka_brokers;           /* --kafka-brokers: list, "mock" or "" */
    char *incident_topic;          /* --incident-topic */
    char *incident_commands_topic; /* --incident-commands-topic */
    int64_t group_wait_ms, repeat_interval_ms, escalate_after_ms, flap_window_ms; /* noise */
    int64_t group_interval_ms;
    char *escalation_topic;
    int64_t flap_changes;
    iocd_log_level log_level;
    iocd_log_format log_format;
    int64_t http_timeout_ms;       /* idle connection timeout */
    int64_t http_body_max;         /* request body cap, bytes */
    int64_t http_threads;          /* HTTP worker threads */
    int64_t http_conn_max;         /* concurrent HTTP connections */
    int64_t ingest_threads;        /* --ingest-threads: body parsers; 0 = one per CPU */
    int64_t shutdown_timeout_ms;   /* graceful stop budget */
    int64_t sync_window_ms;        /* --sync: 0 = fsync every group commit */
    int64_t retention_ms;          /* --retention */
    int64_t rollup_retention_ms;   /* --rollup-retention */
    int64_t compact_at_stop_max;   /* --compact-at-stop (bytes) */
    int64_t chunk_ms;              /* --chunk: period of a sealed block */
    int64_t block_span_ms;         /* --block-span: compaction span; 0 = never */
    int64_t ooo_window_ms;         /* --ooo-window */
    int64_t labels_max;            /* --max-labels, per series, name included */
    int64_t label_len_max;         /* --max-label-length */
    int64_t series_max;            /* --max-series */
    int64_t new_series_per_min;    /* --max-new-series-per-minute */
    int64_t line_max;              /* longest accepted line-protocol line, bytes */
    int64_t query_timeout_ms;      /* --query-timeout */
    int64_t query_max_series;      /* --query-max-series: per selector */
    int64_t query_max_samples;     /* --query-max-samples: held at once by one query */
    int64_t query_max_points;      /* --query-max-points: steps of a range query */
    int64_t query_max_concurrency; /* --query-max-concurrency: evaluated at once */
    int64_t query_max_queue;       /* --query-max-queue: waiting beyond those, then 503 */
    int64_t query_lookback_ms;     /* --query-lookback-delta */
    int64_t query_rollup_range_ms; /* --query-rollup-range: 0 = never read rollups */
    int64_t query_cache_bytes;     /* --query-cache: 0 = keep no decoded samples */
    double latitude, longitude;    /* --latitude, --longitude: the city, for sun times */
    int64_t tz_offset_s;           /* --timezone, as an offset from UTC */
    col_token *tokens;
    size_t n_tokens;
    col_route *routes; /* the config file's routes, first match wins */
    size_t n_routes;
    col_kv *kafka_props; /* librdkafka properties from the config file's kafka table */
    size_t n_kafka_props;
} col_config;

/* Fills cfg with the built-in defaults. Errors: IOCD_ENOMEM. */
iocd_err col_config_init(col_config *cfg);
void col_config_fini(col_config *cfg);

/* Applies `iocd serve` arguments (argv[0] is the first flag, not the program): first the
 * config file named by --config (if any), then every flag, so flags win. Errors:
 * IOCD_EINVAL / IOCD_EPARSE with a one-line reason in errbuf (flag name, or file:line and
 * key), IOCD_ENOTFOUND (config file missing). Prints nothing. */
iocd_err col_config_parse(col_config *cfg, int argc, char **argv, char *errbuf, size_t errlen);

/* Writes the serve flags' help (name, argument, default, description) to out. */
iocd_err col_config_help(iocd_buf *out);
/* Writes the config file reference (key, type, default, description) as Markdown rows. */
iocd_err col_config_doc(iocd_buf *out);

/* Which listener a chunk of lines came from. */
typedef enum col_proto {
    COL_PROTO_TCP,
    COL_PROTO_UDP,
} col_proto;

/* ---- Ingest pipeline: parse, then store --------------------------------------------------- */

typedef struct col_ingest col_ingest;

/* Errors: IOCD_ENOMEM. st is borrowed and must outlive ing. */
iocd_err col_ingest_new(const col_config *cfg, store *st, col_ingest **out);
/* Waits for writes in flight, then frees. NULL is a no-op. */
void col_ingest_free(col_ingest *ing);

typedef enum col_format {
    COL_FMT_INFLUX,       /* InfluxDB line protocol */
    COL_FMT_REMOTE_WRITE, /* Prometheus remote write 1.0 (snappy + protobuf) */
    COL_FMT_JSONL,        /* VictoriaMetrics JSON lines */
} col_format;

typedef struct col_write_opts {
    col_format format;
    const char *precision; /* line protocol: "ns" (default), "us", "ms", "s", "auto"... */
    const char *proto;     /* metrics label: "influx_http", "remote_write", "import" */
} col_write_opts;

#define COL_WRITE_ERRORS_MAX 8

typedef struct col_write_error {
    uint64_t line; /* 0 when the error is not tied to one line */
    char reason[192];
} col_write_error;

typedef struct col_write_result {
    /* IOCD_OK: every accepted sample is durable. IOCD_EPARSE / IOCD_EINVAL: the body as a whole
     * was refused (undecodable, bad precision): reason says why and nothing was stored.
     * IOCD_ENOSPC / IOCD_EIO: storing failed; nothing is acknowledged. */
    iocd_err err;
    char reason[256];
    uint64_t written;  /* samples stored */
    uint64_t rejected; /* lines (or samples) refused */
    size_t n_errors;   /* the first errors, in input order */
    col_write_error errors[COL_WRITE_ERRORS_MAX];
} col_write_result;

/* Called once, from any thread, when the write is durable or has failed. */
typedef void (*col_write_done_fn)(void *ud, const col_write_result *res);

/* Parses body on the ingest threads and stores its samples; done(ud, res) follows once they
 * are durable, possibly before this returns. body must stay valid and unchanged until done()
 * has run. A large line-protocol body is parsed in pieces on every ingest thread at once;
 * the pieces reach the store in body order (a repeated timestamp keeps the last line's
 * value) and each is committed as soon as it and the pieces before it are parsed. */
void col_ingest_write(col_ingest *ing, const char *body, size_t len, const col_write_opts *o,
                      col_write_done_fn done, void *ud);

/* The event loop's line handler for TCP and UDP (ud is the col_ingest). Errors are counted
 * per reason in /metrics and logged (rate limited); the good lines are stored. */
void col_ingest_lines(void *ud, col_proto proto, const char *buf, size_t len, uint64_t first_line,
                      const char *peer);

/* ---- Event loop ------------------------------------------------------------------------ */

typedef struct col_loop col_loop;

/* Creates the loop with the line-protocol listeners of cfg (TCP and UDP; "" disables each)
 * bound, and SIGTERM/SIGINT/SIGHUP handlers installed. Errors: IOCD_EADDRINUSE,
 * IOCD_EINVAL (bad address), IOCD_EIO; errbuf names the listener and address. */
iocd_err col_loop_new(const col_config *cfg, col_loop **out, char *errbuf, size_t errlen);
/* Bound addresses ("127.0.0.1:8094"), or "" when disabled. Borrowed. */
const char *col_loop_tcp_addr(const col_loop *l);
const char *col_loop_udp_addr(const col_loop *l);

/* Called on the loop thread when SIGHUP arrives. */
typedef void (*col_reload_fn)(void *ud);
void col_loop_on_reload(col_loop *l, col_reload_fn fn, void *ud);

/* Called on the loop thread with complete lines (the last may lack its newline only at the
 * end of a connection or datagram). first_line is the number of buf's first line on that
 * connection (1-based); peer is "addr:port". buf is borrowed for the call. */
typedef void (*col_lines_fn)(void *ud, col_proto proto, const char *buf, size_t len,
                             uint64_t first_line, const char *peer);
void col_loop_on_lines(col_loop *l, col_lines_fn fn, void *ud);

/* Runs until SIGTERM/SIGINT or col_loop_stop; returns the signal number that stopped it (0
 * for col_loop_stop). */
int col_loop_run(col_loop *l);
/* Thread-safe: asks a running loop to return. */
void col_loop_stop(col_loop *l);
/* Stops accepting: closes the listeners and the open TCP connections, delivering what they
 * had received. Call after col_loop_run returns, before the store is closed. */
void col_loop_close_listeners(col_loop *l);
/* Closes listeners and frees. NULL is a no-op. */
void col_loop_free(col_loop *l);

#endif
