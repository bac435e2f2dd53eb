/* Unit tests for src/nvidia/{spdm,evidence,nras}: real NVIDIA evidence (nvtrust's canned
 * report, 8x H100 nvattest evidence, a legacy private-ml-sdk payload) and real NRAS v3
 * responses (tests/vectors/README.md); tampering, truncation, foreign roots; NRAS JWT
 * signatures with a P-384 key generated here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "at.h"
#include "core/check.h"
#include "core/hex.h"
#include "core/sha.h"
#include "nvidia/evidence.h"
#include "nvidia/nras.h"
#include "nvidia/spdm.h"

#define CANNED_NONCE "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
#define PPCIE_NONCE "4760e30534a0621357d458b1a7936551b5dc4cd1e69718adf7ed9fb0252a537e"
#define LEGACY_NONCE "89d36f654c47ef2bb6ed989c9655ea19548a9057a97ef4e0b7ad54dfcf5e6b00"
#define NRAS1_NONCE "56f5c2c4f23fda73db0536276f39a266569e1517de34023817ce455a79efb6d7"
#define NRAS1_IAT 1759774032
#define NRAS8_NONCE "d6a4f9aa17f488cfe8163dcb47cc4f778d3f1c52d42a1f9e6de5e43077ce05cd"
#define NRAS8_IAT 1759800510
#define T_2026 1780000000  /* 2026-05-28 */
#define T_2021 1609459200  /* 2021-01-01: before the GH100 ICA's notBefore (2022-03-01) */

/* ---- helpers -------------------------------------------------------------------------- */

#include "vectors.h"

static char *load(const char *rel, size_t *len) { return vec_load(rel, len); }

static uint8_t *canned_report_at(AT_PARAMS, size_t *len)
{
    size_t n;
    char *t = load("nvidia/nvtrust/hopperAttestationReport.txt", &n);
    at_assert_non_null(t);
    while (n && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' '))
        n--;
    uint8_t *r = malloc(n / 2);
    long k = hex_decode(r, n / 2, t, n);
    free(t);
    at_assert_true(k > 0);
    *len = (size_t)k;
    return r;
}
#define canned_report(...) canned_report_at(AT_HERE, __VA_ARGS__)

static void nonce_bytes_at(AT_PARAMS, const char *hex, uint8_t out[32])
{
    at_assert_int_equal(hex_decode(out, 32, hex, 64), 32);
}
#define nonce_bytes(...) nonce_bytes_at(AT_HERE, __VA_ARGS__)

static char *b64(const void *p, size_t n)
{
    char *s = malloc(b64_encoded_len(n) + 1);
    b64_encode(s, p, n);
    return s;
}

/* {"nonce","evidence_list":[{"certificate","evidence"}],"arch"} for one GPU. */
static char *make_payload(const char *nonce_hex, const uint8_t *rep, size_t rn, int legacy,
                          const char *chain_pem, size_t chain_len)
{
    char *ev;
    if (legacy) {
        char *hx = malloc(2 * rn + 1);
        hex_encode(hx, rep, rn);
        ev = b64(hx, 2 * rn);
        free(hx);
    } else {
        ev = b64(rep, rn);
    }
    char *cert = b64(chain_pem, chain_len);
    json_object *o = json_object_new_object(), *item = json_object_new_object();
    json_object *list = json_object_new_array();
    json_object_object_add(item, "certificate", json_object_new_string(cert));
    json_object_object_add(item, "evidence", json_object_new_string(ev));
    json_object_array_add(list, item);
    json_object_object_add(o, "nonce", json_object_new_string(nonce_hex));
    json_object_object_add(o, "evidence_list", list);
    json_object_object_add(o, "arch", json_object_new_string("HOPPER"));
    char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    free(ev);
    free(cert);
    return s;
}

#include "checks.h"

static char *pem_of_chain(STACK_OF(X509) *sk, size_t *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    for (int i = 0; i < sk_X509_num(sk); i++)
        PEM_write_bio_X509(b, sk_X509_value(sk, i));
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *out = malloc((size_t)n + 1);
    memcpy(out, p, (size_t)n);
    out[n] = 0;
    *len = (size_t)n;
    BIO_free(b);
    return out;
}

/* ---- SPDM parsing --------------------------------------------------------------------- */

static void test_spdm_parse_canned(void **state)
{
    (void)state;
    size_t n;
    uint8_t *rep = canned_report(&n);
    assert_int_equal(n, 4117);
    nv_spdm_report_t *r = malloc(sizeof *r);
    assert_int_equal(nv_spdm_parse(rep, n, r), NV_SPDM_OK);
    uint8_t want[32];
    nonce_bytes(CANNED_NONCE, want);
    assert_memory_equal(r->req_nonce, want, 32);
    assert_int_equal(r->req_param1, 1);
    assert_int_equal(r->req_param2, 0xff);
    assert_int_equal(r->n_blocks, 64);
    assert_int_equal(r->record_len, 3520);
    for (int i = 0; i < 64; i++) {
        assert_int_equal(r->blocks[i].index, i + 1);
        assert_int_equal(r->blocks[i].spec, 1);
        assert_int_equal(r->blocks[i].value_len, 48);
    }
    assert_int_equal(r->opaque_len, 422);
    assert_int_equal(r->n_fields, 14);
    assert_int_equal(r->signed_len, n - NV_SPDM_SIG_LEN);
    assert_ptr_equal(r->signature, rep + n - 96);
    char drv[32], vb[32], resp[65];
    assert_int_equal(nv_spdm_driver_version(r, drv, sizeof drv), 0);
    assert_string_equal(drv, "550.90.07");
    assert_int_equal(nv_spdm_vbios_version(r, vb, sizeof vb), 0);
    assert_string_equal(vb, "96.00.9F.00.01");
    hex_encode(resp, r->resp_nonce, 32);
    assert_string_equal(resp, "b4b8a06aaaa35542839388e159d447a5d6f6194998fd86513e2d591ccf640985");
    const nv_spdm_field_t *proj = nv_spdm_field(r, NV_OPAQUE_PROJECT);
    assert_non_null(proj);
    assert_memory_equal(proj->value, "1010", 4);
    assert_non_null(nv_spdm_field(r, NV_OPAQUE_FWID));
    assert_int_equal(nv_spdm_field(r, NV_OPAQUE_FWID)->len, 48);
    assert_string_equal(nv_opaque_type_name(NV_OPAQUE_PROTECTED_PCIE_STATUS), "protected_pcie_status");
    assert_string_equal(nv_opaque_type_name(999), "unknown");
    assert_null(nv_spdm_field(r, NV_OPAQUE_SWITCH_PDI));
    free(r);
    free(rep);
}

/* Every prefix is an error (the report must be exact), and so is one trailing byte. */
static void test_spdm_truncation(void **state)
{
    (void)state;
    size_t n;
    uint8_t *rep = canned_report(&n);
    nv_spdm_report_t *r = malloc(sizeof *r);
    for (size_t k = 0; k < n; k++) {
        uint8_t *cut = malloc(k ? k : 1); /* exact size: ASan catches any over-read */
        memcpy(cut, rep, k);
        assert_true(nv_spdm_parse(cut, k, r) < 0);
        free(cut);
    }
    uint8_t *longer = malloc(n + 1);
    memcpy(longer, rep, n);
    longer[n] = 0;
    assert_int_equal(nv_spdm_parse(longer, n + 1, r), NV_SPDM_ERR_TRAILING);
    free(longer);
    assert_int_equal(nv_spdm_parse(NULL, 0, r), NV_SPDM_ERR_TRUNCATED);
    free(r);
    free(rep);
}

