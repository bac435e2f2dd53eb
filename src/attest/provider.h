/* Quote providers and the attestation service behind /v1/attestation/report.
 *
 * A provider makes the TEE-specific parts of a report (quote over a report_data, event log,
 * info, vm_config): the dstack guest agent, legacy tappd, configfs-tsm, or the simulated
 * provider. ATTESTATION=auto picks dstack, then tappd, then configfs-tsm, and never falls back
 * to simulated. attest_provider_open probes the chosen provider (one real call) so that a
 * broken TEE stops the start-up instead of every request. Each backend is a function table in
 * its own file (attest/provider_ops.h); the service lives in attest/service.c.
 *
 * The service adds GPU evidence (collected in parallel with the quote, on its own thread),
 * the identity from the signer, the optional TLS binding, and a cache of server-nonce
 * reports (TTL, refreshed in the background at half the TTL, single-flight: concurrent
 * requests for the same report share one collection).
 *
 * Threads: open/free and derive_keys at start-up; collect and every attest_service_* call
 * except new/free, try_cached, admit/release and refresh_cancelled BLOCK and must run on libuv
 * thread-pool threads (never on a loop); those named take the service's lock only for a copy
 * or a count (it is never held across a collection) and may run on a loop. All are safe to
 * call concurrently. Output buffers are appended to and owned by the caller. */
#ifndef VP_ATTEST_PROVIDER_H
#define VP_ATTEST_PROVIDER_H
#include <stddef.h>
#include <stdint.h>

#include "attest/report.h"
#include "attest/sim.h"
#include "core/buf.h"
#include "sign/aci_keys.h"
#include "sign/signer.h"

typedef enum attest_kind { ATTEST_SIMULATED, ATTEST_DSTACK, ATTEST_TAPPD, ATTEST_TSM } attest_kind_t;

typedef struct attest_provider_config {
    const char *mode;            /* auto | dstack | tappd | tsm | simulated */
    const char *dstack_endpoint; /* DSTACK_SIMULATOR_ENDPOINT; NULL/"": probe the default sockets */
    const char *tappd_endpoint;  /* TAPPD_SIMULATOR_ENDPOINT; NULL/"": probe the default sockets */
    const char *tsm_root;        /* NULL/"": /sys/kernel/config/tsm/report */
    unsigned timeout_ms;         /* per agent call attempt; 0: 5000 */
} attest_provider_config_t;

typedef struct attest_provider attest_provider_t;

/* NULL with err when the provider cannot be used. Logs which one was chosen. */
attest_provider_t *attest_provider_open(const attest_provider_config_t *c, char *err, size_t errlen);
void attest_provider_free(attest_provider_t *p);
attest_kind_t attest_provider_kind(const attest_provider_t *p);
const char *attest_provider_mode(const attest_provider_t *p);  /* the report's attestation_mode */
const char *attest_provider_where(const attest_provider_t *p); /* endpoint or path, for logs */

/* Quote over report_data plus event log, info and vm_config (not the GPU payload); checks
 * that the quote carries report_data. 0, or -1 with err naming the cause. */
int attest_provider_collect(attest_provider_t *p, const uint8_t report_data[64], attest_parts_t *parts,
                            char *err, size_t errlen);

/* dstack only: the KMS-derived signing secrets, GetKey paths "<model>/ecdsa-signing-key"
 * (secp256k1) and "<model>/ed25519-signing-key" (ed25519). Same app + model -> same keys,
 * across restarts and replicas. 0, or -1 with err (also for providers without a KMS). */
int attest_provider_derive_keys(attest_provider_t *p, const char *model_name, uint8_t ecdsa_sk[32],
                                uint8_t ed25519_seed[32], char *err, size_t errlen);

/* dstack only: one KMS key for a GetKey path (ACI's E2EE keys, sign/aci_keys.h). 0, or -1
 * with err (also for providers without a KMS). */
