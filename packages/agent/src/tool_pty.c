/*
 * `shoal-agent pty --cols C --rows R [--term T] -- ARGV…`: ARGV on a new pseudo-terminal, as the
 * leader of its own session with the terminal as its controlling tty. The tool relays between
 * the host and the terminal: its stdin carries frames from the host (input bytes, resizes), its
 * stdout the terminal's output as it comes. It exits with ARGV's status (128 + the signal when a
 * signal ended it). EOF on stdin, or SIGHUP/SIGTERM/SIGINT to the tool, hangs the terminal up:
 * the session gets SIGHUP, and whatever of it is left after HANGUP_GRACE_MS is SIGKILLed.
 * PROTOCOL.md ("Tools", "pty") describes the stdin framing.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "tool_path.h"
#include "proc_stat.h"
#include "tools.h"

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

#define FRAME_INPUT 0
#define FRAME_RESIZE 1
#define FRAME_HEADER 5 /* type u8, length u32 LE */
#define IN_CAP 65536
#define OUT_CAP 65536
#define HANGUP_GRACE_MS 1000
#define HANGUP_TICK_MS 10

static volatile sig_atomic_t got_hangup;

/* SIGCHLD only has to interrupt ppoll; the exit is looked for every round. */
static void on_signal(int s) {
  if (s != SIGCHLD) got_hangup = 1;
}

static uint64_t clock_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int usage(const char *why) {
  fprintf(stderr, "shoal-agent pty: %s\nusage: shoal-agent pty --cols C --rows R [--term T] -- ARGV...\n", why);
  return 2;
}

/* A terminal dimension: 1 … 65535 (struct winsize holds unsigned shorts). */
static int parse_dim(const char *s, unsigned short *out) {
  if (s == NULL || !isdigit((unsigned char)s[0])) return -1;
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || *end != 0 || v < 1 || v > 65535) return -1;
  *out = (unsigned short)v;
  return 0;
}

static int set_size(int master, unsigned short cols, unsigned short rows) {
  struct winsize ws = {.ws_row = rows, .ws_col = cols};
  return ioctl(master, TIOCSWINSZ, &ws);
}

/* The session of a process from /proc/PID/stat, and whether it is a zombie; -1 when it is gone. */
static pid_t session_of(const char *pid, int *zombie) {
  struct proc_stat st;
  if (proc_stat_read(pid, &st) < 0) return -1;
  *zombie = st.state == 'Z';
  return st.session;
}

/* Sends sig to every live process of session sid (the ones this uid may signal); returns how many. */
static int signal_session(pid_t sid, int sig) {
  DIR *d = opendir("/proc");
  if (d == NULL) return kill(-sid, sig) == 0 ? 1 : 0;
  int count = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!isdigit((unsigned char)e->d_name[0])) continue;
    int zombie = 0;
    if (session_of(e->d_name, &zombie) != sid || zombie) continue;
    if (kill((pid_t)atoi(e->d_name), sig) == 0) count++;
  }
  closedir(d);
  return count;
}

struct input {
  uint8_t buf[IN_CAP];
  size_t len;
  int in_frame;      /* a frame's header was read */
  uint8_t type;      /* of that frame */
  uint32_t left;     /* payload bytes of it still to come */
  int master_full;   /* the last write to the terminal would have blocked */
  int discard;       /* nothing holds the terminal's other side: input has nowhere to go */
};

