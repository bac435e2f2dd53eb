/* Intel collateral checks for TDX quotes (shared/docs/tee-formats.md §1.8): the order and the TCB
 * rules follow Intel's QVL and dcap-qvl. Chains go through OpenSSL's verifier anchored at the
 * caller's root only; CRL signatures, validity and revocation are checked here explicitly so
 * that each gets its own checklist line with the reason. */
#include "tdx/collateral.h"

#include <json-c/json.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hex.h"
#include "core/json.h"
#include "core/pem.h"
#include "tdx/pck.h"

#define TDX_TCB_SIGNING_CN "Intel SGX TCB Signing"

struct tdx_collateral {
    char *pck_crl_issuer_chain;
    size_t pck_crl_issuer_chain_len;
    uint8_t *root_ca_crl;
    size_t root_ca_crl_len;
    uint8_t *pck_crl;
    size_t pck_crl_len;
    char *tcb_info_issuer_chain;
    size_t tcb_info_issuer_chain_len;
    char *tcb_info; /* exact signed text */
    size_t tcb_info_len;
    uint8_t tcb_info_sig[64];
    char *qe_identity_issuer_chain;
    size_t qe_identity_issuer_chain_len;
    char *qe_identity;
    size_t qe_identity_len;
    uint8_t qe_identity_sig[64];
};

/* ---- parsing ---- */

static int perr(char *err, size_t errlen, const char *field, const char *why)
{
    if (err && errlen)
        snprintf(err, errlen, "collateral: %s%s%s", field ? field : "", field ? ": " : "", why);
    return -1;
}

static int get_str(json_object *o, const char *key, char **out, size_t *outlen, char *err,
                   size_t errlen)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return perr(err, errlen, key, "missing or not a string");
    size_t n = (size_t)json_object_get_string_len(v);
    const char *s = json_object_get_string(v);
    if (n == 0 || memchr(s, 0, n))
        return perr(err, errlen, key, "empty or contains NUL");
    *out = malloc(n + 1);
    if (!*out)
        return perr(err, errlen, key, "out of memory");
    memcpy(*out, s, n);
    (*out)[n] = 0;
    *outlen = n;
    return 0;
}

static int get_hex(json_object *o, const char *key, uint8_t **out, size_t *outlen, char *err,
                   size_t errlen)
{
    char *s;
    size_t n;
    if (get_str(o, key, &s, &n, err, errlen))
        return -1;
    uint8_t *b = malloc(n / 2 + 1);
    long r = b ? hex_decode(b, n / 2 + 1, s, n) : -1;
    free(s);
    if (r <= 0) {
        free(b);
        return perr(err, errlen, key, "not hex");
    }
    *out = b;
    *outlen = (size_t)r;
    return 0;
}

static int get_sig(json_object *o, const char *key, uint8_t sig[64], char *err, size_t errlen)
{
    uint8_t *b;
    size_t n;
    if (get_hex(o, key, &b, &n, err, errlen))
        return -1;
    if (n != 64) {
        free(b);
        return perr(err, errlen, key, "not 64 bytes (r||s)");
    }
    memcpy(sig, b, 64);
    free(b);
    return 0;
}

static json_object *parse_obj(const char *s, size_t n)
{
    json_object *o = json_parse_strict(s, n);
    if (o && !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        o = NULL;
    }
    return o;
}

static int crl_parses(const uint8_t *der, size_t n)
{
    const unsigned char *p = der;
    X509_CRL *c = n <= INT32_MAX ? d2i_X509_CRL(NULL, &p, (long)n) : NULL;
    int ok = c && p == der + n;
    X509_CRL_free(c);
    ERR_clear_error();
    return ok;
}

int tdx_collateral_parse(const char *json, size_t len, tdx_collateral_t **out, char *err,
                         size_t errlen)
{
    *out = NULL;
    json_object *o = parse_obj(json, len);
    if (!o)
        return perr(err, errlen, NULL, "not a JSON object");
    tdx_collateral_t *c = calloc(1, sizeof *c);
    int rc = -1;
    if (!c) {
        perr(err, errlen, NULL, "out of memory");
        goto out;
    }
    if (get_str(o, "pck_crl_issuer_chain", &c->pck_crl_issuer_chain,
                &c->pck_crl_issuer_chain_len, err, errlen) ||
        get_hex(o, "root_ca_crl", &c->root_ca_crl, &c->root_ca_crl_len, err, errlen) ||
        get_hex(o, "pck_crl", &c->pck_crl, &c->pck_crl_len, err, errlen) ||
        get_str(o, "tcb_info_issuer_chain", &c->tcb_info_issuer_chain,
                &c->tcb_info_issuer_chain_len, err, errlen) ||
        get_str(o, "tcb_info", &c->tcb_info, &c->tcb_info_len, err, errlen) ||
        get_sig(o, "tcb_info_signature", c->tcb_info_sig, err, errlen) ||
        get_str(o, "qe_identity_issuer_chain", &c->qe_identity_issuer_chain,
                &c->qe_identity_issuer_chain_len, err, errlen) ||
        get_str(o, "qe_identity", &c->qe_identity, &c->qe_identity_len, err, errlen) ||
        get_sig(o, "qe_identity_signature", c->qe_identity_sig, err, errlen))
        goto out;
    if (!crl_parses(c->root_ca_crl, c->root_ca_crl_len)) {
        perr(err, errlen, "root_ca_crl", "not a DER CRL");
        goto out;
    }
    if (!crl_parses(c->pck_crl, c->pck_crl_len)) {
        perr(err, errlen, "pck_crl", "not a DER CRL");
        goto out;
    }
    json_object *t = parse_obj(c->tcb_info, c->tcb_info_len);
    json_object *q = parse_obj(c->qe_identity, c->qe_identity_len);
    if (!t || !q) {
        perr(err, errlen, t ? "qe_identity" : "tcb_info", "not a JSON object");
    } else {
        rc = 0;
    }
    json_object_put(t);
    json_object_put(q);
out:
    json_object_put(o);
    if (rc)
        tdx_collateral_free(c);
    else
        *out = c;
    return rc;
}

