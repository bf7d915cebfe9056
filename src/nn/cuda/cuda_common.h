/* Private to the CUDA backend: backend state, error-checking macros and the
 * op entry points that cuda_backend.cu installs in the bf_backend table.
 *
 * Every file of this folder is CUDA C++ (.cu) but the interface it implements
 * (backend.h, bf_core.h) is C, hence the extern "C" around those headers.
 *
 * Error handling: nothing here aborts. Every CUDA runtime, cuDNN and cuBLAS
 * call and every kernel launch is checked; a failure records
 * "<op>: <call> failed: <reason> (<file>:<line>)" with bf_error() and returns
 * BF_EBACKEND from the op. Kernel launches are asynchronous: a fault inside a
 * kernel surfaces at the next synchronising call (sync, download, upload),
 * which reports it the same way. Errors detected by kernels themselves (bad
 * labels, non-finite loss) go through a small "device error flag" in device
 * memory and are reported by the next synchronising call with their own
 * BF_E* code (see cuda_loss.cu). */
#ifndef BF_CUDA_COMMON_H
#define BF_CUDA_COMMON_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "backend.h"
#include "bf_core.h"
}

/* ---------------- precision modes ----------------
 * Chosen at creation (bf_backend_create_precision; NULL: the environment
 * variable BF_CUDA_MATH=fp32|tf32|bf16, default fp32). FP32 is the mode the
 * 1e-4 parity tests assume. TF32 only switches the library math modes (cuDNN
 * convs and cuBLAS GEMMs may use TF32 tensor cores). BF16 is mixed precision
 * for the convolutions (see cuda_conv.cu): bf16 copies of activations and
 * weights into cuDNN, float accumulation, float results; everything else
 * (master weights, gradients, optimizer, BN statistics, loss, the FC layer)
 * stays float32. */
typedef enum cuda_precision {
  CUDA_PREC_FP32 = 0, /* exact fp32: CUDNN_FMA_MATH, CUBLAS_DEFAULT_MATH (no TF32) */
  CUDA_PREC_TF32 = 1, /* CUDNN_DEFAULT_MATH (TF32 allowed on sm80+), CUBLAS_TF32_TENSOR_OP_MATH */
  CUDA_PREC_BF16 = 2  /* bf16 convolutions (CUDNN_TENSOR_OP_MATH), fp32 elsewhere */
} cuda_precision;

/* ---------------- convolution algorithm cache ---------------- */
typedef struct cuda_conv_plan {
  bf_conv_desc key; /* the shape this plan is for */
  cudnnTensorDescriptor_t xd, yd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t bwd_data;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter;
  size_t ws_fwd, ws_bwd_data, ws_bwd_filter; /* bytes each algorithm needs */
  /* Per direction: 0 = usable; else the BF_E* code of the failed algorithm
   * choice, with its message, reported only if that direction is called (the
   * stem's backward data, e.g., is never needed). */
  int err_fwd, err_bwd_data, err_bwd_filter;
  char msg_fwd[256], msg_bwd_data[256], msg_bwd_filter[256];
} cuda_conv_plan;

/* Device error flag layout (ints; code 0 = no error). */
enum { CUDA_FLAG_CODE = 0, CUDA_FLAG_A, CUDA_FLAG_B, CUDA_FLAG_C, CUDA_FLAG_LEN };
enum { CUDA_FLAG_NONE = 0, CUDA_FLAG_BAD_LABEL = 1, CUDA_FLAG_NONFINITE_LOSS = 2 };

typedef struct cuda_impl {
  int device;
  cudaStream_t stream; /* every op, copy and library call runs on this stream */
  /* upload_async's copies (pinned host memory): copy_stream waits for the
   * work queued before the copy (stream_done), stream waits for the copy
   * (copy_done), so program order holds across the two streams. */
  cudaStream_t copy_stream;
  cudaEvent_t copy_done, stream_done;
  cudnnHandle_t cudnn;
  cublasHandle_t cublas;
  cuda_precision precision;

  void *cublas_ws; /* workspace handed to cuBLAS so GEMMs never allocate */
  size_t cublas_ws_bytes;

  /* Reduction scratch (batch-norm partial sums, loss terms, per-channel
   * coefficients). Grown on first use of a larger shape, then reused, so the
   * steady-state training step allocates nothing (same policy as the CPU
   * backend). Ops on the one stream use it in order, so sharing is safe. */
  void *scratch;
  size_t scratch_bytes;

  /* Device error flag (device memory) and its pinned host mirror. */
  volatile int *flag_host;
  int *flag_dev;

  cuda_conv_plan *plans;
  int n_plans, cap_plans;

  /* ncclComm_t of data-parallel training (cuda_comm.cu), NULL until comm_init. */
  void *comm;
} cuda_impl;

