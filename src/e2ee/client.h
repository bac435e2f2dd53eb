/* The client's side of the E2EE formats (../shared/docs/e2ee-formats.md, "§" below), shared by
 * the verifier's one-shot `chat --e2ee` (verify/ve2ee.c) and the local verifying proxy's codec
 * (verify/lp_e2ee.c): the table of formats a client can speak, the client's key pair, the
 * server's attested key in the form each cipher takes, the request headers, and the answer
 * fields' AAD. Pure functions over caller buffers (the key pair draws from libsodium's RNG);
 * no I/O, no global state; any thread. */
#ifndef VP_E2EE_CLIENT_H
#define VP_E2EE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "core/hex.h"
#include "e2ee/e2ee.h"

enum {
    E2EE_FAM_DSTACK, /* X-Model-Pub-Key, X-E2EE-Version/-Nonce/-Timestamp (v2); §5, §6 */
    E2EE_FAM_NEAR,   /* X-Signing-Algo and X-Client-Pub-Key only (v2: X-Encryption-Version) */
    E2EE_FAM_ACI,    /* ACI E2EE v2 with the keyset's key, never a signing key; §7 */
};

typedef struct e2ee_client_format {
    const char *name;    /* "dstack-v1", "dstack-v2", "near-v1", "near-v2", "aci-v2" */
    int family;          /* E2EE_FAM_* */
    int version;         /* 1 or 2 */
    e2ee_cipher_t ecdsa; /* the cipher of both directions per signing algorithm (ACI: per suite, */
    e2ee_cipher_t ed25519; /* ecdsa = secp256k1, ed25519 = x25519) */
} e2ee_client_format_t;

/* The format of that name, or NULL. */
const e2ee_client_format_t *e2ee_client_format(const char *name);
/* The cipher a format uses with an algorithm. */
e2ee_cipher_t e2ee_client_cipher(const e2ee_client_format_t *f, e2ee_algo_t a);

#define E2EE_CLIENT_PUB_HEX HEX_SIZE(65)
/* A fresh client key pair for the cipher c of format family fam: *secret is what opens the
 * answers (secp256k1 scalar, or X25519 secret), pub_hex the X-Client-Pub-Key value: legacy
 * ecdsa x‖y (128 hex), legacy ed25519 an Ed25519 public key (its X25519 form is what the
 * server seals to, §2.2), ACI the suite's key whole (X25519 64 hex, secp256k1 04‖x‖y 130
 * hex). E2EE_OK or E2EE_ERR_INTERNAL. */
int e2ee_client_keypair(int fam, e2ee_cipher_t c, uint8_t secret[32],
                        char pub_hex[E2EE_CLIENT_PUB_HEX]);

/* The server's legacy (signing) key for algorithm a from its hex (signing_public_key):
 * ecdsa 64 (x‖y) or 65 bytes (04‖x‖y) on the curve → 65 bytes; ed25519 the Ed25519 key →
 * its X25519 form (32). E2EE_ERR_PUBLIC_KEY otherwise. */
int e2ee_client_server_key(e2ee_algo_t a, const char *hex, uint8_t out[E2EE_SECP_PUB_LEN],
                           size_t *out_len);

/* The request headers of a format (§1.1), "Name: value" each, NUL-terminated, written to hdr
 * and listed in hdrp (NULL-terminated). algo_name: "ecdsa"/"ed25519" (legacy formats) or
 * unused (ACI); model_pub: the server key as the report spells it (X-Model-Pub-Key: Dstack and
 * ACI); nonce and ts: Dstack v2 and ACI. Returns the number of headers. */
#define E2EE_CLIENT_HDR_MAX 8
#define E2EE_CLIENT_HDR_LEN 300
size_t e2ee_client_headers(const e2ee_client_format_t *f, const char *algo_name,
                           const char *client_pub, const char *model_pub, const char *nonce,
                           int64_t ts, char hdr[E2EE_CLIENT_HDR_MAX][E2EE_CLIENT_HDR_LEN],
                           const char *hdrp[E2EE_CLIENT_HDR_MAX + 1]);

/* The AAD of one sealed field of an answer, into aad (*aad_len = 0: the format has none):
 * Dstack v2 (§6.1): the answer object's model and id as given (NULL: ""), choice = the
 * position in choices, field = the member name; ACI (§7.3): req_model (the request's model),
 * id, path (e.g. "choices.0.message.content"). E2EE_OK or the AAD builder's error. */
int e2ee_client_resp_aad(const e2ee_client_format_t *f, e2ee_algo_t a, e2ee_cipher_t c,
                         const char *model, const char *id, size_t choice, const char *field,
                         const char *req_model, const char *path, const char *nonce, int64_t ts,
                         char *aad, size_t cap, size_t *aad_len);

#endif
