/* Configuration: environment variables (the reference proxy's names), overridden by flags.
 * One table (config_settings) describes every setting once: its flag, its variable, its kind,
 * its field in config_t, its bounds, its default and its help text. It drives the parsing of
 * the environment and the command line, the defaults, --help and the check of docs/CONFIG.md.
 * config_load fills a config_t once at start-up; it is immutable afterwards and shared
 * read-only by every worker thread. The table is static, read-only data owned by config.c. */
#ifndef VP_PROXY_CONFIG_H
#define VP_PROXY_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/addr.h"
#include "proxy/inband.h"

#define CFG_MAX_TOKENS 64
#define CFG_MAX_TRUSTED_PROXIES 32 /* entries of TRUSTED_PROXIES */
#define CFG_CACHE_SALT_SECRET_MIN 32 /* characters of CACHE_SALT_SECRET, when set */

/* ATTESTATION: which quote provider; auto never picks simulated. */
enum attest_mode {
    ATTEST_MODE_AUTO = 0,
    ATTEST_MODE_DSTACK,
    ATTEST_MODE_TAPPD,
    ATTEST_MODE_TSM,
    ATTEST_MODE_SIMULATED,
};

/* GPU_EVIDENCE: UNSET = simulated with simulated attestation, canned with GPU_NO_HW_MODE,
 * else auto (decided at start-up, once the provider is known). */
enum gpu_evidence_mode {
    GPU_EVIDENCE_UNSET = 0,
    GPU_EVIDENCE_AUTO,
    GPU_EVIDENCE_NVML,
    GPU_EVIDENCE_CANNED,
    GPU_EVIDENCE_NONE,
    GPU_EVIDENCE_SIMULATED,
    GPU_EVIDENCE_DSTACK, /* the dstack guest agent's AttestGpu */
};

/* SIGNED_TEXT: what the two signatures cover. */
enum signed_text_mode {
    SIGNED_TEXT_REQ_RESP = 0,   /* "sha256(req):sha256(resp)", the reference */
    SIGNED_TEXT_MODEL_REQ_RESP, /* "MODEL_NAME:sha256(req):sha256(resp)", the Rust proxy */
};

/* EVENT_LOG_FORMAT: how the report carries the agent's event log. */
enum event_log_format {
    EVENT_LOG_ARRAY = 0, /* a JSON array (nearai's proxies, teep) */
    EVENT_LOG_STRING,    /* the agent's string (the reference, the Phala fork) */
};

/* LOG_FORMAT: the log lines' shape (core/log.h). */
enum log_format {
    LOG_FORMAT_TEXT = 0, /* "<time> <LEVEL> <message>" */
    LOG_FORMAT_JSON,     /* one JSON object per line (docs/CONFIG.md, "Logs") */
};

typedef struct config {
    char listen_host[256];
    int listen_port;
    char upstream_url[512];
    char backend_urls[4096];                     /* VLLM_BACKEND_URLS; "" = upstream_url alone */
    char upstream_api_key[256];
    char model_name[256];
    int ntokens;
    uint8_t token_hash[CFG_MAX_TOKENS][32];      /* sha256 of each accepted bearer token */
    int ntrusted;
    uint8_t trusted_hash[CFG_MAX_TOKENS][32];    /* tokens allowed to send X-Request-Hash */
    char cache_salt_secret[256];                 /* "" = client cache_salt passes untouched */
    int workers;
    int e2ee_threads;                            /* crypto threads (proxy/e2ee_pool.h) */
    int e2ee_thread_nice;                        /* their nice increment; 0 = none */
    enum attest_mode attestation;
    int gpu_no_hw_mode;
    char dstack_endpoint[512];                   /* DSTACK_SIMULATOR_ENDPOINT ("" = probe sockets) */
    char tappd_endpoint[512];                    /* TAPPD_SIMULATOR_ENDPOINT ("" = probe sockets) */
    char tsm_root[512];                          /* configfs-tsm report dir ("" = default) */
    unsigned attestation_timeout_ms;             /* per agent call attempt */
    unsigned attestation_cache_ttl;              /* seconds; 0 = no cache */
    unsigned report_max_pending;                 /* client report collections per process; 0 = no cap */
    unsigned report_max_pending_per_token;       /* the same per bearer token; 0 = no cap */
    char tls_cert_path[512];                     /* "" = no TLS binding offered */
    unsigned tls_cert_check_interval;            /* seconds; 0 = no timer */
    enum signed_text_mode signed_text;
    enum inband_setting inband_signatures;       /* INBAND_SIGNATURES (proxy/inband.h) */
    size_t inband_max_body;                      /* body bytes held for in-band headers */
    size_t inband_hold_total;                    /* ... by all answers together (process-wide) */
    enum event_log_format event_log_format;
    int public_attestation;                      /* the attestation routes need no token */
    enum gpu_evidence_mode gpu_evidence;
    char nvml_library_path[512];                 /* "" = libnvidia-ml.so.1 */
    int gpu_allow_cc_off;
    unsigned gpu_evidence_timeout_ms;            /* 0 = the gpu module's default */
    unsigned gpu_nonce_retries;                  /* repeated collections on a foreign nonce */
    unsigned gpu_expected_count;                 /* 0 = no requirement */
    unsigned nvswitch_expected_count;            /* 0 = no requirement */
    int nvswitch_evidence;                       /* -1 unset: on when nvswitch_expected_count */
    char nscq_library_path[512];                 /* "" = libnvidia-nscq.so.2 */
    unsigned cache_ttl;
    size_t cache_capacity;
    size_t max_request_size;
    size_t max_image_request_size;               /* /v1/images/{generations,edits} */
    size_t max_audio_request_size;               /* /v1/audio/transcriptions */
    size_t max_header_size;
    unsigned max_headers;
    unsigned header_timeout_ms, body_timeout_ms, idle_timeout_ms;
    unsigned upstream_connect_timeout_ms, upstream_first_byte_timeout_ms, total_timeout_ms;
    unsigned shutdown_grace_ms;
    char health_check_path[256];                 /* engine pool (http/engines.h) */
    unsigned health_check_interval_ms;           /* 0 = no checks, no engine taken out */
    unsigned health_check_timeout_ms;
    unsigned health_check_failures;              /* N failed checks take an engine out */
    unsigned engine_connect_failures;            /* M connection failures of requests */
    unsigned health_check_successes;             /* K good checks put it back */
    unsigned engine_max_inflight;                /* per engine; 0 = no budget */
    unsigned engine_queue_max;                   /* waiting for a slot, per process */
    unsigned engine_queue_timeout_ms;
    int engine_busy_as_429;                      /* engine 503/429 answered as our 429 */
    unsigned max_connections;                    /* client connections per process; 0 = derived */
    int log_level;
    enum log_format log_format;
    unsigned rate_limit_ip_per_minute;           /* 0 = no limit per client address */
    unsigned rate_limit_ip_burst;
    size_t rate_limit_ip_table;                  /* words of the address table */
    unsigned rate_limit_token_per_minute;        /* 0 = no limit per bearer token */
    unsigned rate_limit_token_burst;
    int ntrusted_proxies;
    ip_cidr_t trusted_proxies[CFG_MAX_TRUSTED_PROXIES]; /* hops whose X-Forwarded-For counts */
    unsigned trusted_proxy_hops;                 /* hops in front trusted whatever their address */
    char redis_host[256];                        /* "" = signatures in memory only */
    int redis_port;
    char redis_password[256];                    /* "" = no AUTH */
    int redis_db;
    unsigned redis_timeout_ms;                   /* connect and reply time */
    unsigned e2ee_replay_window;                 /* seconds either side of now (E2EE v2) */
    unsigned aci_keyset_ttl;                     /* seconds an ACI keyset is valid */
} config_t;

