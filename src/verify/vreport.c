/* `report`, `quote` and `gpu`: an attestation report checked end to end (nonce, key binding,
 * quote, collateral, event log, compose hash, pins, GPU evidence), or one artifact alone with
 * the same checklist lines. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>

#include "core/hex.h"
#include "attest/report.h"
#include "core/sha.h"
#include "sign/keccak.h"
#include "verify/verify.h"
#include "verify/vout.h"


static struct json_object *jget(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

/* The event log of a report: a JSON array, or a string holding one. New reference or NULL. */
static struct json_object *event_log_of(struct json_object *v)
{
    if (!v)
        return NULL;
    if (json_object_is_type(v, json_type_array))
        return json_object_get(v);
    if (json_object_is_type(v, json_type_string))
        return json_tokener_parse(json_object_get_string(v));
    return NULL;
}

/* Identity bytes of a signing address: ECDSA 20 bytes, Ed25519 32 bytes. -1 if malformed. */
static long id_bytes(const char *addr, const char *algo, uint8_t out[32])
{
    if (!addr)
        return -1;
    int ed = algo && strcmp(algo, "ed25519") == 0;
    long n = vx_hex(addr, out, 32);
    if (ed ? n != 32 : n != 20)
        return -1;
    return n;
}

static void check_public_key(vctx_t *cx, const char *algo, const char *addr, const char *pub)
{
    const char *what = "signing_public_key is the key behind signing_address";
    if (!pub) {
        check_add(&cx->cl, "report.signing_key", CHK_SKIP, what, "", "no signing_public_key");
        return;
    }
    if (algo && strcmp(algo, "ed25519") == 0) {
        check_add(&cx->cl, "report.signing_key", strcasecmp(pub, addr) == 0 ? CHK_PASS : CHK_FAIL,
                  what, addr, pub);
        return;
    }
    uint8_t k[64], h[32];
    char a[43];
    if (vx_hex(pub, k, 64) != 64) {
        check_add(&cx->cl, "report.signing_key", CHK_FAIL, what, "128 hex (x||y)", pub);
        return;
    }
    keccak256(k, 64, h);
    a[0] = '0', a[1] = 'x';
    hex_encode(a + 2, h + 12, 20);
    check_add(&cx->cl, "report.signing_key",
              strcasecmp(a, addr) == 0 ? CHK_PASS : CHK_FAIL, what, addr, a);
}

/* Picks the entry to verify: the top level when it carries a quote and matches, else the
 * all_attestations entry for `address` (case-insensitive), else the first. Borrowed. */
static struct json_object *pick_entry(struct json_object *rep, const char *address)
{
    const char *top = json_get_str(rep, "signing_address", NULL);
    if (json_get_str(rep, "intel_quote", NULL) && (!address || (top && strcasecmp(top, address) == 0)))
        return rep;
    struct json_object *all = jget(rep, "all_attestations");
    size_t n = all && json_object_is_type(all, json_type_array) ? json_object_array_length(all) : 0;
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(all, i);
        const char *a = json_get_str(e, "signing_address", NULL);
        if (json_get_str(e, "intel_quote", NULL) && (!address || (a && strcasecmp(a, address) == 0)))
            return e;
    }
    return json_get_str(rep, "intel_quote", NULL) ? rep : NULL;
}

int vr_check_mode(vctx_t *cx, const vopts_t *o, const char *id, struct json_object *rep,
                  struct json_object *e)
{
    const char *mode = json_get_str(e, "attestation_mode", NULL) ? json_get_str(e, "attestation_mode", NULL)
                                                   : json_get_str(rep, "attestation_mode", NULL);
    struct json_object *s = jget(e, "simulated") ? jget(e, "simulated") : jget(rep, "simulated");
    int sim = (mode && strcmp(mode, "simulated") == 0) || (s && json_object_get_boolean(s));
    if (sim)
        check_add(&cx->cl, id, o->allow_simulated ? CHK_WARN : CHK_FAIL,
                  "the attestation comes from real TDX hardware", "not simulated",
                  o->allow_simulated ? "SIMULATED attestation accepted (--allow-simulated): "
                                       "proves nothing about hardware"
                                     : "SIMULATED attestation (use --allow-simulated in tests)");
    else
        check_addf(&cx->cl, id, CHK_PASS, "the attestation comes from real TDX hardware",
                   "not simulated", "attestation_mode %s", mode ? mode : "not stated");
    return sim;
}

