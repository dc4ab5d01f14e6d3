/* Video with FFmpeg over an in-memory buffer: open + packet index (frame timestamps and keyframes), probe and
 * close; decoding the chosen frames is video_decode.c's, the frame sampling policy video_sample.c's. See video.h
 * for the contracts. */
#include "video_internal.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avstring.h>
#include <libswscale/swscale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define AVIO_BUF_SIZE 65536

/* Real video containers only: FFmpeg would happily open a JPEG (jpeg_pipe, one mjpeg frame) or a text
 * file (tty) as a "video", and those are bad samples, not one-frame clips. */
static const char ACCEPTED_FORMATS[] = "mov,matroska,ogg,flv,avi,mpegts,mpeg,asf";


static int mem_read(void *opaque, uint8_t *buf, int n)
{
    membuf *m = opaque;
    if (m->pos >= m->size)
        return AVERROR_EOF;
    size_t k = m->size - m->pos < (size_t)n ? m->size - m->pos : (size_t)n;
    memcpy(buf, m->data + m->pos, k);
    m->pos += k;
    return (int)k;
}

/* Positions past the end are refused: a demuxer following an index into missing bytes then reports
 * the truncation instead of reading zeros. */
static int64_t mem_seek(void *opaque, int64_t off, int whence)
{
    membuf *m = opaque;
    int64_t base;
    switch (whence & ~AVSEEK_FORCE) {
    case AVSEEK_SIZE: return (int64_t)m->size;
    case SEEK_SET: base = 0; break;
    case SEEK_CUR: base = (int64_t)m->pos; break;
    case SEEK_END: base = (int64_t)m->size; break;
    default: return AVERROR(EINVAL);
    }
    if (off < -base || base + off > (int64_t)m->size)
        return AVERROR(EINVAL);
    m->pos = (size_t)(base + off);
    return base + off;
}

/* Nested opens (mov external references, playlists) are refused: a sample is its bytes only. */
static int refuse_io_open(AVFormatContext *s, AVIOContext **pb, const char *url, int flags, AVDictionary **opts)
{
    (void)pb, (void)flags, (void)opts;
    av_log(s, AV_LOG_ERROR, "refusing to open %s from inside a sample\n", url);
    return AVERROR(EPERM);
}

int upm_video_ff_fail(upm_err *err, const char *what, int averr)
{
    if (averr == AVERROR(ENOMEM))
        return upm_errf(err, UPM_ENOMEM, "video: out of memory %s", what);
    char buf[AV_ERROR_MAX_STRING_SIZE];
    av_strerror(averr, buf, sizeof buf);
    return upm_errf(err, UPM_EBADDATA, "video: %s: %s", what, buf);
}

static void demux_close(upm_video *v)
{
    avcodec_free_context(&v->dec);
    avformat_close_input(&v->fmt);
    if (v->avio) {
        av_freep(&v->avio->buffer); /* avio may have replaced the buffer we gave it */
        avio_context_free(&v->avio);
    }
    v->running = 0;
}

/* Opens the demuxer at the start of the bytes. The first time it probes the format and checks it;
 * reopening uses the format found then. */
int upm_video_demux_open(upm_video *v, upm_err *err)
{
    demux_close(v);
    v->mb.pos = 0;
    uint8_t *buf = av_malloc(AVIO_BUF_SIZE);
    if (buf)
        v->avio = avio_alloc_context(buf, AVIO_BUF_SIZE, 0, &v->mb, mem_read, NULL, mem_seek);
    if (!v->avio) {
        av_free(buf);
        return upm_errf(err, UPM_ENOMEM, "video: out of memory for an I/O context");
    }
    if (!v->ifmt) {
        const AVInputFormat *f = NULL;
        int r = av_probe_input_buffer2(v->avio, &f, "", NULL, 0, 0);
        if (r < 0 || !f)
            return upm_errf(err, UPM_EBADDATA, "video: not a recognisable media file (%zu bytes)", v->mb.size);
        if (av_match_list(f->name, ACCEPTED_FORMATS, ',') <= 0)
            return upm_errf(err, UPM_EBADDATA, "video: the bytes are '%s' data, not a video container (accepted: %s)",
                            f->name, ACCEPTED_FORMATS);
        v->ifmt = f;
    }
    v->fmt = avformat_alloc_context();
    if (!v->fmt)
        return upm_errf(err, UPM_ENOMEM, "video: out of memory for a format context");
    v->fmt->pb = v->avio;
    v->fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    v->fmt->io_open = refuse_io_open;
    int r = avformat_open_input(&v->fmt, NULL, v->ifmt, NULL); /* frees fmt on failure */
    if (r < 0)
        return upm_video_ff_fail(err, "cannot read the container header (truncated or corrupt?)", r);
    return 0;
}

