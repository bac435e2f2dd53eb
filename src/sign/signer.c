/* The proxy's two signing keys and the matching verification helpers. Secret keys sit in
 * one libsodium guarded allocation (guard pages, mlock, read-only after set-up) and are
 * wiped on free. One secp256k1 context, randomized once, is shared read-only by all threads. */
#include "sign/signer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <sodium.h>

#include "core/hex.h"
#include "core/log.h"
#include "e2ee/e2ee.h"
#include "sign/keccak.h"

struct signer_secrets {
    uint8_t ecdsa_sk[32];
    uint8_t ed25519_sk[crypto_sign_SECRETKEYBYTES]; /* seed || public key, libsodium form */
};

/* A recoverable secp256k1 signature as Ethereum writes it: r (32) || s (32) || v (1). */
#define RSV_LEN 65

struct signer {
    struct signer_secrets *sec; /* sodium_malloc'd, read-only after creation */
    uint8_t ecdsa_pub[SIGNER_ECDSA_PUB_LEN];
    uint8_t address[20];
    uint8_t ed25519_pub[crypto_sign_PUBLICKEYBYTES];
    char address_str[ETH_ADDRESS_LEN + 1];
    char ecdsa_pub_hex[2 * SIGNER_ECDSA_PUB_LEN + 1];
    char ed25519_pub_hex[SIGNER_ED25519_PUB_HEX_LEN + 1];
};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static secp256k1_context *g_ctx; /* written once under g_once, read-only afterwards */
static int g_init_ok;

static void signer_init_once(void)
{
    if (sodium_init() < 0) {
        LOG_ERROR("sign: sodium_init failed");
        return;
    }
    secp256k1_context *ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    if (!ctx) {
        LOG_ERROR("sign: secp256k1_context_create failed");
        return;
    }
    /* Blinding against side channels; the seed need not be secret afterwards. */
    uint8_t seed[32];
    randombytes_buf(seed, sizeof seed);
    int ok = secp256k1_context_randomize(ctx, seed);
    sodium_memzero(seed, sizeof seed);
    if (!ok) {
        secp256k1_context_destroy(ctx);
        LOG_ERROR("sign: secp256k1_context_randomize failed");
        return;
    }
    g_ctx = ctx;
    g_init_ok = 1;
}

int signer_global_init(void)
{
    if (pthread_once(&g_once, signer_init_once) != 0)
        return -1;
    return g_init_ok ? 0 : -1;
}

void eip55_format(const uint8_t addr[20], char out[ETH_ADDRESS_LEN + 1])
{
    char lower[41];
    uint8_t h[32];
    hex_encode(lower, addr, 20);
    keccak256(lower, 40, h);
    out[0] = '0';
    out[1] = 'x';
    for (int i = 0; i < 40; i++) {
        char c = lower[i];
        unsigned nib = (i & 1) ? (h[i / 2] & 0x0f) : (h[i / 2] >> 4);
        if (c >= 'a' && c <= 'f' && nib >= 8)
            c = (char)(c - 'a' + 'A');
        out[2 + i] = c;
    }
    out[42] = '\0';
}

/* address = last 20 bytes of keccak256(x||y) */
static void eth_address_of_pubkey(const secp256k1_pubkey *pk, uint8_t pub64[64], uint8_t addr[20])
{
    uint8_t ser[1 + SIGNER_ECDSA_PUB_LEN]; /* 04 || x || y */
    size_t len = sizeof ser;
    secp256k1_ec_pubkey_serialize(g_ctx, ser, &len, pk, SECP256K1_EC_UNCOMPRESSED);
    uint8_t h[32];
    keccak256(ser + 1, 64, h);
    if (pub64)
        memcpy(pub64, ser + 1, 64);
    memcpy(addr, h + 12, 20);
}

static signer_t *signer_build(struct signer_secrets *sec)
{
    signer_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    secp256k1_pubkey pk;
    if (!secp256k1_ec_pubkey_create(g_ctx, &pk, sec->ecdsa_sk)) {
        free(s);
        return NULL;
    }
    s->sec = sec;
    eth_address_of_pubkey(&pk, s->ecdsa_pub, s->address);
    eip55_format(s->address, s->address_str);
    hex_encode(s->ecdsa_pub_hex, s->ecdsa_pub, 64);
    memcpy(s->ed25519_pub, sec->ed25519_sk + 32, 32); /* libsodium sk = seed || pk */
    hex_encode(s->ed25519_pub_hex, s->ed25519_pub, 32);
    return s;
}

