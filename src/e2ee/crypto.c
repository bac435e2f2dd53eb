/* One field's blob for every E2EE cipher (e2ee/e2ee.h): key agreement (X25519 with libsodium,
 * secp256k1 ECDH-x with libsecp256k1), HKDF-SHA256 (libsodium's HMAC), AES-256-GCM (OpenSSL)
 * and XChaCha20-Poly1305 / XSalsa20-Poly1305 (libsodium). Secrets are wiped before return. */
#include "e2ee/e2ee.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <secp256k1.h>
#include <secp256k1_ecdh.h>
#include <sodium.h>
#include <string.h>

#include "core/hex.h"

/* ---- secp256k1 -------------------------------------------------------------------------- */

static secp256k1_context *g_secp;
static pthread_once_t g_secp_once = PTHREAD_ONCE_INIT;

static void secp_init(void)
{
    secp256k1_context *ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    uint8_t seed[32];
    if (!ctx)
        return;
    randombytes_buf(seed, sizeof seed);
    if (!secp256k1_context_randomize(ctx, seed)) {
        secp256k1_context_destroy(ctx);
        ctx = NULL;
    }
    sodium_memzero(seed, sizeof seed);
    g_secp = ctx;
}

static const secp256k1_context *secp(void)
{
    pthread_once(&g_secp_once, secp_init);
    return g_secp;
}

/* ECDH hash function that keeps the x coordinate (k256 raw_secret_bytes, Python ECDH). */
static int ecdh_x(unsigned char *out, const unsigned char *x, const unsigned char *y, void *data)
{
    (void)y, (void)data;
    memcpy(out, x, 32);
    return 1;
}

int e2ee_parse_secp_pub(uint8_t out[E2EE_SECP_PUB_LEN], const uint8_t *in, size_t n)
{
    uint8_t b[E2EE_SECP_PUB_LEN];
    if (n == 64) {
        b[0] = 0x04;
        memcpy(b + 1, in, 64);
    } else if (n == 65 && in[0] == 0x04) {
        memcpy(b, in, 65);
    } else {
        return E2EE_ERR_PUBLIC_KEY;
    }
    secp256k1_pubkey pk;
    if (!secp256k1_ec_pubkey_parse(secp256k1_context_static, &pk, b, sizeof b))
        return E2EE_ERR_PUBLIC_KEY;
    memcpy(out, b, sizeof b);
    return E2EE_OK;
}

int e2ee_secp_public(uint8_t pub[E2EE_SECP_PUB_LEN], const uint8_t secret[32])
{
    const secp256k1_context *ctx = secp();
    secp256k1_pubkey pk;
    size_t len = E2EE_SECP_PUB_LEN;
    if (!ctx)
        return E2EE_ERR_INTERNAL;
    if (!secp256k1_ec_pubkey_create(ctx, &pk, secret) ||
        !secp256k1_ec_pubkey_serialize(ctx, pub, &len, &pk, SECP256K1_EC_UNCOMPRESSED))
        return E2EE_ERR_PUBLIC_KEY;
    return E2EE_OK;
}

static int secp_ecdh(uint8_t shared[32], const uint8_t *peer, size_t peer_len,
                     const uint8_t secret[32])
{
    const secp256k1_context *ctx = secp();
    secp256k1_pubkey pk;
    if (!ctx)
        return E2EE_ERR_INTERNAL;
    if (peer_len != E2EE_SECP_PUB_LEN || peer[0] != 0x04 ||
        !secp256k1_ec_pubkey_parse(ctx, &pk, peer, peer_len))
        return E2EE_ERR_PUBLIC_KEY;
    if (!secp256k1_ecdh(ctx, shared, &pk, secret, ecdh_x, NULL))
        return E2EE_ERR_PUBLIC_KEY;
    return E2EE_OK;
}

/* ---- X25519 and the Ed25519 conversions ------------------------------------------------- */

int e2ee_x25519_public(uint8_t pub[32], const uint8_t secret[32])
{
    return crypto_scalarmult_base(pub, secret) == 0 ? E2EE_OK : E2EE_ERR_PUBLIC_KEY;
}

