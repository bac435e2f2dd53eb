/* The local verifying proxy's attestation state and status documents (src/verify/lp_att.c,
 * lp_status.c): what lp_att_pins / lp_att_kick answer, the answers' counters and ring, and the
 * JSON and HTML documents (the JSON parses with json-c; the HTML escapes a hostile string and
 * lists the same checks in the same order). The state is filled through the public functions
 * (lp_att_answer) and, for a verification's result, through the test hook lp_att_test_publish
 * (lp_att.h), the same code the attestation thread publishes with.
 *
 * Driver mode (tests/integration/lp-status.test.mjs):
 *   test_lp_status --live URL OUTDIR [--token T] [--allow-simulated] [--allow-http]
 *                  [--policy FILE] [--kick]
 * runs the real attestation thread against URL until its first verification is in (at most
 * 60 s), optionally kicks it once and waits for the re-verification, then writes
 * OUTDIR/verification.json and OUTDIR/index.html and prints one JSON line
 * {"verified","why","generation","kick_generation","kick_verified"}. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "verify/lp_att.h"
#include "verify/lproxy.h"
#include "verify/verify.h"

static const char HOSTILE[] = "<script>alert('x')</script> & \"quoted\"";

static lp_opts_t test_opts(vopts_t *vo)
{
    lp_opts_t o;
    memset(&o, 0, sizeof o);
    o.remote = "https://remote.example:8443";
    o.listen_host = "127.0.0.1";
    o.listen_port = 8741;
    o.recheck_s = 300;
    o.allow_simulated = 1;
    o.vo = vo;
    return o;
}

static void fill_result(lp_result_t *r, int ok)
{
    memset(r, 0, sizeof *r);
    r->ok = ok;
    check_add(&r->cl, "ecdsa.report.nonce", CHK_PASS, "the report echoes our nonce", "aa", "aa");
    check_add(&r->cl, "ecdsa.report.mode", CHK_WARN, "the attestation comes from real TDX hardware",
              "not simulated", "SIMULATED attestation accepted");
    check_add(&r->cl, "ecdsa.tdx.collateral", CHK_SKIP, "Intel collateral", "", "SIMULATED");
    check_add(&r->cl, "lp.tls.ecdsa", ok ? CHK_PASS : CHK_FAIL,
              "the report binds the TLS key this connection presented", "ab", HOSTILE);
    /* invalid UTF-8 and a control byte from the wire: still valid JSON */
    check_add(&r->cl, "ed25519.report.fetch", CHK_PASS, "fetched", "HTTP 200",
              "bad \xff\xfe \x01 utf8");
    for (int i = 0; i < 4; i++)
        snprintf(r->m.rtmr[i], sizeof r->m.rtmr[i], "%096d", i);
    snprintf(r->m.mrtd, sizeof r->m.mrtd, "%096d", 7);
    snprintf(r->m.tcb_status, sizeof r->m.tcb_status, "none: SIMULATED quote");
    snprintf(r->m.fmspc, sizeof r->m.fmspc, "00A06F000000");
    snprintf(r->m.ecdsa_address, sizeof r->m.ecdsa_address, "0x%040d", 1);
    snprintf(r->m.ed25519_key, sizeof r->m.ed25519_key, "%064d", 2);
    snprintf(r->m.tls_spki, sizeof r->m.tls_spki, "%064d", 3);
    snprintf(r->m.model, sizeof r->m.model, "%s", HOSTILE);
    r->m.gpu_count = 2;
    snprintf(r->m.gpu_arch, sizeof r->m.gpu_arch, "HOPPER");
    snprintf(r->m.gpu_local, sizeof r->m.gpu_local, "skip");
    r->policy_json = strdup("{\"mrtd\":\"00\",\"allow_tcb\":[\"SWHardeningNeeded\"]}");
    if (ok) {
        snprintf(r->pins.tls_spki, sizeof r->pins.tls_spki, "%064d", 3);
        snprintf(r->pins.curl_pin, sizeof r->pins.curl_pin, "sha256//AAAA");
        snprintf(r->pins.ecdsa_address, sizeof r->pins.ecdsa_address, "0x%040d", 1);
        snprintf(r->pins.ed25519_key, sizeof r->pins.ed25519_key, "%064d", 2);
        r->pins.simulated = 1;
    } else {
        snprintf(r->why, sizeof r->why, "check lp.tls.ecdsa failed: %s", HOSTILE);
    }
}

