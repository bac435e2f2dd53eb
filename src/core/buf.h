/* Growable byte buffer. Owned by whoever declares it; buf_free releases the storage.
 * Not thread-safe; a buffer belongs to one thread at a time. */
#ifndef VP_CORE_BUF_H
#define VP_CORE_BUF_H
#include <stddef.h>
#include <stdint.h>

typedef struct buf {
    char *data; /* NUL-terminated when len < cap (buf_* functions keep it so) */
    size_t len;
    size_t cap;
} buf_t;

#define BUF_INIT {NULL, 0, 0}

int buf_reserve(buf_t *b, size_t extra);             /* 0, or -1 on ENOMEM */
int buf_append(buf_t *b, const void *p, size_t n);   /* 0, or -1 on ENOMEM */
int buf_puts(buf_t *b, const char *s);
/* As buf_reserve / buf_append, for a buffer that holds secrets: growth mallocs the larger
 * block, copies, zeroes the whole old block and frees it, so no copy is left in freed memory
 * (realloc would leave one). Slower; buf_append stays the hot path. */
int buf_reserve_wiped(buf_t *b, size_t extra);       /* 0, or -1 on ENOMEM */
int buf_append_wiped(buf_t *b, const void *p, size_t n);
int buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal (quotes included), escaping as RFC 8259 requires. */
int buf_json_str(buf_t *b, const char *s, size_t n);
void buf_reset(buf_t *b);                            /* len = 0, keeps storage */
void buf_free(buf_t *b);

#endif
