/* Independent reference test of every backend op (src/nn/backend.h).
 *
 * Each op is compared with naive nested loops written here in double
 * precision (NHWC activations, OHWI conv weights), forward and backward, on
 * odd shapes, stride 2 and padding; the backward ops are also checked against
 * central finite differences of the backend's own forward pass.
 *
 * Every backend buffer is allocated with GUARD sentinel bytes on both sides;
 * output interiors start as the same NaN pattern, so an element an op forgets
 * to write shows up as non-finite, and a write out of bounds shows up when the
 * buffer is freed. Buffers that are pure inputs are also checked to be left
 * unchanged.
 *
 * Usage: test_ops [backend]   (default "cpu"). Prints one line per check and
 * a final "N passed, M failed"; exits 1 if anything failed. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bf_core.h"
#include "bn_math.h"

#define GUARD 256 /* sentinel bytes before and after each backend buffer (keeps 64-byte alignment) */

/* Tolerances: max |ours - ref| / max(max |ref|, 1e-6). */
#define TOL_GEMM 1e-4 /* float32 sums of up to a few hundred terms, any order */
#define TOL_RED 1e-5  /* short reductions (pooling, softmax, batch-norm statistics) */
#define TOL_EW 1e-6   /* elementwise */
#define TOL_SGD 2e-6  /* a few float ops on O(1) values, relative to max(max |ref|, 1) */
/* Finite differences (step FD_STEP, float32 forward): the observed error is
 * ~1e-5; a missing term (e.g. the mean term of the batch-norm backward, the
 * s/C term of label smoothing) gives > 2e-2. */
#define TOL_FD_LIN 1e-3 /* ops linear in the perturbed input: no truncation error */
#define TOL_FD 3e-3     /* smooth non-linear ops (batch norm, softmax) */
#define FD_STEP 1e-2

static bf_backend *g_be;
static bf_rng g_rng;
static int g_pass, g_fail;
static int g_nbufs, g_nbad_bufs;
static unsigned char g_pat[4]; /* bytes of the float NaN 0x7fc0dead */
static char g_case[256];       /* names the buffers of the case being run */

/* ------------------------------------------------------------------------ */
/* host helpers */

static void *xmalloc(size_t bytes) {
  void *p = calloc(1, bytes ? bytes : 1);
  if (!p) {
    fprintf(stderr, "test_ops: out of host memory (%zu bytes)\n", bytes);
    exit(2);
  }
  return p;
}
static float *fal(size_t n) { return xmalloc(n * sizeof(float)); }
static double *dal(size_t n) { return xmalloc(n * sizeof(double)); }

static void fill_normal(float *a, size_t n, double mean, double sd) {
  for (size_t i = 0; i < n; i++) a[i] = (float)(mean + sd * bf_rng_normal(&g_rng));
}
static void fill_uniform(float *a, size_t n, double lo, double hi) {
  for (size_t i = 0; i < n; i++) a[i] = (float)(lo + (hi - lo) * bf_rng_uniform(&g_rng));
}
static double dot_fd(const float *a, const float *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
  return s;
}

/* ------------------------------------------------------------------------ */
/* reporting */

static void report(int ok, const char *name, double err, double tol, const char *note) {
  if (ok)
    g_pass++;
  else
    g_fail++;
  printf("%s %s  err=%.1e (tol %.0e)%s%s\n", ok ? "ok  " : "FAIL", name, err, tol, note[0] ? "  " : "", note);
}

static void fail_msg(const char *name, const char *msg) {
  g_fail++;
  printf("FAIL %s  %s\n", name, msg);
}

/* Compares float output `ours` with reference `ref`; both must be finite.
 * err = max |ours - ref| / max(max |ref|, floor). */
static int check_close_f(const char *name, const float *ours, const double *ref, size_t n, double tol, double floor) {
  double maxref = 0, maxerr = 0;
  size_t worst = 0;
  char note[200] = "";
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(ref[i])) {
      snprintf(note, sizeof note, "reference non-finite at [%zu]", i);
      report(0, name, INFINITY, tol, note);
      return 0;
    }
    if (!isfinite(ours[i])) {
      snprintf(note, sizeof note, "non-finite output at [%zu] = %g (want %.7g)", i, (double)ours[i], ref[i]);
      report(0, name, INFINITY, tol, note);
      return 0;
    }
    if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    double e = fabs((double)ours[i] - ref[i]);
    if (e > maxerr) {
      maxerr = e;
      worst = i;
    }
  }
  double err = maxerr / (maxref > floor ? maxref : floor);
  int ok = err <= tol;
  if (!ok)
    snprintf(note, sizeof note, "worst at [%zu]: got %.7g want %.7g (max|ref| %.3g)", worst, (double)ours[worst],
             ref[worst], maxref);
  report(ok, name, err, tol, note);
  return ok;
}

static int check_close(const char *name, const float *ours, const double *ref, size_t n, double tol) {
  return check_close_f(name, ours, ref, n, tol, 1e-6);
}

/* An op call: runs it, syncs, and reports a failure with the backend's message. */
static int op_ok(const char *name, int rc) {
  if (rc == 0) rc = g_be->sync(g_be);
  if (rc != 0) {
    char msg[400];
    snprintf(msg, sizeof msg, "op returned %d: %s", rc, bf_last_error());
    fail_msg(name, msg);
    return 0;
  }
  return 1;
}

/* ------------------------------------------------------------------------ */
/* guarded backend buffers */

typedef struct dbuf {
  char label[320];
  unsigned char *base; /* backend memory: GUARD + bytes + GUARD */
  void *p;             /* base + GUARD, what ops see */
  size_t bytes;
  unsigned char *keep; /* host copy an op must leave unchanged, or NULL */
} dbuf;

static void die(const char *what) {
  fprintf(stderr, "test_ops: %s: %s\n", what, bf_last_error());
  printf("%d passed, %d failed\n", g_pass, g_fail + 1);
  exit(1);
}

/* Allocates bytes of backend memory; guards and interior hold the NaN pattern. */
static dbuf *db_new(const char *name, size_t bytes) {
  dbuf *b = xmalloc(sizeof *b);
  snprintf(b->label, sizeof b->label, "%s [%s]", g_case, name);
  size_t total = bytes + 2 * GUARD;
  b->base = g_be->alloc(g_be, total);
  if (!b->base) die("alloc");
  b->p = b->base + GUARD;
  b->bytes = bytes;
  unsigned char *h = xmalloc(total);
  for (size_t j = 0; j < total; j++) h[j] = g_pat[j % 4];
  if (g_be->upload(g_be, b->base, h, total) != 0) die("upload");
  free(h);
  g_nbufs++;
  return b;
}

static void db_put(dbuf *b, const void *host) {
  if (b->bytes && g_be->upload(g_be, b->p, host, b->bytes) != 0) die("upload");
  if (b->keep) memcpy(b->keep, host, b->bytes);
}

/* An input buffer: uploaded, and checked unchanged when freed. */
static dbuf *db_in(const char *name, const void *host, size_t bytes) {
  dbuf *b = db_new(name, bytes);
  db_put(b, host);
  b->keep = xmalloc(bytes);
  memcpy(b->keep, host, bytes);
  return b;
}

/* The buffer will be written by an op (in place / aliasing). */
static void db_mut(dbuf *b) {
  free(b->keep);
  b->keep = NULL;
}

static void db_get(dbuf *b, void *host) {
  if (g_be->sync(g_be) != 0) die("sync");
  if (b->bytes && g_be->download(g_be, host, b->p, b->bytes) != 0) die("download");
}

/* Frees the buffer after checking its guards (and, for inputs, its content). */
static void db_free(dbuf *b) {
  if (!b) return;
  size_t total = b->bytes + 2 * GUARD;
  unsigned char *h = xmalloc(total);
  if (g_be->sync(g_be) != 0 || g_be->download(g_be, h, b->base, total) != 0) die("download");
  size_t lo = 0, hi = 0;
  for (size_t j = 0; j < GUARD; j++) lo += h[j] != g_pat[j % 4];
  for (size_t j = GUARD + b->bytes; j < total; j++) hi += h[j] != g_pat[j % 4];
  if (lo || hi) {
    char msg[160];
    snprintf(msg, sizeof msg, "guard bytes overwritten: %zu before the buffer, %zu after it", lo, hi);
    fail_msg(b->label, msg);
    g_nbad_bufs++;
  }
  if (b->keep && memcmp(h + GUARD, b->keep, b->bytes) != 0) {
    fail_msg(b->label, "input buffer was modified by an op");
    g_nbad_bufs++;
  }
  free(h);
  free(b->keep);
  g_be->free(g_be, b->base);
  free(b);
}

static void set_case(const char *fmt, const char *a) { snprintf(g_case, sizeof g_case, fmt, a); }

/* ------------------------------------------------------------------------ */
/* finite differences: central differences of a scalar objective computed with
 * the backend's forward, w.r.t. each element of one input buffer */

typedef double (*objective_fn)(void *ctx);

static void fd_check(const char *name, objective_fn f, void *ctx, dbuf *param, float *host, size_t n,
                     const float *analytic, double tol) {
  double *fd = dal(n);
  for (size_t i = 0; i < n; i++) {
    float v = host[i];
    float vp = (float)(v + FD_STEP), vm = (float)(v - FD_STEP);
    float *dst = (float *)param->p + i;
    if (g_be->upload(g_be, dst, &vp, sizeof vp) != 0) die("upload");
    double lp = f(ctx);
    if (g_be->upload(g_be, dst, &vm, sizeof vm) != 0) die("upload");
    double lm = f(ctx);
    if (g_be->upload(g_be, dst, &v, sizeof v) != 0) die("upload");
    fd[i] = (lp - lm) / ((double)vp - (double)vm);
  }
  check_close(name, analytic, fd, n, tol);
  free(fd);
}

/* ------------------------------------------------------------------------ */
/* naive references */

static void ref_conv_fwd(const bf_conv_desc *d, const float *x, const float *w, double *y) {
  for (int n = 0; n < d->n; n++)
    for (int oy = 0; oy < d->oh; oy++)
      for (int ox = 0; ox < d->ow; ox++)
        for (int k = 0; k < d->k; k++) {
          double s = 0;
          for (int ky = 0; ky < d->kh; ky++) {
            int iy = oy * d->stride - d->pad + ky;
            if (iy < 0 || iy >= d->h) continue;
            for (int kx = 0; kx < d->kw; kx++) {
              int ix = ox * d->stride - d->pad + kx;
              if (ix < 0 || ix >= d->w) continue;
              for (int c = 0; c < d->c; c++)
                s += (double)x[(((size_t)n * d->h + iy) * d->w + ix) * d->c + c] *
                     (double)w[(((size_t)k * d->kh + ky) * d->kw + kx) * d->c + c];
            }
          }
          y[(((size_t)n * d->oh + oy) * d->ow + ox) * d->k + k] = s;
        }
}

static void ref_conv_bwd_data(const bf_conv_desc *d, const float *dy, const float *w, double *dx) {
  memset(dx, 0, sizeof(double) * (size_t)d->n * d->h * d->w * d->c);
  for (int n = 0; n < d->n; n++)
    for (int oy = 0; oy < d->oh; oy++)
      for (int ox = 0; ox < d->ow; ox++)
        for (int k = 0; k < d->k; k++) {
          double g = dy[(((size_t)n * d->oh + oy) * d->ow + ox) * d->k + k];
          for (int ky = 0; ky < d->kh; ky++) {
            int iy = oy * d->stride - d->pad + ky;
            if (iy < 0 || iy >= d->h) continue;
            for (int kx = 0; kx < d->kw; kx++) {
              int ix = ox * d->stride - d->pad + kx;
              if (ix < 0 || ix >= d->w) continue;
              for (int c = 0; c < d->c; c++)
                dx[(((size_t)n * d->h + iy) * d->w + ix) * d->c + c] +=
                    g * (double)w[(((size_t)k * d->kh + ky) * d->kw + kx) * d->c + c];
            }
          }
        }
}

static void ref_conv_bwd_filter(const bf_conv_desc *d, const float *x, const float *dy, double *dw) {
  memset(dw, 0, sizeof(double) * (size_t)d->k * d->kh * d->kw * d->c);
  for (int n = 0; n < d->n; n++)
    for (int oy = 0; oy < d->oh; oy++)
      for (int ox = 0; ox < d->ow; ox++)
        for (int k = 0; k < d->k; k++) {
          double g = dy[(((size_t)n * d->oh + oy) * d->ow + ox) * d->k + k];
          for (int ky = 0; ky < d->kh; ky++) {
            int iy = oy * d->stride - d->pad + ky;
            if (iy < 0 || iy >= d->h) continue;
            for (int kx = 0; kx < d->kw; kx++) {
              int ix = ox * d->stride - d->pad + kx;
              if (ix < 0 || ix >= d->w) continue;
              for (int c = 0; c < d->c; c++)
                dw[(((size_t)k * d->kh + ky) * d->kw + kx) * d->c + c] +=
                    g * (double)x[(((size_t)n * d->h + iy) * d->w + ix) * d->c + c];
            }
          }
        }
}

