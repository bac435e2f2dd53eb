/* Unit tests for src/tdx/quote: parsing and the four signature links on real public quotes
 * (tests/vectors/README.md), tampering and truncation, and dstack event-log replay. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "at.h"
#include "core/hex.h"
#include "core/sha.h"
#include "tdx/quote.h"

#define T_V4 1750414563    /* inside the dcap-qvl collateral window (2025-06-20) */
#define T_2026 1780000000  /* 2026-05-28, inside every PCK leaf used here */

#include "vectors.h"

static uint8_t *load(const char *rel, size_t *len) { return vec_load(rel, len); }

/* A quote given as hex text (trailing whitespace allowed). */
static uint8_t *load_hex(const char *rel, size_t *len)
{
    size_t n = 0;
    char *t = (char *)load(rel, &n);
    if (!t)
        return NULL;
    while (n && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' '))
        n--;
    uint8_t *q = malloc(n / 2 + 1);
    long r = q ? hex_decode(q, n / 2 + 1, t, n) : -1;
    free(t);
    if (r < 0) {
        free(q);
        return NULL;
    }
    *len = (size_t)r;
    return q;
}

static uint8_t *intel_root(size_t *len, int pem)
{
    return load(pem ? "intel/IntelSGXRootCA.pem" : "intel/IntelSGXRootCA.der", len);
}

static void check_all_links_at(AT_PARAMS, const tdx_quote_t *q, time_t at)
{
    size_t rl;
    uint8_t *root = intel_root(&rl, 0);
    at_assert_non_null(root);
    at_assert_int_equal(tdx_verify_quote_signature(q), TDX_OK);
    at_assert_int_equal(tdx_verify_qe_binding(q), TDX_OK);
    at_assert_int_equal(tdx_verify_qe_report_signature(q), TDX_OK);
    at_assert_int_equal(tdx_pck_chain_verify(q->pck_chain, q->pck_chain_len, root, rl, at), TDX_OK);
    at_assert_int_equal(tdx_verify_quote(q, root, rl, at), TDX_OK);
    free(root);
}
#define check_all_links(...) check_all_links_at(AT_HERE, __VA_ARGS__)

static void test_dcap_v4(void **state)
{
    (void)state;
    size_t n, rl;
    uint8_t *d = load("tdx/dcap-qvl/tdx_quote_v4.bin", &n);
    assert_non_null(d);
    tdx_quote_t q;
    assert_int_equal(tdx_quote_parse(&q, d, n), TDX_OK);
    assert_int_equal(q.version, 4);
    assert_int_equal(q.att_key_type, 2);
    assert_int_equal(q.tee_type, 0x81);
    assert_int_equal(q.body_type, 2);
    assert_int_equal(q.body_off, 48);
    assert_int_equal(q.signed_len, 632);
    assert_int_equal(q.sig_data_off, 636);
    assert_memory_equal(q.qe_vendor_id, tdx_intel_qe_vendor_id, 16);
    assert_int_equal(q.cert_type, 6);
    assert_int_equal(q.pck_cert_type, 5);
    assert_int_equal(q.qe_auth_len, 32);
    assert_int_equal(q.quote_len, 636 + q.sig_data_len);
    assert_int_equal(q.cert_len + 770, q.quote_len);
    assert_true(q.quote_len <= n);
    assert_ptr_equal(q.body.report_data, d + 568);
    assert_ptr_equal(q.body.rtmr[3], d + 520);
    assert_ptr_equal(q.body.mrtd, d + 184);
    assert_null(q.body.mrservicetd);
    for (int i = 0; i < 32; i++)
        assert_int_equal(q.qe_auth_data[i], i);
    assert_int_equal(tdx_td_attributes(&q) & TDX_ATTR_DEBUG, 0);
    check_all_links(&q, T_V4);
    /* PEM root works too; a wrong anchor or a time after the leaf expires does not. */
    uint8_t *pem = intel_root(&rl, 1);
    assert_int_equal(tdx_pck_chain_verify(q.pck_chain, q.pck_chain_len, pem, rl, T_V4), TDX_OK);
    free(pem);
    uint8_t *sim = load("simulated/sim_root_ca.pem", &rl);
    assert_int_equal(tdx_pck_chain_verify(q.pck_chain, q.pck_chain_len, sim, rl, T_V4), TDX_ERR_CHAIN);
    free(sim);
    uint8_t *der = intel_root(&rl, 0);
    assert_int_equal(tdx_pck_chain_verify(q.pck_chain, q.pck_chain_len, der, rl, 2000000000), TDX_ERR_CHAIN);
    assert_int_equal(tdx_pck_chain_verify(q.pck_chain, q.pck_chain_len, der, rl, 1500000000), TDX_ERR_CHAIN);
    /* The chain without its leaf is not a chain for the leaf's key. */
    assert_int_equal(tdx_pck_chain_verify(q.pck_chain, 10, der, rl, T_V4), TDX_ERR_CHAIN);
    free(der);
    free(d);
}

