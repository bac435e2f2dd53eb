/* Unit tests for the relay (src/proxy/relay.c), driven through the real router
 * (app_http_handler) on a real worker (src/http/server.c) and a real upstream pool
 * (src/http/upstream.c), wired as src/vllm-proxy.c wires them: one app_t, one app_worker_t,
 * a random signer, a memory store, no attestation service (no report route is called).
 *
 * Threads: the worker's libuv loop runs in its own thread; the test thread plays both the
 * client (plain blocking sockets with timeouts) and the FAKE ENGINE: a listening socket the
 * test accepts from and answers by hand, byte by byte, so every test scripts exactly what the
 * engine sends, when, and when it hangs up. Case 4 hands the engine's sending to a helper
 * thread (its sends must be able to block while the client does not read).
 *
 * What the proxy did is read on the loop thread (on_loop): its metrics, its free relays, its
 * idle engine connections, its client connections, its libuv handles (uv_walk) and the write
 * queue of one client connection. Every wait is on a condition with a deadline; alarm() is
 * the last resort against a hang. Helpers report their caller's file and line (at.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "at.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/sha.h"
#include "http/server.h"
#include "http/upstream.h"
#include "proxy/app.h"
#include "proxy/config.h"
#include "proxy/metrics.h"
#include "proxy/relay.h"
#include "proxy/router.h"
#include "proxy/sigstore.h"
#include "sign/signer.h"
#include "store/store.h"

#define WAIT_MS 5000       /* every condition wait */
#define IO_TIMEOUT_MS 5000 /* socket receive/send timeouts */
#define MODEL "test/relay-model"
#define TOKEN "relay-test-token"
#define CHAT "/v1/chat/completions"
/* The server's write-queue watermark (WQ_HIGH in src/http/server.c) and the most one engine
 * read can add on top of it before the relay pauses the engine (READ_BUF_SIZE, plus the
 * chunk framing of the pieces of that read). */
#define WQ_HIGH (256 * 1024)
#define WQ_BOUND (WQ_HIGH + 64 * 1024 + 4096)

#include "loop_thread.h"
#include "worker_port.h"

static uint64_t now_ms(void) { return clock_mono_ns() / 1000000u; }

/* ------------------------------------------------------------------------------------------ */
/* The loop thread and the proxy under test.                                                  */

static int running;
static int proxy_port;

static signer_t *g_signer;
static config_t cfg;
static app_t app;
static app_worker_t aw;
static app_worker_t *workers[1];

static int gate_entered, gate_open; /* loop_block / loop_unblock */

/* Holds the loop thread inside a callback until loop_unblock: whatever reaches the proxy's
 * sockets meanwhile is seen by one epoll_wait, in the order it arrived. */
static void gate_fn(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    gate_entered = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    wait_for(&gate_open, 1, 3 * WAIT_MS);
}

static void loop_block_at(AT_PARAMS)
{
    pthread_mutex_lock(&mu);
    gate_entered = gate_open = 0;
    pthread_mutex_unlock(&mu);
    post_on_loop(gate_fn, NULL);
    if (!wait_for(&gate_entered, 1, WAIT_MS))
        at_fail_msg("the loop thread did not enter the gate");
}
#define loop_block() loop_block_at(AT_HERE)

