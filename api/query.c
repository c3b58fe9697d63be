/* api/query.c - the Prometheus HTTP query API: /api/v1/query, query_range, series, labels,
 * label values, metadata, exemplars and status/tsdb, with Prometheus' JSON and error shapes.
 * A handler parses, suspends the request and queues a job for a small pool of query workers
 * (--query-max-concurrency), so slow dashboards cannot stall ingest; only a small instant
 * query (capped at about half a millisecond of work, see INLINE_SERIES) is answered by the
 * HTTP thread itself. The queue is capped (--query-max-queue); past it a query gets 503.
 * Results are streamed out series by series, never rendered whole in memory. */
#include "api/api_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query/query.h"

/* ---- The worker pool ------------------------------------------------------------------------- */

typedef struct qjob qjob;

struct qjob {
    api_req *req;
    query_expr *expr;
    int64_t start_ms, end_ms, step_ms;
    int64_t deadline_ns;
    qjob *next;
};

struct api_queries {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *threads;
    size_t n_threads;
    qjob *head, *tail;
    size_t queued;
    bool stopping;
    iocd_metric *m_queued, *m_running, *m_refused, *m_timeouts, *m_samples, *m_duration, *m_inline;
};

static bool run_job(api_server *srv, qjob *job, bool try_inline);

static void *worker(void *ud)
{
    api_server *srv = ud;
    api_queries *q = srv->queries;

    iocd_thread_name("query");
    for (;;) {
        qjob *job;
        pthread_mutex_lock(&q->mu);
        while (q->head == NULL && !q->stopping)
            pthread_cond_wait(&q->cv, &q->mu);
        job = q->head;
        if (job == NULL) {
            pthread_mutex_unlock(&q->mu);
            return NULL;
        }
        q->head = job->next;
        if (q->head == NULL)
            q->tail = NULL;
        q->queued--;
        pthread_mutex_unlock(&q->mu);
        iocd_metric_add(q->m_queued, -1);
        iocd_metric_add(q->m_running, 1);
        (void)run_job(srv, job, false);
        iocd_metric_add(q->m_running, -1);
    }
}

static iocd_err pool_start(api_server *srv)
{
    api_queries *q = iocd_calloc(1, sizeof(*q));
    size_t i, n = (size_t)srv->cfg->query_max_concurrency;

    if (q == NULL)
        return IOCD_ENOMEM;
    q->threads = iocd_calloc(n + 1, sizeof(*q->threads));
    if (q->threads == NULL) {
        iocd_free(q);
        return IOCD_ENOMEM;
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->m_queued = iocd_gauge("iocd_queries_queued", "Queries waiting for a query worker.");
    q->m_running = iocd_gauge("iocd_queries_running", "Queries being evaluated.");
    q->m_refused = iocd_counter("iocd_queries_refused_total",
                                "Queries refused with 503 because the queue was full.");
    q->m_timeouts = iocd_counter("iocd_queries_timed_out_total", "Queries that hit their timeout.");
    q->m_samples =
        iocd_counter("iocd_query_samples_loaded_total", "Samples read from the store by queries.");
    q->m_duration =
        iocd_counter("iocd_query_seconds_total", "Wall time spent evaluating queries, in seconds.");
    q->m_inline =
        iocd_counter("iocd_queries_inline_total",
                     "Small instant queries answered on the HTTP thread that parsed them.");
    srv->queries = q;
    for (i = 0; i < n; i++) {
        if (pthread_create(&q->threads[i], NULL, worker, srv) != 0)
            break;
        q->n_threads++;
    }
    return q->n_threads > 0 ? IOCD_OK : IOCD_EIO;
}

void api_query_stop(api_server *srv)
{
    api_queries *q = srv->queries;
    size_t i;

    if (q == NULL)
        return;
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (i = 0; i < q->n_threads; i++)
        pthread_join(q->threads[i], NULL);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    iocd_free(q->threads);
    iocd_free(q);
    srv->queries = NULL;
}

/* ---- Parameters ----------------------------------------------------------------------------- */

/* Adds the form body's parameters (Grafana POSTs form-encoded). False: reply written. */
static bool read_form(api_req *req)
{
    const char *ct = api_req_header(req, "Content-Type");

    if (req->method != API_POST || ct == NULL ||
        strncmp(ct, "application/x-www-form-urlencoded", 33) != 0)
        return true;
    if (api_params_parse_form(req, req->body.data != NULL ? req->body.data : "", req->body.len) !=
        IOCD_OK) {
        api_error(req, 400, "bad_data", "cannot parse the form body");
        return false;
    }
    return true;
}

static bool time_param(api_req *req, const char *key, int64_t def, int64_t *out)
{
    const char *v = api_param_get(req, key);

    if (v == NULL || v[0] == '\0') {
        *out = def;
        return true;
    }
    if (query_time_parse(v, out) != IOCD_OK) {
        api_error(req, 400, "bad_data",
                  "invalid parameter \"%s\": cannot parse \"%.64s\" to a valid timestamp", key, v);
        return false;
    }
    return true;
}

static bool duration_param(api_req *req, const char *key, int64_t *out)
{
    const char *v = api_param_get(req, key);

    if (v == NULL || v[0] == '\0')
        return true;
    if (query_duration_parse(v, true, out) != IOCD_OK) {
        api_error(req, 400, "bad_data",
                  "invalid parameter \"%s\": cannot parse \"%.64s\" to a valid duration", key, v);
        return false;
    }
    return true;
}

static store *backend(api_req *req)
{
    store *st = atomic_load(&req->srv->st);

    if (st == NULL)
        api_error(req, 503, "unavailable", "the store is opening; retry shortly");
    return st;
}

/* ---- Result JSON --------------------------------------------------------------------------- */

/* Unix seconds, with milliseconds when there are some ("1700000000", "1700000000.250");
 * digits by hand: a range answer writes one per point. */
static iocd_err put_time(iocd_buf *b, int64_t t_ms)
{
    char tmp[32], *e = tmp + sizeof(tmp), *w = e;
    uint64_t u = t_ms < 0 ? (uint64_t)0 - (uint64_t)t_ms : (uint64_t)t_ms;
    uint64_t sec = u / 1000, frac = u % 1000;

    if (frac != 0) {
        *--w = (char)('0' + frac % 10);
        *--w = (char)('0' + frac / 10 % 10);
        *--w = (char)('0' + frac / 100);
        *--w = '.';
    }
    do {
        *--w = (char)('0' + sec % 10);
        sec /= 10;
    } while (sec != 0);
    if (t_ms < 0)
        *--w = '-';
    return iocd_buf_append(b, w, (size_t)(e - w));
}

static iocd_err put_point(iocd_buf *b, int64_t t_ms, double v)
{
    iocd_err err = iocd_buf_putc(b, '[');

    if (err == IOCD_OK)
        err = put_time(b, t_ms);
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, ",\"");
    if (err == IOCD_OK)
        err = iocd_buf_float(b, v);
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "\"]");
    return err;
}

