/* End-to-end encryption for the local verifying proxy (issue 13, verify/lproxy.h): the codec
 * the relay calls to seal an app's request to the attested key and to open the remote's
 * answer back into the plaintext the engine wrote, so that anything between the app's machine
 * and the CVM sees ciphertext (docs/VERIFY.md, "The local verifying proxy → End-to-end
 * encryption"; the formats: docs/API.md "End-to-end encryption", ../shared/docs/e2ee-formats.md).
 *
 * Pure transformations: no I/O, no global state; one lp_e2ee_t per request, used by one thread
 * at a time (the relay's connection thread); distinct ones on any threads at once. The relay
 * does the rest: it sends the sealed body with the extra headers, verifies the signatures
 * over the CIPHERTEXT it sent and received (the bytes this codec took and gave, never the
 * plaintext), and hands the app what this codec opened.
 *
 * Formats (FORMAT of lp_e2ee_new, the --e2ee option):
 *   auto (default)  dstack-v2 on /v1/chat/completions, near-v2 on /v1/completions and
 *                   /v1/embeddings (the Dstack fork defines no fields there: vllm-proxy refuses
 *                   it on those routes).
 *   dstack-v2       Dstack fork v2 (§6): AES-256-GCM under one key per request and answer, and
 *                   an AAD that binds every request field to (model, message, part, nonce,
 *                   timestamp) and every answer field to (model, answer id, choice, field, OUR
 *                   nonce and timestamp); the server claims the nonce once (replay refused).
 *                   Chat only.
 *   near-v2         NEAR v2 (§4): no AAD, no replay protection, a fresh ephemeral key per field.
 *   dstack-v1, near-v1   the v1 formats (no AAD), for remotes that want them.
 *   Each with an optional ":ecdsa" or ":ed25519" (e.g. "near-v2:ecdsa") naming the attested
 *   key: the secp256k1 key (ecdsa_public_key) or the Ed25519 key (ed25519_key, used as X25519).
 *   Without it: ed25519 when the pins have an Ed25519 key (X25519 is several times cheaper than
 *   secp256k1 ECDH), else ecdsa.
 *   aci-v2 is not offered: its key is the ACI keyset's (GET /v1/aci/attestation), which
 *   lp_pins_t does not carry; only the signing keys the report binds are pinned.
 *
 * Why dstack-v2 is the default for chat. (1) Binding: its answer AAD names our nonce and
 * timestamp, so a field sealed for another request, another answer (id), another choice or
 * another field does not open here, and the server refuses a replayed request; NEAR's fields
 * carry no context at all. The signatures the relay checks already tie the answer's bytes to
 * the request's, so this is a second, independent binding, checked on every field. (2) Cost:
 * Dstack seals a whole answer with one ephemeral key, so opening a stream costs one ECDH per
 * answer and one AEAD per event (e2ee_open_hex_cached), where NEAR needs one ECDH per field,
 * i.e. per streamed token on both sides (tens of microseconds each: more than the relay's
 * per-token budget of issue 13). NEAR v2 is the format most clients speak and the only legacy
 * one with fields on completions and embeddings, hence its use there. The cost of Dstack v2:
 * the request carries a timestamp the server checks against its clock (E2EE_REPLAY_WINDOW,
 * 300 s by default), so a machine whose clock is off by more is refused
 * (e2ee_invalid_timestamp); a request sent twice is refused as a replay (build a new
 * lp_e2ee_t for every attempt).
 *
 * What is sealed (request): chat messages[i].content (a string; an array of parts is sealed
 * whole as its JSON text, which the server restores: image URLs and data are hidden too);
 * NEAR also reasoning_content, reasoning, audio.data of messages; completions prompt (a string
 * or its string elements); embeddings input (likewise). Refused locally (the app gets 400,
 * nothing is sent), because the text would travel in clear or come back in clear: tools /
 * functions, tool_calls / function_call / refusal in the history, logprobs / top_logprobs,
 * prompt_logprobs, return_token_ids, prediction, a prompt or input of token ids, completions'
 * suffix; for Dstack also reasoning and audio in the history. NEAR's X-Encrypt-All-Fields
 * (which would seal tools and log-probabilities) is not used. What stays visible: the model
 * name, every other parameter (temperature, max_tokens, stop, response_format, user, messages'
 * role and name), the token counts and the timing.
 *
 * What is opened (answer), per format as vllm-proxy seals it (docs/API.md): chat
 * choices[i].message / .delta content (NEAR: also each content part's text), reasoning_content,
 * reasoning, NEAR's audio.data; completions choices[i].text; embeddings data[i].embedding (the
 * sealed JSON text parsed back into the engine's value). Fail closed: a field that does not
 * open, or any generated text in clear (a sealed field holding something else than a sealed
 * string; tool_calls, function_call, refusal, logprobs, token ids, audio the format does not
 * seal, a message in a stream or a delta in a JSON answer) is an error, and nothing of that
 * answer or event may reach the app. The output is the engine's JSON with the sealed strings
 * replaced by their plaintext, re-serialised compactly (members in the same order); what the
 * server dropped stays dropped (the Dstack fork drops a stream's empty delta content).
 */
