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
#define CAP_SYS_TIME 25
/* The agent's own, beyond the policy's: CAP_SYS_TIME for SET_CLOCK. */
#define AGENT_CAPABILITIES (1ULL << CAP_SYS_TIME)

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

/* Drops the capabilities of `drop` from the bounding set; one the kernel does not have is not held. */
static int drop_bounding(uint64_t drop) {
  for (int cap = 0; cap <= CAP_LAST_POSSIBLE; cap++)
    if (drop >> cap & 1 && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) return -1;
  return 0;
}

/* The effective and permitted sets become `keep`; the inheritable one is emptied. */
static int set_capabilities(uint64_t keep) {
  struct cap_header header = {LINUX_CAPABILITY_VERSION_3, 0};
  struct cap_data data[2] = {
      {(uint32_t)keep, (uint32_t)keep, 0},
      {(uint32_t)(keep >> 32), (uint32_t)(keep >> 32), 0},
  };
  return syscall(SYS_capset, &header, data) < 0 ? -1 : 0;
}

static int drop_capabilities(uint64_t keep) {
  uint64_t held = 0;
  for (int cap = 0; cap <= CAP_LAST_POSSIBLE; cap++) {
    int r = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
    if (r < 0 && errno == EINVAL) break; /* past the kernel's last capability */
    if (r > 0) held |= 1ULL << cap;
  }
  if (drop_bounding(held & ~keep) < 0) return -1;
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) return -1;
  return set_capabilities(keep);
}

static int install_filter(const uint8_t *filter, size_t len) {
  struct sock_fprog program = {(unsigned short)(len / 8), filter};
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program) < 0 &&
      prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) < 0)
    return -1;
  return 0;
}

/* What a forked process is left with: the policy's capabilities and the second filter. It starts
   with the agent's bounding set, which is already the policy's and the agent's own, so it drops
   only those: a fork is then a few system calls, not one or two per capability the kernel has. */
static struct {
  uint64_t capabilities;
  uint64_t agent_only; /* in the agent's bounding set, not in the policy's */
  const uint8_t *filter;
  size_t filter_len;
  int done; /* in this process: what it forks in turn inherits the restriction */
} forked;

/* In every process the agent forks, before fork() returns in it. Only the agent keeps -1000: a
   process it forks (a supervisor, and the command that borrows the supervisor's memory through
   vfork and inherits its score) starts at 0, which any process may raise its score to, so that the
   OOM killer chooses among the sandbox's processes by their size. A process that cannot give up
   the agent's clock ends before it runs anything. */
static void restrict_forked(void) {
  write_oom_score_adj("0");
  if (forked.done) return;
  forked.done = 1;
  if (drop_bounding(forked.agent_only) < 0 || set_capabilities(forked.capabilities) < 0 ||
      install_filter(forked.filter, forked.filter_len) < 0)
    _exit(126);
}

int guest_restrict(const struct guest_policy *policy, const char **why) {
  forked.capabilities = policy->capabilities;
  forked.agent_only = AGENT_CAPABILITIES & ~policy->capabilities;
  forked.filter = policy->forked_filter;
  forked.filter_len = policy->forked_filter_len;
  if (write_oom_score_adj("-1000") < 0) return *why = "setting oom_score_adj", -1;
  if ((errno = pthread_atfork(NULL, NULL, restrict_forked)) != 0) return *why = "pthread_atfork", -1;
  if (drop_capabilities(policy->capabilities | AGENT_CAPABILITIES) < 0) return *why = "dropping capabilities", -1;
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return *why = "PR_SET_NO_NEW_PRIVS", -1;
  if (install_filter(policy->filter, policy->filter_len) < 0) return *why = "installing the seccomp filter", -1;
  return 0;
}
