/* Unit tests for the request body scanner: the strict grammar, the reported facts, and the
 * byte-exact removal of "tool_calls": [] from messages (checked against json-c). */
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
#include "proxy/reqjson.h"

static int inspect(const char *s, reqjson_t *o, buf_t *rw, char *err, size_t errlen)
{
    return reqjson_inspect(s, strlen(s), o, rw, err, errlen);
}

static void accepts_at(AT_PARAMS, const char *s)
{
    reqjson_t o;
    char err[128];
    int rc = inspect(s, &o, NULL, err, sizeof(err));
    if (rc != 0)
        at_fail_msg("rejected %s: %s", s, err);
}
#define accepts(...) accepts_at(AT_HERE, __VA_ARGS__)

static void rejects_at(AT_PARAMS, const char *s, const char *msg)
{
    reqjson_t o;
    char err[128];
    buf_t rw = BUF_INIT;
    int rc = inspect(s, &o, &rw, err, sizeof(err));
    if (rc != -1)
        at_fail_msg("accepted %s", s);
    if (!strstr(err, msg))
        at_fail_msg("for %s: got '%s', want '%s'", s, err, msg);
    at_assert_int_equal(rw.len, 0);
    at_assert_int_equal(o.rewritten, 0);
    buf_free(&rw);
}
#define rejects(...) rejects_at(AT_HERE, __VA_ARGS__)

static void test_valid(void **state)
{
    (void)state;
    accepts("{}");
    accepts(" \t\r\n{ } \n");
    accepts("{\"a\":1,\"b\":[1,-0,0.5,1e10,1E+2,-1.25e-3,0e0],\"c\":{\"d\":null},\"e\":true,\"f\":false}");
    accepts("{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\\ud83d\\ude00\"}");
    accepts("{\"u\":\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf\"}");
    accepts("{\"\":\"\",\"a\":[[],{},[[]]]}");
    accepts("{\"big\":123456789012345678901234567890e400}");
    accepts("{\"nul\":\"\\u0000\"}");
    accepts("{\"del\":\"\x7f\"}");
}

static void test_invalid(void **state)
{
    (void)state;
    rejects("", "invalid JSON at byte 0: empty body");
    rejects("   ", "invalid JSON at byte 3: unexpected end of input");
    rejects("{", "invalid JSON at byte 1: unexpected end of input");
    rejects("{\"a\":1,}", "invalid JSON at byte 7: expected string key");
    rejects("{\"a\":[1,]}", "invalid JSON at byte 8: unexpected character");
    rejects("{\"a\":1 \"b\":2}", "expected ',' or '}'");
    rejects("{\"a\" 1}", "expected ':'");
    rejects("{a:1}", "expected string key");
    rejects("{'a':1}", "expected string key");
    rejects("{\"a\":\"abc}", "unterminated string");
    rejects("{\"a\":\"abc\\", "unterminated string");
    rejects("{\"a\":\"\\x\"}", "invalid JSON at byte 6: invalid escape");
    rejects("{\"a\":\"\\u12\"}", "invalid \\u escape");
    rejects("{\"a\":\"\\u12G4\"}", "invalid \\u escape");
    rejects("{\"a\":\"\\ud800\"}", "lone surrogate");
    rejects("{\"a\":\"\\ud800\\u0041\"}", "lone surrogate");
    rejects("{\"a\":\"\\udc00\"}", "lone surrogate");
    rejects("{\"a\":\"\\ud800\\ud800\"}", "lone surrogate");
    rejects("{\"a\":\"tab\there\"}", "invalid JSON at byte 9: control character");
    rejects("{\"a\":\"nl\nx\"}", "control character");
    rejects("{\"a\":\"\xc3\"}", "invalid UTF-8");
    rejects("{\"a\":\"\xc0\x80\"}", "invalid UTF-8");
    rejects("{\"a\":\"\xed\xa0\x80\"}", "invalid UTF-8");
    rejects("{\"a\":\"\xf4\x90\x80\x80\"}", "invalid UTF-8");
    rejects("{\"a\":\"\xff\"}", "invalid UTF-8");
    rejects("{\"a\":01}", "invalid JSON at byte 5: leading zeros");
    rejects("{\"a\":-01}", "leading zeros");
    rejects("{\"a\":1.}", "invalid number");
    rejects("{\"a\":.5}", "unexpected character");
    rejects("{\"a\":1e}", "invalid number");
    rejects("{\"a\":-}", "invalid number");
    rejects("{\"a\":+1}", "unexpected character");
    rejects("{\"a\":0x10}", "expected ',' or '}'");
    rejects("{\"a\":NaN}", "unexpected character");
    rejects("{\"a\":Infinity}", "unexpected character");
    rejects("{\"a\":-Infinity}", "invalid number");
    rejects("{\"a\":tru}", "unexpected character");
    rejects("{\"a\":nul", "unexpected character");
    rejects("{\"a\":True}", "unexpected character");
    rejects("{} x", "invalid JSON at byte 3: unexpected data after the JSON value");
    rejects("{}{}", "unexpected data after");
    rejects("\xef\xbb\xbf{}", "unexpected character");
    rejects("{/*c*/}", "expected string key");
    reqjson_t o;
    char err[128];
    assert_int_equal(reqjson_inspect("{}\0", 3, &o, NULL, err, sizeof(err)), -1);
    assert_string_equal(err, "invalid JSON at byte 2: unexpected data after the JSON value");
    assert_int_equal(reqjson_inspect(NULL, 0, &o, NULL, err, sizeof(err)), -1);
    /* truncated error buffers stay NUL-terminated */
    assert_int_equal(reqjson_inspect("[", 1, &o, NULL, err, 8), -1);
    assert_int_equal(strlen(err), 7);
    assert_int_equal(reqjson_inspect("[", 1, &o, NULL, NULL, 0), -1);
}

