/* Unit tests for src/attest/gpu.c against the fake libnvidia-ml.so.1 (tests/fakes/fake_nvml.c,
 * built next to this binary in ../fakes/): the payload matches nvtrust's evidence byte for
 * byte, canned mode, and the error paths (NVML missing, a call failing or stalling, CC off,
 * lengths out of range, wrong nonce, architectures). Run from the repository root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <json-c/json.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "at.h"
#include "attest/gpu.h"
#include "core/hex.h"
#include "core/log.h"

struct fake_nvml_counters {
    int init, shutdown, reports, certs;
    int inflight, max_inflight;
    int stalls;
    int foreign;
};

static char fake_path[4096], nscq_path[4096];
static struct fake_nvml_counters *ctr;
static const char *vec_dir = "tests/vectors";

static const char *FAKE_VARS[] = {"FAKE_NVML_DEVICES", "FAKE_NVML_CC", "FAKE_NVML_DEVTOOLS",
                                  "FAKE_NVML_MULTIGPU", "FAKE_NVML_NO_SETTINGS", "FAKE_NVML_ARCH",
                                  "FAKE_NVML_FAIL", "FAKE_NVML_FAIL_RC", "FAKE_NVML_STALL_MS",
                                  "FAKE_NVML_STALL_CALL", "FAKE_NVML_STALL_COUNT",
                                  "FAKE_NVML_EVIDENCE_JSON", "FAKE_NVML_REPORT", "FAKE_NVML_CERTS",
                                  "FAKE_NVML_KEEP_NONCE", "FAKE_NVML_REPORT_SIZE",
                                  "FAKE_NVML_CERT_SIZE", "FAKE_NVML_FOREIGN_NONCE",
                                  "FAKE_NSCQ_EVIDENCE_JSON", "FAKE_NSCQ_SWITCHES", "FAKE_NSCQ_ARCH",
                                  "FAKE_NSCQ_KEEP_NONCE", "FAKE_NSCQ_FOREIGN_NONCE", "FAKE_NSCQ_FAIL",
                                  "FAKE_NSCQ_REPORT_SIZE", "FAKE_NSCQ_CERT_SIZE", NULL};

static void env_reset(void)
{
    for (int i = 0; FAKE_VARS[i]; i++)
        unsetenv(FAKE_VARS[i]);
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static char *slurp_at(AT_PARAMS, const char *rel, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", vec_dir, rel);
    FILE *f = fopen(path, "rb");
    at_assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    at_assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}
#define slurp(...) slurp_at(AT_HERE, __VA_ARGS__)

static char *b64(const void *p, size_t n)
{
    char *o = malloc(b64_encoded_len(n) + 1);
    b64_encode(o, p, n);
    return o;
}

static gpu_source_t *new_src_retries(int mode, unsigned timeout_ms, int allow, unsigned retries,
                                     char *err, size_t errlen)
{
    gpu_config_t c = {mode, fake_path, allow, timeout_ms, retries, 0, NULL, 0};
    return gpu_source_new(&c, err, errlen);
}

static gpu_source_t *new_src(int mode, unsigned timeout_ms, int allow, char *err, size_t errlen)
{
    return new_src_retries(mode, timeout_ms, allow, 0, err, errlen);
}

static void nonce_fill(uint8_t n[32], uint8_t seed)
{
    for (int i = 0; i < 32; i++)
        n[i] = (uint8_t)(seed * 31 + i * 7);
}

/* Parses the payload, checks key order and returns the evidence_list (owned by *root). */
static json_object *parse_payload_at(AT_PARAMS, const buf_t *b, json_object **root,
                                     const uint8_t nonce[32], const char *arch)
{
    at_assert_true(strncmp(b->data, "{\"nonce\": \"", 11) == 0);
    at_assert_non_null(strstr(b->data, "\", \"evidence_list\": [{\"certificate\": \""));
    char tail[64];
    snprintf(tail, sizeof(tail), "\"}], \"arch\": \"%s\"}", arch);
    at_assert_true(b->len > strlen(tail) && strcmp(b->data + b->len - strlen(tail), tail) == 0);
    *root = json_tokener_parse(b->data);
    at_assert_non_null(*root);
    json_object *v;
    char hex[65];
    hex_encode(hex, nonce, 32);
    at_assert_true(json_object_object_get_ex(*root, "nonce", &v));
    at_assert_string_equal(json_object_get_string(v), hex);
    at_assert_true(json_object_object_get_ex(*root, "arch", &v));
    at_assert_string_equal(json_object_get_string(v), arch);
    at_assert_true(json_object_object_get_ex(*root, "evidence_list", &v));
    return v;
}
#define parse_payload(...) parse_payload_at(AT_HERE, __VA_ARGS__)

/* ---------------------------------------------------------------------------------------- */

static void test_mode_parse(void **state)
{
    (void)state;
    assert_int_equal(gpu_mode_parse("auto"), GPU_MODE_AUTO);
    assert_int_equal(gpu_mode_parse("NVML"), GPU_MODE_NVML);
    assert_int_equal(gpu_mode_parse("canned"), GPU_MODE_CANNED);
    assert_int_equal(gpu_mode_parse("none"), GPU_MODE_NONE);
    assert_int_equal(gpu_mode_parse("gpu"), -1);
    assert_int_equal(gpu_mode_parse(""), -1);
    assert_int_equal(gpu_mode_parse(NULL), -1);
}

