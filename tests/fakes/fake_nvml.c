/* A fake libnvidia-ml.so.1 for tests: exports the NVML entry points src/nvidia/nvml.h declares
 * and answers from real recorded evidence, steered by environment variables read at each
 * call (so a test may change them between calls while no NVML call is in flight):
 *
 *   FAKE_NVML_DEVICES=N          GPUs (default 1)
 *   FAKE_NVML_CC=0|1             ccFeature (default 1); FAKE_NVML_DEVTOOLS=0|1 (default 0)
 *   FAKE_NVML_MULTIGPU=N         multiGpuMode from nvmlSystemGetConfComputeSettings (default 0);
 *                                FAKE_NVML_NO_SETTINGS=1 makes that call NOT_SUPPORTED
 *   FAKE_NVML_ARCH=N             nvmlDeviceGetArchitecture (default 9 = Hopper); "i:N,..." per GPU
 *   FAKE_NVML_FAIL=name[,name]   these calls return FAKE_NVML_FAIL_RC (default 999 = Unknown)
 *   FAKE_NVML_STALL_MS=N         sleep N ms inside FAKE_NVML_STALL_CALL (default
 *                                nvmlDeviceGetConfComputeGpuAttestationReport), only for the
 *                                first FAKE_NVML_STALL_COUNT calls (default: every call;
 *                                counted in fake_nvml_counters()->stalls)
 *   FAKE_NVML_EVIDENCE_JSON=f    nvattest/nvtrust evidence list ([{"evidence": b64 report,
 *                                "certificate": b64 PEM chain}, ...]); GPU i answers item i % n
 *   FAKE_NVML_REPORT=f           otherwise: report file (hex text or binary) and
 *   FAKE_NVML_CERTS=f            PEM chain file; defaults: nvtrust's canned Hopper sample under
 *                                $VP_TEST_VECTORS (default tests/vectors)/nvidia/nvtrust/
 *   FAKE_NVML_KEEP_NONCE=1       do not write the caller's nonce into the report (NVML does)
 *   FAKE_NVML_FOREIGN_NONCE=N    the first N reports (counted in fake_nvml_counters()->foreign;
 *                                tests may zero it) carry another request's nonce, as when
 *                                another process on the host drives NVML at the same time
 *   FAKE_NVML_REPORT_SIZE=N, FAKE_NVML_CERT_SIZE=N   lie about the returned sizes
 *
 * fake_nvml_counters() exposes init/shutdown/report call counts to tests. */
/* The functions below are libnvidia-ml.so.1's exported ABI, looked up with dlsym; NVML's own
 * header (which would declare them) is not used, so they have no previous prototype. */
#pragma GCC diagnostic ignored "-Wmissing-prototypes"

#include <ctype.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nvidia/nvml.h"

#define EXPORT __attribute__((visibility("default")))

struct fake_nvml_counters {
    int init, shutdown, reports, certs;
    int inflight, max_inflight; /* concurrent calls into any entry point */
    int stalls;                 /* stalls so far (FAKE_NVML_STALL_COUNT); tests may zero it */
    int foreign;                /* reports answered with another nonce (FAKE_NVML_FOREIGN_NONCE) */
};
static struct fake_nvml_counters counters;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

EXPORT struct fake_nvml_counters *fake_nvml_counters(void)
{
    return &counters;
}

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return (v && *v) ? strtol(v, NULL, 0) : dflt;
}

