/* Configuration: environment variables (the reference proxy's names), overridden by flags.
 * config_load fills a config_t once at start-up; it is immutable afterwards and shared
 * read-only by every worker thread. */
#ifndef VP_PROXY_CONFIG_H
#define VP_PROXY_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CFG_MAX_TOKENS 64

typedef struct config {
    char listen_host[256];
    int listen_port;
    char upstream_url[512];
    char upstream_api_key[256];
    char model_name[256];
    int ntokens;
    uint8_t token_hash[CFG_MAX_TOKENS][32];      /* sha256 of each accepted bearer token */
    int ntrusted;
    uint8_t trusted_hash[CFG_MAX_TOKENS][32];    /* tokens allowed to send X-Request-Hash */
    int workers;
    char attestation[32];                        /* auto|dstack|tappd|tsm|simulated */
    int gpu_no_hw_mode;
    char dstack_endpoint[512];                   /* DSTACK_SIMULATOR_ENDPOINT ("" = probe sockets) */
    char tappd_endpoint[512];                    /* TAPPD_SIMULATOR_ENDPOINT ("" = probe sockets) */
    char tsm_root[512];                          /* configfs-tsm report dir ("" = default) */
    unsigned attestation_timeout_ms;             /* per agent call attempt */
    unsigned attestation_cache_ttl;              /* seconds; 0 = no cache */
    char tls_cert_path[512];                     /* "" = no TLS binding offered */
    char gpu_evidence[16];                       /* ""|auto|nvml|canned|none|simulated */
    char nvml_library_path[512];                 /* "" = libnvidia-ml.so.1 */
    int gpu_allow_cc_off;
    unsigned gpu_evidence_timeout_ms;            /* 0 = the gpu module's default */
    unsigned cache_ttl;
    size_t cache_capacity;
    size_t max_request_size;
    size_t max_header_size;
    unsigned max_headers;
    unsigned header_timeout_ms, body_timeout_ms, idle_timeout_ms;
    unsigned upstream_connect_timeout_ms, upstream_first_byte_timeout_ms, total_timeout_ms;
    unsigned shutdown_grace_ms;
    unsigned max_connections;                    /* client connections per process; 0 = derived */
    int log_level;
    char redis_host[256];                        /* "" = signatures in memory only */
    int redis_port;
    char redis_password[256];                    /* "" = no AUTH */
    int redis_db;
    unsigned redis_timeout_ms;                   /* connect and per-command reply time */
} config_t;

enum { CFG_OK = 0, CFG_EXIT_OK = 1, CFG_ERROR = -1 };

/* Returns CFG_OK, CFG_EXIT_OK (--help/--version printed) or CFG_ERROR (message in err). */
int config_load(config_t *cfg, int argc, char **argv, char *err, size_t errlen);
void config_usage(FILE *out);
const char *config_version(void); /* "0.1.0" */

#endif
