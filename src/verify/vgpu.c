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

static void check_sim_payload(vctx_t *cx, const char *payload, size_t n, const uint8_t *nonce)
{
    struct json_object *doc = nv_json_parse(payload, n), *v;
    const char *pn = doc && json_object_object_get_ex(doc, "nonce", &v) ? json_object_get_string(v)
                                                                        : NULL;
    char want[HEX_SIZE(32)] = "";
    if (nonce)
        hex_encode(want, nonce, 32);
    if (!nonce)
        check_add(&cx->cl, "gpu.payload.nonce", CHK_SKIP, "payload nonce is the expected nonce",
                  "", "no nonce given");
    else
        check_add(&cx->cl, "gpu.payload.nonce", pn && strcasecmp(pn, want) == 0 ? CHK_PASS : CHK_FAIL,
                  "payload nonce is the expected nonce (SIMULATED evidence)", want,
                  pn ? pn : "no nonce");
    check_add(&cx->cl, "gpu.evidence", CHK_SKIP,
              "GPU SPDM signature and certificate chain to the NVIDIA root", "",
              "simulated GPU evidence (zero SPDM signature, test certificate): not verifiable");
    json_object_put(doc);
}

void vg_check_payload(vctx_t *cx, const vopts_t *o, const char *payload, size_t n,
                      const uint8_t *nonce, int simulated)
{
    if (o->no_gpu) {
        check_add(&cx->cl, "gpu", CHK_SKIP, "GPU evidence is attested", "",
                  "not checked (--no-gpu)");
        return;
    }
    if (simulated) {
        check_sim_payload(cx, payload, n, nonce);
        return;
    }
    nv_verify_payload(payload, n, nonce, o->at, &cx->cl);
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
    vg_check_payload(cx, o, p, n, o->have_nonce ? o->nonce : NULL, 0);
    if (o->nras_url || o->nras_response_file)
        vg_check_nras(cx, o, p, n, o->have_nonce ? o->nonce : NULL);
    json_object_put(doc);
    buf_free(&b);
    return 0;
}
