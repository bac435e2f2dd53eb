/* HTTP/1.1 server side of a worker: accepts connections on the worker's own SO_REUSEPORT
 * listener, parses requests with llhttp (strict), enforces limits and per-phase timeouts,
 * and writes responses with backpressure.
 *
 * Threads: everything here runs on the owning worker's loop thread only.
 * Ownership: a conn_t is owned by the server. Between on_request and the end of the response
 * the application may register an owner (conn_set_owner): the server then tells the owner,
 * through its ops table, when the connection goes away (on_abort: the owner must not touch
 * the connection afterwards) and when its write queue drains (on_drain). The server forgets
 * the owner when the response ends (conn_end_response, conn_respond), on conn_abort, and
 * after on_abort. Request strings point into conn-owned memory that is valid until the
 * response is finished. */
#ifndef VP_HTTP_SERVER_H
#define VP_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/addr.h"
#include "core/buf.h"

typedef struct conn conn_t;
typedef struct worker worker_t;

typedef struct strv {
    const char *p;
    size_t n;
} strv_t;
/* A strv_t of a string literal. */
#define STRLIT(s) ((strv_t){(s), sizeof(s) - 1})

typedef struct http_limits {
    size_t max_header_bytes;   /* request line + all headers */
    unsigned max_headers;
    size_t max_body;           /* a request's body limit unless on_headers sets req->body_limit */
    size_t max_body_any;       /* the largest body_limit on_headers may set; a Content-Length
                                * above it is refused before on_headers (0 = max_body) */
    unsigned header_timeout_ms;
    unsigned body_timeout_ms;
    unsigned idle_timeout_ms;
    unsigned max_connections;  /* open client connections per process, 0 = no cap; beyond it a
                                * new connection gets a 503 and is closed at once */
} http_limits_t;

/* The end-to-end encryption headers (issue 10; ../shared/docs/e2ee-formats.md §1.1), kept as
 * spans in http_req_t.e2ee[] in this order. Any of them present (an empty value counts) sets
 * bit i of http_req_t.e2ee_present; the server refuses a repeated one like every header it
 * keeps. */
enum http_e2ee_hdr {
    HTTP_E2EE_SIGNING_ALGO,       /* X-Signing-Algo */
    HTTP_E2EE_CLIENT_PUB_KEY,     /* X-Client-Pub-Key */
    HTTP_E2EE_MODEL_PUB_KEY,      /* X-Model-Pub-Key */
    HTTP_E2EE_VERSION,            /* X-E2EE-Version */
    HTTP_E2EE_NONCE,              /* X-E2EE-Nonce */
    HTTP_E2EE_TIMESTAMP,          /* X-E2EE-Timestamp */
    HTTP_E2EE_ENCRYPTION_VERSION, /* X-Encryption-Version */
    HTTP_E2EE_ALL_FIELDS,         /* X-Encrypt-All-Fields */
    HTTP_E2EE_TOOL_CALLS,         /* X-Encrypt-Tool-Calls (one NEAR version's all-fields name) */
    HTTP_E2EE_N
};

/* A request id: what every response carries in X-Request-Id (the application's, made at
 * on_headers; else the server's own, 32 random hex). */
#define HTTP_REQ_ID_MAX 97

typedef struct http_req {
    int method;              /* llhttp_method_t */
    strv_t path;             /* without the query */
    strv_t query;            /* after '?', may be empty */
    strv_t authorization, content_type, accept, x_request_id, x_request_hash;
    strv_t x_forwarded_for;  /* the last X-Forwarded-For line (the header may repeat) */
    strv_t x_real_ip;
    strv_t x_signature_inband; /* X-Signature-Inband (docs/API.md "In-band signatures") */
    int has_x_signature_inband;
    int te_trailers;           /* a TE line named "trailers" (never for HTTP/1.0) */
    ip_addr_t peer;          /* the connection's peer address */
    char id[HTTP_REQ_ID_MAX + 1]; /* X-Request-Id of the response; "" until set (conn_request_id) */
    strv_t e2ee[HTTP_E2EE_N];  /* enum http_e2ee_hdr */
    unsigned e2ee_present;     /* bit i: header i was present */
    int has_content_length;
    uint64_t content_length;
    int has_body;            /* Content-Length > 0 or chunked */
    int keep_alive;
    buf_t body;
    uint64_t start_ns;
    int app_route, app_auth; /* scratch for the application, zeroed per request */
    int app_limit;
    unsigned app_retry;
    ip_addr_t client;
    uint64_t body_limit;     /* on_headers may set this request's body limit (at most
                              * max_body_any; 0 = max_body): 413 beyond, checked against
                              * Content-Length at once and while a chunked body is read */
} http_req_t;

/* Requests the server refuses by itself, before the application saw them whole. */
typedef enum http_reject {
    HTTP_REJECT_TIMEOUT,          /* 408: head or body not received in time */
    HTTP_REJECT_BODY_TOO_LARGE,   /* 413 */
    HTTP_REJECT_HEAD_TOO_LARGE,   /* 431: header bytes or count */
    HTTP_REJECT_DUPLICATE_HEADER, /* 400: a header the server acts on, twice */
    HTTP_REJECT_MALFORMED,        /* 400: llhttp (strict) refused it, obsolete line folding,
                                   * an HTTP/1.1 request without Host */
    HTTP_REJECT_N
} http_reject_t;

/* on_headers' answer: what becomes of the request body. */
enum http_body_use {
    HTTP_BODY_READ = 0,    /* read and buffer it (bounded by max_body) for on_request */
    HTTP_BODY_ANSWERED = 1, /* on_headers responded (conn_respond*): the body is never read;
                             * the connection lingers briefly and closes after the response */
    HTTP_BODY_DISCARD = 2, /* read it (same limits and timeout) but keep none of it: on_request
                            * sees an empty body; for routes that take none */
};

