/* The CUDA backend: creation, memory, copies, sync, destroy, and the op table.
 *
 * One device (0, i.e. the first of CUDA_VISIBLE_DEVICES), one non-blocking
 * stream; every op, copy and cuDNN/cuBLAS call is issued on that stream, so
 * ops run in program order without host synchronisation. The host waits only
 * where the interface needs host data to be ready:
 *   - download: the host buffer holds the data when it returns (this is the
 *     one sync per training step: the trainer downloads loss and accuracy
 *     count together);
 *   - upload: the host buffer may be reused or freed when it returns
 *     (upload_async, from pinned memory on a copy stream, does not wait);
 *   - sync: waits and reports deferred errors.
 * Each of them also reports deferred errors (faults in earlier kernels, the
 * device error flag raised by softmax_xent). */
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "cuda_common.h"

#define CUBLAS_WS_BYTES ((size_t)32 << 20)   /* NVIDIA's recommendation for Hopper */
#define INITIAL_SCRATCH_BYTES ((size_t)8 << 20)

/* Probe for "this binary has kernels for the device": cudaFuncGetAttributes
 * fails with cudaErrorInvalidDeviceFunction / NoKernelImageForDevice when no
 * SASS or PTX in the fat binary fits the GPU (CUDA_ARCHITECTURES is "90"). */
__global__ void k_probe(int *p) {
  if (p) p[0] = 0;
}

/* ---------------- deferred errors ---------------- */

int cuda_sync_check(bf_backend *be, const char *what) {
  cuda_impl *im = cuda_im(be);
  /* The device error flag travels with the stream: a 16-byte copy queued
   * behind the ops, read by the host after the wait. */
  cudaError_t e = cudaMemcpyAsync((void *)im->flag_host, im->flag_dev, CUDA_FLAG_LEN * sizeof(int),
                                  cudaMemcpyDeviceToHost, im->stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(im->stream);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return bf_error(BF_EBACKEND, "%s: a CUDA operation failed: %s (reported at %s:%d; the failing op is an earlier "
                                 "asynchronous one; rerun with CUDA_LAUNCH_BLOCKING=1 to locate it)",
                    what, cudaGetErrorString(e), __FILE__, __LINE__);
  }
  e = cudaGetLastError();
  if (e != cudaSuccess)
    return bf_error(BF_EBACKEND, "%s: pending CUDA error: %s (%s:%d)", what, cudaGetErrorString(e), __FILE__,
                    __LINE__);
  return cuda_report_flag(be);
}

/* ---------------- scratch ---------------- */

void *cuda_scratch(bf_backend *be, size_t bytes, const char *op) {
  cuda_impl *im = cuda_im(be);
  if (bytes <= im->scratch_bytes) return im->scratch;
  /* Earlier kernels may still use the old buffer: wait before freeing it. */
  cudaError_t e = cudaStreamSynchronize(im->stream);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    bf_error(BF_EBACKEND, "%s: cudaStreamSynchronize before growing scratch failed: %s (%s:%d)", op,
             cudaGetErrorString(e), __FILE__, __LINE__);
    return NULL;
  }
  size_t want = bytes > 2 * im->scratch_bytes ? bytes : 2 * im->scratch_bytes;
  void *p = NULL;
  e = cudaMalloc(&p, want);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    bf_error(BF_ENOMEM, "%s: cudaMalloc of %zu bytes of scratch failed: %s (%s:%d)", op, want, cudaGetErrorString(e),
             __FILE__, __LINE__);
    return NULL;
  }
  if (im->scratch) cudaFree(im->scratch);
  im->scratch = p;
  im->scratch_bytes = want;
  return p;
}

/* ---------------- memory ---------------- */

static void *cuda_alloc(bf_backend *be, size_t bytes) {
  (void)be;
  void *p = NULL;
  /* cudaMalloc(0) gives NULL, which callers read as failure: round up. */
  cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
    bf_error(BF_ENOMEM, "cuda backend: cudaMalloc of %zu bytes failed: %s (%zu of %zu MiB free on the device)", bytes,
             cudaGetErrorString(e), free_b >> 20, total_b >> 20);
    return NULL;
  }
  return p;
}

