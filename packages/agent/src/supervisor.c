/*
 * The per-exec supervisor (see supervisor.h): vfork the command, set it up, exec, wait, time out, kill the tree.
 */
#define _GNU_SOURCE
#include "supervisor.h"
#include "memory_watch.h"
#include "proc_stat.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static volatile sig_atomic_t got_chld, got_term;

static void on_chld(int s) {
  (void)s;
  got_chld = 1;
}

static void on_term(int s) {
  (void)s;
  got_term = 1;
}

uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static pid_t parent_of(const char *pid) {
  struct proc_stat st;
  return proc_stat_read(pid, &st) == 0 ? st.ppid : -1;
}

void signal_children(int signo) {
  pid_t me = getpid();
  DIR *d = opendir("/proc");
  if (d == NULL) return;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
    if (parent_of(de->d_name) == me) kill((pid_t)strtol(de->d_name, NULL, 10), signo);
  }
  closedir(d);
}

int kill_all_children(pid_t watch) {
  int result = -1, st;
  for (;;) {
    signal_children(SIGKILL);
    pid_t p = waitpid(-1, &st, 0);
    if (p < 0) {
      if (errno == EINTR) continue;
      return result; /* ECHILD: nothing left */
    }
    if (p == watch) result = st;
  }
}

/* The kill counter in an OOM file's text (memory.events or cgroup v1's memory.oom_control); -1
   when the file cannot be read or has none. */
static int64_t read_oom_kills(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[1024];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  char *p = strstr(buf, "oom_kill ");
  return p == NULL ? -1 : (int64_t)strtoull(p + 9, NULL, 10);
}

/* Which file counts the supervisor's OOM kills, once found: the agent looks it up before it forks
   any supervisor (supervisor_prepare), so that each exec reads one file rather than three. */
static struct {
  int known;
  char path[600]; /* "" when no file counts them */
} oom_counter;

/* The OOM-kill counter of the supervisor's own cgroup (a microVM guest's `sandbox` group; "/"
   in a container's cgroup namespace), else of the cgroup root as the sandbox sees it; 0 when there
   is none. memory.events counts kills of every kind, the whole machine's OOM killer's included. */
static uint64_t oom_kills(void) {
  if (oom_counter.known) {
    int64_t kills = oom_counter.path[0] == 0 ? 0 : read_oom_kills(oom_counter.path);
    return kills < 0 ? 0 : (uint64_t)kills;
  }
  char own[600] = "";
  int fd = open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char line[512];
    ssize_t n = read(fd, line, sizeof line - 1);
    close(fd);
    if (n > 3 && strncmp(line, "0::/", 4) == 0) {
      line[n] = 0;
      line[strcspn(line, "\n")] = 0;
      if (strcmp(line + 3, "/") != 0 && strstr(line, "/..") == NULL)
        snprintf(own, sizeof own, "/sys/fs/cgroup%s/memory.events", line + 3);
    }
  }
  const char *const files[] = {own, "/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"};
  oom_counter.known = 1;
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    if (files[i][0] == 0) continue;
    int64_t kills = read_oom_kills(files[i]);
    if (kills < 0) continue;
    snprintf(oom_counter.path, sizeof oom_counter.path, "%s", files[i]);
    return (uint64_t)kills;
  }
  return 0;
}

/* The signals a command's process must set back to SIG_DFL before it execs, once known: those
   whose disposition the agent changed or inherited as ignored (an ignored SIGHUP, say: exec keeps
   it), and the supervisor's own. Bit s-1 is signal s. Resetting only these, rather than all 64,
   saves that many system calls on every exec, each of them slow under a VM's software emulation. */
static struct {
  int known;
  uint64_t signals;
} command_resets;

static void add_signal(uint64_t *set, int signo) { *set |= 1ULL << (signo - 1); }

void supervisor_prepare(void) {
  uint64_t set = 0;
  for (int s = 1; s < NSIG && s <= 64; s++) {
    struct sigaction old;
    if (sigaction(s, NULL, &old) == 0 && old.sa_handler != SIG_DFL) add_signal(&set, s);
  }
  add_signal(&set, SIGCHLD);
  add_signal(&set, SIGTERM);
  add_signal(&set, SIGINT);
  add_signal(&set, SIGPIPE);
  command_resets.signals = set;
  command_resets.known = 1;
  (void)oom_kills();
}

