/* The local verifying proxy's attestation side (lproxy.h, docs/VERIFY.md "The local verifying
 * proxy"): one thread that verifies the remote at start, every recheck_s seconds and on
 * lp_att_kick, and publishes the pins (or "not verified" and why) for the relay's threads.
 *
 * One verification: for ecdsa and for ed25519, a report fetched with a fresh random nonce and
 * the TLS binding asked for (include_tls_fingerprint=true), checked with vr_check_report
 * (everything `report` checks), its lines merged under "ecdsa." / "ed25519."; then lines of
 * its own (lp.*): the transport, each report binds the TLS key the connection presented (the
 * same key for both), and both signing keys are present and well formed. It passes when no
 * line FAILed (WARNs allowed); simulated attestation is a FAIL unless --allow-simulated.
 *
 * Threads: the attestation thread is the only caller of the verifier (vr_fetch_report,
 * vr_check_report, vhttp_*, vx_fact and vout's facts: single-threaded code with globals). The
 * other threads only read and write the state S below, always under S.mu, and copy out. */
#include <curl/curl.h>
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/hex.h"
#include "core/json.h"
#include "tdx/pck.h"
#include "tdx/quote.h"
#include "verify/lp_att.h"
#include "verify/lproxy.h"
#include "verify/verify.h"
#include "verify/vout.h"

#define LP_BACKOFF_MIN_S 5L
#define LP_DEFAULT_RECHECK_S 300L
/* lp_att_pins: how long a request waits for a verification under way that withdrew the pins
 * (a kick's, or the first one) before it is refused */
#define LP_PINS_WAIT_MS 10000

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* to the thread: a kick, or stop */
    pthread_cond_t done; /* from the thread: a verification finished */
    pthread_t th;
    int running, stop;
    const lp_opts_t *o;
    /* published */
    int verified, in_progress, pending, last_ok;
    char why[512];
    lp_pins_t pins;
    uint64_t generation, started, finished;
    uint64_t kick_want; /* the round the last kick waits for (lp_att_pins waits for it too) */
    time_t checked_at, next_check;
    checklist_t cl;
    lp_meas_t m;
    char *policy_json; /* the policy file as the last verification read it */
    char policy_err[200];
    /* the options the documents name */
    char remote[512], listen[300], policy_path[512];
    long recheck_s;
    int allow_simulated, allow_http;
    char e2ee[40];
    /* answers */
    uint64_t n_verified, n_rejected;
    lp_answer_t answers[LP_ANSWERS]; /* a ring: answers[(head - 1 - i) % N] is the i-th newest */
    size_t head, n_answers;
} S = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .why = "verification in progress",
};

static int g_cond_ready;

/* The condition variables wait on CLOCK_MONOTONIC (the wall clock may jump). */
static void conds_init(void)
{
    if (g_cond_ready)
        return;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&S.wake, &ca);
    pthread_cond_init(&S.done, &ca);
    pthread_condattr_destroy(&ca);
    g_cond_ready = 1;
}

