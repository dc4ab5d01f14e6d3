/* The MPI communicator module (libupmoe-comm-mpi.so, see comm.h and comm_module.h).
 *
 * Every collective is started non-blocking and waited for in a polling loop, so a rank that died or
 * hangs cannot block the others forever. Liveness and progress are told apart:
 *   - a heartbeat thread sends this rank's collective number (all ranks call the collectives in the same
 *     order and number them alike) to every peer every `ping` seconds, on a private duplicate of the world
 *     communicator, and records what it hears. A peer silent for `timeout_s` is dead or stopped;
 *   - the heartbeat also carries the rank's work count (common/progress.h: one per encoder block pass). A
 *     peer that is alive but has not reached the collective we wait in is slow (a longer task, a full-
 *     vocabulary step) or stuck in its own code: while its work count moves it is slow; once neither its
 *     collective number nor its work count has moved for `patience` seconds (the trainer sets this from
 *     the step times it has seen) it is stuck, and we stop the job.
 * The messages name the ranks. Heartbeats are 8 bytes, eager, and need no reply. Without
 * MPI_THREAD_MULTIPLE there is no thread: ranks ping only while they wait, and any wait longer than
 * timeout_s counts as a failure. */
#include <mpi.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "comm_module.h"

#define MAX_PENDING 1024
#define HB_TAG 7
#define STOP_GRACE_S 5.0

typedef struct mpi_impl {
    MPI_Comm comm, hb; /* collectives; heartbeats */
    int rank, world;
    double timeout_s, ping;
    const double *patience;
    int64_t (*work)(void);
    volatile sig_atomic_t *stop;
    const char *phase;
    double *wait_s;
    /* heartbeat state, under lk */
    pthread_mutex_t lk;
    int64_t seq;                     /* collectives entered by this rank */
    int64_t *last, *done;            /* per peer: last collective number and work count heard */
    int64_t *rbuf, *sbuf;            /* per peer: receive and send buffers, {collective number, work count} */
    double *heard;                   /* per peer: when we last heard from it */
    double *moved;                   /* per peer: when its collective number or work count last changed */
    MPI_Request *rreq, *sreq;        /* per peer */
    pthread_t thread;
    int threaded, quit;
    MPI_Request pending[MAX_PENDING]; /* started collectives, by request number */
    int stop_noted;
} mpi_impl;

