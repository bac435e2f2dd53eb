/* multipart/form-data framing checks: the boundary from the Content-Type and the body's
 * delimiters, part headers and close delimiter (proxy/multipart.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "proxy/multipart.h"

static int boundary_of(const char *ct, char *out, size_t cap)
{
    const char *b;
    size_t bn;
    if (multipart_boundary(ct, strlen(ct), &b, &bn) != 0)
        return -1;
    assert_true(bn < cap);
    memcpy(out, b, bn);
    out[bn] = '\0';
    return 0;
}

static void test_boundary(void **state)
{
    (void)state;
    char b[100];
    assert_int_equal(boundary_of("multipart/form-data; boundary=abc", b, sizeof b), 0);
    assert_string_equal(b, "abc");
    assert_int_equal(
        boundary_of("Multipart/Form-Data;charset=utf-8;BOUNDARY=\"a b:c\"", b, sizeof b), 0);
    assert_string_equal(b, "a b:c");
    assert_int_equal(boundary_of("  multipart/form-data ; boundary=----x ", b, sizeof b), 0);
    assert_string_equal(b, "----x");
    char seventy[120] = "multipart/form-data; boundary=";
    memset(seventy + strlen(seventy), 'z', 70);
    assert_int_equal(boundary_of(seventy, b, sizeof b), 0);
    strcat(seventy, "z");
    assert_int_equal(boundary_of(seventy, b, sizeof b), -1); /* 71 characters */
    const char *bad[] = {
        "multipart/form-data",                         /* no boundary */
        "multipart/form-data; boundary=",              /* empty */
        "multipart/form-data; boundary=\"\"",          /* empty, quoted */
        "multipart/form-data; boundary=\"ends \"",     /* ends with a space */
        "multipart/form-data; boundary=\"a\\b\"",      /* not a bchar */
        "multipart/form-data; boundary=\"open",        /* unterminated quote */
        "multipart/mixed; boundary=abc",               /* another type */
        "application/json",                            /* another type */
        "multipart/form-data; boundary=a; boundary=b", /* twice */
        "multipart/form-data boundary=a",              /* no ';' */
        "multipart/form-databoundary=a",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (boundary_of(bad[i], b, sizeof b) == 0)
            fail_msg("accepted: %s", bad[i]);
    }
}

static int check(const char *body)
{
    const char *why = NULL;
    int rc = multipart_check(body, strlen(body), "XyZ", 3, &why);
    if (rc != 0)
        assert_non_null(why);
    return rc;
}

#define PART(name, data) "Content-Disposition: form-data; name=\"" name "\"\r\n\r\n" data "\r\n"

static void test_body(void **state)
{
    (void)state;
    assert_int_equal(check("--XyZ\r\n" PART("a", "1") "--XyZ--"), 0);
    assert_int_equal(
        check("--XyZ\r\n" PART("a", "1") "--XyZ\r\n" PART("b", "") "--XyZ--\r\nepilogue"), 0);
    /* a preamble; transport padding after the delimiter; data holding a near-delimiter */
    assert_int_equal(check("preamble\r\n--XyZ \t\r\n" PART("f", "x\r\n--XyY\r\n--Xy") "--XyZ--"),
                     0);
    assert_int_equal(check("--XyZ\r\ncontent-disposition:form-data;name=f; filename=\"a\"\r\n"
                           "Content-Type: audio/wav\r\n\r\nRIFF\r\n--XyZ--"),
                     0);
    /* binary data with NUL bytes */
    const char bin[] = "--XyZ\r\n" PART("f", "a\0b") "--XyZ--";
    const char *why;
    assert_int_equal(multipart_check(bin, sizeof bin - 1, "XyZ", 3, &why), 0);

    const char *bad[] = {
        "",
        "no delimiter at all",
        "--XyZ--",                              /* no part */
        "--XyZ\r\n" PART("a", "1"),             /* no close delimiter */
        "--XyZ\r\n" PART("a", "1") "--XyZ",     /* ends at a delimiter, not closed */
        "--XyZxx\r\n" PART("a", "1") "--XyZ--", /* another boundary's delimiter */
        "--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--", /* no disposition */
        "--XyZ\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--XyZ--",
        "--XyZ\r\nContent-Disposition: form-data; filename=\"a\"\r\n\r\nx\r\n--XyZ--",
        "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\nx\r\n--XyZ--", /* no empty line */
        "--XyZ\r\n\r\nx\r\n--XyZ--",                                           /* no headers */
        "--XyZ\n" PART("a", "1") "--XyZ--",                                    /* LF only */
        "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n--XyZ--",  /* shares the CRLF */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (check(bad[i]) == 0)
            fail_msg("accepted #%zu: %s", i, bad[i]);
    }
    /* every proper prefix of a good body is refused */
    const char *good = "--XyZ\r\n" PART("a", "1") "--XyZ\r\n" PART("b", "22") "--XyZ--";
    for (size_t n = 0; n < strlen(good); n++) {
        if (multipart_check(good, n, "XyZ", 3, &why) == 0)
            fail_msg("accepted a prefix of %zu bytes", n);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boundary),
        cmocka_unit_test(test_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
