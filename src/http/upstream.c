/* Upstream client. An exchange (upstream_req_t) is given an engine (pick: fewest outstanding
 * requests among those up and under budget, random among ties), then borrows an idle
 * keep-alive connection (uconn_t) of that engine or opens one. A reused connection that fails
 * before any response byte arrived, while the request was being written or within
 * STALE_RETRY_MS after, is retried once on a fresh connection: the engine closed it while it
 * sat idle, so it never saw the request (one that fails later saw it: never sent again). A connection that could not be made
 * moves the exchange to another engine, once. When every engine up is at its budget the
 * exchange waits in the pool's FIFO (bounded process-wide by ENGINE_QUEUE_MAX): a slot freed
 * on this loop starts the head at once; slots freed on other loops are seen by a short poll
 * (QUEUE_POLL_MS) while anything waits.
 *
 * The request head is kept without its Host line (and the engine's Authorization), which
 * depend on the engine: the pool keeps that line per engine and the write gathers request
 * line, that line, the rest of the head and the body. */
#include "http/upstream.h"

#include <arpa/inet.h>
#include <llhttp.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/log.h"
#include "http/engines.h"

#define MAX_IDLE 1024 /* per engine */
#define IDLE_TIMEOUT_MS 60000
#define QUEUE_POLL_MS 2 /* waiting exchanges look for a slot freed on another loop */
#define STALE_RETRY_MS 50 /* a reused connection closed this soon after the write: stale */
#define HOST_LINE_MAX (sizeof "Host: [" + 256 + sizeof "]:65535\r\n" + 512)

typedef struct uconn uconn_t;
enum ustate { U_CONNECTING, U_BUSY, U_IDLE, U_CLOSING };

struct upstream_req {
    upstream_pool_t *pool;
    uconn_t *conn;
    buf_t head;
    const void *body;
    size_t body_len;
    const upstream_cbs_t *cbs;
    void *ud;
    uint64_t deadline_ms;
    int retried, got_bytes, head_done, complete, paused, connect_failed;
    uint64_t written_ms; /* loop time the whole request was written; 0 before */
    int wipe_reads; /* upstream_wipe_reads: zero each read once parsed */
    int eng;         /* the engine (index in the set), -1 before one is picked */
    int counted;     /* counted in that engine's outstanding requests */
    int failed_over; /* already moved to another engine once */
    int queued;      /* waiting for a slot in the pool's FIFO */
    int conn_uverr;  /* the libuv error of a failed connect (0: it timed out) */
    size_t host_at;  /* where the engine's Host line goes in head */
    upstream_req_t *qnext;
    uint64_t q_deadline;
};

struct uconn {
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
        uv_stream_t stream;
        uv_handle_t handle;
    } s;
    uv_timer_t timer;
    uv_connect_t connect_req;
    uv_write_t write_req;
    upstream_pool_t *pool;
    uconn_t *next_idle;
    upstream_req_t *ex;
    int eng;
    llhttp_t parser;
    int state, handles_open, reused, writing;
    int name_match, is_ctype, in_value, interim;
    int ctype_seen, ctype_bad; /* a Content-Type came; it was too long or repeated */
    int no_reuse;              /* the answer's framing lied (a 204/304 with a body) */
    char ctype[UPSTREAM_CTYPE_MAX];
    size_t ctype_len;
};

/* One engine as seen from one pool: its idle connections and its Host line. */
typedef struct upool_eng {
    uconn_t *idle;
    unsigned nidle;
    size_t host_len;
    char host[HOST_LINE_MAX]; /* "Host: ...\r\n" and the engine's Authorization line */
} upool_eng_t;

struct upstream_pool {
    uv_loop_t *loop;
    engine_set_t *set;
    upool_eng_t *eng; /* set->n */
    worker_t *w;
    int probe;
    unsigned to_connect, to_first, to_total;
    int last_err;
    uint64_t rng;
    llhttp_settings_t settings;
    upstream_req_t *free_ex;   /* recycled exchanges: no allocation per request */
    unsigned nfree_ex;
    int last_connect_err;      /* libuv's error of the last failed connect (for the log) */
    uv_timer_t qtimer; /* the FIFO's deadline and poll */
    upstream_req_t *qhead, *qtail;
    unsigned nwait;
};

