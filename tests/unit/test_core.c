/* Unit tests for src/core: hex and base64 codecs, the growable buffer and its JSON string
 * escaper, SHA-2 helpers, log level parsing and the verifier checklist renderers. */
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
#include "core/buf.h"
#include "core/check.h"
#include "core/fdlimit.h"
#include "core/hex.h"
#include "core/json.h"
#include "core/log.h"
#include "core/sha.h"

/* ---- hex ---------------------------------------------------------------------------- */

static void test_hex_encode(void **state)
{
    (void)state;
    const uint8_t in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xCD, 0xef, 0xff};
    char out[2 * sizeof in + 1];
    memset(out, 'X', sizeof out);
    hex_encode(out, in, sizeof in);
    assert_string_equal(out, "00017f80abcdefff");
    char empty[1] = {'X'};
    hex_encode(empty, in, 0);
    assert_int_equal(empty[0], '\0');
}

static void test_hex_decode_ok(void **state)
{
    (void)state;
    uint8_t out[8];
    memset(out, 0xEE, sizeof out);
    assert_int_equal(hex_decode(out, sizeof out, "00ff7Fa0", 8), 4);
    const uint8_t want[] = {0x00, 0xff, 0x7f, 0xa0};
    assert_memory_equal(out, want, 4);
    assert_int_equal(out[4], 0xEE); /* nothing written past the result */
    /* upper and lower case decode identically */
    uint8_t a[3], b[3];
    assert_int_equal(hex_decode(a, 3, "ABCDEF", 6), 3);
    assert_int_equal(hex_decode(b, 3, "abcdef", 6), 3);
    assert_memory_equal(a, b, 3);
    assert_int_equal(a[0], 0xab);
    assert_int_equal(a[2], 0xef);
    /* exact capacity fits; empty input is zero bytes */
    assert_int_equal(hex_decode(out, 4, "01020304", 8), 4);
    assert_int_equal(hex_decode(out, 0, "", 0), 0);
    /* only inlen characters are read */
    assert_int_equal(hex_decode(out, sizeof out, "0102zz", 4), 2);
    /* round trip of every byte value */
    uint8_t all[256], back[256];
    char hx[513];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    hex_encode(hx, all, 256);
    assert_int_equal(hex_decode(back, sizeof back, hx, 512), 256);
    assert_memory_equal(all, back, 256);
}

static void test_hex_decode_bad(void **state)
{
    (void)state;
    uint8_t out[8];
    assert_int_equal(hex_decode(out, sizeof out, "abc", 3), -1);          /* odd length */
    assert_int_equal(hex_decode(out, sizeof out, "0g", 2), -1);           /* non-hex */
    assert_int_equal(hex_decode(out, sizeof out, "g0", 2), -1);
    assert_int_equal(hex_decode(out, sizeof out, "0x12", 4), -1);         /* no prefix */
    assert_int_equal(hex_decode(out, sizeof out, " 1", 2), -1);
    assert_int_equal(hex_decode(out, sizeof out, "1 ", 2), -1);
    assert_int_equal(hex_decode(out, sizeof out, "12\0" "3", 4), -1);     /* embedded NUL */
    assert_int_equal(hex_decode(out, sizeof out, "0123456789abcdef00", 18), -1); /* 9 > 8 */
    assert_int_equal(hex_decode(out, 0, "00", 2), -1);
    assert_int_equal(hex_decode(out, 1, "0000", 4), -1);
}

static void test_hex_is_hex(void **state)
{
    (void)state;
    assert_int_equal(hex_is_hex("0123456789abcdefABCDEF", 22), 1);
    assert_int_equal(hex_is_hex("", 0), 1);
    assert_int_equal(hex_is_hex("abc", 3), 1); /* odd length is still all hex digits */
    assert_int_equal(hex_is_hex("abg", 3), 0);
    assert_int_equal(hex_is_hex("G", 1), 0);
    assert_int_equal(hex_is_hex("-1", 2), 0);
    assert_int_equal(hex_is_hex("ab\xff", 3), 0);
    assert_int_equal(hex_is_hex("abzz", 2), 1); /* only n characters are examined */
}

/* ---- base64 ------------------------------------------------------------------------- */

