/* libFuzzer target for NRAS results (src/nvidia/nras.c): arbitrary bytes as a compact JWT, as
 * a JWKS and as a whole detached-EAT response. Invariants: never crashes or reads past the
 * input; a parsed JWT's signing input is "header.payload" inside the text and its alg/kid are
 * terminated strings; a JWKS key handed out is EC P-384; a token whose alg is not ES384 never
 * verifies; against a JWKS holding only a key made here, no signature line ever PASSes; the
 * return value agrees with the checklist. */
#include "fuzz.h"
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "core/check.h"
#include "nvidia/nras.h"

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static EVP_PKEY *key;
static char jwks[512];

static void init(void)
{
    key = EVP_EC_gen("P-384");
    CHECK(key);
    uint8_t pt[97];
    size_t n = 0;
    CHECK(EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &n) == 1 &&
          n == 97);
    char x[80], y[80];
    nv_b64url_encode(x, pt + 1, 48);
    nv_b64url_encode(y, pt + 49, 48);
    snprintf(jwks, sizeof jwks,
             "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"kid\":\"nv-eat-kid-prod-20250205-01\","
             "\"x\":\"%s\",\"y\":\"%s\"},{\"kty\":\"EC\",\"crv\":\"P-384\",\"kid\":\"\","
             "\"x\":\"%s\",\"y\":\"%s\"}]}", x, y, x, y);
}

static size_t count_id(const checklist_t *cl, const char *suffix, chk_status_t st)
{
    size_t k = 0, sl = strlen(suffix);
    for (size_t i = 0; i < cl->n; i++) {
        size_t il = strlen(cl->items[i].id);
        if (cl->items[i].status == st && il >= sl && !strcmp(cl->items[i].id + il - sl, suffix))
            k++;
    }
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!key)
        init();
    if (size > (1u << 18))
        return 0;
    char *d = malloc(size ? size : 1);
    CHECK(d);
    memcpy(d, data, size);

    /* compact JWT */
    nv_jwt_t j;
    if (nv_jwt_parse(d, size, &j) == 0) {
        CHECK(j.text == d && j.len == size && j.signing_len < size && d[j.signing_len] == '.');
        CHECK(memchr(j.alg, 0, sizeof j.alg) && memchr(j.kid, 0, sizeof j.kid));
        CHECK(j.sig_len <= sizeof j.sig && j.header && j.claims);
        int v = nv_jwt_verify(&j, key);
        CHECK(v != 1); /* nobody signs with our fresh key */
        if (strcmp(j.alg, "ES384") != 0)
            CHECK(v == 0);
        nv_jwt_free(&j);
    }

    /* JWKS */
    EVP_PKEY *k = NULL;
    int kr = nv_jwks_key(d, size, "nv-eat-kid-prod-20250205-01", &k);
    CHECK(kr >= -1 && kr <= 1);
    if (kr == 1) {
        CHECK(k && EVP_PKEY_is_a(k, "EC") && EVP_PKEY_get_bits(k) == 384);
        EVP_PKEY_free(k);
    } else {
        CHECK(k == NULL);
    }

    /* whole response, with our JWKS and without any */
    checklist_t cl = CHECKLIST_INIT;
    uint8_t nonce[32];
    memset(nonce, 0x11, sizeof nonce);
    int r = nv_verify_nras(d, size, jwks, strlen(jwks), nonce, 1750414563, &cl);
    CHECK(r >= -1 && r <= 1);
    CHECK(count_id(&cl, ".signature", CHK_PASS) == 0);
    if (r == 0)
        CHECK(check_count(&cl, CHK_FAIL) == 0);
    if (check_count(&cl, CHK_FAIL) > 0)
        CHECK(r != 0);
    if (cl.n > 1) /* past the format line there is at least one signature line, all FAIL */
        CHECK(r != 0);
    check_free(&cl);

    r = nv_verify_nras(d, size, NULL, 0, NULL, 0, &cl);
    CHECK(r >= -1 && r <= 1);
    CHECK(count_id(&cl, ".signature", CHK_PASS) == 0);
    CHECK(count_id(&cl, ".nonce", CHK_PASS) == 0);
    CHECK((r == 0) == (check_count(&cl, CHK_FAIL) == 0) || r == -1);
    check_free(&cl);
    free(d);
    return 0;
}
