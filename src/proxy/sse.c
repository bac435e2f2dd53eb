/* SSE framer: a byte-level line machine (CR, LF and CRLF line ends, `data:` with or without
 * one space, comments and other fields ignored) plus, while the chat id is unknown, a buffer
 * for the current event's data that json-c parses when the event is dispatched. */
#include "proxy/sse.h"

#include <json-c/json.h>
#include <string.h>

enum { PH_NAME = 0, PH_VALUE_START, PH_VALUE };
enum { NAME_NOT_DATA = 5, DONE_LEN = 6, DONE_BAD = 7 };

static const char done_lit[] = "[DONE]";

static void line_reset(sse_t *s)
{
    s->line_empty = 1;
    s->phase = PH_NAME;
    s->name_pos = 0;
    s->is_data = 0;
    s->done_pos = 0;
}

static void event_reset(sse_t *s)
{
    s->ndata = 0;
    s->first_done = 0;
    if (!s->have_id)
        buf_reset(&s->event);
}

void sse_init(sse_t *s)
{
    memset(s, 0, sizeof(*s));
    line_reset(s);
}

void sse_reset(sse_t *s)
{
    buf_t keep = s->event;
    sse_init(s);
    s->event = keep;
    buf_reset(&s->event);
}

void sse_free(sse_t *s)
{
    buf_free(&s->event);
    sse_init(s);
}

static int fail(sse_t *s)
{
    s->failed = 1;
    return -1;
}

static int begin_data_line(sse_t *s)
{
    s->is_data = 1;
    s->done_pos = 0;
    if (s->ndata < 2)
        s->ndata++;
    if (!s->have_id && s->ndata > 1) {
        if (s->event.len + 1 > SSE_MAX_EVENT || buf_append(&s->event, "\n", 1) != 0)
            return fail(s);
    }
    return 0;
}

static int data_run(sse_t *s, const char *p, size_t n)
{
    if (!s->have_id) {
        if (n > SSE_MAX_EVENT - s->event.len || buf_append(&s->event, p, n) != 0)
            return fail(s);
    }
    for (size_t i = 0; i < n && s->done_pos != DONE_BAD; i++) {
        if (s->done_pos < DONE_LEN && p[i] == done_lit[s->done_pos])
            s->done_pos++;
        else if (s->done_pos == DONE_LEN && (p[i] == ' ' || p[i] == '\t'))
            ;
        else
            s->done_pos = DONE_BAD;
    }
    return 0;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int id_acceptable(const char *id, size_t n)
{
    if (n == 0 || n > SSE_MAX_ID || strlen(id) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] < 0x20 || id[i] == 0x7f)
            return 0;
    return 1;
}

/* Parses the buffered event data; records the id if the event carries one. */
static int take_id_from_event(sse_t *s)
{
    size_t len = s->event.len;
    size_t k = 0;
    while (k < len && is_ws(s->event.data[k]))
        k++;
    if (k == len)
        return 0;   /* blank data: nothing to look at */
    struct json_tokener *tok = json_tokener_new_ex(64);
    if (!tok)
        return fail(s);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    /* Passing the buffer's NUL terminator lets json-c finish a bare scalar; stopping
     * anywhere else than at that NUL means an embedded NUL or trailing garbage. */
    json_object *o = json_tokener_parse_ex(tok, s->event.data, (int)len + 1);
    int ok = o && json_tokener_get_parse_end(tok) == len;
    json_tokener_free(tok);
    if (!ok) {
        json_object_put(o);
        return fail(s);
    }
    int rc = 0;
    json_object *idv;
    if (json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, "id", &idv) &&
        idv != NULL) {
        const char *id = json_object_get_string(idv);
        size_t n = (size_t)json_object_get_string_len(idv);
        if (!json_object_is_type(idv, json_type_string) || !id_acceptable(id, n)) {
            rc = fail(s);
        } else {
            memcpy(s->id, id, n);
            s->id[n] = '\0';
            s->id_len = (uint16_t)n;
            s->have_id = 1;
            buf_free(&s->event);
        }
    }
    json_object_put(o);
    return rc;
}

static int dispatch(sse_t *s)
{
    int rc = 0;
    if (s->ndata == 1 && s->first_done)
        s->done = 1;
    else if (s->ndata > 0 && !s->have_id)
        rc = take_id_from_event(s);
    event_reset(s);
    return rc;
}

static int end_line(sse_t *s)
{
    int rc = 0;
    if (s->line_empty) {
        rc = dispatch(s);
    } else {
        if (s->phase == PH_NAME && s->name_pos == 4)  /* "data" without a colon */
            rc = begin_data_line(s);
        if (rc == 0 && s->is_data && s->ndata == 1)
            s->first_done = s->done_pos == DONE_LEN;
    }
    line_reset(s);
    return rc;
}

int sse_feed(sse_t *s, const char *p, size_t n)
{
    if (s->failed)
        return -1;
    size_t i = 0;
    while (i < n) {
        if (s->phase == PH_VALUE) {
            /* The hot path once the id is known: skip to the line end with memchr (SIMD in
             * glibc) instead of a byte loop; CR line ends are rare, so look for one only
             * before the next LF. */
            const char *lf = memchr(p + i, '\n', n - i);
            size_t j = lf ? (size_t)(lf - p) : n;
            const char *cr = memchr(p + i, '\r', j - i);
            if (cr)
                j = (size_t)(cr - p);
            if (s->is_data && j > i && data_run(s, p + i, j - i) != 0)
                return -1;
            i = j;
            if (i == n)
                break;
        }
        char c = p[i++];
        if (c == '\n' && s->after_cr) {
            s->after_cr = 0;
            continue;
        }
        s->after_cr = 0;
        if (c == '\r' || c == '\n') {
            s->after_cr = c == '\r';
            if (end_line(s) != 0)
                return -1;
            continue;
        }
        s->line_empty = 0;
        if (s->phase == PH_NAME) {
            if (c == ':') {
                s->phase = PH_VALUE_START;
                if (s->name_pos == 4 && begin_data_line(s) != 0)
                    return -1;
            } else if (s->name_pos < 4 && c == "data"[s->name_pos]) {
                s->name_pos++;
            } else {
                s->name_pos = NAME_NOT_DATA;
            }
            continue;
        }
        /* PH_VALUE_START: one space after the colon is not part of the value. */
        s->phase = PH_VALUE;
        if (c != ' ' && s->is_data && data_run(s, &c, 1) != 0)
            return -1;
    }
    return 0;
}

int sse_finish(sse_t *s)
{
    if (s->failed)
        return -1;
    if (!s->line_empty && end_line(s) != 0)
        return -1;
    s->after_cr = 0;
    return dispatch(s);
}

const char *sse_chat_id(const sse_t *s)
{
    return s->have_id ? s->id : NULL;
}

int sse_done_seen(const sse_t *s)
{
    return s->done;
}
