/* Fully connected layer with cuBLAS sgemm.
 *
 * Row-major to column-major mapping. cuBLAS is column-major; a row-major
 * matrix A[r][c] (leading dimension c) is, byte for byte, the column-major
 * matrix A^T (c x r, leading dimension c). So every row-major product
 * C = op(A) op(B) is computed as the column-major product C^T = op(B)^T op(A)^T
 * on the same buffers, i.e. swap the operands and keep the transposes:
 *
 *   forward   y[n,out]  = x[n,in] w[out,in]^T + b
 *             col-major: y^T (out x n, ld out) = w (T: w^T is in x out, ld in)^T
 *                                              * x^T (in x n, ld in)
 *             -> sgemm(T, N, m=out, n=n, k=in, A=w lda=in, B=x ldb=in, C=y ldc=out),
 *                beta = 1 on y pre-filled with the bias (as the CPU does).
 *   dw        dw[out,in] = dy[n,out]^T x[n,in]
 *             col-major: dw^T (in x out, ld in) = x^T (in x n, ld in) * dy (n x out)
 *             where dy = (dy^T)^T and dy^T is the col-major view (out x n, ld out)
 *             -> sgemm(N, T, m=in, n=out, k=n, A=x lda=in, B=dy ldb=out, C=dw ldc=in), beta 0.
 *   dx        dx[n,in] = dy[n,out] w[out,in]
 *             col-major: dx^T (in x n, ld in) = w^T (in x out, ld in) * dy^T (out x n, ld out)
 *             -> sgemm(N, N, m=in, n=n, k=out, A=w lda=in, B=dy ldb=out, C=dx ldc=in), beta 0.
 * With beta = 0 cuBLAS does not read C, so outputs may hold garbage.
 * db[o] = sum_i dy[i,o]: one thread per o, summed in double in row order (as
 * the CPU), coalesced across o. */
#include "cuda_common.h"

__global__ void k_bias_broadcast(int n, int out, const float *__restrict__ b, float *__restrict__ y) {
  const size_t total = (size_t)n * out;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
    y[i] = b[i % out];
}

__global__ void k_bias_grad(int n, int out, const float *__restrict__ dy, float *__restrict__ db) {
  for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < out; o += gridDim.x * blockDim.x) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += dy[(size_t)i * out + o];
    db[o] = (float)s;
  }
}

int cuda_linear_forward(bf_backend *be, int n, int in, int out, const float *x, const float *w, const float *b,
                        float *y) {
  const char *op = "linear_forward";
  if (n <= 0 || in <= 0 || out <= 0) return bf_error(BF_EINVAL, "%s: bad shape n=%d in=%d out=%d", op, n, in, out);
  cuda_impl *im = cuda_im(be);
  const size_t total = (size_t)n * out;
  k_bias_broadcast<<<cuda_blocks(total, CUDA_THREADS), CUDA_THREADS, 0, im->stream>>>(n, out, b, y);
  CUDA_LAUNCH_CHECK(op, "k_bias_broadcast");
  const float one = 1.0f;
  CUBLAS_CHECK(op, cublasSgemm(im->cublas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w, in, x, in, &one, y, out));
  return BF_OK;
}

int cuda_linear_backward(bf_backend *be, int n, int in, int out, const float *x, const float *w, const float *dy,
                         float *dx, float *dw, float *db) {
  const char *op = "linear_backward";
  if (n <= 0 || in <= 0 || out <= 0) return bf_error(BF_EINVAL, "%s: bad shape n=%d in=%d out=%d", op, n, in, out);
  cuda_impl *im = cuda_im(be);
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(op, cublasSgemm(im->cublas, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, &one, x, in, dy, out, &zero, dw, in));
  k_bias_grad<<<cuda_blocks((size_t)out, CUDA_THREADS), CUDA_THREADS, 0, im->stream>>>(n, out, dy, db);
  CUDA_LAUNCH_CHECK(op, "k_bias_grad");
  if (dx)
    CUBLAS_CHECK(op, cublasSgemm(im->cublas, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, &one, w, in, dy, out, &zero, dx,
                                 in));
  return BF_OK;
}
