/* WebDataset shard reader: libarchive reads the tar (any built-in compression filter) through callbacks
 * over a upm_source, and members are grouped into samples by webdataset's naming rules (see wds.h).
 * The reader always holds the header of the next counted member ("pending"), which is how a sample's end
 * is found without reading ahead any bytes. */
#include "wds.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct upm_wds {
    upm_source *src;
    const char *url; /* the source's */
    struct archive *a;
    upm_wds_opts o;
    int src_rc; /* a source error met inside a libarchive callback */
    upm_err src_err;
    /* the pending member: its path, where its key ends, its size */
    int have_pending, at_eof;
    char *pname;
    size_t pcap, plen, pkey;
    int64_t psize;
    int broken;
    upm_err broken_err;
    uint64_t next_index;
    char *last_key; /* key of the last sample read or skipped, for locating damage */
    uint64_t last_index;
};

void upm_wds_opts_default(upm_wds_opts *o)
{
    o->max_member_size = (uint64_t)256 << 20;
}

void upm_wds_sample_free(upm_wds_sample *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_fields; i++) {
        free(s->fields[i].ext);
        free(s->fields[i].data);
    }
    free(s->fields);
    free(s->key);
    free(s->url);
    memset(s, 0, sizeof *s);
}

const upm_wds_field *upm_wds_sample_get(const upm_wds_sample *s, const char *ext)
{
    for (size_t i = 0; i < s->n_fields; i++)
        if (strcmp(s->fields[i].ext, ext) == 0)
            return &s->fields[i];
    return NULL;
}

/* ---- webdataset's naming rules ---- */

/* Emulates Python's re.match of webdataset's pattern (see wds.h): the engine tries the ".*" + "/" branch
 * ending at each '/' from the last one back (".*" cannot cross a newline), then the empty alternative;
 * for each, "[^.]+" takes the run up to the next '.', which must be followed by a '/'-free rest. */
int upm_wds_split_name(const char *name, size_t len, size_t *key_len)
{
    const char *nl = memchr(name, '\n', len);
    size_t reach = nl ? (size_t)(nl - name) : len; /* ".*" covers name[0..s) only if s <= reach */

    for (size_t c = len + 1; c-- > 0;) {
        /* candidate start of "[^.]+": after the slash at c - 1, or the string start (c == 0) */
        if (c > 0 && (name[c - 1] != '/' || c - 1 > reach))
            continue;
        size_t j = c;
        while (j < len && name[j] != '.')
            j++;
        if (j == c || j == len)
            continue;
        if (memchr(name + j + 1, '/', len - j - 1))
            continue;
        *key_len = j;
        return 1;
    }
    return 0;
}

static int starts2(const char *s, size_t n)
{
    return n >= 2 && s[0] == '_' && s[1] == '_';
}

static int ends2(const char *s, size_t n)
{
    return n >= 2 && s[n - 2] == '_' && s[n - 1] == '_';
}

/* webdataset skips "/" not in name and name.startswith("__") and name.endswith("__"), and
 * re.match(r"__[^/]*__($|/)", name) ("$" also matches before a final newline). */
int upm_wds_is_meta(const char *name, size_t len)
{
    const char *slash = memchr(name, '/', len);
    if (!slash)
        return (starts2(name, len) && ends2(name, len)) ||
               (len >= 5 && starts2(name, len) && name[len - 1] == '\n' && ends2(name, len - 1));
    size_t seg = (size_t)(slash - name);
    return seg >= 4 && starts2(name, seg) && ends2(name, seg);
}

/* Copies s for an error message with control bytes escaped, so the message stays one line. */
static const char *printable(const char *s, size_t n, char *out, size_t outsize)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < outsize; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(out + o, outsize - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
    return out;
}

/* ---- libarchive callbacks ---- */

