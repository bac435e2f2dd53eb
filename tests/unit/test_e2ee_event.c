/* Unit tests for the stream fast path (proxy/e2ee_event.c): the common vLLM event shapes are
 * rewritten in place (e2ee_event_fast returns 1) with every sealed field opening, under its
 * format's AAD, to the engine's decoded text and every other byte as the engine sent it; the
 * shapes it must not guess at are declined (0) and then encrypted by the general path. The
 * equivalence of both paths over arbitrary input is fuzz_e2ee_resp's job (its corpus has the
 * fast_* seeds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "e2ee/e2ee.h"
#include "proxy/e2ee.h"
#include "proxy/e2ee_sess.h"

static uint8_t g_sk[32];

#define NONCE "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define TS 1765000000

/* A session as e2ee_request leaves it, answering to a fresh client key on curve of c. */
static e2ee_sess_t *sess(e2ee_format_t f, e2ee_cipher_t c, int near)
{
    e2ee_sess_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->format = f;
    s->cipher = c;
    s->near = near;
    s->algo = e2ee_cipher_curve_secp(c) ? E2EE_ALGO_ECDSA : E2EE_ALGO_ED25519;
    do
        randombytes_buf(g_sk, sizeof g_sk);
    while (e2ee_cipher_curve_secp(c) && e2ee_secp_public(s->client, g_sk) != E2EE_OK);
    if (e2ee_cipher_curve_secp(c)) {
        s->client_n = 65;
    } else {
        assert_int_equal(e2ee_x25519_public(s->client, g_sk), E2EE_OK);
        s->client_n = 32;
    }
    memcpy(s->nonce, NONCE, sizeof NONCE);
    s->nonce_n = sizeof NONCE - 1;
    s->ts = TS;
    s->model = strdup("req-model");
    s->model_n = strlen(s->model);
    e2ee_resp_begin(s, 1);
    return s;
}

/* The event's JSON text rewritten by the fast path; asserts it took it. */
static char *fast(e2ee_sess_t *s, const char *ev)
{
    buf_t out = BUF_INIT;
    assert_int_equal(e2ee_event_fast(s, ev, strlen(ev), &out), 1);
    assert_int_equal(buf_append(&out, "", 1), 0);
    return out.data;
}

static int declines(e2ee_sess_t *s, const char *ev)
{
    buf_t out = BUF_INIT;
    int rc = e2ee_event_fast(s, ev, strlen(ev), &out);
    e2ee_wipe_buf(&out);
    return rc == 0;
}

/* Opens the sealed string value that follows key (its first occurrence in text) and returns
 * its plaintext; in text that value is replaced by "@". */
static char *open_at(e2ee_sess_t *s, char *text, const char *key, const char *aad, size_t aad_n)
{
    char *k = strstr(text, key);
    assert_non_null(k);
    char *v = k + strlen(key);
    char *e = strchr(v, '"');
    assert_non_null(e);
    size_t hn = (size_t)(e - v);
    uint8_t *pt = malloc(hn / 2 + 1);
    size_t pn = 0;
    assert_int_equal(e2ee_open_hex(s->cipher, s->format == E2EE_F_ACI_V2, g_sk, v, hn,
                                   (const uint8_t *)aad, aad_n, pt, hn / 2, &pn),
                     E2EE_OK);
    pt[pn] = 0;
    memmove(v + 1, e, strlen(e) + 1); /* the value becomes "@" */
    v[0] = '@';
    return (char *)pt;
}

static const char EV[] =
    "{\"id\":\"chatcmpl-7\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a \\\"q\\\"\\n\\u00e9\\u4e2d\"},"
    "\"logprobs\":null,\"finish_reason\":null}]}";

static void test_dstack_v1_in_place(void **st)
{
    (void)st;
    e2ee_sess_t *s = sess(E2EE_F_V1, E2EE_C_SECP_AESGCM, 0);
    char *out = fast(s, EV);
    char *pt = open_at(s, out, "\"content\":\"", NULL, 0);
    assert_string_equal(pt, "a \"q\"\n\xc3\xa9\xe4\xb8\xad"); /* the decoded text is sealed */
    assert_string_equal(out, "{\"id\":\"chatcmpl-7\",\"object\":\"chat.completion.chunk\","
                             "\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":"
                             "{\"content\":\"@\"},\"logprobs\":null,\"finish_reason\":null}]}");
    free(pt);
    free(out);
    e2ee_sess_free(s);
}

