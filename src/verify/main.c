/* vllm-proxy-verify: checks, on the client, that an answer came from an attested machine.
 * Subcommands report, chat, signature, quote, gpu (and roots); every check is one line of a
 * checklist printed as text or JSON. Exit 0 only when no required check failed, 1 when one
 * did, 2 when an input could not be fetched or parsed (or on a usage error). */
#include <ctype.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "attest/sim.h"
#include "core/hex.h"
#include "core/sha.h"
#include "nvidia/evidence.h"
#include "proxy/config.h"
#include "tdx/roots.h"
#include "verify/lp_bench.h"
#include "verify/lp_e2ee.h"
#include "verify/lproxy.h"
#include "verify/verify.h"
#include "verify/vout.h"

/* ---- context helpers ---- */

void vx_error(vctx_t *cx, const char *id, const char *what, const char *fmt, ...)
{
    char found[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(found, sizeof found, fmt, ap);
    va_end(ap);
    check_add(&cx->cl, id, CHK_FAIL, what, "", found);
    if (!cx->error)
        snprintf(cx->errmsg, sizeof cx->errmsg, "%.60s: %.440s", id, found);
    cx->error = 1;
}

void vx_mark_simulated(vctx_t *cx, size_t from, const char *const *prefixes)
{
    for (size_t i = from; i < cx->cl.n; i++) {
        check_item_t *it = &cx->cl.items[i];
        int hit = 0;
        for (const char *const *p = prefixes; *p && !hit; p++)
            hit = strncmp(it->id, *p, strlen(*p)) == 0;
        if (!hit || strstr(it->found, "SIMULATED"))
            continue;
        size_t n = strlen(it->found);
        char *f = malloc(n + 48);
        if (!f)
            continue;
        snprintf(f, n + 48, "%s%s[SIMULATED quote]", it->found, n ? " " : "");
        free(it->found);
        it->found = f;
    }
}

void vx_merge_prefixed(checklist_t *dst, checklist_t *src, const char *prefix)
{
    for (size_t i = 0; i < src->n; i++) {
        check_item_t *it = &src->items[i];
        char id[64];
        snprintf(id, sizeof id, "%s%s", prefix, it->id);
        check_add(dst, id, it->status, it->what, it->expected, it->found);
    }
}

/* ---- files and encodings ---- */

int vx_read_file(const char *path, buf_t *out, char *err, size_t errlen)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %m", path);
        return -1;
    }
    char tmp[65536];
    size_t n;
    int rc = 0;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        if (out->len + n > (256u << 20) || buf_append(out, tmp, n) != 0) {
            snprintf(err, errlen, "%s: too large", path);
            rc = -1;
            break;
        }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        rc = -1;
    }
    if (f != stdin)
        fclose(f);
    if (rc == 0 && !out->data)
        buf_append(out, "", 0), buf_reserve(out, 1);
    if (rc == 0 && out->data)
        out->data[out->len] = 0;
    return rc;
}

int vx_write_file(const char *path, const void *p, size_t n, char *err, size_t errlen)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        snprintf(err, errlen, "%s: %m", path);
        if (f)
            fclose(f);
        return -1;
    }
    if (fclose(f) != 0) {
        snprintf(err, errlen, "%s: %m", path);
        return -1;
    }
    return 0;
}

int vx_decode_blob(const uint8_t *in, size_t n, buf_t *out)
{
    int text = 1;
    for (size_t i = 0; i < n && text; i++)
        text = isprint(in[i]) || isspace(in[i]);
    if (!text || n == 0)
        return n ? buf_append(out, in, n) : -1;
    /* text: hex (0x optional) or base64, whitespace ignored */
    char *s = malloc(n + 1);
    if (!s)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!isspace(in[i]))
            s[k++] = (char)in[i];
    s[k] = 0;
    const char *p = s;
    size_t m = k;
    if (m >= 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        p += 2, m -= 2;
    int rc = -1;
    if (buf_reserve(out, m + 4) == 0) {
        long r = -1;
        if (m % 2 == 0 && hex_is_hex(p, m))
            r = hex_decode((uint8_t *)out->data + out->len, m / 2 + 1, p, m);
        else
            r = b64_decode((uint8_t *)out->data + out->len, m + 4, s, k);
        if (r > 0) {
            out->len += (size_t)r;
            rc = 0;
        }
    }
    free(s);
    return rc;
}

long vx_hex(const char *s, uint8_t *out, size_t cap)
{
    if (!s)
        return -1;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s += 2;
    size_t n = strlen(s);
    if (n == 0 || n % 2)
        return -1;
    return hex_decode(out, cap, s, n);
}

