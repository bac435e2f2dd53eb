/* NRAS v3 detached-EAT verification: compact JWS parsing, ES384 with a JWKS key chosen by kid,
 * the overall token's claims, and the submods digests over the per-GPU JWTs. */
#include "nvidia/nras.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "core/hex.h"
#include "core/json.h"
#include "core/sha.h"
#include "nvidia/evidence.h"
#include "nvidia/spdm.h"

#define NV_JWT_MAX (1u << 20)
#define NV_NRAS_MAX_GPUS 64

long nv_b64url_decode(uint8_t *out, size_t cap, const char *in, size_t len)
{
    while (len > 0 && in[len - 1] == '=')
        len--;
    char *tmp = malloc(len + 1);
    if (!tmp)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '+' || c == '/') { /* not in the url alphabet */
            free(tmp);
            return -1;
        }
        tmp[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    long r = b64_decode(out, cap, tmp, len);
    free(tmp);
    return r;
}

void nv_b64url_encode(char *out, const uint8_t *in, size_t n)
{
    b64_encode(out, in, n);
    size_t k = strlen(out);
    while (k && out[k - 1] == '=')
        out[--k] = 0;
    for (size_t i = 0; i < k; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
}

static json_object *b64url_json(const char *p, size_t n)
{
    uint8_t *buf = malloc(n / 4 * 3 + 4);
    if (!buf)
        return NULL;
    long r = nv_b64url_decode(buf, n / 4 * 3 + 3, p, n);
    json_object *o = r >= 0 ? nv_json_parse((const char *)buf, (size_t)r) : NULL;
    free(buf);
    if (o && !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        o = NULL;
    }
    return o;
}

int nv_jwt_parse(const char *jwt, size_t len, nv_jwt_t *j)
{
    memset(j, 0, sizeof *j);
    if (!jwt || len == 0 || len > NV_JWT_MAX)
        return -1;
    const char *d1 = memchr(jwt, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - jwt)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - jwt)))
        return -1;
    j->text = jwt;
    j->len = len;
    j->signing_len = (size_t)(d2 - jwt);
    j->header = b64url_json(jwt, (size_t)(d1 - jwt));
    j->claims = b64url_json(d1 + 1, (size_t)(d2 - d1 - 1));
    size_t sl = len - (size_t)(d2 + 1 - jwt);
    long r = sl <= 180 ? nv_b64url_decode(j->sig, sizeof j->sig, d2 + 1, sl) : -1;
    if (!j->header || !j->claims || r < 0) {
        nv_jwt_free(j);
        return -1;
    }
    j->sig_len = (size_t)r;
    const char *alg = json_get_str(j->header, "alg", NULL), *kid = json_get_str(j->header, "kid", NULL);
    snprintf(j->alg, sizeof j->alg, "%s", alg ? alg : "");
    snprintf(j->kid, sizeof j->kid, "%s", kid ? kid : "");
    return 0;
}

void nv_jwt_free(nv_jwt_t *j)
{
    json_object_put(j->header);
    json_object_put(j->claims);
    memset(j, 0, sizeof *j);
}

static EVP_PKEY *ec_key_from_xy(const char *xs, const char *ys)
{
    uint8_t pt[1 + 48 + 48];
    size_t xl = strlen(xs), yl = strlen(ys);
    pt[0] = 0x04;
    if (nv_b64url_decode(pt + 1, 48, xs, xl) != 48 || nv_b64url_decode(pt + 49, 48, ys, yl) != 48)
        return NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pc = NULL;
    EVP_PKEY *key = NULL;
    if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "P-384", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt))
        goto out;
    params = OSSL_PARAM_BLD_to_param(bld);
    pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!params || !pc || EVP_PKEY_fromdata_init(pc) != 1 ||
        EVP_PKEY_fromdata(pc, &key, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        EVP_PKEY_free(key);
        key = NULL;
    }
out:
    EVP_PKEY_CTX_free(pc);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    ERR_clear_error();
    return key;
}

