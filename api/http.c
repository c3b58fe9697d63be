/* api/http.c - the HTTP server on libmicrohttpd; the only file that sees <microhttpd.h>.
 * Epoll with an internal thread pool (--http-threads); every request goes through three
 * calls of the access handler: headers (we only allocate state: queueing a response here
 * would cost keep-alive, LIBRARIES.md), body chunks (accumulated up to --http-body-max; the
 * rest is discarded and answered 413), and the final call, where the request is dispatched.
 * A handler that must wait (a write waiting for its group commit) is suspended and resumed
 * from the writer's completion, so no thread blocks on disk.
 * We create, bind and listen the socket ourselves to report "address in use" precisely. */
#include "api/api_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#define MHD_MEMORY_LIMIT (256 * 1024)

/* MHD passes its own printf format; clang cannot see that through the callback type. */
#define BODY_RESERVE_MAX (8u << 20) /* bytes reserved up front for a request body */

static void on_mhd_log(void *cls, const char *fmt, va_list ap) IOCD_PRINTF(2, 0);

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    log_warn("api", "libmicrohttpd", "detail=%s", msg);
}

static unsigned method_bit(const char *m)
{
    if (strcmp(m, "GET") == 0)
        return API_GET;
    if (strcmp(m, "POST") == 0)
        return API_POST;
    if (strcmp(m, "PUT") == 0)
        return API_PUT;
    if (strcmp(m, "DELETE") == 0)
        return API_DELETE;
    if (strcmp(m, "HEAD") == 0)
        return API_HEAD;
    return 0;
}

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    api_req *req = cls;

    (void)kind;
    if (value == NULL)
        value = "";
    return api_param_add(req, key, strlen(key), value, strlen(value)) == IOCD_OK ? MHD_YES : MHD_NO;
}

const char *api_req_header(const api_req *req, const char *name)
{
    return MHD_lookup_connection_value((struct MHD_Connection *)req->conn, MHD_HEADER_KIND, name);
}

static void req_free(api_req *req)
{
    size_t i;

    if (req == NULL)
        return;
    for (i = 0; i < req->n_params; i++) {
        iocd_free(req->params[i].key);
        iocd_free(req->params[i].value);
    }
    iocd_free(req->params);
    iocd_free(req->path);
    iocd_buf_fini(&req->body);
    iocd_buf_fini(&req->inflated);
    iocd_buf_fini(&req->resp.body);
    if (req->resp.stream_free != NULL)
        req->resp.stream_free(req->resp.stream_ud);
    pthread_mutex_destroy(&req->mu);
    iocd_free(req);
}

void api_req_resume(api_req *req)
{
    pthread_mutex_lock(&req->mu);
    req->completed = true;
    if (req->suspended) {
        req->suspended = false;
        MHD_resume_connection((struct MHD_Connection *)req->conn);
    }
    pthread_mutex_unlock(&req->mu);
}

/* ---- Streaming bodies ------------------------------------------------------------------ */

