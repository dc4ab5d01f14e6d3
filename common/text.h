/* Small text helpers shared by the catalog and the pipeline: UTF-8 validation, number parsing that
 * refuses junk, and display width for aligned tables. */
#ifndef UPM_TEXT_H
#define UPM_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* 1 if s[0..n) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF); else 0 and the byte
 * offset of the first bad sequence in *bad_at (when non-NULL). */
int upm_utf8_valid(const char *s, size_t n, size_t *bad_at);
/* Number of code points (the terminal width of ASCII and most Latin text). */
size_t upm_utf8_width(const char *s);
/* 1 if s contains a byte < 0x20 or 0x7f. */
int upm_has_control(const char *s);

/* Whole-string parses: 0 on success; -1 when s is empty, has trailing junk, is out of range, or (for
 * doubles) is not finite. */
int upm_parse_i64(const char *s, int64_t *out);
int upm_parse_double(const char *s, double *out);

/* Shortest "%.*g" text that reads back as exactly v (what a user typed, e.g. 0.026295). */
void upm_format_double(double v, char *buf, size_t bufsize);

#endif
