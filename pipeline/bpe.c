/* CLIP's byte-level BPE: loading the merges file into a vocabulary and a merge-rank hash map, encoding
 * cleaned text (bpe_text.c) piece by piece with a sharded word cache, and decoding ids back to text. */
#include "bpe.h"

#include <archive.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bpe_text.h"
#include "text.h"

#define N_SHARDS 16
#define SHARD_SLOTS 8192 /* power of two; a shard is emptied when 3/4 full */
#define SHARD_ARENA_MAX (1u << 22)
#define CACHE_MAX_WORD 128 /* longer pieces are not cached */
#define SIMPLE_MAX 96      /* longer pieces use the heap-ordered merge loop */

typedef struct {
    uint64_t hash; /* 0 = empty */
    uint32_t off;  /* into arena: key bytes, then n_ids int32 */
    uint16_t key_len, n_ids;
} cache_slot;

typedef struct {
    pthread_mutex_t lock;
    cache_slot *slots;
    unsigned char *arena;
    size_t used, arena_len, arena_cap;
} cache_shard;

struct upm_bpe {
    char *str; /* token strings, NUL-terminated, at str_off[id] */
    uint32_t str_off[UPM_BPE_VOCAB_SIZE + 1];
    unsigned char *raw; /* the bytes each token decodes to (with a literal "</w>"), raw_off[id]..raw_off[id+1] */
    uint32_t raw_off[UPM_BPE_VOCAB_SIZE + 1];
    uint8_t word_end[UPM_BPE_VOCAB_SIZE];
    int32_t byte_id[256]; /* byte -> id of its byte-level character */
    uint64_t *mkey;       /* merge map: (left id << 32 | right id) -> rank, merged id; rank -1 = empty */
    int32_t *mrank, *mid;
    size_t mmask;
    cache_shard shards[N_SHARDS];
};

static const char *const special_names[] = {"<|startoftext|>", "<|endoftext|>", "<|mask|>", "<|gen|>", "<|spe|>"};

static uint64_t hash_bytes(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, then a final mix */
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    return (h ^ (h >> 32)) | 1;
}

static size_t pair_slot(uint64_t key, size_t mask) { return (size_t)((key * 0x9e3779b97f4a7c15ULL) >> 40) & mask; }

/* The rank of merging (a, b) and the merged id, or INT32_MAX when there is no such merge. */
static int32_t merge_rank(const upm_bpe *b, int32_t x, int32_t y, int32_t *merged)
{
    uint64_t key = (uint64_t)(uint32_t)x << 32 | (uint32_t)y;
    for (size_t i = pair_slot(key, b->mmask);; i = (i + 1) & b->mmask) {
        if (b->mrank[i] < 0)
            return INT32_MAX;
        if (b->mkey[i] == key) {
            *merged = b->mid[i];
            return b->mrank[i];
        }
    }
}

/* ---- loading ---- */

/* Reads the whole file; gzip (CLIP ships bpe_simple_vocab_16e6.txt.gz) goes through libarchive's raw
 * format. */
static int read_file(const char *path, char **data, size_t *len, upm_err *err)
{
    struct archive *a = archive_read_new();
    if (!a)
        return upm_errf(err, UPM_ENOMEM, "out of memory reading %s", path);
    archive_read_support_filter_all(a);
    archive_read_support_format_raw(a);
    struct archive_entry *e;
    if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK || archive_read_next_header(a, &e) != ARCHIVE_OK) {
        int no = archive_errno(a);
        const char *why = no > 0 ? strerror(no) : archive_error_string(a);
        struct stat st;
        int rc = stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0
                     ? upm_errf(err, UPM_EBADDATA, "BPE vocabulary %s is empty", path)
                     : upm_errf(err, no == ENOENT ? UPM_ENOTFOUND : UPM_EIO, "cannot read BPE vocabulary %s: %s", path,
                                why ? why : "unreadable");
        archive_read_free(a);
        return rc;
    }
    size_t cap = 1 << 22, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (buf && n == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb)
                free(buf);
            buf = nb;
            cap *= 2;
        }
        if (!buf) {
            archive_read_free(a);
            return upm_errf(err, UPM_ENOMEM, "out of memory reading %s", path);
        }
        la_ssize_t got = archive_read_data(a, buf + n, cap - n);
        if (got < 0) {
            int rc = upm_errf(err, UPM_EIO, "cannot read BPE vocabulary %s: %s", path, archive_error_string(a));
            free(buf);
            archive_read_free(a);
            return rc;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    archive_read_free(a);
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
}

