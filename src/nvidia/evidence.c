/* NVIDIA GPU evidence payload → checklist: decoding (binary and legacy hex evidence, base64 PEM
 * chains), the chain to the built-in NVIDIA Device Identity CA, the SPDM signature and nonces. */
#include "nvidia/evidence.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "core/hex.h"
#include "core/json.h"
#include "core/pem.h"
#include "nvidia/spdm.h"

#define NV_MAX_EVIDENCE (1u << 20)   /* a report is ~4 KB; anything near 1 MB is not one */
#define NV_MAX_CHAIN_TEXT (1u << 20)
#define NV_MAX_GPUS 64               /* an HGX board has 8; more is not a payload */

X509 *nv_x509_from_pem(const char *pem, size_t len)
{
    if (!pem || len > INT32_MAX)
        return NULL;
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    ERR_clear_error();
    return x;
}

X509 *nv_device_root(void)
{
    return nv_x509_from_pem(nv_device_root_pem, strlen(nv_device_root_pem));
}

json_object *nv_json_parse(const char *p, size_t n)
{
    return json_parse_strict(p, n);
}

static uint8_t *b64_alloc(const char *in, size_t len, size_t *out_len)
{
    size_t cap = len / 4 * 3 + 3;
    uint8_t *out = malloc(cap + 1);
    if (!out)
        return NULL;
    long r = b64_decode(out, cap, in, len);
    if (r < 0) {
        free(out);
        return NULL;
    }
    out[r] = 0;
    *out_len = (size_t)r;
    return out;
}

int nv_evidence_decode(const char *b64, size_t len, uint8_t **out, size_t *out_len, int *legacy)
{
    *out = NULL;
    *out_len = 0;
    *legacy = 0;
    if (!b64 || len == 0 || len > NV_MAX_EVIDENCE)
        return -1;
    size_t n = 0;
    uint8_t *raw = b64_alloc(b64, len, &n);
    if (!raw)
        return -1;
    if (n >= 2 && raw[0] == NV_SPDM_VERSION_11 && raw[1] == NV_SPDM_GET_MEASUREMENTS) {
        *out = raw;
        *out_len = n;
        return 0;
    }
    /* Legacy (nvtrust < 2.0): the base64 wraps the report's hex text, "11e0..." */
    while (n && (raw[n - 1] == '\n' || raw[n - 1] == '\r' || raw[n - 1] == ' '))
        n--;
    if (n >= 4 && n % 2 == 0 && hex_is_hex((const char *)raw, n) &&
        (raw[0] == '1' && raw[1] == '1' && (raw[2] == 'e' || raw[2] == 'E') && raw[3] == '0')) {
        uint8_t *bin = malloc(n / 2);
        long r = bin ? hex_decode(bin, n / 2, (const char *)raw, n) : -1;
        free(raw);
        if (r < 0) {
            free(bin);
            return -1;
        }
        *out = bin;
        *out_len = (size_t)r;
        *legacy = 1;
        return 0;
    }
    free(raw);
    return -1;
}

STACK_OF(X509) *nv_pem_chain_parse(const char *pem, size_t len)
{
    STACK_OF(X509) *sk = NULL;
    if (len <= NV_MAX_CHAIN_TEXT)
        pem_chain_read(pem, len, NV_MAX_CHAIN_CERTS, &sk);
    return sk;
}

STACK_OF(X509) *nv_cert_chain_decode(const char *b64, size_t len)
{
    size_t n = 0;
    if (!b64 || len > NV_MAX_CHAIN_TEXT * 2)
        return NULL;
    uint8_t *pem = b64_alloc(b64, len, &n);
    if (!pem)
        return NULL;
    STACK_OF(X509) *sk = nv_pem_chain_parse((const char *)pem, n);
    free(pem);
    return sk;
}

