/* GPU evidence: the NRAS-shaped payload checked offline (SPDM signatures, certificate chains to
 * the built-in NVIDIA Device Identity CA, nonces), optionally NRAS's signed verdict, and the
 * `gpu` subcommand. Simulated evidence (zero signature) is never reported as PASS. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/x509.h>

#include "core/hex.h"
#include "nvidia/evidence.h"
#include "nvidia/nras.h"
#include "verify/verify.h"

/* Items of the payload's evidence_list (or of an nvattest list). */
static size_t payload_items(struct json_object *doc)
{
    struct json_object *l = NULL;
    if (doc && json_object_is_type(doc, json_type_array))
        l = doc;
    else if (doc)
        json_object_object_get_ex(doc, "evidence_list", &l);
    return l && json_object_is_type(l, json_type_array) ? (size_t)json_object_array_length(l) : 0;
}

static size_t check_sim_payload(vctx_t *cx, const char *payload, size_t n, const uint8_t *nonce,
                                const char *pfx)
{
    struct json_object *doc = nv_json_parse(payload, n), *v;
    char id[64];
    const char *pn = doc && json_object_object_get_ex(doc, "nonce", &v) ? json_object_get_string(v)
                                                                        : NULL;
    char want[HEX_SIZE(32)] = "";
    if (nonce)
        hex_encode(want, nonce, 32);
    snprintf(id, sizeof id, "%s.payload.nonce", pfx);
    if (!nonce)
        check_add(&cx->cl, id, CHK_SKIP, "payload nonce is the expected nonce", "", "no nonce given");
    else
        check_add(&cx->cl, id, pn && strcasecmp(pn, want) == 0 ? CHK_PASS : CHK_FAIL,
                  "payload nonce is the expected nonce (SIMULATED evidence)", want,
                  pn ? pn : "no nonce");
    snprintf(id, sizeof id, "%s.evidence", pfx);
    int gpu = strcmp(pfx, "gpu") == 0;
    check_addf(&cx->cl, id, CHK_SKIP,
               gpu ? "GPU SPDM signature and certificate chain to the NVIDIA root"
                   : "NVSwitch SPDM signature and certificate chain to the NVIDIA root",
               "", "simulated %s evidence (zero SPDM signature, test certificate): not verifiable",
               gpu ? "GPU" : "NVSwitch");
    size_t items = payload_items(doc);
    json_object_put(doc);
    return items;
}

size_t vg_check_payload(vctx_t *cx, const vopts_t *o, const char *payload, size_t n,
                        const uint8_t *nonce, int simulated)
{
    size_t count = 0;
    if (o->no_gpu) {
        check_add(&cx->cl, "gpu", CHK_SKIP, "GPU evidence is attested", "",
                  "not checked (--no-gpu)");
        return 0;
    }
    if (simulated)
        return check_sim_payload(cx, payload, n, nonce, "gpu");
    nv_verify_devices(payload, n, nonce, o->at, 0, &count, &cx->cl);
    return count;
}

size_t vg_check_switches(vctx_t *cx, const vopts_t *o, const char *payload, size_t n,
                         const uint8_t *nonce, int simulated)
{
    size_t count = 0;
    if (o->no_gpu) {
        check_add(&cx->cl, "nvswitch", CHK_SKIP, "NVSwitch evidence is attested", "",
                  "not checked (--no-gpu)");
        return 0;
    }
    if (simulated)
        return check_sim_payload(cx, payload, n, nonce, "nvswitch");
    nv_verify_devices(payload, n, nonce, o->at, 1, &count, &cx->cl);
    return count;
}

void vg_check_counts(vctx_t *cx, const vopts_t *o, size_t gpus, size_t switches)
{
    if (o->no_gpu)
        return;
    if (o->expect_gpus >= 0)
        check_addf(&cx->cl, "gpu.count", gpus >= (size_t)o->expect_gpus ? CHK_PASS : CHK_FAIL,
                   "the GPU evidence covers the expected number of GPUs", NULL,
                   "%zu GPU(s), at least %d expected", gpus, o->expect_gpus);
    if (o->expect_nvswitches >= 0)
        check_addf(&cx->cl, "nvswitch.count",
                   switches >= (size_t)o->expect_nvswitches ? CHK_PASS : CHK_FAIL,
                   "the NVSwitch evidence covers the expected number of switches", NULL,
                   "%zu NVSwitch(es), at least %d expected", switches, o->expect_nvswitches);
}

