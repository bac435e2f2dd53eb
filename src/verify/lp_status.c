/* GET /verification (JSON) and GET / (HTML) of the local verifying proxy: one snapshot of the
 * attestation side's state (lp_att_snapshot, taken under its lock) rendered twice, so that the
 * page a person reads and the document a program reads say the same thing.
 *
 * Every string that came from the remote (a check's `found`, a model name, a reason) is
 * cleaned first (control bytes and invalid UTF-8 become '?', vout_clean), then JSON- or
 * HTML-escaped. The page has no script and no external asset: inline CSS only. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verify/lp_att.h"
#include "verify/lp_e2ee.h"
#include "verify/lproxy.h"
#include "verify/vout.h"

static const char *const ST_NAME[] = {"pass", "fail", "skip", "warn"};
static const char *const ST_UPPER[] = {"PASS", "FAIL", "SKIP", "WARN"};

static const char *st_name(chk_status_t s) { return (unsigned)s < 4 ? ST_NAME[s] : "fail"; }

static void iso_time(time_t t, char out[32])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* s cleaned (valid UTF-8, no control bytes), as a JSON string. */
static void jstr(buf_t *out, const char *s)
{
    buf_t c = BUF_INIT;
    vout_clean(s ? s : "", 0, &c);
    buf_json_str(out, c.data ? c.data : "", c.len);
    buf_free(&c);
}

/* "key":"value" (or null when value is NULL or ""), with a leading comma unless first. */
static void jkv(buf_t *out, const char *key, const char *v, int first)
{
    buf_printf(out, "%s\"%s\":", first ? "" : ",", key);
    if (v && *v)
        jstr(out, v);
    else
        buf_puts(out, "null");
}

static void jtime(buf_t *out, const char *key, time_t t)
{
    char ts[32];
    if (t)
        iso_time(t, ts);
    jkv(out, key, t ? ts : NULL, 0);
}

/* --e2ee per route (lp_e2ee_policy): the three routes it can seal, then "other" (any other
 * route's POST). */
static const char *const E2EE_ROUTES[] = {"/v1/chat/completions", "/v1/completions",
                                          "/v1/embeddings", "other"};

static void e2ee_route(const lp_snap_t *s, size_t i, char *d, size_t cap)
{
    lp_e2ee_policy(s->e2ee[0] ? s->e2ee : NULL, s->verified ? &s->pins : NULL, "POST",
                   i < 3 ? E2EE_ROUTES[i] : "/v1/other", d, cap, NULL);
}

static const char *state_name(const lp_snap_t *s)
{
    return s->verified ? "verified" : "not verified";
}

