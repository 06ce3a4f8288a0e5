/* Resolution beneath an allowed root with openat2, or a walk of its own without (see tool_path.h). */
#define _GNU_SOURCE
#include "tool_path.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "names.h"

/* musl's headers may not carry openat2's struct and flags; the kernel ABI is fixed. */
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
struct shoal_open_how {
  uint64_t flags;
  uint64_t mode;
  uint64_t resolve;
};
#define SHOAL_RESOLVE_NO_MAGICLINKS 0x02ULL
#define SHOAL_RESOLVE_BENEATH 0x08ULL

static int openat2_(int dirfd, const char *path, int flags, mode_t mode, uint64_t resolve) {
  struct shoal_open_how how = {.flags = (uint64_t)(unsigned)flags, .resolve = resolve};
  /* The kernel refuses a mode without O_CREAT or O_TMPFILE. */
  if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) how.mode = mode & 07777;
  long r;
  do r = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
  while (r < 0 && errno == EINTR);
  if (r < 0 && errno == EAGAIN) {
    /* RESOLVE_BENEATH answers EAGAIN when a concurrent rename raced the lookup: retry a few times. */
    for (int i = 0; i < 16 && r < 0 && errno == EAGAIN; i++) r = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
  }
  return (int)r;
}

#define SHOAL_RESOLVE_NO_SYMLINKS 0x04ULL
#define WALK_MAX_DEPTH 512
#define WALK_MAX_LINKS 40

/*
 * Opens what `pin` (an O_PATH descriptor, `st` its stat) stands for with `flags`: through
 * /proc/self/fd, which reaches that very inode and resolves no name again. An O_PATH open is the
 * pin itself (answered as is), after the O_DIRECTORY check.
 */
static int reopen(int pin, const struct stat *st, int flags) {
  if ((flags & O_DIRECTORY) && !S_ISDIR(st->st_mode)) return errno = ENOTDIR, -1;
  if (flags & O_PATH) return pin;
  if (S_ISLNK(st->st_mode)) return errno = ELOOP, -1;
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", pin);
  return open(proc, flags & ~O_NOFOLLOW);
}

/*
 * openat2's resolution done here, for a kernel without it (gVisor answers ENOSYS, or EPERM under
 * its seccomp): one component at a time, each opened O_PATH|O_NOFOLLOW relative to the directory
 * opened before it, with every directory of the way kept open, so ".." pops back to a directory
 * this walk opened instead of asking the kernel, and the kernel never follows a link. A symlink is
 * read and its target walked the same way: absolute, it starts again at the root (`/` as root) or
 * is EXDEV (any other root, as RESOLVE_BENEATH); ".." above the root is EXDEV the same way. A
 * rename racing the walk can only make it fail or see the new tree, never leave the root.
 */
