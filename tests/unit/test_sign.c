/* Unit tests for src/sign: Keccak-256, EIP-55, EIP-191 personal_sign (secp256k1) and Ed25519.
 * Expected values come from published vectors or from independent implementations
 * (ethers@6 and Node's crypto), never from this code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "at.h"
#include "core/hex.h"
#include "sign/keccak.h"
#include "sign/signer.h"

static void hexof(const uint8_t *p, size_t n, char *out) { hex_encode(out, p, n); }

static void unhex_at(AT_PARAMS, const char *h, uint8_t *out, size_t n)
{
    at_assert_int_equal(hex_decode(out, n, h, strlen(h)), (long)n);
}
#define unhex(...) unhex_at(AT_HERE, __VA_ARGS__)

static void assert_keccak_at(AT_PARAMS, const void *p, size_t n, const char *want)
{
    uint8_t d[32];
    char h[65];
    keccak256(p, n, d);
    hexof(d, 32, h);
    at_assert_string_equal(h, want);
}
#define assert_keccak(...) assert_keccak_at(AT_HERE, __VA_ARGS__)

/* ---- Keccak-256 ---- */

static void test_keccak_vectors(void **st)
{
    (void)st;
    /* Ethereum's Keccak-256 of "" (SHA3-256("") would be a7ffc6f8...). */
    assert_keccak("", 0, "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
    assert_keccak("abc", 3, "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45");
    /* Rate-boundary lengths; expected values from ethers@6 keccak256 of 'a' repeated. */
    char a[200];
    memset(a, 'a', sizeof a);
    assert_keccak(a, 135, "34367dc248bbd832f4e3e69dfaac2f92638bd0bbd18f2912ba4ef454919cf446");
    assert_keccak(a, 136, "a6c4d403279fe3e0af03729caada8374b5ca54d8065329a3ebcaeb4b60aa386e");
    assert_keccak(a, 200, "96ea54061def936c4be90b518992fdc6f12f535068a256229aca54267b4d084d");
}

static void test_keccak_incremental(void **st)
{
    (void)st;
    uint8_t msg[300], one[32], inc[32];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 7 + 3);
    keccak256(msg, sizeof msg, one);
    for (size_t cut1 = 0; cut1 <= sizeof msg; cut1 += 17) {
        for (size_t cut2 = cut1; cut2 <= sizeof msg; cut2 += 29) {
            keccak256_ctx c;
            keccak256_init(&c);
            keccak256_update(&c, msg, cut1);
            keccak256_update(&c, msg + cut1, cut2 - cut1);
            keccak256_update(&c, msg + cut2, sizeof msg - cut2);
            keccak256_final(&c, inc);
            assert_memory_equal(one, inc, 32);
        }
    }
}

/* ---- EIP-55 ---- */

static void test_eip55_vectors(void **st)
{
    (void)st;
    /* From the EIP-55 text: mixed case, all caps, all lower. */
    static const char *v[] = {
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        "0x52908400098527886E0F7030069857D2E4169EE7",
        "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
        "0xde709f2102306220921060314715629080e2fb77",
        "0x27b1fdb04752bbc536007a920d24acb045561c26",
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t b[20];
        char out[43];
        unhex(v[i] + 2, b, 20);
        eip55_format(b, out);
        assert_string_equal(out, v[i]);
    }
}

/* ---- secp256k1 / EIP-191 ---- */

static const char *KNOWN_SK = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
static const char *KNOWN_ADDR = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";
static const char *KNOWN_PUB =
    "4e3b81af9c2234cad09d679ce6035ed1392347ce64ce405f5dcd36228a25de6e"
    "47fd35c4215d1edf53e6f83de344615ce719bdb0fd878f6ed76f06dd277956de";

/* Produced with ethers@6 (node, /tmp):
 *   const w = new Wallet('0x4c0883a6...3f362318');
 *   hashMessage(m); await w.signMessage(m);
 * RFC 6979 makes these deterministic, so ours must match byte for byte. */
