/*
 * The host link over a virtio-serial port (`--serial PATH`): one connection at a time, bridged to
 * an ordinary agent connection through a socketpair, so that conn.c serves it like a unix socket.
 */
#ifndef SHOAL_SERIAL_H
#define SHOAL_SERIAL_H

#include <poll.h>

/* Most pollfds serial_poll_fds adds. */
#define SERIAL_SLOTS 2

/* Opens the port and arranges SIGIO on host attach; 0, or -1 with errno. */
int serial_open(const char *path);
/* Appends the link's pollfds to pf and returns their count; lowers *timeout (ms, -1: none) when
   the link waits on a timer. */
int serial_poll_fds(struct pollfd *pf, int *timeout);
/* Handles the revents of the pollfds that serial_poll_fds added, in the same order; while no
   host is attached, looks whether one is now. */
void serial_service(const struct pollfd *pf, int count);

#endif
