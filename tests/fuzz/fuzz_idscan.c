/* libFuzzer target for the non-streaming id scanner (src/proxy/idscan.c): never crashes, never
 * reads past its input, and finds the same id whatever the chunking (whole, byte by byte, and
 * split at a point taken from the data). When it finds an id in valid JSON, json-c agrees. */
#include "fuzz.h"
#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/idscan.h"

static void same(const idscan_t *a, const idscan_t *b)
{
    const char *x = idscan_id(a), *y = idscan_id(b);
    if ((x == NULL) != (y == NULL) || (x && strcmp(x, y) != 0))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    idscan_t whole, bytes, split;
    idscan_init(&whole);
    idscan_feed(&whole, p, size);
    idscan_init(&bytes);
    for (size_t i = 0; i < size; i++)
        idscan_feed(&bytes, p + i, 1);
    same(&whole, &bytes);
    size_t cut = size ? data[0] % (size + 1) : 0;
    idscan_init(&split);
    idscan_feed(&split, p, cut);
    idscan_feed(&split, p + cut, size - cut);
    same(&whole, &split);

    const char *id = idscan_id(&whole);
    if (id && size < 4096 && !memchr(p, 0, size)) {
        /* In a valid JSON object whose "id" member is a string without escaped NULs, the
         * scanner's id must be json-c's "id" — unless the object repeats "id" (first wins
         * here, last in json-c) or escapes the key itself. */
        char *z = malloc(size + 1);
        memcpy(z, p, size);
        z[size] = 0;
        json_tokener *tok = json_tokener_new();
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
        json_object *o = json_tokener_parse_ex(tok, z, (int)size);
        json_object *v;
        if (o && json_tokener_get_parse_end(tok) == size && json_object_is_type(o, json_type_object) &&
            json_object_object_get_ex(o, "id", &v) && json_object_is_type(v, json_type_string) &&
            !strstr(z, "\\u0000")) {
            int count = 0;
            for (const char *q = z; (q = strstr(q, "\"id\"")); q += 4)
                count++;
            if (count == 1 && strcmp(json_object_get_string(v), id) != 0)
                abort();
        }
        json_object_put(o);
        json_tokener_free(tok);
        free(z);
    }
    return 0;
}