int upm_video_check_size(const upm_video *v, int w, int h, upm_err *err)
{
    int lim = v->opts.max_side;
    if (w <= 0 || h <= 0)
        return upm_errf(err, UPM_EBADDATA, "video: the %s stream has no frame size", v->info.codec);
    if (w > lim || h > lim)
        return upm_errf(err, UPM_EBADDATA, "video: frame size %dx%d exceeds the limit of %d pixels a side", w, h, lim);
    return 0;
}

static int find_video_stream(AVFormatContext *fmt)
{
    for (unsigned i = 0; i < fmt->nb_streams; i++) {
        const AVStream *st = fmt->streams[i];
        if (st->codecpar->codec_type == AVMEDIA_TYPE_VIDEO && !(st->disposition & AV_DISPOSITION_ATTACHED_PIC))
            return (int)i;
    }
    return -1;
}

/* First open: choose the stream, learn its size (probing frames only when the header lacks it, as
 * in FLV and H.263 3GP), check the size before any decoding, and keep its parameters. */
static int choose_stream(upm_video *v, upm_err *err)
{
    AVFormatContext *fmt = v->fmt;
    int si = find_video_stream(fmt);
    if (si >= 0) {
        const AVCodecParameters *p = fmt->streams[si]->codecpar;
        snprintf(v->info.codec, sizeof v->info.codec, "%s", avcodec_get_name(p->codec_id));
        int r = p->width > 0 || p->height > 0 ? upm_video_check_size(v, p->width, p->height, err) : 0;
        if (r < 0)
            return r;
    }
    if (si < 0 || fmt->streams[si]->codecpar->width <= 0 || fmt->streams[si]->codecpar->height <= 0) {
        int r = avformat_find_stream_info(fmt, NULL);
        v->probed_streams = 1;
        if (r < 0)
            return upm_video_ff_fail(err, "cannot read the stream parameters", r);
        si = find_video_stream(fmt);
    }
    const char *comma = strchr(v->ifmt->name, ',');
    snprintf(v->info.container, sizeof v->info.container, "%.*s",
             comma ? (int)(comma - v->ifmt->name) : (int)strlen(v->ifmt->name), v->ifmt->name);
    if (si < 0)
        return upm_errf(err, UPM_EBADDATA, "video: the %s file has no video stream", v->info.container);
    const AVStream *st = fmt->streams[si];
    snprintf(v->info.codec, sizeof v->info.codec, "%s", avcodec_get_name(st->codecpar->codec_id));
    int r = upm_video_check_size(v, st->codecpar->width, st->codecpar->height, err);
    if (r < 0)
        return r;
    if (!avcodec_find_decoder(st->codecpar->codec_id))
        return upm_errf(err, UPM_EBADDATA, "video: no decoder for codec '%s'", v->info.codec);
    v->par = avcodec_parameters_alloc();
    if (!v->par || avcodec_parameters_copy(v->par, st->codecpar) < 0)
        return upm_errf(err, UPM_ENOMEM, "video: out of memory for codec parameters");
    v->stream = si;
    v->tb = st->time_base;
    v->info.width = st->codecpar->width;
    v->info.height = st->codecpar->height;
    return 0;
}

typedef struct i64vec { int64_t *a, n, cap; } i64vec;

static int push(i64vec *v, int64_t x)
{
    if (v->n == v->cap) {
        int64_t cap = v->cap ? v->cap * 2 : 256;
        int64_t *a = realloc(v->a, (size_t)cap * sizeof *a);
        if (!a)
            return UPM_ENOMEM;
        v->a = a;
        v->cap = cap;
    }
    v->a[v->n++] = x;
    return 0;
}

