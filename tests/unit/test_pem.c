/* Unit tests for src/core/pem.c, the strict PEM certificate-chain reader: nvtrust's 5-certificate
 * Hopper chain reads whole; trailing garbage, a missing END line, empty text, too many
 * certificates, non-certificate blocks, damaged base64 and NULs inside are refused; trailing
 * NULs and whitespace between blocks are not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/x509.h>
#include <string.h>

#include "core/buf.h"
#include "core/pem.h"
#include "vectors.h"

#define HOPPER_CHAIN "nvidia/nvtrust/hopperCertChain.txt"
#define HOPPER_CERTS 5
#define MAX_CERTS 16

static buf_t g_chain; /* nvtrust's Hopper chain text, no trailing newline */

static int setup(void **state)
{
    (void)state;
    return vec_slurp(HOPPER_CHAIN, &g_chain);
}

static int teardown(void **state)
{
    (void)state;
    buf_free(&g_chain);
    return 0;
}

/* Reads text (NUL-terminated) with max certs; returns the error and the count read. */
static int read_count(const char *text, size_t len, size_t max, int *count)
{
    STACK_OF(X509) *sk = NULL;
    int rc = pem_chain_read(text, len, max, &sk);
    *count = sk ? sk_X509_num(sk) : 0;
    if (rc != PEM_CHAIN_OK)
        assert_null(sk);
    sk_X509_pop_free(sk, X509_free);
    return rc;
}

/* g_chain with before/after text around it. */
static int read_wrapped(const char *before, const char *after, size_t max, int *count)
{
    buf_t b = BUF_INIT;
    assert_int_equal(buf_puts(&b, before), 0);
    assert_int_equal(buf_append(&b, g_chain.data, g_chain.len), 0);
    assert_int_equal(buf_puts(&b, after), 0);
    int rc = read_count(b.data, b.len, max, count);
    buf_free(&b);
    return rc;
}

static void test_reads_hopper_chain(void **state)
{
    (void)state;
    int n;
    assert_int_equal(read_count(g_chain.data, g_chain.len, MAX_CERTS, &n), PEM_CHAIN_OK);
    assert_int_equal(n, HOPPER_CERTS);
    /* The leaf comes first. */
    STACK_OF(X509) *sk;
    assert_int_equal(pem_chain_read(g_chain.data, g_chain.len, MAX_CERTS, &sk), PEM_CHAIN_OK);
    char cn[128];
    X509_NAME_get_text_by_NID(X509_get_subject_name(sk_X509_value(sk, 0)), NID_commonName, cn, sizeof cn);
    assert_string_equal(cn, "GH100 A01 GSP FMC LF");
    sk_X509_pop_free(sk, X509_free);
}

static void test_whitespace_and_trailing_nuls(void **state)
{
    (void)state;
    int n;
    assert_int_equal(read_wrapped("\n\r\n  ", "\r\n\n", MAX_CERTS, &n), PEM_CHAIN_OK);
    assert_int_equal(n, HOPPER_CERTS);
    /* A quote's or NVML's chain counts its C terminator. */
    buf_t b = BUF_INIT;
    assert_int_equal(buf_append(&b, g_chain.data, g_chain.len), 0);
    assert_int_equal(buf_append(&b, "\n\0\0", 3), 0);
    assert_int_equal(read_count(b.data, b.len, MAX_CERTS, &n), PEM_CHAIN_OK);
    assert_int_equal(n, HOPPER_CERTS);
    /* ... but a NUL inside the text is not a terminator. */
    b.data[100] = '\0';
    assert_int_equal(read_count(b.data, b.len, MAX_CERTS, &n), PEM_CHAIN_GARBAGE);
    buf_free(&b);
}

static void test_trailing_and_leading_garbage(void **state)
{
    (void)state;
    int n;
    assert_int_equal(read_wrapped("", "\nhello", MAX_CERTS, &n), PEM_CHAIN_GARBAGE);
    assert_int_equal(read_wrapped("", "x", MAX_CERTS, &n), PEM_CHAIN_GARBAGE); /* END line goes on */
    assert_int_equal(read_wrapped("subject=CN\n", "", MAX_CERTS, &n), PEM_CHAIN_GARBAGE);
    assert_int_equal(read_wrapped("", "\n-----", MAX_CERTS, &n), PEM_CHAIN_GARBAGE);
}