/* crypto_scalarmult refuses an all-zero output (a small-order peer key). */
static int x25519_ecdh(uint8_t shared[32], const uint8_t *peer, size_t peer_len,
                       const uint8_t secret[32])
{
    if (peer_len != E2EE_X25519_LEN)
        return E2EE_ERR_PUBLIC_KEY;
    return crypto_scalarmult(shared, secret, peer) == 0 ? E2EE_OK : E2EE_ERR_PUBLIC_KEY;
}

int e2ee_ed25519_seed_to_x25519(uint8_t x_secret[32], const uint8_t seed[32])
{
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    int rc = crypto_sign_seed_keypair(pk, sk, seed) == 0 &&
                     crypto_sign_ed25519_sk_to_curve25519(x_secret, sk) == 0
                 ? E2EE_OK
                 : E2EE_ERR_INTERNAL;
    sodium_memzero(sk, sizeof sk);
    return rc;
}

int e2ee_ed25519_pub_to_x25519(uint8_t x_pub[32], const uint8_t ed_pub[32])
{
    return crypto_sign_ed25519_pk_to_curve25519(x_pub, ed_pub) == 0 ? E2EE_OK
                                                                      : E2EE_ERR_PUBLIC_KEY;
}

/* ---- ciphers ---------------------------------------------------------------------------- */

struct cipher_desc {
    uint8_t secp, eph, nonce, aead; /* aead: AEAD_* */
    const char *info;               /* HKDF info, NULL for the NaCl boxes */
};
enum { AEAD_AESGCM, AEAD_XCHACHA, AEAD_BOX_XSALSA, AEAD_BOX_XCHACHA };

static const struct cipher_desc CIPHERS[E2EE_C_N] = {
    [E2EE_C_SECP_AESGCM] = {1, 65, 12, AEAD_AESGCM, "ecdsa_encryption"},
    [E2EE_C_X25519_AESGCM] = {0, 32, 12, AEAD_AESGCM, "ed25519_encryption"},
    [E2EE_C_NACL_XSALSA] = {0, 32, 24, AEAD_BOX_XSALSA, NULL},
    [E2EE_C_NACL_XCHACHA] = {0, 32, 24, AEAD_BOX_XCHACHA, NULL},
    [E2EE_C_X25519_XCHACHA] = {0, 32, 24, AEAD_XCHACHA, "ed25519_encryption"},
    [E2EE_C_ACI_X25519] = {0, 32, 12, AEAD_AESGCM, "aci.e2ee.v2.x25519"},
    [E2EE_C_ACI_SECP256K1] = {1, 65, 12, AEAD_AESGCM, "aci.e2ee.v2.secp256k1"},
};

static const struct cipher_desc *desc(e2ee_cipher_t c)
{
    return (unsigned)c < E2EE_C_N ? &CIPHERS[c] : NULL;
}

size_t e2ee_cipher_eph_len(e2ee_cipher_t c) { return desc(c) ? desc(c)->eph : 0; }
size_t e2ee_cipher_nonce_len(e2ee_cipher_t c) { return desc(c) ? desc(c)->nonce : 0; }
int e2ee_cipher_curve_secp(e2ee_cipher_t c) { return desc(c) ? desc(c)->secp : 0; }

int e2ee_cipher_takes_aad(e2ee_cipher_t c)
{
    return desc(c) && (desc(c)->aead == AEAD_AESGCM || desc(c)->aead == AEAD_XCHACHA);
}

static size_t overhead(const struct cipher_desc *d)
{
    return (size_t)d->eph + d->nonce + E2EE_TAG_LEN;
}

size_t e2ee_blob_len(e2ee_cipher_t c, size_t n)
{
    const struct cipher_desc *d = desc(c);
    return d && n <= SIZE_MAX - overhead(d) ? n + overhead(d) : 0;
}

size_t e2ee_plain_len(e2ee_cipher_t c, size_t blob_len)
{
    const struct cipher_desc *d = desc(c);
    return d && blob_len >= overhead(d) ? blob_len - overhead(d) : 0;
}

/* HKDF-SHA256 with no salt (= 32 zero bytes), 32 bytes of output (one expand block). */
static void hkdf32(uint8_t out[32], const uint8_t ikm[32], const char *info)
{
    static const uint8_t zero[32];
    uint8_t prk[32];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, zero, sizeof zero);
    crypto_auth_hmacsha256_update(&st, ikm, 32);
    crypto_auth_hmacsha256_final(&st, prk);
    crypto_auth_hmacsha256_init(&st, prk, sizeof prk);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)info, strlen(info));
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)"\x01", 1);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(prk, sizeof prk);
    sodium_memzero(&st, sizeof st);
}

