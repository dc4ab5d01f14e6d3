/* The monotonic clock in seconds: the one copy for rates, ETAs, timeouts and benchmarks. */
#ifndef UPM_CLOCK_H
#define UPM_CLOCK_H

#include <time.h>

static inline double upm_monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
