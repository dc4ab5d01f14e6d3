/* upmoe-shard writer: packs the sample list into tar shards with libarchive (pax-restricted: plain
 * ustar headers unless a name needs more), members regular, 0644, fixed owner and mtime, so the same
 * input gives the same bytes. A shard is written under a hidden temporary name, fsynced and renamed,
 * so a crash never leaves a partial shard under a final name. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "fileio.h"
#include "shard.h"
#include "urlpattern.h"

#define TAR_BLOCK 512
#define TAR_TRAILER 1024           /* two zero blocks end the archive */
#define USTAR_SIZE_MAX 077777777777ULL /* larger members need a pax size record */
#define COPY_CHUNK (1 << 20)
#define OWNER "upmoe"

typedef struct writer {
    const upm_shard_opts *o;
    upm_shard_result *r;
    struct archive *a;
    int fd;
    char tmp[PATH_MAX], final[PATH_MAX];
    uint64_t index;           /* the open shard's number; shards before it were renamed into place by this run */
    uint64_t samples, bytes;  /* in the open shard; bytes as predicted, trailer excluded */
    char *buf;
    double last_progress; /* upm_monotonic_s() */
} writer;

static uint64_t pad_block(uint64_t n) { return (n + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK; }

static struct archive_entry *make_entry(const char *name, uint64_t size, long mtime)
{
    struct archive_entry *e = archive_entry_new();
    if (!e)
        return NULL;
    archive_entry_set_pathname_utf8(e, name);
    archive_entry_set_size(e, (la_int64_t)size);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_mtime(e, (time_t)mtime, 0);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    archive_entry_set_uname(e, OWNER);
    archive_entry_set_gname(e, OWNER);
    return e;
}

/* Counts what libarchive writes; once `stop` is set it fails, so closing the scratch archive does not
 * write the member's data as zeros (closing still frees everything, unlike archive_write_fail). */
typedef struct counter {
    uint64_t n;
    int stop;
} counter;

static la_ssize_t count_cb(struct archive *a, void *client, const void *buf, size_t n)
{
    (void)buf;
    counter *c = client;
    if (c->stop) {
        archive_set_error(a, EIO, "measured");
        return -1;
    }
    c->n += n;
    return (la_ssize_t)n;
}

/* Header bytes of a member. A short ASCII name takes one ustar block; anything else (long names, huge
 * sizes) is measured by writing the header into a counting archive. */
static int header_cost(const char *name, uint64_t size, long mtime, uint64_t *cost, upm_err *err)
{
    size_t n = strlen(name);
    int simple = n <= 100 && size <= USTAR_SIZE_MAX;
    for (size_t i = 0; simple && i < n; i++)
        simple = name[i] > 0x20 && name[i] < 0x7f;
    if (simple) {
        *cost = TAR_BLOCK;
        return 0;
    }
    counter count = {0, 0};
    struct archive *a = archive_write_new();
    struct archive_entry *e = make_entry(name, size, mtime);
    int ok = a && e && archive_write_set_format_pax_restricted(a) == ARCHIVE_OK &&
             archive_write_set_bytes_per_block(a, 0) == ARCHIVE_OK &&
             archive_write_open2(a, &count, NULL, count_cb, NULL, NULL) == ARCHIVE_OK &&
             archive_write_header(a, e) == ARCHIVE_OK;
    int rc = ok ? 0 : upm_errf(err, UPM_EINVAL, "member '%s': %s", name, a ? archive_error_string(a) : "out of memory");
    *cost = count.n;
    if (a) {
        count.stop = 1;
        archive_write_close(a);
        archive_write_free(a);
    }
    archive_entry_free(e);
    return rc;
}

static void member_name(const upm_shard_sample *s, const upm_shard_member *m, char *buf, size_t n)
{
    if (s->keypath)
        snprintf(buf, n, "%s.%s", s->keypath, m->ext);
    else
        snprintf(buf, n, "%09" PRIu64 ".%s", s->index, m->ext);
}

static int sample_cost(const upm_shard_sample *s, long mtime, uint64_t *cost, upm_err *err)
{
    *cost = 0;
    for (int k = 0; k < s->n; k++) {
        char name[PATH_MAX];
        uint64_t h;
        member_name(s, &s->m[k], name, sizeof name);
        int rc = header_cost(name, s->m[k].size, mtime, &h, err);
        if (rc)
            return rc;
        *cost += h + pad_block(s->m[k].size);
    }
    return 0;
}

static void shard_paths(writer *w, uint64_t index)
{
    snprintf(w->final, sizeof w->final, "%s/%s-%06" PRIu64 ".tar", w->o->out_dir, w->o->prefix, index);
    snprintf(w->tmp, sizeof w->tmp, "%s/.%s-%06" PRIu64 ".tar.tmp.%ld", w->o->out_dir, w->o->prefix, index,
             (long)getpid());
}

static int open_shard(writer *w, upm_err *err)
{
    shard_paths(w, w->index);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w->fd < 0)
        return upm_errf(err, UPM_EIO, "cannot create %s: %s", w->tmp, strerror(errno));
    w->a = archive_write_new();
    if (!w->a || archive_write_set_format_pax_restricted(w->a) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(w->a, 1) != ARCHIVE_OK || archive_write_open_fd(w->a, w->fd) != ARCHIVE_OK)
        return upm_errf(err, UPM_EIO, "%s: %s", w->tmp, w->a ? archive_error_string(w->a) : "out of memory");
    w->samples = w->bytes = 0;
    return 0;
}