/* What the application does with a request. Called on the loop thread. */
typedef struct http_handler {
    /* Headers are complete: returns an enum http_body_use. */
    int (*on_headers)(conn_t *c, http_req_t *req);
    /* Body complete: the application now owns the response. */
    void (*on_request)(conn_t *c, http_req_t *req);
    /* The server refuses the request: answer it with one conn_respond (the status is the
     * application's choice; the connection is closed afterwards). The request's fields may
     * be incomplete. */
    void (*on_reject)(conn_t *c, http_reject_t why);
} http_handler_t;

/* Whoever holds a connection's response: embeds a conn_owner_t whose ops say what to do when
 * the connection goes away or drains (h2o's generator, libuv's handle types). */
typedef struct conn_owner conn_owner_t;
typedef struct conn_owner_ops {
    const char *name; /* for debugging */
    /* The connection is going away (client closed, write error, shutdown) while held. */
    void (*on_abort)(conn_owner_t *o, conn_t *c);
    /* The write queue drained below the low watermark; may be NULL. */
    void (*on_drain)(conn_owner_t *o, conn_t *c);
} conn_owner_ops_t;
struct conn_owner {
    const conn_owner_ops_t *ops;
};

/* Responses. Every response head carries Date and X-Request-Id (the request's id, made here
 * when the application set none). A full response in one call: */
int conn_respond(conn_t *c, int status, const char *content_type, const char *extra_headers,
                 const void *body, size_t len);
/* Streaming responses: head, then body pieces, then end. content_length < 0 = chunked.
 * extra_headers: zero or more complete "Name: value\r\n" lines, or NULL. */
int conn_start_response(conn_t *c, int status, const char *content_type,
                        const char *extra_headers, int64_t content_length);
int conn_write_body(conn_t *c, const void *p, size_t n);
int conn_end_response(conn_t *c);
/* conn_end_response with trailer fields: zero or more complete "Name: value\r\n" lines after
 * the last chunk of a chunked response (dropped for one that is not chunked). */
int conn_end_response_trailers(conn_t *c, const char *trailers);
/* Corking: from conn_cork to the end of the response, written bytes are gathered in the
 * worker's cork buffer; conn_flush sends what was gathered so far in one write (the
 * connection stays corked). The relay flushes after every engine read; whoever corks must
 * flush before the loop callback that wrote returns, or end the response. */
void conn_cork(conn_t *c);
int conn_flush(conn_t *c);
/* Takes back a started response of which no byte has left yet (all of it still corked):
 * the connection is as before conn_start_response, so another answer can be written (an
 * error instead of an engine answer found malformed in the same read). 0, or -1 when bytes
 * of it were written already (or the response ended). */
int conn_retract_response(conn_t *c);
/* The current request's id (req->id), made now (32 random hex) if the application set none. */
const char *conn_request_id(conn_t *c);
const ip_addr_t *conn_peer(const conn_t *c);
/* Why the parser refused the current request (llhttp's fixed reason text, never request
 * bytes), or NULL; for the log line of on_reject. */
const char *conn_reject_detail(const conn_t *c);
/* Abandons the response and closes the connection (the client sees a truncated body). */
void conn_abort(conn_t *c);
int conn_response_started(const conn_t *c);
size_t conn_write_queue_bytes(const conn_t *c);
/* Bytes of a pipelined next request parked while this one is answered (bounded: see server.c). */
size_t conn_parked_bytes(const conn_t *c);
int conn_should_pause_source(const conn_t *c); /* over the high watermark */

/* Registers (or with NULL, clears) the response's owner. */
void conn_set_owner(conn_t *c, conn_owner_t *o);
worker_t *conn_worker(const conn_t *c);
uint64_t conn_bytes_out(const conn_t *c); /* body bytes over the connection's life */

/* Whether a TE header value (p, n) names "trailers" (RFC 9110 10.1.4), any case. Pure. */
int http_te_has_trailers(const char *p, size_t n);

/* Before any worker binds: whether host:port is free, by binding it once without
 * SO_REUSEPORT (then closed). Another process listening there (a second vllm-proxy, whose
 * SO_REUSEPORT would let the kernel split connections between the two) makes it fail. 0, or
 * -1 with err. */
int http_listen_probe(const char *host, int port, char *err, size_t errlen);

/* Worker lifecycle. worker_new binds host:port with SO_REUSEPORT on the given loop. */
worker_t *worker_new(uv_loop_t *loop, int id, const char *host, int port,
                     const http_limits_t *lim, const http_handler_t *h, void *user, char *err,
                     size_t errlen);
void *worker_user(const worker_t *w);
int worker_id(const worker_t *w);
uv_loop_t *worker_loop(const worker_t *w);
/* Stop accepting and close idle connections; in-flight responses continue. When the last
 * connection is gone, cb runs (once). */
void worker_drain(worker_t *w, void (*cb)(worker_t *));
/* Close every connection now (end of the grace period). */
void worker_close_all(worker_t *w);
unsigned worker_conn_count(const worker_t *w);
void worker_free(worker_t *w);     /* after the loop has stopped */

/* One read buffer per worker: read callbacks consume data synchronously. */
char *worker_read_buf(worker_t *w, size_t *len);

/* Connections refused at accept, process-wide: out of descriptors (EMFILE/ENFILE), or over
 * max_connections. And the client connections open now, process-wide. */
enum { HTTP_REFUSED_FDS, HTTP_REFUSED_CAP, HTTP_REFUSED_N };
uint64_t http_conns_refused(int why);
unsigned http_conns_open(void);

const char *http_status_text(int status);

#endif