static la_ssize_t read_cb(struct archive *a, void *ud, const void **buf)
{
    upm_wds *r = ud;
    size_t len;
    int rc = upm_source_next(r->src, buf, &len, &r->src_err);
    if (rc) {
        r->src_rc = rc;
        archive_set_error(a, EIO, "%s", r->src_err.msg);
        return -1;
    }
    return (la_ssize_t)len;
}

/* Local files seek; for HTTP returning 0 makes libarchive read through instead. */
static la_int64_t skip_cb(struct archive *a, void *ud, la_int64_t request)
{
    upm_wds *r = ud;
    uint64_t done;
    if (request <= 0 || !upm_source_can_seek(r->src))
        return 0;
    int rc = upm_source_skip(r->src, (uint64_t)request, &done, &r->src_err);
    if (rc) {
        r->src_rc = rc;
        archive_set_error(a, EIO, "%s", r->src_err.msg);
        return ARCHIVE_FATAL;
    }
    return (la_int64_t)done;
}

/* ---- errors ---- */

/* Marks the shard broken. Source errors keep their code and message; damage names the last sample. */
static int shard_error(upm_wds *r, upm_err *err, const char *doing)
{
    char key[300];
    if (!r->broken) {
        const char *ae = archive_error_string(r->a);
        if (r->last_key)
            printable(r->last_key, strlen(r->last_key), key, sizeof key);
        if (r->src_rc && !r->last_key)
            upm_errf(&r->broken_err, r->src_rc, "%s", r->src_err.msg);
        else if (r->src_rc)
            upm_errf(&r->broken_err, r->src_rc, "%s (after sample \"%s\", index %" PRIu64 ")", r->src_err.msg, key,
                     r->last_index);
        else if (r->last_key)
            upm_errf(&r->broken_err, UPM_EBADDATA, "%s: damaged or truncated tar after sample \"%s\" (index %" PRIu64
                     ") while %s: %s", r->url, key, r->last_index, doing, ae ? ae : "unknown libarchive error");
        else
            upm_errf(&r->broken_err, UPM_EBADDATA, "%s: not a readable tar archive (before the first sample, while "
                     "%s): %s", r->url, doing, ae ? ae : "unknown libarchive error");
        r->broken = r->broken_err.code;
    }
    if (err)
        *err = r->broken_err;
    return r->broken;
}

static int nomem(upm_wds *r, upm_err *err)
{
    upm_errf(&r->broken_err, UPM_ENOMEM, "%s: out of memory reading the shard", r->url);
    r->broken = UPM_ENOMEM;
    if (err)
        *err = r->broken_err;
    return UPM_ENOMEM;
}

/* ---- members ---- */

/* advance() result for an unreadable header: the caller names the damage (it knows the last sample). */
#define HEADER_DAMAGED (-100)

/* Reads headers up to the next member that counts (regular, not metadata, a name that splits) and makes
 * it pending, or notes the end of the archive. */
static int advance(upm_wds *r, upm_err *err)
{
    r->have_pending = 0;
    for (;;) {
        struct archive_entry *e;
        int rc = archive_read_next_header(r->a, &e);
        if (rc == ARCHIVE_EOF) {
            r->at_eof = 1;
            return UPM_OK;
        }
        if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN)
            return HEADER_DAMAGED;
        if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e))
            continue;
        const char *name = archive_entry_pathname_utf8(e);
        if (!name)
            name = archive_entry_pathname(e);
        size_t n = name ? strlen(name) : 0, kl;
        if (!name || upm_wds_is_meta(name, n) || !upm_wds_split_name(name, n, &kl))
            continue;
        if (n + 1 > r->pcap) {
            char *p = realloc(r->pname, n + 1);
            if (!p)
                return nomem(r, err);
            r->pname = p;
            r->pcap = n + 1;
        }
        memcpy(r->pname, name, n + 1);
        for (char *x = r->pname + kl + 1; *x; x++)
            if (*x >= 'A' && *x <= 'Z')
                *x = (char)(*x - 'A' + 'a');
        r->plen = n;
        r->pkey = kl;
        r->psize = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
        r->have_pending = 1;
        return UPM_OK;
    }
}