/* Reads `src` as a file, or fetches it when it is a URL. 0 or -1 (err). */
static int load_text(const vopts_t *o, const char *src, buf_t *out, char *err, size_t errlen)
{
    if (strncmp(src, "http://", 7) && strncmp(src, "https://", 8))
        return vx_read_file(src, out, err, errlen);
    vhttp_resp_t r;
    if (vhttp_request("GET", src, NULL, NULL, NULL, 0, o->timeout_s, &r) != 0 || r.status != 200) {
        snprintf(err, errlen, "%s", r.err[0] ? r.err : "HTTP error");
        if (!r.err[0])
            snprintf(err, errlen, "HTTP %ld from %s", r.status, src);
        vhttp_resp_free(&r);
        return -1;
    }
    *out = r.body;
    return 0;
}

/* https://host[:port] of a URL (for the default JWKS location). malloc'd. */
static char *url_origin(const char *url)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - url) : strlen(url);
    return strndup(url, n);
}

void vg_check_nras(vctx_t *cx, const vopts_t *o, const char *payload, size_t n,
                   const uint8_t *nonce)
{
    buf_t resp = BUF_INIT, jwks = BUF_INIT;
    char err[512] = "";
    if (o->nras_response_file) {
        if (vx_read_file(o->nras_response_file, &resp, err, sizeof err) != 0) {
            vx_error(cx, "nras.fetch", "the NRAS response could be read", "%s", err);
            return;
        }
    } else {
        const char *u = o->nras_url;
        char *url = strstr(u, "/attest/") ? strdup(u) : vx_url_join(u, "/v3/attest/gpu", NULL);
        vhttp_resp_t r;
        int rc = vhttp_request("POST", url, NULL, "application/json", payload, n, o->timeout_s, &r);
        if (rc != 0 || r.status != 200) {
            if (rc != 0)
                vx_error(cx, "nras.fetch", "NRAS answered", "%s", r.err);
            else
                vx_error(cx, "nras.fetch", "NRAS answered", "HTTP %ld from %s: %.200s", r.status,
                         url, r.body.data ? r.body.data : "");
            vhttp_resp_free(&r);
            free(url);
            return;
        }
        check_addf(&cx->cl, "nras.fetch", CHK_PASS, "NRAS answered", "HTTP 200", "%zu bytes from %s",
                   r.body.len, url);
        resp = r.body;
        free(url);
    }
    char *jsrc = NULL;
    if (o->jwks)
        jsrc = strdup(o->jwks);
    else if (o->nras_url) {
        char *origin = url_origin(o->nras_url);
        jsrc = vx_url_join(origin, "/.well-known/jwks.json", NULL);
        free(origin);
    }
    if (jsrc && load_text(o, jsrc, &jwks, err, sizeof err) != 0) {
        vx_error(cx, "nras.jwks", "the NRAS JWKS could be loaded", "%s: %s", jsrc, err);
        free(jsrc);
        buf_free(&resp);
        return;
    }
    free(jsrc);
    int r = nv_verify_nras(resp.data ? resp.data : "", resp.len, jwks.data, jwks.len, nonce, o->at,
                           &cx->cl);
    if (r < 0 && !cx->error)
        check_add(&cx->cl, "nras", CHK_FAIL, "the NRAS response could be verified", "",
                  "a JWT, the JWKS or the response could not be parsed");
    buf_free(&resp);
    buf_free(&jwks);
}

/* --report FILE (hex text or raw SPDM report) --certs FILE (PEM chain): one GPU, the way
 * nvtrust's no-GPU samples come. */
