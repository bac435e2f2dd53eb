/* `chat` and `signature`: a chat completion whose exact request and response bytes are hashed
 * here and compared with the signed text, both signatures checked against the signing keys,
 * and those keys checked against fresh attestation reports. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/hex.h"
#include "core/sha.h"
#include "sign/signer.h"
#include "verify/verify.h"
#include "verify/vout.h"
#include "verify/vsig.h"


/* One signature line: ECDSA recovers to address, Ed25519 verifies with the key (vs_verify). */
static int check_sig(vctx_t *cx, const char *id, const char *algo, const char *text, size_t n,
                     const char *sig, const char *address)
{
    if (!sig || !address) {
        check_add(&cx->cl, id, CHK_FAIL, "the signature verifies", "", "missing signature");
        return 0;
    }
    char rec[ETH_ADDRESS_LEN + 1];
    int rc = vs_verify(algo, text, n, sig, address, rec);
    if (strcmp(algo, "ecdsa") == 0) {
        check_add(&cx->cl, id, rc == VS_OK ? CHK_PASS : CHK_FAIL,
                  "the ECDSA (EIP-191) signature recovers to the signing address", address,
                  rc == VS_MALFORMED ? "signature malformed or unrecoverable" : rec);
        return rc == VS_OK;
    }
    if (strcmp(algo, "ed25519") == 0) {
        check_add(&cx->cl, id, rc == VS_OK ? CHK_PASS : CHK_FAIL,
                  "the Ed25519 signature verifies with the signing key", address,
                  rc == VS_OK ? "valid" : "invalid");
        return rc == VS_OK;
    }
    check_add(&cx->cl, id, CHK_FAIL, "the signature algorithm is known", "ecdsa|ed25519", algo);
    return 0;
}

#define SIGNED_TEXT_WHAT "signed text = [model:]sha256(request bytes):sha256(response bytes)"

static const char *guess_algo(const char *sig)
{
    size_t n = strlen(sig);
    return (n == 132 && sig[0] == '0' && sig[1] == 'x') || n == 130 ? "ecdsa" : "ed25519";
}

int cmd_signature(vctx_t *cx, vopts_t *o)
{
    if (!o->text || !o->signature || !o->address) {
        vx_error(cx, "sig.usage", "--text, --signature and --address are given", "missing");
        return 0;
    }
    const char *algo = o->algo ? o->algo : guess_algo(o->signature);
    vx_fact(VF_SIGNING, "%s (%s)", o->address, algo);
    if (o->request_file || o->response_file) {
        buf_t rq = BUF_INIT, rs = BUF_INIT;
        char err[256], want[130];
        if (!o->request_file || !o->response_file ||
            vx_read_file(o->request_file, &rq, err, sizeof err) != 0 ||
            vx_read_file(o->response_file, &rs, err, sizeof err) != 0) {
            vx_error(cx, "sig.text", "the request and response files could be read", "%s",
                     o->request_file && o->response_file ? err : "need both --request and --response");
        } else {
            sha256_hex(rq.data ? rq.data : "", rq.len, want);
            want[64] = ':';
            sha256_hex(rs.data ? rs.data : "", rs.len, want + 65);
            char model[256];
            int ok = vs_signed_text_ok(o->text, want, model, sizeof model);
            check_add(&cx->cl, "sig.text", ok ? CHK_PASS : CHK_FAIL, SIGNED_TEXT_WHAT, want, o->text);
            if (ok && model[0] && o->model)
                check_add(&cx->cl, "sig.model", strcmp(model, o->model) == 0 ? CHK_PASS : CHK_FAIL,
                          "the model named in the signed text is --model", o->model, model);
        }
        buf_free(&rq);
        buf_free(&rs);
    }
    check_sig(cx, "sig.verify", algo, o->text, strlen(o->text), o->signature, o->address);
    return 0;
}

/* First "id" of a non-streaming JSON body or of the first SSE data event carrying one. */
static int find_chat_id(const buf_t *b, char *out, size_t cap)
{
    const char *p = b->data ? b->data : "";
    struct json_object *j = json_tokener_parse(p);
    const char *id = json_get_str(j, "id", NULL);
    if (id) {
        snprintf(out, cap, "%s", id);
        json_object_put(j);
        return 0;
    }
    json_object_put(j);
    const char *end = p + b->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t ln = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (ln > 6 && strncmp(p, "data: {", 7) == 0) {
            char *line = strndup(p + 6, ln - 6);
            j = json_tokener_parse(line);
            free(line);
            id = json_get_str(j, "id", NULL);
            if (id) {
                snprintf(out, cap, "%s", id);
                json_object_put(j);
                return 0;
            }
            json_object_put(j);
        }
        p += ln + 1;
    }
    return -1;
}

