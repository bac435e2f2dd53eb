/* Routing, authentication and the hand-off of each route to its owner (proxy/router.h).
 * Every error is an entry of the error table (proxy/errors.h). */
#include "proxy/router.h"

#include <llhttp.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/hex.h"
#include "core/log.h"
#include "core/sha.h"
#include "proxy/app.h"
#include "proxy/e2ee.h"
#include "proxy/metrics_route.h"
#include "proxy/relay.h"
#include "proxy/report_route.h"
#include "proxy/reqjson.h"
#include "proxy/respond.h"
#include "proxy/signature_route.h"

#define BEARER "Bearer "
#define BEARER_LEN (sizeof BEARER - 1)
#define STRLIT(s) ((strv_t){(s), sizeof(s) - 1})
#define REQJSON_ERR_MAX 200
#define VERSION_JSON_MAX 200

enum { AUTH_NONE = 0, AUTH_OK = 1, AUTH_TRUSTED = 2, AUTH_MISSING = -1, AUTH_BAD = -2 };

static int strv_eq(strv_t v, const char *s)
{
    size_t n = strlen(s);
    return v.n == n && memcmp(v.p, s, n) == 0;
}

static int strv_prefix(strv_t v, const char *s)
{
    size_t n = strlen(s);
    return v.n >= n && memcmp(v.p, s, n) == 0;
}

/* ---- routing and auth ---- */

static int route_of(http_req_t *req, int *method_ok)
{
    strv_t p = req->path;
    int get = req->method == HTTP_GET, post = req->method == HTTP_POST;
    int r = ROUTE_OTHER;
    *method_ok = 0;
    if (strv_eq(p, "/")) r = ROUTE_ROOT, *method_ok = get;
    else if (strv_eq(p, "/version")) r = ROUTE_VERSION, *method_ok = get;
    else if (strv_eq(p, "/v1/chat/completions")) r = ROUTE_CHAT, *method_ok = post;
    else if (strv_eq(p, "/v1/completions")) r = ROUTE_COMPLETIONS, *method_ok = post;
    else if (strv_prefix(p, "/v1/signature/") && p.n > STRLIT("/v1/signature/").n) r = ROUTE_SIGNATURE, *method_ok = get;
    else if (strv_eq(p, "/v1/attestation/report")) r = ROUTE_REPORT, *method_ok = get;
    else if (strv_eq(p, "/v1/aci/attestation")) r = ROUTE_REPORT, *method_ok = get;
    else if (strv_eq(p, "/v1/models")) r = ROUTE_MODELS, *method_ok = get;
    else if (strv_eq(p, "/v1/metrics")) r = ROUTE_METRICS, *method_ok = get;
    else if (strv_eq(p, "/v1/embeddings") || strv_eq(p, "/v1/tokenize") ||
             strv_eq(p, "/v1/detokenize") || strv_eq(p, "/v1/rerank") || strv_eq(p, "/v1/score"))
        r = ROUTE_PASSTHROUGH, *method_ok = post;
    return r;
}

static int route_needs_auth(int r)
{
    return r == ROUTE_CHAT || r == ROUTE_COMPLETIONS || r == ROUTE_SIGNATURE ||
           r == ROUTE_REPORT || r == ROUTE_PASSTHROUGH;
}

static int token_in(const uint8_t h[SHA256_LEN], const uint8_t (*set)[SHA256_LEN], int n)
{
    int found = 0;
    for (int i = 0; i < n; i++)
        found |= sodium_memcmp(h, set[i], SHA256_LEN) == 0;
    return found;
}

/* The scheme is case-insensitive (RFC 9110 11.1): "bearer" and "BEARER" are "Bearer". */
static int check_auth(const config_t *cfg, strv_t a)
{
    if (a.n < BEARER_LEN || strncasecmp(a.p, BEARER, BEARER_LEN) != 0)
        return AUTH_MISSING;
    uint8_t h[SHA256_LEN];
    sha256(a.p + BEARER_LEN, a.n - BEARER_LEN, h);
    if (!token_in(h, cfg->token_hash, cfg->ntokens))
        return AUTH_BAD;
    return token_in(h, cfg->trusted_hash, cfg->ntrusted) ? AUTH_TRUSTED : AUTH_OK;
}

