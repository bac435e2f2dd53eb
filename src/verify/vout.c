/* The verifier's text output for people (vout.h): header facts, check lines grouped by layer,
 * hex shortening, control-byte cleaning and the 100-column layout. */
#include "verify/vout.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- facts ---- */

#define MAX_FACTS 24
#define MAX_FACT_VALUES 3

static struct fact {
    char key[32];
    char *val;
    int nvals;
} g_facts[MAX_FACTS];
static size_t g_nfacts;

void vx_fact(const char *key, const char *fmt, ...)
{
    char v[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v, sizeof v, fmt, ap);
    va_end(ap);
    if (!v[0])
        return;
    for (size_t i = 0; i < g_nfacts; i++) {
        struct fact *f = &g_facts[i];
        if (strcmp(f->key, key) != 0)
            continue;
        if (f->nvals >= MAX_FACT_VALUES)
            return;
        /* already listed (as a whole value between ", ") */
        size_t vl = strlen(v);
        for (const char *p = f->val; (p = strstr(p, v)) != NULL; p++)
            if ((p == f->val || (p >= f->val + 2 && p[-2] == ',' && p[-1] == ' ')) &&
                (p[vl] == 0 || (p[vl] == ',' && p[vl + 1] == ' ')))
                return;
        size_t n = strlen(f->val) + 2 + vl + 1;
        char *nv = malloc(n);
        if (!nv)
            return;
        snprintf(nv, n, "%s, %s", f->val, v);
        free(f->val);
        f->val = nv;
        f->nvals++;
        return;
    }
    if (g_nfacts == MAX_FACTS)
        return;
    struct fact *f = &g_facts[g_nfacts];
    snprintf(f->key, sizeof f->key, "%s", key);
    if (!(f->val = strdup(v)))
        return;
    f->nvals = 1;
    g_nfacts++;
}

const char *vx_fact_get(const char *key)
{
    for (size_t i = 0; i < g_nfacts; i++)
        if (strcmp(g_facts[i].key, key) == 0)
            return g_facts[i].val;
    return NULL;
}

void vx_facts_free(void)
{
    for (size_t i = 0; i < g_nfacts; i++)
        free(g_facts[i].val);
    g_nfacts = 0;
}

/* ---- text cleaning ---- */

static int is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Length of the valid UTF-8 sequence at p (1..4) that is not a C1 control, else 0. */
static size_t utf8_ok(const unsigned char *p)
{
    unsigned c = p[0];
    size_t n;
    unsigned cp;
    if (c < 0xC2 || c > 0xF4)
        return 0;
    n = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    cp = c & (n == 2 ? 0x1Fu : n == 3 ? 0x0Fu : 0x07u);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3Fu);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || (cp >= 0x80 && cp <= 0x9F))
        return 0;
    return n;
}

void vout_clean(const char *s, int shorten, buf_t *out)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        if (shorten && is_hex(*p)) {
            size_t n = 0;
            while (is_hex(p[n]))
                n++;
            /* a whole token: not the tail of a word such as "sha256" */
            const unsigned char *s0 = (const unsigned char *)s;
            int word =
                p != s0 && ((p[-1] >= 'g' && p[-1] <= 'z') || (p[-1] >= 'G' && p[-1] <= 'Z'));
            if (word && p[-1] == 'x' && p - s0 >= 2 && p[-2] == '0' &&
                (p - s0 == 2 || !((p[-3] >= '0' && p[-3] <= '9') || (p[-3] | 0x20) >= 'a')))
                word = 0; /* 0x-prefixed */
            if (n >= 24 && !word) {
                buf_append(out, p, 8);
                buf_puts(out, "\xE2\x80\xA6"); /* … */
                buf_append(out, p + n - 4, 4);
            } else {
                buf_append(out, p, n);
            }
            p += n;
            continue;
        }
        if (*p == '\n' || *p == '\t' || *p == '\r') {
            buf_puts(out, " ");
            p++;
        } else if (*p < 0x20 || *p == 0x7f) {
            buf_puts(out, "?");
            p++;
        } else if (*p < 0x80) {
            buf_append(out, p, 1);
            p++;
        } else {
            size_t n = utf8_ok(p);
            if (n) {
                buf_append(out, p, n);
                p += n;
            } else {
                buf_puts(out, "?");
                p++;
            }
        }
    }
    if (!out->data)
        buf_puts(out, "");
}

