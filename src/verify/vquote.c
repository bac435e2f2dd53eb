/* The TDX side of the verifier: quote structure and its four signature links to the built-in
 * Intel root, TD attributes, Intel collateral (TCB status), report_data, event-log replay to
 * RTMR0–3, the dstack compose hash and measurement pins. Each check is one checklist line. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "attest/sim.h"
#include "core/hex.h"
#include "core/sha.h"
#include "tdx/collateral.h"
#include "tdx/roots.h"
#include "verify/pcs.h"
#include "verify/verify.h"
#include "verify/vout.h"


#define SIM_NOTE "SIMULATED test root (--allow-simulated), not Intel"

void vq_free(vquote_t *vq)
{
    buf_free(&vq->bytes);
}

static void check_header(vctx_t *cx, const tdx_quote_t *q)
{
    char vid[33];
    hex_encode(vid, q->qe_vendor_id, 16);
    int ok = memcmp(q->qe_vendor_id, tdx_intel_qe_vendor_id, 16) == 0;
    check_addf(&cx->cl, "tdx.quote.header", ok ? CHK_PASS : CHK_FAIL,
               "quote header: TDX quote v4/v5, ECDSA P-256 attestation key, Intel QE vendor",
               "version 4|5, key type 2, TEE 0x81, vendor 939a7233f79c4ca9940a0db3957f0607",
               "version %u, key type %u, TEE 0x%x, vendor %s", q->version, q->att_key_type,
               q->tee_type, vid);
}

static void check_links(vctx_t *cx, vquote_t *vq, const vopts_t *o)
{
    const tdx_quote_t *q = &vq->q;
    int r = tdx_verify_quote_signature(q);
    check_addf(&cx->cl, "tdx.quote.signature", r == 0 ? CHK_PASS : CHK_FAIL,
               "the attestation key signed the quote header and TD report body",
               "valid ECDSA P-256 signature", "%s over %zu bytes",
               r == 0 ? "valid" : tdx_strerror(r), q->signed_len);
    r = tdx_verify_qe_binding(q);
    check_add(&cx->cl, "tdx.quote.qe_binding", r == 0 ? CHK_PASS : CHK_FAIL,
              "the QE report binds the attestation key (report_data = sha256(key || auth data))",
              "match", r == 0 ? "match" : tdx_strerror(r));
    r = tdx_verify_qe_report_signature(q);
    check_add(&cx->cl, "tdx.quote.qe_signature", r == 0 ? CHK_PASS : CHK_FAIL,
              "the PCK leaf certificate signed the QE report", "valid ECDSA P-256 signature",
              r == 0 ? "valid" : tdx_strerror(r));

    const char *what = "the PCK chain verifies to the built-in Intel SGX Root CA at the given time";
    char at[64];
    time_t t = o->at ? o->at : time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
    r = tdx_pck_chain_verify(q->pck_chain, q->pck_chain_len, tdx_intel_sgx_root_der,
                             tdx_intel_sgx_root_der_len, o->at);
    if (r == 0) {
        check_addf(&cx->cl, "tdx.quote.pck_chain", CHK_PASS, what, "Intel SGX Root CA",
                   "chain valid at %s", at);
        return;
    }
    const uint8_t *sim = (const uint8_t *)attest_sim_root_cert_pem;
    int rs = tdx_pck_chain_verify(q->pck_chain, q->pck_chain_len, sim,
                                  strlen(attest_sim_root_cert_pem), o->at);
    if (rs == 0 && o->allow_simulated) {
        vq->simulated = 1;
        check_addf(&cx->cl, "tdx.quote.pck_chain", CHK_PASS, what, "Intel SGX Root CA",
                   "chain valid at %s to the " SIM_NOTE, at);
    } else if (rs == 0) {
        vq->simulated = 1;
        check_add(&cx->cl, "tdx.quote.pck_chain", CHK_FAIL, what, "Intel SGX Root CA",
                  "SIMULATED quote: the chain ends in the repository's test root "
                  "(accepted only with --allow-simulated)");
    } else {
        check_addf(&cx->cl, "tdx.quote.pck_chain", CHK_FAIL, what, "Intel SGX Root CA",
                   "%s at %s", tdx_strerror(r), at);
    }
}

static void check_attributes(vctx_t *cx, const tdx_quote_t *q)
{
    uint64_t a = tdx_td_attributes(q);
    int debug = (a & TDX_ATTR_DEBUG) != 0;
    check_addf(&cx->cl, "tdx.td_attributes", debug ? CHK_FAIL : CHK_PASS,
               "the TD is not a debug TD (TDATTRIBUTES.DEBUG = 0)", "DEBUG=0",
               "TDATTRIBUTES 0x%016llx%s", (unsigned long long)a,
               debug ? ": DEBUG bit set, the host can read the TD's memory" : "");
}

static int load_collateral(vctx_t *cx, const vopts_t *o, const vquote_t *vq, buf_t *json)
{
    char err[512] = "";
    if (o->collateral_file) {
        if (vx_read_file(o->collateral_file, json, err, sizeof err) != 0) {
            vx_error(cx, "tdx.collateral.load", "Intel collateral could be read", "%s", err);
            return -1;
        }
        return 0;
    }
    const char *base = o->pccs_url ? o->pccs_url : PCS_INTEL_URL;
    if (pcs_fetch_collateral(base, &vq->q, json, err, sizeof err) != 0) {
        vx_error(cx, "tdx.collateral.fetch", "Intel collateral could be fetched", "%s: %s", base,
                 err);
        return -1;
    }
    return 0;
}

static void check_collateral(vctx_t *cx, const vopts_t *o, const vquote_t *vq)
{
    const char *what = "Intel collateral (CRLs, TCB info, QE identity) and the TCB status";
    if (o->no_collateral) {
        vx_fact(VF_TCB, "not checked (--no-collateral)");
        check_add(&cx->cl, "tdx.collateral", CHK_SKIP, what, "",
                  "not checked (--no-collateral): revocation and TCB currency unknown");
        return;
    }
    if (vq->simulated) {
        vx_fact(VF_TCB, "none: SIMULATED quote");
        check_add(&cx->cl, "tdx.collateral", CHK_SKIP, what, "",
                  "SIMULATED quote: Intel collateral does not apply");
        return;
    }
    buf_t json = BUF_INIT;
    int r = load_collateral(cx, o, vq, &json);
    if (r != 0) {
        buf_free(&json);
        return;
    }
    char err[512] = "";
    if (o->save_collateral &&
        vx_write_file(o->save_collateral, json.data, json.len, err, sizeof err) != 0)
        check_add(&cx->cl, "tdx.collateral.save", CHK_WARN, "collateral saved", o->save_collateral,
                  err);
    tdx_collateral_t *col = NULL;
    if (tdx_collateral_parse(json.data, json.len, &col, err, sizeof err) != 0) {
        vx_error(cx, "tdx.collateral.parse", "Intel collateral parses", "%s", err);
        buf_free(&json);
        return;
    }
    tdx_tcb_result_t res;
    memset(&res, 0, sizeof res);
    r = tdx_collateral_verify_ex(col, &vq->q, tdx_intel_sgx_root_der, tdx_intel_sgx_root_der_len,
                                 o->at, &cx->cl, &res);
    if (r >= 0 && res.status[0]) {
        int ok = tdx_tcb_status_allowed(res.status, o->allow_tcb);
        vx_fact(VF_TCB, "%s%s", res.status,
                !ok ? " (not accepted)" : strcmp(res.status, "UpToDate") ? " (--allow-tcb)" : "");
        char want[256];
        snprintf(want, sizeof want, "UpToDate%s%s", o->allow_tcb ? " or " : "",
                 o->allow_tcb ? o->allow_tcb : "");
        check_addf(&cx->cl, "tdx.tcb.policy", ok ? CHK_PASS : CHK_FAIL,
                   "the platform's TCB status is acceptable (--allow-tcb names others)", want,
                   "%s (platform %s%s%s, QE %s)%s%s", res.status, res.platform_status,
                   res.module_status[0] ? ", module " : "", res.module_status, res.qe_status,
                   res.advisories[0] ? " advisories " : "", res.advisories);
    } else if (r < 0) {
        check_add(&cx->cl, "tdx.tcb.policy", CHK_FAIL,
                  "the platform's TCB status is acceptable", "UpToDate", "no TCB status");
    }
    tdx_collateral_free(col);
    buf_free(&json);
}

int vq_check_quote(vctx_t *cx, const vopts_t *o, vquote_t *vq)
{
    int r = tdx_quote_parse(&vq->q, (const uint8_t *)vq->bytes.data, vq->bytes.len);
    if (r != 0) {
        check_addf(&cx->cl, "tdx.quote.parse", CHK_FAIL,
                   "the TDX quote parses (v4/v5 layout, every length within the data)",
                   "well-formed quote", "%s (%zu bytes)", tdx_strerror(r), vq->bytes.len);
        return 0;
    }
    vq->parsed = 1;
    const tdx_quote_t *q = &vq->q;
    check_addf(&cx->cl, "tdx.quote.parse", CHK_PASS,
               "the TDX quote parses (v4/v5 layout, every length within the data)",
               "well-formed quote", "v%u, TD report %s, %zu bytes signed data, %zu trailing "
               "bytes ignored", q->version, q->body_type == 3 ? "1.5" : "1.0", q->quote_len,
               q->len - q->quote_len);
    check_header(cx, q);
    check_links(cx, vq, o);
    check_attributes(cx, q);
    check_collateral(cx, o, vq);
    return 0;
}

void vq_check_report_data(vctx_t *cx, const vquote_t *vq, const uint8_t want[64], size_t n,
                          const char *what)
{
    char w[HEX_SIZE(64)], f[HEX_SIZE(64)];
    if (!vq->parsed) {
        check_add(&cx->cl, "tdx.report_data", CHK_FAIL, what, "", "quote did not parse");
        return;
    }
    hex_encode(w, want, 64);
    hex_encode(f, vq->q.body.report_data, 64);
    (void)n;
    int ok = memcmp(want, vq->q.body.report_data, 64) == 0;
    check_add(&cx->cl, "tdx.report_data", ok ? CHK_PASS : CHK_FAIL, what, w, f);
}

int vq_check_event_log(vctx_t *cx, const vquote_t *vq, struct json_object *log)
{
    uint8_t rtmr[4][48];
    char err[256] = "";
    if (!vq->parsed) {
        check_add(&cx->cl, "tdx.event_log", CHK_FAIL, "the event log replays", "", "no quote");
        return -1;
    }
    if (!log || !json_object_is_type(log, json_type_array)) {
        check_add(&cx->cl, "tdx.event_log", CHK_FAIL,
                  "the event log replays to the quote's RTMR0-3", "a JSON array",
                  log ? "not an array" : "absent");
        return -1;
    }
    int r = tdx_rtmr_replay_obj(log, rtmr, err, sizeof err);
    if (r != 0) {
        check_addf(&cx->cl, "tdx.event_log", CHK_FAIL,
                   "every event-log entry is well-formed and runtime digests recompute",
                   "valid entries", "%s", err[0] ? err : tdx_strerror(r));
        return -1;
    }
    check_addf(&cx->cl, "tdx.event_log", CHK_PASS,
               "every event-log entry is well-formed and runtime digests recompute",
               "valid entries", "%zu entries", json_object_array_length(log));
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        char id[32], w[HEX_SIZE(48)], f[HEX_SIZE(48)], what[96];
        snprintf(id, sizeof id, "tdx.rtmr%d", i);
        snprintf(what, sizeof what, "the event log replays (SHA-384 extends) to the quote's RTMR%d",
                 i);
        hex_encode(w, vq->q.body.rtmr[i], 48);
        hex_encode(f, rtmr[i], 48);
        int eq = memcmp(rtmr[i], vq->q.body.rtmr[i], 48) == 0;
        ok &= eq;
        check_add(&cx->cl, id, eq ? CHK_PASS : CHK_FAIL, what, w, f);
    }
    return ok ? 0 : -1;
}


/* Member `key` as an unsigned integer: a JSON number or a decimal string. 0 or -1. */
static int juint(struct json_object *o, const char *key, uint64_t *out)
{
    struct json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v))
        return -1;
    if (json_object_is_type(v, json_type_int)) {
        int64_t x = json_object_get_int64(v);
        if (x < 0)
            return -1;
        *out = (uint64_t)x;
        return 0;
    }
    if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        char *end;
        if (*s < '0' || *s > '9')
            return -1;
        unsigned long long x = strtoull(s, &end, 10);
        if (*end)
            return -1;
        *out = x;
        return 0;
    }
    return -1;
}

