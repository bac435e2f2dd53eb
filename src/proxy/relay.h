/* The relay: forwards one request to the engine and streams the answer back as it arrives.
 * For signed routes it hashes the exact body bytes sent to the client, finds the chat id
 * and, only for a complete answer, signs "reqhash:resphash" and stores the record before the
 * client can see the end of the body.
 *
 * Routes whose answer may carry no id (relay_req_t.id_prefix set: embeddings, rerank, score,
 * images, transcriptions) announce the record's id in the response header X-Signature-Id.
 * The head is held back (with at most RELAY_HOLD_MAX bytes of the body) until the id is
 * known: the engine's top-level "id" (an event stream's first id) once the scan has it whole,
 * else, when the body ends or RELAY_HOLD_MAX bytes came without one, id_prefix "-" the
 * engine's request id (the proxy's random X-Request-Id). An engine id that is not a plain
 * header value (visible ASCII) is not announced; the proxy's is used instead.
 *
 * In-band signatures (relay_req_t.inband; docs/API.md "In-band signatures"): a signed 2xx
 * answer that is not a stream is held whole (at most INBAND_MAX_BODY bytes), signed and
 * stored, and only then its head goes out with the signature fields and a Content-Length; a
 * longer one's head goes out when the bound is passed, saying "unavailable; reason=too-large".
 * A stream whose request sent TE: trailers holds its head until the id is known (the first
 * event), announces the fields in Trailer, and ends its chunked body with them once the
 * record is stored. The bytes hashed are the body bytes sent, as without.
 *
 * Threads: the worker's loop thread. Ownership: a relay holds the client connection (as its
 * owner) and one engine exchange; it is released, back to the worker's free list, only when
 * both sides have let go: the engine's exchange ended (done, failed or cancelled) and the
 * client's response ended (complete, aborted, or the connection gone). */
#ifndef VP_PROXY_RELAY_H
#define VP_PROXY_RELAY_H

#include "core/buf.h"
#include "http/server.h"
#include "proxy/app.h"
#include "proxy/sigstore.h"

enum relay_kind {
    RELAY_SIGNED, /* completions and the other inference routes: hashed, id found, signed
                     when complete */
    RELAY_PASS,   /* other engine routes: relayed as they are */
};

/* What to forward. relay_start copies the struct; the strings it points to are borrowed and
 * must stay valid until the response ends (the connection's request memory, or static
 * strings). own_body, when it holds memory, is moved into the relay on every path (the
 * caller's buffer is left empty) and then forwarded instead of body. */
typedef struct relay_req {
    int route;         /* enum route: logs and metrics */
    enum relay_kind kind;
    const char *method; /* "GET" or "POST" */
    strv_t path, query; /* the engine's path and query */
    strv_t body;
    buf_t own_body;
    char req_hash[SIG_HASH_HEX_LEN + 1]; /* RELAY_SIGNED: the request half of the signed text */
    struct e2ee_sess *e2ee; /* an E2EE request's response side (proxy/e2ee.h), moved into the
                               relay like own_body (then wiped with it), or NULL */
    int inband;             /* RELAY_SIGNED: enum inband_want (proxy/inband.h), what the
                               request gets of in-band signatures */
    const char *id_prefix;  /* RELAY_SIGNED: NULL (the id must come from the answer, as for
                               completions), or the prefix of an id the proxy makes when the
                               answer has none; then the id goes out in X-Signature-Id */
} relay_req_t;

#define RELAY_HOLD_MAX (64 * 1024) /* body bytes held back while an announced id is unknown */
#define SIGNATURE_ID_HEADER "X-Signature-Id"

/* Starts the exchange; the relay then owns the response. On failure the client has been
 * answered (503 out of memory; the engine pool's refusals: relay_refuse) and -1 is returned. */
int relay_start(app_worker_t *aw, conn_t *c, http_req_t *req, relay_req_t *rr);
/* The engine pool's refusal err (upstream.h) as the client's answer, with Retry-After: 503
 * no_healthy_engine for UPS_E_NO_ENGINE, 429 rate_limit_exceeded for UPS_E_BUSY. 0 (nothing
 * written) for any other err. */
int relay_refuse(app_worker_t *aw, conn_t *c, http_req_t *req, int route, int err);
/* Frees the worker's recycled relays (at worker exit, after the loop stopped). */
void relay_free_list(app_worker_t *aw);

#endif
