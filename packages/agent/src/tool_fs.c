/*
 * `shoal-agent fs SUBCOMMAND [--root R] [OPTIONS] PATH…`: the file operations of the files API,
 * performed inside the sandbox. Every path is resolved beneath --root (tool_path.c), and every walk
 * (list, remove --recursive, mkdir --parents) steps one component at a time with O_NOFOLLOW, so
 * that neither a symlink nor a race that swaps one in can lead outside the root. The command lines
 * and outputs are written down in PROTOCOL.md ("Tools", "fs").
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "tool_path.h"
#include "tools.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

/* Deeper trees than this are refused by list and remove (ELOOP) rather than exhausting fds. */
#define MAX_WALK_DEPTH 200
#define COPY_CHUNK (1 << 20)
#define PIPE_BYTES (1 << 20)

struct opts {
  const char *root;
  const char *to_root;
  const char *paths[2];
  int npaths;
  long long offset, length, suffix, depth, limit;
  int mode; /* -1: not given */
  int parents, overwrite, recursive, range;
};

static int usage(const char *msg) {
  fprintf(stderr, "shoal-agent fs: %s\n", msg);
  return 2;
}

static int number(const char *s, long long *out, int base) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, base);
  if (errno != 0 || end == s || *end != 0 || v < 0) return -1;
  *out = v;
  return 0;
}

static int parse(int argc, char **argv, struct opts *o) {
  *o = (struct opts){.root = "/", .to_root = NULL, .offset = 0, .length = -1, .suffix = -1, .depth = 1,
                     .limit = -1, .mode = -1};
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    long long n;
    if (strcmp(a, "--parents") == 0) o->parents = 1;
    else if (strcmp(a, "--overwrite") == 0) o->overwrite = 1;
    else if (strcmp(a, "--recursive") == 0) o->recursive = 1;
    else if (strcmp(a, "--range") == 0) o->range = 1;
    else if (strncmp(a, "--", 2) == 0 && a[2] != 0) {
      if (v == NULL) return usage("an option is missing its value");
      i++;
      if (strcmp(a, "--root") == 0) o->root = v;
      else if (strcmp(a, "--to-root") == 0) o->to_root = v;
      else if (strcmp(a, "--mode") == 0) {
        if (number(v, &n, 8) < 0 || n > 07777) return usage("--mode takes an octal mode");
        o->mode = (int)n;
      } else {
        if (number(v, &n, 10) < 0) return usage("a numeric option takes a non-negative integer");
        if (strcmp(a, "--offset") == 0) o->offset = n;
        else if (strcmp(a, "--length") == 0) o->length = n;
        else if (strcmp(a, "--suffix") == 0) o->suffix = n;
        else if (strcmp(a, "--depth") == 0) o->depth = n;
        else if (strcmp(a, "--limit") == 0) o->limit = n;
        else return usage("unknown option");
      }
    } else {
      if (o->npaths == 2) return usage("too many paths");
      o->paths[o->npaths++] = a;
    }
  }
  if (o->root[0] != '/') return usage("--root must be absolute");
  if (o->to_root == NULL) o->to_root = o->root;
  if (o->to_root[0] != '/') return usage("--to-root must be absolute");
  for (int i = 0; i < o->npaths; i++)
    if (o->paths[i][0] != '/') return usage("paths must be absolute");
  return 0;
}

static const char *type_of(mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "directory";
  if (S_ISLNK(m)) return "symlink";
  return "other";
}

/* One entry as a JSON object (no newline): the entry itself, never what a symlink points to. */
static void print_entry(FILE *f, const char *path, const char *name, const struct stat *st, const char *target) {
  char when[40];
  struct tm tm;
  time_t secs = st->st_mtim.tv_sec;
  gmtime_r(&secs, &tm);
  size_t w = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(when + w, sizeof when - w, ".%03ldZ", st->st_mtim.tv_nsec / 1000000);
  fputs("{\"path\":", f);
  json_string(f, path);
  fputs(",\"name\":", f);
  json_string(f, name);
  fprintf(f, ",\"type\":\"%s\",\"size\":%lld,\"mode\":%u,\"uid\":%u,\"gid\":%u,\"modified_at\":\"%s\"",
          type_of(st->st_mode), (long long)st->st_size, (unsigned)(st->st_mode & 07777), (unsigned)st->st_uid,
          (unsigned)st->st_gid, when);
  if (target != NULL) {
    fputs(",\"symlink_target\":", f);
    json_string(f, target);
  }
  putc('}', f);
}