int nv_chain_verify(STACK_OF(X509) *chain, X509 *root, time_t at, char *err, size_t errcap)
{
    if (errcap)
        err[0] = 0;
    if (!chain || sk_X509_num(chain) < 1 || !root)
        return -1;
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    int rc = -1;
    if (!store || !ctx || !untrusted || X509_STORE_add_cert(store, root) != 1)
        goto out;
    for (int i = 1; i < sk_X509_num(chain); i++)
        if (!sk_X509_push(untrusted, sk_X509_value(chain, i)))
            goto out;
    if (X509_STORE_CTX_init(ctx, store, sk_X509_value(chain, 0), untrusted) != 1)
        goto out;
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
    if (at)
        X509_VERIFY_PARAM_set_time(param, at);
    X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT);
    int v = X509_verify_cert(ctx);
    if (v == 1) {
        rc = 1;
    } else {
        int e = X509_STORE_CTX_get_error(ctx);
        if (errcap)
            snprintf(err, errcap, "%s (depth %d)", X509_verify_cert_error_string(e),
                     X509_STORE_CTX_get_error_depth(ctx));
        rc = 0;
    }
out:
    ERR_clear_error();
    sk_X509_free(untrusted); /* the certificates belong to chain */
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return rc;
}

/* What the lines of one device kind say: id prefix, noun, accepted architectures. */
typedef struct nv_kind {
    const char *prefix, *noun, *arch_words;
    const char *const *archs;
} nv_kind_t;
static const char *const GPU_ARCHS[] = {"HOPPER", "BLACKWELL", NULL};
static const char *const SWITCH_ARCHS[] = {"LS10", NULL};
static const nv_kind_t KIND_GPU = {"gpu", "GPU", "HOPPER or BLACKWELL", GPU_ARCHS};
static const nv_kind_t KIND_SWITCH = {"nvswitch", "NVSwitch", "LS10", SWITCH_ARCHS};

/* The `what` of a line with the kind's noun (one static buffer per call site would be needed
 * for several at once; check_add copies it at once). */
#define W(fmt) (snprintf(what, sizeof what, fmt, k->noun), what)

static void leaf_cn(X509 *x, char *out, size_t cap)
{
    out[0] = 0;
    X509_NAME *n = x ? X509_get_subject_name(x) : NULL;
    if (n && X509_NAME_get_text_by_NID(n, NID_commonName, out, (int)cap) < 0)
        out[0] = 0;
}