/* Columns of clean UTF-8 text: one per code point. */
static size_t cols(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* Byte length of the longest prefix of s[0..n) that fits w columns. */
static size_t fit(const char *s, size_t n, size_t w)
{
    size_t c = 0, i = 0;
    while (i < n) {
        size_t j = i + 1;
        while (j < n && ((unsigned char)s[j] & 0xC0) == 0x80)
            j++;
        if (c + 1 > w)
            break;
        c++;
        i = j;
    }
    return i;
}

/* Appends clean text s cut to w columns ("…" marks a cut). */
static void put_cut(buf_t *out, const char *s, size_t w)
{
    size_t n = strlen(s);
    if (cols(s, n) <= w) {
        buf_append(out, s, n);
        return;
    }
    if (w == 0)
        return;
    buf_append(out, s, fit(s, n, w - 1));
    buf_puts(out, "\xE2\x80\xA6");
}

/* Appends clean text s over lines: the first w0 columns on the current line, then lines of
 * `indent` spaces and at most VOUT_WIDTH - indent columns; breaks at a space when one is in
 * the last third of the line, else anywhere. Ends with a newline. */
static void put_wrapped(buf_t *out, const char *s, size_t w0, size_t indent)
{
    size_t n = strlen(s), w = w0;
    int first = 1;
    while (n > 0 || first) {
        if (!first)
            buf_printf(out, "%*s", (int)indent, "");
        size_t k = fit(s, n, w);
        if (k < n) {
            size_t sp = k;
            while (sp > 0 && s[sp] != ' ')
                sp--;
            if (sp > 0 && cols(s, sp) * 3 >= w * 2)
                k = sp;
        }
        buf_append(out, s, k);
        buf_puts(out, "\n");
        s += k;
        n -= k;
        while (n > 0 && *s == ' ')
            s++, n--;
        first = 0;
        w = VOUT_WIDTH - indent;
    }
}

/* ---- groups and names ---- */

enum { G_REPORT, G_CPU, G_GPU, G_KEYS, G_ANSWER, G_OTHER, G_N };

static const char *const GROUP_TITLE[G_N] = {
    "Report",
    "CPU TEE (Intel TDX quote, measured software)",
    "GPU (NVIDIA evidence)",
    "Keys and binding",
    "Answer",
    "Other",
};

/* Pattern: '*' matches one id segment (no '.'), '#' one or more digits; the name's '*' or '#'
 * is replaced by what matched. A NULL name: from the check's `what`. */
static const struct {
    const char *pat;
    int group;
    const char *name;
} NAMES[] = {
    {"report.fetch", G_REPORT, "report fetched, fresh nonce"},
    {"report.load", G_REPORT, "report file read"},
    {"report.save", G_REPORT, "report saved"},
    {"report.format", G_REPORT, "report has what is checked"},
    {"report.schema", G_REPORT, "report fields all known"},
    {"report.mode", G_REPORT, "real hardware, not simulated"},
    {"report.signing_address", G_KEYS, "report is for the key asked"},
    {"report.nonce", G_KEYS, "fresh: report echoes our nonce"},
    {"report.nonce_source", G_KEYS, "server used our nonce"},
    {"report.signing_key", G_KEYS, "public key matches the address"},
    {"report.tls", G_KEYS, "TLS key is the attested key"},
    {"tdx.report_data", G_KEYS, "quote binds the key and nonce"},
    {"tdx.quote.load", G_CPU, "quote file read"},
    {"tdx.quote.decode", G_CPU, "quote decodes"},
    {"tdx.quote.parse", G_CPU, "quote structure"},
    {"tdx.quote.header", G_CPU, "quote header: TDX, Intel QE"},
    {"tdx.quote.signature", G_CPU, "quote signed by attestation key"},
    {"tdx.quote.qe_binding", G_CPU, "Intel QE vouches for that key"},
    {"tdx.quote.qe_signature", G_CPU, "QE report signed by PCK cert"},
    {"tdx.quote.pck_chain", G_CPU, "PCK chain to the Intel root"},
    {"tdx.td_attributes", G_CPU, "not a debug TD"},
    {"tdx.collateral", G_CPU, "Intel collateral"},
    {"tdx.collateral.load", G_CPU, "collateral file read"},
    {"tdx.collateral.fetch", G_CPU, "collateral fetched"},
    {"tdx.collateral.save", G_CPU, "collateral saved"},
    {"tdx.collateral.parse", G_CPU, "collateral parses"},
    {"tdx.collateral.*", G_CPU, "collateral: *"},
    {"tdx.collateral.*.chain", G_CPU, "collateral: * issuer chain"},
    {"tdx.collateral.*.signature", G_CPU, "collateral: * signature"},
    {"tdx.collateral.*.validity", G_CPU, "collateral: * is current"},
    {"tdx.collateral.*.match", G_CPU, "collateral: * matches"},
    {"tdx.collateral.*.tcb", G_CPU, "collateral: * TCB level"},
    {"tdx.collateral.*.revocation", G_CPU, "collateral: * not revoked"},
    {"tdx.collateral.*.extension", G_CPU, "collateral: * extension"},
    {"tdx.collateral.*.fmspc", G_CPU, "collateral: * FMSPC"},
    {"tdx.tcb.policy", G_CPU, "TCB status acceptable"},
    {"tdx.event_log", G_CPU, "event log well-formed"},
    {"tdx.event_log.load", G_CPU, "event log file read"},
    {"tdx.rtmr#", G_CPU, "event log replays to RTMR#"},
    {"dstack.compose_hash", G_CPU, "compose file hash"},
    {"dstack.mrconfigid", G_CPU, "MRCONFIGID binds compose file"},
    {"dstack.compose_event", G_CPU, "compose-hash event in the log"},
    {"dstack.os_image", G_CPU, "OS image (production or dev)"},
    {"dstack.info.load", G_CPU, "info file read"},
    {"pin.policy", G_CPU, "policy file"},
    {"pin.mrtd", G_CPU, "pinned MRTD"},
    {"pin.rtmr#", G_CPU, "pinned RTMR#"},
    {"pin.mrconfigid", G_CPU, "pinned MRCONFIGID"},
    {"pin.compose_hash", G_CPU, "pinned compose hash"},
    {"pin.os_image_hash", G_CPU, "pinned OS image hash"},
    {"gpu", G_GPU, "GPU evidence"},
    {"gpu.load", G_GPU, "GPU files read"},
    {"gpu.nonce", G_GPU, "GPU evidence is fresh"},
    {"gpu.evidence", G_GPU, "GPU signature and chain"},
    {"gpu.payload.format", G_GPU, "GPU payload format"},
    {"gpu.payload.arch", G_GPU, "GPU architecture"},
    {"gpu.payload.evidence_list", G_GPU, "GPU evidence list"},
    {"gpu.payload.nonce", G_GPU, "GPU payload carries our nonce"},
    {"gpu.#.evidence", G_GPU, "GPU #: SPDM report parses"},
    {"gpu.#.cert_chain", G_GPU, "GPU #: chain to NVIDIA root"},
    {"gpu.#.spdm_signature", G_GPU, "GPU #: measurements signed"},
    {"gpu.#.nonce", G_GPU, "GPU #: report carries the nonce"},
    {"gpu.count", G_GPU, "expected GPU count"},
    {"dstack.gpu_event", G_GPU, "GPU boot gate event in RTMR3"},
    {"nvswitch.count", G_GPU, "expected NVSwitch count"},
    {"nvswitch.evidence", G_GPU, "NVSwitch signature and chain"},
    {"nvswitch.payload.format", G_GPU, "NVSwitch payload format"},
    {"nvswitch.payload.arch", G_GPU, "NVSwitch architecture"},
    {"nvswitch.payload.evidence_list", G_GPU, "NVSwitch evidence list"},
    {"nvswitch.payload.nonce", G_GPU, "NVSwitch payload has our nonce"},
    {"nvswitch.#.evidence", G_GPU, "NVSwitch #: SPDM report parses"},
    {"nvswitch.#.cert_chain", G_GPU, "NVSwitch #: chain to root"},
    {"nvswitch.#.spdm_signature", G_GPU, "NVSwitch #: measurements signed"},
    {"nvswitch.#.nonce", G_GPU, "NVSwitch #: nonce in report"},
    {"nras", G_GPU, "NRAS verdict"},
    {"nras.fetch", G_GPU, "NRAS answered"},
    {"nras.jwks", G_GPU, "NRAS signing keys loaded"},
    {"nras.format", G_GPU, "NRAS response format"},
    {"nras.submods", G_GPU, "NRAS per-GPU digests"},
    {"chat.model", G_ANSWER, "model name"},
    {"chat.request", G_ANSWER, "chat completion"},
    {"chat.id", G_ANSWER, "chat id in the answer"},
    {"chat.*.fetch", G_ANSWER, "* signature fetched"},
    {"chat.*.text", G_ANSWER, "* text = hashes of bytes"},
    {"chat.*.model", G_ANSWER, "* model in signed text"},
    {"chat.*.signature", G_ANSWER, "* signature verifies"},
    {"chat.*.attested", G_ANSWER, "* signer is attested key"},
    {"sig.usage", G_ANSWER, "arguments"},
    {"sig.text", G_ANSWER, "signed text = files' hashes"},
    {"sig.model", G_ANSWER, "model in the signed text"},
    {"sig.verify", G_ANSWER, "signature verifies"},
    {"e2ee.key", G_ANSWER, "prompt sealed to attested key"},
    {"e2ee.request.plaintext", G_ANSWER, "no prompt in clear on the wire"},
    {"e2ee.response.decrypt", G_ANSWER, "answer decrypts with our key"},
    {"e2ee.response.plaintext", G_ANSWER, "no answer in clear on the wire"},
    {"e2ee.response.headers", G_ANSWER, "E2EE response headers"},
    {"e2ee.signature", G_ANSWER, "signature covers the ciphertext"},
    /* the ACI report's lines (merged under "aci.") */
    {"fetch", G_REPORT, "ACI report fetched"},
    {"format", G_REPORT, "ACI report format"},
    {"mode", G_REPORT, "real hardware, not simulated"},
    {"nonce", G_KEYS, "fresh: report echoes our nonce"},
    {"keyset_digest", G_KEYS, "keyset digest recomputed"},
    {"keyset.not_after", G_KEYS, "keyset not expired"},
    {"keyset.e2ee_key", G_KEYS, "keyset has the suite's key"},
    {"report_data", G_KEYS, "quote binds keyset and nonce"},
    {"tls", G_KEYS, "TLS key listed in the keyset"},
    {"roots.intel", G_CPU, "built-in Intel root"},
    {"roots.nvidia", G_GPU, "built-in NVIDIA root"},
    {"roots.simulated", G_OTHER, "simulated test root"},
    {"verify", G_OTHER, "checks ran"},
};

/* The prefixes sub-checklists are merged under (chat's per-key reports, ACI). */
static const char *const PREFIXES[] = {"ecdsa.", "ed25519.", "aci."};

static size_t prefix_len(const char *id)
{
    for (size_t i = 0; i < sizeof PREFIXES / sizeof PREFIXES[0]; i++) {
        size_t n = strlen(PREFIXES[i]);
        if (strncmp(id, PREFIXES[i], n) == 0)
            return n;
    }
    return 0;
}

/* Matches id against pat; the matched '*'/'#' text goes to cap. */
static int match(const char *pat, const char *id, char *cap, size_t capn)
{
    cap[0] = 0;
    while (*pat) {
        if (*pat == '*' || *pat == '#') {
            size_t n = 0;
            while (id[n] && id[n] != '.' && (*pat == '*' || (id[n] >= '0' && id[n] <= '9')))
                n++;
            if (n == 0)
                return 0;
            snprintf(cap, capn, "%.*s", (int)n, id);
            id += n;
            pat++;
            continue;
        }
        if (*pat != *id)
            return 0;
        pat++;
        id++;
    }
    return *id == 0;
}

static int group_of_first(const char *id)
{
    static const struct {
        const char *seg;
        int g;
    } F[] = {
        {"report", G_REPORT}, {"tdx", G_CPU},    {"dstack", G_CPU},   {"pin", G_CPU},
        {"gpu", G_GPU},       {"nras", G_GPU},   {"nvswitch", G_GPU}, {"switch", G_GPU},
        {"chat", G_ANSWER},   {"sig", G_ANSWER}, {"e2ee", G_ANSWER},  {"keyset", G_KEYS},
    };
    size_t n = strcspn(id, ".");
    for (size_t i = 0; i < sizeof F / sizeof F[0]; i++)
        if (strlen(F[i].seg) == n && strncmp(id, F[i].seg, n) == 0)
            return F[i].g;
    return G_OTHER;
}

#define NAME_W 31

/* The line's group and plain-language name (clean text, at most NAME_W columns). */
static int describe(const check_item_t *it, char *name, size_t cap)
{
    const char *id = it->id + prefix_len(it->id);
    char got[64];
    for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0]; i++) {
        if (!match(NAMES[i].pat, id, got, sizeof got))
            continue;
        const char *star = strpbrk(NAMES[i].name, "*#");
        for (char *p = got; *p; p++) /* "pck_crl" reads better as "pck crl" */
            if (*p == '_')
                *p = ' ';
        if (star)
            snprintf(name, cap, "%.*s%s%s", (int)(star - NAMES[i].name), NAMES[i].name, got,
                     star + 1);
        else
            snprintf(name, cap, "%s", NAMES[i].name);
        return NAMES[i].group;
    }
    /* not in the table: the `what` sentence, cut at a word */
    buf_t b = BUF_INIT;
    vout_clean(*it->what ? it->what : it->id, 1, &b);
    size_t n = strlen(b.data);
    if (cols(b.data, n) > NAME_W) {
        size_t k = fit(b.data, n, NAME_W - 1);
        while (k > NAME_W / 2 && b.data[k] != ' ')
            k--;
        if (b.data[k] != ' ')
            k = fit(b.data, n, NAME_W - 1);
        snprintf(name, cap, "%.*s\xE2\x80\xA6", (int)k, b.data);
    } else {
        snprintf(name, cap, "%s", b.data);
    }
    buf_free(&b);
    return group_of_first(id);
}