void tdx_collateral_free(tdx_collateral_t *c)
{
    if (!c)
        return;
    free(c->pck_crl_issuer_chain);
    free(c->root_ca_crl);
    free(c->pck_crl);
    free(c->tcb_info_issuer_chain);
    free(c->tcb_info);
    free(c->qe_identity_issuer_chain);
    free(c->qe_identity);
    free(c);
}

/* ---- raw JSON member (exact served bytes) ---- */

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* Index just past the string starting at s[i] == '"', or 0 when unterminated. */
static size_t skip_string(const char *s, size_t n, size_t i)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return 0;
}

/* Index just past the value starting at s[i], or 0 when malformed. Nesting is bounded. */
static size_t skip_value(const char *s, size_t n, size_t i)
{
    if (i >= n)
        return 0;
    if (s[i] == '"')
        return skip_string(s, n, i);
    if (s[i] != '{' && s[i] != '[') {
        while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' &&
               s[i] != '\n' && s[i] != '\r' && s[i] != '\t')
            i++;
        return i;
    }
    int depth = 0;
    while (i < n) {
        char ch = s[i];
        if (ch == '"') {
            i = skip_string(s, n, i);
            if (!i)
                return 0;
            continue;
        }
        if (ch == '{' || ch == '[') {
            if (++depth > 64)
                return 0;
        } else if (ch == '}' || ch == ']') {
            if (--depth == 0)
                return i + 1;
        }
        i++;
    }
    return 0;
}

int tdx_json_raw_member(const char *s, size_t n, const char *key, size_t *off, size_t *len)
{
    size_t klen = strlen(key);
    size_t i = skip_ws(s, n, 0);
    if (i >= n || s[i] != '{')
        return -1;
    i = skip_ws(s, n, i + 1);
    while (i < n && s[i] == '"') {
        size_t kend = skip_string(s, n, i);
        if (!kend)
            return -1;
        int match = kend - i - 2 == klen && memcmp(s + i + 1, key, klen) == 0;
        i = skip_ws(s, n, kend);
        if (i >= n || s[i] != ':')
            return -1;
        i = skip_ws(s, n, i + 1);
        size_t vend = skip_value(s, n, i);
        if (!vend || vend == i)
            return -1;
        if (match) {
            *off = i;
            *len = vend - i;
            return 0;
        }
        i = skip_ws(s, n, vend);
        if (i < n && s[i] == ',')
            i = skip_ws(s, n, i + 1);
    }
    return -1;
}

int tdx_collateral_build_json(const tdx_collateral_parts_t *p, buf_t *out)
{
    const uint8_t *bins[4] = {p->root_ca_crl, p->pck_crl, p->tcb_info_signature,
                              p->qe_identity_signature};
    size_t lens[4] = {p->root_ca_crl_len, p->pck_crl_len, 64, 64};
    char *hx[4] = {NULL, NULL, NULL, NULL};
    int rc = -1;
    for (int i = 0; i < 4; i++) {
        if (!bins[i] || !(hx[i] = malloc(lens[i] * 2 + 1)))
            goto out;
        hex_encode(hx[i], bins[i], lens[i]);
    }
    if (!p->pck_crl_issuer_chain || !p->tcb_info_issuer_chain || !p->qe_identity_issuer_chain ||
        !p->tcb_info || !p->qe_identity)
        goto out;
    int bad = buf_puts(out, "{\"pck_crl_issuer_chain\":") ||
              buf_json_str(out, p->pck_crl_issuer_chain, strlen(p->pck_crl_issuer_chain)) ||
              buf_printf(out, ",\"root_ca_crl\":\"%s\",\"pck_crl\":\"%s\",", hx[0], hx[1]) ||
              buf_puts(out, "\"tcb_info_issuer_chain\":") ||
              buf_json_str(out, p->tcb_info_issuer_chain, strlen(p->tcb_info_issuer_chain)) ||
              buf_puts(out, ",\"tcb_info\":") ||
              buf_json_str(out, p->tcb_info, p->tcb_info_len) ||
              buf_printf(out, ",\"tcb_info_signature\":\"%s\",", hx[2]) ||
              buf_puts(out, "\"qe_identity_issuer_chain\":") ||
              buf_json_str(out, p->qe_identity_issuer_chain, strlen(p->qe_identity_issuer_chain)) ||
              buf_puts(out, ",\"qe_identity\":") ||
              buf_json_str(out, p->qe_identity, p->qe_identity_len) ||
              buf_printf(out, ",\"qe_identity_signature\":\"%s\"}\n", hx[3]);
    rc = bad ? -1 : 0;
out:
    for (int i = 0; i < 4; i++)
        free(hx[i]);
    return rc;
}

/* ---- verification ---- */

typedef struct vctx {
    const tdx_collateral_t *col;
    const tdx_quote_t *q;
    const uint8_t *root_der;
    size_t root_len;
    X509 *root;
    X509_CRL *root_crl, *pck_crl;
    time_t at;
    checklist_t *cl;
    int failed;
    tdx_tcb_result_t *res;
} vctx_t;

static void line(vctx_t *v, const char *id, chk_status_t st, const char *what, const char *exp,
                 const char *found)
{
    if (st == CHK_FAIL)
        v->failed = 1;
    if (v->cl)
        check_add(v->cl, id, st, what, exp, found);
}