static struct timespec mono_after_ms(long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static void set_opts_locked(const lp_opts_t *o)
{
    S.o = o;
    copy_str(S.remote, sizeof S.remote, o->remote);
    snprintf(S.listen, sizeof S.listen, "%s:%d", o->listen_host ? o->listen_host : "127.0.0.1",
             o->listen_port);
    copy_str(S.policy_path, sizeof S.policy_path, o->vo ? o->vo->policy_file : NULL);
    S.recheck_s = o->recheck_s > 0 ? o->recheck_s : LP_DEFAULT_RECHECK_S;
    S.allow_simulated = o->allow_simulated;
    S.allow_http = o->allow_http;
    copy_str(S.e2ee, sizeof S.e2ee, o->e2ee);
}

/* ---- one verification (the attestation thread only) ---- */

static struct json_object *jget(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

static int is_simulated(struct json_object *rep, struct json_object *e)
{
    const char *mode = json_get_str(e, "attestation_mode", NULL);
    if (!mode)
        mode = json_get_str(rep, "attestation_mode", NULL);
    struct json_object *s = jget(e, "simulated") ? jget(e, "simulated") : jget(rep, "simulated");
    return (mode && strcmp(mode, "simulated") == 0) || (s && json_object_get_boolean(s));
}

static void hex48(char out[HEX_SIZE(48)], const uint8_t *p)
{
    if (p)
        hex_encode(out, p, 48);
    else
        out[0] = 0;
}

/* MRTD, RTMR0-3, MRCONFIGID and FMSPC of the entry's quote (already checked by vr_check_report;
 * here only read for display). */
static void read_quote(struct json_object *e, lp_meas_t *m)
{
    const char *qh = json_get_str(e, "intel_quote", NULL);
    if (!qh)
        qh = json_get_str(e, "quote", NULL);
    buf_t b = BUF_INIT;
    tdx_quote_t q;
    if (!qh || vx_decode_blob((const uint8_t *)qh, strlen(qh), &b) != 0 ||
        tdx_quote_parse(&q, (const uint8_t *)b.data, b.len) != TDX_OK) {
        buf_free(&b);
        return;
    }
    hex48(m->mrtd, q.body.mrtd);
    for (int i = 0; i < 4; i++)
        hex48(m->rtmr[i], q.body.rtmr[i]);
    hex48(m->mrconfigid, q.body.mrconfigid);
    tdx_pck_info_t pck;
    memset(&pck, 0, sizeof pck);
    if (q.pck_chain && tdx_pck_chain_parse(q.pck_chain, q.pck_chain_len, &pck, NULL, 0) == 0)
        hex_encode_upper(m->fmspc, pck.fmspc, 6);
    buf_free(&b);
}

/* GPU count, architecture and source from the entry's nvidia_payload. */
static void read_gpu(struct json_object *e, lp_meas_t *m)
{
    copy_str(m->gpu_source, sizeof m->gpu_source, json_get_str(e, "gpu_evidence", NULL));
    const char *p = json_get_str(e, "nvidia_payload", NULL);
    struct json_object *doc = p && *p ? json_tokener_parse(p) : NULL, *l;
    if (doc && json_object_object_get_ex(doc, "evidence_list", &l) &&
        json_object_is_type(l, json_type_array))
        m->gpu_count = (int)json_object_array_length(l);
    copy_str(m->gpu_arch, sizeof m->gpu_arch, json_get_str(doc, "arch", NULL));
    json_object_put(doc);
}

/* pass / fail / warn / skip: the worst status among the lines whose id starts with one of the
 * prefixes (after the "ecdsa." or "ed25519." one); "" when there is none. */
static void aggregate(const checklist_t *cl, const char *const *prefixes, char out[8])
{
    int seen[4] = {0};
    for (size_t i = 0; i < cl->n; i++) {
        const char *id = cl->items[i].id, *dot = strchr(id, '.');
        const char *rest = dot ? dot + 1 : id;
        for (const char *const *p = prefixes; *p; p++) {
            size_t n = strlen(*p);
            if (strncmp(rest, *p, n) == 0 && (rest[n] == 0 || rest[n] == '.'))
                seen[cl->items[i].status] = 1;
        }
    }
    const char *s = seen[CHK_FAIL]   ? "fail"
                    : seen[CHK_WARN] ? "warn"
                    : seen[CHK_PASS] ? "pass"
                    : seen[CHK_SKIP] ? "skip"
                                     : "";
    snprintf(out, 8, "%s", s);
}

static int is_hexn(const char *s, size_t n) { return s && strlen(s) == n && hex_is_hex(s, n); }

/* "sha256//<base64 of the raw 32-byte hash>" (CURLOPT_PINNEDPUBLICKEY) of a hex SPKI hash. */
static int curl_pin_of(const char *spki_hex, char out[80])
{
    uint8_t h[32];
    char b64[48];
    if (!is_hexn(spki_hex, 64) || hex_decode(h, sizeof h, spki_hex, 64) != 32)
        return -1;
    b64_encode(b64, h, 32);
    b64[b64_encoded_len(32)] = 0;
    snprintf(out, 80, "sha256//%s", b64);
    return 0;
}

static void first_failure(const checklist_t *cl, char *why, size_t cap)
{
    for (size_t i = 0; i < cl->n; i++) {
        const check_item_t *it = &cl->items[i];
        if (it->status != CHK_FAIL)
            continue;
        snprintf(why, cap, "check %.63s failed: %.150s (expected %.90s, found %.150s)", it->id,
                 it->what, *it->expected ? it->expected : "-", *it->found ? it->found : "-");
        return;
    }
    snprintf(why, cap, "no check ran");
}

static const char *const ALGOS[2] = {"ecdsa", "ed25519"};

static void verify_once(const lp_opts_t *o, lp_result_t *r)
{
    memset(r, 0, sizeof *r);
    vx_facts_free();
    checklist_t *cl = &r->cl;
    int https = strncmp(o->remote, "https://", 8) == 0;
    int http = strncmp(o->remote, "http://", 7) == 0;
    const char *twhat = "the remote is reached over HTTPS, so its TLS key can be pinned";
    if (https)
        check_add(cl, "lp.transport", CHK_PASS, twhat, "https", "https");
    else if (http && o->allow_http)
        check_add(cl, "lp.transport", CHK_WARN, twhat, "https",
                  "plain http (--allow-http): no TLS key is bound or pinned, anything on the "
                  "path can read and change the traffic");
    else
        check_add(cl, "lp.transport", CHK_FAIL, twhat, "https",
                  http ? "plain http (only with --allow-http)" : "not an http(s) URL");
    const char *pf = o->vo ? o->vo->policy_file : NULL;
    if (pf) {
        struct json_object *pj = json_object_from_file(pf);
        if (pj && json_object_is_type(pj, json_type_object))
            r->policy_json = strdup(json_object_to_json_string_ext(pj, JSON_C_TO_STRING_PLAIN));
        else
            snprintf(r->policy_err, sizeof r->policy_err, "%.160s: not a JSON object", pf);
        json_object_put(pj);
    }
    vhttp_pin_spki(o->remote, NULL); /* this round trusts no earlier key: it attests one */

    char spki[2][HEX_SIZE(32)] = {"", ""};
    int sim = 0;
    for (int i = 0; i < 2 && (https || http); i++) {
        vopts_t v;
        if (o->vo)
            v = *o->vo;
        else
            memset(&v, 0, sizeof v), v.expect_gpus = v.expect_nvswitches = -1;
        v.target = o->remote;
        v.have_nonce = 0; /* a fresh random nonce for every fetch */
        v.algo = ALGOS[i];
        v.signing_address = NULL;
        v.save_report = NULL;
        v.tls_spki = NULL;
        v.bind_tls = https;
        v.allow_simulated = o->allow_simulated;
        if (o->token)
            v.token = o->token;
        if (o->timeout_s > 0)
            v.timeout_s = o->timeout_s;
        if (v.timeout_s <= 0)
            v.timeout_s = VX_DEFAULT_TIMEOUT;
        vctx_t cx = {CHECKLIST_INIT, 0, ""};
        struct json_object *rep = NULL;
        if (vr_fetch_report(&cx, &v, o->remote, ALGOS[i], NULL, &rep, spki[i]) == 0)
            vr_check_report(&cx, &v, rep, NULL, spki[i]);
        char pfx[16];
        snprintf(pfx, sizeof pfx, "%s.", ALGOS[i]);
        vx_merge_prefixed(cl, &cx.cl, pfx);
        check_free(&cx.cl);
        struct json_object *e = rep ? vr_report_entry(rep, NULL) : NULL;
        const char *fp = json_get_str(e, "tls_cert_fingerprint", NULL);
        const char *addr = json_get_str(e, "signing_address", NULL);
        const char *algo = json_get_str(e, "signing_algo", NULL);
        char id[64];
        snprintf(id, sizeof id, "lp.tls.%s", ALGOS[i]);
        const char *what = "the report binds the TLS key this connection presented (the same key "
                           "for both reports)";
        if (!e)
            check_add(cl, id, CHK_FAIL, what, "a checked report", "no report");
        else if (!https)
            check_add(cl, id, CHK_WARN, what, "tls_cert_fingerprint",
                      "plain http: no TLS key, nothing pinned");
        else if (!is_hexn(fp, 64))
            check_add(cl, id, CHK_FAIL, what, spki[i][0] ? spki[i] : "the connection's key",
                      "the report binds no TLS key (no tls_cert_fingerprint)");
        else if (!spki[i][0])
            check_add(cl, id, CHK_FAIL, what, fp, "no certificate key seen on the connection");
        else if (strcasecmp(fp, spki[i]) != 0)
            check_addf(cl, id, CHK_FAIL, what, fp, "%s (another key)", spki[i]);
        else if (i == 1 && strcasecmp(spki[1], spki[0]) != 0)
            check_addf(cl, id, CHK_FAIL, what, spki[0], "%s (not the key of the ECDSA report)",
                       spki[1]);
        else
            check_add(cl, id, CHK_PASS, what, fp, spki[i]);
        snprintf(id, sizeof id, "lp.key.%s", ALGOS[i]);
        if (i == 0) {
            const char *pub = json_get_str(e, "signing_public_key", NULL);
            int ok = e && (!algo || strcmp(algo, "ecdsa") == 0) && addr && addr[0] == '0' &&
                     addr[1] == 'x' && is_hexn(addr + 2, 40);
            check_add(cl, id, ok ? CHK_PASS : CHK_FAIL,
                      "the ECDSA signing address is present (answers' ECDSA signatures must "
                      "recover to it)",
                      "0x + 40 hex", addr ? addr : "none");
            if (ok) {
                copy_str(r->m.ecdsa_address, sizeof r->m.ecdsa_address, addr);
                if (is_hexn(pub, 128))
                    snprintf(r->m.ecdsa_public_key, sizeof r->m.ecdsa_public_key, "04%s", pub);
                else if (is_hexn(pub, 130) && strncmp(pub, "04", 2) == 0)
                    copy_str(r->m.ecdsa_public_key, sizeof r->m.ecdsa_public_key, pub);
            }
            copy_str(r->m.tls_bound, sizeof r->m.tls_bound, fp);
            read_quote(e, &r->m);
            read_gpu(e, &r->m);
            const char *mode = json_get_str(e, "attestation_mode", NULL);
            copy_str(r->m.attestation_mode, sizeof r->m.attestation_mode,
                     mode ? mode : json_get_str(rep, "attestation_mode", NULL));
        } else {
            int ok = e && (!algo || strcmp(algo, "ed25519") == 0) && is_hexn(addr, 64);
            check_add(cl, id, ok ? CHK_PASS : CHK_FAIL,
                      "the Ed25519 signing key is present (answers' Ed25519 signatures must "
                      "verify under it)",
                      "64 hex", addr ? addr : "none");
            if (ok)
                copy_str(r->m.ed25519_key, sizeof r->m.ed25519_key, addr);
        }
        if (e && is_simulated(rep, e))
            sim = 1;
        json_object_put(rep);
    }
    copy_str(r->m.tls_spki, sizeof r->m.tls_spki, spki[0]);
    copy_str(r->m.tcb_status, sizeof r->m.tcb_status, vx_fact_get(VF_TCB));
    copy_str(r->m.compose_hash, sizeof r->m.compose_hash, vx_fact_get(VF_COMPOSE));
    copy_str(r->m.os_image, sizeof r->m.os_image, vx_fact_get(VF_OS_IMAGE));
    copy_str(r->m.model, sizeof r->m.model, vx_fact_get(VF_MODEL));
    copy_str(r->m.tls_note, sizeof r->m.tls_note, vx_fact_get(VF_TLS));
    static const char *const gpu_pfx[] = {"gpu", "nvswitch", NULL}, *const nras_pfx[] = {"nras",
                                                                                         NULL};
    aggregate(cl, gpu_pfx, r->m.gpu_local);
    aggregate(cl, nras_pfx, r->m.gpu_nras);
    vx_facts_free();

    r->ok = cl->n > 0 && check_count(cl, CHK_FAIL) == 0;
    if (!r->ok) {
        first_failure(cl, r->why, sizeof r->why);
        return;
    }
    lp_pins_t *p = &r->pins;
    if (https) {
        copy_str(p->tls_spki, sizeof p->tls_spki, spki[0]);
        for (char *c = p->tls_spki; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'F' ? *c + 32 : *c);
        if (curl_pin_of(p->tls_spki, p->curl_pin) != 0) { /* cannot happen: lp.tls passed */
            r->ok = 0;
            snprintf(r->why, sizeof r->why, "check lp.tls failed: the TLS key is not 64 hex");
            return;
        }
    }
    copy_str(p->ecdsa_address, sizeof p->ecdsa_address, r->m.ecdsa_address);
    copy_str(p->ecdsa_public_key, sizeof p->ecdsa_public_key, r->m.ecdsa_public_key);
    copy_str(p->ed25519_key, sizeof p->ed25519_key, r->m.ed25519_key);
    p->simulated = sim;
}

/* ---- publishing (under S.mu) ---- */

static void publish_locked(lp_result_t *r)
{
    time_t now = time(NULL);
    check_free(&S.cl);
    S.cl = r->cl;
    memset(&r->cl, 0, sizeof r->cl);
    S.m = r->m;
    free(S.policy_json);
    S.policy_json = r->policy_json;
    r->policy_json = NULL;
    copy_str(S.policy_err, sizeof S.policy_err, r->policy_err);
    S.checked_at = now;
    S.last_ok = r->ok;
    if (r->ok) {
        S.pins = r->pins;
        S.pins.generation = ++S.generation;
        S.pins.verified_at = now;
        S.verified = 1;
        S.why[0] = 0;
    } else {
        memset(&S.pins, 0, sizeof S.pins);
        S.verified = 0;
        copy_str(S.why, sizeof S.why, r->why);
    }
}

void lp_att_test_publish(const lp_opts_t *o, lp_result_t *r)
{
    pthread_mutex_lock(&S.mu);
    if (o)
        set_opts_locked(o);
    publish_locked(r);
    S.finished++;
    S.next_check = S.checked_at + (r->ok ? S.recheck_s : LP_BACKOFF_MIN_S);
    pthread_mutex_unlock(&S.mu);
}

void lp_att_test_reset(void)
{
    pthread_mutex_lock(&S.mu);
    check_free(&S.cl);
    S.verified = S.in_progress = S.pending = S.last_ok = 0;
    copy_str(S.why, sizeof S.why, "verification in progress");
    memset(&S.pins, 0, sizeof S.pins);
    memset(&S.m, 0, sizeof S.m);
    free(S.policy_json);
    S.policy_json = NULL;
    S.policy_err[0] = 0;
    S.generation = S.started = S.finished = S.kick_want = 0;
    S.checked_at = S.next_check = 0;
    S.n_verified = S.n_rejected = 0;
    S.head = S.n_answers = 0;
    memset(S.answers, 0, sizeof S.answers);
    pthread_mutex_unlock(&S.mu);
}

/* ---- the thread ---- */

static void *att_main(void *arg)
{
    (void)arg;
    long backoff = LP_BACKOFF_MIN_S;
    pthread_mutex_lock(&S.mu);
    S.pending = 1; /* the first verification runs at once */
    while (!S.stop) {
        time_t now = time(NULL);
        if (!S.pending && now < S.next_check) {
            long ms = (long)(S.next_check - now) * 1000L;
            struct timespec ts = mono_after_ms(ms);
            pthread_cond_timedwait(&S.wake, &S.mu, &ts);
            continue;
        }
        S.pending = 0;
        S.in_progress = 1;
        S.started++;
        const lp_opts_t *o = S.o;
        pthread_mutex_unlock(&S.mu);

        lp_result_t r;
        verify_once(o, &r);

        pthread_mutex_lock(&S.mu);
        publish_locked(&r);
        S.in_progress = 0;
        S.finished++;
        if (r.ok) {
            backoff = LP_BACKOFF_MIN_S;
            S.next_check = S.checked_at + S.recheck_s;
        } else {
            S.next_check = S.checked_at + backoff;
            backoff = backoff * 2 > S.recheck_s ? S.recheck_s : backoff * 2;
            if (backoff < LP_BACKOFF_MIN_S)
                backoff = LP_BACKOFF_MIN_S;
        }
        pthread_cond_broadcast(&S.done);
        if (r.ok)
            fprintf(stderr, "vllm-proxy-verify proxy: %s verified (TLS key %s, generation %llu)\n",
                    S.remote, S.pins.tls_spki[0] ? S.pins.tls_spki : "none: plain http",
                    (unsigned long long)S.pins.generation);
        else
            fprintf(stderr, "vllm-proxy-verify proxy: %s NOT verified: %s (next try in %lds)\n",
                    S.remote, S.why, (long)(S.next_check - S.checked_at));
    }
    pthread_mutex_unlock(&S.mu);
    return NULL;
}

int lp_att_start(const lp_opts_t *o)
{
    if (!o || !o->remote) {
        fprintf(stderr, "vllm-proxy-verify proxy: no remote URL\n");
        return -1;
    }
    /* libcurl's global state is set up here, before any other thread uses curl */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_mutex_lock(&S.mu);
    conds_init();
    if (S.running) {
        pthread_mutex_unlock(&S.mu);
        fprintf(stderr, "vllm-proxy-verify proxy: attestation thread already running\n");
        return -1;
    }
    set_opts_locked(o);
    S.stop = 0;
    S.verified = 0;
    S.in_progress = 1; /* until the first verification is in */
    copy_str(S.why, sizeof S.why, "verification in progress");
    int rc = pthread_create(&S.th, NULL, att_main, NULL);
    if (rc != 0) {
        S.in_progress = 0;
        pthread_mutex_unlock(&S.mu);
        fprintf(stderr, "vllm-proxy-verify proxy: pthread_create: %s\n", strerror(rc));
        return -1;
    }
    S.running = 1;
    pthread_mutex_unlock(&S.mu);
    return 0;
}

void lp_att_stop(void)
{
    pthread_mutex_lock(&S.mu);
    if (!S.running) {
        pthread_mutex_unlock(&S.mu);
        return;
    }
    S.stop = 1;
    S.verified = 0;
    memset(&S.pins, 0, sizeof S.pins);
    copy_str(S.why, sizeof S.why, "the proxy is stopping");
    pthread_cond_broadcast(&S.wake);
    pthread_cond_broadcast(&S.done);
    pthread_mutex_unlock(&S.mu);
    /* waits for a verification under way (at most its HTTP timeouts) */
    pthread_join(S.th, NULL);
    pthread_mutex_lock(&S.mu);
    S.running = 0;
    pthread_mutex_unlock(&S.mu);
}

static int answer_locked(lp_pins_t *out, char *why, size_t cap)
{
    if (S.verified && !S.stop) {
        if (out)
            *out = S.pins;
        if (why && cap)
            why[0] = 0;
        return 1;
    }
    if (out)
        memset(out, 0, sizeof *out);
    if (why && cap)
        snprintf(why, cap, "%s", S.why[0] ? S.why : "not verified");
    return 0;
}

/* Under S.mu: waits (up to ms) until verification round `want` has finished or stop. */
static void wait_round_locked(uint64_t want, int ms)
{
    struct timespec ts = mono_after_ms(ms);
    while (S.finished < want && !S.stop)
        if (pthread_cond_timedwait(&S.done, &S.mu, &ts) == ETIMEDOUT)
            break;
}

int lp_att_pins(lp_pins_t *out, char *why, size_t cap)
{
    pthread_mutex_lock(&S.mu);
    /* A verification under way that withdrew the pins (a kick's, or the first one): wait for
     * its result, as the kicking request does, instead of refusing every request that comes
     * meanwhile. A finished one that failed (or no result within the wait) answers why. */
    if (!S.verified && S.running && !S.stop) {
        uint64_t want = S.kick_want > S.finished ? S.kick_want : S.finished == 0 ? 1 : 0;
        if (want)
            wait_round_locked(want, LP_PINS_WAIT_MS);
    }
    int rc = answer_locked(out, why, cap);
    pthread_mutex_unlock(&S.mu);
    return rc;
}

int lp_att_kick(const char *reason, int wait_ms, lp_pins_t *out, char *why, size_t cap)
{
    pthread_mutex_lock(&S.mu);
    if (!S.running || S.stop) {
        int rc = answer_locked(out, why, cap);
        pthread_mutex_unlock(&S.mu);
        return rc;
    }
    /* Fail closed at once: nothing is relayed on the old pins from now on. The round to wait
     * for is the next one to start (one already running may have seen the old key); kicks
     * that arrive before it starts share it. */
    S.verified = 0;
    memset(&S.pins, 0, sizeof S.pins);
    snprintf(S.why, sizeof S.why, "verification in progress (%.400s)",
             reason && *reason ? reason : "re-verification asked");
    uint64_t want = S.started + 1;
    if (want > S.kick_want)
        S.kick_want = want;
    S.pending = 1;
    pthread_cond_signal(&S.wake);
    if (wait_ms > 0)
        wait_round_locked(want, wait_ms);
    int rc = answer_locked(out, why, cap);
    pthread_mutex_unlock(&S.mu);
    return rc;
}

void lp_att_answer(const char *route, const char *id, int stream, const char *check)
{
    pthread_mutex_lock(&S.mu);
    if (check)
        S.n_rejected++;
    else
        S.n_verified++;
    lp_answer_t *a = &S.answers[S.head];
    memset(a, 0, sizeof *a);
    a->at = time(NULL);
    copy_str(a->route, sizeof a->route, route);
    copy_str(a->id, sizeof a->id, id);
    a->stream = stream != 0;
    copy_str(a->check, sizeof a->check, check);
    S.head = (S.head + 1) % LP_ANSWERS;
    if (S.n_answers < LP_ANSWERS)
        S.n_answers++;
    pthread_mutex_unlock(&S.mu);
}

/* ---- the snapshot for the status documents ---- */

void lp_att_snapshot(lp_snap_t *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_lock(&S.mu);
    copy_str(s->remote, sizeof s->remote, S.remote);
    copy_str(s->listen, sizeof s->listen, S.listen);
    copy_str(s->policy_path, sizeof s->policy_path, S.policy_path);
    s->recheck_s = S.recheck_s;
    s->allow_simulated = S.allow_simulated;
    s->allow_http = S.allow_http;
    copy_str(s->e2ee, sizeof s->e2ee, S.e2ee);
    s->verified = answer_locked(&s->pins, s->why, sizeof s->why);
    s->in_progress = S.in_progress;
    s->checked_at = S.checked_at;
    s->next_check = S.next_check;
    s->rounds = S.finished;
    s->last_ok = S.last_ok;
    for (size_t i = 0; i < S.cl.n; i++) {
        const check_item_t *it = &S.cl.items[i];
        check_add(&s->cl, it->id, it->status, it->what, it->expected, it->found);
    }
    s->m = S.m;
    s->n_verified = S.n_verified;
    s->n_rejected = S.n_rejected;
    for (size_t i = 0; i < S.n_answers; i++)
        s->answers[i] = S.answers[(S.head + LP_ANSWERS - 1 - i) % LP_ANSWERS];
    s->n_answers = S.n_answers;
    if (S.policy_json)
        s->policy_json = strdup(S.policy_json);
    copy_str(s->policy_err, sizeof s->policy_err, S.policy_err);
    pthread_mutex_unlock(&S.mu);
}

void lp_snap_free(lp_snap_t *s)
{
    check_free(&s->cl);
    free(s->policy_json);
    s->policy_json = NULL;
}
