/* upmoe-shard: builds WebDataset tar shards from a class folder, a CSV/JSONL annotation file or a plain
 * text file, and prints the brace URL pattern to register them with `upmoe-catalog add dataset --url`.
 * Exit codes: 0 ok, 1 runtime error, 2 usage error; errors are one line `upmoe-shard: error: ...`. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shard.h"
#include "text.h"

#define PROG UPM_SHARD_PROG
#define EXIT_USAGE 2

static const char usage[] =
    "usage: " PROG " folder DIR --kind image-class|video-class --out DIR [options]\n"
    "       " PROG " annotations FILE --kind image-caption|video-caption|image-class|video-class|text\n"
    "                   --out DIR [options]\n"
    "       " PROG " text FILE [--lines-per-sample N | --paragraphs-per-sample N] --out DIR [options]\n"
    "\n"
    "Builds WebDataset tar shards: each sample is a key and its members <key>.<ext>, consecutive in the tar.\n"
    "\n"
    "inputs:\n"
    "  folder DIR        DIR/<class>/<file>: classes are DIR's subfolders sorted by name (byte order) -> 0, 1, ...;\n"
    "                    each file gives <key>.jpg (its own extension) + <key>.cls (the class index as text)\n"
    "  annotations FILE  CSV with a header row, or JSON Lines (by extension .csv / .jsonl, or --format); media\n"
    "                    paths are relative to FILE's folder. Kinds and members:\n"
    "                      image-caption, video-caption   media + .txt (the caption)\n"
    "                      image-class, video-class       media + .cls\n"
    "                      text                           .txt\n"
    "  text FILE         a UTF-8 text file cut into .txt samples of N non-blank lines or N paragraphs\n"
    "                    (default: --paragraphs-per-sample 1), for MLM shards\n"
    "\n"
    "  Media members take the source file's extension lower-cased, with jpeg/jpe written as jpg (the same\n"
    "  format, and the name WebDataset tasks use); other formats keep theirs (png, mp4, webm, ogv, ...).\n"
    "\n"
    "options:\n"
    "  --out DIR               output folder (created if missing)\n"
    "  --prefix NAME           shards are NAME-000000.tar, NAME-000001.tar, ... (default: shard)\n"
    "  --max-samples N         samples per shard at most (default 10000)\n"
    "  --max-bytes N[K|M|G]    bytes per shard at most, K/M/G = 1024^1/2/3 (default 1G); a sample larger than\n"
    "                          this alone gets a shard of its own, with a warning\n"
    "  --shuffle SEED          write the samples in a shuffled order, the same for the same SEED\n"
    "  --key-from-path         keys from the media paths (class/koala) instead of sample numbers (000000017);\n"
    "                          characters other than letters, digits, '_', '-', '/' become '_'\n"
    "  --force                 replace existing NAME-*.tar shards (and remove higher-numbered old ones)\n"
    "  --json                  print the result as JSON\n"
    "  --write-classes FILE    class kinds: the class names, one per line in index order (for\n"
    "                          `upmoe-catalog add labels NAME FILE`)\n"
    "  --path-field NAME       annotation column/field with the media path (default: path)\n"
    "  --text-field NAME       ... with the caption or text (default: caption; text for --kind text)\n"
    "  --label-field NAME      ... with the class (default: label): a class name, indexed in sorted order\n"
    "  --classes FILE          class names one per line: a label's index is its line (from 0)\n"
    "  --numeric-labels        labels are class indices already\n"
    "  --format csv|jsonl      annotation format when the file name does not tell\n"
    "  --lines-per-sample N, --paragraphs-per-sample N    text: how much text a sample holds\n"
    "\n"
    "Keys are the samples' positions in input order (folder order, annotation rows, text order), even with\n"
    "--shuffle. Shards are written under a hidden temporary name, fsynced and renamed; a failed run removes\n"
    "what it wrote. Members are regular files, mode 0644, owner upmoe (0/0), mtime 0: the same input gives\n"
    "byte-identical shards. Exit status: 0 ok, 1 error, 2 usage error.\n";

/* The one global: a signal handler can only reach static storage. It is handed to the writer explicitly. */
static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    (void)sig;
    got_signal = 1;
}

typedef struct args {
    const char *cmd, *input, *kind_name, *write_classes;
    int json, have_shuffle, help, version;
    uint64_t seed;
    upm_shard_input in;
    upm_shard_opts o;
} args;

