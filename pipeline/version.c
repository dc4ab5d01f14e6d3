/* Versions of the libraries the pipeline decodes and streams with, for --version and bug reports. */
#include <archive.h>
#include <curl/curl.h>
#include <libavcodec/avcodec.h>
#include <stdio.h>

#include "pipeline.h"

void upm_pipeline_versions(char *buf, size_t n)
{
    unsigned av = avcodec_version();
    snprintf(buf, n, "libcurl %s, libarchive %s, libavcodec %u.%u.%u", curl_version_info(CURLVERSION_NOW)->version,
             archive_version_string() + sizeof "libarchive", av >> 16, (av >> 8) & 0xff, av & 0xff);
}
