/* HTTP for the verifier through libcurl: one request at a time, with timeouts, keeping the
 * exact de-chunked body bytes (what the signed response hash covers) and, over https, the
 * sha256 of the server certificate's SPKI (what a TLS-bound report_data commits to). */
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/hex.h"
#include "core/sha.h"
#include "verify/verify.h"

#define VHTTP_MAX_BODY (64u << 20)

/* Response header lines, kept whole ("Name: value\r\n"); a redirect's or a 100's are kept
 * too, and vhttp_header reads the last block. */
static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
    buf_t *b = ud;
    size_t n = sz * nm;
    if (b->len + n > (1u << 20) || buf_append(b, p, n) != 0)
        return 0;
    return n;
}

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
    buf_t *b = ud;
    size_t n = sz * nm;
    if (b->len + n > VHTTP_MAX_BODY || buf_append(b, p, n) != 0)
        return 0; /* aborts the transfer */
    return n;
}

/* sha256(SPKI DER) of the first certificate curl saw, from CURLINFO_CERTINFO's PEM. */
static void leaf_spki_sha256(CURL *c, char out[HEX_SIZE(32)])
{
    struct curl_certinfo *ci = NULL;
    out[0] = 0;
    if (curl_easy_getinfo(c, CURLINFO_CERTINFO, &ci) != CURLE_OK || !ci || ci->num_of_certs < 1)
        return;
    for (struct curl_slist *s = ci->certinfo[0]; s; s = s->next) {
        if (strncmp(s->data, "Cert:", 5) != 0)
            continue;
        BIO *bio = BIO_new_mem_buf(s->data + 5, -1);
        X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
        unsigned char *der = NULL;
        int n = x ? i2d_PUBKEY(X509_get0_pubkey(x), &der) : -1;
        if (n > 0)
            sha256_hex(der, (size_t)n, out);
        OPENSSL_free(der);
        X509_free(x);
        BIO_free(bio);
        return;
    }
}

/* "sha256//<base64 of the SPKI hash>" once pinned (CURLOPT_PINNEDPUBLICKEY), else "", for
 * the requests to g_pin_origin only (not Intel's PCS, NRAS or a JWKS host). */
static char g_pin[80], g_pin_origin[512];

/* "https://host[:port]" of url into out (cut to cap). */
static void origin_of(const char *url, char *out, size_t cap)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    size_t n = (size_t)(p - url) + strcspn(p, "/?#");
    snprintf(out, cap, "%.*s", (int)n, url);
}

static int pinned(const char *url)
{
    char o[512];
    origin_of(url, o, sizeof o);
    return g_pin[0] && strncmp(url, "https:", 6) == 0 && strcasecmp(o, g_pin_origin) == 0;
}

void vhttp_pin_spki(const char *url, const char *spki_hex)
{
    uint8_t h[32];
    unsigned char b64[64];
    if (!spki_hex || !*spki_hex) { /* forget the pin (the local proxy, before re-verifying) */
        g_pin[0] = g_pin_origin[0] = 0;
        return;
    }
    if (hex_decode(h, sizeof h, spki_hex, strlen(spki_hex)) != 32)
        return;
    int n = EVP_EncodeBlock(b64, h, 32);
    if (n > 0) {
        snprintf(g_pin, sizeof g_pin, "sha256//%.*s", n, (const char *)b64);
        origin_of(url, g_pin_origin, sizeof g_pin_origin);
    }
}

enum { TLS_CA = 0, TLS_ANY = 1 };

static int request(const char *method, const char *url, const char *token, const char *ctype,
                   const char *const *extra, const void *body, size_t n, long timeout_s,
                   vhttp_resp_t *r, int tls);

int vhttp_request(const char *method, const char *url, const char *token, const char *ctype,
                  const void *body, size_t n, long timeout_s, vhttp_resp_t *r)
{
    return vhttp_request_h(method, url, token, ctype, NULL, body, n, timeout_s, r);
}

int vhttp_request_h(const char *method, const char *url, const char *token, const char *ctype,
                    const char *const *extra, const void *body, size_t n, long timeout_s,
                    vhttp_resp_t *r)
{
    return request(method, url, token, ctype, extra, body, n, timeout_s, r, TLS_CA);
}

