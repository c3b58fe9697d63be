/* collector/ingest.c - the ingest pipeline: a parser feeds samples into store batches, and
 * the batches are submitted for group commit. One write (an HTTP body, or a chunk of TCP/UDP
 * lines) may span several batches; its done() fires after the last one is durable.
 * Bad input never stops good input: a malformed line or a refused sample is counted per
 * reason, the first few are kept with their line numbers for the reply, and parsing goes on. */
#include "collector/collector_int.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define RW_RAW_MAX_DEFAULT (256u << 20)

struct col_ingest {
    const col_config *cfg;
    store *st;
    col_parse_limits lim;
    pthread_mutex_t mu;
    pthread_cond_t idle;
    size_t in_flight; /* writes whose done() has not run yet */
};

/* One write in progress. Freed when its last batch is done and parsing has finished. */
typedef struct write_op {
    col_ingest *ing;
    const char *proto;
    pthread_mutex_t mu;
    size_t refs; /* outstanding batches, plus one while parsing */
    col_write_result res;
    col_write_done_fn done;
    void *ud;
    store_batch *batch;
    uint64_t cur_line; /* for store refusals: the parser's latest reject or 0 */
} write_op;

/* ---- Metrics --------------------------------------------------------------------------- */

static iocd_metric *samples_metric(const char *proto)
{
    char labels[64];

    snprintf(labels, sizeof(labels), "proto=\"%s\"", proto);
    return iocd_metric_get("iocd_ingest_samples_total", "Samples stored, by protocol.",
                           IOCD_METRIC_COUNTER, labels, NULL, 0);
}

/* A bounded label for a free-text reason: its words up to the first ':' or quote. */
static void reason_key(const char *reason, char *out, size_t cap)
{
    size_t o = 0;

    /* "col 17: expected ':'" (JSON lines): the column is not part of the reason. */
    if (strncmp(reason, "col ", 4) == 0 && strchr(reason, ':') != NULL)
        reason = strchr(reason, ':') + 1;
    while (*reason == ' ')
        reason++;

    for (; *reason != '\0' && *reason != ':' && *reason != '\'' && *reason != '"' &&
           *reason != '(' && o + 1 < cap && o < 40;
         reason++) {
        char c = *reason;
        if (isalnum((unsigned char)c))
            out[o++] = (char)tolower((unsigned char)c);
        else if (o > 0 && out[o - 1] != '_')
            out[o++] = '_';
    }
    while (o > 0 && out[o - 1] == '_')
        o--;
    if (o == 0)
        o = (size_t)snprintf(out, cap, "other");
    out[o] = '\0';
}

static void count_reject(const char *proto, const char *reason)
{
    char key[48], labels[128];

    reason_key(reason, key, sizeof(key));
    snprintf(labels, sizeof(labels), "proto=\"%s\",reason=\"%s\"", proto, key);
    iocd_metric_add(iocd_metric_get("iocd_ingest_rejected_total",
                                    "Lines or samples rejected, by protocol and reason.",
                                    IOCD_METRIC_COUNTER, labels, NULL, 0),
                    1);
}

/* ---- Write operations ------------------------------------------------------------------ */

static void op_error(write_op *op, uint64_t line, const char *reason)
{
    col_write_error *e;

    pthread_mutex_lock(&op->mu);
    op->res.rejected++;
    if (op->res.n_errors < COL_WRITE_ERRORS_MAX) {
        e = &op->res.errors[op->res.n_errors++];
        e->line = line;
        snprintf(e->reason, sizeof(e->reason), "%s", reason);
    }
    pthread_mutex_unlock(&op->mu);
    count_reject(op->proto, reason);
}

static void op_unref(write_op *op)
{
    col_ingest *ing = op->ing;
    bool last;

    pthread_mutex_lock(&op->mu);
    last = --op->refs == 0;
    pthread_mutex_unlock(&op->mu);
    if (!last)
        return;
    iocd_metric_add(samples_metric(op->proto), (double)op->res.written);
    op->done(op->ud, &op->res);
    pthread_mutex_destroy(&op->mu);
    iocd_free(op);
    pthread_mutex_lock(&ing->mu);
    if (--ing->in_flight == 0)
        pthread_cond_broadcast(&ing->idle);
    pthread_mutex_unlock(&ing->mu);
}

