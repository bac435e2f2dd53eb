/* Unit tests for src/tdx/pck, src/tdx/collateral and src/verify/pcs: the dcap-qvl quotes with
 * their real Intel collateral (tests/vectors/README.md), tampering and expiry, a synthetic
 * PKI under a test root (revoked serials, other TCB statuses, debug TD), and fetching the
 * collateral from a local fake PCS (tests/fakes/fake_pcs.mjs, skipped without node). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "at.h"
#include "core/buf.h"
#include "core/check.h"
#include "core/hex.h"
#include "tdx/collateral.h"
#include "tdx/pck.h"
#include "tdx/quote.h"

#define T_V4 1750414563 /* 2025-06-20, inside the v4 collateral window */
#define T_V5 1771500000 /* 2026-02-19, inside the v5 collateral window */

#include "vectors.h"

static uint8_t *load(const char *rel, size_t *len) { return vec_load(rel, len); }

typedef struct fixture {
    uint8_t *quote_bytes;
    size_t quote_len;
    tdx_quote_t q;
    char *col_json;
    size_t col_len;
    uint8_t *root;
    size_t root_len;
} fixture_t;

static void fx_load_at(AT_PARAMS, fixture_t *f, const char *quote, const char *col)
{
    memset(f, 0, sizeof *f);
    f->quote_bytes = load(quote, &f->quote_len);
    at_assert_non_null(f->quote_bytes);
    at_assert_int_equal(tdx_quote_parse(&f->q, f->quote_bytes, f->quote_len), TDX_OK);
    f->col_json = (char *)load(col, &f->col_len);
    at_assert_non_null(f->col_json);
    f->root = load("intel/IntelSGXRootCA.der", &f->root_len);
    at_assert_non_null(f->root);
}
#define fx_load(...) fx_load_at(AT_HERE, __VA_ARGS__)

static void fx_free(fixture_t *f)
{
    free(f->quote_bytes);
    free(f->col_json);
    free(f->root);
}

#include "checks.h"

/* Parses json and verifies it for q; returns the verify rc (or -2 on parse failure). */
static int run_verify(const char *json, size_t len, const tdx_quote_t *q, const uint8_t *root,
                      size_t root_len, time_t at, checklist_t *cl, tdx_tcb_result_t *res)
{
    tdx_collateral_t *c = NULL;
    char err[256];
    if (tdx_collateral_parse(json, len, &c, err, sizeof err) != 0) {
        fprintf(stderr, "parse: %s\n", err);
        return -2;
    }
    int rc = tdx_collateral_verify_ex(c, q, root, root_len, at, cl, res);
    tdx_collateral_free(c);
    return rc;
}

/* ---- PCK extension ---- */

static void test_pck_extension(void **state)
{
    (void)state;
    fixture_t f;
    fx_load(&f, "tdx/dcap-qvl/tdx_quote_v4.bin", "tdx/dcap-qvl/tdx_quote_v4_collateral.json");
    tdx_pck_info_t p;
    char err[128];
    assert_int_equal(tdx_pck_chain_parse(f.q.pck_chain, f.q.pck_chain_len, &p, err, sizeof err), 0);
    const uint8_t fmspc[6] = {0xb0, 0xc0, 0x6f, 0, 0, 0};
    assert_memory_equal(p.fmspc, fmspc, 6);
    assert_int_equal(p.pcesvn, 11);
    assert_int_equal(p.ca, TDX_PCK_CA_PLATFORM);
    assert_string_equal(tdx_pck_ca_param(p.ca), "platform");
    assert_int_equal(p.pceid[0], 0);
    assert_int_equal(p.pceid[1], 0);
    /* the TCB components equal the raw CPUSVN on Intel's certificates */
    assert_memory_equal(p.comp_svn, p.cpusvn, 16);
    fx_free(&f);

    fixture_t g;
    fx_load(&g, "tdx/dcap-qvl/tdx_quote_v5_no_tcb_match.bin",
            "tdx/dcap-qvl/tdx_quote_v5_no_tcb_match_collateral.json");
    assert_int_equal(tdx_pck_chain_parse(g.q.pck_chain, g.q.pck_chain_len, &p, err, sizeof err), 0);
    const uint8_t fmspc5[6] = {0x90, 0xc0, 0x6f, 0, 0, 0};
    assert_memory_equal(p.fmspc, fmspc5, 6);
    fx_free(&g);
    assert_null(tdx_pck_ca_param(TDX_PCK_CA_UNKNOWN));
}

/* The raw extension of the v4 leaf, for DER-walker robustness. */
static uint8_t *leaf_extension_at(AT_PARAMS, size_t *len)
{
    size_t ql;
    uint8_t *qb = load("tdx/dcap-qvl/tdx_quote_v4.bin", &ql);
    tdx_quote_t q;
    at_assert_int_equal(tdx_quote_parse(&q, qb, ql), TDX_OK);
    BIO *bio = BIO_new_mem_buf(q.pck_chain, (int)q.pck_chain_len);
    X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    at_assert_non_null(x);
    ASN1_OBJECT *o = OBJ_txt2obj("1.2.840.113741.1.13.1", 1);
    X509_EXTENSION *e = X509_get_ext(x, X509_get_ext_by_OBJ(x, o, -1));
    ASN1_OCTET_STRING *os = X509_EXTENSION_get_data(e);
    *len = (size_t)ASN1_STRING_length(os);
    uint8_t *out = malloc(*len);
    memcpy(out, ASN1_STRING_get0_data(os), *len);
    ASN1_OBJECT_free(o);
    X509_free(x);
    free(qb);
    return out;
}
#define leaf_extension(...) leaf_extension_at(AT_HERE, __VA_ARGS__)

