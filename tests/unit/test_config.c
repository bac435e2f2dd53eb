/* Unit tests for config_load: defaults, environment, flags overriding the environment, both
 * flag forms, validation messages that name the variable, token hashing, --listen forms; the
 * settings table itself, and docs/CONFIG.md against it (run from the repository root). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "at.h"
#include "core/log.h"
#include "core/sha.h"
#include "proxy/config.h"

static int setup(void **state)
{
    (void)state;
    size_t n;
    const config_setting_t *t = config_settings(&n);
    for (size_t i = 0; i < n; i++) /* every variable config.c reads */
        if (t[i].env)
            unsetenv(t[i].env);
    setenv("ATTESTATION", "simulated", 1);
    setenv("MODEL_NAME", "test-model", 1);
    return 0;
}

static config_t cfg;
static char err[512];

/* argv is NULL-terminated, without argv[0]. */
static int load(const char *const *args)
{
    char *argv[32] = {"vllm-proxy"};
    int argc = 1;
    for (; args && args[argc - 1]; argc++)
        argv[argc] = (char *)args[argc - 1];
    err[0] = '\0';
    return config_load(&cfg, argc, argv, err, sizeof err);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void expect_error_at(AT_PARAMS, const char *const *args, const char *needle)
{
    int rc = load(args);
    if (rc != CFG_ERROR)
        at_fail_msg("%s%s%s: accepted (rc %d), expected an error", args ? args[0] : "(env)",
                 args && args[0] && args[1] ? " " : "", args && args[0] && args[1] ? args[1] : "", rc);
    if (!strstr(err, needle))
        at_fail_msg("error '%s' does not mention '%s'", err, needle);
}
#define expect_error(...) expect_error_at(AT_HERE, __VA_ARGS__)

static void env_error(const char *key, const char *val)
{
    setenv(key, val, 1);
    expect_error(NULL, key);
    unsetenv(key);
}

static void test_defaults(void **state)
{
    (void)state;
    assert_int_equal(load(NULL), CFG_OK);
    assert_string_equal(err, "");
    assert_string_equal(cfg.listen_host, "0.0.0.0");
    assert_int_equal(cfg.listen_port, 8000);
    assert_string_equal(cfg.upstream_url, "http://vllm:8000");
    assert_string_equal(cfg.upstream_api_key, "");
    assert_string_equal(cfg.model_name, "test-model");
    assert_string_equal(config_attest_mode_name(cfg.attestation), "simulated");
    assert_int_equal(cfg.ntokens, 0);
    assert_int_equal(cfg.ntrusted, 0);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(cfg.workers, ncpu > 64 ? 64 : ncpu > 0 ? ncpu : 1);
    assert_int_equal(cfg.cache_ttl, 1200);
    assert_int_equal(cfg.cache_capacity, 100000);
    assert_int_equal(cfg.max_request_size, 10485760);
    assert_int_equal(cfg.max_header_size, 16384);
    assert_int_equal(cfg.max_headers, 100);
    assert_int_equal(cfg.header_timeout_ms, 30000);
    assert_int_equal(cfg.body_timeout_ms, 60000);
    assert_int_equal(cfg.idle_timeout_ms, 75000);
    assert_int_equal(cfg.upstream_connect_timeout_ms, 10000);
    assert_int_equal(cfg.upstream_first_byte_timeout_ms, 600000);
    assert_int_equal(cfg.total_timeout_ms, 600000);
    assert_int_equal(cfg.shutdown_grace_ms, 30000);
    assert_int_equal(cfg.log_level, LOG_LVL_INFO);
    assert_int_equal(cfg.attestation_timeout_ms, 5000);
    assert_int_equal(cfg.attestation_cache_ttl, 300);
    assert_int_equal(cfg.gpu_evidence_timeout_ms, 0);
    assert_string_equal(config_gpu_evidence_name(cfg.gpu_evidence), "");
    assert_int_equal(cfg.gpu_evidence, GPU_EVIDENCE_UNSET);
    assert_int_equal(cfg.attestation, ATTEST_MODE_SIMULATED);
    assert_string_equal(cfg.dstack_endpoint, "");
    assert_string_equal(cfg.tappd_endpoint, "");
    assert_string_equal(cfg.tsm_root, "");
    assert_string_equal(cfg.tls_cert_path, "");
    assert_string_equal(cfg.nvml_library_path, "");
    assert_int_equal(cfg.gpu_allow_cc_off, 0);
    assert_int_equal(cfg.gpu_no_hw_mode, 0);
    assert_int_equal(cfg.signed_text, SIGNED_TEXT_REQ_RESP);
    assert_int_equal(cfg.event_log_format, EVENT_LOG_ARRAY);
    assert_int_equal(cfg.public_attestation, 0);
}

/* The peer settings (docs/CONFIG.md, "Behaving like a peer"): exact names, flags over env. */
static void test_peer_settings(void **state)
{
    (void)state;
    setenv("SIGNED_TEXT", "model:req:resp", 1);
    setenv("EVENT_LOG_FORMAT", "string", 1);
    setenv("PUBLIC_ATTESTATION", "true", 1);
    assert_int_equal(load(NULL), CFG_OK);
    assert_int_equal(cfg.signed_text, SIGNED_TEXT_MODEL_REQ_RESP);
    assert_int_equal(cfg.event_log_format, EVENT_LOG_STRING);
    assert_int_equal(cfg.public_attestation, 1);
    assert_int_equal(load(ARGS("--signed-text", "req:resp", "--event-log-format=array", "--public-attestation", "0")), CFG_OK);
    assert_int_equal(cfg.signed_text, SIGNED_TEXT_REQ_RESP);
    assert_int_equal(cfg.event_log_format, EVENT_LOG_ARRAY);
    assert_int_equal(cfg.public_attestation, 0);
    unsetenv("SIGNED_TEXT");
    unsetenv("EVENT_LOG_FORMAT");
    unsetenv("PUBLIC_ATTESTATION");
    env_error("SIGNED_TEXT", "model");
    env_error("SIGNED_TEXT", "MODEL:REQ:RESP");
    env_error("EVENT_LOG_FORMAT", "json");
    expect_error(ARGS("--signed-text", ""), "SIGNED_TEXT");
}

static void test_env_values(void **state)
{
    (void)state;
    setenv("LISTEN_HOST", "127.0.0.1", 1);
    setenv("LISTEN_PORT", "9001", 1);
    setenv("VLLM_BASE_URL", "http://engine:1234//", 1);
    setenv("VLLM_API_KEY", "sk-up", 1);
    setenv("WORKERS", "3", 1);
    setenv("CHAT_CACHE_EXPIRATION", "60", 1);
    setenv("CHAT_CACHE_CAPACITY", "5", 1);
    setenv("VLLM_PROXY_MAX_REQUEST_SIZE", "2048", 1);
    setenv("MAX_HEADER_SIZE", "4096", 1);
    setenv("MAX_HEADERS", "20", 1);
    setenv("LOG_LEVEL", "WARNING", 1);
    setenv("DSTACK_SIMULATOR_ENDPOINT", "/tmp/d.sock", 1);
    setenv("TAPPD_SIMULATOR_ENDPOINT", "http://127.0.0.1:8090", 1);
    setenv("TSM_REPORT_PATH", "/tmp/tsm", 1);
    setenv("TLS_CERT_PATH", "/tmp/cert.pem", 1);
    setenv("NVML_LIBRARY_PATH", "/opt/libnvml.so", 1);
    setenv("GPU_EVIDENCE", "canned", 1);
    setenv("GPU_ALLOW_CC_OFF", "true", 1);
    setenv("GPU_NO_HW_MODE", "yes", 1);
    setenv("ATTESTATION_CACHE_TTL", "0", 1);
    assert_int_equal(load(NULL), CFG_OK);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 9001);
    assert_string_equal(cfg.upstream_url, "http://engine:1234"); /* trailing slashes dropped */
    assert_string_equal(cfg.upstream_api_key, "sk-up");
    assert_int_equal(cfg.workers, 3);
    assert_int_equal(cfg.cache_ttl, 60);
    assert_int_equal(cfg.cache_capacity, 5);
    assert_int_equal(cfg.max_request_size, 2048);
    assert_int_equal(cfg.max_header_size, 4096);
    assert_int_equal(cfg.max_headers, 20);
    assert_int_equal(cfg.log_level, LOG_LVL_WARN);
    assert_string_equal(cfg.dstack_endpoint, "/tmp/d.sock");
    assert_string_equal(cfg.tappd_endpoint, "http://127.0.0.1:8090");
    assert_string_equal(cfg.tsm_root, "/tmp/tsm");
    assert_string_equal(cfg.tls_cert_path, "/tmp/cert.pem");
    assert_string_equal(cfg.nvml_library_path, "/opt/libnvml.so");
    assert_string_equal(config_gpu_evidence_name(cfg.gpu_evidence), "canned");
    assert_int_equal(cfg.gpu_allow_cc_off, 1);
    assert_int_equal(cfg.gpu_no_hw_mode, 1);
    assert_int_equal(cfg.attestation_cache_ttl, 0);
    /* a unix: upstream keeps its path verbatim */
    setenv("VLLM_BASE_URL", "unix:/run/vllm/", 1);
    assert_int_equal(load(NULL), CFG_OK);
    assert_string_equal(cfg.upstream_url, "unix:/run/vllm/");
    /* boolean switches: anything but 1/true/yes is off */
    setenv("GPU_ALLOW_CC_OFF", "0", 1);
    setenv("GPU_NO_HW_MODE", "on", 1);
    assert_int_equal(load(NULL), CFG_OK);
    assert_int_equal(cfg.gpu_allow_cc_off, 0);
    assert_int_equal(cfg.gpu_no_hw_mode, 0);
}

