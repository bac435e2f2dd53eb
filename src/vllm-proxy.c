/* vllm-proxy: loads the configuration, creates the signing keys, the signature store and the
 * attestation provider, then runs one event loop per worker thread, each with its own
 * SO_REUSEPORT listener, upstream pool and (with REDIS_HOST) Redis connection. SIGTERM/SIGINT
 * drain gracefully; a second signal closes what is left at once.
 * main is the steps in order: config_load, setup_process (process-wide settings), start
 * (everything but the threads), start_main_loop, banner, run, shutdown_all. */
#include <malloc.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "attest/gpu.h"
#include "core/clock.h"
#include "core/fdlimit.h"
#include "core/log.h"
#include "proxy/app.h"
#include "proxy/e2ee.h"
#include "proxy/relay.h"
#include "proxy/router.h"

typedef struct worker_thread {
    app_worker_t aw;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t ctl;
    uv_timer_t grace;
    int stop_requested, force_requested, drained;
} worker_thread_t;

static app_t g_app;
static config_t g_cfg;
static worker_thread_t *g_threads;
static uv_async_t g_worker_exit;
static uv_signal_t g_sigterm, g_sigint;
static uv_timer_t g_sweep;
static uv_timer_t g_tls_timer; /* TLS_CERT_PATH rotation check (a pool job per tick) */
static uv_work_t g_tls_work;
static int g_tls_busy;
static int g_signals;
static int g_exited;
static int g_nexited;

static void on_drained(worker_t *w)
{
    worker_thread_t *t = (worker_thread_t *)worker_user(w);
    if (t->drained)
        return;
    t->drained = 1;
    upstream_pool_close(t->aw.pool);
    t->aw.pool = NULL;
    if (t == &g_threads[0]) {
        engines_checker_stop(g_app.checker);
        g_app.checker = NULL;
    }
    rstore_close(t->aw.redis); /* its handles finish closing when main runs the loop again */
    t->aw.redis = NULL;
    /* ctl stays open: the main thread may still signal it. It is closed after the join. */
    uv_timer_stop(&t->grace);
    uv_stop(&t->loop);
}

static void on_grace_over(uv_timer_t *tm)
{
    worker_thread_t *t = tm->data;
    LOG_WARN("worker %d: grace period over, closing %u connection(s)", t->aw.w ? worker_id(t->aw.w) : 0,
             worker_conn_count(t->aw.w));
    worker_close_all(t->aw.w);
}

static void on_ctl(uv_async_t *a)
{
    worker_thread_t *t = a->data;
    if (t->drained)
        return;
    if (__atomic_load_n(&t->force_requested, __ATOMIC_ACQUIRE)) {
        worker_close_all(t->aw.w);
        return;
    }
    if (__atomic_load_n(&t->stop_requested, __ATOMIC_ACQUIRE)) {
        uv_timer_start(&t->grace, on_grace_over, g_cfg.shutdown_grace_ms, 0);
        worker_drain(t->aw.w, on_drained);
    }
}

static void worker_main(void *arg)
{
    worker_thread_t *t = arg;
    uv_run(&t->loop, UV_RUN_DEFAULT);
    relay_free_list(&t->aw);
    __atomic_add_fetch(&g_nexited, 1, __ATOMIC_ACQ_REL);
    uv_async_send(&g_worker_exit);
}