static void cuda_free(bf_backend *be, void *p) {
  if (!p) return;
  /* Work queued on our stream may still read p: wait for it first. Errors
   * cannot be returned from here: clear them so they do not leak into the
   * next launch check (a sticky fault resurfaces at the next sync anyway). */
  if (cudaStreamSynchronize(cuda_im(be)->stream) != cudaSuccess) (void)cudaGetLastError();
  if (cudaFree(p) != cudaSuccess) (void)cudaGetLastError();
}

static int cuda_upload(bf_backend *be, void *dst, const void *host_src, size_t bytes) {
  if (!bytes) return BF_OK;
  cuda_impl *im = cuda_im(be);
  CUDA_CHECK("upload", cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, im->stream));
  /* The caller may free or overwrite host_src as soon as we return. */
  return cuda_sync_check(be, "upload");
}

static void *cuda_host_alloc(bf_backend *be, size_t bytes) {
  (void)be;
  void *p = NULL;
  cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    bf_error(BF_ENOMEM, "cuda backend: cudaHostAlloc of %zu bytes (pinned staging) failed: %s", bytes,
             cudaGetErrorString(e));
    return NULL;
  }
  return p;
}

static void cuda_host_free(bf_backend *be, void *p) {
  if (!p) return;
  cuda_impl *im = cuda_im(be);
  /* a queued copy may still read p */
  if (cudaStreamSynchronize(im->copy_stream) != cudaSuccess) (void)cudaGetLastError();
  if (cudaFreeHost(p) != cudaSuccess) (void)cudaGetLastError();
}

/* Order: everything queued on `stream` so far -> the copy (copy_stream) ->
 * everything queued on `stream` afterwards. The copy engine runs it while
 * the SMs do other work; a caller that double-buffers dst and host_src gets
 * the overlap. */
static int cuda_upload_async(bf_backend *be, void *dst, const void *host_src, size_t bytes) {
  if (!bytes) return BF_OK;
  cuda_impl *im = cuda_im(be);
  const char *op = "upload_async";
  CUDA_CHECK(op, cudaEventRecord(im->stream_done, im->stream));
  CUDA_CHECK(op, cudaStreamWaitEvent(im->copy_stream, im->stream_done, 0));
  CUDA_CHECK(op, cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, im->copy_stream));
  CUDA_CHECK(op, cudaEventRecord(im->copy_done, im->copy_stream));
  CUDA_CHECK(op, cudaStreamWaitEvent(im->stream, im->copy_done, 0));
  return BF_OK;
}

static int cuda_download(bf_backend *be, void *host_dst, const void *src, size_t bytes) {
  cuda_impl *im = cuda_im(be);
  if (bytes) CUDA_CHECK("download", cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, im->stream));
  /* Host data must be ready, and the deferred errors of the ops that produced
   * it (e.g. a bad label behind the loss) are reported here. */
  return cuda_sync_check(be, "download");
}

static int cuda_zero(bf_backend *be, void *dst, size_t bytes) {
  if (!bytes) return BF_OK;
  CUDA_CHECK("zero", cudaMemsetAsync(dst, 0, bytes, cuda_im(be)->stream));
  return BF_OK;
}

static int cuda_copy(bf_backend *be, void *dst, const void *src, size_t bytes) {
  if (!bytes || dst == src) return BF_OK;
  /* The interface's CPU twin uses memmove; cudaMemcpy* requires disjoint
   * ranges, so overlapping copies go through scratch. */
  const char *d = (const char *)dst, *s = (const char *)src;
  int overlap = d < s + bytes && s < d + bytes;
  cudaStream_t st = cuda_im(be)->stream;
  if (!overlap) {
    CUDA_CHECK("copy", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, st));
    return BF_OK;
  }
  void *tmp = cuda_scratch(be, bytes, "copy");
  if (!tmp) return BF_ENOMEM;
  CUDA_CHECK("copy", cudaMemcpyAsync(tmp, src, bytes, cudaMemcpyDeviceToDevice, st));
  CUDA_CHECK("copy", cudaMemcpyAsync(dst, tmp, bytes, cudaMemcpyDeviceToDevice, st));
  return BF_OK;
}

