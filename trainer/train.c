/* The training loop (see train.h; one step itself is train_step.c). One step: the loader's batch -> input
 * pass (+ target pass of label texts or paired targets) -> loss -> backward of both passes -> clipping and
 * AdamW -> metrics. All randomness of a step (gate noise, drop path; augmentation and masking in the loader) is keyed by
 * (seed, step, rank), so a run resumed from a checkpoint repeats an uninterrupted one bit for bit.
 *
 * Data parallel (docs/distributed.md): every rank runs this loop on its own batch (its own task draw
 * and shards); the last backward pass reduces the gradients bucket by bucket (gradsync.h), so every rank
 * applies the same averaged update. After each step the ranks exchange one small record each (task,
 * loss, stop request): rank 0 writes the per-task metrics, and all ranks stop at the same step.
 * Checkpoints hold every rank's sampler cursor; only rank 0 writes files or the catalog. */
#include "train.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batchdump.h"
#include "catalog_ops.h"
#include "checkpoint.h"
#include "clock.h"
#include "fileio.h"
#include "formulation.h"
#include "gradsync.h"
#include "inputs.h"
#include "loader.h"
#include "loss.h"
#include "model.h"
#include "modelcfg.h"
#include "retrieval.h"
#include "rng.h"
#include "runs.h"
#include "trainer_state.h"
#include "vocab.h"

int64_t upm_train_stage2_step(const upm_train_opts *o)
{
    return (int64_t)((double)o->steps * o->stage2_at + 0.5);
}

void upm_train_opts_default(upm_train_opts *o)
{
    memset(o, 0, sizeof *o);
    upm_model_config_preset("ti", &o->model, NULL);
    upm_optim_config_default(&o->optim);
    o->model_name = "ti";
    o->nccl = -1;
    o->steps = 100;
    o->seed = 1;
    o->loader_threads = 2;
    o->image_size = 160;
    o->augment = UPM_AUGMENT_PAPER;
    o->log_every = 10;
    o->checkpoint_every = 100;
    o->keep = 3;
    o->metrics_every = 10;
    o->vocab_chunk = 4096;
}

static int train_step(trainer *t, upm_metric_row *row, upm_err *err)
{
    int rc = t->prefetch ? upm_prefetch_next(t->prefetch, &t->batch, err) : upm_loader_next(t->loader, &t->batch, err);
    return rc ? rc : upm_trainer_batch_step(t, row, err);
}

/* ---- progress, metrics, checkpoints ---- */

static int flush_metrics(trainer *t, upm_err *err)
{
    int rc = t->rank == 0 ? upm_metrics_put(t->cat, t->run_id, t->pending, t->npending, err) : 0;
    if (!rc)
        t->npending = 0;
    return rc;
}

/* The trainer state: step, run, model, and the cursor of every rank (all[off[r]..off[r + 1])). */
static char *state_json(trainer *t, const char *all, const size_t *off)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "version", 2);
    cJSON_AddNumberToObject(j, "step", (double)t->step);
    cJSON_AddNumberToObject(j, "run_id", (double)t->run_id);
    char seed[32];
    snprintf(seed, sizeof seed, "%" PRIu64, t->o->seed);
    cJSON_AddStringToObject(j, "seed", seed);
    cJSON_AddStringToObject(j, "mixture", t->o->mixture);
    cJSON_AddNumberToObject(j, "total_steps", (double)t->o->steps);
    cJSON *args = t->o->run_args ? cJSON_Parse(t->o->run_args) : NULL;
    if (cJSON_IsArray(args))
        cJSON_AddItemToObject(j, "args", args);
    else
        cJSON_Delete(args);
    cJSON_AddItemToObject(j, "model", upm_model_config_json(&t->cfg));
    cJSON_AddStringToObject(j, "precision", t->m->compute == UPM_BF16 ? "bf16" : "fp32");
    cJSON_AddNumberToObject(j, "world", t->world);
    if (t->be->cpu_threads > 0) /* a resume with another count continues, but not bit for bit */
        cJSON_AddNumberToObject(j, "cpu_threads", t->be->cpu_threads);
    cJSON *arr = cJSON_AddArrayToObject(j, "cursors");
    int ok = 1;
    for (int r = 0; r < t->world && ok; r++) {
        cJSON *c = cJSON_ParseWithLength(all + off[r], off[r + 1] - off[r]);
        ok = c != NULL;
        if (c)
            cJSON_AddItemToArray(arr, c);
    }
    char *s = ok ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    return s;
}