/* DER TLV with a short or two-byte long-form length; returns the bytes written. */
static size_t der_tlv(uint8_t *out, uint8_t tag, const uint8_t *v, size_t n)
{
    size_t h = 0;
    out[h++] = tag;
    if (n < 0x80) {
        out[h++] = (uint8_t)n;
    } else {
        out[h++] = 0x82;
        out[h++] = (uint8_t)(n >> 8);
        out[h++] = (uint8_t)n;
    }
    memmove(out + h, v, n);
    return h + n;
}

/* SEQUENCE { OID 1.2.840.113741.1.13.1.a[.b], value } */
static size_t sgx_item(uint8_t *out, int a, int b, const uint8_t *val, size_t vn)
{
    uint8_t oid[11] = {0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01, (uint8_t)a, (uint8_t)b};
    uint8_t tmp[512];
    size_t k = der_tlv(tmp, 0x06, oid, b ? 11 : 10);
    memcpy(tmp + k, val, vn);
    return der_tlv(out, 0x30, tmp, k + vn);
}

/* A synthetic SGX extension: FMSPC, PCE-ID and a TCB with components 1..16 = 1..16, PCESVN
 * 11, CPUSVN; dup_comp1 >= 0 appends a second entry for component 1 with that SVN. */
static size_t synth_ext(uint8_t *out, int dup_comp1)
{
    uint8_t tcb[1024], body[2048], v[32];
    size_t tn = 0, bn = 0;
    for (int k = 1; k <= 17; k++) {
        uint8_t i = (uint8_t)(k == 17 ? 11 : k);
        size_t vn = der_tlv(v, 0x02, &i, 1);
        tn += sgx_item(tcb + tn, 2, k, v, vn);
    }
    uint8_t cpusvn[16] = {0};
    size_t vn = der_tlv(v, 0x04, cpusvn, 16);
    tn += sgx_item(tcb + tn, 2, 18, v, vn);
    if (dup_comp1 >= 0) {
        uint8_t i = (uint8_t)dup_comp1;
        vn = der_tlv(v, 0x02, &i, 1);
        tn += sgx_item(tcb + tn, 2, 1, v, vn);
    }
    uint8_t seq[1100];
    size_t sn = der_tlv(seq, 0x30, tcb, tn);
    bn += sgx_item(body + bn, 2, 0, seq, sn);
    const uint8_t pce[2] = {0, 0}, fm[6] = {0xb0, 0xc0, 0x6f, 0, 0, 0};
    vn = der_tlv(v, 0x04, pce, 2);
    bn += sgx_item(body + bn, 3, 0, v, vn);
    vn = der_tlv(v, 0x04, fm, 6);
    bn += sgx_item(body + bn, 4, 0, v, vn);
    return der_tlv(out, 0x30, body, bn);
}

static void test_pck_duplicate_tcb(void **state)
{
    (void)state;
    uint8_t ext[4096];
    tdx_pck_info_t p;
    char err[128];
    size_t n = synth_ext(ext, -1);
    assert_int_equal(tdx_pck_ext_parse(ext, n, &p, err, sizeof err), 0);
    assert_int_equal(p.comp_svn[0], 1);
    assert_int_equal(p.comp_svn[15], 16);
    assert_int_equal(p.pcesvn, 11);
    /* a second component-1 entry would lower (or raise) the SVN that TCB matching sees */
    n = synth_ext(ext, 0);
    assert_int_equal(tdx_pck_ext_parse(ext, n, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "duplicate"));
    n = synth_ext(ext, 255);
    assert_int_equal(tdx_pck_ext_parse(ext, n, &p, err, sizeof err), -1);
}

static void test_pck_der_robustness(void **state)
{
    (void)state;
    size_t n;
    uint8_t *ext = leaf_extension(&n);
    tdx_pck_info_t p;
    char err[128];
    assert_int_equal(tdx_pck_ext_parse(ext, n, &p, err, sizeof err), 0);
    /* every strict prefix fails (each in its own heap block so ASan sees over-reads) */
    for (size_t k = 0; k < n; k++) {
        uint8_t *c = malloc(k ? k : 1);
        memcpy(c, ext, k);
        assert_int_equal(tdx_pck_ext_parse(c, k, &p, err, sizeof err), -1);
        free(c);
    }
    /* single-byte mutations never crash; most fail */
    for (size_t k = 0; k < n; k++) {
        uint8_t *c = malloc(n);
        memcpy(c, ext, n);
        c[k] ^= 0xff;
        (void)tdx_pck_ext_parse(c, n, &p, err, sizeof err);
        c[k] ^= 0x7f;
        (void)tdx_pck_ext_parse(c, n, &p, err, sizeof err);
        free(c);
    }
    /* long-form length that runs past the end */
    const uint8_t bad1[] = {0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x00};
    assert_int_equal(tdx_pck_ext_parse(bad1, sizeof bad1, &p, err, sizeof err), -1);
    const uint8_t bad2[] = {0x30, 0x80, 0x00, 0x00}; /* indefinite length */
    assert_int_equal(tdx_pck_ext_parse(bad2, sizeof bad2, &p, err, sizeof err), -1);
    const uint8_t empty[] = {0x30, 0x00};
    assert_int_equal(tdx_pck_ext_parse(empty, sizeof empty, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "missing"));
    free(ext);
}

/* ---- the real dcap-qvl vectors ---- */

