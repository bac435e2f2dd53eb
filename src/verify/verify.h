/* vllm-proxy-verify internals: the options of every subcommand, the run context (one
 * checklist plus whether an input could not be fetched or parsed), and the checkers each
 * subcommand strings together. Single-threaded program; nothing here is shared.
 *
 * Exit codes: VX_OK when every line is PASS/SKIP/WARN, VX_FAIL when a check failed,
 * VX_ERROR when an input could not be fetched, read or decoded (or on a usage error). */
#ifndef VP_VERIFY_VERIFY_H
#define VP_VERIFY_VERIFY_H
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <json-c/json.h>

#include "core/buf.h"
#include "core/check.h"
#include "core/hex.h"
#include "core/json.h"
#include "tdx/quote.h"

struct json_object;

enum { VX_OK = 0, VX_FAIL = 1, VX_ERROR = 2 };

#define VX_DEFAULT_TIMEOUT 30L

typedef struct vopts {
    const char *target;                 /* URL or FILE (positional) */
    const char *token;                  /* --token, else $VLLM_PROXY_TOKEN */
    const char *algo;                   /* --signing-algo / --algo */
    const char *signing_address;        /* --signing-address: pick this all_attestations entry */
    int have_nonce;
    uint8_t nonce[32];                  /* --nonce, or the fresh random one we sent */
    const char *tls_spki;               /* --tls-spki HEX: sha256(SPKI) the client saw */
    time_t at;                          /* --at; 0 = now */
    const char *collateral_file, *pccs_url, *save_collateral;
    int no_collateral;
    const char *allow_tcb;              /* comma-separated statuses */
    int allow_simulated, json, color, no_gpu;
    int verbose;                        /* --verbose: full hex, what each check proves */
    const char *os_image_dir;           /* --os-image DIR: sha256sum.txt + metadata.json */
    /* --gpus N / --nvswitches N (or the policy's "gpus" / "nvswitches"): the evidence must
     * cover at least that many devices; -1: not asked. --report-version N: the report asked
     * for (fetching) and required (checking); 0: the report's own report_version. */
    int expect_gpus, expect_nvswitches, report_version;
    const char *expect_mrtd, *expect_rtmr[4], *expect_compose_hash, *policy_file;
    const char *nras_url, *jwks;
    const char *nras_response_file;
    const char *report_data_hex, *event_log_file, *info_file;
    const char *gpu_report_file, *gpu_certs_file;
    const char *model, *prompt;
    const char *e2ee;                   /* chat --e2ee FORMAT (dstack-v1, dstack-v2, near-v1, near-v2, aci-v2) */
    const char *e2ee_suite;             /* chat --e2ee aci-v2 --e2ee-suite x25519|secp256k1 */
    int stream;
    long max_tokens;
    const char *text, *signature, *address, *request_file, *response_file;
    const char *save_report;
    int tls_self_signed;                /* the last report came over TLS no CA vouched for */
    int bind_tls;                       /* fetching: ask for the TLS binding
                                           (include_tls_fingerprint=true; the local proxy) */
    long timeout_s;
} vopts_t;

typedef struct vctx {
    checklist_t cl;
    int error;          /* an input could not be fetched or parsed: exit VX_ERROR */
    char errmsg[512];   /* the first such error */
} vctx_t;