static void rejects_exact_then_at(AT_PARAMS, const char *s, const char *msg)
{
    reqjson_t o;
    char err[128];
    at_assert_int_equal(inspect(s, &o, NULL, err, sizeof(err)), -1);
    at_assert_string_equal(err, msg);
}
#define rejects_exact_then(...) rejects_exact_then_at(AT_HERE, __VA_ARGS__)

static void test_non_object(void **state)
{
    (void)state;
    rejects_exact_then("[]", "body must be a JSON object");
    rejects_exact_then("[{\"stream\":true}]", "body must be a JSON object");
    rejects_exact_then("\"str\"", "body must be a JSON object");
    rejects_exact_then("42", "body must be a JSON object");
    rejects_exact_then("-1.5e3 ", "body must be a JSON object");
    rejects_exact_then("true", "body must be a JSON object");
    rejects_exact_then("null", "body must be a JSON object");
    /* invalid JSON is reported as such even when it is not an object */
    rejects_exact_then("[1,]", "invalid JSON at byte 3: unexpected character");
}

static char *nest(int depth, int objects)
{
    char *p = malloc((size_t)depth * 8 + 16);
    size_t n = 0;
    n += (size_t)sprintf(p, "{\"a\":");
    for (int i = 1; i < depth; i++)
        n += (size_t)sprintf(p + n, objects ? "{\"a\":" : "[");
    n += (size_t)sprintf(p + n, "1");
    for (int i = 1; i < depth; i++)
        p[n++] = objects ? '}' : ']';
    p[n++] = '}';
    p[n] = '\0';
    return p;
}

static void test_depth(void **state)
{
    (void)state;
    char *ok1 = nest(REQJSON_MAX_DEPTH, 0), *ok2 = nest(REQJSON_MAX_DEPTH, 1);
    char *bad1 = nest(REQJSON_MAX_DEPTH + 1, 0), *bad2 = nest(REQJSON_MAX_DEPTH + 1, 1);
    accepts(ok1);
    accepts(ok2);
    rejects(bad1, "nesting too deep");
    rejects(bad2, "nesting too deep");
    free(ok1);
    free(ok2);
    free(bad1);
    free(bad2);
    /* far deeper input does not blow the stack */
    size_t n = 1000000;
    char *deep = malloc(n + 1);
    memset(deep, '[', n);
    memcpy(deep, "{\"a\":", 5);
    deep[n] = '\0';
    rejects(deep, "nesting too deep");
    free(deep);
}

static reqjson_t ok_at(AT_PARAMS, const char *s)
{
    reqjson_t o;
    char err[128];
    int rc = inspect(s, &o, NULL, err, sizeof(err));
    if (rc != 0)
        at_fail_msg("rejected %s: %s", s, err);
    return o;
}
#define ok(...) ok_at(AT_HERE, __VA_ARGS__)