/* The 32-byte AEAD key from the raw ECDH output: HKDF, or HSalsa20 / HChaCha20 for the boxes
 * (crypto_box_beforenm and its XChaCha twin). */
static void derive(const struct cipher_desc *d, uint8_t key[32], const uint8_t shared[32])
{
    static const uint8_t zero16[16];
    if (d->aead == AEAD_BOX_XSALSA)
        crypto_core_hsalsa20(key, zero16, shared, NULL);
    else if (d->aead == AEAD_BOX_XCHACHA)
        crypto_core_hchacha20(key, zero16, shared, NULL);
    else
        hkdf32(key, shared, d->info);
}

static int ecdh(const struct cipher_desc *d, uint8_t shared[32], const uint8_t *peer,
                size_t peer_len, const uint8_t secret[32])
{
    return d->secp ? secp_ecdh(shared, peer, peer_len, secret)
                   : x25519_ecdh(shared, peer, peer_len, secret);
}

void e2ee_key_wipe(e2ee_key_t *k)
{
    sodium_memzero(k, sizeof *k);
}

int e2ee_key_derive_send(e2ee_key_t *k, e2ee_cipher_t c, const uint8_t *peer, size_t peer_len,
                         const uint8_t *eph_secret)
{
    const struct cipher_desc *d = desc(c);
    uint8_t sk[32], shared[32];
    int rc;
    memset(k, 0, sizeof *k);
    if (!d)
        return E2EE_ERR_INTERNAL;
    if (eph_secret)
        memcpy(sk, eph_secret, 32);
    else if (d->secp) {
        do
            randombytes_buf(sk, sizeof sk);
        while (!secp256k1_ec_seckey_verify(secp256k1_context_static, sk));
    } else
        randombytes_buf(sk, sizeof sk);
    k->cipher = c;
    k->eph_len = d->eph;
    rc = d->secp ? e2ee_secp_public(k->eph_pub, sk) : e2ee_x25519_public(k->eph_pub, sk);
    if (rc == E2EE_OK)
        rc = ecdh(d, shared, peer, peer_len, sk);
    if (rc == E2EE_OK)
        derive(d, k->key, shared);
    sodium_memzero(sk, sizeof sk);
    sodium_memzero(shared, sizeof shared);
    if (rc != E2EE_OK)
        e2ee_key_wipe(k);
    return rc;
}

/* The AES-256-GCM implementation, fetched once: EVP_aes_256_gcm() in EVP_CipherInit_ex makes
 * OpenSSL 3 look the algorithm up in its provider store (under a lock) on every field. A
 * fetched EVP_CIPHER is immutable and may be shared by threads; it is kept for the process. */
static pthread_once_t g_gcm_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *g_gcm;

static void gcm_init(void) { g_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL); }

static const EVP_CIPHER *gcm_cipher(void)
{
    if (pthread_once(&g_gcm_once, gcm_init) != 0 || !g_gcm)
        return EVP_aes_256_gcm(); /* the implicit fetch, as before */
    return g_gcm;
}

/* libsodium's AES-256-GCM where the CPU has AES-NI and CLMUL (it refuses to run without):
 * no context allocation and no provider parameter lookups per field, which cost more than
 * the cipher for a token-sized field. Decided once. */
static pthread_once_t g_sgcm_once = PTHREAD_ONCE_INIT;
static int g_sgcm;

static void sgcm_init(void) { g_sgcm = sodium_init() >= 0 && crypto_aead_aes256gcm_is_available(); }

/* AES-256-GCM, ct ‖ tag. enc: 1 seal, 0 open (tag checked in constant time by libsodium or
 * OpenSSL). */
