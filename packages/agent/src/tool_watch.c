/*
 * `shoal-agent watch [--root R] [--recursive] DIR`: a directory's changes as JSON lines on stdout,
 * from inotify, until DIR goes away or the process is killed (PROTOCOL.md, "Tools" › "watch").
 *
 *   {"type":"ready"}
 *   {"type":"create","path":"/workspace/a.txt","is_dir":false}
 *   {"type":"move","path":"/workspace/b.txt","from":"/workspace/a.txt","is_dir":false}
 *
 * Directories are opened beneath R without following symlinks and watched through their
 * /proc/self/fd entry, so that a watch never lands on a directory outside R.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tool_path.h"
#include "tools.h"

#define WATCH_MASK (IN_CREATE | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF)
#define MAX_DEPTH 128
/* How long a rename's first half waits for its second before it counts as a move out. */
#define MOVE_PAIR_MS 20

struct watch {
  char *path; /* NULL: free slot */
};

static struct {
  int ifd;
  int recursive;
  int root_wd;
  const char *dir; /* DIR: every watched path is beneath it, and is resolved beneath it */
  struct watch *w; /* indexed by watch descriptor */
  size_t cap;
  /* The first half of a rename, waiting for its IN_MOVED_TO. */
  int pending;
  uint32_t cookie;
  int pending_dir;
  char pending_path[PATH_MAX];
} s = {.ifd = -1, .root_wd = -1};

static int usage(void) {
  fputs("usage: shoal-agent watch [--root R] [--recursive] DIR\n", stderr);
  return 2;
}

static void event(const char *type, const char *path, int is_dir, const char *from) {
  printf("{\"type\":\"%s\",\"path\":", type);
  json_string(stdout, path);
  if (from != NULL) {
    fputs(",\"from\":", stdout);
    json_string(stdout, from);
  }
  printf(",\"is_dir\":%s}\n", is_dir ? "true" : "false");
}

/* Watches the directory open as fd (known as path); returns the wd or -1 with errno. */
static int add_watch(int fd, const char *path) {
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  int wd = inotify_add_watch(s.ifd, proc, WATCH_MASK | IN_ONLYDIR);
  if (wd < 0) return -1;
  if ((size_t)wd >= s.cap) {
    size_t cap = s.cap ? s.cap : 64;
    while (cap <= (size_t)wd) cap *= 2;
    struct watch *grown = realloc(s.w, cap * sizeof *grown);
    if (grown == NULL) return errno = ENOMEM, -1;
    memset(grown + s.cap, 0, (cap - s.cap) * sizeof *grown);
    s.w = grown, s.cap = cap;
  }
  char *copy = strdup(path);
  if (copy == NULL) return errno = ENOMEM, -1;
  free(s.w[wd].path);
  s.w[wd].path = copy;
  return wd;
}

/*
 * Watches the directory fd (path) and, recursively, every directory below it. With `announce`,
 * also reports what is already inside as created: it was made before the watch could see it.
 * Consumes fd. A subdirectory that cannot be watched (gone, or no watches left) is reported on
 * stderr and skipped.
 */
