/* Fuzz target "image": the still-image probe and decoder (TurboJPEG, libjpeg's full API for the samplings
 * TurboJPEG refuses, FFmpeg's PNG/GIF/BMP/WebP/TIFF decoders) with the size limits the loader runs with,
 * at full scale and at the DCT scale a crop would pick (chosen by the input's length). */
#include <libavutil/log.h>
#include <string.h>

#include "fuzz.h"
#include "image.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    av_log_set_level(AV_LOG_FATAL); /* FFmpeg's complaints about the bad inputs; our messages are checked */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    upm_err err = {0};
    upm_image_info info;
    int probed = upm_image_probe(data, size, "fuzz", &info, &err) == 0;
    FUZZ_CHECK(probed || err.msg[0]);
    FUZZ_CHECK(!probed || (info.w >= 0 && info.h >= 0));
    upm_image_req req = {.name = "fuzz"}; /* the loader's limits: the defaults (sampler/collate.c) */
    int shift = (int)(size % 4);
    if (probed && shift && info.w > 0 && info.h > 0)
        req.min_w = (info.w >> shift) + 1, req.min_h = (info.h >> shift) + 1;
    upm_image img;
    memset(&err, 0, sizeof err);
    if (upm_image_decode(data, size, &req, &img, &err) == 0) {
        FUZZ_CHECK(probed); /* whatever decodes also probes */
        FUZZ_CHECK(img.w > 0 && img.h > 0 && img.rgb);
        FUZZ_CHECK((long long)img.src_w * img.src_h <= UPM_IMAGE_MAX_PIXELS_DEFAULT);
        FUZZ_CHECK(img.w <= img.src_w && img.h <= img.src_h);
        volatile unsigned sum = 0; /* touch every byte: a short buffer is an ASan report */
        for (size_t i = 0; i < (size_t)img.w * img.h * 3; i += 61)
            sum += img.rgb[i];
        sum += img.rgb[(size_t)img.w * img.h * 3 - 1];
        (void)sum;
        upm_image_free(&img);
    } else {
        FUZZ_CHECK(err.msg[0]);
    }
    return 0;
}