static void test_stream_flag(void **state)
{
    (void)state;
    reqjson_t o = ok("{\"model\":\"m\"}");
    assert_false(o.has_stream);
    assert_false(o.stream);
    o = ok("{\"stream\":true}");
    assert_true(o.has_stream);
    assert_true(o.stream);
    o = ok("{\"stream\" : false }");
    assert_true(o.has_stream);
    assert_false(o.stream);
    o = ok("{\"stream\":\"yes\",\"stream\":true}");   /* last wins */
    assert_true(o.stream);
    o = ok("{\"stream\":true,\"stream\":false}");
    assert_false(o.stream);
    o = ok("{\"str\\u0065am\":true}");                  /* keys compare unescaped */
    assert_true(o.stream);
    o = ok("{\"x\":{\"stream\":1},\"streams\":1,\"Stream\":2,\"strea\":3}");   /* not top-level "stream" */
    assert_false(o.has_stream);
    rejects_exact_then("{\"stream\":\"true\"}", "'stream' must be a boolean");
    rejects_exact_then("{\"stream\":1}", "'stream' must be a boolean");
    rejects_exact_then("{\"stream\":null}", "'stream' must be a boolean");
    rejects_exact_then("{\"stream\":[]}", "'stream' must be a boolean");
    rejects_exact_then("{\"stream\":true,\"stream\":0}", "'stream' must be a boolean");
    rejects_exact_then("{\"stre\\u0061m\":\"no\"}", "'stream' must be a boolean");
}