/* ---- rendering ---- */

static const char *const TAG[] = {"PASS", "FAIL", "SKIP", "WARN"};
static const char *const TAG_COLOR[] = {"\033[32m", "\033[31m", "\033[2m", "\033[33m"};
#define BOLD "\033[1m"
#define RESET "\033[0m"

static void put_check(buf_t *out, const check_item_t *it, const vout_opts_t *o)
{
    char name[160];
    describe(it, name, sizeof name);
    buf_puts(out, "  ");
    if (o->color)
        buf_printf(out, "%s%s%s", TAG_COLOR[it->status], TAG[it->status], RESET);
    else
        buf_puts(out, TAG[it->status]);
    buf_puts(out, "  ");
    size_t nc = cols(name, strlen(name));
    put_cut(out, name, NAME_W);
    buf_printf(out, "%*s", (int)(NAME_W + 2 - (nc < NAME_W ? nc : NAME_W)), "");
    const size_t col0 = 2 + 4 + 2 + NAME_W + 2; /* where the detail starts */

    buf_t found = BUF_INIT, exp = BUF_INIT;
    /* vx_mark_simulated's suffix, moved to the front where a cut cannot hide it */
    static const char SIM[] = "[SIMULATED quote]";
    const char *f = *it->found ? it->found : it->expected;
    size_t fl = strlen(f), sl = sizeof SIM - 1;
    if (fl >= sl && strcmp(f + fl - sl, SIM) == 0) {
        buf_puts(&found, "[SIM] ");
        char *c = strndup(f, fl - sl);
        if (c) {
            size_t cl = strlen(c);
            while (cl && c[cl - 1] == ' ')
                c[--cl] = 0;
            vout_clean(c, !o->verbose, &found);
            free(c);
        }
    } else {
        vout_clean(f, !o->verbose, &found);
    }
    vout_clean(*it->found ? it->expected : "", !o->verbose, &exp);
    if (o->verbose) {
        put_wrapped(out, found.data, VOUT_WIDTH - col0, 8);
        if (*exp.data) {
            buf_puts(out, "        expected: ");
            put_wrapped(out, exp.data, VOUT_WIDTH - 18, 8);
        }
        buf_t what = BUF_INIT;
        vout_clean(it->what, 0, &what);
        buf_printf(out, "        %s: ", it->status == CHK_PASS ? "proves" : "checks");
        put_wrapped(out, what.data, VOUT_WIDTH - 16, 8);
        buf_free(&what);
    } else if (it->status == CHK_FAIL || it->status == CHK_WARN) {
        /* the reason is the point of such a line: wrapped, never cut */
        put_wrapped(out, found.data, VOUT_WIDTH - col0, 8);
        if (it->status == CHK_FAIL && *exp.data) {
            buf_puts(out, "        expected: ");
            put_cut(out, exp.data, VOUT_WIDTH - 18);
            buf_puts(out, "\n");
        }
    } else {
        put_cut(out, found.data, VOUT_WIDTH - col0);
        buf_puts(out, "\n");
    }
    /* a line ending in spaces (empty detail) */
    while (out->len >= 2 && out->data[out->len - 2] == ' ' && out->data[out->len - 1] == '\n') {
        out->data[out->len - 2] = '\n';
        out->len--;
    }
    buf_free(&found);
    buf_free(&exp);
}