void vr_check_measured(vctx_t *cx, const vopts_t *o, vquote_t *vq, struct json_object *e)
{
    struct json_object *log = event_log_of(jget(e, "event_log"));
    int log_ok = vq_check_event_log(cx, vq, log) == 0;
    char ch[HEX_SIZE(32)];
    vq_check_compose(cx, vq, jget(e, "info"), log, log_ok, ch);
    vq_check_os_image(cx, o, vq, jget(e, "info"), log, log_ok);
    vq_check_gpu_event(cx, log, log_ok);
    vq_check_pins(cx, o, vq, ch[0] ? ch : NULL);
    json_object_put(log);
}

/* The string value of a payload field (nvidia_payload, nvswitch_payload) exactly as the report
 * carries it; "" when absent (an object instead of a string is serialised plainly). */
static const char *payload_str(struct json_object *e, const char *key, size_t *n)
{
    struct json_object *v = jget(e, key);
    const char *s = "";
    if (v && json_object_is_type(v, json_type_string)) {
        s = json_object_get_string(v);
        *n = (size_t)json_object_get_string_len(v);
        return s;
    }
    if (v && !json_object_is_type(v, json_type_null))
        s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
    *n = strlen(s);
    return s;
}

/* The report's report_version (3: the GPU binding), 0 when absent. */
static int report_version_of(struct json_object *e)
{
    struct json_object *v = jget(e, "report_version");
    return v && (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_string))
               ? json_object_get_int(v)
               : 0;
}

static void check_binding(vctx_t *cx, const vopts_t *o, const vquote_t *vq, const char *algo,
                          const char *addr, const char *fp_hex, const uint8_t nonce[32],
                          struct json_object *e)
{
    uint8_t id[32], want[64] = {0};
    long n = id_bytes(addr, algo, id);
    if (n < 0) {
        check_addf(&cx->cl, "tdx.report_data", CHK_FAIL, "report_data binds the signing key",
                   algo && strcmp(algo, "ed25519") == 0 ? "64 hex" : "0x + 40 hex", "%s", addr);
        return;
    }
    const char *what = "report_data = pad32(signing address) || nonce";
    int ver = report_version_of(e);
    if (o->report_version && ver != o->report_version) {
        check_addf(&cx->cl, "report.version", CHK_FAIL, "the report is the version asked for",
                   NULL, "report_version %d, --report-version %d", ver, o->report_version);
        return;
    }
    if (ver == 3) {
        uint8_t fp[32];
        if (fp_hex && vx_hex(fp_hex, fp, 32) != 32) {
            check_add(&cx->cl, "tdx.report_data", CHK_FAIL, "report_data binds the TLS key",
                      "tls_cert_fingerprint = 64 hex", fp_hex);
            return;
        }
        size_t gl = 0, sl = 0;
        const char *g = payload_str(e, "nvidia_payload", &gl);
        const char *sw = payload_str(e, "nvswitch_payload", &sl);
        attest_report_data_v3(id, (size_t)n, fp_hex ? fp : NULL, g, gl, sw, sl,
                              nonce ? nonce : (vq->parsed ? vq->q.body.report_data + 32 : want + 32),
                              want);
        vq_check_report_data(cx, vq, want, 64,
                             fp_hex ? "report_data = v3: sha256(domain, signing address, TLS SPKI hash, "
                                      "GPU and NVSwitch evidence hashes) || nonce"
                                    : "report_data = v3: sha256(domain, signing address, no TLS key, GPU "
                                      "and NVSwitch evidence hashes) || nonce");
        return;
    }
    if (ver != 0) {
        check_addf(&cx->cl, "report.version", CHK_FAIL, "the report's version is known", "3 or none",
                   "report_version %d", ver);
        return;
    }
    if (fp_hex) {
        uint8_t fp[32];
        if (vx_hex(fp_hex, fp, 32) != 32) {
            check_add(&cx->cl, "tdx.report_data", CHK_FAIL, "report_data binds the TLS key",
                      "tls_cert_fingerprint = 64 hex", fp_hex);
            return;
        }
        uint8_t cat[64];
        memcpy(cat, id, (size_t)n);
        memcpy(cat + n, fp, 32);
        sha256(cat, (size_t)n + 32, want);
        what = "report_data = sha256(signing address || TLS SPKI hash) || nonce";
    } else {
        memcpy(want, id, (size_t)n);
    }
    if (nonce)
        memcpy(want + 32, nonce, 32);
    else if (vq->parsed)
        memcpy(want + 32, vq->q.body.report_data + 32, 32); /* only the key half is checked */
    vq_check_report_data(cx, vq, want, 64, what);
    (void)o;
}

