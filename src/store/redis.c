/* Redis write-through layer of the signature store, one hiredis async connection per worker
 * loop. The contract is in redis.h; this file is the connection state machine: resolve (thread
 * pool) -> connect -> AUTH/SELECT/PING -> ready, with one deadline timer over the oldest
 * unanswered command, a circuit breaker, and reconnection with capped exponential backoff. */
#include "store/redis.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libuv.h>

#include "core/log.h"

#define RS_BACKOFF_FIRST_MS 100u
#define RS_BACKOFF_MAX_MS 2000u
#define RS_MAX_KEY 512u

enum { CMD_HANDSHAKE, CMD_PING_READY, CMD_GET, CMD_SET, CMD_CLAIM };

typedef struct rs_cmd {
    struct rs_cmd *prev, *next; /* outstanding commands, in send order */
    rstore_t *r;
    int kind;
    int probe;                  /* the one command let through a half-open breaker */
    uint64_t sent;              /* uv_now() when sent */
    rstore_get_cb cb;
    rstore_claim_cb claim_cb;
    void *ud;
    size_t klen;
    char key[];                 /* CMD_SET: for the collision warning */
} rs_cmd_t;

struct rstore {
    uv_loop_t *loop;
    char *host, *password;
    int port, db, worker;
    unsigned timeout_ms, ttl_s;
    char ttl_str[16];
    redisAsyncContext *ac;      /* NULL while disconnected */
    int ready;                  /* handshake answered: data commands may go */
    int resolving;
    uv_getaddrinfo_t gai;
    uv_timer_t deadline;        /* fires when the oldest outstanding command is overdue */
    uv_timer_t retry;           /* next connection attempt */
    int handles_open;
    unsigned backoff_ms;
    uint64_t open_until;        /* breaker: 0 closed; else open until this uv_now() */
    int probing;
    int closing;
    rs_cmd_t *head, *tail;
};

/* One outage is reported once per process, whichever worker sees it first. */
static int g_outage;

static void rs_connect(rstore_t *r);
static void rs_on_retry(uv_timer_t *t);

static void rs_maybe_free(rstore_t *r)
{
    if (!r->closing || r->handles_open || r->resolving || r->head)
        return;
    free(r->host);
    free(r->password);
    free(r);
}

static void rs_trip(rstore_t *r, const char *why)
{
    r->open_until = uv_now(r->loop) + RSTORE_BREAKER_MS;
    r->probing = 0;
    if (!__atomic_exchange_n(&g_outage, 1, __ATOMIC_ACQ_REL))
        LOG_WARN("Redis %s:%d unavailable (%s): signatures are stored in and served from memory, and "
                 "E2EE replay claims are checked in this replica's memory only (other replicas "
                 "are not protected), until it answers again (retried in the background, "
                 "breaker %u s)",
                 r->host, r->port, why, RSTORE_BREAKER_MS / 1000);
    else
        LOG_DEBUG("redis w=%d: %s", r->worker, why);
}

static void rs_recovered(rstore_t *r)
{
    r->open_until = 0;
    r->probing = 0;
    if (__atomic_exchange_n(&g_outage, 0, __ATOMIC_ACQ_REL))
        LOG_WARN("Redis %s:%d reachable again: signatures are written through and read from it",
                 r->host, r->port);
}

/* ---- outstanding commands and their deadline ---- */

static void rs_on_deadline(uv_timer_t *t);

static void rs_arm_deadline(rstore_t *r)
{
    if (r->closing)
        return;
    if (!r->head) {
        uv_timer_stop(&r->deadline);
        return;
    }
    uint64_t due = r->head->sent + r->timeout_ms, now = uv_now(r->loop);
    uv_timer_start(&r->deadline, rs_on_deadline, due > now ? due - now : 0, 0);
}

static rs_cmd_t *rs_cmd_new(rstore_t *r, int kind, const char *key, size_t klen)
{
    rs_cmd_t *c = calloc(1, sizeof *c + klen + 1);
    if (!c)
        return NULL;
    c->r = r;
    c->kind = kind;
    c->sent = uv_now(r->loop);
    if (key) {
        memcpy(c->key, key, klen);
        c->klen = klen;
    }
    return c;
}

static void rs_link(rstore_t *r, rs_cmd_t *c)
{
    c->prev = r->tail;
    c->next = NULL;
    if (r->tail)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
    if (r->head == c)
        rs_arm_deadline(r);
}

static void rs_unlink(rstore_t *r, rs_cmd_t *c)
{
    int was_head = r->head == c;
    if (c->prev)
        c->prev->next = c->next;
    else
        r->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        r->tail = c->prev;
    if (was_head)
        rs_arm_deadline(r);
}

