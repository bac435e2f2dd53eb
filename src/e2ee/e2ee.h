/* The cryptography of the five end-to-end encryption wire formats (issue 10): NEAR v1 and v2
 * (nearai/inference-proxy), the Dstack fork's v1 and v2 (Dstack-TEE/vllm-proxy) and ACI E2EE
 * v2 (Dstack-TEE/private-ai-gateway), as ../shared/docs/e2ee-formats.md describes them byte by
 * byte (section numbers below are that document's).
 *
 * Pure functions over caller buffers: no I/O, no allocation, no global state except one
 * secp256k1 context created once (thread-safe). Callable from any thread.
 *
 * Fail closed: every length is checked before it is used; any malformed, truncated or
 * unauthenticated input is an error (a negative e2ee_err_t) and leaves no plaintext in the
 * output buffer. Secrets (ECDH outputs, derived keys, ephemeral secrets) live on the stack and
 * are wiped with sodium_memzero before return; e2ee_key_t and e2ee_ctx_t hold secrets and must
 * be wiped by their owner with e2ee_key_wipe / e2ee_ctx_wipe. Comparisons of secret-dependent
 * bytes (AEAD tags) are constant time (OpenSSL's and libsodium's own).
 *
 * Layers, bottom up:
 *   ciphers (e2ee_cipher_t)  one field's blob: ephemeral key ‖ nonce ‖ AEAD box, key agreement
 *                            (X25519 or secp256k1 ECDH-x) and key derivation per §2.2
 *   keys                     Ed25519 → X25519 conversions, client-key parsing per format
 *   selection                which format a request speaks, from its headers (§1.2)
 *   AAD                      the Dstack v2 pipe strings (§6.1) and ACI's JCS objects (§7.3)
 *   hex fields               a blob as the lowercase hex string each format puts in the JSON
 */
#ifndef VP_E2EE_E2EE_H
#define VP_E2EE_E2EE_H

#include <stddef.h>
#include <stdint.h>

/* Errors. The names follow the formats' error types (§5.3, §7.4) so that the relay can map
 * each to its answer. */
typedef enum e2ee_err {
    E2EE_OK = 0,
    E2EE_ERR_HEADER_MISSING = -1,     /* e2ee_header_missing */
    E2EE_ERR_SIGNING_ALGO = -2,       /* e2ee_invalid_signing_algo / NEAR "Invalid X-Signing-Algo" */
    E2EE_ERR_PUBLIC_KEY = -3,         /* e2ee_invalid_public_key: not hex, wrong length, not a point */
    E2EE_ERR_MODEL_KEY_MISMATCH = -4, /* e2ee_model_key_mismatch */
    E2EE_ERR_VERSION = -5,            /* e2ee_invalid_version */
    E2EE_ERR_NONCE = -6,              /* e2ee_invalid_nonce */
    E2EE_ERR_TIMESTAMP = -7,          /* e2ee_invalid_timestamp (malformed or outside the window) */
    E2EE_ERR_DECRYPT = -8,            /* e2ee_decryption_failed: bad hex, short, tag mismatch */
    E2EE_ERR_TOO_LONG = -9,           /* an output does not fit the caller's buffer */
    E2EE_ERR_INTERNAL = -10,          /* a library call failed (RNG, OpenSSL) */
} e2ee_err_t;

const char *e2ee_err_name(int err); /* "e2ee_decryption_failed", ... */

/* ---- ciphers: one field's blob ---------------------------------------------------------- */

/* Every blob is  ephemeral public key ‖ nonce ‖ box,  the box keyed by a 32-byte key derived
 * from the ECDH of the ephemeral key with the recipient's key (§8.1). */