void lp_status_json(buf_t *out)
{
    lp_snap_t s;
    lp_att_snapshot(&s);
    const lp_meas_t *m = &s.m;
    buf_puts(out, "{");
    jkv(out, "remote", s.remote, 1);
    jkv(out, "listen", s.listen, 0);
    jkv(out, "state", state_name(&s), 0);
    buf_printf(out, ",\"verified\":%s", s.verified ? "true" : "false");
    jkv(out, "why", s.verified ? NULL : s.why, 0);
    buf_printf(out, ",\"in_progress\":%s", s.in_progress ? "true" : "false");
    jtime(out, "verified_at", s.verified ? s.pins.verified_at : 0);
    jtime(out, "checked_at", s.checked_at);
    jtime(out, "next_check", s.next_check);
    buf_printf(out, ",\"recheck_seconds\":%ld,\"verifications\":%llu", s.recheck_s,
               (unsigned long long)s.rounds);
    buf_printf(out, ",\"last_verification\":%s",
               !s.checked_at ? "null"
               : s.last_ok   ? "\"pass\""
                             : "\"fail\"");
    buf_printf(out, ",\"generation\":%llu", (unsigned long long)s.pins.generation);
    buf_printf(out, ",\"allow_simulated\":%s,\"allow_http\":%s,\"simulated\":%s",
               s.allow_simulated ? "true" : "false", s.allow_http ? "true" : "false",
               strcmp(m->attestation_mode, "simulated") == 0 || s.pins.simulated ? "true"
                                                                                 : "false");
    buf_printf(out, ",\"summary\":{\"pass\":%zu,\"fail\":%zu,\"warn\":%zu,\"skip\":%zu}",
               check_count(&s.cl, CHK_PASS), check_count(&s.cl, CHK_FAIL),
               check_count(&s.cl, CHK_WARN), check_count(&s.cl, CHK_SKIP));
    buf_puts(out, ",\"checks\":[");
    for (size_t i = 0; i < s.cl.n; i++) {
        const check_item_t *it = &s.cl.items[i];
        buf_puts(out, i ? ",{" : "{");
        jkv(out, "id", it->id, 1);
        buf_printf(out, ",\"status\":\"%s\"", st_name(it->status));
        buf_puts(out, ",\"what\":");
        jstr(out, it->what);
        buf_puts(out, ",\"expected\":");
        jstr(out, it->expected);
        buf_puts(out, ",\"found\":");
        jstr(out, it->found);
        buf_puts(out, "}");
    }
    buf_puts(out, "],\"measurements\":{");
    jkv(out, "mrtd", m->mrtd, 1);
    static const char *const rk[] = {"rtmr0", "rtmr1", "rtmr2", "rtmr3"};
    for (int i = 0; i < 4; i++)
        jkv(out, rk[i], m->rtmr[i], 0);
    jkv(out, "mrconfigid", m->mrconfigid, 0);
    jkv(out, "compose_hash", m->compose_hash, 0);
    jkv(out, "os_image", m->os_image, 0);
    jkv(out, "tcb_status", m->tcb_status, 0);
    jkv(out, "fmspc", m->fmspc, 0);
    jkv(out, "attestation_mode", m->attestation_mode, 0);
    jkv(out, "model", m->model, 0);
    buf_puts(out, "},\"keys\":{");
    jkv(out, "tls_spki", m->tls_spki, 1);
    jkv(out, "tls_bound", m->tls_bound, 0);
    jkv(out, "tls_note", m->tls_note, 0);
    jkv(out, "ecdsa_address", m->ecdsa_address, 0);
    jkv(out, "ecdsa_public_key", m->ecdsa_public_key, 0);
    jkv(out, "ed25519_key", m->ed25519_key, 0);
    buf_puts(out, ",\"pinned\":");
    if (s.verified) {
        buf_puts(out, "{");
        jkv(out, "tls_spki", s.pins.tls_spki, 1);
        jkv(out, "curl_pin", s.pins.curl_pin, 0);
        jkv(out, "ecdsa_address", s.pins.ecdsa_address, 0);
        jkv(out, "ed25519_key", s.pins.ed25519_key, 0);
        buf_puts(out, "}");
    } else {
        buf_puts(out, "null");
    }
    buf_printf(out, "},\"gpu\":{\"count\":%d", m->gpu_count);
    jkv(out, "arch", m->gpu_arch, 0);
    jkv(out, "source", m->gpu_source, 0);
    jkv(out, "local_checks", m->gpu_local, 0);
    jkv(out, "nras", m->gpu_nras, 0);
    buf_puts(out, "},\"e2ee\":{");
    jkv(out, "mode", s.e2ee[0] ? s.e2ee : "auto", 1);
    buf_puts(out, ",\"routes\":{");
    for (size_t i = 0; i < 4; i++) {
        char d[160];
        e2ee_route(&s, i, d, sizeof d);
        jkv(out, E2EE_ROUTES[i], d, i == 0);
    }
    buf_puts(out, "}},\"policy\":{");
    jkv(out, "file", s.policy_path, 1);
    buf_puts(out, ",\"content\":");
    struct json_object *pol = s.policy_json ? json_tokener_parse(s.policy_json) : NULL;
    buf_puts(out, pol ? json_object_to_json_string_ext(pol, JSON_C_TO_STRING_PLAIN) : "null");
    json_object_put(pol);
    jkv(out, "error", s.policy_err, 0);
    buf_printf(out, "},\"answers\":{\"verified\":%llu,\"rejected\":%llu,\"last\":[",
               (unsigned long long)s.n_verified, (unsigned long long)s.n_rejected);
    for (size_t i = 0; i < s.n_answers; i++) {
        const lp_answer_t *a = &s.answers[i];
        char ts[32];
        iso_time(a->at, ts);
        buf_puts(out, i ? ",{" : "{");
        jkv(out, "at", ts, 1);
        jkv(out, "route", a->route, 0);
        jkv(out, "id", a->id, 0);
        buf_printf(out, ",\"stream\":%s,\"ok\":%s", a->stream ? "true" : "false",
                   a->check[0] ? "false" : "true");
        jkv(out, "check", a->check, 0);
        buf_puts(out, "}");
    }
    buf_puts(out, "]}}\n");
    lp_snap_free(&s);
}

