/* The attestation service (attest/provider.h): GPU evidence collected in parallel with the
 * quote, the report assembled, the server-nonce report cache with its single-flight and
 * background refresh (and a look-up that never waits, for the loop), and the admission count
 * of the collections clients cause. */
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <json-c/json.h>

#include "attest/provider.h"
#include "core/clock.h"
#include "core/hex.h"
#include "core/log.h"
#include "core/json.h"
#include "core/sha.h"

#define SERVICE_ERR_MAX 256 /* why a collection failed, kept for the callers that waited on it */
#define NONCE_LEN 32
#define SPKI_HASH_LEN 32    /* sha256 of the TLS certificate's SubjectPublicKeyInfo */
#define ECDSA_ID_LEN 20     /* the Ethereum address bytes */
#define ED25519_ID_LEN 32   /* the public key */
#define TLS_CERT_MAX (1u << 20) /* a TLS_CERT_PATH file larger than this is refused, not read */
#define TLS_COLLECT_TRIES 3 /* a cached TLS report is re-collected when the key changed meanwhile */

/* What identifies one version of TLS_CERT_PATH: certbot and dstack-ingress replace the file by
 * rename (a new inode), an editor or cp rewrites it in place (a new mtime/ctime/size). */
typedef struct file_ident {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
} file_ident_t;

/* The TLS binding a collection uses: copied under the lock when the collection starts. */
typedef struct tls_snap {
    int on;
    unsigned gen;
    uint8_t spki[SPKI_HASH_LEN];
    char spki_hex[HEX_SIZE(SPKI_HASH_LEN)];
} tls_snap_t;

typedef struct slot {
    buf_t body;         /* pre-serialised report */
    double made_at;     /* monotonic seconds */
    int collecting;     /* a thread is collecting for this slot right now */
    int refresh_queued; /* a refresh job was handed to a caller */
    unsigned gen;       /* bumped when a collection ends */
    char err[SERVICE_ERR_MAX]; /* why the last collection failed */
} slot_t;

struct attest_service {
    attest_provider_t *p;
    const signer_t *signer;
    unsigned ttl;
    int has_tls;
    uint8_t spki[SPKI_HASH_LEN];          /* under lock */
    char spki_hex[HEX_SIZE(SPKI_HASH_LEN)]; /* under lock */
    unsigned tls_gen;                     /* under lock: bumped when the SPKI changes */
    char *tls_path;                       /* NULL: the SPKI is fixed */
    pthread_mutex_t tls_check_lock;       /* one file check at a time; guards what follows */
    file_ident_t tls_ident;               /* the file version last looked at */
    int tls_file_err;                     /* the last check failed (logged once per failure) */
    unsigned long long tls_reloads, tls_failures; /* relaxed atomics */
    attest_gpu_fn gpu;
    void *gpu_ctx;
    const char *gpu_label;
    unsigned gpu_expected, nvswitch_expected; /* 0: no requirement */
    aci_keys_t *aci; /* borrowed; NULL: no ACI */
    const char *model_name, *signed_text_format;    /* borrowed; NULL: omitted */
    int event_log_array;
    pthread_mutex_t lock;
    pthread_cond_t done;
    slot_t slots[2][4]; /* [algo][flags: ATTEST_BIND_TLS (when has_tls) | ATTEST_BIND_GPU] */
    unsigned pending;   /* admitted client collections, queued or running */
    int last_failed;    /* under lock: the last collection (any) failed; 0 at start, after the
                         * provider's start-up probe */
    char last_err[SERVICE_ERR_MAX]; /* under lock: why */
    unsigned pending_by[ATTEST_MAX_CLIENTS];
};

