/* `chat --e2ee aci-v2`, the attestation half: GET /v1/aci/attestation for a fresh nonce and
 * the checks that make its keyset trustworthy before anything is sealed to it (spec/aci.md
 * §3, §4, §9.1 as summarised in ../shared/docs/e2ee-formats.md §2.1 and §7):
 *
 *   aci.fetch, aci.format      the report arrived, api_version aci/1
 *   aci.nonce                  it echoes our nonce
 *   aci.keyset_digest          sha256 of the JCS form of the keyset *as we parsed it*
 *                              (computed here, RFC 8785) equals workload_keyset_digest
 *   aci.keyset.not_after       the keyset has not expired (and does not claim years)
 *   aci.report_data            report_data = sha256({"keyset_digest","nonce","purpose"})
 *   aci.mode, aci.tdx.*, ...   the quote, checked as `report` checks quotes, with its
 *                              report_data = that digest ‖ 32 zero bytes
 *   aci.tls                    over https: the certificate's SPKI is listed in the keyset
 *
 * Only the keys of a keyset that passed every line are handed back. */
#include <json-c/json.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/hex.h"
#include "core/sha.h"
#include "verify/verify.h"

#define NOT_AFTER_MAX_S (400LL * 86400) /* "an implausibly distant not_after" (§3.1) */

static struct json_object *jget(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

/* ---- RFC 8785 (JCS) for the JSON a keyset holds: objects, arrays, strings, integers,
 * booleans, null. A non-integer number is refused (-1): its ECMAScript spelling is not
 * needed by any keyset and is not implemented here. ---- */

static int jcs_str(buf_t *b, const char *s, size_t n)
{
    if (buf_puts(b, "\""))
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int rc;
        switch (c) {
        case '"': rc = buf_puts(b, "\\\""); break;
        case '\\': rc = buf_puts(b, "\\\\"); break;
        case '\b': rc = buf_puts(b, "\\b"); break;
        case '\f': rc = buf_puts(b, "\\f"); break;
        case '\n': rc = buf_puts(b, "\\n"); break;
        case '\r': rc = buf_puts(b, "\\r"); break;
        case '\t': rc = buf_puts(b, "\\t"); break;
        default: rc = c < 0x20 ? buf_printf(b, "\\u%04x", c) : buf_append(b, s + i, 1);
        }
        if (rc)
            return -1;
    }
    return buf_puts(b, "\"");
}

/* The next UTF-16 code unit sequence of a UTF-8 string (JCS sorts member names by UTF-16
 * code units). Writes 1 or 2 units; 0 at the end. */
static int utf16_next(const unsigned char **p, const unsigned char *end, unsigned u[2])
{
    if (*p >= end)
        return 0;
    unsigned c = **p, cp;
    size_t k = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if ((size_t)(end - *p) < k)
        k = (size_t)(end - *p);
    cp = k == 1 ? c : k == 2 ? c & 0x1f : k == 3 ? c & 0x0f : c & 0x07;
    for (size_t i = 1; i < k; i++)
        cp = (cp << 6) | ((*p)[i] & 0x3f);
    *p += k;
    if (cp < 0x10000) {
        u[0] = cp;
        return 1;
    }
    cp -= 0x10000;
    u[0] = 0xd800 + (cp >> 10);
    u[1] = 0xdc00 + (cp & 0x3ff);
    return 2;
}

static int utf16_cmp(const char *a, const char *b)
{
    const unsigned char *pa = (const unsigned char *)a, *pb = (const unsigned char *)b;
    const unsigned char *ea = pa + strlen(a), *eb = pb + strlen(b);
    unsigned ua[2], ub[2];
    int na = 0, nb = 0, ia = 0, ib = 0;
    for (;;) {
        if (ia == na) {
            na = utf16_next(&pa, ea, ua);
            ia = 0;
        }
        if (ib == nb) {
            nb = utf16_next(&pb, eb, ub);
            ib = 0;
        }
        if (!na || !nb)
            return na ? 1 : nb ? -1 : 0;
        if (ua[ia] != ub[ib])
            return ua[ia] < ub[ib] ? -1 : 1;
        ia++;
        ib++;
    }
}

