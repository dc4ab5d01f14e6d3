/* Text clean-up in front of the CLIP BPE tokenizer (internal to bpe.c): UTF-8 decoding, the character-level
 * part of ftfy's default fixes, HTML unescaping, whitespace collapsing, Unicode lower-casing, and the Unicode
 * letter / number / space classes the pre-tokenizer needs. Tables come from Python 3.11's unicodedata (14.0). */
#ifndef UPM_BPE_TEXT_H
#define UPM_BPE_TEXT_H

#include <stddef.h>
#include <stdint.h>

enum { UPM_UC_OTHER = 0, UPM_UC_LETTER = 1, UPM_UC_NUMBER = 2 };

/* General category L* -> UPM_UC_LETTER, N* -> UPM_UC_NUMBER, anything else UPM_UC_OTHER (all of Unicode). */
int upm_uc_class(uint32_t c);
/* Python's str.isspace(): what CLIP's whitespace_clean collapses. */
int upm_uc_is_space(uint32_t c);
/* Python's str.lower() for one code point where it maps to one code point (all but U+0130). */
uint32_t upm_uc_lower(uint32_t c);

/* Decodes s[0..n) into out (room for n code points); each maximal ill-formed subsequence becomes one
 * U+FFFD, as Python's bytes.decode('utf-8', errors='replace'). Returns the count; *n_bad counts the
 * replacements (when non-NULL). */
size_t upm_utf8_decode_lossy(const char *s, size_t n, uint32_t *out, size_t *n_bad);
/* Writes c as UTF-8 (1-4 bytes) and returns the byte count. */
int upm_utf8_put(uint32_t c, unsigned char *out);

/* CLIP's clean-up: ftfy-lite, html.unescape twice, whitespace_clean, lower(). Returns 0 and a malloc'd
 * array of code points in *out (caller frees), or UPM_ENOMEM. */
int upm_bpe_clean(const char *text, size_t len, uint32_t **out, size_t *n_out, size_t *n_bad);

#endif