static void on_worker_exit(uv_async_t *a)
{
    (void)a;
    if (g_exited || __atomic_load_n(&g_nexited, __ATOMIC_ACQUIRE) < g_app.nworkers)
        return;
    g_exited = 1;
    uv_close((uv_handle_t *)&g_sigterm, NULL);
    uv_close((uv_handle_t *)&g_sigint, NULL);
    uv_close((uv_handle_t *)&g_sweep, NULL);
    uv_close((uv_handle_t *)&g_tls_timer, NULL);
    uv_close((uv_handle_t *)&g_worker_exit, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    g_signals++;
    if (g_signals == 1)
        LOG_INFO("received %s: draining (grace %u s)", signum == SIGTERM ? "SIGTERM" : "SIGINT",
                 g_cfg.shutdown_grace_ms / 1000);
    else
        LOG_WARN("second signal: closing every connection now");
    for (int i = 0; i < g_app.nworkers; i++) {
        if (g_signals == 1)
            __atomic_store_n(&g_threads[i].stop_requested, 1, __ATOMIC_RELEASE);
        else
            __atomic_store_n(&g_threads[i].force_requested, 1, __ATOMIC_RELEASE);
        uv_async_send(&g_threads[i].ctl);
    }
}

static gpu_source_t *g_gpu;

static int gpu_collect(void *ctx, const uint8_t nonce[32], buf_t *payload, buf_t *switches,
                       char *err, size_t errlen)
{
    return gpu_evidence_collect_all(ctx, nonce, payload, switches, err, errlen);
}

/* GPU_EVIDENCE=dstack: the guest agent's AttestGpu (no NVML in this container). */
static int gpu_collect_dstack(void *ctx, const uint8_t nonce[32], buf_t *payload, buf_t *switches,
                              char *err, size_t errlen)
{
    (void)switches;
    return attest_provider_attest_gpu(ctx, nonce, payload, err, errlen);
}

/* The gpu module's mode for a configured one (simulated is not the gpu module's). */
static int gpu_module_mode(enum gpu_evidence_mode m)
{
    switch (m) {
    case GPU_EVIDENCE_NVML:
        return GPU_MODE_NVML;
    case GPU_EVIDENCE_CANNED:
        return GPU_MODE_CANNED;
    case GPU_EVIDENCE_NONE:
        return GPU_MODE_NONE;
    default:
        return GPU_MODE_AUTO;
    }
}

/* GPU evidence for the report service: GPU_EVIDENCE, or its default for the provider kind.
 * 0, or -1 with err. */
static int start_gpu(attest_provider_t *prov, attest_service_config_t *sc, char *err, size_t errlen)
{
    attest_kind_t kind = attest_provider_kind(prov);
    enum gpu_evidence_mode gm = g_cfg.gpu_evidence;
    sc->gpu_expected = g_cfg.gpu_expected_count;
    sc->nvswitch_expected = g_cfg.nvswitch_expected_count;
    if (gm == GPU_EVIDENCE_UNSET)
        gm = kind == ATTEST_SIMULATED ? GPU_EVIDENCE_SIMULATED
             : g_cfg.gpu_no_hw_mode   ? GPU_EVIDENCE_CANNED
                                      : GPU_EVIDENCE_AUTO;
    if (gm == GPU_EVIDENCE_SIMULATED) {
        if (kind != ATTEST_SIMULATED) {
            sc->gpu_label = "simulated";
            LOG_WARN("GPU evidence: SIMULATED payload (GPU_EVIDENCE=simulated)");
        }
        return 0;
    }
    if (gm == GPU_EVIDENCE_DSTACK) {
        if (kind != ATTEST_DSTACK) {
            snprintf(err, errlen, "GPU_EVIDENCE=dstack needs ATTESTATION=dstack (the guest agent's "
                                  "AttestGpu), not %s", attest_provider_mode(prov));
            return -1;
        }
        sc->gpu = gpu_collect_dstack;
        sc->gpu_ctx = prov;
        sc->gpu_label = "dstack";
        LOG_INFO("GPU evidence: the dstack guest agent's AttestGpu (no NVML in this process)");
        return 0;
    }
    gpu_config_t gc = {.mode = gpu_module_mode(gm),
                       .nvml_path = g_cfg.nvml_library_path,
                       .allow_cc_off = g_cfg.gpu_allow_cc_off,
                       .timeout_ms = g_cfg.gpu_evidence_timeout_ms,
                       .nonce_retries = g_cfg.gpu_nonce_retries,
                       .nvswitch = g_cfg.nvswitch_evidence > 0 ||
                                   (g_cfg.nvswitch_evidence < 0 && g_cfg.nvswitch_expected_count > 0),
                       .nscq_path = g_cfg.nscq_library_path,
                       .nvswitch_expected = g_cfg.nvswitch_expected_count};
    char e[400];
    if (!(g_gpu = gpu_source_new(&gc, e, sizeof e))) {
        snprintf(err, errlen, "GPU evidence (%s): %s", config_gpu_evidence_name(gm), e);
        return -1;
    }
    sc->gpu = gpu_collect;
    sc->gpu_ctx = g_gpu;
    sc->gpu_label = gpu_source_mode(g_gpu);
    LOG_INFO("GPU evidence: %s", sc->gpu_label);
    return 0;
}

/* The signing keys: derived by the dstack KMS, random with any other provider. 0, or -1. */
static int start_signer(attest_provider_t *prov, char *err, size_t errlen)
{
    attest_kind_t kind = attest_provider_kind(prov);
    if (kind == ATTEST_DSTACK) {
        uint8_t sk[32], seed[32];
        char e[400];
        if (attest_provider_derive_keys(prov, g_cfg.model_name, sk, seed, e, sizeof e) != 0) {
            snprintf(err, errlen, "signing keys from the dstack KMS: %s", e);
            return -1;
        }
        g_app.signer = signer_from_secrets(sk, seed);
        sodium_memzero(sk, sizeof sk);
        sodium_memzero(seed, sizeof seed);
        if (g_app.signer)
            LOG_INFO("signing keys derived by the dstack KMS (GetKey %s/ecdsa-signing-key, %s/ed25519-signing-key)",
                     g_cfg.model_name, g_cfg.model_name);
    } else {
        g_app.signer = signer_new_random();
        if (kind == ATTEST_SIMULATED)
            LOG_WARN("SIMULATED attestation: random signing keys, SIMULATED quotes - NOT FOR PRODUCTION");
        else
            LOG_WARN("attestation %s has no KMS: signing keys are random and change on every restart",
                     attest_provider_mode(prov));
    }
    if (!g_app.signer) {
        snprintf(err, errlen, "cannot create signing keys");
        return -1;
    }
    return 0;
}

/* ACI E2EE v2's keys (sign/aci_keys.h): one per suite, derived by the dstack KMS like the
 * signing keys (GetKey <model>/aci-e2ee-v2-x25519-key and <model>/aci-e2ee-v2-secp256k1-key),
 * random with any other provider. The keyset is valid ACI_KEYSET_TTL from its issue and is
 * re-issued (same keys, new not_after and digest) at half-life, so it never expires in use. */
static int start_aci(attest_provider_t *prov, const uint8_t *spki, char *err, size_t errlen)
{
    int64_t not_after = (int64_t)clock_wall_s() + (int64_t)g_cfg.aci_keyset_ttl;
    if (attest_provider_kind(prov) == ATTEST_DSTACK) {
        uint8_t x[32], k1[32];
        char e[400], path[2][300];
        snprintf(path[0], sizeof path[0], "%s/aci-e2ee-v2-x25519-key", g_cfg.model_name);
        snprintf(path[1], sizeof path[1], "%s/aci-e2ee-v2-secp256k1-key", g_cfg.model_name);
        if (attest_provider_derive_key(prov, path[0], "secp256k1", x, e, sizeof e) != 0 ||
            attest_provider_derive_key(prov, path[1], "secp256k1", k1, e, sizeof e) != 0) {
            sodium_memzero(x, sizeof x);
            snprintf(err, errlen, "ACI E2EE keys from the dstack KMS: %s", e);
            return -1;
        }
        g_app.aci = aci_keys_from_secrets(x, k1, spki, not_after);
        sodium_memzero(x, sizeof x);
        sodium_memzero(k1, sizeof k1);
        if (g_app.aci)
            LOG_INFO("ACI E2EE v2 keys derived by the dstack KMS (GetKey %s, %s)", path[0], path[1]);
    } else {
        g_app.aci = aci_keys_new_random(spki, not_after);
    }
    if (!g_app.aci) {
        snprintf(err, errlen, "cannot create the ACI E2EE keys");
        return -1;
    }
    aci_keys_set_lifetime(g_app.aci, (int64_t)g_cfg.aci_keyset_ttl);
    char digest[ACI_DIGEST_LEN + 1];
    aci_keys_current(g_app.aci, (int64_t)clock_wall_s(), digest, NULL, NULL);
    LOG_INFO("ACI keyset %s (valid %u s, renewed at half-life)", digest, g_cfg.aci_keyset_ttl);
    return 0;
}

/* The attestation provider (auto never falls back to simulated), the signing keys, GPU
 * evidence and the report service. 0, or -1 with err. */
static int start_attestation(char *err, size_t errlen)
{
    attest_provider_config_t pc = {
        .mode = config_attest_mode_name(g_cfg.attestation),
        .dstack_endpoint = g_cfg.dstack_endpoint,
        .tappd_endpoint = g_cfg.tappd_endpoint,
        .tsm_root = g_cfg.tsm_root,
        .timeout_ms = g_cfg.attestation_timeout_ms,
    };
    char e[400];
    attest_provider_t *prov = attest_provider_open(&pc, e, sizeof e);
    if (!prov) {
        snprintf(err, errlen, "attestation: %s", e);
        return -1;
    }
    uint8_t spki[32];
    attest_service_config_t sc = {.cache_ttl_s = g_cfg.attestation_cache_ttl,
                                  .tls_spki_sha256 = g_cfg.tls_cert_path[0] ? spki : NULL,
                                  .tls_cert_path = g_cfg.tls_cert_path};
    if (start_signer(prov, err, errlen) != 0 ||
        (g_cfg.tls_cert_path[0] && attest_tls_spki_sha256_file(g_cfg.tls_cert_path, spki, err, errlen) != 0) ||
        start_gpu(prov, &sc, err, errlen) != 0 ||
        start_aci(prov, g_cfg.tls_cert_path[0] ? spki : NULL, err, errlen) != 0) {
        attest_provider_free(prov);
        return -1;
    }
    sc.aci = g_app.aci;
    sc.model_name = g_cfg.model_name;
    sc.signed_text_format = g_cfg.signed_text == SIGNED_TEXT_MODEL_REQ_RESP ? "model:req:resp" : "req:resp";
    sc.event_log_array = g_cfg.event_log_format == EVENT_LOG_ARRAY;
    if (g_cfg.signed_text == SIGNED_TEXT_MODEL_REQ_RESP && strchr(g_cfg.model_name, ':'))
        LOG_WARN("SIGNED_TEXT=model:req:resp with a MODEL_NAME that contains ':': verifiers that split "
                 "the signed text on ':' (nearai-cloud-verifier: 2 or 3 parts) will reject it");
    if (!(g_app.attest = attest_service_new(prov, g_app.signer, &sc))) {
        snprintf(err, errlen, "out of memory");
        attest_provider_free(prov);
        return -1;
    }
    return 0;
}

static void on_sweep(uv_timer_t *t)
{
    (void)t;
    store_expire(g_app.store, clock_wall_s());
}

/* TLS_CERT_PATH rotation: the file is looked at on the thread pool (open, fstat, a parse
 * only when it changed), never on a loop; one look at a time. */
static void tls_check_work(uv_work_t *w)
{
    (void)w;
    attest_service_tls_check(g_app.attest);
}

static void tls_check_done(uv_work_t *w, int status)
{
    (void)w, (void)status;
    g_tls_busy = 0;
}

static void on_tls_timer(uv_timer_t *t)
{
    if (g_tls_busy)
        return;
    g_tls_busy = 1;
    if (uv_queue_work(t->loop, &g_tls_work, tls_check_work, tls_check_done) != 0)
        g_tls_busy = 0;
}

/* Process-wide settings, before anything is started. */
static void setup_process(void)
{
    log_set_level(g_cfg.log_level);
    log_set_json(g_cfg.log_format == LOG_FORMAT_JSON);
    signal(SIGPIPE, SIG_IGN);
    /* Keep freed memory for reuse instead of trimming the heap every few requests (measured:
     * one mprotect per five or six signed requests with glibc's defaults). */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 4 << 20);
}