/* A temporary string -> id map for building the vocabulary (open addressing, ids into b->str). */
typedef struct {
    int32_t *slot; /* id, -1 = empty */
    size_t mask;
} str_map;

static int32_t map_find(const upm_bpe *b, const str_map *m, const char *s, size_t n)
{
    for (size_t i = hash_bytes((const unsigned char *)s, n) & m->mask;; i = (i + 1) & m->mask) {
        int32_t id = m->slot[i];
        if (id < 0)
            return -1;
        const char *t = b->str + b->str_off[id];
        if (b->str_off[id + 1] - b->str_off[id] - 1 == n && memcmp(t, s, n) == 0)
            return id;
    }
}

/* Adds b->str's token id; a later duplicate string takes over the name, as in CLIP's dict. */
static void map_put(const upm_bpe *b, str_map *m, int32_t id)
{
    const char *s = b->str + b->str_off[id];
    size_t n = b->str_off[id + 1] - b->str_off[id] - 1;
    size_t i = hash_bytes((const unsigned char *)s, n) & m->mask;
    for (; m->slot[i] >= 0; i = (i + 1) & m->mask) {
        int32_t o = m->slot[i];
        if (b->str_off[o + 1] - b->str_off[o] - 1 == n && memcmp(b->str + b->str_off[o], s, n) == 0)
            break;
    }
    m->slot[i] = id;
}

/* bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the others for 256 + n in byte order. */
static void byte_chars(uint32_t cs[256], int32_t byte_id[256])
{
    int n = 0, k = 0;
    for (int c = 0; c < 256; c++)
        if ((c >= '!' && c <= '~') || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff)) {
            byte_id[c] = k;
            cs[k++] = (uint32_t)c;
        }
    for (int c = 0; c < 256; c++)
        if (!((c >= '!' && c <= '~') || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff))) {
            byte_id[c] = k;
            cs[k++] = (uint32_t)(256 + n++);
        }
}

/* Sets token id's string to x + y; the arena was sized for the whole file. */
static void add_token(upm_bpe *b, int32_t id, const char *x, size_t nx, const char *y, size_t ny)
{
    char *p = b->str + b->str_off[id];
    memcpy(p, x, nx);
    memcpy(p + nx, y, ny);
    p[nx + ny] = 0;
    b->str_off[id + 1] = b->str_off[id] + (uint32_t)(nx + ny + 1);
    b->word_end[id] = nx + ny >= 4 && memcmp(p + nx + ny - 4, "</w>", 4) == 0;
}

