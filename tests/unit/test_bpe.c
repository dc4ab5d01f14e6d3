/* Unit test for pipeline/bpe.c and pipeline/text_mask.c on CLIP's real merges file: known ids (checked
 * against the JS port for ASCII, worked out from the merges file with a transcription of CLIP's
 * simple_tokenizer.py for Unicode), clean-up rules, truncation, bad input, decode, thread safety, and the
 * whole-word masking statistics. Prints the encode throughput on pg1661.txt. */
#include <archive.h>
#include <archive_entry.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bpe.h"
#include "check.h"
#include "text_mask.h"

static upm_bpe *bpe;
static char vocab_path[4096];

#define MAXI 4096

/* Encodes with flags; returns the count (or the negative code) and fills ids. */
static int enc(const char *s, unsigned flags, int32_t *ids)
{
    upm_err err;
    return upm_bpe_encode(bpe, s, strlen(s), ids, MAXI, flags, &err);
}

/* 1 if s encodes (no specials) to exactly the n ids given. */
static int ids_are(const char *s, int n, const int32_t *want)
{
    int32_t got[MAXI];
    int k = enc(s, 0, got);
    if (k != n || memcmp(got, want, (size_t)n * sizeof *got) != 0) {
        fprintf(stderr, "  \"%s\" ->", s);
        for (int i = 0; i < k && i < 20; i++)
            fprintf(stderr, " %d", got[i]);
        fprintf(stderr, " (%d ids)\n", k);
        return 0;
    }
    return 1;
}
#define IDS(s, ...) ids_are(s, sizeof((int32_t[]){__VA_ARGS__}) / sizeof(int32_t), (int32_t[]){__VA_ARGS__})

/* 1 if a and b encode to the same ids. */
static int same(const char *a, size_t na, const char *b, size_t nb)
{
    int32_t x[MAXI], y[MAXI];
    upm_err err;
    int n = upm_bpe_encode(bpe, a, na, x, MAXI, 0, &err), m = upm_bpe_encode(bpe, b, nb, y, MAXI, 0, &err);
    return n >= 0 && n == m && memcmp(x, y, (size_t)n * sizeof *x) == 0;
}
#define SAME(a, b) same(a, strlen(a), b, strlen(b))

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = (size_t)n;
    }
    return buf;
}

static void test_known_ids(void)
{
    int32_t ids[MAXI];
    int n = enc("a photo of a cat", UPM_BPE_CLIP, ids);
    CHECK(n == 7);
    CHECK(ids[0] == 49406 && ids[1] == 320 && ids[2] == 1125 && ids[3] == 539 && ids[4] == 320 && ids[5] == 2368 &&
          ids[6] == 49407);
    CHECK(IDS("Hello, world!", 3306, 267, 1002, 256));
    CHECK(IDS("It's a dog's life", 585, 568, 320, 1929, 568, 970));
    CHECK(
        IDS("The quick brown fox jumps over the lazy dog.", 518, 3712, 2866, 3240, 18911, 962, 518, 10753, 1929, 269));
    CHECK(IDS("2023", 273, 271, 273, 274)); /* one piece per digit */
    CHECK(enc("", 0, ids) == 0);
    CHECK(enc("   ", UPM_BPE_CLIP, ids) == 2 && ids[0] == UPM_BPE_SOT && ids[1] == UPM_BPE_EOT);
    CHECK(strcmp(upm_bpe_token(bpe, 2368), "cat</w>") == 0 && upm_bpe_is_word_end(bpe, 2368));
    CHECK(strcmp(upm_bpe_token(bpe, 0), "!") == 0 && !upm_bpe_is_word_end(bpe, 0));
    CHECK(strcmp(upm_bpe_token(bpe, 256), "!</w>") == 0);
    CHECK(strcmp(upm_bpe_token(bpe, 512), "in") == 0);           /* the first merge, "i n" */
    CHECK(strcmp(upm_bpe_token(bpe, 49405), "jekyll</w>") == 0); /* the last one CLIP uses */
    CHECK(strcmp(upm_bpe_token(bpe, UPM_BPE_SPE), "<|spe|>") == 0 && !upm_bpe_is_word_end(bpe, UPM_BPE_SPE));
    CHECK(upm_bpe_token(bpe, UPM_BPE_VOCAB_SIZE) == NULL && upm_bpe_token(bpe, -1) == NULL);
}

