/* Process-wide logger: one line per call, written with a single write(2) so lines from
 * worker threads never interleave. Never pass prompt or completion text to it. */
#ifndef VP_CORE_LOG_H
#define VP_CORE_LOG_H

#include <stddef.h>

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR, LOG_LVL_OFF };

extern int log_level_current;
extern int log_json; /* LOG_FORMAT=json: every line one JSON object */
/* Parses "debug|info|warning|warn|error|off" (any case); -1 when unknown. */
int log_level_parse(const char *s);
void log_set_level(int level);
/* Text lines: "<time> <LEVEL> <message>". JSON lines (log_set_json(1)): {"time":"<RFC 3339
 * UTC, ms>","level":"<LEVEL>","msg":"<message>"}, the message escaped. */
void log_set_json(int on);
void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* JSON mode only: a line {"time","level","msg":msg, <fields>} where fields is a list of
 * members already in JSON ("\"k\":v,..."; no leading comma). */
void log_write_fields(int level, const char *msg, const char *fields);
/* s[0..n) as a JSON string with its quotes into out (cap bytes, NUL-terminated; cut short,
 * still closed, when it does not fit). Returns the length written. */
size_t log_json_str(char *out, size_t cap, const char *s, size_t n);

#define LOG_AT(lvl, ...) do { if ((lvl) >= log_level_current) log_write((lvl), __VA_ARGS__); } while (0)
#define LOG_DEBUG(...) LOG_AT(LOG_LVL_DEBUG, __VA_ARGS__)
#define LOG_INFO(...) LOG_AT(LOG_LVL_INFO, __VA_ARGS__)
#define LOG_WARN(...) LOG_AT(LOG_LVL_WARN, __VA_ARGS__)
#define LOG_ERROR(...) LOG_AT(LOG_LVL_ERROR, __VA_ARGS__)

#endif
