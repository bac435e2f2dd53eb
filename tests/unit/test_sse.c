/* Unit tests for the SSE framer: the id and the [DONE] flag must come out the same for
 * every way the stream can be cut into network chunks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "at.h"
#include "proxy/sse.h"

struct result {
    int rc;
    char id[SSE_MAX_ID + 1];
    int have_id;
    int done;
};

static struct result run_pieces(const char *p, size_t n, const size_t *cuts, size_t ncuts, int finish)
{
    sse_t s;
    sse_init(&s);
    struct result r = {0, "", 0, 0};
    size_t at = 0;
    for (size_t i = 0; i <= ncuts && r.rc == 0; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        r.rc = sse_feed(&s, p + at, end - at);
        at = end;
    }
    if (r.rc == 0 && finish)
        r.rc = sse_finish(&s);
    const char *id = sse_chat_id(&s);
    if (id) {
        r.have_id = 1;
        strcpy(r.id, id);
    }
    r.done = sse_done_seen(&s);
    sse_free(&s);
    return r;
}

static void assert_same_at(AT_PARAMS, struct result a, struct result b)
{
    at_assert_int_equal(a.rc, b.rc);
    at_assert_int_equal(a.have_id, b.have_id);
    at_assert_string_equal(a.id, b.id);
    at_assert_int_equal(a.done, b.done);
}
#define assert_same(...) assert_same_at(AT_HERE, __VA_ARGS__)

/* One shot, every 2-way split, byte by byte, and (for short inputs) every 3-way split. */
static struct result check_all_chunkings_at(AT_PARAMS, const char *p)
{
    size_t n = strlen(p);
    struct result one = run_pieces(p, n, NULL, 0, 0);
    for (size_t c = 0; c <= n; c++)
        assert_same_at(AT_PASS, one, run_pieces(p, n, &c, 1, 0));
    size_t *cuts = calloc(n + 1, sizeof(size_t));
    for (size_t c = 0; c < n; c++)
        cuts[c] = c;
    assert_same_at(AT_PASS, one, run_pieces(p, n, cuts, n, 0));
    free(cuts);
    if (n <= 200) {
        for (size_t a = 0; a <= n; a++)
            for (size_t b = a; b <= n; b++) {
                size_t cc[2] = {a, b};
                assert_same_at(AT_PASS, one, run_pieces(p, n, cc, 2, 0));
            }
    }
    return one;
}
#define check_all_chunkings(...) check_all_chunkings_at(AT_HERE, __VA_ARGS__)

static void expect_at(AT_PARAMS, const char *stream, int rc, const char *id, int done)
{
    struct result r = check_all_chunkings_at(AT_PASS, stream);
    at_assert_int_equal(r.rc, rc);
    if (id) {
        at_assert_true(r.have_id);
        at_assert_string_equal(r.id, id);
    } else {
        at_assert_false(r.have_id);
    }
    at_assert_int_equal(r.done, done);
}
#define expect(...) expect_at(AT_HERE, __VA_ARGS__)

static const char vllm_stream[] =
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
    "data: {\"id\":\"chatcmpl-abc\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n"
    "data: {\"id\":\"chatcmpl-abc\",\"choices\":[],\"usage\":{\"prompt_tokens\":3}}\n\n"
    "data: [DONE]\n\n";

static void test_vllm_stream(void **state)
{
    (void)state;
    expect(vllm_stream, 0, "chatcmpl-abc", 1);
}

static void test_no_space_and_line_ends(void **state)
{
    (void)state;
    expect("data:{\"id\":\"x1\"}\n\ndata:[DONE]\n\n", 0, "x1", 1);
    expect("data: {\"id\":\"x2\"}\r\n\r\ndata: [DONE]\r\n\r\n", 0, "x2", 1);
    expect("data: {\"id\":\"x3\"}\r\rdata: [DONE]\r\r", 0, "x3", 1);
    expect("data: {\"id\":\"x4\"}\r\n\ndata: [DONE]\n\r", 0, "x4", 1);
    /* two spaces: the second one is part of the value (JSON whitespace here) */
    expect("data:  {\"id\":\"x5\"}\n\ndata:  [DONE]\n\n", 0, "x5", 0);
    /* trailing blanks after [DONE] are tolerated */
    expect("data: {\"id\":\"x6\"}\n\ndata: [DONE]  \n\n", 0, "x6", 1);
}

