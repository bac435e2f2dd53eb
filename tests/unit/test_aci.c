/* Unit tests for sign/aci_keys.h and the ACI report_data (attest/provider.h): the keyset's
 * JCS bytes and digest for fixed keys, expected values computed outside this code (Python's
 * json.dumps(sort_keys=True, separators=(',',':')) and hashlib, with the public keys of the
 * formats document §10.1 and §10.2); a field sealed to each suite's key opens only with its
 * AAD; random keys differ. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "attest/provider.h"
#include "core/hex.h"
#include "e2ee/e2ee.h"
#include "sign/aci_keys.h"

static const char KEYSET[] =
    "{\"e2ee_public_keys\":[{\"algo\":\"x25519-aes-256-gcm-hkdf-sha256\",\"key_id\":"
    "\"aci-e2ee-v2-x25519-3d74359e38a88a42\",\"public_key\":"
    "\"5dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef22\"},{\"algo\":"
    "\"secp256k1-aes-256-gcm-hkdf-sha256\",\"key_id\":\"aci-e2ee-v2-secp256k1-a1471e33e41c53a8\","
    "\"public_key\":\"04dbdac57b8af58ecca52cf3a2ba18c9930e9ab24735d700005695ef5d55cd9fde9aba1e3ef0"
    "930f669356198f2059bd9eed082ef49bae5d5d5b713f6ba7d58215\"}],\"not_after\":1790000000,"
    "\"receipt_signing_keys\":[],\"subject\":null,\"tls_public_keys\":[{\"spki_sha256\":"
    "\"abababababababababababababababababababababababababababababababab\"}]}";
static const char DIGEST[] =
    "sha256:d57c3d49d01b635db7264b052db5579ba35f316fb9dc0ccdaafd1a2c1bba5144";

static aci_keys_t *fixed(void)
{
    uint8_t x[32], k1[32], spki[32];
    memset(x, 3, 32);
    memset(spki, 0xab, 32);
    assert_int_equal(hex_decode(k1, 32, "ac0974bec39a17e36ba4a6b4d238ff944bacb35e5dc4af0f3347e5873179670f", 64), 32);
    aci_keys_t *k = aci_keys_from_secrets(x, k1, spki, 1790000000);
    assert_non_null(k);
    return k;
}

static void test_keyset_bytes_and_digest(void **st)
{
    (void)st;
    aci_keys_t *k = fixed();
    assert_string_equal(aci_keys_keyset_json(k), KEYSET);
    assert_string_equal(aci_keys_digest(k), DIGEST);
    assert_non_null(strstr(KEYSET, aci_keys_e2ee_json(k)));
    aci_keys_free(k);
}

static void test_report_data(void **st)
{
    (void)st;
    uint8_t rd[64];
    char h[129];
    char nonce[65];
    memset(nonce, 0, sizeof nonce);
    for (int i = 0; i < 32; i++)
        memcpy(nonce + 2 * i, "0f", 2);
    attest_aci_report_data(DIGEST, nonce, rd);
    hex_encode(h, rd, 64);
    assert_string_equal(h, "b4b24155b806771215c2f6fae5b5b7664ee42ca6a1c35216bc13503d351653c6"
                           "0000000000000000000000000000000000000000000000000000000000000000");
    attest_aci_report_data(DIGEST, NULL, rd);
    hex_encode(h, rd, 64);
    assert_string_equal(h, "fbf1861456b4466b215ee1cdd03f50c4945356bf0972779524a8daa0539e8e45"
                           "0000000000000000000000000000000000000000000000000000000000000000");
}

static void test_open_each_suite(void **st)
{
    (void)st;
    aci_keys_t *k = fixed();
    const e2ee_cipher_t suites[] = {E2EE_C_ACI_X25519, E2EE_C_ACI_SECP256K1};
    for (size_t i = 0; i < 2; i++) {
        size_t pn = 0;
        const uint8_t *pub = aci_keys_public(k, (int)suites[i], &pn);
        assert_non_null(pub);
        assert_int_equal(pn, suites[i] == E2EE_C_ACI_X25519 ? 32 : 65);
        const uint8_t aad[] = "{\"field\":\"messages.0.content\"}";
        uint8_t blob[256], out[64];
        char hex[513];
        size_t bn = 0, on = 0;
        assert_int_equal(e2ee_seal(suites[i], pub, pn, aad, sizeof aad - 1,
                                   (const uint8_t *)"hello", 5, blob, sizeof blob, &bn),
                         E2EE_OK);
        hex_encode(hex, blob, bn);
        assert_int_equal(aci_keys_open_hex(k, (int)suites[i], hex, 2 * bn, aad, sizeof aad - 1,
                                           out, sizeof out, &on),
                         E2EE_OK);
        assert_int_equal(on, 5);
        assert_memory_equal(out, "hello", 5);
        /* another AAD, the other suite's key, a legacy cipher: nothing opens */
        assert_int_equal(aci_keys_open_hex(k, (int)suites[i], hex, 2 * bn, aad, sizeof aad - 2,
                                           out, sizeof out, &on),
                         E2EE_ERR_DECRYPT);
        assert_int_not_equal(aci_keys_open_hex(k, (int)suites[1 - i], hex, 2 * bn, aad,
                                               sizeof aad - 1, out, sizeof out, &on),
                             E2EE_OK);
        assert_int_equal(aci_keys_open_hex(k, E2EE_C_SECP_AESGCM, hex, 2 * bn, aad,
                                           sizeof aad - 1, out, sizeof out, &on),
                         E2EE_ERR_INTERNAL);
    }
    size_t n;
    assert_null(aci_keys_public(k, E2EE_C_X25519_AESGCM, &n));
    aci_keys_free(k);
}

static void test_random_keys_differ(void **st)
{
    (void)st;
    aci_keys_t *a = aci_keys_new_random(NULL, 1790000000), *b = aci_keys_new_random(NULL, 1790000000);
    assert_non_null(a);
    assert_non_null(b);
    assert_string_not_equal(aci_keys_digest(a), aci_keys_digest(b));
    assert_non_null(strstr(aci_keys_keyset_json(a), "\"tls_public_keys\":[]}"));
    aci_keys_free(a);
    aci_keys_free(b);
    aci_keys_free(NULL);
}

static void test_invalid_secp_secret(void **st)
{
    (void)st;
    uint8_t x[32] = {1}, zero[32] = {0};
    assert_null(aci_keys_from_secrets(x, zero, NULL, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keyset_bytes_and_digest),
        cmocka_unit_test(test_report_data),
        cmocka_unit_test(test_open_each_suite),
        cmocka_unit_test(test_random_keys_differ),
        cmocka_unit_test(test_invalid_secp_secret),
    };
    return cmocka_run_group_tests_name("aci", tests, NULL, NULL);
}
