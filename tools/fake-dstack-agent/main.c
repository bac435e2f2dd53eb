/* fake-dstack-agent: a SIMULATED dstack guest agent for integration tests, the demo and the
 * attestation benchmark. It speaks the DstackGuest prpc API as vllm-proxy calls it
 * (shared/docs/tee-formats.md §2): GetQuote returns a quote from the repository's simulated TDX
 * provider over exactly the requested report_data, Info the simulated Info with tcb_info as a
 * JSON *string* (as the real agent sends it), GetKey derived as the real agent derives it
 * (HKDF-SHA256, salt "RATLS", the seed as the app key, the path as info: dstack's
 * guest-agent/src/rpc_service.rs get_key and ra-tls/src/kdf.rs derive_key), whatever the
 * algorithm and purpose. Knobs make it slow, fail, answer garbage, or log GetKey's request
 * bodies. See docs/CONTRACTS.md.
 *
 * A blocking accept loop and one detached thread per connection (llhttp parses the requests,
 * keep-alive supported): simple, and concurrent enough for a benchmark. */
#include <errno.h>
#include <json-c/json.h>
#include <llhttp.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "attest/gpu_canned.h"
#include "attest/sim.h"
#include "core/buf.h"
#include "core/hex.h"

enum { M_GETQUOTE = 1, M_INFO = 2, M_GETKEY = 4, M_ALL = 7 };

#define MAX_BODY (1u << 20)

static struct {
    const char *unix_path;
    const char *listen;
    unsigned delay_ms;
    int delay_on;  /* methods the delay and --garbage apply to */
    int fail;      /* methods answered with HTTP 500 */
    int garbage;
    uint8_t seed[64];
    size_t seed_len;
    const char *getkey_log; /* each GetKey request body appended as one line */
    int dev_image;          /* --os-image dev: measure a dev OS image */
    int gpus;               /* AttestGpu: GPUs answered (0: the method is not served, 404) */
} g_opt = {.delay_on = M_ALL};
static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;

static attest_sim_t *g_sim;
static buf_t g_info_wire;      /* Info response body as the agent sends it */
static buf_t g_event_log_lit;  /* event log as a JSON string literal */
static buf_t g_vm_config_lit;  /* vm_config as a JSON string literal */
static int g_lfd = -1;
static volatile long g_count[3]; /* getquote, info, getkey (answered 200) */

static void usage(FILE *f)
{
    fputs("usage: fake-dstack-agent (--unix PATH | --listen HOST:PORT) [--delay-ms N]\n"
          "                         [--delay-on LIST] [--fail LIST] [--garbage] [--key-seed HEX]\n"
          "\n"
          "A SIMULATED dstack guest agent (GetQuote, Info, GetKey) for tests. Never for production.\n"
          "  --unix PATH         listen on a Unix socket (a stale socket file is replaced)\n"
          "  --listen HOST:PORT  listen on TCP instead (port 0 picks one; the banner says which)\n"
          "  --delay-ms N        sleep N ms before answering (methods of --delay-on)\n"
          "  --delay-on LIST     comma list of getquote,info,getkey,all the delay and --garbage\n"
          "                      apply to (default all)\n"
          "  --fail LIST         these methods answer HTTP 500 {\"error\":\"injected failure\"}\n"
          "  --garbage           answer 200 with a body that is not JSON\n"
          "  --key-seed HEX      the app key: GetKey key = HKDF-SHA256(salt \"RATLS\", seed, info path),\n"
          "                      as dstack's agent derives it (default: 32 zero bytes)\n"
          "  --getkey-log FILE   append each GetKey request body to FILE, one per line\n"
          "  --os-image prod|dev the simulated dstack OS image measured (default prod); its\n"
          "                      files: GET /fake/os-image/sha256sum.txt and /metadata.json\n"
          "  --attest-gpu N      serve AttestGpu (v1 /v1/AttestGpu bundles and v0 /AttestGpu) with N\n"
          "                      GPUs of nvtrust's canned Hopper report, the request nonce written\n"
          "                      into it (so its SPDM signature no longer verifies: SIMULATED)\n"
          "GET /fake/stats: {\"getquote\":N,\"info\":N,\"getkey\":N} (successful answers).\n",
          f);
}

