/* GET /v1/attestation/report: parameters checked on the loop, the report built on the libuv
 * thread pool by the attestation service (agent calls, quote signing and hex encoding never
 * run on a loop thread). Without a client nonce a fresh cached report is answered on the loop,
 * never behind collections; a cache entry past half its TTL schedules a background refresh
 * from here. Collections a client causes (a client nonce, a cache miss) are admitted up to
 * REPORT_MAX_PENDING per process (503 beyond) and REPORT_MAX_PENDING_PER_TOKEN per bearer
 * token (429 beyond); a queued one is cancelled when its client goes away. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "attest/provider.h"
#include "core/hex.h"
#include "core/log.h"
#include "core/sha.h"
#include "proxy/query.h"
#include "proxy/report_route.h"
#include "proxy/respond.h"

#define NONCE_HEX_LEN 64
#define PARAM_MAX 200 /* bytes of a decoded query value */
#define ERR_MAX 256
#define BEARER "Bearer "
#define BEARER_LEN (sizeof BEARER - 1)

/* ---- attestation report (built on the thread pool) ---- */

/* A report being built: the connection's owner until the pool job finishes. When the client
 * goes away first, on_abort only forgets the connection; report_done frees the job. */
typedef struct report_job {
    conn_owner_t owner;
    uv_work_t work;
    app_worker_t *aw;
    conn_t *c;
    http_req_t *req;
    int algo;
    int tls;            /* binding flags: ATTEST_BIND_TLS | ATTEST_BIND_GPU */
    int server_nonce;   /* no client nonce: served from the cache */
    int want_refresh;   /* the cached entry is past half its TTL */
    int refresh_only;   /* a background refresh, no connection */
    int aci;            /* GET /v1/aci/attestation (nonce_hex, or the unchallenged form) */
    char nonce_hex[NONCE_HEX_LEN + 1];
    int admitted;       /* counted by attest_service_admit for token `client` */
    unsigned client;
    uint8_t nonce[32];
    buf_t out;
    int rc;
    char err[ERR_MAX];
} report_job_t;

/* The client went away: a job still queued is cancelled (report_done then runs with
 * UV_ECANCELED and frees it); a running one finishes and frees itself. */
static void report_on_abort(conn_owner_t *o, conn_t *c)
{
    (void)c;
    report_job_t *j = (report_job_t *)o;
    j->c = NULL;
    uv_cancel((uv_req_t *)&j->work);
}

static const conn_owner_ops_t REPORT_JOB_OPS = {"report", report_on_abort, NULL};

static void report_work(uv_work_t *w)
{
    report_job_t *j = w->data;
    attest_service_t *s = j->aw->app->attest;
    if (j->refresh_only) {
        attest_service_refresh(s, j->algo, j->tls);
        return;
    }
    if (j->aci) {
        j->rc = attest_service_aci(s, j->nonce_hex[0] ? j->nonce_hex : NULL, &j->out, j->err,
                                   sizeof j->err);
        return;
    }
    if (j->server_nonce)
        j->rc = attest_service_cached(s, j->algo, j->tls, &j->out, &j->want_refresh, j->err, sizeof j->err);
    else
        j->rc = attest_service_fresh(s, j->algo, j->tls, j->nonce, &j->out, j->err, sizeof j->err);
}

static void report_done(uv_work_t *w, int status);

/* Hands a background refresh of (algo, tls) to the pool; the job holds no connection. */
static void queue_refresh(app_worker_t *aw, int algo, int tls)
{
    report_job_t *r = calloc(1, sizeof *r);
    if (r) {
        r->aw = aw;
        r->algo = algo;
        r->tls = tls;
        r->refresh_only = 1;
        r->work.data = r;
        if (uv_queue_work(worker_loop(aw->w), &r->work, report_work, report_done) == 0)
            return;
        free(r);
    }
    attest_service_refresh_cancelled(aw->app->attest, algo, tls);
}

static void report_done(uv_work_t *w, int status)
{
    report_job_t *j = w->data;
    app_worker_t *aw = j->aw;
    if (j->c) {
        if (status == 0 && j->rc == 0) {
            M_ADD(aw->m.reports, 1);
            metrics_observe_report(aw, REPORT_FRESH, j->req->start_ns);
            conn_set_owner(j->c, NULL);
            respond_json(aw, j->c, j->req, ROUTE_REPORT, 200, j->out.data, j->out.len);
        } else {
            char msg[ERR_MAX + 64];
            if (status != 0)
                snprintf(j->err, sizeof j->err, "the report job was cancelled");
            LOG_ERROR("attestation report failed: %s", j->err);
            snprintf(msg, sizeof msg, "%s: %s", app_error_info(APP_E_ATTESTATION_UNAVAILABLE)->message,
                     j->err);
            conn_set_owner(j->c, NULL);
            respond_error(aw, j->c, j->req, ROUTE_REPORT, APP_E_ATTESTATION_UNAVAILABLE, msg);
        }
    }
    if (j->want_refresh && status == 0)
        queue_refresh(aw, j->algo, j->tls);
    else if (j->want_refresh)
        attest_service_refresh_cancelled(aw->app->attest, j->algo, j->tls);
    if (j->admitted)
        attest_service_release(aw->app->attest, j->client);
    buf_free(&j->out);
    free(j);
}