static void test_none(void **state)
{
    (void)state;
    char err[256] = "";
    gpu_source_t *g = new_src(GPU_MODE_NONE, 0, 0, err, sizeof(err));
    assert_non_null(g);
    assert_string_equal(gpu_source_mode(g), "none");
    assert_false(gpu_source_is_canned(g));
    uint8_t n[32];
    nonce_fill(n, 1);
    buf_t b = BUF_INIT;
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), 1);
    assert_int_equal(b.len, 0);
    gpu_source_free(g);
}

/* Canned = nvtrust's no-GPU evidence: the sample report verbatim (its own nonce), and the
 * sample chain with the root replaced by the bundled device root, re-encoded as PEM. */
static void test_canned(void **state)
{
    (void)state;
    char err[256] = "";
    gpu_source_t *g = new_src(GPU_MODE_CANNED, 0, 0, err, sizeof(err));
    assert_non_null(g);
    assert_string_equal(gpu_source_mode(g), "canned");
    assert_true(gpu_source_is_canned(g));

    size_t hl, cl;
    char *hex = slurp("nvidia/nvtrust/hopperAttestationReport.txt", &hl);
    char *chain = slurp("nvidia/nvtrust/hopperCertChain.txt", &cl);
    while (hl && (hex[hl - 1] == '\n' || hex[hl - 1] == '\r'))
        hl--;
    uint8_t rep[8192];
    long rl = hex_decode(rep, sizeof(rep), hex, hl);
    assert_int_equal(rl, 4117);
    /* the chain file lacks a final newline; the sample root is nvtrust's device root */
    char *chain_nl = malloc(cl + 2);
    memcpy(chain_nl, chain, cl);
    chain_nl[cl] = '\n';
    chain_nl[cl + 1] = 0;
    char *ev = b64(rep, (size_t)rl), *ce = b64(chain_nl, cl + 1);

    uint8_t n[32];
    nonce_fill(n, 2);
    char nhex[65];
    hex_encode(nhex, n, 32);
    buf_t b = BUF_INIT;
    buf_puts(&b, "prefix:");
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), 0);
    buf_t want = BUF_INIT;
    buf_printf(&want, "prefix:{\"nonce\": \"%s\", \"evidence_list\": [{\"certificate\": \"%s\", "
               "\"evidence\": \"%s\"}], \"arch\": \"HOPPER\"}", nhex, ce, ev);
    assert_string_equal(b.data, want.data);
    /* the embedded nonce is nvtrust's, not ours */
    assert_memory_equal(rep + 4, "\x93\x1d\x8d\xd0\xad\xd2\x03\xac", 8);
    buf_free(&b);
    buf_free(&want);
    free(hex);
    free(chain);
    free(chain_nl);
    free(ev);
    free(ce);
    gpu_source_free(g);
}

/* The 8-GPU nvattest evidence from nvtrust, replayed through NVML with its own nonce: our
 * payload's evidence_list equals nvtrust's certificate/evidence strings byte for byte. */
static void test_nvml_matches_nvtrust_8gpu(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof(path), "%s/nvidia/nvtrust/ppcie_gpu_evidence_8xH100.json", vec_dir);
    json_object *ref = json_object_from_file(path);
    assert_non_null(ref);
    size_t ngpu = json_object_array_length(ref);
    assert_int_equal(ngpu, 8);
    json_object *v;
    assert_true(json_object_object_get_ex(json_object_array_get_idx(ref, 0), "nonce", &v));
    uint8_t n[32];
    assert_int_equal(hex_decode(n, 32, json_object_get_string(v), 64), 32);

    env_reset();
    setenv("FAKE_NVML_EVIDENCE_JSON", path, 1);
    setenv("FAKE_NVML_DEVICES", "8", 1);
    setenv("FAKE_NVML_CC", "0", 1);       /* a protected-PCIe HGX: CC feature off, PPCIe on */
    setenv("FAKE_NVML_MULTIGPU", "1", 1);
    char err[256] = "";
    gpu_source_t *g = new_src(GPU_MODE_NVML, 10000, 0, err, sizeof(err));
    assert_non_null(g);
    assert_string_equal(gpu_source_mode(g), "nvml");
    assert_false(gpu_source_is_canned(g));

    buf_t b = BUF_INIT, want = BUF_INIT;
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), 0);
    buf_printf(&want, "{\"nonce\": \"%s\", \"evidence_list\": [", json_object_get_string(v));
    for (size_t i = 0; i < ngpu; i++) {
        json_object *it = json_object_array_get_idx(ref, i), *c, *e;
        assert_true(json_object_object_get_ex(it, "certificate", &c));
        assert_true(json_object_object_get_ex(it, "evidence", &e));
        buf_printf(&want, "%s{\"certificate\": \"%s\", \"evidence\": \"%s\"}", i ? ", " : "",
                   json_object_get_string(c), json_object_get_string(e));
    }
    buf_puts(&want, "], \"arch\": \"HOPPER\"}");
    assert_int_equal(b.len, want.len);
    assert_string_equal(b.data, want.data);
    json_object *root;
    json_object *list = parse_payload(&b, &root, n, "HOPPER");
    assert_int_equal(json_object_array_length(list), 8);
    json_object_put(root);
    buf_free(&b);
    buf_free(&want);
    json_object_put(ref);
    gpu_source_free(g);
    env_reset();
}

/* Fresh nonce through NVML: the report carries it at bytes 4..35, NVML stays initialised
 * across collections and is shut down on free. */