/* Lying length fields and header bytes: errors, never a crash. */
static void test_spdm_bad_fields(void **state)
{
    (void)state;
    size_t n;
    uint8_t *rep = canned_report(&n);
    nv_spdm_report_t *r = malloc(sizeof *r);
    uint8_t *m = malloc(n);
    struct { size_t off; uint8_t v; int err; } cases[] = {
        {0, 0x10, NV_SPDM_ERR_REQUEST},  {1, 0xe1, NV_SPDM_ERR_REQUEST},
        {37, 0x12, NV_SPDM_ERR_RESPONSE}, {38, 0x61, NV_SPDM_ERR_RESPONSE},
        {41, 63, NV_SPDM_ERR_BLOCKS},    {41, 65, NV_SPDM_ERR_BLOCKS},
        {44, 0x01, NV_SPDM_ERR_TRUNCATED}, /* record length + 64 KiB */
        {47, 0xff, NV_SPDM_ERR_BLOCKS},  /* first block size */
        {50, 0x00, NV_SPDM_ERR_BLOCKS},  /* DMTF value size disagrees with block size */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(m, rep, n);
        m[cases[i].off] = cases[i].v;
        assert_int_equal(nv_spdm_parse(m, n, r), cases[i].err);
    }
    /* opaque length one more / one less than the real one */
    size_t olen_off = 45 + 3520 + 32;
    memcpy(m, rep, n);
    m[olen_off] = (uint8_t)(m[olen_off] + 1);
    assert_true(nv_spdm_parse(m, n, r) < 0);
    memcpy(m, rep, n);
    m[olen_off] = (uint8_t)(m[olen_off] - 1);
    assert_true(nv_spdm_parse(m, n, r) < 0);
    /* a TLV length inside the opaque data that overruns it */
    memcpy(m, rep, n);
    m[olen_off + 2 + 2] = 0xff;
    m[olen_off + 2 + 3] = 0xff;
    assert_int_equal(nv_spdm_parse(m, n, r), NV_SPDM_ERR_OPAQUE);
    /* every single-byte corruption of the first 200 bytes and of the opaque area: no crash */
    for (size_t off = 0; off < n; off += (off < 200 || off > olen_off) ? 1 : 37) {
        for (int v = 0; v < 256; v += 85) {
            memcpy(m, rep, n);
            m[off] = (uint8_t)v;
            (void)nv_spdm_parse(m, n, r);
        }
    }
    free(m);
    free(r);
    free(rep);
}

static void test_ecdsa_raw_to_der(void **state)
{
    (void)state;
    uint8_t rs[96] = {0}, der[120];
    rs[47] = 1;
    rs[95] = 2;
    int n = nv_ecdsa_raw_to_der(rs, 96, der, sizeof der);
    static const uint8_t want[] = {0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02};
    assert_int_equal(n, 8);
    assert_memory_equal(der, want, 8);
    memset(rs, 0xff, sizeof rs); /* high bit: a leading zero per integer */
    assert_int_equal(nv_ecdsa_raw_to_der(rs, 96, der, sizeof der), 2 + 2 * (2 + 49));
    assert_int_equal(nv_ecdsa_raw_to_der(rs, 95, der, sizeof der), -1);
    assert_int_equal(nv_ecdsa_raw_to_der(rs, 96, der, 10), -1);
}

/* ---- evidence: real vectors ----------------------------------------------------------- */

static void test_canned_payload(void **state)
{
    (void)state;
    size_t n, cn;
    uint8_t *rep = canned_report(&n);
    char *chain = load("nvidia/nvtrust/hopperCertChain.txt", &cn);
    uint8_t nonce[32];
    nonce_bytes(CANNED_NONCE, nonce);
    for (int legacy = 0; legacy <= 1; legacy++) {
        char *p = make_payload(CANNED_NONCE, rep, n, legacy, chain, cn);
        checklist_t cl = CHECKLIST_INIT;
        int rc = nv_verify_payload(p, strlen(p), nonce, 0, &cl);
        if (rc != 0)
            check_dump(&cl);
        assert_int_equal(rc, 0);
        assert_int_equal(check_line_status(&cl, "gpu.payload.nonce"), CHK_PASS);
        assert_int_equal(check_line_status(&cl, "gpu.payload.arch"), CHK_PASS);
        assert_int_equal(check_line_status(&cl, "gpu.0.evidence"), CHK_PASS);
        assert_int_equal(check_line_status(&cl, "gpu.0.cert_chain"), CHK_PASS);
        assert_int_equal(check_line_status(&cl, "gpu.0.spdm_signature"), CHK_PASS);
        assert_int_equal(check_line_status(&cl, "gpu.0.nonce"), CHK_PASS);
        assert_non_null(strstr(check_line_found(&cl, "gpu.0.evidence"), "driver 550.90.07"));
        assert_int_equal(legacy, strstr(check_line_found(&cl, "gpu.0.evidence"), "legacy") != NULL);
        assert_non_null(strstr(check_line_found(&cl, "gpu.0.cert_chain"), "GH100 A01 GSP FMC LF"));
        check_free(&cl);

        /* at a fixed time inside every certificate (notAfter 9999-12-31) */
        assert_int_equal(nv_verify_payload(p, strlen(p), nonce, T_2026, &cl), 0);
        check_free(&cl);
        /* before the GH100 Provisioner ICA existed: the chain is not valid yet */
        assert_int_equal(nv_verify_payload(p, strlen(p), nonce, T_2021, &cl), 1);
        assert_int_equal(check_line_status(&cl, "gpu.0.cert_chain"), CHK_FAIL);
        assert_int_equal(check_line_status(&cl, "gpu.0.spdm_signature"), CHK_PASS);
        check_free(&cl);
        /* no expected nonce: that line is skipped, the rest still passes */
        assert_int_equal(nv_verify_payload(p, strlen(p), NULL, 0, &cl), 0);
        assert_int_equal(check_line_status(&cl, "gpu.payload.nonce"), CHK_SKIP);
        assert_int_equal(check_line_status(&cl, "gpu.0.nonce"), CHK_PASS);
        check_free(&cl);
        free(p);
    }
    free(chain);
    free(rep);
}

/* nvtrust's no-GPU mode sends the canned report with a fresh payload nonce (tee-formats §4.5):
 * the payload nonce matches the client's, the report's does not. */