static const struct { const char *plain, *enc; } RFC4648[] = {
    {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
};
#define NRFC (sizeof RFC4648 / sizeof RFC4648[0])

static void test_b64_encode_rfc4648(void **state)
{
    (void)state;
    for (size_t i = 0; i < NRFC; i++) {
        size_t n = strlen(RFC4648[i].plain);
        assert_int_equal(b64_encoded_len(n), strlen(RFC4648[i].enc));
        char out[16];
        memset(out, 'X', sizeof out);
        b64_encode(out, (const uint8_t *)RFC4648[i].plain, n);
        assert_string_equal(out, RFC4648[i].enc);
    }
    /* high bits use '+' and '/' */
    const uint8_t hi[] = {0xfb, 0xff, 0xbf};
    char out[5];
    b64_encode(out, hi, 3);
    assert_string_equal(out, "+/+/");
}

static void test_b64_decode_rfc4648(void **state)
{
    (void)state;
    for (size_t i = 0; i < NRFC; i++) {
        const char *enc = RFC4648[i].enc, *plain = RFC4648[i].plain;
        uint8_t out[16];
        /* padded */
        assert_int_equal(b64_decode(out, sizeof out, enc, strlen(enc)), (long)strlen(plain));
        assert_memory_equal(out, plain, strlen(plain));
        /* without padding */
        size_t n = strlen(enc);
        while (n && enc[n - 1] == '=')
            n--;
        memset(out, 0, sizeof out);
        assert_int_equal(b64_decode(out, sizeof out, enc, n), (long)strlen(plain));
        assert_memory_equal(out, plain, strlen(plain));
        /* exact capacity fits, one less does not */
        if (*plain) {
            assert_int_equal(b64_decode(out, strlen(plain), enc, strlen(enc)), (long)strlen(plain));
            assert_int_equal(b64_decode(out, strlen(plain) - 1, enc, strlen(enc)), -1);
            assert_int_equal(b64_decode(out, strlen(plain) - 1, enc, n), -1);
        }
    }
    /* round trip of every byte value */
    uint8_t all[256], back[256];
    char enc[345];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)(255 - i);
    b64_encode(enc, all, 256);
    assert_int_equal(strlen(enc), b64_encoded_len(256));
    assert_int_equal(b64_decode(back, sizeof back, enc, strlen(enc)), 256);
    assert_memory_equal(all, back, 256);
    uint8_t o[3];
    assert_int_equal(b64_decode(o, 3, "+/+/", 4), 3);
    assert_int_equal(o[0], 0xfb);
    assert_int_equal(o[1], 0xff);
    assert_int_equal(o[2], 0xbf);
}

static void test_b64_decode_bad(void **state)
{
    (void)state;
    uint8_t out[32];
    assert_int_equal(b64_decode(out, sizeof out, "Z", 1), -1);          /* 1 mod 4 */
    assert_int_equal(b64_decode(out, sizeof out, "Zm9vY", 5), -1);
    assert_int_equal(b64_decode(out, sizeof out, "Z===", 4), -1);
    assert_int_equal(b64_decode(out, sizeof out, "Zm9v!A==", 8), -1);   /* bad character */
    assert_int_equal(b64_decode(out, sizeof out, "Zm 9v", 5), -1);      /* whitespace */
    assert_int_equal(b64_decode(out, sizeof out, "Zm9v\n", 5), -1);
    assert_int_equal(b64_decode(out, sizeof out, "Zm-_", 4), -1);       /* base64url alphabet */
    assert_int_equal(b64_decode(out, sizeof out, "Zg==Zg==", 8), -1);   /* padding inside */
    assert_int_equal(b64_decode(out, sizeof out, "Z=g=", 4), -1);
    /* padding must be complete and consistent when present */
    assert_int_equal(b64_decode(out, sizeof out, "Zg=", 3), -1);
    assert_int_equal(b64_decode(out, sizeof out, "Zg===", 5), -1);
    assert_int_equal(b64_decode(out, sizeof out, "Zm8==", 5), -1);
    assert_int_equal(b64_decode(out, sizeof out, "Zm9v=", 5), -1);
    assert_int_equal(b64_decode(out, sizeof out, "Zm9v====", 8), -1);
    assert_int_equal(b64_decode(out, sizeof out, "====", 4), -1);
    assert_int_equal(b64_decode(out, sizeof out, "=", 1), -1);
    /* capacity */
    assert_int_equal(b64_decode(out, 0, "Zg==", 4), -1);
    assert_int_equal(b64_decode(out, 5, "Zm9vYmFy", 8), -1);
    assert_int_equal(b64_decode(out, 0, "", 0), 0);
}