static void test_nvml_fresh_nonce(void **state)
{
    (void)state;
    env_reset();
    setenv("FAKE_NVML_DEVICES", "2", 1);
    char err[256] = "";
    int init0 = ctr->init, shut0 = ctr->shutdown;
    gpu_source_t *g = new_src(GPU_MODE_AUTO, 5000, 0, err, sizeof(err));
    assert_non_null(g);
    assert_string_equal(gpu_source_mode(g), "nvml");
    for (int round = 0; round < 3; round++) {
        uint8_t n[32];
        nonce_fill(n, (uint8_t)(10 + round));
        buf_t b = BUF_INIT;
        assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), 0);
        json_object *root, *list = parse_payload(&b, &root, n, "HOPPER");
        assert_int_equal(json_object_array_length(list), 2);
        for (int i = 0; i < 2; i++) {
            json_object *e;
            assert_true(json_object_object_get_ex(json_object_array_get_idx(list, (size_t)i), "evidence", &e));
            uint8_t rep[8192];
            long rl = b64_decode(rep, sizeof(rep), json_object_get_string(e),
                                 strlen(json_object_get_string(e)));
            assert_int_equal(rl, 4117);
            assert_memory_equal(rep, "\x11\xe0\x01\xff", 4);
            assert_memory_equal(rep + 4, n, 32);
        }
        json_object_put(root);
        buf_free(&b);
    }
    assert_int_equal(ctr->init, init0 + 1);
    gpu_source_free(g);
    assert_int_equal(ctr->shutdown, shut0 + 1);
}

static void test_blackwell_and_arch_errors(void **state)
{
    (void)state;
    char err[256] = "";
    uint8_t n[32];
    nonce_fill(n, 3);
    env_reset();
    setenv("FAKE_NVML_ARCH", "10", 1);
    gpu_source_t *g = new_src(GPU_MODE_NVML, 5000, 0, err, sizeof(err));
    assert_non_null(g);
    buf_t b = BUF_INIT;
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), 0);
    json_object *root;
    parse_payload(&b, &root, n, "BLACKWELL");
    json_object_put(root);
    buf_free(&b);
    gpu_source_free(g);

    setenv("FAKE_NVML_ARCH", "7", 1); /* Ampere: no CC attestation */
    g = new_src(GPU_MODE_NVML, 5000, 0, err, sizeof(err));
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "architecture 7"));
    assert_int_equal(b.len, 0);
    gpu_source_free(g);

    setenv("FAKE_NVML_DEVICES", "2", 1);
    setenv("FAKE_NVML_ARCH", "1:10", 1);
    g = new_src(GPU_MODE_NVML, 5000, 0, err, sizeof(err));
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "different architectures"));
    gpu_source_free(g);
    env_reset();
}

static void test_nvml_missing(void **state)
{
    (void)state;
    char err[256] = "";
    gpu_config_t c = {GPU_MODE_NVML, "/nonexistent/libnvidia-ml.so.1", 0, 1000, 0, 0, NULL, 0};
    assert_null(gpu_source_new(&c, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot load NVML"));
    c.mode = GPU_MODE_AUTO;
    gpu_source_t *g = gpu_source_new(&c, err, sizeof(err));
    assert_non_null(g);
    assert_string_equal(gpu_source_mode(g), "none");
    uint8_t n[32] = {0};
    buf_t b = BUF_INIT;
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), 1);
    gpu_source_free(g);
    /* a library without the NVML symbols (libc) is refused too */
    c.mode = GPU_MODE_NVML;
    c.nvml_path = "libc.so.6";
    assert_null(gpu_source_new(&c, err, sizeof(err)));
    assert_non_null(strstr(err, "lacks nvmlInit_v2"));
}

static void test_no_gpu(void **state)
{
    (void)state;
    char err[256] = "";
    env_reset();
    setenv("FAKE_NVML_DEVICES", "0", 1);
    assert_null(new_src(GPU_MODE_NVML, 1000, 0, err, sizeof(err)));
    assert_non_null(strstr(err, "no GPU"));
    gpu_source_t *g = new_src(GPU_MODE_AUTO, 1000, 0, err, sizeof(err));
    assert_non_null(g);
    assert_string_equal(gpu_source_mode(g), "none");
    gpu_source_free(g);
    env_reset();
}

static void test_call_fails(void **state)
{
    (void)state;
    char err[256] = "";
    uint8_t n[32];
    nonce_fill(n, 4);
    buf_t b = BUF_INIT;
    env_reset();
    setenv("FAKE_NVML_FAIL", "nvmlInit_v2", 1);
    assert_null(new_src(GPU_MODE_NVML, 1000, 0, err, sizeof(err)));
    assert_non_null(strstr(err, "nvmlInit_v2 failed: Unknown Error (999)"));
    gpu_source_t *g = new_src(GPU_MODE_AUTO, 1000, 0, err, sizeof(err));
    assert_string_equal(gpu_source_mode(g), "none");
    gpu_source_free(g);

    static const char *calls[] = {"nvmlDeviceGetCount_v2", "nvmlSystemGetConfComputeState",
                                  "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetArchitecture",
                                  "nvmlDeviceGetConfComputeGpuCertificate",
                                  "nvmlDeviceGetConfComputeGpuAttestationReport"};
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        env_reset();
        g = new_src(GPU_MODE_NVML, 1000, 0, err, sizeof(err));
        assert_non_null(g);
        setenv("FAKE_NVML_FAIL", calls[i], 1); /* the helper is idle between calls */
        setenv("FAKE_NVML_FAIL_RC", "3", 1);
        assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), -1);
        assert_non_null(strstr(err, calls[i]));
        assert_non_null(strstr(err, "Not Supported"));
        assert_int_equal(b.len, 0);
        /* recovers once the call works again */
        env_reset();
        assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), 0);
        buf_reset(&b);
        gpu_source_free(g);
    }
    /* a failing Settings call (older driver) is not an error */
    setenv("FAKE_NVML_NO_SETTINGS", "1", 1);
    g = new_src(GPU_MODE_NVML, 1000, 0, err, sizeof(err));
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), 0);
    gpu_source_free(g);
    buf_free(&b);
    env_reset();
}