static int parse_methods(const char *s, int *out)
{
    int m = 0;
    char tmp[128];
    if (strlen(s) >= sizeof tmp)
        return -1;
    snprintf(tmp, sizeof tmp, "%s", s);
    for (char *save = NULL, *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcasecmp(t, "getquote")) m |= M_GETQUOTE;
        else if (!strcasecmp(t, "info")) m |= M_INFO;
        else if (!strcasecmp(t, "getkey")) m |= M_GETKEY;
        else if (!strcasecmp(t, "all")) m |= M_ALL;
        else if (!strcasecmp(t, "none")) m |= 0;
        else return -1;
    }
    *out = m;
    return 0;
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--garbage")) {
            g_opt.garbage = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "fake-dstack-agent: %s needs a value (or is unknown)\n", a);
            return -1;
        }
        const char *v = argv[++i];
        char *end;
        if (!strcmp(a, "--unix")) {
            g_opt.unix_path = v;
        } else if (!strcmp(a, "--listen")) {
            g_opt.listen = v;
        } else if (!strcmp(a, "--delay-ms")) {
            unsigned long d = strtoul(v, &end, 10);
            if (*v < '0' || *v > '9' || *end || d > 3600000) {
                fprintf(stderr, "fake-dstack-agent: --delay-ms: bad value '%s'\n", v);
                return -1;
            }
            g_opt.delay_ms = (unsigned)d;
        } else if (!strcmp(a, "--delay-on") || !strcmp(a, "--fail")) {
            if (parse_methods(v, !strcmp(a, "--fail") ? &g_opt.fail : &g_opt.delay_on) != 0) {
                fprintf(stderr, "fake-dstack-agent: %s: '%s' is not a list of getquote,info,getkey,all\n", a, v);
                return -1;
            }
        } else if (!strcmp(a, "--os-image")) {
            if (strcmp(v, "prod") && strcmp(v, "dev")) {
                fprintf(stderr, "fake-dstack-agent: --os-image: prod or dev\n");
                return -1;
            }
            g_opt.dev_image = !strcmp(v, "dev");
        } else if (!strcmp(a, "--getkey-log")) {
            g_opt.getkey_log = v;
        } else if (!strcmp(a, "--attest-gpu")) {
            char *gend;
            long n = strtol(v, &gend, 10);
            if (!*v || *gend || n < 0 || n > 16) {
                fprintf(stderr, "fake-dstack-agent: --attest-gpu: 0..16 GPUs\n");
                return -1;
            }
            g_opt.gpus = (int)n;
        } else if (!strcmp(a, "--key-seed")) {
            size_t n = strlen(v);
            long got = n % 2 == 0 && n / 2 <= sizeof g_opt.seed ? hex_decode(g_opt.seed, sizeof g_opt.seed, v, n) : -1;
            if (got < 1) {
                fprintf(stderr, "fake-dstack-agent: --key-seed: 1..64 bytes of hex expected\n");
                return -1;
            }
            g_opt.seed_len = (size_t)got;
        } else {
            fprintf(stderr, "fake-dstack-agent: unknown flag %s\n", a);
            return -1;
        }
    }
    if (!!g_opt.unix_path == !!g_opt.listen) {
        fprintf(stderr, "fake-dstack-agent: give exactly one of --unix PATH or --listen HOST:PORT\n");
        return -1;
    }
    if (!g_opt.seed_len)
        g_opt.seed_len = 32; /* zeros */
    return 0;
}

