/*
 * The agent as a virtual machine's init. The initramfs may already have mounted the kernel's file
 * systems and moved them into the root; whatever is missing is mounted here, judged by the file
 * system type of the mount point (a plain directory of the root disk has the disk's type). Then
 * the machine is made to look like a container from inside (guest_isolate).
 */
#define _GNU_SOURCE
#include "guest_init.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define PROC_MAGIC 0x9fa0
#define SYSFS_MAGIC 0x62656572
#define TMPFS_MAGIC 0x01021994 /* devtmpfs too */
#define DEVPTS_MAGIC 0x1cd1
#define CGROUP2_MAGIC 0x63677270

/* The cgroup of every sandbox process, as /init names it (GUEST_CGROUP in initramfs.ts). */
#define SANDBOX_CGROUP "/sys/fs/cgroup/sandbox"
#define HOSTNAME_ARG "shoal.hostname="
#define HOSTNAME_MAX 64

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

static int write_file(const char *path, const char *text, int flags) {
  int fd = open(path, O_WRONLY | O_CLOEXEC | flags, 0644);
  if (fd < 0) return -1;
  size_t len = strlen(text);
  ssize_t n = write(fd, text, len);
  int saved = errno;
  close(fd);
  errno = saved;
  return n == (ssize_t)len ? 0 : -1;
}

/* The agent (so every process it starts) in the sandbox's cgroup, with the memory controller on:
   the guest's root cgroup has no memory.events, and the OOM kills are counted in this one's. */
static int join_sandbox_cgroup(void) {
  struct statfs st;
  if ((statfs("/sys/fs/cgroup", &st) < 0 || (unsigned long)st.f_type != CGROUP2_MAGIC) &&
      mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, "nsdelegate") < 0)
    return -1;
  if (write_file("/sys/fs/cgroup/cgroup.subtree_control", "+memory +pids", 0) < 0) return -1;
  if (mkdir(SANDBOX_CGROUP, 0755) < 0 && errno != EEXIST) return -1;
  char pid[24];
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  return write_file(SANDBOX_CGROUP "/cgroup.procs", pid, 0);
}

/* The hostname the host put on the kernel command line (the sandbox id), as a container's
   /etc/hostname and /etc/hosts say it; without one the kernel's stays. */
static int set_hostname(void) {
  static char cmdline[4096];
  int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, cmdline, sizeof cmdline - 1);
  close(fd);
  if (n < 0) return -1;
  cmdline[n] = 0;
  const char *arg = NULL;
  for (char *p = cmdline; (p = strstr(p, HOSTNAME_ARG)) != NULL; p++)
    if (p == cmdline || p[-1] == ' ') arg = p + strlen(HOSTNAME_ARG);
  if (arg == NULL) return 0;
  size_t len = strspn(arg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-");
  if (len == 0 || len > HOSTNAME_MAX || (arg[len] != 0 && arg[len] != ' ' && arg[len] != '\n'))
    return errno = EINVAL, -1;
  char name[HOSTNAME_MAX + 1], text[256];
  memcpy(name, arg, len);
  name[len] = 0;
  if (sethostname(name, len) < 0) return -1;
  snprintf(text, sizeof text, "%s\n", name);
  if (write_file("/etc/hostname", text, O_CREAT | O_TRUNC) < 0) return -1;
  snprintf(text, sizeof text, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t%s\n", name);
  return write_file("/etc/hosts", text, O_CREAT | O_TRUNC);
}

/* lo up: the kernel gives it 127.0.0.1 and ::1, so that a connection to a port nobody listens on
   is refused rather than unroutable, as in a container's empty network namespace. */
static int loopback_up(void) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct ifreq ifr = {0};
  strcpy(ifr.ifr_name, "lo");
  int r = ioctl(fd, SIOCGIFFLAGS, &ifr);
  if (r == 0) {
    ifr.ifr_flags |= IFF_UP;
    r = ioctl(fd, SIOCSIFFLAGS, &ifr);
  }
  close(fd);
  return r;
}

/* OCI's maskedPaths: /dev/null over a file, an empty read-only tmpfs over a directory. */
static int mask_path(const char *path) {
  struct stat st;
  if (lstat(path, &st) < 0) return errno == ENOENT ? 0 : -1;
  if (S_ISDIR(st.st_mode))
    return mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  return mount("/dev/null", path, NULL, MS_BIND, NULL);
}

/* OCI's readonlyPaths: a read-only bind of the path over itself. */
static int make_readonly(const char *path) {
  struct stat st;
  if (lstat(path, &st) < 0) return errno == ENOENT ? 0 : -1;
  if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0) return -1;
  return mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

int guest_isolate(const struct guest_policy *policy, const char **why) {
  if (join_sandbox_cgroup() < 0) return *why = "joining the sandbox cgroup", -1;
  if (set_hostname() < 0) return *why = "setting the hostname", -1;
  if (loopback_up() < 0) return *why = "bringing lo up", -1;
  for (size_t i = 0; i < policy->masked_count; i++)
    if (mask_path(policy->masked[i]) < 0) return *why = policy->masked[i], -1;
  for (size_t i = 0; i < policy->readonly_count; i++)
    if (make_readonly(policy->readonly[i]) < 0) return *why = policy->readonly[i], -1;
  return 0;
}

void guest_log(const char *what, const char *detail) {
  int saved = errno;
  int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  dprintf(fd, "<3>shoal-agent: %s%s%s: %s\n", what, detail ? ": " : "", detail ? detail : "", strerror(saved));
  close(fd);
}

void guest_power_off(void) {
  sync();
  reboot(RB_POWER_OFF);
  /* Denied once the agent has restricted itself (no CAP_SYS_BOOT, and seccomp refuses reboot):
     an init that exits panics the kernel, and with panic=-1 and -no-reboot QEMU then exits. */
  _exit(1);
}