typedef enum e2ee_cipher {
    /* secp256k1 ECDH-x, HKDF-SHA256 "ecdsa_encryption", AES-256-GCM; eph 65 (04‖x‖y), nonce 12,
     * ct ‖ tag. NEAR v1/v2 ecdsa (§3.2) = Dstack v1/v2 ecdsa (§5.1). */
    E2EE_C_SECP_AESGCM,
    /* X25519, HKDF-SHA256 "ed25519_encryption", AES-256-GCM; eph 32, nonce 12, ct ‖ tag.
     * Dstack v1/v2 ed25519 (§5.1). */
    E2EE_C_X25519_AESGCM,
    /* NaCl crypto_box: key HSalsa20(X25519), XSalsa20-Poly1305; eph 32, nonce 24, tag ‖ ct.
     * NEAR v1 ed25519 as its published clients (PyNaCl, tweetnacl) write it (§3.3). */
    E2EE_C_NACL_XSALSA,
    /* crypto_box ChaChaBox: key HChaCha20(X25519), XChaCha20-Poly1305-IETF; eph 32, nonce 24,
     * ct ‖ tag. NEAR v1 ed25519 as the NEAR server writes responses (§3.3). */
    E2EE_C_NACL_XCHACHA,
    /* X25519, HKDF-SHA256 "ed25519_encryption", XChaCha20-Poly1305-IETF; eph 32, nonce 24,
     * ct ‖ tag. NEAR v2 ed25519 (§4). */
    E2EE_C_X25519_XCHACHA,
    /* ACI E2EE v2 suites (§7.2): AES-256-GCM, eph 32 / 65, nonce 12, ct ‖ tag, JCS AAD. */
    E2EE_C_ACI_X25519,    /* x25519-aes-256-gcm-hkdf-sha256, HKDF "aci.e2ee.v2.x25519" */
    E2EE_C_ACI_SECP256K1, /* secp256k1-aes-256-gcm-hkdf-sha256, HKDF "aci.e2ee.v2.secp256k1" */
    E2EE_C_N
} e2ee_cipher_t;

#define E2EE_KEY_LEN 32
#define E2EE_SECP_PUB_LEN 65 /* 04 ‖ x ‖ y */
#define E2EE_X25519_LEN 32
#define E2EE_TAG_LEN 16
#define E2EE_MAX_EPH 65
#define E2EE_MAX_NONCE 24

/* Lengths of a cipher's parts. e2ee_cipher_curve: 1 for secp256k1, 0 for X25519. */
size_t e2ee_cipher_eph_len(e2ee_cipher_t c);
size_t e2ee_cipher_nonce_len(e2ee_cipher_t c);
int e2ee_cipher_curve_secp(e2ee_cipher_t c);
/* Blob bytes for a plaintext of n bytes (eph + nonce + n + tag), and the plaintext bytes a
 * blob of n bytes holds (0 when n is shorter than the overhead: the open fails). */
size_t e2ee_blob_len(e2ee_cipher_t c, size_t n);
size_t e2ee_plain_len(e2ee_cipher_t c, size_t blob_len);
/* Whether an AEAD of this cipher takes AAD (AES-GCM and XChaCha20 IETF do; the NaCl boxes
 * do not, so a non-empty AAD with them is refused). */
int e2ee_cipher_takes_aad(e2ee_cipher_t c);

/* A derived sending key: what the sender needs to seal any number of fields to one recipient
 * with one ephemeral key. The formats that demand a fresh ephemeral key per field (NEAR, ACI)
 * derive one per field; the Dstack fork derives one per request (§5.1). Holds a secret. */
typedef struct e2ee_key {
    e2ee_cipher_t cipher;
    uint8_t key[E2EE_KEY_LEN];
    uint8_t eph_pub[E2EE_MAX_EPH];
    size_t eph_len;
} e2ee_key_t;

/* Sender side: a fresh ephemeral key pair (eph_secret NULL) or the given ephemeral secret
 * (tests: 32 bytes, a valid scalar), ECDH with the recipient's public key and derivation.
 * peer: X25519 32 bytes for the X25519 ciphers, 65 bytes 04‖x‖y for the secp256k1 ones
 * (e2ee_parse_secp_pub normalises the other spellings). E2EE_ERR_PUBLIC_KEY when peer is
 * not a valid key (or the X25519 output is all zero). */
