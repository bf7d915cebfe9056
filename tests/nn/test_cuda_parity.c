/* CPU/CUDA parity: every op of backend.h run on the "cpu" and "cuda" backends
 * with the same inputs on several shapes, outputs compared; then one whole
 * ResNet-50 + butterfly training step (forward, loss, backward, SGD) through
 * model.h on both backends, comparing logits, loss, gradients, parameters and
 * running statistics after the step.
 *
 * Error measure: max |cuda - cpu| / max(max |cpu|, 1e-6) per output tensor
 * (NaN in both at the same place counts as equal). Tolerances: 1e-4 for
 * everything compared at op level and for logits/loss/parameters/statistics
 * of the model step; 1e-3 for the model's raw gradients (a float32 backward
 * pass through 50+ layers with different summation orders: cuDNN algorithms
 * vs im2col + OpenBLAS). These tolerances are a first estimate written
 * without access to a GPU; see docs/cuda.md.
 *
 * Without a CUDA device (or in a build without the CUDA backend) the test
 * prints SKIP and exits with 77, which ctest reports as skipped
 * (SKIP_RETURN_CODE 77), never as passed.
 *
 * Usage: test_cuda_parity [--ops-only | --model-only] [--backend NAME] [--precision fp32|bf16]
 * --precision (default: the environment variable BF_CUDA_MATH, else fp32)
 * selects the CUDA arithmetic and the matching tolerances (g_tol below).
 * --backend compares another backend instead of "cuda" (e.g. "cpu" against
 * itself, which checks the harness: every error must be 0). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bf_core.h"
#include "model.h"

#define TOL 1e-4
#define TOL_GRAD 1e-3

/* Tolerances by precision mode (docs/cuda.md, "Parity tolerances"). fp32:
 * TOL everywhere, TOL_GRAD for raw model gradients. bf16 (--precision bf16):
 * only the convolutions change arithmetic; a bf16 rounding is <= 2^-9 = 2e-3
 * relative, a conv output carries about two of them (inputs, product) plus
 * one (the bf16 result): ~6e-3 worst case, 1e-2 allowed. The model step
 * compounds ~53 such layers, renormalised by BN after each: logits/loss 5e-2,
 * gradients 1e-1, BN running statistics 2e-2, parameters after one SGD step
 * 1e-3 (the update is small next to the parameters). */
typedef struct tolerances {
  double conv, logits, grad, param, stats;
} tolerances;
static tolerances g_tol = {TOL, TOL, TOL_GRAD, TOL, TOL};
static const tolerances TOL_BF16 = {1e-2, 5e-2, 1e-1, 1e-3, 2e-2};

static bf_backend *g_be[2]; /* [0] cpu (reference), [1] cuda */
static bf_rng g_rng;
static int g_pass, g_fail;

static void *xmalloc(size_t bytes) {
  void *p = calloc(1, bytes ? bytes : 1);
  if (!p) {
    fprintf(stderr, "test_cuda_parity: out of host memory (%zu bytes)\n", bytes);
    exit(2);
  }
  return p;
}

static void fill_normal(float *a, size_t n, double mean, double sd) {
  for (size_t i = 0; i < n; i++) a[i] = (float)(mean + sd * bf_rng_normal(&g_rng));
}

static void report(int ok, const char *name, double err, double tol, const char *note) {
  if (ok)
    g_pass++;
  else
    g_fail++;
  printf("%s %s  err=%.1e (tol %.0e)%s%s\n", ok ? "ok  " : "FAIL", name, err, tol, note && note[0] ? "  " : "",
         note ? note : "");
  fflush(stdout);
}

/* Relative error of `got` against `ref`. */
static double rel_err(const float *ref, const float *got, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    int nr = isnan(ref[i]), ng = isnan(got[i]);
    if (nr || ng) {
      if (nr != ng) return INFINITY;
      continue;
    }
    if (isinf(ref[i]) || isinf(got[i])) {
      if (ref[i] != got[i]) return INFINITY;
      continue;
    }
    double d = fabs((double)ref[i] - (double)got[i]), a = fabs((double)ref[i]);
    if (d > num) num = d;
    if (a > den) den = a;
  }
  return num / (den > 1e-6 ? den : 1e-6);
}

/* ------------------------------------------------------------------------ */
/* a buffer on both backends */

typedef struct pb {
  void *p[2];
  size_t bytes;
} pb;

static void die(const char *what) {
  fprintf(stderr, "test_cuda_parity: %s: %s\n", what, bf_last_error());
  printf("%d passed, %d failed\n", g_pass, g_fail + 1);
  exit(1);
}

/* host == NULL: both copies hold the same NaN pattern, so an element an op
 * forgets to write is non-finite on one side or both. */
static pb pb_new(size_t bytes, const void *host) {
  pb b;
  b.bytes = bytes;
  unsigned char *nan_fill = NULL;
  if (!host) {
    nan_fill = xmalloc(bytes);
    const float q = NAN;
    for (size_t i = 0; i + sizeof q <= bytes; i += sizeof q) memcpy(nan_fill + i, &q, sizeof q);
    host = nan_fill;
  }
  for (int s = 0; s < 2; s++) {
    b.p[s] = g_be[s]->alloc(g_be[s], bytes);
    if (!b.p[s]) die("alloc");
    if (bytes && g_be[s]->upload(g_be[s], b.p[s], host, bytes)) die("upload");
  }
  free(nan_fill);
  return b;
}

static void pb_set(pb *b, const void *host) {
  for (int s = 0; s < 2; s++)
    if (b->bytes && g_be[s]->upload(g_be[s], b->p[s], host, b->bytes)) die("upload");
}

static void pb_free(pb *b) {
  for (int s = 0; s < 2; s++)
    if (b->p[s]) g_be[s]->free(g_be[s], b->p[s]);
  b->p[0] = b->p[1] = NULL;
}

/* Downloads both copies of n floats and compares them. */
static int pb_check(const char *name, pb *b, size_t n, double tol) {
  float *h[2];
  for (int s = 0; s < 2; s++) {
    h[s] = xmalloc(n * sizeof(float));
    if (g_be[s]->sync(g_be[s]) || g_be[s]->download(g_be[s], h[s], b->p[s], n * sizeof(float))) die("download");
  }
  double e = rel_err(h[0], h[1], n);
  int ok = e <= tol;
  report(ok, name, e, tol, "");
  free(h[0]);
  free(h[1]);
  return ok;
}

/* Runs `expr` once per backend with `be` and `side` set (P(b) = that
 * backend's pointer of pair buffer b) and syncs; reports failures. */
