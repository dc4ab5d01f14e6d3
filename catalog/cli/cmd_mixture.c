/* upmoe-catalog mixture create|add|remove|show: the named dataset mixtures a pretraining job samples
 * from. `show` prints effective weights and each member's sampling probability. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"

typedef struct mix_job {
    const char *mixture, *notes;
    const char **datasets;
    int n;
    double weight, loss_weight;
    int remove;
} mix_job;

static int create_fn(upm_catalog *cat, void *p, upm_err *err)
{
    mix_job *j = p;
    return upm_mixture_create(cat, j->mixture, j->notes ? j->notes : "", err);
}

static int members_fn(upm_catalog *cat, void *p, upm_err *err)
{
    mix_job *j = p;
    int rc = 0;
    for (int i = 0; !rc && i < j->n; i++) {
        if (j->remove) {
            rc = upm_mixture_remove(cat, j->mixture, j->datasets[i], err);
        } else {
            upm_mixture_member m = {.sampling_weight = j->weight, .loss_weight = j->loss_weight};
            if (strlen(j->datasets[i]) > UPM_NAME_MAX)
                return upm_errf(err, UPM_EINVAL, "unknown dataset '%s'", j->datasets[i]);
            snprintf(m.dataset, sizeof m.dataset, "%s", j->datasets[i]);
            rc = upm_mixture_add(cat, j->mixture, &m, err);
        }
    }
    return rc;
}

typedef struct member_list {
    int n, cap;
    upm_mixture_member *m;
} member_list;

static int collect(const upm_mixture_member *m, void *p)
{
    member_list *x = p;
    if (x->n == x->cap) {
        x->cap = x->cap ? 2 * x->cap : 32;
        void *q = realloc(x->m, (size_t)x->cap * sizeof *x->m);
        if (!q)
            return UPM_ENOMEM;
        x->m = q;
    }
    x->m[x->n++] = *m;
    return 0;
}

/* One row of `mixture show`; adds its weight to *total. */
static int member_row(cli *c, upm_catalog *cat, const upm_mixture_member *m, double *w, double *lw, upm_dataset *d)
{
    if (upm_dataset_get(cat, m->dataset, d, &c->err) || upm_dataset_effective_loss_weight(cat, d, lw, &c->err))
        return c->err.code;
    *w = m->sampling_weight >= 0 ? m->sampling_weight : d->sampling_weight;
    *lw = m->loss_weight >= 0 ? m->loss_weight : *lw;
    return 0;
}

int cli_show_mixture(cli *c, upm_catalog *cat, const char *name)
{
    if (c->json) {
        cJSON *o = upm_mixture_to_json(cat, name, &c->err);
        if (!o)
            return cli_fail(&c->err);
        cli_print_json(o);
        return 0;
    }
    char notes[UPM_NOTES_MAX + 1];
    member_list x = {0};
    if (upm_mixture_get_notes(cat, name, notes, sizeof notes, &c->err) ||
        upm_mixture_foreach_member(cat, name, collect, &x, &c->err)) {
        free(x.m);
        return cli_fail(&c->err);
    }
    double *w = calloc((size_t)x.n + 1, sizeof *w), *lw = calloc((size_t)x.n + 1, sizeof *lw), total = 0;
    upm_dataset *d = calloc((size_t)x.n + 1, sizeof *d);
    int rc = (!w || !lw || !d) ? upm_errf(&c->err, UPM_ENOMEM, "out of memory") : 0;
    for (int i = 0; !rc && i < x.n; i++) {
        rc = member_row(c, cat, &x.m[i], &w[i], &lw[i], &d[i]);
        total += w[i];
    }
    if (!rc) {
        printf("mixture %s: %d datasets%s%s\n", name, x.n, notes[0] ? "\n  " : "", notes);
        static const char *const h[] = {"DATASET", "TASK", "BATCH", "WEIGHT", "PROB", "LOSS-W", "URL"};
        cli_table *t = cli_table_new(7, h, "0011110");
        int missing = 0;
        for (int i = 0; i < x.n; i++) {
            char batch[32], ws[40], prob[32], ls[40];
            snprintf(batch, sizeof batch, "%d", d[i].batch_size);
            cli_fmt_weight(w[i], ws, 32);
            if (x.m[i].sampling_weight >= 0)
                strcat(ws, "*");
            snprintf(prob, sizeof prob, "%.2f%%", total > 0 ? 100.0 * w[i] / total : 0.0);
            cli_fmt_weight(lw[i], ls, 32);
            if (x.m[i].loss_weight >= 0)
                strcat(ls, "*");
            missing += !d[i].url_pattern[0];
            const char *cells[] = {d[i].name, d[i].task, batch, ws, prob, ls, d[i].url_pattern[0] ? "set" : "placeholder"};
            cli_table_add(t, cells);
        }
        printf("\n");
        cli_table_print(t, stdout);
        char tw[32];
        snprintf(tw, sizeof tw, "%.6g", total);
        printf("\ntotal weight %s; PROB = weight / total. * = set on the mixture, else the dataset's.\n", tw);
        if (missing)
            printf("%d member%s still need%s a shard URL.\n", missing, missing == 1 ? "" : "s", missing == 1 ? "s" : "");
    }
    free(w), free(lw), free(d), free(x.m);
    return rc ? cli_fail(&c->err) : 0;
}

