/* The state one E2EE request carries from proxy/e2ee_req.c to proxy/e2ee_resp.c (private to
 * the two; proxy/e2ee.h is the interface), and the json-c helpers both use to keep plaintext
 * out of freed memory (the local proxy's codec, verify/lp_e2ee.c, uses these helpers too: it
 * opens what this module seals). */
#ifndef VP_PROXY_E2EE_SESS_H
#define VP_PROXY_E2EE_SESS_H

#include <json-c/json.h>
#include <stdint.h>

#include "core/buf.h"
#include "e2ee/e2ee.h"

#define E2EE_NONCE_MAX 256 /* X-E2EE-Nonce bytes kept (Dstack v2: at least 16) */
#define E2EE_HDRS_MAX 256
#define E2EE_ANSWER_ID_MAX 256 /* = SIG_ID_MAX (proxy/sigstore.h) */
#define E2EE_REPLAY_KEY_MAX 320 /* model (< 256) + ":e2ee-replay:dstack-v2:" + 64 hex */

struct e2ee_sess {
    int route; /* enum e2ee_route (proxy/e2ee.h): which fields each side handles */
    e2ee_format_t format;
    e2ee_algo_t algo;
    int version;          /* X-E2EE-Version answered: 1 or 2 */
    e2ee_cipher_t cipher; /* the response cipher */
    e2ee_cipher_t req_cipher; /* the request fields' cipher (v1 ed25519: found by trial) */
    int cipher_fixed;         /* v1 ed25519: a field opened, req_cipher is the one it used */
    int near;                 /* NEAR's response rules (§3.4, §3.5): a fresh ephemeral key per
                               * field, empty strings left as they are, no X-E2EE-* headers */
    int all_fields;           /* NEAR: X-Encrypt-All-Fields: true */
    uint8_t client[E2EE_SECP_PUB_LEN];
    size_t client_n; /* 32 (X25519) or 65 (secp256k1) */
    char nonce[E2EE_NONCE_MAX + 1];
    size_t nonce_n;
    int64_t ts;
    e2ee_key_t key; /* Dstack: one sending key per request (§5.1) */
    int key_ready;
    int sse, failed;
    buf_t in; /* JSON: the engine's answer so far; SSE: the unfinished line */
    buf_t hex; /* scratch for one sealed field (ciphertext, not wiped), reused per field */
    buf_t plain; /* scratch: a streamed field's decoded text (e2ee_event.c), wiped after use */
    buf_t line;  /* scratch: one rewritten event line (e2ee_event.c), wiped after use */
    char hdrs[E2EE_HDRS_MAX];
    char *model; /* ACI: the request's model string (response AAD, §7.3); heap, wiped */
    size_t model_n;
    /* The Redis claim that goes with the memory one (Dstack v2, ACI v2): "" when none. */
    char replay_key[E2EE_REPLAY_KEY_MAX];
    /* e2ee_resp_set_id: a JSON answer without a top-level id gets this one; one with a string
     * id keeps it and it is copied here (e2ee_resp_answer_id). "" = neither. */
    char answer_id[E2EE_ANSWER_ID_MAX + 1];
    int id_set, id_done;
    size_t replay_key_n;
};

/* Parses p[0..n) as one JSON value (trailing whitespace allowed). NULL when it is not JSON.
 * Nothing read is left in freed memory: the tokener's buffer is sized once and wiped, and on
 * a failed parse the values read so far are wiped before the tokener releases them. */
json_object *e2ee_json_parse(const char *p, size_t n);
/* Zeroes every string in the tree (values, not member names), then releases it. */
void e2ee_json_wipe_put(json_object *o);
/* Compact serialisation (json-c's PLAIN | NOSLASHESCAPE spelling) appended to out, written
 * here (not by json-c's printbufs); out grows with buf_reserve_wiped. */
int e2ee_json_append(buf_t *out, json_object *o);
/* The value of a member as Python's str() would print it for the Dstack v2 AAD (§6.1): a
 * string as is (the node's own text), a missing member as "", anything else as its JSON text
 * (json-c's PLAIN spelling, / escaped) appended to tmp (the caller wipes it: e2ee_wipe_buf).
 * NULL when out of memory. */
const char *e2ee_json_str(json_object *parent, const char *key, buf_t *tmp, size_t *n);

/* Seals pt[0..pn) per the session's format and appends its hex to out (wiped growth): NEAR
 * (§3.1) and ACI (§7.2) with a fresh ephemeral key per field, the Dstack fork with the
 * request's key (one ephemeral key per request, a fresh nonce per field, §5.1). aad_n 0: no
 * AAD. 0, or -1 on failure. */
int e2ee_seal_append(struct e2ee_sess *s, const char *pt, size_t pn, const char *aad, size_t aad_n,
                     buf_t *out);
/* The fast path of one streamed chat event's JSON text p[0..n) (proxy/e2ee_event.c): 1 and
 * the event with its sealed fields appended to out; 0 when it declines (the caller takes the
 * general json-c path; out may hold a partial append to truncate); -1 on a failure to seal. */
int e2ee_event_fast(struct e2ee_sess *s, const char *p, size_t n, buf_t *out);

#endif
