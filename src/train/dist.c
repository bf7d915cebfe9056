/* bf_dist: MPI (and, through the backend, NCCL) behind dist.h.
 *
 * Not bucketed, not overlapped with the backward pass: the gradients are one
 * contiguous buffer (model.h) and are averaged by one all-reduce after the
 * backward. Overlap would need the backward to hand over finished layers one
 * bucket at a time, and pays only where the transport runs beside the
 * compute: on GPUs NCCL has its own SMs and links, but on the CPU a progress
 * thread competes for the cores that compute (2 ranks on 2 cores here). With
 * NCCL the one call is already asynchronous on the backend's stream. */
#include "dist.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"

#ifdef BF_HAVE_MPI
#include <mpi.h>
#endif

struct bf_dist {
  int rank, size, local_rank;
  int mpi; /* MPI_Init was called */
  bf_backend *be;
};

int bf_dist_rank(const bf_dist *d) { return d ? d->rank : 0; }
int bf_dist_size(const bf_dist *d) { return d ? d->size : 1; }

static long env_long(const char *name) {
  const char *v = getenv(name);
  if (!v || !*v) return -1;
  char *end;
  long x = strtol(v, &end, 10);
  return *end ? -1 : x;
}

/* A launcher that bootstraps MPI started this process. */
static int launched_by_mpi(void) {
  return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK") || getenv("PMI_SIZE");
}

#ifdef BF_HAVE_MPI
static int mpi_fail(int mrc, const char *what) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(mrc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", mrc);
  return bf_error(BF_EIO, "%s failed: %s", what, msg);
}
#define MPI_TRY(what, call)                   \
  do {                                        \
    int mrc_ = (call);                        \
    if (mrc_ != MPI_SUCCESS) return mpi_fail(mrc_, what); \
  } while (0)
#endif

int bf_dist_init(bf_dist **out) {
  *out = NULL;
  bf_dist *d = bf_calloc(1, sizeof *d, "dist");
  if (!d) return BF_ENOMEM;
  d->size = 1;
  long srun_tasks = env_long("SLURM_STEP_NUM_TASKS");
  if (!launched_by_mpi()) {
    if (srun_tasks > 1) {
      free(d);
      return bf_error(BF_EINVAL, "srun started %ld tasks without an MPI bootstrap, so each would train alone: "
                                 "launch with srun --mpi=pmix (or --mpi=pmi2), or with mpirun",
                      srun_tasks);
    }
    *out = d;
    return BF_OK;
  }
#ifdef BF_HAVE_MPI
  int provided = 0;
  /* Only the main thread calls MPI (the loader's threads never do). */
  int mrc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
  if (mrc != MPI_SUCCESS) {
    free(d);
    return mpi_fail(mrc, "MPI_Init_thread");
  }
  d->mpi = 1;
  /* Errors come back as codes (and become one message), not as an abort
   * inside MPI. */
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &d->size);
  MPI_Comm local;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local) == MPI_SUCCESS) {
    MPI_Comm_rank(local, &d->local_rank);
    MPI_Comm_free(&local);
  }
  *out = d;
  return BF_OK;
#else
  long n = env_long("OMPI_COMM_WORLD_SIZE");
  if (n < 0) n = env_long("PMI_SIZE");
  if (n < 0) n = srun_tasks;
  if (n > 1) {
    free(d);
    return bf_error(BF_EUNSUP, "a launcher started %ld ranks, but this bf-train was built without MPI "
                               "(install libopenmpi-dev and rebuild with -DBF_MPI=ON)",
                    n);
  }
  *out = d;
  return BF_OK;
#endif
}

void bf_dist_finalize(bf_dist *d) {
  if (!d) return;
#ifdef BF_HAVE_MPI
  if (d->mpi) MPI_Finalize();
#endif
  free(d);
}

