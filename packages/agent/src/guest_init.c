/*
 * The agent as a virtual machine's init. The initramfs may already have mounted the kernel's file
 * systems and moved them into the root; whatever is missing is mounted here, judged by the file
 * system type of the mount point (a plain directory of the root disk has the disk's type).
 */
#define _GNU_SOURCE
#include "guest_init.h"

#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define PROC_MAGIC 0x9fa0
#define SYSFS_MAGIC 0x62656572
#define TMPFS_MAGIC 0x01021994 /* devtmpfs too */
#define DEVPTS_MAGIC 0x1cd1

static void mount_unless(const char *dir, unsigned long magic, const char *type, unsigned long flags,
                         const char *options) {
  struct statfs st;
  if (statfs(dir, &st) == 0 && (unsigned long)st.f_type == magic) return;
  mkdir(dir, 0755);
  mount(type, dir, type, flags, options);
}

void guest_mount_kernel_fs(void) {
  const unsigned long kernel = MS_NOSUID | MS_NODEV | MS_NOEXEC;
  mount_unless("/proc", PROC_MAGIC, "proc", kernel, NULL);
  mount_unless("/sys", SYSFS_MAGIC, "sysfs", kernel, NULL);
  mount_unless("/dev", TMPFS_MAGIC, "devtmpfs", MS_NOSUID, "mode=0755");
  mount_unless("/dev/pts", DEVPTS_MAGIC, "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666");
  mount_unless("/dev/shm", TMPFS_MAGIC, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
}

void guest_power_off(void) {
  sync();
  reboot(RB_POWER_OFF);
  /* Without a power-off device the kernel returns here; an idle init is better than a panic. */
  for (;;) pause();
}