/* Parses the merge lines into token strings 512.. and checks them. */
static int parse_merges(upm_bpe *b, str_map *m, char *data, const char *path, const char **lines, upm_err *err)
{
    char *p = data, *end = data + strlen(data);
    int line = 1;
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!strstr(p, "#version") || (nl && strstr(p, "#version") > nl))
        return upm_errf(err, UPM_EBADDATA,
                        "BPE vocabulary %s line 1: expected a header with \"#version\" "
                        "(CLIP's bpe_simple_vocab_16e6.txt)",
                        path);
    p = nl ? nl + 1 : end;
    for (int r = 0; r < UPM_BPE_N_MERGES; r++) {
        line++;
        if (p >= end)
            return upm_errf(err, UPM_EBADDATA, "BPE vocabulary %s has only %d merges; CLIP needs %d (line %d)", path, r,
                            UPM_BPE_N_MERGES, line);
        nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        if (e > p && e[-1] == '\r')
            e--;
        size_t n = (size_t)(e - p), bad;
        char *sp = memchr(p, ' ', n);
        if (!upm_utf8_valid(p, n, &bad))
            return upm_errf(err, UPM_EBADDATA, "BPE vocabulary %s line %d: invalid UTF-8 at byte %zu", path, line, bad);
        if (!sp || sp == p || sp + 1 == e || memchr(sp + 1, ' ', (size_t)(e - sp - 1)))
            return upm_errf(err, UPM_EBADDATA,
                            "BPE vocabulary %s line %d: expected two tokens separated by one "
                            "space, got \"%.*s\"",
                            path, line, (int)(n > 60 ? 60 : n), p);
        size_t na = (size_t)(sp - p), nb = (size_t)(e - sp - 1);
        if (map_find(b, m, p, na) < 0 || map_find(b, m, sp + 1, nb) < 0)
            return upm_errf(err, UPM_EBADDATA,
                            "BPE vocabulary %s line %d: \"%.*s\" is not a token built by an "
                            "earlier line",
                            path, line, (int)(map_find(b, m, p, na) < 0 ? na : nb),
                            map_find(b, m, p, na) < 0 ? p : sp + 1);
        lines[r] = p;
        add_token(b, 512 + r, p, na, sp + 1, nb); /* the merged string */
        map_put(b, m, 512 + r);
        p = nl ? nl + 1 : end;
    }
    return 0;
}

/* The merge map, keyed by the ids CLIP's encoder gives the two halves (a later duplicate pair keeps the later
 * rank, as dict(zip(merges, range(...))) does). */
static int build_merge_map(upm_bpe *b, const str_map *m, const char **lines)
{
    b->mmask = (1u << 17) - 1;
    b->mkey = malloc((b->mmask + 1) * sizeof *b->mkey);
    b->mrank = malloc((b->mmask + 1) * sizeof *b->mrank);
    b->mid = malloc((b->mmask + 1) * sizeof *b->mid);
    if (!b->mkey || !b->mrank || !b->mid)
        return UPM_ENOMEM;
    memset(b->mrank, 0xff, (b->mmask + 1) * sizeof *b->mrank);
    for (int r = 0; r < UPM_BPE_N_MERGES; r++) {
        const char *p = lines[r], *sp = strchr(p, ' ');
        const char *t = b->str + b->str_off[512 + r];
        size_t na = (size_t)(sp - p), nb = strlen(t) - na;
        int32_t x = map_find(b, m, p, na), y = map_find(b, m, sp + 1, nb), z = map_find(b, m, t, na + nb);
        uint64_t key = (uint64_t)(uint32_t)x << 32 | (uint32_t)y;
        size_t i = pair_slot(key, b->mmask);
        while (b->mrank[i] >= 0 && b->mkey[i] != key)
            i = (i + 1) & b->mmask;
        b->mkey[i] = key;
        b->mrank[i] = r;
        b->mid[i] = z;
    }
    return 0;
}

/* Decoded bytes of every token: byte_decoder applied to its characters ("</w>" stays literal). */
static int build_raw(upm_bpe *b, const uint32_t cs[256])
{
    int32_t dec[512]; /* byte-level character (< 324) -> byte */
    memset(dec, 0xff, sizeof dec);
    for (int c = 0; c < 256; c++)
        dec[cs[b->byte_id[c]]] = c;
    b->raw = malloc(b->str_off[UPM_BPE_VOCAB_SIZE]);
    if (!b->raw)
        return UPM_ENOMEM;
    uint32_t n = 0;
    for (int id = 0; id < UPM_BPE_VOCAB_SIZE; id++) {
        b->raw_off[id] = n;
        const unsigned char *s = (const unsigned char *)b->str + b->str_off[id];
        while (*s) { /* valid UTF-8 of byte-level characters (checked by the loader) */
            uint32_t c = *s++;
            if (c >= 0xc0) {
                c = ((c & 0x1f) << 6) | (*s++ & 0x3f);
            }
            b->raw[n++] = (unsigned char)(c < 512 && dec[c] >= 0 ? dec[c] : '?');
        }
    }
    b->raw_off[UPM_BPE_VOCAB_SIZE] = n;
    return 0;
}

