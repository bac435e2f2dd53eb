/* GET /livez and GET /healthz (no authentication; docs/API.md).
 *
 * /livez: the process is serving (an event loop answered). /healthz: ready for traffic: at
 * least one engine is up (http/engines.h) and an attestation report can be produced
 * (attest_service_ready); 503 naming what is missing otherwise. When attestation is what is
 * missing, one background collection is queued on the thread pool (at most one in the
 * process at a time), so that a recovered provider makes /healthz pass again without a client
 * asking for a report.
 *
 * Threads: the owning worker's loop; the collection runs on libuv's thread pool. */
#ifndef VP_PROXY_HEALTH_ROUTE_H
#define VP_PROXY_HEALTH_ROUTE_H

#include "http/server.h"
#include "proxy/app.h"

void livez_route(app_worker_t *aw, conn_t *c, http_req_t *req, int route);
void healthz_route(app_worker_t *aw, conn_t *c, http_req_t *req, int route);

#endif