/* The index of the request's bearer token in TOKEN (the router has authenticated it), or, on
 * a public report (PUBLIC_ATTESTATION) without one of the tokens, CFG_MAX_TOKENS: every
 * anonymous caller shares that one admission bucket. */
static unsigned token_index(const config_t *cfg, strv_t a)
{
    uint8_t h[SHA256_LEN];
    if (a.n < BEARER_LEN || strncasecmp(a.p, BEARER, BEARER_LEN) != 0)
        return CFG_MAX_TOKENS;
    sha256(a.p + BEARER_LEN, a.n - BEARER_LEN, h);
    for (int i = 0; i < cfg->ntokens; i++)
        if (sodium_memcmp(h, cfg->token_hash[i], SHA256_LEN) == 0)
            return (unsigned)i;
    return CFG_MAX_TOKENS;
}
_Static_assert(CFG_MAX_TOKENS < ATTEST_MAX_CLIENTS, "no admission bucket for public report callers");

/* A fresh cached report answered on the loop: 1 when answered, 0 when the pool must
 * collect (none cached, or the cache is off). */
static int answer_cached(app_worker_t *aw, conn_t *c, http_req_t *req, int algo, int tls)
{
    buf_t out = BUF_INIT;
    int want_refresh = 0;
    int rc = attest_service_try_cached(aw->app->attest, algo, tls, &out, &want_refresh);
    if (rc == 0) {
        M_ADD(aw->m.reports, 1);
        metrics_observe_report(aw, REPORT_CACHED, req->start_ns);
        respond_json(aw, c, req, ROUTE_REPORT, 200, out.data, out.len);
    } else if (rc < 0)
        respond_error(aw, c, req, ROUTE_REPORT, APP_E_OUT_OF_MEMORY, NULL);
    buf_free(&out);
    if (want_refresh)
        queue_refresh(aw, algo, tls);
    return rc <= 0;
}

/* Queues a client's collection within the bounds, or answers the refusal (j is freed). */
static void admit_and_queue(report_job_t *j, app_worker_t *aw, conn_t *c, http_req_t *req)
{
    const config_t *cfg = aw->app->cfg;
    j->client = token_index(cfg, req->authorization);
    int a = attest_service_admit(aw->app->attest, j->client, cfg->report_max_pending,
                                 cfg->report_max_pending_per_token);
    if (a != ATTEST_ADMIT_OK) {
        free(j);
        respond_error(aw, c, req, ROUTE_REPORT,
                      a == ATTEST_ADMIT_CLIENT_FULL ? APP_E_REPORTS_PER_TOKEN : APP_E_REPORTS_BUSY, NULL);
        return;
    }
    j->admitted = 1;
    conn_set_owner(c, &j->owner);
    if (uv_queue_work(worker_loop(aw->w), &j->work, report_work, report_done) != 0) {
        conn_set_owner(c, NULL);
        attest_service_release(aw->app->attest, j->client);
        free(j);
        respond_error(aw, c, req, ROUTE_REPORT, APP_E_REPORT_UNSCHEDULED, NULL);
    }
}

/* Refuses the request with e (the job is not queued). */
static void refuse(report_job_t *j, app_worker_t *aw, conn_t *c, http_req_t *req, app_error_t e)
{
    free(j);
    respond_error(aw, c, req, ROUTE_REPORT, e, NULL);
}

/* The job becomes the connection's owner and goes to admission (then the thread pool). */
static void start_job(report_job_t *j, app_worker_t *aw, conn_t *c, http_req_t *req)
{
    j->owner.ops = &REPORT_JOB_OPS;
    j->aw = aw;
    j->c = c;
    j->req = req;
    j->work.data = j;
    admit_and_queue(j, aw, c, req);
}