static int key_cmp(const void *x, const void *y)
{
    return utf16_cmp(*(const char *const *)x, *(const char *const *)y);
}

static int jcs(buf_t *b, struct json_object *o, int depth)
{
    if (depth > 32)
        return -1;
    switch (json_object_get_type(o)) {
    case json_type_null: return buf_puts(b, "null");
    case json_type_boolean: return buf_puts(b, json_object_get_boolean(o) ? "true" : "false");
    case json_type_int: return buf_printf(b, "%lld", (long long)json_object_get_int64(o));
    case json_type_double: return -1;
    case json_type_string:
        return jcs_str(b, json_object_get_string(o), (size_t)json_object_get_string_len(o));
    case json_type_array: {
        if (buf_puts(b, "["))
            return -1;
        for (size_t i = 0; i < json_object_array_length(o); i++)
            if ((i && buf_puts(b, ",")) || jcs(b, json_object_array_get_idx(o, i), depth + 1))
                return -1;
        return buf_puts(b, "]");
    }
    case json_type_object: {
        size_t n = (size_t)json_object_object_length(o), i = 0;
        const char **keys = calloc(n ? n : 1, sizeof *keys);
        if (!keys)
            return -1;
        json_object_object_foreach(o, k, v) {
            (void)v;
            keys[i++] = k;
        }
        qsort(keys, n, sizeof *keys, key_cmp);
        int rc = buf_puts(b, "{");
        for (i = 0; !rc && i < n; i++)
            rc = (i && buf_puts(b, ",")) || jcs_str(b, keys[i], strlen(keys[i])) ||
                 buf_puts(b, ":") || jcs(b, jget(o, keys[i]), depth + 1);
        free(keys);
        return rc || buf_puts(b, "}");
    }
    }
    return -1;
}

int va_jcs(struct json_object *o, buf_t *out) { return jcs(out, o, 0); }

/* ---- the report ---- */

/* The quote of the evidence: the same lines as `report` (tdx.*, dstack.*, pin.*). */
static void check_evidence(vctx_t *cx, const vopts_t *o, struct json_object *ev,
                           const uint8_t rd[32])
{
    size_t start = cx->cl.n;
    vr_check_mode(cx, o, "mode", ev, ev);
    const char *qh = json_get_str(ev, "quote", NULL);
    vquote_t vq;
    memset(&vq, 0, sizeof vq);
    if (!qh || vx_decode_blob((const uint8_t *)qh, strlen(qh), &vq.bytes) != 0) {
        vx_error(cx, "tdx.quote.decode", "evidence.quote decodes", "%s",
                 qh ? "not hex or base64" : "no evidence.quote");
        return;
    }
    vq_check_quote(cx, o, &vq);
    uint8_t want[64] = {0};
    memcpy(want, rd, 32);
    vq_check_report_data(cx, &vq, want, 64,
                         "report_data = sha256(ACI statement: keyset digest, our nonce) || 0^32");
    vr_check_measured(cx, o, &vq, ev); /* the same lines as `report` (tdx.*, dstack.*, pin.*) */
    if (vq.simulated && o->allow_simulated) {
        static const char *const pre[] = {"tdx.", "dstack.", "pin.", NULL};
        vx_mark_simulated(cx, start, pre);
    }
    vq_free(&vq);
}