static const char TEXT129[] =
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:"
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
static const struct {
    const char *msg;
    const char *digest;
    const char *sig;
} PS[] = {
    {"hello", "50b2c43fd39106bafbba0da34fc430e1f91e3c96ea2acee2bc34119f92b37750",
     "0xa5d58782075bdf09490159d634d1aae66a8f6777c7247d2f233e9511cfd7c64c"
     "34f288cdbcea5370e4863fdbe9f4d86654c2ba1d86589e9ebb64494c649008591b"},
    {TEXT129, "136c035c0a6fa9d344c3f3ca6a3a495275ee94983f6e47ae651a5810b3c307b1",
     "0xd3b6dc85db4397a18226cd7fccc343d43b20d226fe7ea432180be0fcaea48b6b"
     "4ab01ecdba085a9ad7c2f273f68dc0aa313abd1a232682e20467e156cf09ede01b"},
    {"", "5f35dce98ba4fba25530a026ed80b2cecdaa31091ba4958b99b52ea1d068adad",
     "0x8a68b4e66cd2b575338e16069d7b65f6f67c7ceae8945dccf8cb7bdb06278d93"
     "3dd9c888f3444ca4698464079a067ad3cfffe96d493b8ecf56885169d0fdfe7d1b"},
};

static const uint8_t ZERO_SEED[32];

static signer_t *known_signer_at(AT_PARAMS)
{
    uint8_t sk[32];
    unhex_at(AT_PASS, KNOWN_SK, sk, 32);
    signer_t *s = signer_from_secrets(sk, ZERO_SEED);
    at_assert_non_null(s);
    return s;
}
#define known_signer() known_signer_at(AT_HERE)

static void test_known_key_address(void **st)
{
    (void)st;
    signer_t *s = known_signer();
    assert_string_equal(signer_ecdsa_address(s), KNOWN_ADDR);
    assert_string_equal(signer_ecdsa_pubkey_hex(s), KNOWN_PUB);
    uint8_t want[20];
    unhex(KNOWN_ADDR + 2, want, 20);
    assert_memory_equal(signer_ecdsa_address_bytes(s), want, 20);
    signer_free(s);
}

static void test_invalid_secret_rejected(void **st)
{
    (void)st;
    uint8_t zero[32] = {0}, order[32];
    unhex("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", order, 32);
    assert_null(signer_from_secrets(zero, ZERO_SEED));
    assert_null(signer_from_secrets(order, ZERO_SEED));
}

static void test_personal_sign_vectors(void **st)
{
    (void)st;
    signer_t *s = known_signer();
    for (size_t i = 0; i < sizeof PS / sizeof PS[0]; i++) {
        uint8_t d[32];
        char dh[65], sig[133], addr[43];
        size_t n = strlen(PS[i].msg);
        assert_int_equal(eth_personal_digest(PS[i].msg, n, d), 0);
        hexof(d, 32, dh);
        assert_string_equal(dh, PS[i].digest);
        assert_int_equal(signer_sign_ecdsa(s, PS[i].msg, n, sig), 0);
        assert_string_equal(sig, PS[i].sig);
        assert_int_equal(strlen(sig), SIGNER_ECDSA_SIG_LEN);
        assert_int_equal(eth_recover_address(PS[i].msg, n, PS[i].sig, addr), 0);
        assert_string_equal(addr, KNOWN_ADDR);
        /* also without the 0x prefix */
        assert_int_equal(eth_recover_address(PS[i].msg, n, PS[i].sig + 2, addr), 0);
        assert_string_equal(addr, KNOWN_ADDR);
    }
    assert_int_equal(strlen(TEXT129), 129);
    signer_free(s);
}