/* Train-mode batch norm. z (may be NULL) receives the pre-activation. */
static void ref_bn_train(int rows, int c, const float *x, const float *gamma, const float *beta, const float *res,
                         int relu, double mom, double eps, const float *rm0, const float *rv0, double *y,
                         double *mean, double *invstd, double *rm, double *rv, double *z) {
  for (int j = 0; j < c; j++) {
    double s = 0;
    for (int i = 0; i < rows; i++) s += x[(size_t)i * c + j];
    double mu = s / rows, v = 0;
    for (int i = 0; i < rows; i++) {
      double t = x[(size_t)i * c + j] - mu;
      v += t * t;
    }
    double var = v / rows;
    double is = 1.0 / sqrt(var + eps);
    mean[j] = mu;
    invstd[j] = is;
    rm[j] = (1 - mom) * rm0[j] + mom * mu;
    rv[j] = (1 - mom) * rv0[j] + mom * (rows > 1 ? v / (rows - 1) : var);
    for (int i = 0; i < rows; i++) {
      size_t q = (size_t)i * c + j;
      double t = gamma[j] * (x[q] - mu) * is + beta[j] + (res ? res[q] : 0.0);
      if (z) z[q] = t;
      y[q] = relu && t < 0 ? 0.0 : t;
    }
  }
}

static void ref_bn_eval(int rows, int c, const float *x, const float *gamma, const float *beta, const float *rm,
                        const float *rv, const float *res, int relu, double eps, double *y) {
  for (int i = 0; i < rows; i++)
    for (int j = 0; j < c; j++) {
      size_t q = (size_t)i * c + j;
      double t = gamma[j] * (x[q] - (double)rm[j]) / sqrt((double)rv[j] + eps) + beta[j] + (res ? res[q] : 0.0);
      y[q] = relu && t < 0 ? 0.0 : t;
    }
}

static void ref_bn_bwd(int rows, int c, const float *x, const float *dy, const float *relu_out, const float *gamma,
                       const float *mean, const float *invstd, double *dx, double *dgamma, double *dbeta) {
  for (int j = 0; j < c; j++) {
    double sdy = 0, sdyx = 0;
    for (int i = 0; i < rows; i++) {
      size_t q = (size_t)i * c + j;
      double g = relu_out && !(relu_out[q] > 0) ? 0.0 : dy[q];
      double xh = (x[q] - (double)mean[j]) * invstd[j];
      sdy += g;
      sdyx += g * xh;
    }
    dbeta[j] = sdy;
    dgamma[j] = sdyx;
    for (int i = 0; i < rows; i++) {
      size_t q = (size_t)i * c + j;
      double g = relu_out && !(relu_out[q] > 0) ? 0.0 : dy[q];
      double xh = (x[q] - (double)mean[j]) * invstd[j];
      dx[q] = (double)gamma[j] * invstd[j] / rows * (rows * g - sdy - xh * sdyx);
    }
  }
}

/* Eval mode: the running statistics are constants, so only the affine map
 * is differentiated. */
static void ref_bn_eval_bwd(int rows, int c, const float *x, const float *dy, const float *relu_out,
                            const float *gamma, const float *rm, const float *rv, double eps, double *dx,
                            double *dgamma, double *dbeta) {
  for (int j = 0; j < c; j++) {
    double inv = 1.0 / sqrt((double)rv[j] + eps), sdy = 0, sdyx = 0;
    for (int i = 0; i < rows; i++) {
      size_t q = (size_t)i * c + j;
      double g = relu_out && !(relu_out[q] > 0) ? 0.0 : dy[q];
      sdy += g;
      sdyx += g * (x[q] - (double)rm[j]) * inv;
      dx[q] = g * gamma[j] * inv;
    }
    dbeta[j] = sdy;
    dgamma[j] = sdyx;
  }
}

/* Max pooling; argmax[] (may be NULL) gets the input index of each output's
 * first maximum in (ky, kx) scan order, -1 if the window is all padding. */
static void ref_maxpool(const bf_pool_desc *d, const float *x, double *y, long *argmax) {
  for (int n = 0; n < d->n; n++)
    for (int oy = 0; oy < d->oh; oy++)
      for (int ox = 0; ox < d->ow; ox++)
        for (int c = 0; c < d->c; c++) {
          double best = -INFINITY;
          long arg = -1;
          for (int ky = 0; ky < d->kernel; ky++) {
            int iy = oy * d->stride - d->pad + ky;
            if (iy < 0 || iy >= d->h) continue;
            for (int kx = 0; kx < d->kernel; kx++) {
              int ix = ox * d->stride - d->pad + kx;
              if (ix < 0 || ix >= d->w) continue;
              size_t q = (((size_t)n * d->h + iy) * d->w + ix) * d->c + c;
              if (x[q] > best) {
                best = x[q];
                arg = (long)q;
              }
            }
          }
          size_t o = (((size_t)n * d->oh + oy) * d->ow + ox) * d->c + c;
          y[o] = best;
          if (argmax) argmax[o] = arg;
        }
}

/* Mean softmax cross-entropy with label smoothing (PyTorch). */
static double ref_xent(int n, int c, const float *logits, const int32_t *labels, double s, double *dlogits) {
  double total = 0;
  double *p = dal((size_t)c);
  for (int i = 0; i < n; i++) {
    const float *l = logits + (size_t)i * c;
    double m = -INFINITY;
    for (int j = 0; j < c; j++) m = l[j] > m ? l[j] : m;
    double se = 0;
    for (int j = 0; j < c; j++) se += exp(l[j] - m);
    double lse = m + log(se), mean_nll = 0;
    for (int j = 0; j < c; j++) {
      p[j] = exp(l[j] - lse);
      mean_nll += (lse - l[j]) / c;
    }
    total += (1 - s) * (lse - l[labels[i]]) + s * mean_nll;
    if (dlogits)
      for (int j = 0; j < c; j++) dlogits[(size_t)i * c + j] = (p[j] - ((1 - s) * (j == labels[i]) + s / c)) / n;
  }
  free(p);
  return total / n;
}

/* ------------------------------------------------------------------------ */
/* convolution */

typedef struct conv_case {
  int n, h, w, c, k, kh, kw, stride, pad;
} conv_case;

static void conv_tag(char *buf, size_t len, const conv_case *t) {
  char ks[24];
  if (t->kh == t->kw)
    snprintf(ks, sizeof ks, "%d", t->kh);
  else
    snprintf(ks, sizeof ks, "%dx%d", t->kh, t->kw);
  snprintf(buf, len, "k%s s%d p%d n%d %dx%d c%d->%d", ks, t->stride, t->pad, t->n, t->h, t->w, t->c, t->k);
}

static int conv_init(bf_conv_desc *d, const conv_case *t, const char *tag) {
  int rc = bf_conv_desc_init(d, t->n, t->h, t->w, t->c, t->k, t->kh, t->kw, t->stride, t->pad);
  int eoh = (t->h + 2 * t->pad - t->kh) / t->stride + 1, eow = (t->w + 2 * t->pad - t->kw) / t->stride + 1;
  char name[200];
  snprintf(name, sizeof name, "conv2d_desc %s", tag);
  if (rc != 0 || d->oh != eoh || d->ow != eow) {
    char msg[200];
    snprintf(msg, sizeof msg, "rc=%d oh=%d ow=%d, want 0, %d, %d (%s)", rc, rc ? -1 : d->oh, rc ? -1 : d->ow, eoh,
             eow, rc ? bf_last_error() : "");
    fail_msg(name, msg);
    return 0;
  }
  return 1;
}

static void test_conv(const conv_case *t) {
  char tag[120], name[200];
  conv_tag(tag, sizeof tag, t);
  set_case("conv2d %s", tag);
  bf_conv_desc d;
  if (!conv_init(&d, t, tag)) return;
  size_t nx = (size_t)d.n * d.h * d.w * d.c, nw = (size_t)d.k * d.kh * d.kw * d.c;
  size_t ny = (size_t)d.n * d.oh * d.ow * d.k;
  float *x = fal(nx), *w = fal(nw), *dy = fal(ny), *prev = fal(nx);
  float *y = fal(ny), *dx = fal(nx), *dw = fal(nw);
  double *ry = dal(ny), *rdx = dal(nx), *rdw = dal(nw);
  fill_normal(x, nx, 0, 1);
  fill_normal(w, nw, 0, 1.0 / sqrt((double)(d.kh * d.kw * d.c)));
  fill_normal(dy, ny, 0.3, 1);
  fill_normal(prev, nx, 0, 1);
  size_t wsb = 0;
  if (g_be->conv2d_workspace(g_be, &d, &wsb)) die("conv2d_workspace");
  dbuf *X = db_in("x", x, nx * 4), *W = db_in("w", w, nw * 4), *DY = db_in("dy", dy, ny * 4);
  dbuf *Y = db_new("y", ny * 4), *DX = db_new("dx", nx * 4), *DW = db_new("dw", nw * 4), *WS = db_new("ws", wsb);

  snprintf(name, sizeof name, "conv2d_fwd %s", tag);
  if (op_ok(name, g_be->conv2d_forward(g_be, &d, X->p, W->p, Y->p, WS->p, wsb))) {
    db_get(Y, y);
    ref_conv_fwd(&d, x, w, ry);
    check_close(name, y, ry, ny, TOL_GEMM);
  }

  ref_conv_bwd_data(&d, dy, w, rdx);
  snprintf(name, sizeof name, "conv2d_bwd_data beta0 %s", tag);
  if (op_ok(name, g_be->conv2d_backward_data(g_be, &d, DY->p, W->p, DX->p, 0.0f, WS->p, wsb))) {
    db_get(DX, dx);
    check_close(name, dx, rdx, nx, TOL_GEMM);
  }
  snprintf(name, sizeof name, "conv2d_bwd_data beta1 %s", tag);
  db_put(DX, prev);
  if (op_ok(name, g_be->conv2d_backward_data(g_be, &d, DY->p, W->p, DX->p, 1.0f, WS->p, wsb))) {
    db_get(DX, dx);
    for (size_t i = 0; i < nx; i++) rdx[i] += prev[i];
    check_close(name, dx, rdx, nx, TOL_GEMM);
  }

  snprintf(name, sizeof name, "conv2d_bwd_filter %s", tag);
  if (op_ok(name, g_be->conv2d_backward_filter(g_be, &d, X->p, DY->p, DW->p, WS->p, wsb))) {
    db_get(DW, dw);
    ref_conv_bwd_filter(&d, x, dy, rdw);
    check_close(name, dw, rdw, nw, TOL_GEMM);
  }

  db_free(X), db_free(W), db_free(DY), db_free(Y), db_free(DX), db_free(DW), db_free(WS);
  free(x), free(w), free(dy), free(prev), free(y), free(dx), free(dw), free(ry), free(rdx), free(rdw);
}

/* The fused inference conv: y = act(conv(x, w) + bias + residual). Variants:
 * 0 plain, 1 relu, 2 residual + relu, 3 residual + relu written over the
 * residual (y = residual, as the engine does), 4 the same without relu. */
static void test_conv_infer(const conv_case *t, int v, const char *path) {
  char tag[120], name[200];
  conv_tag(tag, sizeof tag, t);
  int use_res = v >= 2, relu = v != 0 && v != 4, alias = v >= 3;
  snprintf(name, sizeof name, "conv_infer[%s] %s%s%s%s", path, tag, use_res ? " +res" : "", relu ? " relu" : "",
           alias ? " y=res" : "");
  set_case("%s", name);
  bf_conv_desc d;
  if (!conv_init(&d, t, tag)) return;
  size_t nx = (size_t)d.n * d.h * d.w * d.c, nw = (size_t)d.k * d.kh * d.kw * d.c;
  size_t ny = (size_t)d.n * d.oh * d.ow * d.k;
  float *x = fal(nx), *w = fal(nw), *b = fal((size_t)d.k), *r = fal(ny), *y = fal(ny);
  double *ry = dal(ny);
  fill_normal(x, nx, 0, 1);
  fill_normal(w, nw, 0, 1.0 / sqrt((double)(d.kh * d.kw * d.c)));
  fill_normal(b, (size_t)d.k, 0, 0.5);
  fill_normal(r, ny, 0, 1);
  ref_conv_fwd(&d, x, w, ry);
  for (size_t i = 0; i < ny; i++) {
    double u = ry[i] + b[i % (size_t)d.k] + (use_res ? r[i] : 0.0);
    ry[i] = relu && u < 0 ? 0.0 : u;
  }
  dbuf *X = db_in("x", x, nx * 4), *W = db_in("w", w, nw * 4), *B = db_in("bias", b, (size_t)d.k * 4);
  dbuf *R = use_res ? db_in("res", r, ny * 4) : NULL, *Y = alias ? R : db_new("y", ny * 4), *WS = NULL;
  if (alias) db_mut(R);
  bf_conv_infer *p = NULL;
  size_t wsb = 0;
  if (op_ok(name, g_be->conv_infer_create(g_be, &d, W->p, B->p, relu, use_res, &p, &wsb))) {
    WS = db_new("ws", wsb);
    /* twice: a plan is reused call after call */
    for (int rep = 0; rep < 2; rep++) {
      if (rep && alias) db_put(R, r);
      if (!op_ok(name, g_be->conv_infer_forward(g_be, p, X->p, R ? R->p : NULL, Y->p, WS->p, wsb))) break;
      db_get(Y, y);
      if (rep) check_close(name, y, ry, ny, TOL_GEMM);
    }
    g_be->conv_infer_free(g_be, p);
  }
  db_free(X), db_free(W), db_free(B), db_free(WS);
  if (R) db_free(R);
  if (!alias) db_free(Y);
  free(x), free(w), free(b), free(r), free(y), free(ry);
}

typedef struct conv_ctx {
  bf_conv_desc d;
  dbuf *x, *w, *y, *ws;
  size_t wsb, ny;
  float *yh;
  const float *r;
} conv_ctx;

