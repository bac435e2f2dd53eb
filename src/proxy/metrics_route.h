/* GET /metrics: this process's metrics in the Prometheus text format (no auth).
 * GET /v1/metrics: the same, followed by the
 * engine's own /metrics (streamed through), or by a comment saying why the engine's are
 * missing. Always 200: the proxy's own metrics are served when the engine is down.
 * Threads: the worker's loop thread. */
#ifndef VP_PROXY_METRICS_ROUTE_H
#define VP_PROXY_METRICS_ROUTE_H

#include "http/server.h"
#include "proxy/app.h"

void metrics_route(app_worker_t *aw, conn_t *c, http_req_t *req);

#endif
