/* Configuration loading: defaults, then the environment, then command-line flags, all driven by
 * the one table SETTINGS below. Every value is validated; an invalid one stops the program with
 * a message naming the variable (or, for --listen, the flag). */
#include "proxy/config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sha.h"

#define VP_VERSION "0.1.0"

/* CFG_INT, CFG_BOOL, CFG_ENUM, CFG_LOG_LEVEL and CFG_DEV fields are written as an int. */
_Static_assert(sizeof(enum attest_mode) == sizeof(int), "enum attest_mode is not int-sized");
_Static_assert(sizeof(enum gpu_evidence_mode) == sizeof(int), "enum gpu_evidence_mode is not int-sized");
_Static_assert(sizeof(enum signed_text_mode) == sizeof(int), "enum signed_text_mode is not int-sized");
_Static_assert(sizeof(enum event_log_format) == sizeof(int), "enum event_log_format is not int-sized");
_Static_assert(sizeof(enum log_format) == sizeof(int), "enum log_format is not int-sized");
_Static_assert(sizeof(enum inband_setting) == sizeof(int), "enum inband_setting is not int-sized");

static const char *const ATTEST_NAMES[] = {"auto", "dstack", "tappd", "tsm", "simulated", NULL};
static const char *const GPU_NAMES[] = {"", "auto", "nvml", "canned", "none", "simulated", "dstack", NULL};
static const char *const SIGNED_TEXT_NAMES[] = {"req:resp", "model:req:resp", NULL};
static const char *const EVENT_LOG_NAMES[] = {"array", "string", NULL};
static const char *const LOG_FORMAT_NAMES[] = {"text", "json", NULL};
static const char *const INBAND_NAMES[] = {"request", "all", "off", NULL}; /* enum inband_setting */

/* A field of config_t: its offset and size. */
#define FIELD(f) offsetof(config_t, f), sizeof(((config_t *)0)->f)
#define WEEK (86400ull * 7)

/* flag, env, kind, FIELD, aux, lo, hi, names, flags, default, shown default, help.
 * Order: the order the environment is read in and --help lists. */