/* The simulated Info with tcb_info turned into the pretty JSON string the agent sends. */
static int build_texts(void)
{
    size_t n;
    const char *info = attest_sim_info_json(g_sim, &n);
    struct json_object *o = json_tokener_parse(info), *t = NULL;
    if (!o || !json_object_object_get_ex(o, "tcb_info", &t))
        return -1;
    const char *ts = json_object_to_json_string_ext(t, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
    json_object_object_add(o, "tcb_info", json_object_new_string(ts));
    int rc = buf_puts(&g_info_wire, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    const char *ev = attest_sim_event_log_json(g_sim, &n);
    rc |= buf_json_str(&g_event_log_lit, ev, n);
    const char *vm = attest_sim_vm_config(g_sim, &n);
    rc |= buf_json_str(&g_vm_config_lit, vm, n);
    return rc ? -1 : 0;
}

/* ---- one connection ---- */

typedef struct conn {
    int fd;
    llhttp_t parser;
    buf_t url;
    buf_t body;
    int too_big;
    int write_failed;
} conn_t;

static void send_all(conn_t *c, const char *p, size_t n)
{
    while (n > 0 && !c->write_failed) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            c->write_failed = 1;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void respond(conn_t *c, int status, const char *body, size_t n, int keep_alive)
{
    const char *reason = status == 200 ? "OK" : status == 400 ? "Bad Request" : status == 404 ? "Not Found"
                                                                                            : "Internal Server Error";
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n",
                      status, reason, n, keep_alive ? "" : "Connection: close\r\n");
    send_all(c, head, (size_t)hl);
    send_all(c, body, n);
}

static void respond_error(conn_t *c, int status, const char *msg, int ka)
{
    buf_t b = BUF_INIT;
    buf_puts(&b, "{\"error\":");
    buf_json_str(&b, msg, strlen(msg));
    buf_puts(&b, "}");
    respond(c, status, b.data, b.len, ka);
    buf_free(&b);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The string field key of the request body, or NULL (*o owns it). */
static const char *req_field(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return NULL;
}

static void do_getquote(conn_t *c, struct json_object *req, int ka)
{
    const char *rdh = req_field(req, "report_data");
    uint8_t rd[64] = {0};
    size_t n = rdh ? strlen(rdh) : 0;
    if (rdh && n >= 2 && rdh[0] == '0' && (rdh[1] == 'x' || rdh[1] == 'X'))
        rdh += 2, n -= 2;
    if (!rdh || n % 2 || n > 128 || (n && hex_decode(rd, 64, rdh, n) != (long)(n / 2))) {
        respond_error(c, 400, "report_data must be hex of at most 64 bytes", ka);
        return;
    }
    buf_t q = BUF_INIT, out = BUF_INIT;
    if (attest_sim_quote(g_sim, rd, &q) != 0 || buf_reserve(&out, 2 * q.len + g_event_log_lit.len + 1024)) {
        respond_error(c, 500, "simulated quote failed", ka);
        buf_free(&q);
        return;
    }
    char rdfull[129];
    hex_encode(rdfull, rd, 64);
    buf_puts(&out, "{\"quote\":\"");
    hex_encode(out.data + out.len, (const uint8_t *)q.data, q.len);
    out.len += 2 * q.len;
    out.data[out.len] = 0;
    buf_puts(&out, "\",\"event_log\":");
    buf_append(&out, g_event_log_lit.data, g_event_log_lit.len);
    buf_printf(&out, ",\"report_data\":\"%s\",\"vm_config\":", rdfull);
    buf_append(&out, g_vm_config_lit.data, g_vm_config_lit.len);
    buf_puts(&out, "}");
    respond(c, 200, out.data, out.len, ka);
    __atomic_add_fetch(&g_count[0], 1, __ATOMIC_RELAXED);
    buf_free(&q);
    buf_free(&out);
}

/* dstack's key derivation (ra-tls kdf.rs derive_key): HKDF-SHA256 with salt "RATLS", the app
 * key as input key material and the path as info, 32 bytes (one HMAC block: T(1)). */
static int derive_key(const char *path, uint8_t out[32])
{
    uint8_t prk[32], t[32];
    unsigned pl = sizeof prk, tl = sizeof t;
    size_t n = strlen(path);
    uint8_t *info = malloc(n + 1);
    int ok = info && HMAC(EVP_sha256(), "RATLS", 5, g_opt.seed, g_opt.seed_len, prk, &pl);
    if (ok) {
        memcpy(info, path, n);
        info[n] = 1;
        ok = HMAC(EVP_sha256(), prk, (int)pl, info, n + 1, t, &tl) != NULL;
    }
    free(info);
    if (ok)
        memcpy(out, t, 32);
    return ok ? 0 : -1;
}

static void log_getkey(const char *body, size_t len)
{
    if (!g_opt.getkey_log)
        return;
    pthread_mutex_lock(&g_log_lock);
    FILE *f = fopen(g_opt.getkey_log, "a");
    if (f) {
        fwrite(body, 1, len, f);
        fputc('\n', f);
        fclose(f);
    }
    pthread_mutex_unlock(&g_log_lock);
}

static void do_getkey(conn_t *c, struct json_object *req, int ka)
{
    const char *path = req_field(req, "path"), *alg = req_field(req, "algorithm");
    if (!path) {
        respond_error(c, 400, "path is required", ka);
        return;
    }
    /* The agent's normalize_algorithm and its match: "" (absent) and "secp256k1"/"k256" derive
     * the same bytes as "ed25519"; anything else is refused. */
    if (alg && *alg && strcmp(alg, "secp256k1") && strcmp(alg, "k256") && strcmp(alg, "ed25519")) {
        respond_error(c, 400, "Unsupported algorithm", ka);
        return;
    }
    uint8_t k[32];
    char kh[65], body[160];
    if (derive_key(path, k) != 0) {
        respond_error(c, 500, "HKDF failed", ka);
        return;
    }
    hex_encode(kh, k, 32);
    int n = snprintf(body, sizeof body, "{\"key\":\"%s\",\"signature_chain\":[]}", kh);
    respond(c, 200, body, (size_t)n, ka);
    __atomic_add_fetch(&g_count[2], 1, __ATOMIC_RELAXED);
}

/* AttestGpu: nvattest collect-evidence JSON for the nonce, as v1 bundles (hex) or v0. */
static void do_attest_gpu(conn_t *c, struct json_object *req, int v1, int ka)
{
    struct json_object *n = NULL;
    uint8_t nonce[32], rep[GPU_CANNED_REPORT_LEN];
    const char *nh = req && json_object_object_get_ex(req, "nonce", &n) ? json_object_get_string(n) : NULL;
    if (!nh || strlen(nh) != 64 || hex_decode(nonce, 32, nh, 64) != 32) {
        respond_error(c, 400, "nonce must be 32 bytes of hex", ka);
        return;
    }
    buf_t chain = BUF_INIT, ev = BUF_INIT, out = BUF_INIT;
    if (gpu_canned_report(rep) != 0 || gpu_canned_chain(&chain) != 0) {
        respond_error(c, 500, "canned evidence unavailable", ka);
        goto out;
    }
    memcpy(rep + 4, nonce, 32);
    size_t cl = b64_encoded_len(chain.len), rl = b64_encoded_len(sizeof rep);
    char *cb = malloc(cl + 1), *rb = malloc(rl + 1);
    if (!cb || !rb) {
        free(cb), free(rb);
        respond_error(c, 500, "out of memory", ka);
        goto out;
    }
    b64_encode(cb, (const uint8_t *)chain.data, chain.len);
    b64_encode(rb, rep, sizeof rep);
    cb[cl] = rb[rl] = 0;
    buf_puts(&ev, "[");
    for (int i = 0; i < g_opt.gpus; i++)
        buf_printf(&ev, "%s{\"arch\": \"HOPPER\", \"certificate\": \"%s\", \"evidence\": \"%s\", "
                        "\"nonce\": \"%s\", \"version\": \"1.0\"}", i ? ", " : "", cb, rb, nh);
    buf_puts(&ev, "]");
    free(cb), free(rb);
    if (v1) {
        buf_puts(&out, "{\"bundles\":[{\"vendor\":\"nvidia\",\"format\":"
                       "\"nvidia-nvattest-collect-evidence-json-v1\",\"evidence\":\"");
        if (buf_reserve(&out, 2 * ev.len + 8) == 0) {
            hex_encode(out.data + out.len, (const uint8_t *)ev.data, ev.len);
            out.len += 2 * ev.len;
        }
        buf_puts(&out, "\"}]}");
    } else {
        buf_puts(&out, "{\"evidence\":");
        buf_json_str(&out, ev.data, ev.len);
        buf_printf(&out, ",\"nonce\":\"%s\"}", nh);
    }
    respond(c, 200, out.data, out.len, ka);
out:
    buf_free(&chain);
    buf_free(&ev);
    buf_free(&out);
}

static void dispatch(conn_t *c)
{
    int ka = llhttp_should_keep_alive(&c->parser);
    if (c->too_big) {
        respond_error(c, 400, "request body too large", 0);
        c->write_failed = 1; /* close */
        return;
    }
    char *url = c->url.data ? c->url.data : (char *)"/";
    char *q = strchr(url, '?');
    if (q)
        *q = 0;
    if (!strcmp(url, "/fake/stats")) {
        char b[160];
        int n = snprintf(b, sizeof b, "{\"getquote\":%ld,\"info\":%ld,\"getkey\":%ld}",
                         __atomic_load_n(&g_count[0], __ATOMIC_RELAXED), __atomic_load_n(&g_count[1], __ATOMIC_RELAXED),
                         __atomic_load_n(&g_count[2], __ATOMIC_RELAXED));
        respond(c, 200, b, (size_t)n, ka);
        return;
    }
    if (!strncmp(url, "/fake/os-image/", 15)) {
        size_t n = 0;
        const char *f = attest_sim_os_image_file(g_sim, url + 15, &n);
        if (f)
            respond(c, 200, f, n, ka);
        else
            respond_error(c, 404, "no such file (sha256sum.txt, metadata.json)", ka);
        return;
    }
    const char *m = strrchr(url, '/');
    m = m ? m + 1 : url;
    if (!strcmp(m, "AttestGpu") && g_opt.gpus) {
        struct json_object *r = c->body.len ? json_tokener_parse(c->body.data) : NULL;
        do_attest_gpu(c, r, !strncmp(url, "/v1/", 4), ka);
        json_object_put(r);
        return;
    }
    int which = !strcmp(m, "GetQuote") ? M_GETQUOTE : !strcmp(m, "Info") ? M_INFO : !strcmp(m, "GetKey") ? M_GETKEY : 0;
    if (!which) {
        respond_error(c, 404, "no such method (fake-dstack-agent serves GetQuote, Info, GetKey)", ka);
        return;
    }
    if (g_opt.delay_ms && (g_opt.delay_on & which))
        sleep_ms(g_opt.delay_ms);
    if (g_opt.fail & which) {
        respond_error(c, 500, "injected failure (fake-dstack-agent --fail)", ka);
        return;
    }
    if (g_opt.garbage && (g_opt.delay_on & which)) {
        static const char junk[] = "<html>SIMULATED garbage from fake-dstack-agent</html>";
        respond(c, 200, junk, sizeof junk - 1, ka);
        return;
    }
    struct json_object *req = NULL;
    if (c->body.len) {
        req = json_tokener_parse(c->body.data);
        if (!req || !json_object_is_type(req, json_type_object)) {
            json_object_put(req);
            respond_error(c, 400, "request body is not a JSON object", ka);
            return;
        }
    }
    if (which == M_GETQUOTE) {
        do_getquote(c, req, ka);
    } else if (which == M_GETKEY) {
        log_getkey(c->body.data ? c->body.data : "", c->body.len);
        do_getkey(c, req, ka);
    } else {
        respond(c, 200, g_info_wire.data, g_info_wire.len, ka);
        __atomic_add_fetch(&g_count[1], 1, __ATOMIC_RELAXED);
    }
    json_object_put(req);
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    return c->url.len + n > 4096 || buf_append(&c->url, at, n) ? -1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    if (c->body.len + n > MAX_BODY) {
        c->too_big = 1;
        return 0;
    }
    return buf_append(&c->body, at, n) ? -1 : 0;
}

static int on_begin(llhttp_t *p)
{
    conn_t *c = p->data;
    buf_reset(&c->url);
    buf_reset(&c->body);
    c->too_big = 0;
    return 0;
}

static int on_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    dispatch(c);
    return c->write_failed || !llhttp_should_keep_alive(p) ? HPE_USER : 0;
}

static void *conn_main(void *arg)
{
    conn_t *c = arg;
    llhttp_settings_t set;
    llhttp_settings_init(&set);
    set.on_message_begin = on_begin;
    set.on_url = on_url;
    set.on_body = on_body;
    set.on_message_complete = on_complete;
    llhttp_init(&c->parser, HTTP_REQUEST, &set);
    c->parser.data = c;
    char tmp[16384];
    for (;;) {
        ssize_t n = recv(c->fd, tmp, sizeof tmp, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        llhttp_errno_t e = llhttp_execute(&c->parser, tmp, (size_t)n);
        if (e == HPE_USER)
            break;
        if (e != HPE_OK) {
            respond_error(c, 400, "malformed HTTP request", 0);
            break;
        }
    }
    close(c->fd);
    buf_free(&c->url);
    buf_free(&c->body);
    free(c);
    return NULL;
}

/* ---- listener, signals ---- */

static int listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "fake-dstack-agent: socket path too long\n");
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path); /* stale socket */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 1024) != 0) {
        fprintf(stderr, "fake-dstack-agent: cannot listen on %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(stderr, "fake-dstack-agent (SIMULATED dstack guest agent, test CA quotes) listening on unix:%s\n", path);
    return fd;
}

static int listen_tcp(const char *hp)
{
    const char *colon = strrchr(hp, ':');
    if (!colon || colon == hp) {
        fprintf(stderr, "fake-dstack-agent: --listen: expected HOST:PORT\n");
        return -1;
    }
    char host[256];
    size_t hl = (size_t)(colon - hp);
    if (hp[0] == '[' && hl >= 2 && hp[hl - 1] == ']')
        hp++, hl -= 2;
    if (hl >= sizeof host)
        return -1;
    memcpy(host, hp, hl);
    host[hl] = 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0) {
        fprintf(stderr, "fake-dstack-agent: cannot resolve %s\n", host);
        return -1;
    }
    int one = 1, fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        fprintf(stderr, "fake-dstack-agent: cannot listen on %s: %s\n", colon + 1, strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char h[128] = "?", p[16] = "?";
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, p, sizeof p, NI_NUMERICHOST | NI_NUMERICSERV);
    fprintf(stderr, "fake-dstack-agent (SIMULATED dstack guest agent, test CA quotes) listening on %s:%s\n", h, p);
    return fd;
}

