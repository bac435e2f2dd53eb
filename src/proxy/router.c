/* Routing, authentication and the hand-off of each route to its owner (proxy/router.h).
 * Every error is an entry of the error table (proxy/errors.h). */
#include "proxy/router.h"

#include <llhttp.h>
#include <stddef.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/hex.h"
#include "core/log.h"
#include "core/sha.h"
#include "proxy/app.h"
#include "proxy/e2ee.h"
#include "proxy/health_route.h"
#include "proxy/inband.h"
#include "proxy/metrics_route.h"
#include "proxy/multipart.h"
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
#define CACHE_SALT_SIZE 44 /* 43 base64url characters of an HMAC-SHA256 and the NUL */
_Static_assert(CACHE_SALT_SIZE == sodium_base64_ENCODED_LEN(crypto_auth_hmacsha256_BYTES,
                                                            sodium_base64_VARIANT_URLSAFE_NO_PADDING),
               "CACHE_SALT_SIZE");

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

/* The engine routes besides completions, with how each is forwarded and signed. A signed one
 * is relayed byte for byte, hashed over the bytes received and sent, and its record's id is
 * announced in X-Signature-Id (proxy/relay.h): the engine's top-level "id" or, when the answer
 * has none, id_prefix "-" the engine's request id. tokenize and detokenize are not signed
 * (docs/API.md says why). */
enum aux_body { AUX_JSON, AUX_MULTIPART };
enum aux_limit { AUX_LIMIT_DEFAULT, AUX_LIMIT_IMAGE, AUX_LIMIT_AUDIO };
typedef struct aux_route {
    const char *path, *engine_path;
    const char *id_prefix; /* NULL: relayed unsigned */
    enum aux_body body;
    enum aux_limit limit;
} aux_route_t;

static const aux_route_t AUX_ROUTES[] = {
    {"/v1/embeddings", "/v1/embeddings", "emb", AUX_JSON, AUX_LIMIT_DEFAULT},
    {"/v1/rerank", "/v1/rerank", "rerank", AUX_JSON, AUX_LIMIT_DEFAULT},
    {"/v1/score", "/v1/score", "score", AUX_JSON, AUX_LIMIT_DEFAULT},
    {"/v1/images/generations", "/v1/images/generations", "img", AUX_JSON, AUX_LIMIT_IMAGE},
    {"/v1/images/edits", "/v1/images/edits", "img", AUX_MULTIPART, AUX_LIMIT_IMAGE},
    {"/v1/audio/transcriptions", "/v1/audio/transcriptions", "trans", AUX_MULTIPART,
     AUX_LIMIT_AUDIO},
    {"/v1/tokenize", "/tokenize", NULL, AUX_JSON, AUX_LIMIT_DEFAULT},
    {"/v1/detokenize", "/detokenize", NULL, AUX_JSON, AUX_LIMIT_DEFAULT},
};
#define N_AUX_ROUTES (sizeof AUX_ROUTES / sizeof AUX_ROUTES[0])

static const aux_route_t *aux_route_of(strv_t p)
{
    for (size_t i = 0; i < N_AUX_ROUTES; i++)
        if (strv_eq(p, AUX_ROUTES[i].path))
            return &AUX_ROUTES[i];
    return NULL;
}

/* The body limit of an aux route's request (0: the server's, VLLM_PROXY_MAX_REQUEST_SIZE). */
static uint64_t aux_body_limit(const config_t *cfg, const aux_route_t *a)
{
    return a->limit == AUX_LIMIT_IMAGE   ? cfg->max_image_request_size
           : a->limit == AUX_LIMIT_AUDIO ? cfg->max_audio_request_size
                                         : 0;
}