int vhttp_get_evidence(const char *url, const char *token, long timeout_s, vhttp_resp_t *r)
{
    int rc = request("GET", url, token, NULL, NULL, NULL, 0, timeout_s, r, TLS_CA);
    if (rc == 0 || !r->tls_no_ca || pinned(url))
        return rc;
    vhttp_resp_free(r);
    rc = request("GET", url, token, NULL, NULL, NULL, 0, timeout_s, r, TLS_ANY);
    r->tls_unverified = strncmp(url, "https:", 6) == 0;
    return rc;
}

static int request(const char *method, const char *url, const char *token, const char *ctype,
                   const char *const *extra, const void *body, size_t n, long timeout_s,
                   vhttp_resp_t *r, int tls)
{
    static int inited;
    if (!inited) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        inited = 1;
    }
    memset(r, 0, sizeof *r);
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(r->err, sizeof r->err, "curl_easy_init failed");
        return -1;
    }
    struct curl_slist *hdr = NULL;
    char auth[1024];
    if (token && *token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hdr = curl_slist_append(hdr, auth);
    }
    if (ctype) {
        char ct[256];
        snprintf(ct, sizeof ct, "Content-Type: %s", ctype);
        hdr = curl_slist_append(hdr, ct);
    }
    for (const char *const *h = extra; h && *h; h++)
        hdr = curl_slist_append(hdr, *h);
    hdr = curl_slist_append(hdr, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "vllm-proxy-verify/1");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, timeout_s < 10 ? timeout_s : 10L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r->headers);
    curl_easy_setopt(c, CURLOPT_CERTINFO, 1L);
    int pin = pinned(url);
    if (tls == TLS_ANY || pin) {
        /* no CA: the attestation decides (TLS_ANY), or this exact key, attested (the pin) */
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
        if (pin)
            curl_easy_setopt(c, CURLOPT_PINNEDPUBLICKEY, g_pin);
    }
    /* Keep the body bytes as sent: no Accept-Encoding, so nothing is decompressed. */
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
    }
    CURLcode rc = curl_easy_perform(c);
    int ret = 0;
    if (rc != CURLE_OK) {
        snprintf(r->err, sizeof r->err, "%s: %s", url, curl_easy_strerror(rc));
        r->tls_no_ca = rc == CURLE_PEER_FAILED_VERIFICATION;
        ret = -1;
    } else {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        if (strncmp(url, "https:", 6) == 0)
            leaf_spki_sha256(c, r->spki_sha256);
    }
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    return ret;
}

void vhttp_resp_free(vhttp_resp_t *r)
{
    buf_free(&r->body);
    buf_free(&r->headers);
}

int vhttp_header(const vhttp_resp_t *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = r->headers.data ? r->headers.data : "", *end = p + r->headers.len;
    int found = 0;
    if (cap)
        out[0] = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t ln = eol ? (size_t)(eol - p) : (size_t)(end - p);
        if (ln && p[ln - 1] == '\r')
            ln--;
        if (ln >= 5 && strncmp(p, "HTTP/", 5) == 0) { /* a new block: forget the last one's */
            found = 0;
            if (cap)
                out[0] = 0;
        }
        else if (ln > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1, *ve = p + ln;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (cap) {
                size_t vn = (size_t)(ve - v) < cap - 1 ? (size_t)(ve - v) : cap - 1;
                memcpy(out, v, vn);
                out[vn] = 0;
            }
            found = 1;
        }
        p += eol ? (size_t)(eol - p) + 1 : (size_t)(end - p);
    }
    return found;
}

char *vx_url_join(const char *base, const char *path, const char *query)
{
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/')
        bl--;
    buf_t b = BUF_INIT;
    buf_append(&b, base, bl);
    if (path)
        buf_puts(&b, path);
    if (query && *query) {
        buf_puts(&b, strchr(b.data ? b.data : "", '?') ? "&" : "?");
        buf_puts(&b, query);
    }
    if (!b.data)
        return strdup("");
    return b.data;
}