typedef struct metric_ctx {
    iocd_buf *b;
    bool first;
    iocd_err err;
} metric_ctx;

static void put_label(void *ud, const char *name, const char *value)
{
    metric_ctx *c = ud;

    if (c->err == IOCD_OK && !c->first)
        c->err = iocd_buf_putc(c->b, ',');
    c->first = false;
    if (c->err == IOCD_OK)
        c->err = iocd_buf_json_str(c->b, name, strlen(name));
    if (c->err == IOCD_OK)
        c->err = iocd_buf_putc(c->b, ':');
    if (c->err == IOCD_OK)
        c->err = iocd_buf_json_str(c->b, value, strlen(value));
}

static iocd_err put_metric(iocd_buf *b, const char *labels, size_t len)
{
    metric_ctx c = { b, true, iocd_buf_putc(b, '{') };

    if (c.err == IOCD_OK)
        query_labels_each(labels, len, put_label, &c);
    if (c.err == IOCD_OK)
        c.err = iocd_buf_putc(b, '}');
    return c.err;
}

typedef struct result_stream {
    query_result r;
    size_t next;  /* the next series to write */
    int phase;    /* 0 head, 1 series, 2 tail, 3 done */
    iocd_buf pre; /* written already by the worker, to go first */
} result_stream;

/* An answer up to this long is written by the query worker and sent with its length in one
 * piece (one send for a small one instead of a chunk per phase, and the HTTP thread does not
 * format it); a longer one streams on from there. */
#define INLINE_MAX (256 * 1024)

static iocd_err result_next(void *ud, iocd_buf *out, bool *done)
{
    result_stream *rs = ud;
    query_result *r = &rs->r;
    static const char *const types[] = { "scalar", "vector", "matrix", "string" };
    iocd_err err = IOCD_OK;

    *done = false;
    if (rs->pre.len > 0) {
        err = iocd_buf_append(out, rs->pre.data, rs->pre.len);
        iocd_buf_fini(&rs->pre);
        return err;
    }
    if (rs->phase == 0) {
        err = iocd_buf_printf(
            out,
            "{\"status\":\"success\",\"data\":{\"resultType\":\"%s\",\"result\":", types[r->type]);
        if (err == IOCD_OK && r->type == QUERY_SCALAR)
            err = put_point(out, r->t_ms, r->scalar);
        else if (err == IOCD_OK && r->type == QUERY_STRING) {
            err = iocd_buf_putc(out, '[');
            if (err == IOCD_OK)
                err = put_time(out, r->t_ms);
            if (err == IOCD_OK)
                err = iocd_buf_putc(out, ',');
            if (err == IOCD_OK)
                err = iocd_buf_json_str(out, r->str, strlen(r->str));
            if (err == IOCD_OK)
                err = iocd_buf_putc(out, ']');
        } else if (err == IOCD_OK) {
            err = iocd_buf_putc(out, '[');
            rs->phase = 1;
            return err;
        }
        rs->phase = 2;
        return err;
    }
    if (rs->phase == 1) {
        while (err == IOCD_OK && rs->next < r->n && out->len < 256 * 1024) {
            query_series *s = &r->series[rs->next];
            size_t j;
            if (rs->next > 0)
                err = iocd_buf_putc(out, ',');
            if (err == IOCD_OK)
                err = iocd_buf_puts(out, "{\"metric\":");
            if (err == IOCD_OK)
                err = put_metric(out, s->labels, s->labels_len);
            if (r->type == QUERY_VECTOR) {
                if (err == IOCD_OK)
                    err = iocd_buf_puts(out, ",\"value\":");
                if (err == IOCD_OK)
                    err = put_point(out, s->points[0].t_ms, s->points[0].v);
            } else {
                if (err == IOCD_OK)
                    err = iocd_buf_puts(out, ",\"values\":[");
                for (j = 0; err == IOCD_OK && j < s->n; j++) {
                    if (j > 0)
                        err = iocd_buf_putc(out, ',');
                    if (err == IOCD_OK)
                        err = put_point(out, s->points[j].t_ms, s->points[j].v);
                }
                if (err == IOCD_OK)
                    err = iocd_buf_putc(out, ']');
            }
            if (err == IOCD_OK)
                err = iocd_buf_putc(out, '}');
            /* The series is written: release it now, the stream may be long. */
            iocd_free(s->labels);
            iocd_free(s->points);
            s->labels = NULL;
            s->points = NULL;
            rs->next++;
        }
        if (rs->next < r->n)
            return err;
        if (err == IOCD_OK)
            err = iocd_buf_putc(out, ']');
        rs->phase = 2;
        return err;
    }
    if (rs->phase == 2) {
        err = iocd_buf_puts(out, "}}");
        rs->phase = 3;
    }
    *done = true;
    return err;
}