__attribute__((format(printf, 3, 4))) static int fail(upm_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int mpi_fail(mpi_impl *m, upm_err *err, int mrc, const char *what)
{
    char s[MPI_MAX_ERROR_STRING];
    int n = 0;
    MPI_Error_string(mrc, s, &n);
    return fail(err, UPM_ECOMM, "%s failed in %s: %s", what, m->phase, s);
}

static void nap(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Records every heartbeat that arrived and re-posts the receives (lk held). */
static void drain(mpi_impl *m)
{
    double t = upm_monotonic_s();
    for (int p = 0; p < m->world; p++) {
        if (p == m->rank)
            continue;
        for (;;) {
            int flag = 0;
            if (MPI_Test(&m->rreq[p], &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || !flag)
                break;
            const int64_t *r = &m->rbuf[2 * p];
            if (r[0] > m->last[p] || r[1] != m->done[p])
                m->last[p] = r[0] > m->last[p] ? r[0] : m->last[p], m->done[p] = r[1], m->moved[p] = t;
            m->heard[p] = t;
            MPI_Irecv(&m->rbuf[2 * p], 2, MPI_INT64_T, p, HB_TAG, m->hb, &m->rreq[p]);
        }
    }
}

/* Tells every peer our collective number and work count (lk held). A peer still holding our previous message (its
 * receive not matched yet) is skipped: it only ever needs the latest. */
static void announce(mpi_impl *m)
{
    for (int p = 0; p < m->world; p++) {
        if (p == m->rank)
            continue;
        int flag = 1;
        if (m->sreq[p] != MPI_REQUEST_NULL)
            MPI_Test(&m->sreq[p], &flag, MPI_STATUS_IGNORE);
        if (!flag)
            continue;
        m->sbuf[2 * p] = m->seq, m->sbuf[2 * p + 1] = m->work ? m->work() : 0;
        MPI_Isend(&m->sbuf[2 * p], 2, MPI_INT64_T, p, HB_TAG, m->hb, &m->sreq[p]);
    }
    drain(m);
}

static void *heartbeat(void *arg)
{
    mpi_impl *m = arg;
    for (;;) {
        pthread_mutex_lock(&m->lk);
        int quit = m->quit;
        if (!quit)
            announce(m);
        pthread_mutex_unlock(&m->lk);
        if (quit)
            return NULL;
        nap(m->ping);
    }
}

/* Entering collective number ++seq. */
static void arrive(mpi_impl *m)
{
    pthread_mutex_lock(&m->lk);
    m->seq++;
    announce(m);
    pthread_mutex_unlock(&m->lk);
}

enum { SILENT = 1, BEHIND = 2 };

/* The peers in trouble while we wait in our collective since t0, as "1 (...), 3 (...)" into buf: silent
 * ones (not heard from for timeout_s: dead or stopped), or with which = BEHIND the live ones that have
 * not reached it and have shown no progress (collective number or work count) for `stale` seconds, nor
 * since t0. Returns how many. */
static int trouble(mpi_impl *m, int which, double t0, double stale, char *buf, size_t cap)
{
    pthread_mutex_lock(&m->lk);
    drain(m);
    double t = upm_monotonic_s();
    int n = 0;
    size_t len = 0;
    buf[0] = 0;
    for (int p = 0; p < m->world && len < cap; p++) {
        if (p == m->rank)
            continue;
        int64_t behind = m->seq - m->last[p];
        double quiet = t - m->heard[p];
        if ((which & SILENT) && quiet > m->timeout_s)
            len += (size_t)snprintf(buf + len, cap - len, "%s%d (silent for %.0f s%s)", n++ ? ", " : "", p, quiet,
                                    behind > 0 ? ", never reached this collective" : "");
        else if ((which & BEHIND) && behind > 0 && (!m->threaded || quiet < 3 * m->ping) &&
                 t - (m->moved[p] > t0 ? m->moved[p] : t0) >= stale)
            /* (threaded: a peer not heard from for a few pings is left to the silence rule) */
            len += (size_t)snprintf(buf + len, cap - len, "%s%d (%lld collective%s behind for %.0f s)",
                                    n++ ? ", " : "", p, (long long)behind, behind == 1 ? "" : "s",
                                    t - (m->moved[p] > t0 ? m->moved[p] : t0));
    }
    pthread_mutex_unlock(&m->lk);
    return n;
}

static int wait_req(mpi_impl *m, MPI_Request *req, const char *what, upm_err *err)
{
    double t0 = upm_monotonic_s(), stop_seen = 0, grace_end = 0, next_check = t0 + m->ping;
    long spins = 0;
    for (;;) {
        int flag = 0, mrc = MPI_Test(req, &flag, MPI_STATUS_IGNORE);
        if (mrc != MPI_SUCCESS)
            return mpi_fail(m, err, mrc, what);
        if (flag)
            break;
        double t = upm_monotonic_s();
        char who[512];
        if (m->stop && *m->stop && !stop_seen) {
            /* Interrupted (e.g. mpirun's SIGTERM after a rank died, shortly followed by SIGKILL): say now
             * whom we are waiting for; keep waiting a little in case everyone was interrupted. */
            stop_seen = t;
            if (trouble(m, SILENT | BEHIND, t0, 0, who, sizeof who)) {
                grace_end = t + STOP_GRACE_S;
                if (!m->stop_noted)
                    fprintf(stderr, "upmoe: rank %d: interrupted while waiting in %s (%s) for rank %s\n", m->rank,
                            m->phase, what, who);
                fflush(stderr);
                m->stop_noted = 1;
            }
        }
        if (t > next_check || (grace_end > 0 && t > grace_end)) {
            next_check = t + m->ping;
            if (!m->threaded) { /* no heartbeat thread: we are alive and waiting, say so */
                pthread_mutex_lock(&m->lk);
                announce(m);
                pthread_mutex_unlock(&m->lk);
            }
            double limit = m->threaded ? (*m->patience > m->timeout_s ? *m->patience : m->timeout_s) : m->timeout_s;
            const char *why = NULL;
            int n = 0;
            if (m->threaded && (n = trouble(m, SILENT, t0, 0, who, sizeof who)))
                why = "which died or was stopped";
            else if (t - t0 > limit &&
                     (n = trouble(m, m->threaded ? BEHIND : SILENT | BEHIND, t0, limit, who, sizeof who)))
                why = m->threaded ? "which is alive but made no progress (hangs?)" : "which died or hangs";
            else if (grace_end > 0 && t > grace_end && (n = trouble(m, SILENT | BEHIND, t0, 0, who, sizeof who)))
                why = "and was interrupted";
            if (n) {
                *m->wait_s += t - t0;
                return fail(err, UPM_ECOMM, "waited %.0f s in %s (%s) for rank %s, %s; stopping (the run resumes "
                            "from its last checkpoint)", t - t0, m->phase, what, who, why);
            }
            /* Everyone arrived and sounds alive: allow one more timeout, in which a rank that stopped inside
             * the collective falls silent, before blaming the collective itself. (A rank still working its
             * way to the collective is waited for.) */
            if (t - t0 > limit + (m->threaded ? m->timeout_s : 0) && !trouble(m, BEHIND, t0, 0, who, sizeof who))
                return fail(err, UPM_ECOMM, "%s in %s did not complete within %.0f s although every rank reached "
                            "it and is alive (the network?); stopping (the run resumes from its last checkpoint)",
                            what, m->phase, t - t0);
        }
        if (spins++ > 2000) /* long waits: yield the core to a co-located rank */
            nap(50e-6);
    }
    *m->wait_s += upm_monotonic_s() - t0;
    return 0;
}

static int too_big(size_t n, upm_err *err)
{
    return n > (size_t)INT32_MAX ? fail(err, UPM_EINVAL, "a collective of %zu elements (at most %d)", n, INT32_MAX)
                                  : 0;
}

static int iallreduce_sum(void *impl, float *buf, size_t n, int *req, upm_err *err)
{
    mpi_impl *m = impl;
    if (too_big(n, err))
        return UPM_EINVAL;
    int slot = 0;
    while (slot < MAX_PENDING && m->pending[slot] != MPI_REQUEST_NULL)
        slot++;
    if (slot == MAX_PENDING)
        return fail(err, UPM_EINVAL, "more than %d collectives pending", MAX_PENDING);
    arrive(m);
    int mrc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, m->comm, &m->pending[slot]);
    if (mrc != MPI_SUCCESS)
        return mpi_fail(m, err, mrc, "all-reduce");
    *req = slot;
    return 0;
}

static int test_op(void *impl, int req, int *done, upm_err *err)
{
    mpi_impl *m = impl;
    if (req < 0 || req >= MAX_PENDING || m->pending[req] == MPI_REQUEST_NULL)
        return fail(err, UPM_EINVAL, "no pending collective %d", req);
    int mrc = MPI_Test(&m->pending[req], done, MPI_STATUS_IGNORE);
    return mrc == MPI_SUCCESS ? 0 : mpi_fail(m, err, mrc, "all-reduce");
}

static int wait_op(void *impl, int req, upm_err *err)
{
    mpi_impl *m = impl;
    if (req < 0 || req >= MAX_PENDING || m->pending[req] == MPI_REQUEST_NULL)
        return fail(err, UPM_EINVAL, "no pending collective %d", req);
    return wait_req(m, &m->pending[req], "all-reduce", err);
}

static int allreduce_max_i64(void *impl, int64_t *v, size_t n, upm_err *err)
{
    mpi_impl *m = impl;
    MPI_Request r;
    if (too_big(n, err))
        return UPM_EINVAL;
    arrive(m);
    int mrc = MPI_Iallreduce(MPI_IN_PLACE, v, (int)n, MPI_INT64_T, MPI_MAX, m->comm, &r);
    return mrc != MPI_SUCCESS ? mpi_fail(m, err, mrc, "all-reduce (max)") : wait_req(m, &r, "all-reduce (max)", err);
}

static int broadcast(void *impl, void *buf, size_t bytes, int root, upm_err *err)
{
    mpi_impl *m = impl;
    MPI_Request r;
    if (too_big(bytes, err))
        return UPM_EINVAL;
    arrive(m);
    int mrc = MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, m->comm, &r);
    return mrc != MPI_SUCCESS ? mpi_fail(m, err, mrc, "broadcast") : wait_req(m, &r, "broadcast", err);
}

static int barrier(void *impl, upm_err *err)
{
    mpi_impl *m = impl;
    MPI_Request r;
    arrive(m);
    int mrc = MPI_Ibarrier(m->comm, &r);
    return mrc != MPI_SUCCESS ? mpi_fail(m, err, mrc, "barrier") : wait_req(m, &r, "barrier", err);
}

static int allgather(void *impl, const void *mine, size_t bytes, void *all, upm_err *err)
{
    mpi_impl *m = impl;
    MPI_Request r;
    if (too_big(bytes, err))
        return UPM_EINVAL;
    arrive(m);
    int mrc = MPI_Iallgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, m->comm, &r);
    return mrc != MPI_SUCCESS ? mpi_fail(m, err, mrc, "all-gather") : wait_req(m, &r, "all-gather", err);
}