static const char *base_name(const char *path) {
  const char *s = strrchr(path, '/');
  return s[1] ? s + 1 : "/";
}

/* Stats path beneath root without following a final symlink; target gets the link's text. */
static int stat_path(const char *root, const char *path, struct stat *st, char *target, size_t cap) {
  int fd = open_beneath(root, path, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0);
  if (fd < 0) return -1;
  int r = fstat(fd, st);
  if (r == 0 && S_ISLNK(st->st_mode)) {
    ssize_t n = readlinkat(fd, "", target, cap - 1);
    target[n < 0 ? 0 : n] = 0;
  } else {
    target[0] = 0;
  }
  int saved = errno;
  close(fd);
  errno = saved;
  return r;
}

static int print_stat(const char *root, const char *path) {
  struct stat st;
  char target[PATH_MAX];
  if (stat_path(root, path, &st, target, sizeof target) < 0) return tool_fail(errno, path), 1;
  print_entry(stdout, path, base_name(path), &st, S_ISLNK(st.st_mode) ? target : NULL);
  putchar('\n');
  return fflush(stdout) == 0 ? 0 : 1;
}

static int cmd_stat(struct opts *o) {
  if (o->npaths != 1) return usage("stat takes one path");
  return print_stat(o->root, o->paths[0]);
}

static int cmd_exists(struct opts *o) {
  if (o->npaths != 1) return usage("exists takes one path");
  struct stat st;
  char target[PATH_MAX];
  if (stat_path(o->root, o->paths[0], &st, target, sizeof target) < 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      puts("{\"exists\":false}");
      return 0;
    }
    return tool_fail(errno, o->paths[0]), 1;
  }
  printf("{\"exists\":true,\"type\":\"%s\"}\n", type_of(st.st_mode));
  return 0;
}

/* --- list ------------------------------------------------------------------------------------- */

struct walk {
  long long left; /* entries still to print; -1: no limit */
  int truncated;
  const char *fail_path;
  int fail_errno;
};

