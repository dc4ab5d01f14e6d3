/* Checkpoint directories (see checkpoint.h): weights and moments as safetensors, state as JSON, made
 * visible by one rename after everything is on disk. */
#include "checkpoint.h"

#include <cjson/cJSON.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "modelcfg.h"

#include "fileio.h"
#include "safetensors.h"

/* Tensors named prefix + parameter name, viewing a host copy of a layout-shaped buffer. */
static upm_st_tensor *describe(const upm_layout *L, const float *host, const char *prefix, char **names)
{
    upm_st_tensor *t = calloc((size_t)L->n, sizeof *t);
    if (!t)
        return NULL;
    for (int i = 0; i < L->n; i++) {
        const upm_param *p = &L->p[i];
        size_t len = strlen(prefix) + strlen(p->name) + 1;
        if (!(names[i] = malloc(len))) {
            free(t);
            return NULL;
        }
        snprintf(names[i], len, "%s%s", prefix, p->name);
        t[i] = (upm_st_tensor){.name = names[i], .dtype = UPM_ST_F32, .ndim = p->ndim, .data = host + p->offset,
                               .nbytes = p->numel * sizeof(float)};
        for (int d = 0; d < p->ndim; d++)
            t[i].shape[d] = p->shape[d];
    }
    return t;
}

/* Writes one or two layout-shaped backend buffers (prefixes[k] + name) into path. */
static int write_buffers(const char *path, const upm_model *m, const float *const *bufs, const char *const *prefixes,
                         int nbuf, const char *const *meta, upm_err *err)
{
    const upm_layout *L = &m->L;
    size_t total = L->total;
    float *host = malloc(sizeof(float) * total * (size_t)nbuf);
    upm_st_tensor *all = calloc((size_t)L->n * nbuf, sizeof *all);
    char **names = calloc((size_t)L->n * nbuf, sizeof *names);
    int rc = 0;
    if (!host || !all || !names)
        rc = upm_errf(err, UPM_ENOMEM, "checkpoint: no memory for %zu floats", total * (size_t)nbuf);
    for (int k = 0; !rc && k < nbuf; k++) {
        m->be->download(m->be, host + total * k, bufs[k], sizeof(float) * total);
        upm_st_tensor *t = describe(L, host + total * k, prefixes[k], names + (size_t)L->n * k);
        if (!t) {
            rc = upm_errf(err, UPM_ENOMEM, "checkpoint: no memory");
            break;
        }
        memcpy(all + (size_t)L->n * k, t, sizeof *t * (size_t)L->n);
        free(t);
    }
    if (!rc)
        rc = upm_st_write(path, all, L->n * nbuf, meta, err);
    for (int i = 0; names && i < L->n * nbuf; i++)
        free(names[i]);
    free(names);
    free(all);
    free(host);
    return rc;
}

int upm_weights_save(const char *path, const upm_model *m, const char *const *meta, upm_err *err)
{
    const float *bufs[] = {m->w};
    const char *pre[] = {""};
    return write_buffers(path, m, bufs, pre, 1, meta, err);
}

static int remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return remove(path);
    struct dirent *e;
    char sub[4096];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            remove(sub);
        }
    closedir(d);
    return rmdir(path);
}

/* Steps of the complete checkpoints under root, ascending (caller frees). */
static int list_steps(const char *root, int64_t **steps, int *n)
{
    *steps = NULL, *n = 0;
    DIR *d = opendir(root);
    if (!d)
        return 0;
    struct dirent *e;
    int cap = 0;
    while ((e = readdir(d))) {
        long long s;
        char tail;
        if (sscanf(e->d_name, "step-%lld%c", &s, &tail) != 1 || s < 0)
            continue;
        if (*n == cap) {
            int64_t *g = realloc(*steps, sizeof *g * (size_t)(cap = cap ? 2 * cap : 16));
            if (!g)
                break;
            *steps = g;
        }
        (*steps)[(*n)++] = s;
    }
    closedir(d);
    for (int i = 1; i < *n; i++) /* insertion sort: a handful of entries */
        for (int j = i; j > 0 && (*steps)[j - 1] > (*steps)[j]; j--) {
            int64_t t = (*steps)[j];
            (*steps)[j] = (*steps)[j - 1], (*steps)[j - 1] = t;
        }
    return 0;
}

