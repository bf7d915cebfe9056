/* Collectives of data-parallel training on the CUDA backend (backend.h):
 * NCCL on the context's stream, so an all-reduce is ordered after the
 * backward that produced the gradients and before the SGD step that reads
 * them, with no host synchronisation. The communicator is bootstrapped by the
 * caller (src/train/dist.c broadcasts rank 0's ncclUniqueId over MPI).
 * Compiled and linked here; run only where GPUs are (docs/scale-out.md). */
#include <nccl.h>
#include <string.h>

#include "cuda_common.h"

#define NCCL_CHECK(op, call)                                                                                      \
  do {                                                                                                            \
    ncclResult_t nccl_r_ = (call);                                                                                \
    if (nccl_r_ != ncclSuccess)                                                                                   \
      return bf_error(BF_EBACKEND, "%s: %s failed: %s (%s:%d)", (op), #call, ncclGetErrorString(nccl_r_),          \
                      __FILE__, __LINE__);                                                                        \
  } while (0)

size_t cuda_comm_id_bytes(void) { return sizeof(ncclUniqueId); }

int cuda_comm_id_create(bf_backend *be, void *id) {
  (void)be;
  NCCL_CHECK("comm_id_create", ncclGetUniqueId((ncclUniqueId *)id));
  return BF_OK;
}

int cuda_comm_init(bf_backend *be, const void *id, int nranks, int rank) {
  cuda_impl *im = cuda_im(be);
  if (im->comm) return bf_error(BF_EINVAL, "comm_init: this cuda context already has a communicator");
  ncclUniqueId uid;
  memcpy(&uid, id, sizeof uid);
  ncclComm_t comm;
  NCCL_CHECK("comm_init", ncclCommInitRank(&comm, nranks, uid, rank));
  im->comm = comm;
  return BF_OK;
}

int cuda_allreduce(bf_backend *be, void *buf, size_t n, int f64, int mean) {
  cuda_impl *im = cuda_im(be);
  if (!im->comm) return bf_error(BF_EINVAL, "allreduce: comm_init was not called on this cuda context");
  /* ncclAvg (NCCL >= 2.10) divides on the device: no extra scaling kernel. */
  NCCL_CHECK("allreduce", ncclAllReduce(buf, buf, n, f64 ? ncclFloat64 : ncclFloat32, mean ? ncclAvg : ncclSum,
                                        (ncclComm_t)im->comm, im->stream));
  return BF_OK;
}

void cuda_comm_destroy(cuda_impl *im) {
  if (im->comm) ncclCommDestroy((ncclComm_t)im->comm);
  im->comm = NULL;
}
