/*
 * Restricting the guest's agent (guest_restrict.h), in the order the kernel needs: the bounding set
 * is dropped while CAP_SETPCAP is still effective, and no_new_privs comes before the filter, which
 * a process without CAP_SYS_ADMIN may only install under it.
 */
#define _GNU_SOURCE
#include "guest_restrict.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* linux/capability.h and linux/seccomp.h, which musl's headers do not carry. */
#define LINUX_CAPABILITY_VERSION_3 0x20080522
#define SECCOMP_SET_MODE_FILTER 1
#define SECCOMP_MODE_FILTER 2
#define CAP_LAST_POSSIBLE 63

struct cap_header {
  uint32_t version;
  int pid;
};
struct cap_data {
  uint32_t effective, permitted, inheritable;
};
struct sock_fprog {
  unsigned short len;
  const void *filter;
};

static int write_oom_score_adj(const char *value) {
  int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, value, strlen(value));
  close(fd);
  return n == (ssize_t)strlen(value) ? 0 : -1;
}

/* Only the agent keeps -1000: a process it forks (a supervisor, and the command that borrows the
   supervisor's memory through vfork and inherits its score) starts at 0, which any process may
   raise its score to, so that the OOM killer chooses among the sandbox's processes by their size. */
static void forked_oom_score(void) { write_oom_score_adj("0"); }

static int drop_capabilities(uint64_t keep) {
  for (int cap = 0; cap <= CAP_LAST_POSSIBLE; cap++) {
    if (keep >> cap & 1) continue;
    int held = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
    if (held < 0 && errno == EINVAL) break; /* past the kernel's last capability */
    if (held > 0 && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) return -1;
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) return -1;
  struct cap_header header = {LINUX_CAPABILITY_VERSION_3, 0};
  struct cap_data data[2] = {
      {(uint32_t)keep, (uint32_t)keep, 0},
      {(uint32_t)(keep >> 32), (uint32_t)(keep >> 32), 0},
  };
  return syscall(SYS_capset, &header, data) < 0 ? -1 : 0;
}

int guest_restrict(const struct guest_policy *policy, const char **why) {
  if (write_oom_score_adj("-1000") < 0) return *why = "setting oom_score_adj", -1;
  if ((errno = pthread_atfork(NULL, NULL, forked_oom_score)) != 0) return *why = "pthread_atfork", -1;
  if (drop_capabilities(policy->capabilities) < 0) return *why = "dropping capabilities", -1;
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return *why = "PR_SET_NO_NEW_PRIVS", -1;
  struct sock_fprog program = {(unsigned short)(policy->filter_len / 8), policy->filter};
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program) < 0 &&
      prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) < 0)
    return *why = "installing the seccomp filter", -1;
  return 0;
}