static void test_v4_uptodate(void **state)
{
    (void)state;
    fixture_t f;
    fx_load(&f, "tdx/dcap-qvl/tdx_quote_v4.bin", "tdx/dcap-qvl/tdx_quote_v4_collateral.json");
    checklist_t cl = CHECKLIST_INIT;
    tdx_tcb_result_t r;
    int rc = run_verify(f.col_json, f.col_len, &f.q, f.root, f.root_len, T_V4, &cl, &r);
    if (rc != 0)
        check_dump(&cl);
    assert_int_equal(rc, 0);
    assert_int_equal(check_count(&cl, CHK_FAIL), 0);
    assert_string_equal(r.status, "UpToDate");
    assert_string_equal(r.platform_status, "UpToDate");
    assert_string_equal(r.module_status, "UpToDate"); /* TDX_01, SVN 6 >= 4 */
    assert_string_equal(r.qe_status, "UpToDate");
    assert_string_equal(r.fmspc, "B0C06F000000");
    assert_string_equal(r.advisories, "");
    assert_int_equal(r.tcb_eval_num, 17);
    assert_int_equal(check_line_status(&cl, "tdx.collateral.tcb_status"), CHK_PASS);
    assert_int_equal(check_line_status(&cl, "tdx.collateral.pck.revocation"), CHK_PASS);
    assert_int_equal(check_line_status(&cl, "tdx.collateral.td_attributes"), CHK_PASS);
    check_free(&cl);

    /* the short API */
    tdx_collateral_t *c;
    char st[TDX_TCB_STATUS_MAX], err[128];
    assert_int_equal(tdx_collateral_parse(f.col_json, f.col_len, &c, err, sizeof err), 0);
    assert_int_equal(tdx_collateral_verify(c, &f.q, f.root, f.root_len, T_V4, NULL, st), 0);
    assert_string_equal(st, "UpToDate");
    /* the PEM root works too */
    size_t pl;
    uint8_t *pem = load("intel/IntelSGXRootCA.pem", &pl);
    assert_int_equal(tdx_collateral_verify(c, &f.q, pem, pl, T_V4, NULL, st), 0);
    free(pem);
    /* a foreign root: every chain fails */
    size_t sl;
    uint8_t *sim = load("simulated/sim_root_ca.pem", &sl);
    checklist_t c2 = CHECKLIST_INIT;
    assert_int_equal(tdx_collateral_verify(c, &f.q, sim, sl, T_V4, &c2, st), 1);
    assert_int_equal(check_line_status(&c2, "tdx.collateral.root_ca_crl"), CHK_FAIL);
    assert_int_equal(check_line_status(&c2, "tdx.collateral.tcb_info.chain"), CHK_FAIL);
    assert_string_equal(st, "Invalid");
    check_free(&c2);
    free(sim);
    tdx_collateral_free(c);
    fx_free(&f);
}

static void test_v5_nomatch(void **state)
{
    (void)state;
    fixture_t f;
    fx_load(&f, "tdx/dcap-qvl/tdx_quote_v5_no_tcb_match.bin",
            "tdx/dcap-qvl/tdx_quote_v5_no_tcb_match_collateral.json");
    checklist_t cl = CHECKLIST_INIT;
    tdx_tcb_result_t r;
    int rc = run_verify(f.col_json, f.col_len, &f.q, f.root, f.root_len, T_V5, &cl, &r);
    if (rc != 0)
        check_dump(&cl);
    assert_int_equal(rc, 0);
    assert_string_equal(r.status, "NoMatch");
    assert_string_equal(r.fmspc, "90C06F000000");
    assert_int_equal(check_line_status(&cl, "tdx.collateral.tcb_level"), CHK_WARN);
    assert_int_equal(check_line_status(&cl, "tdx.collateral.tcb_status"), CHK_WARN);
    assert_int_equal(tdx_tcb_status_allowed(r.status, "OutOfDate,SWHardeningNeeded"), 0);
    check_free(&cl);
    fx_free(&f);
}

/* Replaces the first occurrence of from with to (same length) in a copy of s. */
static char *patched_at(AT_PARAMS, const char *s, size_t n, const char *from, const char *to)
{
    char *c = malloc(n + 1);
    memcpy(c, s, n + 1);
    char *p = strstr(c, from);
    at_assert_non_null(p);
    at_assert_int_equal(strlen(from), strlen(to));
    memcpy(p, to, strlen(to));
    return c;
}
#define patched(...) patched_at(AT_HERE, __VA_ARGS__)

static void expect_fail_at(AT_PARAMS, fixture_t *f, const char *json, time_t at, const char *id)
{
    checklist_t cl = CHECKLIST_INIT;
    int rc = run_verify(json, strlen(json), &f->q, f->root, f->root_len, at, &cl, NULL);
    if (rc != 1 || check_line_status(&cl, id) != CHK_FAIL) {
        check_dump(&cl);
        at_fail_msg("expected %s to fail", id);
    }
    at_assert_int_equal(check_line_status(&cl, "tdx.collateral.tcb_status"), CHK_SKIP);
    check_free(&cl);
}
#define expect_fail(...) expect_fail_at(AT_HERE, __VA_ARGS__)

static void test_v4_tampered(void **state)
{
    (void)state;
    fixture_t f;
    fx_load(&f, "tdx/dcap-qvl/tdx_quote_v4.bin", "tdx/dcap-qvl/tdx_quote_v4_collateral.json");
    /* a TCB info byte: the first "UpToDate" of the file is inside tcb_info */
    char *j = patched(f.col_json, f.col_len, "UpToDate", "UpToDatf");
    expect_fail(&f, j, T_V4, "tdx.collateral.tcb_info.signature");
    free(j);
    j = patched(f.col_json, f.col_len, "\"tcb_info_signature\": \"0", "\"tcb_info_signature\": \"1");
    expect_fail(&f, j, T_V4, "tdx.collateral.tcb_info.signature");
    free(j);
    /* QE identity text and signature */
    j = patched(f.col_json, f.col_len, "TD_QE", "TD_QF");
    expect_fail(&f, j, T_V4, "tdx.collateral.qe_identity.signature");
    free(j);
    j = patched(f.col_json, f.col_len, "\"qe_identity_signature\": \"d",
                "\"qe_identity_signature\": \"e");
    expect_fail(&f, j, T_V4, "tdx.collateral.qe_identity.signature");
    free(j);
    /* a CRL byte (inside the signed part) */
    j = patched(f.col_json, f.col_len, "\"root_ca_crl\": \"308201203081c8020101",
                "\"root_ca_crl\": \"308201203081c8020102");
    expect_fail(&f, j, T_V4, "tdx.collateral.root_ca_crl");
    free(j);
    fx_free(&f);
}

