/* Bucketed, overlapped gradient averaging (see gradsync.h). The gradients are backend memory: a bucket's
 * selected ranges are packed by a backend op (one range is reduced where it lies), handed to the
 * communicator where the host may address them (the CPU backend: in place, no copy), else staged through
 * a host buffer by download and upload (the debug backend; a GPU with MPI), or summed in device memory by
 * a device communicator (NCCL, queued on the backend's stream), and written back averaged by a backend
 * op. */
#include "gradsync.h"
#include "clock.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct item {
    size_t off, n;      /* floats: a plain range, or (experts) the whole [E, ...] tensor */
    int expert_layer;   /* >= 0: an expert tensor of this layer, routed by gate `expert_gate` */
    int expert_gate;
    size_t per_expert;  /* floats per expert */
} item;

typedef struct bucket {
    item *items;
    int nitems;
    size_t floats;      /* all items */
    size_t *roff, *rn;  /* this step's selected ranges */
    int nranges;
    size_t sel;         /* floats selected this step */
    float *stage;       /* backend memory: packed ranges when there are several */
    float *host;        /* host staging (host_alloc) when the backend's memory is not host-addressable */
    upm_event *ev;      /* recorded after the bucket's backward ops (and its packing) were queued */
    int queued;         /* its gradients are complete once ev is: the reduction may start */
    float *dev;         /* this step's reduced buffer: the gradient range or stage (backend memory) */
    float *red;         /* what the communicator reduces: dev's host address, or host */
    int launched, done;
    upm_comm_req req;
} bucket;

struct upm_gradsync {
    upm_comm *c;
    upm_devcomm *dev; /* NULL: host collectives */
    upm_model *m;
    int skip, ngroups; /* group g lives at index g + 1 */
    bucket *b;
    size_t used_bytes;
    uint8_t *used_all; /* world x used_bytes */
    int rc;
    upm_err err;
    double comm_s, sync_s;
};

static int add_item(bucket *b, item it)
{
    if (it.expert_layer < 0 && b->nitems && b->items[b->nitems - 1].expert_layer < 0) {
        item *last = &b->items[b->nitems - 1]; /* adjacent plain ranges (padding between is zero) merge */
        last->n = it.off + it.n - last->off;
        return 0;
    }
    item *x = realloc(b->items, sizeof *x * (size_t)(b->nitems + 1));
    if (!x)
        return -1;
    b->items = x;
    b->items[b->nitems++] = it;
    return 0;
}

int upm_gradsync_new(upm_comm *c, upm_devcomm *dev, upm_model *m, int skip_experts, upm_gradsync **out,
                     upm_err *err)
{
    *out = NULL;
    upm_gradsync *gs = calloc(1, sizeof *gs);
    if (!gs)
        return upm_errf(err, UPM_ENOMEM, "no memory");
    gs->c = c, gs->dev = dev, gs->m = m, gs->skip = skip_experts && m->expert_used;
    gs->ngroups = m->cfg.layers + 2;
    gs->b = calloc((size_t)gs->ngroups, sizeof *gs->b);
    int E = m->cfg.experts, rc = gs->b ? 0 : -1;
    /* Which tensors are expert tensors: the w/b of MoE linears ([E, out, in] / [E, out]). */
    int *expert_of = calloc((size_t)m->L.n, sizeof *expert_of), *gate_of = calloc((size_t)m->L.n, sizeof *gate_of);
    if (!expert_of || !gate_of)
        rc = -1;
    for (int i = 0; !rc && i < m->L.n; i++)
        expert_of[i] = -1;
    for (int l = 0; !rc && l < m->L.nblocks && gs->skip; l++) {
        const upm_block_idx *k = &m->L.blocks[l];
        const upm_linear_idx *lins[] = {&k->qkv, &k->proj, &k->fc1, &k->fc2};
        for (int j = 0; j < 4; j++)
            if (lins[j]->gate >= 0) {
                expert_of[lins[j]->w] = expert_of[lins[j]->b] = l;
                gate_of[lins[j]->w] = gate_of[lins[j]->b] = lins[j]->gate;
            }
    }
    for (int i = 0; !rc && i < m->L.n; i++) {
        const upm_param *p = &m->L.p[i];
        bucket *b = &gs->b[upm_param_group(m, i) + 1];
        item it = {p->offset, p->numel, expert_of[i], gate_of[i], expert_of[i] >= 0 ? p->numel / (size_t)E : 0};
        rc = add_item(b, it);
    }
    for (int g = 0; !rc && g < gs->ngroups; g++) {
        bucket *b = &gs->b[g];
        for (int j = 0; j < b->nitems; j++)
            b->floats += b->items[j].n;
        size_t maxr = 0;
        for (int j = 0; j < b->nitems; j++)
            maxr += b->items[j].expert_layer >= 0 ? (size_t)E : 1;
        b->roff = malloc(sizeof(size_t) * (maxr ? maxr : 1));
        b->rn = malloc(sizeof(size_t) * (maxr ? maxr : 1));
        b->ev = m->be->event_new(m->be);
        if (!b->roff || !b->rn || !b->ev)
            rc = -1;
    }
    free(expert_of);
    free(gate_of);
    if (!rc && gs->skip) {
        gs->used_bytes = (size_t)m->cfg.layers * UPM_NGATES * (size_t)E;
        if (!(gs->used_all = malloc(gs->used_bytes * (size_t)upm_comm_world(c))))
            rc = -1;
    }
    if (rc) {
        upm_gradsync_free(gs);
        return upm_errf(err, UPM_ENOMEM, "no memory for gradient buckets");
    }
    *out = gs;
    return 0;
}