int vx_parse_time(const char *s, time_t *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s && *end == 0 && v >= 0) {
        *out = (time_t)v;
        return 0;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        p = strptime(s, "%Y-%m-%d %H:%M:%S", &tm);
    if (!p)
        return -1;
    if (*p == '.')
        for (p++; isdigit((unsigned char)*p); p++)
            ;
    long off = 0;
    if (*p == 'Z' || *p == 'z')
        p++;
    else if (*p == '+' || *p == '-') {
        /* exactly "+hh:mm": p += 6 below must not step over the terminating NUL */
        if (!isdigit((unsigned char)p[1]) || !isdigit((unsigned char)p[2]) || p[3] != ':' ||
            !isdigit((unsigned char)p[4]) || !isdigit((unsigned char)p[5]))
            return -1;
        int hh = (p[1] - '0') * 10 + (p[2] - '0'), mm = (p[4] - '0') * 10 + (p[5] - '0');
        if (hh > 23 || mm > 59)
            return -1;
        off = (hh * 3600L + mm * 60L) * (*p == '+' ? 1 : -1);
        p += 6;
    } else
        return -1;
    if (*p)
        return -1;
    *out = timegm(&tm) - off;
    return 0;
}

/* ---- usage ---- */

static const char USAGE[] =
    "usage: vllm-proxy-verify <command> [options]\n"
    "\n"
    "commands:\n"
    "  report URL|FILE   fetch an attestation report for a fresh nonce (or read a saved one)\n"
    "                    and check it end to end\n"
    "  chat URL          send a chat completion and verify its signatures and attestation\n"
    "  signature         verify one signature offline (--text --signature --address)\n"
    "  quote FILE        check a TDX quote alone (raw, hex, base64, or a GetQuote JSON)\n"
    "  gpu FILE          check NVIDIA GPU evidence alone (an NRAS-shaped payload)\n"
    "  roots             print the built-in trust anchors\n"
    "  proxy URL         a local OpenAI endpoint that relays to the remote at URL and verifies\n"
    "                    its attestation and every answer's signatures before the app sees it\n"
    "\n"
    "`vllm-proxy-verify <command> --help` lists the options of a command;\n"
    "`vllm-proxy-verify --version` prints the version.\n"
    "Exit status: 0 every required check passed, 1 a check failed, 2 could not fetch/parse.\n";

static const char OPT_COMMON[] =
    "  --json                    print the checklist as JSON\n"
    "  --verbose                 full hex values, and what each check proves and expected\n"
    "  --color                   colour even when stdout is not a terminal (the default: colour\n"
    "                            on a terminal unless NO_COLOR is set)\n"
    "  --at TIME                 verify certificates/collateral at TIME (unix seconds or RFC 3339;\n"
    "                            default now)\n"
    "  --allow-simulated         accept SIMULATED attestation (trusts the repository's test root;\n"
    "                            every affected line says so). For tests only.\n"
    "  --timeout SECONDS         HTTP timeout (default 30)\n";

static const char OPT_QUOTE[] =
    "  --collateral FILE         Intel collateral JSON (dcap-qvl QuoteCollateralV3 shape)\n"
    "  --pccs URL                fetch collateral from this PCS/PCCS (default Intel's PCS)\n"
    "  --save-collateral FILE    save the collateral used\n"
    "  --no-collateral           skip collateral (no revocation/TCB status: SKIP line)\n"
    "  --allow-tcb S1,S2         accept these TCB statuses besides UpToDate (e.g.\n"
    "                            SWHardeningNeeded, OutOfDate, NoMatch)\n"
    "  --expect-mrtd HEX, --expect-rtmr0..3 HEX, --expect-compose-hash HEX\n"
    "  --policy FILE             JSON {\"mrtd\",\"rtmr0\"..\"rtmr3\",\"mrconfigid\",\"compose_hash\",\n"
    "                            \"os_image_hash\",\"allow_tcb\",\"reject_dev_os_image\"}; each pin a\n"
    "                            hex string or an array of them (docs/VERIFY.md)\n"
    "  --os-image DIR            the dstack OS image's sha256sum.txt and metadata.json (from its\n"
    "                            release archive): tells a production image from a dev one\n";

static const char OPT_GPU[] =
    "  --no-gpu                  do not check GPU evidence (SKIP line)\n"
    "  --gpus N, --nvswitches N  the GPU / NVSwitch evidence must cover at least N devices\n"
    "                            (policy keys \"gpus\", \"nvswitches\")\n"
    "  --nras URL                also submit the GPU payload to NRAS (e.g.\n"
    "                            https://nras.attestation.nvidia.com/v3/attest/gpu) and verify its JWTs\n"
    "  --jwks FILE|URL           NRAS signing keys (default <NRAS origin>/.well-known/jwks.json)\n"
    "  --nras-response FILE      verify a saved NRAS response instead of submitting\n";

