/* The answer-signature checks shared by `chat`, `signature` and the local verifying proxy:
 * the signed text against the hashes of the exact bytes, and one signature against a key.
 * Pure functions; any thread. */
#ifndef VP_VERIFY_VSIG_H
#define VP_VERIFY_VSIG_H
#include <stddef.h>

/* The signed text against want ("sha256(req):sha256(resp)", 129 bytes), parsed as
 * nearai-cloud-verifier parses it (py/chat_verifier.py, ts/chat_verifier.ts): split on ':', 2
 * parts are req:resp (the reference), 3 parts model:req:resp (the Rust proxy,
 * SIGNED_TEXT=model:req:resp); any other count is refused. The model part goes to *model
 * (NUL-terminated, cut to cap) or "" for the 2-part form. 1 when the hashes are want's. */
int vs_signed_text_ok(const char *text, const char *want, char *model, size_t cap);

/* want[130] = hex sha256(req) ':' hex sha256(resp), NUL-terminated. */
void vs_want(const void *req, size_t req_n, const void *resp, size_t resp_n, char want[130]);

enum { VS_OK = 0, VS_MALFORMED = -1, VS_MISMATCH = -2, VS_UNKNOWN_ALGO = -3 };
/* One signature over text[0..n): "ecdsa" must recover (EIP-191) to address (any case),
 * "ed25519" must verify with key (64 hex). VS_OK, or why not. recovered (>= 43 bytes, may be
 * NULL) receives the recovered address for ecdsa ("" when unrecoverable). */
int vs_verify(const char *algo, const char *text, size_t n, const char *sig, const char *key,
              char *recovered);

#endif
