/* Allocation tracking for the fuzz targets that check that plaintext is wiped before it is
 * freed (fuzz_e2ee_req.c, fuzz_e2ee_resp.c). Every new block starts zeroed, so that a block
 * freed later holds only what was written into it; and only blocks allocated while watch_on
 * is set are searched when freed (a set of pointers, one generation per input), never blocks
 * of earlier inputs or of the harness. The target installs watch_malloc_hook with its own free
 * hook (__sanitizer_install_malloc_and_free_hooks) and asks watch_tracked there. Single thread. */
#ifndef VP_TESTS_FUZZ_ALLOC_WATCH_H
#define VP_TESTS_FUZZ_ALLOC_WATCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TRACK_SLOTS (1u << 18)
#define TRACK_PROBES 64

static volatile int watch_on; /* track new blocks and search freed ones */
static struct {
    const void *p;
    unsigned gen;
} g_track[TRACK_SLOTS];
static unsigned g_gen = 1;

static size_t track_slot(const void *p)
{
    return (size_t)(((uintptr_t)p >> 4) * 0x9e3779b97f4a7c15ull >> 46) & (TRACK_SLOTS - 1);
}

static void watch_malloc_hook(const volatile void *p, size_t n)
{
    if (!p)
        return;
    if (n)
        memset((void *)(uintptr_t)p, 0, n);
    if (!watch_on)
        return;
    for (size_t i = track_slot((const void *)(uintptr_t)p), k = 0; k < TRACK_PROBES;
         i = (i + 1) & (TRACK_SLOTS - 1), k++)
        if (g_track[i].gen != g_gen) {
            g_track[i].p = (const void *)(uintptr_t)p;
            g_track[i].gen = g_gen;
            return;
        }
}

/* The block was allocated while watching during this input. */
static int watch_tracked(const void *p)
{
    for (size_t i = track_slot(p), k = 0; k < TRACK_PROBES; i = (i + 1) & (TRACK_SLOTS - 1), k++) {
        if (g_track[i].gen != g_gen)
            return 0;
        if (g_track[i].p == p)
            return 1;
    }
    return 0;
}

/* Forget the blocks of the previous input. */
static void watch_next_input(void) { g_gen++; }

/* The input with JSON's escapes decoded (crudely: \uXXXX below 0x80 and the one-letter
 * escapes), so that a marker spelled with escapes counts as in clear. malloc'd (*on bytes and
 * a NUL); NULL when out of memory. */
static int watch_hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static char *watch_unescaped(const char *p, size_t n, size_t *on)
{
    char *o = malloc(n + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\' && i + 5 < n && p[i + 1] == 'u') {
            unsigned v = 0;
            int ok = 1;
            for (size_t j = 2; j < 6; j++) {
                int d = watch_hexval(p[i + j]);
                if (d < 0)
                    ok = 0;
                v = v * 16 + (unsigned)(d < 0 ? 0 : d);
            }
            if (ok && v < 0x80) {
                o[k++] = (char)v;
                i += 5;
                continue;
            }
        }
        if (p[i] == '\\' && i + 1 < n && strchr("\"\\/", p[i + 1])) {
            o[k++] = p[++i];
            continue;
        }
        o[k++] = p[i];
    }
    o[k] = '\0';
    *on = k;
    return o;
}

#endif
