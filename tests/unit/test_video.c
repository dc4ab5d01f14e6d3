/* Unit test for pipeline/video.c on the real clips of the test data (augmentation: test_augment_video.c):
 * probe figures across codecs and containers, seek-based decoding equal byte for byte to a straight
 * decode and ffmpeg's own frames, the frame sampling policy, and bad inputs. */
#include <libavformat/avformat.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "video.h"

#include "video_test_util.h"

/* A clip's name in the output: its path under the test data's video/, or its file name. */
static const char *clip_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return path[0] == '/' ? (slash ? slash + 1 : path) : path + 6;
}

/* Clips made for the test by Debian's ffmpeg from the cockatoo video (6 s at 144 lines), for what the test data
 * lacks: HEVC (libx265, a keyframe every 40 frames, B-frames at x265's defaults, half of them non-reference);
 * MPEG-4 Part 2 with B-frames in AVI under the XviD tag (the layout of MSVD's clips), and H.264 in AVI. AVI keeps
 * decoding timestamps only, so the container does not say which frame is shown when. And H.264 with B-frames in
 * MPEG-TS, where FFmpeg seeks by decoding timestamp and lands just after the keyframe asked for. */
static char clip_dir[256], hevc_clip[300], xvid_clip[300], h264avi_clip[300], ts_clip[300];

static void make_clip(char *path, size_t size, const char *name, const char *codec_args)
{
    snprintf(path, size, "%s/%s", clip_dir, name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -t 6 -i '%s/video/cockatoo.mp4' -vf scale=-2:144 -an %s "
             "-y '%s'", testdata, codec_args, path);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_video: '%s' failed (Debian's ffmpeg makes the test's own clips: tools/setup)\n", cmd);
        exit(1);
    }
}

static void make_clips(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(clip_dir, sizeof clip_dir, "%s/upmoe-test-video-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(clip_dir)) {
        fprintf(stderr, "test_video: cannot make a temporary folder %s\n", clip_dir);
        exit(1);
    }
    make_clip(hevc_clip, sizeof hevc_clip, "hevc.mp4", "-c:v libx265 -x265-params log-level=error:keyint=40");
    make_clip(xvid_clip, sizeof xvid_clip, "xvid.avi", "-c:v mpeg4 -vtag XVID -bf 2 -g 30 -q:v 4");
    make_clip(h264avi_clip, sizeof h264avi_clip, "h264.avi", "-c:v libx264 -g 30");
    make_clip(ts_clip, sizeof ts_clip, "h264.ts", "-c:v libx264 -bf 3 -g 30");
}