static void test_wrong_nonce(void **state)
{
    (void)state;
    size_t n, cn;
    uint8_t *rep = canned_report(&n);
    char *chain = load("nvidia/nvtrust/hopperCertChain.txt", &cn);
    const char *fresh = "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e";
    uint8_t fresh_b[32], canned_b[32];
    nonce_bytes(fresh, fresh_b);
    nonce_bytes(CANNED_NONCE, canned_b);
    char *p = make_payload(fresh, rep, n, 0, chain, cn);
    checklist_t cl = CHECKLIST_INIT;
    assert_int_equal(nv_verify_payload(p, strlen(p), fresh_b, 0, &cl), 1);
    assert_int_equal(check_line_status(&cl, "gpu.payload.nonce"), CHK_PASS);
    assert_int_equal(check_line_status(&cl, "gpu.0.spdm_signature"), CHK_PASS);
    assert_int_equal(check_line_status(&cl, "gpu.0.nonce"), CHK_FAIL);
    check_free(&cl);
    /* payload consistent with its report, but not what the client asked for */
    free(p);
    p = make_payload(CANNED_NONCE, rep, n, 0, chain, cn);
    assert_int_equal(nv_verify_payload(p, strlen(p), fresh_b, 0, &cl), 1);
    assert_int_equal(check_line_status(&cl, "gpu.payload.nonce"), CHK_FAIL);
    assert_int_equal(check_line_status(&cl, "gpu.0.nonce"), CHK_PASS);
    check_free(&cl);
    free(p);
    free(chain);
    free(rep);
}

static void test_ppcie_8gpu(void **state)
{
    (void)state;
    size_t n;
    char *j = load("nvidia/nvtrust/ppcie_gpu_evidence_8xH100.json", &n);
    assert_non_null(j);
    uint8_t nonce[32];
    nonce_bytes(PPCIE_NONCE, nonce);
    checklist_t cl = CHECKLIST_INIT;
    int rc = nv_verify_payload(j, n, nonce, 0, &cl);
    if (rc != 0)
        check_dump(&cl);
    assert_int_equal(rc, 0);
    assert_string_equal(check_line_found(&cl, "gpu.payload.evidence_list"), "8 GPU(s)");
    for (int i = 0; i < 8; i++) {
        char id[64];
        snprintf(id, sizeof id, "gpu.%d.spdm_signature", i);
        assert_int_equal(check_line_status(&cl, id), CHK_PASS);
        snprintf(id, sizeof id, "gpu.%d.cert_chain", i);
        assert_int_equal(check_line_status(&cl, id), CHK_PASS);
    }
    check_free(&cl);

    /* the driver and VBIOS versions nvattest printed are the ones inside the signed report */
    json_object *doc = nv_json_parse(j, n);
    assert_non_null(doc);
    nv_spdm_report_t *r = malloc(sizeof *r);
    for (size_t i = 0; i < json_object_array_length(doc); i++) {
        json_object *it = json_object_array_get_idx(doc, i), *v;
        assert_true(json_object_object_get_ex(it, "evidence", &v));
        uint8_t *rep;
        size_t rn;
        int legacy;
        assert_int_equal(nv_evidence_decode(json_object_get_string(v),
                                            (size_t)json_object_get_string_len(v), &rep, &rn, &legacy), 0);
        assert_int_equal(legacy, 0);
        assert_int_equal(nv_spdm_parse(rep, rn, r), 0);
        char drv[32], vb[32];
        assert_int_equal(nv_spdm_driver_version(r, drv, sizeof drv), 0);
        assert_int_equal(nv_spdm_vbios_version(r, vb, sizeof vb), 0);
        assert_true(json_object_object_get_ex(it, "driver_version", &v));
        assert_string_equal(drv, json_object_get_string(v));
        assert_true(json_object_object_get_ex(it, "vbios_version", &v));
        assert_string_equal(vb, json_object_get_string(v));
        assert_non_null(nv_spdm_field(r, NV_OPAQUE_PROTECTED_PCIE_STATUS));
        free(rep);
    }
    free(r);
    json_object_put(doc);

    /* one item's nonce changed: the items disagree */
    char *k = strstr(j, PPCIE_NONCE);
    assert_non_null(k);
    k[0] = '5';
    assert_int_equal(nv_verify_payload(j, n, nonce, 0, &cl), -1);
    assert_int_equal(check_line_status(&cl, "gpu.payload.nonce"), CHK_FAIL);
    check_free(&cl);
    free(j);
}

static void test_legacy_e2e(void **state)
{
    (void)state;
    size_t n;
    char *j = load("nvidia/private-ml-sdk-e2e/nvidia_payload_legacy_b64hex.json", &n);
    assert_non_null(j);
    uint8_t nonce[32];
    nonce_bytes(LEGACY_NONCE, nonce);
    checklist_t cl = CHECKLIST_INIT;
    int rc = nv_verify_payload(j, n, nonce, 0, &cl);
    if (rc != 0)
        check_dump(&cl);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(check_line_found(&cl, "gpu.0.evidence"), "legacy hex encoding"));
    assert_int_equal(check_line_status(&cl, "gpu.0.cert_chain"), CHK_PASS);
    assert_int_equal(check_line_status(&cl, "gpu.0.spdm_signature"), CHK_PASS);
    assert_int_equal(check_line_status(&cl, "gpu.0.nonce"), CHK_PASS);
    check_free(&cl);
    free(j);
}

/* ---- evidence: tampering ------------------------------------------------------------- */

static STACK_OF(X509) *canned_chain_at(AT_PARAMS)
{
    size_t cn;
    char *chain = load("nvidia/nvtrust/hopperCertChain.txt", &cn);
    STACK_OF(X509) *sk = nv_pem_chain_parse(chain, cn);
    free(chain);
    at_assert_non_null(sk);
    at_assert_int_equal(sk_X509_num(sk), 5);
    return sk;
}
#define canned_chain() canned_chain_at(AT_HERE)

static void test_tamper_report(void **state)
{
    (void)state;
    size_t n;
    uint8_t *rep = canned_report(&n);
    uint8_t nonce[32];
    nonce_bytes(CANNED_NONCE, nonce);
    STACK_OF(X509) *sk = canned_chain();
    X509 *root = nv_device_root();
    uint8_t *m = malloc(n);
    size_t sig_off = n - 96;
    size_t step_parsed = 0;
    for (size_t off = 0; off < n; off += (off < 64 ? 1 : 41)) {
        memcpy(m, rep, n);
        m[off] ^= 0x01;
        checklist_t cl = CHECKLIST_INIT;
        int rc = nv_verify_gpu(&cl, 0, m, n, 0, sk, root, nonce, 0);
        assert_int_not_equal(rc, 0);
        if (rc == 1) {
            step_parsed++;
            assert_int_equal(check_line_status(&cl, "gpu.0.cert_chain"), CHK_PASS);
            assert_int_equal(check_line_status(&cl, "gpu.0.spdm_signature"), CHK_FAIL);
        }
        if (off >= 4 && off < 36)
            assert_int_equal(check_line_status(&cl, "gpu.0.nonce"), CHK_FAIL);
        (void)sig_off;
        check_free(&cl);
    }
    assert_true(step_parsed > 90);
    /* the signature itself: r and s */
    size_t sig_offs[] = {sig_off, sig_off + 20, sig_off + 47, sig_off + 48, sig_off + 95};
    for (size_t i = 0; i < sizeof sig_offs / sizeof sig_offs[0]; i++) {
        memcpy(m, rep, n);
        m[sig_offs[i]] ^= 0x80;
        checklist_t cl = CHECKLIST_INIT;
        assert_int_equal(nv_verify_gpu(&cl, 0, m, n, 0, sk, root, nonce, 0), 1);
        assert_int_equal(check_line_status(&cl, "gpu.0.spdm_signature"), CHK_FAIL);
        assert_int_equal(check_line_status(&cl, "gpu.0.nonce"), CHK_PASS);
        check_free(&cl);
    }
    /* untouched: passes through the same function */
    checklist_t cl = CHECKLIST_INIT;
    assert_int_equal(nv_verify_gpu(&cl, 0, rep, n, 0, sk, root, nonce, 0), 0);
    check_free(&cl);
    free(m);
    X509_free(root);
    sk_X509_pop_free(sk, X509_free);
    free(rep);
}