/* info.tcb_info as an object (it may be a JSON string); new reference or NULL. */
static struct json_object *tcb_info_of(struct json_object *info)
{
    struct json_object *t;
    if (!info || !json_object_object_get_ex(info, "tcb_info", &t))
        return NULL;
    if (json_object_is_type(t, json_type_object))
        return json_object_get(t);
    if (json_object_is_type(t, json_type_string) && json_object_get_string_len(t) > 0)
        return json_tokener_parse(json_object_get_string(t));
    return NULL;
}

void vq_check_compose(vctx_t *cx, const vquote_t *vq, struct json_object *info,
                      struct json_object *log, int log_ok, char out_hash[HEX_SIZE(32)])
{
    out_hash[0] = 0;
    struct json_object *tcb = tcb_info_of(info);
    const char *app_compose = json_get_str(tcb, "app_compose", NULL);
    if (!app_compose) {
        check_add(&cx->cl, "dstack.compose_hash", CHK_SKIP,
                  "the app compose file hashes to info.compose_hash", "info.tcb_info.app_compose",
                  "not in the report (tcb_info not public)");
        json_object_put(tcb);
        return;
    }
    uint8_t ch[32];
    char chx[HEX_SIZE(32)];
    sha256(app_compose, strlen(app_compose), ch);
    hex_encode(chx, ch, 32);
    memcpy(out_hash, chx, sizeof chx);
    vx_fact(VF_COMPOSE, "%s", chx);
    const char *claimed = json_get_str(info, "compose_hash", NULL);
    if (!claimed)
        claimed = json_get_str(tcb, "compose_hash", NULL);
    if (claimed)
        check_add(&cx->cl, "dstack.compose_hash", strcasecmp(claimed, chx) == 0 ? CHK_PASS : CHK_FAIL,
                  "sha256(app_compose) equals info.compose_hash", claimed, chx);
    else
        check_add(&cx->cl, "dstack.compose_hash", CHK_WARN,
                  "sha256(app_compose) equals info.compose_hash", "info.compose_hash", chx);
    if (vq->parsed) {
        uint8_t want[48] = {0x01};
        memcpy(want + 1, ch, 32);
        char w[HEX_SIZE(48)], f[HEX_SIZE(48)];
        hex_encode(w, want, 48);
        hex_encode(f, vq->q.body.mrconfigid, 48);
        static const uint8_t zero[48];
        if (memcmp(vq->q.body.mrconfigid, zero, 48) == 0)
            check_add(&cx->cl, "dstack.mrconfigid", CHK_WARN,
                      "MRCONFIGID = 01 || compose_hash (binds the compose file to the quote)", w,
                      "all zero (older dstack): only the compose-hash event binds it");
        else
            check_add(&cx->cl, "dstack.mrconfigid", memcmp(want, vq->q.body.mrconfigid, 48) == 0 ?
                      CHK_PASS : CHK_FAIL,
                      "MRCONFIGID = 01 || compose_hash (binds the compose file to the quote)", w, f);
    }
    /* The compose-hash runtime event (RTMR3): trusted only when the log replayed, and only
     * as a dstack runtime event on RTMR3. The replay recomputes a runtime event's digest from
     * its name and payload; any other event's digest is taken as given and its name and
     * payload are bound to nothing, so a relabelled event must not count. Every such event
     * must carry the same hash. */
    const char *payload = NULL;
    int disagree = 0;
    size_t nlog = log && json_object_is_type(log, json_type_array) ? json_object_array_length(log) : 0;
    for (size_t i = 0; i < nlog; i++) {
        struct json_object *e = json_object_array_get_idx(log, i);
        const char *name = json_get_str(e, "event", NULL);
        if (!name || strcmp(name, "compose-hash") != 0)
            continue;
        uint64_t type = 0, imr = 0;
        if (juint(e, "event_type", &type) || type != TDX_DSTACK_EVENT_TYPE ||
            juint(e, "imr", &imr) || imr != 3)
            continue;
        const char *p = json_get_str(e, "event_payload", NULL);
        if (!p)
            continue;
        if (payload && strcasecmp(payload, p) != 0)
            disagree = 1;
        payload = p;
    }
    if (!payload)
        check_add(&cx->cl, "dstack.compose_event", CHK_FAIL,
                  "the event log's compose-hash event carries the same hash", chx,
                  "no compose-hash runtime event on RTMR3");
    else {
        int eq = strcasecmp(payload, chx) == 0 && !disagree;
        check_addf(&cx->cl, "dstack.compose_event", eq && log_ok ? CHK_PASS : CHK_FAIL,
                   "the event log's compose-hash event carries the same hash", chx, "%s%s%s",
                   payload, disagree ? " (compose-hash events disagree)" : "",
                   log_ok ? "" : " (event log did not replay: not trusted)");
    }
    json_object_put(tcb);
}