static int fail(int code, const char *msg)
{
    fprintf(stderr, PROG ": error: %s\n", msg);
    return code == UPM_EUSAGE ? EXIT_USAGE : 1;
}

static int parse_count(const char *opt, const char *v, int sizes, uint64_t *out, upm_err *err)
{
    char digits[64];
    size_t n = strlen(v);
    uint64_t mult = 1;
    if (sizes && n > 1 && strchr("KkMmGgTt", v[n - 1])) {
        const char *u = strchr("KkMmGgTt", v[n - 1]);
        mult = (uint64_t)1 << (10 * (1 + (u - "KkMmGgTt") / 2));
        n--;
    }
    int64_t x;
    if (n >= sizeof digits)
        return upm_errf(err, UPM_EUSAGE, "%s '%s': not a number", opt, v);
    memcpy(digits, v, n);
    digits[n] = '\0';
    if (upm_parse_i64(digits, &x) != 0 || x < 1 || (uint64_t)x > UINT64_MAX / mult)
        return upm_errf(err, UPM_EUSAGE, "%s '%s': expected a whole number >= 1%s", opt, v, sizes ? " (K, M, G allowed)" : "");
    *out = (uint64_t)x * mult;
    return 0;
}

static int parse_kind(const char *s, upm_shard_kind *k, upm_err *err)
{
    static const struct {
        const char *name;
        upm_shard_kind kind;
    } kinds[] = {{"image-class", UPM_KIND_IMAGE_CLASS},     {"video-class", UPM_KIND_VIDEO_CLASS},
                 {"image-caption", UPM_KIND_IMAGE_CAPTION}, {"video-caption", UPM_KIND_VIDEO_CAPTION},
                 {"text", UPM_KIND_TEXT}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(s, kinds[i].name) == 0) {
            *k = kinds[i].kind;
            return 0;
        }
    return upm_errf(err, UPM_EUSAGE, "unknown --kind '%s' (image-class, video-class, image-caption, video-caption, text)", s);
}

/* Options that take a value: where it goes. */
static const char **value_slot(args *a, const char *name)
{
    static const char *const names[] = {"--out", "--prefix", "--kind", "--write-classes", "--path-field",
                                        "--text-field", "--label-field", "--classes", "--format"};
    const char **slots[] = {&a->o.out_dir,      &a->o.prefix,        &a->kind_name,    &a->write_classes,
                            &a->in.path_field, &a->in.text_field, &a->in.label_field, &a->in.classes_file,
                            &a->in.format};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0)
            return slots[i];
    return NULL;
}

/* One option (with its value when it takes one). */
static int option(args *a, const char *name, const char *val, upm_err *err)
{
    const char **slot = value_slot(a, name);
    uint64_t n;
    int rc = 0;
    if (slot)
        *slot = val;
    else if (strcmp(name, "--max-samples") == 0)
        rc = parse_count(name, val, 0, &a->o.max_samples, err);
    else if (strcmp(name, "--max-bytes") == 0)
        rc = parse_count(name, val, 1, &a->o.max_bytes, err);
    else if (strcmp(name, "--lines-per-sample") == 0 || strcmp(name, "--paragraphs-per-sample") == 0) {
        rc = parse_count(name, val, 0, &n, err);
        if (!rc && n > 1000000000)
            rc = upm_errf(err, UPM_EUSAGE, "%s '%s' is too large", name, val);
        *(name[2] == 'l' ? &a->in.lines_per_sample : &a->in.paragraphs_per_sample) = (long)n;
    } else if (strcmp(name, "--shuffle") == 0) {
        char *end;
        errno = 0;
        a->seed = strtoull(val, &end, 10);
        a->have_shuffle = 1;
        if (!*val || *end || errno || val[0] == '-' || val[0] == '+' || val[0] == ' ')
            rc = upm_errf(err, UPM_EUSAGE, "--shuffle '%s': expected a seed, a whole number >= 0", val);
    } else {
        rc = upm_errf(err, UPM_EUSAGE, "unknown option '%s'", name);
    }
    return rc;
}

static int is_flag(args *a, const char *s)
{
    int *flags[] = {&a->o.force, &a->json, &a->in.key_from_path, &a->in.numeric_labels, &a->help, &a->help, &a->version};
    static const char *const names[] = {"--force", "--json", "--key-from-path", "--numeric-labels", "--help", "-h",
                                        "--version"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0) {
            *flags[i] = 1;
            return 1;
        }
    return 0;
}

