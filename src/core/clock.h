/* Clocks: the one place the process reads time. Monotonic time measures durations and
 * timeouts; wall time dates records and report caches shared with other replicas.
 * Thread-safe (clock_gettime only). */
#ifndef VP_CORE_CLOCK_H
#define VP_CORE_CLOCK_H

#include <stdint.h>

/* CLOCK_MONOTONIC in nanoseconds / seconds. */
uint64_t clock_mono_ns(void);
double clock_mono_s(void);
/* CLOCK_REALTIME in seconds since the epoch, with the fraction. */
double clock_wall_s(void);

#endif
