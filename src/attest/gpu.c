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
#include "nvidia/nscq_loader.h"
#include "nvidia/nvml_loader.h"

#define SPDM_NONCE_OFFSET 4 /* GET_MEASUREMENTS request: version, code, param1, param2, nonce */
#define NONCE_LEN 32

/* ---------------------------------------------------------------------------------------- */
/* payload pieces                                                                           */

/* nvtrust's certificate field: the chain NVML returned, leaf first, with its last (root)
 * certificate dropped and nvtrust's bundled device root appended, each re-encoded as PEM,
 * concatenated, then base64. Appends the base64 text to out. */
static int cert_chain_b64(const uint8_t *pem, size_t len, buf_t *out, const char *noun, char *err,
                          size_t errlen)
{
    STACK_OF(X509) *certs = NULL;
    int e = pem_chain_read((const char *)pem, len, NV_MAX_CHAIN_CERTS, &certs);
    if (e == PEM_CHAIN_EMPTY) {
        snprintf(err, errlen, "%s certificate chain is empty", noun);
        return -1;
    }
    if (e != PEM_CHAIN_OK && e != PEM_CHAIN_NOMEM) {
        /* a damaged certificate must not silently shorten the chain */
        snprintf(err, errlen, "%s certificate chain: %s", noun, pem_chain_strerror(e));
        return -1;
    }
    int rc = -1, n = certs ? sk_X509_num(certs) : 0;
    BIO *mem = BIO_new(BIO_s_mem());
    X509 *root_cert = nv_device_root();
    if (!certs || !mem || !root_cert)
        goto oom;
    if (n < 2) {
        snprintf(err, errlen, "%s certificate chain has %d certificate(s), expected a chain", noun, n);
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
    snprintf(err, errlen, "out of memory while encoding the %s certificate chain", noun);
done:
    sk_X509_pop_free(certs, X509_free);
    X509_free(root_cert);
    BIO_free(mem);
    return rc;
}

/* Appends one evidence_list item, key order as nvtrust: certificate, then evidence. */
static int append_item(buf_t *out, int first, const uint8_t *report, size_t report_len,
                       const uint8_t *chain, size_t chain_len, const char *noun, char *err,
                       size_t errlen)
{
    if (buf_puts(out, first ? "{\"certificate\": \"" : ", {\"certificate\": \""))
        goto oom;
    if (cert_chain_b64(chain, chain_len, out, noun, err, errlen))
        return -1;
    if (buf_puts(out, "\", \"evidence\": \"") || buf_reserve(out, b64_encoded_len(report_len) + 1))
        goto oom;
    b64_encode(out->data + out->len, report, report_len);
    out->len += b64_encoded_len(report_len);
    if (buf_puts(out, "\"}"))
        goto oom;
    return 0;
oom:
    snprintf(err, errlen, "out of memory while building the %s evidence", noun);
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
    int want_switches;    /* collect: NVSwitches through NSCQ too */
    buf_t sw_items;       /* collect: the switches' evidence_list items */
    unsigned sw_count;
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
    /* NSCQ (NVSwitches): loaded and its session opened by the helper at first use */
    int nvswitch;
    unsigned nvswitch_expected;
    char nscq_path[512];
    nscq_lib_t nscq;
    int nscq_loaded;
    nscq_session_t nscq_session;
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
        buf_free(&j->sw_items);
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

/* ---------------------------------------------------------------------------------------- */
/* NVSwitches through NSCQ (helper thread only)                                             */

typedef struct sw_uuids {
    const nscq_lib_t *lib;
    nscq_label_t labels[GPU_MAX_NVSWITCHES];
    unsigned n;
    int overflow;
    nscq_rc_t rc; /* first error a callback reported */
} sw_uuids_t;

static void on_uuid(const nscq_uuid_t *device, nscq_rc_t rc, const nscq_uuid_t *uuid, void *user)
{
    (void)device;
    sw_uuids_t *u = user;
    if (rc < 0 || !uuid) {
        if (!u->rc)
            u->rc = rc < 0 ? rc : NSCQ_RC_ERROR_UNEXPECTED_VALUE;
        return;
    }
    if (u->n >= GPU_MAX_NVSWITCHES) {
        u->overflow = 1;
        return;
    }
    nscq_label_t *l = &u->labels[u->n];
    memset(l, 0, sizeof(*l));
    nscq_rc_t lr = u->lib->uuid_to_label(uuid, l, 0);
    l->data[sizeof(l->data) - 1] = '\0';
    if (lr < 0 || !l->data[0] || strchr(l->data, '/')) {
        if (!u->rc)
            u->rc = lr < 0 ? lr : NSCQ_RC_ERROR_UNEXPECTED_VALUE;
        return;
    }
    u->n++;
}

typedef struct sw_one {
    nscq_rc_t rc;
    int got, other_arch;
    nscq_arch_t arch;
    nscq_attestation_certificate_t *cert;
    nscq_attestation_report_t *rep;
} sw_one_t;

static void on_arch(const nscq_uuid_t *device, nscq_rc_t rc, nscq_arch_t arch, void *user)
{
    (void)device;
    sw_one_t *o = user;
    if (rc < 0) {
        if (!o->rc)
            o->rc = rc;
        return;
    }
    if (o->got && arch != o->arch)
        o->other_arch = 1;
    o->arch = arch;
    o->got = 1;
}

/* NSCQ hands the certificate and the report over by value. */
static void on_cert(const nscq_uuid_t *device, nscq_rc_t rc, const nscq_attestation_certificate_t cert,
                    void *user)
{
    (void)device;
    sw_one_t *o = user;
    if (rc < 0) {
        o->rc = rc;
        return;
    }
    *o->cert = cert;
    o->got = 1;
}

static void on_report(const nscq_uuid_t *device, nscq_rc_t rc, const nscq_attestation_report_t rep,
                      void *user)
{
    (void)device;
    sw_one_t *o = user;
    if (rc < 0) {
        o->rc = rc;
        return;
    }
    *o->rep = rep;
    o->got = 1;
}

static void nscq_err(char *err, size_t errlen, const char *what, const char *sw, nscq_rc_t rc)
{
    snprintf(err, errlen, "NSCQ %s failed%s%s: %s (%d)", what, sw ? " on NVSwitch " : "",
             sw ? sw : "", nscq_rc_name(rc), rc);
}

/* Loads NSCQ and opens its session (devices mounted) on first use; kept until free. */
static int nscq_ensure(gpu_source_t *g, char *err, size_t errlen)
{
    if (!g->nscq_loaded) {
        if (nscq_lib_open(&g->nscq, g->nscq_path, err, errlen))
            return -1;
        g->nscq_loaded = 1;
    }
    if (!g->nscq_session) {
        nscq_session_result_t r = g->nscq.session_create(NSCQ_SESSION_CREATE_MOUNT_DEVICES);
        if (r.rc < 0 || !r.session) {
            nscq_err(err, errlen, "nscq_session_create", NULL, r.rc);
            return -1;
        }
        g->nscq_session = r.session;
    }
    return 0;
}

static nscq_rc_t observe(gpu_source_t *g, const char *path, nscq_fn_t cb, void *user)
{
    return g->nscq.path_observe(g->nscq_session, path, cb, user, 0);
}

static int run_collect_switches(gpu_source_t *g, gpu_job_t *j)
{
    char *err = j->err;
    size_t errlen = sizeof(j->err);
    int rc = -1;
    sw_uuids_t *u = calloc(1, sizeof(*u));
    nscq_attestation_certificate_t *cert = malloc(sizeof(*cert));
    nscq_attestation_report_t *rep = malloc(sizeof(*rep));
    if (!u || !cert || !rep) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (nscq_ensure(g, err, errlen))
        goto out;
    u->lib = &g->nscq;
    nscq_rc_t r = observe(g, "/drv/nvswitch/{device}/uuid", (nscq_fn_t)on_uuid, u);
    if (r < 0 || u->rc < 0) {
        nscq_err(err, errlen, "switch enumeration (/drv/nvswitch/{device}/uuid)", NULL,
                 r < 0 ? r : u->rc);
        goto out;
    }
    if (u->overflow) {
        snprintf(err, errlen, "NSCQ reports more than %u NVSwitches", GPU_MAX_NVSWITCHES);
        goto out;
    }
    if (u->n == 0) {
        snprintf(err, errlen, "No NVSwitch evidence: NSCQ reports no NVSwitch");
        goto out;
    }
    if (u->n < g->nvswitch_expected) {
        snprintf(err, errlen, "NSCQ reports %u NVSwitch(es), NVSWITCH_EXPECTED_COUNT is %u", u->n,
                 g->nvswitch_expected);
        goto out;
    }
    sw_one_t o = {0};
    r = observe(g, "/{nvswitch}/id/arch", (nscq_fn_t)on_arch, &o);
    if (r < 0 || o.rc < 0 || !o.got) {
        nscq_err(err, errlen, "architecture (/{nvswitch}/id/arch)", NULL,
                 r < 0 ? r : o.rc < 0 ? o.rc : NSCQ_RC_ERROR_UNEXPECTED_VALUE);
        goto out;
    }
    if (o.other_arch || o.arch != NSCQ_ARCH_LS10) {
        snprintf(err, errlen, "NVSwitch architecture %d%s has no attestation (LS10 expected)",
                 o.arch, o.other_arch ? " (mixed)" : "");
        goto out;
    }
    for (unsigned i = 0; i < u->n; i++) {
        const char *label = u->labels[i].data;
        char path[128];
        memset(&o, 0, sizeof(o));
        o.cert = cert;
        memset(cert, 0, sizeof(*cert));
        snprintf(path, sizeof(path), "/%s/config/certificate", label);
        r = observe(g, path, (nscq_fn_t)on_cert, &o);
        if (r < 0 || o.rc < 0 || !o.got) {
            nscq_err(err, errlen, "certificate", label,
                     r < 0 ? r : o.rc < 0 ? o.rc : NSCQ_RC_ERROR_UNEXPECTED_VALUE);
            goto out;
        }
        if (cert->cert_chain_size == 0 || cert->cert_chain_size > sizeof(cert->cert_chain)) {
            snprintf(err, errlen, "NVSwitch %s: NSCQ returned a certificate chain size of %u "
                     "(buffer %zu)", label, cert->cert_chain_size, sizeof(cert->cert_chain));
            goto out;
        }
        r = g->nscq.set_input(g->nscq_session, 0, j->nonce, NONCE_LEN);
        if (r < 0) {
            nscq_err(err, errlen, "nscq_session_set_input (nonce)", label, r);
            goto out;
        }
        memset(&o, 0, sizeof(o));
        o.rep = rep;
        memset(rep, 0, sizeof(*rep));
        snprintf(path, sizeof(path), "/%s/config/attestation_report", label);
        r = observe(g, path, (nscq_fn_t)on_report, &o);
        if (r < 0 || o.rc < 0 || !o.got) {
            nscq_err(err, errlen, "attestation report", label,
                     r < 0 ? r : o.rc < 0 ? o.rc : NSCQ_RC_ERROR_UNEXPECTED_VALUE);
            goto out;
        }
        if (rep->report_size < SPDM_NONCE_OFFSET + NONCE_LEN ||
            rep->report_size > sizeof(rep->report)) {
            snprintf(err, errlen, "NVSwitch %s: NSCQ returned an attestation report size of %u "
                     "(buffer %zu)", label, rep->report_size, sizeof(rep->report));
            goto out;
        }
        if (memcmp(rep->report + SPDM_NONCE_OFFSET, j->nonce, NONCE_LEN) != 0) {
            snprintf(err, errlen, "NVSwitch %s: attestation report does not carry the request "
                     "nonce", label);
            j->nonce_mismatch = 1;
            goto out;
        }
        if (append_item(&j->sw_items, i == 0, rep->report, rep->report_size, cert->cert_chain,
                        cert->cert_chain_size, "NVSwitch", err, errlen))
            goto out;
    }
    j->sw_count = u->n;
    rc = 0;
out:
    free(u);
    free(cert);
    free(rep);
    return rc;
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
                        cert->attestationCertChain, cert->attestationCertChainSize, "GPU", err,
                        errlen))
            goto out;
    }
    if (j->want_switches && run_collect_switches(g, j))
        goto out;
    j->rc = 0;