int upstream_target_parse(upstream_target_t *t, const char *url, char *err, size_t errlen)
{
    memset(&t->addr, 0, sizeof t->addr);
    if (strncmp(url, "unix:", 5) == 0) {
        const char *p = url + 5;
        if (strncmp(p, "//", 2) == 0)
            p += 2;
        if (*p != '/' || strlen(p) >= sizeof t->path) {
            snprintf(err, errlen, "invalid unix socket URL '%s' (want unix:/path)", url);
            return -1;
        }
        t->is_unix = 1;
        snprintf(t->path, sizeof t->path, "%s", p);
        snprintf(t->host, sizeof t->host, "localhost");
        t->port = 0;
        return 0;
    }
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "invalid upstream URL '%s' (want http://host:port or unix:/path)",
                 url);
        return -1;
    }
    const char *h = url + 7, *end = h + strcspn(h, "/?#");
    if (*end && strcmp(end, "/") != 0) {
        snprintf(err, errlen, "upstream URL '%s' must not have a path or query", url);
        return -1;
    }
    char hostport[256];
    size_t hl = (size_t)(end - h);
    if (hl == 0 || hl >= sizeof hostport) {
        snprintf(err, errlen, "invalid upstream URL '%s'", url);
        return -1;
    }
    memcpy(hostport, h, hl);
    hostport[hl] = '\0';
    char *host = hostport, *port = NULL;
    if (host[0] == '[') {
        char *rb = strchr(host, ']');
        if (!rb) {
            snprintf(err, errlen, "invalid IPv6 address in '%s'", url);
            return -1;
        }
        if (rb[1] != '\0' && rb[1] != ':') {
            snprintf(err, errlen, "invalid host in upstream URL '%s'", url);
            return -1;
        }
        *rb = '\0';
        host++;
        if (rb[1] == ':')
            port = rb + 2;
    } else if ((port = strchr(host, ':'))) {
        *port++ = '\0';
        if (strchr(port, ':')) { /* IPv6 without brackets */
            snprintf(err, errlen, "IPv6 upstream addresses need brackets: http://[addr]:port");
            return -1;
        }
    }
    char *endp = NULL;
    long pn = 80;
    if (port) {
        if (strspn(port, "0123456789") != strlen(port) || strlen(port) > 5)
            port = "";
        pn = strtol(port, &endp, 10);
    }
    if ((port && (*port == '\0' || *endp != '\0')) || pn <= 0 || pn > 65535 || !*host) {
        snprintf(err, errlen, "invalid host or port in upstream URL '%s'", url);
        return -1;
    }
    t->port = (int)pn;
    snprintf(t->host, sizeof t->host, "%s", host);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    char ps[8];
    snprintf(ps, sizeof ps, "%d", t->port);
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve upstream host '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    memcpy(&t->addr, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    t->is_unix = 0;
    return 0;
}

/* ---- response parsing ---- */

static int ucb_message_begin(llhttp_t *p)
{
    uconn_t *c = p->data;
    c->ctype_len = 0;
    c->ctype_seen = c->ctype_bad = 0;
    c->name_match = 0;
    c->in_value = 0;
    c->is_ctype = 0;
    return 0;
}

static int ucb_header_field(llhttp_t *p, const char *at, size_t len)
{
    static const char want[] = "content-type";
    uconn_t *c = p->data;
    if (c->in_value) {
        c->in_value = 0;
        c->name_match = 0;
    }
    int m = c->name_match;
    for (size_t i = 0; i < len && m >= 0; i++)
        m = ((size_t)m < sizeof want - 1 && (at[i] | 0x20) == want[m]) ? m + 1 : -1;
    c->name_match = m;
    return 0;
}

static int ucb_header_field_complete(llhttp_t *p)
{
    uconn_t *c = p->data;
    c->is_ctype = c->name_match == (int)(sizeof "content-type" - 1);
    if (c->is_ctype && c->ctype_seen)
        c->ctype_bad = 1; /* which one would the client believe? */
    c->ctype_seen |= c->is_ctype;
    c->in_value = 1;
    return 0;
}

static int ucb_header_value(llhttp_t *p, const char *at, size_t len)
{
    uconn_t *c = p->data;
    if (!c->is_ctype || c->ctype_bad)
        return 0;
    if (c->ctype_len + len > sizeof c->ctype) {
        c->ctype_bad = 1;
        return 0;
    }
    memcpy(c->ctype + c->ctype_len, at, len);
    c->ctype_len += len;
    return 0;
}