/* A copy of cert i with one byte of its DER flipped (NULL when it no longer parses). */
static X509 *flipped(X509 *x, size_t from_end, int tbs_off)
{
    uint8_t *der = NULL;
    int n = i2d_X509(x, &der);
    assert_true(n > 0);
    size_t off = tbs_off >= 0 ? (size_t)tbs_off : (size_t)n - from_end;
    der[off] ^= 0x01;
    const uint8_t *q = der;
    X509 *y = d2i_X509(NULL, &q, n);
    OPENSSL_free(der);
    return y;
}

static void test_tamper_certs(void **state)
{
    (void)state;
    size_t n;
    uint8_t *rep = canned_report(&n);
    uint8_t nonce[32];
    nonce_bytes(CANNED_NONCE, nonce);
    X509 *root = nv_device_root();
    for (int i = 0; i < 5; i++) {
        /* a byte of the certificate's signature (last DER byte) and one in its serial number
         * (offset 15: inside tbsCertificate.serialNumber for these certificates) */
        for (int which = 0; which < 2; which++) {
            STACK_OF(X509) *sk = canned_chain();
            X509 *y = flipped(sk_X509_value(sk, i), 1, which ? 15 : -1);
            assert_non_null(y);
            X509_free(sk_X509_value(sk, i));
            sk_X509_set(sk, i, y);
            checklist_t cl = CHECKLIST_INIT;
            int rc = nv_verify_gpu(&cl, 0, rep, n, 0, sk, root, nonce, 0);
            if (i < 4) {
                assert_int_equal(rc, 1);
                assert_int_equal(check_line_status(&cl, "gpu.0.cert_chain"), CHK_FAIL);
            } else {
                /* the chain's copy of the root is never trusted: the built-in one is used */
                assert_int_equal(rc, 0);
            }
            check_free(&cl);
            sk_X509_pop_free(sk, X509_free);
        }
    }
    /* the chain without its intermediates, or with the leaf only */
    STACK_OF(X509) *sk = canned_chain();
    X509 *x = sk_X509_delete(sk, 2);
    X509_free(x);
    checklist_t cl = CHECKLIST_INIT;
    assert_int_equal(nv_verify_gpu(&cl, 0, rep, n, 0, sk, root, nonce, 0), 1);
    assert_int_equal(check_line_status(&cl, "gpu.0.cert_chain"), CHK_FAIL);
    check_free(&cl);
    /* leaf swapped for an intermediate: the signature no longer verifies (and that is a CA) */
    x = sk_X509_shift(sk);
    X509_free(x);
    assert_int_equal(nv_verify_gpu(&cl, 0, rep, n, 0, sk, root, nonce, 0), 1);
    assert_int_equal(check_line_status(&cl, "gpu.0.spdm_signature"), CHK_FAIL);
    check_free(&cl);
    /* no chain at all */
    assert_int_equal(nv_verify_gpu(&cl, 0, rep, n, 0, NULL, root, nonce, 0), -1);
    assert_int_equal(check_line_status(&cl, "gpu.0.cert_chain"), CHK_FAIL);
    check_free(&cl);
    sk_X509_pop_free(sk, X509_free);
    X509_free(root);
    free(rep);
}

/* Truncated evidence inside a payload, at many lengths; truncated payload text. */
static void test_truncated_payload(void **state)
{
    (void)state;
    size_t n, cn;
    uint8_t *rep = canned_report(&n);
    char *chain = load("nvidia/nvtrust/hopperCertChain.txt", &cn);
    uint8_t nonce[32];
    nonce_bytes(CANNED_NONCE, nonce);
    for (size_t k = 0; k < n; k += (k < 100 ? 1 : 53)) {
        char *p = make_payload(CANNED_NONCE, rep, k, k & 1, chain, cn);
        checklist_t cl = CHECKLIST_INIT;
        assert_int_equal(nv_verify_payload(p, strlen(p), nonce, 0, &cl), -1);
        check_free(&cl);
        free(p);
    }
    char *p = make_payload(CANNED_NONCE, rep, n, 0, chain, cn);
    size_t pl = strlen(p);
    for (size_t k = 0; k < pl; k += 97) {
        char *cut = malloc(k ? k : 1);
        memcpy(cut, p, k);
        checklist_t cl = CHECKLIST_INIT;
        assert_int_equal(nv_verify_payload(cut, k, nonce, 0, &cl), -1);
        check_free(&cl);
        free(cut);
    }
    /* truncated certificate text (inside the base64 of the PEM) */
    for (size_t k = 0; k < cn; k += 211) {
        char *q = make_payload(CANNED_NONCE, rep, n, 0, chain, k);
        checklist_t cl = CHECKLIST_INIT;
        assert_int_not_equal(nv_verify_payload(q, strlen(q), nonce, 0, &cl), 0);
        check_free(&cl);
        free(q);
    }
    /* shapes that are not payloads */
    const char *bad[] = {"", "{", "[]x", "{}", "{\"evidence_list\":{}}", "null", "[1]",
                         "{\"nonce\":\"" CANNED_NONCE "\",\"evidence_list\":[{}],\"arch\":\"HOPPER\"}",
                         "{\"nonce\":\"zz\",\"evidence_list\":[],\"arch\":\"HOPPER\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        checklist_t cl = CHECKLIST_INIT;
        assert_int_equal(nv_verify_payload(bad[i], strlen(bad[i]), nonce, 0, &cl), -1);
        check_free(&cl);
    }
    /* empty list: parses, fails */
    const char *empty = "{\"nonce\":\"" CANNED_NONCE "\",\"evidence_list\":[],\"arch\":\"HOPPER\"}";
    checklist_t cl = CHECKLIST_INIT;
    assert_int_equal(nv_verify_payload(empty, strlen(empty), nonce, 0, &cl), 1);
    assert_int_equal(check_line_status(&cl, "gpu.payload.evidence_list"), CHK_FAIL);
    check_free(&cl);
    /* evidence that is neither binary nor hex text */
    uint8_t *dummy;
    size_t dn;
    int leg;
    assert_int_equal(nv_evidence_decode("aGVsbG8=", 8, &dummy, &dn, &leg), -1);
    assert_int_equal(nv_evidence_decode("!!!!", 4, &dummy, &dn, &leg), -1);
    assert_int_equal(nv_evidence_decode("MTFlMDF", 7, &dummy, &dn, &leg), -1); /* "11e01": odd */
    free(p);
    free(chain);
    free(rep);
}

/* ---- a chain under another root ------------------------------------------------------ */

