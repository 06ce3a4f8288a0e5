/*
 * `shoal-agent bg SUBCOMMAND D …`: background commands that outlive the exec that started them,
 * the host's connection and the host's server. `bg run` daemonises (setsid, double fork), starts
 * the command and writes its output into the directory D, which lives on the sandbox's own disk;
 * the other subcommands read or steer what is in D, so any later exec (after a reconnect or a
 * server restart) finds the command again. The on-disk format and the command lines are written
 * down in PROTOCOL.md ("Tools", "bg").
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "names.h"
#include "supervisor.h"
#include "tool_path.h"
#include "tools.h"

/* The output kept is the newest SEGMENTS segment files of cap/SEGMENTS payload bytes each. */
#define SEGMENTS 8
#define READ_CHUNK 65536
/* After the command exits, output still coming from a leftover process is read this long. */
#define DRAIN_MS 100
/* A follower checks this often that the daemon still lives when nothing changes in D. */
#define LIVENESS_MS 1000
#define REC_HEADER 5  /* on disk: u8 stream, u32 length */
#define TAIL_HEADER 13 /* on stdout: u8 kind, u64 offset, u32 length */

enum { KIND_STDOUT = 1, KIND_STDERR = 2, KIND_STATUS = 3 };

extern char **environ;

static int usage(const char *msg) {
  fprintf(stderr, "shoal-agent bg: %s\n", msg);
  fputs("usage: bg run --dir D --cap BYTES [--timeout-ms MS] [--uid U] [--gid G] -- ARGV...\n"
        "       bg status D | bg wait D | bg tail D [--offset N] [--max BYTES] [--follow]\n"
        "       bg signal D SIG | bg stdin D [--eof]\n",
        stderr);
  return 2;
}

static int number(const char *s, unsigned long long *out) {
  char *end;
  errno = 0;
  if (s[0] < '0' || s[0] > '9') return -1;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != 0) return -1;
  *out = v;
  return 0;
}

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void le_put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void le_put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t le_get32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Writes `text` into D/name through a temporary file and a rename, so readers see all or nothing. */
static int write_atomic(int dir, const char *name, const char *text) {
  char tmp[64];
  snprintf(tmp, sizeof tmp, ".%s.tmp", name);
  int fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  if (write_all(fd, text, strlen(text)) < 0 || fsync(fd) < 0) {
    int e = errno;
    close(fd);
    unlinkat(dir, tmp, 0);
    return errno = e, -1;
  }
  close(fd);
  return renameat(dir, tmp, dir, name);
}

static int read_small(int dir, const char *name, char *buf, size_t cap) {
  int fd = openat(dir, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, cap - 1);
  int e = errno;
  close(fd);
  if (n < 0) return errno = e, -1;
  buf[n] = 0;
  return 0;
}

/* The start time of a process in clock ticks since boot (field 22 of /proc/PID/stat); 0 if gone. */
static unsigned long long start_time_of(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (p == NULL) return 0;
  /* After ") " come fields 3, 4, …; the start time is field 22. */
  p += 2;
  for (int field = 3; field < 22 && p != NULL; field++) {
    p = strchr(p, ' ');
    if (p != NULL) p++;
  }
  return p == NULL ? 0 : strtoull(p, NULL, 10);
}

/* ---- what D holds ---------------------------------------------------------------------------- */

struct info {
  int have_pid, have_status;
  long long daemon_pid, daemon_start, pid, started_at, seg_size;
  long long exit_code, signo, timed_out, ended_at, bytes;
};

static int open_dir(const char *d) {
  int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) tool_fail(errno, d);
  return fd;
}

static void read_info(int dir, struct info *in) {
  char buf[256];
  *in = (struct info){0};
  if (read_small(dir, "pid", buf, sizeof buf) == 0 &&
      sscanf(buf, "%lld %lld %lld %lld %lld", &in->daemon_pid, &in->daemon_start, &in->pid, &in->started_at,
             &in->seg_size) == 5 &&
      in->seg_size > 0)
    in->have_pid = 1;
  if (read_small(dir, "status", buf, sizeof buf) == 0 &&
      sscanf(buf, "%lld %lld %lld %lld %lld", &in->exit_code, &in->signo, &in->timed_out, &in->ended_at,
             &in->bytes) == 5)
    in->have_status = 1;
}

