/* The pipeline's umbrella header: library versions; the modules have their own headers. */
#ifndef UPM_PIPELINE_H
#define UPM_PIPELINE_H

#include <stddef.h>

/* "libcurl 7.88.1, libarchive 3.6.2, libavcodec 59.37.100" */
void upm_pipeline_versions(char *buf, size_t n);

#endif