static EVP_PKEY *gen_p384_at(AT_PARAMS)
{
    EVP_PKEY *k = EVP_EC_gen("P-384");
    at_assert_non_null(k);
    return k;
}
#define gen_p384() gen_p384_at(AT_HERE)

static void add_ext_at(AT_PARAMS, X509 *x, X509 *issuer, int nid, const char *val)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, val);
    at_assert_non_null(e);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
}
#define add_ext(...) add_ext_at(AT_HERE, __VA_ARGS__)

static X509 *make_cert_at(AT_PARAMS, const char *cn, EVP_PKEY *key, X509 *issuer,
                          EVP_PKEY *issuer_key, int ca)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), ca ? 1 : 2);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600L * 24 * 365);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : nm);
    X509_set_pubkey(x, key);
    X509 *iss = issuer ? issuer : x;
    add_ext_at(AT_PASS, x, iss, NID_basic_constraints,
               ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    add_ext_at(AT_PASS, x, iss, NID_key_usage,
               ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    add_ext_at(AT_PASS, x, iss, NID_subject_key_identifier, "hash");
    add_ext_at(AT_PASS, x, iss, NID_authority_key_identifier, "keyid:always");
    at_assert_true(X509_sign(x, issuer_key, EVP_sha384()) > 0);
    return x;
}
#define make_cert(...) make_cert_at(AT_HERE, __VA_ARGS__)

/* r ‖ s of an ECDSA signature over msg (SHA-384), each padded to half. */
static void sign_raw_at(AT_PARAMS, EVP_PKEY *key, const void *msg, size_t n, uint8_t *rs,
                        size_t half)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t der[160];
    size_t dl = sizeof der;
    at_assert_int_equal(EVP_DigestSignInit_ex(ctx, NULL, "SHA384", NULL, NULL, key, NULL), 1);
    at_assert_int_equal(EVP_DigestSign(ctx, der, &dl, msg, n), 1);
    EVP_MD_CTX_free(ctx);
    const uint8_t *q = der;
    ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &q, (long)dl);
    at_assert_non_null(s);
    BN_bn2binpad(ECDSA_SIG_get0_r(s), rs, (int)half);
    BN_bn2binpad(ECDSA_SIG_get0_s(s), rs + half, (int)half);
    ECDSA_SIG_free(s);
}
#define sign_raw(...) sign_raw_at(AT_HERE, __VA_ARGS__)

static void test_other_root(void **state)
{
    (void)state;
    size_t n;
    uint8_t *rep = canned_report(&n);
    uint8_t nonce[32];
    nonce_bytes(CANNED_NONCE, nonce);
    EVP_PKEY *rk = gen_p384(), *lk = gen_p384();
    X509 *root = make_cert("Not NVIDIA Device Identity CA", rk, NULL, rk, 1);
    X509 *leaf = make_cert("GH100 A01 GSP FMC LF", lk, root, rk, 0);
    /* the canned report re-signed by the foreign leaf */
    sign_raw(lk, rep, n - 96, rep + n - 96, 48);
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509_up_ref(leaf);
    X509_up_ref(root);
    sk_X509_push(sk, leaf);
    sk_X509_push(sk, root);
    size_t pl;
    char *pem = pem_of_chain(sk, &pl);
    char *p = make_payload(CANNED_NONCE, rep, n, 0, pem, pl);

    checklist_t cl = CHECKLIST_INIT;
    assert_int_equal(nv_verify_payload(p, strlen(p), nonce, 0, &cl), 1);
    assert_int_equal(check_line_status(&cl, "gpu.0.cert_chain"), CHK_FAIL);
    assert_int_equal(check_line_status(&cl, "gpu.0.spdm_signature"), CHK_PASS);
    assert_int_equal(check_line_status(&cl, "gpu.0.nonce"), CHK_PASS);
    check_free(&cl);
    /* the same payload against its own root: everything passes (the code path is sound) */
    int rc = nv_verify_payload_root(p, strlen(p), nonce, 0, root, &cl);
    if (rc != 0)
        check_dump(&cl);
    assert_int_equal(rc, 0);
    check_free(&cl);
    /* the real NVIDIA chain with the foreign root as the anchor fails */
    size_t cn;
    char *chain = load("nvidia/nvtrust/hopperCertChain.txt", &cn);
    uint8_t *orig = canned_report(&n);
    char *p2 = make_payload(CANNED_NONCE, orig, n, 0, chain, cn);
    assert_int_equal(nv_verify_payload_root(p2, strlen(p2), nonce, 0, root, &cl), 1);
    assert_int_equal(check_line_status(&cl, "gpu.0.cert_chain"), CHK_FAIL);
    check_free(&cl);
    /* the real NVIDIA chain with its root copy replaced by the foreign root: the copy is never
     * an anchor, the built-in root still completes the chain */
    STACK_OF(X509) *nv = canned_chain();
    X509_free(sk_X509_value(nv, 4));
    X509_up_ref(root);
    sk_X509_set(nv, 4, root);
    X509 *nvroot = nv_device_root();
    assert_int_equal(nv_verify_gpu(&cl, 0, orig, n, 0, nv, nvroot, nonce, 0), 0);
    check_free(&cl);
    /* ...but without the built-in root as anchor (foreign root trusted) it fails */
    assert_int_equal(nv_verify_gpu(&cl, 0, orig, n, 0, nv, root, nonce, 0), 1);
    assert_int_equal(check_line_status(&cl, "gpu.0.cert_chain"), CHK_FAIL);
    check_free(&cl);
    X509_free(nvroot);
    sk_X509_pop_free(nv, X509_free);
    free(p2);
    free(orig);
    free(chain);
    free(p);
    free(pem);
    sk_X509_pop_free(sk, X509_free);
    X509_free(leaf);
    X509_free(root);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(lk);
    free(rep);
}

static void test_roots(void **state)
{
    (void)state;
    X509 *r = nv_device_root();
    assert_non_null(r);
    uint8_t *der = NULL;
    int n = i2d_X509(r, &der);
    char hx[65];
    sha256_hex(der, (size_t)n, hx);
    assert_string_equal(hx, "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48");
    OPENSSL_free(der);
    X509_free(r);
    /* the built-in strings are the nvtrust files byte for byte */
    size_t fl;
    char *f = load("nvidia/nvtrust/verifier_device_root.pem", &fl);
    assert_int_equal(strlen(nv_device_root_pem), fl);
    assert_memory_equal(nv_device_root_pem, f, fl);
    free(f);
    f = load("nvidia/nvtrust/verifier_RIM_root.pem", &fl);
    assert_int_equal(strlen(nv_rim_root_pem), fl);
    assert_memory_equal(nv_rim_root_pem, f, fl);
    free(f);
    X509 *rim = nv_x509_from_pem(nv_rim_root_pem, strlen(nv_rim_root_pem));
    assert_non_null(rim);
    X509_free(rim);
}

/* ---- NRAS: recorded responses (no JWKS) ---------------------------------------------- */