/* ---- HTML ---- */

static void h(buf_t *out, const char *s)
{
    buf_t c = BUF_INIT;
    vout_clean(s ? s : "", 0, &c);
    for (const char *p = c.data ? c.data : ""; *p; p++) {
        switch (*p) {
        case '&': buf_puts(out, "&amp;"); break;
        case '<': buf_puts(out, "&lt;"); break;
        case '>': buf_puts(out, "&gt;"); break;
        case '"': buf_puts(out, "&quot;"); break;
        case '\'': buf_puts(out, "&#39;"); break;
        default: buf_append(out, p, 1);
        }
    }
    buf_free(&c);
}

/* h() line by line, keeping the newlines (the policy's pretty-printed JSON). */
static void h_lines(buf_t *out, const char *s)
{
    while (s && *s) {
        size_t n = strcspn(s, "\n");
        char *line = strndup(s, n);
        h(out, line ? line : "");
        free(line);
        s += n;
        if (*s == '\n') {
            buf_puts(out, "\n");
            s++;
        }
    }
}

/* One row of a two-column table: <tr id="row-key"><th>label</th><td>value or "not known"</td> */
static void hrow(buf_t *out, const char *key, const char *label, const char *v)
{
    buf_printf(out, "<tr id=\"%s\"><th>", key);
    h(out, label);
    buf_puts(out, "</th><td>");
    if (v && *v)
        h(out, v);
    else
        buf_puts(out, "<span class=\"none\">not known</span>");
    buf_puts(out, "</td></tr>\n");
}

static const char CSS[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:110em}"
    "h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}"
    "#state{padding:.8em 1em;font-size:1.2em;font-weight:bold;border-radius:4px}"
    "#state.ok{background:#d9f2d9;color:#114411}#state.bad{background:#f8d7d7;color:#661111}"
    "table{border-collapse:collapse;margin:.5em 0}"
    "th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}"
    "td{word-break:break-all}th{background:#f3f3f3;white-space:nowrap}"
    ".st{font-weight:bold;text-align:center;white-space:nowrap}"
    ".pass{color:#116611}.fail{color:#aa1111}.warn{color:#8a5a00}.skip{color:#666}"
    "tr.fail td{background:#fdecec}.none{color:#888}pre{background:#f6f6f6;padding:.5em}";