static void gate_release(void)
{
    pthread_mutex_lock(&mu);
    gate_open = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void loop_unblock_at(AT_PARAMS)
{
    gate_release();
    if (!wait_for(&call_done, 1, WAIT_MS))
        at_fail_msg("the loop thread did not leave the gate");
}
#define loop_unblock() loop_unblock_at(AT_HERE)

/* ------------------------------------------------------------------------------------------ */
/* The fake engine: a listening socket and the connections the proxy opened to it.           */

#define ENG_MAX 16
static struct {
    int lfd, port;
    int fds[ENG_MAX];
    int accepts, requests;
} eng = {.lfd = -1};

typedef struct eng_req {
    int fd;
    char head[4096];
    char path[256];
    char body[16384];
    size_t body_len;
} eng_req_t;

static void set_timeouts(int fd, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static void eng_listen(void)
{
    eng.lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(eng.lfd >= 0);
    int one = 1;
    setsockopt(eng.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(eng.lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(eng.lfd, (struct sockaddr *)&sa, &sl), 0);
    eng.port = ntohs(sa.sin_port);
    assert_int_equal(listen(eng.lfd, 16), 0);
    for (int i = 0; i < ENG_MAX; i++)
        eng.fds[i] = -1;
    eng.accepts = eng.requests = 0;
}

static void eng_forget(int fd)
{
    for (int i = 0; i < ENG_MAX; i++)
        if (eng.fds[i] == fd)
            eng.fds[i] = -1;
    close(fd);
}

static void eng_close_all(void)
{
    for (int i = 0; i < ENG_MAX; i++)
        if (eng.fds[i] >= 0) {
            close(eng.fds[i]);
            eng.fds[i] = -1;
        }
    if (eng.lfd >= 0)
        close(eng.lfd);
    eng.lfd = -1;
}

/* Reads one request head + Content-Length body from conn fd. 1 = a request, 0 = the proxy
 * closed the (idle) connection before sending anything. */
static int eng_read_request(AT_PARAMS, int fd, eng_req_t *rq)
{
    size_t hl = 0;
    char *end = NULL;
    while (!(end = memmem(rq->head, hl, "\r\n\r\n", 4))) {
        if (hl >= sizeof rq->head - 1)
            at_fail_msg("engine: request head over %zu bytes", sizeof rq->head);
        ssize_t k = recv(fd, rq->head + hl, sizeof rq->head - 1 - hl, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0 && hl == 0)
            return 0;
        if (k <= 0)
            at_fail_msg("engine: connection ended inside a request head (%zu bytes)", hl);
        hl += (size_t)k;
    }
    size_t head_len = (size_t)(end - rq->head) + 4;
    size_t extra = hl - head_len;
    rq->head[hl] = '\0';
    /* request line: METHOD SP PATH SP VERSION */
    const char *sp = strchr(rq->head, ' ');
    const char *sp2 = sp ? strchr(sp + 1, ' ') : NULL;
    at_assert_true(sp && sp2 && (size_t)(sp2 - sp - 1) < sizeof rq->path);
    memcpy(rq->path, sp + 1, (size_t)(sp2 - sp - 1));
    rq->path[sp2 - sp - 1] = '\0';
    size_t cl = 0;
    for (const char *p = rq->head; p && p < rq->head + head_len; p = strstr(p, "\r\n")) {
        p += (p == rq->head) ? 0 : 2;
        if (strncasecmp(p, "Content-Length:", 15) == 0)
            cl = strtoul(p + 15, NULL, 10);
        if (!*p)
            break;
    }
    if (cl > sizeof rq->body || extra > cl)
        at_fail_msg("engine: unexpected request body (%zu bytes, %zu extra)", cl, extra);
    memcpy(rq->body, rq->head + head_len, extra);
    rq->head[head_len] = '\0';
    rq->body_len = extra;
    while (rq->body_len < cl) {
        ssize_t k = recv(fd, rq->body + rq->body_len, cl - rq->body_len, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            at_fail_msg("engine: request body cut at %zu of %zu bytes", rq->body_len, cl);
        rq->body_len += (size_t)k;
    }
    rq->fd = fd;
    eng.requests++;
    return 1;
}

/* The next request the proxy sends to the engine, on a new or a pooled connection. */
static void eng_next_request_at(AT_PARAMS, eng_req_t *rq)
{
    uint64_t dl = now_ms() + WAIT_MS;
    for (;;) {
        struct pollfd p[ENG_MAX + 1];
        int np = 0;
        p[np++] = (struct pollfd){eng.lfd, POLLIN, 0};
        for (int i = 0; i < ENG_MAX; i++)
            if (eng.fds[i] >= 0)
                p[np++] = (struct pollfd){eng.fds[i], POLLIN, 0};
        uint64_t t = now_ms();
        if (t >= dl)
            at_fail_msg("engine: no request from the proxy within %d ms", WAIT_MS);
        int k = poll(p, (nfds_t)np, (int)(dl - t));
        if (k <= 0)
            continue;
        if (p[0].revents & POLLIN) {
            int fd = accept(eng.lfd, NULL, NULL);
            at_assert_true(fd >= 0);
            set_timeouts(fd, IO_TIMEOUT_MS);
            int i = 0;
            while (i < ENG_MAX && eng.fds[i] >= 0)
                i++;
            at_assert_true(i < ENG_MAX);
            eng.fds[i] = fd;
            eng.accepts++;
            continue;
        }
        for (int j = 1; j < np; j++) {
            if (!p[j].revents)
                continue;
            if (eng_read_request(AT_PASS, p[j].fd, rq))
                return;
            eng_forget(p[j].fd); /* an idle pooled connection the proxy closed */
        }
    }
}
#define eng_next_request(rq) eng_next_request_at(AT_HERE, rq)

static void send_all_at(AT_PARAMS, int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            at_fail_msg("send: %s", strerror(errno));
        s += k;
        n -= (size_t)k;
    }
}
#define eng_send(fd, s) send_all_at(AT_HERE, fd, s, strlen(s))

/* One chunk of a chunked engine body. */
static void eng_chunk_at(AT_PARAMS, int fd, const char *data)
{
    char h[32];
    snprintf(h, sizeof h, "%zx\r\n", strlen(data));
    buf_t b = BUF_INIT;
    buf_puts(&b, h);
    buf_puts(&b, data);
    buf_puts(&b, "\r\n");
    send_all_at(AT_PASS, fd, b.data, b.len);
    buf_free(&b);
}
#define eng_chunk(fd, s) eng_chunk_at(AT_HERE, fd, s)

/* Waits until the proxy closes the engine connection fd (EOF or reset; bytes before are
 * read and dropped). */
static void eng_expect_closed_at(AT_PARAMS, int fd)
{
    uint64_t dl = now_ms() + WAIT_MS;
    for (;;) {
        uint64_t t = now_ms();
        if (t >= dl)
            at_fail_msg("engine: the proxy did not close the engine connection within %d ms",
                        WAIT_MS);
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)(dl - t)) <= 0)
            continue;
        char tmp[4096];
        ssize_t k = recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (k == 0 || (k < 0 && (errno == ECONNRESET || errno == EPIPE)))
            return;
        if (k > 0)
            at_fail_msg("engine: unexpected %zd bytes from the proxy", k);
    }
}
#define eng_expect_closed(fd) eng_expect_closed_at(AT_HERE, fd)

#define SSE_HEAD \
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
#define EV(id, text)                                                                           \
    "data: {\"id\":\"" id "\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0," \
    "\"delta\":{\"content\":\"" text "\"}}]}\n\n"
#define EV_DONE "data: [DONE]\n\n"

/* ------------------------------------------------------------------------------------------ */
/* What the proxy did, read on the loop thread.                                               */

typedef struct pstate {
    metrics_t m;
    unsigned nfree, idle, conns, handles;
    int have_cli;      /* the connection of client port `cli_port` is open */
    size_t wq;         /* its write queue */
    uint64_t cli_out;  /* body bytes written to it */
    int cli_fd, up_fd; /* its socket; the socket of an open engine connection */
} pstate_t;

static int snap_cli_port; /* local port of the client whose connection is inspected */

static void walk_cb(uv_handle_t *h, void *arg)
{
    pstate_t *s = arg;
    s->handles++;
    if (h->type != UV_TCP || uv_is_closing(h))
        return;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername((uv_tcp_t *)h, (struct sockaddr *)&ss, &len) != 0 ||
        ss.ss_family != AF_INET)
        return; /* the listener */
    int peer = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_os_fd_t fd = -1;
    uv_fileno(h, &fd);
    if (snap_cli_port && peer == snap_cli_port) {
        const conn_t *c = h->data; /* server.c: the conn's tcp handle's data is the conn */
        s->have_cli = 1;
        s->wq = conn_write_queue_bytes(c);
        s->cli_out = conn_bytes_out(c);
        s->cli_fd = fd;
    } else if (peer == eng.port) {
        s->up_fd = fd;
    }
}

