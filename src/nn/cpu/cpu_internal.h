/* Private to the CPU backend: the context's state (thread count, scratch) and
 * the op entry points that cpu_backend.c installs in the table. */
#ifndef BF_CPU_INTERNAL_H
#define BF_CPU_INTERNAL_H

#include <omp.h>

#include "backend.h"

typedef struct cpu_impl {
  int threads; /* this context's OpenMP team size (and so OpenBLAS's) */
  /* Per-thread reduction scratch (doubles), grown on first use of a shape and
   * then reused, so the steady-state training step allocates nothing. */
  double *red;
  size_t red_len;
  /* oneDNN engine and stream of this context (cpu_conv_infer.c), made on
   * first use; void * so that only that file needs oneDNN's header. */
  void *dnnl_engine, *dnnl_stream;
  /* oneDNN-packed weights shared by the plans of one layer (an engine keeps a
   * plan per batch size; oneDNN mostly picks the same packed layout for
   * each): a list of refcounted entries (cpu_conv_infer.c). */
  struct cpu_packed *packed;
} cpu_impl;

/* Every computing op starts here. OpenMP's thread count (nthreads-var) is a
 * per-thread setting, and the OpenMP build of OpenBLAS sizes its team from the
 * calling thread's omp_get_max_threads(), so setting it on entry bounds both
 * our loops and BLAS to this context's threads, whichever thread calls and
 * whatever other contexts run meanwhile. Returns the thread count. */
static inline int cpu_enter(bf_backend *be) {
  int t = ((cpu_impl *)be->impl)->threads;
  omp_set_num_threads(t);
  return t;
}

/* Returns scratch of at least n doubles (NULL + message if allocation fails). */
double *cpu_scratch(bf_backend *be, size_t n);

int cpu_conv2d_workspace(bf_backend *be, const bf_conv_desc *d, size_t *bytes);
int cpu_conv2d_forward(bf_backend *be, const bf_conv_desc *d, const float *x, const float *w, float *y, void *ws,
                       size_t ws_bytes);
/* The same with y = beta*y + conv (beta 0 or 1; the inference conv's residual). */
int cpu_conv2d_forward_beta(bf_backend *be, const bf_conv_desc *d, const float *x, const float *w, float *y,
                            float beta, void *ws, size_t ws_bytes);
int cpu_conv2d_backward_data(bf_backend *be, const bf_conv_desc *d, const float *dy, const float *w, float *dx,
                             float beta, void *ws, size_t ws_bytes);
int cpu_conv2d_backward_filter(bf_backend *be, const bf_conv_desc *d, const float *x, const float *dy, float *dw,
                               void *ws, size_t ws_bytes);

int cpu_conv_infer_create(bf_backend *be, const bf_conv_desc *d, const float *w, const float *bias, int relu,
                          int has_residual, bf_conv_infer **out, size_t *ws_bytes);
int cpu_conv_infer_forward(bf_backend *be, bf_conv_infer *p, const float *x, const float *residual, float *y,
                           void *ws, size_t ws_bytes);
void cpu_conv_infer_free(bf_backend *be, bf_conv_infer *p);
void cpu_dnnl_release(cpu_impl *im);
int cpu_bias_act_forward(bf_backend *be, int rows, int c, const float *x, const float *bias, const float *residual,
                         int relu, float *y);

int cpu_bn_forward_train(bf_backend *be, int rows, int c, const float *x, const float *gamma, const float *beta,
                         const float *residual, int relu, float *y, float *save_mean, float *save_invstd,
                         float *running_mean, float *running_var, float momentum, float eps);
int cpu_bn_forward_eval(bf_backend *be, int rows, int c, const float *x, const float *gamma, const float *beta,
                        const float *running_mean, const float *running_var, const float *residual, int relu,
                        float eps, float *y);
int cpu_bn_backward(bf_backend *be, int rows, int c, const float *x, const float *dy, const float *relu_out,
                    const float *gamma, const float *save_mean, const float *save_invstd, float *dx, float *dgamma,
                    float *dbeta);
int cpu_bn_backward_eval(bf_backend *be, int rows, int c, const float *x, const float *dy, const float *relu_out,
                         const float *gamma, const float *running_mean, const float *running_var, float eps,
                         float *dx, float *dgamma, float *dbeta);

#endif
