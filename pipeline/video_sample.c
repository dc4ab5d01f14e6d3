/* The frame sampling policy of video clips (video.h): which frame indices training and evaluation take
 * from a video of known length and rate. Index arithmetic only; decoding is video.c's. */
#include <math.h>

#include "video.h"

int upm_video_eval_indices(int64_t num_frames, int T, int clip, int clips, int64_t *out, upm_err *err)
{
    int64_t n = num_frames;
    if (n <= 0 || T <= 0)
        return upm_errf(err, UPM_EINVAL, "video: cannot sample %d frames from a %lld-frame video", T, (long long)n);
    if (clips < 1 || clip < 0 || clip >= clips)
        return upm_errf(err, UPM_EINVAL, "video: clip %d of %d", clip, clips);
    /* floor((i + (2 clip + 1) / (2 clips)) * n / T), in integers */
    for (int i = 0; i < T; i++)
        out[i] = (2 * (int64_t)clips * i + 2 * (int64_t)clip + 1) * n / (2 * (int64_t)clips * T);
    return 0;
}

int upm_video_sample_indices(int64_t num_frames, double fps, int T, double interval, int train, upm_rng *rng,
                             int64_t *out, upm_err *err)
{
    int64_t n = num_frames;
    if (n <= 0 || T <= 0)
        return upm_errf(err, UPM_EINVAL, "video: cannot sample %d frames from a %lld-frame video", T, (long long)n);
    if (train && !rng)
        return upm_errf(err, UPM_EINVAL, "video: training frame sampling needs a random stream");
    if (!train) /* segment centres */
        return upm_video_eval_indices(n, T, 0, 1, out, err);
    if (n < T) { /* too short even at stride 1: spread what there is, repeating frames */
        for (int i = 0; i < T; i++)
            out[i] = (int64_t)i * n / T;
        return 0;
    }
    double stride = (interval > 0 ? interval : UPM_VIDEO_INTERVAL) * (fps > 0 ? fps : 30.0) / 30.0;
    if (stride < 1.0)
        stride = 1.0;
    int64_t span = T > 1 ? (int64_t)floor(stride * (T - 1)) + 1 : 1;
    if (span > n) { /* too short for the interval: shrink it to cover the whole video */
        stride = (double)(n - 1) / (T - 1);
        span = n;
    }
    int64_t start = span < n ? (int64_t)upm_rng_below(rng, (uint64_t)(n - span + 1)) : 0;
    for (int i = 0; i < T; i++) {
        int64_t k = start + (int64_t)floor(i * stride + 1e-9);
        out[i] = k < n ? k : n - 1;
    }
    return 0;
}
