/* Checklist storage and rendering for the verifier. */
#include "core/check.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ST_NAME[] = {"pass", "fail", "skip", "warn"};

chk_status_t check_add(checklist_t *cl, const char *id, chk_status_t st, const char *what,
                       const char *expected, const char *found)
{
    if (cl->n == cl->cap) {
        size_t cap = cl->cap ? cl->cap * 2 : 16;
        check_item_t *p = realloc(cl->items, cap * sizeof *p);
        if (!p)
            return st;
        cl->items = p;
        cl->cap = cap;
    }
    check_item_t *it = &cl->items[cl->n++];
    snprintf(it->id, sizeof it->id, "%s", id);
    it->status = st;
    it->what = strdup(what ? what : "");
    it->expected = strdup(expected ? expected : "");
    it->found = strdup(found ? found : "");
    return st;
}

chk_status_t check_addf(checklist_t *cl, const char *id, chk_status_t st, const char *what,
                        const char *expected, const char *fmt, ...)
{
    char found[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(found, sizeof found, fmt, ap);
    va_end(ap);
    return check_add(cl, id, st, what, expected, found);
}

size_t check_count(const checklist_t *cl, chk_status_t st)
{
    size_t k = 0;
    for (size_t i = 0; i < cl->n; i++)
        k += cl->items[i].status == st;
    return k;
}

void check_render_text(const checklist_t *cl, buf_t *out, int color)
{
    static const char *const tag[] = {"PASS", "FAIL", "SKIP", "WARN"};
    static const char *const col[] = {"\033[32m", "\033[31m", "\033[2m", "\033[33m"};
    for (size_t i = 0; i < cl->n; i++) {
        const check_item_t *it = &cl->items[i];
        buf_printf(out, "%s[%s]%s %-32s %s", color ? col[it->status] : "", tag[it->status],
                   color ? "\033[0m" : "", it->id, it->what);
        if (*it->expected || *it->found) {
            buf_puts(out, " (");
            if (*it->expected)
                buf_printf(out, "expected %s%s", it->expected, *it->found ? ", " : "");
            if (*it->found)
                buf_printf(out, "found %s", it->found);
            buf_puts(out, ")");
        }
        buf_puts(out, "\n");
    }
}

void check_render_json(const checklist_t *cl, buf_t *out)
{
    buf_puts(out, "[");
    for (size_t i = 0; i < cl->n; i++) {
        const check_item_t *it = &cl->items[i];
        buf_puts(out, i ? ",{\"id\":" : "{\"id\":");
        buf_json_str(out, it->id, strlen(it->id));
        buf_printf(out, ",\"status\":\"%s\",\"what\":", ST_NAME[it->status]);
        buf_json_str(out, it->what, strlen(it->what));
        buf_puts(out, ",\"expected\":");
        buf_json_str(out, it->expected, strlen(it->expected));
        buf_puts(out, ",\"found\":");
        buf_json_str(out, it->found, strlen(it->found));
        buf_puts(out, "}");
    }
    buf_puts(out, "]");
}

void check_free(checklist_t *cl)
{
    for (size_t i = 0; i < cl->n; i++) {
        free(cl->items[i].what);
        free(cl->items[i].expected);
        free(cl->items[i].found);
    }
    free(cl->items);
    cl->items = NULL;
    cl->n = cl->cap = 0;
}