/* Over TLS no CA vouches for (a certificate self-signed inside the TEE): the connection is
 * trusted only because, and only when, the attested report binds its key; later requests are
 * then pinned to that key. */
static void check_tls_attested(vctx_t *cx, const vopts_t *o, const char *fp_hex,
                               const char *seen)
{
    const char *what = "the TLS certificate no CA vouches for is the one the attested report "
                       "binds (trust on attestation)";
    if (!fp_hex) {
        check_addf(&cx->cl, "report.tls", CHK_FAIL, what, "tls_cert_fingerprint",
                   "%s: self-signed or unknown CA, and the report binds no TLS key (ask with "
                   "?version=2): nothing authenticates this server", seen);
        return;
    }
    int ok = strcasecmp(fp_hex, seen) == 0;
    if (check_addf(&cx->cl, "report.tls", ok ? CHK_PASS : CHK_FAIL, what, fp_hex,
                   "%s%s", seen, ok ? " (self-signed: trusted because the quote binds it)"
                                    : " (self-signed, and not the attested key)") == CHK_PASS) {
        vx_fact(VF_TLS, "self-signed %s, trusted on attestation (the quote binds it)", seen);
        vhttp_pin_spki(o->target, seen);
    }
}

static void check_tls(vctx_t *cx, const vopts_t *o, const char *fp_hex, const char *seen)
{
    const char *what = "the TLS certificate key the client saw is the attested one";
    if (o->tls_self_signed && seen && *seen && !o->tls_spki) {
        check_tls_attested(cx, o, fp_hex, seen);
        return;
    }
    if (!fp_hex && !o->tls_spki && !(seen && *seen))
        return;
    if (!fp_hex) {
        check_add(&cx->cl, "report.tls", o->tls_spki ? CHK_FAIL : CHK_SKIP, what,
                  o->tls_spki ? o->tls_spki : "", "the report has no tls_cert_fingerprint");
        return;
    }
    const char *cmp = o->tls_spki ? o->tls_spki : (seen && *seen ? seen : NULL);
    if (!cmp) {
        check_add(&cx->cl, "report.tls", CHK_WARN, what, fp_hex,
                  "no certificate seen (plain HTTP or a file): pass --tls-spki HEX");
        return;
    }
    const char *c = strncmp(cmp, "0x", 2) == 0 ? cmp + 2 : cmp;
    check_add(&cx->cl, "report.tls", strcasecmp(c, fp_hex) == 0 ? CHK_PASS : CHK_FAIL, what,
              fp_hex, c);
}

/* teep's "response schema" factor: the fields our report and the peers' reports carry (the
 * reference and the Phala fork, NEAR's proxies, the Rust proxy, ours: docs/API.md and
 * shared/docs/reference-proxy.md §8.4). A field outside this list is one this verifier does
 * not check, so a reader should know it is there; a missing core field is reported too. */
static const char *const KNOWN_FIELDS[] = {
    "signing_address", "signing_algo", "request_nonce", "intel_quote", "nvidia_payload", "info",
    "quote", "event_log", "vm_config", "signing_public_key", "all_attestations",
    "model_attestations", "model_name", "signed_text_format", "tls_cert_fingerprint",
    "attestation_mode", "tappd_hash_algorithm", "tappd_prefix", "gpu_evidence",
    "nvswitch_payload", "report_version", "e2ee_public_keys", "aci_keyset_digest", "simulated",
    "nonce_source", NULL};