static int walk_beneath(int rootfd, int slash_root, const char *rel, int flags, mode_t mode, uint64_t resolve) {
  static int stack[WALK_MAX_DEPTH];
  int depth = 0, links = 0, result = -1, err = 0;
  char todo[2 * PATH_MAX];
  size_t len = strlen(rel);
  if (len >= sizeof todo) return errno = ENAMETOOLONG, -1;
  memcpy(todo, rel, len + 1);
  stack[0] = rootfd;
  char *cursor = todo;
  for (;;) {
    while (*cursor == '/') cursor++;
    if (*cursor == 0) {
      /* The path ends in a directory (or is the root): open it with the caller's flags. */
      result = openat(stack[depth], ".", flags & ~(O_CREAT | O_EXCL), mode);
      if (result < 0) err = errno;
      break;
    }
    char *end = strchr(cursor, '/');
    size_t n = end == NULL ? strlen(cursor) : (size_t)(end - cursor);
    char name[NAME_MAX + 1];
    if (n > NAME_MAX) {
      err = ENAMETOOLONG;
      break;
    }
    memcpy(name, cursor, n);
    name[n] = 0;
    cursor += n;
    /* Not last when a slash follows, even a trailing one: the name must then be a directory. */
    int last = end == NULL;
    if (strcmp(name, ".") == 0) continue;
    if (strcmp(name, "..") == 0) {
      if (depth > 0) {
        close(stack[depth--]);
      } else if (!slash_root) {
        err = EXDEV;
        break;
      }
      continue;
    }
    if (last && (flags & O_CREAT)) {
      /* Creating: the name is opened, or made, without following a link (O_CREAT takes no O_DIRECTORY). */
      result = openat(stack[depth], name, flags | O_NOFOLLOW, mode);
      if (result < 0) err = errno;
      if (result >= 0 || err != ELOOP || (flags & O_NOFOLLOW)) break;
    } else if (last) {
      /* The name pinned first (O_PATH|O_NOFOLLOW opens a link itself), then opened as asked through
         that pin: gVisor follows a final symlink despite O_NOFOLLOW when O_DIRECTORY is given. */
      int pin = openat(stack[depth], name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
      struct stat st;
      if (pin < 0 || fstat(pin, &st) < 0) {
        err = errno;
        if (pin >= 0) close(pin);
        break;
      }
      if (!S_ISLNK(st.st_mode) || (flags & O_NOFOLLOW)) {
        result = reopen(pin, &st, flags);
        if (result < 0) err = errno;
        if (result != pin) close(pin);
        break;
      }
      close(pin);
    } else {
      int fd = openat(stack[depth], name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) {
        err = errno;
        break;
      }
      struct stat st;
      if (fstat(fd, &st) < 0) {
        err = errno;
        close(fd);
        break;
      }
      if (S_ISDIR(st.st_mode)) {
        if (depth + 1 >= WALK_MAX_DEPTH) {
          close(fd);
          err = ENAMETOOLONG;
          break;
        }
        stack[++depth] = fd;
        continue;
      }
      close(fd);
      if (!S_ISLNK(st.st_mode)) {
        err = ENOTDIR;
        break;
      }
    }
    /* A symlink to follow: its target goes in front of what is left of the path (empty, or "/…"). */
    if ((resolve & SHOAL_RESOLVE_NO_SYMLINKS) || ++links > WALK_MAX_LINKS) {
      err = ELOOP;
      break;
    }
    char target[PATH_MAX];
    ssize_t tn = readlinkat(stack[depth], name, target, sizeof target - 1);
    if (tn < 0) {
      err = errno == EINVAL ? ENOENT : errno; /* replaced by a non-link meanwhile: the walk lost the race */
      break;
    }
    target[tn] = 0;
    size_t rest = strlen(cursor);
    if ((size_t)tn + rest + 1 > sizeof todo) {
      err = ENAMETOOLONG;
      break;
    }
    memmove(todo + tn, cursor, rest + 1);
    memcpy(todo, target, (size_t)tn);
    cursor = todo;
    if (target[0] == '/') {
      if (!slash_root) {
        err = EXDEV;
        break;
      }
      while (depth > 0) close(stack[depth--]);
    }
  }
  while (depth > 0) close(stack[depth--]);
  if (result < 0) errno = err;
  return result;
}

/* -1: not known yet; 0: openat2 works; 1: walk (no openat2 here, or SHOAL_AGENT_RESOLVE=walk). */
static int walking = -1;

/* openat2, or the walk where the kernel has none. */
static int resolve_beneath(int dirfd, int slash_root, const char *path, int flags, mode_t mode, uint64_t resolve) {
  if (walking < 0) {
    const char *forced = getenv("SHOAL_AGENT_RESOLVE");
    walking = forced != NULL && strcmp(forced, "walk") == 0;
  }
  if (!walking) {
    uint64_t how = resolve | SHOAL_RESOLVE_NO_MAGICLINKS | (slash_root ? 0 : SHOAL_RESOLVE_BENEATH);
    int fd = openat2_(dirfd, path, flags, mode, how);
    if (fd >= 0 || (errno != ENOSYS && errno != EPERM)) return fd;
    /* ENOSYS: no openat2 (gVisor); EPERM: gVisor's seccomp, which knows no openat2, refused it. */
    walking = 1;
  }
  return walk_beneath(dirfd, slash_root, path, flags, mode, resolve);
}

/* The part of path below root ("." for root itself), or NULL when path is not at or under root. */
static const char *below(const char *root, const char *path) {
  if (root[0] != '/' || path[0] != '/') return NULL;
  size_t n = strlen(root);
  while (n > 1 && root[n - 1] == '/') n--;
  if (n == 1) return path[1] ? path + 1 : ".";
  if (strncmp(root, path, n) != 0) return NULL;
  if (path[n] == 0) return ".";
  if (path[n] != '/') return NULL;
  return path[n + 1] ? path + n + 1 : ".";
}

int open_beneath_how(const char *root, const char *path, int flags, mode_t mode, unsigned long long resolve) {
  const char *rel = below(root, path);
  if (rel == NULL) return errno = EINVAL, -1;
  size_t n = strlen(root);
  while (n > 1 && root[n - 1] == '/') n--;
  int rfd = open(n == 1 ? "/" : root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rfd < 0) return -1;
  int fd = resolve_beneath(rfd, n == 1, rel, flags, mode, resolve);
  int saved = errno;
  close(rfd);
  errno = saved;
  return fd;
}

int open_beneath(const char *root, const char *path, int flags, mode_t mode) {
  return open_beneath_how(root, path, flags, mode, 0);
}

int open_parent_beneath(const char *root, const char *path, char *name, size_t cap) {
  const char *rel = below(root, path);
  if (rel == NULL || strcmp(rel, ".") == 0) return errno = EINVAL, -1;
  const char *slash = strrchr(path, '/');
  const char *last = slash + 1;
  if (*last == 0 || strcmp(last, ".") == 0 || strcmp(last, "..") == 0) return errno = EINVAL, -1;
  size_t len = strlen(last);
  if (len + 1 > cap) return errno = ENAMETOOLONG, -1;
  size_t dlen = (size_t)(slash - path);
  char dir[4096];
  if (dlen + 1 > sizeof dir) return errno = ENAMETOOLONG, -1;
  if (dlen == 0) {
    strcpy(dir, "/");
  } else {
    memcpy(dir, path, dlen);
    dir[dlen] = 0;
  }
  int fd = open_beneath(root, dir, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
  if (fd < 0) return -1;
  memcpy(name, last, len + 1);
  return fd;
}

/* Length of the valid UTF-8 sequence at s, or 0. */
static size_t utf8_len(const unsigned char *s) {
  unsigned c = s[0];
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) n = 2, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef) n = 3, cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4) n = 4, cp = c & 0x07;
  else return 0;
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
    return 0;
  return n;
}