static EVP_PKEY *key_from_x5c(json_object *x5c)
{
    if (!json_object_is_type(x5c, json_type_array) || json_object_array_length(x5c) < 1)
        return NULL;
    json_object *c0 = json_object_array_get_idx(x5c, 0);
    if (!json_object_is_type(c0, json_type_string))
        return NULL;
    size_t n = (size_t)json_object_get_string_len(c0);
    uint8_t *der = malloc(n / 4 * 3 + 4);
    long r = der ? b64_decode(der, n / 4 * 3 + 3, json_object_get_string(c0), n) : -1;
    EVP_PKEY *key = NULL;
    if (r > 0) {
        const uint8_t *q = der;
        X509 *x = d2i_X509(NULL, &q, r);
        if (x && q == der + r)
            key = X509_get_pubkey(x);
        X509_free(x);
    }
    free(der);
    ERR_clear_error();
    return key;
}

int nv_jwks_key(const char *jwks_json, size_t len, const char *kid, EVP_PKEY **out)
{
    *out = NULL;
    json_object *doc = nv_json_parse(jwks_json, len), *keys = NULL;
    if (!doc || !json_object_is_type(doc, json_type_object) ||
        !json_object_object_get_ex(doc, "keys", &keys) ||
        !json_object_is_type(keys, json_type_array)) {
        json_object_put(doc);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < json_object_array_length(keys); i++) {
        json_object *k = json_object_array_get_idx(keys, i), *x5c = NULL;
        const char *kk = json_get_str(k, "kid", NULL);
        if (!kk || !kid || strcmp(kk, kid) != 0)
            continue;
        rc = -1;
        const char *kty = json_get_str(k, "kty", NULL), *crv = json_get_str(k, "crv", NULL);
        const char *xs = json_get_str(k, "x", NULL), *ys = json_get_str(k, "y", NULL);
        if (!kty || strcmp(kty, "EC") != 0 || (crv && strcmp(crv, "P-384") != 0))
            break;
        EVP_PKEY *kxy = xs && ys ? ec_key_from_xy(xs, ys) : NULL;
        EVP_PKEY *kc = json_object_object_get_ex(k, "x5c", &x5c) ? key_from_x5c(x5c) : NULL;
        if ((xs || ys) && !kxy) {
            EVP_PKEY_free(kc);
            break;
        }
        if (x5c && !kc) {
            EVP_PKEY_free(kxy);
            break;
        }
        if (kxy && kc && EVP_PKEY_eq(kxy, kc) != 1) {
            EVP_PKEY_free(kxy);
            EVP_PKEY_free(kc);
            break;
        }
        EVP_PKEY *key = kxy ? kxy : kc;
        EVP_PKEY_free(key == kxy ? kc : kxy);
        if (!key || EVP_PKEY_get_bits(key) != 384 || !EVP_PKEY_is_a(key, "EC")) {
            EVP_PKEY_free(key);
            break;
        }
        *out = key;
        rc = 1;
        break;
    }
    json_object_put(doc);
    ERR_clear_error();
    return rc;
}

int nv_jwt_verify(const nv_jwt_t *j, EVP_PKEY *key)
{
    if (strcmp(j->alg, "ES384") != 0)
        return 0;
    if (!key || EVP_PKEY_get_bits(key) != 384)
        return -1;
    int rc = nv_ecdsa_verify_raw(key, "SHA384", j->text, j->signing_len, j->sig, j->sig_len);
    ERR_clear_error();
    return rc;
}

/* ---- checklist ------------------------------------------------------------------------ */

typedef struct nras_ctx {
    checklist_t *cl;
    const char *jwks;
    size_t jlen;
    const uint8_t *nonce;
    time_t at;
    int failed, parse_err;
} nras_ctx_t;

static void line(nras_ctx_t *c, const char *who, const char *what_id, chk_status_t st,
                 const char *what, const char *exp, const char *found)
{
    char id[64];
    snprintf(id, sizeof id, "nras.%s.%s", who, what_id);
    check_add(c->cl, id, st, what, exp, found);
    if (st == CHK_FAIL)
        c->failed = 1;
}