#define P(b) ((float *)(b).p[side])
#define PV(b) ((b).p[side])
#define BOTH(name, expr)                                                                                          \
  do {                                                                                                            \
    int both_rc_ = 0;                                                                                             \
    for (int side = 0; side < 2; side++) {                                                                        \
      bf_backend *be = g_be[side];                                                                                \
      int rc_ = (expr);                                                                                           \
      if (!rc_) rc_ = be->sync(be);                                                                               \
      if (rc_) {                                                                                                  \
        char msg_[600];                                                                                           \
        snprintf(msg_, sizeof msg_, "%s returned %d: %s", be->name, rc_, bf_last_error());                        \
        report(0, name, 0, 0, msg_);                                                                              \
        both_rc_ = rc_;                                                                                           \
      }                                                                                                           \
    }                                                                                                             \
    op_ok_ = both_rc_ == 0;                                                                                       \
  } while (0)

static pb pb_rand(size_t n, double mean, double sd) {
  float *h = xmalloc(n * sizeof(float));
  fill_normal(h, n, mean, sd);
  pb b = pb_new(n * sizeof(float), h);
  free(h);
  return b;
}

/* ------------------------------------------------------------------------ */
/* convolution */

static void test_conv(int n, int h, int w, int c, int k, int ks, int stride, int pad) {
  int op_ok_;
  bf_conv_desc d;
  if (bf_conv_desc_init(&d, n, h, w, c, k, ks, ks, stride, pad)) die("bf_conv_desc_init");
  char tag[160], name[240];
  snprintf(tag, sizeof tag, "n%d %dx%dx%d->%d k%d s%d p%d", n, h, w, c, k, ks, stride, pad);
  size_t nx = (size_t)n * h * w * c, ny = (size_t)n * d.oh * d.ow * k, nw = (size_t)k * ks * ks * c;
  pb x = pb_rand(nx, 0, 1), wt = pb_rand(nw, 0, 0.2), dy = pb_rand(ny, 0, 1), dx0 = pb_rand(nx, 0, 1);
  pb y = pb_new(ny * 4, NULL), dx = pb_new(nx * 4, NULL), dxacc = pb_new(nx * 4, NULL), dw = pb_new(nw * 4, NULL);
  void *ws[2];
  size_t wsb[2];
  for (int s = 0; s < 2; s++) {
    if (g_be[s]->conv2d_workspace(g_be[s], &d, &wsb[s])) die("conv2d_workspace");
    ws[s] = wsb[s] ? g_be[s]->alloc(g_be[s], wsb[s]) : NULL;
    if (wsb[s] && !ws[s]) die("alloc workspace");
  }
  /* dxacc starts as dx0 on both sides (beta = 1 accumulates into it) */
  for (int s = 0; s < 2; s++)
    if (g_be[s]->copy(g_be[s], dxacc.p[s], dx0.p[s], nx * 4)) die("copy");

  snprintf(name, sizeof name, "conv2d_forward %s", tag);
  BOTH(name, be->conv2d_forward(be, &d, P(x), P(wt), P(y), ws[side], wsb[side]));
  if (op_ok_) pb_check(name, &y, ny, g_tol.conv);
  snprintf(name, sizeof name, "conv2d_backward_data beta0 %s", tag);
  BOTH(name, be->conv2d_backward_data(be, &d, P(dy), P(wt), P(dx), 0.0f, ws[side], wsb[side]));
  if (op_ok_) pb_check(name, &dx, nx, g_tol.conv);
  snprintf(name, sizeof name, "conv2d_backward_data beta1 %s", tag);
  BOTH(name, be->conv2d_backward_data(be, &d, P(dy), P(wt), P(dxacc), 1.0f, ws[side], wsb[side]));
  if (op_ok_) pb_check(name, &dxacc, nx, g_tol.conv);
  snprintf(name, sizeof name, "conv2d_backward_filter %s", tag);
  BOTH(name, be->conv2d_backward_filter(be, &d, P(x), P(dy), P(dw), ws[side], wsb[side]));
  if (op_ok_) pb_check(name, &dw, nw, g_tol.conv);

  for (int s = 0; s < 2; s++)
    if (ws[s]) g_be[s]->free(g_be[s], ws[s]);
  pb_free(&x), pb_free(&wt), pb_free(&dy), pb_free(&dx0), pb_free(&y), pb_free(&dx), pb_free(&dxacc), pb_free(&dw);
}

/* The fused inference conv, plain, with ReLU, and with a residual written
 * over by the output (y == residual, as the engine runs a block's last conv). */
static void test_conv_infer(int n, int h, int w, int c, int k, int ks, int stride, int pad) {
  int op_ok_;
  bf_conv_desc d;
  if (bf_conv_desc_init(&d, n, h, w, c, k, ks, ks, stride, pad)) die("bf_conv_desc_init");
  size_t nx = (size_t)n * h * w * c, ny = (size_t)n * d.oh * d.ow * k, nw = (size_t)k * ks * ks * c;
  pb x = pb_rand(nx, 0, 1), wt = pb_rand(nw, 0, 0.2), bias = pb_rand((size_t)k, 0, 0.5), res = pb_rand(ny, 0, 1);
  pb y = pb_new(ny * 4, NULL);
  for (int v = 0; v < 3; v++) {
    int relu = v > 0, with_res = v == 2;
    char name[240];
    snprintf(name, sizeof name, "conv_infer n%d %dx%dx%d->%d k%d s%d p%d%s%s", n, h, w, c, k, ks, stride, pad,
             relu ? " relu" : "", with_res ? " +res (y=res)" : "");
    bf_conv_infer *plan[2] = {NULL, NULL};
    void *ws[2] = {NULL, NULL};
    size_t wsb[2] = {0, 0};
    for (int s = 0; s < 2; s++) {
      if (g_be[s]->conv_infer_create(g_be[s], &d, wt.p[s], bias.p[s], relu, with_res, &plan[s], &wsb[s]))
        die("conv_infer_create");
      ws[s] = wsb[s] ? g_be[s]->alloc(g_be[s], wsb[s]) : NULL;
      if (wsb[s] && !ws[s]) die("alloc workspace");
      if (with_res && g_be[s]->copy(g_be[s], y.p[s], res.p[s], ny * 4)) die("copy");
    }
    BOTH(name, be->conv_infer_forward(be, plan[side], P(x), with_res ? P(y) : NULL, P(y), ws[side], wsb[side]));
    if (op_ok_) pb_check(name, &y, ny, g_tol.conv);
    for (int s = 0; s < 2; s++) {
      g_be[s]->conv_infer_free(g_be[s], plan[s]);
      if (ws[s]) g_be[s]->free(g_be[s], ws[s]);
    }
  }
  pb_free(&x), pb_free(&wt), pb_free(&bias), pb_free(&res), pb_free(&y);
}