static int route_of(http_req_t *req, int *method_ok)
{
    strv_t p = req->path;
    int get = req->method == HTTP_GET, post = req->method == HTTP_POST;
    int r = ROUTE_OTHER;
    *method_ok = 0;
    if (strv_eq(p, "/")) r = ROUTE_ROOT, *method_ok = get;
    else if (strv_eq(p, "/healthz") || strv_eq(p, "/livez")) r = ROUTE_ROOT, *method_ok = get;
    else if (strv_eq(p, "/version")) r = ROUTE_VERSION, *method_ok = get;
    else if (strv_eq(p, "/v1/chat/completions")) r = ROUTE_CHAT, *method_ok = post;
    else if (strv_eq(p, "/v1/completions")) r = ROUTE_COMPLETIONS, *method_ok = post;
    else if (strv_prefix(p, "/v1/signature/") && p.n > STRLIT("/v1/signature/").n) r = ROUTE_SIGNATURE, *method_ok = get;
    else if (strv_eq(p, "/v1/attestation/report")) r = ROUTE_REPORT, *method_ok = get;
    else if (strv_eq(p, "/v1/aci/attestation")) r = ROUTE_REPORT, *method_ok = get;
    else if (strv_eq(p, "/v1/models")) r = ROUTE_MODELS, *method_ok = get;
    else if (strv_eq(p, "/v1/metrics") || strv_eq(p, "/metrics")) r = ROUTE_METRICS, *method_ok = get;
    else {
        const aux_route_t *a = aux_route_of(p);
        if (a)
            r = a->id_prefix ? ROUTE_INFERENCE : ROUTE_PASSTHROUGH, *method_ok = post;
    }
    return r;
}

static int route_needs_auth(int r)
{
    return r == ROUTE_CHAT || r == ROUTE_COMPLETIONS || r == ROUTE_SIGNATURE ||
           r == ROUTE_REPORT || r == ROUTE_PASSTHROUGH || r == ROUTE_INFERENCE;
}

/* Whether h is in the set (every entry compared); *idx gets the matching entry's index. */
static int token_in(const uint8_t h[SHA256_LEN], const uint8_t (*set)[SHA256_LEN], int n, int *idx)
{
    int found = 0;
    for (int i = 0; i < n; i++) {
        int eq = sodium_memcmp(h, set[i], SHA256_LEN) == 0;
        if (eq && idx)
            *idx = i;
        found |= eq;
    }
    return found;
}

/* The scheme is case-insensitive (RFC 9110 11.1): "bearer" and "BEARER" are "Bearer".
 * *idx: the token's index in TOKEN when it is one of them. */
static int check_auth(const config_t *cfg, strv_t a, int *idx)
{
    *idx = -1;
    if (a.n < BEARER_LEN || strncasecmp(a.p, BEARER, BEARER_LEN) != 0)
        return AUTH_MISSING;
    uint8_t h[SHA256_LEN];
    sha256(a.p + BEARER_LEN, a.n - BEARER_LEN, h);
    if (!token_in(h, cfg->token_hash, cfg->ntokens, idx))
        return AUTH_BAD;
    return token_in(h, cfg->trusted_hash, cfg->ntrusted, NULL) ? AUTH_TRUSTED : AUTH_OK;
}

/* The routes the rate limits apply to: every one that reaches the engine, the attestation
 * service or the signature store. Not `/`, `/version` and the metrics (probes, scrapers). */
static int route_is_limited(int r)
{
    return route_needs_auth(r) || r == ROUTE_MODELS;
}

/* RATE_LIMIT_*: the client address's bucket first (before authentication, so guessing tokens
 * is limited too), then the token's. Decided once per request, at its headers; a refusal is
 * kept in req->app_limit (the error + 1) and req->app_retry, and counted. */
static void apply_limits(app_worker_t *aw, http_req_t *req, int tok)
{
    ratelimit_t *rl = aw->app->limits;
    if (!rl || !route_is_limited(req->app_route))
        return;
    uint64_t now_us = clock_mono_ns() / 1000;
    unsigned retry = 0;
    if (!ratelimit_ip(rl, &req->client, now_us, &retry)) {
        req->app_limit = 1 + APP_E_RATE_LIMITED_IP; /* counted when answered (respond.c) */
    } else if (req->app_auth > 0 && tok >= 0 && !ratelimit_token(rl, (unsigned)tok, now_us, &retry)) {
        req->app_limit = 1 + APP_E_RATE_LIMITED_TOKEN;
    }
    req->app_retry = retry;
}

