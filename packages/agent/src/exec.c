/*
 * Running commands: EXEC starts a supervisor (supervisor.c) with pipes for the command's stdout
 * and stderr; this file streams those pipes as OUTPUT frames under the output cap, forwards
 * SIGNAL frames, and turns the supervisor's reports into EXEC_STARTED, EXEC_FAILED and EXIT.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "names.h"

struct exec execs[MAX_EXECS];

static const char *const stage_names[] = {"setup", "chdir", "setgroups", "setgid", "setuid", "exec"};

struct conn *exec_conn(struct exec *e) {
  struct conn *c = &conns[e->conn];
  return c->fd >= 0 && c->gen == e->conn_gen ? c : NULL;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void release(struct exec *e) {
  close_fd(&e->ctl);
  close_fd(&e->fd[0]);
  close_fd(&e->fd[1]);
  close_fd(&e->in_fd);
  free(e->in_buf);
  e->in_buf = NULL;
  e->used = 0;
}

void exec_abandon(struct exec *e) { release(e); }

static struct exec *find(struct conn *c, uint32_t id) {
  for (int i = 0; i < MAX_EXECS; i++) {
    struct exec *e = &execs[i];
    if (e->used && e->id == id && exec_conn(e) == c) return e;
  }
  return NULL;
}

/* In the new supervisor: drop every descriptor of the agent before running the command. */
static void close_agent_fds(void) {
  close(listen_fd);
  for (int i = 0; i < MAX_CONNS; i++)
    if (conns[i].fd >= 0) close(conns[i].fd);
  for (int i = 0; i < MAX_EXECS; i++) {
    struct exec *e = &execs[i];
    if (!e->used) continue;
    if (e->ctl >= 0) close(e->ctl);
    if (e->fd[0] >= 0) close(e->fd[0]);
    if (e->fd[1] >= 0) close(e->fd[1]);
    if (e->in_fd >= 0) close(e->in_fd);
  }
}

void exec_start(struct conn *c, uint32_t id, const uint8_t *payload, size_t len) {
  struct exec_req req;
  const char *why;
  int r = exec_parse(payload, len, &req, &why);
  if (r == E_MALFORMED_FRAME) {
    conn_error(c, id, r, "malformed EXEC fields", 1);
    return;
  }
  if (r != FRAME_OK) {
    conn_error(c, id, r, why, 0);
    return;
  }
  if (id == 0) {
    conn_error(c, id, E_BAD_REQUEST, "EXEC needs a non-zero id", 0);
    return;
  }
  if (find(c, id) != NULL) {
    conn_error(c, id, E_DUPLICATE_ID, "an exec with this id is running", 0);
    return;
  }
  struct exec *e = NULL;
  for (int i = 0; i < MAX_EXECS && e == NULL; i++)
    if (!execs[i].used) e = &execs[i];
  if (e == NULL) {
    conn_error(c, id, E_TOO_MANY, "too many running execs", 0);
    return;
  }
  if (req.stream_stdin && req.has_stdin && req.stdin_data.len > STDIN_WINDOW) {
    conn_error(c, id, E_BAD_REQUEST, "STDIN larger than the stdin window", 0);
    return;
  }
  int out[2] = {-1, -1}, err[2] = {-1, -1}, ctl[2] = {-1, -1}, in[2] = {-1, -1};
  if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
      socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) < 0 || (req.stream_stdin && pipe2(in, O_CLOEXEC) < 0))
    goto failed;
  /* Bulk transfers (file uploads and downloads run through a tool's pipes) move in fewer wakeups
     with larger pipes; an unprivileged limit just leaves the default. */
  fcntl(out[0], F_SETPIPE_SZ, PIPE_SIZE);
  if (in[1] >= 0) fcntl(in[1], F_SETPIPE_SZ, PIPE_SIZE);
  pid_t pid = fork();
  if (pid < 0) goto failed;
  if (pid == 0) {
    close_agent_fds();
    close(out[0]);
    close(err[0]);
    close(ctl[0]);
    if (in[1] >= 0) close(in[1]);
    supervisor_main(&req, ctl[1], out[1], err[1], in[0]);
  }
  close(out[1]);
  close(err[1]);
  close(ctl[1]);
  if (in[0] >= 0) close(in[0]);
  if (fcntl(out[0], F_SETFL, O_NONBLOCK) < 0 || fcntl(err[0], F_SETFL, O_NONBLOCK) < 0 ||
      fcntl(ctl[0], F_SETFL, O_NONBLOCK) < 0 || (in[1] >= 0 && fcntl(in[1], F_SETFL, O_NONBLOCK) < 0)) {
    /* The supervisor sees its control socket closed and kills what it started. */
    close(out[0]);
    close(err[0]);
    close(ctl[0]);
    if (in[1] >= 0) close(in[1]);
    conn_error(c, id, E_INTERNAL, strerror(errno), 0);
    return;
  }
  memset(e, 0, sizeof *e);
  e->used = 1;
  e->conn = (int)(c - conns);
  e->conn_gen = c->gen;
  e->id = id;
  e->sup = pid;
  e->ctl = ctl[0];
  e->fd[0] = out[0];
  e->fd[1] = err[0];
  e->limit = req.output_limit;
  e->window = req.output_window;
  e->in_fd = in[1];
  if (in[1] >= 0 && req.has_stdin && req.stdin_data.len > 0) {
    if ((e->in_buf = malloc(STDIN_WINDOW)) == NULL) {
      exec_abandon(e);
      conn_error(c, id, E_INTERNAL, "out of memory", 0);
      return;
    }
    memcpy(e->in_buf, req.stdin_data.ptr, req.stdin_data.len);
    e->in_len = req.stdin_data.len;
    /* The host counts the EXEC's STDIN bytes as sent on the stream, so they are acknowledged too. */
  }
  return;