/* Sends argv as one command tracked by c; on failure c is freed and -1 returned. */
static int rs_send(rstore_t *r, rs_cmd_t *c, redisCallbackFn *fn, int argc, const char **argv,
                   const size_t *lens)
{
    if (redisAsyncCommandArgv(r->ac, fn, c, argc, argv, lens) != REDIS_OK) {
        free(c);
        return -1;
    }
    rs_link(r, c);
    return 0;
}

/* ---- connection ---- */

static void rs_schedule_retry(rstore_t *r)
{
    if (r->closing || r->ac || r->resolving)
        return;
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : RS_BACKOFF_FIRST_MS;
    if (r->backoff_ms > RS_BACKOFF_MAX_MS)
        r->backoff_ms = RS_BACKOFF_MAX_MS;
    uv_timer_start(&r->retry, rs_on_retry, r->backoff_ms, 0);
}

/* Gives up on the current connection (from a timer, never inside a hiredis callback): every
 * outstanding command is called back with a NULL reply before this returns. */
static void rs_drop(rstore_t *r, const char *why)
{
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->ready = 0;
    rs_trip(r, why);
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    rs_schedule_retry(r);
}

static void rs_on_deadline(uv_timer_t *t)
{
    rstore_t *r = t->data;
    if (!r->head || uv_now(r->loop) < r->head->sent + r->timeout_ms) {
        rs_arm_deadline(r);
        return;
    }
    char why[96];
    snprintf(why, sizeof why, "no answer within %u ms", r->timeout_ms);
    rs_drop(r, why);
}

static void rs_on_handshake(redisAsyncContext *ac, void *reply, void *priv)
{
    rs_cmd_t *c = priv;
    rstore_t *r = c->r;
    redisReply *rep = reply;
    int kind = c->kind;
    rs_unlink(r, c);
    free(c);
    if (ac != r->ac || !rep) {
        rs_maybe_free(r);
        return; /* a connection being dropped: its disconnect path reports it */
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        char why[200];
        snprintf(why, sizeof why, "connection set-up refused: %.*s", (int)(rep->len > 150 ? 150 : rep->len),
                 rep->str ? rep->str : "");
        rs_trip(r, why);
        redisAsyncDisconnect(ac); /* after the pending replies; the disconnect callback retries */
        return;
    }
    if (kind == CMD_PING_READY) {
        r->ready = 1;
        r->backoff_ms = 0;
        LOG_INFO("redis w=%d: connected to %s:%d (db %d)", r->worker, r->host, r->port, r->db);
    }
}

static void rs_on_connect(const redisAsyncContext *ac, int status)
{
    rstore_t *r = ac->data;
    if (!r || r->ac != ac || status == REDIS_OK)
        return;
    /* hiredis frees ac after this callback; its queued commands get NULL replies. */
    char why[160];
    snprintf(why, sizeof why, "connect: %s", ac->errstr[0] ? ac->errstr : "failed");
    r->ac = NULL;
    r->ready = 0;
    rs_trip(r, why);
    rs_schedule_retry(r);
}

static void rs_on_disconnect(const redisAsyncContext *ac, int status)
{
    rstore_t *r = ac->data;
    if (!r || r->ac != ac)
        return;
    char why[160];
    snprintf(why, sizeof why, "connection lost: %s",
             status == REDIS_OK ? "closed" : ac->errstr[0] ? ac->errstr : "error");
    r->ac = NULL;
    r->ready = 0;
    rs_trip(r, why);
    rs_schedule_retry(r);
}

/* Queues AUTH, SELECT and PING right behind the connect: Redis answers them in order before
 * any data command, and the PING reply marks the connection ready. */
static int rs_handshake(rstore_t *r)
{
    rs_cmd_t *c;
    if (r->password[0]) {
        const char *argv[] = {"AUTH", r->password};
        size_t lens[] = {4, strlen(r->password)};
        if (!(c = rs_cmd_new(r, CMD_HANDSHAKE, NULL, 0)) || rs_send(r, c, rs_on_handshake, 2, argv, lens))
            return -1;
    }
    if (r->db) {
        char db[16];
        int n = snprintf(db, sizeof db, "%d", r->db);
        const char *argv[] = {"SELECT", db};
        size_t lens[] = {6, (size_t)n};
        if (!(c = rs_cmd_new(r, CMD_HANDSHAKE, NULL, 0)) || rs_send(r, c, rs_on_handshake, 2, argv, lens))
            return -1;
    }
    const char *argv[] = {"PING"};
    size_t lens[] = {4};
    if (!(c = rs_cmd_new(r, CMD_PING_READY, NULL, 0)) || rs_send(r, c, rs_on_handshake, 1, argv, lens))
        return -1;
    return 0;
}

