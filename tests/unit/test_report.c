/* Unit tests for src/attest/report.c: golden JSON of the report builder for each provider's
 * labels (field order, escaping, all_attestations, nonce_source), the TLS report_data binding
 * and the SPKI hash of a PEM certificate, and a dstack report assembled from the real v0.5.5
 * vectors whose event log still replays to the quote's RTMRs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "at.h"
#include "vectors.h"

#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attest/report.h"
#include "core/hex.h"
#include "core/sha.h"
#include "tdx/quote.h"

static const uint8_t ADDR[20] = {0xde, 0xad, 0xbe, 0xef, [19] = 0x01};

static attest_identity_t ident(void)
{
    attest_identity_t id = {"0xdEAdBeeF00000000000000000000000000000001", "ecdsa", ADDR, 20, "ab12"};
    return id;
}

static void fill(attest_parts_t *p, const char *mode)
{
    memset(p, 0, sizeof *p);
    p->mode = mode;
    buf_append(&p->quote, "\x04\x00\xff", 3);
    buf_puts(&p->event_log, "[{\"imr\":3,\"event\":\"a\\\"b\"}]");
    buf_puts(&p->info, "{\"app_id\":\"01\",\"tcb_info\":{\"rtmr3\":\"00\"}}");
    buf_puts(&p->vm_config, "{\"cpu_count\":2}");
    buf_puts(&p->nvidia_payload, "{\"nonce\": \"11\", \"evidence_list\": [], \"arch\": \"HOPPER\"}");
}

#define FIELDS(mode_tail)                                                                                 \
    "\"signing_address\":\"0xdEAdBeeF00000000000000000000000000000001\",\"signing_algo\":\"ecdsa\","      \
    "\"request_nonce\":\"" NONCE_HEX "\",\"intel_quote\":\"0400ff\","                                     \
    "\"nvidia_payload\":\"{\\\"nonce\\\": \\\"11\\\", \\\"evidence_list\\\": [], \\\"arch\\\": \\\"HOPPER\\\"}\"," \
    "\"info\":{\"app_id\":\"01\",\"tcb_info\":{\"rtmr3\":\"00\"}},\"quote\":\"0400ff\","                   \
    "\"event_log\":\"[{\\\"imr\\\":3,\\\"event\\\":\\\"a\\\\\\\"b\\\"}]\","                                 \
    "\"vm_config\":\"{\\\"cpu_count\\\":2}\",\"signing_public_key\":\"ab12\"" mode_tail

#define NONCE_HEX "0707070707070707070707070707070707070707070707070707070707070707"

static void check_golden_at(AT_PARAMS, const attest_parts_t *p, const attest_report_opts_t *o,
                            const char *want)
{
    uint8_t nonce[32];
    memset(nonce, 7, 32);
    attest_identity_t id = ident();
    buf_t out = BUF_INIT;
    buf_puts(&out, "prefix:");
    at_assert_int_equal(attest_report_build(&id, nonce, p, o, &out), 0);
    at_assert_string_equal(out.data + 7, want);
    struct json_object *j = json_tokener_parse(out.data + 7);
    at_assert_non_null(j); /* valid JSON */
    json_object_put(j);
    buf_free(&out);
}
#define check_golden(...) check_golden_at(AT_HERE, __VA_ARGS__)

static void test_golden_dstack(void **state)
{
    (void)state;
    attest_parts_t p;
    fill(&p, "dstack");
    attest_report_opts_t o = {.nonce_source = "client"};
    check_golden(&p, &o,
                 "{" FIELDS(",\"attestation_mode\":\"dstack\"") ",\"all_attestations\":[{" FIELDS(
                     ",\"attestation_mode\":\"dstack\"") "}],\"model_attestations\":[{" FIELDS(",\"attestation_mode\":\"dstack\"") "}],\"nonce_source\":\"client\"}");
    /* with a GPU label, no nonce_source */
    p.gpu_evidence = "canned";
    check_golden(&p, NULL,
                 "{" FIELDS(",\"attestation_mode\":\"dstack\",\"gpu_evidence\":\"canned\"") ",\"all_attestations\":[{" FIELDS(
                     ",\"attestation_mode\":\"dstack\",\"gpu_evidence\":\"canned\"") "}],\"model_attestations\":[{" FIELDS(",\"attestation_mode\":\"dstack\",\"gpu_evidence\":\"canned\"") "}]}");
    attest_parts_free(&p);
}

