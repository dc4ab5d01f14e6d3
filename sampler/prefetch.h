/* The next step's batch decoded while the current step computes: a thread calls upm_loader_next one batch
 * ahead of the trainer. The batches are the loader's own, in its order (the loader's output depends only
 * on its position), so a run with prefetching trains on exactly the batches of a run without; the cursor
 * is that of the last batch handed out, so a checkpoint resumes at the next one and the batch decoded
 * ahead is simply dropped. */
#ifndef UPM_PREFETCH_H
#define UPM_PREFETCH_H

#include "loader.h"

typedef struct upm_prefetch upm_prefetch;

/* Starts decoding the loader's next batch (the loader is borrowed: close this first). */
int upm_prefetch_open(upm_loader *l, upm_prefetch **out, upm_err *err);
/* The next batch into *out (zeroed or an earlier batch: its memory is handed to the thread for reuse),
 * waiting for it if it is not decoded yet; the loader's error if it failed. */
int upm_prefetch_next(upm_prefetch *p, upm_batch *out, upm_err *err);
/* The cursor after the last batch next returned (at open: the loader's); free() it. */
char *upm_prefetch_cursor_json(upm_prefetch *p);
/* Seconds next spent waiting for the thread so far (decoding not hidden behind the step). */
double upm_prefetch_wait_s(const upm_prefetch *p);
/* Stops the thread (the batch in flight is dropped). */
void upm_prefetch_close(upm_prefetch *p);

#endif