void bf_dist_abort(bf_dist *d, int code) {
#ifdef BF_HAVE_MPI
  if (d && d->mpi && d->size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  (void)d;
  (void)code;
}

int bf_dist_place(bf_dist *d, const char *backend) {
  if (!d || d->size == 1 || !bf_backend_per_process_device(backend)) return BF_OK;
  /* The choice goes through the environment, so it works only while the
   * backend is not initialised: when the device list is not in the
   * environment, the placement query counts the devices (initialising the
   * backend), and a rank that then sees several cannot pick one any more.
   * Launchers that bind one device per task (srun --gpus-per-task=1) leave
   * one visible, and nothing changes. */
  bf_backend_placement pl;
  int rc = bf_backend_worker_placement(backend, &pl);
  if (rc) return rc;
  if (pl.n <= 1 || !pl.env) return BF_OK;
  if (!getenv(pl.env))
    return bf_error(BF_EINVAL, "backend %s: every rank sees %d devices; give each rank one (srun --gpus-per-task=1) "
                               "or list the node's devices in %s and each rank takes the one of its local rank",
                    backend, pl.n, pl.env);
  if (setenv(pl.env, pl.ids[d->local_rank % pl.n], 1) != 0) return bf_error(BF_EIO, "cannot set %s", pl.env);
  return BF_OK;
}

#ifdef BF_HAVE_MPI
/* The sums live where the backend computes: device memory through the
 * backend's own collective, host memory through MPI. */
static int bn_sync_hook(void *ctx, double *sums, size_t n) {
  bf_dist *d = ctx;
  if (d->be->allreduce) return d->be->allreduce(d->be, sums, n, 1, 0);
  if (n > INT_MAX) return bf_error(BF_EINVAL, "synchronised batch norm: %zu sums exceed MPI's int count", n);
  return bf_dist_sum_host(d, sums, (int)n);
}
#endif

int bf_dist_attach(bf_dist *d, bf_backend *be, int sync_bn) {
  if (!d || d->size == 1) return BF_OK; /* one rank: plain BN, nothing to reduce */
#ifdef BF_HAVE_MPI
  d->be = be;
  if (be->comm_init) {
    uint8_t id[512];
    if (be->comm_id_bytes > sizeof id) return bf_error(BF_EUNSUP, "backend %s: communicator id too large", be->name);
    if (d->rank == 0) BF_TRY(be->comm_id_create(be, id));
    MPI_TRY("MPI_Bcast (communicator id)", MPI_Bcast(id, (int)be->comm_id_bytes, MPI_BYTE, 0, MPI_COMM_WORLD));
    BF_TRY(be->comm_init(be, id, d->size, d->rank));
  } else if (!be->allreduce && bf_backend_per_process_device(be->name)) { /* device memory, no collectives */
    return bf_error(BF_EUNSUP, "backend %s has no collectives in this build (NCCL not found at build time)",
                    be->name);
  }
  if (sync_bn) {
    be->bn_sync = bn_sync_hook;
    be->bn_sync_ctx = d;
    be->bn_sync_ranks = d->size;
  }
  return BF_OK;
#else
  (void)be;
  (void)sync_bn;
  return bf_error(BF_EUNSUP, "built without MPI");
#endif
}

int bf_dist_mean(bf_dist *d, float *buf, size_t n) {
  if (!d || d->size == 1) return BF_OK;
#ifdef BF_HAVE_MPI
  if (d->be->allreduce) return d->be->allreduce(d->be, buf, n, 0, 1);
  for (size_t off = 0; off < n;) { /* MPI counts are ints */
    int k = n - off > (size_t)(1 << 30) ? 1 << 30 : (int)(n - off);
    MPI_TRY("MPI_Allreduce (gradients)", MPI_Allreduce(MPI_IN_PLACE, buf + off, k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
    off += (size_t)k;
  }
  const float inv = 1.0f / (float)d->size;
  for (size_t i = 0; i < n; i++) buf[i] *= inv;
  return BF_OK;
#else
  (void)buf;
  (void)n;
  return bf_error(BF_EUNSUP, "built without MPI");
#endif
}

int bf_dist_sum_host(bf_dist *d, double *buf, int n) {
  if (!d || d->size == 1) return BF_OK;
#ifdef BF_HAVE_MPI
  MPI_TRY("MPI_Allreduce", MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
  return BF_OK;
#else
  (void)buf;
  (void)n;
  return bf_error(BF_EUNSUP, "built without MPI");
#endif
}

int bf_dist_gather_host(bf_dist *d, const void *send, size_t bytes, void *recv) {
  if (!d || d->size == 1) {
    memcpy(recv, send, bytes);
    return BF_OK;
  }
#ifdef BF_HAVE_MPI
  MPI_TRY("MPI_Gather", MPI_Gather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD));
  return BF_OK;
#else
  return bf_error(BF_EUNSUP, "built without MPI");
#endif
}

int bf_dist_agree(bf_dist *d, int rc, int *show) {
  *show = 1;
  if (!d || d->size == 1) return rc;
#ifdef BF_HAVE_MPI
  /* [0]: rank 0 failed, [1]: some rank failed */
  int mine[2] = {d->rank == 0 && rc != 0, rc != 0}, all[2] = {0, 0};
  MPI_TRY("MPI_Allreduce (agreement)", MPI_Allreduce(mine, all, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
  if (!all[1]) return BF_OK;
  *show = d->rank == 0 || !all[0];
  if (rc) return rc;
  *show = d->rank == 0;
  return bf_error(BF_EINVAL, "another rank failed (its message is above)");
#else
  return rc;
#endif
}
