/*
 * What the agent does as the init of a virtual machine, beyond what it does as PID 1 of a
 * container: the kernel's file systems, and powering the machine off instead of exiting.
 */
#ifndef SHOAL_GUEST_INIT_H
#define SHOAL_GUEST_INIT_H

/* Mounts /proc, /sys, /dev (devtmpfs), /dev/pts and /dev/shm where they are not mounted yet. */
void guest_mount_kernel_fs(void);
/* Flushes the disks and powers the machine off; never returns (an init that exits panics the kernel). */
void guest_power_off(void) __attribute__((noreturn));

#endif
