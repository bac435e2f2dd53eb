/* bench/e2ee_prims.c: the E2EE primitives alone, with vllm-proxy's own code (src/e2ee,
 * build/libvp.a), timed in CPU time of this thread: for each cipher the answer of a format
 * uses, the sender's key agreement (a fresh ephemeral key pair, ECDH with the client's key,
 * the key derivation: e2ee_key_derive_send) and the sealing of one token-sized field (16
 * bytes, AEAD with a random nonce, then lowercase hex as it goes into the JSON:
 * e2ee_seal_hex). bench/e2ee.mjs runs it pinned like the proxy and divides the proxy's CPU per
 * streamed token by the format's mandatory crypto per token: derive + seal for the formats
 * that seal each field with a fresh ephemeral key (NEAR), seal alone for those with one key
 * per request (Dstack).
 * Usage: e2ee_prims [iterations] -> one line "BENCHE2EEPRIM {json}" (microseconds). */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "e2ee/e2ee.h"

static double cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static const struct {
    const char *name;
    e2ee_cipher_t c;
} CIPHERS[] = {
    {"secp256k1_aesgcm", E2EE_C_SECP_AESGCM},       /* NEAR / Dstack ecdsa */
    {"x25519_aesgcm", E2EE_C_X25519_AESGCM},        /* Dstack ed25519 */
    {"nacl_xsalsa", E2EE_C_NACL_XSALSA},            /* NEAR v1 ed25519 (its clients' box) */
    {"nacl_xchacha", E2EE_C_NACL_XCHACHA},          /* NEAR v1 ed25519 (the NEAR server's) */
    {"x25519_xchacha", E2EE_C_X25519_XCHACHA},      /* NEAR v2 ed25519 */
};

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 5000;
    if (n < 1 || sodium_init() < 0)
        return 2;
    uint8_t sk[32], secp_pub[E2EE_SECP_PUB_LEN], x_pub[32];
    do
        randombytes_buf(sk, sizeof sk);
    while (e2ee_secp_public(secp_pub, sk) != E2EE_OK);
    if (e2ee_x25519_public(x_pub, sk) != E2EE_OK)
        return 1;
    const uint8_t token[16] = "token of 16 byte";
    char hex[256];
    printf("BENCHE2EEPRIM {\"iterations\":%ld", n);
    for (size_t i = 0; i < sizeof CIPHERS / sizeof CIPHERS[0]; i++) {
        e2ee_cipher_t c = CIPHERS[i].c;
        const uint8_t *peer = e2ee_cipher_curve_secp(c) ? secp_pub : x_pub;
        size_t peer_n = e2ee_cipher_curve_secp(c) ? E2EE_SECP_PUB_LEN : 32;
        e2ee_key_t k;
        for (long j = 0; j < n / 10 + 1; j++) /* warm-up */
            if (e2ee_key_derive_send(&k, c, peer, peer_n, NULL) != E2EE_OK)
                return 1;
        double t0 = cpu_us();
        for (long j = 0; j < n; j++)
            if (e2ee_key_derive_send(&k, c, peer, peer_n, NULL) != E2EE_OK)
                return 1;
        double t1 = cpu_us();
        long m = 20 * n;
        size_t hn = 0;
        for (long j = 0; j < m; j++)
            if (e2ee_seal_hex(&k, NULL, 0, token, sizeof token, hex, sizeof hex, &hn) != E2EE_OK)
                return 1;
        double t2 = cpu_us();
        e2ee_key_wipe(&k);
        printf(",\"%s\":{\"derive_us\":%.3f,\"seal16_us\":%.3f}", CIPHERS[i].name,
               (t1 - t0) / (double)n, (t2 - t1) / (double)m);
    }
    printf("}\n");
    return 0;
}