static void test_timeouts_seconds_to_ms(void **state)
{
    (void)state;
    setenv("HEADER_TIMEOUT", "2", 1);
    setenv("BODY_TIMEOUT", "3", 1);
    setenv("IDLE_TIMEOUT", "4", 1);
    setenv("UPSTREAM_CONNECT_TIMEOUT", "5", 1);
    setenv("UPSTREAM_FIRST_BYTE_TIMEOUT", "6", 1);
    setenv("TIMEOUT", "7", 1);
    setenv("SHUTDOWN_GRACE", "0", 1);
    setenv("ATTESTATION_TIMEOUT", "9", 1);
    setenv("GPU_EVIDENCE_TIMEOUT", "604800", 1); /* the largest: one week */
    assert_int_equal(load(NULL), CFG_OK);
    assert_int_equal(cfg.header_timeout_ms, 2000);
    assert_int_equal(cfg.body_timeout_ms, 3000);
    assert_int_equal(cfg.idle_timeout_ms, 4000);
    assert_int_equal(cfg.upstream_connect_timeout_ms, 5000);
    assert_int_equal(cfg.upstream_first_byte_timeout_ms, 6000);
    assert_int_equal(cfg.total_timeout_ms, 7000);
    assert_int_equal(cfg.shutdown_grace_ms, 0);
    assert_int_equal(cfg.attestation_timeout_ms, 9000);
    assert_int_equal(cfg.gpu_evidence_timeout_ms, 604800000u);
    assert_int_equal(load(ARGS("--header-timeout", "11", "--timeout=12", "--shutdown-grace", "3600",
                               "--gpu-evidence-timeout=1")),
                     CFG_OK);
    assert_int_equal(cfg.header_timeout_ms, 11000);
    assert_int_equal(cfg.total_timeout_ms, 12000);
    assert_int_equal(cfg.shutdown_grace_ms, 3600000);
    assert_int_equal(cfg.gpu_evidence_timeout_ms, 1000);
    /* a timeout of 0 seconds or beyond a week is refused */
    expect_error(ARGS("--timeout", "0"), "TIMEOUT");
    expect_error(ARGS("--idle-timeout", "604801"), "IDLE_TIMEOUT");
    expect_error(ARGS("--shutdown-grace", "3601"), "SHUTDOWN_GRACE");
    expect_error(ARGS("--attestation-timeout", "1.5"), "ATTESTATION_TIMEOUT");
}