static int parse_args(int argc, char **argv, args *a, upm_err *err)
{
    a->o.prefix = "shard";
    a->o.max_samples = 10000;
    a->o.max_bytes = (uint64_t)1 << 30;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (is_flag(a, s))
            continue;
        if (strncmp(s, "--", 2) == 0 && s[2]) {
            char name[64];
            const char *eq = strchr(s, '=');
            size_t n = eq ? (size_t)(eq - s) : strlen(s);
            snprintf(name, sizeof name, "%.*s", (int)(n < 63 ? n : 63), s);
            if (!eq && i + 1 >= argc)
                return upm_errf(err, UPM_EUSAGE, "option %s needs a value", name);
            int rc = option(a, name, eq ? eq + 1 : argv[++i], err);
            if (rc)
                return rc;
        } else if (s[0] == '-' && s[1]) {
            return upm_errf(err, UPM_EUSAGE, "unknown option '%s'", s);
        } else if (!a->cmd) {
            a->cmd = s;
        } else if (!a->input) {
            a->input = s;
        } else {
            return upm_errf(err, UPM_EUSAGE, "unexpected argument '%s'", s);
        }
    }
    return 0;
}

/* Which options make sense together; anything that would be silently ignored is refused. */
static int check_args(args *a, upm_err *err)
{
    int folder = strcmp(a->cmd, "folder") == 0, ann = strcmp(a->cmd, "annotations") == 0, text = strcmp(a->cmd, "text") == 0;
    if (!folder && !ann && !text)
        return upm_errf(err, UPM_EUSAGE, "unknown command '%s' (folder, annotations or text)", a->cmd);
    if (!a->input)
        return upm_errf(err, UPM_EUSAGE, "'%s' needs an input %s", a->cmd, folder ? "folder" : "file");
    if (!a->o.out_dir)
        return upm_errf(err, UPM_EUSAGE, "--out DIR is required");
    if (text && a->kind_name && strcmp(a->kind_name, "text") != 0)
        return upm_errf(err, UPM_EUSAGE, "'text' makes text shards: --kind %s does not apply", a->kind_name);
    if (!text && !a->kind_name)
        return upm_errf(err, UPM_EUSAGE, "'%s' needs --kind", a->cmd);
    int rc = text ? 0 : parse_kind(a->kind_name, &a->in.kind, err);
    if (rc)
        return rc;
    if (text)
        a->in.kind = UPM_KIND_TEXT;
    int cls = a->in.kind == UPM_KIND_IMAGE_CLASS || a->in.kind == UPM_KIND_VIDEO_CLASS;
    if (folder && !cls)
        return upm_errf(err, UPM_EUSAGE, "'folder' takes --kind image-class or video-class, not %s", a->kind_name);
    if (!text && (a->in.lines_per_sample || a->in.paragraphs_per_sample))
        return upm_errf(err, UPM_EUSAGE, "--lines-per-sample and --paragraphs-per-sample apply to 'text' only");
    if (a->in.lines_per_sample && a->in.paragraphs_per_sample)
        return upm_errf(err, UPM_EUSAGE, "give --lines-per-sample or --paragraphs-per-sample, not both");
    if (text && !a->in.lines_per_sample && !a->in.paragraphs_per_sample)
        a->in.paragraphs_per_sample = 1;
    if (!ann && (a->in.path_field || a->in.text_field || a->in.label_field || a->in.format || a->in.classes_file ||
                 a->in.numeric_labels))
        return upm_errf(err, UPM_EUSAGE, "--path-field, --text-field, --label-field, --format, --classes and "
                                         "--numeric-labels apply to 'annotations' only");
    if (ann && a->in.kind == UPM_KIND_TEXT && a->in.path_field)
        return upm_errf(err, UPM_EUSAGE, "--kind text has no media: --path-field does not apply");
    if (ann && cls && a->in.text_field)
        return upm_errf(err, UPM_EUSAGE, "--kind %s reads --label-field, not --text-field", a->kind_name);
    if (ann && !cls && (a->in.label_field || a->in.classes_file || a->in.numeric_labels))
        return upm_errf(err, UPM_EUSAGE, "--label-field, --classes and --numeric-labels apply to class kinds only");
    if (a->in.kind == UPM_KIND_TEXT && a->in.key_from_path)
        return upm_errf(err, UPM_EUSAGE, "--key-from-path needs media paths: text samples have none");
    if (a->write_classes && !cls)
        return upm_errf(err, UPM_EUSAGE, "--write-classes applies to class kinds only");
    if (a->write_classes && a->in.numeric_labels && !a->in.classes_file)
        return upm_errf(err, UPM_EUSAGE, "--write-classes needs class names: --numeric-labels has none (add --classes)");
    return 0;
}

