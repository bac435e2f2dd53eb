/* Unit tests for sign/aci_keys.h and the ACI report_data (attest/provider.h): the keyset's
 * JCS bytes and digest for fixed keys, expected values computed outside this code (Python's
 * json.dumps(sort_keys=True, separators=(',',':')) and hashlib, with the public keys of the
 * formats document §10.1 and §10.2); a field sealed to each suite's key opens only with its
 * AAD; random keys differ; a keyset with a lifetime is re-issued (same keys, new not_after and
 * digest) once past half its life, and never without one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "attest/provider.h"
#include "core/buf.h"
#include "core/hex.h"
#include "core/sha.h"
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

/* The keyset in force at `now` (renewed when due). */
static void current(aci_keys_t *k, int64_t now, char dg[ACI_DIGEST_LEN + 1], buf_t *ks,
                    int64_t *na)
{
    ks->len = 0;
    assert_int_equal(aci_keys_current(k, now, dg, ks, na), 0);
}

static void test_keyset_bytes_and_digest(void **st)
{
    (void)st;
    aci_keys_t *k = fixed();
    char dg[ACI_DIGEST_LEN + 1];
    buf_t ks = BUF_INIT;
    int64_t na = 0;
    current(k, 1700000000, dg, &ks, &na);
    assert_string_equal(ks.data, KEYSET);
    assert_string_equal(dg, DIGEST);
    assert_int_equal(na, 1790000000);
    assert_non_null(strstr(KEYSET, aci_keys_e2ee_json(k)));
    /* without a lifetime not_after stays, even past it (the caller decides) */
    current(k, 1800000000, dg, &ks, &na);
    assert_string_equal(ks.data, KEYSET);
    assert_int_equal(na, 1790000000);
    buf_free(&ks);
    aci_keys_free(k);
}

/* The keyset with another not_after, and its digest, computed from KEYSET here. */
static void expected(long long not_after, buf_t *ks, char dg[ACI_DIGEST_LEN + 1])
{
    const char *at = strstr(KEYSET, "\"not_after\":1790000000");
    assert_non_null(at);
    ks->len = 0;
    size_t pre = (size_t)(at - KEYSET), tag = strlen("\"not_after\":1790000000");
    assert_int_equal(buf_append(ks, KEYSET, pre), 0);
    assert_int_equal(buf_printf(ks, "\"not_after\":%lld", not_after), 0);
    assert_int_equal(buf_puts(ks, KEYSET + pre + tag), 0);
    char h[SHA256_HEX_LEN + 1];
    sha256_hex(ks->data, ks->len, h);
    snprintf(dg, ACI_DIGEST_LEN + 1, "sha256:%s", h);
}

static void test_keyset_renewed_at_half_life(void **st)
{
    (void)st;
    aci_keys_t *k = fixed(); /* not_after 1790000000 */
    aci_keys_set_lifetime(k, 100000);
    char dg[ACI_DIGEST_LEN + 1], want_dg[ACI_DIGEST_LEN + 1];
    buf_t ks = BUF_INIT, want = BUF_INIT;
    int64_t na = 0;
    /* more than half the lifetime left: unchanged */
    current(k, 1790000000 - 50001, dg, &ks, &na);
    assert_string_equal(dg, DIGEST);
    assert_int_equal(na, 1790000000);
    /* half left: re-issued for now + lifetime, same keys */
    int64_t now = 1790000000 - 50000;
    current(k, now, dg, &ks, &na);
    assert_int_equal(na, now + 100000);
    expected(now + 100000, &want, want_dg);
    assert_string_equal(ks.data, want.data);
    assert_string_equal(dg, want_dg);
    assert_string_not_equal(dg, DIGEST);
    /* stable until the new half-life, then again; a proxy that slept past the expiry gets a
     * keyset valid from now, never the expired one */
    current(k, now + 49999, dg, &ks, &na);
    assert_string_equal(dg, want_dg);
    current(k, now + 10 * 100000, dg, &ks, &na);
    assert_int_equal(na, now + 11 * 100000);
    expected(now + 11 * 100000, &want, want_dg);
    assert_string_equal(dg, want_dg);
    /* the keys did not change: the e2ee_public_keys text is the one of the first keyset */
    assert_non_null(strstr(KEYSET, aci_keys_e2ee_json(k)));
    assert_non_null(strstr(ks.data, aci_keys_e2ee_json(k)));
    buf_free(&ks);
    buf_free(&want);
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
    char da[ACI_DIGEST_LEN + 1], db[ACI_DIGEST_LEN + 1];
    buf_t ks = BUF_INIT;
    current(a, 1700000000, da, &ks, NULL);
    assert_non_null(strstr(ks.data, "\"tls_public_keys\":[]}"));
    current(b, 1700000000, db, &ks, NULL);
    assert_string_not_equal(da, db);
    buf_free(&ks);
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
        cmocka_unit_test(test_keyset_renewed_at_half_life),
        cmocka_unit_test(test_report_data),
        cmocka_unit_test(test_open_each_suite),
        cmocka_unit_test(test_random_keys_differ),
        cmocka_unit_test(test_invalid_secp_secret),
    };
    return cmocka_run_group_tests_name("aci", tests, NULL, NULL);
}