static void test_cc_off(void **state)
{
    (void)state;
    char err[256] = "";
    uint8_t n[32];
    nonce_fill(n, 5);
    buf_t b = BUF_INIT;
    env_reset();
    setenv("FAKE_NVML_CC", "0", 1);
    assert_null(new_src(GPU_MODE_NVML, 1000, 0, err, sizeof(err)));
    assert_non_null(strstr(err, "confidential computing is off"));
    assert_non_null(strstr(err, "GPU_ALLOW_CC_OFF"));
    gpu_source_t *g = new_src(GPU_MODE_AUTO, 1000, 0, err, sizeof(err));
    assert_non_null(g);
    assert_string_equal(gpu_source_mode(g), "nvml");
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "confidential computing is off"));
    assert_int_equal(b.len, 0);
    gpu_source_free(g);
    g = new_src(GPU_MODE_NVML, 1000, 1, err, sizeof(err));
    assert_non_null(g);
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), 0);
    buf_reset(&b);
    gpu_source_free(g);

    env_reset();
    setenv("FAKE_NVML_DEVTOOLS", "1", 1);
    assert_null(new_src(GPU_MODE_NVML, 1000, 0, err, sizeof(err)));
    assert_non_null(strstr(err, "devtools"));
    /* PPCIe without the Settings call (older driver): CC feature off counts as off */
    env_reset();
    setenv("FAKE_NVML_CC", "0", 1);
    setenv("FAKE_NVML_MULTIGPU", "1", 1);
    setenv("FAKE_NVML_NO_SETTINGS", "1", 1);
    assert_null(new_src(GPU_MODE_NVML, 1000, 0, err, sizeof(err)));
    buf_free(&b);
    env_reset();
}

static void test_bad_lengths_and_nonce(void **state)
{
    (void)state;
    char err[256] = "";
    uint8_t n[32];
    nonce_fill(n, 6);
    buf_t b = BUF_INIT;
    struct {
        const char *var, *val, *want;
    } cases[] = {
        {"FAKE_NVML_REPORT_SIZE", "8193", "attestation report size of 8193"},
        {"FAKE_NVML_REPORT_SIZE", "4294967295", "attestation report size of 4294967295"},
        {"FAKE_NVML_REPORT_SIZE", "35", "attestation report size of 35"},
        {"FAKE_NVML_CERT_SIZE", "5121", "certificate chain size of 5121"},
        {"FAKE_NVML_CERT_SIZE", "0", "certificate chain size of 0"},
        {"FAKE_NVML_CERT_SIZE", "100", "certificate"},
        {"FAKE_NVML_KEEP_NONCE", "1", "does not carry the request nonce"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        env_reset();
        setenv(cases[i].var, cases[i].val, 1);
        gpu_source_t *g = new_src(GPU_MODE_NVML, 1000, 0, err, sizeof(err));
        assert_non_null(g);
        assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), -1);
        if (!strstr(err, cases[i].want))
            fail_msg("case %zu: %s", i, err);
        assert_int_equal(b.len, 0);
        gpu_source_free(g);
    }
    env_reset();
}

/* Another process's nonce in a report (NVML shared by several processes on the host): the
 * whole collection is repeated with backoff until every GPU's report carries the request
 * nonce, each repetition counted; past the bound it fails naming the cause. */
