/* The video handle's insides, shared by video.c (open, index, probe) and video_decode.c (decoding the frames
 * asked for, by seeking or from the start, and their RGB conversion). Private to pipeline/. */
#ifndef UPM_PIPELINE_VIDEO_INTERNAL_H
#define UPM_PIPELINE_VIDEO_INTERNAL_H

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>

#include "video.h"

#define LOST 2 /* internal: the seek path cannot prove where it is; decode from the start instead */

typedef struct membuf { const uint8_t *data; size_t size, pos; } membuf;

typedef struct sws_key { int w, h, fmt, cs, full; } sws_key; /* what the conversion context was made for */

struct upm_video {
    membuf mb;
    upm_video_opts opts;
    upm_video_info info;
    int stream;              /* the video stream's index (the same on every reopen: same bytes) */
    AVRational tb;           /* its time base */
    AVCodecParameters *par;  /* its parameters, kept so that reopening needs no stream probing */
    const AVInputFormat *ifmt;
    int64_t *pts;            /* num_frames frame timestamps, ascending; NULL when unusable for seeking */
    int64_t *key_pts;        /* num_keyframes keyframe timestamps, ascending */
    int64_t *key_dts;        /* their decoding timestamps (the pts where a packet has none), in the same order */
    int x264_build;          /* H.264 from x264: the encoder build its SEI names, or -1 */
    int probed_streams;      /* avformat_find_stream_info ran (its durations may be estimates) */
    /* decoding state; lives across upm_video_decode calls */
    AVIOContext *avio;
    AVFormatContext *fmt;
    AVCodecContext *dec;
    AVPacket *pkt;
    AVFrame *frame;
    struct SwsContext *sws;
    sws_key sws_for;
    uint8_t *scratch; /* aligned conversion target, so that swscale takes the same path for every frame */
    int scratch_stride;
    int running;         /* demuxer + decoder positioned and not drained */
    int eof_sent;
    int after_seek;      /* the next packet is the first after av_seek_frame */
    int64_t floor_pts;   /* after a seek: frames before the landing keyframe may lack references */
    int64_t seek_pts, seek_dts; /* after a seek: the keyframe sought (packets before it are passed over) */
    int reseeked;        /* after a seek: it landed past the keyframe once and was retried at seek_dts */
    int64_t cur;         /* index of the last frame returned since the last (re)open or seek; -1 none */
    /* seek path on H.264 and HEVC: the timestamps of the frames asked for (ascending), so that the decoder may skip the
     * non-reference pictures between them (next_frame); NULL elsewhere */
    const int64_t *want_pts;
    int nwant;
    upm_video_stats stats;
};

/* video.c's helpers that decoding uses too */
int upm_video_ff_fail(upm_err *err, const char *what, int averr);       /* an FFmpeg error as a upm_err */
int upm_video_demux_open(upm_video *v, upm_err *err);                   /* (re)opens the demuxer on the bytes */
int upm_video_check_size(const upm_video *v, int w, int h, upm_err *err); /* within opts.max_side */
int upm_video_cmp_i64(const void *a, const void *b);                    /* qsort/bsearch order of int64_t */

#endif
