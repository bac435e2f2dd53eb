/* Unit tests for the NEAR side of proxy/e2ee_resp.c (../shared/docs/e2ee-formats.md §3.4,
 * §3.5): the fields the mock engine never sends (reasoning, audio, tool calls, logprobs) are
 * encrypted with a fresh ephemeral key each, the empty string is left, and an event stream fed
 * in pieces comes out event by event. The integration suite (e2ee-near.test.mjs) checks
 * content end to end with an independent client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "e2ee/e2ee.h"
#include "proxy/e2ee.h"
#include "proxy/e2ee_sess.h"

static uint8_t g_client_sk[32];

/* A NEAR session as e2ee_request leaves it, answering to a client X25519 key. */
static e2ee_sess_t *near_sess(e2ee_cipher_t c, int all_fields)
{
    e2ee_sess_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->format = c == E2EE_C_X25519_XCHACHA ? E2EE_F_NEAR_V2 : E2EE_F_V1;
    s->algo = E2EE_ALGO_ED25519;
    s->cipher = c;
    s->near = 1;
    s->all_fields = all_fields;
    randombytes_buf(g_client_sk, sizeof g_client_sk);
    assert_int_equal(e2ee_x25519_public(s->client, g_client_sk), E2EE_OK);
    s->client_n = 32;
    s->in = (buf_t)BUF_INIT;
    return s;
}

/* The buffer as a C string (a NUL kept after its bytes). */
static const char *buf_cstr(buf_t *b)
{
    assert_int_equal(buf_append(b, "", 1), 0);
    b->len--;
    return b->data;
}

static void emit(void *ud, const char *p, size_t n) { assert_int_equal(buf_append(ud, p, n), 0); }

/* Opens a hex field sealed to the client; returns the plaintext (NUL-terminated, malloc). */
static char *open_str(e2ee_cipher_t c, json_object *v)
{
    assert_true(json_object_is_type(v, json_type_string));
    const char *hex = json_object_get_string(v);
    size_t n = strlen(hex);
    char *out = calloc(1, n / 2 + 1);
    size_t pn = 0;
    assert_int_equal(e2ee_open_hex(c, 0, g_client_sk, hex, n, NULL, 0, (uint8_t *)out, n / 2, &pn),
                     E2EE_OK);
    out[pn] = '\0';
    return out;
}

static json_object *at(json_object *o, const char *path)
{
    /* "a.b.0.c": members and array indexes */
    char buf[128];
    strncpy(buf, path, sizeof buf - 1);
    buf[sizeof buf - 1] = '\0';
    for (char *tok = strtok(buf, "."); tok && o; tok = strtok(NULL, ".")) {
        if (json_object_is_type(o, json_type_array))
            o = json_object_array_get_idx(o, (size_t)atoi(tok));
        else if (!json_object_object_get_ex(o, tok, &o))
            o = NULL;
    }
    return o;
}

static void expect_sealed(e2ee_cipher_t c, json_object *root, const char *path, const char *pt)
{
    json_object *v = at(root, path);
    assert_non_null(v);
    char *got = open_str(c, v);
    assert_string_equal(got, pt);
    free(got);
}

static const char ANSWER[] =
    "{\"id\":\"chatcmpl-1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"message\":{"
    "\"role\":\"assistant\",\"content\":\"hello\",\"reasoning_content\":\"think\","
    "\"reasoning\":\"r\",\"refusal\":\"no\",\"audio\":{\"id\":\"a\",\"data\":\"QUJD\"},"
    "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"get\","
    "\"arguments\":\"{\\\"x\\\":1}\"}}]},"
    "\"logprobs\":{\"content\":[{\"token\":\"hel\",\"logprob\":-0.1,\"bytes\":[104,101,108],"
    "\"top_logprobs\":[{\"token\":\"he\",\"logprob\":-1,\"bytes\":[104,101]}]}]},"
    "\"finish_reason\":\"stop\"},"
    "{\"index\":1,\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":null}}],"
    "\"usage\":{\"completion_tokens\":2}}";