static void test_dcap_v5(void **state)
{
    (void)state;
    size_t n;
    uint8_t *d = load("tdx/dcap-qvl/tdx_quote_v5_no_tcb_match.bin", &n);
    assert_non_null(d);
    tdx_quote_t q;
    assert_int_equal(tdx_quote_parse(&q, d, n), TDX_OK);
    assert_int_equal(q.version, 5);
    assert_int_equal(q.body_type, 3);
    assert_int_equal(q.body_len, 648);
    assert_int_equal(q.body_off, 54);
    assert_int_equal(q.signed_len, 702);
    assert_int_equal(q.sig_data_off, 706);
    assert_non_null(q.body.mrservicetd);
    assert_ptr_equal(q.body.report_data, d + 54 + 520);
    check_all_links(&q, T_2026);
    free(d);
}

static void test_go_tdx_guest(void **state)
{
    (void)state;
    size_t n;
    uint8_t *d = load("tdx/go-tdx-guest/tdx_prod_quote_SPR_E4_trailing_bytes.dat", &n);
    assert_non_null(d);
    tdx_quote_t q;
    assert_int_equal(tdx_quote_parse(&q, d, n), TDX_OK);
    assert_int_equal(q.version, 4);
    assert_int_equal(n - q.quote_len, 39);
    check_all_links(&q, T_V4);
    /* Trailing bytes are not signed: changing them changes nothing. */
    for (size_t i = q.quote_len; i < n; i++)
        d[i] ^= 0x5a;
    assert_int_equal(tdx_quote_parse(&q, d, n), TDX_OK);
    check_all_links(&q, T_V4);
    free(d);

    d = load("tdx/go-tdx-guest/quote_v5_sample.dat", &n);
    assert_non_null(d);
    assert_int_equal(tdx_quote_parse(&q, d, n), TDX_OK);
    assert_int_equal(q.version, 5);
    check_all_links(&q, T_2026);
    free(d);
}

static struct json_object *load_json(const char *rel)
{
    size_t n;
    char *t = (char *)load(rel, &n);
    if (!t)
        return NULL;
    struct json_object *o = json_tokener_parse(t);
    free(t);
    return o;
}