void json_string(FILE *f, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  putc('"', f);
  while (*p) {
    unsigned c = *p;
    if (c == '"' || c == '\\') {
      putc('\\', f);
      putc((int)c, f);
      p++;
    } else if (c == '\n') {
      fputs("\\n", f), p++;
    } else if (c == '\t') {
      fputs("\\t", f), p++;
    } else if (c == '\r') {
      fputs("\\r", f), p++;
    } else if (c < 0x20 || c == 0x7f) {
      fprintf(f, "\\u%04x", c), p++;
    } else {
      size_t n = utf8_len(p);
      if (n == 0) {
        fputs("\\ufffd", f);
        p++;
      } else {
        fwrite(p, 1, n, f);
        p += n;
      }
    }
  }
  putc('"', f);
}

void tool_fail(int err, const char *path) {
  char buf[16];
  fprintf(stderr, "{\"errno\":\"%s\",\"message\":", errno_name(err, buf));
  json_string(stderr, strerror(err));
  if (path != NULL) {
    fputs(",\"path\":", stderr);
    json_string(stderr, path);
  }
  fputs("}\n", stderr);
  fflush(stderr);
}

int write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int path_join(char *buf, size_t cap, const char *dir, const char *name) {
  int n = snprintf(buf, cap, "%s%s%s", dir, strcmp(dir, "/") == 0 ? "" : "/", name);
  if (n < 0 || (size_t)n >= cap) return errno = ENAMETOOLONG, -1;
  return 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void dir_names_free(struct dir_names *names) {
  for (size_t i = 0; i < names->n; i++) free(names->v[i]);
  free(names->v);
  names->v = NULL;
  names->n = 0;
}

int dir_names_read(int fd, struct dir_names *out) {
  out->v = NULL, out->n = 0;
  DIR *d = fdopendir(fd);
  if (d == NULL) {
    int saved = errno;
    close(fd);
    return errno = saved, -1;
  }
  size_t cap = 0;
  struct dirent *e;
  errno = 0;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (out->n == cap) {
      cap = cap ? 2 * cap : 16;
      char **grown = realloc(out->v, cap * sizeof *grown);
      if (grown == NULL) goto oom;
      out->v = grown;
    }
    if ((out->v[out->n] = strdup(e->d_name)) == NULL) goto oom;
    out->n++;
    errno = 0;
  }
  int saved = errno;
  closedir(d);
  if (saved != 0) {
    dir_names_free(out);
    return errno = saved, -1;
  }
  if (out->n > 1) qsort(out->v, out->n, sizeof *out->v, by_name);
  return 0;
oom:
  closedir(d);
  dir_names_free(out);
  return errno = ENOMEM, -1;
}