static const config_setting_t SETTINGS[] = {
    {NULL, "LISTEN_HOST", CFG_STR, FIELD(listen_host), 0, 0, 0, NULL, CFG_TRUNCATE, "0.0.0.0", NULL,
     "address to listen on (an IPv6 address unbracketed)"},
    {NULL, "LISTEN_PORT", CFG_INT, FIELD(listen_port), 0, 0, 65535, NULL, 0, "8000", NULL,
     "port to listen on"},
    {"--listen", NULL, CFG_LISTEN, FIELD(listen_host), 0, 0, 65535, NULL, 0, NULL, "`0.0.0.0:8000`",
     "HOST:PORT or [IPV6]:PORT to listen on; overrides LISTEN_HOST and LISTEN_PORT"},
    {"--upstream", "VLLM_BASE_URL", CFG_STR, FIELD(upstream_url), 0, 0, 0, NULL, CFG_TRIM_SLASH,
     "http://vllm:8000", NULL, "engine base URL, http://host:port or unix:/path"},
    {"--backends", "VLLM_BACKEND_URLS", CFG_STR, FIELD(backend_urls), 0, 0, 0, NULL, CFG_ONE_LINE,
     NULL, NULL,
     "comma-separated engine URLs (http://host:port or unix:/path) to spread requests over; "
     "replaces VLLM_BASE_URL"},
    {"--upstream-api-key", "VLLM_API_KEY", CFG_STR, FIELD(upstream_api_key), 0, 0, 0, NULL,
     CFG_ONE_LINE, NULL, NULL, "Bearer token the proxy sends to the engine"},
    {"--model-name", "MODEL_NAME", CFG_STR, FIELD(model_name), 0, 0, 0, NULL, CFG_REQUIRED, NULL,
     NULL, "model name; namespaces stored signatures"},
    {"--token", "TOKEN", CFG_TOKENS, FIELD(token_hash), offsetof(config_t, ntokens), 0, 0, NULL, 0,
     NULL, NULL, "comma-separated bearer tokens accepted from clients (unset: authenticated routes answer 401)"},
    {"--trusted-hash-tokens", "TRUSTED_REQUEST_HASH_TOKENS", CFG_TOKENS, FIELD(trusted_hash),
     offsetof(config_t, ntrusted), 0, 0, NULL, 0, NULL, NULL, "tokens whose callers may set X-Request-Hash"},
    {"--cache-salt-secret", "CACHE_SALT_SECRET", CFG_STR, FIELD(cache_salt_secret), 0, 0, 0, NULL,
     CFG_ONE_LINE, NULL, NULL,
     "32+ characters: strip client cache_salt, inject HMAC(secret, token) (unset: off)"},
    {"--workers", "WORKERS", CFG_INT, FIELD(workers), 0, 1, 256, NULL, 0, NULL,
     "CPU count (at most 64)", "event-loop threads"},
    {"--e2ee-threads", "E2EE_THREADS", CFG_INT, FIELD(e2ee_threads), 0, 1, 64, NULL, 0, NULL,
     "CPU count (at most 16)", "crypto threads sealing NEAR and ACI answers off the event loops"},
    {"--e2ee-thread-nice", "E2EE_THREAD_NICE", CFG_INT, FIELD(e2ee_thread_nice), 0, 0, 19, NULL, 0,
     "10", NULL, "nice increment of the crypto threads, so the event loops win the CPU (0 = none)"},
    {"--attestation", "ATTESTATION", CFG_ENUM, FIELD(attestation), 0, 0, 0, ATTEST_NAMES, 0, "auto",
     NULL, "auto|dstack|tappd|tsm|simulated (auto: dstack, tappd, then configfs-tsm, never simulated)"},
    {NULL, "DEV", CFG_DEV, FIELD(attestation), 0, 0, 0, NULL, 0, NULL, NULL,
     "DEV=1 (or true, yes) implies ATTESTATION=simulated; --attestation still overrides it"},
    {"--gpu-no-hw-mode", "GPU_NO_HW_MODE", CFG_BOOL, FIELD(gpu_no_hw_mode), 0, 0, 0, NULL, 0, "0",
     NULL, "1 = canned GPU evidence, unless GPU_EVIDENCE is set (simulated attestation defaults to simulated evidence)"},
    {"--cache-ttl", "CHAT_CACHE_EXPIRATION", CFG_UINT, FIELD(cache_ttl), 0, 1, 86400 * 30, NULL, 0,
     "1200", NULL, "seconds signatures are kept"},
    {"--cache-capacity", "CHAT_CACHE_CAPACITY", CFG_SIZE, FIELD(cache_capacity), 0, 1, 100000000,
     NULL, 0, "100000", NULL, "signatures kept at most; oldest evicted first"},
    {"--max-request-size", "VLLM_PROXY_MAX_REQUEST_SIZE", CFG_SIZE, FIELD(max_request_size), 0, 1,
     1ull << 30, NULL, 0, "10485760", NULL, "largest request body in bytes, 413 beyond"},
    {"--max-image-request-size", "VLLM_PROXY_MAX_IMAGE_REQUEST_SIZE", CFG_SIZE,
     FIELD(max_image_request_size), 0, 1, 1ull << 30, NULL, 0, "52428800", NULL,
     "largest body of /v1/images/generations and /v1/images/edits (multipart) in bytes, 413 beyond"},
    {"--max-audio-request-size", "VLLM_PROXY_MAX_AUDIO_REQUEST_SIZE", CFG_SIZE,
     FIELD(max_audio_request_size), 0, 1, 1ull << 30, NULL, 0, "104857600", NULL,
     "largest body of /v1/audio/transcriptions (multipart) in bytes, 413 beyond"},
    {"--max-header-size", "MAX_HEADER_SIZE", CFG_SIZE, FIELD(max_header_size), 0, 1024, 1 << 20,
     NULL, 0, "16384", NULL, "request line plus headers in bytes, 431 beyond"},
    {"--max-headers", "MAX_HEADERS", CFG_UINT, FIELD(max_headers), 0, 8, 1000, NULL, 0, "100", NULL,
     "number of request headers, 431 beyond"},
    {"--header-timeout", "HEADER_TIMEOUT", CFG_SECONDS, FIELD(header_timeout_ms), 0, 1, WEEK, NULL,
     0, "30", NULL, "seconds to receive a request head"},
    {"--body-timeout", "BODY_TIMEOUT", CFG_SECONDS, FIELD(body_timeout_ms), 0, 1, WEEK, NULL, 0,
     "60", NULL, "seconds to receive a request body"},
    {"--idle-timeout", "IDLE_TIMEOUT", CFG_SECONDS, FIELD(idle_timeout_ms), 0, 1, WEEK, NULL, 0,
     "75", NULL, "seconds of keep-alive idle time before closing"},
    {"--upstream-connect-timeout", "UPSTREAM_CONNECT_TIMEOUT", CFG_SECONDS,
     FIELD(upstream_connect_timeout_ms), 0, 1, WEEK, NULL, 0, "10", NULL, "seconds to connect to the engine"},
    {"--upstream-first-byte-timeout", "UPSTREAM_FIRST_BYTE_TIMEOUT", CFG_SECONDS,
     FIELD(upstream_first_byte_timeout_ms), 0, 1, WEEK, NULL, 0, "600", NULL,
     "seconds to the engine's first response byte"},
    {"--timeout", "TIMEOUT", CFG_SECONDS, FIELD(total_timeout_ms), 0, 1, WEEK, NULL, 0, "600", NULL,
     "seconds one engine exchange may take in total"},
    {"--health-check-path", "HEALTH_CHECK_PATH", CFG_STR, FIELD(health_check_path), 0, 0, 0, NULL,
     CFG_ONE_LINE, "/health", NULL, "path each engine is health-checked on (GET, 2xx = good)"},
    {"--health-check-interval", "HEALTH_CHECK_INTERVAL", CFG_SECONDS,
     FIELD(health_check_interval_ms), 0, 0, 3600, NULL, 0, "5", NULL,
     "seconds between health checks of each engine (0 = no checks, and no engine is ever taken out)"},
    {"--health-check-timeout", "HEALTH_CHECK_TIMEOUT", CFG_SECONDS, FIELD(health_check_timeout_ms),
     0, 1, 3600, NULL, 0, "2", NULL, "seconds one health check may take (then it failed)"},
    {"--health-check-failures", "HEALTH_CHECK_FAILURES", CFG_UINT, FIELD(health_check_failures), 0,
     1, 1000, NULL, 0, "2", NULL, "failed health checks in a row that take an engine out"},
    {"--engine-connect-failures", "ENGINE_CONNECT_FAILURES", CFG_UINT,
     FIELD(engine_connect_failures), 0, 0, 1000, NULL, 0, "3", NULL,
     "connection failures of requests in a row that take an engine out (0 = only checks do)"},
    {"--health-check-successes", "HEALTH_CHECK_SUCCESSES", CFG_UINT, FIELD(health_check_successes),
     0, 1, 1000, NULL, 0, "2", NULL, "good health checks in a row that put an engine back"},
    {"--engine-max-inflight", "ENGINE_MAX_INFLIGHT", CFG_UINT, FIELD(engine_max_inflight), 0, 0,
     1000000, NULL, 0, "0", NULL,
     "requests one engine gets at once, all workers; beyond, they wait (0 = no budget)"},
    {"--engine-queue-max", "ENGINE_QUEUE_MAX", CFG_UINT, FIELD(engine_queue_max), 0, 0, 1000000,
     NULL, 0, "256", NULL, "requests waiting for an engine under budget, per process; 429 beyond"},
    {"--engine-queue-timeout", "ENGINE_QUEUE_TIMEOUT", CFG_SECONDS, FIELD(engine_queue_timeout_ms),
     0, 1, 3600, NULL, 0, "10", NULL, "seconds a request waits for an engine under budget; then 429"},
    {"--engine-busy-as-429", "ENGINE_BUSY_AS_429", CFG_BOOL, FIELD(engine_busy_as_429), 0, 0, 0,
     NULL, 0, "0", NULL,
     "1 = an engine's own 503 or 429 (its queue is full, it is scaling) is answered 429 rate_limit_exceeded"},
    {"--shutdown-grace", "SHUTDOWN_GRACE", CFG_SECONDS, FIELD(shutdown_grace_ms), 0, 0, 3600, NULL, 0,
     "30", NULL, "seconds in-flight requests get after SIGTERM"},
    {"--max-connections", "MAX_CONNECTIONS", CFG_UINT, FIELD(max_connections), 0, 0, 100000000, NULL,
     0, "0", NULL, "open client connections per process, 503 and close beyond (0 = (descriptor limit - 64) / 2)"},
    {"--log-level", "LOG_LEVEL", CFG_LOG_LEVEL, FIELD(log_level), 0, 0, 0, NULL, 0, "info", NULL,
     "debug|info|warning (or warn)|error|off"},
    {"--log-format", "LOG_FORMAT", CFG_ENUM, FIELD(log_format), 0, 0, 0, LOG_FORMAT_NAMES, 0, "text",
     NULL, "text|json (json: one object per line, for log shippers)"},
    {"--dstack-endpoint", "DSTACK_SIMULATOR_ENDPOINT", CFG_STR, FIELD(dstack_endpoint), 0, 0, 0, NULL,
     0, NULL, NULL, "dstack guest agent: Unix socket path or http://host:port (unset: probe /var/run/dstack.sock, ...)"},
    {"--tappd-endpoint", "TAPPD_SIMULATOR_ENDPOINT", CFG_STR, FIELD(tappd_endpoint), 0, 0, 0, NULL, 0,
     NULL, NULL, "legacy tappd agent: Unix socket path or http://host:port (unset: probe /var/run/tappd.sock, ...)"},
    {"--tsm-path", "TSM_REPORT_PATH", CFG_STR, FIELD(tsm_root), 0, 0, 0, NULL, 0, NULL,
     "`/sys/kernel/config/tsm/report`", "configfs-tsm report directory"},
    {"--attestation-timeout", "ATTESTATION_TIMEOUT", CFG_SECONDS, FIELD(attestation_timeout_ms), 0, 1,
     WEEK, NULL, 0, "5", NULL, "seconds one guest-agent call may take; one retry"},
    {"--attestation-cache-ttl", "ATTESTATION_CACHE_TTL", CFG_UINT, FIELD(attestation_cache_ttl), 0, 0,
     86400, NULL, 0, "300", NULL, "seconds reports without a client nonce are reused, refreshed at half (0 = off)"},
    {"--report-max-pending", "REPORT_MAX_PENDING", CFG_UINT, FIELD(report_max_pending), 0, 0, 100000,
     NULL, 0, "32", NULL, "report collections (client nonce or cache miss) queued or running per process; 503 beyond (0 = no cap)"},
    {"--report-max-pending-per-token", "REPORT_MAX_PENDING_PER_TOKEN", CFG_UINT,
     FIELD(report_max_pending_per_token), 0, 0, 100000, NULL, 0, "16", NULL,
     "the same per bearer token; 429 beyond (0 = no cap)"},
    {"--rate-limit-ip-per-minute", "RATE_LIMIT_IP_PER_MINUTE", CFG_UINT,
     FIELD(rate_limit_ip_per_minute), 0, 0, 6000000, NULL, 0, "0", NULL,
     "requests per minute per client address (IPv6: per /64), 429 beyond (0 = off)"},
    {"--rate-limit-ip-burst", "RATE_LIMIT_IP_BURST", CFG_UINT, FIELD(rate_limit_ip_burst), 0, 1,
     1000000, NULL, 0, "20", NULL, "requests a client address may make at once (the bucket's size)"},
    {"--rate-limit-ip-table", "RATE_LIMIT_IP_TABLE", CFG_SIZE, FIELD(rate_limit_ip_table), 0, 64,
     1u << 24, NULL, 0, "65536", NULL,
     "client addresses tracked at once (rounded up to a power of two; 8 bytes each)"},
    {"--rate-limit-token-per-minute", "RATE_LIMIT_TOKEN_PER_MINUTE", CFG_UINT,
     FIELD(rate_limit_token_per_minute), 0, 0, 6000000, NULL, 0, "0", NULL,
     "requests per minute per bearer token of TOKEN, 429 beyond (0 = off)"},
    {"--rate-limit-token-burst", "RATE_LIMIT_TOKEN_BURST", CFG_UINT, FIELD(rate_limit_token_burst), 0,
     1, 1000000, NULL, 0, "20", NULL, "requests a token may make at once (the bucket's size)"},
    {"--trusted-proxies", "TRUSTED_PROXIES", CFG_CIDRS, FIELD(trusted_proxies),
     offsetof(config_t, ntrusted_proxies), 0, 0, NULL, 0, NULL, NULL,
     "comma-separated addresses or CIDRs of the proxies in front whose X-Forwarded-For / X-Real-IP are believed"},
    {"--trusted-proxy-hops", "TRUSTED_PROXY_HOPS", CFG_UINT, FIELD(trusted_proxy_hops), 0, 0, 16,
     NULL, 0, "0", NULL, "hops in front trusted whatever their address (the peer is the first)"},
    {"--signed-text", "SIGNED_TEXT", CFG_ENUM, FIELD(signed_text), 0, 0, 0, SIGNED_TEXT_NAMES, 0,
     "req:resp", NULL, "req:resp (the reference) or model:req:resp (the Rust proxy: MODEL_NAME first)"},
    {"--inband-signatures", "INBAND_SIGNATURES", CFG_ENUM, FIELD(inband_signatures), 0, 0, 0,
     INBAND_NAMES, 0, "request", NULL,
     "request (answers carry their signatures when asked with X-Signature-Inband: 1), all or off"},
    {"--inband-max-body", "INBAND_MAX_BODY", CFG_SIZE, FIELD(inband_max_body), 0, 1, 1u << 30, NULL,
     0, "4194304", NULL,
     "body bytes of a non-streamed answer held for in-band signatures; beyond, unavailable; reason=too-large"},
    {"--inband-hold-total", "INBAND_HOLD_TOTAL", CFG_SIZE, FIELD(inband_hold_total), 0, 1, (size_t)1 << 40,
     NULL, 0, "268435456", NULL,
     "body bytes held for in-band signatures by all answers together; an answer that would pass it: unavailable; reason=busy"},
    {"--event-log-format", "EVENT_LOG_FORMAT", CFG_ENUM, FIELD(event_log_format), 0, 0, 0,
     EVENT_LOG_NAMES, 0, "array", NULL, "the report's event_log: array (JSON, nearai's proxies) or string (the agent's text)"},
    {"--public-attestation", "PUBLIC_ATTESTATION", CFG_BOOL, FIELD(public_attestation), 0, 0, 0, NULL,
     0, "0", NULL, "1 = the attestation routes answer without a bearer token"},
    {"--tls-cert", "TLS_CERT_PATH", CFG_STR, FIELD(tls_cert_path), 0, 0, 0, NULL, 0, NULL, NULL,
     "PEM certificate served in front of the proxy; enables include_tls_fingerprint=true / version=2"},
    {"--tls-cert-check-interval", "TLS_CERT_CHECK_INTERVAL", CFG_UINT, FIELD(tls_cert_check_interval), 0,
     0, 3600, NULL, 0, "1", NULL,
     "seconds between looks at TLS_CERT_PATH for a replaced certificate (0 = only on TLS-bound collections)"},
    {"--gpu-evidence", "GPU_EVIDENCE", CFG_ENUM, FIELD(gpu_evidence), 0, 0, 0, GPU_NAMES, 0, NULL,
     "`simulated` with simulated attestation, else `auto`", "auto|nvml|canned|none|simulated|dstack"},
    {"--nvml-library", "NVML_LIBRARY_PATH", CFG_STR, FIELD(nvml_library_path), 0, 0, 0, NULL, 0, NULL,
     "`libnvidia-ml.so.1`", "NVML library for dlopen"},
    {"--gpu-allow-cc-off", "GPU_ALLOW_CC_OFF", CFG_BOOL, FIELD(gpu_allow_cc_off), 0, 0, 0, NULL, 0,
     "0", NULL, "1 = serve evidence from GPUs with CC off / devtools (development only)"},
    {"--gpu-evidence-timeout", "GPU_EVIDENCE_TIMEOUT", CFG_SECONDS, FIELD(gpu_evidence_timeout_ms), 0,
     1, WEEK, NULL, 0, NULL, "`30`", "seconds one GPU evidence collection may take"},
    {"--gpu-nonce-retries", "GPU_NONCE_RETRIES", CFG_UINT, FIELD(gpu_nonce_retries), 0, 0, 10, NULL,
     0, "3", NULL, "collections repeated when a GPU report carries another request's nonce (then 503)"},
    {"--gpu-expected-count", "GPU_EXPECTED_COUNT", CFG_UINT, FIELD(gpu_expected_count), 0, 0, 64,
     NULL, 0, "0", NULL, "GPUs every report's evidence must cover; fewer answers 503 (0 = no requirement)"},
    {"--nvswitch-expected-count", "NVSWITCH_EXPECTED_COUNT", CFG_UINT, FIELD(nvswitch_expected_count),
     0, 0, 64, NULL, 0, "0", NULL,
     "NVSwitches every report's evidence must cover; fewer answers 503 (0 = no requirement)"},
    {"--nvswitch-evidence", "NVSWITCH_EVIDENCE", CFG_BOOL, FIELD(nvswitch_evidence), 0, 0, 0, NULL, 0,
     NULL, "`1` when NVSWITCH_EXPECTED_COUNT > 0, else `0`",
     "1 = collect NVSwitch evidence through NSCQ with the GPUs' (NVML evidence only)"},
    {"--nscq-library", "NSCQ_LIBRARY_PATH", CFG_STR, FIELD(nscq_library_path), 0, 0, 0, NULL, 0, NULL,
     "`libnvidia-nscq.so.2`", "NSCQ (NVSwitch) library for dlopen"},
    {"--redis-host", "REDIS_HOST", CFG_STR, FIELD(redis_host), 0, 0, 0, NULL, 0, NULL, NULL,
     "Redis shared by replicas for signatures: host name, IP or /unix/socket (unset: memory only)"},
    {"--redis-port", "REDIS_PORT", CFG_INT, FIELD(redis_port), 0, 1, 65535, NULL, 0, "6379", NULL,
     "Redis port"},
    {"--redis-password", "REDIS_PASSWORD", CFG_STR, FIELD(redis_password), 0, 0, 0, NULL, 0, NULL,
     NULL, "Redis AUTH password"},
    {"--redis-db", "REDIS_DB", CFG_INT, FIELD(redis_db), 0, 0, 65535, NULL, 0, "0", NULL,
     "Redis database, SELECTed on connect"},
    {"--redis-timeout-ms", "REDIS_TIMEOUT_MS", CFG_UINT, FIELD(redis_timeout_ms), 0, 1, 60000, NULL,
     0, "100", NULL, "Redis connect and reply timeout in ms; then memory for 10 s"},
    {"--e2ee-replay-window", "E2EE_REPLAY_WINDOW", CFG_UINT, FIELD(e2ee_replay_window), 0, 30,
     3600, NULL, 0, "300", NULL,
     "seconds an E2EE v2 timestamp may be from now (Dstack v2, ACI v2); replay claims are kept twice as long"},
    {"--aci-keyset-ttl", "ACI_KEYSET_TTL", CFG_UINT, FIELD(aci_keyset_ttl), 0, 600, 86400 * 366,
     NULL, 0, "2592000", NULL,
     "seconds an ACI keyset is valid (not_after = issue + this); renewed, same keys, at half-life"},
};
#define NSETTINGS (sizeof SETTINGS / sizeof SETTINGS[0])

