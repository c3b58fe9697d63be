/* api/api.h - the HTTP API (libmicrohttpd): ingest endpoints, export, operational endpoints,
 * bearer-token roles. This header shows no libmicrohttpd type.
 * Threads: api_start/api_stop from the main thread; handlers run on the HTTP worker pool. */
#ifndef IOCD_API_H
#define IOCD_API_H

#include "collector/collector.h"

typedef struct api_server api_server;

/* Binds cfg->http_addr (port 0 = any free port) and starts the worker threads. Until
 * api_set_backend is called, /-/ready answers 503 and data endpoints 503.
 * Errors: IOCD_EADDRINUSE / IOCD_EINVAL / IOCD_EIO with "http: ADDR: reason" in errbuf. */
iocd_err api_start(const col_config *cfg, api_server **out, char *errbuf, size_t errlen);
/* The bound address, e.g. "127.0.0.1:9470". Borrowed. */
const char *api_addr(const api_server *srv);
/* Connects the store and the ingest pipeline (both outlive srv's use of them, i.e. until
 * api_stop returns); /-/ready turns 200. */
void api_set_backend(api_server *srv, store *st, col_ingest *ing);
/* Connects incidents (/api/v1/incidents...). */
void api_set_alerts(api_server *srv, alert_center *ac);
/* Connects the alert rule engine (/api/v1/rules, /api/v1/alerts, POST /-/reload). */
void api_set_rules(api_server *srv, rule_engine *rules);
/* Stops accepting, lets requests in flight finish for up to grace_ms, then stops and frees.
 * NULL is a no-op. */
void api_stop(api_server *srv, int64_t grace_ms);

#endif
