/* dstack guest agent client: a small blocking HTTP/1.1 client (one connection per call,
 * Connection: close, llhttp for the response so chunked bodies work) with a poll()-bounded
 * deadline per attempt, and the few RPCs the proxy needs. Thread-pool threads only. */
#include "dstack/agent.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <json-c/printbuf.h>
#include <llhttp.h>
#include <netdb.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/hex.h"
#include "core/json.h"

/* ---- endpoint ---- */

int dstack_endpoint_parse(dstack_endpoint_t *ep, const char *s, int tappd, unsigned timeout_ms,
                          char *err, size_t errlen)
{
    memset(ep, 0, sizeof *ep);
    ep->tappd = tappd;
    ep->timeout_ms = timeout_ms ? timeout_ms : 5000;
    if (!s || !*s) {
        snprintf(err, errlen, "empty agent endpoint");
        return -1;
    }
    if (!strncmp(s, "https://", 8)) {
        snprintf(err, errlen, "agent endpoint '%s': https is not supported (the agent is local)", s);
        return -1;
    }
    if (!strncmp(s, "http://", 7)) {
        const char *h = s + 7, *slash = strchr(h, '/');
        size_t hl = slash ? (size_t)(slash - h) : strlen(h);
        const char *colon = NULL;
        if (hl > 0 && h[0] == '[') { /* [v6]:port */
            const char *rb = memchr(h, ']', hl);
            if (!rb) {
                snprintf(err, errlen, "agent endpoint '%s': bad IPv6 host", s);
                return -1;
            }
            colon = (rb + 1 < h + hl && rb[1] == ':') ? rb + 1 : NULL;
        } else {
            colon = memchr(h, ':', hl);
        }
        size_t namel = colon ? (size_t)(colon - h) : hl;
        const char *name = h;
        if (namel >= 2 && name[0] == '[') {
            name++;
            namel -= 2;
        }
        size_t portl = colon ? (size_t)(h + hl - colon - 1) : 0;
        if (namel == 0 || namel >= sizeof ep->host || (colon && (portl == 0 || portl >= sizeof ep->port))) {
            snprintf(err, errlen, "agent endpoint '%s': bad host or port", s);
            return -1;
        }
        memcpy(ep->host, name, namel);
        if (colon)
            memcpy(ep->port, colon + 1, portl);
        else
            memcpy(ep->port, "80", 3);
        for (const char *p = ep->port; *p; p++)
            if (*p < '0' || *p > '9') {
                snprintf(err, errlen, "agent endpoint '%s': bad port", s);
                return -1;
            }
        if (slash) {
            size_t pl = strlen(slash);
            while (pl > 0 && slash[pl - 1] == '/')
                pl--;
            if (pl >= sizeof ep->prefix || strpbrk(slash, " \r\n?#")) {
                snprintf(err, errlen, "agent endpoint '%s': bad path", s);
                return -1;
            }
            memcpy(ep->prefix, slash, pl);
        }
    } else {
        if (!strncmp(s, "unix:", 5))
            s += 5;
        if (!*s || strlen(s) >= sizeof ep->path) {
            snprintf(err, errlen, "agent socket path '%s' is empty or too long", s);
            return -1;
        }
        ep->is_unix = 1;
        snprintf(ep->path, sizeof ep->path, "%s", s);
    }
    snprintf(ep->display, sizeof ep->display, "%s", s);
    return 0;
}

const char *dstack_probe_socket(int tappd)
{
    static const char *dstack[] = {"/var/run/dstack.sock", "/run/dstack.sock",
                                   "/var/run/dstack/dstack.sock", "/run/dstack/dstack.sock"};
    static const char *legacy[] = {"/var/run/tappd.sock", "/run/tappd.sock",
                                   "/var/run/dstack/tappd.sock", "/run/dstack/tappd.sock"};
    const char **list = tappd ? legacy : dstack;
    struct stat st;
    for (int i = 0; i < 4; i++)
        if (stat(list[i], &st) == 0 && S_ISSOCK(st.st_mode))
            return list[i];
    return NULL;
}

/* ---- transport ---- */

static long long now_ms(void) { return (long long)(clock_mono_ns() / 1000000u); }

