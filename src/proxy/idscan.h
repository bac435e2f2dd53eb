/* Incremental scanner for the top-level "id" of a JSON object (a non-streaming completion),
 * fed the body in arbitrary pieces. Constant memory: it never buffers the body. */
#ifndef VP_PROXY_IDSCAN_H
#define VP_PROXY_IDSCAN_H
#include <stddef.h>
#include <stdint.h>

#define IDSCAN_MAX_ID 256
#define IDSCAN_MAX_DEPTH 10000 /* deeper nesting: the scan gives up (no id, no signature) */

typedef struct idscan {
    uint32_t depth;
    uint8_t in_str, esc, str_is_key, expect_key, expect_value, key_is_id, capturing, have_id,
        failed, key_pos;
    uint8_t uhex;          /* hex digits of a \uXXXX escape still expected (0 = none) */
    uint32_t ucode, hi_surrogate;
    uint16_t id_len;
    char id[IDSCAN_MAX_ID + 1];
} idscan_t;

void idscan_init(idscan_t *s);
void idscan_feed(idscan_t *s, const char *p, size_t n);
/* The id once the scanner saw it whole (JSON escapes decoded to UTF-8), else NULL. */
const char *idscan_id(const idscan_t *s);

#endif
