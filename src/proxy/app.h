/* The application's state behind the HTTP server: what every worker shares (immutable config;
 * the signer, the memory store and the attestation service, all thread-safe) and what one
 * worker owns (its upstream pool, its Redis connection, its metrics, its free relays).
 *
 * Threads: app_t is written at start-up only; an app_worker_t belongs to its loop thread
 * (its metrics are read by /v1/metrics on any worker with relaxed atomic loads). */
#ifndef VP_PROXY_APP_H
#define VP_PROXY_APP_H

#include <uv.h>

#include "attest/provider.h"
#include "core/buf.h"
#include "http/engines.h"
#include "http/server.h"
#include "http/upstream.h"
#include "proxy/config.h"
#include "proxy/e2ee_pool.h"
#include "proxy/metrics.h"
#include "proxy/ratelimit.h"
#include "proxy/sigstore.h"
#include "sign/aci_keys.h"
#include "sign/signer.h"
#include "store/redis.h"
#include "store/store.h"

typedef struct app {
    const config_t *cfg;
    signer_t *signer;
    aci_keys_t *aci; /* ACI E2EE v2's keys and keyset; NULL: ACI v2 refused */
    store_t *store;
    attest_service_t *attest; /* quote provider, GPU evidence, report cache */
    engine_set_t *engines;      /* the engines (VLLM_BACKEND_URLS or VLLM_BASE_URL) */
    engine_checker_t *checker;  /* their health checks, on worker 0's loop; NULL: off */
    e2ee_pool_t *e2ee_pool;   /* the crypto threads sealing NEAR / ACI answers; NULL: inline */
    ratelimit_t *limits;      /* RATE_LIMIT_*; NULL: no limit on */
    struct app_worker **workers;
    int nworkers;
    double start_time;
    metrics_engines_t mengines; /* the engines' labels and health in the metrics */
} app_t;

struct relay;

typedef struct app_worker {
    app_t *app;
    worker_t *w;
    upstream_pool_t *pool;
    metrics_t m;
    struct relay *free_relays;
    unsigned nfree_relays;
    buf_t scratch; /* upstream header lines, rebuilt per request */
    rstore_t *redis; /* this loop's Redis connection; NULL when REDIS_HOST is unset */
    e2ee_port_t *e2ee_port; /* this loop's port to app->e2ee_pool; NULL: sealing inline */
} app_worker_t;

/* The signature records as seen from this worker (its Redis connection). */
static inline sigstore_t app_sigstore(const app_worker_t *aw)
{
    return (sigstore_t){aw->app->store, aw->redis, aw->app->signer, aw->app->cfg->model_name,
                        aw->app->cfg->signed_text == SIGNED_TEXT_MODEL_REQ_RESP};
}

#endif