static void test_comments_and_other_fields(void **state)
{
    (void)state;
    expect(": ping\n\n:\n\nevent: message\nid: 7\nretry: 100\ndata: {\"id\":\"c1\"}\n\n"
           ": ping\r\n\r\ndata: [DONE]\n\n",
           0, "c1", 1);
    /* a field named like data but longer is not data */
    expect("datax: {\"id\":\"no\"}\n\ndata: {\"id\":\"yes\"}\n\ndata: [DONE]\n\n", 0, "yes", 1);
    expect("dat: garbage\n\ndata: {\"id\":\"d\"}\n\n", 0, "d", 0);
}

static void test_several_events_one_feed_and_no_id_first(void **state)
{
    (void)state;
    expect("data: {\"object\":\"x\"}\n\ndata: {\"id\":null}\n\ndata: []\n\ndata: 42\n\n"
           "data: \"s\"\n\ndata: {\"id\":\"late\"}\n\ndata: {\"id\":\"other\"}\n\ndata: [DONE]\n\n",
           0, "late", 1);
}

static void test_multiline_data(void **state)
{
    (void)state;
    expect("data: {\"id\":\ndata: \"multi\"}\n\ndata: [DONE]\n\n", 0, "multi", 1);
    expect("data: {\ndata\ndata: \"id\": \"m2\"\r\ndata:}\n\n", 0, "m2", 0);
    /* [DONE] followed by more data in the same event is not the terminator */
    expect("data: {\"id\":\"m3\"}\n\ndata: [DONE]\ndata: x\n\n", 0, "m3", 0);
}

static void test_done_flag(void **state)
{
    (void)state;
    /* [DONE] seen only when its event is dispatched */
    expect("data: {\"id\":\"a\"}\n\ndata: [DONE]\n", 0, "a", 0);
    expect("data: {\"id\":\"a\"}\n\ndata: [DONE", 0, "a", 0);
    expect("data: {\"id\":\"a\"}\n\ndata: [DONE]x\n\n", 0, "a", 0);
    expect("data: {\"id\":\"a\"}\n\ndata: [DON]\n\n", 0, "a", 0);
    expect("data: {\"id\":\"a\"}\n\n: data: [DONE]\n\n", 0, "a", 0);
    /* sse_finish treats the end of body as the end of the line and of the event */
    const char *s = "data: {\"id\":\"f\"}\n\ndata: [DONE]";
    struct result r = run_pieces(s, strlen(s), NULL, 0, 1);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.id, "f");
    assert_int_equal(r.done, 1);
    s = "data: {\"id\":\"g\"}";
    r = run_pieces(s, strlen(s), NULL, 0, 1);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.id, "g");
}

static void test_no_id(void **state)
{
    (void)state;
    expect("data: {\"a\":1}\n\ndata: [DONE]\n\n", 0, NULL, 1);
    expect("", 0, NULL, 0);
    expect("\n\n\r\n: only comments\n", 0, NULL, 0);
    expect("data:\n\ndata: \n\n", 0, NULL, 0);
}

