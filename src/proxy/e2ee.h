/* End-to-end encryption in the relay (issue 10; ../shared/docs/e2ee-formats.md, "the formats
 * document" below). The cryptography is src/e2ee/e2ee.h; the signing keys' side of it stays in
 * the signer (signer_e2ee_open_hex). This module is the wiring:
 *
 *   request   e2ee_request: selects the format from the headers, checks them in the format's
 *             order, decrypts the encrypted fields of the body into a rewritten body for the
 *             engine and claims the replay nonce; any failure answers nothing to the engine.
 *   response  e2ee_resp_*: the engine's answer, encrypted per the format before it reaches
 *             the relay's hash and the client: a JSON answer once complete (bounded), an event
 *             stream event by event as it arrives (never buffered whole).
 *
 * Enabled formats: the Dstack fork's v1 and v2 (§5, §6), NEAR v1 and v2 (§3, §4) and ACI
 * E2EE v2 (§7, with its own keys, sign/aci_keys.h) on /v1/chat/completions; a v1 request that
 * either family may have sent is told apart by trial decryption (ed25519) or answered so that
 * both read it (ecdsa, the same bytes), §1.2. On the other routes with fields (enum e2ee_route:
 * completions, embeddings; NEAR also rerank and score; §3.4, §7.3) NEAR and ACI are handled and
 * the Dstack fork keeps its chat-only refusal (§5.2). Every other E2EE request (another route)
 * is refused: fail closed.
 *
 * Plaintext (decrypted prompts, the engine's answer) lives only in json-c objects and buffers
 * of this module, which are wiped before they are freed; the rewritten request body is the
 * relay's own_body, wiped when the relay lets go of it (e2ee_wipe_buf).
 *
 * Threads: a session belongs to the request's worker loop; the replay cache is process-wide
 * (one mutex, store/store.h) so that every worker sees every claim. Across replicas the claim
 * is repeated in Redis by the caller (e2ee_replay_key; proxy/router.c). */
#ifndef VP_PROXY_E2EE_H
#define VP_PROXY_E2EE_H

#include <stddef.h>

#include "core/buf.h"
#include "http/server.h"
#include "proxy/app.h"
#include "proxy/errors.h"

typedef struct e2ee_sess e2ee_sess_t;

#define E2EE_MSG_MAX 200

/* The routes with E2EE fields (the formats document §3.4, §7.3); the request's path decides. */
enum e2ee_route {
    E2EE_ROUTE_CHAT,        /* /v1/chat/completions: every format */
    E2EE_ROUTE_COMPLETIONS, /* /v1/completions: prompt / choices[].text (NEAR, ACI) */
    E2EE_ROUTE_EMBEDDINGS,  /* /v1/embeddings: input / data[].embedding (NEAR, ACI) */
    E2EE_ROUTE_RERANK,      /* /v1/rerank: query, documents / results[].document.text (NEAR) */
    E2EE_ROUTE_SCORE,       /* /v1/score: text_1, text_2 / data[].score (NEAR) */
    E2EE_ROUTE_IMAGES,      /* /v1/images/generations: prompt / data[].b64_json, revised_prompt (NEAR) */
};
/* The route of a path, or -1 for one where no format defines fields (refused: fail closed). */
int e2ee_route_of(strv_t path);

/* A request that carries E2EE headers (req->e2ee_present), on a route e2ee_route_of knows, body
 * = the bytes to forward (already inspected by reqjson). On success *out holds the rewritten
 * body (plaintext: wipe with e2ee_wipe_buf) and *sess the response side's state (owned by the
 * caller; e2ee_sess_free). On failure: -1, *err is the answer to send (msg, when non-empty,
 * replaces the table's message), *out is wiped and empty. */
int e2ee_request(const app_t *app, const http_req_t *req, strv_t body, buf_t *out,
                 e2ee_sess_t **sess, app_error_t *err, char msg[E2EE_MSG_MAX]);
/* The key under which a request accepted by e2ee_request must also be claimed in Redis
 * (SET NX EX e2ee_replay_ttl()) before it is forwarded: "{MODEL_NAME}:e2ee-replay:<format>:
 * <sha256 hex of the claim tuple>". NULL when the format has no replay protection. */
