/* NVIDIA GPU evidence for the attestation report: the NRAS v3 payload nvtrust builds,
 *   {"nonce": "<64 hex>", "evidence_list": [{"certificate": <b64 PEM chain>, "evidence":
 *    <b64 raw SPDM report>}, ...], "arch": "HOPPER"}
 * (Python json.dumps separators, GPUs in device order), collected through NVML loaded with
 * dlopen, or canned (nvtrust's no-GPU sample), or none.
 *
 * Threads: gpu_source_new/gpu_source_free run on one thread (start-up / shutdown);
 * gpu_evidence_collect may be called from any thread (it blocks: call it on the libuv thread
 * pool, never on a loop). Collections are serialised process-wide and bounded by timeout_ms:
 * all NVML calls of a source run on one helper thread owned by that source, so a stalled
 * NVML call holds at most that one thread; callers stop waiting at their deadline and later
 * callers wait (within their own deadline) until the stalled call returns. */
#ifndef VP_ATTEST_GPU_H
#define VP_ATTEST_GPU_H
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum { GPU_MODE_AUTO = 0, GPU_MODE_NVML, GPU_MODE_CANNED, GPU_MODE_NONE };

#define GPU_DEFAULT_TIMEOUT_MS 30000u

typedef struct gpu_config {
    int mode;               /* GPU_MODE_AUTO|NVML|CANNED|NONE */
    const char *nvml_path;  /* NULL/"" = libnvidia-ml.so.1 through the dlopen search path */
    int allow_cc_off;       /* accept evidence while CC is off or in devtools mode */
    unsigned timeout_ms;    /* per collection (all GPUs); 0 = GPU_DEFAULT_TIMEOUT_MS */
    unsigned nonce_retries; /* collections repeated when a GPU's report carries another nonce */
    int nvswitch;           /* 1: also collect NVSwitch evidence through NSCQ (nvml mode only) */
    const char *nscq_path;  /* NULL/"" = libnvidia-nscq.so.2 through the dlopen search path */
    unsigned nvswitch_expected; /* NSCQ enumerating fewer switches fails the collection */
} gpu_config_t;

/* Switches one NSCQ collection accepts; more is an error. */
#define GPU_MAX_NVSWITCHES 64u

/* Backoff before the first repeated collection; doubled each time, at most GPU_RETRY_MAX_MS. */
#define GPU_RETRY_FIRST_MS 50u
#define GPU_RETRY_MAX_MS 1000u
#define GPU_MAX_NONCE_RETRIES 10u

typedef struct gpu_source gpu_source_t;

/* Parses "auto" | "nvml" | "canned" | "none" (any case); -1 if unknown. */
int gpu_mode_parse(const char *s);

/* auto: nvml when the library loads, initialises and sees >= 1 GPU, else none (one log line
 * says which and why). nvml: those conditions are required, and CC must be on unless
 * allow_cc_off. canned: no NVML at all. NULL with a reason in err on failure. */
gpu_source_t *gpu_source_new(const gpu_config_t *cfg, char *err, size_t errlen);

/* "nvml" | "canned" | "none": what the source actually does (auto is resolved). */
const char *gpu_source_mode(const gpu_source_t *g);

/* 1 when the evidence is nvtrust's canned no-GPU sample: its SPDM report carries nvtrust's
 * fixed nonce, not the request nonce (the payload's "nonce" is still the request nonce), so
 * the report must label it as canned outside the payload. */
int gpu_source_is_canned(const gpu_source_t *g);

/* BLOCKING. Appends the payload JSON text for this nonce to payload_json. Returns 0; 1 with
 * nothing appended in mode none; -1 with a cause in err suitable for a 503 message (NVML
 * failure, GPU CC off, timeout, busy with a stalled call). payload_json is left as it was on
 * failure.
 *
 * Every GPU's SPDM report must carry the request nonce. When another process on the host
 * drives NVML at the same time, a report can come back with that process's nonce: then the
 * whole collection (every GPU) is repeated, at most nonce_retries times, after a backoff of
 * GPU_RETRY_FIRST_MS doubling up to GPU_RETRY_MAX_MS; each repetition is counted in
 * gpu_nonce_retries_total() and a collection that still fails in
 * gpu_nonce_failures_total(). */
int gpu_evidence_collect(gpu_source_t *g, const uint8_t nonce[32], buf_t *payload_json, char *err,
                         size_t errlen);

/* The same, and with gpu_config_t.nvswitch (nvml mode) the NVSwitches' evidence for the
 * same nonce appended to switches_json as {"nonce","evidence_list","arch":"LS10"}, in the
 * shape of the GPU payload, collected in the same helper-thread job through NSCQ
 * (libnvidia-nscq.so.2, dlopen at the first collection that asks, then kept with one NSCQ
 * session): every switch UUID under /drv/nvswitch/{device}/uuid, each one's
 * /<uuid>/config/certificate and, after nscq_session_set_input(nonce), its
 * /<uuid>/config/attestation_report, which must carry the nonce at bytes 4..35 (a foreign
 * nonce repeats the whole collection as for GPUs). The library missing, no switch, fewer than
 * gpu_config_t.nvswitch_expected, a switch
 * that is not LS10 or any NSCQ error fails the whole collection (-1, err says which).
 * Nothing appended to switches_json without gpu_config_t.nvswitch or in canned/none mode;
 * switches_json NULL: GPUs only. */
int gpu_evidence_collect_all(gpu_source_t *g, const uint8_t nonce[32], buf_t *payload_json,
                             buf_t *switches_json, char *err, size_t errlen);

/* The NRAS-shaped payload (as gpu_evidence_collect makes it) from nvattest collect-evidence
 * output (a list of {"arch","certificate","evidence","nonce",...}, e.g. what the dstack
 * agent's AttestGpu returns): every item's signed SPDM request must carry nonce. 0, or -1
 * with err (payload unchanged). */
int gpu_payload_from_nvattest(const uint8_t nonce[32], const char *text, size_t len, buf_t *payload,
                              char *err, size_t errlen);

/* Process-wide counters (all sources, since start): collections repeated because a report
 * carried another nonce, and collections that failed for that reason after every retry. */
unsigned long long gpu_nonce_retries_total(void);
unsigned long long gpu_nonce_failures_total(void);
/* Process-wide: gpu_evidence_collect calls that returned -1, whatever the cause. */
unsigned long long gpu_failures_total(void);

/* Releases the source. If its helper thread is still stuck inside NVML, the thread is
 * detached and releases NVML and the source itself when the call returns. */
void gpu_source_free(gpu_source_t *g);

#endif
