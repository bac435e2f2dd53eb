/* bench/e2ee_client.c: the load generator of bench/e2ee.mjs: CONC threads, each with one
 * keep-alive HTTP/1.1 connection, each sending streamed chat completions back to back for
 * SECONDS, every prompt encrypted per FORMAT with vllm-proxy's own E2EE code (src/e2ee,
 * build/libvp.a), every answer's content field checked to be ciphertext and a sample of them
 * opened with the client's key. C rather than node: a NEAR answer costs the client one ECDH
 * per token to open, which @noble (pure JavaScript) would do far slower than the proxy seals
 * it; here opening costs what sealing costs, and only a sample is opened: every field of the
 * first answer on the first connection, then the first field of each answer and one field in
 * VERIFY_EVERY (every field is checked to be hex).
 *
 * usage: e2ee_client PORT FORMAT CONC SECONDS TOKEN MODEL ECDSA_PUB_HEX ED25519_PUB_HEX
 *                    [MAX_TOKENS=512] [VERIFY_EVERY=32]
 * FORMAT: plain, near-v1-ecdsa, near-v1-ed25519, near-v2-ecdsa, near-v2-ed25519,
 *         dstack-v1-ecdsa, dstack-v1-ed25519, dstack-v2-ecdsa, dstack-v2-ed25519.
 * NEAR formats are sent without X-Model-Pub-Key, so that the proxy answers by NEAR's rules (a
 * fresh ephemeral key per field) rather than Dstack-compatibly (formats document §1.2).
 * Output: one line "BENCHE2EE {json}": answers completed within the time, content tokens
 * received (in completed and cut answers), latency percentiles of completed answers,
 * fields opened, errors, the client's CPU seconds. Exit 1 on any error. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/hex.h"
#include "e2ee/e2ee.h"

typedef struct fmt {
    const char *name;
    int enc;                /* 0: plaintext */
    int ecdsa;              /* algo */
    int version;            /* 1 or 2 */
    int dstack;             /* Dstack family (X-Model-Pub-Key sent; v2 headers) */
    e2ee_cipher_t cipher;   /* request and answer cipher */
} fmt_t;

static const fmt_t FORMATS[] = {
    {"plain", 0, 0, 0, 0, E2EE_C_SECP_AESGCM},
    {"near-v1-ecdsa", 1, 1, 1, 0, E2EE_C_SECP_AESGCM},
    {"near-v1-ed25519", 1, 0, 1, 0, E2EE_C_NACL_XSALSA},
    {"near-v2-ecdsa", 1, 1, 2, 0, E2EE_C_SECP_AESGCM},
    {"near-v2-ed25519", 1, 0, 2, 0, E2EE_C_X25519_XCHACHA},
    {"dstack-v1-ecdsa", 1, 1, 1, 1, E2EE_C_SECP_AESGCM},
    {"dstack-v1-ed25519", 1, 0, 1, 1, E2EE_C_X25519_AESGCM},
    {"dstack-v2-ecdsa", 1, 1, 2, 1, E2EE_C_SECP_AESGCM},
    {"dstack-v2-ed25519", 1, 0, 2, 1, E2EE_C_X25519_AESGCM},
};

static struct {
    const fmt_t *f;
    int port, max_tokens;
    long verify_every;
    const char *token, *model, *ecdsa_hex, *ed_hex;
    uint8_t server[65]; /* the request cipher's peer key */
    size_t server_n;
    uint8_t client_sk[32]; /* opens the answer: secp scalar or X25519 secret */
    char client_hdr[131];  /* X-Client-Pub-Key */
    double deadline;
    atomic_long answers, tokens, opened, errors;
} G;

