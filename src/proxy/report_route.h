/* GET /v1/attestation/report: nonce, signing_algo, signing_address and include_tls_fingerprint
 * checked on the loop; the report built on the libuv thread pool by the attestation service.
 * Threads: the worker's loop thread (the pool job touches only the service). */
#ifndef VP_PROXY_REPORT_ROUTE_H
#define VP_PROXY_REPORT_ROUTE_H

#include "http/server.h"
#include "proxy/app.h"

/* Answers the request, now (bad parameters) or when the pool job is done (the connection's
 * owner meanwhile). */
void report_route(app_worker_t *aw, conn_t *c, http_req_t *req);
/* GET /v1/aci/attestation?nonce= (the same pool, admission and metrics route). */
void aci_attestation_route(app_worker_t *aw, conn_t *c, http_req_t *req);

#endif