/* ------------------------------------------------------------------------ */
/* batch norm */

/* xmean/xsd: the input's distribution. Off-centre inputs (xmean >> xsd) with
 * a gradient correlated with the normalised input are the case that exposed
 * the CPU's uncentred backward (commit 4e5df97): the exact dx is then small
 * next to its terms. */
static void test_bn_x(int rows, int c, int with_res, int relu, double xmean, double xsd) {
  int op_ok_;
  char tag[160], name[280];
  snprintf(tag, sizeof tag, "rows%d c%d%s%s x~N(%g,%g)", rows, c, with_res ? " +res" : "", relu ? " relu" : "", xmean,
           xsd);
  size_t nx = (size_t)rows * c;
  float *hx = xmalloc(nx * 4), *hdy = xmalloc(nx * 4);
  fill_normal(hx, nx, xmean, xsd);
  fill_normal(hdy, nx, 0, 1);
  if (xmean > 10 * xsd)
    for (size_t i = 0; i < nx; i++) hdy[i] = (float)(0.3 + (hx[i] - xmean) / xsd + 0.1 * hdy[i]);
  pb x = pb_new(nx * 4, hx), gamma = pb_rand((size_t)c, 1.0, 0.3), beta = pb_rand((size_t)c, 0.0, 0.3);
  pb res = pb_rand(nx, 0, 1), dy = pb_new(nx * 4, hdy);
  free(hx), free(hdy);
  pb rm = pb_rand((size_t)c, 0, 0.5), rv = pb_rand((size_t)c, 1.0, 0.1);
  pb y = pb_new(nx * 4, NULL), sm = pb_new((size_t)c * 4, NULL), si = pb_new((size_t)c * 4, NULL);
  pb ye = pb_new(nx * 4, NULL), dx = pb_new(nx * 4, NULL), dg = pb_new((size_t)c * 4, NULL),
     db = pb_new((size_t)c * 4, NULL);

  snprintf(name, sizeof name, "batchnorm_forward_train %s", tag);
  BOTH(name, be->batchnorm_forward_train(be, rows, c, P(x), P(gamma), P(beta), with_res ? P(res) : NULL, relu, P(y),
                                         P(sm), P(si), P(rm), P(rv), 0.1f, 1e-5f));
  if (op_ok_) {
    pb_check(name, &y, nx, TOL);
    snprintf(name, sizeof name, "batchnorm_forward_train save_mean %s", tag);
    pb_check(name, &sm, (size_t)c, TOL);
    snprintf(name, sizeof name, "batchnorm_forward_train save_invstd %s", tag);
    pb_check(name, &si, (size_t)c, TOL);
    snprintf(name, sizeof name, "batchnorm_forward_train running_mean %s", tag);
    pb_check(name, &rm, (size_t)c, TOL);
    snprintf(name, sizeof name, "batchnorm_forward_train running_var %s", tag);
    pb_check(name, &rv, (size_t)c, TOL);
  }
  snprintf(name, sizeof name, "batchnorm_forward_eval %s", tag);
  BOTH(name, be->batchnorm_forward_eval(be, rows, c, P(x), P(gamma), P(beta), P(rm), P(rv), with_res ? P(res) : NULL,
                                        relu, 1e-5f, P(ye)));
  if (op_ok_) pb_check(name, &ye, nx, TOL);
  /* backward through the train forward above; the ReLU mask is its output */
  snprintf(name, sizeof name, "batchnorm_backward %s", tag);
  BOTH(name, be->batchnorm_backward(be, rows, c, P(x), P(dy), relu ? P(y) : NULL, P(gamma), P(sm), P(si), P(dx),
                                    P(dg), P(db)));
  if (op_ok_) {
    pb_check(name, &dx, nx, TOL);
    snprintf(name, sizeof name, "batchnorm_backward dgamma %s", tag);
    pb_check(name, &dg, (size_t)c, TOL);
    snprintf(name, sizeof name, "batchnorm_backward dbeta %s", tag);
    pb_check(name, &db, (size_t)c, TOL);
  }
  /* eval-mode backward through the eval forward above (running statistics) */
  snprintf(name, sizeof name, "batchnorm_backward_eval %s", tag);
  BOTH(name, be->batchnorm_backward_eval(be, rows, c, P(x), P(dy), relu ? P(ye) : NULL, P(gamma), P(rm), P(rv),
                                         1e-5f, P(dx), P(dg), P(db)));
  if (op_ok_) {
    pb_check(name, &dx, nx, TOL);
    snprintf(name, sizeof name, "batchnorm_backward_eval dgamma %s", tag);
    pb_check(name, &dg, (size_t)c, TOL);
    snprintf(name, sizeof name, "batchnorm_backward_eval dbeta %s", tag);
    pb_check(name, &db, (size_t)c, TOL);
  }
  pb_free(&x), pb_free(&gamma), pb_free(&beta), pb_free(&res), pb_free(&dy), pb_free(&rm), pb_free(&rv);
  pb_free(&y), pb_free(&sm), pb_free(&si), pb_free(&ye), pb_free(&dx), pb_free(&dg), pb_free(&db);
}

static void test_bn(int rows, int c, int with_res, int relu) { test_bn_x(rows, c, with_res, relu, 0.5, 2.0); }

/* Synchronised BN (backend.h bn_sync) as rank 0 of 2: each backend's hook
 * adds the same sums of a second rank's batch (double, from the host) to its
 * own, through its download/upload (device memory on cuda). */
typedef struct sync_ctx {
  bf_backend *be;
  int calls;
  double *add[2]; /* [2c] each: forward (x, x^2), backward (g, g*x) */
} sync_ctx;

static int sync_hook(void *v, double *sums, size_t n) {
  sync_ctx *k = v;
  double *h = xmalloc(n * sizeof(double));
  int rc = k->be->download(k->be, h, sums, n * sizeof(double));
  const double *a = k->add[k->calls++ & 1];
  for (size_t i = 0; i < n; i++) h[i] += a[i];
  if (!rc) rc = k->be->upload(k->be, sums, h, n * sizeof(double));
  free(h);
  return rc;
}