static void help(const char *cmd)
{
    if (!cmd) {
        fputs(USAGE, stdout);
        return;
    }
    if (strcmp(cmd, "report") == 0) {
        printf("usage: vllm-proxy-verify report URL|FILE [options]\n\n"
               "URL: the proxy's base URL (or the full /v1/attestation/report URL); a fresh random\n"
               "nonce is sent. FILE: a saved report JSON (\"-\" = stdin); give --nonce when it was\n"
               "requested with one.\n\n"
               "  --token T                 bearer token (default $VLLM_PROXY_TOKEN)\n"
               "  --signing-algo ecdsa|ed25519\n"
               "  --signing-address A       pick this entry of all_attestations\n"
               "  --nonce HEX               the nonce the report must echo (64 hex)\n"
               "  --tls-spki HEX            sha256 of the SPKI of the TLS certificate you saw\n"
               "  --report-version 3        ask for (URL) and require the v3 report, whose report_data\n"
               "                            binds the GPU and NVSwitch evidence\n"
               "  --save-report FILE        save the fetched report\n"
               "%s%s%s",
               OPT_QUOTE, OPT_GPU, OPT_COMMON);
    } else if (strcmp(cmd, "chat") == 0) {
        printf("usage: vllm-proxy-verify chat URL --token T [options]\n\n"
               "Sends a chat completion built here, keeps the exact bytes sent and received, fetches\n"
               "both signatures and checks text == sha256(sent):sha256(received), the ECDSA and Ed25519\n"
               "signatures, and a fresh attestation report for each signing key.\n\n"
               "  --token T                 bearer token (default $VLLM_PROXY_TOKEN)\n"
               "  --model M                 model (default: first of /v1/models)\n"
               "  --prompt TEXT             user message\n"
               "  --stream                  stream the answer (SSE)\n"
               "  --max-tokens N\n"
               "  --e2ee FORMAT             end-to-end encrypt the round trip: dstack-v1, dstack-v2,\n"
               "                            near-v1 or near-v2, to the attested key of\n"
               "                            --signing-algo ecdsa|ed25519 (default ecdsa); or aci-v2,\n"
               "                            to the key of --e2ee-suite in the keyset of\n"
               "                            /v1/aci/attestation (checked first: digest, quote, nonce);\n"
               "                            checks that the answer decrypts and no plaintext crossed\n"
               "                            the wire\n"
               "  --e2ee-suite x25519|secp256k1  with --e2ee aci-v2: the suite (default x25519)\n"
               "  --signing-algo ecdsa|ed25519  with --e2ee (not aci-v2): the key to encrypt to\n"
               "  --signing-address A       with --e2ee: encrypt to this attested key\n"
               "%s%s%s",
               OPT_QUOTE, OPT_GPU, OPT_COMMON);
    } else if (strcmp(cmd, "signature") == 0) {
        printf("usage: vllm-proxy-verify signature --text T --signature S --address A [options]\n\n"
               "  --algo ecdsa|ed25519      default: from the signature's shape\n"
               "  --request FILE --response FILE  also check T = [model:]sha256(request):sha256(response)\n"
               "  --model M                 with them: a 3-part T names model M\n"
               "%s",
               OPT_COMMON);
    } else if (strcmp(cmd, "quote") == 0) {
        printf("usage: vllm-proxy-verify quote FILE [options]\n\n"
               "FILE: raw, hex or base64 quote, or a dstack GetQuote JSON {\"quote\",\"event_log\"}.\n\n"
               "  --report-data HEX         expected report_data (zero-padded to 64 bytes)\n"
               "  --event-log FILE          replay this event log to RTMR0-3\n"
               "  --info FILE               dstack Info JSON: check the compose hash\n"
               "%s%s",
               OPT_QUOTE, OPT_COMMON);
    } else if (strcmp(cmd, "gpu") == 0) {
        printf("usage: vllm-proxy-verify gpu FILE --nonce HEX [options]\n"
               "       vllm-proxy-verify gpu --report FILE --certs FILE [--nonce HEX]\n\n"
               "FILE: an NRAS-shaped payload {\"nonce\",\"evidence_list\",\"arch\"}, an nvattest list, or a\n"
               "report whose nvidia_payload is checked. --report/--certs: one SPDM report (raw or hex\n"
               "text) with its PEM chain.\n\n"
               "  --nonce HEX               the nonce the evidence must carry\n"
               "%s%s",
               OPT_GPU, OPT_COMMON);
    } else if (strcmp(cmd, "proxy") == 0) {
        printf("usage: vllm-proxy-verify proxy URL [--listen HOST:PORT] [options]\n\n"
               "A local OpenAI endpoint for unchanged apps (OPENAI_BASE_URL=http://127.0.0.1:8741/v1).\n"
               "It verifies the remote vllm-proxy at URL as `report` does (fresh nonce; at start,\n"
               "every --recheck seconds and whenever the remote's TLS key changes), pins the attested\n"
               "TLS key and signing keys, relays /v1/* to it over connections that must present that\n"
               "key, and verifies both signatures of every answer over the exact bytes sent and\n"
               "received before the app sees it (a stream: before its final [DONE]). While the remote\n"
               "is not verified every request gets 503; an answer that fails gets 502 (a stream: an\n"
               "error event and no [DONE]). GET /verification: JSON status; GET /: HTML status page.\n\n"
               "  --listen HOST:PORT        where apps connect (default 127.0.0.1:8741; a non-loopback\n"
               "                            address only when named here, with a warning; PORT 0 picks\n"
               "                            one). Requests whose Host or Origin is not this address are\n"
               "                            refused (403)\n"
               "  --token T                 the remote's bearer token (default $VLLM_PROXY_TOKEN); it\n"
               "                            replaces the app's Authorization. Without it the app's own\n"
               "                            Authorization is forwarded\n"
               "  --local-token T           apps must send T as their bearer token (401 otherwise); it\n"
               "                            is never forwarded\n"
               "  --recheck SECONDS         re-verify the remote this often (default 300)\n"
               "  --max-connections N       local connections served at once (default 64; beyond: 503)\n"
               "  --allow-http              accept a plain-http remote (tests: nothing is pinned)\n"
               "  --e2ee auto|off|FORMAT    end-to-end encryption to the attested key, so that anything\n"
               "                            between here and the CVM sees ciphertext (docs/VERIFY.md).\n"
               "                            auto (default): POST /v1/chat/completions (dstack-v2),\n"
               "                            /v1/completions and /v1/embeddings (near-v2) encrypted,\n"
               "                            other routes in clear; a remote that refuses it fails\n"
               "                            those requests (no fallback to clear). FORMAT (dstack-v2,\n"
               "                            near-v2, dstack-v1, near-v1, optionally :ecdsa or\n"
               "                            :ed25519): every request with a body in that format, or\n"
               "                            refused (400). off: nothing encrypted. Tools, logprobs,\n"
               "                            token ids are refused (400) while encrypting\n"
               "  --signing-algo, --nonce, --tls-spki, --save-report do not apply here\n"
               "%s%s%s",
               OPT_QUOTE, OPT_GPU, OPT_COMMON);
    } else {
        fputs(USAGE, stdout);
    }
}