static double conv_obj(void *vc) {
  conv_ctx *c = vc;
  if (g_be->conv2d_forward(g_be, &c->d, c->x->p, c->w->p, c->y->p, c->ws->p, c->wsb) != 0) return NAN;
  db_get(c->y, c->yh);
  return dot_fd(c->yh, c->r, c->ny);
}

static void fd_conv(const conv_case *t) {
  char tag[120], name[200];
  conv_tag(tag, sizeof tag, t);
  set_case("conv2d fd %s", tag);
  conv_ctx cx;
  if (!conv_init(&cx.d, t, tag)) return;
  bf_conv_desc *d = &cx.d;
  size_t nx = (size_t)d->n * d->h * d->w * d->c, nw = (size_t)d->k * d->kh * d->kw * d->c;
  size_t ny = (size_t)d->n * d->oh * d->ow * d->k;
  float *x = fal(nx), *w = fal(nw), *r = fal(ny), *yh = fal(ny), *dx = fal(nx), *dw = fal(nw);
  fill_normal(x, nx, 0, 1);
  fill_normal(w, nw, 0, 0.5);
  fill_normal(r, ny, 0.3, 1);
  if (g_be->conv2d_workspace(g_be, d, &cx.wsb)) die("conv2d_workspace");
  cx.x = db_in("x", x, nx * 4);
  cx.w = db_in("w", w, nw * 4);
  cx.y = db_new("y", ny * 4);
  cx.ws = db_new("ws", cx.wsb);
  cx.ny = ny;
  cx.yh = yh;
  cx.r = r;
  dbuf *R = db_in("r", r, ny * 4), *DX = db_new("dx", nx * 4), *DW = db_new("dw", nw * 4);
  snprintf(name, sizeof name, "conv2d_fd dL/dx %s", tag);
  if (op_ok(name, g_be->conv2d_backward_data(g_be, d, R->p, cx.w->p, DX->p, 0.0f, cx.ws->p, cx.wsb))) {
    db_get(DX, dx);
    fd_check(name, conv_obj, &cx, cx.x, x, nx, dx, TOL_FD_LIN);
  }
  snprintf(name, sizeof name, "conv2d_fd dL/dw %s", tag);
  if (op_ok(name, g_be->conv2d_backward_filter(g_be, d, cx.x->p, R->p, DW->p, cx.ws->p, cx.wsb))) {
    db_get(DW, dw);
    fd_check(name, conv_obj, &cx, cx.w, w, nw, dw, TOL_FD_LIN);
  }
  db_free(cx.x), db_free(cx.w), db_free(cx.y), db_free(cx.ws), db_free(R), db_free(DX), db_free(DW);
  free(x), free(w), free(r), free(yh), free(dx), free(dw);
}

static void test_conv_desc_errors(void) {
  bf_conv_desc d;
  /* 2x2 input, 3x3 kernel, no padding: empty output */
  int rc = bf_conv_desc_init(&d, 1, 2, 2, 3, 4, 3, 3, 1, 0);
  if (rc != 0)
    report(1, "conv2d_desc rejects empty output (2x2 in, k3 p0)", 0, 0, "");
  else
    fail_msg("conv2d_desc rejects empty output (2x2 in, k3 p0)", "returned 0");
}

/* ------------------------------------------------------------------------ */
/* batch norm */

#define BN_MOM 0.1f
#define BN_EPS 1e-5f

/* Non-zero: channel means of that size with spreads of 0.025..0.1, the inputs
 * that exposed the uncentred k2*x + k3 backward (commit 4e5df97). */
static double g_bn_offcentre;

typedef struct bn_data {
  int rows, c;
  float *x, *gamma, *beta, *res, *rm, *rv;
} bn_data;

static void bn_data_make(bn_data *b, int rows, int c) {
  size_t nx = (size_t)rows * c;
  b->rows = rows;
  b->c = c;
  b->x = fal(nx);
  b->res = fal(nx);
  b->gamma = fal((size_t)c);
  b->beta = fal((size_t)c);
  b->rm = fal((size_t)c);
  b->rv = fal((size_t)c);
  for (int j = 0; j < c; j++) {
    double mu = -2 + 4 * bf_rng_uniform(&g_rng), sd = 0.5 + 1.5 * bf_rng_uniform(&g_rng);
    if (g_bn_offcentre) mu = g_bn_offcentre * (1 + bf_rng_uniform(&g_rng)), sd *= 0.05; /* mean/sd ~ 1e3 */
    for (int i = 0; i < rows; i++) b->x[(size_t)i * c + j] = (float)(mu + sd * bf_rng_normal(&g_rng));
    double g = 0.3 + 1.2 * bf_rng_uniform(&g_rng);
    b->gamma[j] = (float)(bf_rng_uniform(&g_rng) < 0.25 ? -g : g);
    b->beta[j] = (float)(0.5 * bf_rng_normal(&g_rng));
    b->rm[j] = (float)(0.3 * bf_rng_normal(&g_rng));
    b->rv[j] = (float)(0.5 + bf_rng_uniform(&g_rng));
  }
  fill_normal(b->res, nx, 0, 1);
}

static void bn_data_free(bn_data *b) { free(b->x), free(b->res), free(b->gamma), free(b->beta), free(b->rm), free(b->rv); }

static void xhat_like(int rows, int c, const float *x, float *dy);

static void test_bn_train(int rows, int c, int use_res, int relu) {
  char tag[120], name[220];
  snprintf(tag, sizeof tag, "rows%d c%d%s%s%s", rows, c, use_res ? " +res" : "", relu ? " +relu" : "",
           g_bn_offcentre ? " off-centre" : "");
  set_case("bn_train %s", tag);
  bn_data b;
  bn_data_make(&b, rows, c);
  size_t nx = (size_t)rows * c, nc = (size_t)c;
  float *y = fal(nx), *mean = fal(nc), *invstd = fal(nc), *rm = fal(nc), *rv = fal(nc);
  float *dy = fal(nx), *dx = fal(nx), *dg = fal(nc), *dbt = fal(nc);
  double *ry = dal(nx), *rmean = dal(nc), *rinv = dal(nc), *rrm = dal(nc), *rrv = dal(nc);
  double *rdx = dal(nx), *rdg = dal(nc), *rdb = dal(nc);
  fill_normal(dy, nx, 0.3, 1);
  if (g_bn_offcentre) xhat_like(rows, c, b.x, dy);
  dbuf *X = db_in("x", b.x, nx * 4), *G = db_in("gamma", b.gamma, nc * 4), *B = db_in("beta", b.beta, nc * 4);
  dbuf *RES = use_res ? db_in("res", b.res, nx * 4) : NULL;
  dbuf *Y = db_new("y", nx * 4), *M = db_new("save_mean", nc * 4), *IS = db_new("save_invstd", nc * 4);
  dbuf *RM = db_new("running_mean", nc * 4), *RV = db_new("running_var", nc * 4);
  db_put(RM, b.rm);
  db_put(RV, b.rv);
  dbuf *DY = db_in("dy", dy, nx * 4), *DX = db_new("dx", nx * 4), *DG = db_new("dgamma", nc * 4),
       *DB = db_new("dbeta", nc * 4);

  snprintf(name, sizeof name, "bn_fwd_train %s", tag);
  if (op_ok(name, g_be->batchnorm_forward_train(g_be, rows, c, X->p, G->p, B->p, RES ? RES->p : NULL, relu, Y->p,
                                                M->p, IS->p, RM->p, RV->p, BN_MOM, BN_EPS))) {
    ref_bn_train(rows, c, b.x, b.gamma, b.beta, use_res ? b.res : NULL, relu, BN_MOM, BN_EPS, b.rm, b.rv, ry, rmean,
                 rinv, rrm, rrv, NULL);
    db_get(Y, y), db_get(M, mean), db_get(IS, invstd), db_get(RM, rm), db_get(RV, rv);
    snprintf(name, sizeof name, "bn_fwd_train y %s", tag);
    check_close(name, y, ry, nx, TOL_GEMM);
    snprintf(name, sizeof name, "bn_fwd_train save_mean %s", tag);
    check_close(name, mean, rmean, nc, TOL_GEMM);
    snprintf(name, sizeof name, "bn_fwd_train save_invstd %s", tag);
    check_close(name, invstd, rinv, nc, TOL_GEMM);
    snprintf(name, sizeof name, "bn_fwd_train running_mean %s", tag);
    check_close(name, rm, rrm, nc, TOL_GEMM);
    snprintf(name, sizeof name, "bn_fwd_train running_var %s", tag);
    check_close(name, rv, rrv, nc, TOL_GEMM);

    /* backward, with the ReLU mask when the forward had a ReLU */
    snprintf(name, sizeof name, "bn_bwd%s %s", relu ? " relu_mask" : "", tag);
    if (op_ok(name, g_be->batchnorm_backward(g_be, rows, c, X->p, DY->p, relu ? Y->p : NULL, G->p, M->p, IS->p, DX->p,
                                             DG->p, DB->p))) {
      ref_bn_bwd(rows, c, b.x, dy, relu ? y : NULL, b.gamma, mean, invstd, rdx, rdg, rdb);
      db_get(DX, dx), db_get(DG, dg), db_get(DB, dbt);
      snprintf(name, sizeof name, "bn_bwd%s dx %s", relu ? " relu_mask" : "", tag);
      check_close(name, dx, rdx, nx, TOL_GEMM);
      snprintf(name, sizeof name, "bn_bwd%s dgamma %s", relu ? " relu_mask" : "", tag);
      check_close(name, dg, rdg, nc, TOL_GEMM);
      snprintf(name, sizeof name, "bn_bwd%s dbeta %s", relu ? " relu_mask" : "", tag);
      check_close(name, dbt, rdb, nc, TOL_GEMM);
    }
  }
  db_free(X), db_free(G), db_free(B), db_free(RES), db_free(Y), db_free(M), db_free(IS), db_free(RM), db_free(RV);
  db_free(DY), db_free(DX), db_free(DG), db_free(DB);
  free(y), free(mean), free(invstd), free(rm), free(rv), free(dy), free(dx), free(dg), free(dbt);
  free(ry), free(rmean), free(rinv), free(rrm), free(rrv), free(rdx), free(rdg), free(rdb);
  bn_data_free(&b);
}

/* Synchronised BN (backend.h bn_sync) as rank 0 of 2: the hook adds the sums
 * of a second rank's batch (x1, dy1), computed here in double, to this
 * backend's. Forward and dx must then equal plain BN over the two batches
 * stacked; dgamma and dbeta stay rank 0's own. */
typedef struct bn_sync_ctx {
  int c, calls;
  double *fwd, *bwd; /* rank 1's [2c] sums: x, x^2; g, g*x */
} bn_sync_ctx;

static int bn_sync_test_hook(void *vc, double *sums, size_t n) {
  bn_sync_ctx *k = vc;
  if (n != 2 * (size_t)k->c) return bf_error(BF_EINVAL, "bn_sync: %zu sums for %d channels", n, k->c);
  const double *add = k->calls++ == 0 ? k->fwd : k->bwd;
  double *h = dal(n); /* sums live in backend memory: through download/upload */
  if (g_be->download(g_be, h, sums, n * sizeof(double))) die("bn_sync download");
  for (size_t i = 0; i < n; i++) h[i] += add[i];
  if (g_be->upload(g_be, sums, h, n * sizeof(double))) die("bn_sync upload");
  free(h);
  return BF_OK;
}