static void remove_clips(void)
{
    remove(hevc_clip);
    remove(xvid_clip);
    remove(h264avi_clip);
    remove(ts_clip);
    rmdir(clip_dir);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- frame sampling policy ---- */

static int ascending(const int64_t *a, int n, int strict)
{
    for (int i = 1; i < n; i++)
        if (strict ? a[i] <= a[i - 1] : a[i] < a[i - 1])
            return 0;
    return 1;
}

static void test_policy(void)
{
    int64_t a[8], b[8];
    upm_err err;
    /* evaluation: segment centres of 100 frames, no randomness */
    CHECK(upm_video_sample_indices(100, 30, 8, 0, 0, NULL, a, &err) == 0);
    const int64_t centres[8] = {6, 18, 31, 43, 56, 68, 81, 93};
    CHECK(memcmp(a, centres, sizeof a) == 0);
    /* evaluation's temporal views: 320 frames, 8 segments of 40, 4 clips: clip k's offset in each segment is
     * (k + 1/2) / 4 of 40 frames = 10 k + 5; one clip is the segment centres above */
    for (int k = 0; k < 4; k++) {
        CHECK(upm_video_eval_indices(320, 8, k, 4, a, &err) == 0);
        for (int i = 0; i < 8; i++)
            CHECK(a[i] == 40 * i + 10 * k + 5);
    }
    CHECK(upm_video_eval_indices(100, 8, 0, 1, a, &err) == 0 && memcmp(a, centres, sizeof a) == 0);
    CHECK(upm_video_eval_indices(100, 8, 2, 2, a, &err) == UPM_EINVAL);
    CHECK(upm_video_eval_indices(100, 8, 0, 0, a, &err) == UPM_EINVAL);
    CHECK(upm_video_eval_indices(3, 8, 1, 2, a, &err) == 0 && ascending(a, 8, 0) && a[7] == 2);
    CHECK(upm_video_sample_indices(5, 30, 8, 0, 0, NULL, a, &err) == 0); /* fewer frames than T: repeats */
    CHECK(ascending(a, 8, 0) && a[0] == 0 && a[7] == 4);
    for (int64_t n = 8; n < 400; n += 13) { /* uniform: gaps differ by at most one frame */
        CHECK(upm_video_sample_indices(n, 25, 8, 0, 0, NULL, a, &err) == 0);
        int64_t lo = n, hi = 0;
        for (int i = 1; i < 8; i++) {
            lo = a[i] - a[i - 1] < lo ? a[i] - a[i - 1] : lo;
            hi = a[i] - a[i - 1] > hi ? a[i] - a[i - 1] : hi;
        }
        CHECK(ascending(a, 8, 1) && a[0] == n / 16 && a[7] < n && hi - lo <= 1);
    }
    /* training, room to move (cockatoo: 280 frames at 20 fps): stride 32*20/30 = 21.33, span 150 */
    int64_t min_start = 1000, max_start = -1;
    for (uint64_t seed = 0; seed < 2000; seed++) {
        upm_rng r = upm_rng_stream(seed, UPM_RNG_FRAMES, 0, 0, 0);
        CHECK(upm_video_sample_indices(280, 20, 8, 0, 1, &r, a, &err) == 0);
        for (int i = 1; i < 8; i++)
            CHECK(a[i] - a[i - 1] == 21 || a[i] - a[i - 1] == 22);
        CHECK(a[7] - a[0] == 149 && a[0] >= 0 && a[7] < 280);
        min_start = a[0] < min_start ? a[0] : min_start;
        max_start = a[0] > max_start ? a[0] : max_start;
    }
    CHECK(min_start <= 3 && max_start >= 127 && max_start <= 130);
    /* determinism by seed, and seeds differ */
    upm_rng r1 = upm_rng_stream(7, UPM_RNG_FRAMES, 1, 2, 3), r2 = upm_rng_stream(7, UPM_RNG_FRAMES, 1, 2, 3);
    CHECK(upm_video_sample_indices(280, 20, 8, 0, 1, &r1, a, &err) == 0);
    CHECK(upm_video_sample_indices(280, 20, 8, 0, 1, &r2, b, &err) == 0);
    CHECK(memcmp(a, b, sizeof a) == 0);
    int differ = 0;
    for (uint64_t seed = 8; seed < 18; seed++) {
        upm_rng r = upm_rng_stream(seed, UPM_RNG_FRAMES, 1, 2, 3);
        CHECK(upm_video_sample_indices(280, 20, 8, 0, 1, &r, b, &err) == 0);
        differ += memcmp(a, b, sizeof a) != 0;
    }
    CHECK(differ >= 9);
    /* too short for the interval (the 5.6 s clip, 166 frames at 30 fps): the stride shrinks, whole clip */
    upm_rng r = upm_rng_stream(1, UPM_RNG_FRAMES, 0, 0, 0);
    CHECK(upm_video_sample_indices(166, 30, 8, 0, 1, &r, a, &err) == 0);
    const int64_t whole[8] = {0, 23, 47, 70, 94, 117, 141, 165};
    CHECK(memcmp(a, whole, sizeof a) == 0);
    CHECK(upm_video_sample_indices(36, 29.97, 8, 0, 1, &r, a, &err) == 0); /* realshort: stride 5 */
    for (int i = 0; i < 8; i++)
        CHECK(a[i] == 5 * i);
    CHECK(upm_video_sample_indices(5, 30, 8, 0, 1, &r, a, &err) == 0); /* fewer frames than T */
    const int64_t rep[8] = {0, 0, 1, 1, 2, 3, 3, 4};
    CHECK(memcmp(a, rep, sizeof a) == 0);
    CHECK(upm_video_sample_indices(1000, 30, 8, 4, 1, &r, a, &err) == 0); /* a custom interval */
    for (int i = 1; i < 8; i++)
        CHECK(a[i] - a[i - 1] == 4);
    CHECK(upm_video_sample_indices(1, 30, 1, 0, 1, &r, a, &err) == 0 && a[0] == 0);
    CHECK(upm_video_sample_indices(0, 30, 8, 0, 0, NULL, a, &err) == UPM_EINVAL && err.msg[0]);
    CHECK(upm_video_sample_indices(10, 30, 0, 0, 0, NULL, a, &err) == UPM_EINVAL);
    CHECK(upm_video_sample_indices(100, 30, 8, 0, 1, NULL, a, &err) == UPM_EINVAL);
}

/* ---- probing across codecs ---- */

static const struct codec_clip {
    const char *path, *container, *codec;
    int w, h;
} codec_clips[] = {
    {"video/codecs/mp4.mp4", "mov", "h264", 560, 320}, {"video/codecs/mov.mov", "mov", "h264", 560, 320},
    {"video/codecs/webm.webm", "matroska", "vp8", 560, 320}, {"video/codecs/ogg.ogv", "ogg", "theora", 560, 320},
    {"video/codecs/flv.flv", "flv", "flv1", 320, 240}, {"video/codecs/3gp.3gp", "mov", "h263", 352, 288},
};
#define N_CODEC_CLIPS (int)(sizeof codec_clips / sizeof codec_clips[0])

static void test_probe(void)
{
    upm_err err;
    double dmin = 1e9, dmax = 0;
    printf("%-24s %-9s %-7s %9s %6s %5s %7s %8s\n", "clip", "container", "codec", "size", "frames", "keys", "fps",
           "dur(s)");
    for (int i = 0; i < N_CODEC_CLIPS; i++) {
        const struct codec_clip *c = &codec_clips[i];
        bytes b = slurp(c->path);
        upm_video_info in;
        int r = upm_video_probe(b.p, b.n, &in, &err);
        CHECK(r == 0);
        if (r != 0) {
            fprintf(stderr, "%s: %s\n", c->path, err.msg);
            free(b.p);
            continue;
        }
        printf("%-24s %-9s %-7s %4dx%-4d %6lld %5lld %7.3f %8.3f\n", clip_name(c->path), in.container, in.codec, in.width,
               in.height, (long long)in.num_frames, (long long)in.num_keyframes, in.fps, in.duration_s);
        CHECK(strcmp(in.container, c->container) == 0 && strcmp(in.codec, c->codec) == 0);
        CHECK(in.width == c->w && in.height == c->h && in.out_width == c->w && in.out_height == c->h);
        CHECK(in.num_keyframes >= 1 && in.num_keyframes <= in.num_frames);
        CHECK(fabs(in.duration_s - in.num_frames / in.fps) < 1e-9);
        dmin = in.duration_s < dmin ? in.duration_s : dmin;
        dmax = in.duration_s > dmax ? in.duration_s : dmax;
        /* the 30 fps encodings agree on the count; FLV was encoded at 25 fps, 3GP at 15 */
        if (fabs(in.fps - 30) < 0.1)
            CHECK(llabs(in.num_frames - 166) <= 2);
        else
            CHECK((strcmp(c->codec, "flv1") == 0 && llabs(in.num_frames - 139) <= 2 && fabs(in.fps - 25) < 0.1) ||
                  (strcmp(c->codec, "h263") == 0 && llabs(in.num_frames - 83) <= 2 && fabs(in.fps - 15) < 0.1));
        free(b.p);
    }
    /* durations agree across all six within two frames of the slowest rate (15 fps) */
    CHECK(dmax - dmin < 2.0 / 15 && dmin > 5.4 && dmax < 5.7);

    bytes b = slurp("video/cockatoo.mp4");
    upm_video_info in;
    CHECK(upm_video_probe(b.p, b.n, &in, &err) == 0);
    CHECK(in.width == 1280 && in.height == 720 && in.num_frames == 280 && fabs(in.fps - 20) < 1e-6 &&
          fabs(in.duration_s - 14) < 1e-6 && strcmp(in.codec, "h264") == 0);
    free(b.p);
    b = slurp("video/realshort.mp4");
    CHECK(upm_video_probe(b.p, b.n, &in, &err) == 0);
    CHECK(in.width == 320 && in.height == 240 && in.num_frames == 36 && fabs(in.duration_s - 1.2) < 0.01);
    free(b.p);
}

/* ---- seek-based decoding equals a straight decode ---- */

typedef struct clip_stats {
    int calls, seeks, fallbacks;
    int64_t decoded, asked;
} clip_stats;

/* Decodes `idx` through handle v and compares every frame with the reference frames. */
static void check_against(upm_video *v, const uint8_t *ref, size_t fb, const int64_t *idx, int T, clip_stats *cs,
                          const char *name)
{
    upm_err err;
    upm_video_frames f;
    int r = upm_video_decode(v, idx, T, &f, &err);
    CHECK(r == 0);
    if (r != 0) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        return;
    }
    int bad = 0;
    for (int t = 0; t < T; t++)
        bad += memcmp(f.rgb + (size_t)t * fb, ref + (size_t)idx[t] * fb, fb) != 0;
    CHECK(bad == 0);
    if (bad)
        fprintf(stderr, "%s: %d of %d frames differ from the straight decode (first index %lld)\n", name, bad, T,
                (long long)idx[0]);
    upm_video_stats s = upm_video_get_stats(v);
    cs->calls++;
    cs->seeks += s.seeks;
    cs->fallbacks += s.fallbacks;
    cs->decoded += s.frames_decoded;
    cs->asked += T;
    upm_video_frames_free(&f);
}