/* The answer a request gets before any handler runs (unknown path, wrong method, no valid
 * token), or -1 when its route's handler takes it. */
static int early_error(const http_req_t *req, int method_ok)
{
    if (req->app_route == ROUTE_OTHER)
        return APP_E_NOT_FOUND;
    if (!method_ok)
        return APP_E_METHOD_NOT_ALLOWED;
    if (req->app_auth < 0)
        return req->app_auth == AUTH_MISSING ? APP_E_AUTH_MISSING : APP_E_AUTH_INVALID;
    return -1;
}

/* Nothing is held for a body no handler will read. A request with a body that is answered
 * 404/405/401 is answered now, at the headers, and its body is never read (the connection then
 * closes after a short linger); a body sent to a route that takes none (the GET routes) is read
 * and dropped. Requests without a body take the usual path, so keep-alive clients that send
 * e.g. `GET` with `Content-Length: 0` keep their connection. */
static int on_headers(conn_t *c, http_req_t *req)
{
    app_worker_t *aw = worker_user(conn_worker(c));
    int ok;
    req->app_route = route_of(req, &ok);
    int needs = route_needs_auth(req->app_route) &&
                !(req->app_route == ROUTE_REPORT && aw->app->cfg->public_attestation);
    req->app_auth = needs ? check_auth(aw->app->cfg, req->authorization) : AUTH_NONE;
    if (!req->has_body)
        return HTTP_BODY_READ;
    int e = early_error(req, ok);
    if (e >= 0) {
        respond_error(aw, c, req, req->app_route, (app_error_t)e, NULL);
        return HTTP_BODY_ANSWERED;
    }
    return req->method == HTTP_POST ? HTTP_BODY_READ : HTTP_BODY_DISCARD;
}

/* ---- engine routes ---- */

/* The request half of the signed text: a trusted caller's X-Request-Hash (64 hex, lower-cased)
 * or sha256 of the body as received. 0, or -1 after a 400. */
static int request_hash(app_worker_t *aw, conn_t *c, http_req_t *req, int route,
                        char out[SIG_HASH_HEX_LEN + 1])
{
    strv_t xh = req->x_request_hash;
    if (xh.n && req->app_auth != AUTH_TRUSTED) {
        LOG_DEBUG("X-Request-Hash ignored: caller is not trusted to set it");
        xh.n = 0;
    }
    if (xh.n) {
        if (xh.n != SIG_HASH_HEX_LEN || !hex_is_hex(xh.p, xh.n)) {
            respond_error(aw, c, req, route, APP_E_INVALID_REQUEST_HASH, NULL);
            return -1;
        }
        for (int i = 0; i < SIG_HASH_HEX_LEN; i++)
            out[i] = (char)(xh.p[i] | 0x20);
        out[SIG_HASH_HEX_LEN] = '\0';
        LOG_INFO("Using client-provided request hash: %s", out);
    } else {
        sha256_hex(req->body.data ? req->body.data : "", req->body.len, out);
        LOG_DEBUG("Calculated request hash: %s", out);
    }
    return 0;
}

/* A Redis replay claim in flight (Dstack v2, ACI v2 with REDIS_HOST): the request is held by
 * this owner until SET NX answers. The claim's callback always runs and frees the job; when
 * the client goes away first, on_abort only forgets the connection. */
typedef struct replay_job {
    conn_owner_t owner;
    app_worker_t *aw;
    conn_t *c;
    http_req_t *req;
    relay_req_t rr;
} replay_job_t;

static void replay_job_on_abort(conn_owner_t *o, conn_t *c)
{
    (void)c;
    ((replay_job_t *)o)->c = NULL;
}

static const conn_owner_ops_t REPLAY_JOB_OPS = {"e2ee-replay", replay_job_on_abort, NULL};

static void replay_job_drop(replay_job_t *j)
{
    e2ee_wipe_buf(&j->rr.own_body);
    e2ee_sess_free(j->rr.e2ee);
    j->rr.e2ee = NULL;
}

/* Redis down or slow: this replica's memory claim already stands, so the request goes on
 * (the same fallback as the signature store; redis.c logs the outage once). */
