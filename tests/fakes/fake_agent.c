/* A fake dstack guest agent (and legacy tappd) for the unit tests, serving the real dstack
 * v0.5.5 test vectors over a Unix socket from a thread of the test process: GetQuote /
 * Tappd.TdxQuote return the sample quote with the requested report_data patched in, the sample
 * event log, and a vm_config; Info returns the sample Info with tcb_info as a JSON *string*
 * (as the agent sends it); GetKey derives sha256("fake-kms" || app_id || path). Knobs make it
 * slow, answer garbage, fail with 500, or hang up. Also a fake configfs-tsm tree whose outblob
 * is a FIFO served by a "kernel" thread.
 *
 * Include this file from a test (it is not part of libvp). Needs VP_TEST_VECTORS or the
 * repository root as the working directory. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/hex.h"
#include "core/sha.h"
#include "tdx/quote.h"

typedef struct fake_agent {
    char sock[108];
    int lfd;
    int tappd;
    pthread_t th;
    _Atomic int stop;
    /* knobs (set before requests) */
    _Atomic int delay_ms;       /* sleep before every answer */
    _Atomic int garbage;        /* 200 with a body that is not JSON */
    _Atomic int fail_500;       /* this many next requests get HTTP 500 */
    _Atomic int hang_up;        /* this many next connections are closed unanswered */
    _Atomic int bad_rd;         /* quote without our report_data */
    _Atomic int chunked;        /* answer with chunked transfer coding */
    _Atomic int long_key;       /* GetKey answers 64 key bytes instead of 32 */
    _Atomic int trailing_nl;    /* 200 bodies end with "\r\n" (valid JSON whitespace) */
    const char *_Atomic tappd_alg; /* TdxQuote's hash_algorithm answer; NULL: "raw" */
    /* counters */
    _Atomic int n_quote, n_info, n_key, n_conn;
    /* data */
    buf_t quote;                /* sample quote bytes */
    size_t rd_off;              /* offset of report_data in it */
    buf_t event_log;            /* JSON array text */
    buf_t info_wire;            /* Info response as the agent sends it */
    char app_id[64];
} fake_agent_t;

#include "vectors.h"

static int slurp(const char *rel, buf_t *out) { return vec_slurp(rel, out); }