int upm_checkpoint_save(const char *dir, int64_t step, const upm_model *m, const upm_optim *o,
                        const char *state_json, int keep, upm_err *err)
{
    char root[4096], tmp[4200], final[4200], file[4300];
    snprintf(root, sizeof root, "%s/checkpoints", dir);
    int rc = upm_mkdirs(root, err);
    if (rc)
        return rc;
    snprintf(tmp, sizeof tmp, "%s/.step-%08" PRId64 ".tmp", root, step);
    snprintf(final, sizeof final, "%s/step-%08" PRId64, root, step);
    remove_tree(tmp);
    if (mkdir(tmp, 0777) != 0)
        return upm_errf(err, UPM_EIO, "cannot create %s: %s", tmp, strerror(errno));
    char stepbuf[32], tbuf[32];
    snprintf(stepbuf, sizeof stepbuf, "%" PRId64, step);
    snprintf(tbuf, sizeof tbuf, "%" PRId64, o ? o->t : 0);
    const char *meta[] = {"format", "upmoe-checkpoint-1", "step", stepbuf, NULL};
    snprintf(file, sizeof file, "%s/model.safetensors", tmp);
    rc = upm_weights_save(file, m, meta, err);
    if (!rc && o) {
        const float *bufs[] = {o->m, o->v};
        const char *pre[] = {"m.", "v."};
        const char *ometa[] = {"format", "upmoe-adamw-1", "t", tbuf, NULL};
        snprintf(file, sizeof file, "%s/optim.safetensors", tmp);
        rc = write_buffers(file, m, bufs, pre, 2, ometa, err);
    }
    if (!rc) {
        snprintf(file, sizeof file, "%s/state.json", tmp);
        rc = upm_write_file_atomic(file, state_json, strlen(state_json), err);
    }
    if (!rc)
        rc = upm_fsync_dir(tmp, err);
    if (!rc) {
        remove_tree(final); /* a checkpoint of the same step from an earlier, abandoned attempt */
        if (rename(tmp, final) != 0)
            rc = upm_errf(err, UPM_EIO, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
        else
            rc = upm_fsync_dir(root, err);
    }
    if (rc) {
        remove_tree(tmp);
        return rc;
    }
    int64_t *steps;
    int n;
    list_steps(root, &steps, &n);
    for (int i = 0; keep > 0 && i < n - keep; i++) {
        snprintf(file, sizeof file, "%s/step-%08" PRId64, root, steps[i]);
        remove_tree(file);
    }
    free(steps);
    return 0;
}

int upm_checkpoint_latest(const char *dir, char *path, size_t n, upm_err *err)
{
    char root[4096];
    snprintf(root, sizeof root, "%s/checkpoints", dir);
    int64_t *steps;
    int count;
    list_steps(root, &steps, &count);
    if (count == 0) {
        free(steps);
        return upm_errf(err, UPM_ENOTFOUND, "no checkpoint under %s", root);
    }
    snprintf(path, n, "%s/step-%08" PRId64, root, steps[count - 1]);
    free(steps);
    return 0;
}

/* Copies tensors prefix + name of file f into the layout-shaped backend buffer dst. */
static int load_buffer(upm_st_file *f, const char *file, const char *prefix, upm_model *m, float *dst, upm_err *err)
{
    const upm_layout *L = &m->L;
    float *host = calloc(L->total ? L->total : 1, sizeof(float));
    if (!host)
        return upm_errf(err, UPM_ENOMEM, "checkpoint: no memory");
    char name[UPM_PARAM_NAME_MAX + 8];
    for (int i = 0; i < L->n; i++) {
        const upm_param *p = &L->p[i];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        const upm_st_tensor *t = upm_st_find(f, name);
        int same = t && t->dtype == UPM_ST_F32 && t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++)
            same = t->shape[d] == p->shape[d];
        if (!same) {
            free(host);
            return upm_errf(err, UPM_EBADDATA, "%s: tensor %s %s (this model's configuration differs)", file, name,
                            t ? "has another dtype or shape" : "is missing");
        }
        memcpy(host + p->offset, t->data, t->nbytes);
    }
    m->be->upload(m->be, dst, host, sizeof(float) * L->total);
    free(host);
    return 0;
}

int upm_checkpoint_load(const char *ckpt, upm_model *m, upm_optim *o, char **state_json, upm_err *err)
{
    char file[4200];
    upm_st_file *f = NULL;
    snprintf(file, sizeof file, "%s/model.safetensors", ckpt);
    int rc = upm_st_open(file, &f, err);
    if (!rc)
        rc = load_buffer(f, file, "", m, m->w, err);
    upm_st_close(f);
    f = NULL;
    if (!rc && o) {
        snprintf(file, sizeof file, "%s/optim.safetensors", ckpt);
        rc = upm_st_open(file, &f, err);
        const char *t = rc ? NULL : upm_st_meta(f, "t");
        if (!rc && !t)
            rc = upm_errf(err, UPM_EBADDATA, "%s: no optimizer step count", file);
        if (!rc)
            o->t = strtoll(t, NULL, 10);
        if (!rc)
            rc = load_buffer(f, file, "m.", m, o->m, err);
        if (!rc)
            rc = load_buffer(f, file, "v.", m, o->v, err);
        upm_st_close(f);
    }
    if (!rc && state_json) {
        snprintf(file, sizeof file, "%s/state.json", ckpt);
        rc = upm_read_file(file, state_json, NULL, err);
    }
    return rc;
}

int upm_checkpoint_config(const char *ckpt_arg, char *ckpt, size_t n, upm_model_config *cfg, upm_err *err)
{
    if (upm_checkpoint_latest(ckpt_arg, ckpt, n, err) != 0)
        snprintf(ckpt, n, "%s", ckpt_arg);
    char path[4200];
    snprintf(path, sizeof path, "%s/state.json", ckpt);
    char *state = NULL;
    int rc = upm_read_file(path, &state, NULL, err);
    if (rc)
        return rc;
    cJSON *js = cJSON_Parse(state);
    free(state);
    if (!js)
        return upm_errf(err, UPM_EINVAL, "%s: not a checkpoint state (JSON)", path);
    upm_err e = {0};
    rc = upm_model_config_from_json(cJSON_GetObjectItemCaseSensitive(js, "model"), cfg, &e);
    cJSON_Delete(js);
    return rc ? upm_errf(err, rc, "%s: %s", path, e.msg) : 0;
}