attest_service_t *attest_service_new(attest_provider_t *p, const signer_t *signer,
                                     const attest_service_config_t *c)
{
    attest_service_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->p = p;
    s->signer = signer;
    s->ttl = c->cache_ttl_s;
    pthread_mutex_init(&s->tls_check_lock, NULL);
    if (c->tls_spki_sha256) {
        s->has_tls = 1;
        memcpy(s->spki, c->tls_spki_sha256, sizeof s->spki);
        hex_encode(s->spki_hex, s->spki, sizeof s->spki);
        /* tls_ident stays zero: the first check reads the file again, so a version that
         * replaced the one the caller parsed in the meantime is not mistaken for it. */
        if (c->tls_cert_path && c->tls_cert_path[0] && !(s->tls_path = strdup(c->tls_cert_path))) {
            pthread_mutex_destroy(&s->tls_check_lock);
            free(s);
            return NULL;
        }
    }
    s->gpu = c->gpu;
    s->gpu_ctx = c->gpu_ctx;
    s->gpu_label = c->gpu_label;
    s->gpu_expected = c->gpu_expected;
    s->nvswitch_expected = c->nvswitch_expected;
    s->aci = c->aci;
    s->model_name = c->model_name;
    s->signed_text_format = c->signed_text_format;
    s->event_log_array = c->event_log_array;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->done, NULL);
    return s;
}

void attest_service_free(attest_service_t *s)
{
    if (!s)
        return;
    for (int a = 0; a < 2; a++)
        for (int t = 0; t < 4; t++)
            buf_free(&s->slots[a][t].body);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->done);
    pthread_mutex_destroy(&s->tls_check_lock);
    free(s->tls_path);
    attest_provider_free(s->p);
    free(s);
}

attest_provider_t *attest_service_provider(attest_service_t *s) { return s->p; }
int attest_service_has_tls(const attest_service_t *s) { return s->has_tls; }

static int ident_eq(const file_ident_t *a, const file_ident_t *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* A new SPKI: every cached TLS-bound report is dropped now, and collections that started
 * under the old one see tls_gen move and are not cached (collect_locked). */
static void tls_install(attest_service_t *s, const uint8_t spki[SPKI_HASH_LEN])
{
    char old[HEX_SIZE(SPKI_HASH_LEN)];
    pthread_mutex_lock(&s->lock);
    int changed = memcmp(spki, s->spki, SPKI_HASH_LEN) != 0;
    if (changed) {
        memcpy(old, s->spki_hex, sizeof old);
        memcpy(s->spki, spki, SPKI_HASH_LEN);
        hex_encode(s->spki_hex, s->spki, SPKI_HASH_LEN);
        s->tls_gen++;
        for (int a = 0; a < 2; a++)
            for (int t = ATTEST_BIND_TLS; t < 4; t += 2) { /* the TLS-bound ones */
                slot_t *sl = &s->slots[a][t];
                buf_free(&sl->body);
                sl->made_at = 0;
            }
    }
    pthread_mutex_unlock(&s->lock);
    if (changed) {
        __atomic_fetch_add(&s->tls_reloads, 1, __ATOMIC_RELAXED);
        char now[HEX_SIZE(SPKI_HASH_LEN)];
        hex_encode(now, spki, SPKI_HASH_LEN);
        LOG_INFO("TLS_CERT_PATH %s changed: reports now bind SPKI sha256 %s (was %s); cached TLS-bound "
                 "reports dropped", s->tls_path, now, old);
    }
}

int attest_service_tls_check(attest_service_t *s)
{
    if (!s->tls_path)
        return 0;
    int rc = 0;
    char err[600] = "";
    pthread_mutex_lock(&s->tls_check_lock);
    FILE *f = fopen(s->tls_path, "r");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0) {
        snprintf(err, sizeof err, "cannot open %s: %s", s->tls_path, strerror(errno));
        s->tls_ident = (file_ident_t){0}; /* whatever appears next is read */
        rc = -1;
    } else {
        file_ident_t id = {st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim};
        if (ident_eq(&id, &s->tls_ident) && !s->tls_file_err) {
            rc = 0; /* the version already in use */
        } else if (ident_eq(&id, &s->tls_ident)) {
            rc = -2; /* the same bad version: logged already */
        } else {
            uint8_t spki[SPKI_HASH_LEN];
            s->tls_ident = id;
            if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (unsigned long long)st.st_size > TLS_CERT_MAX) {
                snprintf(err, sizeof err, "%s is not a regular file of 1..%u bytes", s->tls_path,
                         TLS_CERT_MAX);
                rc = -1;
            } else if (attest_tls_spki_sha256_stream(f, s->tls_path, spki, err, sizeof err) != 0) {
                rc = -1;
            } else {
                if (s->tls_file_err)
                    LOG_INFO("TLS_CERT_PATH %s parses again", s->tls_path);
                s->tls_file_err = 0;
                tls_install(s, spki);
            }
        }
    }
    if (f)
        fclose(f);
    if (rc == -1) {
        __atomic_fetch_add(&s->tls_failures, 1, __ATOMIC_RELAXED);
        if (!s->tls_file_err)
            LOG_ERROR("TLS_CERT_PATH: %s; keeping the last good certificate's key (SPKI sha256 %.16s...) "
                      "until the file parses", err, s->spki_hex);
        s->tls_file_err = 1;
    }
    pthread_mutex_unlock(&s->tls_check_lock);
    return rc < 0 ? -1 : 0;
}

