/*
 * A memory limit the agent enforces itself, for a kernel that accounts a sandbox's memory but
 * does not limit it (gVisor's): the host's cgroup limit would otherwise kill the whole user-space
 * kernel, and every process with it. Past the limit the agent SIGKILLs the largest process that
 * is not its own (supervisors and tools run its binary), as the kernel's OOM killer would, and
 * counts the kill, which the supervisors report as `oom`.
 */
#ifndef SHOAL_MEMORY_WATCH_H
#define SHOAL_MEMORY_WATCH_H

#include <stdint.h>

/* Arms the watch with the limit in `limit_file` (its decimal bytes; NULL: off), read again whenever
   the file changes (a warm sandbox gets its creator's limit so). Before any fork: the kill counter
   is shared with children. */
int memory_watch_init(const char *limit_file);

/* Milliseconds until the next look, or -1 when the watch is off: the main loop's poll timeout. */
int memory_watch_timeout_ms(void);

/* Looks when a look is due: over the limit, kills the largest process unless a victim is still
   dying or was killed so recently that the usage may not show its memory freed yet. */
void memory_watch_check(void);

/* Processes the watch has killed so far (0 when off). */
uint64_t memory_watch_kills(void);

#endif
