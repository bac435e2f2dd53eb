/* Intel PCS / PCCS client for TDX collateral (shared/docs/tee-formats.md §1.8): four GETs (PCK CRL,
 * TDX TCB info, TD QE identity, root CA CRL), issuer chains from URL-encoded PEM headers, the
 * signed JSON kept byte for byte, and the result in the dcap-qvl collateral shape. */
#include "verify/pcs.h"

#include <curl/curl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/hex.h"
#include "core/pem.h"
#include "tdx/collateral.h"
#include "tdx/pck.h"
#include "tdx/quote.h"

#define PCS_MAX_BODY (8u << 20)
#define PCS_MAX_HEADER (64u << 10)

typedef struct pcs_resp {
    buf_t body;
    const char *want_hdr[2]; /* header names to capture (case-insensitive) */
    char *hdr;               /* URL-decoded value of the first one seen */
    int too_big;
} pcs_resp_t;

__attribute__((format(printf, 3, 4))) static int pcs_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    pcs_resp_t *r = ud;
    size_t len = size * n;
    if (r->body.len + len > PCS_MAX_BODY || buf_append(&r->body, p, len)) {
        r->too_big = 1;
        return 0;
    }
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    pcs_resp_t *r = ud;
    size_t len = size * n;
    for (int i = 0; i < 2 && r->want_hdr[i] && !r->hdr; i++) {
        size_t k = strlen(r->want_hdr[i]);
        if (len <= k || p[k] != ':' || strncasecmp(p, r->want_hdr[i], k) != 0)
            continue;
        const char *v = p + k + 1;
        size_t vl = len - k - 1;
        while (vl && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        if (vl == 0 || vl > PCS_MAX_HEADER)
            continue;
        int outlen = 0;
        char *dec = curl_easy_unescape(NULL, v, (int)vl, &outlen);
        if (dec && outlen > 0 && !memchr(dec, 0, (size_t)outlen)) {
            r->hdr = strndup(dec, (size_t)outlen);
        }
        curl_free(dec);
    }
    return len;
}

/* GET url into r; 0 on HTTP 200. */
static int http_get(const char *url, pcs_resp_t *r, char *err, size_t errlen)
{
    CURL *c = curl_easy_init();
    if (!c)
        return pcs_fail(err, errlen, "curl init failed");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "vllm-proxy-verify");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (r->too_big)
        return pcs_fail(err, errlen, "%s: response too large", url);
    if (cc != CURLE_OK)
        return pcs_fail(err, errlen, "%s: %s", url, curl_easy_strerror(cc));
    if (status != 200) {
        char s[16];
        snprintf(s, sizeof s, "%ld", status);
        return pcs_fail(err, errlen, "%s: HTTP %s", url, s);
    }
    return 0;
}

static void resp_free(pcs_resp_t *r)
{
    buf_free(&r->body);
    free(r->hdr);
}

/* A CRL body as PCS (DER), a PCCS (hex) or anyone (PEM) serves it → DER in out (malloc'd). */
static int crl_to_der(const buf_t *b, uint8_t **out, size_t *outlen)
{
    *out = NULL;
    if (!b->data || b->len == 0 || b->len > INT32_MAX)
        return -1;
    size_t n = b->len;
    while (n && (b->data[n - 1] == '\n' || b->data[n - 1] == '\r' || b->data[n - 1] == ' '))
        n--;
    if (n > 10 && memcmp(b->data, "-----BEGIN", 10) == 0) {
        BIO *bio = BIO_new_mem_buf(b->data, (int)b->len);
        X509_CRL *crl = bio ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        unsigned char *der = NULL;
        int dl = crl ? i2d_X509_CRL(crl, &der) : -1;
        X509_CRL_free(crl);
        ERR_clear_error();
        if (dl <= 0)
            return -1;
        *out = malloc((size_t)dl);
        if (*out)
            memcpy(*out, der, (size_t)dl);
        OPENSSL_free(der);
        *outlen = (size_t)dl;
        return *out ? 0 : -1;
    }
    if (n % 2 == 0 && hex_is_hex(b->data, n)) {
        *out = malloc(n / 2 + 1);
        long r = *out ? hex_decode(*out, n / 2 + 1, b->data, n) : -1;
        if (r <= 0) {
            free(*out);
            *out = NULL;
            return -1;
        }
        *outlen = (size_t)r;
        return 0;
    }
    *out = malloc(b->len);
    if (!*out)
        return -1;
    memcpy(*out, b->data, b->len);
    *outlen = b->len;
    return 0;
}