/* every: the step of the backwards walk over single frames (0: 1 with several keyframes, where
 * each step seeks; 6 with one keyframe, where each step restarts from the first frame). seeks: the
 * container gives display timestamps, so that with several keyframes the walk must seek (AVI: it must not). */
static void test_seek_equals_straight(const char *path, int short_side, int every, int seeks)
{
    upm_err err;
    bytes b = slurp(path);
    upm_video_opts ref_opts = {.max_short_side = short_side, .no_seek = 1}, opts = {.max_short_side = short_side};
    upm_video *v;
    if (upm_video_open(b.p, b.n, &ref_opts, &v, &err) != 0) {
        CHECK(!"open");
        fprintf(stderr, "%s: %s\n", path, err.msg);
        free(b.p);
        return;
    }
    const upm_video_info in = *upm_video_get_info(v);
    int64_t n = in.num_frames;
    int64_t *all = malloc((size_t)n * sizeof *all);
    for (int64_t i = 0; i < n; i++)
        all[i] = i;
    upm_video_frames ref;
    double t0 = now();
    CHECK(upm_video_decode(v, all, (int)n, &ref, &err) == 0);
    double dt = now() - t0;
    upm_video_stats rs = upm_video_get_stats(v);
    CHECK(rs.seeks == 0 && rs.frames_decoded == n && rs.pts_mismatches == 0); /* the index names the same frames */
    upm_video_close(v);
    size_t fb = (size_t)in.out_width * in.out_height * 3;

    clip_stats cs = {0};
    CHECK(upm_video_open(b.p, b.n, &opts, &v, &err) == 0); /* one handle for all: exercises continuing */
    int64_t idx[16];
    for (uint64_t seed = 0; seed < 4; seed++) { /* train policy, several seeds; then the eval policy */
        upm_rng r = upm_rng_stream(seed, UPM_RNG_FRAMES, 0, 0, 0);
        CHECK(upm_video_sample_indices(n, in.fps, 8, 0, 1, &r, idx, &err) == 0);
        check_against(v, ref.rgb, fb, idx, 8, &cs, path);
        upm_video *fresh;
        CHECK(upm_video_open(b.p, b.n, &opts, &fresh, &err) == 0);
        check_against(fresh, ref.rgb, fb, idx, 8, &cs, path);
        upm_video_close(fresh);
    }
    CHECK(upm_video_sample_indices(n, in.fps, 8, 0, 0, NULL, idx, &err) == 0);
    check_against(v, ref.rgb, fb, idx, 8, &cs, path);
    const int64_t odd[7] = {n - 1, 0, n / 2, n / 2, n - 2, 1, n / 3}; /* any order, repeats */
    check_against(v, ref.rgb, fb, odd, 7, &cs, path);
    upm_rng r = upm_rng_stream(99, UPM_RNG_FRAMES, 0, 0, 0);
    for (int i = 0; i < 16; i++)
        idx[i] = (int64_t)upm_rng_below(&r, (uint64_t)n);
    check_against(v, ref.rgb, fb, idx, 16, &cs, path);
    if (every <= 0)
        every = in.num_keyframes > 1 ? 1 : 6;
    for (int64_t k = n - 1; k >= 0; k -= every) /* single frames backwards: a seek (or restart) each */
        check_against(v, ref.rgb, fb, &k, 1, &cs, path);
    printf("%-24s %4lld frames %3lld keys: straight %6.1f frames/s at %dx%d; seek path: %d calls, %d seeks, "
           "%d fallbacks, %.1f frames decoded per frame asked; %.1f s\n",
           clip_name(path), (long long)n, (long long)in.num_keyframes, n / dt, in.out_width, in.out_height, cs.calls,
           cs.seeks, cs.fallbacks, (double)cs.decoded / cs.asked, now() - t0);
    if (in.num_keyframes > 1) /* with several keyframes, going backwards seeks instead of restarting */
        CHECK(seeks ? cs.seeks > 0 : cs.seeks == 0);
    CHECK(cs.fallbacks == 0); /* and every seek lands where decoding can start (MPEG-TS: after a retry) */
    upm_video_close(v);
    upm_video_frames_free(&ref);
    free(all);
    free(b.p);
}