static void test_bn_sync(int rows, int c) {
  char tag[64], name[160];
  snprintf(tag, sizeof tag, "rows%d+%d c%d", rows, rows, c);
  set_case("bn_sync %s", tag);
  bn_data b;
  bn_data_make(&b, 2 * rows, c); /* rows [0, rows): this rank; [rows, 2 rows): the other */
  size_t nx = (size_t)rows * c, nc = (size_t)c;
  float *dy = fal(2 * nx), *y = fal(nx), *mean = fal(nc), *invstd = fal(nc), *rm = fal(nc), *rv = fal(nc);
  float *dx = fal(nx), *dg = fal(nc), *dbt = fal(nc);
  fill_normal(dy, 2 * nx, 0.3, 1);
  double *ry = dal(2 * nx), *rmean = dal(nc), *rinv = dal(nc), *rrm = dal(nc), *rrv = dal(nc);
  double *rdx = dal(2 * nx), *rdg = dal(nc), *rdb = dal(nc);
  bn_sync_ctx k = {c, 0, dal(2 * nc), dal(2 * nc)};
  for (int j = 0; j < c; j++) {
    k.fwd[j] = k.fwd[c + j] = k.bwd[j] = k.bwd[c + j] = 0;
    for (int i = rows; i < 2 * rows; i++) {
      double x = b.x[(size_t)i * c + j], g = dy[(size_t)i * c + j];
      k.fwd[j] += x, k.fwd[c + j] += x * x, k.bwd[j] += g, k.bwd[c + j] += g * x;
    }
  }
  dbuf *X = db_in("x", b.x, nx * 4), *G = db_in("gamma", b.gamma, nc * 4), *B = db_in("beta", b.beta, nc * 4);
  dbuf *Y = db_new("y", nx * 4), *M = db_new("save_mean", nc * 4), *IS = db_new("save_invstd", nc * 4);
  dbuf *RM = db_new("running_mean", nc * 4), *RV = db_new("running_var", nc * 4);
  db_put(RM, b.rm);
  db_put(RV, b.rv);
  dbuf *DY = db_in("dy", dy, nx * 4), *DX = db_new("dx", nx * 4), *DG = db_new("dgamma", nc * 4),
       *DB = db_new("dbeta", nc * 4);
  g_be->bn_sync = bn_sync_test_hook, g_be->bn_sync_ctx = &k, g_be->bn_sync_ranks = 2;
  int ok = op_ok("bn_sync fwd", g_be->batchnorm_forward_train(g_be, rows, c, X->p, G->p, B->p, NULL, 0, Y->p, M->p,
                                                              IS->p, RM->p, RV->p, BN_MOM, BN_EPS)) &&
           op_ok("bn_sync bwd", g_be->batchnorm_backward(g_be, rows, c, X->p, DY->p, NULL, G->p, M->p, IS->p, DX->p,
                                                         DG->p, DB->p));
  g_be->bn_sync = NULL, g_be->bn_sync_ctx = NULL, g_be->bn_sync_ranks = 0;
  if (ok) {
    snprintf(name, sizeof name, "bn_sync hook calls %s", tag);
    report(k.calls == 2, name, fabs(k.calls - 2.0), 0, "one call in the forward, one in the backward");
    ref_bn_train(2 * rows, c, b.x, b.gamma, b.beta, NULL, 0, BN_MOM, BN_EPS, b.rm, b.rv, ry, rmean, rinv, rrm, rrv,
                 NULL);
    db_get(Y, y), db_get(M, mean), db_get(IS, invstd), db_get(RM, rm), db_get(RV, rv);
    db_get(DX, dx), db_get(DG, dg), db_get(DB, dbt);
    snprintf(name, sizeof name, "bn_sync y %s", tag);
    check_close(name, y, ry, nx, TOL_GEMM);
    snprintf(name, sizeof name, "bn_sync save_mean %s", tag);
    check_close(name, mean, rmean, nc, TOL_GEMM);
    snprintf(name, sizeof name, "bn_sync save_invstd %s", tag);
    check_close(name, invstd, rinv, nc, TOL_GEMM);
    snprintf(name, sizeof name, "bn_sync running_mean %s", tag);
    check_close(name, rm, rrm, nc, TOL_GEMM);
    snprintf(name, sizeof name, "bn_sync running_var (unbiased over both) %s", tag);
    check_close(name, rv, rrv, nc, TOL_GEMM);
    /* dx of the stacked BN, this rank's rows; dgamma/dbeta over this rank's rows only */
    float *fm = fal(nc), *fi = fal(nc);
    for (int j = 0; j < c; j++) fm[j] = (float)rmean[j], fi[j] = (float)rinv[j];
    ref_bn_bwd(2 * rows, c, b.x, dy, NULL, b.gamma, fm, fi, rdx, rdg, rdb);
    ref_bn_bwd(rows, c, b.x, dy, NULL, b.gamma, fm, fi, ry, rdg, rdb); /* ry: scratch for the local dx */
    snprintf(name, sizeof name, "bn_sync dx %s", tag);
    check_close(name, dx, rdx, nx, TOL_GEMM);
    snprintf(name, sizeof name, "bn_sync dgamma (local) %s", tag);
    check_close(name, dg, rdg, nc, TOL_GEMM);
    snprintf(name, sizeof name, "bn_sync dbeta (local) %s", tag);
    check_close(name, dbt, rdb, nc, TOL_GEMM);
    free(fm), free(fi);
  }
  db_free(X), db_free(G), db_free(B), db_free(Y), db_free(M), db_free(IS), db_free(RM), db_free(RV);
  db_free(DY), db_free(DX), db_free(DG), db_free(DB);
  free(dy), free(y), free(mean), free(invstd), free(rm), free(rv), free(dx), free(dg), free(dbt);
  free(ry), free(rmean), free(rinv), free(rrm), free(rrv), free(rdx), free(rdg), free(rdb), free(k.fwd), free(k.bwd);
  bn_data_free(&b);
}

/* dy = 0.3 + xhat + dy/10 per channel: a gradient correlated with the
 * normalised input, as in training. The exact dx is then small next to its
 * terms, which is where an uncentred backward loses its digits (with dy
 * independent of x the error hides under the k1*g term). */
static void xhat_like(int rows, int c, const float *x, float *dy) {
  for (int j = 0; j < c; j++) {
    double s = 0, v = 0;
    for (int i = 0; i < rows; i++) s += x[(size_t)i * c + j];
    double mu = s / rows;
    for (int i = 0; i < rows; i++) v += (x[(size_t)i * c + j] - mu) * (x[(size_t)i * c + j] - mu);
    double sd = sqrt(v / rows);
    for (int i = 0; i < rows; i++) {
      size_t q = (size_t)i * c + j;
      dy[q] = (float)(0.3 + (x[q] - mu) / sd + 0.1 * (dy[q] - 0.3));
    }
  }
}

/* The shared per-channel formulas of bn_math.h on their own, in the form both
 * backends use them (double sums in, float coefficients out), against the
 * two-pass double references above, on a badly centred channel. */
static void test_bn_math(int rows, double mu, double sd) {
  char name[160];
  float *x = fal((size_t)rows), *dy = fal((size_t)rows), *dx = fal((size_t)rows);
  double *ry = dal((size_t)rows), *rdx = dal((size_t)rows);
  for (int i = 0; i < rows; i++) x[i] = (float)(mu + sd * bf_rng_normal(&g_rng));
  fill_normal(dy, (size_t)rows, 0.3, 1);
  xhat_like(rows, 1, x, dy);
  const float gamma = 1.3f, beta = -0.4f, rm0 = 0.2f, rv0 = 0.9f;
  double s = 0, q = 0, sg = 0, sgx = 0;
  for (int i = 0; i < rows; i++) s += x[i], q += (double)x[i] * x[i], sg += dy[i], sgx += (double)dy[i] * x[i];
  float mean, invstd, rm = rm0, rv = rv0, scale, shift, dg, db, k1, k2, k3;
  bf_bn_train_coef(s, q, rows, gamma, beta, BN_MOM, BN_EPS, &mean, &invstd, &rm, &rv, &scale, &shift);
  double rmean, rinv, rrm, rrv;
  ref_bn_train(rows, 1, x, &gamma, &beta, NULL, 0, BN_MOM, BN_EPS, &rm0, &rv0, ry, &rmean, &rinv, &rrm, &rrv, NULL);
  snprintf(name, sizeof name, "bn_math train coef mean%g sd%g", mu, sd);
  double e = fmax(fmax(fabs(mean - rmean) / fabs(rmean), fabs(invstd - rinv) / rinv),
                  fmax(fabs(rm - rrm) / fabs(rrm), fabs(rv - rrv) / rrv));
  report(e < TOL_RED, name, e, TOL_RED, "");
  /* y = x * scale + shift in float, as the backends apply them. On a badly
   * centred channel both terms are ~1e3 |y|, so float rounding alone leaves
   * ~1e-4 |y|: the error is measured against the terms' size (a few float
   * ulps), which still sees a wrong shift or a mean off by 1e-5. */
  float y0 = x[0] * scale + shift;
  snprintf(name, sizeof name, "bn_math train apply mean%g sd%g", mu, sd);
  e = fabs(y0 - ry[0]) / (fabs(x[0] * (double)scale) + fabs((double)shift) + 1);
  report(e < TOL_EW, name, e, TOL_EW, "");
  bf_bn_backward_coef(sg, sgx, rows, gamma, mean, invstd, &dg, &db, &k1, &k2, &k3);
  double rdg, rdb;
  ref_bn_bwd(rows, 1, x, dy, NULL, &gamma, &mean, &invstd, rdx, &rdg, &rdb);
  for (int i = 0; i < rows; i++) dx[i] = bf_bn_dx(k1, k2, k3, mean, dy[i], x[i]);
  snprintf(name, sizeof name, "bn_math backward dx mean%g sd%g", mu, sd);
  check_close(name, dx, rdx, (size_t)rows, TOL_GEMM);
  snprintf(name, sizeof name, "bn_math backward dgamma,dbeta mean%g sd%g", mu, sd);
  e = fmax(fabs(dg - rdg) / fmax(fabs(rdg), 1), fabs(db - rdb) / fmax(fabs(rdb), 1));
  report(e < TOL_GEMM, name, e, TOL_GEMM, "");
  /* eval coefficients: y = (x - rm) * gamma / sqrt(rv + eps) + beta */
  bf_bn_eval_coef(gamma, beta, (float)mu, (float)(sd * sd), BN_EPS, &scale, &shift);
  double re = gamma * (x[0] - (double)(float)mu) / sqrt((double)(float)(sd * sd) + BN_EPS) + beta;
  snprintf(name, sizeof name, "bn_math eval coef mean%g sd%g", mu, sd);
  e = fabs(x[0] * scale + shift - re) / (fabs(x[0] * (double)scale) + fabs((double)shift) + 1);
  report(e < TOL_EW, name, e, TOL_EW, "");
  free(x), free(dy), free(dx), free(ry), free(rdx);
}

static void test_bn_eval(int rows, int c, int use_res, int relu) {
  char tag[120], name[220];
  snprintf(tag, sizeof tag, "rows%d c%d%s%s", rows, c, use_res ? " +res" : "", relu ? " +relu" : "");
  set_case("bn_eval %s", tag);
  bn_data b;
  bn_data_make(&b, rows, c);
  size_t nx = (size_t)rows * c, nc = (size_t)c;
  float *y = fal(nx), *dy = fal(nx), *dx = fal(nx), *dg = fal(nc), *dbt = fal(nc), *rm = fal(nc), *rv = fal(nc);
  double *ry = dal(nx), *rdx = dal(nx), *rdg = dal(nc), *rdb = dal(nc);
  fill_normal(dy, nx, 0.3, 1);
  dbuf *X = db_in("x", b.x, nx * 4), *G = db_in("gamma", b.gamma, nc * 4), *B = db_in("beta", b.beta, nc * 4);
  dbuf *RM = db_in("running_mean", b.rm, nc * 4), *RV = db_in("running_var", b.rv, nc * 4);
  dbuf *RES = use_res ? db_in("res", b.res, nx * 4) : NULL, *Y = db_new("y", nx * 4);
  dbuf *DY = db_in("dy", dy, nx * 4), *DX = db_new("dx", nx * 4), *DG = db_new("dgamma", nc * 4),
       *DB = db_new("dbeta", nc * 4);
  snprintf(name, sizeof name, "bn_fwd_eval %s", tag);
  if (op_ok(name, g_be->batchnorm_forward_eval(g_be, rows, c, X->p, G->p, B->p, RM->p, RV->p, RES ? RES->p : NULL,
                                               relu, BN_EPS, Y->p))) {
    db_get(Y, y);
    ref_bn_eval(rows, c, b.x, b.gamma, b.beta, b.rm, b.rv, use_res ? b.res : NULL, relu, BN_EPS, ry);
    check_close(name, y, ry, nx, TOL_RED);

    /* backward through the running statistics, masked by the forward's ReLU */
    snprintf(name, sizeof name, "bn_bwd_eval%s %s", relu ? " relu_mask" : "", tag);
    if (op_ok(name, g_be->batchnorm_backward_eval(g_be, rows, c, X->p, DY->p, relu ? Y->p : NULL, G->p, RM->p,
                                                  RV->p, BN_EPS, DX->p, DG->p, DB->p))) {
      ref_bn_eval_bwd(rows, c, b.x, dy, relu ? y : NULL, b.gamma, b.rm, b.rv, BN_EPS, rdx, rdg, rdb);
      db_get(DX, dx), db_get(DG, dg), db_get(DB, dbt), db_get(RM, rm), db_get(RV, rv);
      snprintf(name, sizeof name, "bn_bwd_eval%s dx %s", relu ? " relu_mask" : "", tag);
      check_close(name, dx, rdx, nx, TOL_GEMM);
      snprintf(name, sizeof name, "bn_bwd_eval%s dgamma %s", relu ? " relu_mask" : "", tag);
      check_close(name, dg, rdg, nc, TOL_GEMM);
      snprintf(name, sizeof name, "bn_bwd_eval%s dbeta %s", relu ? " relu_mask" : "", tag);
      check_close(name, dbt, rdb, nc, TOL_GEMM);
      snprintf(name, sizeof name, "bn_bwd_eval running stats unchanged %s", tag);
      int same = !memcmp(rm, b.rm, nc * 4) && !memcmp(rv, b.rv, nc * 4);
      report(same, name, same ? 0 : 1, 0, same ? "" : "running_mean/var written");
    }
  }
  db_free(X), db_free(G), db_free(B), db_free(RM), db_free(RV), db_free(RES), db_free(Y);
  db_free(DY), db_free(DX), db_free(DG), db_free(DB);
  free(y), free(dy), free(dx), free(dg), free(dbt), free(rm), free(rv), free(ry), free(rdx), free(rdg), free(rdb);
  bn_data_free(&b);
}

typedef struct bn_ctx {
  int rows, c, relu;
  dbuf *x, *g, *b, *res, *y, *m, *is, *rm, *rv;
  float *yh;
  const float *r;
} bn_ctx;

static double bn_obj(void *vc) {
  bn_ctx *k = vc;
  if (g_be->batchnorm_forward_train(g_be, k->rows, k->c, k->x->p, k->g->p, k->b->p, k->res ? k->res->p : NULL,
                                    k->relu, k->y->p, k->m->p, k->is->p, k->rm->p, k->rv->p, BN_MOM, BN_EPS) != 0)
    return NAN;
  db_get(k->y, k->yh);
  return dot_fd(k->yh, k->r, (size_t)k->rows * k->c);
}