static void test_golden_tappd_tls_sim_tsm(void **state)
{
    (void)state;
    attest_parts_t p;
    fill(&p, "tappd");
    snprintf(p.tappd_hash_algorithm, sizeof p.tappd_hash_algorithm, "raw");
    attest_report_opts_t o = {.tls_fingerprint_hex = "ffee", .nonce_source = "server"};
#define TAPPD_TAIL ",\"tls_cert_fingerprint\":\"ffee\",\"attestation_mode\":\"tappd\",\"tappd_hash_algorithm\":\"raw\",\"tappd_prefix\":\"\""
    check_golden(&p, &o, "{" FIELDS(TAPPD_TAIL) ",\"all_attestations\":[{" FIELDS(TAPPD_TAIL) "}],\"model_attestations\":[{" FIELDS(TAPPD_TAIL) "}],\"nonce_source\":\"server\"}");
    attest_parts_free(&p);

    fill(&p, "simulated");
    check_golden(&p, NULL,
                 "{" FIELDS(",\"attestation_mode\":\"simulated\",\"simulated\":true") ",\"all_attestations\":[{" FIELDS(
                     ",\"attestation_mode\":\"simulated\",\"simulated\":true") "}],\"model_attestations\":[{" FIELDS(",\"attestation_mode\":\"simulated\",\"simulated\":true") "}]}");
    attest_parts_free(&p);

    /* tsm: no agent, so no info / event log / vm_config: {} and "" */
    memset(&p, 0, sizeof p);
    p.mode = "tsm";
    buf_append(&p.quote, "\x01", 1);
    uint8_t nonce[32] = {0};
    attest_identity_t id = ident();
    buf_t out = BUF_INIT;
    assert_int_equal(attest_report_build(&id, nonce, &p, NULL, &out), 0);
    assert_non_null(strstr(out.data, ",\"info\":{},\"quote\":\"01\",\"event_log\":\"\",\"vm_config\":\"\","));
    assert_non_null(strstr(out.data, "\"nvidia_payload\":\"\","));
    buf_free(&out);

    /* bad identity / empty quote: -1, out untouched */
    id.id_len = 0;
    buf_puts(&out, "x");
    assert_int_equal(attest_report_build(&id, nonce, &p, NULL, &out), -1);
    id = ident();
    p.quote.len = 0;
    assert_int_equal(attest_report_build(&id, nonce, &p, NULL, &out), -1);
    assert_string_equal(out.data, "x");
    buf_free(&out);
    attest_parts_free(&p);
}

/* EVENT_LOG_FORMAT=array: the agent's text as JSON (the bytes as they came, once checked to be
 * an array), [] for a provider without one, and a text that is not an array refused;
 * model_name and signed_text_format after signing_public_key, in both copies. */
static void test_event_log_array_model_name(void **state)
{
    (void)state;
    attest_parts_t p;
    fill(&p, "dstack");
    attest_report_opts_t o = {.event_log_array = 1, .model_name = "m\"x", .signed_text_format = "model:req:resp"};
    uint8_t nonce[32];
    memset(nonce, 7, 32);
    attest_identity_t id = ident();
    buf_t out = BUF_INIT;
    assert_int_equal(attest_report_build(&id, nonce, &p, &o, &out), 0);
    const char *frag = ",\"event_log\":[{\"imr\":3,\"event\":\"a\\\"b\"}],\"vm_config\":";
    const char *first = strstr(out.data, frag);
    assert_non_null(first);
    assert_non_null(strstr(first + 1, frag)); /* all_attestations' copy too */
    const char *mt = ",\"signing_public_key\":\"ab12\",\"model_name\":\"m\\\"x\",\"signed_text_format\":\"model:req:resp\",\"attestation_mode\"";
    first = strstr(out.data, mt);
    assert_non_null(first);
    assert_non_null(strstr(first + 1, mt));
    struct json_object *j = json_tokener_parse(out.data), *ev = NULL, *mn = NULL;
    assert_non_null(j);
    assert_true(json_object_object_get_ex(j, "event_log", &ev) && json_object_is_type(ev, json_type_array));
    assert_int_equal(json_object_array_length(ev), 1);
    assert_true(json_object_object_get_ex(j, "model_name", &mn));
    assert_string_equal(json_object_get_string(mn), "m\"x");
    json_object_put(j);

    /* the string form of the same parts: the agent's text as a JSON string */
    o.event_log_array = 0;
    buf_reset(&out);
    assert_int_equal(attest_report_build(&id, nonce, &p, &o, &out), 0);
    assert_non_null(strstr(out.data, ",\"event_log\":\"[{\\\"imr\\\":3,"));

    /* not an array (an object, trailing bytes, cut, not JSON): refused, out untouched */
    o.event_log_array = 1;
    static const char *const bad[] = {"{\"imr\":3}", "[1] x", "[{\"imr\":3}", "nope", "\"[]\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        buf_reset(&p.event_log);
        buf_puts(&p.event_log, bad[i]);
        assert_int_equal(attest_event_log_is_array(p.event_log.data, p.event_log.len), 0);
        buf_reset(&out);
        buf_puts(&out, "x");
        assert_int_equal(attest_report_build(&id, nonce, &p, &o, &out), -1);
        assert_string_equal(out.data, "x");
    }
    /* none (configfs-tsm): [] */
    buf_reset(&p.event_log);
    buf_reset(&out);
    assert_int_equal(attest_event_log_is_array("", 0), 1);
    assert_int_equal(attest_report_build(&id, nonce, &p, &o, &out), 0);
    assert_non_null(strstr(out.data, ",\"event_log\":[],\"vm_config\":"));
    buf_free(&out);
    attest_parts_free(&p);
}

