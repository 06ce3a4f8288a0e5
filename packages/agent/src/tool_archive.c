/*
 * `shoal-agent archive unpack|pack [--root R] DIR`: a directory tree in and out as the record
 * stream of PROTOCOL.md ("Tools" › "archive"). The host parses and checks tar archives itself; this
 * tool is the second line of defence and the only one that touches the disk.
 *
 * unpack creates every entry in a fresh staging directory beneath DIR, walking each name one
 * component at a time with O_NOFOLLOW, so that no symlink (of the archive or of anyone else) is
 * ever followed while writing. Only once the end record arrived does it move the staged tree into
 * DIR: a stream that stops early, or a refused entry, leaves nothing of the archive behind.
 *
 *   shoal-agent archive unpack --root /workspace /workspace/proj < records
 *   shoal-agent archive pack --root /workspace /workspace/proj > records
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tool_path.h"
#include "tools.h"

#define REC_HEADER 32
#define NAME_CAP 4096
/* Deeper trees would need more directory fds at once than a default RLIMIT_NOFILE allows. */
#define MAX_DEPTH 128
#define MAX_ENTRIES 1000000u
#define CHUNK (64 * 1024)

enum { REC_FILE = 'f', REC_DIR = 'd', REC_SYMLINK = 'l', REC_HARDLINK = 'h', REC_END = 'e' };

struct record {
  int type;
  unsigned mode;
  int64_t mtime;
  uint64_t size;
  char name[NAME_CAP];
  char link[NAME_CAP];
};

static uint16_t get16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const unsigned char *p) { return (uint32_t)get16(p) | (uint32_t)get16(p + 2) << 16; }
static uint64_t get64(const unsigned char *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }
static void put16(unsigned char *p, uint16_t v) { p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8); }
static void put32(unsigned char *p, uint32_t v) { put16(p, (uint16_t)v), put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(unsigned char *p, uint64_t v) { put32(p, (uint32_t)v), put32(p + 4, (uint32_t)(v >> 32)); }

/* Permission bits kept from an archive: setuid and setgid are dropped. */
static unsigned kept_mode(unsigned mode) { return mode & 01777; }

static int usage(void) {
  fputs("usage: shoal-agent archive unpack|pack [--root R] DIR\n", stderr);
  return 2;
}

/* ---- reading stdin ---- */

/* Reads exactly n bytes; 1 done, 0 clean EOF before the first byte, -1 short read or error (errno). */
static int read_full(void *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(0, (char *)buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) return got == 0 ? 0 : (errno = EPIPE, -1);
    got += (size_t)r;
  }
  return 1;
}

static int write_full(int fd, const void *buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(fd, (const char *)buf + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    done += (size_t)w;
  }
  return 0;
}

/* A relative name of one to MAX_DEPTH components, none empty, ".", ".." or longer than 255. */
static int check_name(const char *name) {
  if (name[0] == 0 || name[0] == '/') return EINVAL;
  int depth = 0;
  for (const char *s = name; *s;) {
    const char *e = strchr(s, '/');
    size_t n = e ? (size_t)(e - s) : strlen(s);
    if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return EINVAL;
    if (n > 255) return ENAMETOOLONG;
    if (++depth > MAX_DEPTH) return ENAMETOOLONG;
    if (!e) break;
    s = e + 1;
    if (*s == 0) return EINVAL;
  }
  return 0;
}

/* Reads one record header and its name and link; 1, 0 at EOF, -1 with errno. */
static int read_record(struct record *r) {
  unsigned char h[REC_HEADER];
  int got = read_full(h, sizeof h);
  if (got <= 0) return got;
  size_t nlen = get16(h + 2), llen = get16(h + 4);
  if (h[1] != 0 || get16(h + 6) != 0 || get32(h + 12) != 0 || nlen >= NAME_CAP || llen >= NAME_CAP)
    return errno = EINVAL, -1;
  r->type = h[0];
  r->mode = get32(h + 8);
  r->mtime = (int64_t)get64(h + 16);
  r->size = get64(h + 24);
  int a = nlen > 0 ? read_full(r->name, nlen) : 1;
  int b = a == 1 && llen > 0 ? read_full(r->link, llen) : a;
  if (b != 1) return b == 0 ? (errno = EPIPE, -1) : -1;
  r->name[nlen] = 0;
  r->link[llen] = 0;
  if (strlen(r->name) != nlen || strlen(r->link) != llen) return errno = EINVAL, -1; /* NUL inside */
  if (r->type != REC_FILE && r->size != 0) return errno = EINVAL, -1;
  return 1;
}

