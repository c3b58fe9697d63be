/* api/write.c - ingest endpoints (InfluxDB /write and /api/v2/write, Prometheus remote
 * write, JSON-lines import) and the JSON-lines export.
 * A write is answered only after its samples are durable: the handler hands the body to the
 * ingest pipeline (parsed on the ingest threads, so this thread goes back to other
 * connections at once) and suspends; the pipeline's completion (on the storage writer
 * thread) fills the reply and resumes the connection. The body (req->body, or req->inflated)
 * lives in the request, which outlives the write. Export streams one series at a time, so its
 * memory does not grow with the answer. */
#include "api/api_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT_SERIES_PER_CHUNK 64

/* ---- Writes ---------------------------------------------------------------------------- */

static void reply_write(api_req *req, const col_write_result *res)
{
    iocd_buf *b = &req->resp.body;
    iocd_err err = IOCD_OK;
    char msg[256];
    size_t i;

    if (res->err == IOCD_ENOSPC || res->err == IOCD_EIO || res->err == IOCD_ENOMEM) {
        api_error(req, 503, "unavailable", "%s; nothing in this request was acknowledged",
                  res->reason[0] != '\0' ? res->reason : iocd_strerror(res->err));
        snprintf(req->resp.retry_after, sizeof(req->resp.retry_after), "5");
        return;
    }
    if (res->err != IOCD_OK) {
        api_error(req, 400, "bad_data", "%s", res->reason);
        return;
    }
    if (res->rejected == 0) {
        iocd_buf_reset(b);
        req->resp.status = 204;
        req->resp.content_type = NULL;
        return;
    }
    /* InfluxDB's partial write: 400, with what was written and why the rest was not. */
    snprintf(msg, sizeof(msg), "partial write: %llu rejected, %llu written",
             (unsigned long long)res->rejected, (unsigned long long)res->written);
    iocd_buf_reset(b);
    err = iocd_buf_puts(b, "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":");
    if (err == IOCD_OK)
        err = iocd_buf_json_str(b, msg, strlen(msg));
    if (err == IOCD_OK)
        err = iocd_buf_printf(b, ",\"written\":%llu,\"rejected\":%llu,\"errors\":[",
                              (unsigned long long)res->written, (unsigned long long)res->rejected);
    for (i = 0; err == IOCD_OK && i < res->n_errors; i++) {
        err = iocd_buf_printf(b, "%s{\"line\":%llu,\"reason\":", i > 0 ? "," : "",
                              (unsigned long long)res->errors[i].line);
        if (err == IOCD_OK)
            err = iocd_buf_json_str(b, res->errors[i].reason, strlen(res->errors[i].reason));
        if (err == IOCD_OK)
            err = iocd_buf_putc(b, '}');
    }
    if (err == IOCD_OK)
        err = iocd_buf_puts(b, "]}");
    req->resp.status = err == IOCD_OK ? 400 : 500;
    req->resp.content_type = "application/json";
}

static void on_written(void *ud, const col_write_result *res)
{
    api_req *req = ud;

    reply_write(req, res);
    api_req_resume(req);
}

/* Returns the request body, inflated if the client compressed it; NULL after replying. */
static const char *body_of(api_req *req, iocd_buf *inflated, size_t *len)
{
    const char *enc = api_req_header(req, "Content-Encoding");
    char why[256];
    iocd_err err;

    if (enc == NULL || enc[0] == '\0' || strcmp(enc, "identity") == 0 ||
        strcmp(enc, "snappy") == 0) {
        *len = req->body.len;
        return req->body.data != NULL ? req->body.data : "";
    }
    if (strcmp(enc, "gzip") != 0 && strcmp(enc, "x-gzip") != 0 && strcmp(enc, "deflate") != 0) {
        api_error(req, 400, "bad_data", "unsupported Content-Encoding \"%.40s\"", enc);
        return NULL;
    }
    err = api_inflate(req->body.data != NULL ? req->body.data : "", req->body.len,
                      strcmp(enc, "deflate") != 0, (size_t)req->srv->cfg->http_body_max, inflated,
                      why, sizeof(why));
    if (err == IOCD_ETOOBIG) {
        api_error(req, 413, "bad_data", "%s", why);
        return NULL;
    }
    if (err != IOCD_OK) {
        api_error(req, err == IOCD_ENOMEM ? 503 : 400, "bad_data", "%s", why);
        return NULL;
    }
    *len = inflated->len;
    return inflated->data != NULL ? inflated->data : "";
}

static api_status do_write(api_req *req, col_format format, const char *precision,
                           const char *proto)
{
    col_ingest *ing = atomic_load(&req->srv->ing);
    col_write_opts o = { format, precision, proto };
    const char *body;
    size_t len = 0;

    if (ing == NULL) {
        api_error(req, 503, "unavailable", "the store is opening; try again");
        snprintf(req->resp.retry_after, sizeof(req->resp.retry_after), "1");
        return API_DONE;
    }
    body = body_of(req, &req->inflated, &len);
    if (body == NULL)
        return API_DONE;
    col_ingest_write(ing, body, len, &o, on_written, req);
    return API_SUSPENDED;
}

static api_status influx_v1(api_req *req, void *ud)
{
    (void)ud;
    return do_write(req, COL_FMT_INFLUX, api_param_get(req, "precision"), "influx_http");
}

static api_status remote_write(api_req *req, void *ud)
{
    const char *ct = api_req_header(req, "Content-Type");

    (void)ud;
    if (ct != NULL && strncmp(ct, "application/x-protobuf", 22) != 0) {
        api_error(req, 400, "bad_data",
                  "remote write needs Content-Type application/x-protobuf, got \"%.60s\"", ct);
        return API_DONE;
    }
    return do_write(req, COL_FMT_REMOTE_WRITE, NULL, "remote_write");
}

static api_status import(api_req *req, void *ud)
{
    (void)ud;
    return do_write(req, COL_FMT_JSONL, NULL, "import");
}

/* ---- Export ---------------------------------------------------------------------------- */

typedef struct export_state {
    store *st;
    uint64_t *ids;
    size_t n, next;
    int64_t start_ms, end_ms;
} export_state;

static void export_free(void *ud)
{
    export_state *x = ud;

    iocd_free(x->ids);
    iocd_free(x);
}

typedef struct label_out {
    iocd_buf *b;
    bool first;
} label_out;

static iocd_err put_label(void *ud, const char *name, size_t name_len, const char *value,
                          size_t value_len)
{
    label_out *o = ud;
    iocd_err err = o->first ? IOCD_OK : iocd_buf_putc(o->b, ',');

    o->first = false;
    if (err == IOCD_OK)
        err = iocd_buf_json_str(o->b, name, name_len);
    if (err == IOCD_OK)
        err = iocd_buf_putc(o->b, ':');
    if (err == IOCD_OK)
        err = iocd_buf_json_str(o->b, value, value_len);
    return err;
}

static iocd_err export_one(export_state *x, uint64_t id, iocd_buf *out)
{
    iocd_sample *s = NULL;
    size_t n = 0, i;
    label_out lo = { out, true };
    iocd_err err = store_read(x->st, id, x->start_ms, x->end_ms, &s, &n);

    if (err == IOCD_ENOTFOUND)
        return IOCD_OK;
    if (err != IOCD_OK || n == 0) {
        iocd_free(s);
        return err;
    }
    err = iocd_buf_puts(out, "{\"metric\":{");
    if (err == IOCD_OK)
        err = store_series_labels(x->st, id, put_label, &lo);
    if (err == IOCD_OK)
        err = iocd_buf_puts(out, "},\"values\":[");
    for (i = 0; err == IOCD_OK && i < n; i++) {
        if (i > 0)
            err = iocd_buf_putc(out, ',');
        if (err != IOCD_OK)
            break;
        if (isfinite(s[i].v))
            err = iocd_buf_float(out, s[i].v);
        else
            err = iocd_buf_puts(out, isnan(s[i].v) ? "\"NaN\""
                                     : s[i].v > 0  ? "\"+Inf\""
                                                   : "\"-Inf\"");
    }
    if (err == IOCD_OK)
        err = iocd_buf_puts(out, "],\"timestamps\":[");
    for (i = 0; err == IOCD_OK && i < n; i++)
        err = iocd_buf_printf(out, "%s%lld", i > 0 ? "," : "", (long long)s[i].t_ms);
    if (err == IOCD_OK)
        err = iocd_buf_puts(out, "]}\n");
    iocd_free(s);
    return err;
}

static iocd_err export_next(void *ud, iocd_buf *out, bool *done)
{
    export_state *x = ud;
    size_t stop = x->next + EXPORT_SERIES_PER_CHUNK;
    iocd_err err = IOCD_OK;

    while (err == IOCD_OK && x->next < x->n && x->next < stop)
        err = export_one(x, x->ids[x->next++], out);
    *done = x->next >= x->n;
    return err;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static bool parse_time_param(api_req *req, const char *key, int64_t *out)
{
    const char *v = api_param_get(req, key);

    if (v == NULL || v[0] == '\0')
        return true;
    if (query_time_parse(v, out) != IOCD_OK) {
        api_error(req, 400, "bad_data",
                  "invalid parameter \"%s\": cannot parse \"%.64s\" as a "
                  "Unix time or RFC 3339 time",
                  key, v);
        return false;
    }
    return true;
}

/* Reads match[] (query string or form body) and selects the union of their series, sorted
 * and without repeats. On failure the reply is already written and false is returned. */
static bool select_matches(api_req *req, store *st, uint64_t **ids_out, size_t *n_out)
{
    const char *ct = api_req_header(req, "Content-Type");
    uint64_t *all = NULL;
    size_t n_all = 0, i, k;
    iocd_err err = IOCD_OK;
    char why[256];

    if ((req->method == API_POST || req->method == API_PUT) && ct != NULL &&
        strncmp(ct, "application/x-www-form-urlencoded", 33) == 0 &&
        api_params_parse_form(req, req->body.data != NULL ? req->body.data : "", req->body.len) !=
            IOCD_OK) {
        api_error(req, 400, "bad_data", "cannot parse the form body");
        return false;
    }
    if (api_param_get(req, "match[]") == NULL) {
        api_error(req, 400, "bad_data",
                  "missing parameter \"match[]\" (a series selector, e.g. "
                  "match[]={__name__=~\".+\"})");
        return false;
    }
    for (i = 0; i < req->n_params && err == IOCD_OK; i++) {
        query_selector sel;
        uint64_t *ids = NULL, *grown;
        size_t n = 0;
        if (strcmp(req->params[i].key, "match[]") != 0)
            continue;
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
    if (err != IOCD_OK) {
        iocd_free(all);
        api_error(req, 503, "unavailable", "selecting series: %s", iocd_strerror(err));
        return false;
    }
    if (all == NULL)
        all = iocd_malloc(sizeof(*all));
    if (all == NULL) {
        api_error(req, 503, "unavailable", "out of memory");
        return false;
    }
    iocd_qsort(all, n_all, sizeof(*all), cmp_u64);
    for (i = 0, k = 0; i < n_all; i++)
        if (k == 0 || all[k - 1] != all[i])
            all[k++] = all[i];
    *ids_out = all;
    *n_out = k;
    return true;
}

static api_status export(api_req *req, void *ud)
{
    store *st = atomic_load(&req->srv->st);
    export_state *x = NULL;

    (void)ud;
    if (st == NULL) {
        api_error(req, 503, "unavailable", "the store is opening; try again");
        return API_DONE;
    }
    x = iocd_calloc(1, sizeof(*x));
    if (x == NULL) {
        api_error(req, 503, "unavailable", "out of memory");
        return API_DONE;
    }
    x->st = st;
    x->start_ms = INT64_MIN;
    x->end_ms = INT64_MAX;
    if (!parse_time_param(req, "start", &x->start_ms) ||
        !parse_time_param(req, "end", &x->end_ms) || !select_matches(req, st, &x->ids, &x->n)) {
        export_free(x);
        return API_DONE;
    }
    req->resp.status = 200;
    req->resp.content_type = "application/stream+json";
    req->resp.stream = export_next;
    req->resp.stream_ud = x;
    req->resp.stream_free = export_free;
    return API_DONE;
}

/* Prometheus' admin API: deletes whole series (start/end are not supported: iocd deletes a
 * series entirely, and says so). */
static api_status delete_series(api_req *req, void *ud)
{
    store *st = atomic_load(&req->srv->st);
    uint64_t *ids = NULL;
    size_t n = 0;
    iocd_err err;

    (void)ud;
    if (st == NULL) {
        api_error(req, 503, "unavailable", "the store is opening; try again");
        return API_DONE;
    }
    if (api_param_get(req, "start") != NULL || api_param_get(req, "end") != NULL) {
        api_error(req, 400, "bad_data",
                  "start and end are not supported: delete_series removes "
                  "whole series");
        return API_DONE;
    }
    if (!select_matches(req, st, &ids, &n))
        return API_DONE;
    err = store_delete_series(st, ids, n);
    iocd_free(ids);
    if (err != IOCD_OK) {
        api_error(req, 503, "unavailable", "deleting series: %s", iocd_strerror(err));
        return API_DONE;
    }
    log_info("api", "delete_series", "series=%zu", n);
    iocd_buf_reset(&req->resp.body);
    req->resp.status = 204;
    req->resp.content_type = NULL;
    return API_DONE;
}

iocd_err api_write_register(api_server *srv)
{
    iocd_err err = api_route_add(srv, API_POST, "/write", COL_ROLE_WRITE, influx_v1, NULL);

    if (err == IOCD_OK)
        err = api_route_add(srv, API_POST, "/api/v2/write", COL_ROLE_WRITE, influx_v1, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_POST, "/api/v1/write", COL_ROLE_WRITE, remote_write, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_POST, "/api/v1/import", COL_ROLE_WRITE, import, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_GET | API_POST, "/api/v1/export", COL_ROLE_READ, export, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_POST | API_PUT, "/api/v1/admin/tsdb/delete_series",
                            COL_ROLE_ADMIN, delete_series, NULL);
    return err;
}