/* The cursor after the last batch trained on (not the one decoded ahead); free() it. */
static char *loader_cursor(trainer *t)
{
    return t->prefetch ? upm_prefetch_cursor_json(t->prefetch) : upm_loader_cursor_json(t->loader);
}

/* Collective: every rank's cursor to rank 0, which writes the checkpoint; all ranks learn the outcome. */
static int checkpoint(trainer *t, const char *state, upm_err *err)
{
    int rc = flush_metrics(t, err);
    char *cursor = rc ? NULL : loader_cursor(t), *all = NULL, *js = NULL;
    size_t *off = NULL;
    if (!rc && !cursor)
        rc = upm_errf(err, UPM_ENOMEM, "no memory for the sampler cursor");
    if (!rc && t->world > 1)
        upm_comm_set_phase(t->comm, "step %" PRId64 ": checkpoint", t->step);
    if (!rc && t->world > 1)
        rc = upm_comm_allgatherv(t->comm, cursor, strlen(cursor), &all, &off, err);
    else if (!rc) {
        size_t n = strlen(cursor);
        off = malloc(2 * sizeof *off), all = off ? strdup(cursor) : NULL;
        if (!all)
            rc = upm_errf(err, UPM_ENOMEM, "no memory");
        else
            off[0] = 0, off[1] = n;
    }
    free(cursor);
    if (!rc)
        rc = dp_check_same_weights(t, err);
    if (t->rank == 0) {
        if (!rc && !(js = state_json(t, all, off)))
            rc = upm_errf(err, UPM_ENOMEM, "no memory for the trainer state");
        if (!rc)
            rc = upm_checkpoint_save(t->o->out_dir, t->step, t->m, &t->opt, js, t->o->keep, err);
        char path[4096];
        if (!rc)
            rc = upm_checkpoint_latest(t->o->out_dir, path, sizeof path, err);
        if (!rc)
            rc = upm_run_update(t->cat, t->run_id, state, t->step, path, NULL, err);
        if (!rc && !t->o->quiet)
            printf("checkpoint step %" PRId64 ": %s\n", t->step, path);
    }
    free(js);
    free(all);
    free(off);
    if (t->world > 1 && (!rc || err->code != UPM_ECOMM)) { /* did rank 0 write it? */
        int64_t bad = rc != 0;
        upm_err e2 = {0};
        int rc2 = upm_comm_allreduce_max_i64(t->comm, &bad, 1, &e2);
        if (rc2 && !rc)
            *err = e2, rc = rc2;
        else if (!rc && bad)
            rc = upm_errf(err, UPM_EIO, "rank 0 could not write the checkpoint of step %" PRId64 " (see its error)",
                          t->step);
    }
    return rc;
}

static void progress(trainer *t, const upm_metric_row *rows, int n)
{
    double dt = upm_monotonic_s() - t->t0;
    int64_t done = t->step - t->step0;
    double per = done > 0 ? dt / (double)done : 0, eta = per * (double)(t->o->steps - t->step), sps = 0;
    printf("step %" PRId64 "/%" PRId64, t->step, t->o->steps);
    for (int i = 0; i < n; i++) {
        const upm_metric_row *r = &rows[i];
        printf("%s %s %s loss %.4f", i ? " |" : "", r->task, r->dataset, r->loss);
        if (r->accuracy >= 0)
            printf(" acc %.3f", r->accuracy);
        if (r->has_route)
            printf(" balance %.3f dropped %.1f%%", r->balance_loss, 100 * r->dropped);
        if (t->world > 1)
            printf(" (rank %s)", r->ranks);
        sps += r->samples_per_s;
    }
    printf(" lr %.2e gnorm %.3f %.1f samples/s ETA %dm%02ds\n", n ? rows[0].lr : 0, n ? rows[0].grad_norm : 0, sps,
           (int)(eta / 60), (int)eta % 60);
    fflush(stdout);
}

/* ---- set-up, resume, the loop ---- */