/* ---- unpack ---- */

struct dir_mode {
  char *name;
  unsigned mode;
  int64_t mtime;
};

struct unpack {
  const char *dir;
  int dfd;            /* DIR */
  int sfd;            /* the staging directory inside DIR */
  char stage[64];     /* its name */
  char cached[NAME_CAP]; /* the parent last walked to, and its fd */
  int cfd;
  struct dir_mode *dirs;
  size_t ndirs, dcap;
  uint64_t entries, bytes;
};

/* DIR/name for error messages (the path a client sent, not the staging path). */
static void fail_at(const struct unpack *u, int err, const char *name) {
  char path[2 * NAME_CAP + 2];
  if (name == NULL || *name == 0)
    snprintf(path, sizeof path, "%s", u->dir);
  else
    snprintf(path, sizeof path, "%s%s%s", u->dir, strcmp(u->dir, "/") == 0 ? "" : "/", name);
  tool_fail(err, path);
}

/* Walks `len` bytes of `path` from dirfd one component at a time, never following a symlink;
   with `make`, missing directories are created 0755. Returns an O_RDONLY|O_DIRECTORY fd or -1. */
static int walk(int dirfd, const char *path, size_t len, int make) {
  int cur = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  char seg[256];
  size_t i = 0;
  while (cur >= 0 && i < len) {
    size_t j = i;
    while (j < len && path[j] != '/') j++;
    if (j - i >= sizeof seg) {
      close(cur);
      return errno = ENAMETOOLONG, -1;
    }
    memcpy(seg, path + i, j - i);
    seg[j - i] = 0;
    if (make && mkdirat(cur, seg, 0755) < 0 && errno != EEXIST) {
      int saved = errno;
      close(cur);
      return errno = saved, -1;
    }
    int next = openat(cur, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int saved = errno;
    close(cur);
    /* A symlink in the way answers ELOOP or ENOTDIR depending on the kernel: both are ENOTDIR here. */
    if (next < 0) return errno = (saved == ELOOP ? ENOTDIR : saved), -1;
    cur = next;
    i = j + 1;
  }
  return cur;
}

/* The parent directory of name in the staging tree (created as needed), with the last component
   in *last. The fd belongs to the cache: do not close it. */
static int staged_parent(struct unpack *u, const char *name, const char **last) {
  const char *slash = strrchr(name, '/');
  *last = slash ? slash + 1 : name;
  size_t len = slash ? (size_t)(slash - name) : 0;
  if (len == 0) return u->sfd;
  if (u->cfd >= 0 && strlen(u->cached) == len && memcmp(u->cached, name, len) == 0) return u->cfd;
  int fd = walk(u->sfd, name, len, 1);
  if (fd < 0) return -1;
  if (u->cfd >= 0) close(u->cfd);
  u->cfd = fd;
  memcpy(u->cached, name, len);
  u->cached[len] = 0;
  return fd;
}

/* Makes room for a non-directory: an earlier non-directory of that name goes, a directory stays
   (EISDIR), since replacing it would delete what the archive put there. */
static int clear_for_file(int pfd, const char *last) {
  struct stat st;
  if (fstatat(pfd, last, &st, AT_SYMLINK_NOFOLLOW) < 0) return errno == ENOENT ? 0 : -1;
  if (S_ISDIR(st.st_mode)) return errno = EISDIR, -1;
  return unlinkat(pfd, last, 0);
}

static int set_times(int dirfd, const char *name, int fd, int64_t mtime, int flags) {
  struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = (time_t)mtime}};
  return fd >= 0 ? futimens(fd, ts) : utimensat(dirfd, name, ts, flags);
}