static void test_bn_sync(int rows, int c, int relu) {
  int op_ok_;
  char tag[96], name[200];
  snprintf(tag, sizeof tag, "rows%d+%d c%d%s", rows, rows, c, relu ? " relu" : "");
  size_t nx = (size_t)rows * c;
  float *h = xmalloc(4 * nx * 4); /* x, dy of this rank, then of the other */
  fill_normal(h, 4 * nx, 0.5, 2.0);
  double *add = xmalloc(4 * (size_t)c * sizeof(double));
  for (int j = 0; j < 4 * c; j++) add[j] = 0;
  for (size_t i = 0; i < (size_t)rows; i++)
    for (int j = 0; j < c; j++) {
      double x = h[2 * nx + i * c + j], g = h[3 * nx + i * c + j];
      add[j] += x, add[c + j] += x * x, add[2 * c + j] += g, add[3 * c + j] += g * x;
    }
  sync_ctx k[2];
  for (int s = 0; s < 2; s++) {
    k[s] = (sync_ctx){g_be[s], 0, {add, add + 2 * c}};
    g_be[s]->bn_sync = sync_hook, g_be[s]->bn_sync_ctx = &k[s], g_be[s]->bn_sync_ranks = 2;
  }
  pb x = pb_new(nx * 4, h), dy = pb_new(nx * 4, h + nx), gamma = pb_rand((size_t)c, 1.0, 0.3),
     beta = pb_rand((size_t)c, 0.0, 0.3), rm = pb_rand((size_t)c, 0, 0.5), rv = pb_rand((size_t)c, 1.0, 0.1);
  pb y = pb_new(nx * 4, NULL), sm = pb_new((size_t)c * 4, NULL), si = pb_new((size_t)c * 4, NULL);
  pb dx = pb_new(nx * 4, NULL), dg = pb_new((size_t)c * 4, NULL), db = pb_new((size_t)c * 4, NULL);
  snprintf(name, sizeof name, "batchnorm_forward_train bn_sync %s", tag);
  BOTH(name, be->batchnorm_forward_train(be, rows, c, P(x), P(gamma), P(beta), NULL, relu, P(y), P(sm), P(si), P(rm),
                                         P(rv), 0.1f, 1e-5f));
  if (op_ok_) {
    pb_check(name, &y, nx, TOL);
    snprintf(name, sizeof name, "batchnorm_forward_train bn_sync save_invstd %s", tag);
    pb_check(name, &si, (size_t)c, TOL);
    snprintf(name, sizeof name, "batchnorm_forward_train bn_sync running_var %s", tag);
    pb_check(name, &rv, (size_t)c, TOL);
  }
  snprintf(name, sizeof name, "batchnorm_backward bn_sync %s", tag);
  BOTH(name, be->batchnorm_backward(be, rows, c, P(x), P(dy), relu ? P(y) : NULL, P(gamma), P(sm), P(si), P(dx),
                                    P(dg), P(db)));
  if (op_ok_) {
    pb_check(name, &dx, nx, TOL);
    snprintf(name, sizeof name, "batchnorm_backward bn_sync dgamma %s", tag);
    pb_check(name, &dg, (size_t)c, TOL);
  }
  report(k[0].calls == 2 && k[1].calls == 2, "bn_sync hook: one call per pass on each backend", 0, 0, "");
  for (int s = 0; s < 2; s++) g_be[s]->bn_sync = NULL, g_be[s]->bn_sync_ctx = NULL, g_be[s]->bn_sync_ranks = 0;
  pb_free(&x), pb_free(&dy), pb_free(&gamma), pb_free(&beta), pb_free(&rm), pb_free(&rv);
  pb_free(&y), pb_free(&sm), pb_free(&si), pb_free(&dx), pb_free(&dg), pb_free(&db);
  free(h), free(add);
}

/* ------------------------------------------------------------------------ */
/* elementwise */

static void test_elementwise(size_t n, int rows, int c) {
  int op_ok_;
  char name[200];
  pb x = pb_rand(n, 0, 1), b = pb_rand(n, 0, 1), dy = pb_rand(n, 0, 1);
  pb y = pb_new(n * 4, NULL), dx = pb_new(n * 4, NULL), s = pb_new(n * 4, NULL);
  snprintf(name, sizeof name, "relu_forward n%zu", n);
  BOTH(name, be->relu_forward(be, n, P(x), P(y)));
  if (op_ok_) pb_check(name, &y, n, TOL);
  snprintf(name, sizeof name, "relu_backward n%zu", n);
  BOTH(name, be->relu_backward(be, n, P(y), P(dy), P(dx)));
  if (op_ok_) pb_check(name, &dx, n, TOL);
  snprintf(name, sizeof name, "relu_backward in place (dx == dy) n%zu", n);
  BOTH(name, be->relu_backward(be, n, P(y), P(dy), P(dy)));
  if (op_ok_) pb_check(name, &dy, n, TOL);
  snprintf(name, sizeof name, "add n%zu", n);
  BOTH(name, be->add(be, n, P(x), P(b), P(s)));
  if (op_ok_) pb_check(name, &s, n, TOL);
  snprintf(name, sizeof name, "add in place (y == a) n%zu", n);
  BOTH(name, be->add(be, n, P(s), P(b), P(s)));
  if (op_ok_) pb_check(name, &s, n, TOL);

  size_t nr = (size_t)rows * c;
  pb bx = pb_rand(nr, 0, 1), bias = pb_rand((size_t)c, 0, 1), res = pb_rand(nr, 0, 1), by = pb_new(nr * 4, NULL);
  for (int relu = 0; relu < 2; relu++)
    for (int wr = 0; wr < 2; wr++) {
      snprintf(name, sizeof name, "bias_act_forward rows%d c%d%s%s", rows, c, wr ? " +res" : "", relu ? " relu" : "");
      BOTH(name, be->bias_act_forward(be, rows, c, P(bx), P(bias), wr ? P(res) : NULL, relu, P(by)));
      if (op_ok_) pb_check(name, &by, nr, TOL);
    }
  snprintf(name, sizeof name, "bias_act_forward in place (y == x) rows%d c%d", rows, c);
  BOTH(name, be->bias_act_forward(be, rows, c, P(bx), P(bias), P(res), 1, P(bx)));
  if (op_ok_) pb_check(name, &bx, nr, TOL);

  /* normalize_u8 */
  size_t pixels = n / 3 + 1;
  uint8_t *u = xmalloc(pixels * 3);
  for (size_t i = 0; i < pixels * 3; i++) u[i] = (uint8_t)bf_rng_below(&g_rng, 256);
  pb ub = pb_new(pixels * 3, u), uy = pb_new(pixels * 3 * 4, NULL);
  const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
  snprintf(name, sizeof name, "normalize_u8 pixels%zu", pixels);
  BOTH(name, be->normalize_u8(be, pixels, (const uint8_t *)PV(ub), mean, sd, P(uy)));
  if (op_ok_) pb_check(name, &uy, pixels * 3, TOL);
  free(u);

  /* memory ops: zero, copy (also overlapping, memmove semantics) */
  snprintf(name, sizeof name, "zero n%zu", n);
  BOTH(name, be->zero(be, P(y), n * 4));
  if (op_ok_) pb_check(name, &y, n, 0);
  snprintf(name, sizeof name, "copy n%zu", n);
  BOTH(name, be->copy(be, P(y), P(x), n * 4));
  if (op_ok_) pb_check(name, &y, n, 0);
  if (n > 8) {
    snprintf(name, sizeof name, "copy overlapping n%zu", n);
    BOTH(name, be->copy(be, P(y) + 3, P(y), (n - 3) * 4));
    if (op_ok_) pb_check(name, &y, n, 0);
  }
  pb_free(&x), pb_free(&b), pb_free(&dy), pb_free(&y), pb_free(&dx), pb_free(&s);
  pb_free(&bx), pb_free(&bias), pb_free(&res), pb_free(&by), pb_free(&ub), pb_free(&uy);
}

