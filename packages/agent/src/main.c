/*
 * shoal-agent: PID 1 of a sandbox. `shoal-agent --socket /PATH/agent.sock` listens on that unix
 * socket, writes "ready\n" to stdout once it accepts connections, and then serves the protocol of
 * PROTOCOL.md in one poll() loop. It reaps every child, and on SIGTERM or SIGINT ends every
 * process (SIGTERM, a short grace, SIGKILL) and exits 0. It also runs as an ordinary child process,
 * for tests: it is then a child subreaper and signals only its own descendants.
 *
 * `shoal-agent --serial /dev/virtio-ports/NAME` serves one host at a time over a virtio-serial
 * port instead (serial.c), as the init of a virtual machine: it mounts the kernel's file systems
 * that are missing, restricts itself as crun restricts a container's agent (guest_restrict.h, with
 * the policy the host wrote to the root disk, guest_policy.h; without it the agent does not serve)
 * and, asked to stop, powers the machine off rather than exit.
 *
 * `--memory-limit-file PATH` arms the agent's own OOM killer (memory_watch.h) with the limit in
 * that file, for a kernel that accounts the sandbox's memory without limiting it (gVisor).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "guest_init.h"
#include "guest_restrict.h"
#include "memory_watch.h"
#include "serial.h"
#include "tools.h"

#define SHUTDOWN_GRACE_MS 500u
/* pollfd slots per exec: its supervisor's control socket, stdout, stderr, streamed stdin. */
#define EXEC_SLOTS 4
#define POLL_SLOTS (1 + SERIAL_SLOTS + MAX_CONNS + EXEC_SLOTS * MAX_EXECS)

int listen_fd = -1;
int owns_clock;
static volatile sig_atomic_t got_chld, got_term;

static void on_signal(int s) {
  if (s == SIGCHLD)
    got_chld = 1;
  else
    got_term = 1;
}