static int unpack_file(struct unpack *u, struct record *r, int pfd, const char *last) {
  if (clear_for_file(pfd, last) < 0) return -1;
  int fd = openat(pfd, last, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  static char buf[CHUNK];
  uint64_t left = r->size;
  int err = 0;
  while (left > 0 && err == 0) {
    size_t n = left < sizeof buf ? (size_t)left : sizeof buf;
    int got = read_full(buf, n);
    if (got <= 0)
      err = got == 0 ? EPIPE : errno;
    else if (write_full(fd, buf, n) < 0)
      err = errno;
    left -= n;
  }
  if (err == 0 && (fchmod(fd, kept_mode(r->mode)) < 0 || set_times(-1, NULL, fd, r->mtime, 0) < 0)) err = errno;
  if (close(fd) < 0 && err == 0) err = errno;
  u->bytes += r->size;
  return err ? (errno = err, -1) : 0;
}

static int unpack_dir(struct unpack *u, struct record *r, int pfd, const char *last) {
  struct stat st;
  if (fstatat(pfd, last, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode) && unlinkat(pfd, last, 0) < 0)
    return -1;
  /* Owner rwx while the tree is built; the archive's mode is applied once it is in place. */
  if (mkdirat(pfd, last, 0700) < 0 && errno != EEXIST) return -1;
  if (u->ndirs == u->dcap) {
    size_t cap = u->dcap ? 2 * u->dcap : 64;
    struct dir_mode *grown = realloc(u->dirs, cap * sizeof *grown);
    if (grown == NULL) return errno = ENOMEM, -1;
    u->dirs = grown, u->dcap = cap;
  }
  char *copy = strdup(r->name);
  if (copy == NULL) return errno = ENOMEM, -1;
  u->dirs[u->ndirs++] = (struct dir_mode){copy, kept_mode(r->mode), r->mtime};
  return 0;
}

static int unpack_symlink(struct record *r, int pfd, const char *last) {
  if (r->link[0] == 0) return errno = EINVAL, -1;
  if (clear_for_file(pfd, last) < 0 || symlinkat(r->link, pfd, last) < 0) return -1;
  set_times(pfd, last, -1, r->mtime, AT_SYMLINK_NOFOLLOW);
  return 0;
}

/* A hard link's target is a regular file staged earlier: it names a path inside the archive. */
static int unpack_hardlink(struct unpack *u, struct record *r, int pfd, const char *last) {
  if (check_name(r->link) != 0) return errno = EINVAL, -1;
  const char *slash = strrchr(r->link, '/');
  const char *tlast = slash ? slash + 1 : r->link;
  int tfd = walk(u->sfd, r->link, slash ? (size_t)(slash - r->link) : 0, 0);
  if (tfd < 0) return errno == ENOENT ? (errno = EINVAL, -1) : -1;
  struct stat st;
  int result = -1;
  if (fstatat(tfd, tlast, &st, AT_SYMLINK_NOFOLLOW) < 0)
    errno = EINVAL;
  else if (!S_ISREG(st.st_mode))
    errno = EINVAL;
  else if (strcmp(r->link, r->name) == 0)
    result = 0;
  else if (clear_for_file(pfd, last) == 0 && linkat(tfd, tlast, pfd, last, 0) == 0)
    result = 0;
  int saved = errno;
  close(tfd);
  errno = saved;
  return result;
}

static int unpack_entry(struct unpack *u, struct record *r) {
  int err = check_name(r->name);
  if (err != 0) return errno = err, -1;
  size_t first = strcspn(r->name, "/");
  if (strlen(u->stage) == first && memcmp(r->name, u->stage, first) == 0) return errno = EEXIST, -1;
  if (++u->entries > MAX_ENTRIES) return errno = EFBIG, -1;
  const char *last;
  int pfd = staged_parent(u, r->name, &last);
  if (pfd < 0) return -1;
  switch (r->type) {
  case REC_FILE: return unpack_file(u, r, pfd, last);
  case REC_DIR: return unpack_dir(u, r, pfd, last);
  case REC_SYMLINK: return unpack_symlink(r, pfd, last);
  case REC_HARDLINK: return unpack_hardlink(u, r, pfd, last);
  default: return errno = EINVAL, -1;
  }
}

/* Removes name (a tree) beneath dirfd without following symlinks; errors are ignored. */
static void remove_tree(int parent, const char *name, int depth) {
  if (unlinkat(parent, name, 0) == 0 || (errno != EISDIR && errno != EPERM)) return;
  int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0 && depth < MAX_DEPTH + 2) {
    fchmod(fd, 0700);
    DIR *d = fdopendir(fd);
    if (d != NULL) {
      struct dirent *e;
      while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) remove_tree(dirfd(d), e->d_name, depth + 1);
      closedir(d);
    } else {
      close(fd);
    }
  } else if (fd >= 0) {
    close(fd);
  }
  unlinkat(parent, name, AT_REMOVEDIR);
}