static int allgatherv(void *impl, const void *mine, size_t bytes, void *all, const size_t *counts,
                      const size_t *displs, upm_err *err)
{
    mpi_impl *m = impl;
    if (too_big(displs[m->world - 1] + counts[m->world - 1], err))
        return UPM_EINVAL;
    int *c = malloc(sizeof(int) * 2 * (size_t)m->world);
    if (!c)
        return fail(err, UPM_ENOMEM, "no memory");
    for (int r = 0; r < m->world; r++)
        c[r] = (int)counts[r], c[m->world + r] = (int)displs[r];
    MPI_Request r;
    arrive(m);
    int mrc = MPI_Iallgatherv(mine, (int)bytes, MPI_BYTE, all, c, c + m->world, MPI_BYTE, m->comm, &r);
    int rc = mrc != MPI_SUCCESS ? mpi_fail(m, err, mrc, "all-gather") : wait_req(m, &r, "all-gather", err);
    free(c);
    return rc;
}

static void close_impl(void *impl, int abort_job)
{
    mpi_impl *m = impl;
    if (abort_job) /* a collective failed: the job cannot go on; mpirun stops every rank */
        MPI_Abort(MPI_COMM_WORLD, 1);
    if (m->threaded) {
        pthread_mutex_lock(&m->lk);
        m->quit = 1;
        pthread_mutex_unlock(&m->lk);
        pthread_join(m->thread, NULL);
    }
    for (int p = 0; p < m->world; p++) {
        if (p == m->rank)
            continue;
        MPI_Cancel(&m->rreq[p]);
        MPI_Wait(&m->rreq[p], MPI_STATUS_IGNORE);
        if (m->sreq[p] != MPI_REQUEST_NULL) {
            int flag = 0;
            for (int i = 0; i < 1000 && !flag; i++) { /* eager sends complete at once; never wait long */
                MPI_Test(&m->sreq[p], &flag, MPI_STATUS_IGNORE);
                if (!flag)
                    nap(1e-3);
            }
            if (!flag)
                MPI_Request_free(&m->sreq[p]);
        }
    }
    MPI_Comm_free(&m->hb);
    MPI_Comm_free(&m->comm);
    pthread_mutex_destroy(&m->lk);
    free(m->heard);
    free(m->moved);
    free(m->last);
    free(m->done);
    free(m->rbuf);
    free(m->sbuf);
    free(m->rreq);
    free(m->sreq);
    free(m);
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin)
        MPI_Finalize();
}