/* The payload (hex) of the dstack runtime event `name` on RTMR3, or NULL; *disagree when two
 * such events carry different payloads. Only such events count: the replay recomputes their
 * digests from name and payload, so their payloads are bound to RTMR3. */
static const char *runtime_event(struct json_object *log, const char *name, int *disagree)
{
    const char *payload = NULL;
    size_t nlog = log && json_object_is_type(log, json_type_array) ? json_object_array_length(log) : 0;
    for (size_t i = 0; i < nlog; i++) {
        struct json_object *e = json_object_array_get_idx(log, i);
        const char *ev = json_get_str(e, "event", NULL);
        uint64_t type = 0, imr = 0;
        if (!ev || strcmp(ev, name) != 0 || juint(e, "event_type", &type) ||
            type != TDX_DSTACK_EVENT_TYPE || juint(e, "imr", &imr) || imr != 3)
            continue;
        const char *p = json_get_str(e, "event_payload", NULL);
        if (!p)
            continue;
        if (payload && strcasecmp(payload, p) != 0)
            *disagree = 1;
        payload = p;
    }
    return payload;
}

/* The policy file's boolean `key` (0 when absent or unreadable: vq_check_pins reports it). */
static int policy_bool(const vopts_t *o, const char *key)
{
    if (!o->policy_file)
        return 0;
    struct json_object *p = json_object_from_file(o->policy_file), *v;
    int r = p && json_object_is_type(p, json_type_object) &&
            json_object_object_get_ex(p, key, &v) && json_object_is_type(v, json_type_boolean) &&
            json_object_get_boolean(v);
    json_object_put(p);
    return r;
}

