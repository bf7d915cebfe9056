/* Mean softmax cross-entropy with label smoothing (cpu/cpu_backend.c
 * semantics), entirely on the device: the loss is written to device memory
 * and nothing here waits for the GPU.
 *
 *   k_xent_rows: one block per sample. Max in float, sum exp(z - m) and
 *     sum (z - m) in double (block tree reduction, fixed order), per-sample
 *     term (1-s)*nll + s*(lse - mean(z - m)) into scratch, dlogits row.
 *   k_xent_mean: one block; sums the n terms in double (fixed order) and writes
 *     loss = total / n.
 *
 * Errors found on the device. Labels live in device memory, so an
 * out-of-range label cannot be rejected before launching as the CPU does.
 * Instead the kernel raises the backend's device error flag (code
 * CUDA_FLAG_BAD_LABEL with label, sample and class count; the first offender
 * wins), writes NaN as that sample's term (so the loss is NaN) and zeros its
 * dlogits row. The next synchronising call (sync, download or upload; in
 * training that is the step's own download of its loss and accuracy count)
 * returns BF_EINVAL with the same message the CPU gives and clears the flag;
 * the backend stays usable.
 * A non-finite loss (non-finite logits) raises CUDA_FLAG_NONFINITE_LOSS,
 * reported as BF_ENUM, mirroring the CPU. */
#include <math.h>

#include "cuda_common.h"

#define XENT_THREADS 256

__device__ static void raise_flag(int *flag, int code, int a, int b, int c) {
  if (atomicCAS(&flag[CUDA_FLAG_CODE], 0, code) == 0) {
    flag[CUDA_FLAG_A] = a;
    flag[CUDA_FLAG_B] = b;
    flag[CUDA_FLAG_C] = c;
  }
}

__global__ void k_xent_rows(int n, int c, const float *__restrict__ logits, const int32_t *__restrict__ labels,
                            float smoothing, double *__restrict__ terms, float *__restrict__ dlogits, int *flag) {
  __shared__ float s_max[XENT_THREADS];
  __shared__ double s_se[XENT_THREADS], s_sz[XENT_THREADS];
  const int i = blockIdx.x, t = threadIdx.x;
  const float *z = logits + (size_t)i * c;
  const int lab = labels[i];
  if (lab < 0 || lab >= c) {
    if (t == 0) {
      raise_flag(flag, CUDA_FLAG_BAD_LABEL, lab, i, c);
      terms[i] = nan("");
    }
    if (dlogits)
      for (int j = t; j < c; j += blockDim.x) dlogits[(size_t)i * c + j] = 0.0f;
    return;
  }
  /* max (NaN never wins a '>' comparison, as in the CPU loop) */
  float m = -INFINITY;
  for (int j = t; j < c; j += blockDim.x) m = z[j] > m ? z[j] : m;
  s_max[t] = m;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w /= 2) {
    if (t < w) s_max[t] = s_max[t + w] > s_max[t] ? s_max[t + w] : s_max[t];
    __syncthreads();
  }
  const double md = s_max[0];
  double se = 0.0, sz = 0.0;
  for (int j = t; j < c; j += blockDim.x) {
    se += exp((double)z[j] - md);
    sz += (double)z[j] - md;
  }
  s_se[t] = se;
  s_sz[t] = sz;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w /= 2) {
    if (t < w) {
      s_se[t] += s_se[t + w];
      s_sz[t] += s_sz[t + w];
    }
    __syncthreads();
  }
  const double lse = log(s_se[0]);
  if (t == 0) {
    const double nll = lse - ((double)z[lab] - md);
    const double smooth = lse - s_sz[0] / c; /* mean_j(-log p_j) */
    terms[i] = (1.0 - smoothing) * nll + smoothing * smooth;
  }
  if (dlogits) {
    float *g = dlogits + (size_t)i * c;
    for (int j = t; j < c; j += blockDim.x) {
      const double p = exp((double)z[j] - md - lse);
      const double tgt = smoothing / c + (j == lab ? 1.0 - smoothing : 0.0);
      g[j] = (float)((p - tgt) / n);
    }
  }
}

