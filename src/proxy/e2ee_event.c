/* The fast path of stream encryption (proxy/e2ee_sess.h, e2ee_event_fast): one `data:` event
 * of a chat completion stream rewritten in place, without building a json-c tree.
 *
 * vLLM sends a few hundred events per answer, each a small JSON object whose only sealed
 * members are choices[i].delta.{content, reasoning_content, reasoning}. Parsing each into a
 * tree and printing it again cost several times the AES-GCM seal (docs/PERFORMANCE.md). Here
 * the event is scanned once by a strict JSON validator that records the spans of the sealed
 * strings (and of the top-level id and model the AAD needs), then copied with those spans
 * replaced by their ciphertext: every other byte goes out as the engine sent it.
 *
 * It handles chat completion events only (a completions event's text is the general path's)
 * and their common shape, and declines (returns 0) everything else, which then takes the
 * general json-c path in e2ee_resp.c: so its answer is never a guess. It declines on anything
 * that is not strict JSON; a member name with an escape (a client's parser would unescape
 * "cont\u0065nt"); a repeated member among those it looks at (json-c keeps the last, a client
 * may keep the first); a sealed string with a \u escape of a surrogate or a raw control
 * character; a sealed member whose value needs more than a string (NEAR's content parts,
 * audio); an id or model that is not a plain string (the AAD takes their decoded text);
 * a member carrying text the general path must judge (tool calls, refusal, audio, log-
 * probabilities, token ids: taken only when null, tool calls also when []);
 * NEAR's all-fields mode; a bare CR in the event (whitespace to JSON, a line end to SSE);
 * more choices or fields than its fixed tables hold. */
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/e2ee.h"
#include "proxy/e2ee_sess.h"

#define EV_DEPTH_MAX 64 /* nesting of skipped values; deeper declines */
#define EV_EDITS_MAX 24
#define EV_CHOICES_MAX 8
#define EV_ID_MAX 256 /* id and model bytes used in an AAD; longer declines */

enum ev_field { EV_CONTENT, EV_REASONING_CONTENT, EV_REASONING, EV_NFIELDS };
static const char *const FIELD_NAME[EV_NFIELDS] = {"content", "reasoning_content", "reasoning"};

typedef struct {
    size_t b, e;  /* the span replaced: a string value with its quotes, or a whole member */
    int del;      /* delete the member (an empty streamed content, §5.2, §7.3) */
    int esc;      /* the string holds escapes: decode before sealing */
    int field;    /* enum ev_field */
    int choice;   /* slot in choices[] */
} ev_edit_t;

typedef struct {
    long long index; /* the choice's `index` member, else its position */
    size_t pos;
} ev_choice_t;

typedef struct {
    const char *p;
    size_t n, i;
    ev_edit_t edit[EV_EDITS_MAX];
    int nedit;
    ev_choice_t choice[EV_CHOICES_MAX];
    int nchoice;
    size_t id_b, id_n, model_b, model_n; /* decoded-equal raw spans (no escapes), inside quotes */
    int has_id, has_model;
} ev_t;

/* The outcome of a scanning step: go on, decline (take the json-c path). */
#define EV_OK 0
#define EV_NO 1

static void ws(ev_t *x)
{
    while (x->i < x->n &&
           (x->p[x->i] == ' ' || x->p[x->i] == '\t' || x->p[x->i] == '\n' || x->p[x->i] == '\r'))
        x->i++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(p[k]);
        if (h < 0)
            return -1;
        v = v << 4 | (unsigned)h;
    }
    *out = v;
    return 0;
}

/* A string at x->i (its opening quote): strict (no raw control character, only JSON's
 * escapes). *esc: it holds a backslash; *surr: it holds a \u escape of a surrogate (declined
 * where its decoded bytes matter: json-c and a client may decode a lone one differently). */