static int daemon_alive(const struct info *in) {
  return in->have_pid && in->daemon_pid > 0 &&
         start_time_of((pid_t)in->daemon_pid) == (unsigned long long)in->daemon_start;
}

/* The smallest and largest segment starts in D; returns the number of segments. */
static int segment_range(int dir, unsigned long long *first, unsigned long long *last) {
  /* A fresh descriptor: one that shares dir's file offset would share its directory position too. */
  int dup = openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dup < 0) return 0;
  DIR *dp = fdopendir(dup);
  if (dp == NULL) {
    close(dup);
    return 0;
  }
  int count = 0;
  struct dirent *de;
  while ((de = readdir(dp)) != NULL) {
    unsigned long long start;
    if (strncmp(de->d_name, "out.", 4) != 0 || number(de->d_name + 4, &start) < 0) continue;
    if (count == 0 || start < *first) *first = start;
    if (count == 0 || start > *last) *last = start;
    count++;
  }
  closedir(dp);
  return count;
}

static int open_segment(int dir, unsigned long long start) {
  char name[32];
  snprintf(name, sizeof name, "out.%020llu", start);
  return openat(dir, name, O_RDONLY | O_CLOEXEC);
}

/* Payload bytes in one segment file (a record still being written counts what is there). */
static unsigned long long segment_payload(int fd) {
  unsigned long long total = 0;
  off_t at = 0;
  uint8_t h[REC_HEADER];
  for (;;) {
    ssize_t n = pread(fd, h, sizeof h, at);
    if (n < (ssize_t)sizeof h) break;
    uint32_t len = le_get32(h + 1);
    struct stat st;
    if (fstat(fd, &st) < 0) break;
    off_t left = st.st_size - at - REC_HEADER;
    if (left < (off_t)len) {
      total += left > 0 ? (unsigned long long)left : 0;
      break;
    }
    total += len;
    at += REC_HEADER + (off_t)len;
  }
  return total;
}

/* Output produced so far (the end offset) and the first offset still kept. */
static void output_extent(int dir, unsigned long long *end, unsigned long long *kept_from) {
  unsigned long long first = 0, last = 0;
  *end = *kept_from = 0;
  if (segment_range(dir, &first, &last) == 0) return;
  *kept_from = first;
  int fd = open_segment(dir, last);
  *end = last + (fd < 0 ? 0 : segment_payload(fd));
  if (fd >= 0) close(fd);
}

static void print_status(FILE *f, int dir, const struct info *in) {
  char buf[16];
  unsigned long long end, kept_from;
  output_extent(dir, &end, &kept_from);
  const char *state = in->have_status ? "exited" : daemon_alive(in) ? "running" : "vanished";
  fprintf(f, "{\"state\":\"%s\",\"pid\":", state);
  if (in->have_pid)
    fprintf(f, "%lld,\"started_at\":%lld", in->pid, in->started_at);
  else
    fputs("null,\"started_at\":null", f);
  if (in->have_status) {
    if (in->signo > 0)
      fprintf(f, ",\"exit_code\":null,\"signal\":\"%s\"", signal_name((int)in->signo, buf));
    else
      fprintf(f, ",\"exit_code\":%lld,\"signal\":null", in->exit_code);
    fprintf(f, ",\"timed_out\":%s,\"ended_at\":%lld,\"bytes\":%lld", in->timed_out ? "true" : "false", in->ended_at,
            in->bytes);
  } else {
    fprintf(f, ",\"exit_code\":null,\"signal\":null,\"timed_out\":false,\"ended_at\":null,\"bytes\":%llu", end);
  }
  fprintf(f, ",\"kept_from\":%llu}\n", kept_from);
}

/* ---- bg run ---------------------------------------------------------------------------------- */

struct run_opts {
  const char *dir;
  unsigned long long cap, timeout_ms, uid, gid;
  int has_uid, has_gid;
  char **argv;
};

/* What the daemon tells the waiting `bg run` caller: the command's pid, or why it did not start. */
struct ready_msg {
  int32_t err;
  int32_t pid;
  int64_t started_at;
};