static X509 *load_cert(const uint8_t *p, size_t n)
{
    X509 *x = NULL;
    if (n > INT32_MAX)
        return NULL;
    if (n >= 10 && memmem(p, n, "-----BEGIN", 10)) {
        BIO *b = BIO_new_mem_buf(p, (int)n);
        x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
    } else {
        const unsigned char *d = p;
        x = d2i_X509(NULL, &d, (long)n);
    }
    ERR_clear_error();
    return x;
}

/* An issuer or PCK chain, strictly (core/pem.h); NULL on any defect. */
static STACK_OF(X509) *load_chain(const char *pem, size_t n)
{
    STACK_OF(X509) *sk = NULL;
    pem_chain_read(pem, n, TDX_PCK_CHAIN_MAX_CERTS, &sk);
    return sk;
}

static X509_CRL *load_crl(const uint8_t *der, size_t n)
{
    const unsigned char *p = der;
    X509_CRL *c = d2i_X509_CRL(NULL, &p, (long)n);
    ERR_clear_error();
    return c;
}

static void fmt_time(time_t t, char out[32])
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, 32, "%lld", (long long)t);
}

/* CRL: issued by `issuer`'s name, signed by its key, thisUpdate <= at <= nextUpdate. */
static int crl_check(X509_CRL *crl, X509 *issuer, time_t at, char *why, size_t wl)
{
    time_t t = at;
    if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(issuer)) != 0) {
        snprintf(why, wl, "CRL issuer is not the expected CA");
        return -1;
    }
    EVP_PKEY *k = X509_get0_pubkey(issuer);
    int ok = k && X509_CRL_verify(crl, k) == 1;
    ERR_clear_error();
    if (!ok) {
        snprintf(why, wl, "CRL signature does not verify");
        return -1;
    }
    const ASN1_TIME *tu = X509_CRL_get0_lastUpdate(crl), *nu = X509_CRL_get0_nextUpdate(crl);
    if (!tu || X509_cmp_time(tu, &t) > 0) {
        snprintf(why, wl, "CRL not yet valid");
        return -1;
    }
    if (!nu || X509_cmp_time(nu, &t) < 0) {
        snprintf(why, wl, "CRL expired");
        return -1;
    }
    snprintf(why, wl, "signed by the CA, current");
    return 0;
}

/* Which CRL covers certificates issued by x's issuer: the root CRL or the PCK CRL. */
static X509_CRL *crl_for(vctx_t *v, X509 *x)
{
    const X509_NAME *iss = X509_get_issuer_name(x);
    if (X509_NAME_cmp(iss, X509_get_subject_name(v->root)) == 0)
        return v->root_crl;
    if (v->pck_crl && X509_NAME_cmp(iss, X509_CRL_get_issuer(v->pck_crl)) == 0)
        return v->pck_crl;
    return NULL;
}

/* 0 when no certificate of sk (self-signed ones are checked against the root CRL too) is
 * revoked by the CRL of its issuer; -1 with the reason otherwise. */
static int chain_not_revoked(vctx_t *v, STACK_OF(X509) *sk, char *why, size_t wl)
{
    for (int i = 0; i < sk_X509_num(sk); i++) {
        X509 *x = sk_X509_value(sk, i);
        X509_CRL *crl = crl_for(v, x);
        char cn[96] = "?";
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
        if (!crl) {
            snprintf(why, wl, "no CRL for the issuer of \"%s\"", cn);
            return -1;
        }
        X509_REVOKED *r = NULL;
        if (X509_CRL_get0_by_cert(crl, &r, x) == 1) {
            BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
            char *hx = bn ? BN_bn2hex(bn) : NULL;
            snprintf(why, wl, "\"%s\" (serial %s) is revoked", cn, hx ? hx : "?");
            OPENSSL_free(hx);
            BN_free(bn);
            return -1;
        }
    }
    ERR_clear_error();
    snprintf(why, wl, "%d certificate(s), none revoked", sk_X509_num(sk));
    return 0;
}

/* An issuer chain from the collateral: verifies to the root at `at`, none revoked. Returns
 * the leaf (owned by the caller) when everything holds. */
static X509 *issuer_chain(vctx_t *v, const char *id, const char *what, const char *pem,
                          size_t n)
{
    char why[256];
    STACK_OF(X509) *sk = load_chain(pem, n);
    X509 *leaf = NULL;
    if (!sk) {
        line(v, id, CHK_FAIL, what, "PEM chain to the Intel SGX Root CA", "no certificate");
        return NULL;
    }
    if (tdx_pck_chain_verify((const uint8_t *)pem, n, v->root_der, v->root_len, v->at) != 0) {
        line(v, id, CHK_FAIL, what, "chain to the Intel SGX Root CA, valid at the time",
             "does not verify");
    } else if (chain_not_revoked(v, sk, why, sizeof why) != 0) {
        line(v, id, CHK_FAIL, what, "no certificate revoked", why);
    } else {
        char cn[96] = "?";
        X509_NAME_get_text_by_NID(X509_get_subject_name(sk_X509_value(sk, 0)), NID_commonName,
                                  cn, sizeof cn);
        char found[400];
        snprintf(found, sizeof found, "%s → root; %s", cn, why);
        line(v, id, CHK_PASS, what, "chain to the Intel SGX Root CA, none revoked", found);
        leaf = sk_X509_value(sk, 0);
        X509_up_ref(leaf);
    }
    sk_X509_pop_free(sk, X509_free);
    return leaf;
}