static void test_flags_override_env(void **state)
{
    (void)state;
    setenv("WORKERS", "3", 1);
    setenv("LISTEN_PORT", "9001", 1);
    setenv("TOKEN", "a,b,c", 1);
    setenv("LOG_LEVEL", "error", 1);
    assert_int_equal(load(ARGS("--workers", "5", "--listen=10.0.0.1:7000", "--token", "z",
                               "--model-name=flag-model", "--log-level", "debug",
                               "--attestation", "dstack", "--upstream", "http://u:1/")),
                     CFG_OK);
    assert_int_equal(cfg.workers, 5);
    assert_int_equal(cfg.listen_port, 7000);
    assert_string_equal(cfg.listen_host, "10.0.0.1");
    assert_int_equal(cfg.ntokens, 1); /* the flag replaces the variable's list */
    uint8_t h[32];
    sha256("z", 1, h);
    assert_memory_equal(cfg.token_hash[0], h, 32);
    assert_string_equal(cfg.model_name, "flag-model");
    assert_int_equal(cfg.log_level, LOG_LVL_DEBUG);
    assert_string_equal(config_attest_mode_name(cfg.attestation), "dstack");
    assert_string_equal(cfg.upstream_url, "http://u:1");
    /* the last of repeated flags wins; both forms */
    assert_int_equal(load(ARGS("--workers=2", "--workers", "7", "--cache-ttl", "10",
                               "--cache-ttl=20")),
                     CFG_OK);
    assert_int_equal(cfg.workers, 7);
    assert_int_equal(cfg.cache_ttl, 20);
    /* every remaining flag maps onto its field */
    assert_int_equal(load(ARGS("--upstream-api-key=k", "--trusted-hash-tokens", "t1,t2",
                               "--cache-capacity", "9", "--max-request-size=100",
                               "--max-header-size", "2048", "--max-headers=8",
                               "--body-timeout=1", "--idle-timeout", "2",
                               "--upstream-connect-timeout", "3",
                               "--upstream-first-byte-timeout=4", "--gpu-no-hw-mode", "1",
                               "--dstack-endpoint", "/d", "--tappd-endpoint=/t", "--tsm-path", "/s",
                               "--attestation-timeout", "6", "--attestation-cache-ttl=7",
                               "--tls-cert", "/c.pem", "--gpu-evidence=none",
                               "--nvml-library", "/n.so", "--gpu-allow-cc-off=1")),
                     CFG_OK);
    assert_string_equal(cfg.upstream_api_key, "k");
    assert_int_equal(cfg.ntrusted, 2);
    assert_int_equal(cfg.cache_capacity, 9);
    assert_int_equal(cfg.max_request_size, 100);
    assert_int_equal(cfg.max_header_size, 2048);
    assert_int_equal(cfg.max_headers, 8);
    assert_int_equal(cfg.body_timeout_ms, 1000);
    assert_int_equal(cfg.idle_timeout_ms, 2000);
    assert_int_equal(cfg.upstream_connect_timeout_ms, 3000);
    assert_int_equal(cfg.upstream_first_byte_timeout_ms, 4000);
    assert_int_equal(cfg.gpu_no_hw_mode, 1);
    assert_string_equal(cfg.dstack_endpoint, "/d");
    assert_string_equal(cfg.tappd_endpoint, "/t");
    assert_string_equal(cfg.tsm_root, "/s");
    assert_int_equal(cfg.attestation_timeout_ms, 6000);
    assert_int_equal(cfg.attestation_cache_ttl, 7);
    assert_string_equal(cfg.tls_cert_path, "/c.pem");
    assert_string_equal(config_gpu_evidence_name(cfg.gpu_evidence), "none");
    assert_int_equal(cfg.gpu_evidence, GPU_EVIDENCE_NONE);
    assert_string_equal(cfg.nvml_library_path, "/n.so");
    assert_int_equal(cfg.gpu_allow_cc_off, 1);
    /* a flag value that itself contains '=' keeps it */
    assert_int_equal(load(ARGS("--upstream-api-key=a=b=", "--model-name", "m=1")), CFG_OK);
    assert_string_equal(cfg.upstream_api_key, "a=b=");
    assert_string_equal(cfg.model_name, "m=1");
}

