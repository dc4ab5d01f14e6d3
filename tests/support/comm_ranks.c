/* upmoe-comm-ranks: checks every collective of the communicator (trainer/comm.h) on known values, in one
 * process (the local backend) or as each rank of `mpirun -np N` (the MPI module), and can stall one rank
 * so that tests/trainer/test_comm.py sees the others give up with a message naming it.
 *
 *   upmoe-comm-ranks [--timeout S] [--patience S] [--stall RANK:stop|sleep|work]
 *   upmoe-comm-ranks --devcomm    starts the device communicator (devcomm.h) over this one and prints
 *                                 "rank R: devcomm NAME ok" or the error it returned (exit 1); on a backend
 *                                 with a device stream ($UPMOE_BACKEND=cuda) it then sums 100,003 floats of
 *                                 device memory (rank r holds r + 1 + i mod 7) and checks every element
 *
 * Each rank prints "rank R of W (local L of LW) via NAME: ok, N checks" and exits 0, or names the first
 * check that failed and exits 1. With --stall stop or sleep, the other ranks print the communicator's error
 * and exit 1 (closing the communicator as failed aborts the job, as the trainer does); with --stall work the
 * rank works (counting progress, common/progress.h) for 3 x the patience before it reaches the barrier,
 * which must then complete. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "comm.h"
#include "backend.h"
#include "devcomm.h"
#include "progress.h"

static int checks, rank_ = -1;
static upm_devcomm *d_;

#define CHECK(cond, ...)                                                                    \
    do {                                                                                    \
        checks++;                                                                           \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "rank %d: check failed at %s:%d: ", rank_, __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                                   \
            fputc('\n', stderr);                                                            \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

/* A collective that must succeed (its message is in `err`). */
#define OK(call)                                                  \
    do {                                                          \
        int rc_ = (call);                                         \
        CHECK(rc_ == 0, "%s failed: %s", #call, err.msg);         \
    } while (0)

static void usage(const char *msg)
{
    fprintf(stderr, "upmoe-comm-ranks: %s\nusage: upmoe-comm-ranks [--timeout S] [--patience S] "
                    "[--stall RANK:stop|sleep|work]\n", msg);
    exit(2);
}

static double number(const char *s, const char *what)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v > 0))
        usage(what);
    return v;
}

