/* The data-parallel parts of the training loop (docs/distributed.md): the per-step exchange of rank
 * records and the metrics rows rank 0 writes from them, the weights check, a rank's cursor from a
 * checkpoint of any world size, and the end-of-run summary. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "trainer_state.h"

/* Appends to buf (cap bytes) "sep item" unless it is already one of the items. */
static void add_unique(char *buf, size_t cap, const char *item)
{
    size_t n = strlen(item), len = strlen(buf);
    for (const char *p = buf; *p;) {
        const char *e = strchr(p, ',');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        if (k == n && !strncmp(p, item, n))
            return;
        p += k + (e != NULL);
    }
    if (len + n + 2 < cap) { /* room checked: copy without snprintf's truncation warning */
        if (len)
            buf[len++] = ',';
        memcpy(buf + len, item, n + 1);
    }
}

/* After a step: every rank's record to every rank. Rank 0 appends one metrics row per task trained in
 * the step (loss and accuracy averaged over the ranks that trained it, weighted by their samples; a
 * task one rank trained keeps that rank's values exactly). *any_stop: some rank asked to stop. */
int dp_exchange(trainer *t, const upm_metric_row *mine, double seconds, int stop, int *any_stop, upm_err *err)
{
    rank_rec me;
    memset(&me, 0, sizeof me);
    snprintf(me.task, sizeof me.task, "%s", mine->task);
    snprintf(me.dataset, sizeof me.dataset, "%s", mine->dataset);
    me.loss = mine->loss, me.weighted_loss = mine->weighted_loss, me.accuracy = mine->accuracy;
    me.samples = (double)mine->samples, me.seconds = seconds, me.stop = stop;
    me.balance_loss = mine->has_route ? mine->balance_loss : -1, me.dropped = mine->has_route ? mine->dropped : -1;
    int rc = 0;
    if (t->world > 1) {
        upm_comm_set_phase(t->comm, "step %" PRId64 ": end of step", t->step + 1);
        rc = upm_comm_allgather(t->comm, &me, sizeof me, t->recs, err);
    } else
        t->recs[0] = me;
    if (rc)
        return rc;
    double slowest = 0;
    *any_stop = 0;
    for (int r = 0; r < t->world; r++) {
        *any_stop |= t->recs[r].stop != 0;
        if (t->recs[r].seconds > slowest)
            slowest = t->recs[r].seconds;
    }
    if (slowest > t->slowest_step)
        t->slowest_step = slowest;
    if (t->comm) /* a rank may fall behind by a few of the longest steps seen before it counts as hung */
        upm_comm_set_patience(t->comm, 5 * t->slowest_step > upm_comm_timeout(t->comm) ? 5 * t->slowest_step
                                                                                        : upm_comm_timeout(t->comm));
    for (int r = 0; r < t->world && t->rank == 0; r++) {
        const rank_rec *a = &t->recs[r];
        int seen = 0;
        for (int q = 0; q < r && !seen; q++)
            seen = !strcmp(t->recs[q].task, a->task);
        if (seen)
            continue;
        upm_metric_row *row = &t->pending[t->npending++];
        *row = *mine; /* step, lr, grad norm: the same on every rank */
        snprintf(row->task, sizeof row->task, "%s", a->task);
        row->dataset[0] = row->ranks[0] = 0;
        double n = 0, loss = 0, wl = 0, acc = 0, bal = 0, drop = 0;
        int k = 0;
        for (int q = r; q < t->world; q++) {
            const rank_rec *b = &t->recs[q];
            if (strcmp(b->task, a->task))
                continue;
            n += b->samples, loss += b->loss * b->samples, wl += b->weighted_loss * b->samples;
            acc += b->accuracy * b->samples;
            bal += b->balance_loss * b->samples, drop += b->dropped * b->samples;
            add_unique(row->dataset, sizeof row->dataset, b->dataset);
            size_t len = strlen(row->ranks);
            if (len + 12 < sizeof row->ranks)
                snprintf(row->ranks + len, sizeof row->ranks - len, "%s%d", len ? " " : "", q);
            k++;
        }
        if (k == 1)
            row->loss = a->loss, row->weighted_loss = a->weighted_loss, row->accuracy = a->accuracy;
        else
            row->loss = loss / n, row->weighted_loss = wl / n, row->accuracy = a->accuracy >= 0 ? acc / n : -1;
        row->has_route = a->balance_loss >= 0; /* token routing: averaged like the loss */
        row->balance_loss = k == 1 ? a->balance_loss : bal / n, row->dropped = k == 1 ? a->dropped : drop / n;
        row->samples = (int64_t)n;
        row->samples_per_s = slowest > 0 ? n / slowest : 0;
    }
    return 0;
}