/* ------------------------------------------------------------------------ */
/* fake quantisation: one formula (quant_math.h) on both sides, so the codes
 * and outputs must be identical and dx (dy or 0) too; only the clip's
 * gradient is a sum in another order */

static void test_quant(size_t n, int bits, float clip) {
  int op_ok_;
  char name[200];
  float *h = xmalloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) h[i] = (float)((bf_rng_uniform(&g_rng) * 1.4 - 0.2) * clip);
  /* exact ties (k + 0.5) * s, the clip itself */
  const float sc = clip / (float)((1 << bits) - 1);
  for (size_t i = 0; i < n && i < 8; i++) h[i] = ((float)i + 0.5f) * sc;
  if (n > 9) h[8] = clip, h[9] = nextafterf(clip, 0.0f);
  pb x = pb_new(n * 4, h), c = pb_new(4, &clip), dy = pb_rand(n, 0.1, 1);
  pb y = pb_new(n * 4, NULL), q = pb_new(n, NULL), dx = pb_new(n * 4, NULL), dc = pb_new(4, NULL);
  snprintf(name, sizeof name, "quant_forward n%zu bits%d clip%g", n, bits, (double)clip);
  BOTH(name, be->quant_forward(be, n, P(x), P(c), bits, P(y), (uint8_t *)PV(q)));
  if (op_ok_) {
    pb_check(name, &y, n, 0);
    uint8_t *qq[2];
    for (int s = 0; s < 2; s++) {
      qq[s] = xmalloc(n);
      if (g_be[s]->download(g_be[s], qq[s], q.p[s], n)) die("download");
    }
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += qq[0][i] != qq[1][i];
    snprintf(name, sizeof name, "quant_forward codes n%zu bits%d", n, bits);
    report(bad == 0, name, (double)bad, 0, bad ? "codes differ" : "");
    free(qq[0]), free(qq[1]);
  }
  snprintf(name, sizeof name, "quant_backward dx n%zu bits%d", n, bits);
  BOTH(name, be->quant_backward(be, n, P(x), P(c), bits, P(dy), P(dx), P(dc)));
  if (op_ok_) {
    pb_check(name, &dx, n, 0);
    snprintf(name, sizeof name, "quant_backward dclip n%zu bits%d", n, bits);
    pb_check(name, &dc, 1, TOL);
  }
  snprintf(name, sizeof name, "quant_backward in place (dx == dy) n%zu bits%d", n, bits);
  BOTH(name, be->quant_backward(be, n, P(x), P(c), bits, P(dy), P(dy), P(dc)));
  if (op_ok_) pb_check(name, &dy, n, 0);
  free(h);
  pb_free(&x), pb_free(&c), pb_free(&dy), pb_free(&y), pb_free(&q), pb_free(&dx), pb_free(&dc);
}

/* ------------------------------------------------------------------------ */
/* pooling */

static void test_maxpool(int n, int h, int w, int c, int k, int stride, int pad, int ties) {
  int op_ok_;
  bf_pool_desc d;
  if (bf_pool_desc_init(&d, n, h, w, c, k, stride, pad)) die("bf_pool_desc_init");
  char tag[160], name[240];
  snprintf(tag, sizeof tag, "n%d %dx%dx%d k%d s%d p%d%s", n, h, w, c, k, stride, pad, ties ? " ties+nan" : "");
  size_t nx = (size_t)n * h * w * c, ny = (size_t)n * d.oh * d.ow * c;
  float *hx = xmalloc(nx * 4);
  fill_normal(hx, nx, 0, 1);
  if (ties) { /* few distinct values: many equal maxima; a few NaNs */
    for (size_t i = 0; i < nx; i++) hx[i] = (float)floor(hx[i] * 2.0);
    for (size_t i = 7; i < nx; i += 97) hx[i] = NAN;
  }
  pb x = pb_new(nx * 4, hx), dy = pb_rand(ny, 0, 1), y = pb_new(ny * 4, NULL), dx = pb_new(nx * 4, NULL);
  snprintf(name, sizeof name, "maxpool_forward %s", tag);
  BOTH(name, be->maxpool_forward(be, &d, P(x), P(y)));
  if (op_ok_) pb_check(name, &y, ny, TOL);
  snprintf(name, sizeof name, "maxpool_backward %s", tag);
  BOTH(name, be->maxpool_backward(be, &d, P(x), P(dy), P(dx)));
  if (op_ok_) pb_check(name, &dx, nx, TOL);
  free(hx);
  pb_free(&x), pb_free(&dy), pb_free(&y), pb_free(&dx);
}

static void test_avgpool(int n, int hw, int c) {
  int op_ok_;
  char name[200];
  size_t nx = (size_t)n * hw * c, ny = (size_t)n * c;
  pb x = pb_rand(nx, 0, 1), dy = pb_rand(ny, 0, 1), y = pb_new(ny * 4, NULL), dx = pb_new(nx * 4, NULL);
  snprintf(name, sizeof name, "avgpool_global_forward n%d hw%d c%d", n, hw, c);
  BOTH(name, be->avgpool_global_forward(be, n, hw, c, P(x), P(y)));
  if (op_ok_) pb_check(name, &y, ny, TOL);
  snprintf(name, sizeof name, "avgpool_global_backward n%d hw%d c%d", n, hw, c);
  BOTH(name, be->avgpool_global_backward(be, n, hw, c, P(dy), P(dx)));
  if (op_ok_) pb_check(name, &dx, nx, TOL);
  pb_free(&x), pb_free(&dy), pb_free(&y), pb_free(&dx);
}

/* ------------------------------------------------------------------------ */
/* linear, loss, sgd */

