/* libFuzzer target for the SSE framer: the outcome (error, chat id, [DONE]) must not depend on
 * how the stream is cut into feeds. The first 8 input bytes seed the cut positions. */
#include "fuzz.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/sse.h"

struct outcome {
    int rc;
    int have_id;
    char id[SSE_MAX_ID + 1];
    int done;
};

static uint64_t next_rand(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* maxpiece 0: one feed; otherwise pieces of 1..maxpiece bytes chosen by the seed. */
static struct outcome run(const char *p, size_t n, uint64_t seed, size_t maxpiece, int finish)
{
    sse_t s;
    sse_init(&s);
    struct outcome o;
    memset(&o, 0, sizeof(o));
    size_t at = 0;
    while (at < n && o.rc == 0) {
        size_t k = n - at;
        if (maxpiece) {
            size_t want = 1 + (size_t)(next_rand(&seed) % maxpiece);
            if (want < k)
                k = want;
        }
        o.rc = sse_feed(&s, p + at, k);
        at += k;
    }
    if (o.rc == 0 && finish)
        o.rc = sse_finish(&s);
    const char *id = sse_chat_id(&s);
    if (id) {
        size_t l = strlen(id);
        if (l == 0 || l > SSE_MAX_ID)
            abort();
        for (size_t i = 0; i < l; i++)
            if ((unsigned char)id[i] < 0x20)
                abort();
        o.have_id = 1;
        memcpy(o.id, id, l + 1);
        if (s.event.cap != 0)   /* nothing stays buffered once the id is known */
            abort();
    }
    o.done = sse_done_seen(&s);
    sse_free(&s);
    return o;
}

static void same(const struct outcome *a, const struct outcome *b)
{
    if (a->rc != b->rc || a->have_id != b->have_id || a->done != b->done ||
        strcmp(a->id, b->id) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    if (size >= 8) {
        memcpy(&seed, data, 8);
        seed |= 1;
        data += 8;
        size -= 8;
    }
    const char *p = (const char *)data;
    for (int finish = 0; finish < 2; finish++) {
        struct outcome one = run(p, size, seed, 0, finish);
        struct outcome tiny = run(p, size, seed, 3, finish);
        struct outcome mid = run(p, size, seed, 64, finish);
        same(&one, &tiny);
        same(&one, &mid);
        if (size <= 4096) {
            struct outcome bytes = run(p, size, seed, 1, finish);
            same(&one, &bytes);
        }
    }
    return 0;
}
