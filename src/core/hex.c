/* Hex and base64: every length is checked against the caller's capacity. */
#include "core/hex.h"

static void encode_with(char *out, const uint8_t *in, size_t n, const char *digits)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void hex_encode(char *out, const uint8_t *in, size_t n)
{
    encode_with(out, in, n, "0123456789abcdef");
}

void hex_encode_upper(char *out, const uint8_t *in, size_t n)
{
    encode_with(out, in, n, "0123456789ABCDEF");
}

int hex_digit(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long hex_decode(uint8_t *out, size_t outcap, const char *in, size_t inlen)
{
    if (inlen % 2 != 0 || inlen / 2 > outcap)
        return -1;
    for (size_t i = 0; i < inlen / 2; i++) {
        int hi = hex_digit(in[2 * i]), lo = hex_digit(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return (long)(inlen / 2);
}

int hex_is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (hex_digit(s[i]) < 0)
            return 0;
    return 1;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t b64_encoded_len(size_t n) { return (n + 2) / 3 * 4; }

void b64_encode(char *out, const uint8_t *in, size_t n)
{
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = B64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

long b64_decode(uint8_t *out, size_t outcap, const char *in, size_t inlen)
{
    /* Padding is optional, but when present it must complete the last quantum: one or two
     * '=' and a total length that is a multiple of 4 ("Zg==", not "Zg=", "Zg===" or "Zm9v="). */
    size_t pad = 0;
    while (inlen > 0 && in[inlen - 1] == '=')
        inlen--, pad++;
    if (inlen % 4 == 1 || (pad && (pad > 2 || (inlen + pad) % 4 != 0)))
        return -1;
    size_t need = inlen / 4 * 3 + (inlen % 4 ? inlen % 4 - 1 : 0);
    if (need > outcap)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < inlen; i++) {
        int v = b64val(in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return (long)o;
}
