/* bench/lp_e2ee_bench.c: the local verifying proxy's E2EE codec per streamed event
 * (src/verify/lp_e2ee.c, lp_e2ee_open_event), in CPU time of this thread, against baselines
 * measured in the same process: a memcpy of the event, the bare AES-GCM open of one sealed
 * field of the same size (hex decode + AEAD with the cached derived key, e2ee_open_hex_cached)
 * and the Dstack v2 AAD it needs (e2ee_aad_dstack_resp). The events are the ones vLLM streams
 * (one token of content each, mock-vllm's shape), sealed by the server's own code (a real
 * exchange: lp_e2ee_seal_request, then e2ee_request and e2ee_resp_* with a signer of fixed
 * keys), opened by a codec of each format.
 *
 * Built by `make bench-lp-e2ee` (build/bench/lp_e2ee_bench) and run: docs/PERFORMANCE.md,
 * "The local proxy's E2EE". Usage: lp_e2ee_bench [events per repeat] [repeats] [mode, for
 * a profile: 0 open_event alone, 1 also the json-c path, 3 also the bare open]. One line per
 * format "BENCHLPE2EE {json}", ns per event: min and median over the repeats. Compiled with
 * -DLP_E2EE_BENCH_OLD it uses only the API that predates the scan (lp_e2ee_open_event), to be
 * linked against an older lp_e2ee.o for a before/after comparison. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/buf.h"
#include "core/log.h"
#include "e2ee/e2ee.h"
#include "http/server.h"
#include "proxy/app.h"
#include "proxy/config.h"
#include "proxy/e2ee.h"
#include "sign/signer.h"
#include "verify/lp_e2ee.h"

#define MODEL "bench/lp-model"

#include "../tests/fakes/signer_keys.h" /* ECDSA_SK, ED_SEED */

static const char *const HNAMES[HTTP_E2EE_N] = {
    "X-Signing-Algo",       "X-Client-Pub-Key",     "X-Model-Pub-Key",
    "X-E2EE-Version",       "X-E2EE-Nonce",         "X-E2EE-Timestamp",
    "X-Encryption-Version", "X-Encrypt-All-Fields", "X-Encrypt-Tool-Calls"};

static double cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what)
{
    fprintf(stderr, "lp_e2ee_bench: %s\n", what);
    exit(1);
}

static void bench_emit(void *ud, const char *p, size_t n)
{
    if (buf_append(ud, p, n) != 0)
        die("oom");
}

/* The events of one answer, sealed by the server for codec e; payloads (after "data: "). */
static size_t sealed_events(app_t *app, lp_e2ee_t *e, char **ev, size_t max)
{
    static const char REQ[] =
        "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"stream\":true}";
    buf_t body = BUF_INIT, plain = BUF_INIT, engine = BUF_INIT, wire = BUF_INIT;
    const char *const *hdrs = NULL;
    lp_e2ee_err_t err;
    if (lp_e2ee_seal_request(e, (const uint8_t *)REQ, strlen(REQ), &body, &hdrs, &err) != 0)
        die(err.msg);
    http_req_t req;
    memset(&req, 0, sizeof req);
    req.path = (strv_t){"/v1/chat/completions", 20};
    for (size_t h = 0; hdrs[h]; h++) {
        const char *colon = strchr(hdrs[h], ':'), *v = colon + 1;
        while (*v == ' ')
            v++;
        for (int i = 0; i < HTTP_E2EE_N; i++)
            if ((size_t)(colon - hdrs[h]) == strlen(HNAMES[i]) &&
                strncasecmp(hdrs[h], HNAMES[i], strlen(HNAMES[i])) == 0) {
                req.e2ee[i] = (strv_t){v, strlen(v)};
                req.e2ee_present |= 1u << i;
            }
    }
    e2ee_sess_t *s = NULL;
    app_error_t aerr;
    char msg[E2EE_MSG_MAX];
    if (e2ee_request(app, &req, (strv_t){body.data, body.len}, &plain, &s, &aerr, msg) != 0)
        die("the server refused the request");
    /* mock-vllm's chunks: one token of content each */
    static const char *const TOKENS[] = {" The",  " quick", " brown", " fox", " jumps",
                                         " over", " the",   " lazy",  " dog", "."};
    for (size_t i = 0; i < max; i++)
        buf_printf(&engine,
                   "data: {\"id\":\"chatcmpl-0123456789abcdef0123456789abcdef\",\"object\":"
                   "\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"" MODEL
                   "\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"},\"logprobs\":"
                   "null,\"finish_reason\":null}]}\n\n",
                   TOKENS[i % 10]);
    e2ee_resp_begin(s, 1);
    if (e2ee_resp_feed(s, engine.data, engine.len, bench_emit, &wire) != 0 ||
        e2ee_resp_finish(s, bench_emit, &wire) != 0)
        die("the server could not seal");
    size_t k = 0;
    for (char *p = wire.data, *nl; k < max && p && (nl = strchr(p, '\n')); p = nl + 1)
        if (nl - p > 6 && !strncmp(p, "data: ", 6))
            ev[k++] = strndup(p + 6, (size_t)(nl - p - 6));
    e2ee_sess_free(s);
    e2ee_wipe_buf(&plain);
    buf_free(&body);
    buf_free(&engine);
    buf_free(&wire);
    return k;
}