#ifndef VP_VERIFY_LP_E2EE_H
#define VP_VERIFY_LP_E2EE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "verify/lproxy.h"

typedef struct lp_e2ee lp_e2ee_t;

/* Why a call failed. check: a short name for the status documents and the app's error:
 *   e2ee.format      unknown or unusable format for this route (aci-v2, dstack-* off chat)
 *   e2ee.route       a route without E2EE fields
 *   e2ee.key         the pinned key for the format is missing or not a valid point
 *   e2ee.request     the request body is not what the route takes (not a JSON object, ...)
 *   e2ee.unsupported_field   the request asks for something that would travel in clear
 *   e2ee.json        the answer (or an event) is not a JSON object
 *   e2ee.decrypt     a sealed field does not open with our key (tampered, another key or AAD)
 *   e2ee.in_clear    generated text in clear where the answer should be sealed
 *   e2ee.internal    out of memory, RNG
 * msg: one sentence for a person; never any prompt or completion text. */
typedef struct lp_e2ee_err {
    char check[32];
    char msg[200];
} lp_e2ee_err_t;

/* Return codes. The relay answers LP_E2EE_REFUSED with 400 (type invalid_request_error, code
 * = check) before sending anything, and LP_E2EE_FAILED with 502 (non-streaming) or an error
 * event and no [DONE] (streaming). */
enum { LP_E2EE_OK = 0, LP_E2EE_REFUSED = -1, LP_E2EE_FAILED = -2 };

#define LP_E2EE_MAX_BODY (64u << 20) /* bytes, request or answer: the server's own bound */

/* A codec for one request: the format (NULL = "auto", above), the pins of the verified remote
 * (copied: the caller's may change), the request's path (a query string is ignored). A fresh
 * client key pair, and for Dstack v2 a fresh nonce and the current time. NULL with *err when
 * the format cannot serve this route or the pinned key is missing (the relay then refuses the
 * request with 400; it never sends it in clear). */
lp_e2ee_t *lp_e2ee_new(const char *format, const lp_pins_t *pins, const char *route,
                       lp_e2ee_err_t *err);
/* What lp_e2ee_new would use for this route, without making keys: "dstack-v2 ed25519" (the
 * format and the key; the format alone when pins is NULL) into desc. LP_E2EE_OK, or
 * LP_E2EE_REFUSED with *err as lp_e2ee_new would refuse (the route, the format, a missing
 * key). For the status documents and for checking --e2ee at start. */
int lp_e2ee_plan(const char *format, const lp_pins_t *pins, const char *route, char *desc,
                 size_t cap, lp_e2ee_err_t *err);