static char *default_model(vctx_t *cx, const vopts_t *o)
{
    char *u = vx_url_join(o->target, "/v1/models", NULL);
    vhttp_resp_t r;
    char *model = NULL;
    if (vhttp_request("GET", u, o->token, NULL, NULL, 0, o->timeout_s, &r) == 0 && r.status == 200) {
        struct json_object *j = json_tokener_parse(r.body.data ? r.body.data : ""), *d;
        if (j && json_object_object_get_ex(j, "data", &d) &&
            json_object_is_type(d, json_type_array) && json_object_array_length(d) > 0)
            model = json_get_str(json_object_array_get_idx(d, 0), "id", NULL)
                        ? strdup(json_get_str(json_object_array_get_idx(d, 0), "id", NULL)) : NULL;
        json_object_put(j);
    }
    if (!model)
        vx_error(cx, "chat.model", "a model name", "GET %s gave none: pass --model", u);
    vhttp_resp_free(&r);
    free(u);
    return model;
}

static void build_body(buf_t *b, const char *model, const char *prompt, int stream, long max_tokens)
{
    buf_puts(b, "{\"model\":");
    buf_json_str(b, model, strlen(model));
    buf_puts(b, ",\"messages\":[{\"role\":\"user\",\"content\":");
    buf_json_str(b, prompt, strlen(prompt));
    buf_printf(b, "}],\"stream\":%s", stream ? "true" : "false");
    if (max_tokens > 0)
        buf_printf(b, ",\"max_tokens\":%ld", max_tokens);
    buf_puts(b, "}");
}

/* Fetches /v1/signature/{id} for algo; returns the parsed record or NULL (line added). */
static struct json_object *fetch_signature(vctx_t *cx, const vopts_t *o, const char *id,
                                           const char *algo)
{
    char path[512], q[64], lid[64];
    char *esc = NULL;
    snprintf(lid, sizeof lid, "chat.%s.fetch", algo);
    /* chat ids are [A-Za-z0-9_-] in practice; anything else is percent-encoded */
    buf_t e = BUF_INIT;
    for (const char *p = id; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~')
            buf_append(&e, p, 1);
        else
            buf_printf(&e, "%%%02X", c);
    }
    esc = e.data ? e.data : strdup("");
    snprintf(path, sizeof path, "/v1/signature/%s", esc);
    snprintf(q, sizeof q, "signing_algo=%s", algo);
    free(esc);
    char *u = vx_url_join(o->target, path, q);
    vhttp_resp_t r;
    struct json_object *j = NULL;
    if (vhttp_request("GET", u, o->token, NULL, NULL, 0, o->timeout_s, &r) != 0 || r.status != 200) {
        if (r.err[0])
            vx_error(cx, lid, "the signature record could be fetched", "%s", r.err);
        else
            vx_error(cx, lid, "the signature record could be fetched", "HTTP %ld: %.200s", r.status,
                     r.body.data ? r.body.data : "");
    } else if (!(j = json_tokener_parse(r.body.data ? r.body.data : "")) || !json_get_str(j, "text", NULL)) {
        vx_error(cx, lid, "the signature record parses", "%.200s", r.body.data ? r.body.data : "");
        json_object_put(j);
        j = NULL;
    }
    vhttp_resp_free(&r);
    free(u);
    return j;
}