typedef struct worker {
    pthread_t th;
    int id;
    double *lat; /* ms, completed answers */
    size_t nlat, caplat;
    char err[256];
} worker_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void hexs(char *out, const uint8_t *p, size_t n)
{
    static const char H[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = H[p[i] >> 4];
        out[2 * i + 1] = H[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int connect_proxy(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)G.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 250000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The request: one user message, its content encrypted per the format. */
static int build_request(worker_t *w, unsigned long seq, char *out, size_t cap, size_t *len,
                         char nonce[64], int64_t *ts)
{
    static const char PROMPT[] = "Write a short poem about reverse proxies.";
    char content[1024], body[1536], hdrs[768];
    hdrs[0] = '\0';
    if (!G.f->enc) {
        snprintf(content, sizeof content, "\"%s\"", PROMPT);
    } else {
        char aad[512];
        size_t an = 0;
        *ts = (int64_t)time(NULL);
        snprintf(nonce, 64, "bench-%d-%lu-%08x", w->id, seq, randombytes_random());
        if (G.f->dstack && G.f->version == 2 &&
            e2ee_aad_dstack_req(aad, sizeof aad, &an, G.f->ecdsa ? E2EE_ALGO_ECDSA : E2EE_ALGO_ED25519,
                                G.model, strlen(G.model), 0, -1, nonce, strlen(nonce), *ts) != E2EE_OK)
            return -1;
        e2ee_key_t k;
        if (e2ee_key_derive_send(&k, G.f->cipher, G.server, G.server_n, NULL) != E2EE_OK)
            return -1;
        size_t hn = 0;
        content[0] = '"';
        int rc = e2ee_seal_hex(&k, an ? (const uint8_t *)aad : NULL, an, (const uint8_t *)PROMPT,
                               sizeof PROMPT - 1, content + 1, sizeof content - 2, &hn);
        e2ee_key_wipe(&k);
        if (rc != E2EE_OK)
            return -1;
        content[1 + hn] = '"';
        content[2 + hn] = '\0';
        int n = snprintf(hdrs, sizeof hdrs, "X-Signing-Algo: %s\r\nX-Client-Pub-Key: %s\r\n",
                         G.f->ecdsa ? "ecdsa" : "ed25519", G.client_hdr);
        if (G.f->dstack)
            n += snprintf(hdrs + n, sizeof hdrs - (size_t)n, "X-Model-Pub-Key: %s\r\n",
                          G.f->ecdsa ? G.ecdsa_hex : G.ed_hex);
        if (G.f->dstack && G.f->version == 2)
            n += snprintf(hdrs + n, sizeof hdrs - (size_t)n,
                          "X-E2EE-Version: 2\r\nX-E2EE-Nonce: %s\r\nX-E2EE-Timestamp: %lld\r\n",
                          nonce, (long long)*ts);
        if (!G.f->dstack && G.f->version == 2)
            snprintf(hdrs + n, sizeof hdrs - (size_t)n, "X-Encryption-Version: 2\r\n");
    }
    int bn = snprintf(body, sizeof body,
                      "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":%s}],"
                      "\"max_tokens\":%d,\"stream\":true}",
                      G.model, content, G.max_tokens);
    int n = snprintf(out, cap,
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Authorization: Bearer %s\r\nContent-Type: application/json\r\n%s"
                     "Content-Length: %d\r\n\r\n%s",
                     G.token, hdrs, bn, body);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    *len = (size_t)n;
    return 0;
}

/* Finds "key":"value" in a JSON line (values without escapes: ids, models, hex). */
static const char *str_field(const char *p, const char *e, const char *key, size_t *n)
{
    size_t kn = strlen(key);
    for (const char *q = p; (q = memmem(q, (size_t)(e - q), key, kn)) != NULL; q += kn) {
        const char *v = q + kn;
        if (v < e && *v == '"') {
            const char *end = memchr(v + 1, '"', (size_t)(e - v - 1));
            if (!end)
                return NULL;
            *n = (size_t)(end - v - 1);
            return v + 1;
        }
    }
    return NULL;
}

typedef struct answer {
    int first; /* open every field */
    long fields;
    const char *nonce;
    int64_t ts;
} answer_t;

/* One SSE line of the answer. -1 on a check that fails. */
static int on_line(worker_t *w, answer_t *a, const char *p, size_t n, int *done)
{
    if (n >= 12 && memcmp(p, "data: [DONE]", 12) == 0) {
        *done = 1;
        return 0;
    }
    if (n < 6 || memcmp(p, "data: ", 6) != 0)
        return 0;
    const char *e = p + n;
    size_t cn = 0;
    const char *c = str_field(p, e, "\"content\":", &cn);
    if (!c || cn == 0)
        return 0;
    atomic_fetch_add(&G.tokens, 1);
    if (!G.f->enc)
        return 0;
    if (cn % 2 || !hex_is_hex(c, cn)) {
        snprintf(w->err, sizeof w->err, "a content field that is not hex: %.40s", c);
        return -1;
    }
    a->fields++;
    if (!a->first && a->fields != 1 && (G.verify_every <= 0 || a->fields % G.verify_every != 0))
        return 0;
    char aad[1024];
    size_t an = 0;
    if (G.f->dstack && G.f->version == 2) {
        size_t idn = 0, mn = 0;
        const char *id = str_field(p, e, "\"id\":", &idn), *m = str_field(p, e, "\"model\":", &mn);
        if (!id || !m ||
            e2ee_aad_dstack_resp(aad, sizeof aad, &an, G.f->ecdsa ? E2EE_ALGO_ECDSA : E2EE_ALGO_ED25519,
                                 m, mn, id, idn, 0, "content", a->nonce, strlen(a->nonce),
                                 a->ts) != E2EE_OK) {
            snprintf(w->err, sizeof w->err, "no id / model for the AAD");
            return -1;
        }
    }
    uint8_t pt[512];
    size_t pn = 0;
    int rc = e2ee_open_hex(G.f->cipher, 0, G.client_sk, c, cn, an ? (const uint8_t *)aad : NULL,
                           an, pt, sizeof pt, &pn);
    if (rc != E2EE_OK || pn == 0) {
        snprintf(w->err, sizeof w->err, "a content field does not open: %s", e2ee_err_name(rc));
        return -1;
    }
    atomic_fetch_add(&G.opened, 1);
    return 0;
}

typedef struct conn {
    int fd;
    char *raw; /* bytes read, not yet decoded */
    size_t rlen, rcap;
} conn_t;

/* Reads more bytes; 0, or -1 (closed / error), 1 (the deadline passed). */
static int fill(conn_t *c)
{
    if (c->rcap - c->rlen < 65536) {
        c->rcap = c->rcap ? c->rcap * 2 : 1 << 18;
        c->raw = realloc(c->raw, c->rcap);
        if (!c->raw)
            return -1;
    }
    for (;;) {
        ssize_t r = recv(c->fd, c->raw + c->rlen, c->rcap - c->rlen, 0);
        if (r > 0) {
            c->rlen += (size_t)r;
            return 0;
        }
        if (r == 0)
            return -1;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (now_s() > G.deadline + 5)
                return 1;
            continue;
        }
        if (errno != EINTR)
            return -1;
    }
}