out:
    free(cert);
    free(rep);
}

static void source_release(gpu_source_t *g)
{
    if (g->nscq_session && g->nscq.session_destroy)
        g->nscq.session_destroy(g->nscq_session);
    g->nscq_session = NULL;
    nscq_lib_close(&g->nscq);
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
static gpu_job_t *submit(gpu_source_t *g, int kind, const uint8_t *nonce, int want_switches,
                         char *err, size_t errlen)
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
    j->want_switches = want_switches;
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
                         chain.len, "GPU", err, errlen);
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
    g->nvswitch = cfg->nvswitch;
    g->nvswitch_expected = cfg->nvswitch_expected;
    snprintf(g->nscq_path, sizeof g->nscq_path, "%s",
             (cfg->nscq_path && *cfg->nscq_path) ? cfg->nscq_path : NSCQ_DEFAULT_LIBRARY);
    if (g->nvswitch && (cfg->mode == GPU_MODE_NONE || cfg->mode == GPU_MODE_CANNED))
        LOG_WARN("gpu: NVSwitch evidence asked for, but GPU evidence mode %s collects none",
                 cfg->mode == GPU_MODE_NONE ? "none" : "canned");

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
    gpu_job_t *j = submit(g, JOB_PROBE, NULL, 0, why, sizeof(why));
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
    if (g->nvswitch)
        LOG_INFO("gpu: NVSwitch evidence through NSCQ (%s, loaded at the first collection)",
                 g->nscq_path);
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
        if (!(j = submit(g, JOB_COLLECT, nonce, switches_json && g->nvswitch, err, errlen)))
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
    size_t mark = payload_json->len;
    if (rc == 0 && (payload_append(payload_json, nonce, &j->items, j->arch) ||
                    (j->want_switches &&
                     payload_append(switches_json, nonce, &j->sw_items, "LS10")))) {
        payload_json->len = mark;
        if (payload_json->data && mark < payload_json->cap)
            payload_json->data[mark] = '\0';
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
