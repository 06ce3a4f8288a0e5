/*
 * Path resolution beneath an allowed root, shared by the tools that touch files (fs, archive,
 * watch). The host hands a tool absolute, normalised paths and `--root R`; these functions make
 * the kernel hold every lookup beneath R, so that a symlink (however and whenever it was swapped
 * in) cannot lead a tool out of R:
 *
 *   int fd = open_beneath("/workspace", "/workspace/a/b.txt", O_RDONLY | O_CLOEXEC, 0);
 *   if (fd < 0) { tool_fail(errno, "/workspace/a/b.txt"); return 1; }
 */
#ifndef SHOAL_TOOL_PATH_H
#define SHOAL_TOOL_PATH_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/* Opens `root` (absolute) and resolves `path` (absolute, normalised, at or under root) beneath
   it: openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS) for a root other than "/", plain
   resolution with RESOLVE_NO_MAGICLINKS for "/". Returns an fd opened with flags/mode or -1 with
   errno (EXDEV: a symlink leads out of root; EINVAL: path is not at or under root). */
int open_beneath(const char *root, const char *path, int flags, mode_t mode);

/* The same with extra RESOLVE_* bits (e.g. RESOLVE_NO_SYMLINKS); open_beneath passes 0. */
int open_beneath_how(const char *root, const char *path, int flags, mode_t mode, unsigned long long resolve);

/* Opens the parent directory of `path` beneath root (O_PATH|O_DIRECTORY, usable as the dirfd of
   mkdirat, unlinkat, renameat, symlinkat, fstatat, openat with O_NOFOLLOW) and copies the last
   component into name (cap bytes). path must not be root itself (EINVAL); a name that does not fit
   is ENAMETOOLONG. */
int open_parent_beneath(const char *root, const char *path, char *name, size_t cap);

/* Writes the tool-convention error line {"errno":…,"message":…,"path":…} to stderr (path may be
   NULL). */
void tool_fail(int err, const char *path);

/* JSON string escaping onto a FILE*, quotes included; bytes that are not valid UTF-8 become
   U+FFFD so that the line stays valid JSON. */
void json_string(FILE *f, const char *s);

/* Writes all n bytes, retrying short writes and EINTR; 0, or -1 with errno. */
int write_all(int fd, const void *buf, size_t n);

/* dir + "/" + name into buf ("/name" when dir is "/"); -1 with ENAMETOOLONG when it does not fit. */
int path_join(char *buf, size_t cap, const char *dir, const char *name);

/* The names in a directory, read in full (so that none is missed while entries move) and sorted. */
struct dir_names {
  char **v;
  size_t n;
};
/* Reads the directory open as fd, which it consumes, without "." and ".."; 0, or -1 with errno. */
int dir_names_read(int fd, struct dir_names *out);
void dir_names_free(struct dir_names *names);

#endif
