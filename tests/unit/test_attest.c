/* Unit tests for src/attest: the simulated provider's quotes verify with the real tdx checks
 * against the checked-in test root, its measurements are self-consistent, and the report JSON
 * has the reference field order. Also prints what one report costs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "at.h"
#include "attest/attest.h"
#include "attest/sim.h"
#include "core/hex.h"
#include "core/sha.h"
#include "tdx/quote.h"

static attest_sim_t *sim;

static const uint8_t *root_pem(size_t *len)
{
    *len = strlen(attest_sim_root_cert_pem);
    return (const uint8_t *)attest_sim_root_cert_pem;
}

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + 7 * i);
}

static int setup(void **state)
{
    (void)state;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    sim = attest_sim_new();
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("attest_sim_new: %.2f ms\n", at_ms_between(&a, &b));
    return sim ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    attest_sim_free(sim);
    return 0;
}

static void test_report_data(void **state)
{
    (void)state;
    uint8_t addr[20], key[32], nonce[32], rd[64], zero[12] = {0};
    fill(addr, 20, 1);
    fill(key, 32, 2);
    fill(nonce, 32, 3);
    memset(rd, 0xee, sizeof rd);
    attest_report_data(addr, 20, nonce, rd);
    assert_memory_equal(rd, addr, 20);
    assert_memory_equal(rd + 20, zero, 12);
    assert_memory_equal(rd + 32, nonce, 32);
    attest_report_data(key, 32, nonce, rd);
    assert_memory_equal(rd, key, 32);
    assert_memory_equal(rd + 32, nonce, 32);
}

static void test_quote_verifies(void **state)
{
    (void)state;
    uint8_t rd[64];
    fill(rd, 64, 9);
    buf_t out = BUF_INIT;
    assert_int_equal(attest_sim_quote(sim, rd, &out), 0);
    tdx_quote_t q;
    assert_int_equal(tdx_quote_parse(&q, (const uint8_t *)out.data, out.len), TDX_OK);
    assert_int_equal(q.version, 4);
    assert_int_equal(q.att_key_type, 2);
    assert_int_equal(q.tee_type, 0x81);
    assert_int_equal(q.quote_len, out.len);
    assert_int_equal(q.cert_type, 6);
    assert_int_equal(q.pck_cert_type, 5);
    assert_int_equal(q.qe_auth_len, 32);
    for (int i = 0; i < 32; i++)
        assert_int_equal(q.qe_auth_data[i], i);
    assert_memory_equal(q.qe_vendor_id, tdx_intel_qe_vendor_id, 16);
    assert_memory_equal(q.body.report_data, rd, 64);
    assert_int_equal(tdx_td_attributes(&q), TDX_ATTR_SEPT_VE_DISABLE);
    size_t rl;
    const uint8_t *root = root_pem(&rl);
    assert_int_equal(tdx_verify_quote_signature(&q), TDX_OK);
    assert_int_equal(tdx_verify_qe_binding(&q), TDX_OK);
    assert_int_equal(tdx_verify_qe_report_signature(&q), TDX_OK);
    assert_int_equal(tdx_pck_chain_verify(q.pck_chain, q.pck_chain_len, root, rl, 0), TDX_OK);
    assert_int_equal(tdx_verify_quote(&q, root, rl, 0), TDX_OK);
    /* Not an Intel quote. */
    FILE *f = fopen("tests/vectors/intel/IntelSGXRootCA.der", "rb");
    if (f) {
        uint8_t der[2048];
        size_t dl = fread(der, 1, sizeof der, f);
        fclose(f);
        assert_int_equal(tdx_pck_chain_verify(q.pck_chain, q.pck_chain_len, der, dl, 0), TDX_ERR_CHAIN);
    }
    /* Labelled as simulated in the chain itself. */
    assert_non_null(memmem(q.pck_chain, q.pck_chain_len, "-----END CERTIFICATE-----", 25));
    /* Tampered report_data no longer verifies. */
    out.data[568 + 40] ^= 1;
    assert_int_equal(tdx_quote_parse(&q, (const uint8_t *)out.data, out.len), TDX_OK);
    assert_int_equal(tdx_verify_quote_signature(&q), TDX_ERR_SIGNATURE);
    buf_free(&out);
}

