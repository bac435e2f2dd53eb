/* Intel DCAP collateral for a TDX quote (shared/docs/tee-formats.md §1.8): CRLs, TCB info and QE
 * identity with their issuer chains and signatures, and the TCB status they give a quote.
 *
 * The collateral JSON is the shape of dcap-qvl's QuoteCollateralV3 (what
 * `--collateral FILE` reads and `--save-collateral` writes):
 *   {"pck_crl_issuer_chain": PEM, "root_ca_crl": hex DER, "pck_crl": hex DER,
 *    "tcb_info_issuer_chain": PEM, "tcb_info": "<the tcbInfo JSON text exactly as signed>",
 *    "tcb_info_signature": hex r||s, "qe_identity_issuer_chain": PEM,
 *    "qe_identity": "<the enclaveIdentity JSON text>", "qe_identity_signature": hex r||s}
 *
 * Ownership: tdx_collateral_parse allocates the collateral (copies of everything it needs);
 * tdx_collateral_free releases it. A parsed collateral is immutable, so one may be verified
 * from several threads at once. Every checker writes one checklist line per check
 * (core/check.h, ids "tdx.collateral.*"). */
#ifndef VP_TDX_COLLATERAL_H
#define VP_TDX_COLLATERAL_H
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/buf.h"
#include "core/check.h"
#include "tdx/quote.h"

typedef struct tdx_collateral tdx_collateral_t;

#define TDX_TCB_STATUS_MAX 40 /* "ConfigurationAndSWHardeningNeeded" is 33 chars + NUL */

/* 0; -1 on malformed JSON, a missing or mistyped field, bad hex, a CRL that is not DER, or
 * tcb_info / qe_identity text that is not a JSON object (err says which). */
int tdx_collateral_parse(const char *json, size_t len, tdx_collateral_t **out, char *err,
                         size_t errlen);
void tdx_collateral_free(tdx_collateral_t *col);

/* What the TCB evaluation found, in more detail than status_out. */
typedef struct tdx_tcb_result {
    char status[TDX_TCB_STATUS_MAX]; /* final: platform, TDX module and QE combined (Intel's rules) */
    char platform_status[40]; /* of the matching tcbLevel, or "NoMatch" */
    char module_status[40];   /* TDX module identity level, "" for a TDX 1.0 module */
    char qe_status[40];       /* QE identity level, or "Revoked" when none matches */
    char advisories[1024];    /* advisory IDs of the matching levels, comma-separated */
    unsigned tcb_eval_num;    /* tcbInfo.tcbEvaluationDataNumber */
    char fmspc[13];           /* from the PCK leaf, upper-case hex */
} tdx_tcb_result_t;

/* Verifies col for quote q at time `at` (0 = now) with root_der as the only trust anchor
 * (DER or PEM): every issuer chain to root, both CRLs (signed by their issuers, current),
 * the PCK chain's certificates against them, TCB info and QE identity (signature over the
 * exact text, issueDate <= at <= nextUpdate), FMSPC/PCE-ID, TD attributes (a debug TD is
 * rejected), the TDX module identity, the TCB level, the QE identity and its level.
 * Returns 0 when every check passed (the TCB status, which may be anything from "UpToDate"
 * to "Revoked", or "NoMatch" when no tcbLevel matches, is in status_out / res->status; the
 * caller decides which statuses it accepts), 1 when a check failed, -1 on bad arguments or
 * collateral that does not parse. cl, status_out and res may be NULL. */
int tdx_collateral_verify(const tdx_collateral_t *col, const tdx_quote_t *q,
                          const uint8_t *root_der, size_t root_len, time_t at, checklist_t *cl,
                          char status_out[TDX_TCB_STATUS_MAX]);
int tdx_collateral_verify_ex(const tdx_collateral_t *col, const tdx_quote_t *q,
                             const uint8_t *root_der, size_t root_len, time_t at,
                             checklist_t *cl, tdx_tcb_result_t *res);

/* Policy: 1 when status is "UpToDate" or named in allow (a comma-separated list of statuses,
 * case-sensitive, may be NULL), else 0. "NoMatch" passes only when named too. */
int tdx_tcb_status_allowed(const char *status, const char *allow);

/* Finds member `key` of the top-level JSON object in s[0..n) and returns the exact bytes of
 * its value (for signatures over served JSON text). 0, or -1 when absent or malformed. */
int tdx_json_raw_member(const char *s, size_t n, const char *key, size_t *off, size_t *len);

/* Assembles the collateral JSON above from its parts (CRLs as DER; the issuer chains as PEM
 * text; tcb_info / qe_identity as raw JSON text; signatures as 64 raw bytes). 0 or -1. */
typedef struct tdx_collateral_parts {
    const char *pck_crl_issuer_chain;
    const uint8_t *root_ca_crl;
    size_t root_ca_crl_len;
    const uint8_t *pck_crl;
    size_t pck_crl_len;
    const char *tcb_info_issuer_chain;
    const char *tcb_info;
    size_t tcb_info_len;
    const uint8_t *tcb_info_signature; /* 64 */
    const char *qe_identity_issuer_chain;
    const char *qe_identity;
    size_t qe_identity_len;
    const uint8_t *qe_identity_signature; /* 64 */
} tdx_collateral_parts_t;
int tdx_collateral_build_json(const tdx_collateral_parts_t *p, buf_t *out);

#endif
