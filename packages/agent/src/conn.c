/*
 * Host connections: accepting, reading frames out of the byte stream, answering HELLO, PING and SET_CLOCK,
 * handing EXEC, STDIN and SIGNAL to exec.c, and the bounded output buffer each connection writes from.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

struct conn conns[MAX_CONNS];

void conn_accept(void) {
  int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) return;
  if (conn_adopt(fd) < 0) close(fd); /* no free slot: the host sees the connection closed */
}

int conn_adopt(int fd) {
  for (int i = 0; i < MAX_CONNS; i++) {
    struct conn *c = &conns[i];
    if (c->fd >= 0) continue;
    /* Untouched pages of this buffer cost no memory until output is queued. */
    uint8_t *out = malloc(CONN_OUT_CAP + CONN_IN_CAP);
    if (out == NULL) return -1;
    uint32_t gen = c->gen + 1;
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->gen = gen;
    c->out = out;
    c->in = out + CONN_OUT_CAP;
    return 0;
  }
  return -1;
}

void conn_close(struct conn *c) {
  if (c->fd < 0) return;
  for (int i = 0; i < MAX_EXECS; i++)
    if (execs[i].used && exec_conn(&execs[i]) == c) exec_abandon(&execs[i]);
  close(c->fd);
  c->fd = -1;
  c->gen++;
  free(c->out);
  free(c->big_buf);
  c->out = c->in = c->big = c->big_buf = NULL;
  c->in_len = c->out_len = c->out_off = 0;
}

size_t conn_room(struct conn *c) { return CONN_OUT_CAP - (c->out_len - c->out_off); }

struct writer conn_writer(struct conn *c) {
  if (c->out_off > 0) {
    memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
    c->out_len -= c->out_off;
    c->out_off = 0;
  }
  return (struct writer){.buf = c->out, .cap = CONN_OUT_CAP, .len = c->out_len};
}

void conn_commit(struct conn *c, struct writer *w) { c->out_len = w->len; }

/* An idle connection gives back the output pages a burst of output touched. */
#define RELEASE_ABOVE (64u * 1024u)
static void release_pages(uint8_t *buf, size_t len, int advice) {
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t start = ((uintptr_t)buf + page - 1) & ~(page - 1), end = ((uintptr_t)buf + len) & ~(page - 1);
  if (end > start) madvise((void *)start, end - start, advice);
}

void conn_flush(struct conn *c) {
  while (c->fd >= 0 && c->out_off < c->out_len) {
    ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) conn_close(c);
      return;
    }
    c->out_off += (size_t)n;
  }
  if (c->fd >= 0 && c->out_off == c->out_len) {
    if (c->out_len > RELEASE_ABOVE) release_pages(c->out, c->out_len, MADV_DONTNEED);
    /* Lazily: the kernel takes these pages only under memory pressure, so that the next large
       frame of an upload in progress reuses them without faulting. */
    if (c->big_dirty && c->big == NULL) {
      release_pages(c->big_buf, FRAME_MAX_SIZE, MADV_FREE);
      c->big_dirty = 0;
    }
    c->out_off = c->out_len = 0;
    if (c->closing) conn_close(c);
  }
}

void conn_error(struct conn *c, uint32_t id, int code, const char *message, int fatal) {
  struct writer w = conn_writer(c);
  frame_begin(&w, T_ERROR, id);
  put_u64(&w, F_CODE, (uint64_t)code);
  put_str(&w, F_MESSAGE, message);
  if (frame_end(&w)) conn_commit(c, &w);
  if (fatal) c->closing = 1;
}

static void on_hello(struct conn *c, const uint8_t *p, size_t len) {
  struct hello_req h;
  if (hello_parse(p, len, &h) != FRAME_OK) {
    conn_error(c, 0, E_MALFORMED_FRAME, "HELLO needs VERSION_MAJOR", 1);
    return;
  }
  if (h.major != PROTO_MAJOR) {
    conn_error(c, 0, E_UNSUPPORTED_VERSION, "unsupported protocol major version (this agent speaks 1)", 1);
    return;
  }
  c->hello_done = 1;
  struct writer w = conn_writer(c);
  frame_begin(&w, T_HELLO, 0);
  put_u64(&w, F_VERSION_MAJOR, PROTO_MAJOR);
  put_u64(&w, F_VERSION_MINOR, PROTO_MINOR);
  put_str(&w, F_SOFTWARE, "shoal-agent 0.1.0");
  put_u64(&w, F_MAX_FRAME, FRAME_MAX_SIZE);
  put_u64(&w, F_PID, (uint64_t)getpid());
  if (frame_end(&w)) conn_commit(c, &w);
}

