/* SIMULATED attestation provider, for development and tests only: every quote it makes is
 * signed by a throwaway key certified by a test root CA that lives in this repository (its
 * private key is public), and every report says "attestation_mode":"simulated". A verifier
 * must refuse these unless told to accept simulated attestations.
 *
 * attest_sim_new builds everything once (PCK-like chain, attestation key, QE report, event
 * log, measurements, Info JSON); afterwards the object is immutable, so attest_sim_quote and
 * attest_report_json may run concurrently on any threads (the libuv pool). attest_sim_free
 * must not race with them. Output buffers are appended to; the caller owns them. */
#ifndef VP_ATTEST_SIM_H
#define VP_ATTEST_SIM_H
#include <stddef.h>
#include <stdint.h>

#include "attest/attest.h"
#include "attest/report.h"
#include "core/buf.h"

/* The checked-in test root (P-256, CN "vllm-proxy SIMULATED TDX Root CA - NOT FOR
 * PRODUCTION"), its private key, and the simulated GPU leaf it signed (P-384). PEM text. */
extern const char attest_sim_root_cert_pem[];
extern const char attest_sim_root_key_pem[];
extern const char attest_sim_gpu_cert_pem[];

typedef struct attest_sim attest_sim_t;

attest_sim_t *attest_sim_new(void); /* NULL on failure (logged) */
/* The same, measuring a simulated dstack OS image that is a dev build (dev_image) or a
 * production one (attest_sim_new): its os-image-hash event and Info's os_image_hash are
 * sha256 of the sha256sum.txt that attest_sim_os_image_file returns. */
attest_sim_t *attest_sim_new_os(int dev_image);
/* The simulated OS image's "metadata.json" or "sha256sum.txt" (NULL for another name). */
const char *attest_sim_os_image_file(const attest_sim_t *s, const char *name, size_t *len);
void attest_sim_free(attest_sim_t *s);

/* Appends a TDX v4 quote over report_data (tee-formats §1 layout, 6 → 5 certification data).
 * 0, or -1 on ENOMEM / signing failure. */
int attest_sim_quote(attest_sim_t *s, const uint8_t report_data[64], buf_t *out);

/* Precomputed texts, valid until attest_sim_free. */
const char *attest_sim_info_json(const attest_sim_t *s, size_t *len);      /* Info object */
const char *attest_sim_event_log_json(const attest_sim_t *s, size_t *len); /* JSON array text */
const char *attest_sim_vm_config(const attest_sim_t *s, size_t *len);      /* JSON text */

/* Appends simulated NVIDIA evidence in the NRAS v3 request shape:
 * {"nonce":"<hex>","evidence_list":[{"evidence":"<b64>","certificate":"<b64 PEM>"}],"arch":"HOPPER"}
 * The raw evidence starts 11 e0 01 ff, then the nonce (bytes 4..35). 0 or -1. */
int attest_gpu_payload_sim(const uint8_t nonce[32], buf_t *out);

/* Fills the provider-independent parts (mode, quote over report_data, event log, info,
 * vm_config; not the GPU payload). Buffers are appended to. 0 or -1. */
int attest_sim_parts(attest_sim_t *s, const uint8_t report_data[64], attest_parts_t *p);

/* Appends the full /v1/attestation/report body (compact JSON, reference-proxy §8.4 order plus
 * attestation_mode and simulated, then all_attestations). 0, or -1 on bad identity / ENOMEM. */
int attest_report_json(attest_sim_t *s, const attest_identity_t *id, const uint8_t nonce[32],
                       buf_t *out);

#endif
