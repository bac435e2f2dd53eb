/* The application behind the HTTP server: shared state (immutable config, signer, store,
 * attestation provider; the last three are thread-safe) and the per-worker state (the
 * upstream pool, the Redis connection, metrics, a free list of relays). */
#ifndef VP_PROXY_APP_H
#define VP_PROXY_APP_H

#include <stdint.h>
#include <uv.h>

#include "attest/provider.h"
#include "http/server.h"
#include "http/upstream.h"
#include "proxy/config.h"
#include "proxy/metrics.h"
#include "sign/signer.h"
#include "store/redis.h"
#include "store/store.h"

typedef struct app {
    const config_t *cfg;
    signer_t *signer;
    store_t *store;
    attest_service_t *attest; /* quote provider, GPU evidence, report cache */
    upstream_target_t upstream;
    struct app_worker **workers;
    int nworkers;
    double start_time;
} app_t;

typedef struct relay relay_t;

typedef struct app_worker {
    app_t *app;
    worker_t *w;
    upstream_pool_t *pool;
    metrics_t m;
    relay_t *free_relays;
    unsigned nfree_relays;
    buf_t scratch; /* upstream header lines, rebuilt per request */
    rstore_t *redis; /* this loop's Redis connection; NULL when REDIS_HOST is unset */
} app_worker_t;

extern const http_handler_t app_http_handler;

/* Handlers shared between handlers.c and relay.c. */
void app_send_error(conn_t *c, http_req_t *req, int status, const char *message, const char *type,
                    const char *code);
void app_log_request(app_worker_t *aw, http_req_t *req, int route, int status, int upstream_status,
                     uint64_t bytes_out, const char *chat_id);
void app_respond_json(app_worker_t *aw, conn_t *c, http_req_t *req, int route, int status,
                      const char *json, size_t len);
void app_respond_error(app_worker_t *aw, conn_t *c, http_req_t *req, int route, int status,
                       const char *message, const char *type, const char *code);
/* Value of `key` in a query string, percent-decoded into out: its length, -1 when absent,
 * -2 when malformed or longer than cap. */
long app_query_get(strv_t q, const char *key, char *out, size_t cap);
/* signing_algo query parameter: 0 ecdsa (also when absent), 1 ed25519, -1 invalid. */
int app_parse_algo(strv_t q);
extern const char APP_INVALID_ALGO[];

/* The attestation report route (report.c). */
void handle_report(app_worker_t *aw, conn_t *c, http_req_t *req);
void report_on_abort(void *job);

enum relay_kind { RELAY_SIGNED, RELAY_PASS, RELAY_METRICS };
int relay_start(app_worker_t *aw, conn_t *c, http_req_t *req, int route, int kind, const char *method,
                strv_t upstream_path, strv_t query, const void *body, size_t len, buf_t *own_body,
                const char *req_hash);
void relay_on_abort(conn_t *c, void *app);
void relay_on_drain(conn_t *c, void *app);
void relay_free_list(app_worker_t *aw);
int app_is_relay(const void *p);

#endif