static const char *const VERDICT[] = {"VERIFIED", "VERIFICATION FAILED",
                                      "COULD NOT VERIFY (fetch/parse error)"};

static void put_header_row(buf_t *out, const char *label, const char *value, int verbose)
{
    buf_t v = BUF_INIT;
    vout_clean(value, !verbose, &v);
    buf_printf(out, "  %-14s", label);
    if (verbose)
        put_wrapped(out, v.data, VOUT_WIDTH - 16, 16);
    else {
        put_cut(out, v.data, VOUT_WIDTH - 16);
        buf_puts(out, "\n");
    }
    buf_free(&v);
}

static void put_header(const checklist_t *cl, const vout_opts_t *o, buf_t *out)
{
    static const char *const KEYS[] = {VF_TARGET,  VF_TIME,     VF_NONCE, VF_SIGNING, VF_MODEL,
                                       VF_COMPOSE, VF_OS_IMAGE, VF_TCB,   VF_TLS};
    static const int ALWAYS[] = {1, 1, 1, 1, 1, 1, 1, 1, 0}; /* with full_header */
    const char *col = o->color ? (o->code == 0 ? "\033[1;32m" : "\033[1;31m") : "";
    buf_printf(out, "vllm-proxy-verify %s: %s%s%s\n", o->cmd, col, VERDICT[o->code],
               o->color ? RESET : "");
    for (size_t i = 0; i < sizeof KEYS / sizeof KEYS[0]; i++) {
        const char *v = vx_fact_get(KEYS[i]);
        if (v || (o->full_header && ALWAYS[i]))
            put_header_row(out, KEYS[i], v ? v : "not stated", o->verbose);
    }
    for (size_t i = 0; i < g_nfacts; i++) {
        int known = 0;
        for (size_t k = 0; k < sizeof KEYS / sizeof KEYS[0] && !known; k++)
            known = strcmp(g_facts[i].key, KEYS[k]) == 0;
        if (!known)
            put_header_row(out, g_facts[i].key, g_facts[i].val, o->verbose);
    }
    char counts[160];
    snprintf(counts, sizeof counts, "%zu passed, %zu failed, %zu skipped, %zu warnings",
             check_count(cl, CHK_PASS), check_count(cl, CHK_FAIL), check_count(cl, CHK_SKIP),
             check_count(cl, CHK_WARN));
    put_header_row(out, "checks", counts, 0);
    if (o->allow_simulated)
        put_header_row(out, "SIMULATED",
                       "attestation allowed (--allow-simulated): not a "
                       "hardware proof",
                       0);
}