static void test_model_name_required(void **state)
{
    (void)state;
    unsetenv("MODEL_NAME");
    expect_error(NULL, "MODEL_NAME");
    setenv("MODEL_NAME", "", 1);
    expect_error(NULL, "MODEL_NAME");
    expect_error(ARGS("--model-name="), "MODEL_NAME");
    assert_int_equal(load(ARGS("--model-name", "x")), CFG_OK);
    assert_string_equal(cfg.model_name, "x");
    char longname[300];
    memset(longname, 'm', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    setenv("MODEL_NAME", longname, 1);
    expect_error(NULL, "MODEL_NAME");
}

/* MAX_CONNECTIONS: 0 (derived from the descriptor limit at start) unless set; a flag wins. */
static void test_max_connections(void **state)
{
    (void)state;
    assert_int_equal(load(NULL), CFG_OK);
    assert_int_equal(cfg.max_connections, 0);
    setenv("MAX_CONNECTIONS", "5000", 1);
    assert_int_equal(load(NULL), CFG_OK);
    assert_int_equal(cfg.max_connections, 5000);
    assert_int_equal(load(ARGS("--max-connections", "12")), CFG_OK);
    assert_int_equal(cfg.max_connections, 12);
    assert_int_equal(load(ARGS("--max-connections=0")), CFG_OK);
    assert_int_equal(cfg.max_connections, 0);
    unsetenv("MAX_CONNECTIONS");
    env_error("MAX_CONNECTIONS", "-1");
    env_error("MAX_CONNECTIONS", "100000001");
    env_error("MAX_CONNECTIONS", "many");
}

static void test_invalid_numbers(void **state)
{
    (void)state;
    env_error("LISTEN_PORT", "70000");
    env_error("LISTEN_PORT", "-1");
    env_error("LISTEN_PORT", "80a");
    env_error("LISTEN_PORT", "");
    env_error("LISTEN_PORT", " 80");
    env_error("WORKERS", "0");
    env_error("WORKERS", "257");
    env_error("WORKERS", "+2");
    env_error("CHAT_CACHE_EXPIRATION", "abc");
    env_error("CHAT_CACHE_EXPIRATION", "0");
    env_error("CHAT_CACHE_EXPIRATION", "2592001");
    env_error("CHAT_CACHE_CAPACITY", "0");
    env_error("CHAT_CACHE_CAPACITY", "99999999999999999999999"); /* ERANGE */
    env_error("VLLM_PROXY_MAX_REQUEST_SIZE", "1073741825");
    env_error("MAX_HEADER_SIZE", "1023");
    env_error("MAX_HEADERS", "7");
    env_error("MAX_HEADERS", "1001");
    env_error("HEADER_TIMEOUT", "0x10");
    env_error("ATTESTATION_CACHE_TTL", "86401");
    env_error("LOG_LEVEL", "verbose");
    env_error("ATTESTATION", "sgx");
    env_error("ATTESTATION", "SIMULATED");
    env_error("GPU_EVIDENCE", "always");
    env_error("VLLM_API_KEY", "a\r\nX-Injected: 1");
    env_error("GPU_NONCE_RETRIES", "11");
    env_error("CACHE_SALT_SECRET", "0123456789abcdef0123456789abcde"); /* 31 characters */
    env_error("CACHE_SALT_SECRET", "0123456789abcdef0123456789abcdef\n");
    expect_error(ARGS("--cache-salt-secret", "short"), "CACHE_SALT_SECRET");
    /* the same checks through flags name the variable too */
    expect_error(ARGS("--workers", "0"), "WORKERS");
    expect_error(ARGS("--cache-ttl=abc"), "CHAT_CACHE_EXPIRATION");
    expect_error(ARGS("--log-level", "loud"), "LOG_LEVEL");
    /* bounds are inclusive */
    setenv("LISTEN_PORT", "65535", 1);
    setenv("WORKERS", "256", 1);
    setenv("MAX_HEADERS", "1000", 1);
    setenv("MAX_HEADER_SIZE", "1048576", 1);
    assert_int_equal(load(NULL), CFG_OK);
    assert_int_equal(cfg.listen_port, 65535);
    assert_int_equal(cfg.workers, 256);
    assert_int_equal(cfg.max_headers, 1000);
    assert_int_equal(cfg.max_header_size, 1048576);
    setenv("CACHE_SALT_SECRET", "0123456789abcdef0123456789abcdef", 1);
    setenv("GPU_NONCE_RETRIES", "10", 1);
    assert_int_equal(load(NULL), CFG_OK);
    assert_string_equal(cfg.cache_salt_secret, "0123456789abcdef0123456789abcdef");
    assert_int_equal(cfg.gpu_nonce_retries, 10);
    unsetenv("CACHE_SALT_SECRET");
    unsetenv("GPU_NONCE_RETRIES");
}

static void test_unknown_and_incomplete_flags(void **state)
{
    (void)state;
    expect_error(ARGS("--no-such-flag"), "--no-such-flag");
    expect_error(ARGS("--no-such=1"), "--no-such=1");
    expect_error(ARGS("-w", "2"), "-w");
    expect_error(ARGS("positional"), "positional");
    expect_error(ARGS("--workers"), "--workers"); /* value missing at the end */
    expect_error(ARGS("--model-name"), "--model-name");
    /* environment names are not flags */
    expect_error(ARGS("--MODEL_NAME=x"), "--MODEL_NAME");
    /* DEV is environment-only */
    expect_error(ARGS("--dev"), "--dev");
}

static char *capture_stdout(int (*fn)(void), int *rc)
{
    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, STDOUT_FILENO), STDOUT_FILENO);
    *rc = fn();
    fflush(stdout);
    assert_int_equal(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
    close(saved);
    static char text[16384];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    assert_true(n >= 0);
    text[n] = '\0';
    close(fd);
    unlink(path);
    return text;
}

