/* Quote providers (dstack, tappd, configfs-tsm, simulated) and the attestation service: GPU
 * evidence in parallel with the quote, the report cache and its single-flight. */
#include "attest/provider.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attest/tsm.h"
#include "core/hex.h"
#include "core/log.h"
#include "dstack/agent.h"
#include "tdx/quote.h"

struct attest_provider {
    attest_kind_t kind;
    dstack_endpoint_t ep; /* dstack, tappd */
    tsm_t tsm;            /* tsm */
    attest_sim_t *sim;    /* simulated */
    char where[400];
};

/* ---- provider ---- */

static int open_agent(attest_provider_t *p, int tappd, const char *endpoint, unsigned timeout_ms,
                      char *err, size_t errlen)
{
    char e[400];
    const char *s = endpoint && *endpoint ? endpoint : dstack_probe_socket(tappd);
    if (!s) {
        snprintf(err, errlen, "no %s: none of its sockets exists (%s) and %s is unset",
                 tappd ? "tappd agent" : "dstack guest agent",
                 tappd ? "/var/run/tappd.sock, /run/tappd.sock, ..." : "/var/run/dstack.sock, /run/dstack.sock, ...",
                 tappd ? "TAPPD_SIMULATOR_ENDPOINT" : "DSTACK_SIMULATOR_ENDPOINT");
        return -1;
    }
    if (dstack_endpoint_parse(&p->ep, s, tappd, timeout_ms, e, sizeof e) != 0) {
        snprintf(err, errlen, "%s", e);
        return -1;
    }
    p->kind = tappd ? ATTEST_TAPPD : ATTEST_DSTACK;
    snprintf(p->where, sizeof p->where, "%s", p->ep.display);
    buf_t info = BUF_INIT; /* start-up probe: the agent must answer */
    int rc = dstack_info(&p->ep, &info, e, sizeof e);
    buf_free(&info);
    if (rc != 0)
        snprintf(err, errlen, "%s at %s does not work: %s", tappd ? "tappd" : "dstack guest agent", s, e);
    return rc;
}

static int open_tsm(attest_provider_t *p, const char *root, char *err, size_t errlen)
{
    uint8_t rd[64] = {0};
    buf_t q = BUF_INIT;
    if (tsm_open(&p->tsm, root, err, errlen) != 0)
        return -1;
    p->kind = ATTEST_TSM;
    snprintf(p->where, sizeof p->where, "%s", p->tsm.dir);
    int rc = tsm_quote(&p->tsm, rd, &q, err, errlen); /* start-up probe */
    buf_free(&q);
    return rc;
}

attest_provider_t *attest_provider_open(const attest_provider_config_t *c, char *err, size_t errlen)
{
    attest_provider_t *p = calloc(1, sizeof *p);
    const char *mode = c->mode && *c->mode ? c->mode : "auto";
    const char *root = c->tsm_root && *c->tsm_root ? c->tsm_root : TSM_DEFAULT_ROOT;
    int rc = -1;
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!strcmp(mode, "simulated")) {
        p->kind = ATTEST_SIMULATED;
        snprintf(p->where, sizeof p->where, "built-in SIMULATED provider");
        rc = (p->sim = attest_sim_new()) ? 0 : -1;
        if (rc)
            snprintf(err, errlen, "cannot initialise the simulated attestation provider");
    } else if (!strcmp(mode, "dstack")) {
        rc = open_agent(p, 0, c->dstack_endpoint, c->timeout_ms, err, errlen);
    } else if (!strcmp(mode, "tappd")) {
        rc = open_agent(p, 1, c->tappd_endpoint, c->timeout_ms, err, errlen);
    } else if (!strcmp(mode, "tsm")) {
        rc = open_tsm(p, root, err, errlen);
    } else if (!strcmp(mode, "auto")) {
        /* dstack, then tappd, then configfs-tsm; never simulated. */
        if ((c->dstack_endpoint && *c->dstack_endpoint) || dstack_probe_socket(0))
            rc = open_agent(p, 0, c->dstack_endpoint, c->timeout_ms, err, errlen);
        else if ((c->tappd_endpoint && *c->tappd_endpoint) || dstack_probe_socket(1))
            rc = open_agent(p, 1, c->tappd_endpoint, c->timeout_ms, err, errlen);
        else if (tsm_present(root))
            rc = open_tsm(p, root, err, errlen);
        else
            snprintf(err, errlen,
                     "ATTESTATION=auto found no TEE: no dstack guest agent (/var/run/dstack.sock, "
                     "DSTACK_SIMULATOR_ENDPOINT), no tappd agent (/var/run/tappd.sock, "
                     "TAPPD_SIMULATOR_ENDPOINT), no configfs-tsm (%s). Refusing to start; set "
                     "ATTESTATION=simulated (or DEV=1) for development and tests", root);
    } else {
        snprintf(err, errlen, "unknown attestation mode '%s'", mode);
    }
    if (rc != 0) {
        attest_provider_free(p);
        return NULL;
    }
    return p;
}

