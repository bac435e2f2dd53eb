/* json-c helpers shared by the parsers and the verifier: strict whole-input parsing and typed
 * member access. Pure functions; the caller owns every returned reference. */
#ifndef VP_CORE_JSON_H
#define VP_CORE_JSON_H

#include <stddef.h>

struct json_object;

/* Parses p[0..n) strictly (JSON_TOKENER_STRICT): one value, then only JSON whitespace
 * (json-c 0.16 still takes NaN/Infinity and single-quoted strings; callers check types).
 * Returns a new reference, or NULL when the text is not exactly one JSON value. */
struct json_object *json_parse_strict(const char *p, size_t n);
/* Member `key` of object o when it is a string (len, if not NULL, gets its byte length), else
 * NULL, also when o is NULL or not an object. Owned by o. */
const char *json_get_str(struct json_object *o, const char *key, size_t *len);

#endif