static int str(ev_t *x, size_t *b, size_t *e, int *esc, int *surr)
{
    if (x->i >= x->n || x->p[x->i] != '"')
        return EV_NO;
    *b = x->i++;
    *esc = *surr = 0;
    while (x->i < x->n) {
        /* the common bytes in a tight loop, on locals: no quote, backslash or control */
        const unsigned char *q = (const unsigned char *)x->p;
        size_t i = x->i, n = x->n;
        while (i < n && q[i] >= 0x20 && q[i] != '"' && q[i] != '\\')
            i++;
        x->i = i;
        if (i >= n)
            break;
        unsigned char c = q[i];
        if (c == '"') {
            *e = ++x->i;
            return EV_OK;
        }
        if (c < 0x20)
            return EV_NO;
        if (c != '\\') {
            x->i++;
            continue;
        }
        *esc = 1;
        if (x->i + 1 >= x->n)
            return EV_NO;
        char t = x->p[x->i + 1];
        if (t == 'u') {
            unsigned v;
            if (x->i + 6 > x->n || hex4(x->p + x->i + 2, &v) != 0)
                return EV_NO;
            if (v >= 0xD800 && v <= 0xDFFF)
                *surr = 1;
            x->i += 6;
        } else if (strchr("\"\\/bfnrt", t) && t) {
            x->i += 2;
        } else {
            return EV_NO;
        }
    }
    return EV_NO;
}

static int digits(ev_t *x)
{
    size_t s = x->i;
    while (x->i < x->n && x->p[x->i] >= '0' && x->p[x->i] <= '9')
        x->i++;
    return x->i > s ? EV_OK : EV_NO;
}

/* A number (JSON's grammar). *integer: no fraction or exponent. */
static int number(ev_t *x, int *integer)
{
    *integer = 1;
    if (x->i < x->n && x->p[x->i] == '-')
        x->i++;
    if (x->i < x->n && x->p[x->i] == '0')
        x->i++;
    else if (digits(x) != EV_OK)
        return EV_NO;
    if (x->i < x->n && x->p[x->i] == '.') {
        x->i++;
        *integer = 0;
        if (digits(x) != EV_OK)
            return EV_NO;
    }
    if (x->i < x->n && (x->p[x->i] == 'e' || x->p[x->i] == 'E')) {
        x->i++;
        *integer = 0;
        if (x->i < x->n && (x->p[x->i] == '+' || x->p[x->i] == '-'))
            x->i++;
        if (digits(x) != EV_OK)
            return EV_NO;
    }
    return EV_OK;
}

static int literal(ev_t *x, const char *w)
{
    size_t l = strlen(w);
    if (x->n - x->i < l || memcmp(x->p + x->i, w, l) != 0)
        return EV_NO;
    x->i += l;
    return EV_OK;
}

/* [] with optional whitespace: 1 and passed over, else 0 and nothing consumed. */
static int empty_array(ev_t *x)
{
    size_t save = x->i;
    if (x->i < x->n && x->p[x->i] == '[') {
        x->i++;
        ws(x);
        if (x->i < x->n && x->p[x->i] == ']')
            return x->i++, 1;
    }
    x->i = save;
    return 0;
}

/* After a member or an element: ws, then the container's close (consumed: EV_DONE) or a
 * comma (consumed, *comma its position, and ws: EV_OK, the next one follows); else EV_NO. */
#define EV_DONE 2
static int after_item(ev_t *x, char close, size_t *comma)
{
    ws(x);
    if (x->i >= x->n)
        return EV_NO;
    if (x->p[x->i] == close)
        return x->i++, EV_DONE;
    if (x->p[x->i] != ',')
        return EV_NO;
    if (comma)
        *comma = x->i;
    x->i++;
    ws(x);
    return EV_OK;
}

/* Any value, validated and passed over. */
static int skip(ev_t *x, int depth)
{
    if (depth > EV_DEPTH_MAX || x->i >= x->n)
        return EV_NO;
    char c = x->p[x->i];
    size_t b, e;
    int esc, surr, integer;
    if (c == '"')
        return str(x, &b, &e, &esc, &surr);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        x->i++;
        ws(x);
        if (x->i < x->n && x->p[x->i] == close)
            return x->i++, EV_OK;
        for (;;) {
            if (c == '{') {
                if (str(x, &b, &e, &esc, &surr) != EV_OK)
                    return EV_NO;
                ws(x);
                if (x->i >= x->n || x->p[x->i] != ':')
                    return EV_NO;
                x->i++;
                ws(x);
            }
            if (skip(x, depth + 1) != EV_OK)
                return EV_NO;
            int a = after_item(x, close, NULL);
            if (a != EV_OK)
                return a == EV_DONE ? EV_OK : EV_NO;
        }
    }
    if (c == 't')
        return literal(x, "true");
    if (c == 'f')
        return literal(x, "false");
    if (c == 'n')
        return literal(x, "null");
    return number(x, &integer);
}

