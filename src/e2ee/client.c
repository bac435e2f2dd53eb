/* The client's side of the E2EE formats (e2ee/client.h). */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "core/hex.h"
#include "e2ee/client.h"

static const e2ee_client_format_t FORMATS[] = {
    {"dstack-v1", E2EE_FAM_DSTACK, 1, E2EE_C_SECP_AESGCM, E2EE_C_X25519_AESGCM},
    {"dstack-v2", E2EE_FAM_DSTACK, 2, E2EE_C_SECP_AESGCM, E2EE_C_X25519_AESGCM},
    /* NEAR v1 ed25519: the NaCl XSalsa20 box NEAR's published clients write; vllm-proxy
     * answers with the cipher the request used (docs/API.md). */
    {"near-v1", E2EE_FAM_NEAR, 1, E2EE_C_SECP_AESGCM, E2EE_C_NACL_XSALSA},
    {"near-v2", E2EE_FAM_NEAR, 2, E2EE_C_SECP_AESGCM, E2EE_C_X25519_XCHACHA},
    /* ACI: the suite, not a signing algorithm, picks the cipher. */
    {"aci-v2", E2EE_FAM_ACI, 2, E2EE_C_ACI_SECP256K1, E2EE_C_ACI_X25519},
};

const e2ee_client_format_t *e2ee_client_format(const char *name)
{
    for (size_t i = 0; name && i < sizeof FORMATS / sizeof FORMATS[0]; i++)
        if (strcmp(name, FORMATS[i].name) == 0)
            return &FORMATS[i];
    return NULL;
}

e2ee_cipher_t e2ee_client_cipher(const e2ee_client_format_t *f, e2ee_algo_t a)
{
    return a == E2EE_ALGO_ECDSA ? f->ecdsa : f->ed25519;
}

int e2ee_client_keypair(int fam, e2ee_cipher_t c, uint8_t secret[32],
                        char pub_hex[E2EE_CLIENT_PUB_HEX])
{
    uint8_t pub[E2EE_SECP_PUB_LEN];
    if (fam == E2EE_FAM_ACI || e2ee_cipher_curve_secp(c)) {
        int secp = e2ee_cipher_curve_secp(c);
        for (int tries = 0; tries < 8; tries++) {
            randombytes_buf(secret, 32);
            int rc = secp ? e2ee_secp_public(pub, secret) : e2ee_x25519_public(pub, secret);
            if (rc == E2EE_OK) {
                /* ACI spells the key whole; legacy ecdsa as x‖y (signing_public_key's form) */
                if (fam == E2EE_FAM_ACI)
                    hex_encode(pub_hex, pub, secp ? 65 : 32);
                else
                    hex_encode(pub_hex, pub + 1, 64);
                return E2EE_OK;
            }
        }
        sodium_memzero(secret, 32);
        return E2EE_ERR_INTERNAL;
    }
    /* legacy ed25519: an Ed25519 key pair, whose X25519 form opens the answer (§2.2) */
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    if (crypto_sign_keypair(pk, sk) != 0)
        return E2EE_ERR_INTERNAL;
    int rc = e2ee_ed25519_seed_to_x25519(secret, sk);
    sodium_memzero(sk, sizeof sk);
    hex_encode(pub_hex, pk, 32);
    return rc;
}

int e2ee_client_server_key(e2ee_algo_t a, const char *hex, uint8_t out[E2EE_SECP_PUB_LEN],
                           size_t *out_len)
{
    uint8_t b[E2EE_SECP_PUB_LEN];
    size_t hn = hex ? strlen(hex) : 0;
    if (hn >= 2 && hex[0] == '0' && (hex[1] == 'x' || hex[1] == 'X'))
        hex += 2, hn -= 2;
    long n = hn ? hex_decode(b, sizeof b, hex, hn) : -1;
    if (a == E2EE_ALGO_ECDSA) {
        if (n < 0 || e2ee_parse_secp_pub(out, b, (size_t)n) != E2EE_OK)
            return E2EE_ERR_PUBLIC_KEY;
        *out_len = E2EE_SECP_PUB_LEN;
        return E2EE_OK;
    }
    if (n != 32 || e2ee_ed25519_pub_to_x25519(out, b) != E2EE_OK)
        return E2EE_ERR_PUBLIC_KEY;
    *out_len = E2EE_X25519_LEN;
    return E2EE_OK;
}