static inline cuda_impl *cuda_im(bf_backend *be) { return (cuda_impl *)be->impl; }

/* ---------------- checking macros (return BF_EBACKEND, never abort) ---------------- */

/* cudaGetLastError() both reads and clears the (non-sticky) error state, so a
 * reported failure does not resurface in the next launch check. */
#define CUDA_CHECK(op, call)                                                                                      \
  do {                                                                                                            \
    cudaError_t cuda_e_ = (call);                                                                                 \
    if (cuda_e_ != cudaSuccess) {                                                                                 \
      (void)cudaGetLastError();                                                                                   \
      return bf_error(BF_EBACKEND, "%s: %s failed: %s (%s:%d)", (op), #call, cudaGetErrorString(cuda_e_),          \
                      __FILE__, __LINE__);                                                                        \
    }                                                                                                             \
  } while (0)

#define CUDNN_CHECK(op, call)                                                                                     \
  do {                                                                                                            \
    cudnnStatus_t cudnn_s_ = (call);                                                                              \
    if (cudnn_s_ != CUDNN_STATUS_SUCCESS) {                                                                       \
      (void)cudaGetLastError();                                                                                   \
      return bf_error(BF_EBACKEND, "%s: %s failed: %s (%s:%d)", (op), #call, cudnnGetErrorString(cudnn_s_),        \
                      __FILE__, __LINE__);                                                                        \
    }                                                                                                             \
  } while (0)

#define CUBLAS_CHECK(op, call)                                                                                    \
  do {                                                                                                            \
    cublasStatus_t cublas_s_ = (call);                                                                            \
    if (cublas_s_ != CUBLAS_STATUS_SUCCESS) {                                                                     \
      (void)cudaGetLastError();                                                                                   \
      return bf_error(BF_EBACKEND, "%s: %s failed: %s (%s:%d)", (op), #call, cublasGetStatusString(cublas_s_),     \
                      __FILE__, __LINE__);                                                                        \
    }                                                                                                             \
  } while (0)

/* After every kernel launch: catches bad launch configurations at once (a
 * fault during execution shows up at the next synchronising call). */
#define CUDA_LAUNCH_CHECK(op, kernel_name)                                                                        \
  do {                                                                                                            \
    cudaError_t cuda_e_ = cudaGetLastError();                                                                     \
    if (cuda_e_ != cudaSuccess)                                                                                   \
      return bf_error(BF_EBACKEND, "%s: launching %s failed: %s (%s:%d)", (op), (kernel_name),                    \
                      cudaGetErrorString(cuda_e_), __FILE__, __LINE__);                                           \
  } while (0)

/* ---------------- launch helpers ---------------- */

#define CUDA_THREADS 256
/* Blocks for a grid-stride loop over n elements (n > 0). */
static inline unsigned cuda_blocks(size_t n, unsigned threads) {
  size_t b = (n + threads - 1) / threads;
  const size_t cap = (size_t)1 << 20; /* grid-stride loops cover the rest */
  return (unsigned)(b < cap ? b : cap);
}

/* ---------------- shared helpers (cuda_backend.cu) ---------------- */

/* Scratch of at least `bytes` (grows on first use of a larger shape: waits for
 * the stream, frees, allocates). Returns NULL with a message on failure. */
void *cuda_scratch(bf_backend *be, size_t bytes, const char *op);
/* Waits for the stream, then reports (and clears) any deferred error: an
 * asynchronous CUDA fault or the device error flag. `what` names the caller. */
int cuda_sync_check(bf_backend *be, const char *what);

/* ---------------- op entry points ---------------- */

/* cuda_conv.cu */
int cuda_conv_init(bf_backend *be);
void cuda_conv_destroy(bf_backend *be);
int cuda_conv2d_workspace(bf_backend *be, const bf_conv_desc *d, size_t *bytes);
int cuda_conv2d_forward(bf_backend *be, const bf_conv_desc *d, const float *x, const float *w, float *y, void *ws,
                        size_t ws_bytes);
int cuda_conv2d_backward_data(bf_backend *be, const bf_conv_desc *d, const float *dy, const float *w, float *dx,
                              float beta, void *ws, size_t ws_bytes);