static void on_batch_done(void *ud, const store_result *r)
{
    write_op *op = ud;
    int why;

    for (why = 1; why < STORE_REJECT_COUNT_; why++) {
        size_t n = r->rejected[why];
        char reason[128];
        if (n == 0)
            continue;
        snprintf(reason, sizeof(reason), "%s: %zu sample%s refused",
                 store_reject_name((store_reject)why), n, n == 1 ? "" : "s");
        op_error(op, 0, reason);
        pthread_mutex_lock(&op->mu);
        op->res.rejected += n - 1; /* op_error counted one */
        pthread_mutex_unlock(&op->mu);
    }
    pthread_mutex_lock(&op->mu);
    if (r->err != IOCD_OK && op->res.err == IOCD_OK) {
        op->res.err = r->err;
        snprintf(op->res.reason, sizeof(op->res.reason), "storing failed: %s",
                 iocd_strerror(r->err));
    }
    op->res.written += r->accepted;
    pthread_mutex_unlock(&op->mu);
    op_unref(op);
}

static iocd_err op_flush(write_op *op)
{
    store_batch *b = op->batch;
    iocd_err err;

    if (b == NULL || store_batch_len(b) == 0)
        return IOCD_OK;
    op->batch = NULL;
    pthread_mutex_lock(&op->mu);
    op->refs++;
    pthread_mutex_unlock(&op->mu);
    err = store_batch_submit(b, on_batch_done, op);
    if (err != IOCD_OK) {
        pthread_mutex_lock(&op->mu);
        op->refs--;
        pthread_mutex_unlock(&op->mu);
    }
    return err;
}

static iocd_err sink_sample(void *ud, const iocd_label *labels, size_t n_labels, uint64_t tagset,
                            int64_t t_ms, double v)
{
    write_op *op = ud;
    store_reject why = STORE_REJECT_NONE;
    iocd_err err;

    if (op->batch == NULL) {
        err = store_batch_new(op->ing->st, &op->batch);
        if (err != IOCD_OK)
            return err;
    }
    err = store_batch_add_tagged(op->batch, labels, n_labels, tagset, t_ms, v, &why);
    if (err == IOCD_ETOOBIG) {
        err = op_flush(op);
        if (err == IOCD_OK)
            err = store_batch_new(op->ing->st, &op->batch);
        if (err == IOCD_OK)
            err = store_batch_add_tagged(op->batch, labels, n_labels, tagset, t_ms, v, &why);
    }
    if (err == IOCD_EINVAL) {
        char reason[160];
        snprintf(reason, sizeof(reason), "%s: sample of %.*s refused", store_reject_name(why),
                 (int)(labels[0].value_len < 64 ? labels[0].value_len : 64), labels[0].value);
        op_error(op, 0, reason);
        return IOCD_OK;
    }
    return err;
}

static void sink_reject(void *ud, uint64_t line_no, const char *reason)
{
    op_error(ud, line_no, reason);
}

static write_op *op_new(col_ingest *ing, const char *proto, col_write_done_fn done, void *ud)
{
    write_op *op = iocd_calloc(1, sizeof(*op));

    if (op == NULL)
        return NULL;
    op->ing = ing;
    op->proto = proto;
    op->done = done;
    op->ud = ud;
    op->refs = 1;
    pthread_mutex_init(&op->mu, NULL);
    pthread_mutex_lock(&ing->mu);
    ing->in_flight++;
    pthread_mutex_unlock(&ing->mu);
    return op;
}

static void fail_now(col_write_done_fn done, void *ud, iocd_err err, const char *reason)
{
    col_write_result res;

    memset(&res, 0, sizeof(res));
    res.err = err;
    snprintf(res.reason, sizeof(res.reason), "%s", reason);
    done(ud, &res);
}

