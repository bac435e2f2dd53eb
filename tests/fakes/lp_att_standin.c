/* A STAND-IN for the local verifying proxy's attestation side (src/verify/lp_att.c and
 * lp_status.c, written on another branch): linked into vllm-proxy-verify only while
 * src/verify/lp_att.c does not exist (Makefile, LP_ATT_STANDIN). It verifies the remote with
 * vr_fetch_report + vr_check_report (both algorithms), pins the TLS key and signing keys when
 * no line failed, re-verifies every --recheck seconds and on lp_att_kick, and keeps counters.
 * The real side adds the status documents' detail; this file goes when it lands. */
#include <json-c/json.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "verify/lproxy.h"

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static pthread_t g_thr;
static int g_started, g_stop, g_kick, g_ok, g_running;
static lp_pins_t g_pins;
static char g_why[512] = "verification in progress";
static const lp_opts_t *g_o;
static unsigned long g_verified, g_rejected;

static void first_fail(vctx_t *cx, char *why, size_t cap)
{
    for (size_t i = 0; i < cx->cl.n; i++)
        if (cx->cl.items[i].status == CHK_FAIL) {
            snprintf(why, cap, "%s: %s", cx->cl.items[i].id, cx->cl.items[i].found);
            return;
        }
    snprintf(why, cap, "%s", cx->errmsg[0] ? cx->errmsg : "no check ran");
}

/* One report for algo checked; its entry's signing_address into addr. 0 or -1 (why). */
static int verify_algo(const char *algo, char *addr, size_t acap, char spki[HEX_SIZE(32)],
                       int *simulated, char *why, size_t cap)
{
    vopts_t vo = *g_o->vo;
    vo.have_nonce = 0;
    vo.allow_simulated = g_o->allow_simulated;
    if (strncmp(g_o->remote, "https:", 6) == 0)
        vo.report_version = 3; /* binds the TLS certificate (the remote has TLS_CERT_PATH) */
    vctx_t cx = {CHECKLIST_INIT, 0, ""};
    struct json_object *rep = NULL;
    int rc = -1;
    if (vr_fetch_report(&cx, &vo, g_o->remote, algo, NULL, &rep, spki) == 0) {
        vr_check_report(&cx, &vo, rep, NULL, spki);
        struct json_object *e = vr_report_entry(rep, NULL);
        const char *a = json_get_str(e, "signing_address", NULL);
        const char *mode = json_get_str(e, "attestation_mode", NULL);
        if (!mode)
            mode = json_get_str(rep, "attestation_mode", NULL);
        *simulated = mode && strcmp(mode, "simulated") == 0;
        if (!cx.error && check_count(&cx.cl, CHK_FAIL) == 0 && a) {
            snprintf(addr, acap, "%s", a);
            rc = 0;
        }
    }
    if (rc != 0)
        first_fail(&cx, why, cap);
    json_object_put(rep);
    check_free(&cx.cl);
    return rc;
}

static void verify_once(void)
{
    lp_pins_t p;
    memset(&p, 0, sizeof p);
    char why[512] = "", spki2[HEX_SIZE(32)] = "";
    int sim2 = 0;
    int ok = verify_algo("ecdsa", p.ecdsa_address, sizeof p.ecdsa_address, p.tls_spki,
                         &p.simulated, why, sizeof why) == 0 &&
             verify_algo("ed25519", p.ed25519_key, sizeof p.ed25519_key, spki2, &sim2, why,
                         sizeof why) == 0;
    if (ok && strcmp(p.tls_spki, spki2) != 0) {
        ok = 0;
        snprintf(why, sizeof why, "tls: the two reports came over different TLS keys");
    }
    if (ok && p.tls_spki[0]) {
        uint8_t h[32];
        unsigned char b64[64];
        if (hex_decode(h, sizeof h, p.tls_spki, 64) == 32) {
            int n = EVP_EncodeBlock(b64, h, 32);
            snprintf(p.curl_pin, sizeof p.curl_pin, "sha256//%.*s", n, (const char *)b64);
        }
    }
    if (ok && !p.tls_spki[0] && strncmp(g_o->remote, "https:", 6) == 0) {
        ok = 0;
        snprintf(why, sizeof why, "tls: no TLS key seen");
    }
    pthread_mutex_lock(&g_mu);
    if (ok) {
        p.generation = g_pins.generation + 1;
        p.verified_at = time(NULL);
        g_pins = p;
        g_ok = 1;
    } else {
        g_ok = 0;
        snprintf(g_why, sizeof g_why, "%s", why);
    }
    pthread_mutex_unlock(&g_mu);
    fprintf(stderr, "lp-att(stand-in): %s%s\n", ok ? "verified" : "NOT verified: ", ok ? "" : why);
}

