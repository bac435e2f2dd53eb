/* The port a worker (src/http/server.c) listens on, read back from its loop: tests start one
 * on 127.0.0.1 with port 0. Used by tests/unit/ and tests/fuzz/ (no cmocka here). */
#ifndef VP_TESTS_WORKER_PORT_H
#define VP_TESTS_WORKER_PORT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <uv.h>

static inline void worker_port_walk(uv_handle_t *h, void *arg)
{
    int *p = arg;
    uv_os_fd_t fd;
    /* The worker's listener is a uv_poll_t over its socket (it accepts with accept4 itself). */
    if (h->type != UV_POLL || *p || uv_fileno(h, &fd) != 0)
        return;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_INET)
        *p = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* The IPv4 port of the first listener on l (uv_walk), 0 when there is none. */
static inline int worker_port(uv_loop_t *l)
{
    int port = 0;
    uv_walk(l, worker_port_walk, &port);
    return port;
}

#endif
