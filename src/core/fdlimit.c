/* RLIMIT_NOFILE at start-up: soft raised to hard, and the connection cap derived from it. */
#include "core/fdlimit.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/resource.h>

#include "core/log.h"

unsigned fdlimit_derive_cap(unsigned long long nofile)
{
    unsigned long long cap = nofile > 128 ? (nofile - 64) / 2 : nofile / 2;
    if (cap < 1)
        cap = 1;
    return cap > UINT_MAX ? UINT_MAX : (unsigned)cap;
}

unsigned fdlimit_setup(unsigned configured)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        LOG_WARN("file descriptor limit: getrlimit: %s", strerror(errno));
        return configured ? configured : fdlimit_derive_cap(1024);
    }
    unsigned long long before = rl.rlim_cur;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &want) != 0)
            LOG_WARN("file descriptor limit: cannot raise %llu to the hard limit %llu: %s", before,
                     (unsigned long long)rl.rlim_max, strerror(errno));
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    unsigned long long now = rl.rlim_cur == RLIM_INFINITY ? ULLONG_MAX : rl.rlim_cur;
    unsigned cap = configured ? configured : fdlimit_derive_cap(now);
    LOG_INFO("file descriptor limit %llu -> %llu (hard %llu); max connections %u per process (%s)",
             before, now, (unsigned long long)rl.rlim_max, cap,
             configured ? "MAX_CONNECTIONS" : "derived from the descriptor limit");
    if (configured && configured > fdlimit_derive_cap(now))
        LOG_WARN("MAX_CONNECTIONS=%u is more than the descriptor limit %llu leaves room for (%u): "
                 "beyond that, new connections are refused for want of descriptors", configured, now,
                 fdlimit_derive_cap(now));
    return cap;
}
