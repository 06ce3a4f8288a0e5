/*
 * Reading the guest's policy files (guest_policy.h). Anything unexpected is an error: a policy
 * half read would leave the guest less restricted than the host asked.
 */
#define _GNU_SOURCE
#include "guest_policy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* BPF_MAXINSNS instructions of 8 bytes. */
#define MAX_FILTER_BYTES (4096u * 8u)
#define MAX_POLICY_BYTES 16384u

/* The whole file in a NUL-terminated heap buffer; -1 when it cannot be read or exceeds max. */
static ssize_t read_whole(const char *path, size_t max, uint8_t **out) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  uint8_t *buf = malloc(max + 1);
  size_t len = 0;
  ssize_t n = 0;
  while (buf != NULL && len <= max && (n = read(fd, buf + len, max + 1 - len)) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    len += (size_t)n;
  }
  close(fd);
  if (buf == NULL || n < 0 || len > max) {
    free(buf);
    return -1;
  }
  buf[len] = 0;
  *out = buf;
  return (ssize_t)len;
}

static int add_path(const char **list, size_t *count, char *path) {
  if (*count >= GUEST_POLICY_MAX_PATHS || path[0] != '/') return -1;
  list[(*count)++] = path;
  return 0;
}

/* A BPF program: a whole number of 8-byte instructions, at least one. */
static ssize_t read_filter(const char *path, uint8_t **out) {
  ssize_t len = read_whole(path, MAX_FILTER_BYTES, out);
  return len > 0 && len % 8 == 0 ? len : -1;
}

int guest_policy_load(struct guest_policy *policy, const char *policy_path, const char *filter_path,
                      const char *forked_filter_path, const char **why) {
  memset(policy, 0, sizeof *policy);
  uint8_t *text, *filter, *forked_filter;
  ssize_t filter_len = read_filter(filter_path, &filter);
  if (filter_len < 0) {
    *why = "the seccomp filter " GUEST_SECCOMP_PATH " is missing or not a BPF program";
    return -1;
  }
  policy->filter = filter;
  policy->filter_len = (size_t)filter_len;
  ssize_t forked_filter_len = read_filter(forked_filter_path, &forked_filter);
  if (forked_filter_len < 0) {
    *why = "the seccomp filter " GUEST_FORKED_SECCOMP_PATH " is missing or not a BPF program";
    return -1;
  }
  policy->forked_filter = forked_filter;
  policy->forked_filter_len = (size_t)forked_filter_len;
  if (read_whole(policy_path, MAX_POLICY_BYTES, &text) < 0) {
    *why = "the policy " GUEST_POLICY_PATH " is missing";
    return -1;
  }
  int have_capabilities = 0;
  char *save = NULL;
  for (char *line = strtok_r((char *)text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
    char *value = strchr(line, ' ');
    if (value == NULL) goto malformed;
    *value++ = 0;
    if (strcmp(line, "capabilities") == 0) {
      char *end;
      errno = 0;
      unsigned long long mask = strtoull(value, &end, 10);
      if (errno != 0 || end == value || *end != 0) goto malformed;
      policy->capabilities = mask;
      have_capabilities = 1;
    } else if (strcmp(line, "masked") == 0) {
      if (add_path(policy->masked, &policy->masked_count, value) < 0) goto malformed;
    } else if (strcmp(line, "readonly") == 0) {
      if (add_path(policy->readonly, &policy->readonly_count, value) < 0) goto malformed;
    } else {
      goto malformed;
    }
  }
  if (!have_capabilities) goto malformed;
  return 0;
malformed:
  *why = "the policy " GUEST_POLICY_PATH " is malformed";
  return -1;
}
