/*
 * The fields of /proc/PID/stat that the agent and its tools walk the process table by: the
 * supervisor finds its children by parent, the pty tool a session's members by session.
 */
#ifndef SHOAL_PROC_STAT_H
#define SHOAL_PROC_STAT_H

#include <sys/types.h>

struct proc_stat {
  char state; /* 'R', 'S', 'Z', … */
  pid_t ppid, pgrp, session;
};

/* Reads /proc/<pid>/stat (pid as the directory name); 0, or -1 when the process is gone. */
int proc_stat_read(const char *pid, struct proc_stat *out);

#endif