static int verify_device(checklist_t *cl, const nv_kind_t *k, int idx, const uint8_t *report,
                         size_t n, int legacy, STACK_OF(X509) *chain, X509 *root,
                         const uint8_t payload_nonce[32], time_t at)
{
    char id[64], exp_hex[HEX_SIZE(32)], got_hex[HEX_SIZE(32)], what[128];
    int parse_err = 0, failed = 0;

    nv_spdm_report_t *r = malloc(sizeof *r);
    if (!r)
        return -1;
    int prc = nv_spdm_parse(report, n, r);
    snprintf(id, sizeof id, "%s.%d.evidence", k->prefix, idx);
    if (prc != NV_SPDM_OK) {
        check_addf(cl, id, CHK_FAIL, W("%s attestation report parses as SPDM 1.1 measurements"),
                   "GET_MEASUREMENTS request + signed MEASUREMENTS response", "%s (%zu bytes)",
                   nv_spdm_strerror(prc), n);
        parse_err = 1;
    } else {
        char drv[64] = "?", vb[32] = "?";
        nv_spdm_driver_version(r, drv, sizeof drv);
        nv_spdm_vbios_version(r, vb, sizeof vb);
        char ver[128] = ""; /* an NVSwitch's report carries neither: said for GPUs only */
        if (strcmp(k->prefix, "gpu") == 0 || strcmp(drv, "?") != 0 || strcmp(vb, "?") != 0)
            snprintf(ver, sizeof ver, ", driver %s, VBIOS %s", drv, vb);
        check_addf(cl, id, CHK_PASS, W("%s attestation report parses as SPDM 1.1 measurements"),
                   "GET_MEASUREMENTS request + signed MEASUREMENTS response",
                   "%zu bytes%s, %u measurement blocks%s", n, legacy ? " (legacy hex encoding)" : "",
                   r->n_blocks, ver);
    }

    /* Certificate chain */
    snprintf(id, sizeof id, "%s.%d.cert_chain", k->prefix, idx);
    X509 *leaf = chain && sk_X509_num(chain) > 0 ? sk_X509_value(chain, 0) : NULL;
    if (!leaf) {
        check_add(cl, id, CHK_FAIL, W("%s certificate chain verifies to the NVIDIA Device Identity CA"),
                  "base64 PEM chain, leaf first", "certificate chain could not be decoded");
        parse_err = 1;
    } else {
        char err[160], cn[96];
        int v = nv_chain_verify(chain, root, at, err, sizeof err);
        leaf_cn(leaf, cn, sizeof cn);
        if (v == 1) {
            check_addf(cl, id, CHK_PASS, W("%s certificate chain verifies to the NVIDIA Device Identity CA"),
                       "chain to the built-in root", "%d certificates, leaf \"%s\"",
                       sk_X509_num(chain), cn);
        } else {
            check_addf(cl, id, CHK_FAIL, W("%s certificate chain verifies to the NVIDIA Device Identity CA"),
                       "chain to the built-in root", "%s", v == 0 ? err : "verification error");
            failed = 1;
        }
    }

    /* SPDM signature with the leaf key */
    snprintf(id, sizeof id, "%s.%d.spdm_signature", k->prefix, idx);
    if (prc != NV_SPDM_OK || !leaf) {
        check_add(cl, id, CHK_FAIL, W("SPDM measurements are signed by the %s's leaf key"),
                  "ECDSA P-384 / SHA-384", "not checked: report or chain unusable");
    } else {
        EVP_PKEY *key = X509_get0_pubkey(leaf);
        int v = nv_spdm_verify_signature(r, key);
        if (v == 1)
            check_addf(cl, id, CHK_PASS, W("SPDM measurements are signed by the %s's leaf key"),
                       "ECDSA P-384 / SHA-384", "valid over %zu signed bytes", r->signed_len);
        else {
            check_add(cl, id, CHK_FAIL, W("SPDM measurements are signed by the %s's leaf key"),
                      "ECDSA P-384 / SHA-384",
                      v == 0 ? "signature does not verify" : "leaf key is not EC P-384");
            failed = 1;
        }
        ERR_clear_error();
    }

    /* Nonce inside the report (request bytes 4..35) */
    snprintf(id, sizeof id, "%s.%d.nonce", k->prefix, idx);
    if (prc != NV_SPDM_OK && n < NV_SPDM_REQ_LEN) {
        check_add(cl, id, CHK_FAIL, W("%s report carries the payload nonce"), NULL,
                  "report too short");
    } else if (!payload_nonce) {
        hex_encode(got_hex, report + 4, 32);
        check_add(cl, id, CHK_SKIP, W("%s report carries the payload nonce"), "no payload nonce",
                  got_hex);
    } else {
        hex_encode(exp_hex, payload_nonce, 32);
        hex_encode(got_hex, report + 4, 32);
        int eq = memcmp(report + 4, payload_nonce, 32) == 0;
        check_add(cl, id, eq ? CHK_PASS : CHK_FAIL, W("%s report carries the payload nonce"),
                  exp_hex, got_hex);
        if (!eq)
            failed = 1;
    }
    free(r);
    return parse_err ? -1 : failed ? 1 : 0;
}

int nv_verify_gpu(checklist_t *cl, int idx, const uint8_t *report, size_t n, int legacy,
                  STACK_OF(X509) *chain, X509 *root, const uint8_t payload_nonce[32], time_t at)
{
    return verify_device(cl, &KIND_GPU, idx, report, n, legacy, chain, root, payload_nonce, at);
}

static int nonce_parse(const char *s, size_t n, uint8_t out[32])
{
    return s && n == 64 && hex_decode(out, 32, s, 64) == 32 ? 0 : -1;
}

