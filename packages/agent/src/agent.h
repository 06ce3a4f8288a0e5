/*
 * State shared by the agent's event loop (main.c), its host connections (conn.c) and its running
 * commands (exec.c). Everything is in fixed tables: the agent allocates only a connection's buffers
 * (one block, on accept) and, while one is being received, a frame larger than the connection's input buffer.
 */
#ifndef SHOAL_AGENT_H
#define SHOAL_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "frame.h"
#include "supervisor.h"

#define MAX_CONNS 16
#define MAX_EXECS 128
#define CONN_IN_CAP 4096
#define CONN_OUT_CAP (1024u * 1024u)
#define OUTPUT_CHUNK (256u * 1024u)
/* Asked of the pipes to and from a command (F_SETPIPE_SZ), for bulk transfers. */
#define PIPE_SIZE (1024 * 1024)
/* Room kept free in a connection's output buffer for replies, so that output never starves them. */
#define CONTROL_ROOM 4096u
/* An exited command's output is awaited this long when a leftover child still holds its pipes. */
#define DRAIN_MS 100u

struct conn {
  int fd; /* -1: free slot */
  uint32_t gen;
  int hello_done;
  int closing; /* flush what is queued, then close */
  uint8_t *out; /* CONN_OUT_CAP bytes, then `in` */
  size_t out_off, out_len;
  uint8_t *in; /* CONN_IN_CAP bytes */
  size_t in_len;
  uint8_t *big; /* a frame larger than `in`, being received: in big_buf */
  size_t big_len, big_need;
  /* FRAME_MAX_SIZE bytes, allocated at the first large frame and kept for the connection, so
     that a stream of large frames (an upload) costs no allocation and no page faults per frame. */
  uint8_t *big_buf;
  int big_dirty; /* big_buf was written since its pages were last given back */
};

struct exec {
  int used;
  int conn;
  uint32_t conn_gen, id;
  pid_t sup;
  int ctl, fd[2]; /* -1 when closed */
  uint64_t kept[2], seen[2], limit;
  /* OUTPUT_WINDOW: at most this much sent and not yet acknowledged per stream (0: no window). */
  uint64_t window, acked[2];
  int exited;
  struct sup_msg result;
  /* When the drain wait began: the exit, or the last moment output was held back (exec_output_held). */
  uint64_t exited_at;
  int held_back; /* output was held back when the main loop last looked, before it slept */
  /* Streamed stdin (STDIN_STREAM): the pipe's write end, what is queued for it, and whether EOF
     was asked for once the queue drains. `in_buf` is STDIN_WINDOW bytes, allocated on first use. */
  int in_fd; /* -1: no streamed stdin, or closed */
  uint8_t *in_buf;
  size_t in_off, in_len;
  uint64_t in_delivered, in_acked;
  int in_eof;
};

extern struct conn conns[MAX_CONNS];
extern struct exec execs[MAX_EXECS];
extern int listen_fd;
/* A VM's init: its clock is its own, set to the host's on SET_CLOCK. A container's is the host's. */
extern int owns_clock;

/* conn.c */
void conn_accept(void);
/* Takes an open stream (an accepted socket, the serial bridge) as a new connection; -1: no free slot. */
int conn_adopt(int fd);
void conn_readable(struct conn *c);
/* Handles the complete frames already in c's input buffer, as far as output room allows. */
void conn_consume(struct conn *c);
void conn_flush(struct conn *c);
void conn_close(struct conn *c);
size_t conn_room(struct conn *c);
/* A writer over the free part of c's output buffer; commit with conn_commit after frame_end. */
struct writer conn_writer(struct conn *c);
void conn_commit(struct conn *c, struct writer *w);
void conn_error(struct conn *c, uint32_t id, int code, const char *message, int fatal);

/* exec.c */
void exec_start(struct conn *c, uint32_t id, const uint8_t *payload, size_t len);
void exec_signal(struct conn *c, uint32_t id, const uint8_t *payload, size_t len);
void exec_stdin(struct conn *c, uint32_t id, const uint8_t *payload, size_t len);
void exec_output_ack(struct conn *c, uint32_t id, const uint8_t *payload, size_t len);
/* True when stream s may not be read now: its window is full. */
int exec_output_blocked(const struct exec *e, int s);
/* Whether stream s has output the agent holds back: the host's window is full, or the connection
   (`room` bytes free) has no room for another piece. */
int exec_output_held(const struct exec *e, int s, size_t room);
/* Writes queued stdin into the process's pipe; acknowledges what went through. */
void exec_stdin_writable(struct exec *e);
/* Sends STDIN_ACK when bytes were delivered since the last one and the connection has room. */
void exec_stdin_ack(struct exec *e);
void exec_ctl_readable(struct exec *e);
void exec_output_readable(struct exec *e, int stream);
/* Sends EXIT when the command has exited and its output is drained or DRAIN_MS passed. */
void exec_try_finish(struct exec *e, uint64_t now);
/* Kills the command's tree (through its supervisor) and forgets it without replying. */
void exec_abandon(struct exec *e);
struct conn *exec_conn(struct exec *e);

#endif
