/* Step files of a training run (see batchdump.h). */
#include "batchdump.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "modelcfg.h"
#include "stepfile.h"

/* A new step file and the model configuration as its "config" metadata (both freed by the caller). */
static int begin(const char *path, const upm_model *m, upm_stepfile **f, char **config, upm_err *err)
{
    cJSON *j = upm_model_config_json(&m->cfg);
    *config = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    *f = upm_stepfile_new();
    return *config && *f ? 0 : upm_errf(err, UPM_ENOMEM, "no memory for %s", path);
}

int upm_batchdump_initial(const char *dir, const upm_model *m, const upm_optim_config *oc, upm_err *err)
{
    char path[4200], optim[512];
    snprintf(path, sizeof path, "%s/initial.safetensors", dir);
    snprintf(optim, sizeof optim,
             "{\"lr\": %.9g, \"min_lr\": %.9g, \"weight_decay\": %.9g, \"beta1\": %.9g, \"beta2\": %.9g, "
             "\"eps\": %.9g, \"clip\": %.9g, \"warmup_steps\": %" PRId64 ", \"total_steps\": %" PRId64 "}",
             (double)oc->lr, (double)oc->min_lr, (double)oc->weight_decay, (double)oc->beta1, (double)oc->beta2,
             (double)oc->eps, (double)oc->clip, oc->warmup_steps, oc->total_steps);
    char *config = NULL;
    upm_stepfile *f = NULL;
    int rc = begin(path, m, &f, &config, err);
    if (!rc) {
        upm_stepfile_put_params(f, m, 0);
        const char *meta[] = {"config", config, "optim", optim, NULL};
        rc = upm_stepfile_write(f, path, meta, err);
    }
    upm_stepfile_free(f);
    free(config);
    return rc;
}

int upm_batchdump_step_write(const char *dir, const upm_model *m, const upm_batchdump_step *s, upm_err *err)
{
    const upm_batch *b = s->b;
    int vocab = s->tg == NULL;
    char path[4200], segs[4400], seg_in[2048], seg_tg[2048] = "[]", spe[64], vattr[64], num[4][40];
    snprintf(path, sizeof path, "%s/step-%08" PRId64 ".safetensors", dir, s->step);
    upm_stepfile_segments_json(s->in, seg_in, sizeof seg_in);
    if (!vocab)
        upm_stepfile_segments_json(s->tg, seg_tg, sizeof seg_tg);
    snprintf(segs, sizeof segs, "{\"input\": %s, \"target\": %s}", seg_in, seg_tg);
    snprintf(spe, sizeof spe, "[%d, %d]", s->in->spe_attr, vocab ? s->vocab_attr : s->tg->spe_attr);
    snprintf(vattr, sizeof vattr, "[%d, %d]", s->vocab_attr, s->vocab_attr);
    snprintf(num[0], sizeof num[0], "%.9g", (double)b->loss_weight);
    snprintf(num[1], sizeof num[1], "%.9g", s->loss);
    snprintf(num[2], sizeof num[2], "%.9g", s->lr);
    snprintf(num[3], sizeof num[3], "%.9g", s->grad_norm);
    char step[32];
    snprintf(step, sizeof step, "%" PRId64, s->step);
    char *config = NULL;
    upm_stepfile *f = NULL;
    int rc = begin(path, m, &f, &config, err);
    if (!rc) {
        upm_stepfile_put_side(f, "input", s->in);
        if (vocab) {
            const upm_vocab_batch *vb = s->vb;
            upm_stepfile_put(f, "read.seq", UPM_ST_I32, vb->read_seq, 1, (int64_t[]){vb->M});
            upm_stepfile_put(f, "read.pos", UPM_ST_I32, vb->read_pos, 1, (int64_t[]){vb->M});
            upm_stepfile_put(f, "read.target", UPM_ST_I32, vb->target_idx, 1, (int64_t[]){vb->M});
            upm_stepfile_put(f, "vocab.ids", UPM_ST_I32, vb->cand, 1, (int64_t[]){vb->C});
            if (vb->logq)
                upm_stepfile_put(f, "vocab.logq", UPM_ST_F32, vb->logq, 1, (int64_t[]){vb->C});
        } else {
            upm_stepfile_put_side(f, "target", s->tg);
            if (s->in->nread > 0) { /* a cloze prompt's <|spe|> read-outs (upm_prompt_readouts) */
                upm_stepfile_put(f, "read.seq", UPM_ST_I32, s->in->read_seq, 1, (int64_t[]){s->in->nread});
                upm_stepfile_put(f, "read.pos", UPM_ST_I32, s->in->read_pos, 1, (int64_t[]){s->in->nread});
            }
            if (b->labels) /* label formulations: the class of each row */
                upm_stepfile_put(f, "labels", UPM_ST_I32, b->labels, 1, (int64_t[]){b->B});
        }
        upm_stepfile_put_tables(f, "input", m, s->noise[0], NULL, s->in->nseq, upm_seq_positions(s->in));
        upm_stepfile_put_tables(f, "target", m, s->noise[1], NULL, vocab ? s->vb->C : s->tg->nseq,
                                vocab ? 2 : upm_seq_positions(s->tg));
        char tid[16]; /* task routing: the passes' task id */
        snprintf(tid, sizeof tid, "%d", s->in->task);
        const char *meta[] = {"config", config, "formulation", upm_formulation_name(b->formulation), "segments", segs,
                              "spe_attr", spe, "loss_weight", num[0], "label_smoothing", "0.1", "step", step,
                              "task", b->task, "task_id", tid, "dataset", b->dataset, "loss", num[1], "lr", num[2],
                              "grad_norm", num[3], vocab ? "vocab_attr" : NULL, vattr, NULL};
        rc = upm_stepfile_write(f, path, meta, err);
    }
    upm_stepfile_free(f);
    free(config);
    return rc;
}