/* A directory's entries, walked with a dirfd held open so that no entry is looked up by path. */
static void list_at(int dirfd, const char *dir, long long depth, int level, dev_t dev, struct walk *w) {
  int copy = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (copy < 0) {
    if (w->fail_errno == 0) w->fail_errno = errno, w->fail_path = strdup(dir);
    return;
  }
  struct dir_names names;
  if (dir_names_read(copy, &names) < 0) {
    if (w->fail_errno == 0) w->fail_errno = errno, w->fail_path = strdup(dir);
    return;
  }
  for (size_t i = 0; i < names.n && !w->truncated; i++) {
    char path[PATH_MAX];
    struct stat st;
    if (path_join(path, sizeof path, dir, names.v[i]) < 0) continue;
    if (fstatat(dirfd, names.v[i], &st, AT_SYMLINK_NOFOLLOW) < 0) continue; /* removed meanwhile */
    if (w->left == 0) {
      w->truncated = 1;
      break;
    }
    char target[PATH_MAX];
    const char *link = NULL;
    if (S_ISLNK(st.st_mode)) {
      ssize_t len = readlinkat(dirfd, names.v[i], target, sizeof target - 1);
      target[len < 0 ? 0 : len] = 0;
      link = target;
    }
    print_entry(stdout, path, names.v[i], &st, link);
    putchar('\n');
    if (w->left > 0) w->left--;
    /* Another filesystem mounted below (/proc under /, say) is listed as a name, not walked. */
    if (S_ISDIR(st.st_mode) && st.st_dev == dev && (depth == 0 || level < depth) && level < MAX_WALK_DEPTH) {
      int sub = openat(dirfd, names.v[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub >= 0) {
        list_at(sub, path, depth, level + 1, dev, w);
        close(sub);
      }
    }
  }
  dir_names_free(&names);
}

static int cmd_list(struct opts *o) {
  if (o->npaths != 1) return usage("list takes one path");
  const char *path = o->paths[0];
  /* The listed directory itself may be a symlink to a directory within the root. */
  int fd = open_beneath(o->root, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (fd < 0) return tool_fail(errno, path), 1;
  struct walk w = {.left = o->limit};
  struct stat top;
  if (fstat(fd, &top) < 0) return tool_fail(errno, path), 1;
  list_at(fd, path, o->depth, 1, top.st_dev, &w);
  close(fd);
  if (w.fail_errno != 0 && w.fail_path != NULL && strcmp(w.fail_path, path) == 0)
    return tool_fail(w.fail_errno, path), 1;
  if (w.truncated) puts("{\"truncated\":true}");
  return fflush(stdout) == 0 ? 0 : 1;
}

/* --- read ------------------------------------------------------------------------------------- */

/* Copies n bytes from in at offset to out: sendfile, else read and write. */
static int copy_out(int in, int out, off_t offset, long long n) {
  while (n > 0) {
    size_t want = n > COPY_CHUNK ? COPY_CHUNK : (size_t)n;
    ssize_t s = sendfile(out, in, &offset, want);
    if (s < 0 && errno == EINTR) continue;
    if (s < 0 && (errno == EINVAL || errno == ENOSYS)) break;
    if (s < 0) return -1;
    if (s == 0) return errno = EIO, -1; /* the file shrank under us */
    n -= s;
  }
  static char buf[COPY_CHUNK];
  while (n > 0) {
    size_t want = n > (long long)sizeof buf ? sizeof buf : (size_t)n;
    ssize_t r = pread(in, buf, want, offset);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) return errno = EIO, -1;
    if (write_all(out, buf, (size_t)r) < 0) return -1;
    offset += r;
    n -= r;
  }
  return 0;
}

static int cmd_read(struct opts *o) {
  if (o->npaths != 1) return usage("read takes one path");
  const char *path = o->paths[0];
  int fd = open_beneath(o->root, path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0);
  if (fd < 0) return tool_fail(errno, path), 1;
  struct stat st;
  if (fstat(fd, &st) < 0) return tool_fail(errno, path), 1;
  if (S_ISDIR(st.st_mode)) return tool_fail(EISDIR, path), 1;
  /* Devices, FIFOs and sockets have no size to answer and may never end. */
  if (!S_ISREG(st.st_mode)) return tool_fail(EINVAL, path), 1;
  long long size = st.st_size, offset = o->offset, length = 0;
  int unsatisfiable;
  if (o->suffix >= 0) {
    unsatisfiable = o->suffix == 0 || size == 0;
    length = o->suffix < size ? o->suffix : size;
    offset = size - length;
  } else {
    /* HTTP: a range starting at or past the end is unsatisfiable; a plain read may start at the end. */
    unsatisfiable = o->range ? offset >= size : offset > size;
    if (!unsatisfiable) length = o->length < 0 || o->length > size - offset ? size - offset : o->length;
  }
  if (unsatisfiable) {
    fprintf(stderr, "{\"errno\":\"ERANGE\",\"message\":\"The range is not within the file\",\"path\":");
    json_string(stderr, path);
    fprintf(stderr, ",\"size\":%lld}\n", size);
    return 1;
  }
  /* A larger pipe to the agent means fewer, larger reads on its side (best effort). */
  fcntl(1, F_SETPIPE_SZ, PIPE_BYTES);
  printf("{\"size\":%lld,\"offset\":%lld,\"length\":%lld}\n", size, offset, length);
  if (fflush(stdout) != 0) return 1;
  if (copy_out(fd, 1, (off_t)offset, length) < 0) return tool_fail(errno, path), 1;
  close(fd);
  return 0;
}

/* --- write, mkdir ----------------------------------------------------------------------------- */

/* Creates every missing directory of path beneath root: path itself with mode, the others 0755. */
static int make_parents(const char *root, const char *path, mode_t mode) {
  char prefix[PATH_MAX];
  size_t len = strlen(path), rlen = strlen(root);
  if (len >= sizeof prefix) return errno = ENAMETOOLONG, -1;
  size_t start = strcmp(root, "/") == 0 ? 1 : rlen + 1;
  for (size_t i = start; i <= len; i++) {
    if (path[i] != '/' && path[i] != 0) continue;
    memcpy(prefix, path, i);
    prefix[i] = 0;
    char name[NAME_MAX + 1];
    int pfd = open_parent_beneath(root, prefix, name, sizeof name);
    if (pfd < 0) return -1;
    int r = mkdirat(pfd, name, i == len ? mode : 0755);
    int saved = errno;
    close(pfd);
    if (r < 0 && saved != EEXIST) return errno = saved, -1;
  }
  return 0;
}

static int random_suffix(char *out, size_t n) {
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  unsigned char bytes[16];
  if (n > sizeof bytes) n = sizeof bytes;
  if (syscall(SYS_getrandom, bytes, n, 0) != (long)n) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    for (size_t i = 0; i < n; i++) bytes[i] = (unsigned char)((ts.tv_nsec >> (i % 8)) ^ getpid() ^ i);
  }
  for (size_t i = 0; i < n; i++) out[i] = alphabet[bytes[i] % (sizeof alphabet - 1)];
  out[n] = 0;
  return 0;
}

