/* GET /v1/attestation/report: parameters checked on the loop, the report built on the libuv
 * thread pool by the attestation service (agent calls, quote signing and hex encoding never
 * run on a loop thread). Without a client nonce the report comes from the service's cache;
 * a cache entry past half its TTL schedules a background refresh from here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "attest/provider.h"
#include "core/hex.h"
#include "core/log.h"
#include "proxy/app.h"

#define APP_KIND_REPORT 0x52455054

/* ---- attestation report (built on the thread pool) ---- */

typedef struct report_job {
    int kind; /* APP_KIND_REPORT: tells jobs from relays in on_abort */
    uv_work_t work;
    app_worker_t *aw;
    conn_t *c;
    http_req_t *req;
    int algo;
    int tls;
    int server_nonce;   /* no client nonce: served from the cache */
    int want_refresh;   /* the cached entry is past half its TTL */
    int refresh_only;   /* a background refresh, no connection */
    uint8_t nonce[32];
    buf_t out;
    int rc;
    char err[256];
} report_job_t;

static void report_work(uv_work_t *w)
{
    report_job_t *j = w->data;
    attest_service_t *s = j->aw->app->attest;
    if (j->refresh_only) {
        attest_service_refresh(s, j->algo, j->tls);
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
        r->kind = APP_KIND_REPORT;
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
            conn_set_app(j->c, NULL);
            app_respond_json(aw, j->c, j->req, ROUTE_REPORT, 200, j->out.data, j->out.len);
        } else {
            char msg[320];
            if (status != 0)
                snprintf(j->err, sizeof j->err, "the report job was cancelled");
            LOG_ERROR("attestation report failed: %s", j->err);
            snprintf(msg, sizeof msg, "attestation report could not be produced: %s", j->err);
            conn_set_app(j->c, NULL);
            app_respond_error(aw, j->c, j->req, ROUTE_REPORT, 503, msg, "attestation_unavailable", NULL);
        }
    }
    if (j->want_refresh && status == 0)
        queue_refresh(aw, j->algo, j->tls);
    else if (j->want_refresh)
        attest_service_refresh_cancelled(aw->app->attest, j->algo, j->tls);
    buf_free(&j->out);
    free(j);
}

void handle_report(app_worker_t *aw, conn_t *c, http_req_t *req)
{
    int algo = app_parse_algo(req->query);
    if (algo < 0) {
        app_respond_error(aw, c, req, ROUTE_REPORT, 400, APP_INVALID_ALGO, "invalid_signing_algo", NULL);
        return;
    }
    report_job_t *j = calloc(1, sizeof *j);
    if (!j) {
        app_respond_error(aw, c, req, ROUTE_REPORT, 503, "out of memory", "server_error", NULL);
        return;
    }
    char v[200];
    long n = app_query_get(req->query, "nonce", v, sizeof v);
    if (n == -1) {
        j->server_nonce = 1; /* served from the cache, with a server nonce */
    } else if (n != 64 || hex_decode(j->nonce, 32, v, 64) != 32) {
        free(j);
        app_respond_error(aw, c, req, ROUTE_REPORT, 400,
                      "nonce must be exactly 64 hex characters (32 bytes)", "invalid_request_error",
                      "invalid_nonce");
        return;
    }
    n = app_query_get(req->query, "signing_address", v, sizeof v);
    if (n != -1) {
        const char *ours = algo ? signer_ed25519_pubkey_hex(aw->app->signer)
                                : signer_ecdsa_address(aw->app->signer);
        if (n < 0 || strcasecmp(v, ours) != 0) {
            free(j);
            app_respond_error(aw, c, req, ROUTE_REPORT, 404, "Signing address not found on this server",
                          "not_found", NULL);
            return;
        }
    }
    n = app_query_get(req->query, "include_tls_fingerprint", v, sizeof v);
    if (n != -1) {
        if (n == 4 && !strcasecmp(v, "true"))
            j->tls = 1;
        else if (n < 0 || !(n == 5 && !strcasecmp(v, "false"))) {
            free(j);
            app_respond_error(aw, c, req, ROUTE_REPORT, 400, "include_tls_fingerprint must be true or false",
                              "invalid_request_error", "invalid_include_tls_fingerprint");
            return;
        }
        if (j->tls && !attest_service_has_tls(aw->app->attest)) {
            free(j);
            app_respond_error(aw, c, req, ROUTE_REPORT, 400,
                              "include_tls_fingerprint=true needs TLS_CERT_PATH on this server",
                              "invalid_request_error", "tls_fingerprint_unavailable");
            return;
        }
    }
    j->kind = APP_KIND_REPORT;
    j->aw = aw;
    j->c = c;
    j->req = req;
    j->algo = algo;
    j->work.data = j;
    conn_set_app(c, j);
    if (uv_queue_work(worker_loop(aw->w), &j->work, report_work, report_done) != 0) {
        conn_set_app(c, NULL);
        free(j);
        app_respond_error(aw, c, req, ROUTE_REPORT, 503, "cannot schedule the report", "server_error", NULL);
    }
}


void report_on_abort(void *job)
{
    ((report_job_t *)job)->c = NULL; /* the pool job finishes and frees itself */
}
