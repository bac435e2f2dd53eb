/* libFuzzer target for the request scanner: never crashes; whatever it accepts json-c accepts
 * too (json-c is laxer, never stricter, in the grammar we allow), the reported facts agree
 * with json-c's reading (last key wins in both), and a rewrite parses and equals the
 * original with the empty tool_calls removed. */
#include "fuzz.h"
#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/reqjson.h"

static json_object *parse_jc(const char *s, size_t n)
{
    struct json_tokener *tok = json_tokener_new_ex(REQJSON_MAX_DEPTH + 8);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    json_object *o = json_tokener_parse_ex(tok, s, (int)n);
    if (o && json_tokener_get_parse_end(tok) != n) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

static size_t strip_reference(json_object *root)
{
    size_t removed = 0;
    json_object *msgs;
    if (!json_object_object_get_ex(root, "messages", &msgs) ||
        !json_object_is_type(msgs, json_type_array))
        return 0;
    for (size_t i = 0; i < json_object_array_length(msgs); i++) {
        json_object *m = json_object_array_get_idx(msgs, i), *tc;
        if (json_object_is_type(m, json_type_object) &&
            json_object_object_get_ex(m, "tool_calls", &tc) &&
            json_object_is_type(tc, json_type_array) && json_object_array_length(tc) == 0) {
            json_object_object_del(m, "tool_calls");
            removed++;
        }
    }
    return removed;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    const char *p = (const char *)data;
    reqjson_t o;
    buf_t rw = BUF_INIT;
    char err[160];
    int rc = reqjson_inspect(p, size, &o, &rw, err, sizeof(err));
    if (strlen(err) >= sizeof(err))
        abort();
    if (rc != 0) {
        if (err[0] == '\0' || rw.len != 0 || o.rewritten)
            abort();
        buf_free(&rw);
        return 0;
    }
    /* json-c 0.16 stops a top-level value at an embedded NUL; a NUL inside our accepted
     * grammar can only be in a string, which json-c rejects as raw control. So accepted
     * input has no NUL and json-c must take all of it. */
    json_object *orig = parse_jc(p, size);
    if (!orig || !json_object_is_type(orig, json_type_object))
        abort();
    /* json-c cuts object keys at an escaped NUL ("stream\u0000" reads as "stream"), so its
     * reading of such input is not a reference for key matching. */
    if (memmem(p, size, "\\u0000", 6)) {
        json_object_put(orig);
        buf_free(&rw);
        return 0;
    }
    json_object *v;
    int has = json_object_object_get_ex(orig, "stream", &v);
    if (has != o.has_stream)
        abort();
    if (has && (!json_object_is_type(v, json_type_boolean) || json_object_get_boolean(v) != o.stream))
        abort();
    has = json_object_object_get_ex(orig, "model", &v) && json_object_is_type(v, json_type_string);
    if (has != o.has_model)
        abort();
    if (has && !o.model_escaped &&
        ((size_t)json_object_get_string_len(v) != o.model_len ||
         memcmp(json_object_get_string(v), p + o.model_off, o.model_len) != 0))
        abort();
    json_object *so, *iu;
    int usage = json_object_object_get_ex(orig, "stream_options", &so) &&
                json_object_is_type(so, json_type_object) &&
                json_object_object_get_ex(so, "include_usage", &iu) &&
                json_object_is_type(iu, json_type_boolean) && json_object_get_boolean(iu);
    if (usage != o.include_usage)
        abort();
    size_t ref_removed = strip_reference(orig);
    if (o.n_stripped < ref_removed || (o.n_stripped > 0) != o.rewritten)
        abort();
    if (o.rewritten) {
        json_object *re = parse_jc(rw.data, rw.len);
        if (!re || !json_object_equal(re, orig))
            abort();
        /* the rewrite is itself clean and accepted */
        reqjson_t o2;
        if (reqjson_inspect(rw.data, rw.len, &o2, NULL, err, sizeof(err)) != 0 || o2.n_stripped != 0 ||
            o2.stream != o.stream || o2.has_stream != o.has_stream)
            abort();
        json_object_put(re);
        if (rw.len >= size)
            abort();
    }
    /* cache_salt injection (CACHE_SALT_SECRET): json-c's view of the result is the stripped
     * original with one cache_salt, ours; doing it again changes nothing. */
    static const char SALT[] = "fuzz-salt_0123456789ABCDEFGHIJKLMNOPQRSTUVW";
    reqjson_opts_t opts = {.cache_salt = SALT};
    buf_t rs = BUF_INIT, rs2 = BUF_INIT;
    reqjson_t os, os2;
    if (reqjson_inspect_opts(p, size, &opts, &os, &rs, err, sizeof(err)) != 0 || !os.rewritten ||
        !os.salt_injected || os.n_stripped != o.n_stripped)
        abort();
    json_object *sj = parse_jc(rs.data, rs.len);
    json_object_object_del(orig, "cache_salt");
    json_object_object_add(orig, "cache_salt", json_object_new_string(SALT));
    if (!sj || !json_object_equal(sj, orig))
        abort();
    if (reqjson_inspect_opts(rs.data, rs.len, &opts, &os2, &rs2, err, sizeof(err)) != 0 ||
        os2.n_salts != 1 || os2.n_stripped != 0 || rs2.len != rs.len ||
        memcmp(rs2.data, rs.data, rs.len) != 0)
        abort();
    json_object_put(sj);
    buf_free(&rs);
    buf_free(&rs2);
    json_object_put(orig);
    buf_free(&rw);
    return 0;
}