static void test_foreign_nonce_retry(void **state)
{
    (void)state;
    env_reset();
    char err[256] = "";
    uint8_t n[32];
    nonce_fill(n, 12);
    setenv("FAKE_NVML_DEVICES", "2", 1);
    gpu_source_t *g = new_src_retries(GPU_MODE_NVML, 5000, 0, 3, err, sizeof(err));
    assert_non_null(g);

    /* Two foreign answers (GPU 0 of the first collection, GPU 0 of the second): the third
     * collection succeeds after 50 + 100 ms of backoff. */
    setenv("FAKE_NVML_FOREIGN_NONCE", "2", 1);
    ctr->foreign = 0;
    unsigned long long r0 = gpu_nonce_retries_total(), f0 = gpu_nonce_failures_total();
    int reports0 = ctr->reports;
    buf_t b = BUF_INIT;
    double t0 = now_ms();
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), 0);
    double took = now_ms() - t0;
    assert_int_equal(ctr->foreign, 2);
    assert_int_equal(gpu_nonce_retries_total() - r0, 2);
    assert_int_equal(gpu_nonce_failures_total() - f0, 0);
    assert_int_equal(ctr->reports - reports0, 1 + 1 + 2); /* GPU 0, GPU 0, GPUs 0 and 1 */
    if (took < GPU_RETRY_FIRST_MS * 3 - 5)
        fail_msg("two retries took %.1f ms, less than the backoff", took);
    json_object *root, *list = parse_payload(&b, &root, n, "HOPPER");
    assert_int_equal(json_object_array_length(list), 2);
    for (size_t i = 0; i < 2; i++) {
        json_object *e;
        assert_true(json_object_object_get_ex(json_object_array_get_idx(list, i), "evidence", &e));
        uint8_t rep[8192];
        long rl = b64_decode(rep, sizeof(rep), json_object_get_string(e),
                             strlen(json_object_get_string(e)));
        assert_true(rl > 36);
        assert_memory_equal(rep + 4, n, 32); /* every GPU's report carries our nonce */
    }
    json_object_put(root);
    buf_free(&b);

    /* More foreign answers than retries: 503 material, nothing appended, one failure. */
    setenv("FAKE_NVML_FOREIGN_NONCE", "100", 1);
    ctr->foreign = 0;
    r0 = gpu_nonce_retries_total();
    f0 = gpu_nonce_failures_total();
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "does not carry the request nonce"));
    assert_non_null(strstr(err, "after 3 retries"));
    assert_int_equal(b.len, 0);
    assert_int_equal(ctr->foreign, 4); /* the first try and three retries */
    assert_int_equal(gpu_nonce_retries_total() - r0, 3);
    assert_int_equal(gpu_nonce_failures_total() - f0, 1);
    gpu_source_free(g);

    /* No retries configured: the first foreign answer fails the collection. */
    g = new_src_retries(GPU_MODE_NVML, 5000, 0, 0, err, sizeof(err));
    assert_non_null(g);
    ctr->foreign = 0;
    r0 = gpu_nonce_retries_total();
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "does not carry the request nonce"));
    assert_null(strstr(err, "retries"));
    assert_int_equal(ctr->foreign, 1);
    assert_int_equal(gpu_nonce_retries_total(), r0);

    /* Other failures are not retried. */
    gpu_source_free(g);
    g = new_src_retries(GPU_MODE_NVML, 5000, 0, 3, err, sizeof(err));
    assert_non_null(g);
    unsetenv("FAKE_NVML_FOREIGN_NONCE");
    setenv("FAKE_NVML_FAIL", "nvmlDeviceGetConfComputeGpuAttestationReport", 1);
    r0 = gpu_nonce_retries_total();
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "nvmlDeviceGetConfComputeGpuAttestationReport"));
    assert_int_equal(gpu_nonce_retries_total(), r0);
    gpu_source_free(g);
    buf_free(&b);
    env_reset();
}

/* A damaged certificate inside the chain fails the collection instead of shortening it. */
static void test_malformed_chain(void **state)
{
    (void)state;
    size_t cl;
    char *chain = slurp("nvidia/nvtrust/hopperCertChain.txt", &cl);
    char *second = strstr(strstr(chain, "-----END CERTIFICATE-----"), "MII");
    assert_non_null(second);
    memcpy(second + 10, "!!!!", 4);
    char tmp[] = "/tmp/test_gpu_chainXXXXXX";
    int fd = mkstemp(tmp);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, chain, cl), (ssize_t)cl);
    close(fd);
    env_reset();
    setenv("FAKE_NVML_CERTS", tmp, 1);
    char err[256] = "";
    uint8_t n[32];
    nonce_fill(n, 9);
    buf_t b = BUF_INIT;
    gpu_source_t *g = new_src(GPU_MODE_NVML, 1000, 0, err, sizeof(err));
    assert_non_null(g);
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "malformed certificate"));
    gpu_source_free(g);
    unlink(tmp);
    free(chain);
    env_reset();
}

/* A stalled NVML call: the caller gives up at its deadline, the next caller waits for the
 * one stuck call instead of starting another, and service resumes when it returns. */
static void test_stall(void **state)
{
    (void)state;
    char err[256] = "";
    uint8_t n[32];
    nonce_fill(n, 7);
    buf_t b = BUF_INIT;
    env_reset();
    gpu_source_t *g = new_src(GPU_MODE_NVML, 200, 0, err, sizeof(err));
    assert_non_null(g);
    setenv("FAKE_NVML_STALL_MS", "1500", 1);
    setenv("FAKE_NVML_STALL_COUNT", "1", 1);
    ctr->stalls = 0;
    int reports0 = ctr->reports;
    double t0 = now_ms();
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), -1);
    double t1 = now_ms();
    assert_non_null(strstr(err, "did not answer within 200 ms"));
    assert_true(t1 - t0 >= 190 && t1 - t0 < 1000);
    assert_int_equal(b.len, 0);
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "busy"));
    /* keep asking: succeeds once the stalled call returned (~1.5 s after it began) */
    int rc = -1;
    while (rc != 0 && now_ms() - t0 < 5000)
        rc = gpu_evidence_collect(g, n, &b, err, sizeof(err));
    assert_int_equal(rc, 0);
    assert_true(now_ms() - t0 >= 1400);
    /* the abandoned collection finished its one report call; no second call was started
     * while it was stuck */
    assert_int_equal(ctr->reports, reports0 + 2);
    buf_free(&b);
    gpu_source_free(g);
    env_reset();
}

