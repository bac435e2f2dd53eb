/* mock-vllm entry point: flags, the TCP or Unix listener, and a clean exit on SIGTERM/SIGINT
 * (every handle closed and every allocation released, so valgrind reports nothing). */
#include "mock.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct mock_config g_cfg;
struct mock_stats g_stats;
uv_loop_t *g_loop;

static union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
} listener;
static uv_signal_t sig_term, sig_int;
static int stopping;
static int listener_inited;

static void usage(FILE *f)
{
    fputs("usage: mock-vllm [--listen HOST:PORT | --unix PATH] [--model NAME] [--tokens N]\n"
          "                 [--delay-us N] [--chunking normal|split|coalesce]\n"
          "                 [--fault none|500|400|cut:K|stall|slow-headers:MS] [--record-body]\n"
          "\n"
          "An OpenAI-compatible vLLM stand-in that streams vLLM's exact bytes.\n"
          "  --listen HOST:PORT  TCP address (default 127.0.0.1:8001; port 0 picks one)\n"
          "  --unix PATH         listen on a Unix socket instead (a stale socket is replaced)\n"
          "  --model NAME        model name when the request has none (default mock-model)\n"
          "  --tokens N          tokens per answer without max_tokens (default 16)\n"
          "  --delay-us N        delay before each token, microseconds (default 0)\n"
          "  --chunking MODE     normal: one HTTP chunk per event; split: every byte its own\n"
          "                      chunk and write; coalesce: events packed into few writes\n"
          "  --fault F           500|400: error body; cut:K: close after K tokens without the\n"
          "                      chunked terminator; stall: headers and first event, then\n"
          "                      nothing; slow-headers:MS: headers only after MS ms\n"
          "  --record-body       GET /mock/last also returns the last request's body (tests\n"
          "                      of what the engine received; off: bodies are never kept)\n"
          "Per-request overrides in the JSON body: mock_fault, mock_chunking, mock_delay_us.\n"
          "GET /mock/stats, GET /mock/last, POST /mock/reset. See docs/CONTRACTS.md.\n",
          f);
}