static int verify_payload(const char *payload_json, size_t len, const uint8_t expected_nonce[32],
                          time_t at, X509 *root, const nv_kind_t *k, size_t *count_out,
                          checklist_t *cl)
{
    char id[64], what[128];
    if (count_out)
        *count_out = 0;
    json_object *doc = nv_json_parse(payload_json, len);
    json_object *list = NULL;
    int is_list = 0;
    if (doc && json_object_is_type(doc, json_type_object))
        json_object_object_get_ex(doc, "evidence_list", &list);
    else if (doc && json_object_is_type(doc, json_type_array)) {
        list = doc; /* nvattest collect-evidence: each item carries nonce and arch */
        is_list = 1;
    }
    if (!list || !json_object_is_type(list, json_type_array) ||
        json_object_array_length(list) > NV_MAX_GPUS) {
        check_add(cl, (snprintf(id, sizeof id, "%s.payload.format", k->prefix), id), CHK_FAIL, W("%s evidence payload is well-formed JSON"),
                  "{\"nonce\",\"evidence_list\",\"arch\"}",
                  !doc ? "not JSON" : list ? "more than 64 devices" : "no evidence_list array");
        json_object_put(doc);
        return -1;
    }
    size_t count = json_object_array_length(list);
    if (count_out)
        *count_out = count;
    check_addf(cl, (snprintf(id, sizeof id, "%s.payload.format", k->prefix), id), CHK_PASS, W("%s evidence payload is well-formed JSON"),
               "{\"nonce\",\"evidence_list\",\"arch\"}", "%s, %zu item(s)",
               is_list ? "nvattest evidence list" : "NRAS-shaped payload", count);

    int parse_err = 0, failed = 0;
    char exp_hex[HEX_SIZE(32)], found[256];

    /* Payload nonce */
    uint8_t nonce[32];
    int have_nonce = 0;
    {
        size_t nl = 0;
        const char *ns = json_get_str(is_list ? json_object_array_get_idx(list, 0) : doc, "nonce", &nl);
        int agree = 1;
        if (is_list)
            for (size_t i = 1; i < count; i++) {
                size_t l2 = 0;
                const char *s2 = json_get_str(json_object_array_get_idx(list, i), "nonce", &l2);
                if (!s2 || !ns || l2 != nl || strncasecmp(s2, ns, nl) != 0)
                    agree = 0;
            }
        have_nonce = nonce_parse(ns, nl, nonce) == 0;
        if (!have_nonce || !agree) {
            check_add(cl, (snprintf(id, sizeof id, "%s.payload.nonce", k->prefix), id), CHK_FAIL, "payload nonce is the expected nonce",
                      "64 hex digits", !have_nonce ? "missing or malformed" : "items disagree");
            parse_err = 1;
            have_nonce = 0;
        } else if (!expected_nonce) {
            hex_encode(found, nonce, 32);
            check_add(cl, (snprintf(id, sizeof id, "%s.payload.nonce", k->prefix), id), CHK_SKIP, "payload nonce is the expected nonce",
                      "no expected nonce given", found);
        } else {
            hex_encode(exp_hex, expected_nonce, 32);
            hex_encode(found, nonce, 32);
            int eq = memcmp(nonce, expected_nonce, 32) == 0;
            check_add(cl, (snprintf(id, sizeof id, "%s.payload.nonce", k->prefix), id), eq ? CHK_PASS : CHK_FAIL,
                      "payload nonce is the expected nonce", exp_hex, found);
            failed |= !eq;
        }
    }

    /* arch */
    {
        const char *arch = json_get_str(is_list ? json_object_array_get_idx(list, 0) : doc, "arch", NULL);
        int agree = 1;
        if (is_list)
            for (size_t i = 1; i < count; i++) {
                const char *a2 = json_get_str(json_object_array_get_idx(list, i), "arch", NULL);
                if (!a2 || !arch || strcmp(a2, arch) != 0)
                    agree = 0;
            }
        if (!arch || !*arch || !agree) {
            check_add(cl, (snprintf(id, sizeof id, "%s.payload.arch", k->prefix), id), CHK_FAIL, W("payload names the %s architecture"),
                      k->arch_words, !arch || !*arch ? "missing" : "items disagree");
            failed = 1;
        } else {
            int known = 0;
            for (const char *const *a = k->archs; *a && !known; a++)
                known = strcmp(arch, *a) == 0;
            check_add(cl, (snprintf(id, sizeof id, "%s.payload.arch", k->prefix), id), known ? CHK_PASS : CHK_WARN,
                      W("payload names the %s architecture"), k->arch_words, arch);
        }
    }

    if (count == 0) {
        check_add(cl, (snprintf(id, sizeof id, "%s.payload.evidence_list", k->prefix), id), CHK_FAIL, W("payload carries %s evidence"),
                  ">= 1 GPU", "empty list");
        failed = 1;
    } else {
        check_addf(cl, (snprintf(id, sizeof id, "%s.payload.evidence_list", k->prefix), id), CHK_PASS, W("payload carries %s evidence"),
                   k->prefix[0] == 'g' ? ">= 1 GPU" : ">= 1 NVSwitch", "%zu %s(s)", count, k->noun);
    }

    for (size_t i = 0; i < count; i++) {
        json_object *it = json_object_array_get_idx(list, i);
        size_t el = 0, cl_len = 0;
        const char *ev = json_get_str(it, "evidence", &el);
        const char *cert = json_get_str(it, "certificate", &cl_len);
        uint8_t *rep = NULL;
        size_t rn = 0;
        int legacy = 0;
        if (!ev || nv_evidence_decode(ev, el, &rep, &rn, &legacy) != 0) {
            snprintf(id, sizeof id, "%s.%zu.evidence", k->prefix, i);
            check_add(cl, id, CHK_FAIL, W("%s attestation report parses as SPDM 1.1 measurements"),
                      "base64 of the binary report (or of its hex text)",
                      ev ? "evidence does not decode" : "no evidence string");
            parse_err = 1;
            continue;
        }
        STACK_OF(X509) *chain = cert ? nv_cert_chain_decode(cert, cl_len) : NULL;
        int rc = verify_device(cl, k, (int)i, rep, rn, legacy, chain, root,
                               have_nonce ? nonce : NULL, at);
        if (rc < 0)
            parse_err = 1;
        else if (rc > 0)
            failed = 1;
        if (!have_nonce)
            failed = 1; /* the GPU nonce line could not be judged */
        sk_X509_pop_free(chain, X509_free);
        free(rep);
    }
    json_object_put(doc);
    return parse_err ? -1 : failed ? 1 : 0;
}

