/* Every error answer the proxy writes, in one table: HTTP status, OpenAI error type, code
 * (NULL writes JSON null) and the default message. The body is always the OpenAI error shape
 * {"error":{"message","type","param":null,"code"}} (respond.h writes it). A message that
 * carries details (the JSON parser's position, the attestation failure) replaces the default
 * at the call site; status, type and code always come from here. */
#ifndef VP_PROXY_ERRORS_H
#define VP_PROXY_ERRORS_H

/* X(name, status, type, code, message) */
#define APP_ERROR_MAP(X)                                                                        \
    /* the transport's protocol rejections (http_reject_t) */                                   \
    X(REQUEST_TIMEOUT, 408, "timeout", NULL, "request not received in time")                    \
    X(BODY_TOO_LARGE, 413, "request_too_large", NULL, "request body exceeds the configured limit") \
    X(HEAD_TOO_LARGE, 431, "invalid_request_error", NULL, "request headers too large or too many") \
    X(DUPLICATE_HEADER, 400, "invalid_request_error", NULL, "duplicate header")                 \
    X(MALFORMED_HTTP, 400, "invalid_request_error", NULL, "malformed HTTP request")             \
    /* routing and authentication */                                                            \
    X(NOT_FOUND, 404, "not_found", NULL, "Not Found")                                           \
    X(METHOD_NOT_ALLOWED, 405, "invalid_request_error", NULL, "Method Not Allowed")             \
    X(AUTH_MISSING, 401, "authentication_error", "invalid_api_key",                             \
      "Invalid or missing Authorization header")                                                \
    X(AUTH_INVALID, 401, "authentication_error", "invalid_api_key", "Invalid token")            \
    /* request bodies and parameters */                                                         \
    X(INVALID_JSON, 400, "invalid_request_error", "invalid_json", "invalid JSON")               \
    X(INVALID_MULTIPART, 400, "invalid_request_error", "invalid_multipart",                    \
      "the body must be multipart/form-data with a boundary")                                   \
    X(INVALID_REQUEST_HASH, 400, "invalid_request_error", "invalid_request_hash",              \
      "X-Request-Hash must be 64 hex characters")                                               \
    X(INVALID_SIGNATURE_INBAND, 400, "invalid_request_error", "invalid_signature_inband",      \
      "X-Signature-Inband must be 1 (ask for in-band signatures) or 0")                         \
    X(INVALID_SIGNING_ALGO, 400, "invalid_signing_algo", NULL,                                  \
      "Invalid signing algorithm. Must be 'ed25519' or 'ecdsa'")                                \
    X(INVALID_NONCE, 400, "invalid_request_error", "invalid_nonce",                             \
      "nonce must be exactly 64 hex characters (32 bytes)")                                     \
    X(ACI_INVALID_NONCE, 400, "invalid_request_error", "invalid_nonce",                         \
      "nonce must be exactly 64 lowercase hex characters (32 bytes)")                           \
    X(INVALID_TLS_FLAG, 400, "invalid_request_error", "invalid_include_tls_fingerprint",        \
      "include_tls_fingerprint must be true or false")                                          \
    X(TLS_UNAVAILABLE, 400, "invalid_request_error", "tls_fingerprint_unavailable",             \
      "include_tls_fingerprint=true needs TLS_CERT_PATH on this server")                        \
    X(INVALID_REPORT_VERSION, 400, "invalid_request_error", "invalid_version",                  \
      "version must be 1, 2 or 3 (2: report_data binds the TLS certificate's key; 3: the GPU evidence too)") \
    X(SIGNING_ADDRESS_UNKNOWN, 404, "not_found", NULL, "Signing address not found on this server") \
    X(CHAT_ID_NOT_FOUND, 404, "not_found", NULL, "Chat id not found or expired")                \
    /* E2EE where no format is wired: fail closed (issue 10). E2EE_V2_NOT_SUPPORTED: ACI's   \
     * answer for a service without v2 (an app without ACI keys, unit tests). */               \
    X(E2EE_NOT_SUPPORTED, 400, "e2ee_not_supported", NULL,                                      \
      "End-to-end encryption is not supported by this server yet; the request was not forwarded") \
    X(E2EE_V2_NOT_SUPPORTED, 400, "e2ee_invalid_version", NULL,                                 \
      "E2EE v2 is not supported by this service; the request was not forwarded")               \
    /* end-to-end encryption (proxy/e2ee.h; ../shared/docs/e2ee-formats.md §5.3, §6.2) */       \
    X(E2EE_HEADER_MISSING, 400, "e2ee_header_missing", NULL,                                    \
      "X-Signing-Algo, X-Client-Pub-Key and X-Model-Pub-Key are required together (and "        \
      "X-E2EE-Nonce with X-E2EE-Timestamp for version 2); the request was not forwarded")       \
    X(E2EE_INVALID_SIGNING_ALGO, 400, "e2ee_invalid_signing_algo", NULL,                        \
      "X-Signing-Algo must be 'ecdsa' or 'ed25519'; the request was not forwarded")             \
    X(E2EE_INVALID_PUBLIC_KEY, 400, "e2ee_invalid_public_key", NULL,                            \
      "X-Client-Pub-Key is not a valid public key for the signing algorithm; the request was "  \
      "not forwarded")                                                                          \
    X(E2EE_MODEL_KEY_MISMATCH, 400, "e2ee_model_key_mismatch", NULL,                            \
      "X-Model-Pub-Key does not match this server's signing public key; the request was not "   \
      "forwarded")                                                                              \
    X(E2EE_INVALID_VERSION, 400, "e2ee_invalid_version", NULL, "X-E2EE-Version must be 1 or "   \
      "2; the request was not forwarded")                                                       \
    X(E2EE_INVALID_NONCE, 400, "e2ee_invalid_nonce", NULL,                                      \
      "X-E2EE-Nonce must be 16 to 256 characters; the request was not forwarded")               \
    X(E2EE_REPLAY_DETECTED, 400, "e2ee_replay_detected", NULL,                                  \
      "this nonce and timestamp were already used; the request was not forwarded")              \
    X(E2EE_INVALID_TIMESTAMP, 400, "e2ee_invalid_timestamp", NULL,                              \
      "X-E2EE-Timestamp must be an integer within 300 seconds of the server's time; the "       \
      "request was not forwarded")                                                              \
    X(E2EE_DECRYPTION_FAILED, 400, "e2ee_decryption_failed", NULL,                              \
      "an encrypted field could not be decrypted; the request was not forwarded")               \
    X(E2EE_INVALID_REQUEST, 400, "invalid_e2ee_request", NULL,                                  \
      "Encrypted message content must be non-empty hex; the request was not forwarded")         \
    /* ACI E2EE v2 (formats document §7.4; spec/e2ee-v2.md §9) */                               \
    X(E2EE_INVALID_PAYLOAD_MODEL, 400, "e2ee_invalid_payload_model", NULL,                      \
      "the request's top-level model must be a string; the request was not forwarded")          \
    X(E2EE_UNSUPPORTED_ENDPOINT, 400, "e2ee_unsupported_endpoint", NULL,                        \
      "E2EE v2 is supported on /v1/chat/completions, /v1/completions and /v1/embeddings only; " \
      "the request was not forwarded")                                                          \
    /* a request whose answer would carry generated text the format does not encrypt */       \
    X(E2EE_UNSUPPORTED_FIELD, 400, "e2ee_unsupported_field", NULL,                              \
      "this request asks for output that its E2EE format does not encrypt and that would be "   \
      "returned in clear; the request was not forwarded")                                       \
    X(E2EE_RESPONSE_FAILED, 502, "server_error", NULL,                                          \
      "the engine's answer could not be encrypted; nothing of it was sent")                     \
    X(E2EE_BUSY, 503, "server_overloaded", "e2ee_busy",                                         \
      "too many encrypted answers waiting for the crypto threads; retry later")                \
    /* the proxy's own failures */                                                              \
    X(RECORD_CORRUPT, 500, "server_error", NULL, "stored signature record is corrupt")          \
    X(OUT_OF_MEMORY, 503, "server_error", NULL, "out of memory")                                \
    X(REPORT_UNSCHEDULED, 503, "server_error", NULL, "cannot schedule the report")              \
    X(REPORTS_PER_TOKEN, 429, "rate_limit_exceeded", "too_many_pending_reports",                \
      "too many attestation reports pending for this token; retry later")                      \
    X(RATE_LIMITED_IP, 429, "rate_limit_exceeded", "rate_limit_client_ip",                     \
      "too many requests from this client address; retry after the seconds in Retry-After")    \
    X(RATE_LIMITED_TOKEN, 429, "rate_limit_exceeded", "rate_limit_token",                       \
      "too many requests with this API key; retry after the seconds in Retry-After")           \
    X(REPORTS_BUSY, 503, "server_overloaded", "too_many_pending_reports",                       \
      "too many attestation reports pending; retry later")                                      \
    X(ATTESTATION_UNAVAILABLE, 503, "attestation_unavailable", NULL,                            \
      "attestation report could not be produced")                                               \
    /* the engine's failures, before anything reached the client */                             \
    X(ENGINE_UNREACHABLE, 502, "upstream_error", "upstream_unavailable",                        \
      "the engine is unreachable")                                                              \
    X(ENGINE_TIMEOUT, 504, "upstream_error", "upstream_timeout",                                \
      "the engine did not answer in time")                                                      \
    X(ENGINE_BROKEN, 502, "upstream_error", "upstream_unavailable",                             \
      "the engine closed the connection or sent a malformed response")                          \
    /* the engine pool (http/engines.h): both carry Retry-After */                              \
    X(NO_HEALTHY_ENGINE, 503, "upstream_error", "no_healthy_engine",                            \
      "no engine is healthy; retry later")                                                      \
    X(ENGINE_BUSY, 429, "rate_limit_exceeded", "rate_limit_exceeded",                           \
      "every engine is at its in-flight limit; retry later")

typedef enum app_error {
#define APP_ERROR_ENUM(name, status, type, code, message) APP_E_##name,
    APP_ERROR_MAP(APP_ERROR_ENUM)
#undef APP_ERROR_ENUM
    APP_E_N
} app_error_t;

typedef struct app_error_info {
    int status;
    const char *type, *code, *message;
} app_error_info_t;

/* The row of e (e < APP_E_N). */
const app_error_info_t *app_error_info(app_error_t e);

#endif