/* Frame k is the k-th frame ffmpeg's own program shows: its rawvideo output (the same swscale conversion: bilinear,
 * accurate rounding) against upm_video_decode with the default options, for the training policy's frames of several
 * seeds, the evaluation policy's, and single frames walking backwards, each on a fresh handle and on one that
 * continues. An outside count of the frames: the bug it guards against returned a neighbouring frame (AVI with
 * B-frames, seeking by decoding timestamps), which a comparison with our own straight decode alone did not show
 * until that decode was compared with the seek path. */
static void test_frames_match_ffmpeg(const char *rel)
{
    char path[1024], cmd[1400];
    snprintf(path, sizeof path, "%s/%s", rel[0] == '/' ? "" : testdata, rel);
    upm_err err;
    bytes b = slurp(rel);
    upm_video *v;
    if (upm_video_open(b.p, b.n, NULL, &v, &err) != 0) {
        CHECK(!"open");
        fprintf(stderr, "%s: %s\n", rel, err.msg);
        free(b.p);
        return;
    }
    const upm_video_info in = *upm_video_get_info(v);
    size_t fb = (size_t)in.out_width * in.out_height * 3;
    snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -i '%s' -map 0:v:0 -sws_flags bilinear+accurate_rnd "
             "-f rawvideo -pix_fmt rgb24 -", path);
    FILE *p = popen(cmd, "r");
    uint8_t *ref = malloc((size_t)(in.num_frames + 1) * fb);
    int64_t got = 0;
    while (p && ref && got <= in.num_frames && fread(ref + (size_t)got * fb, 1, fb, p) == fb)
        got++;
    CHECK(p && pclose(p) == 0);
    CHECK(got == in.num_frames); /* ffmpeg shows as many frames as the index counts */
    int64_t idx[8], asked = 0, bad = 0;
    for (int pass = 0; got == in.num_frames && pass < 8; pass++) {
        upm_rng r = upm_rng_stream((uint64_t)pass, UPM_RNG_FRAMES, 0, 0, 0);
        int T = pass < 7 ? 8 : 1;
        CHECK(upm_video_sample_indices(in.num_frames, in.fps, 8, 0, pass < 6, &r, idx, &err) == 0);
        if (pass == 7)
            idx[0] = in.num_frames - 1;
        upm_video *fresh = NULL;
        CHECK(upm_video_open(b.p, b.n, NULL, &fresh, &err) == 0);
        for (int h = 0; h < 2; h++) {
            upm_video_frames f;
            if (upm_video_decode(h ? fresh : v, idx, T, &f, &err) != 0) {
                CHECK(!"decode");
                fprintf(stderr, "%s: %s\n", rel, err.msg);
                continue;
            }
            for (int t = 0; t < T; t++)
                bad += memcmp(f.rgb + (size_t)t * fb, ref + (size_t)idx[t] * fb, fb) != 0;
            asked += T;
            upm_video_frames_free(&f);
        }
        upm_video_close(fresh);
    }
    for (int64_t k = in.num_frames - 1; got == in.num_frames && k >= 0; k -= 7) { /* backwards: a seek each */
        upm_video_frames f;
        CHECK(upm_video_decode(v, &k, 1, &f, &err) == 0);
        bad += f.rgb && memcmp(f.rgb, ref + (size_t)k * fb, fb) != 0;
        asked++;
        upm_video_frames_free(&f);
    }
    CHECK(bad == 0);
    printf("ffmpeg %-20s %s: %lld frames shown by ffmpeg, %lld asked, %lld differ\n", clip_name(rel), in.codec,
           (long long)got, (long long)asked, (long long)bad);
    upm_video_close(v);
    free(ref);
    free(b.p);
}

