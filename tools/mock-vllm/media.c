/* mock-vllm's image and audio routes: /v1/images/generations (JSON), /v1/images/edits and
 * /v1/audio/transcriptions (multipart/form-data), answered in OpenAI's shapes (what vLLM's
 * image and transcription servers return): images as b64_json of a real PNG (8-bit
 * grayscale, stored deflate blocks) of the requested size, transcriptions as {"text":...}
 * with vLLM's duration usage. Everything is deterministic from the request. */
#include "mock.h"

#include <string.h>
#include <strings.h>
#include <time.h>

#include <json-c/json.h>

#include "core/hex.h"
#include "core/sha.h"

#define MAX_SIDE 1024 /* pixels per image side */
#define MAX_IMAGES 8
#define MAX_FIELDS 64

/* ---- PNG ---- */

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    if (!crc_table[1])
        crc_init();
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++)
        c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

static void put_be32(buf_t *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(b, x, 4);
}

static void png_chunk(buf_t *png, const char type[4], const uint8_t *data, size_t n)
{
    put_be32(png, (uint32_t)n);
    size_t at = png->len;
    put(png, type, 4);
    if (n)
        put(png, data, n);
    put_be32(png, crc32_of((const uint8_t *)png->data + at, n + 4));
}

/* A w x h grayscale PNG whose pixels depend on seed. */
static void make_png(buf_t *png, unsigned w, unsigned h, uint32_t seed)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    put(png, sig, sizeof sig);
    uint8_t ihdr[13] = {(uint8_t)(w >> 24),
                        (uint8_t)(w >> 16),
                        (uint8_t)(w >> 8),
                        (uint8_t)w,
                        (uint8_t)(h >> 24),
                        (uint8_t)(h >> 16),
                        (uint8_t)(h >> 8),
                        (uint8_t)h,
                        8,
                        0,
                        0,
                        0,
                        0};
    png_chunk(png, "IHDR", ihdr, sizeof ihdr);
    buf_t raw = BUF_INIT, z = BUF_INIT;
    for (unsigned y = 0; y < h; y++) {
        uint8_t f = 0;
        put(&raw, &f, 1);
        for (unsigned x = 0; x < w; x++) {
            uint8_t px = (uint8_t)((x * 3 + y * 5 + (x ^ y) + seed) & 0xff);
            put(&raw, &px, 1);
        }
    }
    uint8_t zh[2] = {0x78, 0x01};
    put(&z, zh, 2);
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < raw.len; i++) {
        a = (a + (uint8_t)raw.data[i]) % 65521u;
        b = (b + a) % 65521u;
    }
    for (size_t off = 0; off < raw.len;) {
        size_t n = raw.len - off > 65535 ? 65535 : raw.len - off;
        uint8_t bh[5] = {off + n == raw.len ? 1 : 0, (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)~n,
                         (uint8_t)(~n >> 8)};
        put(&z, bh, 5);
        put(&z, raw.data + off, n);
        off += n;
    }
    put_be32(&z, (b << 16) | a);
    png_chunk(png, "IDAT", (const uint8_t *)z.data, z.len);
    png_chunk(png, "IEND", NULL, 0);
    buf_free(&raw);
    buf_free(&z);
}

/* ---- multipart/form-data (just enough for a test engine) ---- */

struct field {
    const char *name, *data;
    size_t name_len, len;
    int is_file;
};

