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
#include <unistd.h>

#define RW_RAW_MAX_DEFAULT (256u << 20)

/* A large line-protocol body is cut into pieces of about this many bytes, parsed on every
 * ingest thread at once; a batch goes to the store every FLUSH_SAMPLES samples, so the
 * commit of a body's first samples overlaps the parse of its last ones. */
#define PIECE_BYTES   (256u << 10)
#define FLUSH_SAMPLES 16384
#define PIECES_MAX    1024
#define THREADS_MAX   64

typedef struct piece piece;

struct col_ingest {
    const col_config *cfg;
    store *st;
    col_parse_limits lim;
    pthread_mutex_t mu;
    pthread_cond_t idle;
    pthread_cond_t work;
    size_t in_flight;           /* writes whose done() has not run yet */
    piece *queue, **queue_tail; /* pieces waiting for a thread */
    bool stopping;
    pthread_t *threads;
    size_t n_threads;
};

typedef struct write_op write_op;

/* A part of a write's body, parsed by one thread; its batches wait in held until every
 * earlier piece has reached the store. */
struct piece {
    write_op *op;
    size_t idx;
    const char *data;
    size_t len;
    uint64_t line_base; /* line number of its first line, counted when an error needs it */
    store_batch *batch;
    store_batch **held;
    size_t n_held, cap_held;
    bool parsed;
    piece *next; /* in the queue */
};

/* One write in progress. Freed when its last batch is done and every piece is parsed. */
struct write_op {
    col_ingest *ing;
    col_write_opts o;
    col_precision prec;
    int64_t now_ms; /* arrival: the timestamp of lines without one */
    const char *body;
    size_t len;
    pthread_mutex_t mu; /* refs, res */
    size_t refs;        /* outstanding batches, plus one per piece not yet parsed */
    col_write_result res;
    col_write_done_fn done;
    void *ud;
    pthread_mutex_t order_mu; /* next_submit and the pieces' held batches */
    size_t next_submit;       /* the piece whose batches may go to the store */
    size_t n_pieces;
    piece *pieces;
    piece one; /* the single piece of a body that is not cut */
};
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

/* Keeps the errors with the lowest line numbers (pieces finish in any order): the reply
 * lists the first errors of the body, sorted at the end. */
static void op_error(write_op *op, uint64_t line, const char *reason)
{
    col_write_error *e = NULL;
    size_t i;

    pthread_mutex_lock(&op->mu);
    op->res.rejected++;
    if (op->res.n_errors < COL_WRITE_ERRORS_MAX) {
        e = &op->res.errors[op->res.n_errors++];
    } else {
        col_write_error *last = &op->res.errors[0];
        for (i = 1; i < op->res.n_errors; i++)
            if (op->res.errors[i].line > last->line)
                last = &op->res.errors[i];
        if (line < last->line)
            e = last;
    }
    if (e != NULL) {
        e->line = line;
        snprintf(e->reason, sizeof(e->reason), "%s", reason);
    }
    pthread_mutex_unlock(&op->mu);
    count_reject(op->o.proto, reason);
}

static void sort_errors(col_write_result *res)
{
    size_t i, j;

    for (i = 1; i < res->n_errors; i++) { /* insertion sort: stable, at most 8 */
        col_write_error e = res->errors[i];
        for (j = i; j > 0 && res->errors[j - 1].line > e.line; j--)
            res->errors[j] = res->errors[j - 1];
        res->errors[j] = e;
    }
}

static void op_free(write_op *op)
{
    size_t i;

    for (i = 0; i < op->n_pieces; i++) {
        piece *pc = &op->pieces[i];
        size_t k;
        store_batch_free(pc->batch);
        for (k = 0; k < pc->n_held; k++)
            store_batch_free(pc->held[k]);
        iocd_free(pc->held);
    }
    if (op->pieces != &op->one)
        iocd_free(op->pieces);
    pthread_mutex_destroy(&op->mu);
    pthread_mutex_destroy(&op->order_mu);
    iocd_free(op);
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
    iocd_metric_add(samples_metric(op->o.proto), (double)op->res.written);
    sort_errors(&op->res);
    op->done(op->ud, &op->res);
    op_free(op);
    pthread_mutex_lock(&ing->mu);
    if (--ing->in_flight == 0)
        pthread_cond_broadcast(&ing->idle);
    pthread_mutex_unlock(&ing->mu);
}