/* ECDSA P-256 raw r||s over text with the certificate's key. */
static int sig_check(X509 *signer, const char *text, size_t n, const uint8_t sig[64])
{
    uint8_t pt[HEX_SIZE(32)];
    size_t ptlen = 0;
    EVP_PKEY *k = X509_get0_pubkey(signer);
    int ok = k && EVP_PKEY_is_a(k, "EC") && EVP_PKEY_get_bits(k) == 256 &&
             EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt,
                                             &ptlen) == 1 &&
             ptlen == 65 && pt[0] == 0x04;
    ERR_clear_error();
    return ok && tdx_p256_verify(pt + 1, (const uint8_t *)text, n, sig) == TDX_OK ? 0 : -1;
}

/* "2025-06-19T10:16:03Z" (optionally with fractional seconds) → time_t. */
static int parse_date(const char *s, time_t *out)
{
    int Y, M, D, h, m, sec, used = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &used) != 6 ||
        used != 19)
        return -1;
    const char *p = s + used;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (strcmp(p, "Z") != 0 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 ||
        sec > 60)
        return -1;
    struct tm tm = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h,
                    .tm_min = m, .tm_sec = sec};
    *out = timegm(&tm);
    return 0;
}

static int jint(json_object *o, const char *key, long long min, long long max, long long *out)
{
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
        return -1;
    long long x = json_object_get_int64(v);
    if (x < min || x > max)
        return -1;
    *out = x;
    return 0;
}

static json_object *jget(json_object *o, const char *key, json_type t)
{
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, t))
        return NULL;
    return v;
}

/* A hex field of exactly n bytes. */
static int jhex(json_object *o, const char *key, uint8_t *out, size_t n)
{
    const char *s = json_get_str(o, key, NULL);
    return s && strlen(s) == 2 * n && hex_decode(out, n, s, 2 * n) == (long)n ? 0 : -1;
}

/* Signed JSON (TCB info or QE identity): chain, signature, dates. Returns the parsed object
 * when the signature verified (the caller still learns of date failures via v->failed). */
static json_object *signed_json(vctx_t *v, const char *name, const char *chain, size_t chain_len,
                                const char *text, size_t text_len, const uint8_t sig[64])
{
    char id[64], what[160], found[160];
    snprintf(id, sizeof id, "tdx.collateral.%s.chain", name);
    snprintf(what, sizeof what, "the %s issuer chain is Intel's, unrevoked", name);
    X509 *signer = issuer_chain(v, id, what, chain, chain_len);
    snprintf(id, sizeof id, "tdx.collateral.%s.signature", name);
    snprintf(what, sizeof what, "Intel's TCB signing key signed the exact %s text", name);
    if (!signer) {
        line(v, id, CHK_SKIP, what, "", "no trusted signer");
        return NULL;
    }
    /* Any certificate under the root verifies as a chain, a platform's PCK leaf included; only
     * Intel's TCB signing certificate may sign TCB info and QE identities (Intel QVL does the
     * same check). */
    char scn[96] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(signer), NID_commonName, scn, sizeof scn);
    if (strcmp(scn, TDX_TCB_SIGNING_CN) != 0) {
        snprintf(found, sizeof found, "signer \"%.80s\" is not the TCB signing certificate", scn);
        X509_free(signer);
        line(v, id, CHK_FAIL, what, "signed by \"" TDX_TCB_SIGNING_CN "\"", found);
        return NULL;
    }
    int sok = sig_check(signer, text, text_len, sig);
    X509_free(signer);
    line(v, id, sok ? CHK_FAIL : CHK_PASS, what, "ECDSA P-256 signature valid",
         sok ? "does not verify" : "valid");
    if (sok)
        return NULL;
    json_object *o = parse_obj(text, text_len);
    snprintf(id, sizeof id, "tdx.collateral.%s.validity", name);
    snprintf(what, sizeof what, "the %s is current at the verification time", name);
    time_t iss, nxt;
    char at_s[32], a[32], b[32];
    fmt_time(v->at, at_s);
    if (!o || parse_date(json_get_str(o, "issueDate", NULL), &iss) || parse_date(json_get_str(o, "nextUpdate", NULL), &nxt)) {
        line(v, id, CHK_FAIL, what, "issueDate and nextUpdate", "missing or malformed");
        json_object_put(o);
        return NULL;
    }
    fmt_time(iss, a);
    fmt_time(nxt, b);
    snprintf(found, sizeof found, "%s … %s, at %s", a, b, at_s);
    line(v, id, iss <= v->at && v->at <= nxt ? CHK_PASS : CHK_FAIL, what,
         "issueDate <= time <= nextUpdate", found);
    return o;
}

static void add_advisories(tdx_tcb_result_t *r, json_object *level)
{
    json_object *a = jget(level, "advisoryIDs", json_type_array);
    size_t n = a ? json_object_array_length(a) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(a, i);
        if (!json_object_is_type(e, json_type_string))
            continue;
        const char *id = json_object_get_string(e);
        size_t il = strlen(id);
        /* dedupe: exact token match in the comma list */
        const char *p = r->advisories;
        int dup = 0;
        while (*p) {
            const char *c = strchr(p, ',');
            size_t tl = c ? (size_t)(c - p) : strlen(p);
            if (tl == il && memcmp(p, id, il) == 0)
                dup = 1;
            p += tl + (c ? 1 : 0);
        }
        size_t cur = strlen(r->advisories);
        if (!dup && cur + il + 2 < sizeof r->advisories)
            snprintf(r->advisories + cur, sizeof r->advisories - cur, "%s%s", cur ? "," : "", id);
    }
}

/* SVNs of a component array (16 entries of {"svn": n}). */
static int comp_svns(json_object *tcb, const char *key, unsigned svn[16])
{
    json_object *a = jget(tcb, key, json_type_array);
    if (!a || json_object_array_length(a) != 16)
        return -1;
    for (size_t i = 0; i < 16; i++) {
        long long x;
        if (jint(json_object_array_get_idx(a, i), "svn", 0, 255, &x))
            return -1;
        svn[i] = (unsigned)x;
    }
    return 0;
}

