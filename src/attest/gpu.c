/* NVIDIA GPU evidence (see gpu.h): NVML through nvml_loader on one helper thread per source
 * with a deadline and a process-wide "one collection at a time" gate, nvtrust's payload
 * shape byte for byte, and nvtrust's canned no-GPU evidence. */
#include "attest/gpu.h"

#include <errno.h>
#include <json-c/json.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "attest/gpu_canned.h"
#include "core/hex.h"
#include "core/json.h"
#include "core/log.h"
#include "core/pem.h"
#include "nvidia/evidence.h"
#include "nvidia/nvml_loader.h"

#define SPDM_NONCE_OFFSET 4 /* GET_MEASUREMENTS request: version, code, param1, param2, nonce */
#define NONCE_LEN 32

/* ---------------------------------------------------------------------------------------- */
/* payload pieces                                                                           */

/* nvtrust's certificate field: the chain NVML returned, leaf first, with its last (root)
 * certificate dropped and nvtrust's bundled device root appended, each re-encoded as PEM,
 * concatenated, then base64. Appends the base64 text to out. */
static int cert_chain_b64(const uint8_t *pem, size_t len, buf_t *out, char *err, size_t errlen)
{
    STACK_OF(X509) *certs = NULL;
    int e = pem_chain_read((const char *)pem, len, NV_MAX_CHAIN_CERTS, &certs);
    if (e == PEM_CHAIN_EMPTY) {
        snprintf(err, errlen, "GPU certificate chain is empty");
        return -1;
    }
    if (e != PEM_CHAIN_OK && e != PEM_CHAIN_NOMEM) {
        /* a damaged certificate must not silently shorten the chain */
        snprintf(err, errlen, "GPU certificate chain: %s", pem_chain_strerror(e));
        return -1;
    }
    int rc = -1, n = certs ? sk_X509_num(certs) : 0;
    BIO *mem = BIO_new(BIO_s_mem());
    X509 *root_cert = nv_device_root();
    if (!certs || !mem || !root_cert)
        goto oom;
    if (n < 2) {
        snprintf(err, errlen, "GPU certificate chain has %d certificate(s), expected a chain", n);
        goto done;
    }
    for (int i = 0; i + 1 < n; i++)
        if (!PEM_write_bio_X509(mem, sk_X509_value(certs, i)))
            goto oom;
    if (!PEM_write_bio_X509(mem, root_cert))
        goto oom;
    char *text;
    long tlen = BIO_get_mem_data(mem, &text);
    if (tlen <= 0 || buf_reserve(out, b64_encoded_len((size_t)tlen) + 1))
        goto oom;
    b64_encode(out->data + out->len, (const uint8_t *)text, (size_t)tlen);
    out->len += b64_encoded_len((size_t)tlen);
    rc = 0;
    goto done;
oom:
    ERR_clear_error();
    snprintf(err, errlen, "out of memory while encoding the GPU certificate chain");
done:
    sk_X509_pop_free(certs, X509_free);
    X509_free(root_cert);
    BIO_free(mem);
    return rc;
}

/* Appends one evidence_list item, key order as nvtrust: certificate, then evidence. */
static int append_item(buf_t *out, int first, const uint8_t *report, size_t report_len,
                       const uint8_t *chain, size_t chain_len, char *err, size_t errlen)
{
    if (buf_puts(out, first ? "{\"certificate\": \"" : ", {\"certificate\": \""))
        goto oom;
    if (cert_chain_b64(chain, chain_len, out, err, errlen))
        return -1;
    if (buf_puts(out, "\", \"evidence\": \"") || buf_reserve(out, b64_encoded_len(report_len) + 1))
        goto oom;
    b64_encode(out->data + out->len, report, report_len);
    out->len += b64_encoded_len(report_len);
    if (buf_puts(out, "\"}"))
        goto oom;
    return 0;
oom:
    snprintf(err, errlen, "out of memory while building the GPU evidence");
    return -1;
}

