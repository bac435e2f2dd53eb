/* Strict PEM certificate-chain reader (core/pem.h): our own scan finds the block boundaries
 * and rejects anything between them; OpenSSL decodes each block's base64 and DER. */
#include "core/pem.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <string.h>

static const char BEGIN_CERT[] = "-----BEGIN CERTIFICATE-----";
static const char END_CERT[] = "-----END CERTIFICATE-----";
static const char BEGIN_ANY[] = "-----BEGIN ";
static const char DASHES[] = "-----";
#define LIT_LEN(s) (sizeof(s) - 1)

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static size_t skip_space(const char *t, size_t i, size_t len)
{
    while (i < len && is_space(t[i]))
        i++;
    return i;
}

static int starts_with(const char *t, size_t i, size_t len, const char *lit, size_t n)
{
    return len - i >= n && memcmp(t + i, lit, n) == 0;
}

/* One block t[0..n) (BEGIN to END line) as a certificate; PEM_CHAIN_OK with *x, or an error. */
static int decode_block(const char *t, size_t n, X509 **x)
{
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long dlen = 0;
    int rc = PEM_CHAIN_BAD_CERT;
    BIO *b = BIO_new_mem_buf(t, (int)n);
    if (!b)
        return PEM_CHAIN_NOMEM;
    if (PEM_read_bio(b, &name, &header, &der, &dlen) == 1 && !strcmp(name, "CERTIFICATE") &&
        header[0] == 0 && dlen > 0) {
        const unsigned char *p = der;
        *x = d2i_X509(NULL, &p, dlen);
        if (*x && p == der + dlen)
            rc = PEM_CHAIN_OK;
        else if (*x) { /* bytes after the certificate's DER */
            X509_free(*x);
            *x = NULL;
        }
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    BIO_free(b);
    ERR_clear_error();
    return rc;
}

/* The block that starts at t[i] (a BEGIN line): its end offset in *end, or an error. */
static int find_block_end(const char *t, size_t i, size_t len, size_t *end)
{
    if (!starts_with(t, i, len, BEGIN_CERT, LIT_LEN(BEGIN_CERT)))
        return starts_with(t, i, len, BEGIN_ANY, LIT_LEN(BEGIN_ANY)) ? PEM_CHAIN_NOT_CERT : PEM_CHAIN_GARBAGE;
    size_t body = i + LIT_LEN(BEGIN_CERT);
    const char *d = memmem(t + body, len - body, DASHES, LIT_LEN(DASHES));
    if (!d || !starts_with(t, (size_t)(d - t), len, END_CERT, LIT_LEN(END_CERT)))
        return PEM_CHAIN_NO_END;
    *end = (size_t)(d - t) + LIT_LEN(END_CERT);
    if (*end < len && !is_space(t[*end]) && t[*end] != '\0')
        return PEM_CHAIN_GARBAGE; /* the END line goes on */
    return PEM_CHAIN_OK;
}

/* Reads the blocks of t[0..n) into sk. */
static int read_blocks(const char *t, size_t n, size_t max_certs, STACK_OF(X509) *sk)
{
    size_t i = skip_space(t, 0, n), end;
    while (i < n) {
        X509 *x = NULL;
        int rc;
        if ((size_t)sk_X509_num(sk) == max_certs)
            return PEM_CHAIN_TOO_MANY;
        if ((rc = find_block_end(t, i, n, &end)) != PEM_CHAIN_OK ||
            (rc = decode_block(t + i, end - i, &x)) != PEM_CHAIN_OK)
            return rc;
        if (!sk_X509_push(sk, x)) {
            X509_free(x);
            return PEM_CHAIN_NOMEM;
        }
        i = skip_space(t, end, n);
    }
    return sk_X509_num(sk) > 0 ? PEM_CHAIN_OK : PEM_CHAIN_EMPTY;
}

int pem_chain_read(const char *text, size_t len, size_t max_certs, struct stack_st_X509 **out)
{
    *out = NULL;
    if (!text || len == 0)
        return PEM_CHAIN_EMPTY;
    if (len > PEM_CHAIN_MAX_TEXT || len > INT32_MAX)
        return PEM_CHAIN_TOO_LARGE;
    size_t n = len;
    while (n > 0 && text[n - 1] == '\0') /* the C string's terminator, counted */
        n--;
    if (memchr(text, '\0', n))
        return PEM_CHAIN_GARBAGE;
    STACK_OF(X509) *sk = sk_X509_new_null();
    if (!sk)
        return PEM_CHAIN_NOMEM;
    int rc = read_blocks(text, n, max_certs, sk);
    if (rc != PEM_CHAIN_OK) {
        sk_X509_pop_free(sk, X509_free);
        return rc;
    }
    *out = sk;
    return PEM_CHAIN_OK;
}

const char *pem_chain_strerror(int e)
{
    switch (e) {
    case PEM_CHAIN_OK: return "ok";
    case PEM_CHAIN_EMPTY: return "no certificate";
    case PEM_CHAIN_GARBAGE: return "text outside the PEM blocks";
    case PEM_CHAIN_NO_END: return "a certificate without its END line";
    case PEM_CHAIN_NOT_CERT: return "a PEM block that is not a certificate";
    case PEM_CHAIN_BAD_CERT: return "a malformed certificate";
    case PEM_CHAIN_TOO_MANY: return "too many certificates";
    case PEM_CHAIN_TOO_LARGE: return "chain text too large";
    case PEM_CHAIN_NOMEM: return "out of memory";
    default: return "unknown error";
    }
}