/* ---- main ---- */

enum {
    O_JSON = 1000, O_AT, O_ALLOW_SIM, O_TIMEOUT, O_COLLATERAL, O_PCCS, O_SAVE_COL, O_NO_COL,
    O_ALLOW_TCB, O_MRTD, O_RTMR0, O_RTMR1, O_RTMR2, O_RTMR3, O_COMPOSE, O_POLICY, O_NO_GPU,
    O_NRAS, O_JWKS, O_NRAS_RESP, O_TOKEN, O_ALGO, O_ADDRESS_PICK, O_NONCE, O_TLS, O_SAVE_REP,
    O_MODEL, O_PROMPT, O_STREAM, O_MAXTOK, O_TEXT, O_SIG, O_ADDRESS, O_REQ, O_RESP, O_RD,
    O_EVLOG, O_INFO, O_GPU_REPORT, O_GPU_CERTS, O_HELP, O_COLOR, O_E2EE, O_E2EE_SUITE,
    O_VERBOSE, O_VERSION, O_OS_IMAGE,
    O_GPUS, O_NVSWITCHES, O_REPORT_VERSION,
    O_LISTEN, O_LOCAL_TOKEN, O_ALLOW_HTTP, O_RECHECK, O_MAX_CONNS,
};

static const struct option LONGOPTS[] = {
    {"json", no_argument, 0, O_JSON},
    {"at", required_argument, 0, O_AT},
    {"allow-simulated", no_argument, 0, O_ALLOW_SIM},
    {"timeout", required_argument, 0, O_TIMEOUT},
    {"collateral", required_argument, 0, O_COLLATERAL},
    {"pccs", required_argument, 0, O_PCCS},
    {"save-collateral", required_argument, 0, O_SAVE_COL},
    {"no-collateral", no_argument, 0, O_NO_COL},
    {"allow-tcb", required_argument, 0, O_ALLOW_TCB},
    {"expect-mrtd", required_argument, 0, O_MRTD},
    {"expect-rtmr0", required_argument, 0, O_RTMR0},
    {"expect-rtmr1", required_argument, 0, O_RTMR1},
    {"expect-rtmr2", required_argument, 0, O_RTMR2},
    {"expect-rtmr3", required_argument, 0, O_RTMR3},
    {"expect-compose-hash", required_argument, 0, O_COMPOSE},
    {"policy", required_argument, 0, O_POLICY},
    {"no-gpu", no_argument, 0, O_NO_GPU},
    {"gpus", required_argument, 0, O_GPUS},
    {"nvswitches", required_argument, 0, O_NVSWITCHES},
    {"report-version", required_argument, 0, O_REPORT_VERSION},
    {"nras", required_argument, 0, O_NRAS},
    {"jwks", required_argument, 0, O_JWKS},
    {"nras-response", required_argument, 0, O_NRAS_RESP},
    {"token", required_argument, 0, O_TOKEN},
    {"signing-algo", required_argument, 0, O_ALGO},
    {"algo", required_argument, 0, O_ALGO},
    {"signing-address", required_argument, 0, O_ADDRESS_PICK},
    {"nonce", required_argument, 0, O_NONCE},
    {"tls-spki", required_argument, 0, O_TLS},
    {"save-report", required_argument, 0, O_SAVE_REP},
    {"model", required_argument, 0, O_MODEL},
    {"prompt", required_argument, 0, O_PROMPT},
    {"stream", no_argument, 0, O_STREAM},
    {"e2ee", required_argument, 0, O_E2EE},
    {"e2ee-suite", required_argument, 0, O_E2EE_SUITE},
    {"max-tokens", required_argument, 0, O_MAXTOK},
    {"text", required_argument, 0, O_TEXT},
    {"signature", required_argument, 0, O_SIG},
    {"address", required_argument, 0, O_ADDRESS},
    {"request", required_argument, 0, O_REQ},
    {"response", required_argument, 0, O_RESP},
    {"report-data", required_argument, 0, O_RD},
    {"event-log", required_argument, 0, O_EVLOG},
    {"info", required_argument, 0, O_INFO},
    {"report", required_argument, 0, O_GPU_REPORT},
    {"certs", required_argument, 0, O_GPU_CERTS},
    {"color", no_argument, 0, O_COLOR},
    {"verbose", no_argument, 0, O_VERBOSE},
    {"version", no_argument, 0, O_VERSION},
    {"os-image", required_argument, 0, O_OS_IMAGE},
    {"help", no_argument, 0, O_HELP},
    {"listen", required_argument, 0, O_LISTEN},
    {"local-token", required_argument, 0, O_LOCAL_TOKEN},
    {"allow-http", no_argument, 0, O_ALLOW_HTTP},
    {"recheck", required_argument, 0, O_RECHECK},
    {"max-connections", required_argument, 0, O_MAX_CONNS},
    {0, 0, 0, 0},
};