static void test_specials(void)
{
    CHECK(IDS("<|startoftext|>a<|endoftext|>", 49406, 320, 49407));
    CHECK(IDS("<|mask|> <|gen|><|spe|>", 49408, 49409, 49410));
    CHECK(IDS("<|MASK|>", 49408)); /* lower-cased first, like everything */
    CHECK(IDS("it is <|spe|>.", 585, 533, 49410, 269));
    CHECK(IDS("!<|spe|>", 0, 27, 347, 36676, 91, 285)); /* inside a punctuation run it is no token (as CLIP) */
    CHECK(upm_bpe_is_special(UPM_BPE_SOT) && upm_bpe_is_special(UPM_BPE_SPE) && !upm_bpe_is_special(49405));
}

static void test_cleanup(void)
{
    CHECK(SAME("A PHOTO OF A CAT", "a photo of a cat"));
    CHECK(SAME("  a \t\n photo\xc2\xa0of   a cat  ", "a photo of a cat")); /* NBSP is whitespace */
    CHECK(SAME("a\xe2\x80\x83photo", "a photo"));                          /* EM SPACE */
    CHECK(SAME("fish &amp; chips", "fish & chips"));
    CHECK(SAME("&amp;lt;3", "<3")); /* unescaped twice */
    CHECK(SAME("&quot;hi&quot; &#39;x&#x27;", "\"hi\" 'x'"));
    CHECK(SAME("caf&eacute; &Eacute;T&Eacute;", "café été"));
    CHECK(SAME("&amp", "&") && SAME("&notit;", "\xc2\xacit;")); /* legacy names need no ';' */
    CHECK(IDS("&foo;", 261, 23435, 282));                       /* unknown: literal */
    CHECK(SAME("&#128512;", "\xf0\x9f\x98\x80"));
    /* ftfy's character fixes: curly quotes, ligatures, fullwidth, control characters */
    CHECK(SAME("don\xe2\x80\x99t", "don't") && IDS("don\xe2\x80\x99t", 847, 713));
    CHECK(SAME("\xe2\x80\x9cyes\xe2\x80\x9d", "\"yes\""));
    CHECK(SAME("&rsquo;s", "'s")); /* ftfy unescapes lines without '<' and then uncurls */
    CHECK(SAME("\xef\xac\x81nance", "finance") && IDS("\xef\xac\x81nance", 6117));
    CHECK(SAME("\xef\xbc\xa1\xef\xbc\xa2\xef\xbc\xa3\xef\xbc\x91", "abc1"));
    CHECK(SAME("a\x01\x7f b\x0b", "a b"));
}