/* What the reference and NEAR's proxies both send, in every entry. */
static const char *const CORE_FIELDS[] = {"signing_address", "signing_algo", "request_nonce",
                                          "intel_quote", "nvidia_payload", "event_log", "info",
                                          NULL};

static void schema_scan(struct json_object *o, buf_t *unknown, buf_t *missing, size_t *nknown)
{
    json_object_object_foreach(o, key, val) {
        (void)val;
        int k = 0;
        for (const char *const *f = KNOWN_FIELDS; *f && !k; f++)
            k = strcmp(key, *f) == 0;
        if (k) {
            (*nknown)++;
            continue;
        }
        if (unknown->len > 160) /* the first few name the problem */
            continue;
        buf_t q = BUF_INIT;
        buf_json_str(&q, key, strnlen(key, 64));
        if (!unknown->data || !strstr(unknown->data, q.data))
            buf_printf(unknown, "%s%s", unknown->len ? ", " : "", q.data);
        buf_free(&q);
    }
    for (const char *const *f = CORE_FIELDS; *f; f++) {
        struct json_object *v;
        if (!json_object_object_get_ex(o, *f, &v) &&
            (!missing->data || !strstr(missing->data, *f)))
            buf_printf(missing, "%s%s", missing->len ? ", " : "", *f);
    }
}

/* report.schema: WARN when the report (top level or the entry checked) has a field no known
 * report carries, or lacks one the reference and NEAR both send. */
static void check_schema(vctx_t *cx, struct json_object *rep, struct json_object *e)
{
    buf_t unknown = BUF_INIT, missing = BUF_INIT;
    size_t nknown = 0;
    schema_scan(rep, &unknown, &missing, &nknown);
    if (e != rep)
        schema_scan(e, &unknown, &missing, &nknown);
    const char *what = "every report field is one of the known report formats' fields";
    if (!unknown.len && !missing.len)
        check_addf(&cx->cl, "report.schema", CHK_PASS, what, "known fields",
                   "%zu fields, all known", nknown);
    else
        check_addf(&cx->cl, "report.schema", CHK_WARN, what, "known fields",
                   "%s%s%s%s%s", unknown.len ? "unknown (not checked): " : "",
                   unknown.len ? unknown.data : "", unknown.len && missing.len ? "; " : "",
                   missing.len ? "missing: " : "", missing.len ? missing.data : "");
    buf_free(&unknown);
    buf_free(&missing);
}

static void check_nonce(vctx_t *cx, const vopts_t *o, struct json_object *e, uint8_t out[32],
                        int *have)
{
    const char *rn = json_get_str(e, "request_nonce", NULL);
    const char *src = json_get_str(e, "nonce_source", NULL);
    char want[HEX_SIZE(32)];
    *have = 0;
    if (o->have_nonce) {
        hex_encode(want, o->nonce, 32);
        vx_fact(VF_NONCE, "%s", want);
        memcpy(out, o->nonce, 32);
        *have = 1;
        int eq = rn && strcasecmp(rn, want) == 0;
        check_add(&cx->cl, "report.nonce", eq ? CHK_PASS : CHK_FAIL,
                  "the report echoes our nonce (freshness)", want, rn ? rn : "no request_nonce");
        if (src && strcmp(src, "client") != 0)
            check_add(&cx->cl, "report.nonce_source", CHK_FAIL,
                      "the server used the client's nonce", "client", src);
    } else {
        if (rn && vx_hex(rn, out, 32) == 32)
            *have = 1;
        vx_fact(VF_NONCE, "%s%s", rn ? rn : "none",
                rn ? " (the report's: none given, it may be a replay)" : "");
        check_add(&cx->cl, "report.nonce", CHK_WARN, "the report echoes our nonce (freshness)",
                  "--nonce HEX", rn ? "no nonce given: the report may be a replay" : "no nonce");
    }
}