void attest_provider_free(attest_provider_t *p)
{
    if (!p)
        return;
    if (p->kind == ATTEST_TSM)
        tsm_close(&p->tsm);
    attest_sim_free(p->sim);
    free(p);
}

attest_kind_t attest_provider_kind(const attest_provider_t *p) { return p->kind; }

const char *attest_provider_mode(const attest_provider_t *p)
{
    static const char *names[] = {"simulated", "dstack", "tappd", "tsm"};
    return names[p->kind];
}

const char *attest_provider_where(const attest_provider_t *p) { return p->where; }

static int check_report_data(const attest_parts_t *parts, const uint8_t rd[64], char *err, size_t errlen)
{
    tdx_quote_t q;
    int e = tdx_quote_parse(&q, (const uint8_t *)parts->quote.data, parts->quote.len);
    if (e != 0) {
        snprintf(err, errlen, "the %s quote does not parse: %s", parts->mode, tdx_strerror(e));
        return -1;
    }
    if (memcmp(q.body.report_data, rd, 64) != 0) {
        snprintf(err, errlen, "the %s quote does not carry the requested report_data", parts->mode);
        return -1;
    }
    return 0;
}

int attest_provider_collect(attest_provider_t *p, const uint8_t report_data[64], attest_parts_t *parts,
                            char *err, size_t errlen)
{
    parts->mode = attest_provider_mode(p);
    switch (p->kind) {
    case ATTEST_SIMULATED:
        if (attest_sim_parts(p->sim, report_data, parts) != 0) {
            snprintf(err, errlen, "simulated quote failed");
            return -1;
        }
        return check_report_data(parts, report_data, err, errlen); /* as for every provider */
    case ATTEST_TSM:
        if (tsm_quote(&p->tsm, report_data, &parts->quote, err, errlen) != 0)
            return -1;
        return check_report_data(parts, report_data, err, errlen);
    case ATTEST_DSTACK:
    case ATTEST_TAPPD: {
        dstack_quote_t q = {0};
        if (dstack_get_quote(&p->ep, report_data, &q, err, errlen) != 0)
            return -1;
        /* hand the buffers over */
        parts->quote = q.quote;
        parts->event_log = q.event_log;
        parts->vm_config = q.vm_config;
        snprintf(parts->tappd_hash_algorithm, sizeof parts->tappd_hash_algorithm, "%s", q.hash_algorithm);
        snprintf(parts->tappd_prefix, sizeof parts->tappd_prefix, "%s", q.prefix);
        if (check_report_data(parts, report_data, err, errlen) != 0)
            return -1;
        return dstack_info(&p->ep, &parts->info, err, errlen);
    }
    }
    return -1;
}