static int ucb_headers_complete(llhttp_t *p)
{
    uconn_t *c = p->data;
    upstream_req_t *ex = c->ex;
    if (!ex)
        return HPE_USER;
    /* A switch of protocols we never asked for. */
    if (p->status_code == 101)
        return HPE_USER;
    /* 100 Continue, 103 Early Hints: interim heads; the real one follows on this parser. */
    c->interim = p->status_code >= 100 && p->status_code < 200;
    if (c->interim)
        return 0;
    /* No status digits (llhttp reads "HTTP/1.1 \r\n" as 0), 101, 600-999: nothing to relay. */
    if (p->status_code < 200 || p->status_code > 599)
        return HPE_USER;
    /* A Content-Length past INT64_MAX would read as one of the UPSTREAM_CL_* codes. */
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > (uint64_t)INT64_MAX)
        return HPE_USER;
    if (c->ctype_bad)
        return HPE_USER;
    /* 204 and 304 end at the head (llhttp would read a framed body of a 204, and the relay would
     * sign bytes the client never gets). What follows on the connection is not a response: it
     * is not reused. */
    int headless = p->status_code == 204 || p->status_code == 304;
    if (headless && ((p->flags & (F_CHUNKED | F_TRANSFER_ENCODING)) ||
                     ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0)))
        c->no_reuse = 1;
    ex->head_done = 1;
    int64_t cl = headless                           ? UPSTREAM_CL_NONE
                 : (p->flags & F_CONTENT_LENGTH)    ? (int64_t)p->content_length
                 : llhttp_message_needs_eof(p)      ? UPSTREAM_CL_EOF
                                                    : UPSTREAM_CL_NONE;
    strv_t ct = {c->ctype, c->ctype_len};
    if (ex->cbs->on_head)
        ex->cbs->on_head(ex->ud, p->status_code, ct, cl);
    if (!c->ex)
        return HPE_USER; /* the callback cancelled */
    return headless ? 1 : 0; /* 1: llhttp reads no body */
}

static int ucb_body(llhttp_t *p, const char *at, size_t len)
{
    uconn_t *c = p->data;
    if (c->ex && c->ex->cbs->on_body)
        c->ex->cbs->on_body(c->ex->ud, at, len);
    return c->ex ? 0 : HPE_USER;
}

static int ucb_message_complete(llhttp_t *p)
{
    uconn_t *c = p->data;
    if (c->interim) {
        c->interim = 0;
        return 0;
    }
    if (c->ex)
        c->ex->complete = 1;
    return HPE_PAUSED;
}

/* ---- connection lifecycle ---- */

static void on_uhandle_closed(uv_handle_t *h)
{
    uconn_t *c = h->data;
    if (--c->handles_open == 0)
        free(c);
}

static void pool_remove_idle(upstream_pool_t *p, uconn_t *c)
{
    upool_eng_t *pe = &p->eng[c->eng];
    for (uconn_t **pp = &pe->idle; *pp; pp = &(*pp)->next_idle)
        if (*pp == c) {
            *pp = c->next_idle;
            pe->nidle--;
            return;
        }
}

static void uconn_close(uconn_t *c)
{
    if (c->state == U_CLOSING)
        return;
    if (c->state == U_IDLE)
        pool_remove_idle(c->pool, c);
    c->state = U_CLOSING;
    c->ex = NULL;
    uv_close(&c->s.handle, on_uhandle_closed);
    uv_close((uv_handle_t *)&c->timer, on_uhandle_closed);
}

#define MAX_FREE_EX 256
#define EX_HEAD_KEEP_MAX 4096 /* a recycled exchange keeps head storage up to this size */

/* Exchanges go back to their pool's free list, keeping the head buffer's storage. */
static void ex_free(upstream_req_t *ex)
{
    upstream_pool_t *p = ex->pool;
    if (p->nfree_ex < MAX_FREE_EX && ex->head.cap <= EX_HEAD_KEEP_MAX) {
        buf_t head = ex->head;
        buf_reset(&head);
        memset(ex, 0, sizeof *ex);
        ex->head = head;
        ex->pool = (upstream_pool_t *)p->free_ex; /* link field while free */
        p->free_ex = ex;
        p->nfree_ex++;
        return;
    }
    buf_free(&ex->head);
    free(ex);
}

static upstream_req_t *ex_get(upstream_pool_t *p)
{
    upstream_req_t *ex = p->free_ex;
    if (!ex)
        return calloc(1, sizeof *ex);
    p->free_ex = (upstream_req_t *)ex->pool;
    p->nfree_ex--;
    ex->pool = NULL;
    return ex;
}

static void ex_attach(upstream_req_t *ex, uconn_t *c);
static uconn_t *uconn_new(upstream_pool_t *p, int eng);
static void on_utimer(uv_timer_t *t);
static void on_ualloc(uv_handle_t *h, size_t sz, uv_buf_t *b);
static void on_uread(uv_stream_t *s, ssize_t n, const uv_buf_t *b);
static void on_qtimer(uv_timer_t *t);

/* ---- engine choice, budget and queue ---- */

static uint64_t rnd(upstream_pool_t *p)
{
    uint64_t x = p->rng; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return p->rng = x;
}

/* Claims a slot on the engine with the fewest outstanding requests among those up and under
 * budget, not `exclude`, ties broken at random. Its index, or -1 with *why (UPS_E_NO_ENGINE:
 * none is up; UPS_E_BUSY: every one up is at its budget). */
