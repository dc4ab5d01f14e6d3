#include "progress.h"

static int64_t work_done;

/* Relaxed: the count only has to move, and be read whole by the heartbeat thread. */
void upm_progress_tick(void) { __atomic_fetch_add(&work_done, 1, __ATOMIC_RELAXED); }

int64_t upm_progress_count(void) { return __atomic_load_n(&work_done, __ATOMIC_RELAXED); }