/* Applies what it can of the buffered frames to the terminal; -1: the stream is malformed. */
static int consume(struct input *in, int master) {
  size_t off = 0;
  in->master_full = 0;
  while (off < in->len) {
    size_t have = in->len - off;
    if (!in->in_frame) {
      if (have < FRAME_HEADER) break;
      const uint8_t *h = in->buf + off;
      in->type = h[0];
      in->left = (uint32_t)h[1] | (uint32_t)h[2] << 8 | (uint32_t)h[3] << 16 | (uint32_t)h[4] << 24;
      if (in->type > FRAME_RESIZE || (in->type == FRAME_RESIZE && in->left != 4)) return -1;
      in->in_frame = 1;
      off += FRAME_HEADER;
      continue;
    }
    if (in->type == FRAME_RESIZE) {
      if (have < 4) break;
      const uint8_t *r = in->buf + off;
      unsigned short cols = (unsigned short)(r[0] | r[1] << 8), rows = (unsigned short)(r[2] | r[3] << 8);
      if (cols == 0 || rows == 0) return -1;
      /* The kernel sends SIGWINCH to the terminal's foreground process group. */
      set_size(master, cols, rows);
      off += 4;
      in->in_frame = 0;
      continue;
    }
    size_t n = have < in->left ? have : in->left;
    if (n > 0 && in->discard) {
      off += n;
      in->left -= (uint32_t)n;
    } else if (n > 0) {
      ssize_t w = write(master, in->buf + off, n);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno == EAGAIN) {
        in->master_full = 1;
        break;
      }
      /* EIO: nobody holds the terminal open any more; the input has nowhere to go. */
      if (w < 0) w = (ssize_t)n;
      off += (size_t)w;
      in->left -= (uint32_t)w;
    }
    if (in->left == 0) in->in_frame = 0;
  }
  memmove(in->buf, in->buf + off, in->len - off);
  in->len -= off;
  return 0;
}