/* --os-image DIR: sha256(sha256sum.txt) must be the measured hash, and the manifest's line for
 * metadata.json its sha256; then is_dev (absent: production, as dstack reads it) and version.
 * 1 dev, 0 production, -1 not usable (why in err). */
static int os_image_flavour(const char *dir, const char *hash, char *version, size_t vcap,
                            char *err, size_t errlen)
{
    char path[4096], e2[256];
    buf_t sums = BUF_INIT, meta = BUF_INIT;
    int r = -1;
    version[0] = 0;
    snprintf(path, sizeof path, "%s/sha256sum.txt", dir);
    if (vx_read_file(path, &sums, e2, sizeof e2) != 0) {
        snprintf(err, errlen, "--os-image: %s", e2);
        goto out;
    }
    char h[HEX_SIZE(32)], mh[HEX_SIZE(32)];
    sha256_hex(sums.data, sums.len, h);
    if (strcasecmp(h, hash) != 0) {
        snprintf(err, errlen, "--os-image is another image: sha256(sha256sum.txt) = %s", h);
        goto out;
    }
    snprintf(path, sizeof path, "%s/metadata.json", dir);
    if (vx_read_file(path, &meta, e2, sizeof e2) != 0) {
        snprintf(err, errlen, "--os-image: %s", e2);
        goto out;
    }
    sha256_hex(meta.data, meta.len, mh);
    /* "<64 hex>  metadata.json" (sha256sum's text mode; "*" for binary mode) */
    int listed = 0;
    for (const char *l = sums.data; l && *l && !listed;) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l) : strlen(l);
        if (n >= 64 + 2 + 13 && strncasecmp(l, mh, 64) == 0 && l[64] == ' ' &&
            (l[65] == ' ' || l[65] == '*') && n - 66 == 13 && strncmp(l + 66, "metadata.json", 13) == 0)
            listed = 1;
        l = nl ? nl + 1 : l + n;
    }
    if (!listed) {
        snprintf(err, errlen, "sha256sum.txt does not list this metadata.json (sha256 %s)", mh);
        goto out;
    }
    struct json_object *m = json_tokener_parse(meta.data), *v;
    if (!m || !json_object_is_type(m, json_type_object)) {
        snprintf(err, errlen, "metadata.json is not a JSON object");
        json_object_put(m);
        goto out;
    }
    const char *ver = json_get_str(m, "version", NULL);
    snprintf(version, vcap, "%s", ver ? ver : "");
    r = json_object_object_get_ex(m, "is_dev", &v) && json_object_get_boolean(v) ? 1 : 0;
    json_object_put(m);