static int is_lower_hex(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

static void test_ecdsa_roundtrip_random(void **st)
{
    (void)st;
    int seen27 = 0, seen28 = 0;
    for (int k = 0; k < 8; k++) {
        signer_t *s = signer_new_random();
        assert_non_null(s);
        const char *addr = signer_ecdsa_address(s);
        assert_int_equal(strlen(addr), ETH_ADDRESS_LEN);
        assert_int_equal(strlen(signer_ecdsa_pubkey_hex(s)), 128);
        assert_true(is_lower_hex(signer_ecdsa_pubkey_hex(s), 128));
        for (int j = 0; j < 8; j++) {
            char text[64], sig[133], rec[43];
            int n = snprintf(text, sizeof text, "msg %d/%d:%s", k, j, "x");
            assert_int_equal(signer_sign_ecdsa(s, text, (size_t)n, sig), 0);
            assert_int_equal(strlen(sig), 132);
            assert_memory_equal(sig, "0x", 2);
            assert_true(is_lower_hex(sig + 2, 130));
            uint8_t v;
            unhex(sig + 130, &v, 1);
            assert_true(v == 27 || v == 28);
            seen27 |= v == 27;
            seen28 |= v == 28;
            /* low-s: the top byte of s is below 0x80 (s <= n/2 < 0x7fff...ff5d...) */
            uint8_t s0;
            unhex((char[3]){sig[66], sig[67], 0}, &s0, 1);
            assert_true(s0 <= 0x7f);
            assert_int_equal(eth_recover_address(text, (size_t)n, sig, rec), 0);
            assert_string_equal(rec, addr);
        }
        signer_free(s);
    }
    assert_true(seen27 && seen28); /* 64 signatures: both parities, except with p = 2^-63 */
}

static void test_two_random_signers_differ(void **st)
{
    (void)st;
    signer_t *a = signer_new_random(), *b = signer_new_random();
    assert_non_null(a);
    assert_non_null(b);
    assert_string_not_equal(signer_ecdsa_address(a), signer_ecdsa_address(b));
    assert_string_not_equal(signer_ed25519_pubkey_hex(a), signer_ed25519_pubkey_hex(b));
    signer_free(a);
    signer_free(b);
}

/* s' = n - s: the high-s twin of a valid signature, which we must refuse. */
static void make_high_s(const char *sig, char out[133])
{
    uint8_t rs[65], n[32];
    unhex(sig + 2, rs, 65);
    unhex("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", n, 32);
    int borrow = 0;
    for (int i = 31; i >= 0; i--) {
        int d = n[i] - rs[32 + i] - borrow;
        borrow = d < 0;
        rs[32 + i] = (uint8_t)(d + (borrow ? 256 : 0));
    }
    rs[64] = rs[64] == 27 ? 28 : 27;
    out[0] = '0';
    out[1] = 'x';
    hex_encode(out + 2, rs, 65);
}

static void test_ecdsa_tamper_rejected(void **st)
{
    (void)st;
    signer_t *s = known_signer();
    const char *text = PS[1].msg, *sig = PS[1].sig;
    size_t n = strlen(text);
    char rec[43], bad[160];

    /* different text: either unrecoverable or a different address */
    char t2[130];
    memcpy(t2, text, n + 1);
    t2[0] = 'c';
    int rc = eth_recover_address(t2, n, sig, rec);
    assert_true(rc != 0 || strcmp(rec, KNOWN_ADDR) != 0);
    rc = eth_recover_address(text, n - 1, sig, rec);
    assert_true(rc != 0 || strcmp(rec, KNOWN_ADDR) != 0);

    /* flipped byte of r and of s */
    for (size_t pos = 2; pos < 130; pos += 37) {
        memcpy(bad, sig, 133);
        bad[pos] = bad[pos] == '0' ? '1' : '0';
        rc = eth_recover_address(text, n, bad, rec);
        assert_true(rc != 0 || strcmp(rec, KNOWN_ADDR) != 0);
    }
    /* wrong v */
    static const char *vs[] = {"1d", "00", "01", "1a", "ff"};
    for (size_t i = 0; i < 5; i++) {
        memcpy(bad, sig, 133);
        memcpy(bad + 130, vs[i], 2);
        assert_int_equal(eth_recover_address(text, n, bad, rec), -1);
    }
    /* flipped v recovers someone else */
    memcpy(bad, sig, 133);
    memcpy(bad + 130, sig[131] == 'b' ? "1c" : "1b", 2);
    rc = eth_recover_address(text, n, bad, rec);
    assert_true(rc != 0 || strcmp(rec, KNOWN_ADDR) != 0);
    /* malformed lengths and characters */
    memcpy(bad, sig, 133);
    bad[131] = '\0';
    assert_int_equal(eth_recover_address(text, n, bad, rec), -1);
    snprintf(bad, sizeof bad, "%s00", sig);
    assert_int_equal(eth_recover_address(text, n, bad, rec), -1);
    memcpy(bad, sig, 133);
    bad[10] = 'g';
    assert_int_equal(eth_recover_address(text, n, bad, rec), -1);
    assert_int_equal(eth_recover_address(text, n, "", rec), -1);
    assert_int_equal(eth_recover_address(text, n, NULL, rec), -1);
    /* high-s twin is a valid ECDSA signature for the same key, but malleable: refused */
    make_high_s(sig, bad);
    assert_int_equal(eth_recover_address(text, n, bad, rec), -1);
    signer_free(s);
}

/* ---- Ed25519 ---- */

static void test_ed25519_rfc8032_vector1(void **st)
{
    (void)st;
    uint8_t seed[32], sk[32];
    unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", seed, 32);
    unhex(KNOWN_SK, sk, 32);
    signer_t *s = signer_from_secrets(sk, seed);
    assert_non_null(s);
    const char *pub = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const char *want = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
                       "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
    assert_string_equal(signer_ed25519_pubkey_hex(s), pub);
    uint8_t pb[32];
    unhex(pub, pb, 32);
    assert_memory_equal(signer_ed25519_pubkey(s), pb, 32);
    char sig[129];
    assert_int_equal(signer_sign_ed25519(s, "", 0, sig), 0);
    assert_string_equal(sig, want);
    assert_int_equal(ed25519_verify_hex("", 0, want, pub), 0);
    assert_int_equal(ed25519_verify_hex(NULL, 0, want, pub), 0);
    signer_free(s);
}

static void test_ed25519_node_vector(void **st)
{
    (void)st;
    /* Node crypto.sign(null, Buffer.from(TEXT129), key) with seed = bytes 0x01..0x20. */
    uint8_t seed[32], sk[32];
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)(i + 1);
    unhex(KNOWN_SK, sk, 32);
    signer_t *s = signer_from_secrets(sk, seed);
    assert_non_null(s);
    assert_string_equal(signer_ed25519_pubkey_hex(s),
                        "79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664");
    char sig[129];
    assert_int_equal(signer_sign_ed25519(s, TEXT129, 129, sig), 0);
    assert_string_equal(sig, "0981d8959dd3c00432c4dbacf12db40628abca47646d450450e6fcd1bbf4255b"
                             "462d4c5807de33668a236c2af4d4b821bcb78e876ca4c3ce843ebd29af5db30a");
    signer_free(s);
}