const config_setting_t *config_settings(size_t *n)
{
    *n = NSETTINGS;
    return SETTINGS;
}

const char *config_setting_default(const config_setting_t *s, char *buf, size_t len)
{
    if (s->shown)
        return s->shown;
    if (s->flags & CFG_REQUIRED)
        return "required";
    if (!s->def)
        return "unset";
    snprintf(buf, len, "`%s`", s->def);
    return buf;
}

const char *config_attest_mode_name(enum attest_mode m)
{
    return (unsigned)m < sizeof ATTEST_NAMES / sizeof ATTEST_NAMES[0] - 1 ? ATTEST_NAMES[m] : "?";
}

const char *config_gpu_evidence_name(enum gpu_evidence_mode m)
{
    return (unsigned)m < sizeof GPU_NAMES / sizeof GPU_NAMES[0] - 1 ? GPU_NAMES[m] : "?";
}

/* The name errors give: the variable, or the flag of a flag-only setting. */
static const char *setting_name(const config_setting_t *s) { return s->env ? s->env : s->flag; }

/* One --help line: flag, variable, help and the default without Markdown (none if unset). */
static void usage_line(FILE *out, const config_setting_t *s)
{
    char buf[64], def[128];
    const char *d = config_setting_default(s, buf, sizeof buf);
    size_t n = 0;
    for (; *d && n + 1 < sizeof def; d++)
        if (*d != '`')
            def[n++] = *d;
    def[n] = '\0';
    char help[400];
    if (!strcmp(def, "unset"))
        snprintf(help, sizeof help, "%s", s->help);
    else
        snprintf(help, sizeof help, s->flags & CFG_REQUIRED ? "%s (%s)" : "%s (default %s)", s->help, def);
    fprintf(out, "  %-30s %-28s %s\n", s->flag ? s->flag : "", s->env ? s->env : "", help);
}