static void test_buffered_all_fields(void **st)
{
    (void)st;
    const e2ee_cipher_t ciphers[] = {E2EE_C_NACL_XSALSA, E2EE_C_X25519_XCHACHA};
    for (size_t k = 0; k < 2; k++) {
        e2ee_cipher_t c = ciphers[k];
        e2ee_sess_t *s = near_sess(c, 1);
        buf_t out = BUF_INIT;
        e2ee_resp_begin(s, 0);
        assert_int_equal(e2ee_resp_feed(s, ANSWER, 40, emit, &out), 0);
        assert_int_equal(e2ee_resp_feed(s, ANSWER + 40, sizeof ANSWER - 41, emit, &out), 0);
        assert_int_equal(out.len, 0); /* nothing before the answer is complete */
        assert_int_equal(e2ee_resp_finish(s, emit, &out), 0);
        json_object *o = json_tokener_parse(buf_cstr(&out));
        assert_non_null(o);
        expect_sealed(c, o, "choices.0.message.content", "hello");
        expect_sealed(c, o, "choices.0.message.reasoning_content", "think");
        expect_sealed(c, o, "choices.0.message.reasoning", "r");
        expect_sealed(c, o, "choices.0.message.refusal", "no");
        expect_sealed(c, o, "choices.0.message.audio.data", "QUJD");
        expect_sealed(c, o, "choices.0.message.tool_calls.0.function.name", "get");
        expect_sealed(c, o, "choices.0.message.tool_calls.0.function.arguments", "{\"x\":1}");
        expect_sealed(c, o, "choices.0.logprobs.content.0.token", "hel");
        expect_sealed(c, o, "choices.0.logprobs.content.0.bytes", "[104,101,108]");
        expect_sealed(c, o, "choices.0.logprobs.content.0.top_logprobs.0.token", "he");
        expect_sealed(c, o, "choices.0.logprobs.content.0.top_logprobs.0.bytes", "[104,101]");
        /* left as they are: ids, numbers, the empty string, the usage */
        assert_string_equal(json_object_get_string(at(o, "choices.0.message.audio.id")), "a");
        assert_string_equal(json_object_get_string(at(o, "choices.1.message.content")), "");
        assert_string_equal(json_object_get_string(at(o, "choices.0.message.tool_calls.0.id")), "c1");
        assert_int_equal(json_object_get_int(at(o, "usage.completion_tokens")), 2);
        /* a fresh ephemeral key per field (§3.1) */
        const char *a = json_object_get_string(at(o, "choices.0.message.content"));
        const char *b = json_object_get_string(at(o, "choices.0.message.reasoning"));
        assert_memory_not_equal(a, b, 64);
        assert_null(strstr(buf_cstr(&out), "hello"));
        assert_null(strstr(buf_cstr(&out), "think"));
        json_object_put(o);
        buf_free(&out);
        e2ee_sess_free(s);
    }
}

static void test_buffered_without_all_fields(void **st)
{
    (void)st;
    /* NEAR's narrow set (§3.4) leaves refusal, tool calls and logprobs alone: the NEAR server
     * sends them in clear; here such an answer fails whole, nothing of it is sent */
    e2ee_sess_t *s = near_sess(E2EE_C_NACL_XSALSA, 0);
    buf_t out = BUF_INIT;
    e2ee_resp_begin(s, 0);
    assert_int_equal(e2ee_resp_feed(s, ANSWER, sizeof ANSWER - 1, emit, &out), 0);
    assert_int_equal(e2ee_resp_finish(s, emit, &out), -1);
    assert_int_equal(out.len, 0);
    e2ee_sess_free(s);
    /* each carrier alone is enough; without them the narrow set is sealed */
    static const char *const carriers[] = {
        "\"refusal\":\"no\"", "\"tool_calls\":[{\"function\":{\"name\":\"get\"}}]",
        "\"function_call\":{\"name\":\"get\"}", NULL};
    for (int k = 0; k < 4; k++) {
        char answer[512];
        snprintf(answer, sizeof answer,
                 "{\"id\":\"c\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                 "\"content\":\"hello\",\"reasoning\":\"r\",\"tool_calls\":[],\"refusal\":null%s%s}%s}]}",
                 carriers[k] ? "," : "", carriers[k] ? carriers[k] : "",
                 k == 3 ? ",\"logprobs\":null" : "");
        s = near_sess(E2EE_C_NACL_XSALSA, 0);
        e2ee_resp_begin(s, 0);
        assert_int_equal(e2ee_resp_feed(s, answer, strlen(answer), emit, &out), 0);
        assert_int_equal(e2ee_resp_finish(s, emit, &out), carriers[k] ? -1 : 0);
        if (!carriers[k]) {
            json_object *o = json_tokener_parse(buf_cstr(&out));
            assert_non_null(o);
            expect_sealed(E2EE_C_NACL_XSALSA, o, "choices.0.message.content", "hello");
            expect_sealed(E2EE_C_NACL_XSALSA, o, "choices.0.message.reasoning", "r");
            json_object_put(o);
        } else {
            assert_int_equal(out.len, 0);
        }
        buf_reset(&out);
        e2ee_sess_free(s);
    }
    /* logprobs alone */
    static const char LP[] = "{\"choices\":[{\"message\":{\"content\":\"x\"},\"logprobs\":"
                             "{\"content\":[{\"token\":\"x\"}]}}]}";
    s = near_sess(E2EE_C_NACL_XSALSA, 0);
    e2ee_resp_begin(s, 0);
    assert_int_equal(e2ee_resp_feed(s, LP, sizeof LP - 1, emit, &out), 0);
    assert_int_equal(e2ee_resp_finish(s, emit, &out), -1);
    assert_int_equal(out.len, 0);
    buf_free(&out);
    e2ee_sess_free(s);
}