static int aes_gcm(int enc, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad,
                   size_t aad_len, const uint8_t *in, size_t n, uint8_t *out, uint8_t tag[16])
{
    if (pthread_once(&g_sgcm_once, sgcm_init) == 0 && g_sgcm) {
        if (enc)
            return crypto_aead_aes256gcm_encrypt_detached(out, tag, NULL, in, n, aad, aad_len,
                                                          NULL, nonce, key) == 0;
        return crypto_aead_aes256gcm_decrypt_detached(out, NULL, in, n, tag, aad, aad_len, nonce,
                                                      key) == 0;
    }
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int ok = 0, len = 0;
    if (!ctx || n > INT32_MAX || aad_len > INT32_MAX)
        goto done;
    if (EVP_CipherInit_ex(ctx, gcm_cipher(), NULL, NULL, NULL, enc) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) != 1 ||
        EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc) != 1)
        goto done;
    if (aad_len && EVP_CipherUpdate(ctx, NULL, &len, aad, (int)aad_len) != 1)
        goto done;
    if (n && EVP_CipherUpdate(ctx, out, &len, in, (int)n) != 1)
        goto done;
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag) != 1)
        goto done;
    if (EVP_CipherFinal_ex(ctx, out + len, &len) != 1)
        goto done;
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
        goto done;
    ok = 1;
done:
    EVP_CIPHER_CTX_free(ctx);
    return ok;
}

/* Fresh nonces from a per-thread pool of random bytes, refilled from the kernel (libsodium's
 * randombytes_buf, one getrandom call) 512 bytes at a time: a getrandom call per field cost
 * more than sealing a token. A byte is handed out once and zeroed in the pool; a forked child
 * empties the forking thread's pool (the only thread it has) so it never repeats the parent's. */
#define NONCE_POOL 512
static _Thread_local uint8_t t_pool[NONCE_POOL];
static _Thread_local size_t t_left;
static pthread_once_t g_pool_once = PTHREAD_ONCE_INIT;

static void pool_forked(void) { t_left = 0; }
static void pool_init(void) { (void)pthread_atfork(NULL, NULL, pool_forked); }

static void nonce_bytes(uint8_t *n, size_t len)
{
    (void)pthread_once(&g_pool_once, pool_init);
    if (len > NONCE_POOL) {
        randombytes_buf(n, len);
        return;
    }
    if (t_left < len) {
        randombytes_buf(t_pool, NONCE_POOL);
        t_left = NONCE_POOL;
    }
    uint8_t *p = t_pool + (NONCE_POOL - t_left);
    memcpy(n, p, len);
    sodium_memzero(p, len);
    t_left -= len;
}

int e2ee_key_seal(const e2ee_key_t *k, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                  const uint8_t *pt, size_t pt_len, uint8_t *out, size_t cap, size_t *out_len)
{
    const struct cipher_desc *d = desc(k->cipher);
    if (!d || k->eph_len != d->eph)
        return E2EE_ERR_INTERNAL;
    size_t need = e2ee_blob_len(k->cipher, pt_len);
    if (!need || cap < need)
        return E2EE_ERR_TOO_LONG;
    if (aad_len && !e2ee_cipher_takes_aad(k->cipher))
        return E2EE_ERR_INTERNAL;
    uint8_t *n = out + d->eph, *body = n + d->nonce;
    memcpy(out, k->eph_pub, d->eph);
    if (nonce)
        memcpy(n, nonce, d->nonce);
    else
        nonce_bytes(n, d->nonce);
    int ok = 0;
    switch (d->aead) {
    case AEAD_AESGCM:
        ok = aes_gcm(1, k->key, n, aad, aad_len, pt, pt_len, body, body + pt_len);
        break;
    case AEAD_XCHACHA:
    case AEAD_BOX_XCHACHA:
        ok = crypto_aead_xchacha20poly1305_ietf_encrypt(body, NULL, pt, pt_len, aad, aad_len,
                                                        NULL, n, k->key) == 0;
        break;
    case AEAD_BOX_XSALSA:
        ok = crypto_box_easy_afternm(body, pt, pt_len, n, k->key) == 0;
        break;
    }
    if (!ok) {
        sodium_memzero(out, need);
        return E2EE_ERR_INTERNAL;
    }
    *out_len = need;
    return E2EE_OK;
}

int e2ee_seal(e2ee_cipher_t c, const uint8_t *peer, size_t peer_len, const uint8_t *aad,
              size_t aad_len, const uint8_t *pt, size_t pt_len, uint8_t *out, size_t cap,
              size_t *out_len)
{
    e2ee_key_t k;
    int rc = e2ee_key_derive_send(&k, c, peer, peer_len, NULL);
    if (rc == E2EE_OK)
        rc = e2ee_key_seal(&k, NULL, aad, aad_len, pt, pt_len, out, cap, out_len);
    e2ee_key_wipe(&k);
    return rc;
}