static int cuda_sync(bf_backend *be) { return cuda_sync_check(be, "sync"); }

/* Releases whatever exists; safe on a partially created backend. */
static void cuda_release(cuda_impl *im) {
  if (!im) return;
  if (im->stream && cudaStreamSynchronize(im->stream) != cudaSuccess) (void)cudaGetLastError();
#ifdef BF_HAVE_NCCL
  cuda_comm_destroy(im);
#endif
  if (im->cublas) cublasDestroy(im->cublas);
  if (im->cudnn) cudnnDestroy(im->cudnn);
  if (im->cublas_ws) cudaFree(im->cublas_ws);
  if (im->scratch) cudaFree(im->scratch);
  if (im->flag_host) cudaFreeHost((void *)im->flag_host);
  if (im->flag_dev) cudaFree(im->flag_dev);
  if (im->copy_stream && cudaStreamSynchronize(im->copy_stream) != cudaSuccess) (void)cudaGetLastError();
  if (im->copy_done) cudaEventDestroy(im->copy_done);
  if (im->stream_done) cudaEventDestroy(im->stream_done);
  if (im->copy_stream) cudaStreamDestroy(im->copy_stream);
  if (im->stream) cudaStreamDestroy(im->stream);
  (void)cudaGetLastError();
  free(im);
}

static void cuda_destroy(bf_backend *be) {
  if (!be) return;
  cuda_conv_destroy(be);
  cuda_release(cuda_im(be));
  free(be);
}

/* ---------------- entry points: the context's device ---------------- */

/* The current device is a per-host-thread setting of the CUDA runtime, and a
 * context may be used from any thread (backend.h), so every entry point of
 * the table makes the context's device current first (cheap when it already
 * is). on_device<F>::call is F behind that step. */
template <typename T, T Fn> struct on_device;
template <typename R, typename... A, R (*Fn)(bf_backend *, A...)>
struct on_device<R (*)(bf_backend *, A...), Fn> {
  static R call(bf_backend *be, A... a) {
    cudaError_t e = cudaSetDevice(cuda_im(be)->device);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      bf_error(BF_EBACKEND, "cuda backend: cudaSetDevice(%d) failed: %s", cuda_im(be)->device,
               cudaGetErrorString(e));
      if constexpr (std::is_same<R, int>::value) return BF_EBACKEND;
      else if constexpr (std::is_pointer<R>::value) return nullptr;
      /* free, destroy, conv2d_workspace go on: nothing to report through */
    }
    return Fn(be, a...);
  }
};
#define ON_DEVICE(fn) (&on_device<decltype(&fn), &fn>::call)

/* ---------------- creation ---------------- */

/* The precision argument of bf_backend_create_precision, or when it is NULL
 * the environment variable BF_CUDA_MATH (tools, tests); default fp32. */
static int parse_precision(const char *arg, cuda_precision *out) {
  const char *v = arg ? arg : getenv("BF_CUDA_MATH");
  const char *what = arg ? "precision" : "BF_CUDA_MATH";
  *out = CUDA_PREC_FP32;
  if (!v || !*v || !strcmp(v, "fp32")) return BF_OK;
  if (!strcmp(v, "tf32")) {
    *out = CUDA_PREC_TF32;
    return BF_OK;
  }
  if (!strcmp(v, "bf16")) {
    *out = CUDA_PREC_BF16;
    return BF_OK;
  }
  return bf_error(BF_EINVAL, "cuda backend: %s = '%s' is not fp32, tf32 or bf16", what, v);
}

extern "C" int bf_backend_cuda_device_count(int *count) {
  *count = 0;
  cudaError_t e = cudaGetDeviceCount(count);
  if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
    (void)cudaGetLastError();
    *count = 0;
    return BF_OK;
  }
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return bf_error(BF_EBACKEND, "cuda backend: cudaGetDeviceCount: %s", cudaGetErrorString(e));
  }
  return BF_OK;
}