static void check_signature(nras_ctx_t *c, const char *who, const nv_jwt_t *j)
{
    static const char what[] = "NRAS token is signed by an NVIDIA JWKS key";
    char found[320];
    if (!c->jwks) {
        line(c, who, "signature", CHK_SKIP, what, "ES384, key by kid", "no JWKS");
        return;
    }
    if (strcmp(j->alg, "ES384") != 0) {
        snprintf(found, sizeof found, "alg \"%s\"", j->alg);
        line(c, who, "signature", CHK_FAIL, what, "ES384, key by kid", found);
        return;
    }
    EVP_PKEY *key = NULL;
    int k = nv_jwks_key(c->jwks, c->jlen, j->kid, &key);
    if (k <= 0) {
        snprintf(found, sizeof found, "%s kid \"%.200s\"",
                 k == 0 ? "no JWKS key with" : "unusable JWKS key for", j->kid);
        line(c, who, "signature", CHK_FAIL, what, "ES384, key by kid", found);
        if (k < 0)
            c->parse_err = 1;
        return;
    }
    int v = nv_jwt_verify(j, key);
    EVP_PKEY_free(key);
    snprintf(found, sizeof found, "%s (kid %.200s)", v == 1 ? "valid" : "invalid signature", j->kid);
    line(c, who, "signature", v == 1 ? CHK_PASS : CHK_FAIL, what, "ES384, key by kid", found);
}

static int claim_int(json_object *claims, const char *key, int64_t *out)
{
    json_object *v;
    if (!json_object_object_get_ex(claims, key, &v) || !json_object_is_type(v, json_type_int))
        return -1;
    *out = json_object_get_int64(v);
    return 0;
}

static void check_expiry(nras_ctx_t *c, const char *who, const nv_jwt_t *j)
{
    static const char what[] = "NRAS token is within its validity period";
    int64_t exp = 0, nbf = 0, at = (int64_t)(c->at ? c->at : time(NULL));
    char found[128], expected[64];
    snprintf(expected, sizeof expected, "nbf <= %lld < exp", (long long)at);
    if (claim_int(j->claims, "exp", &exp) != 0) {
        line(c, who, "expiry", CHK_FAIL, what, expected, "no exp claim");
        return;
    }
    int has_nbf = claim_int(j->claims, "nbf", &nbf) == 0;
    if (at >= exp)
        snprintf(found, sizeof found, "expired: exp %lld", (long long)exp);
    else if (has_nbf && at < nbf)
        snprintf(found, sizeof found, "not yet valid: nbf %lld", (long long)nbf);
    else {
        snprintf(found, sizeof found, "exp %lld", (long long)exp);
        line(c, who, "expiry", CHK_PASS, what, expected, found);
        return;
    }
    line(c, who, "expiry", CHK_FAIL, what, expected, found);
}

static void check_nonce(nras_ctx_t *c, const char *who, const nv_jwt_t *j)
{
    static const char what[] = "NRAS token's eat_nonce is our nonce";
    const char *n = json_get_str(j->claims, "eat_nonce", NULL);
    char exp_hex[HEX_SIZE(32)];
    if (!c->nonce) {
        line(c, who, "nonce", CHK_SKIP, what, "no expected nonce given", n ? n : "absent");
        return;
    }
    hex_encode(exp_hex, c->nonce, 32);
    int eq = n && strlen(n) == 64 && strcasecmp(n, exp_hex) == 0;
    line(c, who, "nonce", eq ? CHK_PASS : CHK_FAIL, what, exp_hex, n ? n : "absent");
}

static int claim_bool(json_object *claims, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(claims, key, &v) && json_object_is_type(v, json_type_boolean)
               ? json_object_get_boolean(v) : -1;
}

static void check_gpu_claims(nras_ctx_t *c, const char *who, const nv_jwt_t *j)
{
    char bad[256] = "";
    size_t o = 0;
    const char *measres = json_get_str(j->claims, "measres", NULL), *dbg = json_get_str(j->claims, "dbgstat", NULL);
    if (!measres || strcmp(measres, "success") != 0)
        o += (size_t)snprintf(bad + o, sizeof bad - o, "measres=%s ", measres ? measres : "absent");
    if (claim_bool(j->claims, "secboot") != 1)
        o += (size_t)snprintf(bad + o, sizeof bad - o, "secboot!=true ");
    if (!dbg || strcmp(dbg, "disabled") != 0)
        o += (size_t)snprintf(bad + o, sizeof bad - o, "dbgstat=%.32s ", dbg ? dbg : "absent");
    if (claim_bool(j->claims, "x-nvidia-gpu-attestation-report-nonce-match") != 1)
        o += (size_t)snprintf(bad + o, sizeof bad - o, "nonce-match!=true");
    line(c, who, "claims", o ? CHK_FAIL : CHK_PASS, "NRAS judged the GPU genuine and in production state",
         "measres success, secboot true, dbgstat disabled, nonce-match true",
         o ? bad : "as expected");
}

