/* Keccak-256 sponge (rate 136 bytes, capacity 512 bits, pad10*1 with domain byte 0x01)
 * on top of nettle's exported Keccak-f[1600] permutation. Lanes are little-endian 64-bit
 * words, loaded byte by byte so the code does not depend on host endianness. */
#include "sign/keccak.h"

#include <string.h>

static void keccak_absorb_block(keccak256_ctx *c, const uint8_t *blk)
{
    for (size_t i = 0; i < KECCAK256_RATE / 8; i++) {
        uint64_t w = 0;
        for (int b = 7; b >= 0; b--)
            w = (w << 8) | blk[8 * i + (size_t)b];
        c->st.a[i] ^= w;
    }
    sha3_permute(&c->st);
}

void keccak256_init(keccak256_ctx *c)
{
    memset(c, 0, sizeof *c);
}

void keccak256_update(keccak256_ctx *c, const void *p, size_t n)
{
    const uint8_t *in = p;
    if (c->index) {
        size_t take = KECCAK256_RATE - c->index;
        if (take > n)
            take = n;
        memcpy(c->block + c->index, in, take);
        c->index += take;
        in += take;
        n -= take;
        if (c->index < KECCAK256_RATE)
            return;
        keccak_absorb_block(c, c->block);
        c->index = 0;
    }
    while (n >= KECCAK256_RATE) {
        keccak_absorb_block(c, in);
        in += KECCAK256_RATE;
        n -= KECCAK256_RATE;
    }
    if (n) {
        memcpy(c->block, in, n);
        c->index = n;
    }
}

void keccak256_final(keccak256_ctx *c, uint8_t out[32])
{
    memset(c->block + c->index, 0, KECCAK256_RATE - c->index);
    c->block[c->index] ^= 0x01;
    c->block[KECCAK256_RATE - 1] ^= 0x80;
    keccak_absorb_block(c, c->block);
    for (size_t i = 0; i < 4; i++)
        for (size_t b = 0; b < 8; b++)
            out[8 * i + b] = (uint8_t)(c->st.a[i] >> (8 * b));
}

void keccak256(const void *p, size_t n, uint8_t out[32])
{
    keccak256_ctx c;
    keccak256_init(&c);
    keccak256_update(&c, p, n);
    keccak256_final(&c, out);
}
