/* A verification checklist: one line per check with what was expected and what was found.
 * Shared by every checker of the verifier (TDX quote, collateral, event log, GPU evidence,
 * signatures) so that the text and JSON outputs are uniform. Not thread-safe. */
#ifndef VP_CORE_CHECK_H
#define VP_CORE_CHECK_H

#include <stddef.h>

#include "core/buf.h"

typedef enum { CHK_PASS = 0, CHK_FAIL, CHK_SKIP, CHK_WARN } chk_status_t;

typedef struct check_item {
    char id[64];         /* stable machine name, e.g. "tdx.quote.signature" */
    chk_status_t status;
    char *what;          /* one human sentence: what this check proves */
    char *expected;      /* may be "" */
    char *found;         /* may be "" */
} check_item_t;

typedef struct checklist {
    check_item_t *items;
    size_t n, cap;
} checklist_t;

#define CHECKLIST_INIT {NULL, 0, 0}

/* Adds one line; expected/found may be NULL. Returns the status it was given, so checkers can
 * write `ok &= check_add(...) == CHK_PASS`. */
chk_status_t check_add(checklist_t *cl, const char *id, chk_status_t st, const char *what,
                       const char *expected, const char *found);
/* printf-style variant for `found`. */
chk_status_t check_addf(checklist_t *cl, const char *id, chk_status_t st, const char *what,
                        const char *expected, const char *found_fmt, ...)
    __attribute__((format(printf, 6, 7)));
size_t check_count(const checklist_t *cl, chk_status_t st);
/* Human-readable: "[PASS] id  what (expected X, found Y)" per line. color: ANSI colours. */
void check_render_text(const checklist_t *cl, buf_t *out, int color);
/* JSON array of {"id","status":"pass|fail|skip|warn","what","expected","found"}. */
void check_render_json(const checklist_t *cl, buf_t *out);
void check_free(checklist_t *cl);

#endif