out:
    buf_free(&sums);
    buf_free(&meta);
    return r;
}

void vq_check_os_image(vctx_t *cx, const vopts_t *o, vquote_t *vq, struct json_object *info,
                       struct json_object *log, int log_ok)
{
    const char *id = "dstack.os_image";
    const char *what = "the dstack OS image is a production build (the measured os-image-hash)";
    int reject_dev = policy_bool(o, "reject_dev_os_image");
    int disagree = 0;
    const char *ev = runtime_event(log, "os-image-hash", &disagree);
    struct json_object *tcb = tcb_info_of(info);
    const char *stated = json_get_str(info, "os_image_hash", NULL);
    if (!stated)
        stated = json_get_str(tcb, "os_image_hash", NULL);
    /* the key provider (dstack's key-provider event: {"name":"kms"|"local"|...,"id"}) */
    char kp[96] = "";
    int kd = 0;
    const char *kph = runtime_event(log, "key-provider", &kd);
    if (kph) {
        buf_t raw = BUF_INIT;
        if (vx_decode_blob((const uint8_t *)kph, strlen(kph), &raw) == 0 && raw.data) {
            char *c = strndup(raw.data, raw.len);
            struct json_object *j = c ? json_tokener_parse(c) : NULL;
            free(c);
            const char *nm = json_get_str(j, "name", NULL);
            if (nm && strcmp(nm, "kms") != 0) /* the usual one goes without saying */
                snprintf(kp, sizeof kp, "; key provider %.40s%s", nm,
                         strcmp(nm, "local") == 0 ? " (no KMS)" : "");
            json_object_put(j);
        }
        buf_free(&raw);
    }
    if (!ev && !stated) {
        check_add(&cx->cl, id, reject_dev ? CHK_FAIL : CHK_SKIP, what,
                  reject_dev ? "a production image (reject_dev_os_image)" : "",
                  "no os-image-hash event in the event log (not a dstack CVM, or an old dstack)");
        json_object_put(tcb);
        return;
    }
    if (!ev) {
        vx_fact(VF_OS_IMAGE, "%s (stated, not measured)", stated);
        check_addf(&cx->cl, id, reject_dev ? CHK_FAIL : CHK_WARN, what, "an os-image-hash event",
                   "%s stated in info, but no os-image-hash event measures it", stated);
        json_object_put(tcb);
        return;
    }
    json_object_put(tcb);
    uint8_t hb[32];
    char h[HEX_SIZE(32)];
    if (vx_hex(ev, hb, 32) != 32) {
        check_addf(&cx->cl, id, CHK_FAIL, what, "32-byte os-image-hash", "event payload %.80s", ev);
        return;
    }
    hex_encode(h, hb, 32);
    if (!log_ok || disagree || (stated && strcasecmp(stated, h) != 0)) {
        check_addf(&cx->cl, id, CHK_FAIL, what, stated ? stated : h, "%s%s", h,
                   !log_ok ? " (event log did not replay: not trusted)"
                   : disagree ? " (os-image-hash events disagree)"
                              : " (info states another os_image_hash)");
        return;
    }
    memcpy(vq->os_image_hash, h, sizeof h);
    if (!o->os_image_dir) {
        vx_fact(VF_OS_IMAGE, "%s, production or dev unknown (--os-image DIR tells)", h);
        check_addf(&cx->cl, id, reject_dev ? CHK_FAIL : CHK_SKIP, what,
                   reject_dev ? "a production image (reject_dev_os_image)" : "",
                   "%s: production or dev unknown (see --os-image)%s", h, kp);
        return;
    }
    char version[64], err[300];
    int dev = os_image_flavour(o->os_image_dir, h, version, sizeof version, err, sizeof err);
    if (dev < 0) {
        vx_fact(VF_OS_IMAGE, "%s, production or dev unknown", h);
        check_addf(&cx->cl, id, CHK_FAIL, what, h, "%s", err);
        return;
    }
    vx_fact(VF_OS_IMAGE, "%s, %s%s%s", h, dev ? "DEV image" : "production", version[0] ? ", dstack " : "",
            version);
    if (dev)
        check_addf(&cx->cl, id, reject_dev ? CHK_FAIL : CHK_WARN, what,
                   reject_dev ? "a production image (reject_dev_os_image)" : "a production image",
                   "%s: a DEV image (metadata.json is_dev%s%s: not hardened, SSH into the CVM)%s", h,
                   version[0] ? ", dstack " : "", version, kp);
    else
        check_addf(&cx->cl, id, CHK_PASS, what, "a production image",
                   "%s: production (metadata.json%s%s)%s", h, version[0] ? ", dstack " : "",
                   version, kp);
}