/* free() while the helper is stuck: returns at once; the helper shuts NVML down later. */
static void test_free_while_stuck(void **state)
{
    (void)state;
    char err[256] = "";
    uint8_t n[32];
    nonce_fill(n, 8);
    buf_t b = BUF_INIT;
    env_reset();
    gpu_source_t *g = new_src(GPU_MODE_NVML, 100, 0, err, sizeof(err));
    assert_non_null(g);
    setenv("FAKE_NVML_STALL_MS", "600", 1);
    setenv("FAKE_NVML_STALL_COUNT", "1", 1);
    ctr->stalls = 0;
    int shut0 = ctr->shutdown;
    assert_int_equal(gpu_evidence_collect(g, n, &b, err, sizeof(err)), -1);
    double t0 = now_ms();
    gpu_source_free(g);
    assert_true(now_ms() - t0 < 100);
    assert_int_equal(__atomic_load_n(&ctr->shutdown, __ATOMIC_SEQ_CST), shut0);
    while (__atomic_load_n(&ctr->shutdown, __ATOMIC_SEQ_CST) == shut0 && now_ms() - t0 < 5000)
        usleep(10000);
    assert_int_equal(__atomic_load_n(&ctr->shutdown, __ATOMIC_SEQ_CST), shut0 + 1);
    usleep(20000); /* let the detached helper finish its exit */
    env_reset();
}

/* Concurrent callers (as from the libuv pool): all succeed, NVML never sees two callers. */
struct par_arg {
    gpu_source_t *g;
    int ok;
    uint8_t seed;
};

static void *par_main(void *p)
{
    struct par_arg *a = p;
    char err[256];
    for (int i = 0; i < 5; i++) {
        uint8_t n[32];
        nonce_fill(n, (uint8_t)(a->seed + i));
        buf_t b = BUF_INIT;
        if (gpu_evidence_collect(a->g, n, &b, err, sizeof(err)) == 0) {
            char hex[65];
            hex_encode(hex, n, 32);
            if (strstr(b.data, hex))
                a->ok++;
        }
        buf_free(&b);
    }
    return NULL;
}

static void test_serialised(void **state)
{
    (void)state;
    char err[256] = "";
    env_reset();
    setenv("FAKE_NVML_DEVICES", "2", 1);
    setenv("FAKE_NVML_STALL_MS", "5", 1);
    gpu_source_t *g = new_src(GPU_MODE_NVML, 20000, 0, err, sizeof(err));
    assert_non_null(g);
    ctr->max_inflight = 0;
    pthread_t t[6];
    struct par_arg a[6];
    for (int i = 0; i < 6; i++) {
        a[i] = (struct par_arg){g, 0, (uint8_t)(40 * i)};
        pthread_create(&t[i], NULL, par_main, &a[i]);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].ok, 5);
    }
    assert_int_equal(ctr->max_inflight, 1);
    gpu_source_free(g);
    env_reset();
}

/* ---------------------------------------------------------------------------------------- */
/* NVSwitches through the fake libnvidia-nscq.so.2 (tests/fakes/fake_nscq.c), which serves
 * nvtrust's 4-switch LS10 evidence with the nscq_session_set_input nonce written into each
 * report: SIMULATED evidence (its signatures no longer verify) for the collector's shape and
 * nonce, except with nvtrust's own nonce, where it is nvtrust's evidence byte for byte. */

static gpu_source_t *new_sw_src(const char *lib, unsigned expected, unsigned retries, char *err,
                                size_t errlen)
{
    gpu_config_t c = {.mode = GPU_MODE_NVML, .nvml_path = fake_path, .timeout_ms = 10000,
                      .nonce_retries = retries, .nvswitch = 1, .nscq_path = lib,
                      .nvswitch_expected = expected};
    return gpu_source_new(&c, err, errlen);
}

static json_object *switch_vector(uint8_t nonce[32])
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/nvidia/nvtrust/ppcie_switch_evidence_4xLS10.json", vec_dir);
    json_object *ref = json_object_from_file(path), *v;
    assert_non_null(ref);
    assert_int_equal(json_object_array_length(ref), 4);
    assert_true(json_object_object_get_ex(json_object_array_get_idx(ref, 0), "nonce", &v));
    assert_int_equal(hex_decode(nonce, 32, json_object_get_string(v), 64), 32);
    return ref;
}

/* nvtrust's own nonce: the switches' payload is nvtrust's evidence byte for byte, arch LS10. */
static void test_nscq_matches_nvtrust_4switch(void **state)
{
    (void)state;
    uint8_t n[32];
    json_object *ref = switch_vector(n);
    env_reset();
    char err[256] = "", hex[65];
    gpu_source_t *g = new_sw_src(nscq_path, 4, 0, err, sizeof(err));
    assert_non_null(g);
    buf_t b = BUF_INIT, sw = BUF_INIT, want = BUF_INIT;
    assert_int_equal(gpu_evidence_collect_all(g, n, &b, &sw, err, sizeof(err)), 0);
    assert_true(b.len > 0);
    hex_encode(hex, n, 32);
    buf_printf(&want, "{\"nonce\": \"%s\", \"evidence_list\": [", hex);
    for (size_t i = 0; i < 4; i++) {
        json_object *it = json_object_array_get_idx(ref, i), *c, *e;
        assert_true(json_object_object_get_ex(it, "certificate", &c));
        assert_true(json_object_object_get_ex(it, "evidence", &e));
        buf_printf(&want, "%s{\"certificate\": \"%s\", \"evidence\": \"%s\"}", i ? ", " : "",
                   json_object_get_string(c), json_object_get_string(e));
    }
    buf_puts(&want, "], \"arch\": \"LS10\"}");
    assert_string_equal(sw.data, want.data);
    /* the same source again: the NSCQ session is kept, the payload the same */
    buf_t sw2 = BUF_INIT;
    b.len = 0;
    assert_int_equal(gpu_evidence_collect_all(g, n, &b, &sw2, err, sizeof(err)), 0);
    assert_string_equal(sw2.data, want.data);
    /* switches_json NULL: GPUs only */
    b.len = 0;
    assert_int_equal(gpu_evidence_collect_all(g, n, &b, NULL, err, sizeof(err)), 0);
    assert_true(b.len > 0);
    buf_free(&b);
    buf_free(&sw);
    buf_free(&sw2);
    buf_free(&want);
    json_object_put(ref);
    gpu_source_free(g);
}