/* Intel's platform TCB level: the first level whose SGX components and PCESVN are <= the
 * PCK's and whose TDX components are <= TEE_TCB_SVN (bytes 0–1, the module's SVN and
 * version, skipped when the module version is non-zero: tdxModuleIdentities rate those).
 * Returns the level, NULL when none matches; *bad on malformed levels. */
static json_object *match_level(json_object *tcbinfo, const tdx_pck_info_t *pck,
                                const uint8_t tee[16], int *bad)
{
    json_object *levels = jget(tcbinfo, "tcbLevels", json_type_array);
    *bad = !levels;
    size_t n = levels ? json_object_array_length(levels) : 0;
    int start = tee[1] > 0 ? 2 : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *lvl = json_object_array_get_idx(levels, i);
        json_object *tcb = jget(lvl, "tcb", json_type_object);
        unsigned sgx[16], tdx[16];
        long long pcesvn;
        if (!tcb || comp_svns(tcb, "sgxtcbcomponents", sgx) ||
            comp_svns(tcb, "tdxtcbcomponents", tdx) || jint(tcb, "pcesvn", 0, 65535, &pcesvn) ||
            !json_get_str(lvl, "tcbStatus", NULL)) {
            *bad = 1;
            return NULL;
        }
        int ok = pck->pcesvn >= pcesvn;
        for (int k = 0; ok && k < 16; k++)
            ok = pck->comp_svn[k] >= sgx[k];
        for (int k = start; ok && k < 16; k++)
            ok = tee[k] >= tdx[k];
        if (ok)
            return lvl;
    }
    return NULL;
}

/* mrsigner (48 bytes) and masked attributes (8) of a TDX module entry vs the quote. */
static int module_entry_matches(json_object *m, const tdx_quote_t *q)
{
    uint8_t mrs[48], attr[8], mask[8];
    if (jhex(m, "mrsigner", mrs, 48) || jhex(m, "attributes", attr, 8) ||
        jhex(m, "attributesMask", mask, 8))
        return -1;
    if (memcmp(mrs, q->body.mrsignerseam, 48) != 0)
        return 0;
    for (int i = 0; i < 8; i++)
        if ((q->body.seam_attributes[i] & mask[i]) != attr[i])
            return 0;
    return 1;
}

static void check_td_attributes(vctx_t *v)
{
    const char *id = "tdx.collateral.td_attributes";
    const char *what = "the TD is not a debug TD and sets no reserved attribute bit";
    uint64_t a = tdx_td_attributes(v->q);
    const uint64_t reserved = 0x7fffffff2ffffffeull; /* TUD 1–7, SEC 8–27 and 29, OTHER 32–62 */
    char found[96];
    snprintf(found, sizeof found, "TDATTRIBUTES %016llx", (unsigned long long)a);
    if (a & TDX_ATTR_DEBUG)
        line(v, id, CHK_FAIL, what, "DEBUG = 0", found);
    else if (a & reserved)
        line(v, id, CHK_FAIL, what, "reserved bits 0", found);
    else if (!(a & TDX_ATTR_SEPT_VE_DISABLE))
        line(v, id, CHK_WARN, what, "SEPT_VE_DISABLE = 1", found);
    else
        line(v, id, CHK_PASS, what, "DEBUG = 0, reserved 0, SEPT_VE_DISABLE = 1", found);
}

/* TDX module: tdxModule (mrsigner/attributes) and, for a module version > 0, the
 * tdxModuleIdentities entry "TDX_%02X" and its level by the module SVN. */
static void check_module(vctx_t *v, json_object *tcbinfo)
{
    const char *id = "tdx.collateral.tdx_module";
    const char *what = "the TDX module is Intel's and its TCB level is known";
    const uint8_t *tee = v->q->body.tee_tcb_svn;
    json_object *mod = jget(tcbinfo, "tdxModule", json_type_object);
    char found[512];
    /* TDX TCB info v3 always carries tdxModule: without it nothing rates MRSIGNERSEAM. */
    if (!mod || module_entry_matches(mod, v->q) != 1) {
        line(v, id, CHK_FAIL, what, "MRSIGNERSEAM and SEAMATTRIBUTES as tdxModule",
             mod ? "mismatch or malformed tdxModule" : "no tdxModule in the TCB info");
        return;
    }
    json_object *ids = jget(tcbinfo, "tdxModuleIdentities", json_type_array);
    if (tee[1] == 0 || !ids) {
        snprintf(found, sizeof found, "module version %u, SVN %u: rated by the platform level",
                 tee[1], tee[0]);
        line(v, id, CHK_PASS, what, "matching tdxModule", found);
        return;
    }
    char want[8];
    snprintf(want, sizeof want, "TDX_%02X", tee[1]);
    json_object *ent = NULL;
    for (size_t i = 0; i < json_object_array_length(ids); i++) {
        json_object *e = json_object_array_get_idx(ids, i);
        const char *eid = json_get_str(e, "id", NULL);
        if (eid && strcmp(eid, want) == 0)
            ent = e;
    }
    if (!ent || module_entry_matches(ent, v->q) != 1) {
        snprintf(found, sizeof found, "%s %s", want, ent ? "does not match" : "not listed");
        line(v, id, CHK_FAIL, what, "a matching tdxModuleIdentities entry", found);
        return;
    }
    json_object *levels = jget(ent, "tcbLevels", json_type_array);
    size_t n = levels ? json_object_array_length(levels) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *lvl = json_object_array_get_idx(levels, i);
        long long isvsvn;
        const char *st = json_get_str(lvl, "tcbStatus", NULL);
        if (jint(jget(lvl, "tcb", json_type_object), "isvsvn", 0, 255, &isvsvn) || !st) {
            line(v, id, CHK_FAIL, what, "well-formed module tcbLevels", "malformed");
            return;
        }
        if (tee[0] >= isvsvn) {
            snprintf(v->res->module_status, sizeof v->res->module_status, "%s", st);
            add_advisories(v->res, lvl);
            snprintf(found, sizeof found, "%s, SVN %u >= %lld: %s", want, tee[0], isvsvn, st);
            line(v, id, CHK_PASS, what, "a matching module level", found);
            return;
        }
    }
    snprintf(v->res->module_status, sizeof v->res->module_status, "NoMatch");
    snprintf(found, sizeof found, "%s, SVN %u below every level", want, tee[0]);
    line(v, id, CHK_WARN, what, "a matching module level", found);
}