/*
 * Moves the staged tree sfd into tfd. A staged directory merges into a directory already there,
 * or replaces a non-directory; anything else replaces what is there, except a directory
 * (EISDIR). With `check`, only looks for that conflict, so that a refused archive moves nothing.
 * `rel` (the entry's name below DIR, for errors) has room for NAME_CAP bytes.
 */
static int merge(struct unpack *u, int sfd, int tfd, char *rel, int check, int depth) {
  struct dir_names l;
  int lfd = openat(sfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lfd < 0 || dir_names_read(lfd, &l) < 0) return fail_at(u, errno, rel), -1;
  size_t base = strlen(rel);
  int result = 0;
  for (size_t i = 0; i < l.n && result == 0; i++) {
    const char *n = l.v[i];
    if (depth == 0 && strcmp(n, u->stage) == 0) continue;
    snprintf(rel + base, NAME_CAP - base, "%s%s", base ? "/" : "", n);
    struct stat ss, ts;
    if (fstatat(sfd, n, &ss, AT_SYMLINK_NOFOLLOW) < 0) {
      fail_at(u, errno, rel), result = -1;
      break;
    }
    int there = fstatat(tfd, n, &ts, AT_SYMLINK_NOFOLLOW) == 0;
    if (!there && errno != ENOENT) {
      fail_at(u, errno, rel), result = -1;
    } else if (S_ISDIR(ss.st_mode) && there && S_ISDIR(ts.st_mode)) {
      int cs = openat(sfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      int ct = openat(tfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (cs < 0 || ct < 0)
        fail_at(u, errno == ELOOP ? ENOTDIR : errno, rel), result = -1;
      else
        result = merge(u, cs, ct, rel, check, depth + 1);
      if (cs >= 0) close(cs);
      if (ct >= 0) close(ct);
      if (result == 0 && !check) unlinkat(sfd, n, AT_REMOVEDIR);
    } else if (!S_ISDIR(ss.st_mode) && there && S_ISDIR(ts.st_mode)) {
      fail_at(u, EISDIR, rel), result = -1;
    } else if (!check) {
      if (S_ISDIR(ss.st_mode) && there && unlinkat(tfd, n, 0) < 0)
        fail_at(u, errno, rel), result = -1;
      else if (renameat(sfd, n, tfd, n) < 0)
        fail_at(u, errno, rel), result = -1;
    }
  }
  rel[base] = 0;
  dir_names_free(&l);
  return result;
}

/* The archive's directory modes and times, deepest first, once the tree is in DIR. */
static void apply_dir_modes(struct unpack *u) {
  for (size_t i = u->ndirs; i-- > 0;) {
    const char *name = u->dirs[i].name;
    int fd = walk(u->dfd, name, strlen(name), 0);
    if (fd < 0) continue; /* replaced by a later entry */
    fchmod(fd, u->dirs[i].mode);
    set_times(-1, NULL, fd, u->dirs[i].mtime, 0);
    close(fd);
  }
}

static int unpack(const char *root, const char *dir) {
  struct unpack u = {.dir = dir, .dfd = -1, .sfd = -1, .cfd = -1};
  umask(0);
  u.dfd = open_beneath(root, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (u.dfd < 0) return fail_at(&u, errno, NULL), 1;
  unsigned rnd = (unsigned)getpid() ^ (unsigned)time(NULL) * 2654435761u;
  for (int tries = 0; u.sfd < 0 && tries < 16; tries++, rnd = rnd * 1103515245u + 12345u) {
    snprintf(u.stage, sizeof u.stage, ".shoal-unpack-%d-%08x", (int)getpid(), rnd);
    if (mkdirat(u.dfd, u.stage, 0700) < 0) {
      if (errno == EEXIST) continue;
      return fail_at(&u, errno, NULL), 1;
    }
    u.sfd = openat(u.dfd, u.stage, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (u.sfd < 0) return fail_at(&u, errno, NULL), 1;
  }
  if (u.sfd < 0) return fail_at(&u, EEXIST, NULL), 1;

  static struct record r;
  int status = 1, ended = 0;
  for (;;) {
    int got = read_record(&r);
    if (got < 0) {
      fail_at(&u, errno, NULL);
      break;
    }
    if (got == 0) {
      /* The host stopped sending: the archive was refused or abandoned. */
      fail_at(&u, EPIPE, NULL);
      break;
    }
    if (r.type == REC_END) {
      ended = 1;
      break;
    }
    if (unpack_entry(&u, &r) < 0) {
      fail_at(&u, errno, r.name);
      break;
    }
  }
  if (u.cfd >= 0) close(u.cfd);
  if (ended) {
    char rel[NAME_CAP] = "";
    if (merge(&u, u.sfd, u.dfd, rel, 1, 0) == 0 && merge(&u, u.sfd, u.dfd, rel, 0, 0) == 0) {
      apply_dir_modes(&u);
      status = 0;
    }
  }
  close(u.sfd);
  remove_tree(u.dfd, u.stage, 0);
  for (size_t i = 0; i < u.ndirs; i++) free(u.dirs[i].name);
  free(u.dirs);
  close(u.dfd);
  if (status == 0) printf("{\"entries\":%llu,\"bytes\":%llu}\n", (unsigned long long)u.entries, (unsigned long long)u.bytes);
  return status;
}

/* ---- pack ---- */

struct seen {
  dev_t dev;
  ino_t ino;
  char *name;
};

struct pack {
  const char *dir;
  dev_t dev;
  struct seen *links; /* open addressing on the inode, for files with more than one link */
  size_t nlinks, lcap;
  char buf[CHUNK];
};

static void emit(int type, unsigned mode, int64_t mtime, uint64_t size, const char *name, const char *link) {
  unsigned char h[REC_HEADER] = {0};
  size_t nlen = strlen(name), llen = link ? strlen(link) : 0;
  h[0] = (unsigned char)type;
  put16(h + 2, (uint16_t)nlen);
  put16(h + 4, (uint16_t)llen);
  put32(h + 8, mode);
  put64(h + 16, (uint64_t)mtime);
  put64(h + 24, size);
  fwrite(h, 1, sizeof h, stdout);
  fwrite(name, 1, nlen, stdout);
  if (llen) fwrite(link, 1, llen, stdout);
}

/* The name an inode was first packed under, or NULL after remembering it under name. */
static const char *first_link(struct pack *p, const struct stat *st, const char *name) {
  if (2 * (p->nlinks + 1) > p->lcap) {
    size_t cap = p->lcap ? 2 * p->lcap : 64;
    struct seen *grown = calloc(cap, sizeof *grown);
    if (grown == NULL) return NULL; /* packed again as a copy: correct, only larger */
    for (size_t i = 0; i < p->lcap; i++) {
      if (p->links[i].name == NULL) continue;
      size_t k = (size_t)p->links[i].ino % cap;
      while (grown[k].name != NULL) k = (k + 1) % cap;
      grown[k] = p->links[i];
    }
    free(p->links);
    p->links = grown, p->lcap = cap;
  }
  size_t k = (size_t)st->st_ino % p->lcap;
  for (; p->links[k].name != NULL; k = (k + 1) % p->lcap)
    if (p->links[k].ino == st->st_ino && p->links[k].dev == st->st_dev) return p->links[k].name;
  char *copy = strdup(name);
  if (copy != NULL) p->links[k] = (struct seen){st->st_dev, st->st_ino, copy}, p->nlinks++;
  return NULL;
}

static void pack_fail(const struct pack *p, int err, const char *rel) {
  char path[2 * NAME_CAP + 2];
  snprintf(path, sizeof path, "%s%s%s", p->dir, *rel && strcmp(p->dir, "/") != 0 ? "/" : "", rel);
  tool_fail(err, path);
}

static int pack_file(struct pack *p, int dirfd, const char *n, const char *rel, const struct stat *st) {
  if (st->st_nlink > 1) {
    const char *first = first_link(p, st, rel);
    if (first != NULL) {
      emit(REC_HARDLINK, st->st_mode & 07777, st->st_mtim.tv_sec, 0, rel, first);
      return 0;
    }
  }
  int fd = openat(dirfd, n, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return pack_fail(p, errno, rel), -1;
  struct stat now;
  if (fstat(fd, &now) < 0 || !S_ISREG(now.st_mode)) {
    close(fd);
    return 0; /* replaced since it was listed */
  }
  uint64_t size = (uint64_t)now.st_size;
  emit(REC_FILE, now.st_mode & 07777, now.st_mtim.tv_sec, size, rel, NULL);
  /* Exactly `size` bytes, as announced: a file that shrinks meanwhile is padded with zeros. */
  uint64_t left = size;
  while (left > 0) {
    size_t want = left < sizeof p->buf ? (size_t)left : sizeof p->buf;
    ssize_t r = read(fd, p->buf, want);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int saved = errno;
      close(fd);
      return pack_fail(p, saved, rel), -1;
    }
    if (r == 0) {
      memset(p->buf, 0, want);
      r = (ssize_t)want;
    }
    fwrite(p->buf, 1, (size_t)r, stdout);
    left -= (uint64_t)r;
  }
  close(fd);
  return 0;
}

/* Packs the entries of dirfd; rel is their directory below DIR ("" for DIR), NAME_CAP bytes. */
static int pack_dir(struct pack *p, int dirfd, char *rel, int depth) {
  struct dir_names l;
  int lfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lfd < 0 || dir_names_read(lfd, &l) < 0) return pack_fail(p, errno, rel), -1;
  size_t base = strlen(rel);
  int result = 0;
  for (size_t i = 0; i < l.n && result == 0; i++) {
    const char *n = l.v[i];
    size_t need = base + (base ? 1 : 0) + strlen(n);
    if (need >= NAME_CAP) {
      pack_fail(p, ENAMETOOLONG, rel), result = -1;
      break;
    }
    snprintf(rel + base, NAME_CAP - base, "%s%s", base ? "/" : "", n);
    struct stat st;
    if (fstatat(dirfd, n, &st, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno != ENOENT) pack_fail(p, errno, rel), result = -1;
    } else if (S_ISDIR(st.st_mode)) {
      if (st.st_dev != p->dev) continue; /* another file system mounted here */
      if (depth + 1 >= MAX_DEPTH) {
        pack_fail(p, ENAMETOOLONG, rel), result = -1;
        break;
      }
      emit(REC_DIR, st.st_mode & 07777, st.st_mtim.tv_sec, 0, rel, NULL);
      int fd = openat(dirfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) {
        if (errno != ENOENT) pack_fail(p, errno, rel), result = -1;
      } else {
        result = pack_dir(p, fd, rel, depth + 1);
        close(fd);
      }
    } else if (S_ISREG(st.st_mode)) {
      result = pack_file(p, dirfd, n, rel, &st);
    } else if (S_ISLNK(st.st_mode)) {
      char target[NAME_CAP];
      ssize_t len = readlinkat(dirfd, n, target, sizeof target - 1);
      if (len < 0) {
        if (errno != ENOENT) pack_fail(p, errno, rel), result = -1;
      } else {
        target[len] = 0;
        emit(REC_SYMLINK, 0777, st.st_mtim.tv_sec, 0, rel, target);
      }
    }
    /* Sockets, fifos and devices are not packed: an archive carries files. */
    rel[base] = 0;
  }
  rel[base] = 0;
  dir_names_free(&l);
  if (ferror(stdout)) return pack_fail(p, EPIPE, rel), -1;
  return result;
}

static int pack(const char *root, const char *dir) {
  static struct pack p;
  p.dir = dir;
  int fd = open_beneath(root, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) return tool_fail(errno, dir), 1;
  p.dev = st.st_dev;
  static char out[CHUNK];
  setvbuf(stdout, out, _IOFBF, sizeof out);
  char rel[NAME_CAP] = "";
  int result = pack_dir(&p, fd, rel, 0);
  close(fd);
  if (result == 0) emit(REC_END, 0, 0, 0, "", NULL);
  if (fflush(stdout) != 0 && result == 0) return tool_fail(errno, dir), 1;
  for (size_t i = 0; i < p.lcap; i++) free(p.links[i].name);
  free(p.links);
  return result == 0 ? 0 : 1;
}

int archive_main(int argc, char **argv) {
  if (argc < 2) return usage();
  const char *op = argv[1], *root = "/", *dir = NULL;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--root") == 0 && i + 1 < argc)
      root = argv[++i];
    else if (argv[i][0] == '-' || dir != NULL)
      return usage();
    else
      dir = argv[i];
  }
  if (dir == NULL || dir[0] != '/' || root[0] != '/') return usage();
  if (strcmp(op, "unpack") == 0) return unpack(root, dir);
  if (strcmp(op, "pack") == 0) return pack(root, dir);
  return usage();
}
