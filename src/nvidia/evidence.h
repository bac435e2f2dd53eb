/* Offline verification of NVIDIA GPU evidence (shared/docs/tee-formats.md §4.2–4.3): the proxy's
 * `nvidia_payload` {"nonce","evidence_list":[{"certificate","evidence"}],"arch"} (or the
 * nvattest list [{"nonce","evidence","certificate","arch",...}]). Per GPU: the evidence decodes
 * (binary or legacy hex-text report), the certificate chain verifies to the built-in NVIDIA
 * Device Identity CA, the SPDM signature verifies with the leaf key, and the report's request
 * nonce equals the payload nonce. This proves the report came from a genuine NVIDIA GPU for
 * this nonce; it does not judge the measurements (that needs NVIDIA RIMs + OCSP, i.e. NRAS).
 *
 * Ownership: functions returning OpenSSL objects or malloc'd bytes hand them to the caller
 * (free with the function named next to each). Results go to the caller's checklist. All
 * functions are reentrant; no global state. */
#ifndef VP_NVIDIA_EVIDENCE_H
#define VP_NVIDIA_EVIDENCE_H
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/check.h"

struct x509_st;          /* X509 */
struct stack_st_X509;    /* STACK_OF(X509) */
struct json_object;

#define NV_MAX_CHAIN_CERTS 16 /* a GPU identity chain has 5 certificates */

/* PEM text of NVIDIA's roots (src/nvidia/roots.c). */
extern const char nv_device_root_pem[];
extern const char nv_rim_root_pem[];

/* First certificate of PEM text as a new X509 (X509_free), or NULL. */
struct x509_st *nv_x509_from_pem(const char *pem, size_t len);
/* The built-in NVIDIA Device Identity CA as a new X509 (X509_free). */
struct x509_st *nv_device_root(void);

/* json_parse_strict (core/json.h) under the name the verifier and tests use. */
struct json_object *nv_json_parse(const char *p, size_t n);

/* Decodes an `evidence` string. Base64 of the raw report (starts 0x11 0xE0), or the legacy
 * encoding: base64 of the report's ASCII hex text ("11e0..."), detected and hex-decoded.
 * *out is malloc'd (free); *legacy = 1 for the hex form. 0, or -1 when neither decodes. */
int nv_evidence_decode(const char *b64, size_t len, uint8_t **out, size_t *out_len, int *legacy);

/* Every certificate of PEM text, in order (leaf first), read strictly (core/pem.h) with at
 * most NV_MAX_CHAIN_CERTS. New stack, free with sk_X509_pop_free(sk, X509_free); NULL when
 * there is no certificate, one is malformed, or anything else is in the text. */
struct stack_st_X509 *nv_pem_chain_parse(const char *pem, size_t len);
/* `certificate` = base64 of PEM text → as above. NULL on a base64 or PEM error. */
struct stack_st_X509 *nv_cert_chain_decode(const char *b64, size_t len);

/* Verifies chain[0] (the leaf) to root, the only trust anchor; chain[1..] are untrusted
 * intermediates (a copy of the root among them is fine; another self-signed root is not).
 * at = 0: now. 1 = valid, 0 = invalid (reason in err), -1 = error. */
int nv_chain_verify(struct stack_st_X509 *chain, struct x509_st *root, time_t at, char *err,
                    size_t errcap);

/* One GPU's checks, as checklist lines "gpu.<idx>.evidence|cert_chain|spdm_signature|nonce".
 * report = decoded evidence; chain may be NULL (then the chain and signature lines fail);
 * payload_nonce may be NULL (nonce line SKIP). legacy only labels the evidence line.
 * Returns 0 all passed, 1 a check failed, -1 the report or chain could not be parsed. */
int nv_verify_gpu(checklist_t *cl, int idx, const uint8_t *report, size_t n, int legacy,
                  struct stack_st_X509 *chain, struct x509_st *root,
                  const uint8_t payload_nonce[32], time_t at);

/* The whole payload, with the built-in root. expected_nonce NULL: "gpu.payload.nonce" is
 * SKIP (the evidence is still checked against the payload's own nonce). at = 0: now.
 * Lines: gpu.payload.format, gpu.payload.nonce, gpu.payload.arch, gpu.payload.evidence_list,
 * then nv_verify_gpu's per GPU. Returns 0 when every line passed (SKIP allowed), 1 when a check
 * failed, -1 when the payload, an evidence or a certificate chain could not be parsed. */
int nv_verify_payload(const char *payload_json, size_t len, const uint8_t expected_nonce[32],
                      time_t at, checklist_t *cl);
/* nv_verify_payload for GPUs (switches 0) or NVSwitches (switches 1: the PPCIe switch
 * evidence, arch "LS10", the same SPDM 1.1 report and chain to the same root; lines
 * "nvswitch.payload.*", "nvswitch.<i>.*"). *count (may be NULL): items in the payload. */
int nv_verify_devices(const char *payload_json, size_t len, const uint8_t expected_nonce[32],
                      time_t at, int switches, size_t *count, checklist_t *cl);
/* Same with another trust anchor (tests; future GPU roots). */
int nv_verify_payload_root(const char *payload_json, size_t len,
                           const uint8_t expected_nonce[32], time_t at,
                           struct x509_st *root, checklist_t *cl);

#endif