static void fake_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int fake_load_vectors(fake_agent_t *a)
{
    buf_t hex = BUF_INIT, info = BUF_INIT;
    if (slurp("tdx/dstack-v055-sample/quote.hex", &hex) || slurp("tdx/dstack-v055-sample/event_log.json", &a->event_log) ||
        slurp("tdx/dstack-v055-sample/info_sdk_parsed.json", &info))
        return -1;
    while (hex.len && (hex.data[hex.len - 1] == '\n' || hex.data[hex.len - 1] == '\r'))
        hex.len--;
    buf_reserve(&a->quote, hex.len / 2 + 1);
    a->quote.len = (size_t)hex_decode((uint8_t *)a->quote.data, hex.len / 2, hex.data, hex.len);
    while (a->event_log.len && a->event_log.data[a->event_log.len - 1] == '\n')
        a->event_log.len--;
    tdx_quote_t q;
    if (tdx_quote_parse(&q, (const uint8_t *)a->quote.data, a->quote.len) != 0)
        return -1;
    a->rd_off = (size_t)(q.body.report_data - q.data);
    /* Info on the wire: tcb_info is a JSON string holding the object. */
    struct json_object *o = json_tokener_parse(info.data);
    struct json_object *t = NULL, *id = NULL;
    if (!o || !json_object_object_get_ex(o, "tcb_info", &t))
        return -1;
    if (json_object_object_get_ex(o, "app_id", &id))
        snprintf(a->app_id, sizeof a->app_id, "%s", json_object_get_string(id));
    const char *ts = json_object_to_json_string_ext(t, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
    json_object_object_add(o, "tcb_info", json_object_new_string(ts));
    buf_puts(&a->info_wire, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    buf_free(&hex);
    buf_free(&info);
    return 0;
}

static void fake_send(int fd, int status, const char *body, size_t n, int chunked)
{
    buf_t r = BUF_INIT;
    if (chunked) {
        buf_printf(&r, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", status);
        size_t half = n / 2;
        if (half)
            buf_printf(&r, "%zx\r\n", half), buf_append(&r, body, half), buf_puts(&r, "\r\n");
        if (n - half)
            buf_printf(&r, "%zx\r\n", n - half), buf_append(&r, body + half, n - half), buf_puts(&r, "\r\n");
        buf_puts(&r, "0\r\n\r\n");
    } else {
        buf_printf(&r, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n", status, n);
        buf_append(&r, body, n);
    }
    size_t off = 0;
    while (off < r.len) {
        ssize_t w = send(fd, r.data + off, r.len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    buf_free(&r);
}

/* The JSON string value of key in body, or "". */
static void fake_field(const char *body, const char *key, char *out, size_t cap)
{
    out[0] = 0;
    struct json_object *o = json_tokener_parse(body), *v;
    if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
        snprintf(out, cap, "%s", json_object_get_string(v));
    json_object_put(o);
}

static void fake_handle(fake_agent_t *a, int fd, const char *path, const char *body)
{
    buf_t out = BUF_INIT;
    const char *m = strrchr(path, '/');
    m = m ? m + 1 : path;
    if (a->tappd && !strncmp(m, "Tappd.", 6))
        m += 6;
    if (a->delay_ms)
        fake_sleep_ms(a->delay_ms);
    if (a->fail_500 > 0) {
        a->fail_500--;
        fake_send(fd, 500, "{\"error\":\"injected failure\"}", 28, 0);
        return;
    }
    if (a->garbage) {
        fake_send(fd, 200, "<html>not json</html>", 21, a->chunked);
        return;
    }
    if (!strcmp(m, "GetQuote") || !strcmp(m, "TdxQuote")) {
        a->n_quote++;
        char rdhex[200];
        uint8_t rd[64] = {0};
        fake_field(body, "report_data", rdhex, sizeof rdhex);
        if (hex_decode(rd, 64, rdhex, strlen(rdhex)) < 0) {
            fake_send(fd, 400, "{\"error\":\"bad report_data\"}", 27, 0);
            return;
        }
        buf_t q = BUF_INIT;
        buf_append(&q, a->quote.data, a->quote.len);
        if (!a->bad_rd)
            memcpy(q.data + a->rd_off, rd, 64);
        char *qh = malloc(2 * q.len + 1);
        hex_encode(qh, (const uint8_t *)q.data, q.len);
        buf_printf(&out, "{\"quote\":\"%s\",\"event_log\":", qh);
        buf_json_str(&out, a->event_log.data, a->event_log.len);
        if (a->tappd) {
            buf_printf(&out, ",\"hash_algorithm\":\"%s\",\"prefix\":\"\"}", a->tappd_alg ? a->tappd_alg : "raw");
        } else {
            char rdfull[129];
            hex_encode(rdfull, rd, 64);
            buf_printf(&out, ",\"report_data\":\"%s\",\"vm_config\":", rdfull);
            const char *vm = "{\"spec_version\":1,\"cpu_count\":24,\"memory_size\":274877906944,\"num_gpus\":1}";
            buf_json_str(&out, vm, strlen(vm));
            buf_puts(&out, "}");
        }
        free(qh);
        buf_free(&q);
    } else if (!strcmp(m, "Info")) {
        a->n_info++;
        buf_append(&out, a->info_wire.data, a->info_wire.len);
    } else if (!strcmp(m, "GetKey") && !a->tappd) {
        a->n_key++;
        char kpath[256];
        uint8_t k[32];
        char kh[65];
        buf_t in = BUF_INIT;
        fake_field(body, "path", kpath, sizeof kpath);
        buf_printf(&in, "fake-kms|%s|%s", a->app_id, kpath);
        sha256(in.data, in.len, k);
        hex_encode(kh, k, 32);
        buf_printf(&out, "{\"key\":\"%s%s\",\"signature_chain\":[\"00\",\"11\"]}", kh, a->long_key ? kh : "");
        buf_free(&in);
    } else {
        fake_send(fd, 404, "{\"error\":\"no such method\"}", 26, 0);
        return;
    }
    if (a->trailing_nl)
        buf_puts(&out, "\r\n");
    fake_send(fd, 200, out.data, out.len, a->chunked);
    buf_free(&out);
}

static void fake_serve_conn(fake_agent_t *a, int fd)
{
    buf_t in = BUF_INIT;
    char tmp[8192];
    for (;;) {
        ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n <= 0)
            break;
        buf_append(&in, tmp, (size_t)n);
        char *hend = strstr(in.data, "\r\n\r\n");
        if (!hend)
            continue;
        size_t cl = 0;
        const char *h = strcasestr(in.data, "content-length:");
        if (h && h < hend)
            cl = strtoul(h + 15, NULL, 10);
        size_t have = in.len - (size_t)(hend + 4 - in.data);
        if (have < cl)
            continue;
        char method[16] = "", path[256] = "";
        sscanf(in.data, "%15s %255s", method, path);
        fake_handle(a, fd, path, hend + 4);
        break;
    }
    buf_free(&in);
}

static void *fake_main(void *arg)
{
    fake_agent_t *a = arg;
    while (!a->stop) {
        int fd = accept(a->lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (a->stop) {
            close(fd);
            break;
        }
        a->n_conn++;
        if (a->hang_up > 0) {
            a->hang_up--;
            close(fd);
            continue;
        }
        fake_serve_conn(a, fd);
        close(fd);
    }
    return NULL;
}

/* Starts a fake agent on a fresh socket path. NULL on failure. */
__attribute__((unused)) static fake_agent_t *fake_agent_start(int tappd)
{
    static int seq;
    fake_agent_t *a = calloc(1, sizeof *a);
    a->tappd = tappd;
    if (fake_load_vectors(a) != 0) {
        free(a);
        return NULL;
    }
    snprintf(a->sock, sizeof a->sock, "/tmp/vp-fake-agent-%d-%d.sock", (int)getpid(), seq++);
    unlink(a->sock);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, a->sock, strlen(a->sock) + 1);
    a->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (a->lfd < 0 || bind(a->lfd, (struct sockaddr *)&sa, sizeof sa) || listen(a->lfd, 64) ||
        pthread_create(&a->th, NULL, fake_main, a)) {
        free(a);
        return NULL;
    }
    return a;
}

__attribute__((unused)) static void fake_agent_stop(fake_agent_t *a)
{
    if (!a)
        return;
    a->stop = 1;
    a->delay_ms = 0;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0); /* wake accept() */
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, a->sock, strlen(a->sock) + 1);
    connect(fd, (struct sockaddr *)&sa, sizeof sa);
    pthread_join(a->th, NULL);
    close(fd);
    close(a->lfd);
    unlink(a->sock);
    buf_free(&a->quote);
    buf_free(&a->event_log);
    buf_free(&a->info_wire);
    free(a);
}

/* ---- fake configfs-tsm ---- */

typedef struct fake_tsm {
    char root[256];
    char dir[300];
    pthread_t th;
    _Atomic int stop;
    _Atomic int race;           /* bump generation by 2 (another writer) this many times */
    _Atomic int served;
    _Atomic unsigned long long gen;
    buf_t quote;
    size_t rd_off;
} fake_tsm_t;

static void fake_tsm_write(const char *dir, const char *name, const void *p, size_t n)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(p, 1, n, f);
        fclose(f);
    }
}

static void *fake_tsm_main(void *arg)
{
    fake_tsm_t *t = arg;
    char path[400];
    snprintf(path, sizeof path, "%s/outblob", t->dir);
    char ip[400];
    snprintf(ip, sizeof ip, "%s/inblob", t->dir);
    while (!t->stop) {
        /* One round per inblob write: the previous round deleted inblob, so a reader still
         * draining the FIFO cannot get a second quote appended. */
        struct stat st;
        if (stat(ip, &st) != 0) {
            fake_sleep_ms(1);
            continue;
        }
        int fd = open(path, O_WRONLY); /* blocks until a reader opens outblob */
        if (fd < 0)
            break;
        if (t->stop) {
            close(fd);
            break;
        }
        uint8_t rd[64] = {0};
        FILE *f = fopen(ip, "rb");
        if (f) {
            if (fread(rd, 1, 64, f) != 64)
                memset(rd, 0, 64);
            fclose(f);
        }
        unlink(ip);
        t->gen += t->race > 0 ? 2 : 1;
        if (t->race > 0)
            t->race--;
        char g[32];
        int gl = snprintf(g, sizeof g, "%llu\n", t->gen);
        fake_tsm_write(t->dir, "generation", g, (size_t)gl);
        buf_t q = BUF_INIT;
        buf_append(&q, t->quote.data, t->quote.len);
        memcpy(q.data + t->rd_off, rd, 64);
        size_t off = 0;
        while (off < q.len) {
            ssize_t w = write(fd, q.data + off, q.len - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        buf_free(&q);
        close(fd);
        t->served++;
    }
    return NULL;
}

__attribute__((unused)) static fake_tsm_t *fake_tsm_start(void)
{
    fake_tsm_t *t = calloc(1, sizeof *t);
    fake_agent_t tmp = {0};
    if (fake_load_vectors(&tmp) != 0)
        return NULL;
    t->quote = tmp.quote;
    t->rd_off = tmp.rd_off;
    buf_free(&tmp.event_log);
    buf_free(&tmp.info_wire);
    snprintf(t->root, sizeof t->root, "/tmp/vp-fake-tsm-%d-XXXXXX", (int)getpid());
    if (!mkdtemp(t->root))
        return NULL;
    snprintf(t->dir, sizeof t->dir, "%s/vllm-proxy", t->root);
    mkdir(t->dir, 0700);
    fake_tsm_write(t->dir, "provider", "tdx_guest\n", 10);
    fake_tsm_write(t->dir, "generation", "0\n", 2);
    char fifo[400];
    snprintf(fifo, sizeof fifo, "%s/outblob", t->dir);
    if (mkfifo(fifo, 0600) != 0 || pthread_create(&t->th, NULL, fake_tsm_main, t) != 0)
        return NULL;
    return t;
}

__attribute__((unused)) static void fake_tsm_stop(fake_tsm_t *t)
{
    if (!t)
        return;
    t->stop = 1;
    char p[400];
    snprintf(p, sizeof p, "%s/outblob", t->dir);
    int fd = open(p, O_RDONLY | O_NONBLOCK); /* unblock the kernel thread's open() */
    pthread_join(t->th, NULL);
    if (fd >= 0)
        close(fd);
    const char *files[] = {"outblob", "inblob", "generation", "provider"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", t->dir, files[i]);
        unlink(p);
    }
    rmdir(t->dir);
    rmdir(t->root);
    buf_free(&t->quote);
    free(t);
}