int vr_check_report(vctx_t *cx, const vopts_t *o, struct json_object *rep,
                    const char *expect_address, const char *seen_spki)
{
    size_t start = cx->cl.n;
    /* --signing-address is an expectation too: pick_entry falls back to the top level when no
     * entry has that address, and that other key must not pass for the one asked about. */
    if (!expect_address)
        expect_address = o->signing_address;
    struct json_object *e = pick_entry(rep, expect_address);
    if (!e) {
        vx_error(cx, "report.format", "the report carries an attestation",
                 "no intel_quote%s%s", expect_address ? " for " : "",
                 expect_address ? expect_address : "");
        return -1;
    }
    const char *addr = json_get_str(e, "signing_address", NULL), *algo = json_get_str(e, "signing_algo", NULL);
    const char *quote_hex = json_get_str(e, "intel_quote", NULL) ? json_get_str(e, "intel_quote", NULL) : json_get_str(e, "quote", NULL);
    if (!addr || !quote_hex) {
        vx_error(cx, "report.format", "the report has signing_address and intel_quote", "%s",
                 !addr ? "no signing_address" : "no intel_quote");
        return -1;
    }
    if (!algo)
        algo = addr[0] == '0' && addr[1] == 'x' ? "ecdsa" : "ed25519";
    check_addf(&cx->cl, "report.format", CHK_PASS, "the report has the expected fields", "",
               "signing_algo %s, signing_address %s", algo, addr);
    vx_fact(VF_SIGNING, "%s (%s)", addr, algo);
    const char *model_name = json_get_str(e, "model_name", NULL);
    if (!model_name)
        model_name = json_get_str(rep, "model_name", NULL);
    if (model_name && *model_name)
        vx_fact(VF_MODEL, "%s", model_name);
    check_schema(cx, rep, e);
    if (expect_address)
        check_add(&cx->cl, "report.signing_address", strcasecmp(addr, expect_address) == 0 ?
                  CHK_PASS : CHK_FAIL, "the report is for the expected signing address",
                  expect_address, addr);

    int sim = vr_check_mode(cx, o, "report.mode", rep, e);

    uint8_t nonce[32];
    int have_nonce;
    check_nonce(cx, o, e, nonce, &have_nonce);
    check_public_key(cx, algo, addr, json_get_str(e, "signing_public_key", NULL));

    vquote_t vq;
    memset(&vq, 0, sizeof vq);
    if (vx_decode_blob((const uint8_t *)quote_hex, strlen(quote_hex), &vq.bytes) != 0) {
        vx_error(cx, "tdx.quote.decode", "intel_quote decodes", "not hex or base64");
        return -1;
    }
    vq_check_quote(cx, o, &vq);
    const char *fp = json_get_str(e, "tls_cert_fingerprint", NULL);
    if (fp && !*fp)
        fp = NULL;
    check_binding(cx, o, &vq, algo, addr, fp, have_nonce ? nonce : NULL, e);
    check_tls(cx, o, fp, seen_spki);

    vr_check_measured(cx, o, &vq, e);

    const char *payload = json_get_str(e, "nvidia_payload", NULL);
    if (!payload && jget(e, "nvidia_payload"))
        payload = json_object_to_json_string_ext(jget(e, "nvidia_payload"), JSON_C_TO_STRING_PLAIN);
    /* The proxy says how the GPU evidence was made ("nvml", "canned", "simulated", "none"). */
    const char *gpu_mode = json_get_str(e, "gpu_evidence", NULL);
    int gpu_sim = sim || (gpu_mode && strcmp(gpu_mode, "simulated") == 0);
    if (payload && !*payload)
        payload = NULL;
    if (!payload)
        check_add(&cx->cl, "gpu", o->no_gpu ? CHK_SKIP : CHK_FAIL, "GPU evidence is attested",
                  "nvidia_payload", gpu_mode ? gpu_mode : "absent");
    size_t gpus = 0, switches = 0;
    if (payload) {
        gpus = vg_check_payload(cx, o, payload, strlen(payload), have_nonce ? nonce : NULL,
                                gpu_sim && o->allow_simulated);
        if (o->nras_url || o->nras_response_file)
            vg_check_nras(cx, o, payload, strlen(payload), have_nonce ? nonce : NULL);
    }
    size_t swl = 0;
    const char *sw = payload_str(e, "nvswitch_payload", &swl);
    if (swl)
        switches = vg_check_switches(cx, o, sw, swl, have_nonce ? nonce : NULL,
                                     gpu_sim && o->allow_simulated);
    vg_check_counts(cx, o, gpus, switches);
    if (vq.simulated && o->allow_simulated) {
        static const char *const pre[] = {"tdx.", "dstack.", "pin.", NULL};
        vx_mark_simulated(cx, start, pre);
    }
    vq_free(&vq);
    return 0;
}