int e2ee_key_derive_send(e2ee_key_t *k, e2ee_cipher_t c, const uint8_t *peer, size_t peer_len,
                         const uint8_t *eph_secret);
/* Seals pt into out (capacity >= e2ee_blob_len(c, pt_len)) with a random nonce (nonce NULL)
 * or the given one (tests); *out_len = the blob length. */
int e2ee_key_seal(const e2ee_key_t *k, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                  const uint8_t *pt, size_t pt_len, uint8_t *out, size_t cap, size_t *out_len);
void e2ee_key_wipe(e2ee_key_t *k);

/* Sealing one field with a fresh ephemeral key: derive_send + seal + wipe. */
int e2ee_seal(e2ee_cipher_t c, const uint8_t *peer, size_t peer_len, const uint8_t *aad,
              size_t aad_len, const uint8_t *pt, size_t pt_len, uint8_t *out, size_t cap,
              size_t *out_len);

/* Recipient side: opens blob with our secret (32 bytes: X25519 secret for the X25519 ciphers,
 * secp256k1 scalar for the others). Plaintext to out (capacity >= e2ee_plain_len), length in
 * *out_len. Every failure (short blob, bad ephemeral key, tag mismatch) is E2EE_ERR_DECRYPT
 * and leaves out zeroed. */
int e2ee_open(e2ee_cipher_t c, const uint8_t secret[32], const uint8_t *blob, size_t blob_len,
              const uint8_t *aad, size_t aad_len, uint8_t *out, size_t cap, size_t *out_len);

/* ---- keys ------------------------------------------------------------------------------- */

/* Ed25519 seed (32) → X25519 secret: SHA-512(seed)[0:32] clamped (§2.2). */
int e2ee_ed25519_seed_to_x25519(uint8_t x_secret[32], const uint8_t seed[32]);
/* Ed25519 public key → X25519 public key, u = (1+y)/(1−y). E2EE_ERR_PUBLIC_KEY for a
 * non-point or a small-order point (libsodium's checks; the NEAR server rejects them too). */
int e2ee_ed25519_pub_to_x25519(uint8_t x_pub[32], const uint8_t ed_pub[32]);
/* X25519 public key of a secret; secp256k1 public key (65, 04‖x‖y) of a scalar. */
int e2ee_x25519_public(uint8_t pub[32], const uint8_t secret[32]);
int e2ee_secp_public(uint8_t pub[E2EE_SECP_PUB_LEN], const uint8_t secret[32]);
/* A secp256k1 public key as 64 (x‖y) or 65 (04‖x‖y) bytes, checked to be on the curve, to
 * the 65-byte form. */
int e2ee_parse_secp_pub(uint8_t out[E2EE_SECP_PUB_LEN], const uint8_t *in, size_t n);

/* ---- format selection (§1.1, §1.2) ------------------------------------------------------ */

typedef enum e2ee_format {
    E2EE_F_NONE = 0, /* no E2EE header: plaintext */
    E2EE_F_V1,       /* NEAR v1 or Dstack v1: only trial decryption tells them apart (§1.2.5) */
    E2EE_F_NEAR_V2,  /* X-Encryption-Version: 2 (for ecdsa byte-identical to v1) */
    E2EE_F_DSTACK_V2,
    E2EE_F_ACI_V2,
} e2ee_format_t;

typedef enum e2ee_algo { E2EE_ALGO_ECDSA, E2EE_ALGO_ED25519 } e2ee_algo_t;