static void test_unicode(void)
{
    /* Worked out from the merges file: "café" is one merge chain ending in token "cafÃ©</w>" (é = C3 A9). */
    CHECK(IDS("café", 15304));
    CHECK(strcmp(upm_bpe_token(bpe, 15304), "caf\xc3\x83\xc2\xa9</w>") == 0);
    CHECK(IDS("naïve résumé", 1097, 35689, 563, 29106, 7054, 4166));
    CHECK(IDS("日本語", 39121, 44353, 34002, 508)); /* CJK letters form one piece */
    CHECK(IDS("東京タワー", 48338, 21078, 105, 34941, 2429, 107, 30391));
    CHECK(IDS("«quoted»", 14434, 27706, 7599));
    CHECK(IDS("😀 emoji", 7334, 16327));
    CHECK(IDS("İstanbul", 328, 16384, 11231)); /* İ lower-cases to i + U+0307 */
    CHECK(SAME("МОСКВА", "москва") && IDS("москва", 38018, 13506, 23669, 27152, 39813, 27080));
    CHECK(SAME("ÉCOLE ÀÖÞ ŁĄŻ", "école àöþ łąż") && SAME("ΑΒΓ ΆΈ", "αβγ άέ"));
    CHECK(SAME("ΟΔΟΣ", "οδος") && IDS("ΟΔΟΣ", 138, 123, 138, 112, 138, 123, 139, 480)); /* final ς = CF 82 */
    CHECK(SAME("ΣΑ", "σα"));                                                            /* not final */
    CHECK(SAME("a\xcd\x85"
               "b",
               "a b")); /* U+0345 matches nothing in CLIP's regex */
    /* one 120-byte piece: the heap-ordered merge path */
    CHECK(IDS("我们在公园里散步然后去了一家很好吃的餐厅吃晚饭大家都很开心今天天气非常好阳光明媚", 162, 230, 239, 37743,
              105, 37746, 101, 34314, 105, 39027, 255, 38283, 234, 162, 243, 96, 162, 255, 98, 163, 226, 114, 41673,
              236, 161, 236, 119, 21078, 228, 19759, 222, 27047, 114, 161, 122, 230, 29290, 121, 41673, 225, 163, 248,
              226, 165, 97, 238, 161, 236, 227, 41673, 225, 48132, 248, 165, 98, 255, 23170, 100, 27047, 114, 165, 225,
              121, 161, 122, 230, 161, 120, 222, 161, 123, 225, 37743, 232, 23170, 102, 23170, 102, 162, 108, 242, 165,
              251, 252, 42021, 116, 29290, 121, 165, 246, 111, 34314, 231, 42891, 236, 161, 103, 504));
}

static void test_invalid_utf8(void)
{
    int32_t ids[MAXI];
    upm_err err;
    CHECK(SAME("a\xff"
               "b",
               "a\xef\xbf\xbd"
               "b") &&
          IDS("a\xff"
              "b",
              320, 39802, 321));
    CHECK(SAME("\xe2\x82", "\xef\xbf\xbd"));                             /* truncated: one U+FFFD */
    CHECK(SAME("\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"));                 /* overlong: two */
    CHECK(SAME("\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd")); /* surrogate: three */
    CHECK(upm_bpe_encode(bpe, "a\xff", 2, ids, MAXI, UPM_BPE_STRICT_UTF8, &err) == UPM_EBADDATA);
    CHECK(strstr(err.msg, "byte 1") != NULL);
    CHECK(same("a\0b", 3, "ab", 2)); /* NUL is a control character: dropped */
    unsigned char junk[4096];
    upm_rng r = upm_rng_stream(1, UPM_RNG_MASK, 9, 9, 9);
    for (int t = 0; t < 200; t++) { /* random bytes never crash and always give valid ids */
        size_t n = upm_rng_below(&r, sizeof junk);
        for (size_t i = 0; i < n; i++)
            junk[i] = (unsigned char)upm_rng_u64(&r);
        int k = upm_bpe_encode(bpe, (const char *)junk, n, ids, MAXI, UPM_BPE_TRUNCATE, &err);
        CHECK(k >= 0 && k <= MAXI);
        for (int i = 0; i < k; i++)
            CHECK(ids[i] >= 0 && ids[i] < UPM_BPE_SOT);
    }
}