/* Copies what the terminal has buffered to stdout; 0 when it would block, -1 at EIO or EOF. */
static int relay_output(int master, int *stdout_ok) {
  static uint8_t buf[OUT_CAP];
  for (;;) {
    ssize_t n = read(master, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return 0;
    if (n <= 0) return -1;
    if (*stdout_ok && write_all(1, buf, (size_t)n) < 0) *stdout_ok = 0;
    if ((size_t)n < sizeof buf) return 0;
  }
}

static int status_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

/* The child: a new session on the terminal's slave side, then ARGV. Reports a failure's errno on ep. */
static void start_child(int slave, int ep, const char *term, char **args) {
  sigset_t none;
  sigemptyset(&none);
  for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (setsid() < 0 || ioctl(slave, TIOCSCTTY, 0) < 0) goto fail;
  if (dup2(slave, 0) < 0 || dup2(slave, 1) < 0 || dup2(slave, 2) < 0) goto fail;
  if (slave > 2) close(slave);
  if (setenv("TERM", term, 1) < 0) goto fail;
  execvp(args[0], args);
fail:;
  int err = errno;
  if (write(ep, &err, sizeof err) < 0) {
  }
  _exit(127);
}

int pty_main(int argc, char **argv) {
  unsigned short cols = 0, rows = 0;
  const char *term = "xterm-256color";
  int i = 1;
  for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(argv[i], "--cols") == 0) {
      if (parse_dim(value, &cols) < 0) return usage("--cols takes a number from 1 to 65535");
    } else if (strcmp(argv[i], "--rows") == 0) {
      if (parse_dim(value, &rows) < 0) return usage("--rows takes a number from 1 to 65535");
    } else if (strcmp(argv[i], "--term") == 0) {
      if (value == NULL || value[0] == 0) return usage("--term takes a terminal type");
      term = value;
    } else {
      return usage("unknown option");
    }
    i++;
  }
  if (cols == 0 || rows == 0) return usage("--cols and --rows are required");
  if (i >= argc - 1) return usage("no command after --");
  char **args = argv + i + 1;

  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) {
    tool_fail(errno, "/dev/ptmx");
    return 1;
  }
  /* TIOCGPTPEER opens this very master's peer, whatever /dev/pts the path would name. */
  int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) {
    char name[PATH_MAX];
    if (ptsname_r(master, name, sizeof name) != 0 || (slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
      tool_fail(errno, "/dev/pts");
      return 1;
    }
  }
  if (set_size(master, cols, rows) < 0) {
    tool_fail(errno, "/dev/ptmx");
    return 1;
  }
  int ep[2];
  if (pipe2(ep, O_CLOEXEC) < 0) {
    tool_fail(errno, NULL);
    return 1;
  }

  sigset_t blocked, waiting;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGCHLD);
  sigaddset(&blocked, SIGHUP);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGINT);
  sigprocmask(SIG_BLOCK, &blocked, &waiting);
  sigdelset(&waiting, SIGCHLD);
  sigdelset(&waiting, SIGHUP);
  sigdelset(&waiting, SIGTERM);
  sigdelset(&waiting, SIGINT);
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGCHLD, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  pid_t pid = fork();
  if (pid < 0) {
    tool_fail(errno, NULL);
    return 1;
  }
  if (pid == 0) start_child(slave, ep[1], term, args);
  close(slave);
  close(ep[1]);
  int child_errno;
  ssize_t got;
  while ((got = read(ep[0], &child_errno, sizeof child_errno)) < 0 && errno == EINTR) {
  }
  close(ep[0]);
  if (got == (ssize_t)sizeof child_errno) {
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    tool_fail(child_errno, args[0]);
    return 1;
  }
  fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);

  static struct input in;
  int stdin_open = 1, readable = 1, stdout_ok = 1, malformed = 0, status = 0, alive = 1;
  uint64_t hangup_deadline = 0; /* 0: not hung up */
  for (;;) {
    /* Asked every round: ppoll leaves SIGCHLD pending when a descriptor is ready at once. */
    if (alive && waitpid(pid, &status, WNOHANG) == pid) alive = 0;
    if (!alive && hangup_deadline == 0) break;
    if ((got_hangup || !stdin_open || !stdout_ok) && hangup_deadline == 0) {
      /* Closing the master hangs the terminal up: the kernel signals its session leader and
         foreground group; the session's other members get SIGHUP here. */
      close(master);
      master = -1;
      signal_session(pid, SIGHUP);
      signal_session(pid, SIGCONT);
      hangup_deadline = clock_ms() + HANGUP_GRACE_MS;
    }
    if (hangup_deadline != 0) {
      uint64_t now = clock_ms();
      if (now >= hangup_deadline) signal_session(pid, SIGKILL);
      /* Done once no member is left but zombies, or a grace after the SIGKILL (a process stuck
         in the kernel cannot hold the tool for ever). */
      if (!alive && (signal_session(pid, 0) == 0 || now >= hangup_deadline + HANGUP_GRACE_MS)) break;
    }

    struct pollfd pf[2];
    nfds_t n = 0;
    int stdin_slot = -1, master_slot = -1;
    if (stdin_open && hangup_deadline == 0 && !in.master_full && in.len < IN_CAP) {
      pf[n] = (struct pollfd){.fd = 0, .events = POLLIN};
      stdin_slot = (int)n++;
    }
    if (master >= 0 && (readable || in.master_full)) {
      pf[n] = (struct pollfd){.fd = master, .events = (short)((readable ? POLLIN : 0) | (in.master_full ? POLLOUT : 0))};
      master_slot = (int)n++;
    }
    struct timespec tick = {0, HANGUP_TICK_MS * 1000000L};
    int r = ppoll(pf, n, hangup_deadline != 0 ? &tick : NULL, &waiting);
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    if (master_slot >= 0 && pf[master_slot].revents) {
      short ev = pf[master_slot].revents;
      if (readable && (ev & (POLLIN | POLLHUP | POLLERR)) && relay_output(master, &stdout_ok) < 0) readable = 0;
      /* POLLHUP: no process holds the terminal's other side open any more (ARGV exited or closed
         it); poll would report it at once forever, so the terminal is not watched any longer. */
      if (ev & (POLLHUP | POLLERR)) {
        readable = 0;
        in.discard = 1;
      }
      if (in.master_full && (ev & (POLLOUT | POLLERR | POLLHUP)) && consume(&in, master) < 0)
        malformed = 1;
    }
    if (stdin_slot >= 0 && (pf[stdin_slot].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t got_in = read(0, in.buf + in.len, IN_CAP - in.len);
      if (got_in < 0 && errno == EINTR) continue;
      if (got_in <= 0) {
        stdin_open = 0;
      } else {
        in.len += (size_t)got_in;
        if (consume(&in, master) < 0) malformed = 1;
      }
    }
    if (malformed && stdin_open) {
      fputs("shoal-agent pty: malformed frame on stdin; hanging up\n", stderr);
      stdin_open = 0;
    }
  }
  if (master >= 0) {
    /* What ARGV wrote before it exited is still buffered in the terminal. */
    if (readable) relay_output(master, &stdout_ok);
    close(master);
  }
  if (alive) {
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  return malformed ? 2 : status_code(status);
}
