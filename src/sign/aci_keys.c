/* ACI E2EE v2 key holder (sign/aci_keys.h). */
#include "sign/aci_keys.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/hex.h"
#include "core/sha.h"
#include "e2ee/e2ee.h"
#include "sign/signer.h"

struct aci_secrets {
    uint8_t x25519_sk[32];
    uint8_t secp_sk[32];
};

struct aci_keys {
    struct aci_secrets *sec; /* sodium_malloc'd, read-only after creation */
    uint8_t x_pub[E2EE_X25519_LEN];
    uint8_t secp_pub[E2EE_SECP_PUB_LEN];
    uint8_t spki[32];
    int has_spki;
    char *e2ee; /* immutable after creation */
    int64_t lifetime; /* 0: not_after fixed; else renewed at half-life (aci_keys_current) */
    pthread_mutex_t lock; /* guards the three below */
    int64_t not_after;
    char *keyset;
    char digest[ACI_DIGEST_LEN + 1];
};

static void secrets_free(struct aci_secrets *s)
{
    if (!s)
        return;
    sodium_mprotect_readwrite(s);
    sodium_memzero(s, sizeof *s);
    sodium_free(s);
}

/* key_id: the suite's short name and the first 16 hex of sha256(public key): stable for a
 * key, different when the key rotates. */
static int put_entry(buf_t *b, const char *algo, const char *short_name, const uint8_t *pub,
                     size_t n)
{
    char hex[2 * E2EE_SECP_PUB_LEN + 1], h[SHA256_HEX_LEN + 1];
    hex_encode(hex, pub, n);
    sha256_hex(pub, n, h);
    return buf_printf(b, "{\"algo\":\"%s\",\"key_id\":\"aci-e2ee-v2-%s-%.16s\",\"public_key\":\"%s\"}",
                      algo, short_name, h, hex);
}

static int build_e2ee(aci_keys_t *k)
{
    buf_t e = BUF_INIT;
    /* JCS: array order is kept; member names sorted (algo < key_id < public_key). */
    int rc = buf_puts(&e, "[") ||
             put_entry(&e, e2ee_aci_suite_name(E2EE_C_ACI_X25519), "x25519", k->x_pub,
                       sizeof k->x_pub) ||
             buf_puts(&e, ",") ||
             put_entry(&e, e2ee_aci_suite_name(E2EE_C_ACI_SECP256K1), "secp256k1", k->secp_pub,
                       sizeof k->secp_pub) ||
             buf_puts(&e, "]");
    if (rc) {
        buf_free(&e);
        return -1;
    }
    k->e2ee = e.data; /* buf_t data is NUL-terminated, heap-owned */
    return 0;
}

/* The keyset's JCS text for not_after, and its digest (caller holds the lock or owns k). */
static int build_keyset(aci_keys_t *k, int64_t not_after)
{
    buf_t ks = BUF_INIT;
    int rc = buf_puts(&ks, "{\"e2ee_public_keys\":") || buf_puts(&ks, k->e2ee) ||
             buf_printf(&ks, ",\"not_after\":%lld,\"receipt_signing_keys\":[],\"subject\":null,"
                             "\"tls_public_keys\":[",
                        (long long)not_after);
    if (!rc && k->has_spki) {
        char sh[65];
        hex_encode(sh, k->spki, 32);
        rc = buf_printf(&ks, "{\"spki_sha256\":\"%s\"}", sh);
    }
    if (!rc)
        rc = buf_puts(&ks, "]}");
    if (rc) {
        buf_free(&ks);
        return -1;
    }
    char h[SHA256_HEX_LEN + 1];
    sha256_hex(ks.data, ks.len, h);
    snprintf(k->digest, sizeof k->digest, "sha256:%s", h);
    free(k->keyset);
    k->keyset = ks.data;
    k->not_after = not_after;
    return 0;
}