static int build_vocab(upm_bpe *b, char *data, size_t len, const char *path, upm_err *err)
{
    uint32_t cs[256];
    byte_chars(cs, b->byte_id);
    str_map m = {NULL, (1u << 18) - 1};
    const char **lines = malloc(UPM_BPE_N_MERGES * sizeof *lines);
    b->str = malloc(len + 512 * 8 + 64);
    m.slot = malloc((m.mask + 1) * sizeof *m.slot);
    int rc = UPM_ENOMEM;
    if (!lines || !b->str || !m.slot)
        goto done;
    memset(m.slot, 0xff, (m.mask + 1) * sizeof *m.slot);
    b->str_off[0] = 0;
    for (int k = 0; k < 512; k++) { /* the byte-level characters, then the same + "</w>" */
        unsigned char u[4];
        int n = upm_utf8_put(cs[k % 256], u);
        add_token(b, k, (const char *)u, (size_t)n, "</w>", k < 256 ? 0 : 4);
        map_put(b, &m, k);
    }
    if ((rc = parse_merges(b, &m, data, path, lines, err)) != 0)
        goto done;
    for (int k = 0; k < 5; k++)
        add_token(b, UPM_BPE_SOT + k, special_names[k], strlen(special_names[k]), "", 0);
    if ((rc = build_merge_map(b, &m, lines)) == 0)
        rc = build_raw(b, cs);
done:
    free(lines);
    free(m.slot);
    if (rc == UPM_ENOMEM)
        upm_errf(err, rc, "out of memory loading BPE vocabulary %s", path);
    return rc;
}

int upm_bpe_load(const char *path, upm_bpe **out, upm_err *err)
{
    *out = NULL;
    if (!path || !*path)
        return upm_errf(err, UPM_EUSAGE, "no BPE vocabulary path given");
    char *data = NULL;
    size_t len = 0;
    int rc = read_file(path, &data, &len, err);
    if (rc)
        return rc;
    if (memchr(data, 0, len)) {
        free(data);
        return upm_errf(err, UPM_EBADDATA, "BPE vocabulary %s is not a text file (it holds NUL bytes)", path);
    }
    upm_bpe *b = calloc(1, sizeof *b);
    if (!b) {
        free(data);
        return upm_errf(err, UPM_ENOMEM, "out of memory loading BPE vocabulary %s", path);
    }
    for (int s = 0; s < N_SHARDS; s++)
        pthread_mutex_init(&b->shards[s].lock, NULL);
    rc = build_vocab(b, data, len, path, err);
    free(data);
    if (rc) {
        upm_bpe_free(b);
        return rc;
    }
    *out = b;
    return 0;
}

void upm_bpe_free(upm_bpe *b)
{
    if (!b)
        return;
    for (int s = 0; s < N_SHARDS; s++) {
        pthread_mutex_destroy(&b->shards[s].lock);
        free(b->shards[s].slots);
        free(b->shards[s].arena);
    }
    free(b->str);
    free(b->raw);
    free(b->mkey);
    free(b->mrank);
    free(b->mid);
    free(b);
}

int upm_bpe_is_special(int32_t id) { return id >= UPM_BPE_SOT && id < UPM_BPE_VOCAB_SIZE; }

int upm_bpe_is_word_end(const upm_bpe *b, int32_t id) { return id >= 0 && id < UPM_BPE_VOCAB_SIZE && b->word_end[id]; }

