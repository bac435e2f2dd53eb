/* Answers and the request log line, shared by every route of the proxy: JSON answers, errors
 * from the error table (proxy/errors.h) in the OpenAI shape, and one log line plus the route's
 * counters per request.
 *
 * Threads: the owning worker's loop thread only. Every respond_* call logs first (the request
 * is reset once its response is complete) and then answers the whole request on c. */
#ifndef VP_PROXY_RESPOND_H
#define VP_PROXY_RESPOND_H

#include <stddef.h>
#include <stdint.h>

#include "http/server.h"
#include "proxy/app.h"
#include "proxy/errors.h"

/* The request's log line (no prompt or completion text) and its counters. status <= 0: the
 * client went away first (logged as 499). upstream_status <= 0: no engine answer. */
void respond_log(app_worker_t *aw, const http_req_t *req, int route, int status, int upstream_status,
                 uint64_t bytes_out, const char *chat_id);
void respond_json(app_worker_t *aw, conn_t *c, http_req_t *req, int route, int status,
                  const char *json, size_t len);
/* The table's answer for e; message NULL uses the table's message. */
void respond_error(app_worker_t *aw, conn_t *c, http_req_t *req, int route, app_error_t e,
                   const char *message);
/* The same with "Retry-After: <retry_after seconds>" (429, 503 of the engine pool). */
void respond_error_retry(app_worker_t *aw, conn_t *c, http_req_t *req, int route, app_error_t e,
                         const char *message, unsigned retry_after);
/* Only writes the error answer (no log line): for the transport's protocol rejections. */
void respond_error_unlogged(conn_t *c, app_error_t e, const char *message);

#endif