static void secrets_free(struct signer_secrets *sec)
{
    if (!sec)
        return;
    sodium_mprotect_readwrite(sec);
    sodium_memzero(sec, sizeof *sec);
    sodium_free(sec);
}

signer_t *signer_from_secrets(const uint8_t ecdsa_sk[32], const uint8_t ed25519_seed[32])
{
    if (signer_global_init() != 0 || !ecdsa_sk || !ed25519_seed)
        return NULL;
    if (!secp256k1_ec_seckey_verify(g_ctx, ecdsa_sk))
        return NULL;
    struct signer_secrets *sec = sodium_malloc(sizeof *sec);
    if (!sec)
        return NULL;
    memcpy(sec->ecdsa_sk, ecdsa_sk, 32);
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    if (crypto_sign_seed_keypair(pk, sec->ed25519_sk, ed25519_seed) != 0) {
        secrets_free(sec);
        return NULL;
    }
    if (sodium_mprotect_readonly(sec) != 0) {
        secrets_free(sec);
        return NULL;
    }
    signer_t *s = signer_build(sec);
    if (!s)
        secrets_free(sec);
    return s;
}

signer_t *signer_new_random(void)
{
    if (signer_global_init() != 0)
        return NULL;
    /* Drawn straight into guarded memory so the raw secrets never touch the stack. */
    struct { uint8_t sk[32]; uint8_t seed[32]; } *tmp = sodium_malloc(64);
    if (!tmp)
        return NULL;
    do {
        randombytes_buf(tmp->sk, sizeof tmp->sk);
    } while (!secp256k1_ec_seckey_verify(g_ctx, tmp->sk));
    randombytes_buf(tmp->seed, sizeof tmp->seed);
    signer_t *s = signer_from_secrets(tmp->sk, tmp->seed);
    sodium_memzero(tmp, 64);
    sodium_free(tmp);
    return s;
}

void signer_free(signer_t *s)
{
    if (!s)
        return;
    secrets_free(s->sec);
    sodium_memzero(s, sizeof *s);
    free(s);
}

const char *signer_ecdsa_address(const signer_t *s) { return s->address_str; }
const uint8_t *signer_ecdsa_address_bytes(const signer_t *s) { return s->address; }
const char *signer_ecdsa_pubkey_hex(const signer_t *s) { return s->ecdsa_pub_hex; }
const uint8_t *signer_ecdsa_pubkey(const signer_t *s) { return s->ecdsa_pub; }
const char *signer_ed25519_pubkey_hex(const signer_t *s) { return s->ed25519_pub_hex; }
const uint8_t *signer_ed25519_pubkey(const signer_t *s) { return s->ed25519_pub; }

int eth_personal_digest(const char *text, size_t n, uint8_t out[32])
{
    static const char prefix[] = "\x19" "Ethereum Signed Message:\n";
    char len[24];
    if (!text && n)
        return -1;
    int ll = snprintf(len, sizeof len, "%zu", n);
    if (ll <= 0 || (size_t)ll >= sizeof len)
        return -1;
    keccak256_ctx c;
    keccak256_init(&c);
    keccak256_update(&c, prefix, sizeof prefix - 1);
    keccak256_update(&c, len, (size_t)ll);
    if (n)
        keccak256_update(&c, text, n);
    keccak256_final(&c, out);
    return 0;
}

int signer_sign_ecdsa(const signer_t *s, const char *text, size_t n, char out[SIGNER_ECDSA_SIG_LEN + 1])
{
    uint8_t digest[32], rs[RSV_LEN];
    secp256k1_ecdsa_recoverable_signature sig;
    int recid = -1;
    if (!s || eth_personal_digest(text, n, digest) != 0)
        return -1;
    /* NULL noncefp = RFC 6979; libsecp256k1 always emits low-s. */
    if (!secp256k1_ecdsa_sign_recoverable(g_ctx, &sig, digest, s->sec->ecdsa_sk, NULL, NULL))
        return -1;
    secp256k1_ecdsa_recoverable_signature_serialize_compact(g_ctx, rs, &recid, &sig);
    if (recid < 0 || recid > 1) /* r >= n: probability ~2^-127, not expressible as 27/28 */
        return -1;
    rs[RSV_LEN - 1] = (uint8_t)(27 + recid);
    out[0] = '0';
    out[1] = 'x';
    hex_encode(out + 2, rs, RSV_LEN);
    return 0;
}