#define NEV 64

/* Median and min over reps of the ns per event of f over the events. */
typedef struct bstat {
    double min, med, spread;
} stat_t;

static stat_t summarise(double *v, size_t reps)
{
    qsort(v, reps, sizeof *v, cmp_d);
    return (stat_t){v[0], v[reps / 2], v[reps - 1] - v[0]};
}

static volatile size_t g_sink;

int main(int argc, char **argv)
{
    long iters = argc > 1 ? strtol(argv[1], NULL, 10) : 20000;
    long reps = argc > 2 ? strtol(argv[2], NULL, 10) : 9;
    int only = argc > 3 ? (int)strtol(argv[3], NULL, 10) : -1; /* for perf: one mode */
    if (iters < NEV || reps < 1 || reps > 99 || sodium_init() < 0)
        return 2;
    log_set_level(LOG_LVL_OFF);
    if (signer_global_init() != 0)
        die("signer");
    signer_t *signer = signer_from_secrets(ECDSA_SK, ED_SEED);
    config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.model_name, sizeof cfg.model_name, "%s", MODEL);
    cfg.workers = 1;
    app_t app;
    memset(&app, 0, sizeof app);
    app.cfg = &cfg;
    app.signer = signer;
    lp_pins_t pins;
    memset(&pins, 0, sizeof pins);
    snprintf(pins.ecdsa_public_key, sizeof pins.ecdsa_public_key, "04%s",
             signer_ecdsa_pubkey_hex(signer));
    snprintf(pins.ed25519_key, sizeof pins.ed25519_key, "%s", signer_ed25519_pubkey_hex(signer));

    static const char *const FORMATS[] = {"dstack-v2:ed25519", "dstack-v2:ecdsa", "near-v2"};
    for (size_t f = 0; f < sizeof FORMATS / sizeof FORMATS[0]; f++) {
        int near = !strncmp(FORMATS[f], "near", 4);
        long it = near ? iters / 50 : iters; /* NEAR: an ECDH per event */
        if (it < NEV)
            it = NEV;
        lp_e2ee_err_t err;
        lp_e2ee_t *e = lp_e2ee_new(FORMATS[f], &pins, "/v1/chat/completions", &err);
        if (!e)
            die(err.msg);
        char *ev[NEV];
        size_t nev = sealed_events(&app, e, ev, NEV), evlen = 0;
        for (size_t i = 0; i < nev; i++)
            evlen += strlen(ev[i]);
        buf_t out = BUF_INIT;
        char cp[4096];
        /* the modes: 0 lp_e2ee_open_event; 1 the json-c path alone; 2 memcpy; 3 AAD + open */
        double v[4][99];
#ifdef LP_E2EE_BENCH_OLD
        static const int MODES[] = {0, 2};
#else
        static const int MODES[] = {0, 1, 2, 3};
        /* the bare open: one field of the same size sealed to a known key, with its AAD */
        uint8_t sk[32], xpub[32], pt[64];
        randombytes_buf(sk, sizeof sk);
        if (e2ee_x25519_public(xpub, sk) != E2EE_OK)
            die("x25519");
        e2ee_key_t k, cache;
        memset(&cache, 0, sizeof cache);
        char aad[512], hex[256];
        size_t aad_n = 0, hn = 0, pn = 0;
        if (e2ee_key_derive_send(&k, E2EE_C_X25519_AESGCM, xpub, 32, NULL) != E2EE_OK ||
            e2ee_aad_dstack_resp(aad, sizeof aad, &aad_n, E2EE_ALGO_ED25519, MODEL, strlen(MODEL),
                                 "chatcmpl-0123456789abcdef0123456789abcdef", 41, 0, "content",
                                 "0123456789abcdef0123456789abcdef", 32, 1700000000) != E2EE_OK ||
            e2ee_seal_hex(&k, (const uint8_t *)aad, aad_n, (const uint8_t *)" quick", 6, hex,
                          sizeof hex, &hn) != E2EE_OK)
            die("seal");
#endif
        const size_t nmodes = sizeof MODES / sizeof MODES[0];
        for (long r = 0; r < reps; r++) {
            for (size_t mi = 0; mi < nmodes; mi++) {
                int m = MODES[mi];
                if (only >= 0 && m != only && m != 0)
                    continue; /* a profile of one mode (and open_event, the first) */
                double t0 = cpu_ns();
                for (long i = 0; i < it; i++) {
                    const char *p = ev[(size_t)i % nev];
                    size_t n = strlen(p);
                    int rc = 0;
                    buf_reset(&out);
                    if (m == 0)
                        rc = lp_e2ee_open_event(e, (const uint8_t *)p, n, &out, &err);
#ifndef LP_E2EE_BENCH_OLD
                    else if (m == 1)
                        rc = lp_e2ee_open_path(e, LP_E2EE_PATH_JSONC, 1, (const uint8_t *)p, n,
                                               &out, &err);
                    else if (m == 3) {
                        size_t an = 0;
                        rc = e2ee_aad_dstack_resp(
                                 aad, sizeof aad, &an, E2EE_ALGO_ED25519, MODEL, strlen(MODEL),
                                 "chatcmpl-0123456789abcdef0123456789abcdef", 41, 0, "content",
                                 "0123456789abcdef0123456789abcdef", 32, 1700000000) |
                             e2ee_open_hex_cached(E2EE_C_X25519_AESGCM, sk, &cache, hex, hn,
                                                  (const uint8_t *)aad, an, pt, sizeof pt, &pn);
                        g_sink += pn;
                    }
#endif
                    else {
                        memcpy(cp, p, n < sizeof cp ? n : sizeof cp);
                        g_sink += (size_t)cp[n / 2];
                        rc = 0;
                    }
                    if (rc != 0)
                        die(err.msg);
                }
                v[m][r] = (cpu_ns() - t0) / (double)it;
            }
        }
        const char *names[4] = {"open_event", "jsonc_path", "memcpy", "aad_and_open"};
        printf("BENCHLPE2EE {\"format\":\"%s\",\"events\":%ld,\"repeats\":%ld,\"event_bytes\":%zu",
               FORMATS[f], it, reps, evlen / nev);
        stat_t base = summarise(v[0], (size_t)reps);
        for (size_t mi = 0; mi < nmodes; mi++) {
            int m = MODES[mi];
            if (only >= 0 && m != only && m != 0)
                continue;
            stat_t s = m ? summarise(v[m], (size_t)reps) : base;
            printf(",\"%s\":{\"min_ns\":%.0f,\"median_ns\":%.0f,\"spread_ns\":%.0f}", names[m],
                   s.min, s.med, s.spread);
        }
        printf("}\n");
        fflush(stdout);
        for (size_t i = 0; i < nev; i++)
            free(ev[i]);
        buf_free(&out);
        lp_e2ee_free(e);
    }
    signer_free(signer);
    return 0;
}
