/* Process-wide logger: one line per call, written with a single write(2) so lines from
 * worker threads never interleave. Never pass prompt or completion text to it. */
#ifndef VP_CORE_LOG_H
#define VP_CORE_LOG_H

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR, LOG_LVL_OFF };

extern int log_level_current;
/* Parses "debug|info|warning|warn|error|off" (any case); -1 when unknown. */
int log_level_parse(const char *s);
void log_set_level(int level);
void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_AT(lvl, ...) do { if ((lvl) >= log_level_current) log_write((lvl), __VA_ARGS__); } while (0)
#define LOG_DEBUG(...) LOG_AT(LOG_LVL_DEBUG, __VA_ARGS__)
#define LOG_INFO(...) LOG_AT(LOG_LVL_INFO, __VA_ARGS__)
#define LOG_WARN(...) LOG_AT(LOG_LVL_WARN, __VA_ARGS__)
#define LOG_ERROR(...) LOG_AT(LOG_LVL_ERROR, __VA_ARGS__)

#endif
