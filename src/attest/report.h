/* The /v1/attestation/report body, assembled from the parts every quote provider produces
 * (simulated, dstack, tappd, configfs-tsm), in the reference's field order
 * (shared/docs/reference-proxy.md §8.4) plus our labels. Pure functions; any thread. */
#ifndef VP_ATTEST_REPORT_H
#define VP_ATTEST_REPORT_H
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "attest/attest.h"
#include "core/buf.h"

/* What one collection yields. Owned by whoever declares it; attest_parts_free releases. */
typedef struct attest_parts {
    const char *mode;        /* "dstack" | "tappd" | "tsm" | "simulated" (static string) */
    buf_t quote;             /* raw TDX quote bytes */
    buf_t event_log;         /* the agent's event_log string content (JSON array text); may be empty */
    buf_t info;              /* a JSON object text, emitted as is; empty means {} */
    buf_t vm_config;         /* vm_config string content; may be empty */
    buf_t nvidia_payload;    /* JSON text {"nonce","evidence_list","arch"}, emitted as a string */
    buf_t nvswitch_payload;  /* the same shape for the NVSwitches (arch "LS10"); emitted as the
                              * string nvswitch_payload only when not empty */
    char tappd_hash_algorithm[32]; /* tappd: how the agent turned report_data into REPORTDATA */
    char tappd_prefix[64];
    const char *gpu_evidence;      /* NULL, or where nvidia_payload came from: "nvml" | "canned" |
                                    * "none" | "simulated" (emitted as gpu_evidence) */
} attest_parts_t;

void attest_parts_free(attest_parts_t *p);

/* The TLS binding (NEAR's inference-proxy): out = sha256(id || spki_sha256) || nonce. */
void attest_report_data_tls(const uint8_t *id, size_t idlen, const uint8_t spki_sha256[32],
                            const uint8_t nonce[32], uint8_t out[64]);

/* Version 3, the GPU binding (docs/API.md): out[0:32] = sha256(ATTEST_V3_DOMAIN ‖ id ‖
 * spki_sha256 or 32 zero bytes ‖ sha256(nvidia_payload) ‖ sha256(nvswitch_payload) or 32 zero
 * bytes when there is none), out[32:64] = nonce. The payloads are the exact bytes of the
 * report's nvidia_payload and nvswitch_payload strings (empty: sha256 of nothing for the GPU
 * part, zeros for the switch part). spki NULL: no TLS binding. */
#define ATTEST_V3_DOMAIN "vllm-proxy/report-data/v3"
void attest_report_data_v3(const uint8_t *id, size_t idlen, const uint8_t *spki_sha256,
                           const void *gpu, size_t gpu_len, const void *sw, size_t sw_len,
                           const uint8_t nonce[32], uint8_t out[64]);

/* sha256 of the SubjectPublicKeyInfo DER of the first certificate in a PEM file.
 * 0, or -1 with err. */
int attest_tls_spki_sha256_file(const char *pem_path, uint8_t out[32], char *err, size_t errlen);
/* The same from an open file (name for the message). */
int attest_tls_spki_sha256_stream(FILE *f, const char *name, uint8_t out[32], char *err, size_t errlen);

/* Options of one report. */
typedef struct attest_report_opts {
    const char *tls_fingerprint_hex; /* non-NULL: report_data used the TLS binding; emitted */
    const char *nonce_source;        /* "client" | "server" | NULL (field omitted) */
    /* ACI E2EE v2's keys (sign/aci_keys.h): the e2ee_public_keys JSON array and the keyset
     * digest, emitted as e2ee_public_keys and aci_keyset_digest; NULL: omitted. */
    const char *e2ee_keys_json;
    const char *aci_keyset_digest;
    /* The Rust proxy's model_name, and what the chat signatures cover (signed_text_format:
     * "req:resp" or "model:req:resp"); NULL: omitted. */
    const char *model_name;
    const char *signed_text_format;
    /* 1: event_log is the agent's event log as JSON (it must be a JSON array; "" gives []), as
     * nearai's proxies serve it; 0: the agent's text as a JSON string (the reference). */
    int event_log_array;
    /* 3: the report's report_data is version 3's (attest_report_data_v3); emitted as
     * "report_version":3. 0: omitted (the reference's report). */
    int report_version;
} attest_report_opts_t;

/* 1 when an event log text is usable with event_log_array: empty, or a JSON array (strict). */
int attest_event_log_is_array(const char *text, size_t len);

/* Appends the compact JSON body: signing_address, signing_algo, request_nonce, intel_quote,
 * nvidia_payload, info, quote, event_log, vm_config, signing_public_key, [model_name],
 * [signed_text_format], [tls_cert_fingerprint], attestation_mode, [tappd_hash_algorithm, tappd_prefix],
 * [gpu_evidence], [e2ee_public_keys, aci_keyset_digest],
 * [simulated:true], then all_attestations (one element: the same fields), then
 * [nonce_source]. 0, or -1 on a bad identity, an event log that is not an array with
 * event_log_array, or ENOMEM (out unchanged). */
int attest_report_build(const attest_identity_t *id, const uint8_t nonce[32], const attest_parts_t *p,
                        const attest_report_opts_t *opts, buf_t *out);

/* 1 when id is usable (all strings set, 1..32 id bytes). */
int attest_identity_ok(const attest_identity_t *id);

#endif