static void check_not_after(vctx_t *cx, const vopts_t *o, struct json_object *ks)
{
    static const char what[] = "the keyset has not expired (not_after) and is not implausibly "
                               "long-lived";
    struct json_object *na = jget(ks, "not_after");
    long long now = (long long)(o->at ? o->at : time(NULL));
    if (!na || !json_object_is_type(na, json_type_int)) {
        check_add(&cx->cl, "keyset.not_after", CHK_FAIL, what, "an integer", "missing");
        return;
    }
    long long t = (long long)json_object_get_int64(na);
    if (t <= now)
        check_addf(&cx->cl, "keyset.not_after", CHK_FAIL, what, "after now", "%lld: expired %lld s ago",
                   t, now - t);
    else if (t - now > NOT_AFTER_MAX_S)
        check_addf(&cx->cl, "keyset.not_after", CHK_FAIL, what, "within 400 days",
                   "%lld: %lld days from now", t, (t - now) / 86400);
    else
        check_addf(&cx->cl, "keyset.not_after", CHK_PASS, what, "after now, within 400 days",
                   "%lld (in %lld h)", t, (t - now) / 3600);
}

/* Over https: the certificate's SPKI must be one of tls_public_keys (spec/aci.md §1.1). */
static void check_tls(vctx_t *cx, const vopts_t *o, struct json_object *ks, const char *seen)
{
    static const char what[] = "the TLS key the client saw is listed in the attested keyset";
    const char *cmp = o->tls_spki ? o->tls_spki : (seen && *seen ? seen : NULL);
    struct json_object *tk = jget(ks, "tls_public_keys");
    size_t n = tk && json_object_is_type(tk, json_type_array) ? json_object_array_length(tk) : 0;
    if (!cmp) {
        if (n)
            check_add(&cx->cl, "tls", CHK_WARN, what, "an https URL or --tls-spki",
                      "plain HTTP: the keyset's TLS key was not compared");
        return;
    }
    if (strncmp(cmp, "0x", 2) == 0)
        cmp += 2;
    for (size_t i = 0; i < n; i++) {
        const char *h = json_get_str(json_object_array_get_idx(tk, i), "spki_sha256", NULL);
        if (h && strcasecmp(h, cmp) == 0) {
            check_add(&cx->cl, "tls", CHK_PASS, what, cmp, "listed");
            return;
        }
    }
    check_addf(&cx->cl, "tls", CHK_FAIL, what, cmp, "not among the %zu listed key(s)", n);
}

