/* Fused SGD step, PyTorch semantics (dampening 0), as cpu/cpu_backend.c:
 *   g' = g + wd*p; m = momentum*m + g'; step = nesterov ? g' + momentum*m : m;
 *   p -= lr*step.  With momentum == 0: step = g' and m is neither read nor
 *   written (it may be NULL then). One pass over p, g, m. */
#include "cuda_common.h"

__global__ void k_sgd_plain(size_t n, float *__restrict__ p, const float *__restrict__ g, float lr, float wd) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    p[i] -= lr * (g[i] + wd * p[i]);
}

__global__ void k_sgd_momentum(size_t n, float *__restrict__ p, const float *__restrict__ g, float *__restrict__ m,
                               float lr, float mu, float wd, int nesterov) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const float gi = g[i] + wd * p[i];
    const float mi = mu * m[i] + gi;
    m[i] = mi;
    p[i] -= lr * (nesterov ? gi + mu * mi : mi);
  }
}

int cuda_sgd_step(bf_backend *be, size_t n, float *p, const float *g, float *m, const bf_sgd_params *hp) {
  const char *op = "sgd_step";
  if (!n) return BF_OK;
  cudaStream_t st = cuda_im(be)->stream;
  if (hp->momentum == 0.0f) {
    k_sgd_plain<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS, 0, st>>>(n, p, g, hp->lr, hp->weight_decay);
    CUDA_LAUNCH_CHECK(op, "k_sgd_plain");
    return BF_OK;
  }
  if (!m) return bf_error(BF_EINVAL, "%s: momentum %g needs a momentum buffer", op, (double)hp->momentum);
  k_sgd_momentum<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS, 0, st>>>(n, p, g, m, hp->lr, hp->momentum,
                                                                      hp->weight_decay, hp->nesterov);
  CUDA_LAUNCH_CHECK(op, "k_sgd_momentum");
  return BF_OK;
}