static void test_v4_expired(void **state)
{
    (void)state;
    fixture_t f;
    fx_load(&f, "tdx/dcap-qvl/tdx_quote_v4.bin", "tdx/dcap-qvl/tdx_quote_v4_collateral.json");
    char *j = strndup(f.col_json, f.col_len);
    /* 40 days later: TCB info, QE identity and the PCK CRL have all expired */
    expect_fail(&f, j, T_V4 + 40 * 86400, "tdx.collateral.tcb_info.validity");
    expect_fail(&f, j, T_V4 + 40 * 86400, "tdx.collateral.qe_identity.validity");
    expect_fail(&f, j, T_V4 + 40 * 86400, "tdx.collateral.pck_crl");
    /* before its issue date */
    expect_fail(&f, j, T_V4 - 2 * 86400, "tdx.collateral.tcb_info.validity");
    free(j);
    fx_free(&f);
}

static void test_fmspc_mismatch(void **state)
{
    (void)state;
    fixture_t f;
    /* the v4 quote (FMSPC B0C06F…) with the v5 collateral (90C06F…) */
    fx_load(&f, "tdx/dcap-qvl/tdx_quote_v4.bin",
            "tdx/dcap-qvl/tdx_quote_v5_no_tcb_match_collateral.json");
    expect_fail(&f, f.col_json, T_V5, "tdx.collateral.tcb_info.fmspc");
    fx_free(&f);
}

static void test_parse_errors(void **state)
{
    (void)state;
    fixture_t f;
    fx_load(&f, "tdx/dcap-qvl/tdx_quote_v4.bin", "tdx/dcap-qvl/tdx_quote_v4_collateral.json");
    tdx_collateral_t *c = (tdx_collateral_t *)1;
    char err[256];
    assert_int_equal(tdx_collateral_parse("[]", 2, &c, err, sizeof err), -1);
    assert_null(c);
    assert_int_equal(tdx_collateral_parse("{}", 2, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "pck_crl_issuer_chain"));
    char *j = patched(f.col_json, f.col_len, "\"root_ca_crl\": \"3", "\"root_ca_crl\": \"x");
    assert_int_equal(tdx_collateral_parse(j, strlen(j), &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "root_ca_crl"));
    free(j);
    j = patched(f.col_json, f.col_len, "\"pck_crl\": \"30", "\"pck_crl\": \"31");
    assert_int_equal(tdx_collateral_parse(j, strlen(j), &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "pck_crl"));
    free(j);
    j = patched(f.col_json, f.col_len, "\"tcb_info\": \"{", "\"tcb_info\": \"[");
    assert_int_equal(tdx_collateral_parse(j, strlen(j), &c, err, sizeof err), -1);
    free(j);
    /* every truncation fails cleanly */
    for (size_t k = 0; k < f.col_len - 1; k += 97) {
        char *t = malloc(k + 1);
        memcpy(t, f.col_json, k);
        assert_int_equal(tdx_collateral_parse(t, k, &c, err, sizeof err), -1);
        free(t);
    }
    fx_free(&f);
}

static void test_helpers(void **state)
{
    (void)state;
    size_t off, len;
    const char *s = " {\"a\": [1, {\"x\":\"}\"}], \"tcbInfo\":{\"k\":\"v\\\"\"} ,\"signature\":\"ab\"}";
    assert_int_equal(tdx_json_raw_member(s, strlen(s), "tcbInfo", &off, &len), 0);
    assert_int_equal(len, strlen("{\"k\":\"v\\\"\"}"));
    assert_memory_equal(s + off, "{\"k\":\"v\\\"\"}", len);
    assert_int_equal(tdx_json_raw_member(s, strlen(s), "signature", &off, &len), 0);
    assert_memory_equal(s + off, "\"ab\"", 4);
    assert_int_equal(tdx_json_raw_member(s, strlen(s), "nope", &off, &len), -1);
    assert_int_equal(tdx_json_raw_member("{\"a\":{", 6, "a", &off, &len), -1);
    assert_int_equal(tdx_json_raw_member("[]", 2, "a", &off, &len), -1);

    assert_int_equal(tdx_tcb_status_allowed("UpToDate", NULL), 1);
    assert_int_equal(tdx_tcb_status_allowed("SWHardeningNeeded", NULL), 0);
    assert_int_equal(tdx_tcb_status_allowed("SWHardeningNeeded", "OutOfDate, SWHardeningNeeded"), 1);
    assert_int_equal(tdx_tcb_status_allowed("OutOfDate", "OutOfDateConfigurationNeeded"), 0);
    assert_int_equal(tdx_tcb_status_allowed("NoMatch", "NoMatch"), 1);
    assert_int_equal(tdx_tcb_status_allowed(NULL, "UpToDate"), 0);
}

/* ---- a synthetic PKI under a test root ---- */

typedef struct pki {
    EVP_PKEY *root_k, *ca_k, *leaf_k, *tcb_k;
    X509 *root, *ca, *leaf, *tcb;
    time_t at;
} pki_t;