static int run_help(void) { return load(ARGS("--help")); }
static int run_h_first(void) { return load(ARGS("-h", "--no-such-flag")); }
static int run_version(void) { return load(ARGS("--version")); }

static void test_help_and_version(void **state)
{
    (void)state;
    unsetenv("MODEL_NAME"); /* --help works without a model name */
    int rc;
    const char *out = capture_stdout(run_help, &rc);
    assert_int_equal(rc, CFG_EXIT_OK);
    assert_non_null(strstr(out, "usage: vllm-proxy"));
    /* every flag the parser accepts is documented, with its variable */
    static const char *const documented[] = {
        "--listen", "--upstream", "--upstream-api-key", "--model-name", "MODEL_NAME", "--token",
        "--trusted-hash-tokens", "--workers", "WORKERS", "--attestation", "--cache-ttl",
        "CHAT_CACHE_EXPIRATION", "--timeout", "--log-level", "--gpu-evidence", "--help",
        "--version", "DEV=1",
    };
    for (size_t i = 0; i < sizeof documented / sizeof documented[0]; i++)
        if (!strstr(out, documented[i]))
            fail_msg("--help does not mention %s", documented[i]);
    out = capture_stdout(run_h_first, &rc);
    assert_int_equal(rc, CFG_EXIT_OK); /* -h stops before the unknown flag */
    assert_non_null(strstr(out, "usage:"));
    out = capture_stdout(run_version, &rc);
    assert_int_equal(rc, CFG_EXIT_OK);
    assert_int_equal(strncmp(out, "vllm-proxy ", 11), 0);
    assert_non_null(strchr(out, '\n'));
    assert_null(strstr(out, "usage"));
}

