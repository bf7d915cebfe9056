/* Fake quantisation of the butterfly unit's output (quantisation-aware
 * training): the formulas of quant_math.h, shared with the CPU backend and
 * bf-client's encoder, so the codes are the same float for float. The clip is
 * read on the device (a model parameter); the clip's gradient is summed in
 * double by one block in a fixed order (deterministic; its order differs
 * from the CPU's single pass, so the two agree to rounding, not bitwise). */
#include "cuda_common.h"
#include "quant_math.h"

#define QUANT_RED_THREADS 256

__global__ void k_quant_forward(size_t n, const float *x, const float *clip, int bits, float *y, uint8_t *codes) {
  const float s = bf_quant_scale(*clip, bits);
  const int qmax = bf_quant_qmax(bits);
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const int q = bf_quant_code(x[i], s, qmax);
    y[i] = (float)q * s;
    if (codes) codes[i] = (uint8_t)q;
  }
}

/* One block: runs before k_quant_dx, so dy is read before dx (which may alias
 * it) is written. */
__global__ void k_quant_dclip(size_t n, const float *x, const float *clip, int bits, const float *dy, float *dclip) {
  __shared__ double s_sum[QUANT_RED_THREADS];
  const int t = threadIdx.x;
  const float c = *clip;
  double acc = 0;
  for (size_t i = t; i < n; i += QUANT_RED_THREADS) acc += (double)dy[i] * bf_quant_dclip(x[i], c, bits);
  s_sum[t] = acc;
  __syncthreads();
  for (int h = QUANT_RED_THREADS / 2; h > 0; h >>= 1) {
    if (t < h) s_sum[t] += s_sum[t + h];
    __syncthreads();
  }
  if (t == 0) *dclip = (float)s_sum[0];
}

__global__ void k_quant_dx(size_t n, const float *x, const float *clip, const float *dy, float *dx) {
  const float c = *clip;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    dx[i] = bf_quant_passes(x[i], c) ? dy[i] : 0.0f;
}

int cuda_quant_forward(bf_backend *be, size_t n, const float *x, const float *clip, int bits, float *y,
                       uint8_t *codes) {
  if (bits < BF_QUANT_BITS_MIN || bits > BF_QUANT_BITS_MAX)
    return bf_error(BF_EINVAL, "quant_forward: bits %d outside %d..%d", bits, BF_QUANT_BITS_MIN, BF_QUANT_BITS_MAX);
  if (!n) return BF_OK;
  k_quant_forward<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS, 0, cuda_im(be)->stream>>>(n, x, clip, bits, y,
                                                                                        codes);
  CUDA_LAUNCH_CHECK("quant_forward", "k_quant_forward");
  return BF_OK;
}

int cuda_quant_backward(bf_backend *be, size_t n, const float *x, const float *clip, int bits, const float *dy,
                        float *dx, float *dclip) {
  if (bits < BF_QUANT_BITS_MIN || bits > BF_QUANT_BITS_MAX)
    return bf_error(BF_EINVAL, "quant_backward: bits %d outside %d..%d", bits, BF_QUANT_BITS_MIN, BF_QUANT_BITS_MAX);
  cudaStream_t st = cuda_im(be)->stream;
  k_quant_dclip<<<1, QUANT_RED_THREADS, 0, st>>>(n, x, clip, bits, dy, dclip);
  CUDA_LAUNCH_CHECK("quant_backward", "k_quant_dclip");
  if (!n) return BF_OK;
  k_quant_dx<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS, 0, st>>>(n, x, clip, dy, dx);
  CUDA_LAUNCH_CHECK("quant_backward", "k_quant_dx");
  return BF_OK;
}