struct json_object *vr_report_entry(struct json_object *rep, const char *address)
{
    return pick_entry(rep, address);
}

int vr_fetch_report(vctx_t *cx, vopts_t *o, const char *url, const char *algo,
                    const char *address, struct json_object **out, char spki[HEX_SIZE(32)])
{
    char nhex[HEX_SIZE(32)], q[512];
    *out = NULL;
    if (!o->have_nonce) {
        if (RAND_bytes(o->nonce, 32) != 1) {
            vx_error(cx, "report.fetch", "a fresh nonce", "RAND_bytes failed");
            return -1;
        }
        o->have_nonce = 1;
    }
    hex_encode(nhex, o->nonce, 32);
    snprintf(q, sizeof q, "nonce=%s&signing_algo=%s%s%s%s%s", nhex, algo ? algo : "ecdsa",
             address ? "&signing_address=" : "", address ? address : "",
             o->report_version == 3 ? "&version=3" : "",
             o->bind_tls ? "&include_tls_fingerprint=true" : "");
    char *u = vx_url_join(url, strstr(url, "/v1/attestation/report") ? NULL
                                                                     : "/v1/attestation/report", q);
    vhttp_resp_t r;
    int rc = vhttp_get_evidence(u, o->token, o->timeout_s, &r);
    o->tls_self_signed = rc == 0 && r.tls_unverified;
    if (rc != 0 || r.status != 200) {
        if (rc != 0)
            vx_error(cx, "report.fetch", "the attestation report could be fetched", "%s", r.err);
        else
            vx_error(cx, "report.fetch", "the attestation report could be fetched",
                     "HTTP %ld from %s: %.200s", r.status, u, r.body.data ? r.body.data : "");
        vhttp_resp_free(&r);
        free(u);
        return -1;
    }
    if (spki)
        memcpy(spki, r.spki_sha256, sizeof r.spki_sha256);
    check_addf(&cx->cl, "report.fetch", CHK_PASS, "the attestation report could be fetched",
               "HTTP 200", "%zu bytes from %s", r.body.len, u);
    free(u);
    if (o->save_report) {
        char err[256];
        if (vx_write_file(o->save_report, r.body.data, r.body.len, err, sizeof err) != 0)
            check_add(&cx->cl, "report.save", CHK_WARN, "report saved", o->save_report, err);
    }
    *out = json_tokener_parse(r.body.data ? r.body.data : "");
    vhttp_resp_free(&r);
    if (!*out || !json_object_is_type(*out, json_type_object)) {
        json_object_put(*out);
        *out = NULL;
        vx_error(cx, "report.format", "the report is a JSON object", "not JSON");
        return -1;
    }
    return 0;
}

