/* libFuzzer target for Intel collateral (src/tdx/collateral.c): arbitrary bytes as the
 * QuoteCollateralV3 JSON, parsed and, when it parses, verified against a fixed real quote
 * (tests/vectors/tdx/dcap-qvl/tdx_quote_v4.bin) with the built-in Intel root at a time inside
 * its collateral window. Invariants: never crashes; the return value agrees with the
 * checklist (0 ⇔ no FAIL line, 1 ⇔ some FAIL line); a final TCB status exists only when no
 * check failed; "UpToDate" needs the tcb_info and qe_identity signature lines to PASS; the raw
 * member finder stays inside the input. */
#include "fuzz.h"
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "tdx/collateral.h"
#include "tdx/quote.h"
#include "tdx/roots.h"

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define T_V4 1750414563

static uint8_t *qbytes;
static size_t qlen;
static tdx_quote_t quote;

static int status_of(const checklist_t *cl, const char *id)
{
    for (size_t i = 0; i < cl->n; i++)
        if (strcmp(cl->items[i].id, id) == 0)
            return (int)cl->items[i].status;
    return -1;
}

static void load_quote(void)
{
    const char *dir = getenv("VP_TEST_VECTORS") ? getenv("VP_TEST_VECTORS") : "tests/vectors";
    char path[512];
    snprintf(path, sizeof path, "%s/tdx/dcap-qvl/tdx_quote_v4.bin", dir);
    FILE *f = fopen(path, "rb");
    CHECK(f);
    qbytes = malloc(8192);
    CHECK(qbytes);
    qlen = fread(qbytes, 1, 8192, f);
    fclose(f);
    CHECK(tdx_quote_parse(&quote, qbytes, qlen) == TDX_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!qbytes)
        load_quote();
    if (size > (1u << 18))
        return 0;
    char *d = malloc(size ? size : 1);
    CHECK(d);
    memcpy(d, data, size);

    static const char *const keys[] = {"tcb_info", "qe_identity", "pck_crl", "tcbInfo",
                                       "enclaveIdentity", ""};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        size_t off = 0, len = 0;
        if (tdx_json_raw_member(d, size, keys[i], &off, &len) == 0)
            CHECK(len > 0 && off < size && len <= size - off);
    }
    if (size < 64) {
        char s[64];
        memcpy(s, d, size);
        s[size] = 0;
        int a = tdx_tcb_status_allowed(s, "SWHardeningNeeded, OutOfDate");
        CHECK(a == 0 || a == 1);
        if (a)
            CHECK(!strcmp(s, "UpToDate") || !strcmp(s, "SWHardeningNeeded") ||
                  !strcmp(s, "OutOfDate"));
    }

    tdx_collateral_t *col = NULL;
    char err[256];
    err[0] = 0;
    int rc = tdx_collateral_parse(d, size, &col, err, sizeof err);
    CHECK(rc == 0 || rc == -1);
    if (rc != 0) {
        CHECK(col == NULL && err[0]);
    } else {
        checklist_t cl = CHECKLIST_INIT;
        tdx_tcb_result_t res;
        int v = tdx_collateral_verify_ex(col, &quote, tdx_intel_sgx_root_der,
                                         tdx_intel_sgx_root_der_len, T_V4, &cl, &res);
        CHECK(v == 0 || v == 1);
        CHECK((v == 1) == (check_count(&cl, CHK_FAIL) > 0));
        CHECK(memchr(res.status, 0, sizeof res.status) && memchr(res.advisories, 0,
                                                                 sizeof res.advisories));
        if (v == 1)
            CHECK(strcmp(res.status, "Unknown") == 0);
        if (strcmp(res.status, "UpToDate") == 0) {
            CHECK(v == 0);
            CHECK(status_of(&cl, "tdx.collateral.tcb_info.signature") == CHK_PASS);
            CHECK(status_of(&cl, "tdx.collateral.qe_identity.signature") == CHK_PASS);
            CHECK(status_of(&cl, "tdx.collateral.pck.revocation") == CHK_PASS);
            CHECK(status_of(&cl, "tdx.collateral.tcb_info.fmspc") == CHK_PASS);
        }
        check_free(&cl);
        tdx_collateral_free(col);
    }
    free(d);
    return 0;
}