static void test_stream_in_pieces(void **st)
{
    (void)st;
    static const char SSE[] =
        "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
        "\"content\":\"\"}}]}\n\n"
        "data:{\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok\","
        "\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\"\"}}]}}]}\r\n\r\n"
        ": comment\n\n"
        "data: {\"id\":\"x\",\"choices\":[],\"usage\":{\"completion_tokens\":1}}\n\n"
        "data: [DONE]\n\n";
    e2ee_sess_t *s = near_sess(E2EE_C_NACL_XSALSA, 1);
    buf_t out = BUF_INIT;
    e2ee_resp_begin(s, 1);
    for (size_t i = 0; i < sizeof SSE - 1; i++)
        assert_int_equal(e2ee_resp_feed(s, SSE + i, 1, emit, &out), 0);
    assert_int_equal(e2ee_resp_finish(s, emit, &out), 0);
    const char *t = buf_cstr(&out);
    /* the role event's "" stays (NEAR never encrypts it), the line endings and the other lines
     * are kept, each data line is re-serialised as "data: " + compact JSON */
    assert_non_null(strstr(t, "\"delta\":{\"role\":\"assistant\",\"content\":\"\"}"));
    assert_non_null(strstr(t, "\r\n\r\n: comment\n\n"));
    assert_non_null(strstr(t, "data: {\"id\":\"x\",\"choices\":[],\"usage\":{\"completion_tokens\":1}}\n\n"));
    assert_non_null(strstr(t, "data: [DONE]\n\n"));
    assert_null(strstr(t, "\"tok\""));
    const char *l2 = strstr(t, "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"");
    assert_non_null(l2);
    const char *end = strstr(l2, "\r\n");
    assert_non_null(end);
    char *line = strndup(l2 + 6, (size_t)(end - l2 - 6));
    json_object *o = json_tokener_parse(line);
    free(line);
    assert_non_null(o);
    expect_sealed(E2EE_C_NACL_XSALSA, o, "choices.0.delta.content", "tok");
    expect_sealed(E2EE_C_NACL_XSALSA, o, "choices.0.delta.tool_calls.0.function.arguments",
                  "{\"a\"");
    json_object_put(o);
    buf_free(&out);
    e2ee_sess_free(s);
}

static void test_stream_not_json_fails(void **st)
{
    (void)st;
    e2ee_sess_t *s = near_sess(E2EE_C_X25519_XCHACHA, 0);
    buf_t out = BUF_INIT;
    e2ee_resp_begin(s, 1);
    assert_int_equal(e2ee_resp_feed(s, "data: not json\n\n", 16, emit, &out), -1);
    assert_int_equal(out.len, 0);
    buf_free(&out);
    e2ee_sess_free(s);
}

/* e2ee_json_append writes JSON itself (json-c's printbufs leave copies behind): byte for byte
 * json-c's PLAIN | NOSLASHESCAPE spelling, escapes, numbers and nesting included. */
static void test_json_append_matches_json_c(void **state)
{
    (void)state;
    static const char *const docs[] = {
        "{}",
        "[]",
        "{\"a\":1,\"b\":-2.50,\"c\":1e3,\"d\":true,\"e\":false,\"f\":null,\"g\":[1,[],{}]}",
        "{\"s\":\"q\\\" b\\\\ / \\b\\f\\n\\r\\t \\u0001\\u001f \\u007f \\u00e9 \\ud83d\\ude00\"}",
        "{\"k\\\"ey\\n\":\"v\",\"n\":[null,0,-0,18446744073709551615,9223372036854775807]}",
        "[\"\\u0000x\",1.000000000000000000000000000000000000001,{\"deep\":[[[[\"x\"]]]]}]",
        "\"just a string\"",
        "12 ", /* json-c takes a number at the very end as unfinished */
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        json_object *o = e2ee_json_parse(docs[i], strlen(docs[i]));
        if (!o)
            fail_msg("not parsed: %s", docs[i]);
        buf_t out = BUF_INIT;
        assert_int_equal(buf_append_wiped(&out, "data: ", 6), 0);
        assert_int_equal(e2ee_json_append(&out, o), 0);
        json_object *o2 = e2ee_json_parse(docs[i], strlen(docs[i]));
        size_t n = 0;
        const char *want = json_object_to_json_string_length(
            o2, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
        assert_int_equal(out.len, 6 + n);
        assert_memory_equal(out.data + 6, want, n);
        e2ee_wipe_buf(&out);
        json_object_put(o2);
        e2ee_json_wipe_put(o);
    }
    /* a long string: growth through several blocks */
    size_t big = 100000;
    char *doc = malloc(big + 3);
    assert_non_null(doc);
    doc[0] = '"';
    for (size_t i = 1; i <= big; i++)
        doc[i] = (char)('a' + i % 26);
    doc[big + 1] = '"';
    doc[big + 2] = '\0';
    json_object *o = e2ee_json_parse(doc, big + 2);
    assert_non_null(o);
    buf_t out = BUF_INIT;
    assert_int_equal(e2ee_json_append(&out, o), 0);
    assert_int_equal(out.len, big + 2);
    assert_memory_equal(out.data, doc, big + 2);
    e2ee_wipe_buf(&out);
    e2ee_json_wipe_put(o);
    free(doc);
}

/* e2ee_json_parse: cut and malformed documents (the tokener's stack is wiped and released),
 * trailing whitespace, depth. */
static void test_json_parse_edges(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", " ", "[", "[{\"type\":\"text\",\"text\":\"cut", "{\"a\":[1,2,{\"b\":\"x\"", "{\"a\":1}x",
        "[1,]x", "\"abc", "{\"a\":\"\\u12\"}", "nul",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_null(e2ee_json_parse(bad[i], strlen(bad[i])));
    json_object *o = e2ee_json_parse("{\"a\":[\"x\"]} \r\n\t", 15);
    assert_non_null(o);
    e2ee_json_wipe_put(o);
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    assert_null(e2ee_json_parse(deep, sizeof deep));
    /* fed in pieces that end after each ':' (inside strings too): the same document; a
     * repeated member name keeps the last value, as json-c does */
    static const char doc1[] = "{\"a:b\":\"c:d\",\"n\":{\"x\":[1,{\"y\":\":\"}]},\"a\":\"x\","
                               "\"a\":{\"q\":\"r\"},\"a\":\"last\"}";
    o = e2ee_json_parse(doc1, sizeof doc1 - 1);
    assert_non_null(o);
    buf_t ser = BUF_INIT;
    assert_int_equal(e2ee_json_append(&ser, o), 0);
    assert_string_equal(ser.data, "{\"a:b\":\"c:d\",\"n\":{\"x\":[1,{\"y\":\":\"}]},\"a\":\"last\"}");
    e2ee_wipe_buf(&ser);
    e2ee_json_wipe_put(o);
    /* e2ee_json_str: a non-string member's JSON text in the caller's buffer */
    static const char doc2[] = "{\"m\":[\"a/\",1],\"s\":\"t\"}";
    o = e2ee_json_parse(doc2, sizeof doc2 - 1);
    assert_non_null(o);
    buf_t tmp = BUF_INIT;
    size_t n = 0;
    const char *v = e2ee_json_str(o, "m", &tmp, &n);
    assert_non_null(v);
    assert_int_equal(n, 9); /* json-c's PLAIN spelling, as before: / escaped */
    assert_memory_equal(v, "[\"a\\/\",1]", 9);
    v = e2ee_json_str(o, "s", &tmp, &n);
    assert_int_equal(n, 1);
    assert_memory_equal(v, "t", 1);
    v = e2ee_json_str(o, "absent", &tmp, &n);
    assert_int_equal(n, 0);
    e2ee_wipe_buf(&tmp);
    e2ee_json_wipe_put(o);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buffered_all_fields),
        cmocka_unit_test(test_buffered_without_all_fields),
        cmocka_unit_test(test_stream_in_pieces),
        cmocka_unit_test(test_stream_not_json_fails),
        cmocka_unit_test(test_json_append_matches_json_c),
        cmocka_unit_test(test_json_parse_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
