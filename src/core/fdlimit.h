/* The process's descriptor limit. At start the soft RLIMIT_NOFILE is raised to the hard limit
 * (every client connection is one descriptor, two while its request is relayed), and the cap
 * on open client connections is derived from what was obtained unless one is configured. */
#ifndef VP_CORE_FDLIMIT_H
#define VP_CORE_FDLIMIT_H

/* Raises the soft limit to the hard one and logs both. Returns the cap on client connections
 * per process: `configured` if nonzero, else fdlimit_derive_cap(the soft limit now). */
unsigned fdlimit_setup(unsigned configured);

/* Connections a descriptor limit leaves room for: half of what is left after 64 for the
 * process itself (loops, listeners, Redis, the agent, logs), so that each connection can hold
 * an engine connection too. At least 1. */
unsigned fdlimit_derive_cap(unsigned long long nofile);

#endif