/* An object member's name at x->i, then the colon: *name/len the raw text inside the
 * quotes; a name with an escape declines. *mb: where the member begins. */
static int member_name(ev_t *x, const char **name, size_t *len, size_t *mb)
{
    size_t b, e;
    int esc, surr;
    *mb = x->i;
    if (str(x, &b, &e, &esc, &surr) != EV_OK || esc)
        return EV_NO;
    *name = x->p + b + 1;
    *len = e - b - 2;
    ws(x);
    if (x->i >= x->n || x->p[x->i] != ':')
        return EV_NO;
    x->i++;
    ws(x);
    return EV_OK;
}

static int is(const char *name, size_t len, const char *w)
{
    return strlen(w) == len && memcmp(name, w, len) == 0;
}

/* What the session's format does with a delta member holding a string (§3.4, §5.2, §7.3):
 * 0 leave it, 1 seal it, 2 delete it (an empty streamed content). */
static int rule(const e2ee_sess_t *s, int field, int empty)
{
    if (s->near)
        return empty ? 0 : 1;
    return field == EV_CONTENT && empty ? 2 : 1;
}

/* A member that must be null (or absent) for the fast path: text this format may leave
 * unsealed, which the general path refuses to send (e2ee_resp.c, in_clear), or sealed
 * only by the general path (audio). Taken when null; anything else declines. */
static int must_be_null(ev_t *x) { return literal(x, "null"); }

/* The delta object of choice slot ch. */
static int delta(ev_t *x, const e2ee_sess_t *s, int ch)
{
    if (x->i >= x->n || x->p[x->i] != '{')
        return EV_NO; /* a delta that is not an object: json-c leaves it, rare, decline */
    x->i++;
    ws(x);
    if (x->i < x->n && x->p[x->i] == '}')
        return x->i++, EV_OK;
    unsigned seen = 0;
    size_t comma = SIZE_MAX; /* the comma before this member */
    for (;;) {
        const char *name;
        size_t len, mb;
        if (member_name(x, &name, &len, &mb) != EV_OK)
            return EV_NO;
        int f = -1;
        for (int k = 0; k < EV_NFIELDS; k++)
            if (is(name, len, FIELD_NAME[k]))
                f = k;
        if (f >= 0) {
            if (seen & 1u << f)
                return EV_NO;
            seen |= 1u << f;
            char c = x->i < x->n ? x->p[x->i] : 0;
            if (c == '"') {
                size_t b, e;
                int esc, surr;
                if (str(x, &b, &e, &esc, &surr) != EV_OK || surr)
                    return EV_NO;
                int r = rule(s, f, e - b == 2);
                if (r) {
                    if (x->nedit == EV_EDITS_MAX)
                        return EV_NO;
                    ev_edit_t *ed = &x->edit[x->nedit++];
                    *ed = (ev_edit_t){b, e, 0, esc, f, ch};
                    if (r == 2) {
                        ed->del = 1;
                        size_t save = x->i;
                        ws(x);
                        if (comma != SIZE_MAX) { /* ,"content":"" */
                            ed->b = comma;
                            ed->e = save;
                        } else if (x->i < x->n && x->p[x->i] == ',') { /* "content":"", */
                            ed->b = mb;
                            ed->e = x->i + 1;
                        } else { /* the only member */
                            ed->b = mb;
                            ed->e = save;
                        }
                        x->i = save;
                    }
                }
            } else if (c == 'n') {
                if (literal(x, "null") != EV_OK)
                    return EV_NO;
            } else {
                /* an array or another value: NEAR's content parts, or a value ACI refuses
                 * and the others leave; the general path knows each */
                return EV_NO;
            }
        } else if (is(name, len, "audio") || is(name, len, "refusal") ||
                   is(name, len, "function_call")) {
            if (must_be_null(x) != EV_OK)
                return EV_NO;
        } else if (is(name, len, "tool_calls")) {
            if (must_be_null(x) != EV_OK && !empty_array(x))
                return EV_NO;
        } else if (skip(x, 3) != EV_OK) {
            return EV_NO;
        }
        int a = after_item(x, '}', &comma);
        if (a != EV_OK)
            return a == EV_DONE ? EV_OK : EV_NO;
    }
}

