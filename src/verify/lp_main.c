/* `vllm-proxy-verify proxy`: the listener of the local verifying proxy. One accept thread,
 * one detached thread per connection up to --max-connections (beyond: 503 and close), the
 * attestation side started before the first request; runs until SIGINT or SIGTERM.
 *
 * Stopping: the accept thread is joined, idle connections close (lp_relay_stop), the
 * attestation thread is joined, and the connection threads are waited for (g_conns reaching 0,
 * LP_STOP_GRACE_MS at most) before main returns: exit() runs OpenSSL's atexit cleanup, which
 * frees what a connection thread still inside libcurl/OpenSSL would use. When some are still
 * under way after the grace, the process ends with _exit (no atexit handler runs). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "verify/lp_relay.h"
#include "verify/lproxy.h"

static atomic_int g_conns;
static atomic_int g_stop;
static int g_lfd = -1;
static int g_max;

#define LP_STOP_GRACE_MS 3000 /* requests under way at SIGTERM may finish (the harness: 5 s) */

static void *conn_thread(void *arg)
{
    int fd = (int)(intptr_t)arg;
    lp_conn_serve(fd);
    /* this thread's OpenSSL state is freed now, not by a thread-exit destructor that could
     * run after the count below let main reach exit() and OPENSSL_cleanup */
    OPENSSL_thread_stop();
    atomic_fetch_sub(&g_conns, 1);
    return NULL;
}

static void *accept_thread(void *arg)
{
    (void)arg;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 512u * 1024u);
    while (!atomic_load(&g_stop)) {
        struct pollfd pf = {g_lfd, POLLIN, 0};
        if (poll(&pf, 1, 250) <= 0)
            continue;
        int fd = accept4(g_lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                usleep(100000); /* out of descriptors: let connections end */
            continue;
        }
        /* Every answer goes out as a head and a body, or chunk by chunk: without TCP_NODELAY
         * Nagle holds the second write until the app's delayed ACK (40 ms on Linux). The
         * relay coalesces its own writes, so this costs no extra segments. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (atomic_fetch_add(&g_conns, 1) >= g_max) {
            atomic_fetch_sub(&g_conns, 1);
            lp_reply_busy(fd);
            fprintf(stderr, "lp: connection refused: --max-connections %d reached\n", g_max);
            continue;
        }
        pthread_t t;
        if (pthread_create(&t, &at, conn_thread, (void *)(intptr_t)fd) != 0) {
            atomic_fetch_sub(&g_conns, 1);
            lp_reply_busy(fd);
        }
    }
    pthread_attr_destroy(&at);
    return NULL;
}

static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr);
    return 0;
}

/* Binds o->listen_host:o->listen_port; *port: the port bound (--listen HOST:0 picks one). */
static int bind_listener(const lp_opts_t *o, int *port)
{
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | (strcasecmp(o->listen_host, "localhost") ? AI_NUMERICHOST : 0);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", o->listen_port);
    int e = getaddrinfo(o->listen_host, ps, &hints, &ai);
    if (e != 0 || !ai) {
        fprintf(stderr, "vllm-proxy-verify proxy: --listen %s: %s\n", o->listen_host,
                gai_strerror(e));
        return -1;
    }
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        fprintf(stderr, "vllm-proxy-verify proxy: cannot listen on %s:%d: %s\n", o->listen_host,
                o->listen_port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    if (!is_loopback(ai->ai_addr))
        fprintf(stderr,
                "vllm-proxy-verify proxy: WARNING: listening on %s, not loopback: anyone who can "
                "reach this address uses the remote%s\n",
                o->listen_host, o->local_token ? "" : " without a token (set --local-token)");
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

int cmd_proxy(vopts_t *vo, lp_opts_t *o)
{
    (void)vo;
    g_max = o->max_conns > 0 ? o->max_conns : 64;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* every thread made from here inherits it */
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "vllm-proxy-verify proxy: libcurl did not initialise\n");
        return VX_ERROR;
    }
    int port = 0;
    g_lfd = bind_listener(o, &port);
    if (g_lfd < 0)
        return VX_ERROR;
    if (lp_relay_init(o, port) != 0 || lp_att_start(o) != 0) {
        close(g_lfd);
        return VX_ERROR;
    }
    const char *h = o->listen_host;
    int v6 = strchr(h, ':') != NULL;
    fprintf(stderr,
            "vllm-proxy-verify proxy: listening on http://%s%s%s:%d, relaying to %s after "
            "verifying it (apps: OPENAI_BASE_URL=http://%s%s%s:%d/v1)\n",
            v6 ? "[" : "", h, v6 ? "]" : "", port, o->remote, v6 ? "[" : "", h, v6 ? "]" : "",
            port);
    pthread_t at;
    if (pthread_create(&at, NULL, accept_thread, NULL) != 0) {
        fprintf(stderr, "vllm-proxy-verify proxy: cannot start the accept thread\n");
        lp_att_stop();
        close(g_lfd);
        return VX_ERROR;
    }
    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    fprintf(stderr, "vllm-proxy-verify proxy: signal %d: stopping\n", sig);
    atomic_store(&g_stop, 1);
    pthread_join(at, NULL);
    close(g_lfd);
    lp_relay_stop();
    lp_att_stop();
    for (int ms = 0; atomic_load(&g_conns) > 0 && ms < LP_STOP_GRACE_MS; ms += 10)
        usleep(10000);
    int left = atomic_load(&g_conns);
    if (left > 0) {
        fprintf(stderr,
                "vllm-proxy-verify proxy: %d connection(s) still under way after %d ms: "
                "exiting without cleanup\n",
                left, LP_STOP_GRACE_MS);
        _exit(VX_OK);
    }
    return VX_OK;
}