/* The engines every worker's pool spreads requests over: VLLM_BACKEND_URLS, else the one
 * VLLM_BASE_URL. 0, or -1 with err. */
static int start_upstream(char *err, size_t errlen)
{
    char e[512];
    upstream_target_t tmpl;
    memset(&tmpl, 0, sizeof tmpl);
    tmpl.connect_timeout_ms = g_cfg.upstream_connect_timeout_ms;
    tmpl.first_byte_timeout_ms = g_cfg.upstream_first_byte_timeout_ms;
    tmpl.total_timeout_ms = g_cfg.total_timeout_ms;
    if (g_cfg.upstream_api_key[0])
        snprintf(tmpl.auth_header, sizeof tmpl.auth_header, "Authorization: Bearer %s\r\n",
                 g_cfg.upstream_api_key);
    if (g_cfg.health_check_path[0] != '/' || strpbrk(g_cfg.health_check_path, " ?#")) {
        snprintf(err, errlen, "HEALTH_CHECK_PATH: '%s' is not an absolute path without a query",
                 g_cfg.health_check_path);
        return -1;
    }
    engine_cfg_t ec = {
        .check_interval_ms = g_cfg.health_check_interval_ms,
        .check_timeout_ms = g_cfg.health_check_timeout_ms,
        .down_after_checks = g_cfg.health_check_failures,
        .down_after_conn_fails = g_cfg.engine_connect_failures,
        .up_after_checks = g_cfg.health_check_successes,
        .max_inflight = g_cfg.engine_max_inflight,
        .queue_max = g_cfg.engine_queue_max,
        .queue_timeout_ms = g_cfg.engine_queue_timeout_ms,
    };
    snprintf(ec.health_path, sizeof ec.health_path, "%s", g_cfg.health_check_path);
    int pool = g_cfg.backend_urls[0] != '\0';
    g_app.engines = engines_new(pool ? g_cfg.backend_urls : g_cfg.upstream_url, &tmpl, &ec, e, sizeof e);
    if (!g_app.engines) {
        snprintf(err, errlen, "%s: %s", pool ? "VLLM_BACKEND_URLS" : "VLLM_BASE_URL", e);
        return -1;
    }
    for (int i = 0; i < g_app.engines->n; i++) /* the engine label of the exchange metrics */
        metrics_engine_name(&g_app, i, g_app.engines->e[i].name);
    return 0;
}