static void check_qe(vctx_t *v, json_object *qe)
{
    const char *id = "tdx.collateral.qe_identity.match";
    const char *what = "the quoting enclave is Intel's TD QE (MRSIGNER, ISVPRODID, masked "
                       "MISCSELECT and ATTRIBUTES)";
    const uint8_t *r = v->q->qe_report;
    uint8_t mrs[32], misc[4], miscm[4], attr[16], attrm[16];
    long long prodid;
    const char *qid = json_get_str(qe, "id", NULL);
    if (!qid || strcmp(qid, "TD_QE") != 0 || jhex(qe, "mrsigner", mrs, 32) ||
        jhex(qe, "miscselect", misc, 4) || jhex(qe, "miscselectMask", miscm, 4) ||
        jhex(qe, "attributes", attr, 16) || jhex(qe, "attributesMask", attrm, 16) ||
        jint(qe, "isvprodid", 0, 65535, &prodid)) {
        line(v, id, CHK_FAIL, what, "a TD_QE identity", "malformed or not TD_QE");
        return;
    }
    /* MISCSELECT is a little-endian u32 in the report; the identity writes it big-endian. */
    uint32_t rm = (uint32_t)r[16] | (uint32_t)r[17] << 8 | (uint32_t)r[18] << 16 |
                  (uint32_t)r[19] << 24;
    uint32_t im = (uint32_t)misc[0] << 24 | (uint32_t)misc[1] << 16 | (uint32_t)misc[2] << 8 |
                  misc[3];
    uint32_t mm = (uint32_t)miscm[0] << 24 | (uint32_t)miscm[1] << 16 | (uint32_t)miscm[2] << 8 |
                  miscm[3];
    int attr_ok = 1;
    for (int i = 0; i < 16; i++)
        attr_ok &= (r[48 + i] & attrm[i]) == attr[i];
    unsigned rprod = (unsigned)(r[TDX_QE_REPORT_ISVPRODID] | r[TDX_QE_REPORT_ISVPRODID + 1] << 8);
    const char *bad = memcmp(r + TDX_QE_REPORT_MRSIGNER, mrs, 32) ? "MRSIGNER differs"
                      : rprod != prodid                            ? "ISVPRODID differs"
                      : (rm & mm) != (im & mm)                     ? "MISCSELECT differs"
                      : !attr_ok                                   ? "ATTRIBUTES differ"
                                                                   : NULL;
    char found[512];
    if (bad) {
        line(v, id, CHK_FAIL, what, "as the QE identity", bad);
        return;
    }
    snprintf(found, sizeof found, "MRSIGNER %.16s…, ISVPRODID %u", json_get_str(qe, "mrsigner", NULL), rprod);
    line(v, id, CHK_PASS, what, "as the QE identity", found);

    id = "tdx.collateral.qe_identity.tcb";
    what = "the QE's ISVSVN has a TCB level";
    unsigned isvsvn = (unsigned)(r[TDX_QE_REPORT_ISVSVN] | r[TDX_QE_REPORT_ISVSVN + 1] << 8);
    json_object *levels = jget(qe, "tcbLevels", json_type_array);
    size_t n = levels ? json_object_array_length(levels) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *lvl = json_object_array_get_idx(levels, i);
        long long lsvn;
        const char *st = json_get_str(lvl, "tcbStatus", NULL);
        if (jint(jget(lvl, "tcb", json_type_object), "isvsvn", 0, 65535, &lsvn) || !st) {
            line(v, id, CHK_FAIL, what, "well-formed QE tcbLevels", "malformed");
            return;
        }
        if (isvsvn >= lsvn) {
            snprintf(v->res->qe_status, sizeof v->res->qe_status, "%s", st);
            add_advisories(v->res, lvl);
            snprintf(found, sizeof found, "ISVSVN %u >= %lld: %s", isvsvn, lsvn, st);
            line(v, id, CHK_PASS, what, "a QE level", found);
            return;
        }
    }
    /* Intel's QVL: an ISVSVN below every level is Revoked. */
    snprintf(v->res->qe_status, sizeof v->res->qe_status, "Revoked");
    snprintf(found, sizeof found, "ISVSVN %u below every level: Revoked", isvsvn);
    line(v, id, CHK_WARN, what, "a QE level", found);
}

/* Intel QVL's convergence of the platform status with an OutOfDate / Revoked module or QE. */
static void converge(char *st, size_t n, const char *other)
{
    if (strcmp(st, "NoMatch") == 0 || !other[0])
        return;
    if (strcmp(other, "Revoked") == 0) {
        snprintf(st, n, "Revoked");
    } else if (strcmp(other, "OutOfDate") == 0) {
        if (!strcmp(st, "UpToDate") || !strcmp(st, "SWHardeningNeeded"))
            snprintf(st, n, "OutOfDate");
        else if (!strcmp(st, "ConfigurationNeeded") ||
                 !strcmp(st, "ConfigurationAndSWHardeningNeeded"))
            snprintf(st, n, "OutOfDateConfigurationNeeded");
    } else if (strcmp(other, "NoMatch") == 0) {
        snprintf(st, n, "NoMatch");
    }
}