static void test_dstack_v2_aad(void **st)
{
    (void)st;
    e2ee_sess_t *s = sess(E2EE_F_DSTACK_V2, E2EE_C_X25519_AESGCM, 0);
    /* two choices: the AAD's choice is the array position; id and model come after */
    const char *ev = "{\"choices\":[{\"index\":5,\"delta\":{\"role\":\"assistant\"}},"
                     "{\"index\":9,\"delta\":{\"reasoning_content\":\"why\",\"reasoning\":\"r\"}}],"
                     "\"id\":\"c-2\",\"model\":\"mm\"}";
    char *out = fast(s, ev);
    char aad[1024];
    size_t an = 0;
    assert_int_equal(e2ee_aad_dstack_resp(aad, sizeof aad, &an, s->algo, "mm", 2, "c-2", 3, 1,
                                          "reasoning_content", NONCE, sizeof NONCE - 1, TS),
                     E2EE_OK);
    char *pt = open_at(s, out, "\"reasoning_content\":\"", aad, an);
    assert_string_equal(pt, "why");
    free(pt);
    /* the fork leaves reasoning in clear (formats document §5.2); we seal it, field name
     * "reasoning" in the AAD, rather than send generated text in clear */
    assert_int_equal(e2ee_aad_dstack_resp(aad, sizeof aad, &an, s->algo, "mm", 2, "c-2", 3, 1,
                                          "reasoning", NONCE, sizeof NONCE - 1, TS),
                     E2EE_OK);
    pt = open_at(s, out, "\"reasoning\":\"", aad, an);
    assert_string_equal(pt, "r");
    free(pt);
    free(out);
    e2ee_sess_free(s);
}

static void test_aci_aad_index(void **st)
{
    (void)st;
    e2ee_sess_t *s = sess(E2EE_F_ACI_V2, E2EE_C_ACI_X25519, 0);
    const char *ev = "{\"id\":\"c-3\",\"model\":\"engine-model\",\"choices\":[{\"delta\":"
                     "{\"reasoning\":\"r1\"},\"index\":4}]}";
    char *out = fast(s, ev);
    char aad[4096];
    size_t an = 0;
    assert_int_equal(e2ee_aad_aci(aad, sizeof aad, &an, s->cipher, "req-model", 9, "c-3", 3,
                                  "choices.4.delta.reasoning", NONCE, sizeof NONCE - 1, TS),
                     E2EE_OK);
    char *pt = open_at(s, out, "\"reasoning\":\"", aad, an);
    assert_string_equal(pt, "r1");
    free(pt);
    free(out);
    e2ee_sess_free(s);
}

/* An empty streamed content is dropped by Dstack and ACI wherever it sits, left by NEAR. */
static void test_empty_content(void **st)
{
    (void)st;
    static const char *const in[][2] = {
        {"{\"choices\":[{\"delta\":{\"role\":\"a\",\"content\":\"\"}}]}",
         "{\"choices\":[{\"delta\":{\"role\":\"a\"}}]}"},
        {"{\"choices\":[{\"delta\":{\"content\":\"\" , \"role\":\"a\"}}]}",
         "{\"choices\":[{\"delta\":{ \"role\":\"a\"}}]}"},
        {"{\"choices\":[{\"delta\":{ \"content\" : \"\" }}]}", "{\"choices\":[{\"delta\":{  }}]}"},
    };
    e2ee_sess_t *s = sess(E2EE_F_V1, E2EE_C_SECP_AESGCM, 0);
    for (size_t i = 0; i < sizeof in / sizeof *in; i++) {
        char *out = fast(s, in[i][0]);
        assert_string_equal(out, in[i][1]);
        free(out);
    }
    e2ee_sess_free(s);
    s = sess(E2EE_F_V1, E2EE_C_SECP_AESGCM, 1);
    char *out = fast(s, in[0][0]);
    assert_string_equal(out, in[0][0]);
    free(out);
    e2ee_sess_free(s);
}

