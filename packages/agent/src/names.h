/* Names of errno values and signals as the protocol reports them ("ENOENT", "SIGKILL"). */
#ifndef SHOAL_NAMES_H
#define SHOAL_NAMES_H

/* Writes the name into buf (at least 16 bytes) and returns buf. */
const char *errno_name(int err, char *buf);
const char *signal_name(int signo, char *buf);

#endif