/* Reads the pending member's bytes into a new field of s. */
static int read_member(upm_wds *r, upm_wds_sample *s, upm_err *err)
{
    size_t size = (size_t)r->psize, got = 0;
    upm_wds_field *nf = realloc(s->fields, (s->n_fields + 1) * sizeof *nf);
    if (!nf)
        return nomem(r, err);
    s->fields = nf;
    upm_wds_field *f = &nf[s->n_fields];
    f->ext = strdup(r->pname + r->pkey + 1);
    f->data = malloc(size ? size : 1);
    f->size = size;
    if (!f->ext || !f->data) {
        free(f->ext);
        free(f->data);
        return nomem(r, err);
    }
    s->n_fields++;
    while (got < size) {
        la_ssize_t n = archive_read_data(r->a, f->data + got, size - got);
        if (n < 0)
            return shard_error(r, err, "reading member data");
        if (n == 0) {
            archive_set_error(r->a, EIO, "member \"%s\" ends after %zu of %zu bytes", r->pname, got, size);
            return shard_error(r, err, "reading member data");
        }
        got += (size_t)n;
    }
    return UPM_OK;
}

/* Why the pending member makes its sample bad (written into why), or "" when it can be read. */
static void judge_member(upm_wds *r, const upm_wds_sample *s, char *why, size_t whyn)
{
    char name[300];
    const char *ext = r->pname + r->pkey + 1;
    printable(r->pname, r->plen, name, sizeof name);
    if (upm_wds_sample_get(s, ext))
        snprintf(why, whyn, "duplicate extension \"%s\" in the sample (member \"%s\")", ext, name);
    else if (r->psize < 0)
        snprintf(why, whyn, "member \"%s\" has no size in its header", name);
    else if ((uint64_t)r->psize > r->o.max_member_size || (uint64_t)r->psize > SIZE_MAX / 2)
        snprintf(why, whyn, "member \"%s\" is %" PRId64 " bytes, over the limit of %" PRIu64 " bytes per member", name,
                 r->psize, r->o.max_member_size);
}

/* Consumes the members of the next sample. With s == NULL the bytes are skipped unread; otherwise they
 * are read into s unless the sample turns out bad (why[0] != 0). Returns 1 when a sample was consumed,
 * 0 at the end of the shard, < 0 on a shard error. */
static int take(upm_wds *r, upm_wds_sample *s, char *why, size_t whyn, upm_err *err)
{
    why[0] = '\0';
    if (r->broken)
        return shard_error(r, err, "");
    if (!r->have_pending)
        return 0;
    size_t klen = r->pkey;
    char *key = malloc(klen + 1);
    if (!key)
        return nomem(r, err);
    memcpy(key, r->pname, klen);
    key[klen] = '\0';
    uint64_t index = r->next_index++;
    int damaged = 0;
    while (!damaged && r->have_pending && r->pkey == klen && memcmp(r->pname, key, klen) == 0) {
        int rc = UPM_OK;
        if (s && !why[0])
            judge_member(r, s, why, whyn);
        if (s && !why[0])
            rc = read_member(r, s, err);
        if (!rc)
            rc = advance(r, err);
        damaged = rc == HEADER_DAMAGED;
        if (rc && !damaged) {
            free(key);
            return rc;
        }
    }
    free(r->last_key);
    r->last_key = key;
    r->last_index = index;
    /* A damaged header after fully read members ends the shard the way Python's tarfile ends it: this
     * sample stands, and the next call reports the damage. */
    if (damaged)
        shard_error(r, NULL, "reading a member header");
    if (s) {
        s->key = strdup(key);
        s->url = strdup(r->url);
        s->index = index;
        if (!s->key || !s->url)
            return nomem(r, err);
    }
    return 1;
}