/* The named temporary file of a write under way, removed when the host abandons the write. */
static int abandoned_dir = -1;
static char abandoned_tmp[NAME_MAX + 1];

static void abandon_write(int signo) {
  (void)signo;
  if (abandoned_dir >= 0 && abandoned_tmp[0] != 0) unlinkat(abandoned_dir, abandoned_tmp, 0);
  _exit(1);
}

/* Gives the O_TMPFILE file fd a fresh temporary name in pfd (written to tmp). */
static int link_tmpfile(int fd, int pfd, const char *name, char *tmp) {
  char proc[64], rnd[12];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  for (int attempt = 0; attempt < 8; attempt++) {
    random_suffix(rnd, 10);
    snprintf(tmp, NAME_MAX + 1, ".%.*s.shoal-%s", NAME_MAX - 20, name, rnd);
    if (linkat(fd, "", pfd, tmp, AT_EMPTY_PATH) == 0) return 0;
    if (errno == EEXIST) continue;
    /* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc link does not. */
    if (linkat(AT_FDCWD, proc, pfd, tmp, AT_SYMLINK_FOLLOW) == 0) return 0;
    if (errno != EEXIST) return -1;
  }
  return errno = EEXIST, -1;
}

/* Reads stdin into a temporary file beside path and renames it over path. */
static int cmd_write(struct opts *o) {
  if (o->npaths != 1) return usage("write takes one path");
  const char *path = o->paths[0];
  char name[NAME_MAX + 1];
  if (o->parents) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash != NULL && slash != dir) {
      *slash = 0;
      if (strlen(dir) > strlen(o->root) && make_parents(o->root, dir, 0755) < 0) return tool_fail(errno, path), 1;
    }
  }
  int pfd = open_parent_beneath(o->root, path, name, sizeof name);
  if (pfd < 0) return tool_fail(errno == EINVAL ? EISDIR : errno, path), 1;
  mode_t mode = o->mode >= 0 ? (mode_t)o->mode : 0644;
  struct stat old;
  if (fstatat(pfd, name, &old, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISDIR(old.st_mode)) return tool_fail(EISDIR, path), 1;
    if (o->mode < 0 && S_ISREG(old.st_mode)) mode = old.st_mode & 07777;
  }
  char *tmp = abandoned_tmp, rnd[12];
  /* An unnamed file vanishes with the process, so a write killed midway leaves nothing behind. */
  int fd = openat(pfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  int unnamed = fd >= 0;
  if (fd < 0 && errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) return tool_fail(errno, path), 1;
  if (fd < 0) {
    /* A named one (no O_TMPFILE here: gVisor's gofer file systems) goes on SIGTERM, which the host
       sends to abandon a write; the name is set before each attempt, so no signal finds it stale. */
    abandoned_dir = pfd;
    struct sigaction sa = {.sa_handler = abandon_write};
    sigaction(SIGTERM, &sa, NULL);
  }
  for (int attempt = 0; attempt < 8 && fd < 0; attempt++) {
    random_suffix(rnd, 10);
    /* Long names keep their head: a temp name must fit NAME_MAX too. */
    snprintf(tmp, sizeof abandoned_tmp, ".%.*s.shoal-%s", NAME_MAX - 20, name, rnd);
    fd = openat(pfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) return tool_fail(errno, path), 1;
  int err = 0;
  static char buf[COPY_CHUNK];
  long long total = 0;
  fcntl(0, F_SETPIPE_SZ, PIPE_BYTES);
  /* From a pipe, splice moves the pages into the file without a copy through this process. */
  for (;;) {
    ssize_t r = splice(0, NULL, fd, NULL, COPY_CHUNK, SPLICE_F_MOVE);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EINVAL || errno == ENOSYS)) break; /* stdin is not a pipe: copy */
    if (r < 0) {
      err = errno;
      break;
    }
    if (r == 0) goto copied;
    total += r;
  }
  if (err != 0) goto copied;
  for (;;) {
    ssize_t r = read(0, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      err = errno;
      break;
    }
    if (r == 0) break;
    if (write_all(fd, buf, (size_t)r) < 0) {
      err = errno;
      break;
    }
    total += r;
  }