static struct {
  int dir, fd, broken;
  unsigned long long seg_size, seg_used, total;
} lg = {.dir = -1, .fd = -1};

static volatile sig_atomic_t got_chld, got_term;

static void on_chld(int s) {
  (void)s;
  got_chld = 1;
}

static void on_term(int s) {
  got_term = s;
}

static int mkdir_parents(const char *path) {
  char buf[PATH_MAX];
  if (strlen(path) >= sizeof buf) return errno = ENAMETOOLONG, -1;
  strcpy(buf, path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0755) < 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return 0;
}

/* Starts a new segment when the current one is full and removes the one that falls out of the cap. */
static int rotate(void) {
  if (lg.fd >= 0) close(lg.fd);
  char name[32];
  snprintf(name, sizeof name, "out.%020llu", lg.total);
  lg.fd = openat(lg.dir, name, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  lg.seg_used = 0;
  unsigned long long span = lg.seg_size * SEGMENTS;
  if (lg.total >= span) {
    snprintf(name, sizeof name, "out.%020llu", lg.total - span);
    unlinkat(lg.dir, name, 0);
  }
  return lg.fd < 0 ? -1 : 0;
}

/*
 * Appends output as records that never cross a segment boundary, so that every segment but the
 * newest holds exactly seg_size payload bytes and starts at a multiple of it. Output that cannot be
 * written (a full disk) is dropped whole and takes no offset: the log stays well-formed.
 */
static void log_append(int stream, const uint8_t *p, size_t n) {
  while (n > 0) {
    if (lg.broken) return;
    if ((lg.fd < 0 || lg.seg_used == lg.seg_size) && rotate() < 0) return;
    size_t k = n;
    if (k > lg.seg_size - lg.seg_used) k = (size_t)(lg.seg_size - lg.seg_used);
    uint8_t h[REC_HEADER];
    h[0] = (uint8_t)stream;
    le_put32(h + 1, (uint32_t)k);
    off_t before = lseek(lg.fd, 0, SEEK_END);
    struct iovec iov[2] = {{h, sizeof h}, {(void *)p, k}};
    ssize_t w;
    while ((w = writev(lg.fd, iov, 2)) < 0 && errno == EINTR) {
    }
    if (w != (ssize_t)(sizeof h + k)) {
      if (before >= 0 && ftruncate(lg.fd, before) == 0) return;
      /* Not even the undo worked: the log ends here rather than become unreadable. */
      lg.broken = 1;
      return;
    }
    lg.seg_used += k;
    lg.total += k;
    p += k;
    n -= k;
  }
}

static void close_inherited_fds(int keep) {
  DIR *dp = opendir("/proc/self/fd");
  if (dp == NULL) return;
  int self = dirfd(dp);
  struct dirent *de;
  int fds[1024], n = 0;
  while ((de = readdir(dp)) != NULL && n < 1024) {
    int fd = atoi(de->d_name);
    if (de->d_name[0] >= '0' && de->d_name[0] <= '9' && fd > 2 && fd != keep && fd != self) fds[n++] = fd;
  }
  closedir(dp);
  for (int i = 0; i < n; i++) close(fds[i]);
}

static void send_ready(int fd, int32_t err, int32_t pid, int64_t started_at) {
  struct ready_msg m = {.err = err, .pid = pid, .started_at = started_at};
  write_all(fd, &m, sizeof m);
  close(fd);
}

static void kill_tree(pid_t pid, int *status) {
  killpg(pid, SIGKILL);
  int st = kill_all_children(pid);
  if (st != -1) *status = st;
}

/* The daemon: never returns. The command's stdout and stderr go into D, its stdin comes from D/stdin. */
static void run_daemon(const struct run_opts *o, int dir, int ready) {
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull >= 0) {
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    close(devnull);
  }
  close_inherited_fds(ready);
  /* close_inherited_fds closed D's fd too; reopen it. */
  dir = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int err = 0;
  /* EINVAL: no subreaper here (gVisor); see supervisor.c. */
  if (dir < 0 || (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0 && errno != EINVAL)) {
    send_ready(ready, errno, 0, 0);
    _exit(1);
  }
  lg.dir = dir;
  lg.seg_size = o->cap / SEGMENTS > 0 ? o->cap / SEGMENTS : 1;

  struct sigaction sa = {0};
  sa.sa_handler = on_chld;
  sigaction(SIGCHLD, &sa, NULL);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  sigset_t blocked, waiting;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGCHLD);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGINT);
  sigaddset(&blocked, SIGHUP);
  sigprocmask(SIG_BLOCK, &blocked, &waiting);
  sigdelset(&waiting, SIGCHLD);
  sigdelset(&waiting, SIGTERM);
  sigdelset(&waiting, SIGINT);
  sigdelset(&waiting, SIGHUP);

  int out[2], errp[2], status[2];
  /* The command holds the only read end of the stdin FIFO, the daemon a write end until EOF is asked. */
  int in_r = openat(dir, "stdin", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  int in_w = in_r < 0 ? -1 : openat(dir, "stdin", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  int ctl = openat(dir, "ctl", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (in_r < 0 || in_w < 0 || ctl < 0 || fcntl(in_r, F_SETFL, 0) < 0 || pipe2(out, O_CLOEXEC) < 0 ||
      pipe2(errp, O_CLOEXEC) < 0 || pipe2(status, O_CLOEXEC) < 0) {
    send_ready(ready, errno, 0, 0);
    _exit(1);
  }
  uint64_t started_at = wall_ms();
  pid_t pid = fork();
  if (pid < 0) {
    send_ready(ready, errno, 0, 0);
    _exit(1);
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (setpgid(0, 0) < 0 || dup2(in_r, 0) < 0 || dup2(out[1], 1) < 0 || dup2(errp[1], 2) < 0) goto failed;
    if (o->has_uid || o->has_gid) {
      if (geteuid() == 0 && setgroups(0, NULL) < 0) goto failed;
      if (o->has_gid && setgid((gid_t)o->gid) < 0) goto failed;
      if (o->has_uid && setuid((uid_t)o->uid) < 0) goto failed;
    }
    execvp(o->argv[0], o->argv);
  failed:
    err = errno;
    write_all(status[1], &err, sizeof err);
    _exit(127);
  }
  setpgid(pid, pid);
  close(in_r);
  close(out[1]);
  close(errp[1]);
  close(status[1]);
  ssize_t n;
  while ((n = read(status[0], &err, sizeof err)) < 0 && errno == EINTR) {
  }
  close(status[0]);
  if (n > 0) {
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    unlinkat(dir, "stdin", 0);
    unlinkat(dir, "ctl", 0);
    /* Removed before the answer: the caller looks for the directory as soon as it has one. */
    rmdir(o->dir);
    send_ready(ready, n == (ssize_t)sizeof err ? err : EIO, 0, 0);
    _exit(1);
  }
  char line[160];
  snprintf(line, sizeof line, "%d %llu %d %llu %llu\n", (int)getpid(), start_time_of(getpid()), (int)pid,
           (unsigned long long)started_at, lg.seg_size);
  if (write_atomic(dir, "pid", line) < 0) {
    kill_tree(pid, &(int){0});
    send_ready(ready, errno, 0, 0);
    _exit(1);
  }
  send_ready(ready, 0, pid, (int64_t)started_at);

  fcntl(out[0], F_SETFL, O_NONBLOCK);
  fcntl(errp[0], F_SETFL, O_NONBLOCK);
  int pipes[2] = {out[0], errp[0]};
  uint64_t deadline = o->timeout_ms ? now_ms() + o->timeout_ms : 0, drain_until = 0;
  int st = 0, exited = 0, timed_out = 0;
  static uint8_t buf[READ_CHUNK];
  for (;;) {
    if (exited && ((pipes[0] < 0 && pipes[1] < 0) || now_ms() >= drain_until)) break;
    struct pollfd pf[3];
    nfds_t nf = 0;
    for (int i = 0; i < 2; i++)
      if (pipes[i] >= 0) pf[nf++] = (struct pollfd){.fd = pipes[i], .events = POLLIN};
    if (!exited) pf[nf++] = (struct pollfd){.fd = ctl, .events = POLLIN};
    uint64_t wake = exited ? drain_until : deadline;
    struct timespec ts, *tsp = NULL;
    if (wake) {
      uint64_t now = now_ms(), left = wake > now ? wake - now : 0;
      ts = (struct timespec){.tv_sec = (time_t)(left / 1000), .tv_nsec = (long)(left % 1000) * 1000000L};
      tsp = &ts;
    }
    int r = ppoll(pf, nf, tsp, &waiting);
    if (r < 0 && errno != EINTR) break;
    if (got_term) {
      killpg(pid, got_term);
      got_term = 0;
    }
    if (got_chld) {
      got_chld = 0;
      pid_t p;
      int s;
      while ((p = waitpid(-1, &s, WNOHANG)) > 0)
        if (p == pid && !exited) st = s, exited = 1, drain_until = now_ms() + DRAIN_MS;
    }
    if (!exited && deadline && now_ms() >= deadline) {
      timed_out = 1;
      kill_tree(pid, &st);
      exited = 1;
      drain_until = now_ms() + DRAIN_MS;
    }
    for (nfds_t i = 0; r > 0 && i < nf; i++) {
      if (pf[i].revents == 0) continue;
      if (pf[i].fd == ctl) {
        char cmd[256];
        ssize_t got = read(ctl, cmd, sizeof cmd - 1);
        if (got <= 0) continue;
        cmd[got] = 0;
        for (char *l = cmd; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
          int signo;
          if (l[0] == 'E' && in_w >= 0) {
            close(in_w);
            in_w = -1;
          } else if (sscanf(l, "S %d", &signo) == 1 && signo > 0 && signo < NSIG) {
            if (signo == SIGKILL && !exited) {
              kill_tree(pid, &st);
              exited = 1;
              drain_until = now_ms() + DRAIN_MS;
            } else if (!exited) {
              killpg(pid, signo);
            }
          }
        }
        continue;
      }
      int stream = pf[i].fd == pipes[0] ? KIND_STDOUT : KIND_STDERR;
      ssize_t got = read(pf[i].fd, buf, sizeof buf);
      if (got > 0) {
        log_append(stream, buf, (size_t)got);
      } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
        close(pf[i].fd);
        pipes[stream - 1] = -1;
      }
    }
  }
  /* What a leftover process still writes is not read: its pipe closes with the daemon. */
  if (in_w >= 0) close(in_w);
  int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1, signo = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
  snprintf(line, sizeof line, "%d %d %d %llu %llu\n", code, signo, timed_out, (unsigned long long)wall_ms(),
           lg.total);
  if (lg.fd >= 0) fsync(lg.fd);
  write_atomic(dir, "status", line);
  _exit(0);
}

static int bg_run(int argc, char **argv) {
  struct run_opts o = {0};
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    unsigned long long *target = NULL;
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    } else if (strcmp(a, "--dir") == 0 && i + 1 < argc) {
      o.dir = argv[++i];
      continue;
    } else if (strcmp(a, "--cap") == 0) {
      target = &o.cap;
    } else if (strcmp(a, "--timeout-ms") == 0) {
      target = &o.timeout_ms;
    } else if (strcmp(a, "--uid") == 0) {
      target = &o.uid, o.has_uid = 1;
    } else if (strcmp(a, "--gid") == 0) {
      target = &o.gid, o.has_gid = 1;
    } else {
      return usage("unknown option");
    }
    if (i + 1 >= argc || number(argv[++i], target) < 0) return usage("option needs a number");
  }
  if (o.dir == NULL || o.dir[0] != '/') return usage("--dir takes an absolute path");
  if (o.cap == 0) return usage("--cap takes a positive number of bytes");
  if (o.uid > 0xfffffffeULL || o.gid > 0xfffffffeULL) return usage("--uid and --gid must be below 2^32-1");
  if (i >= argc) return usage("no command after --");
  o.argv = argv + i;

  if (mkdir_parents(o.dir) < 0 || mkdir(o.dir, 0700) < 0) {
    tool_fail(errno, o.dir);
    return 1;
  }
  int dir = open_dir(o.dir);
  if (dir < 0) return 1;
  if (mkfifoat(dir, "stdin", 0600) < 0 || mkfifoat(dir, "ctl", 0600) < 0) {
    tool_fail(errno, o.dir);
    return 1;
  }
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) < 0) {
    tool_fail(errno, NULL);
    return 1;
  }
  pid_t first = fork();
  if (first < 0) {
    tool_fail(errno, NULL);
    return 1;
  }
  if (first == 0) {
    /* A new session, then a second fork: the daemon is nobody's child once this one exits. */
    close(ready[0]);
    if (setsid() < 0) _exit(1);
    pid_t second = fork();
    if (second < 0) _exit(1);
    if (second > 0) _exit(0);
    run_daemon(&o, dir, ready[1]);
  }
  close(ready[1]);
  while (waitpid(first, NULL, 0) < 0 && errno == EINTR) {
  }
  struct ready_msg m;
  ssize_t n;
  while ((n = read(ready[0], &m, sizeof m)) < 0 && errno == EINTR) {
  }
  if (n != (ssize_t)sizeof m) {
    tool_fail(EIO, o.dir);
    return 1;
  }
  if (m.err != 0) {
    tool_fail(m.err, o.argv[0]);
    return 1;
  }
  printf("{\"pid\":%d,\"started_at\":%lld}\n", m.pid, (long long)m.started_at);
  return 0;
}