int parse_chunking(const char *s, int *out)
{
    if (strcmp(s, "normal") == 0) *out = CHUNK_NORMAL;
    else if (strcmp(s, "split") == 0) *out = CHUNK_SPLIT;
    else if (strcmp(s, "coalesce") == 0) *out = CHUNK_COALESCE;
    else return -1;
    return 0;
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9')
        return -1;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int parse_fault(const char *s, struct fault *out)
{
    struct fault f = {FAULT_NONE, 0};
    if (strcmp(s, "none") == 0) f.kind = FAULT_NONE;
    else if (strcmp(s, "500") == 0) f.kind = FAULT_500;
    else if (strcmp(s, "400") == 0) f.kind = FAULT_400;
    else if (strcmp(s, "stall") == 0) f.kind = FAULT_STALL;
    else if (strncmp(s, "cut:", 4) == 0) {
        f.kind = FAULT_CUT;
        if (parse_long(s + 4, 0, 1000000000L, &f.arg) != 0) return -1;
    } else if (strncmp(s, "slow-headers:", 13) == 0) {
        f.kind = FAULT_SLOW_HEADERS;
        if (parse_long(s + 13, 0, 3600000L, &f.arg) != 0) return -1;
    } else
        return -1;
    *out = f;
    return 0;
}

static int parse_listen(const char *s)
{
    const char *colon = strrchr(s, ':');
    long port;
    if (!colon || colon == s || parse_long(colon + 1, 0, 65535, &port) != 0)
        return -1;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') { h++; hl -= 2; } /* [::1]:8001 */
    free(g_cfg.host);
    g_cfg.host = hl == 9 && strncmp(h, "localhost", 9) == 0 ? strdup("127.0.0.1") : strndup(h, hl);
    g_cfg.port = (int)port;
    return g_cfg.host ? 0 : -1;
}

static int bad_flag(const char *flag, const char *val, const char *want)
{
    fprintf(stderr, "mock-vllm: invalid value for %s: '%s' (expected %s)\n", flag, val, want);
    return 2;
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(a, "--record-body") == 0) {
            g_cfg.record_body = 1;
            continue;
        }
        const char *v = NULL;
        const char *eq = strchr(a, '=');
        char name[32];
        if (strncmp(a, "--", 2) == 0 && eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = '\0';
            v = eq + 1;
            a = name;
        } else if (i + 1 < argc) {
            v = argv[i + 1];
        }
        static const char *known[] = {"--listen", "--unix", "--model", "--tokens",
                                      "--delay-us", "--chunking", "--fault"};
        int k = -1;
        for (int j = 0; j < 7; j++)
            if (strcmp(a, known[j]) == 0) k = j;
        if (k < 0) {
            fprintf(stderr, "mock-vllm: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "mock-vllm: option %s needs a value\n", a);
            return 2;
        }
        if (!eq) i++;
        long n;
        switch (k) {
        case 0:
            if (parse_listen(v) != 0) return bad_flag(a, v, "HOST:PORT");
            break;
        case 1:
            if (!*v || strlen(v) > 100) return bad_flag(a, v, "a socket path under 100 bytes");
            free(g_cfg.unix_path);
            g_cfg.unix_path = strdup(v);
            break;
        case 2:
            if (!*v) return bad_flag(a, v, "a non-empty name");
            free(g_cfg.model);
            g_cfg.model = strdup(v);
            break;
        case 3:
            if (parse_long(v, 0, 1000000000L, &n) != 0) return bad_flag(a, v, "0..1000000000");
            g_cfg.tokens = n;
            break;
        case 4:
            if (parse_long(v, 0, 60000000L, &n) != 0) return bad_flag(a, v, "0..60000000");
            g_cfg.delay_us = n;
            break;
        case 5:
            if (parse_chunking(v, &g_cfg.chunking) != 0)
                return bad_flag(a, v, "normal|split|coalesce");
            break;
        case 6:
            if (parse_fault(v, &g_cfg.fault) != 0)
                return bad_flag(a, v, "none|500|400|cut:K|stall|slow-headers:MS");
            break;
        }
    }
    return 0;
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0) {
        fprintf(stderr, "mock-vllm: accept: %s\n", uv_strerror(status));
        return;
    }
    conn_accept(server, g_cfg.unix_path != NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    if (stopping)
        return;
    stopping = 1;
    uv_close(&listener.handle, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    conn_close_all();
}

static int start_listener(void)
{
    int r;
    if (g_cfg.unix_path) {
        struct stat st;
        if (stat(g_cfg.unix_path, &st) == 0 && S_ISSOCK(st.st_mode))
            unlink(g_cfg.unix_path);
        if ((r = uv_pipe_init(g_loop, &listener.pipe, 0)) != 0) goto fail;
        listener_inited = 1;
        if ((r = uv_pipe_bind(&listener.pipe, g_cfg.unix_path)) != 0) goto fail;
    } else {
        struct sockaddr_storage ss;
        if (uv_ip4_addr(g_cfg.host, g_cfg.port, (struct sockaddr_in *)&ss) != 0 &&
            uv_ip6_addr(g_cfg.host, g_cfg.port, (struct sockaddr_in6 *)&ss) != 0) {
            fprintf(stderr, "mock-vllm: --listen host must be a numeric IP address: %s\n",
                    g_cfg.host);
            return -1;
        }
        if ((r = uv_tcp_init(g_loop, &listener.tcp)) != 0) goto fail;
        listener_inited = 1;
        if ((r = uv_tcp_bind(&listener.tcp, (struct sockaddr *)&ss, 0)) != 0) goto fail;
    }
    if ((r = uv_listen(&listener.stream, 1024, on_connection)) != 0) goto fail;
    if (g_cfg.unix_path) {
        fprintf(stderr, "mock-vllm listening on unix:%s\n", g_cfg.unix_path);
    } else {
        struct sockaddr_storage ss;
        int len = sizeof ss;
        uv_tcp_getsockname(&listener.tcp, (struct sockaddr *)&ss, &len);
        int port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
        fprintf(stderr, "mock-vllm listening on %s%s%s:%d\n", strchr(g_cfg.host, ':') ? "[" : "",
                g_cfg.host, strchr(g_cfg.host, ':') ? "]" : "", port);
    }
    return 0;
fail:
    fprintf(stderr, "mock-vllm: cannot listen on %s: %s\n",
            g_cfg.unix_path ? g_cfg.unix_path : g_cfg.host, uv_strerror(r));
    return -1;
}

int main(int argc, char **argv)
{
    g_cfg.host = strdup("127.0.0.1");
    g_cfg.port = 8001;
    g_cfg.model = strdup("mock-model");
    g_cfg.tokens = 16;
    int rc = parse_args(argc, argv);
    if (rc != 0) {
        free(g_cfg.host);
        free(g_cfg.model);
        free(g_cfg.unix_path);
        return rc == 1 ? 0 : 2;
    }
    signal(SIGPIPE, SIG_IGN);
    g_loop = uv_default_loop();
    answer_global_init();
    if (start_listener() != 0) {
        rc = 1;
        if (listener_inited)
            uv_close(&listener.handle, NULL);
        uv_run(g_loop, UV_RUN_DEFAULT);
    } else {
        uv_signal_init(g_loop, &sig_term);
        uv_signal_init(g_loop, &sig_int);
        uv_signal_start(&sig_term, on_signal, SIGTERM);
        uv_signal_start(&sig_int, on_signal, SIGINT);
        uv_run(g_loop, UV_RUN_DEFAULT);
        fprintf(stderr, "mock-vllm: exiting\n");
    }
    if (g_cfg.unix_path && rc == 0)
        unlink(g_cfg.unix_path);
    uv_loop_close(g_loop);
    answer_global_free();
    free(g_cfg.host);
    free(g_cfg.model);
    free(g_cfg.unix_path);
    return rc;
}