/* Waits for events on fd until the deadline: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, (int)(left > 60000 ? 60000 : left));
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

static int connect_nb(int fd, const struct sockaddr *sa, socklen_t len, long long deadline)
{
    if (connect(fd, sa, len) == 0)
        return 0;
    if (errno != EINPROGRESS && errno != EAGAIN)
        return -1;
    int r = wait_fd(fd, POLLOUT, deadline);
    if (r <= 0) {
        errno = r == 0 ? ETIMEDOUT : errno;
        return -1;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr) {
        errno = soerr ? soerr : errno;
        return -1;
    }
    return 0;
}

static int open_conn(const dstack_endpoint_t *ep, long long deadline, char *err, size_t errlen)
{
    if (ep->is_unix) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        memcpy(sa.sun_path, ep->path, strlen(ep->path) + 1);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect_nb(fd, (struct sockaddr *)&sa, sizeof sa, deadline) != 0) {
            snprintf(err, errlen, "cannot connect to %.108s: %s", ep->path,
                     errno == ETIMEDOUT ? "timed out" : strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        return fd;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(ep->host, ep->port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve %.64s: %s", ep->host, gai_strerror(gai));
        return -1;
    }
    int fd = -1, e = ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd >= 0 && connect_nb(fd, ai->ai_addr, ai->ai_addrlen, deadline) == 0)
            break;
        e = errno;
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errlen, "cannot connect to %.64s:%s: %s", ep->host, ep->port,
                 e == ETIMEDOUT ? "timed out" : strerror(e));
    return fd;
}

typedef struct resp_state {
    buf_t *body;
    int complete;
    int too_big;
} resp_state_t;

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    resp_state_t *st = p->data;
    if (st->body->len + n > DSTACK_MAX_RESPONSE) {
        st->too_big = 1;
        return -1;
    }
    return buf_append(st->body, at, n) ? -1 : 0;
}

static int on_complete(llhttp_t *p)
{
    ((resp_state_t *)p->data)->complete = 1;
    return HPE_PAUSED;
}

/* One attempt. 0: response read; -1: transport error; -2: timed out. */
static int exchange(const dstack_endpoint_t *ep, const buf_t *reqb, int *status, buf_t *resp,
                    char *err, size_t errlen)
{
    long long deadline = now_ms() + ep->timeout_ms;
    char chunk[16384];
    int fd = open_conn(ep, deadline, err, errlen);
    if (fd < 0)
        return strstr(err, "timed out") ? -2 : -1;
    int rc = -1;
    size_t off = 0;
    while (off < reqb->len) {
        ssize_t w = send(fd, reqb->data + off, reqb->len - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(fd, POLLOUT, deadline);
            if (r == 1)
                continue;
            if (r == 0) {
                snprintf(err, errlen, "timed out after %u ms sending the request", ep->timeout_ms);
                rc = -2;
                goto out;
            }
        }
        snprintf(err, errlen, "send failed: %s", strerror(errno));
        goto out;
    }
    llhttp_settings_t set;
    llhttp_settings_init(&set);
    set.on_body = on_body;
    set.on_message_complete = on_complete;
    llhttp_t parser;
    llhttp_init(&parser, HTTP_RESPONSE, &set);
    resp_state_t st = {.body = resp};
    parser.data = &st;
    for (;;) {
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(fd, POLLIN, deadline);
            if (r == 1)
                continue;
            snprintf(err, errlen, r == 0 ? "timed out after %u ms waiting for the response"
                                         : "poll failed", ep->timeout_ms);
            rc = r == 0 ? -2 : -1;
            goto out;
        }
        if (n < 0) {
            snprintf(err, errlen, "recv failed: %s", strerror(errno));
            goto out;
        }
        llhttp_errno_t e = n == 0 ? llhttp_finish(&parser) : llhttp_execute(&parser, chunk, (size_t)n);
        if (st.complete)
            break;
        if (e != HPE_OK) {
            snprintf(err, errlen, "%s", st.too_big ? "response body too large"
                                                   : n == 0 ? "connection closed before a full response"
                                                            : "malformed HTTP response");
            goto out;
        }
        if (n == 0) {
            snprintf(err, errlen, "connection closed before a full response");
            goto out;
        }
    }
    *status = parser.status_code;
    rc = 0;
out:
    sodium_memzero(chunk, sizeof chunk); /* GetKey answers carry a secret */
    close(fd);
    return rc;
}