static void rs_connect_to(rstore_t *r, const char *ip)
{
    redisAsyncContext *ac = ip ? redisAsyncConnect(ip, r->port) : redisAsyncConnectUnix(r->host);
    char why[160];
    if (!ac) {
        rs_trip(r, "out of memory");
        rs_schedule_retry(r);
        return;
    }
    if (ac->err || redisLibuvAttach(ac, r->loop) != REDIS_OK) {
        snprintf(why, sizeof why, "connect: %s", ac->err ? ac->errstr : "cannot watch the socket");
        redisAsyncFree(ac);
        rs_trip(r, why);
        rs_schedule_retry(r);
        return;
    }
    ac->data = r;
    redisAsyncSetConnectCallback(ac, rs_on_connect);
    redisAsyncSetDisconnectCallback(ac, rs_on_disconnect);
    r->ac = ac;
    r->ready = 0;
    if (rs_handshake(r) != 0)
        rs_drop(r, "cannot queue the connection set-up");
}

static void rs_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    rstore_t *r = req->data;
    r->resolving = 0;
    if (r->closing || status != 0 || !res) {
        if (res)
            uv_freeaddrinfo(res);
        if (!r->closing) {
            char why[160];
            snprintf(why, sizeof why, "cannot resolve %s: %s", r->host, uv_strerror(status));
            rs_trip(r, why);
            rs_schedule_retry(r);
        }
        rs_maybe_free(r);
        return;
    }
    char ip[64] = "";
    if (res->ai_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
    else
        uv_ip4_name((const struct sockaddr_in *)res->ai_addr, ip, sizeof ip);
    uv_freeaddrinfo(res);
    rs_connect_to(r, ip);
}