int attest_provider_derive_key(attest_provider_t *p, const char *path, const char *algorithm,
                               uint8_t key[32], char *err, size_t errlen);

/* dstack only (GPU_EVIDENCE=dstack): the agent's AttestGpu for nonce (dstack/agent.h), turned
 * into the NRAS-shaped payload (attest/gpu.h gpu_payload_from_nvattest). BLOCKS. 0, or -1 with
 * err (also for other providers, and for an agent without AttestGpu). */
int attest_provider_attest_gpu(attest_provider_t *p, const uint8_t nonce[32], buf_t *payload,
                               char *err, size_t errlen);

/* GPU evidence collector (BLOCKING; same shape as gpu_evidence_collect): appends
 * {"nonce","evidence_list","arch"} JSON for nonce to payload and, on a machine with NVSwitches,
 * the same shape for the switches (arch "LS10") to switches. 0, 1 (no GPU evidence), or -1
 * with err. */
typedef int (*attest_gpu_fn)(void *ctx, const uint8_t nonce[32], buf_t *payload, buf_t *switches,
                             char *err, size_t errlen);

typedef struct attest_service_config {
    unsigned cache_ttl_s;          /* server-nonce report cache; 0 disables it */
    const uint8_t *tls_spki_sha256;/* 32 bytes (copied), or NULL: no TLS binding offered */
    const char *tls_cert_path;     /* the file tls_spki_sha256 came from (copied), re-read by
                                    * attest_service_tls_check; NULL: the SPKI never changes */
    attest_gpu_fn gpu;             /* NULL: the simulated GPU payload */
    void *gpu_ctx;
    const char *gpu_label;         /* static string emitted as gpu_evidence, or NULL */
    /* GPU_EXPECTED_COUNT, NVSWITCH_EXPECTED_COUNT: a collection with fewer devices fails (the
     * report answers 503 naming it); 0: no requirement. */
    unsigned gpu_expected, nvswitch_expected;
    /* ACI E2EE v2's keys and keyset (sign/aci_keys.h), read with aci_keys_current for each
     * report (so a renewed keyset is the one bound); borrowed (must outlive the service),
     * NULL: no ACI. */
    aci_keys_t *aci;
    /* Copied into every report (attest_report_opts_t): model_name and signed_text_format
     * (borrowed, NULL: omitted), and the event log as a JSON array (1) or string (0). */
    const char *model_name;
    const char *signed_text_format;
    int event_log_array;
} attest_service_config_t;

typedef struct attest_service attest_service_t;

/* Takes ownership of p; borrows signer (must outlive the service). NULL on ENOMEM. */
attest_service_t *attest_service_new(attest_provider_t *p, const signer_t *signer,
                                     const attest_service_config_t *c);
void attest_service_free(attest_service_t *s);
attest_provider_t *attest_service_provider(attest_service_t *s);
int attest_service_has_tls(const attest_service_t *s);

/* TLS_CERT_PATH rotation. BLOCKS briefly (open, fstat; the PEM parsed only when the file
 * changed): call it on the thread pool, never on a loop. When the file's identity (device,
 * inode, size, mtime, ctime) differs from the version last read, it is parsed; a new SPKI
 * replaces the old one at once, every cached TLS-bound report is dropped, and a collection
 * that started with the old one is not cached. A file that cannot be opened or parsed keeps
 * the last good SPKI and logs one error (until it parses again). Every TLS-bound collection
 * calls it before it takes the SPKI; the server also calls it on a timer
 * (TLS_CERT_CHECK_INTERVAL). 0, or -1 when the file is unusable (the old key stays). */
int attest_service_tls_check(attest_service_t *s);
/* Changes of SPKI seen and failed checks so far (any thread). */
void attest_service_tls_counts(attest_service_t *s, unsigned long long *reloads,
                               unsigned long long *failures);
/* The SPKI sha256 reports bind now, 64 hex ("" without TLS) (any thread). */
void attest_service_tls_current(attest_service_t *s, char hex[65]);

