/* Unit tests for src/dstack: the guest-agent client against the fake agent
 * (tests/fakes/fake_agent.c) serving the real dstack v0.5.5 vectors: GetQuote, Info, GetKey,
 * tappd TdxQuote, endpoint parsing, and the error paths (agent missing, slow, garbage, 500,
 * hang-up, chunked answers, report_data mismatch). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "at.h"
#include "../fakes/fake_agent.c"
#include "dstack/agent.h"

static const uint8_t RD[64] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, [63] = 0x3f};

static void endpoint_of_at(AT_PARAMS, dstack_endpoint_t *ep, fake_agent_t *a, unsigned timeout_ms)
{
    char err[256];
    at_assert_int_equal(dstack_endpoint_parse(ep, a->sock, a->tappd, timeout_ms, err, sizeof err),
                        0);
}
#define endpoint_of(...) endpoint_of_at(AT_HERE, __VA_ARGS__)

static void test_endpoint_parse(void **state)
{
    (void)state;
    dstack_endpoint_t ep;
    char err[256];
    assert_int_equal(dstack_endpoint_parse(&ep, "/var/run/dstack.sock", 0, 0, err, sizeof err), 0);
    assert_true(ep.is_unix);
    assert_string_equal(ep.path, "/var/run/dstack.sock");
    assert_int_equal(ep.timeout_ms, 5000);
    assert_int_equal(dstack_endpoint_parse(&ep, "unix:/tmp/x.sock", 0, 100, err, sizeof err), 0);
    assert_string_equal(ep.path, "/tmp/x.sock");
    assert_int_equal(dstack_endpoint_parse(&ep, "http://127.0.0.1:8090", 0, 0, err, sizeof err), 0);
    assert_false(ep.is_unix);
    assert_string_equal(ep.host, "127.0.0.1");
    assert_string_equal(ep.port, "8090");
    assert_string_equal(ep.prefix, "");
    assert_int_equal(dstack_endpoint_parse(&ep, "http://localhost/api/", 0, 0, err, sizeof err), 0);
    assert_string_equal(ep.port, "80");
    assert_string_equal(ep.prefix, "/api");
    assert_int_equal(dstack_endpoint_parse(&ep, "http://[::1]:9/", 0, 0, err, sizeof err), 0);
    assert_string_equal(ep.host, "::1");
    assert_int_equal(dstack_endpoint_parse(&ep, "https://x:1", 0, 0, err, sizeof err), -1);
    assert_int_equal(dstack_endpoint_parse(&ep, "http://:80", 0, 0, err, sizeof err), -1);
    assert_int_equal(dstack_endpoint_parse(&ep, "http://h:8x", 0, 0, err, sizeof err), -1);
    assert_int_equal(dstack_endpoint_parse(&ep, "", 0, 0, err, sizeof err), -1);
}

static void test_get_quote(void **state)
{
    (void)state;
    fake_agent_t *a = fake_agent_start(0);
    assert_non_null(a);
    dstack_endpoint_t ep;
    endpoint_of(&ep, a, 2000);
    dstack_quote_t q = {0};
    char err[256] = "";
    assert_int_equal(dstack_get_quote(&ep, RD, &q, err, sizeof err), 0);
    assert_int_equal(q.quote.len, a->quote.len);
    assert_memory_equal(q.quote.data + a->rd_off, RD, 64);
    /* The event log comes back exactly as the agent had it. */
    assert_int_equal(q.event_log.len, a->event_log.len);
    assert_memory_equal(q.event_log.data, a->event_log.data, a->event_log.len);
    uint8_t rtmr[4][48];
    assert_int_equal(tdx_rtmr_replay(q.event_log.data, q.event_log.len, rtmr, err, sizeof err), 0);
    tdx_quote_t pq;
    assert_int_equal(tdx_quote_parse(&pq, (const uint8_t *)q.quote.data, q.quote.len), 0);
    for (int i = 0; i < 4; i++)
        assert_memory_equal(rtmr[i], pq.body.rtmr[i], 48);
    assert_non_null(strstr(q.vm_config.data, "spec_version"));
    dstack_quote_free(&q);

    /* Chunked answers work the same. */
    a->chunked = 1;
    assert_int_equal(dstack_get_quote(&ep, RD, &q, err, sizeof err), 0);
    assert_int_equal(q.quote.len, a->quote.len);
    dstack_quote_free(&q);
    a->chunked = 0;

    /* A quote without our report_data is refused (the agent echoes ours). */
    a->bad_rd = 1;
    dstack_quote_t q2 = {0};
    assert_int_equal(dstack_get_quote(&ep, RD, &q2, err, sizeof err), 0); /* echo matches; quote checked by the provider */
    dstack_quote_free(&q2);
    fake_agent_stop(a);
}