static void snap_fn(void *arg)
{
    pstate_t *s = arg;
    memset(s, 0, sizeof *s);
    s->cli_fd = s->up_fd = -1;
    s->m = aw.m;
    s->nfree = aw.nfree_relays;
    s->idle = aw.pool ? upstream_pool_idle(aw.pool) : 0;
    s->conns = worker_conn_count(aw.w);
    uv_walk(&loop, walk_cb, s);
}

static pstate_t snap_at(AT_PARAMS)
{
    pstate_t s;
    on_loop_at(AT_PASS, snap_fn, &s);
    return s;
}
#define snap() snap_at(AT_HERE)

static void dump_state(const pstate_t *s)
{
    print_error("proxy: streams_active=%llu free_relays=%u idle_engine_conns=%u client_conns=%u "
                "handles=%u stored=%llu skipped=%llu aborted=%llu chat_2xx=%llu "
                "upstream_closed=%llu client_wq=%zu\n",
                (unsigned long long)s->m.streams_active, s->nfree, s->idle, s->conns, s->handles,
                (unsigned long long)s->m.signatures_stored,
                (unsigned long long)s->m.signatures_skipped,
                (unsigned long long)s->m.requests[ROUTE_CHAT][0],
                (unsigned long long)s->m.requests[ROUTE_CHAT][2],
                (unsigned long long)s->m.upstream_errors[0][UPERR_CLOSED], s->wq);
}

/* Polls the proxy's state until cond (an expression over `s`) holds; fails at the caller's
 * line with the last state seen. */
#define WAIT_UNTIL(s, cond)                                        \
    do {                                                           \
        uint64_t dl_ = now_ms() + WAIT_MS;                         \
        for (;;) {                                                 \
            (s) = snap();                                          \
            if (cond)                                              \
                break;                                             \
            if (now_ms() > dl_) {                                  \
                print_error("timed out waiting for: %s\n", #cond); \
                dump_state(&(s));                                  \
                fail();                                            \
            }                                                      \
            usleep(2000);                                          \
        }                                                          \
    } while (0)

/* The relay let go: no stream active, exactly one relay on the free list (two would be a
 * double release: the same relay linked twice). */
#define RELAY_RELEASED(s) ((s).m.streams_active == 0 && (s).nfree == 1)

/* Back to the baseline: no client connection, `idle` pooled engine connections, and no other
 * libuv handle than the listener (its poll and its back-off timer), the test's wake-up async,
 * the engine pool's queue timer and two per pooled connection (its socket and its timer).
 * Closing handles count until their close callback ran. */
#define BASE_HANDLES 4u
static void expect_baseline_at(AT_PARAMS, unsigned idle)
{
    uint64_t dl = now_ms() + WAIT_MS;
    pstate_t s;
    for (;;) {
        s = snap_at(AT_PASS);
        if (s.conns == 0 && s.idle == idle && s.handles == BASE_HANDLES + 2 * idle)
            break;
        if (now_ms() > dl) {
            dump_state(&s);
            at_fail_msg(
                "not back to the baseline (0 client connections, %u idle engine connection(s), "
                "%u handles)",
                idle, BASE_HANDLES + 2 * idle);
        }
        usleep(2000);
    }
    at_assert_true(RELAY_RELEASED(s));
}
#define expect_baseline(idle) expect_baseline_at(AT_HERE, idle)

/* ------------------------------------------------------------------------------------------ */
/* Set-up and tear-down.                                                                      */

/* The fake engine's listener, then the proxy as src/vllm-proxy.c starts one worker. */
static void start_proxy(void)
{
    eng_listen();
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.model_name, sizeof cfg.model_name, "%s", MODEL);
    snprintf(cfg.upstream_url, sizeof cfg.upstream_url, "http://127.0.0.1:%d", eng.port);
    cfg.ntokens = 1;
    sha256(TOKEN, strlen(TOKEN), cfg.token_hash[0]);
    cfg.workers = 1;
    memset(&app, 0, sizeof app);
    app.cfg = &cfg;
    app.signer = g_signer;
    app.store = store_new(1024, 600);
    assert_non_null(app.store);
    app.attest = NULL; /* only the report route uses it */
    char err[512] = "";
    upstream_target_t tmpl = {.connect_timeout_ms = 2000,
                              .first_byte_timeout_ms = 10000,
                              .total_timeout_ms = 30000};
    engine_cfg_t ec = {.health_path = "/health"}; /* no checks: the engine is always up */
    app.engines = engines_new(cfg.upstream_url, &tmpl, &ec, err, sizeof err);
    if (!app.engines)
        fail_msg("engines_new: %s", err);
    memset(&aw, 0, sizeof aw);
    aw.app = &app;
    workers[0] = &aw;
    app.workers = workers;
    app.nworkers = 1;
    assert_int_equal(uv_loop_init(&loop), 0);
    http_limits_t lim = {.max_header_bytes = 8192,
                         .max_headers = 64,
                         .max_body = 1 << 20,
                         .header_timeout_ms = 5000,
                         .body_timeout_ms = 5000,
                         .idle_timeout_ms = 5000};
    aw.w = worker_new(&loop, 0, "127.0.0.1", 0, &lim, &app_http_handler, &aw, err, sizeof err);
    if (!aw.w)
        fail_msg("worker_new: %s", err);
    proxy_port = worker_port(&loop);
    assert_true(proxy_port > 0);
    aw.pool = upstream_pool_new(&loop, app.engines, aw.w);
    assert_non_null(aw.pool);
    snap_cli_port = 0;
    loop_thread_start();
    running = 1;
}

static void stop_on_loop(void *arg)
{
    (void)arg;
    worker_drain(aw.w, NULL);
    worker_close_all(aw.w); /* held responses: their owners' on_abort cancels the engine */
    upstream_pool_close(aw.pool);
    aw.pool = NULL;
}

static int client_fds[16];
static int nclient_fds;

/* Case 4's engine sender thread. */
static pthread_t sender_thr;
static int sender_running;

