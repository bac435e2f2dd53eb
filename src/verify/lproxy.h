/* `vllm-proxy-verify proxy URL --listen HOST:PORT`: a local OpenAI endpoint that relays to one
 * remote vllm-proxy over HTTPS and verifies everything before the app sees it (issue 13,
 * docs/VERIFY.md "The local verifying proxy").
 *
 * Two halves, one contract (this header):
 *   - the attestation side (lp_att_*, lp_status_*; lp_att.c, lp_status.c): one thread that
 *     fetches a report with a fresh nonce at start, every --recheck seconds and whenever the
 *     relay sees a TLS key other than the pinned one, checks it with everything `report` checks
 *     (vr_fetch_report + vr_check_report: quote, collateral, TCB policy, pins of the policy
 *     file, event log, GPU evidence, TLS binding), and on success publishes the pins; on
 *     failure it publishes "not verified" with the reason. It also keeps the counters and the
 *     last answers for GET /verification (JSON) and GET / (HTML);
 *   - the relay side (lp_relay.c, lp_main.c): the loopback listener, one thread per local
 *     connection (bounded), llhttp request parsing with limits and timeouts, Host/Origin and
 *     local-token checks, the relay to the remote through libcurl with CURLOPT_PINNEDPUBLICKEY
 *     set to the published pin on every connection, and the verification of every answer's
 *     signatures over the exact bytes sent and received (in band when the server offers it,
 *     else GET /v1/signature/{id}).
 *
 * In-band signatures (the server's side, docs/API.md "In-band signatures"): the request
 * header `X-Signature-Inband: 1` asks for them. The answer's head then says how they come:
 *   X-Signature-Inband: headers          (non-streaming: the signatures are in this head)
 *   X-Signature-Inband: trailers         (streaming, the request had TE: trailers; the head
 *                                         also has Trailer: <the names below>)
 *   X-Signature-Inband: unavailable; reason=<token>   (fetch /v1/signature/{id} instead)
 * and the signature fields, as headers or as trailers of the chunked body:
 *   X-Signature-Text: <the signed text, exactly>
 *   X-Signature-Ecdsa: 0x<130 hex>       X-Signing-Address: 0x<40 hex, EIP-55>
 *   X-Signature-Ed25519: <128 hex>       X-Signing-Key-Ed25519: <64 hex>
 * X-Signature-Id (the record's id, as today) is in the head of every signed 2xx answer.
 * (Server side, as built: of every signed 2xx answer to a request that asked, whatever the
 * mode, when the id is a plain header value found within the first 64 KiB; answers to
 * requests that did not ask keep their old heads, so a chat answer's id is then in its body
 * only. An algorithm whose key the signer lacks has its two fields left out.)
 * A head that announced `trailers` and a body that ended without them is a failure, never a
 * reason to fall back to the signature route.
 */
#ifndef VP_VERIFY_LPROXY_H
#define VP_VERIFY_LPROXY_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/buf.h"
#include "core/hex.h"
#include "verify/verify.h"

typedef struct lp_opts {
    const char *remote;      /* base URL of the remote vllm-proxy (https://host[:port]) */
    const char *listen_host; /* --listen HOST:PORT, default 127.0.0.1:8741 */
    int listen_port;
    const char *token;       /* --token: the remote's bearer token (else $VLLM_PROXY_TOKEN) */
    const char *local_token; /* --local-token: apps must send it as Bearer; NULL: none asked */
    int allow_simulated;     /* --allow-simulated */
    int allow_http;          /* --allow-http: a plain-http remote (tests, loopback only) */
    long recheck_s;          /* --recheck SECONDS: re-verification period (default 300) */
    long timeout_s;          /* --timeout: per remote exchange */
    int max_conns;           /* --max-connections (default 64) */
    const char *e2ee;        /* --e2ee FORMAT|auto|off */
    vopts_t *vo;             /* the verifier options `report` would use (policy, PCCS, NRAS...) */
} lp_opts_t;

/* What the last successful verification pinned. Copied out whole under the lock. */
typedef struct lp_pins {
    uint64_t generation;                 /* +1 at each successful verification */
    time_t verified_at;
    char tls_spki[HEX_SIZE(32)];         /* sha256(SPKI of the remote's TLS key), hex */
    char curl_pin[80];                   /* "sha256//<base64>" for CURLOPT_PINNEDPUBLICKEY */
    char ecdsa_address[43];              /* "0x" + 40 hex (EIP-55 as the report gives it) */
    char ecdsa_public_key[HEX_SIZE(65)]; /* uncompressed secp256k1, hex (E2EE), or "" */
    char ed25519_key[HEX_SIZE(32)];      /* hex, or "" when the remote has no Ed25519 key */
    int simulated;                       /* accepted only with --allow-simulated */
} lp_pins_t;

/* ---- attestation side (lp_att.c) ---- */
/* Starts the attestation thread; the first verification runs at once (in that thread). 0 or
 * -1 (message on stderr). */
int lp_att_start(const lp_opts_t *o);
void lp_att_stop(void);
/* 1 and *out filled while the remote is verified; 0 with why (one sentence naming the failed
 * check, or "verification in progress") otherwise. While a verification that withdrew the
 * pins is under way (a kick's, or the first one), waits for its result (up to 10 s) rather
 * than answering "in progress" at once. Any thread. */
int lp_att_pins(lp_pins_t *out, char *why, size_t cap);
/* The relay met a TLS key other than the pinned one (or a pinned connection failed on it):
 * mark the remote unverified and re-verify now. Waits up to wait_ms for that verification and
 * returns what lp_att_pins would then return. Any thread. */
int lp_att_kick(const char *reason, int wait_ms, lp_pins_t *out, char *why, size_t cap);

/* One relayed answer's outcome, for the counters and the recent-answers list. check: the
 * failed check's name ("signature.ecdsa", "signature.text", "signature.missing_trailer",
 * ...) or NULL when it verified. id: the record id (may be NULL). No prompt or completion
 * text. Any thread. */
void lp_att_answer(const char *route, const char *id, int stream, const char *check);

/* ---- the status documents (lp_status.c) ---- */
/* GET /verification: JSON (what was verified, when, the checklist, measurements, keys, TCB
 * status, policy, counts of answers verified and rejected, the last answers). */
void lp_status_json(buf_t *out);
/* GET /: the same as one self-contained HTML page (no script, no external asset). */
void lp_status_html(buf_t *out);

/* ---- relay side (lp_main.c) ---- */
/* The `proxy` subcommand: parses nothing (main.c did), runs until SIGINT/SIGTERM. Exit code. */
int cmd_proxy(vopts_t *vo, lp_opts_t *o);

#endif