int cuda_conv2d_backward_filter(bf_backend *be, const bf_conv_desc *d, const float *x, const float *dy, float *dw,
                                void *ws, size_t ws_bytes);

/* cuda_conv_infer.cu */
int cuda_conv_infer_create(bf_backend *be, const bf_conv_desc *d, const float *w, const float *bias, int relu,
                           int has_residual, bf_conv_infer **out, size_t *ws_bytes);
int cuda_conv_infer_forward(bf_backend *be, bf_conv_infer *p, const float *x, const float *residual, float *y,
                            void *ws, size_t ws_bytes);
void cuda_conv_infer_free(bf_backend *be, bf_conv_infer *p);

/* cuda_batchnorm.cu */
int cuda_bn_forward_train(bf_backend *be, int rows, int c, const float *x, const float *gamma, const float *beta,
                          const float *residual, int relu, float *y, float *save_mean, float *save_invstd,
                          float *running_mean, float *running_var, float momentum, float eps);
int cuda_bn_forward_eval(bf_backend *be, int rows, int c, const float *x, const float *gamma, const float *beta,
                         const float *running_mean, const float *running_var, const float *residual, int relu,
                         float eps, float *y);
int cuda_bn_backward(bf_backend *be, int rows, int c, const float *x, const float *dy, const float *relu_out,
                     const float *gamma, const float *save_mean, const float *save_invstd, float *dx, float *dgamma,
                     float *dbeta);
int cuda_bn_backward_eval(bf_backend *be, int rows, int c, const float *x, const float *dy, const float *relu_out,
                          const float *gamma, const float *running_mean, const float *running_var, float eps,
                          float *dx, float *dgamma, float *dbeta);

/* cuda_elementwise.cu */
int cuda_relu_forward(bf_backend *be, size_t n, const float *x, float *y);
int cuda_relu_backward(bf_backend *be, size_t n, const float *y, const float *dy, float *dx);
int cuda_bias_act_forward(bf_backend *be, int rows, int c, const float *x, const float *bias, const float *residual,
                          int relu, float *y);
int cuda_add(bf_backend *be, size_t n, const float *a, const float *b, float *y);
int cuda_quant_forward(bf_backend *be, size_t n, const float *x, const float *clip, int bits, float *y,
                       uint8_t *codes);
int cuda_quant_backward(bf_backend *be, size_t n, const float *x, const float *clip, int bits, const float *dy,
                        float *dx, float *dclip);
int cuda_normalize_u8(bf_backend *be, size_t pixels, const uint8_t *x, const float mean[3], const float std[3],
                      float *y);

/* cuda_pool.cu */
int cuda_maxpool_forward(bf_backend *be, const bf_pool_desc *d, const float *x, float *y);
int cuda_maxpool_backward(bf_backend *be, const bf_pool_desc *d, const float *x, const float *dy, float *dx);
int cuda_avgpool_global_forward(bf_backend *be, int n, int hw, int c, const float *x, float *y);
int cuda_avgpool_global_backward(bf_backend *be, int n, int hw, int c, const float *dy, float *dx);

/* cuda_linear.cu */
int cuda_linear_forward(bf_backend *be, int n, int in, int out, const float *x, const float *w, const float *b,
                        float *y);
int cuda_linear_backward(bf_backend *be, int n, int in, int out, const float *x, const float *w, const float *dy,
                         float *dx, float *dw, float *db);

/* cuda_loss.cu */
int cuda_softmax_xent(bf_backend *be, int n, int c, const float *logits, const int32_t *labels, float smoothing,
                      float *loss, float *dlogits);
/* Turns a raised device error flag into a BF_E* code + message; clears it. */
int cuda_report_flag(bf_backend *be);
int cuda_count_correct(bf_backend *be, int n, int c, const float *logits, const int32_t *labels, float *correct);

/* cuda_sgd.cu */
int cuda_sgd_step(bf_backend *be, size_t n, float *p, const float *g, float *m, const bf_sgd_params *hp);

/* cuda_comm.cu (built when NCCL is found: BF_HAVE_NCCL): backend.h collectives. */
#ifdef BF_HAVE_NCCL
size_t cuda_comm_id_bytes(void);
int cuda_comm_id_create(bf_backend *be, void *id);
int cuda_comm_init(bf_backend *be, const void *id, int nranks, int rank);
int cuda_allreduce(bf_backend *be, void *buf, size_t n, int f64, int mean);
void cuda_comm_destroy(cuda_impl *im);
#endif

#endif