/* submods[name] = ["DIGEST", ["SHA-256", hex]] and hex = sha256(jwt text). */
static void check_digest(nras_ctx_t *c, json_object *submods, const char *name, const char *jwt,
                         size_t jlen)
{
    static const char what[] = "overall token's submods digest covers this GPU's JWT";
    json_object *e = NULL, *d, *alg, *hex;
    char want[HEX_SIZE(48)], found[160];
    const char *h = NULL;
    if (submods && json_object_object_get_ex(submods, name, &e) &&
        json_object_is_type(e, json_type_array) && json_object_array_length(e) == 2 &&
        (d = json_object_array_get_idx(e, 1)) && json_object_is_type(d, json_type_array) &&
        json_object_array_length(d) == 2 && (alg = json_object_array_get_idx(d, 0)) &&
        (hex = json_object_array_get_idx(d, 1)) && json_object_is_type(alg, json_type_string) &&
        json_object_is_type(hex, json_type_string) &&
        json_object_is_type(json_object_array_get_idx(e, 0), json_type_string) &&
        strcmp(json_object_get_string(json_object_array_get_idx(e, 0)), "DIGEST") == 0)
        h = json_object_get_string(hex);
    if (!h) {
        line(c, name, "digest", CHK_FAIL, what, "[\"DIGEST\",[\"SHA-256\",hex]]",
             e ? "malformed submods entry" : "no submods entry");
        return;
    }
    const char *a = json_object_get_string(alg);
    uint8_t md[48];
    size_t mdlen;
    if (strcmp(a, "SHA-256") == 0) {
        sha256(jwt, jlen, md);
        mdlen = 32;
    } else if (strcmp(a, "SHA-384") == 0) {
        sha384(jwt, jlen, md);
        mdlen = 48;
    } else {
        snprintf(found, sizeof found, "unsupported digest \"%.32s\"", a);
        line(c, name, "digest", CHK_FAIL, what, "SHA-256", found);
        return;
    }
    hex_encode(want, md, mdlen);
    int eq = strlen(h) == 2 * mdlen && strcasecmp(h, want) == 0;
    snprintf(found, sizeof found, "%.100s", h);
    line(c, name, "digest", eq ? CHK_PASS : CHK_FAIL, what, want, found);
}

static int gpu_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 32)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_')
            return 0;
    return 1;
}

/* Every per-GPU value must be a parseable JWT under a sane name: the first bad name, or NULL. */
static const char *gpus_malformed(json_object *gpus)
{
    json_object_object_foreach(gpus, key, val) {
        nv_jwt_t g;
        if (!gpu_name_ok(key) || !json_object_is_type(val, json_type_string) ||
            nv_jwt_parse(json_object_get_string(val), (size_t)json_object_get_string_len(val), &g) != 0)
            return key;
        nv_jwt_free(&g);
    }
    return NULL;
}

