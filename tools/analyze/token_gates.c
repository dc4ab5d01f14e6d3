/* upmoe-analyze gates for token routing: its gates read the data, so its map is measured on batches. For
 * each task of the mixture and each side of its passes (input tokens; target tokens: label texts, paired
 * captions or vocabulary entries), and each routed block and gate, the share of tokens whose first choice is
 * each expert, over --batches evaluation batches per task drawn by the mixture's sampler (paper Fig. 3's map
 * for a data-dependent routing). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "formulation.h"
#include "task_batches.h"
#include "token_gates.h"
#include "trainer_state.h"

static const char *gate_label[UPM_NGATES] = {"attn", "fc1", "fc2"};

typedef struct cell {
    double *counts; /* [E] */
    int64_t tokens;
} cell;

typedef struct shares {
    cell *cells; /* [task][side][col] */
    int cols, col_l[3 * 256], col_g[3 * 256];
} shares;

/* After a batch of task ti: its tokens' first choices at every token gate, input and target side. */
static int take_batch(void *vctx, trainer *t, int ti, upm_err *err)
{
    shares *sh = vctx;
    const upm_formulation_desc *fd = upm_formulation_desc_get(t->batch.formulation);
    upm_pass *target = fd && fd->targets == UPM_TARGETS_VOCABULARY ? t->pass_voc : t->pass_tg;
    int rc = 0;
    for (int c = 0; !rc && c < sh->cols; c++) {
        cell *in = &sh->cells[((size_t)ti * 2) * sh->cols + c], *tg = &sh->cells[((size_t)ti * 2 + 1) * sh->cols + c];
        rc = upm_pass_token_choices(t->m, t->pass_in, sh->col_l[c], sh->col_g[c], in->counts, &in->tokens, err);
        if (!rc)
            rc = upm_pass_token_choices(t->m, target, sh->col_l[c], sh->col_g[c], tg->counts, &tg->tokens, err);
    }
    return rc;
}

int upm_analyze_token_gates(const upm_train_opts *o, const char *ckpt, int batches, int json, upm_err *err)
{
    trainer t;
    int rc = upm_trainer_open(&t, o, ckpt, err);
    if (rc)
        return rc;
    upm_task_list tl;
    rc = upm_task_list_load(t.cat, o->mixture, &tl, err);
    int nt = tl.n, E = t.cfg.experts;
    shares sh = {.cols = 0};
    for (int l = 0; l < t.cfg.layers && sh.cols < 3 * 256; l++)
        for (int gi = 0; gi < UPM_NGATES; gi++)
            if (t.m->L.blocks[l].has_gate[gi])
                sh.col_l[sh.cols] = l, sh.col_g[sh.cols++] = gi;
    int cols = sh.cols;
    size_t ncells = (size_t)nt * 2 * (size_t)cols;
    cell *cells = rc ? NULL : calloc(ncells ? ncells : 1, sizeof *cells);
    double *store = rc ? NULL : calloc(ncells * (size_t)E + 1, sizeof *store);
    if (!rc && (!cells || !store))
        rc = upm_errf(err, UPM_ENOMEM, "no memory");
    for (size_t i = 0; !rc && i < ncells; i++)
        cells[i].counts = store + i * (size_t)E;
    sh.cells = cells;
    if (!rc)
        rc = upm_each_task_batch(&t, &tl, batches, take_batch, &sh, err);
    if (!rc && json) {
        cJSON *j = cJSON_CreateObject(), *ta = cJSON_AddArrayToObject(j, "tasks");
        cJSON_AddStringToObject(j, "checkpoint", ckpt);
        cJSON_AddStringToObject(j, "routing", upm_moe_kind_name(t.cfg.moe));
        cJSON_AddNumberToObject(j, "experts", E);
        cJSON_AddNumberToObject(j, "batches", batches);
        for (int ti = 0; ti < nt; ti++) {
            cJSON *to = cJSON_CreateObject(), *sa = cJSON_AddArrayToObject(to, "sides");
            cJSON_AddStringToObject(to, "task", tl.name[ti]);
            for (int s = 0; s < 2; s++) {
                cJSON *so = cJSON_CreateObject(), *ga = cJSON_AddArrayToObject(so, "gates");
                cJSON_AddStringToObject(so, "side", s ? "target" : "input");
                for (int c = 0; c < cols; c++) {
                    const cell *x = &cells[((size_t)ti * 2 + s) * cols + c];
                    cJSON *go = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(go, "shares");
                    cJSON_AddNumberToObject(go, "block", sh.col_l[c]);
                    cJSON_AddStringToObject(go, "gate", gate_label[sh.col_g[c]]);
                    cJSON_AddNumberToObject(go, "tokens", (double)x->tokens);
                    for (int e = 0; e < E; e++)
                        cJSON_AddItemToArray(arr, cJSON_CreateNumber(x->tokens ? x->counts[e] / (double)x->tokens : 0));
                    cJSON_AddItemToArray(ga, go);
                }
                cJSON_AddItemToArray(sa, so);
            }
            cJSON_AddItemToArray(ta, to);
        }
        char *s = cJSON_Print(j);
        printf("%s\n", s ? s : "{}");
        free(s);
        cJSON_Delete(j);
    } else if (!rc) {
        printf("%s (%s routing): share of tokens per expert (first choice), %d batches per task\n", ckpt,
               upm_moe_kind_name(t.cfg.moe), batches);
        for (int ti = 0; ti < nt; ti++)
            for (int s = 0; s < 2; s++) {
                printf("%s, %s tokens:\n", tl.name[ti], s ? "target" : "input");
                for (int c = 0; c < cols; c++) {
                    const cell *x = &cells[((size_t)ti * 2 + s) * cols + c];
                    printf("  block %d %-4s", sh.col_l[c], gate_label[sh.col_g[c]]);
                    for (int e = 0; e < E; e++)
                        printf(" %5.3f", x->tokens ? x->counts[e] / (double)x->tokens : 0.0);
                    printf("   (%lld tokens)\n", (long long)x->tokens);
                }
            }
    }
    free(cells);
    free(store);
    upm_trainer_close(&t);
    return rc;
}