static void test_dstack_v055(void **state)
{
    (void)state;
    size_t n = 0, el = 0;
    uint8_t *d = load_hex("tdx/dstack-v055-sample/quote.hex", &n);
    assert_non_null(d);
    assert_int_equal(n, 5010);
    tdx_quote_t q;
    assert_int_equal(tdx_quote_parse(&q, d, n), TDX_OK);
    assert_int_equal(q.sig_data_len, 4304);
    assert_int_equal(q.quote_len, 4940);
    check_all_links(&q, T_2026);
    assert_int_equal(tdx_td_attributes(&q), TDX_ATTR_SEPT_VE_DISABLE);

    char *log = (char *)load("tdx/dstack-v055-sample/event_log.json", &el);
    assert_non_null(log);
    uint8_t rtmr[4][48];
    char err[128] = "";
    assert_int_equal(tdx_rtmr_replay(log, el, rtmr, err, sizeof err), TDX_OK);
    for (int i = 0; i < 4; i++)
        assert_memory_equal(rtmr[i], q.body.rtmr[i], 48);

    /* The Info that came with it: compose hash → MRCONFIGID, device_id, mr_aggregated. */
    struct json_object *info = load_json("tdx/dstack-v055-sample/info_sdk_parsed.json"), *tcb, *f;
    assert_non_null(info);
    assert_true(json_object_object_get_ex(info, "tcb_info", &tcb));
    assert_true(json_object_object_get_ex(tcb, "app_compose", &f));
    uint8_t ch[32], want[48] = {0x01}, got[32];
    char hex[129];
    sha256(json_object_get_string(f), (size_t)json_object_get_string_len(f), ch);
    memcpy(want + 1, ch, 32);
    assert_memory_equal(q.body.mrconfigid, want, 48);
    hex_encode(hex, ch, 32);
    assert_true(json_object_object_get_ex(info, "compose_hash", &f));
    assert_string_equal(json_object_get_string(f), hex);
    sha256(q.user_data, 20, got);
    hex_encode(hex, got, 32);
    assert_true(json_object_object_get_ex(info, "device_id", &f));
    assert_string_equal(json_object_get_string(f), hex);
    tdx_mr_aggregated(&q.body, got);
    hex_encode(hex, got, 32);
    assert_true(json_object_object_get_ex(tcb, "mr_aggregated", &f));
    assert_string_equal(json_object_get_string(f), hex);
    /* The parsed tcb_info.event_log array replays the same way. */
    assert_true(json_object_object_get_ex(tcb, "event_log", &f));
    uint8_t rtmr2[4][48];
    assert_int_equal(tdx_rtmr_replay_obj(f, rtmr2, err, sizeof err), TDX_OK);
    assert_memory_equal(rtmr2, rtmr, sizeof rtmr);
    json_object_put(info);

    /* A runtime event whose payload changed no longer matches its digest. */
    char *p = strstr(log, "\"event\":\"app-id\",\"event_payload\":\"ab84");
    assert_non_null(p);
    p[strlen("\"event\":\"app-id\",\"event_payload\":\"")] = 'c';
    assert_int_equal(tdx_rtmr_replay(log, el, rtmr, err, sizeof err), TDX_ERR_EVENTLOG);
    assert_non_null(strstr(err, "does not match"));
    free(log);
    free(d);
}

/* dstack fixtures: a v0.6.0 log whose runtime digests were stripped (recomputed), and one
 * with numeric strings for imr/event_type and an app-emitted event. */
static void replay_fixture_at(AT_PARAMS, const char *rel)
{
    struct json_object *o = load_json(rel), *fq, *fl;
    at_assert_non_null(o);
    at_assert_true(json_object_object_get_ex(o, "quote", &fq));
    at_assert_true(json_object_object_get_ex(o, "event_log", &fl));
    const char *qh = json_object_get_string(fq);
    size_t qhl = (size_t)json_object_get_string_len(fq);
    uint8_t *d = malloc(qhl / 2);
    at_assert_int_equal(hex_decode(d, qhl / 2, qh, qhl), (long)(qhl / 2));
    tdx_quote_t q;
    at_assert_int_equal(tdx_quote_parse(&q, d, qhl / 2), TDX_OK);
    at_assert_int_equal(tdx_verify_quote_signature(&q), TDX_OK);
    at_assert_int_equal(tdx_verify_qe_binding(&q), TDX_OK);
    at_assert_int_equal(tdx_verify_qe_report_signature(&q), TDX_OK);
    uint8_t rtmr[4][48];
    char err[128] = "";
    int rc = tdx_rtmr_replay(json_object_get_string(fl), (size_t)json_object_get_string_len(fl),
                             rtmr, err, sizeof err);
    if (rc)
        fprintf(stderr, "%s: %s\n", rel, err);
    at_assert_int_equal(rc, TDX_OK);
    for (int i = 0; i < 4; i++)
        at_assert_memory_equal(rtmr[i], q.body.rtmr[i], 48);
    free(d);
    json_object_put(o);
}
#define replay_fixture(...) replay_fixture_at(AT_HERE, __VA_ARGS__)

