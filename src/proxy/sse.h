/* Incremental Server-Sent-Events framer for a streaming completion's (de-chunked) response
 * body: finds the chat id (the string "id" of the first JSON data event that has one) and
 * notices the terminating `data: [DONE]`, whatever the network chunking. It never holds the
 * stream: only the data of the current event is buffered, and only until the id is known;
 * after that each byte goes through a small per-line state machine and nothing is copied or
 * allocated. An sse_t belongs to one connection (one thread) at a time. */
#ifndef VP_PROXY_SSE_H
#define VP_PROXY_SSE_H
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define SSE_MAX_ID 256                  /* bytes; a longer id is an error */
#define SSE_MAX_EVENT (1u << 20)        /* bytes of data buffered for one event before the id */

typedef struct sse {
    buf_t event;          /* data lines of the current event, joined by \n (id unknown only) */
    char id[SSE_MAX_ID + 1];
    uint16_t id_len;
    uint8_t have_id;
    uint8_t done;         /* an event whose data is exactly [DONE] was dispatched */
    uint8_t failed;       /* sticky: every later feed returns -1 */
    uint8_t after_cr;     /* last byte was CR: a following LF belongs to the same line end */
    uint8_t line_empty;   /* no byte yet on the current line */
    uint8_t phase;        /* field name, first value byte, value */
    uint8_t name_pos;     /* bytes of "data" matched so far; 5 = not "data" */
    uint8_t is_data;      /* current line is a data line */
    uint8_t done_pos;     /* bytes of "[DONE]" matched in the value; 7 = mismatch */
    uint8_t first_done;   /* the current event's first data line was [DONE] */
    uint32_t ndata;       /* data lines in the current event (saturates at 2) */
} sse_t;

void sse_init(sse_t *s);
/* Back to the initial state for a new stream; keeps the buffer's storage. */
void sse_reset(sse_t *s);
void sse_free(sse_t *s);
/* Feeds the next n bytes. 0, or -1 (sticky) when the stream is malformed before the id is
 * known: a data event that is not valid JSON, an "id" that is not a string, is empty, longer
 * than SSE_MAX_ID or has control characters, an event over SSE_MAX_EVENT, or ENOMEM.
 * Events without an "id" (or with "id": null) are skipped. After the id is known no input
 * is an error. */
int sse_feed(sse_t *s, const char *p, size_t n);
/* End of body: a last line without terminator and a last event without the blank line are
 * processed as if they had been terminated. Same return as sse_feed. Optional. */
int sse_finish(sse_t *s);
/* The chat id (NUL-terminated, owned by s), or NULL until found. */
const char *sse_chat_id(const sse_t *s);
int sse_done_seen(const sse_t *s);

#endif
