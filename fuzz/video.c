/* Fuzz target "video": the video probe (FFmpeg's demuxers through the custom AVIO over memory, the
 * container allow-list, size checks, the packet index) and frame decoding at the indices the training
 * and evaluation samplers choose, with and without the seek path and the short-side downscale. */
#include <libavutil/log.h>
#include <string.h>

#include "fuzz.h"
#include "rng.h"
#include "video.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    av_log_set_level(AV_LOG_FATAL); /* FFmpeg's complaints about the bad inputs; our messages are checked */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    upm_err err = {0};
    upm_video_opts o = {.max_short_side = size % 2 ? 48 : 0, .no_seek = (int)(size / 2 % 2)};
    upm_video *v;
    if (upm_video_open(data, size, &o, &v, &err)) {
        FUZZ_CHECK(err.msg[0]);
        return 0;
    }
    const upm_video_info *in = upm_video_get_info(v);
    FUZZ_CHECK(in->width > 0 && in->height > 0 && in->width <= UPM_VIDEO_MAX_SIDE && in->height <= UPM_VIDEO_MAX_SIDE);
    FUZZ_CHECK(in->num_frames > 0 && in->num_keyframes >= 0 && in->num_keyframes <= in->num_frames);
    int64_t idx[4];
    upm_rng rng = upm_rng_stream(1, 0, size, 0, 0);
    int train = size / 4 % 2;
    if (upm_video_sample_indices(in->num_frames, in->fps, 4, 0, train, &rng, idx, &err) == 0) {
        for (int t = 0; t < 4; t++)
            FUZZ_CHECK(idx[t] >= 0 && idx[t] < in->num_frames);
        upm_video_frames fr;
        if (upm_video_decode(v, idx, 4, &fr, &err) == 0) {
            FUZZ_CHECK(fr.T == 4 && fr.width == in->out_width && fr.height == in->out_height && fr.rgb);
            volatile unsigned sum = fr.rgb[(size_t)4 * fr.width * fr.height * 3 - 1];
            (void)sum;
            upm_video_frames_free(&fr);
        } else {
            FUZZ_CHECK(err.msg[0]);
        }
    }
    upm_video_close(v);
    return 0;
}