static void test_model_and_usage(void **state)
{
    (void)state;
    const char *s = "{\"model\": \"meta/llama\", \"messages\":[]}";
    reqjson_t o = ok(s);
    assert_true(o.has_model);
    assert_int_equal(o.model_len, 10);
    assert_memory_equal(s + o.model_off, "meta/llama", 10);
    assert_false(o.model_escaped);
    s = "{\"model\":\"a\\/b\"}";
    o = ok(s);
    assert_true(o.model_escaped);
    assert_memory_equal(s + o.model_off, "a\\/b", 4);
    o = ok("{\"model\":\"a\",\"model\":5}");
    assert_false(o.has_model);
    o = ok("{\"model\":\"\"}");
    assert_true(o.has_model);
    assert_int_equal(o.model_len, 0);

    o = ok("{\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
    assert_true(o.include_usage);
    o = ok("{\"stream_options\":{\"include_usage\":false}}");
    assert_false(o.include_usage);
    o = ok("{\"stream_options\":{\"include_usage\":1}}");
    assert_false(o.include_usage);
    o = ok("{\"stream_options\":{\"include_usage\":true},\"stream_options\":{}}");
    assert_false(o.include_usage);
    o = ok("{\"stream_options\":{\"include_usage\":true},\"stream_options\":null}");
    assert_false(o.include_usage);
    o = ok("{\"stream_options\":{\"x\":{\"include_usage\":false},\"include_usage\":true}}");
    assert_true(o.include_usage);
    o = ok("{\"x\":{\"stream_options\":{\"include_usage\":true}}}");
    assert_false(o.include_usage);
}

/* Reference for the rewrite: json-c parses the original and deletes the members. */
static json_object *parse_jc(const char *s, size_t n)
{
    struct json_tokener *tok = json_tokener_new_ex(128);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    json_object *o = json_tokener_parse_ex(tok, s, (int)n);
    if (o && json_tokener_get_parse_end(tok) != n) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

static size_t strip_reference(json_object *root)
{
    size_t removed = 0;
    json_object *msgs;
    if (!json_object_object_get_ex(root, "messages", &msgs) || !json_object_is_type(msgs, json_type_array))
        return 0;
    for (size_t i = 0; i < json_object_array_length(msgs); i++) {
        json_object *m = json_object_array_get_idx(msgs, i), *tc;
        if (json_object_is_type(m, json_type_object) && json_object_object_get_ex(m, "tool_calls", &tc) &&
            json_object_is_type(tc, json_type_array) && json_object_array_length(tc) == 0) {
            json_object_object_del(m, "tool_calls");
            removed++;
        }
    }
    return removed;
}

/* Strips s and checks the exact expected bytes (NULL: nothing stripped) and json-c equality. */
static void strip_case_at(AT_PARAMS, const char *s, const char *want, size_t nstripped)
{
    reqjson_t o;
    char err[128];
    buf_t rw = BUF_INIT;
    buf_puts(&rw, "PREFIX");   /* the rewrite is appended */
    int rc = inspect(s, &o, &rw, err, sizeof(err));
    if (rc != 0)
        at_fail_msg("rejected %s: %s", s, err);
    at_assert_int_equal(o.n_stripped, nstripped);
    if (!want) {
        at_assert_false(o.rewritten);
        at_assert_string_equal(rw.data, "PREFIX");
        buf_free(&rw);
        return;
    }
    at_assert_true(o.rewritten);
    at_assert_memory_equal(rw.data, "PREFIX", 6);
    if (strcmp(rw.data + 6, want) != 0)
        at_fail_msg("for %s\n got  %s\n want %s", s, rw.data + 6, want);
    json_object *a = parse_jc(rw.data + 6, rw.len - 6);
    json_object *b = parse_jc(s, strlen(s));
    at_assert_non_null(a);
    at_assert_non_null(b);
    strip_reference(b);
    at_assert_true(json_object_equal(a, b));
    json_object_put(a);
    json_object_put(b);
    buf_free(&rw);
}
#define strip_case(...) strip_case_at(AT_HERE, __VA_ARGS__)

static void test_strip_tool_calls(void **state)
{
    (void)state;
    /* last member */
    strip_case("{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\",\"tool_calls\":[]}]}",
               "{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"}]}", 1);
    /* first member */
    strip_case("{\"messages\":[{\"tool_calls\":[],\"role\":\"assistant\"}]}",
               "{\"messages\":[{\"role\":\"assistant\"}]}", 1);
    /* middle member */
    strip_case("{\"messages\":[{\"role\":\"a\",\"tool_calls\":[],\"content\":\"c\"}]}",
               "{\"messages\":[{\"role\":\"a\",\"content\":\"c\"}]}", 1);
    /* only member */
    strip_case("{\"messages\":[{\"tool_calls\":[]}]}", "{\"messages\":[{}]}", 1);
    /* whitespace everywhere */
    strip_case("{ \"messages\" : [ { \"role\" : \"a\" , \"tool_calls\" : [ \n\t ] , \"c\" : 1 } ] }",
               "{ \"messages\" : [ { \"role\" : \"a\"  , \"c\" : 1 } ] }", 1);
    strip_case("{\"messages\":[{ \"tool_calls\" : [ ] , \"c\" : 1 }]}",
               "{\"messages\":[{  \"c\" : 1 }]}", 1);
    strip_case("{\"messages\":[{\"a\":1 , \"tool_calls\":[] }]}", "{\"messages\":[{\"a\":1  }]}", 1);
    /* several messages, some with non-empty / null / non-array tool_calls */
    strip_case("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
               "{\"role\":\"assistant\",\"tool_calls\":[]},"
               "{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"t\",\"type\":\"function\"}]},"
               "{\"role\":\"assistant\",\"tool_calls\":null},"
               "{\"role\":\"assistant\",\"tool_calls\":{}},"
               "{\"tool_calls\":[],\"role\":\"assistant\"}],\"stream\":true}",
               "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
               "{\"role\":\"assistant\"},"
               "{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"t\",\"type\":\"function\"}]},"
               "{\"role\":\"assistant\",\"tool_calls\":null},"
               "{\"role\":\"assistant\",\"tool_calls\":{}},"
               "{\"role\":\"assistant\"}],\"stream\":true}",
               2);
    /* escaped key is the same key */
    strip_case("{\"messages\":[{\"a\":1,\"tool\\u005fcalls\":[]}]}", "{\"messages\":[{\"a\":1}]}", 1);
    /* duplicate tool_calls in one message are refused (last-wins ambiguity) */
    rejects_exact_then("{\"messages\":[{\"tool_calls\":[],\"tool_calls\":[]}]}",
                       "duplicate \"tool_calls\" key in a message (at byte 30)");
    rejects("{\"messages\":[{\"tool_calls\":[1],\"a\":1,\"tool\\u005fcalls\":[]}]}", "duplicate \"tool_calls\"");
    /* ... but separate messages and duplicate other keys are fine */
    strip_case("{\"messages\":[{\"tool_calls\":[]},{\"tool_calls\":[]}]}", "{\"messages\":[{},{}]}", 2);
    strip_case("{\"messages\":[{\"a\":1,\"tool_calls\":[],\"a\":2}]}", "{\"messages\":[{\"a\":1,\"a\":2}]}", 1);
    /* not in scope: not messages, nested, not top-level, messages not an array */
    strip_case("{\"tool_calls\":[],\"messages\":[]}", NULL, 0);
    strip_case("{\"other\":[{\"tool_calls\":[]}]}", NULL, 0);
    strip_case("{\"messages\":[{\"content\":{\"tool_calls\":[]}}]}", NULL, 0);
    strip_case("{\"messages\":[[{\"tool_calls\":[]}]]}", NULL, 0);
    strip_case("{\"x\":{\"messages\":[{\"tool_calls\":[]}]}}", NULL, 0);
    strip_case("{\"messages\":{\"m\":{\"tool_calls\":[]}}}", NULL, 0);
    strip_case("{\"messages\":[{\"tool_calls\":[[]]}]}", NULL, 0);
    strip_case("{\"messages\":[\"tool_calls\",{\"tool_calls\":\"[]\"}]}", NULL, 0);
    /* non-ASCII and escapes elsewhere are kept byte for byte */
    strip_case("{\"messages\":[{\"content\":\"\xc3\xa9\\u00e9\\n\",\"tool_calls\":[]}]}",
               "{\"messages\":[{\"content\":\"\xc3\xa9\\u00e9\\n\"}]}", 1);

    /* rewritten = NULL only counts */
    reqjson_t o;
    char err[64];
    assert_int_equal(inspect("{\"messages\":[{\"tool_calls\":[]}]}", &o, NULL, err, sizeof(err)), 0);
    assert_int_equal(o.n_stripped, 1);
    assert_false(o.rewritten);
    /* an error after a removal leaves the buffer as it was */
    rejects("{\"messages\":[{\"tool_calls\":[]}],\"stream\":1}", "'stream' must be a boolean");
    rejects("{\"messages\":[{\"tool_calls\":[]}],", "unexpected end of input");
}