static void result_free(void *ud)
{
    result_stream *rs = ud;

    query_result_fini(&rs->r);
    iocd_buf_fini(&rs->pre);
    iocd_free(rs);
}

/* ---- Query jobs --------------------------------------------------------------------------- */

static void job_error(api_req *req, iocd_err err, const char *msg)
{
    switch (err) {
    case IOCD_ETIMEDOUT:
        api_error(req, 503, "timeout", "%s", msg[0] != '\0' ? msg : "query timed out");
        break;
    case IOCD_EINVAL:
    case IOCD_ELIMIT:
        api_error(req, 422, "execution", "%s", msg);
        break;
    case IOCD_ENOMEM:
        api_error(req, 503, "unavailable", "%s", msg[0] != '\0' ? msg : "out of memory");
        break;
    default:
        api_error(req, 500, "internal", "%s%s%s", msg, msg[0] != '\0' ? ": " : "",
                  iocd_strerror(err));
        break;
    }
}

/* A small instant query is answered on the HTTP thread that parsed it: handing it to a query
 * worker and back (the request suspended, a worker woken, the HTTP thread woken to send) cost
 * more than evaluating it. Small means an instant query whose selectors read postings only
 * (query_expr_bounded), evaluated under these caps: one that goes past them is stopped early
 * and queued as any other. At 100k series a query at the caps takes about half a millisecond
 * (246 series of one ward, each in its own block: 0.37 ms of CPU). */
#define INLINE_SERIES     256   /* series a selector may select */
#define INLINE_SAMPLES    32768 /* samples the query may hold */
#define INLINE_TIMEOUT_MS 2

/* Evaluates job and writes the answer into its request. With try_inline, the query runs under
 * the caps above; false: it went past them, nothing is written and job is untouched. */
static bool run_job(api_server *srv, qjob *job, bool try_inline)
{
    const col_config *cfg = srv->cfg;
    api_queries *q = srv->queries;
    api_req *req = job->req;
    query_limits lim;
    result_stream *rs = NULL;
    char errbuf[512] = "";
    int64_t t0 = iocd_mono_ns(), left = job->deadline_ns - t0;
    bool evaluated = false, done = false;
    iocd_err err;

    memset(&lim, 0, sizeof(lim));
    lim.timeout_ms = left > 1000000 ? left / 1000000 : 1;
    lim.max_series = (size_t)cfg->query_max_series;
    lim.max_samples = (size_t)cfg->query_max_samples;
    lim.max_points = (size_t)cfg->query_max_points;
    lim.lookback_ms = cfg->query_lookback_ms;
    lim.rollup_range_ms = cfg->query_rollup_range_ms > 0 ? cfg->query_rollup_range_ms : -1;
    if (try_inline) {
        lim.timeout_ms = lim.timeout_ms < INLINE_TIMEOUT_MS ? lim.timeout_ms : INLINE_TIMEOUT_MS;
        if (lim.max_series == 0 || lim.max_series > INLINE_SERIES)
            lim.max_series = INLINE_SERIES;
        if (lim.max_samples == 0 || lim.max_samples > INLINE_SAMPLES)
            lim.max_samples = INLINE_SAMPLES;
    }
    rs = iocd_calloc(1, sizeof(*rs));
    if (rs == NULL) {
        err = IOCD_ENOMEM;
    } else if (left <= 0) {
        err = IOCD_ETIMEDOUT;
        snprintf(errbuf, sizeof(errbuf), "query timed out in the queue (the server is busy)");
    } else {
        err = query_eval(atomic_load(&srv->st), &lim, job->expr, job->start_ms, job->end_ms,
                         job->step_ms, &rs->r, errbuf, sizeof(errbuf));
    }
    iocd_metric_add(q->m_duration, (double)(iocd_mono_ns() - t0) / 1e9);
    if (try_inline && (err == IOCD_ELIMIT || err == IOCD_ETIMEDOUT || err == IOCD_ENOMEM)) {
        iocd_free(rs); /* past the caps (or short of memory): a worker runs it in full */
        return false;
    }
    if (err == IOCD_OK) {
        evaluated = true;
        iocd_metric_add(q->m_samples, (double)rs->r.samples_loaded);
        iocd_buf_reset(&req->resp.body);
        while (err == IOCD_OK && !done && req->resp.body.len < INLINE_MAX)
            err = result_next(rs, &req->resp.body, &done);
    }
    if (err == IOCD_OK) {
        req->resp.status = 200;
        req->resp.content_type = "application/json";
        if (done) {
            result_free(rs);
        } else { /* the rest streams, after what is written */
            rs->pre = req->resp.body;
            iocd_buf_init(&req->resp.body, rs->pre.max);
            req->resp.stream = result_next;
            req->resp.stream_ud = rs;
            req->resp.stream_free = result_free;
        }
    } else {
        if (err == IOCD_ETIMEDOUT)
            iocd_metric_add(q->m_timeouts, 1);
        job_error(req, err, evaluated ? "" : errbuf); /* evaluated: failed writing the answer */
        if (evaluated)
            result_free(rs);
        else
            iocd_free(rs);
    }
    query_expr_free(job->expr);
    iocd_free(job);
    if (try_inline)
        iocd_metric_add(q->m_inline, 1);
    else
        api_req_resume(req);
    return true;
}