/* ---- bg status ------------------------------------------------------------------------------- */

static int bg_status(int argc, char **argv) {
  if (argc != 2) return usage("status takes D");
  int dir = open_dir(argv[1]);
  if (dir < 0) return 1;
  struct info in;
  read_info(dir, &in);
  print_status(stdout, dir, &in);
  return 0;
}

/* ---- bg tail --------------------------------------------------------------------------------- */

static int emit(int kind, unsigned long long offset, const void *data, size_t len) {
  static uint8_t out[TAIL_HEADER + READ_CHUNK];
  if (len > READ_CHUNK) return errno = EMSGSIZE, -1;
  out[0] = (uint8_t)kind;
  le_put64(out + 1, offset);
  le_put32(out + 9, (uint32_t)len);
  memcpy(out + TAIL_HEADER, data, len);
  return write_all(1, out, TAIL_HEADER + len);
}

static int emit_status(int dir, unsigned long long offset) {
  struct info in;
  read_info(dir, &in);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (f == NULL) return -1;
  print_status(f, dir, &in);
  fclose(f);
  int r = emit(KIND_STATUS, offset, text, len);
  free(text);
  return r;
}

/* A reader positioned at an absolute offset in D's segments. */
struct cursor {
  int dir, fd;
  unsigned long long seg_size, seg_start, pos; /* pos: absolute offset of the next byte */
  off_t file_at;                               /* where the next record (or its rest) is in the file */
  uint32_t rec_left;                           /* payload bytes of the current record still unread */
  int rec_stream;
};