static void add_ext_at(AT_PARAMS, X509 *x, X509 *issuer, int nid, const char *val)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, val);
    at_assert_non_null(e);
    at_assert_int_equal(X509_add_ext(x, e, -1), 1);
    X509_EXTENSION_free(e);
}
#define add_ext(...) add_ext_at(AT_HERE, __VA_ARGS__)

static X509 *mk_cert_at(AT_PARAMS, const char *cn, long serial, EVP_PKEY *key, X509 *issuer,
                        EVP_PKEY *ikey, int ca, time_t at, X509_EXTENSION *extra)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"Test", -1, -1, 0);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509_NAME_free(n);
    X509_time_adj_ex(X509_getm_notBefore(x), -1, 0, &at);
    X509_time_adj_ex(X509_getm_notAfter(x), 365, 0, &at);
    X509_set_pubkey(x, key);
    add_ext_at(AT_PASS, x, issuer ? issuer : x, NID_basic_constraints,
               ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    add_ext_at(AT_PASS, x, issuer ? issuer : x, NID_key_usage,
            ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    if (extra)
        at_assert_int_equal(X509_add_ext(x, extra, -1), 1);
    at_assert_true(X509_sign(x, ikey, EVP_sha256()) > 0);
    return x;
}
#define mk_cert(...) mk_cert_at(AT_HERE, __VA_ARGS__)

static uint8_t *mk_crl_at(AT_PARAMS, X509 *issuer, EVP_PKEY *k, long revoked, time_t at,
                          size_t *len)
{
    X509_CRL *c = X509_CRL_new();
    X509_CRL_set_version(c, 1);
    X509_CRL_set_issuer_name(c, X509_get_subject_name(issuer));
    ASN1_TIME *t = ASN1_TIME_adj(NULL, at, 0, -3600);
    X509_CRL_set1_lastUpdate(c, t);
    ASN1_TIME_adj(t, at, 30, 0);
    X509_CRL_set1_nextUpdate(c, t);
    if (revoked) {
        X509_REVOKED *r = X509_REVOKED_new();
        ASN1_INTEGER *s = ASN1_INTEGER_new();
        ASN1_INTEGER_set(s, revoked);
        X509_REVOKED_set_serialNumber(r, s);
        ASN1_TIME_adj(t, at, -1, 0);
        X509_REVOKED_set_revocationDate(r, t);
        X509_CRL_add0_revoked(c, r);
        ASN1_INTEGER_free(s);
    }
    ASN1_TIME_free(t);
    X509_CRL_sort(c);
    at_assert_true(X509_CRL_sign(c, k, EVP_sha256()) > 0);
    unsigned char *der = NULL;
    int n = i2d_X509_CRL(c, &der);
    at_assert_true(n > 0);
    uint8_t *out = malloc((size_t)n);
    memcpy(out, der, (size_t)n);
    OPENSSL_free(der);
    X509_CRL_free(c);
    *len = (size_t)n;
    return out;
}
#define mk_crl(...) mk_crl_at(AT_HERE, __VA_ARGS__)

static void pem_append(buf_t *b, X509 *x)
{
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, x);
    char *p;
    long n = BIO_get_mem_data(bio, &p);
    buf_append(b, p, (size_t)n);
    BIO_free(bio);
}

static void sign_rs_at(AT_PARAMS, EVP_PKEY *k, const char *msg, size_t n, uint8_t rs[64])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char der[80];
    size_t dl = sizeof der;
    at_assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k), 1);
    at_assert_int_equal(EVP_DigestSign(ctx, der, &dl, (const unsigned char *)msg, n), 1);
    const unsigned char *p = der;
    ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)dl);
    at_assert_non_null(s);
    BN_bn2binpad(ECDSA_SIG_get0_r(s), rs, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(s), rs + 32, 32);
    ECDSA_SIG_free(s);
    EVP_MD_CTX_free(ctx);
}
#define sign_rs(...) sign_rs_at(AT_HERE, __VA_ARGS__)

static void pki_init_at(AT_PARAMS, pki_t *p, time_t at)
{
    memset(p, 0, sizeof *p);
    p->at = at;
    p->root_k = EVP_EC_gen("P-256");
    p->ca_k = EVP_EC_gen("P-256");
    p->leaf_k = EVP_EC_gen("P-256");
    p->tcb_k = EVP_EC_gen("P-256");
    at_assert_true(p->root_k && p->ca_k && p->leaf_k && p->tcb_k);
    p->root = mk_cert_at(AT_PASS, "Test SGX Root CA", 1, p->root_k, NULL, p->root_k, 1, at, NULL);
    p->ca = mk_cert_at(AT_PASS, "Intel SGX PCK Platform CA", 0x1001, p->ca_k, p->root, p->root_k, 1,
                       at, NULL);
    p->tcb = mk_cert_at(AT_PASS, "Intel SGX TCB Signing", 0x1002, p->tcb_k, p->root, p->root_k, 0,
                        at, NULL);
    /* the leaf carries the real v4 leaf's SGX extension */
    size_t ql;
    uint8_t *qb = load("tdx/dcap-qvl/tdx_quote_v4.bin", &ql);
    tdx_quote_t q;
    at_assert_int_equal(tdx_quote_parse(&q, qb, ql), TDX_OK);
    BIO *bio = BIO_new_mem_buf(q.pck_chain, (int)q.pck_chain_len);
    X509 *real = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    ASN1_OBJECT *o = OBJ_txt2obj("1.2.840.113741.1.13.1", 1);
    X509_EXTENSION *e = X509_get_ext(real, X509_get_ext_by_OBJ(real, o, -1));
    p->leaf = mk_cert_at(AT_PASS, "Intel SGX PCK Certificate", 0x2001, p->leaf_k, p->ca, p->ca_k, 0,
                         at, e);
    ASN1_OBJECT_free(o);
    X509_free(real);
    free(qb);
}
#define pki_init(...) pki_init_at(AT_HERE, __VA_ARGS__)