int va_fetch_keyset(vctx_t *cx, vopts_t *o, const char *suite, va_keyset_t *out)
{
    memset(out, 0, sizeof *out);
    uint8_t nb[32];
    char nhex[HEX_SIZE(32)], q[80];
    if (RAND_bytes(nb, sizeof nb) != 1) {
        vx_error(cx, "fetch", "a fresh nonce", "RAND_bytes failed");
        return -1;
    }
    hex_encode(nhex, nb, sizeof nb); /* lowercase, as the route requires */
    snprintf(q, sizeof q, "nonce=%s", nhex);
    char *u = vx_url_join(o->target, "/v1/aci/attestation", q);
    vhttp_resp_t r;
    int rc = vhttp_request("GET", u, o->token, NULL, NULL, 0, o->timeout_s, &r);
    if (rc != 0 || r.status != 200) {
        if (rc != 0)
            vx_error(cx, "fetch", "the ACI attestation report could be fetched", "%s", r.err);
        else
            vx_error(cx, "fetch", "the ACI attestation report could be fetched",
                     "HTTP %ld from %s: %.200s", r.status, u, r.body.data ? r.body.data : "");
        vhttp_resp_free(&r);
        free(u);
        return -1;
    }
    check_addf(&cx->cl, "fetch", CHK_PASS, "the ACI attestation report could be fetched for a "
               "fresh nonce", "HTTP 200", "%zu bytes from %s", r.body.len, u);
    free(u);
    struct json_object *rep = json_tokener_parse(r.body.data ? r.body.data : "");
    char seen[HEX_SIZE(32)];
    memcpy(seen, r.spki_sha256, sizeof seen);
    vhttp_resp_free(&r);
    struct json_object *att = jget(rep, "attestation"), *ks = jget(att, "workload_keyset");
    struct json_object *ev = jget(att, "evidence");
    const char *api = json_get_str(rep, "api_version", NULL);
    const char *dg = json_get_str(rep, "workload_keyset_digest", NULL);
    if (!rep || !json_object_is_type(rep, json_type_object) || !api || !dg ||
        !ks || !json_object_is_type(ks, json_type_object) || !ev) {
        vx_error(cx, "format", "the report has api_version, workload_keyset_digest and "
                 "attestation.{workload_keyset,evidence}", "%s", rep ? "missing fields" : "not JSON");
        json_object_put(rep);
        return -1;
    }
    check_add(&cx->cl, "format", strcmp(api, "aci/1") == 0 ? CHK_PASS : CHK_FAIL,
              "the report is an ACI report", "api_version aci/1", api);
    const char *echo = json_get_str(rep, "nonce", NULL);
    check_add(&cx->cl, "nonce", echo && strcmp(echo, nhex) == 0 ? CHK_PASS : CHK_FAIL,
              "the report echoes our nonce (freshness)", nhex, echo ? echo : "no nonce");

    /* The digest we compute from the keyset we parsed; the served copy must agree. */
    buf_t j = BUF_INIT;
    char h[SHA256_HEX_LEN + 1];
    if (va_jcs(ks, &j) != 0) {
        check_add(&cx->cl, "keyset_digest", CHK_FAIL, "the keyset digest is sha256 of its JCS form",
                  dg, "the keyset has a value JCS cannot be computed for here");
        buf_free(&j);
        json_object_put(rep);
        return 0;
    }
    sha256_hex(j.data, j.len, h);
    buf_free(&j);
    snprintf(out->digest, sizeof out->digest, "sha256:%s", h);
    check_add(&cx->cl, "keyset_digest", strcmp(out->digest, dg) == 0 ? CHK_PASS : CHK_FAIL,
              "workload_keyset_digest = sha256 of the keyset's JCS form (computed here)",
              out->digest, dg);
    check_not_after(cx, o, ks);

    /* The statement over *our* digest and nonce: what the quote must carry. */
    char st[256];
    uint8_t rd[32];
    int sn = snprintf(st, sizeof st,
                      "{\"keyset_digest\":\"%s\",\"nonce\":\"%s\",\"purpose\":\"aci.report_data.v1\"}",
                      out->digest, nhex);
    sha256(st, (size_t)sn, rd);
    char rdh[HEX_SIZE(32)];
    hex_encode(rdh, rd, 32);
    const char *rds = json_get_str(att, "report_data", NULL);
    check_add(&cx->cl, "report_data", rds && strcasecmp(rds, rdh) == 0 ? CHK_PASS : CHK_FAIL,
              "attestation.report_data = sha256({keyset_digest, nonce, purpose})", rdh,
              rds ? rds : "missing");
    check_evidence(cx, o, ev, rd);
    check_tls(cx, o, ks, seen);

    /* The key of the suite: the first entry with that algo. */
    struct json_object *keys = jget(ks, "e2ee_public_keys");
    size_t n = keys && json_object_is_type(keys, json_type_array) ? json_object_array_length(keys) : 0;
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(keys, i);
        const char *a = json_get_str(e, "algo", NULL), *pk = json_get_str(e, "public_key", NULL);
        if (a && pk && strcmp(a, suite) == 0) {
            snprintf(out->public_key, sizeof out->public_key, "%s", pk);
            const char *id = json_get_str(e, "key_id", NULL);
            snprintf(out->key_id, sizeof out->key_id, "%s", id ? id : "(no key_id)");
            break;
        }
    }
    if (!out->public_key[0])
        check_addf(&cx->cl, "keyset.e2ee_key", CHK_FAIL, "the keyset lists a key of the suite",
                   suite, "none among %zu key(s)", n);
    json_object_put(rep);
    return 0;
}