/* Prefix-cache isolation: every top-level cache_salt removed (any value, escaped or duplicated
 * keys), ours written as the last member; json-c is the reference for the meaning and want
 * (when given) pins the exact bytes. */
#define SALT "0123456789abcdefghijklmnopqrstuvwxyzABCD-_x"
static void salt_case_at(AT_PARAMS, const char *s, const char *want, size_t nsalts, size_t ntool)
{
    reqjson_t o;
    char err[128];
    buf_t rw = BUF_INIT;
    buf_puts(&rw, "PREFIX");
    reqjson_opts_t opts = {.cache_salt = SALT};
    int rc = reqjson_inspect_opts(s, strlen(s), &opts, &o, &rw, err, sizeof(err));
    if (rc != 0)
        at_fail_msg("rejected %s: %s", s, err);
    at_assert_int_equal(o.n_salts, nsalts);
    at_assert_int_equal(o.n_stripped, ntool);
    at_assert_true(o.salt_injected);
    at_assert_true(o.rewritten);
    at_assert_memory_equal(rw.data, "PREFIX", 6);
    if (want && strcmp(rw.data + 6, want) != 0)
        at_fail_msg("for %s\n got  %s\n want %s", s, rw.data + 6, want);
    json_object *a = parse_jc(rw.data + 6, rw.len - 6);
    json_object *b = parse_jc(s, strlen(s));
    at_assert_non_null(a);
    at_assert_non_null(b);
    strip_reference(b);
    json_object_object_del(b, "cache_salt");
    json_object_object_add(b, "cache_salt", json_object_new_string(SALT));
    at_assert_true(json_object_equal(a, b));
    /* exactly one top-level cache_salt, ours, in the forwarded bytes */
    const char *first = strstr(rw.data + 6, "\"cache_salt\":\"" SALT "\"");
    at_assert_non_null(first);
    json_object *v;
    at_assert_true(json_object_object_get_ex(a, "cache_salt", &v));
    at_assert_string_equal(json_object_get_string(v), SALT);
    json_object_put(a);
    json_object_put(b);
    buf_free(&rw);
}
#define salt_case(...) salt_case_at(AT_HERE, __VA_ARGS__)