/* dstack's GPU boot gate (dstack main): a `gpu-attestation` runtime event on RTMR3 whose
 * payload is JSON naming (evidence_sha256) the nvattest output the image checked at boot.
 * Trusted only as a dstack runtime event on RTMR3 of a log that replayed; its claims are shown
 * (top-level members, strings cut to 16 characters). */
void vq_check_gpu_event(vctx_t *cx, struct json_object *log, int log_ok)
{
    const char *what = "the dstack GPU boot gate's gpu-attestation event is measured in RTMR3";
    size_t nlog = log && json_object_is_type(log, json_type_array) ? json_object_array_length(log) : 0;
    struct json_object *ev = NULL;
    int count = 0;
    for (size_t i = 0; i < nlog; i++) {
        struct json_object *e = json_object_array_get_idx(log, i);
        const char *name = json_get_str(e, "event", NULL);
        uint64_t type = 0, imr = 0;
        if (!name || strcmp(name, "gpu-attestation") != 0 || juint(e, "event_type", &type) ||
            type != TDX_DSTACK_EVENT_TYPE || juint(e, "imr", &imr) || imr != 3)
            continue;
        ev = e;
        count++;
    }
    if (!ev) {
        check_add(&cx->cl, "dstack.gpu_event", CHK_SKIP, what, "",
                  "no gpu-attestation event (dstack without the GPU boot gate)");
        return;
    }
    const char *ph = json_get_str(ev, "event_payload", NULL);
    size_t pl = ph ? strlen(ph) : 0;
    buf_t raw = BUF_INIT, claims = BUF_INIT;
    struct json_object *doc = NULL;
    if (pl % 2 == 0 && buf_reserve(&raw, pl / 2 + 1) == 0 &&
        hex_decode((uint8_t *)raw.data, pl / 2, ph, pl) == (long)(pl / 2)) {
        raw.len = pl / 2;
        raw.data[raw.len] = 0;
        doc = json_parse_strict(raw.data, raw.len);
    }
    if (doc && json_object_is_type(doc, json_type_object)) {
        json_object_object_foreach(doc, k, v) {
            const char *val = json_object_is_type(v, json_type_string)
                                  ? json_object_get_string(v)
                                  : json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
            buf_printf(&claims, "%s%.32s=%.16s%s", claims.len ? ", " : "", k, val,
                       strlen(val) > 16 ? "..." : "");
        }
    }
    if (!log_ok)
        check_addf(&cx->cl, "dstack.gpu_event", CHK_FAIL, what, "a log that replays",
                   "present, but the event log did not replay: not trusted");
    else if (!claims.len)
        check_add(&cx->cl, "dstack.gpu_event", CHK_WARN, what, "JSON claims",
                  "measured, but its payload is not a JSON object");
    else
        check_addf(&cx->cl, "dstack.gpu_event", CHK_PASS, what, "", "%s%s", claims.data,
                   count > 1 ? " (several gpu-attestation events: the last shown)" : "");
    json_object_put(doc);
    buf_free(&raw);
    buf_free(&claims);
}

