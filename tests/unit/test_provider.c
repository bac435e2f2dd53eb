/* Unit tests for src/attest/provider.c and tsm.c: provider selection (auto never falls back to
 * simulated), each provider against its fake fed with the real dstack v0.5.5 vectors
 * (dstack, tappd, configfs-tsm with the generation check), KMS-derived keys stable across
 * restarts, and the service: TLS binding, GPU evidence in parallel and its failures, the
 * cache with single-flight and background refresh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "at.h"
#include "../fakes/fake_agent.c"
#include "attest/provider.h"
#include "attest/tsm.h"
#include "sign/signer.h"

static attest_provider_t *open_mode(const char *mode, const char *dstack, const char *tappd,
                                    const char *tsm, char *err, size_t errlen)
{
    attest_provider_config_t c = {.mode = mode, .dstack_endpoint = dstack, .tappd_endpoint = tappd,
                                  .tsm_root = tsm ? tsm : "/tmp/vp-no-such-tsm", .timeout_ms = 1000};
    return attest_provider_open(&c, err, errlen);
}

static void test_auto_without_tee_refuses(void **state)
{
    (void)state;
    char err[1024] = "";
    /* (the build machines have no /var/run/dstack.sock or tappd.sock) */
    assert_null(open_mode("auto", NULL, NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "no TEE"));
    assert_non_null(strstr(err, "ATTESTATION=simulated"));
    assert_null(open_mode("dstack", "/tmp/vp-no-such-agent.sock", NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "vp-no-such-agent.sock"));
    assert_null(open_mode("tsm", NULL, NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "configfs-tsm"));
    assert_null(open_mode("bogus", NULL, NULL, NULL, err, sizeof err));
}

static void collect_ok_at(AT_PARAMS, attest_provider_t *p, fake_agent_t *a, const char *mode)
{
    uint8_t rd[64];
    for (int i = 0; i < 64; i++)
        rd[i] = (uint8_t)(i * 7);
    attest_parts_t parts = {0};
    char err[512] = "";
    at_assert_int_equal(attest_provider_collect(p, rd, &parts, err, sizeof err), 0);
    at_assert_string_equal(parts.mode, mode);
    at_assert_memory_equal(parts.quote.data + a->rd_off, rd, 64);
    at_assert_int_equal(parts.event_log.len, a->event_log.len);
    struct json_object *info = json_tokener_parse(parts.info.data), *t;
    at_assert_non_null(info);
    at_assert_true(json_object_object_get_ex(info, "tcb_info", &t) &&
                   json_object_is_type(t, json_type_object));
    json_object_put(info);
    if (!strcmp(mode, "tappd"))
        at_assert_string_equal(parts.tappd_hash_algorithm, "raw");
    attest_parts_free(&parts);
}
#define collect_ok(...) collect_ok_at(AT_HERE, __VA_ARGS__)

static void test_dstack_and_tappd(void **state)
{
    (void)state;
    char err[1024] = "";
    fake_agent_t *a = fake_agent_start(0);
    attest_provider_t *p = open_mode("auto", a->sock, NULL, NULL, err, sizeof err);
    assert_non_null(p);
    assert_int_equal(attest_provider_kind(p), ATTEST_DSTACK);
    assert_string_equal(attest_provider_mode(p), "dstack");
    collect_ok(p, a, "dstack");
    /* A quote that does not carry our report_data is refused. */
    a->bad_rd = 1;
    attest_parts_t parts = {0};
    uint8_t rd[64] = {9};
    assert_int_equal(attest_provider_collect(p, rd, &parts, err, sizeof err), -1);
    assert_non_null(strstr(err, "report_data"));
    attest_parts_free(&parts);
    a->bad_rd = 0;
    attest_provider_free(p);
    fake_agent_stop(a);

    a = fake_agent_start(1);
    p = open_mode("auto", NULL, a->sock, NULL, err, sizeof err);
    assert_non_null(p);
    assert_int_equal(attest_provider_kind(p), ATTEST_TAPPD);
    collect_ok(p, a, "tappd");
    assert_int_equal(attest_provider_derive_keys(p, "m", rd, rd, err, sizeof err), -1);
    attest_provider_free(p);
    fake_agent_stop(a);

    /* An agent that answers garbage stops the start-up. */
    a = fake_agent_start(0);
    a->garbage = 1;
    assert_null(open_mode("dstack", a->sock, NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "does not work"));
    fake_agent_stop(a);
}