/* Resolves on the thread pool (getaddrinfo may block), then connects to the address. */
static void rs_connect(rstore_t *r)
{
    if (r->closing || r->ac || r->resolving)
        return;
    if (r->host[0] == '/') {
        rs_connect_to(r, NULL);
        return;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    r->gai.data = r;
    r->resolving = 1;
    int rc = uv_getaddrinfo(r->loop, &r->gai, rs_on_resolved, r->host, NULL, &hints);
    if (rc != 0) {
        r->resolving = 0;
        char why[160];
        snprintf(why, sizeof why, "cannot resolve %s: %s", r->host, uv_strerror(rc));
        rs_trip(r, why);
        rs_schedule_retry(r);
    }
}

static void rs_on_retry(uv_timer_t *t) { rs_connect(t->data); }

/* ---- data commands ---- */

/* 0: not usable now; 1: usable; 2: usable as the breaker's probe. */
static int rs_usable(rstore_t *r)
{
    if (r->closing || !r->ac || !r->ready)
        return 0;
    if (!r->open_until)
        return 1;
    if (r->probing || uv_now(r->loop) < r->open_until)
        return 0;
    r->probing = 1;
    return 2;
}

/* The common part of every reply: a lost connection (NULL) or a Redis error trips the breaker
 * (what names the command in the log); a reply to the breaker's probe closes it. 1 when rep is
 * a usable reply. */
static int rs_reply_ok(rstore_t *r, rs_cmd_t *c, const redisReply *rep, const char *what)
{
    if (!rep) {
        if (c->probe)
            rs_trip(r, "probe lost with the connection");
        return 0;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        char why[200];
        snprintf(why, sizeof why, "%s: %.*s", what, (int)(rep->len > 150 ? 150 : rep->len),
                 rep->str ? rep->str : "");
        rs_trip(r, why);
        return 0;
    }
    if (c->probe)
        rs_recovered(r);
    return 1;
}

/* Sends c (already filled) when Redis is usable as u said; on failure releases the probe. */
static int rs_submit(rstore_t *r, int u, rs_cmd_t *c, redisCallbackFn *fn, int argc,
                     const char **argv, const size_t *lens)
{
    if (c) {
        c->probe = u == 2;
        if (rs_send(r, c, fn, argc, argv, lens) == 0)
            return 0;
    }
    if (u == 2)
        r->probing = 0;
    return -1;
}

static void rs_on_get(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    rs_cmd_t *c = priv;
    rstore_t *r = c->r;
    redisReply *rep = reply;
    rs_unlink(r, c);
    int rc = RSTORE_ERR;
    if (rs_reply_ok(r, c, rep, "GET"))
        rc = rep->type == REDIS_REPLY_STRING ? RSTORE_OK : RSTORE_NOT_FOUND;
    if (rc == RSTORE_OK)
        c->cb(c->ud, rc, rep->str, rep->len);
    else
        c->cb(c->ud, rc, NULL, 0);
    free(c);
    rs_maybe_free(r);
}

int rstore_get(rstore_t *r, const char *key, size_t klen, rstore_get_cb cb, void *ud)
{
    int u = r ? rs_usable(r) : 0;
    if (!u)
        return -1;
    rs_cmd_t *c = rs_cmd_new(r, CMD_GET, NULL, 0);
    const char *argv[] = {"GET", key};
    size_t lens[] = {3, klen};
    if (c) {
        c->cb = cb;
        c->ud = ud;
    }
    return rs_submit(r, u, c, rs_on_get, 2, argv, lens);
}

static void rs_on_set(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    rs_cmd_t *c = priv;
    rstore_t *r = c->r;
    redisReply *rep = reply;
    rs_unlink(r, c);
    if (!rep)
        LOG_DEBUG("redis w=%d: SET %.*s lost with the connection", r->worker, (int)c->klen, c->key);
    if (rs_reply_ok(r, c, rep, "SET")) {
        if (rep->type == REDIS_REPLY_NIL)
            LOG_WARN("signature record %.*s already in Redis (another replica or an earlier answer "
                     "with the same id): kept the first, not overwritten",
                     (int)c->klen, c->key);
    }
    free(c);
    rs_maybe_free(r);
}

int rstore_set_nx(rstore_t *r, const char *key, size_t klen, const char *val, size_t vlen)
{
    int u = r ? rs_usable(r) : 0;
    if (!u) {
        LOG_DEBUG("redis: SET of %.*s skipped (not connected or breaker open)",
                  (int)(klen > RS_MAX_KEY ? RS_MAX_KEY : klen), key);
        return -1;
    }
    size_t kl = klen > RS_MAX_KEY ? RS_MAX_KEY : klen;
    rs_cmd_t *c = rs_cmd_new(r, CMD_SET, key, kl);
    const char *argv[] = {"SET", key, val, "NX", "EX", r->ttl_str};
    size_t lens[] = {3, klen, vlen, 2, 2, strlen(r->ttl_str)};
    return rs_submit(r, u, c, rs_on_set, 6, argv, lens);
}

static void rs_on_claim(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    rs_cmd_t *c = priv;
    rstore_t *r = c->r;
    redisReply *rep = reply;
    rs_unlink(r, c);
    int rc = RSTORE_ERR;
    if (rs_reply_ok(r, c, rep, "SET NX (claim)"))
        rc = rep->type == REDIS_REPLY_NIL ? RSTORE_EXISTS : RSTORE_CLAIMED;
    c->claim_cb(c->ud, rc);
    free(c);
    rs_maybe_free(r);
}

int rstore_claim(rstore_t *r, const char *key, size_t klen, unsigned ttl_s, rstore_claim_cb cb,
                 void *ud)
{
    int u = r ? rs_usable(r) : 0;
    if (!u)
        return -1;
    char ttl[16];
    int tn = snprintf(ttl, sizeof ttl, "%u", ttl_s ? ttl_s : 1);
    rs_cmd_t *c = rs_cmd_new(r, CMD_CLAIM, NULL, 0);
    const char *argv[] = {"SET", key, "1", "NX", "EX", ttl};
    size_t lens[] = {3, klen, 1, 2, 2, (size_t)tn};
    if (c) {
        c->claim_cb = cb;
        c->ud = ud;
    }
    return rs_submit(r, u, c, rs_on_claim, 6, argv, lens);
}

/* ---- life cycle ---- */

static void rs_on_handle_closed(uv_handle_t *h)
{
    rstore_t *r = h->data;
    r->handles_open--;
    rs_maybe_free(r);
}

rstore_t *rstore_new(uv_loop_t *loop, const rstore_config_t *cfg)
{
    rstore_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->host = strdup(cfg->host ? cfg->host : "");
    r->password = strdup(cfg->password ? cfg->password : "");
    if (!r->host || !r->password) {
        free(r->host);
        free(r->password);
        free(r);
        return NULL;
    }
    r->loop = loop;
    r->port = cfg->port;
    r->db = cfg->db;
    r->worker = cfg->worker;
    r->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 100;
    r->ttl_s = cfg->ttl_s ? cfg->ttl_s : 1;
    snprintf(r->ttl_str, sizeof r->ttl_str, "%u", r->ttl_s);
    uv_timer_init(loop, &r->deadline);
    uv_timer_init(loop, &r->retry);
    r->deadline.data = r->retry.data = r;
    r->handles_open = 2;
    /* The first attempt runs on the loop's own thread once it starts. */
    uv_timer_start(&r->retry, rs_on_retry, 0, 0);
    return r;
}

void rstore_close(rstore_t *r)
{
    if (!r || r->closing)
        return;
    r->closing = 1;
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->ready = 0;
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac); /* outstanding commands are called back with NULL replies */
    }
    if (r->resolving)
        uv_cancel((uv_req_t *)&r->gai);
    uv_close((uv_handle_t *)&r->deadline, rs_on_handle_closed);
    uv_close((uv_handle_t *)&r->retry, rs_on_handle_closed);
}