static int setup(bf_backend *be, cuda_impl *im, const char *precision) {
  const char *op = "cuda backend";
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return bf_error(BF_EBACKEND, "cuda backend: no CUDA device (cudaGetDeviceCount: %s)", cudaGetErrorString(e));
  }
  if (count < 1) return bf_error(BF_EBACKEND, "cuda backend: no CUDA device (cudaGetDeviceCount: 0 devices)");
  BF_TRY(parse_precision(precision, &im->precision));
  size_t cudnn_v = cudnnGetVersion();
  if (cudnn_v / 10000 != CUDNN_MAJOR && cudnn_v / 1000 != CUDNN_MAJOR)
    return bf_error(BF_EBACKEND, "cuda backend: cuDNN library version %zu does not match the headers (%d.%d)",
                    cudnn_v, CUDNN_MAJOR, CUDNN_MINOR);
  im->device = 0;
  CUDA_CHECK(op, cudaSetDevice(im->device));
  cudaDeviceProp prop;
  CUDA_CHECK(op, cudaGetDeviceProperties(&prop, im->device));
  cudaFuncAttributes fa;
  e = cudaFuncGetAttributes(&fa, k_probe);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return bf_error(BF_EBACKEND, "cuda backend: this build has no kernels for %s (compute capability %d.%d): %s; "
                                 "add the architecture to CUDA_ARCHITECTURES in src/nn/cuda/CMakeLists.txt",
                    prop.name, prop.major, prop.minor, cudaGetErrorString(e));
  }
  CUDA_CHECK(op, cudaStreamCreateWithFlags(&im->stream, cudaStreamNonBlocking));
  CUDA_CHECK(op, cudaStreamCreateWithFlags(&im->copy_stream, cudaStreamNonBlocking));
  CUDA_CHECK(op, cudaEventCreateWithFlags(&im->copy_done, cudaEventDisableTiming));
  CUDA_CHECK(op, cudaEventCreateWithFlags(&im->stream_done, cudaEventDisableTiming));

  /* Device error flag (device ints, zero = no error) and its pinned host
   * mirror, refreshed by every synchronising call. */
  void *flag = NULL;
  CUDA_CHECK(op, cudaHostAlloc(&flag, CUDA_FLAG_LEN * sizeof(int), cudaHostAllocDefault));
  im->flag_host = (volatile int *)flag;
  memset(flag, 0, CUDA_FLAG_LEN * sizeof(int));
  CUDA_CHECK(op, cudaMalloc((void **)&im->flag_dev, CUDA_FLAG_LEN * sizeof(int)));
  CUDA_CHECK(op, cudaMemsetAsync(im->flag_dev, 0, CUDA_FLAG_LEN * sizeof(int), im->stream));
  CUDA_CHECK(op, cudaStreamSynchronize(im->stream));

  CUDA_CHECK(op, cudaMalloc(&im->scratch, INITIAL_SCRATCH_BYTES));
  im->scratch_bytes = INITIAL_SCRATCH_BYTES;

  CUDNN_CHECK(op, cudnnCreate(&im->cudnn));
  CUDNN_CHECK(op, cudnnSetStream(im->cudnn, im->stream));

  CUBLAS_CHECK(op, cublasCreate(&im->cublas));
  CUBLAS_CHECK(op, cublasSetStream(im->cublas, im->stream));
  CUDA_CHECK(op, cudaMalloc(&im->cublas_ws, CUBLAS_WS_BYTES));
  im->cublas_ws_bytes = CUBLAS_WS_BYTES;
  CUBLAS_CHECK(op, cublasSetWorkspace(im->cublas, im->cublas_ws, im->cublas_ws_bytes));
  /* alpha/beta are host scalars in every call. */
  CUBLAS_CHECK(op, cublasSetPointerMode(im->cublas, CUBLAS_POINTER_MODE_HOST));
  /* FP32: no TF32 (parity with the CPU at 1e-4). TF32: the precision hook. */
  CUBLAS_CHECK(op, cublasSetMathMode(im->cublas, im->precision == CUDA_PREC_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                                  : CUBLAS_DEFAULT_MATH));
  (void)be;
  return BF_OK;
}

