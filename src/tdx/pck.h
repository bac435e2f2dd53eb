/* The Intel SGX extension of a PCK leaf certificate (OID 1.2.840.113741.1.13.1): FMSPC, PCE-ID,
 * PCESVN, CPUSVN and the 16 TCB component SVNs that TCB matching compares against the TCB info
 * levels, plus which PCK CA issued the leaf (for the PCK CRL's `ca=` parameter).
 *
 * The extension is walked by a minimal DER reader: every tag and length is checked against
 * the bytes that remain, so malformed input is an error, never an over-read. Pure functions;
 * the caller owns every buffer and the result struct. Reentrant. */
#ifndef VP_TDX_PCK_H
#define VP_TDX_PCK_H
#include <stddef.h>
#include <stdint.h>

enum tdx_pck_ca { TDX_PCK_CA_UNKNOWN = 0, TDX_PCK_CA_PLATFORM, TDX_PCK_CA_PROCESSOR };

typedef struct tdx_pck_info {
    uint8_t ppid[16];
    uint8_t fmspc[6];
    uint8_t pceid[2];
    uint16_t pcesvn;
    uint8_t cpusvn[16];   /* …1.2.18: the raw CPUSVN */
    uint8_t comp_svn[16]; /* …1.2.1 – …1.2.16: the SGX TCB component SVNs */
    int ca;               /* enum tdx_pck_ca, from the leaf's issuer CN */
} tdx_pck_info_t;

/* Parses the SGX extension's value (the DER SEQUENCE inside the extension's OCTET STRING).
 * FMSPC, PCE-ID and the TCB (all 16 components, PCESVN, CPUSVN) are required. 0, or -1 with a
 * reason in err (optional). `ca` is left untouched. */
int tdx_pck_ext_parse(const uint8_t *der, size_t len, tdx_pck_info_t *out, char *err,
                      size_t errlen);
/* From a DER certificate: finds the extension, parses it, and sets `ca` from the issuer CN. */
int tdx_pck_cert_parse(const uint8_t *cert_der, size_t len, tdx_pck_info_t *out, char *err,
                       size_t errlen);
/* From a PEM chain (leaf first, e.g. the quote's certification data): uses the first cert. */
int tdx_pck_chain_parse(const uint8_t *chain_pem, size_t len, tdx_pck_info_t *out, char *err,
                        size_t errlen);
/* "platform", "processor" or NULL: the PCS pckcrl `ca=` value. */
const char *tdx_pck_ca_param(int ca);

#endif
