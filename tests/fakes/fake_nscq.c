/* A fake libnvidia-nscq.so.2 for tests: exports the NSCQ entry points src/nvidia/nscq.h
 * declares and serves nvtrust's recorded NVSwitch evidence (4 LS10 switches of an HGX H100,
 * tests/vectors/nvidia/nvtrust/ppcie_switch_evidence_4xLS10.json), steered by environment
 * variables read at each call:
 *
 *   FAKE_NSCQ_EVIDENCE_JSON=f   nvattest evidence list ([{"evidence": b64 SPDM report,
 *                               "certificate": b64 PEM chain}, ...]); default the vector above
 *                               under $VP_TEST_VECTORS (default tests/vectors)
 *   FAKE_NSCQ_SWITCHES=N        switches enumerated (default: the list's length); switch i
 *                               answers item i % n
 *   FAKE_NSCQ_ARCH=N            /{nvswitch}/id/arch (default 2 = LS10)
 *   FAKE_NSCQ_KEEP_NONCE=1      do not write the nscq_session_set_input nonce into the report
 *                               (the real library asks the switch for a report over it). With
 *                               the nonce written, the SPDM signature no longer verifies: the
 *                               evidence is SIMULATED, for the collector's shape and nonce only
 *   FAKE_NSCQ_FOREIGN_NONCE=N   the first N reports carry another nonce (counted in
 *                               fake_nscq_counters()->foreign)
 *   FAKE_NSCQ_FAIL=name[,name]  these calls (or "uuid", "arch", "certificate",
 *                               "attestation_report" observations) fail with NSCQ_RC_ERROR_DRV
 *   FAKE_NSCQ_REPORT_SIZE=N, FAKE_NSCQ_CERT_SIZE=N   lie about the returned sizes */
#pragma GCC diagnostic ignored "-Wmissing-prototypes"

#include <json-c/json.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nvidia/nscq.h"

#define EXPORT __attribute__((visibility("default")))

struct fake_nscq_counters {
    int sessions, destroyed, reports, certs, inputs, foreign;
};
static struct fake_nscq_counters counters;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

struct nscq_session_st {
    uint8_t nonce[32];
    int have_nonce;
};

EXPORT struct fake_nscq_counters *fake_nscq_counters(void)
{
    return &counters;
}

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return (v && *v) ? strtol(v, NULL, 0) : dflt;
}