static void test_tsm(void **state)
{
    (void)state;
    char err[1024] = "";
    fake_tsm_t *t = fake_tsm_start();
    assert_non_null(t);
    attest_provider_t *p = open_mode("auto", NULL, NULL, t->root, err, sizeof err);
    assert_non_null(p);
    assert_int_equal(attest_provider_kind(p), ATTEST_TSM);
    assert_int_equal(t->gen, 1); /* the start-up probe: one round */
    uint8_t rd[64];
    memset(rd, 0xab, sizeof rd);
    attest_parts_t parts = {0};
    assert_int_equal(attest_provider_collect(p, rd, &parts, err, sizeof err), 0);
    assert_string_equal(parts.mode, "tsm");
    assert_int_equal(parts.quote.len, t->quote.len);
    assert_memory_equal(parts.quote.data + t->rd_off, rd, 64);
    attest_parts_free(&parts);
    /* Generation changed underneath once: retried, still our quote. */
    t->race = 1;
    assert_int_equal(attest_provider_collect(p, rd, &parts, err, sizeof err), 0);
    assert_memory_equal(parts.quote.data + t->rd_off, rd, 64);
    attest_parts_free(&parts);
    /* Always raced: gives up, says why. */
    t->race = 10;
    assert_int_equal(attest_provider_collect(p, rd, &parts, err, sizeof err), -1);
    assert_non_null(strstr(err, "generation"));
    assert_int_equal(parts.quote.len, 0);
    attest_parts_free(&parts);
    attest_provider_free(p);
    fake_tsm_stop(t);
}

static signer_t *kms_signer_at(AT_PARAMS, fake_agent_t *a, const char *model)
{
    char err[1024] = "";
    uint8_t sk[32], seed[32];
    attest_provider_t *p = open_mode("dstack", a->sock, NULL, NULL, err, sizeof err);
    at_assert_non_null(p);
    at_assert_int_equal(attest_provider_derive_keys(p, model, sk, seed, err, sizeof err), 0);
    attest_provider_free(p);
    return signer_from_secrets(sk, seed);
}
#define kms_signer(...) kms_signer_at(AT_HERE, __VA_ARGS__)

static void test_kms_keys_stable(void **state)
{
    (void)state;
    fake_agent_t *a = fake_agent_start(0);
    signer_t *s1 = kms_signer(a, "Qwen/Qwen3-8B");
    signer_t *other = kms_signer(a, "other-model");
    fake_agent_stop(a);
    a = fake_agent_start(0); /* a restart, or a replica of the same app */
    signer_t *s2 = kms_signer(a, "Qwen/Qwen3-8B");
    assert_int_equal(a->n_key, 2);
    fake_agent_stop(a);
    assert_non_null(s1);
    assert_non_null(s2);
    assert_string_equal(signer_ecdsa_address(s1), signer_ecdsa_address(s2));
    assert_string_equal(signer_ed25519_pubkey_hex(s1), signer_ed25519_pubkey_hex(s2));
    assert_string_not_equal(signer_ecdsa_address(s1), signer_ecdsa_address(other));
    assert_string_not_equal(signer_ed25519_pubkey_hex(s1), signer_ed25519_pubkey_hex(other));
    signer_free(s1);
    signer_free(s2);
    signer_free(other);
}

/* ---- service ---- */

static volatile int gpu_mode; /* 0 ok, 1 fail, 2 slow ok, 3 ok with 2 GPUs and 4 switches */

static int fake_gpu(void *ctx, const uint8_t nonce[32], buf_t *payload, buf_t *switches, char *err,
                    size_t errlen)
{
    (void)ctx;
    if (gpu_mode == 1) {
        snprintf(err, errlen, "NVML call failed (injected)");
        return -1;
    }
    if (gpu_mode == 2)
        fake_sleep_ms(300);
    char h[65];
    hex_encode(h, nonce, 32);
    if (gpu_mode == 3)
        return buf_printf(payload, "{\"nonce\": \"%s\", \"evidence_list\": [{}, {}], \"arch\": \"HOPPER\"}",
                          h) ||
               buf_printf(switches, "{\"nonce\": \"%s\", \"evidence_list\": [{}, {}, {}, {}], \"arch\": \"LS10\"}",
                          h);
    return buf_printf(payload, "{\"nonce\": \"%s\", \"evidence_list\": [], \"arch\": \"HOPPER\"}", h);
}