failed:;
  int saved = errno;
  int fds[] = {out[0], out[1], err[0], err[1], ctl[0], ctl[1], in[0], in[1]};
  for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
    if (fds[i] >= 0) close(fds[i]);
  conn_error(c, id, E_INTERNAL, strerror(saved), 0);
}

/* The running exec a request of this id is for, once its payload parsed (parsed: the parser's
   answer, why: its reason); NULL after answering the host the error. */
static struct exec *running_exec(struct conn *c, uint32_t id, int parsed, const char *why) {
  if (parsed != FRAME_OK) {
    conn_error(c, id, parsed, why, parsed == E_MALFORMED_FRAME);
    return NULL;
  }
  struct exec *e = find(c, id);
  if (e == NULL) conn_error(c, id, E_NO_SUCH_ID, "no running exec with this id", 0);
  return e;
}

void exec_signal(struct conn *c, uint32_t id, const uint8_t *payload, size_t len) {
  struct signal_req s;
  const char *why;
  int parsed = signal_parse(payload, len, &s, &why);
  struct exec *e = running_exec(c, id, parsed, why);
  if (e == NULL) return;
  int32_t signo = (int32_t)s.signo;
  /* A host that kills a command wants none of its output any more, and may have stopped
     acknowledging it: read the rest and drop it, so that EXIT can come. */
  if (signo == SIGKILL) e->limit = 0;
  if (!e->exited && e->ctl >= 0) send(e->ctl, &signo, sizeof signo, MSG_NOSIGNAL | MSG_DONTWAIT);
}