static void print_version(void)
{
    printf("vllm-proxy-verify %s\n", config_version());
}

static int usage_error(const char *cmd, const char *msg)
{
    fprintf(stderr, "vllm-proxy-verify%s%s: %s\n(see vllm-proxy-verify %s --help)\n", cmd ? " " : "",
            cmd ? cmd : "", msg, cmd ? cmd : "");
    return VX_ERROR;
}

/* The `proxy` subcommand's own options (the rest are in vopts_t). */
static lp_opts_t g_lp;
static char g_listen_host[256] = "127.0.0.1";
static int g_timeout_given, g_proxy_only;

/* "HOST:PORT" or "[V6]:PORT" into g_lp. 0 or -1. */
static int parse_listen(const char *s)
{
    const char *colon;
    size_t hn;
    const char *h = s;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return -1;
        h = s + 1;
        hn = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s)))
            return -1;
        hn = (size_t)(colon - s);
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (hn == 0 || hn >= sizeof g_listen_host || !colon[1] || *end || port < 0 || port > 65535)
        return -1;
    memcpy(g_listen_host, h, hn);
    g_listen_host[hn] = '\0';
    g_lp.listen_port = (int)port;
    return 0;
}

static int parse_opts(int argc, char **argv, const char *cmd, vopts_t *o)
{
    int c;
    optind = 2;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "h", LONGOPTS, NULL)) != -1) {
        switch (c) {
        case O_JSON: o->json = 1; break;
        case O_AT:
            if (vx_parse_time(optarg, &o->at) != 0)
                return usage_error(cmd, "--at: unix seconds or RFC 3339 (2025-06-20T10:16:03Z)");
            break;
        case O_ALLOW_SIM: o->allow_simulated = 1; break;
        case O_TIMEOUT: {
            char *end;
            o->timeout_s = strtol(optarg, &end, 10);
            if (!*optarg || *end || o->timeout_s <= 0) /* 0 would mean "no timeout" to curl */
                return usage_error(cmd, "--timeout: a positive number of seconds");
            g_timeout_given = 1;
            break;
        }
        case O_COLLATERAL: o->collateral_file = optarg; break;
        case O_PCCS: o->pccs_url = optarg; break;
        case O_SAVE_COL: o->save_collateral = optarg; break;
        case O_NO_COL: o->no_collateral = 1; break;
        case O_ALLOW_TCB: o->allow_tcb = optarg; break;
        case O_MRTD: o->expect_mrtd = optarg; break;
        case O_RTMR0: case O_RTMR1: case O_RTMR2: case O_RTMR3:
            o->expect_rtmr[c - O_RTMR0] = optarg;
            break;
        case O_COMPOSE: o->expect_compose_hash = optarg; break;
        case O_POLICY: o->policy_file = optarg; break;
        case O_NO_GPU: o->no_gpu = 1; break;
        case O_GPUS: case O_NVSWITCHES: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 0 || v > 64)
                return usage_error(cmd, c == O_GPUS ? "--gpus: 0 to 64" : "--nvswitches: 0 to 64");
            *(c == O_GPUS ? &o->expect_gpus : &o->expect_nvswitches) = (int)v;
            break;
        }
        case O_REPORT_VERSION:
            if (strcmp(optarg, "1") && strcmp(optarg, "3"))
                return usage_error(cmd, "--report-version: 1 or 3");
            o->report_version = optarg[0] == '3' ? 3 : 0;
            break;
        case O_NRAS: o->nras_url = optarg; break;
        case O_JWKS: o->jwks = optarg; break;
        case O_NRAS_RESP: o->nras_response_file = optarg; break;
        case O_TOKEN: o->token = optarg; break;
        case O_ALGO:
            if (strcmp(optarg, "ecdsa") && strcmp(optarg, "ed25519"))
                return usage_error(cmd, "--signing-algo/--algo: ecdsa or ed25519");
            o->algo = optarg;
            break;
        case O_ADDRESS_PICK: o->signing_address = optarg; break;
        case O_NONCE:
            if (vx_hex(optarg, o->nonce, 32) != 32)
                return usage_error(cmd, "--nonce: 64 hex digits");
            o->have_nonce = 1;
            break;
        case O_TLS: o->tls_spki = optarg; break;
        case O_SAVE_REP: o->save_report = optarg; break;
        case O_MODEL: o->model = optarg; break;
        case O_PROMPT: o->prompt = optarg; break;
        case O_STREAM: o->stream = 1; break;
        case O_E2EE: {
            if (strcmp(cmd, "proxy") == 0) {
                lp_e2ee_err_t ee;
                char d[64];
                if (strcmp(optarg, "auto") && strcmp(optarg, "off") &&
                    lp_e2ee_plan(optarg, NULL, "/v1/chat/completions", d, sizeof d, &ee) != 0)
                    return usage_error(cmd, "--e2ee: auto, off, dstack-v2, near-v2, dstack-v1 or "
                                            "near-v1, optionally with :ecdsa or :ed25519");
                g_lp.e2ee = optarg;
                break;
            }
            const char *bad = ve2ee_parse_format(optarg);
            if (bad)
                return usage_error(cmd, bad);
            o->e2ee = optarg;
            break;
        }
        case O_E2EE_SUITE: {
            const char *bad = ve2ee_parse_suite(optarg);
            if (bad)
                return usage_error(cmd, bad);
            o->e2ee_suite = optarg;
            break;
        }
        case O_MAXTOK: o->max_tokens = strtol(optarg, NULL, 10); break;
        case O_TEXT: o->text = optarg; break;
        case O_SIG: o->signature = optarg; break;
        case O_ADDRESS: o->address = optarg; break;
        case O_REQ: o->request_file = optarg; break;
        case O_RESP: o->response_file = optarg; break;
        case O_RD: o->report_data_hex = optarg; break;
        case O_EVLOG: o->event_log_file = optarg; break;
        case O_INFO: o->info_file = optarg; break;
        case O_GPU_REPORT: o->gpu_report_file = optarg; break;
        case O_GPU_CERTS: o->gpu_certs_file = optarg; break;
        case O_COLOR: o->color = 1; break;
        case O_VERBOSE: o->verbose = 1; break;
        case O_OS_IMAGE: o->os_image_dir = optarg; break;
        case O_LISTEN:
            if (parse_listen(optarg) != 0)
                return usage_error(cmd, "--listen: HOST:PORT or [IPV6]:PORT");
            g_proxy_only = 1;
            break;
        case O_LOCAL_TOKEN:
            if (!*optarg)
                return usage_error(cmd, "--local-token: not empty");
            g_lp.local_token = optarg;
            g_proxy_only = 1;
            break;
        case O_ALLOW_HTTP: g_lp.allow_http = 1; g_proxy_only = 1; break;
        case O_RECHECK: case O_MAX_CONNS: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > (c == O_RECHECK ? 86400 : 4096))
                return usage_error(cmd, c == O_RECHECK ? "--recheck: 1 to 86400 seconds"
                                                       : "--max-connections: 1 to 4096");
            if (c == O_RECHECK)
                g_lp.recheck_s = v;
            else
                g_lp.max_conns = (int)v;
            g_proxy_only = 1;
            break;
        }
        case O_VERSION: print_version(); exit(VX_OK);
        case 'h': case O_HELP: help(cmd); exit(VX_OK);
        default: return usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc)
        o->target = argv[optind++];
    if (optind < argc)
        return usage_error(cmd, "too many arguments");
    return 0;
}