static void fd_bn(int rows, int c, int use_res, int relu) {
  char tag[120], name[220];
  snprintf(tag, sizeof tag, "rows%d c%d%s%s", rows, c, use_res ? " +res" : "", relu ? " +relu" : "");
  set_case("bn fd %s", tag);
  bn_data b;
  bn_data_make(&b, rows, c);
  size_t nx = (size_t)rows * c, nc = (size_t)c;
  double *ry = dal(nx), *z = dal(nx), *rmean = dal(nc), *rinv = dal(nc), *rrm = dal(nc), *rrv = dal(nc);
  /* Keep every pre-activation at least 0.2 away from the ReLU kink, so that a
   * finite-difference step (which moves z by < 0.05) never crosses it. */
  for (int it = 0; relu && it < 100; it++) {
    ref_bn_train(rows, c, b.x, b.gamma, b.beta, use_res ? b.res : NULL, relu, BN_MOM, BN_EPS, b.rm, b.rv, ry, rmean,
                 rinv, rrm, rrv, z);
    int moved = 0;
    for (size_t q = 0; q < nx; q++) {
      if (fabs(z[q]) >= 0.2) continue;
      double push = z[q] >= 0 ? 0.5 : -0.5;
      int j = (int)(q % nc);
      if (use_res)
        b.res[q] += (float)push;
      else
        b.x[q] += (float)(push / (b.gamma[j] * rinv[j]));
      moved = 1;
    }
    if (!moved) break;
  }
  float *r = fal(nx), *yh = fal(nx), *dx = fal(nx), *dg = fal(nc), *dbt = fal(nc), *dres = fal(nx);
  fill_normal(r, nx, 0.5, 1);
  bn_ctx k;
  k.rows = rows, k.c = c, k.relu = relu, k.yh = yh, k.r = r;
  k.x = db_in("x", b.x, nx * 4), k.g = db_in("gamma", b.gamma, nc * 4), k.b = db_in("beta", b.beta, nc * 4);
  k.res = use_res ? db_in("res", b.res, nx * 4) : NULL;
  k.y = db_new("y", nx * 4), k.m = db_new("save_mean", nc * 4), k.is = db_new("save_invstd", nc * 4);
  k.rm = db_new("running_mean", nc * 4), k.rv = db_new("running_var", nc * 4);
  db_put(k.rm, b.rm);
  db_put(k.rv, b.rv);
  dbuf *R = db_in("r", r, nx * 4), *DX = db_new("dx", nx * 4), *DG = db_new("dgamma", nc * 4),
       *DB = db_new("dbeta", nc * 4), *DRES = db_new("dres", nx * 4);
  snprintf(name, sizeof name, "bn_fd %s", tag);
  if (op_ok(name, g_be->batchnorm_forward_train(g_be, rows, c, k.x->p, k.g->p, k.b->p, k.res ? k.res->p : NULL, relu,
                                                k.y->p, k.m->p, k.is->p, k.rm->p, k.rv->p, BN_MOM, BN_EPS)) &&
      op_ok(name, g_be->batchnorm_backward(g_be, rows, c, k.x->p, R->p, relu ? k.y->p : NULL, k.g->p, k.m->p, k.is->p,
                                           DX->p, DG->p, DB->p))) {
    db_get(DX, dx), db_get(DG, dg), db_get(DB, dbt);
    snprintf(name, sizeof name, "bn_fd dL/dx %s", tag);
    fd_check(name, bn_obj, &k, k.x, b.x, nx, dx, TOL_FD);
    snprintf(name, sizeof name, "bn_fd dL/dgamma %s", tag);
    fd_check(name, bn_obj, &k, k.g, b.gamma, nc, dg, TOL_FD);
    snprintf(name, sizeof name, "bn_fd dL/dbeta %s", tag);
    fd_check(name, bn_obj, &k, k.b, b.beta, nc, dbt, TOL_FD);
    if (use_res && relu) {
      /* the residual's gradient is the ReLU-masked dy: relu_backward(y, r) */
      snprintf(name, sizeof name, "bn_fd dL/dres (relu_backward) %s", tag);
      if (op_ok(name, g_be->relu_backward(g_be, nx, k.y->p, R->p, DRES->p))) {
        db_get(DRES, dres);
        fd_check(name, bn_obj, &k, k.res, b.res, nx, dres, TOL_FD);
      }
    }
  }
  db_free(k.x), db_free(k.g), db_free(k.b), db_free(k.res), db_free(k.y), db_free(k.m), db_free(k.is);
  db_free(k.rm), db_free(k.rv), db_free(R), db_free(DX), db_free(DG), db_free(DB), db_free(DRES);
  free(ry), free(z), free(rmean), free(rinv), free(rrm), free(rrv);
  free(r), free(yh), free(dx), free(dg), free(dbt), free(dres);
  bn_data_free(&b);
}

/* ------------------------------------------------------------------------ */
/* elementwise */

static void test_relu(size_t n) {
  char tag[64], name[160];
  snprintf(tag, sizeof tag, "n%zu", n);
  set_case("relu %s", tag);
  float *x = fal(n), *y = fal(n), *dy = fal(n), *dx = fal(n);
  double *ry = dal(n), *rdx = dal(n);
  fill_normal(x, n, 0, 1);
  fill_normal(dy, n, 0.3, 1);
  for (size_t i = 0; i < n; i += 5) x[i] = i % 2 ? -0.0f : 0.0f; /* exact zeros: dx must be 0 there */
  for (size_t i = 0; i < n; i++) {
    ry[i] = x[i] > 0 ? x[i] : 0.0;
    rdx[i] = ry[i] > 0 ? dy[i] : 0.0;
  }
  dbuf *X = db_in("x", x, n * 4), *Y = db_new("y", n * 4), *DY = db_in("dy", dy, n * 4), *DX = db_new("dx", n * 4);
  snprintf(name, sizeof name, "relu_fwd %s", tag);
  if (op_ok(name, g_be->relu_forward(g_be, n, X->p, Y->p))) {
    db_get(Y, y);
    check_close(name, y, ry, n, TOL_EW);
  }
  /* the backward's y is the true ReLU output (whatever the forward did) */
  for (size_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
  db_put(Y, y);
  snprintf(name, sizeof name, "relu_bwd %s", tag);
  if (op_ok(name, g_be->relu_backward(g_be, n, Y->p, DY->p, DX->p))) {
    db_get(DX, dx);
    check_close(name, dx, rdx, n, TOL_EW);
  }
  snprintf(name, sizeof name, "relu_bwd in-place dx=dy %s", tag);
  db_mut(DY);
  if (op_ok(name, g_be->relu_backward(g_be, n, Y->p, DY->p, DY->p))) {
    db_get(DY, dx);
    check_close(name, dx, rdx, n, TOL_EW);
  }
  db_free(X), db_free(Y), db_free(DY), db_free(DX);
  free(x), free(y), free(dy), free(dx), free(ry), free(rdx);
}

static void test_add(size_t n) {
  char tag[64], name[160];
  snprintf(tag, sizeof tag, "n%zu", n);
  set_case("add %s", tag);
  float *a = fal(n), *b = fal(n), *y = fal(n);
  double *ry = dal(n);
  fill_normal(a, n, 0, 1);
  fill_normal(b, n, 0, 1);
  for (int mode = 0; mode < 4; mode++) {
    static const char *modes[] = {"", " y=a", " y=b", " a=b=y"};
    snprintf(name, sizeof name, "add%s %s", modes[mode], tag);
    dbuf *A = db_in("a", a, n * 4), *B = mode == 3 ? A : db_in("b", b, n * 4), *Y = NULL;
    if (mode == 0) Y = db_new("y", n * 4);
    if (mode == 1 || mode == 3) db_mut(A), Y = A;
    if (mode == 2) db_mut(B), Y = B;
    for (size_t i = 0; i < n; i++) ry[i] = mode == 3 ? 2.0 * a[i] : (double)a[i] + b[i];
    if (op_ok(name, g_be->add(g_be, n, A->p, B->p, Y->p))) {
      db_get(Y, y);
      check_close(name, y, ry, n, TOL_EW);
    }
    db_free(A);
    if (B != A) db_free(B);
    if (Y != A && Y != B) db_free(Y);
  }
  free(a), free(b), free(y), free(ry);
}

static void test_bias_act(int rows, int c, int use_res, int relu, int in_place) {
  char name[160];
  snprintf(name, sizeof name, "bias_act rows%d c%d%s%s%s", rows, c, use_res ? " +res" : "", relu ? " relu" : "",
           in_place ? " y=x" : "");
  set_case("%s", name);
  size_t n = (size_t)rows * c;
  float *x = fal(n), *b = fal((size_t)c), *r = fal(n), *y = fal(n);
  double *ry = dal(n);
  fill_normal(x, n, 0, 1);
  fill_normal(b, (size_t)c, 0, 1);
  fill_normal(r, n, 0, 1);
  for (int i = 0; i < rows; i++)
    for (int ch = 0; ch < c; ch++) {
      double v = (double)x[(size_t)i * c + ch] + b[ch] + (use_res ? r[(size_t)i * c + ch] : 0.0);
      ry[(size_t)i * c + ch] = relu && v < 0 ? 0.0 : v;
    }
  dbuf *X = db_in("x", x, n * 4), *B = db_in("bias", b, (size_t)c * 4), *R = use_res ? db_in("res", r, n * 4) : NULL;
  dbuf *Y = in_place ? X : db_new("y", n * 4);
  if (in_place) db_mut(X);
  if (op_ok(name, g_be->bias_act_forward(g_be, rows, c, X->p, B->p, R ? R->p : NULL, relu, Y->p))) {
    db_get(Y, y);
    check_close(name, y, ry, n, TOL_EW);
  }
  db_free(X), db_free(B);
  if (R) db_free(R);
  if (!in_place) db_free(Y);
  free(x), free(b), free(r), free(y), free(ry);
}

/* ------------------------------------------------------------------------ */
/* pooling */

typedef struct pool_case {
  int n, h, w, c, kernel, stride, pad;
} pool_case;

static int pool_init(bf_pool_desc *d, const pool_case *t, const char *tag) {
  int rc = bf_pool_desc_init(d, t->n, t->h, t->w, t->c, t->kernel, t->stride, t->pad);
  int eoh = (t->h + 2 * t->pad - t->kernel) / t->stride + 1, eow = (t->w + 2 * t->pad - t->kernel) / t->stride + 1;
  if (rc != 0 || d->oh != eoh || d->ow != eow) {
    char name[200], msg[200];
    snprintf(name, sizeof name, "pool_desc %s", tag);
    snprintf(msg, sizeof msg, "rc=%d oh=%d ow=%d, want 0, %d, %d (floor mode) %s", rc, rc ? -1 : d->oh,
             rc ? -1 : d->ow, eoh, eow, rc ? bf_last_error() : "");
    fail_msg(name, msg);
    return 0;
  }
  return 1;
}

static void pool_tag(char *buf, size_t len, const pool_case *t) {
  snprintf(buf, len, "k%d s%d p%d n%d %dx%d c%d", t->kernel, t->stride, t->pad, t->n, t->h, t->w, t->c);
}

/* variant 0: normal values; 1: few integer levels (many ties); 2: all negative
 * (padding must act as -inf, not 0) */
static void test_maxpool(const pool_case *t, int variant) {
  static const char *vnames[] = {"", " ties", " negative"};
  char tag[120], name[200];
  pool_tag(tag, sizeof tag, t);
  strncat(tag, vnames[variant], sizeof tag - strlen(tag) - 1);
  set_case("maxpool %s", tag);
  bf_pool_desc d;
  if (!pool_init(&d, t, tag)) return;
  size_t nx = (size_t)d.n * d.h * d.w * d.c, ny = (size_t)d.n * d.oh * d.ow * d.c;
  float *x = fal(nx), *y = fal(ny), *dy = fal(ny), *dx = fal(nx);
  double *ry = dal(ny), *rdx = dal(nx);
  long *arg = xmalloc(ny * sizeof(long));
  if (variant == 0) fill_normal(x, nx, 0, 1);
  for (size_t i = 0; variant == 1 && i < nx; i++) x[i] = (float)((int)bf_rng_below(&g_rng, 3) - 1);
  if (variant == 2) fill_uniform(x, nx, -3, -1);
  fill_normal(dy, ny, 0.3, 1);
  dbuf *X = db_in("x", x, nx * 4), *Y = db_new("y", ny * 4), *DY = db_in("dy", dy, ny * 4), *DX = db_new("dx", nx * 4);
  ref_maxpool(&d, x, ry, arg);
  snprintf(name, sizeof name, "maxpool_fwd %s", tag);
  if (op_ok(name, g_be->maxpool_forward(g_be, &d, X->p, Y->p))) {
    db_get(Y, y);
    check_close(name, y, ry, ny, TOL_EW);
  }
  memset(rdx, 0, nx * sizeof(double));
  for (size_t o = 0; o < ny; o++)
    if (arg[o] >= 0) rdx[arg[o]] += dy[o];
  snprintf(name, sizeof name, "maxpool_bwd %s", tag);
  if (op_ok(name, g_be->maxpool_backward(g_be, &d, X->p, DY->p, DX->p))) {
    db_get(DX, dx);
    check_close(name, dx, rdx, nx, TOL_EW);
  }
  db_free(X), db_free(Y), db_free(DY), db_free(DX);
  free(x), free(y), free(dy), free(dx), free(ry), free(rdx), free(arg);
}

typedef struct pool_ctx {
  bf_pool_desc d;
  dbuf *x, *y;
  float *yh;
  const float *r;
  size_t ny;
  int avg; /* 1: global average pooling over d.h*d.w */
} pool_ctx;

static double pool_obj(void *vc) {
  pool_ctx *p = vc;
  int rc = p->avg ? g_be->avgpool_global_forward(g_be, p->d.n, p->d.h * p->d.w, p->d.c, p->x->p, p->y->p)
                  : g_be->maxpool_forward(g_be, &p->d, p->x->p, p->y->p);
  if (rc != 0) return NAN;
  db_get(p->y, p->yh);
  return dot_fd(p->yh, p->r, p->ny);
}

static void fd_maxpool(const pool_case *t) {
  char tag[120], name[200];
  pool_tag(tag, sizeof tag, t);
  set_case("maxpool fd %s", tag);
  pool_ctx p;
  p.avg = 0;
  if (!pool_init(&p.d, t, tag)) return;
  size_t nx = (size_t)p.d.n * p.d.h * p.d.w * p.d.c, ny = (size_t)p.d.n * p.d.oh * p.d.ow * p.d.c;
  float *x = fal(nx), *r = fal(ny), *yh = fal(ny), *dx = fal(nx);
  /* distinct values 0.1 apart in random order: a step never changes an argmax */
  for (size_t i = 0; i < nx; i++) x[i] = (float)(0.1 * ((double)i - nx / 2.0));
  for (size_t i = nx; i > 1; i--) {
    size_t j = bf_rng_below(&g_rng, (uint32_t)i);
    float tmp = x[i - 1];
    x[i - 1] = x[j], x[j] = tmp;
  }
  fill_normal(r, ny, 0.3, 1);
  p.x = db_in("x", x, nx * 4), p.y = db_new("y", ny * 4), p.yh = yh, p.r = r, p.ny = ny;
  dbuf *R = db_in("r", r, ny * 4), *DX = db_new("dx", nx * 4);
  snprintf(name, sizeof name, "maxpool_fd dL/dx %s", tag);
  if (op_ok(name, g_be->maxpool_backward(g_be, &p.d, p.x->p, R->p, DX->p))) {
    db_get(DX, dx);
    fd_check(name, pool_obj, &p, p.x, x, nx, dx, TOL_FD_LIN);
  }
  db_free(p.x), db_free(p.y), db_free(R), db_free(DX);
  free(x), free(r), free(yh), free(dx);
}

static void test_avgpool(int n, int hw, int c) {
  char tag[120], name[200];
  snprintf(tag, sizeof tag, "n%d hw%d c%d", n, hw, c);
  set_case("avgpool %s", tag);
  size_t nx = (size_t)n * hw * c, ny = (size_t)n * c;
  float *x = fal(nx), *y = fal(ny), *dy = fal(ny), *dx = fal(nx);
  double *ry = dal(ny), *rdx = dal(nx);
  fill_normal(x, nx, 0.5, 1);
  fill_normal(dy, ny, 0.3, 1);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < c; j++) {
      double s = 0;
      for (int q = 0; q < hw; q++) s += x[((size_t)i * hw + q) * c + j];
      ry[(size_t)i * c + j] = s / hw;
      for (int q = 0; q < hw; q++) rdx[((size_t)i * hw + q) * c + j] = dy[(size_t)i * c + j] / (double)hw;
    }
  dbuf *X = db_in("x", x, nx * 4), *Y = db_new("y", ny * 4), *DY = db_in("dy", dy, ny * 4), *DX = db_new("dx", nx * 4);
  snprintf(name, sizeof name, "avgpool_fwd %s", tag);
  if (op_ok(name, g_be->avgpool_global_forward(g_be, n, hw, c, X->p, Y->p))) {
    db_get(Y, y);
    check_close(name, y, ry, ny, TOL_RED);
  }
  snprintf(name, sizeof name, "avgpool_bwd %s", tag);
  if (op_ok(name, g_be->avgpool_global_backward(g_be, n, hw, c, DY->p, DX->p))) {
    db_get(DX, dx);
    check_close(name, dx, rdx, nx, TOL_EW);
  }
  db_free(X), db_free(Y), db_free(DY), db_free(DX);
  free(x), free(y), free(dy), free(dx), free(ry), free(rdx);
}