static struct json_object *render_json(void)
{
    buf_t b = BUF_INIT;
    lp_status_json(&b);
    assert_non_null(b.data);
    struct json_object *j = json_tokener_parse(b.data);
    if (!j)
        fprintf(stderr, "not JSON: %s\n", b.data);
    assert_non_null(j);
    buf_free(&b);
    return j;
}

static struct json_object *jk(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    assert_true(json_object_object_get_ex(o, k, &v));
    return v;
}

static const char *js(struct json_object *o, const char *k)
{
    return json_object_get_string(jk(o, k));
}

/* The data-check / data-status attributes of the HTML rows, in order, as "id=status" lines. */
static char *html_rows(const char *html)
{
    buf_t b = BUF_INIT;
    const char *p = html;
    while ((p = strstr(p, "<tr data-check=\""))) {
        p += strlen("<tr data-check=\"");
        const char *q = strchr(p, '"');
        assert_non_null(q);
        const char *st = strstr(q, "data-status=\"");
        assert_non_null(st);
        st += strlen("data-status=\"");
        buf_printf(&b, "%.*s=%.*s\n", (int)(q - p), p, (int)strcspn(st, "\""), st);
    }
    if (!b.data)
        buf_puts(&b, "");
    return b.data;
}

static void test_not_verified_documents(void **state)
{
    (void)state;
    lp_att_test_reset();
    vopts_t vo;
    memset(&vo, 0, sizeof vo);
    vo.policy_file = "/etc/lp-policy.json";
    lp_opts_t o = test_opts(&vo);
    lp_result_t r;
    fill_result(&r, 0);
    size_t nchecks = r.cl.n;
    lp_att_test_publish(&o, &r);
    assert_int_equal(r.cl.n, 0); /* moved */

    lp_pins_t pins;
    char why[512];
    memset(&pins, 0x55, sizeof pins);
    assert_int_equal(lp_att_pins(&pins, why, sizeof why), 0);
    assert_non_null(strstr(why, "lp.tls.ecdsa"));
    assert_int_equal(pins.generation, 0);
    assert_string_equal(pins.curl_pin, "");
    /* no thread: a kick answers at once, with the same state */
    assert_int_equal(lp_att_kick("test", 1000, &pins, why, sizeof why), 0);

    struct json_object *j = render_json();
    assert_string_equal(js(j, "state"), "not verified");
    assert_false(json_object_get_boolean(jk(j, "verified")));
    assert_string_equal(js(j, "why"), why);
    assert_string_equal(js(j, "remote"), "https://remote.example:8443");
    assert_string_equal(js(j, "listen"), "127.0.0.1:8741");
    assert_string_equal(js(j, "last_verification"), "fail");
    struct json_object *checks = jk(j, "checks");
    assert_int_equal(json_object_array_length(checks), nchecks);
    struct json_object *c3 = json_object_array_get_idx(checks, 3);
    assert_string_equal(js(c3, "id"), "lp.tls.ecdsa");
    assert_string_equal(js(c3, "status"), "fail");
    assert_string_equal(js(c3, "found"), HOSTILE);
    assert_string_equal(js(json_object_array_get_idx(checks, 1), "status"), "warn");
    assert_string_equal(js(json_object_array_get_idx(checks, 2), "status"), "skip");
    /* invalid UTF-8 and control bytes were replaced, the rest kept */
    assert_string_equal(js(json_object_array_get_idx(checks, 4), "found"), "bad ?? ? utf8");
    struct json_object *sum = jk(j, "summary");
    assert_int_equal(json_object_get_int(jk(sum, "fail")), 1);
    assert_int_equal(json_object_get_int(jk(sum, "pass")), 2);
    struct json_object *m = jk(j, "measurements");
    assert_int_equal(strlen(js(m, "rtmr3")), 96);
    assert_string_equal(js(m, "fmspc"), "00A06F000000");
    assert_string_equal(js(m, "model"), HOSTILE);
    assert_true(json_object_is_type(jk(m, "compose_hash"), json_type_null));
    assert_true(json_object_is_type(jk(jk(j, "keys"), "pinned"), json_type_null));
    assert_int_equal(json_object_get_int(jk(jk(j, "gpu"), "count")), 2);
    assert_string_equal(js(jk(j, "gpu"), "arch"), "HOPPER");
    struct json_object *pol = jk(j, "policy");
    assert_string_equal(js(pol, "file"), "/etc/lp-policy.json");
    assert_string_equal(js(jk(pol, "content"), "mrtd"), "00");
    json_object_put(j);

    buf_t h = BUF_INIT;
    lp_status_html(&h);
    assert_non_null(h.data);
    assert_null(strstr(h.data, "<script"));
    assert_null(strstr(h.data, "alert('x')"));
    assert_non_null(strstr(h.data, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; "
                                   "&quot;quoted&quot;"));
    assert_non_null(strstr(h.data, "id=\"state\" class=\"bad\" data-state=\"not verified\">"
                                   "NOT VERIFIED: check lp.tls.ecdsa failed: &lt;script"));
    assert_non_null(strstr(h.data, "id=\"checklist\""));
    /* no external asset of any kind */
    assert_null(strstr(h.data, "src="));
    assert_null(strstr(h.data, "<link"));
    assert_null(strstr(h.data, "@import"));
    char *rows = html_rows(h.data);
    assert_string_equal(rows, "ecdsa.report.nonce=pass\necdsa.report.mode=warn\n"
                              "ecdsa.tdx.collateral=skip\nlp.tls.ecdsa=fail\n"
                              "ed25519.report.fetch=pass\n");
    free(rows);
    buf_free(&h);
}

