/* e2ee-tool: the E2EE primitives of src/e2ee on the command line, for the cross-checks against
 * independent implementations in tests/integration/e2ee-crypto.test.mjs. Every argument and
 * output is hex (an empty argument is an empty byte string). Exit 0 with the result on stdout,
 * 1 when the operation fails (its e2ee error name on stderr), 2 on bad usage.
 *
 *   e2ee-tool seal CIPHER PEER_PUB AAD PLAINTEXT      → blob
 *   e2ee-tool open CIPHER SECRET AAD BLOB             → plaintext
 *   e2ee-tool open-v1-ed25519 X25519_SECRET BLOB      → cipher name, space, plaintext
 *   e2ee-tool pub CIPHER SECRET                       → public key (32, or 65 for secp256k1)
 *   e2ee-tool ed2x-pub ED25519_PUB | ed2x-seed SEED   → X25519 public / secret
 *   e2ee-tool aad-aci SUITE MODEL FIELD NONCE TS [ID] → the AAD bytes (MODEL, NONCE, ID as text)
 *   e2ee-tool aad-dstack-req ALGO MODEL M C NONCE TS  → the AAD bytes (text arguments)
 *
 * CIPHER: secp-aesgcm, x25519-aesgcm, nacl-xsalsa, nacl-xchacha, x25519-xchacha, aci-x25519,
 * aci-secp256k1. Not a production program: secrets on the command line. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hex.h"
#include "e2ee/e2ee.h"

static const char *const NAMES[E2EE_C_N] = {
    [E2EE_C_SECP_AESGCM] = "secp-aesgcm",       [E2EE_C_X25519_AESGCM] = "x25519-aesgcm",
    [E2EE_C_NACL_XSALSA] = "nacl-xsalsa",       [E2EE_C_NACL_XCHACHA] = "nacl-xchacha",
    [E2EE_C_X25519_XCHACHA] = "x25519-xchacha", [E2EE_C_ACI_X25519] = "aci-x25519",
    [E2EE_C_ACI_SECP256K1] = "aci-secp256k1",
};

static int cipher_of(const char *s, e2ee_cipher_t *c)
{
    for (int i = 0; i < E2EE_C_N; i++)
        if (strcmp(s, NAMES[i]) == 0) {
            *c = (e2ee_cipher_t)i;
            return 0;
        }
    return -1;
}

/* Decodes hex into a malloc'd buffer (at least 1 byte), length in *n; exits 2 on bad hex. */
static uint8_t *unhex(const char *h, size_t *n)
{
    size_t l = strlen(h);
    uint8_t *b = malloc(l / 2 + 1);
    long r = b ? hex_decode(b, l / 2 + 1, h, l) : -1;
    if (r < 0) {
        fprintf(stderr, "bad hex: %.40s\n", h);
        exit(2);
    }
    *n = (size_t)r;
    return b;
}

static void print_hex(const uint8_t *p, size_t n)
{
    char *h = malloc(HEX_SIZE(n));
    if (!h)
        exit(2);
    hex_encode(h, p, n);
    printf("%s\n", h);
    free(h);
}

static int fail(int rc)
{
    fprintf(stderr, "%s\n", e2ee_err_name(rc));
    return 1;
}

static int usage(void)
{
    fprintf(stderr, "usage: see tools/e2ee-tool/main.c\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0 || argc < 2)
        return usage();
    const char *op = argv[1];
    e2ee_cipher_t c;
    size_t n1, n2, n3, n;
    int rc;
    if ((strcmp(op, "seal") == 0 || strcmp(op, "open") == 0) && argc == 6) {
        if (cipher_of(argv[2], &c) != 0)
            return usage();
        uint8_t *k = unhex(argv[3], &n1), *aad = unhex(argv[4], &n2), *in = unhex(argv[5], &n3);
        size_t cap = n3 + 200;
        uint8_t *out = malloc(cap);
        if (!out)
            return 2;
        if (op[0] == 's')
            rc = e2ee_seal(c, k, n1, aad, n2, in, n3, out, cap, &n);
        else if (n1 != 32)
            return usage();
        else
            rc = e2ee_open(c, k, in, n3, aad, n2, out, cap, &n);
        if (rc != E2EE_OK)
            return fail(rc);
        print_hex(out, n);
        return 0;
    }
    if (strcmp(op, "open-v1-ed25519") == 0 && argc == 4) {
        uint8_t *k = unhex(argv[2], &n1), out[4096];
        if (n1 != 32)
            return usage();
        rc = e2ee_open_v1_ed25519(k, argv[3], strlen(argv[3]), out, sizeof out, &n, &c);
        if (rc != E2EE_OK)
            return fail(rc);
        printf("%s ", NAMES[c]);
        print_hex(out, n);
        return 0;
    }
    if (strcmp(op, "pub") == 0 && argc == 4) {
        uint8_t *k = unhex(argv[3], &n1), pub[65];
        if (cipher_of(argv[2], &c) != 0 || n1 != 32)
            return usage();
        rc = e2ee_cipher_curve_secp(c) ? e2ee_secp_public(pub, k) : e2ee_x25519_public(pub, k);
        if (rc != E2EE_OK)
            return fail(rc);
        print_hex(pub, e2ee_cipher_curve_secp(c) ? 65 : 32);
        return 0;
    }
    if ((strcmp(op, "ed2x-pub") == 0 || strcmp(op, "ed2x-seed") == 0) && argc == 3) {
        uint8_t *k = unhex(argv[2], &n1), out[32];
        if (n1 != 32)
            return usage();
        rc = op[5] == 'p' ? e2ee_ed25519_pub_to_x25519(out, k) : e2ee_ed25519_seed_to_x25519(out, k);
        if (rc != E2EE_OK)
            return fail(rc);
        print_hex(out, 32);
        return 0;
    }
    if (strcmp(op, "aad-aci") == 0 && (argc == 7 || argc == 8)) {
        char aad[4096];
        if (cipher_of(argv[2], &c) != 0)
            return usage();
        const char *id = argc == 8 ? argv[7] : NULL;
        rc = e2ee_aad_aci(aad, sizeof aad, &n, c, argv[3], strlen(argv[3]), id, id ? strlen(id) : 0,
                          argv[4], argv[5], strlen(argv[5]), strtoll(argv[6], NULL, 10));
        if (rc != E2EE_OK)
            return fail(rc);
        print_hex((const uint8_t *)aad, n);
        return 0;
    }
    if (strcmp(op, "aad-dstack-req") == 0 && argc == 8) {
        char aad[4096];
        e2ee_algo_t a = strcmp(argv[2], "ecdsa") == 0 ? E2EE_ALGO_ECDSA : E2EE_ALGO_ED25519;
        long ci = strcmp(argv[5], "-") == 0 ? -1 : strtol(argv[5], NULL, 10);
        rc = e2ee_aad_dstack_req(aad, sizeof aad, &n, a, argv[3], strlen(argv[3]),
                                 strtoul(argv[4], NULL, 10), ci, argv[6], strlen(argv[6]),
                                 strtoll(argv[7], NULL, 10));
        if (rc != E2EE_OK)
            return fail(rc);
        print_hex((const uint8_t *)aad, n);
        return 0;
    }
    return usage();
}