static void test_token_lists(void **state)
{
    (void)state;
    setenv("TOKEN", " alpha , ,beta,,  gamma delta  ,", 1);
    setenv("TRUSTED_REQUEST_HASH_TOKENS", ",,,", 1);
    assert_int_equal(load(NULL), CFG_OK);
    assert_int_equal(cfg.ntokens, 3);
    const char *want[] = {"alpha", "beta", "gamma delta"}; /* inner spaces are kept */
    for (int i = 0; i < 3; i++) {
        uint8_t h[32];
        sha256(want[i], strlen(want[i]), h);
        assert_memory_equal(cfg.token_hash[i], h, 32);
    }
    uint8_t padded[32];
    sha256(" alpha ", 7, padded);
    assert_memory_not_equal(cfg.token_hash[0], padded, 32);
    assert_int_equal(cfg.ntrusted, 0);
    /* an empty TOKEN means no tokens */
    setenv("TOKEN", "", 1);
    setenv("TRUSTED_REQUEST_HASH_TOKENS", "t\t", 1);
    assert_int_equal(load(NULL), CFG_OK);
    assert_int_equal(cfg.ntokens, 0);
    assert_int_equal(cfg.ntrusted, 1);
    uint8_t h[32];
    sha256("t", 1, h);
    assert_memory_equal(cfg.trusted_hash[0], h, 32);
    /* exactly CFG_MAX_TOKENS are accepted, one more is an error naming the variable */
    char list[CFG_MAX_TOKENS * 8 + 16] = "";
    for (int i = 0; i < CFG_MAX_TOKENS; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%st%d", i ? "," : "", i);
    setenv("TOKEN", list, 1);
    assert_int_equal(load(NULL), CFG_OK);
    assert_int_equal(cfg.ntokens, CFG_MAX_TOKENS);
    sha256("t63", 3, h);
    assert_memory_equal(cfg.token_hash[63], h, 32);
    strcat(list, ",extra");
    setenv("TOKEN", list, 1);
    expect_error(NULL, "TOKEN");
}

static void test_dev_and_attestation(void **state)
{
    (void)state;
    /* without ATTESTATION the default is auto */
    unsetenv("ATTESTATION");
    assert_int_equal(load(NULL), CFG_OK);
    assert_string_equal(config_attest_mode_name(cfg.attestation), "auto");
    /* DEV=1 implies simulated, even over an explicit ATTESTATION variable */
    setenv("DEV", "1", 1);
    assert_int_equal(load(NULL), CFG_OK);
    assert_string_equal(config_attest_mode_name(cfg.attestation), "simulated");
    setenv("ATTESTATION", "dstack", 1);
    assert_int_equal(load(NULL), CFG_OK);
    assert_string_equal(config_attest_mode_name(cfg.attestation), "simulated");
    /* ... but an explicit flag still wins */
    assert_int_equal(load(ARGS("--attestation=tsm")), CFG_OK);
    assert_string_equal(config_attest_mode_name(cfg.attestation), "tsm");
    setenv("DEV", "TRUE", 1);
    unsetenv("ATTESTATION");
    assert_int_equal(load(NULL), CFG_OK);
    assert_string_equal(config_attest_mode_name(cfg.attestation), "simulated");
    /* DEV=0 (or anything else) changes nothing */
    setenv("DEV", "0", 1);
    assert_int_equal(load(NULL), CFG_OK);
    assert_string_equal(config_attest_mode_name(cfg.attestation), "auto");
    unsetenv("DEV");
    /* ATTESTATION=auto is accepted by config even without a TEE: the provider decides later */
    setenv("ATTESTATION", "auto", 1);
    assert_int_equal(load(NULL), CFG_OK);
    assert_string_equal(config_attest_mode_name(cfg.attestation), "auto");
    const char *modes[] = {"dstack", "tappd", "tsm", "simulated"};
    for (size_t i = 0; i < 4; i++) {
        setenv("ATTESTATION", modes[i], 1);
        assert_int_equal(load(NULL), CFG_OK);
        assert_string_equal(config_attest_mode_name(cfg.attestation), modes[i]);
    }
}

static void test_listen_forms(void **state)
{
    (void)state;
    assert_int_equal(load(ARGS("--listen", "127.0.0.1:8080")), CFG_OK);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 8080);
    assert_int_equal(load(ARGS("--listen=[::1]:8000")), CFG_OK);
    assert_string_equal(cfg.listen_host, "::1");
    assert_int_equal(cfg.listen_port, 8000);
    assert_int_equal(load(ARGS("--listen", "[::]:0")), CFG_OK);
    assert_string_equal(cfg.listen_host, "::");
    assert_int_equal(cfg.listen_port, 0);
    assert_int_equal(load(ARGS("--listen", "localhost:65535")), CFG_OK);
    assert_string_equal(cfg.listen_host, "localhost");
    assert_int_equal(cfg.listen_port, 65535);
    /* the flag overrides LISTEN_HOST and LISTEN_PORT */
    setenv("LISTEN_HOST", "10.1.1.1", 1);
    setenv("LISTEN_PORT", "1", 1);
    assert_int_equal(load(ARGS("--listen", "h:2")), CFG_OK);
    assert_string_equal(cfg.listen_host, "h");
    assert_int_equal(cfg.listen_port, 2);
    unsetenv("LISTEN_HOST");
    unsetenv("LISTEN_PORT");
    /* bad forms */
    expect_error(ARGS("--listen", "8000"), "--listen");
    expect_error(ARGS("--listen", ":8000"), "--listen");
    expect_error(ARGS("--listen", "host:"), "--listen");
    expect_error(ARGS("--listen", "host:port"), "--listen");
    expect_error(ARGS("--listen", "host:70000"), "--listen");
    expect_error(ARGS("--listen", "[::1]"), "--listen");
    expect_error(ARGS("--listen", "[]:80"), "--listen");
    expect_error(ARGS("--listen", "[::1:80"), "--listen");
    expect_error(ARGS("--listen", "::1]:80"), "--listen");
    expect_error(ARGS("--listen", "[:]]:80"), "--listen");
    expect_error(ARGS("--listen", "::1:8000"), "--listen"); /* IPv6 must be bracketed */
    expect_error(ARGS("--listen", "::8000"), "--listen");
    char longhost[300 + 8];
    memset(longhost, 'h', 300);
    memcpy(longhost + 300, ":80", 4);
    expect_error(ARGS("--listen", longhost), "--listen");
}