/* The E2EE request headers, in the order of http/server.h's enum http_e2ee_hdr. */
enum {
    E2EE_H_SIGNING_ALGO,
    E2EE_H_CLIENT_PUB_KEY,
    E2EE_H_MODEL_PUB_KEY,
    E2EE_H_VERSION,
    E2EE_H_NONCE,
    E2EE_H_TIMESTAMP,
    E2EE_H_ENCRYPTION_VERSION,
    E2EE_H_ALL_FIELDS,
    E2EE_H_TOOL_CALLS, /* X-Encrypt-Tool-Calls: an alias of X-Encrypt-All-Fields (§0) */
    E2EE_H_N
};
typedef struct e2ee_span {
    const char *p;
    size_t n;
} e2ee_span_t;
typedef struct e2ee_headers {
    e2ee_span_t v[E2EE_H_N];
    unsigned present; /* bit i: header i present (an empty value counts) */
} e2ee_headers_t;

typedef struct e2ee_sel {
    e2ee_format_t format;
    e2ee_algo_t algo;   /* legacy formats (not ACI) */
    int all_fields;     /* NEAR: X-Encrypt-All-Fields: true (any case), or its alias
                         * X-Encrypt-Tool-Calls: true or 1 (§0) */
    int model_key_sent; /* X-Model-Pub-Key present: for E2EE_F_V1 Dstack v1 stays possible */
} e2ee_sel_t;

/* Decides the format from the headers in the order of §1.2, and checks the presence rules of
 * §1.1 (missing pieces, versions, algorithm). Keys, nonce and timestamp values are checked
 * later (e2ee_parse_client_key, e2ee_check_nonce, e2ee_parse_timestamp), in each format's
 * order. */
int e2ee_select(const e2ee_headers_t *h, e2ee_sel_t *out);

/* The cipher a request field is sealed with, and the response cipher, per format and algo /
 * suite. For E2EE_F_V1 ed25519 the request cipher is found by trial (e2ee_open_v1_ed25519)
 * and the response uses the same one. */
e2ee_cipher_t e2ee_legacy_cipher(e2ee_format_t f, e2ee_algo_t a);

/* The client's public key (X-Client-Pub-Key) in the form the response cipher agrees with:
 * secp256k1 ciphers → 65 bytes; X25519 ciphers → 32 bytes X25519 (for the legacy ed25519
 * formats the header is an Ed25519 key, converted here). Accepted spellings: hex either case;
 * legacy ecdsa 64 or 65 (04) bytes; ACI: optional "0x", secp256k1 64 or 65 bytes, X25519 32.
 * *out_len = 32 or 65. */
int e2ee_parse_client_key(e2ee_cipher_t c, int aci, const char *hex, size_t n,
                          uint8_t out[E2EE_SECP_PUB_LEN], size_t *out_len);
/* X-Model-Pub-Key against our public key for the cipher: ours is 65 bytes (secp256k1,
 * 04‖x‖y) or 32 (Ed25519 for the legacy ed25519 formats, X25519 for ACI's X25519 suite).
 * The header may spell secp256k1 as 64 or 65 bytes (ACI: with an optional "0x"). 1 when it
 * names our key, 0 when it names another key or is malformed. */
int e2ee_model_key_matches(e2ee_cipher_t c, int aci, const char *hex, size_t n,
                           const uint8_t *ours, size_t ours_len);

/* Dstack v2 nonce: at least 16 characters (§6.2). ACI: exactly 64 hex digits (§7.4). */
int e2ee_check_nonce(e2ee_format_t f, const char *p, size_t n);
/* X-E2EE-Timestamp. Dstack v2: Python int() (surrounding whitespace, a sign, '_' between
 * digits); ACI: an optional '-' and decimal digits. Then |now − ts| <= window. */
int e2ee_parse_timestamp(e2ee_format_t f, const char *p, size_t n, int64_t now, int64_t window,
                         int64_t *ts);

/* ---- AAD -------------------------------------------------------------------------------- */

