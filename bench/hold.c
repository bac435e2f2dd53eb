/* bench/hold.c: opens N HTTP/1.1 connections, sends one streaming request on each, waits
 * until each has received its response headers, then holds them all open (reading and
 * discarding whatever arrives) until stdin closes or SIGTERM. wrk cannot do this: it would
 * never hold thousands of slow streams at once. Prints one line "READY ok=A fail=B ms=T" on
 * stdout when every connection has its headers (or failed, or the deadline passed), and
 * "STATUS ok=A fail=B" each time it reads an 's' on stdin.
 *
 * usage: hold HOST PORT N BODY_FILE [BEARER_TOKEN] [MAX_PENDING] [DEADLINE_S]
 * Built by bench/run with cc; not part of the project's programs. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_CONNECTING, ST_WAIT_HEADERS, ST_HOLDING, ST_FAILED };

struct conn {
    int fd;
    int state;
    size_t sent;
    char head[4096]; /* start of the response; only the headers are kept */
    size_t head_len;
};

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[1 << 16];
    *len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[*len] = 0;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: hold HOST PORT N BODY_FILE [TOKEN] [MAX_PENDING] [DEADLINE_S]\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    int n = atoi(argv[3]);
    size_t body_len = 0;
    char *body = read_file(argv[4], &body_len);
    const char *token = argc > 5 && argv[5][0] ? argv[5] : NULL;
    int max_pending = argc > 6 ? atoi(argv[6]) : 1000;
    double deadline_s = argc > 7 ? atof(argv[7]) : 60;
    if (!body || n <= 0 || port <= 0 || max_pending <= 0) {
        fprintf(stderr, "hold: bad arguments\n");
        return 2;
    }

    static char req[1 << 17];
    int req_len = snprintf(req, sizeof req,
                           "POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%d\r\n"
                           "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                           "%s%s%sContent-Length: %zu\r\n\r\n%s",
                           host, port, token ? "Authorization: Bearer " : "", token ? token : "",
                           token ? "\r\n" : "", body_len, body);
    if (req_len <= 0 || (size_t)req_len >= sizeof req) return 2;

    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return 2;

    struct conn *c = calloc(n, sizeof *c);
    int ep = epoll_create1(0);
    struct epoll_event ev;
    ev.events = EPOLLIN;
    ev.data.u64 = (uint64_t)-1; /* stdin: EOF means "let go" */
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);

    int next = 0, pending = 0, ok = 0, failed = 0, ready_printed = 0;
    double t0 = now_ms();
    static char sink[65536];
    struct epoll_event evs[512];

    while (!stop) {
        /* open more connections while under the cap of "sent, no headers yet" */
        while (next < n && pending < max_pending) {
            struct conn *k = &c[next];
            k->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (k->fd < 0) { k->state = ST_FAILED; failed++; next++; continue; }
            int one = 1;
            setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            int r = connect(k->fd, (struct sockaddr *)&sa, sizeof sa);
            if (r < 0 && errno != EINPROGRESS) {
                close(k->fd); k->fd = -1; k->state = ST_FAILED; failed++; next++; continue;
            }
            k->state = ST_CONNECTING;
            ev.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
            ev.data.u64 = (uint64_t)next;
            epoll_ctl(ep, EPOLL_CTL_ADD, k->fd, &ev);
            pending++;
            next++;
        }
        if (!ready_printed && (ok + failed == n || now_ms() - t0 > deadline_s * 1e3)) {
            printf("READY ok=%d fail=%d pending=%d ms=%.0f\n", ok, failed, n - ok - failed, now_ms() - t0);
            fflush(stdout);
            ready_printed = 1;
        }
        int m = epoll_wait(ep, evs, 512, 100);
        for (int i = 0; i < m; i++) {
            if (evs[i].data.u64 == (uint64_t)-1) {
                ssize_t r = read(0, sink, sizeof sink);
                if (r <= 0) stop = 1;
                else if (memchr(sink, 's', (size_t)r)) {
                    printf("STATUS ok=%d fail=%d\n", ok, failed);
                    fflush(stdout);
                }
                continue;
            }
            struct conn *k = &c[evs[i].data.u64];
            if (k->state == ST_FAILED) continue;
            int bad = 0;
            if (k->state == ST_CONNECTING && (evs[i].events & EPOLLOUT)) {
                while (k->sent < (size_t)req_len) {
                    ssize_t w = write(k->fd, req + k->sent, req_len - k->sent);
                    if (w < 0) { if (errno != EAGAIN) bad = 1; break; }
                    k->sent += (size_t)w;
                }
                if (!bad && k->sent == (size_t)req_len) {
                    k->state = ST_WAIT_HEADERS;
                    ev.events = EPOLLIN | EPOLLRDHUP;
                    ev.data.u64 = evs[i].data.u64;
                    epoll_ctl(ep, EPOLL_CTL_MOD, k->fd, &ev);
                }
            }
            if (!bad && (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
                for (;;) {
                    ssize_t r = read(k->fd, sink, sizeof sink);
                    if (r == 0) { bad = 1; break; }
                    if (r < 0) { if (errno != EAGAIN) bad = 1; break; }
                    if (k->state == ST_WAIT_HEADERS) {
                        size_t take = (size_t)r < sizeof k->head - 1 - k->head_len
                                          ? (size_t)r : sizeof k->head - 1 - k->head_len;
                        memcpy(k->head + k->head_len, sink, take);
                        k->head_len += take;
                        k->head[k->head_len] = 0;
                        if (strstr(k->head, "\r\n\r\n")) {
                            if (strncmp(k->head, "HTTP/1.1 200", 12) != 0) { bad = 1; break; }
                            k->state = ST_HOLDING;
                            pending--;
                            ok++;
                        } else if (k->head_len == sizeof k->head - 1) {
                            bad = 1;
                            break;
                        }
                    }
                }
            }
            if (bad) {
                if (k->state == ST_HOLDING) ok--;
                else pending--;
                if (k->state == ST_WAIT_HEADERS && k->head_len)
                    fprintf(stderr, "hold: conn %llu: %.*s\n", (unsigned long long)evs[i].data.u64,
                            (int)(strcspn(k->head, "\r\n")), k->head);
                close(k->fd);
                k->fd = -1;
                k->state = ST_FAILED;
                failed++;
            }
        }
    }
    int closed_by_peer = failed;
    for (int i = 0; i < n; i++)
        if (c[i].fd > 0 && c[i].state != ST_FAILED) close(c[i].fd);
    fprintf(stderr, "hold: exit ok=%d failed=%d\n", ok, closed_by_peer);
    return 0;
}
