/*
 * The host link over a virtio-serial port. The port is one byte stream that outlives host
 * sessions: QEMU's chardev socket accepts one host at a time, and the guest learns of a host
 * attaching or detaching only through the port's state. While no host is attached, read() answers
 * EOF and poll() answers POLLHUP at once, so the detached port is left out of poll(); the driver
 * sends SIGIO (O_ASYNC) when the host attaches, which interrupts the agent's ppoll(), and a slow
 * timer re-checks in case a signal is ever lost.
 *
 * Each attachment gets a fresh agent connection: one end of a socketpair is handed to conn.c as if
 * accepted, and the bytes are copied between the port and the other end. A detach closes the
 * bridge, so the connection's execs are abandoned exactly as when a unix-socket client goes away.
 *
 * A detach the guest never sees is possible: when a host goes and the next one comes before the
 * agent looks, the port's state is "attached" both times. So the bridge follows the frame
 * boundaries of what the host sends, and a HELLO after the session's first one begins a new
 * session: a fresh connection, as if the detach had been seen. (Output the old session had already
 * written to the port may still reach the new host ahead of its HELLO's answer.)
 */
#define _GNU_SOURCE
#include "serial.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

#define LINK_BUF (64u * 1024u)
/* While detached: how often the host's presence is re-checked without a SIGIO. */
#define DETACHED_RECHECK_MS 1000

static int port = -1;
/* Frame tracking of the host's bytes: the header being collected, the payload bytes still to come
   of the current frame, and whether this session has had its HELLO. */
static uint8_t header[FRAME_HEADER_SIZE];
static size_t header_len;
static uint32_t payload_left;
static int session_hello;
static int bridge = -1; /* our end of the socketpair; -1: no host attached */
static uint8_t down[LINK_BUF], up[LINK_BUF]; /* port → bridge, bridge → port */
static size_t down_off, down_len, up_off, up_len;

static void on_sigio(int s) { (void)s; }

/* The agent forks its supervisors without exec, and exec.c closes only the fds it knows of: a
   supervisor holding the bridge would keep a detached session's connection from ever seeing EOF. */
static void close_in_child(void) {
  if (bridge >= 0) close(bridge);
  if (port >= 0) close(port);
  /* The child forks too (a supervisor starts its command): by then these numbers are reused. */
  bridge = port = -1;
}

static void set_async(int on) {
  int fl = fcntl(port, F_GETFL);
  if (fl >= 0) fcntl(port, F_SETFL, on ? fl | O_ASYNC : fl & ~O_ASYNC);
}

static void open_bridge(void) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) return;
  if (conn_adopt(sv[1]) < 0) {
    close(sv[0]);
    close(sv[1]);
    return;
  }
  bridge = sv[0];
}

static void close_bridge(void) {
  if (bridge >= 0) close(bridge); /* the connection reads EOF and closes itself */
  bridge = -1;
  down_off = down_len = up_off = up_len = 0;
  header_len = 0;
  payload_left = 0;
  session_hello = 0;
}

/* Appends n bytes read from the port to `down`, starting a new session at a second HELLO. The
   caller reads at most LINK_BUF - FRAME_HEADER_SIZE bytes at once, so a held header fits too. */
static void take_from_host(const uint8_t *p, size_t n) {
  while (n > 0) {
    if (payload_left > 0) {
      size_t k = n < payload_left ? n : payload_left;
      memcpy(down + down_len, p, k);
      down_len += k;
      payload_left -= (uint32_t)k;
      p += k;
      n -= k;
      continue;
    }
    size_t k = FRAME_HEADER_SIZE - header_len;
    if (k > n) k = n;
    memcpy(header + header_len, p, k);
    header_len += k;
    p += k;
    n -= k;
    if (header_len < FRAME_HEADER_SIZE) break; /* held back until the header is whole */
    uint32_t length = (uint32_t)header[0] | (uint32_t)header[1] << 8 | (uint32_t)header[2] << 16 | (uint32_t)header[3] << 24;
    uint16_t type = (uint16_t)(header[4] | header[5] << 8);
    if (type == T_HELLO && session_hello) {
      /* What is queued for the old session goes with it. */
      close_bridge();
      open_bridge();
      if (bridge < 0) return;
    }
    if (type == T_HELLO) session_hello = 1;
    memcpy(down + down_len, header, FRAME_HEADER_SIZE);
    down_len += FRAME_HEADER_SIZE;
    header_len = 0;
    payload_left = length;
  }
}