/* Dstack v2 (§6.1), written to out (no NUL), *out_len set. content_index < 0 writes "-". */
int e2ee_aad_dstack_req(char *out, size_t cap, size_t *out_len, e2ee_algo_t a,
                        const char *model, size_t model_n, size_t msg_index, long content_index,
                        const char *nonce, size_t nonce_n, int64_t ts);
int e2ee_aad_dstack_resp(char *out, size_t cap, size_t *out_len, e2ee_algo_t a,
                         const char *model, size_t model_n, const char *id, size_t id_n,
                         size_t choice, const char *field, const char *nonce, size_t nonce_n,
                         int64_t ts);
/* ACI v2 (§7.3): the RFC 8785 (JCS) serialisation of the request object (id == NULL) or the
 * response object (id, possibly empty). model, id and nonce must be UTF-8 (E2EE_ERR_INTERNAL
 * otherwise); E2EE_ERR_TOO_LONG when out is short. field is ASCII (a path). */
int e2ee_aad_aci(char *out, size_t cap, size_t *out_len, e2ee_cipher_t suite, const char *model,
                 size_t model_n, const char *id, size_t id_n, const char *field,
                 const char *nonce, size_t nonce_n, int64_t ts);
/* The ACI suite name (§7.2) of E2EE_C_ACI_*, else NULL. */
const char *e2ee_aci_suite_name(e2ee_cipher_t c);

/* ---- hex fields ------------------------------------------------------------------------- */

/* All five formats carry a blob as a JSON string of lowercase hex (§3.1, §5.1, §7.2); none
 * uses base64. Decoding accepts either case; ACI also a "0x" prefix. */

/* Hex characters a sealed field of pt_len bytes takes (no NUL). */
size_t e2ee_hex_field_len(e2ee_cipher_t c, size_t pt_len);
/* Seals pt and writes the lowercase hex (NUL-terminated, capacity >= hex_field_len + 1). */
int e2ee_seal_hex(const e2ee_key_t *k, const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                  size_t pt_len, char *out, size_t cap, size_t *out_len);
/* Decodes and opens a hex field, the ciphertext decoded straight into out and opened in
 * place (no other copy of the plaintext is made). Any failure (not hex, odd length, short,
 * tag) is E2EE_ERR_DECRYPT with out wiped. Capacity of out >= e2ee_plain_len(c, hex_n / 2). */
int e2ee_open_hex(e2ee_cipher_t c, int aci, const uint8_t secret[32], const char *hex,
                  size_t hex_n, const uint8_t *aad, size_t aad_len, uint8_t *out, size_t cap,
                  size_t *out_len);
/* e2ee_open_hex (no "0x" prefix) with a cache of the derived key: when the blob's ephemeral
 * key is the one of the last field opened through *cache, its derived key is used again (one
 * AEAD, no ECDH); otherwise the key is derived and kept in *cache. For a client opening the
 * Dstack fork's answers, whose every field carries the same ephemeral key (§5.1). *cache
 * starts zeroed (e2ee_key_wipe), holds a secret, and is wiped by its owner. The derived key
 * depends on nothing but our secret and the ephemeral key, so a cached one is exactly what a
 * fresh derivation gives: a forged field costs one ECDH and changes nothing else. Same
 * results as e2ee_open_hex. */
int e2ee_open_hex_cached(e2ee_cipher_t c, const uint8_t secret[32], e2ee_key_t *cache,
                         const char *hex, size_t hex_n, const uint8_t *aad, size_t aad_len,
                         uint8_t *out, size_t cap, size_t *out_len);
/* NEAR v1 / Dstack v1 with ed25519: tries the ciphers a v1 client may have used, in the NEAR
 * server's order (XChaCha box, XSalsa box) then Dstack's AES-GCM; every one is authenticated,
 * so at most one opens. *used = the one that did. */
int e2ee_open_v1_ed25519(const uint8_t x_secret[32], const char *hex, size_t hex_n, uint8_t *out,
                         size_t cap, size_t *out_len, e2ee_cipher_t *used);

#endif