/* The seek path leaves out the H.264 and HEVC non-reference pictures that were not asked for: mov.mov is x264 with
 * B-frames (119 of its 166 pictures), one keyframe; the HEVC clip is x265's. The last frame alone must decode to the
 * same bytes as with every picture decoded (no_skip), from fewer pictures; a clip without B-frames (mp4.mp4) and a
 * VP8 one decode every picture either way. Then the training policy's 8 frames: the same bytes, fewer pictures. */
static void test_skip_nonref(void)
{
    const struct { const char *path; int fewer; } clips[] = {
        {"video/codecs/mov.mov", 1}, {hevc_clip, 1}, {"video/codecs/mp4.mp4", 0}, {"video/codecs/webm.webm", 0}};
    for (int c = 0; c < 4; c++) {
        upm_err err;
        bytes b = slurp(clips[c].path);
        upm_video_opts skip = {0}, all = {.no_skip = 1};
        upm_video *vs, *va;
        CHECK(upm_video_open(b.p, b.n, &skip, &vs, &err) == 0);
        CHECK(upm_video_open(b.p, b.n, &all, &va, &err) == 0);
        const upm_video_info in = *upm_video_get_info(vs); /* vs is reopened below */
        int64_t last = in.num_frames - 1, idx[8];
        upm_rng r = upm_rng_stream(7, UPM_RNG_FRAMES, 0, 0, 0);
        CHECK(upm_video_sample_indices(in.num_frames, in.fps, 8, 0, 1, &r, idx, &err) == 0);
        for (int pass = 0; pass < 2; pass++) {
            const int64_t *ask = pass ? idx : &last;
            int T = pass ? 8 : 1;
            upm_video_frames fs, fa;
            CHECK(upm_video_decode(vs, ask, T, &fs, &err) == 0);
            int64_t ds = upm_video_get_stats(vs).frames_decoded;
            CHECK(upm_video_decode(va, ask, T, &fa, &err) == 0);
            int64_t da = upm_video_get_stats(va).frames_decoded;
            CHECK(memcmp(fs.rgb, fa.rgb, (size_t)T * fs.width * fs.height * 3) == 0);
            CHECK(upm_video_get_stats(vs).fallbacks == 0);
            CHECK(clips[c].fewer ? ds < da : ds == da);
            if (!pass && in.num_keyframes == 1) /* without skipping, the last frame alone takes every picture */
                CHECK(da == in.num_frames);
            printf("skip %-22s %s: %lld pictures decoded, %lld without skipping\n", clip_name(clips[c].path),
                   pass ? "8 training frames" : "last frame", (long long)ds, (long long)da);
            upm_video_frames_free(&fs);
            upm_video_frames_free(&fa);
            /* a fresh pair of handles for the second pass, so that it starts from the keyframe too */
            upm_video_close(vs);
            upm_video_close(va);
            CHECK(upm_video_open(b.p, b.n, &skip, &vs, &err) == 0);
            CHECK(upm_video_open(b.p, b.n, &all, &va, &err) == 0);
        }
        upm_video_close(vs);
        upm_video_close(va);
        free(b.p);
    }
}