static void test_verified_and_generations(void **state)
{
    (void)state;
    lp_att_test_reset();
    lp_opts_t o = test_opts(NULL);
    lp_result_t r;
    fill_result(&r, 1);
    lp_att_test_publish(&o, &r);
    free(r.policy_json);
    lp_pins_t p;
    char why[256];
    assert_int_equal(lp_att_pins(&p, why, sizeof why), 1);
    assert_int_equal(p.generation, 1);
    assert_true(p.verified_at > 0);
    assert_string_equal(p.curl_pin, "sha256//AAAA");
    assert_int_equal(p.simulated, 1);
    assert_string_equal(why, "");

    fill_result(&r, 1);
    lp_att_test_publish(&o, &r);
    assert_int_equal(lp_att_pins(&p, NULL, 0), 1);
    assert_int_equal(p.generation, 2);

    struct json_object *j = render_json();
    assert_string_equal(js(j, "state"), "verified");
    assert_true(json_object_is_type(jk(j, "why"), json_type_null));
    assert_int_equal(json_object_get_int(jk(j, "generation")), 2);
    assert_string_equal(js(jk(jk(j, "keys"), "pinned"), "curl_pin"), "sha256//AAAA");
    assert_true(json_object_get_boolean(jk(j, "simulated")));
    json_object_put(j);
    buf_t h = BUF_INIT;
    lp_status_html(&h);
    assert_non_null(strstr(h.data, "data-state=\"verified\">Verified (SIMULATED"));
    buf_free(&h);

    /* a failed re-verification withdraws the pins at once */
    fill_result(&r, 0);
    lp_att_test_publish(&o, &r);
    assert_int_equal(lp_att_pins(&p, why, sizeof why), 0);
    assert_int_equal(p.generation, 0);
    assert_non_null(strstr(why, "lp.tls.ecdsa"));
    /* and the next success is a new generation */
    fill_result(&r, 1);
    lp_att_test_publish(&o, &r);
    assert_int_equal(lp_att_pins(&p, NULL, 0), 1);
    assert_int_equal(p.generation, 3);
}