int signer_sign_ed25519(const signer_t *s, const char *text, size_t n, char out[SIGNER_ED25519_SIG_LEN + 1])
{
    uint8_t sig[crypto_sign_BYTES];
    if (!s || (!text && n))
        return -1;
    if (crypto_sign_detached(sig, NULL, (const unsigned char *)text, n, s->sec->ed25519_sk) != 0)
        return -1;
    hex_encode(out, sig, sizeof sig);
    return 0;
}

int eth_recover_address(const char *text, size_t n, const char *sig_hex, char out_addr[ETH_ADDRESS_LEN + 1])
{
    uint8_t rs[RSV_LEN], digest[32];
    if (!sig_hex || signer_global_init() != 0)
        return -1;
    if (sig_hex[0] == '0' && (sig_hex[1] == 'x' || sig_hex[1] == 'X'))
        sig_hex += 2;
    if (strlen(sig_hex) != 2 * RSV_LEN || hex_decode(rs, sizeof rs, sig_hex, 2 * RSV_LEN) != RSV_LEN)
        return -1;
    if (rs[RSV_LEN - 1] != 27 && rs[RSV_LEN - 1] != 28)
        return -1;
    if (eth_personal_digest(text, n, digest) != 0)
        return -1;

    secp256k1_ecdsa_recoverable_signature rsig;
    if (!secp256k1_ecdsa_recoverable_signature_parse_compact(g_ctx, &rsig, rs, rs[RSV_LEN - 1] - 27))
        return -1;
    secp256k1_ecdsa_signature plain, norm;
    secp256k1_ecdsa_recoverable_signature_convert(g_ctx, &plain, &rsig);
    if (secp256k1_ecdsa_signature_normalize(g_ctx, &norm, &plain)) /* 1 = was high-s */
        return -1;
    secp256k1_pubkey pk;
    if (!secp256k1_ecdsa_recover(g_ctx, &pk, &rsig, digest))
        return -1;
    uint8_t addr[20];
    eth_address_of_pubkey(&pk, NULL, addr);
    eip55_format(addr, out_addr);
    return 0;
}

int ed25519_verify_hex(const char *text, size_t n, const char *sig_hex, const char *pub_hex)
{
    uint8_t sig[crypto_sign_BYTES], pub[crypto_sign_PUBLICKEYBYTES];
    if (!sig_hex || !pub_hex || (!text && n) || signer_global_init() != 0)
        return -1;
    if (strlen(sig_hex) != 2 * sizeof sig || strlen(pub_hex) != 2 * sizeof pub)
        return -1;
    if (hex_decode(sig, sizeof sig, sig_hex, 2 * sizeof sig) != (long)sizeof sig ||
        hex_decode(pub, sizeof pub, pub_hex, 2 * sizeof pub) != (long)sizeof pub)
        return -1;
    return crypto_sign_verify_detached(sig, (const unsigned char *)text, n, pub) == 0 ? 0 : -1;
}

int signer_e2ee_open_hex(const signer_t *s, int cipher, const char *hex, size_t hex_n,
                         const uint8_t *aad, size_t aad_len, uint8_t *out, size_t cap,
                         size_t *out_len)
{
    if (!s || cipher < 0 || cipher >= E2EE_C_N)
        return E2EE_ERR_INTERNAL;
    e2ee_cipher_t c = (e2ee_cipher_t)cipher;
    if (e2ee_cipher_curve_secp(c))
        return e2ee_open_hex(c, 0, s->sec->ecdsa_sk, hex, hex_n, aad, aad_len, out, cap, out_len);
    uint8_t x[32];
    int rc = e2ee_ed25519_seed_to_x25519(x, s->sec->ed25519_sk);
    if (rc == E2EE_OK)
        rc = e2ee_open_hex(c, 0, x, hex, hex_n, aad, aad_len, out, cap, out_len);
    sodium_memzero(x, sizeof x);
    return rc;
}

int signer_e2ee_open_v1_ed25519(const signer_t *s, const char *hex, size_t hex_n, uint8_t *out,
                                size_t cap, size_t *out_len, int *used)
{
    if (!s)
        return E2EE_ERR_INTERNAL;
    uint8_t x[32];
    e2ee_cipher_t c = E2EE_C_N;
    int rc = e2ee_ed25519_seed_to_x25519(x, s->sec->ed25519_sk);
    if (rc == E2EE_OK)
        rc = e2ee_open_v1_ed25519(x, hex, hex_n, out, cap, out_len, &c);
    sodium_memzero(x, sizeof x);
    *used = (int)c;
    return rc;
}

int signer_x25519_pubkey(const signer_t *s, uint8_t out[32])
{
    return s && e2ee_ed25519_pub_to_x25519(out, s->ed25519_pub) == E2EE_OK ? 0 : -1;
}
