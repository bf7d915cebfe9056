/* Data-parallel training over processes: the one interface between the
 * trainer and the transport (docs/scale-out.md).
 *
 * N processes (ranks, started by mpirun or srun) train one model: each takes
 * its shard of every global batch, and the gradients are averaged before the
 * SGD step, so every rank holds the same parameters. The transport follows
 * the backend: a backend with collectives of its own (cuda: NCCL on its
 * stream, backend.h) uses them, its communicator bootstrapped over MPI;
 * otherwise (cpu) MPI works on the buffers directly. The trainer never
 * branches on either.
 *
 * Without MPI in the build, or in a process no launcher started, the dist is
 * one rank and every call below is a no-op: single-process training runs
 * exactly the code it ran before. */
#ifndef BF_TRAIN_DIST_H
#define BF_TRAIN_DIST_H

#include <stddef.h>

#include "backend.h"

typedef struct bf_dist bf_dist;

/* Joins the job (MPI_Init) when a launcher started this process (mpirun,
 * srun --mpi=pmix|pmi2), else makes a one-rank dist. Errors: a launcher
 * started several ranks but this build has no MPI, or srun started several
 * tasks without an MPI bootstrap. */
int bf_dist_init(bf_dist **out);
/* MPI_Finalize (a clean exit of every rank). NULL is fine. */
void bf_dist_finalize(bf_dist *d);
/* Ends every rank at once (an error on one rank in the middle of training,
 * where the others would wait for it forever). */
void bf_dist_abort(bf_dist *d, int code);

/* NULL counts as the one-rank dist. */
int bf_dist_rank(const bf_dist *d);
int bf_dist_size(const bf_dist *d);

/* Before the backend is created: a backend with one device per process
 * (bf_backend_worker_placement) gets the local rank's device when several are
 * visible. */
int bf_dist_place(bf_dist *d, const char *backend);
/* Prepares the collectives on be's memory (NCCL communicator on a device
 * backend) and, with sync_bn, installs the synchronised batch-norm hook
 * (backend.h bn_sync). d must outlive be's use of the hook. */
int bf_dist_attach(bf_dist *d, bf_backend *be, int sync_bn);

/* In place: the mean over the ranks of n floats of the attached backend's
 * memory (the gradient buffer). */
int bf_dist_mean(bf_dist *d, float *buf, size_t n);
/* In place: sums of n host doubles over the ranks. */
int bf_dist_sum_host(bf_dist *d, double *buf, int n);
/* Every rank sends `bytes` bytes; rank 0 receives size * bytes in rank order
 * (recv is only written on rank 0). */
int bf_dist_gather_host(bf_dist *d, const void *send, size_t bytes, void *recv);

/* Agreement after a step every rank runs (setup): returns BF_OK when every
 * rank's rc is 0. Otherwise an error on every rank: this rank's own rc, or
 * BF_EINVAL "another rank failed". *show is 1 when this rank should print
 * its message: rank 0 always; another rank only when rank 0 did not fail
 * (the same message would otherwise print once per rank). */
int bf_dist_agree(bf_dist *d, int rc, int *show);

#endif