static void pki_free(pki_t *p)
{
    EVP_PKEY_free(p->root_k);
    EVP_PKEY_free(p->ca_k);
    EVP_PKEY_free(p->leaf_k);
    EVP_PKEY_free(p->tcb_k);
    X509_free(p->root);
    X509_free(p->ca);
    X509_free(p->leaf);
    X509_free(p->tcb);
}

typedef struct synth {
    long revoke_ca, revoke_leaf;
    const char *tcb_from, *tcb_to; /* a same-length edit of the v4 tcb_info text */
    const char *qe_from, *qe_to;
    int signer_is_pck_leaf; /* sign TCB info and QE identity with the PCK leaf's key */
} synth_t;

/* Collateral JSON for the synthetic PKI, from the v4 tcbInfo / qeIdentity texts. */
static void synth_collateral_at(AT_PARAMS, pki_t *p, const synth_t *s, buf_t *out)
{
    size_t cl;
    char *cj = (char *)load("tdx/dcap-qvl/tdx_quote_v4_collateral.json", &cl);
    json_object *o = json_tokener_parse(cj);
    at_assert_non_null(o);
    json_object *v;
    json_object_object_get_ex(o, "tcb_info", &v);
    char *tcb = strdup(json_object_get_string(v));
    json_object_object_get_ex(o, "qe_identity", &v);
    char *qe = strdup(json_object_get_string(v));
    json_object_put(o);
    free(cj);
    if (s->tcb_from) {
        char *x = strstr(tcb, s->tcb_from);
        at_assert_non_null(x);
        memcpy(x, s->tcb_to, strlen(s->tcb_to));
    }
    if (s->qe_from) {
        char *x = strstr(qe, s->qe_from);
        at_assert_non_null(x);
        memcpy(x, s->qe_to, strlen(s->qe_to));
    }
    buf_t ca_chain = BUF_INIT, tcb_chain = BUF_INIT;
    pem_append(&ca_chain, p->ca);
    pem_append(&ca_chain, p->root);
    if (s->signer_is_pck_leaf) {
        pem_append(&tcb_chain, p->leaf);
        pem_append(&tcb_chain, p->ca);
    } else {
        pem_append(&tcb_chain, p->tcb);
    }
    pem_append(&tcb_chain, p->root);
    size_t rl, pl;
    uint8_t *rcrl = mk_crl_at(AT_PASS, p->root, p->root_k, s->revoke_ca, p->at, &rl);
    uint8_t *pcrl = mk_crl_at(AT_PASS, p->ca, p->ca_k, s->revoke_leaf, p->at, &pl);
    uint8_t tsig[64], qsig[64];
    EVP_PKEY *signer = s->signer_is_pck_leaf ? p->leaf_k : p->tcb_k;
    sign_rs_at(AT_PASS, signer, tcb, strlen(tcb), tsig);
    sign_rs_at(AT_PASS, signer, qe, strlen(qe), qsig);
    tdx_collateral_parts_t parts = {
        .pck_crl_issuer_chain = ca_chain.data, .root_ca_crl = rcrl, .root_ca_crl_len = rl,
        .pck_crl = pcrl, .pck_crl_len = pl, .tcb_info_issuer_chain = tcb_chain.data,
        .tcb_info = tcb, .tcb_info_len = strlen(tcb), .tcb_info_signature = tsig,
        .qe_identity_issuer_chain = tcb_chain.data, .qe_identity = qe,
        .qe_identity_len = strlen(qe), .qe_identity_signature = qsig};
    at_assert_int_equal(tdx_collateral_build_json(&parts, out), 0);
    buf_free(&ca_chain);
    buf_free(&tcb_chain);
    free(rcrl);
    free(pcrl);
    free(tcb);
    free(qe);
}
#define synth_collateral(...) synth_collateral_at(AT_HERE, __VA_ARGS__)

typedef struct synth_run {
    int rc;
    checklist_t cl;
    tdx_tcb_result_t r;
} synth_run_t;

/* Verifies the v4 quote (its PCK chain replaced by the synthetic one; td_attr_or is OR-ed
 * into TDATTRIBUTES byte 0) against synthetic collateral. */
static void synth_verify_at(AT_PARAMS, const synth_t *s, uint8_t td_attr_or, synth_run_t *out)
{
    pki_t p;
    pki_init_at(AT_PASS, &p, T_V4);
    buf_t col = BUF_INIT, chain = BUF_INIT;
    synth_collateral_at(AT_PASS, &p, s, &col);
    pem_append(&chain, p.leaf);
    pem_append(&chain, p.ca);
    pem_append(&chain, p.root);
    size_t ql;
    uint8_t *qb = load("tdx/dcap-qvl/tdx_quote_v4.bin", &ql);
    qb[48 + 120] |= td_attr_or;
    tdx_quote_t q;
    at_assert_int_equal(tdx_quote_parse(&q, qb, ql), TDX_OK);
    q.pck_chain = (const uint8_t *)chain.data;
    q.pck_chain_len = (uint32_t)chain.len;
    unsigned char *rootder = NULL;
    int rl = i2d_X509(p.root, &rootder);
    memset(&out->cl, 0, sizeof out->cl);
    out->rc = run_verify(col.data, col.len, &q, rootder, (size_t)rl, T_V4, &out->cl, &out->r);
    OPENSSL_free(rootder);
    free(qb);
    buf_free(&col);
    buf_free(&chain);
    pki_free(&p);
}
#define synth_verify(...) synth_verify_at(AT_HERE, __VA_ARGS__)

