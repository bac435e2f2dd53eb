/* Checklist lookups shared by the verifier's unit tests. */
#ifndef VP_TESTS_CHECKS_H
#define VP_TESTS_CHECKS_H
#include <stdio.h>
#include <string.h>

#include "core/check.h"

/* Status of the line `id`, or -1 when the checklist has no such line. */
static inline int check_line_status(const checklist_t *cl, const char *id)
{
    for (size_t i = 0; i < cl->n; i++)
        if (strcmp(cl->items[i].id, id) == 0)
            return (int)cl->items[i].status;
    return -1;
}

/* "found" text of the line `id`, or "" when absent. */
static inline const char *check_line_found(const checklist_t *cl, const char *id)
{
    for (size_t i = 0; i < cl->n; i++)
        if (strcmp(cl->items[i].id, id) == 0)
            return cl->items[i].found;
    return "";
}

/* Prints the checklist to stderr (for failing assertions). */
static inline void check_dump(const checklist_t *cl)
{
    buf_t b = BUF_INIT;
    check_render_text(cl, &b, 0);
    if (b.data)
        fprintf(stderr, "%s", b.data);
    buf_free(&b);
}

#endif
