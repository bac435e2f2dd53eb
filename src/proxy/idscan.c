/* Top-level "id" finder: tracks nesting and strings only; the first string value of an "id"
 * member of the outermost object is captured. Malformed JSON simply yields no id. */
#include "proxy/idscan.h"

#include <string.h>

#include "core/hex.h"

static int id_put(idscan_t *s, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | cp >> 12);
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | cp >> 18);
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    if (cp < 0x20 || s->id_len + n > IDSCAN_MAX_ID)
        return -1;
    memcpy(s->id + s->id_len, u, n);
    s->id_len += (uint16_t)n;
    return 0;
}

/* One escaped code point of the captured id: surrogate pairs are joined, lone ones refused. */
static int id_put_escaped(idscan_t *s, uint32_t cp)
{
    if (cp >= 0xd800 && cp < 0xdc00) {
        if (s->hi_surrogate)
            return -1;
        s->hi_surrogate = cp;
        return 0;
    }
    if (cp >= 0xdc00 && cp < 0xe000) {
        if (!s->hi_surrogate)
            return -1;
        cp = 0x10000 + ((s->hi_surrogate - 0xd800) << 10) + (cp - 0xdc00);
        s->hi_surrogate = 0;
    } else if (s->hi_surrogate)
        return -1;
    return id_put(s, cp);
}

void idscan_init(idscan_t *s) { memset(s, 0, sizeof *s); }

void idscan_feed(idscan_t *s, const char *p, size_t n)
{
    if (s->have_id || s->failed)
        return;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (s->in_str) {
            if (s->uhex) {
                int v = hex_digit(ch);
                if (v < 0) {
                    s->failed = 1;
                    return;
                }
                s->ucode = s->ucode << 4 | (uint32_t)v;
                if (--s->uhex == 0 && s->capturing && id_put_escaped(s, s->ucode) != 0) {
                    s->failed = 1;
                    return;
                }
                continue;
            }
            if (s->esc) {
                s->esc = 0;
                if (ch == 'u') {
                    s->uhex = 4;
                    s->ucode = 0;
                    s->key_pos = 0xff;
                    continue;
                }
                if (s->capturing) {
                    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
                    const char *f = strchr(from, ch);
                    if (!f || !*f || id_put_escaped(s, (unsigned char)to[f - from]) != 0) {
                        s->failed = 1;
                        return;
                    }
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
                if (s->capturing && s->hi_surrogate) {
                    s->failed = 1;
                    return;
                }
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
                if (s->id_len >= IDSCAN_MAX_ID || (unsigned char)ch < 0x20 || s->hi_surrogate) {
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
            if (s->depth > IDSCAN_MAX_DEPTH) {
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