/* "allow_tcb" from the policy file, when --allow-tcb is not given. Leaks one small string. */
static void policy_allow_tcb(vopts_t *o)
{
    if (!o->policy_file || o->allow_tcb)
        return;
    struct json_object *p = json_object_from_file(o->policy_file), *v;
    if (p && json_object_object_get_ex(p, "allow_tcb", &v)) {
        buf_t b = BUF_INIT;
        if (json_object_is_type(v, json_type_string))
            buf_puts(&b, json_object_get_string(v));
        else if (json_object_is_type(v, json_type_array))
            for (size_t i = 0; i < json_object_array_length(v); i++)
                buf_printf(&b, "%s%s", i ? "," : "",
                           json_object_get_string(json_object_array_get_idx(v, i)));
        o->allow_tcb = b.data;
    }
    json_object_put(p);
}

/* "gpus" and "nvswitches" from the policy file, when --gpus / --nvswitches are not given
 * (an integer 0..64; nvswitches may also be true: at least one). 0, or -1 when one of them
 * has another type (the policy would pin nothing). */
static int policy_counts(vopts_t *o)
{
    if (!o->policy_file)
        return 0;
    struct json_object *p = json_object_from_file(o->policy_file), *v;
    int rc = 0;
    if (p && json_object_object_get_ex(p, "gpus", &v)) {
        if (!json_object_is_type(v, json_type_int) || json_object_get_int(v) < 0 ||
            json_object_get_int(v) > 64)
            rc = -1;
        else if (o->expect_gpus < 0)
            o->expect_gpus = json_object_get_int(v);
    }
    if (p && json_object_object_get_ex(p, "nvswitches", &v)) {
        if (json_object_is_type(v, json_type_boolean)) {
            if (o->expect_nvswitches < 0 && json_object_get_boolean(v))
                o->expect_nvswitches = 1;
        } else if (!json_object_is_type(v, json_type_int) || json_object_get_int(v) < 0 ||
                   json_object_get_int(v) > 64) {
            rc = -1;
        } else if (o->expect_nvswitches < 0) {
            o->expect_nvswitches = json_object_get_int(v);
        }
    }
    json_object_put(p);
    return rc;
}