/* The --e2ee policy for one request (docs/VERIFY.md "End-to-end encryption"). mode: NULL or
 * "auto" (POST /v1/chat/completions, /v1/completions and /v1/embeddings sealed in the auto
 * formats, everything else in clear; in clear also when the verified report names no key to
 * encrypt to), "off" (nothing sealed), or a FORMAT (every request but GET and HEAD sealed in
 * it, or refused). method: the request's ("POST" when NULL). pins: the verified remote's, or
 * NULL (then desc names the format without the key). Returns:
 *   LP_E2EE_CLEAR   relay as it is (desc "clear", or "clear (why)")
 *   LP_E2EE_SEAL    lp_e2ee_new(mode, ...) (desc: "dstack-v2 ed25519", ...)
 *   LP_E2EE_REFUSE  answer 400 with *err, send nothing (desc "refused (check)")
 * err may be NULL. */
enum { LP_E2EE_CLEAR = 0, LP_E2EE_SEAL = 1, LP_E2EE_REFUSE = 2 };
int lp_e2ee_policy(const char *mode, const lp_pins_t *pins, const char *method, const char *route,
                   char *desc, size_t cap, lp_e2ee_err_t *err);
/* "dstack-v2 ed25519" etc., for logs and the status page. */
const char *lp_e2ee_describe(const lp_e2ee_t *e);

/* The app's request body (JSON) → the body to send (appended to out) and the extra request
 * headers (*headers: "Name: value" strings, NULL-terminated, valid until lp_e2ee_free).
 * LP_E2EE_OK, or LP_E2EE_REFUSED with *err (out unchanged). Called once per lp_e2ee_t. */
int lp_e2ee_seal_request(lp_e2ee_t *e, const uint8_t *body, size_t n, buf_t *out,
                         const char *const **headers, lp_e2ee_err_t *err);

/* A non-streaming 2xx answer body → the plaintext body (appended to out). An error body (no
 * choices or data) comes out unchanged in meaning. LP_E2EE_OK, or LP_E2EE_FAILED with *err
 * (out unchanged). */
int lp_e2ee_open_json(lp_e2ee_t *e, const uint8_t *in, size_t n, buf_t *out, lp_e2ee_err_t *err);

/* One SSE event's data payload (the bytes after "data:" and its optional space, without the
 * line ending) → the plaintext payload (appended to out; the relay frames it as
 * "data: <payload>\n\n"). "[DONE]" comes out as it is, an error event ({"error":...}) too.
 * A payload that is not JSON is LP_E2EE_FAILED: vllm-proxy never sends one in an encrypted
 * stream (it ends the stream instead), so passing it on could pass text in clear. */
int lp_e2ee_open_event(lp_e2ee_t *e, const uint8_t *data, size_t n, buf_t *out, lp_e2ee_err_t *err);

/* Both open functions take the scan (the fast path: one strict pass over the answer, the
 * sealed strings opened and spliced into the remote's bytes, docs/VERIFY.md) and fall back to
 * the json-c path (parse, open in the tree, print compactly) on any shape the scan does not
 * take; their output is the same bytes either way (tests/fuzz/fuzz_lp_e2ee.c). For the tests,
 * the fuzz target and bench/lp_e2ee_bench.c, lp_e2ee_open_path picks the way: AUTO is what
 * the two functions above do (stream: lp_e2ee_open_event, else lp_e2ee_open_json); JSONC the
 * json-c path alone (the reference); SCAN the scan alone, LP_E2EE_DECLINED (out unchanged)
 * where it declines. */
enum { LP_E2EE_PATH_AUTO = 0, LP_E2EE_PATH_SCAN = 1, LP_E2EE_PATH_JSONC = 2 };
#define LP_E2EE_DECLINED 1
int lp_e2ee_open_path(lp_e2ee_t *e, int path, int stream, const uint8_t *in, size_t n, buf_t *out,
                      lp_e2ee_err_t *err);
/* Tests, fuzzing and benchmarks only: the answer side's secret (our X25519 secret or
 * secp256k1 scalar), Dstack v2's nonce (hex, < 33 chars) and timestamp replaced by fixed
 * ones, so that answers sealed beforehand to that key open (the derived-key cache is wiped).
 * The request side (client_pub, headers) is not changed: never call it in the relay. */
void lp_e2ee_test_keys(lp_e2ee_t *e, const uint8_t secret[32], const char *nonce, int64_t ts);

/* Wipes the secrets and frees. NULL is a no-op. */
void lp_e2ee_free(lp_e2ee_t *e);

#endif