copied:
  if (err == 0 && S_ISREG(old.st_mode) && geteuid() == 0 && fchown(fd, old.st_uid, old.st_gid) < 0) err = errno;
  if (err == 0 && fchmod(fd, mode) < 0) err = errno;
  if (err == 0 && unnamed && link_tmpfile(fd, pfd, name, tmp) < 0) err = errno, unnamed = 2;
  if (close(fd) < 0 && err == 0) err = errno;
  if (err == 0 && renameat(pfd, tmp, pfd, name) < 0) err = errno;
  if (err != 0) {
    if (unnamed != 2) unlinkat(pfd, tmp, 0);
    close(pfd);
    return tool_fail(err, path), 1;
  }
  close(pfd);
  (void)total;
  return print_stat(o->root, path);
}

static int cmd_mkdir(struct opts *o) {
  if (o->npaths != 1) return usage("mkdir takes one path");
  const char *path = o->paths[0];
  mode_t mode = o->mode >= 0 ? (mode_t)o->mode : 0755;
  if (o->mode >= 0) umask(0);
  if (o->parents) {
    if (strcmp(path, o->root) != 0 && make_parents(o->root, path, mode) < 0) return tool_fail(errno, path), 1;
    /* An existing directory is success; an existing file is not. */
    int fd = open_beneath(o->root, path, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0) return tool_fail(errno == ENOTDIR ? EEXIST : errno, path), 1;
    close(fd);
    return print_stat(o->root, path);
  }
  char name[NAME_MAX + 1];
  int pfd = open_parent_beneath(o->root, path, name, sizeof name);
  if (pfd < 0) return tool_fail(errno == EINVAL ? EEXIST : errno, path), 1;
  int r = mkdirat(pfd, name, mode);
  int saved = errno;
  close(pfd);
  if (r < 0) return tool_fail(saved, path), 1;
  return print_stat(o->root, path);
}

/* --- move, remove ----------------------------------------------------------------------------- */

static int cmd_move(struct opts *o) {
  if (o->npaths != 2) return usage("move takes two paths");
  const char *from = o->paths[0], *to = o->paths[1];
  char fname[NAME_MAX + 1], tname[NAME_MAX + 1];
  int ffd = open_parent_beneath(o->root, from, fname, sizeof fname);
  if (ffd < 0) return tool_fail(errno == EINVAL ? EBUSY : errno, from), 1;
  int tfd = open_parent_beneath(o->to_root, to, tname, sizeof tname);
  if (tfd < 0) return tool_fail(errno == EINVAL ? EBUSY : errno, to), 1;
  struct stat st;
  if (fstatat(ffd, fname, &st, AT_SYMLINK_NOFOLLOW) < 0) return tool_fail(errno, from), 1;
  long r = syscall(SYS_renameat2, ffd, fname, tfd, tname, o->overwrite ? 0 : RENAME_NOREPLACE);
  if (r < 0 && errno == EINVAL && !o->overwrite) {
    /* A filesystem without RENAME_NOREPLACE: check, then rename (a race can still replace). */
    struct stat dst;
    if (fstatat(tfd, tname, &dst, AT_SYMLINK_NOFOLLOW) == 0) return tool_fail(EEXIST, to), 1;
    r = renameat(ffd, fname, tfd, tname);
  }
  if (r < 0) {
    int err = errno;
    if (err == EXDEV) {
      /* Two filesystems: not an escape, which the resolution above would have reported. */
      fputs("{\"errno\":\"EXDEV\",\"reason\":\"cross_device\",\"message\":\"Cannot move across filesystems\",\"path\":",
            stderr);
      json_string(stderr, to);
      fputs("}\n", stderr);
      return 1;
    }
    return tool_fail(err, err == EEXIST || err == ENOTEMPTY || err == EISDIR ? to : from), 1;
  }
  close(ffd);
  close(tfd);
  return print_stat(o->to_root, to);
}