/* Parses the query and queues it. */
static api_status enqueue(api_req *req, bool range)
{
    const col_config *cfg = req->srv->cfg;
    api_queries *q = req->srv->queries;
    const char *text;
    query_expr *expr = NULL;
    int64_t now = iocd_now_ms(), start, end = 0, step = 0, timeout = cfg->query_timeout_ms;
    char why[512];
    qjob *job;

    if (!read_form(req) || backend(req) == NULL)
        return API_DONE;
    text = api_param_get(req, "query");
    if (text == NULL) {
        api_error(req, 400, "bad_data", "invalid parameter \"query\": parameter is missing");
        return API_DONE;
    }
    if (range) {
        const char *sv = api_param_get(req, "step");
        if (!time_param(req, "start", INT64_MIN, &start) ||
            !time_param(req, "end", INT64_MIN, &end))
            return API_DONE;
        if (start == INT64_MIN || end == INT64_MIN) {
            api_error(req, 400, "bad_data", "invalid parameter \"%s\": parameter is missing",
                      start == INT64_MIN ? "start" : "end");
            return API_DONE;
        }
        if (sv == NULL || sv[0] == '\0') {
            api_error(req, 400, "bad_data", "invalid parameter \"step\": parameter is missing");
            return API_DONE;
        }
        if (!duration_param(req, "step", &step))
            return API_DONE;
        if (end < start) {
            api_error(req, 400, "bad_data", "end timestamp must not be before start time");
            return API_DONE;
        }
        if (step <= 0) {
            api_error(req, 400, "bad_data",
                      "zero or negative query resolution step widths are not accepted. Try a "
                      "positive integer");
            return API_DONE;
        }
        if ((end - start) / step > cfg->query_max_points) { /* Prometheus: steps, not points */
            api_error(req, 400, "bad_data",
                      "exceeded maximum resolution of %lld points per timeseries. Try "
                      "decreasing the query resolution (?step=XX)",
                      (long long)cfg->query_max_points);
            return API_DONE;
        }
    } else if (!time_param(req, "time", now, &start)) {
        return API_DONE;
    }
    {
        int64_t t = 0;
        if (!duration_param(req, "timeout", &t))
            return API_DONE;
        if (t > 0 && t < timeout)
            timeout = t;
    }
    if (query_parse(text, &expr, why, sizeof(why)) != IOCD_OK) {
        api_error(req, 400, "bad_data", "invalid parameter \"query\": %s", why);
        return API_DONE;
    }
    job = iocd_calloc(1, sizeof(*job));
    if (job == NULL) {
        query_expr_free(expr);
        api_error(req, 503, "unavailable", "out of memory");
        return API_DONE;
    }
    job->req = req;
    job->expr = expr;
    job->start_ms = start;
    job->end_ms = end;
    job->step_ms = range ? step : 0;
    job->deadline_ns = iocd_mono_ns() + timeout * 1000000;
    if (!range && query_expr_bounded(expr) && run_job(req->srv, job, true))
        return API_DONE;
    pthread_mutex_lock(&q->mu);
    if (q->queued >= (size_t)cfg->query_max_queue || q->stopping) {
        pthread_mutex_unlock(&q->mu);
        query_expr_free(expr);
        iocd_free(job);
        iocd_metric_add(q->m_refused, 1);
        snprintf(req->resp.retry_after, sizeof(req->resp.retry_after), "1");
        api_error(req, 503, "unavailable",
                  "too many queries waiting (%lld); retry shortly or raise "
                  "--query-max-queue",
                  (long long)cfg->query_max_queue);
        return API_DONE;
    }
    if (q->tail != NULL)
        q->tail->next = job;
    else
        q->head = job;
    q->tail = job;
    q->queued++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    iocd_metric_add(q->m_queued, 1);
    return API_SUSPENDED;
}

