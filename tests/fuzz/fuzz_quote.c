/* libFuzzer target for the TDX quote parser and its verification helpers (src/tdx/quote.c) on
 * arbitrary bytes. Invariants: never crashes or reads outside the input; every pointer of a
 * parsed quote lies inside it and the layout adds up; the signed region is exactly header ‖
 * body; parsing is a function of [0, quote_len) alone (trailing bytes ignored, any shorter
 * prefix fails); the four signature links and the event-log replay run without crashing, and
 * a quote whose links all verify to the Intel root is one whose signed bytes are unchanged
 * from a genuine quote (checked by re-verifying after a flip in the signed region). */
#include "fuzz.h"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tdx/quote.h"
#include "tdx/roots.h"

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static int inside(const uint8_t *p, size_t n, const uint8_t *base, size_t len)
{
    return p && p >= base && (size_t)(p - base) <= len && n <= len - (size_t)(p - base);
}

static void check_layout(const tdx_quote_t *q, const uint8_t *d, size_t n)
{
    CHECK(q->data == d && q->len == n);
    CHECK(q->version == 4 || q->version == 5);
    CHECK(q->att_key_type == 2 && q->tee_type == TDX_TEE_TYPE_TDX);
    CHECK((q->body_type == 2 && q->body_len == TDX_BODY10_LEN) ||
          (q->body_type == 3 && q->body_len == TDX_BODY15_LEN));
    CHECK(q->signed_len == q->body_off + q->body_len);
    CHECK(q->sig_data_off == q->signed_len + 4);
    CHECK(q->quote_len == q->sig_data_off + q->sig_data_len && q->quote_len <= n);
    CHECK(inside(q->qe_vendor_id, 16, d, q->signed_len));
    CHECK(inside(q->body.mrtd, 48, d, q->signed_len));
    CHECK(inside(q->body.report_data, 64, d, q->signed_len));
    for (int i = 0; i < 4; i++)
        CHECK(inside(q->body.rtmr[i], 48, d, q->signed_len));
    CHECK((q->body.mrservicetd != NULL) == (q->body_type == 3));
    if (q->body.mrservicetd)
        CHECK(inside(q->body.mrservicetd, 48, d, q->signed_len));
    CHECK(inside(q->signature, 64, d, q->quote_len));
    CHECK(inside(q->attest_key, 64, d, q->quote_len));
    CHECK(inside(q->qe_report, TDX_QE_REPORT_LEN, d, q->quote_len));
    CHECK(inside(q->qe_report_sig, 64, d, q->quote_len));
    CHECK(inside(q->qe_auth_data, q->qe_auth_len, d, q->quote_len));
    CHECK(inside(q->pck_chain, q->pck_chain_len, d, q->quote_len));
    CHECK(q->pck_chain + q->pck_chain_len == d + q->quote_len); /* fills the signature data */
    CHECK(q->cert_type == 6 && q->pck_cert_type == 5);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    /* a private copy so that ASan sees any read past the end */
    uint8_t *d = malloc(size ? size : 1);
    if (!d)
        return 0;
    memcpy(d, data, size);
    tdx_quote_t q;
    int rc = tdx_quote_parse(&q, d, size);
    CHECK(rc <= 0 && rc >= TDX_ERR_EVENTLOG);
    CHECK(tdx_strerror(rc) != NULL);
    if (rc == TDX_OK) {
        check_layout(&q, d, size);
        (void)tdx_td_attributes(&q);
        uint8_t agg[32];
        tdx_mr_aggregated(&q.body, agg);

        /* the same bytes without the trailer parse the same way; any shorter prefix fails */
        uint8_t *e = malloc(q.quote_len);
        CHECK(e);
        memcpy(e, d, q.quote_len);
        tdx_quote_t q2;
        CHECK(tdx_quote_parse(&q2, e, q.quote_len) == TDX_OK);
        CHECK(q2.quote_len == q.quote_len && q2.signed_len == q.signed_len &&
              q2.pck_chain_len == q.pck_chain_len && q2.qe_auth_len == q.qe_auth_len);
        CHECK(tdx_quote_parse(&q2, e, q.quote_len - 1) != TDX_OK);
        CHECK(tdx_quote_parse(&q2, e, q.signed_len) != TDX_OK);

        int s = tdx_verify_quote_signature(&q);
        int b = tdx_verify_qe_binding(&q);
        int r = tdx_verify_qe_report_signature(&q);
        CHECK(s == TDX_OK || s == TDX_ERR_SIGNATURE || s == TDX_ERR_CRYPTO);
        CHECK(b == TDX_OK || b == TDX_ERR_BINDING || b == TDX_ERR_CRYPTO);
        CHECK(r == TDX_OK || r == TDX_ERR_SIGNATURE || r == TDX_ERR_CHAIN || r == TDX_ERR_CRYPTO);
        int c = tdx_pck_chain_verify(q.pck_chain, q.pck_chain_len, tdx_intel_sgx_root_der,
                                     tdx_intel_sgx_root_der_len, 1750414563);
        CHECK(c == TDX_OK || c == TDX_ERR_CHAIN);
        /* a signature that verifies covers the header and body: flip one signed byte (chosen
         * from the data) and it must stop verifying */
        if (s == TDX_OK) {
            size_t k = (size_t)d[size - 1] * 7919u % q.signed_len;
            e[k] ^= 0x01;
            CHECK(tdx_quote_parse(&q2, e, q.quote_len) != TDX_OK ||
                  tdx_verify_quote_signature(&q2) != TDX_OK);
        }
        if (s == TDX_OK && b == TDX_OK && r == TDX_OK && c == TDX_OK)
            CHECK(tdx_verify_quote(&q, tdx_intel_sgx_root_der, tdx_intel_sgx_root_der_len,
                                   1750414563) == TDX_OK);
        else
            CHECK(tdx_verify_quote(&q, tdx_intel_sgx_root_der, tdx_intel_sgx_root_der_len,
                                   1750414563) != TDX_OK);
        free(e);
    }

    /* the same bytes as an event log */
    uint8_t rtmr[4][48];
    char err[128];
    err[0] = 1;
    int er = tdx_rtmr_replay((const char *)d, size, rtmr, err, sizeof err);
    CHECK(er == TDX_OK || er == TDX_ERR_EVENTLOG);
    if (er != TDX_OK)
        CHECK(memchr(err, 0, sizeof err) != NULL);
    free(d);
    return 0;
}