static int pick(upstream_pool_t *p, int exclude, int *why)
{
    engine_set_t *s = p->set;
    unsigned max = s->cfg.max_inflight;
    for (int tries = 0; tries < 8; tries++) {
        int best = -1, bestn = 0, ties = 0, anyup = 0;
        for (int i = 0; i < s->n; i++) {
            engine_t *e = &s->e[i];
            if (i == exclude || !__atomic_load_n(&e->up, __ATOMIC_RELAXED))
                continue;
            anyup = 1;
            int o = __atomic_load_n(&e->outstanding, __ATOMIC_RELAXED);
            if (max && (unsigned)o >= max)
                continue;
            if (best < 0 || o < bestn) {
                best = i;
                bestn = o;
                ties = 1;
            } else if (o == bestn && rnd(p) % (unsigned)++ties == 0) {
                best = i;
            }
        }
        if (best < 0) {
            *why = anyup ? UPS_E_BUSY : UPS_E_NO_ENGINE;
            return -1;
        }
        engine_t *e = &s->e[best];
        if (!max) {
            __atomic_add_fetch(&e->outstanding, 1, __ATOMIC_RELAXED);
            return best;
        }
        if (__atomic_compare_exchange_n(&e->outstanding, &bestn, bestn + 1, 0, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
            return best;
        /* another worker took that slot meanwhile: look again */
    }
    *why = UPS_E_BUSY;
    return -1;
}

/* The exchange leaves its engine's outstanding count; a waiting exchange may take the slot. */
static void uncount(upstream_req_t *ex)
{
    if (!ex->counted)
        return;
    ex->counted = 0;
    upstream_pool_t *p = ex->pool;
    __atomic_sub_fetch(&p->set->e[ex->eng].outstanding, 1, __ATOMIC_RELAXED);
    if (p->nwait)
        uv_timer_start(&p->qtimer, on_qtimer, 0, 0);
}

/* Starts ex on engine eng (whose slot pick claimed): an idle connection of it, or a new one.
 * 0, or -1 out of memory (ex stays counted: the caller uncounts). */
static int ex_start(upstream_req_t *ex, int eng)
{
    upstream_pool_t *p = ex->pool;
    ex->eng = eng;
    ex->counted = 1;
    __atomic_add_fetch(&p->set->e[eng].requests, 1, __ATOMIC_RELAXED);
    upool_eng_t *pe = &p->eng[eng];
    uconn_t *c = pe->idle;
    if (c) {
        pe->idle = c->next_idle;
        pe->nidle--;
        c->state = U_IDLE; /* ex_attach sends at once on an idle connection */
    } else if (!(c = uconn_new(p, eng))) {
        return -1;
    }
    ex_attach(ex, c);
    return 0;
}

static void q_remove(upstream_pool_t *p, upstream_req_t *ex)
{
    for (upstream_req_t **pp = &p->qhead, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->qnext)
        if (*pp == ex) {
            *pp = ex->qnext;
            if (p->qtail == ex)
                p->qtail = prev;
            break;
        }
    ex->queued = 0;
    ex->qnext = NULL;
    p->nwait--;
    __atomic_sub_fetch(&p->set->queued, 1, __ATOMIC_RELAXED);
}

static void ex_done(upstream_req_t *ex, int err);

/* Waiting exchanges: the head takes a free slot, or gets its 429 when its time is up, or its
 * 503 when no engine is up any more. Then polls again while anything waits. */
static void on_qtimer(uv_timer_t *t)
{
    upstream_pool_t *p = t->data;
    engine_set_t *s = p->set;
    uint64_t now = uv_now(p->loop);
    while (p->qhead) {
        upstream_req_t *ex = p->qhead;
        int why = UPS_E_BUSY, e = ex->q_deadline > now ? pick(p, -1, &why) : -1;
        if (e < 0 && why == UPS_E_BUSY && ex->q_deadline > now)
            break;
        q_remove(p, ex);
        if (e >= 0) {
            if (ex_start(ex, e) != 0) {
                uncount(ex);
                ex_done(ex, UPS_E_NOMEM);
            }
            continue;
        }
        __atomic_add_fetch(why == UPS_E_BUSY ? &s->rejected_busy : &s->rejected_none, 1,
                           __ATOMIC_RELAXED);
        ex_done(ex, why);
    }
    if (p->qhead) {
        uint64_t left = p->qhead->q_deadline > now ? p->qhead->q_deadline - now : 0;
        uv_timer_start(t, on_qtimer, left < QUEUE_POLL_MS ? left : QUEUE_POLL_MS, 0);
    }
}

/* ---- exchanges ---- */

static void ex_close_conn(upstream_req_t *ex)
{
    if (ex->conn) {
        ex->conn->ex = NULL;
        uconn_close(ex->conn);
        ex->conn = NULL;
    }
}

/* What the engine's health learns from how an exchange ended (not for probes). Returns 1 when
 * the exchange was moved to another engine (it goes on there). */
static int ex_account(upstream_req_t *ex, uconn_t *c, int *err)
{
    upstream_pool_t *p = ex->pool;
    engine_set_t *s = p->set;
    if (p->probe || ex->eng < 0)
        return 0;
    engine_t *e = &s->e[ex->eng];
    /* Never connected: no byte of the request went out. */
    int connfail = c && c->state == U_CONNECTING && (*err == UPS_E_CONNECT || *err == UPS_E_TIMEOUT);
    if (!connfail) {
        if (ex->head_done)
            engines_conn_result(s, ex->eng, 0, NULL);
        static const int kind[] = {[UPS_E_TIMEOUT] = EK_TIMEOUT, [UPS_E_CLOSED] = EK_CLOSED,
                                   [UPS_E_PROTOCOL] = EK_PROTOCOL, [UPS_E_CONNECT] = EK_CONNECT};
        if (*err >= UPS_E_CONNECT && *err <= UPS_E_PROTOCOL)
            __atomic_add_fetch(&e->errors[kind[*err]], 1, __ATOMIC_RELAXED);
        return 0;
    }
    char cause[96];
    snprintf(cause, sizeof cause, "%s", ex->conn_uverr ? uv_strerror(ex->conn_uverr) : "connect timeout");
    __atomic_add_fetch(&e->errors[*err == UPS_E_TIMEOUT ? EK_TIMEOUT : EK_CONNECT], 1, __ATOMIC_RELAXED);
    engines_conn_result(s, ex->eng, 1, cause);
    if (ex->failed_over)
        return 0;
    /* Once, to another engine up. */
    ex->failed_over = 1;
    int why, prev = ex->eng;
    ex_close_conn(ex);
    uncount(ex);
    int ne = pick(p, prev, &why);
    if (ne < 0)
        return 0;
    __atomic_add_fetch(&e->failovers, 1, __ATOMIC_RELAXED);
    LOG_DEBUG("engine %s: %s; request moved to %s", e->name, cause, s->e[ne].name);
    ex->retried = 0;
    ex->written_ms = 0;
    ex->conn_uverr = 0;
    ex->connect_failed = 0;
    ex->deadline_ms = uv_now(p->loop) + p->to_total;
    if (ex_start(ex, ne) == 0)
        return 1;
    uncount(ex);
    *err = UPS_E_NOMEM;
    return 0;
}

/* Ends the exchange: tells the caller, then parks the connection or closes it. */
static void ex_done(upstream_req_t *ex, int err)
{
    uconn_t *c = ex->conn;
    /* Stale only when the close came while the request was being written or at once after
     * (STALE_RETRY_MS): an engine that fails later had the request, and may have been
     * generating; that exchange is never sent again (it fails: a 502). */
    if (err && err != UPS_E_TIMEOUT && c && c->reused && !ex->got_bytes && !ex->retried &&
        (!ex->written_ms || uv_now(ex->pool->loop) - ex->written_ms <= STALE_RETRY_MS)) {
        ex->retried = 1;
        ex->written_ms = 0;
        int eng = c->eng;
        uconn_close(c);
        uconn_t *n = uconn_new(ex->pool, eng);
        if (n) {
            ex_attach(ex, n);
            return;
        }
        err = UPS_E_NOMEM;
        c = ex->conn = NULL;
    }
    if (err != UPS_E_NOMEM && ex_account(ex, c, &err))
        return;
    c = ex->conn;
    /* An engine that answered before it read the whole request (c->writing) leaves our write
     * in flight: that connection cannot be reused, and its body buffer is about to go away. */
    int keep = c && !err && ex->complete && !c->writing && !c->no_reuse &&
               llhttp_should_keep_alive(&c->parser) &&
               c->pool->eng[c->eng].nidle < MAX_IDLE;
    int status = ex->head_done && c ? c->parser.status_code : 0;
    if (c) {
        c->ex = NULL;
        uv_timer_stop(&c->timer);
        if (keep) {
            upool_eng_t *pe = &c->pool->eng[c->eng];
            llhttp_resume(&c->parser);
            llhttp_reset(&c->parser);
            c->state = U_IDLE;
            c->reused = 1;
            c->next_idle = pe->idle;
            pe->idle = c;
            pe->nidle++;
            uv_timer_start(&c->timer, on_utimer, IDLE_TIMEOUT_MS, 0);
            uv_read_start(&c->s.stream, on_ualloc, on_uread);
        } else {
            uconn_close(c);
        }
    }
    uncount(ex);
    const upstream_cbs_t *cbs = ex->cbs;
    void *ud = ex->ud;
    ex_free(ex);
    if (cbs->on_done)
        cbs->on_done(ud, err, status);
}

static void on_utimer(uv_timer_t *t)
{
    uconn_t *c = t->data;
    if (c->state == U_IDLE || !c->ex) {
        uconn_close(c);
        return;
    }
    ex_done(c->ex, c->ex->connect_failed ? UPS_E_CONNECT : UPS_E_TIMEOUT);
}

static void arm(uconn_t *c, unsigned ms)
{
    upstream_req_t *ex = c->ex;
    uint64_t now = uv_now(c->pool->loop);
    uint64_t left = ex->deadline_ms > now ? ex->deadline_ms - now : 1;
    if (ms == 0 || ms > left)
        ms = (unsigned)left;
    uv_timer_start(&c->timer, on_utimer, ms, 0);
}

static void on_ualloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)sz;
    uconn_t *c = h->data;
    size_t len;
    b->base = worker_read_buf(c->pool->w, &len);
    b->len = len;
}