/* Opens the segment holding cur->pos (or the first kept after it); 0 when it does not exist yet. */
static int cursor_open(struct cursor *c) {
  unsigned long long start = c->pos - c->pos % c->seg_size;
  int fd = open_segment(c->dir, start);
  if (fd < 0) {
    unsigned long long first = 0, last = 0;
    if (segment_range(c->dir, &first, &last) == 0 || first <= start) return 0;
    /* What was asked for fell out of the cap: continue at the first byte kept. */
    start = first;
    c->pos = first;
    if ((fd = open_segment(c->dir, start)) < 0) return 0;
  }
  c->fd = fd;
  c->seg_start = start;
  c->file_at = 0;
  c->rec_left = 0;
  /* Walk to pos through the record headers. */
  unsigned long long at = start;
  uint8_t h[REC_HEADER];
  while (at < c->pos) {
    if (pread(fd, h, sizeof h, c->file_at) < (ssize_t)sizeof h) {
      c->pos = at; /* asked past what is written: start from the end */
      return 1;
    }
    uint32_t len = le_get32(h + 1);
    if (at + len > c->pos) {
      c->rec_stream = h[0];
      c->rec_left = (uint32_t)(at + len - c->pos);
      c->file_at += REC_HEADER + (off_t)(c->pos - at);
      return 1;
    }
    at += len;
    c->file_at += REC_HEADER + (off_t)len;
  }
  return 1;
}