static api_status h_query(api_req *req, void *ud)
{
    (void)ud;
    return enqueue(req, false);
}

static api_status h_query_range(api_req *req, void *ud)
{
    (void)ud;
    return enqueue(req, true);
}

/* ---- Series and labels ------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The union of the series every match[] selects, ascending. *have_match says whether any
 * was given. False: the reply is written. */
static bool match_union(api_req *req, store *st, bool *have_match, uint64_t **ids_out,
                        size_t *n_out)
{
    uint64_t *all = NULL;
    size_t n_all = 0, i, k;
    iocd_err err = IOCD_OK;
    char why[512];

    *have_match = false;
    for (i = 0; i < req->n_params && err == IOCD_OK; i++) {
        query_selector sel;
        uint64_t *ids = NULL, *grown;
        size_t n = 0;
        if (strcmp(req->params[i].key, "match[]") != 0)
            continue;
        *have_match = true;
        if (query_selector_parse(req->params[i].value, &sel, why, sizeof(why)) != IOCD_OK) {
            api_error(req, 400, "bad_data", "invalid parameter \"match[]\": %s", why);
            iocd_free(all);
            return false;
        }
        err = query_select(st, &sel, &ids, &n);
        query_selector_fini(&sel);
        if (err != IOCD_OK)
            break;
        grown = iocd_realloc(all, (n_all + n + 1) * sizeof(*grown));
        if (grown == NULL) {
            iocd_free(ids);
            err = IOCD_ENOMEM;
            break;
        }
        all = grown;
        if (n > 0)
            memcpy(all + n_all, ids, n * sizeof(*ids));
        n_all += n;
        iocd_free(ids);
    }
    if (err == IOCD_OK && all == NULL && (all = iocd_malloc(sizeof(*all))) == NULL)
        err = IOCD_ENOMEM;
    if (err != IOCD_OK) {
        iocd_free(all);
        api_error(req, 503, "unavailable", "selecting series: %s", iocd_strerror(err));
        return false;
    }
    iocd_qsort(all, n_all, sizeof(*all), cmp_u64);
    for (i = 0, k = 0; i < n_all; i++)
        if (k == 0 || all[k - 1] != all[i])
            all[k++] = all[i];
    if (req->srv->cfg->query_max_series > 0 && k > (size_t)req->srv->cfg->query_max_series) {
        iocd_free(all);
        api_error(req, 422, "execution",
                  "the selectors match %zu series, over the limit of %lld (--query-max-series)", k,
                  (long long)req->srv->cfg->query_max_series);
        return false;
    }
    *ids_out = all;
    *n_out = k;
    return true;
}

/* start/end are accepted and checked; see docs/PROMQL.md for how they narrow. */
static bool check_range_params(api_req *req)
{
    int64_t start, end;

    return time_param(req, "start", 0, &start) && time_param(req, "end", 0, &end);
}

typedef struct series_json {
    iocd_buf *b;
    bool first;
    iocd_err err;
} series_json;

static void reply_oom(api_req *req)
{
    api_error(req, 503, "unavailable", "out of memory building the answer");
}

/* One series of /api/v1/series from its "name\0value\0" pairs (none: deleted meanwhile). */
static iocd_err series_pairs_json(void *ud, size_t i, const char *pairs, size_t len)
{
    series_json *c = ud;
    const char *p = pairs, *end = pairs + len;
    iocd_err err;

    (void)i;
    if (len == 0)
        return IOCD_OK;
    err = iocd_buf_puts(c->b, c->first ? "{" : ",{");
    c->first = false;
    while (err == IOCD_OK && p < end) {
        size_t nl = strlen(p), vl = strlen(p + nl + 1);
        if (p != pairs)
            err = iocd_buf_putc(c->b, ',');
        if (err == IOCD_OK)
            err = iocd_buf_json_str(c->b, p, nl);
        if (err == IOCD_OK)
            err = iocd_buf_putc(c->b, ':');
        if (err == IOCD_OK)
            err = iocd_buf_json_str(c->b, p + nl + 1, vl);
        p += nl + 1 + vl + 1;
    }
    return err == IOCD_OK ? iocd_buf_putc(c->b, '}') : err;
}

static api_status h_series(api_req *req, void *ud)
{
    iocd_buf *b = &req->resp.body;
    uint64_t *ids = NULL;
    size_t n = 0;
    bool have;
    store *st;
    iocd_err err;

    (void)ud;
    if (!read_form(req) || (st = backend(req)) == NULL || !check_range_params(req))
        return API_DONE;
    if (!match_union(req, st, &have, &ids, &n))
        return API_DONE;
    if (!have) {
        iocd_free(ids);
        api_error(req, 400, "bad_data", "no match[] parameter provided");
        return API_DONE;
    }
    iocd_buf_reset(b);
    err = iocd_buf_reserve(b, 64 + n * 96); /* about what an IOC series takes; grows if not */
    if (err == IOCD_ETOOBIG)
        err = IOCD_OK; /* the cap decides below */
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "{\"status\":\"success\",\"data\":[");
    if (err == IOCD_OK) {
        series_json c = { b, true, IOCD_OK };
        err = store_series_pairs(st, ids, n, series_pairs_json, &c);
    }
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "]}");
    iocd_free(ids);
    if (err != IOCD_OK) {
        reply_oom(req);
        return API_DONE;
    }
    req->resp.status = 200;
    req->resp.content_type = "application/json";
    return API_DONE;
}

