/* mock-vllm: an OpenAI-compatible engine stand-in that answers with vLLM's exact bytes, for
 * tests and benchmarks. One libuv loop, one thread; everything here belongs to that thread.
 * main.c: flags, listener, signals. conn.c: HTTP/1.1 connections and the write path.
 * answer.c: routes and the generated answers. media.c: the image and audio routes. */
#ifndef MOCK_VLLM_MOCK_H
#define MOCK_VLLM_MOCK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "core/buf.h"
#include "llhttp.h"

enum chunking { CHUNK_NORMAL = 0, CHUNK_SPLIT, CHUNK_COALESCE };
enum fault_kind { FAULT_NONE = 0, FAULT_500, FAULT_400, FAULT_CUT, FAULT_STALL, FAULT_SLOW_HEADERS };

struct fault {
    int kind;
    long arg; /* K for cut, MS for slow-headers */
};

struct mock_config {
    char *host;
    int port;
    char *unix_path;
    char *model;
    long tokens;
    long delay_us;
    int chunking;
    struct fault fault;
    int record_body; /* --record-body: /mock/last returns the last body */
};

struct mock_stats {
    uint64_t requests, completed, cancelled, active;
};

extern struct mock_config g_cfg;
extern struct mock_stats g_stats;
extern uv_loop_t *g_loop;

/* 0 on success, -1 when the text is not a valid value. */
int parse_chunking(const char *s, int *out);
int parse_fault(const char *s, struct fault *out);

/* Stream generation phases, in wire order. */
enum phase {
    PH_IDLE = 0, PH_WAIT, PH_HEADERS, PH_ROLE, PH_TOKENS, PH_FINAL, PH_USAGE, PH_DONE, PH_TERM,
    PH_END, PH_STALL, PH_CUT
};

/* One completion answer in progress on a connection. */
struct answer {
    int active;        /* counted in g_stats.active */
    int stream, chat, n, include_usage, finish_stop, chunking;
    long tokens, prompt_tokens, delay_us;
    struct fault fault;
    int phase, choice, events;
    long step, allowed, tokens_sent;
    uint64_t t0_ns;
    buf_t pre;         /* 'data: {"id":…,"choices":[' */
    buf_t usage;       /* the usage event, whole */
    buf_t idhex;       /* JSON-escaped id suffix (random hex or X-Request-Id) */
    buf_t model;       /* model name as a JSON string literal */
};

struct conn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_timer_t timer;
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    llhttp_t parser;
    struct conn *prev, *next;   /* all live connections, for shutdown */
    int open_handles;           /* handles not yet closed; freed at 0 */
    int closing;                /* shutting down or closed: no more activity */
    int closed;                 /* uv_close called */
    int writing;                /* a uv_write is queued on out */
    int in_parse;               /* inside the parse loop (no recursion on sync answers) */
    int busy;                   /* a request is being answered; parser paused */
    int reading;
    int keep_alive;
    int close_after;            /* close once the current response is written */
    int counted;                /* the response in progress is a completion (stats) */
    int resp_done;              /* all bytes of the response are in out */
    int hdr_state;              /* 0 none, 1 in a field name, 2 in a value */
    int too_large;              /* status to answer once the request ends, or 0 */
    int method;
    buf_t url, hdrs, body;      /* current request; hdrs = "name:value\n"… (name lower-case) */
    buf_t pending;              /* bytes read while busy */
    buf_t out;                  /* bytes to write; [out_off, len) not yet written */
    size_t out_off;
    size_t piece, piece_from;   /* split writes: pieces of this size from this offset on */
    buf_t scratch;
    struct answer ans;
    char rbuf[65536];
};

/* conn.c */
void conn_accept(uv_stream_t *server, int is_pipe);
void conn_close_all(void);
void conn_flush(struct conn *c);            /* write out; on drain continue the response */
/* Writes out[out_off..len). 1: all went out; 0: the rest is queued (on_write continues);
 * -1: the connection failed and is closing. */
int conn_flush_ret(struct conn *c);
void conn_response_written(struct conn *c); /* resp_done set and out drained */
void conn_abort(struct conn *c, int cancelled);
void conn_shutdown(struct conn *c);        /* FIN after pending writes, then close */
const char *conn_header(struct conn *c, const char *name, size_t *len);
const char *http_date(void);

/* answer.c */
void answer_global_init(void);
void answer_global_free(void);
void answer_request(struct conn *c);       /* a full request is in c->url/hdrs/body */
void answer_pump(struct conn *c);          /* continue a response after a write drained */
void answer_timer(struct conn *c);
void answer_free(struct answer *a);
void send_simple(struct conn *c, int status, const char *ctype, const char *body, size_t len);
void send_error(struct conn *c, int status, const char *msg);

/* media.c: /v1/images/generations, /v1/images/edits, /v1/audio/transcriptions. 1 when path
 * is one of them (then answered), else 0. */
int media_route(struct conn *c, const char *path);

/* Appends or dies: a test tool that ran out of memory has nothing sensible left to do. */
static inline void put(buf_t *b, const void *p, size_t n)
{
    if (buf_append(b, p, n) != 0) {
        fputs("mock-vllm: out of memory\n", stderr);
        abort();
    }
}
#define PUTS(b, lit) put((b), "" lit, sizeof(lit) - 1) /* string literals only */
static inline void reserve(buf_t *b, size_t n)
{
    if (buf_reserve(b, n) != 0) {
        fputs("mock-vllm: out of memory\n", stderr);
        abort();
    }
}

#endif