static void consume(conn_t *c, size_t n)
{
    memmove(c->raw, c->raw + n, c->rlen - n);
    c->rlen -= n;
}

/* One request and its answer. 0 complete, 1 cut by the deadline, -1 error. */
static int one(worker_t *w, conn_t *c, unsigned long seq, double *ms)
{
    char req[4096], nonce[64] = "";
    size_t len;
    int64_t ts = 0;
    if (build_request(w, seq, req, sizeof req, &len, nonce, &ts) != 0) {
        snprintf(w->err, sizeof w->err, "cannot build the request");
        return -1;
    }
    double t0 = now_s();
    for (size_t off = 0; off < len;) {
        ssize_t s = send(c->fd, req + off, len - off, MSG_NOSIGNAL);
        if (s <= 0) {
            snprintf(w->err, sizeof w->err, "send: %s", strerror(errno));
            return -1;
        }
        off += (size_t)s;
    }
    /* the head */
    char *he;
    while (!(he = memmem(c->raw, c->rlen, "\r\n\r\n", 4))) {
        int r = fill(c);
        if (r) {
            snprintf(w->err, sizeof w->err, "no response head");
            return r > 0 ? 1 : -1;
        }
    }
    size_t hl = (size_t)(he - c->raw) + 4;
    if (c->rlen < 12 || memcmp(c->raw + 9, "200", 3) != 0) {
        snprintf(w->err, sizeof w->err, "answered: %.*s", (int)(hl < 200 ? hl : 200), c->raw);
        return -1;
    }
    int chunked = memmem(c->raw, hl, "chunked", 7) != NULL;
    if (!chunked) {
        snprintf(w->err, sizeof w->err, "a stream that is not chunked");
        return -1;
    }
    consume(c, hl);
    /* chunks → lines */
    answer_t a = {.first = seq == 0 && w->id == 0, .nonce = nonce, .ts = ts};
    char *body = NULL;
    size_t blen = 0, bcap = 0;
    int done = 0, end = 0, rc = 0;
    while (!end) {
        /* decode whole chunks */
        for (;;) {
            char *le = memmem(c->raw, c->rlen, "\r\n", 2);
            if (!le)
                break;
            size_t sz = strtoul(c->raw, NULL, 16), sl = (size_t)(le - c->raw) + 2;
            if (c->rlen < sl + sz + 2)
                break;
            if (sz == 0) {
                consume(c, sl + 2);
                end = 1;
                break;
            }
            if (blen + sz > bcap) {
                bcap = (blen + sz) * 2;
                body = realloc(body, bcap);
                if (!body)
                    return -1;
            }
            memcpy(body + blen, c->raw + sl, sz);
            blen += sz;
            consume(c, sl + sz + 2);
        }
        /* complete lines */
        size_t lo = 0;
        for (;;) {
            char *nl = memchr(body + lo, '\n', blen - lo);
            if (!nl)
                break;
            size_t ln = (size_t)(nl - (body + lo));
            if (on_line(w, &a, body + lo, ln, &done) != 0) {
                free(body);
                return -1;
            }
            lo += ln + 1;
        }
        memmove(body, body + lo, blen - lo);
        blen -= lo;
        if (end)
            break;
        int r = fill(c);
        if (r) {
            rc = r > 0 ? 1 : -1;
            snprintf(w->err, sizeof w->err, "the answer was cut");
            break;
        }
        if (now_s() > G.deadline + 5) {
            rc = 1;
            break;
        }
    }
    free(body);
    if (rc == 0 && !done) {
        snprintf(w->err, sizeof w->err, "a stream without data: [DONE]");
        return -1;
    }
    *ms = (now_s() - t0) * 1e3;
    return rc;
}