static void free_strings(char **v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        iocd_free(v[i]);
    iocd_free(v);
}

/* A sorted set of strings built from the labels of selected series. */
typedef struct str_set {
    char **v;
    size_t n, cap;
    const char *only; /* collect values of this label; NULL: collect names */
    iocd_err err;
    uint32_t *slots; /* open addressing over v: index + 1, 0 empty (set_add_unique) */
    size_t n_slots;
} str_set;

static uint64_t str_hash(const char *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
    return iocd_mix64(h);
}

static iocd_err set_add(str_set *s, const char *p, size_t len)
{
    char *copy;

    if (s->n == s->cap) {
        size_t cap = s->cap != 0 ? s->cap * 2 : 64;
        char **grown = iocd_realloc(s->v, cap * sizeof(*grown));
        if (grown == NULL)
            return IOCD_ENOMEM;
        s->v = grown;
        s->cap = cap;
    }
    copy = iocd_strndup(p, len);
    if (copy == NULL)
        return IOCD_ENOMEM;
    s->v[s->n++] = copy;
    return IOCD_OK;
}

/* Adds p unless the set has it: thousands of series give a few distinct names or values,
 * each copied once instead of once per series. */
static iocd_err set_add_unique(str_set *s, const char *p, size_t len)
{
    size_t j;

    if ((s->n + 1) * 2 > s->n_slots) {
        size_t cap = s->n_slots != 0 ? s->n_slots * 2 : 256, i;
        uint32_t *grown = iocd_calloc(cap, sizeof(*grown));
        if (grown == NULL)
            return IOCD_ENOMEM;
        for (i = 0; i < s->n; i++) {
            for (j = str_hash(s->v[i], strlen(s->v[i])) & (cap - 1); grown[j] != 0;
                 j = (j + 1) & (cap - 1))
                ;
            grown[j] = (uint32_t)i + 1;
        }
        iocd_free(s->slots);
        s->slots = grown;
        s->n_slots = cap;
    }
    for (j = str_hash(p, len) & (s->n_slots - 1); s->slots[j] != 0;
         j = (j + 1) & (s->n_slots - 1)) {
        const char *have = s->v[s->slots[j] - 1];
        if (strncmp(have, p, len) == 0 && have[len] == '\0')
            return IOCD_OK;
    }
    s->slots[j] = (uint32_t)s->n + 1;
    return set_add(s, p, len);
}

/* The names, or the values of s->only, of one series' "name\0value\0" pairs. */
static iocd_err set_pairs(void *ud, size_t i, const char *pairs, size_t len)
{
    str_set *s = ud;
    const char *p = pairs, *end = pairs + len;
    iocd_err err = IOCD_OK;

    (void)i;
    while (err == IOCD_OK && p < end) {
        size_t nl = strlen(p), vl = strlen(p + nl + 1);
        if (s->only == NULL)
            err = set_add_unique(s, p, nl);
        else if (strcmp(s->only, p) == 0)
            err = set_add_unique(s, p + nl + 1, vl);
        p += nl + 1 + vl + 1;
    }
    return err;
}

static void set_unique(str_set *s)
{
    size_t i, k = 0;

    iocd_qsort(s->v, s->n, sizeof(*s->v), cmp_str);
    for (i = 0; i < s->n; i++) {
        if (k > 0 && strcmp(s->v[k - 1], s->v[i]) == 0) {
            iocd_free(s->v[i]);
            continue;
        }
        s->v[k++] = s->v[i];
    }
    s->n = k;
}

static void reply_strings(api_req *req, char **v, size_t n)
{
    iocd_buf *b = &req->resp.body;
    iocd_err err;
    size_t i;

    iocd_buf_reset(b);
    err = iocd_buf_puts(b, "{\"status\":\"success\",\"data\":[");
    for (i = 0; err == IOCD_OK && i < n; i++) {
        if (i > 0)
            err = iocd_buf_putc(b, ',');
        if (err == IOCD_OK)
            err = iocd_buf_json_str(b, v[i], strlen(v[i]));
    }
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "]}");
    if (err != IOCD_OK) {
        reply_oom(req);
        return;
    }
    req->resp.status = 200;
    req->resp.content_type = "application/json";
}