static void fd_avgpool(int n, int h, int w, int c) {
  char tag[120], name[200];
  snprintf(tag, sizeof tag, "n%d hw%d c%d", n, h * w, c);
  set_case("avgpool fd %s", tag);
  pool_ctx p;
  memset(&p, 0, sizeof p);
  p.avg = 1, p.d.n = n, p.d.h = h, p.d.w = w, p.d.c = c;
  size_t nx = (size_t)n * h * w * c, ny = (size_t)n * c;
  float *x = fal(nx), *r = fal(ny), *yh = fal(ny), *dx = fal(nx);
  fill_normal(x, nx, 0, 1);
  fill_normal(r, ny, 0.3, 1);
  p.x = db_in("x", x, nx * 4), p.y = db_new("y", ny * 4), p.yh = yh, p.r = r, p.ny = ny;
  dbuf *R = db_in("r", r, ny * 4), *DX = db_new("dx", nx * 4);
  snprintf(name, sizeof name, "avgpool_fd dL/dx %s", tag);
  if (op_ok(name, g_be->avgpool_global_backward(g_be, n, h * w, c, R->p, DX->p))) {
    db_get(DX, dx);
    fd_check(name, pool_obj, &p, p.x, x, nx, dx, TOL_FD_LIN);
  }
  db_free(p.x), db_free(p.y), db_free(R), db_free(DX);
  free(x), free(r), free(yh), free(dx);
}

/* ------------------------------------------------------------------------ */
/* linear */

static void ref_linear(int n, int in, int out, const float *x, const float *w, const float *b, double *y) {
  for (int i = 0; i < n; i++)
    for (int o = 0; o < out; o++) {
      double s = b[o];
      for (int k = 0; k < in; k++) s += (double)x[(size_t)i * in + k] * w[(size_t)o * in + k];
      y[(size_t)i * out + o] = s;
    }
}

static void test_linear(int n, int in, int out, int with_dx) {
  char tag[120], name[200];
  snprintf(tag, sizeof tag, "n%d %d->%d%s", n, in, out, with_dx ? "" : " dx=NULL");
  set_case("linear %s", tag);
  size_t nx = (size_t)n * in, nw = (size_t)out * in, ny = (size_t)n * out;
  float *x = fal(nx), *w = fal(nw), *b = fal((size_t)out), *dy = fal(ny);
  float *y = fal(ny), *dx = fal(nx), *dw = fal(nw), *db = fal((size_t)out);
  double *ry = dal(ny), *rdx = dal(nx), *rdw = dal(nw), *rdb = dal((size_t)out);
  fill_normal(x, nx, 0, 1);
  fill_normal(w, nw, 0, 1.0 / sqrt((double)in));
  fill_normal(b, (size_t)out, 0, 1);
  fill_normal(dy, ny, 0.3, 1);
  dbuf *X = db_in("x", x, nx * 4), *W = db_in("w", w, nw * 4), *B = db_in("b", b, (size_t)out * 4);
  dbuf *DY = db_in("dy", dy, ny * 4), *Y = db_new("y", ny * 4), *DX = with_dx ? db_new("dx", nx * 4) : NULL;
  dbuf *DW = db_new("dw", nw * 4), *DB = db_new("db", (size_t)out * 4);
  snprintf(name, sizeof name, "linear_fwd %s", tag);
  if (with_dx && op_ok(name, g_be->linear_forward(g_be, n, in, out, X->p, W->p, B->p, Y->p))) {
    db_get(Y, y);
    ref_linear(n, in, out, x, w, b, ry);
    check_close(name, y, ry, ny, TOL_GEMM);
  }
  for (int k = 0; k < in; k++)
    for (int i = 0; i < n; i++) {
      double s = 0;
      for (int o = 0; o < out; o++) s += (double)dy[(size_t)i * out + o] * w[(size_t)o * in + k];
      rdx[(size_t)i * in + k] = s;
    }
  for (int o = 0; o < out; o++) {
    double sb = 0;
    for (int i = 0; i < n; i++) sb += dy[(size_t)i * out + o];
    rdb[o] = sb;
    for (int k = 0; k < in; k++) {
      double s = 0;
      for (int i = 0; i < n; i++) s += (double)dy[(size_t)i * out + o] * x[(size_t)i * in + k];
      rdw[(size_t)o * in + k] = s;
    }
  }
  snprintf(name, sizeof name, "linear_bwd %s", tag);
  if (op_ok(name, g_be->linear_backward(g_be, n, in, out, X->p, W->p, DY->p, DX ? DX->p : NULL, DW->p, DB->p))) {
    if (DX) {
      db_get(DX, dx);
      snprintf(name, sizeof name, "linear_bwd dx %s", tag);
      check_close(name, dx, rdx, nx, TOL_GEMM);
    }
    db_get(DW, dw), db_get(DB, db);
    snprintf(name, sizeof name, "linear_bwd dw %s", tag);
    check_close(name, dw, rdw, nw, TOL_GEMM);
    snprintf(name, sizeof name, "linear_bwd db %s", tag);
    check_close(name, db, rdb, (size_t)out, TOL_GEMM);
  }
  db_free(X), db_free(W), db_free(B), db_free(DY), db_free(Y), db_free(DX), db_free(DW), db_free(DB);
  free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db);
  free(ry), free(rdx), free(rdw), free(rdb);
}

typedef struct lin_ctx {
  int n, in, out;
  dbuf *x, *w, *b, *y;
  float *yh;
  const float *r;
} lin_ctx;

static double lin_obj(void *vc) {
  lin_ctx *l = vc;
  if (g_be->linear_forward(g_be, l->n, l->in, l->out, l->x->p, l->w->p, l->b->p, l->y->p) != 0) return NAN;
  db_get(l->y, l->yh);
  return dot_fd(l->yh, l->r, (size_t)l->n * l->out);
}

static void fd_linear(int n, int in, int out) {
  char tag[120], name[200];
  snprintf(tag, sizeof tag, "n%d %d->%d", n, in, out);
  set_case("linear fd %s", tag);
  size_t nx = (size_t)n * in, nw = (size_t)out * in, ny = (size_t)n * out;
  float *x = fal(nx), *w = fal(nw), *b = fal((size_t)out), *r = fal(ny), *yh = fal(ny);
  float *dx = fal(nx), *dw = fal(nw), *db = fal((size_t)out);
  fill_normal(x, nx, 0, 1);
  fill_normal(w, nw, 0, 0.5);
  fill_normal(b, (size_t)out, 0, 1);
  fill_normal(r, ny, 0.3, 1);
  lin_ctx l = {n, in, out, NULL, NULL, NULL, NULL, yh, r};
  l.x = db_in("x", x, nx * 4), l.w = db_in("w", w, nw * 4), l.b = db_in("b", b, (size_t)out * 4);
  l.y = db_new("y", ny * 4);
  dbuf *R = db_in("r", r, ny * 4), *DX = db_new("dx", nx * 4), *DW = db_new("dw", nw * 4),
       *DB = db_new("db", (size_t)out * 4);
  snprintf(name, sizeof name, "linear_fd %s", tag);
  if (op_ok(name, g_be->linear_backward(g_be, n, in, out, l.x->p, l.w->p, R->p, DX->p, DW->p, DB->p))) {
    db_get(DX, dx), db_get(DW, dw), db_get(DB, db);
    snprintf(name, sizeof name, "linear_fd dL/dx %s", tag);
    fd_check(name, lin_obj, &l, l.x, x, nx, dx, TOL_FD_LIN);
    snprintf(name, sizeof name, "linear_fd dL/dw %s", tag);
    fd_check(name, lin_obj, &l, l.w, w, nw, dw, TOL_FD_LIN);
    snprintf(name, sizeof name, "linear_fd dL/db %s", tag);
    fd_check(name, lin_obj, &l, l.b, b, (size_t)out, db, TOL_FD_LIN);
  }
  db_free(l.x), db_free(l.w), db_free(l.b), db_free(l.y), db_free(R), db_free(DX), db_free(DW), db_free(DB);
  free(x), free(w), free(b), free(r), free(yh), free(dx), free(dw), free(db);
}

/* ------------------------------------------------------------------------ */
/* softmax cross-entropy */

static void make_logits(float *l, int32_t *lab, int n, int c, double scale, double offset) {
  fill_normal(l, (size_t)n * c, offset, scale);
  for (int i = 0; i < n; i++) lab[i] = (int32_t)bf_rng_below(&g_rng, (uint32_t)c);
}

