/* Growable byte buffer with a few formatting helpers used to build JSON and HTTP heads. */
#include "core/buf.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The capacity buf_reserve grows to for extra more bytes (and the NUL); 0 when none is
 * needed, SIZE_MAX when it overflows. */
static size_t grow_cap(const buf_t *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1)
        return SIZE_MAX;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    return cap;
}

int buf_reserve(buf_t *b, size_t extra)
{
    size_t cap = grow_cap(b, extra);
    if (cap == 0)
        return 0;
    if (cap == SIZE_MAX)
        return -1;
    char *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

/* Appends after reserving with grow (buf_reserve or buf_reserve_wiped). */
static int append_with(buf_t *b, const void *p, size_t n, int (*grow)(buf_t *, size_t))
{
    if (grow(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int buf_append(buf_t *b, const void *p, size_t n) { return append_with(b, p, n, buf_reserve); }

int buf_reserve_wiped(buf_t *b, size_t extra)
{
    size_t cap = grow_cap(b, extra);
    if (cap == 0)
        return 0;
    if (cap == SIZE_MAX)
        return -1;
    char *p = malloc(cap);
    if (!p)
        return -1;
    if (b->data) {
        memcpy(p, b->data, b->len);
        sodium_memzero(b->data, b->cap);
        free(b->data);
    }
    p[b->len] = '\0';
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append_wiped(buf_t *b, const void *p, size_t n)
{
    return append_with(b, p, n, buf_reserve_wiped);
}

int buf_puts(buf_t *b, const char *s) { return buf_append(b, s, strlen(s)); }

int buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n) != 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int buf_json_str(buf_t *b, const char *s, size_t n)
{
    static const char hexd[] = "0123456789abcdef";
    if (buf_reserve(b, n + 2) != 0)
        return -1;
    b->data[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        size_t en = 0;
        switch (c) {
        case '"': esc[0] = '\\'; esc[1] = '"'; en = 2; break;
        case '\\': esc[0] = '\\'; esc[1] = '\\'; en = 2; break;
        case '\n': esc[0] = '\\'; esc[1] = 'n'; en = 2; break;
        case '\r': esc[0] = '\\'; esc[1] = 'r'; en = 2; break;
        case '\t': esc[0] = '\\'; esc[1] = 't'; en = 2; break;
        default:
            if (c < 0x20) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hexd[c >> 4];
                esc[5] = hexd[c & 15];
                en = 6;
            }
        }
        if (en) {
            if (buf_append(b, esc, en) != 0)
                return -1;
        } else {
            if (buf_reserve(b, 2) != 0)
                return -1;
            b->data[b->len++] = (char)c;
        }
    }
    if (buf_reserve(b, 1) != 0)
        return -1;
    b->data[b->len++] = '"';
    b->data[b->len] = '\0';
    return 0;
}

void buf_reset(buf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void buf_free(buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