int attest_provider_derive_keys(attest_provider_t *p, const char *model_name, uint8_t ecdsa_sk[32],
                                uint8_t ed25519_seed[32], char *err, size_t errlen)
{
    if (p->kind != ATTEST_DSTACK) {
        snprintf(err, errlen, "the %s provider has no KMS key derivation", attest_provider_mode(p));
        return -1;
    }
    char path[400];
    snprintf(path, sizeof path, "%s/ecdsa-signing-key", model_name);
    if (dstack_get_key(&p->ep, path, "secp256k1", ecdsa_sk, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/ed25519-signing-key", model_name);
    if (dstack_get_key(&p->ep, path, "ed25519", ed25519_seed, err, errlen) != 0) {
        sodium_memzero(ecdsa_sk, 32);
        return -1;
    }
    return 0;
}

/* ---- service ---- */

typedef struct slot {
    buf_t body;         /* pre-serialised report */
    double made_at;     /* monotonic seconds */
    int collecting;     /* a thread is collecting for this slot right now */
    int refresh_queued; /* a refresh job was handed to a caller */
    unsigned gen;       /* bumped when a collection ends */
    char err[256];      /* why the last collection failed */
} slot_t;

struct attest_service {
    attest_provider_t *p;
    const signer_t *signer;
    unsigned ttl;
    int has_tls;
    uint8_t spki[32];
    char spki_hex[65];
    attest_gpu_fn gpu;
    void *gpu_ctx;
    const char *gpu_label;
    pthread_mutex_t lock;
    pthread_cond_t done;
    slot_t slots[2][2]; /* [algo][tls] */
};

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

attest_service_t *attest_service_new(attest_provider_t *p, const signer_t *signer,
                                     const attest_service_config_t *c)
{
    attest_service_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->p = p;
    s->signer = signer;
    s->ttl = c->cache_ttl_s;
    if (c->tls_spki_sha256) {
        s->has_tls = 1;
        memcpy(s->spki, c->tls_spki_sha256, 32);
        hex_encode(s->spki_hex, s->spki, 32);
    }
    s->gpu = c->gpu;
    s->gpu_ctx = c->gpu_ctx;
    s->gpu_label = c->gpu_label;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->done, NULL);
    return s;
}

void attest_service_free(attest_service_t *s)
{
    if (!s)
        return;
    for (int a = 0; a < 2; a++)
        for (int t = 0; t < 2; t++)
            buf_free(&s->slots[a][t].body);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->done);
    attest_provider_free(s->p);
    free(s);
}

attest_provider_t *attest_service_provider(attest_service_t *s) { return s->p; }
int attest_service_has_tls(const attest_service_t *s) { return s->has_tls; }

static void identity(const signer_t *sg, int algo, attest_identity_t *id)
{
    if (algo == 0) {
        id->signing_address = signer_ecdsa_address(sg);
        id->signing_algo = "ecdsa";
        id->id_bytes = signer_ecdsa_address_bytes(sg);
        id->id_len = 20;
        id->signing_public_key = signer_ecdsa_pubkey_hex(sg);
    } else {
        id->signing_address = signer_ed25519_pubkey_hex(sg);
        id->signing_algo = "ed25519";
        id->id_bytes = signer_ed25519_pubkey(sg);
        id->id_len = 32;
        id->signing_public_key = signer_ed25519_pubkey_hex(sg);
    }
}

typedef struct gpu_job {
    attest_service_t *s;
    const uint8_t *nonce;
    buf_t payload;
    int rc;
    char err[256];
} gpu_job_t;

static void *gpu_thread(void *arg)
{
    gpu_job_t *g = arg;
    g->rc = g->s->gpu(g->s->gpu_ctx, g->nonce, &g->payload, g->err, sizeof g->err);
    return NULL;
}

/* One full collection: quote and GPU evidence in parallel, then the JSON. */
static int build(attest_service_t *s, int algo, int tls, const uint8_t nonce[32], const char *nonce_source,
                 buf_t *out, char *err, size_t errlen)
{
    attest_identity_t id;
    uint8_t rd[64];
    attest_parts_t parts = {0};
    gpu_job_t g = {.s = s, .nonce = nonce};
    pthread_t th;
    int threaded = 0, rc = -1;
    identity(s->signer, algo, &id);
    if (tls && s->has_tls)
        attest_report_data_tls(id.id_bytes, id.id_len, s->spki, nonce, rd);
    else
        attest_report_data(id.id_bytes, id.id_len, nonce, rd);
    if (s->gpu) {
        if (pthread_create(&th, NULL, gpu_thread, &g) == 0)
            threaded = 1;
        else
            gpu_thread(&g); /* no thread: one after the other */
    } else {
        g.rc = attest_gpu_payload_sim(nonce, &g.payload);
        if (g.rc)
            snprintf(g.err, sizeof g.err, "simulated GPU payload failed");
    }
    int qrc = attest_provider_collect(s->p, rd, &parts, err, errlen);
    if (threaded)
        pthread_join(th, NULL);
    if (qrc != 0)
        goto out;
    if (g.rc < 0) {
        snprintf(err, errlen, "GPU evidence: %s", g.err);
        goto out;
    }
    parts.nvidia_payload = g.payload; /* rc 1 (no GPU): stays empty */
    parts.gpu_evidence = s->gpu_label;
    g.payload = (buf_t)BUF_INIT;
    attest_report_opts_t o = {.tls_fingerprint_hex = tls && s->has_tls ? s->spki_hex : NULL,
                              .nonce_source = nonce_source};
    if (attest_report_build(&id, nonce, &parts, &o, out) != 0) {
        snprintf(err, errlen, "report assembly failed (out of memory)");
        goto out;
    }
    rc = 0;
out:
    buf_free(&g.payload);
    attest_parts_free(&parts);
    return rc;
}

