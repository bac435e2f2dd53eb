/* libFuzzer target: the engine side. The fuzz input is what a fake engine answers to one
 * relayed chat completion; it goes through the real upstream client (src/http/upstream.c:
 * llhttp response parsing, chunked and length framing, 1xx, keep-alive) and the real relay
 * (src/proxy/relay.c: SSE framer, id scanner, hashing, signing, the client's framing), reached
 * through the real router on a real worker (src/http/server.c), wired as tests/unit/test_relay.c
 * wires an app: one app_t, one app_worker_t, a random signer, a memory store (a fresh one per
 * input), no Redis, no attestation.
 *
 * Everything runs on this thread: one libuv loop turned with UV_RUN_NOWAIT, a client socket
 * to the proxy and a fake engine (a listening socket; each input gets a new engine connection,
 * the previous one is closed and the proxy's pool must drop it).
 *
 * Input: byte 0 = flags, byte 1 = seed of the split points, the rest = the engine's bytes.
 *   flags bit 0     the client asks for a stream ("stream": true)
 *   flags bits 1-2  after its bytes the engine 0: closes (FIN), 1: resets (RST),
 *                   2: stays open (the client gives up and closes), 3: closes, but the client
 *                   drops its connection after the engine's first write
 *   flags bit 3     the client closes with a reset (SO_LINGER 0) rather than a FIN
 *   flags bits 4-5  the engine's bytes go out in 1 + that many writes, split at points drawn
 *                   from byte 1, with loop turns in between
 *   flags bit 6     the client sends "Connection: close"
 *   flags bit 7     the client's receive buffer is small (the relay's backpressure)
 *
 * Invariants checked:
 *  - the client receives at most one response (status 200-599, never an interim one), framed
 *    by Content-Length or chunked (no body for 204/304), with nothing after it; a response
 *    cut short only when the proxy closed the connection (or the engine is still sending);
 *  - once the engine has closed or reset, the proxy finishes the response or closes the
 *    client connection within a bound (no hang);
 *  - a signature is stored only for a complete answer: at most one record, as many as the
 *    signatures_stored counter says; the client (when it stayed) got a complete 2xx response;
 *    the record's text is sha256(request body) ":" sha256(the body the client got); for an
 *    event stream that body holds "data: [DONE]";
 *  - afterwards the relay is released (no active stream, at most one free relay), the worker
 *    holds no client connection, the pool no engine connection, and the loop has exactly the
 *    handles it had after set-up. */
#include "fuzz.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

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
#include "sign/signer.h"
#include "store/store.h"

#define MODEL "fuzz/upstream-model"
#define TOKEN "fuzz-upstream-token"
#define RESP_CAP (4u * 1024 * 1024)
#define IDLE_TURNS 24
#define WAIT_MS 3000

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "fuzz_upstream: check failed: %s: ", #cond);                     \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
            dump();                                                                           \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

static const char STREAM_REQ[] =
    "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
static const char JSON_REQ[] =
    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}";

static struct {
    uv_loop_t loop;
    config_t cfg;
    app_t app;
    app_worker_t aw;
    app_worker_t *workers[1];
    signer_t *signer;
    int port;     /* the proxy's */
    int eng_lfd;  /* the fake engine's listener */
    int eng_port;
    unsigned base_handles;
    int debug;
} G;

/* Per input. */
static struct {
    int cfd, efd;           /* client and engine sockets */
    char *resp;             /* what the client received */
    size_t len;
    int eof;                /* the proxy closed the client connection */
    int client_gone;        /* the client closed its side */
    char req[8192];         /* what the engine received */
    size_t req_len;
} K;

static void dump(void)
{
    if (!K.resp)
        return;
    fprintf(stderr, "---- client received %zu bytes (eof %d, gone %d):\n", K.len, K.eof,
            K.client_gone);
    fwrite(K.resp, 1, K.len < 2048 ? K.len : 2048, stderr);
    fprintf(stderr, "\n----\n");
}

static uint64_t now_ms(void) { return clock_mono_ns() / 1000000u; }

/* ---- set-up ---- */

static void find_port(uv_handle_t *h, void *arg)
{
    int *p = arg;
    uv_os_fd_t fd;
    if (h->type != UV_POLL || *p || uv_fileno(h, &fd) != 0)
        return;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_INET)
        *p = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void count_handle(uv_handle_t *h, void *arg)
{
    (void)h;
    (*(unsigned *)arg)++;
}

static unsigned handles(void)
{
    unsigned n = 0;
    uv_walk(&G.loop, count_handle, &n);
    return n;
}