/* The answer a request gets before any handler runs (unknown path, wrong method, no valid
 * token), or -1 when its route's handler takes it. */
static int early_error(const http_req_t *req, int method_ok)
{
    if (req->app_route == ROUTE_OTHER)
        return APP_E_NOT_FOUND;
    if (!method_ok)
        return APP_E_METHOD_NOT_ALLOWED;
    if (req->app_limit)
        return req->app_limit - 1;
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
    const config_t *cfg = aw->app->cfg;
    int ok, tok = -1;
    respond_request_id(req); /* the X-Request-Id of whatever answers it, and the engine's id */
    client_addr_resolve(cfg, &req->peer, req->x_forwarded_for, req->x_real_ip, &req->client);
    req->app_route = route_of(req, &ok);
    int needs = route_needs_auth(req->app_route) &&
                !(req->app_route == ROUTE_REPORT && cfg->public_attestation);
    req->app_auth = needs ? check_auth(cfg, req->authorization, &tok) : AUTH_NONE;
    if (ok)
        apply_limits(aw, req, tok);
    if (!req->has_body)
        return HTTP_BODY_READ;
    const aux_route_t *a = req->app_route == ROUTE_INFERENCE ? aux_route_of(req->path) : NULL;
    if (a)
        req->body_limit = aux_body_limit(aw->app->cfg, a); /* the server enforces it */
    int e = early_error(req, ok);
    if (e >= 0) {
        respond_error_retry(aw, c, req, req->app_route, (app_error_t)e, NULL, req->app_retry);
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

/* After e2ee_request (rc, its output and error): answers the error, or takes the decrypted
 * body and starts the Redis replay claim. 0 (forward now), 1 (held by the claim), -1 (answered). */
static int e2ee_decrypted(app_worker_t *aw, conn_t *c, http_req_t *req, int route, relay_req_t *rr,
                          int rc, buf_t *out, app_error_t e, const char *msg)
{
    buf_free(&rr->own_body);
    if (rc != 0) {
        e2ee_wipe_buf(out);
        respond_error(aw, c, req, route, e, msg[0] ? msg : NULL);
        return -1;
    }
    rr->own_body = *out;
    *out = (buf_t)BUF_INIT;
    size_t kn;
    const char *key = e2ee_replay_key(rr->e2ee, &kn);
    if (!key || !aw->redis)
        return 0;
    replay_job_t *j = malloc(sizeof *j);
    if (!j)
        return 0; /* the memory claim stands */
    *j = (replay_job_t){{&REPLAY_JOB_OPS}, aw, c, req, *rr};
    conn_set_owner(c, &j->owner);
    if (rstore_claim(aw->redis, key, kn, e2ee_replay_ttl(), on_replay_claim, j) == 0) {
        rr->own_body = (buf_t)BUF_INIT;
        rr->e2ee = NULL;
        return 1;
    }
    conn_set_owner(c, NULL);
    free(j);
    return 0; /* Redis not usable now (breaker open): the memory claim stands */
}

/* A body above this many bytes is decrypted on the E2EE crypto threads (e2ee_pool.h): NEAR and
 * ACI spend one ECDH per encrypted field (~50-70 us), so a body of a few hundred fields would
 * hold the loop for milliseconds; below it the handoff costs more than it saves. */
#define E2EE_DECRYPT_INLINE_MAX (8u << 10)

/* A request being decrypted on a crypto thread. The thread reads only what the job owns (a
 * copy of the body and of the E2EE headers and path), so a client that leaves does not pull
 * anything from under it: on_abort only forgets the connection, and done frees the job. */
typedef struct decrypt_job {
    e2ee_job_t base;
    conn_owner_t owner;
    app_worker_t *aw;
    conn_t *c;
    http_req_t *req; /* the connection's: used on the loop only */
    http_req_t copy; /* e2ee[], e2ee_present, path: into text */
    buf_t text, body;
    int route, rc;
    relay_req_t rr;
    buf_t out;
    e2ee_sess_t *sess;
    app_error_t e;
    char msg[E2EE_MSG_MAX];
} decrypt_job_t;

static void decrypt_job_on_abort(conn_owner_t *o, conn_t *c)
{
    (void)c;
    ((decrypt_job_t *)((char *)o - offsetof(decrypt_job_t, owner)))->c = NULL;
}

static const conn_owner_ops_t DECRYPT_JOB_OPS = {"e2ee-decrypt", decrypt_job_on_abort, NULL};

static void decrypt_job_work(e2ee_job_t *b)
{
    decrypt_job_t *j = (decrypt_job_t *)b;
    j->msg[0] = '\0';
    j->rc = e2ee_request(j->aw->app, &j->copy, (strv_t){j->body.data, j->body.len}, &j->out,
                         &j->sess, &j->e, j->msg);
}

static void decrypt_job_free(decrypt_job_t *j)
{
    e2ee_wipe_buf(&j->out);
    e2ee_sess_free(j->sess);
    buf_free(&j->body);
    buf_free(&j->text);
    free(j);
}

static void decrypt_job_done(e2ee_job_t *b)
{
    decrypt_job_t *j = (decrypt_job_t *)b;
    if (!j->c) { /* the client left: nothing is forwarded */
        decrypt_job_free(j);
        return;
    }
    conn_set_owner(j->c, NULL);
    if (!b->ran) { /* shutting down */
        j->rc = -1;
        j->e = APP_E_E2EE_BUSY;
        j->msg[0] = '\0';
    }
    j->rr.e2ee = j->rc == 0 ? j->sess : NULL;
    if (j->rc == 0)
        j->sess = NULL;
    if (e2ee_decrypted(j->aw, j->c, j->req, j->route, &j->rr, j->rc, &j->out, j->e, j->msg) == 0)
        relay_start(j->aw, j->c, j->req, &j->rr);
    else
        e2ee_sess_free(j->rr.e2ee), j->rr.e2ee = NULL;
    j->rr.e2ee = NULL;
    j->rr.own_body = (buf_t)BUF_INIT;
    decrypt_job_free(j);
}

/* Queues the decryption of a large body: 1 (held until done), 0 (not queued: do it inline),
 * -1 (answered: the queue is full). */
static int decrypt_offload(app_worker_t *aw, conn_t *c, http_req_t *req, int route,
                           relay_req_t *rr, strv_t in)
{
    decrypt_job_t *j = calloc(1, sizeof *j);
    if (!j)
        return 0;
    j->base.work = decrypt_job_work;
    j->base.done = decrypt_job_done;
    j->owner.ops = &DECRYPT_JOB_OPS;
    j->aw = aw;
    j->c = c;
    j->req = req;
    j->route = route;
    size_t tn = req->path.n;
    for (int i = 0; i < HTTP_E2EE_N; i++)
        tn += req->e2ee[i].n;
    if (buf_reserve(&j->text, tn + 1) != 0 || buf_append(&j->body, in.p ? in.p : "", in.n) != 0) {
        decrypt_job_free(j);
        return 0;
    }
    j->copy.e2ee_present = req->e2ee_present;
    for (int i = 0; i < HTTP_E2EE_N; i++) {
        j->copy.e2ee[i] = (strv_t){req->e2ee[i].p ? j->text.data + j->text.len : NULL,
                                   req->e2ee[i].n};
        if (req->e2ee[i].n)
            (void)buf_append(&j->text, req->e2ee[i].p, req->e2ee[i].n); /* reserved */
    }
    j->copy.path = (strv_t){j->text.data + j->text.len, req->path.n};
    (void)buf_append(&j->text, req->path.p, req->path.n);
    j->rr = *rr;
    conn_set_owner(c, &j->owner);
    if (e2ee_port_submit(aw->e2ee_port, &j->base) != 0) {
        conn_set_owner(c, NULL);
        j->rr.own_body = (buf_t)BUF_INIT;
        decrypt_job_free(j);
        respond_error(aw, c, req, route, APP_E_E2EE_BUSY, NULL);
        buf_free(&rr->own_body);
        return -1;
    }
    rr->own_body = (buf_t)BUF_INIT; /* the job's rr has it */
    return 1;
}

/* An E2EE request (proxy/e2ee.h): the body to forward becomes the decrypted one. 0 (forward
 * now), 1 (held: decrypting on a crypto thread, or until the Redis replay claim answers; the
 * callback forwards or refuses), or -1 after the format's error answer (then nothing reaches
 * the engine). */
static int e2ee_rewrite(app_worker_t *aw, conn_t *c, http_req_t *req, int route, relay_req_t *rr)
{
    strv_t in = rr->own_body.data ? (strv_t){rr->own_body.data, rr->own_body.len} : rr->body;
    if (aw->e2ee_port && in.n > E2EE_DECRYPT_INLINE_MAX) {
        int q = decrypt_offload(aw, c, req, route, rr, in);
        if (q != 0)
            return q;
    }
    buf_t out = BUF_INIT;
    app_error_t e;
    char msg[E2EE_MSG_MAX];
    msg[0] = '\0';
    int rc = e2ee_request(aw->app, req, in, &out, &rr->e2ee, &e, msg);
    return e2ee_decrypted(aw, c, req, route, rr, rc, &out, e, msg);
}

/* Prefix-cache isolation (CACHE_SALT_SECRET): the engine's cache_salt for this caller,
 * base64url without padding (43 characters: vLLM accepts at most 128 and none of '@', '/',
 * '\\', NUL) of HMAC-SHA256(key = the secret, message = the bearer token as sent). */
static void cache_salt_for(const config_t *cfg, strv_t authorization, char out[CACHE_SALT_SIZE])
{
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    strv_t tok = {authorization.p + BEARER_LEN, authorization.n - BEARER_LEN}; /* authenticated */
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)cfg->cache_salt_secret,
                                strlen(cfg->cache_salt_secret));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)tok.p, tok.n);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2base64(out, CACHE_SALT_SIZE, mac, sizeof mac, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(&st, sizeof st);
    sodium_memzero(mac, sizeof mac);
}

