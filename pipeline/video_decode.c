/* Decoding the frames asked for (video.h, upm_video_decode): seek to the keyframe before each and decode forward,
 * leaving out the non-reference pictures nobody asked for, with a decode from the start as the fallback and the
 * reference; then RGB at the output size. Opening and indexing are video.c's. */
#include "video_internal.h"

#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
#include <stdlib.h>
#include <string.h>

/* Opens demuxer and decoder at the first packet. */
static int start_from_beginning(upm_video *v, upm_err *err)
{
    int r = upm_video_demux_open(v, err);
    if (r < 0)
        return r;
    /* A container whose header does not list its streams (FLV) makes them as packets arrive: read them as
     * the first open did, so the stream chosen then has the same index now (else a seek on the new context
     * would index a stream list that is still empty: a crash tools/fuzz found). */
    if (v->probed_streams && (r = avformat_find_stream_info(v->fmt, NULL)) < 0)
        return upm_video_ff_fail(err, "cannot read the stream parameters", r);
    if (v->stream >= (int)v->fmt->nb_streams || v->fmt->streams[v->stream]->codecpar->codec_id != v->par->codec_id)
        return upm_errf(err, UPM_EBADDATA, "video: the %s file's streams differ between two reads of it (damaged?)",
                        v->info.container);
    const AVCodec *codec = avcodec_find_decoder(v->par->codec_id);
    v->dec = avcodec_alloc_context3(codec);
    if (!v->dec)
        return upm_errf(err, UPM_ENOMEM, "video: out of memory for a decoder");
    r = avcodec_parameters_to_context(v->dec, v->par);
    v->dec->thread_count = v->opts.threads;
    v->dec->max_pixels = (int64_t)v->opts.max_side * v->opts.max_side;
    v->dec->pkt_timebase = v->tb;
    AVDictionary *o = NULL;
    if (r >= 0 && v->x264_build >= 0)
        r = av_dict_set_int(&o, "x264_build", v->x264_build, 0);
    if (r >= 0)
        r = avcodec_open2(v->dec, codec, &o);
    av_dict_free(&o);
    if (r < 0)
        return upm_video_ff_fail(err, "cannot open the decoder", r);
    for (unsigned i = 0; i < v->fmt->nb_streams; i++)
        if ((int)i != v->stream)
            v->fmt->streams[i]->discard = AVDISCARD_ALL;
    v->running = 1;
    v->eof_sent = 0;
    v->after_seek = 0;
    v->floor_pts = INT64_MIN;
    v->cur = -1;
    return 0;
}

/* Whether the packet with timestamp pts may be dropped if no other picture refers to it: it is none of the frames
 * asked for, and it comes before the last of them (a later call on this handle may continue from there and ask
 * for the frames after it). A non-reference picture (an H.264 slice with nal_ref_idc 0, an HEVC sub-layer
 * non-reference one: most B-frames of x264's and x265's defaults) is then not decoded at all, and nothing it
 * leaves out can change the frames that are decoded. */
static int skippable(const upm_video *v, int64_t pts)
{
    if (pts == AV_NOPTS_VALUE || pts >= v->want_pts[v->nwant - 1])
        return 0;
    for (int i = 0; i < v->nwant - 1; i++)
        if (v->want_pts[i] == pts)
            return 0;
    return 1;
}

/* The first packets after a seek (in v->pkt): 1 = decode from here (a keyframe), 0 = pass this packet over (it
 * comes before the keyframe sought, or the seek is retried), LOST = give up. Demuxers land differently:
 * MP4 and Matroska on the keyframe, or on an earlier one (fine: decoding starts there); MPEG-TS by decoding
 * timestamp, just after a keyframe whose display timestamp was asked, so the seek is retried once at the
 * keyframe's decoding timestamp and the packets before it are passed over. */
static int landing(upm_video *v)
{
    const AVPacket *p = v->pkt;
    int64_t pts = p->pts != AV_NOPTS_VALUE ? p->pts : p->dts, dts = p->dts != AV_NOPTS_VALUE ? p->dts : p->pts;
    if (pts == AV_NOPTS_VALUE)
        return LOST;
    if ((p->flags & AV_PKT_FLAG_KEY) && (pts <= v->seek_pts || dts <= v->seek_dts)) {
        v->after_seek = 0;
        v->floor_pts = pts;
        return 1;
    }
    if (dts < v->seek_dts)
        return 0;
    if (v->reseeked || av_seek_frame(v->fmt, v->stream, v->seek_dts, AVSEEK_FLAG_BACKWARD) < 0)
        return LOST;
    v->reseeked = 1;
    avcodec_flush_buffers(v->dec);
    return 0;
}