static void test_nras_samples(void **state)
{
    (void)state;
    struct { const char *file, *nonce; time_t iat; int gpus; } s[] = {
        {"nvidia/nras/nras_v3_response_1gpu.json", NRAS1_NONCE, NRAS1_IAT, 1},
        {"nvidia/nras/nras_v3_response_ppcie_8gpu.json", NRAS8_NONCE, NRAS8_IAT, 8},
    };
    for (size_t i = 0; i < 2; i++) {
        size_t n;
        char *j = load(s[i].file, &n);
        assert_non_null(j);
        uint8_t nonce[32], other[32];
        nonce_bytes(s[i].nonce, nonce);
        checklist_t cl = CHECKLIST_INIT;
        int rc = nv_verify_nras(j, n, NULL, 0, nonce, s[i].iat + 60, &cl);
        if (rc != 0)
            check_dump(&cl);
        assert_int_equal(rc, 0);
        assert_int_equal(check_line_status(&cl, "nras.overall.signature"), CHK_SKIP);
        assert_string_equal(check_line_found(&cl, "nras.overall.signature"), "no JWKS");
        assert_int_equal(check_line_status(&cl, "nras.overall.nonce"), CHK_PASS);
        assert_int_equal(check_line_status(&cl, "nras.overall.result"), CHK_PASS);
        assert_int_equal(check_line_status(&cl, "nras.submods"), CHK_PASS);
        for (int g = 0; g < s[i].gpus; g++) {
            char id[64];
            snprintf(id, sizeof id, "nras.GPU-%d.digest", g);
            assert_int_equal(check_line_status(&cl, id), CHK_PASS);
            snprintf(id, sizeof id, "nras.GPU-%d.claims", g);
            assert_int_equal(check_line_status(&cl, id), CHK_PASS);
            snprintf(id, sizeof id, "nras.GPU-%d.signature", g);
            assert_int_equal(check_line_status(&cl, id), CHK_SKIP);
        }
        check_free(&cl);
        /* expired (exp = iat + 3600), and not yet valid */
        assert_int_equal(nv_verify_nras(j, n, NULL, 0, nonce, s[i].iat + 3600, &cl), 1);
        assert_int_equal(check_line_status(&cl, "nras.overall.expiry"), CHK_FAIL);
        check_free(&cl);
        assert_int_equal(nv_verify_nras(j, n, NULL, 0, nonce, s[i].iat - 10, &cl), 1);
        assert_int_equal(check_line_status(&cl, "nras.overall.expiry"), CHK_FAIL);
        check_free(&cl);
        /* today: long expired */
        assert_int_equal(nv_verify_nras(j, n, NULL, 0, nonce, 0, &cl), 1);
        check_free(&cl);
        /* another nonce */
        memcpy(other, nonce, 32);
        other[31] ^= 1;
        assert_int_equal(nv_verify_nras(j, n, NULL, 0, other, s[i].iat + 60, &cl), 1);
        assert_int_equal(check_line_status(&cl, "nras.overall.nonce"), CHK_FAIL);
        assert_int_equal(check_line_status(&cl, "nras.GPU-0.nonce"), CHK_FAIL);
        check_free(&cl);
        /* a JWKS without these kids: signature lines fail */
        const char *jwks = "{\"keys\":[]}";
        assert_int_equal(nv_verify_nras(j, n, jwks, strlen(jwks), nonce, s[i].iat + 60, &cl), 1);
        assert_int_equal(check_line_status(&cl, "nras.overall.signature"), CHK_FAIL);
        check_free(&cl);
        /* the last per-GPU JWT changed by one character of its signature: digest mismatch */
        json_object *doc = nv_json_parse(j, n);
        json_object *gpus = json_object_array_get_idx(doc, 1), *v;
        char key[16];
        snprintf(key, sizeof key, "GPU-%d", s[i].gpus - 1);
        assert_true(json_object_object_get_ex(gpus, key, &v));
        char *t = strdup(json_object_get_string(v));
        size_t tl = strlen(t);
        t[tl - 3] = t[tl - 3] == 'A' ? 'B' : 'A';
        json_object_object_add(gpus, key, json_object_new_string(t));
        const char *txt = json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN);
        assert_int_equal(nv_verify_nras(txt, strlen(txt), NULL, 0, nonce, s[i].iat + 60, &cl), 1);
        char id[64];
        snprintf(id, sizeof id, "nras.%s.digest", key);
        assert_int_equal(check_line_status(&cl, id), CHK_FAIL);
        assert_int_equal(check_line_status(&cl, "nras.GPU-0.digest"), s[i].gpus == 1 ? CHK_FAIL : CHK_PASS);
        check_free(&cl);
        /* a GPU token removed: the submods no longer match the tokens */
        json_object_object_del(gpus, key);
        txt = json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN);
        assert_int_equal(nv_verify_nras(txt, strlen(txt), NULL, 0, nonce, s[i].iat + 60, &cl), 1);
        assert_int_equal(check_line_status(&cl, "nras.submods"), CHK_FAIL);
        check_free(&cl);
        free(t);
        json_object_put(doc);
        /* truncations: parse error or failure, never a crash */
        for (size_t k = 0; k < n; k += 89) {
            char *cut = malloc(k ? k : 1);
            memcpy(cut, j, k);
            assert_int_equal(nv_verify_nras(cut, k, NULL, 0, nonce, s[i].iat + 60, &cl), -1);
            check_free(&cl);
            free(cut);
        }
        free(j);
    }
}

/* ---- NRAS: JWTs signed here ---------------------------------------------------------- */

static char *make_jwt(EVP_PKEY *key, const char *kid, const char *alg, json_object *claims)
{
    char hdr[512];
    snprintf(hdr, sizeof hdr, "{\"kid\":\"%s\",\"alg\":\"%s\"}", kid, alg);
    const char *cj = json_object_to_json_string_ext(claims, JSON_C_TO_STRING_PLAIN);
    size_t hl = strlen(hdr), cl = strlen(cj);
    char *out = malloc((hl + cl) * 2 + 300);
    nv_b64url_encode(out, (const uint8_t *)hdr, hl);
    strcat(out, ".");
    nv_b64url_encode(out + strlen(out), (const uint8_t *)cj, cl);
    uint8_t rs[96];
    sign_raw(key, out, strlen(out), rs, 48);
    strcat(out, ".");
    nv_b64url_encode(out + strlen(out), rs, 96);
    return out;
}

static char *jwk_of_at(AT_PARAMS, EVP_PKEY *key, const char *kid, int with_xy, int with_x5c)
{
    uint8_t pt[97];
    size_t pl = 0;
    at_assert_int_equal(
        EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &pl), 1);
    at_assert_int_equal(pl, 97);
    char x[80], y[80];
    nv_b64url_encode(x, pt + 1, 48);
    nv_b64url_encode(y, pt + 49, 48);
    json_object *k = json_object_new_object();
    json_object_object_add(k, "kty", json_object_new_string("EC"));
    json_object_object_add(k, "crv", json_object_new_string("P-384"));
    json_object_object_add(k, "kid", json_object_new_string(kid));
    if (with_xy) {
        json_object_object_add(k, "x", json_object_new_string(x));
        json_object_object_add(k, "y", json_object_new_string(y));
    }
    if (with_x5c) {
        X509 *c = make_cert_at(AT_PASS, "nras test signer", key, NULL, key, 0);
        uint8_t *der = NULL;
        int dl = i2d_X509(c, &der);
        char *bs = b64(der, (size_t)dl);
        json_object *arr = json_object_new_array();
        json_object_array_add(arr, json_object_new_string(bs));
        json_object_object_add(k, "x5c", arr);
        free(bs);
        OPENSSL_free(der);
        X509_free(c);
    }
    char *s = strdup(json_object_to_json_string_ext(k, JSON_C_TO_STRING_PLAIN));
    json_object_put(k);
    return s;
}
#define jwk_of(...) jwk_of_at(AT_HERE, __VA_ARGS__)