int upm_video_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* FFmpeg's H.264 decoder works around bugs of old x264 builds (e.g. 4:4:4 before build 151) once it
 * has seen the encoder's version SEI, which x264 writes into the first packet only. A decoder that
 * starts at a later keyframe never sees it and decodes those frames differently, so the build is
 * looked up here and handed to every decoder (its "x264_build" option). */
static void find_x264_build(upm_video *v, const uint8_t *p, int n)
{
    static const char tag[] = "x264 - core ";
    int k = (int)sizeof tag - 1;
    for (int i = 0; v->x264_build < 0 && i + k < n; i++)
        if (p[i] == 'x' && memcmp(p + i, tag, (size_t)k) == 0 && p[i + k] >= '0' && p[i + k] <= '9') {
            int b = 0;
            for (int j = i + k; j < n && j < i + k + 6 && p[j] >= '0' && p[j] <= '9'; j++)
                b = b * 10 + (p[j] - '0');
            v->x264_build = b;
        }
}

/* Reads every packet once (no decoding) and indexes the video stream's: a packet of any stream that
 * is cut short, flagged corrupt or lies past the end of the bytes, or a demuxer error, means a
 * truncated or damaged file. no_ts: some packet has no timestamp at all; no_pts: some packet has only a
 * decoding timestamp, so the container does not say in which order the frames are shown. */
static int index_packets(upm_video *v, i64vec *frames, i64vec *keys, i64vec *key_dts, int *no_ts, int *no_pts,
                         upm_err *err)
{
    int r;
    int64_t count = 0;
    while ((r = av_read_frame(v->fmt, v->pkt)) >= 0) {
        const AVPacket *p = v->pkt;
        int bad = (p->flags & AV_PKT_FLAG_CORRUPT) || (p->pos >= 0 && (uint64_t)p->pos + (uint64_t)p->size > v->mb.size);
        if (bad && p->stream_index != v->stream) {
            enum AVMediaType type = v->fmt->streams[p->stream_index]->codecpar->codec_type;
            av_packet_unref(v->pkt);
            return upm_errf(err, UPM_EBADDATA, "video: an %s packet after %lld video packets is cut short or damaged "
                            "(truncated file?)", av_get_media_type_string(type) ? av_get_media_type_string(type) : "other",
                            (long long)count);
        }
        if (p->stream_index == v->stream) {
            int64_t ts = p->pts != AV_NOPTS_VALUE ? p->pts : p->dts;
            *no_ts |= ts == AV_NOPTS_VALUE;
            *no_pts |= p->pts == AV_NOPTS_VALUE;
            if (v->par->codec_id == AV_CODEC_ID_H264 && count < 16)
                find_x264_build(v, p->data, p->size);
            /* packets whose frames the decoder drops: edit-list pre-roll, VP8's hidden alt-ref frames */
            int hidden = (p->flags & AV_PKT_FLAG_DISCARD) ||
                         (v->par->codec_id == AV_CODEC_ID_VP8 && p->size > 0 && !(p->data[0] & 0x10));
            if (!bad && !hidden && push(frames, ts) < 0)
                r = AVERROR(ENOMEM);
            /* a keyframe the decoder drops is no frame to seek to (fuzzed VP8 made hidden keyframes, more
             * keyframes than frames); frames after it then decode from the start, as without a keyframe */
            if (!bad && !hidden && (p->flags & AV_PKT_FLAG_KEY) &&
                (push(keys, ts) < 0 || push(key_dts, p->dts != AV_NOPTS_VALUE ? p->dts : ts) < 0))
                r = AVERROR(ENOMEM);
            av_packet_unref(v->pkt);
            if (r < 0)
                return upm_video_ff_fail(err, "indexing packets", r);
            if (bad)
                return upm_errf(err, UPM_EBADDATA, "video: %s packet %lld is cut short or damaged (truncated file?)",
                                v->info.codec, (long long)count);
            count++;
            continue;
        }
        av_packet_unref(v->pkt);
    }
    if (r != AVERROR_EOF) {
        char what[96];
        snprintf(what, sizeof what, "reading stopped after %lld video packets (truncated or corrupt file)", (long long)count);
        return upm_video_ff_fail(err, what, r);
    }
    if (frames->n == 0)
        return upm_errf(err, UPM_EBADDATA, "video: the %s stream has no frames", v->info.codec);
    return 0;
}