static int cmd_roots(vctx_t *cx, vopts_t *o)
{
    (void)o;
    char h[HEX_SIZE(32)];
    sha256_hex(tdx_intel_sgx_root_der, tdx_intel_sgx_root_der_len, h);
    check_addf(&cx->cl, "roots.intel", CHK_PASS, "built-in Intel SGX Root CA (DER)",
               "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3",
               "sha256 %s, %zu bytes", h, tdx_intel_sgx_root_der_len);
    check_add(&cx->cl, "roots.nvidia", CHK_PASS, "built-in NVIDIA Device Identity CA (PEM)", "",
              "nvtrust verifier_device_root.pem");
    check_add(&cx->cl, "roots.simulated", CHK_SKIP,
              "repository test root, trusted only with --allow-simulated", "",
              "vllm-proxy SIMULATED TDX Root CA - NOT FOR PRODUCTION");
    return 0;
}

static void render(const vctx_t *cx, const vopts_t *o, const char *cmd, int code)
{
    buf_t out = BUF_INIT;
    if (o->json) {
        static const char *const res[] = {"pass", "fail", "error"};
        buf_printf(&out, "{\"command\":\"%s\",\"result\":\"%s\",\"exit_code\":%d,", cmd, res[code],
                   code);
        buf_printf(&out, "\"passed\":%zu,\"failed\":%zu,\"skipped\":%zu,\"warnings\":%zu,",
                   check_count(&cx->cl, CHK_PASS), check_count(&cx->cl, CHK_FAIL),
                   check_count(&cx->cl, CHK_SKIP), check_count(&cx->cl, CHK_WARN));
        buf_puts(&out, "\"simulated_allowed\":");
        buf_puts(&out, o->allow_simulated ? "true" : "false");
        if (cx->error) {
            buf_puts(&out, ",\"error\":");
            buf_json_str(&out, cx->errmsg, strlen(cx->errmsg));
        }
        buf_puts(&out, ",\"checks\":");
        check_render_json(&cx->cl, &out);
        buf_puts(&out, "}\n");
    } else {
        vout_opts_t vo = {cmd, code, o->color, o->verbose, o->allow_simulated,
                          strcmp(cmd, "report") == 0 || strcmp(cmd, "chat") == 0,
                          cx->error ? cx->errmsg : NULL};
        vout_render(&cx->cl, &vo, &out);
    }
    fwrite(out.data, 1, out.len, stdout);
    buf_free(&out);
}