/* A fresh nonce: 4 switches, each report carrying it at bytes 4..35, the payload's nonce ours. */
static void test_nscq_fresh_nonce(void **state)
{
    (void)state;
    env_reset();
    uint8_t n[32], vn[32];
    nonce_fill(n, 77);
    json_object *ref = switch_vector(vn);
    assert_memory_not_equal(n, vn, 32);
    char err[256] = "";
    gpu_source_t *g = new_sw_src(nscq_path, 0, 0, err, sizeof(err));
    assert_non_null(g);
    buf_t b = BUF_INIT, sw = BUF_INIT;
    assert_int_equal(gpu_evidence_collect_all(g, n, &b, &sw, err, sizeof(err)), 0);
    json_object *root;
    json_object *list = parse_payload(&sw, &root, n, "LS10");
    assert_int_equal(json_object_array_length(list), 4);
    for (size_t i = 0; i < 4; i++) {
        json_object *it = json_object_array_get_idx(list, i), *e, *c, *re, *rc;
        assert_true(json_object_object_get_ex(it, "evidence", &e));
        assert_true(json_object_object_get_ex(it, "certificate", &c));
        assert_true(json_object_object_get_ex(json_object_array_get_idx(ref, i), "evidence", &re));
        assert_true(json_object_object_get_ex(json_object_array_get_idx(ref, i), "certificate", &rc));
        uint8_t rep[4096], orig[4096];
        long rl = b64_decode(rep, sizeof rep, json_object_get_string(e),
                             (size_t)json_object_get_string_len(e));
        long ol = b64_decode(orig, sizeof orig, json_object_get_string(re),
                             (size_t)json_object_get_string_len(re));
        assert_true(rl > 36);
        assert_int_equal(rl, ol);
        assert_memory_equal(rep + 4, n, 32);     /* our nonce in the signed request */
        assert_memory_equal(rep, orig, 4);       /* the rest is the switch's report */
        assert_memory_equal(rep + 36, orig + 36, (size_t)rl - 36);
        assert_string_equal(json_object_get_string(c), json_object_get_string(rc));
    }
    json_object_put(root);
    json_object_put(ref);
    buf_free(&b);
    buf_free(&sw);
    gpu_source_free(g);
}

/* Fewer switches than NVSWITCH_EXPECTED_COUNT, none, or not LS10: the collection fails and
 * nothing is appended to either payload. */