static void on_replay_claim(void *ud, int rc)
{
    replay_job_t *j = ud;
    if (!j->c) {
        replay_job_drop(j);
        free(j);
        return;
    }
    conn_set_owner(j->c, NULL);
    if (rc == RSTORE_EXISTS) {
        replay_job_drop(j);
        respond_error(j->aw, j->c, j->req, j->rr.route, APP_E_E2EE_REPLAY_DETECTED,
                      "this request was already used within the replay window (claimed on "
                      "another replica)");
    } else {
        if (rc != RSTORE_CLAIMED)
            LOG_DEBUG("e2ee: Redis replay claim failed; this replica's memory claim stands");
        relay_start(j->aw, j->c, j->req, &j->rr);
    }
    free(j);
}

/* An E2EE request (proxy/e2ee.h): the body to forward becomes the decrypted one. 0 (forward
 * now), 1 (held until the Redis replay claim answers; the callback forwards or refuses), or
 * -1 after the format's error answer (then nothing reaches the engine). */
static int e2ee_rewrite(app_worker_t *aw, conn_t *c, http_req_t *req, int route, relay_req_t *rr)
{
    buf_t out = BUF_INIT;
    app_error_t e;
    char msg[E2EE_MSG_MAX];
    strv_t in = rr->own_body.data ? (strv_t){rr->own_body.data, rr->own_body.len} : rr->body;
    int rc = e2ee_request(aw->app, req, in, &out, &rr->e2ee, &e, msg);
    buf_free(&rr->own_body);
    if (rc != 0) {
        respond_error(aw, c, req, route, e, msg[0] ? msg : NULL);
        return -1;
    }
    rr->own_body = out;
    size_t kn;
    const char *key = e2ee_replay_key(rr->e2ee, &kn);
    if (!key || !aw->redis)
        return 0;
    replay_job_t *j = malloc(sizeof *j);
    if (!j)
        return 0; /* the memory claim stands */
    *j = (replay_job_t){{&REPLAY_JOB_OPS}, aw, c, req, *rr};
    conn_set_owner(c, &j->owner);
    if (rstore_claim(aw->redis, key, kn, E2EE_REPLAY_TTL_S, on_replay_claim, j) == 0) {
        rr->own_body = (buf_t)BUF_INIT;
        rr->e2ee = NULL;
        return 1;
    }
    conn_set_owner(c, NULL);
    free(j);
    return 0; /* Redis not usable now (breaker open): the memory claim stands */
}

static void handle_completion(app_worker_t *aw, conn_t *c, http_req_t *req, int route)
{
    reqjson_t rj;
    relay_req_t rr = {.route = route, .kind = RELAY_SIGNED, .method = "POST", .path = req->path,
                      .query = STRLIT(""), .body = {req->body.data, req->body.len},
                      .own_body = BUF_INIT};
    char err[REQJSON_ERR_MAX];
    int rc = reqjson_inspect(req->body.data ? req->body.data : "", req->body.len, &rj,
                             &rr.own_body, err, sizeof err);
    if (rc != 0) {
        buf_free(&rr.own_body);
        respond_error(aw, c, req, route, rc == REQJSON_NOMEM ? APP_E_OUT_OF_MEMORY : APP_E_INVALID_JSON,
                      rc == REQJSON_NOMEM ? NULL : err);
        return;
    }
    if (!rj.rewritten)
        buf_free(&rr.own_body);
    if (request_hash(aw, c, req, route, rr.req_hash) != 0) {
        buf_free(&rr.own_body);
        return;
    }
    if (req->e2ee_present && e2ee_rewrite(aw, c, req, route, &rr) != 0)
        return; /* answered, or held by the Redis replay claim */
    relay_start(aw, c, req, &rr);
}

static void handle_passthrough(app_worker_t *aw, conn_t *c, http_req_t *req, int route)
{
    relay_req_t rr = {.route = route, .kind = RELAY_PASS,
                      .method = req->method == HTTP_GET ? "GET" : "POST", .path = req->path,
                      .query = req->query, .body = {req->body.data, req->body.len},
                      .own_body = BUF_INIT};
    if (strv_eq(rr.path, "/v1/tokenize"))
        rr.path = STRLIT("/tokenize");
    else if (strv_eq(rr.path, "/v1/detokenize"))
        rr.path = STRLIT("/detokenize");
    relay_start(aw, c, req, &rr);
}

