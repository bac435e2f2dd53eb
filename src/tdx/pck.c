/* PCK leaf certificate: the Intel SGX extension (shared/docs/tee-formats.md §1.8 step 3). OpenSSL
 * finds the extension and the issuer; the extension's content is walked here with a small
 * DER reader in the style of BearSSL: single-byte tags, definite lengths up to 4 bytes, and
 * every length proven to fit in what remains before it is used. */
#include "tdx/pck.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

#define SGX_EXT_OID "1.2.840.113741.1.13.1"
/* DER content of OID 1.2.840.113741.1.13.1; sub-items append one or two small arcs. */
static const uint8_t sgx_oid[] = {0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01};

typedef struct der {
    const uint8_t *p;
    size_t len, off;
} der_t;

static int fail(char *err, size_t errlen, const char *why)
{
    if (err && errlen)
        snprintf(err, errlen, "PCK SGX extension: %s", why);
    return -1;
}

/* Reads one TLV header; on success *val points at the content of *vlen bytes, which is
 * guaranteed to lie inside the input, and the cursor moves past the whole element. */
static int der_next(der_t *d, uint8_t *tag, const uint8_t **val, size_t *vlen)
{
    if (d->len - d->off < 2)
        return -1;
    uint8_t t = d->p[d->off];
    if ((t & 0x1f) == 0x1f) /* high tag numbers never occur here */
        return -1;
    uint8_t l0 = d->p[d->off + 1];
    size_t hdr = 2, n;
    if (l0 < 0x80) {
        n = l0;
    } else {
        size_t k = l0 & 0x7f;
        if (k == 0 || k > 4 || d->len - d->off - 2 < k) /* indefinite or oversized */
            return -1;
        n = 0;
        for (size_t i = 0; i < k; i++)
            n = (n << 8) | d->p[d->off + 2 + i];
        if (n < 0x80 || (k > 1 && d->p[d->off + 2] == 0)) /* not minimal: not DER */
            return -1;
        hdr += k;
    }
    if (n > d->len - d->off - hdr)
        return -1;
    *tag = t;
    *val = d->p + d->off + hdr;
    *vlen = n;
    d->off += hdr + n;
    return 0;
}

static int der_expect(der_t *d, uint8_t want, der_t *inner)
{
    uint8_t t;
    const uint8_t *v;
    size_t n;
    if (der_next(d, &t, &v, &n) || t != want)
        return -1;
    inner->p = v;
    inner->len = n;
    inner->off = 0;
    return 0;
}

/* Returns the arcs after 1.2.840.113741.1.13.1 (one or two, each < 128), or -1. */
static int sgx_suboid(const uint8_t *v, size_t n, int *a, int *b)
{
    if (n < sizeof sgx_oid + 1 || n > sizeof sgx_oid + 2 || memcmp(v, sgx_oid, sizeof sgx_oid))
        return -1;
    for (size_t i = sizeof sgx_oid; i < n; i++)
        if (v[i] & 0x80)
            return -1;
    *a = v[sizeof sgx_oid];
    *b = n == sizeof sgx_oid + 2 ? v[sizeof sgx_oid + 1] : 0;
    return 0;
}

/* A non-negative DER INTEGER of at most max. */
static int der_uint(uint8_t tag, const uint8_t *v, size_t n, unsigned max, unsigned *out)
{
    if (tag != 0x02 || n == 0 || n > 3 || (v[0] & 0x80))
        return -1;
    if (n > 1 && v[0] == 0 && !(v[1] & 0x80)) /* not minimal */
        return -1;
    unsigned x = 0;
    for (size_t i = 0; i < n; i++)
        x = (x << 8) | v[i];
    if (x > max)
        return -1;
    *out = x;
    return 0;
}

/* The TCB item: SEQUENCE OF SEQUENCE { OID …2.k, INTEGER | OCTET STRING }. */
static int parse_tcb(der_t *tcb, tdx_pck_info_t *out, char *err, size_t errlen)
{
    uint32_t seen = 0;
    while (tcb->off < tcb->len) {
        der_t item;
        uint8_t t;
        const uint8_t *v;
        size_t n;
        int a, b;
        if (der_expect(tcb, 0x30, &item) || der_next(&item, &t, &v, &n) || t != 0x06 ||
            sgx_suboid(v, n, &a, &b) || a != 2 || b < 1 || b > 18)
            return fail(err, errlen, "malformed TCB entry");
        if (der_next(&item, &t, &v, &n) || item.off != item.len)
            return fail(err, errlen, "malformed TCB value");
        if (seen & (1u << (b - 1))) /* a second value would silently replace the first */
            return fail(err, errlen, "duplicate TCB entry");
        unsigned x;
        if (b <= 16) {
            if (der_uint(t, v, n, 255, &x))
                return fail(err, errlen, "bad TCB component SVN");
            out->comp_svn[b - 1] = (uint8_t)x;
        } else if (b == 17) {
            if (der_uint(t, v, n, 65535, &x))
                return fail(err, errlen, "bad PCESVN");
            out->pcesvn = (uint16_t)x;
        } else {
            if (t != 0x04 || n != 16)
                return fail(err, errlen, "bad CPUSVN");
            memcpy(out->cpusvn, v, 16);
        }
        seen |= 1u << (b - 1);
    }
    if (seen != 0x3ffffu)
        return fail(err, errlen, "TCB incomplete");
    return 0;
}

