/* Keccak-256 as Ethereum uses it (original Keccak padding 0x01, not FIPS-202 SHA3's 0x06).
 * OpenSSL 3.0 has no Keccak-256, so this is a small sponge over nettle's sha3_permute.
 * Pure functions, no global state: safe from any thread. */
#ifndef VP_SIGN_KECCAK_H
#define VP_SIGN_KECCAK_H
#include <stddef.h>
#include <stdint.h>
#include <nettle/sha3.h>

#define KECCAK256_RATE 136 /* (1600 - 2*256) / 8 bytes */

typedef struct keccak256_ctx {
    struct sha3_state st;         /* Keccak-f[1600] state, 25 little-endian lanes */
    uint8_t block[KECCAK256_RATE];
    size_t index;                 /* bytes buffered in block */
} keccak256_ctx;

void keccak256_init(keccak256_ctx *c);
void keccak256_update(keccak256_ctx *c, const void *p, size_t n);
/* Writes the digest; call keccak256_init before reusing the context. */
void keccak256_final(keccak256_ctx *c, uint8_t out[32]);
void keccak256(const void *p, size_t n, uint8_t out[32]);

#endif