int cmd_mixture(cli *c, int argc, char **argv)
{
    const char *notes = NULL, *w = NULL, *lw = NULL, *pos[256];
    int npos;
    if (argc < 2)
        return cli_usage_error("mixture", "mixture needs an action: create, add, remove or show");
    const char *action = argv[1];
    const cli_opt opts[] = {{"notes", 1, &notes, NULL, NULL, NULL, 0},
                            {"weight", 1, &w, NULL, NULL, NULL, 0},
                            {"loss-weight", 1, &lw, NULL, NULL, NULL, 0},
                            {0}};
    int rc = cli_parse(argc - 2, argv + 2, opts, pos, 256, &npos, "mixture");
    if (rc)
        return rc;
    mix_job job = {.notes = notes, .weight = -1, .loss_weight = -1};
    int is_create = strcmp(action, "create") == 0, is_add = strcmp(action, "add") == 0;
    int is_remove = strcmp(action, "remove") == 0, is_show = strcmp(action, "show") == 0;
    if (!is_create && !is_add && !is_remove && !is_show)
        return cli_usage_error("mixture", "unknown action '%s' (create, add, remove or show)", action);
    if ((is_create || is_show) && npos != 1)
        return cli_usage_error("mixture", "mixture %s needs exactly one MIXTURE name", action);
    if ((is_add || is_remove) && npos < 2)
        return cli_usage_error("mixture", "mixture %s needs MIXTURE and at least one DATASET", action);
    if (c->json && !is_show)
        return cli_usage_error("mixture", "--json is only for mixture show");
    if (notes && !is_create)
        return cli_usage_error("mixture", "--notes is for mixture create");
    if ((w || lw) && !is_add)
        return cli_usage_error("mixture", "--weight and --loss-weight are for mixture add");
    if ((w && (rc = cli_weight("mixture", "--weight", w, &job.weight))) ||
        (lw && (rc = cli_weight("mixture", "--loss-weight", lw, &job.loss_weight))))
        return rc;
    job.mixture = pos[0];
    job.datasets = pos + 1;
    job.n = npos - 1;
    job.remove = is_remove;
    upm_catalog *cat;
    if ((rc = cli_open(c, is_show ? UPM_CAT_READONLY : 0, &cat)))
        return rc;
    if (is_show)
        rc = cli_show_mixture(c, cat, job.mixture);
    else
        rc = cli_write(c, cat, is_create ? create_fn : members_fn, &job);
    upm_catalog_close(cat);
    if (!rc && is_create)
        printf("created mixture %s\n", job.mixture);
    else if (!rc && !is_show)
        printf("%s %d dataset%s %s mixture %s\n", is_add ? "added" : "removed", job.n, job.n == 1 ? "" : "s",
               is_add ? "to" : "from", job.mixture);
    return rc;
}
