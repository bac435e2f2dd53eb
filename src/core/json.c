/* json-c helpers: the strict parse every format parser wants, and string member access. */
#include "core/json.h"

#include <stdint.h>

#include <json-c/json.h>

struct json_object *json_parse_strict(const char *p, size_t n)
{
    if (!p || n > INT32_MAX)
        return NULL;
    json_tokener *tok = json_tokener_new();
    if (!tok)
        return NULL;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    json_object *o = json_tokener_parse_ex(tok, p, (int)n);
    if (o && json_tokener_get_error(tok) == json_tokener_success) {
        for (size_t i = json_tokener_get_parse_end(tok); i < n; i++)
            if (p[i] != ' ' && p[i] != '\n' && p[i] != '\r' && p[i] != '\t') {
                json_object_put(o);
                o = NULL;
                break;
            }
    } else {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

const char *json_get_str(struct json_object *o, const char *key, size_t *len)
{
    json_object *v;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    if (len)
        *len = (size_t)json_object_get_string_len(v);
    return json_object_get_string(v);
}