void upm_trainer_close(trainer *t)
{
    upm_backend *be = t->be;
    if (t->m) {
        upm_pass_free(t->m, t->pass_in);
        upm_pass_free(t->m, t->pass_tg);
        upm_pass_free(t->m, t->pass_voc);
        if (t->have_opt)
            upm_optim_free(&t->opt, t->m);
    }
    void *bufs[] = {t->dU, t->dV, t->logits, t->dlabels, t->V, t->logq};
    for (int i = 0; i < 6; i++)
        if (bufs[i])
            be->free(be, bufs[i]);
    upm_gradsync_free(t->gs);
    upm_devcomm_close(t->dev, 0);
    upm_model_free(t->m);
    upm_prefetch_close(t->prefetch); /* the batches are the backend's host memory: before the backend */
    upm_loader_close(t->loader);
    upm_batch_free(&t->batch);
    upm_backend_free(be);
    free(t->readout);
    upm_bpe_free(t->bpe);
    for (int i = 0; i < t->nlabels; i++)
        upm_label_texts_free(&t->labels[i].lt);
    free(t->labels);
    for (int i = 0; i < 2; i++)
        free(t->noise[i]), free(t->keep[i]);
    free(t->pending);
    free(t->recs);
    upm_catalog_close(t->cat);
}

/* Reads the newest checkpoint's state: step, run, model configuration and this rank's sampler cursor. */
static int read_state(trainer *t, const char *json, char **cursor, int *regrouped, upm_err *err)
{
    cJSON *j = cJSON_Parse(json);
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(j, "step"), *run = cJSON_GetObjectItemCaseSensitive(j, "run_id");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model"), *curs = cJSON_GetObjectItemCaseSensitive(j, "cursors");
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(j, "seed"), *mix = cJSON_GetObjectItemCaseSensitive(j, "mixture");
    cJSON *legacy = cJSON_GetObjectItemCaseSensitive(j, "cursor"); /* state version 1: one process, one cursor */
    if (!curs && cJSON_IsObject(legacy)) {
        cJSON *arr = cJSON_AddArrayToObject(j, "cursors");
        cJSON_AddItemReferenceToArray(arr, legacy);
        curs = arr;
    }
    int rc = 0;
    if (!cJSON_IsNumber(step) || !cJSON_IsNumber(run) || !cJSON_IsObject(model) || !cJSON_IsString(seed) ||
        !cJSON_IsString(mix) || (!t->eval && (!cJSON_IsArray(curs) || cJSON_GetArraySize(curs) < 1)))
        rc = upm_errf(err, UPM_EBADDATA, "state.json of checkpoint %s is incomplete",
                      t->eval ? t->eval_ckpt : t->o->out_dir);
    else if (!t->eval &&
             (strcmp(mix->valuestring, t->o->mixture) || strtoull(seed->valuestring, NULL, 10) != t->o->seed))
        rc = upm_errf(err, UPM_EUSAGE, "%s was trained on mixture %s with seed %s; resume it with the same mixture "
                      "and seed", t->o->out_dir, mix->valuestring, seed->valuestring);
    if (!rc)
        rc = upm_model_config_from_json(model, &t->cfg, err);
    if (!rc) {
        const cJSON *threads = cJSON_GetObjectItemCaseSensitive(j, "cpu_threads");
        t->ckpt_cpu_threads = /* only for the note below: a value out of range is no value */
            cJSON_IsNumber(threads) && threads->valuedouble >= 1 && threads->valuedouble <= 4096
                ? (int)threads->valuedouble
                : 0;
        t->step = (int64_t)step->valuedouble;
        t->run_id = (int64_t)run->valuedouble;
        if (!t->eval)
            rc = dp_pick_cursor(t, curs, cursor, regrouped, err);
    }
    cJSON_Delete(j);
    return rc;
}

/* The image size of step `step`: the second stage's from its first step on (paper §6.1: 160 px, then
 * 224 px for the last 10% of the steps). */
static int image_size_at(const upm_train_opts *o, int64_t step)
{
    return o->stage2_size > 0 && step >= upm_train_stage2_step(o) ? o->stage2_size : o->image_size;
}

/* Batches live in the backend's host memory (page-locked on a GPU), so their uploads need no staging. A
 * batch's memory is handed back to the decoding thread only at the next upm_prefetch_next, after the
 * step's download of its statistics, so an upload still in flight never sees it rewritten. */
static void *batch_host_alloc(void *be, size_t bytes) { return ((upm_backend *)be)->host_alloc(be, bytes); }
static void batch_host_free(void *be, void *p) { ((upm_backend *)be)->host_free(be, p); }
static upm_batch_mem batch_mem_of(upm_backend *be) { return (upm_batch_mem){batch_host_alloc, batch_host_free, be}; }