static void test_ed25519_roundtrip_and_tamper(void **st)
{
    (void)st;
    signer_t *s = signer_new_random();
    assert_non_null(s);
    const char *pub = signer_ed25519_pubkey_hex(s);
    assert_int_equal(strlen(pub), 64);
    assert_true(is_lower_hex(pub, 64));
    char sig[129], bad[140];
    assert_int_equal(signer_sign_ed25519(s, TEXT129, 129, sig), 0);
    assert_int_equal(strlen(sig), SIGNER_ED25519_SIG_LEN);
    assert_true(is_lower_hex(sig, 128));
    assert_int_equal(ed25519_verify_hex(TEXT129, 129, sig, pub), 0);
    /* tampered text */
    char t2[130];
    memcpy(t2, TEXT129, 130);
    t2[64] = ';';
    assert_int_equal(ed25519_verify_hex(t2, 129, sig, pub), -1);
    assert_int_equal(ed25519_verify_hex(TEXT129, 128, sig, pub), -1);
    /* tampered signature */
    for (size_t pos = 0; pos < 128; pos += 31) {
        memcpy(bad, sig, 129);
        bad[pos] = bad[pos] == '0' ? '1' : '0';
        assert_int_equal(ed25519_verify_hex(TEXT129, 129, bad, pub), -1);
    }
    /* other key */
    signer_t *o = signer_new_random();
    assert_non_null(o);
    assert_int_equal(ed25519_verify_hex(TEXT129, 129, sig, signer_ed25519_pubkey_hex(o)), -1);
    /* malformed */
    snprintf(bad, sizeof bad, "0x%s", sig);
    assert_int_equal(ed25519_verify_hex(TEXT129, 129, bad, pub), -1);
    assert_int_equal(ed25519_verify_hex(TEXT129, 129, sig, "00"), -1);
    assert_int_equal(ed25519_verify_hex(TEXT129, 129, "", pub), -1);
    signer_free(o);
    signer_free(s);
}