struct removal {
  const char *fail_path;
  char fail_buf[PATH_MAX];
  int fail_errno;
  dev_t dev;
};

static void removal_failed(struct removal *rm, int err, const char *path) {
  if (rm->fail_errno != 0) return;
  rm->fail_errno = err;
  snprintf(rm->fail_buf, sizeof rm->fail_buf, "%s", path);
  rm->fail_path = rm->fail_buf;
}

/* Removes name in dirfd and, when it is a directory, everything in it; never follows a symlink. */
static void remove_tree(int dirfd, const char *name, const char *path, int level, struct removal *rm) {
  if (unlinkat(dirfd, name, 0) == 0) return;
  if (errno != EISDIR && errno != EPERM) return removal_failed(rm, errno, path);
  if (level > MAX_WALK_DEPTH) return removal_failed(rm, ELOOP, path);
  int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return removal_failed(rm, errno == ENOTDIR ? EPERM : errno, path);
  struct stat st;
  /* Another filesystem mounted inside stays: its mount point answers EBUSY. */
  if (fstat(fd, &st) < 0 || st.st_dev != rm->dev) {
    close(fd);
    return removal_failed(rm, EBUSY, path);
  }
  int copy = dup(fd);
  struct dir_names names;
  if (copy < 0 || dir_names_read(copy, &names) < 0) {
    close(fd);
    return removal_failed(rm, errno, path);
  }
  for (size_t i = 0; i < names.n; i++) {
    char child[PATH_MAX];
    if (path_join(child, sizeof child, path, names.v[i]) < 0) {
      removal_failed(rm, ENAMETOOLONG, path);
      continue;
    }
    remove_tree(fd, names.v[i], child, level + 1, rm);
  }
  dir_names_free(&names);
  close(fd);
  if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0) removal_failed(rm, errno, path);
}

static int cmd_remove(struct opts *o) {
  if (o->npaths != 1) return usage("remove takes one path");
  const char *path = o->paths[0];
  char name[NAME_MAX + 1];
  int pfd = open_parent_beneath(o->root, path, name, sizeof name);
  if (pfd < 0) return tool_fail(errno == EINVAL ? EBUSY : errno, path), 1;
  struct stat st;
  if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return tool_fail(errno, path), 1;
  if (!S_ISDIR(st.st_mode)) {
    if (unlinkat(pfd, name, 0) < 0) return tool_fail(errno, path), 1;
  } else if (!o->recursive) {
    if (unlinkat(pfd, name, AT_REMOVEDIR) < 0) return tool_fail(errno, path), 1;
  } else {
    struct removal rm = {.dev = st.st_dev};
    remove_tree(pfd, name, path, 1, &rm);
    if (rm.fail_errno != 0) return tool_fail(rm.fail_errno, rm.fail_path), 1;
  }
  close(pfd);
  puts("{\"removed\":true}");
  return 0;
}

int fs_main(int argc, char **argv) {
  if (argc < 2) return usage("usage: shoal-agent fs stat|exists|list|read|write|mkdir|move|remove [--root R] ...");
  struct opts o;
  int r = parse(argc, argv, &o);
  if (r != 0) return r;
  const char *sub = argv[1];
  if (strcmp(sub, "stat") == 0) return cmd_stat(&o);
  if (strcmp(sub, "exists") == 0) return cmd_exists(&o);
  if (strcmp(sub, "list") == 0) return cmd_list(&o);
  if (strcmp(sub, "read") == 0) return cmd_read(&o);
  if (strcmp(sub, "write") == 0) return cmd_write(&o);
  if (strcmp(sub, "mkdir") == 0) return cmd_mkdir(&o);
  if (strcmp(sub, "move") == 0) return cmd_move(&o);
  if (strcmp(sub, "remove") == 0) return cmd_remove(&o);
  return usage("unknown subcommand");
}