/* Opens the n ciphertext bytes in buf in place, given the blob's parts. 1 when authentic; the
 * tag is checked before buf holds plaintext for the libsodium AEADs and after for AES-GCM
 * (the caller wipes buf on failure). */
static int open_with_key(const struct cipher_desc *d, const uint8_t key[32], const uint8_t *nonce,
                         uint8_t *buf, size_t n, const uint8_t tag[16], const uint8_t *aad,
                         size_t aad_len)
{
    switch (d->aead) {
    case AEAD_AESGCM: return aes_gcm(0, key, nonce, aad, aad_len, buf, n, buf, (uint8_t *)tag);
    case AEAD_XCHACHA:
    case AEAD_BOX_XCHACHA:
        return crypto_aead_xchacha20poly1305_ietf_decrypt_detached(buf, NULL, buf, n, tag, aad,
                                                                   aad_len, nonce, key) == 0;
    case AEAD_BOX_XSALSA: return crypto_box_open_detached_afternm(buf, buf, tag, n, nonce, key) == 0;
    }
    return 0;
}

static int open_parts(const struct cipher_desc *d, const uint8_t secret[32], const uint8_t *eph,
                      const uint8_t *nonce, uint8_t *buf, size_t n, const uint8_t tag[16],
                      const uint8_t *aad, size_t aad_len)
{
    uint8_t shared[32], key[32];
    int ok = ecdh(d, shared, eph, d->eph, secret) == E2EE_OK;
    if (ok) {
        derive(d, key, shared);
        ok = open_with_key(d, key, nonce, buf, n, tag, aad, aad_len);
    }
    sodium_memzero(shared, sizeof shared);
    sodium_memzero(key, sizeof key);
    return ok;
}

/* Where the blob's parts are: eph ‖ nonce ‖ box; the box is tag ‖ ct for the XSalsa box and
 * ct ‖ tag for every other cipher. */
static size_t ct_off(const struct cipher_desc *d)
{
    return (size_t)d->eph + d->nonce + (d->aead == AEAD_BOX_XSALSA ? E2EE_TAG_LEN : 0);
}

static size_t tag_off(const struct cipher_desc *d, size_t pt_len)
{
    return (size_t)d->eph + d->nonce + (d->aead == AEAD_BOX_XSALSA ? 0 : pt_len);
}

int e2ee_open(e2ee_cipher_t c, const uint8_t secret[32], const uint8_t *blob, size_t blob_len,
              const uint8_t *aad, size_t aad_len, uint8_t *out, size_t cap, size_t *out_len)
{
    const struct cipher_desc *d = desc(c);
    if (!d)
        return E2EE_ERR_INTERNAL;
    if (blob_len < overhead(d) || (aad_len && !e2ee_cipher_takes_aad(c)))
        return E2EE_ERR_DECRYPT;
    size_t pt_len = blob_len - overhead(d);
    if (cap < pt_len)
        return E2EE_ERR_TOO_LONG;
    uint8_t tag[E2EE_TAG_LEN];
    memcpy(tag, blob + tag_off(d, pt_len), sizeof tag);
    memmove(out, blob + ct_off(d), pt_len);
    if (!open_parts(d, secret, blob, blob + d->eph, out, pt_len, tag, aad, aad_len)) {
        sodium_memzero(out, pt_len);
        return E2EE_ERR_DECRYPT;
    }
    *out_len = pt_len;
    return E2EE_OK;
}