/* The table is well formed: names unique, each field the size its kind writes. */
static void test_settings_table(void **state)
{
    (void)state;
    size_t n;
    const config_setting_t *t = config_settings(&n);
    assert_true(n >= 39);
    for (size_t i = 0; i < n; i++) {
        const config_setting_t *s = &t[i];
        assert_true(s->flag || s->env);
        assert_non_null(s->help);
        if (s->flag)
            assert_int_equal(strncmp(s->flag, "--", 2), 0);
        for (size_t j = 0; j < i; j++) {
            if (s->flag && t[j].flag && !strcmp(s->flag, t[j].flag))
                fail_msg("flag %s twice", s->flag);
            if (s->env && t[j].env && !strcmp(s->env, t[j].env))
                fail_msg("variable %s twice", s->env);
        }
        assert_true(s->off + s->size <= sizeof(config_t));
        switch (s->kind) {
        case CFG_STR:
            assert_true(s->size > 1);
            break;
        case CFG_SIZE:
            assert_int_equal(s->size, sizeof(size_t));
            break;
        case CFG_TOKENS:
            assert_int_equal(s->size, sizeof cfg.token_hash);
            break;
        case CFG_CIDRS:
            assert_int_equal(s->size, sizeof cfg.trusted_proxies);
            break;
        case CFG_LISTEN:
            break;
        default:
            assert_int_equal(s->size, sizeof(int));
        }
        if (s->kind == CFG_ENUM)
            assert_non_null(s->names);
    }
}