static void handle_version(app_worker_t *aw, conn_t *c, http_req_t *req, int route)
{
    char b[VERSION_JSON_MAX];
    int n = snprintf(b, sizeof b, "{\"name\":\"vllm-proxy\",\"version\":\"%s\",\"attestation\":\"%s\"}",
                     config_version(), config_attest_mode_name(aw->app->cfg->attestation));
    respond_json(aw, c, req, route, 200, b, (size_t)n);
}

static void handle_root(app_worker_t *aw, conn_t *c, http_req_t *req, int route)
{
    respond_json(aw, c, req, route, 200, "{}", 2);
}

static void handle_signature(app_worker_t *aw, conn_t *c, http_req_t *req, int route)
{
    (void)route;
    signature_route(aw, c, req);
}

static void handle_report(app_worker_t *aw, conn_t *c, http_req_t *req, int route)
{
    (void)route;
    if (strv_eq(req->path, "/v1/aci/attestation"))
        aci_attestation_route(aw, c, req);
    else
        report_route(aw, c, req);
}

static void handle_metrics(app_worker_t *aw, conn_t *c, http_req_t *req, int route)
{
    (void)route;
    metrics_route(aw, c, req);
}

/* Who answers each route once it is known, allowed and authenticated. */
typedef void route_fn(app_worker_t *aw, conn_t *c, http_req_t *req, int route);
static route_fn *const ROUTES[ROUTE_N] = {
    [ROUTE_ROOT] = handle_root,           [ROUTE_VERSION] = handle_version,
    [ROUTE_CHAT] = handle_completion,     [ROUTE_COMPLETIONS] = handle_completion,
    [ROUTE_SIGNATURE] = handle_signature, [ROUTE_REPORT] = handle_report,
    [ROUTE_MODELS] = handle_passthrough,  [ROUTE_PASSTHROUGH] = handle_passthrough,
    [ROUTE_METRICS] = handle_metrics,     [ROUTE_OTHER] = NULL,
};

/* The routes whose requests reach the engine. */
static int route_is_engine(int r)
{
    return r == ROUTE_CHAT || r == ROUTE_COMPLETIONS || r == ROUTE_MODELS || r == ROUTE_PASSTHROUGH;
}

static void on_request(conn_t *c, http_req_t *req)
{
    app_worker_t *aw = worker_user(conn_worker(c));
    int route = req->app_route, ok;
    route_of(req, &ok);
    int e = early_error(req, ok);
    if (e >= 0)
        respond_error(aw, c, req, route, (app_error_t)e, NULL);
    else if (req->e2ee_present && route_is_engine(route) && route != ROUTE_CHAT)
        /* Fail closed: E2EE is handled on chat completions only (proxy/e2ee.h), so elsewhere
         * a request with E2EE headers is refused rather than relayed with its ciphertext as
         * the prompt (issue 10). */
        respond_error(aw, c, req, route, e2ee_route_refusal(req), NULL);
    else
        ROUTES[route](aw, c, req, route);
}

/* The transport refused the request (http_reject_t): the table's answer, counted by cause
 * and logged with the parser's reason (fixed text; the request's bytes are never logged).
 * The request's fields may be incomplete, so the line names no path. */
static void on_reject(conn_t *c, http_reject_t why)
{
    static const app_error_t map[HTTP_REJECT_N] = {
        [HTTP_REJECT_TIMEOUT] = APP_E_REQUEST_TIMEOUT,
        [HTTP_REJECT_BODY_TOO_LARGE] = APP_E_BODY_TOO_LARGE,
        [HTTP_REJECT_HEAD_TOO_LARGE] = APP_E_HEAD_TOO_LARGE,
        [HTTP_REJECT_DUPLICATE_HEADER] = APP_E_DUPLICATE_HEADER,
        [HTTP_REJECT_MALFORMED] = APP_E_MALFORMED_HTTP,
    };
    app_worker_t *aw = worker_user(conn_worker(c));
    M_ADD(aw->m.rejected[why], 1);
    const char *detail = conn_reject_detail(c);
    LOG_INFO("rejected w=%d status=%d reason=%s%s%s%s", worker_id(conn_worker(c)),
             app_error_info(map[why])->status, reject_names[why], detail ? " detail=\"" : "",
             detail ? detail : "", detail ? "\"" : "");
    respond_error_unlogged(c, map[why], NULL);
}

const http_handler_t app_http_handler = {on_headers, on_request, on_reject};