static void test_errors(void **state)
{
    (void)state;
    expect("data: {not json}\n\n", -1, NULL, 0);
    expect("data: {\"id\":\"a\"} trailing\n\n", -1, NULL, 0);
    expect("data: {\"id\":5}\n\n", -1, NULL, 0);
    expect("data: {\"id\":\"\"}\n\n", -1, NULL, 0);
    expect("data: {\"id\":\"a\\u0000b\"}\n\n", -1, NULL, 0);
    expect("data: {\"id\":\"a\\nb\"}\n\n", -1, NULL, 0);
    expect("data: {\"id\":\"a\",}\n\n", -1, NULL, 0);
    /* after the id is known, nothing is an error */
    expect("data: {\"id\":\"ok\"}\n\ndata: {garbage\n\n", 0, "ok", 0);
    /* the error is sticky */
    sse_t s;
    sse_init(&s);
    assert_int_equal(sse_feed(&s, "data: x\n\n", 9), -1);
    assert_int_equal(sse_feed(&s, "data: {\"id\":\"a\"}\n\n", 18), -1);
    assert_null(sse_chat_id(&s));
    sse_reset(&s);
    assert_int_equal(sse_feed(&s, "data: {\"id\":\"a\"}\n\n", 18), 0);
    assert_string_equal(sse_chat_id(&s), "a");
    sse_free(&s);
}

static void test_id_length(void **state)
{
    (void)state;
    char buf[1024];
    char id[SSE_MAX_ID + 2];
    memset(id, 'i', sizeof(id));
    id[SSE_MAX_ID] = '\0';
    snprintf(buf, sizeof(buf), "data: {\"id\":\"%s\"}\n\n", id);
    struct result r = run_pieces(buf, strlen(buf), NULL, 0, 0);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.id, id);
    id[SSE_MAX_ID] = 'i';
    id[SSE_MAX_ID + 1] = '\0';
    snprintf(buf, sizeof(buf), "data: {\"id\":\"%s\"}\n\n", id);
    r = run_pieces(buf, strlen(buf), NULL, 0, 0);
    assert_int_equal(r.rc, -1);
}

static void test_oversize_event(void **state)
{
    (void)state;
    size_t big = SSE_MAX_EVENT + 10;
    char *p = malloc(big + 16);
    memcpy(p, "data: \"", 7);
    memset(p + 7, 'x', big);
    sse_t s;
    sse_init(&s);
    int rc = 0;
    for (size_t off = 0; off < big + 7 && rc == 0; off += 4096) {
        size_t n = big + 7 - off < 4096 ? big + 7 - off : 4096;
        rc = sse_feed(&s, p + off, n);
    }
    assert_int_equal(rc, -1);
    assert_null(sse_chat_id(&s));
    sse_free(&s);

    /* a large event after the id is known costs nothing and is fine */
    sse_init(&s);
    assert_int_equal(sse_feed(&s, "data: {\"id\":\"q\"}\n\n", 18), 0);
    for (size_t off = 0; off < big + 7; off += 4096) {
        size_t n = big + 7 - off < 4096 ? big + 7 - off : 4096;
        assert_int_equal(sse_feed(&s, p + off, n), 0);
    }
    assert_int_equal(sse_feed(&s, "\n\ndata: [DONE]\n\n", 16), 0);
    assert_int_equal(s.event.cap, 0);   /* nothing buffered once the id is known */
    assert_string_equal(sse_chat_id(&s), "q");
    assert_true(sse_done_seen(&s));
    sse_free(&s);
    free(p);
}

static void test_long_multiline_before_id(void **state)
{
    (void)state;
    /* many data lines just under the limit still parse */
    size_t lines = 1000;
    char *p = malloc(lines * 10 + 64);
    size_t n = 0;
    n += (size_t)sprintf(p + n, "data: [\n");
    for (size_t i = 0; i < lines; i++)
        n += (size_t)sprintf(p + n, "data: %s\n", i ? ",1" : "1");
    n += (size_t)sprintf(p + n, "data: ]\n\ndata: {\"id\":\"L\"}\n\n");
    struct result r = run_pieces(p, n, NULL, 0, 0);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.id, "L");
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vllm_stream),
        cmocka_unit_test(test_no_space_and_line_ends),
        cmocka_unit_test(test_comments_and_other_fields),
        cmocka_unit_test(test_several_events_one_feed_and_no_id_first),
        cmocka_unit_test(test_multiline_data),
        cmocka_unit_test(test_done_flag),
        cmocka_unit_test(test_no_id),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_id_length),
        cmocka_unit_test(test_oversize_event),
        cmocka_unit_test(test_long_multiline_before_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
