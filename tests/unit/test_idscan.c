/* The non-streaming id scanner: same answer whatever the chunking, escapes decoded, only the
 * outermost object's first "id" counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "at.h"
#include "proxy/idscan.h"

/* Scans `json` whole, byte by byte and at every 2-way split; all must agree with `want`. */
static void expect_id_at(AT_PARAMS, const char *json, const char *want)
{
    size_t n = strlen(json);
    idscan_t s;
    idscan_init(&s);
    idscan_feed(&s, json, n);
    if (want)
        at_assert_string_equal(idscan_id(&s), want);
    else
        at_assert_null(idscan_id(&s));
    idscan_init(&s);
    for (size_t i = 0; i < n; i++)
        idscan_feed(&s, json + i, 1);
    if (want)
        at_assert_string_equal(idscan_id(&s), want);
    else
        at_assert_null(idscan_id(&s));
    for (size_t cut = 0; cut <= n; cut++) {
        idscan_init(&s);
        idscan_feed(&s, json, cut);
        idscan_feed(&s, json + cut, n - cut);
        if (want)
            at_assert_string_equal(idscan_id(&s), want);
        else
            at_assert_null(idscan_id(&s));
    }
}
#define expect_id(...) expect_id_at(AT_HERE, __VA_ARGS__)

static void test_plain(void **st)
{
    (void)st;
    expect_id("{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\"}", "chatcmpl-abc");
    expect_id(" { \"object\" : \"x\" , \"id\" : \"cmpl-1\" } ", "cmpl-1");
}

static void test_nested_ids_ignored(void **st)
{
    (void)st;
    expect_id("{\"choices\":[{\"id\":\"inner\"}],\"usage\":{\"id\":\"u\"},\"id\":\"outer\"}", "outer");
    expect_id("{\"meta\":{\"id\":\"inner\"}}", NULL);
    expect_id("{\"ids\":\"x\",\"xid\":\"y\",\"i\":\"z\"}", NULL);
    expect_id("{\"x\":\"\\\"id\\\"\",\"id\":\"real\"}", "real");
}

static void test_first_wins_and_types(void **st)
{
    (void)st;
    expect_id("{\"id\":\"first\",\"id\":\"second\"}", "first");
    expect_id("{\"id\":42,\"object\":\"x\"}", NULL);
    expect_id("{\"id\":null}", NULL);
    expect_id("{\"id\":\"\"}", NULL);
    expect_id("[\"id\",\"x\"]", NULL);
}

static void test_escapes(void **st)
{
    (void)st;
    expect_id("{\"id\":\"chatcmpl-q\\\"uote\"}", "chatcmpl-q\"uote");
    expect_id("{\"id\":\"a\\\\b\\/c\"}", "a\\b/c");
    expect_id("{\"id\":\"h\\u00e9llo\"}", "h\xc3\xa9llo");
    expect_id("{\"id\":\"smile\\ud83d\\ude42\"}", "smile\xf0\x9f\x99\x82");
    expect_id("{\"\\u0069d\":\"escaped-key\"}", NULL); /* keys with escapes are not matched */
    expect_id("{\"id\":\"lone\\ud83d\"}", NULL);
    expect_id("{\"id\":\"nl\\n\"}", NULL);
    expect_id("{\"id\":\"bad\\x\"}", NULL);
}

static void test_too_long(void **st)
{
    (void)st;
    char buf[IDSCAN_MAX_ID + 64];
    int n = snprintf(buf, sizeof buf, "{\"id\":\"");
    memset(buf + n, 'a', IDSCAN_MAX_ID + 1);
    strcpy(buf + n + IDSCAN_MAX_ID + 1, "\"}");
    expect_id(buf, NULL);
    buf[n + IDSCAN_MAX_ID] = '"';
    buf[n + IDSCAN_MAX_ID + 1] = '}';
    buf[n + IDSCAN_MAX_ID + 2] = '\0';
    idscan_t s;
    idscan_init(&s);
    idscan_feed(&s, buf, strlen(buf));
    assert_non_null(idscan_id(&s));
    assert_int_equal(strlen(idscan_id(&s)), IDSCAN_MAX_ID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_nested_ids_ignored),
        cmocka_unit_test(test_first_wins_and_types),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_too_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
