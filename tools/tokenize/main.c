/* upmoe-tokenize: CLIP BPE from the command line: text -> ids (one line of ids per text) and back with
 * --decode, with the same tokenizer the pipeline uses. Exit codes: 0 ok, 1 error, 2 usage error. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "bpe.h"
#include "text.h"

#define PROG "upmoe-tokenize"

static const char usage[] =
    "usage: " PROG " [--vocab PATH] [--max-len N] [--no-specials] [--json] [--strict-utf8] TEXT | -\n"
    "       " PROG " --decode [--vocab PATH] [--json] IDS | -\n"
    "\n"
    "Encodes TEXT with CLIP's byte-level BPE (plus <|mask|> 49408, <|gen|> 49409, <|spe|> 49410) and prints\n"
    "the ids separated by spaces. With '-' every line of standard input is one text and gives one output line.\n"
    "\n"
    "options:\n"
    "  --vocab PATH    CLIP's merges file, bpe_simple_vocab_16e6.txt or .txt.gz (default: $UPMOE_BPE_VOCAB,\n"
    "                  else the copy tools/setup installs next to the programs)\n"
    "  --max-len N     at most N ids: longer texts are cut and keep <|endoftext|> last (CLIP uses 77)\n"
    "  --no-specials   leave out <|startoftext|> (49406) and <|endoftext|> (49407) around the ids\n"
    "  --strict-utf8   refuse invalid UTF-8 instead of reading each bad sequence as U+FFFD\n"
    "  --decode        the reverse: IDS are integers separated by spaces or commas ('[1, 2]' works too)\n"
    "  --json          a JSON array of ids per line (with --decode: a JSON string per line)\n"
    "  --help          this help\n"
    "  --version       print the version\n"
    "\n"
    "exit status: 0 ok, 1 error (unreadable vocabulary, bad input line), 2 usage error.\n";

typedef struct {
    const char *vocab;
    int max_len; /* 0 = no limit */
    unsigned flags;
    int json, decode;
} opts;

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(PROG ": error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

static void print_ids(const int32_t *ids, int n, int json)
{
    fputs(json ? "[" : "", stdout);
    for (int i = 0; i < n; i++)
        printf(i ? (json ? ",%d" : " %d") : "%d", (int)ids[i]);
    fputs(json ? "]\n" : "\n", stdout);
}

/* Encodes one text and prints its ids; returns a UPM_E* code (err filled) or 0. */
static int encode_one(upm_bpe *bpe, const opts *o, const char *text, size_t len, upm_err *err)
{
    /* No limit: 3 ids per input byte bound the output (a bad byte is U+FFFD, 3 bytes, at most 3 ids). */
    size_t cap = o->max_len ? (size_t)o->max_len : 3 * len + 2;
    if (cap > 0x7fffffff)
        return upm_errf(err, UPM_EINVAL, "text of %zu bytes is too long", len);
    int32_t *ids = malloc((cap ? cap : 1) * sizeof *ids);
    if (!ids)
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    int n = upm_bpe_encode(bpe, text, len, ids, (int)cap, o->flags, err);
    if (n >= 0)
        print_ids(ids, n, o->json);
    free(ids);
    return n < 0 ? n : 0;
}

/* Parses "1 2 3", "1,2,3" or "[1, 2, 3]" and prints the decoded text. */
static int decode_one(upm_bpe *bpe, const opts *o, const char *line, upm_err *err)
{
    size_t cap = strlen(line) / 2 + 1;
    int32_t *ids = malloc(cap * sizeof *ids);
    int n = 0, rc = 0;
    if (!ids)
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    for (const char *p = line; *p;) {
        if (strchr(" \t\r\n,[]", *p)) {
            p++;
            continue;
        }
        size_t k = strcspn(p, " \t\r\n,[]");
        char num[24];
        int64_t v;
        snprintf(num, sizeof num, "%.*s", (int)(k < 23 ? k : 23), p);
        if (k > 22 || upm_parse_i64(num, &v) != 0 || v < 0 || v >= UPM_BPE_VOCAB_SIZE) {
            rc = upm_errf(err, UPM_EUSAGE, "'%.*s' is not a token id (0..%d)", (int)(k < 40 ? k : 40), p,
                          UPM_BPE_VOCAB_SIZE - 1);
            break;
        }
        ids[n++] = (int32_t)v;
        p += k;
    }
    char *text = NULL;
    if (rc == 0 && (rc = upm_bpe_decode(bpe, ids, n, &text, NULL, err)) == 0) {
        if (o->json) {
            cJSON *s = cJSON_CreateString(text);
            char *j = s ? cJSON_PrintUnformatted(s) : NULL;
            if (j)
                puts(j);
            else
                rc = upm_errf(err, UPM_ENOMEM, "out of memory");
            free(j);
            cJSON_Delete(s);
        } else {
            puts(text);
        }
    }
    free(text);
    free(ids);
    return rc;
}

/* Every line of standard input; stops at the first bad one (exit 1, naming the line). */
static int run_lines(upm_bpe *bpe, const opts *o)
{
    struct stat st;
    int flush_each = fstat(0, &st) != 0 || !S_ISREG(st.st_mode); /* a pipe may be a conversation */
    char *line = NULL;
    size_t size = 0;
    ssize_t got;
    long no = 0;
    int rc = 0;
    upm_err err;
    while ((got = getline(&line, &size, stdin)) >= 0) {
        no++;
        if (got > 0 && line[got - 1] == '\n')
            line[--got] = 0;
        rc = o->decode ? decode_one(bpe, o, line, &err) : encode_one(bpe, o, line, (size_t)got, &err);
        if (rc) {
            rc = fail(1, "standard input line %ld: %s", no, err.msg);
            break;
        }
        if (flush_each)
            fflush(stdout);
    }
    if (!rc && ferror(stdin))
        rc = fail(1, "cannot read standard input");
    free(line);
    return rc;
}

static int parse_args(int argc, char **argv, opts *o, const char **input)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--vocab") == 0 || strcmp(a, "--max-len") == 0) {
            if (i + 1 >= argc)
                return fail(2, "option %s needs a value", a);
            const char *v = argv[++i];
            if (a[2] == 'v') {
                o->vocab = v;
                continue;
            }
            int64_t n;
            if (upm_parse_i64(v, &n) != 0 || n < 1 || n > 1000000)
                return fail(2, "--max-len wants a whole number from 1 to 1000000, got '%s'", v);
            o->max_len = (int)n;
            o->flags |= UPM_BPE_TRUNCATE;
        } else if (strcmp(a, "--no-specials") == 0) {
            o->flags &= ~(unsigned)UPM_BPE_CLIP;
        } else if (strcmp(a, "--strict-utf8") == 0) {
            o->flags |= UPM_BPE_STRICT_UTF8;
        } else if (strcmp(a, "--json") == 0) {
            o->json = 1;
        } else if (strcmp(a, "--decode") == 0) {
            o->decode = 1;
        } else if (strcmp(a, "--") == 0 && i + 1 < argc && !*input) {
            *input = argv[++i];
        } else if (a[0] == '-' && a[1] && !(a[1] >= '0' && a[1] <= '9')) {
            return fail(2, "unknown option '%s' (see --help)", a);
        } else if (*input) {
            return fail(2, "one TEXT at a time (quote it), or '-' for lines of standard input");
        } else {
            *input = a;
        }
    }
    if (!*input)
        return fail(2, "no TEXT given (see --help)");
    if (o->max_len && o->max_len < !!(o->flags & UPM_BPE_ADD_SOT) + !!(o->flags & UPM_BPE_ADD_EOT))
        return fail(2, "--max-len %d leaves no room for <|startoftext|> and <|endoftext|>", o->max_len);
    return 0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf(PROG " " UPMOE_VERSION "\n");
            return 0;
        }
    }
    opts o = {NULL, 0, UPM_BPE_CLIP, 0, 0};
    const char *input = NULL;
    int rc = parse_args(argc, argv, &o, &input);
    if (rc)
        return rc;
    char found[4096];
    if (!o.vocab || !*o.vocab)
        o.vocab = upm_bpe_default_path(found, sizeof found);
    if (!o.vocab || !*o.vocab)
        return fail(2, "no BPE vocabulary: pass --vocab PATH, set UPMOE_BPE_VOCAB to CLIP's "
                       "bpe_simple_vocab_16e6.txt(.gz), or run tools/setup (it installs one next to the programs)");
    upm_bpe *bpe;
    upm_err err;
    if (upm_bpe_load(o.vocab, &bpe, &err) != 0)
        return fail(1, "%s", err.msg);
    if (strcmp(input, "-") == 0) {
        rc = run_lines(bpe, &o);
    } else {
        rc = o.decode ? decode_one(bpe, &o, input, &err) : encode_one(bpe, &o, input, strlen(input), &err);
        if (rc)
            rc = fail(rc == UPM_EUSAGE ? 2 : 1, "%s", err.msg);
    }
    upm_bpe_free(bpe);
    if (fflush(stdout) != 0 && !rc)
        rc = fail(1, "cannot write standard output");
    return rc;
}