#define CRL_URL_MAX 1024 /* a distribution point URI longer than this is not one we fetch */

/* The first URI of the CRL distribution points of the last certificate in a PEM chain. */
static char *root_crl_dp(const char *chain)
{
    STACK_OF(X509) *sk = NULL;
    pem_chain_read(chain, strlen(chain), TDX_PCK_CHAIN_MAX_CERTS, &sk);
    X509 *last = sk ? sk_X509_value(sk, sk_X509_num(sk) - 1) : NULL;
    char *url = NULL;
    STACK_OF(DIST_POINT) *dps = last ? X509_get_ext_d2i(last, NID_crl_distribution_points, NULL, NULL) : NULL;
    for (int i = 0; dps && !url && i < sk_DIST_POINT_num(dps); i++) {
        DIST_POINT *dp = sk_DIST_POINT_value(dps, i);
        if (!dp->distpoint || dp->distpoint->type != 0)
            continue;
        GENERAL_NAMES *gns = dp->distpoint->name.fullname;
        for (int j = 0; !url && j < sk_GENERAL_NAME_num(gns); j++) {
            GENERAL_NAME *gn = sk_GENERAL_NAME_value(gns, j);
            if (gn->type != GEN_URI)
                continue;
            const char *s = (const char *)ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
            int sl = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
            if (sl > 8 && sl < CRL_URL_MAX && !memchr(s, 0, (size_t)sl) &&
                (strncmp(s, "https://", 8) == 0 || strncmp(s, "http://", 7) == 0))
                url = strndup(s, (size_t)sl);
        }
    }
    CRL_DIST_POINTS_free(dps);
    sk_X509_pop_free(sk, X509_free);
    ERR_clear_error();
    return url;
}

/* {"<key>": {...}, "signature": "<128 hex>"} → raw text of the value and the 64-byte sig. */
static int signed_body(const buf_t *b, const char *key, const char **text, size_t *tlen,
                       uint8_t sig[64])
{
    size_t off, len, soff, slen;
    if (!b->data || tdx_json_raw_member(b->data, b->len, key, &off, &len) ||
        b->data[off] != '{' ||
        tdx_json_raw_member(b->data, b->len, "signature", &soff, &slen) || slen != 130 ||
        b->data[soff] != '"' || hex_decode(sig, 64, b->data + soff + 1, 128) != 64)
        return -1;
    *text = b->data + off;
    *tlen = len;
    return 0;
}