void attest_service_tls_counts(attest_service_t *s, unsigned long long *reloads,
                               unsigned long long *failures)
{
    *reloads = __atomic_load_n(&s->tls_reloads, __ATOMIC_RELAXED);
    *failures = __atomic_load_n(&s->tls_failures, __ATOMIC_RELAXED);
}

void attest_service_tls_current(attest_service_t *s, char hex[65])
{
    pthread_mutex_lock(&s->lock);
    memcpy(hex, s->has_tls ? s->spki_hex : "", s->has_tls ? HEX_SIZE(SPKI_HASH_LEN) : 1);
    pthread_mutex_unlock(&s->lock);
}

/* The binding for a collection that starts now (caller holds s->lock). */
static void tls_snapshot_locked(const attest_service_t *s, int tls, tls_snap_t *t)
{
    t->on = (tls & ATTEST_BIND_TLS) && s->has_tls;
    t->gen = s->tls_gen;
    if (t->on) {
        memcpy(t->spki, s->spki, sizeof t->spki);
        memcpy(t->spki_hex, s->spki_hex, sizeof t->spki_hex);
    }
}

/* The cache slot of a request's binding flags: the TLS bit only when a key is configured. */
static int slot_flags(const attest_service_t *s, int flags)
{
    return ((flags & ATTEST_BIND_TLS) && s->has_tls ? ATTEST_BIND_TLS : 0) | (flags & ATTEST_BIND_GPU);
}

static void identity(const signer_t *sg, int algo, attest_identity_t *id)
{
    if (algo == 0) {
        id->signing_address = signer_ecdsa_address(sg);
        id->signing_algo = "ecdsa";
        id->id_bytes = signer_ecdsa_address_bytes(sg);
        id->id_len = ECDSA_ID_LEN;
        id->signing_public_key = signer_ecdsa_pubkey_hex(sg);
    } else {
        id->signing_address = signer_ed25519_pubkey_hex(sg);
        id->signing_algo = "ed25519";
        id->id_bytes = signer_ed25519_pubkey(sg);
        id->id_len = ED25519_ID_LEN;
        id->signing_public_key = signer_ed25519_pubkey_hex(sg);
    }
}

typedef struct gpu_job {
    attest_service_t *s;
    const uint8_t *nonce;
    buf_t payload;
    buf_t switches;
    int rc;
    char err[SERVICE_ERR_MAX];
} gpu_job_t;

static void *gpu_thread(void *arg)
{
    gpu_job_t *g = arg;
    if (g->s->gpu) {
        g->rc = g->s->gpu(g->s->gpu_ctx, g->nonce, &g->payload, &g->switches, g->err, sizeof g->err);
    } else {
        g->rc = attest_gpu_payload_sim(g->nonce, &g->payload);
        if (g->rc)
            snprintf(g->err, sizeof g->err, "simulated GPU payload failed");
    }
    return NULL;
}

/* Devices in an NRAS-shaped payload ({"evidence_list":[...]}) or an nvattest list; 0 when
 * empty or unreadable. */
static size_t payload_devices(const buf_t *p)
{
    if (!p->len)
        return 0;
    struct json_object *doc = json_parse_strict(p->data, p->len), *list = NULL;
    size_t n = 0;
    if (doc && json_object_is_type(doc, json_type_array))
        list = doc;
    else if (doc)
        json_object_object_get_ex(doc, "evidence_list", &list);
    if (list && json_object_is_type(list, json_type_array))
        n = (size_t)json_object_array_length(list);
    json_object_put(doc);
    return n;
}