static void *att_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_mu);
    while (!g_stop) {
        g_running = 1;
        g_kick = 0;
        pthread_mutex_unlock(&g_mu);
        verify_once();
        pthread_mutex_lock(&g_mu);
        g_running = 0;
        pthread_cond_broadcast(&g_cv);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += g_o->recheck_s > 0 ? g_o->recheck_s : 300;
        while (!g_stop && !g_kick)
            if (pthread_cond_timedwait(&g_cv, &g_mu, &ts) != 0)
                break;
    }
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

int lp_att_start(const lp_opts_t *o)
{
    g_o = o;
    if (pthread_create(&g_thr, NULL, att_main, NULL) != 0) {
        fprintf(stderr, "lp-att: cannot start a thread\n");
        return -1;
    }
    g_started = 1;
    return 0;
}

void lp_att_stop(void)
{
    if (!g_started)
        return;
    pthread_mutex_lock(&g_mu);
    g_stop = 1;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    pthread_join(g_thr, NULL);
    g_started = 0;
}

int lp_att_pins(lp_pins_t *out, char *why, size_t cap)
{
    pthread_mutex_lock(&g_mu);
    int ok = g_ok;
    if (ok)
        *out = g_pins;
    else
        snprintf(why, cap, "%s", g_why);
    pthread_mutex_unlock(&g_mu);
    return ok;
}

int lp_att_kick(const char *reason, int wait_ms, lp_pins_t *out, char *why, size_t cap)
{
    pthread_mutex_lock(&g_mu);
    g_ok = 0;
    snprintf(g_why, sizeof g_why, "%s", reason);
    g_kick = 1;
    pthread_cond_broadcast(&g_cv);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += wait_ms / 1000;
    ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L)
        ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    while ((g_kick || g_running) && !g_stop)
        if (pthread_cond_timedwait(&g_cv, &g_mu, &ts) != 0)
            break;
    pthread_mutex_unlock(&g_mu);
    return lp_att_pins(out, why, cap);
}

void lp_att_answer(const char *route, const char *id, int stream, const char *check)
{
    (void)route, (void)id, (void)stream;
    pthread_mutex_lock(&g_mu);
    if (check)
        g_rejected++;
    else
        g_verified++;
    pthread_mutex_unlock(&g_mu);
}

void lp_status_json(buf_t *out)
{
    pthread_mutex_lock(&g_mu);
    buf_printf(out, "{\"stand_in\":true,\"verified\":%s,\"answers\":{\"verified\":%lu,"
                    "\"rejected\":%lu}",
               g_ok ? "true" : "false", g_verified, g_rejected);
    if (!g_ok) {
        buf_puts(out, ",\"why\":");
        buf_json_str(out, g_why, strlen(g_why));
    } else {
        buf_printf(out, ",\"generation\":%llu,\"tls_spki\":\"%s\",\"ecdsa_address\":\"%s\","
                        "\"ed25519_key\":\"%s\"",
                   (unsigned long long)g_pins.generation, g_pins.tls_spki, g_pins.ecdsa_address,
                   g_pins.ed25519_key);
    }
    buf_puts(out, "}\n");
    pthread_mutex_unlock(&g_mu);
}

void lp_status_html(buf_t *out)
{
    buf_puts(out, "<!doctype html><html><head><meta charset=\"utf-8\"><title>vllm-proxy-verify "
                  "proxy</title></head><body><h1>Local verifying proxy</h1><pre>");
    buf_t j = BUF_INIT;
    lp_status_json(&j);
    for (size_t i = 0; i < j.len; i++) {
        char c = j.data[i];
        if (c == '<')
            buf_puts(out, "&lt;");
        else if (c == '&')
            buf_puts(out, "&amp;");
        else if (c == '>')
            buf_puts(out, "&gt;");
        else
            buf_append(out, &c, 1);
    }
    buf_free(&j);
    buf_puts(out, "</pre></body></html>\n");
}