/* Names (only == NULL) or values of label only, from match[] or from the whole index. */
static api_status names_or_values(api_req *req, const char *only)
{
    str_set set = { NULL, 0, 0, only, IOCD_OK, NULL, 0 };
    uint64_t *ids = NULL;
    size_t n = 0;
    bool have;
    store *st;
    iocd_err err = IOCD_OK;

    if (!read_form(req) || (st = backend(req)) == NULL || !check_range_params(req))
        return API_DONE;
    if (!match_union(req, st, &have, &ids, &n))
        return API_DONE;
    if (!have) {
        err = only == NULL ? store_label_names(st, &set.v, &set.n)
                           : store_label_values(st, only, &set.v, &set.n);
        if (err == IOCD_EINVAL) { /* a name too long to be a label: it has no values */
            err = IOCD_OK;
            set.v = NULL;
            set.n = 0;
        }
    } else {
        err = store_series_pairs(st, ids, n, set_pairs, &set);
        if (err == IOCD_OK)
            set_unique(&set);
        iocd_free(set.slots);
    }
    iocd_free(ids);
    if (err != IOCD_OK) {
        free_strings(set.v, set.n);
        api_error(req, 503, "unavailable", "reading the index: %s", iocd_strerror(err));
        return API_DONE;
    }
    reply_strings(req, set.v, set.n);
    free_strings(set.v, set.n);
    return API_DONE;
}