/* Emits what is available from the cursor, at most *budget bytes; returns -1 on a write error. */
static int cursor_pump(struct cursor *c, unsigned long long *budget) {
  static uint8_t buf[READ_CHUNK];
  for (;;) {
    if (*budget == 0) return 0;
    if (c->fd < 0 && !cursor_open(c)) return 0;
    if (c->rec_left == 0) {
      if (c->pos - c->seg_start == c->seg_size) {
        /* This segment is full: the next one starts where it ended. */
        close(c->fd);
        c->fd = -1;
        continue;
      }
      uint8_t h[REC_HEADER];
      if (pread(c->fd, h, sizeof h, c->file_at) < (ssize_t)sizeof h) return 0;
      c->rec_stream = h[0];
      c->rec_left = le_get32(h + 1);
      c->file_at += REC_HEADER;
      if (c->rec_left == 0) continue;
    }
    size_t want = c->rec_left < sizeof buf ? c->rec_left : sizeof buf;
    if (want > *budget) want = (size_t)*budget;
    ssize_t n = pread(c->fd, buf, want, c->file_at);
    if (n <= 0) return 0;
    if (emit(c->rec_stream, c->pos, buf, (size_t)n) < 0) return -1;
    c->pos += (unsigned long long)n;
    c->file_at += n;
    c->rec_left -= (uint32_t)n;
    *budget -= (unsigned long long)n;
  }
}