/* Next decoded frame into v->frame: 1 = a frame, 0 = end of stream, LOST (seek path only: after a seek no
 * keyframe to start from, see landing), < 0 = error. */
static int next_frame(upm_video *v, upm_err *err)
{
    for (;;) {
        int r = avcodec_receive_frame(v->dec, v->frame);
        if (r == 0) {
            v->stats.frames_decoded++;
            return 1;
        }
        if (r == AVERROR_EOF)
            return 0;
        if (r != AVERROR(EAGAIN) || v->eof_sent)
            return upm_video_ff_fail(err, "decoding a frame", r);
        r = av_read_frame(v->fmt, v->pkt);
        if (r == AVERROR_EOF) {
            v->eof_sent = 1;
            r = avcodec_send_packet(v->dec, NULL);
        } else if (r < 0) {
            return upm_video_ff_fail(err, "reading a packet", r);
        } else if (v->pkt->stream_index != v->stream) {
            av_packet_unref(v->pkt);
            continue;
        } else {
            if (v->after_seek) {
                int r2 = landing(v);
                if (r2 != 1) {
                    av_packet_unref(v->pkt);
                    if (r2 == 0)
                        continue; /* a packet before the keyframe sought, or a retried seek */
                    return r2;
                }
            }
            if (v->want_pts)
                v->dec->skip_frame = skippable(v, v->pkt->pts) ? AVDISCARD_NONREF : AVDISCARD_DEFAULT;
            r = avcodec_send_packet(v->dec, v->pkt);
            av_packet_unref(v->pkt);
        }
        if (r < 0)
            return upm_video_ff_fail(err, "decoding a packet", r);
    }
}

/* Converts v->frame to RGB24 at the output size into dst (tightly packed rows). */
static int store_frame(upm_video *v, uint8_t *dst, upm_err *err)
{
    const AVFrame *f = v->frame;
    int ow = v->info.out_width, oh = v->info.out_height;
    if (f->format < 0 || upm_video_check_size(v, f->width, f->height, err) < 0)
        return upm_errf(err, UPM_EBADDATA, "video: decoded a %dx%d frame of format %d that cannot be used", f->width,
                        f->height, f->format);
    const AVPixFmtDescriptor *d = av_pix_fmt_desc_get(f->format);
    int jpeg = d && strncmp(d->name, "yuvj", 4) == 0;
    sws_key key = {f->width, f->height, f->format, f->colorspace, f->color_range == AVCOL_RANGE_JPEG || jpeg};
    if (!v->sws || memcmp(&key, &v->sws_for, sizeof key) != 0) {
        sws_freeContext(v->sws);
        int flags = (ow != f->width || oh != f->height ? SWS_AREA : SWS_BILINEAR) | SWS_ACCURATE_RND;
        v->sws = sws_getContext(f->width, f->height, f->format, ow, oh, AV_PIX_FMT_RGB24, flags, NULL, NULL, NULL);
        if (!v->sws)
            return upm_errf(err, UPM_EBADDATA, "video: cannot convert %s %dx%d frames to RGB",
                            d ? d->name : "?", f->width, f->height);
        /* Honour the stream's matrix (BT.709 for HD) and range; BT.601 when unspecified. */
        int cs = key.cs == AVCOL_SPC_UNSPECIFIED || key.cs == AVCOL_SPC_RGB ? SWS_CS_DEFAULT : key.cs;
        (void)sws_setColorspaceDetails(v->sws, sws_getCoefficients(cs), key.full, sws_getCoefficients(SWS_CS_DEFAULT),
                                       1, 0, 1 << 16, 1 << 16);
        v->sws_for = key;
    }
    if (!v->scratch) {
        v->scratch_stride = (ow * 3 + 63) & ~63;
        v->scratch = av_malloc((size_t)v->scratch_stride * (size_t)oh);
        if (!v->scratch)
            return upm_errf(err, UPM_ENOMEM, "video: out of memory for a %dx%d frame", ow, oh);
    }
    uint8_t *planes[4] = {v->scratch, NULL, NULL, NULL};
    int strides[4] = {v->scratch_stride, 0, 0, 0};
    if (sws_scale(v->sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, planes, strides) != oh)
        return upm_errf(err, UPM_EBADDATA, "video: converting a %dx%d frame to RGB failed", f->width, f->height);
    for (int y = 0; y < oh; y++)
        memcpy(dst + (size_t)y * ow * 3, v->scratch + (size_t)y * v->scratch_stride, (size_t)ow * 3);
    return 0;
}