const char *upm_bpe_token(const upm_bpe *b, int32_t id)
{
    return id >= 0 && id < UPM_BPE_VOCAB_SIZE ? b->str + b->str_off[id] : NULL;
}

/* ---- the word cache ---- */

/* Copies the cached ids of key into ids (room for len) and returns their count, or -1. */
static int cache_get(upm_bpe *b, uint64_t h, const unsigned char *key, size_t len, int32_t *ids)
{
    cache_shard *s = &b->shards[h % N_SHARDS];
    int found = -1;
    pthread_mutex_lock(&s->lock);
    if (s->slots)
        for (size_t i = (h >> 8) & (SHARD_SLOTS - 1); s->slots[i].hash; i = (i + 1) & (SHARD_SLOTS - 1)) {
            cache_slot *c = &s->slots[i];
            if (c->hash == h && c->key_len == len && memcmp(s->arena + c->off, key, len) == 0) {
                memcpy(ids, s->arena + c->off + len, c->n_ids * sizeof *ids);
                found = c->n_ids;
                break;
            }
        }
    pthread_mutex_unlock(&s->lock);
    return found;
}

/* Remembers key -> ids; a full shard starts over (bounded memory on endless streams of new words). */
static void cache_put(upm_bpe *b, uint64_t h, const unsigned char *key, size_t len, const int32_t *ids, int n)
{
    cache_shard *s = &b->shards[h % N_SHARDS];
    size_t need = len + (size_t)n * sizeof *ids;
    pthread_mutex_lock(&s->lock);
    if (!s->slots)
        s->slots = calloc(SHARD_SLOTS, sizeof *s->slots);
    if (s->slots && (s->used >= SHARD_SLOTS * 3 / 4 || s->arena_len + need > SHARD_ARENA_MAX)) {
        memset(s->slots, 0, SHARD_SLOTS * sizeof *s->slots);
        s->used = s->arena_len = 0;
    }
    if (s->slots && s->arena_len + need > s->arena_cap) {
        size_t cap = s->arena_cap ? 2 * s->arena_cap : 1 << 16;
        unsigned char *a = realloc(s->arena, cap);
        if (a) {
            s->arena = a;
            s->arena_cap = cap;
        }
    }
    if (s->slots && s->arena_len + need <= s->arena_cap) { /* else: not cached, which is only slower */
        size_t i = (h >> 8) & (SHARD_SLOTS - 1);
        while (s->slots[i].hash && !(s->slots[i].hash == h && s->slots[i].key_len == len &&
                                     memcmp(s->arena + s->slots[i].off, key, len) == 0))
            i = (i + 1) & (SHARD_SLOTS - 1);
        if (!s->slots[i].hash) { /* another thread may have put it meanwhile */
            memcpy(s->arena + s->arena_len, key, len);
            memcpy(s->arena + s->arena_len + len, ids, (size_t)n * sizeof *ids);
            s->slots[i] = (cache_slot){h, (uint32_t)s->arena_len, (uint16_t)len, (uint16_t)n};
            s->arena_len += need;
            s->used++;
        }
    }
    pthread_mutex_unlock(&s->lock);
}

/* ---- BPE merges ---- */

/* CLIP's bpe(): merge the lowest-ranked adjacent pair everywhere (left to right), until none is left. */
static int bpe_simple(const upm_bpe *b, int32_t *s, int n)
{
    while (n > 1) {
        int32_t best = INT32_MAX, merged = 0, first = 0, second = 0, m;
        for (int i = 0; i + 1 < n; i++) {
            int32_t r = merge_rank(b, s[i], s[i + 1], &m);
            if (r < best) {
                best = r;
                merged = m;
                first = s[i];
                second = s[i + 1];
            }
        }
        if (best == INT32_MAX)
            break;
        int w = 0;
        for (int i = 0; i < n;) {
            if (i + 1 < n && s[i] == first && s[i + 1] == second) {
                s[w++] = merged;
                i += 2;
            } else {
                s[w++] = s[i++];
            }
        }
        n = w;
    }
    return n;
}