static void test_nscq_fewer_than_expected(void **state)
{
    (void)state;
    env_reset();
    uint8_t n[32];
    nonce_fill(n, 5);
    char err[256] = "";
    gpu_source_t *g = new_sw_src(nscq_path, 4, 0, err, sizeof(err));
    assert_non_null(g);
    buf_t b = BUF_INIT, sw = BUF_INIT;
    setenv("FAKE_NSCQ_SWITCHES", "3", 1);
    assert_int_equal(gpu_evidence_collect_all(g, n, &b, &sw, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NSCQ reports 3 NVSwitch(es), NVSWITCH_EXPECTED_COUNT is 4"));
    assert_int_equal(b.len, 0);
    assert_int_equal(sw.len, 0);
    setenv("FAKE_NSCQ_SWITCHES", "0", 1);
    assert_int_equal(gpu_evidence_collect_all(g, n, &b, &sw, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no NVSwitch"));
    setenv("FAKE_NSCQ_SWITCHES", "4", 1);
    setenv("FAKE_NSCQ_ARCH", "1", 1); /* LR10 */
    assert_int_equal(gpu_evidence_collect_all(g, n, &b, &sw, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "LS10 expected"));
    unsetenv("FAKE_NSCQ_ARCH");
    assert_int_equal(gpu_evidence_collect_all(g, n, &b, &sw, err, sizeof(err)), 0);
    assert_true(sw.len > 0);
    buf_free(&b);
    buf_free(&sw);
    gpu_source_free(g);
    env_reset();
}

/* The library missing or not NSCQ, NSCQ calls failing, sizes out of range, a foreign nonce
 * (retried like the GPUs', then an error). */
static void test_nscq_errors(void **state)
{
    (void)state;
    env_reset();
    uint8_t n[32];
    nonce_fill(n, 9);
    char err[256] = "";
    buf_t b = BUF_INIT, sw = BUF_INIT;
    gpu_source_t *g = new_sw_src("/nonexistent/libnvidia-nscq.so.2", 4, 0, err, sizeof(err));
    assert_non_null(g); /* loaded at first use */
    assert_int_equal(gpu_evidence_collect_all(g, n, &b, &sw, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot load the NVSwitch library NSCQ (/nonexistent/libnvidia-nscq.so.2)"));
    assert_int_equal(b.len + sw.len, 0);
    /* GPUs only still works from the same source */
    assert_int_equal(gpu_evidence_collect_all(g, n, &b, NULL, err, sizeof(err)), 0);
    b.len = 0;
    gpu_source_free(g);
    g = new_sw_src("libc.so.6", 0, 0, err, sizeof(err));
    assert_int_equal(gpu_evidence_collect_all(g, n, &b, &sw, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NSCQ library lacks nscq_session_create"));
    gpu_source_free(g);

    g = new_sw_src(nscq_path, 0, 2, err, sizeof(err));
    assert_non_null(g);
    static const struct {
        const char *var, *val, *want;
    } cases[] = {
        {"FAKE_NSCQ_FAIL", "nscq_session_create", "nscq_session_create failed: NSCQ_RC_ERROR_DRV"},
        {"FAKE_NSCQ_FAIL", "uuid", "switch enumeration"},
        {"FAKE_NSCQ_FAIL", "nscq_uuid_to_label", "switch enumeration"},
        {"FAKE_NSCQ_FAIL", "arch", "architecture"},
        {"FAKE_NSCQ_FAIL", "certificate", "NSCQ certificate failed on NVSwitch SWX-"},
        {"FAKE_NSCQ_FAIL", "nscq_session_set_input", "nscq_session_set_input (nonce) failed"},
        {"FAKE_NSCQ_FAIL", "attestation_report", "NSCQ attestation report failed on NVSwitch"},
        {"FAKE_NSCQ_REPORT_SIZE", "8193", "attestation report size of 8193"},
        {"FAKE_NSCQ_REPORT_SIZE", "35", "attestation report size of 35"},
        {"FAKE_NSCQ_CERT_SIZE", "5121", "certificate chain size of 5121"},
        {"FAKE_NSCQ_CERT_SIZE", "0", "certificate chain size of 0"},
        {"FAKE_NSCQ_KEEP_NONCE", "1", "does not carry the request nonce (after 2 retries)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        env_reset();
        setenv(cases[i].var, cases[i].val, 1);
        err[0] = 0;
        assert_int_equal(gpu_evidence_collect_all(g, n, &b, &sw, err, sizeof(err)), -1);
        if (!strstr(err, cases[i].want))
            fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].want);
        assert_int_equal(b.len + sw.len, 0);
    }
    /* one foreign nonce: retried, then the payload carries ours */
    env_reset();
    setenv("FAKE_NSCQ_FOREIGN_NONCE", "1", 1);
    unsigned long long before = gpu_nonce_retries_total();
    assert_int_equal(gpu_evidence_collect_all(g, n, &b, &sw, err, sizeof(err)), 0);
    assert_int_equal(gpu_nonce_retries_total(), before + 1);
    json_object *root;
    json_object *list = parse_payload(&sw, &root, n, "LS10");
    assert_int_equal(json_object_array_length(list), 4);
    json_object_put(root);
    buf_free(&b);
    buf_free(&sw);
    gpu_source_free(g);
    env_reset();
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *v = getenv("VP_TEST_VECTORS");
    if (v && *v)
        vec_dir = v;
    const char *fp = getenv("VP_FAKE_NVML");
    if (fp && *fp) {
        snprintf(fake_path, sizeof(fake_path), "%s", fp);
    } else {
        char self[4096];
        snprintf(self, sizeof(self), "%s", argv[0]);
        snprintf(fake_path, sizeof(fake_path), "%s/../fakes/libnvidia-ml.so.1", dirname(self));
    }
    const char *np = getenv("VP_FAKE_NSCQ");
    if (np && *np) {
        snprintf(nscq_path, sizeof(nscq_path), "%s", np);
    } else {
        char self[4096];
        snprintf(self, sizeof(self), "%s", argv[0]);
        snprintf(nscq_path, sizeof(nscq_path), "%s/../fakes/libnvidia-nscq.so.2", dirname(self));
    }
    void *dl = dlopen(fake_path, RTLD_NOW);
    if (!dl) {
        fprintf(stderr, "test_gpu: cannot load the fake NVML %s: %s\n", fake_path, dlerror());
        return 1;
    }
    struct fake_nvml_counters *(*get)(void);
    void *sym = dlsym(dl, "fake_nvml_counters");
    memcpy(&get, &sym, sizeof(get));
    ctr = get();
    if (!getenv("LOG_LEVEL"))
        log_set_level(LOG_LVL_ERROR);
    env_reset();

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mode_parse),
        cmocka_unit_test(test_none),
        cmocka_unit_test(test_canned),
        cmocka_unit_test(test_nvml_matches_nvtrust_8gpu),
        cmocka_unit_test(test_nvml_fresh_nonce),
        cmocka_unit_test(test_blackwell_and_arch_errors),
        cmocka_unit_test(test_nvml_missing),
        cmocka_unit_test(test_no_gpu),
        cmocka_unit_test(test_call_fails),
        cmocka_unit_test(test_cc_off),
        cmocka_unit_test(test_bad_lengths_and_nonce),
        cmocka_unit_test(test_foreign_nonce_retry),
        cmocka_unit_test(test_malformed_chain),
        cmocka_unit_test(test_stall),
        cmocka_unit_test(test_free_while_stuck),
        cmocka_unit_test(test_serialised),
        cmocka_unit_test(test_nscq_matches_nvtrust_4switch),
        cmocka_unit_test(test_nscq_fresh_nonce),
        cmocka_unit_test(test_nscq_fewer_than_expected),
        cmocka_unit_test(test_nscq_errors),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    dlclose(dl);
    return rc;
}
