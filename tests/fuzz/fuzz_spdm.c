/* libFuzzer target for NVIDIA GPU evidence (src/nvidia/spdm.c, evidence.c): arbitrary bytes as
 * an SPDM GET_MEASUREMENTS ‖ MEASUREMENTS report, as an `evidence` string (base64 of the binary
 * report or of its hex text) and as a PEM chain. Invariants: never crashes or reads past the
 * input; a parsed report accounts for every byte (request, header, record, nonce, opaque data,
 * signature) and its blocks and opaque fields lie inside; a fresh P-384 key never verifies the
 * signature; without a certificate chain nv_verify_gpu never reports success. */
#include "fuzz.h"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "core/check.h"
#include "nvidia/evidence.h"
#include "nvidia/spdm.h"

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static EVP_PKEY *key;
static X509 *root;
static nv_spdm_report_t rep;

static int inside(const uint8_t *p, size_t n, const uint8_t *base, size_t len)
{
    return p && p >= base && (size_t)(p - base) <= len && n <= len - (size_t)(p - base);
}

static void check_report(const nv_spdm_report_t *r, const uint8_t *d, size_t n)
{
    CHECK(r->data == d && r->len == n);
    CHECK(r->signed_data == d && r->signed_len + NV_SPDM_SIG_LEN == n);
    CHECK(r->signature == d + r->signed_len);
    CHECK(r->signed_len == NV_SPDM_REQ_LEN + 8 + r->record_len + NV_SPDM_NONCE_LEN + 2 +
                               r->opaque_len);
    CHECK(r->req_nonce == d + 4 && inside(r->resp_nonce, NV_SPDM_NONCE_LEN, d, r->signed_len));
    CHECK(inside(r->opaque, r->opaque_len, d, r->signed_len));
    const uint8_t *rec = d + NV_SPDM_REQ_LEN + 8;
    size_t sum = 0;
    for (unsigned i = 0; i < r->n_blocks; i++) {
        const nv_spdm_block_t *b = &r->blocks[i];
        CHECK(inside(b->value, b->value_len, rec, r->record_len));
        CHECK(b->spec == 1 ? b->value_len + 3u == b->size : b->value_len == b->size);
        sum += 4u + b->size;
    }
    CHECK(sum == r->record_len);
    size_t osum = 0;
    CHECK(r->n_fields <= NV_SPDM_MAX_OPAQUE);
    for (size_t i = 0; i < r->n_fields; i++) {
        CHECK(inside(r->fields[i].value, r->fields[i].len, r->opaque, r->opaque_len));
        osum += 4u + r->fields[i].len;
        (void)nv_opaque_type_name(r->fields[i].type);
    }
    CHECK(osum == r->opaque_len);
    char s[64];
    if (nv_spdm_driver_version(r, s, sizeof s) == 0)
        CHECK(strlen(s) < sizeof s);
    if (nv_spdm_vbios_version(r, s, sizeof s) == 0)
        CHECK(strlen(s) == 14);
    CHECK(nv_spdm_verify_signature(r, key) != 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!key) {
        key = EVP_EC_gen("P-384");
        root = nv_device_root();
        CHECK(key && root);
    }
    if (size > (1u << 18))
        return 0;
    uint8_t *d = malloc(size ? size : 1);
    CHECK(d);
    memcpy(d, data, size);

    int rc = nv_spdm_parse(d, size, &rep);
    CHECK(rc <= 0 && rc >= NV_SPDM_ERR_TRAILING && nv_spdm_strerror(rc));
    if (rc == NV_SPDM_OK)
        check_report(&rep, d, size);

    /* one GPU with no chain: never all-pass */
    checklist_t cl = CHECKLIST_INIT;
    uint8_t nonce[32] = {0};
    int g = nv_verify_gpu(&cl, 0, d, size, 0, NULL, root, nonce, 1750414563);
    CHECK(g != 0 && check_count(&cl, CHK_FAIL) > 0);
    check_free(&cl);

    /* the bytes as an evidence string */
    uint8_t *raw = NULL;
    size_t rn = 0;
    int legacy = 0;
    if (nv_evidence_decode((const char *)d, size, &raw, &rn, &legacy) == 0) {
        CHECK(raw && rn >= 2 && raw[0] == NV_SPDM_VERSION_11 && raw[1] == NV_SPDM_GET_MEASUREMENTS);
        if (nv_spdm_parse(raw, rn, &rep) == NV_SPDM_OK)
            check_report(&rep, raw, rn);
        free(raw);
    } else {
        CHECK(raw == NULL && rn == 0);
    }

    /* the bytes as a PEM chain (and as base64 of one): never verifies without a real chain */
    struct stack_st_X509 *sk = nv_pem_chain_parse((const char *)d, size);
    if (sk) {
        char err[160];
        int v = nv_chain_verify(sk, root, 1750414563, err, sizeof err);
        CHECK(v >= -1 && v <= 1);
        sk_X509_pop_free((STACK_OF(X509) *)sk, X509_free);
    }
    sk = nv_cert_chain_decode((const char *)d, size);
    if (sk)
        sk_X509_pop_free((STACK_OF(X509) *)sk, X509_free);
    free(d);
    return 0;
}