static void test_info_tcb_object(void **state)
{
    (void)state;
    fake_agent_t *a = fake_agent_start(0);
    dstack_endpoint_t ep;
    endpoint_of(&ep, a, 2000);
    buf_t info = BUF_INIT;
    char err[256] = "";
    assert_int_equal(dstack_info(&ep, &info, err, sizeof err), 0);
    /* Same content as the SDK-parsed sample: tcb_info is an object again. */
    buf_t want = BUF_INIT;
    assert_int_equal(slurp("tdx/dstack-v055-sample/info_sdk_parsed.json", &want), 0);
    struct json_object *got = json_tokener_parse(info.data), *exp = json_tokener_parse(want.data), *t;
    assert_non_null(got);
    assert_true(json_object_object_get_ex(got, "tcb_info", &t));
    assert_true(json_object_is_type(t, json_type_object));
    assert_true(json_object_equal(got, exp));
    json_object_put(got);
    json_object_put(exp);
    buf_free(&want);
    buf_free(&info);
    fake_agent_stop(a);
}

static void test_get_key_stable(void **state)
{
    (void)state;
    uint8_t k1[32], k2[32], k3[32];
    char err[256];
    dstack_endpoint_t ep;
    fake_agent_t *a = fake_agent_start(0);
    endpoint_of(&ep, a, 2000);
    assert_int_equal(dstack_get_key(&ep, "m/ecdsa-signing-key", "secp256k1", k1, err, sizeof err), 0);
    assert_int_equal(dstack_get_key(&ep, "m/ed25519-signing-key", "ed25519", k3, err, sizeof err), 0);
    assert_memory_not_equal(k1, k3, 32);
    fake_agent_stop(a);
    a = fake_agent_start(0); /* "restart": same app, new agent process */
    endpoint_of(&ep, a, 2000);
    assert_int_equal(dstack_get_key(&ep, "m/ecdsa-signing-key", "secp256k1", k2, err, sizeof err), 0);
    assert_memory_equal(k1, k2, 32);
    fake_agent_stop(a);
    /* tappd has no GetKey */
    a = fake_agent_start(1);
    endpoint_of(&ep, a, 2000);
    assert_int_equal(dstack_get_key(&ep, "m/x", "secp256k1", k2, err, sizeof err), -1);
    fake_agent_stop(a);
}

static void test_tappd_quote(void **state)
{
    (void)state;
    fake_agent_t *a = fake_agent_start(1);
    dstack_endpoint_t ep;
    endpoint_of(&ep, a, 2000);
    dstack_quote_t q = {0};
    char err[256] = "";
    assert_int_equal(dstack_get_quote(&ep, RD, &q, err, sizeof err), 0);
    assert_string_equal(q.hash_algorithm, "raw");
    assert_string_equal(q.prefix, "");
    assert_memory_equal(q.quote.data + a->rd_off, RD, 64);
    assert_int_equal(a->n_quote, 1);
    dstack_quote_free(&q);
    buf_t info = BUF_INIT;
    assert_int_equal(dstack_info(&ep, &info, err, sizeof err), 0);
    buf_free(&info);
    fake_agent_stop(a);
}