static void test_xent(int n, int c, float s, double scale, double offset, int with_grad) {
  char tag[120], name[200];
  snprintf(tag, sizeof tag, "n%d c%d s%.2g%s%s", n, c, (double)s, scale > 10 ? " large-logits" : "",
           with_grad ? "" : " dlogits=NULL");
  set_case("softmax_xent %s", tag);
  size_t nl = (size_t)n * c;
  float *l = fal(nl), *dl = fal(nl), loss = 0;
  int32_t *lab = xmalloc((size_t)n * sizeof(int32_t));
  double *rdl = dal(nl);
  make_logits(l, lab, n, c, scale, offset);
  double rloss = ref_xent(n, c, l, lab, s, rdl);
  /* logits around +-1000: a float log-sum-exp near 1000 is good to ~3e-5 */
  double tol = scale > 10 ? TOL_GEMM : TOL_RED;
  dbuf *L = db_in("logits", l, nl * 4), *LAB = db_in("labels", lab, (size_t)n * 4), *LOSS = db_new("loss", 4);
  dbuf *DL = with_grad ? db_new("dlogits", nl * 4) : NULL;
  snprintf(name, sizeof name, "softmax_xent %s", tag);
  if (op_ok(name, g_be->softmax_xent(g_be, n, c, L->p, LAB->p, s, LOSS->p, DL ? DL->p : NULL))) {
    db_get(LOSS, &loss);
    snprintf(name, sizeof name, "softmax_xent loss %s", tag);
    check_close_f(name, &loss, &rloss, 1, tol, 1.0);
    if (DL) {
      db_get(DL, dl);
      snprintf(name, sizeof name, "softmax_xent dlogits %s", tag);
      check_close(name, dl, rdl, nl, tol);
    }
  }
  db_free(L), db_free(LAB), db_free(LOSS), db_free(DL);
  free(l), free(dl), free(lab), free(rdl);
}

typedef struct xent_ctx {
  int n, c;
  float s;
  dbuf *l, *lab, *loss;
} xent_ctx;

static double xent_obj(void *vc) {
  xent_ctx *x = vc;
  float loss;
  if (g_be->softmax_xent(g_be, x->n, x->c, x->l->p, x->lab->p, x->s, x->loss->p, NULL) != 0) return NAN;
  db_get(x->loss, &loss);
  return loss;
}

static void fd_xent(int n, int c, float s) {
  char tag[120], name[200];
  snprintf(tag, sizeof tag, "n%d c%d s%.2g", n, c, (double)s);
  set_case("softmax_xent fd %s", tag);
  size_t nl = (size_t)n * c;
  float *l = fal(nl), *dl = fal(nl);
  int32_t *lab = xmalloc((size_t)n * sizeof(int32_t));
  make_logits(l, lab, n, c, 2, 0);
  xent_ctx x = {n, c, s, NULL, NULL, NULL};
  x.l = db_in("logits", l, nl * 4), x.lab = db_in("labels", lab, (size_t)n * 4), x.loss = db_new("loss", 4);
  dbuf *DL = db_new("dlogits", nl * 4);
  snprintf(name, sizeof name, "softmax_xent_fd dL/dlogits %s", tag);
  if (op_ok(name, g_be->softmax_xent(g_be, n, c, x.l->p, x.lab->p, s, x.loss->p, DL->p))) {
    db_get(DL, dl);
    fd_check(name, xent_obj, &x, x.l, l, nl, dl, TOL_FD);
  }
  db_free(x.l), db_free(x.lab), db_free(x.loss), db_free(DL);
  free(l), free(dl), free(lab);
}

/* count_correct: the first maximum wins ties; a NaN logit (not in the first
 * column) never wins; an out-of-range label never matches. */
static void test_count_correct(int n, int c) {
  char name[120];
  snprintf(name, sizeof name, "count_correct n%d c%d", n, c);
  set_case("%s", name);
  float *l = fal((size_t)n * c), got = -1;
  int32_t *lab = xmalloc((size_t)n * 4);
  for (size_t i = 0; i < (size_t)n * c; i++) l[i] = (float)bf_rng_below(&g_rng, 3);
  for (int i = 0; i < n; i++) lab[i] = (int32_t)bf_rng_below(&g_rng, (uint32_t)c);
  if (c > 1) l[(size_t)(n / 2) * c + c - 1] = NAN; /* not the first column: a NaN there never wins */
  lab[n - 1] = -1;
  int want = 0;
  for (int i = 0; i < n; i++) {
    const float *r = l + (size_t)i * c;
    float mx = r[0];
    for (int j = 1; j < c; j++)
      if (r[j] == r[j] && r[j] > mx) mx = r[j];
    int first = 0;
    while (r[first] != mx) first++;
    want += first == lab[i];
  }
  dbuf *L = db_in("logits", l, (size_t)n * c * 4), *LB = db_in("labels", lab, (size_t)n * 4), *O = db_new("out", 4);
  if (op_ok(name, g_be->count_correct(g_be, n, c, L->p, LB->p, O->p))) {
    db_get(O, &got);
    report(got == (float)want, name, fabs(got - want), 0, "");
  }
  db_free(L), db_free(LB), db_free(O);
  free(l), free(lab);
}

/* host_alloc + upload_async: the bytes arrive (after a sync), unchanged. */
static void test_upload_async(size_t bytes) {
  char name[80];
  snprintf(name, sizeof name, "upload_async %zu bytes", bytes);
  set_case("%s", name);
  unsigned char *h = g_be->host_alloc(g_be, bytes), *back = xmalloc(bytes);
  if (!h) die("host_alloc");
  for (size_t i = 0; i < bytes; i++) h[i] = (unsigned char)bf_rng_below(&g_rng, 256);
  dbuf *D = db_new("dst", bytes);
  db_mut(D);
  if (op_ok(name, g_be->upload_async(g_be, D->p, h, bytes))) {
    db_get(D, back);
    report(memcmp(h, back, bytes) == 0, name, 0, 0, "");
  }
  db_free(D);
  g_be->host_free(g_be, h);
  free(back);
}

static void test_xent_bad_label(int bad) {
  char name[160];
  snprintf(name, sizeof name, "softmax_xent rejects label %d (n3 c5)", bad);
  set_case("%s", name);
  int n = 3, c = 5;
  float l[15];
  int32_t lab[3] = {0, bad, 4};
  fill_normal(l, 15, 0, 1);
  dbuf *L = db_in("logits", l, sizeof l), *LAB = db_in("labels", lab, sizeof lab), *LOSS = db_new("loss", 4);
  dbuf *DL = db_new("dlogits", sizeof l);
  bf_clear_error();
  int rc = g_be->softmax_xent(g_be, n, c, L->p, LAB->p, 0.1f, LOSS->p, DL->p);
  if (rc == 0) rc = g_be->sync(g_be); /* an asynchronous backend may report it here */
  if (rc != 0 && bf_last_error()[0]) {
    char note[240];
    snprintf(note, sizeof note, "rc=%d \"%s\"", rc, bf_last_error());
    report(1, name, 0, 0, note);
  } else {
    fail_msg(name, rc == 0 ? "returned 0" : "nonzero rc but no bf_last_error() message");
  }
  /* the backend must still work after the error */
  lab[1] = 2;
  db_put(LAB, lab);
  db_mut(LOSS), db_mut(DL);
  float loss = 0;
  double rloss = ref_xent(n, c, l, lab, 0.1, NULL);
  snprintf(name, sizeof name, "softmax_xent works after bad label %d", bad);
  if (op_ok(name, g_be->softmax_xent(g_be, n, c, L->p, LAB->p, 0.1f, LOSS->p, DL->p))) {
    db_get(LOSS, &loss);
    check_close(name, &loss, &rloss, 1, TOL_RED);
  }
  db_free(L), db_free(LAB), db_free(LOSS), db_free(DL);
}

/* ------------------------------------------------------------------------ */
/* SGD */

static void test_sgd(size_t n, float lr, float mom, float wd, int nesterov) {
  char tag[160], name[220];
  snprintf(tag, sizeof tag, "n%zu lr%g mom%g wd%g%s", n, (double)lr, (double)mom, (double)wd,
           nesterov ? " nesterov" : "");
  set_case("sgd %s", tag);
  bf_sgd_params hp = {lr, mom, wd, nesterov};
  float *p = fal(n), *g = fal(n), *m = fal(n), *p2 = fal(n), *m2 = fal(n);
  double *rp = dal(n), *rm = dal(n);
  fill_normal(p, n, 0, 1);
  for (size_t i = 0; i < n; i++) m[i] = 0.0f; /* PyTorch's first step: buffer = g' */
  dbuf *P = db_new("p", n * 4), *G = db_new("g", n * 4), *M = db_new("m", n * 4);
  db_put(P, p), db_put(M, m);
  for (int step = 0; step < 3; step++) {
    fill_normal(g, n, 0.1, 1);
    if (step == 1 && mom == 0.0f) { /* momentum 0 must leave m alone, whatever it holds */
      fill_normal(m, n, 0, 1);
      db_put(M, m);
    }
    db_put(G, g);
    for (size_t i = 0; i < n; i++) {
      double gp = (double)g[i] + (double)wd * p[i], st = gp;
      rm[i] = m[i];
      if (mom != 0.0f) {
        rm[i] = (double)mom * m[i] + gp;
        st = nesterov ? gp + (double)mom * rm[i] : rm[i];
      }
      rp[i] = p[i] - (double)lr * st;
    }
    snprintf(name, sizeof name, "sgd_step %d %s", step + 1, tag);
    if (!op_ok(name, g_be->sgd_step(g_be, n, P->p, G->p, M->p, &hp))) break;
    db_get(P, p2), db_get(M, m2);
    snprintf(name, sizeof name, "sgd_step %d p %s", step + 1, tag);
    check_close_f(name, p2, rp, n, TOL_SGD, 1.0);
    snprintf(name, sizeof name, "sgd_step %d m%s %s", step + 1, mom == 0.0f ? " untouched" : "", tag);
    check_close_f(name, m2, rm, n, mom == 0.0f ? 0.0 : TOL_SGD, 1.0);
    memcpy(p, p2, n * 4), memcpy(m, m2, n * 4);
  }
  db_free(P), db_free(G), db_free(M);
  free(p), free(g), free(m), free(p2), free(m2), free(rp), free(rm);
}

/* ------------------------------------------------------------------------ */
/* normalize_u8 */

/* ------------------------------------------------------------------------ */
/* fake quantisation (quantisation-aware training): codes and outputs must be
 * exact, so the reference rounds the float quotient to nearest, ties to even,
 * with floor() instead of the rintf() of quant_math.h */

static int ref_quant_code(float x, float clip, int bits, float *s_out) {
  const int qmax = (1 << bits) - 1;
  const float c = clip >= 1e-4f ? clip : 1e-4f; /* BF_QUANT_CLIP_MIN */
  const float s = c / (float)qmax;
  *s_out = s;
  const float v = x / s;
  if (isnan(v) || v <= 0) return 0;
  double fl = floor((double)v), d = (double)v - fl;
  double q = d > 0.5 ? fl + 1 : d < 0.5 ? fl : (fmod(fl, 2.0) == 0 ? fl : fl + 1);
  return q > qmax ? qmax : (int)q;
}

/* variant: 0 random over [-0.5, 1.3 clip], 1 edges (exact .5 ties, the clip,
 * negative, NaN) with clip = qmax (s = 1), 2 a clip <= 0 (clamped to the
 * minimum); in_place: y written over x, dx over dy, no codes */
static void test_quant(size_t n, int bits, float clip, int variant, int in_place) {
  char tag[96], name[200];
  snprintf(tag, sizeof tag, "n%zu b%d clip%g%s%s", n, bits, (double)clip, variant == 1 ? " edges" : "",
           in_place ? " in-place" : "");
  set_case("quant %s", tag);
  float *x = fal(n), *y = fal(n), *dy = fal(n), *dx = fal(n), got_clip = 0;
  uint8_t *codes = xmalloc(n), *rcodes = xmalloc(n);
  double *ry = dal(n), *rdx = dal(n), rdclip = 0;
  const float ceff = clip >= 1e-4f ? clip : 1e-4f;
  fill_uniform(x, n, -0.5 * ceff, 1.3 * ceff);
  fill_normal(dy, n, 0.2, 1);
  if (variant == 1) {
    /* clip = qmax: s = 1, so k + 0.5 is an exact tie */
    static const float edge[] = {0.5f, 1.5f, 2.5f, 3.5f, 0.0f, -0.0f, -0.5f, -3.0f, 0.49999997f, 0.50000006f};
    for (size_t i = 0; i < n && i < sizeof edge / sizeof edge[0]; i++) x[i] = edge[i];
    if (n > 12) x[10] = ceff, x[11] = nextafterf(ceff, 0.0f), x[12] = nextafterf(ceff, 1e30f);
    if (n > 13) x[13] = NAN;
  }
  for (size_t i = 0; i < n; i++) {
    float s;
    int q = ref_quant_code(x[i], clip, bits, &s);
    rcodes[i] = (uint8_t)q;
    ry[i] = (double)((float)q * s);
    int passes = x[i] >= 0 && x[i] < ceff, clipped = x[i] >= ceff;
    rdx[i] = passes ? dy[i] : 0.0;
    /* d x'/d clip: 1 clipped, (q - x/s)/qmax passing (rounding error), 0 below 0 */
    if (clipped) rdclip += dy[i];
    else if (passes) rdclip += dy[i] * ((double)q - (double)x[i] / s) / ((1 << bits) - 1);
  }
  if (variant == 1) { /* the ties themselves, spelled out: to even */
    int want[4] = {0, 2, 2, bits == 2 ? 3 : 4};
    for (int i = 0; i < 4 && (size_t)i < n; i++)
      if (rcodes[i] != want[i]) fail_msg(name, "reference rounding is not ties-to-even");
  }
  dbuf *X = db_in("x", x, n * 4), *C = db_in("clip", &clip, 4), *Y = db_new("y", n * 4),
       *Q = db_new("codes", n), *DY = db_in("dy", dy, n * 4), *DX = db_new("dx", n * 4), *DC = db_new("dclip", 4);
  snprintf(name, sizeof name, "quant_fwd %s", tag);
  if (in_place) db_mut(X);
  float *yout = in_place ? X->p : Y->p;
  if (op_ok(name, g_be->quant_forward(g_be, n, X->p, C->p, bits, yout, in_place ? NULL : Q->p))) {
    db_get(in_place ? X : Y, y);
    check_close(name, y, ry, n, 0.0); /* exact */
    if (!in_place) {
      db_get(Q, codes);
      size_t bad = 0, first = 0;
      for (size_t i = 0; i < n; i++)
        if (codes[i] != rcodes[i] && !bad++) first = i;
      char note[160] = "";
      if (bad)
        snprintf(note, sizeof note, "%zu codes differ; first [%zu]: x=%.9g got %d want %d", bad, first,
                 (double)x[first], codes[first], rcodes[first]);
      snprintf(name, sizeof name, "quant_fwd codes %s", tag);
      report(bad == 0, name, (double)bad, 0, note);
    }
  }
  if (in_place) db_put(X, x); /* the backward reads the forward's input */
  snprintf(name, sizeof name, "quant_bwd %s", tag);
  if (in_place) db_mut(DY);
  if (op_ok(name, g_be->quant_backward(g_be, n, X->p, C->p, bits, DY->p, in_place ? DY->p : DX->p, DC->p))) {
    db_get(in_place ? DY : DX, dx);
    check_close(name, dx, rdx, n, 0.0); /* dx is dy or 0: exact */
    db_get(DC, &got_clip);
    snprintf(name, sizeof name, "quant_bwd dclip %s", tag);
    check_close_f(name, &got_clip, &rdclip, 1, TOL_RED, 1.0);
  }
  db_free(X), db_free(C), db_free(Y), db_free(Q), db_free(DY), db_free(DX), db_free(DC);
  free(x), free(y), free(dy), free(dx), free(codes), free(rcodes), free(ry), free(rdx);
}