/* Ends the open shard: trailer, size check against the prediction, fsync, rename into place. */
static int close_shard(writer *w, upm_err *err)
{
    int rc = archive_write_close(w->a) == ARCHIVE_OK ? 0 : upm_errf(err, UPM_EIO, "%s: %s", w->tmp, archive_error_string(w->a));
    archive_write_free(w->a);
    w->a = NULL;
    struct stat st;
    if (!rc && fstat(w->fd, &st) != 0)
        rc = upm_errf(err, UPM_EIO, "%s: %s", w->tmp, strerror(errno));
    if (!rc && (uint64_t)st.st_size != w->bytes + TAR_TRAILER)
        rc = upm_errf(err, UPM_EIO, "%s: %lld bytes written where %" PRIu64 " were expected (disk full?)", w->tmp,
                      (long long)st.st_size, w->bytes + TAR_TRAILER);
    if (!rc && fsync(w->fd) != 0)
        rc = upm_errf(err, UPM_EIO, "%s: fsync: %s", w->tmp, strerror(errno));
    if (close(w->fd) != 0 && !rc)
        rc = upm_errf(err, UPM_EIO, "%s: %s", w->tmp, strerror(errno));
    w->fd = -1;
    if (!rc && rename(w->tmp, w->final) != 0)
        rc = upm_errf(err, UPM_EIO, "cannot rename %s to %s: %s", w->tmp, w->final, strerror(errno));
    if (rc)
        return rc;
    w->tmp[0] = '\0';
    w->r->shards++;
    w->r->bytes += (uint64_t)st.st_size;
    w->index++;
    return 0;
}

static int interrupted(const writer *w, upm_err *err)
{
    if (w->o->interrupted && *w->o->interrupted)
        return upm_errf(err, UPM_EIO, "interrupted by a signal");
    return 0;
}