static void test_dstack_fixtures(void **state)
{
    (void)state;
    replay_fixture("tdx/dstack-fixtures/getquote_v060_stripped_eventlog.json");
    replay_fixture("tdx/dstack-fixtures/getquote_custom_event.json");
}

static void test_replay_errors(void **state)
{
    (void)state;
    uint8_t r[4][48];
    char err[128];
    static const char *bad[] = {
        "", "{}", "[1]", "[{\"imr\":4,\"event_type\":1,\"digest\":\"\"}]",
        "[{\"imr\":0,\"event_type\":1,\"digest\":\"\"}]",  /* boot event without digest */
        "[{\"imr\":0,\"event_type\":1,\"digest\":\"00\"}]", /* short digest */
        "[{\"imr\":-1,\"event_type\":1,\"digest\":\"\"}]",
        "[{\"imr\":3,\"event_type\":134217729,\"digest\":\"\",\"event\":\"x\",\"event_payload\":\"0\"}]",
        "[{\"imr\":3,\"event_type\":134217729,\"digest\":\"\",\"event\":\"x\"}]",
        "[{\"imr\":3,\"event_type\":134217729,\"digest\":\"\",\"event\":\"x\",\"event_payload\":\"\",\"version\":9}]",
        "[] trailing",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(tdx_rtmr_replay(bad[i], strlen(bad[i]), r, err, sizeof err), TDX_ERR_EVENTLOG);
    const char *empty = "[]";
    assert_int_equal(tdx_rtmr_replay(empty, 2, r, NULL, 0), TDX_OK);
    /* One runtime event: RTMR3 = sha384(0^48 || digest). */
    const char *one = "[{\"imr\":3,\"event_type\":134217729,\"digest\":\"\",\"event\":\"a\",\"event_payload\":\"0102\"}]";
    assert_int_equal(tdx_rtmr_replay(one, strlen(one), r, err, sizeof err), TDX_OK);
    uint8_t dg[48], buf[96] = {0}, want[48];
    const uint8_t pl[2] = {1, 2};
    tdx_runtime_event_digest(TDX_DSTACK_EVENT_TYPE, "a", 1, pl, 2, dg);
    memcpy(buf + 48, dg, 48);
    sha384(buf, 96, want);
    assert_memory_equal(r[3], want, 48);
    /* v2 digest: sha384 of the canonical JSON. */
    const char *v2 = "[{\"imr\":3,\"event_type\":134217729,\"digest\":\"\",\"event\":\"a\",\"event_payload\":\"0102\",\"version\":2}]";
    assert_int_equal(tdx_rtmr_replay(v2, strlen(v2), r, err, sizeof err), TDX_OK);
    const char *canon = "{\"name\":\"a\",\"payload\":\"0102\",\"type\":134217729}";
    sha384(canon, strlen(canon), dg);
    memcpy(buf + 48, dg, 48);
    sha384(buf, 96, want);
    assert_memory_equal(r[3], want, 48);
}

/* Tampering: which link catches which byte. */
typedef struct expect {
    int sig, bind, qesig;
} expect_t;

static void flip_and_check_at(AT_PARAMS, const uint8_t *orig, size_t n, size_t off, expect_t e)
{
    uint8_t *d = malloc(n);
    memcpy(d, orig, n);
    d[off] ^= 0x01;
    tdx_quote_t q;
    at_assert_int_equal(tdx_quote_parse(&q, d, n), TDX_OK);
    at_assert_int_equal(tdx_verify_quote_signature(&q), e.sig);
    at_assert_int_equal(tdx_verify_qe_binding(&q), e.bind);
    at_assert_int_equal(tdx_verify_qe_report_signature(&q), e.qesig);
    free(d);
}
#define flip_and_check(...) flip_and_check_at(AT_HERE, __VA_ARGS__)

static void test_tamper(void **state)
{
    (void)state;
    size_t n, rl;
    uint8_t *d = load("tdx/dcap-qvl/tdx_quote_v4.bin", &n);
    assert_non_null(d);
    const expect_t quote_sig = {TDX_ERR_SIGNATURE, TDX_OK, TDX_OK};
    flip_and_check(d, n, 13, quote_sig);        /* header: QE vendor id */
    flip_and_check(d, n, 30, quote_sig);        /* header: user data */
    flip_and_check(d, n, 48, quote_sig);        /* body: TEE_TCB_SVN */
    flip_and_check(d, n, 200, quote_sig);       /* body: MRTD */
    flip_and_check(d, n, 500, quote_sig);       /* body: RTMR2 */
    flip_and_check(d, n, 568, quote_sig);       /* REPORTDATA first byte */
    flip_and_check(d, n, 631, quote_sig);       /* REPORTDATA last byte */
    flip_and_check(d, n, 636 + 5, quote_sig);   /* quote signature r */
    flip_and_check(d, n, 636 + 60, quote_sig);  /* quote signature s */
    flip_and_check(d, n, 700 + 3, (expect_t){TDX_ERR_SIGNATURE, TDX_ERR_BINDING, TDX_OK}); /* attest key */
    flip_and_check(d, n, 770 + 64, (expect_t){TDX_OK, TDX_OK, TDX_ERR_SIGNATURE});          /* QE MRENCLAVE */
    flip_and_check(d, n, 770 + 320, (expect_t){TDX_OK, TDX_ERR_BINDING, TDX_ERR_SIGNATURE}); /* QE report_data */
    flip_and_check(d, n, 770 + 383, (expect_t){TDX_OK, TDX_ERR_BINDING, TDX_ERR_SIGNATURE}); /* zero half */
    flip_and_check(d, n, 1154 + 10, (expect_t){TDX_OK, TDX_OK, TDX_ERR_SIGNATURE});         /* QE report sig */
    flip_and_check(d, n, 1220 + 7, (expect_t){TDX_OK, TDX_ERR_BINDING, TDX_OK});            /* QE auth data */

    /* A byte of the leaf certificate's body: the chain no longer verifies. */
    uint8_t *root = intel_root(&rl, 0);
    tdx_quote_t q;
    assert_int_equal(tdx_quote_parse(&q, d, n), TDX_OK);
    size_t leaf_off = (size_t)(q.pck_chain - d) + 200;
    d[leaf_off] = d[leaf_off] == 'A' ? 'B' : 'A';
    assert_int_equal(tdx_quote_parse(&q, d, n), TDX_OK);
    assert_int_not_equal(tdx_pck_chain_verify(q.pck_chain, q.pck_chain_len, root, rl, T_V4), TDX_OK);
    assert_int_not_equal(tdx_verify_quote(&q, root, rl, T_V4), TDX_OK);
    free(root);
    free(d);
}

/* Structural corruption: every field the parser checks. */
static void test_bad_fields(void **state)
{
    (void)state;
    size_t n;
    uint8_t *orig = load("tdx/dcap-qvl/tdx_quote_v4.bin", &n);
    uint8_t *d = malloc(n);
    tdx_quote_t q;
    struct {
        size_t off;
        uint8_t val;
        int want;
    } cases[] = {
        {0, 3, TDX_ERR_VERSION}, {2, 3, TDX_ERR_KEY_TYPE}, {4, 0, TDX_ERR_TEE_TYPE},
        {635, 0x7f, TDX_ERR_TRUNCATED},  /* sig_data_len huge */
        {764, 5, TDX_ERR_CERT_TYPE},     /* outer cert type */
        {769, 0x10, TDX_ERR_TRUNCATED},  /* cert size huge */
        {766, 0x00, TDX_ERR_CERT_TYPE},  /* cert size changed (smaller) */
        {1219, 0x40, TDX_ERR_TRUNCATED}, /* auth data size huge */
        {1252, 6, TDX_ERR_CERT_TYPE},    /* inner cert type */
        {1257, 0x01, TDX_ERR_TRUNCATED}, /* PCK chain size huge */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(d, orig, n);
        d[cases[i].off] = cases[i].val;
        assert_int_equal(tdx_quote_parse(&q, d, n), cases[i].want);
    }
    /* v4 header on a v5 quote and vice versa. */
    memcpy(d, orig, n);
    d[0] = 5;
    assert_int_not_equal(tdx_quote_parse(&q, d, n), TDX_OK);
    free(d);
    free(orig);
    assert_int_equal(tdx_quote_parse(&q, NULL, 0), TDX_ERR_TRUNCATED);
}

/* Every prefix shorter than the signed quote fails to parse, in an exact-size heap copy so
 * the sanitizer sees any read past the end. */
static void truncate_all_at(AT_PARAMS, const char *rel)
{
    size_t n;
    uint8_t *orig = load(rel, &n);
    at_assert_non_null(orig);
    tdx_quote_t q;
    at_assert_int_equal(tdx_quote_parse(&q, orig, n), TDX_OK);
    size_t qlen = q.quote_len;
    for (size_t len = 0; len < qlen; len++) {
        uint8_t *d = malloc(len ? len : 1);
        memcpy(d, orig, len);
        int rc = tdx_quote_parse(&q, d, len);
        at_assert_int_equal(rc, TDX_ERR_TRUNCATED);
        free(d);
    }
    uint8_t *d = malloc(qlen);
    memcpy(d, orig, qlen);
    at_assert_int_equal(tdx_quote_parse(&q, d, qlen), TDX_OK);
    at_assert_int_equal(tdx_verify_quote_signature(&q), TDX_OK);
    free(d);
    free(orig);
}
#define truncate_all(...) truncate_all_at(AT_HERE, __VA_ARGS__)

static void test_truncation(void **state)
{
    (void)state;
    truncate_all("tdx/dcap-qvl/tdx_quote_v4.bin");
    truncate_all("tdx/dcap-qvl/tdx_quote_v5_no_tcb_match.bin");
}

/* Random mutations: the parser and the checks never crash. */
static void test_mutations(void **state)
{
    (void)state;
    size_t n;
    uint8_t *orig = load("tdx/dcap-qvl/tdx_quote_v4.bin", &n);
    uint8_t *d = malloc(n);
    unsigned seed = 12345;
    int parsed = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(d, orig, n);
        for (int k = 0; k < 3; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t off = (seed >> 8) % 1300; /* the structured part */
            seed = seed * 1103515245u + 12345u;
            d[off] = (uint8_t)(seed >> 16);
        }
        tdx_quote_t q;
        if (tdx_quote_parse(&q, d, n) == TDX_OK) {
            parsed++;
            if (it % 10 == 0) {
                (void)tdx_verify_quote_signature(&q);
                (void)tdx_verify_qe_binding(&q);
            }
        }
    }
    assert_true(parsed > 0);
    free(d);
    free(orig);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dcap_v4),        cmocka_unit_test(test_dcap_v5),
        cmocka_unit_test(test_go_tdx_guest),   cmocka_unit_test(test_dstack_v055),
        cmocka_unit_test(test_dstack_fixtures), cmocka_unit_test(test_replay_errors),
        cmocka_unit_test(test_tamper),         cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_truncation),     cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests_name("tdx", tests, NULL, NULL);
}