/* Frame rate and duration from the indexed timestamps; the header's rate when they say nothing. */
static void set_timing(upm_video *v, const int64_t *pts, int64_t n)
{
    double span = pts ? (double)(pts[n - 1] - pts[0]) * av_q2d(v->tb) : 0.0;
    double fps = 0.0;
    if (n > 1 && span > 0)
        fps = (double)(n - 1) / span;
    else if (v->fmt && v->fmt->streams[v->stream]->avg_frame_rate.num > 0)
        fps = av_q2d(v->fmt->streams[v->stream]->avg_frame_rate);
    else if (v->fmt && v->fmt->streams[v->stream]->r_frame_rate.num > 0)
        fps = av_q2d(v->fmt->streams[v->stream]->r_frame_rate);
    v->info.fps = fps;
    v->info.duration_s = fps > 0 ? (double)n / fps : (v->fmt && v->fmt->duration > 0 ? v->fmt->duration / 1e6 : 0.0);
}

/* Ogg declares no length: a whole file ends exactly at the end of a page flagged end-of-stream
 * (a page is at most 27 + 255 + 255 * 255 bytes). */
static int ogg_complete(const uint8_t *d, size_t n)
{
    size_t lo = n > 65307 ? n - 65307 : 0;
    for (size_t p = n >= 27 ? n - 27 : 0; n >= 27; p--) {
        if (memcmp(d + p, "OggS", 4) == 0 && d[p + 4] == 0 && p + 27 + d[p + 26] <= n) {
            size_t len = 27 + (size_t)d[p + 26];
            for (size_t i = 0; i < d[p + 26]; i++)
                len += d[p + 27 + i];
            if (p + len == n)
                return (d[p + 5] & 4) != 0;
        }
        if (p == lo)
            break;
    }
    return 0;
}

/* A truncated file whose demuxer stops quietly at the cut: the packets fall well short of the
 * duration the header declares (mp4, Matroska, FLV metadata; not estimates), or an Ogg file does
 * not end with its last page. The 25 % margin tolerates an audio track that outlasts the video. */
static int check_complete(upm_video *v, upm_err *err)
{
    if (strcmp(v->info.container, "ogg") == 0 && !ogg_complete(v->mb.data, v->mb.size))
        return upm_errf(err, UPM_EBADDATA, "video: the Ogg file does not end with a complete last page (truncated?)");
    const AVStream *st = v->fmt->streams[v->stream];
    double declared = 0;
    if (st->duration > 0 && st->duration != AV_NOPTS_VALUE)
        declared = (double)st->duration * av_q2d(st->time_base);
    else if (v->fmt->duration > 0 && (!v->probed_streams || v->fmt->duration_estimation_method == AVFMT_DURATION_FROM_STREAM))
        declared = (double)v->fmt->duration / AV_TIME_BASE;
    if (declared > 0 && v->info.duration_s < 0.75 * declared - 0.5)
        return upm_errf(err, UPM_EBADDATA, "video: the %s frames cover %.2f s of the %.2f s the header declares (truncated?)",
                        v->info.codec, v->info.duration_s, declared);
    return 0;
}