aci_keys_t *aci_keys_from_secrets(const uint8_t x25519_sk[32], const uint8_t secp_sk[32],
                                  const uint8_t *tls_spki, int64_t not_after)
{
    if (signer_global_init() != 0)
        return NULL;
    aci_keys_t *k = calloc(1, sizeof *k);
    struct aci_secrets *sec = sodium_malloc(sizeof *sec);
    if (!k || !sec) {
        free(k);
        if (sec)
            sodium_free(sec);
        return NULL;
    }
    memcpy(sec->x25519_sk, x25519_sk, 32);
    memcpy(sec->secp_sk, secp_sk, 32);
    k->sec = sec;
    pthread_mutex_init(&k->lock, NULL);
    if (tls_spki) {
        memcpy(k->spki, tls_spki, 32);
        k->has_spki = 1;
    }
    if (e2ee_x25519_public(k->x_pub, sec->x25519_sk) != E2EE_OK ||
        e2ee_secp_public(k->secp_pub, sec->secp_sk) != E2EE_OK ||
        sodium_mprotect_readonly(sec) != 0 || build_e2ee(k) != 0 ||
        build_keyset(k, not_after) != 0) {
        aci_keys_free(k);
        return NULL;
    }
    return k;
}

aci_keys_t *aci_keys_new_random(const uint8_t *tls_spki, int64_t not_after)
{
    if (signer_global_init() != 0)
        return NULL;
    struct aci_secrets *tmp = sodium_malloc(sizeof *tmp);
    if (!tmp)
        return NULL;
    randombytes_buf(tmp->x25519_sk, 32);
    uint8_t pub[E2EE_SECP_PUB_LEN];
    do {
        randombytes_buf(tmp->secp_sk, 32);
    } while (e2ee_secp_public(pub, tmp->secp_sk) != E2EE_OK);
    aci_keys_t *k = aci_keys_from_secrets(tmp->x25519_sk, tmp->secp_sk, tls_spki, not_after);
    sodium_memzero(tmp, sizeof *tmp);
    sodium_free(tmp);
    return k;
}

void aci_keys_free(aci_keys_t *k)
{
    if (!k)
        return;
    secrets_free(k->sec);
    free(k->keyset);
    free(k->e2ee);
    pthread_mutex_destroy(&k->lock);
    free(k);
}

void aci_keys_set_lifetime(aci_keys_t *k, int64_t lifetime_s)
{
    k->lifetime = lifetime_s > 0 ? lifetime_s : 0;
}

int aci_keys_current(aci_keys_t *k, int64_t now, char digest[ACI_DIGEST_LEN + 1], buf_t *keyset,
                     int64_t *not_after)
{
    pthread_mutex_lock(&k->lock);
    int rc = 0;
    /* Renewed at half-life: a served keyset always has at least half its lifetime left, so a
     * digest a client verified stays unexpired for that long after it is last served. The
     * keys are the same; only not_after, and so the digest, change (spec/aci.md §3.1). */
    if (k->lifetime && now >= k->not_after - k->lifetime / 2 &&
        build_keyset(k, now + k->lifetime) != 0)
        rc = -1; /* out of memory: the old keyset stays */
    if (digest)
        memcpy(digest, k->digest, sizeof k->digest);
    if (keyset && buf_puts(keyset, k->keyset) != 0)
        rc = -1;
    if (not_after)
        *not_after = k->not_after;
    pthread_mutex_unlock(&k->lock);
    return rc;
}

const char *aci_keys_e2ee_json(const aci_keys_t *k) { return k->e2ee; }

const uint8_t *aci_keys_public(const aci_keys_t *k, int cipher, size_t *n)
{
    if (cipher == E2EE_C_ACI_X25519) {
        *n = sizeof k->x_pub;
        return k->x_pub;
    }
    if (cipher == E2EE_C_ACI_SECP256K1) {
        *n = sizeof k->secp_pub;
        return k->secp_pub;
    }
    *n = 0;
    return NULL;
}

int aci_keys_open_hex(const aci_keys_t *k, int cipher, const char *hex, size_t hex_n,
                      const uint8_t *aad, size_t aad_len, uint8_t *out, size_t cap,
                      size_t *out_len)
{
    if (!k || (cipher != E2EE_C_ACI_X25519 && cipher != E2EE_C_ACI_SECP256K1))
        return E2EE_ERR_INTERNAL;
    const uint8_t *sk = cipher == E2EE_C_ACI_X25519 ? k->sec->x25519_sk : k->sec->secp_sk;
    return e2ee_open_hex((e2ee_cipher_t)cipher, 1, sk, hex, hex_n, aad, aad_len, out, cap,
                         out_len);
}