typedef struct stream_state {
    api_stream_fn fn;
    void *ud;
    void (*free_fn)(void *ud);
    iocd_buf pending;
    size_t off;
    bool done;
} stream_state;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_state *s = cls;
    size_t n;

    (void)pos;
    while (s->off == s->pending.len) {
        if (s->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        iocd_buf_reset(&s->pending);
        s->off = 0;
        if (s->fn(s->ud, &s->pending, &s->done) != IOCD_OK)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    n = s->pending.len - s->off;
    if (n > max)
        n = max;
    memcpy(buf, s->pending.data + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

static void stream_end(void *cls)
{
    stream_state *s = cls;

    if (s->free_fn != NULL)
        s->free_fn(s->ud);
    iocd_buf_fini(&s->pending);
    iocd_free(s);
}

/* ---- Replies --------------------------------------------------------------------------- */

static enum MHD_Result send_reply(struct MHD_Connection *conn, api_req *req)
{
    struct MHD_Response *r = NULL;
    enum MHD_Result ret;

    if (req->resp.status == 0)
        api_error(req, 500, "internal", "handler produced no response");
    if (req->resp.stream != NULL) {
        stream_state *s = iocd_calloc(1, sizeof(*s));
        if (s != NULL) {
            s->fn = req->resp.stream;
            s->ud = req->resp.stream_ud;
            s->free_fn = req->resp.stream_free;
            iocd_buf_init(&s->pending, 0);
            r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, stream_read, s,
                                                  stream_end);
            if (r == NULL)
                stream_end(s);
        }
        req->resp.stream = NULL;
        req->resp.stream_free = NULL; /* owned by the stream now (or freed) */
    } else {
        r = MHD_create_response_from_buffer(
            req->resp.body.len, req->resp.body.data != NULL ? req->resp.body.data : (char *)"",
            MHD_RESPMEM_MUST_COPY);
    }
    if (r == NULL)
        return MHD_NO;
    if (req->resp.content_type != NULL)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, req->resp.content_type);
    if (req->resp.retry_after[0] != '\0')
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, req->resp.retry_after);
    if (req->resp.allow[0] != '\0')
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, req->resp.allow);
    if (req->resp.www_authenticate)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"iocd\"");
    ret = MHD_queue_response(conn, (unsigned)req->resp.status, r);
    MHD_destroy_response(r);
    api_observe(req);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    api_server *srv = cls;
    api_req *req = *con_cls;
    api_status st;

    (void)version;
    if (req == NULL) {
        /* First call: headers only. */
        const char *cl;
        req = iocd_calloc(1, sizeof(*req));
        if (req == NULL)
            return MHD_NO;
        pthread_mutex_init(&req->mu, NULL);
        req->srv = srv;
        req->conn = conn;
        req->start_ns = iocd_mono_ns();
        req->method = method_bit(method);
        snprintf(req->method_text, sizeof(req->method_text), "%s", method);
        req->path = iocd_strdup(url);
        iocd_buf_init(&req->body, (size_t)srv->cfg->http_body_max);
        iocd_buf_init(&req->inflated, 0);
        iocd_buf_init(&req->resp.body, 0);
        *con_cls = req;
        atomic_fetch_add(&srv->in_flight, 1);
        iocd_metric_add(srv->m_in_flight, 1);
        if (req->path == NULL)
            return MHD_NO;
        cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL && strtoull(cl, NULL, 10) > (unsigned long long)srv->cfg->http_body_max) {
            /* Refuse before reading the body (the connection closes after this). */
            iocd_metric_add(iocd_metric_get("iocd_http_request_body_rejected_total",
                                            "Request bodies refused, by reason.",
                                            IOCD_METRIC_COUNTER, "reason=\"too_large\"", NULL, 0),
                            1);
            api_error(req, 413, "bad_data", "request body of %s bytes is larger than %lld", cl,
                      (long long)srv->cfg->http_body_max);
            req->handled = true;
            atomic_fetch_add(&srv->handling, 1);
            return send_reply(conn, req);
        }
        /* The body arrives in pieces: room for all of it at once saves growing the buffer
         * (and copying what came so far) a dozen times for a 5,000-line batch. Up to 8 MiB
         * only: a Content-Length is a claim, and larger bodies can grow as they come. */
        if (cl != NULL) {
            unsigned long long want = strtoull(cl, NULL, 10);
            if (want > 0 && want <= BODY_RESERVE_MAX)
                (void)iocd_buf_reserve(&req->body, (size_t)want);
        }
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        if (!req->body_too_big &&
            iocd_buf_append(&req->body, upload_data, *upload_data_size) != IOCD_OK) {
            req->body_too_big = true;
            iocd_buf_fini(&req->body);
            iocd_metric_add(iocd_metric_get("iocd_http_request_body_rejected_total",
                                            "Request bodies refused, by reason.",
                                            IOCD_METRIC_COUNTER, "reason=\"too_large\"", NULL, 0),
                            1);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->handled) {
        /* Called again after a resume: the response is ready. */
        bool ready;
        pthread_mutex_lock(&req->mu);
        ready = req->completed;
        pthread_mutex_unlock(&req->mu);
        return ready ? send_reply(conn, req) : MHD_YES;
    }
    req->handled = true;
    atomic_fetch_add(&srv->handling, 1);
    if (MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_arg, req) < 0)
        return MHD_NO;
    st = api_dispatch(
        req, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION));
    if (st == API_DONE)
        return send_reply(conn, req);
    pthread_mutex_lock(&req->mu);
    if (req->completed) {
        pthread_mutex_unlock(&req->mu);
        return send_reply(conn, req);
    }
    req->suspended = true;
    MHD_suspend_connection(conn);
    pthread_mutex_unlock(&req->mu);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    api_server *srv = cls;
    api_req *req = *con_cls;

    (void)conn;
    (void)toe;
    if (req == NULL)
        return;
    if (req->handled)
        atomic_fetch_sub(&srv->handling, 1);
    req_free(req);
    *con_cls = NULL;
    atomic_fetch_sub(&srv->in_flight, 1);
    iocd_metric_add(srv->m_in_flight, -1);
}

/* ---- Lifetime -------------------------------------------------------------------------- */

static iocd_err listen_on(api_server *srv, const char *addr, bool *ipv6, char *errbuf,
                          size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char host[256];
    int port, fd, one = 1, e;

    memset(&ss, 0, sizeof(ss));
    if (iocd_addr_split(addr, host, sizeof(host), &port) != IOCD_OK) {
        snprintf(errbuf, errlen, "http: invalid address \"%s\" (expected ADDR:PORT)", addr);
        return IOCD_EINVAL;
    }
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    *ipv6 = strchr(host, ':') != NULL;
    if (*ipv6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            goto bad;
        len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
            goto bad;
        len = sizeof(*s4);
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        e = errno;
        snprintf(errbuf, errlen, "http: socket: %s", strerror(e));
        return iocd_err_from_errno(e);
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 1024) != 0) {
        e = errno;
        snprintf(errbuf, errlen, "http: cannot listen on %s: %s", addr, strerror(e));
        close(fd);
        return iocd_err_from_errno(e);
    }
    len = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &len);
    if (*ipv6) {
        char h[64];
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, h, sizeof(h));
        snprintf(srv->addr, sizeof(srv->addr), "[%s]:%u", h,
                 ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
    } else {
        char h[32];
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, h, sizeof(h));
        snprintf(srv->addr, sizeof(srv->addr), "%s:%u", h,
                 ntohs(((struct sockaddr_in *)&ss)->sin_port));
    }
    srv->listen_fd = fd;
    return IOCD_OK;