/* Attaches when a host is present on the port. */
static void check_host(void) {
  struct pollfd p = {.fd = port, .events = POLLIN};
  if (poll(&p, 1, 0) < 0 || (p.revents & (POLLHUP | POLLERR))) return;
  set_async(0); /* attached, a detach shows as POLLHUP; SIGIO would only add wake-ups per read */
  open_bridge();
}

static void detach(void) {
  close_bridge();
  /* Before looking again, so that an attach between the look and the next ppoll() raises SIGIO. */
  set_async(1);
  check_host();
}

int serial_open(const char *path) {
  port = open(path, O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (port < 0) return -1;
  if ((errno = pthread_atfork(NULL, NULL, close_in_child)) != 0) return -1;
  sigset_t io;
  sigemptyset(&io);
  sigaddset(&io, SIGIO);
  /* Blocked except inside ppoll(), whose mask the caller derived before this call. */
  if (sigprocmask(SIG_BLOCK, &io, NULL) < 0) return -1;
  struct sigaction sa = {.sa_handler = on_sigio};
  if (sigaction(SIGIO, &sa, NULL) < 0) return -1;
  if (fcntl(port, F_SETOWN, getpid()) < 0) return -1;
  set_async(1);
  check_host();
  return 0;
}

static int move_bytes(int to, uint8_t *buf, size_t *off, size_t *len) {
  while (*off < *len) {
    ssize_t n = write(to, buf + *off, *len - *off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN ? 0 : -1;
    }
    *off += (size_t)n;
  }
  *off = *len = 0;
  return 0;
}

int serial_poll_fds(struct pollfd *pf, int *timeout) {
  if (bridge < 0) {
    if (*timeout < 0 || *timeout > DETACHED_RECHECK_MS) *timeout = DETACHED_RECHECK_MS;
    return 0;
  }
  short port_ev = (short)((down_len == 0 ? POLLIN : 0) | (up_len > 0 ? POLLOUT : 0));
  short bridge_ev = (short)((up_len == 0 ? POLLIN : 0) | (down_len > 0 ? POLLOUT : 0));
  pf[0] = (struct pollfd){.fd = port, .events = port_ev};
  pf[1] = (struct pollfd){.fd = bridge, .events = bridge_ev};
  return 2;
}

void serial_service(const struct pollfd *pf, int count) {
  if (bridge < 0 || count < 2) {
    /* Detached: a SIGIO, the timer or any other wake-up; the look is one poll() of the port. */
    if (bridge < 0) check_host();
    return;
  }
  short pe = pf[0].revents, be = pf[1].revents;
  if (pe & (POLLHUP | POLLERR)) {
    detach();
    return;
  }
  if ((pe & POLLIN) && down_len == 0) {
    static uint8_t raw[LINK_BUF - FRAME_HEADER_SIZE];
    ssize_t n = read(port, raw, sizeof raw);
    if (n == 0) {
      detach();
      return;
    }
    if (n > 0) take_from_host(raw, (size_t)n);
    if (bridge < 0) return;
  }
  if (be & (POLLIN | POLLHUP | POLLERR)) {
    if (up_len == 0) {
      ssize_t n = read(bridge, up, sizeof up);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        /* The agent ended this connection (a fatal protocol error): the host stays attached and
           gets a fresh one, which expects HELLO again. */
        close_bridge();
        open_bridge();
        return;
      }
      if (n > 0) up_len = (size_t)n;
    }
  }
  if (move_bytes(bridge, down, &down_off, &down_len) < 0 || move_bytes(port, up, &up_off, &up_len) < 0) detach();
}
