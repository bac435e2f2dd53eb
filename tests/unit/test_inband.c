/* In-band signatures' pure pieces (proxy/inband.h) and the TE parser (http/server.h): what a
 * request gets from its header and the setting, which signed texts may travel as header
 * values, the fields written (an algorithm without its key left out), and "trailers" in a TE
 * list. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "http/server.h"
#include "proxy/inband.h"

#define W(s, present, v) inband_want((s), (present), (v), strlen(v))

static void test_want(void **state)
{
    (void)state;
    assert_int_equal(W(INBAND_REQUEST, 0, ""), INBAND_WANT_NO);
    assert_int_equal(W(INBAND_REQUEST, 1, "1"), INBAND_WANT_YES);
    assert_int_equal(W(INBAND_REQUEST, 1, "0"), INBAND_WANT_NO);
    assert_int_equal(W(INBAND_ALL, 0, ""), INBAND_WANT_YES);
    assert_int_equal(W(INBAND_ALL, 1, "0"), INBAND_WANT_YES);
    assert_int_equal(W(INBAND_OFF, 1, "1"), INBAND_WANT_OFF);
    assert_int_equal(W(INBAND_OFF, 0, ""), INBAND_WANT_NO);
    assert_int_equal(W(INBAND_OFF, 1, "0"), INBAND_WANT_NO);
    /* anything else is refused whatever the setting, an empty value included */
    const char *bad[] = {"", "true", "yes", "11", " 1", "2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(W(INBAND_REQUEST, 1, bad[i]), INBAND_WANT_INVALID);
        assert_int_equal(W(INBAND_ALL, 1, bad[i]), INBAND_WANT_INVALID);
    }
}

static void test_text_safe(void **state)
{
    (void)state;
    const char *hashes = "00ff:aa11";
    assert_true(inband_text_safe(hashes, strlen(hashes)));
    assert_true(inband_text_safe("my model:ab:cd", 14));
    assert_true(inband_text_safe("~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}", 32));
    assert_false(inband_text_safe("", 0));
    assert_false(inband_text_safe(" lead:ab:cd", 11)); /* a reader strips it */
    assert_false(inband_text_safe("trail ", 6));
    assert_false(inband_text_safe("mod\xc3\xa8le:ab", 10));
    assert_false(inband_text_safe("a\tb", 3));
    assert_false(inband_text_safe("a\r\nX-Evil: 1", 12));
    assert_false(inband_text_safe("a\x7f", 2));
    assert_false(inband_text_safe("a\0b", 3));
}

static void test_fields(void **state)
{
    (void)state;
    buf_t b = BUF_INIT;
    inband_sig_t s = {"m:aa:bb", "0xsig", "0xAddr", "edsig", "edkey"};
    assert_int_equal(inband_fields(&b, &s), 0);
    assert_string_equal(b.data, "X-Signature-Text: m:aa:bb\r\nX-Signature-Ecdsa: 0xsig\r\n"
                                "X-Signing-Address: 0xAddr\r\nX-Signature-Ed25519: edsig\r\n"
                                "X-Signing-Key-Ed25519: edkey\r\n");
    buf_reset(&b);
    inband_sig_t no_ed = {"t", "0xsig", "0xAddr", "", NULL};
    assert_int_equal(inband_fields(&b, &no_ed), 0);
    assert_string_equal(
        b.data, "X-Signature-Text: t\r\nX-Signature-Ecdsa: 0xsig\r\nX-Signing-Address: 0xAddr\r\n");
    buf_reset(&b);
    inband_sig_t no_ec = {"t", NULL, "0xAddr", "edsig", "edkey"};
    assert_int_equal(inband_fields(&b, &no_ec), 0);
    assert_string_equal(
        b.data,
        "X-Signature-Text: t\r\nX-Signature-Ed25519: edsig\r\nX-Signing-Key-Ed25519: edkey\r\n");
    buf_reset(&b);
    assert_int_equal(inband_trailers_head(&b, 1, 1), 0);
    assert_string_equal(
        b.data, "X-Signature-Inband: trailers\r\nTrailer: X-Signature-Text, X-Signature-Ecdsa, "
                "X-Signing-Address, X-Signature-Ed25519, X-Signing-Key-Ed25519\r\n");
    buf_reset(&b);
    assert_int_equal(inband_trailers_head(&b, 0, 1), 0);
    assert_string_equal(b.data, "X-Signature-Inband: trailers\r\nTrailer: X-Signature-Text, "
                                "X-Signature-Ed25519, X-Signing-Key-Ed25519\r\n");
    buf_reset(&b);
    assert_int_equal(inband_unavailable(&b, INBAND_R_TOO_LARGE), 0);
    assert_string_equal(b.data, "X-Signature-Inband: unavailable; reason=too-large\r\n");
    for (int i = 0; i < INBAND_R_N; i++) { /* every reason a token */
        const char *t = inband_reason_names[i];
        assert_non_null(t);
        assert_true(strlen(t) > 0 && strspn(t, "abcdefghijklmnopqrstuvwxyz-") == strlen(t));
    }
    buf_free(&b);
}

#define TE(s) http_te_has_trailers((s), strlen(s))

static void test_te(void **state)
{
    (void)state;
    assert_true(TE("trailers"));
    assert_true(TE("Trailers"));
    assert_true(TE("TRAILERS"));
    assert_true(TE("gzip;q=0.5, trailers"));
    assert_true(TE("trailers ,deflate"));
    assert_true(TE(" \ttrailers\t"));
    assert_true(TE("deflate, gzip;q=0.5,trailers"));
    assert_false(TE(""));
    assert_false(TE("gzip"));
    assert_false(TE("trailer"));
    assert_false(TE("trailerss"));
    assert_false(TE("xtrailers"));
    assert_false(TE("trailers;q=1")); /* "trailers" takes no parameters */
    assert_false(TE("gzip;x=trailers"));
    assert_false(TE("gzip; trailers"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_want),
        cmocka_unit_test(test_text_safe),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_te),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
