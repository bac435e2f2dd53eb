/* Signing keys and signatures: a secp256k1 key (Ethereum EIP-191 personal_sign) and an
 * Ed25519 key, used together to sign every completed response (shared/docs/reference-proxy.md §7.2).
 *
 * Ownership: signer_new_random / signer_from_secrets allocate; signer_free releases and wipes
 * the secret keys (which live in libsodium guarded, locked, read-only memory). Strings and
 * byte arrays returned by the accessors belong to the signer and live until signer_free.
 * Secrets passed to signer_from_secrets are copied; the caller wipes its own copy.
 *
 * Threads: a signer is immutable after creation, so every const function (accessors and
 * signing) may be called from any number of threads at once without locking. signer_free
 * must not race with any other use of the same signer. Process-wide state (sodium_init and
 * one randomized secp256k1 context) is set up once, thread-safely, on first use; the
 * verification helpers may be called from any thread too. Signing allocates nothing. */
#ifndef VP_SIGN_SIGNER_H
#define VP_SIGN_SIGNER_H
#include <stddef.h>
#include <stdint.h>

#define SIGNER_ECDSA_SIG_LEN 132   /* "0x" + 130 hex (r||s||v) */
#define SIGNER_ED25519_SIG_LEN 128 /* 128 hex, no prefix */
#define ETH_ADDRESS_LEN 42         /* "0x" + 40 hex */
#define SIGNER_ED25519_PUB_HEX_LEN 64 /* 64 hex, no prefix */
#define SIGNER_ECDSA_PUB_LEN 64    /* x||y, uncompressed without the 04 prefix */

typedef struct signer signer_t;

/* Sets up libsodium and the shared secp256k1 context; idempotent, thread-safe. 0 or -1.
 * Called implicitly by every function below; exposed so start-up can fail early. */
int signer_global_init(void);

signer_t *signer_new_random(void);            /* NULL on failure */
/* For KMS-derived keys and tests; NULL if ecdsa_sk is not a valid secp256k1 secret key. */
signer_t *signer_from_secrets(const uint8_t ecdsa_sk[32], const uint8_t ed25519_seed[32]);
void signer_free(signer_t *s);                /* wipes key material; NULL is a no-op */

const char *signer_ecdsa_address(const signer_t *s);          /* "0x"+40 hex, EIP-55 */
const uint8_t *signer_ecdsa_address_bytes(const signer_t *s); /* 20 bytes */
const char *signer_ecdsa_pubkey_hex(const signer_t *s);       /* 128 lowercase hex, x||y */
const uint8_t *signer_ecdsa_pubkey(const signer_t *s);        /* 64 bytes, x||y */
const char *signer_ed25519_pubkey_hex(const signer_t *s);     /* 64 lowercase hex */
const uint8_t *signer_ed25519_pubkey(const signer_t *s);      /* 32 bytes */

/* EIP-191 personal_sign over text[0..n): out = "0x"+hex(r||s||v), v = 27/28, low-s,
 * RFC 6979 deterministic nonce; NUL-terminated (133 bytes incl. NUL). 0 or -1. */
int signer_sign_ecdsa(const signer_t *s, const char *text, size_t n, char out[SIGNER_ECDSA_SIG_LEN + 1]);
/* RFC 8032 Ed25519 over text[0..n): 128 lowercase hex, no 0x, NUL-terminated. 0 or -1. */
int signer_sign_ed25519(const signer_t *s, const char *text, size_t n, char out[SIGNER_ED25519_SIG_LEN + 1]);

/* End-to-end encryption (issue 10) with the signing keys, as the NEAR and Dstack formats state
 * (../shared/docs/e2ee-formats.md §2): opens one hex field sealed to our key with cipher c
 * (src/e2ee/e2ee.h) inside the signer, so that the secrets never leave guarded memory: the
 * secp256k1 ciphers use the ECDSA secret, the X25519 ones the Ed25519 seed converted to X25519
 * (§2.2; the converted secret lives on the stack for the call and is wiped). Arguments and
 * results as e2ee_open_hex (legacy spellings: no "0x"); E2EE_OK or a negative e2ee_err_t. */
int signer_e2ee_open_hex(const signer_t *s, int cipher, const char *hex, size_t hex_n,
                         const uint8_t *aad, size_t aad_len, uint8_t *out, size_t cap,
                         size_t *out_len);
/* The v1 family with ed25519 (NEAR v1 or Dstack v1, §1.2 rule 5): trial decryption of one hex
 * field with the Ed25519 seed converted to X25519, in e2ee_open_v1_ed25519's order (XChaCha
 * box, XSalsa box, AES-GCM); at most one opens. *used = the cipher that did (an e2ee_cipher_t).
 * E2EE_OK or a negative e2ee_err_t. */
int signer_e2ee_open_v1_ed25519(const signer_t *s, const char *hex, size_t hex_n, uint8_t *out,
                                size_t cap, size_t *out_len, int *used);
/* Our X25519 public key (the Ed25519 key converted, §2.2): 32 bytes. 0 or -1. */
int signer_x25519_pubkey(const signer_t *s, uint8_t out[32]);

/* Verification helpers (the verifier program and tests). */
/* keccak256("\x19Ethereum Signed Message:\n" + decimal n + text). 0, or -1 on NULL text. */
int eth_personal_digest(const char *text, size_t n, uint8_t out[32]);
/* Recovers the EIP-55 address that produced sig_hex ("0x" optional, 130 hex, v 27/28) over
 * text as personal_sign. Rejects high-s signatures (ours and eth-keys' are always low-s).
 * 0 ok, -1 on malformed or unrecoverable signatures. Compare addresses case-insensitively. */
int eth_recover_address(const char *text, size_t n, const char *sig_hex, char out_addr[ETH_ADDRESS_LEN + 1]);
/* sig_hex: 128 hex, pub_hex: 64 hex (no prefixes). 0 valid, -1 otherwise. */
int ed25519_verify_hex(const char *text, size_t n, const char *sig_hex, const char *pub_hex);
/* EIP-55 checksummed "0x"+40 hex, NUL-terminated. */
void eip55_format(const uint8_t addr[20], char out[ETH_ADDRESS_LEN + 1]);

#endif