static const upm_comm_ops ops = {iallreduce_sum, test_op, wait_op, allreduce_max_i64, broadcast, barrier, allgather,
                                 allgatherv, close_impl};

int upm_comm_module_init(upm_comm_module_args *mi, upm_err *err);

int upm_comm_module_init(upm_comm_module_args *mi, upm_err *err)
{
    if (mi->abi != UPM_COMM_MODULE_ABI)
        return fail(err, UPM_EINVAL, "communicator module ABI %d, program ABI %d: rebuild", UPM_COMM_MODULE_ABI,
                    mi->abi);
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    /* THREAD_MULTIPLE for the heartbeat thread; without it (an MPI built without) there is none. */
    if (!inited && MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
        return fail(err, UPM_ECOMM, "MPI_Init_thread failed");
    if (inited)
        MPI_Query_thread(&provided);
    mpi_impl *m = calloc(1, sizeof *m);
    if (!m)
        return fail(err, UPM_ENOMEM, "no memory");
    MPI_Comm_dup(MPI_COMM_WORLD, &m->comm);
    MPI_Comm_dup(MPI_COMM_WORLD, &m->hb);
    MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(m->hb, MPI_ERRORS_RETURN);
    MPI_Comm_rank(m->comm, &m->rank);
    MPI_Comm_size(m->comm, &m->world);
    MPI_Comm node;
    int local = 0, local_world = 1;
    if (MPI_Comm_split_type(m->comm, MPI_COMM_TYPE_SHARED, m->rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_rank(node, &local);
        MPI_Comm_size(node, &local_world);
        MPI_Comm_free(&node);
    }
    m->timeout_s = mi->timeout_s, m->stop = mi->stop, m->phase = mi->phase, m->wait_s = mi->wait_s;
    m->patience = mi->patience, m->work = mi->work;
    m->ping = m->timeout_s / 8 < 1 ? m->timeout_s / 8 : 1;
    size_t W = (size_t)m->world;
    m->heard = calloc(W, sizeof *m->heard), m->moved = calloc(W, sizeof *m->moved);
    m->last = calloc(W, sizeof *m->last), m->done = calloc(W, sizeof *m->done);
    m->rbuf = calloc(2 * W, sizeof *m->rbuf), m->sbuf = calloc(2 * W, sizeof *m->sbuf);
    m->rreq = malloc(W * sizeof *m->rreq), m->sreq = malloc(W * sizeof *m->sreq);
    if (!m->heard || !m->moved || !m->last || !m->done || !m->rbuf || !m->sbuf || !m->rreq || !m->sreq) {
        free(m->heard), free(m->moved), free(m->last), free(m->done), free(m->rbuf), free(m->sbuf);
        free(m->rreq), free(m->sreq), free(m);
        return fail(err, UPM_ENOMEM, "no memory");
    }
    for (int i = 0; i < MAX_PENDING; i++)
        m->pending[i] = MPI_REQUEST_NULL;
    for (int p = 0; p < m->world; p++) {
        m->sreq[p] = m->rreq[p] = MPI_REQUEST_NULL;
        m->heard[p] = m->moved[p] = upm_monotonic_s();
        if (p != m->rank)
            MPI_Irecv(&m->rbuf[2 * p], 2, MPI_INT64_T, p, HB_TAG, m->hb, &m->rreq[p]);
    }
    pthread_mutex_init(&m->lk, NULL);
    m->threaded = provided >= MPI_THREAD_MULTIPLE && m->world > 1 &&
                  pthread_create(&m->thread, NULL, heartbeat, m) == 0;
    mi->rank = m->rank, mi->world = m->world, mi->local_rank = local, mi->local_world = local_world;
    mi->ops = &ops, mi->impl = m;
    return 0;
}
