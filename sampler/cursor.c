/* Cursor <-> JSON (see cursor.h). Integers that may exceed 2^53 are written as decimal strings so
 * that JSON readers with double-only numbers keep them exact. */
#include <cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cursor.h"

#define CURSOR_VERSION 1

static void add_u64(cJSON *o, const char *key, uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    cJSON_AddStringToObject(o, key, buf);
}

char *upm_cursor_to_json(const upm_cursor *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "version", CURSOR_VERSION);
    cJSON_AddStringToObject(o, "mixture", c->mixture);
    add_u64(o, "seed", c->seed);
    cJSON_AddNumberToObject(o, "rank", c->rank);
    cJSON_AddNumberToObject(o, "world", c->world);
    cJSON_AddNumberToObject(o, "block_size", c->block_size);
    add_u64(o, "step", c->step);
    cJSON *arr = cJSON_AddArrayToObject(o, "datasets");
    for (int i = 0; i < c->n; i++) {
        const upm_dataset_cursor *d = &c->datasets[i];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "name", d->name);
        add_u64(x, "epoch", d->block_start.epoch);
        cJSON_AddNumberToObject(x, "rr", d->block_start.rr);
        cJSON *lanes = cJSON_AddArrayToObject(x, "readers");
        for (int t = 0; t < d->block_start.readers; t++) {
            cJSON *l = cJSON_CreateObject();
            add_u64(l, "shard_pos", (uint64_t)d->block_start.lane[t].shard_pos);
            add_u64(l, "sample", (uint64_t)d->block_start.lane[t].sample);
            cJSON_AddBoolToObject(l, "done", d->block_start.lane[t].done);
            cJSON_AddItemToArray(lanes, l);
        }
        add_u64(x, "block", d->block);
        cJSON_AddNumberToObject(x, "offset", d->offset);
        add_u64(x, "samples", d->samples);
        add_u64(x, "bad_samples", d->bad_samples);
        add_u64(x, "bad_shards", d->bad_shards);
        cJSON_AddItemToArray(arr, x);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static int get_u64(const cJSON *o, const char *key, uint64_t *out, const char *where, upm_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    char *end = NULL;
    if (cJSON_IsString(v) && v->valuestring[0] >= '0' && v->valuestring[0] <= '9') {
        *out = strtoull(v->valuestring, &end, 10);
        if (!*end)
            return 0;
    }
    return upm_errf(err, UPM_EINVAL, "cursor: %s%s: expected a non-negative integer as a string", where, key);
}

static int get_int(const cJSON *o, const char *key, int lo, int hi, int *out, upm_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < lo || v->valuedouble > hi || v->valuedouble != (int)v->valuedouble)
        return upm_errf(err, UPM_EINVAL, "cursor: %s: expected an integer in %d..%d", key, lo, hi);
    *out = (int)v->valuedouble;
    return 0;
}

static int parse_dataset(const cJSON *x, int i, upm_dataset_cursor *d, upm_err *err)
{
    char where[48];
    snprintf(where, sizeof where, "datasets[%d].", i);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(x, "name");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(x, "offset");
    if (!cJSON_IsString(name) || strlen(name->valuestring) > UPM_NAME_MAX)
        return upm_errf(err, UPM_EINVAL, "cursor: %sname: expected a dataset name", where);
    if (!cJSON_IsNumber(off) || off->valuedouble < 0 || off->valuedouble > 4294967295.0)
        return upm_errf(err, UPM_EINVAL, "cursor: %soffset: expected a non-negative integer", where);
    snprintf(d->name, sizeof d->name, "%s", name->valuestring);
    d->offset = (uint32_t)off->valuedouble;
    int rc = get_u64(x, "epoch", &d->block_start.epoch, where, err);
    const cJSON *rr = cJSON_GetObjectItemCaseSensitive(x, "rr");
    const cJSON *lanes = cJSON_GetObjectItemCaseSensitive(x, "readers"), *l;
    int n = cJSON_GetArraySize(lanes);
    if (!rc && (!cJSON_IsArray(lanes) || n < 1 || n > UPM_MAX_READERS))
        rc = upm_errf(err, UPM_EINVAL, "cursor: %sreaders: expected 1 to %d reader positions", where, UPM_MAX_READERS);
    if (!rc && (!cJSON_IsNumber(rr) || rr->valuedouble < 0 || rr->valuedouble >= n))
        rc = upm_errf(err, UPM_EINVAL, "cursor: %srr: expected a reader index below %d", where, n);
    if (!rc) {
        d->block_start.readers = n;
        d->block_start.rr = (uint32_t)rr->valuedouble;
    }
    int t = 0;
    const cJSON *lane_list = rc ? NULL : lanes;
    cJSON_ArrayForEach(l, lane_list) {
        uint64_t pos = 0, sample = 0;
        const cJSON *done = cJSON_GetObjectItemCaseSensitive(l, "done");
        if ((rc = get_u64(l, "shard_pos", &pos, where, err)) || (rc = get_u64(l, "sample", &sample, where, err)))
            break;
        if (!cJSON_IsBool(done)) {
            rc = upm_errf(err, UPM_EINVAL, "cursor: %sreaders[%d].done: expected true or false", where, t);
            break;
        }
        d->block_start.lane[t++] = (upm_lane_pos){(int64_t)pos, (int64_t)sample, cJSON_IsTrue(done)};
    }
    if (!rc)
        rc = get_u64(x, "block", &d->block, where, err);
    if (!rc)
        rc = get_u64(x, "samples", &d->samples, where, err);
    if (!rc)
        rc = get_u64(x, "bad_samples", &d->bad_samples, where, err);
    if (!rc)
        rc = get_u64(x, "bad_shards", &d->bad_shards, where, err);
    return rc;
}