void vout_render(const checklist_t *cl, const vout_opts_t *o, buf_t *out)
{
    put_header(cl, o, out);
    /* prefixes in order of first appearance, "" first */
    const char *seen[8] = {""};
    size_t nseen = 1;
    for (size_t i = 0; i < cl->n; i++) {
        size_t pl = prefix_len(cl->items[i].id);
        if (!pl)
            continue;
        int have = 0;
        for (size_t k = 1; k < nseen && !have; k++)
            have = strncmp(seen[k], cl->items[i].id, pl) == 0 && strlen(seen[k]) == pl;
        for (size_t k = 0; !have && k < sizeof PREFIXES / sizeof PREFIXES[0]; k++)
            if (strlen(PREFIXES[k]) == pl && strncmp(PREFIXES[k], cl->items[i].id, pl) == 0 &&
                nseen < 8)
                seen[nseen++] = PREFIXES[k];
    }
    int *grp = cl->n ? calloc(cl->n, sizeof *grp) : NULL;
    char name[160];
    for (size_t i = 0; i < cl->n && grp; i++)
        grp[i] = describe(&cl->items[i], name, sizeof name);
    for (int g = 0; g < G_N && grp; g++) {
        for (size_t s = 0; s < nseen; s++) {
            size_t pl = strlen(seen[s]);
            int headed = 0;
            for (size_t i = 0; i < cl->n; i++) {
                const check_item_t *it = &cl->items[i];
                if (grp[i] != g || prefix_len(it->id) != pl || strncmp(it->id, seen[s], pl) != 0)
                    continue;
                if (!headed) {
                    buf_printf(out, "\n%s%s", o->color ? BOLD : "", GROUP_TITLE[g]);
                    if (strcmp(seen[s], "aci.") == 0)
                        buf_puts(out, " \xC2\xB7 the ACI keyset's report");
                    else if (pl)
                        buf_printf(out, " \xC2\xB7 the %.*s key's report", (int)(pl - 1), seen[s]);
                    buf_printf(out, "%s\n", o->color ? RESET : "");
                    headed = 1;
                }
                put_check(out, it, o);
            }
        }
    }
    free(grp);
    buf_printf(out, "\n%s%s%s: %zu passed, %zu failed, %zu skipped, %zu warnings\n",
               o->color ? (o->code == 0 ? "\033[1;32m" : "\033[1;31m") : "", VERDICT[o->code],
               o->color ? RESET : "", check_count(cl, CHK_PASS), check_count(cl, CHK_FAIL),
               check_count(cl, CHK_SKIP), check_count(cl, CHK_WARN));
    if (o->allow_simulated)
        buf_puts(out, "SIMULATED attestation allowed: not a hardware proof\n");
    if (o->error) {
        buf_t e = BUF_INIT;
        vout_clean(o->error, !o->verbose, &e);
        buf_puts(out, "error: ");
        put_wrapped(out, e.data, VOUT_WIDTH - 7, 7);
        buf_free(&e);
    }
}