static struct json_object *parse_text(const char *s, size_t n)
{
    struct json_tokener *tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    struct json_object *o = json_tokener_parse_ex(tok, s, (int)n);
    if (json_tokener_get_error(tok) != json_tokener_success || json_tokener_get_parse_end(tok) != n) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

static const char *get_str(struct json_object *o, const char *key)
{
    struct json_object *f;
    if (!json_object_object_get_ex(o, key, &f) || !json_object_is_type(f, json_type_string))
        return NULL;
    return json_object_get_string(f);
}

static void assert_hex_eq_at(AT_PARAMS, const char *hex, const uint8_t *p, size_t n)
{
    char want[256];
    at_assert_true(n <= 120);
    hex_encode(want, p, n);
    at_assert_non_null(hex);
    at_assert_string_equal(hex, want);
}
#define assert_hex_eq(...) assert_hex_eq_at(AT_HERE, __VA_ARGS__)

static void test_measurements(void **state)
{
    (void)state;
    uint8_t rd[64] = {0};
    buf_t out = BUF_INIT;
    assert_int_equal(attest_sim_quote(sim, rd, &out), 0);
    tdx_quote_t q;
    assert_int_equal(tdx_quote_parse(&q, (const uint8_t *)out.data, out.len), TDX_OK);

    size_t ll, il, vl;
    const char *log = attest_sim_event_log_json(sim, &ll);
    uint8_t rtmr[4][48];
    char err[128] = "";
    assert_int_equal(tdx_rtmr_replay(log, ll, rtmr, err, sizeof err), TDX_OK);
    for (int i = 0; i < 4; i++)
        assert_memory_equal(rtmr[i], q.body.rtmr[i], 48);

    const char *info_txt = attest_sim_info_json(sim, &il);
    struct json_object *info = parse_text(info_txt, il), *tcb, *f;
    assert_non_null(info);
    static const char *info_keys[] = {"app_id", "instance_id", "app_cert", "tcb_info", "app_name",
                                      "device_id", "mr_aggregated", "os_image_hash",
                                      "key_provider_info", "compose_hash", "vm_config"};
    static const char *tcb_keys[] = {"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "app_compose",
                                     "event_log", "mr_aggregated", "os_image_hash",
                                     "compose_hash", "device_id"};
    size_t k = 0;
    json_object_object_foreach(info, key, val)
    {
        (void)val;
        assert_true(k < 11);
        assert_string_equal(key, info_keys[k++]);
    }
    assert_int_equal(k, 11);
    assert_true(json_object_object_get_ex(info, "tcb_info", &tcb));
    k = 0;
    json_object_object_foreach(tcb, tkey, tval)
    {
        (void)tval;
        assert_true(k < 11);
        assert_string_equal(tkey, tcb_keys[k++]);
    }
    assert_int_equal(k, 11);
    assert_hex_eq(get_str(tcb, "mrtd"), q.body.mrtd, 48);
    for (int i = 0; i < 4; i++) {
        char rname[8] = "rtmr0";
        rname[4] = (char)('0' + i);
        assert_hex_eq(get_str(tcb, rname), q.body.rtmr[i], 48);
    }
    /* MRCONFIGID = 01 || sha256(app_compose) || zeros, and compose_hash agrees. */
    const char *compose = get_str(tcb, "app_compose");
    assert_non_null(compose);
    uint8_t ch[32], want[48] = {0x01}, dig[32];
    sha256(compose, strlen(compose), ch);
    memcpy(want + 1, ch, 32);
    assert_memory_equal(q.body.mrconfigid, want, 48);
    assert_hex_eq(get_str(info, "compose_hash"), ch, 32);
    assert_hex_eq(get_str(tcb, "compose_hash"), ch, 32);
    sha256(q.user_data, 20, dig);
    assert_hex_eq(get_str(info, "device_id"), dig, 32);
    tdx_mr_aggregated(&q.body, dig);
    assert_hex_eq(get_str(info, "mr_aggregated"), dig, 32);
    /* The Info copy of the event log replays the same; it names the simulated app. */
    assert_true(json_object_object_get_ex(tcb, "event_log", &f));
    uint8_t r2[4][48];
    assert_int_equal(tdx_rtmr_replay_obj(f, r2, err, sizeof err), TDX_OK);
    assert_memory_equal(r2, rtmr, sizeof rtmr);
    assert_non_null(strstr(log, "\"event\":\"compose-hash\""));
    assert_non_null(strstr(log, "\"event\":\"system-ready\""));
    assert_non_null(strstr(log, "\"event\":\"gpu-attestation\""));
    assert_int_equal(json_object_array_length(f), 21);
    /* key-provider event payload == key_provider_info. */
    const char *kp = get_str(info, "key_provider_info");
    assert_non_null(kp);
    struct json_object *kpo = parse_text(kp, strlen(kp));
    assert_non_null(kpo);
    json_object_put(kpo);
    const char *vm = attest_sim_vm_config(sim, &vl);
    struct json_object *vmo = parse_text(vm, vl);
    assert_non_null(vmo);
    json_object_put(vmo);
    assert_string_equal(get_str(info, "vm_config"), vm);
    json_object_put(info);
    buf_free(&out);
}

static void check_payload_at(AT_PARAMS, const char *txt, size_t n, const uint8_t nonce[32])
{
    struct json_object *o = parse_text(txt, n), *list, *item;
    at_assert_non_null(o);
    assert_hex_eq_at(AT_PASS, get_str(o, "nonce"), nonce, 32);
    at_assert_string_equal(get_str(o, "arch"), "HOPPER");
    at_assert_true(json_object_object_get_ex(o, "evidence_list", &list));
    at_assert_int_equal(json_object_array_length(list), 1);
    item = json_object_array_get_idx(list, 0);
    const char *ev = get_str(item, "evidence"), *cert = get_str(item, "certificate");
    at_assert_non_null(ev);
    at_assert_non_null(cert);
    uint8_t raw[1024];
    long rn = b64_decode(raw, sizeof raw, ev, strlen(ev));
    at_assert_true(rn > 36);
    static const uint8_t req[4] = {0x11, 0xe0, 0x01, 0xff};
    at_assert_memory_equal(raw, req, 4);
    at_assert_memory_equal(raw + 4, nonce, 32);
    at_assert_non_null(memmem(raw, (size_t)rn, "SIMULATED", 9));
    size_t cl = strlen(cert);
    uint8_t *pem = malloc(cl);
    long pl = b64_decode(pem, cl, cert, cl);
    at_assert_true(pl > 0);
    size_t rl;
    const uint8_t *root = root_pem(&rl);
    at_assert_int_equal(tdx_pck_chain_verify(pem, (size_t)pl, root, rl, 0), TDX_OK);
    free(pem);
    /* Key order: nonce, evidence_list, arch. */
    const char *a = strstr(txt, "\"nonce\""), *b = strstr(txt, "\"evidence_list\""), *c = strstr(txt, "\"arch\"");
    at_assert_true(a && b && c && a < b && b < c);
    json_object_put(o);
}
#define check_payload(...) check_payload_at(AT_HERE, __VA_ARGS__)

static void test_gpu_payload(void **state)
{
    (void)state;
    uint8_t nonce[32];
    fill(nonce, 32, 0x42);
    buf_t out = BUF_INIT;
    assert_int_equal(attest_gpu_payload_sim(nonce, &out), 0);
    check_payload(out.data, out.len, nonce);
    buf_free(&out);
}

static const char *report_keys[] = {
    "signing_address", "signing_algo", "request_nonce", "intel_quote", "nvidia_payload",
    "info", "quote", "event_log", "vm_config", "signing_public_key", "attestation_mode",
    "simulated", "all_attestations", "model_attestations"};

static void check_report_object_at(AT_PARAMS, struct json_object *o, const attest_identity_t *id,
                                const uint8_t nonce[32], size_t nkeys)
{
    size_t k = 0;
    json_object_object_foreach(o, key, val)
    {
        (void)val;
        at_assert_true(k < nkeys);
        at_assert_string_equal(key, report_keys[k++]);
    }
    at_assert_int_equal(k, nkeys);
    at_assert_string_equal(get_str(o, "signing_address"), id->signing_address);
    at_assert_string_equal(get_str(o, "signing_algo"), id->signing_algo);
    at_assert_string_equal(get_str(o, "signing_public_key"), id->signing_public_key);
    at_assert_string_equal(get_str(o, "attestation_mode"), "simulated");
    struct json_object *f;
    at_assert_true(json_object_object_get_ex(o, "simulated", &f));
    at_assert_true(json_object_is_type(f, json_type_boolean) && json_object_get_boolean(f));
    assert_hex_eq_at(AT_PASS, get_str(o, "request_nonce"), nonce, 32);
    const char *qh = get_str(o, "intel_quote");
    at_assert_non_null(qh);
    at_assert_string_equal(qh, get_str(o, "quote"));
    /* The quote's report_data is id padded to 32 || nonce, and it verifies. */
    size_t qhl = strlen(qh);
    uint8_t *qb = malloc(qhl / 2);
    at_assert_int_equal(hex_decode(qb, qhl / 2, qh, qhl), (long)(qhl / 2));
    tdx_quote_t q;
    at_assert_int_equal(tdx_quote_parse(&q, qb, qhl / 2), TDX_OK);
    uint8_t rd[64] = {0};
    memcpy(rd, id->id_bytes, id->id_len);
    memcpy(rd + 32, nonce, 32);
    at_assert_memory_equal(q.body.report_data, rd, 64);
    size_t rl;
    const uint8_t *root = root_pem(&rl);
    at_assert_int_equal(tdx_verify_quote(&q, root, rl, 0), TDX_OK);
    /* event_log is a string holding the array; it replays to the quote's RTMRs. */
    const char *log = get_str(o, "event_log");
    at_assert_non_null(log);
    uint8_t rtmr[4][48];
    at_assert_int_equal(tdx_rtmr_replay(log, strlen(log), rtmr, NULL, 0), TDX_OK);
    for (int i = 0; i < 4; i++)
        at_assert_memory_equal(rtmr[i], q.body.rtmr[i], 48);
    free(qb);
    const char *payload = get_str(o, "nvidia_payload");
    at_assert_non_null(payload);
    check_payload_at(AT_PASS, payload, strlen(payload), nonce);
    at_assert_true(json_object_object_get_ex(o, "info", &f));
    at_assert_true(json_object_is_type(f, json_type_object));
    at_assert_non_null(get_str(o, "vm_config"));
}
#define check_report_object(...) check_report_object_at(AT_HERE, __VA_ARGS__)

static void run_report_at(AT_PARAMS, const attest_identity_t *id, const uint8_t nonce[32])
{
    buf_t out = BUF_INIT;
    at_assert_int_equal(attest_report_json(sim, id, nonce, &out), 0);
    struct json_object *o = parse_text(out.data, out.len), *all;
    at_assert_non_null(o);
    check_report_object_at(AT_PASS, o, id, nonce, 14);
    at_assert_true(json_object_object_get_ex(o, "all_attestations", &all));
    at_assert_true(json_object_is_type(all, json_type_array));
    at_assert_int_equal(json_object_array_length(all), 1);
    struct json_object *inner = json_object_array_get_idx(all, 0);
    check_report_object_at(AT_PASS, inner, id, nonce, 12);
    /* The inner object is the outer one without all_attestations. */
    struct json_object *copy = NULL;
    at_assert_int_equal(json_object_deep_copy(o, &copy, NULL), 0);
    json_object_object_del(copy, "all_attestations");
    json_object_object_del(copy, "model_attestations");
    at_assert_true(json_object_equal(copy, inner));
    /* model_attestations (NEAR's layout) holds the same entry */
    struct json_object *model = NULL;
    at_assert_true(json_object_object_get_ex(o, "model_attestations", &model));
    at_assert_int_equal(json_object_array_length(model), 1);
    at_assert_true(json_object_equal(json_object_array_get_idx(model, 0), inner));
    json_object_put(copy);
    json_object_put(o);
    buf_free(&out);
}
#define run_report(...) run_report_at(AT_HERE, __VA_ARGS__)

static void test_report_json(void **state)
{
    (void)state;
    uint8_t nonce[32], addr[20], key[32];
    fill(nonce, 32, 0x10);
    fill(addr, 20, 0xa0);
    fill(key, 32, 0xb0);
    attest_identity_t ecdsa = {"0xA0a7aEb5bCc3cAd1D8dFe6EdF4f2f9F0f7f5f3f1", "ecdsa", addr, 20,
                               "04aa"}; /* strings are opaque to attest */
    run_report(&ecdsa, nonce);
    char keyhex[65];
    hex_encode(keyhex, key, 32);
    attest_identity_t ed = {keyhex, "ed25519", key, 32, keyhex};
    run_report(&ed, nonce);
    /* Strings are JSON-escaped, not pasted. */
    attest_identity_t odd = {"a\"b\\c", "ecdsa", addr, 20, "\n"};
    run_report(&odd, nonce);
    /* Bad identities are refused. */
    buf_t out = BUF_INIT;
    attest_identity_t bad = ecdsa;
    bad.id_len = 0;
    assert_int_equal(attest_report_json(sim, &bad, nonce, &out), -1);
    bad.id_len = 33;
    assert_int_equal(attest_report_json(sim, &bad, nonce, &out), -1);
    bad = ecdsa;
    bad.signing_address = NULL;
    assert_int_equal(attest_report_json(sim, &bad, nonce, &out), -1);
    assert_int_equal(out.len, 0);
    buf_free(&out);
}

/* Quotes from many threads at once all verify (the libuv pool calls it concurrently). */
static void *quote_worker(void *arg)
{
    long id = (long)arg;
    size_t rl;
    const uint8_t *root = root_pem(&rl);
    for (int i = 0; i < 25; i++) {
        uint8_t rd[64];
        fill(rd, 64, (uint8_t)(id * 31 + i));
        buf_t out = BUF_INIT;
        tdx_quote_t q;
        if (attest_sim_quote(sim, rd, &out) || tdx_quote_parse(&q, (const uint8_t *)out.data, out.len) ||
            memcmp(q.body.report_data, rd, 64) || tdx_verify_quote_signature(&q)) {
            buf_free(&out);
            return (void *)1;
        }
        if (i == 0 && tdx_verify_quote(&q, root, rl, 0)) {
            buf_free(&out);
            return (void *)1;
        }
        buf_free(&out);
    }
    return NULL;
}

static void test_concurrent_quotes(void **state)
{
    (void)state;
    pthread_t th[8];
    for (long i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&th[i], NULL, quote_worker, (void *)i), 0);
    for (int i = 0; i < 8; i++) {
        void *r;
        pthread_join(th[i], &r);
        assert_null(r);
    }
}

