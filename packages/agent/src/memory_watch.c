/* The agent's own OOM killer (see memory_watch.h). */
#define _GNU_SOURCE
#include "memory_watch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Far from the limit the look is rarer; near it, often enough that a fast allocator overshoots
 * by a few MiB at most, well inside the headroom the host's cgroup leaves for this. */
#define RELAXED_MS 50
#define CLOSE_MS 5
/* gVisor updates a cgroup's usage lazily (every 50 ms or so): after a kill, the usage it reports
 * still holds the victim's memory for a while, which must not pick a second victim. */
#define SETTLE_MS 250

static const char *limit_path;
static struct timespec limit_mtime;
static uint64_t limit;
static uint64_t next_look_ms;
static int interval_ms = RELAXED_MS;
static volatile uint64_t *kills; /* MAP_SHARED: the supervisors read what the agent counts */
static pid_t dying = -1;
static uint64_t killed_at_ms;
static dev_t own_dev;
static ino_t own_ino;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int read_text(const char *path, char *buf, size_t cap);

/* Reads the limit file again when it changed since the last read; a file that is gone keeps the limit. */
static void reload_limit(void) {
  struct stat st;
  if (stat(limit_path, &st) < 0) return;
  if (st.st_mtim.tv_sec == limit_mtime.tv_sec && st.st_mtim.tv_nsec == limit_mtime.tv_nsec) return;
  char buf[64];
  if (read_text(limit_path, buf, sizeof buf) < 0) return;
  uint64_t value = strtoull(buf, NULL, 10);
  if (value == 0) return;
  limit = value;
  limit_mtime = st.st_mtim;
}

int memory_watch_init(const char *limit_file) {
  if (limit_file == NULL) return 0;
  limit_path = limit_file;
  reload_limit();
  if (limit == 0) return errno = ENOENT, -1;
  void *shared = mmap(NULL, sizeof *kills, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) return -1;
  kills = shared;
  struct stat self;
  if (stat("/proc/self/exe", &self) == 0) own_dev = self.st_dev, own_ino = self.st_ino;
  next_look_ms = now_ms();
  return 0;
}

static int read_text(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, cap - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  return 0;
}

/* What the sandbox uses: its memory cgroup's usage, else what /proc/meminfo shows as taken. */
static uint64_t usage(void) {
  char buf[4096];
  if (read_text("/sys/fs/cgroup/memory/memory.usage_in_bytes", buf, sizeof buf) == 0) return strtoull(buf, NULL, 10);
  if (read_text("/sys/fs/cgroup/memory.current", buf, sizeof buf) == 0) return strtoull(buf, NULL, 10);
  if (read_text("/proc/meminfo", buf, sizeof buf) < 0) return 0;
  char *total = strstr(buf, "MemTotal:"), *avail = strstr(buf, "MemAvailable:");
  if (total == NULL || avail == NULL) return 0;
  uint64_t t = strtoull(total + 9, NULL, 10), a = strtoull(avail + 13, NULL, 10);
  return t > a ? (t - a) * 1024u : 0;
}

/* Whether pid runs the agent's own binary: its supervisors and tools, never a victim. */
static int is_agent(pid_t pid) {
  char path[64];
  struct stat st;
  snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
  return stat(path, &st) == 0 && st.st_dev == own_dev && st.st_ino == own_ino;
}

/* The process with the most resident pages, never the agent's (PID 1, supervisors, tools); -1 when there is none. */
static pid_t largest(void) {
  DIR *d = opendir("/proc");
  if (d == NULL) return -1;
  pid_t best = -1;
  unsigned long long most = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
    pid_t pid = (pid_t)strtol(de->d_name, NULL, 10);
    if (pid == 1 || is_agent(pid)) continue;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    if (read_text(path, buf, sizeof buf) < 0) continue;
    unsigned long long size, resident;
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2) continue;
    if (resident > most) most = resident, best = pid;
  }
  closedir(d);
  return best;
}

int memory_watch_timeout_ms(void) {
  if (limit == 0) return -1;
  uint64_t now = now_ms();
  return next_look_ms > now ? (int)(next_look_ms - now) : 0;
}

void memory_watch_check(void) {
  if (limit == 0 || now_ms() < next_look_ms) return;
  reload_limit();
  uint64_t used = usage();
  interval_ms = used > limit / 4 * 3 ? CLOSE_MS : RELAXED_MS;
  next_look_ms = now_ms() + (uint64_t)interval_ms;
  if (used <= limit) return;
  /* One victim at a time: its memory is freed only once it is gone, and counted so a little later. */
  if (dying > 0 && kill(dying, 0) == 0) return;
  if (killed_at_ms != 0 && now_ms() - killed_at_ms < SETTLE_MS) return;
  pid_t victim = largest();
  if (victim < 0) return;
  if (kill(victim, SIGKILL) == 0) {
    dying = victim;
    killed_at_ms = now_ms();
    __atomic_add_fetch(kills, 1, __ATOMIC_SEQ_CST);
  }
}

uint64_t memory_watch_kills(void) {
  return kills == NULL ? 0 : __atomic_load_n(kills, __ATOMIC_SEQ_CST);
}