/* `proxy URL`: the options as for report, then the local proxy's own; runs until a signal. */
static int main_proxy(int argc, char **argv)
{
    const char *cmd = "proxy";
    static vopts_t o;
    memset(&o, 0, sizeof o);
    o.timeout_s = VX_DEFAULT_TIMEOUT;
    o.expect_gpus = o.expect_nvswitches = -1;
    g_lp.listen_port = 8741;
    int rc = parse_opts(argc, argv, cmd, &o);
    if (rc != 0)
        return rc;
    if (!o.token)
        o.token = getenv("VLLM_PROXY_TOKEN");
    if (!o.target)
        return usage_error(cmd, "missing the remote's URL");
    int https = strncasecmp(o.target, "https://", 8) == 0;
    if (!https && strncasecmp(o.target, "http://", 7) != 0)
        return usage_error(cmd, "the remote's URL must be https://HOST[:PORT]");
    if (!https && !g_lp.allow_http)
        return usage_error(cmd, "the remote's URL is http://: nothing could be pinned; it needs "
                                "--allow-http (tests only)");
    if (o.algo || o.have_nonce || o.tls_spki || o.save_report || o.signing_address)
        return usage_error(cmd, "--signing-algo, --signing-address, --nonce, --tls-spki and "
                                "--save-report do not apply to proxy");
    policy_allow_tcb(&o);
    if (policy_counts(&o) != 0)
        return usage_error(cmd, "--policy: \"gpus\" must be an integer 0..64, \"nvswitches\" "
                                "an integer 0..64 or a boolean");
    if (!https)
        fprintf(stderr, "vllm-proxy-verify proxy: WARNING: --allow-http: the remote is plain http, "
                        "no TLS key is pinned (tests only)\n");
    g_lp.remote = o.target;
    g_lp.listen_host = g_listen_host;
    g_lp.token = o.token;
    g_lp.allow_simulated = o.allow_simulated;
    if (!g_lp.recheck_s)
        g_lp.recheck_s = 300;
    if (!g_lp.max_conns)
        g_lp.max_conns = 64;
    /* an exchange with the remote: no byte for this long fails it (a stream may last longer) */
    g_lp.timeout_s = g_timeout_given ? o.timeout_s : 120;
    g_lp.vo = &o;
    return cmd_proxy(&o, &g_lp);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)) {
        print_version();
        return VX_OK;
    }
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        help(argc > 2 ? argv[2] : NULL);
        return argc < 2 ? VX_ERROR : VX_OK;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "proxy") == 0)
        return main_proxy(argc, argv);
    if (strcmp(cmd, "bench-local-proxy") == 0) /* bench/local-proxy.mjs's baselines */
        return lp_bench_main(argc - 1, argv + 1);
    static const struct { const char *name; int (*fn)(vctx_t *, vopts_t *); int target; } CMDS[] = {
        {"report", cmd_report, 1}, {"chat", cmd_chat, 1}, {"signature", cmd_signature, 0},
        {"quote", cmd_quote, 1},   {"gpu", cmd_gpu, 2},   {"roots", cmd_roots, 0},
    };
    int k = -1;
    for (size_t i = 0; i < sizeof CMDS / sizeof CMDS[0]; i++)
        if (strcmp(cmd, CMDS[i].name) == 0)
            k = (int)i;
    if (k < 0)
        return usage_error(NULL, "unknown command (report, chat, signature, quote, gpu, roots, proxy)");
    vopts_t o;
    memset(&o, 0, sizeof o);
    o.timeout_s = VX_DEFAULT_TIMEOUT;
    o.expect_gpus = o.expect_nvswitches = -1;
    const char *no_color = getenv("NO_COLOR"); /* no-color.org: set and not empty */
    o.color = isatty(1) && !(no_color && *no_color);
    int rc = parse_opts(argc, argv, cmd, &o);
    if (rc != 0)
        return rc;
    if (!o.token)
        o.token = getenv("VLLM_PROXY_TOKEN");
    if (g_proxy_only)
        return usage_error(cmd, "--listen, --local-token, --allow-http, --recheck and "
                                "--max-connections are options of proxy");
    if (CMDS[k].target == 1 && !o.target)
        return usage_error(cmd, "missing URL or FILE");
    if (CMDS[k].target == 2 && !o.target && !o.gpu_report_file)
        return usage_error(cmd, "missing FILE (or --report and --certs)");
    if (o.gpu_report_file && !o.gpu_certs_file)
        return usage_error(cmd, "--report needs --certs");
    if (strcmp(cmd, "chat") == 0 && strncmp(o.target, "http", 4) != 0)
        return usage_error(cmd, "chat needs the proxy's URL");
    if (o.e2ee && strcmp(cmd, "chat") != 0)
        return usage_error(cmd, "--e2ee is an option of chat");
    if (o.e2ee_suite && !ve2ee_is_aci(o.e2ee))
        return usage_error(cmd, "--e2ee-suite goes with --e2ee aci-v2");
    if (ve2ee_is_aci(o.e2ee) && strcmp(cmd, "chat") == 0 && o.algo)
        return usage_error(cmd, "--signing-algo does not apply to --e2ee aci-v2 (its keys are not "
                                "signing keys): use --e2ee-suite x25519|secp256k1");
    policy_allow_tcb(&o);
    if (policy_counts(&o) != 0)
        return usage_error(cmd, "--policy: \"gpus\" must be an integer 0..64, \"nvswitches\" "
                                "an integer 0..64 or a boolean");

    if (o.target)
        vx_fact(VF_TARGET, "%s", o.target);
    char at[64];
    time_t now = o.at ? o.at : time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
    vx_fact(VF_TIME, "%s%s", at, o.at ? " (--at)" : "");

    vctx_t cx = {CHECKLIST_INIT, 0, ""};
    CMDS[k].fn(&cx, &o);
    int code = cx.error ? VX_ERROR : check_count(&cx.cl, CHK_FAIL) ? VX_FAIL : VX_OK;
    if (cx.cl.n == 0 && !cx.error) {
        check_add(&cx.cl, "verify", CHK_FAIL, "at least one check ran", "", "nothing checked");
        code = VX_FAIL;
    }
    render(&cx, &o, cmd, code);
    check_free(&cx.cl);
    vx_facts_free();
    return code;
}