int e2ee_open_hex(e2ee_cipher_t c, int aci, const uint8_t secret[32], const char *hex,
                  size_t hex_n, const uint8_t *aad, size_t aad_len, uint8_t *out, size_t cap,
                  size_t *out_len)
{
    const struct cipher_desc *d = desc(c);
    if (!d)
        return E2EE_ERR_INTERNAL;
    if (aci && hex_n >= 2 && hex[0] == '0' && (hex[1] == 'x' || hex[1] == 'X'))
        hex += 2, hex_n -= 2;
    if (hex_n % 2 || hex_n / 2 < overhead(d) || (aad_len && !e2ee_cipher_takes_aad(c)))
        return E2EE_ERR_DECRYPT;
    size_t pt_len = hex_n / 2 - overhead(d);
    if (cap < pt_len)
        return E2EE_ERR_TOO_LONG;
    /* The small parts to the stack, the ciphertext straight into out, opened in place. */
    uint8_t head[E2EE_MAX_EPH + E2EE_MAX_NONCE], tag[E2EE_TAG_LEN];
    size_t hl = (size_t)d->eph + d->nonce;
    if (hex_decode(head, sizeof head, hex, 2 * hl) != (long)hl ||
        hex_decode(tag, sizeof tag, hex + 2 * tag_off(d, pt_len), 2 * E2EE_TAG_LEN) != 16 ||
        hex_decode(out, cap, hex + 2 * ct_off(d), 2 * pt_len) != (long)pt_len) {
        sodium_memzero(out, pt_len);
        return E2EE_ERR_DECRYPT;
    }
    if (!open_parts(d, secret, head, head + d->eph, out, pt_len, tag, aad, aad_len)) {
        sodium_memzero(out, pt_len);
        return E2EE_ERR_DECRYPT;
    }
    *out_len = pt_len;
    return E2EE_OK;
}

int e2ee_open_hex_cached(e2ee_cipher_t c, const uint8_t secret[32], e2ee_key_t *cache,
                         const char *hex, size_t hex_n, const uint8_t *aad, size_t aad_len,
                         uint8_t *out, size_t cap, size_t *out_len)
{
    const struct cipher_desc *d = desc(c);
    if (!d)
        return E2EE_ERR_INTERNAL;
    if (hex_n % 2 || hex_n / 2 < overhead(d) || (aad_len && !e2ee_cipher_takes_aad(c)))
        return E2EE_ERR_DECRYPT;
    size_t pt_len = hex_n / 2 - overhead(d);
    if (cap < pt_len)
        return E2EE_ERR_TOO_LONG;
    uint8_t head[E2EE_MAX_EPH + E2EE_MAX_NONCE], tag[E2EE_TAG_LEN];
    size_t hl = (size_t)d->eph + d->nonce;
    if (hex_decode(head, sizeof head, hex, 2 * hl) != (long)hl ||
        hex_decode(tag, sizeof tag, hex + 2 * tag_off(d, pt_len), 2 * E2EE_TAG_LEN) != 16 ||
        hex_decode(out, cap, hex + 2 * ct_off(d), 2 * pt_len) != (long)pt_len) {
        sodium_memzero(out, pt_len);
        return E2EE_ERR_DECRYPT;
    }
    /* The ephemeral key of the last field opened: its derived key serves again. */
    if (!(cache->cipher == c && cache->eph_len == d->eph &&
          memcmp(cache->eph_pub, head, d->eph) == 0)) {
        uint8_t shared[32];
        e2ee_key_wipe(cache);
        int ok = ecdh(d, shared, head, d->eph, secret) == E2EE_OK;
        if (ok) {
            derive(d, cache->key, shared);
            cache->cipher = c;
            cache->eph_len = d->eph;
            memcpy(cache->eph_pub, head, d->eph);
        }
        sodium_memzero(shared, sizeof shared);
        if (!ok) {
            e2ee_key_wipe(cache);
            sodium_memzero(out, pt_len);
            return E2EE_ERR_DECRYPT;
        }
    }
    if (!open_with_key(d, cache->key, head + d->eph, out, pt_len, tag, aad, aad_len)) {
        sodium_memzero(out, pt_len);
        return E2EE_ERR_DECRYPT;
    }
    *out_len = pt_len;
    return E2EE_OK;
}

int e2ee_open_v1_ed25519(const uint8_t x_secret[32], const char *hex, size_t hex_n, uint8_t *out,
                         size_t cap, size_t *out_len, e2ee_cipher_t *used)
{
    static const e2ee_cipher_t order[] = {E2EE_C_NACL_XCHACHA, E2EE_C_NACL_XSALSA,
                                          E2EE_C_X25519_AESGCM};
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        int rc = e2ee_open_hex(order[i], 0, x_secret, hex, hex_n, NULL, 0, out, cap, out_len);
        if (rc == E2EE_OK) {
            *used = order[i];
            return rc;
        }
        if (rc == E2EE_ERR_TOO_LONG)
            return rc;
    }
    return E2EE_ERR_DECRYPT;
}