static void test_truncation(void)
{
    const char *text = "the quick brown fox jumps over the lazy dog and keeps running far away";
    int32_t full[MAXI], ids[16];
    upm_err err;
    int n = enc(text, UPM_BPE_CLIP, full);
    CHECK(n == 16);
    CHECK(upm_bpe_encode(bpe, text, strlen(text), ids, 10, UPM_BPE_CLIP | UPM_BPE_TRUNCATE, &err) == 10);
    CHECK(ids[0] == UPM_BPE_SOT && ids[9] == UPM_BPE_EOT && memcmp(ids, full, 9 * sizeof *ids) == 0);
    CHECK(upm_bpe_encode(bpe, text, strlen(text), ids, 10, UPM_BPE_CLIP, &err) == UPM_EINVAL);
    CHECK(strstr(err.msg, "needs 16 tokens") != NULL);
    CHECK(upm_bpe_encode(bpe, text, strlen(text), ids, 16, UPM_BPE_CLIP, &err) == 16); /* exactly fits */
    CHECK(upm_bpe_encode(bpe, text, strlen(text), ids, 2, UPM_BPE_CLIP | UPM_BPE_TRUNCATE, &err) == 2);
    CHECK(ids[0] == UPM_BPE_SOT && ids[1] == UPM_BPE_EOT);
    CHECK(upm_bpe_encode(bpe, text, strlen(text), ids, 1, UPM_BPE_CLIP | UPM_BPE_TRUNCATE, &err) == UPM_EINVAL);
    CHECK(upm_bpe_encode(bpe, text, strlen(text), ids, 3, UPM_BPE_ADD_EOT | UPM_BPE_TRUNCATE, &err) == 3);
    CHECK(ids[0] == full[1] && ids[1] == full[2] && ids[2] == UPM_BPE_EOT);
    CHECK(upm_bpe_encode(bpe, text, strlen(text), ids, 3, UPM_BPE_TRUNCATE, &err) == 3 && ids[2] == full[3]);
}

static void test_decode(const char *book, size_t len)
{
    int32_t ids[MAXI], again[MAXI];
    upm_err err;
    char *s = NULL;
    size_t n;
    int k = enc("A photo of a CAT, isn't it?", UPM_BPE_CLIP, ids);
    CHECK(upm_bpe_decode(bpe, ids, k, &s, &n, &err) == 0);
    CHECK(s && strcmp(s, "<|startoftext|>a photo of a cat , isn 't it ? <|endoftext|>") == 0 && n == strlen(s));
    free(s);
    k = enc("café 日本語 😀", 0, ids);
    CHECK(upm_bpe_decode(bpe, ids, k, &s, NULL, &err) == 0 && strcmp(s, "café 日本語 😀 ") == 0);
    free(s);
    int32_t bad[] = {320, 49411};
    CHECK(upm_bpe_decode(bpe, bad, 2, &s, NULL, &err) == UPM_EINVAL && s == NULL && strstr(err.msg, "49411"));
    int32_t half[] = {127}; /* byte C3 alone (the first byte of "é") decodes to U+FFFD */
    CHECK(strcmp(upm_bpe_token(bpe, 127), "\xc3\x83") == 0);
    CHECK(upm_bpe_decode(bpe, half, 1, &s, NULL, &err) == 0 && strcmp(s, "\xef\xbf\xbd") == 0);
    free(s);
    /* round trip over every ASCII line of the book: decode(encode(x)) encodes to the same ids */
    int lines = 0, ok = 0;
    for (const char *p = book; p < book + len;) {
        const char *e = memchr(p, '\n', (size_t)(book + len - p));
        size_t m = e ? (size_t)(e - p) : (size_t)(book + len - p);
        int ascii = 1;
        for (size_t i = 0; i < m; i++)
            ascii &= (unsigned char)p[i] < 0x80;
        if (ascii && m > 0) {
            int a = upm_bpe_encode(bpe, p, m, ids, MAXI, 0, &err);
            if (a >= 0 && upm_bpe_decode(bpe, ids, a, &s, &n, &err) == 0) {
                int b = upm_bpe_encode(bpe, s, n, again, MAXI, 0, &err);
                ok += b == a && memcmp(ids, again, (size_t)a * sizeof *ids) == 0;
                free(s);
            }
            lines++;
        }
        p += m + 1;
    }
    CHECK(lines > 10000 && ok == lines);
}

