/*
 * The per-exec supervisor: a process forked by the agent for each EXEC. It is a child subreaper,
 * starts the command, enforces its timeout, forwards signals, and on timeout or KILL ends every
 * process of the command's tree before it reports. It talks to the agent over a SOCK_SEQPACKET
 * pair: the agent sends int32 signal numbers (closing the pair means KILL), the supervisor answers
 * with struct sup_msg records.
 */
#ifndef SHOAL_SUPERVISOR_H
#define SHOAL_SUPERVISOR_H

#include <stdint.h>
#include <sys/types.h>

#include "frame.h"

enum sup_kind { SUP_STARTED = 1, SUP_FAILED = 2, SUP_EXITED = 3 };

enum sup_stage { STAGE_SETUP = 0, STAGE_CHDIR, STAGE_SETGROUPS, STAGE_SETGID, STAGE_SETUID, STAGE_EXEC };

struct sup_msg {
  int32_t kind;
  int32_t pid;       /* STARTED */
  int32_t err;       /* FAILED: errno */
  int32_t stage;     /* FAILED: enum sup_stage */
  int32_t status;    /* EXITED: wait status */
  int32_t timed_out; /* EXITED */
  int32_t oom;       /* EXITED */
  int32_t pad;
  uint64_t duration_ms;
};

/* In the agent, once its own signal dispositions are set and before it forks any supervisor:
   records what each exec's setup would otherwise look up again (supervisor.c). */
void supervisor_prepare(void);

/* Runs in the freshly forked supervisor; never returns. in_r >= 0: the command's stdin is that
   pipe, which the agent feeds (streamed stdin); else the request's STDIN bytes or /dev/null. */
void supervisor_main(const struct exec_req *req, int ctl, int out_w, int err_w, int in_r) __attribute__((noreturn));

/* SIGKILLs every child of the calling process, repeatedly, until it has none left (it must be a
   subreaper or PID 1 so that orphans come back to it). Reaps them; returns the wait status of
   `watch` if it was reaped here, else -1. */
int kill_all_children(pid_t watch);

/* Sends signo to every direct child of the calling process (from /proc). */
void signal_children(int signo);

uint64_t now_ms(void);

#endif
