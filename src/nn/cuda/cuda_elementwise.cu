/* Elementwise ops: grid-stride loops, one element per thread per step. Every
 * kernel reads an element and writes the same element, so the aliasing the
 * interface allows (dx == dy, y == a or b, y == x) is safe. Expressions are
 * written as in cpu/cpu_backend.c, including the NaN behaviour of each ReLU
 * variant. No pointer here is __restrict__ because of that aliasing. */
#include "cuda_common.h"
#include "pixel_math.h"

__global__ void k_relu_forward(size_t n, const float *x, float *y) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

__global__ void k_relu_backward(size_t n, const float *y, const float *dy, float *dx) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

__global__ void k_bias_act(size_t total, int c, const float *x, const float *bias, const float *residual, int relu,
                           float *y) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const int ch = (int)(i % (size_t)c);
    const float v = x[i] + bias[ch] + (residual ? residual[i] : 0.0f);
    y[i] = relu && v < 0.0f ? 0.0f : v; /* NaN stays NaN here, as on the CPU */
  }
}

__global__ void k_add(size_t n, const float *a, const float *b, float *y) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    y[i] = a[i] + b[i];
}

/* y[3p+k] = bf_pixel_normalize(x[3p+k], mean_k, std_k): the loader's and
 * the CPU backend's formula, so all three agree bit for bit. */
__global__ void k_normalize_u8(size_t n, const uint8_t *__restrict__ x, float m0, float m1, float m2, float s0,
                               float s1, float s2, float *__restrict__ y) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const int k = (int)(i % 3);
    const float m = k == 0 ? m0 : (k == 1 ? m1 : m2);
    const float s = k == 0 ? s0 : (k == 1 ? s1 : s2);
    y[i] = bf_pixel_normalize(x[i], m, s);
  }
}

int cuda_relu_forward(bf_backend *be, size_t n, const float *x, float *y) {
  if (!n) return BF_OK;
  k_relu_forward<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS, 0, cuda_im(be)->stream>>>(n, x, y);
  CUDA_LAUNCH_CHECK("relu_forward", "k_relu_forward");
  return BF_OK;
}

int cuda_relu_backward(bf_backend *be, size_t n, const float *y, const float *dy, float *dx) {
  if (!n) return BF_OK;
  k_relu_backward<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS, 0, cuda_im(be)->stream>>>(n, y, dy, dx);
  CUDA_LAUNCH_CHECK("relu_backward", "k_relu_backward");
  return BF_OK;
}

int cuda_bias_act_forward(bf_backend *be, int rows, int c, const float *x, const float *bias, const float *residual,
                          int relu, float *y) {
  if (rows < 0 || c < 0) return bf_error(BF_EINVAL, "bias_act_forward: bad shape rows=%d c=%d", rows, c);
  const size_t total = (size_t)rows * c;
  if (!total) return BF_OK;
  k_bias_act<<<cuda_blocks(total, CUDA_THREADS), CUDA_THREADS, 0, cuda_im(be)->stream>>>(total, c, x, bias, residual,
                                                                                       relu, y);
  CUDA_LAUNCH_CHECK("bias_act_forward", "k_bias_act");
  return BF_OK;
}

int cuda_add(bf_backend *be, size_t n, const float *a, const float *b, float *y) {
  if (!n) return BF_OK;
  k_add<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS, 0, cuda_im(be)->stream>>>(n, a, b, y);
  CUDA_LAUNCH_CHECK("add", "k_add");
  return BF_OK;
}

int cuda_normalize_u8(bf_backend *be, size_t pixels, const uint8_t *x, const float mean[3], const float std[3],
                      float *y) {
  if (!pixels) return BF_OK;
  /* mean/std are host arrays (parameters, not tensors). */
  const size_t n = pixels * 3;
  k_normalize_u8<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS, 0, cuda_im(be)->stream>>>(
      n, x, mean[0], mean[1], mean[2], std[0], std[1], std[2], y);
  CUDA_LAUNCH_CHECK("normalize_u8", "k_normalize_u8");
  return BF_OK;
}
