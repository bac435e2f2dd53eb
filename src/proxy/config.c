/* Configuration loading: defaults, then the environment, then command-line flags. Every value
 * is validated; an invalid one stops the program with a message naming the variable. */
#include "proxy/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sha.h"

#define VP_VERSION "0.1.0"

typedef struct opt {
    const char *flag;
    const char *env;
    const char *arg;
    const char *help;
} opt_t;

static const opt_t OPTS[] = {
    {"--listen", "LISTEN_HOST/LISTEN_PORT", "HOST:PORT", "address to listen on (default 0.0.0.0:8000)"},
    {"--upstream", "VLLM_BASE_URL", "URL", "engine base URL, http://host:port or unix:/path (default http://vllm:8000)"},
    {"--upstream-api-key", "VLLM_API_KEY", "KEY", "Bearer token the proxy sends to the engine (default none)"},
    {"--model-name", "MODEL_NAME", "NAME", "model name; namespaces stored signatures (required)"},
    {"--token", "TOKEN", "LIST", "comma-separated bearer tokens accepted from clients (unset: authenticated routes answer 401)"},
    {"--trusted-hash-tokens", "TRUSTED_REQUEST_HASH_TOKENS", "LIST", "tokens whose callers may set X-Request-Hash (default none)"},
    {"--workers", "WORKERS", "N", "event-loop threads (default: CPU count)"},
    {"--attestation", "ATTESTATION", "MODE", "auto|dstack|tappd|tsm|simulated (DEV=1 implies simulated; default auto: dstack, tappd, then configfs-tsm, never simulated)"},
    {"--dstack-endpoint", "DSTACK_SIMULATOR_ENDPOINT", "PATH|URL", "dstack guest agent: Unix socket path or http://host:port (default: probe /var/run/dstack.sock, ...)"},
    {"--tappd-endpoint", "TAPPD_SIMULATOR_ENDPOINT", "PATH|URL", "legacy tappd agent: Unix socket path or http://host:port (default: probe /var/run/tappd.sock, ...)"},
    {"--tsm-path", "TSM_REPORT_PATH", "DIR", "configfs-tsm report directory (default /sys/kernel/config/tsm/report)"},
    {"--attestation-timeout", "ATTESTATION_TIMEOUT", "SECONDS", "timeout of one guest-agent call; one retry (default 5)"},
    {"--attestation-cache-ttl", "ATTESTATION_CACHE_TTL", "SECONDS", "reuse of reports without a client nonce, refreshed at half (default 300; 0 = off)"},
    {"--tls-cert", "TLS_CERT_PATH", "FILE", "PEM certificate served in front of the proxy; enables include_tls_fingerprint=true"},
    {"--gpu-evidence", "GPU_EVIDENCE", "MODE", "auto|nvml|canned|none|simulated (default: simulated in simulated mode, else auto)"},
    {"--nvml-library", "NVML_LIBRARY_PATH", "PATH", "NVML library for dlopen (default libnvidia-ml.so.1)"},
    {"--gpu-allow-cc-off", "GPU_ALLOW_CC_OFF", "0|1", "serve evidence from GPUs with CC off / devtools (development only)"},
    {"--gpu-evidence-timeout", "GPU_EVIDENCE_TIMEOUT", "SECONDS", "time one GPU evidence collection may take (default 30)"},
    {"--cache-ttl", "CHAT_CACHE_EXPIRATION", "SECONDS", "how long signatures are kept (default 1200)"},
    {"--cache-capacity", "CHAT_CACHE_CAPACITY", "N", "signatures kept at most; oldest evicted first (default 100000)"},
    {"--max-request-size", "VLLM_PROXY_MAX_REQUEST_SIZE", "BYTES", "largest request body accepted, 413 beyond (default 10485760)"},
    {"--max-header-size", "MAX_HEADER_SIZE", "BYTES", "request line plus headers, 431 beyond (default 16384)"},
    {"--max-headers", "MAX_HEADERS", "N", "number of request headers, 431 beyond (default 100)"},
    {"--header-timeout", "HEADER_TIMEOUT", "SECONDS", "time to receive a request head (default 30)"},
    {"--body-timeout", "BODY_TIMEOUT", "SECONDS", "time to receive a request body (default 60)"},
    {"--idle-timeout", "IDLE_TIMEOUT", "SECONDS", "keep-alive idle time before closing (default 75)"},
    {"--upstream-connect-timeout", "UPSTREAM_CONNECT_TIMEOUT", "SECONDS", "engine connect timeout (default 10)"},
    {"--upstream-first-byte-timeout", "UPSTREAM_FIRST_BYTE_TIMEOUT", "SECONDS", "time to the engine's first response byte (default 600)"},
    {"--timeout", "TIMEOUT", "SECONDS", "total time of one engine exchange (default 600)"},
    {"--shutdown-grace", "SHUTDOWN_GRACE", "SECONDS", "time in-flight requests get after SIGTERM (default 30)"},
    {"--max-connections", "MAX_CONNECTIONS", "N", "open client connections per process, 503 and close beyond (default 0 = (descriptor limit - 64) / 2)"},
    {"--log-level", "LOG_LEVEL", "LEVEL", "debug|info|warning (or warn)|error|off (default info)"},
    {"--gpu-no-hw-mode", "GPU_NO_HW_MODE", "0|1", "1 = canned GPU evidence, unless GPU_EVIDENCE is set (simulated attestation defaults to simulated evidence)"},
    {"--redis-host", "REDIS_HOST", "HOST", "Redis shared by replicas for signatures: host name, IP or /unix/socket (default unset: memory only)"},
    {"--redis-port", "REDIS_PORT", "PORT", "Redis port (default 6379)"},
    {"--redis-password", "REDIS_PASSWORD", "PASSWORD", "Redis AUTH password (default none)"},
    {"--redis-db", "REDIS_DB", "N", "Redis database, SELECTed on connect (default 0)"},
    {"--redis-timeout-ms", "REDIS_TIMEOUT_MS", "MS", "Redis connect and reply timeout; then memory for 10 s (default 100)"},
};
#define NOPTS (sizeof OPTS / sizeof OPTS[0])

