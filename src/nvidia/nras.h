/* NVIDIA Remote Attestation Service (NRAS) v3 results (shared/docs/tee-formats.md §4.4): the detached
 * EAT [["JWT", overall], {"GPU-0": jwt, ...}], its ES384 JWTs checked against a JWKS chosen by
 * `kid`, the overall claims (eat_nonce, x-nvidia-overall-att-result, iss, exp/nbf) and the
 * `submods` digests that bind each per-GPU JWT to the overall one.
 *
 * submods digest: {"GPU-i": ["DIGEST", ["SHA-256", hex]]} where hex = lowercase hex of
 * SHA-256 over the ASCII bytes of GPU-i's complete compact JWT (header.payload.signature, as
 * it appears in the response). Verified on both recorded NRAS samples (1 and 8 GPUs).
 *
 * The JWKS is trusted input (the caller fetched it from
 * https://nras.attestation.nvidia.com/.well-known/jwks.json over TLS, or recorded it); keys
 * are EC P-384 given as x/y (base64url) or x5c (base64 DER, first certificate's key). When a
 * key has both, they must agree. x5c chains are not verified here.
 *
 * Ownership: nv_jwt_t owns its parsed JSON (nv_jwt_free) and points into the caller's JWT
 * text, which must outlive it. Keys returned are new EVP_PKEY references (EVP_PKEY_free).
 * All functions are reentrant. */
#ifndef VP_NVIDIA_NRAS_H
#define VP_NVIDIA_NRAS_H
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/check.h"

struct json_object;
struct evp_pkey_st;

#define NV_NRAS_ISSUER "https://nras.attestation.nvidia.com"

typedef struct nv_jwt {
    const char *text;            /* the caller's compact JWT */
    size_t len;
    size_t signing_len;          /* text[0, signing_len) = "header.payload", what is signed */
    struct json_object *header;  /* owned */
    struct json_object *claims;  /* owned */
    uint8_t sig[132];
    size_t sig_len;
    char alg[16];                /* "" when absent */
    char kid[256];               /* "" when absent */
} nv_jwt_t;

/* base64url without padding (padding tolerated on input). Returns bytes written or -1. */
long nv_b64url_decode(uint8_t *out, size_t cap, const char *in, size_t len);
/* Writes the base64url text (no padding) and a NUL; out needs (4*n+2)/3+1 bytes. */
void nv_b64url_encode(char *out, const uint8_t *in, size_t n);

/* Splits and decodes a compact JWS. 0, or -1 when malformed (no JSON object header/claims,
 * bad base64url, signature over 132 bytes). On -1 the struct holds nothing to free. */
int nv_jwt_parse(const char *jwt, size_t len, nv_jwt_t *out);
void nv_jwt_free(nv_jwt_t *j);

/* The JWKS key with that kid: 1 and *out (EVP_PKEY_free), 0 when no key has that kid,
 * -1 when the JWKS is malformed or that key is unusable (not EC P-384, x/y ≠ x5c). */
int nv_jwks_key(const char *jwks_json, size_t len, const char *kid, struct evp_pkey_st **out);

/* ES384 over signing input with key (P-384). 1 valid, 0 invalid (also: alg is not ES384),
 * -1 error. */
int nv_jwt_verify(const nv_jwt_t *j, struct evp_pkey_st *key);

/* The whole NRAS response. jwks_json NULL (or jlen 0): signature lines are SKIP "no JWKS".
 * expected_nonce NULL: nonce lines SKIP. at = 0: now. Lines: nras.format, nras.overall.
 * {signature,issuer,expiry,nonce,result}, nras.submods, and per GPU key K ("GPU-0"...):
 * nras.K.{digest,signature,expiry,nonce,claims}. Returns 0 when nothing failed (SKIP allowed),
 * 1 when a check failed, -1 when the response, a JWT or the JWKS could not be parsed. */
int nv_verify_nras(const char *response_json, size_t len, const char *jwks_json, size_t jlen,
                   const uint8_t expected_nonce[32], time_t at, checklist_t *cl);

#endif
