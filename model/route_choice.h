/* Token routing's choice rule, one definition for the CPU ops and the CUDA kernels (backend.h moe_dispatch,
 * moe_balance): the expert of a row's choice j is its kept gate entry (G != 0) with exactly j kept entries
 * above it, larger values first and ties to the lower index; -1 when the row has fewer than j + 1. */
#ifndef UPM_ROUTE_CHOICE_H
#define UPM_ROUTE_CHOICE_H

#ifdef __CUDACC__
#define UPM_HOST_DEVICE __host__ __device__
#else
#define UPM_HOST_DEVICE
#endif

UPM_HOST_DEVICE static inline int upm_route_choice(const float *g, int E, int j)
{
    for (int e = 0; e < E; e++) {
        if (g[e] == 0.0f)
            continue;
        int above = 0;
        for (int i = 0; i < E; i++)
            above += g[i] != 0.0f && (g[i] > g[e] || (g[i] == g[e] && i < e));
        if (above == j)
            return e;
    }
    return -1;
}

#endif
