/* GET /v1/signature/{id}: the signature record of a completed answer, for one algorithm
 * (signing_algo=ecdsa|ed25519), from Redis when configured, else (or on a miss) from memory.
 * Threads: the worker's loop thread. */
#ifndef VP_PROXY_SIGNATURE_ROUTE_H
#define VP_PROXY_SIGNATURE_ROUTE_H

#include "http/server.h"
#include "proxy/app.h"

/* Answers the request, now or when Redis has answered (the connection's owner meanwhile). */
void signature_route(app_worker_t *aw, conn_t *c, http_req_t *req);

#endif