int upm_cursor_from_json(const char *text, upm_cursor *c, upm_err *err)
{
    memset(c, 0, sizeof *c);
    cJSON *o = cJSON_Parse(text);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return upm_errf(err, UPM_EINVAL, "cursor: not a JSON object");
    }
    int version = 0, block = 0, rc;
    const cJSON *mix = cJSON_GetObjectItemCaseSensitive(o, "mixture");
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "datasets"), *x;
    if ((rc = get_int(o, "version", 1, 1000, &version, err)) == 0 && version != CURSOR_VERSION)
        rc = upm_errf(err, UPM_EINVAL, "cursor: version %d is not %d", version, CURSOR_VERSION);
    if (!rc && (!cJSON_IsString(mix) || strlen(mix->valuestring) > UPM_NAME_MAX))
        rc = upm_errf(err, UPM_EINVAL, "cursor: mixture: expected a name");
    if (!rc && !(rc = get_u64(o, "seed", &c->seed, "", err)) && !(rc = get_int(o, "world", 1, 1 << 20, &c->world, err)) &&
        !(rc = get_int(o, "rank", 0, c->world - 1, &c->rank, err)) && !(rc = get_int(o, "block_size", 1, 1 << 24, &block, err)))
        rc = get_u64(o, "step", &c->step, "", err);
    if (!rc && !cJSON_IsArray(arr))
        rc = upm_errf(err, UPM_EINVAL, "cursor: datasets: expected an array");
    if (!rc) {
        snprintf(c->mixture, sizeof c->mixture, "%s", mix->valuestring);
        c->block_size = (uint32_t)block;
        c->datasets = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof *c->datasets);
        if (!c->datasets)
            rc = upm_errf(err, UPM_ENOMEM, "cursor: out of memory");
    }
    const cJSON *list = rc ? NULL : arr;
    cJSON_ArrayForEach(x, list) {
        if ((rc = parse_dataset(x, c->n, &c->datasets[c->n], err)))
            break;
        c->n++;
    }
    cJSON_Delete(o);
    if (rc)
        upm_cursor_free(c);
    return rc;
}

void upm_cursor_free(upm_cursor *c)
{
    free(c->datasets);
    c->datasets = NULL;
    c->n = 0;
}

int upm_cursor_regroup(const upm_cursor *old, int n_old, int rank, int world, int readers, upm_cursor *out,
                       upm_err *err)
{
    memset(out, 0, sizeof *out);
    if (n_old < 1 || world < 1 || rank < 0 || rank >= world || readers < 1 || readers > UPM_MAX_READERS)
        return upm_errf(err, UPM_EINVAL, "cursor regroup: bad arguments (%d old cursors, rank %d of %d, %d readers)",
                        n_old, rank, world, readers);
    snprintf(out->mixture, sizeof out->mixture, "%s", old[0].mixture);
    out->seed = old[0].seed, out->rank = rank, out->world = world, out->block_size = old[0].block_size;
    out->step = old[0].step;
    for (int r = 1; r < n_old; r++)
        if (old[r].step != out->step || old[r].seed != out->seed || strcmp(old[r].mixture, out->mixture))
            return upm_errf(err, UPM_EBADDATA, "the saved cursors disagree (rank %d is at step %llu, rank 0 at %llu)",
                            r, (unsigned long long)old[r].step, (unsigned long long)out->step);
    if (!(out->datasets = calloc((size_t)old[0].n + 1, sizeof *out->datasets)))
        return upm_errf(err, UPM_ENOMEM, "out of memory");
    for (int i = 0; i < old[0].n; i++) {
        upm_dataset_cursor *d = &out->datasets[out->n++];
        snprintf(d->name, sizeof d->name, "%s", old[0].datasets[i].name);
        d->block_start.readers = readers;
        for (int r = 0; r < n_old; r++)
            for (int k = 0; k < old[r].n; k++)
                if (!strcmp(old[r].datasets[k].name, d->name)) {
                    const upm_dataset_cursor *o = &old[r].datasets[k];
                    if (o->block_start.epoch + 1 > d->block_start.epoch)
                        d->block_start.epoch = o->block_start.epoch + 1;
                    if (rank == 0) { /* counters once, on rank 0 */
                        d->samples += o->samples;
                        d->bad_samples += o->bad_samples;
                        d->bad_shards += o->bad_shards;
                    }
                }
    }
    return 0;
}
