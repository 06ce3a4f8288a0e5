/*
 * What the agent does as the init of a virtual machine, beyond what it does as PID 1 of a
 * container: the kernel's file systems, and powering the machine off instead of exiting.
 */
#ifndef SHOAL_GUEST_INIT_H
#define SHOAL_GUEST_INIT_H

#include "guest_policy.h"

/* Mounts /proc, /sys, /dev (devtmpfs), /dev/pts and /dev/shm where they are not mounted yet. */
void guest_mount_kernel_fs(void);
/* The sandbox's cgroup (memory and pids), its hostname from the kernel command line, lo up, and
   the policy's masked and read-only paths; -1 with *why naming the step that failed. */
int guest_isolate(const struct guest_policy *policy, const char **why);
/* A line on the kernel log (the VM's console when it has one), with errno's text. */
void guest_log(const char *what, const char *detail);
/* Flushes the disks and powers the machine off, or ends the agent (a kernel panic, which ends the VM too). */
void guest_power_off(void) __attribute__((noreturn));

#endif