static void test_quant_bad_bits(void) {
  set_case("quant bad bits%s", "");
  float v = 1.0f;
  dbuf *X = db_in("x", &v, 4), *Y = db_new("y", 4);
  for (int bits = 0; bits <= 9; bits += 9) {
    int b = bits ? 9 : 1;
    char name[64];
    snprintf(name, sizeof name, "quant_fwd refuses bits %d", b);
    int rc = g_be->quant_forward(g_be, 1, X->p, X->p, b, Y->p, NULL);
    report(rc == BF_EINVAL, name, rc, 0, rc == BF_EINVAL ? "" : "not BF_EINVAL");
    bf_clear_error();
  }
  db_free(X), db_free(Y);
}

static void test_normalize(size_t pixels) {
  char tag[64], name[160];
  snprintf(tag, sizeof tag, "pixels%zu", pixels);
  set_case("normalize_u8 %s", tag);
  const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
  size_t n = pixels * 3;
  uint8_t *x = xmalloc(n);
  float *y = fal(n);
  double *ry = dal(n);
  for (size_t i = 0; i < n; i++) x[i] = (uint8_t)(i < 2 ? 255 * i : bf_rng_below(&g_rng, 256));
  for (size_t i = 0; i < n; i++) ry[i] = ((double)x[i] / 255.0 - mean[i % 3]) / sd[i % 3];
  dbuf *X = db_in("x", x, n), *Y = db_new("y", n * 4);
  snprintf(name, sizeof name, "normalize_u8 %s", tag);
  if (op_ok(name, g_be->normalize_u8(g_be, pixels, X->p, mean, sd, Y->p))) {
    db_get(Y, y);
    check_close(name, y, ry, n, TOL_EW);
  }
  db_free(X), db_free(Y);
  free(x), free(y), free(ry);
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv) {
  const char *backend = argc > 1 ? argv[1] : "cpu";
  uint32_t nanbits = 0x7fc0deadu;
  memcpy(g_pat, &nanbits, 4);
  bf_rng_seed(&g_rng, 20240611);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (bf_backend_create(&g_be, backend, 2) != 0 || !g_be) {
    printf("FAIL bf_backend_create(\"%s\"): %s\n", backend, bf_last_error());
    printf("0 passed, 1 failed\n");
    return 1;
  }
  printf("backend %s (%d threads)\n", g_be->name, g_be->threads);
  double t0 = bf_now_sec();

  /* convolution: odd sizes, 1x1/3x3/7x7, stride 1/2, padding 0/1/3 */
  static const conv_case convs[] = {
      {3, 7, 5, 3, 5, 3, 3, 1, 1},     {3, 7, 5, 3, 5, 3, 3, 2, 1},   {2, 11, 9, 3, 8, 7, 7, 2, 3},
      {2, 7, 6, 5, 7, 1, 1, 1, 0},     {2, 7, 7, 6, 9, 1, 1, 2, 0},   {2, 8, 8, 6, 9, 1, 1, 2, 0},
      {1, 5, 5, 17, 3, 3, 3, 1, 0},    {2, 6, 6, 19, 33, 3, 3, 2, 1}, {1, 1, 1, 7, 5, 3, 3, 1, 1},
      {1, 4, 4, 2, 3, 3, 3, 2, 0},     {1, 3, 3, 5, 4, 3, 3, 1, 0},   {2, 5, 4, 3, 4, 3, 1, 1, 0},
      {2, 5, 5, 64, 32, 3, 3, 1, 1},   {2, 14, 14, 32, 64, 3, 3, 2, 1}, {1, 9, 9, 16, 16, 1, 1, 1, 0},
      {1, 13, 13, 3, 16, 7, 7, 2, 3},  {2, 14, 14, 64, 64, 3, 3, 1, 1}, {2, 28, 28, 16, 32, 1, 1, 2, 0},
  };
  for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) test_conv(&convs[i]);
  static const conv_case fdconvs[] = {{2, 5, 5, 3, 4, 3, 3, 2, 1}, {1, 4, 5, 3, 2, 1, 1, 2, 0}, {1, 6, 5, 2, 3, 3, 3, 1, 1}};
  for (size_t i = 0; i < sizeof fdconvs / sizeof fdconvs[0]; i++) fd_conv(&fdconvs[i]);
  test_conv_desc_errors();
  /* the fused inference conv on the same shapes; on the CPU both its paths
   * (oneDNN when built with it, and the im2col fallback) */
  for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++)
    for (int v = 0; v < 5; v++) test_conv_infer(&convs[i], v, "default");
  if (!strcmp(g_be->name, "cpu")) {
    if (setenv("BF_CPU_CONV_INFER", "im2col", 1)) die("setenv");
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++)
      for (int v = 0; v < 5; v++) test_conv_infer(&convs[i], v, "im2col");
    unsetenv("BF_CPU_CONV_INFER");
  }

  /* batch norm: train (rows >= 3) and eval (rows 1 too), all fusions */
  static const int bn_shapes[][2] = {{105, 3}, {7, 5}, {3, 17}, {64, 64}, {49, 33}, {392, 128}};
  for (size_t i = 0; i < sizeof bn_shapes / sizeof bn_shapes[0]; i++)
    for (int f = 0; f < 4; f++) {
      test_bn_train(bn_shapes[i][0], bn_shapes[i][1], f & 1, f >> 1);
      test_bn_eval(bn_shapes[i][0], bn_shapes[i][1], f & 1, f >> 1);
    }
  for (int f = 0; f < 4; f++) test_bn_eval(1, 5, f & 1, f >> 1);
  for (int f = 0; f < 4; f++) fd_bn(12, 3, f & 1, f >> 1);
  /* badly centred channels (mean/sd ~ 1e3): the shared formulas, then the ops */
  test_bn_math(1000, 0.0, 1.0);
  test_bn_math(1000, 30.0, 0.05);
  test_bn_math(50000, 100.0, 0.1);
  g_bn_offcentre = 30;
  for (int f = 0; f < 4; f++) test_bn_train(392, 19, f & 1, f >> 1);
  g_bn_offcentre = 0;
  /* synchronised BN (data-parallel training): as rank 0 of 2 */
  test_bn_sync(49, 33);
  test_bn_sync(3, 17);

  /* elementwise */
  static const size_t ew[] = {1, 7, 1001, 4099, 100003};
  for (size_t i = 0; i < sizeof ew / sizeof ew[0]; i++) test_relu(ew[i]), test_add(ew[i]);
  for (int v = 0; v < 8; v++) test_bias_act(v & 4 ? 1 : 37, 19, v & 1, (v >> 1) & 1, v == 3 || v == 6);

  /* fake quantisation */
  for (int bits = 2; bits <= 8; bits += 2) {
    test_quant(1001, bits, 2.37f, 0, 0);
    test_quant(100003, bits, 0.731f, 0, bits == 4);
    test_quant(16, bits, (float)((1 << bits) - 1), 1, 0);
  }
  test_quant(7, 3, 1.0f, 0, 0);
  test_quant(257, 4, -1.0f, 2, 0);
  test_quant(1, 2, 1.0f, 0, 1);
  test_quant_bad_bits();

  /* pooling */
  static const pool_case pools[] = {
      {2, 7, 5, 3, 3, 2, 1}, {2, 8, 8, 5, 3, 2, 1}, {1, 7, 7, 17, 2, 2, 0}, {2, 6, 5, 4, 3, 1, 1},
      {1, 9, 7, 3, 3, 2, 0}, {1, 3, 3, 6, 3, 1, 0}, {1, 16, 16, 64, 3, 2, 1}, {1, 5, 5, 3, 1, 2, 0},
  };
  for (size_t i = 0; i < sizeof pools / sizeof pools[0]; i++)
    for (int v = 0; v < 3; v++) test_maxpool(&pools[i], v);
  static const pool_case fdpools[] = {{2, 7, 5, 3, 3, 2, 1}, {1, 6, 6, 2, 2, 2, 0}};
  for (size_t i = 0; i < sizeof fdpools / sizeof fdpools[0]; i++) fd_maxpool(&fdpools[i]);
  test_avgpool(3, 35, 5);
  test_avgpool(1, 1, 7);
  test_avgpool(2, 49, 17);
  test_avgpool(2, 49, 64);
  test_avgpool(1, 4, 2048);
  fd_avgpool(2, 3, 2, 3);

  /* linear */
  static const int lins[][3] = {{3, 7, 5}, {1, 7, 5}, {4, 130, 10}, {2, 1, 3}, {5, 64, 1}, {3, 2048, 10}, {17, 33, 19}};
  for (size_t i = 0; i < sizeof lins / sizeof lins[0]; i++) test_linear(lins[i][0], lins[i][1], lins[i][2], 1);
  test_linear(3, 7, 5, 0);
  test_linear(4, 130, 10, 0);
  fd_linear(3, 7, 5);
  fd_linear(1, 4, 1);

  /* softmax cross-entropy */
  test_xent(3, 5, 0.0f, 1, 0, 1);
  test_xent(3, 5, 0.1f, 1, 0, 1);
  test_xent(1, 7, 0.1f, 1, 0, 1);
  test_xent(4, 1000, 0.1f, 2, 0, 1);
  test_xent(2, 10, 0.0f, 50, 1000, 1);
  test_xent(3, 10, 0.1f, 50, -1000, 1);
  test_xent(5, 3, 0.2f, 1, 0, 0);
  test_xent(2, 1, 0.1f, 1, 0, 1);
  fd_xent(3, 5, 0.1f);
  fd_xent(2, 4, 0.0f);
  test_xent_bad_label(-1);
  test_count_correct(1, 1);
  test_count_correct(37, 10);
  test_count_correct(300, 7);
  test_upload_async(1);
  test_upload_async(3 * 32 * 32 * 16 + 7);
  test_xent_bad_label(5);

  /* SGD */
  static const size_t sn[] = {1, 7, 1001, 100003};
  for (size_t i = 0; i < sizeof sn / sizeof sn[0]; i++) {
    test_sgd(sn[i], 0.1f, 0.9f, 1e-2f, 0);
    test_sgd(sn[i], 0.05f, 0.9f, 5e-4f, 1);
    test_sgd(sn[i], 0.1f, 0.0f, 1e-4f, 0);
    test_sgd(sn[i], 0.1f, 0.9f, 0.0f, 0);
  }

  /* data */
  test_normalize(1);
  test_normalize(7);
  test_normalize(1001);
  test_normalize(50021);

  /* the engine's classifier: a fused 1x1 conv on the pooled 1x1 map (many
   * inputs, an odd number of outputs); last, so that the random inputs of the
   * cases above stay what they were */
  static const conv_case head = {3, 1, 1, 96, 37, 1, 1, 1, 0};
  for (int v = 0; v < 5; v++) test_conv_infer(&head, v, "default");
  if (!strcmp(g_be->name, "cpu")) {
    if (setenv("BF_CPU_CONV_INFER", "im2col", 1)) die("setenv");
    for (int v = 0; v < 5; v++) test_conv_infer(&head, v, "im2col");
    unsetenv("BF_CPU_CONV_INFER");
  }

  /* every buffer's guards were checked when it was freed; failures printed there */
  if (g_nbad_bufs == 0) {
    printf("ok   guard bytes and const inputs intact on all %d buffers\n", g_nbufs);
    g_pass++;
  } else {
    printf("FAIL guard bytes or const inputs damaged on %d of %d buffers (see above)\n", g_nbad_bufs, g_nbufs);
    g_fail++;
  }
  printf("time %.2f s\n", bf_now_sec() - t0);
  bf_backend_destroy(g_be);
  printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