/* The guest's clock starts from its RTC, in whole seconds, and stands still while the VM is paused:
   the host sets it after boot and after every pause. */
static void set_clock(struct conn *c, uint32_t id, const uint8_t *p, size_t len) {
  struct set_clock_req req;
  const char *why;
  int parsed = set_clock_parse(p, len, &req, &why);
  if (parsed != FRAME_OK) {
    conn_error(c, id, parsed, why, parsed == E_MALFORMED_FRAME);
    return;
  }
  if (!owns_clock) {
    conn_error(c, id, E_UNSUPPORTED_TYPE, "only a microVM's init sets its clock", 0);
    return;
  }
  struct timespec ts = {.tv_sec = (time_t)(req.realtime_us / 1000000u),
                        .tv_nsec = (long)(req.realtime_us % 1000000u) * 1000L};
  if (clock_settime(CLOCK_REALTIME, &ts) < 0) {
    conn_error(c, id, E_INTERNAL, strerror(errno), 0);
    return;
  }
  struct writer w = conn_writer(c);
  frame_begin(&w, T_PONG, id);
  if (frame_end(&w)) conn_commit(c, &w);
}

static void dispatch(struct conn *c, const struct frame_header *h, const uint8_t *p) {
  if (!c->hello_done && h->type != T_HELLO) {
    conn_error(c, h->id, E_HELLO_REQUIRED, "the first frame must be HELLO", 1);
    return;
  }
  switch (h->type) {
  case T_HELLO:
    on_hello(c, p, h->length);
    break;
  case T_PING: {
    struct writer w = conn_writer(c);
    frame_begin(&w, T_PONG, h->id);
    if (frame_end(&w)) conn_commit(c, &w);
    break;
  }
  case T_SET_CLOCK:
    set_clock(c, h->id, p, h->length);
    break;
  case T_EXEC:
    exec_start(c, h->id, p, h->length);
    break;
  case T_SIGNAL:
    exec_signal(c, h->id, p, h->length);
    break;
  case T_STDIN:
    exec_stdin(c, h->id, p, h->length);
    break;
  case T_OUTPUT_ACK:
    exec_output_ack(c, h->id, p, h->length);
    break;
  default:
    conn_error(c, h->id, E_UNSUPPORTED_TYPE, "frame type not supported by this agent", 0);
    break;
  }
}

/* Parses and handles every complete frame in c->in; switches to c->big for a large one. */
void conn_consume(struct conn *c) {
  size_t off = 0;
  while (!c->closing && conn_room(c) >= CONTROL_ROOM) {
    struct frame_header h;
    int r = frame_header_parse(c->in + off, c->in_len - off, &h);
    if (r == FRAME_NEED_MORE) break;
    if (r != FRAME_OK) {
      conn_error(c, 0, r, r == E_FRAME_TOO_LARGE ? "frame larger than 1 MiB" : "malformed frame header", 1);
      break;
    }
    size_t total = FRAME_HEADER_SIZE + h.length;
    if (total > c->in_len - off) {
      if (total <= CONN_IN_CAP) break;
      if (c->big_buf == NULL) c->big_buf = malloc(FRAME_MAX_SIZE);
      if ((c->big = c->big_buf) == NULL) {
        conn_error(c, 0, E_INTERNAL, "out of memory", 1);
        break;
      }
      c->big_len = c->in_len - off;
      c->big_need = total;
      c->big_dirty = 1;
      memcpy(c->big, c->in + off, c->big_len);
      off = c->in_len;
      break;
    }
    dispatch(c, &h, c->in + off + FRAME_HEADER_SIZE);
    off += total;
  }
  memmove(c->in, c->in + off, c->in_len - off);
  c->in_len -= off;
}

void conn_readable(struct conn *c) {
  ssize_t n;
  if (c->big != NULL) {
    n = recv(c->fd, c->big + c->big_len, c->big_need - c->big_len, 0);
  } else {
    n = recv(c->fd, c->in + c->in_len, CONN_IN_CAP - c->in_len, 0);
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    conn_close(c);
    return;
  }
  if (c->big != NULL) {
    c->big_len += (size_t)n;
    if (c->big_len < c->big_need) return;
    struct frame_header h;
    frame_header_parse(c->big, c->big_len, &h);
    dispatch(c, &h, c->big + FRAME_HEADER_SIZE);
    c->big = NULL;
    return;
  }
  c->in_len += (size_t)n;
  conn_consume(c);
}
