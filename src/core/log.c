/* Logger: timestamp, level, message; one write(2) per line to stderr. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 2048

int log_level_current = LOG_LVL_INFO;
int log_json = 0;

static const char *const NAMES[] = {"DEBUG", "INFO", "WARN", "ERROR", "OFF"};

int log_level_parse(const char *s)
{
    static const struct { const char *n; int l; } t[] = {
        {"debug", LOG_LVL_DEBUG}, {"info", LOG_LVL_INFO}, {"warning", LOG_LVL_WARN},
        {"warn", LOG_LVL_WARN}, {"error", LOG_LVL_ERROR}, {"off", LOG_LVL_OFF},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (strcasecmp(s, t[i].n) == 0)
            return t[i].l;
    return -1;
}

void log_set_level(int level) { log_level_current = level; }
void log_set_json(int on) { log_json = on != 0; }

static const char *level_name(int level) { return NAMES[level < 0 || level > 4 ? 4 : level]; }

/* "2024-01-02T03:04:05.678Z" */
static int timestamp(char *out, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    return snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                    (ts.tv_nsec / 1000000) % 1000);
}

size_t log_json_str(char *out, size_t cap, const char *s, size_t n)
{
    static const char hexd[] = "0123456789abcdef";
    size_t o = 0;
    if (cap < 3) {
        if (cap)
            out[0] = '\0';
        return 0;
    }
    out[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[7];
        size_t el = 0;
        if (ch == '"' || ch == '\\')
            esc[el++] = '\\', esc[el++] = (char)ch;
        else if (ch == '\n')
            esc[el++] = '\\', esc[el++] = 'n';
        else if (ch == '\t')
            esc[el++] = '\\', esc[el++] = 't';
        else if (ch < 0x20 || ch == 0x7f || ch >= 0x80) {
            /* Control bytes, and any byte outside ASCII (the line stays valid UTF-8 whatever
             * the input), as \u00XX. */
            memcpy(esc, "\\u00", 4);
            esc[4] = hexd[ch >> 4];
            esc[5] = hexd[ch & 15];
            el = 6;
        } else
            esc[el++] = (char)ch;
        if (o + el + 2 > cap)
            break;
        memcpy(out + o, esc, el);
        o += el;
    }
    out[o++] = '"';
    out[o] = '\0';
    return o;
}

static void emit(char *line, size_t len)
{
    if (len > LINE_MAX_BYTES - 1)
        len = LINE_MAX_BYTES - 1;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

/* {"time":"...","level":"...","msg": into line; returns its length. */
static size_t json_head(char *line, size_t cap, int level)
{
    char ts[96];
    timestamp(ts, sizeof ts);
    int n = snprintf(line, cap, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":", ts, level_name(level));
    return n < 0 ? 0 : (size_t)n;
}

void log_write(int level, const char *fmt, ...)
{
    char line[LINE_MAX_BYTES];
    char msg[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t ml = m < 0 ? 0 : (size_t)m >= sizeof msg ? sizeof msg - 1 : (size_t)m;
    size_t n;
    if (log_json) {
        n = json_head(line, sizeof line, level);
        n += log_json_str(line + n, sizeof line - n - 2, msg, ml); /* room for "}" */
        line[n++] = '}';
    } else {
        char ts[96];
        timestamp(ts, sizeof ts);
        int k = snprintf(line, sizeof line, "%s %-5s %.*s", ts, level_name(level), (int)ml, msg);
        n = k < 0 ? 0 : (size_t)k >= sizeof line ? sizeof line - 1 : (size_t)k;
    }
    emit(line, n);
}

void log_write_fields(int level, const char *msg, const char *fields)
{
    char line[LINE_MAX_BYTES];
    size_t n = json_head(line, sizeof line, level);
    n += log_json_str(line + n, sizeof line - n - 2, msg, strlen(msg));
    size_t fl = strlen(fields);
    if (fl && n + fl + 3 < sizeof line) { /* fields are whole or not at all: the line parses */
        line[n++] = ',';
        memcpy(line + n, fields, fl);
        n += fl;
    }
    line[n++] = '}';
    emit(line, n);
}