static void op_fail(write_op *op, iocd_err err, const char *why)
{
    pthread_mutex_lock(&op->mu);
    if (op->res.err == IOCD_OK) {
        op->res.err = err;
        snprintf(op->res.reason, sizeof(op->res.reason), "%s",
                 why != NULL && why[0] != '\0' ? why : iocd_strerror(err));
    }
    pthread_mutex_unlock(&op->mu);
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

/* Hands b to the store (which frees it); its done() drops the reference taken here. */
static void op_submit(write_op *op, store_batch *b)
{
    iocd_err err;

    pthread_mutex_lock(&op->mu);
    op->refs++;
    pthread_mutex_unlock(&op->mu);
    err = store_batch_submit(b, on_batch_done, op);
    if (err != IOCD_OK) {
        pthread_mutex_lock(&op->mu);
        op->refs--;
        pthread_mutex_unlock(&op->mu);
        op_fail(op, err, NULL);
    }
}

/* Sends every batch that may go: those of the piece whose turn it is, and, once it is
 * parsed, the turn passes to the next. Called with order_mu held. */
static void op_advance(write_op *op)
{
    while (op->next_submit < op->n_pieces) {
        piece *pc = &op->pieces[op->next_submit];
        size_t k;
        for (k = 0; k < pc->n_held; k++)
            op_submit(op, pc->held[k]);
        pc->n_held = 0;
        if (!pc->parsed)
            break;
        op->next_submit++;
    }
}

/* Queues the piece's current batch behind its earlier ones and sends what may go. */
static iocd_err piece_flush(piece *pc)
{
    write_op *op = pc->op;
    store_batch *b = pc->batch;
    iocd_err err = IOCD_OK;

    if (b == NULL || store_batch_len(b) == 0)
        return IOCD_OK;
    pthread_mutex_lock(&op->order_mu);
    if (pc->n_held == pc->cap_held) {
        size_t cap = pc->cap_held != 0 ? pc->cap_held * 2 : 8;
        store_batch **grown = iocd_realloc(pc->held, cap * sizeof(*grown));
        if (grown == NULL)
            err = IOCD_ENOMEM;
        else {
            pc->held = grown;
            pc->cap_held = cap;
        }
    }
    if (err == IOCD_OK) {
        pc->held[pc->n_held++] = b;
        pc->batch = NULL;
        op_advance(op);
    }
    pthread_mutex_unlock(&op->order_mu);
    return err;
}

static iocd_err sink_sample(void *ud, const iocd_label *labels, size_t n_labels, uint64_t tagset,
                            int64_t t_ms, double v)
{
    piece *pc = ud;
    write_op *op = pc->op;
    store_reject why = STORE_REJECT_NONE;
    iocd_err err;

    if (pc->batch == NULL) {
        /* About one sample per 32 bytes of line protocol, each with its key (most keys are
         * shared by the fields of a line): sized once, not grown by doubling. */
        size_t expect = pc->len / 32 < FLUSH_SAMPLES ? pc->len / 32 : FLUSH_SAMPLES;
        err = store_batch_new(op->ing->st, &pc->batch);
        if (err != IOCD_OK)
            return err;
        if (expect > 1024)
            store_batch_reserve(pc->batch, expect + expect / 8, expect * 48);
    }
    err = store_batch_add_tagged(pc->batch, labels, n_labels, tagset, t_ms, v, &why);
    if (err == IOCD_ETOOBIG) {
        err = piece_flush(pc);
        if (err == IOCD_OK)
            err = store_batch_new(op->ing->st, &pc->batch);
        if (err == IOCD_OK)
            err = store_batch_add_tagged(pc->batch, labels, n_labels, tagset, t_ms, v, &why);
    }
    if (err == IOCD_EINVAL) {
        char reason[160];
        snprintf(reason, sizeof(reason), "%s: sample of %.*s refused", store_reject_name(why),
                 (int)(labels[0].value_len < 64 ? labels[0].value_len : 64), labels[0].value);
        op_error(op, 0, reason);
        return IOCD_OK;
    }
    if (err == IOCD_OK && store_batch_len(pc->batch) >= FLUSH_SAMPLES)
        err = piece_flush(pc);
    return err;
}

static void sink_reject(void *ud, uint64_t line_no, const char *reason)
{
    piece *pc = ud;

    /* A piece is parsed as if it began the body; its first line's number in the body is
     * counted only when an error needs it (pieces are cut only where no quoted string can
     * hold a newline, so every newline ends a line). */
    if (pc->idx > 0 && pc->line_base == 0)
        pc->line_base = col_count_lines(pc->op->body, (size_t)(pc->data - pc->op->body)) + 1;
    op_error(pc->op, line_no + (pc->idx > 0 ? pc->line_base - 1 : 0), reason);
}

static void piece_parse(piece *pc)
{
    write_op *op = pc->op;
    col_ingest *ing = op->ing;
    col_sink sink = { sink_sample, sink_reject, pc };
    col_parse_stats stats;
    char why[256] = "";
    iocd_err err = IOCD_OK;

    memset(&stats, 0, sizeof(stats));
    switch (op->o.format) {
    case COL_FMT_INFLUX: {
        col_lp_opts lo = { op->prec, op->now_ms, 1, ing->lim };
        err = col_lp_parse(pc->data, pc->len, &lo, &sink, &stats);
        break;
    }
    case COL_FMT_REMOTE_WRITE:
        err = col_rw_parse(pc->data, pc->len, RW_RAW_MAX_DEFAULT, &ing->lim, &sink, &stats, why,
                           sizeof(why));
        break;
    case COL_FMT_JSONL:
        err = col_jsonl_parse(pc->data, pc->len, 1, &ing->lim, &sink, &stats);
        break;
    }
    if (stats.skipped_strings > 0)
        iocd_metric_add(iocd_counter("iocd_ingest_string_fields_skipped_total",
                                     "Line-protocol string fields skipped (iocd stores numbers)."),
                        (double)stats.skipped_strings);
    if (err == IOCD_OK)
        err = piece_flush(pc);
    if (err != IOCD_OK)
        op_fail(op, err, why);
    store_batch_free(pc->batch); /* what a failed parse left unsent */
    pc->batch = NULL;
    pthread_mutex_lock(&op->order_mu);
    pc->parsed = true;
    op_advance(op);
    pthread_mutex_unlock(&op->order_mu);
    op_unref(op); /* the piece's parsing reference */
}

/* Cuts a line-protocol body into pieces at newlines. Only a body without any '"' is cut: a
 * quoted string field may hold a newline, and finding where lines end then takes a walk
 * through the whole body. Returns the number of pieces (1: not cut). */
static size_t cut_pieces(write_op *op)
{
    const char *p = op->body, *end = op->body + op->len;
    size_t n = 0, cap;

    if (op->o.format != COL_FMT_INFLUX || op->len < 2 * PIECE_BYTES || op->ing->n_threads < 2 ||
        memchr(op->body, '"', op->len) != NULL)
        return 1;
    cap = op->len / PIECE_BYTES + 1;
    if (cap > PIECES_MAX)
        cap = PIECES_MAX;
    op->pieces = iocd_calloc(cap, sizeof(*op->pieces));
    if (op->pieces == NULL) {
        op->pieces = &op->one;
        return 1;
    }
    while (p < end) {
        const char *stop = end;
        if (n + 1 < cap && (size_t)(end - p) > PIECE_BYTES + PIECE_BYTES / 2) {
            const char *nl = memchr(p + PIECE_BYTES, '\n', (size_t)(end - p - PIECE_BYTES));
            if (nl != NULL)
                stop = nl + 1;
        }
        op->pieces[n].data = p;
        op->pieces[n].len = (size_t)(stop - p);
        n++;
        p = stop;
    }
    return n;
}

static void enqueue(col_ingest *ing, piece *first, piece *last)
{
    pthread_mutex_lock(&ing->mu);
    *ing->queue_tail = first;
    ing->queue_tail = &last->next;
    pthread_cond_broadcast(&ing->work);
    pthread_mutex_unlock(&ing->mu);
}

static void *ingest_main(void *arg)
{
    col_ingest *ing = arg;
    piece *pc;

    iocd_thread_name("ingest");
    pthread_mutex_lock(&ing->mu);
    for (;;) {
        while (ing->queue == NULL && !ing->stopping)
            pthread_cond_wait(&ing->work, &ing->mu);
        if (ing->queue == NULL)
            break;
        pc = ing->queue;
        ing->queue = pc->next;
        if (ing->queue == NULL)
            ing->queue_tail = &ing->queue;
        pthread_mutex_unlock(&ing->mu);
        piece_parse(pc);
        pthread_mutex_lock(&ing->mu);
    }
    pthread_mutex_unlock(&ing->mu);
    return NULL;
}

static void fail_now(col_write_done_fn done, void *ud, iocd_err err, const char *reason)
{
    col_write_result res;

    memset(&res, 0, sizeof(res));
    res.err = err;
    snprintf(res.reason, sizeof(res.reason), "%s", reason);
    done(ud, &res);
}

/* Starts a write: on the ingest threads, or on this one (inline: body is only borrowed for
 * the call, or there are no threads). */
static void ingest_start(col_ingest *ing, const char *body, size_t len, const col_write_opts *o,
                         col_write_done_fn done, void *ud, bool inline_parse)
{
    col_precision prec = COL_PREC_NS;
    write_op *op;
    char why[256] = "";
    size_t i, n;

    if (o->format == COL_FMT_INFLUX && o->precision != NULL && o->precision[0] != '\0' &&
        col_precision_parse(o->precision, &prec) != IOCD_OK) {
        snprintf(why, sizeof(why), "invalid precision \"%.32s\": expected ns, us, ms or s",
                 o->precision);
        fail_now(done, ud, IOCD_EINVAL, why);
        return;
    }
    op = iocd_calloc(1, sizeof(*op));
    if (op == NULL) {
        fail_now(done, ud, IOCD_ENOMEM, "out of memory");
        return;
    }
    op->ing = ing;
    op->o = *o;
    op->o.precision = NULL; /* parsed into prec; the caller's text need not outlive the call */
    op->prec = prec;
    op->now_ms = iocd_now_ms();
    op->body = body;
    op->len = len;
    op->done = done;
    op->ud = ud;
    pthread_mutex_init(&op->mu, NULL);
    pthread_mutex_init(&op->order_mu, NULL);
    op->pieces = &op->one;
    inline_parse = inline_parse || ing->n_threads == 0;
    n = inline_parse ? 1 : cut_pieces(op);
    if (n == 1) {
        op->one.data = body;
        op->one.len = len;
    }
    op->n_pieces = n;
    op->refs = n;
    for (i = 0; i < n; i++) {
        op->pieces[i].op = op;
        op->pieces[i].idx = i;
        op->pieces[i].next = i + 1 < n ? &op->pieces[i + 1] : NULL;
    }
    pthread_mutex_lock(&ing->mu);
    ing->in_flight++;
    pthread_mutex_unlock(&ing->mu);
    if (inline_parse)
        piece_parse(&op->pieces[0]);
    else
        enqueue(ing, &op->pieces[0], &op->pieces[n - 1]);
}

void col_ingest_write(col_ingest *ing, const char *body, size_t len, const col_write_opts *o,
                      col_write_done_fn done, void *ud)
{
    ingest_start(ing, body, len, o, done, ud, false);
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
    ingest_start(ing, buf, len, &o, on_lines_done, c, true); /* buf is borrowed */
}

/* ---- Lifetime -------------------------------------------------------------------------- */

iocd_err col_ingest_new(const col_config *cfg, store *st, col_ingest **out)
{
    col_ingest *ing = iocd_calloc(1, sizeof(*ing));
    long n;
    size_t i;

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
    pthread_cond_init(&ing->work, NULL);
    ing->queue_tail = &ing->queue;
    n = cfg->ingest_threads > 0 ? cfg->ingest_threads : sysconf(_SC_NPROCESSORS_ONLN);
    n = n < 1 ? 1 : n > THREADS_MAX ? THREADS_MAX : n;
    ing->threads = iocd_calloc((size_t)n, sizeof(*ing->threads));
    if (ing->threads == NULL) {
        col_ingest_free(ing);
        return IOCD_ENOMEM;
    }
    for (i = 0; i < (size_t)n; i++) {
        if (pthread_create(&ing->threads[i], NULL, ingest_main, ing) != 0)
            break;
        ing->n_threads++;
    }
    if (ing->n_threads == 0) {
        col_ingest_free(ing);
        return IOCD_ENOMEM;
    }
    *out = ing;
    return IOCD_OK;
}

void col_ingest_free(col_ingest *ing)
{
    size_t i;

    if (ing == NULL)
        return;
    pthread_mutex_lock(&ing->mu);
    while (ing->in_flight > 0)
        pthread_cond_wait(&ing->idle, &ing->mu);
    ing->stopping = true;
    pthread_cond_broadcast(&ing->work);
    pthread_mutex_unlock(&ing->mu);
    for (i = 0; i < ing->n_threads; i++)
        pthread_join(ing->threads[i], NULL);
    iocd_free(ing->threads);
    pthread_mutex_destroy(&ing->mu);
    pthread_cond_destroy(&ing->idle);
    pthread_cond_destroy(&ing->work);
    iocd_free(ing);
}
