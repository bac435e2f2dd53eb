/* Attestation report building blocks shared by every quote provider: the 64-byte TDX
 * report_data that binds a signing key to a client nonce (shared/docs/reference-proxy.md §8.2), and
 * the identity a report is made for. Pure functions; any thread. */
#ifndef VP_ATTEST_ATTEST_H
#define VP_ATTEST_ATTEST_H
#include <stddef.h>
#include <stdint.h>

/* Whose attestation a report is: borrowed strings and bytes, owned by the caller. */
typedef struct attest_identity {
    const char *signing_address;    /* ecdsa: 0x-checksummed address; ed25519: 64 hex */
    const char *signing_algo;       /* "ecdsa" | "ed25519" */
    const uint8_t *id_bytes;        /* ecdsa: the 20 address bytes; ed25519: the 32-byte key */
    size_t id_len;                  /* 1..32 */
    const char *signing_public_key; /* ecdsa: 128 hex (x||y); ed25519: 64 hex */
} attest_identity_t;

/* out = id zero-padded to 32 bytes || nonce. idlen must be 1..32 (longer ids are cut to 32;
 * callers check first, attest_report_json does). */
void attest_report_data(const uint8_t *id, size_t idlen, const uint8_t nonce[32], uint8_t out[64]);

#endif