/* Writes text to a temporary file and tries to load it; returns the code and leaves the message in err. */
static int load_text(const char *text, size_t n, char *path, upm_err *err)
{
    strcpy(path, "/tmp/upm_bpe_test_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, n) != (ssize_t)n)
        return -100;
    close(fd);
    upm_bpe *b;
    int rc = upm_bpe_load(path, &b, err);
    upm_bpe_free(b);
    unlink(path);
    return rc;
}

static void test_bad_vocab(const char *vocab, size_t vlen)
{
    char path[64];
    upm_err err;
    upm_bpe *b = (upm_bpe *)1;
    CHECK(upm_bpe_load("/nonexistent/bpe.txt", &b, &err) == UPM_ENOTFOUND && b == NULL);
    CHECK(strstr(err.msg, "No such file") != NULL);
    CHECK(strstr(err.msg, "/nonexistent/bpe.txt") != NULL);
    CHECK(upm_bpe_load("/tmp", &b, &err) < 0 && b == NULL && strstr(err.msg, "/tmp")); /* a directory */
    CHECK(load_text("i n\nt h\n", 8, path, &err) == UPM_EBADDATA);
    CHECK(strstr(err.msg, path) && strstr(err.msg, "line 1"));
    CHECK(load_text("#version: 0.2\ni n\nt h\n", 22, path, &err) == UPM_EBADDATA);
    CHECK(strstr(err.msg, path) && strstr(err.msg, "only 2 merges"));
    const char *bad_lines[][2] = {
        {"#version: 0.2\ni n\ntxh\n", "line 3: expected two tokens separated by one space"},
        {"#version: 0.2\ni n\nt  h\n", "line 3: expected two tokens"},
        {"#version: 0.2\ni n\n\xff h\n", "line 3: invalid UTF-8"},
        {"#version: 0.2\ni n\nt h\nth e</w>\nx zz\n", "line 5: \"zz\" is not a token built by an earlier line"},
        {"#version: 0.2\ni n\nin\xc3\xa9 x\n", "line 3: \"in\xc3\xa9\" is not a token"},
    };
    for (size_t i = 0; i < sizeof bad_lines / sizeof bad_lines[0]; i++) {
        CHECK(load_text(bad_lines[i][0], strlen(bad_lines[i][0]), path, &err) == UPM_EBADDATA);
        CHECK(strstr(err.msg, path) && strstr(err.msg, bad_lines[i][1]));
    }
    CHECK(load_text("#version\0", 9, path, &err) == UPM_EBADDATA && strstr(err.msg, "NUL"));
    CHECK(load_text("", 0, path, &err) == UPM_EBADDATA && strstr(err.msg, "is empty"));
    /* gzip-compressed, as CLIP ships it */
    strcpy(path, "/tmp/upm_bpe_test_XXXXXX");
    int fd = mkstemp(path);
    close(fd);
    struct archive *a = archive_write_new();
    archive_write_add_filter_gzip(a);
    archive_write_set_format_raw(a);
    archive_write_open_filename(a, path);
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, "bpe_simple_vocab_16e6.txt");
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_size(e, (la_int64_t)vlen);
    archive_write_header(a, e);
    archive_write_data(a, vocab, vlen);
    archive_entry_free(e);
    archive_write_free(a);
    upm_bpe *gz;
    CHECK(upm_bpe_load(path, &gz, &err) == 0);
    int32_t ids[8];
    CHECK(gz && upm_bpe_encode(gz, "a cat", 5, ids, 8, 0, &err) == 2 && ids[1] == 2368);
    upm_bpe_free(gz);
    unlink(path);
}

/* Word starts of ids as text_mask.h defines words (for checking whole-word selection). */
static int word_of(const int32_t *ids, int n, int *word)
{
    int w = -1, open = 0;
    for (int i = 0; i < n; i++) {
        if (upm_bpe_is_special(ids[i])) {
            word[i] = -1;
            open = 0;
            continue;
        }
        if (!open)
            w++, open = 1;
        word[i] = w;
        if (upm_bpe_is_word_end(bpe, ids[i]))
            open = 0;
    }
    return w + 1;
}