static void on_uread(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    uconn_t *c = s->data;
    upstream_req_t *ex = c->ex;
    if (n == 0)
        return;
    if (!ex) { /* idle: the engine closed it, or sent garbage */
        uconn_close(c);
        return;
    }
    if (n < 0) {
        if (n == UV_EOF && ex->head_done && llhttp_finish(&c->parser) == HPE_OK &&
            (ex->complete || !llhttp_message_needs_eof(&c->parser))) {
            ex->complete = 1;
            c->parser.flags |= F_CONNECTION_CLOSE;
            ex_done(ex, UPS_OK);
            return;
        }
        if (n == UV_EOF && c->ex == ex && ex->complete) {
            ex_done(ex, UPS_OK);
            return;
        }
        if (c->ex == ex)
            ex_done(ex, UPS_E_CLOSED);
        return;
    }
    if (!ex->got_bytes) {
        ex->got_bytes = 1;
        arm(c, 0); /* from now on only the total deadline applies */
    }
    int wipe = ex->wipe_reads;
    llhttp_errno_t e = llhttp_execute(&c->parser, b->base, (size_t)n);
    if (wipe) /* parsed and delivered: nothing keeps a pointer into the read buffer */
        explicit_bzero(b->base, (size_t)n);
    if (c->ex != ex)
        return; /* cancelled from a callback */
    if (e == HPE_PAUSED && ex->complete) {
        ex_done(ex, UPS_OK);
        return;
    }
    if (e != HPE_OK) {
        ex_done(ex, UPS_E_PROTOCOL);
        return;
    }
    if (ex->cbs->on_read_done)
        ex->cbs->on_read_done(ex->ud);
}