/* "| a | b | c | d |" -> the four trimmed cells; 0 if the line has fewer. */
static int doc_cells(char *line, char *cell[4])
{
    int k = 0;
    char *p = strchr(line, '|');
    while (p && k < 4) {
        char *q = strchr(p + 1, '|');
        if (!q)
            break;
        char *a = p + 1, *b = q;
        while (a < b && *a == ' ')
            a++;
        while (b > a && b[-1] == ' ')
            b--;
        *b = '\0';
        cell[k++] = a;
        p = q;
    }
    return k == 4;
}

/* The setting a doc row names by its variable and flag cells ("`NAME`" or "—"). */
static const config_setting_t *doc_setting(const char *var, const char *flag, size_t *idx)
{
    size_t n;
    const config_setting_t *t = config_settings(&n);
    for (size_t i = 0; i < n; i++) {
        char v[80], f[80];
        snprintf(v, sizeof v, t[i].env ? "`%s`" : "—", t[i].env);
        snprintf(f, sizeof f, t[i].flag ? "`%s`" : "—", t[i].flag);
        if (!strcmp(v, var) && !strcmp(f, flag)) {
            *idx = i;
            return &t[i];
        }
    }
    return NULL;
}

/* The meaning cell states the range of a number and every choice of an enum. */
static void doc_check_meaning(const config_setting_t *s, const char *meaning)
{
    char want[64];
    if (s->kind == CFG_INT || s->kind == CFG_UINT || s->kind == CFG_SIZE || s->kind == CFG_SECONDS) {
        snprintf(want, sizeof want, "%llu..%llu", s->lo, s->hi);
        if (!strstr(meaning, want))
            fail_msg("docs/CONFIG.md: %s does not give its range %s", s->env, want);
    }
    for (int i = 0; s->kind == CFG_ENUM && s->names[i]; i++) {
        snprintf(want, sizeof want, "`%s`", s->names[i]);
        if (s->names[i][0] && !strstr(meaning, want))
            fail_msg("docs/CONFIG.md: %s does not list %s", s->env, want);
    }
}

/* docs/CONFIG.md's tables are the settings table: every row once, same variable, flag and
 * default, range and choices in the meaning, and no row the table does not have. */
static void test_doc_matches_table(void **state)
{
    (void)state;
    FILE *f = fopen("docs/CONFIG.md", "r");
    assert_non_null(f);
    size_t n;
    config_settings(&n);
    int seen[128] = {0};
    assert_true(n <= 128);
    char line[2048];
    while (fgets(line, sizeof line, f)) {
        char *cell[4];
        if ((strncmp(line, "| `", 3) && strncmp(line, "| —", 4)) || !doc_cells(line, cell))
            continue;
        size_t i = 0;
        const config_setting_t *s = doc_setting(cell[0], cell[1], &i);
        if (!s)
            fail_msg("docs/CONFIG.md documents %s %s, which config.c's table does not have", cell[0], cell[1]);
        if (seen[i]++)
            fail_msg("docs/CONFIG.md documents %s %s twice", cell[0], cell[1]);
        char buf[128];
        const char *def = config_setting_default(s, buf, sizeof buf);
        if (strcmp(cell[2], def))
            fail_msg("docs/CONFIG.md: %s %s default '%s', config.c '%s'", cell[0], cell[1], cell[2], def);
        doc_check_meaning(s, cell[3]);
    }
    fclose(f);
    const config_setting_t *t = config_settings(&n);
    for (size_t i = 0; i < n; i++)
        if (!seen[i])
            fail_msg("docs/CONFIG.md does not document %s", t[i].env ? t[i].env : t[i].flag);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, setup),
        cmocka_unit_test_setup(test_peer_settings, setup),
        cmocka_unit_test_setup(test_env_values, setup),
        cmocka_unit_test_setup(test_timeouts_seconds_to_ms, setup),
        cmocka_unit_test_setup(test_flags_override_env, setup),
        cmocka_unit_test_setup(test_model_name_required, setup),
        cmocka_unit_test_setup(test_invalid_numbers, setup),
        cmocka_unit_test_setup(test_max_connections, setup),
        cmocka_unit_test_setup(test_unknown_and_incomplete_flags, setup),
        cmocka_unit_test_setup(test_help_and_version, setup),
        cmocka_unit_test_setup(test_token_lists, setup),
        cmocka_unit_test_setup(test_dev_and_attestation, setup),
        cmocka_unit_test_setup(test_listen_forms, setup),
        cmocka_unit_test(test_settings_table),
        cmocka_unit_test(test_doc_matches_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