static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    CHECK(fd >= 0, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "bind: %s", strerror(errno));
    socklen_t sl = sizeof sa;
    CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0, "getsockname");
    CHECK(listen(fd, 16) == 0, "listen: %s", strerror(errno));
    *port = ntohs(sa.sin_port);
    return fd;
}

static void setup_once(void)
{
    if (G.aw.w)
        return;
    signal(SIGPIPE, SIG_IGN);
    G.debug = getenv("FUZZ_UPSTREAM_DEBUG") != NULL;
    log_set_level(G.debug ? LOG_LVL_DEBUG : LOG_LVL_OFF);
    CHECK(signer_global_init() == 0, "signer_global_init");
    G.signer = signer_new_random();
    CHECK(G.signer != NULL, "signer_new_random");
    G.eng_lfd = listen_loopback(&G.eng_port);

    snprintf(G.cfg.model_name, sizeof G.cfg.model_name, "%s", MODEL);
    snprintf(G.cfg.upstream_url, sizeof G.cfg.upstream_url, "http://127.0.0.1:%d", G.eng_port);
    G.cfg.ntokens = 1;
    sha256(TOKEN, strlen(TOKEN), G.cfg.token_hash[0]);
    G.cfg.workers = 1;
    G.app.cfg = &G.cfg;
    G.app.signer = G.signer;
    G.app.store = store_new(16, 600);
    CHECK(G.app.store != NULL, "store_new");
    char err[512] = "";
    /* Long enough never to fire within one input: every end is driven by a socket event. */
    upstream_target_t tmpl = {.connect_timeout_ms = 10000,
                              .first_byte_timeout_ms = 20000,
                              .total_timeout_ms = 30000};
    engine_cfg_t ec = {.health_path = "/health"}; /* no checks: the engine is always up */
    G.app.engines = engines_new(G.cfg.upstream_url, &tmpl, &ec, err, sizeof err);
    CHECK(G.app.engines != NULL, "engines_new: %s", err);
    G.aw.app = &G.app;
    G.workers[0] = &G.aw;
    G.app.workers = G.workers;
    G.app.nworkers = 1;
    CHECK(uv_loop_init(&G.loop) == 0, "uv_loop_init");
    http_limits_t lim = {.max_header_bytes = 8192,
                         .max_headers = 64,
                         .max_body = 1 << 16,
                         .header_timeout_ms = 20000,
                         .body_timeout_ms = 20000,
                         .idle_timeout_ms = 20000};
    G.aw.w = worker_new(&G.loop, 0, "127.0.0.1", 0, &lim, &app_http_handler, &G.aw, err,
                        sizeof err);
    CHECK(G.aw.w != NULL, "worker_new: %s", err);
    uv_walk(&G.loop, find_port, &G.port);
    CHECK(G.port > 0, "no port");
    G.aw.pool = upstream_pool_new(&G.loop, G.app.engines, G.aw.w);
    CHECK(G.aw.pool != NULL, "upstream_pool_new");
    for (int i = 0; i < 100; i++)
        uv_run(&G.loop, UV_RUN_NOWAIT);
    G.base_handles = handles();
    K.resp = malloc(RESP_CAP);
    CHECK(K.resp != NULL, "oom");
}

/* ---- the loop, the client and the engine ---- */

/* One loop turn, then the client reads what is there. Nonzero on progress. */
static int pump(void)
{
    uv_run(&G.loop, UV_RUN_NOWAIT);
    int progress = 0;
    while (K.cfd >= 0 && !K.eof) {
        char tmp[65536];
        ssize_t n = recv(K.cfd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n > 0) {
            CHECK(K.len + (size_t)n <= RESP_CAP, "the proxy wrote over %u bytes", RESP_CAP);
            memcpy(K.resp + K.len, tmp, (size_t)n);
            K.len += (size_t)n;
            progress = 1;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            K.eof = 1;
            progress = 1;
        }
        break;
    }
    return progress;
}

static void pump_idle(void)
{
    for (int idle = 0, turns = 0; idle < IDLE_TURNS && turns < 100000; turns++)
        idle = pump() ? 0 : idle + 1;
}