static char *jwks_of(const char *k1, const char *k2)
{
    char *s = malloc(strlen(k1) + (k2 ? strlen(k2) : 0) + 32);
    sprintf(s, "{\"keys\":[%s%s%s]}", k1, k2 ? "," : "", k2 ? k2 : "");
    return s;
}

typedef struct nras_opts {
    const char *nonce;
    int64_t iat;
    int result;
    int bad_digest;
    const char *kid, *alg;
    int measres_fail;
} nras_opts_t;

static char *make_nras(EVP_PKEY *key, const nras_opts_t *o)
{
    const char *kid = o->kid ? o->kid : "nv-eat-kid-test-1";
    const char *alg = o->alg ? o->alg : "ES384";
    json_object *gpus = json_object_new_object(), *sub = json_object_new_object();
    for (int g = 0; g < 2; g++) {
        json_object *c = json_object_new_object();
        json_object_object_add(c, "iss", json_object_new_string(NV_NRAS_ISSUER));
        json_object_object_add(c, "eat_nonce", json_object_new_string(o->nonce));
        json_object_object_add(c, "iat", json_object_new_int64(o->iat));
        json_object_object_add(c, "nbf", json_object_new_int64(o->iat));
        json_object_object_add(c, "exp", json_object_new_int64(o->iat + 3600));
        json_object_object_add(c, "measres", json_object_new_string(o->measres_fail && g ? "fail" : "success"));
        json_object_object_add(c, "secboot", json_object_new_boolean(1));
        json_object_object_add(c, "dbgstat", json_object_new_string("disabled"));
        json_object_object_add(c, "x-nvidia-gpu-attestation-report-nonce-match", json_object_new_boolean(1));
        char *t = make_jwt(key, kid, alg, c);
        char name[16], hx[65];
        snprintf(name, sizeof name, "GPU-%d", g);
        sha256_hex(t, strlen(t), hx);
        if (o->bad_digest && g == 1)
            hx[0] = hx[0] == '0' ? '1' : '0';
        json_object *d = json_object_new_array(), *dd = json_object_new_array();
        json_object_array_add(dd, json_object_new_string("SHA-256"));
        json_object_array_add(dd, json_object_new_string(hx));
        json_object_array_add(d, json_object_new_string("DIGEST"));
        json_object_array_add(d, dd);
        json_object_object_add(sub, name, d);
        json_object_object_add(gpus, name, json_object_new_string(t));
        free(t);
        json_object_put(c);
    }
    json_object *ov = json_object_new_object();
    json_object_object_add(ov, "sub", json_object_new_string("NVIDIA-PLATFORM-ATTESTATION"));
    json_object_object_add(ov, "iss", json_object_new_string(NV_NRAS_ISSUER));
    json_object_object_add(ov, "x-nvidia-overall-att-result", json_object_new_boolean(o->result));
    json_object_object_add(ov, "submods", sub);
    json_object_object_add(ov, "eat_nonce", json_object_new_string(o->nonce));
    json_object_object_add(ov, "iat", json_object_new_int64(o->iat));
    json_object_object_add(ov, "nbf", json_object_new_int64(o->iat));
    json_object_object_add(ov, "exp", json_object_new_int64(o->iat + 3600));
    char *ot = make_jwt(key, kid, alg, ov);
    json_object *doc = json_object_new_array(), *head = json_object_new_array();
    json_object_array_add(head, json_object_new_string("JWT"));
    json_object_array_add(head, json_object_new_string(ot));
    json_object_array_add(doc, head);
    json_object_array_add(doc, gpus);
    char *s = strdup(json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN));
    json_object_put(doc);
    json_object_put(ov);
    free(ot);
    return s;
}