void exec_stdin(struct conn *c, uint32_t id, const uint8_t *payload, size_t len) {
  struct stdin_req req;
  const char *why;
  int parsed = stdin_parse(payload, len, &req, &why);
  struct exec *e = running_exec(c, id, parsed, why);
  if (e == NULL) return;
  /* After EOF, or once the process stopped reading (EPIPE), further input is dropped: the host
     learns of it from EXIT, and the bytes still count as delivered so that its window moves. */
  if (e->in_fd < 0 || e->in_eof) {
    e->in_delivered += req.data.len;
    exec_stdin_ack(e);
    return;
  }
  if (req.data.len == 0) {
    e->in_eof = 1;
    exec_stdin_writable(e);
    return;
  }
  if (e->in_len + req.data.len > STDIN_WINDOW) {
    conn_error(c, id, E_BAD_REQUEST, "STDIN beyond the stdin window (wait for STDIN_ACK)", 0);
    return;
  }
  /* Nothing queued: as much as the pipe takes goes straight from the frame, the rest is queued. */
  const uint8_t *data = req.data.ptr;
  size_t left = req.data.len;
  while (e->in_len == 0 && left > 0) {
    ssize_t n = write(e->in_fd, data, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) {
      e->in_delivered += left;
      close_fd(&e->in_fd);
      exec_stdin_ack(e);
      return;
    }
    data += n;
    left -= (size_t)n;
    e->in_delivered += (uint64_t)n;
  }
  if (left == 0) {
    exec_stdin_ack(e);
    return;
  }
  if (e->in_buf == NULL && (e->in_buf = malloc(STDIN_WINDOW)) == NULL) {
    conn_error(c, id, E_INTERNAL, "out of memory", 0);
    return;
  }
  if (e->in_off + e->in_len + left > STDIN_WINDOW) {
    memmove(e->in_buf, e->in_buf + e->in_off, e->in_len);
    e->in_off = 0;
  }
  memcpy(e->in_buf + e->in_off + e->in_len, data, left);
  e->in_len += left;
  exec_stdin_writable(e);
}

void exec_output_ack(struct conn *c, uint32_t id, const uint8_t *payload, size_t len) {
  struct output_ack_req req;
  const char *why;
  int parsed = output_ack_parse(payload, len, &req, &why);
  struct exec *e = running_exec(c, id, parsed, why);
  if (e == NULL) return;
  int s = (int)req.stream - 1;
  if (req.offset > e->kept[s]) {
    conn_error(c, id, E_BAD_REQUEST, "OUTPUT_ACK beyond the output sent", 0);
    return;
  }
  if (req.offset > e->acked[s]) e->acked[s] = req.offset;
}

int exec_output_blocked(const struct exec *e, int s) {
  return e->window > 0 && e->kept[s] < e->limit && e->kept[s] - e->acked[s] >= e->window;
}

int exec_output_held(const struct exec *e, int s, size_t room) {
  return e->fd[s] >= 0 && ((e->kept[s] < e->limit && room < 2 * CONTROL_ROOM) || exec_output_blocked(e, s));
}

void exec_stdin_writable(struct exec *e) {
  while (e->in_fd >= 0 && e->in_len > 0) {
    ssize_t n = write(e->in_fd, e->in_buf + e->in_off, e->in_len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) {
      /* The process closed its stdin: what is queued can never be delivered. */
      e->in_delivered += e->in_len;
      e->in_len = 0;
      close_fd(&e->in_fd);
      break;
    }
    e->in_off += (size_t)n;
    e->in_len -= (size_t)n;
    e->in_delivered += (uint64_t)n;
  }
  if (e->in_len == 0) e->in_off = 0;
  if (e->in_fd >= 0 && e->in_len == 0 && e->in_eof) close_fd(&e->in_fd);
  exec_stdin_ack(e);
}

void exec_stdin_ack(struct exec *e) {
  struct conn *c = exec_conn(e);
  if (c == NULL || e->in_acked == e->in_delivered || conn_room(c) < CONTROL_ROOM) return;
  struct writer w = conn_writer(c);
  frame_begin(&w, T_STDIN_ACK, e->id);
  put_u64(&w, F_OFFSET, e->in_delivered);
  if (frame_end(&w)) {
    conn_commit(c, &w);
    e->in_acked = e->in_delivered;
  }
}