static void test_linear(int n, int in, int out) {
  int op_ok_;
  char tag[80], name[200];
  snprintf(tag, sizeof tag, "n%d in%d out%d", n, in, out);
  size_t nx = (size_t)n * in, nw = (size_t)out * in, ny = (size_t)n * out;
  pb x = pb_rand(nx, 0, 1), w = pb_rand(nw, 0, 0.1), b = pb_rand((size_t)out, 0, 1), dy = pb_rand(ny, 0, 1);
  pb y = pb_new(ny * 4, NULL), dx = pb_new(nx * 4, NULL), dw = pb_new(nw * 4, NULL), db = pb_new((size_t)out * 4, NULL);
  snprintf(name, sizeof name, "linear_forward %s", tag);
  BOTH(name, be->linear_forward(be, n, in, out, P(x), P(w), P(b), P(y)));
  if (op_ok_) pb_check(name, &y, ny, TOL);
  snprintf(name, sizeof name, "linear_backward %s", tag);
  BOTH(name, be->linear_backward(be, n, in, out, P(x), P(w), P(dy), P(dx), P(dw), P(db)));
  if (op_ok_) {
    pb_check(name, &dx, nx, TOL);
    snprintf(name, sizeof name, "linear_backward dw %s", tag);
    pb_check(name, &dw, nw, TOL);
    snprintf(name, sizeof name, "linear_backward db %s", tag);
    pb_check(name, &db, (size_t)out, TOL);
  }
  snprintf(name, sizeof name, "linear_backward dx=NULL %s", tag);
  BOTH(name, be->linear_backward(be, n, in, out, P(x), P(w), P(dy), NULL, P(dw), P(db)));
  if (op_ok_) pb_check(name, &dw, nw, TOL);
  pb_free(&x), pb_free(&w), pb_free(&b), pb_free(&dy), pb_free(&y), pb_free(&dx), pb_free(&dw), pb_free(&db);
}

static void test_xent(int n, int c, float smoothing, double scale) {
  int op_ok_;
  char tag[80], name[200];
  snprintf(tag, sizeof tag, "n%d c%d s%.2g scale%.0f", n, c, (double)smoothing, scale);
  size_t nl = (size_t)n * c;
  int32_t *lab = xmalloc((size_t)n * 4);
  for (int i = 0; i < n; i++) lab[i] = (int32_t)bf_rng_below(&g_rng, (uint32_t)c);
  pb l = pb_rand(nl, 0, scale), lb = pb_new((size_t)n * 4, lab), loss = pb_new(4, NULL), dl = pb_new(nl * 4, NULL);
  snprintf(name, sizeof name, "softmax_xent loss %s", tag);
  BOTH(name, be->softmax_xent(be, n, c, P(l), (const int32_t *)PV(lb), smoothing, P(loss), P(dl)));
  if (op_ok_) {
    pb_check(name, &loss, 1, TOL);
    snprintf(name, sizeof name, "softmax_xent dlogits %s", tag);
    pb_check(name, &dl, nl, TOL);
  }
  snprintf(name, sizeof name, "softmax_xent dlogits=NULL %s", tag);
  BOTH(name, be->softmax_xent(be, n, c, P(l), (const int32_t *)PV(lb), smoothing, P(loss), NULL));
  if (op_ok_) pb_check(name, &loss, 1, TOL);

  /* an out-of-range label: rejected by the op or the next sync (BF_EINVAL,
   * same message as the CPU); the backend keeps working afterwards */
  int32_t *bad = xmalloc((size_t)n * 4);
  memcpy(bad, lab, (size_t)n * 4);
  bad[n / 2] = c;
  pb_set(&lb, bad);
  char msg[2][300];
  int rc[2];
  for (int s = 0; s < 2; s++) {
    bf_clear_error();
    rc[s] = g_be[s]->softmax_xent(g_be[s], n, c, l.p[s], lb.p[s], smoothing, loss.p[s], dl.p[s]);
    if (!rc[s]) rc[s] = g_be[s]->sync(g_be[s]);
    snprintf(msg[s], sizeof msg[s], "%s", bf_last_error());
  }
  snprintf(name, sizeof name, "softmax_xent bad label %s", tag);
  {
    char note[700];
    snprintf(note, sizeof note, "cpu rc=%d \"%s\", cuda rc=%d \"%s\"", rc[0], msg[0], rc[1], msg[1]);
    report(rc[1] == BF_EINVAL && rc[0] == rc[1] && strcmp(msg[0], msg[1]) == 0, name, 0, 0, note);
  }
  pb_set(&lb, lab);
  snprintf(name, sizeof name, "softmax_xent after bad label %s", tag);
  BOTH(name, be->softmax_xent(be, n, c, P(l), (const int32_t *)PV(lb), smoothing, P(loss), P(dl)));
  if (op_ok_) pb_check(name, &loss, 1, TOL);
  free(lab);
  free(bad);
  pb_free(&l), pb_free(&lb), pb_free(&loss), pb_free(&dl);
}

/* count_correct: integer-valued logits (many ties: the first maximum wins),
 * a NaN row and an out-of-range label; the count must be equal, not close. */
static void test_count_correct(int n, int c) {
  int op_ok_;
  char name[120];
  float *l = xmalloc((size_t)n * c * 4);
  int32_t *lab = xmalloc((size_t)n * 4);
  for (size_t i = 0; i < (size_t)n * c; i++) l[i] = (float)bf_rng_below(&g_rng, 3);
  for (int i = 0; i < n; i++) lab[i] = (int32_t)bf_rng_below(&g_rng, (uint32_t)c);
  l[(size_t)(n / 2) * c + c / 2] = NAN;
  lab[n - 1] = c; /* never matches */
  pb pl = pb_new((size_t)n * c * 4, l), plab = pb_new((size_t)n * 4, lab), out = pb_new(4, NULL);
  snprintf(name, sizeof name, "count_correct n%d c%d", n, c);
  BOTH(name, be->count_correct(be, n, c, P(pl), (const int32_t *)PV(plab), P(out)));
  if (op_ok_) pb_check(name, &out, 1, 0.0);
  free(l), free(lab);
  pb_free(&pl), pb_free(&plab), pb_free(&out);
}

/* upload_async from host_alloc memory into a buffer, then normalize_u8 on it:
 * the shared formula (pixel_math.h) must give the same floats bit for bit. */
static void test_upload_async_normalize(size_t pixels) {
  int op_ok_;
  char name[120];
  const size_t nb = pixels * 3;
  pb u = pb_new(nb, NULL), y = pb_new(nb * 4, NULL);
  for (int s = 0; s < 2; s++) {
    uint8_t *h = g_be[s]->host_alloc(g_be[s], nb);
    if (!h) die("host_alloc");
    bf_rng r;
    bf_rng_seed(&r, 99);
    for (size_t i = 0; i < nb; i++) h[i] = (uint8_t)bf_rng_below(&r, 256);
    if (g_be[s]->upload_async(g_be[s], u.p[s], h, nb) || g_be[s]->sync(g_be[s])) die("upload_async");
    g_be[s]->host_free(g_be[s], h);
  }
  const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
  snprintf(name, sizeof name, "upload_async + normalize_u8 (bitwise) pixels%zu", pixels);
  BOTH(name, be->normalize_u8(be, pixels, (const uint8_t *)PV(u), mean, sd, P(y)));
  if (op_ok_) pb_check(name, &y, nb, 0.0);
  pb_free(&u), pb_free(&y);
}