int attest_service_fresh(attest_service_t *s, int algo, int tls, const uint8_t nonce[32], buf_t *out,
                         char *err, size_t errlen)
{
    return build(s, algo & 1, tls && s->has_tls, nonce, "client", out, err, errlen);
}

/* Collects into slot sl (caller holds the lock and has set sl->collecting). Returns with
 * the lock held. */
static int collect_locked(attest_service_t *s, slot_t *sl, int algo, int tls)
{
    uint8_t nonce[32];
    buf_t body = BUF_INIT;
    char e[256] = "";
    randombytes_buf(nonce, sizeof nonce);
    pthread_mutex_unlock(&s->lock);
    int rc = build(s, algo, tls, nonce, "server", &body, e, sizeof e);
    pthread_mutex_lock(&s->lock);
    if (rc == 0) {
        buf_free(&sl->body);
        sl->body = body;
        sl->made_at = mono_s();
        sl->err[0] = 0;
    } else {
        buf_free(&body);
        snprintf(sl->err, sizeof sl->err, "%s", e);
        LOG_ERROR("attestation report collection failed: %s", e);
    }
    sl->collecting = 0;
    sl->gen++;
    pthread_cond_broadcast(&s->done);
    return rc;
}

int attest_service_cached(attest_service_t *s, int algo, int tls, buf_t *out, int *want_refresh,
                          char *err, size_t errlen)
{
    *want_refresh = 0;
    algo &= 1;
    tls = tls && s->has_tls;
    if (s->ttl == 0) {
        uint8_t nonce[32];
        randombytes_buf(nonce, sizeof nonce);
        return build(s, algo, tls, nonce, "server", out, err, errlen);
    }
    slot_t *sl = &s->slots[algo][tls];
    int rc = -1, waited = 0;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        double age = mono_s() - sl->made_at;
        if (sl->body.len && age < s->ttl) {
            rc = buf_append(out, sl->body.data, sl->body.len);
            if (rc)
                snprintf(err, errlen, "out of memory");
            if (age >= s->ttl / 2.0 && !sl->collecting && !sl->refresh_queued) {
                sl->refresh_queued = 1;
                *want_refresh = 1;
            }
            break;
        }
        if (sl->collecting && !waited) {
            unsigned gen = sl->gen;
            while (sl->gen == gen)
                pthread_cond_wait(&s->done, &s->lock);
            waited = 1;
            if (!sl->body.len || mono_s() - sl->made_at >= s->ttl) {
                snprintf(err, errlen, "%s", sl->err[0] ? sl->err : "attestation collection failed");
                break;
            }
            continue;
        }
        sl->collecting = 1;
        if (collect_locked(s, sl, algo, tls) != 0) {
            snprintf(err, errlen, "%s", sl->err);
            break;
        }
        waited = 1;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void attest_service_refresh(attest_service_t *s, int algo, int tls)
{
    algo &= 1;
    tls = tls && s->has_tls;
    slot_t *sl = &s->slots[algo][tls];
    pthread_mutex_lock(&s->lock);
    sl->refresh_queued = 0;
    double age = mono_s() - sl->made_at;
    if (!sl->collecting && (!sl->body.len || age >= s->ttl / 2.0)) {
        sl->collecting = 1;
        collect_locked(s, sl, algo, tls);
    }
    pthread_mutex_unlock(&s->lock);
}

void attest_service_refresh_cancelled(attest_service_t *s, int algo, int tls)
{
    pthread_mutex_lock(&s->lock);
    s->slots[algo & 1][tls && s->has_tls].refresh_queued = 0;
    pthread_mutex_unlock(&s->lock);
}