/* (Re)opens the loader at the cursor (NULL: the start) with the current step's image size. */
static int open_loader(trainer *t, const char *cursor, upm_err *err)
{
    const upm_train_opts *o = t->o;
    upm_loader_opts lo;
    upm_loader_opts_default(&lo);
    lo.seed = o->seed, lo.threads = o->loader_threads > 0 ? o->loader_threads : 1;
    lo.rank = t->rank, lo.world = t->world;
    if (o->readers > 0)
        lo.readers = o->readers;
    if (o->shuffle_block > 0)
        lo.block_size = (uint32_t)o->shuffle_block;
    lo.batch_override = o->batch, lo.batch_scale = o->batch_scale, lo.bpe_vocab = o->bpe_vocab;
    lo.collate.image_size = t->eval ? o->image_size : image_size_at(o, t->step);
    lo.collate.train = !t->eval;
    lo.collate.augment = o->augment;
    lo.batch_mem = batch_mem_of(t->be);
    upm_prefetch_close(t->prefetch); /* a batch decoded ahead at the old size is dropped */
    t->prefetch = NULL;
    upm_loader_close(t->loader);
    t->loader = NULL;
    t->image_size = lo.collate.image_size;
    int rc = upm_loader_open(t->cat, o->mixture, &lo, cursor, &t->loader, err);
    if (!rc && !t->eval && !o->no_prefetch)
        rc = upm_prefetch_open(t->loader, &t->prefetch, err);
    return rc;
}