/* A pin value: string or array of strings; compares hex case-insensitively, 0x optional. */
static int pin_match(struct json_object *pin, const char *want_one, const char *found)
{
    const char *f = found;
    if (want_one) {
        const char *w = strncmp(want_one, "0x", 2) == 0 ? want_one + 2 : want_one;
        return strcasecmp(w, f) == 0;
    }
    if (json_object_is_type(pin, json_type_string))
        return pin_match(NULL, json_object_get_string(pin), found);
    if (json_object_is_type(pin, json_type_array))
        for (size_t i = 0; i < json_object_array_length(pin); i++) {
            struct json_object *v = json_object_array_get_idx(pin, i);
            if (json_object_is_type(v, json_type_string) &&
                pin_match(NULL, json_object_get_string(v), found))
                return 1;
        }
    return 0;
}

static void pin_line(vctx_t *cx, const char *id, const char *name, const char *cli,
                     struct json_object *policy, const char *key, const char *found)
{
    struct json_object *pv = NULL;
    if (!cli && !(policy && json_object_object_get_ex(policy, key, &pv)))
        return;
    char what[128];
    snprintf(what, sizeof what, "%s equals the pinned value", name);
    const char *expect = cli ? cli : json_object_to_json_string_ext(pv, JSON_C_TO_STRING_PLAIN);
    if (!found) {
        check_add(&cx->cl, id, CHK_FAIL, what, expect, "not available");
        return;
    }
    check_add(&cx->cl, id, pin_match(pv, cli, found) ? CHK_PASS : CHK_FAIL, what, expect, found);
}