/* GPU_EXPECTED_COUNT / NVSWITCH_EXPECTED_COUNT: fewer devices is an error, never a smaller
 * report. 0, or -1 with err naming what is missing. */
static int check_counts(const attest_service_t *s, const gpu_job_t *g, char *err, size_t errlen)
{
    size_t gpus = payload_devices(&g->payload), sw = payload_devices(&g->switches);
    if (s->gpu_expected && gpus < s->gpu_expected) {
        snprintf(err, errlen, "GPU evidence covers %zu GPU(s), GPU_EXPECTED_COUNT is %u", gpus,
                 s->gpu_expected);
        return -1;
    }
    if (s->nvswitch_expected && sw < s->nvswitch_expected) {
        snprintf(err, errlen, "NVSwitch evidence covers %zu switch(es), NVSWITCH_EXPECTED_COUNT is %u",
                 sw, s->nvswitch_expected);
        return -1;
    }
    return 0;
}

/* One full collection, then the JSON. tls: the binding snapshot taken when the collection
 * started. gpu_bind (version 3): the GPU (and NVSwitch) evidence is collected first and its
 * hash goes into report_data, so the quote waits for it; otherwise quote and GPU evidence
 * are collected in parallel. */
static int build(attest_service_t *s, int algo, const tls_snap_t *tls, int gpu_bind,
                 const uint8_t nonce[32], const char *nonce_source, buf_t *out, char *err,
                 size_t errlen)
{
    attest_identity_t id;
    uint8_t rd[64];
    attest_parts_t parts = {0};
    gpu_job_t g = {.s = s, .nonce = nonce};
    pthread_t th;
    int threaded = 0, rc = -1, qrc;
    identity(s->signer, algo, &id);
    if (gpu_bind) {
        gpu_thread(&g);
        if (g.rc < 0) {
            snprintf(err, errlen, "GPU evidence: %s", g.err);
            goto out;
        }
        if (check_counts(s, &g, err, errlen) != 0)
            goto out;
        attest_report_data_v3(id.id_bytes, id.id_len, tls->on ? tls->spki : NULL,
                              g.payload.data, g.payload.len, g.switches.data, g.switches.len,
                              nonce, rd);
        qrc = attest_provider_collect(s->p, rd, &parts, err, errlen);
    } else {
        if (tls->on)
            attest_report_data_tls(id.id_bytes, id.id_len, tls->spki, nonce, rd);
        else
            attest_report_data(id.id_bytes, id.id_len, nonce, rd);
        if (pthread_create(&th, NULL, gpu_thread, &g) == 0)
            threaded = 1;
        else
            gpu_thread(&g); /* no thread: one after the other */
        qrc = attest_provider_collect(s->p, rd, &parts, err, errlen);
        if (threaded)
            pthread_join(th, NULL);
    }
    if (qrc != 0)
        goto out;
    if (g.rc < 0) {
        snprintf(err, errlen, "GPU evidence: %s", g.err);
        goto out;
    }
    if (!gpu_bind && check_counts(s, &g, err, errlen) != 0)
        goto out;
    if (s->event_log_array && !attest_event_log_is_array(parts.event_log.data, parts.event_log.len)) {
        snprintf(err, errlen, "the agent's event log is not a JSON array (EVENT_LOG_FORMAT=string "
                              "serves it as the agent's text)");
        goto out;
    }
    parts.nvidia_payload = g.payload; /* rc 1 (no GPU): stays empty */
    parts.nvswitch_payload = g.switches;
    parts.gpu_evidence = s->gpu_label;
    g.payload = (buf_t)BUF_INIT;
    g.switches = (buf_t)BUF_INIT;
    /* The keyset digest current now (a cached report may outlive a renewal by at most
     * ATTESTATION_CACHE_TTL; the keyset it names stays unexpired for half its lifetime). */
    char aci_digest[ACI_DIGEST_LEN + 1];
    int have_aci = s->aci && aci_keys_current(s->aci, (int64_t)clock_wall_s(), aci_digest,
                                              NULL, NULL) == 0;
    attest_report_opts_t o = {.tls_fingerprint_hex = tls->on ? tls->spki_hex : NULL,
                              .nonce_source = nonce_source,
                              .e2ee_keys_json = have_aci ? aci_keys_e2ee_json(s->aci) : NULL,
                              .aci_keyset_digest = have_aci ? aci_digest : NULL,
                              .model_name = s->model_name,
                              .signed_text_format = s->signed_text_format,
                              .event_log_array = s->event_log_array,
                              .report_version = gpu_bind ? 3 : 0};
    if (attest_report_build(&id, nonce, &parts, &o, out) != 0) {
        snprintf(err, errlen, "report assembly failed (out of memory)");
        goto out;
    }
    rc = 0;
out:
    buf_free(&g.payload);
    buf_free(&g.switches);
    attest_parts_free(&parts);
    pthread_mutex_lock(&s->lock); /* every caller of build holds no lock */
    s->last_failed = rc != 0;
    if (rc != 0)
        snprintf(s->last_err, sizeof s->last_err, "%s", err);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int attest_service_ready(attest_service_t *s, char *why, size_t whylen)
{
    int ok = 0;
    pthread_mutex_lock(&s->lock);
    for (int a = 0; a < 2 && !ok; a++)
        for (int t = 0; t < 2 && !ok; t++) {
            const slot_t *sl = &s->slots[a][t];
            ok = sl->body.len && clock_mono_s() - sl->made_at < s->ttl;
        }
    if (!ok && !s->last_failed)
        ok = 1;
    if (!ok)
        snprintf(why, whylen, "%s", s->last_err);
    pthread_mutex_unlock(&s->lock);
    return ok;
}

int attest_service_fresh(attest_service_t *s, int algo, int tls, const uint8_t nonce[32], buf_t *out,
                         char *err, size_t errlen)
{
    tls_snap_t t;
    if ((tls & ATTEST_BIND_TLS) && s->has_tls)
        attest_service_tls_check(s); /* the file as it is now; a bad file keeps the last key */
    pthread_mutex_lock(&s->lock);
    tls_snapshot_locked(s, tls, &t);
    pthread_mutex_unlock(&s->lock);
    return build(s, algo & 1, &t, tls & ATTEST_BIND_GPU, nonce, "client", out, err, errlen);
}

/* Collects into slot sl (caller holds the lock and has set sl->collecting). Returns with
 * the lock held. A TLS-bound collection looks at TLS_CERT_PATH first, and one during which
 * the key changed is collected again (TLS_COLLECT_TRIES in all) and never cached with the
 * old key. */
static int collect_locked(attest_service_t *s, slot_t *sl, int algo, int tls)
{
    uint8_t nonce[NONCE_LEN];
    buf_t body = BUF_INIT;
    char e[SERVICE_ERR_MAX] = "";
    int rc = -1, stale = 0;
    for (int tries = 0; tries < TLS_COLLECT_TRIES; tries++) {
        tls_snap_t t;
        if (tls & ATTEST_BIND_TLS) {
            pthread_mutex_unlock(&s->lock);
            attest_service_tls_check(s);
            pthread_mutex_lock(&s->lock);
        }
        tls_snapshot_locked(s, tls, &t);
        randombytes_buf(nonce, sizeof nonce);
        pthread_mutex_unlock(&s->lock);
        buf_free(&body);
        rc = build(s, algo, &t, tls & ATTEST_BIND_GPU, nonce, "server", &body, e, sizeof e);
        pthread_mutex_lock(&s->lock);
        stale = rc == 0 && t.on && t.gen != s->tls_gen;
        if (!stale)
            break;
    }
    if (stale) {
        rc = -1;
        snprintf(e, sizeof e, "the TLS certificate changed during %d collections in a row",
                 TLS_COLLECT_TRIES);
    }
    if (rc == 0) {
        buf_free(&sl->body);
        sl->body = body;
        sl->made_at = clock_mono_s();
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

/* A fresh entry of sl into out (caller holds the lock): 1 when there is one (*rc: 0, or -1
 * out of memory), 0 when not. Asks for a refresh past half the TTL. */
static int hit_locked(attest_service_t *s, slot_t *sl, buf_t *out, int *want_refresh, int *rc)
{
    double age = clock_mono_s() - sl->made_at;
    if (!sl->body.len || age >= s->ttl)
        return 0;
    *rc = buf_append(out, sl->body.data, sl->body.len) ? -1 : 0;
    if (age >= s->ttl / 2.0 && !sl->collecting && !sl->refresh_queued) {
        sl->refresh_queued = 1;
        *want_refresh = 1;
    }
    return 1;
}

int attest_service_try_cached(attest_service_t *s, int algo, int tls, buf_t *out, int *want_refresh)
{
    *want_refresh = 0;
    if (s->ttl == 0)
        return 1;
    slot_t *sl = &s->slots[algo & 1][slot_flags(s, tls)];
    int rc = 1;
    pthread_mutex_lock(&s->lock);
    if (!hit_locked(s, sl, out, want_refresh, &rc))
        rc = 1;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int attest_service_admit(attest_service_t *s, unsigned client, unsigned max_total,
                         unsigned max_per_client)
{
    client %= ATTEST_MAX_CLIENTS;
    int rc = ATTEST_ADMIT_OK;
    pthread_mutex_lock(&s->lock);
    if (max_per_client && s->pending_by[client] >= max_per_client)
        rc = ATTEST_ADMIT_CLIENT_FULL;
    else if (max_total && s->pending >= max_total)
        rc = ATTEST_ADMIT_FULL;
    else
        s->pending++, s->pending_by[client]++;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void attest_service_release(attest_service_t *s, unsigned client)
{
    client %= ATTEST_MAX_CLIENTS;
    pthread_mutex_lock(&s->lock);
    s->pending--;
    s->pending_by[client]--;
    pthread_mutex_unlock(&s->lock);
}

int attest_service_cached(attest_service_t *s, int algo, int tls, buf_t *out, int *want_refresh,
                          char *err, size_t errlen)
{
    *want_refresh = 0;
    algo &= 1;
    tls = slot_flags(s, tls);
    if (s->ttl == 0) {
        uint8_t nonce[NONCE_LEN];
        tls_snap_t t;
        randombytes_buf(nonce, sizeof nonce);
        if (tls & ATTEST_BIND_TLS)
            attest_service_tls_check(s);
        pthread_mutex_lock(&s->lock);
        tls_snapshot_locked(s, tls, &t);
        pthread_mutex_unlock(&s->lock);
        return build(s, algo, &t, tls & ATTEST_BIND_GPU, nonce, "server", out, err, errlen);
    }
    slot_t *sl = &s->slots[algo][tls];
    int rc = -1, waited = 0;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        if (hit_locked(s, sl, out, want_refresh, &rc)) {
            if (rc)
                snprintf(err, errlen, "out of memory");
            break;
        }
        if (sl->collecting && !waited) {
            unsigned gen = sl->gen;
            while (sl->gen == gen)
                pthread_cond_wait(&s->done, &s->lock);
            waited = 1;
            if (!sl->body.len || clock_mono_s() - sl->made_at >= s->ttl) {
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
    tls = slot_flags(s, tls);
    slot_t *sl = &s->slots[algo][tls];
    pthread_mutex_lock(&s->lock);
    sl->refresh_queued = 0;
    double age = clock_mono_s() - sl->made_at;
    if (!sl->collecting && (!sl->body.len || age >= s->ttl / 2.0)) {
        sl->collecting = 1;
        collect_locked(s, sl, algo, tls);
    }
    pthread_mutex_unlock(&s->lock);
}

void attest_service_refresh_cancelled(attest_service_t *s, int algo, int tls)
{
    pthread_mutex_lock(&s->lock);
    s->slots[algo & 1][slot_flags(s, tls)].refresh_queued = 0;
    pthread_mutex_unlock(&s->lock);
}

/* ---- ACI (spec/aci.md §3.2, §4.1) ---- */

void attest_aci_report_data(const char *digest, const char *nonce_hex, uint8_t out[64])
{
    char st[256];
    int n = nonce_hex ? snprintf(st, sizeof st,
                                 "{\"keyset_digest\":\"%s\",\"nonce\":\"%s\","
                                 "\"purpose\":\"aci.report_data.v1\"}",
                                 digest, nonce_hex)
                      : snprintf(st, sizeof st,
                                 "{\"keyset_digest\":\"%s\",\"nonce\":null,"
                                 "\"purpose\":\"aci.report_data.v1\"}",
                                 digest);
    memset(out, 0, 64);
    if (n > 0 && (size_t)n < sizeof st)
        sha256(st, (size_t)n, out);
}

int attest_service_aci(attest_service_t *s, const char *nonce_hex, buf_t *out, char *err,
                       size_t errlen)
{
    /* The keyset in force now (renewed here when due), copied: the quote binds this one. */
    char digest[ACI_DIGEST_LEN + 1];
    buf_t keyset = BUF_INIT;
    if (!s->aci ||
        aci_keys_current(s->aci, (int64_t)clock_wall_s(), digest, &keyset, NULL) != 0) {
        buf_free(&keyset);
        snprintf(err, errlen, "%s", s->aci ? "out of memory" : "no ACI keyset");
        return -1;
    }
    uint8_t rd[64];
    attest_aci_report_data(digest, nonce_hex, rd);
    attest_parts_t parts = {0};
    if (attest_provider_collect(s->p, rd, &parts, err, errlen) != 0) {
        attest_parts_free(&parts);
        buf_free(&keyset);
        return -1;
    }
    char rdhex[HEX_SIZE(64)];
    buf_t qhex = BUF_INIT;
    size_t start = out->len;
    int rc = -1;
    if (buf_reserve(&qhex, 2 * parts.quote.len + 1))
        goto done;
    hex_encode(qhex.data, (const uint8_t *)parts.quote.data, parts.quote.len);
    qhex.len = 2 * parts.quote.len;
    hex_encode(rdhex, rd, 64);
    if (buf_puts(out, "{\"api_version\":\"aci/1\",\"workload_keyset_digest\":") ||
        buf_json_str(out, digest, strlen(digest)) ||
        buf_puts(out, ",\"attestation\":{\"tee_type\":\"tdx\",\"workload_keyset\":") ||
        buf_append(out, keyset.data, keyset.len) ||
        buf_printf(out, ",\"report_data\":\"%.64s\",", rdhex) ||
        buf_puts(out, "\"source_provenance\":{\"repo_url\":null,\"repo_commit\":null,"
                      "\"image_digest\":null,\"image_provenance\":null},"
                      "\"evidence\":{\"quote\":\"") ||
        buf_append(out, qhex.data, qhex.len) ||
        buf_printf(out, "\",\"quote_report_data\":\"%s\",\"event_log\":", rdhex) ||
        buf_json_str(out, parts.event_log.data ? parts.event_log.data : "", parts.event_log.len) ||
        buf_puts(out, ",\"vm_config\":") ||
        buf_json_str(out, parts.vm_config.data ? parts.vm_config.data : "", parts.vm_config.len) ||
        buf_puts(out, ",\"info\":") ||
        (parts.info.len ? buf_append(out, parts.info.data, parts.info.len) : buf_puts(out, "{}")) ||
        buf_puts(out, ",\"attestation_mode\":") ||
        buf_json_str(out, parts.mode, strlen(parts.mode)) ||
        (!strcmp(parts.mode, "simulated") && buf_puts(out, ",\"simulated\":true")) ||
        buf_printf(out, "}},\"service_capabilities\":{\"supported_e2ee_versions\":[\"2\"],"
                        "\"serving\":\"direct\"},\"nonce\":") ||
        (nonce_hex ? buf_json_str(out, nonce_hex, strlen(nonce_hex)) : buf_puts(out, "null")) ||
        buf_puts(out, "}")) {
        snprintf(err, errlen, "report assembly failed (out of memory)");
        goto done;
    }
    rc = 0;
done:
    if (rc != 0) {
        out->len = start;
        if (out->cap > start)
            out->data[start] = 0;
    }
    buf_free(&qhex);
    buf_free(&keyset);
    attest_parts_free(&parts);
    return rc;
}