static void test_missing_end(void **state)
{
    (void)state;
    int n;
    const char *end = strstr(g_chain.data, "-----END CERTIFICATE-----");
    assert_non_null(end);
    size_t cut = (size_t)(end - g_chain.data);
    assert_int_equal(read_count(g_chain.data, cut, MAX_CERTS, &n), PEM_CHAIN_NO_END);
    /* The next BEGIN is no END either. */
    buf_t b = BUF_INIT;
    assert_int_equal(buf_append(&b, g_chain.data, cut), 0);
    assert_int_equal(buf_puts(&b, "-----BEGIN CERTIFICATE-----\n"), 0);
    assert_int_equal(read_count(b.data, b.len, MAX_CERTS, &n), PEM_CHAIN_NO_END);
    buf_free(&b);
    /* The last certificate without its END line. */
    assert_int_equal(read_count(g_chain.data, g_chain.len - 3, MAX_CERTS, &n), PEM_CHAIN_NO_END);
}

static void test_empty(void **state)
{
    (void)state;
    int n;
    assert_int_equal(read_count(NULL, 0, MAX_CERTS, &n), PEM_CHAIN_EMPTY);
    assert_int_equal(read_count("", 0, MAX_CERTS, &n), PEM_CHAIN_EMPTY);
    assert_int_equal(read_count(" \n\t\r\n", 5, MAX_CERTS, &n), PEM_CHAIN_EMPTY);
    assert_int_equal(read_count("\0\0", 2, MAX_CERTS, &n), PEM_CHAIN_EMPTY);
}

static void test_too_many(void **state)
{
    (void)state;
    int n;
    assert_int_equal(read_count(g_chain.data, g_chain.len, HOPPER_CERTS, &n), PEM_CHAIN_OK);
    assert_int_equal(read_count(g_chain.data, g_chain.len, HOPPER_CERTS - 1, &n), PEM_CHAIN_TOO_MANY);
    assert_int_equal(read_count(g_chain.data, g_chain.len, 1, &n), PEM_CHAIN_TOO_MANY);
    buf_t big = BUF_INIT;
    while (big.len <= PEM_CHAIN_MAX_TEXT)
        assert_int_equal(buf_append(&big, g_chain.data, g_chain.len), 0);
    assert_int_equal(read_count(big.data, big.len, MAX_CERTS, &n), PEM_CHAIN_TOO_LARGE);
    buf_free(&big);
}

static void test_non_certificate_blocks(void **state)
{
    (void)state;
    int n;
    static const char key[] = "\n-----BEGIN PUBLIC KEY-----\n"
                              "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
                              "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n"
                              "-----END PUBLIC KEY-----\n";
    assert_int_equal(read_wrapped("", key, MAX_CERTS, &n), PEM_CHAIN_NOT_CERT);
    assert_int_equal(read_wrapped(key + 1, "", MAX_CERTS, &n), PEM_CHAIN_NOT_CERT);
    /* OpenSSL's TRUSTED CERTIFICATE carries trust settings: not one of ours. */
    static const char trusted[] = "-----BEGIN TRUSTED CERTIFICATE-----\nAAAA\n-----END TRUSTED CERTIFICATE-----\n";
    assert_int_equal(read_count(trusted, sizeof trusted - 1, MAX_CERTS, &n), PEM_CHAIN_NOT_CERT);
}

static void test_damaged_certificate(void **state)
{
    (void)state;
    int n;
    buf_t b = BUF_INIT;
    assert_int_equal(buf_append(&b, g_chain.data, g_chain.len), 0);
    /* A base64 character that is not one, inside the second certificate. */
    char *second = strstr(b.data + 1, "-----BEGIN CERTIFICATE-----");
    assert_non_null(second);
    second[40] = '*';
    assert_int_equal(read_count(b.data, b.len, MAX_CERTS, &n), PEM_CHAIN_BAD_CERT);
    buf_free(&b);
    /* Valid base64 of bytes that are no certificate. */
    static const char junk[] = "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n";
    assert_int_equal(read_count(junk, sizeof junk - 1, MAX_CERTS, &n), PEM_CHAIN_BAD_CERT);
    assert_string_equal(pem_chain_strerror(PEM_CHAIN_BAD_CERT), "a malformed certificate");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_hopper_chain),
        cmocka_unit_test(test_whitespace_and_trailing_nuls),
        cmocka_unit_test(test_trailing_and_leading_garbage),
        cmocka_unit_test(test_missing_end),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_too_many),
        cmocka_unit_test(test_non_certificate_blocks),
        cmocka_unit_test(test_damaged_certificate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
