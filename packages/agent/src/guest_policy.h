/*
 * What the host decides about a microVM guest's restrictions, read from the root disk: the
 * capability set and the masked and read-only paths of a container's OCI spec (a text file the
 * host writes from oci-spec.ts) and the seccomp filter (a classic BPF program the host compiles
 * from seccomp-profile.ts). The agent applies them to itself before it serves, so that everything
 * it starts is as restricted as a container's processes; without them it does not serve at all.
 *
 * The agent alone also sets the guest's clock (SET_CLOCK): it keeps CAP_SYS_TIME, and its filter
 * allows clock_settime. What it forks drops the capability and adds the second filter, which
 * refuses clock_settime as the container's profile does; together they are that profile.
 *
 * The text file, one entry a line: `capabilities <decimal mask>`, `masked <path>`, `readonly <path>`.
 */
#ifndef SHOAL_GUEST_POLICY_H
#define SHOAL_GUEST_POLICY_H

#include <stddef.h>
#include <stdint.h>

#define GUEST_POLICY_PATH "/opt/shoal/guest-policy"
#define GUEST_SECCOMP_PATH "/opt/shoal/seccomp.bpf"
#define GUEST_FORKED_SECCOMP_PATH "/opt/shoal/seccomp-forked.bpf"
#define GUEST_POLICY_MAX_PATHS 32

struct guest_policy {
  uint64_t capabilities;
  const char *masked[GUEST_POLICY_MAX_PATHS];
  size_t masked_count;
  const char *readonly[GUEST_POLICY_MAX_PATHS];
  size_t readonly_count;
  /* struct sock_filter[filter_len / 8], as the kernel takes it: the agent's own, and the one that
     every process it forks adds. */
  const uint8_t *filter;
  size_t filter_len;
  const uint8_t *forked_filter;
  size_t forked_filter_len;
};

/* Reads the three files; -1 with *why set (a static message) when one is missing or malformed. */
int guest_policy_load(struct guest_policy *policy, const char *policy_path, const char *filter_path,
                      const char *forked_filter_path, const char **why);

#endif