static void on_uwrite(uv_write_t *w, int status)
{
    uconn_t *c = w->data;
    c->writing = 0;
    if (c->state == U_CLOSING || !c->ex)
        return;
    if (status == 0)
        c->ex->written_ms = uv_now(c->pool->loop);
    if (status < 0 && !c->ex->got_bytes)
        ex_done(c->ex, UPS_E_CLOSED);
}

/* Request line, the engine's Host (and Authorization) line, the rest of the head, the body. */
static void ex_send(uconn_t *c)
{
    upstream_req_t *ex = c->ex;
    upool_eng_t *pe = &c->pool->eng[c->eng];
    c->state = U_BUSY;
    uv_buf_t b[4] = {uv_buf_init(ex->head.data, (unsigned)ex->host_at),
                     uv_buf_init(pe->host, (unsigned)pe->host_len),
                     uv_buf_init(ex->head.data + ex->host_at, (unsigned)(ex->head.len - ex->host_at)),
                     uv_buf_init((char *)ex->body, (unsigned)ex->body_len)};
    c->write_req.data = c;
    c->writing = 1;
    if (uv_write(&c->write_req, &c->s.stream, b, ex->body_len ? 4 : 3, on_uwrite) != 0) {
        c->writing = 0;
        ex_done(ex, UPS_E_CLOSED);
        return;
    }
    if (!ex->paused)
        uv_read_start(&c->s.stream, on_ualloc, on_uread);
    arm(c, c->pool->to_first);
}

static void on_uconnect(uv_connect_t *req, int status)
{
    uconn_t *c = req->data;
    if (c->state == U_CLOSING)
        return;
    if (!c->ex) {
        uconn_close(c);
        return;
    }
    if (status < 0) {
        LOG_DEBUG("upstream connect failed: %s", uv_strerror(status));
        c->pool->last_connect_err = status;
        c->ex->conn_uverr = status;
        ex_done(c->ex, UPS_E_CONNECT);
        return;
    }
    if (!c->pool->set->e[c->eng].t.is_unix)
        uv_tcp_nodelay(&c->s.tcp, 1);
    ex_send(c);
}

static uconn_t *uconn_new(upstream_pool_t *p, int eng)
{
    uconn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->pool = p;
    c->eng = eng;
    c->state = U_CONNECTING;
    if (p->set->e[eng].t.is_unix)
        uv_pipe_init(p->loop, &c->s.pipe, 0);
    else
        uv_tcp_init(p->loop, &c->s.tcp);
    uv_timer_init(p->loop, &c->timer);
    c->s.handle.data = c->timer.data = c;
    c->handles_open = 2;
    llhttp_init(&c->parser, HTTP_RESPONSE, &p->settings);
    c->parser.data = c;
    return c;
}