static void test_mask(const char *book, size_t len)
{
    upm_err err;
    int32_t *ids = malloc(len * sizeof *ids), *masked = malloc(len * sizeof *ids), *masked2 = malloc(len * sizeof *ids);
    int32_t *pos = malloc(len * sizeof *ids), *tgt = malloc(len * sizeof *ids), *pos2 = malloc(len * sizeof *ids);
    int *word = malloc(len * sizeof *word);
    int n = upm_bpe_encode(bpe, book, len, ids, (int)len, UPM_BPE_CLIP, &err);
    CHECK(n > 100000);
    int words = word_of(ids, n, word);
    upm_rng r = upm_rng_stream(42, UPM_RNG_MASK, 0, 0, 0);
    int m = upm_text_mask_ex(bpe, ids, n, NULL, &r, masked, pos, tgt, (int)len, &err);
    CHECK(m > 0);
    /* exactly round(15% of words) whole words; 80/10/10 within 1.5 points (about 5 sigma at ~25k tokens) */
    unsigned char *wsel = calloc((size_t)words, 1);
    int n_mask = 0, n_rand = 0, n_keep = 0, order_ok = 1, whole = 1, specials_ok = 1;
    for (int i = 0; i < m; i++) {
        order_ok &= i == 0 || pos[i] > pos[i - 1];
        CHECK(tgt[i] == ids[pos[i]]);
        specials_ok &= word[pos[i]] >= 0;
        wsel[word[pos[i]] >= 0 ? word[pos[i]] : 0] = 1;
        n_mask += masked[pos[i]] == UPM_BPE_MASK;
        n_rand += masked[pos[i]] != UPM_BPE_MASK && masked[pos[i]] != ids[pos[i]];
        n_keep += masked[pos[i]] == ids[pos[i]];
        CHECK(masked[pos[i]] >= 0 && masked[pos[i]] < UPM_BPE_SOT + 3 && masked[pos[i]] != UPM_BPE_SOT &&
              masked[pos[i]] != UPM_BPE_EOT);
    }
    int chosen_words = 0, changed_outside = 0;
    for (int w = 0; w < words; w++)
        chosen_words += wsel[w];
    int j = 0;
    for (int i = 0; i < n; i++) { /* a chosen word has all its tokens in pos[]; nothing else changed */
        int listed = j < m && pos[j] == i;
        j += listed;
        if (word[i] >= 0 && wsel[word[i]] && !listed)
            whole = 0;
        changed_outside += !listed && masked[i] != ids[i];
    }
    printf("masking: %d words, %d chosen (%.4f), %d tokens: %.4f mask, %.4f random, %.4f kept\n", words, chosen_words,
           (double)chosen_words / words, m, (double)n_mask / m, (double)n_rand / m, (double)n_keep / m);
    CHECK(chosen_words == (int)(0.15 * words + 0.5));
    CHECK(order_ok && whole && specials_ok && changed_outside == 0);
    CHECK(n_mask + n_rand + n_keep == m);
    CHECK((double)n_mask / m > 0.785 && (double)n_mask / m < 0.815);
    CHECK((double)n_rand / m > 0.085 && (double)n_rand / m < 0.115);
    CHECK((double)n_keep / m > 0.085 && (double)n_keep / m < 0.115);
    /* determinism by stream: the same stream repeats, another differs; in place works */
    r = upm_rng_stream(42, UPM_RNG_MASK, 0, 0, 0);
    memcpy(masked2, ids, (size_t)n * sizeof *ids);
    CHECK(upm_text_mask_ex(bpe, masked2, n, NULL, &r, masked2, pos2, tgt, (int)len, &err) == m);
    CHECK(memcmp(masked, masked2, (size_t)n * sizeof *ids) == 0 && memcmp(pos, pos2, (size_t)m * sizeof *pos) == 0);
    r = upm_rng_stream(42, UPM_RNG_MASK, 1, 0, 0);
    int m2 = upm_text_mask_ex(bpe, ids, n, NULL, &r, masked2, pos2, tgt, (int)len, &err);
    CHECK(m2 > 0 && (m2 != m || memcmp(pos, pos2, (size_t)m * sizeof *pos) != 0));
    free(wsel);
    free(ids);
    free(masked);
    free(masked2);
    free(pos);
    free(pos2);
    free(tgt);
    free(word);
}