/* Streams a source file into the open member, checking it still has the size it had when read. */
static int copy_file(writer *w, const upm_shard_member *m, upm_err *err)
{
    int fd = open(m->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return upm_errf(err, errno == ENOENT ? UPM_ENOTFOUND : UPM_EIO, "%s: %s", m->path, strerror(errno));
    uint64_t total = 0;
    int rc = 0;
    for (;;) {
        ssize_t got = read(fd, w->buf, COPY_CHUNK);
        if (got < 0 && errno == EINTR && !(rc = interrupted(w, err)))
            continue;
        if (got < 0 && !rc)
            rc = upm_errf(err, UPM_EIO, "%s: read error: %s", m->path, strerror(errno));
        if (got <= 0 || rc)
            break;
        total += (uint64_t)got;
        if (total > m->size)
            break;
        if (archive_write_data(w->a, w->buf, (size_t)got) != got) {
            rc = upm_errf(err, UPM_EIO, "%s: %s", w->tmp, archive_error_string(w->a));
            break;
        }
        if ((rc = interrupted(w, err)) != 0)
            break;
    }
    close(fd);
    if (!rc && total != m->size)
        rc = upm_errf(err, UPM_EBADDATA, "%s changed while it was being sharded (it had %" PRIu64 " bytes, now %s%" PRIu64 ")",
                      m->path, m->size, total > m->size ? "more than " : "", total);
    return rc;
}

static int write_sample(writer *w, const upm_shard_sample *s, upm_err *err)
{
    int rc = 0;
    for (int k = 0; !rc && k < s->n; k++) {
        const upm_shard_member *m = &s->m[k];
        char name[PATH_MAX];
        member_name(s, m, name, sizeof name);
        struct archive_entry *e = make_entry(name, m->size, w->o->mtime);
        if (!e)
            return upm_errf(err, UPM_ENOMEM, "out of memory");
        if (archive_write_header(w->a, e) != ARCHIVE_OK)
            rc = upm_errf(err, UPM_EIO, "%s: member %s: %s", w->tmp, name, archive_error_string(w->a));
        archive_entry_free(e);
        if (!rc && m->path)
            rc = copy_file(w, m, err);
        else if (!rc && m->size && archive_write_data(w->a, m->data, m->size) != (la_ssize_t)m->size)
            rc = upm_errf(err, UPM_EIO, "%s: %s", w->tmp, archive_error_string(w->a));
        if (!rc && archive_write_finish_entry(w->a) != ARCHIVE_OK)
            rc = upm_errf(err, UPM_EIO, "%s: %s", w->tmp, archive_error_string(w->a));
    }
    return rc;
}

static void progress(writer *w, int final)
{
    if (!w->o->progress)
        return;
    double now = upm_monotonic_s();
    if (!final && now - w->last_progress < 0.2)
        return;
    w->last_progress = now;
    fprintf(stderr, "\r" UPM_SHARD_PROG ": %" PRIu64 " samples, %" PRIu64 " shards, %.1f MB\033[K%s", w->r->samples,
            w->r->shards + (w->a != NULL), (double)(w->r->bytes + w->bytes) / 1e6, final ? "\n" : "");
}

/* After a failure: nothing of this run stays behind. */
static void discard(writer *w)
{
    if (w->a) {
        /* Point the descriptor at something unwritable first: closing then fails fast instead of padding
         * an unfinished member, and still frees libarchive's buffers (archive_write_fail would leak them). */
        int ro = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (ro >= 0) {
            dup2(ro, w->fd);
            close(ro);
        }
        archive_write_close(w->a);
        archive_write_free(w->a);
        w->a = NULL;
    }
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    if (w->tmp[0])
        unlink(w->tmp);
    for (uint64_t i = 0; i < w->index; i++) {
        shard_paths(w, i);
        unlink(w->final);
    }
}

/* Warns about one sample that needs a shard of its own. */
static void warn_oversized(const writer *w, const upm_shard_sample *s, uint64_t cost)
{
    char where[1100], key[PATH_MAX];
    upm_shard_where(where, sizeof where, s->src, s->line);
    member_name(s, &s->m[0], key, sizeof key);
    if (w->o->progress)
        fputc('\n', stderr);
    fprintf(stderr, UPM_SHARD_PROG ": warning: %s%s: the sample takes %" PRIu64 " bytes, more than --max-bytes %" PRIu64
                    ", so it gets shard %06" PRIu64 " to itself\n",
            s->line ? where : "", s->m[0].path ? s->m[0].path : key, cost + TAR_TRAILER, w->o->max_bytes, w->index);
}

/* Shard loop: a shard is closed before a sample would take it past max_samples or max_bytes. */
static int pack(writer *w, const upm_shard_list *l, upm_err *err)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < l->n; i++) {
        const upm_shard_sample *s = &l->v[i];
        uint64_t cost;
        if ((rc = sample_cost(s, w->o->mtime, &cost, err)) != 0 || (rc = interrupted(w, err)) != 0)
            break;
        if (w->a && (w->samples + 1 > w->o->max_samples || w->bytes + cost + TAR_TRAILER > w->o->max_bytes))
            rc = close_shard(w, err);
        if (!rc && !w->a)
            rc = open_shard(w, err);
        if (!rc && cost + TAR_TRAILER > w->o->max_bytes) {
            w->r->oversized++;
            warn_oversized(w, s, cost);
        }
        if (!rc)
            rc = write_sample(w, s, err);
        if (!rc) {
            w->samples++;
            w->bytes += cost;
            w->r->samples++;
            progress(w, 0);
        }
    }
    if (!rc && w->a)
        rc = close_shard(w, err);
    return rc;
}

/* The brace pattern of the written shards, checked by expanding it with the catalog's own parser. */
static int make_url(writer *w, upm_err *err)
{
    upm_shard_result *r = w->r;
    if (r->shards == 1)
        snprintf(r->url, sizeof r->url, "%s/%s-000000.tar", r->out_abs, w->o->prefix);
    else
        snprintf(r->url, sizeof r->url, "%s/%s-{000000..%06" PRIu64 "}.tar", r->out_abs, w->o->prefix, r->shards - 1);
    upm_urlpat *p = NULL;
    int rc = upm_urlpat_parse(r->url, &p, err);
    if (!rc && upm_urlpat_count(p) != r->shards)
        rc = upm_errf(err, UPM_EINVAL, "the URL pattern %s expands to %" PRIu64 " shards, not %" PRIu64, r->url,
                      upm_urlpat_count(p), r->shards);
    upm_urlpat_free(p);
    return rc;
}

int upm_shard_write_all(const upm_shard_list *l, const upm_shard_opts *o, upm_shard_result *r, upm_err *err)
{
    writer w = {.o = o, .r = r, .fd = -1};
    r->samples = r->shards = r->bytes = r->oversized = 0;
    if (!(w.buf = malloc(COPY_CHUNK)))
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    w.last_progress = upm_monotonic_s();
    int rc = pack(&w, l, err);
    if (!rc)
        rc = make_url(&w, err);
    if (!rc && o->force)
        rc = upm_shard_remove_stale(o, r->shards, &r->removed_stale, err);
    if (!rc)
        rc = upm_fsync_dir(o->out_dir, err);
    if (rc) {
        discard(&w);
        upm_fsync_dir(o->out_dir, NULL);
    } else {
        progress(&w, 1);
    }
    free(w.buf);
    return rc;
}