static void test_errors(void **state)
{
    (void)state;
    char err[256];
    dstack_endpoint_t ep;
    dstack_quote_t q = {0};
    buf_t b = BUF_INIT;

    /* Agent missing. */
    assert_int_equal(dstack_endpoint_parse(&ep, "/tmp/vp-no-such-agent.sock", 0, 500, err, sizeof err), 0);
    assert_int_equal(dstack_get_quote(&ep, RD, &q, err, sizeof err), -1);
    assert_non_null(strstr(err, "GetQuote"));
    assert_non_null(strstr(err, "vp-no-such-agent.sock"));
    /* Nothing listens on this TCP port. */
    assert_int_equal(dstack_endpoint_parse(&ep, "http://127.0.0.1:1", 0, 500, err, sizeof err), 0);
    assert_int_equal(dstack_info(&ep, &b, err, sizeof err), -1);
    assert_int_equal(b.len, 0);

    fake_agent_t *a = fake_agent_start(0);
    endpoint_of(&ep, a, 200);
    /* Slow: both attempts time out. */
    a->delay_ms = 500;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(dstack_get_quote(&ep, RD, &q, err, sizeof err), -1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = at_ms_between(&t0, &t1);
    assert_true(ms >= 380 && ms < 1500);
    assert_non_null(strstr(err, "timed out"));
    a->delay_ms = 0;
    fake_sleep_ms(700); /* let the fake finish the stale exchanges */

    /* Garbage. */
    a->garbage = 1;
    assert_int_equal(dstack_get_quote(&ep, RD, &q, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a JSON object"));
    assert_int_equal(dstack_info(&ep, &b, err, sizeof err), -1);
    a->garbage = 0;

    /* One 500 then success: the retry hides it. Two 500s: the error names the agent's message. */
    a->fail_500 = 1;
    endpoint_of(&ep, a, 2000);
    assert_int_equal(dstack_get_quote(&ep, RD, &q, err, sizeof err), 0);
    dstack_quote_free(&q);
    a->fail_500 = 2;
    assert_int_equal(dstack_get_quote(&ep, RD, &q, err, sizeof err), -1);
    assert_non_null(strstr(err, "HTTP 500"));
    assert_non_null(strstr(err, "injected failure"));

    /* A hang-up is retried once. */
    a->hang_up = 1;
    assert_int_equal(dstack_info(&ep, &b, err, sizeof err), 0);
    buf_free(&b);
    a->hang_up = 2;
    assert_int_equal(dstack_info(&ep, &b, err, sizeof err), -1);
    assert_non_null(strstr(err, "Info"));
    fake_agent_stop(a);
}

/* Strictness on what the agent hands back: a key of any length but 32 bytes is refused (not
 * cut), a tappd that hashed report_data is refused, and valid JSON followed by whitespace is
 * accepted (RFC 8259), tcb_info included. */
static void test_agent_answers(void **state)
{
    (void)state;
    char err[256] = "";
    uint8_t k[32];
    dstack_endpoint_t ep;
    fake_agent_t *a = fake_agent_start(0);
    endpoint_of(&ep, a, 2000);
    a->long_key = 1;
    assert_int_equal(dstack_get_key(&ep, "m/ecdsa-signing-key", "secp256k1", k, err, sizeof err), -1);
    assert_non_null(strstr(err, "32-byte"));
    a->long_key = 0;

    a->trailing_nl = 1;
    dstack_quote_t q = {0};
    assert_int_equal(dstack_get_quote(&ep, RD, &q, err, sizeof err), 0);
    dstack_quote_free(&q);
    assert_int_equal(dstack_get_key(&ep, "m/ecdsa-signing-key", "secp256k1", k, err, sizeof err), 0);
    buf_t info = BUF_INIT;
    assert_int_equal(dstack_info(&ep, &info, err, sizeof err), 0);
    buf_free(&info);
    fake_agent_stop(a);

    a = fake_agent_start(1);
    endpoint_of(&ep, a, 2000);
    a->tappd_alg = "sha512";
    assert_int_equal(dstack_get_quote(&ep, RD, &q, err, sizeof err), -1);
    assert_non_null(strstr(err, "sha512"));
    assert_int_equal(q.quote.len, 0);
    a->tappd_alg = NULL;
    fake_agent_stop(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoint_parse), cmocka_unit_test(test_get_quote),
        cmocka_unit_test(test_info_tcb_object), cmocka_unit_test(test_get_key_stable),
        cmocka_unit_test(test_tappd_quote), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_agent_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