/* The form's fields, or -1 when the body is not multipart/form-data as the headers say. */
static int parse_form(struct conn *c, struct field *f, int max)
{
    size_t ctn;
    const char *ct = conn_header(c, "content-type", &ctn);
    const char *bp = NULL;
    for (size_t i = 0; ct && i + 9 <= ctn; i++)
        if (strncasecmp(ct + i, "boundary=", 9) == 0) {
            bp = ct + i + 9;
            break;
        }
    if (!ct || ctn < 19 || strncasecmp(ct, "multipart/form-data", 19) != 0 || !bp)
        return -1;
    size_t bn = (size_t)(ct + ctn - bp);
    const char *semi = memchr(bp, ';', bn);
    if (semi)
        bn = (size_t)(semi - bp);
    if (bn >= 2 && bp[0] == '"' && bp[bn - 1] == '"')
        bp++, bn -= 2;
    if (bn == 0 || bn > 70)
        return -1;
    char delim[80] = "\r\n--";
    memcpy(delim + 4, bp, bn);
    size_t dl = bn + 4;
    const char *p = c->body.data ? c->body.data : "", *end = p + c->body.len;
    /* the first delimiter may lack the leading CRLF */
    const char *q;
    if ((size_t)(end - p) >= dl - 2 && memcmp(p, delim + 2, dl - 2) == 0) {
        q = p + dl - 2;
    } else {
        const char *d = memmem(p, (size_t)(end - p), delim, dl);
        if (!d)
            return -1;
        q = d + dl;
    }
    for (int n = 0;;) {
        if (end - q >= 2 && q[0] == '-' && q[1] == '-')
            return n;
        if (end - q < 2 || q[0] != '\r' || q[1] != '\n')
            return -1;
        q += 2;
        const char *he = memmem(q, (size_t)(end - q), "\r\n\r\n", 4);
        if (!he)
            return -1;
        const char *data = he + 4;
        const char *nd = memmem(data - 2, (size_t)(end - data + 2), delim, dl);
        if (!nd || n == max)
            return -1;
        const char *nm = memmem(q, (size_t)(he - q), "name=\"", 6);
        if (nm && (nm == q || nm[-1] == ' ' || nm[-1] == ';')) {
            nm += 6;
            const char *ne = memchr(nm, '"', (size_t)(he - nm));
            if (ne) {
                f[n] = (struct field){nm, data, (size_t)(ne - nm),
                                      nd >= data ? (size_t)(nd - data) : 0,
                                      memmem(q, (size_t)(he - q), "filename=", 9) != NULL};
                n++;
            }
        }
        q = nd + dl;
    }
}

static const struct field *field_of(const struct field *f, int n, const char *name)
{
    size_t l = strlen(name);
    for (int i = 0; i < n; i++)
        if (f[i].name_len == l && memcmp(f[i].name, name, l) == 0)
            return &f[i];
    return NULL;
}

/* ---- answers ---- */

/* "WxH" (each 1..MAX_SIDE), else the default 64x64. */
static int parse_size(const char *s, size_t n, unsigned *w, unsigned *h)
{
    *w = *h = 64;
    if (!s)
        return 0;
    char t[24];
    if (n >= sizeof t)
        return -1;
    memcpy(t, s, n);
    t[n] = '\0';
    unsigned a, b;
    char tail;
    if (sscanf(t, "%ux%u%c", &a, &b, &tail) != 2 || !a || !b || a > MAX_SIDE || b > MAX_SIDE)
        return -1;
    *w = a, *h = b;
    return 0;
}

static void images_answer(struct conn *c, const char *prompt, size_t plen, long n, unsigned w,
                          unsigned h)
{
    buf_t b = BUF_INIT;
    uint8_t d[SHA256_LEN];
    sha256(prompt, plen, d);
    buf_printf(&b, "{\"created\":%ld,\"data\":[", (long)time(NULL));
    for (long i = 0; i < n; i++) {
        buf_t png = BUF_INIT;
        make_png(&png, w, h, (uint32_t)d[0] + (uint32_t)i * 40u);
        size_t el = b64_encoded_len(png.len);
        char *enc = malloc(el + 1);
        if (!enc)
            abort();
        b64_encode(enc, (const uint8_t *)png.data, png.len);
        buf_printf(&b, "%s{\"b64_json\":\"", i ? "," : "");
        put(&b, enc, el);
        PUTS(&b, "\",\"revised_prompt\":null}");
        free(enc);
        buf_free(&png);
    }
    buf_printf(&b, "],\"output_format\":\"png\",\"size\":\"%ux%u\"}", w, h);
    send_simple(c, 200, "application/json", b.data, b.len);
    buf_free(&b);
}