int upm_trainer_open(trainer *t, const upm_train_opts *o, const char *eval_ckpt, upm_err *err)
{
    memset(t, 0, sizeof *t);
    t->o = o;
    t->cfg = o->model;
    t->eval = eval_ckpt != NULL, t->eval_ckpt = eval_ckpt;
    t->comm = eval_ckpt ? NULL : o->comm;
    t->rank = t->comm ? upm_comm_rank(t->comm) : 0, t->world = t->comm ? upm_comm_world(t->comm) : 1;
    char path[4096], ckpt[4096];
    char *state = NULL, *cursor = NULL;
    int rc = upm_catalog_resolve_path(o->catalog, path, sizeof path, err), resume = o->resume || t->eval;
    int regrouped = 0;
    /* Only rank 0 writes the catalog; the others read the mixture and label sets. */
    if (!rc)
        rc = upm_catalog_open(path, t->eval || t->rank ? UPM_CAT_READONLY : 0, &t->cat, err);
    if (!rc && !t->eval && o->n_eval_datasets) /* a typo is an error now, not after hours of training */
        rc = upm_eval_check_datasets(t->cat, o->eval_datasets, o->n_eval_datasets, err);
    if (!rc && !t->eval && o->job > 0) /* a job worker's trainer: writes only while its attempt owns the job */
        upm_catalog_fence(t->cat, o->job, o->attempt);
    if (!rc && t->eval)
        snprintf(ckpt, sizeof ckpt, "%s", eval_ckpt);
    if (!rc && resume && (t->eval || !(rc = upm_checkpoint_latest(o->out_dir, ckpt, sizeof ckpt, err)))) {
        char sp[4200];
        snprintf(sp, sizeof sp, "%s/state.json", ckpt);
        rc = upm_read_file(sp, &state, NULL, err);
        if (!rc)
            rc = read_state(t, state, &cursor, &regrouped, err);
    }
    if (!rc && regrouped && t->rank == 0)
        fprintf(stderr, "upmoe-train: warning: %s was written by %d rank%s and this run has %d: every rank's data "
                "streams restart at the next epoch of each dataset, so the data order differs from an "
                "uninterrupted run from step %" PRId64 " on\n", ckpt, regrouped, regrouped == 1 ? "" : "s", t->world,
                t->step);
    if (!rc)
        rc = upm_trainer_task_table(t, !resume, err);
    if (!rc)
        rc = upm_backend_open(o->backend, &(upm_backend_opts){.threads = o->threads}, &t->be, err);
    if (!rc) /* the evaluation's batches too (the loader's get the same) */
        t->batch.memfn = batch_mem_of(t->be);
    if (!rc && resume && !t->eval && !t->rank && t->be->cpu_threads && t->ckpt_cpu_threads &&
        t->be->cpu_threads != t->ckpt_cpu_threads)
        printf("note: %d compute threads now, %d when the checkpoint was written: the run continues, but not "
               "bit for bit (oneDNN's matmuls split their sums by thread count; --threads %d repeats it)\n",
               t->be->cpu_threads, t->ckpt_cpu_threads, t->ckpt_cpu_threads);
    if (!rc)
        rc = upm_model_new(&t->cfg, t->be, o->seed, &t->m, err);
    if (!rc)
        rc = upm_precision_parse(o->precision, t->be, &t->m->compute, err);
    if (!rc && !t->eval && !(rc = upm_optim_init(&t->opt, t->m, &o->optim, err)))
        t->have_opt = 1;
    if (!rc && resume)
        rc = upm_checkpoint_load(ckpt, t->m, t->eval ? NULL : &t->opt, NULL, err);
    if (!rc && o->bpe_vocab)
        rc = upm_bpe_load(o->bpe_vocab, &t->bpe, err);
    if (!rc && o->mixture)
        rc = open_loader(t, cursor, err);
    if (!rc) {
        t->pass_in = upm_pass_new();
        t->pass_tg = upm_pass_new();
        t->pass_voc = upm_pass_new();
        if (!t->pass_in || !t->pass_tg || !t->pass_voc)
            rc = upm_errf(err, UPM_ENOMEM, "no memory");
    }
    t->cap_pending = ((o->metrics_every > 0 ? o->metrics_every : 1) + 1) * t->world;
    if (!rc && (!(t->pending = calloc((size_t)t->cap_pending, sizeof *t->pending)) ||
                !(t->recs = calloc((size_t)t->world, sizeof *t->recs))))
        rc = upm_errf(err, UPM_ENOMEM, "no memory");
    if (!rc && !t->eval && t->world > 1) {
        void *stream = t->be->native_stream(t->be);
        if (o->nccl == 1 && !stream)
            rc = upm_errf(err, UPM_EUSAGE, "--comm nccl sums gradients in device memory: it needs --backend cuda "
                          "(this run computes on %s)", t->be->name);
        else if (o->nccl == 1 || (o->nccl < 0 && stream))
            rc = upm_devcomm_open(t->comm, stream, &t->dev, err);
        if (!rc)
            rc = upm_gradsync_new(t->comm, t->dev, t->m, !o->reduce_all_experts, &t->gs, err);
    }
    if (!rc && !t->eval && o->dump_dir) {
        /* a replay needs every random input of a step in the file: gate noise is, drop path is not (the
         * vocabulary pass draws its own per chunk) */
        if (t->world > 1 || t->cfg.drop_path > 0)
            rc = upm_errf(err, UPM_EUSAGE, "--dump-batches needs one process and --drop-path 0");
        if (!rc)
            rc = upm_mkdirs(o->dump_dir, err);
        if (!rc && t->step == 0)
            rc = upm_batchdump_initial(o->dump_dir, t->m, &o->optim, err);
    }
    if (!rc && t->eval)
        t->step = 0; /* evaluation draws its own steps from the start of the mixture */
    else if (!rc && t->rank)
        ; /* the run row is rank 0's */
    else if (!rc && o->resume) {
        int exists;
        rc = upm_run_exists(t->cat, t->run_id, &exists, err);
        if (!rc && !exists)
            rc = upm_errf(err, UPM_EINVAL, "%s: run %" PRId64 " of the checkpoint is not in the catalog %s",
                          o->out_dir, t->run_id, path);
        if (!rc)
            rc = upm_run_resume(t->cat, t->run_id, t->step, err);
    } else if (!rc) {
        cJSON *cj = upm_model_config_json(&t->cfg);
        char *cs = cJSON_PrintUnformatted(cj);
        cJSON_Delete(cj);
        const char *base = strrchr(o->out_dir, '/');
        rc = upm_run_create(t->cat, o->name ? o->name : base && base[1] ? base + 1 : o->out_dir, o->mixture,
                            o->model_name ? o->model_name : "custom", cs ? cs : "{}", o->out_dir, o->steps,
                            &t->run_id, err);
        free(cs);
    }
    if (!rc && !t->eval && !t->rank && o->job > 0)
        rc = upm_run_link_job(t->cat, t->run_id, o->job, err);
    free(state);
    free(cursor);
    return rc;
}