static int bg_tail(int argc, char **argv) {
  if (argc < 2) return usage("tail takes D");
  unsigned long long offset = 0, max = ULLONG_MAX;
  int follow = 0;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--follow") == 0) {
      follow = 1;
    } else if (strcmp(argv[i], "--offset") == 0 && i + 1 < argc) {
      if (number(argv[++i], &offset) < 0) return usage("--offset takes a number");
    } else if (strcmp(argv[i], "--max") == 0 && i + 1 < argc) {
      if (number(argv[++i], &max) < 0) return usage("--max takes a number");
    } else {
      return usage("unknown option");
    }
  }
  signal(SIGPIPE, SIG_IGN);
  int dir = open_dir(argv[1]);
  if (dir < 0) return 1;
  struct info in;
  read_info(dir, &in);
  if (!in.have_pid) {
    tool_fail(ENOENT, argv[1]);
    return 1;
  }
  struct cursor c = {.dir = dir, .fd = -1, .seg_size = (unsigned long long)in.seg_size, .pos = offset};
  int watch = -1;
  if (follow) {
    watch = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (watch < 0 || inotify_add_watch(watch, argv[1], IN_MODIFY | IN_CREATE | IN_MOVED_TO) < 0) {
      tool_fail(errno, argv[1]);
      return 1;
    }
  }
  /* An offset past the end starts at the end; one that fell out of the cap, at the first byte kept. */
  unsigned long long end, kept_from;
  output_extent(dir, &end, &kept_from);
  if (c.pos > end) c.pos = end;
  if (c.pos < kept_from) c.pos = kept_from;
  unsigned long long budget = max;
  for (;;) {
    /* The status is read before the output: once it exists, everything up to its bytes is on disk. */
    read_info(dir, &in);
    if (cursor_pump(&c, &budget) < 0) return 1;
    if (!follow || budget == 0 || in.have_status) break;
    if (!daemon_alive(&in)) {
      read_info(dir, &in);
      if (in.have_status) continue; /* it exited between the two reads */
      break;
    }
    struct pollfd pf = {.fd = watch, .events = POLLIN};
    if (poll(&pf, 1, LIVENESS_MS) > 0) {
      char events[4096];
      while (read(watch, events, sizeof events) > 0) {
      }
    }
  }
  return emit_status(dir, c.pos) < 0 ? 1 : 0;
}

/* ---- bg wait --------------------------------------------------------------------------------- */