static void test_nras_signed(void **state)
{
    (void)state;
    EVP_PKEY *key = gen_p384(), *other = gen_p384();
    const char *nonce_hex = CANNED_NONCE;
    uint8_t nonce[32], wrong[32];
    nonce_bytes(nonce_hex, nonce);
    memcpy(wrong, nonce, 32);
    wrong[0] ^= 0xff;
    const int64_t iat = 1780000000;
    char *k_xy = jwk_of(key, "nv-eat-kid-test-1", 1, 0);
    char *k_x5c = jwk_of(key, "nv-eat-kid-test-1", 0, 1);
    char *k_both = jwk_of(key, "nv-eat-kid-test-1", 1, 1);
    char *k_other = jwk_of(other, "nv-eat-kid-test-1", 1, 0);
    char *k_decoy = jwk_of(other, "nv-eat-kid-test-0", 1, 0);
    char *jw_good = jwks_of(k_decoy, k_xy);
    char *jw_x5c = jwks_of(k_x5c, NULL);
    char *jw_both = jwks_of(k_both, NULL);
    char *jw_other = jwks_of(k_other, NULL);
    char *jw_nokid = jwks_of(k_decoy, NULL);
    nras_opts_t good = {nonce_hex, iat, 1, 0, NULL, NULL, 0};
    char *r = make_nras(key, &good);
    checklist_t cl = CHECKLIST_INIT;

    const char *jwks_ok[] = {jw_good, jw_x5c, jw_both};
    for (size_t i = 0; i < 3; i++) {
        int rc = nv_verify_nras(r, strlen(r), jwks_ok[i], strlen(jwks_ok[i]), nonce, iat + 10, &cl);
        if (rc != 0)
            check_dump(&cl);
        assert_int_equal(rc, 0);
        assert_int_equal(check_line_status(&cl, "nras.overall.signature"), CHK_PASS);
        assert_int_equal(check_line_status(&cl, "nras.GPU-1.signature"), CHK_PASS);
        assert_int_equal(check_line_status(&cl, "nras.GPU-1.digest"), CHK_PASS);
        check_free(&cl);
    }
    /* signed by another key under the same kid */
    assert_int_equal(nv_verify_nras(r, strlen(r), jw_other, strlen(jw_other), nonce, iat + 10, &cl), 1);
    assert_int_equal(check_line_status(&cl, "nras.overall.signature"), CHK_FAIL);
    assert_int_equal(check_line_status(&cl, "nras.GPU-0.signature"), CHK_FAIL);
    check_free(&cl);
    /* no key with that kid */
    assert_int_equal(nv_verify_nras(r, strlen(r), jw_nokid, strlen(jw_nokid), nonce, iat + 10, &cl), 1);
    assert_int_equal(check_line_status(&cl, "nras.overall.signature"), CHK_FAIL);
    assert_non_null(strstr(check_line_found(&cl, "nras.overall.signature"), "no JWKS key"));
    check_free(&cl);
    /* wrong nonce, expired */
    assert_int_equal(nv_verify_nras(r, strlen(r), jw_good, strlen(jw_good), wrong, iat + 10, &cl), 1);
    assert_int_equal(check_line_status(&cl, "nras.overall.nonce"), CHK_FAIL);
    assert_int_equal(check_line_status(&cl, "nras.overall.signature"), CHK_PASS);
    check_free(&cl);
    assert_int_equal(nv_verify_nras(r, strlen(r), jw_good, strlen(jw_good), nonce, iat + 3600, &cl), 1);
    assert_int_equal(check_line_status(&cl, "nras.overall.expiry"), CHK_FAIL);
    assert_int_equal(check_line_status(&cl, "nras.GPU-0.expiry"), CHK_FAIL);
    check_free(&cl);
    /* a flipped signature character on the overall token */
    {
        json_object *doc = nv_json_parse(r, strlen(r));
        json_object *head = json_object_array_get_idx(doc, 0);
        char *t = strdup(json_object_get_string(json_object_array_get_idx(head, 1)));
        size_t tl = strlen(t);
        t[tl - 10] = t[tl - 10] == 'A' ? 'B' : 'A';
        json_object_array_put_idx(head, 1, json_object_new_string(t));
        const char *txt = json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN);
        assert_int_equal(nv_verify_nras(txt, strlen(txt), jw_good, strlen(jw_good), nonce, iat + 10, &cl), 1);
        assert_int_equal(check_line_status(&cl, "nras.overall.signature"), CHK_FAIL);
        assert_int_equal(check_line_status(&cl, "nras.GPU-0.signature"), CHK_PASS);
        check_free(&cl);
        free(t);
        json_object_put(doc);
    }
    free(r);
    /* submods digest mismatch, result false, a failed GPU, wrong alg */
    nras_opts_t bad = good;
    bad.bad_digest = 1;
    r = make_nras(key, &bad);
    assert_int_equal(nv_verify_nras(r, strlen(r), jw_good, strlen(jw_good), nonce, iat + 10, &cl), 1);
    assert_int_equal(check_line_status(&cl, "nras.GPU-1.digest"), CHK_FAIL);
    assert_int_equal(check_line_status(&cl, "nras.GPU-0.digest"), CHK_PASS);
    assert_int_equal(check_line_status(&cl, "nras.overall.signature"), CHK_PASS);
    check_free(&cl);
    free(r);
    bad = good;
    bad.result = 0;
    r = make_nras(key, &bad);
    assert_int_equal(nv_verify_nras(r, strlen(r), jw_good, strlen(jw_good), nonce, iat + 10, &cl), 1);
    assert_int_equal(check_line_status(&cl, "nras.overall.result"), CHK_FAIL);
    check_free(&cl);
    free(r);
    bad = good;
    bad.measres_fail = 1;
    r = make_nras(key, &bad);
    assert_int_equal(nv_verify_nras(r, strlen(r), jw_good, strlen(jw_good), nonce, iat + 10, &cl), 1);
    assert_int_equal(check_line_status(&cl, "nras.GPU-1.claims"), CHK_FAIL);
    assert_int_equal(check_line_status(&cl, "nras.GPU-0.claims"), CHK_PASS);
    check_free(&cl);
    free(r);
    bad = good;
    bad.alg = "ES256";
    r = make_nras(key, &bad);
    assert_int_equal(nv_verify_nras(r, strlen(r), jw_good, strlen(jw_good), nonce, iat + 10, &cl), 1);
    assert_int_equal(check_line_status(&cl, "nras.overall.signature"), CHK_FAIL);
    check_free(&cl);
    free(r);

    /* a JWKS whose x/y and x5c disagree is unusable; a malformed JWKS too */
    char *mixed = strdup(k_both);
    {
        json_object *a = nv_json_parse(k_x5c, strlen(k_x5c)), *b = nv_json_parse(k_other, strlen(k_other)), *x5c;
        json_object_object_get_ex(a, "x5c", &x5c);
        json_object_object_add(b, "x5c", json_object_get(x5c));
        free(mixed);
        mixed = strdup(json_object_to_json_string_ext(b, JSON_C_TO_STRING_PLAIN));
        json_object_put(a);
        json_object_put(b);
    }
    char *jw_mixed = jwks_of(mixed, NULL);
    EVP_PKEY *pk = NULL;
    assert_int_equal(nv_jwks_key(jw_mixed, strlen(jw_mixed), "nv-eat-kid-test-1", &pk), -1);
    assert_int_equal(nv_jwks_key("{\"keys\":", 8, "x", &pk), -1);
    assert_int_equal(nv_jwks_key(jw_good, strlen(jw_good), "nv-eat-kid-test-9", &pk), 0);
    assert_int_equal(nv_jwks_key(jw_good, strlen(jw_good), "nv-eat-kid-test-1", &pk), 1);
    assert_int_equal(EVP_PKEY_eq(pk, key), 1);
    EVP_PKEY_free(pk);
    r = make_nras(key, &good);
    assert_int_equal(nv_verify_nras(r, strlen(r), jw_mixed, strlen(jw_mixed), nonce, iat + 10, &cl), -1);
    check_free(&cl);
    free(r);
    free(jw_mixed);
    free(mixed);

    /* JWT parser edges */
    nv_jwt_t j;
    const char *badjwt[] = {"", "a", "a.b", "a.b.c.d", "e30.e30", "e30.e30.!!", "W10.e30.", "e30.W10."};
    for (size_t i = 0; i < sizeof badjwt / sizeof badjwt[0]; i++)
        assert_int_equal(nv_jwt_parse(badjwt[i], strlen(badjwt[i]), &j), -1);
    assert_int_equal(nv_jwt_parse("e30.e30.", 8, &j), 0); /* {} . {} . empty signature */
    assert_int_equal(j.sig_len, 0);
    assert_int_equal(nv_jwt_verify(&j, key), 0);  /* no alg */
    nv_jwt_free(&j);

    free(jw_good);
    free(jw_x5c);
    free(jw_both);
    free(jw_other);
    free(jw_nokid);
    free(k_xy);
    free(k_x5c);
    free(k_both);
    free(k_other);
    free(k_decoy);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
}

static void test_b64url(void **state)
{
    (void)state;
    const uint8_t in[] = {0xfb, 0xff, 0xfe, 0x00, 0x01};
    char out[16];
    nv_b64url_encode(out, in, sizeof in);
    assert_string_equal(out, "-__-AAE");
    uint8_t back[8];
    assert_int_equal(nv_b64url_decode(back, sizeof back, out, strlen(out)), 5);
    assert_memory_equal(back, in, 5);
    assert_int_equal(nv_b64url_decode(back, sizeof back, "+//+AAE", 7), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spdm_parse_canned), cmocka_unit_test(test_spdm_truncation),
        cmocka_unit_test(test_spdm_bad_fields),   cmocka_unit_test(test_ecdsa_raw_to_der),
        cmocka_unit_test(test_roots),             cmocka_unit_test(test_canned_payload),
        cmocka_unit_test(test_wrong_nonce),       cmocka_unit_test(test_ppcie_8gpu),
        cmocka_unit_test(test_legacy_e2e),        cmocka_unit_test(test_tamper_report),
        cmocka_unit_test(test_tamper_certs),      cmocka_unit_test(test_truncated_payload),
        cmocka_unit_test(test_other_root),        cmocka_unit_test(test_nras_samples),
        cmocka_unit_test(test_nras_signed),       cmocka_unit_test(test_b64url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
