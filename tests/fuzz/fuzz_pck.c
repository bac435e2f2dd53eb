/* libFuzzer target for the PCK leaf's SGX extension reader (src/tdx/pck.c): arbitrary bytes as
 * the extension's DER, as a DER certificate and as a PEM chain. Invariants: never crashes or
 * reads past the input; success means every required item was present (and `ca` survives);
 * failure always leaves a reason; the result does not depend on bytes after the outer
 * SEQUENCE being absent (a trailing byte makes it fail). */
#include "fuzz.h"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tdx/pck.h"

#define CHECK(c) do { if (!(c)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 16))
        return 0;
    uint8_t *d = malloc(size + 1);
    if (!d)
        return 0;
    memcpy(d, data, size);
    tdx_pck_info_t a, b;
    char err[160];
    memset(&a, 0, sizeof a);
    a.ca = TDX_PCK_CA_PROCESSOR;
    err[0] = 0;
    int r = tdx_pck_ext_parse(d, size, &a, err, sizeof err);
    CHECK(r == 0 || r == -1);
    CHECK(a.ca == TDX_PCK_CA_PROCESSOR);
    if (r == 0) {
        /* deterministic */
        memset(&b, 0x5a, sizeof b);
        b.ca = TDX_PCK_CA_PROCESSOR;
        CHECK(tdx_pck_ext_parse(d, size, &b, NULL, 0) == 0);
        CHECK(memcmp(&a, &b, sizeof a) == 0);
        /* the outer SEQUENCE must span the input exactly */
        d[size] = 0;
        CHECK(tdx_pck_ext_parse(d, size + 1, &b, NULL, 0) == -1);
        CHECK(size == 0 || tdx_pck_ext_parse(d, size - 1, &b, NULL, 0) == -1);
    } else {
        CHECK(err[0] != 0 && memchr(err, 0, sizeof err));
    }
    (void)tdx_pck_cert_parse(d, size, &b, err, sizeof err);
    r = tdx_pck_chain_parse(d, size, &b, err, sizeof err);
    if (r == 0)
        CHECK(b.ca >= TDX_PCK_CA_UNKNOWN && b.ca <= TDX_PCK_CA_PROCESSOR);
    (void)tdx_pck_ca_param(b.ca);
    free(d);
    return 0;
}