/* ---- buf ---------------------------------------------------------------------------- */

static void test_buf_append_printf(void **state)
{
    (void)state;
    buf_t b = BUF_INIT;
    assert_int_equal(buf_append(&b, "", 0), 0);
    assert_non_null(b.data);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(buf_append(&b, "ab\0c", 4), 0); /* binary safe */
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "ab\0c", 5);          /* and NUL-terminated */
    assert_int_equal(buf_puts(&b, "de"), 0);
    assert_int_equal(b.len, 6);
    assert_int_equal(buf_printf(&b, "[%d|%s|%05.1f]", -42, "x", 3.14159), 0);
    assert_memory_equal(b.data + 6, "[-42|x|003.1]", 14);
    assert_int_equal(b.len, 19);
    assert_int_equal(buf_printf(&b, "%s", ""), 0);
    assert_int_equal(b.len, 19);
    /* growth across many reallocations keeps the content */
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    for (int i = 0; i < 10000; i++)
        assert_int_equal(buf_printf(&b, "%04d", i % 10000), 0);
    assert_int_equal(b.len, 40000);
    assert_true(b.cap > b.len);
    assert_memory_equal(b.data + 4 * 1234, "1234", 4);
    assert_memory_equal(b.data + 4 * 9999, "9999", 4);
    assert_int_equal(b.data[b.len], '\0');
    /* a long printf that crosses the initial capacity in one call */
    buf_t c = BUF_INIT;
    char big[1000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(buf_printf(&c, "<%s>", big), 0);
    assert_int_equal(c.len, 1001);
    assert_int_equal(c.data[0], '<');
    assert_int_equal(c.data[1000], '>');
    assert_int_equal(c.data[1001], '\0');
    buf_free(&c);
    buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    buf_free(&b); /* twice is harmless */
}

static void test_buf_reserve_overflow(void **state)
{
    (void)state;
    buf_t b = BUF_INIT;
    assert_int_equal(buf_puts(&b, "hello"), 0);
    size_t cap = b.cap;
    char *data = b.data;
    assert_int_equal(buf_reserve(&b, SIZE_MAX), -1);
    assert_int_equal(buf_reserve(&b, SIZE_MAX - 5), -1); /* len + extra + 1 would wrap to 0 */
    assert_int_equal(buf_reserve(&b, SIZE_MAX - 4), -1);
    assert_int_equal(buf_append(&b, "x", SIZE_MAX - 2), -1);
    /* a failed reserve leaves the buffer untouched */
    assert_int_equal(b.cap, cap);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "hello");
    /* a reserve that fits is a no-op on capacity; a bigger one grows it */
    assert_int_equal(buf_reserve(&b, 0), 0);
    assert_int_equal(b.cap, cap);
    assert_int_equal(buf_reserve(&b, 1000), 0);
    assert_true(b.cap >= 1006);
    assert_string_equal(b.data, "hello");
    buf_free(&b);
}

static void json_of_at(AT_PARAMS, const char *s, size_t n, char *out, size_t cap)
{
    buf_t b = BUF_INIT;
    at_assert_int_equal(buf_json_str(&b, s, n), 0);
    at_assert_true(b.len < cap);
    memcpy(out, b.data, b.len + 1);
    at_assert_int_equal(strlen(out), b.len);
    buf_free(&b);
}
#define json_of(...) json_of_at(AT_HERE, __VA_ARGS__)

/* buf_append_wiped: the same bytes as buf_append; growth moves to a new block (the old one
 * zeroed and freed) and a failed reserve leaves the buffer as it was. */