static int watch_tree(int fd, const char *path, int announce, int depth) {
  int wd = add_watch(fd, path);
  if (wd < 0 || !s.recursive || depth >= MAX_DEPTH) {
    int saved = errno;
    close(fd);
    return errno = saved, wd;
  }
  /* fd is O_PATH (it only names the directory); listing needs a readable one. */
  int rfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  close(fd);
  DIR *d = rfd < 0 ? NULL : fdopendir(rfd);
  if (d == NULL) {
    if (rfd >= 0) close(rfd);
    return wd;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char child[PATH_MAX];
    if (path_join(child, sizeof child, path, e->d_name) < 0) continue;
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
    int is_dir = S_ISDIR(st.st_mode);
    if (announce) event("create", child, is_dir, NULL);
    if (!is_dir) continue;
    int cfd = openat(dirfd(d), e->d_name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (cfd < 0) continue;
    if (watch_tree(cfd, child, announce, depth + 1) < 0) tool_fail(errno, child);
  }
  closedir(d);
  return wd;
}

/* A directory that appeared at path (parent's wd `pwd`, last component name) gets watched too. */
static void watch_new_dir(int pwd, const char *name, const char *path) {
  char parent[PATH_MAX + 64];
  snprintf(parent, sizeof parent, "%s", s.w[pwd].path);
  int pfd = open_beneath(s.dir, parent, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
  if (pfd < 0) return;
  int fd = openat(pfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  close(pfd);
  if (fd < 0) return;
  if (watch_tree(fd, path, 1, 0) < 0) tool_fail(errno, path);
}

static int under(const char *path, const char *dir) {
  size_t n = strlen(dir);
  return strncmp(path, dir, n) == 0 && (path[n] == 0 || path[n] == '/' || strcmp(dir, "/") == 0);
}

/* A directory moved from `from` to `to` inside the tree: its watches follow it. */
static void rename_watches(const char *from, const char *to) {
  size_t n = strlen(from);
  for (size_t i = 0; i < s.cap; i++) {
    char *p = s.w[i].path;
    if (p == NULL || (int)i == s.root_wd || !under(p, from)) continue;
    char moved[PATH_MAX];
    if (snprintf(moved, sizeof moved, "%s%s", to, p + n) >= (int)sizeof moved) continue;
    char *copy = strdup(moved);
    if (copy == NULL) continue;
    free(p);
    s.w[i].path = copy;
  }
}

/* A directory left the tree: the watches on it and below it go. */
static void drop_watches(const char *dir) {
  for (size_t i = 0; i < s.cap; i++) {
    if (s.w[i].path == NULL || (int)i == s.root_wd || !under(s.w[i].path, dir)) continue;
    inotify_rm_watch(s.ifd, (int)i);
    free(s.w[i].path);
    s.w[i].path = NULL;
  }
}

/* The first half of a rename whose second half never came: it moved out of the tree. */
static void flush_pending(void) {
  if (!s.pending) return;
  s.pending = 0;
  event("delete", s.pending_path, s.pending_dir, NULL);
  if (s.pending_dir && s.recursive) drop_watches(s.pending_path);
}

/* Handles one event; returns 1 once DIR itself is gone. */
static int handle(const struct inotify_event *ev) {
  if (ev->mask & IN_Q_OVERFLOW) {
    flush_pending();
    puts("{\"type\":\"overflow\"}");
    return 0;
  }
  if (ev->wd < 0 || (size_t)ev->wd >= s.cap || s.w[ev->wd].path == NULL) return 0;
  const char *dir = s.w[ev->wd].path;
  if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
    if (ev->wd == s.root_wd) {
      flush_pending();
      event("delete", s.dir, 1, NULL);
      return 1;
    }
    /* Its parent reports it; a watch the kernel dropped is forgotten. */
    if (ev->mask & IN_IGNORED) {
      free(s.w[ev->wd].path);
      s.w[ev->wd].path = NULL;
    }
    return 0;
  }
  if (ev->len == 0) return 0;
  char path[PATH_MAX];
  if (path_join(path, sizeof path, dir, ev->name) < 0) return 0;
  int is_dir = (ev->mask & IN_ISDIR) != 0;
  if (ev->mask & IN_MOVED_FROM) {
    flush_pending();
    s.pending = 1, s.cookie = ev->cookie, s.pending_dir = is_dir;
    snprintf(s.pending_path, sizeof s.pending_path, "%s", path);
    return 0;
  }
  if (ev->mask & IN_MOVED_TO) {
    if (s.pending && s.cookie == ev->cookie) {
      s.pending = 0;
      event("move", path, is_dir, s.pending_path);
      if (is_dir && s.recursive) rename_watches(s.pending_path, path);
      return 0;
    }
    flush_pending();
    event("create", path, is_dir, NULL);
    if (is_dir && s.recursive) watch_new_dir(ev->wd, ev->name, path);
    return 0;
  }
  flush_pending();
  if (ev->mask & IN_CREATE) {
    event("create", path, is_dir, NULL);
    if (is_dir && s.recursive) watch_new_dir(ev->wd, ev->name, path);
  } else if (ev->mask & IN_MODIFY) {
    event("modify", path, is_dir, NULL);
  } else if (ev->mask & IN_DELETE) {
    event("delete", path, is_dir, NULL);
  }
  return 0;
}

int watch_main(int argc, char **argv) {
  const char *root = "/", *dir = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--root") == 0 && i + 1 < argc)
      root = argv[++i];
    else if (strcmp(argv[i], "--recursive") == 0)
      s.recursive = 1;
    else if (argv[i][0] == '-' || dir != NULL)
      return usage();
    else
      dir = argv[i];
  }
  if (dir == NULL || dir[0] != '/' || root[0] != '/') return usage();
  s.dir = dir;
  if ((s.ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK)) < 0) return tool_fail(errno, dir), 1;
  int fd = open_beneath(root, dir, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
  if (fd < 0) return tool_fail(errno, dir), 1;
  if ((s.root_wd = watch_tree(fd, dir, 0, 0)) < 0) return tool_fail(errno, dir), 1;
  puts("{\"type\":\"ready\"}");
  fflush(stdout);

  static char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
  for (;;) {
    struct pollfd pf = {.fd = s.ifd, .events = POLLIN};
    int r = poll(&pf, 1, s.pending ? MOVE_PAIR_MS : -1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return tool_fail(errno, dir), 1;
    if (r == 0) {
      flush_pending();
      fflush(stdout);
      continue;
    }
    ssize_t n = read(s.ifd, buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) return tool_fail(errno, dir), 1;
    for (char *p = buf; p < buf + n;) {
      const struct inotify_event *ev = (const struct inotify_event *)p;
      if (handle(ev)) {
        fflush(stdout);
        return 0;
      }
      p += sizeof *ev + ev->len;
    }
    if (fflush(stdout) != 0) return 1; /* nobody reads any more */
  }
}
