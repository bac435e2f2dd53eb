/* Built-in trust anchors for TDX quotes. Immutable data; any thread. */
#ifndef VP_TDX_ROOTS_H
#define VP_TDX_ROOTS_H
#include <stddef.h>
#include <stdint.h>

/* Intel SGX Root CA, DER (tee-formats §1.7): CN=Intel SGX Root CA, valid 2018-05-21 →
 * 2049-12-31, sha256 44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3. */
extern const uint8_t tdx_intel_sgx_root_der[];
extern const size_t tdx_intel_sgx_root_der_len;

#endif
