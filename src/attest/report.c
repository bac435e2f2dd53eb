/* Report assembly shared by every provider: the parts are what the provider returned (the
 * agent's event log and info passed through, so verifiers can replay RTMR3), the builder only
 * frames them. The field list is built once and emitted twice (top level and the single
 * all_attestations entry). */
#include "attest/report.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "core/hex.h"
#include "core/json.h"
#include "core/sha.h"

void attest_parts_free(attest_parts_t *p)
{
    buf_free(&p->quote);
    buf_free(&p->event_log);
    buf_free(&p->info);
    buf_free(&p->vm_config);
    buf_free(&p->nvidia_payload);
    buf_free(&p->nvswitch_payload);
}

void attest_report_data_v3(const uint8_t *id, size_t idlen, const uint8_t *spki_sha256,
                           const void *gpu, size_t gpu_len, const void *sw, size_t sw_len,
                           const uint8_t nonce[32], uint8_t out[64])
{
    uint8_t in[sizeof ATTEST_V3_DOMAIN - 1 + 32 + 3 * 32];
    size_t n = 0;
    if (idlen > 32)
        idlen = 32;
    memcpy(in, ATTEST_V3_DOMAIN, sizeof ATTEST_V3_DOMAIN - 1);
    n += sizeof ATTEST_V3_DOMAIN - 1;
    memcpy(in + n, id, idlen);
    n += idlen;
    if (spki_sha256)
        memcpy(in + n, spki_sha256, 32);
    else
        memset(in + n, 0, 32);
    n += 32;
    sha256(gpu_len ? gpu : "", gpu_len, in + n);
    n += 32;
    if (sw_len)
        sha256(sw, sw_len, in + n);
    else
        memset(in + n, 0, 32);
    n += 32;
    sha256(in, n, out);
    memcpy(out + 32, nonce, 32);
}

void attest_report_data_tls(const uint8_t *id, size_t idlen, const uint8_t spki_sha256[32],
                            const uint8_t nonce[32], uint8_t out[64])
{
    uint8_t in[32 + 32];
    if (idlen > 32)
        idlen = 32;
    memcpy(in, id, idlen);
    memcpy(in + idlen, spki_sha256, 32);
    sha256(in, idlen + 32, out);
    memcpy(out + 32, nonce, 32);
}

int attest_tls_spki_sha256_stream(FILE *f, const char *name, uint8_t out[32], char *err, size_t errlen)
{
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    unsigned char *der = NULL;
    int n = x ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der) : -1;
    X509_free(x);
    ERR_clear_error();
    if (n <= 0) {
        snprintf(err, errlen, "TLS_CERT_PATH: %s holds no PEM certificate", name);
        return -1;
    }
    sha256(der, (size_t)n, out);
    OPENSSL_free(der);
    return 0;
}

int attest_tls_spki_sha256_file(const char *pem_path, uint8_t out[32], char *err, size_t errlen)
{
    FILE *f = fopen(pem_path, "r");
    if (!f) {
        snprintf(err, errlen, "TLS_CERT_PATH: cannot open %s", pem_path);
        return -1;
    }
    int rc = attest_tls_spki_sha256_stream(f, pem_path, out, err, errlen);
    fclose(f);
    return rc;
}

int attest_identity_ok(const attest_identity_t *id)
{
    return id && id->signing_address && id->signing_algo && id->signing_public_key && id->id_bytes &&
           id->id_len >= 1 && id->id_len <= 32;
}

int attest_event_log_is_array(const char *text, size_t len)
{
    if (len == 0)
        return 1;
    struct json_object *o = json_parse_strict(text, len);
    int ok = o && json_object_is_type(o, json_type_array);
    json_object_put(o);
    return ok;
}

static int put_str(buf_t *b, const char *s)
{
    return buf_json_str(b, s, strlen(s));
}

/* The agent's event log: as a JSON string, or (array) its text as it is, once checked to be a
 * JSON array, or [] when the provider has none. */
static int put_event_log(buf_t *b, const buf_t *ev, int array)
{
    const char *t = ev->data ? ev->data : "";
    if (!array)
        return buf_json_str(b, t, ev->len);
    if (ev->len == 0)
        return buf_puts(b, "[]");
    return attest_event_log_is_array(t, ev->len) ? buf_append(b, t, ev->len) : -1;
}

