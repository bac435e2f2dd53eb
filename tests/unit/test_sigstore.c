/* Unit tests for src/proxy/sigstore.c: the text the two signatures cover (SIGNED_TEXT: the
 * reference's "req:resp" or the Rust proxy's "model:req:resp") is exactly the record's "text",
 * both signatures verify over it (and not over the other form), the record stays valid JSON
 * for a model name that needs escaping, and a model name longer than the limit is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "proxy/sigstore.h"
#include "sign/signer.h"

#define REQ "1111111111111111111111111111111111111111111111111111111111111111"
#define RESP "2222222222222222222222222222222222222222222222222222222222222222"

static signer_t *g_signer;

typedef struct got {
    int rc;
    char text[600], sig_e[200], addr_e[64], sig_d[200], addr_d[80];
} got_t;

static void copy(char *dst, size_t cap, const char *s, size_t n)
{
    snprintf(dst, cap, "%.*s", (int)n, s ? s : "");
}

static void on_get(void *ud, int rc, const sig_record_t *r)
{
    got_t *g = ud;
    g->rc = rc;
    if (!r)
        return;
    copy(g->text, sizeof g->text, r->text, r->text_len);
    copy(g->sig_e, sizeof g->sig_e, r->signature_ecdsa, r->signature_ecdsa_len);
    copy(g->addr_e, sizeof g->addr_e, r->address_ecdsa, r->address_ecdsa_len);
    copy(g->sig_d, sizeof g->sig_d, r->signature_ed25519, r->signature_ed25519_len);
    copy(g->addr_d, sizeof g->addr_d, r->address_ed25519, r->address_ed25519_len);
}

/* Puts one record under id and reads it back. */
static got_t put_get(const char *model, int model_in_text, const char *id)
{
    store_t *st = store_new(16, 600);
    assert_non_null(st);
    sigstore_t ss = {st, NULL, g_signer, model, model_in_text};
    assert_int_equal(sigstore_sign_put(&ss, id, REQ ":" RESP), SIGSTORE_OK);
    got_t g = {.rc = -9};
    sigstore_get_local(&ss, id, strlen(id), on_get, &g);
    assert_int_equal(g.rc, SIGSTORE_OK);
    /* the stored record is valid JSON with the five members */
    buf_t raw = BUF_INIT;
    char key[STORE_MAX_KEY + 1];
    int kl = snprintf(key, sizeof key, "%s:chat:%s", model, id);
    assert_int_equal(store_get(st, key, (size_t)kl, clock_wall_s(), &raw), STORE_OK);
    struct json_object *j = json_tokener_parse(raw.data);
    assert_non_null(j);
    assert_int_equal(json_object_object_length(j), 5);
    json_object_put(j);
    buf_free(&raw);
    store_free(st);
    return g;
}

/* Both signatures verify over text; over other they do not. */
static void check_sigs(const got_t *g, const char *text, const char *other)
{
    char rec[ETH_ADDRESS_LEN + 1];
    assert_int_equal(eth_recover_address(text, strlen(text), g->sig_e, rec), 0);
    assert_int_equal(strcasecmp(rec, g->addr_e), 0);
    assert_string_equal(g->addr_e, signer_ecdsa_address(g_signer));
    assert_int_equal(ed25519_verify_hex(text, strlen(text), g->sig_d, g->addr_d), 0);
    assert_int_not_equal(ed25519_verify_hex(other, strlen(other), g->sig_d, g->addr_d), 0);
    if (eth_recover_address(other, strlen(other), g->sig_e, rec) == 0)
        assert_int_not_equal(strcasecmp(rec, g->addr_e), 0);
}

static void test_req_resp(void **state)
{
    (void)state;
    got_t g = put_get("org/model-a", 0, "chatcmpl-1");
    assert_string_equal(g.text, REQ ":" RESP);
    check_sigs(&g, REQ ":" RESP, "org/model-a:" REQ ":" RESP);
}

static void test_model_req_resp(void **state)
{
    (void)state;
    got_t g = put_get("org/model-a", 1, "chatcmpl-2");
    assert_string_equal(g.text, "org/model-a:" REQ ":" RESP);
    check_sigs(&g, "org/model-a:" REQ ":" RESP, REQ ":" RESP);
}

/* A model name with a quote and a backslash: escaped in the record, signed as its raw bytes. */
static void test_model_needs_escaping(void **state)
{
    (void)state;
    got_t g = put_get("we\"ird\\name", 1, "chatcmpl-3");
    assert_string_equal(g.text, "we\"ird\\name:" REQ ":" RESP);
    check_sigs(&g, "we\"ird\\name:" REQ ":" RESP, REQ ":" RESP);
}

static void test_model_too_long(void **state)
{
    (void)state;
    char model[SIG_MODEL_MAX + 2];
    memset(model, 'm', sizeof model - 1);
    model[sizeof model - 1] = '\0';
    store_t *st = store_new(16, 600);
    sigstore_t ss = {st, NULL, g_signer, model, 1};
    assert_int_equal(sigstore_sign_put(&ss, "x", REQ ":" RESP), SIGSTORE_ERR);
    model[SIG_MODEL_MAX] = '\0'; /* exactly the limit (MODEL_NAME's own): signed and stored */
    assert_int_equal(sigstore_sign_put(&ss, "x", REQ ":" RESP), SIGSTORE_OK);
    store_free(st);
}

int main(void)
{
    if (signer_global_init() != 0 || !(g_signer = signer_new_random()))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_req_resp),
        cmocka_unit_test(test_model_req_resp),
        cmocka_unit_test(test_model_needs_escaping),
        cmocka_unit_test(test_model_too_long),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    signer_free(g_signer);
    return rc;
}
