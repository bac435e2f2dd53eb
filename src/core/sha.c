/* SHA-2 helpers over OpenSSL EVP (SHA-NI when the CPU has it). */
#include "core/sha.h"

#include <openssl/evp.h>
#include <pthread.h>

#include "core/hex.h"

/* The algorithms fetched once per process: EVP_sha256() passed to EVP_DigestInit_ex makes
 * OpenSSL 3 fetch the implementation again on every call (a name lookup under a lock). If a
 * fetch fails, the legacy getters are used as before. */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static EVP_MD *g_sha256, *g_sha384; /* written once under g_once, read-only afterwards */

static void fetch_mds(void)
{
    g_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    g_sha384 = EVP_MD_fetch(NULL, "SHA384", NULL);
}

static const EVP_MD *md256(void)
{
    pthread_once(&g_once, fetch_mds);
    return g_sha256 ? g_sha256 : EVP_sha256();
}

static const EVP_MD *md384(void)
{
    pthread_once(&g_once, fetch_mds);
    return g_sha384 ? g_sha384 : EVP_sha384();
}

sha_ctx *sha256_new(void)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (c && EVP_DigestInit_ex(c, md256(), NULL) != 1) {
        EVP_MD_CTX_free(c);
        return NULL;
    }
    return c;
}

int sha256_reset(sha_ctx *c) { return EVP_DigestInit_ex(c, md256(), NULL) == 1 ? 0 : -1; }

int sha_update(sha_ctx *c, const void *p, size_t n)
{
    return EVP_DigestUpdate(c, p, n) == 1 ? 0 : -1;
}

int sha_final(sha_ctx *c, uint8_t *out)
{
    unsigned int len = 0;
    return EVP_DigestFinal_ex(c, out, &len) == 1 ? 0 : -1;
}

void sha_free(sha_ctx *c) { EVP_MD_CTX_free(c); }

void sha256(const void *p, size_t n, uint8_t out[SHA256_LEN])
{
    EVP_Digest(p, n, out, NULL, md256(), NULL);
}

void sha384(const void *p, size_t n, uint8_t out[SHA384_LEN])
{
    EVP_Digest(p, n, out, NULL, md384(), NULL);
}

void sha256_hex(const void *p, size_t n, char out[SHA256_HEX_LEN + 1])
{
    uint8_t d[SHA256_LEN];
    sha256(p, n, d);
    hex_encode(out, d, sizeof d);
}