__global__ void k_xent_mean(int n, const double *__restrict__ terms, float *__restrict__ loss, int *flag) {
  __shared__ double s[XENT_THREADS];
  const int t = threadIdx.x;
  double acc = 0.0;
  for (int i = t; i < n; i += blockDim.x) acc += terms[i];
  s[t] = acc;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w /= 2) {
    if (t < w) s[t] += s[t + w];
    __syncthreads();
  }
  if (t == 0) {
    const float l = (float)(s[0] / n);
    loss[0] = l;
    if (!isfinite(l)) raise_flag(flag, CUDA_FLAG_NONFINITE_LOSS, 0, 0, 0);
  }
}

int cuda_softmax_xent(bf_backend *be, int n, int c, const float *logits, const int32_t *labels, float smoothing,
                      float *loss, float *dlogits) {
  const char *op = "softmax_xent";
  if (n <= 0 || c <= 0) return bf_error(BF_EINVAL, "softmax_xent: bad shape n=%d c=%d", n, c);
  if (!(smoothing >= 0.0f && smoothing < 1.0f))
    return bf_error(BF_EINVAL, "softmax_xent: label smoothing %g outside [0, 1)", (double)smoothing);
  cuda_impl *im = cuda_im(be);
  double *terms = (double *)cuda_scratch(be, (size_t)n * sizeof(double), op);
  if (!terms) return BF_ENOMEM;
  k_xent_rows<<<(unsigned)n, XENT_THREADS, 0, im->stream>>>(n, c, logits, labels, smoothing, terms, dlogits,
                                                            im->flag_dev);
  CUDA_LAUNCH_CHECK(op, "k_xent_rows");
  k_xent_mean<<<1, XENT_THREADS, 0, im->stream>>>(n, terms, loss, im->flag_dev);
  CUDA_LAUNCH_CHECK(op, "k_xent_mean");
  return BF_OK;
}

int cuda_report_flag(bf_backend *be) {
  cuda_impl *im = cuda_im(be);
  const int code = im->flag_host[CUDA_FLAG_CODE];
  if (code == CUDA_FLAG_NONE) return BF_OK;
  const int a = im->flag_host[CUDA_FLAG_A], b = im->flag_host[CUDA_FLAG_B], c = im->flag_host[CUDA_FLAG_C];
  /* Clear both copies so the backend keeps working after the report. */
  for (int k = 0; k < CUDA_FLAG_LEN; k++) im->flag_host[k] = 0;
  CUDA_CHECK("sync", cudaMemsetAsync(im->flag_dev, 0, CUDA_FLAG_LEN * sizeof(int), im->stream));
  if (code == CUDA_FLAG_BAD_LABEL)
    return bf_error(BF_EINVAL, "softmax_xent: label %d of sample %d outside [0, %d)", a, b, c);
  if (code == CUDA_FLAG_NONFINITE_LOSS)
    return bf_error(BF_ENUM, "softmax_xent: loss is not finite (non-finite logits)");
  return bf_error(BF_EBACKEND, "cuda backend: unknown device error code %d", code);
}

/* One block: each thread takes samples t, t+256, ... and finds the first
 * maximum (strict >, as the CPU); an integer tree sum (exact, any order)
 * gives the count. */
__global__ void k_count_correct(int n, int c, const float *__restrict__ logits, const int32_t *__restrict__ labels,
                                float *__restrict__ correct) {
  __shared__ int s_k[XENT_THREADS];
  const int t = threadIdx.x;
  int k = 0;
  for (int i = t; i < n; i += XENT_THREADS) {
    const float *l = logits + (size_t)i * c;
    int am = 0;
    for (int j = 1; j < c; j++) am = l[j] > l[am] ? j : am;
    k += am == labels[i];
  }
  s_k[t] = k;
  __syncthreads();
  for (int h = XENT_THREADS / 2; h > 0; h >>= 1) {
    if (t < h) s_k[t] += s_k[t + h];
    __syncthreads();
  }
  if (t == 0) *correct = (float)s_k[0];
}

int cuda_count_correct(bf_backend *be, int n, int c, const float *logits, const int32_t *labels, float *correct) {
  const char *op = "count_correct";
  if (n <= 0 || c <= 0) return bf_error(BF_EINVAL, "count_correct: bad shape n=%d c=%d", n, c);
  k_count_correct<<<1, XENT_THREADS, 0, cuda_im(be)->stream>>>(n, c, logits, labels, correct);
  CUDA_LAUNCH_CHECK(op, "k_count_correct");
  return BF_OK;
}
