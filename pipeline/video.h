/* Video samples: decode chosen frames of one video held in memory (a sample's bytes) with FFmpeg, and
 * the frame sampling policy that chooses them. No temporary files: a custom AVIOContext reads the
 * caller's buffer, which must stay alive and unchanged until upm_video_close. */
#ifndef UPM_VIDEO_H
#define UPM_VIDEO_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "rng.h"

/* Largest coded width or height accepted unless the options say otherwise (8K is 7680). */
#define UPM_VIDEO_MAX_SIDE 8192

typedef struct upm_video_opts {
    int max_side;       /* refuse a coded width/height above this (checked before decoding); 0 = UPM_VIDEO_MAX_SIDE */
    int max_short_side; /* > 0: frames whose shorter side exceeds this are scaled down (swscale, area
                         * averaging) so that it equals it, aspect kept; never scaled up. 0 = native size */
    int threads;        /* decoder threads; 0 = 1 (the pipeline parallelises across samples instead) */
    int no_seek;        /* 1 = always decode from the start (the reference path the tests compare with) */
    int no_skip;        /* 1 = decode every picture on the seek path too (by default the unasked H.264 and
                           HEVC non-reference pictures are skipped: they cannot change the frames asked for) */
} upm_video_opts;

typedef struct upm_video_info {
    int width, height;   /* coded frame size (sample aspect ratio is ignored) */
    int out_width, out_height; /* size of the frames upm_video_decode returns (after max_short_side) */
    int64_t num_frames;  /* frames in the stream, counted from its packets at open (no decoding) */
    int64_t num_keyframes;
    double fps;          /* (num_frames - 1) / (last pts - first pts); the header's rate for 1 frame */
    double duration_s;   /* num_frames / fps */
    char codec[32];      /* "h264", "vp8", "theora", "flv1", "h263", ... */
    char container[32];  /* first name of the demuxer: "mov", "matroska", "ogg", "flv", ... */
} upm_video_info;

/* T decoded frames, packed RGB24: frame t, row y, pixel x, channel c at rgb[((t*height + y)*width + x)*3 + c]. */
typedef struct upm_video_frames {
    int T, width, height;
    uint8_t *rgb; /* owned; release with upm_video_frames_free */
} upm_video_frames;

/* What the last upm_video_decode did (the tests and benchmarks read it). */
typedef struct upm_video_stats {
    int seeks;              /* av_seek_frame calls */
    int fallbacks;          /* times the seek path gave up and decoded from the start */
    int64_t frames_decoded; /* frames that came out of the decoder */
    int64_t pts_mismatches; /* straight decode: frames whose pts differed from the packet index */
} upm_video_stats;

typedef struct upm_video upm_video;

/* Opens the video in data[0..n): picks the first video stream (not a cover picture), checks its size,
 * and reads every packet once to index frame timestamps and keyframes. Accepts the common video
 * containers only (mov/mp4/3gp, matroska/webm, ogg, flv, avi, mpegts, mpeg-ps, asf); anything else,
 * no video stream, zero bytes, a truncated or corrupt file, or an absurd size is UPM_EBADDATA.
 * opts may be NULL (defaults). data must outlive the handle. */
int upm_video_open(const void *data, size_t n, const upm_video_opts *opts, upm_video **out, upm_err *err);

const upm_video_info *upm_video_get_info(const upm_video *v);

/* Decodes frames indices[0..T) (0-based, in presentation order, any order, repeats allowed; each
 * < num_frames) into out (allocated here; release with upm_video_frames_free), frame t of out being
 * indices[t]. Frame k is the k-th frame a decode from the start returns. The seek path jumps to the
 * keyframe at or before each wanted frame and decodes forward; whenever it cannot prove where it
 * is (no keyframe at the landing point, a timestamp not in the index, a frame past the target) it
 * falls back to decoding from the start, so the result always equals a straight decode's frames.
 * Decoding errors and a stream that ends early are UPM_EBADDATA; an index out of range UPM_EINVAL. */
int upm_video_decode(upm_video *v, const int64_t *indices, int T, upm_video_frames *out, upm_err *err);

/* Counters of the last upm_video_decode. */
upm_video_stats upm_video_get_stats(const upm_video *v);

void upm_video_close(upm_video *v);
void upm_video_frames_free(upm_video_frames *f);

/* One-shot helpers: open, probe or decode, close. */
int upm_video_probe(const void *data, size_t n, upm_video_info *info, upm_err *err);
int upm_video_decode_frames(const void *data, size_t n, const int64_t *indices, int T, const upm_video_opts *opts,
                            upm_video_frames *out, upm_err *err);

/* Frame sampling policy: which T frame indices of a num_frames-frame video a clip uses.
 *
 * Training (train = 1), as Uni-Perceiver / TimeSformer: T frames at a fixed interval with a random
 * start. The interval is `interval` frames at 30 fps, scaled to the video's rate
 * (stride = interval * fps / 30; fps <= 0 counts as 30); index i = start + floor(i * stride), start
 * uniform in [0, num_frames - span] with span = floor(stride * (T - 1)) + 1. When the video is too
 * short for that span, the stride shrinks to (num_frames - 1) / (T - 1) and the clip covers the whole
 * video from frame 0; when num_frames < T, frames repeat (index i = floor(i * num_frames / T)).
 * Evaluation (train = 0): T segment centres, index i = floor((i + 0.5) * num_frames / T); no
 * randomness. Indices come out ascending. rng is used (one draw) only when training with room for a
 * random start. interval <= 0 means UPM_VIDEO_INTERVAL. */
#define UPM_VIDEO_FRAMES 8    /* T: frames per clip (the paper: up to 8 frames) */
#define UPM_VIDEO_INTERVAL 32 /* Uni-Perceiver's STRIDE: 32 frames at 30 fps between sampled frames */
int upm_video_sample_indices(int64_t num_frames, double fps, int T, double interval, int train, upm_rng *rng,
                             int64_t *out, upm_err *err);
/* Evaluation's temporal views: clip `clip` of `clips` takes, in each of the T equal segments, the frame at
 * offset (clip + 1/2) / clips of the segment: index i = floor((i + (2 clip + 1) / (2 clips)) * num_frames / T).
 * One clip is the segment centres above; K clips shift them evenly through the segments (mmaction2's
 * segment sampling in test mode, several clips). Indices ascend within a clip. */
int upm_video_eval_indices(int64_t num_frames, int T, int clip, int clips, int64_t *out, upm_err *err);

#endif