static void test_synthetic(void **state)
{
    (void)state;
    synth_run_t r;
    synth_t base = {0};
    synth_verify(&base, 0, &r);
    if (r.rc)
        check_dump(&r.cl);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.r.status, "UpToDate");
    check_free(&r.cl);

    /* the PCK leaf's serial in the PCK CRL */
    synth_t s1 = {.revoke_leaf = 0x2001};
    synth_verify(&s1, 0, &r);
    assert_int_equal(r.rc, 1);
    assert_int_equal(check_line_status(&r.cl, "tdx.collateral.pck.revocation"), CHK_FAIL);
    assert_non_null(strstr(check_line_found(&r.cl, "tdx.collateral.pck.revocation"), "revoked"));
    assert_int_equal(check_line_status(&r.cl, "tdx.collateral.pck_crl"), CHK_PASS);
    check_free(&r.cl);

    /* another serial revoked: still fine */
    synth_t s1b = {.revoke_leaf = 0x2002};
    synth_verify(&s1b, 0, &r);
    assert_int_equal(r.rc, 0);
    check_free(&r.cl);

    /* the PCK CA revoked by the root CRL */
    synth_t s2 = {.revoke_ca = 0x1001};
    synth_verify(&s2, 0, &r);
    assert_int_equal(r.rc, 1);
    assert_int_equal(check_line_status(&r.cl, "tdx.collateral.pck_crl.chain"), CHK_FAIL);
    assert_int_equal(check_line_status(&r.cl, "tdx.collateral.pck.revocation"), CHK_FAIL);
    check_free(&r.cl);

    /* the TCB signing certificate revoked */
    synth_t s3 = {.revoke_ca = 0x1002};
    synth_verify(&s3, 0, &r);
    assert_int_equal(r.rc, 1);
    assert_int_equal(check_line_status(&r.cl, "tdx.collateral.tcb_info.chain"), CHK_FAIL);
    assert_int_equal(check_line_status(&r.cl, "tdx.collateral.qe_identity.chain"), CHK_FAIL);
    check_free(&r.cl);

    /* the UpToDate level needs PCESVN 12: the PCK (11) falls to the OutOfDate level */
    synth_t s4 = {.tcb_from = "\"pcesvn\":11", .tcb_to = "\"pcesvn\":12"};
    synth_verify(&s4, 0, &r);
    if (r.rc)
        check_dump(&r.cl);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.r.status, "OutOfDate");
    assert_non_null(strstr(r.r.advisories, "INTEL-SA-00837"));
    assert_non_null(strstr(r.r.advisories, "INTEL-SA-00106,"));
    assert_int_equal(check_line_status(&r.cl, "tdx.collateral.tcb_status"), CHK_WARN);
    assert_int_equal(tdx_tcb_status_allowed(r.r.status, NULL), 0);
    assert_int_equal(tdx_tcb_status_allowed(r.r.status, "OutOfDate"), 1);
    check_free(&r.cl);

    /* QE below every QE identity level → Revoked */
    synth_t s6 = {.qe_from = "\"isvsvn\":4", .qe_to = "\"isvsvn\":9"};
    synth_verify(&s6, 0, &r);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.r.qe_status, "Revoked");
    assert_string_equal(r.r.status, "Revoked");
    check_free(&r.cl);

    /* the TDX module (TDX_01, SVN 6) below its first level (now 7) → the OutOfDate level */
    synth_t s7 = {.tcb_from = "\"isvsvn\":4}", .tcb_to = "\"isvsvn\":7}"};
    synth_verify(&s7, 0, &r);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.r.status, "OutOfDate"); /* the next module level (2) is OutOfDate */
    assert_string_equal(r.r.module_status, "OutOfDate");
    check_free(&r.cl);

    /* a QE MRSIGNER that is not Intel's */
    synth_t s8 = {.qe_from = "DC9E2A7C", .qe_to = "DC9E2A7D"};
    synth_verify(&s8, 0, &r);
    assert_int_equal(r.rc, 1);
    assert_int_equal(check_line_status(&r.cl, "tdx.collateral.qe_identity.match"), CHK_FAIL);
    check_free(&r.cl);

    /* TCB info and QE identity signed by a key that chains to the root but is not the TCB
     * signing certificate (a platform's PCK leaf): the signatures verify, the signer does not
     * count */
    synth_t s9 = {.signer_is_pck_leaf = 1};
    synth_verify(&s9, 0, &r);
    assert_int_equal(r.rc, 1);
    assert_int_equal(check_line_status(&r.cl, "tdx.collateral.tcb_info.chain"), CHK_PASS);
    assert_int_equal(check_line_status(&r.cl, "tdx.collateral.tcb_info.signature"), CHK_FAIL);
    assert_int_equal(check_line_status(&r.cl, "tdx.collateral.qe_identity.signature"), CHK_FAIL);
    assert_int_equal(check_line_status(&r.cl, "tdx.collateral.tcb_status"), CHK_SKIP);
    check_free(&r.cl);

    /* a TCB info without tdxModule: MRSIGNERSEAM is rated by nothing */
    synth_t s10 = {.tcb_from = "\"tdxModule\"", .tcb_to = "\"tdxModulX\""};
    synth_verify(&s10, 0, &r);
    assert_int_equal(r.rc, 1);
    assert_int_equal(check_line_status(&r.cl, "tdx.collateral.tdx_module"), CHK_FAIL);
    check_free(&r.cl);

    /* a debug TD is rejected */
    synth_verify(&base, 0x01, &r);
    assert_int_equal(r.rc, 1);
    assert_int_equal(check_line_status(&r.cl, "tdx.collateral.td_attributes"), CHK_FAIL);
    check_free(&r.cl);
    /* a reserved TUD bit too */
    synth_verify(&base, 0x02, &r);
    assert_int_equal(r.rc, 1);
    check_free(&r.cl);
}