static void test_sgd(size_t n, float momentum, int nesterov, float wd) {
  int op_ok_;
  char tag[120], name[200];
  snprintf(tag, sizeof tag, "n%zu mom%.2g%s wd%.0e", n, (double)momentum, nesterov ? " nesterov" : "", (double)wd);
  pb p = pb_rand(n, 0, 1), g = pb_rand(n, 0, 1), m = pb_rand(n, 0, 1);
  bf_sgd_params hp = {0.1f, momentum, wd, nesterov};
  for (int step = 0; step < 3; step++) {
    snprintf(name, sizeof name, "sgd_step %s step%d", tag, step);
    BOTH(name, be->sgd_step(be, n, P(p), P(g), P(m), &hp));
    if (!op_ok_) break;
  }
  snprintf(name, sizeof name, "sgd_step params %s", tag);
  pb_check(name, &p, n, TOL);
  snprintf(name, sizeof name, "sgd_step momentum %s", tag);
  pb_check(name, &m, n, TOL);
  pb_free(&p), pb_free(&g), pb_free(&m);
}

/* ------------------------------------------------------------------------ */
/* whole model: one training step on both backends */

static void check_host(const char *name, const float *ref, const float *got, size_t n, double tol) {
  double e = rel_err(ref, got, n);
  report(e <= tol, name, e, tol, "");
}