/* One element of choices at position pos. */
static int choice(ev_t *x, const e2ee_sess_t *s, size_t pos)
{
    if (x->i >= x->n || x->p[x->i] != '{')
        return skip(x, 2); /* not an object: nothing in it is sealed (as json-c's path) */
    if (x->nchoice == EV_CHOICES_MAX)
        return EV_NO;
    int ch = x->nchoice++;
    x->choice[ch] = (ev_choice_t){(long long)pos, pos};
    x->i++;
    ws(x);
    if (x->i < x->n && x->p[x->i] == '}')
        return x->i++, EV_OK;
    int seen_delta = 0, seen_index = 0;
    for (;;) {
        const char *name;
        size_t len, mb;
        if (member_name(x, &name, &len, &mb) != EV_OK)
            return EV_NO;
        if (is(name, len, "delta")) {
            if (seen_delta++ || delta(x, s, ch) != EV_OK)
                return EV_NO;
        } else if (is(name, len, "index")) {
            size_t b = x->i;
            int integer;
            if (seen_index++ || number(x, &integer) != EV_OK || !integer || x->i - b > 18)
                return EV_NO;
            char tmp[24];
            memcpy(tmp, x->p + b, x->i - b);
            tmp[x->i - b] = 0;
            x->choice[ch].index = strtoll(tmp, NULL, 10);
        } else if (is(name, len, "message")) {
            return EV_NO; /* an event with a message: the general path */
        } else if (is(name, len, "logprobs") || is(name, len, "token_ids")) {
            if (must_be_null(x) != EV_OK)
                return EV_NO;
        } else if (skip(x, 2) != EV_OK) {
            return EV_NO;
        }
        int a = after_item(x, '}', NULL);
        if (a != EV_OK)
            return a == EV_DONE ? EV_OK : EV_NO;
    }
}

/* A top-level id or model: a string without escapes, kept for the AAD; anything else
 * declines (the AAD takes its decoded text or its JSON text). */
static int plain_str(ev_t *x, size_t *b, size_t *n, int *has)
{
    size_t sb, se;
    int esc, surr;
    if (*has || str(x, &sb, &se, &esc, &surr) != EV_OK || esc || se - sb - 2 > EV_ID_MAX)
        return EV_NO;
    *has = 1;
    *b = sb + 1;
    *n = se - sb - 2;
    return EV_OK;
}

static int event(ev_t *x, const e2ee_sess_t *s)
{
    ws(x);
    if (x->i >= x->n || x->p[x->i] != '{')
        return EV_NO;
    x->i++;
    ws(x);
    if (x->i < x->n && x->p[x->i] == '}')
        x->i++;
    else {
        int seen_choices = 0;
        for (;;) {
            const char *name;
            size_t len, mb;
            if (member_name(x, &name, &len, &mb) != EV_OK)
                return EV_NO;
            if (is(name, len, "id")) {
                if (plain_str(x, &x->id_b, &x->id_n, &x->has_id) != EV_OK)
                    return EV_NO;
            } else if (is(name, len, "model")) {
                if (plain_str(x, &x->model_b, &x->model_n, &x->has_model) != EV_OK)
                    return EV_NO;
            } else if (is(name, len, "choices")) {
                if (seen_choices++ || x->i >= x->n)
                    return EV_NO;
                if (x->p[x->i] != '[') {
                    if (skip(x, 1) != EV_OK)
                        return EV_NO;
                } else {
                    x->i++;
                    ws(x);
                    size_t pos = 0;
                    if (x->i < x->n && x->p[x->i] == ']')
                        x->i++;
                    else
                        for (;; pos++) {
                            if (choice(x, s, pos) != EV_OK)
                                return EV_NO;
                            int a = after_item(x, ']', NULL);
                            if (a == EV_DONE)
                                break;
                            if (a != EV_OK)
                                return EV_NO;
                        }
                }
            } else if (is(name, len, "prompt_logprobs") || is(name, len, "prompt_token_ids")) {
                if (must_be_null(x) != EV_OK)
                    return EV_NO;
            } else if (skip(x, 1) != EV_OK) {
                return EV_NO;
            }
            int a = after_item(x, '}', NULL);
            if (a == EV_DONE)
                break;
            if (a != EV_OK)
                return EV_NO;
        }
    }
    ws(x);
    return x->i == x->n ? EV_OK : EV_NO;
}