void config_usage(FILE *out)
{
    fprintf(out,
            "vllm-proxy " VP_VERSION " - attested, signing OpenAI-compatible proxy for vLLM\n\n"
            "usage: vllm-proxy [options]\n\n"
            "Every option can also be set through the environment variable shown; a flag\n"
            "overrides the variable.\n\n");
    for (size_t i = 0; i < NSETTINGS; i++)
        usage_line(out, &SETTINGS[i]);
    fprintf(out, "  %-30s %-28s %s\n", "--help", "", "this text");
    fprintf(out, "  %-30s %-28s %s\n", "--version", "", "print the version");
}

static int parse_uint(const char *name, const char *v, unsigned long long lo,
                      unsigned long long hi, unsigned long long *out, char *err, size_t errlen)
{
    char *end = NULL;
    errno = 0;
    if (!v || !*v || !isdigit((unsigned char)*v)) {
        snprintf(err, errlen, "%s: expected a number, got '%s'", name, v ? v : "");
        return -1;
    }
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || x < lo || x > hi) {
        snprintf(err, errlen, "%s: '%s' is not a number in [%llu, %llu]", name, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_tokens(const char *name, const char *v, uint8_t (*hashes)[32], int *n,
                        char *err, size_t errlen)
{
    *n = 0;
    const char *p = v;
    while (*p) {
        size_t l = strcspn(p, ",");
        const char *s = p, *e = p + l;
        while (s < e && isspace((unsigned char)*s))
            s++;
        while (e > s && isspace((unsigned char)e[-1]))
            e--;
        if (e > s) {
            if (*n >= CFG_MAX_TOKENS) {
                snprintf(err, errlen, "%s: more than %d tokens", name, CFG_MAX_TOKENS);
                return -1;
            }
            sha256(s, (size_t)(e - s), hashes[(*n)++]);
        }
        p += l;
        if (*p == ',')
            p++;
    }
    return 0;
}

static int parse_cidrs(const char *name, const char *v, ip_cidr_t *out, int *n, char *err,
                       size_t errlen)
{
    *n = 0;
    for (const char *p = v; *p;) {
        size_t l = strcspn(p, ",");
        const char *s = p;
        size_t sl = l;
        while (sl && isspace((unsigned char)*s))
            s++, sl--;
        while (sl && isspace((unsigned char)s[sl - 1]))
            sl--;
        if (sl) {
            if (*n >= CFG_MAX_TRUSTED_PROXIES) {
                snprintf(err, errlen, "%s: more than %d entries", name, CFG_MAX_TRUSTED_PROXIES);
                return -1;
            }
            if (cidr_parse(s, sl, &out[*n]) != 0) {
                snprintf(err, errlen, "%s: '%.*s' is not an IP address or CIDR prefix", name,
                         (int)(sl > 64 ? 64 : sl), s);
                return -1;
            }
            (*n)++;
        }
        p += l;
        if (*p == ',')
            p++;
    }
    return 0;
}

static int truthy(const char *v)
{
    return !strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes");
}

/* HOST:PORT or [IPV6]:PORT into listen_host and listen_port. */
static int set_listen(config_t *c, const char *v, char *err, size_t errlen)
{
    unsigned long long x;
    const char *colon = strrchr(v, ':');
    if (!colon || colon == v) {
        snprintf(err, errlen, "--listen: expected HOST:PORT, got '%s'", v);
        return -1;
    }
    if (parse_uint("--listen port", colon + 1, 0, 65535, &x, err, errlen))
        return -1;
    c->listen_port = (int)x;
    size_t hl = (size_t)(colon - v);
    /* An IPv6 host is bracketed ("[::1]:8000"); brackets must pair and enclose something,
     * and an unbracketed host has no ':' ("::1:8000" is ambiguous) and no bracket. */
    if (v[0] == '[') {
        if (hl < 3 || colon[-1] != ']' || memchr(v + 1, '[', hl - 2) || memchr(v + 1, ']', hl - 2)) {
            snprintf(err, errlen, "--listen: expected [IPV6]:PORT, got '%s'", v);
            return -1;
        }
        v++;
        hl -= 2;
    } else if (memchr(v, ':', hl) || memchr(v, '[', hl) || memchr(v, ']', hl)) {
        snprintf(err, errlen, "--listen: expected HOST:PORT or [IPV6]:PORT, got '%s'", v);
        return -1;
    }
    if (hl >= sizeof c->listen_host) {
        snprintf(err, errlen, "--listen: host too long");
        return -1;
    }
    memcpy(c->listen_host, v, hl);
    c->listen_host[hl] = '\0';
    return 0;
}

static int set_string(const config_setting_t *s, char *dst, const char *v, char *err, size_t errlen)
{
    size_t l = strlen(v);
    if (s->flags & CFG_ONE_LINE && (l >= s->size || strpbrk(v, "\r\n"))) {
        snprintf(err, errlen, "%s invalid (too long or has line breaks)", s->env);
        return -1;
    }
    if (l >= s->size && !(s->flags & CFG_TRUNCATE)) {
        snprintf(err, errlen, "%s too long", s->env);
        return -1;
    }
    snprintf(dst, s->size, "%s", v);
    l = strlen(dst);
    if (s->flags & CFG_TRIM_SLASH && strncmp(dst, "unix:", 5))
        while (l > 0 && dst[l - 1] == '/')
            dst[--l] = '\0';
    return 0;
}

static int set_enum(const config_setting_t *s, void *dst, const char *v, char *err, size_t errlen)
{
    char list[128] = "";
    for (int i = 0; s->names[i]; i++) {
        if (s->names[i][0] && !strcmp(v, s->names[i])) {
            memcpy(dst, &i, sizeof i);
            return 0;
        }
        if (s->names[i][0])
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? "|" : "", s->names[i]);
    }
    snprintf(err, errlen, "%s: '%s' is not one of %s", s->env, v, list);
    return -1;
}

/* A decimal number within the bounds, stored in the field's type. */
static int set_number(const config_setting_t *s, void *dst, const char *v, char *err, size_t errlen)
{
    unsigned long long x;
    if (parse_uint(s->env, v, s->lo, s->hi, &x, err, errlen))
        return -1;
    int i = (int)x;
    unsigned u = s->kind == CFG_SECONDS ? (unsigned)(x * 1000) : (unsigned)x;
    size_t z = (size_t)x;
    if (s->kind == CFG_INT)
        memcpy(dst, &i, sizeof i);
    else if (s->kind == CFG_SIZE)
        memcpy(dst, &z, sizeof z);
    else
        memcpy(dst, &u, sizeof u);
    return 0;
}

/* Parses v as setting s into c. 0, or -1 with a message naming the setting. */
static int set_value(config_t *c, const config_setting_t *s, const char *v, char *err, size_t errlen)
{
    char *dst = (char *)c + s->off;
    int one = 1, l, sim = ATTEST_MODE_SIMULATED;
    switch (s->kind) {
    case CFG_STR:
        return set_string(s, dst, v, err, errlen);
    case CFG_INT:
    case CFG_UINT:
    case CFG_SIZE:
    case CFG_SECONDS:
        return set_number(s, dst, v, err, errlen);
    case CFG_BOOL:
        one = truthy(v);
        memcpy(dst, &one, sizeof one);
        return 0;
    case CFG_ENUM:
        return set_enum(s, dst, v, err, errlen);
    case CFG_TOKENS:
        return parse_tokens(s->env, v, (uint8_t(*)[32])dst, (int *)((char *)c + s->aux), err, errlen);
    case CFG_LOG_LEVEL:
        if ((l = log_level_parse(v)) < 0) {
            snprintf(err, errlen, "%s: '%s' is not debug|info|warning|error|off", s->env, v);
            return -1;
        }
        memcpy(dst, &l, sizeof l);
        return 0;
    case CFG_LISTEN:
        return set_listen(c, v, err, errlen);
    case CFG_CIDRS:
        return parse_cidrs(s->env, v, (ip_cidr_t *)dst, (int *)((char *)c + s->aux), err, errlen);
    case CFG_DEV:
        if (truthy(v))
            memcpy(dst, &sim, sizeof sim);
        return 0;
    }
    snprintf(err, errlen, "unknown setting %s", setting_name(s));
    return -1;
}

/* Every field zero, then each row's default; WORKERS and E2EE_THREADS depend on the machine,
 * NVSWITCH_EVIDENCE on NVSWITCH_EXPECTED_COUNT. */
static int set_defaults(config_t *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NSETTINGS; i++)
        if (SETTINGS[i].def && set_value(c, &SETTINGS[i], SETTINGS[i].def, err, errlen) != 0)
            return -1;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = ncpu > 0 ? (int)(ncpu > 64 ? 64 : ncpu) : 1;
    c->e2ee_threads = ncpu > 0 ? (int)(ncpu > 16 ? 16 : ncpu) : 1;
    c->nvswitch_evidence = -1; /* unset: follows NVSWITCH_EXPECTED_COUNT */
    return 0;
}