int upm_train(const upm_train_opts *o, upm_err *err)
{
    trainer t;
    int rc = upm_trainer_open(&t, o, NULL, err);
    if (!rc)
        rc = dp_check_same_weights(&t, err);
    if (rc) {
        upm_trainer_close(&t);
        return rc;
    }
    if (!o->quiet && t.rank == 0)
        printf("run %" PRId64 ": %s on mixture %s, %zu parameters, steps %" PRId64 "..%" PRId64 ", %s backend (%s "
               "matmuls), output %s\n", t.run_id, o->model_name ? o->model_name : "custom", o->mixture,
               upm_layout_count(&t.m->L), t.step, o->steps, t.be->name, t.m->compute == UPM_BF16 ? "bf16" : "fp32",
               o->out_dir);
    if (!o->quiet && t.rank == 0 && t.world > 1)
        printf("data parallel: %d ranks (%s), each samples its own task every step; gradients averaged\n", t.world,
               upm_comm_name(t.comm));
    t.t0 = upm_monotonic_s(), t.step0 = t.step;
    int stopped = 0, pending_steps = 0;
    while (!rc && t.step < o->steps) {
        if (image_size_at(o, t.step) != t.image_size) { /* the next stage: same data order, new resolution */
            char *cursor = loader_cursor(&t);
            rc = cursor ? open_loader(&t, cursor, err) : upm_errf(err, UPM_ENOMEM, "no memory");
            free(cursor);
            if (rc)
                break;
            if (!o->quiet && t.rank == 0)
                printf("stage 2 from step %" PRId64 ": %d px images\n", t.step, t.image_size);
        }
        double ts = upm_monotonic_s();
        upm_metric_row row;
        if ((rc = train_step(&t, &row, err)))
            break;
        double secs = upm_monotonic_s() - ts;
        row.samples_per_s = (double)row.samples / secs;
        snprintf(row.ranks, sizeof row.ranks, "%d", t.rank);
        int first = t.npending, any_stop = 0;
        double w1 = t.comm ? upm_comm_wait_seconds(t.comm) : 0;
        if ((rc = dp_exchange(&t, &row, secs, o->stop && *o->stop, &any_stop, err)))
            break;
        if (t.gs && t.step > t.step0) { /* the first step warms up: not counted */
            t.dp_steps += 1, t.dp_step_s += upm_monotonic_s() - ts, t.dp_comm_s += t.gst.comm_s, t.dp_sync_s += t.gst.sync_s;
            t.dp_wait_s += upm_comm_wait_seconds(t.comm) - w1, t.dp_reduced += t.gst.floats_reduced;
            t.dp_all += t.gst.floats_all;
        }
        t.step++;
        pending_steps++;
        if (!o->quiet && t.rank == 0 &&
            (o->log_every <= 0 || t.step % o->log_every == 0 || t.step == t.step0 + 1 || t.step == o->steps))
            progress(&t, &t.pending[first], t.npending - first);
        stopped = any_stop;
        if (t.step == o->steps || stopped || (o->checkpoint_every > 0 && t.step % o->checkpoint_every == 0)) {
            rc = checkpoint(&t, t.step == o->steps ? "finished" : stopped ? "interrupted" : "running", err);
            pending_steps = 0;
        } else if (pending_steps >= (o->metrics_every > 0 ? o->metrics_every : 1)) {
            rc = flush_metrics(&t, err);
            if (!rc && t.rank == 0)
                rc = upm_run_update(t.cat, t.run_id, "running", t.step, NULL, NULL, err);
            pending_steps = 0;
        }
        if (!rc && !stopped && o->n_eval_datasets > 0 &&
            ((o->eval_every > 0 && t.step % o->eval_every == 0) || t.step == o->steps))
            rc = upm_trainer_eval_step(&t, err);
        if (stopped)
            break;
    }
    if (!rc && t.step == t.step0 && t.step >= o->steps && t.rank == 0) { /* resumed a run that had already finished */
        rc = upm_run_update(t.cat, t.run_id, "finished", t.step, NULL, NULL, err);
        if (!rc && !o->quiet)
            printf("run %" PRId64 " had already reached step %" PRId64 "\n", t.run_id, t.step);
    }
    if (rc && t.rank == 0) {
        upm_err e2 = {0};
        flush_metrics(&t, &e2);
        upm_run_update(t.cat, t.run_id, "failed", t.step, NULL, err->msg, &e2);
    } else if (!rc) {
        dp_summary(&t);
        if (stopped && !o->quiet && t.rank == 0)
            printf("stopped at step %" PRId64 " after a checkpoint; continue with --resume %s\n", t.step, o->out_dir);
    }
    upm_trainer_close(&t);
    return rc;
}
