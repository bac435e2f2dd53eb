/* ACI E2EE v2's own keys (issue 10 item 4; ../shared/docs/e2ee-formats.md §2.1, §7.2): one
 * key per suite, never a signing key ("Keys are per-role", spec/aci.md §3.1). The secrets sit
 * in one libsodium guarded allocation (guard pages, mlock, read-only after set-up), as the
 * signer's do, and request fields are opened here so that they never leave it.
 *
 * Where the secrets come from (src/vllm-proxy.c): the dstack KMS with GetKey paths
 * "<model>/aci-e2ee-v2-x25519-key" and "<model>/aci-e2ee-v2-secp256k1-key" (same app and
 * model -> same keys on every replica and restart), random with every other provider.
 *
 * The keyset (spec/aci.md §3.1) is kept as its RFC 8785 (JCS) text:
 * {"e2ee_public_keys":[...],"not_after":N,"receipt_signing_keys":[],"subject":null,
 *  "tls_public_keys":[...]}, with its digest "sha256:<hex>" of those bytes. With a lifetime
 * (aci_keys_set_lifetime; ACI_KEYSET_TTL) it is renewed with the same keys and
 * not_after = now + lifetime once it is past half its life, so that a long-running proxy never
 * serves an expired keyset; "every keyset change ... produces a new digest and a fresh
 * attestation report binding it" (§3.1), which /v1/aci/attestation provides on every call.
 *
 * Threads: the keys and the e2ee_public_keys text are immutable after creation; the keyset
 * and its digest are read and renewed under the object's mutex (aci_keys_current); every
 * function may run on any thread, except aci_keys_set_lifetime (before sharing). */
#ifndef VP_SIGN_ACI_KEYS_H
#define VP_SIGN_ACI_KEYS_H
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define ACI_KEY_ID_MAX 64
#define ACI_DIGEST_LEN 71 /* "sha256:" + 64 hex */

typedef struct aci_keys aci_keys_t;

/* Secrets: the X25519 secret (any 32 bytes; X25519 clamps) and the secp256k1 scalar (must be
 * valid). Copied; the caller wipes its own copy. tls_spki: 32 bytes listed in
 * tls_public_keys, or NULL. not_after: the keyset's expiry (Unix seconds). NULL on failure. */
aci_keys_t *aci_keys_from_secrets(const uint8_t x25519_sk[32], const uint8_t secp_sk[32],
                                  const uint8_t *tls_spki, int64_t not_after);
aci_keys_t *aci_keys_new_random(const uint8_t *tls_spki, int64_t not_after);
void aci_keys_free(aci_keys_t *k); /* wipes; NULL is a no-op */

/* Renew the keyset at half-life with this lifetime (seconds; 0: never, not_after stays
 * fixed). Call before the object is shared. */
void aci_keys_set_lifetime(aci_keys_t *k, int64_t lifetime_s);
/* The current keyset at wall time `now`, renewed first when due (see above): its digest
 * "sha256:<hex>" into digest (NULL: not wanted), its JCS bytes appended to keyset (NULL: not
 * wanted), its not_after (NULL: not wanted). 0, or -1 when out of memory (then the digest
 * and not_after are still those of the keyset in force). */
int aci_keys_current(aci_keys_t *k, int64_t now, char digest[ACI_DIGEST_LEN + 1], buf_t *keyset,
                     int64_t *not_after);
/* The e2ee_public_keys array alone (JSON text, for /v1/attestation/report); never changes. */
const char *aci_keys_e2ee_json(const aci_keys_t *k);

/* Our public key for an ACI suite (E2EE_C_ACI_X25519: 32 bytes, E2EE_C_ACI_SECP256K1: 65,
 * 04||x||y); *n set. NULL for any other cipher. */
const uint8_t *aci_keys_public(const aci_keys_t *k, int cipher, size_t *n);

/* Opens one ACI hex field sealed to our key of the suite (e2ee_open_hex with aci = 1).
 * E2EE_OK or a negative e2ee_err_t. */
int aci_keys_open_hex(const aci_keys_t *k, int cipher, const char *hex, size_t hex_n,
                      const uint8_t *aad, size_t aad_len, uint8_t *out, size_t cap,
                      size_t *out_len);

#endif