/* Every rank's weights must be the same (same seed or checkpoint, same averaged updates): compares
 * checksums, naming the first rank that differs. */
int dp_check_same_weights(trainer *t, upm_err *err)
{
    if (t->world < 2)
        return 0;
    size_t bytes = t->m->L.total * sizeof(float);
    float *host = malloc(bytes);
    uint64_t *all = calloc((size_t)t->world, sizeof *all), mine;
    if (!host || !all) {
        free(host), free(all);
        return upm_errf(err, UPM_ENOMEM, "no memory for a weights checksum");
    }
    t->be->download(t->be, host, t->m->w, bytes);
    mine = XXH3_64bits(host, bytes);
    free(host);
    upm_comm_set_phase(t->comm, "step %" PRId64 ": weights check", t->step);
    int rc = upm_comm_allgather(t->comm, &mine, sizeof mine, all, err);
    for (int r = 1; !rc && r < t->world; r++)
        if (all[r] != all[0])
            rc = upm_errf(err, UPM_ECOMM, "at step %" PRId64 " the weights of rank %d differ from rank 0's (checksum "
                          "%016" PRIx64 " vs %016" PRIx64 "): the ranks started from different weights or a "
                          "reduction is not the same on every rank", t->step, r, all[r], all[0]);
    free(all);
    return rc;
}

/* This rank's cursor from the saved ones: its own when the world size is the same, else a regrouped one
 * (upm_cursor_regroup; *regrouped = the old world size). */
int dp_pick_cursor(trainer *t, const cJSON *cursors, char **cursor, int *regrouped, upm_err *err)
{
    int n = cJSON_GetArraySize(cursors), rc = 0;
    *regrouped = 0;
    if (n == t->world) {
        if (!(*cursor = cJSON_PrintUnformatted(cJSON_GetArrayItem(cursors, t->rank))))
            return upm_errf(err, UPM_ENOMEM, "no memory");
        return 0;
    }
    upm_cursor *old = calloc((size_t)n, sizeof *old), c;
    if (!old)
        return upm_errf(err, UPM_ENOMEM, "no memory");
    int parsed = 0;
    for (; parsed < n && !rc; parsed++) {
        char *txt = cJSON_PrintUnformatted(cJSON_GetArrayItem(cursors, parsed));
        rc = txt ? upm_cursor_from_json(txt, &old[parsed], err) : upm_errf(err, UPM_ENOMEM, "no memory");
        free(txt);
        if (rc)
            break;
    }
    int readers = t->o->readers > 0 ? t->o->readers : 2;
    if (!rc && !(rc = upm_cursor_regroup(old, n, t->rank, t->world, readers, &c, err))) {
        if (!(*cursor = upm_cursor_to_json(&c)))
            rc = upm_errf(err, UPM_ENOMEM, "no memory");
        upm_cursor_free(&c);
        *regrouped = n;
    }
    for (int i = 0; i < parsed; i++)
        upm_cursor_free(&old[i]);
    free(old);
    return rc;
}

/* The data-parallel summary on rank 0: where the time went, and the traffic saved. */
void dp_summary(const trainer *t)
{
    if (t->world < 2 || t->rank || t->o->quiet || t->dp_steps < 1)
        return;
    double n = t->dp_steps, step = t->dp_step_s / n;
    printf("data parallel: %d ranks (%s), %.0f steps after the first: step %.1f ms, gradient reduction not hidden "
           "%.1f ms (%.1f%%, %s), waiting for slower ranks %.1f ms (%.1f%%) before the last backward pass and "
           "%.1f ms at the end of the step; reduced %.2f M of %.2f M gradient floats per step (%.1f%%%s)\n",
           t->world, upm_comm_name(t->comm), n, 1e3 * step, 1e3 * t->dp_comm_s / n, 100 * t->dp_comm_s / t->dp_step_s,
           t->o->no_overlap ? "reduced after the backward pass" : "buckets overlap the backward pass",
           1e3 * t->dp_sync_s / n, 100 * t->dp_sync_s / t->dp_step_s, 1e3 * t->dp_wait_s / n, t->dp_reduced / n / 1e6,
           t->dp_all / n / 1e6, 100 * t->dp_reduced / t->dp_all,
           t->o->reduce_all_experts ? "" : ", experts no rank used are skipped");
}