static void test_model_step(int split_after, int d_r, int classes, int n, int hw) {
  char tag[120], name[300];
  snprintf(tag, sizeof tag, "resnet50 split%d dr%d classes%d n%d %dx%d", split_after, d_r, classes, n, hw, hw);
  bf_model_config cfg = {classes, split_after, d_r, 0};
  bf_model *m[2] = {NULL, NULL};
  size_t npix = (size_t)n * hw * hw * 3, nl = (size_t)n * classes;
  float *input = xmalloc(npix * 4), *logits[2], loss[2];
  int32_t *labels = xmalloc((size_t)n * 4);
  fill_normal(input, npix, 0, 1);
  for (int i = 0; i < n; i++) labels[i] = (int32_t)bf_rng_below(&g_rng, (uint32_t)classes);
  bf_sgd_params hp = {0.1f, 0.9f, 1e-4f, 0};
  for (int s = 0; s < 2; s++) {
    bf_backend *be = g_be[s];
    logits[s] = xmalloc(nl * 4);
    if (bf_model_create(&m[s], be, &cfg) || bf_model_init(m[s], 1234) || bf_model_plan(m[s], n, hw, hw) ||
        be->upload(be, bf_model_input(m[s]), input, npix * 4) ||
        be->upload(be, bf_model_labels(m[s]), labels, (size_t)n * 4))
      die("model setup");
    double t0 = bf_now_sec();
    if (bf_model_forward(m[s], 1) ||
        be->download(be, logits[s], bf_model_logits(m[s]), nl * 4) || bf_model_loss(m[s], 0.1f, &loss[s]) ||
        bf_model_backward(m[s]) || be->sync(be)) {
      snprintf(name, sizeof name, "model train step on %s: %s", be->name, bf_last_error());
      report(0, tag, 0, 0, name);
      goto done;
    }
    printf("     %s: forward+loss+backward %.3f s\n", be->name, bf_now_sec() - t0);
  }
  snprintf(name, sizeof name, "model logits %s", tag);
  check_host(name, logits[0], logits[1], nl, g_tol.logits);
  snprintf(name, sizeof name, "model loss %s", tag);
  check_host(name, &loss[0], &loss[1], 1, g_tol.logits);

  /* gradients (before the step), then parameters and statistics after it */
  int ne = bf_model_num_entries(m[0]);
  double worst_g = 0, worst_p = 0, worst_s = 0;
  char worst_g_name[64] = "", worst_p_name[64] = "", worst_s_name[64] = "";
  for (int pass = 0; pass < 2; pass++) {
    if (pass == 1)
      for (int s = 0; s < 2; s++)
        if (bf_model_sgd(m[s], &hp, 1) || g_be[s]->sync(g_be[s])) die("model sgd");
    for (int i = 0; i < ne; i++) {
      const bf_entry *e = bf_model_entry(m[0], i);
      if (e->kind == BF_ENTRY_COUNTER) continue;
      if (pass == 0 && e->kind != BF_ENTRY_PARAM) continue;
      float *h[2];
      for (int s = 0; s < 2; s++) {
        h[s] = xmalloc(e->numel * 4);
        if (bf_model_entry_get(m[s], bf_model_entry(m[s], i), pass == 0, h[s])) die("bf_model_entry_get");
      }
      double err = rel_err(h[0], h[1], e->numel);
      double *worst = pass == 0 ? &worst_g : (e->kind == BF_ENTRY_PARAM ? &worst_p : &worst_s);
      char *wname = pass == 0 ? worst_g_name : (e->kind == BF_ENTRY_PARAM ? worst_p_name : worst_s_name);
      if (!(err <= *worst)) { /* also catches NaN */
        *worst = err;
        snprintf(wname, 64, "%s", e->name);
      }
      free(h[0]);
      free(h[1]);
    }
  }
  snprintf(name, sizeof name, "model grads (worst: %s) %s", worst_g_name, tag);
  report(worst_g <= g_tol.grad, name, worst_g, g_tol.grad, "");
  snprintf(name, sizeof name, "model params after SGD (worst: %s) %s", worst_p_name, tag);
  report(worst_p <= g_tol.param, name, worst_p, g_tol.param, "");
  snprintf(name, sizeof name, "model running stats (worst: %s) %s", worst_s_name, tag);
  report(worst_s <= g_tol.stats, name, worst_s, g_tol.stats, "");

  /* eval-mode forward with the updated parameters and running statistics */
  for (int s = 0; s < 2; s++)
    if (bf_model_forward(m[s], 0) || g_be[s]->download(g_be[s], logits[s], bf_model_logits(m[s]), nl * 4))
      die("model eval forward");
  snprintf(name, sizeof name, "model eval logits after step %s", tag);
  check_host(name, logits[0], logits[1], nl, g_tol.logits);

  /* eval-mode gradients (frozen BN: through the running statistics) */
  for (int s = 0; s < 2; s++)
    if (bf_model_loss(m[s], 0.1f, NULL) || bf_model_backward(m[s]) || g_be[s]->sync(g_be[s]))
      die("model eval backward");
  worst_g = 0;
  for (int i = 0; i < ne; i++) {
    const bf_entry *e = bf_model_entry(m[0], i);
    if (e->kind != BF_ENTRY_PARAM) continue;
    float *h[2];
    for (int s = 0; s < 2; s++) {
      h[s] = xmalloc(e->numel * 4);
      if (bf_model_entry_get(m[s], bf_model_entry(m[s], i), 1, h[s])) die("bf_model_entry_get");
    }
    double err = rel_err(h[0], h[1], e->numel);
    if (!(err <= worst_g)) { /* also catches NaN */
      worst_g = err;
      snprintf(worst_g_name, sizeof worst_g_name, "%s", e->name);
    }
    free(h[0]);
    free(h[1]);
  }
  snprintf(name, sizeof name, "model eval-mode grads (worst: %s) %s", worst_g_name, tag);
  report(worst_g <= g_tol.grad, name, worst_g, g_tol.grad, "");
done:
  for (int s = 0; s < 2; s++) {
    bf_model_free(m[s]);
    free(logits[s]);
  }
  free(input);
  free(labels);
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv) {
  int ops = 1, model = 1;
  const char *other = "cuda", *precision = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--ops-only"))
      model = 0;
    else if (!strcmp(argv[i], "--model-only"))
      ops = 0;
    else if (!strcmp(argv[i], "--backend") && i + 1 < argc)
      other = argv[++i];
    else if (!strcmp(argv[i], "--precision") && i + 1 < argc)
      precision = argv[++i];
    else {
      fprintf(stderr, "usage: test_cuda_parity [--ops-only | --model-only] [--backend NAME] [--precision fp32|bf16]\n");
      return 2;
    }
  }
  if (!precision) precision = getenv("BF_CUDA_MATH");
  if (precision && !strcmp(precision, "bf16")) g_tol = TOL_BF16;
  setvbuf(stdout, NULL, _IOLBF, 0);
  int rc = bf_backend_create_precision(&g_be[1], other, 0, precision);
  if (rc) {
    const char *msg = bf_last_error();
    if (rc == BF_EUNSUP || (rc == BF_EBACKEND && strstr(msg, "no CUDA device"))) {
      printf("SKIP: %s\n", msg);
      return 77;
    }
    printf("FAIL bf_backend_create(\"%s\"): %s\n", other, msg);
    return 1;
  }
  if (bf_backend_create(&g_be[0], "cpu", 0)) die("bf_backend_create(cpu)");
  printf("comparing backend %s (precision %s) against %s (%d threads)\n", g_be[1]->name,
         precision ? precision : "fp32", g_be[0]->name, g_be[0]->threads);
  bf_rng_seed(&g_rng, 20240611);

  if (ops) {
    /* convolutions: ResNet shapes (1x1, 3x3, strided 1x1 projection, 7x7 stem)
     * and odd ones */
    test_conv(2, 9, 9, 5, 7, 3, 1, 1);
    test_conv(2, 8, 8, 16, 32, 1, 1, 0);
    test_conv(2, 15, 15, 8, 16, 3, 2, 1);
    test_conv(2, 16, 16, 16, 32, 1, 2, 0);
    test_conv(2, 32, 32, 3, 16, 7, 2, 3);
    test_conv(1, 7, 7, 4, 6, 3, 1, 0);
    test_conv(4, 28, 28, 64, 64, 3, 1, 1);
    test_conv_infer(1, 9, 9, 5, 7, 3, 1, 1);
    test_conv_infer(2, 15, 15, 8, 16, 3, 2, 1);
    test_conv_infer(1, 16, 16, 16, 32, 1, 2, 0);
    test_conv_infer(1, 32, 32, 3, 16, 7, 2, 3);
    test_conv_infer(2, 14, 14, 64, 64, 1, 1, 0);
    /* batch norm: tiny, odd channel counts, many rows (multi-chunk reduction) */
    for (int relu = 0; relu < 2; relu++)
      for (int res = 0; res < 2; res++) test_bn(50, 7, res, relu);
    test_bn(3, 33, 1, 1);
    test_bn(1000, 64, 0, 1);
    test_bn(20000, 256, 1, 1);
    test_bn(100003, 64, 0, 1);
    test_bn(98, 2048, 1, 0);
    /* badly centred (mean/sd 600 and 1000), single and multi-chunk reductions */
    for (int relu = 0; relu < 2; relu++) test_bn_x(392, 19, relu, relu, 30.0, 0.05);
    test_bn_x(50000, 64, 1, 1, 100.0, 0.1);
    test_bn_sync(1000, 64, 1); /* G > 1 row chunks: the collapse before the hook */
    test_bn_sync(3, 33, 0);
    for (int bits = 2; bits <= 8; bits += 3) test_quant(1000, bits, 2.37f);
    test_quant(1, 4, 1.0f);
    test_quant(100003, 8, 0.73f);
    test_elementwise(1, 1, 1);
    test_elementwise(1000, 25, 40);
    test_elementwise(1 << 20, 4096, 256);
    test_maxpool(2, 9, 9, 5, 3, 2, 1, 0);
    test_maxpool(2, 9, 9, 5, 3, 2, 1, 1);
    test_maxpool(1, 8, 8, 3, 2, 2, 0, 0);
    test_maxpool(2, 7, 7, 4, 3, 1, 1, 1);
    test_maxpool(2, 32, 32, 64, 3, 2, 1, 0);
    test_avgpool(2, 9, 5);
    test_avgpool(4, 49, 2048);
    test_linear(3, 17, 5);
    test_linear(8, 2048, 1000);
    test_linear(1, 1, 1);
    test_xent(4, 10, 0.0f, 1);
    test_xent(7, 1000, 0.1f, 3);
    test_xent(300, 3, 0.2f, 10);
    test_count_correct(1, 1);
    test_count_correct(37, 10);
    test_count_correct(600, 1000);
    test_upload_async_normalize(1);
    test_upload_async_normalize(3 * 224 * 224 + 5);
    test_sgd(1000, 0.0f, 0, 0.0f);
    test_sgd(1000, 0.0f, 0, 1e-4f);
    test_sgd(100001, 0.9f, 0, 1e-4f);
    test_sgd(4097, 0.9f, 1, 5e-5f);
  }
  if (model) {
    /* small images keep the CPU side fast; n*h*w of the last stage must be >= 2 */
    test_model_step(5, 64, 10, 4, 64);
    test_model_step(0, 0, 7, 2, 96);
  }
  printf("%d passed, %d failed\n", g_pass, g_fail);
  bf_backend_destroy(g_be[0]);
  bf_backend_destroy(g_be[1]);
  return g_fail ? 1 : 0;
}