typedef struct {
    int32_t rank, pos;
} heap_ent;

static int heap_less(heap_ent a, heap_ent b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(heap_ent *h, int *n, heap_ent e)
{
    int i = (*n)++;
    for (; i > 0 && heap_less(e, h[(i - 1) / 2]); i = (i - 1) / 2)
        h[i] = h[(i - 1) / 2];
    h[i] = e;
}

static heap_ent heap_pop(heap_ent *h, int *n)
{
    heap_ent top = h[0], last = h[--*n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && heap_less(h[c + 1], h[c]))
            c++;
        if (!heap_less(h[c], last))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

/* The same result in O(n log n) for long pieces (a paragraph of CJK is one piece): pairs are taken in
 * (rank, position) order. Pairs a merge creates always rank later (a merge's halves are built by earlier
 * merges, which the loader checks), so each rank is still applied left to right before any later one. */
static int bpe_heap(const upm_bpe *b, int32_t *s, int n, int32_t *next, heap_ent *h)
{
    int nh = 0;
    int32_t m = -1;
    for (int i = 0; i < n; i++) {
        next[i] = i + 1 < n ? i + 1 : -1;
        int32_t r = i + 1 < n ? merge_rank(b, s[i], s[i + 1], &m) : INT32_MAX;
        if (r != INT32_MAX)
            heap_push(h, &nh, (heap_ent){r, i});
    }
    int32_t *prev = next + n;
    for (int i = 0; i < n; i++)
        prev[i] = i - 1;
    while (nh > 0) {
        heap_ent e = heap_pop(h, &nh);
        int p = e.pos, q = next[p];
        if (s[p] < 0 || q < 0 || merge_rank(b, s[p], s[q], &m) != e.rank)
            continue; /* stale: one side was merged away since */
        s[p] = m;
        s[q] = -1;
        next[p] = next[q];
        if (next[p] >= 0)
            prev[next[p]] = p;
        int32_t r;
        if (prev[p] >= 0 && (r = merge_rank(b, s[prev[p]], s[p], &m)) != INT32_MAX)
            heap_push(h, &nh, (heap_ent){r, prev[p]});
        if (next[p] >= 0 && (r = merge_rank(b, s[p], s[next[p]], &m)) != INT32_MAX)
            heap_push(h, &nh, (heap_ent){r, p});
    }
    int w = 0;
    for (int i = 0; i < n; i++)
        if (s[i] >= 0)
            s[w++] = s[i];
    return w;
}

/* ---- encode ---- */

typedef struct {
    unsigned char *bytes;
    int32_t *sym, *links;
    heap_ent *heap;
    size_t cap;
} scratch;

static int scratch_fit(scratch *w, size_t n)
{
    if (n <= w->cap)
        return 0;
    size_t cap = n < 256 ? 256 : 2 * n;
    free(w->bytes);
    free(w->sym);
    free(w->links);
    free(w->heap);
    w->bytes = malloc(cap);
    w->sym = malloc(cap * sizeof *w->sym);
    w->links = malloc(2 * cap * sizeof *w->links);
    w->heap = malloc(3 * cap * sizeof *w->heap);
    w->cap = w->bytes && w->sym && w->links && w->heap ? cap : 0;
    return w->cap ? 0 : UPM_ENOMEM;
}

typedef struct {
    int32_t *ids;
    int cap, n;  /* n counts every id, also those past cap */
    int content; /* ids between the start and end tokens */
    int limit;   /* content ids allowed (truncation), or -1 */
} sink;

/* Returns 1 once the truncation limit is reached. */
static int put(sink *o, int32_t id, int is_content)
{
    if (is_content && o->limit >= 0 && o->content >= o->limit)
        return 1;
    if (o->n < o->cap)
        o->ids[o->n] = id;
    o->n++;
    o->content += is_content;
    return 0;
}

/* One pre-tokenizer piece: its UTF-8 bytes as byte-level symbols ("</w>" on the last), merged. */
static int encode_piece(upm_bpe *b, scratch *w, const uint32_t *cp, size_t k, sink *o)
{
    if (scratch_fit(w, 4 * k))
        return UPM_ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < k; i++)
        n += (size_t)upm_utf8_put(cp[i], w->bytes + n);
    uint64_t h = 0;
    int cnt = -1;
    if (n <= CACHE_MAX_WORD) {
        h = hash_bytes(w->bytes, n);
        cnt = cache_get(b, h, w->bytes, n, w->sym);
    }
    if (cnt < 0) {
        for (size_t i = 0; i < n; i++)
            w->sym[i] = b->byte_id[w->bytes[i]];
        w->sym[n - 1] += 256;
        cnt = n <= SIMPLE_MAX ? bpe_simple(b, w->sym, (int)n) : bpe_heap(b, w->sym, (int)n, w->links, w->heap);
        if (n <= CACHE_MAX_WORD)
            cache_put(b, h, w->bytes, n, w->sym, cnt);
    }
    for (int i = 0; i < cnt; i++)
        if (put(o, w->sym[i], 1))
            return 1;
    return 0;
}

/* A special token's name at a[i]: its index 0..4, and its length in *len; -1 when none. */
static int special_at(const uint32_t *a, size_t n, size_t i, size_t *len)
{
    for (int k = 0; k < 5; k++) {
        const char *s = special_names[k];
        size_t j = 0;
        while (s[j] && i + j < n && a[i + j] == (unsigned char)s[j])
            j++;
        if (!s[j]) {
            *len = j;
            return k;
        }
    }
    return -1;
}

/* Length of the contraction ('s 't 're 've 'm 'll 'd; 'ſ folds to 's) at a[i] == '\'', or 0. */
static size_t contraction_at(const uint32_t *a, size_t n, size_t i)
{
    uint32_t c = i + 1 < n ? a[i + 1] : 0, d = i + 2 < n ? a[i + 2] : 0;
    if (c == 's' || c == 0x17f || c == 't' || c == 'm' || c == 'd')
        return 2;
    if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l'))
        return 3;
    return 0;
}

/* CLIP's findall over the cleaned text; each match is encoded at once. Returns 0, 1 (limit reached) or < 0.
 * U+0345 (combining ypogegrammeni) matches no alternative of CLIP's case-insensitive regex (it case-folds
 * to a letter, so the negated class refuses it, yet it is no letter), so findall skips it like a space. */
static int pretokenize(upm_bpe *b, const uint32_t *a, size_t n, scratch *w, sink *o)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i + 1, len;
        int k, cls = upm_uc_class(a[i]);
        if (upm_uc_is_space(a[i]) || a[i] == 0x345) { /* see above */
            i++;
            continue;
        }
        if (a[i] == '<' && (k = special_at(a, n, i, &len)) >= 0) {
            if (put(o, UPM_BPE_SOT + k, 1))
                return 1;
            i += len;
            continue;
        }
        if (a[i] == '\'' && (len = contraction_at(a, n, i)) > 0)
            j = i + len;
        else if (cls == UPM_UC_LETTER)
            while (j < n && upm_uc_class(a[j]) == UPM_UC_LETTER)
                j++;
        else if (cls == UPM_UC_OTHER)
            while (j < n && !upm_uc_is_space(a[j]) && a[j] != 0x345 && upm_uc_class(a[j]) == UPM_UC_OTHER)
                j++;
        int rc = encode_piece(b, w, a + i, j - i, o);
        if (rc)
            return rc;
        i = j;
    }
    return 0;
}

