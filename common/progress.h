/* A process-wide count of work done (one per encoder block's forward or backward pass). The
 * communicator's heartbeat sends it to the other ranks, so they can tell a rank that is slow but
 * computing (a full-vocabulary step, a first step) from one that is stuck: see trainer/comm_mpi.c. */
#ifndef UPM_PROGRESS_H
#define UPM_PROGRESS_H

#include <stdint.h>

void upm_progress_tick(void);
int64_t upm_progress_count(void);

#endif