static int build_index(upm_video *v, upm_err *err)
{
    i64vec frames = {0}, keys = {0}, key_dts = {0};
    int no_ts = 0, no_pts = 0;
    int r = index_packets(v, &frames, &keys, &key_dts, &no_ts, &no_pts, err);
    if (r < 0) {
        free(frames.a);
        free(keys.a);
        free(key_dts.a);
        return r;
    }
    if (frames.n > 1) /* a stream without packets leaves the arrays NULL, which qsort may not be given */
        qsort(frames.a, (size_t)frames.n, sizeof *frames.a, upm_video_cmp_i64);
    if (keys.n > 1) { /* keyframes are never reordered among themselves: both orders agree */
        qsort(keys.a, (size_t)keys.n, sizeof *keys.a, upm_video_cmp_i64);
        qsort(key_dts.a, (size_t)key_dts.n, sizeof *key_dts.a, upm_video_cmp_i64);
    }
    /* Decoding timestamps name frames only where no frame is reordered, which the container then does not say:
     * AVI stores none but them (MPEG-4 Part 2 with B-frames, MSVD's clips: the frame shown third is sent second
     * and the decoder's output carries no display time), so seeking by them returned neighbouring frames. */
    int unique = !no_ts && !no_pts;
    for (int64_t i = 1; unique && i < frames.n; i++)
        unique = frames.a[i] != frames.a[i - 1];
    v->info.num_frames = frames.n;
    v->info.num_keyframes = keys.n;
    set_timing(v, no_ts ? NULL : frames.a, frames.n);
    r = check_complete(v, err);
    if (r < 0 || !unique) { /* display timestamps name frames; without them only a straight decode can */
        free(frames.a);
        free(keys.a);
        free(key_dts.a);
        return r;
    }
    v->pts = frames.a;
    v->key_pts = keys.a;
    v->key_dts = key_dts.a;
    return 0;
}

static void output_size(upm_video *v)
{
    int w = v->info.width, h = v->info.height, s = v->opts.max_short_side, shrink = s > 0 && (w < h ? w : h) > s;
    v->info.out_width = !shrink ? w : w <= h ? s : (int)fmax(1.0, lrint((double)w * s / h));
    v->info.out_height = !shrink ? h : w > h ? s : (int)fmax(1.0, lrint((double)h * s / w));
}

int upm_video_open(const void *data, size_t n, const upm_video_opts *opts, upm_video **out, upm_err *err)
{
    *out = NULL;
    if (!data || n == 0)
        return upm_errf(err, UPM_EBADDATA, "video: empty sample (0 bytes)");
    upm_video *v = calloc(1, sizeof *v);
    if (!v)
        return upm_errf(err, UPM_ENOMEM, "video: out of memory");
    v->mb.data = data;
    v->mb.size = n;
    v->x264_build = -1;
    if (opts)
        v->opts = *opts;
    if (v->opts.max_side <= 0)
        v->opts.max_side = UPM_VIDEO_MAX_SIDE;
    if (v->opts.threads <= 0)
        v->opts.threads = 1;
    v->pkt = av_packet_alloc();
    v->frame = av_frame_alloc();
    int r = !v->pkt || !v->frame ? upm_errf(err, UPM_ENOMEM, "video: out of memory") : upm_video_demux_open(v, err);
    if (r == 0)
        r = choose_stream(v, err);
    if (r == 0)
        r = build_index(v, err);
    demux_close(v); /* decoding reopens from the start: the reference every path must agree with */
    if (r < 0) {
        upm_video_close(v);
        return r;
    }
    output_size(v);
    *out = v;
    return 0;
}

const upm_video_info *upm_video_get_info(const upm_video *v) { return &v->info; }

upm_video_stats upm_video_get_stats(const upm_video *v) { return v->stats; }

void upm_video_close(upm_video *v)
{
    if (!v)
        return;
    demux_close(v);
    av_packet_free(&v->pkt);
    av_frame_free(&v->frame);
    sws_freeContext(v->sws);
    av_free(v->scratch);
    avcodec_parameters_free(&v->par);
    free(v->pts);
    free(v->key_pts);
    free(v->key_dts);
    free(v);
}

void upm_video_frames_free(upm_video_frames *f)
{
    if (f)
        free(f->rgb), f->rgb = NULL;
}

int upm_video_probe(const void *data, size_t n, upm_video_info *info, upm_err *err)
{
    upm_video *v;
    int r = upm_video_open(data, n, NULL, &v, err);
    if (r < 0)
        return r;
    *info = v->info;
    upm_video_close(v);
    return 0;
}

int upm_video_decode_frames(const void *data, size_t n, const int64_t *indices, int T, const upm_video_opts *opts,
                            upm_video_frames *out, upm_err *err)
{
    upm_video *v;
    memset(out, 0, sizeof *out);
    int r = upm_video_open(data, n, opts, &v, err);
    if (r < 0)
        return r;
    r = upm_video_decode(v, indices, T, out, err);
    upm_video_close(v);
    return r;
}