static void test_report_cost(void **state)
{
    (void)state;
    uint8_t nonce[32], addr[20];
    fill(nonce, 32, 1);
    fill(addr, 20, 2);
    attest_identity_t id = {"0x0102030405060708090a0b0c0d0e0f1011121314", "ecdsa", addr, 20,
                            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
                            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"};
    buf_t out = BUF_INIT;
    const int iters = 300;
    struct timespec a, b;
    size_t bytes = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < iters; i++) {
        nonce[0] = (uint8_t)i;
        buf_reset(&out);
        assert_int_equal(attest_report_json(sim, &id, nonce, &out), 0);
        bytes = out.len;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double us = at_ms_between(&a, &b) * 1e3 / iters;
    uint8_t rd[64] = {0};
    buf_t qb = BUF_INIT;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < iters; i++) {
        buf_reset(&qb);
        assert_int_equal(attest_sim_quote(sim, rd, &qb), 0);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double qus = at_ms_between(&a, &b) * 1e3 / iters;
    printf("attest_report_json: %.1f us/report (%zu bytes); attest_sim_quote alone: %.1f us (%zu bytes)\n",
           us, bytes, qus, qb.len);
    buf_free(&qb);
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report_data),     cmocka_unit_test(test_quote_verifies),
        cmocka_unit_test(test_measurements),    cmocka_unit_test(test_gpu_payload),
        cmocka_unit_test(test_report_json),     cmocka_unit_test(test_concurrent_quotes),
        cmocka_unit_test(test_report_cost),
    };
    return cmocka_run_group_tests_name("attest", tests, setup, teardown);
}