/* What the request gets of in-band signatures (proxy/inband.h); -1 after a 400 for a header
 * value other than 0 or 1. */
static int inband_of(app_worker_t *aw, conn_t *c, http_req_t *req, int route)
{
    enum inband_want w = inband_want(aw->app->cfg->inband_signatures, req->has_x_signature_inband,
                                     req->x_signature_inband.p, req->x_signature_inband.n);
    if (w == INBAND_WANT_INVALID) {
        respond_error(aw, c, req, route, APP_E_INVALID_SIGNATURE_INBAND, NULL);
        return -1;
    }
    return (int)w;
}

static void handle_completion(app_worker_t *aw, conn_t *c, http_req_t *req, int route)
{
    reqjson_t rj;
    relay_req_t rr = {.route = route, .kind = RELAY_SIGNED, .method = "POST", .path = req->path,
                      .query = STRLIT(""), .body = {req->body.data, req->body.len},
                      .own_body = BUF_INIT, .inband = inband_of(aw, c, req, route)};
    if (rr.inband < 0)
        return;
    char err[REQJSON_ERR_MAX], salt[CACHE_SALT_SIZE];
    reqjson_opts_t opts = {0};
    if (aw->app->cfg->cache_salt_secret[0]) {
        cache_salt_for(aw->app->cfg, req->authorization, salt);
        opts.cache_salt = salt;
    }
    int rc = reqjson_inspect_opts(req->body.data ? req->body.data : "", req->body.len, &opts, &rj,
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
    const aux_route_t *a = aux_route_of(req->path);
    if (a)
        rr.path = (strv_t){a->engine_path, strlen(a->engine_path)};
    relay_start(aw, c, req, &rr);
}

/* The other inference routes (AUX_ROUTES with an id_prefix): the body is checked (strict
 * JSON, or multipart/form-data framing) but forwarded exactly as received, and the answer is
 * signed as a completion's is, over the bytes received and sent. */
static void handle_inference(app_worker_t *aw, conn_t *c, http_req_t *req, int route)
{
    const aux_route_t *a = aux_route_of(req->path);
    const char *body = req->body.data ? req->body.data : "";
    relay_req_t rr = {.route = route, .kind = RELAY_SIGNED, .method = "POST",
                      .path = {a->engine_path, strlen(a->engine_path)}, .query = req->query,
                      .body = {req->body.data, req->body.len}, .own_body = BUF_INIT,
                      .id_prefix = a->id_prefix, .inband = inband_of(aw, c, req, route)};
    if (rr.inband < 0)
        return;
    if (a->body == AUX_MULTIPART) {
        const char *b, *why = NULL;
        size_t bn;
        if (multipart_boundary(req->content_type.p, req->content_type.n, &b, &bn) != 0) {
            respond_error(aw, c, req, route, APP_E_INVALID_MULTIPART,
                          "Content-Type must be multipart/form-data with a boundary (1 to 70 "
                          "characters RFC 2046 allows)");
            return;
        }
        if (multipart_check(body, req->body.len, b, bn, &why) != 0) {
            char msg[REQJSON_ERR_MAX];
            snprintf(msg, sizeof msg, "invalid multipart/form-data body: %s", why);
            respond_error(aw, c, req, route, APP_E_INVALID_MULTIPART, msg);
            return;
        }
    } else {
        reqjson_t rj;
        char err[REQJSON_ERR_MAX];
        int rc = reqjson_inspect(body, req->body.len, &rj, NULL, err, sizeof err);
        if (rc != 0) {
            respond_error(aw, c, req, route,
                          rc == REQJSON_NOMEM ? APP_E_OUT_OF_MEMORY : APP_E_INVALID_JSON,
                          rc == REQJSON_NOMEM ? NULL : err);
            return;
        }
    }
    if (request_hash(aw, c, req, route, rr.req_hash) != 0)
        return;
    /* E2EE on embeddings, rerank, score and image generations (on_request refused it on the
     * other routes): the body decrypted into own_body, the answer encrypted by the relay and
     * signed over the ciphertext under id_prefix "-" the request id, sent in X-Signature-Id. */
    if (req->e2ee_present) {
        if (e2ee_rewrite(aw, c, req, route, &rr) != 0)
            return;
        relay_start(aw, c, req, &rr);
        return;
    }
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
    if (strv_eq(req->path, "/healthz"))
        healthz_route(aw, c, req, route);
    else if (strv_eq(req->path, "/livez"))
        livez_route(aw, c, req, route);
    else
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
    [ROUTE_METRICS] = handle_metrics,     [ROUTE_INFERENCE] = handle_inference,
    [ROUTE_OTHER] = NULL,
};

/* The routes whose requests reach the engine. */
static int route_is_engine(int r)
{
    return r == ROUTE_CHAT || r == ROUTE_COMPLETIONS || r == ROUTE_MODELS ||
           r == ROUTE_PASSTHROUGH || r == ROUTE_INFERENCE;
}

static void on_request(conn_t *c, http_req_t *req)
{
    app_worker_t *aw = worker_user(conn_worker(c));
    int route = req->app_route, ok;
    route_of(req, &ok);
    int e = early_error(req, ok);
    if (e >= 0)
        respond_error_retry(aw, c, req, route, (app_error_t)e, NULL, req->app_retry);
    else if (req->e2ee_present && route_is_engine(route) && e2ee_route_of(req->path) < 0)
        /* Fail closed: E2EE is handled on the routes whose fields a format defines
         * (proxy/e2ee.h: chat, completions, embeddings, rerank, score), so elsewhere a request
         * with E2EE headers is refused rather than relayed with its ciphertext as the prompt
         * (issue 10). */
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
    char rid[HTTP_REQ_ID_MAX + 1], client[ADDR_TEXT_MAX];
    snprintf(rid, sizeof rid, "%s", conn_request_id(c)); /* the answer's, kept past it */
    addr_format(conn_peer(c), client);
    size_t out = respond_error_unlogged(c, map[why], NULL);
    LOG_INFO("rejected w=%d status=%d reason=%s out=%zu request_id=%s client=%s%s%s%s",
             worker_id(conn_worker(c)), app_error_info(map[why])->status, reject_names[why], out,
             rid, client, detail ? " detail=\"" : "", detail ? detail : "", detail ? "\"" : "");
}

const http_handler_t app_http_handler = {on_headers, on_request, on_reject};