/* Decoding speed at native size, single thread: the clip in chunks of 8 consecutive frames. */
static void bench(const char *path)
{
    upm_err err;
    bytes b = slurp(path);
    upm_video *v;
    CHECK(upm_video_open(b.p, b.n, NULL, &v, &err) == 0);
    const upm_video_info *in = upm_video_get_info(v);
    double t0 = now();
    int64_t decoded = 0;
    for (int64_t k = 0; k + 8 <= in->num_frames; k += 8) {
        int64_t idx[8];
        for (int i = 0; i < 8; i++)
            idx[i] = k + i;
        upm_video_frames f;
        CHECK(upm_video_decode(v, idx, 8, &f, &err) == 0);
        decoded += upm_video_get_stats(v).frames_decoded;
        upm_video_frames_free(&f);
    }
    double dt = now() - t0;
    printf("speed %-24s %dx%d %s: %lld frames decoded + RGB in %.2f s = %.0f frames/s (1 thread)\n", clip_name(path), in->width,
           in->height, in->codec, (long long)decoded, dt, decoded / dt);
    upm_video_close(v);
    free(b.p);
}

/* ---- bad inputs ---- */

/* A real audio-only file: one second of a tone in Matroska, written by libavformat. */
static bytes audio_only_mkv(void)
{
    bytes b = {NULL, 0};
    AVFormatContext *oc = NULL;
    if (avformat_alloc_output_context2(&oc, NULL, "matroska", NULL) < 0)
        return b;
    AVStream *st = avformat_new_stream(oc, NULL);
    st->codecpar->codec_type = AVMEDIA_TYPE_AUDIO;
    st->codecpar->codec_id = AV_CODEC_ID_PCM_S16LE;
    st->codecpar->sample_rate = 8000;
    av_channel_layout_default(&st->codecpar->ch_layout, 1);
    st->time_base = (AVRational){1, 8000};
    AVPacket *pkt = av_packet_alloc();
    if (avio_open_dyn_buf(&oc->pb) == 0 && avformat_write_header(oc, NULL) >= 0) {
        for (int i = 0; i < 10; i++) {
            av_new_packet(pkt, 1600);
            for (int s = 0; s < 800; s++) {
                int16_t v = (int16_t)(8000 * sin((i * 800 + s) * 2 * 3.141592653589793 * 440 / 8000));
                memcpy(pkt->data + 2 * s, &v, 2);
            }
            pkt->pts = pkt->dts = i * 800;
            pkt->duration = 800;
            av_write_frame(oc, pkt);
            av_packet_unref(pkt);
        }
        av_write_trailer(oc);
        uint8_t *buf;
        int len = avio_close_dyn_buf(oc->pb, &buf);
        oc->pb = NULL;
        b.p = malloc((size_t)len);
        memcpy(b.p, buf, (size_t)len);
        b.n = (size_t)len;
        av_free(buf);
    }
    av_packet_free(&pkt);
    avformat_free_context(oc);
    return b;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* An mp4 rewritten with its moov box first, as "faststart" web files are (ftyp, moov, then the
 * rest), its stco chunk offsets moved by the moov's size: a truncated copy keeps a whole index. */
static bytes faststart(const bytes *in)
{
    bytes out = {malloc(in->n), 0};
    size_t moov = 0, moov_n = 0, ftyp_n = be32(in->p);
    for (size_t p = 0; p + 8 <= in->n && be32(in->p + p) >= 8; p += be32(in->p + p))
        if (memcmp(in->p + p + 4, "moov", 4) == 0)
            moov = p, moov_n = be32(in->p + p);
    if (!moov || memcmp(in->p + 4, "ftyp", 4) != 0)
        return out;
    memcpy(out.p, in->p, ftyp_n);
    memcpy(out.p + ftyp_n, in->p + moov, moov_n);
    memcpy(out.p + ftyp_n + moov_n, in->p + ftyp_n, moov - ftyp_n);
    out.n = in->n;
    for (uint8_t *q = out.p + ftyp_n; q + 16 <= out.p + ftyp_n + moov_n; q++)
        if (memcmp(q, "stco", 4) == 0)
            for (uint32_t i = 0, cnt = be32(q + 8); i < cnt; i++) {
                uint32_t off = be32(q + 12 + 4 * i) + (uint32_t)moov_n;
                uint8_t b[4] = {(uint8_t)(off >> 24), (uint8_t)(off >> 16), (uint8_t)(off >> 8), (uint8_t)off};
                memcpy(q + 12 + 4 * i, b, 4);
            }
    return out;
}

static void expect_bad(const uint8_t *p, size_t n, const upm_video_opts *opts, const char *what, const char *needle)
{
    upm_err err;
    upm_err_clear(&err);
    upm_video *v = NULL;
    int r = upm_video_open(p, n, opts, &v, &err);
    CHECK(r == UPM_EBADDATA && v == NULL && strncmp(err.msg, "video: ", 7) == 0);
    if (r != UPM_EBADDATA || (needle && !strstr(err.msg, needle))) {
        fprintf(stderr, "%s: got %d \"%s\", wanted UPM_EBADDATA mentioning \"%s\"\n", what, r, err.msg,
                needle ? needle : "");
        CHECK(!"error message");
    }
    printf("bad input %-28s -> %s\n", what, err.msg);
    upm_video_close(v);
}

static void test_errors(void)
{
    upm_err err0;
    bytes jpg = slurp("images/photos/dog.jpg");
    expect_bad(jpg.p, jpg.n, NULL, "JPEG photo", "not a video container");
    bytes txt = slurp("text/pg1661.txt");
    expect_bad(txt.p, 65536, NULL, "64 KB of Gutenberg text", NULL);
    expect_bad(txt.p, 0, NULL, "zero bytes", "0 bytes");
    bytes ck = slurp("video/cockatoo.mp4");
    expect_bad(ck.p, ck.n * 3 / 10, NULL, "first 30% of cockatoo.mp4", "truncated");
    const char *halves[] = {"video/codecs/webm.webm", "video/codecs/ogg.ogv", "video/codecs/flv.flv",
                            "video/codecs/mp4.mp4", "video/codecs/3gp.3gp"};
    for (int i = 0; i < 5; i++) {
        bytes h = slurp(halves[i]);
        char what[64];
        snprintf(what, sizeof what, "first 50%% of %s", strrchr(halves[i], '/') + 1);
        expect_bad(h.p, h.n / 2, NULL, what, NULL);
        free(h.p);
    }
    /* truncated with the index up front: the packets the index promises are not there */
    bytes rs0 = slurp("video/realshort.mp4"), fs = faststart(&rs0);
    CHECK(fs.n == rs0.n && memcmp(fs.p + 28, "moov", 4) == 0);
    upm_video_frames a, b;
    const int64_t some[4] = {35, 0, 17, 30};
    CHECK(upm_video_decode_frames(rs0.p, rs0.n, some, 4, NULL, &a, &err0) == 0);
    CHECK(upm_video_decode_frames(fs.p, fs.n, some, 4, NULL, &b, &err0) == 0); /* the rewrite is faithful */
    CHECK(a.rgb && b.rgb && memcmp(a.rgb, b.rgb, (size_t)4 * a.width * a.height * 3) == 0);
    upm_video_frames_free(&a);
    upm_video_frames_free(&b);
    expect_bad(fs.p, fs.n / 2, NULL, "first 50% of a faststart mp4", "truncated");
    expect_bad(fs.p, fs.n - 1, NULL, "a faststart mp4 less 1 byte", "truncated");
    free(fs.p);
    free(rs0.p);
    bytes au = audio_only_mkv();
    CHECK(au.n > 1000);
    expect_bad(au.p, au.n, NULL, "audio-only Matroska", "no video stream");
    /* an absurd size in the header: realshort's avc1 sample entry claims 65535x65535 */
    bytes rs = slurp("video/realshort.mp4");
    uint8_t *avc1 = NULL;
    for (size_t i = 0; !avc1 && i + 4 <= rs.n; i++)
        if (memcmp(rs.p + i, "avc1", 4) == 0)
            avc1 = rs.p + i;
    CHECK(avc1 != NULL);
    if (avc1) {
        uint8_t saved[4];
        memcpy(saved, avc1 + 28, 4);
        CHECK(saved[0] == 0x01 && saved[1] == 0x40 && saved[2] == 0x00 && saved[3] == 0xF0); /* 320, 240 */
        memset(avc1 + 28, 0xFF, 4);
        expect_bad(rs.p, rs.n, NULL, "65535x65535 in the header", "exceeds the limit");
        memcpy(avc1 + 28, saved, 4);
    }
    upm_video_opts small = {.max_side = 300};
    expect_bad(rs.p, rs.n, &small, "320x240 with max_side 300", "exceeds the limit");
    /* a good file, a bad request */
    upm_err err;
    upm_video *v;
    CHECK(upm_video_open(rs.p, rs.n, NULL, &v, &err) == 0);
    upm_video_frames f;
    int64_t past = 36, neg = -1;
    CHECK(upm_video_decode(v, &past, 1, &f, &err) == UPM_EINVAL && f.rgb == NULL && strstr(err.msg, "36"));
    CHECK(upm_video_decode(v, &neg, 1, &f, &err) == UPM_EINVAL);
    CHECK(upm_video_decode(v, &neg, 0, &f, &err) == UPM_EINVAL);
    upm_video_close(v);
    upm_video_close(NULL);
    free(rs.p);
    free(au.p);
    free(ck.p);
    free(txt.p);
    free(jpg.p);
}

int main(void)
{
    testdata = getenv("UPMOE_TESTDATA");
    if (!testdata || !*testdata) {
        fprintf(stderr, "test_video: UPMOE_TESTDATA is not set (run tools/fetch-testdata)\n");
        return 1;
    }
    av_log_set_level(AV_LOG_FATAL); /* the bad inputs make FFmpeg complain; our messages are checked */
    double t0 = now();
    test_policy();
    test_probe();
    printf("policy + probe: %.1f s\n", now() - t0);
    test_seek_equals_straight("video/cockatoo.mp4", 144, 11, 1);
    test_seek_equals_straight("video/realshort.mp4", 0, 0, 1);
    for (int i = 0; i < N_CODEC_CLIPS; i++)
        test_seek_equals_straight(codec_clips[i].path, 0, 0, 1);
    make_clips();
    test_seek_equals_straight(hevc_clip, 0, 0, 1);
    test_seek_equals_straight(xvid_clip, 0, 0, 0);
    test_seek_equals_straight(h264avi_clip, 0, 0, 0);
    test_seek_equals_straight(ts_clip, 0, 0, 1);
    test_skip_nonref();
    test_frames_match_ffmpeg(xvid_clip);
    test_frames_match_ffmpeg(h264avi_clip);
    test_frames_match_ffmpeg(hevc_clip);
    test_frames_match_ffmpeg(ts_clip);
    for (int i = 0; i < N_CODEC_CLIPS; i++)
        test_frames_match_ffmpeg(codec_clips[i].path);
    remove_clips();
    printf("seek vs straight: %.1f s\n", now() - t0);
    test_errors();
    printf("errors: %.1f s\n", now() - t0);
    bench("video/cockatoo.mp4");
    bench("video/codecs/mp4.mp4");
    printf("test_video: %.1f s\n", now() - t0);
    return CHECK_RESULT("test_video");
}