int upm_bpe_encode(upm_bpe *b, const char *text, size_t len, int32_t *ids, int max_ids, unsigned flags, upm_err *err)
{
    if (!b || (!text && len) || max_ids < 0 || (!ids && max_ids > 0))
        return upm_errf(err, UPM_EUSAGE, "upm_bpe_encode: missing vocabulary, text or id buffer");
    if (len > UPM_BPE_MAX_TEXT)
        return upm_errf(err, UPM_EINVAL, "text of %zu bytes is longer than the %d bytes one call encodes", len,
                        UPM_BPE_MAX_TEXT);
    size_t bad;
    if ((flags & UPM_BPE_STRICT_UTF8) && !upm_utf8_valid(text ? text : "", len, &bad))
        return upm_errf(err, UPM_EBADDATA, "text is not valid UTF-8 (byte %zu)", bad);
    int sot = !!(flags & UPM_BPE_ADD_SOT), eot = !!(flags & UPM_BPE_ADD_EOT);
    sink o = {ids, max_ids, 0, 0, -1};
    if (flags & UPM_BPE_TRUNCATE) {
        o.limit = max_ids - sot - eot;
        if (o.limit < 0)
            return upm_errf(err, UPM_EINVAL, "max_ids %d leaves no room for the start/end tokens", max_ids);
    }
    uint32_t *a;
    size_t n;
    if (upm_bpe_clean(text ? text : "", len, &a, &n, NULL))
        return upm_errf(err, UPM_ENOMEM, "out of memory encoding %zu bytes of text", len);
    scratch w = {0};
    if (sot)
        put(&o, UPM_BPE_SOT, 0);
    int rc = pretokenize(b, a, n, &w, &o);
    if (eot)
        put(&o, UPM_BPE_EOT, 0);
    free(a);
    free(w.bytes);
    free(w.sym);
    free(w.links);
    free(w.heap);
    if (rc < 0)
        return upm_errf(err, rc, "out of memory encoding %zu bytes of text", len);
    if (o.n > max_ids)
        return upm_errf(err, UPM_EINVAL, "text needs %d tokens, more than the %d allowed (truncation is off)", o.n,
                        max_ids);
    return o.n;
}