/* ---- fetching from the fake PCS ---- */

/* The Makefile links this test with src/verify/pcs.c and -lcurl. */
#include "verify/pcs.h"


#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

typedef struct fake {
    pid_t pid;
    int port;
} fake_t;

/* Starts node tests/fakes/fake_pcs.mjs; 0, 1 when node is missing, -1 on other failures. */
static int fake_start(fake_t *f, const char *collateral, const char *extra)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", vec_dir(), collateral);
    int fd[2];
    if (pipe(fd))
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
    posix_spawn_file_actions_addclose(&fa, fd[0]);
    posix_spawn_file_actions_addclose(&fa, fd[1]);
    char *argv[] = {"node", "tests/fakes/fake_pcs.mjs", "--collateral", path, "--ttl", "60",
                    (char *)extra, NULL};
    int e = posix_spawnp(&f->pid, "node", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    if (e) {
        close(fd[0]);
        return e == ENOENT ? 1 : -1;
    }
    char line[64] = {0};
    size_t n = 0;
    struct pollfd p = {fd[0], POLLIN, 0};
    while (n < sizeof line - 1 && !memchr(line, '\n', n) && poll(&p, 1, 15000) == 1) {
        ssize_t r = read(fd[0], line + n, sizeof line - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd[0]);
    if (sscanf(line, "PORT %d", &f->port) != 1) {
        kill(f->pid, SIGTERM);
        waitpid(f->pid, NULL, 0);
        return -1;
    }
    return 0;
}

static void fake_stop(fake_t *f)
{
    kill(f->pid, SIGTERM);
    waitpid(f->pid, NULL, 0);
}

static void test_pcs_fetch(void **state)
{
    (void)state;
    fake_t fk;
    int s = fake_start(&fk, "tdx/dcap-qvl/tdx_quote_v4_collateral.json", NULL);
    if (s == 1) {
        fprintf(stderr, "SKIP test_pcs_fetch: node is not installed\n");
        skip();
    }
    assert_int_equal(s, 0);
    fixture_t f;
    fx_load(&f, "tdx/dcap-qvl/tdx_quote_v4.bin", "tdx/dcap-qvl/tdx_quote_v4_collateral.json");
    char base[128], err[512];
    buf_t out = BUF_INIT;
    snprintf(base, sizeof base, "http://127.0.0.1:%d", fk.port);
    int rc = pcs_fetch_collateral(base, &f.q, &out, err, sizeof err);
    if (rc)
        fprintf(stderr, "fetch: %s\n", err);
    assert_int_equal(rc, 0);
    /* the same verdict as the file it was served from */
    checklist_t cl = CHECKLIST_INIT;
    tdx_tcb_result_t r;
    rc = run_verify(out.data, out.len, &f.q, f.root, f.root_len, T_V4, &cl, &r);
    if (rc)
        check_dump(&cl);
    assert_int_equal(rc, 0);
    assert_string_equal(r.status, "UpToDate");
    check_free(&cl);
    /* byte-identical signed texts: re-served JSON parses to the same tcb_info string */
    json_object *a = json_tokener_parse(out.data), *b = json_tokener_parse(f.col_json), *va, *vb;
    const char *keys[] = {"tcb_info", "qe_identity", "pck_crl", "root_ca_crl",
                          "pck_crl_issuer_chain", "tcb_info_signature"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        assert_true(json_object_object_get_ex(a, keys[i], &va));
        assert_true(json_object_object_get_ex(b, keys[i], &vb));
        assert_string_equal(json_object_get_string(va), json_object_get_string(vb));
    }
    json_object_put(a);
    json_object_put(b);

    /* a base URL with the API path and a trailing slash */
    buf_reset(&out);
    snprintf(base, sizeof base, "http://127.0.0.1:%d/tdx/certification/v4/", fk.port);
    assert_int_equal(pcs_fetch_collateral(base, &f.q, &out, err, sizeof err), 0);
    fx_free(&f);

    /* a quote whose FMSPC the fake does not know: 404 */
    fx_load(&f, "tdx/dcap-qvl/tdx_quote_v5_no_tcb_match.bin",
            "tdx/dcap-qvl/tdx_quote_v5_no_tcb_match_collateral.json");
    buf_reset(&out);
    assert_int_equal(pcs_fetch_collateral(base, &f.q, &out, err, sizeof err), -1);
    assert_non_null(strstr(err, "404"));
    fx_free(&f);
    fake_stop(&fk);

    /* nobody listening any more */
    fx_load(&f, "tdx/dcap-qvl/tdx_quote_v4.bin", "tdx/dcap-qvl/tdx_quote_v4_collateral.json");
    assert_int_equal(pcs_fetch_collateral(base, &f.q, &out, err, sizeof err), -1);
    assert_int_equal(pcs_fetch_collateral("ftp://x", &f.q, &out, err, sizeof err), -1);
    fx_free(&f);
    buf_free(&out);
}

#define PCS_TESTS cmocka_unit_test(test_pcs_fetch),

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pck_extension), cmocka_unit_test(test_pck_der_robustness),
        cmocka_unit_test(test_pck_duplicate_tcb),
        cmocka_unit_test(test_v4_uptodate),   cmocka_unit_test(test_v5_nomatch),
        cmocka_unit_test(test_v4_tampered),   cmocka_unit_test(test_v4_expired),
        cmocka_unit_test(test_fmspc_mismatch), cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_helpers),       cmocka_unit_test(test_synthetic),
        PCS_TESTS};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