static int listed(const char *list, const char *name)
{
    if (!list)
        return 0;
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
        if ((p == list || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
            return 1;
    return 0;
}

static void track(int delta)
{
    pthread_mutex_lock(&mu);
    counters.inflight += delta;
    if (counters.inflight > counters.max_inflight)
        counters.max_inflight = counters.inflight;
    pthread_mutex_unlock(&mu);
}

/* Common prologue of every call: injected failure and stall. */
static nvmlReturn_t enter(const char *name)
{
    track(1);
    const char *stall_call = getenv("FAKE_NVML_STALL_CALL");
    if (!stall_call || !*stall_call)
        stall_call = "nvmlDeviceGetConfComputeGpuAttestationReport";
    long ms = env_long("FAKE_NVML_STALL_MS", 0);
    if (ms > 0 && listed(stall_call, name)) {
        long max = env_long("FAKE_NVML_STALL_COUNT", -1);
        pthread_mutex_lock(&mu);
        int go = max < 0 || counters.stalls < max;
        if (go)
            counters.stalls++;
        pthread_mutex_unlock(&mu);
        if (go) {
            struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
            while (nanosleep(&ts, &ts) != 0)
                ;
        }
    }
    /* a short dwell makes overlapping callers visible to max_inflight */
    struct timespec dwell = {0, 200000L};
    nanosleep(&dwell, NULL);
    track(-1);
    if (listed(getenv("FAKE_NVML_FAIL"), name))
        return (nvmlReturn_t)env_long("FAKE_NVML_FAIL_RC", NVML_ERROR_UNKNOWN);
    return NVML_SUCCESS;
}

#define ENTER(name)                          \
    do {                                     \
        nvmlReturn_t r_ = enter(name);       \
        if (r_ != NVML_SUCCESS)              \
            return r_;                       \
    } while (0)

/* ---- evidence sources ---- */

static size_t read_file(const char *path, uint8_t **out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t cap = 1 << 16, len = 0;
    uint8_t *b = malloc(cap);
    size_t r;
    while (b && (r = fread(b + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap) {
            uint8_t *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                b = NULL;
            }
            b = nb;
        }
    }
    fclose(f);
    *out = b;
    return b ? len : 0;
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static size_t b64dec(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;
    for (; *s && *s != '='; s++) {
        int v = b64val((unsigned char)*s);
        if (v < 0)
            continue;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n < cap)
                out[n] = (uint8_t)(acc >> bits);
            n++;
        }
    }
    return n;
}

/* Fills report/chain for GPU idx. Returns 0 or NVML_ERROR_UNKNOWN. */
static nvmlReturn_t evidence_for(unsigned idx, uint8_t *rep, size_t repcap, size_t *replen,
                                 uint8_t *chain, size_t chaincap, size_t *chainlen)
{
    const char *json = getenv("FAKE_NVML_EVIDENCE_JSON");
    if (json && *json) {
        json_object *root = json_object_from_file(json);
        if (!root || !json_object_is_type(root, json_type_array) ||
            json_object_array_length(root) == 0) {
            json_object_put(root);
            return NVML_ERROR_UNKNOWN;
        }
        json_object *it = json_object_array_get_idx(root, idx % json_object_array_length(root));
        json_object *ev, *ce;
        if (!json_object_object_get_ex(it, "evidence", &ev) ||
            !json_object_object_get_ex(it, "certificate", &ce)) {
            json_object_put(root);
            return NVML_ERROR_UNKNOWN;
        }
        *replen = b64dec(json_object_get_string(ev), rep, repcap);
        *chainlen = b64dec(json_object_get_string(ce), chain, chaincap);
        json_object_put(root);
        return NVML_SUCCESS;
    }
    const char *dir = getenv("VP_TEST_VECTORS");
    char rp[512], cp[512];
    snprintf(rp, sizeof(rp), "%s/nvidia/nvtrust/hopperAttestationReport.txt",
             dir && *dir ? dir : "tests/vectors");
    snprintf(cp, sizeof(cp), "%s/nvidia/nvtrust/hopperCertChain.txt",
             dir && *dir ? dir : "tests/vectors");
    const char *rpath = getenv("FAKE_NVML_REPORT"), *cpath = getenv("FAKE_NVML_CERTS");
    uint8_t *r = NULL, *c = NULL;
    size_t rl = read_file(rpath && *rpath ? rpath : rp, &r);
    size_t cl = read_file(cpath && *cpath ? cpath : cp, &c);
    if (!rl || !cl) {
        free(r);
        free(c);
        return NVML_ERROR_UNKNOWN;
    }
    size_t hexlen = 0;
    while (hexlen < rl && isxdigit(r[hexlen]))
        hexlen++;
    if (hexlen >= 8 && (hexlen == rl || isspace(r[hexlen]))) { /* hex text */
        size_t n = hexlen / 2;
        for (size_t i = 0; i < n && i < repcap; i++) {
            char h[3] = {(char)r[2 * i], (char)r[2 * i + 1], 0};
            rep[i] = (uint8_t)strtoul(h, NULL, 16);
        }
        *replen = n;
    } else {
        memcpy(rep, r, rl < repcap ? rl : repcap);
        *replen = rl;
    }
    memcpy(chain, c, cl < chaincap ? cl : chaincap);
    *chainlen = cl;
    free(r);
    free(c);
    return NVML_SUCCESS;
}

/* ---- exported NVML API ---- */

EXPORT nvmlReturn_t nvmlInit_v2(void)
{
    ENTER("nvmlInit_v2");
    __atomic_fetch_add(&counters.init, 1, __ATOMIC_SEQ_CST);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlShutdown(void)
{
    nvmlReturn_t rc = enter("nvmlShutdown");
    __atomic_fetch_add(&counters.shutdown, 1, __ATOMIC_SEQ_CST); /* last thing it does */
    return rc;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t rc)
{
    switch (rc) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_UNKNOWN: return "Unknown Error";
    default: return "Fake NVML error";
    }
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
    ENTER("nvmlDeviceGetCount_v2");
    *count = (unsigned)env_long("FAKE_NVML_DEVICES", 1);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    ENTER("nvmlDeviceGetHandleByIndex_v2");
    if (index >= (unsigned)env_long("FAKE_NVML_DEVICES", 1))
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = (nvmlDevice_t)(uintptr_t)(0x1000 + index); /* opaque; never dereferenced */
    return NVML_SUCCESS;
}

static unsigned dev_index(nvmlDevice_t d)
{
    return (unsigned)((uintptr_t)d - 0x1000);
}

EXPORT nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, nvmlDeviceArchitecture_t *arch)
{
    ENTER("nvmlDeviceGetArchitecture");
    const char *v = getenv("FAKE_NVML_ARCH");
    *arch = NVML_DEVICE_ARCH_HOPPER;
    if (v && strchr(v, ':')) { /* "1:7,3:10" */
        char key[16];
        snprintf(key, sizeof(key), "%u:", dev_index(device));
        for (const char *p = v; (p = strstr(p, key)) != NULL; p++)
            if (p == v || p[-1] == ',') {
                *arch = (unsigned)strtoul(p + strlen(key), NULL, 0);
                break;
            }
    } else if (v && *v) {
        *arch = (unsigned)strtoul(v, NULL, 0);
    }
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetConfComputeState(nvmlConfComputeSystemState_t *st)
{
    ENTER("nvmlSystemGetConfComputeState");
    st->environment = NVML_CC_SYSTEM_ENVIRONMENT_PROD;
    st->ccFeature = (unsigned)env_long("FAKE_NVML_CC", 1);
    st->devToolsMode = (unsigned)env_long("FAKE_NVML_DEVTOOLS", 0);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetConfComputeSettings(nvmlSystemConfComputeSettings_v1_t *s)
{
    ENTER("nvmlSystemGetConfComputeSettings");
    if (env_long("FAKE_NVML_NO_SETTINGS", 0))
        return NVML_ERROR_NOT_SUPPORTED;
    if (s->version != nvmlSystemConfComputeSettings_v1)
        return 25; /* NVML_ERROR_ARGUMENT_VERSION_MISMATCH */
    s->environment = NVML_CC_SYSTEM_ENVIRONMENT_PROD;
    s->ccFeature = (unsigned)env_long("FAKE_NVML_CC", 1);
    s->devToolsMode = (unsigned)env_long("FAKE_NVML_DEVTOOLS", 0);
    s->multiGpuMode = (unsigned)env_long("FAKE_NVML_MULTIGPU", 0);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetConfComputeGpuCertificate(nvmlDevice_t device,
                                                          nvmlConfComputeGpuCertificate_t *cert)
{
    ENTER("nvmlDeviceGetConfComputeGpuCertificate");
    __atomic_fetch_add(&counters.certs, 1, __ATOMIC_SEQ_CST);
    static _Thread_local uint8_t rep[0x4000];
    size_t rl = 0, cl = 0;
    nvmlReturn_t rc = evidence_for(dev_index(device), rep, sizeof(rep), &rl,
                                   cert->attestationCertChain, sizeof(cert->attestationCertChain), &cl);
    if (rc != NVML_SUCCESS)
        return rc;
    if (cl > sizeof(cert->attestationCertChain))
        return NVML_ERROR_INSUFFICIENT_SIZE;
    cert->attestationCertChainSize = (unsigned)env_long("FAKE_NVML_CERT_SIZE", (long)cl);
    cert->certChainSize = 0;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetConfComputeGpuAttestationReport(
    nvmlDevice_t device, nvmlConfComputeGpuAttestationReport_t *r)
{
    ENTER("nvmlDeviceGetConfComputeGpuAttestationReport");
    __atomic_fetch_add(&counters.reports, 1, __ATOMIC_SEQ_CST);
    static _Thread_local uint8_t chain[0x4000];
    size_t rl = 0, cl = 0;
    nvmlReturn_t rc = evidence_for(dev_index(device), r->attestationReport,
                                   sizeof(r->attestationReport), &rl, chain, sizeof(chain), &cl);
    if (rc != NVML_SUCCESS)
        return rc;
    if (rl > sizeof(r->attestationReport) || rl < 36)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    /* The SPDM GET_MEASUREMENTS request carries the caller's nonce at bytes 4..35. */
    if (!env_long("FAKE_NVML_KEEP_NONCE", 0))
        memcpy(r->attestationReport + 4, r->nonce, sizeof(r->nonce));
    long foreign = env_long("FAKE_NVML_FOREIGN_NONCE", 0);
    pthread_mutex_lock(&mu);
    int other = counters.foreign < foreign;
    if (other)
        counters.foreign++;
    pthread_mutex_unlock(&mu);
    if (other) /* another caller's nonce: ours with every byte changed */
        for (size_t i = 0; i < sizeof(r->nonce); i++)
            r->attestationReport[4 + i] = (unsigned char)(r->nonce[i] ^ 0x5a);
    r->attestationReportSize = (unsigned)env_long("FAKE_NVML_REPORT_SIZE", (long)rl);
    r->isCecAttestationReportPresent = 0;
    r->cecAttestationReportSize = 0;
    return NVML_SUCCESS;
}