static void test_cache_salt(void **state)
{
    (void)state;
    salt_case("{}", "{\"cache_salt\":\"" SALT "\"}", 0, 0);
    salt_case("{\"a\":1}", "{\"a\":1,\"cache_salt\":\"" SALT "\"}", 0, 0);
    salt_case("{\"cache_salt\":\"victim\"}", "{\"cache_salt\":\"" SALT "\"}", 1, 0);
    salt_case("{\"cache_salt\":\"v\",\"a\":1}", "{\"a\":1,\"cache_salt\":\"" SALT "\"}", 1, 0);
    salt_case("{\"a\":1,\"cache_salt\":\"v\"}", "{\"a\":1,\"cache_salt\":\"" SALT "\"}", 1, 0);
    salt_case("{\"a\":1,\"cache_salt\":\"v\",\"b\":2}", "{\"a\":1,\"b\":2,\"cache_salt\":\"" SALT "\"}",
              1, 0);
    /* duplicates and an escaped key: all of them go (a last-wins engine would see any one) */
    salt_case("{\"cache_salt\":\"v1\",\"a\":1,\"cache\\u005fsalt\":\"v2\",\"cache_salt\":\"v3\"}",
              "{\"a\":1,\"cache_salt\":\"" SALT "\"}", 3, 0);
    salt_case("{\"cache_salt\":\"v1\",\"cache_salt\":\"v2\"}", "{\"cache_salt\":\"" SALT "\"}", 2, 0);
    /* any value type */
    salt_case("{\"cache_salt\":null,\"m\":\"x\"}", "{\"m\":\"x\",\"cache_salt\":\"" SALT "\"}", 1, 0);
    salt_case("{\"cache_salt\":{\"cache_salt\":\"v\"}}", "{\"cache_salt\":\"" SALT "\"}", 1, 0);
    salt_case("{\"cache_salt\":[1,2],\"cache_salt\":123}", "{\"cache_salt\":\"" SALT "\"}", 2, 0);
    /* whitespace anywhere */
    salt_case(" { \"a\" : 1 , \"cache_salt\" : \"v\" } \n", NULL, 1, 0);
    salt_case("{ \"cache_salt\" : \"v\" , \"a\" : 1 }", NULL, 1, 0);
    salt_case("{ \"cache_salt\" : \"v\" }", NULL, 1, 0);
    salt_case("{ }", NULL, 0, 0);
    /* nested ones are not the engine's parameter: kept */
    salt_case("{\"x\":{\"cache_salt\":\"v\"},\"messages\":[{\"cache_salt\":\"w\"}]}",
              "{\"x\":{\"cache_salt\":\"v\"},\"messages\":[{\"cache_salt\":\"w\"}],\"cache_salt\":\"" SALT "\"}",
              0, 0);
    /* with tool_calls stripping in the same pass */
    salt_case("{\"messages\":[{\"tool_calls\":[]}],\"cache_salt\":\"v\",\"stream\":true}",
              "{\"messages\":[{}],\"stream\":true,\"cache_salt\":\"" SALT "\"}", 1, 1);

    /* without the option a client's cache_salt passes untouched */
    strip_case("{\"cache_salt\":\"v\"}", NULL, 0);

    /* a refused body leaves the buffer as it was and injects nothing */
    reqjson_t o;
    char err[128];
    buf_t rw = BUF_INIT;
    reqjson_opts_t opts = {.cache_salt = SALT};
    const char *bad[] = {"{\"cache_salt\":\"v\",", "[{\"cache_salt\":\"v\"}]", "{\"cache_salt\":\"v\",\"stream\":1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(reqjson_inspect_opts(bad[i], strlen(bad[i]), &opts, &o, &rw, err, sizeof err), -1);
        assert_int_equal(rw.len, 0);
        assert_false(o.rewritten);
        assert_false(o.salt_injected);
    }
    buf_free(&rw);
}

static void test_large_body(void **state)
{
    (void)state;
    size_t n = 16u << 20;
    char *p = malloc(n + 64);
    size_t k = (size_t)sprintf(p, "{\"messages\":[{\"content\":\"");
    for (size_t i = 0; k < n; i++)
        p[k++] = (char)(i % 3 == 0 ? 'a' : i % 3 == 1 ? '\xc3' : '\xa9');
    k -= (k - 26) % 3;   /* keep whole UTF-8 sequences */
    k += (size_t)sprintf(p + k, "\",\"tool_calls\":[]}],\"stream\":true}");
    reqjson_t o;
    buf_t rw = BUF_INIT;
    char err[64];
    assert_int_equal(reqjson_inspect(p, k, &o, &rw, err, sizeof(err)), 0);
    assert_true(o.stream);
    assert_int_equal(o.n_stripped, 1);
    assert_int_equal(rw.len, k - strlen(",\"tool_calls\":[]"));
    buf_free(&rw);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_non_object),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_stream_flag),
        cmocka_unit_test(test_model_and_usage),
        cmocka_unit_test(test_strip_tool_calls),
        cmocka_unit_test(test_cache_salt),
        cmocka_unit_test(test_large_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