/* ---- decode ---- */

int upm_bpe_decode(const upm_bpe *b, const int32_t *ids, int n, char **text, size_t *len, upm_err *err)
{
    *text = NULL;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= UPM_BPE_VOCAB_SIZE)
            return upm_errf(err, UPM_EINVAL, "token id %d (position %d) is outside the vocabulary (0..%d)", ids[i], i,
                            UPM_BPE_VOCAB_SIZE - 1);
        total += b->raw_off[ids[i] + 1] - b->raw_off[ids[i]];
    }
    char *raw = malloc(total + 1);
    uint32_t *cp = malloc((total + 1) * sizeof *cp);
    unsigned char *out = malloc(3 * total + 1);
    if (!raw || !cp || !out) {
        free(raw);
        free(cp);
        free(out);
        return upm_errf(err, UPM_ENOMEM, "out of memory decoding %d tokens", n);
    }
    size_t m = 0;
    for (int i = 0; i < n; i++) { /* join, turning each "</w>" into a space on the way */
        uint32_t s = b->raw_off[ids[i]], e = b->raw_off[ids[i] + 1];
        memcpy(raw + m, b->raw + s, e - s);
        m += e - s;
        if (m >= 4 && memcmp(raw + m - 4, "</w>", 4) == 0) {
            m -= 3;
            raw[m - 1] = ' ';
        }
    }
    size_t k = upm_utf8_decode_lossy(raw, m, cp, NULL), o = 0;
    for (size_t i = 0; i < k; i++)
        o += (size_t)upm_utf8_put(cp[i], out + o);
    out[o] = 0;
    free(raw);
    free(cp);
    *text = (char *)out;
    if (len)
        *len = o;
    return 0;
}