void vq_check_pins(vctx_t *cx, const vopts_t *o, const vquote_t *vq, const char *compose_hash)
{
    struct json_object *policy = NULL;
    if (o->policy_file) {
        buf_t b = BUF_INIT;
        char err[256];
        if (vx_read_file(o->policy_file, &b, err, sizeof err) != 0 ||
            !(policy = json_tokener_parse(b.data)) ||
            !json_object_is_type(policy, json_type_object)) {
            vx_error(cx, "pin.policy", "the policy file parses", "%s: %s", o->policy_file,
                     b.data ? "not a JSON object" : err);
            buf_free(&b);
            json_object_put(policy);
            return;
        }
        buf_free(&b);
        /* A misspelt key would pin nothing and still pass: every key must be known. */
        static const char *const known[] = {"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3",
                                            "mrconfigid", "compose_hash", "allow_tcb",
                                            "os_image_hash", "reject_dev_os_image", "gpus",
                                            "nvswitches", NULL};
        json_object_object_foreach(policy, key, val) {
            int ok = key[0] == '_'; /* "_comment" and the like */
            for (const char *const *k = known; *k && !ok; k++)
                ok = strcmp(key, *k) == 0;
            if (ok && (!strcmp(key, "gpus") || !strcmp(key, "nvswitches")) &&
                !json_object_is_type(val, json_type_int) &&
                !(!strcmp(key, "nvswitches") && json_object_is_type(val, json_type_boolean))) {
                vx_error(cx, "pin.policy", "the policy file's device counts are integers",
                         "%s: \"%s\" is not an integer", o->policy_file, key);
                json_object_put(policy);
                return;
            }
            if (!ok) {
                vx_error(cx, "pin.policy", "the policy file has only known keys",
                         "%s: unknown key \"%.64s\" (known: mrtd, rtmr0-3, mrconfigid, "
                         "compose_hash, os_image_hash, allow_tcb, reject_dev_os_image, gpus, "
                         "nvswitches)",
                         o->policy_file, key);
                json_object_put(policy);
                return;
            }
        }
    }
    char f[6][HEX_SIZE(48)];
    const char *fp[6] = {0};
    if (vq->parsed) {
        hex_encode(f[0], vq->q.body.mrtd, 48);
        fp[0] = f[0];
        for (int i = 0; i < 4; i++) {
            hex_encode(f[1 + i], vq->q.body.rtmr[i], 48);
            fp[1 + i] = f[1 + i];
        }
    }
    pin_line(cx, "pin.mrtd", "MRTD", o->expect_mrtd, policy, "mrtd", fp[0]);
    static const char *const rk[4] = {"rtmr0", "rtmr1", "rtmr2", "rtmr3"};
    static const char *const rn[4] = {"RTMR0", "RTMR1", "RTMR2", "RTMR3"};
    static const char *const ri[4] = {"pin.rtmr0", "pin.rtmr1", "pin.rtmr2", "pin.rtmr3"};
    for (int i = 0; i < 4; i++)
        pin_line(cx, ri[i], rn[i], o->expect_rtmr[i], policy, rk[i], fp[1 + i]);
    if (vq->parsed) {
        hex_encode(f[5], vq->q.body.mrconfigid, 48);
        pin_line(cx, "pin.mrconfigid", "MRCONFIGID", NULL, policy, "mrconfigid", f[5]);
    }
    pin_line(cx, "pin.compose_hash", "the compose hash", o->expect_compose_hash, policy,
             "compose_hash", compose_hash);
    pin_line(cx, "pin.os_image_hash", "the OS image hash", NULL, policy, "os_image_hash",
             vq->os_image_hash[0] ? vq->os_image_hash : NULL);
    json_object_put(policy);
}