/* algo: 0 ecdsa, 1 ed25519; tls: binding flags, ATTEST_BIND_TLS (only when has_tls) and
 * ATTEST_BIND_GPU (version 3: report_data = attest_report_data_v3, GPU evidence collected
 * before the quote). Each combination has its own cache slot. */
#define ATTEST_BIND_TLS 1
#define ATTEST_BIND_GPU 2

/* A fresh report for a client nonce (nonce_source "client"). 0, or -1 with err. */
int attest_service_fresh(attest_service_t *s, int algo, int tls, const uint8_t nonce[32], buf_t *out,
                         char *err, size_t errlen);

/* A server-nonce report from the cache (collected now when missing or expired, shared with
 * concurrent callers). *want_refresh is set to 1 when the entry passed half its TTL and the
 * caller should schedule attest_service_refresh on the pool. 0, or -1 with err. */
int attest_service_cached(attest_service_t *s, int algo, int tls, buf_t *out, int *want_refresh,
                          char *err, size_t errlen);

/* The cached server-nonce report if the cache holds a fresh one: 0 (appended to out;
 * *want_refresh as above), 1 when it does not (or the cache is off: use
 * attest_service_cached on the pool), -1 out of memory. Never waits for a collection. */
int attest_service_try_cached(attest_service_t *s, int algo, int tls, buf_t *out, int *want_refresh);

/* Admission of the collections clients cause (a client nonce, or a cache miss): at most
 * max_total pending (queued or running) in the process and max_per_client per client
 * (0 = no bound). client < ATTEST_MAX_CLIENTS (e.g. the index of the bearer token). On
 * ATTEST_ADMIT_OK the caller calls attest_service_release once the job is done or cancelled. */
#define ATTEST_MAX_CLIENTS 65 /* the 64 bearer tokens and the callers of a public report */
enum { ATTEST_ADMIT_OK = 0, ATTEST_ADMIT_CLIENT_FULL = 1, ATTEST_ADMIT_FULL = 2 };
int attest_service_admit(attest_service_t *s, unsigned client, unsigned max_total,
                         unsigned max_per_client);
void attest_service_release(attest_service_t *s, unsigned client);

/* GET /v1/aci/attestation (spec/aci.md §3.2, §4.1; formats document §2.1): a quote over
 * report_data = sha256({"keyset_digest":"<digest>","nonce":"<nonce_hex>"|null,
 * "purpose":"aci.report_data.v1"}) zero-padded to 64 bytes, and the report around it:
 * {api_version, workload_keyset_digest, attestation{tee_type, workload_keyset, report_data,
 * source_provenance, evidence{quote, quote_report_data, event_log, vm_config, info,
 * attestation_mode, [simulated]}}, service_capabilities}. nonce_hex: 64 lowercase hex or NULL
 * (the unchallenged form). BLOCKS. 0, or -1 with err (also when the service has no ACI
 * keyset). */
int attest_service_aci(attest_service_t *s, const char *nonce_hex, buf_t *out, char *err,
                       size_t errlen);
/* The ACI report_data for a digest and a nonce (NULL: null), 64 bytes. */
void attest_aci_report_data(const char *digest, const char *nonce_hex, uint8_t out[64]);

/* Whether a report can be produced now (GET /healthz): a cached report is fresh, or the last
 * collection succeeded (none yet counts as success: the provider answered its start-up
 * probe). 1, or 0 with the last collection's error in why. Takes the service's lock briefly
 * (never waits for a collection): any thread. */
int attest_service_ready(attest_service_t *s, char *why, size_t whylen);
/* Background refresh after want_refresh; does nothing if someone else already refreshed. */
void attest_service_refresh(attest_service_t *s, int algo, int tls);
/* The caller could not schedule the refresh it was asked for (any thread; does not block). */
void attest_service_refresh_cancelled(attest_service_t *s, int algo, int tls);

#endif