static void gpu_one(vctx_t *cx, const vopts_t *o)
{
    buf_t rb = BUF_INIT, cb = BUF_INIT, raw = BUF_INIT;
    char err[256];
    struct stack_st_X509 *chain = NULL;
    X509 *root = NULL;
    if (vx_read_file(o->gpu_report_file, &rb, err, sizeof err) != 0 ||
        vx_read_file(o->gpu_certs_file, &cb, err, sizeof err) != 0) {
        vx_error(cx, "gpu.load", "the GPU report and certificate files could be read", "%s", err);
        goto out;
    }
    int legacy = !(rb.len >= 2 && (uint8_t)rb.data[0] == 0x11 && (uint8_t)rb.data[1] == 0xE0);
    if (vx_decode_blob((const uint8_t *)rb.data, rb.len, &raw) != 0) {
        vx_error(cx, "gpu.load", "the GPU report decodes", "not raw, hex or base64");
        goto out;
    }
    chain = nv_pem_chain_parse(cb.data, cb.len);
    root = nv_device_root();
    if (!chain || !root) {
        vx_error(cx, "gpu.load", "the certificate chain parses", "%s",
                 chain ? "built-in root failed to load" : "no PEM certificate");
        goto out;
    }
    nv_verify_gpu(&cx->cl, 0, (const uint8_t *)raw.data, raw.len, legacy, chain, root,
                  o->have_nonce ? o->nonce : NULL, o->at);
out:
    if (chain)
        sk_X509_pop_free((STACK_OF(X509) *)chain, X509_free);
    X509_free(root);
    buf_free(&rb);
    buf_free(&cb);
    buf_free(&raw);
}

static void warn_no_nonce(vctx_t *cx, const vopts_t *o)
{
    if (!o->have_nonce)
        check_add(&cx->cl, "gpu.nonce", CHK_WARN, "the evidence is fresh", "--nonce HEX",
                  "no nonce given: the evidence may be a replay");
}

int cmd_gpu(vctx_t *cx, vopts_t *o)
{
    if (o->gpu_report_file) {
        warn_no_nonce(cx, o);
        gpu_one(cx, o);
        return 0;
    }
    buf_t b = BUF_INIT;
    char err[256];
    if (vx_read_file(o->target, &b, err, sizeof err) != 0) {
        vx_error(cx, "gpu.load", "the GPU payload file could be read", "%s", err);
        return 0;
    }
    struct json_object *doc = nv_json_parse(b.data, b.len);
    if (!doc) {
        vx_error(cx, "gpu.payload.format", "the GPU payload is JSON", "%s: not JSON", o->target);
        buf_free(&b);
        return 0;
    }
    /* A whole attestation report is accepted too: its nvidia_payload string is checked. */
    struct json_object *v;
    const char *p = b.data;
    size_t n = b.len;
    if (json_object_is_type(doc, json_type_object) &&
        json_object_object_get_ex(doc, "nvidia_payload", &v) &&
        json_object_is_type(v, json_type_string)) {
        p = json_object_get_string(v);
        n = (size_t)json_object_get_string_len(v);
    }
    warn_no_nonce(cx, o);
    size_t gpus = 0, switches = 0;
    /* An nvattest list of LS10 items is switch evidence (nvtrust's PPCIe switch_evidence.json). */
    struct json_object *first = json_object_is_type(doc, json_type_array) &&
                                        json_object_array_length(doc) > 0
                                    ? json_object_array_get_idx(doc, 0)
                                    : NULL;
    const char *arch = first ? json_get_str(first, "arch", NULL) : NULL;
    if (p == b.data && arch && strcmp(arch, "LS10") == 0)
        switches = vg_check_switches(cx, o, p, n, o->have_nonce ? o->nonce : NULL, 0);
    else
        gpus = vg_check_payload(cx, o, p, n, o->have_nonce ? o->nonce : NULL, 0);
    if (p != b.data && json_object_object_get_ex(doc, "nvswitch_payload", &v) &&
        json_object_is_type(v, json_type_string) && json_object_get_string_len(v) > 0)
        switches = vg_check_switches(cx, o, json_object_get_string(v),
                                     (size_t)json_object_get_string_len(v),
                                     o->have_nonce ? o->nonce : NULL, 0);
    vg_check_counts(cx, o, gpus, switches);
    if (gpus && (o->nras_url || o->nras_response_file))
        vg_check_nras(cx, o, p, n, o->have_nonce ? o->nonce : NULL);
    json_object_put(doc);
    buf_free(&b);
    return 0;
}