/* Worker i: its loop, listener, engine pool, Redis connection and control handles. 0, or -1
 * with err. */
static int start_worker(int i, const http_limits_t *lim, char *err, size_t errlen)
{
    worker_thread_t *t = &g_threads[i];
    g_app.workers[i] = &t->aw;
    t->aw.app = &g_app;
    uv_loop_init(&t->loop);
    t->aw.w = worker_new(&t->loop, i, g_cfg.listen_host, g_cfg.listen_port, lim, &app_http_handler, t,
                         err, errlen);
    if (!t->aw.w)
        return -1;
    t->aw.pool = upstream_pool_new(&t->loop, g_app.engines, t->aw.w);
    if (!t->aw.pool) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* One health checker for the process, on worker 0's loop; every worker reads the engines'
     * state (atomics). */
    if (i == 0)
        g_app.checker = engines_checker_start(g_app.engines, &t->loop, t->aw.w);
    if (g_app.e2ee_pool && !(t->aw.e2ee_port = e2ee_port_new(g_app.e2ee_pool, &t->loop))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (g_cfg.redis_host[0]) {
        /* One connection per loop; it connects (and reconnects) in the background. */
        rstore_config_t rc = {.host = g_cfg.redis_host, .port = g_cfg.redis_port,
                              .password = g_cfg.redis_password, .db = g_cfg.redis_db,
                              .timeout_ms = g_cfg.redis_timeout_ms, .ttl_s = g_cfg.cache_ttl,
                              .worker = i};
        if (!(t->aw.redis = rstore_new(&t->loop, &rc))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    uv_async_init(&t->loop, &t->ctl, on_ctl);
    t->ctl.data = t;
    uv_timer_init(&t->loop, &t->grace);
    t->grace.data = t;
    /* worker_user() must give the thread struct: app_worker_t is its first member. */
    return 0;
}

/* Every worker, not yet running. 0, or -1 with err ("" when an allocation failed). */
static int start_workers(char *err, size_t errlen)
{
    http_limits_t lim = {
        .max_header_bytes = g_cfg.max_header_size,
        .max_headers = g_cfg.max_headers,
        .max_body = g_cfg.max_request_size,
        .max_body_any = g_cfg.max_image_request_size > g_cfg.max_audio_request_size
                            ? g_cfg.max_image_request_size
                            : g_cfg.max_audio_request_size,
        .header_timeout_ms = g_cfg.header_timeout_ms,
        .body_timeout_ms = g_cfg.body_timeout_ms,
        .idle_timeout_ms = g_cfg.idle_timeout_ms,
        .max_connections = fdlimit_setup(g_cfg.max_connections), /* raises RLIMIT_NOFILE, logs */
    };
    g_app.nworkers = g_cfg.workers;
    g_threads = calloc((size_t)g_cfg.workers, sizeof *g_threads);
    g_app.workers = calloc((size_t)g_cfg.workers, sizeof *g_app.workers);
    if (!g_threads || !g_app.workers) {
        err[0] = '\0';
        return -1;
    }
    for (int i = 0; i < g_cfg.workers; i++)
        if (start_worker(i, &lim, err, errlen) != 0)
            return -1;
    return 0;
}

/* Everything but the threads: upstream, store, keys, attestation, workers. 0, or the exit
 * code (2: a configuration error, 1: a start-up failure) with err ("" = nothing to say). */
static int start(char *err, size_t errlen)
{
    g_app.cfg = &g_cfg;
    g_app.start_time = clock_wall_s();
    e2ee_replay_configure(g_cfg.e2ee_replay_window); /* before any worker */
    if (start_upstream(err, errlen) != 0)
        return 2;
    /* A second vllm-proxy on this address would join the first one's SO_REUSEPORT group and
     * get a share of its connections with other keys and another signature store. */
    if (http_listen_probe(g_cfg.listen_host, g_cfg.listen_port, err, errlen) != 0)
        return 1;
    g_app.store = store_new(g_cfg.cache_capacity, g_cfg.cache_ttl);
    if (!g_app.store) {
        snprintf(err, errlen, "cannot initialise the signature store");
        return 1;
    }
    err[0] = '\0';
    if (signer_global_init() != 0 || start_attestation(err, errlen) != 0) {
        if (!err[0])
            snprintf(err, errlen, "cannot create signing keys");
        return 1;
    }
    /* The crypto threads sealing NEAR and ACI v2 answers (a fresh key per field) off the
     * loops: E2EE is always on for chat completions, so they are always started. */
    g_app.e2ee_pool = e2ee_pool_new((unsigned)g_cfg.e2ee_threads, g_cfg.e2ee_thread_nice, 0, err,
                                    errlen);
    if (!g_app.e2ee_pool)
        return 1;
    err[0] = '\0';
    g_app.limits = ratelimit_new(&g_cfg, err, errlen);
    if (!g_app.limits && err[0])
        return 1;
    return start_workers(err, errlen) != 0 ? 1 : 0;
}

/* The main loop's handles: signals, the exit notification, the signature sweep. */
static void start_main_loop(uv_loop_t *main_loop)
{
    uv_async_init(main_loop, &g_worker_exit, on_worker_exit);
    uv_signal_init(main_loop, &g_sigterm);
    uv_signal_init(main_loop, &g_sigint);
    uv_signal_start(&g_sigterm, on_signal, SIGTERM);
    uv_signal_start(&g_sigint, on_signal, SIGINT);
    uv_timer_init(main_loop, &g_sweep);
    uv_timer_start(&g_sweep, on_sweep, 30000, 30000);
    uv_timer_init(main_loop, &g_tls_timer);
    if (g_cfg.tls_cert_path[0] && g_cfg.tls_cert_check_interval) {
        uint64_t ms = (uint64_t)g_cfg.tls_cert_check_interval * 1000;
        uv_timer_start(&g_tls_timer, on_tls_timer, ms, ms);
    }
}

/* The start-up log lines: where it listens, the engine, attestation, keys, store. */
static void banner(void)
{
    const attest_provider_t *prov = attest_service_provider(g_app.attest);
    LOG_INFO("vllm-proxy %s listening on %s:%d with %d worker(s)", config_version(), g_cfg.listen_host,
             g_cfg.listen_port, g_cfg.workers);
    const engine_set_t *es = g_app.engines;
    for (int i = 0; i < es->n; i++)
        LOG_INFO("upstream engine %d of %d: %s%s", i + 1, es->n, es->e[i].name,
                 g_cfg.upstream_api_key[0] ? " (with VLLM_API_KEY)" : "");
    if (es->cfg.check_interval_ms)
        LOG_INFO("engine health: GET %s every %u s (timeout %u s); out after %u failed checks or %u "
                 "connection failures in a row, back after %u good checks",
                 es->cfg.health_path, es->cfg.check_interval_ms / 1000, es->cfg.check_timeout_ms / 1000,
                 es->cfg.down_after_checks, es->cfg.down_after_conn_fails, es->cfg.up_after_checks);
    else
        LOG_INFO("engine health: no checks (HEALTH_CHECK_INTERVAL=0), no engine is taken out");
    if (es->cfg.max_inflight)
        LOG_INFO("engine budget: %u requests in flight per engine, %u waiting at most for %u s, then 429",
                 es->cfg.max_inflight, es->cfg.queue_max, es->cfg.queue_timeout_ms / 1000);
    if (attest_provider_kind(prov) == ATTEST_SIMULATED)
        LOG_WARN("attestation: SIMULATED - quotes are signed by a test key, not by a TEE; for development and tests only");
    else
        LOG_INFO("attestation: %s at %s", attest_provider_mode(prov), attest_provider_where(prov));
    LOG_INFO("signing address (ecdsa): %s", signer_ecdsa_address(g_app.signer));
    LOG_INFO("signing address (ed25519): %s", signer_ed25519_pubkey_hex(g_app.signer));
    LOG_INFO("model %s, signature store %zu records for %u s, %d token(s), %d trusted for X-Request-Hash",
             g_cfg.model_name, g_cfg.cache_capacity, g_cfg.cache_ttl, g_cfg.ntokens, g_cfg.ntrusted);
    LOG_INFO("E2EE: %d crypto thread(s) at nice +%d seal NEAR and ACI v2 answers", g_cfg.e2ee_threads,
             g_cfg.e2ee_thread_nice);
    if (g_cfg.ntokens == 0)
        LOG_WARN("TOKEN is unset: every authenticated route (completions, signatures, reports) answers 401");
    if (ratelimit_ip_on(g_app.limits))
        LOG_INFO("rate limit per client address: %u/min, burst %u, %zu addresses tracked; %d trusted "
                 "proxy entr%s, %u trusted hop(s)",
                 g_cfg.rate_limit_ip_per_minute, g_cfg.rate_limit_ip_burst,
                 ratelimit_ip_slots(g_app.limits), g_cfg.ntrusted_proxies,
                 g_cfg.ntrusted_proxies == 1 ? "y" : "ies", g_cfg.trusted_proxy_hops);
    if (ratelimit_token_on(g_app.limits))
        LOG_INFO("rate limit per token: %u/min, burst %u", g_cfg.rate_limit_token_per_minute,
                 g_cfg.rate_limit_token_burst);
    if (g_cfg.redis_host[0])
        LOG_INFO("signature store: memory, written through to Redis %s:%d db %d (timeout %u ms)%s",
                 g_cfg.redis_host, g_cfg.redis_port, g_cfg.redis_db, g_cfg.redis_timeout_ms,
                 g_cfg.redis_password[0] ? " with AUTH" : "");
}

/* The worker threads run until they have drained; the main loop until they have all exited. */
static void run(uv_loop_t *main_loop)
{
    for (int i = 0; i < g_cfg.workers; i++)
        uv_thread_create(&g_threads[i].thread, worker_main, &g_threads[i]);
    uv_run(main_loop, UV_RUN_DEFAULT);
    for (int i = 0; i < g_cfg.workers; i++)
        uv_thread_join(&g_threads[i].thread);
}

/* Every worker thread is gone: stop the crypto threads (a sealing job still queued comes back
 * to its worker's port, not run), finish the workers' loops here (those completions, pending
 * closes, pool jobs), then free what start() made. */
static void shutdown_all(uv_loop_t *main_loop)
{
    e2ee_pool_free(g_app.e2ee_pool);
    g_app.e2ee_pool = NULL;
    for (int i = 0; i < g_cfg.workers; i++) {
        uv_close((uv_handle_t *)&g_threads[i].ctl, NULL);
        uv_close((uv_handle_t *)&g_threads[i].grace, NULL);
        e2ee_port_close(g_threads[i].aw.e2ee_port); /* relays waiting for a job let go */
        g_threads[i].aw.e2ee_port = NULL;
        uv_run(&g_threads[i].loop, UV_RUN_DEFAULT);
        relay_free_list(&g_threads[i].aw);
        worker_free(g_threads[i].aw.w);
        buf_free(&g_threads[i].aw.scratch);
        uv_loop_close(&g_threads[i].loop);
    }
    uv_loop_close(main_loop);
    /* Join libuv's thread pool now, while OpenSSL's thread-exit handlers are still installed:
     * they free the per-thread state (error queue, DRBGs) the pool threads made while signing
     * quotes. Left to libuv's own destructor, the join comes after OpenSSL's atexit cleanup
     * and that state is never freed (valgrind: definitely lost, one set per pool thread). */
    uv_library_shutdown();
    attest_service_free(g_app.attest);
    engines_free(g_app.engines);
    gpu_source_free(g_gpu);
    store_free(g_app.store);
    signer_free(g_app.signer);
    aci_keys_free(g_app.aci);
    ratelimit_free(g_app.limits);
    free(g_threads);
    free(g_app.workers);
}

int main(int argc, char **argv)
{
    char err[1024];
    int rc = config_load(&g_cfg, argc, argv, err, sizeof err);
    if (rc == CFG_EXIT_OK)
        return 0;
    if (rc != CFG_OK) {
        fprintf(stderr, "vllm-proxy: %s\n", err);
        return 2;
    }
    setup_process();
    if ((rc = start(err, sizeof err)) != 0) {
        if (err[0])
            fprintf(stderr, "vllm-proxy: %s\n", err);
        return rc;
    }
    uv_loop_t *main_loop = uv_default_loop();
    start_main_loop(main_loop);
    banner();
    run(main_loop);
    shutdown_all(main_loop);
    LOG_INFO("stopped");
    return 0;
}