/* Index of timestamp ts among the frames, or -1. */
static int64_t frame_of_pts(const upm_video *v, int64_t ts)
{
    const int64_t *hit = bsearch(&ts, v->pts, (size_t)v->info.num_frames, sizeof ts, upm_video_cmp_i64);
    return hit ? hit - v->pts : -1;
}

/* The last keyframe timestamp <= ts (INT64_MIN if none), its decoding timestamp, and the index of the first frame
 * at or after it. */
static int64_t keyframe_before(const upm_video *v, int64_t ts, int64_t *dts, int64_t *frame)
{
    int64_t key = INT64_MIN;
    for (int64_t i = 0; i < v->info.num_keyframes && v->key_pts[i] <= ts; i++) /* few keyframes: linear */
        key = v->key_pts[i], *dts = v->key_dts[i];
    int64_t f = 0;
    while (key != INT64_MIN && f < v->info.num_frames && v->pts[f] < key)
        f++;
    *frame = f;
    return key;
}

typedef struct want { int64_t index; int slot; /* the first output slot asking for it */ } want;

/* Moves to a point from which frame k can be decoded: continue when the decoder is already between
 * k's keyframe and k, decode from the start when k's keyframe is the first, else seek. */
static int position_for(upm_video *v, int64_t k, upm_err *err)
{
    int64_t key_frame, key_dts = INT64_MIN;
    int64_t key = keyframe_before(v, v->pts[k], &key_dts, &key_frame);
    if (v->running && v->cur < k && v->cur >= key_frame - 1 && !v->after_seek)
        return 0;
    if (key == INT64_MIN || key_frame == 0)
        return start_from_beginning(v, err);
    if (!v->running) {
        int r = start_from_beginning(v, err);
        if (r < 0)
            return r;
    }
    v->stats.seeks++;
    if (av_seek_frame(v->fmt, v->stream, key, AVSEEK_FLAG_BACKWARD) < 0)
        return LOST;
    avcodec_flush_buffers(v->dec);
    v->eof_sent = 0;
    v->after_seek = 1;
    v->seek_pts = key, v->seek_dts = key_dts, v->reseeked = 0;
    v->floor_pts = INT64_MIN;
    v->cur = -1;
    return 0;
}

/* The decoder concealed errors (e.g. missing references, or state it would have learnt from
 * packets before the seek point). */
static int damaged(const AVFrame *f) { return (f->flags & AV_FRAME_FLAG_CORRUPT) || f->decode_error_flags != 0; }

/* decode_seeking's loop over the asked frames, in ascending order. */
static int decode_seeking_frames(upm_video *v, const want *w, int m, uint8_t *out, size_t fb, upm_err *err)
{
    for (int j = 0; j < m; j++) {
        int64_t k = w[j].index;
        int r = position_for(v, k, err);
        while (r == 0 && v->cur < k) {
            r = next_frame(v, err);
            if (r != 1) { /* end of stream or a decoding error here may be the seek's doing */
                r = r == UPM_ENOMEM ? r : LOST;
                break;
            }
            r = 0;
            int64_t ts = v->frame->best_effort_timestamp;
            if (ts != AV_NOPTS_VALUE && ts < v->floor_pts)
                continue; /* a leading picture of an open GOP: its references precede the keyframe */
            int64_t idx = ts == AV_NOPTS_VALUE ? -1 : frame_of_pts(v, ts);
            if (idx < 0 || idx <= v->cur || idx > k || damaged(v->frame))
                r = LOST; /* unknown or repeated timestamp, overshoot, or damage the seek may have caused */
            else if ((v->cur = idx) == k)
                r = store_frame(v, out + (size_t)w[j].slot * fb, err);
        }
        if (r != 0) {
            v->running = 0;
            return r;
        }
    }
    return 0;
}

/* Seek path: 0 = all frames stored, LOST = give up (caller decodes from the start), < 0 = error. Frames map
 * to indices by timestamp here, so the decoder may leave out the unasked non-reference pictures (H.264 and HEVC,
 * where the bitstream marks them: nal_ref_idc 0, the sub-layer non-reference NAL types; want_pts). */