/* Copies an ARGV or ENV field list out of the request into a NULL-terminated vector. */
static char **vector(const struct exec_req *req, uint16_t want, uint32_t count) {
  char **v = calloc(count + 1, sizeof *v);
  if (v == NULL) return NULL;
  struct field_iter it = {req->payload, req->payload_len};
  uint16_t tag;
  struct bytes b;
  uint32_t i = 0;
  while (i < count && field_next(&it, &tag, &b) == 1) {
    if (tag != want) continue;
    if ((v[i] = strndup((const char *)b.ptr, b.len)) == NULL) return NULL;
    i++;
  }
  return v;
}

static void send_msg(int ctl, const struct sup_msg *m) {
  while (send(ctl, m, sizeof *m, MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

static void fail(int ctl, int err, int stage) {
  struct sup_msg m = {.kind = SUP_FAILED, .err = err, .stage = stage};
  send_msg(ctl, &m);
  _exit(0);
}

/* Where a command that could not start says why: written by its child, read by the supervisor once
   vfork() returns, which is after the child's exec or exit. */
struct start_report {
  int32_t err;
  int32_t stage; /* -1: the exec happened */
};

/*
 * In the command's process, a vfork() child: it borrows the supervisor's memory and stack until
 * it execs or exits, so it only makes system calls (no allocation, no stdio, nothing that takes a
 * lock) and reports a failure in `report`. set*id are raw system calls: libc's versions signal
 * every thread of the process, and this child's "process" is the supervisor's memory.
 */
static void start_command(char **argv, char **envp, const char *cwd, uid_t uid, gid_t gid, int in_r, int out_w,
                          int err_w, volatile struct start_report *report) {
  int stage = STAGE_SETUP;
  sigset_t none;
  sigemptyset(&none);
  /* Dispositions the agent inherited (an ignored SIGHUP, say) must not reach the command, nor the
     supervisor's handlers run in this child. Signals that cannot be reset (SIGKILL, SIGSTOP,
     libc-internal ones) just fail here; the sigaction of this child is its own (no CLONE_SIGHAND). */
  for (int s = 1; s < NSIG; s++)
    if (!command_resets.known || (s <= 64 && command_resets.signals >> (s - 1) & 1)) signal(s, SIG_DFL);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (setpgid(0, 0) < 0) goto failed;
  if (dup2(in_r, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0) goto failed;
  stage = STAGE_CHDIR;
  if (cwd != NULL) {
    if (chdir(cwd) < 0) goto failed;
  } else if (chdir("/workspace") < 0 && chdir("/") < 0) {
    goto failed;
  }
  stage = STAGE_SETGROUPS;
  if (geteuid() == 0 && syscall(SYS_setgroups, 0, NULL) < 0) goto failed;
  stage = STAGE_SETGID;
  if (syscall(SYS_setgid, gid) < 0) goto failed;
  stage = STAGE_SETUID;
  if (syscall(SYS_setuid, uid) < 0) goto failed;
  stage = STAGE_EXEC;
  /* The supervisor's own environ changes too (shared memory): it never reads it again. execvp
     looks PATH up in it, the command's PATH, as it always has. */
  environ = envp;
  execvp(argv[0], argv);
failed:
  report->err = errno;
  report->stage = stage;
  _exit(127);
}

void supervisor_main(const struct exec_req *req, int ctl, int out_w, int err_w, int in_r) {
  struct sigaction sa = {0};
  sigset_t blocked, waiting;
  sa.sa_handler = on_chld;
  sigaction(SIGCHLD, &sa, NULL);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGCHLD);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGINT);
  sigprocmask(SIG_BLOCK, &blocked, &waiting);
  sigdelset(&waiting, SIGCHLD);
  sigdelset(&waiting, SIGTERM);
  sigdelset(&waiting, SIGINT);

  pid_t agent = getppid();
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != agent) _exit(1);
  /* gVisor (and Linux before 3.4) answers EINVAL outside PID 1: orphans then go to the agent, which
   * reaps them, and the sweep reaches only what stayed in the command's process group. */
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0 && errno != EINVAL) fail(ctl, errno, STAGE_SETUP);

  char **argv, **envp = vector(req, F_ENV, req->envc);
  if (req->has_shell) {
    argv = calloc(4, sizeof *argv);
    if (argv != NULL) {
      argv[0] = "/bin/sh";
      argv[1] = "-c";
      argv[2] = strndup((const char *)req->shell.ptr, req->shell.len);
      if (argv[2] == NULL) argv = NULL;
    }
  } else {
    argv = vector(req, F_ARGV, req->argc);
  }
  if (argv == NULL || envp == NULL) fail(ctl, ENOMEM, STAGE_SETUP);

  char *cwd = NULL;
  if (req->has_cwd && (cwd = strndup((const char *)req->cwd.ptr, req->cwd.len)) == NULL) fail(ctl, ENOMEM, STAGE_SETUP);

  int in[2] = {-1, -1};
  if (in_r >= 0) {
    in[0] = in_r;
  } else if (req->has_stdin) {
    if (pipe2(in, O_CLOEXEC) < 0) fail(ctl, errno, STAGE_SETUP);
  } else if ((in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
    fail(ctl, errno, STAGE_SETUP);
  }

  uint64_t oom_before = oom_kills(), own_before = memory_watch_kills();
  uint64_t started = now_ms();
  /* vfork, not fork: under TCG a fork's page-table copy and the copy-on-write faults after it are
     most of an exec's cost. The child has set its process group before vfork() returns, so a
     killpg from here on reaches it. */
  volatile struct start_report report = {0, -1};
  pid_t pid = vfork();
  if (pid == 0)
    start_command(argv, envp, cwd, (uid_t)req->uid, (gid_t)req->gid, in[0], out_w, err_w, &report);
  if (pid < 0) fail(ctl, errno, STAGE_SETUP);
  close(in[0]);
  close(out_w);
  close(err_w);
  if (report.stage >= 0) {
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    fail(ctl, report.err, report.stage);
  }
  struct sup_msg m = {.kind = SUP_STARTED, .pid = pid};
  send_msg(ctl, &m);

  int in_w = in[1];
  size_t in_off = 0;
  if (in_w >= 0) {
    if (fcntl(in_w, F_SETFL, O_NONBLOCK) < 0) fail(ctl, errno, STAGE_SETUP);
    if (req->stdin_data.len == 0) {
      close(in_w);
      in_w = -1;
    }
  }
  uint64_t deadline = req->timeout_ms ? started + req->timeout_ms : 0;
  int st = 0, done = 0, timed_out = 0, killed = 0, ctl_open = 1;
  while (!done) {
    struct pollfd pf[2];
    nfds_t nf = 0;
    if (ctl_open) pf[nf++] = (struct pollfd){.fd = ctl, .events = POLLIN};
    if (in_w >= 0) pf[nf++] = (struct pollfd){.fd = in_w, .events = POLLOUT};
    struct timespec ts, *tsp = NULL;
    if (deadline) {
      uint64_t now = now_ms(), left = deadline > now ? deadline - now : 0;
      ts.tv_sec = (time_t)(left / 1000);
      ts.tv_nsec = (long)(left % 1000) * 1000000L;
      tsp = &ts;
    }
    int r = ppoll(pf, nf, tsp, &waiting);
    if (r < 0 && errno != EINTR) break;
    if (got_chld) {
      got_chld = 0;
      pid_t p;
      int s;
      while ((p = waitpid(-1, &s, WNOHANG)) > 0)
        if (p == pid) st = s, done = 1;
      if (done) break;
    }
    if (got_term) {
      got_term = 0;
      killpg(pid, SIGTERM);
    }
    if (deadline && now_ms() >= deadline) {
      timed_out = 1;
      break;
    }
    for (nfds_t i = 0; r > 0 && i < nf; i++) {
      if (pf[i].revents == 0) continue;
      if (pf[i].fd == ctl) {
        int32_t signo;
        ssize_t got = recv(ctl, &signo, sizeof signo, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got != (ssize_t)sizeof signo || signo == SIGKILL) {
          killed = 1;
          ctl_open = got == (ssize_t)sizeof signo;
          break;
        }
        killpg(pid, signo);
      } else {
        ssize_t w = write(in_w, req->stdin_data.ptr + in_off, req->stdin_data.len - in_off);
        if (w > 0) in_off += (size_t)w;
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || in_off == req->stdin_data.len) {
          close(in_w);
          in_w = -1;
        }
      }
    }
    if (killed) break;
  }
  if (in_w >= 0) close(in_w);
  if (!done) {
    killpg(pid, SIGKILL);
    st = kill_all_children(pid);
  }
  m = (struct sup_msg){.kind = SUP_EXITED, .status = st, .timed_out = timed_out, .duration_ms = now_ms() - started};
  if (!timed_out && !killed && oom_kills() > oom_before) m.oom = 1;
  /* The agent's own kills while the command ran count for it whatever its exit (a shell outlives
     its killed child), as the host's cgroup counter does for a container. */
  if (memory_watch_kills() > own_before) m.oom = 1;
  if (ctl_open) send_msg(ctl, &m);
  _exit(0);
}
