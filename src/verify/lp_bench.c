/* The local proxy's baselines for bench/local-proxy.mjs (lp_bench.h). */
#include "verify/lp_bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>

#include <curl/curl.h>

#include "core/buf.h"
#include "core/hex.h"
#include "core/sha.h"
#include "verify/vsig.h"

#define LPB_MAX_ANSWER (64u * 1024u * 1024u)
#define LPB_MAX_HEAD (64u * 1024u)

typedef struct lpb {
    size_t bytes;       /* body bytes of this answer */
    int keep;           /* keep the body and the trailers (the last stream) */
    buf_t body, fields; /* the kept body; the head's and the trailers' lines */
} lpb_t;

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
    lpb_t *b = ud;
    size_t n = sz * nm;
    b->bytes += n;
    if (b->keep && (b->body.len + n > LPB_MAX_ANSWER || buf_append(&b->body, p, n)))
        return 0;
    return n;
}

static size_t on_head(char *p, size_t sz, size_t nm, void *ud)
{
    lpb_t *b = ud;
    size_t n = sz * nm;
    if (b->keep && (b->fields.len + n > LPB_MAX_HEAD || buf_append(&b->fields, p, n)))
        return 0;
    return n;
}

/* The value of the last field `name` among b's lines into out; 1 when found. */
static int field(const buf_t *b, const char *name, char *out, size_t cap)
{
    int found = 0;
    size_t nl = strlen(name);
    const char *p = b->data, *end = p ? p + b->len : NULL;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end;
        if ((size_t)(le - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1, *ve = le;
            while (v < ve && *v == ' ')
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
                ve--;
            snprintf(out, cap, "%.*s", (int)(ve - v), v);
            found = 1;
        }
        p = le + 1;
    }
    return found;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int usage(void)
{
    fprintf(stderr, "usage: vllm-proxy-verify bench-local-proxy URL --token T --pin sha256//B64 "
                    "--body FILE [--streams N] [--reps N]\n");
    return 1;
}

int lp_bench_main(int argc, char **argv)
{
    const char *url = NULL, *token = NULL, *pin = NULL, *body_file = NULL;
    long streams = 200, reps = 200;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--token") == 0 && v)
            token = v, i++;
        else if (strcmp(a, "--pin") == 0 && v)
            pin = v, i++;
        else if (strcmp(a, "--body") == 0 && v)
            body_file = v, i++;
        else if (strcmp(a, "--streams") == 0 && v)
            streams = strtol(v, NULL, 10), i++;
        else if (strcmp(a, "--reps") == 0 && v)
            reps = strtol(v, NULL, 10), i++;
        else if (a[0] != '-' && !url)
            url = a;
        else
            return usage();
    }
    if (!url || !token || !pin || !body_file || streams < 1 || streams > 1000000 || reps < 1 ||
        reps > 1000000)
        return usage();
    buf_t req = BUF_INIT;
    FILE *f = fopen(body_file, "rb");
    char chunk[4096];
    size_t got;
    while (f && (got = fread(chunk, 1, sizeof chunk, f)) > 0 && req.len < LPB_MAX_ANSWER)
        buf_append(&req, chunk, got);
    if (f)
        fclose(f);
    if (!req.len) {
        fprintf(stderr, "bench-local-proxy: cannot read %s\n", body_file);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *h = curl_easy_init();
    char full[2048], auth[1200];
    snprintf(full, sizeof full, "%s/v1/chat/completions", url);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    struct curl_slist *l = NULL;
    l = curl_slist_append(l, "Content-Type: application/json");
    l = curl_slist_append(l, "Expect:");
    l = curl_slist_append(l, "X-Signature-Inband: 1");
    l = curl_slist_append(l, "TE: trailers");
    l = curl_slist_append(l, auth);
    lpb_t b = {0, 0, BUF_INIT, BUF_INIT};
    /* the relay's options (lp_relay.c handle_for and relay) */
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(h, CURLOPT_PINNEDPUBLICKEY, pin);
    curl_easy_setopt(h, CURLOPT_URL, full);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, l);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req.len);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, req.data);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_head);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &b);
    int rc = 1;
    /* warm-up: the connection (and its handshake) outside the measured streams */
    CURLcode w = curl_easy_perform(h);
    if (w != CURLE_OK) {
        fprintf(stderr, "bench-local-proxy: the remote did not answer: %s\n",
                curl_easy_strerror(w));
        goto out;
    }
    size_t total = 0;
    double c0 = cpu_s(), w0 = now_s();
    for (long i = 0; i < streams; i++) {
        b.bytes = 0;
        b.keep = i == streams - 1;
        long st = 0;
        CURLcode cr = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
        if (cr != CURLE_OK || st != 200) {
            fprintf(stderr, "bench-local-proxy: stream %ld: %s, HTTP %ld\n", i,
                    curl_easy_strerror(cr), st);
            goto out;
        }
        total += b.bytes;
    }
    double read_cpu = cpu_s() - c0, read_wall = now_s() - w0;

    /* SHA-256 over one answer's bytes, as the relay hashes it (incrementally, per piece) */
    uint8_t rh[32], qh[32];
    sha_ctx *sc = sha256_new();
    double s0 = cpu_s();
    for (long i = 0; i < reps && sc; i++) {
        sha256_reset(sc);
        sha_update(sc, b.body.data, b.body.len);
        sha_final(sc, rh);
    }
    double sha_cpu = (cpu_s() - s0) / (double)reps;
    sha_free(sc);

    /* the signatures of the last answer (its trailers), checked as the relay checks them */
    char text[1024], esig[200], dsig[200], addr[64], dkey[80], want[130], model[256];
    if (!field(&b.fields, "X-Signature-Text", text, sizeof text) ||
        !field(&b.fields, "X-Signature-Ecdsa", esig, sizeof esig) ||
        !field(&b.fields, "X-Signing-Address", addr, sizeof addr)) {
        fprintf(stderr, "bench-local-proxy: the answer has no in-band signatures\n");
        goto out;
    }
    int have_ed = field(&b.fields, "X-Signature-Ed25519", dsig, sizeof dsig) &&
                  field(&b.fields, "X-Signing-Key-Ed25519", dkey, sizeof dkey);
    sha256(req.data, req.len, qh);
    hex_encode(want, qh, 32);
    want[64] = ':';
    hex_encode(want + 65, rh, 32);
    if (!vs_signed_text_ok(text, want, model, sizeof model) ||
        vs_verify("ecdsa", text, strlen(text), esig, addr, NULL) != VS_OK ||
        (have_ed && vs_verify("ed25519", text, strlen(text), dsig, dkey, NULL) != VS_OK)) {
        fprintf(stderr, "bench-local-proxy: the answer's signatures do not verify\n");
        goto out;
    }
    double e0 = now_s();
    for (long i = 0; i < reps; i++)
        if (vs_verify("ecdsa", text, strlen(text), esig, addr, NULL) != VS_OK)
            goto out;
    double ecdsa_us = (now_s() - e0) / (double)reps * 1e6, ed_us = 0;
    if (have_ed) {
        double d0 = now_s();
        for (long i = 0; i < reps; i++)
            if (vs_verify("ed25519", text, strlen(text), dsig, dkey, NULL) != VS_OK)
                goto out;
        ed_us = (now_s() - d0) / (double)reps * 1e6;
    }
    printf("{\"streams\":%ld,\"body_bytes\":%zu,\"read_cpu_s\":%.6f,\"read_wall_s\":%.6f,"
           "\"answer_bytes\":%zu,\"sha256_us_per_answer\":%.3f,\"ecdsa_recover_us\":%.3f,"
           "\"ed25519_verify_us\":%.3f,\"reps\":%ld}\n",
           streams, total, read_cpu, read_wall, b.body.len, sha_cpu * 1e6, ecdsa_us, ed_us, reps);
    rc = 0;
out:
    curl_easy_cleanup(h);
    curl_slist_free_all(l);
    buf_free(&req);
    buf_free(&b.body);
    buf_free(&b.fields);
    return rc;
}
