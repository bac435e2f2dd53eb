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
void respond_log(app_worker_t *aw, http_req_t *req, int route, int status, int upstream_status,
                 uint64_t bytes_out, const char *chat_id);
/* The request's id (req->id; made now when unset): the client's X-Request-Id and '-' when that
 * is a short plain value (1 to 64 of A-Z a-z 0-9 - . _ ~), then 32 random hex from the proxy.
 * Sent back in X-Request-Id, in the request's log line, and to the engine as its request id
 * (vLLM's completion id), so no client chooses a record's key. */
const char *respond_request_id(http_req_t *req);
void respond_json(app_worker_t *aw, conn_t *c, http_req_t *req, int route, int status,
                  const char *json, size_t len);
/* The table's answer for e; message NULL uses the table's message. */
void respond_error(app_worker_t *aw, conn_t *c, http_req_t *req, int route, app_error_t e,
                   const char *message);
/* The same with Retry-After: retry_s (0: none), for 429 and 503 answers. */
void respond_error_retry(app_worker_t *aw, conn_t *c, http_req_t *req, int route, app_error_t e,
                         const char *message, unsigned retry_s);
/* Only writes the error answer (no log line): for the transport's protocol rejections.
 * Returns the body's length. */
size_t respond_error_unlogged(conn_t *c, app_error_t e, const char *message);

#endif