static void *signal_main(void *arg)
{
    sigset_t *set = arg;
    int sig = 0;
    sigwait(set, &sig);
    if (g_opt.unix_path)
        unlink(g_opt.unix_path);
    fprintf(stderr, "fake-dstack-agent: stopped\n");
    _exit(0);
    return NULL;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* every thread inherits it; signal_main waits */
    if (!(g_sim = attest_sim_new_os(g_opt.dev_image)) || build_texts() != 0) {
        fprintf(stderr, "fake-dstack-agent: cannot build the simulated attestation\n");
        return 1;
    }
    g_lfd = g_opt.unix_path ? listen_unix(g_opt.unix_path) : listen_tcp(g_opt.listen);
    if (g_lfd < 0)
        return 1;
    pthread_t sth;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (pthread_create(&sth, &attr, signal_main, &set) != 0)
        return 1;
    for (;;) {
        int fd = accept4(g_lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
                if (errno == EMFILE || errno == ENFILE)
                    sleep_ms(10);
                continue;
            }
            fprintf(stderr, "fake-dstack-agent: accept: %s\n", strerror(errno));
            return 1;
        }
        conn_t *c = calloc(1, sizeof *c);
        pthread_t th;
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        if (pthread_create(&th, &attr, conn_main, c) != 0) {
            close(fd);
            free(c);
        }
    }
}
