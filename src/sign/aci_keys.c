/* ACI E2EE v2 key holder (sign/aci_keys.h). */
#include "sign/aci_keys.h"

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
    char *keyset;
    char *e2ee;
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

static int build_keyset(aci_keys_t *k, const uint8_t *tls_spki, int64_t not_after)
{
    buf_t e = BUF_INIT, ks = BUF_INIT;
    /* JCS: array order is kept; member names sorted (algo < key_id < public_key). */
    int rc = buf_puts(&e, "[") ||
             put_entry(&e, e2ee_aci_suite_name(E2EE_C_ACI_X25519), "x25519", k->x_pub,
                       sizeof k->x_pub) ||
             buf_puts(&e, ",") ||
             put_entry(&e, e2ee_aci_suite_name(E2EE_C_ACI_SECP256K1), "secp256k1", k->secp_pub,
                       sizeof k->secp_pub) ||
             buf_puts(&e, "]");
    if (!rc)
        rc = buf_puts(&ks, "{\"e2ee_public_keys\":") || buf_append(&ks, e.data, e.len) ||
             buf_printf(&ks, ",\"not_after\":%lld,\"receipt_signing_keys\":[],\"subject\":null,"
                             "\"tls_public_keys\":[",
                        (long long)not_after);
    if (!rc && tls_spki) {
        char sh[65];
        hex_encode(sh, tls_spki, 32);
        rc = buf_printf(&ks, "{\"spki_sha256\":\"%s\"}", sh);
    }
    if (!rc)
        rc = buf_puts(&ks, "]}");
    if (rc) {
        buf_free(&e);
        buf_free(&ks);
        return -1;
    }
    char h[SHA256_HEX_LEN + 1];
    sha256_hex(ks.data, ks.len, h);
    snprintf(k->digest, sizeof k->digest, "sha256:%s", h);
    k->keyset = ks.data; /* buf_t data is NUL-terminated, heap-owned */
    k->e2ee = e.data;
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
    if (e2ee_x25519_public(k->x_pub, sec->x25519_sk) != E2EE_OK ||
        e2ee_secp_public(k->secp_pub, sec->secp_sk) != E2EE_OK ||
        sodium_mprotect_readonly(sec) != 0 || build_keyset(k, tls_spki, not_after) != 0) {
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
    free(k);
}

const char *aci_keys_keyset_json(const aci_keys_t *k) { return k->keyset; }
const char *aci_keys_digest(const aci_keys_t *k) { return k->digest; }
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