int pcs_fetch_collateral(const char *base_url, const tdx_quote_t *q, buf_t *out, char *err,
                         size_t errlen)
{
    char base[512], url[768], fmspc[13], why[256];
    const char *b = base_url && *base_url ? base_url : PCS_INTEL_URL;
    size_t bl = strlen(b);
    if (bl >= sizeof base - 64 || (strncmp(b, "https://", 8) && strncmp(b, "http://", 7)))
        return pcs_fail(err, errlen, "bad PCS/PCCS URL");
    memcpy(base, b, bl + 1);
    while (bl && base[bl - 1] == '/')
        base[--bl] = 0;
    static const char *const sfx[] = {"/sgx/certification/v4", "/tdx/certification/v4"};
    for (int i = 0; i < 2; i++) {
        size_t sl = strlen(sfx[i]);
        if (bl > sl && strcmp(base + bl - sl, sfx[i]) == 0)
            base[bl -= sl] = 0;
    }
    int is_pcs = strncmp(base, PCS_INTEL_URL, strlen(PCS_INTEL_URL)) == 0;

    tdx_pck_info_t pck = {0};
    if (!q || !q->pck_chain || tdx_pck_chain_parse(q->pck_chain, q->pck_chain_len, &pck, why, sizeof why))
        return pcs_fail(err, errlen, "quote: %s", q ? why : "missing");
    const char *ca = tdx_pck_ca_param(pck.ca);
    if (!ca)
        return pcs_fail(err, errlen, "PCK leaf issued by neither the Platform nor the Processor CA");
    hex_encode_upper(fmspc, pck.fmspc, 6);

    pcs_resp_t crl = {.want_hdr = {"SGX-PCK-CRL-Issuer-Chain", NULL}};
    pcs_resp_t tcb = {.want_hdr = {"TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"}};
    pcs_resp_t qe = {.want_hdr = {"SGX-Enclave-Identity-Issuer-Chain", NULL}};
    pcs_resp_t root = {0};
    uint8_t *pck_der = NULL, *root_der = NULL;
    size_t pck_len = 0, root_len = 0;
    char *dp = NULL;
    int rc = -1;

    snprintf(url, sizeof url, "%s/sgx/certification/v4/pckcrl?ca=%s&encoding=der", base, ca);
    if (http_get(url, &crl, err, errlen))
        goto out;
    if (!crl.hdr || crl_to_der(&crl.body, &pck_der, &pck_len)) {
        pcs_fail(err, errlen, "%s: %s", url, crl.hdr ? "body is not a CRL" : "no SGX-PCK-CRL-Issuer-Chain");
        goto out;
    }
    snprintf(url, sizeof url, "%s/tdx/certification/v4/tcb?fmspc=%s", base, fmspc);
    if (http_get(url, &tcb, err, errlen))
        goto out;
    snprintf(url, sizeof url, "%s/tdx/certification/v4/qe/identity", base);
    if (http_get(url, &qe, err, errlen))
        goto out;
    if (!tcb.hdr || !qe.hdr) {
        pcs_fail(err, errlen, "%s: issuer chain header missing", tcb.hdr ? "QE identity" : "TCB info");
        goto out;
    }

    if (!is_pcs) {
        snprintf(url, sizeof url, "%s/sgx/certification/v4/rootcacrl", base);
        if (http_get(url, &root, why, sizeof why) || crl_to_der(&root.body, &root_der, &root_len)) {
            resp_free(&root);
            memset(&root, 0, sizeof root);
        }
    }
    if (!root_der) {
        dp = root_crl_dp(qe.hdr);
        const char *ru = dp ? dp : PCS_ROOT_CRL_URL;
        if (http_get(ru, &root, err, errlen))
            goto out;
        if (crl_to_der(&root.body, &root_der, &root_len)) {
            pcs_fail(err, errlen, "%s: %s", ru, "body is not a CRL");
            goto out;
        }
    }

    tdx_collateral_parts_t parts = {.pck_crl_issuer_chain = crl.hdr, .root_ca_crl = root_der,
                                    .root_ca_crl_len = root_len, .pck_crl = pck_der,
                                    .pck_crl_len = pck_len, .tcb_info_issuer_chain = tcb.hdr,
                                    .qe_identity_issuer_chain = qe.hdr};
    uint8_t tsig[64], qsig[64];
    if (signed_body(&tcb.body, "tcbInfo", &parts.tcb_info, &parts.tcb_info_len, tsig)) {
        pcs_fail(err, errlen, "TCB info: %s", "not {\"tcbInfo\":{…},\"signature\":\"<hex>\"}");
        goto out;
    }
    if (signed_body(&qe.body, "enclaveIdentity", &parts.qe_identity, &parts.qe_identity_len, qsig)) {
        pcs_fail(err, errlen, "QE identity: %s", "not {\"enclaveIdentity\":{…},\"signature\":\"<hex>\"}");
        goto out;
    }
    parts.tcb_info_signature = tsig;
    parts.qe_identity_signature = qsig;
    if (tdx_collateral_build_json(&parts, out)) {
        pcs_fail(err, errlen, "out of memory");
        goto out;
    }
    rc = 0;
out:
    resp_free(&crl);
    resp_free(&tcb);
    resp_free(&qe);
    resp_free(&root);
    free(pck_der);
    free(root_der);
    free(dp);
    return rc;
}