int cmd_chat(vctx_t *cx, vopts_t *o)
{
    char *model = o->model ? strdup(o->model) : default_model(cx, o);
    if (!model)
        return 0;
    vx_fact(VF_MODEL, "%s", model);
    buf_t body = BUF_INIT;
    const char *prompt = o->prompt ? o->prompt : "Say hello in one short sentence.";
    const char *const *hdrs = NULL;
    vhttp_resp_t r;
    memset(&r, 0, sizeof r);
    /* --e2ee: the key comes from a report verified first; nothing is sent if it fails. */
    ve2ee_t *e2 = NULL;
    if (o->e2ee) {
        e2 = ve2ee_setup(cx, o);
        if (!e2 || ve2ee_build_request(cx, e2, &body, model, prompt, o->stream, o->max_tokens,
                                       &hdrs) != 0)
            goto out;
    } else {
        build_body(&body, model, prompt, o->stream, o->max_tokens);
    }
    char *u = vx_url_join(o->target, "/v1/chat/completions", NULL);
    int rc = vhttp_request_h("POST", u, o->token, "application/json", hdrs, body.data, body.len,
                             o->timeout_s, &r);
    free(u);
    if (rc != 0 || r.status != 200) {
        if (rc != 0)
            vx_error(cx, "chat.request", "the chat completion succeeded", "%s", r.err);
        else
            vx_error(cx, "chat.request", "the chat completion succeeded", "HTTP %ld: %.200s",
                     r.status, r.body.data ? r.body.data : "");
        goto out;
    }
    char want[130], chat_id[256];
    sha256_hex(body.data, body.len, want);
    want[64] = ':';
    sha256_hex(r.body.data ? r.body.data : "", r.body.len, want + 65);
    if (find_chat_id(&r.body, chat_id, sizeof chat_id) != 0) {
        vx_error(cx, "chat.id", "the response carries a chat id", "none found");
        goto out;
    }
    check_addf(&cx->cl, "chat.request", CHK_PASS, "the chat completion succeeded", "HTTP 200",
               "%s, %zu bytes sent, %zu bytes received, id %s", o->stream ? "stream" : "JSON",
               body.len, r.body.len, chat_id);
    if (e2) {
        ve2ee_check_headers(cx, e2, &r);
        ve2ee_check_response(cx, e2, &r.body, o->stream);
    }
    /* ACI: its E2EE keys are not signing keys; the signing keys are attested by their own
     * fresh reports below, and one of them must have signed the ciphertext. */
    int aci_signed = 0;

    static const char *const algos[2] = {"ecdsa", "ed25519"};
    for (int i = 0; i < 2; i++) {
        const char *algo = algos[i];
        char id[64];
        struct json_object *s = fetch_signature(cx, o, chat_id, algo);
        if (!s)
            continue;
        const char *text = json_get_str(s, "text", NULL), *addr = json_get_str(s, "signing_address", NULL);
        snprintf(id, sizeof id, "chat.%s.text", algo);
        char tmodel[256];
        int text_ok = vs_signed_text_ok(text, want, tmodel, sizeof tmodel);
        check_add(&cx->cl, id, text_ok ? CHK_PASS : CHK_FAIL,
                  "signed text = [model:]sha256(bytes sent):sha256(bytes received)", want, text);
        if (text_ok && tmodel[0]) {
            /* model:req:resp (the Rust proxy): the proxy's MODEL_NAME, which clients name as the
             * model; a different name is reported, not failed (the engine may serve an alias). */
            snprintf(id, sizeof id, "chat.%s.model", algo);
            check_add(&cx->cl, id, strcmp(tmodel, model) == 0 ? CHK_PASS : CHK_WARN,
                      "the model named in the signed text is the model requested", model, tmodel);
        }
        snprintf(id, sizeof id, "chat.%s.signature", algo);
        int sig_ok = check_sig(cx, id, algo, text, strlen(text), json_get_str(s, "signature", NULL),
                               addr);
        if (e2 && ve2ee_algo(e2) && strcmp(algo, ve2ee_algo(e2)) == 0) {
            /* This key's report was checked before encrypting to it: the signer must be it. */
            const char *att = ve2ee_attested_address(e2);
            int same = addr && strcasecmp(addr, att) == 0;
            snprintf(id, sizeof id, "chat.%s.attested", algo);
            check_add(&cx->cl, id, same ? CHK_PASS : CHK_FAIL,
                      "the signer is the key whose report was verified and that we encrypted to",
                      att, addr ? addr : "no signing_address");
            ve2ee_check_signed(cx, e2, text_ok, sig_ok, same);
        } else if (addr) {
            /* A fresh report for this key: the key is attested now. */
            vctx_t sub = {CHECKLIST_INIT, 0, ""};
            struct json_object *rep = NULL;
            char spki[HEX_SIZE(32)] = "", prefix[32];
            o->have_nonce = 0;
            int fetched = vr_fetch_report(&sub, o, o->target, algo, addr, &rep, spki) == 0;
            if (fetched)
                vr_check_report(&sub, o, rep, addr, spki);
            json_object_put(rep);
            if (e2 && fetched && text_ok && sig_ok && !sub.error &&
                check_count(&sub.cl, CHK_FAIL) == 0)
                aci_signed = 1;
            snprintf(prefix, sizeof prefix, "%s.", algo);
            if (sub.error && !cx->error) {
                cx->error = 1;
                snprintf(cx->errmsg, sizeof cx->errmsg, "%s", sub.errmsg);
            }
            vx_merge_prefixed(&cx->cl, &sub.cl, prefix);
            check_free(&sub.cl);
        }
        json_object_put(s);
    }
    if (e2 && !ve2ee_algo(e2))
        check_add(&cx->cl, "e2ee.signature", aci_signed ? CHK_PASS : CHK_FAIL,
                  "a signing key attested by a fresh report signed the ciphertext exchanged "
                  "(text = sha256(bytes sent):sha256(bytes received))",
                  "chat.<algo>.text, chat.<algo>.signature and <algo>.* all passed",
                  aci_signed ? "yes" : "no signing key passed all three");
out:
    free(model);
    ve2ee_free(e2);
    vhttp_resp_free(&r);
    buf_free(&body);
    return 0;
}