static void test_tls_binding(void **state)
{
    (void)state;
    uint8_t spki[32], nonce[32], rd[64], in[52], want[32];
    memset(spki, 0x5a, 32);
    memset(nonce, 0xc3, 32);
    attest_report_data_tls(ADDR, 20, spki, nonce, rd);
    memcpy(in, ADDR, 20);
    memcpy(in + 20, spki, 32);
    sha256(in, sizeof in, want);
    assert_memory_equal(rd, want, 32);
    assert_memory_equal(rd + 32, nonce, 32);

    /* SPKI hash of a certificate file equals sha256(i2d_PUBKEY). */
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_sign(x, k, EVP_sha256());
    char path[] = "/tmp/vp-test-cert-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    PEM_write_X509(f, x);
    fclose(f);
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k, &der);
    uint8_t exp[32], got[32];
    sha256(der, (size_t)n, exp);
    char err[256];
    assert_int_equal(attest_tls_spki_sha256_file(path, got, err, sizeof err), 0);
    assert_memory_equal(got, exp, 32);
    OPENSSL_free(der);
    unlink(path);
    assert_int_equal(attest_tls_spki_sha256_file("/tmp/vp-no-such-cert.pem", got, err, sizeof err), -1);
    assert_int_equal(attest_tls_spki_sha256_file("/etc/hostname", got, err, sizeof err), -1);
    X509_free(x);
    EVP_PKEY_free(k);
}

/* A vector file without its trailing newlines. */
static int slurp(const char *rel, buf_t *out)
{
    if (vec_slurp(rel, out) != 0)
        return -1;
    while (out->len && out->data[out->len - 1] == '\n')
        out->data[--out->len] = 0;
    return 0;
}

/* The real v0.5.5 parts pass through: event_log string and info object come out unchanged. */
static void test_real_vectors_pass_through(void **state)
{
    (void)state;
    attest_parts_t p = {.mode = "dstack"};
    buf_t hex = BUF_INIT;
    assert_int_equal(slurp("tdx/dstack-v055-sample/quote.hex", &hex), 0);
    assert_int_equal(slurp("tdx/dstack-v055-sample/event_log.json", &p.event_log), 0);
    assert_int_equal(slurp("tdx/dstack-v055-sample/info_sdk_parsed.json", &p.info), 0);
    buf_reserve(&p.quote, hex.len / 2 + 1);
    p.quote.len = (size_t)hex_decode((uint8_t *)p.quote.data, hex.len / 2, hex.data, hex.len);
    attest_identity_t id = ident();
    uint8_t nonce[32] = {1};
    buf_t out = BUF_INIT;
    assert_int_equal(attest_report_build(&id, nonce, &p, NULL, &out), 0);
    struct json_object *o = json_tokener_parse(out.data), *v, *info = json_tokener_parse(p.info.data);
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "event_log", &v));
    assert_string_equal(json_object_get_string(v), p.event_log.data);
    assert_true(json_object_object_get_ex(o, "info", &v));
    assert_true(json_object_equal(v, info));
    assert_true(json_object_object_get_ex(o, "intel_quote", &v));
    assert_int_equal(strncasecmp(json_object_get_string(v), hex.data, hex.len), 0);
    /* RTMR3 replays from what we emitted. */
    struct json_object *ev;
    assert_true(json_object_object_get_ex(o, "event_log", &ev));
    uint8_t rtmr[4][48];
    char err[256];
    assert_int_equal(tdx_rtmr_replay(json_object_get_string(ev), (size_t)json_object_get_string_len(ev), rtmr, err, sizeof err), 0);
    tdx_quote_t q;
    assert_int_equal(tdx_quote_parse(&q, (const uint8_t *)p.quote.data, p.quote.len), 0);
    assert_memory_equal(rtmr[3], q.body.rtmr[3], 48);
    json_object_put(o);
    json_object_put(info);
    buf_free(&out);
    buf_free(&hex);
    attest_parts_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_dstack),
        cmocka_unit_test(test_golden_tappd_tls_sim_tsm),
        cmocka_unit_test(test_event_log_array_model_name),
        cmocka_unit_test(test_tls_binding),
        cmocka_unit_test(test_real_vectors_pass_through),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