int dstack_http_post(const dstack_endpoint_t *ep, const char *method, const char *body,
                     size_t blen, int *status, buf_t *resp, char *err, size_t errlen)
{
    buf_t req = BUF_INIT;
    char e[256] = "";
    int rc = -1;
    if (buf_printf(&req,
                   "POST %s/%s%s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: vllm-proxy\r\n"
                   "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                   ep->prefix, ep->tappd ? "prpc/Tappd." : "", method, blen) ||
        buf_append(&req, body, blen)) {
        snprintf(err, errlen, "out of memory");
        buf_free(&req);
        return -1;
    }
    size_t start = resp->len;
    for (int attempt = 0; attempt < 2; attempt++) {
        resp->len = start;
        rc = exchange(ep, &req, status, resp, e, sizeof e);
        if (rc == 0 && *status < 500)
            break;
        if (rc == 0) /* 5xx: keep the answer; retry once */
            snprintf(e, sizeof e, "HTTP %d", *status);
    }
    if (rc != 0) {
        resp->len = start;
        if (resp->cap > start)
            resp->data[start] = 0;
        snprintf(err, errlen, "%s: %s %s (%s, after 1 retry)", ep->tappd ? "tappd" : "dstack guest agent",
                 method, rc == -2 ? "timed out" : "failed", e);
    } else if (resp->cap > resp->len) {
        resp->data[resp->len] = 0;
    }
    buf_free(&req);
    return rc == 0 ? 0 : -1;
}

/* ---- RPCs ---- */

static struct json_object *parse_obj(const char *s, size_t n)
{
    struct json_tokener *tok = json_tokener_new();
    if (!tok)
        return NULL;
    struct json_object *o = json_tokener_parse_ex(tok, s, (int)n);
    size_t end = json_tokener_get_parse_end(tok);
    while (end < n && (s[end] == ' ' || s[end] == '\t' || s[end] == '\r' || s[end] == '\n'))
        end++; /* RFC 8259: whitespace may follow the value */
    if (o && (json_tokener_get_error(tok) != json_tokener_success || end != n ||
              !json_object_is_type(o, json_type_object))) {
        json_object_put(o);
        o = NULL;
    }
    /* The tokener keeps the last string it read (a GetKey secret) in its scratch buffer. */
    if (tok->pb && tok->pb->buf && tok->pb->size > 0)
        sodium_memzero(tok->pb->buf, (size_t)tok->pb->size);
    json_tokener_free(tok);
    return o;
}

/* POST method with body; on 2xx parse the object. On failure err names the agent's error. */
#define RPC_RESP_RESERVE 4096 /* covers GetKey's answer, so the secret is never realloc'd */
#define QUOTE_BODY_FRAME 64   /* the GetQuote / TdxQuote JSON around the report_data hex */

static struct json_object *rpc(const dstack_endpoint_t *ep, const char *method, const char *body,
                               char *err, size_t errlen)
{
    buf_t resp = BUF_INIT;
    int status = 0;
    struct json_object *o = NULL;
    const char *who = ep->tappd ? "tappd" : "dstack guest agent";
    /* Reserved up front so that a small answer (GetKey's secret) is never left behind by a
     * realloc; wiped before it is freed. */
    if (buf_reserve(&resp, RPC_RESP_RESERVE)) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (dstack_http_post(ep, method, body, strlen(body), &status, &resp, err, errlen) != 0)
        goto out;
    if (resp.len > INT32_MAX) {
        snprintf(err, errlen, "%s: %s: response too large", who, method);
        goto out;
    }
    o = parse_obj(resp.data ? resp.data : "", resp.len);
    if (status < 200 || status > 299) {
        struct json_object *e = NULL;
        const char *msg = o && json_object_object_get_ex(o, "error", &e) && json_object_is_type(e, json_type_string)
                              ? json_object_get_string(e) : NULL;
        snprintf(err, errlen, "%s: %s answered HTTP %d%s%.200s", who, method, status, msg ? ": " : "",
                 msg ? msg : "");
        json_object_put(o);
        o = NULL;
    } else if (!o) {
        snprintf(err, errlen, "%s: %s answered something that is not a JSON object (%zu bytes)", who,
                 method, resp.len);
    }
out:
    sodium_memzero(resp.data, resp.cap);
    buf_free(&resp);
    return o;
}

void dstack_quote_free(dstack_quote_t *q)
{
    buf_free(&q->quote);
    buf_free(&q->event_log);
    buf_free(&q->vm_config);
}

static int hex_to_buf(const char *h, size_t n, buf_t *out)
{
    if (n >= 2 && h[0] == '0' && (h[1] == 'x' || h[1] == 'X'))
        h += 2, n -= 2;
    if (n % 2 || buf_reserve(out, n / 2 + 1))
        return -1;
    long got = hex_decode((uint8_t *)out->data + out->len, n / 2, h, n);
    if (got < 0 || (size_t)got != n / 2)
        return -1;
    out->len += (size_t)got;
    out->data[out->len] = 0;
    return 0;
}

int dstack_get_quote(const dstack_endpoint_t *ep, const uint8_t report_data[64], dstack_quote_t *q,
                     char *err, size_t errlen)
{
    char rdhex[HEX_SIZE(64)], body[sizeof rdhex + QUOTE_BODY_FRAME];
    const char *who = ep->tappd ? "tappd" : "dstack guest agent";
    const char *method = ep->tappd ? "TdxQuote" : "GetQuote";
    hex_encode(rdhex, report_data, 64);
    if (ep->tappd)
        snprintf(body, sizeof body, "{\"report_data\":\"%s\",\"hash_algorithm\":\"raw\"}", rdhex);
    else
        snprintf(body, sizeof body, "{\"report_data\":\"%s\"}", rdhex);
    struct json_object *o = rpc(ep, method, body, err, errlen);
    if (!o)
        return -1;
    int rc = -1;
    size_t ql = 0, el = 0, vl = 0, rl = 0;
    const char *qh = json_get_str(o, "quote", &ql);
    const char *ev = json_get_str(o, "event_log", &el);
    const char *vm = json_get_str(o, "vm_config", &vl);
    const char *rd = json_get_str(o, "report_data", &rl);
    buf_t echo = BUF_INIT;
    if (!qh || ql < 2 * 48 || hex_to_buf(qh, ql, &q->quote)) {
        snprintf(err, errlen, "%s: %s: no quote, or the quote is not hex", who, method);
        goto out;
    }
    if (rd && rl > 0 && (hex_to_buf(rd, rl, &echo) || echo.len < 64 || memcmp(echo.data, report_data, 64))) {
        snprintf(err, errlen, "%s: %s returned a different report_data than requested", who, method);
        goto out;
    }
    if ((ev && buf_append(&q->event_log, ev, el)) || (vm && buf_append(&q->vm_config, vm, vl))) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (ep->tappd) {
        /* We asked for raw: REPORTDATA must be report_data itself. An agent that says it
         * hashed (or names no algorithm we can repeat) is not serving our request. */
        const char *ha = json_get_str(o, "hash_algorithm", NULL), *px = json_get_str(o, "prefix", NULL);
        if (ha && *ha && strcmp(ha, "raw") != 0) {
            snprintf(err, errlen, "%s: %s used hash_algorithm '%.32s', not the requested raw", who,
                     method, ha);
            goto out;
        }
        snprintf(q->hash_algorithm, sizeof q->hash_algorithm, "raw");
        snprintf(q->prefix, sizeof q->prefix, "%s", px ? px : "");
    }
    rc = 0;
out:
    if (rc != 0)
        dstack_quote_free(q);
    buf_free(&echo);
    json_object_put(o);
    return rc;
}

int dstack_info(const dstack_endpoint_t *ep, buf_t *info_json, char *err, size_t errlen)
{
    struct json_object *o = rpc(ep, "Info", "{}", err, errlen);
    if (!o)
        return -1;
    size_t tl = 0;
    const char *tcb = json_get_str(o, "tcb_info", &tl);
    if (tcb && tl > 0) {
        struct json_object *t = parse_obj(tcb, tl);
        if (t)
            json_object_object_add(o, "tcb_info", t); /* replaces in place, keeps the order */
    }
    size_t n = 0;
    const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
    int rc = s && buf_append(info_json, s, n) == 0 ? 0 : -1;
    if (rc)
        snprintf(err, errlen, "out of memory");
    json_object_put(o);
    return rc;
}

int dstack_get_key(const dstack_endpoint_t *ep, const char *path, const char *algorithm,
                   uint8_t key[32], char *err, size_t errlen)
{
    if (ep->tappd) {
        snprintf(err, errlen, "tappd has no GetKey");
        return -1;
    }
    buf_t body = BUF_INIT, kb = BUF_INIT;
    int rc = -1;
    if (buf_puts(&body, "{\"path\":") || buf_json_str(&body, path, strlen(path)) ||
        buf_puts(&body, ",\"purpose\":\"signing\",\"algorithm\":") ||
        buf_json_str(&body, algorithm, strlen(algorithm)) || buf_puts(&body, "}")) {
        snprintf(err, errlen, "out of memory");
        buf_free(&body);
        return -1;
    }
    struct json_object *o = rpc(ep, "GetKey", body.data, err, errlen);
    buf_free(&body);
    if (!o)
        return -1;
    size_t kl = 0;
    const char *kh = json_get_str(o, "key", &kl);
    if (!kh || hex_to_buf(kh, kl, &kb) || kb.len != 32) {
        snprintf(err, errlen, "dstack guest agent: GetKey(%s) returned no 32-byte hex key", path);
    } else {
        memcpy(key, kb.data, 32); /* ed25519: the seed; secp256k1: the secret scalar */
        rc = 0;
    }
    if (kh)
        sodium_memzero((char *)kh, kl); /* json-c's copy of the secret */
    if (kb.data)
        sodium_memzero(kb.data, kb.cap);
    buf_free(&kb);
    json_object_put(o);
    return rc;
}

/* AttestGpu: v1 (/v1/AttestGpu: {"bundles":[{"vendor","format","evidence":"<hex>"}]}) first,
 * then v0 (/AttestGpu: {"evidence":"<nvattest JSON>","nonce"}) when v1 is not served. */
#define NVATTEST_FORMAT "nvidia-nvattest-collect-evidence-json-v1"
int dstack_attest_gpu(const dstack_endpoint_t *ep, const uint8_t nonce[32], buf_t *evidence,
                      char *err, size_t errlen)
{
    char body[96], nh[65];
    hex_encode(nh, nonce, 32);
    snprintf(body, sizeof body, "{\"nonce\":\"%s\"}", nh);
    char e1[512] = "";
    struct json_object *o = rpc(ep, "v1/AttestGpu", body, e1, sizeof e1), *v;
    int rc = -1;
    if (o) {
        struct json_object *bundles = NULL;
        if (!json_object_object_get_ex(o, "bundles", &bundles) ||
            !json_object_is_type(bundles, json_type_array)) {
            snprintf(err, errlen, "dstack guest agent: v1/AttestGpu: no bundles array");
            goto out;
        }
        for (size_t i = 0; i < json_object_array_length(bundles); i++) {
            struct json_object *b = json_object_array_get_idx(bundles, i);
            const char *vendor = json_get_str(b, "vendor", NULL), *fmt = json_get_str(b, "format", NULL);
            size_t hl = 0;
            const char *h = json_get_str(b, "evidence", &hl);
            if (!vendor || strcasecmp(vendor, "nvidia") != 0 || !fmt || strcmp(fmt, NVATTEST_FORMAT) != 0 || !h)
                continue;
            if (hl >= 2 && h[0] == '0' && (h[1] == 'x' || h[1] == 'X'))
                h += 2, hl -= 2;
            if (hl % 2 || hl / 2 > DSTACK_MAX_RESPONSE || buf_reserve(evidence, hl / 2 + 1) ||
                hex_decode((uint8_t *)evidence->data + evidence->len, hl / 2, h, hl) != (long)(hl / 2)) {
                snprintf(err, errlen, "dstack guest agent: v1/AttestGpu: the NVIDIA bundle is not hex");
                goto out;
            }
            evidence->len += hl / 2;
            evidence->data[evidence->len] = 0;
            rc = 0;
            goto out;
        }
        snprintf(err, errlen, "dstack guest agent: v1/AttestGpu returned no %s bundle (no GPU?)",
                 NVATTEST_FORMAT);
        goto out;
    }
    if (!strstr(e1, "HTTP 404")) {
        snprintf(err, errlen, "%s", e1);
        return -1;
    }
    o = rpc(ep, "AttestGpu", body, err, errlen);
    if (!o)
        return -1;
    if (!json_object_object_get_ex(o, "evidence", &v) || !json_object_is_type(v, json_type_string)) {
        snprintf(err, errlen, "dstack guest agent: AttestGpu: no evidence string");
        goto out;
    }
    if (buf_append(evidence, json_object_get_string(v), (size_t)json_object_get_string_len(v))) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rc = 0;
out:
    json_object_put(o);
    return rc;
}
