/* Fetches the Intel collateral for a TDX quote from Intel's PCS v4 API or a PCCS mirror and
 * assembles it into the collateral JSON of tdx/collateral.h, so that a fetched collateral is
 * verified by the same code as a `--collateral FILE` one and can be saved as is.
 *
 * Blocking (libcurl easy API, connect timeout 10 s, 60 s per request, at most 8 MiB per
 * body, http/https only). Reentrant; the caller owns collateral_json (appended to). */
#ifndef VP_VERIFY_PCS_H
#define VP_VERIFY_PCS_H
#include <stddef.h>

#include "core/buf.h"
#include "tdx/quote.h"

#define PCS_INTEL_URL "https://api.trustedservices.intel.com"
#define PCS_ROOT_CRL_URL "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"

/* base_url: NULL or "" for Intel's PCS; a PCCS base such as https://pccs.example.com (a
 * trailing /sgx|tdx/certification/v4 is accepted). The FMSPC and the PCK CA (platform or
 * processor) come from the quote's PCK leaf. Intel's PCS: the root CA CRL is fetched from
 * the root certificate's CRL distribution point (PCS_ROOT_CRL_URL when it has none); a PCCS:
 * from its /sgx/certification/v4/rootcacrl, falling back to the distribution point.
 * 0, or -1 with a one-line reason in err. Nothing is verified here. */
int pcs_fetch_collateral(const char *base_url, const tdx_quote_t *q, buf_t *collateral_json,
                         char *err, size_t errlen);

#endif