void config_usage(FILE *out)
{
    fprintf(out,
            "vllm-proxy " VP_VERSION " - attested, signing OpenAI-compatible proxy for vLLM\n\n"
            "usage: vllm-proxy [options]\n\n"
            "Every option can also be set through the environment variable shown; a flag\n"
            "overrides the variable.\n\n");
    for (size_t i = 0; i < NOPTS; i++)
        fprintf(out, "  %-30s %-28s %s\n", OPTS[i].flag, OPTS[i].env, OPTS[i].help);
    fprintf(out, "  %-30s %-28s %s\n", "--help", "", "this text");
    fprintf(out, "  %-30s %-28s %s\n", "--version", "", "print the version");
    fprintf(out, "\nDEV=1 allows simulated attestation without --attestation simulated.\n");
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

static int set_value(config_t *c, const char *key, const char *v, char *err, size_t errlen)
{
    unsigned long long x;
#define SECS(field, name)                                                                  \
    do {                                                                                   \
        if (parse_uint(name, v, 1, 86400 * 7, &x, err, errlen)) return -1;               \
        c->field = (unsigned)(x * 1000);                                                   \
    } while (0)
    if (!strcmp(key, "LISTEN_HOST"))
        snprintf(c->listen_host, sizeof c->listen_host, "%s", v);
    else if (!strcmp(key, "LISTEN_PORT")) {
        if (parse_uint(key, v, 0, 65535, &x, err, errlen)) return -1;
        c->listen_port = (int)x;
    } else if (!strcmp(key, "--listen")) {
        const char *colon = strrchr(v, ':');
        if (!colon || colon == v) {
            snprintf(err, errlen, "--listen: expected HOST:PORT, got '%s'", v);
            return -1;
        }
        if (parse_uint("--listen port", colon + 1, 0, 65535, &x, err, errlen)) return -1;
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
    } else if (!strcmp(key, "VLLM_BASE_URL")) {
        if (strlen(v) >= sizeof c->upstream_url) {
            snprintf(err, errlen, "VLLM_BASE_URL too long");
            return -1;
        }
        snprintf(c->upstream_url, sizeof c->upstream_url, "%s", v);
        size_t l = strlen(c->upstream_url);
        while (l > 0 && c->upstream_url[l - 1] == '/' && strncmp(c->upstream_url, "unix:", 5))
            c->upstream_url[--l] = '\0';
    } else if (!strcmp(key, "VLLM_API_KEY")) {
        if (strlen(v) >= sizeof c->upstream_api_key || strpbrk(v, "\r\n")) {
            snprintf(err, errlen, "VLLM_API_KEY invalid (too long or has line breaks)");
            return -1;
        }
        snprintf(c->upstream_api_key, sizeof c->upstream_api_key, "%s", v);
    } else if (!strcmp(key, "MODEL_NAME")) {
        if (strlen(v) >= sizeof c->model_name) {
            snprintf(err, errlen, "MODEL_NAME too long");
            return -1;
        }
        snprintf(c->model_name, sizeof c->model_name, "%s", v);
    } else if (!strcmp(key, "TOKEN"))
        return parse_tokens(key, v, c->token_hash, &c->ntokens, err, errlen);
    else if (!strcmp(key, "TRUSTED_REQUEST_HASH_TOKENS"))
        return parse_tokens(key, v, c->trusted_hash, &c->ntrusted, err, errlen);
    else if (!strcmp(key, "WORKERS")) {
        if (parse_uint(key, v, 1, 256, &x, err, errlen)) return -1;
        c->workers = (int)x;
    } else if (!strcmp(key, "ATTESTATION")) {
        if (strcmp(v, "auto") && strcmp(v, "simulated") && strcmp(v, "dstack") &&
            strcmp(v, "tappd") && strcmp(v, "tsm")) {
            snprintf(err, errlen, "ATTESTATION: '%s' is not one of auto|dstack|tappd|tsm|simulated", v);
            return -1;
        }
        snprintf(c->attestation, sizeof c->attestation, "%s", v);
    } else if (!strcmp(key, "DSTACK_SIMULATOR_ENDPOINT") || !strcmp(key, "TAPPD_SIMULATOR_ENDPOINT") ||
               !strcmp(key, "TSM_REPORT_PATH") || !strcmp(key, "TLS_CERT_PATH")) {
        char *dst = key[0] == 'D' ? c->dstack_endpoint : key[0] == 'T' && key[1] == 'A' ? c->tappd_endpoint
                  : key[1] == 'S' ? c->tsm_root : c->tls_cert_path;
        if (strlen(v) >= 512) {
            snprintf(err, errlen, "%s too long", key);
            return -1;
        }
        snprintf(dst, 512, "%s", v);
    } else if (!strcmp(key, "ATTESTATION_TIMEOUT"))
        SECS(attestation_timeout_ms, key);
    else if (!strcmp(key, "ATTESTATION_CACHE_TTL")) {
        if (parse_uint(key, v, 0, 86400, &x, err, errlen)) return -1;
        c->attestation_cache_ttl = (unsigned)x;
    } else if (!strcmp(key, "GPU_EVIDENCE")) {
        if (strcmp(v, "auto") && strcmp(v, "nvml") && strcmp(v, "canned") && strcmp(v, "none") &&
            strcmp(v, "simulated")) {
            snprintf(err, errlen, "GPU_EVIDENCE: '%s' is not one of auto|nvml|canned|none|simulated", v);
            return -1;
        }
        snprintf(c->gpu_evidence, sizeof c->gpu_evidence, "%s", v);
    } else if (!strcmp(key, "NVML_LIBRARY_PATH")) {
        if (strlen(v) >= sizeof c->nvml_library_path) {
            snprintf(err, errlen, "%s too long", key);
            return -1;
        }
        snprintf(c->nvml_library_path, sizeof c->nvml_library_path, "%s", v);
    } else if (!strcmp(key, "GPU_ALLOW_CC_OFF"))
        c->gpu_allow_cc_off = !strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes");
    else if (!strcmp(key, "GPU_EVIDENCE_TIMEOUT"))
        SECS(gpu_evidence_timeout_ms, key);
    else if (!strcmp(key, "DEV")) {
        if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes"))
            snprintf(c->attestation, sizeof c->attestation, "simulated");
    } else if (!strcmp(key, "GPU_NO_HW_MODE"))
        c->gpu_no_hw_mode = !strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes");
    else if (!strcmp(key, "CHAT_CACHE_EXPIRATION")) {
        if (parse_uint(key, v, 1, 86400 * 30, &x, err, errlen)) return -1;
        c->cache_ttl = (unsigned)x;
    } else if (!strcmp(key, "CHAT_CACHE_CAPACITY")) {
        if (parse_uint(key, v, 1, 100000000, &x, err, errlen)) return -1;
        c->cache_capacity = (size_t)x;
    } else if (!strcmp(key, "VLLM_PROXY_MAX_REQUEST_SIZE")) {
        if (parse_uint(key, v, 1, 1ull << 30, &x, err, errlen)) return -1;
        c->max_request_size = (size_t)x;
    } else if (!strcmp(key, "MAX_HEADER_SIZE")) {
        if (parse_uint(key, v, 1024, 1 << 20, &x, err, errlen)) return -1;
        c->max_header_size = (size_t)x;
    } else if (!strcmp(key, "MAX_HEADERS")) {
        if (parse_uint(key, v, 8, 1000, &x, err, errlen)) return -1;
        c->max_headers = (unsigned)x;
    } else if (!strcmp(key, "HEADER_TIMEOUT"))
        SECS(header_timeout_ms, key);
    else if (!strcmp(key, "BODY_TIMEOUT"))
        SECS(body_timeout_ms, key);
    else if (!strcmp(key, "IDLE_TIMEOUT"))
        SECS(idle_timeout_ms, key);
    else if (!strcmp(key, "UPSTREAM_CONNECT_TIMEOUT"))
        SECS(upstream_connect_timeout_ms, key);
    else if (!strcmp(key, "UPSTREAM_FIRST_BYTE_TIMEOUT"))
        SECS(upstream_first_byte_timeout_ms, key);
    else if (!strcmp(key, "TIMEOUT"))
        SECS(total_timeout_ms, key);
    else if (!strcmp(key, "SHUTDOWN_GRACE")) {
        if (parse_uint(key, v, 0, 3600, &x, err, errlen)) return -1;
        c->shutdown_grace_ms = (unsigned)(x * 1000);
    } else if (!strcmp(key, "MAX_CONNECTIONS")) {
        if (parse_uint(key, v, 0, 100000000, &x, err, errlen)) return -1;
        c->max_connections = (unsigned)x;
    } else if (!strcmp(key, "REDIS_HOST") || !strcmp(key, "REDIS_PASSWORD")) {
        char *dst = key[6] == 'H' ? c->redis_host : c->redis_password;
        if (strlen(v) >= 256) {
            snprintf(err, errlen, "%s too long", key);
            return -1;
        }
        snprintf(dst, 256, "%s", v);
    } else if (!strcmp(key, "REDIS_PORT")) {
        if (parse_uint(key, v, 1, 65535, &x, err, errlen)) return -1;
        c->redis_port = (int)x;
    } else if (!strcmp(key, "REDIS_DB")) {
        if (parse_uint(key, v, 0, 65535, &x, err, errlen)) return -1;
        c->redis_db = (int)x;
    } else if (!strcmp(key, "REDIS_TIMEOUT_MS")) {
        if (parse_uint(key, v, 1, 60000, &x, err, errlen)) return -1;
        c->redis_timeout_ms = (unsigned)x;
    } else if (!strcmp(key, "LOG_LEVEL")) {
        int l = log_level_parse(v);
        if (l < 0) {
            snprintf(err, errlen, "LOG_LEVEL: '%s' is not debug|info|warning|error|off", v);
            return -1;
        }
        c->log_level = l;
    } else {
        snprintf(err, errlen, "unknown setting %s", key);
        return -1;
    }
    return 0;
#undef SECS
}

static const char *ENV_KEYS[] = {
    "LISTEN_HOST", "LISTEN_PORT", "VLLM_BASE_URL", "VLLM_API_KEY", "MODEL_NAME", "TOKEN",
    "TRUSTED_REQUEST_HASH_TOKENS", "WORKERS", "ATTESTATION", "DEV", "GPU_NO_HW_MODE",
    "CHAT_CACHE_EXPIRATION", "CHAT_CACHE_CAPACITY", "VLLM_PROXY_MAX_REQUEST_SIZE",
    "MAX_HEADER_SIZE", "MAX_HEADERS", "HEADER_TIMEOUT", "BODY_TIMEOUT", "IDLE_TIMEOUT",
    "UPSTREAM_CONNECT_TIMEOUT", "UPSTREAM_FIRST_BYTE_TIMEOUT", "TIMEOUT", "SHUTDOWN_GRACE",
    "LOG_LEVEL", "DSTACK_SIMULATOR_ENDPOINT", "TAPPD_SIMULATOR_ENDPOINT", "TSM_REPORT_PATH",
    "ATTESTATION_TIMEOUT", "ATTESTATION_CACHE_TTL", "TLS_CERT_PATH", "GPU_EVIDENCE",
    "NVML_LIBRARY_PATH", "GPU_ALLOW_CC_OFF", "GPU_EVIDENCE_TIMEOUT", "REDIS_HOST", "REDIS_PORT",
    "REDIS_PASSWORD", "REDIS_DB", "REDIS_TIMEOUT_MS",
    "MAX_CONNECTIONS",
};

/* Flag name -> setting name; "--listen" is handled as its own key. */
static const char *flag_key(const char *flag)
{
    static const char *map[][2] = {
        {"--listen", "--listen"}, {"--upstream", "VLLM_BASE_URL"},
        {"--upstream-api-key", "VLLM_API_KEY"}, {"--model-name", "MODEL_NAME"},
        {"--token", "TOKEN"}, {"--trusted-hash-tokens", "TRUSTED_REQUEST_HASH_TOKENS"},
        {"--workers", "WORKERS"}, {"--attestation", "ATTESTATION"},
        {"--cache-ttl", "CHAT_CACHE_EXPIRATION"}, {"--cache-capacity", "CHAT_CACHE_CAPACITY"},
        {"--max-request-size", "VLLM_PROXY_MAX_REQUEST_SIZE"},
        {"--max-header-size", "MAX_HEADER_SIZE"}, {"--max-headers", "MAX_HEADERS"},
        {"--header-timeout", "HEADER_TIMEOUT"}, {"--body-timeout", "BODY_TIMEOUT"},
        {"--idle-timeout", "IDLE_TIMEOUT"},
        {"--upstream-connect-timeout", "UPSTREAM_CONNECT_TIMEOUT"},
        {"--upstream-first-byte-timeout", "UPSTREAM_FIRST_BYTE_TIMEOUT"},
        {"--timeout", "TIMEOUT"}, {"--shutdown-grace", "SHUTDOWN_GRACE"},
        {"--log-level", "LOG_LEVEL"}, {"--gpu-no-hw-mode", "GPU_NO_HW_MODE"},
        {"--dstack-endpoint", "DSTACK_SIMULATOR_ENDPOINT"}, {"--tappd-endpoint", "TAPPD_SIMULATOR_ENDPOINT"},
        {"--tsm-path", "TSM_REPORT_PATH"}, {"--attestation-timeout", "ATTESTATION_TIMEOUT"},
        {"--attestation-cache-ttl", "ATTESTATION_CACHE_TTL"}, {"--tls-cert", "TLS_CERT_PATH"},
        {"--gpu-evidence", "GPU_EVIDENCE"}, {"--nvml-library", "NVML_LIBRARY_PATH"},
        {"--gpu-allow-cc-off", "GPU_ALLOW_CC_OFF"}, {"--gpu-evidence-timeout", "GPU_EVIDENCE_TIMEOUT"},
        {"--redis-host", "REDIS_HOST"}, {"--redis-port", "REDIS_PORT"},
        {"--redis-password", "REDIS_PASSWORD"}, {"--redis-db", "REDIS_DB"},
        {"--redis-timeout-ms", "REDIS_TIMEOUT_MS"},
        {"--max-connections", "MAX_CONNECTIONS"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(flag, map[i][0]))
            return map[i][1];
    return NULL;
}

int config_load(config_t *c, int argc, char **argv, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    snprintf(c->listen_host, sizeof c->listen_host, "0.0.0.0");
    c->listen_port = 8000;
    snprintf(c->upstream_url, sizeof c->upstream_url, "http://vllm:8000");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = ncpu > 0 ? (int)(ncpu > 64 ? 64 : ncpu) : 1;
    snprintf(c->attestation, sizeof c->attestation, "auto");
    c->cache_ttl = 1200;
    c->cache_capacity = 100000;
    c->max_request_size = 10u << 20;
    c->max_header_size = 16384;
    c->max_headers = 100;
    c->header_timeout_ms = 30000;
    c->body_timeout_ms = 60000;
    c->idle_timeout_ms = 75000;
    c->upstream_connect_timeout_ms = 10000;
    c->upstream_first_byte_timeout_ms = 600000;
    c->total_timeout_ms = 600000;
    c->shutdown_grace_ms = 30000;
    c->log_level = LOG_LVL_INFO;
    c->attestation_timeout_ms = 5000;
    c->attestation_cache_ttl = 300;
    c->redis_port = 6379;
    c->redis_timeout_ms = 100;

    for (size_t i = 0; i < sizeof ENV_KEYS / sizeof ENV_KEYS[0]; i++) {
        const char *v = getenv(ENV_KEYS[i]);
        if (v && set_value(c, ENV_KEYS[i], v, err, errlen) != 0)
            return CFG_ERROR;
    }
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
        const char *key = flag_key(name);
        if (!key) {
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
        if (set_value(c, key, val, err, errlen) != 0)
            return CFG_ERROR;
    }
    if (!c->model_name[0]) {
        snprintf(err, errlen, "MODEL_NAME (or --model-name) is required");
        return CFG_ERROR;
    }
    return CFG_OK;
}

const char *config_version(void) { return VP_VERSION; }
