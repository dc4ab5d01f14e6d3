/* Shard URL patterns: validation and brace expansion of the URL pattern a dataset names its shards by,
 * e.g. "https://host/cc3m/shard-{000000..000575}.tar" or "/data/{train,extra}-{0..9}.tar".
 * Expansion is index-based so the sampler can address shard i of a million without building a list. */
#ifndef UPM_URLPATTERN_H
#define UPM_URLPATTERN_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum upm_url_scheme {
    UPM_URL_PATH = 0, /* plain file system path, absolute or relative */
    UPM_URL_FILE,     /* file:///abs/path */
    UPM_URL_HTTP,     /* http://host[:port]/path */
    UPM_URL_HTTPS,    /* https://host[:port]/path */
} upm_url_scheme;

typedef struct upm_urlpat upm_urlpat;

/* Parses and validates pattern. On error returns UPM_EUSAGE with a message that quotes the pattern and
 * says what is wrong and at which character (unbalanced brace, reversed range, unsupported scheme...). */
int upm_urlpat_parse(const char *pattern, upm_urlpat **out, upm_err *err);
void upm_urlpat_free(upm_urlpat *p);

upm_url_scheme upm_urlpat_scheme(const upm_urlpat *p);
/* Number of URLs the pattern expands to (at least 1). */
uint64_t upm_urlpat_count(const upm_urlpat *p);
/* Writes the i-th URL (0-based, in the order brace expansion lists them: the leftmost group varies
 * slowest) into buf. Returns its length, or UPM_EUSAGE when i is out of range or buf is too small. */
int upm_urlpat_get(const upm_urlpat *p, uint64_t i, char *buf, size_t bufsize, upm_err *err);

#endif