extern "C" int bf_backend_cuda_create(bf_backend **out, int threads, const char *precision) {
  (void)threads; /* host threads do no compute here */
  *out = NULL;
  bf_backend *be = (bf_backend *)bf_calloc(1, sizeof *be, "cuda backend");
  cuda_impl *im = (cuda_impl *)bf_calloc(1, sizeof *im, "cuda backend");
  if (!be || !im) {
    free(be);
    free(im);
    return BF_ENOMEM;
  }
  be->impl = im;
  int rc = setup(be, im, precision);
  if (!rc) rc = cuda_conv_init(be);
  if (rc) {
    cuda_conv_destroy(be);
    cuda_release(im);
    free(be);
    return rc;
  }
  be->name = "cuda";
  be->threads = 1;
  be->alloc = ON_DEVICE(cuda_alloc);
  be->free = ON_DEVICE(cuda_free);
  be->upload = ON_DEVICE(cuda_upload);
  be->download = ON_DEVICE(cuda_download);
  be->zero = ON_DEVICE(cuda_zero);
  be->copy = ON_DEVICE(cuda_copy);
  be->sync = ON_DEVICE(cuda_sync);
  be->host_alloc = ON_DEVICE(cuda_host_alloc);
  be->host_free = ON_DEVICE(cuda_host_free);
  be->upload_async = ON_DEVICE(cuda_upload_async);
  be->count_correct = ON_DEVICE(cuda_count_correct);
  be->destroy = ON_DEVICE(cuda_destroy);
  be->conv2d_workspace = ON_DEVICE(cuda_conv2d_workspace);
  be->conv2d_forward = ON_DEVICE(cuda_conv2d_forward);
  be->conv2d_backward_data = ON_DEVICE(cuda_conv2d_backward_data);
  be->conv2d_backward_filter = ON_DEVICE(cuda_conv2d_backward_filter);
  be->batchnorm_forward_train = ON_DEVICE(cuda_bn_forward_train);
  be->batchnorm_forward_eval = ON_DEVICE(cuda_bn_forward_eval);
  be->batchnorm_backward = ON_DEVICE(cuda_bn_backward);
  be->batchnorm_backward_eval = ON_DEVICE(cuda_bn_backward_eval);
  be->relu_forward = ON_DEVICE(cuda_relu_forward);
  be->relu_backward = ON_DEVICE(cuda_relu_backward);
  be->bias_act_forward = ON_DEVICE(cuda_bias_act_forward);
  be->conv_infer_create = ON_DEVICE(cuda_conv_infer_create);
  be->conv_infer_forward = ON_DEVICE(cuda_conv_infer_forward);
  be->conv_infer_free = ON_DEVICE(cuda_conv_infer_free);
  be->add = ON_DEVICE(cuda_add);
  be->quant_forward = ON_DEVICE(cuda_quant_forward);
  be->quant_backward = ON_DEVICE(cuda_quant_backward);
  be->maxpool_forward = ON_DEVICE(cuda_maxpool_forward);
  be->maxpool_backward = ON_DEVICE(cuda_maxpool_backward);
  be->avgpool_global_forward = ON_DEVICE(cuda_avgpool_global_forward);
  be->avgpool_global_backward = ON_DEVICE(cuda_avgpool_global_backward);
  be->linear_forward = ON_DEVICE(cuda_linear_forward);
  be->linear_backward = ON_DEVICE(cuda_linear_backward);
  be->softmax_xent = ON_DEVICE(cuda_softmax_xent);
  be->sgd_step = ON_DEVICE(cuda_sgd_step);
  be->normalize_u8 = ON_DEVICE(cuda_normalize_u8);
#ifdef BF_HAVE_NCCL
  be->comm_id_bytes = cuda_comm_id_bytes();
  be->comm_id_create = ON_DEVICE(cuda_comm_id_create);
  be->comm_init = ON_DEVICE(cuda_comm_init);
  be->allreduce = ON_DEVICE(cuda_allreduce);
#endif
  *out = be;
  return BF_OK;
}