static int is_url(const char *s)
{
    return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

int cmd_report(vctx_t *cx, vopts_t *o)
{
    struct json_object *rep = NULL;
    char spki[HEX_SIZE(32)] = "";
    if (is_url(o->target)) {
        if (vr_fetch_report(cx, o, o->target, o->algo, o->signing_address, &rep, spki) != 0)
            return 0;
    } else {
        buf_t b = BUF_INIT;
        char err[256];
        if (vx_read_file(o->target, &b, err, sizeof err) != 0) {
            vx_error(cx, "report.load", "the report file could be read", "%s", err);
            return 0;
        }
        rep = json_tokener_parse(b.data);
        buf_free(&b);
        if (!rep || !json_object_is_type(rep, json_type_object)) {
            json_object_put(rep);
            vx_error(cx, "report.format", "the report is a JSON object", "%s: not JSON",
                     o->target);
            return 0;
        }
    }
    vr_check_report(cx, o, rep, NULL, spki);
    json_object_put(rep);
    return 0;
}

/* A quote file may also be a dstack GetQuote response {"quote","event_log",...}. */
int cmd_quote(vctx_t *cx, vopts_t *o)
{
    buf_t b = BUF_INIT;
    char err[256];
    if (vx_read_file(o->target, &b, err, sizeof err) != 0) {
        vx_error(cx, "tdx.quote.load", "the quote file could be read", "%s", err);
        return 0;
    }
    vquote_t vq;
    memset(&vq, 0, sizeof vq);
    struct json_object *doc = NULL, *log = NULL, *info = NULL;
    int want_log = 0; /* an event log was given: it must replay, absent or not */
    if (b.len && b.data[0] == '{' && (doc = json_tokener_parse(b.data)) && json_get_str(doc, "quote", NULL)) {
        const char *qh = json_get_str(doc, "quote", NULL);
        if (vx_decode_blob((const uint8_t *)qh, strlen(qh), &vq.bytes) != 0)
            goto undecodable;
        struct json_object *ev = jget(doc, "event_log");
        /* dstack sends "" when it has no log; anything else is a log that must replay */
        want_log = ev && !(json_object_is_type(ev, json_type_string) &&
                           json_object_get_string_len(ev) == 0);
        log = event_log_of(ev);
    } else if (vx_decode_blob((const uint8_t *)b.data, b.len, &vq.bytes) != 0) {
        goto undecodable;
    }
    if (o->event_log_file) {
        buf_t lb = BUF_INIT;
        json_object_put(log);
        log = NULL;
        if (vx_read_file(o->event_log_file, &lb, err, sizeof err) != 0 ||
            !(log = json_tokener_parse(lb.data))) {
            vx_error(cx, "tdx.event_log.load", "the event log file parses", "%s",
                     lb.data ? "not JSON" : err);
            buf_free(&lb);
            goto out;
        }
        buf_free(&lb);
        if (json_object_is_type(log, json_type_string)) { /* a JSON string holding the array */
            struct json_object *inner = json_tokener_parse(json_object_get_string(log));
            json_object_put(log);
            log = inner;
        }
        want_log = 1;
    }
    if (o->info_file) {
        buf_t ib = BUF_INIT;
        if (vx_read_file(o->info_file, &ib, err, sizeof err) != 0 ||
            !(info = json_tokener_parse(ib.data))) {
            vx_error(cx, "dstack.info.load", "the info file parses", "%s",
                     ib.data ? "not JSON" : err);
            buf_free(&ib);
            goto out;
        }
        buf_free(&ib);
    }
    vq_check_quote(cx, o, &vq);
    if (o->report_data_hex) {
        uint8_t want[64] = {0};
        long n = vx_hex(o->report_data_hex, want, 64);
        if (n < 0)
            vx_error(cx, "tdx.report_data", "--report-data parses", "not hex of <= 64 bytes");
        else
            vq_check_report_data(cx, &vq, want, 64, "report_data equals --report-data (zero-padded)");
    }
    int log_ok = 0;
    if (log || want_log) /* NULL or not an array: a FAIL line, never silence */
        log_ok = vq_check_event_log(cx, &vq, log) == 0;
    char ch[HEX_SIZE(32)] = "";
    if (info)
        vq_check_compose(cx, &vq, info, log, log_ok, ch);
    if (info || log)
        vq_check_os_image(cx, o, &vq, info, log, log_ok);
    if (log)
        vq_check_gpu_event(cx, log, log_ok);
    vq_check_pins(cx, o, &vq, ch[0] ? ch : NULL);
    if (vq.simulated && o->allow_simulated) {
        static const char *const pre[] = {"tdx.", "dstack.", "pin.", NULL};
        vx_mark_simulated(cx, 0, pre);
    }
    goto out;
undecodable:
    vx_error(cx, "tdx.quote.decode", "the quote decodes", "%s: not raw, hex or base64",
             o->target);
out:
    json_object_put(doc);
    json_object_put(log);
    json_object_put(info);
    vq_free(&vq);
    buf_free(&b);
    return 0;
}
