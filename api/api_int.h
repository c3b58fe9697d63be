/* api/api_int.h - shared by the files of api/: requests, responses and routes, free of
 * libmicrohttpd types (api/http.c is the only file that sees them). */
#ifndef IOCD_API_INT_H
#define IOCD_API_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "api/api.h"

enum {
    API_GET = 1,
    API_POST = 2,
    API_PUT = 4,
    API_DELETE = 8,
    API_HEAD = 16,
};

typedef enum api_status {
    API_DONE,      /* the response is ready */
    API_SUSPENDED, /* the handler will call api_req_resume later, from any thread */
} api_status;

typedef struct api_param {
    char *key;
    char *value;
} api_param;

/* Produces the next piece of a streamed body into out; sets *done at the end. Returning an
 * error ends the stream early (the client sees a truncated chunked body). */
typedef iocd_err (*api_stream_fn)(void *ud, iocd_buf *out, bool *done);

typedef struct api_resp {
    int status;
    const char *content_type;
    iocd_buf body;
    char retry_after[16]; /* "" or seconds */
    char allow[64];       /* "" or the Allow header of a 405 */
    bool www_authenticate;
    api_stream_fn stream; /* when set, body is produced by stream (chunked) */
    void *stream_ud;
    void (*stream_free)(void *ud);
} api_resp;

typedef struct api_route api_route;
typedef struct api_req api_req;
typedef struct api_queries api_queries; /* the query worker pool (api/query.c) */

struct api_req {
    api_server *srv;
    void *conn; /* the libmicrohttpd connection */
    unsigned method;
    char method_text[16];
    char *path;
    api_param *params;
    size_t n_params;
    iocd_buf body;
    iocd_buf inflated; /* a compressed write body, inflated: lives until the write is done */
    bool body_too_big;
    const api_route *route;
    api_resp resp;
    int64_t start_ns;
    /* Suspension: see api_req_resume. */
    pthread_mutex_t mu;
    bool handled, suspended, completed;
};

typedef api_status (*api_handler_fn)(api_req *req, void *ud);

struct api_route {
    unsigned methods;
    const char *path; /* exact, or a prefix ending in '*' */
    col_role role;    /* COL_ROLE_NONE: public */
    api_handler_fn fn;
    void *ud;
    api_route *next;
};

struct api_server {
    const col_config *cfg;
    void *mhd; /* struct MHD_Daemon */
    int listen_fd;
    char addr[80];
    api_route *routes;
    _Atomic(store *) st;
    _Atomic(col_ingest *) ing;
    atomic_int in_flight; /* requests whose headers arrived */
    atomic_int handling;  /* requests dispatched and not yet answered: a stop waits for these */
    iocd_metric *m_in_flight;
    api_queries *queries;
    _Atomic(rule_engine *) rules;
    _Atomic(alert_center *) alerts;
};

/* ---- Routing and replies (api/router.c) ------------------------------------------------ */

iocd_err api_route_add(api_server *srv, unsigned methods, const char *path, col_role role,
                       api_handler_fn fn, void *ud);
/* Finds the route for path; *wrong_method is set when the path exists but not for method. */
const api_route *api_route_find(const api_server *srv, const char *path, unsigned method,
                                bool *wrong_method, unsigned *allowed);
/* Decides whether the request may proceed: fills a 401/403 reply and returns false if not. */
bool api_authorize(api_req *req, const char *authorization);
/* Runs the request: routing, auth, the handler. Returns what the handler returned. */
api_status api_dispatch(api_req *req, const char *authorization);
/* Marks a suspended request complete (resp filled) and wakes its connection. Any thread. */
void api_req_resume(api_req *req);

/* The first value of a parameter, or NULL. */
const char *api_param_get(const api_req *req, const char *key);
/* A Prometheus-shaped error: {"status":"error","errorType":type,"error":msg}. */
void api_error(api_req *req, int status, const char *type, const char *fmt, ...) IOCD_PRINTF(4, 5);
void api_reply_text(api_req *req, int status, const char *content_type, const char *text);
/* Request header lookup (api/http.c). NULL when absent. */
const char *api_req_header(const api_req *req, const char *name);
/* Appends application/x-www-form-urlencoded pairs of text to the request's parameters. */
iocd_err api_params_parse_form(api_req *req, const char *text, size_t len);
iocd_err api_param_add(api_req *req, const char *key, size_t klen, const char *value, size_t vlen);
/* Records the request in iocd_http_requests_total and the latency histogram. */
void api_observe(const api_req *req);

/* ---- Bodies (api/gzip.c) ---------------------------------------------------------------- */

/* Inflates a gzip (or zlib deflate) body into out, capped at max_out bytes.
 * Errors: IOCD_EPARSE (corrupt), IOCD_ETOOBIG (over the cap), IOCD_ENOMEM. */
iocd_err api_inflate(const void *in, size_t len, bool gzip, size_t max_out, iocd_buf *out,
                     char *errbuf, size_t errlen);

/* ---- Endpoint groups -------------------------------------------------------------------- */

iocd_err api_ops_register(api_server *srv);   /* api/ops.c */
iocd_err api_write_register(api_server *srv); /* api/write.c */
/* api/query.c: the query API and its worker pool; stop joins the workers (after the
 * requests in flight are answered). */
iocd_err api_query_register(api_server *srv);
void api_query_stop(api_server *srv);
iocd_err api_rules_register(api_server *srv);     /* api/rules.c */
iocd_err api_incidents_register(api_server *srv); /* api/incidents.c */
iocd_err api_console_register(api_server *srv);   /* api/console.c: the web console at / */
/* api/alertmanager.c: Alertmanager's API v2 (alerts, silences, status) */
iocd_err api_alertmanager_register(api_server *srv);

#endif
