/* collector/parse_int.h - the ingest parsers (line protocol, Prometheus remote write, JSON
 * lines) and the sink they all feed. Internal to collector/ (api/ reaches them through
 * collector.h wrappers). Parsers never allocate per sample: labels handed to the sink point
 * into the input or into a per-call scratch area and live only for that sink call.
 * Threads: reentrant; a parse call uses only its arguments. */
#ifndef IOCD_COLLECTOR_PARSE_INT_H
#define IOCD_COLLECTOR_PARSE_INT_H

#include "common/common.h"

/* Where parsed samples and per-line errors go. */
typedef struct col_sink {
    /* One sample of one series. labels[0] is __name__ (the metric name); the rest are in
     * input order, not sorted, possibly with duplicate names (the store canonicalises and
     * rejects duplicates). Returning non-OK stops the parse with that error (e.g. a full
     * batch is IOCD_ETOOBIG, handled by the caller). tagset != 0 promises that labels[1..]
     * are the same as in the previous call with that tagset (the fields of one line, the
     * samples of one remote-write series): see store_batch_add_tagged. */
    iocd_err (*sample)(void *ud, const iocd_label *labels, size_t n_labels, uint64_t tagset,
                       int64_t t_ms, double v);
    /* A rejected line (1-based line_no within this call's input plus first_line - 1) with a
     * short human reason ("invalid field value: expected number, got 'abc'"). */
    void (*reject)(void *ud, uint64_t line_no, const char *reason);
    void *ud;
} col_sink;

/* A fresh range of 2^32 tagsets (base + 1 .. base + 2^32 - 1), unique in the process; each
 * parse call takes one. */
uint64_t col_tagset_base(void);

typedef struct col_parse_stats {
    uint64_t lines;           /* non-blank, non-comment lines (or records) seen */
    uint64_t rejected;        /* lines/records rejected */
    uint64_t samples;         /* samples handed to the sink */
    uint64_t skipped_strings; /* string fields skipped (line protocol) */
} col_parse_stats;

typedef struct col_parse_limits {
    size_t line_max;        /* longest line/record in bytes */
    size_t labels_max;      /* labels per series, __name__ included */
    size_t label_name_max;  /* bytes */
    size_t label_value_max; /* bytes */
} col_parse_limits;

/* ---- InfluxDB line protocol ------------------------------------------------------------ */

typedef enum col_precision {
    COL_PREC_NS,
    COL_PREC_US,
    COL_PREC_MS,
    COL_PREC_S,
    COL_PREC_AUTO, /* guess s/ms/us/ns from the timestamp's magnitude (TCP/UDP default) */
} col_precision;

/* Parses "ns", "n", "us", "u", "µs", "ms", "s", "auto" (1.x and 2.x spellings). */
iocd_err col_precision_parse(const char *s, col_precision *out);

typedef struct col_lp_opts {
    col_precision precision;
    int64_t now_ms;      /* timestamp for lines without one */
    uint64_t first_line; /* line number of the first line of buf (for error reports) */
    col_parse_limits lim;
} col_lp_opts;

/* Parses complete lines from buf (the last may lack its newline). Measurement m, field f
 * become metric m_f (just m when f is "value"); tags become labels; integer, unsigned and
 * boolean fields become floats; string fields are skipped and counted. A malformed line is
 * reported to sink->reject and skipped; the others go on. Returns IOCD_OK, or the first
 * non-OK code a sink callback returned. */
iocd_err col_lp_parse(const char *buf, size_t len, const col_lp_opts *opts, const col_sink *sink,
                      col_parse_stats *stats);

/* ---- Prometheus remote write 1.0 ------------------------------------------------------- */

/* Decodes a snappy-compressed (block format) protobuf WriteRequest and feeds every sample.
 * Errors: IOCD_EPARSE with the reason in errbuf ("snappy: corrupt input", "protobuf: ...")
 * when the body cannot be decoded (nothing is fed then: the body is validated whole before
 * any sample reaches the sink), IOCD_ETOOBIG when the decompressed size exceeds max_raw. */
iocd_err col_rw_parse(const char *body, size_t len, size_t max_raw, const col_parse_limits *lim,
                      const col_sink *sink, col_parse_stats *stats, char *errbuf, size_t errlen);

/* ---- VictoriaMetrics JSON lines -------------------------------------------------------- */

/* Parses lines of {"metric":{"__name__":"m","k":"v"},"values":[...],"timestamps":[...]}.
 * values may hold numbers, null (skipped) or the strings "NaN", "Inf", "+Inf", "-Inf";
 * timestamps are integer milliseconds. A malformed line is rejected with its number and
 * reason; the others go on. */
iocd_err col_jsonl_parse(const char *buf, size_t len, uint64_t first_line,
                         const col_parse_limits *lim, const col_sink *sink, col_parse_stats *stats);

#endif