/* Waits, without reading any output, until the command ended (or its daemon vanished). */
static int bg_wait(int argc, char **argv) {
  if (argc != 2) return usage("wait takes D");
  int dir = open_dir(argv[1]);
  if (dir < 0) return 1;
  int watch = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (watch < 0 || inotify_add_watch(watch, argv[1], IN_CREATE | IN_MOVED_TO) < 0) {
    tool_fail(errno, argv[1]);
    return 1;
  }
  struct info in;
  for (;;) {
    read_info(dir, &in);
    if (in.have_status || !daemon_alive(&in)) break;
    struct pollfd pf = {.fd = watch, .events = POLLIN};
    if (poll(&pf, 1, LIVENESS_MS) > 0) {
      char events[4096];
      while (read(watch, events, sizeof events) > 0) {
      }
    }
  }
  /* A daemon that exits writes its status first; read once more in case that just happened. */
  read_info(dir, &in);
  print_status(stdout, dir, &in);
  return 0;
}

/* ---- bg signal, bg stdin --------------------------------------------------------------------- */

static int parse_signal(const char *s) {
  unsigned long long n;
  if (number(s, &n) == 0) return n > 0 && n < NSIG ? (int)n : -1;
  char buf[16];
  for (int i = 1; i < NSIG; i++) {
    const char *name = signal_name(i, buf);
    if (strcmp(s, name) == 0 || strcmp(s, name + 3) == 0) return i;
  }
  return -1;
}

/* Sends one line to the daemon's control FIFO; ESRCH when the command has ended. */
static int control(const char *d, int dir, const char *line) {
  struct info in;
  read_info(dir, &in);
  if (in.have_status || !daemon_alive(&in)) {
    tool_fail(ESRCH, d);
    return 1;
  }
  int fd = openat(dir, "ctl", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0 || write_all(fd, line, strlen(line)) < 0) {
    tool_fail(errno == ENXIO ? ESRCH : errno, d);
    return 1;
  }
  close(fd);
  return 0;
}

static int bg_signal(int argc, char **argv) {
  if (argc != 3) return usage("signal takes D SIG");
  int signo = parse_signal(argv[2]);
  if (signo < 0) return usage("unknown signal");
  int dir = open_dir(argv[1]);
  if (dir < 0) return 1;
  char line[32];
  snprintf(line, sizeof line, "S %d\n", signo);
  signal(SIGPIPE, SIG_IGN);
  return control(argv[1], dir, line);
}

static int bg_stdin(int argc, char **argv) {
  if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--eof") != 0)) return usage("stdin takes D [--eof]");
  signal(SIGPIPE, SIG_IGN);
  int dir = open_dir(argv[1]);
  if (dir < 0) return 1;
  struct info in;
  read_info(dir, &in);
  if (in.have_status || !daemon_alive(&in)) {
    tool_fail(ESRCH, argv[1]);
    return 1;
  }
  /* Non-blocking open: ENXIO (nobody reads) instead of waiting when the command closed its stdin. */
  int fd = openat(dir, "stdin", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0 || fcntl(fd, F_SETFL, 0) < 0) {
    tool_fail(errno == ENXIO ? EPIPE : errno, argv[1]);
    return 1;
  }
  static uint8_t buf[READ_CHUNK];
  for (;;) {
    ssize_t n = read(0, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      tool_fail(errno, NULL);
      return 1;
    }
    if (n == 0) break;
    if (write_all(fd, buf, (size_t)n) < 0) {
      tool_fail(errno, argv[1]);
      return 1;
    }
  }
  close(fd);
  return argc == 3 ? control(argv[1], dir, "E\n") : 0;
}

int bg_main(int argc, char **argv) {
  if (argc < 2) return usage("missing subcommand");
  const char *sub = argv[1];
  if (strcmp(sub, "run") == 0) return bg_run(argc - 1, argv + 1);
  if (strcmp(sub, "status") == 0) return bg_status(argc - 1, argv + 1);
  if (strcmp(sub, "tail") == 0) return bg_tail(argc - 1, argv + 1);
  if (strcmp(sub, "wait") == 0) return bg_wait(argc - 1, argv + 1);
  if (strcmp(sub, "signal") == 0) return bg_signal(argc - 1, argv + 1);
  if (strcmp(sub, "stdin") == 0) return bg_stdin(argc - 1, argv + 1);
  return usage("unknown subcommand");
}