/* What the fast path must not guess at goes to the general path. */
static void test_declines(void **st)
{
    (void)st;
    e2ee_sess_t *s = sess(E2EE_F_DSTACK_V2, E2EE_C_SECP_AESGCM, 0);
    static const char *const no[] = {
        "{\"choices\":[{\"delta\":{\"cont\\u0065nt\":\"x\"}}]}",            /* escaped name */
        "{\"choices\":[{\"delta\":{\"content\":\"x\",\"content\":\"y\"}}]}", /* repeated */
        "{\"choices\":[{\"delta\":{\"content\":\"\\ud83d\\ude00\"}}]}",     /* surrogates */
        "{\"choices\":[{\"delta\":{\"content\":\"a\tb\"}}]}",               /* raw control */
        "{\"choices\":[{\"delta\":{\"content\":[{\"type\":\"text\"}]}}]}",  /* parts */
        "{\"choices\":[{\"delta\":{\"audio\":{\"data\":\"QQ==\"}}}]}",      /* audio */
        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}",     /* tool calls */
        "{\"choices\":[{\"delta\":{\"refusal\":\"no\"}}]}",               /* refusal */
        "{\"choices\":[{\"delta\":{},\"logprobs\":{\"content\":[]}}]}",    /* logprobs */
        "{\"choices\":[{\"delta\":{},\"token_ids\":[1]}]}",               /* token ids */
        "{\"prompt_token_ids\":[1],\"choices\":[]}",                        /* prompt ids */
        "{\"id\":7,\"choices\":[{\"delta\":{\"content\":\"x\"}}]}",          /* id not a string */
        "{\"model\":\"a\\/b\",\"choices\":[]}",                             /* escaped model */
        "{\"choices\":[{\"message\":{\"content\":\"x\"}}]}",                /* a message */
        "{\"choices\":[{\"delta\":{\"content\":\"x\"},}]}",                 /* not strict JSON */
        "{\"choices\":[{\"delta\":{\"content\":\"x\"}}]} x",                /* trailing bytes */
        "{\"choices\":[{\"index\":1.5,\"delta\":{}}]}",                     /* index not integer */
        "{\"choices\":[],\"choices\":[]}",                                  /* repeated */
        "{\"x\":01}",                                                       /* bad number */
        "{\"choices\":[{\"delta\":{\"content\":\"x\"}}]",                  /* cut */
        "{\"choices\":[{\"delta\":{\"content\":\"x\"}}\r]}",              /* a bare CR */
    };
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) {
        if (!declines(s, no[i]))
            fail_msg("took %s", no[i]);
    }
    char deep[300];
    size_t n = 0;
    n += (size_t)snprintf(deep, sizeof deep, "{\"x\":");
    for (int i = 0; i < 80; i++)
        deep[n++] = '[';
    for (int i = 0; i < 80; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = 0;
    assert_true(declines(s, deep));
    /* a completions event: its choices[].text is the general path's */
    s->route = E2EE_ROUTE_COMPLETIONS;
    assert_true(declines(s, "{\"choices\":[{\"index\":0,\"text\":\"x\"}]}"));
    e2ee_sess_free(s);
    s = sess(E2EE_F_V1, E2EE_C_SECP_AESGCM, 1);
    s->all_fields = 1; /* NEAR's all-fields mode: tool calls, logprobs */
    assert_true(declines(s, EV));
    e2ee_sess_free(s);
}

/* Through e2ee_resp_feed: fed in pieces, the fast path's event goes out as one line with
 * "data: " and the engine's own line ending. */
static void emit(void *ud, const char *p, size_t n) { assert_int_equal(buf_append(ud, p, n), 0); }

static void test_feed_framing(void **st)
{
    (void)st;
    e2ee_sess_t *s = sess(E2EE_F_V1, E2EE_C_SECP_AESGCM, 0);
    char line[512];
    int ln = snprintf(line, sizeof line, "data:%s\r\n\r\ndata: [DONE]\n\n", EV);
    buf_t out = BUF_INIT;
    for (int i = 0; i < ln; i += 7)
        assert_int_equal(e2ee_resp_feed(s, line + i, (size_t)(ln - i < 7 ? ln - i : 7), emit, &out),
                         0);
    assert_int_equal(e2ee_resp_finish(s, emit, &out), 0);
    assert_int_equal(buf_append(&out, "", 1), 0);
    assert_true(strncmp(out.data, "data: {\"id\":\"chatcmpl-7\"", 24) == 0);
    char *end = strstr(out.data, "}\r\n\r\ndata: [DONE]\n\n");
    assert_non_null(end);
    assert_string_equal(end + 1, "\r\n\r\ndata: [DONE]\n\n");
    assert_null(strstr(out.data, "u4e2d")); /* nothing of the text in clear */
    buf_free(&out);
    e2ee_sess_free(s);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dstack_v1_in_place), cmocka_unit_test(test_dstack_v2_aad),
        cmocka_unit_test(test_aci_aad_index),      cmocka_unit_test(test_empty_content),
        cmocka_unit_test(test_declines),           cmocka_unit_test(test_feed_framing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