static struct json_object *parse_report_at(AT_PARAMS, const buf_t *b)
{
    struct json_object *o = json_tokener_parse(b->data);
    at_assert_non_null(o);
    return o;
}
#define parse_report(...) parse_report_at(AT_HERE, __VA_ARGS__)

static const char *jstr_at(AT_PARAMS, struct json_object *o, const char *k)
{
    struct json_object *v;
    at_assert_true(json_object_object_get_ex(o, k, &v));
    return json_object_get_string(v);
}
#define jstr(...) jstr_at(AT_HERE, __VA_ARGS__)

static void quote_rd_at(AT_PARAMS, struct json_object *o, uint8_t rd[64])
{
    const char *qh = jstr_at(AT_PASS, o, "intel_quote");
    size_t n = strlen(qh) / 2;
    uint8_t *q = malloc(n);
    at_assert_int_equal(hex_decode(q, n, qh, 2 * n), (long)n);
    tdx_quote_t pq;
    at_assert_int_equal(tdx_quote_parse(&pq, q, n), 0);
    memcpy(rd, pq.body.report_data, 64);
    free(q);
}
#define quote_rd(...) quote_rd_at(AT_HERE, __VA_ARGS__)

static void test_service_fresh_tls_gpu(void **state)
{
    (void)state;
    char err[1024] = "";
    fake_agent_t *a = fake_agent_start(0);
    attest_provider_t *p = open_mode("dstack", a->sock, NULL, NULL, err, sizeof err);
    signer_t *sg = signer_new_random();
    uint8_t spki[32];
    sha256("certificate key", 15, spki);
    attest_service_config_t sc = {.cache_ttl_s = 300, .tls_spki_sha256 = spki, .gpu = fake_gpu,
                                  .gpu_label = "nvml"};
    attest_service_t *s = attest_service_new(p, sg, &sc);
    uint8_t nonce[32], rd[64], want[64];
    memset(nonce, 0x42, 32);
    buf_t out = BUF_INIT;

    /* Plain binding. */
    gpu_mode = 0;
    assert_int_equal(attest_service_fresh(s, 0, 0, nonce, &out, err, sizeof err), 0);
    struct json_object *o = parse_report(&out);
    assert_string_equal(jstr(o, "attestation_mode"), "dstack");
    assert_string_equal(jstr(o, "nonce_source"), "client");
    assert_string_equal(jstr(o, "gpu_evidence"), "nvml");
    struct json_object *f;
    assert_false(json_object_object_get_ex(o, "simulated", &f));
    assert_false(json_object_object_get_ex(o, "tls_cert_fingerprint", &f));
    assert_non_null(strstr(jstr(o, "nvidia_payload"), "4242424242"));
    quote_rd(o, rd);
    attest_report_data(signer_ecdsa_address_bytes(sg), 20, nonce, want);
    assert_memory_equal(rd, want, 64);
    /* event_log is the agent's string, info its object */
    assert_string_equal(jstr(o, "event_log"), a->event_log.data);
    json_object_put(o);
    buf_reset(&out);

    /* TLS binding, ed25519. */
    assert_int_equal(attest_service_fresh(s, 1, 1, nonce, &out, err, sizeof err), 0);
    o = parse_report(&out);
    char fp[65];
    hex_encode(fp, spki, 32);
    assert_string_equal(jstr(o, "tls_cert_fingerprint"), fp);
    quote_rd(o, rd);
    uint8_t in[64];
    memcpy(in, signer_ed25519_pubkey(sg), 32);
    memcpy(in + 32, spki, 32);
    sha256(in, 64, want);
    assert_memory_equal(rd, want, 32);
    assert_memory_equal(rd + 32, nonce, 32);
    json_object_put(o);
    buf_reset(&out);

    /* GPU evidence and quote in parallel: a 300 ms GPU and a 300 ms agent take ~300 ms. */
    gpu_mode = 2;
    a->delay_ms = 300;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(attest_service_fresh(s, 0, 0, nonce, &out, err, sizeof err), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = at_ms_between(&t0, &t1);
    assert_true(ms < 300 + 300 + 250); /* Info adds one more agent round trip */
    a->delay_ms = 0;
    buf_reset(&out);

    /* GPU failure: named in the error, nothing appended. */
    gpu_mode = 1;
    assert_int_equal(attest_service_fresh(s, 0, 0, nonce, &out, err, sizeof err), -1);
    assert_non_null(strstr(err, "GPU evidence"));
    assert_non_null(strstr(err, "injected"));
    assert_int_equal(out.len, 0);
    gpu_mode = 0;

    /* Agent gone: the error names it (the route turns it into a 503). */
    fake_agent_stop(a);
    assert_int_equal(attest_service_fresh(s, 0, 0, nonce, &out, err, sizeof err), -1);
    assert_non_null(strstr(err, "GetQuote"));
    buf_free(&out);
    attest_service_free(s);
    signer_free(sg);
}


/* version 3 (ATTEST_BIND_GPU): report_data[0:32] = sha256("vllm-proxy/report-data/v3" || id ||
 * SPKI hash or zeros || sha256(nvidia_payload) || sha256(nvswitch_payload) or zeros), built
 * here by hand from the report's own strings, for every provider; the GPU evidence comes
 * before the quote; fewer GPUs or switches than expected is an error. */
static void expect_v3_at(AT_PARAMS, struct json_object *o, const uint8_t *id, size_t idlen,
                         const uint8_t *spki, const uint8_t nonce[32])
{
    uint8_t pre[25 + 32 + 96], rd[64], want[32];
    size_t n = 0;
    memcpy(pre, "vllm-proxy/report-data/v3", 25);
    n = 25;
    memcpy(pre + n, id, idlen);
    n += idlen;
    if (spki)
        memcpy(pre + n, spki, 32);
    else
        memset(pre + n, 0, 32);
    n += 32;
    const char *g = jstr_at(AT_PASS, o, "nvidia_payload");
    sha256(g, strlen(g), pre + n);
    n += 32;
    struct json_object *v;
    if (json_object_object_get_ex(o, "nvswitch_payload", &v))
        sha256(json_object_get_string(v), strlen(json_object_get_string(v)), pre + n);
    else
        memset(pre + n, 0, 32);
    n += 32;
    sha256(pre, n, want);
    quote_rd_at(AT_PASS, o, rd);
    at_assert_memory_equal(rd, want, 32);
    at_assert_memory_equal(rd + 32, nonce, 32);
    at_assert_true(json_object_object_get_ex(o, "report_version", &v));
    at_assert_int_equal(json_object_get_int(v), 3);
}
#define expect_v3(...) expect_v3_at(AT_HERE, __VA_ARGS__)

static void test_service_v3_every_provider(void **state)
{
    (void)state;
    char err[1024] = "";
    fake_agent_t *ad = fake_agent_start(0), *at = fake_agent_start(1);
    fake_tsm_t *t = fake_tsm_start();
    const char *modes[] = {"dstack", "tappd", "tsm", "simulated"};
    signer_t *sg = signer_new_random();
    uint8_t spki[32], nonce[32];
    sha256("certificate key", 15, spki);
    memset(nonce, 0x5a, 32);
    for (int m = 0; m < 4; m++) {
        attest_provider_t *p = open_mode(modes[m], ad->sock, at->sock, t->root, err, sizeof err);
        assert_non_null(p);
        attest_service_config_t sc = {.cache_ttl_s = 300, .tls_spki_sha256 = spki,
                                      .gpu = m == 3 ? NULL : fake_gpu, .gpu_label = "nvml"};
        attest_service_t *s = attest_service_new(p, sg, &sc);
        buf_t out = BUF_INIT;
        gpu_mode = m == 1 ? 3 : 0; /* tappd: with switches */
        assert_int_equal(attest_service_fresh(s, 0, ATTEST_BIND_GPU, nonce, &out, err, sizeof err), 0);
        struct json_object *o = parse_report(&out), *v;
        assert_string_equal(jstr(o, "attestation_mode"), modes[m]);
        expect_v3(o, signer_ecdsa_address_bytes(sg), 20, NULL, nonce);
        assert_false(json_object_object_get_ex(o, "tls_cert_fingerprint", &v));
        assert_int_equal(json_object_object_get_ex(o, "nvswitch_payload", &v), m == 1);
        json_object_put(o);
        buf_reset(&out);
        assert_int_equal(attest_service_fresh(s, 1, ATTEST_BIND_GPU | ATTEST_BIND_TLS, nonce, &out,
                                              err, sizeof err), 0);
        o = parse_report(&out);
        expect_v3(o, signer_ed25519_pubkey(sg), 32, spki, nonce);
        json_object_put(o);
        buf_reset(&out);
        /* the default report is untouched: no report_version, the reference's report_data */
        assert_int_equal(attest_service_fresh(s, 0, 0, nonce, &out, err, sizeof err), 0);
        o = parse_report(&out);
        assert_false(json_object_object_get_ex(o, "report_version", &v));
        uint8_t rd[64], want[64];
        quote_rd(o, rd);
        attest_report_data(signer_ecdsa_address_bytes(sg), 20, nonce, want);
        assert_memory_equal(rd, want, 64);
        json_object_put(o);
        buf_free(&out);
        attest_service_free(s);
    }
    /* counts: the fake has 2 GPUs and 4 switches in mode 3, 0 GPUs in mode 0 */
    attest_provider_t *p = open_mode("dstack", ad->sock, NULL, NULL, err, sizeof err);
    attest_service_config_t sc = {.gpu = fake_gpu, .gpu_expected = 2, .nvswitch_expected = 4};
    attest_service_t *s = attest_service_new(p, sg, &sc);
    buf_t out = BUF_INIT;
    gpu_mode = 3;
    for (int f = 0; f <= ATTEST_BIND_GPU; f += ATTEST_BIND_GPU)
        assert_int_equal(attest_service_fresh(s, 0, f, nonce, &out, err, sizeof err), 0);
    gpu_mode = 0;
    for (int f = 0; f <= ATTEST_BIND_GPU; f += ATTEST_BIND_GPU) {
        buf_reset(&out);
        assert_int_equal(attest_service_fresh(s, 0, f, nonce, &out, err, sizeof err), -1);
        assert_non_null(strstr(err, "GPU_EXPECTED_COUNT is 2"));
        assert_int_equal(out.len, 0);
    }
    attest_service_free(s);
    p = open_mode("dstack", ad->sock, NULL, NULL, err, sizeof err);
    sc.gpu_expected = 0;
    s = attest_service_new(p, sg, &sc);
    assert_int_equal(attest_service_fresh(s, 0, ATTEST_BIND_GPU, nonce, &out, err, sizeof err), -1);
    assert_non_null(strstr(err, "NVSWITCH_EXPECTED_COUNT is 4"));
    buf_free(&out);
    attest_service_free(s);
    signer_free(sg);
    fake_agent_stop(ad);
    fake_agent_stop(at);
    fake_tsm_stop(t);
}

typedef struct waiter {
    attest_service_t *s;
    buf_t out;
    int rc, want_refresh;
} waiter_t;

static void *wait_cached(void *arg)
{
    waiter_t *w = arg;
    char err[512];
    w->rc = attest_service_cached(w->s, 0, 0, &w->out, &w->want_refresh, err, sizeof err);
    return NULL;
}

static void test_service_cache(void **state)
{
    (void)state;
    char err[1024] = "";
    fake_agent_t *a = fake_agent_start(0);
    attest_provider_t *p = open_mode("dstack", a->sock, NULL, NULL, err, sizeof err);
    signer_t *sg = signer_new_random();
    attest_service_config_t sc = {.cache_ttl_s = 2};
    attest_service_t *s = attest_service_new(p, sg, &sc);
    int base = a->n_quote;

    /* 8 concurrent requests for the same report share one collection. */
    a->delay_ms = 150;
    waiter_t w[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (waiter_t){.s = s};
        pthread_create(&th[i], NULL, wait_cached, &w[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    a->delay_ms = 0;
    assert_int_equal(a->n_quote - base, 1);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(w[i].rc, 0);
        assert_int_equal(w[i].want_refresh, 0);
        assert_int_equal(w[i].out.len, w[0].out.len);
        assert_memory_equal(w[i].out.data, w[0].out.data, w[0].out.len);
        if (i)
            buf_free(&w[i].out);
    }
    struct json_object *o = parse_report(&w[0].out);
    assert_string_equal(jstr(o, "nonce_source"), "server");
    char first_nonce[65];
    snprintf(first_nonce, sizeof first_nonce, "%s", jstr(o, "request_nonce"));
    json_object_put(o);

    /* Past half the TTL: served from the cache, and the caller is asked to refresh once. */
    fake_sleep_ms(1100);
    buf_t b = BUF_INIT;
    int want = 0;
    assert_int_equal(attest_service_cached(s, 0, 0, &b, &want, err, sizeof err), 0);
    assert_int_equal(want, 1);
    assert_int_equal(b.len, w[0].out.len);
    buf_reset(&b);
    assert_int_equal(attest_service_cached(s, 0, 0, &b, &want, err, sizeof err), 0);
    assert_int_equal(want, 0); /* already handed out */
    assert_int_equal(a->n_quote - base, 1);
    attest_service_refresh(s, 0, 0);
    assert_int_equal(a->n_quote - base, 2);
    buf_reset(&b);
    assert_int_equal(attest_service_cached(s, 0, 0, &b, &want, err, sizeof err), 0);
    o = parse_report(&b);
    assert_string_not_equal(jstr(o, "request_nonce"), first_nonce);
    json_object_put(o);
    /* A second refresh finds the entry fresh and does nothing. */
    attest_service_refresh(s, 0, 0);
    assert_int_equal(a->n_quote - base, 2);

    /* Expired and the agent failing: every waiter gets the error, nothing stale is served. */
    fake_sleep_ms(2100);
    a->garbage = 1;
    buf_reset(&b);
    assert_int_equal(attest_service_cached(s, 0, 0, &b, &want, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a JSON object"));
    assert_int_equal(b.len, 0);
    a->garbage = 0;
    assert_int_equal(attest_service_cached(s, 0, 0, &b, &want, err, sizeof err), 0);

    buf_free(&b);
    buf_free(&w[0].out);
    attest_service_free(s);
    signer_free(sg);
    fake_agent_stop(a);
}

static void test_service_simulated_no_cache(void **state)
{
    (void)state;
    char err[1024] = "";
    attest_provider_t *p = open_mode("simulated", NULL, NULL, NULL, err, sizeof err);
    assert_non_null(p);
    signer_t *sg = signer_new_random();
    attest_service_config_t sc = {.cache_ttl_s = 0};
    attest_service_t *s = attest_service_new(p, sg, &sc);
    buf_t a = BUF_INIT, b = BUF_INIT;
    int want;
    assert_int_equal(attest_service_cached(s, 1, 0, &a, &want, err, sizeof err), 0);
    assert_int_equal(attest_service_cached(s, 1, 0, &b, &want, err, sizeof err), 0);
    struct json_object *oa = parse_report(&a), *ob = parse_report(&b), *f;
    assert_string_not_equal(jstr(oa, "request_nonce"), jstr(ob, "request_nonce")); /* no cache */
    assert_string_equal(jstr(oa, "attestation_mode"), "simulated");
    assert_true(json_object_object_get_ex(oa, "simulated", &f) && json_object_get_boolean(f));
    assert_false(json_object_object_get_ex(oa, "gpu_evidence", &f));
    json_object_put(oa);
    json_object_put(ob);
    buf_free(&a);
    buf_free(&b);
    attest_service_free(s);
    signer_free(sg);
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char b[4096];
    size_t n;
    while ((n = fread(b, 1, sizeof b, in)) > 0)
        assert_int_equal(fwrite(b, 1, n, out), n);
    fclose(in);
    fclose(out);
}

/* Replaced the way certbot does it: a new file renamed over the old one. */
static void rename_in(const char *from, const char *path)
{
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    copy_file(from, tmp);
    assert_int_equal(rename(tmp, path), 0);
}

static void spki_hex_of(const char *pem, char hex[65])
{
    uint8_t h[32];
    char e[256];
    assert_int_equal(attest_tls_spki_sha256_file(pem, h, e, sizeof e), 0);
    hex_encode(hex, h, 32);
}

static void fp_of_at(AT_PARAMS, const buf_t *b, const char *want)
{
    struct json_object *o = parse_report(b);
    at_assert_string_equal(jstr(o, "tls_cert_fingerprint"), want);
    json_object_put(o);
}
#define fp_of(...) fp_of_at(AT_HERE, __VA_ARGS__)

/* TLS_CERT_PATH rotation: a replaced file gives the next reports its key, drops the cached
 * TLS-bound reports (and only those) at once, a client-nonce collection looks at the file
 * itself, and a bad or missing file keeps the last good key, counted once per version. */
static void test_service_tls_rotation(void **state)
{
    (void)state;
    const char *A = "tests/vectors/intel/IntelSGXRootCA.pem", *B = "tests/vectors/simulated/sim_root_ca.pem",
               *C = "tests/vectors/simulated/sim_gpu_cert.pem";
    char ha[65], hb[65], hc[65], cur[65], path[256], err[1024] = "";
    spki_hex_of(A, ha);
    spki_hex_of(B, hb);
    spki_hex_of(C, hc);
    assert_string_not_equal(ha, hb);
    assert_string_not_equal(hb, hc);
    snprintf(path, sizeof path, "/tmp/vp-tls-rot-%d.pem", (int)getpid());
    rename_in(A, path);
    uint8_t spki[32];
    assert_int_equal(attest_tls_spki_sha256_file(path, spki, err, sizeof err), 0);
    attest_provider_t *p = open_mode("simulated", NULL, NULL, NULL, err, sizeof err);
    signer_t *sg = signer_new_random();
    attest_service_config_t sc = {.cache_ttl_s = 300, .tls_spki_sha256 = spki, .tls_cert_path = path};
    attest_service_t *s = attest_service_new(p, sg, &sc);
    buf_t b = BUF_INIT;
    int want;
    unsigned long long reloads, failures;
    uint8_t nonce[32];
    memset(nonce, 7, sizeof nonce);

    assert_int_equal(attest_service_cached(s, 0, 1, &b, &want, err, sizeof err), 0);
    fp_of(&b, ha);
    buf_free(&b);
    assert_int_equal(attest_service_cached(s, 0, 0, &b, &want, err, sizeof err), 0); /* unbound slot */
    buf_free(&b);
    assert_int_equal(attest_service_tls_check(s), 0); /* the same file: nothing changes */
    attest_service_tls_counts(s, &reloads, &failures);
    assert_int_equal(reloads, 0);
    assert_int_equal(attest_service_try_cached(s, 0, 1, &b, &want), 0);
    buf_free(&b);

    /* renamed over: the check installs B and drops the TLS-bound entry, not the other one */
    rename_in(B, path);
    assert_int_equal(attest_service_tls_check(s), 0);
    attest_service_tls_current(s, cur);
    assert_string_equal(cur, hb);
    attest_service_tls_counts(s, &reloads, &failures);
    assert_int_equal(reloads, 1);
    assert_int_equal(attest_service_try_cached(s, 0, 1, &b, &want), 1);
    assert_int_equal(attest_service_try_cached(s, 0, 0, &b, &want), 0);
    buf_free(&b);
    assert_int_equal(attest_service_cached(s, 0, 1, &b, &want, err, sizeof err), 0);
    fp_of(&b, hb);
    buf_free(&b);

    /* a client-nonce collection looks at the file itself, without waiting for a timer */
    rename_in(C, path);
    assert_int_equal(attest_service_fresh(s, 1, 1, nonce, &b, err, sizeof err), 0);
    fp_of(&b, hc);
    buf_free(&b);

    /* bad versions keep C; each is counted once however often it is looked at */
    FILE *f = fopen(path, "w");
    fputs("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", f);
    fclose(f);
    assert_int_equal(attest_service_tls_check(s), -1);
    assert_int_equal(attest_service_tls_check(s), -1);
    assert_int_equal(attest_service_fresh(s, 0, 1, nonce, &b, err, sizeof err), 0);
    fp_of(&b, hc);
    buf_free(&b);
    attest_service_tls_counts(s, &reloads, &failures);
    assert_int_equal(failures, 1);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(attest_service_tls_check(s), -1);
    attest_service_tls_counts(s, &reloads, &failures);
    assert_int_equal(failures, 2);
    attest_service_tls_current(s, cur);
    assert_string_equal(cur, hc);

    /* the file back (a new file at the path): seen too; the bad one above was written in place */
    copy_file(A, path);
    assert_int_equal(attest_service_tls_check(s), 0);
    attest_service_tls_current(s, cur);
    assert_string_equal(cur, ha);
    attest_service_tls_counts(s, &reloads, &failures);
    assert_int_equal(reloads, 3);
    assert_int_equal(failures, 2);
    assert_int_equal(attest_service_cached(s, 1, 1, &b, &want, err, sizeof err), 0);
    fp_of(&b, ha);
    buf_free(&b);

    unlink(path);
    attest_service_free(s);
    signer_free(sg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auto_without_tee_refuses), cmocka_unit_test(test_dstack_and_tappd),
        cmocka_unit_test(test_tsm),                      cmocka_unit_test(test_kms_keys_stable),
        cmocka_unit_test(test_service_fresh_tls_gpu),    cmocka_unit_test(test_service_cache),
        cmocka_unit_test(test_service_simulated_no_cache),
        cmocka_unit_test(test_service_tls_rotation),
        cmocka_unit_test(test_service_v3_every_provider),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