void col_ingest_write(col_ingest *ing, const char *body, size_t len, const col_write_opts *o,
                      col_write_done_fn done, void *ud)
{
    col_sink sink = { sink_sample, sink_reject, NULL };
    col_parse_stats stats;
    col_precision prec = COL_PREC_NS;
    write_op *op;
    char why[256] = "";
    iocd_err err = IOCD_OK;

    if (o->format == COL_FMT_INFLUX && o->precision != NULL && o->precision[0] != '\0' &&
        col_precision_parse(o->precision, &prec) != IOCD_OK) {
        snprintf(why, sizeof(why), "invalid precision \"%.32s\": expected ns, us, ms or s",
                 o->precision);
        fail_now(done, ud, IOCD_EINVAL, why);
        return;
    }
    op = op_new(ing, o->proto, done, ud);
    if (op == NULL) {
        fail_now(done, ud, IOCD_ENOMEM, "out of memory");
        return;
    }
    sink.ud = op;
    memset(&stats, 0, sizeof(stats));
    switch (o->format) {
    case COL_FMT_INFLUX: {
        col_lp_opts lo = { prec, iocd_now_ms(), 1, ing->lim };
        err = col_lp_parse(body, len, &lo, &sink, &stats);
        break;
    }
    case COL_FMT_REMOTE_WRITE:
        err =
            col_rw_parse(body, len, RW_RAW_MAX_DEFAULT, &ing->lim, &sink, &stats, why, sizeof(why));
        break;
    case COL_FMT_JSONL:
        err = col_jsonl_parse(body, len, 1, &ing->lim, &sink, &stats);
        break;
    }
    if (stats.skipped_strings > 0)
        iocd_metric_add(iocd_counter("iocd_ingest_string_fields_skipped_total",
                                     "Line-protocol string fields skipped (iocd stores numbers)."),
                        (double)stats.skipped_strings);
    if (err == IOCD_OK)
        err = op_flush(op);
    store_batch_free(op->batch);
    op->batch = NULL;
    if (err != IOCD_OK) {
        pthread_mutex_lock(&op->mu);
        if (op->res.err == IOCD_OK) {
            op->res.err = err;
            snprintf(op->res.reason, sizeof(op->res.reason), "%s",
                     why[0] != '\0' ? why : iocd_strerror(err));
        }
        pthread_mutex_unlock(&op->mu);
    }
    op_unref(op); /* the parsing reference */
}

/* ---- TCP and UDP ----------------------------------------------------------------------- */

typedef struct lines_ctx {
    const char *proto;
    char peer[64];
} lines_ctx;

static void on_lines_done(void *ud, const col_write_result *res)
{
    lines_ctx *c = ud;
    size_t i;

    for (i = 0; i < res->n_errors; i++)
        log_warn("collector", "rejected line", "proto=%s peer=%s line=%llu reason=%s", c->proto,
                 c->peer, (unsigned long long)res->errors[i].line, res->errors[i].reason);
    if (res->err != IOCD_OK)
        log_error("collector", "lines not stored", "proto=%s peer=%s err=%s", c->proto, c->peer,
                  res->reason);
    iocd_free(c);
}

void col_ingest_lines(void *ud, col_proto proto, const char *buf, size_t len, uint64_t first_line,
                      const char *peer)
{
    col_ingest *ing = ud;
    col_write_opts o = { COL_FMT_INFLUX, "auto",
                         proto == COL_PROTO_TCP ? "influx_tcp" : "influx_udp" };
    lines_ctx *c = iocd_malloc(sizeof(*c));

    (void)first_line; /* line numbers in logs are relative to this chunk */
    if (c == NULL) {
        log_error("collector", "out of memory, lines dropped", "proto=%s", o.proto);
        return;
    }
    c->proto = o.proto;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    if (ing->cfg->influx_precision != NULL && ing->cfg->influx_precision[0] != '\0')
        o.precision = ing->cfg->influx_precision;
    col_ingest_write(ing, buf, len, &o, on_lines_done, c);
}

/* ---- Lifetime -------------------------------------------------------------------------- */

iocd_err col_ingest_new(const col_config *cfg, store *st, col_ingest **out)
{
    col_ingest *ing = iocd_calloc(1, sizeof(*ing));

    if (ing == NULL)
        return IOCD_ENOMEM;
    ing->cfg = cfg;
    ing->st = st;
    ing->lim.line_max = (size_t)cfg->line_max;
    ing->lim.labels_max = (size_t)cfg->labels_max;
    ing->lim.label_name_max = (size_t)cfg->label_len_max;
    ing->lim.label_value_max = (size_t)cfg->label_len_max;
    pthread_mutex_init(&ing->mu, NULL);
    pthread_cond_init(&ing->idle, NULL);
    *out = ing;
    return IOCD_OK;
}

void col_ingest_free(col_ingest *ing)
{
    if (ing == NULL)
        return;
    pthread_mutex_lock(&ing->mu);
    while (ing->in_flight > 0)
        pthread_cond_wait(&ing->idle, &ing->mu);
    pthread_mutex_unlock(&ing->mu);
    pthread_mutex_destroy(&ing->mu);
    pthread_cond_destroy(&ing->idle);
    iocd_free(ing);
}