/* Records an input error: a FAIL line with id and sets ctx->error. */
void vx_error(vctx_t *cx, const char *id, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Appends " (SIMULATED ...)" to `found` of items [from, n) whose id starts with a prefix in
 * the NULL-terminated list. */
void vx_mark_simulated(vctx_t *cx, size_t from, const char *const *prefixes);
/* Moves every item of src into dst with `prefix` prepended to its id; src is emptied. */
void vx_merge_prefixed(checklist_t *dst, checklist_t *src, const char *prefix);

/* ---- files and encodings (main.c) ---- */
int vx_read_file(const char *path, buf_t *out, char *err, size_t errlen); /* "-" = stdin */
int vx_write_file(const char *path, const void *p, size_t n, char *err, size_t errlen);
/* Raw bytes, hex (optionally 0x, whitespace allowed) or base64 text → bytes. 0 or -1. */
int vx_decode_blob(const uint8_t *in, size_t n, buf_t *out);
/* Strict hex with optional 0x prefix into out[cap]; returns bytes or -1. */
long vx_hex(const char *s, uint8_t *out, size_t cap);
/* Unix seconds or RFC 3339 ("2025-06-20T10:16:03Z", offsets allowed). 0 or -1. */
int vx_parse_time(const char *s, time_t *out);

/* ---- HTTP (fetch.c) ---- */
typedef struct vhttp_resp {
    long status;
    buf_t body;             /* the de-chunked body bytes exactly as received */
    buf_t headers;          /* the response header lines as received */
    char spki_sha256[HEX_SIZE(32)];   /* https only: sha256 of the server leaf's SPKI, else "" */
    int tls_unverified;     /* https: no CA vouched for the certificate (vhttp_get_evidence) */
    int tls_no_ca;          /* the request failed: no CA vouches for the server certificate */
    char err[256];
} vhttp_resp_t;
/* method "GET"/"POST"; token may be NULL; ctype/body only for POST. 0 when an HTTP response
 * arrived (any status), -1 on a transport error (reason in r->err). Free r->body. */
int vhttp_request(const char *method, const char *url, const char *token, const char *ctype,
                  const void *body, size_t n, long timeout_s, vhttp_resp_t *r);
/* The same with extra request headers ("Name: value", a NULL-terminated list; may be NULL). */
int vhttp_request_h(const char *method, const char *url, const char *token, const char *ctype,
                    const char *const *extra, const void *body, size_t n, long timeout_s,
                    vhttp_resp_t *r);
/* GET of public evidence (an attestation report): over https, a certificate no CA vouches for
 * (self-signed inside the TEE) is accepted on a second try with r->tls_unverified set; the
 * caller must then trust the connection only if the attested report binds its key. */
int vhttp_get_evidence(const char *url, const char *token, long timeout_s, vhttp_resp_t *r);
/* From now on every https request to url's origin (scheme, host, port) accepts exactly this
 * server key (sha256 of its SPKI, hex), CA or not: set once an attested report bound it. */
void vhttp_pin_spki(const char *url, const char *spki_hex);
/* ... and spki_hex NULL or "": forget that pin (the local proxy before it re-verifies). */
void vhttp_resp_free(vhttp_resp_t *r);
/* The last response header block's value of header `name` (any case, trimmed) into out
 * (truncated to cap - 1). 1 when present, 0 when not. */
int vhttp_header(const vhttp_resp_t *r, const char *name, char *out, size_t cap);
/* base (no trailing '/') + path; query appended with '?' or '&'. malloc'd. */
char *vx_url_join(const char *base, const char *path, const char *query);

/* ---- TDX quote (vquote.c) ---- */
typedef struct vquote {
    buf_t bytes;        /* the decoded quote */
    tdx_quote_t q;
    int parsed;         /* tdx_quote_parse succeeded */
    int simulated;      /* the PCK chain ends in the simulated test root */
    char os_image_hash[HEX_SIZE(32)]; /* measured (os-image-hash event), for pins; or "" */
} vquote_t;
/* The quote checks shared by `quote` and `report`: parse, header, the four signature links,
 * TD attributes, collateral and TCB policy. Returns 0 (lines added; vq->parsed says whether
 * later checks can use the body). */
int vq_check_quote(vctx_t *cx, const vopts_t *o, vquote_t *vq);
void vq_free(vquote_t *vq);
/* report_data: 64-byte expected value (lines tdx.report_data). */
void vq_check_report_data(vctx_t *cx, const vquote_t *vq, const uint8_t want[64], size_t n,
                          const char *what);
/* Event log replay to RTMR0–3 (lines tdx.event_log, tdx.rtmr0..3). log is the JSON array. */
int vq_check_event_log(vctx_t *cx, const vquote_t *vq, struct json_object *log);
/* Compose hash vs info, MRCONFIGID and the compose-hash event (lines dstack.*). out_hash:
 * sha256(app_compose) as hex, or "" when the report has no app_compose. */
void vq_check_compose(vctx_t *cx, const vquote_t *vq, struct json_object *info,
                      struct json_object *log, int log_ok, char out_hash[HEX_SIZE(32)]);
/* The dstack OS image (line dstack.os_image): the os-image-hash runtime event of the replayed
 * log (equal to info's os_image_hash when stated), and whether that image is a production or a
 * dev build, from --os-image DIR (its sha256sum.txt must hash to it and list metadata.json,
 * whose is_dev says). A dev image is a WARN, a FAIL under the policy's reject_dev_os_image,
 * which also fails an image it cannot tell. Sets vq->os_image_hash. */
void vq_check_os_image(vctx_t *cx, const vopts_t *o, vquote_t *vq, struct json_object *info,
                       struct json_object *log, int log_ok);
/* dstack.gpu_event: the gpu-attestation event of dstack's GPU boot gate, replayed into RTMR3
 * with the rest of the log (log_ok), and its claims. SKIP when absent. */
void vq_check_gpu_event(vctx_t *cx, struct json_object *log, int log_ok);
/* --expect-* and --policy pins (lines pin.*). compose_hash may be NULL. */
void vq_check_pins(vctx_t *cx, const vopts_t *o, const vquote_t *vq, const char *compose_hash);
/* Lines for a GPU payload (report and gpu). nonce may be NULL. Returns the GPUs it holds. */
size_t vg_check_payload(vctx_t *cx, const vopts_t *o, const char *payload, size_t n,
                        const uint8_t *nonce, int simulated);
/* Lines for an NVSwitch payload (nvswitch.*; PPCIe machines). Returns the switches it holds. */
size_t vg_check_switches(vctx_t *cx, const vopts_t *o, const char *payload, size_t n,
                         const uint8_t *nonce, int simulated);
/* gpu.count / nvswitch.count against --gpus / --nvswitches (lines only when asked). */
void vg_check_counts(vctx_t *cx, const vopts_t *o, size_t gpus, size_t switches);
/* NRAS: submit the payload (or read --nras-response) and verify the JWTs. */
void vg_check_nras(vctx_t *cx, const vopts_t *o, const char *payload, size_t n,
                   const uint8_t *nonce);

/* ---- subcommands ---- */
int cmd_report(vctx_t *cx, vopts_t *o);
int cmd_quote(vctx_t *cx, vopts_t *o);
int cmd_gpu(vctx_t *cx, vopts_t *o);
int cmd_chat(vctx_t *cx, vopts_t *o);
int cmd_signature(vctx_t *cx, vopts_t *o);

/* ---- chat --e2ee aci-v2: the ACI attestation report (vaci.c) ---- */
typedef struct va_keyset {
    char digest[80];      /* "sha256:<hex>" computed here from the parsed keyset */
    char public_key[140]; /* the suite's e2ee_public_keys[].public_key, as served */
    char key_id[80];
} va_keyset_t;
/* GET /v1/aci/attestation?nonce=<fresh> and every check of its keyset and quote (lines
 * without a prefix: fetch, format, nonce, keyset_digest, keyset.not_after, report_data, mode,
 * tdx.*, dstack.*, pin.*, tls, keyset.e2ee_key; the caller merges them under "aci."). out
 * holds the suite's key only if the report named one; whether to use it is the caller's
 * decision from the FAIL count. 0, or -1 when the report could not be fetched or parsed. */
int va_fetch_keyset(vctx_t *cx, vopts_t *o, const char *suite, va_keyset_t *out);
/* RFC 8785 (JCS) of a parsed JSON value (integers only, no other numbers). 0 or -1. */
int va_jcs(struct json_object *o, buf_t *out);

/* ---- chat --e2ee (ve2ee.c) ---- */
/* One encrypted round trip's state: the format, our key pair, the attested server key, the
 * Dstack v2 nonce and timestamp, and what the answer decrypted to. Holds secrets: ve2ee_wipe. */
typedef struct ve2ee ve2ee_t;
/* Parses --e2ee (and --signing-algo, default ecdsa): NULL, or a usage error message. */
const char *ve2ee_parse_format(const char *name);
/* Parses --e2ee-suite (aci-v2 only): x25519 or secp256k1 (or the full suite names). NULL, or
 * a usage error message. */
const char *ve2ee_parse_suite(const char *name);
/* Whether --e2ee names ACI E2EE v2 (its keys are not signing keys). */
int ve2ee_is_aci(const char *format);
/* Fetches and checks a fresh report for the format's signing algorithm (lines merged under
 * "<algo>."), takes the server key from the checked entry and makes our key pair (line
 * e2ee.key). NULL when the report did not verify or the key is unusable: nothing is sent. */
ve2ee_t *ve2ee_setup(vctx_t *cx, vopts_t *o);
/* The signing algorithm whose key the request was sealed to; NULL for ACI (its own keys). */
const char *ve2ee_algo(const ve2ee_t *e);
const char *ve2ee_attested_address(const ve2ee_t *e);
/* The request body with the prompt sealed (line e2ee.request.plaintext), and the E2EE request
 * headers (a NULL-terminated list owned by e). 0, or -1 (line added). */
int ve2ee_build_request(vctx_t *cx, ve2ee_t *e, buf_t *body, const char *model,
                        const char *prompt, int stream, long max_tokens,
                        const char *const **headers);
/* Decrypts every encrypted field of the answer (e2ee.response.decrypt) and looks for the
 * plaintext on the wire (e2ee.response.plaintext). */
void ve2ee_check_response(vctx_t *cx, ve2ee_t *e, const buf_t *received, int stream);
/* ACI: the response headers (e2ee.response.headers: X-E2EE-*, X-ACI-Version and
 * X-ACI-Keyset-Digest naming the keyset just verified). A no-op for the other formats. */
void ve2ee_check_headers(vctx_t *cx, const ve2ee_t *e, const vhttp_resp_t *r);
/* e2ee.signature: the attested key's signature covers the ciphertext exchanged. */
void ve2ee_check_signed(vctx_t *cx, const ve2ee_t *e, int text_ok, int sig_ok, int attested_ok);
void ve2ee_free(ve2ee_t *e);
/* Checks one attestation report (parsed); used by `report` and `chat`. expect_address may be
 * NULL. */
int vr_check_report(vctx_t *cx, const vopts_t *o, struct json_object *report,
                    const char *expect_address, const char *seen_spki);
/* The attestation entry vr_check_report checks for address (NULL: the top level or the first
 * entry): the object holding signing_address, signing_public_key and intel_quote. Borrowed. */
struct json_object *vr_report_entry(struct json_object *report, const char *address);
/* The line `id` saying whether the attestation is simulated (attestation_mode or simulated in
 * the entry e, else in the report rep; rep may be e): a FAIL, or a WARN with
 * --allow-simulated. 1 when simulated. */
int vr_check_mode(vctx_t *cx, const vopts_t *o, const char *id, struct json_object *rep,
                  struct json_object *e);
/* The measured software of a quote already checked: e's event log (a JSON array, or a string
 * holding one) replayed, compose hash, OS image, GPU boot-gate event, the policy pins. */
void vr_check_measured(vctx_t *cx, const vopts_t *o, vquote_t *vq, struct json_object *e);
/* Fetches a report from base URL with a fresh nonce (stored in o->nonce). 0, or -1 (error line
 * added). *out: new reference. */
int vr_fetch_report(vctx_t *cx, vopts_t *o, const char *url, const char *algo,
                    const char *address, struct json_object **out, char spki[HEX_SIZE(32)]);

#endif
