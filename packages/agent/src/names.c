/* errno and signal names (see names.h); numbers without a name become "E<n>" / "SIG<n>". */
#include "names.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>

#define N(x) {x, #x}
static const struct {
  int n;
  const char *name;
} errnos[] = {N(EPERM),  N(ENOENT), N(ESRCH),  N(EINTR),  N(EIO),     N(ENXIO),        N(E2BIG),  N(ENOEXEC),
              N(EBADF),  N(ECHILD), N(EAGAIN), N(ENOMEM), N(EACCES),  N(EFAULT),       N(EBUSY),  N(EEXIST),
              N(ENODEV), N(ENOTDIR), N(EISDIR), N(EINVAL), N(ENFILE), N(EMFILE),       N(ETXTBSY), N(EFBIG),
              N(ENOSPC), N(EROFS),  N(EMLINK), N(EPIPE),  N(ENAMETOOLONG), N(ELOOP), N(ENOSYS), N(EOVERFLOW),
              N(EXDEV),  N(ENOTEMPTY), N(EDQUOT), N(ESPIPE), N(ERANGE), N(ETIMEDOUT), N(EOPNOTSUPP)},
  signals[] = {N(SIGHUP),  N(SIGINT),  N(SIGQUIT), N(SIGILL),  N(SIGTRAP), N(SIGABRT), N(SIGBUS),    N(SIGFPE),
               N(SIGKILL), N(SIGUSR1), N(SIGSEGV), N(SIGUSR2), N(SIGPIPE), N(SIGALRM), N(SIGTERM),   N(SIGCHLD),
               N(SIGCONT), N(SIGSTOP), N(SIGTSTP), N(SIGTTIN), N(SIGTTOU), N(SIGURG),  N(SIGXCPU),   N(SIGXFSZ),
               N(SIGVTALRM), N(SIGPROF), N(SIGWINCH), N(SIGIO), N(SIGPWR), N(SIGSYS)};

const char *errno_name(int err, char *buf) {
  for (size_t i = 0; i < sizeof errnos / sizeof errnos[0]; i++)
    if (errnos[i].n == err) return errnos[i].name;
  snprintf(buf, 16, "E%d", err);
  return buf;
}

const char *signal_name(int signo, char *buf) {
  for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
    if (signals[i].n == signo) return signals[i].name;
  snprintf(buf, 16, "SIG%d", signo);
  return buf;
}