static void images_generations(struct conn *c)
{
    json_tokener *t = json_tokener_new();
    json_object *o =
        t ? json_tokener_parse_ex(t, c->body.data ? c->body.data : "", (int)c->body.len) : NULL;
    json_tokener_free(t);
    json_object *pr = NULL, *nv = NULL, *sz = NULL;
    if (!o || !json_object_is_type(o, json_type_object) ||
        !json_object_object_get_ex(o, "prompt", &pr) ||
        !json_object_is_type(pr, json_type_string)) {
        json_object_put(o);
        send_error(c, 400, "'prompt' is required and must be a string");
        return;
    }
    long n = json_object_object_get_ex(o, "n", &nv) ? (long)json_object_get_int64(nv) : 1;
    const char *s =
        json_object_object_get_ex(o, "size", &sz) && json_object_is_type(sz, json_type_string)
            ? json_object_get_string(sz)
            : NULL;
    unsigned w, h;
    if (n < 1 || n > MAX_IMAGES || parse_size(s, s ? strlen(s) : 0, &w, &h) != 0) {
        json_object_put(o);
        send_error(c, 400, "'n' must be 1..8 and 'size' WxH with sides 1..1024");
        return;
    }
    images_answer(c, json_object_get_string(pr), (size_t)json_object_get_string_len(pr), n, w, h);
    json_object_put(o);
}

static void images_edits(struct conn *c)
{
    struct field f[MAX_FIELDS];
    int nf = parse_form(c, f, MAX_FIELDS);
    if (nf < 0) {
        send_error(c, 400, "the body must be multipart/form-data");
        return;
    }
    const struct field *pr = field_of(f, nf, "prompt"), *img = field_of(f, nf, "image");
    if (!img)
        img = field_of(f, nf, "image[]");
    const struct field *sz = field_of(f, nf, "size"), *nv = field_of(f, nf, "n");
    if (!pr || !img || !img->is_file || img->len == 0) {
        send_error(c, 400, "'prompt' and a non-empty 'image' file are required");
        return;
    }
    unsigned w, h;
    long n = 1;
    if (nv) {
        char t[8] = {0};
        memcpy(t, nv->data, nv->len < 7 ? nv->len : 7);
        n = strtol(t, NULL, 10);
    }
    if (n < 1 || n > MAX_IMAGES ||
        parse_size(sz ? sz->data : NULL, sz ? sz->len : 0, &w, &h) != 0) {
        send_error(c, 400, "'n' must be 1..8 and 'size' WxH with sides 1..1024");
        return;
    }
    /* the picture depends on the prompt and the image's bytes */
    buf_t seed = BUF_INIT;
    put(&seed, pr->data, pr->len);
    put(&seed, img->data, img->len);
    images_answer(c, seed.data, seed.len, n, w, h);
    buf_free(&seed);
}

static const char *const spoken[] = {"the", "quick", "brown", "fox", "jumps", "over",
                                     "the", "lazy",  "dog",   "and", "says",  "h\xc3\xa9llo"};
#define NSPOKEN (sizeof spoken / sizeof spoken[0])

static void transcriptions(struct conn *c)
{
    struct field f[MAX_FIELDS];
    int nf = parse_form(c, f, MAX_FIELDS);
    if (nf < 0) {
        send_error(c, 400, "the body must be multipart/form-data");
        return;
    }
    const struct field *file = field_of(f, nf, "file");
    if (!file || !file->is_file || file->len == 0) {
        send_error(c, 400, "a non-empty 'file' is required");
        return;
    }
    /* one word per 1000 bytes of audio (at least one), starting where the audio's hash says */
    size_t words = 1 + file->len / 1000;
    if (words > 200)
        words = 200;
    uint8_t d[SHA256_LEN];
    sha256(file->data, file->len, d);
    buf_t text = BUF_INIT, b = BUF_INIT;
    for (size_t i = 0; i < words; i++) {
        const char *w = spoken[(d[0] + i) % NSPOKEN];
        if (i)
            PUTS(&text, " ");
        put(&text, w, strlen(w));
    }
    PUTS(&b, "{\"text\":");
    if (buf_json_str(&b, text.data, text.len) != 0)
        abort();
    buf_printf(&b, ",\"usage\":{\"type\":\"duration\",\"seconds\":%zu}}", 1 + file->len / 16000);
    send_simple(c, 200, "application/json", b.data, b.len);
    buf_free(&text);
    buf_free(&b);
}

int media_route(struct conn *c, const char *path)
{
    if (strcmp(path, "/v1/images/generations") == 0)
        images_generations(c);
    else if (strcmp(path, "/v1/images/edits") == 0)
        images_edits(c);
    else if (strcmp(path, "/v1/audio/transcriptions") == 0)
        transcriptions(c);
    else
        return 0;
    return 1;
}