int tdx_pck_ext_parse(const uint8_t *der, size_t len, tdx_pck_info_t *out, char *err,
                      size_t errlen)
{
    der_t top = {der, len, 0}, seq;
    int ca = out->ca;
    memset(out, 0, sizeof *out);
    out->ca = ca;
    if (!der || der_expect(&top, 0x30, &seq) || top.off != top.len)
        return fail(err, errlen, "not a DER SEQUENCE");
    unsigned seen = 0;
    while (seq.off < seq.len) {
        der_t item;
        uint8_t t;
        const uint8_t *v;
        size_t n;
        int a, b;
        if (der_expect(&seq, 0x30, &item) || der_next(&item, &t, &v, &n) || t != 0x06)
            return fail(err, errlen, "malformed entry");
        if (sgx_suboid(v, n, &a, &b) || b != 0) {
            continue; /* an unknown OID: skip the entry (its bytes were bounds-checked) */
        }
        if (der_next(&item, &t, &v, &n) || item.off != item.len)
            return fail(err, errlen, "malformed entry value");
        switch (a) {
        case 1: /* PPID */
            if (t != 0x04 || n != 16)
                return fail(err, errlen, "bad PPID");
            memcpy(out->ppid, v, 16);
            break;
        case 2: {
            der_t tcb = {v, n, 0};
            if (t != 0x30)
                return fail(err, errlen, "bad TCB");
            if (parse_tcb(&tcb, out, err, errlen))
                return -1;
            break;
        }
        case 3:
            if (t != 0x04 || n != 2)
                return fail(err, errlen, "bad PCE-ID");
            memcpy(out->pceid, v, 2);
            break;
        case 4:
            if (t != 0x04 || n != 6)
                return fail(err, errlen, "bad FMSPC");
            memcpy(out->fmspc, v, 6);
            break;
        default:
            continue; /* SGX type, platform instance id, configuration: not needed */
        }
        if (seen & (1u << a))
            return fail(err, errlen, "duplicate entry");
        seen |= 1u << a;
    }
    if ((seen & 0x1c) != 0x1c) /* TCB, PCE-ID, FMSPC */
        return fail(err, errlen, "FMSPC, PCE-ID or TCB missing");
    return 0;
}

static int ca_from_issuer(X509 *x)
{
    char cn[128];
    X509_NAME *iss = X509_get_issuer_name(x);
    if (!iss || X509_NAME_get_text_by_NID(iss, NID_commonName, cn, sizeof cn) <= 0)
        return TDX_PCK_CA_UNKNOWN;
    if (strcmp(cn, "Intel SGX PCK Platform CA") == 0)
        return TDX_PCK_CA_PLATFORM;
    if (strcmp(cn, "Intel SGX PCK Processor CA") == 0)
        return TDX_PCK_CA_PROCESSOR;
    return TDX_PCK_CA_UNKNOWN;
}

static int parse_x509(X509 *x, tdx_pck_info_t *out, char *err, size_t errlen)
{
    int rc = -1;
    ASN1_OBJECT *obj = OBJ_txt2obj(SGX_EXT_OID, 1);
    int idx = obj ? X509_get_ext_by_OBJ(x, obj, -1) : -1;
    X509_EXTENSION *ext = idx >= 0 ? X509_get_ext(x, idx) : NULL;
    ASN1_OCTET_STRING *os = ext ? X509_EXTENSION_get_data(ext) : NULL;
    if (!os) {
        fail(err, errlen, "extension not present");
    } else if (obj && X509_get_ext_by_OBJ(x, obj, idx) >= 0) {
        fail(err, errlen, "extension present twice");
    } else {
        out->ca = ca_from_issuer(x);
        rc = tdx_pck_ext_parse(ASN1_STRING_get0_data(os), (size_t)ASN1_STRING_length(os), out,
                               err, errlen);
    }
    ASN1_OBJECT_free(obj);
    ERR_clear_error();
    return rc;
}

int tdx_pck_cert_parse(const uint8_t *cert_der, size_t len, tdx_pck_info_t *out, char *err,
                       size_t errlen)
{
    if (len > INT32_MAX)
        return fail(err, errlen, "certificate too large");
    const unsigned char *p = cert_der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (!x) {
        ERR_clear_error();
        return fail(err, errlen, "certificate does not parse");
    }
    int rc = parse_x509(x, out, err, errlen);
    X509_free(x);
    return rc;
}

int tdx_pck_chain_parse(const uint8_t *chain_pem, size_t len, tdx_pck_info_t *out, char *err,
                        size_t errlen)
{
    if (len > INT32_MAX)
        return fail(err, errlen, "chain too large");
    BIO *bio = BIO_new_mem_buf(chain_pem, (int)len);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (!x) {
        ERR_clear_error();
        return fail(err, errlen, "no PEM certificate in the chain");
    }
    int rc = parse_x509(x, out, err, errlen);
    X509_free(x);
    return rc;
}

const char *tdx_pck_ca_param(int ca)
{
    return ca == TDX_PCK_CA_PLATFORM ? "platform" : ca == TDX_PCK_CA_PROCESSOR ? "processor" : NULL;
}
