#define _GNU_SOURCE
#include "proc_stat.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int proc_stat_read(const char *pid, struct proc_stat *out) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%s/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  /* The command name is in parentheses and may itself hold spaces and ") ": the fields resume
     after the last ')'. */
  const char *p = strrchr(buf, ')');
  int ppid, pgrp, session;
  if (p == NULL || sscanf(p + 1, " %c %d %d %d", &out->state, &ppid, &pgrp, &session) != 4) return -1;
  out->ppid = (pid_t)ppid;
  out->pgrp = (pid_t)pgrp;
  out->session = (pid_t)session;
  return 0;
}