static const char *arch_name(unsigned arch)
{
    switch (arch) {
    case NVML_DEVICE_ARCH_HOPPER: return "HOPPER";
    case NVML_DEVICE_ARCH_BLACKWELL: return "BLACKWELL";
    default: return NULL;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* process-wide gate and helper-thread jobs                                                 */

enum { JOB_PROBE = 1, JOB_COLLECT };

typedef struct gpu_job {
    int kind;
    int refs;  /* the collector and the helper; guarded by g_mu, last one frees */
    int done;
    uint8_t nonce[NONCE_LEN];
    int rc;
    unsigned count;       /* probe: GPUs seen */
    char cc_note[160];    /* probe: CC state in words, or why it is refused */
    int cc_refused;
    int nonce_mismatch;   /* collect: a GPU's report carried another nonce */
    buf_t items;          /* collect: evidence_list items */
    const char *arch;     /* collect: payload arch */
    char err[256];
} gpu_job_t;

struct gpu_source {
    int mode; /* resolved: GPU_MODE_NVML | CANNED | NONE */
    int allow_cc_off;
    unsigned timeout_ms;
    unsigned nonce_retries;
    /* nvml */
    nvml_lib_t lib;
    int nvml_inited;      /* touched by the helper thread only, then by free after join */
    pthread_t helper;
    int helper_started;
    int helper_busy;      /* running a job (guarded by g_mu) */
    int stopping;         /* guarded by g_mu */
    int orphaned;         /* free() ran while the helper was stuck: it frees the source */
    gpu_job_t *posted;    /* guarded by g_mu */
    /* canned */
    buf_t canned_items;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
/* Set from submission until the helper finishes the NVML work, even when the submitter gave
 * up: one NVML collection at a time, process-wide. */
static int g_busy;
/* gpu_nonce_retries_total, gpu_nonce_failures_total (relaxed atomics) */
static unsigned long long g_nonce_retries, g_nonce_failures;
/* gpu_failures_total (relaxed atomic) */
static unsigned long long g_failures;

static void gate_init(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&g_cv, &a);
    pthread_condattr_destroy(&a);
}

static void job_unref_locked(gpu_job_t *j)
{
    if (--j->refs == 0) {
        buf_free(&j->items);
        free(j);
    }
}

static void nvml_err(const gpu_source_t *g, char *err, size_t errlen, const char *call, int gpu,
                     nvmlReturn_t rc)
{
    if (gpu >= 0)
        snprintf(err, errlen, "NVML %s failed on GPU %d: %s (%d)", call, gpu,
                 nvml_lib_strerror(&g->lib, rc), rc);
    else
        snprintf(err, errlen, "NVML %s failed: %s (%d)", call, nvml_lib_strerror(&g->lib, rc), rc);
}

/* CC state check. 0 = acceptable, 1 = CC off/devtools (note says why), -1 = NVML error. */
static int check_cc(gpu_source_t *g, char *note, size_t notelen, char *err, size_t errlen)
{
    nvmlConfComputeSystemState_t st;
    memset(&st, 0, sizeof(st));
    nvmlReturn_t rc = g->lib.cc_get_state(&st);
    if (rc != NVML_SUCCESS) {
        nvml_err(g, err, errlen, "nvmlSystemGetConfComputeState", -1, rc);
        return -1;
    }
    unsigned multi = NVML_CC_SYSTEM_MULTIGPU_NONE;
    if (g->lib.cc_get_settings) {
        nvmlSystemConfComputeSettings_v1_t s;
        memset(&s, 0, sizeof(s));
        s.version = nvmlSystemConfComputeSettings_v1;
        if (g->lib.cc_get_settings(&s) == NVML_SUCCESS)
            multi = s.multiGpuMode; /* older drivers: not supported, stays NONE */
    }
    /* Protected-PCIe (multi-GPU) systems run with the per-GPU CC feature off. */
    int on = st.ccFeature == NVML_CC_SYSTEM_FEATURE_ENABLED ||
             multi == NVML_CC_SYSTEM_MULTIGPU_PROTECTED_PCIE;
    int devtools = st.devToolsMode != NVML_CC_SYSTEM_DEVTOOLS_MODE_OFF;
    snprintf(note, notelen, "cc feature %u, devtools %u, environment %u, multi-GPU mode %u",
             st.ccFeature, st.devToolsMode, st.environment, multi);
    if (!on || devtools) {
        snprintf(note, notelen, "GPU confidential computing is %s (cc feature %u, devtools %u, "
                 "multi-GPU mode %u)", on ? "in devtools mode" : "off", st.ccFeature,
                 st.devToolsMode, multi);
        return 1;
    }
    return 0;
}

static int ensure_init(gpu_source_t *g, char *err, size_t errlen)
{
    if (g->nvml_inited)
        return 0;
    nvmlReturn_t rc = g->lib.init();
    if (rc != NVML_SUCCESS) {
        nvml_err(g, err, errlen, "nvmlInit_v2", -1, rc);
        return -1;
    }
    g->nvml_inited = 1;
    return 0;
}

static void run_probe(gpu_source_t *g, gpu_job_t *j)
{
    j->rc = -1;
    if (ensure_init(g, j->err, sizeof(j->err)))
        return;
    unsigned n = 0;
    nvmlReturn_t rc = g->lib.device_get_count(&n);
    if (rc != NVML_SUCCESS) {
        nvml_err(g, j->err, sizeof(j->err), "nvmlDeviceGetCount_v2", -1, rc);
        return;
    }
    j->count = n;
    if (n > 0) {
        int cc = check_cc(g, j->cc_note, sizeof(j->cc_note), j->err, sizeof(j->err));
        if (cc < 0)
            return;
        j->cc_refused = cc == 1;
    }
    j->rc = 0;
}

static void run_collect(gpu_source_t *g, gpu_job_t *j)
{
    char *err = j->err;
    size_t errlen = sizeof(j->err);
    nvmlConfComputeGpuCertificate_t *cert = NULL;
    nvmlConfComputeGpuAttestationReport_t *rep = NULL;
    j->rc = -1;
    if (ensure_init(g, err, errlen))
        return;
    unsigned n = 0;
    nvmlReturn_t rc = g->lib.device_get_count(&n);
    if (rc != NVML_SUCCESS) {
        nvml_err(g, err, errlen, "nvmlDeviceGetCount_v2", -1, rc);
        return;
    }
    if (n == 0) {
        snprintf(err, errlen, "No GPU evidence found: NVML reports no GPU");
        return;
    }
    char note[160];
    int cc = check_cc(g, note, sizeof(note), err, errlen);
    if (cc < 0)
        return;
    if (cc == 1 && !g->allow_cc_off) {
        snprintf(err, errlen, "%s; refusing its evidence", note);
        return;
    }
    cert = malloc(sizeof(*cert));
    rep = malloc(sizeof(*rep));
    if (!cert || !rep) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (unsigned i = 0; i < n; i++) {
        nvmlDevice_t dev = NULL;
        if ((rc = g->lib.device_get_handle_by_index(i, &dev)) != NVML_SUCCESS) {
            nvml_err(g, err, errlen, "nvmlDeviceGetHandleByIndex_v2", (int)i, rc);
            goto out;
        }
        nvmlDeviceArchitecture_t arch = 0;
        if ((rc = g->lib.device_get_architecture(dev, &arch)) != NVML_SUCCESS) {
            nvml_err(g, err, errlen, "nvmlDeviceGetArchitecture", (int)i, rc);
            goto out;
        }
        const char *an = arch_name(arch);
        if (!an) {
            snprintf(err, errlen, "GPU %u has architecture %u, which has no CC attestation", i, arch);
            goto out;
        }
        if (j->arch && strcmp(j->arch, an) != 0) {
            snprintf(err, errlen, "GPUs of different architectures (%s, %s)", j->arch, an);
            goto out;
        }
        j->arch = an;

        memset(cert, 0, sizeof(*cert));
        if ((rc = g->lib.cc_get_certificate(dev, cert)) != NVML_SUCCESS) {
            nvml_err(g, err, errlen, "nvmlDeviceGetConfComputeGpuCertificate", (int)i, rc);
            goto out;
        }
        if (cert->attestationCertChainSize == 0 ||
            cert->attestationCertChainSize > sizeof(cert->attestationCertChain)) {
            snprintf(err, errlen, "GPU %u: NVML returned an attestation certificate chain size of "
                     "%u (buffer %zu)", i, cert->attestationCertChainSize,
                     sizeof(cert->attestationCertChain));
            goto out;
        }

        memset(rep, 0, sizeof(*rep));
        memcpy(rep->nonce, j->nonce, NONCE_LEN);
        if ((rc = g->lib.cc_get_attestation_report(dev, rep)) != NVML_SUCCESS) {
            nvml_err(g, err, errlen, "nvmlDeviceGetConfComputeGpuAttestationReport", (int)i, rc);
            goto out;
        }
        if (rep->attestationReportSize < SPDM_NONCE_OFFSET + NONCE_LEN ||
            rep->attestationReportSize > sizeof(rep->attestationReport)) {
            snprintf(err, errlen, "GPU %u: NVML returned an attestation report size of %u "
                     "(buffer %zu)", i, rep->attestationReportSize, sizeof(rep->attestationReport));
            goto out;
        }
        if (memcmp(rep->attestationReport + SPDM_NONCE_OFFSET, j->nonce, NONCE_LEN) != 0) {
            snprintf(err, errlen, "GPU %u: attestation report does not carry the request nonce", i);
            j->nonce_mismatch = 1;
            goto out;
        }
        if (append_item(&j->items, i == 0, rep->attestationReport, rep->attestationReportSize,
                        cert->attestationCertChain, cert->attestationCertChainSize, err, errlen))
            goto out;
    }
    j->rc = 0;
out:
    free(cert);
    free(rep);
}

static void source_release(gpu_source_t *g)
{
    if (g->nvml_inited && g->lib.shutdown)
        g->lib.shutdown(); /* errors ignored, as nvtrust does */
    g->nvml_inited = 0;
    nvml_lib_close(&g->lib);
    buf_free(&g->canned_items);
    free(g);
}

static void *helper_main(void *arg)
{
    gpu_source_t *g = arg;
    pthread_mutex_lock(&g_mu);
    for (;;) {
        while (!g->posted && !g->stopping)
            pthread_cond_wait(&g_cv, &g_mu);
        if (!g->posted)
            break;
        gpu_job_t *j = g->posted;
        g->posted = NULL;
        g->helper_busy = 1;
        pthread_mutex_unlock(&g_mu);

        if (j->kind == JOB_PROBE)
            run_probe(g, j);
        else
            run_collect(g, j);

        pthread_mutex_lock(&g_mu);
        j->done = 1;
        g->helper_busy = 0;
        g_busy = 0;
        job_unref_locked(j);
        pthread_cond_broadcast(&g_cv);
    }
    int orphaned = g->orphaned;
    pthread_mutex_unlock(&g_mu);
    if (orphaned)
        source_release(g);
    return NULL;
}

static void deadline_after(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Runs one job on g's helper within g->timeout_ms. Returns the job (caller unrefs under
 * g_mu) or NULL with err set on timeout/busy/OOM. */
static gpu_job_t *submit(gpu_source_t *g, int kind, const uint8_t *nonce, char *err, size_t errlen)
{
    struct timespec dl;
    deadline_after(&dl, g->timeout_ms);
    gpu_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    j->kind = kind;
    j->refs = 2;
    if (nonce)
        memcpy(j->nonce, nonce, NONCE_LEN);
    pthread_mutex_lock(&g_mu);
    while (g_busy) {
        if (pthread_cond_timedwait(&g_cv, &g_mu, &dl) == ETIMEDOUT && g_busy) {
            pthread_mutex_unlock(&g_mu);
            free(j);
            snprintf(err, errlen, "GPU evidence busy: a previous NVML call has not returned "
                     "within %u ms", g->timeout_ms);
            return NULL;
        }
    }
    g_busy = 1;
    g->posted = j;
    pthread_cond_broadcast(&g_cv);
    while (!j->done) {
        if (pthread_cond_timedwait(&g_cv, &g_mu, &dl) == ETIMEDOUT && !j->done) {
            if (g->posted == j) { /* helper never picked it up: withdraw it */
                g->posted = NULL;
                g_busy = 0;
                j->refs--;
                pthread_cond_broadcast(&g_cv);
            }
            job_unref_locked(j);
            pthread_mutex_unlock(&g_mu);
            snprintf(err, errlen, "NVML did not answer within %u ms", g->timeout_ms);
            LOG_WARN("gpu: NVML did not answer within %u ms; its helper thread stays busy until "
                     "the call returns", g->timeout_ms);
            return NULL;
        }
    }
    pthread_mutex_unlock(&g_mu);
    return j;
}

static void job_release(gpu_job_t *j)
{
    pthread_mutex_lock(&g_mu);
    job_unref_locked(j);
    pthread_mutex_unlock(&g_mu);
}

/* ---------------------------------------------------------------------------------------- */
/* public API                                                                               */

int gpu_mode_parse(const char *s)
{
    if (!s)
        return -1;
    if (!strcasecmp(s, "auto"))
        return GPU_MODE_AUTO;
    if (!strcasecmp(s, "nvml"))
        return GPU_MODE_NVML;
    if (!strcasecmp(s, "canned"))
        return GPU_MODE_CANNED;
    if (!strcasecmp(s, "none"))
        return GPU_MODE_NONE;
    return -1;
}

static int canned_build(gpu_source_t *g, char *err, size_t errlen)
{
    uint8_t report[GPU_CANNED_REPORT_LEN];
    buf_t chain = BUF_INIT;
    int rc = -1;
    if (gpu_canned_report(report) != 0)
        snprintf(err, errlen, "canned GPU report is malformed");
    else if (gpu_canned_chain(&chain) != 0)
        snprintf(err, errlen, "out of memory while building the canned GPU evidence");
    else
        rc = append_item(&g->canned_items, 1, report, sizeof report, (const uint8_t *)chain.data,
                         chain.len, err, errlen);
    buf_free(&chain);
    return rc;
}

static int helper_start(gpu_source_t *g, char *err, size_t errlen)
{
    int e = pthread_create(&g->helper, NULL, helper_main, g);
    if (e) {
        snprintf(err, errlen, "cannot start the NVML helper thread: %s", strerror(e));
        return -1;
    }
    g->helper_started = 1;
    return 0;
}

gpu_source_t *gpu_source_new(const gpu_config_t *cfg, char *err, size_t errlen)
{
    pthread_once(&g_once, gate_init);
    gpu_source_t *g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->allow_cc_off = cfg->allow_cc_off;
    g->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : GPU_DEFAULT_TIMEOUT_MS;
    g->nonce_retries = cfg->nonce_retries > GPU_MAX_NONCE_RETRIES ? GPU_MAX_NONCE_RETRIES
                                                                  : cfg->nonce_retries;
    g->mode = cfg->mode;

    switch (cfg->mode) {
    case GPU_MODE_NONE:
        LOG_WARN("gpu: evidence mode none (reports carry no GPU evidence)");
        return g;
    case GPU_MODE_CANNED:
        if (canned_build(g, err, errlen)) {
            gpu_source_free(g);
            return NULL;
        }
        LOG_WARN("gpu: evidence mode canned: nvtrust's sample Hopper evidence, whose report does "
                 "not carry the request nonce (for tests only)");
        return g;
    case GPU_MODE_AUTO:
    case GPU_MODE_NVML:
        break;
    default:
        snprintf(err, errlen, "unknown GPU evidence mode %d", cfg->mode);
        free(g);
        return NULL;
    }

    int is_auto = cfg->mode == GPU_MODE_AUTO;
    const char *path = (cfg->nvml_path && *cfg->nvml_path) ? cfg->nvml_path : NVML_DEFAULT_LIBRARY;
    char why[256];
    g->mode = GPU_MODE_NVML;
    if (nvml_lib_open(&g->lib, path, why, sizeof(why)) < 0) {
        g->mode = GPU_MODE_NONE;
        goto unusable;
    }
    if (helper_start(g, why, sizeof(why)) < 0) {
        nvml_lib_close(&g->lib);
        g->mode = GPU_MODE_NONE;
        goto unusable;
    }
    gpu_job_t *j = submit(g, JOB_PROBE, NULL, why, sizeof(why));
    if (!j)
        goto unusable_free;
    if (j->rc != 0) {
        snprintf(why, sizeof(why), "%s", j->err);
        job_release(j);
        goto unusable_free;
    }
    unsigned count = j->count;
    int refused = j->cc_refused;
    char note[160];
    snprintf(note, sizeof(note), "%s", j->cc_note);
    job_release(j);
    if (count == 0) {
        snprintf(why, sizeof(why), "NVML reports no GPU");
        goto unusable_free;
    }
    if (refused && !g->allow_cc_off) {
        if (!is_auto) {
            snprintf(err, errlen, "%s; set GPU_ALLOW_CC_OFF=1 to serve its evidence anyway", note);
            gpu_source_free(g);
            return NULL;
        }
        LOG_WARN("gpu: %s: reports will fail until it is on (or GPU_ALLOW_CC_OFF=1)", note);
    } else if (refused) {
        LOG_WARN("gpu: %s, served anyway (GPU_ALLOW_CC_OFF)", note);
    }
    LOG_INFO("gpu: evidence mode nvml%s: %u GPU(s) via %s, %s", is_auto ? " (auto)" : "", count,
             path, note);
    return g;

unusable_free:
    /* The helper may be stuck in NVML: free() hands the source over to it in that case. */
    gpu_source_free(g);
    g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->allow_cc_off = cfg->allow_cc_off;
    g->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : GPU_DEFAULT_TIMEOUT_MS;
unusable:
    g->mode = GPU_MODE_NONE;
    if (!is_auto) {
        snprintf(err, errlen, "GPU_EVIDENCE=nvml: %s", why);
        free(g);
        return NULL;
    }
    LOG_WARN("gpu: evidence mode none (auto: %s): reports carry no GPU evidence", why);
    return g;
}

const char *gpu_source_mode(const gpu_source_t *g)
{
    switch (g->mode) {
    case GPU_MODE_NVML: return "nvml";
    case GPU_MODE_CANNED: return "canned";
    default: return "none";
    }
}

int gpu_source_is_canned(const gpu_source_t *g)
{
    return g && g->mode == GPU_MODE_CANNED;
}

static int payload_append(buf_t *out, const uint8_t nonce[32], const buf_t *items, const char *arch)
{
    char hex[HEX_SIZE(NONCE_LEN)];
    hex_encode(hex, nonce, NONCE_LEN);
    size_t mark = out->len;
    if (buf_printf(out, "{\"nonce\": \"%s\", \"evidence_list\": [", hex) ||
        buf_append(out, items->data, items->len) ||
        buf_printf(out, "], \"arch\": \"%s\"}", arch)) {
        out->len = mark;
        if (out->data && out->len < out->cap)
            out->data[out->len] = '\0';
        return -1;
    }
    return 0;
}

static int collect(gpu_source_t *g, const uint8_t nonce[32], buf_t *payload_json, char *err,
                   size_t errlen)
{
    return gpu_evidence_collect_all(g, nonce, payload_json, NULL, err, errlen);
}

int gpu_evidence_collect_all(gpu_source_t *g, const uint8_t nonce[32], buf_t *payload_json,
                             buf_t *switches_json, char *err, size_t errlen)
{
    (void)switches_json;
    if (g->mode == GPU_MODE_NONE)
        return 1;
    if (g->mode == GPU_MODE_CANNED) {
        if (payload_append(payload_json, nonce, &g->canned_items, "HOPPER")) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }
    gpu_job_t *j;
    unsigned backoff = GPU_RETRY_FIRST_MS;
    for (unsigned attempt = 0;; attempt++) {
        if (!(j = submit(g, JOB_COLLECT, nonce, err, errlen)))
            return -1;
        if (j->rc == 0 || !j->nonce_mismatch)
            break;
        if (attempt >= g->nonce_retries) {
            __atomic_fetch_add(&g_nonce_failures, 1, __ATOMIC_RELAXED);
            if (g->nonce_retries) {
                size_t l = strlen(j->err);
                snprintf(j->err + l, sizeof j->err - l, " (after %u retries)", g->nonce_retries);
            }
            break;
        }
        /* Another process's NVML request answered ours: collect everything again. */
        __atomic_fetch_add(&g_nonce_retries, 1, __ATOMIC_RELAXED);
        LOG_WARN("gpu: %s (another process using NVML?); collecting again in %u ms (retry %u of %u)",
                 j->err, backoff, attempt + 1, g->nonce_retries);
        job_release(j);
        struct timespec ts = {(time_t)(backoff / 1000), (long)(backoff % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        backoff = backoff * 2 > GPU_RETRY_MAX_MS ? GPU_RETRY_MAX_MS : backoff * 2;
    }
    int rc = j->rc;
    if (rc == 0 && payload_append(payload_json, nonce, &j->items, j->arch)) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    } else if (rc != 0) {
        snprintf(err, errlen, "%s", j->err);
        LOG_WARN("gpu: evidence collection failed: %s", j->err);
    }
    job_release(j);
    return rc;
}

int gpu_evidence_collect(gpu_source_t *g, const uint8_t nonce[32], buf_t *payload_json, char *err,
                         size_t errlen)
{
    int rc = collect(g, nonce, payload_json, err, errlen);
    if (rc < 0)
        __atomic_fetch_add(&g_failures, 1, __ATOMIC_RELAXED);
    return rc;
}

unsigned long long gpu_failures_total(void) { return __atomic_load_n(&g_failures, __ATOMIC_RELAXED); }

unsigned long long gpu_nonce_retries_total(void)
{
    return __atomic_load_n(&g_nonce_retries, __ATOMIC_RELAXED);
}

unsigned long long gpu_nonce_failures_total(void)
{
    return __atomic_load_n(&g_nonce_failures, __ATOMIC_RELAXED);
}

void gpu_source_free(gpu_source_t *g)
{
    if (!g)
        return;
    if (g->helper_started) {
        pthread_mutex_lock(&g_mu);
        g->stopping = 1;
        pthread_cond_broadcast(&g_cv);
        if (g->helper_busy || g->posted) {
            /* Stuck inside NVML: the helper releases NVML and the source when it returns. */
            g->orphaned = 1;
            pthread_detach(g->helper);
            pthread_mutex_unlock(&g_mu);
            return;
        }
        pthread_mutex_unlock(&g_mu);
        pthread_join(g->helper, NULL);
    }
    source_release(g);
}

int gpu_payload_from_nvattest(const uint8_t nonce[32], const char *text, size_t len, buf_t *payload,
                              char *err, size_t errlen)
{
    struct json_object *doc = json_parse_strict(text, len), *list = doc;
    char want[HEX_SIZE(NONCE_LEN)];
    buf_t items = BUF_INIT;
    const char *arch = NULL;
    int rc = -1;
    hex_encode(want, nonce, NONCE_LEN);
    if (doc && json_object_is_type(doc, json_type_object))
        json_object_object_get_ex(doc, "evidence_list", &list);
    if (!list || !json_object_is_type(list, json_type_array) || json_object_array_length(list) == 0) {
        snprintf(err, errlen, "the agent's GPU evidence is not a non-empty nvattest list");
        goto out;
    }
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        struct json_object *it = json_object_array_get_idx(list, i);
        size_t el = 0, cl = 0;
        const char *ev = json_get_str(it, "evidence", &el), *cert = json_get_str(it, "certificate", &cl);
        const char *a = json_get_str(it, "arch", NULL), *n = json_get_str(it, "nonce", NULL);
        uint8_t head[48]; /* 64 base64 characters */
        if (!ev || !cert || el < 64) {
            snprintf(err, errlen, "GPU %zu: the agent's item has no evidence or certificate", i);
            goto out;
        }
        /* the signed request's nonce (bytes 4..35) must be ours, whatever the item says */
        if (b64_decode(head, sizeof head, ev, 64) < (long)(SPDM_NONCE_OFFSET + NONCE_LEN) ||
            memcmp(head + SPDM_NONCE_OFFSET, nonce, NONCE_LEN) != 0 || (n && strcasecmp(n, want) != 0)) {
            snprintf(err, errlen, "GPU %zu: the agent's evidence does not carry the request nonce", i);
            goto out;
        }
        a = a ? a : "HOPPER";
        if (arch && strcmp(arch, a) != 0) {
            snprintf(err, errlen, "GPUs of different architectures (%s, %s)", arch, a);
            goto out;
        }
        arch = a;
        if (buf_puts(&items, i ? ", {\"certificate\": " : "{\"certificate\": ") ||
            buf_json_str(&items, cert, cl) || buf_puts(&items, ", \"evidence\": ") ||
            buf_json_str(&items, ev, el) || buf_puts(&items, "}"))
            goto oom;
    }
    if (strcmp(arch, "HOPPER") != 0 && strcmp(arch, "BLACKWELL") != 0) {
        snprintf(err, errlen, "GPU architecture %.32s has no CC attestation", arch);
        goto out;
    }
    if (payload_append(payload, nonce, &items, arch))
        goto oom;
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
out:
    buf_free(&items);
    json_object_put(doc);
    return rc;
}