static int load_env(config_t *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        const char *v = SETTINGS[i].env ? getenv(SETTINGS[i].env) : NULL;
        if (v && set_value(c, &SETTINGS[i], v, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static const config_setting_t *find_flag(const char *flag)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (SETTINGS[i].flag && !strcmp(flag, SETTINGS[i].flag))
            return &SETTINGS[i];
    return NULL;
}

/* Flags as --name VALUE or --name=VALUE; --help/-h and --version stop with CFG_EXIT_OK. */
static int load_flags(config_t *c, int argc, char **argv, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            config_usage(stdout);
            return CFG_EXIT_OK;
        }
        if (!strcmp(a, "--version")) {
            printf("vllm-proxy %s\n", VP_VERSION);
            return CFG_EXIT_OK;
        }
        char name[64];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        if (eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = '\0';
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
        const config_setting_t *s = find_flag(name);
        if (!s) {
            snprintf(err, errlen, "unknown option '%s' (see --help)", a);
            return CFG_ERROR;
        }
        if (!val) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "option %s needs a value", name);
                return CFG_ERROR;
            }
            val = argv[++i];
        }
        if (set_value(c, s, val, err, errlen) != 0)
            return CFG_ERROR;
    }
    return CFG_OK;
}

static int check_required(const config_t *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        const config_setting_t *s = &SETTINGS[i];
        if (s->flags & CFG_REQUIRED && !((const char *)c + s->off)[0]) {
            snprintf(err, errlen, "%s (or %s) is required", s->env, s->flag);
            return -1;
        }
    }
    return 0;
}