/* The rules on small inputs: specials, rounding, budgets, multi-token words, the batch form. */
static void test_mask_rules(void)
{
    upm_err err;
    upm_rng r;
    int m;
    /* specials never masked, even at rate 1; short texts get at least one word; budgets are respected */
    int32_t seq[12], out[12], p[12], t[12];
    int k = upm_bpe_encode(bpe, "<|spe|> a photo <|endoftext|> it is <|spe|> .", 45, seq, 12, UPM_BPE_CLIP, &err);
    CHECK(k == 10);
    upm_text_mask_opts all = {1.0, 1.0, 0.0};
    r = upm_rng_stream(7, UPM_RNG_MASK, 0, 0, 0);
    CHECK(upm_text_mask_ex(bpe, seq, k, &all, &r, out, p, t, 12, &err) == 5);
    for (int i = 0; i < k; i++)
        CHECK(upm_bpe_is_special(seq[i]) ? out[i] == seq[i] : out[i] == UPM_BPE_MASK);
    CHECK(upm_text_mask_ex(bpe, seq, k, NULL, &r, out, p, t, 12, &err) == 1); /* 5 words: round(0.75) = 1 */
    CHECK(upm_text_mask_ex(bpe, seq, k, &all, &r, out, p, t, 3, &err) == 3);  /* only 3 fit */
    int32_t only_specials[] = {UPM_BPE_SOT, UPM_BPE_EOT};
    CHECK(upm_text_mask_ex(bpe, only_specials, 2, NULL, &r, out, p, t, 12, &err) == 0);
    int32_t outside[] = {320, 49411};
    CHECK(upm_text_mask_ex(bpe, outside, 2, NULL, &r, out, p, t, 12, &err) == UPM_EINVAL);
    upm_text_mask_opts bad = {0.15, 0.9, 0.2};
    CHECK(upm_text_mask_ex(bpe, seq, k, &bad, &r, out, p, t, 12, &err) == UPM_EINVAL);
    /* a multi-token word is masked as a whole */
    k = upm_bpe_encode(bpe, "photosynthesizing", 17, seq, 12, 0, &err);
    CHECK(k == 3 && !upm_bpe_is_word_end(bpe, seq[0]) && upm_bpe_is_word_end(bpe, seq[2]));
    r = upm_rng_stream(8, UPM_RNG_MASK, 0, 0, 0);
    CHECK(upm_text_mask_ex(bpe, seq, k, NULL, &r, out, p, t, 12, &err) == 3 && p[0] == 0 && p[2] == 2);
    CHECK(upm_text_mask_ex(bpe, seq, k, NULL, &r, out, p, t, 2, &err) == 0); /* does not fit: nothing */
    /* the in-place batch form equals the general form on the same stream */
    k = upm_bpe_encode(bpe, "it was the best of times, it was the worst of times", 51, seq, 12,
                       UPM_BPE_ADD_EOT | UPM_BPE_TRUNCATE, &err);
    CHECK(k == 12);
    int32_t inplace[12], dense[12];
    memcpy(inplace, seq, sizeof seq);
    upm_text_mask_opts bert = UPM_TEXT_MASK_DEFAULTS;
    r = upm_rng_stream(9, UPM_RNG_MASK, 3, 0, 0);
    m = upm_text_mask_ex(bpe, seq, k, &bert, &r, out, p, t, 12, &err);
    r = upm_rng_stream(9, UPM_RNG_MASK, 3, 0, 0);
    CHECK(upm_text_mask(bpe, inplace, k, &r, dense, &err) == 0);
    CHECK(m == 2 && memcmp(inplace, out, sizeof out) == 0); /* 11 words: round(1.65) = 2 */
    for (int i = 0, j2 = 0; i < k; i++) {
        int listed = j2 < m && p[j2] == i;
        CHECK(dense[i] == (listed ? seq[i] : -1));
        j2 += listed;
    }
}

/* Threads encode the book's lines at once; each must get the single-threaded ids. */
typedef struct {
    const char *book;
    size_t len;
    int start;
    long sum, count;
} thread_job;