int nv_verify_nras(const char *response_json, size_t len, const char *jwks_json, size_t jlen,
                   const uint8_t expected_nonce[32], time_t at, checklist_t *cl)
{
    nras_ctx_t c = {cl, jwks_json && jlen ? jwks_json : NULL, jlen, expected_nonce, at, 0, 0};
    json_object *doc = nv_json_parse(response_json, len);
    json_object *head = NULL, *gpus = NULL, *ov = NULL;
    if (doc && json_object_is_type(doc, json_type_array) && json_object_array_length(doc) == 2) {
        head = json_object_array_get_idx(doc, 0);
        gpus = json_object_array_get_idx(doc, 1);
        if (json_object_is_type(head, json_type_array) && json_object_array_length(head) == 2 &&
            json_object_is_type(json_object_array_get_idx(head, 0), json_type_string) &&
            strcmp(json_object_get_string(json_object_array_get_idx(head, 0)), "JWT") == 0)
            ov = json_object_array_get_idx(head, 1);
    }
    nv_jwt_t oj;
    if (!ov || !json_object_is_type(ov, json_type_string) || !json_object_is_type(gpus, json_type_object) ||
        json_object_object_length(gpus) > NV_NRAS_MAX_GPUS ||
        nv_jwt_parse(json_object_get_string(ov), (size_t)json_object_get_string_len(ov), &oj) != 0) {
        check_add(cl, "nras.format", CHK_FAIL, "NRAS response is a detached EAT",
                  "[[\"JWT\", overall], {\"GPU-0\": jwt, ...}]",
                  !doc ? "not JSON" : ov ? "overall token malformed" : "wrong shape");
        json_object_put(doc);
        return -1;
    }
    const char *bad = gpus_malformed(gpus);
    if (bad) {
        check_addf(cl, "nras.format", CHK_FAIL, "NRAS response is a detached EAT",
                   "[[\"JWT\", overall], {\"GPU-0\": jwt, ...}]", "per-GPU entry \"%.32s\" malformed",
                   bad);
        nv_jwt_free(&oj);
        json_object_put(doc);
        return -1;
    }
    check_addf(cl, "nras.format", CHK_PASS, "NRAS response is a detached EAT",
               "[[\"JWT\", overall], {\"GPU-0\": jwt, ...}]", "overall token + %d GPU token(s)",
               json_object_object_length(gpus));

    /* overall token */
    check_signature(&c, "overall", &oj);
    const char *iss = json_get_str(oj.claims, "iss", NULL);
    line(&c, "overall", "issuer", iss && strcmp(iss, NV_NRAS_ISSUER) == 0 ? CHK_PASS : CHK_FAIL,
         "NRAS token was issued by NVIDIA's NRAS", NV_NRAS_ISSUER, iss ? iss : "absent");
    check_expiry(&c, "overall", &oj);
    check_nonce(&c, "overall", &oj);
    int res = claim_bool(oj.claims, "x-nvidia-overall-att-result");
    line(&c, "overall", "result", res == 1 ? CHK_PASS : CHK_FAIL,
         "NRAS's overall attestation result is true", "true",
         res == 1 ? "true" : res == 0 ? "false" : "absent");

    /* submods ↔ per-GPU tokens: the same set of names */
    json_object *submods = NULL;
    json_object_object_get_ex(oj.claims, "submods", &submods);
    if (submods && !json_object_is_type(submods, json_type_object))
        submods = NULL;
    {
        int same = submods && json_object_object_length(submods) == json_object_object_length(gpus);
        if (same) {
            json_object_object_foreach(submods, k2, v2) {
                (void)v2;
                if (!json_object_object_get_ex(gpus, k2, NULL))
                    same = 0;
            }
        }
        char found[64];
        snprintf(found, sizeof found, "%d submods, %d GPU tokens",
                 submods ? json_object_object_length(submods) : 0, json_object_object_length(gpus));
        check_add(cl, "nras.submods", same && json_object_object_length(gpus) > 0 ? CHK_PASS : CHK_FAIL,
                  "overall token lists exactly the GPU tokens returned", "one submod per GPU token", found);
        if (!same || json_object_object_length(gpus) == 0)
            c.failed = 1;
    }

    json_object_object_foreach(gpus, name, val) {
        const char *t = json_object_get_string(val);
        size_t tl = (size_t)json_object_get_string_len(val);
        nv_jwt_t g;
        if (nv_jwt_parse(t, tl, &g) != 0) { /* parsed above; cannot happen */
            c.parse_err = 1;
            continue;
        }
        check_digest(&c, submods, name, t, tl);
        check_signature(&c, name, &g);
        check_expiry(&c, name, &g);
        check_nonce(&c, name, &g);
        check_gpu_claims(&c, name, &g);
        nv_jwt_free(&g);
    }
    nv_jwt_free(&oj);
    json_object_put(doc);
    return c.parse_err ? -1 : c.failed ? 1 : 0;
}
