#ifndef BACKPROP_AFFINITY_H
#define BACKPROP_AFFINITY_H

#include <sys/types.h>

/// Writes the CPUs the calling thread may run on into `out` (at most `capacity`, in increasing
/// order) and returns how many there are; -1 with errno set if the system does not say
/// (or on a system without scheduler affinity, where errno is ENOSYS).
int bp_allowed_cpus(int *out, int capacity);

/// Lets thread `tid` (0: the calling thread) run only on the `count` CPUs in `cpus`.
/// Returns 0, or -1 with errno set (EINVAL for a CPU beyond the set's 1,024).
int bp_bind_thread(pid_t tid, const int *cpus, int count);

#endif
