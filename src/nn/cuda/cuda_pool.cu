/* Pooling, NHWC, one thread per element with the channel fastest (coalesced).
 *
 * Max pool argmax rule (PyTorch's, as in cpu/cpu_backend.c): the scan starts
 * at the first in-bounds position of the window, '>' keeps the first maximum,
 * and a NaN always wins (so the last NaN of the window is the argmax).
 * The backward pass is a gather over input pixels: each input element visits
 * the windows that contain it, recomputes their argmax from x, and sums the
 * gradients of the windows whose argmax it is, in the same (oh, ow) order the
 * CPU scatter uses, so the float sums match bit for bit; no atomics, and dx is
 * fully assigned.
 *
 * Global average pool: one thread per (image, channel) sums the pixels in
 * order in float, exactly as the CPU does. */
#include <math.h>

#include "cuda_common.h"

__global__ void k_maxpool_forward(size_t total, int H, int W, int C, int OH, int OW, int K, int S, int P,
                                  const float *__restrict__ x, float *__restrict__ y) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const int c = (int)(i % C);
    size_t r = i / C;
    const int ow = (int)(r % OW);
    r /= OW;
    const int oh = (int)(r % OH);
    const size_t n = r / OH;
    const float *xn = x + n * H * W * C;
    float best = -INFINITY;
    for (int kh = 0; kh < K; kh++) {
      const int ih = oh * S - P + kh;
      if (ih < 0 || ih >= H) continue;
      for (int kw = 0; kw < K; kw++) {
        const int iw = ow * S - P + kw;
        if (iw < 0 || iw >= W) continue;
        const float v = xn[((size_t)ih * W + iw) * C + c];
        best = (v > best || v != v) ? v : best;
      }
    }
    y[i] = best;
  }
}

/* Argmax (ih*W + iw) of window (oh, ow) for channel c, or -1 if the window
 * holds no in-bounds position. */
__device__ static int window_argmax(const float *xn, int H, int W, int C, int c, int oh, int ow, int K, int S,
                                    int P) {
  float best = -INFINITY;
  int at = -1;
  for (int kh = 0; kh < K; kh++) {
    const int ih = oh * S - P + kh;
    if (ih < 0 || ih >= H) continue;
    for (int kw = 0; kw < K; kw++) {
      const int iw = ow * S - P + kw;
      if (iw < 0 || iw >= W) continue;
      const int idx = ih * W + iw;
      const float v = xn[(size_t)idx * C + c];
      if (at < 0) at = idx;
      if (v > best || isnan(v)) {
        best = v;
        at = idx;
      }
    }
  }
  return at;
}

__global__ void k_maxpool_backward(size_t total, int H, int W, int C, int OH, int OW, int K, int S, int P,
                                   const float *__restrict__ x, const float *__restrict__ dy,
                                   float *__restrict__ dx) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const int c = (int)(i % C);
    size_t r = i / C;
    const int iw = (int)(r % W);
    r /= W;
    const int ih = (int)(r % H);
    const size_t n = r / H;
    const float *xn = x + n * H * W * C;
    const float *dyn = dy + n * OH * OW * C;
    /* windows containing ih: oh*S - P <= ih <= oh*S - P + K - 1 */
    const int lo_h = ih + P - K + 1, lo_w = iw + P - K + 1;
    const int oh0 = lo_h <= 0 ? 0 : (lo_h + S - 1) / S, ow0 = lo_w <= 0 ? 0 : (lo_w + S - 1) / S;
    int oh1 = (ih + P) / S, ow1 = (iw + P) / S;
    if (oh1 > OH - 1) oh1 = OH - 1;
    if (ow1 > OW - 1) ow1 = OW - 1;
    const int me = ih * W + iw;
    float acc = 0.0f;
    for (int oh = oh0; oh <= oh1; oh++)
      for (int ow = ow0; ow <= ow1; ow++)
        if (window_argmax(xn, H, W, C, c, oh, ow, K, S, P) == me) acc += dyn[((size_t)oh * OW + ow) * C + c];
    dx[i] = acc;
  }
}