int config_load(config_t *c, int argc, char **argv, char *err, size_t errlen)
{
    if (set_defaults(c, err, errlen) != 0 || load_env(c, err, errlen) != 0)
        return CFG_ERROR;
    int rc = load_flags(c, argc, argv, err, errlen);
    if (rc != CFG_OK)
        return rc;
    if (check_required(c, err, errlen) != 0)
        return CFG_ERROR;
    /* A bucket spans burst / rate; the limiter keeps times modulo 2^40 us (12.7 days). */
    static const struct { const char *name; size_t rate, burst; } buckets[] = {
        {"RATE_LIMIT_IP_BURST", offsetof(config_t, rate_limit_ip_per_minute),
         offsetof(config_t, rate_limit_ip_burst)},
        {"RATE_LIMIT_TOKEN_BURST", offsetof(config_t, rate_limit_token_per_minute),
         offsetof(config_t, rate_limit_token_burst)},
    };
    for (size_t i = 0; i < sizeof buckets / sizeof buckets[0]; i++) {
        unsigned rate, burst;
        memcpy(&rate, (const char *)c + buckets[i].rate, sizeof rate);
        memcpy(&burst, (const char *)c + buckets[i].burst, sizeof burst);
        if (rate && (uint64_t)burst * 60 / rate > 86400) {
            snprintf(err, errlen, "%s: a burst longer than a day at the rate (burst * 60 / rate > 86400)",
                     buckets[i].name);
            return CFG_ERROR;
        }
    }
    if (c->cache_salt_secret[0] && strlen(c->cache_salt_secret) < CFG_CACHE_SALT_SECRET_MIN) {
        snprintf(err, errlen, "CACHE_SALT_SECRET: at least %d characters (a secret an attacker cannot guess)",
                 CFG_CACHE_SALT_SECRET_MIN);
        return CFG_ERROR;
    }
    return CFG_OK;
}

const char *config_version(void) { return VP_VERSION; }