/* CRLs: root CRL by the root; PCK CRL by the first certificate of its issuer chain. */
static void check_crls(vctx_t *v)
{
    const tdx_collateral_t *c = v->col;
    char why[160];
    const char *id = "tdx.collateral.root_ca_crl";
    v->root_crl = load_crl(c->root_ca_crl, c->root_ca_crl_len);
    if (!v->root_crl || crl_check(v->root_crl, v->root, v->at, why, sizeof why)) {
        line(v, id, CHK_FAIL, "the root CA CRL is the root's and current",
             "signed by the Intel SGX Root CA, current", v->root_crl ? why : "does not parse");
        X509_CRL_free(v->root_crl);
        v->root_crl = NULL;
        return;
    }
    line(v, id, CHK_PASS, "the root CA CRL is the root's and current",
         "signed by the Intel SGX Root CA, current", why);

    X509 *ca = issuer_chain(v, "tdx.collateral.pck_crl.chain",
                            "the PCK CRL issuer chain is Intel's, unrevoked",
                            c->pck_crl_issuer_chain, c->pck_crl_issuer_chain_len);
    id = "tdx.collateral.pck_crl";
    const char *what = "the PCK CRL is signed by its PCK CA and current";
    X509_CRL *crl = load_crl(c->pck_crl, c->pck_crl_len);
    if (!ca || !crl) {
        line(v, id, CHK_FAIL, what, "signed by the PCK CA, current",
             !crl ? "does not parse" : "no trusted issuer");
        X509_CRL_free(crl);
    } else if (crl_check(crl, ca, v->at, why, sizeof why)) {
        line(v, id, CHK_FAIL, what, "signed by the PCK CA, current", why);
        X509_CRL_free(crl);
    } else {
        char cn[96] = "?";
        X509_NAME_get_text_by_NID(X509_get_subject_name(ca), NID_commonName, cn, sizeof cn);
        char found[512];
        snprintf(found, sizeof found, "%s: %s, %d revoked serials", cn, why,
                 sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)));
        line(v, id, CHK_PASS, what, "signed by the PCK CA, current", found);
        v->pck_crl = crl;
    }
    X509_free(ca);
}

/* The quote's PCK chain against the CRLs, and its leaf's SGX extension. */
static int check_pck(vctx_t *v, tdx_pck_info_t *pck)
{
    char why[256];
    const char *id = "tdx.collateral.pck.revocation";
    const char *what = "no certificate of the quote's PCK chain is revoked";
    STACK_OF(X509) *sk = load_chain((const char *)v->q->pck_chain, v->q->pck_chain_len);
    if (!sk) {
        line(v, id, CHK_FAIL, what, "root CRL for the CA, PCK CRL for the leaf", "no chain");
    } else if (!v->root_crl || !v->pck_crl) {
        line(v, id, CHK_FAIL, what, "root CRL for the CA, PCK CRL for the leaf",
             "no trusted CRL");
    } else {
        int r = chain_not_revoked(v, sk, why, sizeof why);
        line(v, id, r ? CHK_FAIL : CHK_PASS, what, "root CRL for the CA, PCK CRL for the leaf",
             why);
    }
    sk_X509_pop_free(sk, X509_free);

    id = "tdx.collateral.pck.extension";
    what = "the PCK leaf's Intel SGX extension gives FMSPC, PCE-ID and the TCB";
    memset(pck, 0, sizeof *pck);
    if (tdx_pck_chain_parse(v->q->pck_chain, v->q->pck_chain_len, pck, why, sizeof why)) {
        line(v, id, CHK_FAIL, what, "a well-formed SGX extension", why);
        return -1;
    }
    char fm[13], pce[5], comps[40];
    hex_encode_upper(fm, pck->fmspc, 6);
    hex_encode_upper(pce, pck->pceid, 2);
    hex_encode_upper(comps, pck->comp_svn, 16);
    snprintf(v->res->fmspc, sizeof v->res->fmspc, "%s", fm);
    char found[512];
    snprintf(found, sizeof found, "FMSPC %s, PCE-ID %s, PCESVN %u, TCB %s, %s CA", fm, pce,
             pck->pcesvn, comps, tdx_pck_ca_param(pck->ca) ? tdx_pck_ca_param(pck->ca) : "unknown");
    line(v, id, CHK_PASS, what, "a well-formed SGX extension", found);
    return 0;
}