static void die(const char *what) {
  dprintf(2, "shoal-agent: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void reap(void) {
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

/* Binds path even when it is longer than sun_path, through the directory's /proc/self/fd entry. */
static int bind_socket(const char *path) {
  char dir[PATH_MAX], base[PATH_MAX];
  if (strlen(path) >= sizeof dir) return errno = ENAMETOOLONG, -1;
  strcpy(dir, path);
  strcpy(base, path);
  const char *d = dirname(dir), *b = basename(base);
  if (chmod(d, 0700) < 0) return -1;
  if (unlink(path) < 0 && errno != ENOENT) return -1;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  int dfd = -1;
  if (strlen(path) < sizeof sa.sun_path) {
    strcpy(sa.sun_path, path);
  } else {
    if ((dfd = open(d, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) return -1;
    int n = snprintf(sa.sun_path, sizeof sa.sun_path, "/proc/self/fd/%d/%s", dfd, b);
    if (n < 0 || (size_t)n >= sizeof sa.sun_path) return errno = ENAMETOOLONG, -1;
  }
  mode_t old = umask(077);
  int r = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  umask(old);
  if (dfd >= 0) close(dfd);
  if (r < 0 || chmod(path, 0600) < 0 || listen(fd, 64) < 0) return -1;
  return fd;
}

/* Ends every process: SIGTERM, up to SHUTDOWN_GRACE_MS for them to go, then SIGKILL. */
static void shutdown_all(void) {
  int pid1 = getpid() == 1;
  if (pid1)
    kill(-1, SIGTERM);
  else
    signal_children(SIGTERM); /* supervisors forward it to their command's process group */
  uint64_t until = now_ms() + SHUTDOWN_GRACE_MS;
  while (now_ms() < until) {
    pid_t p = waitpid(-1, NULL, WNOHANG);
    if (p < 0) break; /* no children left */
    if (p == 0) {
      struct timespec ts = {0, 5 * 1000000L};
      nanosleep(&ts, NULL);
    }
  }
  if (pid1) kill(-1, SIGKILL);
  kill_all_children(-1);
}

static const struct {
  const char *name;
  int (*run)(int argc, char **argv);
} tools[] = {
    {"fs", fs_main}, {"archive", archive_main}, {"watch", watch_main}, {"bg", bg_main}, {"pty", pty_main},
};

int main(int argc, char **argv) {
  /* `shoal-agent TOOL …`: one of the tools, with argv[0] the tool's name. */
  if (argc > 1)
    for (size_t t = 0; t < sizeof tools / sizeof tools[0]; t++)
      if (strcmp(argv[1], tools[t].name) == 0) return tools[t].run(argc - 1, argv + 1);
  const char *path = NULL, *serial = NULL;
  const char *memory_limit_file = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
      path = argv[++i];
    else if (strncmp(argv[i], "--socket=", 9) == 0)
      path = argv[i] + 9;
    else if (strcmp(argv[i], "--serial") == 0 && i + 1 < argc)
      serial = argv[++i];
    else if (strncmp(argv[i], "--serial=", 9) == 0)
      serial = argv[i] + 9;
    else if (strcmp(argv[i], "--memory-limit-file") == 0 && i + 1 < argc)
      memory_limit_file = argv[++i];
  }
  if ((path == NULL || path[0] == 0) == (serial == NULL || serial[0] == 0)) {
    dprintf(2, "usage: shoal-agent --socket /PATH/agent.sock | --serial /dev/PORT | shoal-agent "
               "fs|archive|watch|bg|pty ARGS...\n");
    return 2;
  }
  if (memory_watch_init(memory_limit_file) < 0) die(memory_limit_file);
  int vm_init = serial != NULL && getpid() == 1;
  if (vm_init) {
    /* Before anything is served: a guest that cannot be restricted as a container powers off. */
    struct guest_policy policy;
    const char *why = NULL;
    guest_mount_kernel_fs();
    if (guest_policy_load(&policy, GUEST_POLICY_PATH, GUEST_SECCOMP_PATH, GUEST_FORKED_SECCOMP_PATH, &why) < 0 ||
        guest_isolate(&policy, &why) < 0 || guest_restrict(&policy, &why) < 0) {
      guest_log("refusing to serve", why);
      guest_power_off();
    }
    owns_clock = 1;
  }
  if (serial != NULL) {
    /* An init without a console starts with fds 0-2 closed: the port must not land on one, which
       the dup2() onto /dev/null below would then close. */
    int fd;
    while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2) {
    }
    if (fd > 2) close(fd);
  }
  for (int i = 0; i < MAX_CONNS; i++) conns[i].fd = -1;

  sigset_t blocked, waiting;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGCHLD);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGINT);
  if (sigprocmask(SIG_BLOCK, &blocked, &waiting) < 0) die("sigprocmask");
  sigdelset(&waiting, SIGCHLD);
  sigdelset(&waiting, SIGTERM);
  sigdelset(&waiting, SIGINT);
  struct sigaction sa = {.sa_handler = on_signal};
  if (sigaction(SIGCHLD, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
    die("sigaction");
  signal(SIGPIPE, SIG_IGN);
  if (getpid() != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) die("PR_SET_CHILD_SUBREAPER");

  if (serial != NULL) {
    if (serial_open(serial) < 0) die(serial);
  } else if ((listen_fd = bind_socket(path)) < 0) {
    die(path);
  }
  supervisor_prepare();
  int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd < 0) die("/dev/null");
  static const char ready[] = "ready\n";
  /* A VM's init may have no console at all: over the serial port, HELLO is the readiness signal. */
  if (write(1, ready, sizeof ready - 1) != (ssize_t)(sizeof ready - 1) && serial == NULL) die("write ready");
  /* The original stdout stays open, out of the way: under gVisor it is a host socket (the host's
     end of the start script's stdout), which the Sentry shuts down, for every holder, once its last
     descriptor closes; the start script's `started` after this line would then die of SIGPIPE. */
  if (serial == NULL && fcntl(1, F_DUPFD_CLOEXEC, 3) < 0) die("dup stdout");
  if (dup2(null_fd, 0) < 0 || dup2(null_fd, 1) < 0 || dup2(null_fd, 2) < 0) die("dup2 /dev/null");
  close(null_fd);

  static struct pollfd pf[POLL_SLOTS];
  /* What each pollfd stands for: -1 listener (fd -1 in serial mode, which poll() skips), -2 the
     serial link, 0..MAX_CONNS-1 a connection, else an exec's fd. */
  static int who[POLL_SLOTS];
  for (;;) {
    if (got_term) break;
    nfds_t n = 0;
    pf[n] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
    who[n++] = -1;
    int timeout = -1;
    nfds_t serial_at = n;
    int serial_n = serial != NULL ? serial_poll_fds(pf + n, &timeout) : 0;
    for (int s = 0; s < serial_n; s++) who[n++] = -2;
    for (int i = 0; i < MAX_CONNS; i++) {
      struct conn *c = &conns[i];
      if (c->fd < 0) continue;
      short ev = 0;
      if (!c->closing && conn_room(c) >= CONTROL_ROOM && (c->big != NULL || c->in_len < CONN_IN_CAP)) ev |= POLLIN;
      if (c->out_off < c->out_len) ev |= POLLOUT;
      pf[n] = (struct pollfd){.fd = c->fd, .events = ev};
      who[n++] = i;
    }
    uint64_t now = now_ms();
    for (int i = 0; i < MAX_EXECS; i++) {
      struct exec *e = &execs[i];
      if (!e->used) continue;
      struct conn *c = exec_conn(e);
      size_t room = c ? conn_room(c) : CONN_OUT_CAP;
      if (e->ctl >= 0 && room >= CONTROL_ROOM) {
        pf[n] = (struct pollfd){.fd = e->ctl, .events = POLLIN};
        who[n++] = MAX_CONNS + EXEC_SLOTS * i;
      }
      if (e->in_fd >= 0 && e->in_len > 0) {
        pf[n] = (struct pollfd){.fd = e->in_fd, .events = POLLOUT};
        who[n++] = MAX_CONNS + EXEC_SLOTS * i + 3;
      }
      e->held_back = 0;
      for (int s = 0; s < 2; s++) {
        if (e->fd[s] < 0) continue;
        if (exec_output_held(e, s, room)) {
          /* Output held back by the host is not leftover output: the drain wait starts when it flows. */
          e->held_back = 1;
          continue;
        }
        pf[n] = (struct pollfd){.fd = e->fd[s], .events = POLLIN};
        who[n++] = MAX_CONNS + EXEC_SLOTS * i + 1 + s;
      }
      /* Held back, it waits for the host (an acknowledgement, room), not for the drain's end. */
      if (e->exited && !e->held_back) {
        uint64_t at = e->exited_at + DRAIN_MS;
        int left = at > now ? (int)(at - now) + 1 : 0;
        if (timeout < 0 || left < timeout) timeout = left;
      }
    }
    int watch = memory_watch_timeout_ms();
    if (watch >= 0 && (timeout < 0 || watch < timeout)) timeout = watch;
    struct timespec ts = {timeout / 1000, (long)(timeout % 1000) * 1000000L};
    int r = ppoll(pf, n, timeout < 0 ? NULL : &ts, &waiting);
    if (r < 0 && errno != EINTR) die("ppoll");
    /* Held back until now, at the earliest: an acknowledgement that woke this round starts the wait. */
    uint64_t woke = now_ms();
    for (int i = 0; i < MAX_EXECS; i++)
      if (execs[i].used && execs[i].exited && execs[i].held_back) execs[i].exited_at = woke;
    memory_watch_check();
    if (got_chld) {
      got_chld = 0;
      reap();
    }
    for (nfds_t k = 0; r > 0 && k < n; k++) {
      if (pf[k].revents == 0) continue;
      int w = who[k];
      if (w == -2) continue;
      if (w < 0) {
        conn_accept();
      } else if (w < MAX_CONNS) {
        struct conn *c = &conns[w];
        if (pf[k].revents & (POLLIN | POLLHUP | POLLERR)) conn_readable(c);
        if (c->fd >= 0 && (pf[k].revents & POLLOUT)) conn_flush(c);
      } else {
        struct exec *e = &execs[(w - MAX_CONNS) / EXEC_SLOTS];
        int slot = (w - MAX_CONNS) % EXEC_SLOTS;
        /* An earlier event of this round may have released the exec or closed this fd. */
        if (!e->used) continue;
        if (slot == 0 && e->ctl == pf[k].fd)
          exec_ctl_readable(e);
        else if ((slot == 1 || slot == 2) && e->fd[slot - 1] == pf[k].fd)
          exec_output_readable(e, slot - 1);
        else if (slot == 3 && e->in_fd == pf[k].fd)
          exec_stdin_writable(e);
      }
    }
    now = now_ms();
    for (int i = 0; i < MAX_EXECS; i++) {
      if (!execs[i].used) continue;
      /* An acknowledgement that found no room in the output buffer goes out once there is some. */
      if (execs[i].in_acked != execs[i].in_delivered) exec_stdin_ack(&execs[i]);
      if (execs[i].exited) exec_try_finish(&execs[i], now);
    }
    for (int i = 0; i < MAX_CONNS; i++) {
      struct conn *c = &conns[i];
      if (c->fd >= 0 && c->in_len > 0 && c->big == NULL) conn_consume(c);
      if (c->fd >= 0) conn_flush(c);
    }
    /* Last, so that the connections it opens or closes are not the ones this round's pollfds saw. */
    if (serial != NULL) serial_service(pf + serial_at, serial_n);
  }
  if (listen_fd >= 0) close(listen_fd);
  shutdown_all();
  if (vm_init) guest_power_off();
  return 0;
}
