/* Upstream HTTP/1.1 client: one pool per worker loop over the engines of an engine set
 * (http/engines.h), each engine with its own keep-alive connections, over TCP or a Unix
 * socket. Each exchange goes to the engine with the fewest outstanding requests (all workers
 * together; ties broken at random) among those up and under their in-flight budget; when
 * every engine up is at its budget the exchange waits in a bounded queue. A connection that
 * cannot be made (refused, connect timeout: no byte of the request went out) moves the
 * exchange to another engine up, once. Responses are parsed with llhttp and delivered as a
 * head and de-chunked body pieces as they arrive; nothing is buffered here.
 *
 * Threads: a pool and its exchanges belong to one loop thread.
 * Ownership: the caller keeps `body` alive until on_done ran or it called upstream_cancel.
 * The upstream_req_t pointer is invalid after on_done returned or after upstream_cancel. */
#ifndef VP_HTTP_UPSTREAM_H
#define VP_HTTP_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http/server.h"

enum upstream_err {
    UPS_OK = 0,
    UPS_E_CONNECT,        /* could not connect (refused, unreachable) */
    UPS_E_TIMEOUT,        /* connect, first byte or total timeout */
    UPS_E_CLOSED,         /* connection closed before the response was complete */
    UPS_E_PROTOCOL,       /* malformed response */
    UPS_E_NOMEM,
    UPS_E_NO_ENGINE,      /* no engine is up */
    UPS_E_BUSY,           /* every engine up is at its in-flight budget; the queue is full or
                           * the wait was too long */
};

typedef struct upstream_target {
    int is_unix;
    char host[256];       /* for TCP; also the Host header */
    int port;
    char path[108];       /* for Unix sockets */
    struct sockaddr_storage addr;
    char auth_header[512];            /* "Authorization: Bearer ...\r\n" or "" */
    unsigned connect_timeout_ms, first_byte_timeout_ms, total_timeout_ms;
} upstream_target_t;

/* Parses "http://host[:port][/]" or "unix:/path"; resolves the host (blocking: call at
 * start-up only). 0 or -1 with a message in err. */
int upstream_target_parse(upstream_target_t *t, const char *url, char *err, size_t errlen);

struct engine_set;
typedef struct upstream_pool upstream_pool_t;
typedef struct upstream_req upstream_req_t;

/* on_head's content_length: the engine's Content-Length, UPSTREAM_CL_NONE (chunked, or no
 * body), or UPSTREAM_CL_EOF (the body ends when the engine closes: a cut cannot be told
 * from the end). Interim 1xx responses are skipped, never reported. */
#define UPSTREAM_CL_NONE (-1)
#define UPSTREAM_CL_EOF (-2)
/* The engine's Content-Type is passed on whole up to this many bytes; a longer one, or two
 * of them, make the answer malformed (UPS_E_PROTOCOL), never a truncated or replaced type. */
#define UPSTREAM_CTYPE_MAX 256

/* What the engine may answer (else UPS_E_PROTOCOL, before on_head): never 101 (we ask for no
 * upgrade); 1xx interim heads are skipped; a 204/304 ends at its head whatever framing it
 * claims (RFC 9112 6.3), its connection is not reused, and on_head gets UPSTREAM_CL_NONE. */
typedef struct upstream_cbs {
    void (*on_head)(void *ud, int status, strv_t content_type, int64_t content_length);
    void (*on_body)(void *ud, const char *p, size_t n);
    void (*on_done)(void *ud, int err, int status_seen);
    /* Optional: one engine read was fully delivered through on_head/on_body (and the
     * exchange goes on). The relay flushes what that read produced in one write. */
    void (*on_read_done)(void *ud);
} upstream_cbs_t;

/* A worker's pool over the set's engines (the set outlives it). */
upstream_pool_t *upstream_pool_new(uv_loop_t *loop, struct engine_set *set, worker_t *w);
/* A probe pool (the health checker's): exchanges go to the engine named in upstream_send_to,
 * up or not, with timeout_ms for connect, first byte and total; they are not counted in the
 * engines' outstanding requests, budget or passive health. */
upstream_pool_t *upstream_probe_pool_new(uv_loop_t *loop, struct engine_set *set, worker_t *w,
                                         unsigned timeout_ms);
/* Closes idle connections and frees the pool once its handles are closed (on the loop); exchanges
 * in flight or waiting must have been cancelled or finished. */
void upstream_pool_close(upstream_pool_t *p);
unsigned upstream_pool_idle(const upstream_pool_t *p);
/* Why the pool's last connect failed (libuv's text), for the log line of a UPS_E_CONNECT. */
const char *upstream_pool_connect_error(const upstream_pool_t *p);

/* extra_headers: complete "Name: value\r\n" lines, or NULL. Returns NULL when the exchange
 * cannot start: upstream_pool_error then says why (UPS_E_NOMEM, UPS_E_NO_ENGINE, UPS_E_BUSY
 * with a full queue). Connection errors, and a queued exchange that waited too long
 * (UPS_E_BUSY) or whose engines all went down (UPS_E_NO_ENGINE), arrive through on_done
 * (never synchronously). */
upstream_req_t *upstream_send(upstream_pool_t *p, const char *method, strv_t path, strv_t query,
                              const char *extra_headers, const void *body, size_t len,
                              const upstream_cbs_t *cbs, void *ud);
/* A probe pool's exchange to engine i. */
upstream_req_t *upstream_send_to(upstream_pool_t *p, int engine, const char *method, strv_t path,
                                 const upstream_cbs_t *cbs, void *ud);
/* Why the last upstream_send on p returned NULL. */
int upstream_pool_error(const upstream_pool_t *p);
void upstream_cancel(upstream_req_t *r);
/* From now on every read of this exchange is zeroed in the worker's read buffer once parsed:
 * an E2EE answer arrives from the engine in plaintext (proxy/e2ee.h). */
void upstream_wipe_reads(upstream_req_t *r);
/* The engine (index in the set) the exchange went to, -1 before one was picked. */
int upstream_engine(const upstream_req_t *r);
void upstream_pause(upstream_req_t *r);
void upstream_resume(upstream_req_t *r);

#endif