static void check_tcb_info(vctx_t *v, json_object *t, const tdx_pck_info_t *pck, int have_pck)
{
    char found[512];
    const char *id = "tdx.collateral.tcb_info.fmspc";
    const char *what = "the TCB info is the TDX one for this platform (FMSPC, PCE-ID)";
    const char *tid = json_get_str(t, "id", NULL);
    long long ver = 0, evn = 0;
    uint8_t fm[6], pce[2];
    if (!tid || strcmp(tid, "TDX") || jint(t, "version", 3, 1000, &ver) ||
        jhex(t, "fmspc", fm, 6) || jhex(t, "pceId", pce, 2)) {
        line(v, id, CHK_FAIL, what, "id TDX, version >= 3, fmspc, pceId", "not a TDX TCB info v3");
        return;
    }
    if (!jint(t, "tcbEvaluationDataNumber", 0, 0xffffffffll, &evn))
        v->res->tcb_eval_num = (unsigned)evn;
    if (!have_pck) {
        line(v, id, CHK_SKIP, what, "", "no PCK extension");
        return;
    }
    snprintf(found, sizeof found, "tcbInfo FMSPC %s / PCE-ID %s, PCK %s", json_get_str(t, "fmspc", NULL),
             json_get_str(t, "pceId", NULL), v->res->fmspc);
    int ok = memcmp(fm, pck->fmspc, 6) == 0 && memcmp(pce, pck->pceid, 2) == 0;
    line(v, id, ok ? CHK_PASS : CHK_FAIL, what, "equal to the PCK leaf's", found);
    if (!ok)
        return;

    check_module(v, t);

    id = "tdx.collateral.tcb_level";
    what = "a TCB level matches the platform (SGX components, PCESVN, TEE_TCB_SVN)";
    int bad;
    json_object *lvl = match_level(t, pck, v->q->body.tee_tcb_svn, &bad);
    char tee[33];
    hex_encode_upper(tee, v->q->body.tee_tcb_svn, 16);
    if (bad) {
        line(v, id, CHK_FAIL, what, "well-formed tcbLevels", "malformed");
        return;
    }
    if (!lvl) {
        snprintf(v->res->platform_status, sizeof v->res->platform_status, "NoMatch");
        snprintf(found, sizeof found, "no level for PCESVN %u, TEE_TCB_SVN %s", pck->pcesvn, tee);
        line(v, id, CHK_WARN, what, "a matching level", found);
        return;
    }
    const char *st = json_get_str(lvl, "tcbStatus", NULL);
    snprintf(v->res->platform_status, sizeof v->res->platform_status, "%s", st);
    add_advisories(v->res, lvl);
    const char *date = json_get_str(lvl, "tcbDate", NULL);
    snprintf(found, sizeof found, "%s (tcbDate %s), TEE_TCB_SVN %s", st, date ? date : "?", tee);
    line(v, id, CHK_PASS, what, "a matching level", found);
}

int tdx_collateral_verify_ex(const tdx_collateral_t *col, const tdx_quote_t *q,
                             const uint8_t *root_der, size_t root_len, time_t at,
                             checklist_t *cl, tdx_tcb_result_t *res)
{
    tdx_tcb_result_t local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    snprintf(res->status, sizeof res->status, "Unknown");
    if (!col || !q || !q->qe_report || !q->pck_chain || !root_der)
        return -1;
    vctx_t v = {.col = col, .q = q, .root_der = root_der, .root_len = root_len,
                .at = at ? at : time(NULL), .cl = cl, .res = res};
    v.root = load_cert(root_der, root_len);
    if (!v.root) {
        line(&v, "tdx.collateral.root", CHK_FAIL, "the trust anchor parses", "a certificate",
             "does not parse");
        return 1;
    }

    check_crls(&v);
    json_object *t = signed_json(&v, "tcb_info", col->tcb_info_issuer_chain,
                                 col->tcb_info_issuer_chain_len, col->tcb_info, col->tcb_info_len,
                                 col->tcb_info_sig);
    json_object *qe = signed_json(&v, "qe_identity", col->qe_identity_issuer_chain,
                                  col->qe_identity_issuer_chain_len, col->qe_identity,
                                  col->qe_identity_len, col->qe_identity_sig);
    tdx_pck_info_t pck;
    int have_pck = check_pck(&v, &pck) == 0;
    check_td_attributes(&v);
    if (t)
        check_tcb_info(&v, t, &pck, have_pck);
    if (qe)
        check_qe(&v, qe);

    const char *id = "tdx.collateral.tcb_status";
    const char *what = "the platform's TCB status (platform level, TDX module and QE combined)";
    if (!v.failed && res->platform_status[0]) {
        snprintf(res->status, sizeof res->status, "%s", res->platform_status);
        converge(res->status, sizeof res->status, res->module_status);
        converge(res->status, sizeof res->status, res->qe_status);
        char found[1400];
        snprintf(found, sizeof found, "%s (platform %s%s%s, QE %s)%s%s", res->status,
                 res->platform_status, res->module_status[0] ? ", module " : "",
                 res->module_status, res->qe_status[0] ? res->qe_status : "?",
                 res->advisories[0] ? "; advisories " : "", res->advisories);
        line(&v, id, strcmp(res->status, "UpToDate") == 0 ? CHK_PASS : CHK_WARN, what,
             "UpToDate, or a status the policy allows", found);
    } else {
        line(&v, id, CHK_SKIP, what, "", "not evaluated: a collateral check failed");
    }
    json_object_put(t);
    json_object_put(qe);
    X509_CRL_free(v.root_crl);
    X509_CRL_free(v.pck_crl);
    X509_free(v.root);
    return v.failed ? 1 : 0;
}

int tdx_collateral_verify(const tdx_collateral_t *col, const tdx_quote_t *q,
                          const uint8_t *root_der, size_t root_len, time_t at, checklist_t *cl,
                          char status_out[TDX_TCB_STATUS_MAX])
{
    tdx_tcb_result_t r;
    int rc = tdx_collateral_verify_ex(col, q, root_der, root_len, at, cl, &r);
    if (status_out)
        snprintf(status_out, TDX_TCB_STATUS_MAX, "%s", rc == 0 ? r.status : "Invalid");
    return rc;
}

int tdx_tcb_status_allowed(const char *status, const char *allow)
{
    if (!status)
        return 0;
    if (strcmp(status, "UpToDate") == 0)
        return 1;
    size_t sl = strlen(status);
    for (const char *p = allow; p && *p;) {
        const char *c = strchr(p, ',');
        size_t tl = c ? (size_t)(c - p) : strlen(p);
        while (tl && *p == ' ')
            p++, tl--;
        while (tl && p[tl - 1] == ' ')
            tl--;
        if (tl == sl && memcmp(p, status, sl) == 0)
            return 1;
        if (!c)
            break;
        p = c + 1;
    }
    return 0;
}
