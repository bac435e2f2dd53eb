/* Test-vector loading shared by the unit tests: files under tests/vectors/ (or
 * $VP_TEST_VECTORS), read whole and NUL-terminated. Tests run from the repository root. */
#ifndef VP_TESTS_VECTORS_H
#define VP_TESTS_VECTORS_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/buf.h"

static inline const char *vec_dir(void)
{
    const char *d = getenv("VP_TEST_VECTORS");
    return d ? d : "tests/vectors";
}

/* Returns a malloc'd copy of the file (plus a NUL not counted in *len), or NULL. */
static inline void *vec_load(const char *rel, size_t *len)
{
    char path[512];
    *len = 0;
    snprintf(path, sizeof path, "%s/%s", vec_dir(), rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s (run from the repository root)\n", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (!p)
        return NULL;
    p[n] = 0;
    *len = (size_t)n;
    return p;
}

/* Appends the file to out; 0, or -1 when it cannot be read. */
static inline int vec_slurp(const char *rel, buf_t *out)
{
    size_t n;
    void *p = vec_load(rel, &n);
    if (!p)
        return -1;
    int rc = buf_append(out, p, n);
    free(p);
    return rc;
}

#endif