static void print_result(const args *a, const upm_shard_list *l, const upm_shard_result *r)
{
    if (a->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "url", r->url);
        cJSON_AddStringToObject(o, "out", r->out_abs);
        cJSON_AddStringToObject(o, "prefix", a->o.prefix);
        cJSON_AddNumberToObject(o, "samples", (double)r->samples);
        cJSON_AddNumberToObject(o, "shards", (double)r->shards);
        cJSON_AddNumberToObject(o, "bytes", (double)r->bytes);
        cJSON_AddNumberToObject(o, "oversized", (double)r->oversized);
        cJSON_AddNumberToObject(o, "skipped", (double)l->skipped);
        cJSON_AddNumberToObject(o, "removed_old_shards", (double)r->removed_stale);
        if (l->nclasses)
            cJSON_AddNumberToObject(o, "classes", (double)l->nclasses);
        else
            cJSON_AddNullToObject(o, "classes");
        if (a->write_classes)
            cJSON_AddStringToObject(o, "classes_file", a->write_classes);
        else
            cJSON_AddNullToObject(o, "classes_file");
        char *s = cJSON_Print(o);
        if (s)
            puts(s);
        free(s);
        cJSON_Delete(o);
        return;
    }
    printf("url      %s\n", r->url);
    printf("samples  %" PRIu64 "\n", r->samples);
    printf("shards   %" PRIu64 "\n", r->shards);
    printf("bytes    %" PRIu64 " (%.1f MB)\n", r->bytes, (double)r->bytes / 1e6);
    if (l->nclasses)
        printf("classes  %zu%s%s\n", l->nclasses, a->write_classes ? ", names in " : "",
               a->write_classes ? a->write_classes : "");
    if (r->removed_stale)
        printf("removed  %" PRIu64 " old shard%s numbered %06" PRIu64 " or more\n", r->removed_stale,
               r->removed_stale == 1 ? "" : "s", r->shards);
    printf("\nregister: upmoe-catalog add dataset NAME --task TASK --batch N --url '%s' --samples %" PRIu64 "\n",
           r->url, r->samples);
}

static int read_input(const args *a, upm_shard_list *l, upm_err *err)
{
    int rc = strcmp(a->cmd, "folder") == 0        ? upm_shard_read_folder(a->input, &a->in, l, err)
             : strcmp(a->cmd, "annotations") == 0 ? upm_shard_read_annotations(a->input, &a->in, l, err)
                                                  : upm_shard_read_text(a->input, &a->in, l, err);
    if (!rc && a->in.key_from_path)
        rc = upm_shard_check_unique_keys(l, err);
    if (!rc && a->have_shuffle)
        upm_shard_shuffle(l, a->seed);
    if (!rc && l->skipped)
        fprintf(stderr, PROG ": warning: skipped %" PRIu64 " entr%s that %s not %s files in class folders (first: %s)\n",
                l->skipped, l->skipped == 1 ? "y" : "ies", l->skipped == 1 ? "is" : "are",
                a->in.kind == UPM_KIND_VIDEO_CLASS ? "video" : "image", l->skipped_first);
    return rc;
}

int main(int argc, char **argv)
{
    args a = {0};
    upm_err err = {0};
    int rc = parse_args(argc, argv, &a, &err);
    if (rc)
        return fail(rc, err.msg);
    if (a.help) {
        fputs(usage, stdout);
        return 0;
    }
    if (a.version) {
        puts(PROG " " UPMOE_VERSION);
        return 0;
    }
    if (!a.cmd) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    if ((rc = check_args(&a, &err)) != 0)
        return fail(rc, err.msg);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    a.o.interrupted = &got_signal;
    a.o.progress = isatty(STDERR_FILENO);
    a.o.mtime = 0;

    upm_shard_list l = {0};
    upm_shard_result r = {0};
    rc = read_input(&a, &l, &err);
    if (!rc)
        rc = upm_shard_prepare(&a.o, &r, &err);
    if (!rc)
        rc = upm_shard_write_all(&l, &a.o, &r, &err);
    if (!rc && a.write_classes)
        rc = upm_shard_write_classes(&l, a.write_classes, &err);
    if (!rc)
        print_result(&a, &l, &r);
    upm_shard_list_free(&l);
    return rc ? fail(rc, err.msg) : 0;
}