bad:
    snprintf(errbuf, errlen, "http: invalid address \"%s\" (expected ADDR:PORT)", addr);
    return IOCD_EINVAL;
}

static bool is_loopback(const char *addr)
{
    return strncmp(addr, "127.", 4) == 0 || strncmp(addr, "[::1]", 5) == 0;
}

iocd_err api_start(const col_config *cfg, api_server **out, char *errbuf, size_t errlen)
{
    api_server *srv = iocd_calloc(1, sizeof(*srv));
    unsigned flags;
    bool ipv6 = false;
    iocd_err err;

    if (srv == NULL)
        return IOCD_ENOMEM;
    srv->cfg = cfg;
    srv->listen_fd = -1;
    srv->m_in_flight = iocd_gauge("iocd_http_requests_in_flight", "HTTP requests being served.");
    err = api_ops_register(srv);
    if (err == IOCD_OK)
        err = api_write_register(srv);
    if (err == IOCD_OK)
        err = api_query_register(srv);
    if (err == IOCD_OK)
        err = api_rules_register(srv);
    if (err == IOCD_OK)
        err = api_incidents_register(srv);
    if (err == IOCD_OK)
        err = api_alertmanager_register(srv);
    if (err == IOCD_OK)
        err = api_console_register(srv);
    if (err != IOCD_OK) {
        snprintf(errbuf, errlen, "http: %s", iocd_strerror(err));
        goto fail;
    }
    err = listen_on(srv, cfg->http_addr, &ipv6, errbuf, errlen);
    if (err != IOCD_OK)
        goto fail;
    flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
            (ipv6 ? MHD_USE_IPv6 : 0);
    srv->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv,
        MHD_OPTION_LISTEN_SOCKET, srv->listen_fd, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)cfg->http_threads, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)((cfg->http_timeout_ms + 999) / 1000), MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)cfg->http_conn_max, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MHD_MEMORY_LIMIT,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_END);
    if (srv->mhd == NULL) {
        snprintf(errbuf, errlen, "http: %s: cannot start the HTTP server", cfg->http_addr);
        err = IOCD_EIO;
        goto fail;
    }
    log_info("api", "http listening", "addr=%s threads=%lld", srv->addr,
             (long long)cfg->http_threads);
    if (!is_loopback(srv->addr) && cfg->n_tokens == 0)
        log_warn("api",
                 "HTTP API is open to the network without tokens: anyone who can reach "
                 "it can write and administer. Configure tokens (docs/CONFIG.md).",
                 "addr=%s", srv->addr);
    *out = srv;
    return IOCD_OK;
fail:
    api_query_stop(srv);
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    while (srv->routes != NULL) {
        api_route *next = srv->routes->next;
        iocd_free(srv->routes);
        srv->routes = next;
    }
    iocd_free(srv);
    return err;
}

const char *api_addr(const api_server *srv)
{
    return srv->addr;
}

void api_set_backend(api_server *srv, store *st, col_ingest *ing)
{
    atomic_store(&srv->ing, ing);
    atomic_store(&srv->st, st);
}

void api_set_alerts(api_server *srv, alert_center *ac)
{
    atomic_store(&srv->alerts, ac);
}

void api_set_rules(api_server *srv, rule_engine *rules)
{
    atomic_store(&srv->rules, rules);
}

void api_stop(api_server *srv, int64_t grace_ms)
{
    int64_t deadline;
    MHD_socket lfd;

    if (srv == NULL)
        return;
    /* The quiesced listen socket is closed only after MHD_stop_daemon: MHD's threads may
     * still use it until then (its documentation asks so; closing it here let the number be
     * reused while a worker still watched it). */
    lfd = MHD_quiesce_daemon(srv->mhd);
    deadline = iocd_mono_ns() + grace_ms * 1000000;
    /* Requests being handled are finished; a client still sending its body is cut off. */
    while (atomic_load(&srv->handling) > 0 && iocd_mono_ns() < deadline) {
        struct timespec ts = { 0, 5000000 };
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&srv->handling) > 0)
        log_warn("api", "stopping with requests still in flight", "count=%d",
                 atomic_load(&srv->handling));
    api_query_stop(srv); /* drains queued queries: their requests are resumed first */
    MHD_stop_daemon(srv->mhd);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    while (srv->routes != NULL) {
        api_route *next = srv->routes->next;
        iocd_free(srv->routes);
        srv->routes = next;
    }
    iocd_free(srv);
}