const char *e2ee_replay_key(const e2ee_sess_t *s, size_t *n);
/* The replay window (E2EE_REPLAY_WINDOW: seconds an X-E2EE-Timestamp may be from now; Dstack
 * v2 and ACI v2). Set once at start-up, before any worker runs (default
 * E2EE_REPLAY_WINDOW_DEFAULT, what unit-test apps get). */
#define E2EE_REPLAY_WINDOW_DEFAULT 300u
void e2ee_replay_configure(unsigned window_s);
unsigned e2ee_replay_window(void);
/* How long a claim is kept, in memory and in Redis: two windows (see replay_init). */
unsigned e2ee_replay_ttl(void);
/* The answer for an E2EE request on a route where e2ee_route_of is -1. */
app_error_t e2ee_route_refusal(const http_req_t *req);
/* Whether a request speaks ACI E2EE v2 (formats document §1.2 rule 2: an E2EE header other
 * than NEAR's own switches, without X-Signing-Algo), valid or not: its every answer carries
 * ACI's in-band hints (aci.md §7, formats document §9). */
int e2ee_req_is_aci(const http_req_t *req);
/* ACI's in-band hints, "X-ACI-Version: aci/1\r\nX-ACI-Keyset-Digest: sha256:<hex>\r\n" for
 * the keyset in force (renewed when due), into out (cap >= E2EE_ACI_HINTS_MAX); "" when the
 * app has no ACI keys. */
#define E2EE_ACI_HINTS_MAX 128
void e2ee_aci_hints(const app_t *app, char *out, size_t cap);
/* The ACI hint lines of an accepted ACI session ("" for other formats): for an answer that is
 * not encrypted (the engine's error, passed on as it is). */
const char *e2ee_sess_hints(const e2ee_sess_t *s);

/* The response headers the format adds ("Name: value\r\n" lines). */
const char *e2ee_resp_headers(const e2ee_sess_t *s);
/* 1 when the format seals every field with a fresh ephemeral key (NEAR, ACI v2: one key
 * generation and ECDH per field, tens of microseconds each), so that the relay runs the
 * sealing on the crypto threads (proxy/e2ee_pool.h); 0 for the Dstack formats (one key per
 * request, a microsecond per field: sealed inline). The session's calls below are sequential
 * either way: one thread at a time, handed over through the pool's locks. */
int e2ee_resp_per_field_keys(const e2ee_sess_t *s);
/* The engine's answer starts: sse = an event stream. */
void e2ee_resp_begin(e2ee_sess_t *s, int sse);
/* Output of the encryptor: the bytes to send (hash, then client). */
typedef void e2ee_emit_fn(void *ud, const char *p, size_t n);
/* Engine body bytes in; encrypted bytes out through emit (streams: every complete line; JSON:
 * nothing until e2ee_resp_finish). 0, or -1 when the answer cannot be encrypted (not JSON, too
 * large, a field that is not a string, out of memory): then nothing more may be sent. */
int e2ee_resp_feed(e2ee_sess_t *s, const char *p, size_t n, e2ee_emit_fn *emit, void *ud);
/* The engine's body ended: a JSON answer is encrypted and emitted whole; a stream's unfinished
 * last line is dropped. 0 or -1 as above. */
int e2ee_resp_finish(e2ee_sess_t *s, e2ee_emit_fn *emit, void *ud);
/* Wipes and frees. NULL is a no-op. */
void e2ee_sess_free(e2ee_sess_t *s);
/* Routes whose answer may carry no id (images): a JSON answer without a string top-level
 * `id` gets `"id": id` added when it is sealed (the E2EE answer is re-serialised anyway), so
 * a client finds in the body the id its signature is stored under; one with an id keeps it.
 * After the answer was sealed, e2ee_resp_answer_id is the id the body carries ("" before). */
void e2ee_resp_set_id(e2ee_sess_t *s, const char *id);
const char *e2ee_resp_answer_id(const e2ee_sess_t *s);
/* Wipes a buffer's bytes (its whole capacity) and frees it. */
void e2ee_wipe_buf(buf_t *b);

#endif