static void *run(void *arg)
{
    worker_t *w = arg;
    conn_t c = {.fd = connect_proxy()};
    if (c.fd < 0) {
        snprintf(w->err, sizeof w->err, "connect: %s", strerror(errno));
        atomic_fetch_add(&G.errors, 1);
        return NULL;
    }
    for (unsigned long seq = 0; now_s() < G.deadline; seq++) {
        double ms = 0;
        int rc = one(w, &c, seq, &ms);
        if (rc < 0) {
            atomic_fetch_add(&G.errors, 1);
            break;
        }
        if (rc > 0 || now_s() > G.deadline)
            break; /* an answer finished after the time is not counted */
        atomic_fetch_add(&G.answers, 1);
        if (w->nlat == w->caplat) {
            w->caplat = w->caplat ? 2 * w->caplat : 256;
            w->lat = realloc(w->lat, w->caplat * sizeof *w->lat);
            if (!w->lat)
                break;
        }
        w->lat[w->nlat++] = ms;
    }
    close(c.fd);
    free(c.raw);
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int keys(void)
{
    uint8_t raw[65];
    if (G.f->ecdsa) {
        if (strlen(G.ecdsa_hex) != 128 || hex_decode(raw + 1, 64, G.ecdsa_hex, 128) != 64)
            return -1;
        raw[0] = 4;
        memcpy(G.server, raw, 65);
        G.server_n = 65;
        uint8_t pub[65];
        do
            randombytes_buf(G.client_sk, 32);
        while (e2ee_secp_public(pub, G.client_sk) != E2EE_OK);
        hexs(G.client_hdr, pub, 65);
    } else {
        if (strlen(G.ed_hex) != 64 || hex_decode(raw, 32, G.ed_hex, 64) != 32 ||
            e2ee_ed25519_pub_to_x25519(G.server, raw) != E2EE_OK)
            return -1;
        G.server_n = 32;
        uint8_t seed[32], pk[32], sk[64];
        randombytes_buf(seed, 32);
        crypto_sign_seed_keypair(pk, sk, seed);
        if (e2ee_ed25519_seed_to_x25519(G.client_sk, seed) != E2EE_OK)
            return -1;
        hexs(G.client_hdr, pk, 32);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 9) {
        fprintf(stderr, "usage: e2ee_client PORT FORMAT CONC SECONDS TOKEN MODEL ECDSA_PUB_HEX "
                        "ED25519_PUB_HEX [MAX_TOKENS] [VERIFY_EVERY]\n");
        return 2;
    }
    if (sodium_init() < 0)
        return 2;
    G.port = atoi(argv[1]);
    for (size_t i = 0; i < sizeof FORMATS / sizeof FORMATS[0]; i++)
        if (strcmp(argv[2], FORMATS[i].name) == 0)
            G.f = &FORMATS[i];
    int conc = atoi(argv[3]);
    double secs = atof(argv[4]);
    G.token = argv[5];
    G.model = argv[6];
    G.ecdsa_hex = argv[7];
    G.ed_hex = argv[8];
    G.max_tokens = argc > 9 ? atoi(argv[9]) : 512;
    G.verify_every = argc > 10 ? atol(argv[10]) : 32;
    if (!G.f || conc < 1 || secs <= 0 || (G.f->enc && keys() != 0)) {
        fprintf(stderr, "e2ee_client: bad format, concurrency, time or server keys\n");
        return 2;
    }
    worker_t *ws = calloc((size_t)conc, sizeof *ws);
    if (!ws)
        return 2;
    double t0 = now_s();
    G.deadline = t0 + secs;
    for (int i = 0; i < conc; i++) {
        ws[i].id = i;
        if (pthread_create(&ws[i].th, NULL, run, &ws[i]) != 0)
            return 2;
    }
    size_t total = 0;
    for (int i = 0; i < conc; i++) {
        pthread_join(ws[i].th, NULL);
        total += ws[i].nlat;
    }
    double wall = now_s() - t0;
    double *all = malloc((total + 1) * sizeof *all);
    size_t k = 0;
    const char *err = "";
    for (int i = 0; i < conc; i++) {
        for (size_t j = 0; j < ws[i].nlat; j++)
            all[k++] = ws[i].lat[j];
        if (ws[i].err[0] && !err[0] && atomic_load(&G.errors))
            err = ws[i].err;
    }
    qsort(all, total, sizeof *all, cmp_d);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    char esc[256];
    size_t o = 0;
    for (const char *p = err; *p && o < sizeof esc - 2; p++)
        esc[o++] = *p == '"' || *p == '\\' || (unsigned char)*p < 0x20 ? '?' : *p;
    esc[o] = '\0';
    printf("BENCHE2EE {\"format\":\"%s\",\"conc\":%d,\"seconds\":%.3f,\"wall_s\":%.3f,"
           "\"answers\":%ld,\"tokens\":%ld,\"opened\":%ld,\"errors\":%ld,\"p50_ms\":%.3f,"
           "\"p99_ms\":%.3f,\"client_cpu_s\":%.3f,\"error\":\"%s\"}\n",
           G.f->name, conc, secs, wall, atomic_load(&G.answers), atomic_load(&G.tokens),
           atomic_load(&G.opened), atomic_load(&G.errors),
           total ? all[total / 2] : 0.0, total ? all[(total * 99) / 100 < total ? (total * 99) / 100 : total - 1] : 0.0,
           cpu, esc);
    return atomic_load(&G.errors) ? 1 : 0;
}
