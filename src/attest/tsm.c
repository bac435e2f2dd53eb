/* configfs-tsm quote provider: read generation, write inblob, read outblob, read generation;
 * the generation must have moved by exactly our one write, else another writer raced us and
 * the outblob may be theirs. */
#include "attest/tsm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int tsm_present(const char *root)
{
    struct stat st;
    return root && stat(root, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Reads a whole small file into buf (NUL-terminated). Bytes read, or -1. */
static long read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r < 0)
                n = (size_t)-1;
            break;
        }
        n += (size_t)r;
    }
    close(fd);
    if (n == (size_t)-1)
        return -1;
    buf[n] = 0;
    return (long)n;
}

static int read_generation(const tsm_t *t, unsigned long long *g)
{
    char path[600], txt[32];
    snprintf(path, sizeof path, "%s/generation", t->dir);
    if (read_small(path, txt, sizeof txt) <= 0)
        return -1;
    char *end;
    errno = 0;
    *g = strtoull(txt, &end, 10);
    while (*end == '\n' || *end == ' ')
        end++;
    return errno || end == txt || *end ? -1 : 0;
}

int tsm_open(tsm_t *t, const char *root, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    if (!tsm_present(root)) {
        snprintf(err, errlen, "configfs-tsm: %s is not a directory (configfs not mounted, or no TSM)", root);
        return -1;
    }
    if ((size_t)snprintf(t->dir, sizeof t->dir, "%s/%s", root, TSM_ENTRY_NAME) >= sizeof t->dir) {
        snprintf(err, errlen, "configfs-tsm: path too long");
        return -1;
    }
    if (mkdir(t->dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "configfs-tsm: cannot create %s: %s", t->dir, strerror(errno));
        return -1;
    }
    char path[600], prov[64];
    snprintf(path, sizeof path, "%s/provider", t->dir);
    if (read_small(path, prov, sizeof prov) > 0 && strncmp(prov, "tdx_guest", 9) != 0) {
        prov[strcspn(prov, "\n")] = 0;
        snprintf(err, errlen, "configfs-tsm: provider is '%s', not tdx_guest", prov);
        return -1;
    }
    unsigned long long g;
    if (read_generation(t, &g) != 0) {
        snprintf(err, errlen, "configfs-tsm: cannot read %s/generation", t->dir);
        return -1;
    }
    pthread_mutex_init(&t->lock, NULL);
    return 0;
}

void tsm_close(tsm_t *t)
{
    if (!t->dir[0])
        return;
    rmdir(t->dir); /* configfs removes the attributes with the entry; a plain dir may refuse */
    pthread_mutex_destroy(&t->lock);
    t->dir[0] = 0;
}

static int write_inblob(const tsm_t *t, const uint8_t rd[64], char *err, size_t errlen)
{
    char path[600];
    snprintf(path, sizeof path, "%s/inblob", t->dir);
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "configfs-tsm: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    ssize_t w;
    do
        w = write(fd, rd, 64);
    while (w < 0 && errno == EINTR);
    int e = errno;
    if (close(fd) != 0 && w == 64)
        w = -1, e = errno;
    if (w != 64) {
        snprintf(err, errlen, "configfs-tsm: writing inblob failed: %s", w < 0 ? strerror(e) : "short write");
        return -1;
    }
    return 0;
}

static int read_outblob(const tsm_t *t, buf_t *out, char *err, size_t errlen)
{
    char path[600];
    snprintf(path, sizeof path, "%s/outblob", t->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "configfs-tsm: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    size_t start = out->len;
    int rc = 0;
    for (;;) {
        if (out->len - start > TSM_MAX_QUOTE) {
            snprintf(err, errlen, "configfs-tsm: outblob larger than %u bytes", TSM_MAX_QUOTE);
            rc = -1;
            break;
        }
        if (buf_reserve(out, 8192)) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
            break;
        }
        size_t room = out->cap - out->len - 1, left = TSM_MAX_QUOTE - (out->len - start) + 1;
        ssize_t r = read(fd, out->data + out->len, room < left ? room : left); /* +1: sees overflow */
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "configfs-tsm: reading outblob failed: %s", strerror(errno));
            rc = -1;
            break;
        }
        if (r == 0)
            break;
        out->len += (size_t)r;
    }
    close(fd);
    if (rc == 0 && out->len == start) {
        snprintf(err, errlen, "configfs-tsm: outblob is empty");
        rc = -1;
    }
    if (rc != 0)
        out->len = start;
    if (out->cap > out->len)
        out->data[out->len] = 0;
    return rc;
}

int tsm_quote(tsm_t *t, const uint8_t report_data[64], buf_t *out, char *err, size_t errlen)
{
    int rc = -1;
    pthread_mutex_lock(&t->lock);
    for (int attempt = 0; attempt < 3; attempt++) {
        unsigned long long g0, g1;
        size_t start = out->len;
        if (read_generation(t, &g0) != 0) {
            snprintf(err, errlen, "configfs-tsm: cannot read %s/generation", t->dir);
            break;
        }
        if (write_inblob(t, report_data, err, errlen) || read_outblob(t, out, err, errlen))
            break;
        if (read_generation(t, &g1) != 0) {
            snprintf(err, errlen, "configfs-tsm: cannot read %s/generation", t->dir);
            out->len = start;
            break;
        }
        if (g1 == g0 + 1) {
            rc = 0;
            break;
        }
        out->len = start; /* someone else wrote inblob between our write and read: not ours */
        if (out->cap > out->len)
            out->data[out->len] = 0;
        snprintf(err, errlen, "configfs-tsm: generation went from %llu to %llu (another writer), "
                 "gave up after 3 attempts", g0, g1);
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}