__global__ void k_avgpool_forward(int n, int hw, int c, float inv, const float *__restrict__ x,
                                  float *__restrict__ y) {
  const size_t total = (size_t)n * c;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const size_t img = i / c;
    const int ch = (int)(i % c);
    const float *xi = x + img * hw * c + ch;
    float s = 0.0f;
    for (int p = 0; p < hw; p++) s += xi[(size_t)p * c];
    y[i] = s * inv;
  }
}

__global__ void k_avgpool_backward(size_t total, int hw, int c, float inv, const float *__restrict__ dy,
                                   float *__restrict__ dx) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const int ch = (int)(i % c);
    const size_t img = i / ((size_t)hw * c);
    dx[i] = dy[img * c + ch] * inv;
  }
}

static int check_pool(const bf_pool_desc *d, const char *op) {
  if (d->n <= 0 || d->h <= 0 || d->w <= 0 || d->c <= 0 || d->kernel <= 0 || d->stride <= 0 || d->pad < 0 ||
      d->oh <= 0 || d->ow <= 0)
    return bf_error(BF_EINVAL, "%s: bad pool descriptor (use bf_pool_desc_init)", op);
  return BF_OK;
}

int cuda_maxpool_forward(bf_backend *be, const bf_pool_desc *d, const float *x, float *y) {
  const char *op = "maxpool_forward";
  BF_TRY(check_pool(d, op));
  const size_t total = (size_t)d->n * d->oh * d->ow * d->c;
  k_maxpool_forward<<<cuda_blocks(total, CUDA_THREADS), CUDA_THREADS, 0, cuda_im(be)->stream>>>(
      total, d->h, d->w, d->c, d->oh, d->ow, d->kernel, d->stride, d->pad, x, y);
  CUDA_LAUNCH_CHECK(op, "k_maxpool_forward");
  return BF_OK;
}

int cuda_maxpool_backward(bf_backend *be, const bf_pool_desc *d, const float *x, const float *dy, float *dx) {
  const char *op = "maxpool_backward";
  BF_TRY(check_pool(d, op));
  const size_t total = (size_t)d->n * d->h * d->w * d->c;
  k_maxpool_backward<<<cuda_blocks(total, CUDA_THREADS), CUDA_THREADS, 0, cuda_im(be)->stream>>>(
      total, d->h, d->w, d->c, d->oh, d->ow, d->kernel, d->stride, d->pad, x, dy, dx);
  CUDA_LAUNCH_CHECK(op, "k_maxpool_backward");
  return BF_OK;
}

int cuda_avgpool_global_forward(bf_backend *be, int n, int hw, int c, const float *x, float *y) {
  const char *op = "avgpool_global_forward";
  if (n <= 0 || hw <= 0 || c <= 0) return bf_error(BF_EINVAL, "%s: bad shape n=%d hw=%d c=%d", op, n, hw, c);
  const float inv = 1.0f / (float)hw;
  const size_t total = (size_t)n * c;
  k_avgpool_forward<<<cuda_blocks(total, CUDA_THREADS), CUDA_THREADS, 0, cuda_im(be)->stream>>>(n, hw, c, inv, x, y);
  CUDA_LAUNCH_CHECK(op, "k_avgpool_forward");
  return BF_OK;
}

int cuda_avgpool_global_backward(bf_backend *be, int n, int hw, int c, const float *dy, float *dx) {
  const char *op = "avgpool_global_backward";
  if (n <= 0 || hw <= 0 || c <= 0) return bf_error(BF_EINVAL, "%s: bad shape n=%d hw=%d c=%d", op, n, hw, c);
  const float inv = 1.0f / (float)hw;
  const size_t total = (size_t)n * hw * c;
  k_avgpool_backward<<<cuda_blocks(total, CUDA_THREADS), CUDA_THREADS, 0, cuda_im(be)->stream>>>(total, hw, c, inv,
                                                                                               dy, dx);
  CUDA_LAUNCH_CHECK(op, "k_avgpool_backward");
  return BF_OK;
}