static void *encode_lines(void *arg)
{
    thread_job *j = arg;
    int32_t ids[MAXI];
    upm_err err;
    int line = 0;
    for (const char *p = j->book; p < j->book + j->len; line++) {
        const char *e = memchr(p, '\n', (size_t)(j->book + j->len - p));
        size_t m = e ? (size_t)(e - p) : (size_t)(j->book + j->len - p);
        if ((line + j->start) % 2 == 0) { /* threads cover lines in different orders of cache filling */
            int k = upm_bpe_encode(bpe, p, m, ids, MAXI, UPM_BPE_CLIP, &err);
            for (int i = 0; i < k; i++)
                j->sum += (long)ids[i] * (i + 1);
            j->count += k;
        }
        p += m + 1;
    }
    return NULL;
}

static void test_threads(const char *book, size_t len)
{
    thread_job one[2] = {{book, len, 0, 0, 0}, {book, len, 1, 0, 0}}, many[8];
    encode_lines(&one[0]);
    encode_lines(&one[1]);
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        many[i] = (thread_job){book, len, i % 2, 0, 0};
        pthread_create(&th[i], NULL, encode_lines, &many[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CHECK(many[i].sum == one[i % 2].sum && many[i].count == one[i % 2].count);
    }
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void report_speed(const char *book, size_t len)
{
    int32_t *ids = malloc(len * sizeof *ids);
    upm_err err;
    upm_bpe *cold;
    CHECK(upm_bpe_load(vocab_path, &cold, &err) == 0);
    double t0 = now();
    int n = upm_bpe_encode(cold, book, len, ids, (int)len, 0, &err); /* fresh cache */
    double t1 = now();
    int n2 = upm_bpe_encode(cold, book, len, ids, (int)len, 0, &err); /* warm cache */
    double t2 = now();
    int lines = 0;
    for (const char *p = book; p < book + len; lines++) {
        const char *e = memchr(p, '\n', (size_t)(book + len - p));
        size_t m = e ? (size_t)(e - p) : (size_t)(book + len - p);
        upm_bpe_encode(cold, p, m, ids, (int)len, UPM_BPE_CLIP, &err);
        p += m + 1;
    }
    double t3 = now();
    CHECK(n > 0 && n == n2);
    printf("encode pg1661.txt (%.0f KB, %d tokens): %.1f MB/s cold cache, %.1f MB/s warm, %.1f MB/s as %d lines\n",
           len / 1e3, n, len / 1e6 / (t1 - t0), len / 1e6 / (t2 - t1), len / 1e6 / (t3 - t2), lines);
    upm_bpe_free(cold);
    free(ids);
}

int main(void)
{
    const char *td = getenv("UPMOE_TESTDATA");
    if (!td || !*td) {
        fprintf(stderr, "test_bpe: UPMOE_TESTDATA is not set (run tools/fetch-testdata)\n");
        return 1;
    }
    snprintf(vocab_path, sizeof vocab_path, "%s/clip/bpe_simple_vocab_16e6.txt", td);
    char book_path[4096];
    snprintf(book_path, sizeof book_path, "%s/text/pg1661.txt", td);
    size_t vlen = 0, blen = 0;
    char *vocab = read_all(vocab_path, &vlen), *book = read_all(book_path, &blen);
    upm_err err;
    if (!vocab || !book || upm_bpe_load(vocab_path, &bpe, &err) != 0) {
        fprintf(stderr, "test_bpe: cannot read the test data %s / %s (run tools/fetch-testdata)\n", vocab_path,
                book_path);
        return 1;
    }
    test_known_ids();
    test_specials();
    test_cleanup();
    test_unicode();
    test_invalid_utf8();
    test_truncation();
    test_decode(book, blen);
    test_bad_vocab(vocab, vlen);
    test_mask(book, blen);
    test_mask_rules();
    test_threads(book, blen);
    report_speed(book, blen);
    upm_bpe_free(bpe);
    free(vocab);
    free(book);
    return CHECK_RESULT("test_bpe");
}