size_t e2ee_client_headers(const e2ee_client_format_t *f, const char *algo_name,
                           const char *client_pub, const char *model_pub, const char *nonce,
                           int64_t ts, char hdr[E2EE_CLIENT_HDR_MAX][E2EE_CLIENT_HDR_LEN],
                           const char *hdrp[E2EE_CLIENT_HDR_MAX + 1])
{
    size_t h = 0;
    if (f->family == E2EE_FAM_ACI) {
        /* §7.1: the five headers, never X-Signing-Algo. */
        snprintf(hdr[h++], E2EE_CLIENT_HDR_LEN, "X-E2EE-Version: 2");
        snprintf(hdr[h++], E2EE_CLIENT_HDR_LEN, "X-Client-Pub-Key: %s", client_pub);
        snprintf(hdr[h++], E2EE_CLIENT_HDR_LEN, "X-Model-Pub-Key: %s", model_pub);
        snprintf(hdr[h++], E2EE_CLIENT_HDR_LEN, "X-E2EE-Nonce: %s", nonce);
        snprintf(hdr[h++], E2EE_CLIENT_HDR_LEN, "X-E2EE-Timestamp: %lld", (long long)ts);
    } else {
        snprintf(hdr[h++], E2EE_CLIENT_HDR_LEN, "X-Signing-Algo: %s", algo_name);
        snprintf(hdr[h++], E2EE_CLIENT_HDR_LEN, "X-Client-Pub-Key: %s", client_pub);
    }
    if (f->family == E2EE_FAM_DSTACK) {
        snprintf(hdr[h++], E2EE_CLIENT_HDR_LEN, "X-Model-Pub-Key: %s", model_pub);
        if (f->version == 2) {
            snprintf(hdr[h++], E2EE_CLIENT_HDR_LEN, "X-E2EE-Version: 2");
            snprintf(hdr[h++], E2EE_CLIENT_HDR_LEN, "X-E2EE-Nonce: %s", nonce);
            snprintf(hdr[h++], E2EE_CLIENT_HDR_LEN, "X-E2EE-Timestamp: %lld", (long long)ts);
        }
    } else if (f->family == E2EE_FAM_NEAR && f->version == 2) {
        snprintf(hdr[h++], E2EE_CLIENT_HDR_LEN, "X-Encryption-Version: 2");
    }
    for (size_t i = 0; i < h; i++)
        hdrp[i] = hdr[i];
    hdrp[h] = NULL;
    return h;
}

int e2ee_client_resp_aad(const e2ee_client_format_t *f, e2ee_algo_t a, e2ee_cipher_t c,
                         const char *model, const char *id, size_t choice, const char *field,
                         const char *req_model, const char *path, const char *nonce, int64_t ts,
                         char *aad, size_t cap, size_t *aad_len)
{
    *aad_len = 0;
    if (!model)
        model = "";
    if (!id)
        id = "";
    if (f->family == E2EE_FAM_DSTACK && f->version == 2)
        return e2ee_aad_dstack_resp(aad, cap, aad_len, a, model, strlen(model), id, strlen(id),
                                    choice, field, nonce, strlen(nonce), ts);
    if (f->family == E2EE_FAM_ACI)
        return e2ee_aad_aci(aad, cap, aad_len, c, req_model, strlen(req_model), id, strlen(id),
                            path, nonce, strlen(nonce), ts);
    return E2EE_OK;
}
