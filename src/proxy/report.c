/* GET /v1/attestation/report: parameters checked on the loop, the report built on the libuv
 * thread pool (quote signing and hex encoding never run on a loop thread). */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "attest/attest.h"
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
    int server_nonce;
    uint8_t nonce[32];
    buf_t out;
    int rc;
} report_job_t;

static void report_work(uv_work_t *w)
{
    report_job_t *j = w->data;
    signer_t *s = j->aw->app->signer;
    attest_identity_t id;
    if (j->algo == 0) {
        id.signing_address = signer_ecdsa_address(s);
        id.signing_algo = "ecdsa";
        id.id_bytes = signer_ecdsa_address_bytes(s);
        id.id_len = 20;
        id.signing_public_key = signer_ecdsa_pubkey_hex(s);
    } else {
        id.signing_address = signer_ed25519_pubkey_hex(s);
        id.signing_algo = "ed25519";
        id.id_bytes = signer_ed25519_pubkey(s);
        id.id_len = 32;
        id.signing_public_key = signer_ed25519_pubkey_hex(s);
    }
    j->rc = attest_report_json(j->aw->app->attest, &id, j->nonce, &j->out);
    if (j->rc == 0 && j->out.len > 1 && j->out.data[j->out.len - 1] == '}') {
        /* Say where the nonce came from: a server nonce proves no freshness to the client. */
        j->out.len--;
        buf_printf(&j->out, ",\"nonce_source\":\"%s\"}", j->server_nonce ? "server" : "client");
    }
}

static void report_done(uv_work_t *w, int status)
{
    report_job_t *j = w->data;
    if (j->c) {
        app_worker_t *aw = j->aw;
        if (status == 0 && j->rc == 0) {
            M_ADD(aw->m.reports, 1);
            conn_set_app(j->c, NULL);
            app_respond_json(aw, j->c, j->req, ROUTE_REPORT, 200, j->out.data, j->out.len);
        } else {
            LOG_ERROR("attestation report (simulated) failed");
            conn_set_app(j->c, NULL);
            app_respond_error(aw, j->c, j->req, ROUTE_REPORT, 503, "attestation report could not be produced",
                          "attestation_unavailable", NULL);
        }
    }
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
        randombytes_buf(j->nonce, 32);
        j->server_nonce = 1;
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