int nv_verify_payload_root(const char *payload_json, size_t len, const uint8_t expected_nonce[32],
                           time_t at, X509 *root, checklist_t *cl)
{
    return verify_payload(payload_json, len, expected_nonce, at, root, &KIND_GPU, NULL, cl);
}

int nv_verify_devices(const char *payload_json, size_t len, const uint8_t expected_nonce[32],
                      time_t at, int switches, size_t *count, checklist_t *cl)
{
    const nv_kind_t *k = switches ? &KIND_SWITCH : &KIND_GPU;
    char id[64];
    X509 *root = nv_device_root();
    if (!root) {
        snprintf(id, sizeof id, "%s.payload.format", k->prefix);
        check_add(cl, id, CHK_FAIL, "built-in NVIDIA root loads", NULL,
                  "cannot load the built-in root");
        return -1;
    }
    int rc = verify_payload(payload_json, len, expected_nonce, at, root, k, count, cl);
    X509_free(root);
    return rc;
}

int nv_verify_payload(const char *payload_json, size_t len, const uint8_t expected_nonce[32],
                      time_t at, checklist_t *cl)
{
    X509 *root = nv_device_root();
    if (!root) {
        check_add(cl, "gpu.payload.format", CHK_FAIL, "built-in NVIDIA root loads", NULL,
                  "cannot load the built-in root");
        return -1;
    }
    int rc = nv_verify_payload_root(payload_json, len, expected_nonce, at, root, cl);
    X509_free(root);
    return rc;
}