void upm_gradsync_free(upm_gradsync *gs)
{
    if (!gs)
        return;
    for (int g = 0; gs->b && g < gs->ngroups; g++) {
        free(gs->b[g].items);
        free(gs->b[g].roff);
        free(gs->b[g].rn);
        if (gs->b[g].stage)
            gs->m->be->free(gs->m->be, gs->b[g].stage);
        if (gs->b[g].host)
            gs->m->be->host_free(gs->m->be, gs->b[g].host);
        if (gs->b[g].ev)
            gs->m->be->event_free(gs->m->be, gs->b[g].ev);
    }
    free(gs->b);
    free(gs->used_all);
    free(gs);
}

static void add_range(bucket *b, size_t off, size_t n)
{
    if (b->nranges && b->roff[b->nranges - 1] + b->rn[b->nranges - 1] == off)
        b->rn[b->nranges - 1] += n;
    else
        b->roff[b->nranges] = off, b->rn[b->nranges] = n, b->nranges++;
    b->sel += n;
}

int upm_gradsync_begin(upm_gradsync *gs, upm_err *err)
{
    const upm_model *m = gs->m;
    int E = m->cfg.experts, W = upm_comm_world(gs->c);
    gs->rc = 0;
    gs->comm_s = gs->sync_s = 0;
    if (gs->skip) { /* OR over ranks of the experts each used */
        double t0 = upm_monotonic_s();
        int rc = upm_comm_allgather(gs->c, upm_model_experts_used(gs->m), gs->used_bytes, gs->used_all, err);
        gs->sync_s = upm_monotonic_s() - t0;
        if (rc)
            return rc;
        for (int r = 1; r < W; r++)
            for (size_t i = 0; i < gs->used_bytes; i++)
                gs->used_all[i] |= gs->used_all[(size_t)r * gs->used_bytes + i];
    }
    for (int g = 0; g < gs->ngroups; g++) {
        bucket *b = &gs->b[g];
        b->nranges = 0, b->sel = 0, b->launched = b->done = b->queued = 0, b->req = -1;
        for (int j = 0; j < b->nitems; j++) {
            const item *it = &b->items[j];
            if (it->expert_layer < 0) {
                add_range(b, it->off, it->n);
                continue;
            }
            const uint8_t *used = gs->used_all + ((size_t)it->expert_layer * UPM_NGATES + (size_t)it->expert_gate) * (size_t)E;
            for (int e = 0; e < E; e++)
                if (used[e])
                    add_range(b, it->off + (size_t)e * it->per_expert, it->per_expert);
        }
    }
    return 0;
}

/* Starts the reduction of bucket b, whose gradients are complete: on the host where the backend's memory
 * is addressable, else after a download into host staging. */
static void launch(upm_gradsync *gs, bucket *b)
{
    upm_backend *be = gs->m->be;
    if (gs->dev) { /* queued on the stream behind the bucket's backward ops: ordered, nothing to wait for */
        double t0 = upm_monotonic_s();
        gs->rc = upm_devcomm_allreduce_sum(gs->dev, b->dev, b->sel, &gs->err);
        b->red = b->dev;
        b->launched = b->done = 1;
        gs->comm_s += upm_monotonic_s() - t0;
        return;
    }
    b->red = be->host_ptr(be, b->dev);
    if (!b->red) {
        if (!b->host && !(b->host = be->host_alloc(be, sizeof(float) * b->floats))) {
            gs->rc = upm_errf(&gs->err, UPM_ENOMEM, "no memory for a gradient bucket");
            return;
        }
        be->download(be, b->host, b->dev, sizeof(float) * b->sel);
        b->red = b->host;
    }
    double t0 = upm_monotonic_s();
    gs->rc = upm_comm_iallreduce_sum(gs->c, b->red, b->sel, &b->req, &gs->err);
    b->launched = 1;
    /* Progress the earlier buckets while we are in the library anyway. */
    for (int k = gs->ngroups - 1; !gs->rc && k >= 0; k--)
        if (gs->b[k].launched && !gs->b[k].done && &gs->b[k] != b)
            gs->rc = upm_comm_test(gs->c, gs->b[k].req, &gs->b[k].done, &gs->err);
    gs->comm_s += upm_monotonic_s() - t0;
}

