/* The verifier's text output for people: a header block saying what was verified (target,
 * time, nonce, signing key, model, compose hash, OS image, TCB status) and the verdict, then
 * one short line per check, grouped by layer (report, CPU TEE, GPU, keys and binding, answer),
 * with a plain-language name, hex values shortened (unless verbose) and every line at most
 * VOUT_WIDTH columns. It reads only the checklist items (id, status, what, expected, found), so
 * a check added anywhere with check_add gets this format: its layer comes from its id's first
 * component and its name from a table of known ids, else from its `what` sentence.
 *
 * The header's values are "facts" the checkers record as they go (vx_fact); they are kept in
 * this module (the verifier is single-threaded) so that checks run into a sub-checklist (chat's
 * per-key reports) record them too. The JSON output does not carry them. */
#ifndef VP_VERIFY_VOUT_H
#define VP_VERIFY_VOUT_H
#include <stddef.h>

#include "core/buf.h"
#include "core/check.h"

#define VOUT_WIDTH 100

/* Header keys (others may be recorded too: shown after these, in the order first recorded). */
#define VF_TARGET "verified"
#define VF_TIME "checked at"
#define VF_NONCE "nonce"
#define VF_SIGNING "signing key"
#define VF_MODEL "model"
#define VF_COMPOSE "compose hash"
#define VF_OS_IMAGE "OS image"
#define VF_TCB "TCB status"
#define VF_TLS "TLS"

/* Records a header value. A second, different value for the same key is appended (", "), up
 * to three; an identical one is ignored. */
void vx_fact(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The recorded value, or NULL. */
const char *vx_fact_get(const char *key);
void vx_facts_free(void);

typedef struct vout_opts {
    const char *cmd; /* the subcommand */
    int code;        /* VX_OK, VX_FAIL or VX_ERROR */
    int color;       /* ANSI colours (a terminal, NO_COLOR unset, or --color) */
    int verbose;     /* full hex values, the `what` and `expected` of every line */
    int allow_simulated;
    int full_header;   /* report and chat: every header key, "not stated" when unset */
    const char *error; /* the first input error, or NULL */
} vout_opts_t;

/* Appends the whole text output (header, grouped lines, the final verdict line). */
void vout_render(const checklist_t *cl, const vout_opts_t *o, buf_t *out);

/* Copies s into out with control bytes and invalid UTF-8 replaced by '?', newlines and tabs
 * by spaces, and (shorten) every run of 24 or more hex digits cut to its first 8 and last 4
 * around "…". */
void vout_clean(const char *s, int shorten, buf_t *out);

#endif