/* ---- concurrency: one signer, many threads, deterministic results ---- */

struct mt_arg {
    const signer_t *s;
    int fails;
};

static void *mt_worker(void *p)
{
    struct mt_arg *a = p;
    for (int i = 0; i < 100; i++) {
        char sig[133], ed[129];
        if (signer_sign_ecdsa(a->s, TEXT129, 129, sig) != 0 || strcmp(sig, PS[1].sig) != 0)
            a->fails++;
        if (signer_sign_ed25519(a->s, TEXT129, 129, ed) != 0 ||
            ed25519_verify_hex(TEXT129, 129, ed, signer_ed25519_pubkey_hex(a->s)) != 0)
            a->fails++;
    }
    return NULL;
}

static void test_concurrent_signing(void **st)
{
    (void)st;
    signer_t *s = known_signer();
    pthread_t th[4];
    struct mt_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct mt_arg){s, 0};
        assert_int_equal(pthread_create(&th[i], NULL, mt_worker, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].fails, 0);
    }
    signer_free(s);
}

/* ---- micro-benchmark (printed, not asserted) ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_bench(void **st)
{
    (void)st;
    signer_t *s = signer_new_random();
    assert_non_null(s);
    char sig[133], ed[129];
    const int N = 2000;
    double t0 = now_s();
    for (int i = 0; i < N; i++)
        assert_int_equal(signer_sign_ecdsa(s, TEXT129, 129, sig), 0);
    double t1 = now_s();
    for (int i = 0; i < N; i++)
        assert_int_equal(signer_sign_ed25519(s, TEXT129, 129, ed), 0);
    double t2 = now_s();
    char rec[43];
    for (int i = 0; i < N; i++)
        assert_int_equal(eth_recover_address(TEXT129, 129, sig, rec), 0);
    double t3 = now_s();
    printf("bench: ecdsa personal_sign %.1f us/sig (%.0f/s); ed25519 %.1f us/sig (%.0f/s); "
           "ecdsa recover %.1f us\n",
           (t1 - t0) / N * 1e6, N / (t1 - t0), (t2 - t1) / N * 1e6, N / (t2 - t1),
           (t3 - t2) / N * 1e6);
    signer_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keccak_vectors),
        cmocka_unit_test(test_keccak_incremental),
        cmocka_unit_test(test_eip55_vectors),
        cmocka_unit_test(test_known_key_address),
        cmocka_unit_test(test_invalid_secret_rejected),
        cmocka_unit_test(test_personal_sign_vectors),
        cmocka_unit_test(test_ecdsa_roundtrip_random),
        cmocka_unit_test(test_two_random_signers_differ),
        cmocka_unit_test(test_ecdsa_tamper_rejected),
        cmocka_unit_test(test_ed25519_rfc8032_vector1),
        cmocka_unit_test(test_ed25519_node_vector),
        cmocka_unit_test(test_ed25519_roundtrip_and_tamper),
        cmocka_unit_test(test_concurrent_signing),
        cmocka_unit_test(test_bench),
    };
    return cmocka_run_group_tests_name("sign", tests, NULL, NULL);
}