/* ---- public ---- */

int upm_wds_open_source(upm_source *src, const upm_wds_opts *opts, upm_wds **out, upm_err *err)
{
    *out = NULL;
    upm_wds *r = calloc(1, sizeof *r);
    if (!r)
        return upm_errf(err, UPM_ENOMEM, "%s: out of memory opening the shard", upm_source_url(src));
    r->src = src;
    r->url = upm_source_url(src);
    if (opts)
        r->o = *opts;
    else
        upm_wds_opts_default(&r->o);
    r->a = archive_read_new();
    if (!r->a) {
        free(r);
        return upm_errf(err, UPM_ENOMEM, "%s: out of memory creating the tar reader", upm_source_url(src));
    }
    archive_read_support_format_tar(r->a);
    /* The filters built into libarchive; ARCHIVE_WARN means an external program would be used instead. */
    archive_read_support_filter_gzip(r->a);
    archive_read_support_filter_bzip2(r->a);
    archive_read_support_filter_xz(r->a);
    archive_read_support_filter_zstd(r->a);
    archive_read_support_filter_lz4(r->a);
    archive_read_set_read_callback(r->a, read_cb);
    archive_read_set_skip_callback(r->a, skip_cb);
    archive_read_set_callback_data(r->a, r);
    int rc = archive_read_open1(r->a) == ARCHIVE_OK ? UPM_OK : shard_error(r, err, "opening the archive");
    if (!rc && (rc = advance(r, err)) == HEADER_DAMAGED)
        rc = shard_error(r, err, "reading the first member header");
    if (rc) {
        r->src = NULL; /* the caller keeps it */
        upm_wds_close(r);
        return rc;
    }
    *out = r;
    return UPM_OK;
}

int upm_wds_open(const char *url, const upm_source_opts *src_opts, const upm_wds_opts *opts, upm_wds **out,
                 upm_err *err)
{
    upm_source *src;
    *out = NULL;
    int rc = upm_source_open(url, src_opts, &src, err);
    if (!rc && (rc = upm_wds_open_source(src, opts, out, err)) != 0)
        upm_source_close(src);
    return rc;
}

void upm_wds_close(upm_wds *r)
{
    if (!r)
        return;
    if (r->a)
        archive_read_free(r->a);
    upm_source_close(r->src);
    free(r->pname);
    free(r->last_key);
    free(r);
}

int upm_wds_next(upm_wds *r, upm_wds_sample *out, upm_err *err)
{
    char why[700], key[300];
    memset(out, 0, sizeof *out);
    int rc = take(r, out, why, sizeof why, err);
    if (rc <= 0 || !why[0]) {
        if (rc <= 0)
            upm_wds_sample_free(out);
        return rc;
    }
    upm_wds_sample_free(out);
    return upm_errf(err, UPM_EBADDATA, "%s: %s: %s", r->url, printable(r->last_key, strlen(r->last_key), key,
                    sizeof key), why);
}

int upm_wds_skip(upm_wds *r, uint64_t n, uint64_t *skipped, upm_err *err)
{
    char why[8];
    *skipped = 0;
    while (*skipped < n) {
        int rc = take(r, NULL, why, sizeof why, err);
        if (rc < 0)
            return rc;
        if (rc == 0)
            break;
        (*skipped)++;
    }
    return UPM_OK;
}

int upm_wds_broken(const upm_wds *r)
{
    return r->broken != 0;
}

int upm_wds_at_end(const upm_wds *r)
{
    return !r->broken && !r->have_pending && r->at_eof;
}

const char *upm_wds_url(const upm_wds *r)
{
    return r->url;
}

const char *upm_wds_last_key(const upm_wds *r)
{
    return r->last_key;
}

uint64_t upm_wds_next_index(const upm_wds *r)
{
    return r->next_index;
}

upm_source *upm_wds_source(upm_wds *r)
{
    return r->src;
}