static int decode_seeking(upm_video *v, const want *w, int m, uint8_t *out, size_t fb, upm_err *err)
{
    int64_t *want_pts = NULL;
    if ((v->par->codec_id == AV_CODEC_ID_H264 || v->par->codec_id == AV_CODEC_ID_HEVC) && !v->opts.no_skip) {
        want_pts = malloc((size_t)m * sizeof *want_pts);
        if (!want_pts)
            return upm_errf(err, UPM_ENOMEM, "video: out of memory");
        for (int j = 0; j < m; j++)
            want_pts[j] = v->pts[w[j].index];
    }
    v->want_pts = want_pts;
    v->nwant = m;
    int r = decode_seeking_frames(v, w, m, out, fb, err);
    v->want_pts = NULL;
    if (v->dec) /* the straight path after a fallback counts every frame */
        v->dec->skip_frame = AVDISCARD_DEFAULT;
    free(want_pts);
    return r;
}

/* Reference path: decode from the first packet and count frames. */
static int decode_straight(upm_video *v, const want *w, int m, uint8_t *out, size_t fb, upm_err *err)
{
    int r = start_from_beginning(v, err);
    for (int j = 0; r == 0 && j < m;) {
        r = next_frame(v, err);
        if (r == 0)
            r = upm_errf(err, UPM_EBADDATA, "video: the %s stream ended after %lld of %lld frames (truncated?)",
                         v->info.codec, (long long)(v->cur + 1), (long long)v->info.num_frames);
        if (r < 0)
            break;
        v->cur++;
        if (v->pts && (v->cur >= v->info.num_frames || v->frame->best_effort_timestamp != v->pts[v->cur]))
            v->stats.pts_mismatches++;
        r = 0;
        if (j < m && w[j].index == v->cur && damaged(v->frame)) /* a straight decode is the truth: the data is bad */
            r = upm_errf(err, UPM_EBADDATA, "video: %s frame %lld decoded with errors (damaged data)", v->info.codec,
                         (long long)v->cur);
        for (; r == 0 && j < m && w[j].index == v->cur; j++)
            r = store_frame(v, out + (size_t)w[j].slot * fb, err);
    }
    if (r < 0)
        v->running = 0;
    return r;
}

static int cmp_want(const void *a, const void *b)
{
    const want *x = a, *y = b;
    return x->index != y->index ? (x->index > y->index) - (x->index < y->index) : (x->slot > y->slot) - (x->slot < y->slot);
}

int upm_video_decode(upm_video *v, const int64_t *indices, int T, upm_video_frames *out, upm_err *err)
{
    memset(out, 0, sizeof *out);
    memset(&v->stats, 0, sizeof v->stats);
    if (T <= 0)
        return upm_errf(err, UPM_EINVAL, "video: %d frames asked", T);
    for (int t = 0; t < T; t++)
        if (indices[t] < 0 || indices[t] >= v->info.num_frames)
            return upm_errf(err, UPM_EINVAL, "video: frame %lld asked of a %lld-frame video", (long long)indices[t],
                            (long long)v->info.num_frames);
    size_t fb = (size_t)v->info.out_width * (size_t)v->info.out_height * 3;
    want *w = malloc((size_t)T * sizeof *w);
    uint8_t *rgb = malloc((size_t)T * fb);
    if (!w || !rgb) {
        free(w);
        free(rgb);
        return upm_errf(err, UPM_ENOMEM, "video: out of memory for %d frames of %dx%d", T, v->info.out_width,
                        v->info.out_height);
    }
    for (int t = 0; t < T; t++)
        w[t] = (want){indices[t], t};
    qsort(w, (size_t)T, sizeof *w, cmp_want);
    int m = 0; /* unique frames, each stored at its first slot */
    for (int t = 0; t < T; t++)
        if (m == 0 || w[m - 1].index != w[t].index)
            w[m++] = w[t];
    int r = LOST;
    if (!v->opts.no_seek && v->pts)
        r = decode_seeking(v, w, m, rgb, fb, err);
    if (r == LOST) {
        v->stats.fallbacks += !v->opts.no_seek && v->pts;
        r = decode_straight(v, w, m, rgb, fb, err);
    }
    if (r == 0) /* repeated indices copy their first slot */
        for (int t = 0, j = 0; t < T; t++) {
            for (j = 0; w[j].index != indices[t]; j++)
                ;
            if (w[j].slot != t)
                memcpy(rgb + (size_t)t * fb, rgb + (size_t)w[j].slot * fb, fb);
        }
    free(w);
    if (r < 0) {
        free(rgb);
        return r;
    }
    *out = (upm_video_frames){T, v->info.out_width, v->info.out_height, rgb};
    return 0;
}