void lp_status_html(buf_t *out)
{
    lp_snap_t s;
    lp_att_snapshot(&s);
    const lp_meas_t *m = &s.m;
    char ts[32];
    buf_puts(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                  "<meta name=\"viewport\" content=\"width=device-width\">\n<title>");
    buf_puts(out, s.verified ? "Verified: " : "NOT VERIFIED: ");
    h(out, s.remote);
    buf_printf(out, "</title>\n<style>%s</style></head>\n<body>\n", CSS);
    buf_puts(out, "<h1>vllm-proxy-verify: local verifying proxy</h1>\n");
    buf_printf(out, "<div id=\"state\" class=\"%s\" data-state=\"%s\">", s.verified ? "ok" : "bad",
               state_name(&s));
    if (s.verified) {
        buf_puts(out, "Verified");
        if (s.pins.simulated)
            buf_puts(out, " (SIMULATED attestation, accepted with --allow-simulated: proves "
                          "nothing about hardware)");
    } else {
        buf_puts(out, "NOT VERIFIED: ");
        h(out, s.why);
    }
    buf_puts(out, "</div>\n<table id=\"summary\">\n");
    hrow(out, "remote", "remote", s.remote);
    hrow(out, "listen", "listening on", s.listen);
    if (s.verified)
        iso_time(s.pins.verified_at, ts);
    hrow(out, "verified-at", "verified at", s.verified ? ts : NULL);
    char ck[48] = "none yet";
    if (s.checked_at) {
        iso_time(s.checked_at, ts);
        snprintf(ck, sizeof ck, "%s%s", ts, s.last_ok ? "" : " (failed)");
    }
    hrow(out, "checked-at", "last verification", ck);
    if (s.next_check)
        iso_time(s.next_check, ts);
    hrow(out, "next-check", "next verification",
         s.in_progress  ? "running now"
         : s.next_check ? ts
                        : NULL);
    char n[96];
    snprintf(n, sizeof n, "%llu verified, %llu rejected", (unsigned long long)s.n_verified,
             (unsigned long long)s.n_rejected);
    hrow(out, "counts", "answers", n);
    buf_printf(out,
               "</table>\n<h2>Checklist of the last verification (%zu pass, %zu fail, "
               "%zu warn, %zu skip)</h2>\n",
               check_count(&s.cl, CHK_PASS), check_count(&s.cl, CHK_FAIL),
               check_count(&s.cl, CHK_WARN), check_count(&s.cl, CHK_SKIP));
    buf_puts(out, "<table id=\"checklist\">\n<thead><tr><th>result</th><th>check</th>"
                  "<th>what it proves</th><th>expected</th><th>found</th></tr></thead>\n<tbody>\n");
    for (size_t i = 0; i < s.cl.n; i++) {
        const check_item_t *it = &s.cl.items[i];
        const char *st = st_name(it->status);
        buf_puts(out, "<tr data-check=\"");
        h(out, it->id);
        buf_printf(out, "\" data-status=\"%s\" class=\"%s\"><td class=\"st %s\">%s</td><td>", st,
                   st, st, (unsigned)it->status < 4 ? ST_UPPER[it->status] : "FAIL");
        h(out, it->id);
        buf_puts(out, "</td><td>");
        h(out, it->what);
        buf_puts(out, "</td><td>");
        h(out, it->expected);
        buf_puts(out, "</td><td>");
        h(out, it->found);
        buf_puts(out, "</td></tr>\n");
    }
    buf_puts(out, "</tbody></table>\n<h2>Measurements</h2>\n<table id=\"measurements\">\n");
    hrow(out, "m-mrtd", "MRTD", m->mrtd);
    static const char *const rt[] = {"RTMR0", "RTMR1", "RTMR2", "RTMR3"};
    static const char *const rid[] = {"m-rtmr0", "m-rtmr1", "m-rtmr2", "m-rtmr3"};
    for (int i = 0; i < 4; i++)
        hrow(out, rid[i], rt[i], m->rtmr[i]);
    hrow(out, "m-mrconfigid", "MRCONFIGID", m->mrconfigid);
    hrow(out, "m-compose-hash", "compose hash", m->compose_hash);
    hrow(out, "m-os-image", "OS image", m->os_image);
    hrow(out, "m-tcb-status", "TCB status", m->tcb_status);
    hrow(out, "m-fmspc", "FMSPC", m->fmspc);
    hrow(out, "m-mode", "attestation mode", m->attestation_mode);
    hrow(out, "m-model", "model", m->model);
    buf_puts(out, "</table>\n<h2>Keys</h2>\n<table id=\"keys\">\n");
    hrow(out, "k-tls", "TLS key (sha256 of the SPKI the connection presented)", m->tls_spki);
    hrow(out, "k-tls-bound", "TLS key the report binds", m->tls_bound);
    hrow(out, "k-pin", "pinned (every connection must present it)",
         s.verified ? (s.pins.curl_pin[0] ? s.pins.curl_pin : "nothing: plain http") : "nothing");
    hrow(out, "k-ecdsa", "ECDSA signing address", m->ecdsa_address);
    hrow(out, "k-ecdsa-pub", "ECDSA public key", m->ecdsa_public_key);
    hrow(out, "k-ed25519", "Ed25519 signing key", m->ed25519_key);
    buf_puts(out, "</table>\n<h2>End-to-end encryption (--e2ee ");
    h(out, s.e2ee[0] ? s.e2ee : "auto");
    buf_puts(out, ")</h2>\n<table id=\"e2ee\">\n");
    for (size_t i = 0; i < 4; i++) {
        char d[160], key[16];
        e2ee_route(&s, i, d, sizeof d);
        snprintf(key, sizeof key, "e-%zu", i);
        hrow(out, key, i < 3 ? E2EE_ROUTES[i] : "other routes (POST)", d);
    }
    buf_puts(out, "</table>\n<h2>GPU evidence</h2>\n<table id=\"gpu\">\n");
    snprintf(n, sizeof n, "%d", m->gpu_count);
    hrow(out, "g-count", "GPUs in the evidence", n);
    hrow(out, "g-arch", "architecture", m->gpu_arch);
    hrow(out, "g-source", "evidence source", m->gpu_source);
    hrow(out, "g-local", "local checks (SPDM signatures, certificate chains, nonce)", m->gpu_local);
    hrow(out, "g-nras", "NRAS", m->gpu_nras[0] ? m->gpu_nras : "not asked (--nras URL)");
    buf_puts(out, "</table>\n<h2>Policy</h2>\n<div id=\"policy\">");
    if (!s.policy_path[0]) {
        buf_puts(out, "<p>No policy file (--policy FILE): no measurement or compose pins.</p>");
    } else {
        buf_puts(out, "<p>File: <code>");
        h(out, s.policy_path);
        buf_puts(out, "</code></p>");
        if (s.policy_err[0]) {
            buf_puts(out, "<p class=\"fail\">");
            h(out, s.policy_err);
            buf_puts(out, "</p>");
        }
        if (s.policy_json) {
            struct json_object *pol = json_tokener_parse(s.policy_json);
            buf_puts(out, "<pre>");
            h_lines(out, pol ? json_object_to_json_string_ext(
                                   pol, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE)
                             : s.policy_json);
            buf_puts(out, "</pre>");
            json_object_put(pol);
        }
    }
    buf_printf(out,
               "</div>\n<h2>Last answers (%llu verified, %llu rejected)</h2>\n"
               "<table id=\"answers\">\n<thead><tr><th>time</th><th>route</th><th>id</th>"
               "<th>stream</th><th>result</th></tr></thead>\n<tbody>\n",
               (unsigned long long)s.n_verified, (unsigned long long)s.n_rejected);
    for (size_t i = 0; i < s.n_answers; i++) {
        const lp_answer_t *a = &s.answers[i];
        iso_time(a->at, ts);
        buf_printf(out, "<tr data-ok=\"%s\"><td>%s</td><td>", a->check[0] ? "false" : "true", ts);
        h(out, a->route);
        buf_puts(out, "</td><td>");
        h(out, a->id);
        buf_printf(out, "</td><td>%s</td><td class=\"st %s\">", a->stream ? "yes" : "no",
                   a->check[0] ? "fail" : "pass");
        if (a->check[0]) {
            buf_puts(out, "FAIL: ");
            h(out, a->check);
        } else {
            buf_puts(out, "verified");
        }
        buf_puts(out, "</td></tr>\n");
    }
    buf_puts(out, "</tbody></table>\n<p>Prompts and answers are never shown or logged here. "
                  "<a href=\"/verification\">/verification</a> is this page as JSON.</p>\n"
                  "</body></html>\n");
    lp_snap_free(&s);
}
