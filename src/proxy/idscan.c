/* Top-level "id" finder: tracks nesting and strings only; the first string value of an "id"
 * member of the outermost object is captured. Malformed JSON simply yields no id. */
#include "proxy/idscan.h"

#include <string.h>

void idscan_init(idscan_t *s) { memset(s, 0, sizeof *s); }

void idscan_feed(idscan_t *s, const char *p, size_t n)
{
    if (s->have_id || s->failed)
        return;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (s->in_str) {
            if (s->esc) {
                s->esc = 0;
                if (s->capturing) {
                    s->failed = 1;
                    return;
                }
                s->key_pos = 0xff;
                continue;
            }
            if (ch == '\\') {
                s->esc = 1;
                continue;
            }
            if (ch == '"') {
                s->in_str = 0;
                if (s->capturing) {
                    s->id[s->id_len] = '\0';
                    s->have_id = s->id_len > 0;
                    s->failed = !s->have_id;
                    return;
                }
                if (s->str_is_key)
                    s->key_is_id = s->key_pos == 2;
                continue;
            }
            if (s->capturing) {
                if (s->id_len >= IDSCAN_MAX_ID || (unsigned char)ch < 0x20) {
                    s->failed = 1;
                    return;
                }
                s->id[s->id_len++] = ch;
            } else if (s->str_is_key && s->key_pos != 0xff) {
                s->key_pos = (s->key_pos < 2 && ch == "id"[s->key_pos]) ? s->key_pos + 1 : 0xff;
            }
            continue;
        }
        switch (ch) {
        case ' ': case '\t': case '\r': case '\n':
            break;
        case '"':
            s->in_str = 1;
            s->str_is_key = s->depth == 1 && s->expect_key;
            s->key_pos = 0;
            if (s->depth == 1 && s->expect_value && s->key_is_id) {
                s->capturing = 1;
                s->id_len = 0;
            }
            s->expect_key = 0;
            s->expect_value = 0;
            break;
        case '{':
        case '[':
            s->depth++;
            s->expect_key = ch == '{' && s->depth == 1;
            s->expect_value = 0;
            if (s->depth > 10000) {
                s->failed = 1;
                return;
            }
            break;
        case '}':
        case ']':
            if (s->depth == 0) {
                s->failed = 1;
                return;
            }
            s->depth--;
            break;
        case ':':
            if (s->depth == 1)
                s->expect_value = 1;
            break;
        case ',':
            if (s->depth == 1) {
                s->expect_key = 1;
                s->key_is_id = 0;
            }
            break;
        default:
            s->expect_value = 0;
            break;
        }
    }
}

const char *idscan_id(const idscan_t *s) { return s->have_id ? s->id : NULL; }