static void test_buf_append_wiped(void **state)
{
    (void)state;
    buf_t b = BUF_INIT, r = BUF_INIT;
    assert_int_equal(buf_append_wiped(&b, "", 0), 0);
    assert_non_null(b.data);
    assert_string_equal(b.data, "");
    for (int i = 0; i < 5000; i++) {
        char piece[16];
        int n = snprintf(piece, sizeof piece, "%d,", i);
        assert_int_equal(buf_append_wiped(&b, piece, (size_t)n), 0);
        assert_int_equal(buf_append(&r, piece, (size_t)n), 0);
        assert_true(b.len < b.cap);
        assert_int_equal(b.data[b.len], '\0');
    }
    assert_int_equal(b.len, r.len);
    assert_memory_equal(b.data, r.data, r.len);
    size_t cap = b.cap;
    char *data = b.data;
    assert_int_equal(buf_reserve_wiped(&b, SIZE_MAX), -1);
    assert_int_equal(buf_append_wiped(&b, "x", SIZE_MAX - 2), -1);
    assert_int_equal(b.cap, cap);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.len, r.len);
    assert_int_equal(buf_reserve_wiped(&b, 0), 0);
    assert_ptr_equal(b.data, data);
    buf_free(&b);
    buf_free(&r);
}

static void test_buf_json_str(void **state)
{
    (void)state;
    char o[512];
    json_of("", 0, o, sizeof o);
    assert_string_equal(o, "\"\"");
    json_of("plain text", 10, o, sizeof o);
    assert_string_equal(o, "\"plain text\"");
    json_of("a\"b\\c/", 6, o, sizeof o);
    assert_string_equal(o, "\"a\\\"b\\\\c/\"");
    json_of("\n\r\t", 3, o, sizeof o);
    assert_string_equal(o, "\"\\n\\r\\t\"");
    json_of("\x01\x08\x0c\x1f\x7f", 5, o, sizeof o);
    assert_string_equal(o, "\"\\u0001\\u0008\\u000c\\u001f\x7f\"");
    json_of("a\0b", 3, o, sizeof o); /* NUL inside the given length */
    assert_string_equal(o, "\"a\\u0000b\"");
    /* UTF-8 passes through byte for byte */
    const char *u = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
    json_of(u, strlen(u), o, sizeof o);
    char want[64];
    snprintf(want, sizeof want, "\"%s\"", u);
    assert_string_equal(o, want);
    /* appends after existing content; only n bytes are read */
    buf_t b = BUF_INIT;
    buf_puts(&b, "x=");
    assert_int_equal(buf_json_str(&b, "abcdef", 3), 0);
    assert_string_equal(b.data, "x=\"abc\"");
    assert_int_equal(b.len, 7);
    /* every control character round-trips through a JSON parser */
    char all[128];
    for (int i = 0; i < 127; i++)
        all[i] = (char)(i + 1);
    all[127] = '\0';
    buf_reset(&b);
    assert_int_equal(buf_json_str(&b, all, 127), 0);
    for (size_t i = 0; i < b.len; i++)
        assert_true((unsigned char)b.data[i] >= 0x20); /* no raw control byte in the output */
    json_object *j = json_tokener_parse(b.data);
    assert_non_null(j);
    assert_true(json_object_is_type(j, json_type_string));
    assert_int_equal(json_object_get_string_len(j), 127);
    assert_memory_equal(json_object_get_string(j), all, 127);
    json_object_put(j);
    /* a long string grows the buffer correctly */
    char big[5000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = i % 3 == 0 ? '"' : i % 3 == 1 ? '\x02' : 'z';
    buf_reset(&b);
    assert_int_equal(buf_json_str(&b, big, sizeof big), 0);
    assert_int_equal(b.len, 2 + 1667 * 2 + 1667 * 6 + 1666); /* 1667 '"', 1667 \x02, 1666 'z' */
    j = json_tokener_parse(b.data);
    assert_non_null(j);
    assert_int_equal(json_object_get_string_len(j), 5000);
    assert_memory_equal(json_object_get_string(j), big, 5000);
    json_object_put(j);
    buf_free(&b);
}

/* ---- sha ---------------------------------------------------------------------------- */

#define SHA256_ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define SHA256_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SHA256_448 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
#define SHA384_ABC                                                                         \
    "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"

static void test_sha_vectors(void **state)
{
    (void)state;
    uint8_t d[48];
    char hx[97];
    sha256("abc", 3, d);
    hex_encode(hx, d, 32);
    assert_string_equal(hx, SHA256_ABC);
    sha256("", 0, d);
    hex_encode(hx, d, 32);
    assert_string_equal(hx, SHA256_EMPTY);
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256(m448, strlen(m448), d);
    hex_encode(hx, d, 32);
    assert_string_equal(hx, SHA256_448);
    sha384("abc", 3, d);
    hex_encode(hx, d, 48);
    assert_string_equal(hx, SHA384_ABC);
    char h65[65];
    memset(h65, 'X', sizeof h65);
    sha256_hex("abc", 3, h65);
    assert_string_equal(h65, SHA256_ABC);
    assert_int_equal(h65[64], '\0');
}

static void test_sha_incremental(void **state)
{
    (void)state;
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    size_t n = strlen(m448);
    sha_ctx *c = sha256_new();
    assert_non_null(c);
    /* split at every position */
    for (size_t cut = 0; cut <= n; cut++) {
        assert_int_equal(sha256_reset(c), 0);
        assert_int_equal(sha_update(c, m448, cut), 0);
        assert_int_equal(sha_update(c, m448 + cut, n - cut), 0);
        uint8_t d[32];
        char hx[65];
        assert_int_equal(sha_final(c, d), 0);
        hex_encode(hx, d, 32);
        assert_string_equal(hx, SHA256_448);
    }
    /* one byte at a time over a large input equals the one-shot digest */
    static uint8_t big[100000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 31 + 7);
    assert_int_equal(sha256_reset(c), 0);
    for (size_t i = 0; i < sizeof big; i += 997)
        assert_int_equal(sha_update(c, big + i, i + 997 > sizeof big ? sizeof big - i : 997), 0);
    uint8_t inc[32], one[32];
    assert_int_equal(sha_final(c, inc), 0);
    sha256(big, sizeof big, one);
    assert_memory_equal(inc, one, 32);
    /* a fresh context, then reset after final, both start from scratch */
    assert_int_equal(sha256_reset(c), 0);
    assert_int_equal(sha_update(c, "abc", 3), 0);
    assert_int_equal(sha_final(c, inc), 0);
    char hx[65];
    hex_encode(hx, inc, 32);
    assert_string_equal(hx, SHA256_ABC);
    sha_free(c);
    sha_ctx *e = sha256_new();
    assert_non_null(e);
    assert_int_equal(sha_final(e, inc), 0);
    hex_encode(hx, inc, 32);
    assert_string_equal(hx, SHA256_EMPTY);
    sha_free(e);
    sha_free(NULL);
}

/* ---- log ---------------------------------------------------------------------------- */

static void test_log_level_parse(void **state)
{
    (void)state;
    assert_int_equal(log_level_parse("debug"), LOG_LVL_DEBUG);
    assert_int_equal(log_level_parse("info"), LOG_LVL_INFO);
    assert_int_equal(log_level_parse("warning"), LOG_LVL_WARN);
    assert_int_equal(log_level_parse("warn"), LOG_LVL_WARN);
    assert_int_equal(log_level_parse("error"), LOG_LVL_ERROR);
    assert_int_equal(log_level_parse("off"), LOG_LVL_OFF);
    assert_int_equal(log_level_parse("DEBUG"), LOG_LVL_DEBUG);
    assert_int_equal(log_level_parse("Warning"), LOG_LVL_WARN);
    assert_int_equal(log_level_parse("ErRoR"), LOG_LVL_ERROR);
    assert_int_equal(log_level_parse(""), -1);
    assert_int_equal(log_level_parse("trace"), -1);
    assert_int_equal(log_level_parse("info "), -1);
    assert_int_equal(log_level_parse("inf"), -1);
    assert_int_equal(log_level_parse("warnings"), -1);
    assert_int_equal(log_level_parse("critical"), -1);
    assert_int_equal(log_level_parse("1"), -1);
    int saved = log_level_current;
    log_set_level(LOG_LVL_ERROR);
    assert_int_equal(log_level_current, LOG_LVL_ERROR);
    log_set_level(saved);
}

/* ---- check -------------------------------------------------------------------------- */

static const char *jstr_at(AT_PARAMS, json_object *o, const char *k)
{
    json_object *v;
    at_assert_true(json_object_object_get_ex(o, k, &v));
    at_assert_true(json_object_is_type(v, json_type_string));
    return json_object_get_string(v);
}
#define jstr(...) jstr_at(AT_HERE, __VA_ARGS__)

static void test_check_list(void **state)
{
    (void)state;
    checklist_t cl = CHECKLIST_INIT;
    assert_int_equal(check_add(&cl, "a.pass", CHK_PASS, "first check", "x", "x"), CHK_PASS);
    assert_int_equal(check_add(&cl, "b.fail", CHK_FAIL, "second \"quoted\" \\ check", "1\n2", NULL),
                     CHK_FAIL);
    assert_int_equal(check_add(&cl, "c.skip", CHK_SKIP, NULL, NULL, NULL), CHK_SKIP);
    assert_int_equal(check_addf(&cl, "d.warn", CHK_WARN, "fmt", "", "n=%d s=%s", 7, "\x01z"),
                     CHK_WARN);
    assert_int_equal(check_add(&cl, "e.pass", CHK_PASS, "utf8 \xc3\xa9", NULL, "\t"), CHK_PASS);
    /* more than the initial capacity */
    for (int i = 0; i < 40; i++)
        check_addf(&cl, "bulk", CHK_PASS, "bulk", NULL, "%d", i);
    assert_int_equal(cl.n, 45);
    assert_int_equal(check_count(&cl, CHK_PASS), 42);
    assert_int_equal(check_count(&cl, CHK_FAIL), 1);
    assert_int_equal(check_count(&cl, CHK_SKIP), 1);
    assert_int_equal(check_count(&cl, CHK_WARN), 1);
    assert_string_equal(cl.items[44].found, "39");

    /* text */
    buf_t t = BUF_INIT;
    check_render_text(&cl, &t, 0);
    assert_non_null(strstr(t.data, "[PASS] a.pass"));
    assert_non_null(strstr(t.data, "first check (expected x, found x)\n"));
    assert_non_null(strstr(t.data, "[FAIL] b.fail"));
    assert_non_null(strstr(t.data, "second \"quoted\" \\ check (expected 1\n2)\n"));
    assert_non_null(strstr(t.data, "[SKIP] c.skip"));
    assert_non_null(strstr(t.data, "[WARN] d.warn"));
    assert_non_null(strstr(t.data, "fmt (found n=7 s=\x01z)\n"));
    assert_null(strstr(t.data, "\033[")); /* no colour asked for */
    /* the line of c.skip: id padded to 32 columns, no parentheses */
    const char *line = strstr(t.data, "[SKIP] ");
    char want[80];
    snprintf(want, sizeof want, "[SKIP] %-32s \n", "c.skip");
    assert_memory_equal(line, want, strlen(want));
    size_t lines = 0;
    for (size_t i = 0; i < t.len; i++)
        lines += t.data[i] == '\n';
    assert_int_equal(lines, 46); /* 45 items; one "found" contains a newline */
    buf_t tc = BUF_INIT;
    check_render_text(&cl, &tc, 1);
    assert_non_null(strstr(tc.data, "\033[32m[PASS]\033[0m a.pass"));
    assert_non_null(strstr(tc.data, "\033[31m[FAIL]\033[0m b.fail"));
    buf_free(&tc);
    buf_free(&t);

    /* JSON */
    buf_t j = BUF_INIT;
    check_render_json(&cl, &j);
    json_object *arr = json_tokener_parse(j.data);
    assert_non_null(arr);
    assert_true(json_object_is_type(arr, json_type_array));
    assert_int_equal(json_object_array_length(arr), 45);
    json_object *o = json_object_array_get_idx(arr, 0);
    assert_string_equal(jstr(o, "id"), "a.pass");
    assert_string_equal(jstr(o, "status"), "pass");
    assert_string_equal(jstr(o, "what"), "first check");
    assert_string_equal(jstr(o, "expected"), "x");
    assert_string_equal(jstr(o, "found"), "x");
    o = json_object_array_get_idx(arr, 1);
    assert_string_equal(jstr(o, "status"), "fail");
    assert_string_equal(jstr(o, "what"), "second \"quoted\" \\ check");
    assert_string_equal(jstr(o, "expected"), "1\n2");
    assert_string_equal(jstr(o, "found"), "");
    o = json_object_array_get_idx(arr, 2);
    assert_string_equal(jstr(o, "status"), "skip");
    assert_string_equal(jstr(o, "what"), "");
    o = json_object_array_get_idx(arr, 3);
    assert_string_equal(jstr(o, "status"), "warn");
    assert_string_equal(jstr(o, "found"), "n=7 s=\x01z");
    o = json_object_array_get_idx(arr, 4);
    assert_string_equal(jstr(o, "what"), "utf8 \xc3\xa9");
    assert_string_equal(jstr(o, "found"), "\t");
    assert_int_equal(json_object_object_length(o), 5);
    json_object_put(arr);
    assert_non_null(strstr(j.data, "\\u0001z"));
    buf_free(&j);

    /* an empty list renders as an empty array / no text; a long id is truncated, not overrun */
    check_free(&cl);
    assert_int_equal(cl.n, 0);
    assert_null(cl.items);
    buf_t e = BUF_INIT;
    check_render_json(&cl, &e);
    assert_string_equal(e.data, "[]");
    buf_free(&e);
    char longid[200];
    memset(longid, 'i', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    check_add(&cl, longid, CHK_PASS, "w", NULL, NULL);
    assert_int_equal(strlen(cl.items[0].id), sizeof cl.items[0].id - 1);
    check_free(&cl);
}


static void test_json_helpers(void **state)
{
    (void)state;
    const char ok[] = "{\"a\":\"x\\u00e9\",\"n\":1}  \r\n";
    json_object *o = json_parse_strict(ok, sizeof ok - 1);
    assert_non_null(o);
    size_t len = 0;
    assert_string_equal(json_get_str(o, "a", &len), "x\xc3\xa9");
    assert_int_equal(len, 3);
    assert_null(json_get_str(o, "n", NULL));    /* not a string */
    assert_null(json_get_str(o, "zz", NULL));   /* absent */
    assert_null(json_get_str(NULL, "a", NULL));
    json_object_put(o);
    json_object *arr = json_parse_strict("[1]", 3);
    assert_non_null(arr);
    assert_null(json_get_str(arr, "a", NULL));  /* not an object */
    json_object_put(arr);
    static const char *bad[] = {"{\"a\":1} x", "{\"a\":1}{}", "{\"a\":1,}", "", " ",
                                "[1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_object *b = json_parse_strict(bad[i], strlen(bad[i]));
        if (b)
            fail_msg("accepted '%s'", bad[i]);
    }
    /* An embedded NUL is not the end of the text. */
    assert_null(json_parse_strict("{}\0{}", 5));
}

/* The connection cap derived from a descriptor limit: half of what 64 leave, at least 1. */
static void test_fdlimit_derive_cap(void **state)
{
    (void)state;
    assert_int_equal(fdlimit_derive_cap(1024), 480);
    assert_int_equal(fdlimit_derive_cap(65536), 32736);
    assert_int_equal(fdlimit_derive_cap(1048576), 524256);
    assert_int_equal(fdlimit_derive_cap(100), 50);
    assert_int_equal(fdlimit_derive_cap(1), 1);
    assert_int_equal(fdlimit_derive_cap(0), 1);
    assert_int_equal(fdlimit_derive_cap(~0ull), 0xffffffffu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_helpers),
        cmocka_unit_test(test_hex_encode),
        cmocka_unit_test(test_hex_decode_ok),
        cmocka_unit_test(test_hex_decode_bad),
        cmocka_unit_test(test_hex_is_hex),
        cmocka_unit_test(test_b64_encode_rfc4648),
        cmocka_unit_test(test_b64_decode_rfc4648),
        cmocka_unit_test(test_b64_decode_bad),
        cmocka_unit_test(test_buf_append_printf),
        cmocka_unit_test(test_buf_reserve_overflow),
        cmocka_unit_test(test_buf_json_str),
        cmocka_unit_test(test_buf_append_wiped),
        cmocka_unit_test(test_sha_vectors),
        cmocka_unit_test(test_sha_incremental),
        cmocka_unit_test(test_log_level_parse),
        cmocka_unit_test(test_check_list),
        cmocka_unit_test(test_fdlimit_derive_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