void report_route(app_worker_t *aw, conn_t *c, http_req_t *req)
{
    int algo = query_signing_algo(req->query);
    if (algo < 0) {
        respond_error(aw, c, req, ROUTE_REPORT, APP_E_INVALID_SIGNING_ALGO, NULL);
        return;
    }
    report_job_t *j = calloc(1, sizeof *j);
    if (!j) {
        respond_error(aw, c, req, ROUTE_REPORT, APP_E_OUT_OF_MEMORY, NULL);
        return;
    }
    char v[PARAM_MAX];
    long n = query_get(req->query, "nonce", v, sizeof v);
    if (n == QUERY_ABSENT) {
        j->server_nonce = 1; /* served from the cache, with a server nonce */
    } else if (n != NONCE_HEX_LEN ||
               hex_decode(j->nonce, sizeof j->nonce, v, NONCE_HEX_LEN) != sizeof j->nonce) {
        refuse(j, aw, c, req, APP_E_INVALID_NONCE);
        return;
    }
    n = query_get(req->query, "signing_address", v, sizeof v);
    if (n != QUERY_ABSENT) {
        const char *ours = algo ? signer_ed25519_pubkey_hex(aw->app->signer)
                                : signer_ecdsa_address(aw->app->signer);
        if (n < 0 || strcasecmp(v, ours) != 0) {
            refuse(j, aw, c, req, APP_E_SIGNING_ADDRESS_UNKNOWN);
            return;
        }
    }
    int tls_flag = -1; /* include_tls_fingerprint: absent, 0 or 1 */
    n = query_get(req->query, "include_tls_fingerprint", v, sizeof v);
    if (n != QUERY_ABSENT) {
        if (n == 4 && !strcasecmp(v, "true"))
            tls_flag = 1;
        else if (n == 5 && !strcasecmp(v, "false"))
            tls_flag = 0;
        else {
            refuse(j, aw, c, req, APP_E_INVALID_TLS_FLAG);
            return;
        }
    }
    /* version=2: what Phala's gateway asks the Phala fork for; an alias of
     * include_tls_fingerprint=true (report_data[0:32] = sha256(address || SPKI sha256), and
     * the report carries tls_cert_fingerprint). version=3: ours, the GPU binding
     * (attest_report_data_v3: the GPU and NVSwitch evidence hashed into report_data[0:32],
     * the TLS key too when the server has one, unless include_tls_fingerprint=false).
     * version=1 is today's report. */
    int ver = 1;
    n = query_get(req->query, "version", v, sizeof v);
    if (n != QUERY_ABSENT) {
        if (n == 1 && v[0] >= '1' && v[0] <= '3')
            ver = v[0] - '0';
        else {
            refuse(j, aw, c, req, APP_E_INVALID_REPORT_VERSION);
            return;
        }
    }
    if (ver == 2 && tls_flag == 0) {
        free(j);
        respond_error(aw, c, req, ROUTE_REPORT, APP_E_INVALID_TLS_FLAG,
                      "include_tls_fingerprint=false contradicts version=2, which binds the TLS key");
        return;
    }
    int has_tls = attest_service_has_tls(aw->app->attest);
    j->tls = (ver == 2 || tls_flag == 1 || (ver == 3 && tls_flag == -1 && has_tls)) ? ATTEST_BIND_TLS : 0;
    /* Never a silently unbound report: a binding asked for without a certificate is a 400. */
    if (j->tls && !has_tls) {
        free(j);
        respond_error(aw, c, req, ROUTE_REPORT, APP_E_TLS_UNAVAILABLE,
                      ver == 2 ? "version=2 (TLS binding) needs TLS_CERT_PATH on this server" : NULL);
        return;
    }
    if (ver == 3)
        j->tls |= ATTEST_BIND_GPU;
    if (j->server_nonce && answer_cached(aw, c, req, algo, j->tls)) {
        free(j);
        return;
    }
    j->algo = algo;
    start_job(j, aw, c, req);
}

/* GET /v1/aci/attestation?nonce= (spec/aci.md §4; formats document §2.1): the nonce is
 * exactly 64 lowercase hex digits or absent (the unchallenged form); anything else is 400
 * invalid_request_error. Every report is a fresh collection, admitted like a client-nonce
 * report. */
void aci_attestation_route(app_worker_t *aw, conn_t *c, http_req_t *req)
{
    report_job_t *j = calloc(1, sizeof *j);
    if (!j) {
        respond_error(aw, c, req, ROUTE_REPORT, APP_E_OUT_OF_MEMORY, NULL);
        return;
    }
    char v[PARAM_MAX];
    long n = query_get(req->query, "nonce", v, sizeof v);
    if (n != QUERY_ABSENT) {
        int ok = n == NONCE_HEX_LEN;
        for (long i = 0; ok && i < n; i++)
            ok = (v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f');
        if (!ok) {
            refuse(j, aw, c, req, APP_E_ACI_INVALID_NONCE);
            return;
        }
        memcpy(j->nonce_hex, v, NONCE_HEX_LEN);
        j->nonce_hex[NONCE_HEX_LEN] = '\0';
    }
    j->aci = 1;
    start_job(j, aw, c, req);
}