int main(int argc, char **argv)
{
    upm_comm_opts o;
    upm_comm_opts_default(&o);
    double patience = 0;
    int stall_rank = -1, devcomm = 0;
    const char *stall_how = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
            o.timeout_s = number(argv[++i], "--timeout needs seconds > 0");
        else if (!strcmp(argv[i], "--patience") && i + 1 < argc)
            patience = number(argv[++i], "--patience needs seconds > 0");
        else if (!strcmp(argv[i], "--stall") && i + 1 < argc) {
            char *colon;
            stall_rank = (int)strtol(argv[++i], &colon, 10);
            stall_how = *colon == ':' ? colon + 1 : "";
            if (stall_rank < 0 || (strcmp(stall_how, "stop") && strcmp(stall_how, "sleep") && strcmp(stall_how, "work")))
                usage("--stall needs RANK:stop, RANK:sleep or RANK:work");
        } else if (!strcmp(argv[i], "--devcomm"))
            devcomm = 1;
        else
            usage("unknown argument");
    }

    upm_err err = {0};
    upm_comm *c;
    if (upm_comm_open(&o, &c, &err)) {
        fprintf(stderr, "upmoe-comm-ranks: %s\n", err.msg);
        return 1;
    }
    if (patience > 0)
        upm_comm_set_patience(c, patience);
    if (devcomm) {
        upm_backend *be = NULL;
        void *stream = NULL;
        if (getenv("UPMOE_BACKEND") && upm_backend_open(NULL, NULL, &be, &err) == 0)
            stream = be->native_stream(be);
        int rc = upm_devcomm_open(c, stream ? stream : (void *)&o, &d_, &err); /* else a stand-in stream */
        if (!rc && stream) { /* a real sum over device memory */
            enum { N = 100003 };
            int R = upm_comm_rank(c), Wd = upm_comm_world(c);
            float *h = malloc(sizeof(float) * N), *dev = be->alloc(be, sizeof(float) * N);
            CHECK(h && dev, "no memory");
            for (int i = 0; i < N; i++)
                h[i] = (float)(R + 1 + i % 7);
            be->upload(be, dev, h, sizeof(float) * N);
            rc = upm_devcomm_allreduce_sum(d_, dev, N, &err);
            if (!rc)
                rc = upm_devcomm_wait(d_, &err);
            if (!rc) {
                be->download(be, h, dev, sizeof(float) * N);
                for (int i = 0; i < N; i++)
                    CHECK(h[i] == (float)(Wd * (Wd + 1) / 2 + Wd * (i % 7)), "device sum: element %d is %g", i,
                          (double)h[i]);
                checks += N;
            }
            be->free(be, dev);
            free(h);
        }
        if (rc)
            printf("rank %d: error: %s\n", upm_comm_rank(c), err.msg);
        else
            printf("rank %d: devcomm %s ok%s\n", upm_comm_rank(c), upm_devcomm_name(d_),
                   stream ? ", device sums checked" : "");
        fflush(stdout);
        upm_devcomm_close(d_, rc != 0);
        upm_backend_free(be);
        upm_comm_close(c, 0);
        return rc ? 1 : 0;
    }
    int r = upm_comm_rank(c), W = upm_comm_world(c), lr = upm_comm_local_rank(c), lw = upm_comm_local_world(c);
    rank_ = r;
    if (stall_rank >= W)
        usage("--stall names a rank beyond the world");
    if (stall_how && !strcmp(stall_how, "work") && !(patience > 0))
        usage("--stall RANK:work needs --patience");
    CHECK(W >= 1 && r >= 0 && r < W, "rank %d of %d", r, W);
    CHECK(lw >= 1 && lw <= W && lr >= 0 && lr < lw, "local rank %d of %d in a world of %d", lr, lw, W);

    /* all-gather: every rank's (rank, local rank, local world), in rank order */
    int mine[3] = {r, lr, lw}, *all = malloc(sizeof mine * (size_t)W);
    CHECK(all != NULL, "no memory");
    OK(upm_comm_allgather(c, mine, sizeof mine, all, &err));
    for (int p = 0; p < W; p++)
        CHECK(all[3 * p] == p && all[3 * p + 2] == lw, "all-gather: slot %d holds rank %d (local world %d)", p,
              all[3 * p], all[3 * p + 2]);
    free(all);

    /* all-reduce sum and mean of an odd-sized buffer, values exact in float32: x = (r + 1)(i % 1000 + 1) */
    size_t n = (1u << 20) + 3;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    CHECK(x && y, "no memory");
    for (size_t i = 0; i < n; i++)
        x[i] = y[i] = (float)(r + 1) * (float)(i % 1000 + 1);
    OK(upm_comm_allreduce_sum(c, x, n, &err));
    OK(upm_comm_allreduce_mean(c, y, n, &err));
    float tri = (float)W * (float)(W + 1) / 2;
    for (size_t i = 0; i < n; i++) {
        float want = tri * (float)(i % 1000 + 1), mean = want / (float)W;
        CHECK(x[i] == want, "all-reduce sum: element %zu is %g, want %g", i, x[i], want);
        CHECK(y[i] >= mean * (1 - 1e-6f) && y[i] <= mean * (1 + 1e-6f), "all-reduce mean: element %zu is %g, want %g",
              i, y[i], mean);
    }

    /* three non-blocking all-reduces in flight at once, driven by test, finished by wait */
    enum { NB = 3 };
    size_t len[NB] = {1, 4097, 65536};
    float *b[NB];
    upm_comm_req req[NB];
    for (int k = 0; k < NB; k++) {
        b[k] = malloc(len[k] * sizeof(float));
        CHECK(b[k] != NULL, "no memory");
        for (size_t i = 0; i < len[k]; i++)
            b[k][i] = (float)(r * NB + k);
        OK(upm_comm_iallreduce_sum(c, b[k], len[k], &req[k], &err));
    }
    int finished = 0;
    OK(upm_comm_test(c, req[NB - 1], &finished, &err));
    for (int k = finished ? NB - 2 : NB - 1; k >= 0; k--)
        OK(upm_comm_wait(c, req[k], &err));
    for (int k = 0; k < NB; k++) {
        float want = (float)(NB * W * (W - 1) / 2 + W * k);
        for (size_t i = 0; i < len[k]; i++)
            CHECK(b[k][i] == want, "non-blocking all-reduce %d: element %zu is %g, want %g", k, i, b[k][i], want);
        free(b[k]);
    }
    OK(upm_comm_allreduce_sum(c, x, 0, &err)); /* nothing to reduce is fine */

    /* max of 64-bit integers beyond float range */
    int64_t v[3] = {r, -(int64_t)r, (int64_t)r * 1000000000000LL + 7};
    OK(upm_comm_allreduce_max_i64(c, v, 3, &err));
    CHECK(v[0] == W - 1 && v[1] == 0 && v[2] == (int64_t)(W - 1) * 1000000000000LL + 7,
          "max: %lld %lld %lld", (long long)v[0], (long long)v[1], (long long)v[2]);

    /* broadcast from the last rank */
    char msg[64] = {0};
    if (r == W - 1)
        snprintf(msg, sizeof msg, "from rank %d of %d", r, W);
    OK(upm_comm_broadcast(c, msg, sizeof msg, W - 1, &err));
    char want_msg[64];
    snprintf(want_msg, sizeof want_msg, "from rank %d of %d", W - 1, W);
    CHECK(!strcmp(msg, want_msg), "broadcast: got '%s'", msg);
    upm_err bad = {0};
    CHECK(upm_comm_broadcast(c, msg, sizeof msg, W, &bad) == UPM_EINVAL && strstr(bad.msg, "broadcast from rank"),
          "broadcast from a rank that does not exist: '%s'", bad.msg);

    /* all-gather of different sizes: rank p sends p bytes of 'a' + p (rank 0 sends none) */
    char *g, *sent = malloc((size_t)r + 1);
    size_t *off;
    CHECK(sent != NULL, "no memory");
    memset(sent, 'a' + r % 26, (size_t)r);
    OK(upm_comm_allgatherv(c, sent, (size_t)r, &g, &off, &err));
    for (int p = 0; p < W; p++) {
        CHECK(off[p + 1] - off[p] == (size_t)p, "all-gather (sizes): rank %d sent %zu bytes", p, off[p + 1] - off[p]);
        for (size_t i = off[p]; i < off[p + 1]; i++)
            CHECK(g[i] == 'a' + p % 26, "all-gather (sizes): byte %zu of rank %d", i - off[p], p);
    }
    free(g), free(off), free(sent);
    OK(upm_comm_barrier(c, &err)); /* the refused broadcast above left the communicator usable */

    if (stall_rank >= 0) {
        upm_comm_set_phase(c, "the stall check");
        if (r == stall_rank) {
            printf("rank %d: stalling (%s)\n", r, stall_how);
            fflush(stdout);
            if (!strcmp(stall_how, "stop"))
                raise(SIGSTOP); /* silent: its heartbeats stop too */
            for (double t0 = upm_monotonic_s(); !strcmp(stall_how, "work");) { /* slow, but computing */
                struct timespec ms = {0, 10000000};
                nanosleep(&ms, NULL);
                upm_progress_tick();
                if (upm_monotonic_s() - t0 > 3 * patience)
                    break;
            }
            while (strcmp(stall_how, "work")) /* alive: heartbeats go on, but it never reaches the barrier */
                sleep(1);
        }
        int rc = upm_comm_barrier(c, &err);
        if (rc) {
            fprintf(stderr, "rank %d: %s\n", r, err.msg);
            fflush(stderr);
            upm_comm_close(c, 1);
            return 1;
        }
        CHECK(!strcmp(stall_how, "work"), "the barrier completed although rank %d stalled", stall_rank);
    }
    printf("rank %d of %d (local %d of %d) via %s: ok, %d checks\n", r, W, lr, lw, upm_comm_name(c), checks);
    fflush(stdout);
    free(x), free(y);
    upm_comm_close(c, 0);
    return 0;
}