static api_status h_labels(api_req *req, void *ud)
{
    (void)ud;
    return names_or_values(req, NULL);
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

static api_status h_label_values(api_req *req, void *ud)
{
    const char *prefix = "/api/v1/label/", *rest = req->path + strlen(prefix);
    const char *slash = strchr(rest, '/');
    char name[256];
    size_t len = slash != NULL ? (size_t)(slash - rest) : strlen(rest);

    (void)ud;
    if (slash == NULL || strcmp(slash, "/values") != 0 || len == 0 || len >= sizeof(name)) {
        api_error(req, 404, "not_found", "no such endpoint: %s (use /api/v1/label/NAME/values)",
                  req->path);
        return API_DONE;
    }
    memcpy(name, rest, len);
    name[len] = '\0';
    if (!valid_label_name(name)) {
        api_error(req, 400, "bad_data", "invalid label name: \"%s\"", name);
        return API_DONE;
    }
    return names_or_values(req, name);
}

static api_status h_empty_object(api_req *req, void *ud)
{
    (void)ud;
    api_reply_text(req, 200, "application/json", "{\"status\":\"success\",\"data\":{}}");
    return API_DONE;
}

static api_status h_exemplars(api_req *req, void *ud)
{
    (void)ud;
    if (!read_form(req))
        return API_DONE;
    if (api_param_get(req, "query") == NULL) {
        api_error(req, 400, "bad_data", "invalid parameter \"query\": parameter is missing");
        return API_DONE;
    }
    api_reply_text(req, 200, "application/json", "{\"status\":\"success\",\"data\":[]}");
    return API_DONE;
}

/* ---- status/tsdb ---------------------------------------------------------------------------- */

typedef struct count_entry {
    char *key;
    uint64_t count;
} count_entry;

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

/* A tiny string -> count table (linear probing). */
typedef struct counter_map {
    count_entry *e;
    size_t cap, n;
} counter_map;

static iocd_err map_inc(counter_map *m, const char *key, size_t len, uint64_t by)
{
    size_t h, i;

    if (m->cap == 0 || (m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap != 0 ? m->cap * 2 : 256;
        count_entry *e = iocd_calloc(cap, sizeof(*e));
        if (e == NULL)
            return IOCD_ENOMEM;
        for (i = 0; i < m->cap; i++) {
            if (m->e[i].key == NULL)
                continue;
            h = (size_t)hash_bytes(m->e[i].key, strlen(m->e[i].key)) & (cap - 1);
            while (e[h].key != NULL)
                h = (h + 1) & (cap - 1);
            e[h] = m->e[i];
        }
        iocd_free(m->e);
        m->e = e;
        m->cap = cap;
    }
    h = (size_t)hash_bytes(key, len) & (m->cap - 1);
    while (m->e[h].key != NULL) {
        if (strlen(m->e[h].key) == len && memcmp(m->e[h].key, key, len) == 0) {
            m->e[h].count += by;
            return IOCD_OK;
        }
        h = (h + 1) & (m->cap - 1);
    }
    m->e[h].key = iocd_strndup(key, len);
    if (m->e[h].key == NULL)
        return IOCD_ENOMEM;
    m->e[h].count = by;
    m->n++;
    return IOCD_OK;
}

static void map_fini(counter_map *m)
{
    size_t i;

    for (i = 0; i < m->cap; i++)
        iocd_free(m->e[i].key);
    iocd_free(m->e);
}

static int by_count_desc(const void *a, const void *b)
{
    const count_entry *x = a, *y = b;

    if (x->key == NULL || y->key == NULL)
        return (x->key == NULL) - (y->key == NULL);
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return strcmp(x->key, y->key);
}

typedef struct tsdb_ctx {
    counter_map metrics, pairs, names_bytes;
    iocd_err err;
} tsdb_ctx;

static iocd_err tsdb_label(void *ud, const char *name, size_t name_len, const char *value,
                           size_t value_len)
{
    tsdb_ctx *c = ud;
    char pair[8192];
    iocd_err err = IOCD_OK;

    if (name_len == 8 && memcmp(name, "__name__", 8) == 0)
        err = map_inc(&c->metrics, value, value_len, 1);
    if (err == IOCD_OK && name_len + value_len + 1 < sizeof(pair)) {
        memcpy(pair, name, name_len);
        pair[name_len] = '=';
        memcpy(pair + name_len + 1, value, value_len);
        err = map_inc(&c->pairs, pair, name_len + value_len + 1, 1);
    }
    if (err == IOCD_OK)
        err = map_inc(&c->names_bytes, name, name_len, value_len);
    return err;
}

static iocd_err put_top(iocd_buf *b, const char *key, counter_map *m, size_t limit)
{
    iocd_err err = iocd_buf_printf(b, ",\"%s\":[", key);
    size_t i;

    if (m->cap > 0)
        iocd_qsort(m->e, m->cap, sizeof(*m->e), by_count_desc);
    for (i = 0; err == IOCD_OK && i < m->n && i < limit; i++) {
        if (i > 0)
            err = iocd_buf_putc(b, ',');
        if (err == IOCD_OK)
            err = iocd_buf_puts(b, "{\"name\":");
        if (err == IOCD_OK)
            err = iocd_buf_json_str(b, m->e[i].key, strlen(m->e[i].key));
        if (err == IOCD_OK)
            err = iocd_buf_printf(b, ",\"value\":%llu}", (unsigned long long)m->e[i].count);
    }
    if (err == IOCD_OK)
        err = iocd_buf_putc(b, ']');
    return err;
}

static api_status h_tsdb(api_req *req, void *ud)
{
    iocd_buf *b = &req->resp.body;
    tsdb_ctx c;
    uint64_t *ids = NULL;
    size_t n = 0, i, limit = 10;
    counter_map names_count;
    store_stats stats;
    store *st;
    const char *lv = api_param_get(req, "limit");
    iocd_err err;

    (void)ud;
    if ((st = backend(req)) == NULL)
        return API_DONE;
    if (lv != NULL) {
        char *end;
        long v = strtol(lv, &end, 10);
        if (*lv == '\0' || *end != '\0' || v <= 0 || v > 10000) {
            api_error(req, 400, "bad_data", "invalid parameter \"limit\": want 1..10000");
            return API_DONE;
        }
        limit = (size_t)v;
    }
    memset(&c, 0, sizeof(c));
    memset(&names_count, 0, sizeof(names_count));
    err = store_series_all(st, &ids, &n);
    for (i = 0; err == IOCD_OK && i < n; i++) {
        err = store_series_labels(st, ids[i], tsdb_label, &c);
        if (err == IOCD_ENOTFOUND)
            err = IOCD_OK;
    }
    /* Distinct values per label name, from the pairs. */
    for (i = 0; err == IOCD_OK && i < c.pairs.cap; i++) {
        const char *k = c.pairs.e[i].key, *eq;
        if (k == NULL)
            continue;
        eq = strchr(k, '=');
        err = map_inc(&names_count, k, (size_t)(eq - k), 1);
    }
    if (err == IOCD_OK)
        err = store_stats_get(st, &stats);
    iocd_buf_reset(b);
    if (err == IOCD_OK)
        err = iocd_buf_printf(b,
                              "{\"status\":\"success\",\"data\":{\"headStats\":{\"numSeries\":%zu,"
                              "\"numLabelPairs\":%zu,\"chunkCount\":%llu,\"minTime\":0,"
                              "\"maxTime\":0,\"headSamples\":%llu}",
                              n, c.pairs.n, (unsigned long long)stats.blocks,
                              (unsigned long long)stats.head_samples);
    if (err == IOCD_OK)
        err = put_top(b, "seriesCountByMetricName", &c.metrics, limit);
    if (err == IOCD_OK)
        err = put_top(b, "labelValueCountByLabelName", &names_count, limit);
    if (err == IOCD_OK)
        err = put_top(b, "memoryInBytesByLabelName", &c.names_bytes, limit);
    if (err == IOCD_OK)
        err = put_top(b, "seriesCountByLabelValuePair", &c.pairs, limit);
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "}}");
    iocd_free(ids);
    map_fini(&c.metrics);
    map_fini(&c.pairs);
    map_fini(&c.names_bytes);
    map_fini(&names_count);
    if (err != IOCD_OK) {
        api_error(req, 503, "unavailable", "reading the index: %s", iocd_strerror(err));
        return API_DONE;
    }
    req->resp.status = 200;
    req->resp.content_type = "application/json";
    return API_DONE;
}

/* ---- Registration -----------------------------------------------------------------------------
 */

iocd_err api_query_register(api_server *srv)
{
    static const struct {
        unsigned methods;
        const char *path;
        api_handler_fn fn;
    } routes[] = {
        { API_GET | API_POST, "/api/v1/query", h_query },
        { API_GET | API_POST, "/api/v1/query_range", h_query_range },
        { API_GET | API_POST, "/api/v1/series", h_series },
        { API_GET | API_POST, "/api/v1/labels", h_labels },
        { API_GET, "/api/v1/label/*", h_label_values },
        { API_GET, "/api/v1/metadata", h_empty_object },
        { API_GET | API_POST, "/api/v1/query_exemplars", h_exemplars },
        { API_GET, "/api/v1/status/tsdb", h_tsdb },
    };
    size_t i;
    iocd_err err = pool_start(srv);

    for (i = 0; err == IOCD_OK && i < IOCD_ARRAY_LEN(routes); i++)
        err = api_route_add(srv, routes[i].methods, routes[i].path, COL_ROLE_READ, routes[i].fn,
                            NULL);
    return err;
}