/* Starts the queued buckets whose events have completed, in queue order (every rank starts its
 * collectives in the same order), stopping at the first still running; with block, waits for each. */
static void launch_ready(upm_gradsync *gs, int block)
{
    upm_backend *be = gs->m->be;
    for (int k = gs->ngroups - 1; !gs->rc && k >= 0; k--) {
        bucket *b = &gs->b[k];
        if (!b->queued || b->launched)
            continue;
        if (block)
            be->wait(be, b->ev);
        else if (!be->query(be, b->ev))
            return;
        launch(gs, b);
    }
}

void upm_gradsync_ready(void *ctx, int group)
{
    upm_gradsync *gs = ctx;
    if (gs->rc || group < -1 || group + 1 >= gs->ngroups)
        return;
    bucket *b = &gs->b[group + 1];
    if (b->queued || !b->sel)
        return;
    upm_backend *be = gs->m->be;
    float *g = gs->m->g;
    b->dev = g + (b->nranges ? b->roff[0] : 0);
    if (b->nranges > 1) { /* pack the selected ranges */
        if (!b->stage && !(b->stage = be->alloc(be, sizeof(float) * b->floats))) {
            gs->rc = upm_errf(&gs->err, UPM_ENOMEM, "no memory for a gradient bucket");
            return;
        }
        be->pack(be, b->stage, g, b->roff, b->rn, b->nranges);
        b->dev = b->stage;
    }
    b->queued = 1;
    if (gs->dev) { /* stream order is the order: no event */
        launch(gs, b);
        return;
    }
    be->record(be, b->ev);
    launch_ready(gs, 0);
}

int upm_gradsync_settle(upm_gradsync *gs, upm_err *err)
{
    if (!gs || !gs->dev)
        return 0;
    double t0 = upm_monotonic_s();
    int rc = upm_devcomm_wait(gs->dev, err);
    gs->comm_s += upm_monotonic_s() - t0;
    return rc;
}

int upm_gradsync_finish(upm_gradsync *gs, upm_gradsync_stats *st, upm_err *err)
{
    int W = upm_comm_world(gs->c);
    float scale = 1.0f / (float)W, *g = gs->m->g;
    upm_backend *be = gs->m->be;
    double wait = 0;
    if (st)
        memset(st, 0, sizeof *st);
    for (int k = gs->ngroups - 1; k >= 0 && !gs->rc; k--) /* a backward without the callback (--no-overlap) */
        if (gs->b[k].sel && !gs->b[k].queued)
            upm_gradsync_ready(gs, k - 1);
    launch_ready(gs, 1);
    for (int k = gs->ngroups - 1; k >= 0 && !gs->rc; k--) { /* launch order: head, blocks from the top, embeddings */
        bucket *b = &gs->b[k];
        if (!b->sel)
            continue;
        if (!b->done) {
            double t0 = upm_monotonic_s();
            gs->rc = upm_comm_wait(gs->c, b->req, &gs->err);
            wait += upm_monotonic_s() - t0;
            b->done = 1;
        }
        if (gs->rc)
            break;
        if (b->host && b->red == b->host)
            be->upload(be, b->dev, b->host, sizeof(float) * b->sel);
        if (b->nranges > 1)
            be->unpack_scale(be, g, b->stage, b->roff, b->rn, b->nranges, scale);
        else if (W > 1)
            be->scale(be, g + b->roff[0], scale, b->sel);
        if (st) {
            st->floats_reduced += (double)b->sel;
            st->buckets++;
        }
    }
    gs->comm_s += wait;
    if (st) {
        for (int k = 0; k < gs->ngroups; k++)
            st->floats_all += (double)gs->b[k].floats;
        st->wait_s = wait;
        st->comm_s = gs->comm_s;
        st->sync_s = gs->sync_s;
    }
    if (gs->rc) {
        *err = gs->err;
        return gs->rc;
    }
    return 0;
}
