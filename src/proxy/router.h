/* The proxy's HTTP handler: routes a request (path and method), authenticates it (bearer
 * token, sha256 and constant-time compare; an unauthenticated body is refused before it is
 * read), answers the small local routes (/, /version) and hands the others to their owners:
 * relay.h (engine routes), signature_route.h, report_route.h, metrics_route.h.
 * Threads: each worker's loop thread; worker_user() of the worker is its app_worker_t. */
#ifndef VP_PROXY_ROUTER_H
#define VP_PROXY_ROUTER_H

#include "http/server.h"

extern const http_handler_t app_http_handler;

#endif