/* Appends the decoded text of the string span [b, e) (with its quotes) to out (wiped
 * growth). The span was validated by str() and holds no surrogate escape. */
static int decode(const char *p, size_t b, size_t e, buf_t *out)
{
    if (buf_reserve_wiped(out, e - b) != 0) /* decoding never grows the text */
        return -1;
    char *o = out->data + out->len;
    for (size_t i = b + 1; i + 1 < e; i++) {
        if (p[i] != '\\') {
            *o++ = p[i];
            continue;
        }
        char t = p[++i];
        switch (t) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned v = 0;
            (void)hex4(p + i + 1, &v);
            i += 4;
            if (v < 0x80) {
                *o++ = (char)v;
            } else if (v < 0x800) {
                *o++ = (char)(0xC0 | v >> 6);
                *o++ = (char)(0x80 | (v & 0x3F));
            } else {
                *o++ = (char)(0xE0 | v >> 12);
                *o++ = (char)(0x80 | (v >> 6 & 0x3F));
                *o++ = (char)(0x80 | (v & 0x3F));
            }
            break;
        }
        default: *o++ = t; break; /* " \ / */
        }
    }
    out->len = (size_t)(o - out->data);
    return 0;
}

int e2ee_event_fast(e2ee_sess_t *s, const char *p, size_t n, buf_t *out)
{
    /* a bare CR inside the line ends a line for an SSE parser: the general path, which
     * prints the event compact, takes it */
    if (s->route != E2EE_ROUTE_CHAT || s->all_fields || memchr(p, '\r', n))
        return 0; /* completions' choices[].text and the rest: the general path */
    ev_t x;
    x.p = p;
    x.n = n;
    x.i = 0;
    x.nedit = x.nchoice = 0;
    x.has_id = x.has_model = 0;
    x.id_b = x.id_n = x.model_b = x.model_n = 0;
    if (event(&x, s) != EV_OK)
        return 0;
    size_t at = 0;
    for (int k = 0; k < x.nedit; k++) {
        const ev_edit_t *ed = &x.edit[k];
        if (buf_append_wiped(out, p + at, ed->b - at) != 0)
            return -1;
        at = ed->e;
        if (ed->del)
            continue;
        char aad[4096], path[128];
        size_t aad_n = 0;
        const ev_choice_t *ch = &x.choice[ed->choice];
        if (s->format == E2EE_F_DSTACK_V2) {
            /* §6.1: the event's model and id (absent: ""), the choice's position */
            if (e2ee_aad_dstack_resp(aad, sizeof aad, &aad_n, s->algo, p + x.model_b, x.model_n,
                                     p + x.id_b, x.id_n, ch->pos, FIELD_NAME[ed->field],
                                     s->nonce, s->nonce_n, s->ts) != E2EE_OK)
                return -1;
        } else if (s->format == E2EE_F_ACI_V2) {
            /* §7.3: the request's model, the event's id or "", the choice's index */
            snprintf(path, sizeof path, "choices.%lld.delta.%s", ch->index, FIELD_NAME[ed->field]);
            if (e2ee_aad_aci(aad, sizeof aad, &aad_n, s->cipher, s->model, s->model_n,
                             p + x.id_b, x.id_n, path, s->nonce, s->nonce_n, s->ts) != E2EE_OK)
                return -1;
        }
        const char *pt = p + ed->b + 1;
        size_t pn = ed->e - ed->b - 2;
        if (ed->esc) {
            buf_reset(&s->plain);
            if (decode(p, ed->b, ed->e, &s->plain) != 0)
                return -1;
            pt = s->plain.data;
            pn = s->plain.len;
        }
        int rc = buf_append_wiped(out, "\"", 1) != 0 ||
                         e2ee_seal_append(s, pt, pn, aad, aad_n, out) != 0 ||
                         buf_append_wiped(out, "\"", 1) != 0
                     ? -1
                     : 0;
        if (ed->esc)
            sodium_memzero(s->plain.data, s->plain.len);
        if (rc != 0)
            return -1;
    }
    return buf_append_wiped(out, p + at, n - at) != 0 ? -1 : 1;
}