static void engine_send(const uint8_t *p, size_t n)
{
    uint64_t dl = now_ms() + WAIT_MS;
    while (n) {
        ssize_t k = send(K.efd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return; /* the proxy closed the engine connection (e.g. a protocol error) */
        CHECK(now_ms() < dl, "the proxy stopped reading from the engine for %d ms", WAIT_MS);
        pump();
    }
}

/* Accepts the proxy's engine connection and reads one whole request from it. */
static void engine_read_request(void)
{
    uint64_t dl = now_ms() + WAIT_MS;
    K.efd = -1;
    K.req_len = 0;
    size_t need = 0;
    for (;;) {
        CHECK(now_ms() < dl, "no complete request at the engine (%zu bytes)", K.req_len);
        pump();
        if (K.efd < 0) {
            K.efd = accept4(G.eng_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            continue;
        }
        ssize_t k = recv(K.efd, K.req + K.req_len, sizeof K.req - 1 - K.req_len, 0);
        if (k > 0) {
            K.req_len += (size_t)k;
            K.req[K.req_len] = '\0';
        }
        CHECK(k != 0, "the proxy closed the engine connection inside the request");
        char *he = strstr(K.req, "\r\n\r\n");
        if (he && !need) {
            const char *cl = strcasestr(K.req, "\r\nContent-Length:");
            CHECK(cl && cl < he, "engine request without Content-Length");
            need = (size_t)(he + 4 - K.req) + strtoul(cl + 17, NULL, 10);
        }
        if (need && K.req_len >= need) {
            CHECK(K.req_len == need, "extra bytes after the engine request");
            return;
        }
    }
}

static void client_close(int rst)
{
    if (K.cfd < 0)
        return;
    if (rst) {
        struct linger lg = {1, 0};
        setsockopt(K.cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(K.cfd);
    K.cfd = -1;
    K.client_gone = 1;
}

/* ---- what the client got ---- */

typedef struct parsed {
    int status;
    int complete;   /* the whole response, framing included */
    int close;      /* Connection: close */
    int sse;        /* Content-Type: text/event-stream */
    buf_t body;     /* de-chunked */
} parsed_t;

static const char *find_crlf2(const char *p, const char *end)
{
    for (; p + 4 <= end; p++)
        if (p[0] == '\r' && p[1] == '\n' && p[2] == '\r' && p[3] == '\n')
            return p;
    return NULL;
}

static const char *hdr(const char *h, const char *e, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = h; p + nl <= e; p++)
        if (p[-1] == '\n' && strncasecmp(p, name, nl) == 0)
            return p + nl;
    return NULL;
}

/* Parses K.resp as one response (the proxy writes the framing headers as server.c spells
 * them). Fails on anything that is not a prefix of a well-framed response. */
static void parse_client(parsed_t *pr)
{
    const char *p = K.resp, *end = K.resp + K.len;
    pr->status = 0;
    pr->complete = 0;
    pr->close = 0;
    pr->sse = 0;
    buf_reset(&pr->body);
    if (K.len == 0)
        return;
    size_t sl = K.len < 13 ? K.len : 13;
    CHECK(memcmp(p, "HTTP/1.1 ", sl < 9 ? sl : 9) == 0, "not a status line");
    if (K.len < 13)
        return;
    CHECK(p[9] >= '2' && p[9] <= '5' && p[10] >= '0' && p[10] <= '9' && p[11] >= '0' &&
              p[11] <= '9' && p[12] == ' ',
          "status line %.13s", p);
    pr->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    const char *he = find_crlf2(p, end);
    if (!he)
        return;
    CHECK(he - p < 4096, "response head of %td bytes", he - p);
    const char *hs = (const char *)memchr(p, '\n', (size_t)(he - p)) + 1;
    const char *cl = hdr(hs, he + 2, "Content-Length: ");
    int chunked = hdr(hs, he + 2, "Transfer-Encoding: chunked\r\n") != NULL;
    pr->close = hdr(hs, he + 2, "Connection: close\r\n") != NULL;
    pr->sse = hdr(hs, he + 2, "Content-Type: text/event-stream") != NULL;
    const char *b = he + 4;
    if (pr->status == 204 || pr->status == 304) {
        CHECK(!chunked, "a chunked %d", pr->status);
        CHECK(b == end, "%td bytes after a %d", end - b, pr->status);
        pr->complete = 1;
        return;
    }
    CHECK((cl != NULL) != chunked, "framing: Content-Length %d, chunked %d", cl != NULL,
          chunked);
    if (cl) {
        char *q;
        unsigned long long want = strtoull(cl, &q, 10);
        CHECK(q > cl && *q == '\r', "bad Content-Length");
        size_t have = (size_t)(end - b);
        CHECK(have <= want, "%zu bytes after a body of %llu", have - (size_t)want, want);
        buf_append(&pr->body, b, have);
        pr->complete = have == want;
        return;
    }
    const char *q = b;
    for (;;) {
        const char *le = NULL;
        for (const char *s = q; s + 1 < end; s++)
            if (s[0] == '\r' && s[1] == '\n') {
                le = s;
                break;
            }
        if (!le) {
            CHECK(end - q <= 16, "chunk size line of %td bytes", end - q);
            return;
        }
        CHECK(le > q && le - q <= 16, "bad chunk size line");
        size_t sz = 0;
        for (const char *s = q; s < le; s++) {
            int dv = *s >= '0' && *s <= '9' ? *s - '0' : *s >= 'a' && *s <= 'f' ? *s - 'a' + 10 : -1;
            CHECK(dv >= 0, "bad chunk size digit");
            sz = sz * 16 + (size_t)dv;
        }
        q = le + 2;
        if (sz == 0) {
            if (end - q < 2) {
                CHECK(end == q || *q == '\r', "trailers after the last chunk");
                return;
            }
            CHECK(q[0] == '\r' && q[1] == '\n', "trailers after the last chunk");
            CHECK(q + 2 == end, "%td bytes after the last chunk", end - q - 2);
            pr->complete = 1;
            return;
        }
        if ((size_t)(end - q) < sz + 2) {
            buf_append(&pr->body, q, (size_t)(end - q) < sz ? (size_t)(end - q) : sz);
            return;
        }
        CHECK(q[sz] == '\r' && q[sz + 1] == '\n', "chunk not followed by CRLF");
        buf_append(&pr->body, q, sz);
        q += sz + 2;
    }
}

/* The record stored for this input: tries every quoted string in the body as the chat id
 * (the id scanner and the SSE framer are lenient with malformed JSON, so no stricter guess
 * at where the id is). */
static int find_record(const buf_t *body, buf_t *rec)
{
    if (!body->len)
        return 0;
    const char *end = body->data + body->len;
    for (const char *s = body->data; (s = memchr(s, '"', (size_t)(end - s))) != NULL; s++) {
        const char *ve = memchr(s + 1, '"', (size_t)(end - s - 1));
        if (!ve)
            break;
        if (ve - s - 1 == 0 || ve - s - 1 > 256)
            continue;
        char key[512];
        int n = snprintf(key, sizeof key, "%s:chat:%.*s", MODEL, (int)(ve - s - 1), s + 1);
        buf_reset(rec);
        if (store_get(G.app.store, key, (size_t)n, clock_wall_s(), rec) == STORE_OK)
            return 1;
    }
    return 0;
}

static void check_signature(const parsed_t *pr, const char *reqbody, uint64_t stored)
{
    size_t count = store_count(G.app.store);
    CHECK(count == stored, "%zu records, signatures_stored grew by %llu", count,
          (unsigned long long)stored);
    CHECK(count <= 1, "%zu records for one answer", count);
    if (count == 0 || K.client_gone)
        return;
    CHECK(pr->complete, "signed, but the client's response is incomplete (status %d)",
          pr->status);
    CHECK(pr->status >= 200 && pr->status < 300, "signed a %d", pr->status);
    buf_t rec = BUF_INIT;
    if (find_record(&pr->body, &rec)) {
        char rh[SHA256_HEX_LEN + 1], sh[SHA256_HEX_LEN + 1], want[300];
        sha256_hex(reqbody, strlen(reqbody), rh);
        sha256_hex(pr->body.data, pr->body.len, sh);
        snprintf(want, sizeof want, "\"text\": \"%s:%s\"", rh, sh);
        buf_append(&rec, "", 1);
        CHECK(strstr(rec.data, want) != NULL, "record %s, wanted %s", rec.data, want);
    } else {
        /* Only an id with JSON escapes (decoded in the key) is not found by the raw scan. */
        CHECK(pr->body.len && memchr(pr->body.data, '\\', pr->body.len) != NULL,
              "signed, no record found");
    }
    if (pr->sse)
        CHECK(memmem(pr->body.data, pr->body.len, "data: [DONE]", 12) != NULL,
              "a signed event stream without [DONE]");
    buf_free(&rec);
}

/* ---- one input ---- */

static uint32_t next_rand(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup_once();
    if (size < 2)
        return 0;
    unsigned flags = data[0];
    uint32_t seed = data[1] * 2654435761u + 1u;
    const uint8_t *eng = data + 2;
    size_t elen = size - 2;
    int stream = flags & 1;
    int end = (flags >> 1) & 3;
    int rst_client = (flags >> 3) & 1;
    int nsplit = (flags >> 4) & 3;
    int conn_close = (flags >> 6) & 1;
    int small_rcv = (flags >> 7) & 1;

    store_free(G.app.store);
    G.app.store = store_new(16, 600);
    CHECK(G.app.store != NULL, "store_new");
    uint64_t stored0 = G.aw.m.signatures_stored;
    K.len = 0;
    K.eof = K.client_gone = 0;
    K.efd = -1;

    /* The client's request. */
    K.cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(K.cfd >= 0, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(K.cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (small_rcv) {
        int rcv = 4096;
        setsockopt(K.cfd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)G.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fcntl(K.cfd, F_SETFL, fcntl(K.cfd, F_GETFL) | O_NONBLOCK);
    if (connect(K.cfd, (struct sockaddr *)&sa, sizeof sa) != 0)
        CHECK(errno == EINPROGRESS || errno == EINTR, "connect: %s", strerror(errno));
    const char *reqbody = stream ? STREAM_REQ : JSON_REQ;
    char req[1024];
    int rn = snprintf(req, sizeof req,
                      "POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
                      "Authorization: Bearer " TOKEN "\r\nContent-Type: application/json\r\n"
                      "%sContent-Length: %zu\r\n\r\n%s",
                      conn_close ? "Connection: close\r\n" : "", strlen(reqbody), reqbody);
    uint64_t dl = now_ms() + WAIT_MS;
    for (size_t off = 0; off < (size_t)rn;) {
        ssize_t k = send(K.cfd, req + off, (size_t)rn - off, MSG_NOSIGNAL);
        if (k > 0)
            off += (size_t)k;
        else
            CHECK(errno == EAGAIN || errno == EINTR || errno == ENOTCONN, "send: %s",
                  strerror(errno));
        CHECK(now_ms() < dl, "could not send the request");
        pump();
    }

    /* The engine gets it and answers with the input, in pieces. */
    engine_read_request();
    CHECK(strstr(K.req, TOKEN) == NULL, "the client's token reached the engine");
    size_t cuts[5] = {0};
    int ncuts = 0;
    for (int i = 0; i < nsplit && elen > 1; i++)
        cuts[ncuts++] = next_rand(&seed) % elen;
    qsort(cuts, (size_t)ncuts, sizeof cuts[0], cmp_size);
    cuts[ncuts] = elen;
    size_t off = 0;
    for (int i = 0; i <= ncuts; i++) {
        if (cuts[i] > off) {
            engine_send(eng + off, cuts[i] - off);
            off = cuts[i];
        }
        pump_idle();
        if (end == 3 && i == 0)
            client_close(rst_client);
    }

    /* The engine ends. */
    parsed_t pr = {.body = BUF_INIT};
    if (end == 1) {
        struct linger lg = {1, 0};
        setsockopt(K.efd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    if (end != 2) {
        close(K.efd);
        K.efd = -1;
    }
    pump_idle();
    if (end != 2 && K.cfd >= 0) {
        /* The engine is gone: the proxy must finish the response or close the connection. */
        uint64_t t0 = now_ms();
        for (;;) {
            parse_client(&pr);
            if (pr.complete || K.eof)
                break;
            CHECK(now_ms() - t0 < WAIT_MS, "the engine closed, the client's response is "
                  "still open after %d ms", WAIT_MS);
            if (!pump())
                usleep(200);
        }
    }
    parse_client(&pr);
    if (pr.complete && pr.close && K.cfd >= 0) {
        /* Connection: close: the proxy closes after the response. */
        uint64_t t0 = now_ms();
        while (!K.eof) {
            CHECK(now_ms() - t0 < WAIT_MS, "Connection: close, but the proxy kept it open");
            if (!pump())
                usleep(200);
        }
    }
    if (G.debug)
        dump();
    check_signature(&pr, reqbody, G.aw.m.signatures_stored - stored0);
    buf_free(&pr.body);

    /* Both sides go away; everything goes back to the baseline. */
    client_close(rst_client);
    if (K.efd >= 0) {
        close(K.efd);
        K.efd = -1;
    }
    uint64_t t0 = now_ms();
    for (unsigned i = 0;; i++) {
        uv_run(&G.loop, UV_RUN_NOWAIT);
        int clean = worker_conn_count(G.aw.w) == 0 && upstream_pool_idle(G.aw.pool) == 0 &&
                    G.aw.m.streams_active == 0 && handles() == G.base_handles;
        if (clean)
            break;
        if (i > 1000) {
            CHECK(now_ms() - t0 < WAIT_MS,
                  "not back to the baseline after %d ms: %u client connection(s), %u idle "
                  "engine connection(s), %llu active stream(s), %u handles (baseline %u)",
                  WAIT_MS, worker_conn_count(G.aw.w), upstream_pool_idle(G.aw.pool),
                  (unsigned long long)G.aw.m.streams_active, handles(), G.base_handles);
            usleep(100);
        }
    }
    CHECK(G.aw.nfree_relays <= 1, "%u free relays after one request", G.aw.nfree_relays);
    return 0;
}