static int teardown(void **state)
{
    (void)state;
    int rc = 0;
    gate_release(); /* a test that failed while holding the loop */
    for (int i = 0; i < nclient_fds; i++)
        if (client_fds[i] >= 0)
            close(client_fds[i]);
    nclient_fds = 0;
    if (running) {
        running = 0;
        if (loop_thread_stop(stop_on_loop, NULL) != 0)
            return -1;
        uv_run(&loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&loop) != 0) {
            fprintf(stderr, "teardown: handles left open on the worker loop\n");
            rc = -1;
        }
        relay_free_list(&aw);
        buf_free(&aw.scratch);
        worker_free(aw.w);
        aw.w = NULL;
        store_free(app.store);
        app.store = NULL;
        engines_free(app.engines);
        app.engines = NULL;
    }
    eng_close_all();
    if (sender_running) {
        pthread_join(sender_thr, NULL);
        sender_running = 0;
    }
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* The client.                                                                                */

static int cli_local_port(int fd)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    return ntohs(sa.sin_port);
}

/* A client connection; rcvbuf > 0 shrinks its receive buffer (a slow reader's window). */
static int cli_connect_at(AT_PARAMS, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    at_assert_true(fd >= 0);
    set_timeouts(fd, IO_TIMEOUT_MS);
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)proxy_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        at_fail_msg("connect to the proxy: %s", strerror(errno));
    if (nclient_fds < (int)(sizeof client_fds / sizeof client_fds[0]))
        client_fds[nclient_fds++] = fd;
    return fd;
}
#define cli_connect(rcvbuf) cli_connect_at(AT_HERE, rcvbuf)

static void cli_forget(int fd)
{
    for (int i = 0; i < nclient_fds; i++)
        if (client_fds[i] == fd)
            client_fds[i] = -1;
}

static void cli_close(int fd)
{
    cli_forget(fd);
    close(fd);
}

/* Closes with SO_LINGER 0: the proxy gets a reset, not a FIN. */
static void cli_reset(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    cli_close(fd);
}

static void cli_post_at(AT_PARAMS, int fd, const char *path, const char *body)
{
    buf_t b = BUF_INIT;
    buf_printf(&b,
               "POST %s HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer " TOKEN "\r\n"
               "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
               path, strlen(body), body);
    send_all_at(AT_PASS, fd, b.data, b.len);
    buf_free(&b);
}
#define cli_post(fd, path, body) cli_post_at(AT_HERE, fd, path, body)

/* Buffered reader over a client socket, with a chunked-body decoder. */
typedef struct rd {
    int fd;
    size_t off, len;
    int64_t chunk_left; /* bytes left in the current chunk; -1: a size line comes next */
    int ended;          /* the terminating 0-chunk was read */
    char buf[65536];
} rd_t;

static rd_t *rd_new(int fd)
{
    rd_t *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->fd = fd;
    r->chunk_left = -1;
    return r;
}

/* More bytes: 1, or 0 on EOF/reset, -1 on a timeout. */
static int rd_fill(rd_t *r)
{
    if (r->off < r->len)
        return 1;
    for (;;) {
        ssize_t k = recv(r->fd, r->buf, sizeof r->buf, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k > 0) {
            r->off = 0;
            r->len = (size_t)k;
            return 1;
        }
        if (k == 0 || errno == ECONNRESET)
            return 0;
        return -1;
    }
}

/* A line without its CRLF into out; 1, 0 (EOF) or -1 (timeout). */
static int rd_line(rd_t *r, char *out, size_t cap)
{
    size_t n = 0;
    for (;;) {
        int f = rd_fill(r);
        if (f <= 0)
            return f;
        char ch = r->buf[r->off++];
        if (ch == '\n') {
            if (n && out[n - 1] == '\r')
                n--;
            out[n] = '\0';
            return 1;
        }
        if (n < cap - 1)
            out[n++] = ch;
    }
}

typedef struct head {
    int status;
    char raw[4096];
    long long cl; /* -1 without Content-Length */
    int chunked;
} head_t;

static void rd_head_at(AT_PARAMS, rd_t *r, head_t *h)
{
    memset(h, 0, sizeof *h);
    h->cl = -1;
    size_t n = 0;
    for (int first = 1;; first = 0) {
        char l[1024];
        int f = rd_line(r, l, sizeof l);
        if (f <= 0)
            at_fail_msg("client: %s while reading the response head ('%s')", f ? "timeout" : "EOF",
                        h->raw);
        n += (size_t)snprintf(h->raw + n, sizeof h->raw - n, "%s\r\n", l);
        at_assert_true(n < sizeof h->raw);
        if (first) {
            at_assert_true(strncmp(l, "HTTP/1.1 ", 9) == 0);
            h->status = atoi(l + 9);
        } else if (!*l)
            return;
        else if (strncasecmp(l, "Content-Length:", 15) == 0)
            h->cl = atoll(l + 15);
        else if (strcasecmp(l, "Transfer-Encoding: chunked") == 0)
            h->chunked = 1;
    }
}
#define rd_head(r, h) rd_head_at(AT_HERE, r, h)

/* Appends de-chunked body bytes to out until it holds `until` bytes (0: to the terminating
 * chunk). 1 when there, 0 when the connection ended first (a truncated body), -1 on a
 * timeout or a framing error. */
static int rd_chunked(rd_t *r, buf_t *out, size_t until)
{
    while (!r->ended && (until == 0 || out->len < until)) {
        if (r->chunk_left < 0) {
            char l[64];
            int f = rd_line(r, l, sizeof l);
            if (f <= 0)
                return f;
            char *e;
            long long n = strtoll(l, &e, 16);
            if (e == l || *e || n < 0)
                return -1;
            r->chunk_left = n;
            if (n == 0) {
                if (rd_line(r, l, sizeof l) != 1 || *l) /* the CRLF after the last chunk */
                    return -1;
                r->ended = 1;
                break;
            }
        }
        while (r->chunk_left > 0 && (until == 0 || out->len < until)) {
            int f = rd_fill(r);
            if (f <= 0)
                return f;
            size_t k = r->len - r->off;
            if ((int64_t)k > r->chunk_left)
                k = (size_t)r->chunk_left;
            buf_append(out, r->buf + r->off, k);
            r->off += k;
            r->chunk_left -= (int64_t)k;
        }
        if (r->chunk_left == 0) {
            char l[8];
            if (rd_line(r, l, sizeof l) != 1 || *l)
                return -1;
            r->chunk_left = -1;
        }
    }
    return 1;
}

