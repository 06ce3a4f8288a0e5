/* Resolution beneath an allowed root with openat2 (see tool_path.h). */
#define _GNU_SOURCE
#include "tool_path.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
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
  if (n == 1) return openat2_(AT_FDCWD, path, flags, mode, SHOAL_RESOLVE_NO_MAGICLINKS | resolve);
  int rfd = openat2_(AT_FDCWD, root, O_PATH | O_DIRECTORY | O_CLOEXEC, 0, SHOAL_RESOLVE_NO_MAGICLINKS);
  if (rfd < 0) return -1;
  int fd = openat2_(rfd, rel, flags, mode, SHOAL_RESOLVE_BENEATH | SHOAL_RESOLVE_NO_MAGICLINKS | resolve);
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
