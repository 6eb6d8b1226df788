// Scheduler affinity for Swift: glibc declares sched_getaffinity and the CPU_SET macros only
// under _GNU_SOURCE, which Swift's Glibc module does not define.
#define _GNU_SOURCE
#include "affinity.h"

#include <errno.h>
#ifdef __linux__
#include <sched.h>

int bp_allowed_cpus(int *out, int capacity) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    int n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &set)) continue;
        if (n < capacity) out[n] = cpu;
        n++;
    }
    return n;
}

int bp_bind_thread(pid_t tid, const int *cpus, int count) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = 0; i < count; i++) {
        if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE) {
            errno = EINVAL;
            return -1;
        }
        CPU_SET(cpus[i], &set);
    }
    return sched_setaffinity(tid, sizeof set, &set);
}
#else
int bp_allowed_cpus(int *out, int capacity) {
    (void)out; (void)capacity;
    errno = ENOSYS;
    return -1;
}

int bp_bind_thread(pid_t tid, const int *cpus, int count) {
    (void)tid; (void)cpus; (void)count;
    errno = ENOSYS;
    return -1;
}
#endif