static int report_fields(const attest_identity_t *id, const char *nhex, const buf_t *qhex,
                         const attest_parts_t *p, const attest_report_opts_t *o, buf_t *b)
{
    int is_sim = !strcmp(p->mode, "simulated");
    if (buf_puts(b, "\"signing_address\":") || put_str(b, id->signing_address) ||
        buf_puts(b, ",\"signing_algo\":") || put_str(b, id->signing_algo) ||
        buf_printf(b, ",\"request_nonce\":\"%s\",\"intel_quote\":\"", nhex) ||
        buf_append(b, qhex->data, qhex->len) || buf_puts(b, "\",\"nvidia_payload\":") ||
        buf_json_str(b, p->nvidia_payload.data ? p->nvidia_payload.data : "", p->nvidia_payload.len) ||
        buf_puts(b, ",\"info\":") ||
        (p->info.len ? buf_append(b, p->info.data, p->info.len) : buf_puts(b, "{}")) ||
        buf_puts(b, ",\"quote\":\"") || buf_append(b, qhex->data, qhex->len) ||
        buf_puts(b, "\",\"event_log\":") || put_event_log(b, &p->event_log, o && o->event_log_array) ||
        buf_puts(b, ",\"vm_config\":") ||
        buf_json_str(b, p->vm_config.data ? p->vm_config.data : "", p->vm_config.len) ||
        buf_puts(b, ",\"signing_public_key\":") || put_str(b, id->signing_public_key))
        return -1;
    if (o && o->model_name && (buf_puts(b, ",\"model_name\":") || put_str(b, o->model_name)))
        return -1;
    if (o && o->signed_text_format && (buf_puts(b, ",\"signed_text_format\":") || put_str(b, o->signed_text_format)))
        return -1;
    if (o && o->tls_fingerprint_hex &&
        (buf_puts(b, ",\"tls_cert_fingerprint\":") || put_str(b, o->tls_fingerprint_hex)))
        return -1;
    if (buf_puts(b, ",\"attestation_mode\":") || put_str(b, p->mode))
        return -1;
    if (!strcmp(p->mode, "tappd") &&
        (buf_puts(b, ",\"tappd_hash_algorithm\":") || put_str(b, p->tappd_hash_algorithm) ||
         buf_puts(b, ",\"tappd_prefix\":") || put_str(b, p->tappd_prefix)))
        return -1;
    if (p->gpu_evidence && (buf_puts(b, ",\"gpu_evidence\":") || put_str(b, p->gpu_evidence)))
        return -1;
    if (p->nvswitch_payload.len &&
        (buf_puts(b, ",\"nvswitch_payload\":") ||
         buf_json_str(b, p->nvswitch_payload.data, p->nvswitch_payload.len)))
        return -1;
    if (o && o->report_version && buf_printf(b, ",\"report_version\":%d", o->report_version))
        return -1;
    if (o && o->e2ee_keys_json && o->aci_keyset_digest &&
        (buf_puts(b, ",\"e2ee_public_keys\":") || buf_puts(b, o->e2ee_keys_json) ||
         buf_puts(b, ",\"aci_keyset_digest\":") || put_str(b, o->aci_keyset_digest)))
        return -1;
    if (is_sim && buf_puts(b, ",\"simulated\":true"))
        return -1;
    return 0;
}

#define FIELDS_SLACK 4096 /* names, identity, nonce and escapes beyond the variable parts */
#define BODY_SLACK 160    /* the braces and the two arrays' names around the three copies */

int attest_report_build(const attest_identity_t *id, const uint8_t nonce[32], const attest_parts_t *p,
                        const attest_report_opts_t *opts, buf_t *out)
{
    if (!attest_identity_ok(id) || !p || !p->mode || p->quote.len == 0)
        return -1;
    char nhex[HEX_SIZE(32)];
    buf_t qhex = BUF_INIT, fields = BUF_INIT;
    size_t start = out->len;
    int rc = -1;
    hex_encode(nhex, nonce, 32);
    if (buf_reserve(&qhex, 2 * p->quote.len + 1))
        goto out;
    hex_encode(qhex.data, (const uint8_t *)p->quote.data, p->quote.len);
    qhex.len = 2 * p->quote.len;
    if (buf_reserve(&fields, 2 * qhex.len + p->info.len + 2 * p->event_log.len + p->vm_config.len +
                                 2 * p->nvidia_payload.len + 2 * p->nvswitch_payload.len +
                                 FIELDS_SLACK) ||
        report_fields(id, nhex, &qhex, p, opts, &fields))
        goto out;
    /* the entry at the top level, in all_attestations (the reference's layout) and in
     * model_attestations (NEAR's: nearai-cloud-verifier's chat clients read the signing key
     * only from model_attestations[]) */
    if (buf_reserve(out, 3 * fields.len + BODY_SLACK) || buf_puts(out, "{") ||
        buf_append(out, fields.data, fields.len) || buf_puts(out, ",\"all_attestations\":[{") ||
        buf_append(out, fields.data, fields.len) || buf_puts(out, "}]") ||
        buf_puts(out, ",\"model_attestations\":[{") || buf_append(out, fields.data, fields.len) ||
        buf_puts(out, "}]"))
        goto out;
    if (opts && opts->nonce_source &&
        (buf_puts(out, ",\"nonce_source\":") || put_str(out, opts->nonce_source)))
        goto out;
    if (buf_puts(out, "}"))
        goto out;
    rc = 0;
out:
    if (rc != 0) {
        out->len = start;
        if (out->cap > start)
            out->data[start] = 0;
    }
    buf_free(&qhex);
    buf_free(&fields);
    return rc;
}