static void ex_attach(upstream_req_t *ex, uconn_t *c)
{
    ex->conn = c;
    c->ex = ex;
    if (c->state == U_IDLE) {
        ex_send(c);
        return;
    }
    c->connect_req.data = c;
    upstream_pool_t *p = ex->pool;
    const upstream_target_t *t = &p->set->e[c->eng].t;
    int rc;
    if (t->is_unix) {
        uv_pipe_connect(&c->connect_req, &c->s.pipe, t->path, on_uconnect);
        rc = 0;
    } else {
        rc = uv_tcp_connect(&c->connect_req, &c->s.tcp, (const struct sockaddr *)&t->addr,
                            on_uconnect);
    }
    if (rc != 0) {
        /* Report asynchronously through the timer so callers never re-enter. */
        LOG_DEBUG("upstream connect failed: %s", uv_strerror(rc));
        p->last_connect_err = rc;
        ex->connect_failed = 1;
        ex->conn_uverr = rc;
        uv_timer_start(&c->timer, on_utimer, 0, 0);
        return;
    }
    arm(c, p->to_connect);
}

const char *upstream_pool_connect_error(const upstream_pool_t *p)
{
    return p && p->last_connect_err ? uv_strerror(p->last_connect_err) : "no connection in time";
}

static upstream_pool_t *pool_new(uv_loop_t *loop, engine_set_t *set, worker_t *w)
{
    upstream_pool_t *p = calloc(1, sizeof *p);
    if (!p || !(p->eng = calloc((size_t)set->n, sizeof *p->eng))) {
        free(p);
        return NULL;
    }
    p->loop = loop;
    p->set = set;
    p->w = w;
    p->to_connect = set->e[0].t.connect_timeout_ms;
    p->to_first = set->e[0].t.first_byte_timeout_ms;
    p->to_total = set->e[0].t.total_timeout_ms;
    p->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)p ^ uv_hrtime();
    for (int i = 0; i < set->n; i++) {
        const upstream_target_t *t = &set->e[i].t;
        upool_eng_t *pe = &p->eng[i];
        int n;
        if (t->is_unix || t->port == 80)
            n = snprintf(pe->host, sizeof pe->host, "Host: %s\r\n%s", t->host, t->auth_header);
        else if (strchr(t->host, ':'))
            n = snprintf(pe->host, sizeof pe->host, "Host: [%s]:%d\r\n%s", t->host, t->port,
                         t->auth_header);
        else
            n = snprintf(pe->host, sizeof pe->host, "Host: %s:%d\r\n%s", t->host, t->port,
                         t->auth_header);
        pe->host_len = n > 0 && (size_t)n < sizeof pe->host ? (size_t)n : 0;
    }
    llhttp_settings_init(&p->settings);
    p->settings.on_message_begin = ucb_message_begin;
    p->settings.on_header_field = ucb_header_field;
    p->settings.on_header_field_complete = ucb_header_field_complete;
    p->settings.on_header_value = ucb_header_value;
    p->settings.on_headers_complete = ucb_headers_complete;
    p->settings.on_body = ucb_body;
    p->settings.on_message_complete = ucb_message_complete;
    uv_timer_init(loop, &p->qtimer);
    p->qtimer.data = p;
    return p;
}

upstream_pool_t *upstream_pool_new(uv_loop_t *loop, engine_set_t *set, worker_t *w)
{
    return pool_new(loop, set, w);
}

upstream_pool_t *upstream_probe_pool_new(uv_loop_t *loop, engine_set_t *set, worker_t *w,
                                         unsigned timeout_ms)
{
    upstream_pool_t *p = pool_new(loop, set, w);
    if (p) {
        p->probe = 1;
        p->to_connect = p->to_first = p->to_total = timeout_ms;
    }
    return p;
}

static void on_pool_closed(uv_handle_t *h)
{
    upstream_pool_t *p = h->data;
    free(p->eng);
    free(p);
}

void upstream_pool_close(upstream_pool_t *p)
{
    for (int i = 0; i < p->set->n; i++)
        while (p->eng[i].idle)
            uconn_close(p->eng[i].idle);
    while (p->free_ex) {
        upstream_req_t *ex = p->free_ex;
        p->free_ex = (upstream_req_t *)ex->pool;
        buf_free(&ex->head);
        free(ex);
    }
    uv_close((uv_handle_t *)&p->qtimer, on_pool_closed);
}

unsigned upstream_pool_idle(const upstream_pool_t *p)
{
    unsigned n = 0;
    for (int i = 0; i < p->set->n; i++)
        n += p->eng[i].nidle;
    return n;
}

int upstream_pool_error(const upstream_pool_t *p) { return p->last_err; }