static void test_answers_ring(void **state)
{
    (void)state;
    lp_att_test_reset();
    lp_opts_t o = test_opts(NULL);
    lp_result_t r;
    fill_result(&r, 1);
    lp_att_test_publish(&o, &r);
    for (int i = 0; i < 25; i++) {
        char id[32];
        snprintf(id, sizeof id, "chatcmpl-%d", i);
        lp_att_answer(i % 2 ? "/v1/chat/completions" : "/v1/completions", id, i % 3 == 0,
                      i % 5 == 4 ? "signature.ecdsa" : NULL);
    }
    lp_att_answer("/v1/chat/completions", HOSTILE, 0, "signature.text");
    struct json_object *j = render_json();
    struct json_object *a = jk(j, "answers");
    assert_int_equal(json_object_get_int(jk(a, "verified")), 20);
    assert_int_equal(json_object_get_int(jk(a, "rejected")), 6);
    struct json_object *last = jk(a, "last");
    assert_int_equal(json_object_array_length(last), LP_ANSWERS);
    struct json_object *a0 = json_object_array_get_idx(last, 0),
                       *a1 = json_object_array_get_idx(last, 1);
    assert_string_equal(js(a0, "id"), HOSTILE);
    assert_false(json_object_get_boolean(jk(a0, "ok")));
    assert_string_equal(js(a0, "check"), "signature.text");
    assert_string_equal(js(a1, "id"), "chatcmpl-24");
    assert_string_equal(js(a1, "check"), "signature.ecdsa");
    assert_string_equal(js(json_object_array_get_idx(last, 2), "id"), "chatcmpl-23");
    assert_true(json_object_get_boolean(jk(json_object_array_get_idx(last, 2), "ok")));
    assert_true(
        json_object_is_type(jk(json_object_array_get_idx(last, 2), "check"), json_type_null));
    /* the oldest kept is the 20th newest */
    assert_string_equal(js(json_object_array_get_idx(last, LP_ANSWERS - 1), "id"), "chatcmpl-6");
    json_object_put(j);
    buf_t h = BUF_INIT;
    lp_status_html(&h);
    assert_null(strstr(h.data, "<script"));
    assert_non_null(strstr(h.data, "FAIL: signature.text"));
    assert_non_null(strstr(h.data, "20 verified, 6 rejected"));
    buf_free(&h);
}

/* ---- driver mode ---- */

static int live(int argc, char **argv)
{
    vopts_t vo;
    memset(&vo, 0, sizeof vo);
    vo.timeout_s = 20;
    vo.expect_gpus = vo.expect_nvswitches = -1;
    lp_opts_t o;
    memset(&o, 0, sizeof o);
    o.remote = argv[2];
    o.listen_host = "127.0.0.1";
    o.listen_port = 8741;
    o.recheck_s = 300;
    o.timeout_s = 20;
    o.vo = &vo;
    int kick = 0;
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--allow-simulated") == 0)
            o.allow_simulated = 1;
        else if (strcmp(argv[i], "--allow-http") == 0)
            o.allow_http = 1;
        else if (strcmp(argv[i], "--kick") == 0)
            kick = 1;
        else if (strcmp(argv[i], "--token") == 0 && i + 1 < argc)
            o.token = argv[++i];
        else if (strcmp(argv[i], "--policy") == 0 && i + 1 < argc)
            vo.policy_file = argv[++i];
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (lp_att_start(&o) != 0)
        return 2;
    lp_pins_t p;
    char why[512] = "";
    lp_snap_t s;
    for (int i = 0; i < 600; i++) { /* the first verification: at most 60 s */
        lp_att_snapshot(&s);
        uint64_t rounds = s.rounds;
        lp_snap_free(&s);
        if (rounds > 0)
            break;
        usleep(100000);
    }
    int ok = lp_att_pins(&p, why, sizeof why);
    uint64_t gen = p.generation;
    int kok = -1;
    uint64_t kgen = 0;
    if (kick) {
        lp_pins_t kp;
        char kwhy[512];
        kok = lp_att_kick("test kick", 60000, &kp, kwhy, sizeof kwhy);
        kgen = kp.generation;
    }
    char path[4096];
    buf_t b = BUF_INIT;
    lp_status_json(&b);
    snprintf(path, sizeof path, "%s/verification.json", argv[3]);
    FILE *f = fopen(path, "w");
    if (!f || fwrite(b.data, 1, b.len, f) != b.len || fclose(f) != 0)
        return 2;
    buf_reset(&b);
    lp_status_html(&b);
    snprintf(path, sizeof path, "%s/index.html", argv[3]);
    f = fopen(path, "w");
    if (!f || fwrite(b.data, 1, b.len, f) != b.len || fclose(f) != 0)
        return 2;
    buf_reset(&b);
    buf_printf(&b, "{\"verified\":%s,\"why\":", ok ? "true" : "false");
    buf_json_str(&b, why, strlen(why));
    buf_printf(&b, ",\"generation\":%llu,\"curl_pin\":", (unsigned long long)gen);
    buf_json_str(&b, p.curl_pin, strlen(p.curl_pin));
    buf_printf(&b, ",\"kick_verified\":%d,\"kick_generation\":%llu}\n", kok,
               (unsigned long long)kgen);
    fputs(b.data, stdout);
    buf_free(&b);
    lp_att_stop();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "--live") == 0)
        return live(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_verified_documents),
        cmocka_unit_test(test_verified_and_generations),
        cmocka_unit_test(test_answers_ring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