/* How a setting's text becomes its field. */
typedef enum cfg_kind {
    CFG_STR,       /* char[size]; longer is an error ("NAME too long") */
    CFG_INT,       /* int: a decimal number in [lo, hi] */
    CFG_UINT,      /* unsigned: a decimal number in [lo, hi] */
    CFG_SIZE,      /* size_t: a decimal number in [lo, hi] */
    CFG_SECONDS,   /* unsigned milliseconds, given as whole seconds in [lo, hi] */
    CFG_BOOL,      /* int: 1 for 1|true|yes (any case), 0 for anything else */
    CFG_ENUM,      /* an enum: the index of the value in names (exact match; "" never matches) */
    CFG_TOKENS,    /* comma-separated tokens, trimmed: sha256 of each into uint8_t[64][32],
                    * their number into the int at aux */
    CFG_LOG_LEVEL, /* int: log_level_parse */
    CFG_LISTEN,    /* HOST:PORT or [IPV6]:PORT: listen_host and listen_port */
    CFG_DEV,       /* a true bool sets the attest_mode at off to ATTEST_MODE_SIMULATED */
    CFG_CIDRS,     /* comma-separated addresses or CIDR prefixes into ip_cidr_t[], their number
                    * into the int at aux */
} cfg_kind_t;

/* Flags of a setting. */
enum {
    CFG_REQUIRED = 1,   /* an empty value after loading is an error */
    CFG_TRIM_SLASH = 2, /* trailing '/' dropped, except from a "unix:" value */
    CFG_ONE_LINE = 4,   /* no CR or LF (it goes into a header) */
    CFG_TRUNCATE = 8,   /* a too long string is cut, not refused */
};

typedef struct config_setting {
    const char *flag;          /* "--workers", or NULL: environment only */
    const char *env;           /* "WORKERS", or NULL: flag only */
    cfg_kind_t kind;
    size_t off, size;          /* the field in config_t */
    size_t aux;                /* CFG_TOKENS: offset of the count */
    unsigned long long lo, hi; /* numbers: inclusive bounds */
    const char *const *names;  /* CFG_ENUM: value i is names[i]; NULL-terminated */
    unsigned flags;
    const char *def;           /* default, as text parsed like a value; NULL = zero */
    const char *shown;         /* default as docs/CONFIG.md shows it; NULL = derived */
    const char *help;
} config_setting_t;

enum { CFG_OK = 0, CFG_EXIT_OK = 1, CFG_ERROR = -1 };

/* Returns CFG_OK, CFG_EXIT_OK (--help/--version printed) or CFG_ERROR (message in err). */
int config_load(config_t *cfg, int argc, char **argv, char *err, size_t errlen);
void config_usage(FILE *out);
const char *config_version(void); /* "0.1.0" */

/* The table, in the order the environment is read (a later row may override an earlier one:
 * DEV after ATTESTATION). Static; *n gets the number of rows. */
const config_setting_t *config_settings(size_t *n);

/* The default as docs/CONFIG.md's default column shows it (Markdown): `shown` if set,
 * "required", the default in backquotes, or "unset". Static or into buf. */
const char *config_setting_default(const config_setting_t *s, char *buf, size_t len);

/* Names for logs and banners: "auto", "dstack", ...; "" for GPU_EVIDENCE_UNSET. */
const char *config_attest_mode_name(enum attest_mode m);
const char *config_gpu_evidence_name(enum gpu_evidence_mode m);

#endif