/* A new exchange with its head (without the engine's Host line), no engine yet. */
static upstream_req_t *ex_new(upstream_pool_t *p, const char *method, strv_t path, strv_t query,
                              const char *extra_headers, const void *body, size_t len,
                              const upstream_cbs_t *cbs, void *ud)
{
    upstream_req_t *ex = ex_get(p);
    if (!ex)
        return NULL;
    ex->pool = p;
    ex->eng = -1;
    ex->body = body;
    ex->body_len = len;
    ex->cbs = cbs;
    ex->ud = ud;
    ex->deadline_ms = uv_now(p->loop) + p->to_total;
    buf_t *h = &ex->head;
    int rc = buf_printf(h, "%s %.*s%s%.*s HTTP/1.1\r\n", method, (int)path.n, path.p,
                        query.n ? "?" : "", (int)query.n, query.p);
    ex->host_at = h->len;
    if (strcmp(method, "GET") != 0 || len)
        rc |= buf_printf(h, "Content-Length: %zu\r\n", len);
    if (extra_headers)
        rc |= buf_puts(h, extra_headers);
    rc |= buf_puts(h, "\r\n");
    if (rc != 0) {
        ex_free(ex);
        return NULL;
    }
    return ex;
}

upstream_req_t *upstream_send(upstream_pool_t *p, const char *method, strv_t path, strv_t query,
                              const char *extra_headers, const void *body, size_t len,
                              const upstream_cbs_t *cbs, void *ud)
{
    engine_set_t *s = p->set;
    upstream_req_t *ex = ex_new(p, method, path, query, extra_headers, body, len, cbs, ud);
    if (!ex) {
        p->last_err = UPS_E_NOMEM;
        return NULL;
    }
    int why = UPS_E_BUSY, e = -1;
    if (!p->nwait) /* first come, first served on this loop */
        e = pick(p, -1, &why);
    else if (!engines_healthy(s))
        why = UPS_E_NO_ENGINE;
    if (e < 0) {
        if (why == UPS_E_BUSY && s->cfg.queue_max &&
            __atomic_add_fetch(&s->queued, 1, __ATOMIC_RELAXED) <= (int)s->cfg.queue_max) {
            __atomic_add_fetch(&s->queued_total, 1, __ATOMIC_RELAXED);
            ex->queued = 1;
            ex->q_deadline = uv_now(p->loop) + s->cfg.queue_timeout_ms;
            if (p->qtail)
                p->qtail->qnext = ex;
            else
                p->qhead = ex;
            p->qtail = ex;
            if (p->nwait++ == 0)
                uv_timer_start(&p->qtimer, on_qtimer,
                               s->cfg.queue_timeout_ms < QUEUE_POLL_MS ? s->cfg.queue_timeout_ms
                                                                       : QUEUE_POLL_MS,
                               0);
            return ex;
        }
        if (why == UPS_E_BUSY && s->cfg.queue_max)
            __atomic_sub_fetch(&s->queued, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(why == UPS_E_BUSY ? &s->rejected_busy : &s->rejected_none, 1,
                           __ATOMIC_RELAXED);
        ex_free(ex);
        p->last_err = why;
        return NULL;
    }
    if (ex_start(ex, e) != 0) {
        uncount(ex);
        ex_free(ex);
        p->last_err = UPS_E_NOMEM;
        return NULL;
    }
    return ex;
}

upstream_req_t *upstream_send_to(upstream_pool_t *p, int engine, const char *method, strv_t path,
                                 const upstream_cbs_t *cbs, void *ud)
{
    upstream_req_t *ex = ex_new(p, method, path, (strv_t){"", 0}, NULL, NULL, 0, cbs, ud);
    if (!ex)
        return NULL;
    ex->eng = engine;
    upool_eng_t *pe = &p->eng[engine];
    uconn_t *c = pe->idle;
    if (c) {
        pe->idle = c->next_idle;
        pe->nidle--;
        c->state = U_IDLE;
    } else if (!(c = uconn_new(p, engine))) {
        ex_free(ex);
        return NULL;
    }
    ex_attach(ex, c);
    return ex;
}

void upstream_cancel(upstream_req_t *ex)
{
    if (ex->queued)
        q_remove(ex->pool, ex);
    ex_close_conn(ex);
    uncount(ex);
    ex_free(ex);
}

int upstream_engine(const upstream_req_t *ex) { return ex ? ex->eng : -1; }

void upstream_wipe_reads(upstream_req_t *ex) { ex->wipe_reads = 1; }

void upstream_pause(upstream_req_t *ex)
{
    ex->paused = 1;
    if (ex->conn && ex->conn->state == U_BUSY)
        uv_read_stop(&ex->conn->s.stream);
}

void upstream_resume(upstream_req_t *ex)
{
    if (!ex->paused)
        return;
    ex->paused = 0;
    if (ex->conn && ex->conn->state == U_BUSY)
        uv_read_start(&ex->conn->s.stream, on_ualloc, on_uread);
}
