/*
 * The restrictions crun puts on a container's agent, applied by the agent to itself as a
 * microVM's init: everything it starts inherits them.
 */
#ifndef SHOAL_GUEST_RESTRICT_H
#define SHOAL_GUEST_RESTRICT_H

#include "guest_policy.h"

/*
 * oom_score_adj -1000 for the agent and 0 for what it forks (the guest's OOM killer takes the
 * workload, never the agent that reports the kill), the policy's capabilities as bounding,
 * effective and permitted sets (inheritable and ambient empty) with CAP_SYS_TIME for the agent
 * alone, no_new_privs, then the seccomp filter; every process the agent forks drops CAP_SYS_TIME
 * and adds the forked filter before it runs anything (guest_policy.h). -1 with *why set on the
 * first step that fails; the caller must not serve then.
 */
int guest_restrict(const struct guest_policy *policy, const char **why);

#endif