static int failing(const char *name)
{
    const char *list = getenv("FAKE_NSCQ_FAIL");
    if (!list)
        return 0;
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
        if ((p == list || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
            return 1;
    return 0;
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static size_t b64dec(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;
    for (; *s && *s != '='; s++) {
        int v = b64val((unsigned char)*s);
        if (v < 0)
            continue;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n < cap)
                out[n] = (uint8_t)(acc >> bits);
            n++;
        }
    }
    return n;
}

static json_object *load_list(void)
{
    const char *json = getenv("FAKE_NSCQ_EVIDENCE_JSON");
    char path[1024];
    if (!json || !*json) {
        const char *dir = getenv("VP_TEST_VECTORS");
        snprintf(path, sizeof(path), "%s/nvidia/nvtrust/ppcie_switch_evidence_4xLS10.json",
                 dir && *dir ? dir : "tests/vectors");
        json = path;
    }
    json_object *root = json_object_from_file(json);
    if (!root || !json_object_is_type(root, json_type_array) || json_object_array_length(root) == 0) {
        json_object_put(root);
        return NULL;
    }
    return root;
}

static unsigned switch_count(void)
{
    json_object *root = load_list();
    if (!root)
        return 0;
    long n = env_long("FAKE_NSCQ_SWITCHES", (long)json_object_array_length(root));
    json_object_put(root);
    return n > 0 ? (unsigned)n : 0;
}

/* Switch i's item string field, decoded. */
static size_t item_field(unsigned i, const char *key, uint8_t *out, size_t cap)
{
    json_object *root = load_list(), *v;
    size_t n = 0;
    if (root) {
        json_object *it = json_object_array_get_idx(root, i % json_object_array_length(root));
        if (json_object_object_get_ex(it, key, &v))
            n = b64dec(json_object_get_string(v), out, cap);
        json_object_put(root);
    }
    return n;
}

static nscq_uuid_t uuid_of(unsigned i)
{
    nscq_uuid_t u;
    for (unsigned k = 0; k < 16; k++)
        u.bytes[k] = (uint8_t)(0xa0 + i * 16 + k);
    return u;
}

EXPORT nscq_rc_t nscq_uuid_to_label(const nscq_uuid_t *uuid, nscq_label_t *label, uint32_t flags)
{
    (void)flags;
    if (failing("nscq_uuid_to_label"))
        return NSCQ_RC_ERROR_DRV;
    /* the real labels are "SWX-<uuid>" */
    int o = snprintf(label->data, sizeof(label->data), "SWX-");
    for (unsigned k = 0; k < 16; k++)
        o += snprintf(label->data + o, sizeof(label->data) - (size_t)o, "%02X", uuid->bytes[k]);
    return NSCQ_RC_SUCCESS;
}

EXPORT nscq_session_result_t nscq_session_create(uint32_t flags)
{
    (void)flags;
    nscq_session_result_t r = {NSCQ_RC_SUCCESS, NULL};
    if (failing("nscq_session_create")) {
        r.rc = NSCQ_RC_ERROR_DRV;
        return r;
    }
    r.session = calloc(1, sizeof(*r.session));
    pthread_mutex_lock(&mu);
    counters.sessions++;
    pthread_mutex_unlock(&mu);
    return r;
}

EXPORT void nscq_session_destroy(nscq_session_t s)
{
    pthread_mutex_lock(&mu);
    counters.destroyed++;
    pthread_mutex_unlock(&mu);
    free(s);
}

EXPORT nscq_rc_t nscq_session_set_input(nscq_session_t s, uint32_t flags, void *input, uint32_t size)
{
    (void)flags;
    if (failing("nscq_session_set_input"))
        return NSCQ_RC_ERROR_DRV;
    if (size != NSCQ_ATTESTATION_REPORT_NONCE_SIZE)
        return NSCQ_RC_ERROR_UNEXPECTED_VALUE;
    memcpy(s->nonce, input, 32);
    s->have_nonce = 1;
    counters.inputs++;
    return NSCQ_RC_SUCCESS;
}

/* Which switch a "/<label>/config/..." path names; -1 if none. */
static int switch_of(const char *path, const char *suffix)
{
    unsigned n = switch_count();
    for (unsigned i = 0; i < n; i++) {
        nscq_uuid_t u = uuid_of(i);
        nscq_label_t l;
        nscq_uuid_to_label(&u, &l, 0);
        char want[160];
        snprintf(want, sizeof(want), "/%s/config/%s", l.data, suffix);
        if (!strcmp(path, want))
            return (int)i;
    }
    return -1;
}

EXPORT nscq_rc_t nscq_session_path_observe(nscq_session_t s, const char *path, nscq_fn_t fn,
                                           void *user, uint32_t flags)
{
    (void)flags;
    unsigned n = switch_count();
    int i;
    if (!strcmp(path, "/drv/nvswitch/{device}/uuid")) {
        if (failing("uuid"))
            return NSCQ_RC_ERROR_DRV;
        nscq_uuid_cb cb = (nscq_uuid_cb)fn;
        for (unsigned k = 0; k < n; k++) {
            nscq_uuid_t dev = uuid_of(k), u = uuid_of(k);
            cb(&dev, NSCQ_RC_SUCCESS, &u, user);
        }
        return NSCQ_RC_SUCCESS;
    }
    if (!strcmp(path, "/{nvswitch}/id/arch")) {
        if (failing("arch"))
            return NSCQ_RC_ERROR_DRV;
        nscq_arch_cb cb = (nscq_arch_cb)fn;
        for (unsigned k = 0; k < n; k++) {
            nscq_uuid_t dev = uuid_of(k);
            cb(&dev, NSCQ_RC_SUCCESS, (nscq_arch_t)env_long("FAKE_NSCQ_ARCH", NSCQ_ARCH_LS10), user);
        }
        return NSCQ_RC_SUCCESS;
    }
    if ((i = switch_of(path, "certificate")) >= 0) {
        if (failing("certificate"))
            return NSCQ_RC_ERROR_DRV;
        nscq_attestation_certificate_t *c = calloc(1, sizeof(*c));
        size_t len = item_field((unsigned)i, "certificate", c->cert_chain, sizeof(c->cert_chain));
        c->cert_chain_size = (uint32_t)env_long("FAKE_NSCQ_CERT_SIZE", (long)len);
        nscq_uuid_t dev = uuid_of((unsigned)i);
        counters.certs++;
        ((nscq_cert_cb)fn)(&dev, NSCQ_RC_SUCCESS, *c, user); /* by value, as NSCQ does */
        free(c);
        return NSCQ_RC_SUCCESS;
    }
    if ((i = switch_of(path, "attestation_report")) >= 0) {
        if (failing("attestation_report"))
            return NSCQ_RC_ERROR_DRV;
        if (!s->have_nonce)
            return NSCQ_RC_ERROR_UNEXPECTED_VALUE;
        nscq_attestation_report_t *r = calloc(1, sizeof(*r));
        size_t len = item_field((unsigned)i, "evidence", r->report, sizeof(r->report));
        if (!env_long("FAKE_NSCQ_KEEP_NONCE", 0) && len >= 36) {
            memcpy(r->report + 4, s->nonce, 32);
            pthread_mutex_lock(&mu);
            if (counters.foreign < env_long("FAKE_NSCQ_FOREIGN_NONCE", 0)) {
                counters.foreign++;
                r->report[4] ^= 0x5a;
            }
            pthread_mutex_unlock(&mu);
        }
        r->report_size = (uint32_t)env_long("FAKE_NSCQ_REPORT_SIZE", (long)len);
        nscq_uuid_t dev = uuid_of((unsigned)i);
        counters.reports++;
        ((nscq_report_cb)fn)(&dev, NSCQ_RC_SUCCESS, *r, user);
        free(r);
        return NSCQ_RC_SUCCESS;
    }
    return NSCQ_RC_ERROR_INVALID_UUID;
}