static void rd_exact_at(AT_PARAMS, rd_t *r, buf_t *out, size_t n)
{
    while (n) {
        int f = rd_fill(r);
        if (f <= 0)
            at_fail_msg("client: %s with %zu body bytes still to come", f ? "timeout" : "EOF", n);
        size_t k = r->len - r->off < n ? r->len - r->off : n;
        buf_append(out, r->buf + r->off, k);
        r->off += k;
        n -= k;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Signature records.                                                                         */

static int stored_record(const char *id, buf_t *out)
{
    char key[512];
    int n = snprintf(key, sizeof key, "%s:chat:%s", MODEL, id);
    return store_get(app.store, key, (size_t)n, clock_wall_s(), out);
}

/* A record under id whose text is sha256(request body) ":" sha256(response body). */
static void expect_signed_at(AT_PARAMS, const char *id, const char *req_body, const void *resp,
                             size_t n)
{
    buf_t rec = BUF_INIT;
    if (stored_record(id, &rec) != STORE_OK)
        at_fail_msg("no signature record for %s", id);
    char rh[SHA256_HEX_LEN + 1], sh[SHA256_HEX_LEN + 1], want[300];
    sha256_hex(req_body, strlen(req_body), rh);
    sha256_hex(resp, n, sh);
    snprintf(want, sizeof want, "\"text\": \"%s:%s\"", rh, sh);
    buf_append(&rec, "", 1);
    if (!strstr(rec.data, want)) {
        print_error("record: %s\nwanted: %s\n", rec.data, want);
        buf_free(&rec);
        at_fail();
    }
    buf_free(&rec);
}
#define expect_signed(id, req, resp, n) expect_signed_at(AT_HERE, id, req, resp, n)

static void expect_unsigned_at(AT_PARAMS, const char *id)
{
    buf_t rec = BUF_INIT;
    int rc = stored_record(id, &rec);
    buf_free(&rec);
    if (rc != STORE_NOT_FOUND)
        at_fail_msg("a signature record exists for %s", id);
    at_assert_int_equal(store_count(app.store), 0);
}
#define expect_unsigned(id) expect_unsigned_at(AT_HERE, id)

/* ------------------------------------------------------------------------------------------ */
/* 1. Complete answers: a stream and a JSON body, on one keep-alive client connection and one
 *    pooled engine connection.                                                             */

static const char STREAM_REQ[] =
    "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
static const char JSON_REQ[] =
    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}";

static void test_complete_stream_and_json(void **state)
{
    (void)state;
    start_proxy();
    int fd = cli_connect(0);
    rd_t *r = rd_new(fd);
    head_t h;
    buf_t body = BUF_INIT;
    eng_req_t rq;

    /* -- a stream -- */
    cli_post(fd, CHAT, STREAM_REQ);
    eng_next_request(&rq);
    assert_string_equal(rq.path, CHAT);
    assert_int_equal(rq.body_len, strlen(STREAM_REQ));
    assert_memory_equal(rq.body, STREAM_REQ, rq.body_len);
    assert_null(strstr(rq.head, TOKEN)); /* the client's token is never forwarded */
    eng_send(rq.fd, SSE_HEAD);
    static const char e1[] = EV("chatcmpl-s1", "Hel"), e2[] = EV("chatcmpl-s1", "lo"),
                      e3[] = EV("chatcmpl-s1", "!");
    eng_chunk(rq.fd, e1);
    rd_head(r, &h);
    assert_int_equal(h.status, 200);
    assert_true(h.chunked);
    assert_non_null(strstr(h.raw, "Content-Type: text/event-stream\r\n"));
    assert_non_null(strstr(h.raw, "X-Accel-Buffering: no\r\n"));
    /* Streamed through: the first event reaches the client before the engine sends more. */
    assert_int_equal(rd_chunked(r, &body, strlen(e1)), 1);
    assert_int_equal(body.len, strlen(e1));
    pstate_t s = snap();
    assert_int_equal(s.m.streams_active, 1);
    assert_int_equal(s.nfree, 0);
    eng_chunk(rq.fd, e2);
    eng_chunk(rq.fd, e3);
    eng_chunk(rq.fd, EV_DONE);
    eng_send(rq.fd, "0\r\n\r\n");
    assert_int_equal(rd_chunked(r, &body, 0), 1);
    buf_t want = BUF_INIT;
    buf_puts(&want, e1);
    buf_puts(&want, e2);
    buf_puts(&want, e3);
    buf_puts(&want, EV_DONE);
    assert_int_equal(body.len, want.len);
    assert_memory_equal(body.data, want.data, want.len);
    /* Stored before the client could see the end: present as soon as the client has it. */
    expect_signed("chatcmpl-s1", STREAM_REQ, body.data, body.len);
    WAIT_UNTIL(s, RELAY_RELEASED(s));
    assert_int_equal(s.m.signatures_stored, 1);
    assert_int_equal(s.m.signatures_skipped, 0);
    assert_int_equal(s.m.requests[ROUTE_CHAT][2], 1);
    assert_int_equal(s.m.requests[ROUTE_CHAT][0], 0);
    assert_int_equal(s.idle, 1); /* the engine connection went back to the pool */

    /* -- a JSON body, Content-Length framed, on the same connections -- */
    static const char json[] =
        "{\"id\":\"chatcmpl-j1\",\"object\":\"chat.completion\",\"model\":\"m\",\"choices\":"
        "[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"hi there\"},"
        "\"finish_reason\":\"stop\"}]}";
    cli_post(fd, CHAT, JSON_REQ);
    eng_next_request(&rq);
    assert_int_equal(eng.accepts, 1); /* the pooled engine connection was reused */
    assert_int_equal(eng.requests, 2);
    assert_memory_equal(rq.body, JSON_REQ, strlen(JSON_REQ));
    char eh[200];
    snprintf(eh, sizeof eh,
             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n",
             strlen(json));
    eng_send(rq.fd, eh);
    /* the body in two pieces: the id scanner and the hash see it whole */
    char part[40];
    memcpy(part, json, 30);
    part[30] = '\0';
    eng_send(rq.fd, part);
    eng_send(rq.fd, json + 30);
    rd_head(r, &h);
    assert_int_equal(h.status, 200);
    assert_int_equal(h.cl, (long long)strlen(json));
    assert_non_null(strstr(h.raw, "Content-Type: application/json\r\n"));
    buf_reset(&body);
    rd_exact_at(AT_HERE, r, &body, (size_t)h.cl);
    assert_memory_equal(body.data, json, strlen(json));
    expect_signed("chatcmpl-j1", JSON_REQ, json, strlen(json));
    WAIT_UNTIL(s, RELAY_RELEASED(s) && s.m.requests[ROUTE_CHAT][2] == 2);
    assert_int_equal(s.m.signatures_stored, 2);
    assert_int_equal(s.m.signatures_skipped, 0);
    assert_int_equal(s.m.upstream_errors[0][UPERR_CLOSED], 0);
    assert_int_equal(store_count(app.store), 2);

    cli_close(fd);
    expect_baseline(1);
    buf_free(&want);
    buf_free(&body);
    free(r);
}

/* ------------------------------------------------------------------------------------------ */
/* A stream under way, as cases 2, 3 and 5a begin.                                            */

typedef struct stream {
    int fd;       /* the client's connection */
    rd_t *r;      /* its reader */
    head_t h;     /* the response head it read */
    buf_t body;   /* the body it read */
    eng_req_t rq; /* the request as the engine got it */
} stream_t;

/* The proxy started, a client posting STREAM_REQ, the engine answering SSE_HEAD and the
 * event e1, and the client reading the 200 head and that first event. */
static void stream_first_event_at(AT_PARAMS, stream_t *st, const char *e1)
{
    start_proxy();
    st->fd = cli_connect_at(AT_PASS, 0);
    st->r = rd_new(st->fd);
    st->body = (buf_t)BUF_INIT;
    cli_post_at(AT_PASS, st->fd, CHAT, STREAM_REQ);
    eng_next_request_at(AT_PASS, &st->rq);
    send_all_at(AT_PASS, st->rq.fd, SSE_HEAD, strlen(SSE_HEAD));
    eng_chunk_at(AT_PASS, st->rq.fd, e1);
    rd_head_at(AT_PASS, st->r, &st->h);
    at_assert_int_equal(st->h.status, 200);
    at_assert_int_equal(rd_chunked(st->r, &st->body, strlen(e1)), 1);
}
#define stream_first_event(st, e1) stream_first_event_at(AT_HERE, st, e1)

/* ------------------------------------------------------------------------------------------ */
/* 2. The client goes away mid-stream: the engine request is cancelled at once.              */

static void test_client_gone_mid_stream(void **state)
{
    (void)state;
    static const char e1[] = EV("chatcmpl-gone", "first");
    stream_t st;
    stream_first_event(&st, e1);
    cli_close(st.fd);
    /* The engine still has chunks to send; the proxy hangs up on it (vLLM would stop
     * generating). */
    eng_expect_closed(st.rq.fd);
    eng_forget(st.rq.fd);
    pstate_t s;
    WAIT_UNTIL(s, RELAY_RELEASED(s) && s.m.requests[ROUTE_CHAT][0] == 1);
    assert_int_equal(s.m.signatures_skipped, 1);
    assert_int_equal(s.m.signatures_stored, 0);
    assert_int_equal(s.m.requests[ROUTE_CHAT][2], 0);
    for (int k = 0; k < UPERR_N; k++)
        assert_int_equal(s.m.upstream_errors[0][k], 0); /* a cancel is not an engine error */
    expect_unsigned("chatcmpl-gone");
    assert_int_equal(eng.requests, 1); /* not retried */
    expect_baseline(0);
    buf_free(&st.body);
    free(st.r);
}

/* ------------------------------------------------------------------------------------------ */
/* 3. The engine hangs up mid-stream: the client's body is cut, nothing is signed.           */

static void test_engine_cut_mid_stream(void **state)
{
    (void)state;
    static const char e1[] = EV("chatcmpl-cut", "one"), e2[] = EV("chatcmpl-cut", "two");
    stream_t st;
    stream_first_event(&st, e1);
    assert_true(st.h.chunked);
    /* Half of the next chunk, then the engine is gone. */
    char part[128];
    int pn = snprintf(part, sizeof part, "%zx\r\n%.20s", strlen(e2), e2);
    send_all_at(AT_HERE, st.rq.fd, part, (size_t)pn);
    eng_forget(st.rq.fd);
    /* The client gets what the engine sent and then the close: no terminating 0-chunk. */
    assert_int_equal(rd_chunked(st.r, &st.body, 0), 0);
    assert_false(st.r->ended);
    assert_int_equal(st.body.len, strlen(e1) + 20);
    assert_memory_equal(st.body.data, e1, strlen(e1));
    assert_memory_equal(st.body.data + strlen(e1), e2, 20);
    pstate_t s;
    WAIT_UNTIL(s, RELAY_RELEASED(s) && s.m.upstream_errors[0][UPERR_CLOSED] == 1);
    assert_int_equal(s.m.signatures_skipped, 1);
    assert_int_equal(s.m.signatures_stored, 0);
    assert_int_equal(s.m.requests[ROUTE_CHAT][0], 0); /* not the client's doing */
    assert_int_equal(eng.requests, 1);                /* bytes had arrived: never retried */
    expect_unsigned("chatcmpl-cut");
    expect_baseline(0);
    buf_free(&st.body);
    free(st.r);
}

/* ------------------------------------------------------------------------------------------ */
/* 4. Backpressure: a client that does not read pauses the engine; then it gets everything. */

#define BP_EVENTS 4096
#define BP_FILL 4000

typedef struct sender {
    int fd;
    const char *wire;
    size_t len, sent;
    int err;
} sender_t;

static sender_t snd;

static void *sender_main(void *arg)
{
    sender_t *x = arg;
    size_t off = 0;
    while (off < x->len) {
        size_t n = x->len - off < 16384 ? x->len - off : 16384;
        ssize_t k = send(x->fd, x->wire + off, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            pthread_mutex_lock(&mu);
            x->err = errno ? errno : -1;
            pthread_mutex_unlock(&mu);
            return NULL;
        }
        off += (size_t)k;
        pthread_mutex_lock(&mu);
        x->sent = off;
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static size_t sender_progress(int *err)
{
    pthread_mutex_lock(&mu);
    size_t v = snd.sent;
    *err = snd.err;
    pthread_mutex_unlock(&mu);
    return v;
}

static void test_backpressure(void **state)
{
    (void)state;
    start_proxy();
    /* The engine's answer: BP_EVENTS events of about 4 KiB (16 MiB), each its own chunk, each
     * different (byte-for-byte comparison catches a lost, doubled or reordered piece). */
    buf_t wire = BUF_INIT, want = BUF_INIT;
    buf_puts(&wire, SSE_HEAD);
    char fill[BP_FILL + 1];
    for (int i = 0; i < BP_EVENTS; i++) {
        for (int j = 0; j < BP_FILL; j++)
            fill[j] = (char)('a' + (i * 7 + j) % 26);
        fill[BP_FILL] = '\0';
        size_t at = want.len;
        buf_printf(&want,
                   "data: {\"id\":\"chatcmpl-bp\",\"choices\":[{\"index\":0,\"delta\":"
                   "{\"content\":\"%05d %s\"}}]}\n\n",
                   i, fill);
        buf_printf(&wire, "%zx\r\n", want.len - at);
        buf_append(&wire, want.data + at, want.len - at);
        buf_puts(&wire, "\r\n");
    }
    buf_puts(&want, EV_DONE);
    buf_printf(&wire, "%zx\r\n%s\r\n0\r\n\r\n", strlen(EV_DONE), EV_DONE);

    int fd = cli_connect(4096);
    snap_cli_port = cli_local_port(fd);
    cli_post(fd, CHAT, STREAM_REQ);
    eng_req_t rq;
    eng_next_request(&rq);
    int small = 65536;
    setsockopt(rq.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    set_timeouts(rq.fd, 4 * WAIT_MS);
    snd = (sender_t){.fd = rq.fd, .wire = wire.data, .len = wire.len};
    assert_int_equal(pthread_create(&sender_thr, NULL, sender_main, &snd), 0);
    sender_running = 1;

    /* The client reads nothing. The proxy queues past the high watermark, pauses the engine
     * and the engine's sends block: its progress stops short of the whole answer while the
     * proxy's write queue stays bounded by the watermark plus one engine read. */
    uint64_t dl = now_ms() + 2 * WAIT_MS, still_since = now_ms();
    size_t last = 0, max_wq = 0;
    int err = 0;
    pstate_t s;
    for (;;) {
        size_t p = sender_progress(&err);
        s = snap();
        if (s.wq > max_wq)
            max_wq = s.wq;
        if (err)
            fail_msg("engine send failed: %s", strerror(err));
        if (p == wire.len)
            fail_msg("the engine sent its whole answer (%zu bytes) to a client that read "
                     "nothing: never paused (proxy write queue %zu)",
                     wire.len, s.wq);
        if (p != last) {
            last = p;
            still_since = now_ms();
        } else if (now_ms() - still_since >= 200 && s.wq > WQ_HIGH) {
            break;
        }
        if (now_ms() > dl) {
            dump_state(&s);
            fail_msg("the engine never stalled (sent %zu of %zu)", p, wire.len);
        }
        usleep(5000);
    }
    assert_true(s.have_cli);
    if (max_wq > WQ_BOUND)
        fail_msg("proxy write queue reached %zu bytes (bound %d)", max_wq, WQ_BOUND);
    assert_int_equal(s.m.streams_active, 1);
    assert_true(last < wire.len);

    /* Now the client reads it all, byte for byte; the relay resumes on every drain. */
    rd_t *r = rd_new(fd);
    head_t h;
    rd_head(r, &h);
    assert_int_equal(h.status, 200);
    buf_t body = BUF_INIT;
    int f = rd_chunked(r, &body, 0);
    if (f != 1)
        fail_msg("client: body ended early (%d) after %zu of %zu bytes", f, body.len, want.len);
    assert_int_equal(body.len, want.len);
    assert_memory_equal(body.data, want.data, want.len);
    pthread_join(sender_thr, NULL);
    sender_running = 0;
    assert_int_equal(snd.err, 0);
    assert_int_equal(snd.sent, wire.len);
    assert_int_equal(eng.requests, 1);
    expect_signed("chatcmpl-bp", STREAM_REQ, body.data, body.len);
    WAIT_UNTIL(s, RELAY_RELEASED(s));
    assert_int_equal(s.m.signatures_stored, 1);
    assert_int_equal(s.m.signatures_skipped, 0);
    assert_int_equal(s.m.requests[ROUTE_CHAT][2], 1);
    cli_close(fd);
    expect_baseline(1);
    buf_free(&body);
    buf_free(&wire);
    buf_free(&want);
    free(r);
}

/* ------------------------------------------------------------------------------------------ */
/* 5. The write of the last chunk fails.                                                      */

/* Waits until poll() on fd reports any of `events` (the test thread only looks). */
static void expect_poll_at(AT_PARAMS, int fd, short events, const char *what)
{
    uint64_t dl = now_ms() + WAIT_MS;
    for (;;) {
        struct pollfd p = {fd, events, 0};
        uint64_t t = now_ms();
        if (t >= dl)
            at_fail_msg("timed out waiting for %s", what);
        if (poll(&p, 1, (int)(dl - t)) > 0 && (p.revents & (events | POLLERR | POLLHUP)))
            return;
    }
}

/* 5a. The client resets its connection just before the engine's last bytes arrive, and the
 * proxy learns it from the write: the loop is held while (in this order) the engine's
 * [DONE] and end-of-body reach the proxy's engine socket and the client's reset reaches the
 * proxy's client socket; released, one epoll_wait reports both in that order. The engine
 * read completes the exchange: relay_on_done finalizes (signs and stores), then ends the
 * response, and the write of the last chunk and terminator fails (ECONNRESET/EPIPE), which
 * closes the connection without an on_abort (the relay had already taken the connection
 * back from the server). The relay is released exactly once, by relay_on_done.
 *
 * The record IS stored although the client never got the end: this is the documented order
 * (docs/ARCHITECTURE.md, "Sign": stored before the client can see the end of the body), so
 * a client that got a complete body always finds its record; the converse does not hold. */
static void test_last_write_fails(void **state)
{
    (void)state;
    static const char e1[] = EV("chatcmpl-w5", "almost"), e2[] = EV("chatcmpl-w5", " done");
    stream_t st;
    stream_first_event(&st, e1);
    snap_cli_port = cli_local_port(st.fd);
    pstate_t s = snap();
    assert_true(s.have_cli && s.cli_fd >= 0 && s.up_fd >= 0);

    loop_block();
    char tail[512];
    int tn = snprintf(tail, sizeof tail, "%zx\r\n%s\r\n%zx\r\n%s\r\n0\r\n\r\n", strlen(e2), e2,
                      strlen(EV_DONE), EV_DONE);
    send_all_at(AT_HERE, st.rq.fd, tail, (size_t)tn);
    expect_poll_at(AT_HERE, s.up_fd, POLLIN, "the engine's last bytes at the proxy");
    cli_reset(st.fd);
    expect_poll_at(AT_HERE, s.cli_fd, POLLRDHUP, "the client's reset at the proxy");
    loop_unblock();

    WAIT_UNTIL(s, RELAY_RELEASED(s) && s.conns == 0);
    assert_int_equal(s.m.requests[ROUTE_CHAT][0], 0); /* no on_abort: the write failed */
    assert_int_equal(s.m.requests[ROUTE_CHAT][2], 1);
    assert_int_equal(s.m.signatures_stored, 1);
    assert_int_equal(s.m.signatures_skipped, 0);
    assert_int_equal(eng.requests, 1);
    buf_t want = BUF_INIT;
    buf_puts(&want, e1);
    buf_puts(&want, e2);
    buf_puts(&want, EV_DONE);
    expect_signed("chatcmpl-w5", STREAM_REQ, want.data, want.len);
    expect_baseline(1); /* the engine's exchange completed: its connection is pooled */
    buf_free(&want);
    buf_free(&st.body);
    free(st.r);
}

/* 5b. The end is queued behind a client that does not read (the kernel's buffers are full),
 * and the client then resets. The relay let go when it ended the response (signed and
 * stored first); the failing write belongs to the server alone: the relay is not called
 * again (one release, no abort counted) and the record stays visible. */
#define QUEUED_MIN (64 * 1024)

static void test_queued_end_then_reset(void **state)
{
    (void)state;
    start_proxy();
    int fd = cli_connect(4096);
    snap_cli_port = cli_local_port(fd);
    cli_post(fd, CHAT, STREAM_REQ);
    eng_req_t rq;
    eng_next_request(&rq);
    eng_send(rq.fd, SSE_HEAD);
    /* Events until the proxy has queued QUEUED_MIN bytes (the socket's buffers are full; a
     * late ACK cannot take that much): far below the high watermark, so the engine is never
     * paused. */
    buf_t want = BUF_INIT;
    char fill[8001];
    pstate_t s = snap();
    int i;
    for (i = 0; i < 2048; i++) {
        memset(fill, 'a' + i % 26, 8000);
        fill[8000] = '\0';
        size_t at = want.len;
        buf_printf(&want,
                   "data: {\"id\":\"chatcmpl-q5\",\"choices\":[{\"index\":0,\"delta\":"
                   "{\"content\":\"%d %s\"}}]}\n\n",
                   i, fill);
        eng_chunk(rq.fd, want.data + at);
        WAIT_UNTIL(s, s.have_cli && s.cli_out == want.len);
        if (s.wq >= QUEUED_MIN)
            break;
    }
    if (s.wq < QUEUED_MIN)
        fail_msg("the proxy queued only %zu bytes (%zu taken by the kernel)", s.wq, want.len);
    assert_true(s.wq < WQ_HIGH);
    eng_chunk(rq.fd, EV_DONE);
    eng_send(rq.fd, "0\r\n\r\n");
    buf_puts(&want, EV_DONE);
    /* The relay is done and released while the end still sits in the write queue. */
    WAIT_UNTIL(s, RELAY_RELEASED(s));
    assert_int_equal(s.m.signatures_stored, 1);
    assert_true(s.have_cli);
    assert_true(s.wq > 0);
    expect_signed("chatcmpl-q5", STREAM_REQ, want.data, want.len);
    cli_reset(fd);
    WAIT_UNTIL(s, s.conns == 0);
    assert_int_equal(s.nfree, 1);
    assert_int_equal(s.m.requests[ROUTE_CHAT][0], 0);
    assert_int_equal(s.m.requests[ROUTE_CHAT][2], 1);
    assert_int_equal(eng.requests, 1);
    expect_signed("chatcmpl-q5", STREAM_REQ, want.data, want.len);
    expect_baseline(1);
    buf_free(&want);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char m[] = "test_relay: timed out (alarm)\n";
    if (write(2, m, sizeof m - 1) < 0) {
    }
    _exit(3);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm(120);
    log_set_level(LOG_LVL_ERROR); /* the relay warns on every path these tests take */
    if (signer_global_init() != 0 || !(g_signer = signer_new_random())) {
        fprintf(stderr, "test_relay: cannot create signing keys\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_complete_stream_and_json, teardown),
        cmocka_unit_test_teardown(test_client_gone_mid_stream, teardown),
        cmocka_unit_test_teardown(test_engine_cut_mid_stream, teardown),
        cmocka_unit_test_teardown(test_backpressure, teardown),
        cmocka_unit_test_teardown(test_last_write_fails, teardown),
        cmocka_unit_test_teardown(test_queued_end_then_reset, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    signer_free(g_signer);
    return rc;
}