void exec_ctl_readable(struct exec *e) {
  struct conn *c = exec_conn(e);
  struct sup_msg m;
  ssize_t n = recv(e->ctl, &m, sizeof m, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (c == NULL) {
    release(e);
    return;
  }
  if (n != (ssize_t)sizeof m) {
    close_fd(&e->ctl);
    if (!e->exited) {
      conn_error(c, e->id, E_INTERNAL, "the exec's supervisor died", 0);
      release(e);
    }
    return;
  }
  char name[16];
  struct writer w = conn_writer(c);
  switch (m.kind) {
  case SUP_STARTED:
    frame_begin(&w, T_EXEC_STARTED, e->id);
    put_u64(&w, F_PID, (uint64_t)m.pid);
    if (frame_end(&w)) conn_commit(c, &w);
    break;
  case SUP_FAILED:
    frame_begin(&w, T_EXEC_FAILED, e->id);
    put_u64(&w, F_ERRNO, (uint64_t)m.err);
    put_str(&w, F_ERRNO_NAME, errno_name(m.err, name));
    put_str(&w, F_MESSAGE, strerror(m.err));
    put_str(&w, F_STAGE, m.stage >= 0 && m.stage <= STAGE_EXEC ? stage_names[m.stage] : "setup");
    if (frame_end(&w)) conn_commit(c, &w);
    release(e);
    break;
  case SUP_EXITED:
    e->exited = 1;
    e->result = m;
    e->exited_at = now_ms();
    close_fd(&e->ctl);
    exec_try_finish(e, e->exited_at);
    break;
  default:
    break;
  }
}

static uint8_t scratch[OUTPUT_CHUNK];

void exec_output_readable(struct exec *e, int s) {
  struct conn *c = exec_conn(e);
  size_t want = sizeof scratch;
  if (c != NULL && e->kept[s] < e->limit) {
    size_t room = conn_room(c);
    size_t overhead = CONTROL_ROOM + FRAME_HEADER_SIZE + 3 * FIELD_HEADER_SIZE + 16;
    if (room <= overhead) return;
    if (room - overhead < want) want = room - overhead;
    if (e->window > 0) {
      uint64_t open = e->window - (e->kept[s] - e->acked[s]);
      if (exec_output_blocked(e, s)) return;
      if (open < want) want = (size_t)open;
    }
  }
  ssize_t n = read(e->fd[s], scratch, want);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    close_fd(&e->fd[s]);
    if (c == NULL) return;
    exec_try_finish(e, now_ms());
    return;
  }
  e->seen[s] += (uint64_t)n;
  if (c == NULL || e->kept[s] >= e->limit) return;
  uint64_t keep = e->limit - e->kept[s];
  if (keep > (uint64_t)n) keep = (uint64_t)n;
  struct writer w = conn_writer(c);
  frame_begin(&w, T_OUTPUT, e->id);
  put_u64(&w, F_STREAM, (uint64_t)s + 1);
  put_u64(&w, F_OFFSET, e->kept[s]);
  put_bytes(&w, F_DATA, scratch, (size_t)keep);
  if (frame_end(&w)) conn_commit(c, &w);
  e->kept[s] += keep;
}

void exec_try_finish(struct exec *e, uint64_t now) {
  struct conn *c = exec_conn(e);
  if (!e->used || !e->exited) return;
  if (c == NULL) {
    release(e);
    return;
  }
  /* Output the host holds back (its window, or a connection with no room) is not leftover output:
     the command wrote it before it exited, and the drain wait starts only once it flows. */
  size_t room = conn_room(c);
  if (exec_output_held(e, 0, room) || exec_output_held(e, 1, room)) {
    e->exited_at = now;
    return;
  }
  if ((e->fd[0] >= 0 || e->fd[1] >= 0) && now < e->exited_at + DRAIN_MS) return;
  if (room < 512) return;
  const struct sup_msg *m = &e->result;
  char name[16];
  struct writer w = conn_writer(c);
  frame_begin(&w, T_EXIT, e->id);
  if (WIFEXITED(m->status)) put_u64(&w, F_EXIT_CODE, (uint64_t)WEXITSTATUS(m->status));
  if (WIFSIGNALED(m->status)) {
    put_u64(&w, F_SIGNAL, (uint64_t)WTERMSIG(m->status));
    put_str(&w, F_SIGNAL_NAME, signal_name(WTERMSIG(m->status), name));
  }
  put_u64(&w, F_TIMED_OUT, (uint64_t)m->timed_out);
  put_u64(&w, F_OOM_KILLED, (uint64_t)m->oom);
  put_u64(&w, F_STDOUT_TRUNCATED, e->seen[0] > e->kept[0]);
  put_u64(&w, F_STDERR_TRUNCATED, e->seen[1] > e->kept[1]);
  put_u64(&w, F_DURATION_MS, m->duration_ms);
  put_u64(&w, F_STDOUT_BYTES, e->seen[0]);
  put_u64(&w, F_STDERR_BYTES, e->seen[1]);
  if (frame_end(&w)) conn_commit(c, &w);
  release(e);
}
